//! The matching engine (PRODUCT.md A4): finds records that describe the same person or
//! company, in any CSV or in stored records. No I/O.
//!
//! * [`FieldKind`] says what a column holds; [`value::prepare`] normalises a raw value of that
//!   kind once per record (pinyin with surname readings, traditional → simplified folding,
//!   E.164 phones, canonical company names, parsed dates, tokens).
//! * Blocking keys ([`blocking`]) propose candidate pairs without comparing every pair.
//! * Comparators ([`compare`]) turn a pair of values into an ordered agreement level.
//! * A Fellegi-Sunter [`Model`] turns levels into a match probability; its parameters are
//!   estimated on the input itself, without labels ([`model`]).
//! * [`cluster`] groups pairs above a threshold into clusters of duplicates, and finds the
//!   pairs those clusters imply through chains of links.
//!
//! [`Matcher`] runs the whole pipeline; [`synth`] generates labelled test data and
//! [`evaluate`] measures quality against it.

pub mod blocking;
pub mod cluster;
pub mod compare;
mod engine;
pub mod evaluate;
pub mod fold;
mod kind;
pub mod model;
mod nicknames;
#[cfg(test)]
mod properties;
pub mod synth;
pub mod value;

pub use blocking::KeyClass;
pub use cluster::cluster;
pub use engine::{
    DedupeResult, FieldSpec, LinkedPair, MAX_FIELDS, MatchConfig, MatchError, Matcher, PreparedRecord, ScoredPair,
    Stage, map_on_all_cores,
};
pub use kind::{FieldKind, UnknownKind};
pub use model::{FieldModel, Model};
pub use value::{Prepared, prepare};
