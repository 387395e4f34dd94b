//! Audit queries, activity buckets, alerts, notifications and the outbox on PostgreSQL. Alerts
//! are unique per metric, user and window (several servers evaluating at once raise one);
//! outbox messages are leased with `FOR UPDATE SKIP LOCKED`, so several servers deliver each
//! message once.

use crate::sql::{Bind, QueryParts, bind_all};
use crate::{append_events, audit_from_row, commit, internal, map_sqlx};
use custodian_store::monitor::prefix_upper_bound;
use custodian_store::{
    ActionFilter, AlertRow, AlertRuleRow, AuditDraft, AuditQuery, AuditRow, Bucket, BucketQuery, DeliveryOutcome,
    Measure, NotificationRow, OutboxRow, StoreError, StoreResult,
};
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{AssertSqlSafe, PgConnection, PgPool, Row};
use uuid::Uuid;

fn json_col(row: &PgRow, column: &str) -> StoreResult<Value> {
    let Json(v): Json<Value> = row.try_get(column).map_err(map_sqlx)?;
    Ok(v)
}

fn alert_from_row(row: &PgRow) -> StoreResult<AlertRow> {
    Ok(AlertRow {
        id: row.try_get("id").map_err(map_sqlx)?,
        metric: row.try_get("metric").map_err(map_sqlx)?,
        user_id: row.try_get("user_id").map_err(map_sqlx)?,
        window_start: row.try_get("window_start").map_err(map_sqlx)?,
        raised_at: row.try_get("raised_at").map_err(map_sqlx)?,
        value: row.try_get("value").map_err(map_sqlx)?,
        details: json_col(row, "details")?,
        acked_at: row.try_get("acked_at").map_err(map_sqlx)?,
        acked_by: row.try_get("acked_by").map_err(map_sqlx)?,
    })
}

fn notification_from_row(row: &PgRow) -> StoreResult<NotificationRow> {
    Ok(NotificationRow {
        id: row.try_get("id").map_err(map_sqlx)?,
        user_id: row.try_get("user_id").map_err(map_sqlx)?,
        object: row.try_get("object").map_err(map_sqlx)?,
        record_id: row.try_get("record_id").map_err(map_sqlx)?,
        version: row.try_get("version").map_err(map_sqlx)?,
        actor_id: row.try_get("actor_id").map_err(map_sqlx)?,
        changes: json_col(row, "changes")?,
        created_at: row.try_get("created_at").map_err(map_sqlx)?,
        acked_at: row.try_get("acked_at").map_err(map_sqlx)?,
    })
}

fn outbox_from_row(row: &PgRow) -> StoreResult<OutboxRow> {
    Ok(OutboxRow {
        id: row.try_get("id").map_err(map_sqlx)?,
        channel: row.try_get("channel").map_err(map_sqlx)?,
        kind: row.try_get("kind").map_err(map_sqlx)?,
        payload: json_col(row, "payload")?,
        created_at: row.try_get("created_at").map_err(map_sqlx)?,
        next_attempt_at: row.try_get("next_attempt_at").map_err(map_sqlx)?,
        attempts: row.try_get("attempts").map_err(map_sqlx)?,
        last_error: row.try_get("last_error").map_err(map_sqlx)?,
        delivered_at: row.try_get("delivered_at").map_err(map_sqlx)?,
    })
}

