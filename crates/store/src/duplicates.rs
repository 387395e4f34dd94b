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
    /// What the duplicate check of this write saw, re-checked when it commits (None: no fuzzy
    /// check was made, e.g. a merge or a deal).
    pub guard: Option<MatchGuard>,
}

/// The fuzzy duplicate check of a write, made before the write reached the store, re-checked
/// inside the write's transaction: two near-duplicate creates sent at the same moment would
/// otherwise both pass, each checked before the other was stored.
///
/// Every write of match keys stamps its rows with the next value of a per-object counter
/// (`Store::match_key_stamp` reads it), taken under the writer's lock (SQLite: the one writer;
/// PostgreSQL: the counter row's lock, held to commit), so a row with a higher stamp than the
/// one read before the check's block lookups was not seen by the check. At commit the store
/// refuses the write with [`crate::StoreError::StaleCheck`] when such an unseen record, other
/// than the records of the same batch (the batch's check compared those with each other),
/// holds keys that would have made it a candidate: keys of two or more fields, or one key
/// whose block was selective when checked. The caller checks again and resubmits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchGuard {
    /// The object's match-key stamp read before the check looked its keys up.
    pub seen_stamp: i64,
    /// The keys the check looked up.
    pub keys: Vec<GuardKey>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardKey {
    pub key: Vec<u8>,
    /// The field the key was made from (keys of one field count once).
    pub field: u8,
    /// Whether sharing this key alone made a record a candidate (its block was small).
    pub selective: bool,
}

/// Committed match keys of objects, as `(holder, key, stamp)` per object: what a group's
/// guards are judged against (`WriteBatch::stale_in_group`).
pub type StampedKeys = std::collections::BTreeMap<String, Vec<(Uuid, Vec<u8>, i64)>>;

/// What a store reads for the guards of one object (`WriteBatch::guard_scans`): the keys of
/// `keys` stamped above `since`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardScan {
    pub since: i64,
    pub keys: Vec<Vec<u8>>,
}

