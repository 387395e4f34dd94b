//! The audit log for auditors and admins (S6): filtered, paginated queries and exports, and
//! the verifier of `custodian audit verify` behind an API. Every query and export is itself an
//! audit event, appended before anything is returned. Field-level diffs pass through the
//! caller's field access: hidden fields are left out, masked ones are shown masked.

use crate::error::{ServiceError, ServiceResult};
use crate::{RequestContext, Service};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use custodian_core::ErrorCode;
use custodian_core::access::{FieldAccess, mask_value};
use custodian_store::{ActionFilter, AuditQuery, AuditRow};
use futures::stream::{self, BoxStream, StreamExt};
use serde::Serialize;
use serde_json::{Map, Value, json};
use std::path::PathBuf;
use std::sync::Arc;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

/// Largest page of an audit query.
pub const MAX_AUDIT_PAGE: u32 = 500;
/// Events read per store query while exporting.
const EXPORT_PAGE: u32 = 1000;

/// Filters of `GET /api/v1/audit/events`, as the caller wrote them.
#[derive(Debug, Clone, Default)]
pub struct AuditParams {
    pub actor: Option<String>,
    pub object: Option<String>,
    pub record_id: Option<String>,
    /// Exact action, or a prefix ending in `.` or `*` (`record.` → every record action).
    pub action: Option<String>,
    /// RFC 3339.
    pub from: Option<String>,
    pub to: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<String>,
}

/// One audit event as an auditor sees it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AuditEventView {
    pub seq: i64,
    pub at: String,
    pub actor_id: Option<Uuid>,
    pub action: String,
    pub object: Option<String>,
    pub record_id: Option<Uuid>,
    pub request_id: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// The actor's role at the time, and the session or API token the request came through.
    pub actor_role: Option<String>,
    pub session_id: Option<String>,
    pub token_id: Option<String>,
    pub details: Value,
    /// Fields whose values in `details` are masked for the caller.
    pub masked_fields: Vec<String>,
    /// The event's chain hash (hex), to match against a proof or checkpoint.
    pub hash: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct AuditPage {
    pub items: Vec<AuditEventView>,
    pub next_cursor: Option<String>,
}

/// An export in progress: the number of rows it will produce (already audited) and the rows.
pub struct AuditExport {
    pub rows: u64,
    pub events: BoxStream<'static, ServiceResult<AuditEventView>>,
}

/// Where the verifier finds its evidence (the same files `custodian audit verify` reads).
#[derive(Debug, Clone, Default)]
pub struct AuditEvidence {
    /// Signed checkpoint files; one that does not exist yet (no checkpoint written) is skipped.
    pub checkpoint_files: Vec<PathBuf>,
    /// Files of trusted public keys (64 hex characters per line); a missing one is skipped,
    /// which leaves the checkpoints unverifiable (reported, never "intact").
    pub public_key_files: Vec<PathBuf>,
}

fn bad(field: &str, en: &str, zh: &str) -> ServiceError {
    ServiceError::invalid_query(field, "invalid_value", en, zh)
}

fn parse_time(field: &str, text: &str) -> ServiceResult<i64> {
    let t = OffsetDateTime::parse(text.trim(), &Rfc3339)
        .map_err(|_| bad(field, "Times are RFC 3339, e.g. 2026-01-31T08:00:00+08:00.", "时间须为 RFC 3339 格式。"))?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000).map_err(|_| bad(field, "Time out of range.", "时间超出范围。"))
}

fn parse_uuid(field: &str, text: &str) -> ServiceResult<Uuid> {
    Uuid::parse_str(text.trim()).map_err(|_| bad(field, "Ids are UUIDs.", "ID 须为 UUID。"))
}

