//! Normalisation per kind: a raw cell becomes a [`Prepared`] value that carries everything the
//! comparators and blocking keys need, computed once per record rather than once per pair.
//!
//! Every prepared value has an `exact` form: two values agree exactly when their exact forms are
//! equal, and the exact form is also the term whose frequency weakens agreement on common values
//! (two 张伟 agreeing says less than two 诸葛亮 agreeing).

use time::Date;
use unicode_normalization::UnicodeNormalization;

use super::fold::{
    char_pinyin, double_metaphone, fold_latin, is_han, is_pinyin_run, phonetic_name_word, simplify_char,
    split_pinyin_name, surname_of_han_name, surname_pinyin, to_simplified,
};
use super::kind::FieldKind;
use crate::normalize::{canonical_company_name, normalize_cn_resident_id, normalize_email, normalize_phone};
use crate::search::is_cjk;

/// Longest cell (in bytes) that is looked at; the rest is ignored. Matching keys never need
/// more, and the bound keeps the per-record work predictable on hostile input.
pub const MAX_VALUE_BYTES: usize = 1024;
/// Most tokens kept for a text-like value.
const MAX_TOKENS: usize = 64;

/// A normalised value of one kind. Missing values are represented by the absence of a
/// `Prepared` (an `Option`), never by an empty one.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    /// Equality form; also the term counted for term-frequency weighting.
    pub exact: Box<str>,
    /// A coarser form shared by values that sound or read the same (a name's sorted pinyin
    /// syllables, an e-mail user without digits, a place name's pinyin): near-agreement on a
    /// common sound is weighted by how common that sound is.
    pub sound: Option<Box<str>>,
    pub(crate) detail: Detail,
}

impl Prepared {
    /// Reads the first byte of every allocation a comparison of this value reads, and returns
    /// a sum of them that means nothing: called for a pair a few pairs ahead of the one being
    /// compared, it brings the value's scattered parts into the cache while the processor
    /// still works on that pair (the loads of different parts do not wait on one another),
    /// instead of each read of a comparison waiting on memory in turn.
    pub(crate) fn touch(&self) -> usize {
        let first = |s: &str| usize::from(s.as_bytes().first().copied().unwrap_or(0));
        let words = |w: &Words| first(&w.0);
        let detail = match &self.detail {
            Detail::Name(n) => {
                n.han.as_deref().map_or(0, first) + words(&n.tokens) + words(&n.forms) + words(&n.metaphones)
            }
            Detail::Company(t) | Detail::Tokens(t) => words(&t.tokens) + words(&t.numbers),
            Detail::Email(e) => first(&e.user),
            Detail::Date(d) => usize::from(d.ymd.is_some()),
            Detail::Phone | Detail::Postcode | Detail::City | Detail::Id | Detail::Exact => 0,
        };
        first(&self.exact) + self.sound.as_deref().map_or(0, first) + detail
    }
}

/// What a kind needs beyond the exact form. Every part is boxed, so that a value takes two
/// words here whatever its kind (a record holds one value per field, missing or not).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Detail {
    Name(Box<NameValue>),
    Company(Box<TokenValue>),
    Phone,
    Email(Box<EmailValue>),
    Date(Box<DateValue>),
    Tokens(Box<TokenValue>),
    Postcode,
    /// A place name; its sound (pinyin for Han, folded Latin letters otherwise, without
    /// spaces) is [`Prepared::sound`].
    City,
    Id,
    Exact,
}

/// A personal name (whole, given or family) reduced to sounds.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NameValue {
    /// Simplified Han characters when the name is written in Han characters.
    pub han: Option<Box<str>>,
    /// Phonetic tokens in written order: for a Han name the surname's pinyin and the given
    /// name's pinyin run together ("zhang", "xiaoming"); for a Latin name its words.
    pub tokens: Words,
    /// Whether the first token is known to be the surname (Han person names).
    pub surname_first: bool,
    /// Concatenations of the tokens in the orders the name may be written in.
    pub forms: Words,
    /// Sorted Double Metaphone codes of the tokens (Latin names only).
    pub metaphones: Words,
    /// The parts whose frequencies multiply to the chance of the whole name: surname and given
    /// name in Han characters, or the words of a Latin name. Empty for one-part names.
    pub parts: Words,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct EmailValue {
    /// Local part without dots and "+tag".
    pub user: Box<str>,
    /// Whether the user part is made from the person's name (zhangwei85@…, e.carter@…), set by
    /// the matcher when the record also has a name. Such addresses agree for namesakes, so
    /// their near-agreement is no evidence beyond the name's.
    pub name_like: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DateValue {
    /// (year, month, day) when the text is a calendar date.
    pub ymd: Option<(i32, u8, u8)>,
    /// Julian day number of `ymd`. (The digits — YYYYMMDD for a date, otherwise the digits of
    /// the text — are the exact form.)
    pub julian: Option<i32>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TokenValue {
    /// Sorted, de-duplicated tokens: Latin words, numbers, CJK bigrams.
    pub tokens: Words,
    /// The numeric tokens, sorted.
    pub numbers: Words,
    /// The value as a number when the whole text is one number (Text kind).
    pub number: Option<f64>,
}

/// A short list of short strings (the tokens of an address, a company name or a name) in one
/// allocation, each preceded by its length in bytes written as one character (one byte for
/// items shorter than 128 bytes): an address's dozens of tokens cost one allocation instead of
/// one each, and reading them back needs no search for separators. Two lists are equal when
/// their items are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Words(Box<str>);

/// Longest item of [`Words`] (lengths are written as a `char`, which cannot be a surrogate);
/// values are cut to `MAX_VALUE_BYTES` long before, so no item comes near it.
const MAX_WORD_BYTES: usize = 0xD7FF;

impl Words {
    pub fn new<S: AsRef<str>>(items: impl IntoIterator<Item = S>) -> Self {
        let mut packed = String::new();
        for item in items {
            let item = cut(item.as_ref(), MAX_WORD_BYTES);
            if let Some(length) = char::from_u32(item.len() as u32) {
                packed.push(length);
                packed.push_str(item);
            }
        }
        Self(packed.into())
    }

    /// The items in order.
    pub fn iter(&self) -> WordsIter<'_> {
        WordsIter(&self.0)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn first(&self) -> Option<&str> {
        self.iter().next()
    }

    pub fn len(&self) -> usize {
        self.iter().count()
    }

    pub fn contains(&self, item: &str) -> bool {
        self.iter().any(|t| t == item)
    }
}

/// The items of [`Words`].
#[derive(Debug, Clone)]
pub(crate) struct WordsIter<'a>(&'a str);

impl<'a> Iterator for WordsIter<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let mut chars = self.0.chars();
        let length = chars.next()? as usize;
        let (item, rest) = chars.as_str().split_at_checked(length)?;
        self.0 = rest;
        Some(item)
    }
}

