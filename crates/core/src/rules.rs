//! Field rules as data (PRODUCT.md A1): the list of rules of one field as the rules API shows
//! and accepts it, its translation to and from `FieldDef` (where the engine in `values` reads
//! it), and the checks that refuse rules that cannot work — regexes that do not compile or are
//! too large, contradictory bounds, conditions on unknown fields, allowed values outside an
//! enum's options, unique on a multi-value field, absurd numbers.

use crate::error::FieldError;
use crate::schema::{FieldDef, FieldType, ObjectDef, Rule, UniqueScope};
use crate::values::{MAX_LONG_TEXT_CHARS, MAX_TEXT_CHARS, compile_regex};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Most rules one field may carry.
pub const MAX_RULES: usize = 20;
/// Most values of an allowed-values or required-when rule.
pub const MAX_RULE_VALUES: usize = 500;
/// Longest regular expression, in bytes.
pub const MAX_PATTERN_BYTES: usize = 1_000;
/// Largest magnitude of a range bound (money and decimals keep at most 18 integer digits).
pub const MAX_RANGE_MAGNITUDE: f64 = 1e18;

/// One rule of a field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FieldRule {
    /// A value is always required.
    Required,
    /// A value is required when `field` has one of `values` (e.g. `deals.contract_no` when
    /// `stage` is `won`).
    RequiredWhen { field: String, values: Vec<String> },
    /// The value is unique among the object's active records, in `scope`.
    Unique {
        #[serde(default)]
        scope: UniqueScope,
    },
    /// The whole value matches this regular expression.
    Regex { pattern: String },
    /// Inclusive numeric bounds (integer, decimal, money).
    Range {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        min: Option<f64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max: Option<f64>,
    },
    /// Inclusive bounds on the number of characters.
    Length {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        min: Option<usize>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max: Option<usize>,
    },
    /// The value (each value of a multi-enum) is one of these.
    AllowedValues { values: Vec<String> },
    /// The value cannot change while the stored record's `field` has one of `values`; data
    /// stewards and admins may change it with a reason (audited, and the owner is notified).
    LockedWhen { field: String, values: Vec<String> },
}

impl FieldRule {
    pub fn kind(&self) -> &'static str {
        match self {
            FieldRule::Required => "required",
            FieldRule::RequiredWhen { .. } => "required_when",
            FieldRule::Unique { .. } => "unique",
            FieldRule::Regex { .. } => "regex",
            FieldRule::Range { .. } => "range",
            FieldRule::Length { .. } => "length",
            FieldRule::AllowedValues { .. } => "allowed_values",
            FieldRule::LockedWhen { .. } => "locked_when",
        }
    }

    /// Keys a rule of this kind may have besides `kind`.
    fn keys(kind: &str) -> Option<&'static [&'static str]> {
        Some(match kind {
            "required" => &[],
            "required_when" | "locked_when" => &["field", "values"],
            "unique" => &["scope"],
            "regex" => &["pattern"],
            "range" | "length" => &["min", "max"],
            "allowed_values" => &["values"],
            _ => return None,
        })
    }
}

/// The rules of a field, as the API shows them.
pub fn rules_of(def: &FieldDef) -> Vec<FieldRule> {
    let mut out = Vec::new();
    if def.required {
        out.push(FieldRule::Required);
    }
    if def.unique {
        out.push(FieldRule::Unique { scope: def.unique_scope });
    }
    for rule in &def.rules {
        out.push(match rule {
            Rule::Regex { pattern } => FieldRule::Regex { pattern: pattern.clone() },
            Rule::Range { min, max } => FieldRule::Range { min: *min, max: *max },
            Rule::Length { min, max } => FieldRule::Length { min: *min, max: *max },
            Rule::RequiredWhen { field, values } => {
                FieldRule::RequiredWhen { field: field.clone(), values: values.clone() }
            }
            Rule::AllowedValues { values } => FieldRule::AllowedValues { values: values.clone() },
            Rule::LockedWhen { field, values } => {
                FieldRule::LockedWhen { field: field.clone(), values: values.clone() }
            }
        });
    }
    out
}

