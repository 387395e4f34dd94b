//! Email addresses: the `local@domain` shape people actually type into a CRM.
//!
//! Deliberately narrower than RFC 5322: quoted local parts (`"john doe"@x`), comments and
//! IP-literal domains (`x@[10.0.0.1]`) are rejected, as no customer address takes that shape
//! and each is a way to smuggle odd bytes into a strong matching key. Non-ASCII letters in the
//! local part are allowed (RFC 6531, e.g. `张三@例子.中国`); the domain is stored as punycode.

use super::{NormalizeError, nfkc, to_fixed_point};

const CODE: &str = "invalid_email";
/// RFC 5321 limits: 64 octets of local part, 254 octets of path.
const MAX_LOCAL_LEN: usize = 64;
const MAX_ADDRESS_LEN: usize = 254;
/// Upper bound on raw input before any Unicode work (generous: NFKC can shrink text).
const MAX_RAW_LEN: usize = 1024;
/// RFC 5322 `atext` punctuation allowed in a dot-atom local part.
const ATEXT_PUNCTUATION: &str = "!#$%&'*+-/=?^_`{|}~";

/// Email: trimmed, NFKC-folded (full-width `＠` and letters), local part and domain
/// lower-cased (CRMs treat addresses case-insensitively), IDN domains converted to punycode,
/// syntax checked. Returns the normalised address.
pub fn normalize_email(raw: &str) -> Result<String, NormalizeError> {
    if raw.len() > MAX_RAW_LEN {
        return Err(too_long());
    }
    let text = nfkc(raw.trim());
    let text = text.trim();
    if text.is_empty() {
        return Err(invalid("email address is empty", "邮箱地址为空"));
    }
    let Some((local, domain)) = text.rsplit_once('@') else {
        return Err(invalid("email address must contain '@'", "邮箱地址中缺少“@”"));
    };
    if local.contains('@') {
        return Err(invalid("email address must contain exactly one '@'", "邮箱地址中只能有一个“@”"));
    }

    let local = normalize_local_part(local)?;
    let domain = normalize_domain(domain)?;
    let address = format!("{local}@{domain}");
    if address.len() > MAX_ADDRESS_LEN {
        return Err(too_long());
    }
    Ok(address)
}

fn normalize_local_part(local: &str) -> Result<String, NormalizeError> {
    // Lower-casing can, for rare characters, produce text that NFKC would change again;
    // iterating keeps the result stable (idempotent).
    let lowered = to_fixed_point(nfkc(&local.to_lowercase()), |s| nfkc(&s.to_lowercase()));
    if lowered.is_empty() {
        return Err(invalid("the part before '@' is empty", "“@”前面的部分为空"));
    }
    if lowered.len() > MAX_LOCAL_LEN {
        return Err(invalid("the part before '@' is longer than 64 bytes", "“@”前面的部分超过64字节"));
    }
    if lowered.starts_with('.') || lowered.ends_with('.') || lowered.contains("..") {
        return Err(invalid(
            "the part before '@' must not start or end with a dot or contain two dots in a row",
            "“@”前面的部分不能以点开头或结尾，也不能有连续的点",
        ));
    }
    if let Some(bad) = lowered.chars().find(|&c| !is_local_char(c)) {
        return Err(invalid(
            format!("the part before '@' contains the invalid character '{bad}'"),
            format!("“@”前面的部分包含无效字符“{bad}”"),
        ));
    }
    Ok(lowered)
}

/// Dot-atom characters: ASCII letters, digits and `atext` punctuation, plus non-ASCII letters
/// and digits (RFC 6531 internationalised local parts; the Unicode `Alphabetic` property also
/// covers the vowel signs of Indic scripts).
fn is_local_char(c: char) -> bool {
    if c.is_ascii() {
        c.is_ascii_alphanumeric() || c == '.' || ATEXT_PUNCTUATION.contains(c)
    } else {
        c.is_alphanumeric()
    }
}

fn normalize_domain(domain: &str) -> Result<String, NormalizeError> {
    if domain.is_empty() {
        return Err(invalid("the domain after '@' is empty", "“@”后面的域名为空"));
    }
    if domain.starts_with('[') {
        return Err(invalid("IP-address domains are not accepted", "不接受以IP地址作为邮箱域名"));
    }
    // UTS 46 processing: lower-cases, maps "。" to ".", applies the IDNA mapping (which covers
    // NFKC-style folding) and punycode-encodes; STD3 rules reject anything but letters,
    // digits and hyphens in labels; DNS length limits are verified.
    let ascii = idna::domain_to_ascii_strict(domain)
        .map_err(|_| invalid("the domain after '@' is not a valid domain name", "“@”后面的域名无效"))?;
    let labels: Vec<&str> = ascii.split('.').collect();
    if labels.len() < 2 || labels.iter().any(|label| label.is_empty()) {
        return Err(invalid(
            "the domain after '@' needs a dot, as in example.com",
            "“@”后面的域名需要包含点，例如 example.com",
        ));
    }
    let tld_has_letter = labels.last().is_some_and(|tld| tld.bytes().any(|b| b.is_ascii_alphabetic()));
    if !tld_has_letter {
        return Err(invalid(
            "the domain after '@' must end in a top-level domain such as .com or .cn",
            "“@”后面的域名必须以顶级域名结尾，例如 .com 或 .cn",
        ));
    }
    Ok(ascii)
}