/// Tokens as they are built, before they are packed into [`Words`].
struct TokenLists {
    tokens: Vec<Box<str>>,
    numbers: Vec<Box<str>>,
}

impl TokenLists {
    fn pack(self) -> TokenValue {
        TokenValue { tokens: Words::new(&self.tokens), numbers: Words::new(&self.numbers), number: None }
    }
}

/// Normalises one raw cell of the given kind. Returns `None` for a missing value: empty,
/// whitespace, or a placeholder such as "N/A", "null", "-", "无" or "未知" — also one that only
/// normalisation reveals (a traditional or compatibility form of "无", say), so that a value's
/// exact form, prepared again, is the same value.
pub fn prepare(kind: FieldKind, raw: &str) -> Option<Prepared> {
    let raw = cut(raw, MAX_VALUE_BYTES);
    let trimmed = raw.trim();
    if is_placeholder(trimmed) {
        return None;
    }
    let mut prepared = prepare_kind(kind, trimmed)?;
    // Dropping the punctuation between two combining marks can leave them out of canonical
    // order ("ףּ:\u{16ff0}"): the exact form is put back in order, so that it is the same when
    // prepared again.
    if !unicode_normalization::is_nfc(&prepared.exact) {
        prepared.exact = prepared.exact.nfc().collect::<String>().into();
    }
    Some(prepared).filter(|p| !is_placeholder(&p.exact))
}

fn prepare_kind(kind: FieldKind, trimmed: &str) -> Option<Prepared> {
    match kind {
        FieldKind::PersonName | FieldKind::GivenName | FieldKind::Surname => prepare_name(kind, trimmed),
        FieldKind::CompanyName => prepare_company(trimmed),
        FieldKind::Phone => prepare_phone(trimmed),
        FieldKind::Email => prepare_email(trimmed),
        FieldKind::Date => prepare_date(trimmed),
        FieldKind::Address => prepare_tokens(trimmed, false),
        FieldKind::Text => prepare_tokens(trimmed, true),
        FieldKind::Postcode => prepare_code(trimmed, Detail::Postcode),
        FieldKind::City => prepare_city(trimmed),
        FieldKind::IdNumber => prepare_id(trimmed),
        FieldKind::Exact => {
            let text = crate::normalize::normalize_text(trimmed);
            (!text.is_empty()).then(|| Prepared { exact: text.into(), sound: None, detail: Detail::Exact })
        }
    }
}

/// The longest prefix of `raw` of at most `max` bytes that ends on a character boundary.
fn cut(raw: &str, max: usize) -> &str {
    if raw.len() <= max {
        return raw;
    }
    let mut end = max;
    while !raw.is_char_boundary(end) {
        end -= 1;
    }
    &raw[..end]
}

fn is_placeholder(text: &str) -> bool {
    if text.is_empty() || text.chars().all(|c| !c.is_alphanumeric()) {
        return true;
    }
    let lower = text.to_lowercase();
    matches!(
        lower.as_str(),
        "n/a" | "na" | "null" | "none" | "nil" | "nan" | "unknown" | "无" | "未知" | "暂无" | "空" | "不详"
    )
}

/// NFKC, lower-case, traditional → simplified.
fn fold_text(text: &str) -> String {
    let lower: String = text.nfkc().flat_map(char::to_lowercase).collect();
    to_simplified(&lower)
}

