//! Merge and unmerge (PRODUCT.md A5). A merge is one `WriteBatch` through the write path:
//! the losers become soft-deleted tombstones (their merge row says which survivor they went
//! into), the survivor gets a new version with the chosen values, records that referred to a
//! loser are re-parented to the survivor (each a new version), and one merge row records the
//! version every touched record had before and after, which is what undo needs: it brings back
//! each record's pre-merge version as a new version, provided nothing changed it since.

use crate::access::Operation;
use crate::duplicates::CheckOptions;
use crate::error::{ServiceError, ServiceResult};
use crate::records::Prepared;
use crate::view::micros_to_rfc3339;
use crate::{RequestContext, Service};
use custodian_core::schema::{FieldType, ObjectDef};
use custodian_core::values::validate_record;
use custodian_core::{ErrorCode, FieldError};
use custodian_store::{
    Column, DeletedFilter, Filter, FilterOp, FilterValue, ListQuery, MergeChange, MergeRow, RowScope, StoredRecord,
    ValueKind, WriteAction, WriteBatch, now_micros,
};
use serde::Serialize;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use uuid::Uuid;

/// Most losers merged into one survivor at once.
pub const MAX_LOSERS: usize = 20;

/// How values not chosen explicitly are picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MergeRule {
    /// The survivor's value; where it has none, the most recently updated other record's.
    #[default]
    Survivor,
    /// The value of the most recently updated record that has one.
    Newest,
    /// The value of the record with the most filled fields that has one.
    MostComplete,
    /// The value of the record whose `source` comes first in the request's `trusted_sources`
    /// that has one (records of other or no source after those listed; the newest among equals).
    TrustedSource,
}

impl MergeRule {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "survivor" => Some(MergeRule::Survivor),
            "newest" => Some(MergeRule::Newest),
            "most_complete" => Some(MergeRule::MostComplete),
            "trusted_source" => Some(MergeRule::TrustedSource),
            _ => None,
        }
    }
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            MergeRule::Survivor => "survivor",
            MergeRule::Newest => "newest",
            MergeRule::MostComplete => "most_complete",
            MergeRule::TrustedSource => "trusted_source",
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct MergeRequest {
    pub object: String,
    pub survivor_id: Uuid,
    pub loser_ids: Vec<Uuid>,
    /// Field name → id of the record (survivor or loser) whose value the survivor takes.
    pub fields: BTreeMap<String, Uuid>,
    pub rule: MergeRule,
    /// For `MergeRule::TrustedSource`: values of the object's `source` field, most trusted
    /// first. Empty for the other rules.
    pub trusted_sources: Vec<String>,
    /// Set when a scan merges by itself (auto-merge): the scan job, its threshold and the
    /// steward who asked for it, kept in the merge row and its audit event.
    pub auto: Option<Value>,
}

/// One record a merge wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct MergedRecord {
    pub object: String,
    pub id: Uuid,
    pub before_version: i64,
    pub after_version: i64,
    /// "survivor", "loser" or "reparented".
    pub role: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct MergeView {
    pub id: Uuid,
    pub object: String,
    pub survivor_id: Uuid,
    pub loser_ids: Vec<Uuid>,
    pub records: Vec<MergedRecord>,
    pub rule: String,
    /// The source ranking of a `trusted_source` merge, most trusted first.
    pub trusted_sources: Vec<String>,
    /// The scan job, threshold and requesting steward of an auto-merge; `None` for a
    /// steward's own merge.
    pub auto: Option<Value>,
    pub created_at: String,
    pub created_by: Option<Uuid>,
    pub undone_at: Option<String>,
    pub undone_by: Option<Uuid>,
}

fn merge_view(row: &MergeRow) -> MergeView {
    MergeView {
        id: row.id,
        object: row.object.clone(),
        survivor_id: row.survivor_id,
        loser_ids: row.loser_ids.clone(),
        records: serde_json::from_value(row.records.clone()).unwrap_or_default(),
        rule: row.request.get("rule").and_then(Value::as_str).unwrap_or("survivor").to_owned(),
        trusted_sources: row
            .request
            .get("trusted_sources")
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default(),
        auto: row.request.get("auto").filter(|v| !v.is_null()).cloned(),
        created_at: micros_to_rfc3339(row.created_at),
        created_by: row.created_by,
        undone_at: row.undone_at.map(micros_to_rfc3339),
        undone_by: row.undone_by,
    }
}

