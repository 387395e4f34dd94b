//! Validation and normalisation of field values against the schema. The service calls
//! `validate_record` on every write path (API, import, merge, bulk, CLI); the rule engine of the
//! accuracy work plugs in through `Rule` and `check_rules`.

use crate::error::FieldError;
use crate::normalize;
use crate::schema::{FieldDef, FieldType, ObjectDef, Rule};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use time::Date;
use time::format_description::well_known::Rfc3339;

/// Longest single-line text value, in characters.
pub const MAX_TEXT_CHARS: usize = 1_000;
/// Longest long-text value, in characters.
pub const MAX_LONG_TEXT_CHARS: usize = 100_000;
/// Most entries in a multi-enum value.
pub const MAX_MULTI_VALUES: usize = 100;

/// Context of a validation: the things a pure function cannot know by itself.
#[derive(Debug, Clone)]
pub struct ValidationContext {
    pub today: Date,
    pub default_region: String,
    /// Accept a USCC whose checksum fails (a data steward's audited override); the format
    /// and charset are still checked.
    pub accept_uscc_checksum: bool,
    /// Accept changes of locked fields (`Rule::LockedWhen`): a data steward's or admin's
    /// override with a reason, audited.
    pub accept_locked_changes: bool,
}

/// One `locked` error per field `locked_fields_changed` names.
pub fn locked_change_errors(
    object: &ObjectDef,
    existing: &Map<String, Value>,
    after: &Map<String, Value>,
) -> Vec<FieldError> {
    locked_fields_changed(object, existing, after)
        .iter()
        .filter_map(|name| object.field(name))
        .map(|def| {
            FieldError::new(
                &def.name,
                "locked",
                format!(
                    "{} is locked on this record; a data steward or admin may change it with a reason.",
                    def.label_en
                ),
                format!("该记录的{}已锁定；如需修改，须由数据管理员或系统管理员填写原因。", def.label_zh),
            )
        })
        .collect()
}

/// The fields whose value differs between `existing` and `after` while a `LockedWhen` rule of
/// theirs is in force in `existing` (the stored state decides whether a field is locked).
pub fn locked_fields_changed(
    object: &ObjectDef,
    existing: &Map<String, Value>,
    after: &Map<String, Value>,
) -> Vec<String> {
    let mut out = Vec::new();
    for def in &object.fields {
        let locked = def.rules.iter().any(|rule| match rule {
            Rule::LockedWhen { field, values } => {
                existing.get(field).and_then(Value::as_str).is_some_and(|v| values.iter().any(|x| x == v))
            }
            _ => false,
        });
        if locked && existing.get(&def.name) != after.get(&def.name) {
            out.push(def.name.clone());
        }
    }
    out
}

/// Validates `changes` against `object` and returns the complete normalised field map of the
/// record after the change. For an update, `existing` holds the current (normalised, decrypted)
/// fields; a `null` in `changes` clears a field. Unknown fields, wrong types, invalid values,
/// missing required fields and rule violations are all reported at once.
pub fn validate_record(
    object: &ObjectDef,
    existing: Option<&Map<String, Value>>,
    changes: &Map<String, Value>,
    ctx: &ValidationContext,
) -> Result<Map<String, Value>, Vec<FieldError>> {
    let mut errors = Vec::new();
    let mut result = existing.cloned().unwrap_or_default();
    for (name, raw) in changes {
        let Some(def) = object.field(name) else {
            errors.push(FieldError::new(
                name,
                "unknown_field",
                format!("Object {} has no field {name}.", object.name),
                format!("对象 {} 没有字段 {name}。", object.name),
            ));
            continue;
        };
        if raw.is_null() {
            result.remove(name);
            continue;
        }
        match normalize_value(def, raw, ctx) {
            Ok(Some(v)) => {
                result.insert(name.clone(), v);
            }
            Ok(None) => {
                result.remove(name);
            }
            Err(e) => errors.push(e),
        }
    }
    // Drop values of fields that no longer exist in the schema only if they were in the change;
    // stored values of other fields stay untouched.
    for def in &object.fields {
        let present = result.get(&def.name).is_some_and(|v| !v.is_null());
        if def.required && !present {
            errors.push(FieldError::new(
                &def.name,
                "required",
                format!("{} is required.", def.label_en),
                format!("{}为必填项。", def.label_zh),
            ));
        }
        if present && let Some(value) = result.get(&def.name) {
            check_rules(def, value, &result, &mut errors);
        } else {
            check_required_when(def, &result, &mut errors);
        }
    }
    if let Some(existing) = existing
        && !ctx.accept_locked_changes
    {
        errors.extend(locked_change_errors(object, existing, &result));
    }
    if errors.is_empty() {
        Ok(result)
    } else {
        errors.dedup();
        Err(errors)
    }
}

