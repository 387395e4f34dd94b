//! Inclusion proofs: one event, the Merkle path from its leaf to the root of a signed
//! checkpoint, and the checkpoint itself. `check_proof` needs only the proof and the public
//! key, never the database.
//!
//! ```json
//! {"v":1,
//!  "event":{"seq":42,"prev":"<hex>","body":"<the canonical body as hashed>"},
//!  "path":["<hex>", …],
//!  "checkpoint":{ …one checkpoint line… }}
//! ```
//!
//! With `--hash-only` the event is `{"seq":42,"hash":"<hex>"}`: it proves that an event with
//! that chain hash is in the log, to someone who holds the event and can hash it.

use crate::Hash;
use crate::checkpoint::{CheckpointFile, SignedCheckpoint};
use crate::keys::{AuditPublicKey, shorten};
use crate::verify::format_micros;
use custodian_core::audit::{GENESIS_HASH, chain_hash, merkle_leaf, merkle_path, merkle_root_from_path};
use custodian_store::{Store, StoreError};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

/// Format version of proofs.
pub const PROOF_VERSION: u32 = 1;
/// Longest path accepted (a range of 2^64 events).
const MAX_PATH: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProofEvent {
    Full { seq: i64, prev_hash: Hash, body: String },
    HashOnly { seq: i64, hash: Hash },
}

impl ProofEvent {
    pub fn seq(&self) -> i64 {
        match self {
            ProofEvent::Full { seq, .. } | ProofEvent::HashOnly { seq, .. } => *seq,
        }
    }

