//! Account administration beyond creation: role and team changes, suspension and reactivation,
//! one-action offboarding (S10), and "my sessions".

use crate::error::{ServiceError, ServiceResult};
use crate::records::Prepared;
use crate::{RequestContext, Service};
use custodian_core::{ErrorCode, FieldError};
use custodian_store::{
    DeletedFilter, Filter, FilterOp, FilterValue, ListQuery, RowScope, StoredRecord, UserRow, WriteAction, now_micros,
};
use serde::Serialize;
use serde_json::json;
use std::collections::BTreeMap;
use uuid::Uuid;

/// Changes to a user an admin may make.
#[derive(Debug, Clone, Default)]
pub struct UserChanges {
    pub role: Option<String>,
    pub team_id: Option<Option<Uuid>>,
    pub department_id: Option<Option<Uuid>>,
    pub display_name: Option<String>,
    /// `Some(None)` removes the address.
    pub email: Option<Option<String>>,
}

/// One line of an activity report.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ActivityLine {
    pub action: String,
    pub count: i64,
    /// Mean over the other users who did this action at all in the same window.
    pub peer_mean: f64,
    /// Far above what peers did (more than three times their mean, and at least 20).
    pub unusual: bool,
}

/// What offboarding did, and what the person did in the last 90 days.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct OffboardReport {
    pub user_id: Uuid,
    pub successor_id: Uuid,
    pub sessions_revoked: u64,
    /// Records moved to the successor, per object.
    pub records_transferred: BTreeMap<String, usize>,
    pub window_days: u32,
    /// Views and lists (once read auditing records them), reveals, exports, changes.
    pub activity: Vec<ActivityLine>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SessionView {
    /// The first 12 hex digits of the token hash: enough to tell sessions apart, useless to an
    /// attacker.
    pub id: String,
    pub created_at: String,
    pub last_seen_at: String,
    pub expires_at: String,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub current: bool,
    /// "session" or "api_token".
    pub kind: String,
    pub scope: String,
    pub name: Option<String>,
}

const REPORT_DAYS: u32 = 90;

impl Service {
    async fn user_or_404(&self, id: Uuid) -> ServiceResult<UserRow> {
        self.store.get_user(id).await?.ok_or_else(ServiceError::not_found)
    }

    /// Changes role, team, department, display name or e-mail address. Nobody changes their
    /// own role (no self-escalation, also not by an admin); a role change needs a recent
    /// step-up.
    pub async fn update_user(&self, ctx: &RequestContext, id: Uuid, changes: &UserChanges) -> ServiceResult<UserRow> {
        let operation = if changes.role.is_some() { "user.role_change" } else { "user.update" };
        self.admin_or_refuse(ctx, operation).await?;
        let mut user = self.user_or_404(id).await?;
        let before = user.clone();
        if let Some(role) = &changes.role {
            if ctx.actor.as_ref().is_some_and(|a| a.user_id == id) {
                let e = ServiceError::with_message(ErrorCode::Forbidden, "You cannot change your own role.");
                self.audit_denied(ctx, operation, &e, json!({ "user_id": id, "role": role })).await;
                return Err(e);
            }
            if !self.role_exists(role).await? {
                return Err(ServiceError::validation(vec![FieldError::new(
                    "role",
                    "unknown_role",
                    "Unknown role.",
                    "角色不存在。",
                )]));
            }
            if *role != before.role {
                self.require_step_up(ctx, "user.role_change").await?;
            }
            user.role = role.clone();
        }
        if let Some(team) = changes.team_id {
            if let Some(t) = team
                && !self.store.list_teams().await?.iter().any(|x| x.id == t)
            {
                return Err(ServiceError::validation(vec![FieldError::new(
                    "team_id",
                    "invalid_reference",
                    "No such team.",
                    "团队不存在。",
                )]));
            }
            user.team_id = team;
        }
        if let Some(dep) = changes.department_id {
            if let Some(d) = dep
                && !self.store.list_departments().await?.iter().any(|x| x.id == d)
            {
                return Err(ServiceError::validation(vec![FieldError::new(
                    "department_id",
                    "invalid_reference",
                    "No such department.",
                    "部门不存在。",
                )]));
            }
            user.department_id = dep;
        }
        if let Some(name) = &changes.display_name {
            let n = name.trim();
            if n.is_empty() || n.chars().count() > 100 || n.chars().any(char::is_control) {
                return Err(ServiceError::validation(vec![FieldError::new(
                    "display_name",
                    "invalid_name",
                    "Names need 1-100 characters.",
                    "名称须为 1-100 个字符。",
                )]));
            }
            user.display_name = n.to_owned();
        }
        if let Some(email) = &changes.email {
            user.email = match email.as_deref().map(crate::auth::user_email).transpose() {
                Ok(email) => email,
                Err(e) => return Err(ServiceError::validation(vec![e])),
            };
        }
        let mut audit = self.audit_draft(ctx, "user.update");
        audit.details = json!({
            "user_id": id,
            "role": {"old": before.role, "new": user.role},
            "team_id": {"old": before.team_id, "new": user.team_id},
            "department_id": {"old": before.department_id, "new": user.department_id},
            // Whether the address changed, not the address: the log holds no contact data.
            "email": {"changed": before.email != user.email, "set": user.email.is_some()},
        });
        // A role change ends the user's sessions so the new permissions apply at once.
        let revoke = before.role != user.role;
        self.store.update_user(user.clone(), revoke, audit).await?;
        self.invalidate_org();
        Ok(user)
    }

