//! Field rules as data (PRODUCT.md A1) and the background jobs that follow a change.
//!
//! `GET/PUT /api/v1/schema/{object}/fields/{field}/rules`: admins and data stewards replace the
//! rules of a standard or custom field at runtime. Rules are checked before they are stored
//! (`custodian_core::rules::check_rules`); the new set, a re-check job and the audit event
//! (rules before and after) commit together, and every server applies stored rules when it
//! reads the schema (at once on the server that changed them, within `CACHE_EPOCH_POLL` on
//! the others, before any write).
//!
//! Jobs live in the store and are leased (`claim_job`), so any server runs them, one server
//! at a time per job, and a job whose server died is taken over after its lease and resumes
//! after its cursor. A rule check scans the object's active records with the job's rules and
//! records violators (record, field, code); it changes no record. When a unique rule or its
//! scope changed, it also rewrites the field's unique keys (only for records still at the
//! version it read), so the database enforces the new scope. A match-key backfill recomputes
//! the blocking keys of records written before the duplicate work (or after a change of the
//! key definitions), so the check at entry and scans see them.

use crate::access::Operation;
use crate::error::{ServiceError, ServiceResult};
use crate::view::micros_to_rfc3339;
use crate::{RequestContext, Service};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use custodian_core::rules::{FieldRule, apply_rules, check_rules, parse_rules, rules_of};
use custodian_core::schema::{FieldDef, ObjectDef};
use custodian_core::values::{index_text, validate_record};
use custodian_core::{ErrorCode, FieldError};
use custodian_store::{
    Column, FieldRulesRow, Filter, FilterOp, FilterValue, JOB_MATCH_KEYS, JOB_REENCRYPT, JOB_RULE_CHECK, JobProgress,
    JobRow, KeyRefresh, ListQuery, StoreError, StoredRecord, ViolationRow, now_micros,
};
use serde::Serialize;
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use uuid::Uuid;

/// The rules of one field as the API shows them.
#[derive(Debug, Clone, Serialize)]
pub struct FieldRulesView {
    pub object: String,
    pub field: String,
    pub rules: Vec<FieldRule>,
    /// 0 while the field has its default rules; +1 per change (send it back as `revision` to
    /// refuse a change based on an outdated read).
    pub revision: i64,
    /// The re-check job a change started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<JobView>,
}

/// A background job as callers see it.
#[derive(Debug, Clone, Serialize)]
pub struct JobView {
    pub id: Uuid,
    pub kind: String,
    pub object: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// "pending", "running", "done" or "failed".
    pub status: String,
    pub created_at: String,
    pub finished_at: Option<String>,
    /// Records processed so far.
    pub scanned: i64,
    /// Violations found (rule check), records whose keys were written (backfill) or whose
    /// sensitive values were sealed again (re-encryption).
    pub found: i64,
    pub error: Option<String>,
}

pub(crate) fn job_view(job: &JobRow) -> JobView {
    JobView {
        id: job.id,
        kind: job.kind.clone(),
        object: job.object.clone(),
        field: job.params.get("field").and_then(Value::as_str).map(str::to_owned),
        status: job.status.clone(),
        created_at: micros_to_rfc3339(job.created_at),
        finished_at: job.finished_at.map(micros_to_rfc3339),
        scanned: job.scanned,
        found: job.found,
        error: job.error.clone(),
    }
}

/// One violator of a rule check, as the caller may see it.
#[derive(Debug, Clone, Serialize)]
pub struct ViolationView {
    pub record_id: Uuid,
    pub field: String,
    pub code: String,
    /// The record's current value of the field through the caller's field access (masked, or
    /// absent when hidden or empty).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
}

/// A rule check with the violators inside the caller's read scope.
#[derive(Debug, Clone, Serialize)]
pub struct RuleCheckView {
    #[serde(flatten)]
    pub job: JobView,
    pub violators: Vec<ViolationView>,
    pub next_cursor: Option<String>,
}

/// The parameters of a rule-check job.
struct RuleCheckParams {
    field: String,
    rules: Vec<FieldRule>,
    /// Whether the field's unique keys must be rewritten (unique or its scope changed).
    rekey_unique: bool,
}

fn rule_check_params(job: &JobRow) -> Option<RuleCheckParams> {
    Some(RuleCheckParams {
        field: job.params.get("field")?.as_str()?.to_owned(),
        rules: parse_rules(job.params.get("rules")?).ok()?,
        rekey_unique: job.params.get("rekey_unique").and_then(Value::as_bool).unwrap_or(false),
    })
}

