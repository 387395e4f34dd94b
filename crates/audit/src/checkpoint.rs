//! Signed checkpoints and the append-only file that holds them.
//!
//! A checkpoint commits to the events `from..=to` of one audit log:
//!
//! | field  | meaning |
//! |--------|---------|
//! | `log`  | chain hash of event 1: names the log, so checkpoints of another database are recognised |
//! | `from`, `to` | the range of sequence numbers |
//! | `prev` | chain hash of event `from - 1` (the genesis hash for `from = 1`) |
//! | `head` | chain hash of event `to`, which by the chain covers every event up to `to` |
//! | `root` | Merkle root (RFC 6962 shape) over `merkle_leaf(seq, chain hash)` of the range |
//! | `at`   | when it was signed, microseconds since the Unix epoch |
//! | `key`  | id of the signing key (first 8 bytes of SHA-256 of the public key) |
//! | `sig`  | Ed25519 signature over [`Checkpoint::signing_bytes`] |
//!
//! Hashes and the signature are hex. The signature covers a fixed binary encoding, not the JSON
//! text, so no JSON canonicalisation is involved. One checkpoint is one JSON line; the file is
//! only ever appended to (and fsynced).

use crate::Hash;
use crate::keys::{AuditPublicKey, AuditSigningKey, KeyId, shorten};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Domain separation of the signed bytes.
const SIGNING_DOMAIN: &[u8] = b"custodian-audit-checkpoint-v1\0";
/// Format version written in every line.
pub const CHECKPOINT_VERSION: u32 = 1;
/// A range longer than this is refused (and never written): inclusion proofs stay small.
pub const MAX_CHECKPOINT_EVENTS: i64 = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub log_id: Hash,
    pub seq_from: i64,
    pub seq_to: i64,
    pub prev_head: Hash,
    pub head: Hash,
    pub root: Hash,
    pub at: i64,
}

impl Checkpoint {
    /// `"custodian-audit-checkpoint-v1\0" || log || from || to || prev || head || root || at`,
    /// integers as 8 bytes big-endian.
    pub fn signing_bytes(&self) -> Vec<u8> {
        let mut m = Vec::with_capacity(SIGNING_DOMAIN.len() + 32 * 4 + 24);
        m.extend_from_slice(SIGNING_DOMAIN);
        m.extend_from_slice(&self.log_id);
        m.extend_from_slice(&self.seq_from.to_be_bytes());
        m.extend_from_slice(&self.seq_to.to_be_bytes());
        m.extend_from_slice(&self.prev_head);
        m.extend_from_slice(&self.head);
        m.extend_from_slice(&self.root);
        m.extend_from_slice(&self.at.to_be_bytes());
        m
    }

    pub fn sign(self, key: &AuditSigningKey) -> SignedCheckpoint {
        let signature = key.sign(&self.signing_bytes());
        SignedCheckpoint { checkpoint: self, key_id: key.public().key_id(), signature }
    }

    /// Number of events covered.
    pub fn len(&self) -> i64 {
        self.seq_to - self.seq_from + 1
    }

    pub fn is_empty(&self) -> bool {
        self.len() <= 0
    }

    pub fn covers(&self, seq: i64) -> bool {
        (self.seq_from..=self.seq_to).contains(&seq)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCheckpoint {
    pub checkpoint: Checkpoint,
    pub key_id: KeyId,
    pub signature: [u8; 64],
}

/// Why a checkpoint's signature is not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureProblem {
    /// Signed by a key that is not among the trusted ones.
    UnknownKey { key_id: KeyId, trusted: Vec<KeyId> },
    /// Names a trusted key, but the signature does not verify: the checkpoint was altered or
    /// forged.
    BadSignature { key_id: KeyId },
}

impl std::fmt::Display for SignatureProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SignatureProblem::UnknownKey { key_id, trusted } => {
                let trusted: Vec<String> = trusted.iter().map(ToString::to_string).collect();
                write!(
                    f,
                    "signed by key {key_id}, which is not a trusted public key (trusted: {}): wrong --public-key, \
                     or a checkpoint forged with another key",
                    if trusted.is_empty() { "none".to_owned() } else { trusted.join(", ") }
                )
            }
            SignatureProblem::BadSignature { key_id } => write!(
                f,
                "the signature does not verify with key {key_id}: the checkpoint was altered after signing, or forged"
            ),
        }
    }
}

