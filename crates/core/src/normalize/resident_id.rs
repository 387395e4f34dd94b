//! Chinese resident identity card numbers (GB 11643-1999, 公民身份号码).
//!
//! Layout of the 18-character form: 6-digit address code, 8-digit birth date (YYYYMMDD),
//! 3-digit sequence (odd for men, even for women), 1 check character computed with
//! ISO 7064 MOD 11-2 (`0`-`9` or `X` for ten). The legacy 15-digit form (1984–1999 cards) has a
//! 6-digit birth date `YYMMDD` in the 20th century and no check character; it is widened to the
//! 18-character form, which is what every stored value and blind index uses.

use time::{Date, Month};

use super::{NormalizeError, nfkc};

const CODE_FORMAT: &str = "invalid_resident_id";
const CODE_CHECKSUM: &str = "resident_id_checksum";

/// ISO 7064 MOD 11-2 weights, `2^(17-i) mod 11` for positions 0..17.
const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
/// Check character indexed by `sum mod 11`.
const CHECK_CHARS: [char; 11] = ['1', '0', 'X', '9', '8', '7', '6', '5', '4', '3', '2'];

/// First two digits of the address code: the provincial-level divisions, plus 71 (Taiwan),
/// 81/82 (Hong Kong/Macau residence permits) 83 (Taiwan residence permits) and 91 (foreigners'
/// permanent residence, 2023 format).
const PROVINCE_CODES: &[u8] = &[
    11, 12, 13, 14, 15, 21, 22, 23, 31, 32, 33, 34, 35, 36, 37, 41, 42, 43, 44, 45, 46, 50, 51, 52, 53, 54, 61, 62, 63,
    64, 65, 71, 81, 82, 83, 91,
];

/// Upper bound on input length; anything longer is certainly not an ID and is rejected before
/// Unicode normalisation does work proportional to the input.
const MAX_RAW_LEN: usize = 64;

/// Chinese resident ID (GB 11643-1999): 18 characters, the last may be `x`/`X` (returned as
/// upper-case `X`); full-width digits and spaces are accepted; the ISO 7064 MOD 11-2 checksum,
/// the province code and the birth date (a real date, year >= 1900, not after `today`) are
/// verified. The legacy 15-digit form (`YYMMDD` birth date in 19YY) is converted to 18
/// characters with a computed check character.
pub fn normalize_cn_resident_id(raw: &str, today: Date) -> Result<String, NormalizeError> {
    if raw.len() > MAX_RAW_LEN {
        return Err(format_error("resident ID is too long", "身份证号码过长"));
    }
    let folded: String = nfkc(raw).chars().filter(|c| !c.is_whitespace()).map(|c| c.to_ascii_uppercase()).collect();

    let id18 = match folded.len() {
        18 => folded,
        15 => widen_legacy(&folded)?,
        _ => {
            return Err(format_error(
                "resident ID must have 18 characters (or 15 digits in the legacy form)",
                "身份证号码应为18位（旧版为15位数字）",
            ));
        }
    };

    // The length above is in bytes, so `id18` may still hold multi-byte characters (six CJK
    // characters are 18 bytes); the alphabet is checked before any slicing by byte index.
    let (first17, last) = split_check_char(&id18).ok_or_else(|| {
        format_error("resident ID must be 17 digits followed by a digit or X", "身份证号码应为17位数字加1位数字或X")
    })?;

    check_region(first17)?;
    check_birth_date(&first17[6..14], today)?;

    let expected = resident_id_check_char(first17)
        .ok_or_else(|| format_error("resident ID must start with 17 digits", "身份证号码前17位应为数字"))?;
    if expected != last {
        return Err(NormalizeError::new(
            CODE_CHECKSUM,
            "resident ID check digit does not match (typing error?)",
            "身份证号码校验位不正确（可能录入有误）",
        ));
    }
    Ok(id18)
}

