//! The audit parts of the PostgreSQL store that signed checkpoints need: the raw chain stream
//! the verifier reads, and checkpoint claims serialised across servers by a transaction-scoped
//! advisory lock (never the `audit_head` row lock, so claiming never delays a write).

use crate::map_sqlx;
use custodian_store::audit::{claim_is_stale, plan_checkpoint_claim};
use custodian_store::{
    AuditChainRow, CheckpointClaimOutcome, CheckpointClaimRequest, CheckpointClaimRow, CheckpointRange, StoreResult,
};
use futures::StreamExt;
use futures::stream::BoxStream;
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};

/// Advisory lock key of the checkpoint claims ("custodia" in ASCII).
const CLAIM_LOCK_KEY: i64 = 0x6375_7374_6f64_6961;

/// Columns by position in `chain_row`. (PostgreSQL text is always valid UTF-8, so the body
/// is read as text and its bytes taken as they are.)
const CHAIN_SQL: &str = "SELECT seq, at, actor_id::text AS actor_id, action, object, record_id::text AS record_id, \
     request_id, body, prev_hash, hash \
     FROM audit_events WHERE seq > $1 AND seq <= $2 ORDER BY seq";

fn chain_row(row: &PgRow) -> StoreResult<AuditChainRow> {
    let body: Option<String> = row.try_get(7).map_err(map_sqlx)?;
    Ok(AuditChainRow {
        seq: row.try_get(0).map_err(map_sqlx)?,
        at: row.try_get(1).map_err(map_sqlx)?,
        actor_id: row.try_get(2).map_err(map_sqlx)?,
        action: row.try_get(3).map_err(map_sqlx)?,
        object: row.try_get(4).map_err(map_sqlx)?,
        record_id: row.try_get(5).map_err(map_sqlx)?,
        request_id: row.try_get(6).map_err(map_sqlx)?,
        body: body.map(String::into_bytes),
        prev_hash: row.try_get(8).map_err(map_sqlx)?,
        hash: row.try_get(9).map_err(map_sqlx)?,
    })
}

pub(crate) fn audit_chain(
    pool: &PgPool,
    after_seq: i64,
    through_seq: Option<i64>,
) -> BoxStream<'_, StoreResult<AuditChainRow>> {
    sqlx::query(CHAIN_SQL)
        .bind(after_seq)
        .bind(through_seq.unwrap_or(i64::MAX))
        .fetch(pool)
        .map(|r| r.map_err(map_sqlx).and_then(|row| chain_row(&row)))
        .boxed()
}

fn claim_row(row: &PgRow) -> StoreResult<CheckpointClaimRow> {
    Ok(CheckpointClaimRow {
        seq_from: row.try_get("seq_from").map_err(map_sqlx)?,
        seq_to: row.try_get("seq_to").map_err(map_sqlx)?,
        claimant: row.try_get("claimant").map_err(map_sqlx)?,
        claimed_at: row.try_get("claimed_at").map_err(map_sqlx)?,
        written_at: row.try_get("written_at").map_err(map_sqlx)?,
    })
}

pub(crate) async fn claim_checkpoint(
    pool: &PgPool,
    request: &CheckpointClaimRequest,
) -> StoreResult<CheckpointClaimOutcome> {
    let mut tx = pool.begin().await.map_err(map_sqlx)?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(CLAIM_LOCK_KEY).execute(&mut *tx).await.map_err(map_sqlx)?;
    // The events themselves, not `audit_head`: a log whose tail was removed behind the store's
    // back must show as such (`HeadBehind`).
    let head_seq: i64 = sqlx::query_scalar("SELECT COALESCE(max(seq), 0) FROM audit_events")
        .fetch_one(&mut *tx)
        .await
        .map_err(map_sqlx)?;
    let pending =
        sqlx::query("SELECT * FROM audit_checkpoint_claims WHERE written_at IS NULL ORDER BY seq_from LIMIT 100")
            .fetch_all(&mut *tx)
            .await
            .map_err(map_sqlx)?;
    for row in &pending {
        let claim = claim_row(row)?;
        if claim_is_stale(&claim, request.now, request.lease_micros) && claim.seq_to <= head_seq {
            sqlx::query("UPDATE audit_checkpoint_claims SET claimant = $1, claimed_at = $2 WHERE seq_from = $3")
                .bind(&request.claimant)
                .bind(request.now)
                .bind(claim.seq_from)
                .execute(&mut *tx)
                .await
                .map_err(map_sqlx)?;
            tx.commit().await.map_err(map_sqlx)?;
            return Ok(CheckpointClaimOutcome::Claimed(CheckpointRange {
                seq_from: claim.seq_from,
                seq_to: claim.seq_to,
            }));
        }
    }
    let newest = sqlx::query("SELECT * FROM audit_checkpoint_claims ORDER BY seq_from DESC LIMIT 1")
        .fetch_optional(&mut *tx)
        .await
        .map_err(map_sqlx)?
        .map(|row| claim_row(&row))
        .transpose()?;
    let outcome = plan_checkpoint_claim(request, head_seq, newest.as_ref());
    if let CheckpointClaimOutcome::Claimed(range) = outcome {
        sqlx::query(
            "INSERT INTO audit_checkpoint_claims (seq_from, seq_to, claimant, claimed_at, written_at) \
             VALUES ($1, $2, $3, $4, NULL)",
        )
        .bind(range.seq_from)
        .bind(range.seq_to)
        .bind(&request.claimant)
        .bind(request.now)
        .execute(&mut *tx)
        .await
        .map_err(map_sqlx)?;
    }
    tx.commit().await.map_err(map_sqlx)?;
    Ok(outcome)
}

pub(crate) async fn complete_checkpoint(pool: &PgPool, range: CheckpointRange, now: i64) -> StoreResult<()> {
    sqlx::query(
        "UPDATE audit_checkpoint_claims SET written_at = $1 \
         WHERE seq_from = $2 AND seq_to = $3 AND written_at IS NULL",
    )
    .bind(now)
    .bind(range.seq_from)
    .bind(range.seq_to)
    .execute(pool)
    .await
    .map_err(map_sqlx)?;
    Ok(())
}

pub(crate) async fn list_claims(
    pool: &PgPool,
    after_seq_from: i64,
    limit: u32,
) -> StoreResult<Vec<CheckpointClaimRow>> {
    let rows = sqlx::query("SELECT * FROM audit_checkpoint_claims WHERE seq_from > $1 ORDER BY seq_from LIMIT $2")
        .bind(after_seq_from)
        .bind(i64::from(limit.clamp(1, 100_000)))
        .fetch_all(pool)
        .await
        .map_err(map_sqlx)?;
    rows.iter().map(claim_row).collect()
}