fn check_required_when(def: &FieldDef, record: &Map<String, Value>, errors: &mut Vec<FieldError>) {
    for rule in &def.rules {
        if let Rule::RequiredWhen { field, values } = rule {
            let other = record.get(field).and_then(Value::as_str);
            if other.is_some_and(|o| values.iter().any(|v| v == o)) {
                errors.push(FieldError::new(
                    &def.name,
                    "required",
                    format!("{} is required when {field} is {}.", def.label_en, other.unwrap_or_default()),
                    format!("当 {field} 为 {} 时，{}为必填项。", other.unwrap_or_default(), def.label_zh),
                ));
            }
        }
    }
}

/// Runs the declarative rules of one field on its normalised value.
pub fn check_rules(def: &FieldDef, value: &Value, _record: &Map<String, Value>, errors: &mut Vec<FieldError>) {
    for rule in &def.rules {
        match rule {
            Rule::Regex { pattern } => {
                let Some(text) = value.as_str() else { continue };
                match compile_regex(pattern) {
                    Ok(re) if !re.is_match(text) => errors.push(FieldError::new(
                        &def.name,
                        "pattern_mismatch",
                        format!("{} does not have the expected format.", def.label_en),
                        format!("{}格式不正确。", def.label_zh),
                    )),
                    Ok(_) => {}
                    Err(_) => errors.push(FieldError::new(
                        &def.name,
                        "invalid_rule",
                        "The field's pattern rule cannot be compiled.",
                        "字段的正则规则无法编译。",
                    )),
                }
            }
            Rule::Range { min, max } => {
                let Some(n) = numeric_value(def.field_type, value) else {
                    continue;
                };
                if min.is_some_and(|m| n < m) || max.is_some_and(|m| n > m) {
                    errors.push(FieldError::new(
                        &def.name,
                        "out_of_range",
                        format!("{} is out of range.", def.label_en),
                        format!("{}超出允许范围。", def.label_zh),
                    ));
                }
            }
            Rule::Length { min, max } => {
                let Some(text) = value.as_str() else { continue };
                let n = text.chars().count();
                if min.is_some_and(|m| n < m) || max.is_some_and(|m| n > m) {
                    errors.push(FieldError::new(
                        &def.name,
                        "length",
                        format!("{} has the wrong length.", def.label_en),
                        format!("{}长度不符合要求。", def.label_zh),
                    ));
                }
            }
            Rule::AllowedValues { values } => {
                let ok = match value {
                    Value::String(s) => values.contains(s),
                    Value::Array(items) => {
                        items.iter().all(|v| v.as_str().is_some_and(|s| values.iter().any(|a| a == s)))
                    }
                    _ => true,
                };
                if !ok {
                    errors.push(FieldError::new(
                        &def.name,
                        "not_allowed",
                        format!("{} must be one of: {}.", def.label_en, values.join(", ")),
                        format!("{}必须是以下之一：{}。", def.label_zh, values.join("、")),
                    ));
                }
            }
            Rule::RequiredWhen { .. } | Rule::LockedWhen { .. } => {}
        }
    }
}

