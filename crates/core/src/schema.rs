//! Field schema as data. The five standard objects are defined here as field metadata; custom
//! fields added by admins at runtime are the same `FieldDef` values, stored by the store and merged
//! into the `Schema` by the service. Nothing else in Custodian hard-codes a per-object struct.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The type of a field's value (PRODUCT.md A1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    Text,
    LongText,
    Integer,
    Decimal,
    Money,
    Date,
    Datetime,
    Boolean,
    Enum,
    MultiEnum,
    Phone,
    Email,
    Url,
    CnResidentId,
    CnUscc,
    Reference,
}

impl FieldType {
    pub const ALL: &'static [FieldType] = &[
        FieldType::Text,
        FieldType::LongText,
        FieldType::Integer,
        FieldType::Decimal,
        FieldType::Money,
        FieldType::Date,
        FieldType::Datetime,
        FieldType::Boolean,
        FieldType::Enum,
        FieldType::MultiEnum,
        FieldType::Phone,
        FieldType::Email,
        FieldType::Url,
        FieldType::CnResidentId,
        FieldType::CnUscc,
        FieldType::Reference,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FieldType::Text => "text",
            FieldType::LongText => "long_text",
            FieldType::Integer => "integer",
            FieldType::Decimal => "decimal",
            FieldType::Money => "money",
            FieldType::Date => "date",
            FieldType::Datetime => "datetime",
            FieldType::Boolean => "boolean",
            FieldType::Enum => "enum",
            FieldType::MultiEnum => "multi_enum",
            FieldType::Phone => "phone",
            FieldType::Email => "email",
            FieldType::Url => "url",
            FieldType::CnResidentId => "cn_resident_id",
            FieldType::CnUscc => "cn_uscc",
            FieldType::Reference => "reference",
        }
    }

    /// How values of this type compare in filters and sorts.
    pub fn comparison(self) -> Comparison {
        match self {
            FieldType::Integer | FieldType::Decimal | FieldType::Money => Comparison::Numeric,
            FieldType::Boolean => Comparison::Boolean,
            FieldType::MultiEnum => Comparison::Array,
            FieldType::LongText => Comparison::Text,
            _ => Comparison::Text,
        }
    }

    /// Whether `contains` filters and full-text search make sense for this type.
    pub fn is_textual(self) -> bool {
        matches!(self, FieldType::Text | FieldType::LongText)
    }
}

/// How a stored value compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    Text,
    Numeric,
    Boolean,
    Array,
}

/// A declarative rule attached to a field. The engine that evaluates them lives in `values`; the
/// accuracy work extends this enum, and every write path runs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Rule {
    /// The value must match this regular expression (whole value).
    Regex { pattern: String },
    /// Numeric bounds (inclusive) for integer, decimal and money values.
    Range {
        #[serde(default)]
        min: Option<f64>,
        #[serde(default)]
        max: Option<f64>,
    },
    /// Character-length bounds (inclusive) for text.
    Length {
        #[serde(default)]
        min: Option<usize>,
        #[serde(default)]
        max: Option<usize>,
    },
    /// The field is required when another field has one of the listed values.
    RequiredWhen { field: String, values: Vec<String> },
    /// The value (each value of a multi-enum) must be one of these.
    AllowedValues { values: Vec<String> },
    /// The value cannot change while the stored record's `field` has one of `values` (a key
    /// field locked once, e.g., a deal is won); the condition may be the field itself.
    LockedWhen { field: String, values: Vec<String> },
}

/// Among which active records a unique field's value must be unique.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UniqueScope {
    /// Among all active records of the object.
    #[default]
    Global,
    /// Among the active records of the same owner.
    PerOwner,
    /// Among the active records of the same team.
    PerTeam,
}

impl UniqueScope {
    pub fn is_global(&self) -> bool {
        *self == UniqueScope::Global
    }
    pub fn as_str(self) -> &'static str {
        match self {
            UniqueScope::Global => "global",
            UniqueScope::PerOwner => "per_owner",
            UniqueScope::PerTeam => "per_team",
        }
    }
}

