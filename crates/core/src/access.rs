//! Roles as data: per object, which operations a role may perform and on which rows (own /
//! team / department subtree / all), and per field whether the role sees it hidden, masked,
//! readable or writable. The service turns these into a SQL row scope and applies field access
//! to every output; this module also holds the masking formats.

use crate::schema::{FieldDef, FieldType};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// Which rows an operation may touch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Not allowed at all.
    None,
    /// Records the caller owns.
    Own,
    /// Records of the caller's team (and their own).
    Team,
    /// Records of the caller's department and every department below it.
    Department,
    All,
}

/// What a role may do with one object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectPermission {
    pub create: bool,
    pub read: Scope,
    pub update: Scope,
    pub delete: Scope,
    pub export: bool,
}

impl ObjectPermission {
    pub const NONE: ObjectPermission =
        ObjectPermission { create: false, read: Scope::None, update: Scope::None, delete: Scope::None, export: false };
}

/// How a role sees one field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldAccess {
    Hidden,
    Masked,
    /// Shown masked but may be entered or changed (data entry of identity documents).
    MaskedWrite,
    Read,
    Write,
}

impl FieldAccess {
    pub fn visible_in_clear(self) -> bool {
        matches!(self, FieldAccess::Read | FieldAccess::Write)
    }
    pub fn writable(self) -> bool {
        matches!(self, FieldAccess::Write | FieldAccess::MaskedWrite)
    }
    pub fn masked(self) -> bool {
        matches!(self, FieldAccess::Masked | FieldAccess::MaskedWrite)
    }
}

/// A role. Built-in roles are defined here; custom roles are the same structure stored as data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleDef {
    pub name: String,
    pub label_en: String,
    pub label_zh: String,
    #[serde(default)]
    pub builtin: bool,
    /// Permissions per object name; objects not listed are not accessible.
    pub objects: BTreeMap<String, ObjectPermission>,
    /// Access to sensitive fields (keyed `object.field`); sensitive fields not listed use
    /// `sensitive_default`, every other field is writable when the object is updatable.
    #[serde(default)]
    pub fields: BTreeMap<String, FieldAccess>,
    pub sensitive_default: FieldAccess,
    /// May reveal masked values one at a time (audited; restricted fields need a step-up).
    #[serde(default)]
    pub can_reveal: bool,
    /// May administer users, roles, departments, teams and the schema.
    #[serde(default)]
    pub admin: bool,
    /// May read the audit log.
    #[serde(default)]
    pub audit: bool,
    /// May run duplicate scans, review the duplicate queue and merge or unmerge records.
    #[serde(default)]
    pub merge: bool,
    /// May give time-boxed grants on records inside their own update scope (admins may give
    /// any grant).
    #[serde(default)]
    pub grant: bool,
}

impl RoleDef {
    pub fn object(&self, object: &str) -> &ObjectPermission {
        self.objects.get(object).unwrap_or(&ObjectPermission::NONE)
    }

    /// Access of this role to a field of an object.
    pub fn field_access(&self, object: &str, field: &FieldDef) -> FieldAccess {
        let key = format!("{object}.{}", field.name);
        if let Some(a) = self.fields.get(&key) {
            return *a;
        }
        if field.sensitive {
            return self.sensitive_default;
        }
        FieldAccess::Write
    }
}

pub const STANDARD_OBJECTS: &[&str] = &["companies", "contacts", "leads", "deals", "activities"];

fn all_objects(p: ObjectPermission) -> BTreeMap<String, ObjectPermission> {
    STANDARD_OBJECTS.iter().map(|o| ((*o).to_owned(), p.clone())).collect()
}

/// The names of the built-in roles (`builtin_roles`); every other role a user holds is a row of
/// the custom roles, which the stores check when they assign one.
pub const BUILTIN_ROLE_NAMES: &[&str] = &["sales_rep", "sales_manager", "data_steward", "auditor", "admin"];