/// WHERE conditions of an audit query. Actions compare byte-wise (`COLLATE "C"`, as the index
/// is built), so a prefix is a range scan whatever the database's locale.
fn audit_where(query: &AuditQuery) -> QueryParts {
    let mut parts = QueryParts::default();
    if let Some(a) = query.actor_id {
        let p = parts.bind(Bind::Uuid(a));
        parts.push_where(format!("actor_id = {p}"));
    }
    if let Some(o) = &query.object {
        let p = parts.bind(Bind::Text(o.clone()));
        parts.push_where(format!("object = {p}"));
    }
    if let Some(r) = query.record_id {
        let p = parts.bind(Bind::Uuid(r));
        parts.push_where(format!("record_id = {p}"));
    }
    match &query.action {
        None => {}
        Some(ActionFilter::Exact(a)) => {
            let p = parts.bind(Bind::Text(a.clone()));
            parts.push_where(format!("(action COLLATE \"C\") = {p}"));
        }
        Some(ActionFilter::Prefix(prefix)) => {
            let p = parts.bind(Bind::Text(prefix.clone()));
            parts.push_where(format!("(action COLLATE \"C\") >= {p}"));
            if let Some(upper) = prefix_upper_bound(prefix) {
                let p = parts.bind(Bind::Text(upper));
                parts.push_where(format!("(action COLLATE \"C\") < {p}"));
            }
        }
    }
    if let Some(from) = query.from {
        let p = parts.bind(Bind::Int(from));
        parts.push_where(format!("at >= {p}"));
    }
    if let Some(to) = query.to {
        let p = parts.bind(Bind::Int(to));
        parts.push_where(format!("at <= {p}"));
    }
    if let Some(before) = query.before_seq {
        let p = parts.bind(Bind::Int(before));
        parts.push_where(format!("seq < {p}"));
    }
    parts
}

pub(crate) async fn query_audit(pool: &PgPool, query: &AuditQuery) -> StoreResult<Vec<AuditRow>> {
    let mut parts = audit_where(query);
    let limit = parts.bind(Bind::Int(i64::from(query.limit.clamp(1, 1000))));
    let text = format!("SELECT * FROM audit_events WHERE {} ORDER BY seq DESC LIMIT {limit}", parts.where_sql());
    let rows =
        bind_all(sqlx::query(AssertSqlSafe(text)), parts.into_binds()).fetch_all(pool).await.map_err(map_sqlx)?;
    rows.iter().map(audit_from_row).collect()
}

pub(crate) async fn count_audit(pool: &PgPool, query: &AuditQuery) -> StoreResult<u64> {
    let parts = audit_where(query);
    let text = format!("SELECT COUNT(*) AS n FROM audit_events WHERE {}", parts.where_sql());
    let row = bind_all(sqlx::query(AssertSqlSafe(text)), parts.into_binds()).fetch_one(pool).await.map_err(map_sqlx)?;
    let n: i64 = row.try_get("n").map_err(map_sqlx)?;
    Ok(n.max(0) as u64)
}

pub(crate) async fn audit_buckets(pool: &PgPool, query: &BucketQuery) -> StoreResult<Vec<Bucket>> {
    if query.actions.is_empty() || query.bucket_micros <= 0 || query.until <= query.since {
        return Ok(Vec::new());
    }
    let measure = match &query.measure {
        Measure::Events => "COUNT(*)".to_owned(),
        Measure::DistinctRecords => "COUNT(DISTINCT record_id)".to_owned(),
        Measure::SumDetail(key) => {
            if !custodian_store::is_identifier(key) {
                return Err(internal("detail keys must be identifiers"));
            }
            format!(
                "COALESCE(SUM(CASE WHEN jsonb_typeof(body::jsonb -> 'details' -> '{key}') = 'number' \
                 THEN (body::jsonb -> 'details' ->> '{key}')::numeric ELSE 0 END), 0)::bigint"
            )
        }
    };
    let text = format!(
        "SELECT (at - $1) / $2 AS bucket, {measure} AS value FROM audit_events \
         WHERE actor_id = $3 AND action = ANY($4) AND at >= $1 AND at < $5 GROUP BY bucket ORDER BY bucket"
    );
    let rows = sqlx::query(AssertSqlSafe(text))
        .bind(query.since)
        .bind(query.bucket_micros)
        .bind(query.actor_id)
        .bind(&query.actions)
        .bind(query.until)
        .fetch_all(pool)
        .await
        .map_err(map_sqlx)?;
    rows.iter()
        .map(|r| {
            Ok((r.try_get::<i64, _>("bucket").map_err(map_sqlx)?, r.try_get::<i64, _>("value").map_err(map_sqlx)?))
        })
        .collect()
}

