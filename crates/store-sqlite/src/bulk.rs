//! The writer's fast path: every record write and audit event of a whole commit group applied
//! with a fixed number of statements, whatever the number of records.
//!
//! The SQLite driver runs each statement on its own worker thread, so a statement costs two
//! thread hand-offs; at ~13 statements per record that hand-off, not SQLite, bounded the write
//! rate. Here each table gets one `INSERT … SELECT … FROM jsonb_each(?)` (or `UPDATE … FROM`)
//! over a JSON array holding the rows of the whole group, and the inserts (all but the
//! updates and what they delete) go to SQLite's thread as one command (`INSERT_GROUP`).
//!
//! The rows are encoded as JSON text by the task that submits the write (`Encoded::new`), in
//! parallel with other requests; the single writer only splices texts together, links audit
//! events into the chain and runs the statements.
//!
//! The fast path only succeeds when nothing in the group fails: any version mismatch, unique
//! clash or constraint error makes it return `Err`, the writer rolls the group's savepoint back
//! and replays the jobs one by one through the per-record path, which decides precisely which
//! job fails and why. So both paths have the same outcome; this one is just cheaper.

use crate::{ChainHead, internal, map_sqlx};
use custodian_store::{AuditDraft, EncodedEvent, StoreError, StoreResult, WriteBatch, chain_rows};
use serde::Serialize;
use sqlx::SqliteConnection;
use uuid::Uuid;

/// Why the fast path gave up; the caller replays the jobs one by one.
#[derive(Debug)]
pub(crate) struct Fallback(pub String);

impl From<StoreError> for Fallback {
    fn from(e: StoreError) -> Self {
        Fallback(e.to_string())
    }
}

fn to_json(value: &impl Serialize) -> StoreResult<String> {
    serde_json::to_string(value).map_err(internal)
}

#[derive(Serialize)]
struct RecordRow<'a> {
    id: String,
    object: &'a str,
    version: i64,
    owner_id: Option<Uuid>,
    team_id: Option<Uuid>,
    created_at: i64,
    created_by: Option<Uuid>,
    updated_at: i64,
    updated_by: Option<Uuid>,
    deleted_at: Option<i64>,
    /// The record's fields as JSON text (stored as is).
    fields: &'a str,
    expected: Option<i64>,
}

#[derive(Serialize)]
struct VersionRow<'a> {
    id: &'a str,
    action: &'a str,
}

#[derive(Serialize)]
struct DigestRow<'a> {
    object: &'a str,
    field: &'a str,
    digest: String,
    record_id: &'a str,
}

#[derive(Serialize)]
struct MatchKeyRow<'a> {
    object: &'a str,
    key: String,
    record_id: &'a str,
}

#[derive(Serialize)]
struct SearchRow<'a> {
    id: &'a str,
    tokens: &'a str,
}

/// The rows of one `WriteBatch` (or of bare audit events) as JSON object texts, per table.
#[derive(Default)]
pub(crate) struct Encoded {
    inserts: Vec<String>,
    updates: Vec<String>,
    updated_ids: Vec<String>,
    versions: Vec<String>,
    blind: Vec<String>,
    unique: Vec<String>,
    /// Strong keys the writes introduce (`RecordWrite::exclusive_keys`).
    exclusive: Vec<String>,
    search: Vec<String>,
    /// Records whose match keys are replaced, their new keys, and the objects with new keys
    /// (each once, as JSON strings).
    keyed_ids: Vec<String>,
    match_keys: Vec<String>,
    keyed_objects: Vec<String>,
    pub(crate) events: Vec<EncodedEvent>,
}

