//! Audit queries, activity buckets, alerts, notifications and the outbox on SQLite. Reads use
//! the read pool; every write runs in the writer task (`MonitorOp`), inside the group
//! transaction, so alerts and their outbox messages commit with their audit events.

use crate::read_pool::ReadPool;
use crate::sql::Bind;
use crate::{ChainHead, append_events, audit_from_row, bind_all, internal, map_sqlx, opt_uuid_col, uuid_col};
use custodian_store::monitor::prefix_upper_bound;
use custodian_store::{
    ActionFilter, AlertRow, AlertRuleRow, AuditDraft, AuditQuery, AuditRow, Bucket, BucketQuery, DeliveryOutcome,
    Measure, NotificationRow, OutboxRow, StoreError, StoreResult,
};
use serde_json::Value;
use sqlx::sqlite::SqliteRow;
use sqlx::{AssertSqlSafe, Row, SqliteConnection};
use uuid::Uuid;

pub(crate) enum MonitorOp {
    PutRule(AlertRuleRow, AuditDraft),
    InsertAlert(AlertRow, Vec<OutboxRow>, AuditDraft),
    AckAlert(Uuid, Uuid, i64, AuditDraft),
    AckNotification(Uuid, Uuid, i64, AuditDraft),
    ClaimOutbox(String, i64, i64, u32),
    FinishOutbox(Uuid, String, DeliveryOutcome),
    /// job, holder, now, lease, every
    ClaimJob(String, String, i64, i64, i64),
    ReleaseJob(String, String),
}

pub(crate) enum MonitorOut {
    Unit,
    Inserted(bool),
    Alert(AlertRow),
    Notification(NotificationRow),
    Outbox(Vec<OutboxRow>),
}

fn json_text(row: &SqliteRow, column: &str) -> StoreResult<Value> {
    let text: String = row.try_get(column).map_err(map_sqlx)?;
    serde_json::from_str(&text).map_err(internal)
}

fn alert_from_row(row: &SqliteRow) -> StoreResult<AlertRow> {
    Ok(AlertRow {
        id: uuid_col(row, "id")?,
        metric: row.try_get("metric").map_err(map_sqlx)?,
        user_id: uuid_col(row, "user_id")?,
        window_start: row.try_get("window_start").map_err(map_sqlx)?,
        raised_at: row.try_get("raised_at").map_err(map_sqlx)?,
        value: row.try_get("value").map_err(map_sqlx)?,
        details: json_text(row, "details")?,
        acked_at: row.try_get("acked_at").map_err(map_sqlx)?,
        acked_by: opt_uuid_col(row, "acked_by")?,
    })
}

fn notification_from_row(row: &SqliteRow) -> StoreResult<NotificationRow> {
    Ok(NotificationRow {
        id: uuid_col(row, "id")?,
        user_id: uuid_col(row, "user_id")?,
        object: row.try_get("object").map_err(map_sqlx)?,
        record_id: uuid_col(row, "record_id")?,
        version: row.try_get("version").map_err(map_sqlx)?,
        actor_id: opt_uuid_col(row, "actor_id")?,
        changes: json_text(row, "changes")?,
        created_at: row.try_get("created_at").map_err(map_sqlx)?,
        acked_at: row.try_get("acked_at").map_err(map_sqlx)?,
    })
}

fn outbox_from_row(row: &SqliteRow) -> StoreResult<OutboxRow> {
    Ok(OutboxRow {
        id: uuid_col(row, "id")?,
        channel: row.try_get("channel").map_err(map_sqlx)?,
        kind: row.try_get("kind").map_err(map_sqlx)?,
        payload: json_text(row, "payload")?,
        created_at: row.try_get("created_at").map_err(map_sqlx)?,
        next_attempt_at: row.try_get("next_attempt_at").map_err(map_sqlx)?,
        attempts: row.try_get("attempts").map_err(map_sqlx)?,
        last_error: row.try_get("last_error").map_err(map_sqlx)?,
        delivered_at: row.try_get("delivered_at").map_err(map_sqlx)?,
    })
}