    /// Suspends (status "suspended", every session ends; needs a recent step-up) or reactivates
    /// a user.
    pub async fn set_user_active(&self, ctx: &RequestContext, id: Uuid, active: bool) -> ServiceResult<UserRow> {
        self.set_user_active_because(ctx, id, active, None).await
    }

    /// `set_user_active` with a recorded reason (an anomaly alert's automatic suspension).
    pub(crate) async fn set_user_active_because(
        &self,
        ctx: &RequestContext,
        id: Uuid,
        active: bool,
        reason: Option<serde_json::Value>,
    ) -> ServiceResult<UserRow> {
        self.admin_or_refuse(ctx, if active { "user.reactivate" } else { "user.suspend" }).await?;
        if ctx.actor.as_ref().is_some_and(|a| a.user_id == id) {
            return Err(ServiceError::with_message(ErrorCode::Forbidden, "You cannot suspend yourself."));
        }
        let mut user = self.user_or_404(id).await?;
        if user.status == "disabled" {
            return Err(ServiceError::with_message(ErrorCode::Conflict, "The user was offboarded."));
        }
        if !active {
            self.require_step_up(ctx, "user.suspend").await?;
        }
        user.status = if active { "active" } else { "suspended" }.into();
        let mut audit = self.audit_draft(ctx, if active { "user.reactivate" } else { "user.suspend" });
        audit.details = json!({ "user_id": id });
        if let (Some(reason), serde_json::Value::Object(d)) = (reason, &mut audit.details) {
            d.insert("reason".into(), reason);
        }
        self.store.update_user(user.clone(), !active, audit).await?;
        self.drop_caches();
        Ok(user)
    }

    /// Offboarding in one action: the account is disabled and every session and token ends;
    /// every record the user owns (also deleted ones) moves to the successor in one transaction,
    /// each with a new version and audit event; the report covers the last 90 days. Needs a
    /// recent step-up.
    pub async fn offboard_user(
        &self,
        ctx: &RequestContext,
        id: Uuid,
        successor_id: Uuid,
    ) -> ServiceResult<OffboardReport> {
        self.admin_or_refuse(ctx, "user.offboard").await?;
        if id == successor_id {
            return Err(ServiceError::validation(vec![FieldError::new(
                "successor_id",
                "invalid",
                "The successor must be another user.",
                "接收人必须是其他用户。",
            )]));
        }
        if ctx.actor.as_ref().is_some_and(|a| a.user_id == id) {
            return Err(ServiceError::with_message(ErrorCode::Forbidden, "You cannot offboard yourself."));
        }
        let mut user = self.user_or_404(id).await?;
        self.require_step_up(ctx, "user.offboard").await?;
        let successor = self.store.get_user(successor_id).await?;
        let Some(successor) = successor.filter(|s| s.status == "active") else {
            return Err(ServiceError::validation(vec![FieldError::new(
                "successor_id",
                "invalid_reference",
                "The successor must be an active user.",
                "接收人必须是在职用户。",
            )]));
        };
        // 1. Disable and revoke at once: the next request with any of the user's tokens fails.
        user.status = "disabled".into();
        let sessions = self.store.list_user_sessions(id).await?.len() as u64;
        let mut audit = self.audit_draft(ctx, "user.offboard");
        audit.details = json!({ "user_id": id, "successor_id": successor_id, "sessions_revoked": sessions });
        self.store.update_user(user, true, audit).await?;
        self.invalidate_org();
        // 2. Transfer every owned record in one batch.
        let schema = self.schema();
        let mut prepared: Vec<Prepared> = Vec::new();
        let mut transferred = BTreeMap::new();
        for def in schema.objects() {
            let mut query = ListQuery::new(def.name.clone());
            query.scope = RowScope::All;
            query.deleted = DeletedFilter::All;
            query.limit = 1000;
            query.filters = vec![Filter::Column {
                column: custodian_store::Column::OwnerId,
                op: FilterOp::Eq(FilterValue::Uuid(id)),
            }];
            let mut records: Vec<StoredRecord> = Vec::new();
            loop {
                let page = self.store.list_records(&query).await?;
                records.extend(page.items);
                match page.next {
                    Some(c) => query.after = Some(c),
                    None => break,
                }
            }
            for current in records {
                let plain = self.decrypt_fields(def, current.id, &current.fields);
                let next = StoredRecord {
                    version: current.version + 1,
                    owner_id: Some(successor_id),
                    team_id: successor.team_id,
                    updated_at: now_micros().max(current.updated_at),
                    updated_by: ctx.actor.as_ref().map(|a| a.user_id),
                    ..current.clone()
                };
                let mut p =
                    self.prepare_write(ctx, def, WriteAction::Update, Some(&current), Some(&plain), &plain, next)?;
                p.audit.action = "record.transfer".into();
                if let serde_json::Value::Object(d) = &mut p.audit.details {
                    d.insert("owner_id".into(), json!({ "old": id, "new": successor_id }));
                    d.insert("reason".into(), json!("offboarding"));
                }
                prepared.push(p);
                *transferred.entry(def.name.clone()).or_insert(0) += 1;
            }
        }
        if !prepared.is_empty() {
            self.apply(prepared).await?;
        }
        let activity = self.activity_report(id).await?;
        Ok(OffboardReport {
            user_id: id,
            successor_id,
            sessions_revoked: sessions,
            records_transferred: transferred,
            window_days: REPORT_DAYS,
            activity,
        })
    }

