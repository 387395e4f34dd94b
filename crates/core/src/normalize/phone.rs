//! Phone numbers → E.164, validated against libphonenumber metadata (`phonenumber` crate).
//!
//! The raw text is reduced to "an optional leading plus and a run of digits" (plus an optional
//! extension) by this module before libphonenumber sees it. That keeps the accepted syntax
//! small and explicit — no vanity letters, no RFC 3966 parameters other than our own `;ext=` —
//! and keeps arbitrary user text away from the library's parser.

use std::str::FromStr;

use phonenumber::country::Id;
use phonenumber::metadata::DATABASE;
use phonenumber::{Mode, PhoneNumber, Type};

use super::{NormalizeError, nfkc};

const CODE: &str = "invalid_phone";
const MAX_RAW_LEN: usize = 128;
/// E.164 allows at most 15 digits; a little slack covers an IDD prefix such as "0086".
const MAX_DIGITS: usize = 19;
const MAX_EXTENSION_DIGITS: usize = 10;
/// Extension markers, longest first so that "ext." wins over "x". Matching is ASCII
/// case-insensitive and done after NFKC, so full-width "＃" and "ＥＸＴ" are covered.
const EXTENSION_MARKERS: &[&str] =
    &[";ext=", "extension", "分机号", "分機號", "ext.", "ext", "分机", "分機", "转", "轉", "#", "x", ","];

/// Phone → E.164 (`"+8613812345678"`), with `";ext=123"` appended when the input carried an
/// extension. `default_region` is an ISO 3166 alpha-2 code (`"CN"`) used for numbers written
/// without an international prefix; an unknown region means only `+CC` numbers are accepted.
///
/// Accepted: full-width digits, spaces, dashes, dots, slashes and brackets; `+86`, `0086` and
/// bare `86` prefixes; national trunk prefixes (`010-62345678`, `(0755) 8888 6666`);
/// extensions written `ext. 123`, `x123`, `#123`, `转123`, `分机123` or `;ext=123`, and the
/// Chinese habit `010-62345678-123` when the part before the last dash is a valid landline.
/// Rejected: letters, numbers that are too short or too long, and numbers that libphonenumber's
/// metadata does not consider valid (e.g. mainland mobiles with an unallocated prefix).
pub fn normalize_phone(raw: &str, default_region: &str) -> Result<String, NormalizeError> {
    if raw.len() > MAX_RAW_LEN {
        return Err(too_long());
    }
    let text = nfkc(raw);
    let text = text.trim();
    if text.is_empty() {
        return Err(NormalizeError::new(CODE, "phone number is empty", "电话号码为空"));
    }
    let region = region_id(default_region);
    let (main, extension) = split_extension(text);
    let dialled = Dialled::scan(main)?;

    if let Some(national) = cn_mobile_fast_path(&dialled, region) {
        let e164 = format!("+86{national}");
        return Ok(match extension {
            Some(ext) => format!("{e164};ext={ext}"),
            None => e164,
        });
    }
    if let Some(number) = parse_valid(&dialled, region) {
        return Ok(with_extension(&number, extension.as_deref()));
    }
    // "010-62345678-8001": a trailing dash group after a valid landline is the way extensions
    // are commonly written in China.
    if extension.is_none()
        && let Some((number, dash_extension)) = split_dash_extension(main, region)
    {
        return Ok(with_extension(&number, Some(&dash_extension)));
    }
    Err(invalid_number_error(&dialled, region))
}

fn with_extension(number: &PhoneNumber, extension: Option<&str>) -> String {
    match extension {
        Some(ext) => format!("{};ext={ext}", e164(number)),
        None => e164(number),
    }
}

/// The dialled part of a number: whether it started with `+` and its digits.
struct Dialled {
    plus: bool,
    digits: String,
}

impl Dialled {
    fn scan(main: &str) -> Result<Self, NormalizeError> {
        let mut plus = false;
        let mut digits = String::new();
        for c in main.chars() {
            if c.is_ascii_digit() {
                digits.push(c);
            } else if c == '+' {
                if plus || !digits.is_empty() {
                    return Err(NormalizeError::new(
                        CODE,
                        "a '+' may only appear once, before the country code",
                        "“+”只能出现在国家代码之前，且只能有一个",
                    ));
                }
                plus = true;
            } else if !is_separator(c) {
                return Err(if c.is_alphabetic() {
                    NormalizeError::new(CODE, "phone number contains letters", "电话号码中包含字母或文字")
                } else {
                    NormalizeError::new(
                        CODE,
                        format!("phone number contains the unexpected character '{c}'"),
                        format!("电话号码中包含无效字符“{c}”"),
                    )
                });
            }
        }
        if digits.len() > MAX_DIGITS {
            return Err(too_long());
        }
        if digits.len() < 3 {
            return Err(too_short());
        }
        Ok(Self { plus, digits })
    }

