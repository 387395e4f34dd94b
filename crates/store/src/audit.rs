//! Audit events as the store sees them. The service fills an `AuditDraft`; the store assigns
//! the sequence number and links it into the hash chain (`custodian_core::audit::chain_hash`)
//! inside the same transaction as the change it describes.

use serde_json::{Map, Value};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq)]
pub struct AuditDraft {
    pub at: i64,
    pub actor_id: Option<Uuid>,
    pub action: String,
    pub object: Option<String>,
    pub record_id: Option<Uuid>,
    pub request_id: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// Action-specific details (field-level changes, ids returned, reasons). Sensitive values
    /// appear only as ciphertext or keyed hashes.
    pub details: Value,
}

impl AuditDraft {
    pub fn new(action: impl Into<String>) -> Self {
        AuditDraft {
            at: crate::now_micros(),
            actor_id: None,
            action: action.into(),
            object: None,
            record_id: None,
            request_id: None,
            ip: None,
            user_agent: None,
            details: Value::Object(Map::new()),
        }
    }

    /// Canonical encoding hashed into the chain: a JSON object with keys in a fixed order.
    pub fn canonical_body(&self) -> String {
        let mut m = Map::new();
        m.insert("at".into(), Value::from(self.at));
        m.insert("actor_id".into(), self.actor_id.map(|u| Value::String(u.to_string())).unwrap_or(Value::Null));
        m.insert("action".into(), Value::String(self.action.clone()));
        m.insert("object".into(), self.object.clone().map(Value::String).unwrap_or(Value::Null));
        m.insert("record_id".into(), self.record_id.map(|u| Value::String(u.to_string())).unwrap_or(Value::Null));
        m.insert("request_id".into(), self.request_id.clone().map(Value::String).unwrap_or(Value::Null));
        m.insert("ip".into(), self.ip.clone().map(Value::String).unwrap_or(Value::Null));
        m.insert("user_agent".into(), self.user_agent.clone().map(Value::String).unwrap_or(Value::Null));
        m.insert("details".into(), self.details.clone());
        Value::Object(m).to_string()
    }
}

/// A stored audit event.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRow {
    pub seq: i64,
    pub at: i64,
    pub actor_id: Option<Uuid>,
    pub action: String,
    pub object: Option<String>,
    pub record_id: Option<Uuid>,
    /// The canonical body exactly as hashed.
    pub body: String,
    pub prev_hash: Vec<u8>,
    pub hash: Vec<u8>,
}

/// Recomputes the chain over consecutive rows starting after `prev` (the hash of the row before
/// the first one, or the genesis hash). Returns the first sequence number that does not verify.
pub fn verify_chain(prev_seq: i64, prev: &[u8], rows: &[AuditRow]) -> Result<Vec<u8>, i64> {
    let mut prev_hash = prev.to_vec();
    for (expected_seq, row) in (prev_seq + 1..).zip(rows) {
        if row.seq != expected_seq || row.prev_hash != prev_hash {
            return Err(expected_seq.min(row.seq));
        }
        let h = custodian_core::audit::chain_hash(&prev_hash, row.seq, row.body.as_bytes());
        if h.as_slice() != row.hash.as_slice() {
            return Err(row.seq);
        }
        prev_hash = row.hash.clone();
    }
    Ok(prev_hash)
}