fn invalid(field: &str, code: &str, en: impl Into<String>, zh: impl Into<String>) -> ServiceError {
    ServiceError::validation(vec![FieldError::new(field, code, en, zh)])
}

/// Whether a field value counts as filled.
fn filled(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(_) => true,
    }
}

/// Refuses a source ranking that does not fit the rule or the object: `trusted_source` needs
/// one (distinct values of the object's `source` field, at least one), the other rules none.
pub(crate) fn check_trusted_sources(def: &ObjectDef, rule: MergeRule, ranking: &[String]) -> ServiceResult<()> {
    if rule != MergeRule::TrustedSource {
        if ranking.is_empty() {
            return Ok(());
        }
        return Err(invalid(
            "trusted_sources",
            "invalid",
            "trusted_sources goes with the rule trusted_source only.",
            "trusted_sources 仅用于 trusted_source 规则。",
        ));
    }
    let Some(options) = def.source_choices() else {
        return Err(invalid(
            "rule",
            "not_supported",
            format!("{} records have no choice of sources to trust.", def.name),
            format!("{} 记录没有可选的来源字段，不能按可信来源合并。", def.name),
        ));
    };
    let mut seen: Vec<&str> = Vec::new();
    for value in ranking {
        if !options.iter().any(|o| o == value) || seen.contains(&value.as_str()) {
            return Err(invalid(
                "trusted_sources",
                "invalid_value",
                format!("List distinct sources, most trusted first, from: {}.", options.join(", ")),
                format!("请按可信程度从高到低列出不重复的来源，可选：{}。", options.join("、")),
            ));
        }
        seen.push(value);
    }
    if seen.is_empty() {
        return Err(invalid(
            "trusted_sources",
            "required",
            "The rule trusted_source needs trusted_sources, most trusted first.",
            "trusted_source 规则须提供 trusted_sources（可信程度从高到低）。",
        ));
    }
    Ok(())
}

/// A record with its decrypted fields.
struct Loaded {
    record: StoredRecord,
    plain: Map<String, Value>,
}

