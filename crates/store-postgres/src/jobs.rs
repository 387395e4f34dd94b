//! Field rules and background jobs in the PostgreSQL store. A claim is one `UPDATE … WHERE id =
//! (SELECT … FOR UPDATE SKIP LOCKED)` under an advisory lock that claims take in turn, so
//! servers claiming at once get different jobs and never two live jobs of one kind and object;
//! progress is applied only while the job row (locked) is still held by the claimant.

use crate::sql::{Bind, QueryParts, bind_all, push_scope};
use crate::{append_events, commit, map_sqlx};
use custodian_store::{
    AuditDraft, FieldRulesRow, JobProgress, JobRow, RowScope, StoreError, StoreResult, ViolationRow,
};
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{AssertSqlSafe, PgConnection, PgPool, Row};
use uuid::Uuid;

fn job_from_row(row: &PgRow) -> StoreResult<JobRow> {
    let params: Json<serde_json::Value> = row.try_get("params").map_err(map_sqlx)?;
    Ok(JobRow {
        id: row.try_get("id").map_err(map_sqlx)?,
        kind: row.try_get("kind").map_err(map_sqlx)?,
        object: row.try_get("object").map_err(map_sqlx)?,
        params: params.0,
        status: row.try_get("status").map_err(map_sqlx)?,
        requested_by: row.try_get("requested_by").map_err(map_sqlx)?,
        created_at: row.try_get("created_at").map_err(map_sqlx)?,
        claimed_by: row.try_get("claimed_by").map_err(map_sqlx)?,
        lease_until: row.try_get("lease_until").map_err(map_sqlx)?,
        cursor: row.try_get("cursor").map_err(map_sqlx)?,
        scanned: row.try_get("scanned").map_err(map_sqlx)?,
        found: row.try_get("found").map_err(map_sqlx)?,
        finished_at: row.try_get("finished_at").map_err(map_sqlx)?,
        error: row.try_get("error").map_err(map_sqlx)?,
    })
}

pub(crate) async fn insert_job(conn: &mut PgConnection, job: &JobRow) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO jobs (id, kind, object, params, status, requested_by, created_at, claimed_by, lease_until, \
         cursor, scanned, found, finished_at, error) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
    )
    .bind(job.id)
    .bind(&job.kind)
    .bind(&job.object)
    .bind(Json(&job.params))
    .bind(&job.status)
    .bind(job.requested_by)
    .bind(job.created_at)
    .bind(&job.claimed_by)
    .bind(job.lease_until)
    .bind(job.cursor)
    .bind(job.scanned)
    .bind(job.found)
    .bind(job.finished_at)
    .bind(&job.error)
    .execute(&mut *conn)
    .await
    .map_err(map_sqlx)?;
    Ok(())
}

pub(crate) async fn put_field_rules(
    pool: &PgPool,
    row: &FieldRulesRow,
    job: &JobRow,
    audit: AuditDraft,
) -> StoreResult<()> {
    let mut tx = pool.begin().await.map_err(map_sqlx)?;
    // Serialises changes of one field: the row is locked, or (first change) the insert below
    // conflicts with a concurrent first change and the revision check refuses it.
    let current: Option<i64> =
        sqlx::query_scalar("SELECT revision FROM field_rules WHERE object = $1 AND field = $2 FOR UPDATE")
            .bind(&row.object)
            .bind(&row.field)
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_sqlx)?;
    let current = current.unwrap_or(0);
    if current != row.revision - 1 {
        return Err(StoreError::VersionConflict { current });
    }
    let written = sqlx::query(
        "INSERT INTO field_rules (object, field, rules, revision, updated_at, updated_by) VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (object, field) DO UPDATE SET rules = EXCLUDED.rules, revision = EXCLUDED.revision, \
         updated_at = EXCLUDED.updated_at, updated_by = EXCLUDED.updated_by WHERE field_rules.revision = $4 - 1",
    )
    .bind(&row.object)
    .bind(&row.field)
    .bind(Json(&row.rules))
    .bind(row.revision)
    .bind(row.updated_at)
    .bind(row.updated_by)
    .execute(&mut *tx)
    .await
    .map_err(map_sqlx)?;
    if written.rows_affected() != 1 {
        return Err(StoreError::VersionConflict { current: row.revision });
    }
    insert_job(&mut tx, job).await?;
    append_events(&mut tx, &[audit]).await?;
    commit(tx).await
}

