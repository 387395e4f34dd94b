//! Duplicate work in the PostgreSQL store: match keys and merge rows written inside the
//! record transaction (as part of a `WriteBatch`), scan jobs, candidates and dismissals.

use crate::{append_events, commit, map_sqlx};
use custodian_store::{
    AuditDraft, CandidateRow, DismissalRow, GuardScan, MATCH_BLOCK_CAP, MatchKeySet, MergeChange, MergeRow,
    RecordWrite, ScanJobRow, StampedKeys, StoreError, StoreResult, WriteBatch,
};
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool, Row};
use std::collections::BTreeMap;
use uuid::Uuid;

/// The advisory lock id of a strong key: its digest is a keyed hash, so its first eight bytes
/// spread evenly; two keys sharing an id only wait for each other.
fn exclusive_lock_id(digest: &[u8]) -> i64 {
    let mut head = [0u8; 8];
    for (to, from) in head.iter_mut().zip(digest) {
        *to = *from;
    }
    i64::from_be_bytes(head)
}

/// Takes the transaction-level advisory lock of every strong key `records` introduce, in one
/// global order (so two groups never wait for each other in a cycle). Held until the
/// transaction ends: a concurrent writer of the same key waits here, then its check sees this
/// transaction's committed rows.
pub(crate) async fn lock_exclusive_keys(conn: &mut PgConnection, records: &[&RecordWrite]) -> StoreResult<()> {
    let mut ids: Vec<i64> =
        records.iter().flat_map(|w| w.exclusive_keys.iter().map(|k| exclusive_lock_id(&k.digest))).collect();
    if ids.is_empty() {
        return Ok(());
    }
    ids.sort_unstable();
    ids.dedup();
    sqlx::query(
        "SELECT count(pg_advisory_xact_lock(k)) FROM (SELECT k FROM UNNEST($1::bigint[]) AS t(k) ORDER BY k) AS s",
    )
    .bind(ids)
    .execute(&mut *conn)
    .await
    .map_err(map_sqlx)?;
    Ok(())
}

/// Another active record holding one of the strong keys `records` introduce, not dismissed as
/// "not a duplicate" with the writer and not among `peers` (see `RecordWrite::exclusive_keys`,
/// `WriteBatch::exclusive_key_peers`). The caller holds the keys' locks (`lock_exclusive_keys`)
/// and has applied the whole batch.
pub(crate) async fn check_exclusive_keys(
    conn: &mut PgConnection,
    records: &[RecordWrite],
    peers: &std::collections::HashSet<Uuid>,
) -> StoreResult<()> {
    let peers: Vec<Uuid> = peers.iter().copied().collect();
    for w in records {
        for key in &w.exclusive_keys {
            let holder: Option<Uuid> = sqlx::query_scalar(
                "SELECT b.record_id FROM blind_indexes b \
                 JOIN records r ON r.id = b.record_id AND r.deleted_at IS NULL \
                 WHERE b.object = $1 AND b.field = $2 AND b.digest = $3 AND b.record_id <> $4 \
                 AND NOT (b.record_id = ANY($5)) \
                 AND NOT EXISTS (SELECT 1 FROM duplicate_dismissals d WHERE d.object = $1 \
                 AND ((d.record_a = $4 AND d.record_b = b.record_id) OR (d.record_a = b.record_id AND d.record_b = $4))) \
                 LIMIT 1",
            )
            .bind(&w.record.object)
            .bind(&key.field)
            .bind(&key.digest)
            .bind(w.record.id)
            .bind(&peers)
            .fetch_optional(&mut *conn)
            .await
            .map_err(map_sqlx)?;
            if let Some(holder) = holder {
                return Err(StoreError::UniqueViolation {
                    object: w.record.object.clone(),
                    field: key.field.clone(),
                    holder: Some(holder),
                });
            }
        }
    }
    Ok(())
}

/// Moves the match-key stamp of every object in `objects` on (taking each counter row's lock,
/// in one order, held to commit: writes of one object's keys commit in stamp order across
/// servers). Called once per group transaction, before any savepoint.
pub(crate) async fn bump_match_key_stamps(conn: &mut PgConnection, objects: &[String]) -> StoreResult<()> {
    if objects.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO match_key_stamps (object, stamp) SELECT o, 1 FROM UNNEST($1::text[]) AS t(o) ORDER BY o \
         ON CONFLICT (object) DO UPDATE SET stamp = match_key_stamps.stamp + 1",
    )
    .bind(objects)
    .execute(&mut *conn)
    .await
    .map_err(map_sqlx)?;
    Ok(())
}

