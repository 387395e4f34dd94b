//! Loading the keyring: data keys and the blind-index root key are kept in the store wrapped
//! by the master key; the first start generates them. Two servers starting at once agree on
//! one key because `insert_wrapped_key` inserts only when the label is free.

use crate::error::{ServiceError, ServiceResult};
use custodian_core::ErrorCode;
use custodian_crypto::{INDEX_KEY_LABEL, Key, Keyring, MasterKey, data_key_label};
use custodian_store::{AuditDraft, Store, WrappedKeyRow};
use serde_json::json;
use std::collections::BTreeMap;

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
    Keyring::new(data_keys, index_root).ok_or_else(|| key_error("no data key"))
}