/// Metadata of one field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldDef {
    pub name: String,
    #[serde(rename = "type")]
    pub field_type: FieldType,
    pub label_en: String,
    pub label_zh: String,
    #[serde(default)]
    pub required: bool,
    /// Unique among the object's active (not deleted) records.
    #[serde(default)]
    pub unique: bool,
    /// Where `unique` applies (global unless set).
    #[serde(default, skip_serializing_if = "UniqueScope::is_global")]
    pub unique_scope: UniqueScope,
    /// Encrypted at rest, looked up through a blind index.
    #[serde(default)]
    pub sensitive: bool,
    /// Sensitive and restricted: revealing it needs a step-up (access issue).
    #[serde(default)]
    pub restricted: bool,
    /// Allowed values for enum and multi_enum; empty for multi_enum means free tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
    /// Target object of a reference field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Rule>,
    /// Added at runtime by an admin.
    #[serde(default)]
    pub custom: bool,
    /// A text field holding a person's name: normalised as one (spacing between CJK
    /// characters removed, full-width folded).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub person_name: bool,
}

impl FieldDef {
    fn std(name: &str, field_type: FieldType, en: &str, zh: &str) -> Self {
        FieldDef {
            name: name.to_owned(),
            field_type,
            label_en: en.to_owned(),
            label_zh: zh.to_owned(),
            required: false,
            unique: false,
            unique_scope: UniqueScope::Global,
            sensitive: false,
            restricted: false,
            options: Vec::new(),
            reference: None,
            rules: Vec::new(),
            custom: false,
            person_name: false,
        }
    }
    fn person_name(mut self) -> Self {
        self.person_name = true;
        self
    }
    fn required(mut self) -> Self {
        self.required = true;
        self
    }
    fn unique(mut self) -> Self {
        self.unique = true;
        self
    }
    fn sensitive(mut self) -> Self {
        self.sensitive = true;
        self
    }
    fn restricted(mut self) -> Self {
        self.sensitive = true;
        self.restricted = true;
        self
    }
    fn options(mut self, options: &[&str]) -> Self {
        self.options = options.iter().map(|o| (*o).to_owned()).collect();
        self
    }
    fn reference(mut self, target: &str) -> Self {
        self.reference = Some(target.to_owned());
        self
    }
    fn rule(mut self, rule: Rule) -> Self {
        self.rules.push(rule);
        self
    }

    /// Whether full-text search indexes this field (never sensitive ones).
    pub fn searchable(&self) -> bool {
        !self.sensitive && self.field_type.is_textual()
    }
}

/// Metadata of one object type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObjectDef {
    pub name: String,
    pub label_en: String,
    pub label_zh: String,
    pub fields: Vec<FieldDef>,
}

impl ObjectDef {
    pub fn field(&self, name: &str) -> Option<&FieldDef> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// The channels a record of this object can name in its `source` field, when that field is
    /// a choice: the standard one, or a custom choice kept from before it. `None` when the
    /// object has no `source`, or a custom one of another type (then there is nothing to rank
    /// or to copy a lead's channel into).
    pub fn source_choices(&self) -> Option<&[String]> {
        self.field("source")
            .filter(|f| f.field_type == FieldType::Enum && !f.options.is_empty())
            .map(|f| f.options.as_slice())
    }
}

/// All objects and their fields (standard plus custom).
#[derive(Debug, Clone, PartialEq)]
pub struct Schema {
    objects: BTreeMap<String, ObjectDef>,
}

/// Names that can never be used for a custom field because they are system properties or
/// request keywords.
pub const RESERVED_FIELD_NAMES: &[&str] = &[
    "id",
    "object",
    "version",
    "owner_id",
    "team_id",
    "created_at",
    "created_by",
    "updated_at",
    "updated_by",
    "deleted_at",
    "fields",
    "masked_fields",
    "q",
    "cursor",
    "limit",
    "sort",
    "include_deleted",
    "confirm_not_duplicate",
    "override",
];

/// The values of the `source` field of leads, contacts and companies.
pub const SOURCES: &[&str] = &["web", "referral", "event", "cold_call", "partner", "other"];

