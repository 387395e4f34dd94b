//! Duplicate work in the SQLite store: match keys and merge rows written inside the writer's
//! transaction (as part of a `WriteBatch`), scan jobs, candidates and dismissals.

use crate::read_pool::ReadPool;
use crate::{ChainHead, append_events, internal, map_sqlx, opt_uuid, opt_uuid_col, parse_uuid, uuid_col};
use custodian_store::{
    AuditDraft, CandidateRow, DismissalRow, GuardScan, MATCH_BLOCK_CAP, MatchKeySet, MergeChange, MergeRow,
    RecordWrite, ScanJobRow, StampedKeys, StoreError, StoreResult, WriteBatch,
};
use serde_json::Value;
use sqlx::sqlite::SqliteRow;
use sqlx::{AssertSqlSafe, Row, SqliteConnection};
use std::collections::{BTreeMap, HashSet};
use uuid::Uuid;

fn json_of(row: &SqliteRow, column: &str) -> StoreResult<Value> {
    let text: String = row.try_get(column).map_err(map_sqlx)?;
    serde_json::from_str(&text).map_err(internal)
}

/// Another active record holding one of the strong keys `records` introduce, not dismissed as
/// "not a duplicate" with the writer and not among `peers` (see `RecordWrite::exclusive_keys`,
/// `WriteBatch::exclusive_key_peers`). Runs inside the one writer's transaction with the whole
/// batch applied, so it sees every committed write and the batch itself.
pub(crate) async fn check_exclusive_keys(
    conn: &mut SqliteConnection,
    records: &[RecordWrite],
    peers: &HashSet<Uuid>,
) -> StoreResult<()> {
    let peers = serde_json::to_string(&peers.iter().map(Uuid::to_string).collect::<Vec<_>>()).map_err(internal)?;
    for w in records {
        let id = w.record.id.to_string();
        for key in &w.exclusive_keys {
            let holder: Option<String> = sqlx::query_scalar(EXCLUSIVE_HOLDER)
                .bind(&w.record.object)
                .bind(&key.field)
                .bind(&key.digest)
                .bind(&id)
                .bind(&peers)
                .fetch_optional(&mut *conn)
                .await
                .map_err(map_sqlx)?;
            if let Some(holder) = holder {
                return Err(StoreError::UniqueViolation {
                    object: w.record.object.clone(),
                    field: key.field.clone(),
                    holder: Uuid::parse_str(&holder).ok(),
                });
            }
        }
    }
    Ok(())
}

/// A holder of `(object ?1, field ?2, digest ?3)` other than record ?4 and the records of the
/// JSON array ?5 that conflicts with it.
const EXCLUSIVE_HOLDER: &str = "SELECT b.record_id FROM blind_indexes b \
     JOIN records r ON r.id = b.record_id AND r.deleted_at IS NULL \
     WHERE b.object = ?1 AND b.field = ?2 AND b.digest = ?3 AND b.record_id <> ?4 \
     AND b.record_id NOT IN (SELECT value FROM json_each(?5)) \
     AND NOT EXISTS (SELECT 1 FROM duplicate_dismissals d WHERE d.object = ?1 \
     AND ((d.record_a = ?4 AND d.record_b = b.record_id) OR (d.record_a = b.record_id AND d.record_b = ?4))) \
     LIMIT 1";

pub(crate) async fn write_match_keys(conn: &mut SqliteConnection, sets: &[MatchKeySet]) -> StoreResult<()> {
    // One new stamp per object for the whole batch.
    let mut stamps: std::collections::BTreeMap<&str, i64> = std::collections::BTreeMap::new();
    for set in sets.iter().filter(|s| !s.keys.is_empty()) {
        if !stamps.contains_key(set.object.as_str()) {
            let stamp = next_stamp(conn, &set.object).await?;
            stamps.insert(&set.object, stamp);
        }
    }
    for set in sets {
        let id = set.record_id.to_string();
        sqlx::query("DELETE FROM match_keys WHERE record_id = ?")
            .bind(&id)
            .execute(&mut *conn)
            .await
            .map_err(map_sqlx)?;
        let Some(stamp) = stamps.get(set.object.as_str()).filter(|_| !set.keys.is_empty()) else { continue };
        for key in &set.keys {
            sqlx::query("INSERT OR IGNORE INTO match_keys (object, key, record_id, stamp) VALUES (?, ?, ?, ?)")
                .bind(&set.object)
                .bind(key)
                .bind(&id)
                .bind(stamp)
                .execute(&mut *conn)
                .await
                .map_err(map_sqlx)?;
        }
    }
    Ok(())
}