/// The JSON form of a checkpoint line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    v: u32,
    log: String,
    from: i64,
    to: i64,
    prev: String,
    head: String,
    root: String,
    at: i64,
    key: String,
    sig: String,
}

fn hash_field(name: &str, text: &str) -> Result<Hash, String> {
    let bytes = hex::decode(text).map_err(|_| format!("`{name}` is not hex ({:?})", shorten(text)))?;
    bytes.try_into().map_err(|b: Vec<u8>| format!("`{name}` has {} bytes, expected 32", b.len()))
}

impl SignedCheckpoint {
    pub fn to_json(&self) -> serde_json::Value {
        let c = &self.checkpoint;
        serde_json::json!({
            "v": CHECKPOINT_VERSION,
            "log": hex::encode(c.log_id),
            "from": c.seq_from,
            "to": c.seq_to,
            "prev": hex::encode(c.prev_head),
            "head": hex::encode(c.head),
            "root": hex::encode(c.root),
            "at": c.at,
            "key": self.key_id.to_string(),
            "sig": hex::encode(self.signature),
        })
    }

    /// One line of the checkpoint file, without the newline.
    pub fn to_line(&self) -> String {
        self.to_json().to_string()
    }

    /// Parses the JSON form, with a precise message for anything malformed.
    pub fn from_json(value: serde_json::Value) -> Result<SignedCheckpoint, String> {
        let wire: Wire = serde_json::from_value(value).map_err(|e| format!("not a checkpoint: {e}"))?;
        Self::from_wire(wire)
    }

    pub fn from_line(line: &str) -> Result<SignedCheckpoint, String> {
        let wire: Wire = serde_json::from_str(line).map_err(|e| format!("not a checkpoint: {e}"))?;
        Self::from_wire(wire)
    }

    fn from_wire(w: Wire) -> Result<SignedCheckpoint, String> {
        if w.v != CHECKPOINT_VERSION {
            return Err(format!("checkpoint format version {} is not supported (expected {CHECKPOINT_VERSION})", w.v));
        }
        if w.from < 1 || w.to < w.from {
            return Err(format!("invalid range {}..{}", w.from, w.to));
        }
        if w.to - w.from >= MAX_CHECKPOINT_EVENTS {
            return Err(format!("range {}..{} is longer than {MAX_CHECKPOINT_EVENTS} events", w.from, w.to));
        }
        let key_id = KeyId::from_hex(&w.key).ok_or_else(|| format!("`key` is not a key id ({:?})", shorten(&w.key)))?;
        let sig = hex::decode(&w.sig).map_err(|_| format!("`sig` is not hex ({:?})", shorten(&w.sig)))?;
        let signature: [u8; 64] =
            sig.try_into().map_err(|b: Vec<u8>| format!("`sig` has {} bytes, expected 64", b.len()))?;
        Ok(SignedCheckpoint {
            checkpoint: Checkpoint {
                log_id: hash_field("log", &w.log)?,
                seq_from: w.from,
                seq_to: w.to,
                prev_head: hash_field("prev", &w.prev)?,
                head: hash_field("head", &w.head)?,
                root: hash_field("root", &w.root)?,
                at: w.at,
            },
            key_id,
            signature,
        })
    }

    /// Checks the signature against the trusted keys.
    pub fn verify(&self, trusted: &[AuditPublicKey]) -> Result<(), SignatureProblem> {
        let Some(key) = trusted.iter().find(|k| k.key_id() == self.key_id) else {
            return Err(SignatureProblem::UnknownKey {
                key_id: self.key_id,
                trusted: trusted.iter().map(AuditPublicKey::key_id).collect(),
            });
        };
        if key.verify(&self.checkpoint.signing_bytes(), &self.signature) {
            Ok(())
        } else {
            Err(SignatureProblem::BadSignature { key_id: self.key_id })
        }
    }
}

