pub mod admin;
pub mod auth;
pub mod monitor;
pub mod records;