/// Moves the match-key stamp of `object` on and returns it.
pub(crate) async fn next_stamp(conn: &mut SqliteConnection, object: &str) -> StoreResult<i64> {
    sqlx::query_scalar(
        "INSERT INTO match_key_stamps (object, stamp) VALUES (?, 1) \
         ON CONFLICT (object) DO UPDATE SET stamp = stamp + 1 RETURNING stamp",
    )
    .bind(object)
    .fetch_one(&mut *conn)
    .await
    .map_err(map_sqlx)
}

pub(crate) async fn match_key_stamp(pool: &ReadPool, object: &str) -> StoreResult<i64> {
    sqlx::query_scalar("SELECT coalesce((SELECT stamp FROM match_key_stamps WHERE object = ?), 0)")
        .bind(object)
        .fetch_one(&mut *pool.get().await?)
        .await
        .map_err(map_sqlx)
}

/// The match keys stamped above each object's stamp in `scans` (`WriteBatch::guard_scans`), as
/// `(holder, key, stamp)`: what a group's duplicate-check guards are judged against. Read in
/// the writer's transaction before the group's own keys are written.
pub(crate) async fn committed_keys(
    conn: &mut SqliteConnection,
    scans: &BTreeMap<String, GuardScan>,
) -> StoreResult<StampedKeys> {
    let mut out = BTreeMap::new();
    for (object, scan) in scans {
        // The stamp range (recent keys only, by the stamp index: a crowded key's block can be
        // large), then the keys asked for.
        let keys = serde_json::to_string(&scan.keys.iter().map(hex::encode).collect::<Vec<_>>()).map_err(internal)?;
        let rows = sqlx::query(
            "SELECT record_id, key, stamp FROM match_keys INDEXED BY match_keys_stamp \
             WHERE object = ? AND stamp > ? AND key IN (SELECT unhex(value) FROM json_each(?))",
        )
        .bind(object)
        .bind(scan.since)
        .bind(keys)
        .fetch_all(&mut *conn)
        .await
        .map_err(map_sqlx)?;
        let mut stamped: Vec<(Uuid, Vec<u8>, i64)> = Vec::with_capacity(rows.len());
        for row in &rows {
            let key: Vec<u8> = row.try_get("key").map_err(map_sqlx)?;
            stamped.push((uuid_col(row, "record_id")?, key, row.try_get("stamp").map_err(map_sqlx)?));
        }
        out.insert(object.clone(), stamped);
    }
    Ok(out)
}

/// Positions of the batches of a group whose duplicate checks went stale (see `MatchGuard`),
/// judged before any of their keys are written.
pub(crate) async fn stale_batches(
    conn: &mut SqliteConnection,
    batches: &[Option<&WriteBatch>],
) -> StoreResult<Vec<usize>> {
    let scans = WriteBatch::guard_scans(batches);
    if scans.is_empty() {
        return Ok(Vec::new());
    }
    let committed = committed_keys(conn, &scans).await?;
    Ok(WriteBatch::stale_in_group(batches, &committed))
}

