//! The audit parts of the SQLite store that signed checkpoints need: the raw chain stream the
//! verifier reads, and the checkpoint claims (run inside the writer task's transaction, so they
//! are serialised with every append).

use crate::read_pool::ReadPool;
use crate::{ChainHead, map_sqlx};
use custodian_store::audit::{claim_is_stale, plan_checkpoint_claim};
use custodian_store::{
    AuditChainRow, CheckpointClaimOutcome, CheckpointClaimRequest, CheckpointClaimRow, CheckpointRange, StoreResult,
};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use sqlx::sqlite::SqliteRow;
use sqlx::{AssertSqlSafe, Row, SqliteConnection};

/// One row per event, in as few columns as possible: the SQLite driver copies every column
/// value under SQLite's allocator mutex, which is what a million-event verification spends its
/// time on. The six columns that repeat fields of the body travel as one JSON array (a BLOB,
/// which JSON cannot hold, is quoted first). Values of unexpected types (an attacker's doing)
/// still decode, and then fail verification instead of aborting the read.
const CHAIN_SQL: &str = "SELECT seq, \
     iif(typeof(body) IN ('text', 'blob'), body, CAST(body AS BLOB)) AS body, \
     iif(typeof(prev_hash) IN ('text', 'blob'), prev_hash, CAST(prev_hash AS BLOB)) AS prev_hash, \
     iif(typeof(hash) IN ('text', 'blob'), hash, CAST(hash AS BLOB)) AS hash, \
     json_array(iif(typeof(at) = 'blob', quote(at), at), iif(typeof(actor_id) = 'blob', quote(actor_id), actor_id), \
       iif(typeof(action) = 'blob', quote(action), action), iif(typeof(object) = 'blob', quote(object), object), \
       iif(typeof(record_id) = 'blob', quote(record_id), record_id), \
       iif(typeof(request_id) = 'blob', quote(request_id), request_id)) AS meta \
     FROM audit_events WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?";

/// The six repeated columns: `(at, actor_id, action, object, record_id, request_id)`.
type Meta = (Option<i64>, Option<String>, Option<String>, Option<String>, Option<String>, Option<String>);

/// Parses the `meta` JSON array. Values of the expected types take the fast path; anything else
/// (an integer in a text column, text in `at`) is kept in a form that cannot match the body.
fn parse_meta(bytes: &[u8]) -> Meta {
    if let Ok(meta) = serde_json::from_slice::<Meta>(bytes) {
        return meta;
    }
    let values: Vec<serde_json::Value> = serde_json::from_slice(bytes).unwrap_or_default();
    let text = |i: usize| match values.get(i) {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(other) => Some(other.to_string()),
    };
    (values.first().and_then(serde_json::Value::as_i64), text(1), text(2), text(3), text(4), text(5))
}

fn chain_row(row: &SqliteRow) -> StoreResult<AuditChainRow> {
    // Columns by position (as in CHAIN_SQL): a name lookup per column and row is measurable.
    let meta: Vec<u8> = row.try_get(4).map_err(map_sqlx)?;
    let (at, actor_id, action, object, record_id, request_id) = parse_meta(&meta);
    Ok(AuditChainRow {
        seq: row.try_get(0).map_err(map_sqlx)?,
        at,
        actor_id,
        action,
        object,
        record_id,
        request_id,
        body: row.try_get(1).map_err(map_sqlx)?,
        prev_hash: row.try_get(2).map_err(map_sqlx)?,
        hash: row.try_get(3).map_err(map_sqlx)?,
    })
}

/// Events read per statement by `audit_chain`: each page is read on a connection lent for it
/// (a stream of the whole log would hold one for as long as its reader takes).
const CHAIN_PAGE: i64 = 10_000;

pub(crate) fn audit_chain(
    pool: &ReadPool,
    after_seq: i64,
    through_seq: Option<i64>,
) -> BoxStream<'_, StoreResult<AuditChainRow>> {
    let through = through_seq.unwrap_or(i64::MAX);
    // State: the last sequence number read, or None once a short page ended the log.
    futures::stream::try_unfold(Some(after_seq), move |after| async move {
        let Some(after) = after else { return Ok(None) };
        let rows = sqlx::query(CHAIN_SQL)
            .bind(after)
            .bind(through)
            .bind(CHAIN_PAGE)
            .fetch_all(&mut *pool.get().await?)
            .await
            .map_err(map_sqlx)?;
        // The key column is an integer whatever else an attacker changed.
        let last = rows.last().and_then(|row| row.try_get::<i64, _>(0).ok());
        let next = match last {
            Some(seq) if rows.len() as i64 == CHAIN_PAGE => Some(seq),
            _ => None,
        };
        let page: Vec<StoreResult<AuditChainRow>> = rows.iter().map(chain_row).collect();
        Ok(Some((futures::stream::iter(page), next)))
    })
    .try_flatten()
    .boxed()
}

