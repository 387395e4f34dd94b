//! Backups of a PostgreSQL store with the server's own tools (PRODUCT.md R1, R2): `pg_dump` in
//! its custom format (one consistent snapshot, taken while the store stays in use) and
//! `pg_restore`. The password of the URL never reaches a command line (where other local users
//! could read it): the tools get the URL without it and the password in `PGPASSWORD`.

use custodian_store::{StoreError, StoreResult};
use sqlx::{AssertSqlSafe, Connection, PgConnection};
use std::path::Path;

/// `url` without its password, and the password.
fn split_password(url: &str) -> StoreResult<(String, Option<String>)> {
    let mut parsed = url::Url::parse(url).map_err(|e| StoreError::Internal(format!("invalid PostgreSQL URL: {e}")))?;
    // Percent-decoded as in the URL's userinfo, where '+' is a plus sign (form decoding would
    // make it a space).
    let password = parsed.password().map(|p| {
        let p = p.replace('+', "%2B");
        url::form_urlencoded::parse(format!("p={p}").as_bytes()).next().map(|(_, v)| v.into_owned()).unwrap_or_default()
    });
    if password.is_some() {
        let _ = parsed.set_password(None);
    }
    Ok((parsed.to_string(), password))
}

/// Runs a PostgreSQL client tool against `url` with `args`; its error output on failure.
async fn run_tool(tool: &str, url: &str, args: &[&std::ffi::OsStr]) -> StoreResult<()> {
    let (bare, password) = split_password(url)?;
    let mut command = tokio::process::Command::new(tool);
    command.args(args).arg(format!("--dbname={bare}")).kill_on_drop(true);
    command.env_remove("PGPASSWORD");
    if let Some(p) = password {
        command.env("PGPASSWORD", p);
    }
    let output = command.output().await.map_err(|e| {
        StoreError::Conflict(format!(
            "{tool} could not be run ({e}); install the PostgreSQL client tools of the server's version"
        ))
    })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let message: String = stderr.lines().take(5).collect::<Vec<_>>().join("; ");
        return Err(StoreError::Unavailable(format!("{tool} failed: {message}")));
    }
    Ok(())
}

/// A consistent dump of the database at `url` into the new file `dest` (custom format).
pub async fn dump(url: &str, dest: &Path) -> StoreResult<()> {
    let file = format!("--file={}", dest.display());
    let args = ["--format=custom", "--no-owner", "--no-privileges", file.as_str()];
    let args: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
    run_tool("pg_dump", url, &args).await
}

/// Restores the dump `file` into the database at `url`, in one transaction (all or nothing).
pub async fn restore(url: &str, file: &Path) -> StoreResult<()> {
    let args: Vec<&std::ffi::OsStr> =
        ["--no-owner", "--no-privileges", "--exit-on-error", "--single-transaction", "--no-comments"]
            .iter()
            .map(std::ffi::OsStr::new)
            .chain(std::iter::once(file.as_os_str()))
            .collect();
    run_tool("pg_restore", url, &args).await
}

/// Whether the database at `url` holds no tables of its own (a restore target must not).
pub async fn is_empty(url: &str) -> StoreResult<bool> {
    let mut conn = PgConnection::connect(url).await.map_err(|e| StoreError::Unavailable(e.to_string()))?;
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')",
    )
    .fetch_one(&mut conn)
    .await
    .map_err(|e| StoreError::Unavailable(e.to_string()))?;
    let _ = conn.close().await;
    Ok(tables == 0)
}

/// `url` with another database name.
pub fn url_with_database(url: &str, name: &str) -> StoreResult<String> {
    let mut parsed = url::Url::parse(url).map_err(|e| StoreError::Internal(format!("invalid PostgreSQL URL: {e}")))?;
    parsed.set_path(&format!("/{name}"));
    Ok(parsed.to_string())
}

/// Runs one statement on the server of `url` about the database `name` (letters, digits and
/// underscores only: it is spliced into the statement).
async fn on_server(url: &str, name: &str, sql: String) -> StoreResult<()> {
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(StoreError::Internal("invalid database name".into()));
    }
    let mut conn = PgConnection::connect(url).await.map_err(|e| StoreError::Unavailable(e.to_string()))?;
    let done = sqlx::query(AssertSqlSafe(sql)).execute(&mut conn).await.map(|_| ());
    let _ = conn.close().await;
    done.map_err(|e| StoreError::Conflict(format!("{e} (the role needs CREATEDB for scratch databases)")))
}

/// Creates a new empty database `name` on the server of `url`; returns its URL. The role of
/// `url` needs the CREATEDB privilege.
pub async fn create_database(url: &str, name: &str) -> StoreResult<String> {
    on_server(url, name, format!("CREATE DATABASE \"{name}\"")).await?;
    url_with_database(url, name)
}

/// Drops the database `name` on the server of `url` (its connections closed).
pub async fn drop_database(url: &str, name: &str) -> StoreResult<()> {
    on_server(url, name, format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).await
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn passwords_leave_the_url() {
        let (bare, p) = split_password("postgres://app:s%40cret@db.example:5432/crm?sslmode=require").unwrap();
        assert_eq!(bare, "postgres://app@db.example:5432/crm?sslmode=require");
        assert_eq!(p.as_deref(), Some("s@cret"));
        let (_, p) = split_password("postgres://app:a+b%2Bc@db/crm").unwrap();
        assert_eq!(p.as_deref(), Some("a+b+c"));
        let (bare, p) = split_password("postgres://postgres@127.0.0.1:5432/test").unwrap();
        assert_eq!((bare.as_str(), p), ("postgres://postgres@127.0.0.1:5432/test", None));
        assert_eq!(url_with_database("postgres://a@h:1/x?s=1", "y").unwrap(), "postgres://a@h:1/y?s=1");
    }
}