fn invalid(en: impl Into<String>, zh: impl Into<String>) -> NormalizeError {
    NormalizeError::new(CODE, en, zh)
}

fn too_long() -> NormalizeError {
    invalid("email address is too long", "邮箱地址过长")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn normalises_table() {
        let cases = [
            ("zhangsan@example.com", "zhangsan@example.com"),
            ("  ZhangSan@Example.COM  ", "zhangsan@example.com"),
            ("ZHANG.SAN+crm@Example.com", "zhang.san+crm@example.com"),
            ("zhangsan＠example.com", "zhangsan@example.com"),
            ("ｚｈａｎｇｓａｎ＠ｅｘａｍｐｌｅ．ｃｏｍ", "zhangsan@example.com"),
            ("zhangsan@example。com", "zhangsan@example.com"),
            ("\u{3000}zhangsan@qq.com\u{3000}", "zhangsan@qq.com"),
            ("12345678@QQ.COM", "12345678@qq.com"),
            ("li_si-2024@163.com", "li_si-2024@163.com"),
            ("wang.wu@mail.tsinghua.edu.cn", "wang.wu@mail.tsinghua.edu.cn"),
            ("o'brien@example.ie", "o'brien@example.ie"),
            ("admin@例子.中国", "admin@xn--fsqu00a.xn--fiqs8s"),
            ("admin@例子。中国", "admin@xn--fsqu00a.xn--fiqs8s"),
            ("张三@例子.中国", "张三@xn--fsqu00a.xn--fiqs8s"),
            ("info@Bücher.DE", "info@xn--bcher-kva.de"),
            ("info@xn--bcher-kva.de", "info@xn--bcher-kva.de"),
            ("José@example.com", "josé@example.com"),
            ("a@b.co", "a@b.co"),
        ];
        for (raw, want) in cases {
            assert_eq!(normalize_email(raw).as_deref(), Ok(want), "input {raw:?}");
        }
    }

    #[test]
    fn rejects_table() {
        let cases = [
            "",
            "   ",
            "zhangsan",
            "zhangsan.example.com",
            "@example.com",
            "zhangsan@",
            "zhang@san@example.com",
            "zhang san@example.com",
            "zhangsan@exa mple.com",
            ".zhangsan@example.com",
            "zhangsan.@example.com",
            "zhang..san@example.com",
            "\"zhang san\"@example.com",
            "zhangsan@[10.0.0.1]",
            "zhangsan@localhost",
            "zhangsan@example",
            "zhangsan@example..com",
            "zhangsan@.example.com",
            "zhangsan@example.com.",
            "zhangsan@-example.com",
            "zhangsan@exa_mple.com",
            "zhangsan@1.2.3.4",
            "zhangsan(comment)@example.com",
            "<zhangsan@example.com>",
            "张三 <zhangsan@example.com>",
            "zhangsan@example.com,lisi@example.com",
            "zhangsan@example.com;",
        ];
        for raw in cases {
            let got = normalize_email(raw);
            assert_eq!(got.as_ref().map_err(|e| e.code), Err("invalid_email"), "input {raw:?}: {got:?}");
        }
        let long_local = format!("{}@example.com", "a".repeat(65));
        assert!(normalize_email(&long_local).is_err());
        let long_domain = format!("a@{}.com", "b".repeat(64));
        assert!(normalize_email(&long_domain).is_err());
        let long_address = format!("a@{}com", "abcdefghi.".repeat(26));
        assert!(normalize_email(&long_address).is_err());
    }

    proptest! {
        #[test]
        fn never_panics_and_is_idempotent(raw in any::<String>()) {
            if let Ok(email) = normalize_email(&raw) {
                prop_assert_eq!(normalize_email(&email), Ok(email.clone()));
            }
        }

        #[test]
        fn email_like_input_is_idempotent(
            raw in "[ a-zA-Z0-9._+ａ-ｚＡ-Ｚ张三İßẞ-]{1,12}[@＠][a-zA-Z0-9ａ-ｚ例子中国-]{1,10}[.。．][a-zA-Z中国]{2,4} ?",
        ) {
            if let Ok(email) = normalize_email(&raw) {
                prop_assert!(email.rsplit_once('@').is_some_and(|(_, domain)| domain.is_ascii()));
                prop_assert_eq!(normalize_email(&email), Ok(email.clone()));
            }
        }
    }
}
