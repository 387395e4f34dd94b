//! Group commit for record writes and audit appends.
//!
//! Every appending transaction holds the `audit_head` row lock until it commits, so with one
//! transaction per request the chain admitted one commit (one WAL flush) at a time. Here one
//! writer task per server, on its own connection, drains the queued `write`/`append_audit`
//! calls into one transaction: all their rows go in with one statement per table over a JSON
//! array (`jsonb_to_recordset`), the audit head is locked once, and one COMMIT acknowledges
//! them all. Several servers still keep one linear chain: each group locks the head.
//!
//! If anything in the group fails (a version mismatch, a unique value taken, a duplicate id,
//! a deadlock), the group's savepoint is rolled back and the jobs are replayed one by one, each
//! under its own savepoint, through the per-record path that names the precise error. Callers
//! are answered only after COMMIT returned.

use crate::stats::StatsKeeper;
use crate::{append_events, apply_record_write, internal, map_sqlx, sql};
use custodian_store::{
    AuditDraft, EncodedEvent, MatchKeySet, RecordWrite, StoreError, StoreResult, WriteBatch, WriterMeter, WriterStats,
    chain_rows,
};
use serde::Serialize;
use serde_json::{Map, Value};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection, Row};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

/// Most jobs committed in one group transaction.
const MAX_GROUP: usize = 512;

/// Why the bulk path gave up; the jobs are replayed one by one.
struct Fallback(String);

impl From<StoreError> for Fallback {
    fn from(e: StoreError) -> Self {
        Fallback(e.to_string())
    }
}

#[derive(Serialize)]
struct RecordRow<'a> {
    id: Uuid,
    object: &'a str,
    version: i64,
    owner_id: Option<Uuid>,
    team_id: Option<Uuid>,
    created_at: i64,
    created_by: Option<Uuid>,
    updated_at: i64,
    updated_by: Option<Uuid>,
    deleted_at: Option<i64>,
    fields: &'a Map<String, Value>,
    lexemes: Vec<String>,
    expected: Option<i64>,
}

#[derive(Serialize)]
struct VersionRow<'a> {
    id: Uuid,
    action: &'a str,
}

#[derive(Serialize)]
struct DigestRow<'a> {
    object: &'a str,
    field: &'a str,
    digest: String,
    record_id: Uuid,
}

#[derive(Serialize)]
struct MatchKeyRow<'a> {
    object: &'a str,
    key: String,
    record_id: Uuid,
}

/// The rows of one job as JSON object texts per table, encoded by the submitting task.
#[derive(Default)]
struct Encoded {
    inserts: Vec<String>,
    updates: Vec<String>,
    updated_ids: Vec<Uuid>,
    versions: Vec<String>,
    blind: Vec<String>,
    unique: Vec<String>,
    /// Strong keys the writes introduce (`RecordWrite::exclusive_keys`).
    exclusive: Vec<String>,
    /// Records whose match keys are replaced, and their new keys.
    keyed_ids: Vec<Uuid>,
    match_keys: Vec<String>,
    events: Vec<EncodedEvent>,
}

fn to_json(value: &impl Serialize) -> StoreResult<String> {
    serde_json::to_string(value).map_err(internal)
}

impl Encoded {
    fn new(records: &[RecordWrite], audit: &[AuditDraft], match_keys: &[MatchKeySet]) -> StoreResult<Encoded> {
        let mut e = Encoded {
            events: audit.iter().map(|d| EncodedEvent::new(d).map_err(internal)).collect::<StoreResult<_>>()?,
            ..Encoded::default()
        };
        for w in records {
            let r = &w.record;
            let row = to_json(&RecordRow {
                id: r.id,
                object: &r.object,
                version: r.version,
                owner_id: r.owner_id,
                team_id: r.team_id,
                created_at: r.created_at,
                created_by: r.created_by,
                updated_at: r.updated_at,
                updated_by: r.updated_by,
                deleted_at: r.deleted_at,
                fields: &r.fields,
                lexemes: sql::search_lexemes(&w.search_text),
                expected: w.expected_version,
            })?;
            match w.expected_version {
                None => e.inserts.push(row),
                Some(_) => {
                    e.updated_ids.push(r.id);
                    e.updates.push(row);
                }
            }
            e.versions.push(to_json(&VersionRow { id: r.id, action: w.action.as_str() })?);
            for (digests, rows) in [
                (&w.blind_indexes, &mut e.blind),
                (&w.unique_keys, &mut e.unique),
                (&w.exclusive_keys, &mut e.exclusive),
            ] {
                for d in digests {
                    rows.push(to_json(&DigestRow {
                        object: &r.object,
                        field: &d.field,
                        digest: hex::encode(&d.digest),
                        record_id: r.id,
                    })?);
                }
            }
        }
        for set in match_keys {
            e.keyed_ids.push(set.record_id);
            for key in &set.keys {
                e.match_keys.push(to_json(&MatchKeyRow {
                    object: &set.object,
                    key: hex::encode(key),
                    record_id: set.record_id,
                })?);
            }
        }
        Ok(e)
    }
}

