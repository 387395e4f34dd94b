//! Field rules stored as data, and background jobs that any server may claim (PRODUCT.md A1):
//! the re-check of stored records after a rule change, and the backfill of match keys. The
//! service decides what the rules mean and what a violation is; the store keeps the rows, leases
//! jobs across servers (a lease in the database, so a job whose server died is taken over) and
//! applies a job's progress only for the holder of its lease.

use serde_json::Value;
use uuid::Uuid;

/// The rules of one field, as set through the rules API (`rules` is the API's JSON list).
#[derive(Debug, Clone, PartialEq)]
pub struct FieldRulesRow {
    pub object: String,
    pub field: String,
    pub rules: Value,
    /// 1 for the first stored set, then +1 per change.
    pub revision: i64,
    pub updated_at: i64,
    pub updated_by: Option<Uuid>,
}

/// Kinds of background jobs.
pub const JOB_RULE_CHECK: &str = "rule_check";
pub const JOB_MATCH_KEYS: &str = "match_keys";
/// Runs one duplicate scan (`params.scan_job_id`): not paged, taken over from the start when
/// its server died.
pub const JOB_DUPLICATE_SCAN: &str = "duplicate_scan";
/// Seals the sensitive values of one object's active records again under the current data key
/// (after a key rotation); paged and resumable like the rule check.
pub const JOB_REENCRYPT: &str = "reencrypt";

/// A background job over the active records of one object, processed in pages in id order.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRow {
    pub id: Uuid,
    /// `JOB_RULE_CHECK`, `JOB_MATCH_KEYS` or `JOB_DUPLICATE_SCAN`.
    pub kind: String,
    pub object: String,
    /// What the job checks (for a rule check: the field and its rules revision).
    pub params: Value,
    /// "pending", "running", "done" or "failed".
    pub status: String,
    pub requested_by: Option<Uuid>,
    pub created_at: i64,
    /// The server holding the lease, and until when (µs).
    pub claimed_by: Option<String>,
    pub lease_until: Option<i64>,
    /// The last record id processed: a job taken over resumes after it.
    pub cursor: Option<Uuid>,
    /// Records processed.
    pub scanned: i64,
    /// Violations recorded (rule check) or records whose keys were written (backfill).
    pub found: i64,
    pub finished_at: Option<i64>,
    pub error: Option<String>,
}

impl JobRow {
    /// A new job of `kind` over `object`, waiting for a server to claim it.
    pub fn pending(kind: &str, object: &str, params: Value, requested_by: Option<Uuid>, created_at: i64) -> JobRow {
        JobRow {
            id: Uuid::now_v7(),
            kind: kind.to_owned(),
            object: object.to_owned(),
            params,
            status: "pending".into(),
            requested_by,
            created_at,
            claimed_by: None,
            lease_until: None,
            cursor: None,
            scanned: 0,
            found: 0,
            finished_at: None,
            error: None,
        }
    }
}

/// One violation found by a rule check: a record, the field and the rule's error code.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ViolationRow {
    pub job_id: Uuid,
    pub record_id: Uuid,
    pub field: String,
    pub code: String,
}

/// Derived keys of one record recomputed by a job. Applied only while the record is active and
/// still at `version` (a concurrent write computed its own keys in its own transaction).
#[derive(Debug, Clone, PartialEq)]
pub struct KeyRefresh {
    pub object: String,
    pub record_id: Uuid,
    pub version: i64,
    /// The record's new match keys (replacing all of its match keys), if recomputed.
    pub match_keys: Option<Vec<Vec<u8>>>,
    /// `(field, digest)`: the record's unique key of one field is replaced (removed when the
    /// digest is `None`). A digest another record holds is not taken (that record pair is a
    /// violation the job reports).
    pub unique_key: Option<(String, Option<Vec<u8>>)>,
    /// Sensitive values sealed again under the current data key (a key rotation): each
    /// `(field, envelope)` replaces that field's stored value in the record's current state.
    /// Record versions keep what they hold (their keys stay to open them).
    pub envelopes: Vec<(String, String)>,
}

/// One page of a job's work, saved in one transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct JobProgress {
    pub id: Uuid,
    pub claimant: String,
    pub now: i64,
    /// The lease is extended to this time.
    pub lease_until: i64,
    pub cursor: Option<Uuid>,
    /// Records processed in this page.
    pub scanned: i64,
    pub violations: Vec<ViolationRow>,
    pub refresh: Vec<KeyRefresh>,
    /// Ends the job: "done" or "failed" with its error.
    pub finish: Option<(String, Option<String>)>,
}