fn prepare_name(kind: FieldKind, text: &str) -> Option<Prepared> {
    let folded = fold_text(text);
    let han: String = folded.chars().filter(|&c| is_han(c)).collect();
    let han_count = han.chars().count();
    let latin_words: Vec<String> =
        folded.split(|c: char| !c.is_alphanumeric() || is_han(c)).map(fold_latin).filter(|w| !w.is_empty()).collect();

    // A name that has Han characters is read from them (a Latin part next to them is usually
    // the same name transliterated, or an English nickname).
    if han_count > 0 {
        let chars: Vec<char> = han.chars().collect();
        let mut tokens: Vec<Box<str>> = Vec::new();
        let mut surname_first = false;
        let mut parts: Vec<Box<str>> = Vec::new();
        match kind {
            FieldKind::PersonName if chars.len() >= 2 => {
                let (surname_len, surname) = surname_of_han_name(&chars).unwrap_or_else(|| (1, chars[0].to_string()));
                tokens.push(surname.into());
                tokens.push(han_pinyin(&chars[surname_len..]).into());
                surname_first = true;
                parts.push(format!("s:{}", chars[..surname_len].iter().collect::<String>()).into());
                parts.push(format!("g:{}", chars[surname_len..].iter().collect::<String>()).into());
            }
            FieldKind::Surname => tokens.push(surname_pinyin(&han).unwrap_or_else(|| han_pinyin(&chars)).into()),
            _ => tokens.push(han_pinyin(&chars).into()),
        }
        tokens.retain(|t| !t.is_empty());
        let forms = name_forms(&tokens);
        return Some(Prepared {
            exact: han.clone().into(),
            sound: Some(sorted_sound(&tokens)),
            detail: Detail::Name(Box::new(NameValue {
                han: Some(han.into()),
                tokens: Words::new(&tokens),
                surname_first,
                forms: Words::new(&forms),
                metaphones: Words::default(),
                parts: Words::new(&parts),
            })),
        });
    }
    if latin_words.is_empty() {
        return None;
    }
    // The exact form ignores the order of the words: "Cox, Samantha" and "Samantha Cox" are
    // one name written in two conventions (family name first or last).
    let mut sorted_words: Vec<&str> = latin_words.iter().map(String::as_str).collect();
    sorted_words.sort_unstable();
    let exact = sorted_words.join(" ");
    let tokens: Vec<Box<str>> = latin_words.iter().map(|w| phonetic_name_word(w).into()).collect();
    let forms = name_forms(&tokens);
    let mut metaphones: Vec<Box<str>> =
        latin_words.iter().map(|w| double_metaphone(w)).filter(|m| !m.is_empty()).map(Into::into).collect();
    metaphones.sort();
    // The sound counts everyone who sounds alike (how common a same-sound agreement is): a
    // person's name in one run of pinyin sounds as its surname and given name apart ("Chenmei"
    // as "Chen Mei" and 陈梅); a name that is not pinyin as its Double Metaphone codes, the
    // measure by which it agrees in sound with others (Ammy Kelly and Amy Kelly: a misspelt
    // common name is as common in sound as the name).
    let one_run = match tokens.as_slice() {
        [one] if kind == FieldKind::PersonName => split_pinyin_name(one),
        _ => None,
    };
    let sound: Box<str> = if let Some((surname, given)) = one_run {
        sorted_sound(&[surname.into(), given.into()])
    } else if metaphones.len() == tokens.len() && !tokens.iter().all(|t| is_pinyin_run(t)) {
        metaphones.join(" ").into()
    } else {
        sorted_sound(&tokens)
    };
    let parts: Vec<Box<str>> = if kind == FieldKind::PersonName && latin_words.len() >= 2 {
        latin_words.iter().map(|w| format!("w:{w}").into()).collect()
    } else {
        Vec::new()
    };
    Some(Prepared {
        exact: exact.into(),
        sound: Some(sound),
        detail: Detail::Name(Box::new(NameValue {
            han: None,
            tokens: Words::new(&tokens),
            surname_first: false,
            forms: Words::new(&forms),
            metaphones: Words::new(&metaphones),
            parts: Words::new(&parts),
        })),
    })
}

/// The tokens sorted and joined: the same for every order a name is written in.
fn sorted_sound(tokens: &[Box<str>]) -> Box<str> {
    let mut sorted: Vec<&str> = tokens.iter().map(|t| &**t).collect();
    sorted.sort_unstable();
    sorted.join(" ").into()
}

/// Pinyin of Han characters run together; characters without a reading are kept as they are.
fn han_pinyin(chars: &[char]) -> String {
    let mut out = String::new();
    for &c in chars {
        match char_pinyin(c) {
            Some(p) => out.push_str(p),
            None => out.push(simplify_char(c)),
        }
    }
    out
}

/// The orders a name may be written in: as written, the last word moved to the front (Western
/// "Wei Zhang" read as Chinese "Zhang Wei"), and the first word moved to the end.
pub(crate) fn name_forms(tokens: &[Box<str>]) -> Vec<Box<str>> {
    let mut forms: Vec<Box<str>> = Vec::with_capacity(3);
    forms.push(tokens.concat().into());
    if tokens.len() >= 2 {
        let n = tokens.len();
        let mut last_first: Vec<&str> = Vec::with_capacity(n);
        last_first.push(&tokens[n - 1]);
        last_first.extend(tokens[..n - 1].iter().map(|t| &**t));
        forms.push(last_first.concat().into());
        let mut first_last: Vec<&str> = tokens[1..].iter().map(|t| &**t).collect();
        first_last.push(&tokens[0]);
        forms.push(first_last.concat().into());
    }
    forms.sort();
    forms.dedup();
    forms
}

