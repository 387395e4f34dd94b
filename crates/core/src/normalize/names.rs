//! Names and free text: the canonical company name used as a matching key, display
//! normalisation of person names, and generic single-line text.

use unicode_normalization::UnicodeNormalization;

use super::{nfkc, to_fixed_point};

/// Chinese legal-form suffixes (simplified and traditional), longest first so that
/// "有限公司" is removed as a whole rather than as "公司" leaving "有限".
const CJK_LEGAL_SUFFIXES: &[&str] = &[
    "股份有限公司",
    "有限责任公司",
    "有限責任公司",
    "集团有限公司",
    "集團有限公司",
    "股份公司",
    "有限公司",
    "分公司",
    "集团",
    "集團",
    "公司",
];

/// Latin legal forms, as whole trailing words after dots are removed ("Co.,Ltd." → "co" "ltd",
/// "L.L.C." → "llc", "S.A." → "sa", "Co.Ltd" → "coltd"). Matching whole words only is what
/// keeps "Tesco" and "Costco" intact.
const LATIN_LEGAL_SUFFIXES: &[&str] = &[
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
];

/// Canonical company name for matching (never for display): NFKC (full → half width),
/// lower-case, bracketed parts removed ("(北京)", "（上海）", "(特殊普通合伙)", "[HK]"),
/// punctuation and whitespace removed, and legal suffixes (有限公司, 股份有限公司, 集团, 公司,
/// Co., Ltd., Inc., LLC, GmbH, Corp., PLC, S.A., …) stripped repeatedly from the end.
///
/// Every bracketed part is removed, not only region names: in registered Chinese company names
/// brackets hold either a region (腾讯科技（深圳）有限公司) or a legal form
/// (…会计师事务所（特殊普通合伙）), both of which are noise for matching. A suffix is never
/// stripped if nothing would remain, so "有限公司" alone stays "有限公司".
pub fn canonical_company_name(raw: &str) -> String {
    to_fixed_point(canonical_company_name_once(raw), canonical_company_name_once)
}

fn canonical_company_name_once(raw: &str) -> String {
    let text = nfkc(raw).to_lowercase();
    let without_brackets = strip_bracketed(&text);
    let text = if without_brackets.chars().any(char::is_alphanumeric) {
        without_brackets
    } else {
        // "(北京)" alone: keep the words, lose only the brackets.
        text
    };

    let mut tokens = company_tokens(&text);
    loop {
        if tokens.len() > 1 && tokens.last().is_some_and(|last| LATIN_LEGAL_SUFFIXES.contains(&last.as_str())) {
            tokens.pop();
            continue;
        }
        let joined: String = tokens.concat();
        // The longest matching suffix decides: "有限公司" alone is kept whole rather than
        // shortened to "有限" by the shorter suffix "公司".
        match CJK_LEGAL_SUFFIXES.iter().find(|suffix| joined.ends_with(*suffix)) {
            Some(suffix) if joined.len() > suffix.len() => {
                remove_trailing_chars(&mut tokens, suffix.chars().count());
            }
            _ => break,
        }
    }
    tokens.concat()
}