impl Encoded {
    pub(crate) fn new(batch: &WriteBatch) -> StoreResult<Encoded> {
        let mut e = Encoded { events: encode_events(&batch.audit)?, ..Encoded::default() };
        for w in &batch.records {
            let r = &w.record;
            let id = r.id.to_string();
            let fields = to_json(&r.fields)?;
            let row = to_json(&RecordRow {
                id: id.clone(),
                object: &r.object,
                version: r.version,
                owner_id: r.owner_id,
                team_id: r.team_id,
                created_at: r.created_at,
                created_by: r.created_by,
                updated_at: r.updated_at,
                updated_by: r.updated_by,
                deleted_at: r.deleted_at,
                fields: &fields,
                expected: w.expected_version,
            })?;
            match w.expected_version {
                None => e.inserts.push(row),
                Some(_) => {
                    e.updated_ids.push(to_json(&id)?);
                    e.updates.push(row);
                }
            }
            e.versions.push(to_json(&VersionRow { id: &id, action: w.action.as_str() })?);
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
                        record_id: &id,
                    })?);
                }
            }
            if !w.search_text.is_empty() {
                e.search.push(to_json(&SearchRow { id: &id, tokens: &w.search_text })?);
            }
        }
        for set in &batch.match_keys {
            let id = set.record_id.to_string();
            e.keyed_ids.push(to_json(&id)?);
            let object = to_json(&set.object)?;
            if !set.keys.is_empty() && !e.keyed_objects.contains(&object) {
                e.keyed_objects.push(object);
            }
            for key in &set.keys {
                e.match_keys.push(to_json(&MatchKeyRow {
                    object: &set.object,
                    key: hex::encode(key),
                    record_id: &id,
                })?);
            }
        }
        Ok(e)
    }

    pub(crate) fn events(drafts: &[AuditDraft]) -> StoreResult<Encoded> {
        Ok(Encoded { events: encode_events(drafts)?, ..Encoded::default() })
    }
}

pub(crate) fn encode_events(drafts: &[AuditDraft]) -> StoreResult<Vec<EncodedEvent>> {
    drafts.iter().map(|d| EncodedEvent::new(d).map_err(internal)).collect()
}

/// `[a,b,c]` from the rows of every part.
fn array<'a>(parts: impl Iterator<Item = &'a Vec<String>>) -> Option<String> {
    let mut out = String::from("[");
    for row in parts.flatten() {
        if out.len() > 1 {
            out.push(',');
        }
        out.push_str(row);
    }
    (out.len() > 1).then(|| {
        out.push(']');
        out
    })
}

async fn exec_json(conn: &mut SqliteConnection, sql: &'static str, payload: Option<String>) -> Result<u64, Fallback> {
    let Some(payload) = payload else { return Ok(0) };
    sqlx::query(sql)
        .bind(payload)
        .execute(&mut *conn)
        .await
        .map(|r| r.rows_affected())
        .map_err(|e| Fallback(e.to_string()))
}

