//! Comparators: string similarities (Jaro-Winkler, Levenshtein/OSA, soft token-set) and, per
//! kind, the discrete agreement level of two prepared values. Levels are ordered: 0 means the
//! values disagree, the highest level means exact agreement after normalisation; what each level
//! is worth is not decided here but estimated from the data (see `model`).

use super::fold;
use super::kind::FieldKind;
use super::nicknames;
use super::value::{DateValue, Detail, NameValue, Prepared, TokenValue, Words};

/// Jaro-Winkler similarity in [0, 1] (prefix boost of up to four characters when the Jaro
/// similarity exceeds 0.7, as in `strsim`). ASCII strings of up to 64 bytes — pinyin, digits,
/// Latin names — take an allocation-free path; this is the comparator's inner loop.
pub fn jaro_winkler(a: &str, b: &str) -> f64 {
    let (x, y) = (a.as_bytes(), b.as_bytes());
    if x.len() > 64 || y.len() > 64 || !a.is_ascii() || !b.is_ascii() {
        return strsim::jaro_winkler(a, b);
    }
    let jaro = ascii_jaro(x, y);
    if jaro > 0.7 {
        let prefix = x.iter().zip(y).take(4).take_while(|(p, q)| p == q).count();
        jaro + 0.1 * prefix as f64 * (1.0 - jaro)
    } else {
        jaro
    }
}

fn ascii_jaro(x: &[u8], y: &[u8]) -> f64 {
    if x.is_empty() && y.is_empty() {
        return 1.0;
    }
    if x.is_empty() || y.is_empty() {
        return 0.0;
    }
    let range = (x.len().max(y.len()) / 2).saturating_sub(1);
    let (mut flags_x, mut flags_y) = (0u64, 0u64);
    let mut matches = 0usize;
    for (i, &c) in x.iter().enumerate() {
        let low = i.saturating_sub(range);
        let high = (i + range + 1).min(y.len());
        for (j, &d) in y.iter().enumerate().take(high).skip(low) {
            if flags_y & (1 << j) == 0 && d == c {
                flags_x |= 1 << i;
                flags_y |= 1 << j;
                matches += 1;
                break;
            }
        }
    }
    if matches == 0 {
        return 0.0;
    }
    let mut transpositions = 0usize;
    let mut j = 0usize;
    for (i, &c) in x.iter().enumerate() {
        if flags_x & (1 << i) == 0 {
            continue;
        }
        while flags_y & (1 << j) == 0 {
            j += 1;
        }
        if y[j] != c {
            transpositions += 1;
        }
        j += 1;
    }
    let m = matches as f64;
    (m / x.len() as f64 + m / y.len() as f64 + (matches - transpositions / 2) as f64 / m) / 3.0
}

/// Levenshtein similarity: 1 − distance / length of the longer string, in [0, 1].
pub fn levenshtein_similarity(a: &str, b: &str) -> f64 {
    strsim::normalized_levenshtein(a, b)
}

/// Optimal-string-alignment distance (Levenshtein plus adjacent transpositions), computed only
/// up to `max`: any larger distance is reported as `max + 1`. Short ASCII strings are compared
/// without allocating.
pub fn edit_distance_at_most(a: &str, b: &str, max: usize) -> usize {
    if a.len().abs_diff(b.len()) > max * 4 {
        // Even four bytes per character cannot bridge this difference.
        return max + 1;
    }
    if a.is_ascii() && b.is_ascii() && a.len() < 64 && b.len() < 64 {
        return bounded_osa(a.as_bytes(), b.as_bytes(), max);
    }
    let x: Vec<char> = a.chars().collect();
    let y: Vec<char> = b.chars().collect();
    bounded_osa(&x, &y, max)
}

