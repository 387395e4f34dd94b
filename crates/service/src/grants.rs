//! Time-boxed grants (S3): a user gets one record, or a team's records, of an object for N hours
//! (1-720), to read or to read and update. Grants widen the grantee's SQL row scope
//! (`RowScope::record_ids` / `team_ids`) while they are in force; whether they are is decided
//! against the current time on every request, so an expired grant stops working by itself. The
//! grants in force are cached per server and read again after a change here or on another server
//! (within `CACHE_EPOCH_POLL`, see `caches`), and at least every `GRANT_TTL`. Admins may grant anything; roles with the `grant` flag (built-in:
//! sales_manager) only records or teams inside their own update scope, never to themselves.
//! Creating and revoking need a fresh step-up and are audited.

use crate::access::Operation;
use crate::error::{ServiceError, ServiceResult};
use crate::{RequestContext, Service};
use custodian_core::{ErrorCode, FieldError};
use custodian_store::{GrantRow, RowScope};
use serde::Serialize;
use serde_json::json;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// How long the grants in force are reused before they are read again.
pub const GRANT_TTL: Duration = Duration::from_secs(5);
/// Longest grant: 30 days.
pub const MAX_GRANT_HOURS: u32 = 720;

/// The grants in force, when they were read and in which cache generation (see `caches`).
pub(crate) type GrantCache = RwLock<Option<(Instant, u64, Arc<Vec<GrantRow>>)>>;

/// What a grant asks for.
#[derive(Debug, Clone)]
pub struct GrantRequest {
    pub user_id: Uuid,
    pub object: String,
    pub record_id: Option<Uuid>,
    pub team_id: Option<Uuid>,
    /// "read" or "write".
    pub access: String,
    pub hours: u32,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GrantView {
    pub id: Uuid,
    pub user_id: Uuid,
    pub object: String,
    pub record_id: Option<Uuid>,
    pub team_id: Option<Uuid>,
    pub access: String,
    pub reason: String,
    pub granted_by: Option<Uuid>,
    pub created_at: String,
    pub expires_at: String,
    pub revoked_at: Option<String>,
    pub revoked_by: Option<Uuid>,
    /// In force now (not revoked, not expired).
    pub active: bool,
}

fn invalid(field: &str, code: &str, en: impl Into<String>, zh: impl Into<String>) -> ServiceError {
    ServiceError::validation(vec![FieldError::new(field, code, en, zh)])
}

impl Service {
    fn grant_view(&self, g: &GrantRow) -> GrantView {
        GrantView {
            id: g.id,
            user_id: g.user_id,
            object: g.object.clone(),
            record_id: g.record_id,
            team_id: g.team_id,
            access: g.access.clone(),
            reason: g.reason.clone(),
            granted_by: g.granted_by,
            created_at: crate::micros_to_rfc3339(g.created_at),
            expires_at: crate::micros_to_rfc3339(g.expires_at),
            revoked_at: g.revoked_at.map(crate::micros_to_rfc3339),
            revoked_by: g.revoked_by,
            active: g.active_at(self.config.clock.now_micros()),
        }
    }

    /// Grants of `user_id` in force now.
    pub(crate) async fn grants_in_force(&self, user_id: Uuid) -> ServiceResult<Vec<GrantRow>> {
        let now = self.config.clock.now_micros();
        let generation = self.cache_sync.generation();
        let cached = match self.grant_cache.read() {
            Ok(g) => g
                .as_ref()
                .filter(|(at, read_in, _)| at.elapsed() < GRANT_TTL && *read_in == generation)
                .map(|(_, _, v)| v.clone()),
            Err(_) => None,
        };
        let all = match cached {
            Some(v) => v,
            None => {
                let v = Arc::new(self.store.list_grants(Some(now)).await?);
                if let Ok(mut g) = self.grant_cache.write() {
                    *g = Some((Instant::now(), generation, v.clone()));
                }
                v
            }
        };
        Ok(all.iter().filter(|g| g.user_id == user_id && g.active_at(now)).cloned().collect())
    }

    fn invalidate_grants(&self) {
        self.drop_caches();
    }