/// Latin legal-form words ignored in company-name tokens.
const COMPANY_STOP_WORDS: &[&str] = &[
    "co",
    "coltd",
    "company",
    "corp",
    "corporation",
    "gmbh",
    "inc",
    "incorporated",
    "limited",
    "llc",
    "ltd",
    "plc",
    "sa",
    "the",
    "and",
];
/// Chinese legal-form words removed before CJK runs are cut into bigrams.
const CJK_COMPANY_STOP_WORDS: &[&str] = &["股份有限公司", "有限责任公司", "有限公司", "分公司", "集团", "公司"];

fn prepare_company(text: &str) -> Option<Prepared> {
    let folded = fold_text(text);
    let canonical = to_simplified(&canonical_company_name(&folded));
    if canonical.is_empty() {
        return None;
    }
    let mut without = strip_brackets(&folded);
    for stop in CJK_COMPANY_STOP_WORDS {
        without = without.replace(stop, " ");
    }
    let mut value = token_lists(&without, false);
    value.tokens.retain(|t| !COMPANY_STOP_WORDS.contains(&&**t));
    if value.tokens.is_empty() {
        value = token_lists(&canonical, false);
    }
    Some(Prepared { exact: canonical.into(), sound: None, detail: Detail::Company(Box::new(value.pack())) })
}