/// Where a checkpoint came from, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub file: PathBuf,
    pub line: usize,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

#[derive(Debug, Clone)]
pub struct CheckpointEntry {
    pub source: Source,
    pub signed: SignedCheckpoint,
}

/// A line of a checkpoint file that is not a usable checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointProblem {
    pub source: Source,
    pub message: String,
}

#[derive(Debug, Clone, Default)]
pub struct CheckpointFile {
    pub entries: Vec<CheckpointEntry>,
    pub problems: Vec<CheckpointProblem>,
    /// Non-blank lines read.
    pub lines: usize,
}

/// Files larger than this are not read (a checkpoint line is about 450 bytes; this is millions
/// of checkpoints).
const MAX_CHECKPOINT_FILE_BYTES: u64 = 1 << 30;

/// Reads and parses a checkpoint file. Malformed lines become problems (with their line number)
/// and do not stop the reading; signatures are not checked here.
pub fn read_checkpoint_file(path: &Path) -> std::io::Result<CheckpointFile> {
    let len = std::fs::metadata(path)?.len();
    if len > MAX_CHECKPOINT_FILE_BYTES {
        return Err(std::io::Error::other(format!(
            "larger than {MAX_CHECKPOINT_FILE_BYTES} bytes: not a checkpoint file"
        )));
    }
    let bytes = std::fs::read(path)?;
    Ok(parse_checkpoint_file(path, &bytes))
}

pub fn parse_checkpoint_file(path: &Path, bytes: &[u8]) -> CheckpointFile {
    let mut out = CheckpointFile::default();
    let ends_with_newline = bytes.last() == Some(&b'\n');
    let chunks: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
    let count = chunks.len();
    for (i, chunk) in chunks.into_iter().enumerate() {
        let source = Source { file: path.to_owned(), line: i + 1 };
        let is_last = i + 1 == count;
        if chunk.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        out.lines += 1;
        let problem = |message: String| CheckpointProblem { source: source.clone(), message };
        let Ok(text) = std::str::from_utf8(chunk) else {
            out.problems.push(problem("not UTF-8 text: the line is garbled".into()));
            continue;
        };
        match SignedCheckpoint::from_line(text.trim()) {
            Ok(signed) => out.entries.push(CheckpointEntry { source, signed }),
            Err(message) if is_last && !ends_with_newline => out.problems.push(problem(format!(
                "the file ends in the middle of this line (truncated, or a write was interrupted): {message}"
            ))),
            Err(message) => out.problems.push(problem(message)),
        }
    }
    out
}

/// Appends one checkpoint line and fsyncs. If the file ends without a newline (a torn write),
/// the torn line is first terminated so that the new line stays readable; the verifier still
/// reports the torn one.
pub fn append_checkpoint(path: &Path, signed: &SignedCheckpoint) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let existed = path.exists();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = std::fs::OpenOptions::new().create(true).append(true).read(true).open(path)?;
    let len = file.metadata()?.len();
    let mut line = String::with_capacity(512);
    if len > 0 {
        let mut last = [0u8; 1];
        file.seek(SeekFrom::Start(len - 1))?;
        file.read_exact(&mut last)?;
        if last[0] != b'\n' {
            line.push('\n');
        }
    }
    line.push_str(&signed.to_line());
    line.push('\n');
    // One write of one line: with O_APPEND, writers in several processes do not interleave.
    file.write_all(line.as_bytes())?;
    file.sync_data()?;
    if !existed {
        sync_parent_dir(path);
    }
    Ok(())
}

