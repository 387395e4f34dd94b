//! Full-text search tokens. Both stores index the same pre-tokenised text (FTS5 on SQLite,
//! `tsvector` with the `simple` configuration on PostgreSQL), so search behaves identically on
//! both. Chinese has no spaces, so runs of CJK characters are indexed as unigrams and bigrams:
//! a two-character name such as 张三 is one bigram token and is found exactly, which trigram
//! indexes cannot do. Sensitive fields are never indexed.

use unicode_normalization::UnicodeNormalization;

/// Longest token kept; longer alphanumeric runs are cut.
const MAX_TOKEN_CHARS: usize = 64;
/// Most query tokens honoured.
const MAX_QUERY_TOKENS: usize = 16;

/// One token of a search query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryToken {
    /// Only letters, digits and CJK characters: safe to embed in an FTS expression.
    pub text: String,
    /// Match tokens that start with `text` (used for Latin words and numbers).
    pub prefix: bool,
}

pub fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x30FF   // Hiragana, Katakana
        | 0x3400..=0x4DBF // CJK Extension A
        | 0x4E00..=0x9FFF // CJK Unified Ideographs
        | 0xAC00..=0xD7AF // Hangul syllables
        | 0xF900..=0xFAFF // CJK compatibility ideographs
        | 0x20000..=0x3134F) // Extensions B-G
}

enum Run {
    Cjk(Vec<char>),
    Word(String),
}

fn runs(text: &str) -> Vec<Run> {
    let mut out = Vec::new();
    let mut cjk: Vec<char> = Vec::new();
    let mut word = String::new();
    let flush_word = |word: &mut String, out: &mut Vec<Run>| {
        if !word.is_empty() {
            let truncated: String = word.chars().take(MAX_TOKEN_CHARS).collect();
            out.push(Run::Word(truncated));
            word.clear();
        }
    };
    for c in text.nfkc().flat_map(char::to_lowercase) {
        if is_cjk(c) {
            flush_word(&mut word, &mut out);
            cjk.push(c);
        } else {
            if !cjk.is_empty() {
                out.push(Run::Cjk(std::mem::take(&mut cjk)));
            }
            if c.is_alphanumeric() {
                word.push(c);
            } else {
                flush_word(&mut word, &mut out);
            }
        }
    }
    flush_word(&mut word, &mut out);
    if !cjk.is_empty() {
        out.push(Run::Cjk(cjk));
    }
    out
}

/// The space-separated token text indexed for a record, built from its searchable values.
pub fn index_text<'a>(values: impl IntoIterator<Item = &'a str>) -> String {
    let mut tokens: Vec<String> = Vec::new();
    for value in values {
        for run in runs(value) {
            match run {
                Run::Word(w) => tokens.push(w),
                Run::Cjk(chars) => {
                    for c in &chars {
                        tokens.push(c.to_string());
                    }
                    for pair in chars.windows(2) {
                        tokens.push(pair.iter().collect());
                    }
                }
            }
        }
    }
    tokens.join(" ")
}

/// Tokens of a search query; every token must match (AND). Empty when the query has no
/// searchable characters.
pub fn query_tokens(query: &str) -> Vec<QueryToken> {
    let mut out: Vec<QueryToken> = Vec::new();
    for run in runs(query) {
        match run {
            Run::Word(w) => out.push(QueryToken { text: w, prefix: true }),
            Run::Cjk(chars) if chars.len() == 1 => out.push(QueryToken { text: chars[0].to_string(), prefix: false }),
            Run::Cjk(chars) => {
                for pair in chars.windows(2) {
                    out.push(QueryToken { text: pair.iter().collect(), prefix: false });
                }
            }
        }
    }
    out.dedup();
    out.truncate(MAX_QUERY_TOKENS);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_character_chinese_names_become_one_bigram() {
        assert_eq!(index_text(["张三"]), "张 三 张三");
        let q = query_tokens("张三");
        assert_eq!(q, vec![QueryToken { text: "张三".into(), prefix: false }]);
    }

    #[test]
    fn mixed_text_is_split_and_lowercased() {
        assert_eq!(index_text(["ACME-云图 Co.,Ltd"]), "acme 云 图 云图 co ltd");
        let q = query_tokens("Ａｃｍｅ 云图科技");
        let texts: Vec<_> = q.iter().map(|t| t.text.as_str()).collect();
        assert_eq!(texts, vec!["acme", "云图", "图科", "科技"]);
    }

    #[test]
    fn query_tokens_only_contain_safe_characters() {
        for q in ["\" OR 1=1 --", "'; DROP TABLE records; --", "NEAR(a b)", "a*b:c^d"] {
            for t in query_tokens(q) {
                assert!(t.text.chars().all(|c| c.is_alphanumeric()), "{t:?}");
            }
        }
    }
}