pub(crate) async fn apply_merge(conn: &mut SqliteConnection, change: &MergeChange) -> StoreResult<()> {
    match change {
        MergeChange::Record(m) => {
            let losers = serde_json::to_string(&m.loser_ids).map_err(internal)?;
            sqlx::query(
                "INSERT INTO merges (id, object, survivor_id, loser_ids, records, request, created_at, created_by) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(m.id.to_string())
            .bind(&m.object)
            .bind(m.survivor_id.to_string())
            .bind(&losers)
            .bind(m.records.to_string())
            .bind(m.request.to_string())
            .bind(m.created_at)
            .bind(opt_uuid(m.created_by))
            .execute(&mut *conn)
            .await
            .map_err(map_sqlx)?;
            let mut members = vec![m.survivor_id];
            members.extend(&m.loser_ids);
            let members = serde_json::to_string(&members).map_err(internal)?;
            sqlx::query(
                "UPDATE duplicate_candidates SET status = 'merged', decided_at = ?, decided_by = ?, merge_id = ? \
                 WHERE status = 'open' AND record_a IN (SELECT value FROM json_each(?)) \
                 AND record_b IN (SELECT value FROM json_each(?))",
            )
            .bind(m.created_at)
            .bind(opt_uuid(m.created_by))
            .bind(m.id.to_string())
            .bind(&members)
            .bind(&members)
            .execute(&mut *conn)
            .await
            .map_err(map_sqlx)?;
            Ok(())
        }
        MergeChange::Undo { id, undone_at, undone_by } => {
            let done: Option<Option<i64>> = sqlx::query_scalar("SELECT undone_at FROM merges WHERE id = ?")
                .bind(id.to_string())
                .fetch_optional(&mut *conn)
                .await
                .map_err(map_sqlx)?;
            match done {
                None => Err(StoreError::NotFound),
                Some(Some(_)) => Err(StoreError::AlreadyExists(format!("undo of merge {id}"))),
                Some(None) => {
                    sqlx::query("UPDATE merges SET undone_at = ?, undone_by = ? WHERE id = ? AND undone_at IS NULL")
                        .bind(undone_at)
                        .bind(opt_uuid(*undone_by))
                        .bind(id.to_string())
                        .execute(&mut *conn)
                        .await
                        .map_err(map_sqlx)?;
                    sqlx::query(
                        "UPDATE duplicate_candidates SET status = 'open', decided_at = NULL, decided_by = NULL, \
                         merge_id = NULL WHERE merge_id = ? AND status = 'merged'",
                    )
                    .bind(id.to_string())
                    .execute(&mut *conn)
                    .await
                    .map_err(map_sqlx)?;
                    Ok(())
                }
            }
        }
    }
}

pub(crate) async fn create_scan_job(
    conn: &mut SqliteConnection,
    head: &mut ChainHead,
    job: &ScanJobRow,
    audit: AuditDraft,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO duplicate_scan_jobs (id, object, status, requested_by, created_at, finished_at, records, pairs, error, \
         auto_merge) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(job.id.to_string())
    .bind(&job.object)
    .bind(&job.status)
    .bind(opt_uuid(job.requested_by))
    .bind(job.created_at)
    .bind(job.finished_at)
    .bind(job.records)
    .bind(job.pairs)
    .bind(&job.error)
    .bind(job.auto_merge.as_ref().map(Value::to_string))
    .execute(&mut *conn)
    .await
    .map_err(map_sqlx)?;
    append_events(conn, head, &[audit]).await?;
    Ok(())
}

pub(crate) async fn finish_scan_job(
    conn: &mut SqliteConnection,
    job: &ScanJobRow,
    candidates: &[CandidateRow],
) -> StoreResult<()> {
    let r = sqlx::query(
        "UPDATE duplicate_scan_jobs SET status = ?, finished_at = ?, records = ?, pairs = ?, error = ?, auto_merge = ? \
         WHERE id = ?",
    )
    .bind(&job.status)
    .bind(job.finished_at)
    .bind(job.records)
    .bind(job.pairs)
    .bind(&job.error)
    .bind(job.auto_merge.as_ref().map(Value::to_string))
    .bind(job.id.to_string())
    .execute(&mut *conn)
    .await
    .map_err(map_sqlx)?;
    if r.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    if job.status != "done" {
        return Ok(());
    }
    sqlx::query("DELETE FROM duplicate_candidates WHERE object = ? AND status = 'open'")
        .bind(&job.object)
        .execute(&mut *conn)
        .await
        .map_err(map_sqlx)?;
    for c in candidates {
        sqlx::query(
            "INSERT INTO duplicate_candidates (id, object, job_id, cluster_id, record_a, record_b, score, reasons, status, \
             created_at, decided_at, decided_by, merge_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(c.id.to_string())
        .bind(&c.object)
        .bind(c.job_id.to_string())
        .bind(c.cluster_id.to_string())
        .bind(c.record_a.to_string())
        .bind(c.record_b.to_string())
        .bind(c.score)
        .bind(c.reasons.to_string())
        .bind(&c.status)
        .bind(c.created_at)
        .bind(c.decided_at)
        .bind(opt_uuid(c.decided_by))
        .bind(opt_uuid(c.merge_id))
        .execute(&mut *conn)
        .await
        .map_err(map_sqlx)?;
    }
    Ok(())
}

pub(crate) async fn set_scan_auto_merge(conn: &mut SqliteConnection, id: Uuid, auto_merge: &Value) -> StoreResult<()> {
    let r = sqlx::query("UPDATE duplicate_scan_jobs SET auto_merge = ? WHERE id = ?")
        .bind(auto_merge.to_string())
        .bind(id.to_string())
        .execute(&mut *conn)
        .await
        .map_err(map_sqlx)?;
    if r.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

pub(crate) async fn dismiss_candidate(
    conn: &mut SqliteConnection,
    head: &mut ChainHead,
    id: Uuid,
    d: &DismissalRow,
    audit: AuditDraft,
) -> StoreResult<()> {
    let r = sqlx::query(
        "UPDATE duplicate_candidates SET status = 'dismissed', decided_at = ?, decided_by = ? WHERE id = ? AND status = 'open'",
    )
    .bind(d.decided_at)
    .bind(opt_uuid(d.decided_by))
    .bind(id.to_string())
    .execute(&mut *conn)
    .await
    .map_err(map_sqlx)?;
    if r.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    let (a, b) = if d.record_a <= d.record_b { (d.record_a, d.record_b) } else { (d.record_b, d.record_a) };
    sqlx::query(
        "INSERT OR IGNORE INTO duplicate_dismissals (object, record_a, record_b, reason, decided_by, decided_at) \
         VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(&d.object)
    .bind(a.to_string())
    .bind(b.to_string())
    .bind(&d.reason)
    .bind(opt_uuid(d.decided_by))
    .bind(d.decided_at)
    .execute(&mut *conn)
    .await
    .map_err(map_sqlx)?;
    append_events(conn, head, &[audit]).await?;
    Ok(())
}

// ---- reads -------------------------------------------------------------------------------

/// Keys per statement of `read_blocks`: bounds the rows one statement holds at once (a block
/// row carries up to MATCH_BLOCK_CAP ids), for an import of many thousand records.
const BLOCK_KEYS_PER_STATEMENT: usize = 1000;

pub(crate) async fn match_blocks(pool: &ReadPool, object: &str, keys: &[Vec<u8>]) -> StoreResult<Vec<(usize, Uuid)>> {
    Ok(read_blocks(pool, object, keys, false).await?.1)
}

/// `Store::stamped_match_blocks`: the stamp is read by the statement of the first keys, in its
/// snapshot (a later statement can only see more keys, never fewer).
pub(crate) async fn stamped_match_blocks(
    pool: &ReadPool,
    object: &str,
    keys: &[Vec<u8>],
) -> StoreResult<(i64, Vec<(usize, Uuid)>)> {
    if keys.is_empty() {
        return Ok((match_key_stamp(pool, object).await?, Vec::new()));
    }
    let (stamp, blocks) = read_blocks(pool, object, keys, true).await?;
    Ok((stamp.ok_or_else(|| internal("the match-key stamp was not read"))?, blocks))
}

/// The blocks of `keys`, and with `with_stamp` the object's match-key stamp read by the first
/// statement (as a row of position -1).
///
/// One statement per BLOCK_KEYS_PER_STATEMENT keys, always the same text: the keys travel as
/// one JSON array of hex texts and each key's block is a correlated subquery over it, read
/// through the primary key and cut at the cap (a literal: SQLite re-prepares a statement
/// whenever a bound LIMIT is rebound). A block comes back as one row, its ids joined by commas:
/// each row costs the driver about a microsecond, a block of a common key holds hundreds of
/// ids, and a check reads dozens of blocks. (A compound select of one term per key, the form
/// before, opened and closed its cursors for every term and had to be prepared again for every
/// new number of keys: twice the time per key.) The keys are looked up in their order (a row's
/// position is mapped back to the key's): neighbouring keys share the index's pages, where a
/// check's keys in their own order land on a new leaf page each. Neither a join nor an ORDER
/// BY (keys of deleted records are not kept; the caller sorts).
async fn read_blocks(
    pool: &ReadPool,
    object: &str,
    keys: &[Vec<u8>],
    with_stamp: bool,
) -> StoreResult<(Option<i64>, Vec<(usize, Uuid)>)> {
    let mut out = Vec::new();
    let mut stamp = None;
    let mut order: Vec<usize> = (0..keys.len()).collect();
    order.sort_by(|&a, &b| keys[a].cmp(&keys[b]));
    let blocks = format!(
        "SELECT j.key AS i, (SELECT group_concat(record_id) FROM \
         (SELECT record_id FROM match_keys WHERE object = ?1 AND key = unhex(j.value) LIMIT {MATCH_BLOCK_CAP})) AS ids \
         FROM json_each(?2) AS j"
    );
    let stamped = format!(
        "SELECT -1 AS i, CAST(coalesce((SELECT stamp FROM match_key_stamps WHERE object = ?1), 0) AS TEXT) AS ids \
         UNION ALL {blocks}"
    );
    for (chunk_index, chunk) in order.chunks(BLOCK_KEYS_PER_STATEMENT).enumerate() {
        let text = if with_stamp && chunk_index == 0 { &stamped } else { &blocks };
        let hex_keys = Value::Array(chunk.iter().map(|&k| Value::String(hex::encode(&keys[k]))).collect()).to_string();
        let rows = sqlx::query(AssertSqlSafe(text.as_str()))
            .bind(object)
            .bind(hex_keys)
            .fetch_all(&mut *pool.get().await?)
            .await
            .map_err(map_sqlx)?;
        for row in rows {
            let i: i64 = row.try_get("i").map_err(map_sqlx)?;
            let ids: Option<String> = row.try_get("ids").map_err(map_sqlx)?;
            if i < 0 {
                let text = ids.unwrap_or_default();
                stamp = Some(text.parse::<i64>().map_err(|e| internal(format!("match-key stamp {text:?}: {e}")))?);
                continue;
            }
            let i = usize::try_from(i).ok().and_then(|i| chunk.get(i)).copied().ok_or_else(|| internal("block row"))?;
            for id in ids.iter().flat_map(|ids| ids.split(',')) {
                out.push((i, Uuid::parse_str(id).map_err(internal)?));
            }
        }
    }
    out.sort();
    Ok((stamp, out))
}

/// `Store::find_by_blind_indexes`: per distinct (field, digest), its active holders read in id
/// order through the table's primary key (object, field, digest, record_id) and cut at the
/// limit in SQL, as one row of comma-joined ids; one statement for all of them, the pairs as
/// one JSON array (a correlated subquery per pair, as `read_blocks` does). A digest many
/// records share (a switchboard number, a shared inbox) costs the limit, not its holders.
pub(crate) async fn find_by_blind_indexes(
    pool: &ReadPool,
    object: &str,
    keys: &[(String, Vec<u8>)],
    limit: u32,
) -> StoreResult<Vec<(usize, Uuid)>> {
    use std::collections::HashMap;
    let mut out: Vec<(usize, Uuid)> = Vec::new();
    if limit == 0 || keys.is_empty() {
        return Ok(out);
    }
    // The distinct (field, digest) pairs, each with the positions that asked for it.
    type Asked<'a> = ((&'a str, &'a [u8]), Vec<usize>);
    let mut position: HashMap<(&str, &[u8]), usize> = HashMap::new();
    let mut distinct: Vec<Asked> = Vec::new();
    for (i, (field, digest)) in keys.iter().enumerate() {
        let key = (field.as_str(), digest.as_slice());
        let at = *position.entry(key).or_insert_with(|| {
            distinct.push((key, Vec::new()));
            distinct.len() - 1
        });
        if let Some((_, asked)) = distinct.get_mut(at) {
            asked.push(i);
        }
    }
    let pairs = Value::Array(
        distinct
            .iter()
            .map(|((field, digest), _)| Value::Array(vec![Value::from(*field), Value::String(hex::encode(digest))]))
            .collect(),
    )
    .to_string();
    let text = format!(
        "SELECT j.key AS n, (SELECT group_concat(id) FROM (SELECT b.record_id AS id FROM blind_indexes b \
         JOIN records r ON r.id = b.record_id \
         WHERE b.object = ?1 AND b.field = j.value ->> 0 AND b.digest = unhex(j.value ->> 1) \
         AND r.deleted_at IS NULL ORDER BY b.record_id LIMIT {limit})) AS ids FROM json_each(?2) AS j"
    );
    let rows = sqlx::query(AssertSqlSafe(text))
        .bind(object)
        .bind(pairs)
        .fetch_all(&mut *pool.get().await?)
        .await
        .map_err(map_sqlx)?;
    for row in rows {
        let n: i64 = row.try_get("n").map_err(map_sqlx)?;
        let Some((_, asked)) = usize::try_from(n).ok().and_then(|n| distinct.get(n)) else {
            return Err(internal(format!("unexpected position {n}")));
        };
        let ids: Option<String> = row.try_get("ids").map_err(map_sqlx)?;
        for id in ids.iter().flat_map(|ids| ids.split(',')) {
            let id = Uuid::parse_str(id).map_err(internal)?;
            out.extend(asked.iter().map(|i| (*i, id)));
        }
    }
    out.sort();
    Ok(out)
}

/// `Store::find_by_field_values`: per field, one statement for all its values (one JSON array,
/// a correlated subquery per value, as `read_blocks` does), each value's holders read through
/// the field's expression index (`fxid_<object>_<field>` on the value and the id, partial on
/// the object: the object is written as a literal so the planner can use it) and cut at the
/// limit in SQL, as one row of comma-joined ids.
pub(crate) async fn find_by_field_values(
    pool: &ReadPool,
    object: &str,
    keys: &[(String, String)],
    limit: u32,
) -> StoreResult<Vec<(usize, Uuid)>> {
    let mut out: Vec<(usize, Uuid)> = Vec::new();
    if limit == 0 || keys.is_empty() {
        return Ok(out);
    }
    let mut by_field: BTreeMap<&str, Vec<(usize, &str)>> = BTreeMap::new();
    for (i, (field, value)) in keys.iter().enumerate() {
        by_field.entry(field.as_str()).or_default().push((i, value.as_str()));
    }
    for (field, values) in by_field {
        if !custodian_store::is_identifier(field) {
            return Err(internal(format!("invalid field name {field:?}")));
        }
        let mut parts = crate::sql::QueryParts::default();
        crate::sql::push_object(&mut parts, object);
        let (object_sql, mut binds) = parts.finish_where();
        let text = format!(
            "SELECT j.key AS n, (SELECT group_concat(id) FROM (SELECT r.id AS id FROM records r \
             WHERE {object_sql} AND r.deleted_at IS NULL AND json_extract(r.fields, '$.{field}') = j.value \
             ORDER BY r.id LIMIT {limit})) AS ids FROM json_each(?) AS j"
        );
        let array = Value::Array(values.iter().map(|(_, v)| Value::from(*v)).collect()).to_string();
        binds.push(crate::sql::Bind::Text(array));
        let q = crate::bind_all(sqlx::query(AssertSqlSafe(text)), binds);
        let rows = q.fetch_all(&mut *pool.get().await?).await.map_err(map_sqlx)?;
        for row in rows {
            let n: i64 = row.try_get("n").map_err(map_sqlx)?;
            let Some(&(i, _)) = usize::try_from(n).ok().and_then(|n| values.get(n)) else {
                return Err(internal(format!("unexpected position {n}")));
            };
            let ids: Option<String> = row.try_get("ids").map_err(map_sqlx)?;
            for id in ids.iter().flat_map(|ids| ids.split(',')) {
                out.push((i, Uuid::parse_str(id).map_err(internal)?));
            }
        }
    }
    out.sort();
    Ok(out)
}

pub(crate) async fn dismissed_with(
    pool: &ReadPool,
    object: &str,
    record: Uuid,
    others: &[Uuid],
) -> StoreResult<Vec<Uuid>> {
    let mut out = Vec::new();
    for other in others {
        let (a, b) = if record <= *other { (record, *other) } else { (*other, record) };
        let found: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM duplicate_dismissals WHERE object = ? AND record_a = ? AND record_b = ?")
                .bind(object)
                .bind(a.to_string())
                .bind(b.to_string())
                .fetch_optional(&mut *pool.get().await?)
                .await
                .map_err(map_sqlx)?;
        if found.is_some() {
            out.push(*other);
        }
    }
    Ok(out)
}

fn dismissal_from_row(row: &SqliteRow) -> StoreResult<DismissalRow> {
    Ok(DismissalRow {
        object: row.try_get("object").map_err(map_sqlx)?,
        record_a: uuid_col(row, "record_a")?,
        record_b: uuid_col(row, "record_b")?,
        reason: row.try_get("reason").map_err(map_sqlx)?,
        decided_by: opt_uuid_col(row, "decided_by")?,
        decided_at: row.try_get("decided_at").map_err(map_sqlx)?,
    })
}

pub(crate) async fn list_dismissals(pool: &ReadPool, object: &str) -> StoreResult<Vec<DismissalRow>> {
    let rows = sqlx::query("SELECT * FROM duplicate_dismissals WHERE object = ? ORDER BY record_a, record_b")
        .bind(object)
        .fetch_all(&mut *pool.get().await?)
        .await
        .map_err(map_sqlx)?;
    rows.iter().map(dismissal_from_row).collect()
}

fn job_from_row(row: &SqliteRow) -> StoreResult<ScanJobRow> {
    Ok(ScanJobRow {
        id: uuid_col(row, "id")?,
        object: row.try_get("object").map_err(map_sqlx)?,
        status: row.try_get("status").map_err(map_sqlx)?,
        requested_by: opt_uuid_col(row, "requested_by")?,
        created_at: row.try_get("created_at").map_err(map_sqlx)?,
        finished_at: row.try_get("finished_at").map_err(map_sqlx)?,
        records: row.try_get("records").map_err(map_sqlx)?,
        pairs: row.try_get("pairs").map_err(map_sqlx)?,
        error: row.try_get("error").map_err(map_sqlx)?,
        auto_merge: match row.try_get::<Option<String>, _>("auto_merge").map_err(map_sqlx)? {
            Some(text) => Some(serde_json::from_str(&text).map_err(internal)?),
            None => None,
        },
    })
}

pub(crate) async fn get_scan_job(pool: &ReadPool, id: Uuid) -> StoreResult<Option<ScanJobRow>> {
    let row = sqlx::query("SELECT * FROM duplicate_scan_jobs WHERE id = ?")
        .bind(id.to_string())
        .fetch_optional(&mut *pool.get().await?)
        .await
        .map_err(map_sqlx)?;
    row.as_ref().map(job_from_row).transpose()
}

fn candidate_from_row(row: &SqliteRow) -> StoreResult<CandidateRow> {
    Ok(CandidateRow {
        id: uuid_col(row, "id")?,
        object: row.try_get("object").map_err(map_sqlx)?,
        job_id: uuid_col(row, "job_id")?,
        cluster_id: uuid_col(row, "cluster_id")?,
        record_a: uuid_col(row, "record_a")?,
        record_b: uuid_col(row, "record_b")?,
        score: row.try_get("score").map_err(map_sqlx)?,
        reasons: json_of(row, "reasons")?,
        status: row.try_get("status").map_err(map_sqlx)?,
        created_at: row.try_get("created_at").map_err(map_sqlx)?,
        decided_at: row.try_get("decided_at").map_err(map_sqlx)?,
        decided_by: opt_uuid_col(row, "decided_by")?,
        merge_id: opt_uuid_col(row, "merge_id")?,
    })
}

pub(crate) async fn list_candidates(
    pool: &ReadPool,
    object: &str,
    status: &str,
    after: Option<Uuid>,
    limit: u32,
) -> StoreResult<Vec<CandidateRow>> {
    let text = format!(
        "SELECT c.* FROM duplicate_candidates c \
         JOIN records a ON a.id = c.record_a JOIN records b ON b.id = c.record_b \
         WHERE c.object = ? AND c.status = ? AND c.id > ? \
         AND (c.status = 'merged' OR (a.deleted_at IS NULL AND b.deleted_at IS NULL)) \
         ORDER BY c.id LIMIT {}",
        limit.clamp(1, 1000)
    );
    let rows = sqlx::query(AssertSqlSafe(text))
        .bind(object)
        .bind(status)
        .bind(after.map(|u| u.to_string()).unwrap_or_default())
        .fetch_all(&mut *pool.get().await?)
        .await
        .map_err(map_sqlx)?;
    rows.iter().map(candidate_from_row).collect()
}

pub(crate) async fn get_candidate(pool: &ReadPool, id: Uuid) -> StoreResult<Option<CandidateRow>> {
    let row = sqlx::query("SELECT * FROM duplicate_candidates WHERE id = ?")
        .bind(id.to_string())
        .fetch_optional(&mut *pool.get().await?)
        .await
        .map_err(map_sqlx)?;
    row.as_ref().map(candidate_from_row).transpose()
}

pub(crate) async fn get_merge(pool: &ReadPool, id: Uuid) -> StoreResult<Option<MergeRow>> {
    let row = sqlx::query("SELECT * FROM merges WHERE id = ?")
        .bind(id.to_string())
        .fetch_optional(&mut *pool.get().await?)
        .await
        .map_err(map_sqlx)?;
    let Some(row) = row else { return Ok(None) };
    let losers: Vec<Uuid> = serde_json::from_value(json_of(&row, "loser_ids")?).map_err(internal)?;
    Ok(Some(MergeRow {
        id: uuid_col(&row, "id")?,
        object: row.try_get("object").map_err(map_sqlx)?,
        survivor_id: uuid_col(&row, "survivor_id")?,
        loser_ids: losers,
        records: json_of(&row, "records")?,
        request: json_of(&row, "request")?,
        created_at: row.try_get("created_at").map_err(map_sqlx)?,
        created_by: opt_uuid_col(&row, "created_by")?,
        undone_at: row.try_get("undone_at").map_err(map_sqlx)?,
        undone_by: opt_uuid_col(&row, "undone_by")?,
    }))
}

pub(crate) async fn merged_into(pool: &ReadPool, object: &str, loser: Uuid) -> StoreResult<Option<Uuid>> {
    let survivor: Option<String> = sqlx::query_scalar(
        "SELECT survivor_id FROM merges WHERE object = ? AND undone_at IS NULL \
         AND EXISTS (SELECT 1 FROM json_each(merges.loser_ids) WHERE json_each.value = ?) \
         ORDER BY created_at DESC, id DESC LIMIT 1",
    )
    .bind(object)
    .bind(loser.to_string())
    .fetch_optional(&mut *pool.get().await?)
    .await
    .map_err(map_sqlx)?;
    parse_uuid(survivor)
}
