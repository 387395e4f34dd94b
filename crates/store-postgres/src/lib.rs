//! PostgreSQL backend: for deployments with several servers sharing one database.
//!
//! Record writes and audit appends are group-committed by one writer task per server (see
//! `writer`); every other mutation is one transaction on a pooled connection. Optimistic version checks are
//! `UPDATE … WHERE version = $expected` (row locks make concurrent writers of one record queue
//! up, and the loser sees the new version); unique keys are a primary key in `unique_keys`, so
//! the database decides which of two concurrent writers holds a value; the audit chain stays
//! linear across servers because every appending transaction locks the single `audit_head` row
//! (`SELECT … FOR UPDATE`) and links its events to the head it read.
//!
//! The table layout mirrors the SQLite backend; semantics are pinned by the conformance suite in
//! `custodian-store-tests`.
//!
//! The writer's statements that read tables for a whole group (`jsonb_to_recordset` or
//! `= ANY(array)` in a join or lookup) run as unnamed statements (`.persistent(false)`),
//! planned at each call for its actual parameters. Statements run for each request or record
//! (lookups of a record, of references, of the strong keys and match keys of a create, lists)
//! stay prepared: planning a query on `records`, with its dozens of partial field indexes, took
//! 0.5–4 ms, more than running it. Lists with a full-text search are the exception (planned
//! for their terms, see `list_records`).
//! A named statement switches to one generic plan after five calls; on a new database that plan
//! was made while the tables were empty (seq scans costed at zero) and stayed in use as they grew:
//! a strong-key lookup of a 1000-record import chunk took 1–6 s, and creates ran at half speed,
//! until autovacuum's first ANALYZE replaced it. The prepared plans are kept honest by `stats`,
//! which analyzes tables as they grow (and ANALYZE makes PostgreSQL plan them again).

use async_trait::async_trait;
use custodian_store::{
    AlertRow, AlertRuleRow, AuditQuery, Bucket, BucketQuery, DeliveryOutcome, NotificationRow, OutboxRow,
};
use custodian_store::{
    AuditChainRow, AuditDraft, AuditRow, CandidateFields, CandidateRow, CheckpointClaimOutcome, CheckpointClaimRequest,
    CheckpointClaimRow, CheckpointRange, Cursor, CustomFieldRow, DepartmentRow, DismissalRow, GrantRow, ListQuery,
    LoginCounterRow, MergeRow, MfaChallengeRow, MfaEffect, MfaFactor, RecordPage, RecordWrite, RoleRow, RowScope,
    ScanJobRow, SessionRow, Store, StoreError, StoreResult, StoredRecord, StoredVersion, TeamRow, UserMfaRow, UserRow,
    WrappedKeyRow, WriteAction, WriteBatch,
};
use serde_json::{Map, Value};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow, PgSslMode};
use sqlx::types::Json;
use sqlx::{AssertSqlSafe, PgConnection, PgPool, Row};
use std::net::IpAddr;
use std::time::Duration;
use uuid::Uuid;

mod access;
mod audit;
pub mod backup;
mod duplicates;
mod jobs;
mod mfa;
mod monitor;
mod roles;
mod sql;
mod stats;
mod writer;
pub use roles::AuditProtection;
use sql::{Bind, QueryParts};

/// Default size of the connection pool.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 16;

/// The most keys or ids of an entry-check look-up that runs with a generic plan (a single
/// write looks up a dozen match keys and at most 50 candidates).
const GENERIC_PLAN_MAX_ITEMS: usize = 100;

/// Connections of the entry check's look-up pool beside a main pool of `max_connections`: a
/// quarter as many, at least one.
fn lookup_pool_size(max_connections: u32) -> u32 {
    (max_connections / 4).max(1)
}

/// The settings both pools share, for a pool of `max_connections`. No ping before each use (a
/// round trip per query): a connection broken by a server restart fails its next query (503,
/// `unavailable`) and is discarded.
fn pool_options(max_connections: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .test_before_acquire(false)
        .min_connections(0)
        .acquire_timeout(Duration::from_secs(10))
        .idle_timeout(Duration::from_secs(300))
}

/// Migrations embedded at compile time (no database needed to build).
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

pub struct PostgresStore {
    pool: PgPool,
    /// Connections that always use a statement's generic plan (`plan_cache_mode`), for the
    /// entry check's small look-ups (`lookup_pool_size` of them, opened when first needed; see
    /// `lookups_for`). Those statements take their keys or ids as arrays and read each through
    /// a key of an index; PostgreSQL's own choice planned them again on every execution,
    /// because a custom plan knows the array's length and so always looked cheaper than the
    /// generic one (planning, mostly the look at the ~40 indexes of `records`, was 42% of the
    /// server's CPU in HTTP creates). Lists stay on `pool`: their plans depend on the values.
    lookups: PgPool,
    /// The URL the store was opened with (for `pg_dump`; never shown: it may hold a password).
    url: String,
    /// Group commit of record writes and audit appends (see `writer`).
    writer: writer::Writer,
}

impl std::fmt::Debug for PostgresStore {
    // The pool's options hold the connection URL, which may contain a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore").field("connections", &self.pool.size()).finish_non_exhaustive()
    }
}

fn internal(e: impl std::fmt::Display) -> StoreError {
    StoreError::Internal(e.to_string())
}

/// Maps a driver error: lost or refused connections, exhausted pools, shutdowns, lock and
/// serialisation failures are `Unavailable` (worth retrying); everything else is `Internal`.
fn map_sqlx(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::BeginFailed => StoreError::Unavailable(e.to_string()),
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            // Connection exceptions (08xxx) except protocol violations, which are bugs.
            let unavailable = (code.starts_with("08") && code != "08P01")
                || code.starts_with("53") // insufficient resources
                || code.starts_with("57P") // admin shutdown, crash shutdown, cannot connect now
                || matches!(code.as_str(), "40001" | "40P01" | "55P03" | "57014");
            if unavailable {
                return StoreError::Unavailable(e.to_string());
            }
            if code == "23505" {
                let what = match db.constraint() {
                    Some("users_username_key" | "users_pkey") => Some("user"),
                    Some("custom_fields_pkey") => Some("custom field"),
                    Some("departments_pkey") => Some("department"),
                    Some("teams_pkey") => Some("team"),
                    Some("sessions_pkey") => Some("session"),
                    Some("wrapped_keys_pkey") => Some("wrapped key"),
                    Some("records_pkey") => Some("record"),
                    _ => None,
                };
                if let Some(what) = what {
                    return StoreError::AlreadyExists(what.to_owned());
                }
            }
            StoreError::Internal(e.to_string())
        }
        _ => StoreError::Internal(e.to_string()),
    }
}

/// The connection options with TLS off for a server on this machine (a loopback address, a
/// Unix socket or `localhost`) when neither the URL nor `PGSSLMODE` asks for a TLS mode. The
/// default mode, `prefer`, encrypts without checking the server's certificate: on loopback
/// that protects against nobody, and the encryption cost about as much CPU per request as the
/// server's own work. Any mode given explicitly is kept, as is `prefer` for remote servers.
fn plain_on_loopback(url: &str, options: PgConnectOptions) -> PgConnectOptions {
    let query = url.split_once('?').map(|(_, q)| q).unwrap_or_default();
    let asked = std::env::var_os("PGSSLMODE").is_some()
        || query.split('&').any(|pair| {
            let key = pair.split_once('=').map_or(pair, |(k, _)| k);
            key.eq_ignore_ascii_case("sslmode") || key.eq_ignore_ascii_case("ssl-mode")
        });
    let host = options.get_host();
    let local = host.starts_with('/')
        || host.eq_ignore_ascii_case("localhost")
        || host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if !asked && local && matches!(options.get_ssl_mode(), PgSslMode::Prefer) {
        options.ssl_mode(PgSslMode::Disable)
    } else {
        options
    }
}

impl PostgresStore {
    /// Connects a pool of up to [`DEFAULT_MAX_CONNECTIONS`] connections and runs pending
    /// migrations.
    pub async fn connect(url: &str) -> StoreResult<PostgresStore> {
        Self::connect_with_pool_size(url, DEFAULT_MAX_CONNECTIONS).await
    }