    /// The form handed to libphonenumber: only `+` and ASCII digits.
    fn as_parse_input(&self) -> String {
        if self.plus { format!("+{}", self.digits) } else { self.digits.clone() }
    }
}

fn is_separator(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            '-' | '.' | '(' | ')' | '[' | ']' | '/' | '\u{2010}'..='\u{2015}' | '\u{2212}' | '\u{30FB}' | '\u{00B7}'
        )
}

/// Splits `text` into the number and a trailing extension, if one of the markers is followed
/// by 1–10 digits and nothing else.
fn split_extension(text: &str) -> (&str, Option<String>) {
    // ASCII lower-casing keeps byte offsets identical to `text`.
    let lower = text.to_ascii_lowercase();
    for marker in EXTENSION_MARKERS {
        let Some(at) = lower.rfind(marker) else {
            continue;
        };
        let tail = text[at + marker.len()..]
            .trim_start_matches(|c: char| c.is_whitespace() || matches!(c, ':' | '.' | '='))
            .trim_end();
        let digits_only = tail.bytes().all(|b| b.is_ascii_digit());
        if digits_only && (1..=MAX_EXTENSION_DIGITS).contains(&tail.len()) {
            return (&text[..at], Some(tail.to_owned()));
        }
    }
    (text, None)
}

/// Tries "valid landline, dash, 1–6 digits" when the whole text was not a valid number.
fn split_dash_extension(main: &str, region: Option<Id>) -> Option<(PhoneNumber, String)> {
    let at = main.rfind('-')?;
    let tail = main[at + 1..].trim();
    if tail.is_empty() || tail.len() > 6 || !tail.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let head = Dialled::scan(&main[..at]).ok()?;
    let number = parse_valid(&head, region)?;
    let is_landline = matches!(number.number_type(&DATABASE), Type::FixedLine | Type::FixedLineOrMobile);
    is_landline.then(|| (number, tail.to_owned()))
}

/// Mainland mobiles are most of what a Chinese CRM stores, and the general path runs every
/// number-type pattern of the metadata. For an 11-digit national number starting with 1 (bare,
/// or after +86 / 0086 / 86) the mobile pattern of the same metadata decides alone: a match is
/// exactly what the general path would accept (a valid number whose type is mobile), and
/// anything else falls through to the general path. `fast_path_agrees_with_general_path`
/// checks the equivalence.
fn cn_mobile_fast_path(dialled: &Dialled, region: Option<Id>) -> Option<&str> {
    let digits = dialled.digits.as_str();
    let national = if dialled.plus {
        digits.strip_prefix("86")?
    } else if region == Some(Id::CN) {
        match digits.len() {
            11 => digits,
            13 => digits.strip_prefix("86")?,
            15 => digits.strip_prefix("0086")?,
            _ => return None,
        }
    } else {
        return None;
    };
    if national.len() != 11 || !national.starts_with('1') {
        return None;
    }
    let mobile = DATABASE.by_id("CN")?.descriptors().mobile()?;
    mobile.is_match(national).then_some(national)
}

/// Parses with libphonenumber and keeps the result only if the metadata says it is valid.
fn parse_valid(dialled: &Dialled, region: Option<Id>) -> Option<PhoneNumber> {
    if !dialled.plus && region.is_none() {
        return None;
    }
    let number = phonenumber::parse(region, dialled.as_parse_input()).ok()?;
    (number.is_valid() && !is_cn_pseudo_mobile(&number)).then_some(number)
}

/// In mainland China an 11-digit national number starting with 1 is always meant as a mobile,
/// but the (permissive) landline metadata also accepts some of them as "area code 10 plus nine
/// digits" — e.g. "10012345678". Those are rejected unless they are a real mobile.
fn is_cn_pseudo_mobile(number: &PhoneNumber) -> bool {
    if number.code().value() != 86 {
        return false;
    }
    let formatted = e164(number);
    let national = formatted.strip_prefix("+86").unwrap_or(&formatted);
    national.len() == 11
        && national.starts_with('1')
        && !matches!(number.number_type(&DATABASE), Type::Mobile | Type::FixedLineOrMobile)
}