    /// Refuses with 403 (audited) a caller who may not grant at all.
    async fn require_granter(&self, ctx: &RequestContext, operation: &str) -> ServiceResult<()> {
        let role = self.role_of(ctx);
        if role.admin || role.grant {
            return Ok(());
        }
        let e = ServiceError::with_message(ErrorCode::Forbidden, "Your role may not give grants.");
        self.audit_denied(ctx, operation, &e, json!({})).await;
        Err(e)
    }

    /// Gives a time-boxed grant (see the module comment for who may give which).
    pub async fn create_grant(&self, ctx: &RequestContext, req: &GrantRequest) -> ServiceResult<GrantView> {
        self.require_granter(ctx, "grant.create").await?;
        if ctx.actor.as_ref().is_some_and(|a| a.user_id == req.user_id) {
            let e = ServiceError::with_message(ErrorCode::Forbidden, "You cannot give yourself a grant.");
            self.audit_denied(ctx, "grant.create", &e, json!({ "user_id": req.user_id })).await;
            return Err(e);
        }
        self.require_step_up(ctx, "grant.create").await?;
        let mut errors = Vec::new();
        if req.access != "read" && req.access != "write" {
            errors.push(FieldError::new(
                "access",
                "not_allowed",
                "access is read or write.",
                "access 取值为 read 或 write。",
            ));
        }
        if req.hours == 0 || req.hours > MAX_GRANT_HOURS {
            errors.push(FieldError::new(
                "hours",
                "out_of_range",
                format!("Grants last 1-{MAX_GRANT_HOURS} hours."),
                format!("授权时长须为 1-{MAX_GRANT_HOURS} 小时。"),
            ));
        }
        let reason = req.reason.trim();
        if reason.is_empty() || reason.chars().count() > 500 || reason.chars().any(|c| c.is_control() && c != '\n') {
            errors.push(FieldError::new(
                "reason",
                "invalid",
                "A reason of 1-500 characters is required.",
                "须填写 1-500 个字符的原因。",
            ));
        }
        if req.record_id.is_some() == req.team_id.is_some() {
            errors.push(FieldError::new(
                "record_id",
                "required",
                "Give exactly one of record_id and team_id.",
                "record_id 与 team_id 须且只能填写一个。",
            ));
        }
        if !errors.is_empty() {
            return Err(ServiceError::validation(errors));
        }
        let def = self.object_def(&req.object)?;
        let grantee = self.store.get_user(req.user_id).await?;
        if grantee.as_ref().is_none_or(|u| u.status != "active") {
            return Err(invalid(
                "user_id",
                "invalid_reference",
                "The grantee must be an active user.",
                "被授权人必须是在职用户。",
            ));
        }
        let role = self.role_of(ctx);
        if let Some(record_id) = req.record_id {
            // Non-admins: the record must be inside their own update scope (grants they hold
            // themselves do not count); out of read scope is "not found" like everywhere.
            let scoped = if role.admin {
                self.store.get_record(&def.name, record_id, &RowScope::All).await?.is_some().then_some(())
            } else {
                let read = self.role_scope_for(ctx, &def.name, Operation::Read).await?;
                if self.store.get_record(&def.name, record_id, &read).await?.is_none() {
                    None
                } else {
                    let update = self.role_scope_for(ctx, &def.name, Operation::Update).await?;
                    if self.store.get_record(&def.name, record_id, &update).await?.is_none() {
                        let e = ServiceError::with_message(
                            ErrorCode::Forbidden,
                            "You may grant only records you may edit yourself.",
                        );
                        self.audit_refusal(ctx, &def.name, Some(record_id), "grant.create", &e).await;
                        return Err(e);
                    }
                    Some(())
                }
            };
            if scoped.is_none() {
                let e = ServiceError::not_found();
                self.audit_refusal(ctx, &def.name, Some(record_id), "grant.create", &e).await;
                return Err(e);
            }
        }
        if let Some(team_id) = req.team_id {
            if !self.store.list_teams().await?.iter().any(|t| t.id == team_id) {
                return Err(invalid("team_id", "invalid_reference", "No such team.", "团队不存在。"));
            }
            if !role.admin {
                let update = self.role_scope_for(ctx, &def.name, Operation::Update).await?;
                let inside = match &update {
                    RowScope::All => true,
                    RowScope::Restricted { team_ids, .. } => team_ids.contains(&team_id),
                };
                if !inside {
                    let e = ServiceError::with_message(
                        ErrorCode::Forbidden,
                        "You may grant only teams whose records you may edit yourself.",
                    );
                    self.audit_denied(ctx, "grant.create", &e, json!({ "team_id": team_id })).await;
                    return Err(e);
                }
            }
        }
        let now = self.config.clock.now_micros();
        let row = GrantRow {
            id: Uuid::now_v7(),
            user_id: req.user_id,
            object: def.name.clone(),
            record_id: req.record_id,
            team_id: req.team_id,
            access: req.access.clone(),
            reason: reason.to_owned(),
            granted_by: ctx.actor.as_ref().map(|a| a.user_id),
            created_at: now,
            expires_at: now + i64::from(req.hours) * 3_600_000_000,
            revoked_at: None,
            revoked_by: None,
        };
        let mut audit = self.audit_draft(ctx, "grant.create");
        audit.object = Some(def.name.clone());
        audit.record_id = req.record_id;
        audit.details = json!({
            "grant_id": row.id, "user_id": row.user_id, "team_id": row.team_id, "access": row.access,
            "hours": req.hours, "expires_at": crate::micros_to_rfc3339(row.expires_at), "reason": row.reason,
        });
        self.store.create_grant(row.clone(), audit).await?;
        self.invalidate_grants();
        Ok(self.grant_view(&row))
    }

