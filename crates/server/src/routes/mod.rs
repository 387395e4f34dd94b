pub mod access;
pub mod admin;
pub mod auth;
pub mod duplicates;
pub mod keys;
pub mod mfa;
pub mod monitor;
pub mod records;
