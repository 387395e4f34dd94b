//! Custom roles, time-boxed grants and login-failure counters of the PostgreSQL store. Role and
//! grant changes are one transaction each with their audit event; a login failure is one
//! `INSERT … ON CONFLICT DO UPDATE` per key, atomic across servers.

use crate::{append_events, commit, map_sqlx};
use custodian_store::{AuditDraft, GrantRow, LoginCounterRow, RoleRow, StoreError, StoreResult};
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

pub(crate) async fn list_roles(pool: &PgPool) -> StoreResult<Vec<RoleRow>> {
    let rows = sqlx::query("SELECT * FROM roles ORDER BY name").fetch_all(pool).await.map_err(map_sqlx)?;
    rows.iter()
        .map(|row| {
            let Json(definition): Json<serde_json::Value> = row.try_get("definition").map_err(map_sqlx)?;
            Ok(RoleRow {
                name: row.try_get("name").map_err(map_sqlx)?,
                definition,
                created_at: row.try_get("created_at").map_err(map_sqlx)?,
                updated_at: row.try_get("updated_at").map_err(map_sqlx)?,
            })
        })
        .collect()
}

pub(crate) async fn create_role(pool: &PgPool, role: RoleRow, audit: AuditDraft) -> StoreResult<()> {
    let mut tx = pool.begin().await.map_err(map_sqlx)?;
    let r = sqlx::query(
        "INSERT INTO roles (name, definition, created_at, updated_at) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
    )
    .bind(&role.name)
    .bind(Json(&role.definition))
    .bind(role.created_at)
    .bind(role.updated_at)
    .execute(&mut *tx)
    .await
    .map_err(map_sqlx)?;
    if r.rows_affected() == 0 {
        return Err(StoreError::AlreadyExists(format!("role {}", role.name)));
    }
    append_events(&mut tx, &[audit]).await?;
    commit(tx).await
}

pub(crate) async fn update_role(pool: &PgPool, role: RoleRow, audit: AuditDraft) -> StoreResult<()> {
    let mut tx = pool.begin().await.map_err(map_sqlx)?;
    let r = sqlx::query("UPDATE roles SET definition = $2, updated_at = $3 WHERE name = $1")
        .bind(&role.name)
        .bind(Json(&role.definition))
        .bind(role.updated_at)
        .execute(&mut *tx)
        .await
        .map_err(map_sqlx)?;
    if r.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    append_events(&mut tx, &[audit]).await?;
    commit(tx).await
}

/// A user may be given a built-in role or a custom role that exists. A custom role's row is
/// locked (shared) until the assignment commits: `delete_role` locks it exclusively and then
/// counts holders, so either the delete waits and sees the new holder, or the assignment waits
/// and finds the role gone — never a user holding a deleted role.
pub(crate) async fn lock_assigned_role(conn: &mut PgConnection, role: &str) -> StoreResult<()> {
    if custodian_core::access::BUILTIN_ROLE_NAMES.contains(&role) {
        return Ok(());
    }
    let exists = sqlx::query("SELECT name FROM roles WHERE name = $1 FOR SHARE")
        .bind(role)
        .fetch_optional(&mut *conn)
        .await
        .map_err(map_sqlx)?;
    match exists {
        Some(_) => Ok(()),
        None => Err(StoreError::Conflict(format!("role {role} does not exist (deleted meanwhile?)"))),
    }
}

pub(crate) async fn delete_role(pool: &PgPool, name: &str, audit: AuditDraft) -> StoreResult<()> {
    let mut tx = pool.begin().await.map_err(map_sqlx)?;
    // Lock the role row first, so two deletes (or a delete and an update) queue up.
    let exists = sqlx::query("SELECT name FROM roles WHERE name = $1 FOR UPDATE")
        .bind(name)
        .fetch_optional(&mut *tx)
        .await
        .map_err(map_sqlx)?;
    if exists.is_none() {
        return Err(StoreError::NotFound);
    }
    let holders: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE role = $1")
        .bind(name)
        .fetch_one(&mut *tx)
        .await
        .map_err(map_sqlx)?;
    if holders > 0 {
        return Err(StoreError::Conflict(format!("{holders} user(s) still hold role {name}")));
    }
    sqlx::query("DELETE FROM roles WHERE name = $1").bind(name).execute(&mut *tx).await.map_err(map_sqlx)?;
    append_events(&mut tx, &[audit]).await?;
    commit(tx).await
}

