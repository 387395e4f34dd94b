//! The verifier: recomputes the hash chain from the stored bodies and every signed checkpoint
//! from the stored events, in one streaming pass, and names the first event that is not as it
//! was written.
//!
//! What it finds, and how it names the first bad sequence number:
//!
//! - an event edited in place (body, number or hash): its content no longer hashes to its hash,
//!   or its hash is not the one its successor recorded as predecessor → that event;
//! - an event deleted: a gap in the numbers → the first missing number;
//! - an event inserted (numbers shifted to make room): its successor links past it → the
//!   inserted event;
//! - events reordered: their hashes cover their numbers and predecessors → the first moved one;
//! - a column (`action`, `actor_id`, …) edited without touching the hashed body → that event;
//! - the tail truncated: a signed checkpoint covers numbers the log no longer has → the first
//!   missing number;
//! - the tail replaced and re-chained (consistent, but new): a signed checkpoint's chain head or
//!   Merkle root no longer matches → the first event not vouched for by a checkpoint that still
//!   matches (the rewrite began there or later: checkpoints bound it, at most N events apart).
//!
//! Checkpoint lines that are garbled, truncated, signed by an unknown key or with a bad
//! signature are reported with their file and line and are not used as evidence.

use crate::Hash;
use crate::checkpoint::{CheckpointEntry, CheckpointFile, CheckpointProblem};
use crate::keys::{AuditPublicKey, KeyId};
use custodian_core::audit::{GENESIS_HASH, MerkleBuilder, chain_hash, merkle_leaf};
use custodian_store::{AuditChainRow, Store, StoreError};
use futures::StreamExt;
use serde::Deserialize;
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Event-level findings kept in the report (all are counted).
const MAX_FINDINGS: usize = 100;
/// How far back an inserted event's successor may link.
const LINK_WINDOW: usize = 256;
/// Event times may go backwards by this much without a warning (clock skew across servers).
const CLOCK_TOLERANCE_MICROS: i64 = 1_000_000;

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("cannot read the audit log after seq {after_seq}: {error}")]
    Store { after_seq: i64, error: StoreError },
}

/// One event that is not as it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub seq: i64,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyStatus {
    /// Every event verifies, and every usable checkpoint matches.
    Intact,
    /// The log was modified; `first_bad` names where.
    Tampered,
    /// The log is consistent with itself, but some checkpoint evidence is unusable (garbled or
    /// truncated lines, unknown keys, bad signatures, checkpoints of no known log): not intact.
    EvidenceProblem,
}

#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    /// Rows read.
    pub events: u64,
    /// Highest sequence number read (0 for an empty log).
    pub last_seq: i64,
    /// Hash of the last event as recomputed.
    pub head: Option<Hash>,
    /// Chain hash of event 1 (names the log in checkpoints).
    pub log_id: Option<Hash>,
    pub first_bad: Option<Finding>,
    /// Event-level findings in the order found (the first `MAX_FINDINGS`).
    pub findings: Vec<Finding>,
    pub findings_total: u64,
    pub checkpoint_files: usize,
    pub checkpoints_read: usize,
    /// Signed by a trusted key, of this log, and matching the stored events.
    pub checkpoints_verified: usize,
    /// Signed by a trusted key, of this log, and no longer matching: evidence of tampering.
    pub checkpoints_failed: Vec<String>,
    pub checkpoints_other_logs: usize,
    /// Keys that signed the verified checkpoints.
    pub signing_keys: BTreeSet<KeyId>,
    /// Highest `to` of a verified checkpoint (0 if none).
    pub covered_through: i64,
    pub checkpoint_problems: Vec<CheckpointProblem>,
    /// Problems with the evidence as a whole (no checkpoint of this log, records of
    /// checkpoints missing from every given file, …).
    pub evidence_problems: Vec<String>,
    pub warnings: Vec<String>,
}

impl VerifyReport {
    pub fn status(&self) -> VerifyStatus {
        if self.first_bad.is_some() {
            VerifyStatus::Tampered
        } else if !self.checkpoint_problems.is_empty() || !self.evidence_problems.is_empty() {
            VerifyStatus::EvidenceProblem
        } else {
            VerifyStatus::Intact
        }
    }

