//! Tamper evidence for the audit log beyond the hash chain: signed Merkle checkpoints kept
//! outside the database, the verifier that names the first bad event, and inclusion proofs
//! that can be checked without the database.
//!
//! What is hashed and signed:
//!
//! - every event is linked into the chain by the store: `hash = SHA-256("custodian-audit-v1" ||
//!   prev_hash || seq || canonical body)` (`custodian_core::audit::chain_hash`);
//! - a checkpoint covers a range `from..=to` of at most N events (N = `--checkpoint-every-events`,
//!   1000 by default): the Merkle root (RFC 6962 shape) over the leaves `SHA-256(0x00 || seq ||
//!   hash)` of the range, the chain hash before the range and at its end (the head, which by
//!   the chain covers every earlier event), the hash of event 1 (naming the log) and the time;
//! - the checkpoint is signed with Ed25519 over a fixed binary encoding of those fields, by a key
//!   kept in its own 0600 file apart from the database, and appended as one JSON line to an
//!   append-only, fsynced file outside the data directory ([`checkpoint`] has the format);
//! - an inclusion proof is the event (seq, predecessor hash, body), the log2(N) sibling hashes
//!   from its leaf to the root, and the signed checkpoint ([`proof`] has the format).
//!
//! Modules:
//!
//! - [`keys`]: the Ed25519 signing key (a 0600 file apart from the database) and public keys.
//! - [`checkpoint`]: what a checkpoint commits to, its signature, the append-only file.
//! - [`writer`]: writes checkpoints every N events or T seconds, one server per range.
//! - [`verify`]: streams the whole log, recomputes chain and checkpoints, names the first bad
//!   sequence number.
//! - [`proof`]: builds and checks inclusion proofs.
//!
//! The hash functions themselves (chain hash, Merkle leaves and nodes) live in
//! `custodian_core::audit`, next to the chain they extend.

pub mod checkpoint;
pub mod keys;
pub mod proof;
pub mod verify;
pub mod writer;

pub use checkpoint::{CheckpointFile, SignedCheckpoint, read_checkpoint_file};
pub use custodian_core::audit::Hash;
pub use keys::{AuditPublicKey, AuditSigningKey, read_public_keys};
pub use proof::{InclusionProof, build_proof, check_proof};
pub use verify::{VerifyReport, VerifyStatus, verify_store};
pub use writer::{CheckpointWriter, WriterConfig, WriterTask};