/// Applies the record writes of `parts` and appends their audit events (in order) to the chain
/// at `head`. Returns the sequence numbers of the events. On `Err` the caller must roll back.
pub(crate) async fn apply(
    conn: &mut SqliteConnection,
    parts: &[&Encoded],
    head: &mut ChainHead,
) -> Result<Vec<i64>, Fallback> {
    let expected_updates: usize = parts.iter().map(|p| p.updates.len()).sum();
    if expected_updates > 0 {
        let changed = exec_json(
            conn,
            "UPDATE records SET version = j.value ->> 'version', owner_id = j.value ->> 'owner_id', \
             team_id = j.value ->> 'team_id', updated_at = j.value ->> 'updated_at', \
             updated_by = j.value ->> 'updated_by', deleted_at = j.value ->> 'deleted_at', \
             fields = j.value ->> 'fields' \
             FROM jsonb_each(?) AS j \
             WHERE records.id = j.value ->> 'id' AND records.object = j.value ->> 'object' \
             AND records.version = j.value ->> 'expected'",
            array(parts.iter().map(|p| &p.updates)),
        )
        .await?;
        if changed != expected_updates as u64 {
            return Err(Fallback(format!("{changed} of {expected_updates} updates matched their expected version")));
        }
        for sql in [
            "DELETE FROM record_search WHERE rowid IN \
             (SELECT seq FROM records WHERE id IN (SELECT value FROM json_each(?)))",
            "DELETE FROM blind_indexes WHERE record_id IN (SELECT value FROM json_each(?))",
            "DELETE FROM unique_keys WHERE record_id IN (SELECT value FROM json_each(?))",
        ] {
            exec_json(conn, sql, array(parts.iter().map(|p| &p.updated_ids))).await?;
        }
    }
    // The rest is one command: SQLite's thread runs the statements one after the other, with
    // one hand-off there and back for the group instead of one per statement (each hand-off
    // waited for the writer's thread to be scheduled again: 0.13 ms on average on a busy
    // machine, `perf sched latency`). A table without rows in this group gets an empty array.
    let events: Vec<&EncodedEvent> = parts.iter().flat_map(|p| p.events.iter()).collect();
    let chained = chain_rows(head.seq, &head.hash, &events);
    let payload = |rows: Option<String>| rows.unwrap_or_else(|| "[]".to_owned());
    let held: Vec<i64> = sqlx::query_scalar(INSERT_GROUP)
        .bind(payload(array(parts.iter().map(|p| &p.inserts))))
        .bind(payload(array(parts.iter().map(|p| &p.versions))))
        .bind(payload(array(parts.iter().map(|p| &p.blind))))
        .bind(payload(array(parts.iter().map(|p| &p.unique))))
        .bind(payload(array(parts.iter().map(|p| &p.exclusive))))
        .bind(payload(array(parts.iter().map(|p| &p.search))))
        .bind(payload(array(parts.iter().map(|p| &p.keyed_ids))))
        .bind(payload(array(parts.iter().map(|p| &p.keyed_objects))))
        .bind(payload(array(parts.iter().map(|p| &p.match_keys))))
        .bind(chained.json)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| Fallback(e.to_string()))?;
    // The strong-key check's count is the command's one row; the caller rolls the savepoint
    // back when it is not zero.
    match held.as_slice() {
        [0] => {}
        [n] => return Err(Fallback(format!("{n} strong keys already held"))),
        rows => return Err(Fallback(format!("the group's insert returned {} rows", rows.len()))),
    }
    *head = ChainHead { seq: chained.head_seq, hash: chained.head_hash };
    Ok(chained.seqs)
}

/// The insert of a JSON array of chained audit rows (`chain_rows`).
macro_rules! insert_events_sql {
    () => {
        "INSERT INTO audit_events (seq, at, actor_id, action, object, record_id, request_id, body, prev_hash, hash) \
         SELECT j.value ->> 'seq', j.value ->> 'at', j.value ->> 'actor_id', j.value ->> 'action', \
         j.value ->> 'object', j.value ->> 'record_id', j.value ->> 'request_id', j.value ->> 'body', \
         unhex(j.value ->> 'prev_hash'), unhex(j.value ->> 'hash') FROM jsonb_each(?) AS j"
    };
}