    /// Human-readable report, one fact per line, the verdict last.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut line = |s: String| {
            out.push_str(&s);
            out.push('\n');
        };
        if self.events == 0 {
            line("audit log: empty".into());
        } else {
            line(format!(
                "audit log: {} event{}, seq 1..{}, head {}",
                self.events,
                if self.events == 1 { "" } else { "s" },
                self.last_seq,
                self.head.map(hex::encode).unwrap_or_default()
            ));
        }
        if self.checkpoint_files == 0 {
            line(
                "checkpoints: no checkpoint file; only the chain was checked (a truncated or re-chained tail \
                 cannot be detected without signed checkpoints)"
                    .into(),
            );
        } else {
            let keys: Vec<String> = self.signing_keys.iter().map(ToString::to_string).collect();
            line(format!(
                "checkpoints: {} read from {} file(s); {} verified{}{}",
                self.checkpoints_read,
                self.checkpoint_files,
                self.checkpoints_verified,
                if keys.is_empty() { String::new() } else { format!(" (signed by key {})", keys.join(", ")) },
                if self.covered_through > 0 {
                    format!(", covering seq 1..{}", self.covered_through)
                } else {
                    String::new()
                },
            ));
            if self.checkpoints_other_logs > 0 {
                line(format!(
                    "note: {} checkpoint(s) belong to other audit logs and were skipped",
                    self.checkpoints_other_logs
                ));
            }
            if self.first_bad.is_none() && self.last_seq > self.covered_through && self.covered_through > 0 {
                line(format!(
                    "note: {} not yet covered by a checkpoint (protected by the chain only)",
                    span(self.covered_through + 1, self.last_seq)
                ));
            }
        }
        for w in &self.warnings {
            line(format!("warning: {w}"));
        }
        for p in &self.checkpoint_problems {
            line(format!("checkpoint problem: {}: {}", p.source, p.message));
        }
        for p in &self.evidence_problems {
            line(format!("checkpoint problem: {p}"));
        }
        for f in &self.checkpoints_failed {
            line(format!("checkpoint mismatch: {f}"));
        }
        if let Some(first) = &self.first_bad {
            line(format!("FIRST BAD SEQUENCE NUMBER: {}", first.seq));
            line(format!("  {}", first.message));
            for f in self.findings.iter().filter(|f| *f != first).take(20) {
                line(format!("  also: {}", f.message));
            }
            if self.findings_total > 21 {
                line(format!("  … {} findings in all", self.findings_total));
            }
        }
        match self.status() {
            VerifyStatus::Intact => line("result: INTACT".into()),
            VerifyStatus::Tampered => line(format!(
                "result: TAMPERED (first bad sequence number {})",
                self.first_bad.as_ref().map(|f| f.seq).unwrap_or_default()
            )),
            VerifyStatus::EvidenceProblem => line(
                "result: NOT VERIFIED: the events are consistent with each other, but the checkpoint evidence has \
                 the problems listed above"
                    .into(),
            ),
        }
        out
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "status": match self.status() {
                VerifyStatus::Intact => "intact",
                VerifyStatus::Tampered => "tampered",
                VerifyStatus::EvidenceProblem => "evidence_problem",
            },
            "first_bad_seq": self.first_bad.as_ref().map(|f| f.seq),
            "first_bad_reason": self.first_bad.as_ref().map(|f| f.message.clone()),
            "events": self.events,
            "last_seq": self.last_seq,
            "head": self.head.map(hex::encode),
            "log_id": self.log_id.map(hex::encode),
            "findings": self.findings.iter().map(|f| serde_json::json!({ "seq": f.seq, "message": f.message })).collect::<Vec<_>>(),
            "findings_total": self.findings_total,
            "checkpoint_files": self.checkpoint_files,
            "checkpoints_read": self.checkpoints_read,
            "checkpoints_verified": self.checkpoints_verified,
            "checkpoints_failed": self.checkpoints_failed,
            "checkpoints_other_logs": self.checkpoints_other_logs,
            "covered_through": self.covered_through,
            "signing_keys": self.signing_keys.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "checkpoint_problems": self.checkpoint_problems.iter()
                .map(|p| serde_json::json!({ "file": p.source.file.display().to_string(), "line": p.source.line, "message": p.message }))
                .collect::<Vec<_>>(),
            "evidence_problems": self.evidence_problems,
            "warnings": self.warnings,
        })
    }
}

/// Checks every checkpoint's signature. Returns the usable ones and a problem for each other.
pub fn trusted_checkpoints(
    files: &[CheckpointFile],
    keys: &[AuditPublicKey],
) -> (Vec<CheckpointEntry>, Vec<CheckpointProblem>) {
    let mut good = Vec::new();
    let mut problems = Vec::new();
    for file in files {
        problems.extend(file.problems.iter().cloned());
        for entry in &file.entries {
            match entry.signed.verify(keys) {
                Ok(()) => good.push(entry.clone()),
                Err(p) => problems.push(CheckpointProblem { source: entry.source.clone(), message: p.to_string() }),
            }
        }
    }
    (good, problems)
}

