//! Blocking: cheap keys such that true duplicates almost always share at least one, so only
//! records sharing a key are compared (sub-quadratic candidate generation).
//!
//! Keys come in classes (one per field and purpose, e.g. "pinyin of the surname + initial of
//! the given name"). A key shared by at most `max_block_size` records pairs them all; a larger
//! block (a very common surname, a company switchboard) is not dropped — that would lose its
//! duplicates — but compared by sorted neighbourhood: its records are ordered by a name-like
//! sort key and each is paired with the next `window` records only, so the work per key stays
//! linear in the number of records that share it.
//!
//! Coarse classes — values that whole groups of unrelated records share by nature (the tokens
//! of a company name or an address: a company's staff; a birth date; half of an identifier;
//! a postcode) — compare in full only blocks of up to `max_coarse_block_size` (10), and pair
//! each record of a larger block with the next `coarse_window` (3) only. Sorted by name, a
//! person's entries in a company's block are neighbours; with the window of the name keys (10)
//! those blocks proposed over half of all candidate pairs (5.9 million of 9.8 at 200k people),
//! and under 2% of the pairs that scored 0.5 or more.

use std::borrow::Cow;
use std::collections::HashMap;

use super::compare::{edit_distance_at_most, initial_of, initials_compatible};
use super::engine::{MatchConfig, PreparedRecord};
use super::fold::double_metaphone;
use super::kind::FieldKind;
use super::nicknames;
use super::value::{Detail, NameValue, Prepared};

/// A record's blocking key: (key hash with the key's class in its low [`CLASS_BITS`] bits, sort
/// rank, record index). Sixteen bytes: a million records hold tens of millions of keys, and a
/// separate class byte would pad each to 24.
type KeyedRecord = (u64, u32, u32);

/// A block of records sharing a key: a range of the list of block members, and the key's class.
struct Block {
    start: u32,
    end: u32,
    class: u8,
}

impl Block {
    fn members<'a>(&self, all: &'a [u32]) -> &'a [u32] {
        all.get(self.start as usize..self.end as usize).unwrap_or_default()
    }
}

/// Bits of a key hash that hold its class (there are at most 64 classes).
const CLASS_BITS: u32 = 6;

/// The class of a [`KeyedRecord`]'s key.
fn class_of(key: &KeyedRecord) -> u8 {
    (key.0 & ((1 << CLASS_BITS) - 1)) as u8
}

/// Slices of the records per worker thread when blocking keys are computed.
const SLICES_PER_THREAD: usize = 8;
/// Blocking keys per record reserved for (see [`candidate_pairs`]); a contact has about twenty.
const RESERVED_KEYS_PER_RECORD: usize = 48;
/// How many of a record's rarest tokens become keys (company names, addresses, text).
const RAREST_TOKENS: usize = 2;

/// A class of blocking keys: its name and the fields its keys are computed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyClass {
    pub name: String,
    /// Bit set of field indexes.
    pub fields: u64,
    pub(crate) rule: Rule,
    /// Whether unrelated records share its keys by nature (see the module documentation).
    pub coarse: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rule {
    /// Person name: surname sound + initial of the given name, in every plausible order.
    NameInitial(usize),
    /// Person name: the whole name's sound in every plausible order.
    NameForm(usize),
    /// Person name: Double Metaphone of the surname + initial of the given name.
    NameMetaphone(usize),
    /// Person name (each of its sounds; with `initials`, surname sound + initial of the given
    /// name instead) with the exact value of another field that describes the person (a
    /// title, a city, a company name, a postcode): a common name's block is too large to
    /// compare in full, and its sorted windows cannot bring together two entries of one person
    /// that share only such a value (张雨 and 張雨, both 行政主管), while the name with it is
    /// a small block. The initials' blocks (Amy Mitchell and Ammy Mitchell) are larger: coarse.
    NameWith { name: usize, other: usize, initials: bool },
    /// Person name in Han characters: its first character (the surname, or the first half of
    /// 欧阳) + each other character, so that 高捷怡 meets 高捷佳 and 周明 meets 周蓉明 (one
    /// character changed, added or dropped), which sorted neighbourhoods of a common surname's
    /// initial block miss.
    NameChars(usize),
    /// Surname column + initial of the given-name column (and the reverse, for swapped columns).
    SplitName { surname: usize, given: usize },
    /// Double Metaphone of the surname column + initial of the given-name column.
    SplitNameMetaphone { surname: usize, given: usize },
    /// The whole value's sound (a lone given-name or surname column).
    Sound(usize),
    /// The exact form.
    Exact(usize),
    /// The rarest tokens of the value.
    RareTokens(usize),
    /// All the numbers of an address that has two or more (street number, building, room):
    /// rewritten addresses keep them (北京市东城区 长安街95号 阳光花园5栋1807室 and
    /// 东城区长安街95号阳光花园5幢1807), while each of its words and numbers alone is shared
    /// by records all over the file.
    AddressNumbers(usize),
    /// Last seven digits of a phone, the digits before the last four, and the digits before the
    /// last seven with the last four. A mistyped digit leaves one of the three intact wherever
    /// it is (the first two share the three digits before the last four, which the third
    /// leaves out); so do two swapped neighbours, unless the start of the last seven or of the
    /// last four digits lies between them.
    PhoneParts(usize),
    /// The user part of an e-mail address.
    EmailUser(usize),
    /// Year with month and day in either order.
    DateKey(usize),
    /// First and second half of an identifier.
    IdHalves(usize),
}