impl Schema {
    /// The standard objects of PRODUCT.md "Domain".
    pub fn standard() -> Self {
        use FieldType as T;
        let tags = || FieldDef::std("tags", T::MultiEnum, "Tags", "标签");
        // Where a record came from: a lead's channel, kept by the company and contact it
        // converts into, and what trusted-source survivorship ranks when records merge.
        let source = || FieldDef::std("source", T::Enum, "Source", "来源").options(SOURCES);
        let companies = ObjectDef {
            name: "companies".into(),
            label_en: "Company".into(),
            label_zh: "客户".into(),
            fields: vec![
                FieldDef::std("name", T::Text, "Name", "客户名称").required(),
                FieldDef::std("uscc", T::CnUscc, "Unified Social Credit Code", "统一社会信用代码").unique(),
                FieldDef::std("industry", T::Text, "Industry", "行业"),
                FieldDef::std("province", T::Text, "Province", "省份"),
                FieldDef::std("city", T::Text, "City", "城市"),
                FieldDef::std("address", T::Text, "Address", "地址"),
                FieldDef::std("website", T::Url, "Website", "网站"),
                FieldDef::std("phone", T::Phone, "Phone", "电话"),
                FieldDef::std("status", T::Enum, "Status", "状态")
                    .options(&["prospect", "active", "inactive", "archived"]),
                source(),
                tags(),
            ],
        };
        let contacts = ObjectDef {
            name: "contacts".into(),
            label_en: "Contact".into(),
            label_zh: "联系人".into(),
            fields: vec![
                FieldDef::std("name", T::Text, "Name", "姓名").required().person_name(),
                FieldDef::std("company_id", T::Reference, "Company", "所属客户").reference("companies"),
                FieldDef::std("title", T::Text, "Title", "职务"),
                FieldDef::std("mobile", T::Phone, "Mobile", "手机").sensitive(),
                FieldDef::std("email", T::Email, "Email", "邮箱").sensitive(),
                FieldDef::std("id_number", T::CnResidentId, "Resident ID", "身份证号").restricted(),
                FieldDef::std("wechat", T::Text, "WeChat", "微信").sensitive(),
                FieldDef::std("birth_date", T::Date, "Birth date", "出生日期"),
                FieldDef::std("address", T::Text, "Address", "地址").sensitive(),
                source(),
                tags(),
            ],
        };
        let leads = ObjectDef {
            name: "leads".into(),
            label_en: "Lead".into(),
            label_zh: "线索".into(),
            fields: vec![
                FieldDef::std("name", T::Text, "Name", "姓名").required().person_name(),
                FieldDef::std("company_name", T::Text, "Company name", "公司名称"),
                FieldDef::std("mobile", T::Phone, "Mobile", "手机").sensitive(),
                FieldDef::std("email", T::Email, "Email", "邮箱").sensitive(),
                source(),
                FieldDef::std("status", T::Enum, "Status", "状态").options(&[
                    "new",
                    "working",
                    "qualified",
                    "disqualified",
                    "converted",
                ]),
                tags(),
                // Set by lead conversion (POST /api/v1/leads/{id}/convert).
                FieldDef::std("converted_company_id", T::Reference, "Converted to company", "转化客户")
                    .reference("companies"),
                FieldDef::std("converted_contact_id", T::Reference, "Converted to contact", "转化联系人")
                    .reference("contacts"),
                FieldDef::std("converted_deal_id", T::Reference, "Converted to deal", "转化商机").reference("deals"),
            ],
        };
        // A won deal's key fields lock (PRODUCT.md A7): amount, company, contract number and the
        // stage itself (reopening it) change only with a steward's or admin's reasoned override.
        let won_locks = || Rule::LockedWhen { field: "stage".into(), values: vec!["won".into()] };
        let deals = ObjectDef {
            name: "deals".into(),
            label_en: "Deal".into(),
            label_zh: "商机".into(),
            fields: vec![
                FieldDef::std("name", T::Text, "Name", "商机名称").required(),
                FieldDef::std("company_id", T::Reference, "Company", "所属客户")
                    .required()
                    .reference("companies")
                    .rule(won_locks()),
                FieldDef::std("contact_id", T::Reference, "Contact", "联系人").reference("contacts"),
                FieldDef::std("amount", T::Money, "Amount", "金额")
                    .rule(Rule::Range { min: Some(0.0), max: None })
                    .rule(won_locks()),
                FieldDef::std("stage", T::Enum, "Stage", "阶段").rule(won_locks()).options(&[
                    "qualification",
                    "needs_analysis",
                    "proposal",
                    "negotiation",
                    "won",
                    "lost",
                ]),
                FieldDef::std("expected_close_date", T::Date, "Expected close date", "预计成交日期"),
                FieldDef::std("contract_no", T::Text, "Contract number", "合同编号")
                    .unique()
                    .rule(Rule::Regex { pattern: "^[A-Z]{2,4}-[0-9]{4}-[0-9]{3,8}$".into() })
                    .rule(Rule::RequiredWhen { field: "stage".into(), values: vec!["won".into()] })
                    .rule(won_locks()),
                tags(),
            ],
        };
        let activities = ObjectDef {
            name: "activities".into(),
            label_en: "Activity".into(),
            label_zh: "跟进记录".into(),
            fields: vec![
                FieldDef::std("kind", T::Enum, "Kind", "类型")
                    .options(&["call", "meeting", "email", "visit", "note", "task"]),
                FieldDef::std("subject", T::Text, "Subject", "主题").required(),
                FieldDef::std("body", T::LongText, "Body", "内容"),
                FieldDef::std("related_object", T::Enum, "Related object", "关联对象").options(&[
                    "companies",
                    "contacts",
                    "leads",
                    "deals",
                ]),
                FieldDef::std("related_id", T::Reference, "Related record", "关联记录"),
                FieldDef::std("due_at", T::Datetime, "Due at", "截止时间"),
                FieldDef::std("done_at", T::Datetime, "Done at", "完成时间"),
            ],
        };
        let mut objects = BTreeMap::new();
        for o in [companies, contacts, leads, deals, activities] {
            objects.insert(o.name.clone(), o);
        }
        Schema { objects }
    }