impl AuditParams {
    /// The store query these filters describe, and the filter as recorded in audit events.
    fn to_query(&self) -> ServiceResult<(AuditQuery, Value)> {
        let mut q = AuditQuery { limit: 50, ..Default::default() };
        let mut filter = Map::new();
        if let Some(a) = &self.actor {
            q.actor_id = Some(parse_uuid("actor", a)?);
            filter.insert("actor".into(), json!(q.actor_id));
        }
        if let Some(o) = &self.object {
            if o.is_empty() || o.len() > 64 || o.contains('\0') {
                return Err(bad("object", "Unknown object.", "未知对象。"));
            }
            q.object = Some(o.clone());
            filter.insert("object".into(), json!(o));
        }
        if let Some(r) = &self.record_id {
            q.record_id = Some(parse_uuid("record_id", r)?);
            filter.insert("record_id".into(), json!(q.record_id));
        }
        if let Some(a) = &self.action {
            let a = a.trim();
            if a.is_empty() || a.len() > 100 || a.chars().any(char::is_control) {
                return Err(bad("action", "Invalid action.", "操作名无效。"));
            }
            q.action = Some(if let Some(p) = a.strip_suffix('*') {
                ActionFilter::Prefix(p.to_owned())
            } else if a.ends_with('.') {
                ActionFilter::Prefix(a.to_owned())
            } else {
                ActionFilter::Exact(a.to_owned())
            });
            filter.insert("action".into(), json!(a));
        }
        if let Some(f) = &self.from {
            q.from = Some(parse_time("from", f)?);
            filter.insert("from".into(), json!(f));
        }
        if let Some(t) = &self.to {
            q.to = Some(parse_time("to", t)?);
            filter.insert("to".into(), json!(t));
        }
        if let Some(c) = &self.cursor {
            let seq = B64
                .decode(c.trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|s| s.strip_prefix("s:").and_then(|n| n.parse::<i64>().ok()))
                .ok_or_else(|| {
                    ServiceError::invalid_query("cursor", "invalid_cursor", "The cursor is invalid.", "分页游标无效。")
                })?;
            q.before_seq = Some(seq);
        }
        if let Some(l) = &self.limit {
            let n = l
                .trim()
                .parse::<u32>()
                .map_err(|_| bad("limit", "limit is a positive integer.", "limit 须为正整数。"))?;
            q.limit = crate::query::page_size_within(Some(n), MAX_AUDIT_PAGE)?;
        }
        Ok((q, Value::Object(filter)))
    }
}

impl Service {
    /// Auditors and admins read the audit log.
    pub(crate) fn require_auditor(&self, ctx: &RequestContext) -> ServiceResult<()> {
        let role = self.role_of(ctx);
        if ctx.actor.is_some() && (role.audit || role.admin) {
            Ok(())
        } else {
            Err(ServiceError::new(ErrorCode::Forbidden))
        }
    }

    /// Refuses with 403 and records the refusal.
    pub(crate) async fn auditor_or_refuse(&self, ctx: &RequestContext, operation: &str) -> ServiceResult<()> {
        if let Err(e) = self.require_auditor(ctx) {
            self.audit_refusal(ctx, "audit", None, operation, &e).await;
            return Err(e);
        }
        Ok(())
    }

    /// One page of audit events, newest first (`audit.query` is recorded before it is returned).
    pub async fn query_audit_events(&self, ctx: &RequestContext, params: &AuditParams) -> ServiceResult<AuditPage> {
        self.auditor_or_refuse(ctx, "audit.query").await?;
        let (query, filter) = params.to_query()?;
        let limit = query.limit;
        let mut probe = query.clone();
        probe.limit = limit + 1;
        let mut rows = self.store.query_audit(&probe).await?;
        let next_cursor = if rows.len() > limit as usize {
            rows.truncate(limit as usize);
            rows.last().map(|r| B64.encode(format!("s:{}", r.seq)))
        } else {
            None
        };
        let items: Vec<AuditEventView> = rows.iter().map(|r| self.audit_event_view(ctx, r)).collect();
        let mut audit = self.audit_draft(ctx, "audit.query");
        audit.details = json!({ "filter": filter, "seqs": items.iter().map(|e| e.seq).collect::<Vec<_>>() });
        self.store.append_audit(vec![audit]).await?;
        Ok(AuditPage { items, next_cursor })
    }

