//! Planner statistics that keep up with a growing database.
//!
//! PostgreSQL plans with the statistics of the last ANALYZE, and a prepared statement switches
//! to one generic plan after five calls and keeps it until those statistics change. On a new
//! database the statistics say "empty" (migration 0004 analyzed the tables before they held a
//! row, and CREATE INDEX on an empty table records zero rows too), so the first plans scan whole
//! tables as if that were free: fetching one record by id walked every record of its object, and
//! a strong-key lookup of an import chunk took seconds. Autovacuum repairs this only at its
//! next round (a minute or more, while a first import is running).
//!
//! After the writer commits, this keeper analyzes each hot table whose rows changed since its
//! last ANALYZE at least as many times as that ANALYZE counted rows (at least [`MIN_CHANGES`]):
//! so about once per doubling, a dozen times on the way to a million rows. ANALYZE samples a
//! bounded number of rows, does not block reads or writes, and invalidates the cached plans
//! that read the table, which PostgreSQL then makes again with the new numbers.
//!
//! It runs as `VACUUM (ANALYZE)`: the vacuum also marks the pages written since the last one
//! all-visible, so an index-only scan answers from the index alone. The check at entry reads
//! its match-key blocks that way; on pages a vacuum has not yet seen, every id of a block
//! costs a visit to the table (with 100k contacts just loaded, the blocks read took 1.1 ms p50
//! after ANALYZE alone, 0.73 ms after VACUUM (ANALYZE)). The vacuum reads only pages not yet
//! all-visible, and neither blocks reads nor writes.

use sqlx::PgPool;
use std::time::Duration;
use tokio::sync::mpsc;

/// Tables whose size drives the plans of the record write and read paths. (Not the audit log:
/// every served read appends to it, and its queries go by sequence number or by index.)
const HOT_TABLES: [&str; 5] = ["records", "record_versions", "blind_indexes", "unique_keys", "match_keys"];

/// Changed rows below which a table is left to autovacuum.
const MIN_CHANGES: i64 = 500;

/// Least time between two checks.
const PAUSE: Duration = Duration::from_secs(1);

/// Handle the writer pokes after each commit; dropping it stops the keeper.
pub(crate) struct StatsKeeper {
    poke: mpsc::Sender<()>,
}

impl StatsKeeper {
    pub(crate) fn spawn(pool: PgPool) -> StatsKeeper {
        let (poke, rx) = mpsc::channel(1);
        tokio::spawn(keep(pool, rx));
        StatsKeeper { poke }
    }

    /// Rows were committed: check the statistics soon (a poke while one is pending is dropped).
    pub(crate) fn written(&self) {
        let _ = self.poke.try_send(());
    }
}

async fn keep(pool: PgPool, mut pokes: mpsc::Receiver<()>) {
    while pokes.recv().await.is_some() {
        if let Err(e) = vacuum_grown(&pool).await {
            tracing::debug!(error = %e, "refreshing planner statistics failed; autovacuum will");
        }
        tokio::time::sleep(PAUSE).await;
    }
}

/// Vacuums and analyzes the hot tables that grew (or changed) as much as their statistics
/// know; returns their names.
pub(crate) async fn vacuum_grown(pool: &PgPool) -> Result<Vec<String>, sqlx::Error> {
    let grown: Vec<String> = sqlx::query_scalar(
        "SELECT s.relname::text FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid \
         WHERE s.schemaname = current_schema() AND s.relname = ANY($1) \
         AND s.n_mod_since_analyze >= greatest($2, c.reltuples::bigint)",
    )
    .bind(HOT_TABLES.as_slice())
    .bind(MIN_CHANGES)
    .fetch_all(pool)
    .await?;
    for table in &grown {
        // Only names from HOT_TABLES reach this statement.
        if HOT_TABLES.contains(&table.as_str()) {
            sqlx::query(sqlx::AssertSqlSafe(format!("VACUUM (ANALYZE) {table}")))
                .persistent(false)
                .execute(pool)
                .await?;
        }
    }
    Ok(grown)
}