fn bounded_osa<T: PartialEq>(a: &[T], b: &[T], max: usize) -> usize {
    if a.len().abs_diff(b.len()) > max {
        return max + 1;
    }
    const STACK: usize = 64;
    let width = b.len() + 1;
    let mut heap: Vec<usize> = Vec::new();
    let mut stack = [0usize; 3 * STACK];
    let rows: &mut [usize] = if width <= STACK {
        &mut stack[..3 * width]
    } else {
        heap.resize(3 * width, 0);
        &mut heap
    };
    let (previous_previous, rest) = rows.split_at_mut(width);
    let (previous, current) = rest.split_at_mut(width);
    for (j, v) in previous.iter_mut().enumerate() {
        *v = j;
    }
    let (mut pp, mut p, mut c) = (previous_previous, previous, current);
    for i in 1..=a.len() {
        c[0] = i;
        let mut row_min = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (p[j] + 1).min(c[j - 1] + 1).min(p[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(pp[j - 2] + 1);
            }
            c[j] = best;
            row_min = row_min.min(best);
        }
        if row_min > max {
            return max + 1;
        }
        let old_pp = pp;
        pp = p;
        p = c;
        c = old_pp;
    }
    p[b.len()].min(max + 1)
}

/// Token-set similarities of two sorted, de-duplicated token lists: (soft Jaccard, overlap
/// coefficient). Tokens match exactly, or — for Latin words of three letters or more — softly
/// when their Jaro-Winkler similarity is at least 0.9, which then counts 0.8 of a match.
pub fn token_set_similarity<S: AsRef<str>>(a: &[S], b: &[S]) -> (f64, f64) {
    if a.is_empty() || b.is_empty() {
        return (0.0, 0.0);
    }
    let soft_candidate = |t: &str| t.len() >= 3 && t.bytes().all(|c| c.is_ascii_lowercase());
    let (mut i, mut j) = (0, 0);
    let mut exact = 0usize;
    // Unmatched soft candidates, as indexes (at most 64 per side are considered).
    let (mut left_a, mut left_b) = ([0u8; 64], [0u8; 64]);
    let (mut na, mut nb) = (0usize, 0usize);
    let remember = |side: &mut [u8; 64], count: &mut usize, index: usize, token: &str| {
        if *count < 64 && index < 256 && soft_candidate(token) {
            side[*count] = index as u8;
            *count += 1;
        }
    };
    while i < a.len() || j < b.len() {
        let order = match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) => x.as_ref().cmp(y.as_ref()),
            (Some(_), None) => std::cmp::Ordering::Less,
            _ => std::cmp::Ordering::Greater,
        };
        match order {
            std::cmp::Ordering::Equal => {
                exact += 1;
                i += 1;
                j += 1;
            }
            std::cmp::Ordering::Less => {
                remember(&mut left_a, &mut na, i, a[i].as_ref());
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                remember(&mut left_b, &mut nb, j, b[j].as_ref());
                j += 1;
            }
        }
    }
    let mut soft = 0usize;
    let mut used = 0u64;
    for &ia in &left_a[..na] {
        let ta = a[usize::from(ia)].as_ref();
        let mut best: Option<(usize, f64)> = None;
        for (k, &ib) in left_b[..nb].iter().enumerate() {
            if used & (1 << k) != 0 {
                continue;
            }
            let s = jaro_winkler(ta, b[usize::from(ib)].as_ref());
            if s >= 0.9 && best.is_none_or(|(_, b)| s > b) {
                best = Some((k, s));
            }
        }
        if let Some((k, _)) = best {
            used |= 1 << k;
            soft += 1;
        }
    }
    let matched = exact as f64 + 0.8 * soft as f64;
    let union = (a.len() + b.len() - exact - soft) as f64;
    let smaller = a.len().min(b.len()) as f64;
    (matched / union, matched / smaller)
}