impl Service {
    /// Merges `loser_ids` into `survivor_id` in one transaction (see the module comment).
    pub async fn merge_records(&self, ctx: &RequestContext, request: &MergeRequest) -> ServiceResult<MergeView> {
        self.refresh_schema_if_stale().await?;
        let def = self.object_def(&request.object)?;
        if let Err(e) = self.require_merge(ctx) {
            self.audit_refusal(ctx, &def.name, Some(request.survivor_id), "merge", &e).await;
            return Err(e);
        }
        // A merge rewrites several records at once: it needs a fresh second factor.
        self.require_step_up(ctx, "record.merge").await?;
        let mut losers_seen = Vec::new();
        for id in &request.loser_ids {
            if *id == request.survivor_id || losers_seen.contains(id) {
                return Err(invalid(
                    "loser_ids",
                    "invalid",
                    "loser_ids must be distinct and must not contain the survivor.",
                    "loser_ids 不能重复，也不能包含保留记录。",
                ));
            }
            losers_seen.push(*id);
        }
        if losers_seen.is_empty() || losers_seen.len() > MAX_LOSERS {
            return Err(invalid(
                "loser_ids",
                "out_of_range",
                format!("Merge 1 to {MAX_LOSERS} records into the survivor."),
                format!("每次可合并 1 到 {MAX_LOSERS} 条记录。"),
            ));
        }
        let survivor = self.load_for_merge(ctx, &def, request.survivor_id, Operation::Update).await?;
        let mut losers = Vec::with_capacity(losers_seen.len());
        for id in &losers_seen {
            losers.push(self.load_for_merge(ctx, &def, *id, Operation::Delete).await?);
        }

        // The survivor's new values.
        let mut all: Vec<&Loaded> = vec![&survivor];
        all.extend(losers.iter());
        for (name, source) in &request.fields {
            if def.field(name).is_none() {
                return Err(invalid(name, "unknown_field", "No such field.", "字段不存在。"));
            }
            if !all.iter().any(|l| l.record.id == *source) {
                return Err(invalid(
                    name,
                    "invalid",
                    "The value must come from the survivor or one of the losers.",
                    "字段值须取自保留记录或被合并记录。",
                ));
            }
        }
        check_trusted_sources(&def, request.rule, &request.trusted_sources)?;
        let mut newest_first: Vec<&Loaded> = all.clone();
        newest_first.sort_by_key(|l| std::cmp::Reverse(l.record.updated_at));
        // Most trusted source first, then newest (a stable sort keeps that order among equals).
        let mut most_trusted: Vec<&Loaded> = newest_first.clone();
        most_trusted.sort_by_key(|l| {
            let source = l.plain.get("source").and_then(Value::as_str);
            request.trusted_sources.iter().position(|t| Some(t.as_str()) == source).unwrap_or(usize::MAX)
        });
        let mut most_complete: Vec<&Loaded> = all.clone();
        most_complete.sort_by_key(|l| std::cmp::Reverse(l.plain.values().filter(|v| filled(Some(v))).count()));
        let mut merged = Map::new();
        for f in &def.fields {
            let name = f.name.as_str();
            let pick: Option<&Loaded> = match request.fields.get(name) {
                Some(source) => all.iter().copied().find(|l| l.record.id == *source),
                None => match request.rule {
                    MergeRule::Survivor => {
                        if filled(survivor.plain.get(name)) {
                            Some(&survivor)
                        } else {
                            newest_first.iter().copied().find(|l| filled(l.plain.get(name)))
                        }
                    }
                    MergeRule::Newest => newest_first.iter().copied().find(|l| filled(l.plain.get(name))),
                    MergeRule::MostComplete => most_complete.iter().copied().find(|l| filled(l.plain.get(name))),
                    MergeRule::TrustedSource => most_trusted.iter().copied().find(|l| filled(l.plain.get(name))),
                },
            };
            if let Some(value) = pick.and_then(|l| l.plain.get(name)).filter(|v| filled(Some(v))) {
                merged.insert(name.to_owned(), value.clone());
            }
        }
        let changes: Map<String, Value> = def
            .fields
            .iter()
            .filter(|f| survivor.plain.get(&f.name) != merged.get(&f.name))
            .map(|f| (f.name.clone(), merged.get(&f.name).cloned().unwrap_or(Value::Null)))
            .collect();
        self.check_field_writes(ctx, &def, &changes)?;
        let merged =
            validate_record(&def, None, &merged, &self.stored_values_context()).map_err(ServiceError::validation)?;
        Self::refuse_locked_changes(&def, &survivor.plain, &merged)?;
        self.check_references(&def, &merged).await?;
        let check = CheckOptions {
            record_id: Some(survivor.record.id),
            before: Some(&survivor.plain),
            exclude: &losers_seen,
            exact_only: true,
            ..Default::default()
        };
        self.check_duplicates(ctx, &def, &merged, check).await?;

        // The writes: losers first (their unique values are freed before the survivor may take
        // them), then the survivor, then the re-parented records.
        let merge_id = Uuid::now_v7();
        let now = now_micros();
        let actor = ctx.actor.as_ref().map(|a| a.user_id);
        let mut prepared: Vec<Prepared> = Vec::new();
        let mut touched: Vec<MergedRecord> = Vec::new();
        for loser in &losers {
            let next = StoredRecord {
                version: loser.record.version + 1,
                updated_at: now.max(loser.record.updated_at),
                updated_by: actor,
                deleted_at: Some(now.max(loser.record.updated_at)),
                ..loser.record.clone()
            };
            prepared.push(self.prepare_write(
                ctx,
                &def,
                WriteAction::Delete,
                Some(&loser.record),
                Some(&loser.plain),
                &loser.plain,
                next,
            )?);
            touched.push(MergedRecord {
                object: def.name.clone(),
                id: loser.record.id,
                before_version: loser.record.version,
                after_version: loser.record.version + 1,
                role: "loser".into(),
            });
        }
        let next = StoredRecord {
            version: survivor.record.version + 1,
            updated_at: now.max(survivor.record.updated_at),
            updated_by: actor,
            ..survivor.record.clone()
        };
        prepared.push(self.prepare_write(
            ctx,
            &def,
            WriteAction::Update,
            Some(&survivor.record),
            Some(&survivor.plain),
            &merged,
            next,
        )?);
        touched.push(MergedRecord {
            object: def.name.clone(),
            id: survivor.record.id,
            before_version: survivor.record.version,
            after_version: survivor.record.version + 1,
            role: "survivor".into(),
        });
        for (rdef, record, plain) in self.referring_records(&def, &losers_seen).await? {
            if record.id == survivor.record.id || losers_seen.contains(&record.id) {
                continue;
            }
            let mut after = plain.clone();
            for f in rdef.fields.iter().filter(|f| f.field_type == FieldType::Reference) {
                if let Some(value) = after.get_mut(&f.name)
                    && let Some(id) = value.as_str().and_then(|s| Uuid::parse_str(s).ok())
                    && losers_seen.contains(&id)
                {
                    *value = Value::String(survivor.record.id.to_string());
                }
            }
            let next = StoredRecord {
                version: record.version + 1,
                updated_at: now.max(record.updated_at),
                updated_by: actor,
                ..record.clone()
            };
            prepared.push(self.prepare_write(
                ctx,
                &rdef,
                WriteAction::Update,
                Some(&record),
                Some(&plain),
                &after,
                next,
            )?);
            touched.push(MergedRecord {
                object: rdef.name.clone(),
                id: record.id,
                before_version: record.version,
                after_version: record.version + 1,
                role: "reparented".into(),
            });
        }
        for p in &mut prepared {
            if let Value::Object(details) = &mut p.audit.details {
                details.insert("merge_id".into(), json!(merge_id));
            }
        }
        let row = MergeRow {
            id: merge_id,
            object: def.name.clone(),
            survivor_id: survivor.record.id,
            loser_ids: losers_seen.clone(),
            records: serde_json::to_value(&touched).unwrap_or_default(),
            request: json!({
                "fields": request.fields,
                "rule": request.rule.as_str(),
                "trusted_sources": request.trusted_sources,
                "auto": request.auto,
            }),
            created_at: now,
            created_by: actor,
            undone_at: None,
            undone_by: None,
        };
        let mut event = self.audit_draft(ctx, "record.merge");
        event.object = Some(def.name.clone());
        event.record_id = Some(survivor.record.id);
        event.details = json!({
            "merge_id": merge_id,
            "survivor_id": survivor.record.id,
            "loser_ids": losers_seen,
            "fields": request.fields,
            "rule": request.rule.as_str(),
            "trusted_sources": request.trusted_sources,
            "records": touched,
            "auto": request.auto,
        });
        self.apply_merge_batch(prepared, event, MergeChange::Record(Box::new(row.clone()))).await?;
        Ok(merge_view(&row))
    }