fn sync_parent_dir(path: &Path) {
    #[cfg(unix)]
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sample(key: &AuditSigningKey) -> SignedCheckpoint {
        Checkpoint {
            log_id: [1; 32],
            seq_from: 11,
            seq_to: 20,
            prev_head: [2; 32],
            head: [3; 32],
            root: [4; 32],
            at: 1_700_000_000_000_000,
        }
        .sign(key)
    }

    #[test]
    fn a_line_round_trips_and_verifies() {
        let key = AuditSigningKey::generate().unwrap();
        let signed = sample(&key);
        let line = signed.to_line();
        assert!(line.len() < 600, "{} bytes", line.len());
        let parsed = SignedCheckpoint::from_line(&line).unwrap();
        assert_eq!(parsed, signed);
        parsed.verify(&[key.public()]).unwrap();
    }

    #[test]
    fn any_changed_field_breaks_the_signature() {
        let key = AuditSigningKey::generate().unwrap();
        let signed = sample(&key);
        let trusted = [key.public()];
        let c = &signed.checkpoint;
        let variants = [
            Checkpoint { log_id: [9; 32], ..c.clone() },
            Checkpoint { seq_from: 12, ..c.clone() },
            Checkpoint { seq_to: 21, ..c.clone() },
            Checkpoint { prev_head: [9; 32], ..c.clone() },
            Checkpoint { head: [9; 32], ..c.clone() },
            Checkpoint { root: [9; 32], ..c.clone() },
            Checkpoint { at: c.at + 1, ..c.clone() },
        ];
        for v in variants {
            let forged = SignedCheckpoint { checkpoint: v, ..signed.clone() };
            assert_eq!(forged.verify(&trusted), Err(SignatureProblem::BadSignature { key_id: signed.key_id }));
        }
        let other = AuditSigningKey::generate().unwrap();
        let err = signed.verify(&[other.public()]).unwrap_err();
        assert!(matches!(err, SignatureProblem::UnknownKey { .. }));
        assert!(err.to_string().contains("wrong --public-key"));
        // Re-signed by another key but claiming the trusted key's id: the signature fails.
        let resigned = sample(&other);
        let claimed = SignedCheckpoint { key_id: signed.key_id, ..resigned };
        assert!(matches!(claimed.verify(&trusted), Err(SignatureProblem::BadSignature { .. })));
    }

    #[test]
    fn malformed_lines_are_reported_with_their_line_numbers() {
        let key = AuditSigningKey::generate().unwrap();
        let good = sample(&key).to_line();
        let mut bad_hex = sample(&key).to_json();
        bad_hex["root"] = "zz".into();
        let mut extra = sample(&key).to_json();
        extra["x"] = 1.into();
        let text = format!(
            "{good}\n\n{{not json\n{}\n{}\n\u{0}\u{1}\n{}\n{}",
            bad_hex,
            extra,
            good.replace("\"v\":1", "\"v\":2"),
            &good[..good.len() / 2]
        );
        let parsed = parse_checkpoint_file(Path::new("cp.log"), text.as_bytes());
        assert_eq!(parsed.entries.len(), 1);
        assert_eq!(parsed.entries[0].source.line, 1);
        let lines: Vec<usize> = parsed.problems.iter().map(|p| p.source.line).collect();
        assert_eq!(lines, vec![3, 4, 5, 6, 7, 8]);
        assert!(parsed.problems[1].message.contains("`root` is not hex"));
        assert!(parsed.problems[2].message.contains("unknown field"));
        assert!(parsed.problems[4].message.contains("version 2"));
        assert!(parsed.problems[5].message.contains("ends in the middle"));
        let garbled = parse_checkpoint_file(Path::new("cp.log"), &[0xff, 0xfe, b'\n']);
        assert!(garbled.problems[0].message.contains("not UTF-8"));
    }

    #[test]
    fn appending_terminates_a_torn_line() {
        let dir = std::env::temp_dir().join(format!("custodian-cp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("sub").join("cp.log");
        let key = AuditSigningKey::generate().unwrap();
        append_checkpoint(&path, &sample(&key)).unwrap();
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"v\":1,\"lo").unwrap();
        drop(f);
        append_checkpoint(&path, &sample(&key)).unwrap();
        let parsed = read_checkpoint_file(&path).unwrap();
        assert_eq!(parsed.entries.len(), 2);
        assert_eq!(parsed.problems.len(), 1);
        assert_eq!(parsed.problems[0].source.line, 2);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