impl Service {
    /// Rules are edited by admins and data stewards.
    fn require_rules_editor(&self, ctx: &RequestContext) -> ServiceResult<()> {
        let role = self.role_of(ctx);
        if role.admin || role.merge { Ok(()) } else { Err(ServiceError::new(ErrorCode::Forbidden)) }
    }

    fn field_of(&self, def: &ObjectDef, field: &str) -> ServiceResult<FieldDef> {
        def.field(field).cloned().ok_or_else(ServiceError::not_found)
    }

    async fn rules_revision(&self, object: &str, field: &str) -> ServiceResult<i64> {
        Ok(self
            .store
            .list_field_rules()
            .await?
            .into_iter()
            .find(|r| r.object == object && r.field == field)
            .map(|r| r.revision)
            .unwrap_or(0))
    }

    /// The rules of a field (anyone who may use the API: the schema is not secret).
    pub async fn field_rules(&self, _ctx: &RequestContext, object: &str, field: &str) -> ServiceResult<FieldRulesView> {
        self.refresh_schema().await?;
        let def = self.object_def(object)?;
        let f = self.field_of(&def, field)?;
        let revision = self.rules_revision(&def.name, &f.name).await?;
        Ok(FieldRulesView { object: def.name.clone(), field: f.name.clone(), rules: rules_of(&f), revision, job: None })
    }

    /// Replaces the rules of a field and starts the re-check of the object's stored records.
    /// `rules` is the request's JSON array; `expected_revision`, when given, must be the
    /// field's current revision (409 `version_conflict` otherwise).
    pub async fn set_field_rules(
        self: &Arc<Self>,
        ctx: &RequestContext,
        object: &str,
        field: &str,
        rules: &Value,
        expected_revision: Option<i64>,
    ) -> ServiceResult<FieldRulesView> {
        if let Err(e) = self.require_rules_editor(ctx) {
            self.audit_refusal(ctx, object, None, "set_rules", &e).await;
            return Err(e);
        }
        self.refresh_schema().await?;
        let def = self.object_def(object)?;
        let f = self.field_of(&def, field)?;
        let rules = parse_rules(rules).map_err(ServiceError::validation)?;
        let problems = check_rules(&def, &f, &rules);
        if !problems.is_empty() {
            return Err(ServiceError::validation(problems));
        }
        let current = self.rules_revision(&def.name, &f.name).await?;
        if expected_revision.is_some_and(|r| r != current) {
            return Err(
                ServiceError::new(ErrorCode::VersionConflict).with_extra(json!({ "current_revision": current }))
            );
        }
        let before = rules_of(&f);
        let mut changed = f.clone();
        apply_rules(&mut changed, &rules);
        let rekey_unique = (f.unique, f.unique_scope) != (changed.unique, changed.unique_scope);
        let rules_json = serde_json::to_value(&rules).map_err(|_| ServiceError::new(ErrorCode::Internal))?;
        let now = now_micros();
        let actor = ctx.actor.as_ref().map(|a| a.user_id);
        let revision = current + 1;
        let params =
            json!({ "field": f.name, "revision": revision, "rules": rules_json, "rekey_unique": rekey_unique });
        let job = JobRow::pending(JOB_RULE_CHECK, &def.name, params, actor, now);
        let mut audit = self.audit_draft(ctx, "schema.set_rules");
        audit.object = Some(def.name.clone());
        audit.details = json!({
            "field": f.name,
            "revision": revision,
            "before": before,
            "after": rules_json,
            "job_id": job.id,
        });
        let row = FieldRulesRow {
            object: def.name.clone(),
            field: f.name.clone(),
            rules: rules_json,
            revision,
            updated_at: now,
            updated_by: actor,
        };
        self.store.put_field_rules(row, job.clone(), audit).await.map_err(|e| match e {
            StoreError::VersionConflict { current } => {
                ServiceError::new(ErrorCode::VersionConflict).with_extra(json!({ "current_revision": current }))
            }
            other => other.into(),
        })?;
        self.refresh_schema().await?;
        // This server starts on the job at once; any other server may take it over.
        self.start_jobs();
        Ok(FieldRulesView {
            object: def.name.clone(),
            field: f.name.clone(),
            rules,
            revision,
            job: Some(job_view(&job)),
        })
    }

