//! SQLite backend: the embedded default. WAL journal, `synchronous=FULL` (an acknowledged write
//! survives power loss), a pool of read connections and exactly one writer task, on a thread
//! of its own.
//!
//! Group commit: every mutation is a job sent to the writer task, which drains all queued jobs
//! into one transaction with a savepoint per job. A failing job rolls back to its savepoint and
//! gets its own error; the others commit together with one fsync. Callers are answered only
//! after COMMIT returned, so an acknowledged write is durable.

use async_trait::async_trait;
use custodian_store::{
    AlertRow, AlertRuleRow, AuditQuery, Bucket, BucketQuery, DeliveryOutcome, NotificationRow, OutboxRow,
};
use custodian_store::{
    AuditChainRow, AuditDraft, AuditRow, CandidateFields, CandidateRow, CheckpointClaimOutcome, CheckpointClaimRequest,
    CheckpointClaimRow, CheckpointRange, Cursor, CustomFieldRow, DepartmentRow, DismissalRow, GrantRow, ListQuery,
    LoginCounterRow, MergeRow, MfaChallengeRow, MfaEffect, MfaFactor, RecordPage, RecordWrite, RoleRow, RowScope,
    ScanJobRow, SessionRow, Store, StoreError, StoreResult, StoredRecord, StoredVersion, TeamRow, UserMfaRow, UserRow,
    WrappedKeyRow, WriteAction, WriteBatch, WriterMeter, WriterStats,
};
use serde_json::{Map, Value, json};
use sqlx::sqlite::{SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqliteRow, SqliteSynchronous};
use sqlx::{AssertSqlSafe, Connection, Row, SqliteConnection};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

mod access;
mod audit;
mod bulk;
mod duplicates;
mod jobs;
mod mfa;
mod monitor;
mod read_pool;
#[doc(hidden)]
pub use monitor::AUDIT_RECORD_FILTER;
mod sql;
use read_pool::ReadPool;
use sql::{Bind, QueryParts};

/// Most jobs committed in one group transaction.
const MAX_GROUP: usize = 512;

pub struct SqliteStore {
    read_pool: ReadPool,
    writer: mpsc::Sender<Job>,
    writer_meter: Arc<WriterMeter>,
}

/// Durability setting of the write connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// `synchronous=FULL`: every commit is fsynced (the default).
    Full,
    /// `synchronous=NORMAL`: for tests and throwaway demo databases only.
    Normal,
}

fn internal(e: impl std::fmt::Display) -> StoreError {
    StoreError::Internal(e.to_string())
}

