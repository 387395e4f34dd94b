//! Who may do what in the database. The triggers of the migrations refuse UPDATE, DELETE and
//! TRUNCATE on the audit events and record versions, but a table's owner (or a superuser) can
//! drop or disable triggers. So the schema is owned by the role that migrates, and servers run
//! as an application role that [`PostgresStore::grant_app_role`] gives exactly what a server
//! needs: it may read and append audit events and versions, never change or remove them, and it
//! owns nothing, so it cannot take the triggers away either.
//!
//! A server whose role could rewrite the log (the owner, a superuser, or a role holding UPDATE,
//! DELETE or TRUNCATE on `audit_events`) still runs — a single-user installation may well
//! connect as `postgres` — but says so at start-up ([`PostgresStore::audit_protection`]).

use custodian_store::{StoreError, StoreResult};
use sqlx::{AssertSqlSafe, PgPool, Row};

use crate::{MIGRATOR, PostgresStore, map_sqlx};

/// Tables whose rows are history: the application role may read and append, nothing else.
const APPEND_ONLY: &[&str] = &["audit_events", "record_versions"];

/// What the connected role could do to the audit log beyond appending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditProtection {
    /// The role is a superuser (privileges do not apply to it).
    pub superuser: bool,
    /// The role owns `audit_events` (or is a member of its owner): it can drop the triggers.
    pub owner: bool,
    /// The role holds UPDATE, DELETE or TRUNCATE on `audit_events`.
    pub may_rewrite: bool,
}

impl AuditProtection {
    /// Only the triggers stand between this role and a rewritten log.
    pub fn relies_on_triggers_alone(&self) -> bool {
        self.superuser || self.owner || self.may_rewrite
    }
}

/// Migrations not yet applied to the database (all of them on a new database).
pub(crate) async fn pending_migrations(pool: &PgPool) -> StoreResult<usize> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(pool)
        .await
        .map_err(map_sqlx)?;
    let applied: Vec<i64> = if exists {
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
            .fetch_all(pool)
            .await
            .map_err(map_sqlx)?
    } else {
        Vec::new()
    };
    Ok(MIGRATOR.iter().filter(|m| !applied.contains(&m.version)).count())
}

/// Applies pending migrations. With none pending nothing is run, so a server connected as the
/// application role (which may not create tables) starts on an up-to-date database.
pub(crate) async fn migrate(pool: &PgPool) -> StoreResult<()> {
    let pending = pending_migrations(pool).await?;
    if pending == 0 {
        return Ok(());
    }
    MIGRATOR.run(pool).await.map_err(|e| {
        let denied = matches!(&e, sqlx::migrate::MigrateError::Execute(sqlx::Error::Database(db))
            if db.code().as_deref() == Some("42501"));
        if denied {
            StoreError::Internal(format!(
                "{pending} database migration(s) pending, and this role may not apply them: run \
                 `custodian migrate --database-url <the schema owner's URL> --app-role <this role>` first ({e})"
            ))
        } else {
            StoreError::Internal(format!("migration failed: {e}"))
        }
    })
}

/// Whether `name` can be spliced into SQL as a role name without quoting surprises.
fn is_role_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.len() <= 63
}

impl PostgresStore {
    /// What the connected role could do to the audit log beyond appending.
    pub async fn audit_protection(&self) -> StoreResult<AuditProtection> {
        audit_protection(&self.pool).await
    }