    /// A rule check with its violators: only records inside the caller's read scope are listed
    /// (the scope is part of the query), each with the field's value through the caller's field
    /// access. Listing them is an audited read.
    pub async fn rule_check(
        &self,
        ctx: &RequestContext,
        id: Uuid,
        cursor: Option<&str>,
        limit: Option<u32>,
    ) -> ServiceResult<RuleCheckView> {
        let job =
            self.store.get_job(id).await?.filter(|j| j.kind == JOB_RULE_CHECK).ok_or_else(ServiceError::not_found)?;
        let def = self.object_def(&job.object)?;
        if let Err(e) = self.check_object_readable(ctx, &def.name) {
            self.audit_refusal(ctx, &def.name, None, "rule_check", &e).await;
            return Err(e);
        }
        let after = match cursor {
            None => None,
            Some(c) => Some(decode_cursor(id, c).ok_or_else(|| {
                ServiceError::invalid_query("cursor", "invalid_cursor", "The cursor is invalid.", "分页游标无效。")
            })?),
        };
        let limit = self.page_size(limit)?;
        let scope = self.scope_for(ctx, &def.name, Operation::Read).await?;
        let mut rows = self.store.list_job_violations(id, &scope, after.as_ref(), limit + 1).await?;
        let next_cursor = if rows.len() > limit as usize {
            rows.truncate(limit as usize);
            rows.last().map(encode_cursor)
        } else {
            None
        };
        let mut violators = Vec::with_capacity(rows.len());
        let mut records: HashMap<Uuid, Option<Map<String, Value>>> = HashMap::new();
        for row in rows {
            if let std::collections::hash_map::Entry::Vacant(slot) = records.entry(row.record_id) {
                let shown = match self.store.get_record(&def.name, row.record_id, &scope).await? {
                    Some(r) => {
                        let plain = self.decrypt_fields(&def, r.id, &r.fields);
                        Some(self.apply_field_access(ctx, &def, plain).0)
                    }
                    None => None,
                };
                slot.insert(shown);
            }
            let value = records.get(&row.record_id).and_then(|m| m.as_ref()).and_then(|m| m.get(&row.field)).cloned();
            violators.push(ViolationView { record_id: row.record_id, field: row.field, code: row.code, value });
        }
        let ids: Vec<Uuid> = records.keys().copied().collect();
        self.audit_read(
            ctx,
            "record.list",
            &def.name,
            None,
            json!({ "ids": ids, "purpose": "rule_check", "job_id": id }),
        )
        .await?;
        Ok(RuleCheckView { job: job_view(&job), violators, next_cursor })
    }

    /// Starts a backfill of the match keys of an object's active records (data stewards and
    /// admins); returns the job at once.
    pub async fn start_match_key_backfill(
        self: &Arc<Self>,
        ctx: &RequestContext,
        object: &str,
    ) -> ServiceResult<JobView> {
        let def = self.object_def(object)?;
        if let Err(e) = self.require_merge(ctx) {
            self.audit_refusal(ctx, &def.name, None, "match_key_backfill", &e).await;
            return Err(e);
        }
        if crate::duplicates::policy(&def.name).is_none() {
            return Err(ServiceError::validation(vec![FieldError::new(
                "object",
                "not_supported",
                format!("{} records have no match keys.", def.name),
                format!("{} 没有匹配键。", def.name),
            )]));
        }
        let job = self.new_backfill_job(ctx, &def.name);
        let mut audit = self.audit_draft(ctx, "duplicates.backfill");
        audit.object = Some(def.name.clone());
        audit.details = json!({ "job_id": job.id });
        self.store.create_job(job.clone(), audit).await?;
        self.start_jobs();
        Ok(job_view(&job))
    }

    fn new_backfill_job(&self, ctx: &RequestContext, object: &str) -> JobRow {
        JobRow::pending(JOB_MATCH_KEYS, object, json!({}), ctx.actor.as_ref().map(|a| a.user_id), now_micros())
    }

    /// A backfill job (data stewards and admins).
    pub async fn match_key_backfill(&self, ctx: &RequestContext, id: Uuid) -> ServiceResult<JobView> {
        self.require_merge(ctx)?;
        let job =
            self.store.get_job(id).await?.filter(|j| j.kind == JOB_MATCH_KEYS).ok_or_else(ServiceError::not_found)?;
        Ok(job_view(&job))
    }

    /// Runs pending jobs in the background on this server (when configured to).
    pub(crate) fn start_jobs(self: &Arc<Self>) {
        if !self.config.start_jobs_at_once {
            return;
        }
        let service = Arc::clone(self);
        tokio::spawn(async move {
            if let Err(e) = service.run_jobs(&format!("server-{}", Uuid::now_v7())).await {
                tracing::warn!(error = %e, "background jobs stopped early; they resume when claimed again");
            }
        });
    }