pub(crate) async fn create_grant(pool: &PgPool, g: GrantRow, audit: AuditDraft) -> StoreResult<()> {
    let mut tx = pool.begin().await.map_err(map_sqlx)?;
    sqlx::query(
        "INSERT INTO access_grants (id, user_id, object, record_id, team_id, access, reason, granted_by, \
         created_at, expires_at, revoked_at, revoked_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(g.id)
    .bind(g.user_id)
    .bind(&g.object)
    .bind(g.record_id)
    .bind(g.team_id)
    .bind(&g.access)
    .bind(&g.reason)
    .bind(g.granted_by)
    .bind(g.created_at)
    .bind(g.expires_at)
    .bind(g.revoked_at)
    .bind(g.revoked_by)
    .execute(&mut *tx)
    .await
    .map_err(map_sqlx)?;
    append_events(&mut tx, &[audit]).await?;
    commit(tx).await
}

fn grant_from_row(row: &PgRow) -> StoreResult<GrantRow> {
    Ok(GrantRow {
        id: row.try_get("id").map_err(map_sqlx)?,
        user_id: row.try_get("user_id").map_err(map_sqlx)?,
        object: row.try_get("object").map_err(map_sqlx)?,
        record_id: row.try_get("record_id").map_err(map_sqlx)?,
        team_id: row.try_get("team_id").map_err(map_sqlx)?,
        access: row.try_get("access").map_err(map_sqlx)?,
        reason: row.try_get("reason").map_err(map_sqlx)?,
        granted_by: row.try_get("granted_by").map_err(map_sqlx)?,
        created_at: row.try_get("created_at").map_err(map_sqlx)?,
        expires_at: row.try_get("expires_at").map_err(map_sqlx)?,
        revoked_at: row.try_get("revoked_at").map_err(map_sqlx)?,
        revoked_by: row.try_get("revoked_by").map_err(map_sqlx)?,
    })
}

pub(crate) async fn list_grants(pool: &PgPool, active_at: Option<i64>) -> StoreResult<Vec<GrantRow>> {
    let rows = match active_at {
        Some(now) => {
            sqlx::query(
                "SELECT * FROM access_grants WHERE revoked_at IS NULL AND expires_at > $1 \
             ORDER BY created_at DESC, id DESC",
            )
            .bind(now)
            .fetch_all(pool)
            .await
        }
        None => sqlx::query("SELECT * FROM access_grants ORDER BY created_at DESC, id DESC").fetch_all(pool).await,
    }
    .map_err(map_sqlx)?;
    rows.iter().map(grant_from_row).collect()
}

pub(crate) async fn get_grant(pool: &PgPool, id: Uuid) -> StoreResult<Option<GrantRow>> {
    let row = sqlx::query("SELECT * FROM access_grants WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
        .map_err(map_sqlx)?;
    row.as_ref().map(grant_from_row).transpose()
}

pub(crate) async fn revoke_grant(
    pool: &PgPool,
    id: Uuid,
    at: i64,
    by: Option<Uuid>,
    audit: AuditDraft,
) -> StoreResult<bool> {
    let mut tx = pool.begin().await.map_err(map_sqlx)?;
    let r =
        sqlx::query("UPDATE access_grants SET revoked_at = $2, revoked_by = $3 WHERE id = $1 AND revoked_at IS NULL")
            .bind(id)
            .bind(at)
            .bind(by)
            .execute(&mut *tx)
            .await
            .map_err(map_sqlx)?;
    if r.rows_affected() == 0 {
        let exists = sqlx::query("SELECT 1 FROM access_grants WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_sqlx)?;
        return if exists.is_some() { Ok(false) } else { Err(StoreError::NotFound) };
    }
    append_events(&mut tx, &[audit]).await?;
    commit(tx).await?;
    Ok(true)
}

fn counter_from_row(row: &PgRow) -> StoreResult<LoginCounterRow> {
    Ok(LoginCounterRow {
        key: row.try_get("key").map_err(map_sqlx)?,
        failures: row.try_get("failures").map_err(map_sqlx)?,
        last_failure_at: row.try_get("last_failure_at").map_err(map_sqlx)?,
    })
}

pub(crate) async fn login_counters(pool: &PgPool, keys: &[String]) -> StoreResult<Vec<LoginCounterRow>> {
    let rows = sqlx::query("SELECT key, failures, last_failure_at FROM login_failures WHERE key = ANY($1)")
        .bind(keys)
        .fetch_all(pool)
        .await
        .map_err(map_sqlx)?;
    rows.iter().map(counter_from_row).collect()
}

pub(crate) async fn record_login_failure(
    pool: &PgPool,
    keys: &[String],
    now: i64,
    forget_before: i64,
) -> StoreResult<Vec<LoginCounterRow>> {
    // One statement for every key; each row's increment is atomic under its row lock.
    let rows = sqlx::query(
        "INSERT INTO login_failures AS f (key, failures, last_failure_at) \
         SELECT k, 1, $2 FROM UNNEST($1::text[]) AS k \
         ON CONFLICT (key) DO UPDATE SET \
         failures = CASE WHEN f.last_failure_at < $3 THEN 1 ELSE f.failures + 1 END, \
         last_failure_at = GREATEST(f.last_failure_at, EXCLUDED.last_failure_at) \
         RETURNING key, failures, last_failure_at",
    )
    .bind(keys)
    .bind(now)
    .bind(forget_before)
    .fetch_all(pool)
    .await
    .map_err(map_sqlx)?;
    rows.iter().map(counter_from_row).collect()
}

pub(crate) async fn clear_login_failures(pool: &PgPool, key: &str) -> StoreResult<()> {
    sqlx::query("DELETE FROM login_failures WHERE key = $1").bind(key).execute(pool).await.map_err(map_sqlx)?;
    Ok(())
}
