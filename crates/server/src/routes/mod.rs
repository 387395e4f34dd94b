pub mod admin;
pub mod auth;
pub mod records;
pub mod monitor;