    /// Like [`PostgresStore::connect`] with a chosen pool size (tests use small pools so that
    /// many test databases fit under the server's connection limit).
    pub async fn connect_with_pool_size(url: &str, max_connections: u32) -> StoreResult<PostgresStore> {
        Self::open(url, max_connections, false).await
    }

    /// Connects for reading only, as the audit verifier and prover do: nothing is migrated and
    /// every session is read-only (`default_transaction_read_only`; a write fails in the
    /// database), so checking the evidence never changes it.
    pub async fn connect_read_only(url: &str) -> StoreResult<PostgresStore> {
        Self::open(url, 2, true).await
    }

    async fn open(url: &str, max_connections: u32, read_only: bool) -> StoreResult<PostgresStore> {
        let options: sqlx::postgres::PgConnectOptions =
            url.parse().map_err(|e: sqlx::Error| StoreError::Internal(format!("invalid PostgreSQL URL: {e}")))?;
        // JIT compilation costs more than it saves on these short OLTP queries.
        let options = options.options([("jit", "off")]);
        let options = if read_only { options.options([("default_transaction_read_only", "on")]) } else { options };
        let options = plain_on_loopback(url, options);
        let writer_options = options.clone();
        let lookups = pool_options(lookup_pool_size(max_connections))
            .connect_lazy_with(options.clone().options([("plan_cache_mode", "force_generic_plan")]));
        let pool = pool_options(max_connections.max(1)).connect_with(options).await.map_err(|e| match e {
            sqlx::Error::Configuration(_) => StoreError::Internal(format!("invalid PostgreSQL URL: {e}")),
            other => match map_sqlx(other) {
                StoreError::Internal(m) => StoreError::Unavailable(m),
                mapped => mapped,
            },
        })?;
        if !read_only {
            roles::migrate(&pool).await?;
            roles::warn_if_unprotected(&pool).await;
        }
        let stats = stats::StatsKeeper::spawn(pool.clone());
        Ok(PostgresStore { pool, lookups, url: url.to_owned(), writer: writer::Writer::spawn(writer_options, stats)? })
    }

    /// Where an entry-check look-up of `items` keys or ids runs: a small one (a single write's
    /// check) on the generic-plan connections, since planning it cost more than running it; a
    /// large one (a batch's) on the main pool, planned for its arrays: its planning is shared
    /// by thousands of keys, and with generic plans a 1000-record batch took longer to prepare
    /// (170 -> 250 us/record).
    fn lookups_for(&self, items: usize) -> &PgPool {
        if items <= GENERIC_PLAN_MAX_ITEMS { &self.lookups } else { &self.pool }
    }

    /// The connections of the entry check's look-ups (see the field), for tests of their plans.
    #[doc(hidden)]
    pub fn lookup_pool(&self) -> &PgPool {
        &self.lookups
    }

    /// The underlying pool, for operational tooling and backend-specific tests (for example
    /// checking that the database itself refuses to rewrite audit events).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// PostgreSQL's plan of the statement that lists one page for `query` (`EXPLAIN`, one line
    /// per row), for diagnosing a slow list and for tests of the plans that must not regress.
    pub async fn explain_list(&self, query: &ListQuery) -> StoreResult<String> {
        let ListStatement { text, parts, .. } = list_statement(query)?;
        let rows = sql::bind_all(sqlx::query(AssertSqlSafe(format!("EXPLAIN {text}"))), parts.into_binds())
            .persistent(false)
            .fetch_all(&self.pool)
            .await
            .map_err(map_sqlx)?;
        let lines: Vec<String> =
            rows.iter().map(|r| r.try_get::<String, _>(0)).collect::<Result<_, _>>().map_err(map_sqlx)?;
        Ok(lines.join("\n"))
    }

    /// Closes every connection of the pools.
    pub async fn close(&self) {
        self.lookups.close().await;
        self.pool.close().await;
    }

    async fn begin(&self) -> StoreResult<sqlx::Transaction<'static, sqlx::Postgres>> {
        self.pool.begin().await.map_err(map_sqlx)
    }
}

async fn commit(tx: sqlx::Transaction<'static, sqlx::Postgres>) -> StoreResult<()> {
    tx.commit().await.map_err(map_sqlx)
}

// ---- audit chain -------------------------------------------------------------------------