/// Replaces the rules of `def` with `rules` (required, unique and its scope included).
pub fn apply_rules(def: &mut FieldDef, rules: &[FieldRule]) {
    def.required = false;
    def.unique = false;
    def.unique_scope = UniqueScope::Global;
    def.rules.clear();
    for rule in rules {
        match rule {
            FieldRule::Required => def.required = true,
            FieldRule::Unique { scope } => {
                def.unique = true;
                def.unique_scope = *scope;
            }
            FieldRule::RequiredWhen { field, values } => {
                def.rules.push(Rule::RequiredWhen { field: field.clone(), values: values.clone() })
            }
            FieldRule::Regex { pattern } => def.rules.push(Rule::Regex { pattern: pattern.clone() }),
            FieldRule::Range { min, max } => def.rules.push(Rule::Range { min: *min, max: *max }),
            FieldRule::Length { min, max } => def.rules.push(Rule::Length { min: *min, max: *max }),
            FieldRule::AllowedValues { values } => def.rules.push(Rule::AllowedValues { values: values.clone() }),
            FieldRule::LockedWhen { field, values } => {
                def.rules.push(Rule::LockedWhen { field: field.clone(), values: values.clone() })
            }
        }
    }
}

fn err(index: usize, code: &str, en: impl Into<String>, zh: impl Into<String>) -> FieldError {
    FieldError::new(format!("rules[{index}]"), code, en, zh)
}

/// Parses the `rules` array of a request. Every element must be an object with a known `kind`
/// and only that kind's keys; all problems are reported at once.
pub fn parse_rules(value: &Value) -> Result<Vec<FieldRule>, Vec<FieldError>> {
    let Value::Array(items) = value else {
        return Err(vec![FieldError::new(
            "rules",
            "invalid_type",
            "rules must be an array of rule objects.",
            "rules 必须是规则对象数组。",
        )]);
    };
    if items.len() > MAX_RULES {
        return Err(vec![FieldError::new(
            "rules",
            "too_many",
            format!("A field has at most {MAX_RULES} rules."),
            format!("每个字段最多 {MAX_RULES} 条规则。"),
        )]);
    }
    let mut rules = Vec::with_capacity(items.len());
    let mut errors = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let Some(obj) = item.as_object() else {
            errors.push(err(i, "invalid_type", "A rule must be an object.", "规则必须是对象。"));
            continue;
        };
        let kind = obj.get("kind").and_then(Value::as_str).unwrap_or_default();
        let Some(keys) = FieldRule::keys(kind) else {
            errors.push(err(
                i,
                "unknown_rule",
                "kind must be required, required_when, unique, regex, range, length, allowed_values or locked_when.",
                "kind 须为 required、required_when、unique、regex、range、length、allowed_values 或 locked_when。",
            ));
            continue;
        };
        if let Some(k) = obj.keys().find(|k| *k != "kind" && !keys.contains(&k.as_str())) {
            errors.push(err(
                i,
                "unknown_key",
                format!("A {kind} rule has no key {k}."),
                format!("{kind} 规则没有键 {k}。"),
            ));
            continue;
        }
        match serde_json::from_value::<FieldRule>(item.clone()) {
            Ok(rule) => rules.push(rule),
            Err(e) => {
                errors.push(err(i, "invalid_rule", format!("Invalid {kind} rule: {e}"), format!("{kind} 规则无效。")))
            }
        }
    }
    if errors.is_empty() { Ok(rules) } else { Err(errors) }
}

fn is_numeric(t: FieldType) -> bool {
    matches!(t, FieldType::Integer | FieldType::Decimal | FieldType::Money)
}

/// Types whose stored value is one string (patterns and lengths apply).
fn is_string(t: FieldType) -> bool {
    matches!(
        t,
        FieldType::Text
            | FieldType::LongText
            | FieldType::Enum
            | FieldType::Phone
            | FieldType::Email
            | FieldType::Url
            | FieldType::CnResidentId
            | FieldType::CnUscc
            | FieldType::Date
            | FieldType::Datetime
    )
}