enum Op {
    Write(WriteBatch),
    Audit(Vec<AuditDraft>),
}

struct Job {
    op: Op,
    encoded: Encoded,
    reply: oneshot::Sender<StoreResult<Vec<i64>>>,
}

/// Handle of the writer task.
pub(crate) struct Writer {
    tx: mpsc::Sender<Job>,
    meter: Arc<WriterMeter>,
}

impl Writer {
    /// The writer pokes `stats` after each group (and stops it when the writer stops).
    /// The writer runs on a thread of its own (`custodian_store::spawn_writer`).
    pub(crate) fn spawn(options: PgConnectOptions, stats: StatsKeeper) -> StoreResult<Writer> {
        let (tx, rx) = mpsc::channel(4096);
        let meter = Arc::new(WriterMeter::default());
        let loop_meter = meter.clone();
        custodian_store::spawn_writer("custodian-pg-writer", move || writer_loop(options, rx, stats, loop_meter))?;
        Ok(Writer { tx, meter })
    }

    pub(crate) fn stats(&self) -> WriterStats {
        self.meter.read()
    }

    pub(crate) async fn write(&self, batch: WriteBatch) -> StoreResult<Vec<i64>> {
        let encoded = Encoded::new(&batch.records, &batch.audit, &batch.match_keys)?;
        self.submit(Op::Write(batch), encoded).await
    }

    pub(crate) async fn append(&self, events: Vec<AuditDraft>) -> StoreResult<Vec<i64>> {
        let encoded = Encoded::new(&[], &events, &[])?;
        self.submit(Op::Audit(events), encoded).await
    }

