//! Roles as data (S3): the five built-in roles plus custom roles stored in the database, edited
//! by admins through the API or the CLI. `role_of` resolves a caller's role from an in-process
//! snapshot, never with a store read per request: the snapshot is replaced at once after a
//! change on this server, within `CACHE_EPOCH_POLL` after a change on another server (see
//! `caches`), and reloaded at least every `ROLE_TTL` besides.

use crate::error::{ServiceError, ServiceResult};
use crate::{RequestContext, Service};
use custodian_core::access::{FieldAccess, RoleDef, Scope, builtin_roles};
use custodian_core::{ErrorCode, FieldError};
use custodian_store::{RoleRow, StoreError, now_micros};
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, RwLock};
use std::time::{Duration, Instant};

/// How long a snapshot of the custom roles is used before it is read again.
pub const ROLE_TTL: Duration = Duration::from_secs(5);

/// Keys a role definition may have.
const ROLE_KEYS: &[&str] = &[
    "name",
    "label_en",
    "label_zh",
    "builtin",
    "objects",
    "fields",
    "sensitive_default",
    "can_reveal",
    "admin",
    "audit",
    "merge",
    "grant",
];

static BUILTIN: LazyLock<HashMap<String, Arc<RoleDef>>> =
    LazyLock::new(|| builtin_roles().into_iter().map(|r| (r.name.clone(), Arc::new(r))).collect());

/// Custom roles as last read from the store.
#[derive(Debug)]
pub(crate) struct RoleSnapshot {
    loaded_at: Instant,
    /// The cache generation it was read in (see `caches`).
    generation: u64,
    roles: HashMap<String, (Arc<RoleDef>, i64, i64)>,
}

pub(crate) struct RoleCache {
    snapshot: RwLock<Arc<RoleSnapshot>>,
    /// One reload at a time; requests arriving meanwhile use the previous snapshot.
    reloading: tokio::sync::Mutex<()>,
}

impl Default for RoleCache {
    fn default() -> Self {
        RoleCache {
            // Stale from the start, so that the first request loads the custom roles.
            snapshot: RwLock::new(Arc::new(RoleSnapshot {
                loaded_at: Instant::now().checked_sub(ROLE_TTL * 2).unwrap_or_else(Instant::now),
                generation: 0,
                roles: HashMap::new(),
            })),
            reloading: tokio::sync::Mutex::new(()),
        }
    }
}

/// A role as listed by the API: the definition plus when a custom role was stored.
#[derive(Debug, Clone, Serialize)]
pub struct RoleView {
    #[serde(flatten)]
    pub role: RoleDef,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
}

/// Roles whose holders must have a second factor: the privileged built-in roles, and every
/// custom role with administrative, audit or merge rights.
pub(crate) fn requires_mfa(role: &RoleDef) -> bool {
    crate::MFA_REQUIRED_ROLES.contains(&role.name.as_str())
        || (!role.builtin && (role.admin || role.audit || role.merge))
}

fn role_error(field: &str, code: &str, en: impl Into<String>, zh: impl Into<String>) -> FieldError {
    FieldError::new(field, code, en, zh)
}