/// Agreement level of two prepared values of the same kind, in `0..kind.level_count()`.
pub fn compare(kind: FieldKind, a: &Prepared, b: &Prepared) -> u8 {
    let top = kind.exact_level();
    if a.exact == b.exact {
        return top;
    }
    match (&a.detail, &b.detail) {
        (Detail::Name(x), Detail::Name(y)) => compare_names(x, y),
        (Detail::Company(x), Detail::Company(y)) => compare_companies(&a.exact, &b.exact, x, y),
        (Detail::Phone, Detail::Phone) => compare_phones(&a.exact, &b.exact),
        (Detail::Email(x), Detail::Email(y)) => {
            // One slip of the keyboard away (qq.comm, zhnagwei@): the same address mistyped,
            // unless the slip is in the digits or the punctuation, which tell the addresses of
            // namesakes apart (zhangwei1@ and zhangwei2@, ping.huang@ and pinghuang@).
            let not_letters = |s: &str| s.chars().filter(|c| !c.is_alphabetic()).collect::<String>();
            if edit_distance_at_most(&a.exact, &b.exact, 1) <= 1 && not_letters(&a.exact) == not_letters(&b.exact) {
                3
            } else if !x.user.is_empty() && x.user == y.user {
                2
            } else if x.user.chars().count().min(y.user.chars().count()) >= 4
                && (jaro_winkler(&x.user, &y.user) >= 0.9 || edit_distance_at_most(&x.user, &y.user, 1) <= 1)
            {
                1
            } else {
                0
            }
        }
        (Detail::Date(x), Detail::Date(y)) => compare_dates(&a.exact, &b.exact, x, y),
        (Detail::Tokens(x), Detail::Tokens(y)) => compare_tokens(&a.exact, &b.exact, x, y),
        (Detail::Postcode, Detail::Postcode) => {
            let (p, q) = (&*a.exact, &*b.exact);
            if p.len() == q.len() && edit_distance_at_most(p, q, 1) <= 1 {
                2
            } else {
                let common = p.bytes().zip(q.bytes()).take_while(|(x, y)| x == y).count();
                u8::from(common >= 2 && common * 2 >= p.len().max(q.len()))
            }
        }
        (Detail::City, Detail::City) => {
            let (x, y) = (a.sound.as_deref().unwrap_or_default(), b.sound.as_deref().unwrap_or_default());
            if x == y {
                2
            } else if jaro_winkler(x, y) >= 0.9
                || (a.exact.chars().count() >= 2 && b.exact.contains(&*a.exact))
                || (b.exact.chars().count() >= 2 && a.exact.contains(&*b.exact))
            {
                1
            } else {
                0
            }
        }
        (Detail::Id, Detail::Id) => {
            let limit = if a.exact.len().min(b.exact.len()) >= 8 { 2 } else { 1 };
            match edit_distance_at_most(&a.exact, &b.exact, limit) {
                1 => 2,
                2 => 1,
                _ => 0,
            }
        }
        _ => 0,
    }
}

fn compare_names(a: &NameValue, b: &NameValue) -> u8 {
    // Same sound: the same pinyin or words in one of the orders a name is written in (张伟,
    // 章伟, Zhang Wei, Wei Zhang, Zhangwei), or the same Double Metaphone codes (Jon Smyth,
    // John Smith).
    if a.forms.iter().any(|f| b.forms.contains(f)) {
        return 4;
    }
    if !a.metaphones.is_empty() && a.metaphones == b.metaphones && a.tokens.len() == b.tokens.len() {
        return 4;
    }
    // Sharing a word (usually the surname: 杨超 and "Kevin Yang", 王兰蓉 and 王荣) is the weakest
    // agreement; whether it counts for or against a match is left to the estimation.
    // A Han name's shared word must be its surname: two people called 伟 share nothing.
    let shares = |x: &NameValue, y: &NameValue| match (x.surname_first, y.surname_first) {
        (true, true) => x.tokens.first() == y.tokens.first(),
        (true, false) => x.tokens.first().is_some_and(|s| y.tokens.contains(s)),
        (false, true) => y.tokens.first().is_some_and(|s| x.tokens.contains(s)),
        (false, false) => x.tokens.iter().any(|t| y.tokens.contains(t)),
    };
    let shared_word = u8::from(shares(a, b));
    // Two names in Han characters are close when one character was mistyped, dropped or added
    // in a name of three characters or more; their pinyin similarity says little, because
    // unrelated two-character names share most of their pinyin letters.
    if let (Some(x), Some(y)) = (&a.han, &b.han) {
        let longer = x.chars().count().max(y.chars().count());
        if longer >= 3 && edit_distance_at_most(x, y, 1) <= 1 {
            return 3;
        }
        if a.tokens.first() == b.tokens.first() && best_form_similarity(a, b) >= 0.9 {
            return 2;
        }
        // The same surname before given names with no character or syllable in common (王倩轩
        // and 王惠永): relatives and namesakes of a surname, as different as two names get.
        if shared_word == 1 && a.surname_first && b.surname_first && !given_names_overlap(a, b) {
            return 0;
        }
        return shared_word;
    }
    // A familiar form of the given name (Beth and Elizabeth) is the same name, as a typo is.
    if familiar_forms_of_one_name(a, b) {
        return 3;
    }
    let best = best_form_similarity(a, b);
    let longest = a.forms.iter().chain(b.forms.iter()).map(str::len).max().unwrap_or(0);
    // One edit in a string of five letters or more keeps Jaro-Winkler above 0.8, so the edit
    // distance is only worth computing above that.
    let one_typo = (0.8..0.93).contains(&best)
        && longest >= 5
        && a.forms.iter().any(|x| b.forms.iter().any(|y| edit_distance_at_most(x, y, 1) <= 1));
    if best >= 0.93 || one_typo {
        3
    } else if shared_word == 1 && pinyin_given_names_differ(a, b) {
        // "Han Chunpeng" and 韩柏红: the surname and a given name in pinyin that is not the
        // other's, the relatives and namesakes case of two Han names (and, as there, the shared
        // surname's letters make the pinyin look similar).
        0
    } else if best >= 0.85 || initials_compatible(a, b) {
        2
    } else {
        shared_word
    }
}