/// The built-in roles of PRODUCT.md S3.
pub fn builtin_roles() -> Vec<RoleDef> {
    let rep = RoleDef {
        name: "sales_rep".into(),
        label_en: "Sales rep".into(),
        label_zh: "销售代表".into(),
        builtin: true,
        objects: all_objects(ObjectPermission {
            create: true,
            read: Scope::Own,
            update: Scope::Own,
            delete: Scope::Own,
            export: false,
        }),
        // Reps call their own customers: contact details readable; identity documents masked.
        fields: [
            ("contacts.mobile", FieldAccess::Write),
            ("contacts.email", FieldAccess::Write),
            ("contacts.wechat", FieldAccess::Write),
            ("contacts.address", FieldAccess::Write),
            ("leads.mobile", FieldAccess::Write),
            ("leads.email", FieldAccess::Write),
            ("contacts.id_number", FieldAccess::MaskedWrite),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect(),
        sensitive_default: FieldAccess::Masked,
        can_reveal: false,
        admin: false,
        audit: false,
        merge: false,
        grant: false,
    };
    let manager = RoleDef {
        name: "sales_manager".into(),
        label_en: "Sales manager".into(),
        label_zh: "销售经理".into(),
        builtin: true,
        objects: all_objects(ObjectPermission {
            create: true,
            read: Scope::Department,
            update: Scope::Team,
            delete: Scope::Team,
            export: true,
        }),
        fields: BTreeMap::new(),
        sensitive_default: FieldAccess::MaskedWrite,
        can_reveal: true,
        admin: false,
        audit: false,
        merge: false,
        grant: true,
    };
    let steward = RoleDef {
        name: "data_steward".into(),
        label_en: "Data steward".into(),
        label_zh: "数据管理员".into(),
        builtin: true,
        objects: all_objects(ObjectPermission {
            create: true,
            read: Scope::All,
            update: Scope::All,
            delete: Scope::All,
            export: true,
        }),
        fields: [("contacts.id_number", FieldAccess::MaskedWrite)]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
        sensitive_default: FieldAccess::Write,
        can_reveal: true,
        admin: false,
        audit: false,
        merge: true,
        grant: false,
    };
    let auditor = RoleDef {
        name: "auditor".into(),
        label_en: "Auditor".into(),
        label_zh: "审计员".into(),
        builtin: true,
        objects: all_objects(ObjectPermission {
            create: false,
            read: Scope::All,
            update: Scope::None,
            delete: Scope::None,
            export: false,
        }),
        fields: BTreeMap::new(),
        sensitive_default: FieldAccess::Masked,
        can_reveal: false,
        admin: false,
        audit: true,
        merge: false,
        grant: false,
    };
    let admin = RoleDef {
        name: "admin".into(),
        label_en: "Administrator".into(),
        label_zh: "系统管理员".into(),
        builtin: true,
        objects: all_objects(ObjectPermission {
            create: true,
            read: Scope::All,
            update: Scope::All,
            delete: Scope::All,
            export: true,
        }),
        fields: [("contacts.id_number", FieldAccess::MaskedWrite)]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
        sensitive_default: FieldAccess::Write,
        can_reveal: true,
        admin: true,
        audit: true,
        merge: true,
        grant: true,
    };
    vec![rep, manager, steward, auditor, admin]
}

fn mask_middle(chars: &[char], keep_front: usize, keep_back: usize, stars: usize) -> String {
    if chars.len() <= keep_front + keep_back {
        return "*".repeat(chars.len().max(1));
    }
    let mut s: String = chars[..keep_front].iter().collect();
    s.push_str(&"*".repeat(stars));
    s.extend(&chars[chars.len() - keep_back..]);
    s
}

/// The masked display of a value (PRODUCT.md S4): mobile 138****5678, email z***@example.com,
/// resident ID 110101********123X, name 张*. Other values keep their first and last character.
pub fn mask_value(field: &FieldDef, value: &Value) -> Value {
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Null => return Value::Null,
        other => other.to_string(),
    };
    let masked = match field.field_type {
        FieldType::Phone => {
            // Show the national number: +8613812345678 → 138****5678.
            let national = text.strip_prefix("+86").unwrap_or(text.trim_start_matches('+'));
            let national = national.split(";ext=").next().unwrap_or(national);
            let chars: Vec<char> = national.chars().collect();
            mask_middle(&chars, 3, 4, 4)
        }
        FieldType::Email => match text.split_once('@') {
            Some((local, domain)) => {
                let first: String = local.chars().take(1).collect();
                format!("{first}***@{domain}")
            }
            None => "***".into(),
        },
        FieldType::CnResidentId => {
            let chars: Vec<char> = text.chars().collect();
            mask_middle(&chars, 6, 4, 8)
        }
        _ if field.person_name => {
            let chars: Vec<char> = text.chars().collect();
            let first: String = chars.iter().take(1).collect();
            format!("{first}{}", "*".repeat(chars.len().saturating_sub(1).clamp(1, 3)))
        }
        _ => {
            let chars: Vec<char> = text.chars().collect();
            if chars.len() <= 2 { "*".repeat(chars.len().max(1)) } else { mask_middle(&chars, 1, 1, 3) }
        }
    };
    Value::String(masked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Schema;
    use serde_json::json;

    fn field(object: &str, name: &str) -> FieldDef {
        Schema::standard()
            .object(object)
            .and_then(|o| o.field(name))
            .cloned()
            .unwrap_or_else(|| panic!("{object}.{name}"))
    }

    #[test]
    fn masks_follow_the_product_formats() {
        assert_eq!(mask_value(&field("contacts", "mobile"), &json!("+8613812345678")), json!("138****5678"));
        assert_eq!(mask_value(&field("contacts", "email"), &json!("zhang@example.com")), json!("z***@example.com"));
        assert_eq!(
            mask_value(&field("contacts", "id_number"), &json!("11010119900307123X")),
            json!("110101********123X")
        );
        assert_eq!(mask_value(&field("contacts", "name"), &json!("张三")), json!("张*"));
        assert_eq!(mask_value(&field("contacts", "wechat"), &json!("wx_handle")), json!("w***e"));
    }

    #[test]
    fn masks_never_contain_the_hidden_middle() {
        let v = "+8613812345678";
        let m = mask_value(&field("contacts", "mobile"), &json!(v));
        assert!(!m.as_str().unwrap_or_default().contains("1234"));
    }

    #[test]
    fn builtin_role_names_are_the_builtin_roles() {
        let names: Vec<String> = builtin_roles().into_iter().map(|r| r.name).collect();
        assert_eq!(names, BUILTIN_ROLE_NAMES.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>());
    }

    #[test]
    fn builtin_roles_cover_every_object_and_auditors_cannot_write() {
        for role in builtin_roles() {
            for o in STANDARD_OBJECTS {
                assert_ne!(role.object(o).read, Scope::None, "{} cannot read {o}", role.name);
            }
        }
        let auditor = builtin_roles().into_iter().find(|r| r.name == "auditor").unwrap_or_else(|| panic!());
        assert!(STANDARD_OBJECTS.iter().all(|o| !auditor.object(o).create && auditor.object(o).update == Scope::None));
    }
}