/// The number a numeric value stands for, for range rules and comparisons.
pub fn numeric_value(field_type: FieldType, value: &Value) -> Option<f64> {
    match field_type {
        FieldType::Integer => value.as_i64().map(|n| n as f64),
        FieldType::Decimal => value.as_str().and_then(|s| s.parse().ok()),
        FieldType::Money => value.get("amount").and_then(Value::as_str).and_then(|s| s.parse().ok()),
        _ => None,
    }
}

/// Compiles a rule's regular expression with bounded size, caching compiled expressions.
pub fn compile_regex(pattern: &str) -> Result<regex::Regex, String> {
    static CACHE: OnceLock<Mutex<HashMap<String, regex::Regex>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    if let Ok(guard) = cache.lock()
        && let Some(re) = guard.get(pattern)
    {
        return Ok(re.clone());
    }
    if pattern.len() > 1_000 {
        return Err("pattern longer than 1000 characters".into());
    }
    let re = regex::RegexBuilder::new(pattern)
        .size_limit(1 << 20)
        .dfa_size_limit(1 << 20)
        .build()
        .map_err(|e| e.to_string())?;
    if let Ok(mut guard) = cache.lock() {
        if guard.len() > 1_000 {
            guard.clear();
        }
        guard.insert(pattern.to_owned(), re.clone());
    }
    Ok(re)
}

fn type_error(def: &FieldDef, expected_en: &str, expected_zh: &str) -> FieldError {
    FieldError::new(
        &def.name,
        "invalid_type",
        format!("{} must be {expected_en}.", def.label_en),
        format!("{}必须是{expected_zh}。", def.label_zh),
    )
}

fn from_normalize_error(def: &FieldDef, e: normalize::NormalizeError) -> FieldError {
    FieldError::new(&def.name, e.code, e.message_en, e.message_zh)
}

fn expect_str<'a>(def: &FieldDef, raw: &'a Value) -> Result<&'a str, FieldError> {
    raw.as_str().ok_or_else(|| type_error(def, "a string", "字符串"))
}

fn text_value(def: &FieldDef, raw: &Value, max: usize, long: bool) -> Result<Option<Value>, FieldError> {
    let s = expect_str(def, raw)?;
    let normalised = if long {
        normalize_long_text(s)
    } else if def.person_name {
        normalize::normalize_person_name(s)
    } else {
        normalize::normalize_text(s)
    };
    if normalised.chars().count() > max {
        return Err(FieldError::new(
            &def.name,
            "too_long",
            format!("{} is longer than {max} characters.", def.label_en),
            format!("{}超过 {max} 个字符。", def.label_zh),
        ));
    }
    Ok(if normalised.is_empty() { None } else { Some(Value::String(normalised)) })
}

fn normalize_long_text(s: &str) -> String {
    s.chars().filter(|c| !c.is_control() || *c == '\n' || *c == '\t').collect::<String>().trim().to_owned()
}