pub(crate) async fn write_match_keys(conn: &mut PgConnection, sets: &[MatchKeySet]) -> StoreResult<()> {
    for set in sets {
        sqlx::query("DELETE FROM match_keys WHERE record_id = $1")
            .bind(set.record_id)
            .execute(&mut *conn)
            .await
            .map_err(map_sqlx)?;
        if set.keys.is_empty() {
            continue;
        }
        sqlx::query(
            "INSERT INTO match_keys (object, key, record_id, stamp) \
             SELECT $1, k, $2, (SELECT s.stamp FROM match_key_stamps s WHERE s.object = $1) \
             FROM UNNEST($3::bytea[]) AS t(k) ON CONFLICT DO NOTHING",
        )
        .bind(&set.object)
        .bind(set.record_id)
        .bind(&set.keys)
        .execute(&mut *conn)
        .await
        .map_err(map_sqlx)?;
    }
    Ok(())
}

pub(crate) async fn match_key_stamp(pool: &PgPool, object: &str) -> StoreResult<i64> {
    sqlx::query_scalar("SELECT coalesce((SELECT stamp FROM match_key_stamps WHERE object = $1), 0)")
        .bind(object)
        .fetch_one(pool)
        .await
        .map_err(map_sqlx)
}

/// The match keys stamped above each object's stamp in `scans` (`WriteBatch::guard_scans`), as
/// `(holder, key, stamp)`: what a group's duplicate-check guards are judged against. Read in
/// the group transaction, which holds the stamp counters' locks (so every key stamped before
/// this transaction's stamp is committed and visible), before the group's own keys are written.
async fn committed_keys(conn: &mut PgConnection, scans: &BTreeMap<String, GuardScan>) -> StoreResult<StampedKeys> {
    let mut out = BTreeMap::new();
    for (object, scan) in scans {
        let rows = sqlx::query(
            "SELECT record_id, key, stamp FROM match_keys WHERE object = $1 AND stamp > $2 AND key = ANY($3)",
        )
        .persistent(false)
        .bind(object)
        .bind(scan.since)
        .bind(&scan.keys)
        .fetch_all(&mut *conn)
        .await
        .map_err(map_sqlx)?;
        let mut stamped: Vec<(Uuid, Vec<u8>, i64)> = Vec::with_capacity(rows.len());
        for row in &rows {
            stamped.push((
                row.try_get("record_id").map_err(map_sqlx)?,
                row.try_get("key").map_err(map_sqlx)?,
                row.try_get("stamp").map_err(map_sqlx)?,
            ));
        }
        out.insert(object.clone(), stamped);
    }
    Ok(out)
}

/// Positions of the batches of a group whose duplicate checks went stale (see `MatchGuard`),
/// judged before any of their keys are written.
pub(crate) async fn stale_batches(conn: &mut PgConnection, batches: &[Option<&WriteBatch>]) -> StoreResult<Vec<usize>> {
    let scans = WriteBatch::guard_scans(batches);
    if scans.is_empty() {
        return Ok(Vec::new());
    }
    let committed = committed_keys(conn, &scans).await?;
    Ok(WriteBatch::stale_in_group(batches, &committed))
}

pub(crate) async fn apply_merge(conn: &mut PgConnection, change: &MergeChange) -> StoreResult<()> {
    match change {
        MergeChange::Record(m) => {
            sqlx::query(
                "INSERT INTO merges (id, object, survivor_id, loser_ids, records, request, created_at, created_by) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(m.id)
            .bind(&m.object)
            .bind(m.survivor_id)
            .bind(Json(&m.loser_ids))
            .bind(Json(&m.records))
            .bind(Json(&m.request))
            .bind(m.created_at)
            .bind(m.created_by)
            .execute(&mut *conn)
            .await
            .map_err(map_sqlx)?;
            let mut members = vec![m.survivor_id];
            members.extend(&m.loser_ids);
            sqlx::query(
                "UPDATE duplicate_candidates SET status = 'merged', decided_at = $1, decided_by = $2, merge_id = $4 \
                 WHERE status = 'open' AND record_a = ANY($3) AND record_b = ANY($3)",
            )
            .bind(m.created_at)
            .bind(m.created_by)
            .bind(&members)
            .bind(m.id)
            .execute(&mut *conn)
            .await
            .map_err(map_sqlx)?;
            Ok(())
        }
        MergeChange::Undo { id, undone_at, undone_by } => {
            let r = sqlx::query("UPDATE merges SET undone_at = $1, undone_by = $2 WHERE id = $3 AND undone_at IS NULL")
                .bind(undone_at)
                .bind(undone_by)
                .bind(id)
                .execute(&mut *conn)
                .await
                .map_err(map_sqlx)?;
            if r.rows_affected() == 1 {
                sqlx::query(
                    "UPDATE duplicate_candidates SET status = 'open', decided_at = NULL, decided_by = NULL, \
                     merge_id = NULL WHERE merge_id = $1 AND status = 'merged'",
                )
                .bind(id)
                .execute(&mut *conn)
                .await
                .map_err(map_sqlx)?;
                return Ok(());
            }
            let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM merges WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *conn)
                .await
                .map_err(map_sqlx)?;
            Err(match exists {
                Some(_) => StoreError::AlreadyExists(format!("undo of merge {id}")),
                None => StoreError::NotFound,
            })
        }
    }
}

