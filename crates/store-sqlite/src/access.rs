//! Custom roles, time-boxed grants and login-failure counters of the SQLite store. Mutations
//! run in the writer task (one savepoint each, like every other job), with their audit events.

use crate::read_pool::ReadPool;
use crate::{
    ChainHead, OpOut, append_events, internal, is_unique_violation, map_sqlx, opt_uuid, opt_uuid_col, uuid_col,
};
use custodian_store::{AuditDraft, GrantRow, LoginCounterRow, RoleRow, StoreError, StoreResult};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection};
use uuid::Uuid;

/// A user may be given a built-in role or a custom role that exists. Runs in the one writer,
/// which also deletes roles, so the check and the assignment cannot be separated by a delete.
pub(crate) async fn check_assigned_role(conn: &mut SqliteConnection, role: &str) -> StoreResult<()> {
    if custodian_core::access::BUILTIN_ROLE_NAMES.contains(&role) {
        return Ok(());
    }
    let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM roles WHERE name = ?")
        .bind(role)
        .fetch_optional(&mut *conn)
        .await
        .map_err(map_sqlx)?;
    match exists {
        Some(_) => Ok(()),
        None => Err(StoreError::Conflict(format!("role {role} does not exist (deleted meanwhile?)"))),
    }
}

/// Access jobs for the writer task.
pub(crate) enum AccessOp {
    CreateRole(RoleRow, AuditDraft),
    UpdateRole(RoleRow, AuditDraft),
    DeleteRole(String, AuditDraft),
    CreateGrant(GrantRow, AuditDraft),
    RevokeGrant { id: Uuid, at: i64, by: Option<Uuid>, audit: AuditDraft },
    LoginFailure { keys: Vec<String>, now: i64, forget_before: i64 },
    ClearLoginFailures(String),
}

pub(crate) enum AccessOut {
    Unit,
    Bool(bool),
    Counters(Vec<LoginCounterRow>),
}