    async fn submit(&self, op: Op, encoded: Encoded) -> StoreResult<Vec<i64>> {
        let stopped = || StoreError::Unavailable("the PostgreSQL writer has stopped".into());
        let (reply, rx) = oneshot::channel();
        self.tx.send(Job { op, encoded, reply }).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

async fn writer_loop(
    options: PgConnectOptions,
    mut rx: mpsc::Receiver<Job>,
    stats: StatsKeeper,
    meter: Arc<WriterMeter>,
) {
    let mut conn: Option<PgConnection> = None;
    // The chain head as this writer's last group committed it (None: unknown).
    let mut head: Option<Head> = None;
    while let Some(first) = rx.recv().await {
        let mut jobs = vec![first];
        while jobs.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let (n, started) = (jobs.len(), Instant::now());
        // The objects this group writes records of (see `StatsKeeper::written`).
        let objects: Vec<String> = jobs
            .iter()
            .filter_map(|j| match &j.op {
                Op::Write(batch) => Some(batch.records.iter().map(|w| w.record.object.as_str())),
                Op::Audit(_) => None,
            })
            .flatten()
            .collect::<std::collections::BTreeSet<&str>>()
            .into_iter()
            .map(str::to_owned)
            .collect();
        let mut c = match conn.take() {
            Some(c) => c,
            None => match PgConnection::connect_with(&options).await {
                Ok(c) => c,
                Err(e) => {
                    fail_all(jobs, &format!("cannot connect the writer: {e}"));
                    meter.group(n, started.elapsed());
                    continue;
                }
            },
        };
        // A group of audit appends only (the events of reads) extends the head this writer
        // committed last with one statement, if no other writer moved it since.
        let jobs = match head.take() {
            Some(h) if jobs.iter().all(|j| matches!(j.op, Op::Audit(_))) => {
                match append_audit_only(&mut c, jobs, &h).await {
                    Ok(new_head) => {
                        head = Some(new_head);
                        conn = Some(c);
                        meter.group(n, started.elapsed());
                        stats.written(&[]);
                        continue;
                    }
                    Err(jobs) => jobs,
                }
            }
            _ => jobs,
        };
        // A connection that failed outside a job is dropped and replaced on the next group.
        let (usable, committed_head) = run_group(&mut c, jobs).await;
        meter.group(n, started.elapsed());
        stats.written(&objects);
        head = committed_head;
        if usable {
            conn = Some(c);
        }
    }
}

/// Answers every job of a group that could not run with `unavailable` and this reason.
fn fail_all(jobs: Vec<Job>, msg: &str) {
    for job in jobs {
        let _ = job.reply.send(Err(StoreError::Unavailable(msg.to_owned())));
    }
}

async fn exec(conn: &mut PgConnection, sql: &'static str) -> StoreResult<()> {
    sqlx::query(sql).execute(&mut *conn).await.map(|_| ()).map_err(map_sqlx)
}

/// Runs one group transaction; returns whether the connection is still usable, and the chain
/// head the group committed when the bulk path knows it.
async fn run_group(conn: &mut PgConnection, jobs: Vec<Job>) -> (bool, Option<Head>) {
    if let Err(e) = exec(conn, "BEGIN").await {
        fail_all(jobs, &e.to_string());
        return (false, None);
    }
    let mut results: Vec<StoreResult<Vec<i64>>> = Vec::with_capacity(jobs.len());
    let batches: Vec<Option<&WriteBatch>> = jobs
        .iter()
        .map(|j| match &j.op {
            Op::Write(batch) => Some(batch),
            Op::Audit(_) => None,
        })
        .collect();
    let writes: Vec<&RecordWrite> =
        batches.iter().flatten().flat_map(|b| b.records.iter()).filter(|w| !w.exclusive_keys.is_empty()).collect();
    let mut keyed: Vec<String> = batches
        .iter()
        .flatten()
        .flat_map(|b| b.match_keys.iter())
        .filter(|s| !s.keys.is_empty())
        .map(|s| s.object.clone())
        .collect();
    keyed.sort();
    keyed.dedup();
    // Strong-key locks and match-key stamps (with their counter locks) at the top level, before
    // any savepoint: they stay held until COMMIT whichever path below applies the jobs. Then
    // duplicate checks gone stale (see `MatchGuard`), judged with those locks held and before
    // anything is written: those jobs are answered `StaleCheck` and left out of the group.
    let judged = async {
        crate::duplicates::lock_exclusive_keys(conn, &writes).await?;
        crate::duplicates::bump_match_key_stamps(conn, &keyed).await?;
        crate::duplicates::stale_batches(conn, &batches).await
    }
    .await;
    drop((writes, batches));
    let stale = match judged {
        Ok(stale) => stale,
        Err(e) => {
            let _ = exec(conn, "ROLLBACK").await;
            fail_all(jobs, &e.to_string());
            return (false, None);
        }
    };
    let jobs: Vec<Job> = if stale.is_empty() {
        jobs
    } else {
        let (refused, rest): (Vec<_>, Vec<_>) = jobs.into_iter().enumerate().partition(|(i, _)| stale.contains(i));
        for (_, job) in refused {
            let _ = job.reply.send(Err(StoreError::StaleCheck));
        }
        rest.into_iter().map(|(_, job)| job).collect()
    };
    let bulk = match exec(conn, "SAVEPOINT bulk").await {
        Ok(()) => match apply_bulk(conn, &jobs).await {
            Ok(seqs) => exec(conn, "RELEASE SAVEPOINT bulk").await.map(|()| seqs).map_err(Fallback::from),
            Err(f) => Err(f),
        },
        Err(e) => Err(Fallback::from(e)),
    };
    let mut head = None;
    match bulk {
        Ok((seqs, new_head)) => {
            results.extend(seqs.into_iter().map(Ok));
            head = new_head;
        }
        Err(Fallback(reason)) => {
            tracing::debug!(%reason, jobs = jobs.len(), "bulk write fell back to one job at a time");
            if exec(conn, "ROLLBACK TO SAVEPOINT bulk").await.is_err() {
                let _ = exec(conn, "ROLLBACK").await;
                for job in jobs {
                    let _ = job.reply.send(Err(StoreError::Unavailable(format!("write failed: {reason}"))));
                }
                return (false, None);
            }
            for job in &jobs {
                results.push(apply_single(conn, &job.op).await);
            }
        }
    }
    match exec(conn, "COMMIT").await {
        Ok(()) => {
            for (job, result) in jobs.into_iter().zip(results) {
                let _ = job.reply.send(result);
            }
            (true, head)
        }
        Err(e) => {
            let _ = exec(conn, "ROLLBACK").await;
            fail_all(jobs, &format!("commit failed: {e}"));
            (false, None)
        }
    }
}

/// The audit chain's head: the last event's sequence number and hash.
struct Head {
    seq: i64,
    hash: Vec<u8>,
}

/// Appends the events of a group of audit-only jobs with one statement in its own transaction
/// (one round trip, one WAL flush, no explicit BEGIN, savepoint or head read): the head row is
/// moved from `head` to the new head only if it still is `head` — another writer that moved it
/// since holds or held the row lock, and the UPDATE then matches nothing and inserts nothing —
/// and the events are inserted only if it moved. Returns the jobs untouched when the group is
/// too large for one statement, the head moved, or the statement failed (nothing was written
/// then); the locking path takes them.
async fn append_audit_only(conn: &mut PgConnection, jobs: Vec<Job>, head: &Head) -> Result<Head, Vec<Job>> {
    let events: Vec<&EncodedEvent> = jobs.iter().flat_map(|j| j.encoded.events.iter()).collect();
    let size: usize = events.iter().map(|e| e.members_len() + 300).sum();
    if events.is_empty() || size >= MAX_STATEMENT_JSON {
        return Err(jobs);
    }
    let rows = chain_rows(head.seq, &head.hash, &events);
    let wanted = events.len() as u64;
    drop(events);
    let inserted = sqlx::query(
        "WITH head AS (UPDATE audit_head SET seq = $2, hash = $3 WHERE id = 1 AND seq = $4 AND hash = $5 \
         RETURNING 1) \
         INSERT INTO audit_events (seq, at, actor_id, action, object, record_id, request_id, body, prev_hash, hash) \
         SELECT j.seq, j.at, j.actor_id, j.action, j.object, j.record_id, j.request_id, j.body, \
         decode(j.prev_hash, 'hex'), decode(j.hash, 'hex') \
         FROM jsonb_to_recordset($1::jsonb) AS j(seq bigint, at bigint, actor_id uuid, action text, \
         object text, record_id uuid, request_id text, body text, prev_hash text, hash text) \
         WHERE EXISTS (SELECT 1 FROM head)",
    )
    .bind(&rows.json)
    .bind(rows.head_seq)
    .bind(&rows.head_hash)
    .bind(head.seq)
    .bind(&head.hash)
    .execute(&mut *conn)
    .await;
    match inserted {
        Ok(done) if done.rows_affected() == wanted => {
            let mut seqs = rows.seqs.into_iter();
            for job in jobs {
                let mine: Vec<i64> = seqs.by_ref().take(job.encoded.events.len()).collect();
                let _ = job.reply.send(Ok(mine));
            }
            Ok(Head { seq: rows.head_seq, hash: rows.head_hash })
        }
        // Zero rows: another writer moved the head. (All or none: the statement is atomic.)
        Ok(_) => Err(jobs),
        Err(e) => {
            tracing::debug!(error = %e, "audit append without the head lock failed; taking the lock");
            Err(jobs)
        }
    }
}

/// One job under its own savepoint through the per-record path.
async fn apply_single(conn: &mut PgConnection, op: &Op) -> StoreResult<Vec<i64>> {
    exec(conn, "SAVEPOINT job").await?;
    let outcome = async {
        match op {
            Op::Write(batch) => {
                for w in &batch.records {
                    apply_record_write(conn, w).await?;
                }
                crate::duplicates::check_exclusive_keys(conn, &batch.records, &batch.exclusive_key_peers()).await?;
                crate::monitor::insert_notifications(conn, &batch.notifications).await?;
                crate::monitor::insert_outbox(conn, &batch.outbox).await?;
                if !crate::duplicates::stale_batches(conn, &[Some(batch)]).await?.is_empty() {
                    return Err(StoreError::StaleCheck);
                }
                crate::duplicates::write_match_keys(conn, &batch.match_keys).await?;
                if let Some(merge) = &batch.merge {
                    crate::duplicates::apply_merge(conn, merge).await?;
                }
                append_events(conn, &batch.audit).await
            }
            Op::Audit(events) => append_events(conn, events).await,
        }
    }
    .await;
    match outcome {
        Ok(seqs) => {
            exec(conn, "RELEASE SAVEPOINT job").await?;
            Ok(seqs)
        }
        Err(e) => {
            exec(conn, "ROLLBACK TO SAVEPOINT job").await?;
            exec(conn, "RELEASE SAVEPOINT job").await?;
            Err(e)
        }
    }
}

/// Largest JSON text sent with one statement. sqlx 0.9.0 leaves Nagle's algorithm on (its
/// TCP_NODELAY was dropped; transact-rs/sqlx#4335): a message that does not fit the socket's
/// send buffer in one write (16 KiB at first on Linux) leaves a small tail that waits for the
/// server's delayed ACK, 40 ms. Measured here: every statement above ~16 KiB stalled 41–49 ms,
/// none below. Rows are therefore sent in arrays of at most 12 KiB.
const MAX_STATEMENT_JSON: usize = 12 * 1024;

/// `[a,b,c]` arrays of the rows, each at most `MAX_STATEMENT_JSON` long (unless one row is).
fn arrays<'a>(rows: impl Iterator<Item = &'a String>) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::from("[");
    for row in rows {
        if current.len() > 1 && current.len() + row.len() + 2 > MAX_STATEMENT_JSON {
            current.push(']');
            out.push(std::mem::replace(&mut current, String::from("[")));
        }
        if current.len() > 1 {
            current.push(',');
        }
        current.push_str(row);
    }
    if current.len() > 1 {
        current.push(']');
        out.push(current);
    }
    out
}