/// The inserts of a bulk group (`apply`), in this order, each over a JSON array bound in turn:
/// records, versions (copied from the rows just written: the fields need not travel twice),
/// blind indexes, unique keys (a plain INSERT: a value already held, by another record or
/// twice in this group, fails the statement and the per-record replay then names the holder),
/// the count of strong keys held by another active record (or twice in this group) unless the
/// two are a pair dismissed as "not a duplicate", search tokens, the records whose blocking keys
/// are replaced, the objects whose keys get one new stamp for the whole group (see
/// `MatchGuard`; they travel apart: picking them out of the keys' rows read all of them a
/// second time, 5% of the time of a 1000-record batch), the keys, and the audit events.
const INSERT_GROUP: &str = concat!(
    "INSERT INTO records (id, object, version, owner_id, team_id, created_at, created_by, \
     updated_at, updated_by, deleted_at, fields) \
     SELECT j.value ->> 'id', j.value ->> 'object', j.value ->> 'version', j.value ->> 'owner_id', \
     j.value ->> 'team_id', j.value ->> 'created_at', j.value ->> 'created_by', \
     j.value ->> 'updated_at', j.value ->> 'updated_by', j.value ->> 'deleted_at', \
     j.value ->> 'fields' FROM jsonb_each(?) AS j; ",
    "INSERT INTO record_versions (record_id, version, object, action, owner_id, team_id, \
     deleted_at, fields, changed_at, changed_by) \
     SELECT r.id, r.version, r.object, j.value ->> 'action', r.owner_id, r.team_id, \
     r.deleted_at, r.fields, r.updated_at, r.updated_by \
     FROM jsonb_each(?) AS j CROSS JOIN records AS r ON r.id = j.value ->> 'id'; ",
    "INSERT OR IGNORE INTO blind_indexes (object, field, digest, record_id) \
     SELECT j.value ->> 'object', j.value ->> 'field', unhex(j.value ->> 'digest'), \
     j.value ->> 'record_id' FROM jsonb_each(?) AS j; ",
    "INSERT INTO unique_keys (object, field, digest, record_id) \
     SELECT j.value ->> 'object', j.value ->> 'field', unhex(j.value ->> 'digest'), \
     j.value ->> 'record_id' FROM jsonb_each(?) AS j; ",
    "SELECT count(*) FROM jsonb_each(?) AS j \
     JOIN blind_indexes b ON b.object = j.value ->> 'object' AND b.field = j.value ->> 'field' \
     AND b.digest = unhex(j.value ->> 'digest') AND b.record_id <> j.value ->> 'record_id' \
     JOIN records r ON r.id = b.record_id AND r.deleted_at IS NULL \
     WHERE NOT EXISTS (SELECT 1 FROM duplicate_dismissals d WHERE d.object = b.object \
     AND ((d.record_a = j.value ->> 'record_id' AND d.record_b = b.record_id) \
     OR (d.record_a = b.record_id AND d.record_b = j.value ->> 'record_id'))); ",
    "INSERT INTO record_search (rowid, tokens) \
     SELECT r.seq, j.value ->> 'tokens' FROM jsonb_each(?) AS j \
     CROSS JOIN records AS r ON r.id = j.value ->> 'id'; ",
    "DELETE FROM match_keys WHERE record_id IN (SELECT value FROM json_each(?)); ",
    "INSERT INTO match_key_stamps (object, stamp) \
     SELECT DISTINCT value, 1 FROM json_each(?) WHERE true \
     ON CONFLICT (object) DO UPDATE SET stamp = stamp + 1; ",
    "INSERT OR IGNORE INTO match_keys (object, key, record_id, stamp) \
     SELECT j.value ->> 'object', unhex(j.value ->> 'key'), j.value ->> 'record_id', \
     (SELECT s.stamp FROM match_key_stamps s WHERE s.object = j.value ->> 'object') FROM jsonb_each(?) AS j; ",
    insert_events_sql!(),
);

/// Links `events` into the chain after `head` and inserts them with one statement.
pub(crate) async fn append_events(
    conn: &mut SqliteConnection,
    head: &mut ChainHead,
    events: &[&EncodedEvent],
) -> StoreResult<Vec<i64>> {
    insert_chained(conn, head, events, insert_events_sql!()).await
}

/// `append_events` in a transaction of its own, sent to SQLite as one command: BEGIN, the
/// insert and COMMIT run on the driver's thread in one go, one hand-off there and back instead
/// of three (the group commit of audited reads, which every read waits for). On an error the
/// transaction may be open (the insert or the commit failed): the caller rolls it back.
pub(crate) async fn append_events_committed(
    conn: &mut SqliteConnection,
    head: &mut ChainHead,
    events: &[&EncodedEvent],
) -> StoreResult<Vec<i64>> {
    insert_chained(conn, head, events, concat!("BEGIN IMMEDIATE; ", insert_events_sql!(), "; COMMIT")).await
}

/// Runs `sql` (the insert of `insert_events_sql!`, alone or wrapped) with `events` linked
/// after `head`, and moves `head` on once it succeeded.
async fn insert_chained(
    conn: &mut SqliteConnection,
    head: &mut ChainHead,
    events: &[&EncodedEvent],
    sql: &'static str,
) -> StoreResult<Vec<i64>> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let rows = chain_rows(head.seq, &head.hash, events);
    sqlx::query(sql).bind(rows.json).execute(&mut *conn).await.map_err(map_sqlx)?;
    *head = ChainHead { seq: rows.head_seq, hash: rows.head_hash };
    Ok(rows.seqs)
}