/// The record filter of the audit query (both parameters the record id): the writer adds
/// events to the record index in batches (migration 0023), so a record's events are those of
/// the index and those after its mark, a range of the table's key.
#[doc(hidden)]
pub const AUDIT_RECORD_FILTER: &str = "seq IN (SELECT seq FROM audit_record_index WHERE record_id = ? \
     UNION ALL SELECT seq FROM audit_events \
     WHERE seq > COALESCE((SELECT seq FROM audit_record_index_mark), 0) AND record_id = ?)";

/// WHERE conditions of an audit query; every filter is an index range on its own.
fn audit_where(query: &AuditQuery) -> (String, Vec<Bind>) {
    let mut conditions: Vec<&'static str> = Vec::new();
    let mut binds = Vec::new();
    if let Some(a) = query.actor_id {
        conditions.push("actor_id = ?");
        binds.push(Bind::Text(a.to_string()));
    }
    if let Some(o) = &query.object {
        conditions.push("object = ?");
        binds.push(Bind::Text(o.clone()));
    }
    if let Some(r) = query.record_id {
        conditions.push(AUDIT_RECORD_FILTER);
        binds.push(Bind::Text(r.to_string()));
        binds.push(Bind::Text(r.to_string()));
    }
    match &query.action {
        None => {}
        Some(ActionFilter::Exact(a)) => {
            conditions.push("action = ?");
            binds.push(Bind::Text(a.clone()));
        }
        Some(ActionFilter::Prefix(p)) => {
            conditions.push("action >= ?");
            binds.push(Bind::Text(p.clone()));
            if let Some(upper) = prefix_upper_bound(p) {
                conditions.push("action < ?");
                binds.push(Bind::Text(upper));
            }
        }
    }
    if let Some(from) = query.from {
        conditions.push("at >= ?");
        binds.push(Bind::Int(from));
    }
    if let Some(to) = query.to {
        conditions.push("at <= ?");
        binds.push(Bind::Int(to));
    }
    if let Some(before) = query.before_seq {
        conditions.push("seq < ?");
        binds.push(Bind::Int(before));
    }
    let sql = if conditions.is_empty() { "1 = 1".to_owned() } else { conditions.join(" AND ") };
    (sql, binds)
}

pub(crate) async fn query_audit(pool: &ReadPool, query: &AuditQuery) -> StoreResult<Vec<AuditRow>> {
    let (where_sql, mut binds) = audit_where(query);
    binds.push(Bind::Int(i64::from(query.limit.clamp(1, 1000))));
    let text = format!("SELECT * FROM audit_events WHERE {where_sql} ORDER BY seq DESC LIMIT ?");
    let rows =
        bind_all(sqlx::query(AssertSqlSafe(text)), binds).fetch_all(&mut *pool.get().await?).await.map_err(map_sqlx)?;
    rows.iter().map(audit_from_row).collect()
}

pub(crate) async fn count_audit(pool: &ReadPool, query: &AuditQuery) -> StoreResult<u64> {
    let (where_sql, binds) = audit_where(query);
    let text = format!("SELECT COUNT(*) AS n FROM audit_events WHERE {where_sql}");
    let row =
        bind_all(sqlx::query(AssertSqlSafe(text)), binds).fetch_one(&mut *pool.get().await?).await.map_err(map_sqlx)?;
    let n: i64 = row.try_get("n").map_err(map_sqlx)?;
    Ok(n.max(0) as u64)
}