/// For a Han name and a Latin one sharing the surname: whether the Latin name's other words are
/// pinyin ("Chun Peng", "Tianyan") sharing no syllable with the Han given name. An English
/// given name ("Emily Liu" and 刘瑞平) is no pinyin and says nothing about the given name.
fn pinyin_given_names_differ(a: &NameValue, b: &NameValue) -> bool {
    let (han, latin) = match (a.han.is_some(), b.han.is_some()) {
        (true, false) => (a, b),
        (false, true) => (b, a),
        _ => return false,
    };
    let (Some(surname), Some(han_given)) = (han.tokens.first(), han.tokens.iter().nth(1)) else {
        return false;
    };
    let mut rest = String::new();
    let mut skipped = false;
    for token in latin.tokens.iter() {
        if !skipped && token == surname {
            skipped = true;
        } else {
            rest.push_str(token);
        }
    }
    if !skipped || !fold::is_pinyin_run(&rest) {
        return false;
    }
    let given_chars = han.parts.iter().find_map(|p| p.strip_prefix("g:")).unwrap_or_default();
    let syllables: Vec<&str> = given_chars.chars().filter_map(fold::char_pinyin).collect();
    !syllables.is_empty() && !syllables.iter().any(|s| rest.contains(s)) && !han_given.contains(rest.as_str())
}

/// Whether two Han names' given names share a character (王兰蓉 and 王兰), or one's pinyin
/// holds the other's (王兰蓉 and 王荣: "lanrong" and "rong").
fn given_names_overlap(a: &NameValue, b: &NameValue) -> bool {
    let given_chars = |n: &NameValue| n.parts.iter().find_map(|p| p.strip_prefix("g:")).unwrap_or_default().to_owned();
    let (x, y) = (given_chars(a), given_chars(b));
    if x.chars().any(|c| y.contains(c)) {
        return true;
    }
    match (a.tokens.iter().nth(1), b.tokens.iter().nth(1)) {
        (Some(p), Some(q)) if !p.is_empty() && !q.is_empty() => p.contains(q) || q.contains(p),
        _ => false,
    }
}

fn best_form_similarity(a: &NameValue, b: &NameValue) -> f64 {
    let mut best = 0.0f64;
    for x in a.forms.iter() {
        for y in b.forms.iter() {
            best = best.max(jaro_winkler(x, y));
        }
    }
    best
}

/// Whether one of two words is the other cut to its initial: "R" and "Ryan".
pub(crate) fn initial_of(x: &str, y: &str) -> bool {
    (x.len() == 1 && y.starts_with(x)) || (y.len() == 1 && x.starts_with(y))
}

