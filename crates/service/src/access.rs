//! Authorisation in the service layer. A caller's role decides which operations they may
//! perform on which rows; the row scope becomes a SQL predicate (`RowScope`) in every list,
//! count and lookup, and field access (hidden / masked / read / write) is applied to every value
//! that leaves the service. A record outside the caller's scope is "not found", exactly like a
//! record that does not exist.

use crate::error::{ServiceError, ServiceResult};
use crate::{RequestContext, Service};
use custodian_core::access::{FieldAccess, ObjectPermission, RoleDef, Scope, builtin_roles, mask_value};
use custodian_core::schema::ObjectDef;
use custodian_core::{ErrorCode, FieldError};
use custodian_store::RowScope;
use serde_json::{Map, Value, json};
use std::sync::{Arc, LazyLock, RwLock};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// What an operation needs of the caller's scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Read,
    Update,
    Delete,
}

/// Who belongs where: used to turn team and department scopes into id lists.
#[derive(Debug, Default)]
pub(crate) struct OrgSnapshot {
    /// (department id, parent id)
    departments: Vec<(Uuid, Option<Uuid>)>,
    /// (team id, department id)
    teams: Vec<(Uuid, Option<Uuid>)>,
    /// (user id, team id, department id)
    users: Vec<(Uuid, Option<Uuid>, Option<Uuid>)>,
}

/// How long a snapshot of the organisation is reused before it is read again.
const ORG_TTL: Duration = Duration::from_secs(5);

/// The snapshot, when it was read and in which cache generation (see `caches`).
pub(crate) type OrgCache = RwLock<Option<(Instant, u64, Arc<OrgSnapshot>)>>;

/// A role with every permission: offline CLI work (demo loading, imports) that runs without a
/// logged-in user.
fn system_role() -> RoleDef {
    let mut role =
        builtin_roles().into_iter().find(|r| r.name == "admin").unwrap_or_else(|| crate::roles::empty_role("system"));
    role.name = "system".into();
    role.fields.clear();
    role.sensitive_default = FieldAccess::Write;
    role.can_reveal = true;
    role.admin = true;
    role.audit = true;
    role.merge = true;
    role.grant = true;
    for o in custodian_core::access::STANDARD_OBJECTS {
        role.objects.insert(
            (*o).to_owned(),
            ObjectPermission { create: true, read: Scope::All, update: Scope::All, delete: Scope::All, export: true },
        );
    }
    role
}

static SYSTEM_ROLE: LazyLock<Arc<RoleDef>> = LazyLock::new(|| Arc::new(system_role()));

impl Service {
    /// The caller's role definition (built-in, or custom from the role snapshot: no store read);
    /// an unknown role has no permissions at all.
    pub fn role_of(&self, ctx: &RequestContext) -> Arc<RoleDef> {
        match &ctx.actor {
            None => SYSTEM_ROLE.clone(),
            Some(actor) => {
                self.role_named(&actor.role).unwrap_or_else(|| Arc::new(crate::roles::empty_role(&actor.role)))
            }
        }
    }

    /// Permission of the caller on an object, for objects without an explicit entry (custom
    /// objects later) nothing.
    fn object_permission(&self, ctx: &RequestContext, object: &str) -> ObjectPermission {
        self.role_of(ctx).object(object).clone()
    }

    /// Duplicate scans, the review queue and merges are for data stewards and admins.
    pub(crate) fn require_merge(&self, ctx: &RequestContext) -> ServiceResult<()> {
        if self.role_of(ctx).merge { Ok(()) } else { Err(ServiceError::new(ErrorCode::Forbidden)) }
    }

    pub(crate) fn require_admin(&self, ctx: &RequestContext) -> ServiceResult<()> {
        if self.role_of(ctx).admin { Ok(()) } else { Err(ServiceError::new(ErrorCode::Forbidden)) }
    }

