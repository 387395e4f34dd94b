//! Field rules and background jobs in the SQLite store. Writes run in the writer task (one
//! `Op::Jobs`), reads on the read pool. The writer is the only writer, so a claim (a read of
//! the oldest claimable job and its conditional update) is atomic.
//!
//! Jobs of one kind and object run one at a time, in both stores: a job waits while another
//! of its kind and object is held under a live lease. (Two duplicate scans of one object would
//! otherwise replace each other's open pairs, and an auto-merge find its pairs gone.)

use crate::read_pool::ReadPool;
use crate::sql::{Bind, QueryParts, push_scope};
use crate::{ChainHead, OpOut, append_events, internal, map_sqlx, opt_uuid, opt_uuid_col, uuid_col};
use custodian_store::{
    AuditDraft, FieldRulesRow, JobProgress, JobRow, RowScope, StoreError, StoreResult, ViolationRow,
};
use sqlx::sqlite::SqliteRow;
use sqlx::{AssertSqlSafe, Row, SqliteConnection};
use uuid::Uuid;

pub(crate) enum JobsOp {
    PutRules(FieldRulesRow, JobRow, AuditDraft),
    Create(JobRow, AuditDraft),
    Claim { claimant: String, now: i64, lease_micros: i64 },
    Progress(JobProgress),
}

pub(crate) enum JobsOut {
    Unit,
    Claimed(Box<Option<JobRow>>),
    Saved(bool),
}

fn job_from_row(row: &SqliteRow) -> StoreResult<JobRow> {
    let params: String = row.try_get("params").map_err(map_sqlx)?;
    Ok(JobRow {
        id: uuid_col(row, "id")?,
        kind: row.try_get("kind").map_err(map_sqlx)?,
        object: row.try_get("object").map_err(map_sqlx)?,
        params: serde_json::from_str(&params).map_err(internal)?,
        status: row.try_get("status").map_err(map_sqlx)?,
        requested_by: opt_uuid_col(row, "requested_by")?,
        created_at: row.try_get("created_at").map_err(map_sqlx)?,
        claimed_by: row.try_get("claimed_by").map_err(map_sqlx)?,
        lease_until: row.try_get("lease_until").map_err(map_sqlx)?,
        cursor: opt_uuid_col(row, "cursor")?,
        scanned: row.try_get("scanned").map_err(map_sqlx)?,
        found: row.try_get("found").map_err(map_sqlx)?,
        finished_at: row.try_get("finished_at").map_err(map_sqlx)?,
        error: row.try_get("error").map_err(map_sqlx)?,
    })
}

pub(crate) async fn insert_job(conn: &mut SqliteConnection, job: &JobRow) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO jobs (id, kind, object, params, status, requested_by, created_at, claimed_by, lease_until, \
         cursor, scanned, found, finished_at, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(job.id.to_string())
    .bind(&job.kind)
    .bind(&job.object)
    .bind(job.params.to_string())
    .bind(&job.status)
    .bind(opt_uuid(job.requested_by))
    .bind(job.created_at)
    .bind(&job.claimed_by)
    .bind(job.lease_until)
    .bind(opt_uuid(job.cursor))
    .bind(job.scanned)
    .bind(job.found)
    .bind(job.finished_at)
    .bind(&job.error)
    .execute(&mut *conn)
    .await
    .map_err(map_sqlx)?;
    Ok(())
}