    /// Claims and runs jobs until none is left to claim. Returns how many it finished. Store
    /// errors stop it (the job's lease ends and it is claimed again later, from its cursor).
    pub async fn run_jobs(&self, claimant: &str) -> ServiceResult<usize> {
        let mut finished = 0;
        let lease = self.config.job_lease_secs.max(1) * 1_000_000;
        while let Some(job) = self.store.claim_job(claimant, now_micros(), lease).await? {
            if self.run_job(claimant, &job).await? {
                finished += 1;
            }
        }
        Ok(finished)
    }

    /// Runs one claimed job from its cursor to the end, saving each page. Returns false when
    /// the lease was lost (another server holds the job now).
    async fn run_job(&self, claimant: &str, job: &JobRow) -> ServiceResult<bool> {
        if job.kind == custodian_store::JOB_DUPLICATE_SCAN {
            return self.run_scan_job(claimant, job).await;
        }
        self.refresh_schema().await?;
        if job.kind == JOB_REENCRYPT {
            // The key the job seals under may have been added by another server.
            self.refresh_keys().await?;
        }
        let lease = self.config.job_lease_secs.max(1) * 1_000_000;
        let fail = |error: String| JobProgress {
            id: job.id,
            claimant: claimant.to_owned(),
            now: now_micros(),
            lease_until: now_micros(),
            cursor: None,
            scanned: 0,
            violations: Vec::new(),
            refresh: Vec::new(),
            finish: Some(("failed".into(), Some(error))),
        };
        let Ok(def) = self.object_def(&job.object) else {
            return self
                .store
                .save_job_progress(fail(format!("unknown object {}", job.object)))
                .await
                .map_err(Into::into);
        };
        let check = if job.kind == JOB_RULE_CHECK {
            let Some(params) = rule_check_params(job) else {
                return self
                    .store
                    .save_job_progress(fail("unreadable job parameters".into()))
                    .await
                    .map_err(Into::into);
            };
            let Some(mut field) = def.field(&params.field).cloned() else {
                return self
                    .store
                    .save_job_progress(fail(format!("unknown field {}", params.field)))
                    .await
                    .map_err(Into::into);
            };
            apply_rules(&mut field, &params.rules);
            let mut checked = def.clone();
            if let Some(slot) = checked.fields.iter_mut().find(|f| f.name == field.name) {
                *slot = field.clone();
            }
            Some((checked, field, params.rekey_unique))
        } else if job.kind == JOB_MATCH_KEYS || job.kind == JOB_REENCRYPT {
            None
        } else {
            return self
                .store
                .save_job_progress(fail(format!("unknown job kind {}", job.kind)))
                .await
                .map_err(Into::into);
        };
        // Unique values seen so far (digest → first record). A job taken over rebuilds it from
        // the records before its cursor.
        let mut seen: HashMap<Vec<u8>, Uuid> = HashMap::new();
        if let (Some((checked, field, _)), Some(cursor)) = (&check, job.cursor)
            && field.unique
        {
            let mut after = None;
            loop {
                let page = self.job_page(&def.name, after).await?;
                let Some(last) = page.last().map(|r| r.id) else { break };
                for r in page.iter().filter(|r| r.id <= cursor) {
                    let plain = self.decrypt_fields(&def, r.id, &r.fields);
                    if let Some(v) = plain.get(&field.name) {
                        let digest = self.unique_digest(checked, field, r.owner_id, r.team_id, &index_text(v));
                        seen.entry(digest).or_insert(r.id);
                    }
                }
                if last >= cursor {
                    break;
                }
                after = Some(last);
            }
        }
        let mut after = job.cursor;
        let mut resealed = 0i64;
        loop {
            let page = self.job_page(&def.name, after).await?;
            let mut progress = JobProgress {
                id: job.id,
                claimant: claimant.to_owned(),
                now: now_micros(),
                lease_until: now_micros().saturating_add(lease),
                cursor: page.last().map(|r| r.id),
                scanned: page.len() as i64,
                violations: Vec::new(),
                refresh: Vec::new(),
                finish: None,
            };
            for record in &page {
                if job.kind == JOB_REENCRYPT {
                    let envelopes = self.resealed(&def, record);
                    if !envelopes.is_empty() {
                        progress.refresh.push(KeyRefresh {
                            object: def.name.clone(),
                            record_id: record.id,
                            version: record.version,
                            match_keys: None,
                            unique_key: None,
                            envelopes,
                        });
                    }
                    continue;
                }
                let plain = self.decrypt_fields(&def, record.id, &record.fields);
                match &check {
                    Some((checked, field, rekey)) => {
                        self.check_record(job.id, checked, field, *rekey, record, &plain, &mut seen, &mut progress)
                    }
                    None => {
                        if let Some(set) = self.match_key_set(&def, record.id, &plain) {
                            progress.refresh.push(KeyRefresh {
                                object: def.name.clone(),
                                record_id: record.id,
                                version: record.version,
                                match_keys: Some(set.keys),
                                unique_key: None,
                                envelopes: Vec::new(),
                            });
                        }
                    }
                }
            }
            let last_page = page.len() < self.config.job_page_size.max(1) as usize;
            if last_page {
                progress.finish = Some(("done".into(), None));
            }
            resealed += progress.refresh.iter().filter(|k| !k.envelopes.is_empty()).count() as i64;
            if !self.store.save_job_progress(progress).await? {
                return Ok(false);
            }
            if last_page {
                if job.kind == JOB_REENCRYPT {
                    // Written by whichever server ran the job's last page, not by a caller.
                    let mut audit = custodian_store::AuditDraft::new("key.reencrypt_done");
                    audit.user_agent = Some(format!("custodian job {claimant}"));
                    audit.object = Some(def.name.clone());
                    audit.details = json!({ "job_id": job.id, "version": self.keyring.current_version(), "records_resealed": resealed, "resumed": job.cursor.is_some() });
                    self.store.append_audit(vec![audit]).await?;
                }
                return Ok(true);
            }
            after = page.last().map(|r| r.id);
        }
    }