    /// `require_admin`, recording the refusal (`access.denied` with `operation`).
    pub(crate) async fn admin_or_refuse(&self, ctx: &RequestContext, operation: &str) -> ServiceResult<()> {
        let checked = self.require_admin(ctx);
        if let Err(e) = &checked {
            self.audit_refusal(ctx, "admin", None, operation, e).await;
        }
        checked
    }

    /// `require_merge`, recording the refusal (`access.denied` with `operation`).
    pub(crate) async fn merge_or_refuse(
        &self,
        ctx: &RequestContext,
        object: &str,
        operation: &str,
    ) -> ServiceResult<()> {
        let checked = self.require_merge(ctx);
        if let Err(e) = &checked {
            self.audit_refusal(ctx, object, None, operation, e).await;
        }
        checked
    }

    async fn org(&self) -> ServiceResult<Arc<OrgSnapshot>> {
        let generation = self.cache_sync.generation();
        if let Ok(guard) = self.org_cache.read()
            && let Some((at, read_in, snap)) = guard.as_ref()
            && at.elapsed() < ORG_TTL
            && *read_in == generation
        {
            return Ok(snap.clone());
        }
        let snap = Arc::new(OrgSnapshot {
            departments: self.store.list_departments().await?.into_iter().map(|d| (d.id, d.parent_id)).collect(),
            teams: self.store.list_teams().await?.into_iter().map(|t| (t.id, t.department_id)).collect(),
            users: self.store.list_users().await?.into_iter().map(|u| (u.id, u.team_id, u.department_id)).collect(),
        });
        if let Ok(mut guard) = self.org_cache.write() {
            *guard = Some((Instant::now(), generation, snap.clone()));
        }
        Ok(snap)
    }

    /// Forgets the organisation snapshot (after users, teams or departments change).
    pub(crate) fn invalidate_org(&self) {
        self.drop_caches();
    }

    /// The SQL row scope for an operation of the caller on an object: the role's scope, widened
    /// by the caller's grants in force now (read grants for reads, write grants for reads and
    /// updates; never deletes, and never on an object the role cannot touch at all).
    pub(crate) async fn scope_for(&self, ctx: &RequestContext, object: &str, op: Operation) -> ServiceResult<RowScope> {
        let mut scope = self.role_scope_for(ctx, object, op).await?;
        let Some(actor) = &ctx.actor else { return Ok(scope) };
        if scope == RowScope::All {
            return Ok(scope);
        }
        let perm = self.object_permission(ctx, object);
        let base = match op {
            Operation::Read => perm.read,
            Operation::Update => perm.update,
            Operation::Delete => return Ok(scope),
        };
        if base == Scope::None {
            return Ok(scope);
        }
        let grants = self.grants_in_force(actor.user_id).await?;
        if let RowScope::Restricted { team_ids, record_ids, .. } = &mut scope {
            for g in grants {
                if g.object != object || (op == Operation::Update && g.access != "write") {
                    continue;
                }
                if let Some(r) = g.record_id
                    && !record_ids.contains(&r)
                {
                    record_ids.push(r);
                }
                if let Some(t) = g.team_id
                    && !team_ids.contains(&t)
                {
                    team_ids.push(t);
                }
            }
        }
        Ok(scope)
    }