/// "E. Carter" and "Emily Carter": the same number of words, where every word equals the other
/// name's word or is its initial, in the written or the reversed order, with at least one whole
/// word in common.
pub(crate) fn initials_compatible(a: &NameValue, b: &NameValue) -> bool {
    let word_ok = |x: &str, y: &str| x == y || initial_of(x, y);
    a.tokens.len() >= 2
        && words_aligned(a, b, |pairs| {
            let mut whole = false;
            for (x, y) in pairs {
                if !word_ok(x, y) {
                    return false;
                }
                whole |= x == y && x.len() > 1;
            }
            whole
        })
}

/// "Beth Johnson" and "Elizabeth Johnson": the same number of words, in the written or the
/// reversed order, where at least one word is a familiar form of the other's given name (or
/// both are forms of one, Bill and Will) and every other word is the same. A name that reads
/// wholly as pinyin ("Zhang Dan") is a Chinese name, not an English one with a familiar form.
fn familiar_forms_of_one_name(a: &NameValue, b: &NameValue) -> bool {
    let several = a.tokens.len() >= 2;
    // The pinyin reading is asked last: this runs for every pair of Latin names compared, and
    // most pairs fail on their words first.
    let aligned = words_aligned(a, b, |pairs| {
        let (mut familiar, mut same) = (false, false);
        for (x, y) in pairs {
            if x == y {
                same = true;
            } else if nicknames::same_given_name(x, y) {
                familiar = true;
            } else {
                return false;
            }
        }
        familiar && (same || !several)
    });
    aligned && !nicknames::reads_as_pinyin(a) && !nicknames::reads_as_pinyin(b)
}

/// Whether `check` accepts the word pairs of two names of as many words, paired in written
/// order or with one name's words reversed ("Emily Carter" and "Carter Emily").
fn words_aligned(a: &NameValue, b: &NameValue, check: impl Fn(&mut dyn Iterator<Item = (&str, &str)>) -> bool) -> bool {
    if a.tokens.len() != b.tokens.len() || a.tokens.is_empty() {
        return false;
    }
    if check(&mut a.tokens.iter().zip(b.tokens.iter())) {
        return true;
    }
    let mut reversed = [""; 16];
    if a.tokens.len() <= reversed.len() {
        for (slot, token) in reversed.iter_mut().rev().zip(b.tokens.iter()) {
            *slot = token;
        }
        check(&mut a.tokens.iter().zip(reversed[reversed.len() - a.tokens.len()..].iter().copied()))
    } else {
        let tokens: Vec<&str> = b.tokens.iter().collect();
        check(&mut a.tokens.iter().zip(tokens.into_iter().rev()))
    }
}

fn compare_companies(ea: &str, eb: &str, a: &TokenValue, b: &TokenValue) -> u8 {
    let (jaccard, overlap) = word_set_similarity(&a.tokens, &b.tokens);
    let shorter = if ea.len() <= eb.len() { ea } else { eb };
    let longer = if ea.len() <= eb.len() { eb } else { ea };
    // "杭州云图信息科技" contains "云图信息科技": a city prefix or a shortened name.
    let contained = shorter.chars().count() >= 4 && longer.contains(shorter);
    let jw = jaro_winkler(ea, eb);
    if jaccard >= 0.8 || contained || jw >= 0.95 { 2 } else { u8::from(jaccard >= 0.5 || overlap >= 0.8 || jw >= 0.88) }
}

fn compare_phones(a: &str, b: &str) -> u8 {
    // One number written with its country code and the other without ("0298765432" vs
    // "61298765432" after a failed parse): equal up to the prefix.
    let (shorter, longer) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    let shorter_national = shorter.trim_start_matches('0');
    if shorter_national.len() >= 7 && longer.ends_with(shorter_national) {
        return 2;
    }
    match edit_distance_at_most(a, b, 2) {
        0 | 1 => 2,
        2 => 1,
        _ => {
            let suffix = |s: &str| s.len().saturating_sub(6);
            u8::from(a.len() >= 8 && b.len() >= 8 && a[suffix(a)..] == b[suffix(b)..])
        }
    }
}

/// Dates by their digits (the exact forms) and parsed values.
fn compare_dates(digits_a: &str, digits_b: &str, a: &DateValue, b: &DateValue) -> u8 {
    if let (Some((ya, ma, da)), Some((yb, mb, db))) = (a.ymd, b.ymd)
        && ya == yb
        && ma == db
        && da == mb
    {
        return 3;
    }
    if edit_distance_at_most(digits_a, digits_b, 1) <= 1 {
        return 2;
    }
    match (a.julian, b.julian) {
        (Some(x), Some(y)) => u8::from((x - y).abs() <= 366),
        _ => 0,
    }
}