    /// A merge (audited as a read of its record ids only).
    pub async fn get_merge(&self, ctx: &RequestContext, id: Uuid) -> ServiceResult<MergeView> {
        self.merge_or_refuse(ctx, "merges", "merge.get").await?;
        let row = self.store.get_merge(id).await?.ok_or_else(ServiceError::not_found)?;
        let read = self.scope_for(ctx, &row.object, Operation::Read).await?;
        if self.store.get_record(&row.object, row.survivor_id, &read).await?.is_none() {
            return Err(ServiceError::not_found());
        }
        Ok(merge_view(&row))
    }

    /// Undoes a merge: every record it wrote gets a new version with its pre-merge values,
    /// owner, team and deleted state (losers come back, unique keys with them). Refused with 409
    /// `conflict` when any of them changed since the merge, and when it was undone already.
    pub async fn undo_merge(&self, ctx: &RequestContext, id: Uuid) -> ServiceResult<MergeView> {
        if let Err(e) = self.require_merge(ctx) {
            self.audit_refusal(ctx, "merges", Some(id), "unmerge", &e).await;
            return Err(e);
        }
        self.require_step_up(ctx, "record.unmerge").await?;
        let row = self.store.get_merge(id).await?.ok_or_else(ServiceError::not_found)?;
        let def = self.object_def(&row.object)?;
        self.load_audited(ctx, &def, row.survivor_id, Operation::Update, "unmerge").await?;
        if row.undone_at.is_some() {
            return Err(ServiceError::with_message(ErrorCode::Conflict, "This merge was undone already."));
        }
        let touched: Vec<MergedRecord> = serde_json::from_value(row.records.clone()).map_err(|e| {
            tracing::error!(merge = %id, error = %e, "stored merge row is unreadable");
            ServiceError::new(ErrorCode::Internal)
        })?;
        let mut current = Vec::with_capacity(touched.len());
        let mut changed = Vec::new();
        for t in &touched {
            let record = self.store.get_record(&t.object, t.id, &RowScope::All).await?.ok_or_else(|| {
                tracing::error!(merge = %id, record = %t.id, "a merged record is missing");
                ServiceError::new(ErrorCode::Internal)
            })?;
            if record.version != t.after_version {
                changed.push(json!({ "object": t.object, "id": t.id }));
            }
            current.push(record);
        }
        if !changed.is_empty() {
            return Err(ServiceError::with_message(
                ErrorCode::Conflict,
                "Records changed since the merge; undo would overwrite those changes.",
            )
            .with_extra(json!({ "changed": changed })));
        }
        // Survivor and re-parented records first (they release values the losers take back).
        let mut order: Vec<usize> = (0..touched.len()).collect();
        order.sort_by_key(|&i| touched[i].role == "loser");
        let now = now_micros();
        let actor = ctx.actor.as_ref().map(|a| a.user_id);
        let mut prepared = Vec::with_capacity(touched.len());
        let merged_ids: Vec<Uuid> = touched.iter().map(|t| t.id).collect();
        for i in order {
            let (t, record) = (&touched[i], &current[i]);
            let rdef = self.object_def(&t.object)?;
            let before = self.store.get_version(&t.object, t.id, t.before_version).await?.ok_or_else(|| {
                tracing::error!(merge = %id, record = %t.id, "a pre-merge version is missing");
                ServiceError::new(ErrorCode::Internal)
            })?;
            let plain_now = self.decrypt_fields(&rdef, t.id, &record.fields);
            let plain_before = self.decrypt_fields(&rdef, t.id, &before.fields);
            let at = now.max(record.updated_at);
            let next = StoredRecord {
                version: record.version + 1,
                owner_id: before.owner_id,
                team_id: before.team_id,
                updated_at: at,
                updated_by: actor,
                deleted_at: before.deleted_at,
                ..record.clone()
            };
            let action = if record.deleted_at.is_some() && before.deleted_at.is_none() {
                WriteAction::Restore
            } else {
                WriteAction::Update
            };
            if action == WriteAction::Restore {
                // Nor may undo bring back a customer that exists again meanwhile (a new record
                // took a loser's mobile, say): 409 `duplicate` with the candidates, nothing changed.
                let check = CheckOptions {
                    record_id: Some(t.id),
                    exclude: &merged_ids,
                    exact_only: true,
                    ..CheckOptions::default()
                };
                self.check_duplicates(ctx, &rdef, &plain_before, check).await?;
            }
            // Undo brings back the state before the merge, in which these records may share
            // strong keys (that is often why they were merged): the store lets them share them
            // again (`WriteBatch::exclusive_key_peers`) but refuses at commit a key another
            // record took since, also one taken while this undo was being prepared.
            let mut p = self.prepare_write(ctx, &rdef, action, Some(record), Some(&plain_now), &plain_before, next)?;
            if let Value::Object(details) = &mut p.audit.details {
                details.insert("unmerge_id".into(), json!(id));
            }
            prepared.push(p);
        }
        let mut event = self.audit_draft(ctx, "record.unmerge");
        event.object = Some(def.name.clone());
        event.record_id = Some(row.survivor_id);
        event.details = json!({ "merge_id": id, "records": touched });
        let change = MergeChange::Undo { id, undone_at: now, undone_by: actor };
        self.apply_merge_batch(prepared, event, change).await?;
        let row = self.store.get_merge(id).await?.ok_or_else(ServiceError::not_found)?;
        Ok(merge_view(&row))
    }