/// Key classes for a list of field kinds.
pub fn key_classes(kinds: &[FieldKind]) -> Vec<KeyClass> {
    let mut classes = Vec::new();
    let bit = |i: usize| if i < 64 { 1u64 << i } else { 0 };
    let surname = kinds.iter().position(|k| *k == FieldKind::Surname);
    let given = kinds.iter().position(|k| *k == FieldKind::GivenName);
    let mut push = |name: String, fields: u64, rule: Rule| {
        let coarse = match rule {
            Rule::RareTokens(_) | Rule::DateKey(_) | Rule::IdHalves(_) | Rule::NameChars(_) => true,
            Rule::NameWith { initials, .. } => initials,
            Rule::Exact(i) => matches!(kinds.get(i), Some(FieldKind::CompanyName | FieldKind::Postcode)),
            _ => false,
        };
        classes.push(KeyClass { name, fields, rule, coarse });
    };
    if let (Some(s), Some(g)) = (surname, given) {
        push("surname+given_initial".into(), bit(s) | bit(g), Rule::SplitName { surname: s, given: g });
        push(
            "surname_metaphone+given_initial".into(),
            bit(s) | bit(g),
            Rule::SplitNameMetaphone { surname: s, given: g },
        );
    }
    for (i, kind) in kinds.iter().enumerate() {
        let b = bit(i);
        match kind {
            FieldKind::PersonName => {
                push(format!("{i}:name_initial"), b, Rule::NameInitial(i));
                push(format!("{i}:name_form"), b, Rule::NameForm(i));
                push(format!("{i}:name_metaphone"), b, Rule::NameMetaphone(i));
                push(format!("{i}:name_chars"), b, Rule::NameChars(i));
            }
            FieldKind::GivenName | FieldKind::Surname => {
                if surname.is_none() || given.is_none() {
                    push(format!("{i}:sound"), b, Rule::Sound(i));
                }
            }
            FieldKind::CompanyName => {
                push(format!("{i}:company"), b, Rule::Exact(i));
                push(format!("{i}:company_tokens"), b, Rule::RareTokens(i));
            }
            FieldKind::Phone => push(format!("{i}:phone_parts"), b, Rule::PhoneParts(i)),
            FieldKind::Email => {
                push(format!("{i}:email"), b, Rule::Exact(i));
                push(format!("{i}:email_user"), b, Rule::EmailUser(i));
            }
            FieldKind::Date => push(format!("{i}:date"), b, Rule::DateKey(i)),
            FieldKind::Address => {
                push(format!("{i}:tokens"), b, Rule::RareTokens(i));
                push(format!("{i}:numbers"), b, Rule::AddressNumbers(i));
            }
            FieldKind::Text => push(format!("{i}:tokens"), b, Rule::RareTokens(i)),
            FieldKind::Postcode | FieldKind::Exact => push(format!("{i}:exact"), b, Rule::Exact(i)),
            FieldKind::IdNumber => {
                push(format!("{i}:id"), b, Rule::Exact(i));
                push(format!("{i}:id_halves"), b, Rule::IdHalves(i));
            }
            // A city alone is far too coarse to block on.
            FieldKind::City => {}
        }
    }
    for (p, _) in kinds.iter().enumerate().filter(|(_, k)| **k == FieldKind::PersonName) {
        for (i, kind) in kinds.iter().enumerate() {
            if matches!(kind, FieldKind::Text | FieldKind::City | FieldKind::CompanyName | FieldKind::Postcode) {
                let fields = bit(p) | bit(i);
                push(format!("{p}+{i}:name_with"), fields, Rule::NameWith { name: p, other: i, initials: false });
                push(format!("{p}+{i}:initial_with"), fields, Rule::NameWith { name: p, other: i, initials: true });
            }
        }
    }
    // Class membership is tracked in a 64-bit set.
    classes.truncate(64);
    classes
}

/// Token document frequencies per field, to pick each record's rarest tokens.
pub(crate) type TokenFrequencies = Vec<HashMap<Box<str>, u32>>;

/// The blocking keys of one record, as (class index, key text). With `frequencies`, token
/// classes keep only the record's rarest tokens that some other record also has; without, all
/// tokens are returned (for callers that filter keys themselves, e.g. against a stored index).
pub(crate) fn record_keys(
    classes: &[KeyClass],
    record: &PreparedRecord,
    frequencies: Option<&TokenFrequencies>,
    out: &mut Vec<(u8, String)>,
) {
    for (class_index, class) in classes.iter().enumerate() {
        let c = class_index as u8;
        let value = |i: usize| record.value(i);
        match class.rule {
            Rule::NameInitial(i) => {
                if let Some(name) = value(i).and_then(name_of) {
                    for (surname, initial) in surname_initial_pairs(name) {
                        out.push((c, format!("{surname}|{initial}")));
                    }
                }
            }
            Rule::NameForm(i) => {
                if let Some(name) = value(i).and_then(name_of) {
                    out.extend(name.forms.iter().map(|f| (c, f.to_string())));
                    // Beth Johnson also by Elizabeth Johnson's forms (see `nicknames`).
                    out.extend(nicknames::formal_forms(name).into_iter().map(|f| (c, f.into_string())));
                }
            }
            Rule::NameMetaphone(i) => {
                if let Some(name) = value(i).and_then(name_of) {
                    for (surname, initial) in surname_initial_pairs(name) {
                        let code = double_metaphone(surname);
                        if !code.is_empty() {
                            out.push((c, format!("{code}|{initial}")));
                        }
                    }
                }
            }
            Rule::NameWith { name, other, initials } => {
                if let (Some(n), Some(v)) = (value(name).and_then(name_of), value(other)) {
                    if initials {
                        for (surname, initial) in surname_initial_pairs(n) {
                            out.push((c, format!("{surname}|{initial}|{}", v.exact)));
                        }
                    } else {
                        out.extend(n.forms.iter().map(|f| (c, format!("{f}|{}", v.exact))));
                    }
                }
            }
            Rule::NameChars(i) => {
                if let Some(han) = value(i).and_then(name_of).and_then(|n| n.han.as_deref()) {
                    let mut chars = han.chars();
                    if let Some(surname) = chars.next() {
                        out.extend(chars.map(|given| (c, format!("{surname}{given}"))));
                    }
                }
            }
            Rule::SplitName { surname, given } => {
                if let (Some(s), Some(g)) = (value(surname).and_then(name_of), value(given).and_then(name_of)) {
                    let (s_form, g_form): (String, String) = (s.tokens.iter().collect(), g.tokens.iter().collect());
                    for (a, b) in [(&s_form, &g_form), (&g_form, &s_form)] {
                        if let Some(initial) = b.chars().next() {
                            out.push((c, format!("{a}|{initial}")));
                        }
                    }
                }
            }
            Rule::SplitNameMetaphone { surname, given } => {
                if let (Some(s), Some(g)) = (value(surname).and_then(name_of), value(given).and_then(name_of)) {
                    let (s_form, g_form): (String, String) = (s.tokens.iter().collect(), g.tokens.iter().collect());
                    for (a, b) in [(&s_form, &g_form), (&g_form, &s_form)] {
                        let code = double_metaphone(a);
                        if let (Some(initial), false) = (b.chars().next(), code.is_empty()) {
                            out.push((c, format!("{code}|{initial}")));
                        }
                    }
                }
            }
            Rule::Sound(i) => {
                if let Some(name) = value(i).and_then(name_of) {
                    out.push((c, name.tokens.iter().collect()));
                }
            }
            Rule::Exact(i) => {
                if let Some(v) = value(i) {
                    out.push((c, v.exact.to_string()));
                }
            }
            Rule::RareTokens(i) => {
                if let Some(v) = value(i) {
                    rare_tokens(i, v, frequencies, |t| out.push((c, t.to_owned())));
                }
            }
            Rule::AddressNumbers(i) => {
                if let Some(Detail::Tokens(t)) = value(i).map(|v| &v.detail)
                    && t.numbers.len() >= 2
                {
                    out.push((c, t.numbers.iter().collect::<Vec<_>>().join("|")));
                }
            }
            Rule::PhoneParts(i) => {
                if let Some(v) = value(i) {
                    let digits = &*v.exact;
                    if digits.len() >= 7 {
                        out.push((c, format!("s{}", &digits[digits.len() - 7..])));
                    }
                    if digits.len() >= 9 {
                        let n = digits.len();
                        out.push((c, format!("h{}", &digits[..n - 4])));
                        out.push((c, format!("m{}{}", &digits[..n - 7], &digits[n - 4..])));
                    }
                    if digits.len() < 7 {
                        out.push((c, format!("s{digits}")));
                    }
                }
            }
            Rule::EmailUser(i) => {
                if let Some(Detail::Email(e)) = value(i).map(|v| &v.detail)
                    && e.user.chars().count() >= 3
                {
                    out.push((c, e.user.to_string()));
                }
            }
            Rule::DateKey(i) => {
                if let Some(v) = value(i)
                    && let Detail::Date(d) = &v.detail
                {
                    match d.ymd {
                        Some((y, m, day)) => out.push((c, format!("{y}-{}-{}", m.min(day), m.max(day)))),
                        None => out.push((c, v.exact.to_string())),
                    }
                }
            }
            Rule::IdHalves(i) => {
                if let Some(v) = value(i) {
                    let chars: Vec<char> = v.exact.chars().collect();
                    if chars.len() >= 8 {
                        let half = chars.len() / 2;
                        out.push((c, format!("a{}", chars[..half].iter().collect::<String>())));
                        out.push((c, format!("b{}", chars[half..].iter().collect::<String>())));
                    }
                }
            }
        }
    }
}

