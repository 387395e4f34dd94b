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
//! Growth is not the only change that matters: statistics taken before an object's first
//! records (leads loaded after 300k contacts) do not list that object among the values of
//! `object`, so the planner counts on one row of it — and looked every match key of the new
//! object's check at entry up through the `(object, stamp)` index, filtering the key, instead of
//! the primary key: a batch of 1000 leads took minutes, each lookup reading every lead's keys
//! (found loading 1M demo records: 2 leads/s, against 550 companies/s before). So a hot table
//! (`records`, `match_keys`) is also analyzed, once it has [`MIN_CHANGES`] changes, when its
//! statistics lack an object this server has written records of.
//!
//! It runs as `VACUUM (ANALYZE)`: the vacuum also marks the pages written since the last one
//! all-visible, so an index-only scan answers from the index alone. The check at entry reads
//! its match-key blocks that way; on pages a vacuum has not yet seen, every id of a block
//! costs a visit to the table (with 100k contacts just loaded, the blocks read took 1.1 ms p50
//! after ANALYZE alone, 0.73 ms after VACUUM (ANALYZE)). The vacuum reads only pages not yet
//! all-visible, and neither blocks reads nor writes.
//!
//! Doublings leave the last stretch of a load unvacuumed (up to half the table: after a million
//! contacts, the ones since the 512k vacuum), and autovacuum may be off or slow to come. So
//! once writes pause for [`QUIET`], the keeper also vacuums each hot table with at least
//! [`MIN_CHANGES`] rows inserted, updated or deleted since its last vacuum (the check at entry
//! right after a million-contact load on PostgreSQL: its blocks' keys came from the table); and
//! once after start, for what a server stopped right after a load left.

use sqlx::PgPool;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// Tables whose size drives the plans of the record write and read paths. (Not the audit log:
/// every served read appends to it, and its queries go by sequence number or by index.)
const HOT_TABLES: [&str; 5] = ["records", "record_versions", "blind_indexes", "unique_keys", "match_keys"];

/// Changed rows below which a table is left to autovacuum.
const MIN_CHANGES: i64 = 500;

/// Least time between two checks.
const PAUSE: Duration = Duration::from_secs(1);

/// A pause in writing this long lets the keeper vacuum what the last writes left. Longer than
/// PostgreSQL's 10 s: a connection that reported its row counts less than a second before its
/// last commit reports that commit's only after 10 s idle (PGSTAT_IDLE_INTERVAL), and until
/// then the rows it wrote look vacuumed.
const QUIET: Duration = Duration::from_secs(12);

/// Handle the writer pokes after each commit; dropping it stops the keeper.
pub(crate) struct StatsKeeper {
    poke: mpsc::Sender<()>,
    /// Every object this server has written records of.
    objects: Arc<Mutex<BTreeSet<String>>>,
}

impl StatsKeeper {
    pub(crate) fn spawn(pool: PgPool) -> StatsKeeper {
        let (poke, rx) = mpsc::channel(1);
        let objects = Arc::new(Mutex::new(BTreeSet::new()));
        tokio::spawn(keep(pool, rx, objects.clone()));
        StatsKeeper { poke, objects }
    }

    /// Rows were committed, records of `objects` among them: check the statistics soon (a poke
    /// while one is pending is dropped; the objects are kept).
    pub(crate) fn written(&self, objects: &[String]) {
        if !objects.is_empty()
            && let Ok(mut known) = self.objects.lock()
        {
            known.extend(objects.iter().cloned());
        }
        let _ = self.poke.try_send(());
    }
}

async fn keep(pool: PgPool, mut pokes: mpsc::Receiver<()>, objects: Arc<Mutex<BTreeSet<String>>>) {
    let mut tries = HashMap::new();
    // Whether rows may have been written since the last vacuum of a pause: at start too (a
    // server stopped, or of an earlier version, right after a load left them).
    let mut unsettled = true;
    loop {
        let poked = if unsettled {
            match tokio::time::timeout(QUIET, pokes.recv()).await {
                Ok(poke) => poke,
                Err(_) => {
                    unsettled = false;
                    if let Err(e) = vacuum_settled(&pool).await {
                        tracing::debug!(error = %e, "vacuuming after writes failed; autovacuum will");
                    }
                    continue;
                }
            }
        } else {
            pokes.recv().await
        };
        if poked.is_none() {
            return;
        }
        unsettled = true;
        let written: Vec<String> = objects.lock().map(|o| o.iter().cloned().collect()).unwrap_or_default();
        if let Err(e) = vacuum_grown(&pool, &written, &mut tries).await {
            tracing::debug!(error = %e, "refreshing planner statistics failed; autovacuum will");
        }
        tokio::time::sleep(PAUSE).await;
    }
}