    /// Gives the existing role `role` the privileges a server needs on this database, run by
    /// the role that owns the schema (the one `custodian migrate` connects as), after the
    /// migrations. Every table: SELECT, INSERT, UPDATE, DELETE, except the append-only ones
    /// (audit events, record versions: SELECT and INSERT) and the migrations table (SELECT);
    /// TRUNCATE, TRIGGER and REFERENCES nowhere. Run it again after each upgrade, so that new
    /// tables are granted too. Refuses a superuser, the connected role itself, and a role that
    /// owns the tables: privileges do not bind them.
    pub async fn grant_app_role(&self, role: &str) -> StoreResult<()> {
        if !is_role_name(role) {
            return Err(StoreError::Internal(format!(
                "{role:?} is not a plain role name (lower-case letters, digits and underscores)"
            )));
        }
        let mut tx = self.pool.begin().await.map_err(map_sqlx)?;
        let found = sqlx::query(
            "SELECT r.rolsuper, r.rolname = current_user AS is_me, \
                    pg_has_role(r.oid, (SELECT tableowner FROM pg_tables \
                                        WHERE schemaname = current_schema() AND tablename = 'audit_events'), 'USAGE') AS owns, \
                    current_schema() AS schema \
             FROM pg_roles r WHERE r.rolname = $1",
        )
        .bind(role)
        .fetch_optional(&mut *tx)
        .await
        .map_err(map_sqlx)?;
        let Some(found) = found else {
            return Err(StoreError::Internal(format!(
                "role {role} does not exist: create it first (CREATE ROLE {role} LOGIN PASSWORD '…')"
            )));
        };
        let (superuser, is_me, owns): (bool, bool, bool) = (
            found.try_get("rolsuper").map_err(map_sqlx)?,
            found.try_get("is_me").map_err(map_sqlx)?,
            found.try_get::<Option<bool>, _>("owns").map_err(map_sqlx)?.unwrap_or(false),
        );
        if superuser || is_me || owns {
            return Err(StoreError::Internal(format!(
                "role {role} is a superuser, the connected role or an owner of the tables: privileges would not \
                 bind it; give the server a role of its own"
            )));
        }
        let schema: String = found.try_get("schema").map_err(map_sqlx)?;
        if !is_role_name(&schema) {
            return Err(StoreError::Internal(format!("unexpected schema name {schema:?}")));
        }
        let mut statements = vec![
            format!("GRANT USAGE ON SCHEMA {schema} TO {role}"),
            format!("REVOKE ALL ON ALL TABLES IN SCHEMA {schema} FROM {role}"),
            format!("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {role}"),
            format!("GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA {schema} TO {role}"),
            format!("REVOKE INSERT, UPDATE, DELETE ON {schema}._sqlx_migrations FROM {role}"),
        ];
        for table in APPEND_ONLY {
            statements.push(format!("REVOKE UPDATE, DELETE ON {schema}.{table} FROM {role}"));
        }
        for sql in statements {
            sqlx::query(AssertSqlSafe(sql)).execute(&mut *tx).await.map_err(map_sqlx)?;
        }
        tx.commit().await.map_err(map_sqlx)?;
        Ok(())
    }
}

async fn audit_protection(pool: &PgPool) -> StoreResult<AuditProtection> {
    let row = sqlx::query(
        "SELECT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) AS superuser, \
                pg_has_role(current_user, (SELECT tableowner FROM pg_tables \
                                           WHERE schemaname = current_schema() AND tablename = 'audit_events'), 'USAGE') AS owner, \
                has_table_privilege('audit_events', 'UPDATE') OR has_table_privilege('audit_events', 'DELETE') \
                    OR has_table_privilege('audit_events', 'TRUNCATE') AS may_rewrite",
    )
    .fetch_one(pool)
    .await
    .map_err(map_sqlx)?;
    let flag = |name: &str| -> StoreResult<bool> {
        Ok(row.try_get::<Option<bool>, _>(name).map_err(map_sqlx)?.unwrap_or(false))
    };
    Ok(AuditProtection { superuser: flag("superuser")?, owner: flag("owner")?, may_rewrite: flag("may_rewrite")? })
}

/// Says at start-up when only the triggers protect the audit log from this server's role.
pub(crate) async fn warn_if_unprotected(pool: &PgPool) {
    match audit_protection(pool).await {
        Ok(p) if p.relies_on_triggers_alone() => tracing::warn!(
            superuser = p.superuser,
            owner = p.owner,
            may_rewrite = p.may_rewrite,
            "this server's database role could disable the audit log's triggers or rewrite it; run servers as an \
             application role prepared with `custodian migrate --app-role`"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "could not check the database role's privileges on the audit log"),
    }
}

#[cfg(test)]
mod tests {
    use super::is_role_name;

    #[test]
    fn role_names_are_plain() {
        for ok in ["custodian_app", "app2", "_x"] {
            assert!(is_role_name(ok), "{ok}");
        }
        for bad in ["", "App", "2app", "app; DROP TABLE x", "app\"", "a-b", &"a".repeat(64)] {
            assert!(!is_role_name(bad), "{bad}");
        }
    }
}
