//! Sealed backup files (PRODUCT.md R1): a magic line, a one-line manifest, a random salt, a key
//! check, then the content in sealed chunks.
//!
//! Each chunk is XChaCha20-Poly1305 under the backup key (derived from the master key), with a
//! nonce made of the file's salt, the chunk's number and a flag on the last chunk, and the hash
//! of everything before the chunks as associated data. So a chunk cannot be moved, repeated,
//! dropped or taken from another file, the manifest cannot be edited, and a file cut short is
//! refused (its last chunk is missing) — the STREAM construction of Hoang, Reyhanitabar,
//! Rogaway and Vizár. A wrong master key is told apart from damage by the key check (a keyed
//! hash of the salt) before any chunk is opened.

use crate::{CryptoError, KEY_LEN, Key, MasterKey};
use chacha20poly1305::XNonce;
use chacha20poly1305::aead::{Aead, Payload};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::io::{BufRead, Read, Write};

/// The first line of every backup file.
pub const MAGIC: &[u8] = b"CUSTODIAN-BACKUP-1\n";
/// Plaintext bytes per chunk.
pub const CHUNK_LEN: usize = 1 << 20;
const SALT_LEN: usize = 16;
const CHECK_LEN: usize = 16;
const TAG_LEN: usize = 16;
/// Longest manifest line accepted.
const MAX_MANIFEST: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("not a Custodian backup file")]
    NotABackup,
    #[error("the backup was made with another master key")]
    WrongKey,
    #[error("the backup is damaged: {0}")]
    Damaged(String),
    #[error("the backup is cut short (its last part is missing)")]
    Truncated,
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

/// The key that seals backups: derived from the master key, so a backup is useless without it
/// (as is the database inside, whose data keys the master key wraps).
pub struct BackupKey(Key);

impl BackupKey {
    pub fn derive(master: &MasterKey) -> BackupKey {
        let hk = hkdf::Hkdf::<Sha256>::new(Some(b"custodian-backup"), master.0.bytes());
        let mut okm = zeroize::Zeroizing::new([0u8; KEY_LEN]);
        // HKDF-SHA256 expands 32 bytes without fail.
        let _ = hk.expand(b"custodian-backup-v1", okm.as_mut_slice());
        BackupKey(Key(secrecy::SecretBox::new(Box::new(*okm))))
    }

    fn check(&self, salt: &[u8]) -> [u8; CHECK_LEN] {
        let mut out = [0u8; CHECK_LEN];
        if let Ok(mut mac) = <Hmac<Sha256> as hmac::digest::KeyInit>::new_from_slice(self.0.bytes()) {
            mac.update(b"custodian-backup-key-check");
            mac.update(salt);
            out.copy_from_slice(&mac.finalize().into_bytes()[..CHECK_LEN]);
        }
        out
    }
}

fn nonce(salt: &[u8; SALT_LEN], index: u64, last: bool) -> XNonce {
    let mut n = [0u8; 24];
    n[..SALT_LEN - 1].copy_from_slice(&salt[..SALT_LEN - 1]);
    n[SALT_LEN - 1..SALT_LEN - 1 + 8].copy_from_slice(&index.to_be_bytes());
    n[23] = u8::from(last);
    XNonce::from(n)
}

fn header_hash(manifest: &[u8], salt: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(MAGIC);
    h.update(manifest);
    h.update(b"\n");
    h.update(salt);
    h.finalize().into()
}

