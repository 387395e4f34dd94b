//! The checkpoint writer: every N events or T seconds, claims the next range of events in the
//! database (so that one server writes one checkpoint per range), recomputes and checks the
//! chain over it, signs a checkpoint and appends it to the checkpoint file (fsynced), then marks
//! the claim written. It refuses to sign a range whose chain does not verify.

use crate::Hash;
use crate::checkpoint::{Checkpoint, MAX_CHECKPOINT_EVENTS, SignedCheckpoint, append_checkpoint};
use crate::keys::AuditSigningKey;
use custodian_core::audit::{GENESIS_HASH, MerkleBuilder, chain_hash, merkle_leaf};
use custodian_store::{CheckpointClaimOutcome, CheckpointClaimRequest, CheckpointRange, Store, StoreError, now_micros};
use futures::StreamExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, watch};

#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// The append-only checkpoint file.
    pub file: PathBuf,
    /// A checkpoint as soon as this many events are unchecked (also the longest range).
    pub every_events: i64,
    /// A checkpoint of whatever is pending once the newest checkpoint is this old.
    pub every: Duration,
    /// A claim whose writer has not finished after this long is taken over.
    pub lease: Duration,
    /// How often to look for due work.
    pub poll: Duration,
    /// Who writes (host/process), recorded in the claims.
    pub claimant: String,
}

impl WriterConfig {
    pub fn new(file: PathBuf, every_events: i64, every: Duration) -> WriterConfig {
        WriterConfig {
            file,
            every_events: every_events.clamp(1, MAX_CHECKPOINT_EVENTS),
            every,
            lease: Duration::from_secs(60),
            poll: every.min(Duration::from_secs(1)).max(Duration::from_millis(50)),
            claimant: default_claimant(),
        }
    }
}

/// `host/pid`.
pub fn default_claimant() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok().map(|h| h.trim().to_owned()))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "custodian".into());
    format!("{host}/{}", std::process::id())
}

#[derive(Debug, thiserror::Error)]
pub enum WriterError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("refusing to sign events {from}..{to}: {reason}. The audit log was modified; run `custodian audit verify`")]
    ChainBroken { from: i64, to: i64, reason: String },
    #[error(
        "the audit log ends at seq {head}, but checkpoints were already claimed through seq {claimed_through}: events \
         were removed from the end of the log; run `custodian audit verify`"
    )]
    HeadBehind { head: i64, claimed_through: i64 },
    #[error("cannot append to the checkpoint file {path}: {error}")]
    File { path: String, error: std::io::Error },
}

pub struct CheckpointWriter {
    store: Arc<dyn Store>,
    key: AuditSigningKey,
    config: WriterConfig,
    /// Chain hash of event 1, once read.
    log_id: Mutex<Option<Hash>>,
}

impl CheckpointWriter {
    pub fn new(store: Arc<dyn Store>, key: AuditSigningKey, config: WriterConfig) -> CheckpointWriter {
        CheckpointWriter { store, key, config, log_id: Mutex::new(None) }
    }

    pub fn config(&self) -> &WriterConfig {
        &self.config
    }

    /// Claims and writes every checkpoint that is due. With `flush`, everything pending is due
    /// (used at shutdown and by `custodian audit checkpoint`). Returns the checkpoints written.
    pub async fn write_due(&self, flush: bool) -> Result<Vec<SignedCheckpoint>, WriterError> {
        let mut written = Vec::new();
        loop {
            let request = CheckpointClaimRequest {
                claimant: self.config.claimant.clone(),
                max_events: self.config.every_events,
                every_micros: if flush { 0 } else { micros(self.config.every) },
                lease_micros: micros(self.config.lease),
                now: now_micros(),
            };
            match self.store.claim_audit_checkpoint(request).await? {
                CheckpointClaimOutcome::Nothing => return Ok(written),
                CheckpointClaimOutcome::HeadBehind { head, claimed_through } => {
                    return Err(WriterError::HeadBehind { head, claimed_through });
                }
                CheckpointClaimOutcome::Claimed(range) => {
                    let signed = self.write_range(range).await?;
                    written.push(signed);
                }
            }
        }
    }

    /// Signs and appends the checkpoint of a range this writer claimed, then marks the claim
    /// written. (A writer that finishes after its claim was taken over writes a duplicate of
    /// the other writer's checkpoint; both verify.)
    pub async fn write_range(&self, range: CheckpointRange) -> Result<SignedCheckpoint, WriterError> {
        let log_id = self.log_id().await?;
        let (prev_head, head, root) = self.recompute(range).await?;
        let signed = Checkpoint {
            log_id,
            seq_from: range.seq_from,
            seq_to: range.seq_to,
            prev_head,
            head,
            root,
            at: now_micros(),
        }
        .sign(&self.key);
        let file = self.config.file.clone();
        let line = signed.clone();
        tokio::task::spawn_blocking(move || append_checkpoint(&file, &line))
            .await
            .map_err(|e| WriterError::File {
                path: self.config.file.display().to_string(),
                error: std::io::Error::other(e),
            })?
            .map_err(|error| WriterError::File { path: self.config.file.display().to_string(), error })?;
        self.store.complete_audit_checkpoint(range, now_micros()).await?;
        tracing::debug!(from = range.seq_from, to = range.seq_to, "audit checkpoint written");
        Ok(signed)
    }