    /// What a user did in the last 90 days, by action, compared with the other users.
    pub async fn activity_report(&self, user_id: Uuid) -> ServiceResult<Vec<ActivityLine>> {
        let since = now_micros() - i64::from(REPORT_DAYS) * 24 * 3600 * 1_000_000;
        let rows = self.store.audit_activity(since).await?;
        let mut mine: BTreeMap<String, i64> = BTreeMap::new();
        let mut peers: BTreeMap<String, (i64, i64)> = BTreeMap::new();
        for r in rows {
            match r.actor_id {
                Some(a) if a == user_id => *mine.entry(r.action).or_default() += r.count,
                Some(_) => {
                    let e = peers.entry(r.action).or_default();
                    e.0 += r.count;
                    e.1 += 1;
                }
                None => {}
            }
        }
        Ok(mine
            .into_iter()
            .map(|(action, count)| {
                let (total, n) = peers.get(&action).copied().unwrap_or((0, 0));
                let peer_mean = if n > 0 { total as f64 / n as f64 } else { 0.0 };
                let unusual = count >= 20 && (count as f64) > 3.0 * peer_mean;
                ActivityLine { action, count, peer_mean, unusual }
            })
            .collect())
    }

    /// The caller's own sessions and tokens.
    pub async fn my_sessions(&self, ctx: &RequestContext) -> ServiceResult<Vec<SessionView>> {
        let actor = ctx.actor.as_ref().ok_or_else(|| ServiceError::new(ErrorCode::Unauthenticated))?;
        let sessions: Vec<SessionView> = self
            .store
            .list_user_sessions(actor.user_id)
            .await?
            .into_iter()
            .map(|s| SessionView {
                id: crate::auth::public_session_id(&s.token_hash),
                created_at: crate::micros_to_rfc3339(s.created_at),
                last_seen_at: crate::micros_to_rfc3339(s.last_seen_at),
                expires_at: crate::micros_to_rfc3339(s.expires_at),
                ip: s.ip,
                user_agent: s.user_agent,
                current: s.token_hash == actor.session_hash,
                kind: s.kind,
                scope: s.scope,
                name: s.name,
            })
            .collect();
        let ids: Vec<&str> = sessions.iter().map(|s| s.id.as_str()).collect();
        self.audit_read_event(ctx, "auth.sessions_list", None, None, json!({ "ids": ids })).await?;
        Ok(sessions)
    }

    /// "End all my sessions" (including the current one).
    pub async fn end_my_sessions(&self, ctx: &RequestContext) -> ServiceResult<u64> {
        let actor = ctx.actor.as_ref().ok_or_else(|| ServiceError::new(ErrorCode::Unauthenticated))?;
        let audit = self.audit_draft(ctx, "auth.sessions_ended");
        let ended = self.store.delete_user_sessions(actor.user_id, audit).await?;
        self.drop_caches();
        Ok(ended)
    }
}