    async fn apply_merge_batch(
        &self,
        prepared: Vec<Prepared>,
        event: custodian_store::AuditDraft,
        change: MergeChange,
    ) -> ServiceResult<()> {
        self.check_unique_values(&prepared).await?;
        let mut batch = WriteBatch::default();
        // A merge (or its undo) that changes a survivor's owner, stage or amount tells the
        // owners and their managers like any other update, in the same transaction.
        (batch.notifications, batch.outbox) = self.notifications_for(&prepared).await?;
        for p in prepared {
            batch.records.push(p.write);
            batch.audit.push(p.audit);
            batch.match_keys.extend(p.match_keys);
        }
        batch.audit.push(event);
        batch.merge = Some(change);
        self.store.write(batch).await.map_err(|e| match e {
            custodian_store::StoreError::AlreadyExists(_) => {
                ServiceError::with_message(ErrorCode::Conflict, "This merge was undone already.")
            }
            other => other.into(),
        })?;
        Ok(())
    }

    async fn load_for_merge(
        &self,
        ctx: &RequestContext,
        def: &ObjectDef,
        id: Uuid,
        op: Operation,
    ) -> ServiceResult<Loaded> {
        let loaded = self.load_scoped(ctx, def, id, op).await;
        if let Err(e) = &loaded {
            self.audit_refusal(ctx, &def.name, Some(id), "merge", e).await;
        }
        let record = loaded?;
        if record.deleted_at.is_some() {
            return Err(ServiceError::with_message(ErrorCode::Conflict, format!("Record {id} is deleted.")));
        }
        let plain = self.decrypt_fields(def, id, &record.fields);
        Ok(Loaded { record, plain })
    }