pub(crate) async fn create_job(pool: &PgPool, job: &JobRow, audit: AuditDraft) -> StoreResult<()> {
    let mut tx = pool.begin().await.map_err(map_sqlx)?;
    insert_job(&mut tx, job).await?;
    append_events(&mut tx, &[audit]).await?;
    commit(tx).await
}

/// Advisory lock key of job claims ("custjobs" in ASCII).
const CLAIM_LOCK_KEY: i64 = 0x6375_7374_6a6f_6273;

pub(crate) async fn claim_job(
    pool: &PgPool,
    claimant: &str,
    now: i64,
    lease_micros: i64,
) -> StoreResult<Option<JobRow>> {
    let mut tx = pool.begin().await.map_err(map_sqlx)?;
    // Claims take turns, so that two servers never both see no live job of a kind and object
    // and both start one; the update's snapshot is taken after the turn began.
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(CLAIM_LOCK_KEY).execute(&mut *tx).await.map_err(map_sqlx)?;
    let row = sqlx::query(
        "UPDATE jobs SET status = 'running', claimed_by = $1, lease_until = $2 WHERE id = (\
           SELECT id FROM jobs j WHERE (status = 'pending' OR (status = 'running' AND lease_until < $3)) \
           AND NOT EXISTS (SELECT 1 FROM jobs r WHERE r.kind = j.kind AND r.object = j.object \
             AND r.id <> j.id AND r.status = 'running' AND r.lease_until >= $3) \
           ORDER BY created_at, id LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING *",
    )
    .bind(claimant)
    .bind(now.saturating_add(lease_micros))
    .bind(now)
    .fetch_optional(&mut *tx)
    .await
    .map_err(map_sqlx)?;
    let job = row.as_ref().map(job_from_row).transpose()?;
    commit(tx).await?;
    Ok(job)
}