fn map_sqlx(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
            StoreError::Unavailable(e.to_string())
        }
        sqlx::Error::Database(db) if db.message().contains("database is locked") || db.message().contains("busy") => {
            StoreError::Unavailable(e.to_string())
        }
        _ => StoreError::Internal(e.to_string()),
    }
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.message().contains("UNIQUE constraint failed"))
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path`, runs migrations, and starts the
    /// writer task.
    pub async fn open(path: &Path) -> StoreResult<SqliteStore> {
        Self::open_with(path, Durability::Full).await
    }

    pub async fn open_with(path: &Path, durability: Durability) -> StoreResult<SqliteStore> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Unavailable(format!("{}: {e}", dir.display())))?;
        }
        let base = SqliteConnectOptions::new()
            .filename(path)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(false)
            .pragma("temp_store", "memory")
            .pragma("cache_size", "-16000");
        let write_options = base
            .clone()
            .create_if_missing(true)
            .pragma("analysis_limit", "1000")
            // The writer copies the WAL into the database file itself (`checkpoint_if_due`).
            .pragma("wal_autocheckpoint", "0")
            .pragma("journal_size_limit", WAL_SIZE_LIMIT)
            .synchronous(match durability {
                Durability::Full => SqliteSynchronous::Full,
                Durability::Normal => SqliteSynchronous::Normal,
            });
        let mut write_conn = SqliteConnection::connect_with(&write_options).await.map_err(map_sqlx)?;
        sqlx::migrate!("./migrations")
            .run(&mut write_conn)
            .await
            .map_err(|e| StoreError::Internal(format!("migration failed: {e}")))?;
        drop_field_indexes_before(&mut write_conn).await?;
        // Statistics for the query planner (cheap when they are fresh).
        sqlx::query(OPTIMIZE_SQL).execute(&mut write_conn).await.map_err(map_sqlx)?;
        // Statistics refreshed by the writer reach a connection only when it opens.
        let read_pool = ReadPool::connect(base.pragma("query_only", "ON"), 8, READ_CONNECTION_LIFETIME).await?;
        let mut shm = path.as_os_str().to_owned();
        shm.push("-shm");
        let (tx, rx) = mpsc::channel(4096);
        // The writer task runs on its own thread, in a runtime of its own (`spawn_writer`): a
        // group took a dozen hand-offs to SQLite's thread and back (about six since
        // `bulk::INSERT_GROUP`), and on the server's runtime each answer waited for a worker,
        // busy with requests (a duplicate check scores on the worker), before the writer could
        // send the next statement. HTTP creates, alternating runs: 1,183/1,158 -> 1,228/1,245
        // records/s (straight on the service: 1,856/1,848 -> 2,148/2,032); audited GETs in a
        // closed loop 13.6k/13.3k -> 13.9k/14.8k req/s. The thread ends when the store's last
        // sender is dropped, after the writer's last checkpoint.
        let shm = PathBuf::from(shm);
        let writer_meter = Arc::new(WriterMeter::default());
        let meter = writer_meter.clone();
        custodian_store::spawn_writer("custodian-sqlite-writer", move || writer_loop(write_conn, rx, shm, meter))?;
        Ok(SqliteStore { read_pool, writer: tx, writer_meter })
    }

    /// Opens an existing database for reading only, as the audit verifier and prover do: the
    /// file is opened read-only, nothing is migrated, no writer runs (a write is answered
    /// `unavailable`), so checking the evidence never changes it.
    pub async fn open_read_only(path: &Path) -> StoreResult<SqliteStore> {
        if !path.is_file() {
            return Err(StoreError::Unavailable(format!("no database at {}", path.display())));
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .read_only(true)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(false)
            .pragma("query_only", "ON");
        let read_pool = ReadPool::connect(options, 2, READ_CONNECTION_LIFETIME).await?;
        // A writer that has stopped: every write is refused.
        let (writer, _) = mpsc::channel(1);
        Ok(SqliteStore { read_pool, writer, writer_meter: Arc::default() })
    }

    async fn submit(&self, op: Op) -> StoreResult<OpOut> {
        let (reply, rx) = oneshot::channel();
        self.writer
            .send(Job { op, reply })
            .await
            .map_err(|_| StoreError::Unavailable("the SQLite writer has stopped".into()))?;
        rx.await.map_err(|_| StoreError::Unavailable("the SQLite writer has stopped".into()))?
    }

    async fn submit_unit(&self, op: Op) -> StoreResult<()> {
        self.submit(op).await.map(|_| ())
    }

    async fn monitor(&self, op: monitor::MonitorOp) -> StoreResult<monitor::MonitorOut> {
        match self.submit(Op::Monitor(op)).await? {
            OpOut::Monitor(out) => Ok(out),
            _ => Err(internal("unexpected writer reply")),
        }
    }

    async fn access(&self, op: access::AccessOp) -> StoreResult<access::AccessOut> {
        match self.submit(Op::Access(op)).await? {
            OpOut::Access(out) => Ok(out),
            _ => Err(internal("unexpected writer reply")),
        }
    }

    async fn jobs(&self, op: jobs::JobsOp) -> StoreResult<jobs::JobsOut> {
        match self.submit(Op::Jobs(Box::new(op))).await? {
            OpOut::Jobs(out) => Ok(out),
            _ => Err(internal("unexpected writer reply")),
        }
    }

    async fn submit_bool(&self, op: Op) -> StoreResult<bool> {
        match self.submit(op).await? {
            OpOut::Bool(b) => Ok(b),
            _ => Err(internal("unexpected writer reply")),
        }
    }
}

// ---- the writer task ---------------------------------------------------------------------

enum Op {
    /// A batch and its rows encoded for the bulk path.
    Write(WriteBatch, bulk::Encoded),
    EnsureIndex(String),
    Audit(Vec<AuditDraft>, bulk::Encoded),
    AddCustomField(CustomFieldRow, AuditDraft),
    InsertKey(WrappedKeyRow, AuditDraft),
    CreateUser(UserRow, AuditDraft),
    CreateDepartment(DepartmentRow, AuditDraft),
    CreateTeam(TeamRow, AuditDraft),
    UpdateDepartment(DepartmentRow, AuditDraft),
    UpdateTeam(TeamRow, AuditDraft),
    CreateSession(SessionRow, AuditDraft),
    TouchSession(String, i64),
    DeleteSession(String, AuditDraft),
    DeleteUserSessions(Uuid, AuditDraft),
    UpdateUser(UserRow, bool, AuditDraft),
    ClaimCheckpoint(CheckpointClaimRequest),
    CompleteCheckpoint(CheckpointRange, i64),
    Monitor(monitor::MonitorOp),
    CreateScanJob(Box<(ScanJobRow, custodian_store::JobRow, AuditDraft)>),
    FinishScanJob(ScanJobRow, Vec<CandidateRow>),
    SetScanAutoMerge(Uuid, Value),
    DismissCandidate(Uuid, DismissalRow, AuditDraft),
    Mfa(mfa::MfaOp),
    Access(access::AccessOp),
    Jobs(Box<jobs::JobsOp>),
}

enum OpOut {
    Seqs(Vec<i64>),
    Count(u64),
    Unit,
    Bool(bool),
    Claim(CheckpointClaimOutcome),
    Monitor(monitor::MonitorOut),
    Access(access::AccessOut),
    Jobs(jobs::JobsOut),
}

struct Job {
    op: Op,
    reply: oneshot::Sender<StoreResult<OpOut>>,
}

/// The head of the audit chain as seen inside the current transaction.
#[derive(Clone)]
struct ChainHead {
    seq: i64,
    hash: Vec<u8>,
}

/// Drops the field indexes of the earlier form (on the value alone; see
/// `custodian_store::field_index_name`): their successors are created beside them when the
/// service starts, and each kept would only cost every write. Field indexes are made at run time
/// for custom fields too, so they are found by name rather than listed in a migration.
async fn drop_field_indexes_before(conn: &mut SqliteConnection) -> StoreResult<()> {
    let pattern = format!("{}%", custodian_store::FIELD_INDEX_PREFIX_BEFORE.replace('_', "\\_"));
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'records' AND name LIKE ? ESCAPE '\\'",
    )
    .bind(pattern)
    .fetch_all(&mut *conn)
    .await
    .map_err(map_sqlx)?;
    for name in names.into_iter().filter(|n| custodian_store::is_identifier(n)) {
        tracing::info!(index = %name, "dropping a field index of the earlier form");
        sqlx::query(AssertSqlSafe(format!("DROP INDEX IF EXISTS {name}")))
            .execute(&mut *conn)
            .await
            .map_err(map_sqlx)?;
    }
    Ok(())
}

/// How often the writer refreshes the planner's statistics (`PRAGMA optimize`), so that the
/// per-field indexes are chosen once tables have grown. Often: an import into a new database
/// grows the tables from nothing, and with the statistics of the empty database SQLite answers
/// an equality filter on a field by walking the whole object in sort order (found loading 1M
/// demo records: 30 companies/s after 35k). It is cheap when nothing grew: `optimize` analyses
/// only tables whose size changed tenfold, and `analysis_limit` bounds each analysis.
const OPTIMIZE_EVERY: Duration = Duration::from_secs(30);
/// How long a read connection lives: a connection plans with the statistics it loaded when it
/// opened, so the writer's refreshes reach the readers within this time.
const READ_CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// The statistics refresh: every table (not only those this connection used) that was never
/// analysed or changed size tenfold.
const OPTIMIZE_SQL: &str = "PRAGMA optimize=0x10002";

/// WAL pages not yet copied into the database file (32 MiB of 4 KiB pages) from which the
/// writer copies them. A checkpoint copies each page once, however many commits wrote it, and
/// the commits of its jobs wait while it runs: every create writes some twenty leaf pages at
/// random places in its indexes (match keys, blind indexes, field indexes), and with SQLite's
/// 1000 (its automatic checkpoint's count) the writer copied and synced the database file every
/// few groups of creates (HTTP creates from 32 clients, alternating runs: 1,331/1,218 records/s
/// at 1000 pages, 1,392/1,353 at 4000, 1,419/1,435 at 8000, 1,466/1,424 at 16000). The price
/// is a longer pause of the writer when it does copy (closed loop of audited GETs: p99 6.4 ->
/// 12.5 ms; at 1000 GETs/s unchanged, 2.1-2.3 ms).
const CHECKPOINT_PAGES: u32 = 8000;
/// How often the writer copies the WAL when it cannot read how much is left to copy.
const CHECKPOINT_BLIND_EVERY: Duration = Duration::from_secs(1);
/// The size (bytes) to which the WAL file is cut back once a checkpoint has emptied it.
const WAL_SIZE_LIMIT: &str = "67108864";

/// Copies the WAL into the database file (a PASSIVE checkpoint: it waits for no reader) when
/// the groups committed left at least CHECKPOINT_PAGES pages to copy. The writer runs it after
/// answering a group's jobs, instead of SQLite's automatic checkpoint inside the commit that
/// crossed the count: that commit also wrote and synced the pages into the database file
/// before anyone waiting on it was answered (60% of the commit time of a 1000-record batch).
/// A checkpoint on another connection, beside the commits, made commits of audited reads wait
/// behind the database file's writes in the file system's journal (p99 of a GET 4 -> 100 ms).
async fn checkpoint_if_due(conn: &mut SqliteConnection, shm: &mut WalIndex, last: &mut Instant) {
    let due = match shm.uncheckpointed_pages() {
        Some(pages) => pages >= CHECKPOINT_PAGES,
        None => last.elapsed() >= CHECKPOINT_BLIND_EVERY,
    };
    if due {
        checkpoint(conn).await;
        *last = Instant::now();
    }
}

async fn checkpoint(conn: &mut SqliteConnection) {
    match sqlx::query_as::<_, (i64, i64, i64)>("PRAGMA wal_checkpoint(PASSIVE)").fetch_one(&mut *conn).await {
        Ok((_, log, copied)) => tracing::trace!(log, copied, "WAL checkpoint"),
        Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed"),
    }
}

/// Audit events the record index may lack before the writer adds them (migration 0023): a
/// larger batch puts more of its entries on each page it writes, a smaller one keeps shorter
/// the scan of the events after the mark that the record filter of the audit query adds.
const AUDIT_RECORD_INDEX_BATCH: i64 = 4096;
/// How long appended events wait for the record index when fewer than a batch came.
const AUDIT_RECORD_INDEX_EVERY: Duration = Duration::from_secs(1);
/// Adds the events after the mark to the record index in record order (so that entries of
/// one page are written together) and moves the mark, in one transaction sent as one command.
/// The mark is then read back: another process on the file may have appended too.
const INDEX_AUDIT_RECORDS_SQL: &str = "BEGIN IMMEDIATE; \
     INSERT OR IGNORE INTO audit_record_index (record_id, seq) \
     SELECT record_id, seq FROM audit_events \
     WHERE seq > COALESCE((SELECT seq FROM audit_record_index_mark), 0) AND record_id IS NOT NULL \
     ORDER BY record_id, seq; \
     INSERT INTO audit_record_index_mark (id, seq) SELECT 1, COALESCE(MAX(seq), 0) FROM audit_events WHERE true \
     ON CONFLICT (id) DO UPDATE SET seq = max(seq, excluded.seq); \
     COMMIT; \
     SELECT seq FROM audit_record_index_mark";

/// Where the writer's record indexing of audit events stands.
struct RecordIndexing {
    /// The mark as this writer last moved it (`None` before the first batch).
    mark: Option<i64>,
    last: Instant,
}

impl RecordIndexing {
    /// Indexes the audit events by record when a batch of them is waiting (counted from the
    /// head this writer committed last), or when some have waited `AUDIT_RECORD_INDEX_EVERY`
    /// (or the writer does not know the count). Run after answering a group's jobs.
    async fn index_if_due(&mut self, conn: &mut SqliteConnection, head: Option<&ChainHead>) {
        let waited = self.last.elapsed() >= AUDIT_RECORD_INDEX_EVERY;
        let due = match (head, self.mark) {
            (Some(head), Some(mark)) => head.seq - mark >= AUDIT_RECORD_INDEX_BATCH || (waited && head.seq > mark),
            _ => waited,
        };
        if due {
            self.index(conn).await;
        }
    }

    async fn index(&mut self, conn: &mut SqliteConnection) {
        self.last = Instant::now();
        match sqlx::query_scalar::<_, i64>(INDEX_AUDIT_RECORDS_SQL).fetch_optional(&mut *conn).await {
            Ok(mark) => self.mark = mark,
            Err(e) => {
                // The events stay after the mark, where the record filter still finds them.
                tracing::warn!(error = %e, "indexing audit events by record failed");
                let _ = exec(conn, "ROLLBACK").await;
            }
        }
    }
}

/// The WAL index (the `-shm` file), read by the writer to see how much is left to checkpoint.
///
/// Architecture Invariant: this process never closes a descriptor of the database's files
/// while SQLite connections may be open in it. Closing any descriptor of a file drops every
/// POSIX advisory lock the process holds on that file — SQLite's locks on the WAL index
/// included (sqlite.org/howtocorrupt.html, "Posix advisory locks canceled by a separate thread
/// doing close()"). Another process (a CLI command on the same data directory) then believed
/// itself alone, reset the WAL index under the server's memory mapping, and the server died of
/// SIGBUS. So the file is opened once and its descriptor is never closed (one per store).
struct WalIndex {
    path: PathBuf,
    file: Option<std::fs::File>,
}

impl WalIndex {
    fn new(path: PathBuf) -> WalIndex {
        WalIndex { path, file: None }
    }

    /// The WAL pages not yet copied into the database file (format documented at
    /// sqlite.org/walformat.html: the header's `mxFrame` at byte 16 and the checkpoint
    /// information's `nBackfill` at byte 96, both in native byte order). `None` when the file
    /// cannot be read; a torn read only moves one checkpoint.
    #[cfg(unix)]
    fn uncheckpointed_pages(&mut self) -> Option<u32> {
        use std::os::unix::fs::FileExt;
        if self.file.is_none() {
            self.file = std::fs::File::open(&self.path).ok();
        }
        let mut head = [0u8; 100];
        self.file.as_ref()?.read_exact_at(&mut head, 0).ok()?;
        let word = |at: usize| head.get(at..at + 4).and_then(|b| b.try_into().ok()).map(u32::from_ne_bytes);
        Some(word(16)?.saturating_sub(word(96)?))
    }

    /// Elsewhere the checkpoints run on the blind schedule.
    #[cfg(not(unix))]
    fn uncheckpointed_pages(&mut self) -> Option<u32> {
        let _ = &self.path;
        None
    }
}

impl Drop for WalIndex {
    fn drop(&mut self) {
        // Deliberately left open (see the type's documentation): read connections of this
        // store may outlive the writer.
        if let Some(file) = self.file.take() {
            std::mem::forget(file);
        }
    }
}

async fn writer_loop(mut conn: SqliteConnection, mut rx: mpsc::Receiver<Job>, shm: PathBuf, meter: Arc<WriterMeter>) {
    let mut shm = WalIndex::new(shm);
    let mut last_checkpoint = Instant::now();
    let mut last_optimize = Instant::now();
    // The chain head this writer committed last (see `append_reads`).
    let mut known_head: Option<ChainHead> = None;
    let mut indexing = RecordIndexing { mark: None, last: Instant::now() };
    while let Some(first) = rx.recv().await {
        if last_optimize.elapsed() > OPTIMIZE_EVERY {
            let started = Instant::now();
            if let Err(e) = sqlx::query(OPTIMIZE_SQL).execute(&mut conn).await {
                tracing::warn!(error = %e, "PRAGMA optimize failed");
            }
            meter.upkeep(started.elapsed());
            last_optimize = Instant::now();
        }
        let mut jobs = vec![first];
        while jobs.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let (n, started) = (jobs.len(), Instant::now());
        run_group(&mut conn, jobs, &mut known_head).await;
        let ran = Instant::now();
        meter.group(n, ran - started);
        indexing.index_if_due(&mut conn, known_head.as_ref()).await;
        checkpoint_if_due(&mut conn, &mut shm, &mut last_checkpoint).await;
        meter.upkeep(ran.elapsed());
    }
    checkpoint(&mut conn).await;
}

/// Answers every job of a group that could not run with `unavailable` and this reason.
fn fail_all(jobs: Vec<Job>, msg: &str) {
    for job in jobs {
        let _ = job.reply.send(Err(StoreError::Unavailable(msg.to_owned())));
    }
}

async fn exec(conn: &mut SqliteConnection, sql: &'static str) -> StoreResult<()> {
    sqlx::query(sql).execute(&mut *conn).await.map_err(map_sqlx).map(|_| ())
}

/// A group of audit appends only (the events of reads, the most frequent group) when the writer
/// knows the head it committed last: BEGIN, one insert linked to that head, COMMIT, sent to
/// SQLite's thread as one command where the general path takes seven (each a hand-off to that
/// thread and back, which is what a read waits for). Another process that appended meanwhile (a CLI command on
/// the same file) makes the insert fail on the chain trigger, which takes only the next number
/// linked to the last event; the group then starts again on the general path, which reads the
/// head. Returns the jobs when it did not answer them.
async fn append_reads(conn: &mut SqliteConnection, jobs: Vec<Job>, known: &mut Option<ChainHead>) -> Option<Vec<Job>> {
    let Some(mut head) = known.take() else { return Some(jobs) };
    if !jobs.iter().all(|j| matches!(j.op, Op::Audit(..))) {
        return Some(jobs);
    }
    let parts: Vec<&bulk::Encoded> = jobs
        .iter()
        .filter_map(|j| match &j.op {
            Op::Audit(_, encoded) => Some(encoded),
            _ => None,
        })
        .collect();
    let events: Vec<&custodian_store::audit::EncodedEvent> = parts.iter().flat_map(|p| p.events.iter()).collect();
    match bulk::append_events_committed(conn, &mut head, &events).await {
        Ok(seqs) => {
            *known = Some(head);
            let mut seqs = seqs.into_iter();
            let counts: Vec<usize> = parts.iter().map(|p| p.events.len()).collect();
            for (job, n) in jobs.into_iter().zip(counts) {
                let _ = job.reply.send(Ok(OpOut::Seqs(seqs.by_ref().take(n).collect())));
            }
            None
        }
        Err(e) => {
            tracing::debug!(error = %e, "audit appends against the remembered head failed; reading the head");
            let _ = exec(conn, "ROLLBACK").await;
            Some(jobs)
        }
    }
}

async fn run_group(conn: &mut SqliteConnection, jobs: Vec<Job>, known: &mut Option<ChainHead>) {
    let Some(jobs) = append_reads(conn, jobs, known).await else { return };
    let mut results: Vec<(oneshot::Sender<StoreResult<OpOut>>, StoreResult<OpOut>)> = Vec::with_capacity(jobs.len());
    let began = exec(conn, "BEGIN IMMEDIATE").await;
    if let Err(e) = began {
        fail_all(jobs, &e.to_string());
        return;
    }
    let mut head = match read_chain_head(conn).await {
        Ok(h) => h,
        Err(e) => {
            let _ = exec(conn, "ROLLBACK").await;
            fail_all(jobs, &e.to_string());
            return;
        }
    };
    // Record writes and audit appends of the whole group first go through the bulk path in one
    // savepoint; if anything in them fails, they are replayed one job at a time below.
    let (combinable, mut single): (Vec<Job>, Vec<Job>) =
        jobs.into_iter().partition(|j| matches!(j.op, Op::Write(..) | Op::Audit(..)));
    // A write whose duplicate check went stale (a record it would have been compared with was
    // written meanwhile, by an earlier write of this group or before) is answered `StaleCheck`
    // and the others go through the bulk path again without it.
    let mut combinable = combinable;
    for attempt in 0..2 {
        if combinable.is_empty() {
            break;
        }
        match run_bulk(conn, &combinable, &mut head).await {
            Ok(Bulk::Applied(seqs)) => {
                for (job, seqs) in combinable.drain(..).zip(seqs) {
                    results.push((job.reply, Ok(OpOut::Seqs(seqs))));
                }
            }
            Ok(Bulk::Stale(stale)) if attempt == 0 => {
                let (refused, rest): (Vec<_>, Vec<_>) =
                    combinable.into_iter().enumerate().partition(|(i, _)| stale.contains(i));
                results.extend(refused.into_iter().map(|(_, job)| (job.reply, Err(StoreError::StaleCheck))));
                combinable = rest.into_iter().map(|(_, job)| job).collect();
            }
            Ok(Bulk::Stale(_)) => {
                tracing::debug!(jobs = combinable.len(), "bulk write fell back to one job at a time: stale checks");
                single.append(&mut combinable);
            }
            Err(bulk::Fallback(reason)) => {
                tracing::debug!(%reason, jobs = combinable.len(), "bulk write fell back to one job at a time");
                single.append(&mut combinable);
            }
        }
    }
    single.append(&mut combinable);
    for job in single {
        let saved_head = head.clone();
        let outcome = match exec(conn, "SAVEPOINT job").await {
            Err(e) => Err(e),
            Ok(()) => {
                let r = apply_op(conn, job.op, &mut head).await;
                match r {
                    Ok(out) => match exec(conn, "RELEASE job").await {
                        Ok(()) => Ok(out),
                        Err(e) => Err(e),
                    },
                    Err(e) => {
                        let _ = exec(conn, "ROLLBACK TO job").await;
                        let _ = exec(conn, "RELEASE job").await;
                        head = saved_head;
                        Err(e)
                    }
                }
            }
        };
        results.push((job.reply, outcome));
    }
    match exec(conn, "COMMIT").await {
        Ok(()) => {
            *known = Some(head);
            for (reply, outcome) in results {
                let _ = reply.send(outcome);
            }
        }
        Err(e) => {
            let _ = exec(conn, "ROLLBACK").await;
            let msg = e.to_string();
            for (reply, _) in results {
                let _ = reply.send(Err(StoreError::Unavailable(format!("commit failed: {msg}"))));
            }
        }
    }
}

/// What the bulk path did with a group.
enum Bulk {
    /// The event sequence numbers per job.
    Applied(Vec<Vec<i64>>),
    /// Nothing: these jobs' duplicate checks went stale.
    Stale(Vec<usize>),
}

/// Applies every `Op::Write` and `Op::Audit` of `jobs` in one savepoint through the bulk path.
/// Returns the event sequence numbers per job, or (having written nothing) the jobs whose
/// duplicate checks went stale, or `Fallback` after rolling the savepoint back.
async fn run_bulk(conn: &mut SqliteConnection, jobs: &[Job], head: &mut ChainHead) -> Result<Bulk, bulk::Fallback> {
    let mut parts = Vec::with_capacity(jobs.len());
    for job in jobs {
        match &job.op {
            // Merges (rare) are written by the per-job path only (see `apply_op`).
            Op::Write(batch, _) if batch.merge.is_some() => {
                return Err(bulk::Fallback("a batch with a merge".into()));
            }
            Op::Write(_, encoded) | Op::Audit(_, encoded) => parts.push(encoded),
            _ => return Err(bulk::Fallback("not a record write".into())),
        }
    }
    // Duplicate checks gone stale are found before anything is written.
    let batches: Vec<Option<&WriteBatch>> = jobs
        .iter()
        .map(|j| match &j.op {
            Op::Write(batch, _) => Some(batch),
            _ => None,
        })
        .collect();
    let stale = duplicates::stale_batches(conn, &batches).await?;
    if !stale.is_empty() {
        return Ok(Bulk::Stale(stale));
    }
    exec(conn, "SAVEPOINT bulk").await?;
    let saved = head.clone();
    let applied = match bulk::apply(conn, &parts, head).await {
        Ok(seqs) => bulk_monitor_rows(conn, jobs).await.map(|()| seqs),
        Err(e) => Err(e),
    };
    match applied {
        Ok(seqs) => {
            exec(conn, "RELEASE bulk").await?;
            let mut seqs = seqs.into_iter();
            Ok(Bulk::Applied(parts.iter().map(|p| seqs.by_ref().take(p.events.len()).collect()).collect()))
        }
        Err(e) => {
            exec(conn, "ROLLBACK TO bulk").await?;
            exec(conn, "RELEASE bulk").await?;
            *head = saved;
            Err(e)
        }
    }
}

/// The change notifications and outbox messages of the record writes in a bulk group (rare:
/// row by row, inside the group's savepoint).
async fn bulk_monitor_rows(conn: &mut SqliteConnection, jobs: &[Job]) -> Result<(), bulk::Fallback> {
    for job in jobs {
        if let Op::Write(batch, _) = &job.op {
            monitor::insert_notifications(conn, &batch.notifications).await?;
            monitor::insert_outbox(conn, &batch.outbox).await?;
        }
    }
    Ok(())
}

async fn read_chain_head(conn: &mut SqliteConnection) -> StoreResult<ChainHead> {
    let row = sqlx::query("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1")
        .fetch_optional(&mut *conn)
        .await
        .map_err(map_sqlx)?;
    Ok(match row {
        Some(r) => ChainHead { seq: r.try_get("seq").map_err(map_sqlx)?, hash: r.try_get("hash").map_err(map_sqlx)? },
        None => ChainHead { seq: 0, hash: custodian_core::audit::GENESIS_HASH.to_vec() },
    })
}

async fn append_events(
    conn: &mut SqliteConnection,
    head: &mut ChainHead,
    drafts: &[AuditDraft],
) -> StoreResult<Vec<i64>> {
    let events = bulk::encode_events(drafts)?;
    bulk::append_events(conn, head, &events.iter().collect::<Vec<_>>()).await
}

fn opt_uuid(u: Option<Uuid>) -> Option<String> {
    u.map(|u| u.to_string())
}

async fn apply_op(conn: &mut SqliteConnection, op: Op, head: &mut ChainHead) -> StoreResult<OpOut> {
    match op {
        Op::Write(batch, _) => {
            for w in &batch.records {
                apply_record_write(conn, w).await?;
            }
            duplicates::check_exclusive_keys(conn, &batch.records, &batch.exclusive_key_peers()).await?;
            monitor::insert_notifications(conn, &batch.notifications).await?;
            monitor::insert_outbox(conn, &batch.outbox).await?;
            if !duplicates::stale_batches(conn, &[Some(&batch)]).await?.is_empty() {
                return Err(StoreError::StaleCheck);
            }
            duplicates::write_match_keys(conn, &batch.match_keys).await?;
            if let Some(merge) = &batch.merge {
                duplicates::apply_merge(conn, merge).await?;
            }
            Ok(OpOut::Seqs(append_events(conn, head, &batch.audit).await?))
        }
        Op::Audit(drafts, _) => Ok(OpOut::Seqs(append_events(conn, head, &drafts).await?)),
        Op::EnsureIndex(ddl) => {
            sqlx::query(AssertSqlSafe(ddl)).execute(&mut *conn).await.map_err(map_sqlx)?;
            Ok(OpOut::Unit)
        }
        Op::AddCustomField(f, audit) => {
            let r = sqlx::query("INSERT INTO custom_fields (object, name, definition, created_at) VALUES (?, ?, ?, ?)")
                .bind(&f.object)
                .bind(&f.name)
                .bind(f.definition.to_string())
                .bind(f.created_at)
                .execute(&mut *conn)
                .await;
            match r {
                Err(e) if is_unique_violation(&e) => {
                    return Err(StoreError::AlreadyExists(format!("{}.{}", f.object, f.name)));
                }
                Err(e) => return Err(map_sqlx(e)),
                Ok(_) => {}
            }
            append_events(conn, head, &[audit]).await?;
            Ok(OpOut::Unit)
        }
        Op::InsertKey(k, audit) => {
            let r = sqlx::query(
                "INSERT INTO wrapped_keys (label, wrapped, created_at) VALUES (?, ?, ?) ON CONFLICT (label) DO NOTHING",
            )
            .bind(&k.label)
            .bind(&k.wrapped)
            .bind(custodian_store::now_micros())
            .execute(&mut *conn)
            .await
            .map_err(map_sqlx)?;
            let inserted = r.rows_affected() == 1;
            if inserted {
                append_events(conn, head, &[audit]).await?;
            }
            Ok(OpOut::Bool(inserted))
        }
        Op::CreateUser(u, audit) => {
            access::check_assigned_role(conn, &u.role).await?;
            let r = sqlx::query(
                "INSERT INTO users (id, username, display_name, password_hash, role, department_id, team_id, status, created_at, email) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(u.id.to_string())
            .bind(&u.username)
            .bind(&u.display_name)
            .bind(&u.password_hash)
            .bind(&u.role)
            .bind(opt_uuid(u.department_id))
            .bind(opt_uuid(u.team_id))
            .bind(&u.status)
            .bind(u.created_at)
            .bind(&u.email)
            .execute(&mut *conn)
            .await;
            match r {
                Err(e) if is_unique_violation(&e) => {
                    return Err(StoreError::AlreadyExists(format!("user {}", u.username)));
                }
                Err(e) => return Err(map_sqlx(e)),
                Ok(_) => {}
            }
            append_events(conn, head, &[audit]).await?;
            Ok(OpOut::Unit)
        }
        Op::CreateDepartment(d, audit) => {
            let r = sqlx::query("INSERT INTO departments (id, name, parent_id, created_at) VALUES (?, ?, ?, ?)")
                .bind(d.id.to_string())
                .bind(&d.name)
                .bind(opt_uuid(d.parent_id))
                .bind(d.created_at)
                .execute(&mut *conn)
                .await;
            match r {
                Err(e) if is_unique_violation(&e) => {
                    return Err(StoreError::AlreadyExists(format!("department {}", d.id)));
                }
                Err(e) => return Err(map_sqlx(e)),
                Ok(_) => {}
            }
            append_events(conn, head, &[audit]).await?;
            Ok(OpOut::Unit)
        }
        Op::CreateTeam(t, audit) => {
            let r = sqlx::query("INSERT INTO teams (id, name, department_id, created_at) VALUES (?, ?, ?, ?)")
                .bind(t.id.to_string())
                .bind(&t.name)
                .bind(opt_uuid(t.department_id))
                .bind(t.created_at)
                .execute(&mut *conn)
                .await;
            match r {
                Err(e) if is_unique_violation(&e) => {
                    return Err(StoreError::AlreadyExists(format!("team {}", t.id)));
                }
                Err(e) => return Err(map_sqlx(e)),
                Ok(_) => {}
            }
            append_events(conn, head, &[audit]).await?;
            Ok(OpOut::Unit)
        }
        Op::UpdateDepartment(d, audit) => {
            let rows: Vec<(String, Option<String>)> = sqlx::query_as("SELECT id, parent_id FROM departments")
                .fetch_all(&mut *conn)
                .await
                .map_err(map_sqlx)?;
            let departments = rows
                .iter()
                .map(|(id, parent)| {
                    let parent = parent.as_deref().map(Uuid::parse_str).transpose().map_err(internal)?;
                    Ok((Uuid::parse_str(id).map_err(internal)?, parent))
                })
                .collect::<StoreResult<Vec<_>>>()?;
            custodian_store::check_department_move(&departments, d.id, d.parent_id)?;
            let id = d.id.to_string();
            sqlx::query("UPDATE departments SET name = ?, parent_id = ? WHERE id = ?")
                .bind(&d.name)
                .bind(opt_uuid(d.parent_id))
                .bind(&id)
                .execute(&mut *conn)
                .await
                .map_err(map_sqlx)?;
            append_events(conn, head, &[audit]).await?;
            Ok(OpOut::Unit)
        }
        Op::UpdateTeam(t, audit) => {
            if let Some(dep) = t.department_id {
                let found: Option<i64> = sqlx::query_scalar("SELECT 1 FROM departments WHERE id = ?")
                    .bind(dep.to_string())
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(map_sqlx)?;
                if found.is_none() {
                    return Err(StoreError::Conflict(format!("no department {dep}")));
                }
            }
            let res = sqlx::query("UPDATE teams SET name = ?, department_id = ? WHERE id = ?")
                .bind(&t.name)
                .bind(opt_uuid(t.department_id))
                .bind(t.id.to_string())
                .execute(&mut *conn)
                .await
                .map_err(map_sqlx)?;
            if res.rows_affected() == 0 {
                return Err(StoreError::NotFound);
            }
            append_events(conn, head, &[audit]).await?;
            Ok(OpOut::Unit)
        }
        Op::CreateSession(s, audit) => {
            insert_session(conn, &s).await?;
            append_events(conn, head, &[audit]).await?;
            Ok(OpOut::Unit)
        }
        Op::TouchSession(hash, now) => {
            sqlx::query("UPDATE sessions SET last_seen_at = ? WHERE token_hash = ? AND last_seen_at < ?")
                .bind(now)
                .bind(&hash)
                .bind(now)
                .execute(&mut *conn)
                .await
                .map_err(map_sqlx)?;
            Ok(OpOut::Unit)
        }
        Op::DeleteUserSessions(user_id, audit) => {
            let r = sqlx::query("DELETE FROM sessions WHERE user_id = ?")
                .bind(user_id.to_string())
                .execute(&mut *conn)
                .await
                .map_err(map_sqlx)?;
            append_events(conn, head, &[audit]).await?;
            Ok(OpOut::Count(r.rows_affected()))
        }
        Op::UpdateUser(u, revoke, audit) => {
            access::check_assigned_role(conn, &u.role).await?;
            let r = sqlx::query(
                "UPDATE users SET display_name = ?, role = ?, department_id = ?, team_id = ?, status = ?, email = ? \
                 WHERE id = ?",
            )
            .bind(&u.display_name)
            .bind(&u.role)
            .bind(opt_uuid(u.department_id))
            .bind(opt_uuid(u.team_id))
            .bind(&u.status)
            .bind(&u.email)
            .bind(u.id.to_string())
            .execute(&mut *conn)
            .await
            .map_err(map_sqlx)?;
            if r.rows_affected() == 0 {
                return Err(StoreError::NotFound);
            }
            if revoke {
                sqlx::query("DELETE FROM sessions WHERE user_id = ?")
                    .bind(u.id.to_string())
                    .execute(&mut *conn)
                    .await
                    .map_err(map_sqlx)?;
            }
            append_events(conn, head, &[audit]).await?;
            Ok(OpOut::Unit)
        }
        Op::DeleteSession(hash, audit) => {
            sqlx::query("DELETE FROM sessions WHERE token_hash = ?")
                .bind(&hash)
                .execute(&mut *conn)
                .await
                .map_err(map_sqlx)?;
            append_events(conn, head, &[audit]).await?;
            Ok(OpOut::Unit)
        }
        Op::ClaimCheckpoint(request) => Ok(OpOut::Claim(audit::claim_checkpoint(conn, head, &request).await?)),
        Op::CompleteCheckpoint(range, now) => {
            audit::complete_checkpoint(conn, range, now).await?;
            Ok(OpOut::Unit)
        }
        Op::Monitor(op) => Ok(OpOut::Monitor(monitor::apply(conn, op, head).await?)),
        Op::CreateScanJob(boxed) => {
            let (job, queued, audit) = *boxed;
            jobs::insert_job(conn, &queued).await?;
            duplicates::create_scan_job(conn, head, &job, audit).await?;
            Ok(OpOut::Unit)
        }
        Op::FinishScanJob(job, candidates) => {
            duplicates::finish_scan_job(conn, &job, &candidates).await?;
            Ok(OpOut::Unit)
        }
        Op::SetScanAutoMerge(id, auto_merge) => {
            duplicates::set_scan_auto_merge(conn, id, &auto_merge).await?;
            Ok(OpOut::Unit)
        }
        Op::DismissCandidate(id, dismissal, audit) => {
            duplicates::dismiss_candidate(conn, head, id, &dismissal, audit).await?;
            Ok(OpOut::Unit)
        }
        Op::Mfa(op) => mfa::apply(conn, op, head).await,
        Op::Access(op) => access::apply(conn, op, head).await,
        Op::Jobs(op) => jobs::apply(conn, op, head).await,
    }
}

async fn insert_session(conn: &mut SqliteConnection, s: &SessionRow) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO sessions (token_hash, user_id, created_at, last_seen_at, expires_at, ip, user_agent, kind, scope, name, step_up_until) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&s.token_hash)
    .bind(s.user_id.to_string())
    .bind(s.created_at)
    .bind(s.last_seen_at)
    .bind(s.expires_at)
    .bind(&s.ip)
    .bind(&s.user_agent)
    .bind(&s.kind)
    .bind(&s.scope)
    .bind(&s.name)
    .bind(s.step_up_until)
    .execute(&mut *conn)
    .await
    .map_err(map_sqlx)?;
    Ok(())
}

async fn apply_record_write(conn: &mut SqliteConnection, w: &RecordWrite) -> StoreResult<()> {
    let r = &w.record;
    let id = r.id.to_string();
    let fields = Value::Object(r.fields.clone()).to_string();
    let seq: i64 = match w.expected_version {
        None => {
            let res = sqlx::query(
                "INSERT INTO records (id, object, version, owner_id, team_id, created_at, created_by, updated_at, updated_by, deleted_at, fields) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING seq",
            )
            .bind(&id)
            .bind(&r.object)
            .bind(r.version)
            .bind(opt_uuid(r.owner_id))
            .bind(opt_uuid(r.team_id))
            .bind(r.created_at)
            .bind(opt_uuid(r.created_by))
            .bind(r.updated_at)
            .bind(opt_uuid(r.updated_by))
            .bind(r.deleted_at)
            .bind(&fields)
            .fetch_one(&mut *conn)
            .await;
            match res {
                Ok(row) => row.try_get("seq").map_err(map_sqlx)?,
                Err(e) if is_unique_violation(&e) => {
                    return Err(StoreError::AlreadyExists(format!("record {id}")));
                }
                Err(e) => return Err(map_sqlx(e)),
            }
        }
        Some(expected) => {
            let row = sqlx::query(
                "UPDATE records SET version = ?, owner_id = ?, team_id = ?, updated_at = ?, updated_by = ?, deleted_at = ?, fields = ? \
                 WHERE id = ? AND object = ? AND version = ? RETURNING seq",
            )
            .bind(r.version)
            .bind(opt_uuid(r.owner_id))
            .bind(opt_uuid(r.team_id))
            .bind(r.updated_at)
            .bind(opt_uuid(r.updated_by))
            .bind(r.deleted_at)
            .bind(&fields)
            .bind(&id)
            .bind(&r.object)
            .bind(expected)
            .fetch_optional(&mut *conn)
            .await
            .map_err(map_sqlx)?;
            match row {
                Some(row) => row.try_get("seq").map_err(map_sqlx)?,
                None => {
                    let current: Option<i64> =
                        sqlx::query_scalar("SELECT version FROM records WHERE id = ? AND object = ?")
                            .bind(&id)
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
    };
    sqlx::query(
        "INSERT INTO record_versions (record_id, version, object, action, owner_id, team_id, deleted_at, fields, changed_at, changed_by) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&id)
    .bind(r.version)
    .bind(&r.object)
    .bind(w.action.as_str())
    .bind(opt_uuid(r.owner_id))
    .bind(opt_uuid(r.team_id))
    .bind(r.deleted_at)
    .bind(&fields)
    .bind(r.updated_at)
    .bind(opt_uuid(r.updated_by))
    .execute(&mut *conn)
    .await
    .map_err(|e| if is_unique_violation(&e) { StoreError::VersionConflict { current: r.version } } else { map_sqlx(e) })?;

    if w.expected_version.is_some() {
        sqlx::query("DELETE FROM blind_indexes WHERE record_id = ?")
            .bind(&id)
            .execute(&mut *conn)
            .await
            .map_err(map_sqlx)?;
        sqlx::query("DELETE FROM unique_keys WHERE record_id = ?")
            .bind(&id)
            .execute(&mut *conn)
            .await
            .map_err(map_sqlx)?;
        sqlx::query("DELETE FROM record_search WHERE rowid = ?")
            .bind(seq)
            .execute(&mut *conn)
            .await
            .map_err(map_sqlx)?;
    }
    for b in &w.blind_indexes {
        sqlx::query("INSERT OR IGNORE INTO blind_indexes (object, field, digest, record_id) VALUES (?, ?, ?, ?)")
            .bind(&r.object)
            .bind(&b.field)
            .bind(&b.digest)
            .bind(&id)
            .execute(&mut *conn)
            .await
            .map_err(map_sqlx)?;
    }
    for u in &w.unique_keys {
        let holder: Option<String> =
            sqlx::query_scalar("SELECT record_id FROM unique_keys WHERE object = ? AND field = ? AND digest = ?")
                .bind(&r.object)
                .bind(&u.field)
                .bind(&u.digest)
                .fetch_optional(&mut *conn)
                .await
                .map_err(map_sqlx)?;
        if let Some(holder) = holder
            && holder != id
        {
            return Err(StoreError::UniqueViolation {
                object: r.object.clone(),
                field: u.field.clone(),
                holder: Uuid::parse_str(&holder).ok(),
            });
        }
        sqlx::query("INSERT OR IGNORE INTO unique_keys (object, field, digest, record_id) VALUES (?, ?, ?, ?)")
            .bind(&r.object)
            .bind(&u.field)
            .bind(&u.digest)
            .bind(&id)
            .execute(&mut *conn)
            .await
            .map_err(map_sqlx)?;
    }
    if !w.search_text.is_empty() {
        sqlx::query("INSERT INTO record_search (rowid, tokens) VALUES (?, ?)")
            .bind(seq)
            .bind(&w.search_text)
            .execute(&mut *conn)
            .await
            .map_err(map_sqlx)?;
    }
    Ok(())
}

// ---- reads -------------------------------------------------------------------------------

const RECORD_COLUMNS: &str = "r.id, r.object, r.version, r.owner_id, r.team_id, r.created_at, r.created_by, r.updated_at, r.updated_by, r.deleted_at, r.fields";

/// A row's id column (stored as text).
pub(crate) fn uuid_col(row: &SqliteRow, column: &str) -> StoreResult<Uuid> {
    let text: String = row.try_get(column).map_err(map_sqlx)?;
    Uuid::parse_str(&text).map_err(internal)
}

/// A nullable id column: `None` for NULL.
pub(crate) fn opt_uuid_col(row: &SqliteRow, column: &str) -> StoreResult<Option<Uuid>> {
    parse_uuid(row.try_get(column).map_err(map_sqlx)?)
}

pub(crate) fn parse_uuid(s: Option<String>) -> StoreResult<Option<Uuid>> {
    s.map(|s| Uuid::parse_str(&s).map_err(internal)).transpose()
}

fn parse_fields(text: &str) -> StoreResult<Map<String, Value>> {
    match serde_json::from_str(text).map_err(internal)? {
        Value::Object(m) => Ok(m),
        _ => Err(internal("record fields are not a JSON object")),
    }
}

fn record_from_row(row: &SqliteRow) -> StoreResult<StoredRecord> {
    let fields: String = row.try_get("fields").map_err(map_sqlx)?;
    Ok(StoredRecord {
        id: uuid_col(row, "id")?,
        object: row.try_get("object").map_err(map_sqlx)?,
        version: row.try_get("version").map_err(map_sqlx)?,
        owner_id: opt_uuid_col(row, "owner_id")?,
        team_id: opt_uuid_col(row, "team_id")?,
        created_at: row.try_get("created_at").map_err(map_sqlx)?,
        created_by: opt_uuid_col(row, "created_by")?,
        updated_at: row.try_get("updated_at").map_err(map_sqlx)?,
        updated_by: opt_uuid_col(row, "updated_by")?,
        deleted_at: row.try_get("deleted_at").map_err(map_sqlx)?,
        fields: parse_fields(&fields)?,
    })
}

fn version_from_row(row: &SqliteRow) -> StoreResult<StoredVersion> {
    let action: String = row.try_get("action").map_err(map_sqlx)?;
    let fields: String = row.try_get("fields").map_err(map_sqlx)?;
    Ok(StoredVersion {
        record_id: uuid_col(row, "record_id")?,
        object: row.try_get("object").map_err(map_sqlx)?,
        version: row.try_get("version").map_err(map_sqlx)?,
        action: WriteAction::parse(&action).ok_or_else(|| internal("unknown version action"))?,
        owner_id: opt_uuid_col(row, "owner_id")?,
        team_id: opt_uuid_col(row, "team_id")?,
        deleted_at: row.try_get("deleted_at").map_err(map_sqlx)?,
        fields: parse_fields(&fields)?,
        changed_at: row.try_get("changed_at").map_err(map_sqlx)?,
        changed_by: opt_uuid_col(row, "changed_by")?,
    })
}

fn user_from_row(row: &SqliteRow) -> StoreResult<UserRow> {
    user_from_columns(row, "")
}

/// A user from columns named `{prefix}id`, `{prefix}username`, … (a prefix when joined).
fn user_from_columns(row: &SqliteRow, prefix: &str) -> StoreResult<UserRow> {
    let col = |name: &str| format!("{prefix}{name}");
    Ok(UserRow {
        id: uuid_col(row, &col("id"))?,
        username: row.try_get(col("username").as_str()).map_err(map_sqlx)?,
        display_name: row.try_get(col("display_name").as_str()).map_err(map_sqlx)?,
        password_hash: row.try_get(col("password_hash").as_str()).map_err(map_sqlx)?,
        role: row.try_get(col("role").as_str()).map_err(map_sqlx)?,
        department_id: opt_uuid_col(row, &col("department_id"))?,
        team_id: opt_uuid_col(row, &col("team_id"))?,
        status: row.try_get(col("status").as_str()).map_err(map_sqlx)?,
        created_at: row.try_get(col("created_at").as_str()).map_err(map_sqlx)?,
        email: row.try_get(col("email").as_str()).map_err(map_sqlx)?,
    })
}

fn session_from_row(row: &SqliteRow) -> StoreResult<SessionRow> {
    Ok(SessionRow {
        token_hash: row.try_get("token_hash").map_err(map_sqlx)?,
        user_id: uuid_col(row, "user_id")?,
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

fn audit_from_row(row: &SqliteRow) -> StoreResult<AuditRow> {
    Ok(AuditRow {
        seq: row.try_get("seq").map_err(map_sqlx)?,
        at: row.try_get("at").map_err(map_sqlx)?,
        actor_id: opt_uuid_col(row, "actor_id")?,
        action: row.try_get("action").map_err(map_sqlx)?,
        object: row.try_get("object").map_err(map_sqlx)?,
        record_id: opt_uuid_col(row, "record_id")?,
        body: row.try_get("body").map_err(map_sqlx)?,
        prev_hash: row.try_get("prev_hash").map_err(map_sqlx)?,
        hash: row.try_get("hash").map_err(map_sqlx)?,
    })
}

/// The statement of `list_records`: text, binds, sort and page size.
fn list_sql(query: &ListQuery) -> StoreResult<(String, Vec<Bind>, sql::SortExpr, u32)> {
    let mut parts = QueryParts::default();
    sql::push_list_conditions(&mut parts, query)?;
    let sort = sql::sort_expr(&query.sort.column)?;
    if let Some(after) = &query.after {
        sql::push_keyset(&mut parts, &sort, query.sort.descending, after)?;
    }
    let (where_sql, binds) = parts.finish_where();
    let dir = if query.sort.descending { "DESC" } else { "ASC" };
    let limit = query.limit.clamp(1, 1000);
    // Ties are broken by id; a list in id order has none. (`ORDER BY r.id, r.id` made SQLite
    // sort every match of a filter for the second term although a field index gave them in id
    // order.)
    let tie_break =
        if matches!(query.sort.column, custodian_store::Column::Id) { String::new() } else { format!(", r.id {dir}") };
    let text = format!(
        "SELECT {RECORD_COLUMNS}, {expr} AS sort_key FROM records r WHERE {where_sql} ORDER BY {expr} {dir}{tie_break} LIMIT {}",
        u64::from(limit) + 1,
        expr = sort.expr
    );
    Ok((text, binds, sort, limit))
}

pub(crate) fn bind_all<'q>(
    mut q: sqlx::query::Query<'q, sqlx::Sqlite, SqliteArguments>,
    binds: Vec<Bind>,
) -> sqlx::query::Query<'q, sqlx::Sqlite, SqliteArguments> {
    for b in binds {
        q = match b {
            Bind::Text(s) => q.bind(s),
            Bind::Int(i) => q.bind(i),
            Bind::Real(f) => q.bind(f),
            Bind::Blob(v) => q.bind(v),
        };
    }
    q
}

#[async_trait]
impl Store for SqliteStore {
    fn writer_stats(&self) -> WriterStats {
        self.writer_meter.read()
    }

    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn health(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&mut *self.read_pool.get().await?).await.map_err(map_sqlx).map(|_| ())
    }

    async fn backup_copy(&self, dest: &std::path::Path) -> StoreResult<()> {
        // VACUUM INTO copies one read snapshot, compacted, without stopping the writer (WAL).
        // Read connections refuse every write (query_only), the copy's file included: this one
        // is let out for the copy and never goes back to the pool unless it is guarded again.
        let dest = dest.to_str().ok_or_else(|| internal("the backup path is not valid UTF-8"))?;
        let mut conn = self.read_pool.get().await?;
        conn.set_reusable(false);
        sqlx::query("PRAGMA query_only = OFF").execute(&mut *conn).await.map_err(map_sqlx)?;
        let copied = sqlx::query("VACUUM INTO ?").bind(dest).execute(&mut *conn).await.map_err(map_sqlx);
        if sqlx::query("PRAGMA query_only = ON").execute(&mut *conn).await.is_ok() {
            conn.set_reusable(true);
        }
        copied.map(|_| ())
    }

    async fn write(&self, mut batch: WriteBatch) -> StoreResult<Vec<i64>> {
        batch.clear_keys_of_deleted();
        let encoded = bulk::Encoded::new(&batch)?;
        match self.submit(Op::Write(batch, encoded)).await? {
            OpOut::Seqs(s) => Ok(s),
            _ => Err(internal("unexpected writer reply")),
        }
    }

    async fn get_record(&self, object: &str, id: Uuid, scope: &RowScope) -> StoreResult<Option<StoredRecord>> {
        let mut parts = QueryParts::default();
        sql::push_object(&mut parts, object);
        parts.push_where("r.id = ?", vec![Bind::Text(id.to_string())]);
        sql::push_scope(&mut parts, scope);
        let (where_sql, binds) = parts.finish_where();
        let text = format!("SELECT {RECORD_COLUMNS} FROM records r WHERE {where_sql}");
        let row = bind_all(sqlx::query(AssertSqlSafe(text)), binds)
            .fetch_optional(&mut *self.read_pool.get().await?)
            .await
            .map_err(map_sqlx)?;
        row.as_ref().map(record_from_row).transpose()
    }

    async fn active_versions(&self, object: &str, ids: &[Uuid]) -> StoreResult<Vec<(Uuid, i64)>> {
        let mut out = Vec::new();
        for chunk in ids.chunks(500) {
            let placeholders = vec!["?"; chunk.len()].join(", ");
            let mut parts = QueryParts::default();
            sql::push_object(&mut parts, object);
            let (object_sql, binds) = parts.finish_where();
            let text = format!(
                "SELECT r.id, r.version FROM records r WHERE {object_sql} AND r.deleted_at IS NULL \
                 AND r.id IN ({placeholders})"
            );
            let mut binds = binds;
            binds.extend(chunk.iter().map(|id| Bind::Text(id.to_string())));
            let q = bind_all(sqlx::query(AssertSqlSafe(text)), binds);
            for row in q.fetch_all(&mut *self.read_pool.get().await?).await.map_err(map_sqlx)? {
                out.push((uuid_col(&row, "id")?, row.try_get("version").map_err(map_sqlx)?));
            }
        }
        Ok(out)
    }

    async fn candidate_fields(
        &self,
        object: &str,
        wanted: &[(Uuid, Option<i64>)],
    ) -> StoreResult<Vec<CandidateFields>> {
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<Value> = wanted.iter().map(|(id, v)| json!({ "id": id.to_string(), "v": v })).collect();
        // The ids drive the join, each looked up in the `(object, id, version, deleted_at)`
        // index, and the row is visited only for its fields; an unknown version is null, which
        // equals nothing, so its fields come back. The object is a literal (`push_object`): a
        // bound one made SQLite prepare the statement again on every execution.
        let mut parts = QueryParts::default();
        sql::push_object(&mut parts, object);
        let (object_sql, mut binds) = parts.finish_where();
        let text = format!(
            "SELECT r.id, r.version, CASE WHEN r.version = k.value ->> 'v' THEN NULL ELSE r.fields END AS fields \
             FROM json_each(?) AS k CROSS JOIN records AS r ON r.id = k.value ->> 'id' \
             WHERE {object_sql} AND r.deleted_at IS NULL"
        );
        binds.insert(0, Bind::Text(Value::Array(keys).to_string()));
        let rows = bind_all(sqlx::query(AssertSqlSafe(text)), binds)
            .fetch_all(&mut *self.read_pool.get().await?)
            .await
            .map_err(map_sqlx)?;
        rows.iter()
            .map(|row| {
                let fields: Option<String> = row.try_get("fields").map_err(map_sqlx)?;
                Ok(CandidateFields {
                    id: uuid_col(row, "id")?,
                    version: row.try_get("version").map_err(map_sqlx)?,
                    fields: fields.as_deref().map(parse_fields).transpose()?,
                })
            })
            .collect()
    }

    async fn list_records(&self, query: &ListQuery) -> StoreResult<RecordPage> {
        let (text, binds, sort, limit) = list_sql(query)?;
        let rows = bind_all(sqlx::query(AssertSqlSafe(text)), binds)
            .fetch_all(&mut *self.read_pool.get().await?)
            .await
            .map_err(map_sqlx)?;
        let mut items = Vec::with_capacity(rows.len());
        let mut keys = Vec::with_capacity(rows.len());
        for row in rows.iter().take(limit as usize) {
            items.push(record_from_row(row)?);
            keys.push(sql::read_sort_key(row, sort.kind)?);
        }
        let next = if rows.len() > limit as usize {
            match (items.last(), keys.pop()) {
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
        let (where_sql, binds) = parts.finish_where();
        let text = format!("SELECT COUNT(*) AS n FROM records r WHERE {where_sql}");
        let row = bind_all(sqlx::query(AssertSqlSafe(text)), binds)
            .fetch_one(&mut *self.read_pool.get().await?)
            .await
            .map_err(map_sqlx)?;
        let n: i64 = row.try_get("n").map_err(map_sqlx)?;
        Ok(n.max(0) as u64)
    }

    async fn list_versions(&self, object: &str, id: Uuid, after: i64, limit: u32) -> StoreResult<Vec<StoredVersion>> {
        let text = format!(
            "SELECT * FROM record_versions WHERE record_id = ? AND object = ? AND version > ? ORDER BY version ASC LIMIT {}",
            limit.clamp(1, 1000)
        );
        let rows = sqlx::query(AssertSqlSafe(text))
            .bind(id.to_string())
            .bind(object)
            .bind(after)
            .fetch_all(&mut *self.read_pool.get().await?)
            .await
            .map_err(map_sqlx)?;
        rows.iter().map(version_from_row).collect()
    }

    async fn get_version(&self, object: &str, id: Uuid, version: i64) -> StoreResult<Option<StoredVersion>> {
        let row = sqlx::query("SELECT * FROM record_versions WHERE record_id = ? AND object = ? AND version = ?")
            .bind(id.to_string())
            .bind(object)
            .bind(version)
            .fetch_optional(&mut *self.read_pool.get().await?)
            .await
            .map_err(map_sqlx)?;
        row.as_ref().map(version_from_row).transpose()
    }

    async fn version_at(&self, object: &str, id: Uuid, at: i64) -> StoreResult<Option<StoredVersion>> {
        let row = sqlx::query(
            "SELECT * FROM record_versions WHERE record_id = ? AND changed_at <= ? AND object = ? \
             ORDER BY changed_at DESC, version DESC LIMIT 1",
        )
        .bind(id.to_string())
        .bind(at)
        .bind(object)
        .fetch_optional(&mut *self.read_pool.get().await?)
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
        duplicates::find_by_blind_indexes(&self.read_pool, object, keys, limit).await
    }

    async fn find_by_field_values(
        &self,
        object: &str,
        keys: &[(String, String)],
        limit: u32,
    ) -> StoreResult<Vec<(usize, Uuid)>> {
        duplicates::find_by_field_values(&self.read_pool, object, keys, limit).await
    }

    async fn append_audit(&self, events: Vec<AuditDraft>) -> StoreResult<Vec<i64>> {
        let encoded = bulk::Encoded::events(&events)?;
        match self.submit(Op::Audit(events, encoded)).await? {
            OpOut::Seqs(s) => Ok(s),
            _ => Err(internal("unexpected writer reply")),
        }
    }

    async fn list_audit(&self, after_seq: i64, limit: u32) -> StoreResult<Vec<AuditRow>> {
        let text =
            format!("SELECT * FROM audit_events WHERE seq > ? ORDER BY seq ASC LIMIT {}", limit.clamp(1, 100_000));
        let rows = sqlx::query(AssertSqlSafe(text))
            .bind(after_seq)
            .fetch_all(&mut *self.read_pool.get().await?)
            .await
            .map_err(map_sqlx)?;
        rows.iter().map(audit_from_row).collect()
    }

    fn audit_chain(
        &self,
        after_seq: i64,
        through_seq: Option<i64>,
    ) -> futures::stream::BoxStream<'_, StoreResult<AuditChainRow>> {
        audit::audit_chain(&self.read_pool, after_seq, through_seq)
    }

    async fn audit_max_seq(&self) -> StoreResult<i64> {
        sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM audit_events")
            .fetch_one(&mut *self.read_pool.get().await?)
            .await
            .map_err(map_sqlx)
    }

    async fn claim_audit_checkpoint(&self, request: CheckpointClaimRequest) -> StoreResult<CheckpointClaimOutcome> {
        match self.submit(Op::ClaimCheckpoint(request)).await? {
            OpOut::Claim(outcome) => Ok(outcome),
            _ => Err(internal("unexpected writer reply")),
        }
    }

    async fn complete_audit_checkpoint(&self, range: CheckpointRange, now: i64) -> StoreResult<()> {
        self.submit_unit(Op::CompleteCheckpoint(range, now)).await
    }

    async fn list_audit_checkpoint_claims(
        &self,
        after_seq_from: i64,
        limit: u32,
    ) -> StoreResult<Vec<CheckpointClaimRow>> {
        audit::list_claims(&self.read_pool, after_seq_from, limit).await
    }

    async fn ensure_field_index(&self, object: &str, path: &[String]) -> StoreResult<()> {
        if !custodian_store::is_identifier(object)
            || path.is_empty()
            || !path.iter().all(|s| custodian_store::is_identifier(s))
        {
            return Err(internal("field index names must be identifiers"));
        }
        // A partial expression index per object and field; list queries spell the same
        // expression and the object as a literal so that SQLite can use it.
        let ddl = format!(
            "CREATE INDEX IF NOT EXISTS {name} ON records (json_extract(fields, '$.{path}'), id) WHERE object = '{object}'",
            name = custodian_store::field_index_name(object, path),
            path = path.join("."),
        );
        self.submit_unit(Op::EnsureIndex(ddl)).await
    }

    async fn list_custom_fields(&self) -> StoreResult<Vec<CustomFieldRow>> {
        let rows = sqlx::query("SELECT * FROM custom_fields ORDER BY created_at, object, name")
            .fetch_all(&mut *self.read_pool.get().await?)
            .await
            .map_err(map_sqlx)?;
        rows.iter()
            .map(|row| {
                let def: String = row.try_get("definition").map_err(map_sqlx)?;
                Ok(CustomFieldRow {
                    object: row.try_get("object").map_err(map_sqlx)?,
                    name: row.try_get("name").map_err(map_sqlx)?,
                    definition: serde_json::from_str(&def).map_err(internal)?,
                    created_at: row.try_get("created_at").map_err(map_sqlx)?,
                })
            })
            .collect()
    }

    async fn add_custom_field(&self, field: CustomFieldRow, audit: AuditDraft) -> StoreResult<()> {
        self.submit_unit(Op::AddCustomField(field, audit)).await
    }

    async fn list_wrapped_keys(&self) -> StoreResult<Vec<WrappedKeyRow>> {
        let rows = sqlx::query("SELECT label, wrapped FROM wrapped_keys ORDER BY label")
            .fetch_all(&mut *self.read_pool.get().await?)
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
        match self.submit(Op::InsertKey(key, audit)).await? {
            OpOut::Bool(b) => Ok(b),
            _ => Err(internal("unexpected writer reply")),
        }
    }

    async fn create_user(&self, user: UserRow, audit: AuditDraft) -> StoreResult<()> {
        self.submit_unit(Op::CreateUser(user, audit)).await
    }

    async fn get_user(&self, id: Uuid) -> StoreResult<Option<UserRow>> {
        let row = sqlx::query("SELECT * FROM users WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&mut *self.read_pool.get().await?)
            .await
            .map_err(map_sqlx)?;
        row.as_ref().map(user_from_row).transpose()
    }

    async fn get_user_by_username(&self, username: &str) -> StoreResult<Option<UserRow>> {
        let row = sqlx::query("SELECT * FROM users WHERE username = ?")
            .bind(username)
            .fetch_optional(&mut *self.read_pool.get().await?)
            .await
            .map_err(map_sqlx)?;
        row.as_ref().map(user_from_row).transpose()
    }

    async fn list_users(&self) -> StoreResult<Vec<UserRow>> {
        let rows = sqlx::query("SELECT * FROM users ORDER BY username")
            .fetch_all(&mut *self.read_pool.get().await?)
            .await
            .map_err(map_sqlx)?;
        rows.iter().map(user_from_row).collect()
    }

    async fn count_users(&self) -> StoreResult<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(&mut *self.read_pool.get().await?)
            .await
            .map_err(map_sqlx)?;
        Ok(n.max(0) as u64)
    }

    async fn create_department(&self, department: DepartmentRow, audit: AuditDraft) -> StoreResult<()> {
        self.submit_unit(Op::CreateDepartment(department, audit)).await
    }

    async fn list_departments(&self) -> StoreResult<Vec<DepartmentRow>> {
        let rows = sqlx::query("SELECT * FROM departments ORDER BY created_at, id")
            .fetch_all(&mut *self.read_pool.get().await?)
            .await
            .map_err(map_sqlx)?;
        rows.iter()
            .map(|row| {
                Ok(DepartmentRow {
                    id: uuid_col(row, "id")?,
                    name: row.try_get("name").map_err(map_sqlx)?,
                    parent_id: opt_uuid_col(row, "parent_id")?,
                    created_at: row.try_get("created_at").map_err(map_sqlx)?,
                })
            })
            .collect()
    }

    async fn create_team(&self, team: TeamRow, audit: AuditDraft) -> StoreResult<()> {
        self.submit_unit(Op::CreateTeam(team, audit)).await
    }

    async fn update_department(&self, department: DepartmentRow, audit: AuditDraft) -> StoreResult<()> {
        self.submit_unit(Op::UpdateDepartment(department, audit)).await
    }

    async fn update_team(&self, team: TeamRow, audit: AuditDraft) -> StoreResult<()> {
        self.submit_unit(Op::UpdateTeam(team, audit)).await
    }

    async fn list_teams(&self) -> StoreResult<Vec<TeamRow>> {
        let rows = sqlx::query("SELECT * FROM teams ORDER BY created_at, id")
            .fetch_all(&mut *self.read_pool.get().await?)
            .await
            .map_err(map_sqlx)?;
        rows.iter()
            .map(|row| {
                Ok(TeamRow {
                    id: uuid_col(row, "id")?,
                    name: row.try_get("name").map_err(map_sqlx)?,
                    department_id: opt_uuid_col(row, "department_id")?,
                    created_at: row.try_get("created_at").map_err(map_sqlx)?,
                })
            })
            .collect()
    }

    async fn create_session(&self, session: SessionRow, audit: AuditDraft) -> StoreResult<()> {
        self.submit_unit(Op::CreateSession(session, audit)).await
    }

    async fn get_session(&self, token_hash: &str) -> StoreResult<Option<SessionRow>> {
        let row = sqlx::query("SELECT * FROM sessions WHERE token_hash = ?")
            .bind(token_hash)
            .fetch_optional(&mut *self.read_pool.get().await?)
            .await
            .map_err(map_sqlx)?;
        row.as_ref().map(session_from_row).transpose()
    }

    async fn get_session_user(&self, token_hash: &str) -> StoreResult<Option<(SessionRow, UserRow)>> {
        let row = sqlx::query(
            "SELECT s.*, u.id AS u_id, u.username AS u_username, u.display_name AS u_display_name, u.password_hash AS u_password_hash, u.role AS u_role, u.department_id AS u_department_id, u.team_id AS u_team_id, u.status AS u_status, u.created_at AS u_created_at, u.email AS u_email \
             FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.token_hash = ?",
        )
        .bind(token_hash)
        .fetch_optional(&mut *self.read_pool.get().await?)
        .await
        .map_err(map_sqlx)?;
        row.as_ref().map(|r| Ok((session_from_row(r)?, user_from_columns(r, "u_")?))).transpose()
    }

    async fn list_user_sessions(&self, user_id: Uuid) -> StoreResult<Vec<SessionRow>> {
        let rows = sqlx::query("SELECT * FROM sessions WHERE user_id = ? ORDER BY created_at DESC")
            .bind(user_id.to_string())
            .fetch_all(&mut *self.read_pool.get().await?)
            .await
            .map_err(map_sqlx)?;
        rows.iter().map(session_from_row).collect()
    }

    async fn delete_user_sessions(&self, user_id: Uuid, audit: AuditDraft) -> StoreResult<u64> {
        match self.submit(Op::DeleteUserSessions(user_id, audit)).await? {
            OpOut::Count(n) => Ok(n),
            _ => Err(internal("unexpected writer reply")),
        }
    }

    async fn update_user(&self, user: UserRow, revoke_sessions: bool, audit: AuditDraft) -> StoreResult<()> {
        self.submit_unit(Op::UpdateUser(user, revoke_sessions, audit)).await
    }

    async fn audit_activity(&self, since: i64) -> StoreResult<Vec<custodian_store::ActivityCount>> {
        let rows = sqlx::query(
            "SELECT actor_id, action, COUNT(*) AS n FROM audit_events WHERE at >= ? GROUP BY actor_id, action",
        )
        .bind(since)
        .fetch_all(&mut *self.read_pool.get().await?)
        .await
        .map_err(map_sqlx)?;
        rows.iter()
            .map(|row| {
                Ok(custodian_store::ActivityCount {
                    actor_id: opt_uuid_col(row, "actor_id")?,
                    action: row.try_get("action").map_err(map_sqlx)?,
                    count: row.try_get("n").map_err(map_sqlx)?,
                })
            })
            .collect()
    }

    async fn query_audit(&self, query: &AuditQuery) -> StoreResult<Vec<AuditRow>> {
        monitor::query_audit(&self.read_pool, query).await
    }

    async fn count_audit(&self, query: &AuditQuery) -> StoreResult<u64> {
        monitor::count_audit(&self.read_pool, query).await
    }

    async fn audit_buckets(&self, query: &BucketQuery) -> StoreResult<Vec<Bucket>> {
        monitor::audit_buckets(&self.read_pool, query).await
    }

    async fn active_actors(&self, since: i64, actions: &[String]) -> StoreResult<Vec<Uuid>> {
        monitor::active_actors(&self.read_pool, since, actions).await
    }

    async fn claim_periodic_job(
        &self,
        job: &str,
        holder: &str,
        now: i64,
        lease_micros: i64,
        every_micros: i64,
    ) -> StoreResult<bool> {
        let op = monitor::MonitorOp::ClaimJob(job.to_owned(), holder.to_owned(), now, lease_micros, every_micros);
        match self.monitor(op).await? {
            monitor::MonitorOut::Inserted(b) => Ok(b),
            _ => Err(internal("unexpected writer reply")),
        }
    }

    async fn release_periodic_job(&self, job: &str, holder: &str) -> StoreResult<()> {
        self.monitor(monitor::MonitorOp::ReleaseJob(job.to_owned(), holder.to_owned())).await.map(|_| ())
    }

    async fn list_alert_rules(&self) -> StoreResult<Vec<AlertRuleRow>> {
        monitor::list_rules(&self.read_pool).await
    }

    async fn put_alert_rule(&self, rule: AlertRuleRow, audit: AuditDraft) -> StoreResult<()> {
        self.monitor(monitor::MonitorOp::PutRule(rule, audit)).await.map(|_| ())
    }

    async fn insert_alert(&self, alert: AlertRow, outbox: Vec<OutboxRow>, audit: AuditDraft) -> StoreResult<bool> {
        match self.monitor(monitor::MonitorOp::InsertAlert(alert, outbox, audit)).await? {
            monitor::MonitorOut::Inserted(b) => Ok(b),
            _ => Err(internal("unexpected writer reply")),
        }
    }

    async fn list_alerts(&self, before: Option<(i64, Uuid)>, limit: u32) -> StoreResult<Vec<AlertRow>> {
        monitor::list_alerts(&self.read_pool, before, limit).await
    }

    async fn ack_alert(&self, id: Uuid, by: Uuid, at: i64, audit: AuditDraft) -> StoreResult<AlertRow> {
        match self.monitor(monitor::MonitorOp::AckAlert(id, by, at, audit)).await? {
            monitor::MonitorOut::Alert(a) => Ok(a),
            _ => Err(internal("unexpected writer reply")),
        }
    }

    async fn list_notifications(
        &self,
        user_id: Uuid,
        before: Option<(i64, Uuid)>,
        limit: u32,
    ) -> StoreResult<Vec<NotificationRow>> {
        monitor::list_notifications(&self.read_pool, user_id, before, limit).await
    }

    async fn ack_notification(
        &self,
        id: Uuid,
        user_id: Uuid,
        at: i64,
        audit: AuditDraft,
    ) -> StoreResult<NotificationRow> {
        match self.monitor(monitor::MonitorOp::AckNotification(id, user_id, at, audit)).await? {
            monitor::MonitorOut::Notification(n) => Ok(n),
            _ => Err(internal("unexpected writer reply")),
        }
    }

    async fn claim_outbox(
        &self,
        claimant: &str,
        now: i64,
        lease_micros: i64,
        limit: u32,
    ) -> StoreResult<Vec<OutboxRow>> {
        match self.monitor(monitor::MonitorOp::ClaimOutbox(claimant.to_owned(), now, lease_micros, limit)).await? {
            monitor::MonitorOut::Outbox(rows) => Ok(rows),
            _ => Err(internal("unexpected writer reply")),
        }
    }

    async fn finish_outbox(&self, id: Uuid, claimant: &str, outcome: DeliveryOutcome) -> StoreResult<()> {
        self.monitor(monitor::MonitorOp::FinishOutbox(id, claimant.to_owned(), outcome)).await.map(|_| ())
    }

    async fn list_outbox(&self, limit: u32) -> StoreResult<Vec<OutboxRow>> {
        monitor::list_outbox(&self.read_pool, limit).await
    }

    async fn match_blocks(&self, object: &str, keys: &[Vec<u8>]) -> StoreResult<Vec<(usize, Uuid)>> {
        duplicates::match_blocks(&self.read_pool, object, keys).await
    }

    async fn match_key_stamp(&self, object: &str) -> StoreResult<i64> {
        duplicates::match_key_stamp(&self.read_pool, object).await
    }

    async fn stamped_match_blocks(&self, object: &str, keys: &[Vec<u8>]) -> StoreResult<(i64, Vec<(usize, Uuid)>)> {
        duplicates::stamped_match_blocks(&self.read_pool, object, keys).await
    }

    async fn dismissed_with(&self, object: &str, record: Uuid, others: &[Uuid]) -> StoreResult<Vec<Uuid>> {
        duplicates::dismissed_with(&self.read_pool, object, record, others).await
    }

    async fn list_dismissals(&self, object: &str) -> StoreResult<Vec<DismissalRow>> {
        duplicates::list_dismissals(&self.read_pool, object).await
    }

    async fn create_scan_job(
        &self,
        job: ScanJobRow,
        queued: custodian_store::JobRow,
        audit: AuditDraft,
    ) -> StoreResult<()> {
        self.submit_unit(Op::CreateScanJob(Box::new((job, queued, audit)))).await
    }

    async fn get_scan_job(&self, id: Uuid) -> StoreResult<Option<ScanJobRow>> {
        duplicates::get_scan_job(&self.read_pool, id).await
    }

    async fn finish_scan_job(&self, job: ScanJobRow, candidates: Vec<CandidateRow>) -> StoreResult<()> {
        self.submit_unit(Op::FinishScanJob(job, candidates)).await
    }

    async fn set_scan_auto_merge(&self, id: Uuid, auto_merge: Value) -> StoreResult<()> {
        self.submit_unit(Op::SetScanAutoMerge(id, auto_merge)).await
    }

    async fn list_candidates(
        &self,
        object: &str,
        status: &str,
        after: Option<Uuid>,
        limit: u32,
    ) -> StoreResult<Vec<CandidateRow>> {
        duplicates::list_candidates(&self.read_pool, object, status, after, limit).await
    }

    async fn get_candidate(&self, id: Uuid) -> StoreResult<Option<CandidateRow>> {
        duplicates::get_candidate(&self.read_pool, id).await
    }

    async fn dismiss_candidate(&self, id: Uuid, dismissal: DismissalRow, audit: AuditDraft) -> StoreResult<()> {
        self.submit_unit(Op::DismissCandidate(id, dismissal, audit)).await
    }

    async fn merged_into(&self, object: &str, loser: Uuid) -> StoreResult<Option<Uuid>> {
        duplicates::merged_into(&self.read_pool, object, loser).await
    }

    async fn list_field_rules(&self) -> StoreResult<Vec<custodian_store::FieldRulesRow>> {
        jobs::list_field_rules(&self.read_pool).await
    }

    async fn put_field_rules(
        &self,
        row: custodian_store::FieldRulesRow,
        job: custodian_store::JobRow,
        audit: AuditDraft,
    ) -> StoreResult<()> {
        self.jobs(jobs::JobsOp::PutRules(row, job, audit)).await.map(|_| ())
    }

    async fn create_job(&self, job: custodian_store::JobRow, audit: AuditDraft) -> StoreResult<()> {
        self.jobs(jobs::JobsOp::Create(job, audit)).await.map(|_| ())
    }

    async fn get_job(&self, id: Uuid) -> StoreResult<Option<custodian_store::JobRow>> {
        jobs::get_job(&self.read_pool, id).await
    }

    async fn claim_job(
        &self,
        claimant: &str,
        now: i64,
        lease_micros: i64,
    ) -> StoreResult<Option<custodian_store::JobRow>> {
        match self.jobs(jobs::JobsOp::Claim { claimant: claimant.to_owned(), now, lease_micros }).await? {
            jobs::JobsOut::Claimed(job) => Ok(*job),
            _ => Err(internal("unexpected writer reply")),
        }
    }

    async fn save_job_progress(&self, progress: custodian_store::JobProgress) -> StoreResult<bool> {
        match self.jobs(jobs::JobsOp::Progress(progress)).await? {
            jobs::JobsOut::Saved(saved) => Ok(saved),
            _ => Err(internal("unexpected writer reply")),
        }
    }

    async fn list_job_violations(
        &self,
        job_id: Uuid,
        scope: &RowScope,
        after: Option<&custodian_store::ViolationRow>,
        limit: u32,
    ) -> StoreResult<Vec<custodian_store::ViolationRow>> {
        jobs::list_violations(&self.read_pool, job_id, scope, after, limit).await
    }

    async fn get_merge(&self, id: Uuid) -> StoreResult<Option<MergeRow>> {
        duplicates::get_merge(&self.read_pool, id).await
    }

    async fn touch_session(&self, token_hash: &str, now: i64) -> StoreResult<()> {
        self.submit_unit(Op::TouchSession(token_hash.to_owned(), now)).await
    }

    async fn delete_session(&self, token_hash: &str, audit: AuditDraft) -> StoreResult<()> {
        self.submit_unit(Op::DeleteSession(token_hash.to_owned(), audit)).await
    }

    // ---- MFA (src/mfa.rs) --------------------------------------------------------------------

    async fn get_user_mfa(&self, user_id: Uuid) -> StoreResult<Option<UserMfaRow>> {
        mfa::get_user_mfa(&self.read_pool, user_id).await
    }

    async fn start_mfa_enrolment(&self, row: UserMfaRow, audit: AuditDraft) -> StoreResult<()> {
        self.submit_unit(Op::Mfa(mfa::MfaOp::Start(row, audit))).await
    }

    async fn confirm_mfa_enrolment(
        &self,
        user_id: Uuid,
        step: i64,
        recovery_code_hashes: Vec<String>,
        now: i64,
        audit: AuditDraft,
    ) -> StoreResult<bool> {
        self.submit_bool(Op::Mfa(mfa::MfaOp::Confirm { user_id, step, recovery_code_hashes, now, audit })).await
    }

    async fn use_mfa_factor(
        &self,
        user_id: Uuid,
        factor: MfaFactor,
        effect: MfaEffect,
        audit: Vec<AuditDraft>,
    ) -> StoreResult<bool> {
        self.submit_bool(Op::Mfa(mfa::MfaOp::Use { user_id, factor, effect, audit })).await
    }

    async fn reset_mfa(&self, user_id: Uuid, audit: AuditDraft) -> StoreResult<bool> {
        self.submit_bool(Op::Mfa(mfa::MfaOp::Reset(user_id, audit))).await
    }

    async fn create_mfa_challenge(&self, challenge: MfaChallengeRow, audit: AuditDraft) -> StoreResult<()> {
        self.submit_unit(Op::Mfa(mfa::MfaOp::CreateChallenge(challenge, audit))).await
    }

    async fn get_mfa_challenge(&self, challenge_hash: &str) -> StoreResult<Option<MfaChallengeRow>> {
        mfa::get_mfa_challenge(&self.read_pool, challenge_hash).await
    }

    async fn list_roles(&self) -> StoreResult<Vec<RoleRow>> {
        access::list_roles(&self.read_pool).await
    }

    async fn create_role(&self, role: RoleRow, audit: AuditDraft) -> StoreResult<()> {
        self.access(access::AccessOp::CreateRole(role, audit)).await.map(|_| ())
    }

    async fn update_role(&self, role: RoleRow, audit: AuditDraft) -> StoreResult<()> {
        self.access(access::AccessOp::UpdateRole(role, audit)).await.map(|_| ())
    }

    async fn delete_role(&self, name: &str, audit: AuditDraft) -> StoreResult<()> {
        self.access(access::AccessOp::DeleteRole(name.to_owned(), audit)).await.map(|_| ())
    }

    async fn create_grant(&self, grant: GrantRow, audit: AuditDraft) -> StoreResult<()> {
        self.access(access::AccessOp::CreateGrant(grant, audit)).await.map(|_| ())
    }

    async fn cache_epoch(&self) -> StoreResult<i64> {
        sqlx::query_scalar("SELECT n FROM cache_epoch WHERE id = 1")
            .fetch_one(&mut *self.read_pool.get().await?)
            .await
            .map_err(map_sqlx)
    }

    async fn list_grants(&self, active_at: Option<i64>) -> StoreResult<Vec<GrantRow>> {
        access::list_grants(&self.read_pool, active_at).await
    }

    async fn get_grant(&self, id: Uuid) -> StoreResult<Option<GrantRow>> {
        access::get_grant(&self.read_pool, id).await
    }

    async fn revoke_grant(&self, id: Uuid, at: i64, by: Option<Uuid>, audit: AuditDraft) -> StoreResult<bool> {
        match self.access(access::AccessOp::RevokeGrant { id, at, by, audit }).await? {
            access::AccessOut::Bool(b) => Ok(b),
            _ => Err(internal("unexpected writer reply")),
        }
    }

    async fn login_counters(&self, keys: &[String]) -> StoreResult<Vec<LoginCounterRow>> {
        access::login_counters(&self.read_pool, keys).await
    }

    async fn record_login_failure(
        &self,
        keys: &[String],
        now: i64,
        forget_before: i64,
    ) -> StoreResult<Vec<LoginCounterRow>> {
        match self.access(access::AccessOp::LoginFailure { keys: keys.to_vec(), now, forget_before }).await? {
            access::AccessOut::Counters(c) => Ok(c),
            _ => Err(internal("unexpected writer reply")),
        }
    }

    async fn clear_login_failures(&self, key: &str) -> StoreResult<()> {
        self.access(access::AccessOp::ClearLoginFailures(key.to_owned())).await.map(|_| ())
    }
}

impl FromStr for Durability {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "full" => Ok(Durability::Full),
            "normal" => Ok(Durability::Normal),
            other => Err(format!("unknown durability {other}")),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use custodian_store::{Column, Filter, FilterOp, FilterValue, ValueKind};

    async fn plan(store: &SqliteStore, query: &ListQuery) -> Vec<String> {
        let (text, binds, _, _) = list_sql(query).expect("sql");
        bind_all(sqlx::query(AssertSqlSafe(format!("EXPLAIN QUERY PLAN {text}"))), binds)
            .fetch_all(&mut *store.read_pool.get().await.expect("read"))
            .await
            .expect("plan")
            .iter()
            .map(|row| row.try_get::<String, _>("detail").expect("detail"))
            .collect()
    }

    /// An equality filter on a field is answered by the field's index once the writer's
    /// statistics refresh has seen the table grow. (Without statistics for `records`, SQLite
    /// picks the (object, updated_at) index and walks the whole object: the duplicate check's
    /// exact lookup then cost ~30 ms per record when importing into a new database.)
    #[tokio::test]
    async fn after_the_statistics_refresh_a_field_filter_uses_the_field_index() {
        let dir = std::env::temp_dir().join(format!("custodian-plan-{}", Uuid::new_v4()));
        let path = dir.join("t.db");
        let store = SqliteStore::open_with(&path, Durability::Normal).await.expect("open");
        store.ensure_field_index("companies", &["uscc".to_owned()]).await.expect("index");
        let mut q = ListQuery::new("companies".to_owned());
        q.filters.push(Filter::Column {
            column: Column::Field { path: vec!["uscc".into()], kind: ValueKind::Text },
            op: FilterOp::Eq(FilterValue::Text("U7".into())),
        });
        q.limit = 20;
        // 2,000 companies written beside the store, as a fast import would.
        let mut conn =
            SqliteConnection::connect_with(&SqliteConnectOptions::new().filename(&path)).await.expect("conn");
        sqlx::query(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000) \
             INSERT INTO records (id, object, version, created_at, updated_at, fields) \
             SELECT printf('00000000-0000-7000-8000-%012d', i), 'companies', 1, i, i, json_object('uscc', 'U' || i) FROM n",
        )
        .execute(&mut conn)
        .await
        .expect("insert");
        sqlx::query("PRAGMA analysis_limit=1000").execute(&mut conn).await.expect("limit");
        sqlx::query(OPTIMIZE_SQL).execute(&mut conn).await.expect("optimize");
        conn.close().await.expect("close");
        // A connection loads the statistics when it opens: the read pool's connections are
        // replaced within READ_CONNECTION_LIFETIME; a new one plans with the index.
        assert_eq!(store.read_pool.lifetime(), READ_CONNECTION_LIFETIME);
        store.read_pool.close().await;
        let store = SqliteStore::open_with(&path, Durability::Normal).await.expect("reopen");
        let index = custodian_store::field_index_name("companies", &["uscc".to_owned()]);
        let after = plan(&store, &q).await;
        assert!(after.iter().any(|d| d.contains(&index)), "{after:?}");
        assert_eq!(store.list_records(&q).await.expect("list").items.len(), 1);
        drop(store);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// An equality filter matching many records reads them from the field's index in id order
    /// and stops at the page: no sort of every match. A field index of the earlier form (value
    /// alone) is dropped when the store opens.
    #[tokio::test]
    async fn a_common_value_is_listed_in_id_order_from_the_field_index() {
        let dir = std::env::temp_dir().join(format!("custodian-plan-{}", Uuid::new_v4()));
        let path = dir.join("t.db");
        let store = SqliteStore::open_with(&path, Durability::Normal).await.expect("open");
        store.ensure_field_index("leads", &["status".to_owned()]).await.expect("index");
        let mut conn =
            SqliteConnection::connect_with(&SqliteConnectOptions::new().filename(&path)).await.expect("conn");
        sqlx::query(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 4000) \
             INSERT INTO records (id, object, version, created_at, updated_at, fields) \
             SELECT printf('00000000-0000-7000-8000-%012d', i), 'leads', 1, i, i, \
                    json_object('status', CASE i % 4 WHEN 0 THEN 'new' WHEN 1 THEN 'working' WHEN 2 THEN 'qualified' ELSE 'lost' END) FROM n",
        )
        .execute(&mut conn)
        .await
        .expect("insert");
        sqlx::query(
            "CREATE INDEX fx_leads_status ON records (json_extract(fields, '$.status')) WHERE object = 'leads'",
        )
        .execute(&mut conn)
        .await
        .expect("old index");
        sqlx::query("PRAGMA analysis_limit=1000").execute(&mut conn).await.expect("limit");
        sqlx::query(OPTIMIZE_SQL).execute(&mut conn).await.expect("optimize");
        conn.close().await.expect("close");
        store.read_pool.close().await;
        drop(store);
        let store = SqliteStore::open_with(&path, Durability::Normal).await.expect("reopen");
        let indexes: Vec<String> =
            sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'index' AND name LIKE 'fx%'")
                .fetch_all(&mut *store.read_pool.get().await.expect("read"))
                .await
                .expect("indexes");
        assert_eq!(indexes, vec![custodian_store::field_index_name("leads", &["status".to_owned()])]);
        let mut q = ListQuery::new("leads".to_owned());
        q.filters.push(Filter::Column {
            column: Column::Field { path: vec!["status".into()], kind: ValueKind::Text },
            op: FilterOp::Eq(FilterValue::Text("new".into())),
        });
        q.limit = 20;
        for descending in [false, true] {
            q.sort.descending = descending;
            q.after = None;
            let steps = plan(&store, &q).await;
            assert!(steps.iter().any(|d| d.contains("fxid_leads_status")), "{steps:?}");
            assert!(!steps.iter().any(|d| d.contains("TEMP B-TREE")), "{steps:?}");
            let page = store.list_records(&q).await.expect("list");
            assert_eq!(page.items.len(), 20);
            let ids: Vec<Uuid> = page.items.iter().map(|r| r.id).collect();
            let mut sorted = ids.clone();
            sorted.sort();
            if descending {
                sorted.reverse();
            }
            assert_eq!(ids, sorted);
            assert!(page.items.iter().all(|r| r.fields["status"] == "new"));
            q.after = page.next.clone();
            let next = store.list_records(&q).await.expect("next");
            assert!(next.items.iter().all(|r| if descending { r.id < ids[19] } else { r.id > ids[19] }));
        }
        drop(store);
        let _ = std::fs::remove_dir_all(dir);
    }
}