fn name_of(value: &Prepared) -> Option<&NameValue> {
    match &value.detail {
        Detail::Name(n) => Some(n),
        _ => None,
    }
}

/// (surname sound, initial of the given name) for each plausible reading of a name: for a Han
/// name the surname is known; for a Latin name it may be the first or the last word.
fn surname_initial_pairs(name: &NameValue) -> Vec<(&str, char)> {
    let initial = |t: &str| t.chars().next();
    let mut pairs = Vec::new();
    let mut tokens = name.tokens.iter();
    match (tokens.next(), tokens.next(), name.tokens.iter().last()) {
        (Some(first), None, _) => {
            if let Some(i) = initial(first) {
                pairs.push((first, i));
            }
        }
        (Some(first), Some(second), Some(last)) => {
            if let Some(i) = initial(second) {
                pairs.push((first, i));
            }
            if !name.surname_first
                && let Some(i) = initial(first)
            {
                pairs.push((last, i));
            }
        }
        _ => {}
    }
    pairs
}

fn rare_tokens(field: usize, value: &Prepared, frequencies: Option<&TokenFrequencies>, mut emit: impl FnMut(&str)) {
    let tokens = match &value.detail {
        Detail::Company(t) | Detail::Tokens(t) => &t.tokens,
        _ => return,
    };
    let Some(table) = frequencies.and_then(|f| f.get(field)) else {
        tokens.iter().for_each(&mut emit);
        return;
    };
    let mut ranked: Vec<(u32, &str)> =
        tokens.iter().filter_map(|t| table.get(t).map(|&count| (count, t))).filter(|(count, _)| *count >= 2).collect();
    ranked.sort_unstable();
    for (_, token) in ranked.into_iter().take(RAREST_TOKENS) {
        emit(token);
    }
}

/// Counts in how many records each token of each token-blocked field occurs.
pub(crate) fn token_frequencies(classes: &[KeyClass], records: &[PreparedRecord], fields: usize) -> TokenFrequencies {
    let mut tables: TokenFrequencies = vec![HashMap::new(); fields];
    let token_fields: Vec<usize> = classes
        .iter()
        .filter_map(|c| match c.rule {
            Rule::RareTokens(i) => Some(i),
            _ => None,
        })
        .collect();
    for record in records {
        for &i in &token_fields {
            if let Some(Detail::Company(t) | Detail::Tokens(t)) = record.value(i).map(|v| &v.detail) {
                for token in t.tokens.iter() {
                    match tables[i].get_mut(token) {
                        Some(count) => *count += 1,
                        None => {
                            tables[i].insert(token.into(), 1);
                        }
                    }
                }
            }
        }
    }
    tables
}

/// 64-bit FNV-1a of a class index and key text.
fn key_hash(class: u8, text: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in std::iter::once(class).chain(text.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// Pairs of record indexes (a < b) ordered by (a, b), held as compressed rows: the partners of
/// record `a` are `partners[starts[a]..starts[a + 1]]`, ascending. A pair costs the four bytes
/// of its partner.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PairList {
    starts: Vec<usize>,
    partners: Vec<u32>,
}

impl PairList {
    pub fn len(&self) -> usize {
        self.partners.len()
    }

    pub fn is_empty(&self) -> bool {
        self.partners.is_empty()
    }

    /// The pairs in order, from the pair at index `first` on.
    pub fn iter_from(&self, first: usize) -> PairIter<'_> {
        // The row holding pair `first`: the last one starting at or before it.
        let row = self.starts.partition_point(|&start| start <= first).saturating_sub(1);
        PairIter { list: self, row, next: first }
    }

    pub fn iter(&self) -> PairIter<'_> {
        self.iter_from(0)
    }

    /// Index of the pair (a, b), if it is in the list.
    pub fn position(&self, a: u32, b: u32) -> Option<usize> {
        let (start, end) = (*self.starts.get(a as usize)?, *self.starts.get(a as usize + 1)?);
        self.partners[start..end].binary_search(&b).ok().map(|i| start + i)
    }
}