pub(crate) async fn save_job_progress(pool: &PgPool, p: &JobProgress) -> StoreResult<bool> {
    let mut tx = pool.begin().await.map_err(map_sqlx)?;
    let held: Option<i32> =
        sqlx::query_scalar("SELECT 1 FROM jobs WHERE id = $1 AND status = 'running' AND claimed_by = $2 FOR UPDATE")
            .bind(p.id)
            .bind(&p.claimant)
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_sqlx)?;
    if held.is_none() {
        return Ok(false);
    }
    let mut found = 0i64;
    for v in &p.violations {
        let r = sqlx::query(
            "INSERT INTO rule_violations (job_id, record_id, field, code) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(v.job_id)
        .bind(v.record_id)
        .bind(&v.field)
        .bind(&v.code)
        .execute(&mut *tx)
        .await
        .map_err(map_sqlx)?;
        found += r.rows_affected() as i64;
    }
    let mut refresh: Vec<&custodian_store::KeyRefresh> = p.refresh.iter().collect();
    refresh.sort_by_key(|k| k.record_id);
    for k in refresh {
        let current: Option<i32> = sqlx::query_scalar(
            "SELECT 1 FROM records WHERE id = $1 AND version = $2 AND deleted_at IS NULL FOR UPDATE",
        )
        .bind(k.record_id)
        .bind(k.version)
        .fetch_optional(&mut *tx)
        .await
        .map_err(map_sqlx)?;
        if current.is_none() {
            continue;
        }
        if let Some(keys) = &k.match_keys {
            sqlx::query("DELETE FROM match_keys WHERE record_id = $1")
                .bind(k.record_id)
                .execute(&mut *tx)
                .await
                .map_err(map_sqlx)?;
            // Stamped like any write of match keys (the counter's lock is held to commit), so
            // that a duplicate check in flight sees them as new (see `MatchGuard`).
            crate::duplicates::bump_match_key_stamps(&mut tx, std::slice::from_ref(&k.object)).await?;
            for key in keys {
                sqlx::query(
                    "INSERT INTO match_keys (object, key, record_id, stamp) \
                     VALUES ($1, $2, $3, (SELECT s.stamp FROM match_key_stamps s WHERE s.object = $1)) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(&k.object)
                .bind(key)
                .bind(k.record_id)
                .execute(&mut *tx)
                .await
                .map_err(map_sqlx)?;
            }
            found += 1;
        }
        if !k.envelopes.is_empty() {
            let patch: serde_json::Map<String, serde_json::Value> =
                k.envelopes.iter().map(|(f, e)| (f.clone(), serde_json::Value::String(e.clone()))).collect();
            sqlx::query("UPDATE records SET fields = fields || $1 WHERE id = $2 AND version = $3")
                .bind(serde_json::Value::Object(patch))
                .bind(k.record_id)
                .bind(k.version)
                .execute(&mut *tx)
                .await
                .map_err(map_sqlx)?;
            found += 1;
        }
        if let Some((field, digest)) = &k.unique_key {
            sqlx::query("DELETE FROM unique_keys WHERE record_id = $1 AND field = $2")
                .bind(k.record_id)
                .bind(field)
                .execute(&mut *tx)
                .await
                .map_err(map_sqlx)?;
            if let Some(digest) = digest {
                sqlx::query(
                    "INSERT INTO unique_keys (object, field, digest, record_id) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(&k.object)
                .bind(field)
                .bind(digest)
                .bind(k.record_id)
                .execute(&mut *tx)
                .await
                .map_err(map_sqlx)?;
            }
        }
    }
    let (status, error, finished_at) = match &p.finish {
        Some((status, error)) => (status.as_str(), error.clone(), Some(p.now)),
        None => ("running", None, None),
    };
    sqlx::query(
        "UPDATE jobs SET cursor = COALESCE($1, cursor), scanned = scanned + $2, found = found + $3, lease_until = $4, \
         status = $5, error = COALESCE($6, error), finished_at = COALESCE($7, finished_at) WHERE id = $8",
    )
    .bind(p.cursor)
    .bind(p.scanned)
    .bind(found)
    .bind(p.lease_until)
    .bind(status)
    .bind(error)
    .bind(finished_at)
    .bind(p.id)
    .execute(&mut *tx)
    .await
    .map_err(map_sqlx)?;
    commit(tx).await?;
    Ok(true)
}

// ---- reads -------------------------------------------------------------------------------

pub(crate) async fn list_field_rules(pool: &PgPool) -> StoreResult<Vec<FieldRulesRow>> {
    let rows =
        sqlx::query("SELECT * FROM field_rules ORDER BY object, field").fetch_all(pool).await.map_err(map_sqlx)?;
    rows.iter()
        .map(|row| {
            let rules: Json<serde_json::Value> = row.try_get("rules").map_err(map_sqlx)?;
            Ok(FieldRulesRow {
                object: row.try_get("object").map_err(map_sqlx)?,
                field: row.try_get("field").map_err(map_sqlx)?,
                rules: rules.0,
                revision: row.try_get("revision").map_err(map_sqlx)?,
                updated_at: row.try_get("updated_at").map_err(map_sqlx)?,
                updated_by: row.try_get("updated_by").map_err(map_sqlx)?,
            })
        })
        .collect()
}

pub(crate) async fn get_job(pool: &PgPool, id: Uuid) -> StoreResult<Option<JobRow>> {
    let row = sqlx::query("SELECT * FROM jobs WHERE id = $1").bind(id).fetch_optional(pool).await.map_err(map_sqlx)?;
    row.as_ref().map(job_from_row).transpose()
}

pub(crate) async fn list_violations(
    pool: &PgPool,
    job_id: Uuid,
    scope: &RowScope,
    after: Option<&ViolationRow>,
    limit: u32,
) -> StoreResult<Vec<ViolationRow>> {
    let mut parts = QueryParts::default();
    let p = parts.bind(Bind::Uuid(job_id));
    parts.push_where(format!("v.job_id = {p}"));
    push_scope(&mut parts, scope);
    if let Some(a) = after {
        let (r, f, c) = (
            parts.bind(Bind::Uuid(a.record_id)),
            parts.bind(Bind::Text(a.field.clone())),
            parts.bind(Bind::Text(a.code.clone())),
        );
        parts.push_where(format!("(v.record_id, v.field, v.code) > ({r}, {f}, {c})"));
    }
    let l = parts.bind(Bind::Int(i64::from(limit)));
    let text = format!(
        "SELECT v.record_id, v.field, v.code FROM rule_violations v JOIN records r ON r.id = v.record_id \
         WHERE {} ORDER BY v.record_id, v.field, v.code LIMIT {l}",
        parts.where_sql()
    );
    let rows =
        bind_all(sqlx::query(AssertSqlSafe(text)), parts.into_binds()).fetch_all(pool).await.map_err(map_sqlx)?;
    rows.iter()
        .map(|row| {
            Ok(ViolationRow {
                job_id,
                record_id: row.try_get("record_id").map_err(map_sqlx)?,
                field: row.try_get("field").map_err(map_sqlx)?,
                code: row.try_get("code").map_err(map_sqlx)?,
            })
        })
        .collect()
}
