pub mod admin;
pub mod auth;
pub mod mfa;
pub mod monitor;
pub mod records;
