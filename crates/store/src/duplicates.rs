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

/// A guarded write's key set, with the records whose keys do not count against it: its own
/// batch, and in a group applied at once also the writes after it (judged against it).
pub type GuardedSet<'a> = (&'a MatchKeySet, &'a std::collections::HashSet<Uuid>);

/// The objects whose match keys the guards of `sets` must see, each with the lowest stamp its
/// guards saw: the store reads `(holder, key, stamp)` of the keys stamped above it.
pub fn guard_scans<'a>(sets: &[GuardedSet<'a>]) -> std::collections::BTreeMap<&'a str, i64> {
    let mut objects: std::collections::BTreeMap<&str, i64> = std::collections::BTreeMap::new();
    for (set, _) in sets {
        if let Some(g) = &set.guard {
            let since = objects.entry(set.object.as_str()).or_insert(g.seen_stamp);
            *since = (*since).min(g.seen_stamp);
        }
    }
    objects
}

/// Positions in `sets` of the guards of `object` that `rows` (`guard_scans`' read) breach.
pub fn breached_guards(sets: &[GuardedSet<'_>], object: &str, rows: &[(Uuid, Vec<u8>, i64)]) -> Vec<usize> {
    let mut by_key: std::collections::HashMap<&[u8], Vec<(Uuid, i64)>> = std::collections::HashMap::new();
    for (id, key, stamp) in rows {
        by_key.entry(key.as_slice()).or_default().push((*id, *stamp));
    }
    sets.iter()
        .enumerate()
        .filter(|(_, (set, _))| set.object == object)
        .filter_map(|(i, (set, ignore))| {
            let guard = set.guard.as_ref()?;
            let rows = guard.keys.iter().flat_map(|k| {
                let key = k.key.as_slice();
                by_key.get(key).into_iter().flatten().map(move |(id, stamp)| (*id, key, *stamp))
            });
            guard.breached_by(rows, |id| *id == set.record_id || ignore.contains(id)).map(|_| i)
        })
        .collect()
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
}