/// Actors with an event (of `actions`, if given) at or after `since`. Not a DISTINCT over the
/// window, which reads every event in it (millions in an hour of audited reads): the distinct
/// actors of the whole log are walked through the (actor_id, …) index — one seek each, and
/// there are as many as there are users — and each is asked for one event in the window.
pub(crate) async fn active_actors(pool: &PgPool, since: i64, actions: &[String]) -> StoreResult<Vec<Uuid>> {
    sqlx::query_scalar(
        "WITH RECURSIVE actors(id) AS ( \
           (SELECT actor_id FROM audit_events WHERE actor_id IS NOT NULL ORDER BY actor_id LIMIT 1) \
           UNION ALL \
           SELECT (SELECT e.actor_id FROM audit_events e WHERE e.actor_id > actors.id ORDER BY e.actor_id LIMIT 1) \
           FROM actors WHERE actors.id IS NOT NULL) \
         SELECT id FROM actors WHERE id IS NOT NULL AND EXISTS (SELECT 1 FROM audit_events e \
           WHERE e.actor_id = actors.id AND e.at >= $1 AND (cardinality($2::text[]) = 0 OR e.action = ANY($2)))",
    )
    .bind(since)
    .bind(actions)
    .fetch_all(pool)
    .await
    .map_err(map_sqlx)
}

/// The lease of a periodic job: one conditional upsert. Two servers claiming at once
/// serialise on the row; the second sees the first one's lease and gets nothing.
pub(crate) async fn claim_job(
    pool: &PgPool,
    job: &str,
    holder: &str,
    now: i64,
    lease: i64,
    every: i64,
) -> StoreResult<bool> {
    let r = sqlx::query(
        "INSERT INTO job_leases (job, holder, lease_until, started_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (job) DO UPDATE SET holder = EXCLUDED.holder, lease_until = EXCLUDED.lease_until, \
           started_at = EXCLUDED.started_at \
         WHERE (job_leases.lease_until <= $4 OR job_leases.lease_until > $3) \
           AND (job_leases.started_at <= $5 OR job_leases.started_at > $4)",
    )
    .bind(job)
    .bind(holder)
    .bind(now.saturating_add(lease))
    .bind(now)
    .bind(now.saturating_sub(every))
    .execute(pool)
    .await
    .map_err(map_sqlx)?;
    Ok(r.rows_affected() == 1)
}

pub(crate) async fn release_job(pool: &PgPool, job: &str, holder: &str) -> StoreResult<()> {
    sqlx::query("UPDATE job_leases SET lease_until = 0 WHERE job = $1 AND holder = $2")
        .bind(job)
        .bind(holder)
        .execute(pool)
        .await
        .map_err(map_sqlx)?;
    Ok(())
}

pub(crate) async fn list_rules(pool: &PgPool) -> StoreResult<Vec<AlertRuleRow>> {
    let rows = sqlx::query("SELECT * FROM alert_rules ORDER BY metric").fetch_all(pool).await.map_err(map_sqlx)?;
    rows.iter()
        .map(|r| {
            Ok(AlertRuleRow {
                metric: r.try_get("metric").map_err(map_sqlx)?,
                definition: json_col(r, "definition")?,
                updated_at: r.try_get("updated_at").map_err(map_sqlx)?,
            })
        })
        .collect()
}

pub(crate) async fn put_rule(pool: &PgPool, rule: AlertRuleRow, audit: AuditDraft) -> StoreResult<()> {
    let mut tx = pool.begin().await.map_err(map_sqlx)?;
    sqlx::query(
        "INSERT INTO alert_rules (metric, definition, updated_at) VALUES ($1, $2, $3) \
         ON CONFLICT (metric) DO UPDATE SET definition = EXCLUDED.definition, updated_at = EXCLUDED.updated_at",
    )
    .bind(&rule.metric)
    .bind(Json(&rule.definition))
    .bind(rule.updated_at)
    .execute(&mut *tx)
    .await
    .map_err(map_sqlx)?;
    append_events(&mut tx, &[audit]).await?;
    commit(tx).await
}