    /// Grants the caller may see: all for admins; otherwise those given to or by the caller.
    /// Only those in force unless `include_inactive`.
    pub async fn list_grants(&self, ctx: &RequestContext, include_inactive: bool) -> ServiceResult<Vec<GrantView>> {
        let actor = ctx.actor.as_ref().map(|a| a.user_id);
        let admin = self.role_of(ctx).admin;
        let now = self.config.clock.now_micros();
        let rows = self.store.list_grants(if include_inactive { None } else { Some(now) }).await?;
        let shown: Vec<GrantView> = rows
            .iter()
            .filter(|g| admin || actor.is_none() || Some(g.user_id) == actor || g.granted_by == actor)
            .map(|g| self.grant_view(g))
            .collect();
        let ids: Vec<Uuid> = shown.iter().map(|g| g.id).collect();
        self.audit_read_event(ctx, "grant.list", None, None, json!({ "ids": ids })).await?;
        Ok(shown)
    }

    /// Revokes a grant (admins any, others those they gave; fresh step-up; audited).
    pub async fn revoke_grant(&self, ctx: &RequestContext, id: Uuid) -> ServiceResult<GrantView> {
        self.require_granter(ctx, "grant.revoke").await?;
        let admin = self.role_of(ctx).admin;
        let actor = ctx.actor.as_ref().map(|a| a.user_id);
        let grant = self.store.get_grant(id).await?.filter(|g| admin || actor.is_none() || g.granted_by == actor);
        let Some(grant) = grant else {
            let e = ServiceError::not_found();
            self.audit_denied(ctx, "grant.revoke", &e, json!({ "grant_id": id })).await;
            return Err(e);
        };
        self.require_step_up(ctx, "grant.revoke").await?;
        let now = self.config.clock.now_micros();
        let mut audit = self.audit_draft(ctx, "grant.revoke");
        audit.object = Some(grant.object.clone());
        audit.record_id = grant.record_id;
        audit.details = json!({
            "grant_id": id, "user_id": grant.user_id, "team_id": grant.team_id, "access": grant.access,
            "expires_at": crate::micros_to_rfc3339(grant.expires_at),
        });
        if !self.store.revoke_grant(id, now, actor, audit).await? {
            return Err(ServiceError::with_message(ErrorCode::Conflict, "The grant was revoked already."));
        }
        self.invalidate_grants();
        let after = self.store.get_grant(id).await?.ok_or_else(ServiceError::not_found)?;
        Ok(self.grant_view(&after))
    }
}