/// Birth date encoded in a normalised 18-character resident ID, or `None` when the input is not
/// 18 ASCII characters or the encoded date is not a calendar date. The checksum is not checked.
pub fn resident_id_birth_date(id18: &str) -> Option<Date> {
    if id18.len() != 18 || !id18.is_ascii() {
        return None;
    }
    parse_yyyymmdd(&id18[6..14])
}

/// The ISO 7064 MOD 11-2 check character (`0`-`9` or `X`) for the first 17 digits of an ID, or
/// `None` when `first17` is not exactly 17 ASCII digits.
pub fn resident_id_check_char(first17: &str) -> Option<char> {
    if first17.len() != 17 {
        return None;
    }
    let mut sum = 0u32;
    for (c, weight) in first17.chars().zip(WEIGHTS) {
        sum += c.to_digit(10)? * weight;
    }
    CHECK_CHARS.get((sum % 11) as usize).copied()
}

fn format_error(en: &str, zh: &str) -> NormalizeError {
    NormalizeError::new(CODE_FORMAT, en, zh)
}

/// Splits an 18-byte candidate into its 17 leading digits and check character.
fn split_check_char(id18: &str) -> Option<(&str, char)> {
    if !id18.is_ascii() {
        return None;
    }
    let (first17, last) = id18.split_at(17);
    let last = last.chars().next()?;
    let alphabet_ok = first17.bytes().all(|b| b.is_ascii_digit()) && (last.is_ascii_digit() || last == 'X');
    alphabet_ok.then_some((first17, last))
}

/// 15-digit legacy ID → 18 characters: insert the century "19" before `YYMMDD` and append the
/// computed check character.
fn widen_legacy(id15: &str) -> Result<String, NormalizeError> {
    if !id15.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format_error(
            "a 15-character resident ID must consist of digits only",
            "15位身份证号码应全部为数字",
        ));
    }
    let first17 = format!("{}19{}", &id15[..6], &id15[6..]);
    let check = resident_id_check_char(&first17)
        .ok_or_else(|| format_error("resident ID must consist of digits", "身份证号码应为数字"))?;
    Ok(format!("{first17}{check}"))
}

fn check_region(first17: &str) -> Result<(), NormalizeError> {
    let province: u8 = first17[..2].parse().unwrap_or(0);
    if PROVINCE_CODES.contains(&province) {
        Ok(())
    } else {
        Err(format_error("resident ID starts with an unknown province code", "身份证号码的省级行政区划代码无效"))
    }
}

fn check_birth_date(yyyymmdd: &str, today: Date) -> Result<(), NormalizeError> {
    let Some(birth) = parse_yyyymmdd(yyyymmdd) else {
        return Err(format_error("resident ID contains an impossible birth date", "身份证号码中的出生日期不存在"));
    };
    if birth.year() < 1900 {
        return Err(format_error("resident ID birth year is before 1900", "身份证号码中的出生年份早于1900年"));
    }
    if birth > today {
        return Err(format_error("resident ID birth date is in the future", "身份证号码中的出生日期晚于今天"));
    }
    Ok(())
}