pub(crate) async fn insert_alert(
    pool: &PgPool,
    a: AlertRow,
    outbox: Vec<OutboxRow>,
    audit: AuditDraft,
) -> StoreResult<bool> {
    let mut tx = pool.begin().await.map_err(map_sqlx)?;
    // A concurrent insert of the same (metric, user, window) waits for the other transaction
    // and then does nothing: one alert, one set of messages.
    let r = sqlx::query(
        "INSERT INTO alerts (id, metric, user_id, window_start, raised_at, value, details) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (metric, user_id, window_start) DO NOTHING",
    )
    .bind(a.id)
    .bind(&a.metric)
    .bind(a.user_id)
    .bind(a.window_start)
    .bind(a.raised_at)
    .bind(a.value)
    .bind(Json(&a.details))
    .execute(&mut *tx)
    .await
    .map_err(map_sqlx)?;
    if r.rows_affected() == 0 {
        tx.rollback().await.map_err(map_sqlx)?;
        return Ok(false);
    }
    insert_outbox(&mut tx, &outbox).await?;
    append_events(&mut tx, &[audit]).await?;
    commit(tx).await?;
    Ok(true)
}

pub(crate) async fn list_alerts(pool: &PgPool, before: Option<(i64, Uuid)>, limit: u32) -> StoreResult<Vec<AlertRow>> {
    let limit = i64::from(limit.clamp(1, 1000));
    let rows = match before {
        None => sqlx::query("SELECT * FROM alerts ORDER BY raised_at DESC, id DESC LIMIT $1").bind(limit),
        Some((at, id)) => sqlx::query(
            "SELECT * FROM alerts WHERE (raised_at, id) < ($1, $2) ORDER BY raised_at DESC, id DESC LIMIT $3",
        )
        .bind(at)
        .bind(id)
        .bind(limit),
    }
    .fetch_all(pool)
    .await
    .map_err(map_sqlx)?;
    rows.iter().map(alert_from_row).collect()
}