/// Runs `sql` (a prepared statement: it only inserts) once per array of rows; returns the rows
/// affected in all.
async fn exec_rows(conn: &mut PgConnection, sql: &'static str, arrays: Vec<String>) -> Result<u64, Fallback> {
    exec_arrays(conn, sql, arrays, true).await
}

/// Like [`exec_rows`] for a statement that also reads a table (a join or a lookup): planned at
/// each call (see the crate documentation).
async fn exec_rows_replanned(conn: &mut PgConnection, sql: &'static str, arrays: Vec<String>) -> Result<u64, Fallback> {
    exec_arrays(conn, sql, arrays, false).await
}

async fn exec_arrays(
    conn: &mut PgConnection,
    sql: &'static str,
    arrays: Vec<String>,
    persistent: bool,
) -> Result<u64, Fallback> {
    let mut affected = 0;
    for rows in arrays {
        affected += sqlx::query(sql)
            .persistent(persistent)
            .bind(rows)
            .execute(&mut *conn)
            .await
            .map(|r| r.rows_affected())
            .map_err(|e| Fallback(e.to_string()))?;
    }
    Ok(affected)
}

fn expect_rows(what: &str, done: u64, wanted: usize) -> Result<(), Fallback> {
    if done == wanted as u64 { Ok(()) } else { Err(Fallback(format!("{done} of {wanted} {what} applied"))) }
}