    /// The event's chain hash (recomputed from its body when the body is given).
    pub fn hash(&self) -> Hash {
        match self {
            ProofEvent::Full { seq, prev_hash, body } => chain_hash(prev_hash, *seq, body.as_bytes()),
            ProofEvent::HashOnly { hash, .. } => *hash,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InclusionProof {
    pub event: ProofEvent,
    pub path: Vec<Hash>,
    pub checkpoint: SignedCheckpoint,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireProof {
    v: u32,
    event: WireEvent,
    path: Vec<String>,
    checkpoint: serde_json::Value,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireEvent {
    seq: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    prev: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    body: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hash: Option<String>,
}

fn hex_hash(what: &str, text: &str) -> Result<Hash, String> {
    let bytes = hex::decode(text).map_err(|_| format!("{what} is not hex ({:?})", shorten(text)))?;
    bytes.try_into().map_err(|b: Vec<u8>| format!("{what} has {} bytes, expected 32", b.len()))
}

impl InclusionProof {
    pub fn to_json(&self) -> serde_json::Value {
        let event = match &self.event {
            ProofEvent::Full { seq, prev_hash, body } => {
                WireEvent { seq: *seq, prev: Some(hex::encode(prev_hash)), body: Some(body.clone()), hash: None }
            }
            ProofEvent::HashOnly { seq, hash } => {
                WireEvent { seq: *seq, prev: None, body: None, hash: Some(hex::encode(hash)) }
            }
        };
        let wire = WireProof {
            v: PROOF_VERSION,
            event,
            path: self.path.iter().map(hex::encode).collect(),
            checkpoint: self.checkpoint.to_json(),
        };
        serde_json::to_value(wire).unwrap_or(serde_json::Value::Null)
    }

    /// Parses a proof file, with a precise message for anything that is not a proof.
    pub fn parse(bytes: &[u8]) -> Result<InclusionProof, String> {
        let text = std::str::from_utf8(bytes).map_err(|_| "not a proof: the file is not UTF-8 text".to_owned())?;
        if text.trim().is_empty() {
            return Err("not a proof: the file is empty".into());
        }
        let wire: WireProof = serde_json::from_str(text).map_err(|e| format!("not a proof: {e}"))?;
        if wire.v != PROOF_VERSION {
            return Err(format!("proof format version {} is not supported (expected {PROOF_VERSION})", wire.v));
        }
        if wire.path.len() > MAX_PATH {
            return Err(format!("not a proof: the path has {} hashes (at most {MAX_PATH})", wire.path.len()));
        }
        let path = wire
            .path
            .iter()
            .enumerate()
            .map(|(i, h)| hex_hash(&format!("path[{i}]"), h))
            .collect::<Result<Vec<_>, _>>()?;
        let e = wire.event;
        let event = match (e.prev, e.body, e.hash) {
            (Some(prev), Some(body), None) => {
                ProofEvent::Full { seq: e.seq, prev_hash: hex_hash("event.prev", &prev)?, body }
            }
            (None, None, Some(hash)) => ProofEvent::HashOnly { seq: e.seq, hash: hex_hash("event.hash", &hash)? },
            _ => return Err("not a proof: `event` must hold either `prev` and `body`, or `hash`".into()),
        };
        let checkpoint =
            SignedCheckpoint::from_json(wire.checkpoint).map_err(|e| format!("the proof's checkpoint: {e}"))?;
        Ok(InclusionProof { event, path, checkpoint })
    }
}

/// What a valid proof establishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProofCheck {
    pub seq: i64,
    pub event_hash: Hash,
    pub seq_from: i64,
    pub seq_to: i64,
    pub signed_at: i64,
    pub key_id: String,
    /// `action at time by actor on object/record`, when the body was given.
    pub summary: Option<String>,
}

/// Checks a proof without the database: the checkpoint's signature with a trusted key, the
/// event's place in the checkpoint's range, and the path from the event to the signed root.
pub fn check_proof(proof: &InclusionProof, keys: &[AuditPublicKey]) -> Result<ProofCheck, String> {
    let signed = &proof.checkpoint;
    signed.verify(keys).map_err(|p| format!("the proof's checkpoint is not valid: {p}"))?;
    let c = &signed.checkpoint;
    let seq = proof.event.seq();
    if !c.covers(seq) {
        return Err(format!("event {seq} is outside the checkpoint's range {}..{}", c.seq_from, c.seq_to));
    }
    let event_hash = proof.event.hash();
    if let ProofEvent::Full { prev_hash, .. } = &proof.event
        && seq == c.seq_from
        && *prev_hash != c.prev_head
    {
        return Err(format!("event {seq} does not link to the hash the checkpoint records before its range"));
    }
    if seq == c.seq_to && event_hash != c.head {
        return Err(format!("event {seq} is not the chain head the checkpoint signed: the event was altered"));
    }
    let index = (seq - c.seq_from) as u64;
    let size = c.len() as u64;
    let Some(root) = merkle_root_from_path(&merkle_leaf(seq, &event_hash), index, size, &proof.path) else {
        return Err(format!(
            "the path ({} hashes) cannot belong to event {seq} in a range of {size} events",
            proof.path.len()
        ));
    };
    if root != c.root {
        return Err(format!(
            "the path from event {seq} does not lead to the checkpoint's Merkle root: the event or the path was \
             altered, or the event is not in the log"
        ));
    }
    let summary = match &proof.event {
        ProofEvent::Full { body, .. } => Some(summarise(body)),
        ProofEvent::HashOnly { .. } => None,
    };
    Ok(ProofCheck {
        seq,
        event_hash,
        seq_from: c.seq_from,
        seq_to: c.seq_to,
        signed_at: c.at,
        key_id: signed.key_id.to_string(),
        summary,
    })
}

fn summarise(body: &str) -> String {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(body) else {
        return "(the body is not JSON)".into();
    };
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_owned);
    let mut out = s("action").unwrap_or_else(|| "?".into());
    if let Some(at) = v.get("at").and_then(serde_json::Value::as_i64) {
        out.push_str(&format!(" at {}", format_micros(at)));
    }
    if let Some(actor) = s("actor_id") {
        out.push_str(&format!(" by {actor}"));
    }
    if let Some(object) = s("object") {
        out.push_str(&format!(" on {object}"));
        if let Some(id) = s("record_id") {
            out.push_str(&format!("/{id}"));
        }
    }
    out
}

#[derive(Debug, thiserror::Error)]
pub enum ProveError {
    #[error("no event with seq {0} in the audit log")]
    NoSuchEvent(i64),
    #[error(
        "event {seq} is not covered by a signed checkpoint yet ({covered}); checkpoints are written every N events or T \
         seconds by the server, or now by `custodian audit checkpoint`"
    )]
    NotCovered { seq: i64, covered: String },
    #[error("{0}")]
    Mismatch(String),
    #[error("cannot read the audit log: {0}")]
    Store(#[from] StoreError),
}

/// Builds the proof of event `seq` against a checkpoint from `files` that covers it (with a
/// signature that verifies, when `keys` are given), after checking that the stored events of
/// that range still match the checkpoint.
pub async fn build_proof(
    store: &dyn Store,
    files: &[CheckpointFile],
    keys: &[AuditPublicKey],
    seq: i64,
    hash_only: bool,
) -> Result<InclusionProof, ProveError> {
    let entries: Vec<_> = files.iter().flat_map(|f| f.entries.iter()).collect();
    let covered_through = entries.iter().map(|e| e.signed.checkpoint.seq_to).max().unwrap_or(0);
    let mut candidates: Vec<_> = entries
        .into_iter()
        .filter(|e| e.signed.checkpoint.covers(seq))
        .filter(|e| keys.is_empty() || e.signed.verify(keys).is_ok())
        .collect();
    candidates.sort_by_key(|e| e.signed.checkpoint.len());
    if candidates.is_empty() {
        let mut exists = store.audit_chain(seq - 1, Some(seq));
        if exists.next().await.transpose()?.is_none() {
            return Err(ProveError::NoSuchEvent(seq));
        }
        let covered = if covered_through == 0 {
            "no valid checkpoint found".to_owned()
        } else {
            format!("valid checkpoints cover seq 1..{covered_through} at most")
        };
        return Err(ProveError::NotCovered { seq, covered });
    }
    let mut problems = Vec::new();
    for entry in candidates {
        let c = &entry.signed.checkpoint;
        match range_leaves(store, c.seq_from, c.seq_to).await? {
            Err(problem) => problems.push(format!("{}: {problem}", entry.source)),
            Ok(range) => {
                let mut what = Vec::new();
                if range.prev != c.prev_head {
                    what.push("the hash before the range");
                }
                if range.hashes.last() != Some(&c.head) {
                    what.push("the chain head");
                }
                let leaves: Vec<Hash> = range.hashes.iter().zip(c.seq_from..).map(|(h, s)| merkle_leaf(s, h)).collect();
                if custodian_core::audit::merkle_root(&leaves) != Some(c.root) {
                    what.push("the Merkle root");
                }
                if !what.is_empty() {
                    problems.push(format!(
                        "{}: the stored events {}..{} no longer match the checkpoint ({} differ)",
                        entry.source,
                        c.seq_from,
                        c.seq_to,
                        what.join(", ")
                    ));
                    continue;
                }
                let index = (seq - c.seq_from) as usize;
                let path = merkle_path(&leaves, index).unwrap_or_default();
                let event = if hash_only {
                    ProofEvent::HashOnly { seq, hash: range.hashes[index] }
                } else {
                    let prev_hash = if index == 0 { range.prev } else { range.hashes[index - 1] };
                    ProofEvent::Full { seq, prev_hash, body: range.bodies[index].clone() }
                };
                return Ok(InclusionProof { event, path, checkpoint: entry.signed.clone() });
            }
        }
    }
    Err(ProveError::Mismatch(format!(
        "no checkpoint covering event {seq} matches the stored events: {}; run `custodian audit verify`",
        problems.join("; ")
    )))
}

struct RangeData {
    prev: Hash,
    hashes: Vec<Hash>,
    bodies: Vec<String>,
}

/// The recomputed chain hashes of `from..=to`, checked link by link against what is stored.
async fn range_leaves(store: &dyn Store, from: i64, to: i64) -> Result<Result<RangeData, String>, StoreError> {
    let mut stream = store.audit_chain((from - 2).max(0), Some(to));
    let mut prev = GENESIS_HASH;
    let mut expected = (from - 1).max(1);
    let mut data = RangeData { prev: GENESIS_HASH, hashes: Vec::new(), bodies: Vec::new() };
    while let Some(row) = stream.next().await {
        let row = row?;
        if row.seq != expected {
            return Ok(Err(format!("event {expected} is missing or duplicated")));
        }
        let Some(body) = row.body else {
            return Ok(Err(format!("event {} has no body", row.seq)));
        };
        if row.seq == from - 1 {
            // The event before the range: its stored hash is where the range starts.
            let Some(h) = row.hash.as_deref().and_then(|h| Hash::try_from(h).ok()) else {
                return Ok(Err(format!("event {} has no valid hash", row.seq)));
            };
            prev = h;
            data.prev = h;
        } else {
            let computed = chain_hash(&prev, row.seq, &body);
            if row.prev_hash.as_deref() != Some(prev.as_slice()) || row.hash.as_deref() != Some(computed.as_slice()) {
                return Ok(Err(format!("the chain is broken at event {}", row.seq)));
            }
            let Ok(body) = String::from_utf8(body) else {
                return Ok(Err(format!("event {} has a body that is not UTF-8", row.seq)));
            };
            data.hashes.push(computed);
            data.bodies.push(body);
            prev = computed;
        }
        expected += 1;
    }
    if expected != to + 1 {
        return Ok(Err(format!("the log ends at seq {} inside the range {from}..{to}", expected - 1)));
    }
    Ok(Ok(data))
}