/// Normalises one value of one field. `Ok(None)` means "no value" (e.g. an empty string).
pub fn normalize_value(def: &FieldDef, raw: &Value, ctx: &ValidationContext) -> Result<Option<Value>, FieldError> {
    use FieldType as T;
    // Empty strings mean "no value" for every string-typed field.
    if raw.as_str().is_some_and(|s| s.trim().is_empty()) {
        return Ok(None);
    }
    let value = match def.field_type {
        T::Text => return text_value(def, raw, MAX_TEXT_CHARS, false),
        T::LongText => return text_value(def, raw, MAX_LONG_TEXT_CHARS, true),
        T::Integer => match raw {
            Value::Number(n) if n.is_i64() => raw.clone(),
            Value::String(s) => {
                Value::from(s.trim().parse::<i64>().map_err(|_| type_error(def, "an integer", "整数"))?)
            }
            _ => return Err(type_error(def, "an integer", "整数")),
        },
        T::Decimal => {
            let text = match raw {
                Value::Number(n) => n.to_string(),
                Value::String(s) => s.clone(),
                _ => return Err(type_error(def, "a decimal number", "数字")),
            };
            Value::String(parse_decimal(&text, 10).ok_or_else(|| type_error(def, "a decimal number", "数字"))?)
        }
        T::Money => Value::Object(parse_money(def, raw)?),
        T::Date => Value::String(
            parse_date(expect_str(def, raw)?)
                .ok_or_else(|| type_error(def, "a date (YYYY-MM-DD)", "日期（YYYY-MM-DD）"))?,
        ),
        T::Datetime => Value::String(
            parse_datetime(expect_str(def, raw)?)
                .ok_or_else(|| type_error(def, "an RFC 3339 date-time", "RFC 3339 日期时间"))?,
        ),
        T::Boolean => match raw {
            Value::Bool(_) => raw.clone(),
            _ => return Err(type_error(def, "true or false", "布尔值")),
        },
        T::Enum => {
            let s = expect_str(def, raw)?.trim();
            if !def.options.iter().any(|o| o == s) {
                return Err(FieldError::new(
                    &def.name,
                    "not_allowed",
                    format!("{} must be one of: {}.", def.label_en, def.options.join(", ")),
                    format!("{}必须是以下之一：{}。", def.label_zh, def.options.join("、")),
                ));
            }
            Value::String(s.to_owned())
        }
        T::MultiEnum => {
            let Value::Array(items) = raw else {
                return Err(type_error(def, "an array of strings", "字符串数组"));
            };
            if items.len() > MAX_MULTI_VALUES {
                return Err(FieldError::new(&def.name, "too_many", "Too many values.", "取值过多。"));
            }
            let mut out: Vec<String> = Vec::with_capacity(items.len());
            for item in items {
                let s = item.as_str().ok_or_else(|| type_error(def, "an array of strings", "字符串数组"))?;
                let s = normalize::normalize_text(s);
                if s.is_empty() || s.chars().count() > 100 {
                    return Err(FieldError::new(
                        &def.name,
                        "invalid_value",
                        "Each value needs 1-100 characters.",
                        "每个取值须为 1-100 个字符。",
                    ));
                }
                if !def.options.is_empty() && !def.options.contains(&s) {
                    return Err(FieldError::new(
                        &def.name,
                        "not_allowed",
                        format!("{} values must be among: {}.", def.label_en, def.options.join(", ")),
                        format!("{}的取值必须属于：{}。", def.label_zh, def.options.join("、")),
                    ));
                }
                if !out.contains(&s) {
                    out.push(s);
                }
            }
            if out.is_empty() {
                return Ok(None);
            }
            Value::Array(out.into_iter().map(Value::String).collect())
        }
        T::Phone => Value::String(
            normalize::normalize_phone(expect_str(def, raw)?, &ctx.default_region)
                .map_err(|e| from_normalize_error(def, e))?,
        ),
        T::Email => {
            Value::String(normalize::normalize_email(expect_str(def, raw)?).map_err(|e| from_normalize_error(def, e))?)
        }
        T::Url => {
            Value::String(normalize::normalize_url(expect_str(def, raw)?).map_err(|e| from_normalize_error(def, e))?)
        }
        T::CnResidentId => Value::String(
            normalize::normalize_cn_resident_id(expect_str(def, raw)?, ctx.today)
                .map_err(|e| from_normalize_error(def, e))?,
        ),
        T::CnUscc => {
            let uscc = normalize::normalize_uscc(expect_str(def, raw)?).map_err(|e| from_normalize_error(def, e))?;
            if !uscc.checksum_ok && !ctx.accept_uscc_checksum {
                return Err(FieldError::new(
                    &def.name,
                    "uscc_checksum",
                    "The Unified Social Credit Code fails its checksum; a data steward or admin may save it \
                     anyway with \"override\": {\"uscc\": {\"reason\": \"…\"}}.",
                    "统一社会信用代码校验位不正确；数据管理员或管理员可通过 override.uscc 并填写原因强制保存。",
                ));
            }
            Value::String(uscc.value)
        }
        T::Reference => {
            let s = expect_str(def, raw)?.trim();
            let id = uuid::Uuid::parse_str(s).map_err(|_| type_error(def, "a record id", "记录 ID"))?;
            Value::String(id.hyphenated().to_string())
        }
    };
    Ok(Some(value))
}

