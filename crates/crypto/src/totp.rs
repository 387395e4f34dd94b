//! TOTP second factor (RFC 6238: HMAC-SHA-1, 6 digits, 30-second steps, one step of clock skew
//! either way), the otpauth:// URI authenticator apps read, and its QR code as SVG.
//!
//! The code arithmetic is `totp-rs`; this module fixes the parameters and reports *which* time
//! step a code matched, because replay protection ("a code works once") is the caller's job:
//! the service remembers the last accepted step per user in the database.

use crate::CryptoError;
use totp_rs::{Algorithm, Builder, Secret, Totp};

/// Digits of a code.
pub const DIGITS: u8 = 6;
/// Seconds per time step.
pub const STEP_SECS: i64 = 30;
/// Steps of clock skew accepted either side of the current one.
pub const SKEW_STEPS: i64 = 1;
/// Bytes of a generated secret (160 bits, as RFC 4226 recommends).
pub const SECRET_BYTES: usize = 20;
/// Issuer shown by authenticator apps.
pub const ISSUER: &str = "Custodian";

fn totp(secret: &[u8], digits: u8, account: &str) -> Totp {
    // `build_noncompliant` skips only the RFC length checks (the RFC 6238 test vectors use a
    // 20-byte secret, like ours, and 8 digits); parameters are fixed here.
    Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(digits)
        .with_skew(0)
        .with_step_duration(STEP_SECS as u64)
        .with_secret(Secret::from(secret.to_vec()))
        .with_issuer(Some(ISSUER))
        .with_account_name(account)
        .build_noncompliant()
}

/// A fresh random secret.
pub fn generate_secret() -> Result<Vec<u8>, CryptoError> {
    Ok(crate::random_bytes::<SECRET_BYTES>()?.to_vec())
}

/// The secret in base32 without padding (what users type into an app by hand).
pub fn secret_to_base32(secret: &[u8]) -> String {
    Secret::from(secret.to_vec()).to_base32()
}

/// Parses a base32 secret (as stored); `None` when it is not base32.
pub fn secret_from_base32(text: &str) -> Option<Vec<u8>> {
    Secret::try_from_base32(text).ok().map(|s| s.as_ref().to_vec())
}

/// The time step a Unix time (seconds) falls in.
pub fn step_at(unix_secs: i64) -> i64 {
    unix_secs.div_euclid(STEP_SECS)
}

/// The code of one time step with `digits` digits (6 for users; 8 for the RFC test vectors).
pub fn code_for_step_with_digits(secret: &[u8], step: i64, digits: u8) -> String {
    let time = u64::try_from(step.max(0)).unwrap_or(0).saturating_mul(STEP_SECS as u64);
    totp(secret, digits, "").generate(time).to_string()
}

/// The 6-digit code of one time step.
pub fn code_for_step(secret: &[u8], step: i64) -> String {
    code_for_step_with_digits(secret, step, DIGITS)
}

/// Checks a code at `unix_secs`: the time step it matches within the skew window, or `None`.
/// Every step of the window is computed and compared in constant time, so the timing does not
/// tell which step matched.
pub fn verify(secret: &[u8], code: &str, unix_secs: i64) -> Option<i64> {
    let code = code.trim();
    if code.len() != usize::from(DIGITS) || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let now = step_at(unix_secs);
    let mut matched = None;
    for step in (now - SKEW_STEPS)..=(now + SKEW_STEPS) {
        let expected = code_for_step(secret, step);
        if constant_time_eq(expected.as_bytes(), code.as_bytes()) && matched.is_none() {
            matched = Some(step);
        }
    }
    matched
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The `otpauth://totp/Custodian:{account}?secret=…&issuer=Custodian` URI.
pub fn otpauth_uri(secret: &[u8], account: &str) -> Result<String, CryptoError> {
    totp(secret, DIGITS, account).to_url().map_err(|_| CryptoError::Malformed)
}

/// A QR code of `text` as a standalone SVG document (black modules on white, quiet zone
/// included), so that a browser can show it without any image library.
pub fn qr_svg(text: &str) -> Result<String, CryptoError> {
    let code = qrcode::QrCode::new(text.as_bytes()).map_err(|_| CryptoError::Malformed)?;
    Ok(code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(200, 200)
        .dark_color(qrcode::render::svg::Color("#000000"))
        .light_color(qrcode::render::svg::Color("#ffffff"))
        .build())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// RFC 6238 appendix B, SHA-1 rows: (Unix time, 8-digit code), secret "12345678901234567890".
    const RFC6238_SHA1: &[(i64, &str)] = &[
        (59, "94287082"),
        (1_111_111_109, "07081804"),
        (1_111_111_111, "14050471"),
        (1_234_567_890, "89005924"),
        (2_000_000_000, "69279037"),
        (20_000_000_000, "65353130"),
    ];
    const RFC_SECRET: &[u8] = b"12345678901234567890";

    #[test]
    fn rfc6238_test_vectors() {
        for (time, code) in RFC6238_SHA1 {
            assert_eq!(code_for_step_with_digits(RFC_SECRET, step_at(*time), 8), *code, "t={time}");
            // Six digits are the low six of the same truncated value.
            assert_eq!(code_for_step(RFC_SECRET, step_at(*time)), code[2..], "t={time}");
            assert_eq!(verify(RFC_SECRET, &code[2..], *time), Some(step_at(*time)));
        }
    }

    proptest! {
        /// Any time within a vector's 30-second step yields the vector's code, and that code is
        /// accepted one step early or late but not two.
        #[test]
        fn rfc_vectors_hold_across_their_step(i in 0usize..6, offset in 0i64..30) {
            let (time, code) = RFC6238_SHA1[i];
            let start = step_at(time) * STEP_SECS;
            prop_assert_eq!(code_for_step_with_digits(RFC_SECRET, step_at(start + offset), 8), code);
            let six = &code[2..];
            prop_assert_eq!(verify(RFC_SECRET, six, start + offset), Some(step_at(time)));
            prop_assert_eq!(verify(RFC_SECRET, six, start + offset + STEP_SECS), Some(step_at(time)));
            prop_assert_eq!(verify(RFC_SECRET, six, start + offset - STEP_SECS), Some(step_at(time)));
            // Two steps away the code (almost surely) no longer matches that step.
            prop_assert_ne!(verify(RFC_SECRET, six, start + offset + 2 * STEP_SECS), Some(step_at(time)));
        }

        #[test]
        fn base32_round_trips(bytes in proptest::collection::vec(any::<u8>(), 16..40)) {
            prop_assert_eq!(secret_from_base32(&secret_to_base32(&bytes)), Some(bytes));
        }
    }

    #[test]
    fn malformed_codes_never_match() {
        for code in ["", "12345", "1234567", "12a456", "+12345", " 94287 "] {
            assert_eq!(verify(RFC_SECRET, code, 59), None, "{code:?}");
        }
    }

    #[test]
    fn uri_and_qr_code() {
        let secret = generate_secret().unwrap();
        assert_eq!(secret.len(), SECRET_BYTES);
        let uri = otpauth_uri(&secret, "alice@example.com").unwrap();
        assert!(uri.starts_with("otpauth://totp/Custodian:alice%40example.com?"), "{uri}");
        assert!(uri.contains(&format!("secret={}", secret_to_base32(&secret))), "{uri}");
        assert!(uri.contains("issuer=Custodian"), "{uri}");
        let svg = qr_svg(&uri).unwrap();
        assert!(svg.contains("<svg") && svg.ends_with("</svg>") && svg.contains("<path"), "{svg}");
    }
}
