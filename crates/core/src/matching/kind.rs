//! What a column holds, which decides how it is normalised, blocked and compared.

use std::fmt;
use std::str::FromStr;

/// The kind of an attribute. Each kind has its own normalisation, blocking keys and
/// comparator with a fixed, ordered set of agreement levels (see [`FieldKind::levels`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FieldKind {
    /// A whole personal name in any script and order: 张伟, 張偉, Zhang Wei, Wei Zhang, Emily Carter.
    PersonName,
    /// A given (first) name only.
    GivenName,
    /// A family name only (surname reading table applies to Han surnames).
    Surname,
    /// A company name: legal suffixes, bracketed regions and punctuation do not count.
    CompanyName,
    /// A telephone number (E.164 when it can be parsed, digits otherwise).
    Phone,
    /// An e-mail address.
    Email,
    /// A calendar date in any common notation (1985-03-07, 1985/3/7, 19850307, 1985年3月7日).
    Date,
    /// A postal address (free text with numbers).
    Address,
    /// A postal code.
    Postcode,
    /// A city, district or other place name (杭州市 = 杭州 = Hangzhou).
    City,
    /// An identifier such as a resident ID, USCC, passport or social-security number.
    IdNumber,
    /// Any other text; numbers in it are compared as numbers.
    Text,
    /// Compared for exact equality only (after trimming).
    Exact,
}

impl FieldKind {
    pub const ALL: [FieldKind; 13] = [
        FieldKind::PersonName,
        FieldKind::GivenName,
        FieldKind::Surname,
        FieldKind::CompanyName,
        FieldKind::Phone,
        FieldKind::Email,
        FieldKind::Date,
        FieldKind::Address,
        FieldKind::Postcode,
        FieldKind::City,
        FieldKind::IdNumber,
        FieldKind::Text,
        FieldKind::Exact,
    ];

    /// The name used on the command line and in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            FieldKind::PersonName => "person_name",
            FieldKind::GivenName => "given_name",
            FieldKind::Surname => "surname",
            FieldKind::CompanyName => "company_name",
            FieldKind::Phone => "phone",
            FieldKind::Email => "email",
            FieldKind::Date => "date",
            FieldKind::Address => "address",
            FieldKind::Postcode => "postcode",
            FieldKind::City => "city",
            FieldKind::IdNumber => "id_number",
            FieldKind::Text => "text",
            FieldKind::Exact => "exact",
        }
    }

    /// Names of the agreement levels of this kind's comparator, from level 0 (disagree) up to
    /// the highest level (exact agreement after normalisation).
    pub fn levels(self) -> &'static [&'static str] {
        match self {
            FieldKind::PersonName | FieldKind::GivenName | FieldKind::Surname => {
                &["different", "shared_word", "similar", "close", "same_sound", "exact"]
            }
            FieldKind::CompanyName => &["different", "similar", "close", "exact"],
            FieldKind::Phone => &["different", "partial", "one_typo", "exact"],
            FieldKind::Email => &["different", "similar", "same_user", "one_typo", "exact"],
            FieldKind::Date => &["different", "within_a_year", "one_typo", "day_month_swapped", "exact"],
            FieldKind::Address | FieldKind::Text => &["different", "similar", "close", "exact"],
            FieldKind::Postcode => &["different", "same_area", "one_typo", "exact"],
            FieldKind::City => &["different", "similar", "same_sound", "exact"],
            FieldKind::IdNumber => &["different", "two_typos", "one_typo", "exact"],
            FieldKind::Exact => &["different", "exact"],
        }
    }

    /// Number of agreement levels.
    pub fn level_count(self) -> usize {
        self.levels().len()
    }

    /// The highest level: exact agreement after normalisation.
    pub fn exact_level(self) -> u8 {
        (self.level_count() - 1) as u8
    }
}

impl fmt::Display for FieldKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown kind name; the message lists the valid ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownKind(pub String);

impl fmt::Display for UnknownKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let valid: Vec<&str> = FieldKind::ALL.iter().map(|k| k.as_str()).collect();
        write!(f, "unknown kind {:?}; valid kinds: {}", self.0, valid.join(", "))
    }
}

impl std::error::Error for UnknownKind {}

impl FromStr for FieldKind {
    type Err = UnknownKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim().to_ascii_lowercase().replace('-', "_");
        FieldKind::ALL.iter().copied().find(|k| k.as_str() == wanted).ok_or_else(|| UnknownKind(s.to_owned()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip() {
        for kind in FieldKind::ALL {
            assert_eq!(kind.as_str().parse::<FieldKind>(), Ok(kind));
            assert!(kind.level_count() >= 2);
        }
        assert_eq!("Person-Name".parse::<FieldKind>(), Ok(FieldKind::PersonName));
        let err = "nickname".parse::<FieldKind>().unwrap_err();
        assert!(err.to_string().contains("person_name"), "{err}");
    }
}