fn parse_yyyymmdd(s: &str) -> Option<Date> {
    if s.len() != 8 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let year: i32 = s[..4].parse().ok()?;
    let month: u8 = s[4..6].parse().ok()?;
    let day: u8 = s[6..8].parse().ok()?;
    Date::from_calendar_date(year, Month::try_from(month).ok()?, day).ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use time::macros::date;

    const TODAY: Date = date!(2025 - 06 - 15);

    fn check(raw: &str, expected: Result<&str, &str>) {
        let got = normalize_cn_resident_id(raw, TODAY);
        match (expected, &got) {
            (Ok(want), Ok(have)) => assert_eq!(have, want, "input {raw:?}"),
            (Err(code), Err(err)) => assert_eq!(err.code, code, "input {raw:?}: {err:?}"),
            _ => panic!("input {raw:?}: expected {expected:?}, got {got:?}"),
        }
    }

    #[test]
    fn normalises_and_validates_table() {
        let cases: &[(&str, Result<&str, &str>)] = &[
            // The worked example from GB 11643-1999 (check character X).
            ("11010519491231002X", Ok("11010519491231002X")),
            ("11010519491231002x", Ok("11010519491231002X")),
            ("  11010519491231002x\t", Ok("11010519491231002X")),
            ("110105 19491231 002X", Ok("11010519491231002X")),
            ("１１０１０５１９４９１２３１００２Ｘ", Ok("11010519491231002X")),
            ("１１０１０５１９４９１２３１００２ｘ", Ok("11010519491231002X")),
            ("110105　19491231　002X", Ok("11010519491231002X")),
            // Computed examples across provinces and special codes.
            ("44030519900101123X", Ok("44030519900101123X")),
            ("310104198802290012", Ok("310104198802290012")),
            ("810000199408230021", Ok("810000199408230021")),
            // Legacy 15-digit form: 19YY century, computed check character.
            ("110105491231002", Ok("11010519491231002X")),
            ("440305900101123", Ok("44030519900101123X")),
            ("４４０３０５９００１０１１２３", Ok("44030519900101123X")),
            // Checksum failures.
            ("110105194912310021", Err("resident_id_checksum")),
            ("440305199001011231", Err("resident_id_checksum")),
            ("440305199001011230", Err("resident_id_checksum")),
            ("440305199001011223", Err("resident_id_checksum")),
            // Format failures.
            ("", Err("invalid_resident_id")),
            ("11010519491231002", Err("invalid_resident_id")),
            ("11010519491231002XX", Err("invalid_resident_id")),
            ("1101051949123100X2", Err("invalid_resident_id")),
            ("11010519491231002Y", Err("invalid_resident_id")),
            ("11010519491231-02X", Err("invalid_resident_id")),
            ("11010519491231002Ｙ", Err("invalid_resident_id")),
            ("身份证11010519491231002X", Err("invalid_resident_id")),
            ("张三张三张三", Err("invalid_resident_id")),
            ("11010549123100X", Err("invalid_resident_id")),
            // Unknown province codes (checksums computed so only the region is wrong).
            ("001051194912310028", Err("invalid_resident_id")),
            ("160105194912310029", Err("invalid_resident_id")),
            ("990105194912310023", Err("invalid_resident_id")),
            ("720105194912310023", Err("invalid_resident_id")),
            // Impossible, too early or future birth dates.
            ("110105199002300028", Err("invalid_resident_id")),
            ("110105190002290025", Err("invalid_resident_id")),
            ("110105199013010026", Err("invalid_resident_id")),
            ("110105189912310023", Err("invalid_resident_id")),
            ("110105203001010028", Err("invalid_resident_id")),
            ("110105202506160027", Err("invalid_resident_id")),
            ("110105900230002", Err("invalid_resident_id")),
        ];
        for (raw, expected) in cases {
            check(raw, *expected);
        }
    }

    /// The region and date cases above must fail for their stated reason, not the checksum.
    #[test]
    fn table_region_and_date_cases_have_correct_checksums() {
        for id in [
            "001051194912310028",
            "160105194912310029",
            "990105194912310023",
            "720105194912310023",
            "110105199002300028",
            "110105190002290025",
            "110105199013010026",
            "110105189912310023",
            "110105203001010028",
            "110105202506160027",
            "44030519900101123X",
            "310104198802290012",
            "810000199408230021",
        ] {
            assert_eq!(
                resident_id_check_char(&id[..17]),
                id.chars().last(),
                "fixture {id} needs a correct check character"
            );
        }
    }

    #[test]
    fn birth_date_today_is_accepted() {
        let first17 = "11010520250615002";
        let id = format!("{first17}{}", resident_id_check_char(first17).unwrap());
        assert_eq!(normalize_cn_resident_id(&id, TODAY).unwrap(), id);
    }

    #[test]
    fn birth_date_extraction() {
        assert_eq!(resident_id_birth_date("11010519491231002X"), Some(date!(1949 - 12 - 31)));
        assert_eq!(resident_id_birth_date("310104198802290012"), Some(date!(1988 - 02 - 29)));
        assert_eq!(resident_id_birth_date("110105199002300028"), None);
        assert_eq!(resident_id_birth_date("11010519491231002"), None);
        assert_eq!(resident_id_birth_date("１１０１０５１９４９１２３１"), None);
        assert_eq!(resident_id_birth_date(""), None);
    }

    #[test]
    fn check_char_rejects_bad_input() {
        assert_eq!(resident_id_check_char("11010519491231002"), Some('X'));
        assert_eq!(resident_id_check_char("1101051949123100"), None);
        assert_eq!(resident_id_check_char("110105194912310021"), None);
        assert_eq!(resident_id_check_char("1101051949123100A"), None);
        assert_eq!(resident_id_check_char("１１０１０５１９４９１２３１"), None);
    }

    #[test]
    fn every_check_value_is_reachable() {
        // Vary the sequence digits until each of the 11 check characters has been produced.
        let mut seen = std::collections::BTreeSet::new();
        for seq in 0..1000 {
            let first17 = format!("11010519491231{seq:03}");
            seen.insert(resident_id_check_char(&first17).unwrap());
        }
        assert_eq!(seen.len(), 11);
    }

    fn valid_id() -> impl Strategy<Value = String> {
        valid_id_born_in(1900..=2025)
    }

    fn valid_id_born_in(years: std::ops::RangeInclusive<i32>) -> impl Strategy<Value = String> {
        (proptest::sample::select(PROVINCE_CODES), 0u32..10_000, years, 1u8..=12, 1u8..=31, 0u32..1000).prop_filter_map(
            "real date not after today",
            |(p, area, y, m, d, seq)| {
                let birth = Date::from_calendar_date(y, Month::try_from(m).ok()?, d).ok()?;
                if birth > TODAY {
                    return None;
                }
                let first17 = format!("{p:02}{area:04}{y:04}{m:02}{d:02}{seq:03}");
                Some(format!("{first17}{}", resident_id_check_char(&first17)?))
            },
        )
    }

    proptest! {
        #[test]
        fn generated_ids_normalise_to_themselves(id in valid_id()) {
            prop_assert_eq!(normalize_cn_resident_id(&id, TODAY), Ok(id.clone()));
            prop_assert!(resident_id_birth_date(&id).is_some());
            let lower = id.to_ascii_lowercase();
            prop_assert_eq!(normalize_cn_resident_id(&lower, TODAY), Ok(id));
        }

        #[test]
        fn legacy_ids_widen_to_valid_ids(id in valid_id_born_in(1900..=1999)) {
            let legacy = format!("{}{}", &id[..6], &id[8..17]);
            prop_assert_eq!(normalize_cn_resident_id(&legacy, TODAY), Ok(id));
        }

        #[test]
        fn single_substitutions_are_rejected(
            id in valid_id(),
            position in 0usize..18,
            replacement in prop_oneof![
                proptest::char::range('0', '9'),
                Just('X'),
                any::<char>(),
            ],
        ) {
            let original = id.as_bytes()[position] as char;
            // A replacement that folds back to the original character (lower-case x for X,
            // full-width or circled digits) is the same ID, not a substitution.
            let folded = nfkc(&replacement.to_string()).to_uppercase();
            prop_assume!(folded != original.to_string());
            let mut chars: Vec<char> = id.chars().collect();
            chars[position] = replacement;
            let mutated: String = chars.into_iter().collect();
            prop_assert!(
                normalize_cn_resident_id(&mutated, TODAY).is_err(),
                "{} accepted", mutated
            );
        }

        #[test]
        fn never_panics(raw in any::<String>()) {
            let _ = normalize_cn_resident_id(&raw, TODAY);
            let _ = resident_id_birth_date(&raw);
            let _ = resident_id_check_char(&raw);
        }

        #[test]
        fn never_panics_on_digit_soup(raw in "[0-9Xx１２３ ]{0,20}") {
            if let Ok(id) = normalize_cn_resident_id(&raw, TODAY) {
                prop_assert_eq!(normalize_cn_resident_id(&id, TODAY), Ok(id));
            }
        }
    }
}