    /// The row scope the caller's role alone gives (without grants).
    pub(crate) async fn role_scope_for(
        &self,
        ctx: &RequestContext,
        object: &str,
        op: Operation,
    ) -> ServiceResult<RowScope> {
        let perm = self.object_permission(ctx, object);
        let scope = match op {
            Operation::Read => perm.read,
            Operation::Update => perm.update,
            Operation::Delete => perm.delete,
        };
        let Some(actor) = &ctx.actor else { return Ok(RowScope::All) };
        let nothing = RowScope::Restricted { owner_ids: Vec::new(), team_ids: Vec::new(), record_ids: Vec::new() };
        Ok(match scope {
            Scope::All => RowScope::All,
            Scope::None => nothing,
            Scope::Own => {
                RowScope::Restricted { owner_ids: vec![actor.user_id], team_ids: Vec::new(), record_ids: Vec::new() }
            }
            Scope::Team => RowScope::Restricted {
                owner_ids: vec![actor.user_id],
                team_ids: actor.team_id.into_iter().collect(),
                record_ids: Vec::new(),
            },
            Scope::Department => {
                let org = self.org().await?;
                let mut departments: Vec<Uuid> = actor.department_id.into_iter().collect();
                let mut i = 0;
                while i < departments.len() {
                    let parent = departments[i];
                    for (d, p) in &org.departments {
                        if *p == Some(parent) && !departments.contains(d) {
                            departments.push(*d);
                        }
                    }
                    i += 1;
                }
                let mut team_ids: Vec<Uuid> = org
                    .teams
                    .iter()
                    .filter(|(_, d)| d.is_some_and(|d| departments.contains(&d)))
                    .map(|(t, _)| *t)
                    .collect();
                if let Some(t) = actor.team_id
                    && !team_ids.contains(&t)
                {
                    team_ids.push(t);
                }
                let mut owner_ids: Vec<Uuid> = org
                    .users
                    .iter()
                    .filter(|(_, t, d)| {
                        d.is_some_and(|d| departments.contains(&d)) || t.is_some_and(|t| team_ids.contains(&t))
                    })
                    .map(|(u, _, _)| *u)
                    .collect();
                if !owner_ids.contains(&actor.user_id) {
                    owner_ids.push(actor.user_id);
                }
                RowScope::Restricted { owner_ids, team_ids, record_ids: Vec::new() }
            }
        })
    }

    /// Refuses an object the caller may not read at all (lists and searches).
    pub(crate) fn check_object_readable(&self, ctx: &RequestContext, object: &str) -> ServiceResult<()> {
        if self.object_permission(ctx, object).read == Scope::None {
            return Err(ServiceError::new(ErrorCode::Forbidden));
        }
        Ok(())
    }

    pub(crate) fn check_create(&self, ctx: &RequestContext, object: &str) -> ServiceResult<()> {
        if self.object_permission(ctx, object).create { Ok(()) } else { Err(ServiceError::new(ErrorCode::Forbidden)) }
    }

    /// Every field in `changes` must be writable by the caller.
    pub(crate) fn check_field_writes(
        &self,
        ctx: &RequestContext,
        def: &ObjectDef,
        changes: &Map<String, Value>,
    ) -> ServiceResult<()> {
        let role = self.role_of(ctx);
        let mut errors = Vec::new();
        for name in changes.keys() {
            let Some(f) = def.field(name) else {
                // System properties are never assigned through fields (mass assignment).
                if crate::SYSTEM_PROPERTIES.contains(&name.as_str()) {
                    errors.push(FieldError::new(
                        name,
                        "read_only",
                        format!("{name} is a system property and cannot be set."),
                        format!("{name} 是系统属性，不能设置。"),
                    ));
                }
                continue;
            };
            match role.field_access(&def.name, f) {
                FieldAccess::Write | FieldAccess::MaskedWrite => {}
                // A hidden field is reported like an unknown one: its existence is not revealed.
                FieldAccess::Hidden => errors.push(FieldError::new(
                    name,
                    "unknown_field",
                    format!("Object {} has no field {name}.", def.name),
                    format!("对象 {} 没有字段 {name}。", def.name),
                )),
                FieldAccess::Masked | FieldAccess::Read => errors.push(FieldError::new(
                    name,
                    "read_only",
                    "You may not change this field.",
                    "您无权修改该字段。",
                )),
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ServiceError { details: errors, ..ServiceError::new(ErrorCode::Forbidden) })
        }
    }

    /// Whether the caller may filter or sort on a field (only fields they can read in clear).
    pub(crate) fn field_queryable(&self, ctx: &RequestContext, def: &ObjectDef, field: &str) -> bool {
        def.field(field).is_some_and(|f| self.role_of(ctx).field_access(&def.name, f).visible_in_clear())
    }