fn claim_row(row: &SqliteRow) -> StoreResult<CheckpointClaimRow> {
    Ok(CheckpointClaimRow {
        seq_from: row.try_get("seq_from").map_err(map_sqlx)?,
        seq_to: row.try_get("seq_to").map_err(map_sqlx)?,
        claimant: row.try_get("claimant").map_err(map_sqlx)?,
        claimed_at: row.try_get("claimed_at").map_err(map_sqlx)?,
        written_at: row.try_get("written_at").map_err(map_sqlx)?,
    })
}

/// Runs in the writer task: `head` is the chain head inside the current transaction.
pub(crate) async fn claim_checkpoint(
    conn: &mut SqliteConnection,
    head: &ChainHead,
    request: &CheckpointClaimRequest,
) -> StoreResult<CheckpointClaimOutcome> {
    let pending =
        sqlx::query("SELECT * FROM audit_checkpoint_claims WHERE written_at IS NULL ORDER BY seq_from LIMIT 100")
            .fetch_all(&mut *conn)
            .await
            .map_err(map_sqlx)?;
    for row in &pending {
        let claim = claim_row(row)?;
        if claim_is_stale(&claim, request.now, request.lease_micros) && claim.seq_to <= head.seq {
            sqlx::query("UPDATE audit_checkpoint_claims SET claimant = ?, claimed_at = ? WHERE seq_from = ?")
                .bind(&request.claimant)
                .bind(request.now)
                .bind(claim.seq_from)
                .execute(&mut *conn)
                .await
                .map_err(map_sqlx)?;
            return Ok(CheckpointClaimOutcome::Claimed(CheckpointRange {
                seq_from: claim.seq_from,
                seq_to: claim.seq_to,
            }));
        }
    }
    let newest = sqlx::query("SELECT * FROM audit_checkpoint_claims ORDER BY seq_from DESC LIMIT 1")
        .fetch_optional(&mut *conn)
        .await
        .map_err(map_sqlx)?
        .map(|row| claim_row(&row))
        .transpose()?;
    let outcome = plan_checkpoint_claim(request, head.seq, newest.as_ref());
    if let CheckpointClaimOutcome::Claimed(range) = outcome {
        sqlx::query(
            "INSERT INTO audit_checkpoint_claims (seq_from, seq_to, claimant, claimed_at, written_at) \
             VALUES (?, ?, ?, ?, NULL)",
        )
        .bind(range.seq_from)
        .bind(range.seq_to)
        .bind(&request.claimant)
        .bind(request.now)
        .execute(&mut *conn)
        .await
        .map_err(map_sqlx)?;
    }
    Ok(outcome)
}

pub(crate) async fn complete_checkpoint(
    conn: &mut SqliteConnection,
    range: CheckpointRange,
    now: i64,
) -> StoreResult<()> {
    sqlx::query(
        "UPDATE audit_checkpoint_claims SET written_at = ? WHERE seq_from = ? AND seq_to = ? AND written_at IS NULL",
    )
    .bind(now)
    .bind(range.seq_from)
    .bind(range.seq_to)
    .execute(&mut *conn)
    .await
    .map_err(map_sqlx)?;
    Ok(())
}

pub(crate) async fn list_claims(
    pool: &ReadPool,
    after_seq_from: i64,
    limit: u32,
) -> StoreResult<Vec<CheckpointClaimRow>> {
    let text = format!(
        "SELECT * FROM audit_checkpoint_claims WHERE seq_from > ? ORDER BY seq_from LIMIT {}",
        limit.clamp(1, 100_000)
    );
    let rows = sqlx::query(AssertSqlSafe(text))
        .bind(after_seq_from)
        .fetch_all(&mut *pool.get().await?)
        .await
        .map_err(map_sqlx)?;
    rows.iter().map(claim_row).collect()
}