pub(crate) async fn ack_alert(pool: &PgPool, id: Uuid, by: Uuid, at: i64, audit: AuditDraft) -> StoreResult<AlertRow> {
    let mut tx = pool.begin().await.map_err(map_sqlx)?;
    sqlx::query("UPDATE alerts SET acked_at = $1, acked_by = $2 WHERE id = $3 AND acked_at IS NULL")
        .bind(at)
        .bind(by)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(map_sqlx)?;
    let row = sqlx::query("SELECT * FROM alerts WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(map_sqlx)?
        .ok_or(StoreError::NotFound)?;
    append_events(&mut tx, &[audit]).await?;
    commit(tx).await?;
    alert_from_row(&row)
}

pub(crate) async fn list_notifications(
    pool: &PgPool,
    user_id: Uuid,
    before: Option<(i64, Uuid)>,
    limit: u32,
) -> StoreResult<Vec<NotificationRow>> {
    let limit = i64::from(limit.clamp(1, 1000));
    let rows = match before {
        None => {
            sqlx::query("SELECT * FROM notifications WHERE user_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2")
                .bind(user_id)
                .bind(limit)
        }
        Some((at, id)) => sqlx::query(
            "SELECT * FROM notifications WHERE user_id = $1 AND (created_at, id) < ($2, $3) \
             ORDER BY created_at DESC, id DESC LIMIT $4",
        )
        .bind(user_id)
        .bind(at)
        .bind(id)
        .bind(limit),
    }
    .fetch_all(pool)
    .await
    .map_err(map_sqlx)?;
    rows.iter().map(notification_from_row).collect()
}

pub(crate) async fn ack_notification(
    pool: &PgPool,
    id: Uuid,
    user_id: Uuid,
    at: i64,
    audit: AuditDraft,
) -> StoreResult<NotificationRow> {
    let mut tx = pool.begin().await.map_err(map_sqlx)?;
    sqlx::query("UPDATE notifications SET acked_at = $1 WHERE id = $2 AND user_id = $3 AND acked_at IS NULL")
        .bind(at)
        .bind(id)
        .bind(user_id)
        .execute(&mut *tx)
        .await
        .map_err(map_sqlx)?;
    let row = sqlx::query("SELECT * FROM notifications WHERE id = $1 AND user_id = $2")
        .bind(id)
        .bind(user_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(map_sqlx)?
        .ok_or(StoreError::NotFound)?;
    let row = notification_from_row(&row)?;
    let mut audit = audit;
    audit.object = Some(row.object.clone());
    audit.record_id = Some(row.record_id);
    append_events(&mut tx, &[audit]).await?;
    commit(tx).await?;
    Ok(row)
}

pub(crate) async fn insert_notifications(conn: &mut PgConnection, rows: &[NotificationRow]) -> StoreResult<()> {
    for n in rows {
        sqlx::query(
            "INSERT INTO notifications (id, user_id, object, record_id, version, actor_id, changes, created_at, acked_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(n.id)
        .bind(n.user_id)
        .bind(&n.object)
        .bind(n.record_id)
        .bind(n.version)
        .bind(n.actor_id)
        .bind(Json(&n.changes))
        .bind(n.created_at)
        .bind(n.acked_at)
        .execute(&mut *conn)
        .await
        .map_err(map_sqlx)?;
    }
    Ok(())
}

pub(crate) async fn insert_outbox(conn: &mut PgConnection, rows: &[OutboxRow]) -> StoreResult<()> {
    for o in rows {
        sqlx::query(
            "INSERT INTO outbox (id, channel, kind, payload, created_at, next_attempt_at, attempts, last_error, delivered_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(o.id)
        .bind(&o.channel)
        .bind(&o.kind)
        .bind(Json(&o.payload))
        .bind(o.created_at)
        .bind(o.next_attempt_at)
        .bind(o.attempts)
        .bind(&o.last_error)
        .bind(o.delivered_at)
        .execute(&mut *conn)
        .await
        .map_err(map_sqlx)?;
    }
    Ok(())
}

pub(crate) async fn claim_outbox(
    pool: &PgPool,
    claimant: &str,
    now: i64,
    lease: i64,
    limit: u32,
) -> StoreResult<Vec<OutboxRow>> {
    let rows = sqlx::query(
        "UPDATE outbox SET lease_owner = $1, lease_until = $2, attempts = attempts + 1 \
         WHERE id IN (SELECT id FROM outbox WHERE delivered_at IS NULL AND next_attempt_at <= $3 \
           AND (lease_until IS NULL OR lease_until <= $3) ORDER BY next_attempt_at, id LIMIT $4 \
           FOR UPDATE SKIP LOCKED) \
         RETURNING *",
    )
    .bind(claimant)
    .bind(now.saturating_add(lease))
    .bind(now)
    .bind(i64::from(limit.clamp(1, 1000)))
    .fetch_all(pool)
    .await
    .map_err(map_sqlx)?;
    rows.iter().map(outbox_from_row).collect()
}

pub(crate) async fn finish_outbox(
    pool: &PgPool,
    id: Uuid,
    claimant: &str,
    outcome: DeliveryOutcome,
) -> StoreResult<()> {
    let q = match outcome {
        DeliveryOutcome::Delivered { at } => sqlx::query(
            "UPDATE outbox SET delivered_at = $1, last_error = NULL, lease_owner = NULL, lease_until = NULL \
             WHERE id = $2 AND lease_owner = $3",
        )
        .bind(at),
        DeliveryOutcome::Failed { error, retry_at } => sqlx::query(
            "UPDATE outbox SET last_error = $1, next_attempt_at = $2, lease_owner = NULL, lease_until = NULL \
             WHERE id = $3 AND lease_owner = $4",
        )
        .bind(error)
        .bind(retry_at.unwrap_or(i64::MAX)),
    };
    q.bind(id).bind(claimant).execute(pool).await.map_err(map_sqlx)?;
    Ok(())
}

pub(crate) async fn list_outbox(pool: &PgPool, limit: u32) -> StoreResult<Vec<OutboxRow>> {
    let rows = sqlx::query("SELECT * FROM outbox ORDER BY created_at, id LIMIT $1")
        .bind(i64::from(limit.clamp(1, 100_000)))
        .fetch_all(pool)
        .await
        .map_err(map_sqlx)?;
    rows.iter().map(outbox_from_row).collect()
}
