//! Record history beyond the version list (S7): a record as of any time, the difference between
//! two versions, and reverting a whole record or one field to an earlier version. A revert is a
//! new version written through the one write path (validated, authorised, audited); nothing is
//! overwritten.

use crate::access::Operation;
use crate::error::{ServiceError, ServiceResult, again_if_stale};
use crate::view::{RecordView, VersionView};
use crate::{RequestContext, Service, WriteOptions};
use custodian_core::values::validate_record;
use custodian_core::{ErrorCode, FieldError};
use custodian_store::{StoredRecord, WriteAction, now_micros};
use serde::Serialize;
use serde_json::{Map, Value, json};
use std::collections::BTreeSet;
use uuid::Uuid;

/// Field-level difference between two versions of a record.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct VersionDiff {
    pub record_id: Uuid,
    pub from: i64,
    pub to: i64,
    /// `{field: {"old": …, "new": …}}` for every field that differs, as the caller may see it.
    pub changes: Map<String, Value>,
}

impl Service {
    /// The record as it was at `at` (microseconds since the epoch): the last version written
    /// at or before that moment. 404 when the record did not exist yet.
    pub async fn record_as_of(
        &self,
        ctx: &RequestContext,
        object: &str,
        id: Uuid,
        at: i64,
    ) -> ServiceResult<VersionView> {
        let def = self.object_def(object)?;
        self.load_audited(ctx, &def, id, Operation::Read, "history").await?;
        let v = self.store.version_at(&def.name, id, at).await?.ok_or_else(ServiceError::not_found)?;
        let view = self.version_view(ctx, &def, &v);
        self.audit_read(ctx, "record.history", &def.name, Some(id), json!({ "as_of": at, "version": v.version }))
            .await?;
        Ok(view)
    }

    /// Differences between versions `from` and `to`, with field visibility applied to both sides.
    pub async fn diff_versions(
        &self,
        ctx: &RequestContext,
        object: &str,
        id: Uuid,
        from: i64,
        to: i64,
    ) -> ServiceResult<VersionDiff> {
        let def = self.object_def(object)?;
        self.load_audited(ctx, &def, id, Operation::Read, "history").await?;
        let a = self.store.get_version(&def.name, id, from).await?.ok_or_else(ServiceError::not_found)?;
        let b = self.store.get_version(&def.name, id, to).await?.ok_or_else(ServiceError::not_found)?;
        let (plain_a, plain_b) = (self.decrypt_fields(&def, id, &a.fields), self.decrypt_fields(&def, id, &b.fields));
        let old = self.version_view(ctx, &def, &a);
        let new = self.version_view(ctx, &def, &b);
        let mut changes = Map::new();
        let names: BTreeSet<&String> = old.fields.keys().chain(new.fields.keys()).collect();
        for name in names {
            let (o, n) = (old.fields.get(name), new.fields.get(name));
            // Masked values that differ in clear may look equal: compare the clear values (not
            // the stored envelopes, which are re-encrypted with a fresh nonce at every write).
            let clear_differs = plain_a.get(name) != plain_b.get(name);
            if o != n || clear_differs {
                changes.insert(
                    name.clone(),
                    json!({ "old": o.cloned().unwrap_or(Value::Null), "new": n.cloned().unwrap_or(Value::Null) }),
                );
            }
        }
        self.audit_read(ctx, "record.history", &def.name, Some(id), json!({ "diff": [from, to] })).await?;
        Ok(VersionDiff { record_id: id, from, to, changes })
    }

    /// Reverts the whole record (or only `field`) to the values of `version`, as a new version.
    pub async fn revert_record(
        &self,
        ctx: &RequestContext,
        object: &str,
        id: Uuid,
        version: i64,
        field: Option<&str>,
        options: &WriteOptions,
    ) -> ServiceResult<RecordView> {
        again_if_stale(|| self.revert_record_once(ctx, object, id, version, field, options)).await
    }

    async fn revert_record_once(
        &self,
        ctx: &RequestContext,
        object: &str,
        id: Uuid,
        version: i64,
        field: Option<&str>,
        options: &WriteOptions,
    ) -> ServiceResult<RecordView> {
        self.refresh_schema_if_stale().await?;
        let def = self.object_def(object)?;
        let current = self.load_audited(ctx, &def, id, Operation::Update, "revert").await?;
        if current.deleted_at.is_some() {
            return Err(ServiceError::with_message(ErrorCode::Conflict, "The record is deleted; restore it first."));
        }
        if let Some(v) = options.expected_version
            && v != current.version
        {
            return Err(
                ServiceError::new(ErrorCode::VersionConflict).with_extra(json!({ "current_version": current.version }))
            );
        }
        let target = self.store.get_version(&def.name, id, version).await?.ok_or_else(ServiceError::not_found)?;
        let before = self.decrypt_fields(&def, id, &current.fields);
        let old = self.decrypt_fields(&def, id, &target.fields);
        let mut wanted = match field {
            None => old.clone(),
            Some(name) => {
                if def.field(name).is_none() {
                    return Err(ServiceError::validation(vec![FieldError::new(
                        name,
                        "unknown_field",
                        "No such field.",
                        "字段不存在。",
                    )]));
                }
                let mut m = before.clone();
                match old.get(name) {
                    Some(v) => m.insert(name.to_owned(), v.clone()),
                    None => m.remove(name),
                };
                m
            }
        };
        // Fields the schema no longer has are not brought back.
        wanted.retain(|k, _| def.field(k).is_some());
        // Only changed fields need write permission; the result is re-validated against today's
        // rules like any other write.
        let changed: Map<String, Value> = before
            .keys()
            .chain(wanted.keys())
            .filter(|k| before.get(*k) != wanted.get(*k))
            .map(|k| (k.clone(), wanted.get(k).cloned().unwrap_or(Value::Null)))
            .collect();
        self.check_field_writes(ctx, &def, &changed)?;
        let after =
            validate_record(&def, None, &wanted, &self.stored_values_context()).map_err(ServiceError::validation)?;
        if after == before {
            return self.unchanged_view(ctx, &def, &current, "revert").await;
        }
        Self::refuse_locked_changes(&def, &before, &after)?;
        self.check_references(&def, &after).await?;
        // Bringing back old values must not recreate a duplicate of a strong key.
        let check = crate::duplicates::CheckOptions {
            record_id: Some(id),
            before: Some(&before),
            exact_only: true,
            ..Default::default()
        };
        let checked = self.check_duplicates(ctx, &def, &after, check).await?;
        let next = StoredRecord {
            version: current.version + 1,
            updated_at: now_micros().max(current.updated_at),
            updated_by: ctx.actor.as_ref().map(|a| a.user_id),
            ..current.clone()
        };
        let mut prepared =
            self.prepare_write(ctx, &def, WriteAction::Update, Some(&current), Some(&before), &after, next)?;
        prepared.guard(checked.guard);
        prepared.audit.action = "record.revert".into();
        if let Value::Object(details) = &mut prepared.audit.details {
            details.insert("reverted_to".into(), json!(version));
            details.insert("field".into(), json!(field));
        }
        self.apply(vec![prepared]).await?;
        self.get_record(ctx, object, id).await
    }
}