/// Reads up to `buf.len()` bytes (fewer only at the end of the input).
fn fill(input: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match input.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Writes a backup of everything `plain` yields under `manifest` (one line of text). Returns
/// the number of content bytes sealed.
pub fn seal(key: &BackupKey, manifest: &str, plain: &mut impl Read, out: &mut impl Write) -> Result<u64, BackupError> {
    if manifest.contains('\n') || manifest.len() > MAX_MANIFEST {
        return Err(BackupError::Damaged("the manifest must be one line of at most 64 KiB".into()));
    }
    let salt = crate::random_bytes::<SALT_LEN>()?;
    out.write_all(MAGIC)?;
    out.write_all(manifest.as_bytes())?;
    out.write_all(b"\n")?;
    out.write_all(&salt)?;
    out.write_all(&key.check(&salt))?;
    let aad = header_hash(manifest.as_bytes(), &salt);
    let cipher = key.0.cipher();
    let mut total = 0u64;
    let mut current = vec![0u8; CHUNK_LEN];
    let mut next = vec![0u8; CHUNK_LEN];
    let mut len = fill(plain, &mut current)?;
    let mut index = 0u64;
    loop {
        // The chunk is the last one when nothing follows it.
        let next_len = if len == CHUNK_LEN { fill(plain, &mut next)? } else { 0 };
        let last = next_len == 0;
        let sealed = cipher
            .encrypt(&nonce(&salt, index, last), Payload { msg: &current[..len], aad: &aad })
            .map_err(|_| BackupError::Damaged("sealing failed".into()))?;
        out.write_all(&(sealed.len() as u32).to_be_bytes())?;
        out.write_all(&sealed)?;
        total += len as u64;
        if last {
            return Ok(total);
        }
        std::mem::swap(&mut current, &mut next);
        len = next_len;
        index += 1;
    }
}

/// Reads the magic line and the manifest of a backup; `input` is left at the sealed part.
pub fn read_manifest(input: &mut impl BufRead) -> Result<String, BackupError> {
    let mut magic = vec![0u8; MAGIC.len()];
    if fill(input, &mut magic)? != MAGIC.len() || magic != MAGIC {
        return Err(BackupError::NotABackup);
    }
    let mut line = Vec::new();
    input.take(MAX_MANIFEST as u64 + 1).read_until(b'\n', &mut line)?;
    if line.last() != Some(&b'\n') {
        return Err(BackupError::Damaged("the manifest line is missing or too long".into()));
    }
    line.pop();
    String::from_utf8(line).map_err(|_| BackupError::Damaged("the manifest is not text".into()))
}

/// Opens the sealed part of a backup whose manifest `read_manifest` returned, writing the
/// content to `out`. Returns the number of content bytes.
pub fn open(key: &BackupKey, manifest: &str, input: &mut impl Read, out: &mut impl Write) -> Result<u64, BackupError> {
    let mut salt = [0u8; SALT_LEN];
    let mut check = [0u8; CHECK_LEN];
    if fill(input, &mut salt)? != SALT_LEN || fill(input, &mut check)? != CHECK_LEN {
        return Err(BackupError::Truncated);
    }
    if key.check(&salt) != check {
        return Err(BackupError::WrongKey);
    }
    let aad = header_hash(manifest.as_bytes(), &salt);
    let cipher = key.0.cipher();
    let mut total = 0u64;
    let mut sealed = vec![0u8; CHUNK_LEN + TAG_LEN];
    for index in 0u64.. {
        let mut len = [0u8; 4];
        match fill(input, &mut len)? {
            0 => return Err(BackupError::Truncated),
            4 => {}
            _ => return Err(BackupError::Truncated),
        }
        let len = u32::from_be_bytes(len) as usize;
        if !(TAG_LEN..=CHUNK_LEN + TAG_LEN).contains(&len) {
            return Err(BackupError::Damaged(format!("part {index} has an impossible length")));
        }
        if fill(input, &mut sealed[..len])? != len {
            return Err(BackupError::Truncated);
        }
        // Try as an inner chunk, then as the last one: only the right flag authenticates.
        for last in [false, true] {
            if let Ok(plain) = cipher.decrypt(&nonce(&salt, index, last), Payload { msg: &sealed[..len], aad: &aad }) {
                out.write_all(&plain)?;
                total += plain.len() as u64;
                if last {
                    let mut rest = [0u8; 1];
                    if fill(input, &mut rest)? != 0 {
                        return Err(BackupError::Damaged("data after the last part".into()));
                    }
                    return Ok(total);
                }
                break;
            } else if last {
                return Err(BackupError::Damaged(format!("part {index} does not authenticate")));
            }
        }
    }
    Err(BackupError::Truncated)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn master(byte: &str) -> MasterKey {
        MasterKey::from_hex(&byte.repeat(32)).unwrap()
    }

    fn sealed(content: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        seal(&BackupKey::derive(&master("ab")), "{\"a\":1}", &mut Cursor::new(content), &mut out).unwrap();
        out
    }

    fn opened(file: &[u8], m: &str) -> Result<Vec<u8>, BackupError> {
        let mut input = Cursor::new(file);
        let manifest = read_manifest(&mut input)?;
        let mut out = Vec::new();
        open(&BackupKey::derive(&master(m)), &manifest, &mut input, &mut out)?;
        Ok(out)
    }

    #[test]
    fn round_trips_any_length() {
        for len in [0, 1, CHUNK_LEN - 1, CHUNK_LEN, CHUNK_LEN + 1, 2 * CHUNK_LEN + 7] {
            let content: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let file = sealed(&content);
            assert_eq!(opened(&file, "ab").unwrap(), content, "{len}");
            assert!(!file.windows(16).any(|w| content.len() >= 64 && w == &content[32..48]), "content is not in clear");
        }
    }

    #[test]
    fn refuses_wrong_keys_damage_truncation_and_reordering() {
        let content: Vec<u8> = (0..(2 * CHUNK_LEN + 100)).map(|i| (i % 256) as u8).collect();
        let file = sealed(&content);
        assert!(matches!(opened(&file, "cd"), Err(BackupError::WrongKey)));
        assert!(matches!(opened(b"hello", "ab"), Err(BackupError::NotABackup)));
        // A flipped bit anywhere in the sealed part, or in the manifest.
        let header = MAGIC.len() + "{\"a\":1}\n".len();
        for at in [header + SALT_LEN + CHECK_LEN + 10, file.len() / 2, file.len() - 1] {
            let mut bad = file.clone();
            bad[at] ^= 1;
            assert!(opened(&bad, "ab").is_err(), "flip at {at}");
        }
        let mut edited = file.clone();
        edited[MAGIC.len() + 5] = b'2';
        assert!(matches!(opened(&edited, "ab"), Err(BackupError::Damaged(_))));
        // Cut short at a chunk boundary: the last chunk is missing.
        let first_chunk_end = header + SALT_LEN + CHECK_LEN + 4 + CHUNK_LEN + TAG_LEN;
        assert!(matches!(opened(&file[..first_chunk_end], "ab"), Err(BackupError::Truncated)));
        assert!(matches!(opened(&file[..file.len() - 3], "ab"), Err(BackupError::Truncated)));
        // Chunks 0 and 1 swapped.
        let chunk = 4 + CHUNK_LEN + TAG_LEN;
        let start = header + SALT_LEN + CHECK_LEN;
        let mut swapped = file[..start].to_vec();
        swapped.extend_from_slice(&file[start + chunk..start + 2 * chunk]);
        swapped.extend_from_slice(&file[start..start + chunk]);
        swapped.extend_from_slice(&file[start + 2 * chunk..]);
        assert!(matches!(opened(&swapped, "ab"), Err(BackupError::Damaged(_))));
        // Extra bytes after the end.
        let mut longer = file.clone();
        longer.push(0);
        assert!(matches!(opened(&longer, "ab"), Err(BackupError::Damaged(_))));
    }
}