    /// Applies field access to decrypted fields: hidden fields removed, masked ones masked and
    /// listed.
    pub(crate) fn apply_field_access(
        &self,
        ctx: &RequestContext,
        def: &ObjectDef,
        fields: Map<String, Value>,
    ) -> (Map<String, Value>, Vec<String>) {
        let role = self.role_of(ctx);
        let mut out = Map::with_capacity(fields.len());
        let mut masked = Vec::new();
        for (name, value) in fields {
            let access = def.field(&name).map(|f| (f, role.field_access(&def.name, f)));
            match access {
                None => {}
                Some((_, FieldAccess::Hidden)) => {}
                Some((f, FieldAccess::Masked | FieldAccess::MaskedWrite)) => {
                    out.insert(name.clone(), mask_value(f, &value));
                    masked.push(name);
                }
                Some(_) => {
                    out.insert(name, value);
                }
            }
        }
        (out, masked)
    }

    /// Records a refused attempt (403, or 404 for an id outside the caller's scope).
    pub(crate) async fn audit_refusal(
        &self,
        ctx: &RequestContext,
        object: &str,
        record_id: Option<Uuid>,
        operation: &str,
        error: &ServiceError,
    ) {
        if ctx.actor.is_none() || !matches!(error.code, ErrorCode::Forbidden | ErrorCode::NotFound) {
            return;
        }
        let mut audit = self.audit_draft(ctx, "access.denied");
        audit.object = Some(object.to_owned());
        audit.record_id = record_id;
        audit.details = json!({ "operation": operation, "code": error.code.as_str() });
        if let Err(e) = self.store.append_audit(vec![audit]).await {
            tracing::error!(error = %e, "could not record a refused attempt");
        }
    }
}

impl Service {
    /// Reveals one masked value to a caller whose role may reveal. Restricted fields (resident
    /// ID) also need a recent step-up. Every reveal is an audit event, in the same transaction
    /// sense as a write: if the event cannot be stored, nothing is revealed.
    pub async fn reveal_field(
        &self,
        ctx: &RequestContext,
        object: &str,
        id: Uuid,
        field: &str,
    ) -> ServiceResult<Value> {
        let def = self.object_def(object)?;
        let read = self.scope_for(ctx, &def.name, Operation::Read).await?;
        let record = self.store.get_record(&def.name, id, &read).await?;
        let Some(record) = record else {
            let e = ServiceError::not_found();
            self.audit_refusal(ctx, object, Some(id), "reveal", &e).await;
            return Err(e);
        };
        let role = self.role_of(ctx);
        let f = def.field(field).ok_or_else(|| {
            ServiceError::validation(vec![FieldError::new(field, "unknown_field", "No such field.", "字段不存在。")])
        })?;
        let access = role.field_access(&def.name, f);
        let refusal = match access {
            FieldAccess::Hidden => Some(ServiceError::validation(vec![FieldError::new(
                field,
                "unknown_field",
                "No such field.",
                "字段不存在。",
            )])),
            a if a.masked() && !role.can_reveal => Some(ServiceError::new(ErrorCode::Forbidden)),
            a if a.masked() && f.restricted && !ctx.actor.as_ref().is_some_and(|a| a.stepped_up) => {
                Some(ServiceError::new(ErrorCode::StepUpRequired))
            }
            _ => None,
        };
        if let Some(e) = refusal {
            let mut audit = self.audit_draft(ctx, "record.reveal_denied");
            audit.object = Some(def.name.clone());
            audit.record_id = Some(id);
            audit.details = json!({ "field": field, "code": e.code.as_str() });
            self.store.append_audit(vec![audit]).await?;
            return Err(e);
        }
        let plain = self.decrypt_fields(&def, id, &record.fields);
        let value = plain.get(field).cloned().unwrap_or(Value::Null);
        let mut audit = self.audit_draft(ctx, "record.reveal");
        audit.object = Some(def.name.clone());
        audit.record_id = Some(id);
        audit.details = json!({ "field": field });
        self.store.append_audit(vec![audit]).await?;
        Ok(value)
    }
}