/// The pairs of a [`PairList`] in order.
#[derive(Debug, Clone)]
pub(crate) struct PairIter<'a> {
    list: &'a PairList,
    row: usize,
    next: usize,
}

impl Iterator for PairIter<'_> {
    type Item = (u32, u32);

    fn next(&mut self) -> Option<(u32, u32)> {
        let partner = *self.list.partners.get(self.next)?;
        while self.list.starts.get(self.row + 1).is_some_and(|&end| end <= self.next) {
            self.row += 1;
        }
        self.next += 1;
        Some((self.row as u32, partner))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.list.partners.len().saturating_sub(self.next);
        (left, Some(left))
    }
}

impl ExactSizeIterator for PairIter<'_> {}

/// Candidate pairs of record indexes (i < j), sorted, and for each pair the set of key classes
/// that proposed it, as an index into the distinct sets (there are few of them, so a pair holds
/// four bytes for its set rather than eight).
pub(crate) struct Candidates {
    pub pairs: PairList,
    pub proposed_by: Vec<u32>,
    /// Distinct sets of key classes (bit sets of class indexes).
    pub class_sets: Vec<u64>,
}

/// A spelling of a name held by at most this many members of a name block counts as rare there.
const RARE_SPELLING: usize = 2;
/// Spellings held by more members of one block than this are not paired with their variants
/// (the pairs would outgrow the rest of the candidates).
const MAX_SPELLING_RUN: usize = 1000;

/// The fields of a person-name class: one name field (its sounds or initials), or a surname
/// and a given name in two.
#[derive(Debug, Clone, Copy)]
enum NameFields {
    Whole(usize),
    Split { surname: usize, given: usize },
}

fn name_fields(rule: Rule) -> Option<NameFields> {
    match rule {
        Rule::NameInitial(i) | Rule::NameForm(i) | Rule::NameMetaphone(i) => Some(NameFields::Whole(i)),
        Rule::SplitName { surname, given } | Rule::SplitNameMetaphone { surname, given } => {
            Some(NameFields::Split { surname, given })
        }
        _ => None,
    }
}

/// A member's name as [`spelling_variant_pairs`] reads it.
#[derive(Debug, Clone, Copy)]
enum Spelt<'a> {
    Whole(&'a NameValue),
    Split { surname: &'a NameValue, given: &'a NameValue },
}

impl<'a> Spelt<'a> {
    fn of(fields: NameFields, record: &'a PreparedRecord) -> Option<Spelt<'a>> {
        let name = |i: usize| record.value(i).and_then(name_of);
        match fields {
            NameFields::Whole(i) => name(i).map(Spelt::Whole),
            NameFields::Split { surname, given } => Some(Spelt::Split { surname: name(surname)?, given: name(given)? }),
        }
    }

    /// The spelling its holders are counted by.
    fn spelling(self) -> Option<Cow<'a, str>> {
        match self {
            Spelt::Whole(name) => name.forms.first().map(Cow::Borrowed),
            Spelt::Split { surname, given } => {
                Some(Cow::Owned(format!("{}|{}", surname.forms.first()?, given.forms.first()?)))
            }
        }
    }

    /// Whether this (rare) spelling reads as another spelling of `common`.
    fn variant_of(self, common: Spelt<'_>) -> bool {
        match (self, common) {
            (Spelt::Whole(rare), Spelt::Whole(common)) => spelling_variant(rare, common),
            (Spelt::Split { surname: rs, given: rg }, Spelt::Split { surname: cs, given: cg }) => {
                split_spelling_variant((rs, rg), (cs, cg))
            }
            _ => false,
        }
    }
}

/// [`spelling_variant`] for a name in two fields (surname, given name): the same surname with
/// a given name one edit away or cut to its initial (Jhon or J. Smith for John Smith), or the
/// same given name with a surname one edit away. Never for names in Han characters.
fn split_spelling_variant(rare: (&NameValue, &NameValue), common: (&NameValue, &NameValue)) -> bool {
    fn form(name: &NameValue) -> Option<&str> {
        name.forms.first()
    }
    if rare.0.han.is_some() || rare.1.han.is_some() {
        return false;
    }
    let (Some(rs), Some(rg), Some(cs), Some(cg)) = (form(rare.0), form(rare.1), form(common.0), form(common.1)) else {
        return false;
    };
    (rs == cs && (edit_distance_at_most(rg, cg, 1) <= 1 || initial_of(rg, cg)))
        || (rg == cg && edit_distance_at_most(rs, cs, 1) <= 1)
}

/// Whether `rare`, a name in Latin letters, reads as another spelling of `common`: one edit (a
/// letter changed, added, dropped, or two neighbours swapped) from it in some order of its
/// words, or the same words with a given name cut to its initial ("R. Young" and Ryan Young:
/// `initials_compatible`, as the comparator reads it).
/// A name in Han characters is not misspelt letter by letter: its variants sound the same (the
/// same spelling here) or change a character (`Rule::NameChars`), and one letter of pinyin
/// apart (张文, 张伟) are two names.
fn spelling_variant(rare: &NameValue, common: &NameValue) -> bool {
    if rare.han.is_some() {
        return false;
    }
    let Some(spelling) = common.forms.first() else { return false };
    if rare.forms.iter().any(|form| edit_distance_at_most(form, spelling, 1) <= 1) {
        return true;
    }
    initials_compatible(rare, common)
}