fn strip_brackets(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut depth = 0usize;
    for c in text.chars() {
        match c {
            '(' | '[' | '{' | '【' | '〔' | '《' => depth += 1,
            ')' | ']' | '}' | '】' | '〕' | '》' => depth = depth.saturating_sub(1),
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    if out.chars().any(char::is_alphanumeric) { out } else { text.to_owned() }
}

fn prepare_phone(text: &str) -> Option<Prepared> {
    let folded: String = text.nfkc().collect();
    let main = folded.split(['x', 'X', '#', '转', ';', ',']).next().unwrap_or_default();
    let plus = main.trim_start().starts_with('+');
    let digits: String = main.chars().filter(char::is_ascii_digit).collect();
    let digits = match cn_e164_digits(plus, &digits) {
        Some(e164) => e164,
        // The parse sees only what the comparison keeps (a leading plus and the digits), so
        // that preparing the exact form again gives the same value.
        None => match normalize_phone(&format!("{}{digits}", if plus { "+" } else { "" }), "CN") {
            Ok(e164) => e164.split(";ext=").next().unwrap_or_default().trim_start_matches('+').to_owned(),
            // Not a number libphonenumber accepts (foreign without a country code, a typo, a
            // fake): its digits still carry the information.
            Err(_) => digits.strip_prefix("00").map(str::to_owned).unwrap_or(digits),
        },
    };
    (digits.len() >= 5).then(|| Prepared { exact: digits.into(), sound: None, detail: Detail::Phone })
}

/// The E.164 digits of a mainland China number written in one of the usual ways (+86, 0086,
/// 86 or no prefix; an 11-digit mobile or a landline with its 0-prefixed area code), without
/// the cost of a full libphonenumber parse; `None` for anything else. For valid numbers the
/// result equals what `normalize_phone` returns.
fn cn_e164_digits(plus: bool, digits: &str) -> Option<String> {
    let national = if plus {
        digits.strip_prefix("86")?
    } else if let Some(rest) = digits.strip_prefix("0086") {
        rest
    } else if digits.len() == 13 && digits.starts_with("861") {
        &digits[2..]
    } else {
        digits
    };
    let bytes = national.as_bytes();
    let mobile = bytes.len() == 11 && bytes[0] == b'1' && (b'3'..=b'9').contains(&bytes[1]);
    if mobile {
        return Some(format!("86{national}"));
    }
    // Landline: trunk 0, a two-digit area code and eight digits, or a three-digit area code and
    // seven or eight digits. Shorter numbers are left to libphonenumber.
    let landline = (11..=12).contains(&bytes.len()) && bytes[0] == b'0' && bytes[1] != b'0';
    if landline && !plus {
        return Some(format!("86{}", &national[1..]));
    }
    None
}

fn prepare_email(text: &str) -> Option<Prepared> {
    let address = normalize_email(text).unwrap_or_else(|_| fold_text(text).split_whitespace().collect());
    let (local, _domain) = address.rsplit_once('@').unwrap_or((address.as_str(), ""));
    let local = local.split('+').next().unwrap_or_default();
    let user: String = local.chars().filter(|c| c.is_alphanumeric()).collect();
    if address.is_empty() {
        return None;
    }
    let letters: String = user.chars().filter(|c| !c.is_ascii_digit()).collect();
    let sound = (letters.chars().count() >= 2).then(|| letters.into());
    Some(Prepared {
        exact: address.clone().into(),
        sound,
        detail: Detail::Email(Box::new(EmailValue { user: user.into(), name_like: false })),
    })
}

fn prepare_date(text: &str) -> Option<Prepared> {
    let folded: String = text.nfkc().collect();
    let groups: Vec<&str> = folded.split(|c: char| !c.is_ascii_digit()).filter(|g| !g.is_empty()).collect();
    // The exact form is YYYYMMDD for a date, the digits otherwise, and must read back the same:
    // years outside `DATE_YEARS` are not dates, and digits that do not form a date as written are
    // also tried as one group (the form they would be read in again).
    let date = |groups: &[&str]| {
        parse_date_groups(groups)
            .filter(|(y, _, _)| DATE_YEARS.contains(y))
            .and_then(|(y, m, d)| calendar(y, m, d).map(|j| ((y, m, d), j)))
    };
    let concat = groups.concat();
    let (ymd, julian) = match date(&groups).or_else(|| date(&[concat.as_str()])) {
        Some((ymd, julian)) => (Some(ymd), Some(julian)),
        None => (None, None),
    };
    let digits = match ymd {
        Some((y, m, d)) => format!("{y:04}{m:02}{d:02}"),
        None => concat,
    };
    if digits.len() < 4 {
        return None;
    }
    Some(Prepared { exact: digits.into(), sound: None, detail: Detail::Date(Box::new(DateValue { ymd, julian })) })
}

fn calendar(y: i32, m: u8, d: u8) -> Option<i32> {
    let month = time::Month::try_from(m).ok()?;
    Date::from_calendar_date(y, month, d).ok().map(|date| date.to_julian_day())
}

/// Reads year, month and day from the digit groups of a date. Year-first notations (ISO,
/// Chinese 年月日, YYYYMMDD) are unambiguous; day-first and month-first notations are told
/// apart when one number exceeds 12, and read day-first otherwise (the comparator treats a
/// day/month swap as near-agreement anyway).
/// Years read as dates. Eight digits are YYYYMMDD when the first four are one of them and
/// DDMMYYYY otherwise, so a date outside them would not read back as itself.
const DATE_YEARS: std::ops::Range<i32> = 1000..3000;

fn parse_date_groups(groups: &[&str]) -> Option<(i32, u8, u8)> {
    let num = |s: &str| s.parse::<u32>().ok();
    match groups {
        [one] if one.len() == 8 => {
            let y = num(&one[..4])? as i32;
            if DATE_YEARS.contains(&y) {
                Some((y, num(&one[4..6])? as u8, num(&one[6..8])? as u8))
            } else {
                // DDMMYYYY.
                Some((num(&one[4..8])? as i32, num(&one[2..4])? as u8, num(&one[..2])? as u8))
            }
        }
        [a, b, c, ..] if a.len() == 4 => {
            Some((num(a)? as i32, u8::try_from(num(b)?).ok()?, u8::try_from(num(c)?).ok()?))
        }
        [a, b, c] if c.len() == 4 || c.len() == 2 => {
            let (a, b) = (num(a)?, num(b)?);
            let year = num(c)? as i32;
            let year = if c.len() == 2 { if year <= 30 { 2000 + year } else { 1900 + year } } else { year };
            let (day, month) = if a > 12 || b <= 12 { (a, b) } else { (b, a) };
            Some((year, u8::try_from(month).ok()?, u8::try_from(day).ok()?))
        }
        _ => None,
    }
}

fn prepare_tokens(text: &str, numeric: bool) -> Option<Prepared> {
    let folded = fold_text(text);
    let exact: String = folded.chars().filter(|c| c.is_alphanumeric()).collect();
    if exact.is_empty() {
        return None;
    }
    let mut lists = token_lists(&folded, true);
    let mut exact = exact;
    let mut number = None;
    if numeric {
        let plain = folded.trim().replace([',', ' '], "");
        // Only plain decimals count as numbers: Rust would also read "0e0" or "inf", which
        // makes "0e@0" (exact form "0e0") prepare differently the second time.
        let decimal = plain.bytes().any(|b| b.is_ascii_digit())
            && plain.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'+' | b'-'));
        number = decimal
            .then(|| plain.parse::<f64>().ok())
            .flatten()
            .or_else(|| exact.bytes().all(|b| b.is_ascii_digit()).then(|| exact.parse::<f64>().ok()).flatten())
            .filter(|n| n.is_finite());
        if let Some(number) = number {
            exact = format!("{number}");
        }
    } else {
        for token in lists.tokens.iter_mut() {
            if let Some((_, long)) = ADDRESS_ABBREVIATIONS.iter().find(|(short, _)| **short == **token) {
                *token = (*long).into();
            }
        }
        lists.tokens.sort();
        lists.tokens.dedup();
    }
    let value = TokenValue { number, ..lists.pack() };
    Some(Prepared { exact: exact.into(), sound: None, detail: Detail::Tokens(Box::new(value)) })
}

/// Common abbreviations in Latin-script addresses, expanded so that "12 Wattle St" and
/// "12 Wattle Street" share their tokens.
const ADDRESS_ABBREVIATIONS: &[(&str, &str)] = &[
    ("st", "street"),
    ("rd", "road"),
    ("ave", "avenue"),
    ("av", "avenue"),
    ("dr", "drive"),
    ("ln", "lane"),
    ("ct", "court"),
    ("pl", "place"),
    ("blvd", "boulevard"),
    ("hwy", "highway"),
    ("sq", "square"),
    ("cres", "crescent"),
    ("tce", "terrace"),
    ("pde", "parade"),
    ("apt", "apartment"),
    ("fl", "floor"),
    ("rm", "room"),
    ("bldg", "building"),
    ("e", "east"),
    ("w", "west"),
    ("n", "north"),
    ("s", "south"),
];