/// Parses a decimal number without going through floating point. Returns the canonical text
/// (no leading zeros, no trailing fractional zeros, at most `max_scale` fractional digits).
pub fn parse_decimal(text: &str, max_scale: usize) -> Option<String> {
    let t = text.trim();
    let (negative, digits) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let (int_part, frac_part) = match digits.split_once('.') {
        Some((i, f)) => (i, f),
        None => (digits, ""),
    };
    if int_part.is_empty() && frac_part.is_empty() {
        return None;
    }
    if !int_part.chars().all(|c| c.is_ascii_digit()) || !frac_part.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let int_trimmed = int_part.trim_start_matches('0');
    let frac_trimmed = frac_part.trim_end_matches('0');
    if int_trimmed.len() > 18 || frac_trimmed.len() > max_scale {
        return None;
    }
    let int_text = if int_trimmed.is_empty() { "0" } else { int_trimmed };
    let mut out = String::new();
    let is_zero = int_text == "0" && frac_trimmed.is_empty();
    if negative && !is_zero {
        out.push('-');
    }
    out.push_str(int_text);
    if !frac_trimmed.is_empty() {
        out.push('.');
        out.push_str(frac_trimmed);
    }
    Some(out)
}

fn parse_money(def: &FieldDef, raw: &Value) -> Result<Map<String, Value>, FieldError> {
    let err = || {
        FieldError::new(
            &def.name,
            "invalid_money",
            format!("{} must be {{\"amount\": \"123.45\", \"currency\": \"CNY\"}}.", def.label_en),
            format!("{}格式应为 {{\"amount\": \"123.45\", \"currency\": \"CNY\"}}。", def.label_zh),
        )
    };
    let (amount, currency) = match raw {
        Value::Object(m) => {
            let amount = match m.get("amount") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Number(n)) if n.is_i64() || n.is_u64() => n.to_string(),
                // A float literal like 12.3 is accepted only through its exact decimal text.
                Some(Value::Number(n)) => n.to_string(),
                _ => return Err(err()),
            };
            let currency = match m.get("currency") {
                Some(Value::String(s)) => s.trim().to_ascii_uppercase(),
                None => "CNY".to_owned(),
                _ => return Err(err()),
            };
            if m.keys().any(|k| k != "amount" && k != "currency") {
                return Err(err());
            }
            (amount, currency)
        }
        Value::String(s) => (s.clone(), "CNY".to_owned()),
        _ => return Err(err()),
    };
    if currency.len() != 3 || !currency.chars().all(|c| c.is_ascii_uppercase()) {
        return Err(err());
    }
    let canonical = parse_decimal(&amount, 4).ok_or_else(err)?;
    // Money keeps at least two fractional digits for display ("100" → "100.00").
    let with_scale = match canonical.split_once('.') {
        None => format!("{canonical}.00"),
        Some((_, f)) if f.len() == 1 => format!("{canonical}0"),
        Some(_) => canonical,
    };
    let mut m = Map::new();
    m.insert("amount".into(), Value::String(with_scale));
    m.insert("currency".into(), Value::String(currency));
    Ok(m)
}