/// Removes bracketed groups, including nested ones. Any closing bracket closes the innermost
/// open group (people mix "（" and ")"); an unmatched closing bracket is left for the
/// punctuation filter; an unclosed group keeps its text.
fn strip_bracketed(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut open_at: Vec<usize> = Vec::new();
    for c in text.chars() {
        if matches!(c, '(' | '[' | '{' | '【' | '〔' | '〖' | '〈' | '《' | '⟨') {
            open_at.push(out.len());
            out.push(c);
        } else if matches!(c, ')' | ']' | '}' | '】' | '〕' | '〗' | '〉' | '》' | '⟩') {
            match open_at.pop() {
                Some(at) => out.truncate(at),
                None => out.push(c),
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Words of a company name: split at anything that is neither alphanumeric nor a dot, and at
/// boundaries between CJK and other scripts ("腾讯科技Co.,Ltd." → 腾讯科技, co, ltd); dots
/// are then dropped inside words ("l.l.c." → "llc").
fn company_tokens(text: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut current = String::new();
    let mut previous_is_cjk: Option<bool> = None;
    for c in text.chars() {
        if c == '.' {
            continue;
        }
        if !c.is_alphanumeric() {
            if !current.is_empty() {
                tokens.push(std::mem::take(&mut current));
            }
            previous_is_cjk = None;
            continue;
        }
        let this_is_cjk = is_cjk(c);
        if previous_is_cjk.is_some_and(|p| p != this_is_cjk) && !current.is_empty() {
            tokens.push(std::mem::take(&mut current));
        }
        current.push(c);
        previous_is_cjk = Some(this_is_cjk);
    }
    if !current.is_empty() {
        tokens.push(current);
    }
    tokens
}

/// Removes `count` characters from the end of the concatenation of `tokens`.
fn remove_trailing_chars(tokens: &mut Vec<String>, mut count: usize) {
    while count > 0 {
        let Some(last) = tokens.last_mut() else {
            return;
        };
        let chars = last.chars().count();
        if chars <= count {
            count -= chars;
            tokens.pop();
        } else {
            let keep = chars - count;
            *last = last.chars().take(keep).collect();
            count = 0;
        }
    }
}

/// Display normalisation of a person name: trim, NFKC (full → half width), invisible and
/// control characters removed, inner whitespace collapsed to one space, and no space between
/// CJK characters ("张 三" → "张三", "阿沛 · 阿旺晋美" → "阿沛·阿旺晋美"). Letters are
/// otherwise never changed: no case folding, no transliteration.
pub fn normalize_person_name(raw: &str) -> String {
    to_fixed_point(normalize_person_name_once(raw), normalize_person_name_once)
}

fn normalize_person_name_once(raw: &str) -> String {
    let visible: String = nfkc(raw).chars().filter(|&c| !is_removable_invisible(c)).collect();
    let mut out = String::with_capacity(visible.len());
    let mut previous_word_end: Option<char> = None;
    for word in visible.split_whitespace() {
        if let (Some(before), Some(after)) = (previous_word_end, word.chars().next())
            && !joins_without_space(before, after)
        {
            out.push(' ');
        }
        out.push_str(word);
        previous_word_end = word.chars().next_back();
    }
    out
}

/// Whether two name parts meet without a space: both CJK, or a middle dot next to CJK.
fn joins_without_space(before: char, after: char) -> bool {
    let is_dot = |c: char| matches!(c, '·' | '・' | '•' | '‧');
    (is_cjk(before) && (is_cjk(after) || is_dot(after))) || (is_dot(before) && is_cjk(after))
}

/// Generic single-line text: control and invisible formatting characters removed, NFC, runs
/// of whitespace (including line breaks and the ideographic space) collapsed to one space,
/// trimmed. NFC rather than NFKC: free text may legitimately contain full-width forms.
pub fn normalize_text(raw: &str) -> String {
    to_fixed_point(normalize_text_once(raw), normalize_text_once)
}

fn normalize_text_once(raw: &str) -> String {
    // Invisible characters go first so that a base letter and a combining mark they separated
    // compose under NFC.
    let visible: String = raw.chars().filter(|&c| !is_removable_invisible(c)).collect();
    let composed: String = visible.nfc().collect();
    composed.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Control characters that are not whitespace (whitespace controls such as tab and newline are
/// collapsed instead), plus invisible formatting characters that only ever cause confusion in
/// stored values: zero-width space, word joiner, BOM, soft hyphen and the bidirectional
/// overrides used in "Trojan Source" tricks. Zero-width joiner and non-joiner stay: they are
/// meaningful in emoji and in several scripts.
fn is_removable_invisible(c: char) -> bool {
    (c.is_control() && !c.is_whitespace())
        || matches!(
            c,
            '\u{00AD}'
                | '\u{200B}'
                | '\u{200E}'
                | '\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{2069}'
                | '\u{FEFF}'
        )
}

/// Han ideographs (unified, extensions, compatibility), kana, bopomofo and the iteration marks.
/// Hangul is deliberately absent: Korean separates words with spaces.
fn is_cjk(c: char) -> bool {
    matches!(
        c,
        '\u{3005}'..='\u{3007}'
            | '\u{3040}'..='\u{30FF}'
            | '\u{3100}'..='\u{312F}'
            | '\u{31A0}'..='\u{31BF}'
            | '\u{31F0}'..='\u{31FF}'
            | '\u{3400}'..='\u{4DBF}'
            | '\u{4E00}'..='\u{9FFF}'
            | '\u{F900}'..='\u{FAFF}'
            | '\u{20000}'..='\u{3134F}'
    ) && c != '\u{30FB}'
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn company_names_that_must_match() {
        let groups: &[&[&str]] = &[
            &["腾讯科技（深圳）有限公司", "腾讯科技有限公司", "腾讯科技(深圳)有限公司", "腾讯科技"],
            &["Acme Co., Ltd.", "ACME", "Acme Inc.", "acme", "ACME CO LTD", "Acme Co.,Ltd", "Acme Limited"],
            &["Acme LLC", "Acme L.L.C.", "Acme Corp.", "Acme Corporation", "Acme Incorporated", "Acme, Inc"],
            &["Acme GmbH", "Acme PLC", "Acme S.A.", "Acme Company", "Acme Co.Ltd."],
            &["华为技术有限公司", "华为技术", "华为技术有限责任公司"],
            // Traditional script keeps its characters (simplified/traditional folding is the
            // matching engine's job) but its legal suffixes are still stripped.
            &["華為技術有限公司", "華為技術", "華為技術有限責任公司", "華為技術集團"],
            &[
                "阿里巴巴（中国）有限公司",
                "阿里巴巴(中国)有限公司",
                "阿里巴巴有限公司",
                "阿里巴巴集团",
                "阿里巴巴集团有限公司",
            ],
            &["中国平安保险（集团）股份有限公司", "中国平安保险股份有限公司", "中国平安保险"],
            &["北京京东世纪贸易有限公司", "北京京东世纪贸易有限责任公司", "北京 京东 世纪 贸易 有限公司"],
            &["ＡＣＭＥ有限公司", "acme 有限公司", "Acme Co., Ltd.（上海）"],
            &["小米科技有限责任公司", "小米科技有限公司", "小米科技公司", "小米科技"],
            &["普华永道中天会计师事务所（特殊普通合伙）", "普华永道中天会计师事务所"],
            &["招商银行股份有限公司深圳分公司", "招商银行股份有限公司深圳"],
            &["Tencent Holdings Limited", "TENCENT HOLDINGS LTD.", "Tencent Holdings"],
            &["腾讯科技Co.,Ltd.", "腾讯科技"],
            &["【测试】上海某某贸易有限公司", "上海某某贸易有限公司", "上海某某贸易"],
            &["三菱商事株式会社（上海）", "三菱商事株式会社"],
        ];
        for group in groups {
            let expected = canonical_company_name(group[0]);
            for name in group.iter() {
                assert_eq!(canonical_company_name(name), expected, "{name:?} vs {:?}", group[0]);
            }
        }
    }

    #[test]
    fn company_names_exact_values() {
        let cases = [
            ("腾讯科技（深圳）有限公司", "腾讯科技"),
            ("北京字节跳动科技有限公司", "北京字节跳动科技"),
            ("字节跳动科技（北京）有限公司", "字节跳动科技"),
            ("Acme Co., Ltd.", "acme"),
            ("A.C.M.E.", "acme"),
            ("Tesco PLC", "tesco"),
            ("Costco Wholesale Corporation", "costcowholesale"),
            ("Zinc Inc.", "zinc"),
            ("NASA", "nasa"),
            ("AT&T Inc.", "att"),
            ("McDonald's Corporation", "mcdonalds"),
            ("有限公司", "有限公司"),
            ("公司", "公司"),
            ("Ltd.", "ltd"),
            ("Co., Ltd.", "co"),
            ("(北京)", "北京"),
            ("（北京）有限公司", "有限公司"),
            ("", ""),
            ("  ！！  ", ""),
            ("集团公司", "集团"),
            ("ＳＯＨＯ中国有限公司", "soho中国"),
            ("中国石油化工股份有限公司", "中国石油化工"),
            ("恒大集团有限公司", "恒大"),
            ("海尔集团公司", "海尔"),
        ];
        for (raw, want) in cases {
            assert_eq!(canonical_company_name(raw), want, "input {raw:?}");
        }
    }

    #[test]
    fn company_names_that_must_differ() {
        let pairs = [
            ("腾讯科技有限公司", "腾讯音乐有限公司"),
            ("Acme Co., Ltd.", "Acme Bank Co., Ltd."),
            ("Tesco", "Tes"),
            ("华为技术有限公司", "华为终端有限公司"),
        ];
        for (a, b) in pairs {
            assert_ne!(canonical_company_name(a), canonical_company_name(b), "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn person_names() {
        let cases = [
            ("张三", "张三"),
            ("  张三  ", "张三"),
            ("张 三", "张三"),
            ("张　三", "张三"),
            ("欧阳 娜娜", "欧阳娜娜"),
            ("张\u{200B}三", "张三"),
            ("阿沛 · 阿旺晋美", "阿沛·阿旺晋美"),
            ("阿沛·阿旺晋美", "阿沛·阿旺晋美"),
            ("Zhang  San", "Zhang San"),
            ("  zhang\tsan ", "zhang san"),
            ("ＺＨＡＮＧ　Ｓａｎ", "ZHANG San"),
            ("McDonald", "McDonald"),
            ("O'Brien", "O'Brien"),
            ("Jean-Luc  Picard", "Jean-Luc Picard"),
            ("张 San", "张 San"),
            ("张三 Zhang San", "张三 Zhang San"),
            ("John · Smith", "John · Smith"),
            ("山田 太郎", "山田太郎"),
            ("김 철수", "김 철수"),
            ("José", "José"),
            ("Jose\u{301}", "José"),
            ("\u{202E}张三", "张三"),
            ("", ""),
            ("   ", ""),
        ];
        for (raw, want) in cases {
            assert_eq!(normalize_person_name(raw), want, "input {raw:?}");
        }
    }

    #[test]
    fn text() {
        let cases = [
            ("  hello   world  ", "hello world"),
            ("line one\nline two\r\n", "line one line two"),
            ("tab\tseparated", "tab separated"),
            ("bell\u{7}character", "bellcharacter"),
            ("nul\u{0}byte", "nulbyte"),
            ("\u{FEFF}bom at start", "bom at start"),
            ("e\u{301}te\u{301}", "été"),
            ("e\u{0}\u{301}", "é"),
            ("全角　空格", "全角 空格"),
            ("ＦＵＬＬ ｗｉｄｔｈ", "ＦＵＬＬ ｗｉｄｔｈ"),
            ("客户 \u{202E}evil", "客户 evil"),
            ("emoji 👩\u{200D}💻 ok", "emoji 👩\u{200D}💻 ok"),
            ("", ""),
            ("\n\t ", ""),
        ];
        for (raw, want) in cases {
            assert_eq!(normalize_text(raw), want, "input {raw:?}");
        }
    }

    proptest! {
        #[test]
        fn company_name_is_idempotent(raw in any::<String>()) {
            let once = canonical_company_name(&raw);
            prop_assert_eq!(canonical_company_name(&once), once.clone());
            prop_assert!(once.chars().all(char::is_alphanumeric));
        }

        #[test]
        fn company_like_name_is_idempotent(
            raw in "[a-zA-Z中国科技有限公司集团分股份责任()（）. ,&-]{0,30}",
        ) {
            let once = canonical_company_name(&raw);
            prop_assert_eq!(canonical_company_name(&once), once);
        }

        #[test]
        fn person_name_is_idempotent(raw in any::<String>()) {
            let once = normalize_person_name(&raw);
            prop_assert_eq!(normalize_person_name(&once), once.clone());
            prop_assert_eq!(once.trim(), once.as_str());
        }

        #[test]
        fn person_like_name_is_idempotent(raw in "[张三李四 ·　a-zA-Zａ-ｚ\t\n-]{0,20}") {
            let once = normalize_person_name(&raw);
            prop_assert_eq!(normalize_person_name(&once), once.clone());
            prop_assert!(!once.contains("  "));
        }

        #[test]
        fn text_is_idempotent(raw in any::<String>()) {
            let once = normalize_text(&raw);
            prop_assert_eq!(normalize_text(&once), once.clone());
            prop_assert!(!once.contains("  "));
            prop_assert!(!once.chars().any(char::is_control));
        }
    }
}