    /// The standard schema plus custom fields (each `(object, field)`), in the order given.
    /// Custom fields naming an unknown object, or clashing with a custom field given before,
    /// are skipped; the service refuses such fields before they are stored.
    ///
    /// A stored custom field with the name of a *standard* field can only predate that standard
    /// field (a release added it, e.g. `source` of companies and contacts): the stored field
    /// keeps its place, so its values keep the type, sensitivity, sealing and rules they were
    /// written under, and that object goes without the newer standard field.
    pub fn with_custom_fields(custom: impl IntoIterator<Item = (String, FieldDef)>) -> Self {
        let mut schema = Schema::standard();
        for (object, mut field) in custom {
            field.custom = true;
            let Some(def) = schema.objects.get_mut(&object) else { continue };
            match def.fields.iter_mut().find(|f| f.name == field.name) {
                None => def.fields.push(field),
                Some(standard) if !standard.custom => *standard = field,
                Some(_) => {}
            }
        }
        schema
    }

    pub fn object(&self, name: &str) -> Option<&ObjectDef> {
        self.objects.get(name)
    }

    /// A field to change in place (rules set at runtime are applied this way).
    pub fn field_mut(&mut self, object: &str, field: &str) -> Option<&mut FieldDef> {
        self.objects.get_mut(object)?.fields.iter_mut().find(|f| f.name == field)
    }

    pub fn objects(&self) -> impl Iterator<Item = &ObjectDef> {
        self.objects.values()
    }

    pub fn object_names(&self) -> impl Iterator<Item = &str> {
        self.objects.keys().map(String::as_str)
    }
}

