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

/// One audit event exactly as the database holds it, for the verifier and the checkpoint
/// writer. Nothing is parsed or trusted: every column the database could have been made to
/// hold in an unexpected shape is optional, text that is not UTF-8 is read lossily, and the body
/// is the raw bytes that were hashed. A row that does not look like a well-formed event is a
/// finding of the verifier, not a read error.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuditChainRow {
    pub seq: i64,
    pub at: Option<i64>,
    pub actor_id: Option<String>,
    pub action: Option<String>,
    pub object: Option<String>,
    pub record_id: Option<String>,
    pub request_id: Option<String>,
    pub body: Option<Vec<u8>>,
    pub prev_hash: Option<Vec<u8>>,
    pub hash: Option<Vec<u8>>,
}

/// A range of audit events `seq_from..=seq_to` covered by one signed checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointRange {
    pub seq_from: i64,
    pub seq_to: i64,
}

/// What a checkpoint writer asks for when it looks for work.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointClaimRequest {
    /// Who claims (host, process), recorded for operators.
    pub claimant: String,
    /// A range is claimed as soon as this many events are unclaimed; no range is longer.
    pub max_events: i64,
    /// A shorter range is claimed once the newest claim is this old (any server's claim).
    pub every_micros: i64,
    /// A claim not marked written after this long is handed to the next writer that asks
    /// (its writer died); both checkpoints then cover the same range and both verify.
    pub lease_micros: i64,
    pub now: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointClaimOutcome {
    /// The caller now owns this range: sign it, append it to the checkpoint file, then call
    /// `complete_audit_checkpoint`.
    Claimed(CheckpointRange),
    /// Nothing is due.
    Nothing,
    /// The chain ends before ranges that were already claimed: events were removed from the
    /// end of the log (or the claims table was tampered with). Writers stop and alert.
    HeadBehind { head: i64, claimed_through: i64 },
}

/// A row of the checkpoint coordination table (not evidence: the evidence is the signed
/// checkpoint file outside the database).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointClaimRow {
    pub seq_from: i64,
    pub seq_to: i64,
    pub claimant: String,
    pub claimed_at: i64,
    pub written_at: Option<i64>,
}

/// The decision both backends take, inside their serialised claim transaction, once they know
/// the chain head and the newest claim (stale claims are handed out before this is asked).
pub fn plan_checkpoint_claim(
    request: &CheckpointClaimRequest,
    head_seq: i64,
    newest: Option<&CheckpointClaimRow>,
) -> CheckpointClaimOutcome {
    let claimed_through = newest.map(|c| c.seq_to).unwrap_or(0);
    if head_seq < claimed_through {
        return CheckpointClaimOutcome::HeadBehind { head: head_seq, claimed_through };
    }
    let pending = head_seq - claimed_through;
    if pending == 0 {
        return CheckpointClaimOutcome::Nothing;
    }
    let max_events = request.max_events.max(1);
    // `abs`: a clock moved backwards must not stall time-based checkpoints until it catches up.
    let due = pending >= max_events
        || newest.is_none_or(|c| request.now.saturating_sub(c.claimed_at).saturating_abs() >= request.every_micros);
    if !due {
        return CheckpointClaimOutcome::Nothing;
    }
    CheckpointClaimOutcome::Claimed(CheckpointRange {
        seq_from: claimed_through + 1,
        seq_to: claimed_through + pending.min(max_events),
    })
}

/// Whether a claim that was never marked written may be handed to another writer.
pub fn claim_is_stale(claim: &CheckpointClaimRow, now: i64, lease_micros: i64) -> bool {
    claim.written_at.is_none() && now.saturating_sub(claim.claimed_at).saturating_abs() >= lease_micros
}