/// Every job's rows with one statement per table; the audit head locked once. Returns the
/// event sequence numbers per job.
async fn apply_bulk(conn: &mut PgConnection, jobs: &[Job]) -> Result<(Vec<Vec<i64>>, Option<Head>), Fallback> {
    // Merges (rare) are written by the per-job path only (see `apply_single`).
    if jobs.iter().any(|j| matches!(&j.op, Op::Write(b) if b.merge.is_some())) {
        return Err(Fallback("a batch with a merge".into()));
    }
    let parts: Vec<&Encoded> = jobs.iter().map(|j| &j.encoded).collect();
    let count = |f: fn(&Encoded) -> usize| parts.iter().map(|p| f(p)).sum::<usize>();

    let updates = count(|p| p.updates.len());
    if updates > 0 {
        let done = exec_rows_replanned(
            conn,
            "UPDATE records AS r SET version = j.version, owner_id = j.owner_id, team_id = j.team_id, \
             updated_at = j.updated_at, updated_by = j.updated_by, deleted_at = j.deleted_at, \
             fields = j.fields, search = array_to_tsvector(j.lexemes) \
             FROM jsonb_to_recordset($1::jsonb) AS j(id uuid, object text, version bigint, owner_id uuid, \
             team_id uuid, updated_at bigint, updated_by uuid, deleted_at bigint, fields jsonb, lexemes text[], \
             expected bigint) \
             WHERE r.id = j.id AND r.object = j.object AND r.version = j.expected",
            arrays(parts.iter().flat_map(|p| p.updates.iter())),
        )
        .await?;
        expect_rows("updates", done, updates)?;
        let ids: Vec<Uuid> = parts.iter().flat_map(|p| p.updated_ids.iter().copied()).collect();
        for sql in
            ["DELETE FROM blind_indexes WHERE record_id = ANY($1)", "DELETE FROM unique_keys WHERE record_id = ANY($1)"]
        {
            sqlx::query(sql)
                .persistent(false)
                .bind(&ids)
                .execute(&mut *conn)
                .await
                .map_err(|e| Fallback(e.to_string()))?;
        }
    }
    let inserts = count(|p| p.inserts.len());
    let done = exec_rows(
        conn,
        "INSERT INTO records (id, object, version, owner_id, team_id, created_at, created_by, updated_at, \
         updated_by, deleted_at, fields, search) \
         SELECT j.id, j.object, j.version, j.owner_id, j.team_id, j.created_at, j.created_by, j.updated_at, \
         j.updated_by, j.deleted_at, j.fields, array_to_tsvector(j.lexemes) \
         FROM jsonb_to_recordset($1::jsonb) AS j(id uuid, object text, version bigint, owner_id uuid, \
         team_id uuid, created_at bigint, created_by uuid, updated_at bigint, updated_by uuid, \
         deleted_at bigint, fields jsonb, lexemes text[]) \
         ON CONFLICT (id) DO NOTHING",
        arrays(parts.iter().flat_map(|p| p.inserts.iter())),
    )
    .await?;
    expect_rows("inserts", done, inserts)?;
    // Each version is the row just written.
    let versions = count(|p| p.versions.len());
    let done = exec_rows_replanned(
        conn,
        "INSERT INTO record_versions (record_id, version, object, action, owner_id, team_id, deleted_at, \
         fields, changed_at, changed_by) \
         SELECT r.id, r.version, r.object, j.action, r.owner_id, r.team_id, r.deleted_at, r.fields, \
         r.updated_at, r.updated_by \
         FROM jsonb_to_recordset($1::jsonb) AS j(id uuid, action text) JOIN records AS r ON r.id = j.id \
         ON CONFLICT (record_id, version) DO NOTHING",
        arrays(parts.iter().flat_map(|p| p.versions.iter())),
    )
    .await?;
    expect_rows("versions", done, versions)?;
    exec_rows(
        conn,
        "INSERT INTO blind_indexes (object, field, digest, record_id) \
         SELECT j.object, j.field, decode(j.digest, 'hex'), j.record_id \
         FROM jsonb_to_recordset($1::jsonb) AS j(object text, field text, digest text, record_id uuid) \
         ON CONFLICT DO NOTHING",
        arrays(parts.iter().flat_map(|p| p.blind.iter())),
    )
    .await?;
    // A value already held (or listed twice) is not inserted; the replay names the holder.
    let unique = count(|p| p.unique.len());
    let done = exec_rows(
        conn,
        "INSERT INTO unique_keys (object, field, digest, record_id) \
         SELECT j.object, j.field, decode(j.digest, 'hex'), j.record_id \
         FROM jsonb_to_recordset($1::jsonb) AS j(object text, field text, digest text, record_id uuid) \
         ON CONFLICT (object, field, digest) DO NOTHING",
        arrays(parts.iter().flat_map(|p| p.unique.iter())),
    )
    .await?;
    expect_rows("unique keys", done, unique)?;
    // Strong keys held by another active record (or twice in this group), unless the two are a
    // pair dismissed as "not a duplicate": the per-record replay names the holder.
    let exclusive = arrays(parts.iter().flat_map(|p| p.exclusive.iter()));
    for keys in exclusive {
        // Key by key through the primary key (a LATERAL with LIMIT is run per key): a join would
        // be planned for the 100 rows PostgreSQL assumes of any jsonb_to_recordset, and hash
        // every blind index of the database for each group.
        let held: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM jsonb_to_recordset($1::jsonb) AS j(object text, field text, digest text, record_id uuid) \
             CROSS JOIN LATERAL (SELECT 1 FROM blind_indexes b \
             JOIN records r ON r.id = b.record_id AND r.deleted_at IS NULL \
             WHERE b.object = j.object AND b.field = j.field AND b.digest = decode(j.digest, 'hex') \
             AND b.record_id <> j.record_id \
             AND NOT EXISTS (SELECT 1 FROM duplicate_dismissals d WHERE d.object = b.object \
             AND ((d.record_a = j.record_id AND d.record_b = b.record_id) \
             OR (d.record_a = b.record_id AND d.record_b = j.record_id))) LIMIT 1) h",
        )
        .persistent(false)
        .bind(keys)
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| Fallback(e.to_string()))?;
        if held > 0 {
            return Err(Fallback(format!("{held} strong keys already held")));
        }
    }

    // Change notifications and their outbox messages (rare: row by row).
    for job in jobs {
        if let Op::Write(batch) = &job.op {
            crate::monitor::insert_notifications(conn, &batch.notifications).await?;
            crate::monitor::insert_outbox(conn, &batch.outbox).await?;
        }
    }

    // Each record's blocking keys replace its previous ones.
    let keyed: Vec<Uuid> = parts.iter().flat_map(|p| p.keyed_ids.iter().copied()).collect();
    if !keyed.is_empty() {
        sqlx::query("DELETE FROM match_keys WHERE record_id = ANY($1)")
            .persistent(false)
            .bind(&keyed)
            .execute(&mut *conn)
            .await
            .map_err(|e| Fallback(e.to_string()))?;
    }
    exec_rows(
        conn,
        "INSERT INTO match_keys (object, key, record_id, stamp) \
         SELECT j.object, decode(j.key, 'hex'), j.record_id, \
         (SELECT s.stamp FROM match_key_stamps s WHERE s.object = j.object) \
         FROM jsonb_to_recordset($1::jsonb) AS j(object text, key text, record_id uuid) \
         ON CONFLICT DO NOTHING",
        arrays(parts.iter().flat_map(|p| p.match_keys.iter())),
    )
    .await?;

    let events: Vec<&EncodedEvent> = parts.iter().flat_map(|p| p.events.iter()).collect();
    let mut seqs = Vec::new();
    let mut new_head = None;
    if !events.is_empty() {
        let head = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE")
            .fetch_optional(&mut *conn)
            .await
            .map_err(|e| Fallback(e.to_string()))?
            .ok_or_else(|| Fallback("the audit chain head is missing".into()))?;
        let seq: i64 = head.try_get("seq").map_err(|e| Fallback(e.to_string()))?;
        let hash: Vec<u8> = head.try_get("hash").map_err(|e| Fallback(e.to_string()))?;
        let (mut head_seq, mut head_hash) = (seq, hash);
        let mut start = 0;
        while start < events.len() {
            // As many events as fit one statement (at least one).
            let mut end = start + 1;
            let mut size = events[start].members_len();
            while end < events.len() && size + events[end].members_len() + 300 < MAX_STATEMENT_JSON {
                size += events[end].members_len() + 300;
                end += 1;
            }
            let rows = chain_rows(head_seq, &head_hash, &events[start..end]);
            exec_rows(
                conn,
                "INSERT INTO audit_events (seq, at, actor_id, action, object, record_id, request_id, body, \
                 prev_hash, hash) \
                 SELECT j.seq, j.at, j.actor_id, j.action, j.object, j.record_id, j.request_id, j.body, \
                 decode(j.prev_hash, 'hex'), decode(j.hash, 'hex') \
                 FROM jsonb_to_recordset($1::jsonb) AS j(seq bigint, at bigint, actor_id uuid, action text, \
                 object text, record_id uuid, request_id text, body text, prev_hash text, hash text)",
                vec![rows.json],
            )
            .await?;
            seqs.extend(rows.seqs);
            (head_seq, head_hash) = (rows.head_seq, rows.head_hash);
            start = end;
        }
        sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
            .bind(head_seq)
            .bind(&head_hash)
            .execute(&mut *conn)
            .await
            .map_err(|e| Fallback(e.to_string()))?;
        new_head = Some(Head { seq: head_seq, hash: head_hash });
    }
    let mut seqs = seqs.into_iter();
    Ok((parts.iter().map(|p| seqs.by_ref().take(p.events.len()).collect()).collect(), new_head))
}
