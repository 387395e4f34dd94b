//! Pure field-value normalisers and validators (PRODUCT.md A2).
//!
//! Every function here is deterministic and does no I/O, so the same input always yields the
//! same stored value and the same blind index. Normalisers that return a `String` are
//! idempotent: feeding their output back in yields the output unchanged, which is what lets the
//! import preview, the write path and the duplicate scan agree on one canonical form.
//!
//! None of them panics on any input (property-tested with arbitrary strings); the identifier
//! normalisers also reject over-long input before doing any Unicode work on it.

mod email;
mod names;
mod phone;
mod resident_id;
mod url;
mod uscc;

use std::fmt;

pub use email::normalize_email;
pub use names::{canonical_company_name, normalize_person_name, normalize_text};
pub use phone::normalize_phone;
pub use resident_id::{normalize_cn_resident_id, resident_id_birth_date, resident_id_check_char};
// `self::` because `url` is also the name of the crate this module wraps.
pub use self::url::normalize_url;
pub use uscc::{Uscc, normalize_uscc, uscc_check_char};

/// A value that failed validation. `code` is a stable snake_case error code (e.g.
/// "invalid_phone", "invalid_email", "invalid_resident_id", "resident_id_checksum",
/// "invalid_uscc", "invalid_url"); the messages are human-readable English and Chinese.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalizeError {
    pub code: &'static str,
    pub message_en: String,
    pub message_zh: String,
}

impl NormalizeError {
    pub(crate) fn new(code: &'static str, message_en: impl Into<String>, message_zh: impl Into<String>) -> Self {
        Self { code, message_en: message_en.into(), message_zh: message_zh.into() }
    }
}

impl fmt::Display for NormalizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message_en)
    }
}

impl std::error::Error for NormalizeError {}

/// NFKC-fold a string. Used for identifiers where full-width forms (１３８, ＠, Ｘ) are typing
/// accidents rather than meaningful characters.
pub(crate) fn nfkc(raw: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    raw.nfkc().collect()
}

/// Applies `step` until the value stops changing (bounded). Normalisation steps such as
/// "lower-case, then drop punctuation" can, for exotic Unicode input, expose a sequence that a
/// second NFKC pass would compose differently; iterating to a fixed point is what makes the
/// public normalisers idempotent without reasoning about every such corner of Unicode.
pub(crate) fn to_fixed_point(first: String, step: impl Fn(&str) -> String) -> String {
    let mut current = first;
    for _ in 0..8 {
        let next = step(&current);
        if next == current {
            break;
        }
        current = next;
    }
    current
}