fn compare_tokens(ea: &str, eb: &str, a: &TokenValue, b: &TokenValue) -> u8 {
    if let (Some(x), Some(y)) = (a.number, b.number) {
        let scale = x.abs().max(y.abs()).max(1e-9);
        let relative = (x - y).abs() / scale;
        return if relative <= 0.005 { 2 } else { u8::from(relative <= 0.1) };
    }
    let (jaccard, overlap) = word_set_similarity(&a.tokens, &b.tokens);
    // A different house or room number is a different address, however similar the street.
    let numbers_compatible = is_subset(&a.numbers, &b.numbers) || is_subset(&b.numbers, &a.numbers);
    let short = ea.chars().count().max(eb.chars().count()) <= 12;
    let jw = if short { jaro_winkler(ea, eb) } else { 0.0 };
    if (jaccard >= 0.8 || overlap >= 0.9 || jw >= 0.95) && numbers_compatible {
        2
    } else {
        u8::from(jaccard >= 0.5 || overlap >= 0.7 || jw >= 0.88)
    }
}

fn is_subset(small: &Words, big: &Words) -> bool {
    small.iter().all(|t| big.contains(t))
}

/// Most tokens a value keeps (`value::MAX_TOKENS`); the token lists compared are never longer.
const MAX_WORDS: usize = 64;

