//! Unified Social Credit Codes (GB 32100-2015, 统一社会信用代码).
//!
//! Layout: registration authority (1), organisation category (1), administrative division
//! code (6), organisation code (9), check character (1). The alphabet is the 31 characters
//! `0-9A-Z` without `I O Z S V`; the check character is
//! `31 - (Σ value(cᵢ)·wᵢ mod 31)` (31 meaning 0).

use super::{NormalizeError, nfkc};

const CODE: &str = "invalid_uscc";

/// The USCC alphabet in value order: the character at index `n` has value `n`.
const CHARSET: &str = "0123456789ABCDEFGHJKLMNPQRTUWXY";
const WEIGHTS: [u32; 17] = [1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28];
const MAX_RAW_LEN: usize = 96;

/// A syntactically valid Unified Social Credit Code. `checksum_ok` is false when the check
/// character does not match: that is a warning, not an error, because some early codes fail
/// it and a data steward may override it with a reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uscc {
    pub value: String,
    pub checksum_ok: bool,
}

/// Unified Social Credit Code (GB 32100-2015): 18 characters from
/// `0123456789ABCDEFGHJKLMNPQRTUWXY`, upper-cased, full-width folded, spaces removed. A wrong
/// length or character is an error; a failing checksum is reported in [`Uscc::checksum_ok`].
pub fn normalize_uscc(raw: &str) -> Result<Uscc, NormalizeError> {
    if raw.len() > MAX_RAW_LEN {
        return Err(NormalizeError::new(CODE, "unified social credit code is too long", "统一社会信用代码过长"));
    }
    let value: String = nfkc(raw).chars().filter(|c| !c.is_whitespace()).flat_map(char::to_uppercase).collect();

    if value.chars().count() != 18 {
        return Err(NormalizeError::new(
            CODE,
            "unified social credit code must have 18 characters",
            "统一社会信用代码应为18位",
        ));
    }
    if let Some(bad) = value.chars().find(|&c| char_value(c).is_none()) {
        let hint = if matches!(bad, 'I' | 'O' | 'Z' | 'S' | 'V') {
            " (the letters I, O, Z, S and V are never used)"
        } else {
            ""
        };
        let hint_zh = if hint.is_empty() { "" } else { "（不使用字母I、O、Z、S、V）" };
        return Err(NormalizeError::new(
            CODE,
            format!("unified social credit code contains the invalid character '{bad}'{hint}"),
            format!("统一社会信用代码包含无效字符“{bad}”{hint_zh}"),
        ));
    }

    // Every character is now in the ASCII alphabet, so byte slicing is safe.
    let checksum_ok = uscc_check_char(&value[..17]) == value.chars().nth(17);
    Ok(Uscc { value, checksum_ok })
}

/// The check character for the first 17 characters of a USCC, or `None` when `first17` is not
/// exactly 17 characters of the USCC alphabet (upper-case).
pub fn uscc_check_char(first17: &str) -> Option<char> {
    if first17.chars().count() != 17 {
        return None;
    }
    let mut sum = 0u32;
    for (c, weight) in first17.chars().zip(WEIGHTS) {
        sum += char_value(c)? * weight;
    }
    let check = (31 - sum % 31) % 31;
    CHARSET.chars().nth(check as usize)
}