pub(crate) async fn audit_buckets(pool: &ReadPool, query: &BucketQuery) -> StoreResult<Vec<Bucket>> {
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
            format!("COALESCE(SUM(CAST(json_extract(body, '$.details.{key}') AS INTEGER)), 0)")
        }
    };
    let placeholders = vec!["?"; query.actions.len()].join(", ");
    let text = format!(
        "SELECT (at - ?) / ? AS bucket, {measure} AS value FROM audit_events \
         WHERE actor_id = ? AND action IN ({placeholders}) AND at >= ? AND at < ? GROUP BY bucket ORDER BY bucket"
    );
    let mut binds =
        vec![Bind::Int(query.since), Bind::Int(query.bucket_micros), Bind::Text(query.actor_id.to_string())];
    binds.extend(query.actions.iter().map(|a| Bind::Text(a.clone())));
    binds.push(Bind::Int(query.since));
    binds.push(Bind::Int(query.until));
    let rows =
        bind_all(sqlx::query(AssertSqlSafe(text)), binds).fetch_all(&mut *pool.get().await?).await.map_err(map_sqlx)?;
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
pub(crate) async fn active_actors(pool: &ReadPool, since: i64, actions: &[String]) -> StoreResult<Vec<Uuid>> {
    let mut text = "WITH RECURSIVE actors(id) AS ( \
         SELECT (SELECT min(actor_id) FROM audit_events WHERE actor_id IS NOT NULL) \
         UNION ALL \
         SELECT (SELECT min(actor_id) FROM audit_events WHERE actor_id > actors.id) FROM actors \
         WHERE actors.id IS NOT NULL) \
         SELECT id AS actor_id FROM actors WHERE id IS NOT NULL AND EXISTS (SELECT 1 FROM audit_events e \
         WHERE e.actor_id = actors.id AND e.at >= ?"
        .to_owned();
    let mut binds = vec![Bind::Int(since)];
    if !actions.is_empty() {
        text.push_str(&format!(" AND e.action IN ({})", vec!["?"; actions.len()].join(", ")));
        binds.extend(actions.iter().map(|a| Bind::Text(a.clone())));
    }
    text.push(')');
    let rows =
        bind_all(sqlx::query(AssertSqlSafe(text)), binds).fetch_all(&mut *pool.get().await?).await.map_err(map_sqlx)?;
    rows.iter().map(|r| uuid_col(r, "actor_id")).collect()
}

pub(crate) async fn list_rules(pool: &ReadPool) -> StoreResult<Vec<AlertRuleRow>> {
    let rows = sqlx::query("SELECT * FROM alert_rules ORDER BY metric")
        .fetch_all(&mut *pool.get().await?)
        .await
        .map_err(map_sqlx)?;
    rows.iter()
        .map(|r| {
            Ok(AlertRuleRow {
                metric: r.try_get("metric").map_err(map_sqlx)?,
                definition: json_text(r, "definition")?,
                updated_at: r.try_get("updated_at").map_err(map_sqlx)?,
            })
        })
        .collect()
}

pub(crate) async fn list_alerts(
    pool: &ReadPool,
    before: Option<(i64, Uuid)>,
    limit: u32,
) -> StoreResult<Vec<AlertRow>> {
    let limit = i64::from(limit.clamp(1, 1000));
    let rows = match before {
        None => sqlx::query("SELECT * FROM alerts ORDER BY raised_at DESC, id DESC LIMIT ?").bind(limit),
        Some((at, id)) => sqlx::query(
            "SELECT * FROM alerts WHERE raised_at < ? OR (raised_at = ? AND id < ?) \
             ORDER BY raised_at DESC, id DESC LIMIT ?",
        )
        .bind(at)
        .bind(at)
        .bind(id.to_string())
        .bind(limit),
    }
    .fetch_all(&mut *pool.get().await?)
    .await
    .map_err(map_sqlx)?;
    rows.iter().map(alert_from_row).collect()
}

pub(crate) async fn list_notifications(
    pool: &ReadPool,
    user_id: Uuid,
    before: Option<(i64, Uuid)>,
    limit: u32,
) -> StoreResult<Vec<NotificationRow>> {
    let limit = i64::from(limit.clamp(1, 1000));
    let rows = match before {
        None => sqlx::query("SELECT * FROM notifications WHERE user_id = ? ORDER BY created_at DESC, id DESC LIMIT ?")
            .bind(user_id.to_string())
            .bind(limit),
        Some((at, id)) => sqlx::query(
            "SELECT * FROM notifications WHERE user_id = ? AND (created_at < ? OR (created_at = ? AND id < ?)) \
             ORDER BY created_at DESC, id DESC LIMIT ?",
        )
        .bind(user_id.to_string())
        .bind(at)
        .bind(at)
        .bind(id.to_string())
        .bind(limit),
    }
    .fetch_all(&mut *pool.get().await?)
    .await
    .map_err(map_sqlx)?;
    rows.iter().map(notification_from_row).collect()
}

