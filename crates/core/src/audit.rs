//! The hash chain over audit events. The store assigns the sequence number inside the write
//! transaction and links each event to the previous one with `chain_hash`; the verifier
//! recomputes the same function.

use sha2::{Digest, Sha256};

/// Hash of the empty chain, the `prev_hash` of event 1.
pub const GENESIS_HASH: [u8; 32] = [0u8; 32];

/// `SHA-256("custodian-audit-v1" || prev_hash || seq (big-endian) || body)` where `body` is the
/// canonical JSON encoding of the event without its sequence number and hashes.
pub fn chain_hash(prev_hash: &[u8], seq: i64, body: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"custodian-audit-v1");
    h.update(prev_hash);
    h.update(seq.to_be_bytes());
    h.update(body);
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_hash_depends_on_every_input() {
        let a = chain_hash(&GENESIS_HASH, 1, b"{}");
        assert_ne!(a, chain_hash(&GENESIS_HASH, 2, b"{}"));
        assert_ne!(a, chain_hash(&a, 1, b"{}"));
        assert_ne!(a, chain_hash(&GENESIS_HASH, 1, b"{ }"));
    }
}