pub(crate) async fn apply(conn: &mut SqliteConnection, op: Box<JobsOp>, head: &mut ChainHead) -> StoreResult<OpOut> {
    let out = match *op {
        JobsOp::PutRules(row, job, audit) => {
            let current: Option<i64> =
                sqlx::query_scalar("SELECT revision FROM field_rules WHERE object = ? AND field = ?")
                    .bind(&row.object)
                    .bind(&row.field)
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(map_sqlx)?;
            let current = current.unwrap_or(0);
            if current != row.revision - 1 {
                return Err(StoreError::VersionConflict { current });
            }
            sqlx::query(
                "INSERT INTO field_rules (object, field, rules, revision, updated_at, updated_by) VALUES (?, ?, ?, ?, ?, ?) \
                 ON CONFLICT (object, field) DO UPDATE SET rules = excluded.rules, revision = excluded.revision, \
                 updated_at = excluded.updated_at, updated_by = excluded.updated_by",
            )
            .bind(&row.object)
            .bind(&row.field)
            .bind(row.rules.to_string())
            .bind(row.revision)
            .bind(row.updated_at)
            .bind(opt_uuid(row.updated_by))
            .execute(&mut *conn)
            .await
            .map_err(map_sqlx)?;
            insert_job(conn, &job).await?;
            append_events(conn, head, &[audit]).await?;
            JobsOut::Unit
        }
        JobsOp::Create(job, audit) => {
            insert_job(conn, &job).await?;
            append_events(conn, head, &[audit]).await?;
            JobsOut::Unit
        }
        JobsOp::Claim { claimant, now, lease_micros } => {
            let row = sqlx::query(
                "SELECT * FROM jobs j WHERE (status = 'pending' OR (status = 'running' AND lease_until < ?1)) \
                 AND NOT EXISTS (SELECT 1 FROM jobs r WHERE r.kind = j.kind AND r.object = j.object \
                   AND r.id <> j.id AND r.status = 'running' AND r.lease_until >= ?1) \
                 ORDER BY created_at, id LIMIT 1",
            )
            .bind(now)
            .fetch_optional(&mut *conn)
            .await
            .map_err(map_sqlx)?;
            match row {
                None => JobsOut::Claimed(Box::new(None)),
                Some(row) => {
                    let mut job = job_from_row(&row)?;
                    let until = now.saturating_add(lease_micros);
                    sqlx::query("UPDATE jobs SET status = 'running', claimed_by = ?, lease_until = ? WHERE id = ?")
                        .bind(&claimant)
                        .bind(until)
                        .bind(job.id.to_string())
                        .execute(&mut *conn)
                        .await
                        .map_err(map_sqlx)?;
                    job.status = "running".into();
                    job.claimed_by = Some(claimant);
                    job.lease_until = Some(until);
                    JobsOut::Claimed(Box::new(Some(job)))
                }
            }
        }
        JobsOp::Progress(p) => JobsOut::Saved(save_progress(conn, p).await?),
    };
    Ok(OpOut::Jobs(out))
}