/// Checks the rules `rules` for `field` of `object`. Returns every problem found (empty when
/// the rules can be applied).
pub fn check_rules(object: &ObjectDef, field: &FieldDef, rules: &[FieldRule]) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if rules.len() > MAX_RULES {
        errors.push(FieldError::new(
            "rules",
            "too_many",
            format!("A field has at most {MAX_RULES} rules."),
            format!("每个字段最多 {MAX_RULES} 条规则。"),
        ));
        return errors;
    }
    let t = field.field_type;
    for (i, rule) in rules.iter().enumerate() {
        let kind = rule.kind();
        if rule != &FieldRule::Required
            && !matches!(rule, FieldRule::RequiredWhen { .. } | FieldRule::LockedWhen { .. })
            && rules[..i].iter().any(|r| r.kind() == kind)
        {
            errors.push(err(
                i,
                "contradictory",
                format!("A field has at most one {kind} rule."),
                format!("每个字段最多一条 {kind} 规则。"),
            ));
            continue;
        }
        let wrong_type = || {
            err(
                i,
                "unsupported",
                format!("A {kind} rule does not apply to a {} field.", t.as_str()),
                format!("{kind} 规则不适用于 {} 类型的字段。", t.as_str()),
            )
        };
        match rule {
            FieldRule::Required => {}
            FieldRule::RequiredWhen { field: other, values } | FieldRule::LockedWhen { field: other, values } => {
                let locked = matches!(rule, FieldRule::LockedWhen { .. });
                let Some(other_def) = object.field(other) else {
                    errors.push(err(
                        i,
                        "unknown_field",
                        format!("Object {} has no field {other}.", object.name),
                        format!("对象 {} 没有字段 {other}。", object.name),
                    ));
                    continue;
                };
                if other == &field.name && !locked {
                    errors.push(err(
                        i,
                        "contradictory",
                        "A field cannot be required depending on itself.",
                        "字段不能以自身为必填条件。",
                    ));
                    continue;
                }
                if !is_string(other_def.field_type) || other_def.sensitive {
                    errors.push(err(
                        i,
                        "unsupported",
                        format!("{other} cannot be a condition (only non-sensitive single-value fields)."),
                        format!("{other} 不能作为条件字段（仅限非敏感的单值字段）。"),
                    ));
                    continue;
                }
                errors.extend(check_values(i, values, &other_def.options, other_def.field_type == FieldType::Enum));
            }
            FieldRule::Unique { .. } => {
                if matches!(t, FieldType::MultiEnum | FieldType::LongText | FieldType::Boolean) {
                    errors.push(err(
                        i,
                        "unsupported",
                        format!("A {} field cannot be unique.", t.as_str()),
                        format!("{} 类型的字段不能设为唯一。", t.as_str()),
                    ));
                }
            }
            FieldRule::Regex { pattern } => {
                if !is_string(t) {
                    errors.push(wrong_type());
                } else if pattern.is_empty() || pattern.len() > MAX_PATTERN_BYTES {
                    errors.push(err(
                        i,
                        "invalid_regex",
                        format!("A pattern has 1 to {MAX_PATTERN_BYTES} bytes."),
                        format!("正则表达式长度须为 1 到 {MAX_PATTERN_BYTES} 字节。"),
                    ));
                } else if let Err(e) = compile_regex(pattern) {
                    errors.push(err(
                        i,
                        "invalid_regex",
                        format!("The regular expression does not compile (or is too large): {e}"),
                        "正则表达式无法编译（或过于庞大）。",
                    ));
                }
            }
            FieldRule::Range { min, max } => {
                if !is_numeric(t) {
                    errors.push(wrong_type());
                    continue;
                }
                let absurd = |v: &Option<f64>| v.is_some_and(|v| !v.is_finite() || v.abs() > MAX_RANGE_MAGNITUDE);
                if min.is_none() && max.is_none() {
                    errors.push(err(i, "invalid_rule", "A range needs min or max.", "范围规则须有最小值或最大值。"));
                } else if absurd(min) || absurd(max) {
                    errors.push(err(
                        i,
                        "out_of_range",
                        "Range bounds must be finite numbers of magnitude at most 1e18.",
                        "范围边界须为绝对值不超过 1e18 的有限数。",
                    ));
                } else if let (Some(a), Some(b)) = (min, max)
                    && a > b
                {
                    errors.push(err(i, "contradictory", "min is greater than max.", "最小值大于最大值。"));
                } else if t == FieldType::Integer && [min, max].iter().any(|v| v.is_some_and(|v| v.fract() != 0.0)) {
                    errors.push(err(
                        i,
                        "invalid_rule",
                        "Bounds of an integer field are integers.",
                        "整数字段的范围边界须为整数。",
                    ));
                }
            }
            FieldRule::Length { min, max } => {
                if !is_string(t) {
                    errors.push(wrong_type());
                    continue;
                }
                let limit = if t == FieldType::LongText { MAX_LONG_TEXT_CHARS } else { MAX_TEXT_CHARS };
                if min.is_none() && max.is_none() {
                    errors.push(err(i, "invalid_rule", "A length needs min or max.", "长度规则须有最小值或最大值。"));
                } else if min.is_some_and(|m| m > limit) || max.is_some_and(|m| m == 0 || m > limit) {
                    errors.push(err(
                        i,
                        "out_of_range",
                        format!("Lengths of this field are between 1 and {limit} characters."),
                        format!("该字段的长度须在 1 到 {limit} 个字符之间。"),
                    ));
                } else if let (Some(a), Some(b)) = (min, max)
                    && a > b
                {
                    errors.push(err(i, "contradictory", "min is greater than max.", "最小值大于最大值。"));
                }
            }
            FieldRule::AllowedValues { values } => {
                if !matches!(t, FieldType::Text | FieldType::Enum | FieldType::MultiEnum) {
                    errors.push(wrong_type());
                    continue;
                }
                errors.extend(check_values(i, values, &field.options, !field.options.is_empty()));
            }
        }
    }
    errors
}

