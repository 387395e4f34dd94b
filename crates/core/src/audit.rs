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

// ---- Merkle tree over audit events ------------------------------------------------------------
//
// Signed checkpoints commit to a range of events with a Merkle tree shaped as in RFC 6962 / RFC
// 9162 (Certificate Transparency), so that one event can be proven to be in a checkpoint with
// log2(range) sibling hashes instead of the whole range. Leaves and inner nodes are hashed with
// different one-byte prefixes, so a leaf can never be passed off as an inner node.

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// Leaf of the checkpoint tree: `SHA-256(0x00 || seq (big-endian) || event_hash)`, where
/// `event_hash` is the event's chain hash (which covers its body and every event before it).
pub fn merkle_leaf(seq: i64, event_hash: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(seq.to_be_bytes());
    h.update(event_hash);
    h.finalize().into()
}

/// Inner node: `SHA-256(0x01 || left || right)`.
pub fn merkle_node(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// Largest power of two strictly below `n` (n >= 2).
fn split_point(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

/// The Merkle tree hash of `leaves` (RFC 6962 `MTH`), or `None` for no leaves.
pub fn merkle_root(leaves: &[Hash]) -> Option<Hash> {
    let mut builder = MerkleBuilder::default();
    for leaf in leaves {
        builder.push(*leaf);
    }
    builder.root()
}

/// The audit path of leaf `index` among `leaves` (RFC 6962 `PATH`), siblings ordered from the
/// leaf up. `None` when `index` is out of range.
pub fn merkle_path(leaves: &[Hash], index: usize) -> Option<Vec<Hash>> {
    if index >= leaves.len() {
        return None;
    }
    let mut path = Vec::new();
    path_into(leaves, index, &mut path);
    Some(path)
}

fn path_into(leaves: &[Hash], index: usize, path: &mut Vec<Hash>) {
    let n = leaves.len();
    if n <= 1 {
        return;
    }
    let k = split_point(n);
    let (left, right) = leaves.split_at(k);
    if index < k {
        path_into(left, index, path);
        if let Some(r) = merkle_root(right) {
            path.push(r);
        }
    } else {
        path_into(right, index - k, path);
        if let Some(l) = merkle_root(left) {
            path.push(l);
        }
    }
}

/// Recomputes the root from a leaf, its index, the tree size and its audit path (the
/// verification algorithm of RFC 9162 §2.1.3.2). `None` when the path cannot belong to a leaf
/// at `index` in a tree of `size` leaves (wrong length or index out of range).
pub fn merkle_root_from_path(leaf: &Hash, index: u64, size: u64, path: &[Hash]) -> Option<Hash> {
    if index >= size {
        return None;
    }
    let mut f = index;
    let mut s = size - 1;
    let mut r = *leaf;
    for p in path {
        if s == 0 {
            return None;
        }
        if f & 1 == 1 || f == s {
            r = merkle_node(p, &r);
            if f & 1 == 0 {
                while f & 1 == 0 && f != 0 {
                    f >>= 1;
                    s >>= 1;
                }
            }
        } else {
            r = merkle_node(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    (s == 0).then_some(r)
}

/// Computes a Merkle root over leaves pushed one at a time, in O(log n) memory: the verifier
/// streams a million events through it without holding them.
#[derive(Debug, Clone, Default)]
pub struct MerkleBuilder {
    /// Roots of perfect subtrees, largest (leftmost) first, with their heights.
    stack: Vec<(u32, Hash)>,
    leaves: u64,
}

impl MerkleBuilder {
    pub fn push(&mut self, leaf: Hash) {
        self.leaves += 1;
        let mut node = (0u32, leaf);
        while let Some(&(height, left)) = self.stack.last() {
            if height != node.0 {
                break;
            }
            self.stack.pop();
            node = (height + 1, merkle_node(&left, &node.1));
        }
        self.stack.push(node);
    }

    /// Number of leaves pushed so far.
    pub fn len(&self) -> u64 {
        self.leaves
    }

    pub fn is_empty(&self) -> bool {
        self.leaves == 0
    }

    /// The root over the leaves pushed so far (`None` when empty).
    pub fn root(&self) -> Option<Hash> {
        let mut iter = self.stack.iter().rev();
        let mut acc = iter.next()?.1;
        for (_, left) in iter {
            acc = merkle_node(left, &acc);
        }
        Some(acc)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn chain_hash_depends_on_every_input() {
        let a = chain_hash(&GENESIS_HASH, 1, b"{}");
        assert_ne!(a, chain_hash(&GENESIS_HASH, 2, b"{}"));
        assert_ne!(a, chain_hash(&a, 1, b"{}"));
        assert_ne!(a, chain_hash(&GENESIS_HASH, 1, b"{ }"));
    }

    /// RFC 6962 `MTH`, written recursively as in the RFC, to check the streaming builder.
    fn reference_root(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => unreachable!(),
            1 => leaves[0],
            n => {
                let k = split_point(n);
                merkle_node(&reference_root(&leaves[..k]), &reference_root(&leaves[k..]))
            }
        }
    }

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n).map(|i| merkle_leaf(i as i64 + 1, &chain_hash(&GENESIS_HASH, i as i64 + 1, b"x"))).collect()
    }

    #[test]
    fn merkle_root_matches_the_rfc_definition() {
        assert_eq!(merkle_root(&[]), None);
        for n in 1..=70 {
            let l = leaves(n);
            assert_eq!(merkle_root(&l), Some(reference_root(&l)), "n = {n}");
        }
    }

    #[test]
    fn every_path_verifies_and_no_wrong_one_does() {
        for n in 1..=40usize {
            let l = leaves(n);
            let root = reference_root(&l);
            for i in 0..n {
                let path = merkle_path(&l, i).unwrap();
                assert!(path.len() <= 6);
                assert_eq!(merkle_root_from_path(&l[i], i as u64, n as u64, &path), Some(root), "n={n} i={i}");
                // Another leaf, another index, a shortened, altered or lengthened path: no. (The tree
                // size is not bound by the path; the signed checkpoint binds it.)
                let other = (i + 1) % n;
                if other != i {
                    assert_ne!(merkle_root_from_path(&l[other], i as u64, n as u64, &path), Some(root));
                    assert_ne!(merkle_root_from_path(&l[i], other as u64, n as u64, &path), Some(root));
                }
                if !path.is_empty() {
                    assert_ne!(merkle_root_from_path(&l[i], i as u64, n as u64, &path[1..]), Some(root));
                    let mut flipped = path.clone();
                    flipped[0][0] ^= 1;
                    assert_ne!(merkle_root_from_path(&l[i], i as u64, n as u64, &flipped), Some(root));
                }
                let mut longer = path.clone();
                longer.push(root);
                assert_ne!(merkle_root_from_path(&l[i], i as u64, n as u64, &longer), Some(root));
            }
            assert_eq!(merkle_path(&l, n), None);
            assert_eq!(merkle_root_from_path(&l[0], n as u64, n as u64, &[]), None);
        }
    }

    #[test]
    fn leaves_and_nodes_are_domain_separated() {
        let a = [7u8; 32];
        let b = [9u8; 32];
        assert_ne!(merkle_leaf(1, &a), merkle_leaf(2, &a));
        assert_ne!(merkle_node(&a, &b), merkle_node(&b, &a));
        assert_ne!(merkle_node(&a, &b), merkle_leaf(0, &[a, b].concat()));
    }
}