pub(crate) async fn list_outbox(pool: &ReadPool, limit: u32) -> StoreResult<Vec<OutboxRow>> {
    let rows = sqlx::query("SELECT * FROM outbox ORDER BY created_at, id LIMIT ?")
        .bind(i64::from(limit.clamp(1, 100_000)))
        .fetch_all(&mut *pool.get().await?)
        .await
        .map_err(map_sqlx)?;
    rows.iter().map(outbox_from_row).collect()
}

/// Part of a record write: the batch's notifications and outbox messages.
pub(crate) async fn insert_notifications(conn: &mut SqliteConnection, rows: &[NotificationRow]) -> StoreResult<()> {
    for n in rows {
        sqlx::query(
            "INSERT INTO notifications (id, user_id, object, record_id, version, actor_id, changes, created_at, acked_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(n.id.to_string())
        .bind(n.user_id.to_string())
        .bind(&n.object)
        .bind(n.record_id.to_string())
        .bind(n.version)
        .bind(n.actor_id.map(|u| u.to_string()))
        .bind(n.changes.to_string())
        .bind(n.created_at)
        .bind(n.acked_at)
        .execute(&mut *conn)
        .await
        .map_err(map_sqlx)?;
    }
    Ok(())
}

pub(crate) async fn insert_outbox(conn: &mut SqliteConnection, rows: &[OutboxRow]) -> StoreResult<()> {
    for o in rows {
        sqlx::query(
            "INSERT INTO outbox (id, channel, kind, payload, created_at, next_attempt_at, attempts, last_error, delivered_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(o.id.to_string())
        .bind(&o.channel)
        .bind(&o.kind)
        .bind(o.payload.to_string())
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

/// Runs in the writer task, inside the group transaction.
pub(crate) async fn apply(conn: &mut SqliteConnection, op: MonitorOp, head: &mut ChainHead) -> StoreResult<MonitorOut> {
    match op {
        MonitorOp::PutRule(rule, audit) => {
            sqlx::query(
                "INSERT INTO alert_rules (metric, definition, updated_at) VALUES (?, ?, ?) \
                 ON CONFLICT (metric) DO UPDATE SET definition = excluded.definition, updated_at = excluded.updated_at",
            )
            .bind(&rule.metric)
            .bind(rule.definition.to_string())
            .bind(rule.updated_at)
            .execute(&mut *conn)
            .await
            .map_err(map_sqlx)?;
            append_events(conn, head, &[audit]).await?;
            Ok(MonitorOut::Unit)
        }
        MonitorOp::InsertAlert(a, outbox, audit) => {
            let r = sqlx::query(
                "INSERT INTO alerts (id, metric, user_id, window_start, raised_at, value, details, acked_at, acked_by) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, NULL, NULL) ON CONFLICT (metric, user_id, window_start) DO NOTHING",
            )
            .bind(a.id.to_string())
            .bind(&a.metric)
            .bind(a.user_id.to_string())
            .bind(a.window_start)
            .bind(a.raised_at)
            .bind(a.value)
            .bind(a.details.to_string())
            .execute(&mut *conn)
            .await
            .map_err(map_sqlx)?;
            if r.rows_affected() == 0 {
                return Ok(MonitorOut::Inserted(false));
            }
            insert_outbox(conn, &outbox).await?;
            append_events(conn, head, &[audit]).await?;
            Ok(MonitorOut::Inserted(true))
        }
        MonitorOp::AckAlert(id, by, at, audit) => {
            sqlx::query("UPDATE alerts SET acked_at = ?, acked_by = ? WHERE id = ? AND acked_at IS NULL")
                .bind(at)
                .bind(by.to_string())
                .bind(id.to_string())
                .execute(&mut *conn)
                .await
                .map_err(map_sqlx)?;
            let row = sqlx::query("SELECT * FROM alerts WHERE id = ?")
                .bind(id.to_string())
                .fetch_optional(&mut *conn)
                .await
                .map_err(map_sqlx)?
                .ok_or(StoreError::NotFound)?;
            append_events(conn, head, &[audit]).await?;
            Ok(MonitorOut::Alert(alert_from_row(&row)?))
        }
        MonitorOp::AckNotification(id, user_id, at, audit) => {
            sqlx::query("UPDATE notifications SET acked_at = ? WHERE id = ? AND user_id = ? AND acked_at IS NULL")
                .bind(at)
                .bind(id.to_string())
                .bind(user_id.to_string())
                .execute(&mut *conn)
                .await
                .map_err(map_sqlx)?;
            let row = sqlx::query("SELECT * FROM notifications WHERE id = ? AND user_id = ?")
                .bind(id.to_string())
                .bind(user_id.to_string())
                .fetch_optional(&mut *conn)
                .await
                .map_err(map_sqlx)?
                .ok_or(StoreError::NotFound)?;
            let row = notification_from_row(&row)?;
            let mut audit = audit;
            audit.object = Some(row.object.clone());
            audit.record_id = Some(row.record_id);
            append_events(conn, head, &[audit]).await?;
            Ok(MonitorOut::Notification(row))
        }
        MonitorOp::ClaimOutbox(claimant, now, lease, limit) => {
            // One writer: selecting and leasing in the same transaction is already exclusive.
            let rows = sqlx::query(
                "UPDATE outbox SET lease_owner = ?, lease_until = ?, attempts = attempts + 1 \
                 WHERE id IN (SELECT id FROM outbox WHERE delivered_at IS NULL AND next_attempt_at <= ? \
                   AND (lease_until IS NULL OR lease_until <= ?) ORDER BY next_attempt_at, id LIMIT ?) \
                 RETURNING *",
            )
            .bind(&claimant)
            .bind(now.saturating_add(lease))
            .bind(now)
            .bind(now)
            .bind(i64::from(limit.clamp(1, 1000)))
            .fetch_all(&mut *conn)
            .await
            .map_err(map_sqlx)?;
            Ok(MonitorOut::Outbox(rows.iter().map(outbox_from_row).collect::<StoreResult<_>>()?))
        }
        MonitorOp::FinishOutbox(id, claimant, outcome) => {
            let q = match outcome {
                DeliveryOutcome::Delivered { at } => sqlx::query(
                    "UPDATE outbox SET delivered_at = ?, last_error = NULL, lease_owner = NULL, lease_until = NULL \
                     WHERE id = ? AND lease_owner = ?",
                )
                .bind(at),
                DeliveryOutcome::Failed { error, retry_at } => sqlx::query(
                    "UPDATE outbox SET last_error = ?, next_attempt_at = ?, lease_owner = NULL, lease_until = NULL \
                     WHERE id = ? AND lease_owner = ?",
                )
                .bind(error)
                .bind(retry_at.unwrap_or(i64::MAX)),
            };
            q.bind(id.to_string()).bind(claimant).execute(&mut *conn).await.map_err(map_sqlx)?;
            Ok(MonitorOut::Unit)
        }
        MonitorOp::ClaimJob(job, holder, now, lease, every) => {
            // Due when no lease runs and the last start is a period ago; a lease or a start
            // "in the future" (a clock moved backwards) does not block the job for ever.
            let r = sqlx::query(
                "INSERT INTO job_leases (job, holder, lease_until, started_at) VALUES (?, ?, ?, ?) \
                 ON CONFLICT (job) DO UPDATE SET holder = excluded.holder, lease_until = excluded.lease_until, \
                   started_at = excluded.started_at \
                 WHERE (job_leases.lease_until <= ? OR job_leases.lease_until > ?) \
                   AND (job_leases.started_at <= ? OR job_leases.started_at > ?)",
            )
            .bind(&job)
            .bind(&holder)
            .bind(now.saturating_add(lease))
            .bind(now)
            .bind(now)
            .bind(now.saturating_add(lease))
            .bind(now.saturating_sub(every))
            .bind(now)
            .execute(&mut *conn)
            .await
            .map_err(map_sqlx)?;
            Ok(MonitorOut::Inserted(r.rows_affected() == 1))
        }
        MonitorOp::ReleaseJob(job, holder) => {
            sqlx::query("UPDATE job_leases SET lease_until = 0 WHERE job = ? AND holder = ?")
                .bind(&job)
                .bind(&holder)
                .execute(&mut *conn)
                .await
                .map_err(map_sqlx)?;
            Ok(MonitorOut::Unit)
        }
    }
}