/// Parses `YYYY-MM-DD` (also `YYYY/MM/DD` and `YYYY.MM.DD`) into canonical `YYYY-MM-DD`.
pub fn parse_date(text: &str) -> Option<String> {
    let t = text.trim();
    let parts: Vec<&str> = t.split(['-', '/', '.']).collect();
    if parts.len() != 3 || parts[0].len() != 4 {
        return None;
    }
    let year: i32 = parts[0].parse().ok()?;
    let month: u8 = parts[1].parse().ok()?;
    let day: u8 = parts[2].parse().ok()?;
    let month = time::Month::try_from(month).ok()?;
    let date = Date::from_calendar_date(year, month, day).ok()?;
    if !(1800..=2200).contains(&year) {
        return None;
    }
    Some(format_date(date))
}

pub fn format_date(date: Date) -> String {
    format!("{:04}-{:02}-{:02}", date.year(), u8::from(date.month()), date.day())
}

/// Parses an RFC 3339 date-time and returns it in UTC as `YYYY-MM-DDTHH:MM:SSZ` (sortable text).
pub fn parse_datetime(text: &str) -> Option<String> {
    let dt = time::OffsetDateTime::parse(text.trim(), &Rfc3339).ok()?;
    let utc = dt.to_offset(time::UtcOffset::UTC);
    if !(1800..=2200).contains(&utc.year()) {
        return None;
    }
    Some(format!("{}T{:02}:{:02}:{:02}Z", format_date(utc.date()), utc.hour(), utc.minute(), utc.second()))
}

