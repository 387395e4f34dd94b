//! What leaves the service: records with decrypted (and, with the access work, masked) fields.
//! Every output path — single records, lists, history — goes through `Service::view_fields`.

use crate::{RequestContext, Service};
use custodian_core::schema::ObjectDef;
use custodian_crypto::Keyring;
use custodian_store::{StoredRecord, StoredVersion};
use serde::Serialize;
use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

/// RFC 3339 text of a microsecond timestamp.
pub fn micros_to_rfc3339(micros: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

/// A record as the API shows it (PRODUCT.md "Public interface").
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RecordView {
    pub id: Uuid,
    pub object: String,
    pub version: i64,
    pub owner_id: Option<Uuid>,
    pub team_id: Option<Uuid>,
    pub created_at: String,
    pub created_by: Option<Uuid>,
    pub updated_at: String,
    pub updated_by: Option<Uuid>,
    pub deleted_at: Option<String>,
    pub fields: Map<String, Value>,
    pub masked_fields: Vec<String>,
    /// For a tombstone left by a merge (shown on single-record reads): the survivor.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merged_into: Option<Uuid>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RecordList {
    pub items: Vec<RecordView>,
    pub next_cursor: Option<String>,
}

/// One immutable version of a record.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct VersionView {
    pub record_id: Uuid,
    pub object: String,
    pub version: i64,
    pub action: String,
    pub owner_id: Option<Uuid>,
    pub team_id: Option<Uuid>,
    pub deleted_at: Option<String>,
    pub changed_at: String,
    pub changed_by: Option<Uuid>,
    pub fields: Map<String, Value>,
    pub masked_fields: Vec<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HistoryPage {
    pub items: Vec<VersionView>,
    pub next_cursor: Option<String>,
}

/// The fields of a stored map that `wanted` names, sensitive ones decrypted: what
/// `Service::decrypt_fields` does, for work that runs away from the service (a scan decrypts on
/// its worker threads). Values that cannot be opened are left out (and logged without their
/// content) rather than failing the whole read.
pub(crate) fn decrypt_stored(
    keyring: &Keyring,
    def: &ObjectDef,
    record_id: Uuid,
    stored: &Map<String, Value>,
    wanted: impl Fn(&str) -> bool,
) -> Map<String, Value> {
    let mut out = Map::with_capacity(stored.len());
    let id = record_id.to_string();
    for (name, value) in stored.iter().filter(|(name, _)| wanted(name)) {
        let sensitive = def.field(name).is_some_and(|f| f.sensitive);
        if sensitive {
            let Some(envelope) = value.as_str() else {
                continue;
            };
            match keyring.decrypt_field(&def.name, name, &id, envelope) {
                Ok(plain) => {
                    // Sensitive values are stored as their normalised text; structured
                    // types are kept as JSON text.
                    let v = serde_json::from_str::<Value>(&plain).unwrap_or(Value::String(plain));
                    out.insert(name.clone(), v);
                }
                Err(e) => {
                    tracing::error!(object = %def.name, field = %name, record = %record_id, error = %e, "sensitive value could not be decrypted");
                }
            }
        } else {
            out.insert(name.clone(), value.clone());
        }
    }
    out
}

impl Service {
    /// Decrypts sensitive values of a stored field map (`decrypt_stored` of every field).
    pub(crate) fn decrypt_fields(
        &self,
        def: &ObjectDef,
        record_id: Uuid,
        stored: &Map<String, Value>,
    ) -> Map<String, Value> {
        decrypt_stored(&self.keyring, def, record_id, stored, |_| true)
    }

    /// Field visibility for the caller: returns the fields to show and the names of masked
    /// ones. The access work plugs role-based hiding and masking in here.
    pub(crate) fn view_fields(
        &self,
        ctx: &RequestContext,
        def: &ObjectDef,
        record_id: Uuid,
        stored: &Map<String, Value>,
    ) -> (Map<String, Value>, Vec<String>) {
        self.apply_field_access(ctx, def, self.decrypt_fields(def, record_id, stored))
    }

    pub(crate) fn record_view(&self, ctx: &RequestContext, def: &ObjectDef, r: &StoredRecord) -> RecordView {
        let (fields, masked_fields) = self.view_fields(ctx, def, r.id, &r.fields);
        RecordView {
            id: r.id,
            object: r.object.clone(),
            version: r.version,
            owner_id: r.owner_id,
            team_id: r.team_id,
            created_at: micros_to_rfc3339(r.created_at),
            created_by: r.created_by,
            updated_at: micros_to_rfc3339(r.updated_at),
            updated_by: r.updated_by,
            deleted_at: r.deleted_at.map(micros_to_rfc3339),
            fields,
            masked_fields,
            merged_into: None,
        }
    }

    pub(crate) fn version_view(&self, ctx: &RequestContext, def: &ObjectDef, v: &StoredVersion) -> VersionView {
        let (fields, masked_fields) = self.view_fields(ctx, def, v.record_id, &v.fields);
        VersionView {
            record_id: v.record_id,
            object: v.object.clone(),
            version: v.version,
            action: v.action.as_str().to_owned(),
            owner_id: v.owner_id,
            team_id: v.team_id,
            deleted_at: v.deleted_at.map(micros_to_rfc3339),
            changed_at: micros_to_rfc3339(v.changed_at),
            changed_by: v.changed_by,
            fields,
            masked_fields,
        }
    }
}