/// Links `drafts` into the chain. Locks the chain head until the surrounding transaction ends,
/// so concurrent appenders (also on other servers) queue up behind each other.
async fn append_events(conn: &mut PgConnection, drafts: &[AuditDraft]) -> StoreResult<Vec<i64>> {
    if drafts.is_empty() {
        return Ok(Vec::new());
    }
    let head = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE")
        .fetch_optional(&mut *conn)
        .await
        .map_err(map_sqlx)?
        .ok_or_else(|| internal("the audit chain head is missing"))?;
    let mut seq: i64 = head.try_get("seq").map_err(map_sqlx)?;
    let mut prev_hash: Vec<u8> = head.try_get("hash").map_err(map_sqlx)?;
    let mut seqs = Vec::with_capacity(drafts.len());
    for d in drafts {
        seq += 1;
        let body = d.canonical_body();
        let hash = custodian_core::audit::chain_hash(&prev_hash, seq, body.as_bytes()).to_vec();
        sqlx::query(
            "INSERT INTO audit_events (seq, at, actor_id, action, object, record_id, request_id, body, prev_hash, hash) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(seq)
        .bind(d.at)
        .bind(d.actor_id)
        .bind(&d.action)
        .bind(&d.object)
        .bind(d.record_id)
        .bind(&d.request_id)
        .bind(&body)
        .bind(&prev_hash)
        .bind(&hash)
        .execute(&mut *conn)
        .await
        .map_err(map_sqlx)?;
        prev_hash = hash;
        seqs.push(seq);
    }
    sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
        .bind(seq)
        .bind(&prev_hash)
        .execute(&mut *conn)
        .await
        .map_err(map_sqlx)?;
    Ok(seqs)
}

// ---- record writes -----------------------------------------------------------------------

async fn apply_record_write(conn: &mut PgConnection, w: &RecordWrite) -> StoreResult<()> {
    let r = &w.record;
    let lexemes = sql::search_lexemes(&w.search_text);
    match w.expected_version {
        None => {
            let res = sqlx::query(
                "INSERT INTO records (id, object, version, owner_id, team_id, created_at, created_by, updated_at, updated_by, \
                 deleted_at, fields, search) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, array_to_tsvector($12::text[])) \
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(r.id)
            .bind(&r.object)
            .bind(r.version)
            .bind(r.owner_id)
            .bind(r.team_id)
            .bind(r.created_at)
            .bind(r.created_by)
            .bind(r.updated_at)
            .bind(r.updated_by)
            .bind(r.deleted_at)
            .bind(Json(&r.fields))
            .bind(&lexemes)
            .execute(&mut *conn)
            .await
            .map_err(map_sqlx)?;
            if res.rows_affected() == 0 {
                return Err(StoreError::AlreadyExists(format!("record {}", r.id)));
            }
        }
        Some(expected) => {
            let res = sqlx::query(
                "UPDATE records SET version = $1, owner_id = $2, team_id = $3, updated_at = $4, updated_by = $5, \
                 deleted_at = $6, fields = $7, search = array_to_tsvector($8::text[]) \
                 WHERE id = $9 AND object = $10 AND version = $11",
            )
            .bind(r.version)
            .bind(r.owner_id)
            .bind(r.team_id)
            .bind(r.updated_at)
            .bind(r.updated_by)
            .bind(r.deleted_at)
            .bind(Json(&r.fields))
            .bind(&lexemes)
            .bind(r.id)
            .bind(&r.object)
            .bind(expected)
            .execute(&mut *conn)
            .await
            .map_err(map_sqlx)?;
            if res.rows_affected() == 0 {
                // Read committed: this sees the version the winning writer committed.
                let current: Option<i64> =
                    sqlx::query_scalar("SELECT version FROM records WHERE id = $1 AND object = $2")
                        .bind(r.id)
                        .bind(&r.object)
                        .fetch_optional(&mut *conn)
                        .await
                        .map_err(map_sqlx)?;
                return Err(match current {
                    Some(current) => StoreError::VersionConflict { current },
                    None => StoreError::NotFound,
                });
            }
        }
    }

    let res = sqlx::query(
        "INSERT INTO record_versions (record_id, version, object, action, owner_id, team_id, deleted_at, fields, changed_at, changed_by) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (record_id, version) DO NOTHING",
    )
    .bind(r.id)
    .bind(r.version)
    .bind(&r.object)
    .bind(w.action.as_str())
    .bind(r.owner_id)
    .bind(r.team_id)
    .bind(r.deleted_at)
    .bind(Json(&r.fields))
    .bind(r.updated_at)
    .bind(r.updated_by)
    .execute(&mut *conn)
    .await
    .map_err(map_sqlx)?;
    if res.rows_affected() == 0 {
        // The new version number was already written: the writer did not increment it.
        return Err(StoreError::VersionConflict { current: r.version });
    }

    if w.expected_version.is_some() {
        sqlx::query("DELETE FROM blind_indexes WHERE record_id = $1")
            .bind(r.id)
            .execute(&mut *conn)
            .await
            .map_err(map_sqlx)?;
        sqlx::query("DELETE FROM unique_keys WHERE record_id = $1")
            .bind(r.id)
            .execute(&mut *conn)
            .await
            .map_err(map_sqlx)?;
    }
    if !w.blind_indexes.is_empty() {
        let fields: Vec<String> = w.blind_indexes.iter().map(|b| b.field.clone()).collect();
        let digests: Vec<Vec<u8>> = w.blind_indexes.iter().map(|b| b.digest.clone()).collect();
        sqlx::query(
            "INSERT INTO blind_indexes (object, field, digest, record_id) \
             SELECT $1, f, d, $2 FROM UNNEST($3::text[], $4::bytea[]) AS t(f, d) ON CONFLICT DO NOTHING",
        )
        .bind(&r.object)
        .bind(r.id)
        .bind(fields)
        .bind(digests)
        .execute(&mut *conn)
        .await
        .map_err(map_sqlx)?;
    }
    for u in &w.unique_keys {
        claim_unique_key(conn, &r.object, &u.field, &u.digest, r.id).await?;
    }
    Ok(())
}

/// Claims a unique value for `record_id`. `ON CONFLICT DO NOTHING` waits for a concurrent,
/// uncommitted claim of the same value and then either inserts (the other rolled back) or
/// conflicts (the other committed): two writers can never both hold a value.
async fn claim_unique_key(
    conn: &mut PgConnection,
    object: &str,
    field: &str,
    digest: &[u8],
    record_id: Uuid,
) -> StoreResult<()> {
    for _attempt in 0..3 {
        let res = sqlx::query(
            "INSERT INTO unique_keys (object, field, digest, record_id) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (object, field, digest) DO NOTHING",
        )
        .bind(object)
        .bind(field)
        .bind(digest)
        .bind(record_id)
        .execute(&mut *conn)
        .await
        .map_err(map_sqlx)?;
        if res.rows_affected() == 1 {
            return Ok(());
        }
        let holder: Option<Uuid> =
            sqlx::query_scalar("SELECT record_id FROM unique_keys WHERE object = $1 AND field = $2 AND digest = $3")
                .bind(object)
                .bind(field)
                .bind(digest)
                .fetch_optional(&mut *conn)
                .await
                .map_err(map_sqlx)?;
        match holder {
            // The same value listed twice for this record.
            Some(h) if h == record_id => return Ok(()),
            Some(h) => {
                return Err(StoreError::UniqueViolation {
                    object: object.to_owned(),
                    field: field.to_owned(),
                    holder: Some(h),
                });
            }
            // The holder released it between our insert and our look-up: try again.
            None => continue,
        }
    }
    Err(StoreError::UniqueViolation { object: object.to_owned(), field: field.to_owned(), holder: None })
}

// ---- rows ----------------------------------------------------------------------------------

const RECORD_COLUMNS: &str = "r.id, r.object, r.version, r.owner_id, r.team_id, r.created_at, r.created_by, r.updated_at, r.updated_by, r.deleted_at, r.fields";

fn fields_of(row: &PgRow) -> StoreResult<Map<String, Value>> {
    let Json(v): Json<Value> = row.try_get("fields").map_err(map_sqlx)?;
    fields_object(v)
}

/// A record's `fields` column as the object it must be.
fn fields_object(v: Value) -> StoreResult<Map<String, Value>> {
    match v {
        Value::Object(m) => Ok(m),
        _ => Err(internal("record fields are not a JSON object")),
    }
}

/// The statement listing one page for a query.
struct ListStatement {
    text: String,
    parts: QueryParts,
    sort: sql::SortExpr,
    limit: u32,
}

fn list_statement(query: &ListQuery) -> StoreResult<ListStatement> {
    let mut parts = QueryParts::default();
    // Not with field filters: their partial indexes' predicate `object = '…'` joins the plan
    // beside the `ANY`, the object's share is counted twice, and a filtered page was planned as
    // a sort of every match (`?city=` at 1M: p99 76 ms). Bounds on the id itself (a scan's
    // ranges, a job's next page) are conditions of the (object, id) index.
    let by_id = matches!(query.sort.column, custodian_store::Column::Id)
        && query
            .filters
            .iter()
            .all(|f| matches!(f, custodian_store::Filter::Column { column: custodian_store::Column::Id, .. }));
    sql::push_list_conditions_ordered(&mut parts, query, by_id)?;
    let sort = sql::sort_expr(&mut parts, &query.sort.column)?;
    if let Some(after) = &query.after {
        sql::push_keyset(&mut parts, &sort, query.sort.descending, after)?;
    }
    let dir = if query.sort.descending { "DESC" } else { "ASC" };
    let limit = query.limit.clamp(1, 1000);
    let limit_p = parts.bind(Bind::Int(i64::from(limit) + 1));
    // By id: `r.object` leads the order (see `push_list_conditions_ordered`).
    // Ties are broken by id; a list in id order has none.
    let order = if by_id {
        format!("r.object {dir}, r.id {dir}")
    } else if matches!(query.sort.column, custodian_store::Column::Id) {
        format!("r.id {dir}")
    } else {
        format!("{} {dir}, r.id {dir}", sort.expr)
    };
    let text = format!(
        "SELECT {RECORD_COLUMNS}, {select} AS sort_key FROM records r WHERE {where_sql} ORDER BY {order} LIMIT {limit_p}",
        select = sort.select,
        where_sql = parts.where_sql(),
    );
    Ok(ListStatement { text, parts, sort, limit })
}

fn record_from_row(row: &PgRow) -> StoreResult<StoredRecord> {
    Ok(StoredRecord {
        id: row.try_get("id").map_err(map_sqlx)?,
        object: row.try_get("object").map_err(map_sqlx)?,
        version: row.try_get("version").map_err(map_sqlx)?,
        owner_id: row.try_get("owner_id").map_err(map_sqlx)?,
        team_id: row.try_get("team_id").map_err(map_sqlx)?,
        created_at: row.try_get("created_at").map_err(map_sqlx)?,
        created_by: row.try_get("created_by").map_err(map_sqlx)?,
        updated_at: row.try_get("updated_at").map_err(map_sqlx)?,
        updated_by: row.try_get("updated_by").map_err(map_sqlx)?,
        deleted_at: row.try_get("deleted_at").map_err(map_sqlx)?,
        fields: fields_of(row)?,
    })
}

fn version_from_row(row: &PgRow) -> StoreResult<StoredVersion> {
    let action: String = row.try_get("action").map_err(map_sqlx)?;
    Ok(StoredVersion {
        record_id: row.try_get("record_id").map_err(map_sqlx)?,
        object: row.try_get("object").map_err(map_sqlx)?,
        version: row.try_get("version").map_err(map_sqlx)?,
        action: WriteAction::parse(&action).ok_or_else(|| internal("unknown version action"))?,
        owner_id: row.try_get("owner_id").map_err(map_sqlx)?,
        team_id: row.try_get("team_id").map_err(map_sqlx)?,
        deleted_at: row.try_get("deleted_at").map_err(map_sqlx)?,
        fields: fields_of(row)?,
        changed_at: row.try_get("changed_at").map_err(map_sqlx)?,
        changed_by: row.try_get("changed_by").map_err(map_sqlx)?,
    })
}

fn user_from_row(row: &PgRow) -> StoreResult<UserRow> {
    user_from_columns(row, "")
}

/// A user from columns named `{prefix}id`, `{prefix}username`, … (a prefix when joined).
fn user_from_columns(row: &PgRow, prefix: &str) -> StoreResult<UserRow> {
    let col = |name: &str| format!("{prefix}{name}");
    Ok(UserRow {
        id: row.try_get(col("id").as_str()).map_err(map_sqlx)?,
        username: row.try_get(col("username").as_str()).map_err(map_sqlx)?,
        display_name: row.try_get(col("display_name").as_str()).map_err(map_sqlx)?,
        password_hash: row.try_get(col("password_hash").as_str()).map_err(map_sqlx)?,
        role: row.try_get(col("role").as_str()).map_err(map_sqlx)?,
        department_id: row.try_get(col("department_id").as_str()).map_err(map_sqlx)?,
        team_id: row.try_get(col("team_id").as_str()).map_err(map_sqlx)?,
        status: row.try_get(col("status").as_str()).map_err(map_sqlx)?,
        created_at: row.try_get(col("created_at").as_str()).map_err(map_sqlx)?,
        email: row.try_get(col("email").as_str()).map_err(map_sqlx)?,
    })
}

fn audit_from_row(row: &PgRow) -> StoreResult<AuditRow> {
    Ok(AuditRow {
        seq: row.try_get("seq").map_err(map_sqlx)?,
        at: row.try_get("at").map_err(map_sqlx)?,
        actor_id: row.try_get("actor_id").map_err(map_sqlx)?,
        action: row.try_get("action").map_err(map_sqlx)?,
        object: row.try_get("object").map_err(map_sqlx)?,
        record_id: row.try_get("record_id").map_err(map_sqlx)?,
        body: row.try_get("body").map_err(map_sqlx)?,
        prev_hash: row.try_get("prev_hash").map_err(map_sqlx)?,
        hash: row.try_get("hash").map_err(map_sqlx)?,
    })
}

/// Inserts a session row; `AlreadyExists` when the token hash is taken.
async fn insert_session(conn: &mut PgConnection, session: &SessionRow) -> StoreResult<()> {
    let res = sqlx::query(
        "INSERT INTO sessions (token_hash, user_id, created_at, last_seen_at, expires_at, ip, user_agent, kind, scope, name, step_up_until) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT DO NOTHING",
    )
    .bind(&session.token_hash)
    .bind(session.user_id)
    .bind(session.created_at)
    .bind(session.last_seen_at)
    .bind(session.expires_at)
    .bind(&session.ip)
    .bind(&session.user_agent)
    .bind(&session.kind)
    .bind(&session.scope)
    .bind(&session.name)
    .bind(session.step_up_until)
    .execute(&mut *conn)
    .await
    .map_err(map_sqlx)?;
    if res.rows_affected() == 0 {
        return Err(StoreError::AlreadyExists("session".into()));
    }
    Ok(())
}

fn session_from_row(row: &PgRow) -> StoreResult<SessionRow> {
    Ok(SessionRow {
        token_hash: row.try_get("token_hash").map_err(map_sqlx)?,
        user_id: row.try_get("user_id").map_err(map_sqlx)?,
        created_at: row.try_get("created_at").map_err(map_sqlx)?,
        last_seen_at: row.try_get("last_seen_at").map_err(map_sqlx)?,
        expires_at: row.try_get("expires_at").map_err(map_sqlx)?,
        ip: row.try_get("ip").map_err(map_sqlx)?,
        user_agent: row.try_get("user_agent").map_err(map_sqlx)?,
        kind: row.try_get("kind").map_err(map_sqlx)?,
        scope: row.try_get("scope").map_err(map_sqlx)?,
        name: row.try_get("name").map_err(map_sqlx)?,
        step_up_until: row.try_get("step_up_until").map_err(map_sqlx)?,
    })
}

#[async_trait]
impl Store for PostgresStore {
    fn writer_stats(&self) -> custodian_store::WriterStats {
        self.writer.stats()
    }

    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn health(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map_err(map_sqlx).map(|_| ())
    }

    async fn backup_copy(&self, dest: &std::path::Path) -> StoreResult<()> {
        // pg_dump: one consistent snapshot while the store stays in use (custom format).
        backup::dump(&self.url, dest).await
    }

    async fn write(&self, mut batch: WriteBatch) -> StoreResult<Vec<i64>> {
        batch.clear_keys_of_deleted();
        if batch.records.is_empty()
            && batch.audit.is_empty()
            && batch.notifications.is_empty()
            && batch.outbox.is_empty()
            && batch.match_keys.is_empty()
            && batch.merge.is_none()
        {
            return Ok(Vec::new());
        }
        self.writer.write(batch).await
    }

    async fn get_record(&self, object: &str, id: Uuid, scope: &RowScope) -> StoreResult<Option<StoredRecord>> {
        let mut parts = QueryParts::default();
        let o = parts.bind(Bind::Text(object.to_owned()));
        parts.push_where(format!("r.object = {o}"));
        let i = parts.bind(Bind::Uuid(id));
        parts.push_where(format!("r.id = {i}"));
        sql::push_scope(&mut parts, scope);
        let text = format!("SELECT {RECORD_COLUMNS} FROM records r WHERE {}", parts.where_sql());
        let row = sql::bind_all(sqlx::query(AssertSqlSafe(text)), parts.into_binds())
            .fetch_optional(&self.pool)
            .await
            .map_err(map_sqlx)?;
        row.as_ref().map(record_from_row).transpose()
    }

    async fn active_versions(&self, object: &str, ids: &[Uuid]) -> StoreResult<Vec<(Uuid, i64)>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        sqlx::query_as("SELECT id, version FROM records WHERE object = $1 AND deleted_at IS NULL AND id = ANY($2)")
            .bind(object)
            .bind(ids.to_vec())
            .fetch_all(self.lookups_for(ids.len()))
            .await
            .map_err(map_sqlx)
    }

    async fn candidate_fields(
        &self,
        object: &str,
        wanted: &[(Uuid, Option<i64>)],
    ) -> StoreResult<Vec<CandidateFields>> {
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let (ids, versions): (Vec<Uuid>, Vec<Option<i64>>) = wanted.iter().copied().unzip();
        // An unknown version is null, which equals nothing, so its fields come back.
        let rows = sqlx::query(
            "SELECT r.id, r.version, CASE WHEN r.version = k.v THEN NULL ELSE r.fields END AS fields \
             FROM unnest($2::uuid[], $3::int8[]) AS k(id, v) JOIN records r ON r.id = k.id \
             WHERE r.object = $1 AND r.deleted_at IS NULL",
        )
        .bind(object)
        .bind(ids)
        .bind(versions)
        .fetch_all(self.lookups_for(wanted.len()))
        .await
        .map_err(map_sqlx)?;
        rows.iter()
            .map(|row| {
                let fields: Option<Json<Value>> = row.try_get("fields").map_err(map_sqlx)?;
                Ok(CandidateFields {
                    id: row.try_get("id").map_err(map_sqlx)?,
                    version: row.try_get("version").map_err(map_sqlx)?,
                    fields: fields.map(|Json(v)| fields_object(v)).transpose()?,
                })
            })
            .collect()
    }

    async fn list_records(&self, query: &ListQuery) -> StoreResult<RecordPage> {
        let ListStatement { text, parts, sort, limit } = list_statement(query)?;
        // A full-text search is planned for its actual terms: a generic plan cannot tell a rare
        // name (a handful of hits: read the search index, then sort) from a common word (walk the
        // sort order and stop at the page), and took the walk, reading every record of the
        // object for a name with 20 hits (79 ms at 100k records, against 10 ms with planning).
        let rows = sql::bind_all(sqlx::query(AssertSqlSafe(text)), parts.into_binds())
            .persistent(query.search.is_empty())
            .fetch_all(&self.pool)
            .await
            .map_err(map_sqlx)?;
        let mut items = Vec::with_capacity(rows.len());
        let mut last_key = None;
        for row in rows.iter().take(limit as usize) {
            items.push(record_from_row(row)?);
            last_key = Some(sql::read_sort_key(row, sort.kind)?);
        }
        let next = if rows.len() > limit as usize {
            match (items.last(), last_key) {
                (Some(last), Some(key)) => Some(Cursor { key, id: last.id }),
                _ => None,
            }
        } else {
            None
        };
        Ok(RecordPage { items, next })
    }

    async fn count_records(&self, query: &ListQuery) -> StoreResult<u64> {
        let mut parts = QueryParts::default();
        sql::push_list_conditions(&mut parts, query)?;
        let text = format!("SELECT COUNT(*) AS n FROM records r WHERE {}", parts.where_sql());
        let row = sql::bind_all(sqlx::query(AssertSqlSafe(text)), parts.into_binds())
            .fetch_one(&self.pool)
            .await
            .map_err(map_sqlx)?;
        let n: i64 = row.try_get("n").map_err(map_sqlx)?;
        Ok(n.max(0) as u64)
    }

    async fn list_versions(&self, object: &str, id: Uuid, after: i64, limit: u32) -> StoreResult<Vec<StoredVersion>> {
        let rows = sqlx::query(
            "SELECT * FROM record_versions WHERE record_id = $1 AND object = $2 AND version > $3 ORDER BY version ASC LIMIT $4",
        )
        .bind(id)
        .bind(object)
        .bind(after)
        .bind(i64::from(limit.clamp(1, 1000)))
        .fetch_all(&self.pool)
        .await
        .map_err(map_sqlx)?;
        rows.iter().map(version_from_row).collect()
    }

    async fn get_version(&self, object: &str, id: Uuid, version: i64) -> StoreResult<Option<StoredVersion>> {
        let row = sqlx::query("SELECT * FROM record_versions WHERE record_id = $1 AND object = $2 AND version = $3")
            .bind(id)
            .bind(object)
            .bind(version)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_sqlx)?;
        row.as_ref().map(version_from_row).transpose()
    }

    async fn version_at(&self, object: &str, id: Uuid, at: i64) -> StoreResult<Option<StoredVersion>> {
        let row = sqlx::query(
            "SELECT * FROM record_versions WHERE record_id = $1 AND changed_at <= $2 AND object = $3 \
             ORDER BY changed_at DESC, version DESC LIMIT 1",
        )
        .bind(id)
        .bind(at)
        .bind(object)
        .fetch_optional(&self.pool)
        .await
        .map_err(map_sqlx)?;
        row.as_ref().map(version_from_row).transpose()
    }

    async fn find_by_blind_indexes(
        &self,
        object: &str,
        keys: &[(String, Vec<u8>)],
        limit: u32,
    ) -> StoreResult<Vec<(usize, Uuid)>> {
        duplicates::find_by_blind_indexes(self.lookups_for(keys.len()), object, keys, limit).await
    }

    async fn find_by_field_values(
        &self,
        object: &str,
        keys: &[(String, String)],
        limit: u32,
    ) -> StoreResult<Vec<(usize, Uuid)>> {
        duplicates::find_by_field_values(self.lookups_for(keys.len()), object, keys, limit).await
    }

    async fn append_audit(&self, events: Vec<AuditDraft>) -> StoreResult<Vec<i64>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        self.writer.append(events).await
    }

    async fn list_audit(&self, after_seq: i64, limit: u32) -> StoreResult<Vec<AuditRow>> {
        let rows = sqlx::query("SELECT * FROM audit_events WHERE seq > $1 ORDER BY seq ASC LIMIT $2")
            .bind(after_seq)
            .bind(i64::from(limit.clamp(1, 100_000)))
            .fetch_all(&self.pool)
            .await
            .map_err(map_sqlx)?;
        rows.iter().map(audit_from_row).collect()
    }

    fn audit_chain(
        &self,
        after_seq: i64,
        through_seq: Option<i64>,
    ) -> futures::stream::BoxStream<'_, StoreResult<AuditChainRow>> {
        audit::audit_chain(&self.pool, after_seq, through_seq)
    }

    async fn audit_max_seq(&self) -> StoreResult<i64> {
        sqlx::query_scalar("SELECT COALESCE(max(seq), 0) FROM audit_events")
            .fetch_one(&self.pool)
            .await
            .map_err(map_sqlx)
    }

    async fn claim_audit_checkpoint(&self, request: CheckpointClaimRequest) -> StoreResult<CheckpointClaimOutcome> {
        audit::claim_checkpoint(&self.pool, &request).await
    }

    async fn complete_audit_checkpoint(&self, range: CheckpointRange, now: i64) -> StoreResult<()> {
        audit::complete_checkpoint(&self.pool, range, now).await
    }

    async fn list_audit_checkpoint_claims(
        &self,
        after_seq_from: i64,
        limit: u32,
    ) -> StoreResult<Vec<CheckpointClaimRow>> {
        audit::list_claims(&self.pool, after_seq_from, limit).await
    }

    async fn ensure_field_index(&self, object: &str, path: &[String]) -> StoreResult<()> {
        if !custodian_store::is_identifier(object)
            || path.is_empty()
            || !path.iter().all(|s| custodian_store::is_identifier(s))
        {
            return Err(internal("field index names must be identifiers"));
        }
        // The expression is spelled exactly as `sql::field_expr` spells it for identifier paths,
        // and the object is a literal in list queries, so the planner can use this partial index.
        let ddl = format!(
            "CREATE INDEX IF NOT EXISTS {name} ON records ((fields #>> '{{{path}}}'::text[]), id) WHERE object = '{object}'",
            name = custodian_store::field_index_name(object, path),
            path = path.join(","),
        );
        match sqlx::query(AssertSqlSafe(ddl)).execute(&self.pool).await {
            Ok(_) => Ok(()),
            // Another server created it at the same moment.
            Err(sqlx::Error::Database(db)) if matches!(db.code().as_deref(), Some("23505") | Some("42P07")) => Ok(()),
            // An application role (see `roles`) owns no table, so it may not index one. The
            // index only speeds up filters on the field; the owner can create it later.
            Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("42501") => {
                tracing::warn!(index = %custodian_store::field_index_name(object, path), "no privilege to create a \
                    custom field's index; filters on it work without one (create it as the schema owner)");
                Ok(())
            }
            Err(e) => Err(map_sqlx(e)),
        }
    }

    async fn list_custom_fields(&self) -> StoreResult<Vec<CustomFieldRow>> {
        let rows = sqlx::query("SELECT * FROM custom_fields ORDER BY created_at, object, name")
            .fetch_all(&self.pool)
            .await
            .map_err(map_sqlx)?;
        rows.iter()
            .map(|row| {
                let Json(definition): Json<Value> = row.try_get("definition").map_err(map_sqlx)?;
                Ok(CustomFieldRow {
                    object: row.try_get("object").map_err(map_sqlx)?,
                    name: row.try_get("name").map_err(map_sqlx)?,
                    definition,
                    created_at: row.try_get("created_at").map_err(map_sqlx)?,
                })
            })
            .collect()
    }

    async fn add_custom_field(&self, field: CustomFieldRow, audit: AuditDraft) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        let res = sqlx::query(
            "INSERT INTO custom_fields (object, name, definition, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(&field.object)
        .bind(&field.name)
        .bind(Json(&field.definition))
        .bind(field.created_at)
        .execute(&mut *tx)
        .await
        .map_err(map_sqlx)?;
        if res.rows_affected() == 0 {
            return Err(StoreError::AlreadyExists(format!("{}.{}", field.object, field.name)));
        }
        append_events(&mut tx, &[audit]).await?;
        commit(tx).await
    }

    async fn list_wrapped_keys(&self) -> StoreResult<Vec<WrappedKeyRow>> {
        let rows = sqlx::query("SELECT label, wrapped FROM wrapped_keys ORDER BY label")
            .fetch_all(&self.pool)
            .await
            .map_err(map_sqlx)?;
        rows.iter()
            .map(|row| {
                Ok(WrappedKeyRow {
                    label: row.try_get("label").map_err(map_sqlx)?,
                    wrapped: row.try_get("wrapped").map_err(map_sqlx)?,
                })
            })
            .collect()
    }

    async fn insert_wrapped_key(&self, key: WrappedKeyRow, audit: AuditDraft) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        let res = sqlx::query(
            "INSERT INTO wrapped_keys (label, wrapped, created_at) VALUES ($1, $2, $3) ON CONFLICT (label) DO NOTHING",
        )
        .bind(&key.label)
        .bind(&key.wrapped)
        .bind(custodian_store::now_micros())
        .execute(&mut *tx)
        .await
        .map_err(map_sqlx)?;
        let inserted = res.rows_affected() == 1;
        if inserted {
            append_events(&mut tx, &[audit]).await?;
        }
        commit(tx).await?;
        Ok(inserted)
    }

    async fn create_user(&self, user: UserRow, audit: AuditDraft) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        access::lock_assigned_role(&mut tx, &user.role).await?;
        let res = sqlx::query(
            "INSERT INTO users (id, username, display_name, password_hash, role, department_id, team_id, status, created_at, email) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING",
        )
        .bind(user.id)
        .bind(&user.username)
        .bind(&user.display_name)
        .bind(&user.password_hash)
        .bind(&user.role)
        .bind(user.department_id)
        .bind(user.team_id)
        .bind(&user.status)
        .bind(user.created_at)
        .bind(&user.email)
        .execute(&mut *tx)
        .await
        .map_err(map_sqlx)?;
        if res.rows_affected() == 0 {
            return Err(StoreError::AlreadyExists(format!("user {}", user.username)));
        }
        append_events(&mut tx, &[audit]).await?;
        commit(tx).await
    }

    async fn get_user(&self, id: Uuid) -> StoreResult<Option<UserRow>> {
        let row = sqlx::query("SELECT * FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_sqlx)?;
        row.as_ref().map(user_from_row).transpose()
    }

    async fn get_user_by_username(&self, username: &str) -> StoreResult<Option<UserRow>> {
        let row = sqlx::query("SELECT * FROM users WHERE username = $1")
            .bind(username)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_sqlx)?;
        row.as_ref().map(user_from_row).transpose()
    }

    async fn list_users(&self) -> StoreResult<Vec<UserRow>> {
        let rows = sqlx::query("SELECT * FROM users ORDER BY username COLLATE \"C\"")
            .fetch_all(&self.pool)
            .await
            .map_err(map_sqlx)?;
        rows.iter().map(user_from_row).collect()
    }

    async fn count_users(&self) -> StoreResult<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users").fetch_one(&self.pool).await.map_err(map_sqlx)?;
        Ok(n.max(0) as u64)
    }

    async fn create_department(&self, department: DepartmentRow, audit: AuditDraft) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        let res = sqlx::query(
            "INSERT INTO departments (id, name, parent_id, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(department.id)
        .bind(&department.name)
        .bind(department.parent_id)
        .bind(department.created_at)
        .execute(&mut *tx)
        .await
        .map_err(map_sqlx)?;
        if res.rows_affected() == 0 {
            return Err(StoreError::AlreadyExists(format!("department {}", department.id)));
        }
        append_events(&mut tx, &[audit]).await?;
        commit(tx).await
    }

    async fn list_departments(&self) -> StoreResult<Vec<DepartmentRow>> {
        let rows = sqlx::query("SELECT * FROM departments ORDER BY created_at, id")
            .fetch_all(&self.pool)
            .await
            .map_err(map_sqlx)?;
        rows.iter()
            .map(|row| {
                Ok(DepartmentRow {
                    id: row.try_get("id").map_err(map_sqlx)?,
                    name: row.try_get("name").map_err(map_sqlx)?,
                    parent_id: row.try_get("parent_id").map_err(map_sqlx)?,
                    created_at: row.try_get("created_at").map_err(map_sqlx)?,
                })
            })
            .collect()
    }

    async fn create_team(&self, team: TeamRow, audit: AuditDraft) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        let res = sqlx::query(
            "INSERT INTO teams (id, name, department_id, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(team.id)
        .bind(&team.name)
        .bind(team.department_id)
        .bind(team.created_at)
        .execute(&mut *tx)
        .await
        .map_err(map_sqlx)?;
        if res.rows_affected() == 0 {
            return Err(StoreError::AlreadyExists(format!("team {}", team.id)));
        }
        append_events(&mut tx, &[audit]).await?;
        commit(tx).await
    }

    async fn update_department(&self, department: DepartmentRow, audit: AuditDraft) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        // Every department row locked: concurrent moves are serialised, so no two of them can
        // each pass the cycle check and together make a cycle.
        let rows: Vec<(Uuid, Option<Uuid>)> = sqlx::query_as("SELECT id, parent_id FROM departments FOR UPDATE")
            .fetch_all(&mut *tx)
            .await
            .map_err(map_sqlx)?;
        custodian_store::check_department_move(&rows, department.id, department.parent_id)?;
        sqlx::query("UPDATE departments SET name = $1, parent_id = $2 WHERE id = $3")
            .bind(&department.name)
            .bind(department.parent_id)
            .bind(department.id)
            .execute(&mut *tx)
            .await
            .map_err(map_sqlx)?;
        append_events(&mut tx, &[audit]).await?;
        commit(tx).await
    }

    async fn update_team(&self, team: TeamRow, audit: AuditDraft) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        if let Some(dep) = team.department_id {
            let found: Option<i32> = sqlx::query_scalar("SELECT 1 FROM departments WHERE id = $1 FOR SHARE")
                .bind(dep)
                .fetch_optional(&mut *tx)
                .await
                .map_err(map_sqlx)?;
            if found.is_none() {
                return Err(StoreError::Conflict(format!("no department {dep}")));
            }
        }
        let res = sqlx::query("UPDATE teams SET name = $1, department_id = $2 WHERE id = $3")
            .bind(&team.name)
            .bind(team.department_id)
            .bind(team.id)
            .execute(&mut *tx)
            .await
            .map_err(map_sqlx)?;
        if res.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        append_events(&mut tx, &[audit]).await?;
        commit(tx).await
    }

    async fn list_teams(&self) -> StoreResult<Vec<TeamRow>> {
        let rows =
            sqlx::query("SELECT * FROM teams ORDER BY created_at, id").fetch_all(&self.pool).await.map_err(map_sqlx)?;
        rows.iter()
            .map(|row| {
                Ok(TeamRow {
                    id: row.try_get("id").map_err(map_sqlx)?,
                    name: row.try_get("name").map_err(map_sqlx)?,
                    department_id: row.try_get("department_id").map_err(map_sqlx)?,
                    created_at: row.try_get("created_at").map_err(map_sqlx)?,
                })
            })
            .collect()
    }

    async fn create_session(&self, session: SessionRow, audit: AuditDraft) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        insert_session(&mut tx, &session).await?;
        append_events(&mut tx, &[audit]).await?;
        commit(tx).await
    }

    async fn get_session(&self, token_hash: &str) -> StoreResult<Option<SessionRow>> {
        let row = sqlx::query("SELECT * FROM sessions WHERE token_hash = $1")
            .bind(token_hash)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_sqlx)?;
        row.as_ref().map(session_from_row).transpose()
    }

    async fn get_session_user(&self, token_hash: &str) -> StoreResult<Option<(SessionRow, UserRow)>> {
        let row = sqlx::query(
            "SELECT s.*, u.id AS u_id, u.username AS u_username, u.display_name AS u_display_name, u.password_hash AS u_password_hash, u.role AS u_role, u.department_id AS u_department_id, u.team_id AS u_team_id, u.status AS u_status, u.created_at AS u_created_at, u.email AS u_email \
             FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await
        .map_err(map_sqlx)?;
        row.as_ref().map(|r| Ok((session_from_row(r)?, user_from_columns(r, "u_")?))).transpose()
    }

    async fn touch_session(&self, token_hash: &str, now: i64) -> StoreResult<()> {
        sqlx::query("UPDATE sessions SET last_seen_at = $2 WHERE token_hash = $1 AND last_seen_at < $2")
            .bind(token_hash)
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(map_sqlx)
            .map(|_| ())
    }

    async fn list_user_sessions(&self, user_id: Uuid) -> StoreResult<Vec<SessionRow>> {
        let rows = sqlx::query("SELECT * FROM sessions WHERE user_id = $1 ORDER BY created_at DESC")
            .bind(user_id)
            .fetch_all(&self.pool)
            .await
            .map_err(map_sqlx)?;
        rows.iter().map(session_from_row).collect()
    }

    async fn delete_user_sessions(&self, user_id: Uuid, audit: AuditDraft) -> StoreResult<u64> {
        let mut tx = self.begin().await?;
        let r = sqlx::query("DELETE FROM sessions WHERE user_id = $1")
            .bind(user_id)
            .execute(&mut *tx)
            .await
            .map_err(map_sqlx)?;
        append_events(&mut tx, &[audit]).await?;
        commit(tx).await?;
        Ok(r.rows_affected())
    }

    async fn update_user(&self, user: UserRow, revoke_sessions: bool, audit: AuditDraft) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        access::lock_assigned_role(&mut tx, &user.role).await?;
        let r = sqlx::query(
            "UPDATE users SET display_name = $2, role = $3, department_id = $4, team_id = $5, status = $6, email = $7 \
             WHERE id = $1",
        )
        .bind(user.id)
        .bind(&user.display_name)
        .bind(&user.role)
        .bind(user.department_id)
        .bind(user.team_id)
        .bind(&user.status)
        .bind(&user.email)
        .execute(&mut *tx)
        .await
        .map_err(map_sqlx)?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        if revoke_sessions {
            sqlx::query("DELETE FROM sessions WHERE user_id = $1")
                .bind(user.id)
                .execute(&mut *tx)
                .await
                .map_err(map_sqlx)?;
        }
        append_events(&mut tx, &[audit]).await?;
        commit(tx).await
    }

    async fn audit_activity(&self, since: i64) -> StoreResult<Vec<custodian_store::ActivityCount>> {
        let rows = sqlx::query(
            "SELECT actor_id, action, COUNT(*) AS n FROM audit_events WHERE at >= $1 GROUP BY actor_id, action",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await
        .map_err(map_sqlx)?;
        rows.iter()
            .map(|row| {
                Ok(custodian_store::ActivityCount {
                    actor_id: row.try_get("actor_id").map_err(map_sqlx)?,
                    action: row.try_get("action").map_err(map_sqlx)?,
                    count: row.try_get("n").map_err(map_sqlx)?,
                })
            })
            .collect()
    }

    async fn query_audit(&self, query: &AuditQuery) -> StoreResult<Vec<AuditRow>> {
        monitor::query_audit(&self.pool, query).await
    }

    async fn count_audit(&self, query: &AuditQuery) -> StoreResult<u64> {
        monitor::count_audit(&self.pool, query).await
    }

    async fn audit_buckets(&self, query: &BucketQuery) -> StoreResult<Vec<Bucket>> {
        monitor::audit_buckets(&self.pool, query).await
    }

    async fn active_actors(&self, since: i64, actions: &[String]) -> StoreResult<Vec<Uuid>> {
        monitor::active_actors(&self.pool, since, actions).await
    }

    async fn claim_periodic_job(
        &self,
        job: &str,
        holder: &str,
        now: i64,
        lease_micros: i64,
        every_micros: i64,
    ) -> StoreResult<bool> {
        monitor::claim_job(&self.pool, job, holder, now, lease_micros, every_micros).await
    }

    async fn release_periodic_job(&self, job: &str, holder: &str) -> StoreResult<()> {
        monitor::release_job(&self.pool, job, holder).await
    }

    async fn list_alert_rules(&self) -> StoreResult<Vec<AlertRuleRow>> {
        monitor::list_rules(&self.pool).await
    }

    async fn put_alert_rule(&self, rule: AlertRuleRow, audit: AuditDraft) -> StoreResult<()> {
        monitor::put_rule(&self.pool, rule, audit).await
    }

    async fn insert_alert(&self, alert: AlertRow, outbox: Vec<OutboxRow>, audit: AuditDraft) -> StoreResult<bool> {
        monitor::insert_alert(&self.pool, alert, outbox, audit).await
    }

    async fn list_alerts(&self, before: Option<(i64, Uuid)>, limit: u32) -> StoreResult<Vec<AlertRow>> {
        monitor::list_alerts(&self.pool, before, limit).await
    }

    async fn ack_alert(&self, id: Uuid, by: Uuid, at: i64, audit: AuditDraft) -> StoreResult<AlertRow> {
        monitor::ack_alert(&self.pool, id, by, at, audit).await
    }

    async fn list_notifications(
        &self,
        user_id: Uuid,
        before: Option<(i64, Uuid)>,
        limit: u32,
    ) -> StoreResult<Vec<NotificationRow>> {
        monitor::list_notifications(&self.pool, user_id, before, limit).await
    }

    async fn ack_notification(
        &self,
        id: Uuid,
        user_id: Uuid,
        at: i64,
        audit: AuditDraft,
    ) -> StoreResult<NotificationRow> {
        monitor::ack_notification(&self.pool, id, user_id, at, audit).await
    }

    async fn claim_outbox(
        &self,
        claimant: &str,
        now: i64,
        lease_micros: i64,
        limit: u32,
    ) -> StoreResult<Vec<OutboxRow>> {
        monitor::claim_outbox(&self.pool, claimant, now, lease_micros, limit).await
    }

    async fn finish_outbox(&self, id: Uuid, claimant: &str, outcome: DeliveryOutcome) -> StoreResult<()> {
        monitor::finish_outbox(&self.pool, id, claimant, outcome).await
    }

    async fn list_outbox(&self, limit: u32) -> StoreResult<Vec<OutboxRow>> {
        monitor::list_outbox(&self.pool, limit).await
    }

    async fn match_blocks(&self, object: &str, keys: &[Vec<u8>]) -> StoreResult<Vec<(usize, Uuid)>> {
        duplicates::match_blocks(self.lookups_for(keys.len()), object, keys).await
    }

    async fn match_key_stamp(&self, object: &str) -> StoreResult<i64> {
        duplicates::match_key_stamp(&self.pool, object).await
    }

    async fn stamped_match_blocks(&self, object: &str, keys: &[Vec<u8>]) -> StoreResult<(i64, Vec<(usize, Uuid)>)> {
        duplicates::stamped_match_blocks(self.lookups_for(keys.len()), object, keys).await
    }

    async fn dismissed_with(&self, object: &str, record: Uuid, others: &[Uuid]) -> StoreResult<Vec<Uuid>> {
        duplicates::dismissed_with(&self.pool, object, record, others).await
    }

    async fn list_dismissals(&self, object: &str) -> StoreResult<Vec<DismissalRow>> {
        duplicates::list_dismissals(&self.pool, object).await
    }

    async fn create_scan_job(
        &self,
        job: ScanJobRow,
        queued: custodian_store::JobRow,
        audit: AuditDraft,
    ) -> StoreResult<()> {
        duplicates::create_scan_job(&self.pool, &job, &queued, audit).await
    }

    async fn get_scan_job(&self, id: Uuid) -> StoreResult<Option<ScanJobRow>> {
        duplicates::get_scan_job(&self.pool, id).await
    }

    async fn finish_scan_job(&self, job: ScanJobRow, candidates: Vec<CandidateRow>) -> StoreResult<()> {
        duplicates::finish_scan_job(&self.pool, &job, &candidates).await
    }

    async fn set_scan_auto_merge(&self, id: Uuid, auto_merge: Value) -> StoreResult<()> {
        duplicates::set_scan_auto_merge(&self.pool, id, &auto_merge).await
    }

    async fn list_candidates(
        &self,
        object: &str,
        status: &str,
        after: Option<Uuid>,
        limit: u32,
    ) -> StoreResult<Vec<CandidateRow>> {
        duplicates::list_candidates(&self.pool, object, status, after, limit).await
    }

    async fn get_candidate(&self, id: Uuid) -> StoreResult<Option<CandidateRow>> {
        duplicates::get_candidate(&self.pool, id).await
    }

    async fn dismiss_candidate(&self, id: Uuid, dismissal: DismissalRow, audit: AuditDraft) -> StoreResult<()> {
        duplicates::dismiss_candidate(&self.pool, id, &dismissal, audit).await
    }

    async fn merged_into(&self, object: &str, loser: Uuid) -> StoreResult<Option<Uuid>> {
        duplicates::merged_into(&self.pool, object, loser).await
    }

    async fn list_field_rules(&self) -> StoreResult<Vec<custodian_store::FieldRulesRow>> {
        jobs::list_field_rules(&self.pool).await
    }

    async fn put_field_rules(
        &self,
        row: custodian_store::FieldRulesRow,
        job: custodian_store::JobRow,
        audit: AuditDraft,
    ) -> StoreResult<()> {
        jobs::put_field_rules(&self.pool, &row, &job, audit).await
    }

    async fn create_job(&self, job: custodian_store::JobRow, audit: AuditDraft) -> StoreResult<()> {
        jobs::create_job(&self.pool, &job, audit).await
    }

    async fn get_job(&self, id: Uuid) -> StoreResult<Option<custodian_store::JobRow>> {
        jobs::get_job(&self.pool, id).await
    }

    async fn claim_job(
        &self,
        claimant: &str,
        now: i64,
        lease_micros: i64,
    ) -> StoreResult<Option<custodian_store::JobRow>> {
        jobs::claim_job(&self.pool, claimant, now, lease_micros).await
    }

    async fn save_job_progress(&self, progress: custodian_store::JobProgress) -> StoreResult<bool> {
        jobs::save_job_progress(&self.pool, &progress).await
    }

    async fn list_job_violations(
        &self,
        job_id: Uuid,
        scope: &RowScope,
        after: Option<&custodian_store::ViolationRow>,
        limit: u32,
    ) -> StoreResult<Vec<custodian_store::ViolationRow>> {
        jobs::list_violations(&self.pool, job_id, scope, after, limit).await
    }

    async fn get_merge(&self, id: Uuid) -> StoreResult<Option<MergeRow>> {
        duplicates::get_merge(&self.pool, id).await
    }

    async fn delete_session(&self, token_hash: &str, audit: AuditDraft) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
            .bind(token_hash)
            .execute(&mut *tx)
            .await
            .map_err(map_sqlx)?;
        append_events(&mut tx, &[audit]).await?;
        commit(tx).await
    }

    // ---- MFA (src/mfa.rs) --------------------------------------------------------------------

    async fn get_user_mfa(&self, user_id: Uuid) -> StoreResult<Option<UserMfaRow>> {
        mfa::get_user_mfa(&self.pool, user_id).await
    }

    async fn start_mfa_enrolment(&self, row: UserMfaRow, audit: AuditDraft) -> StoreResult<()> {
        mfa::start_enrolment(&self.pool, row, audit).await
    }

    async fn confirm_mfa_enrolment(
        &self,
        user_id: Uuid,
        step: i64,
        recovery_code_hashes: Vec<String>,
        now: i64,
        audit: AuditDraft,
    ) -> StoreResult<bool> {
        mfa::confirm_enrolment(&self.pool, user_id, step, recovery_code_hashes, now, audit).await
    }

    async fn use_mfa_factor(
        &self,
        user_id: Uuid,
        factor: MfaFactor,
        effect: MfaEffect,
        audit: Vec<AuditDraft>,
    ) -> StoreResult<bool> {
        mfa::use_factor(&self.pool, user_id, factor, effect, audit).await
    }

    async fn reset_mfa(&self, user_id: Uuid, audit: AuditDraft) -> StoreResult<bool> {
        mfa::reset(&self.pool, user_id, audit).await
    }

    async fn create_mfa_challenge(&self, challenge: MfaChallengeRow, audit: AuditDraft) -> StoreResult<()> {
        mfa::create_challenge(&self.pool, challenge, audit).await
    }

    async fn get_mfa_challenge(&self, challenge_hash: &str) -> StoreResult<Option<MfaChallengeRow>> {
        mfa::get_challenge(&self.pool, challenge_hash).await
    }

    async fn list_roles(&self) -> StoreResult<Vec<RoleRow>> {
        access::list_roles(&self.pool).await
    }

    async fn create_role(&self, role: RoleRow, audit: AuditDraft) -> StoreResult<()> {
        access::create_role(&self.pool, role, audit).await
    }

    async fn update_role(&self, role: RoleRow, audit: AuditDraft) -> StoreResult<()> {
        access::update_role(&self.pool, role, audit).await
    }

    async fn delete_role(&self, name: &str, audit: AuditDraft) -> StoreResult<()> {
        access::delete_role(&self.pool, name, audit).await
    }

    async fn create_grant(&self, grant: GrantRow, audit: AuditDraft) -> StoreResult<()> {
        access::create_grant(&self.pool, grant, audit).await
    }

    async fn cache_epoch(&self) -> StoreResult<i64> {
        sqlx::query_scalar("SELECT n FROM cache_epoch WHERE id = 1").fetch_one(&self.pool).await.map_err(map_sqlx)
    }

    async fn list_grants(&self, active_at: Option<i64>) -> StoreResult<Vec<GrantRow>> {
        access::list_grants(&self.pool, active_at).await
    }

    async fn get_grant(&self, id: Uuid) -> StoreResult<Option<GrantRow>> {
        access::get_grant(&self.pool, id).await
    }

    async fn revoke_grant(&self, id: Uuid, at: i64, by: Option<Uuid>, audit: AuditDraft) -> StoreResult<bool> {
        access::revoke_grant(&self.pool, id, at, by, audit).await
    }

    async fn login_counters(&self, keys: &[String]) -> StoreResult<Vec<LoginCounterRow>> {
        access::login_counters(&self.pool, keys).await
    }

    async fn record_login_failure(
        &self,
        keys: &[String],
        now: i64,
        forget_before: i64,
    ) -> StoreResult<Vec<LoginCounterRow>> {
        access::record_login_failure(&self.pool, keys, now, forget_before).await
    }

    async fn clear_login_failures(&self, key: &str) -> StoreResult<()> {
        access::clear_login_failures(&self.pool, key).await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn mode(url: &str) -> PgSslMode {
        let options: PgConnectOptions = url.parse().unwrap();
        plain_on_loopback(url, options).get_ssl_mode()
    }

    #[test]
    fn tls_is_left_off_only_for_this_machine_and_only_when_not_asked_for() {
        if std::env::var_os("PGSSLMODE").is_some() {
            // The environment chose a mode for every connection; nothing to decide here.
            return;
        }
        for local in [
            "postgres://postgres@127.0.0.1:5432/test",
            "postgres://postgres@127.0.0.2/test",
            "postgres://postgres@localhost/test",
            "postgres://postgres@[::1]:5432/test",
            "postgres://postgres@%2Fvar%2Frun%2Fpostgresql/test",
        ] {
            assert!(matches!(mode(local), PgSslMode::Disable), "{local}");
        }
        for remote in ["postgres://postgres@db.example.com/test", "postgres://postgres@10.0.0.5/test"] {
            assert!(matches!(mode(remote), PgSslMode::Prefer), "{remote}");
        }
        assert!(matches!(mode("postgres://postgres@127.0.0.1/test?sslmode=require"), PgSslMode::Require));
        assert!(matches!(mode("postgres://postgres@127.0.0.1/test?sslmode=prefer"), PgSslMode::Prefer));
        assert!(matches!(
            mode("postgres://postgres@localhost/test?application_name=x&ssl-mode=prefer"),
            PgSslMode::Prefer
        ));
    }
}
