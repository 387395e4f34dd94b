pub mod admin;
pub mod auth;
pub mod duplicates;
pub mod records;