    /// Every event matching the filters (no page limit), newest first. The export is recorded
    /// (`audit.export`, with the filter and the row count) before the first row is produced; it
    /// covers the events that existed when it began.
    pub async fn export_audit_events(&self, ctx: &RequestContext, params: &AuditParams) -> ServiceResult<AuditExport> {
        self.auditor_or_refuse(ctx, "audit.export").await?;
        let (mut query, filter) = params.to_query()?;
        let bound = self.store.audit_max_seq().await? + 1;
        query.before_seq = Some(query.before_seq.map_or(bound, |b| b.min(bound)));
        let rows = self.store.count_audit(&query).await?;
        let mut audit = self.audit_draft(ctx, "audit.export");
        audit.details = json!({ "filter": filter, "rows": rows, "format": "csv", "through_seq": bound - 1 });
        self.store.append_audit(vec![audit]).await?;
        query.limit = EXPORT_PAGE;
        let store = self.store.clone();
        let viewer = Arc::new(self.field_viewer(ctx));
        let pages = stream::unfold(Some(query), move |state| {
            let store = store.clone();
            let viewer = viewer.clone();
            async move {
                let query = state?;
                match store.query_audit(&query).await {
                    Err(e) => Some((vec![Err(ServiceError::from(e))], None)),
                    Ok(rows) if rows.is_empty() => None,
                    Ok(rows) => {
                        let next = (rows.len() == query.limit as usize)
                            .then(|| AuditQuery { before_seq: rows.last().map(|r| r.seq), ..query.clone() });
                        Some((rows.iter().map(|r| Ok(viewer.view(r))).collect::<Vec<_>>(), next))
                    }
                }
            }
        });
        Ok(AuditExport { rows, events: pages.flat_map(stream::iter).boxed() })
    }

    fn audit_event_view(&self, ctx: &RequestContext, row: &AuditRow) -> AuditEventView {
        self.field_viewer(ctx).view(row)
    }

    /// What the caller may see of each field, per object (for diffs in audit events).
    pub(crate) fn field_viewer(&self, ctx: &RequestContext) -> FieldViewer {
        let role = self.role_of(ctx);
        let schema = self.schema();
        let mut access = std::collections::HashMap::new();
        for def in schema.objects() {
            for f in &def.fields {
                access.insert((def.name.clone(), f.name.clone()), (role.field_access(&def.name, f), f.clone()));
            }
        }
        FieldViewer { access }
    }

    /// Runs the verifier of `custodian audit verify` over the stored chain and the configured
    /// checkpoint files. One verification at a time per server (it reads the whole log); the
    /// hashing runs on a blocking thread, so requests keep being served meanwhile.
    pub async fn verify_audit(&self, ctx: &RequestContext) -> ServiceResult<Value> {
        self.auditor_or_refuse(ctx, "audit.verify").await?;
        let Ok(_permit) = self.verifying.try_acquire() else {
            return Err(ServiceError::with_message(ErrorCode::Throttled, "A verification is already running."));
        };
        let evidence = self.config.audit_evidence.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            let mut files = Vec::new();
            for path in &evidence.checkpoint_files {
                match std::fs::metadata(path) {
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    _ => files.push(custodian_audit::read_checkpoint_file(path).map_err(|e| e.to_string())?),
                }
            }
            let mut keys = Vec::new();
            for path in &evidence.public_key_files {
                // A missing key file leaves the checkpoints unverifiable: reported, not intact.
                if !path.exists() {
                    continue;
                }
                keys.extend(custodian_audit::read_public_keys(path).map_err(|e| e.to_string())?);
            }
            Ok::<_, String>((files, keys))
        })
        .await
        .map_err(|_| ServiceError::new(ErrorCode::Internal))?;
        let (files, keys) = loaded.map_err(|e| {
            tracing::error!(error = %e, "audit evidence unreadable");
            ServiceError::with_message(ErrorCode::Unavailable, "The audit checkpoint evidence cannot be read.")
        })?;
        let report = custodian_audit::verify_store(self.store.as_ref(), &files, &keys).await.map_err(|e| {
            tracing::error!(error = %e, "audit verification failed to run");
            ServiceError::new(ErrorCode::Unavailable)
        })?;
        let intact = report.status() == custodian_audit::verify::VerifyStatus::Intact;
        let mut body = report.to_json();
        if let Value::Object(m) = &mut body {
            m.insert("intact".into(), json!(intact));
        }
        let mut audit = self.audit_draft(ctx, "audit.verify");
        audit.details = json!({
            "intact": intact,
            "status": body["status"],
            "first_bad_seq": body["first_bad_seq"],
            "events": report.events,
            "checkpoints_verified": report.checkpoints_verified,
        });
        self.store.append_audit(vec![audit]).await?;
        Ok(body)
    }
}