/// Tokens of folded text: Latin words and numbers (split where letters meet digits, leading
/// zeros dropped), CJK runs as overlapping bigrams (a single character stays a unigram).
fn token_lists(folded: &str, keep_numbers: bool) -> TokenLists {
    let mut tokens: Vec<Box<str>> = Vec::new();
    let mut numbers: Vec<Box<str>> = Vec::new();
    let mut cjk: Vec<char> = Vec::new();
    let mut word = String::new();
    let flush_word = |word: &mut String, tokens: &mut Vec<Box<str>>, numbers: &mut Vec<Box<str>>| {
        if word.is_empty() {
            return;
        }
        if word.bytes().all(|b| b.is_ascii_digit()) {
            let trimmed = word.trim_start_matches('0');
            let number: Box<str> = if trimmed.is_empty() { "0".into() } else { trimmed.into() };
            if keep_numbers {
                numbers.push(number.clone());
            }
            tokens.push(number);
        } else {
            tokens.push(fold_latin(word).into());
        }
        word.clear();
    };
    let flush_cjk = |cjk: &mut Vec<char>, tokens: &mut Vec<Box<str>>| {
        if cjk.len() == 1 {
            tokens.push(cjk[0].to_string().into());
        } else {
            for pair in cjk.windows(2) {
                tokens.push(pair.iter().collect::<String>().into());
            }
        }
        cjk.clear();
    };
    for c in folded.chars() {
        if is_cjk(c) {
            flush_word(&mut word, &mut tokens, &mut numbers);
            cjk.push(c);
            continue;
        }
        if !cjk.is_empty() {
            flush_cjk(&mut cjk, &mut tokens);
        }
        if c.is_alphanumeric() {
            let boundary = word.chars().next_back().is_some_and(|p| p.is_ascii_digit() != c.is_ascii_digit());
            if boundary {
                flush_word(&mut word, &mut tokens, &mut numbers);
            }
            word.push(c);
        } else {
            flush_word(&mut word, &mut tokens, &mut numbers);
        }
    }
    flush_word(&mut word, &mut tokens, &mut numbers);
    if !cjk.is_empty() {
        flush_cjk(&mut cjk, &mut tokens);
    }
    tokens.retain(|t| !t.is_empty());
    tokens.sort();
    tokens.dedup();
    tokens.truncate(MAX_TOKENS);
    numbers.sort();
    numbers.dedup();
    TokenLists { tokens, numbers }
}

fn prepare_code(text: &str, detail: Detail) -> Option<Prepared> {
    // Filter after upper-casing too: some capitals decompose into a letter plus combining marks.
    let code: String = text
        .nfkc()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_uppercase)
        .filter(|c| c.is_alphanumeric())
        .collect();
    (!code.is_empty()).then(|| Prepared { exact: code.into(), sound: None, detail })
}

fn prepare_id(text: &str) -> Option<Prepared> {
    match normalize_cn_resident_id(text, Date::MAX) {
        Ok(id) => Some(Prepared { exact: id.into(), sound: None, detail: Detail::Id }),
        Err(_) => prepare_code(text, Detail::Id),
    }
}

/// Administrative suffixes of Chinese place names: 杭州市 = 杭州, 浙江省 = 浙江.
const PLACE_SUFFIXES: &[&str] = &["特别行政区", "自治区", "自治州", "地区", "新区", "市", "省", "区", "县", "镇", "乡"];

/// Provinces and autonomous regions, as written before a city in them (浙江省杭州市, 广东深圳):
/// the city is the place, so 浙江省杭州市 = 杭州 = Hangzhou. The municipalities (北京, 上海,
/// 天津, 重庆) are not here: what follows them is a district.
const PROVINCES: &[&str] = &[
    "河北",
    "山西",
    "辽宁",
    "吉林",
    "黑龙江",
    "江苏",
    "浙江",
    "安徽",
    "福建",
    "江西",
    "山东",
    "河南",
    "湖北",
    "湖南",
    "广东",
    "海南",
    "四川",
    "贵州",
    "云南",
    "陕西",
    "甘肃",
    "青海",
    "台湾",
    "内蒙古",
    "广西",
    "西藏",
    "宁夏",
    "新疆",
];
/// What may follow a province's name (广西壮族自治区, 浙江省); longer forms first.
const PROVINCE_SUFFIXES: &[&str] = &["壮族自治区", "维吾尔自治区", "回族自治区", "自治区", "省"];

/// `name` without a leading province (and its suffix), if at least two characters are left.
fn without_province(name: &str) -> Option<&str> {
    PROVINCES.iter().find_map(|province| {
        let rest = name.strip_prefix(province)?;
        let rest = PROVINCE_SUFFIXES.iter().find_map(|s| rest.strip_prefix(s)).unwrap_or(rest);
        (rest.chars().count() >= 2).then_some(rest)
    })
}

/// The same provinces in pinyin (and English), as words beside a city's (Zhejiang Hangzhou,
/// Hangzhou, Zhejiang).
const PROVINCE_WORDS: &[&str] = &[
    "hebei",
    "shanxi",
    "shaanxi",
    "liaoning",
    "jilin",
    "heilongjiang",
    "jiangsu",
    "zhejiang",
    "anhui",
    "fujian",
    "jiangxi",
    "shandong",
    "henan",
    "hubei",
    "hunan",
    "guangdong",
    "hainan",
    "sichuan",
    "guizhou",
    "yunnan",
    "gansu",
    "qinghai",
    "taiwan",
    "guangxi",
    "neimenggu",
    "ningxia",
    "xinjiang",
    "xizang",
    "tibet",
];

