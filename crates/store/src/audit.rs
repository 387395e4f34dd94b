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
    /// The actor's role when the event happened (roles change; the event keeps the one used).
    pub actor_role: Option<String>,
    /// The login session the request came through (the id the session list shows).
    pub session_id: Option<String>,
    /// The personal API token the request came through (the id it was created with).
    pub token_id: Option<String>,
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
            actor_role: None,
            session_id: None,
            token_id: None,
            details: Value::Object(Map::new()),
        }
    }

    /// Canonical encoding hashed into the chain: a JSON object with keys in a fixed order.
    /// `actor_role`, `session_id` and `token_id` appear only when known, so an event without
    /// them (a system event, or one written before they were recorded) encodes as it always did.
    ///
    /// Written straight from the draft's fields (`CanonicalBody`), not through a `Value` map
    /// built first: that copied every string and the whole of `details` for each event, 3% of
    /// an audited GET's CPU. The bytes are the same (`canonical_body_is_the_map_encoding`).
    pub fn canonical_body(&self) -> String {
        let body = CanonicalBody {
            at: self.at,
            actor_id: self.actor_id,
            action: &self.action,
            object: self.object.as_deref(),
            record_id: self.record_id,
            request_id: self.request_id.as_deref(),
            ip: self.ip.as_deref(),
            user_agent: self.user_agent.as_deref(),
            actor_role: self.actor_role.as_deref(),
            session_id: self.session_id.as_deref(),
            token_id: self.token_id.as_deref(),
            details: &self.details,
        };
        // Serialising strings, numbers, ids and a `Value` cannot fail.
        serde_json::to_string(&body).unwrap_or_default()
    }
}

/// The canonical body's keys in their order (serde writes a struct's fields as declared).
#[derive(serde::Serialize)]
struct CanonicalBody<'a> {
    at: i64,
    actor_id: Option<Uuid>,
    action: &'a str,
    object: Option<&'a str>,
    record_id: Option<Uuid>,
    request_id: Option<&'a str>,
    ip: Option<&'a str>,
    user_agent: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    actor_role: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    session_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token_id: Option<&'a str>,
    details: &'a Value,
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

// ---- encoding for bulk appends ---------------------------------------------------------------

#[derive(serde::Serialize)]
struct EventColumns<'a> {
    at: i64,
    actor_id: Option<Uuid>,
    action: &'a str,
    object: Option<&'a str>,
    record_id: Option<Uuid>,
    request_id: Option<&'a str>,
    body: &'a str,
}

/// An audit event encoded, by the task that submits it, up to what only the appending
/// transaction knows: its sequence number and hashes. Stores insert many such events with one
/// statement over a JSON array (`chain_rows`).
#[derive(Debug, Clone)]
pub struct EncodedEvent {
    /// The canonical body that is hashed into the chain.
    pub body: String,
    /// The event's columns as JSON object members without braces: `"at":…,"body":"…"`.
    members: String,
}

impl EncodedEvent {
    pub fn new(draft: &AuditDraft) -> Result<EncodedEvent, serde_json::Error> {
        let body = draft.canonical_body();
        let object = serde_json::to_string(&EventColumns {
            at: draft.at,
            actor_id: draft.actor_id,
            action: &draft.action,
            object: draft.object.as_deref(),
            record_id: draft.record_id,
            request_id: draft.request_id.as_deref(),
            body: &body,
        })?;
        let members = object.strip_prefix('{').and_then(|s| s.strip_suffix('}')).unwrap_or_default().to_owned();
        Ok(EncodedEvent { body, members })
    }

    /// Length of the encoded columns (the row `chain_rows` makes is ~200 bytes longer).
    pub fn members_len(&self) -> usize {
        self.members.len()
    }
}

/// The chain after appending some events: the rows to insert and the new head.
pub struct ChainedRows {
    /// A JSON array of objects with the columns `seq, at, actor_id, action, object, record_id,
    /// request_id, body, prev_hash, hash` (hashes in lower-case hex).
    pub json: String,
    pub seqs: Vec<i64>,
    pub head_seq: i64,
    pub head_hash: Vec<u8>,
}