/// Vacuums the hot tables with at least [`MIN_CHANGES`] rows written since their last vacuum
/// (inserted, or updated and deleted: dead rows); returns their names.
pub(crate) async fn vacuum_settled(pool: &PgPool) -> Result<Vec<String>, sqlx::Error> {
    let due: Vec<String> = sqlx::query_scalar(
        "SELECT relname::text FROM pg_stat_user_tables WHERE schemaname = current_schema() \
         AND relname = ANY($1) AND n_ins_since_vacuum + n_dead_tup >= $2 ORDER BY relname",
    )
    .bind(HOT_TABLES.as_slice())
    .bind(MIN_CHANGES)
    .fetch_all(pool)
    .await?;
    for table in &due {
        vacuum(pool, "VACUUM", table).await?;
    }
    if !due.is_empty() {
        tracing::debug!(tables = ?due, "vacuumed what the last writes left");
    }
    Ok(due)
}

/// Runs `command` (`VACUUM` or `VACUUM (ANALYZE)`) on `table` if it is one of [`HOT_TABLES`]:
/// only those names reach the statement.
async fn vacuum(pool: &PgPool, command: &'static str, table: &str) -> Result<(), sqlx::Error> {
    if HOT_TABLES.contains(&table) {
        sqlx::query(sqlx::AssertSqlSafe(format!("{command} {table}"))).persistent(false).execute(pool).await?;
    }
    Ok(())
}

/// Analyses a table makes for one object its statistics still lack (an object with a few rows
/// in a large table may not be sampled; it is tried again as it grows, a few times per server).
const MISSING_OBJECT_TRIES: u32 = 3;

/// Vacuums and analyzes the hot tables that grew (or changed) as much as their statistics
/// know, and `records` and `match_keys` when they changed [`MIN_CHANGES`] times while their
/// statistics of `object` lack one of `objects` (objects written, with records in both tables
/// or, for `match_keys`, with match keys), at most [`MISSING_OBJECT_TRIES`] times per table and
/// object (counted in `tries`); returns the tables' names.
pub(crate) async fn vacuum_grown(
    pool: &PgPool,
    objects: &[String],
    tries: &mut HashMap<(String, String), u32>,
) -> Result<Vec<String>, sqlx::Error> {
    let due: Vec<(String, Option<String>)> = sqlx::query_as(
        "WITH changed AS (SELECT s.relname::text AS relname, s.schemaname, s.n_mod_since_analyze AS n, \
             c.reltuples::bigint AS tuples FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid \
             WHERE s.schemaname = current_schema() AND s.relname = ANY($1) AND s.n_mod_since_analyze >= $2), \
         present(relname, object) AS (SELECT 'records', o FROM unnest($3::text[]) AS o \
             UNION ALL SELECT 'match_keys', m.object FROM match_key_stamps m WHERE m.object = ANY($3)) \
         SELECT relname, NULL::text FROM changed WHERE n >= tuples \
         UNION ALL \
         SELECT ch.relname, p.object FROM changed ch JOIN present p ON p.relname = ch.relname \
         WHERE ch.n < ch.tuples AND NOT EXISTS (SELECT 1 FROM pg_stats t WHERE t.schemaname = ch.schemaname \
             AND t.tablename = ch.relname AND t.attname = 'object' \
             AND (p.object = ANY(t.most_common_vals::text::text[]) OR p.object = ANY(t.histogram_bounds::text::text[])))",
    )
    .bind(HOT_TABLES.as_slice())
    .bind(MIN_CHANGES)
    .bind(objects)
    .fetch_all(pool)
    .await?;
    let mut grown: Vec<String> = Vec::new();
    for (table, missing) in due {
        if let Some(object) = missing {
            let tried = tries.entry((table.clone(), object)).or_insert(0);
            if *tried >= MISSING_OBJECT_TRIES {
                continue;
            }
            *tried += 1;
        }
        if !grown.contains(&table) {
            grown.push(table);
        }
    }
    for table in &grown {
        vacuum(pool, "VACUUM (ANALYZE)", table).await?;
    }
    Ok(grown)
}