/// [`token_set_similarity`] of two packed token lists, unpacked on the stack.
fn word_set_similarity(a: &Words, b: &Words) -> (f64, f64) {
    let (mut x, mut y) = ([""; MAX_WORDS], [""; MAX_WORDS]);
    let (nx, ny) = (a.len(), b.len());
    if nx > MAX_WORDS || ny > MAX_WORDS {
        let (x, y): (Vec<&str>, Vec<&str>) = (a.iter().collect(), b.iter().collect());
        return token_set_similarity(&x, &y);
    }
    for (slot, item) in x.iter_mut().zip(a.iter()) {
        *slot = item;
    }
    for (slot, item) in y.iter_mut().zip(b.iter()) {
        *slot = item;
    }
    token_set_similarity(&x[..nx], &y[..ny])
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::super::value::prepare;
    use super::*;

    /// One line per case: kind, two raw values, expected level name.
    fn check(kind: FieldKind, a: &str, b: &str, want: &str) {
        let pa = prepare(kind, a).unwrap_or_else(|| panic!("{a:?} is missing"));
        let pb = prepare(kind, b).unwrap_or_else(|| panic!("{b:?} is missing"));
        let level = compare(kind, &pa, &pb);
        assert_eq!(kind.levels()[level as usize], want, "{kind}: {a:?} vs {b:?}");
        assert_eq!(compare(kind, &pb, &pa), level, "{kind}: symmetric for {a:?} vs {b:?}");
    }

    #[test]
    fn primitives() {
        assert_eq!(edit_distance_at_most("kitten", "sitting", 5), 3);
        assert_eq!(edit_distance_at_most("kitten", "sitting", 2), 3);
        assert_eq!(edit_distance_at_most("abcd", "abdc", 2), 1);
        assert_eq!(edit_distance_at_most("", "abc", 3), 3);
        assert_eq!(edit_distance_at_most("张伟明", "张伟", 1), 1);
        assert_eq!(edit_distance_at_most("张伟明", "李伟", 1), 2);
        for (x, y) in [("martha", "marhta"), ("dixon", "dicksonx"), ("jellyfish", "smellyfish"), ("a", "b"), ("", "x")]
        {
            assert!((jaro_winkler(x, y) - strsim::jaro_winkler(x, y)).abs() < 1e-12, "{x} {y}");
        }
        assert!(jaro_winkler("martha", "marhta") > 0.95);
        assert!((levenshtein_similarity("abcd", "abce") - 0.75).abs() < 1e-9);
        let t = |s: &[&str]| s.iter().map(|x| Box::<str>::from(*x)).collect::<Vec<_>>();
        let (j, o) = token_set_similarity(&t(&["acme", "trading"]), &t(&["acme", "tradng"]));
        assert!(j > 0.8 && o > 0.8, "{j} {o}");
        assert_eq!(token_set_similarity(&t(&["a"]), &t(&[])), (0.0, 0.0));
    }

    #[test]
    fn person_names() {
        use FieldKind::PersonName as P;
        check(P, "张伟", "張偉", "exact");
        check(P, "张伟", "Zhang Wei", "same_sound");
        check(P, "张伟", "Wei Zhang", "same_sound");
        check(P, "张伟", "ZHANGWEI", "same_sound");
        check(P, "张伟", "章玮", "same_sound");
        check(P, "王晓明", "王晓敏", "close");
        check(P, "王晓明", "王明", "close");
        check(P, "张伟", "张文", "similar");
        check(P, "张伟", "李伟", "different");
        check(P, "杨超", "Kevin Yang", "shared_word");
        // The same surname and given names with nothing in common: no evidence of one person.
        check(P, "徐伟兰", "徐扬欣", "different");
        check(P, "王倩轩", "王惠永", "different");
        check(P, "吕轩蔷", "吕文", "different");
        // ... unless a given name shares a character or holds the other's syllables.
        check(P, "王兰蓉", "王荣", "similar");
        check(P, "徐伟兰", "徐兰欣", "shared_word");
        check(P, "陈杰惠", "陈惠", "close");
        check(P, "Emily Carter", "emily  carter", "exact");
        check(P, "Emily Carter", "Carter, Emily", "exact");
        check(P, "HELEN PARKER", "Parker Helen", "exact");
        check(P, "John Smith", "Jon Smyth", "same_sound");
        check(P, "Emily Carter", "Emily Cartre", "same_sound");
        check(P, "Emily Carter", "Emily Carer", "close");
        check(P, "Emily Carter", "E. Carter", "similar");
        check(P, "Emily Carter", "Grace Young", "different");
        // A familiar form of the given name is the same name, in either order of the words.
        check(P, "Beth Johnson", "Elizabeth Johnson", "close");
        check(P, "Johnson, Beth", "ELIZABETH JOHNSON", "close");
        check(P, "Bill Clark", "Will Clark", "close");
        check(FieldKind::GivenName, "Bill", "William", "close");
        check(P, "Beth Johnson", "Elizabeth Jones", "different");
        check(P, "Beth Jones", "Emily Jones", "similar");
        // ... but a name that reads as pinyin is a Chinese one: 张丹 is not Daniel Zhang.
        let name = |text: &str| super::super::value::name_of_text(P, text);
        assert!(familiar_forms_of_one_name(&name("Dan Smith"), &name("Daniel Smith")));
        assert!(!familiar_forms_of_one_name(&name("Zhang Dan"), &name("Daniel Zhang")));
        check(P, "曾伟", "Zeng Wei", "same_sound");
        check(P, "Chan Tai Man", "陈大文", "different");
        // A pinyin given name that is not the Han one's: relatives, not one person ...
        check(P, "Han Chun Peng", "韩柏红", "different");
        check(P, "Tianyan Jiang", "江坚军", "different");
        // ... but an English given name says nothing, nor does one sharing a syllable.
        check(P, "Emily Liu", "刘瑞平", "shared_word");
        check(P, "Liu Ruiqiang", "刘瑞平", "close");
        check(P, "Ping Liu", "刘瑞平", "similar");
    }

    #[test]
    fn given_names_and_surnames() {
        check(FieldKind::GivenName, "伟", "wei", "same_sound");
        check(FieldKind::GivenName, "Catherine", "Katherine", "same_sound");
        check(FieldKind::GivenName, "Jonathan", "Jonathon", "same_sound");
        check(FieldKind::GivenName, "Jonathan", "Jonahtan", "close");
        check(FieldKind::GivenName, "Christopher", "Christina", "different");
        check(FieldKind::Surname, "曾", "zeng", "same_sound");
        check(FieldKind::Surname, "Wong", "黄", "same_sound");
        check(FieldKind::Surname, "Smith", "Jones", "different");
    }

    #[test]
    fn companies() {
        use FieldKind::CompanyName as C;
        check(C, "腾讯科技（深圳）有限公司", "腾讯科技有限公司", "exact");
        check(C, "華為技術有限公司", "华为技术有限责任公司", "exact");
        check(C, "杭州云图信息科技有限公司", "云图信息科技有限公司", "close");
        check(C, "Northwind Trading Co., Ltd.", "Northwind Tradng Ltd", "close");
        check(C, "Northwind Trading", "Northwind Trade Partners", "similar");
        check(C, "Northwind Trading", "Bluestone Logistics", "different");
        check(C, "云图信息科技有限公司", "博远机械制造有限公司", "different");
    }

    #[test]
    fn phones_emails_dates_codes() {
        check(FieldKind::Phone, "13812345678", "+86 138-1234-5678", "exact");
        check(FieldKind::Phone, "13812345678", "13812345687", "one_typo");
        check(FieldKind::Phone, "02 9876 5432", "+61 2 9876 5432", "one_typo");
        check(FieldKind::Phone, "13812345678", "13998765432", "different");
        check(FieldKind::Email, "zhang.wei@qq.com", "zhangwei@163.com", "same_user");
        check(FieldKind::Email, "zhangwei@qq.com", "zhangwei@qq.con", "one_typo");
        check(FieldKind::Email, "zhangwei@qq.com", "zhnagwei@qq.com", "one_typo");
        check(FieldKind::Email, "zhangwei1@qq.com", "zhangwei2@qq.com", "similar");
        check(FieldKind::Email, "ping.huang@qq.com", "pinghuang@qq.com", "same_user");
        check(FieldKind::Email, "zhangwei@163.com", "zhangwei@162.com", "same_user");
        check(FieldKind::Email, "dschmidt@qq.com", "dschmidt4@qq.com", "similar");
        check(FieldKind::Email, "zhangwei@qq.com", "lina@qq.com", "different");
        // Symmetric: a short user part is "different" whichever side it is on.
        check(FieldKind::Email, "2670@qq.com", "267@qq.com", "different");
        check(FieldKind::Email, "267@qq.com", "2670@qq.com", "different");
        check(FieldKind::Date, "1985-03-07", "1985年3月7日", "exact");
        check(FieldKind::Date, "1985-03-07", "1985-07-03", "day_month_swapped");
        check(FieldKind::Date, "1985-03-07", "1986-03-07", "one_typo");
        check(FieldKind::Date, "1985-03-07", "1985-05-20", "within_a_year");
        check(FieldKind::Date, "1985-03-07", "1962-11-30", "different");
        check(FieldKind::Postcode, "310012", "310013", "one_typo");
        check(FieldKind::Postcode, "310012", "310100", "same_area");
        check(FieldKind::Postcode, "310012", "100080", "different");
        check(FieldKind::IdNumber, "A1234567", "A1234576", "one_typo");
        check(FieldKind::IdNumber, "A1234567", "B7654321", "different");
        check(FieldKind::City, "杭州市", "杭州", "exact");
        check(FieldKind::City, "杭州", "Hangzhou", "same_sound");
        check(FieldKind::City, "浙江杭州", "杭州", "exact");
        check(FieldKind::City, "杭州西湖", "杭州", "similar");
        check(FieldKind::Exact, "A", "a", "different");
    }

    #[test]
    fn addresses_and_text() {
        use FieldKind::Address as A;
        check(A, "浙江省杭州市西湖区文三路123号", "杭州市西湖区文三路 123 号", "close");
        check(A, "浙江省杭州市西湖区文三路123号", "浙江省杭州市西湖区文三路456号", "similar");
        check(A, "浙江省杭州市西湖区文三路123号", "广东省深圳市南山区科技园8号", "different");
        check(A, "12 Wattle Street", "12 Wattel St", "close");
        check(A, "12 Wattle Street", "14 Wattle Street", "similar");
        check(FieldKind::Text, "34", "34.0", "exact");
        check(FieldKind::Text, "1000", "1003", "close");
        check(FieldKind::Text, "1000", "1080", "similar");
        check(FieldKind::Text, "1000", "2000", "different");
    }
}