    /// Active records of an object after `after`, in id order, one page.
    async fn job_page(&self, object: &str, after: Option<Uuid>) -> ServiceResult<Vec<StoredRecord>> {
        let mut query = ListQuery::new(object.to_owned());
        query.limit = self.config.job_page_size.max(1);
        if let Some(after) = after {
            query.filters.push(Filter::Column { column: Column::Id, op: FilterOp::Gt(FilterValue::Uuid(after)) });
        }
        Ok(self.store.list_records(&query).await?.items)
    }

    /// Checks one stored record against a rule-check job's rules (of one field).
    #[allow(clippy::too_many_arguments)]
    fn check_record(
        &self,
        job_id: Uuid,
        checked: &ObjectDef,
        field: &FieldDef,
        rekey: bool,
        record: &StoredRecord,
        plain: &Map<String, Value>,
        seen: &mut HashMap<Vec<u8>, Uuid>,
        progress: &mut JobProgress,
    ) {
        let mut codes: Vec<String> = Vec::new();
        if let Err(errors) = validate_record(checked, None, plain, &self.stored_values_context()) {
            codes.extend(errors.into_iter().filter(|e| e.field == field.name).map(|e| e.code));
        }
        let unique_key = match plain.get(&field.name).filter(|_| field.unique) {
            Some(value) => {
                let digest = self.unique_digest(checked, field, record.owner_id, record.team_id, &index_text(value));
                match seen.get(&digest) {
                    Some(first) if *first != record.id => {
                        codes.push("duplicate".into());
                        progress.violations.push(ViolationRow {
                            job_id,
                            record_id: *first,
                            field: field.name.clone(),
                            code: "duplicate".into(),
                        });
                    }
                    _ => {
                        seen.insert(digest.clone(), record.id);
                    }
                }
                (field.name.clone(), Some(digest))
            }
            None => (field.name.clone(), None),
        };
        if rekey {
            progress.refresh.push(KeyRefresh {
                object: checked.name.clone(),
                record_id: record.id,
                version: record.version,
                match_keys: None,
                unique_key: Some(unique_key),
                envelopes: Vec::new(),
            });
        }
        codes.sort();
        codes.dedup();
        for code in codes {
            progress.violations.push(ViolationRow { job_id, record_id: record.id, field: field.name.clone(), code });
        }
    }
}

fn encode_cursor(v: &ViolationRow) -> String {
    B64.encode(json!([v.record_id, v.field, v.code]).to_string())
}

fn decode_cursor(job_id: Uuid, cursor: &str) -> Option<ViolationRow> {
    let bytes = B64.decode(cursor).ok()?;
    let value: Value = serde_json::from_slice(&bytes).ok()?;
    let items = value.as_array()?;
    Some(ViolationRow {
        job_id,
        record_id: Uuid::parse_str(items.first()?.as_str()?).ok()?,
        field: items.get(1)?.as_str()?.to_owned(),
        code: items.get(2)?.as_str()?.to_owned(),
    })
}