/// Rows handed to the verifying thread at a time.
const BATCH: usize = 1024;
/// Batches in flight between the reading task and the verifying thread.
const BATCHES_IN_FLIGHT: usize = 4;
/// Sequence numbers per query on PostgreSQL.
const PG_PAGE: i64 = 8192;

/// Streams the whole log from `store` and checks it against the checkpoints in `files`, whose
/// signatures must verify with one of `keys`.
///
/// One query streams every row (one snapshot, memory bounded by the batches in flight); a
/// blocking thread verifies while the reading task decodes the next rows, so the database
/// driver and the hashing run on different cores.
pub async fn verify_store(
    store: &dyn Store,
    files: &[CheckpointFile],
    keys: &[AuditPublicKey],
) -> Result<VerifyReport, VerifyError> {
    let (trusted, problems) = trusted_checkpoints(files, keys);
    let verifier = ChainVerifier::new(trusted);
    let max_seq = store.audit_max_seq().await.map_err(|error| VerifyError::Store { after_seq: 0, error })?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<AuditChainRow>>(BATCHES_IN_FLIGHT);
    let worker = tokio::task::spawn_blocking(move || {
        let mut verifier = verifier;
        while let Some(batch) = rx.blocking_recv() {
            for row in batch {
                verifier.push(row);
            }
        }
        verifier
    });
    let mut failure = None;
    if store.backend() == "postgres" {
        // The database server produces rows on one core per query: on PostgreSQL two queries
        // over consecutive pages run at once (the SQLite driver gains nothing from it).
        use futures::TryStreamExt;
        let ranges = (0..=max_seq.max(0) / PG_PAGE)
            .map(|p| (if p == 0 { i64::MIN } else { p * PG_PAGE }, ((p + 1) * PG_PAGE).min(max_seq)));
        let mut pages = futures::stream::iter(ranges)
            .map(|(after, through)| async move {
                let rows: Result<Vec<AuditChainRow>, StoreError> =
                    store.audit_chain(after, Some(through)).try_collect().await;
                rows.map_err(|error| VerifyError::Store { after_seq: after.max(0), error })
            })
            .buffered(2);
        while let Some(page) = pages.next().await {
            match page {
                Ok(rows) => {
                    if tx.send(rows).await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
    } else {
        // From the lowest possible number, so that rows stored under 0 or below are seen; up to
        // the highest number stored when verification began (later appends are for next time).
        let mut stream = store.audit_chain(i64::MIN, Some(max_seq));
        let mut batch = Vec::with_capacity(BATCH);
        let mut last_seq = 0;
        while let Some(row) = stream.next().await {
            match row {
                Ok(row) => {
                    last_seq = row.seq;
                    batch.push(row);
                }
                Err(error) => {
                    failure = Some(VerifyError::Store { after_seq: last_seq, error });
                    break;
                }
            }
            if batch.len() == BATCH && tx.send(std::mem::replace(&mut batch, Vec::with_capacity(BATCH))).await.is_err()
            {
                break;
            }
        }
        if !batch.is_empty() {
            let _ = tx.send(batch).await;
        }
    }
    drop(tx);
    let verifier = worker.await.map_err(|e| VerifyError::Store {
        after_seq: 0,
        error: StoreError::Internal(format!("the verifier thread failed: {e}")),
    })?;
    if let Some(e) = failure {
        return Err(e);
    }
    let mut report = verifier.finish();
    report.checkpoint_files = files.len();
    report.checkpoints_read = files.iter().map(|f| f.lines).sum();
    report.checkpoint_problems = problems;
    let all_wrong_key = !report.checkpoint_problems.is_empty()
        && report.checkpoint_problems.iter().all(|p| p.message.contains("not a trusted public key"));
    if all_wrong_key && report.checkpoints_verified == 0 && report.checkpoints_failed.is_empty() {
        report.evidence_problems.push(
            "no checkpoint is signed by a trusted key: the --public-key given is not the key that signed this \
             checkpoint file"
                .into(),
        );
    }
    cross_check_claims(store, files, &mut report).await?;
    Ok(report)
}

/// Compares what the servers recorded in the database about the checkpoints they wrote with
/// the checkpoint files given. These records are not evidence of integrity (they are in the
/// database), but an honest system never has records beyond the end of its log.
async fn cross_check_claims(
    store: &dyn Store,
    files: &[CheckpointFile],
    report: &mut VerifyReport,
) -> Result<(), VerifyError> {
    let mut written = Vec::new();
    let mut after = 0;
    loop {
        let page = store
            .list_audit_checkpoint_claims(after, 10_000)
            .await
            .map_err(|error| VerifyError::Store { after_seq: report.last_seq, error })?;
        let Some(last) = page.last() else { break };
        after = last.seq_from;
        written.extend(page.into_iter().filter(|c| c.written_at.is_some()));
    }
    let Some(max_written) = written.iter().map(|c| c.seq_to).max() else {
        return Ok(());
    };
    if max_written > report.last_seq && report.first_bad.as_ref().is_none_or(|f| f.seq > report.last_seq + 1) {
        let finding = Finding {
            seq: report.last_seq + 1,
            message: format!(
                "seq {}: the log ends at seq {}, but the database's own records say checkpoints were written \
                 through seq {max_written}: events {}..{max_written} were removed (tail truncated)",
                report.last_seq + 1,
                report.last_seq,
                report.last_seq + 1
            ),
        };
        report.findings_total += 1;
        report.findings.insert(0, finding.clone());
        report.first_bad = Some(finding);
    }
    let in_files: BTreeSet<(i64, i64)> = files
        .iter()
        .flat_map(|f| f.entries.iter().map(|e| (e.signed.checkpoint.seq_from, e.signed.checkpoint.seq_to)))
        .collect();
    let missing: Vec<_> = written.iter().filter(|c| !in_files.contains(&(c.seq_from, c.seq_to))).collect();
    if files.is_empty() {
        report.evidence_problems.push(format!(
            "the database records {} checkpoint(s) written through seq {max_written} (last by {}), but no \
             checkpoint file was found: pass --checkpoint-file",
            written.len(),
            written.last().map(|c| c.claimant.as_str()).unwrap_or_default()
        ));
    } else if let Some(first) = missing.first() {
        report.warnings.push(format!(
            "{} checkpoint(s) recorded in the database are in none of the given files (the first: seq {}..{} by {}): \
             the file was truncated, or other servers wrote them to their own files (pass every file)",
            missing.len(),
            first.seq_from,
            first.seq_to,
            first.claimant
        ));
    }
    Ok(())
}

/// The fields of a stored body that are also stored as columns.
#[derive(Deserialize)]
struct BodyColumns<'a> {
    at: i64,
    #[serde(borrow)]
    actor_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    action: Cow<'a, str>,
    #[serde(borrow)]
    object: Option<Cow<'a, str>>,
    #[serde(borrow)]
    record_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    request_id: Option<Cow<'a, str>>,
}

#[derive(Debug, Clone)]
enum Outcome {
    Match,
    Mismatch(Vec<&'static str>),
    /// Events from this number on, inside the range, are not in the log.
    Missing(i64),
}

/// One checkpointed range being recomputed (several checkpoints of the same range share it).
#[derive(Debug)]
struct RangeState {
    from: i64,
    to: i64,
    entries: Vec<CheckpointEntry>,
    builder: MerkleBuilder,
    prev_at_start: Option<Hash>,
    /// A number inside the range was missing or stored twice.
    disturbed: bool,
    outcomes: Vec<Outcome>,
    finished: bool,
    at_of_last: Option<i64>,
}

pub struct ChainVerifier {
    pending: Vec<CheckpointEntry>,
    ranges: Vec<RangeState>,
    next_range: usize,
    active: Vec<usize>,
    started: bool,
    expected: i64,
    prev: Hash,
    window: VecDeque<(i64, Hash)>,
    events: u64,
    last_seq: i64,
    log_id: Option<Hash>,
    other_logs: usize,
    no_log_matches: Option<String>,
    findings: Vec<Finding>,
    findings_total: u64,
    first_bad: Option<Finding>,
    max_at: Option<(i64, i64)>,
    clock_backwards: u64,
    first_clock_backwards: Option<String>,
    /// Reused buffer of `columns_prefix`.
    scratch: Vec<u8>,
}

fn as_hash(bytes: &Option<Vec<u8>>) -> Option<Hash> {
    bytes.as_deref().and_then(|b| b.try_into().ok())
}

impl ChainVerifier {
    /// `checkpoints` must already have had their signatures checked.
    pub fn new(checkpoints: Vec<CheckpointEntry>) -> ChainVerifier {
        ChainVerifier {
            pending: checkpoints,
            ranges: Vec::new(),
            next_range: 0,
            active: Vec::new(),
            started: false,
            expected: 1,
            prev: GENESIS_HASH,
            window: VecDeque::with_capacity(LINK_WINDOW),
            events: 0,
            last_seq: 0,
            log_id: None,
            other_logs: 0,
            no_log_matches: None,
            findings: Vec::new(),
            findings_total: 0,
            first_bad: None,
            max_at: None,
            clock_backwards: 0,
            first_clock_backwards: None,
            scratch: Vec::with_capacity(256),
        }
    }

    fn finding(&mut self, seq: i64, message: String) {
        let f = Finding { seq, message };
        if self.first_bad.as_ref().is_none_or(|b| seq < b.seq) {
            self.first_bad = Some(f.clone());
        }
        self.findings_total += 1;
        if self.findings.len() < MAX_FINDINGS {
            self.findings.push(f);
        }
    }

    /// Keeps the checkpoints of this log (named by the hash of event 1) and builds the ranges.
    fn select_checkpoints(&mut self, first: &AuditChainRow) {
        let entries = std::mem::take(&mut self.pending);
        let mut ids: Vec<Hash> = Vec::new();
        if first.seq == 1 {
            if let Some(stored) = as_hash(&first.hash) {
                ids.push(stored);
            }
            if let Some(body) = &first.body {
                ids.push(chain_hash(&GENESIS_HASH, 1, body));
            }
        }
        let total = entries.len();
        let mut mine: Vec<CheckpointEntry> = Vec::new();
        let mut others: BTreeSet<Hash> = BTreeSet::new();
        for e in entries {
            // Without event 1 the log cannot be named: every checkpoint is checked.
            if ids.is_empty() || ids.contains(&e.signed.checkpoint.log_id) {
                mine.push(e);
            } else {
                others.insert(e.signed.checkpoint.log_id);
            }
        }
        self.other_logs = total - mine.len();
        if mine.is_empty() && total > 0 {
            let shown: Vec<String> = others.iter().take(3).map(|h| hex::encode(&h[..8])).collect();
            self.no_log_matches = Some(format!(
                "none of the {total} signed checkpoints belongs to this audit log (log id {}; the checkpoints are \
                 for log id(s) {}): the wrong checkpoint file, or event 1 was replaced and the whole log re-chained",
                ids.first().map(|h| hex::encode(&h[..8])).unwrap_or_default(),
                shown.join(", ")
            ));
        }
        let mut by_range: BTreeMap<(i64, i64), Vec<CheckpointEntry>> = BTreeMap::new();
        for e in mine {
            by_range.entry((e.signed.checkpoint.seq_from, e.signed.checkpoint.seq_to)).or_default().push(e);
        }
        self.ranges = by_range
            .into_iter()
            .map(|((from, to), entries)| RangeState {
                from,
                to,
                entries,
                builder: MerkleBuilder::default(),
                prev_at_start: None,
                disturbed: false,
                outcomes: Vec::new(),
                finished: false,
                at_of_last: None,
            })
            .collect();
    }

    /// Starts the ranges that begin at or before `seq` (those beginning before it began in a
    /// gap of missing events).
    fn start_ranges(&mut self, seq: i64) {
        while let Some(r) = self.ranges.get_mut(self.next_range) {
            if r.from > seq {
                break;
            }
            self.next_range += 1;
            if r.to < seq {
                // Entirely inside a gap of missing events.
                r.finished = true;
                r.outcomes = r.entries.iter().map(|_| Outcome::Missing(r.from)).collect();
                continue;
            }
            if r.from == seq {
                r.prev_at_start = Some(self.prev);
            } else {
                r.disturbed = true;
            }
            self.active.push(self.next_range - 1);
        }
    }

    fn disturb_ranges(&mut self, from: i64, to: i64) {
        for &i in &self.active {
            let r = &mut self.ranges[i];
            if r.from <= to && r.to >= from {
                r.disturbed = true;
            }
        }
    }

    /// Feeds one stored row, in seq order.
    pub fn push(&mut self, row: AuditChainRow) {
        let seq = row.seq;
        self.events += 1;
        if seq < 1 {
            self.finding(seq, format!("seq {seq}: an event numbered below 1, outside the chain (inserted)"));
            return;
        }
        if !self.started {
            self.started = true;
            self.select_checkpoints(&row);
        }
        if seq < self.expected {
            self.finding(
                seq,
                format!("seq {seq}: stored more than once (an event was inserted under a number already in use)"),
            );
            self.disturb_ranges(seq, seq);
            return;
        }
        let mut relinked = false;
        if seq > self.expected {
            let (a, b) = (self.expected, seq - 1);
            let what = if a == b { format!("seq {a} is missing") } else { format!("seqs {a}..{b} are missing") };
            self.finding(a, format!("{what} (deleted from the log)"));
            self.disturb_ranges(a, b);
            for &i in &self.active {
                let r = &mut self.ranges[i];
                if r.to <= b {
                    Self::finish_range(r, None);
                }
            }
            let ranges = &self.ranges;
            self.active.retain(|&i| !ranges[i].finished);
            // Continue from the predecessor the next event recorded, so one deletion is one finding.
            if let Some(p) = as_hash(&row.prev_hash) {
                self.prev = p;
                relinked = true;
            }
            self.expected = seq;
        }
        self.start_ranges(seq);
        self.last_seq = seq;

        let stored_prev = as_hash(&row.prev_hash);
        let stored_hash = as_hash(&row.hash);
        let computed = row.body.as_deref().map(|body| chain_hash(&self.prev, seq, body));
        let link_ok = stored_prev == Some(self.prev);
        let hash_ok = computed.is_some() && computed == stored_hash;
        let effective = if link_ok && hash_ok {
            computed.unwrap_or(GENESIS_HASH)
        } else {
            self.attribute(&row, stored_prev, stored_hash, link_ok, relinked);
            stored_hash.or(computed).unwrap_or(GENESIS_HASH)
        };
        if seq == 1 {
            self.log_id = Some(effective);
        }
        let at = self.check_columns(&row);

        let leaf = merkle_leaf(seq, &effective);
        let mut finished_any = false;
        for &i in &self.active {
            let r = &mut self.ranges[i];
            if r.from <= seq && seq <= r.to {
                r.builder.push(leaf);
                if seq == r.to {
                    r.at_of_last = at;
                    Self::finish_range(r, Some(effective));
                    finished_any = true;
                }
            }
        }
        if finished_any {
            let ranges = &self.ranges;
            self.active.retain(|&i| !ranges[i].finished);
        }

        if self.window.len() == LINK_WINDOW {
            self.window.pop_front();
        }
        self.window.push_back((seq, effective));
        self.prev = effective;
        self.expected = seq + 1;
    }

    /// Names the event to blame when a row does not extend the chain as recomputed.
    fn attribute(
        &mut self,
        row: &AuditChainRow,
        stored_prev: Option<Hash>,
        stored_hash: Option<Hash>,
        link_ok: bool,
        relinked: bool,
    ) {
        let seq = row.seq;
        let Some(body) = row.body.as_deref() else {
            self.finding(seq, format!("seq {seq}: the event has no body"));
            return;
        };
        if link_ok || relinked {
            self.finding(
                seq,
                format!("seq {seq}: the event's content does not match its hash (edited, reordered or renumbered)"),
            );
            return;
        }
        let self_consistent =
            matches!((stored_prev, stored_hash), (Some(p), Some(h)) if chain_hash(&p, seq, body) == h);
        let linked_to = stored_prev.and_then(|p| self.window.iter().rev().find(|(_, h)| *h == p).map(|(s, _)| *s));
        match linked_to {
            Some(i) if i < seq - 1 => {
                let what =
                    if i + 1 == seq - 1 { format!("seq {}", i + 1) } else { format!("seqs {}..{}", i + 1, seq - 1) };
                self.finding(
                    i + 1,
                    format!(
                        "seq {}: {what} do(es) not belong to the chain: seq {seq} links directly to seq {i} \
                         (events inserted)",
                        i + 1
                    ),
                );
            }
            _ if self_consistent && seq > 1 => self.finding(
                seq - 1,
                format!(
                    "seq {}: the event was altered: its hash is not the one seq {seq} recorded for its predecessor \
                     (edited and re-hashed, or replaced)",
                    seq - 1
                ),
            ),
            _ if seq == 1 => self.finding(1, "seq 1: the event does not start from the genesis hash".into()),
            _ => self.finding(
                seq,
                format!(
                    "seq {seq}: neither its link to seq {} nor its hash verify (edited, reordered or renumbered)",
                    seq - 1
                ),
            ),
        }
    }

    /// Checks that the columns stored beside the body say what the hashed body says (queries
    /// filter on the columns). Returns the event time.
    fn check_columns(&mut self, row: &AuditChainRow) -> Option<i64> {
        let seq = row.seq;
        let body = row.body.as_deref()?;
        if columns_prefix(row, &mut self.scratch)
            && body.starts_with(&self.scratch)
            && matches!(body.get(self.scratch.len()), Some(b',' | b'}'))
        {
            // The body starts with exactly what the columns say: they agree.
            self.check_clock(seq, row.at?);
            return row.at;
        }
        let parsed = std::str::from_utf8(body)
            .map_err(|e| e.to_string())
            .and_then(|text| serde_json::from_str::<BodyColumns<'_>>(text).map_err(|e| e.to_string()));
        let b = match parsed {
            Ok(b) => b,
            Err(e) => {
                self.finding(seq, format!("seq {seq}: the body is not an audit event ({e})"));
                return None;
            }
        };
        let mut differs: Vec<String> = Vec::new();
        let mut compare = |name: &str, column: Option<&str>, hashed: Option<&str>| {
            if column != hashed {
                let show = |v: Option<&str>| v.map(|v| format!("{v:?}")).unwrap_or_else(|| "NULL".into());
                differs.push(format!("`{name}` is {} but the hashed event says {}", show(column), show(hashed)));
            }
        };
        compare("action", row.action.as_deref(), Some(&b.action));
        compare("actor_id", row.actor_id.as_deref(), b.actor_id.as_deref());
        compare("object", row.object.as_deref(), b.object.as_deref());
        compare("record_id", row.record_id.as_deref(), b.record_id.as_deref());
        compare("request_id", row.request_id.as_deref(), b.request_id.as_deref());
        if row.at != Some(b.at) {
            let column = row.at.map(|a| a.to_string()).unwrap_or_else(|| "NULL or not an integer".into());
            differs.push(format!("`at` is {column} but the hashed event says {}", b.at));
        }
        if !differs.is_empty() {
            self.finding(seq, format!("seq {seq}: column edited: {}", differs.join("; ")));
        }
        self.check_clock(seq, b.at);
        Some(b.at)
    }

    fn check_clock(&mut self, seq: i64, at: i64) {
        match self.max_at {
            Some((max_seq, max_at)) if at < max_at - CLOCK_TOLERANCE_MICROS => {
                self.clock_backwards += 1;
                if self.first_clock_backwards.is_none() {
                    self.first_clock_backwards = Some(format!(
                        "seq {seq} is dated {} but seq {max_seq} before it {}",
                        format_micros(at),
                        format_micros(max_at)
                    ));
                }
            }
            Some((_, max_at)) if at <= max_at => {}
            _ => self.max_at = Some((seq, at)),
        }
    }

    fn finish_range(r: &mut RangeState, head: Option<Hash>) {
        r.finished = true;
        let root = r.builder.root();
        r.outcomes = r
            .entries
            .iter()
            .map(|e| {
                let c = &e.signed.checkpoint;
                if r.disturbed {
                    return Outcome::Mismatch(vec!["events inside the range are missing or duplicated"]);
                }
                let mut what = Vec::new();
                if r.prev_at_start != Some(c.prev_head) {
                    what.push("the hash before the range differs");
                }
                if head != Some(c.head) {
                    what.push("the chain head differs");
                }
                if root != Some(c.root) {
                    what.push("the Merkle root differs");
                }
                if what.is_empty() { Outcome::Match } else { Outcome::Mismatch(what) }
            })
            .collect();
    }

    pub fn finish(mut self) -> VerifyReport {
        if !self.started {
            // An empty log: every checkpoint is of a log that lost all its events (or of
            // another log); they cannot be told apart.
            self.select_checkpoints(&AuditChainRow::default());
        }
        // Ranges the log does not reach.
        let last = self.last_seq;
        for r in &mut self.ranges {
            if !r.finished {
                r.finished = true;
                r.outcomes = r.entries.iter().map(|_| Outcome::Missing(last.max(r.from - 1) + 1)).collect();
            }
        }
        let chain_first = self.first_bad.as_ref().map(|f| f.seq).unwrap_or(i64::MAX);
        let good_tos: Vec<i64> = self
            .ranges
            .iter()
            .filter(|r| r.outcomes.iter().any(|o| matches!(o, Outcome::Match)))
            .map(|r| r.to)
            .collect();
        let mut report = VerifyReport { events: self.events, last_seq: self.last_seq, ..VerifyReport::default() };
        let mut candidates: Vec<Finding> = Vec::new();
        for r in &self.ranges {
            for (e, outcome) in r.entries.iter().zip(&r.outcomes) {
                let c = &e.signed.checkpoint;
                let signed_at = format_micros(c.at);
                match outcome {
                    Outcome::Match => {
                        report.checkpoints_verified += 1;
                        report.signing_keys.insert(e.signed.key_id);
                        report.covered_through = report.covered_through.max(c.seq_to);
                        if let Some(at) = r.at_of_last
                            && c.at < at - CLOCK_TOLERANCE_MICROS
                        {
                            report.warnings.push(format!(
                                "checkpoint {} was signed at {signed_at}, before event {} it covers ({}): a clock \
                                 moved backwards",
                                e.source,
                                c.seq_to,
                                format_micros(at)
                            ));
                        }
                    }
                    Outcome::Missing(first_missing) => {
                        report.checkpoints_failed.push(format!(
                            "{} (seq {}..{}, signed {signed_at}): the log ends at seq {last}; {} gone",
                            e.source,
                            c.seq_from,
                            c.seq_to,
                            span(*first_missing, c.seq_to)
                        ));
                        candidates.push(Finding {
                            seq: *first_missing,
                            message: format!(
                                "seq {first_missing}: {} missing, yet the checkpoint {} signed {signed_at} covers it \
                                 (tail truncated or deleted)",
                                span(*first_missing, c.seq_to),
                                e.source
                            ),
                        });
                    }
                    Outcome::Mismatch(what) => {
                        report.checkpoints_failed.push(format!(
                            "{} (seq {}..{}, signed {signed_at}): {}",
                            e.source,
                            c.seq_from,
                            c.seq_to,
                            what.join(", ")
                        ));
                        if chain_first <= c.seq_to {
                            continue; // explained by the chain finding
                        }
                        let vouched = good_tos.iter().copied().filter(|&t| t < c.seq_to).max().unwrap_or(0);
                        let prev_ok = r.prev_at_start == Some(c.prev_head);
                        let bound = if prev_ok { (vouched + 1).max(c.seq_from) } else { vouched + 1 };
                        candidates.push(Finding {
                            seq: bound,
                            message: format!(
                                "seq {bound}: {} no longer matching the checkpoint {} signed {signed_at} ({}), \
                                 while the chain is consistent: the log was replaced and re-chained from here (seq \
                                 {bound} is the first event not vouched for by a matching checkpoint)",
                                span(bound, c.seq_to),
                                e.source,
                                what.join(", ")
                            ),
                        });
                    }
                }
            }
        }
        for c in candidates {
            self.finding(c.seq, c.message);
        }
        // Two valid checkpoints of one log that disagree on the chain head at the same number
        // mean the signing key signed two histories.
        let mut heads: BTreeMap<i64, (Hash, String)> = BTreeMap::new();
        for r in &self.ranges {
            for e in &r.entries {
                let c = &e.signed.checkpoint;
                match heads.get(&c.seq_to) {
                    Some((h, src)) if *h != c.head => report.evidence_problems.push(format!(
                        "checkpoints {src} and {} disagree on the chain head at seq {}: two histories were signed",
                        e.source, c.seq_to
                    )),
                    Some(_) => {}
                    None => {
                        heads.insert(c.seq_to, (c.head, e.source.to_string()));
                    }
                }
            }
        }
        if self.clock_backwards > 0 {
            report.warnings.push(format!(
                "event times go backwards by more than 1 s {} time(s) (first: {}): a clock moved backwards or \
                 servers' clocks disagree; order is by sequence number, which is what the chain protects",
                self.clock_backwards,
                self.first_clock_backwards.clone().unwrap_or_default()
            ));
        }
        if let Some(p) = self.no_log_matches.take() {
            report.evidence_problems.push(p);
        }
        report.head = (self.events > 0).then_some(self.prev);
        report.log_id = self.log_id;
        report.checkpoints_other_logs = self.other_logs;
        report.first_bad = self.first_bad;
        report.findings = self.findings;
        report.findings.sort_by_key(|f| f.seq);
        report.findings_total = self.findings_total;
        report
    }
}

/// Writes into `buf` how a canonical body begins when its fields agree with the row's columns
/// (`AuditDraft::canonical_body` puts them first, in this order). `false` when the columns
/// cannot be written so (no time).
fn columns_prefix(row: &AuditChainRow, buf: &mut Vec<u8>) -> bool {
    use std::io::Write;
    let Some(at) = row.at else { return false };
    buf.clear();
    if write!(buf, "{{\"at\":{at}").is_err() {
        return false;
    }
    for (name, value) in [
        ("actor_id", &row.actor_id),
        ("action", &row.action),
        ("object", &row.object),
        ("record_id", &row.record_id),
        ("request_id", &row.request_id),
    ] {
        buf.extend_from_slice(b",\"");
        buf.extend_from_slice(name.as_bytes());
        buf.extend_from_slice(b"\":");
        match value {
            None => buf.extend_from_slice(b"null"),
            Some(v) => {
                if serde_json::to_writer(&mut *buf, v).is_err() {
                    return false;
                }
            }
        }
    }
    true
}

/// "event 7" or "events 7..9" (with the verb's number left to the caller: "are" reads for both).
fn span(from: i64, to: i64) -> String {
    if from == to { format!("event {from} is") } else { format!("events {from}..{to} are") }
}

/// `2024-05-01T12:00:00.123456Z` for microseconds since the epoch (or the raw number if out of
/// range).
pub fn format_micros(micros: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| format!("{micros} µs"))
}