pub(crate) async fn create_scan_job(
    pool: &PgPool,
    job: &ScanJobRow,
    queued: &custodian_store::JobRow,
    audit: AuditDraft,
) -> StoreResult<()> {
    let mut tx = pool.begin().await.map_err(map_sqlx)?;
    crate::jobs::insert_job(&mut tx, queued).await?;
    sqlx::query(
        "INSERT INTO duplicate_scan_jobs (id, object, status, requested_by, created_at, finished_at, records, pairs, error, \
         auto_merge) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(job.id)
    .bind(&job.object)
    .bind(&job.status)
    .bind(job.requested_by)
    .bind(job.created_at)
    .bind(job.finished_at)
    .bind(job.records)
    .bind(job.pairs)
    .bind(&job.error)
    .bind(job.auto_merge.as_ref().map(Json))
    .execute(&mut *tx)
    .await
    .map_err(map_sqlx)?;
    append_events(&mut tx, &[audit]).await?;
    commit(tx).await
}

pub(crate) async fn finish_scan_job(pool: &PgPool, job: &ScanJobRow, candidates: &[CandidateRow]) -> StoreResult<()> {
    let mut tx = pool.begin().await.map_err(map_sqlx)?;
    let r = sqlx::query(
        "UPDATE duplicate_scan_jobs SET status = $1, finished_at = $2, records = $3, pairs = $4, error = $5, \
         auto_merge = $7 WHERE id = $6",
    )
    .bind(&job.status)
    .bind(job.finished_at)
    .bind(job.records)
    .bind(job.pairs)
    .bind(&job.error)
    .bind(job.id)
    .bind(job.auto_merge.as_ref().map(Json))
    .execute(&mut *tx)
    .await
    .map_err(map_sqlx)?;
    if r.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    if job.status == "done" {
        sqlx::query("DELETE FROM duplicate_candidates WHERE object = $1 AND status = 'open'")
            .bind(&job.object)
            .execute(&mut *tx)
            .await
            .map_err(map_sqlx)?;
        for c in candidates {
            sqlx::query(
                "INSERT INTO duplicate_candidates (id, object, job_id, cluster_id, record_a, record_b, score, reasons, \
                 status, created_at, decided_at, decided_by, merge_id) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
            )
            .bind(c.id)
            .bind(&c.object)
            .bind(c.job_id)
            .bind(c.cluster_id)
            .bind(c.record_a)
            .bind(c.record_b)
            .bind(c.score)
            .bind(Json(&c.reasons))
            .bind(&c.status)
            .bind(c.created_at)
            .bind(c.decided_at)
            .bind(c.decided_by)
            .bind(c.merge_id)
            .execute(&mut *tx)
            .await
            .map_err(map_sqlx)?;
        }
    }
    commit(tx).await
}

pub(crate) async fn set_scan_auto_merge(pool: &PgPool, id: Uuid, auto_merge: &Value) -> StoreResult<()> {
    let r = sqlx::query("UPDATE duplicate_scan_jobs SET auto_merge = $1 WHERE id = $2")
        .bind(Json(auto_merge))
        .bind(id)
        .execute(pool)
        .await
        .map_err(map_sqlx)?;
    if r.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

pub(crate) async fn dismiss_candidate(pool: &PgPool, id: Uuid, d: &DismissalRow, audit: AuditDraft) -> StoreResult<()> {
    let mut tx = pool.begin().await.map_err(map_sqlx)?;
    let r = sqlx::query(
        "UPDATE duplicate_candidates SET status = 'dismissed', decided_at = $1, decided_by = $2 \
         WHERE id = $3 AND status = 'open'",
    )
    .bind(d.decided_at)
    .bind(d.decided_by)
    .bind(id)
    .execute(&mut *tx)
    .await
    .map_err(map_sqlx)?;
    if r.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    let (a, b) = if d.record_a <= d.record_b { (d.record_a, d.record_b) } else { (d.record_b, d.record_a) };
    sqlx::query(
        "INSERT INTO duplicate_dismissals (object, record_a, record_b, reason, decided_by, decided_at) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
    )
    .bind(&d.object)
    .bind(a)
    .bind(b)
    .bind(&d.reason)
    .bind(d.decided_by)
    .bind(d.decided_at)
    .execute(&mut *tx)
    .await
    .map_err(map_sqlx)?;
    append_events(&mut tx, &[audit]).await?;
    commit(tx).await
}

// ---- reads -------------------------------------------------------------------------------

pub(crate) async fn match_blocks(pool: &PgPool, object: &str, keys: &[Vec<u8>]) -> StoreResult<Vec<(usize, Uuid)>> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    Ok(stamped_match_blocks(pool, object, keys).await?.1)
}

/// `Store::stamped_match_blocks`: the stamp as an uncorrelated subquery of the statement that
/// reads the blocks (one snapshot). Each key's block is read through the primary key and cut
/// at the cap (keys of deleted records are not kept), and comes back as one row holding an
/// array: a check reads dozens of blocks of up to the cap each, and rows cost more to send and
/// decode than array items.
pub(crate) async fn stamped_match_blocks(
    pool: &PgPool,
    object: &str,
    keys: &[Vec<u8>],
) -> StoreResult<(i64, Vec<(usize, Uuid)>)> {
    if keys.is_empty() {
        return Ok((match_key_stamp(pool, object).await?, Vec::new()));
    }
    let rows: Vec<(i64, i64, Vec<Uuid>)> = sqlx::query_as(
        "SELECT coalesce((SELECT stamp FROM match_key_stamps WHERE object = $1), 0), k.i, \
                ARRAY(SELECT m.record_id FROM match_keys m WHERE m.object = $1 AND m.key = k.key \
                      ORDER BY m.record_id LIMIT $3) \
         FROM unnest($2::bytea[]) WITH ORDINALITY AS k(key, i) \
         ORDER BY k.i",
    )
    .bind(object)
    .bind(keys)
    .bind(i64::from(MATCH_BLOCK_CAP))
    .fetch_all(pool)
    .await
    .map_err(map_sqlx)?;
    let stamp = rows.first().map(|r| r.0).ok_or_else(|| crate::internal("no row for the match-key stamp"))?;
    let rows = rows.into_iter().flat_map(|(_, i, ids)| ids.into_iter().map(move |id| (i, id))).collect();
    Ok((stamp, from_ordinality(rows)?))
}

/// `(1-based WITH ORDINALITY position, id)` rows as `(index into the input array, id)`.
fn from_ordinality(rows: Vec<(i64, Uuid)>) -> StoreResult<Vec<(usize, Uuid)>> {
    rows.into_iter().map(|(i, id)| Ok((usize::try_from(i - 1).map_err(crate::internal)?, id))).collect()
}

pub(crate) async fn find_by_blind_indexes(
    pool: &PgPool,
    object: &str,
    keys: &[(String, Vec<u8>)],
    limit: u32,
) -> StoreResult<Vec<(usize, Uuid)>> {
    if keys.is_empty() || limit == 0 {
        return Ok(Vec::new());
    }
    let (fields, digests): (Vec<&str>, Vec<&[u8]>) = keys.iter().map(|(f, d)| (f.as_str(), d.as_slice())).unzip();
    let rows: Vec<(i64, Uuid)> = sqlx::query_as(
        "SELECT k.i, c.record_id FROM unnest($2::text[], $3::bytea[]) WITH ORDINALITY AS k(field, digest, i) \
         CROSS JOIN LATERAL (SELECT b.record_id FROM blind_indexes b JOIN records r ON r.id = b.record_id \
                             WHERE b.object = $1 AND b.field = k.field AND b.digest = k.digest \
                               AND r.deleted_at IS NULL \
                             ORDER BY b.record_id LIMIT $4) c ORDER BY k.i, c.record_id",
    )
    .bind(object)
    .bind(fields)
    .bind(digests)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await
    .map_err(map_sqlx)?;
    from_ordinality(rows)
}

/// `Store::find_by_field_values`: per field, one statement over the values as an array, each
/// looked up through the field's expression index (`fxid_<object>_<field>` on the value and
/// the id, partial on the object; both the path and the object are written as literals, as the
/// index has them, or the planner cannot use it).
pub(crate) async fn find_by_field_values(
    pool: &PgPool,
    object: &str,
    keys: &[(String, String)],
    limit: u32,
) -> StoreResult<Vec<(usize, Uuid)>> {
    let mut out = Vec::new();
    if keys.is_empty() || limit == 0 {
        return Ok(out);
    }
    if !custodian_store::is_identifier(object) {
        return Err(crate::internal(format!("invalid object name {object:?}")));
    }
    let mut by_field: BTreeMap<&str, (Vec<i64>, Vec<&str>)> = BTreeMap::new();
    for (i, (field, value)) in keys.iter().enumerate() {
        let entry = by_field.entry(field.as_str()).or_default();
        entry.0.push(i64::try_from(i).map_err(crate::internal)?);
        entry.1.push(value.as_str());
    }
    for (field, (positions, values)) in by_field {
        if !custodian_store::is_identifier(field) {
            return Err(crate::internal(format!("invalid field name {field:?}")));
        }
        let text = format!(
            "SELECT k.i, c.id FROM unnest($1::bigint[], $2::text[]) AS k(i, v) \
             CROSS JOIN LATERAL (SELECT r.id FROM records r \
                                 WHERE r.object = '{object}' AND (r.fields #>> '{{{field}}}'::text[]) = k.v \
                                   AND r.deleted_at IS NULL ORDER BY r.id LIMIT $3) c"
        );
        let rows: Vec<(i64, Uuid)> = sqlx::query_as(sqlx::AssertSqlSafe(text))
            .bind(positions)
            .bind(values)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await
            .map_err(map_sqlx)?;
        for (i, id) in rows {
            out.push((usize::try_from(i).map_err(crate::internal)?, id));
        }
    }
    out.sort();
    Ok(out)
}

pub(crate) async fn dismissed_with(
    pool: &PgPool,
    object: &str,
    record: Uuid,
    others: &[Uuid],
) -> StoreResult<Vec<Uuid>> {
    if others.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = sqlx::query_scalar(
        "SELECT CASE WHEN record_a = $2 THEN record_b ELSE record_a END FROM duplicate_dismissals \
         WHERE object = $1 AND ((record_a = $2 AND record_b = ANY($3)) OR (record_b = $2 AND record_a = ANY($3)))",
    )
    .bind(object)
    .bind(record)
    .bind(others)
    .fetch_all(pool)
    .await
    .map_err(map_sqlx)?;
    Ok(ids)
}

pub(crate) async fn list_dismissals(pool: &PgPool, object: &str) -> StoreResult<Vec<DismissalRow>> {
    let rows = sqlx::query("SELECT * FROM duplicate_dismissals WHERE object = $1 ORDER BY record_a, record_b")
        .bind(object)
        .fetch_all(pool)
        .await
        .map_err(map_sqlx)?;
    rows.iter()
        .map(|row| {
            Ok(DismissalRow {
                object: row.try_get("object").map_err(map_sqlx)?,
                record_a: row.try_get("record_a").map_err(map_sqlx)?,
                record_b: row.try_get("record_b").map_err(map_sqlx)?,
                reason: row.try_get("reason").map_err(map_sqlx)?,
                decided_by: row.try_get("decided_by").map_err(map_sqlx)?,
                decided_at: row.try_get("decided_at").map_err(map_sqlx)?,
            })
        })
        .collect()
}

pub(crate) async fn get_scan_job(pool: &PgPool, id: Uuid) -> StoreResult<Option<ScanJobRow>> {
    let row = sqlx::query("SELECT * FROM duplicate_scan_jobs WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
        .map_err(map_sqlx)?;
    let Some(row) = row else { return Ok(None) };
    Ok(Some(ScanJobRow {
        id: row.try_get("id").map_err(map_sqlx)?,
        object: row.try_get("object").map_err(map_sqlx)?,
        status: row.try_get("status").map_err(map_sqlx)?,
        requested_by: row.try_get("requested_by").map_err(map_sqlx)?,
        created_at: row.try_get("created_at").map_err(map_sqlx)?,
        finished_at: row.try_get("finished_at").map_err(map_sqlx)?,
        records: row.try_get("records").map_err(map_sqlx)?,
        pairs: row.try_get("pairs").map_err(map_sqlx)?,
        error: row.try_get("error").map_err(map_sqlx)?,
        auto_merge: row.try_get::<Option<Json<Value>>, _>("auto_merge").map_err(map_sqlx)?.map(|Json(v)| v),
    }))
}

fn candidate_from_row(row: &PgRow) -> StoreResult<CandidateRow> {
    let Json(reasons): Json<Value> = row.try_get("reasons").map_err(map_sqlx)?;
    Ok(CandidateRow {
        id: row.try_get("id").map_err(map_sqlx)?,
        object: row.try_get("object").map_err(map_sqlx)?,
        job_id: row.try_get("job_id").map_err(map_sqlx)?,
        cluster_id: row.try_get("cluster_id").map_err(map_sqlx)?,
        record_a: row.try_get("record_a").map_err(map_sqlx)?,
        record_b: row.try_get("record_b").map_err(map_sqlx)?,
        score: row.try_get("score").map_err(map_sqlx)?,
        reasons,
        status: row.try_get("status").map_err(map_sqlx)?,
        created_at: row.try_get("created_at").map_err(map_sqlx)?,
        decided_at: row.try_get("decided_at").map_err(map_sqlx)?,
        decided_by: row.try_get("decided_by").map_err(map_sqlx)?,
        merge_id: row.try_get("merge_id").map_err(map_sqlx)?,
    })
}

pub(crate) async fn list_candidates(
    pool: &PgPool,
    object: &str,
    status: &str,
    after: Option<Uuid>,
    limit: u32,
) -> StoreResult<Vec<CandidateRow>> {
    let rows = sqlx::query(
        "SELECT c.* FROM duplicate_candidates c \
         JOIN records a ON a.id = c.record_a JOIN records b ON b.id = c.record_b \
         WHERE c.object = $1 AND c.status = $2 AND ($3::uuid IS NULL OR c.id > $3) \
         AND (c.status = 'merged' OR (a.deleted_at IS NULL AND b.deleted_at IS NULL)) ORDER BY c.id LIMIT $4",
    )
    .bind(object)
    .bind(status)
    .bind(after)
    .bind(i64::from(limit.clamp(1, 1000)))
    .fetch_all(pool)
    .await
    .map_err(map_sqlx)?;
    rows.iter().map(candidate_from_row).collect()
}

pub(crate) async fn get_candidate(pool: &PgPool, id: Uuid) -> StoreResult<Option<CandidateRow>> {
    let row = sqlx::query("SELECT * FROM duplicate_candidates WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
        .map_err(map_sqlx)?;
    row.as_ref().map(candidate_from_row).transpose()
}

pub(crate) async fn get_merge(pool: &PgPool, id: Uuid) -> StoreResult<Option<MergeRow>> {
    let row =
        sqlx::query("SELECT * FROM merges WHERE id = $1").bind(id).fetch_optional(pool).await.map_err(map_sqlx)?;
    let Some(row) = row else { return Ok(None) };
    let Json(loser_ids): Json<Vec<Uuid>> = row.try_get("loser_ids").map_err(map_sqlx)?;
    let Json(records): Json<Value> = row.try_get("records").map_err(map_sqlx)?;
    let Json(request): Json<Value> = row.try_get("request").map_err(map_sqlx)?;
    Ok(Some(MergeRow {
        id: row.try_get("id").map_err(map_sqlx)?,
        object: row.try_get("object").map_err(map_sqlx)?,
        survivor_id: row.try_get("survivor_id").map_err(map_sqlx)?,
        loser_ids,
        records,
        request,
        created_at: row.try_get("created_at").map_err(map_sqlx)?,
        created_by: row.try_get("created_by").map_err(map_sqlx)?,
        undone_at: row.try_get("undone_at").map_err(map_sqlx)?,
        undone_by: row.try_get("undone_by").map_err(map_sqlx)?,
    }))
}

pub(crate) async fn merged_into(pool: &PgPool, object: &str, loser: Uuid) -> StoreResult<Option<Uuid>> {
    let survivor: Option<Uuid> = sqlx::query_scalar(
        "SELECT survivor_id FROM merges WHERE object = $1 AND undone_at IS NULL \
         AND loser_ids @> jsonb_build_array($2::text) ORDER BY created_at DESC, id DESC LIMIT 1",
    )
    .bind(object)
    .bind(loser.to_string())
    .fetch_optional(pool)
    .await
    .map_err(map_sqlx)?;
    Ok(survivor)
}