fn char_value(c: char) -> Option<u32> {
    CHARSET.find(c).and_then(|index| u32::try_from(index).ok())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ok(value: &str, checksum_ok: bool) -> Result<Uscc, &'static str> {
        Ok(Uscc { value: value.to_owned(), checksum_ok })
    }

    #[test]
    fn normalises_and_validates_table() {
        let cases: &[(&str, Result<Uscc, &str>)] = &[
            // Published codes of well-known companies (from their business licences).
            ("9144030071526726XG", ok("9144030071526726XG", true)),
            ("914403001922038216", ok("914403001922038216", true)),
            ("91110108551385082Q", ok("91110108551385082Q", true)),
            // Case, full width and spacing.
            ("9144030071526726xg", ok("9144030071526726XG", true)),
            (" 91440300 7152 6726XG ", ok("9144030071526726XG", true)),
            ("９１４４０３００７１５２６７２６ＸＧ", ok("9144030071526726XG", true)),
            ("９１４４０３００７１５２６７２６ｘｇ", ok("9144030071526726XG", true)),
            ("9144\u{3000}030071526726XG", ok("9144030071526726XG", true)),
            // Checksum failures are reported, not rejected.
            ("9144030071526726XH", ok("9144030071526726XH", false)),
            ("914403001922038217", ok("914403001922038217", false)),
            ("91110108551385083Q", ok("91110108551385083Q", false)),
            // Wrong length.
            ("", Err("invalid_uscc")),
            ("9144030071526726X", Err("invalid_uscc")),
            ("9144030071526726XGG", Err("invalid_uscc")),
            // Letters outside the alphabet, punctuation and CJK.
            ("9144030071526726XO", Err("invalid_uscc")),
            ("91440300715267261I", Err("invalid_uscc")),
            ("9144030071526726SZ", Err("invalid_uscc")),
            ("914403007152672-XG", Err("invalid_uscc")),
            ("914403007152672公司", Err("invalid_uscc")),
        ];
        for (raw, expected) in cases {
            let got = normalize_uscc(raw).map_err(|e| e.code);
            assert_eq!(&got, expected, "input {raw:?}");
        }
    }

    #[test]
    fn check_char_examples() {
        assert_eq!(uscc_check_char("9144030071526726X"), Some('G'));
        assert_eq!(uscc_check_char("91440300192203821"), Some('6'));
        assert_eq!(uscc_check_char("9144030071526726x"), None);
        assert_eq!(uscc_check_char("9144030071526726"), None);
        assert_eq!(uscc_check_char("9144030071526726XG"), None);
        assert_eq!(uscc_check_char("914403007152672OX"), None);
    }

    #[test]
    fn check_value_zero_maps_to_zero() {
        // Find a prefix whose weighted sum is divisible by 31 and check that the check
        // character is '0' rather than an out-of-range index.
        let found = (0..10_000u32).map(|n| format!("9111010{n:010}")).find(|p| {
            let sum: u32 = p.chars().zip(WEIGHTS).map(|(c, w)| char_value(c).unwrap() * w).sum();
            sum.is_multiple_of(31)
        });
        assert_eq!(uscc_check_char(&found.unwrap()), Some('0'));
    }

    fn valid_uscc() -> impl Strategy<Value = String> {
        proptest::collection::vec(proptest::sample::select(CHARSET.chars().collect::<Vec<_>>()), 17).prop_map(|chars| {
            let first17: String = chars.into_iter().collect();
            let check = uscc_check_char(&first17).unwrap();
            format!("{first17}{check}")
        })
    }

    proptest! {
        #[test]
        fn generated_codes_normalise_to_themselves(code in valid_uscc()) {
            prop_assert_eq!(
                normalize_uscc(&code),
                Ok(Uscc { value: code.clone(), checksum_ok: true })
            );
            let lower = code.to_lowercase();
            prop_assert_eq!(normalize_uscc(&lower), Ok(Uscc { value: code, checksum_ok: true }));
        }

        #[test]
        fn single_substitutions_fail_checksum_or_syntax(
            code in valid_uscc(),
            position in 0usize..18,
            replacement in prop_oneof![
                proptest::sample::select(CHARSET.chars().collect::<Vec<_>>()),
                any::<char>(),
            ],
        ) {
            let original = code.as_bytes()[position] as char;
            let folded = nfkc(&replacement.to_string()).to_uppercase();
            prop_assume!(folded != original.to_string());
            let mut chars: Vec<char> = code.chars().collect();
            chars[position] = replacement;
            let mutated: String = chars.into_iter().collect();
            match normalize_uscc(&mutated) {
                Ok(uscc) => prop_assert!(!uscc.checksum_ok, "{} passed the checksum", mutated),
                Err(err) => prop_assert_eq!(err.code, "invalid_uscc"),
            }
        }

        #[test]
        fn never_panics_and_is_idempotent(raw in any::<String>()) {
            if let Ok(uscc) = normalize_uscc(&raw) {
                prop_assert_eq!(normalize_uscc(&uscc.value), Ok(uscc));
            }
            let _ = uscc_check_char(&raw);
        }
    }
}