    /// Active records of any object that refer to one of `ids` (records of `target`): through a
    /// reference field aimed at `target`, or through `related_id` with `related_object` equal to
    /// `target` (activities).
    async fn referring_records(
        &self,
        target: &ObjectDef,
        ids: &[Uuid],
    ) -> ServiceResult<Vec<(ObjectDef, StoredRecord, Map<String, Value>)>> {
        let schema = self.schema();
        let mut found: BTreeMap<Uuid, (ObjectDef, StoredRecord, Map<String, Value>)> = BTreeMap::new();
        for object in schema.objects() {
            for f in object.fields.iter().filter(|f| f.field_type == FieldType::Reference) {
                let polymorphic = f.reference.is_none() && object.field("related_object").is_some();
                if f.reference.as_deref() != Some(target.name.as_str()) && !polymorphic {
                    continue;
                }
                for id in ids {
                    let mut query = ListQuery::new(object.name.clone());
                    query.scope = RowScope::All;
                    query.deleted = DeletedFilter::Active;
                    query.limit = 500;
                    query.filters.push(Filter::Column {
                        column: Column::Field { path: vec![f.name.clone()], kind: ValueKind::Text },
                        op: FilterOp::Eq(FilterValue::Text(id.to_string())),
                    });
                    if polymorphic {
                        query.filters.push(Filter::Column {
                            column: Column::Field { path: vec!["related_object".into()], kind: ValueKind::Text },
                            op: FilterOp::Eq(FilterValue::Text(target.name.clone())),
                        });
                    }
                    loop {
                        let page = self.store.list_records(&query).await?;
                        for record in page.items {
                            if let std::collections::btree_map::Entry::Vacant(slot) = found.entry(record.id) {
                                let plain = self.decrypt_fields(object, record.id, &record.fields);
                                slot.insert((object.clone(), record, plain));
                            }
                        }
                        match page.next {
                            Some(next) => query.after = Some(next),
                            None => break,
                        }
                    }
                }
            }
        }
        Ok(found.into_values().collect())
    }
}