fn prepare_city(text: &str) -> Option<Prepared> {
    let folded = fold_text(text);
    let compact: String = folded.chars().filter(|c| c.is_alphanumeric()).collect();
    let han_only = compact.chars().all(is_han);
    let exact = if han_only {
        // Suffixes and a leading province come off until none does (杭江区区 → 杭江,
        // 浙江浙江杭州 → 杭州), so that the exact form is its own exact form; what is left
        // keeps at least two characters (吉林省吉林市 → 吉林, 河北区 → 河北).
        let mut name = compact.clone();
        loop {
            let before = name.clone();
            while let Some(stem) = PLACE_SUFFIXES
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix).filter(|stem| stem.chars().count() >= 2))
            {
                name = stem.to_owned();
            }
            if let Some(city) = without_province(&name) {
                name = city.to_owned();
            }
            if name == before {
                break name;
            }
        }
    } else {
        let mut words: Vec<String> = folded
            .split(|c: char| !c.is_alphanumeric())
            .map(fold_latin)
            .filter(|w| !w.is_empty() && !matches!(w.as_str(), "city" | "district" | "province"))
            .collect();
        if words.iter().any(|w| !PROVINCE_WORDS.contains(&w.as_str())) {
            words.retain(|w| !PROVINCE_WORDS.contains(&w.as_str()));
        }
        words.concat()
    };
    if exact.is_empty() {
        return None;
    }
    let sound: String =
        exact.chars().map(|c| char_pinyin(c).map(str::to_owned).unwrap_or_else(|| c.to_string())).collect();
    Some(Prepared { exact: exact.into(), sound: Some(sound.into()), detail: Detail::City })
}