async fn save_progress(conn: &mut SqliteConnection, p: JobProgress) -> StoreResult<bool> {
    let id = p.id.to_string();
    let held: Option<i64> =
        sqlx::query_scalar("SELECT 1 FROM jobs WHERE id = ? AND status = 'running' AND claimed_by = ?")
            .bind(&id)
            .bind(&p.claimant)
            .fetch_optional(&mut *conn)
            .await
            .map_err(map_sqlx)?;
    if held.is_none() {
        return Ok(false);
    }
    let mut found = 0i64;
    for v in &p.violations {
        let r =
            sqlx::query("INSERT OR IGNORE INTO rule_violations (job_id, record_id, field, code) VALUES (?, ?, ?, ?)")
                .bind(v.job_id.to_string())
                .bind(v.record_id.to_string())
                .bind(&v.field)
                .bind(&v.code)
                .execute(&mut *conn)
                .await
                .map_err(map_sqlx)?;
        found += r.rows_affected() as i64;
    }
    for k in &p.refresh {
        let rid = k.record_id.to_string();
        let current: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM records WHERE id = ? AND version = ? AND deleted_at IS NULL")
                .bind(&rid)
                .bind(k.version)
                .fetch_optional(&mut *conn)
                .await
                .map_err(map_sqlx)?;
        if current.is_none() {
            continue;
        }
        if let Some(keys) = &k.match_keys {
            sqlx::query("DELETE FROM match_keys WHERE record_id = ?")
                .bind(&rid)
                .execute(&mut *conn)
                .await
                .map_err(map_sqlx)?;
            // Stamped like any write of match keys, so that a duplicate check in flight sees
            // them as new (see `MatchGuard`).
            let stamp = crate::duplicates::next_stamp(conn, &k.object).await?;
            for key in keys {
                sqlx::query("INSERT OR IGNORE INTO match_keys (object, key, record_id, stamp) VALUES (?, ?, ?, ?)")
                    .bind(&k.object)
                    .bind(key)
                    .bind(&rid)
                    .bind(stamp)
                    .execute(&mut *conn)
                    .await
                    .map_err(map_sqlx)?;
            }
            found += 1;
        }
        if !k.envelopes.is_empty() {
            let patch: serde_json::Map<String, serde_json::Value> =
                k.envelopes.iter().map(|(f, e)| (f.clone(), serde_json::Value::String(e.clone()))).collect();
            sqlx::query("UPDATE records SET fields = json_patch(fields, ?) WHERE id = ? AND version = ?")
                .bind(serde_json::Value::Object(patch).to_string())
                .bind(&rid)
                .bind(k.version)
                .execute(&mut *conn)
                .await
                .map_err(map_sqlx)?;
            found += 1;
        }
        if let Some((field, digest)) = &k.unique_key {
            sqlx::query("DELETE FROM unique_keys WHERE record_id = ? AND field = ?")
                .bind(&rid)
                .bind(field)
                .execute(&mut *conn)
                .await
                .map_err(map_sqlx)?;
            if let Some(digest) = digest {
                sqlx::query("INSERT OR IGNORE INTO unique_keys (object, field, digest, record_id) VALUES (?, ?, ?, ?)")
                    .bind(&k.object)
                    .bind(field)
                    .bind(digest)
                    .bind(&rid)
                    .execute(&mut *conn)
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
        "UPDATE jobs SET cursor = COALESCE(?, cursor), scanned = scanned + ?, found = found + ?, lease_until = ?, \
         status = ?, error = COALESCE(?, error), finished_at = COALESCE(?, finished_at) WHERE id = ?",
    )
    .bind(opt_uuid(p.cursor))
    .bind(p.scanned)
    .bind(found)
    .bind(p.lease_until)
    .bind(status)
    .bind(error)
    .bind(finished_at)
    .bind(&id)
    .execute(&mut *conn)
    .await
    .map_err(map_sqlx)?;
    Ok(true)
}

// ---- reads -------------------------------------------------------------------------------

pub(crate) async fn list_field_rules(pool: &ReadPool) -> StoreResult<Vec<FieldRulesRow>> {
    let rows = sqlx::query("SELECT * FROM field_rules ORDER BY object, field")
        .fetch_all(&mut *pool.get().await?)
        .await
        .map_err(map_sqlx)?;
    rows.iter()
        .map(|row| {
            let rules: String = row.try_get("rules").map_err(map_sqlx)?;
            Ok(FieldRulesRow {
                object: row.try_get("object").map_err(map_sqlx)?,
                field: row.try_get("field").map_err(map_sqlx)?,
                rules: serde_json::from_str(&rules).map_err(internal)?,
                revision: row.try_get("revision").map_err(map_sqlx)?,
                updated_at: row.try_get("updated_at").map_err(map_sqlx)?,
                updated_by: opt_uuid_col(row, "updated_by")?,
            })
        })
        .collect()
}

pub(crate) async fn get_job(pool: &ReadPool, id: Uuid) -> StoreResult<Option<JobRow>> {
    let row = sqlx::query("SELECT * FROM jobs WHERE id = ?")
        .bind(id.to_string())
        .fetch_optional(&mut *pool.get().await?)
        .await
        .map_err(map_sqlx)?;
    row.as_ref().map(job_from_row).transpose()
}

pub(crate) async fn list_violations(
    pool: &ReadPool,
    job_id: Uuid,
    scope: &RowScope,
    after: Option<&ViolationRow>,
    limit: u32,
) -> StoreResult<Vec<ViolationRow>> {
    let mut parts = QueryParts::default();
    parts.push_where("v.job_id = ?", vec![Bind::Text(job_id.to_string())]);
    push_scope(&mut parts, scope);
    if let Some(a) = after {
        parts.push_where(
            "(v.record_id, v.field, v.code) > (?, ?, ?)",
            vec![Bind::Text(a.record_id.to_string()), Bind::Text(a.field.clone()), Bind::Text(a.code.clone())],
        );
    }
    let (where_sql, binds) = parts.finish_where();
    let text = format!(
        "SELECT v.record_id, v.field, v.code FROM rule_violations v JOIN records r ON r.id = v.record_id \
         WHERE {where_sql} ORDER BY v.record_id, v.field, v.code LIMIT ?"
    );
    let mut q = sqlx::query(AssertSqlSafe(text));
    for b in binds {
        q = match b {
            Bind::Text(s) => q.bind(s),
            Bind::Int(i) => q.bind(i),
            Bind::Real(f) => q.bind(f),
            Bind::Blob(v) => q.bind(v),
        };
    }
    let rows = q.bind(i64::from(limit)).fetch_all(&mut *pool.get().await?).await.map_err(map_sqlx)?;
    rows.iter()
        .map(|row| {
            Ok(ViolationRow {
                job_id,
                record_id: uuid_col(row, "record_id")?,
                field: row.try_get("field").map_err(map_sqlx)?,
                code: row.try_get("code").map_err(map_sqlx)?,
            })
        })
        .collect()
}