impl Service {
    fn role_snapshot(&self) -> Arc<RoleSnapshot> {
        match self.roles.snapshot.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// A role by name: built-in, or custom from the snapshot.
    pub(crate) fn role_named(&self, name: &str) -> Option<Arc<RoleDef>> {
        if let Some(r) = BUILTIN.get(name) {
            return Some(r.clone());
        }
        self.role_snapshot().roles.get(name).map(|(r, _, _)| r.clone())
    }

    /// Reads the custom roles again.
    pub(crate) async fn reload_roles(&self) -> ServiceResult<()> {
        let generation = self.cache_sync.generation();
        let rows = self.store.list_roles().await?;
        let mut roles = HashMap::with_capacity(rows.len());
        for row in rows {
            match serde_json::from_value::<RoleDef>(row.definition) {
                Ok(mut def) => {
                    def.builtin = false;
                    def.name = row.name.clone();
                    roles.insert(row.name, (Arc::new(def), row.created_at, row.updated_at));
                }
                Err(e) => {
                    tracing::error!(role = %row.name, error = %e, "stored role definition is unreadable; skipped")
                }
            }
        }
        let snap = Arc::new(RoleSnapshot { loaded_at: Instant::now(), generation, roles });
        match self.roles.snapshot.write() {
            Ok(mut g) => *g = snap,
            Err(p) => *p.into_inner() = snap,
        }
        Ok(())
    }

    /// Reloads the custom roles when the snapshot is older than `ROLE_TTL` or from an earlier
    /// cache generation (called once per authenticated request, after `sync_caches`).
    pub(crate) async fn refresh_roles_if_stale(&self) -> ServiceResult<()> {
        let fresh = |snap: &RoleSnapshot| {
            snap.loaded_at.elapsed() < ROLE_TTL && snap.generation == self.cache_sync.generation()
        };
        if fresh(&self.role_snapshot()) {
            return Ok(());
        }
        let Ok(_guard) = self.roles.reloading.try_lock() else { return Ok(()) };
        if fresh(&self.role_snapshot()) {
            return Ok(());
        }
        self.reload_roles().await
    }

    /// Whether a role of this name exists (read fresh from the store, for assignments).
    pub(crate) async fn role_exists(&self, name: &str) -> ServiceResult<bool> {
        if BUILTIN.contains_key(name) {
            return Ok(true);
        }
        self.reload_roles().await?;
        Ok(self.role_named(name).is_some())
    }

    /// Whether holders of the role must have a second factor.
    pub(crate) fn role_requires_mfa(&self, name: &str) -> bool {
        match self.role_named(name) {
            Some(r) => requires_mfa(&r),
            None => crate::MFA_REQUIRED_ROLES.contains(&name),
        }
    }

    /// Appends an `access.denied` event for a refused operation that is not about one record.
    pub(crate) async fn audit_denied(&self, ctx: &RequestContext, operation: &str, error: &ServiceError, extra: Value) {
        let mut audit = self.audit_draft(ctx, "access.denied");
        let mut details = json!({ "operation": operation, "code": error.code.as_str() });
        if let (Value::Object(d), Value::Object(x)) = (&mut details, extra) {
            d.extend(x);
        }
        audit.details = details;
        if let Err(e) = self.store.append_audit(vec![audit]).await {
            tracing::error!(error = %e, "could not record a refused attempt");
        }
    }

    fn role_view(&self, name: &str) -> Option<RoleView> {
        if let Some(r) = BUILTIN.get(name) {
            return Some(RoleView { role: (**r).clone(), created_at: None, updated_at: None });
        }
        self.role_snapshot().roles.get(name).map(|(r, c, u)| RoleView {
            role: (**r).clone(),
            created_at: Some(crate::micros_to_rfc3339(*c)),
            updated_at: Some(crate::micros_to_rfc3339(*u)),
        })
    }

    /// Every role, built-in first, then custom roles by name.
    pub async fn list_roles(&self, ctx: &RequestContext) -> ServiceResult<Vec<RoleView>> {
        self.admin_or_refuse(ctx, "role.list").await?;
        self.reload_roles().await?;
        let mut out: Vec<RoleView> = crate::ROLES.iter().filter_map(|n| self.role_view(n)).collect::<Vec<_>>();
        let snap = self.role_snapshot();
        let mut custom: Vec<&String> = snap.roles.keys().collect();
        custom.sort();
        out.extend(custom.into_iter().filter_map(|n| self.role_view(n)));
        Ok(out)
    }

    pub async fn get_role(&self, ctx: &RequestContext, name: &str) -> ServiceResult<RoleView> {
        self.admin_or_refuse(ctx, "role.read").await?;
        self.reload_roles().await?;
        self.role_view(name).ok_or_else(ServiceError::not_found)
    }

    /// Parses and checks a custom role definition against the schema.
    fn parse_role(&self, definition: &Value, name: &str) -> ServiceResult<RoleDef> {
        let Value::Object(map) = definition else {
            return Err(ServiceError::validation(vec![role_error(
                "definition",
                "invalid",
                "A role definition is a JSON object.",
                "角色定义须为 JSON 对象。",
            )]));
        };
        let mut errors = Vec::new();
        for k in map.keys().filter(|k| !ROLE_KEYS.contains(&k.as_str())) {
            errors.push(role_error(
                k,
                "unknown_field",
                format!("Roles have no property {k}."),
                format!("角色没有属性 {k}。"),
            ));
        }
        if map.get("builtin").is_some_and(|b| b != &Value::Bool(false)) {
            errors.push(role_error(
                "builtin",
                "read_only",
                "Custom roles are not built-in.",
                "自定义角色不能标记为内置。",
            ));
        }
        if let Some(n) = map.get("name")
            && n.as_str() != Some(name)
        {
            errors.push(role_error(
                "name",
                "mismatch",
                "The name in the body differs from the role's name.",
                "请求体中的名称与角色名称不一致。",
            ));
        }
        if !errors.is_empty() {
            return Err(ServiceError::validation(errors));
        }
        let mut map = map.clone();
        map.insert("name".into(), Value::String(name.to_owned()));
        map.insert("builtin".into(), Value::Bool(false));
        let mut role: RoleDef = serde_json::from_value(Value::Object(map)).map_err(|e| {
            ServiceError::validation(vec![role_error(
                "definition",
                "invalid",
                format!("Invalid role definition: {e}"),
                "角色定义无效。",
            )])
        })?;
        role.builtin = false;
        let valid_name = (2..=48).contains(&name.len())
            && name.starts_with(|c: char| c.is_ascii_lowercase())
            && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid_name {
            errors.push(role_error(
                "name",
                "invalid_name",
                "Role names are 2-48 lowercase letters, digits or _, starting with a letter.",
                "角色名须为 2-48 个小写字母、数字或下划线，并以字母开头。",
            ));
        } else if BUILTIN.contains_key(name) || name == "system" {
            errors.push(role_error(
                "name",
                "reserved",
                "This name belongs to a built-in role.",
                "该名称属于内置角色。",
            ));
        }
        for (key, label) in [("label_en", &role.label_en), ("label_zh", &role.label_zh)] {
            let n = label.trim().chars().count();
            if n == 0 || n > 100 || label.chars().any(char::is_control) {
                errors.push(role_error(
                    key,
                    "invalid_name",
                    "Labels need 1-100 characters.",
                    "名称须为 1-100 个字符。",
                ));
            }
        }
        let schema = self.schema();
        for (object, perm) in &role.objects {
            if schema.object(object).is_none() {
                errors.push(role_error(
                    &format!("objects.{object}"),
                    "unknown_object",
                    format!("Unknown object {object}."),
                    format!("对象 {object} 不存在。"),
                ));
                continue;
            }
            for (op, scope) in [("update", perm.update), ("delete", perm.delete)] {
                if scope > perm.read {
                    errors.push(role_error(
                        &format!("objects.{object}.{op}"),
                        "wider_than_read",
                        format!("The {op} scope cannot be wider than the read scope."),
                        "写入范围不能大于读取范围。",
                    ));
                }
            }
            if perm.read == Scope::None && (perm.create || perm.export) {
                errors.push(role_error(
                    &format!("objects.{object}"),
                    "not_readable",
                    "Create and export need read access.",
                    "创建和导出需要读取权限。",
                ));
            }
        }
        for key in role.fields.keys() {
            let known = key.split_once('.').and_then(|(o, f)| schema.object(o).and_then(|def| def.field(f))).is_some();
            if !known {
                errors.push(role_error(
                    &format!("fields.{key}"),
                    "unknown_field",
                    format!("Unknown field {key} (use object.field)."),
                    format!("字段 {key} 不存在（格式为 对象.字段）。"),
                ));
            }
        }
        if errors.is_empty() { Ok(role) } else { Err(ServiceError::validation(errors)) }
    }

    /// Creates a custom role (admin, fresh step-up; audited with the definition).
    pub async fn create_role(&self, ctx: &RequestContext, definition: &Value) -> ServiceResult<RoleView> {
        self.admin_or_refuse(ctx, "role.create").await?;
        self.require_step_up(ctx, "role.create").await?;
        let name = definition.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
        let role = self.parse_role(definition, &name)?;
        let stored = serde_json::to_value(&role).map_err(|_| ServiceError::new(ErrorCode::Internal))?;
        let now = now_micros();
        let mut audit = self.audit_draft(ctx, "role.create");
        audit.details = json!({ "role": name, "before": null, "after": stored });
        let row = RoleRow { name: name.clone(), definition: stored, created_at: now, updated_at: now };
        self.store.create_role(row, audit).await.map_err(|e| match e {
            StoreError::AlreadyExists(_) => ServiceError {
                details: vec![role_error("name", "taken", "A role with this name exists.", "同名角色已存在。")],
                ..ServiceError::new(ErrorCode::Conflict)
            },
            other => other.into(),
        })?;
        self.reload_roles().await?;
        self.role_view(&name).ok_or_else(|| ServiceError::new(ErrorCode::Internal))
    }

    /// Refuses changes to built-in roles (409, audited).
    async fn refuse_builtin(&self, ctx: &RequestContext, name: &str, operation: &str) -> ServiceResult<()> {
        if BUILTIN.contains_key(name) || name == "system" {
            let e = ServiceError::with_message(ErrorCode::Conflict, "Built-in roles are read-only.");
            self.audit_denied(ctx, operation, &e, json!({ "role": name })).await;
            return Err(e);
        }
        Ok(())
    }

    /// Replaces a custom role's definition (admin, fresh step-up; audited before/after). Holders
    /// get the new permissions on their next request on this server, within `CACHE_EPOCH_POLL`
    /// on others.
    pub async fn update_role(&self, ctx: &RequestContext, name: &str, definition: &Value) -> ServiceResult<RoleView> {
        self.admin_or_refuse(ctx, "role.update").await?;
        self.refuse_builtin(ctx, name, "role.update").await?;
        self.reload_roles().await?;
        let before = self.role_view(name).ok_or_else(ServiceError::not_found)?;
        self.require_step_up(ctx, "role.update").await?;
        let role = self.parse_role(definition, name)?;
        let stored = serde_json::to_value(&role).map_err(|_| ServiceError::new(ErrorCode::Internal))?;
        let mut audit = self.audit_draft(ctx, "role.update");
        audit.details = json!({ "role": name, "before": before.role, "after": stored });
        let now = now_micros();
        let row = RoleRow { name: name.to_owned(), definition: stored, created_at: now, updated_at: now };
        self.store.update_role(row, audit).await?;
        self.reload_roles().await?;
        self.role_view(name).ok_or_else(ServiceError::not_found)
    }

    /// Deletes a custom role nobody holds (409 while users hold it). Admin, fresh step-up.
    pub async fn delete_role(&self, ctx: &RequestContext, name: &str) -> ServiceResult<()> {
        self.admin_or_refuse(ctx, "role.delete").await?;
        self.refuse_builtin(ctx, name, "role.delete").await?;
        self.reload_roles().await?;
        let before = self.role_view(name).ok_or_else(ServiceError::not_found)?;
        self.require_step_up(ctx, "role.delete").await?;
        let mut audit = self.audit_draft(ctx, "role.delete");
        audit.details = json!({ "role": name, "before": before.role, "after": null });
        self.store.delete_role(name, audit).await?;
        self.reload_roles().await?;
        Ok(())
    }
}

/// A role with no permissions at all (a role name that no longer resolves).
pub(crate) fn empty_role(name: &str) -> RoleDef {
    RoleDef {
        name: name.to_owned(),
        label_en: name.to_owned(),
        label_zh: name.to_owned(),
        builtin: false,
        objects: Default::default(),
        fields: Default::default(),
        sensitive_default: FieldAccess::Hidden,
        can_reveal: false,
        admin: false,
        audit: false,
        merge: false,
        grant: false,
    }
}