pub(crate) async fn apply(conn: &mut SqliteConnection, op: AccessOp, head: &mut ChainHead) -> StoreResult<OpOut> {
    let out = match op {
        AccessOp::CreateRole(role, audit) => {
            let r = sqlx::query("INSERT INTO roles (name, definition, created_at, updated_at) VALUES (?, ?, ?, ?)")
                .bind(&role.name)
                .bind(role.definition.to_string())
                .bind(role.created_at)
                .bind(role.updated_at)
                .execute(&mut *conn)
                .await;
            match r {
                Err(e) if is_unique_violation(&e) => {
                    return Err(StoreError::AlreadyExists(format!("role {}", role.name)));
                }
                Err(e) => return Err(map_sqlx(e)),
                Ok(_) => {}
            }
            append_events(conn, head, &[audit]).await?;
            AccessOut::Unit
        }
        AccessOp::UpdateRole(role, audit) => {
            let r = sqlx::query("UPDATE roles SET definition = ?, updated_at = ? WHERE name = ?")
                .bind(role.definition.to_string())
                .bind(role.updated_at)
                .bind(&role.name)
                .execute(&mut *conn)
                .await
                .map_err(map_sqlx)?;
            if r.rows_affected() == 0 {
                return Err(StoreError::NotFound);
            }
            append_events(conn, head, &[audit]).await?;
            AccessOut::Unit
        }
        AccessOp::DeleteRole(name, audit) => {
            // The writer is the only writer: the check and the delete see the same users.
            let holders: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE role = ?")
                .bind(&name)
                .fetch_one(&mut *conn)
                .await
                .map_err(map_sqlx)?;
            if holders > 0 {
                return Err(StoreError::Conflict(format!("{holders} user(s) still hold role {name}")));
            }
            let r = sqlx::query("DELETE FROM roles WHERE name = ?")
                .bind(&name)
                .execute(&mut *conn)
                .await
                .map_err(map_sqlx)?;
            if r.rows_affected() == 0 {
                return Err(StoreError::NotFound);
            }
            append_events(conn, head, &[audit]).await?;
            AccessOut::Unit
        }
        AccessOp::CreateGrant(g, audit) => {
            sqlx::query(
                "INSERT INTO access_grants (id, user_id, object, record_id, team_id, access, reason, granted_by, \
                 created_at, expires_at, revoked_at, revoked_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(g.id.to_string())
            .bind(g.user_id.to_string())
            .bind(&g.object)
            .bind(opt_uuid(g.record_id))
            .bind(opt_uuid(g.team_id))
            .bind(&g.access)
            .bind(&g.reason)
            .bind(opt_uuid(g.granted_by))
            .bind(g.created_at)
            .bind(g.expires_at)
            .bind(g.revoked_at)
            .bind(opt_uuid(g.revoked_by))
            .execute(&mut *conn)
            .await
            .map_err(map_sqlx)?;
            append_events(conn, head, &[audit]).await?;
            AccessOut::Unit
        }
        AccessOp::RevokeGrant { id, at, by, audit } => {
            let r = sqlx::query(
                "UPDATE access_grants SET revoked_at = ?, revoked_by = ? WHERE id = ? AND revoked_at IS NULL",
            )
            .bind(at)
            .bind(opt_uuid(by))
            .bind(id.to_string())
            .execute(&mut *conn)
            .await
            .map_err(map_sqlx)?;
            if r.rows_affected() == 0 {
                let exists: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM access_grants WHERE id = ?")
                    .bind(id.to_string())
                    .fetch_one(&mut *conn)
                    .await
                    .map_err(map_sqlx)?;
                if exists == 0 {
                    return Err(StoreError::NotFound);
                }
                AccessOut::Bool(false)
            } else {
                append_events(conn, head, &[audit]).await?;
                AccessOut::Bool(true)
            }
        }
        AccessOp::LoginFailure { keys, now, forget_before } => {
            let mut rows = Vec::with_capacity(keys.len());
            for key in keys {
                let row = sqlx::query(
                    "INSERT INTO login_failures (key, failures, last_failure_at) VALUES (?, 1, ?) \
                     ON CONFLICT (key) DO UPDATE SET \
                     failures = CASE WHEN login_failures.last_failure_at < ? THEN 1 ELSE login_failures.failures + 1 END, \
                     last_failure_at = MAX(login_failures.last_failure_at, excluded.last_failure_at) \
                     RETURNING key, failures, last_failure_at",
                )
                .bind(&key)
                .bind(now)
                .bind(forget_before)
                .fetch_one(&mut *conn)
                .await
                .map_err(map_sqlx)?;
                rows.push(counter_from_row(&row)?);
            }
            AccessOut::Counters(rows)
        }
        AccessOp::ClearLoginFailures(key) => {
            sqlx::query("DELETE FROM login_failures WHERE key = ?")
                .bind(&key)
                .execute(&mut *conn)
                .await
                .map_err(map_sqlx)?;
            AccessOut::Unit
        }
    };
    Ok(OpOut::Access(out))
}

fn counter_from_row(row: &SqliteRow) -> StoreResult<LoginCounterRow> {
    Ok(LoginCounterRow {
        key: row.try_get("key").map_err(map_sqlx)?,
        failures: row.try_get("failures").map_err(map_sqlx)?,
        last_failure_at: row.try_get("last_failure_at").map_err(map_sqlx)?,
    })
}

pub(crate) async fn list_roles(pool: &ReadPool) -> StoreResult<Vec<RoleRow>> {
    let rows =
        sqlx::query("SELECT * FROM roles ORDER BY name").fetch_all(&mut *pool.get().await?).await.map_err(map_sqlx)?;
    rows.iter()
        .map(|row| {
            let def: String = row.try_get("definition").map_err(map_sqlx)?;
            Ok(RoleRow {
                name: row.try_get("name").map_err(map_sqlx)?,
                definition: serde_json::from_str(&def).map_err(internal)?,
                created_at: row.try_get("created_at").map_err(map_sqlx)?,
                updated_at: row.try_get("updated_at").map_err(map_sqlx)?,
            })
        })
        .collect()
}

fn grant_from_row(row: &SqliteRow) -> StoreResult<GrantRow> {
    Ok(GrantRow {
        id: uuid_col(row, "id")?,
        user_id: uuid_col(row, "user_id")?,
        object: row.try_get("object").map_err(map_sqlx)?,
        record_id: opt_uuid_col(row, "record_id")?,
        team_id: opt_uuid_col(row, "team_id")?,
        access: row.try_get("access").map_err(map_sqlx)?,
        reason: row.try_get("reason").map_err(map_sqlx)?,
        granted_by: opt_uuid_col(row, "granted_by")?,
        created_at: row.try_get("created_at").map_err(map_sqlx)?,
        expires_at: row.try_get("expires_at").map_err(map_sqlx)?,
        revoked_at: row.try_get("revoked_at").map_err(map_sqlx)?,
        revoked_by: opt_uuid_col(row, "revoked_by")?,
    })
}

pub(crate) async fn list_grants(pool: &ReadPool, active_at: Option<i64>) -> StoreResult<Vec<GrantRow>> {
    let rows = match active_at {
        Some(now) => sqlx::query(
            "SELECT * FROM access_grants WHERE revoked_at IS NULL AND expires_at > ? ORDER BY created_at DESC, id DESC",
        )
        .bind(now)
        .fetch_all(&mut *pool.get().await?)
        .await,
        None => {
            sqlx::query("SELECT * FROM access_grants ORDER BY created_at DESC, id DESC")
                .fetch_all(&mut *pool.get().await?)
                .await
        }
    }
    .map_err(map_sqlx)?;
    rows.iter().map(grant_from_row).collect()
}

pub(crate) async fn get_grant(pool: &ReadPool, id: Uuid) -> StoreResult<Option<GrantRow>> {
    let row = sqlx::query("SELECT * FROM access_grants WHERE id = ?")
        .bind(id.to_string())
        .fetch_optional(&mut *pool.get().await?)
        .await
        .map_err(map_sqlx)?;
    row.as_ref().map(grant_from_row).transpose()
}

pub(crate) async fn login_counters(pool: &ReadPool, keys: &[String]) -> StoreResult<Vec<LoginCounterRow>> {
    let mut out = Vec::with_capacity(keys.len());
    for key in keys {
        let row = sqlx::query("SELECT key, failures, last_failure_at FROM login_failures WHERE key = ?")
            .bind(key)
            .fetch_optional(&mut *pool.get().await?)
            .await
            .map_err(map_sqlx)?;
        if let Some(row) = row {
            out.push(counter_from_row(&row)?);
        }
    }
    Ok(out)
}