fn e164(number: &PhoneNumber) -> String {
    number.format().mode(Mode::E164).to_string()
}

/// Region codes the metadata knows; anything else (including "", "ZZ", "china") is `None`.
/// Checking the database matters: the parser unwraps the metadata lookup for the region.
fn region_id(default_region: &str) -> Option<Id> {
    let id = Id::from_str(&default_region.trim().to_ascii_uppercase()).ok()?;
    DATABASE.by_id(id.as_ref()).map(|_| id)
}

fn too_long() -> NormalizeError {
    NormalizeError::new(CODE, "phone number is too long", "电话号码过长")
}

fn too_short() -> NormalizeError {
    NormalizeError::new(CODE, "phone number is too short", "电话号码过短")
}

/// The most helpful message for a number that did not validate.
fn invalid_number_error(dialled: &Dialled, region: Option<Id>) -> NormalizeError {
    if !dialled.plus && region.is_none() {
        return NormalizeError::new(
            CODE,
            "phone number needs an international prefix (+country code)",
            "电话号码需要国际区号（+国家代码）",
        );
    }
    let digits = dialled.digits.as_str();
    // The national significant number, if this looks like it was meant as a mainland number.
    let cn_national = if dialled.plus {
        digits.strip_prefix("86")
    } else if region == Some(Id::CN) {
        let without_idd = digits.strip_prefix("0086").unwrap_or(digits);
        Some(if without_idd.len() == 13 { without_idd.strip_prefix("86").unwrap_or(without_idd) } else { without_idd })
    } else {
        None
    };
    // Beijing's area code is 10: ten national digits starting with 10 are a Beijing landline
    // (an 8-digit local number), not a mobile missing a digit.
    let beijing_landline = |n: &str| n.starts_with("10") && n.len() == 10;
    if cn_national.is_some_and(|n| n.starts_with('1') && (10..=12).contains(&n.len()) && !beijing_landline(n)) {
        return NormalizeError::new(
            CODE,
            "not a valid mainland China mobile number (11 digits with an allocated prefix \
             such as 13x, 15x, 18x, 19x)",
            "不是有效的中国大陆手机号码（应为11位，且号段有效，如13x、15x、18x、19x）",
        );
    }
    if digits.len() < 7 {
        return too_short();
    }
    if digits.len() > 15 {
        return too_long();
    }
    NormalizeError::new(
        CODE,
        "not a valid phone number (check the area code and number of digits)",
        "不是有效的电话号码（请检查区号和位数）",
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn check(raw: &str, region: &str, expected: Option<&str>) {
        let got = normalize_phone(raw, region);
        match (expected, &got) {
            (Some(want), Ok(have)) => assert_eq!(have, want, "input {raw:?} ({region})"),
            (None, Err(err)) => assert_eq!(err.code, "invalid_phone", "input {raw:?}"),
            _ => panic!("input {raw:?} ({region}): expected {expected:?}, got {got:?}"),
        }
    }

    #[test]
    fn cn_mobiles() {
        let cases = [
            ("13812345678", "+8613812345678"),
            ("138 1234 5678", "+8613812345678"),
            ("138-1234-5678", "+8613812345678"),
            ("138.1234.5678", "+8613812345678"),
            ("(138)12345678", "+8613812345678"),
            ("  13812345678\n", "+8613812345678"),
            ("１３８１２３４５６７８", "+8613812345678"),
            ("１３８－１２３４－５６７８", "+8613812345678"),
            ("１３８　１２３４　５６７８", "+8613812345678"),
            ("+8613812345678", "+8613812345678"),
            ("+86 138 1234 5678", "+8613812345678"),
            ("+86-138-1234-5678", "+8613812345678"),
            ("(+86) 138 1234 5678", "+8613812345678"),
            ("＋８６ １３８１２３４５６７８", "+8613812345678"),
            ("008613812345678", "+8613812345678"),
            ("0086 138 1234 5678", "+8613812345678"),
            ("8613812345678", "+8613812345678"),
            ("86 138 1234 5678", "+8613812345678"),
            ("15912345678", "+8615912345678"),
            ("18612345678", "+8618612345678"),
            ("19912345678", "+8619912345678"),
            ("17712345678", "+8617712345678"),
        ];
        for (raw, want) in cases {
            check(raw, "CN", Some(want));
        }
    }

    #[test]
    fn cn_landlines_and_service_numbers() {
        let cases = [
            ("010-62345678", "+861062345678"),
            ("010 6234 5678", "+861062345678"),
            ("(010)62345678", "+861062345678"),
            ("（０１０）６２３４５６７８", "+861062345678"),
            ("(0755) 8888 6666", "+8675588886666"),
            ("0755-88886666", "+8675588886666"),
            ("021-6123 4567", "+862161234567"),
            ("0571-8702 2088", "+8657187022088"),
            ("+86 10 6234 5678", "+861062345678"),
            ("+86 (0)10 6234 5678", "+861062345678"),
            ("0086 10 6234 5678", "+861062345678"),
            ("400-810-8888", "+864008108888"),
        ];
        for (raw, want) in cases {
            check(raw, "CN", Some(want));
        }
    }

    #[test]
    fn extensions() {
        let cases = [
            ("010-62345678 ext. 123", "+861062345678;ext=123"),
            ("010-62345678 ext 123", "+861062345678;ext=123"),
            ("010-62345678 EXT.123", "+861062345678;ext=123"),
            ("010-62345678 extension 123", "+861062345678;ext=123"),
            ("010-62345678 x123", "+861062345678;ext=123"),
            ("010-62345678转123", "+861062345678;ext=123"),
            ("010-62345678 转 123", "+861062345678;ext=123"),
            ("010-62345678分机123", "+861062345678;ext=123"),
            ("010-62345678 分机号：123", "+861062345678;ext=123"),
            ("010-62345678#123", "+861062345678;ext=123"),
            ("010-62345678＃１２３", "+861062345678;ext=123"),
            ("010-62345678-123", "+861062345678;ext=123"),
            ("0755-88886666-8001", "+8675588886666;ext=8001"),
            ("+861062345678;ext=123", "+861062345678;ext=123"),
            ("+1 650-253-0000 x 42", "+16502530000;ext=42"),
        ];
        for (raw, want) in cases {
            check(raw, "CN", Some(want));
        }
    }

    #[test]
    fn foreign_numbers() {
        let cases = [
            ("+1 650-253-0000", "CN", "+16502530000"),
            ("+1 (650) 253-0000", "CN", "+16502530000"),
            ("001 650 253 0000", "CN", "+16502530000"),
            ("(650) 253-0000", "US", "+16502530000"),
            ("650.253.0000", "us", "+16502530000"),
            ("+44 20 7946 0958", "CN", "+442079460958"),
            ("+44 (0)20 7946 0958", "CN", "+442079460958"),
            ("020 7946 0958", "GB", "+442079460958"),
            ("+852 2123 4567", "CN", "+85221234567"),
            ("+852 9123 4567", "CN", "+85291234567"),
            ("+886 912 345 678", "CN", "+886912345678"),
            ("+81 3-1234-5678", "CN", "+81312345678"),
            ("+49 30 123456", "CN", "+4930123456"),
            ("+8613812345678", "", "+8613812345678"),
            ("+8613812345678", "XX", "+8613812345678"),
        ];
        for (raw, region, want) in cases {
            check(raw, region, Some(want));
        }
    }

    #[test]
    fn rejections() {
        let cases = [
            "",
            "   ",
            "abc",
            "138abc45678",
            "1380013800O",
            "1-800-FLOWERS",
            "tel:+8613812345678",
            "13812345678 call after 6pm",
            "138",
            "1381234567",
            "138123456789",
            "12012345678",
            "10012345678",
            "11112345678",
            "+86 120 1234 5678",
            "1",
            "12",
            "8",
            "+",
            "++8613812345678",
            "138+12345678",
            "13812345678 x",
            "13812345678 ext. 12345678901",
            "0000000000",
            "+999 1234 5678",
            "123456789012345678901234567890",
            "138 1234 5678 / 139 8765 4321",
            "手机13812345678",
            "13812345678!",
            "138_1234_5678",
        ];
        for raw in cases {
            check(raw, "CN", None);
        }
        // Without a usable default region a national number cannot be placed.
        check("13812345678", "", None);
        check("13812345678", "ZZ", None);
        check("13812345678", "China", None);
    }

    #[test]
    fn error_messages_are_specific() {
        let err = normalize_phone("12012345678", "CN").unwrap_err();
        assert!(err.message_en.contains("mobile"), "{err:?}");
        assert!(err.message_zh.contains("手机"), "{err:?}");
        // A Beijing service number (800…) is not a fixed line; it is not a mobile either.
        for raw in ["+86 10 8007 5404", "010-80075404"] {
            let err = normalize_phone(raw, "CN").unwrap_err();
            assert!(err.message_en.contains("area code"), "{raw}: {err:?}");
        }
        let err = normalize_phone("138abc45678", "CN").unwrap_err();
        assert!(err.message_en.contains("letters"), "{err:?}");
        let err = normalize_phone("12", "CN").unwrap_err();
        assert!(err.message_en.contains("too short"), "{err:?}");
        let err = normalize_phone("13812345678", "").unwrap_err();
        assert!(err.message_en.contains("international"), "{err:?}");
    }

    proptest! {
        #[test]
        fn never_panics_and_is_idempotent(raw in any::<String>()) {
            if let Ok(e164) = normalize_phone(&raw, "CN") {
                prop_assert_eq!(normalize_phone(&e164, "CN"), Ok(e164.clone()));
                prop_assert_eq!(normalize_phone(&e164, "US"), Ok(e164));
            }
        }

        #[test]
        fn phone_like_soup_never_panics_and_is_idempotent(
            raw in "[+]?[0-9０-９ ()（）.#转x-]{0,24}",
            region in prop_oneof![Just("CN"), Just("US"), Just("GB"), Just(""), Just("zz")],
        ) {
            if let Ok(e164) = normalize_phone(&raw, region) {
                prop_assert!(e164.starts_with('+'));
                prop_assert_eq!(normalize_phone(&e164, region), Ok(e164.clone()));
                prop_assert_eq!(normalize_phone(&e164, "CN"), Ok(e164));
            }
        }

        #[test]
        fn valid_mobiles_in_any_format(
            prefix in proptest::sample::select(vec!["130", "135", "138", "150", "158", "177", "186", "199"]),
            rest in 0u32..100_000_000,
            style in 0usize..5,
        ) {
            let national = format!("{prefix}{rest:08}");
            let raw = match style {
                0 => national.clone(),
                1 => format!("+86 {} {} {}", &national[..3], &national[3..7], &national[7..]),
                2 => format!("0086-{national}"),
                3 => national.chars().map(|c| char::from_u32(c as u32 + 0xFEE0).unwrap()).collect(),
                _ => format!("86{national}"),
            };
            prop_assert_eq!(normalize_phone(&raw, "CN"), Ok(format!("+86{national}")));
        }
    }

    /// The mainland-mobile fast path answers exactly what the general libphonenumber path
    /// answers, for every prefix form it handles.
    fn general_path(raw: &str, region: &str) -> Option<String> {
        let region = region_id(region);
        let dialled = Dialled::scan(raw).ok()?;
        parse_valid(&dialled, region).map(|n| e164(&n))
    }

    #[test]
    fn fast_path_agrees_with_general_path_on_every_prefix() {
        // Every three-digit prefix 100..199 with a few suffixes, in each written form.
        for prefix in 100..200u32 {
            for suffix in ["00000000", "12345678", "99999999", "50505050"] {
                let national = format!("{prefix}{suffix}");
                for raw in
                    [national.clone(), format!("+86{national}"), format!("86{national}"), format!("0086{national}")]
                {
                    let region = region_id("CN");
                    let dialled = Dialled::scan(&raw).unwrap();
                    if let Some(fast) = cn_mobile_fast_path(&dialled, region) {
                        assert_eq!(general_path(&raw, "CN"), Some(format!("+86{fast}")), "{raw}");
                    }
                }
            }
        }
    }

    proptest! {
        #[test]
        fn fast_path_agrees_with_general_path(n in 10_000_000_000u64..20_000_000_000u64, form in 0..4usize) {
            let national = n.to_string();
            let raw = match form {
                0 => national.clone(),
                1 => format!("+86{national}"),
                2 => format!("86{national}"),
                _ => format!("0086{national}"),
            };
            let dialled = Dialled::scan(&raw).unwrap();
            if let Some(fast) = cn_mobile_fast_path(&dialled, region_id("CN")) {
                prop_assert_eq!(general_path(&raw, "CN"), Some(format!("+86{fast}")));
            } else if national.starts_with('1') {
                // Rejected by the mobile pattern: the general path must not call it a mobile.
                if let Some(general) = general_path(&raw, "CN") {
                    let number = phonenumber::parse(None, &general).unwrap();
                    prop_assert!(!matches!(number.number_type(&DATABASE), Type::Mobile));
                }
            }
        }
    }
}
