//! Types of the duplicate work (PRODUCT.md A3, A5): blocking keys kept per record for the
//! check at entry, "not a duplicate" decisions, scan jobs and their candidate pairs, and
//! merges with everything needed to undo them. The service decides what is a duplicate and
//! who may see it; the store only keeps these rows, in the same transactions as the records.

use serde_json::Value;
use uuid::Uuid;

/// How many records one match key contributes at most to the candidates of a check at entry.
/// A key shared by more records (a common surname) says little about a match on its own; the
/// rarer keys of the same record still find the records it shares them with.
pub const MATCH_BLOCK_CAP: u32 = 200;

/// How many distinct keys of one record a check looks at, at most.
pub const MATCH_KEYS_PER_CHECK: usize = 64;

/// The matching engine's blocking keys of one record, as keyed hashes (never plaintext, since
/// keys are made from sensitive fields too). Written with the record's change in one `WriteBatch`
/// and replacing the record's previous set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchKeySet {
    pub object: String,
    pub record_id: Uuid,
    pub keys: Vec<Vec<u8>>,
}

/// A pair a data steward decided is not a duplicate; it is never proposed again. `record_a` is
/// the smaller id.
#[derive(Debug, Clone, PartialEq)]
pub struct DismissalRow {
    pub object: String,
    pub record_a: Uuid,
    pub record_b: Uuid,
    pub reason: String,
    pub decided_by: Option<Uuid>,
    pub decided_at: i64,
}

/// A duplicate scan of one object, run in the background.
#[derive(Debug, Clone, PartialEq)]
pub struct ScanJobRow {
    pub id: Uuid,
    pub object: String,
    /// "running", "done" or "failed".
    pub status: String,
    pub requested_by: Option<Uuid>,
    pub created_at: i64,
    pub finished_at: Option<i64>,
    /// Records compared.
    pub records: i64,
    /// Candidate pairs stored.
    pub pairs: i64,
    /// Why a failed job failed (no record values).
    pub error: Option<String>,
}

/// One proposed duplicate pair (`record_a` < `record_b`) from a scan.
#[derive(Debug, Clone, PartialEq)]
pub struct CandidateRow {
    pub id: Uuid,
    pub object: String,
    pub job_id: Uuid,
    /// Smallest record id of the cluster both records fell into.
    pub cluster_id: Uuid,
    pub record_a: Uuid,
    pub record_b: Uuid,
    /// Match probability.
    pub score: f64,
    /// Per-field agreement levels, e.g. `[{"field":"name","level":"same_sound"}]`.
    pub reasons: Value,
    /// "open", "dismissed" or "merged".
    pub status: String,
    pub created_at: i64,
    pub decided_at: Option<i64>,
    pub decided_by: Option<Uuid>,
}

/// A merge as stored: enough to undo it exactly.
#[derive(Debug, Clone, PartialEq)]
pub struct MergeRow {
    pub id: Uuid,
    pub object: String,
    pub survivor_id: Uuid,
    pub loser_ids: Vec<Uuid>,
    /// Every record the merge wrote, as `[{"object","id","before_version","after_version"}]`:
    /// undo brings back each `before_version` if the record is still at `after_version`.
    pub records: Value,
    /// The field choices and rule the merge was asked for (no values).
    pub request: Value,
    pub created_at: i64,
    pub created_by: Option<Uuid>,
    pub undone_at: Option<i64>,
    pub undone_by: Option<Uuid>,
}

/// The merge bookkeeping carried by a `WriteBatch`.
#[derive(Debug, Clone, PartialEq)]
pub enum MergeChange {
    /// Stores a new merge row; open candidate pairs that involve a loser become "merged".
    Record(Box<MergeRow>),
    /// Marks a merge undone: `NotFound` when there is no such merge, `AlreadyExists` when it was
    /// undone already (so two concurrent undos cannot both apply).
    Undo { id: Uuid, undone_at: i64, undone_by: Option<Uuid> },
}