    async fn log_id(&self) -> Result<Hash, WriterError> {
        let mut cached = self.log_id.lock().await;
        if let Some(id) = *cached {
            return Ok(id);
        }
        let broken = |reason: &str| WriterError::ChainBroken { from: 1, to: 1, reason: reason.to_owned() };
        let mut stream = self.store.audit_chain(0, Some(1));
        let first = stream.next().await.transpose()?.ok_or_else(|| broken("event 1 is missing"))?;
        let body = first.body.ok_or_else(|| broken("event 1 has no body"))?;
        let id = chain_hash(&GENESIS_HASH, 1, &body);
        if first.hash.as_deref() != Some(id.as_slice()) || first.prev_hash.as_deref() != Some(GENESIS_HASH.as_slice()) {
            return Err(broken("event 1 does not match its hash"));
        }
        *cached = Some(id);
        Ok(id)
    }

    /// Recomputes the chain over the range from the stored bodies, checking every stored link,
    /// and returns (hash before the range, chain head, Merkle root).
    async fn recompute(&self, range: CheckpointRange) -> Result<(Hash, Hash, Hash), WriterError> {
        let (from, to) = (range.seq_from, range.seq_to);
        let broken = |reason: String| WriterError::ChainBroken { from, to, reason };
        let mut stream = self.store.audit_chain((from - 2).max(0), Some(to));
        let mut prev = GENESIS_HASH;
        let mut prev_head = GENESIS_HASH;
        let mut expected = (from - 1).max(1);
        let mut builder = MerkleBuilder::default();
        while let Some(row) = stream.next().await {
            let row = row?;
            if row.seq != expected {
                return Err(broken(format!("event {expected} is missing or duplicated")));
            }
            let stored: Option<Hash> = row.hash.as_deref().and_then(|h| h.try_into().ok());
            if row.seq == from - 1 {
                prev = stored.ok_or_else(|| broken(format!("event {} has no valid hash", row.seq)))?;
                prev_head = prev;
            } else {
                let body = row.body.ok_or_else(|| broken(format!("event {} has no body", row.seq)))?;
                let computed = chain_hash(&prev, row.seq, &body);
                if row.prev_hash.as_deref() != Some(prev.as_slice()) || stored != Some(computed) {
                    return Err(broken(format!("the chain does not verify at event {}", row.seq)));
                }
                builder.push(merkle_leaf(row.seq, &computed));
                prev = computed;
            }
            expected += 1;
        }
        if expected != to + 1 {
            return Err(broken(format!("the log ends at seq {}", expected - 1)));
        }
        let root = builder.root().ok_or_else(|| broken("the range is empty".into()))?;
        Ok((prev_head, prev, root))
    }

    /// Runs until `stop` turns true, then writes a last checkpoint of everything pending.
    /// Errors are logged (an alert for a broken or truncated chain) and retried at the next
    /// poll; the same alert is repeated at most once a minute.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.config.poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_alert: Option<(String, tokio::time::Instant)> = None;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => break,
            }
            if *stop.borrow() {
                break;
            }
            if let Err(e) = self.write_due(false).await {
                let message = e.to_string();
                let repeat =
                    last_alert.as_ref().is_some_and(|(m, at)| *m == message && at.elapsed() < Duration::from_secs(60));
                if !repeat {
                    match e {
                        WriterError::Store(_) | WriterError::File { .. } => {
                            tracing::warn!(error = %message, "audit checkpoint not written; retrying")
                        }
                        _ => {
                            tracing::error!(alert = "audit_log_tampered", error = %message, "audit checkpoint refused")
                        }
                    }
                    last_alert = Some((message, tokio::time::Instant::now()));
                }
            }
        }
        match self.write_due(true).await {
            Ok(written) if !written.is_empty() => {
                tracing::info!(checkpoints = written.len(), "final audit checkpoint written")
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "final audit checkpoint not written"),
        }
    }
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// A running writer task.
pub struct WriterTask {
    stop: watch::Sender<bool>,
    join: tokio::task::JoinHandle<()>,
}

impl WriterTask {
    pub fn spawn(writer: CheckpointWriter) -> WriterTask {
        let (stop, rx) = watch::channel(false);
        let join = tokio::spawn(writer.run(rx));
        WriterTask { stop, join }
    }

    /// Stops the task after a last checkpoint of everything pending (waits at most `timeout`).
    pub async fn shutdown(self, timeout: Duration) {
        let _ = self.stop.send(true);
        if tokio::time::timeout(timeout, self.join).await.is_err() {
            tracing::warn!("the audit checkpoint writer did not finish in time");
        }
    }
}