/// Links `events` into the chain after (`head_seq`, `head_hash`).
pub fn chain_rows(head_seq: i64, head_hash: &[u8], events: &[&EncodedEvent]) -> ChainedRows {
    let mut json = String::with_capacity(events.iter().map(|e| e.members.len() + 200).sum::<usize>() + 2);
    json.push('[');
    let mut seqs = Vec::with_capacity(events.len());
    let (mut seq, mut prev) = (head_seq, head_hash.to_vec());
    for (i, e) in events.iter().enumerate() {
        seq += 1;
        let hash = custodian_core::audit::chain_hash(&prev, seq, e.body.as_bytes()).to_vec();
        if i > 0 {
            json.push(',');
        }
        json.push_str(&format!(
            "{{\"seq\":{seq},{},\"prev_hash\":\"{}\",\"hash\":\"{}\"}}",
            e.members,
            hex::encode(&prev),
            hex::encode(&hash)
        ));
        prev = hash;
        seqs.push(seq);
    }
    json.push(']');
    ChainedRows { json, seqs, head_seq: seq, head_hash: prev }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod encoding_tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    /// The canonical body as it was first built: a map with keys in insertion order (the
    /// workspace's serde_json keeps it). Every event ever hashed was encoded this way.
    fn map_encoding(d: &AuditDraft) -> String {
        let text = |v: &Option<String>| v.clone().map(Value::String).unwrap_or(Value::Null);
        let id = |v: Option<Uuid>| v.map(|u| Value::String(u.to_string())).unwrap_or(Value::Null);
        let mut m = Map::new();
        m.insert("at".into(), Value::from(d.at));
        m.insert("actor_id".into(), id(d.actor_id));
        m.insert("action".into(), Value::String(d.action.clone()));
        m.insert("object".into(), text(&d.object));
        m.insert("record_id".into(), id(d.record_id));
        m.insert("request_id".into(), text(&d.request_id));
        m.insert("ip".into(), text(&d.ip));
        m.insert("user_agent".into(), text(&d.user_agent));
        for (key, value) in [("actor_role", &d.actor_role), ("session_id", &d.session_id), ("token_id", &d.token_id)] {
            if let Some(value) = value {
                m.insert(key.into(), Value::String(value.clone()));
            }
        }
        m.insert("details".into(), d.details.clone());
        Value::Object(m).to_string()
    }

    #[test]
    fn canonical_body_keeps_its_bytes() {
        let mut d = AuditDraft::new("record.view");
        d.at = 1_700_000_000_000_001;
        d.actor_id = Some(Uuid::from_u128(7));
        d.object = Some("contacts".into());
        d.session_id = Some("s1".into());
        d.details = json!({"fields": ["mobile"], "quote": "\"引号\"\n"});
        assert_eq!(
            d.canonical_body(),
            r#"{"at":1700000000000001,"actor_id":"00000000-0000-0000-0000-000000000007","action":"record.view","object":"contacts","record_id":null,"request_id":null,"ip":null,"user_agent":null,"session_id":"s1","details":{"fields":["mobile"],"quote":"\"引号\"\n"}}"#
        );
    }

    fn text() -> impl Strategy<Value = Option<String>> {
        proptest::option::of("[a-z0-9\\\\\"\\n\\u{0}-\\u{1f}张伟é ]{0,12}")
    }

    proptest! {
        #[test]
        fn canonical_body_is_the_map_encoding(
            at in any::<i64>(),
            actor in proptest::option::of(any::<u128>()),
            record in proptest::option::of(any::<u128>()),
            action in "[a-z._]{1,20}",
            (object, request_id, ip, user_agent) in (text(), text(), text(), text()),
            (actor_role, session_id, token_id) in (text(), text(), text()),
            detail in text(),
            n in any::<i64>(),
        ) {
            let d = AuditDraft {
                at,
                actor_id: actor.map(Uuid::from_u128),
                action,
                object,
                record_id: record.map(Uuid::from_u128),
                request_id,
                ip,
                user_agent,
                actor_role,
                session_id,
                token_id,
                details: json!({"z": detail, "a": [n, null, {"k": true}], "m": 1.5}),
            };
            prop_assert_eq!(d.canonical_body(), map_encoding(&d));
        }
    }

    #[test]
    fn chained_rows_carry_every_column_and_link_up() {
        let mut a = AuditDraft::new("record.create");
        a.actor_id = Some(Uuid::from_u128(7));
        a.object = Some("contacts".into());
        a.details = json!({"quote": "\"引号\"\n", "n": 1});
        let b = AuditDraft::new("record.view");
        let events = [EncodedEvent::new(&a).unwrap(), EncodedEvent::new(&b).unwrap()];
        let genesis = custodian_core::audit::GENESIS_HASH;
        let rows = chain_rows(41, &genesis, &events.iter().collect::<Vec<_>>());
        assert_eq!(rows.seqs, vec![42, 43]);
        let parsed: Vec<Value> = serde_json::from_str(&rows.json).unwrap();
        assert_eq!(parsed[0]["seq"], 42);
        assert_eq!(parsed[0]["body"].as_str().unwrap(), a.canonical_body());
        assert_eq!(parsed[0]["actor_id"], Uuid::from_u128(7).to_string());
        assert_eq!(parsed[0]["object"], "contacts");
        assert_eq!(parsed[1]["object"], Value::Null);
        let h1 = custodian_core::audit::chain_hash(&genesis, 42, a.canonical_body().as_bytes());
        let h2 = custodian_core::audit::chain_hash(&h1, 43, b.canonical_body().as_bytes());
        assert_eq!(parsed[0]["prev_hash"], hex::encode(genesis));
        assert_eq!(parsed[0]["hash"], hex::encode(h1));
        assert_eq!(parsed[1]["prev_hash"], hex::encode(h1));
        assert_eq!(rows.head_hash, h2.to_vec());
        assert_eq!(rows.head_seq, 43);
    }
}