/// Field access of one caller over every object, applied to the details of audit events.
pub(crate) struct FieldViewer {
    access: std::collections::HashMap<(String, String), (FieldAccess, custodian_core::schema::FieldDef)>,
}

impl FieldViewer {
    fn view(&self, row: &AuditRow) -> AuditEventView {
        let body: Value = serde_json::from_str(&row.body).unwrap_or(Value::Null);
        let text = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_owned);
        let mut details = body.get("details").cloned().unwrap_or(Value::Null);
        let mut masked = Vec::new();
        if let Some(object) = &row.object {
            self.apply(object, &mut details, &mut masked);
        }
        AuditEventView {
            seq: row.seq,
            at: crate::micros_to_rfc3339(row.at),
            actor_id: row.actor_id,
            action: row.action.clone(),
            object: row.object.clone(),
            record_id: row.record_id,
            request_id: text("request_id"),
            ip: text("ip"),
            user_agent: text("user_agent"),
            actor_role: text("actor_role"),
            session_id: text("session_id"),
            token_id: text("token_id"),
            details,
            masked_fields: masked,
            hash: hex::encode(&row.hash),
        }
    }

    fn field(&self, object: &str, name: &str) -> Option<&(FieldAccess, custodian_core::schema::FieldDef)> {
        self.access.get(&(object.to_owned(), name.to_owned()))
    }

    /// Diffs (`changes`) lose hidden fields and show masked ones masked; field lists (`fields`,
    /// `masked`) lose hidden names.
    pub(crate) fn apply(&self, object: &str, details: &mut Value, masked: &mut Vec<String>) {
        let Value::Object(d) = details else { return };
        if let Some(Value::Object(changes)) = d.get_mut("changes") {
            let names: Vec<String> = changes.keys().cloned().collect();
            for name in names {
                match self.field(object, &name) {
                    Some((FieldAccess::Hidden, _)) => {
                        changes.remove(&name);
                    }
                    Some((a, f)) if a.masked() => {
                        if let Some(Value::Object(change)) = changes.get_mut(&name) {
                            for side in ["old", "new"] {
                                if let Some(v) = change.get_mut(side)
                                    && !v.is_null()
                                {
                                    // Sensitive values are keyed hashes here: masking their text
                                    // would mean nothing, so they become a plain mask.
                                    *v = if f.sensitive { Value::String("****".into()) } else { mask_value(f, v) };
                                }
                            }
                        }
                        masked.push(name);
                    }
                    _ => {}
                }
            }
        }
        for key in ["fields", "masked"] {
            if let Some(Value::Array(list)) = d.get_mut(key) {
                list.retain(|n| {
                    n.as_str().is_none_or(|n| !matches!(self.field(object, n), Some((FieldAccess::Hidden, _))))
                });
            }
        }
    }
}