/// The string that a sensitive value's blind index and a unique value's key are computed over.
pub fn index_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Schema;
    use serde_json::json;

    fn ctx() -> ValidationContext {
        ValidationContext {
            accept_locked_changes: false,
            today: time::macros::date!(2026 - 11 - 29),
            default_region: "CN".into(),
            accept_uscc_checksum: false,
        }
    }

    fn check(object: &str, input: Value) -> Result<Map<String, Value>, Vec<FieldError>> {
        let schema = Schema::standard();
        let def = schema.object(object).unwrap_or_else(|| panic!("object"));
        let Value::Object(m) = input else { panic!("object input") };
        validate_record(def, None, &m, &ctx())
    }

    #[test]
    fn unknown_fields_wrong_types_and_missing_required_are_all_reported() {
        let errs = check("contacts", json!({"nope": 1, "birth_date": 5})).err().unwrap_or_default();
        let codes: Vec<_> = errs.iter().map(|e| (e.field.as_str(), e.code.as_str())).collect();
        assert!(codes.contains(&("nope", "unknown_field")));
        assert!(codes.contains(&("birth_date", "invalid_type")));
        assert!(codes.contains(&("name", "required")));
    }

    #[test]
    fn money_is_exact_decimal_text() {
        let out = check(
            "deals",
            json!({"name": "x", "company_id": "0190b1f2-0000-7000-8000-000000000001", "amount": {"amount": "1234.5", "currency": "cny"}}),
        );
        let out = out.unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(out["amount"], json!({"amount": "1234.50", "currency": "CNY"}));
        let bad = check(
            "deals",
            json!({"name": "x", "company_id": "0190b1f2-0000-7000-8000-000000000001", "amount": {"amount": "-1", "currency": "CNY"}}),
        );
        assert!(bad.is_err_and(|e| e.iter().any(|e| e.code == "out_of_range")));
    }

    #[test]
    fn decimals_dates_and_datetimes_are_canonical() {
        assert_eq!(parse_decimal("007.500", 10).as_deref(), Some("7.5"));
        assert_eq!(parse_decimal("-0.0", 10).as_deref(), Some("0"));
        assert_eq!(parse_decimal("1e5", 10), None);
        assert_eq!(parse_decimal(".", 10), None);
        assert_eq!(parse_date("2026/2/3").as_deref(), Some("2026-02-03"));
        assert_eq!(parse_date("2026-02-30"), None);
        assert_eq!(parse_datetime("2026-01-02T10:00:00+08:00").as_deref(), Some("2026-01-02T02:00:00Z"));
    }

    #[test]
    fn contract_number_pattern_and_enum_options_apply() {
        let bad = check(
            "deals",
            json!({"name": "x", "company_id": "0190b1f2-0000-7000-8000-000000000001", "contract_no": "abc", "stage": "maybe"}),
        );
        let errs = bad.err().unwrap_or_default();
        assert!(errs.iter().any(|e| e.field == "contract_no" && e.code == "pattern_mismatch"));
        assert!(errs.iter().any(|e| e.field == "stage" && e.code == "not_allowed"));
    }

    #[test]
    fn update_merges_and_null_clears() {
        let schema = Schema::standard();
        let def = schema.object("companies").unwrap_or_else(|| panic!("companies"));
        let existing = json!({"name": "甲", "city": "北京"});
        let changes = json!({"city": null, "province": " 浙江 "});
        let out = validate_record(def, existing.as_object(), changes.as_object().unwrap_or_else(|| panic!()), &ctx())
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(Value::Object(out), json!({"name": "甲", "province": "浙江"}));
    }

    #[test]
    fn contract_number_is_required_when_won_and_allowed_values_apply() {
        let company = "0190b1f2-0000-7000-8000-000000000001";
        let errs =
            check("deals", json!({"name": "x", "company_id": company, "stage": "won"})).err().unwrap_or_default();
        assert!(errs.iter().any(|e| e.field == "contract_no" && e.code == "required"), "{errs:?}");
        assert!(
            check("deals", json!({"name": "x", "company_id": company, "stage": "won", "contract_no": "HT-2026-0001"}))
                .is_ok()
        );
        assert!(check("deals", json!({"name": "x", "company_id": company, "stage": "lost"})).is_ok());
        let mut schema = Schema::standard().object("companies").cloned().unwrap_or_else(|| panic!("companies"));
        for f in &mut schema.fields {
            if f.name == "industry" {
                f.rules.push(Rule::AllowedValues { values: vec!["制造".into(), "金融".into()] });
            }
        }
        let ok = json!({"name": "甲", "industry": "金融"});
        assert!(validate_record(&schema, None, ok.as_object().unwrap_or_else(|| panic!()), &ctx()).is_ok());
        let bad = json!({"name": "甲", "industry": "零售"});
        let errs = validate_record(&schema, None, bad.as_object().unwrap_or_else(|| panic!()), &ctx())
            .err()
            .unwrap_or_default();
        assert!(errs.iter().any(|e| e.field == "industry" && e.code == "not_allowed"));
    }

    #[test]
    fn a_failing_uscc_checksum_is_refused_unless_overridden() {
        let uscc = "91110108551385082Q";
        let good = normalize::normalize_uscc(uscc).unwrap_or_else(|e| panic!("{e:?}"));
        assert!(good.checksum_ok);
        // Change the check character: charset and format still fine, checksum fails.
        let bad = format!("{}{}", &uscc[..17], '1');
        let errs = check("companies", json!({"name": "甲", "uscc": bad})).err().unwrap_or_default();
        assert!(errs.iter().any(|e| e.field == "uscc" && e.code == "uscc_checksum"), "{errs:?}");
        let schema = Schema::standard();
        let def = schema.object("companies").unwrap_or_else(|| panic!("companies"));
        let input = json!({"name": "甲", "uscc": bad});
        let lenient = ValidationContext { accept_uscc_checksum: true, ..ctx() };
        let out = validate_record(def, None, input.as_object().unwrap_or_else(|| panic!()), &lenient)
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(out["uscc"], json!(bad));
        // A malformed code is refused even with the override.
        let malformed = json!({"name": "甲", "uscc": "not-a-code"});
        assert!(validate_record(def, None, malformed.as_object().unwrap_or_else(|| panic!()), &lenient).is_err());
    }
}