/// The prepared form of a name written `raw`, for tests of the name comparators and keys.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) fn name_of_text(kind: FieldKind, raw: &str) -> NameValue {
    match prepare(kind, raw).unwrap().detail {
        Detail::Name(n) => *n,
        other => panic!("{raw:?}: {other:?}"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    use super::name_of_text as name;

    #[test]
    fn missing_values() {
        for raw in ["", "  ", "N/A", "null", "-", "无", "未知", "——"] {
            for kind in FieldKind::ALL {
                assert_eq!(prepare(kind, raw), None, "{kind} {raw:?}");
            }
        }
        // A placeholder that only normalisation reveals: 無 (traditional), 🈚 (squared
        // ideograph, NFKC 無), with a sign that names drop (found by the property test).
        for raw in ["無", "🈚", "ＮＵＬＬ"] {
            for kind in [FieldKind::PersonName, FieldKind::CompanyName, FieldKind::Address] {
                assert_eq!(prepare(kind, raw), None, "{kind} {raw:?}");
            }
        }
        assert_eq!(prepare(FieldKind::PersonName, "🈚എ"), None);
    }

    #[test]
    fn person_names_in_all_scripts_share_forms() {
        let han = name(FieldKind::PersonName, "张伟");
        let trad = name(FieldKind::PersonName, "張偉");
        let pinyin = name(FieldKind::PersonName, "Zhang Wei");
        let western = name(FieldKind::PersonName, "WEI zhang");
        let joined = name(FieldKind::PersonName, "Zhangwei");
        assert_eq!(han, trad);
        for other in [&pinyin, &western, &joined] {
            assert!(other.forms.iter().any(|f| han.forms.contains(f)), "{other:?} vs {han:?}");
        }
        assert_eq!(name(FieldKind::PersonName, "曾小明").tokens.first(), Some("zeng"));
        assert_eq!(name(FieldKind::PersonName, "欧阳娜娜").tokens.iter().collect::<Vec<_>>(), vec!["ouyang", "nana"]);
        assert_eq!(name(FieldKind::Surname, "單").tokens.first(), Some("shan"));
        assert_eq!(name(FieldKind::PersonName, "Lv Bu").tokens.first(), Some("lu"));
        // A name in one run of pinyin sounds as the name apart does, so that a common name
        // written "Chenmei" counts as common when a same-sound agreement is weighed.
        let sound = |raw: &str| prepare(FieldKind::PersonName, raw).and_then(|p| p.sound).unwrap();
        assert_eq!(sound("Chenmei"), sound("Chen Mei"));
        assert_eq!(sound("Chenmei"), sound("陈梅"));
        assert_eq!(sound("OUYANGNANA"), sound("欧阳娜娜"));
        // Any other Latin name sounds as its Double Metaphone codes: a misspelling of a common
        // name is as common in sound.
        assert_eq!(sound("Ammy Kelly"), sound("Kelly, Amy"));
        assert_eq!(sound("Zhang Wei"), sound("张伟"), "pinyin stays pinyin");
        let given = |raw: &str| prepare(FieldKind::GivenName, raw).and_then(|p| p.sound).unwrap();
        assert_eq!(given("Xiaoming"), given("晓明"), "a given name is not split");
    }

    #[test]
    fn dates_in_common_notations() {
        let expect = |raw: &str, want: Option<(i32, u8, u8)>| match prepare(FieldKind::Date, raw).map(|p| p.detail) {
            Some(Detail::Date(d)) => assert_eq!(d.ymd, want, "{raw}"),
            other => assert!(want.is_none(), "{raw}: {other:?}"),
        };
        for raw in
            ["1985-03-07", "1985/3/7", "19850307", "1985年3月7日", "1985.03.07", "07/03/1985", "1985-03-07 10:00"]
        {
            expect(raw, Some((1985, 3, 7)));
        }
        expect("03/25/1985", Some((1985, 3, 25)));
        expect("25/03/1985", Some((1985, 3, 25)));
        expect("1985-02-30", None);
        // Found by the idempotence property: 3010-01-01 written as 30100101 reads back as
        // 30 October 101. Such years are not dates; the digits stay the exact form.
        expect("1_1@3010", None);
        assert_eq!(prepare(FieldKind::Date, "1_1@3010").map(|p| p.exact.to_string()).as_deref(), Some("113010"));
        // And "010 11000" (no date as written) kept 01011000, which reads back as 1000-01-01.
        assert_eq!(prepare(FieldKind::Date, "010 1１00０").map(|p| p.exact.to_string()).as_deref(), Some("10000101"));
    }

    #[test]
    fn phones_emails_ids() {
        let p = |raw: &str| prepare(FieldKind::Phone, raw).map(|v| v.exact.to_string());
        assert_eq!(p("+86 138 1234 5678").as_deref(), Some("8613812345678"));
        assert_eq!(p("１３８-１２３４-５６７８").as_deref(), Some("8613812345678"));
        assert_eq!(p("0086 13812345678").as_deref(), Some("8613812345678"));
        assert_eq!(p("02 9876 5432").as_deref(), Some("0298765432"));
        assert_eq!(p("12"), None);
        assert_eq!(p("010-62345678").as_deref(), Some("861062345678"));
        assert_eq!(p("+1 415 555 2671").as_deref(), Some("14155552671"));
        // The fast path agrees with the full normaliser on valid numbers.
        for raw in ["13812345678", "+86 138 1234 5678", "0571-88881234", "(0755) 8888 6666", "8613812345678"] {
            let full = crate::normalize::normalize_phone(raw, "CN").unwrap();
            assert_eq!(p(raw).unwrap(), full.trim_start_matches('+'), "{raw}");
        }
        let e = prepare(FieldKind::Email, " Zhang.Wei+crm@QQ.com ").unwrap();
        assert_eq!(&*e.exact, "zhang.wei+crm@qq.com");
        match e.detail {
            Detail::Email(v) => assert_eq!(&*v.user, "zhangwei"),
            other => panic!("{other:?}"),
        }
        let id = prepare(FieldKind::IdNumber, "11010519491231002x").unwrap();
        assert_eq!(&*id.exact, "11010519491231002X");
        assert_eq!(&*prepare(FieldKind::IdNumber, "ab-12 34").unwrap().exact, "AB1234");
    }

    #[test]
    fn companies_and_places() {
        let c = |raw: &str| prepare(FieldKind::CompanyName, raw).unwrap().exact.to_string();
        assert_eq!(c("華為技術有限公司"), c("华为技术（深圳）有限责任公司"));
        let city = |raw: &str| prepare(FieldKind::City, raw).unwrap();
        assert_eq!(city("杭州市").exact, city("杭州").exact);
        // Every suffix comes off, so the exact form is its own (found by the property test).
        assert_eq!(&*city("杭江区区").exact, "杭江");
        // The province before a city does not count; a municipality's district does.
        for same in ["浙江省杭州市", "浙江杭州", "Hangzhou, Zhejiang", "Zhejiang Province Hangzhou City"] {
            assert_eq!(city(same).sound, city("杭州").sound, "{same}");
        }
        assert_eq!(&*city("广西壮族自治区南宁市").exact, "南宁");
        assert_eq!(&*city("吉林省吉林市").exact, "吉林");
        assert_eq!(&*city("河北区").exact, "河北");
        assert_eq!(&*city("浙江省").exact, "浙江");
        assert_eq!(&*city("上海市浦东新区").exact, "上海市浦东");
        assert_eq!(&*city("Jilin").exact, "jilin");
        let (hangzhou, pinyin) = (city("杭州"), city("Hangzhou"));
        assert!(matches!((&hangzhou.detail, &pinyin.detail), (Detail::City, Detail::City)));
        assert_eq!(hangzhou.sound, pinyin.sound);
        let t = token_lists("浙江省杭州市文三路123号 room1201", true).pack();
        assert!(t.tokens.contains("杭州") && t.numbers.contains("123"));
        assert!(t.tokens.contains("room") && t.numbers.contains("1201"));
        // Packed lists keep their items, empty ones included.
        for items in [vec![], vec![""], vec!["a", "", "bc"], vec!["杭州", "room"]] {
            let words = Words::new(&items);
            assert_eq!(words.iter().collect::<Vec<_>>(), items);
            assert_eq!(words.len(), items.len());
        }
    }

    #[test]
    fn text_reads_only_plain_decimals_as_numbers() {
        let text = |raw: &str| prepare(FieldKind::Text, raw).unwrap().exact.to_string();
        assert_eq!(text("1,250.50"), "1250.5");
        assert_eq!(text("-3"), "-3");
        // Scientific notation and words Rust's float parser knows stay text, so the exact form
        // prepares to itself (found by the property test: "0e@0" became "0e0", then "0").
        assert_eq!(text("0e@0"), "0e0");
        assert_eq!(text("0e0"), "0e0");
        assert_eq!(text("inf"), "inf");
        assert_eq!(text("1.5.3"), "153");
    }
}