/// Extra proposals inside name blocks too large to compare in full. Their sorted windows pair
/// each entry with its next few neighbours in name order, and a name that many records hold
/// (hundreds of Eric Youngs among a million contacts) is a run longer than the window: a rare
/// misspelling beside it (Eric Yoing, E. Young) meets only the run's first few holders, in no
/// particular order, so the holder it duplicates is missed however close the names are. Each
/// member whose spelling is rare in the block is therefore paired with every holder of each
/// spelling too common for the window that it is a variant of (`spelling_variant`). The work is
/// the rare members times the common spellings of a block, and the pairs the rare members
/// times the holders of the spellings they vary; common spellings are never paired in full with
/// one another.
fn spelling_variant_pairs(
    classes: &[KeyClass],
    records: &[PreparedRecord],
    members: &[u32],
    blocks: &[Block],
    limits: &MatchConfig,
) -> Vec<(u32, u32, u64)> {
    let mut out: Vec<(u32, u32, u64)> = Vec::new();
    let window = limits.window.max(1);
    let cap = limits.max_block_size.max(2);
    for block in blocks {
        let members = block.members(members);
        if members.len() <= cap {
            continue;
        }
        let class = block.class;
        let Some(fields) = classes.get(usize::from(class)).filter(|c| !c.coarse).and_then(|c| name_fields(c.rule))
        else {
            continue;
        };
        let name = |index: u32| records.get(index as usize).and_then(|r| Spelt::of(fields, r));
        // Holders per spelling, in order of first appearance (members are in rank order).
        let mut holders: HashMap<Cow<str>, usize> = HashMap::new();
        let mut spellings: Vec<(Spelt, Vec<u32>)> = Vec::new();
        for &member in members {
            let Some(value) = name(member) else { continue };
            let Some(spelling) = value.spelling() else { continue };
            let at = *holders.entry(spelling).or_insert_with(|| {
                spellings.push((value, Vec::new()));
                spellings.len() - 1
            });
            spellings[at].1.push(member);
        }
        let common: Vec<&(Spelt, Vec<u32>)> =
            spellings.iter().filter(|(_, h)| h.len() > window && h.len() <= MAX_SPELLING_RUN).collect();
        if common.is_empty() {
            continue;
        }
        let bit = 1u64 << class;
        for (rare, rare_holders) in spellings.iter().filter(|(_, h)| h.len() <= RARE_SPELLING) {
            for (spelling, common_holders) in &common {
                if !rare.variant_of(*spelling) {
                    continue;
                }
                for &r in rare_holders {
                    for &c in common_holders {
                        out.push((r.min(c), r.max(c), bit));
                    }
                }
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// Proposals (a pair as proposed by one key, before pairs proposed by several keys are merged)
/// are generated in passes over ranges of the smaller record index, each holding about a
/// sixteenth of them, or this many when there are few.
const MIN_PROPOSALS_PER_PASS: usize = 1 << 20;
/// Passes over the proposals when there are many (each pass enumerates the blocks again).
const PASSES: usize = 16;

/// Candidate pairs (i < j) with the set of key classes that proposed each, sorted by pair.
///
/// A pair proposed by several keys is merged into one; the proposals are generated in passes,
/// each keeping the pairs whose smaller index falls into its range, so that the memory held
/// at once is bounded by the merged pairs plus one pass of proposals rather than all of them.
pub(crate) fn candidate_pairs(
    classes: &[KeyClass],
    records: &[PreparedRecord],
    frequencies: &TokenFrequencies,
    sort_rank: &[u32],
    limits: &MatchConfig,
    threads: usize,
) -> Candidates {
    // Keys of consecutive slices of the records on the worker threads, each slice's keys added
    // to one list as soon as they are made. The list's order does not matter: it is sorted
    // whole below, and the sorted list is the same whatever order the keys came in. Holding
    // every slice's keys until all were made and then copying them into one list held them
    // twice (at a million records, 20 million keys: 300 MB more at the scan's peak).
    let threads = threads.max(1);
    let per_slice = records.len().div_ceil(threads * SLICES_PER_THREAD).max(1);
    let slices = records.len().div_ceil(per_slice);
    // Capacity that is never written is never touched: reserving more keys than most records
    // have costs address space, not memory, and the list never grows by copying. Where even
    // the address space is refused (strict overcommit), the list grows as keys come.
    let mut reserved: Vec<KeyedRecord> = Vec::new();
    let _ = reserved.try_reserve(records.len().saturating_mul(RESERVED_KEYS_PER_RECORD));
    let keyed = std::sync::Mutex::new(reserved);
    let next_slice = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                let mut made: Vec<KeyedRecord> = Vec::new();
                let mut scratch = Vec::new();
                loop {
                    let slice_index = next_slice.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if slice_index >= slices {
                        return;
                    }
                    let first = slice_index * per_slice;
                    let slice = records.get(first..(first + per_slice).min(records.len())).unwrap_or_default();
                    made.clear();
                    for (index, record) in (first..).zip(slice) {
                        scratch.clear();
                        record_keys(classes, record, Some(frequencies), &mut scratch);
                        for (class, text) in &scratch {
                            let hash = (key_hash(*class, text) << CLASS_BITS) | u64::from(*class);
                            made.push((hash, sort_rank[index], index as u32));
                        }
                    }
                    // A poisoned lock means another worker panicked; the scope re-raises it.
                    if let Ok(mut keyed) = keyed.lock() {
                        keyed.extend_from_slice(&made);
                    }
                }
            });
        }
    });
    let mut keyed = keyed.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
    // Grouped by key, members ordered by sort rank (for the sorted-neighbourhood windows).
    keyed.sort_unstable();
    keyed.dedup();
    // Blocks: a key's members (record indexes in sort-rank order), each paired with the next
    // `reach - 1`. A member takes 4 bytes where its key took 16, keys no other record shares
    // are left out, and the keys are freed before the pairs are made (which at a million
    // records take as much again): the scan's peak memory is here.
    let runs = || keyed.chunk_by(|x, y| x.0 == y.0).filter(|run| run.len() >= 2);
    let mut members: Vec<u32> = Vec::with_capacity(runs().map(<[KeyedRecord]>::len).sum());
    let mut blocks: Vec<Block> = Vec::new();
    for run in runs() {
        let first = members.len() as u32;
        members.extend(run.iter().map(|k| k.2));
        blocks.push(Block { start: first, end: members.len() as u32, class: class_of(&run[0]) });
    }
    drop(keyed);
    let variants = spelling_variant_pairs(classes, records, &members, &blocks, limits);
    let for_each_proposal = |emit: &mut dyn FnMut(u32, u32, u64)| {
        for &(x, y, bits) in &variants {
            emit(x, y, bits);
        }
        for block in &blocks {
            let class = block.class;
            let members = block.members(&members);
            let class_bit = 1u64 << class;
            let (cap, window) = match classes.get(usize::from(class)) {
                Some(class) if class.coarse => (limits.max_coarse_block_size, limits.coarse_window),
                _ => (limits.max_block_size, limits.window),
            };
            let (cap, window) = (cap.max(2), window.max(1));
            let reach = if members.len() <= cap { members.len() } else { window + 1 };
            for (p, &a) in members.iter().enumerate() {
                for &b in members.iter().skip(p + 1).take(reach - 1) {
                    let (x, y) = if a < b { (a, b) } else { (b, a) };
                    emit(x, y, class_bit);
                }
            }
        }
    };
    // Proposals per smaller index, to cut the index range into passes of bounded size.
    let mut per_record = vec![0u32; records.len()];
    let mut proposals = 0usize;
    for_each_proposal(&mut |x, _, _| {
        per_record[x as usize] = per_record[x as usize].saturating_add(1);
        proposals += 1;
    });
    let per_pass = proposals.div_ceil(PASSES).max(MIN_PROPOSALS_PER_PASS);
    let mut passes: Vec<(u32, u32)> = Vec::new();
    let (mut low, mut held, mut largest) = (0usize, 0usize, 0usize);
    for (x, &count) in per_record.iter().enumerate() {
        if held > 0 && held + count as usize > per_pass {
            passes.push((low as u32, x as u32));
            largest = largest.max(held);
            (low, held) = (x, 0);
        }
        held += count as usize;
    }
    if held > 0 {
        passes.push((low as u32, records.len() as u32));
        largest = largest.max(held);
    }
    drop(per_record);
    // The merged pairs are at most the proposals; capacity that is never written is never
    // touched, so reserving the bound costs address space, not memory.
    let mut merged = Candidates {
        pairs: PairList { starts: vec![0; records.len() + 1], partners: Vec::with_capacity(proposals) },
        proposed_by: Vec::with_capacity(proposals),
        class_sets: Vec::new(),
    };
    let mut set_ids: HashMap<u64, u32> = HashMap::new();
    // Sized for the largest pass once, so that it never grows by copying.
    let mut pass: Vec<(u64, u64)> = Vec::with_capacity(largest);
    for (low, high) in passes {
        pass.clear();
        for_each_proposal(&mut |x, y, bits| {
            if (low..high).contains(&x) {
                pass.push(((u64::from(x) << 32) | u64::from(y), bits));
            }
        });
        pass.sort_unstable_by_key(|p| p.0);
        // Proposals of the same pair merged in place (their class bits OR-ed).
        let mut kept = 0;
        for read in 0..pass.len() {
            if kept > 0 && pass[kept - 1].0 == pass[read].0 {
                pass[kept - 1].1 |= pass[read].1;
            } else {
                pass[kept] = pass[read];
                kept += 1;
            }
        }
        for &(key, bits) in &pass[..kept] {
            let id = *set_ids.entry(bits).or_insert_with(|| {
                merged.class_sets.push(bits);
                (merged.class_sets.len() - 1) as u32
            });
            merged.pairs.starts[(key >> 32) as usize + 1] += 1;
            merged.pairs.partners.push(key as u32);
            merged.proposed_by.push(id);
        }
    }
    // Row lengths into row starts.
    for row in 1..merged.pairs.starts.len() {
        merged.pairs.starts[row] += merged.pairs.starts[row - 1];
    }
    merged
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::super::value::prepare;
    use super::*;

    fn keys(kinds: &[FieldKind], raw: &[&str]) -> Vec<String> {
        let classes = key_classes(kinds);
        let record = PreparedRecord::new(kinds.iter().zip(raw).map(|(k, r)| prepare(*k, r)));
        let mut out = Vec::new();
        record_keys(&classes, &record, None, &mut out);
        out.into_iter().map(|(c, t)| format!("{}={t}", classes[c as usize].name)).collect()
    }

    /// The same block limit and window for every class.
    fn limits(max_block_size: usize, window: usize) -> MatchConfig {
        MatchConfig {
            max_block_size,
            max_coarse_block_size: max_block_size,
            window,
            coarse_window: window,
            ..MatchConfig::default()
        }
    }

    fn share(kinds: &[FieldKind], a: &[&str], b: &[&str]) -> bool {
        let (ka, kb) = (keys(kinds, a), keys(kinds, b));
        ka.iter().any(|k| kb.contains(k))
    }

    #[test]
    fn name_keys_bridge_scripts_and_orders() {
        let k = [FieldKind::PersonName];
        assert!(keys(&k, &["张伟"]).contains(&"0:name_initial=zhang|w".to_owned()));
        assert!(keys(&k, &["曾小明"]).contains(&"0:name_initial=zeng|x".to_owned()));
        for other in ["張偉", "Zhang Wei", "Wei Zhang", "ZHANGWEI", "章伟", "张玮", "张伟明"] {
            assert!(share(&k, &["张伟"], &[other]), "张伟 vs {other}");
        }
        assert!(share(&k, &["Emily Carter"], &["Carter Emily"]));
        // One Han character changed, added or dropped after a common surname's initial.
        assert!(share(&k, &["高捷怡"], &["高捷佳"]));
        assert!(share(&k, &["覃超东"], &["覃倩东"]));
        assert!(share(&k, &["周明"], &["周蓉明"]));
        assert!(!share(&k, &["王倩轩"], &["王惠永"]));
        assert!(share(&k, &["Emily Carter"], &["Emily Cartre"]), "metaphone key survives a typo");
        assert!(!share(&k, &["Emily Carter"], &["Grace Young"]));
    }

    #[test]
    fn split_name_keys() {
        let k = [FieldKind::GivenName, FieldKind::Surname];
        assert!(share(&k, &["John", "Smith"], &["Jon", "Smyth"]));
        assert!(share(&k, &["John", "Smith"], &["Smith", "John"]), "swapped columns");
        assert!(!share(&k, &["John", "Smith"], &["Mary", "Jones"]));
    }

    #[test]
    fn other_keys() {
        let phone = [FieldKind::Phone];
        assert!(share(&phone, &["13812345678"], &["+86 138 1234 5678"]));
        assert!(share(&phone, &["13812345678"], &["13912345678"]), "suffix");
        assert!(share(&phone, &["13812345678"], &["13812345687"]), "head");
        // A mistyped digit anywhere, or two swapped ones inside a part, leaves a key in common.
        let phone_number = "15137454968";
        for at in 0..phone_number.len() {
            let mut typo: Vec<u8> = phone_number.bytes().collect();
            typo[at] = if typo[at] == b'0' { b'1' } else { b'0' };
            let typo = String::from_utf8(typo).unwrap();
            assert!(share(&phone, &[phone_number], &[&typo]), "{phone_number} vs {typo}");
        }
        assert!(share(&phone, &["18565345420"], &["18563545420"]), "swapped in the middle");
        let address = [FieldKind::Address];
        assert!(share(
            &address,
            &["北京市东城区 长安街95号 阳光花园5栋1807室"],
            &["东城区长安街９５号阳光花园5幢1807"]
        ));
        let numbers = |raw: &str| -> Vec<String> {
            keys(&address, &[raw]).into_iter().filter(|k| k.starts_with("0:numbers=")).collect()
        };
        assert_eq!(numbers("长安街95号阳光花园5栋1807室"), vec!["0:numbers=1807|5|95".to_owned()]);
        assert_ne!(numbers("长安街95号阳光花园5栋1807室"), numbers("长安街95号阳光花园6栋1807室"));
        assert!(numbers("长安街95号").is_empty(), "one number alone is no key");
        let email = [FieldKind::Email];
        assert!(share(&email, &["zhang.wei@qq.com"], &["zhangwei@163.com"]));
        let date = [FieldKind::Date];
        assert!(share(&date, &["1985-03-07"], &["1985-07-03"]));
        let id = [FieldKind::IdNumber];
        assert!(share(&id, &["A1234567"], &["A1234576"]));
        let company = [FieldKind::CompanyName];
        assert!(share(&company, &["腾讯科技（深圳）有限公司"], &["腾讯科技有限公司"]));
        assert!(keys(&[FieldKind::City], &["杭州"]).is_empty());
    }

    #[test]
    fn candidate_generation_uses_windows_for_big_blocks() {
        let kinds = [FieldKind::Exact];
        let classes = key_classes(&kinds);
        let records: Vec<PreparedRecord> =
            (0..50).map(|_| PreparedRecord::new(vec![prepare(FieldKind::Exact, "same")])).collect();
        let frequencies = token_frequencies(&classes, &records, 1);
        let rank: Vec<u32> = (0..50).collect();
        let all = candidate_pairs(&classes, &records, &frequencies, &rank, &limits(100, 3), 2);
        assert_eq!(all.pairs.len(), 50 * 49 / 2);
        let windowed = candidate_pairs(&classes, &records, &frequencies, &rank, &limits(10, 3), 1);
        assert_eq!(windowed.pairs.len(), 47 * 3 + 2 + 1);
        assert!(windowed.pairs.iter().all(|(a, b)| a < b));
        let listed: Vec<(u32, u32)> = windowed.pairs.iter().collect();
        assert!(listed.windows(2).all(|w| w[0] < w[1]));
        for (i, &(a, b)) in listed.iter().enumerate() {
            assert_eq!(windowed.pairs.position(a, b), Some(i));
            assert_eq!(windowed.pairs.iter_from(i).next(), Some((a, b)));
        }
        assert_eq!(windowed.pairs.position(0, 0), None);
        assert!(windowed.proposed_by.iter().all(|&set| windowed.class_sets[set as usize] == 1));
    }

    /// Two entries of one person far apart in a common name's block (sorted windows never pair
    /// them) are paired by the name with a value they share.
    #[test]
    fn a_name_with_a_shared_value_pairs_what_the_name_block_cannot() {
        let kinds = [FieldKind::PersonName, FieldKind::Text];
        assert!(share(&kinds, &["张雨", "行政主管"], &["張雨", "行政主管"]));
        let classes = key_classes(&kinds);
        let pairs = |shared_title: bool| {
            let records: Vec<PreparedRecord> = (0..200)
                .map(|i| {
                    let title = if shared_title && (i == 0 || i == 199) {
                        "行政主管".to_owned()
                    } else {
                        format!("职务{i}")
                    };
                    let name = if i == 199 { "張雨" } else { "张雨" };
                    PreparedRecord::new(vec![prepare(kinds[0], name), prepare(kinds[1], &title)])
                })
                .collect();
            let frequencies = token_frequencies(&classes, &records, 2);
            let rank: Vec<u32> = (0..200).collect();
            candidate_pairs(&classes, &records, &frequencies, &rank, &limits(50, 3), 1)
        };
        assert!(pairs(true).pairs.position(0, 199).is_some());
        assert!(pairs(false).pairs.position(0, 199).is_none(), "the name block alone does not pair them");
    }

    /// A rare misspelling of a name too common for the window (Eric Yoing, E. Young among 40
    /// Eric Youngs, window 3) is paired with every holder of the name; another
    /// name of the block (Eric Yang, two edits away) is not, nor are two common names paired in
    /// full with each other.
    #[test]
    fn a_rare_spelling_meets_every_holder_of_the_common_name_it_varies() {
        let kinds = [FieldKind::PersonName];
        let classes = key_classes(&kinds);
        let mut names: Vec<&str> = vec!["Eric Young"; 40];
        names.extend(["Eric Yoing", "E. Young", "Eric Yang", "Young, Eric"]);
        names.extend(["Erica Young"; 20]);
        let records: Vec<PreparedRecord> =
            names.iter().map(|n| PreparedRecord::new(vec![prepare(kinds[0], n)])).collect();
        let frequencies = token_frequencies(&classes, &records, 1);
        // Ranked in record order, so that the rare spellings sit after every Eric Young.
        let rank: Vec<u32> = (0..records.len() as u32).collect();
        let pairs = candidate_pairs(&classes, &records, &frequencies, &rank, &limits(10, 3), 1).pairs;
        let paired_with_all = |rare: u32| (0..40).all(|young| pairs.position(young, rare).is_some());
        assert!(paired_with_all(40), "Eric Yoing");
        assert!(paired_with_all(41), "E. Young");
        assert!(!paired_with_all(42), "Eric Yang is two edits away");
        // "Young, Eric" is Eric Young's own spelling: a holder of the common name, not a variant.
        assert!(!paired_with_all(43));
        // The 20 Erica Youngs are one edit from Eric Young but common themselves.
        let erica_with_young = (44..64).flat_map(|e| (0..40).map(move |y| (y, e)));
        assert!(erica_with_young.filter(|&(y, e)| pairs.position(y, e).is_some()).count() < 40 * 20 / 4);
        assert!(spelling_variant(
            name_of(&prepare(kinds[0], "A. Clark").unwrap()).unwrap(),
            name_of(&prepare(kinds[0], "Andrew Clark").unwrap()).unwrap()
        ));
        let han = |n: &str| prepare(kinds[0], n).unwrap();
        assert!(!spelling_variant(name_of(&han("张文")).unwrap(), name_of(&han("张伟")).unwrap()));
        assert!(spelling_variant(name_of(&han("Zhang Wen")).unwrap(), name_of(&han("张伟")).unwrap()));
        assert!(!spelling_variant(
            name_of(&prepare(kinds[0], "A. B.").unwrap()).unwrap(),
            name_of(&prepare(kinds[0], "Andrew Brown").unwrap()).unwrap()
        ));
    }

    /// The same for a name in two fields (surname, given name): Jhon Smith and J. Smith among
    /// 40 John Smiths meet every one of them; Joan Smith (common herself) and Jane Smyth (two
    /// changes) do not.
    #[test]
    fn a_rare_spelling_of_a_split_name_meets_every_holder_of_the_common_name_it_varies() {
        let kinds = [FieldKind::Surname, FieldKind::GivenName];
        let classes = key_classes(&kinds);
        let mut names: Vec<(&str, &str)> = vec![("Smith", "John"); 40];
        names.extend([("Smith", "Jhon"), ("Smith", "J."), ("Smyth", "Jane"), ("Smiht", "John")]);
        names.extend([("Smith", "Joan"); 20]);
        let records: Vec<PreparedRecord> =
            names.iter().map(|(s, g)| PreparedRecord::new(vec![prepare(kinds[0], s), prepare(kinds[1], g)])).collect();
        let frequencies = token_frequencies(&classes, &records, 2);
        let rank: Vec<u32> = (0..records.len() as u32).collect();
        let pairs = candidate_pairs(&classes, &records, &frequencies, &rank, &limits(10, 3), 1).pairs;
        let paired_with_all = |rare: u32| (0..40).all(|john| pairs.position(john, rare).is_some());
        assert!(paired_with_all(40), "Jhon Smith");
        assert!(paired_with_all(41), "J. Smith");
        assert!(!paired_with_all(42), "Jane Smyth");
        let joan_with_john = (44..64).flat_map(|j| (0..40).map(move |y| (y, j)));
        assert!(joan_with_john.filter(|&(y, j)| pairs.position(y, j).is_some()).count() < 40 * 20 / 4);
        let split = |s: &str, g: &str| (prepare(kinds[0], s).unwrap(), prepare(kinds[1], g).unwrap());
        let variant = |rare: (&str, &str), common: (&str, &str)| {
            let (r, c) = (split(rare.0, rare.1), split(common.0, common.1));
            let names = |p: &(Prepared, Prepared)| (name_of(&p.0).unwrap().clone(), name_of(&p.1).unwrap().clone());
            let ((rs, rg), (cs, cg)) = (names(&r), names(&c));
            split_spelling_variant((&rs, &rg), (&cs, &cg))
        };
        assert!(variant(("Smiht", "John"), ("Smith", "John")), "a surname one edit away");
        assert!(!variant(("Smyth", "Jane"), ("Smith", "John")));
        assert!(!variant(("张", "文"), ("张", "伟")), "Han names vary by sound or character");
    }

    /// A block of a coarse class (here: a postcode) is compared in full only up to its own
    /// size limit, and by its own window above it; a name's block keeps the general ones.
    #[test]
    fn coarse_classes_have_their_own_block_limit_and_window() {
        let kinds = [FieldKind::Postcode, FieldKind::PersonName];
        let classes = key_classes(&kinds);
        assert_eq!(
            classes.iter().map(|c| c.coarse).collect::<Vec<_>>(),
            vec![true, false, false, false, true, false, true]
        );
        let records_of = |n: usize, column: usize| -> Vec<PreparedRecord> {
            (0..n)
                .map(|i| {
                    let mut values = vec![prepare(FieldKind::Postcode, &format!("{:06}", 100_000 + i)), None];
                    values[column] = prepare(kinds[column], if column == 0 { "310000" } else { "张伟" });
                    if column == 0 {
                        values[1] = prepare(FieldKind::PersonName, &format!("Person{i} Name{i}"));
                    }
                    PreparedRecord::new(values)
                })
                .collect()
        };
        let count = |records: &[PreparedRecord]| {
            let frequencies = token_frequencies(&classes, records, 2);
            let rank: Vec<u32> = (0..records.len() as u32).collect();
            let limits = MatchConfig {
                max_block_size: 50,
                max_coarse_block_size: 10,
                window: 10,
                coarse_window: 3,
                ..MatchConfig::default()
            };
            candidate_pairs(&classes, records, &frequencies, &rank, &limits, 1).pairs.len()
        };
        // 10 records sharing a postcode: all 45 pairs; 30: each with the next three.
        assert_eq!(count(&records_of(10, 0)), 45);
        assert_eq!(count(&records_of(30, 0)), 27 * 3 + 2 + 1);
        // 30 records sharing a name: all 435 pairs (the general limit is 50).
        assert_eq!(count(&records_of(30, 1)), 30 * 29 / 2);
    }
}
