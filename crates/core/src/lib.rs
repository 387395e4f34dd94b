//! Custodian's domain: field schema as data, value validation and normalisation, search
//! tokens, the error-code table and the demo data generator. This crate does no I/O.

pub mod access;
pub mod audit;
pub mod demo;
pub mod error;
pub mod export;
pub mod matching;
pub mod normalize;
pub mod rules;
pub mod schema;
pub mod search;
pub mod table;
pub mod values;

pub use error::{ErrorCode, FieldError};
pub use schema::{FieldDef, FieldType, ObjectDef, Schema};
