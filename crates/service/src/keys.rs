//! Loading the keyring: data keys and the blind-index root key are kept in the store wrapped
//! by the master key; the first start generates them. Two servers starting at once agree on
//! one key because `insert_wrapped_key` inserts only when the label is free.
//!
//! Rotation (PRODUCT.md S5): an admin (with a fresh step-up) or the operator adds data key
//! version N+1 (`key.rotate`); inserting it moves the cache epoch, so every server unwraps it
//! within `CACHE_EPOCH_POLL` and seals new values with it. One resumable job per object with
//! sensitive fields then seals the stored values of active records again (`JOB_REENCRYPT`),
//! in the records' current state only: record versions are immutable, so every key version
//! stays in the store to open them. The index root (blind indexes, unique keys) is not
//! rotated: its digests are what equality lookups and uniqueness rest on.

use crate::error::{ServiceError, ServiceResult};
use crate::rules::JobView;
use crate::{RequestContext, Service};
use custodian_core::ErrorCode;
use custodian_core::schema::ObjectDef;
use custodian_crypto::{INDEX_KEY_LABEL, Key, Keyring, MasterKey, data_key_label};
use custodian_store::{AuditDraft, JOB_REENCRYPT, JobRow, Store, StoredRecord, WrappedKeyRow, now_micros};
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;

fn key_error(e: impl std::fmt::Display) -> ServiceError {
    tracing::error!(error = %e, "key material problem");
    ServiceError::with_message(ErrorCode::Internal, format!("key material: {e}"))
}

pub async fn load_keyring(store: &dyn Store, master: &MasterKey) -> ServiceResult<Keyring> {
    let mut rows = store.list_wrapped_keys().await?;
    let first_data = data_key_label(1);
    let mut generated = false;
    for label in [first_data.as_str(), INDEX_KEY_LABEL] {
        if !rows.iter().any(|r| r.label == label) {
            let key = Key::generate().map_err(key_error)?;
            let wrapped = master.wrap(&key, label).map_err(key_error)?;
            // The event names the key, never its material (which exists here only wrapped).
            let mut audit = AuditDraft::new("key.create");
            audit.user_agent = Some("custodian".into());
            audit.details = json!({ "label": label, "wrapped_by": "master key", "purpose": if label == INDEX_KEY_LABEL {
                "blind indexes and unique keys"
            } else {
                "field encryption"
            } });
            store.insert_wrapped_key(WrappedKeyRow { label: label.to_owned(), wrapped }, audit).await?;
            generated = true;
        }
    }
    if generated {
        rows = store.list_wrapped_keys().await?;
    }
    let mut data_keys = BTreeMap::new();
    let mut index_root = None;
    for row in rows {
        let key = master.unwrap(&row.wrapped, &row.label).map_err(key_error)?;
        if row.label == INDEX_KEY_LABEL {
            index_root = Some(key);
        } else if let Some(v) = row.label.strip_prefix("data:").and_then(|v| v.parse::<u32>().ok()) {
            data_keys.insert(v, key);
        }
    }
    let index_root = index_root.ok_or_else(|| key_error("the index key is missing"))?;
    Keyring::new(data_keys, index_root)
        .map(|k| k.with_master(master.duplicate()))
        .ok_or_else(|| key_error("no data key"))
}

/// The data key versions and which one seals new values.
#[derive(Debug, Clone, Serialize)]
pub struct KeyStatus {
    pub current_version: u32,
    pub versions: Vec<u32>,
}

/// A rotation: the new version, and the jobs sealing stored values again (one per object with
/// sensitive fields).
#[derive(Debug, Clone, Serialize)]
pub struct KeyRotation {
    pub previous_version: u32,
    pub version: u32,
    pub jobs: Vec<JobView>,
}

impl Service {
    /// Unwraps data key versions another server (or the CLI) added since this keyring was
    /// loaded. Returns whether any was new.
    pub(crate) async fn refresh_keys(&self) -> ServiceResult<bool> {
        let mut added = false;
        for row in self.store.list_wrapped_keys().await? {
            let Some(version) = row.label.strip_prefix("data:").and_then(|v| v.parse::<u32>().ok()) else { continue };
            if self.keyring.versions().contains(&version) {
                continue;
            }
            match self.keyring.add_wrapped_data_key(version, &row.wrapped) {
                Ok(new) => added |= new,
                Err(e) => return Err(key_error(e)),
            }
        }
        Ok(added)
    }