impl MatchGuard {
    /// The first record among `rows` — `(holder, key, stamp)` of match keys of the object —
    /// that the check did not see and that would have been its candidate; `ignore` are the
    /// records of the write's own batch (the guarded record among them).
    pub fn breached_by<'a>(
        &self,
        rows: impl IntoIterator<Item = (Uuid, &'a [u8], i64)>,
        ignore: impl Fn(&Uuid) -> bool,
    ) -> Option<Uuid> {
        let keys: std::collections::HashMap<&[u8], &GuardKey> =
            self.keys.iter().map(|k| (k.key.as_slice(), k)).collect();
        let mut holders: std::collections::BTreeMap<Uuid, (u64, bool)> = std::collections::BTreeMap::new();
        for (holder, key, stamp) in rows {
            if stamp <= self.seen_stamp || ignore(&holder) {
                continue;
            }
            if let Some(k) = keys.get(key) {
                let e = holders.entry(holder).or_default();
                e.0 |= 1u64 << (k.field % 64);
                e.1 |= k.selective;
            }
        }
        holders.into_iter().find(|(_, (fields, selective))| fields.count_ones() >= 2 || *selective).map(|(id, _)| id)
    }
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
    /// The auto-merge the scan was asked for (`{"threshold", "rule", "trusted_sources"}`), with
    /// its outcome once done (`merged`, `records_merged`, `left_for_review`, `refused`, and
    /// `stopped` or `error` when it ended early); `None` for a scan that only proposes pairs
    /// (the default).
    pub auto_merge: Option<Value>,
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
    /// The merge that took the pair ("merged" pairs; what undo needs).
    pub merge_id: Option<Uuid>,
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
    /// Stores a new merge row; open candidate pairs between two of its records (survivor and
    /// losers) become "merged", with the merge's id. Open pairs of a loser and a record outside
    /// the merge stay open (hidden from the queue while the loser is a tombstone, back when the
    /// merge is undone).
    Record(Box<MergeRow>),
    /// Marks a merge undone, and its merged pairs open again (undecided: a steward may now
    /// dismiss them, or a later scan merge them again): `NotFound` when there is no such merge,
    /// `AlreadyExists` when it was undone already (so two concurrent undos cannot both apply).
    Undo { id: Uuid, undone_at: i64, undone_by: Option<Uuid> },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guard_is_breached_only_by_unseen_records_that_would_have_been_candidates() {
        let key = |k: u8, field: u8, selective: bool| GuardKey { key: vec![k], field, selective };
        let guard = MatchGuard {
            seen_stamp: 10,
            keys: vec![key(1, 0, false), key(2, 0, false), key(3, 1, false), key(4, 2, true)],
        };
        let (a, b, c, d, own) =
            (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3), Uuid::from_u128(4), Uuid::from_u128(9));
        let none = |_: &Uuid| false;
        // Two crowded keys of one field (a namesake): no candidate.
        assert_eq!(guard.breached_by([(a, &[1u8][..], 11), (a, &[2u8][..], 11)], none), None);
        // Keys of two fields: a candidate.
        assert_eq!(guard.breached_by([(a, &[1u8][..], 11), (a, &[3u8][..], 12)], none), Some(a));
        // A selective key alone: a candidate.
        assert_eq!(guard.breached_by([(b, &[4u8][..], 11)], none), Some(b));
        // Seen by the check (stamp not above the one it read): no breach.
        assert_eq!(guard.breached_by([(c, &[1u8][..], 10), (c, &[3u8][..], 9), (d, &[4u8][..], 10)], none), None);
        // Keys the check did not look up do not count; nor do the batch's own records.
        assert_eq!(guard.breached_by([(c, &[7u8][..], 11), (c, &[1u8][..], 11)], none), None);
        assert_eq!(guard.breached_by([(own, &[4u8][..], 11)], |id| *id == own), None);
    }

    #[test]
    fn a_group_is_judged_as_if_its_batches_came_one_after_another() {
        use crate::WriteBatch;
        let set = |object: &str, id: u128, seen: i64| MatchKeySet {
            object: object.into(),
            record_id: Uuid::from_u128(id),
            keys: vec![vec![1], vec![2]],
            guard: Some(MatchGuard {
                seen_stamp: seen,
                keys: vec![
                    GuardKey { key: vec![1], field: 0, selective: false },
                    GuardKey { key: vec![2], field: 1, selective: false },
                ],
            }),
        };
        let batch = |sets: Vec<MatchKeySet>| WriteBatch { match_keys: sets, ..WriteBatch::default() };
        // Twins in one group: the first goes, the second is stale; a batch of another object
        // with the same key bytes is not; a batch holding both twins is not stale by itself.
        let group = [
            batch(vec![set("contacts", 1, 5)]),
            batch(vec![set("contacts", 2, 5)]),
            batch(vec![set("leads", 3, 5)]),
            batch(vec![set("companies", 4, 5), set("companies", 5, 5)]),
        ];
        let refs: Vec<Option<&WriteBatch>> = group.iter().map(Some).collect();
        assert_eq!(WriteBatch::stale_in_group(&refs, &StampedKeys::new()), vec![1]);
        let scans = WriteBatch::guard_scans(&refs);
        assert_eq!(scans.get("contacts"), Some(&GuardScan { since: 5, keys: vec![vec![1], vec![2]] }));
        // A committed holder stamped after the checks makes the first stale too (and the second
        // then is judged against the committed holder only: stale as well).
        let mut committed = StampedKeys::new();
        committed.insert("contacts".into(), vec![(Uuid::from_u128(9), vec![1], 6), (Uuid::from_u128(9), vec![2], 6)]);
        assert_eq!(WriteBatch::stale_in_group(&refs, &committed), vec![0, 1]);
        // One seen by the checks (stamp not above theirs) does not.
        committed.insert("contacts".into(), vec![(Uuid::from_u128(9), vec![1], 5), (Uuid::from_u128(9), vec![2], 5)]);
        assert_eq!(WriteBatch::stale_in_group(&refs, &committed), vec![1]);
    }
}