/// Values of an allowed-values or required-when rule: 1-500 distinct values of 1-100
/// characters, among `options` when `closed`.
fn check_values(i: usize, values: &[String], options: &[String], closed: bool) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if values.is_empty() || values.len() > MAX_RULE_VALUES {
        errors.push(err(
            i,
            "invalid_rule",
            format!("Give 1 to {MAX_RULE_VALUES} values."),
            format!("须给出 1 到 {MAX_RULE_VALUES} 个取值。"),
        ));
        return errors;
    }
    for (j, v) in values.iter().enumerate() {
        let n = v.chars().count();
        if n == 0 || n > 100 || v.chars().any(char::is_control) || v.trim() != v {
            errors.push(err(i, "invalid_value", "Each value has 1-100 characters.", "每个取值须为 1-100 个字符。"));
            break;
        }
        if values[..j].contains(v) {
            errors.push(err(i, "invalid_value", format!("{v} is listed twice."), format!("{v} 重复出现。")));
            break;
        }
        if closed && !options.contains(v) {
            errors.push(err(
                i,
                "not_allowed",
                format!("{v} is not one of the field's options ({}).", options.join(", ")),
                format!("{v} 不在该字段的选项中（{}）。", options.join("、")),
            ));
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Schema;
    use serde_json::json;

    fn codes(object: &str, field: &str, rules: Value) -> Vec<(String, String)> {
        let schema = Schema::standard();
        let o = schema.object(object).unwrap_or_else(|| panic!("object"));
        let f = o.field(field).unwrap_or_else(|| panic!("field"));
        match parse_rules(&rules) {
            Err(e) => e.into_iter().map(|e| (e.field, e.code)).collect(),
            Ok(r) => check_rules(o, f, &r).into_iter().map(|e| (e.field, e.code)).collect(),
        }
    }

    #[test]
    fn standard_rules_round_trip_and_pass_their_own_checks() {
        let schema = Schema::standard();
        for o in schema.objects() {
            for f in &o.fields {
                let rules = rules_of(f);
                assert!(check_rules(o, f, &rules).is_empty(), "{}.{}", o.name, f.name);
                let mut copy = f.clone();
                apply_rules(&mut copy, &rules);
                assert_eq!(&copy, f);
                let text = serde_json::to_value(&rules).unwrap_or_default();
                assert_eq!(parse_rules(&text).ok(), Some(rules));
            }
        }
        let deals = schema.object("deals").unwrap_or_else(|| panic!("deals"));
        let contract = deals.field("contract_no").unwrap_or_else(|| panic!("contract_no"));
        assert!(
            rules_of(contract).contains(&FieldRule::RequiredWhen { field: "stage".into(), values: vec!["won".into()] })
        );
    }

    #[test]
    fn bad_rules_are_refused_with_codes() {
        let c = |o, f, r| codes(o, f, r);
        assert_eq!(c("deals", "contract_no", json!([{"kind": "regex", "pattern": "("}]))[0].1, "invalid_regex");
        let huge = "a".repeat(MAX_PATTERN_BYTES + 1);
        assert_eq!(c("deals", "contract_no", json!([{"kind": "regex", "pattern": huge}]))[0].1, "invalid_regex");
        let nested = "(a{500}){500}".to_owned();
        assert_eq!(c("deals", "contract_no", json!([{"kind": "regex", "pattern": nested}]))[0].1, "invalid_regex");
        assert_eq!(c("deals", "amount", json!([{"kind": "range", "min": 5, "max": 1}]))[0].1, "contradictory");
        assert_eq!(c("deals", "amount", json!([{"kind": "range", "max": 1e300}]))[0].1, "out_of_range");
        assert_eq!(c("deals", "amount", json!([{"kind": "range"}]))[0].1, "invalid_rule");
        assert_eq!(c("deals", "name", json!([{"kind": "range", "min": 1}]))[0].1, "unsupported");
        assert_eq!(c("deals", "name", json!([{"kind": "length", "min": 9, "max": 2}]))[0].1, "contradictory");
        assert_eq!(c("deals", "name", json!([{"kind": "length", "max": 1_000_000}]))[0].1, "out_of_range");
        assert_eq!(
            c("deals", "contract_no", json!([{"kind": "required_when", "field": "nope", "values": ["x"]}]))[0].1,
            "unknown_field"
        );
        assert_eq!(
            c("deals", "contract_no", json!([{"kind": "required_when", "field": "stage", "values": ["maybe"]}]))[0].1,
            "not_allowed"
        );
        assert_eq!(
            c("deals", "stage", json!([{"kind": "allowed_values", "values": ["won", "someday"]}]))[0].1,
            "not_allowed"
        );
        assert_eq!(c("deals", "tags", json!([{"kind": "unique"}]))[0].1, "unsupported");
        assert_eq!(c("deals", "name", json!([{"kind": "unique", "scope": "galaxy"}]))[0].1, "invalid_rule");
        assert_eq!(c("deals", "name", json!([{"kind": "frobnicate"}]))[0].1, "unknown_rule");
        assert_eq!(c("deals", "name", json!([{"kind": "required", "extra": 1}]))[0].1, "unknown_key");
        assert_eq!(c("deals", "name", json!({"kind": "required"}))[0].1, "invalid_type");
        assert_eq!(c("deals", "name", json!([{"kind": "unique"}, {"kind": "unique"}]))[0].1, "contradictory");
        assert!(c("deals", "name", json!([{"kind": "required"}, {"kind": "unique", "scope": "per_owner"}])).is_empty());
        assert!(c("deals", "stage", json!([{"kind": "allowed_values", "values": ["won", "lost"]}])).is_empty());
    }
}
