//! Website URLs: `https://` added when the scheme is missing, http/https only, a real host
//! required, host lower-cased and IDN hosts converted to punycode (WHATWG URL parsing via the
//! `url` crate, the same rules browsers apply).

use url::{Host, Url};

use super::NormalizeError;

const CODE: &str = "invalid_url";
/// Generous for a website field; longer values are almost certainly pasted junk (tracking
/// links) and unbounded input would let one field dominate a row.
const MAX_RAW_LEN: usize = 2048;

/// URL: trim; add `https://` if there is no scheme; only `http` and `https`; a host is
/// required (a domain with at least one dot, or an IP address); the host is lower-cased (IDN
/// hosts become punycode). Credentials in the URL (`user:pass@`) are rejected, because a CRM
/// field is no place to store a password.
pub fn normalize_url(raw: &str) -> Result<String, NormalizeError> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(NormalizeError::new(CODE, "URL is empty", "网址为空"));
    }
    if trimmed.len() > MAX_RAW_LEN {
        return Err(NormalizeError::new(CODE, "URL is too long", "网址过长"));
    }
    if trimmed.chars().any(char::is_whitespace) {
        return Err(NormalizeError::new(CODE, "URL must not contain spaces", "网址中不能包含空格"));
    }

    let folded = fold_full_width_prefix(trimmed);
    let with_scheme = match explicit_scheme(&folded) {
        Some(scheme) if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https") => folded,
        Some(scheme) => {
            return Err(NormalizeError::new(
                CODE,
                format!("only http and https URLs are accepted, not '{scheme}:'"),
                format!("只接受 http 或 https 网址，不接受“{scheme}:”"),
            ));
        }
        None if folded.starts_with("//") => format!("https:{folded}"),
        None => format!("https://{folded}"),
    };

    let url =
        Url::parse(&with_scheme).map_err(|_| NormalizeError::new(CODE, "not a valid web address", "不是有效的网址"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(NormalizeError::new(
            CODE,
            "URL must not contain a user name or password",
            "网址中不能包含用户名或密码",
        ));
    }
    match url.host() {
        Some(Host::Domain(domain)) if is_plausible_domain(domain) => {}
        // The WHATWG parser reads "123" or "0x7f.1" as IPv4 addresses; only a dotted quad as
        // typed is taken to mean one.
        Some(Host::Ipv4(ip)) if with_scheme.contains(&ip.to_string()) => {}
        Some(Host::Ipv6(_)) => {}
        _ => {
            return Err(NormalizeError::new(
                CODE,
                "URL needs a host name such as example.com",
                "网址需要包含域名，例如 example.com",
            ));
        }
    }
    Ok(url.into())
}

/// The scheme of `s` if it starts with `scheme:` in the RFC 3986 sense. `example.com:8080`
/// and `localhost:3000/x` are host-and-port, not schemes, so a colon followed by a digit does
/// not count.
fn explicit_scheme(s: &str) -> Option<&str> {
    let colon = s.find(':')?;
    let scheme = &s[..colon];
    let mut chars = scheme.chars();
    let first_is_letter = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    let after = &s[colon + 1..];
    let port_follows = after.starts_with(|c: char| c.is_ascii_digit());
    (first_is_letter && rest_ok && !port_follows).then_some(scheme)
}

/// Folds full-width ASCII (`ｈｔｔｐｓ：／／ＷＷＷ．…`) and the ideographic full stop to ASCII in
/// the scheme and authority only. The path and query are left alone: there full-width
/// characters may be meaningful, and the URL parser percent-encodes them.
fn fold_full_width_prefix(s: &str) -> String {
    let original: Vec<char> = s.chars().collect();
    let folded: Vec<char> = original.iter().map(|&c| fold_full_width_char(c)).collect();
    let is_delimiter = |c: &char| matches!(c, '/' | '?' | '#' | '\\');
    let first_delimiter = folded.iter().position(is_delimiter).unwrap_or(folded.len());
    // Skip the "//" of "scheme://" or of a scheme-relative "//host".
    let starts_authority = folded.get(first_delimiter) == Some(&'/')
        && folded.get(first_delimiter + 1) == Some(&'/')
        && (first_delimiter == 0 || folded.get(first_delimiter.wrapping_sub(1)) == Some(&':'));
    let authority_end = if starts_authority {
        let from = first_delimiter + 2;
        folded[from..].iter().position(is_delimiter).map_or(folded.len(), |i| from + i)
    } else {
        first_delimiter
    };
    // The delimiter that ends the authority is folded too ("ｑｑ．ｃｏｍ／" must not leave a
    // full-width solidus inside the host).
    let authority_end = (authority_end + 1).min(folded.len());
    folded[..authority_end].iter().chain(&original[authority_end..]).collect()
}