    /// The data key versions (admins).
    pub async fn key_status(&self, ctx: &RequestContext) -> ServiceResult<KeyStatus> {
        self.admin_or_refuse(ctx, "key.status").await?;
        self.refresh_keys().await?;
        Ok(KeyStatus { current_version: self.keyring.current_version(), versions: self.keyring.versions() })
    }

    /// Adds data key version N+1 and starts the jobs that seal stored values under it (admins,
    /// fresh step-up; the operator offline). Audited as `key.rotate`, one `key.reencrypt` per
    /// job.
    pub async fn rotate_data_key(self: &Arc<Self>, ctx: &RequestContext) -> ServiceResult<KeyRotation> {
        self.admin_or_refuse(ctx, "key.rotate").await?;
        self.require_step_up(ctx, "key.rotate").await?;
        self.refresh_keys().await?;
        let previous = self.keyring.current_version();
        let version = previous + 1;
        let label = data_key_label(version);
        let wrapped = self.keyring.new_wrapped_data_key(version).map_err(key_error)?;
        let mut audit = self.audit_draft(ctx, "key.rotate");
        audit.details =
            json!({ "label": label, "version": version, "previous_version": previous, "wrapped_by": "master key" });
        if !self.store.insert_wrapped_key(WrappedKeyRow { label, wrapped: wrapped.clone() }, audit).await? {
            return Err(ServiceError::with_message(
                ErrorCode::Conflict,
                "Another rotation added this key version at the same moment; reload the key status.",
            ));
        }
        self.keyring.add_wrapped_data_key(version, &wrapped).map_err(key_error)?;
        let jobs = self.start_reseal_jobs(ctx, version).await?;
        Ok(KeyRotation { previous_version: previous, version, jobs })
    }

    /// Starts the jobs that seal stored values under the current data key again, without a
    /// new key (admins, fresh step-up): after a rotation whose jobs never started (its server
    /// stopped in between). Values already current are left; a restored record is written anew
    /// under the current key anyway.
    pub async fn reseal_stored_values(self: &Arc<Self>, ctx: &RequestContext) -> ServiceResult<KeyRotation> {
        self.admin_or_refuse(ctx, "key.reencrypt").await?;
        self.require_step_up(ctx, "key.reencrypt").await?;
        self.refresh_keys().await?;
        let version = self.keyring.current_version();
        let jobs = self.start_reseal_jobs(ctx, version).await?;
        Ok(KeyRotation { previous_version: version, version, jobs })
    }

    /// One `JOB_REENCRYPT` per object with sensitive fields (audited `key.reencrypt`).
    async fn start_reseal_jobs(self: &Arc<Self>, ctx: &RequestContext, version: u32) -> ServiceResult<Vec<JobView>> {
        let requested_by = ctx.actor.as_ref().map(|a| a.user_id);
        let mut jobs = Vec::new();
        for def in self.schema().objects().filter(|d| d.fields.iter().any(|f| f.sensitive)) {
            let job =
                JobRow::pending(JOB_REENCRYPT, &def.name, json!({ "version": version }), requested_by, now_micros());
            let mut audit = self.audit_draft(ctx, "key.reencrypt");
            audit.object = Some(def.name.clone());
            audit.details = json!({ "job_id": job.id, "version": version });
            self.store.create_job(job.clone(), audit).await?;
            jobs.push(crate::rules::job_view(&job));
        }
        self.start_jobs();
        Ok(jobs)
    }

    /// A re-encryption job (admins).
    pub async fn reencrypt_job(&self, ctx: &RequestContext, id: uuid::Uuid) -> ServiceResult<JobView> {
        self.admin_or_refuse(ctx, "key.status").await?;
        let job =
            self.store.get_job(id).await?.filter(|j| j.kind == JOB_REENCRYPT).ok_or_else(ServiceError::not_found)?;
        Ok(crate::rules::job_view(&job))
    }

    /// The current-state envelopes of `record` sealed again under the current data key (empty
    /// when all are current already). A value that cannot be opened is left as it is (and
    /// logged without its content): the job reports it by not counting the record.
    pub(crate) fn resealed(&self, def: &ObjectDef, record: &StoredRecord) -> Vec<(String, String)> {
        let id = record.id.to_string();
        let mut out = Vec::new();
        for f in def.fields.iter().filter(|f| f.sensitive) {
            let Some(envelope) = record.fields.get(&f.name).and_then(Value::as_str) else { continue };
            match self.keyring.reseal_field(&def.name, &f.name, &id, envelope) {
                Ok(Some(new)) => out.push((f.name.clone(), new)),
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(object = %def.name, field = %f.name, record = %record.id, error = %e, "a sensitive value could not be sealed again");
                }
            }
        }
        out
    }
}