/// Checks a custom field definition an admin wants to add. Returns the problems found.
pub fn check_custom_field(object: &ObjectDef, field: &FieldDef) -> Vec<crate::FieldError> {
    use crate::FieldError;
    let mut errors = Vec::new();
    let name_ok = !field.name.is_empty()
        && field.name.len() <= 48
        && field.name.starts_with(|c: char| c.is_ascii_lowercase())
        && field.name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !name_ok {
        errors.push(FieldError::new(
            "name",
            "invalid_field_name",
            "Field names are 1-48 characters of a-z, 0-9 and _, starting with a letter.",
            "字段名须为 1-48 个小写字母、数字或下划线，并以字母开头。",
        ));
    }
    if RESERVED_FIELD_NAMES.contains(&field.name.as_str()) || object.field(&field.name).is_some() {
        errors.push(FieldError::new(
            "name",
            "field_exists",
            "A field with this name already exists.",
            "同名字段已存在。",
        ));
    }
    let bad_label = |l: &str| l.trim().is_empty() || l.chars().count() > 100 || l.chars().any(char::is_control);
    if bad_label(&field.label_en) || bad_label(&field.label_zh) {
        errors.push(FieldError::new(
            "label",
            "required",
            "Both labels (en, zh) are required, 1-100 characters.",
            "中英文标签均为必填。",
        ));
    }
    if field.field_type == FieldType::Enum && field.options.is_empty() {
        errors.push(FieldError::new("options", "required", "An enum field needs options.", "枚举字段需要选项。"));
    }
    if field.field_type == FieldType::Reference && field.reference.is_none() {
        errors.push(FieldError::new(
            "reference",
            "required",
            "A reference field needs a target object.",
            "引用字段需要目标对象。",
        ));
    }
    if field.restricted && !field.sensitive {
        errors.push(FieldError::new(
            "restricted",
            "invalid",
            "Restricted fields must be sensitive.",
            "受限字段必须是敏感字段。",
        ));
    }
    if field.sensitive && matches!(field.field_type, FieldType::Reference | FieldType::MultiEnum | FieldType::Boolean) {
        errors.push(FieldError::new(
            "sensitive",
            "invalid",
            "This field type cannot be sensitive.",
            "该字段类型不能设为敏感。",
        ));
    }
    if field.sensitive && field.unique {
        // Uniqueness is enforced through keyed hashes, which works for sensitive values too; the
        // combination is allowed.
    }
    // The field's rules are checked like rules set later through the rules API (the object
    // with the new field, so required_when may name it too).
    let mut with_field = object.clone();
    with_field.fields.push(field.clone());
    errors.extend(crate::rules::check_rules(&with_field, field, &crate::rules::rules_of(field)));
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_objects_exist_with_sensitive_fields_marked() {
        let s = Schema::standard();
        assert_eq!(s.object_names().collect::<Vec<_>>(), vec!["activities", "companies", "contacts", "deals", "leads"]);
        let contacts = s.object("contacts").unwrap_or_else(|| panic!("contacts"));
        for f in ["mobile", "email", "id_number", "wechat", "address"] {
            assert!(contacts.field(f).is_some_and(|f| f.sensitive), "{f}");
        }
        assert!(contacts.field("id_number").is_some_and(|f| f.restricted));
        let leads = s.object("leads").unwrap_or_else(|| panic!("leads"));
        assert!(leads.field("mobile").is_some_and(|f| f.sensitive));
        assert!(leads.field("email").is_some_and(|f| f.sensitive));
    }

    #[test]
    fn a_stored_custom_field_keeps_its_place_when_a_standard_field_takes_its_name() {
        // Stored before `source` became a standard field of contacts: sensitive free text.
        let mut old = FieldDef::std("source", FieldType::Text, "Source", "来源");
        old.sensitive = true;
        let mut level = FieldDef::std("level", FieldType::Text, "Level", "等级");
        level.custom = true;
        let again = FieldDef::std("level", FieldType::Integer, "Level", "等级");
        let s = Schema::with_custom_fields([
            ("contacts".to_owned(), old),
            ("contacts".to_owned(), level),
            ("contacts".to_owned(), again),
            ("nowhere".to_owned(), FieldDef::std("x", FieldType::Text, "X", "X")),
        ]);
        let contacts = s.object("contacts").unwrap_or_else(|| panic!("contacts"));
        let standard = Schema::standard();
        let std_contacts = standard.object("contacts").unwrap_or_else(|| panic!("contacts"));
        let source = contacts.field("source").unwrap_or_else(|| panic!("source"));
        assert!(source.custom && source.sensitive && source.options.is_empty());
        assert_eq!(source.field_type, FieldType::Text);
        // In the standard field's place, once; the first custom `level` wins over a later one.
        let position = |d: &ObjectDef| d.fields.iter().position(|f| f.name == "source");
        assert_eq!(position(contacts), position(std_contacts));
        assert_eq!(contacts.fields.iter().filter(|f| f.name == "source").count(), 1);
        assert_eq!(contacts.field("level").map(|f| f.field_type), Some(FieldType::Text));
        assert_eq!(contacts.fields.len(), std_contacts.fields.len() + 1);
        // Other objects keep the standard field.
        let companies = s.object("companies").unwrap_or_else(|| panic!("companies"));
        assert!(companies.field("source").is_some_and(|f| !f.custom && f.options.len() == SOURCES.len()));
    }
}