fn fold_full_width_char(c: char) -> char {
    match c {
        '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
        '\u{3002}' | '\u{FF61}' => '.',
        _ => c,
    }
}

/// A public web host has at least two labels, each a DNS label (letters, digits, hyphens not
/// at either end; `_` tolerated as some real hosts use it), and a top-level label that is not
/// numeric. This is what turns "n/a" (otherwise the valid URL `https://n/a`) into an error.
fn is_plausible_domain(domain: &str) -> bool {
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    let labels: Vec<&str> = domain.split('.').collect();
    let label_ok = |label: &&str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    };
    labels.len() >= 2
        && labels.iter().all(label_ok)
        && labels.last().is_some_and(|tld| tld.bytes().any(|b| b.is_ascii_alphabetic()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn normalises_table() {
        let cases = [
            ("example.com", "https://example.com/"),
            ("  www.example.com  ", "https://www.example.com/"),
            ("WWW.Example.COM", "https://www.example.com/"),
            ("http://example.com", "http://example.com/"),
            ("HTTPS://EXAMPLE.COM/Path/To?Q=Search#Frag", "https://example.com/Path/To?Q=Search#Frag"),
            ("https://example.com:443/", "https://example.com/"),
            ("example.com:8080/admin", "https://example.com:8080/admin"),
            ("//cdn.example.com/x.js", "https://cdn.example.com/x.js"),
            ("www.baidu.com/s?wd=客户", "https://www.baidu.com/s?wd=%E5%AE%A2%E6%88%B7"),
            ("ｗｗｗ．ｔｅｎｃｅｎｔ．ｃｏｍ", "https://www.tencent.com/"),
            ("ｈｔｔｐｓ：／／ｗｗｗ．ｑｑ．ｃｏｍ／", "https://www.qq.com/"),
            ("www。example。com", "https://www.example.com/"),
            ("中国政府.政务", "https://xn--fiqs8sirgfmh.xn--zfr164b/"),
            ("http://例子.测试/", "http://xn--fsqu00a.xn--0zwm56d/"),
            ("HTTP://Bücher.de", "http://xn--bcher-kva.de/"),
            ("https://192.168.1.10:8443/crm", "https://192.168.1.10:8443/crm"),
            ("https://[2001:DB8::1]/", "https://[2001:db8::1]/"),
            ("example.com/路径", "https://example.com/%E8%B7%AF%E5%BE%84"),
            ("example.com.", "https://example.com./"),
        ];
        for (raw, want) in cases {
            assert_eq!(normalize_url(raw).as_deref(), Ok(want), "input {raw:?}");
        }
    }

    #[test]
    fn rejects_table() {
        let cases = [
            "",
            "   ",
            "n/a",
            "无",
            "localhost",
            "http://localhost:8080/",
            "ftp://example.com/file",
            "mailto:sales@example.com",
            "javascript:alert(1)",
            "data:text/html,hi",
            "file:///etc/passwd",
            "https://",
            "https:///path",
            "http://exa mple.com",
            "www.example .com",
            "https://user:secret@example.com/",
            "https://admin@example.com/",
            "https://example..com/",
            "https://-bad-.com/",
            "http://1234/",
            "123",
            "0x7f.1",
        ];
        for raw in cases {
            let got = normalize_url(raw);
            assert_eq!(got.as_ref().map_err(|e| e.code), Err("invalid_url"), "input {raw:?}: {got:?}");
        }
    }

    proptest! {
        #[test]
        fn never_panics_and_is_idempotent(raw in any::<String>()) {
            if let Ok(url) = normalize_url(&raw) {
                prop_assert_eq!(normalize_url(&url), Ok(url.clone()));
            }
        }

        #[test]
        fn url_like_input_is_idempotent(
            raw in "(https?://|//|ＨＴＴＰ：／／)?[a-zA-Z0-9ａ-ｚ中文.。-]{1,20}(:[0-9]{1,5})?(/[a-zA-Z0-9%?#=&中/.]{0,20})?",
        ) {
            if let Ok(url) = normalize_url(&raw) {
                prop_assert!(url.starts_with("http://") || url.starts_with("https://"));
                prop_assert_eq!(normalize_url(&url), Ok(url.clone()));
            }
        }
    }
}
