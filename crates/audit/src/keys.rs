//! The Ed25519 key that signs checkpoints. It is kept apart from the database (its own file,
//! mode 0600, created at first use) so that someone who can rewrite the database cannot re-sign
//! the checkpoints that betray the rewrite. The public half is written beside it as `KEY.pub`;
//! auditors keep a copy of that elsewhere and pass it to `custodian audit verify --public-key`.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("audit signing key {path}: {reason}")]
    SigningKeyFile { path: String, reason: String },
    #[error("public key file {path}: {reason}")]
    PublicKeyFile { path: String, reason: String },
    #[error("the operating system random generator failed")]
    Random,
}

/// Short identifier of a public key: the first 8 bytes of its SHA-256, written in hex. Every
/// checkpoint names the key that signed it, so a wrong key is reported as such.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub [u8; 8]);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

impl KeyId {
    pub fn from_hex(text: &str) -> Option<KeyId> {
        let bytes = hex::decode(text).ok()?;
        Some(KeyId(bytes.try_into().ok()?))
    }
}

/// A public key that verifies checkpoint signatures.
#[derive(Clone, PartialEq, Eq)]
pub struct AuditPublicKey(VerifyingKey);

impl fmt::Debug for AuditPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AuditPublicKey({})", self.to_hex())
    }
}

impl AuditPublicKey {
    pub fn from_hex(text: &str) -> Option<AuditPublicKey> {
        let bytes: [u8; 32] = hex::decode(text.trim()).ok()?.try_into().ok()?;
        let key = VerifyingKey::from_bytes(&bytes).ok()?;
        // A weak (small-order) key verifies forged signatures; it is never a real signing key.
        (!key.is_weak()).then_some(AuditPublicKey(key))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0.as_bytes())
    }

    pub fn key_id(&self) -> KeyId {
        let digest: [u8; 32] = Sha256::digest(self.0.as_bytes()).into();
        let mut id = [0u8; 8];
        id.copy_from_slice(&digest[..8]);
        KeyId(id)
    }

    /// Strict verification (no malleable or small-order signatures).
    pub fn verify(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        self.0.verify_strict(message, &Signature::from_bytes(signature)).is_ok()
    }
}

/// The signing key. Never printed; zeroised on drop by `ed25519-dalek`.
pub struct AuditSigningKey(SigningKey);

impl fmt::Debug for AuditSigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AuditSigningKey(<redacted>, key id {})", self.public().key_id())
    }
}

impl AuditSigningKey {
    pub fn generate() -> Result<AuditSigningKey, KeyError> {
        let seed = custodian_crypto::random_bytes::<32>().map_err(|_| KeyError::Random)?;
        Ok(AuditSigningKey(SigningKey::from_bytes(&seed)))
    }

    /// The key from its file contents: the 32-byte seed as 64 hex characters.
    pub fn from_hex(text: &str) -> Option<AuditSigningKey> {
        let seed: [u8; 32] = hex::decode(text.trim()).ok()?.try_into().ok()?;
        Some(AuditSigningKey(SigningKey::from_bytes(&seed)))
    }

    pub fn public(&self) -> AuditPublicKey {
        AuditPublicKey(self.0.verifying_key())
    }

    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.0.sign(message).to_bytes()
    }

    /// Loads the key file, or creates it (mode 0600) with a new key when it does not exist;
    /// either way makes sure `KEY.pub` holds the public half. Returns whether it was created.
    pub fn load_or_create(path: &Path) -> Result<(AuditSigningKey, bool), KeyError> {
        let err = |reason: String| KeyError::SigningKeyFile { path: path.display().to_string(), reason };
        let created = match std::fs::read_to_string(path) {
            Ok(_) => false,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = AuditSigningKey::generate()?;
                custodian_crypto::write_secret_file(path, hex::encode(key.0.to_bytes()).as_bytes())
                    .map_err(|e| err(format!("cannot create: {e}")))?;
                true
            }
            Err(e) => return Err(err(e.to_string())),
        };
        // Read back what is on disk: if two servers created the key at once, both use the one
        // that won the rename.
        let key = AuditSigningKey::load(path)?;
        let public_path = public_key_path(path);
        let public_line = format!("{}\n", key.public().to_hex());
        let current = std::fs::read_to_string(&public_path).ok();
        if current.as_deref() != Some(public_line.as_str()) {
            write_file_atomically(&public_path, public_line.as_bytes()).map_err(|e| KeyError::PublicKeyFile {
                path: public_path.display().to_string(),
                reason: format!("cannot write: {e}"),
            })?;
        }
        Ok((key, created))
    }

    /// Loads an existing key file (refusing one that others can read).
    pub fn load(path: &Path) -> Result<AuditSigningKey, KeyError> {
        let err = |reason: String| KeyError::SigningKeyFile { path: path.display().to_string(), reason };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        check_secret_file_mode(path).map_err(err)?;
        AuditSigningKey::from_hex(&text).ok_or_else(|| err("not 64 hex characters (an Ed25519 seed)".into()))
    }
}

/// `KEY.pub` beside the signing key file `KEY`.
pub fn public_key_path(signing_key: &Path) -> PathBuf {
    let mut name = signing_key.as_os_str().to_owned();
    name.push(".pub");
    PathBuf::from(name)
}

/// Reads a public key file: one key per line as 64 hex characters, optionally followed by a
/// comment; blank lines and lines starting with `#` are ignored. Several lines let a verifier
/// trust the keys of several servers, or an old and a new key.
pub fn read_public_keys(path: &Path) -> Result<Vec<AuditPublicKey>, KeyError> {
    let err = |reason: String| KeyError::PublicKeyFile { path: path.display().to_string(), reason };
    let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let text = String::from_utf8(bytes).map_err(|_| err("not UTF-8 text".into()))?;
    parse_public_keys(&text).map_err(err)
}

pub fn parse_public_keys(text: &str) -> Result<Vec<AuditPublicKey>, String> {
    let mut keys = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let token = line.split_whitespace().next().unwrap_or_default();
        let key = AuditPublicKey::from_hex(token).ok_or_else(|| {
            format!("line {}: not an Ed25519 public key (expected 64 hex characters, got {:?})", i + 1, shorten(token))
        })?;
        keys.push(key);
    }
    if keys.is_empty() {
        return Err("holds no public key".into());
    }
    Ok(keys)
}

pub(crate) fn shorten(text: &str) -> String {
    if text.chars().count() <= 24 {
        text.to_owned()
    } else {
        format!("{}…", text.chars().take(24).collect::<String>())
    }
}

fn write_file_atomically(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(contents)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(unix)]
fn check_secret_file_mode(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).map_err(|e| e.to_string())?.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(format!("permissions {:o} are too open; run chmod 600", mode & 0o777));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_secret_file_mode(_path: &Path) -> Result<(), String> {
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_verify() {
        let key = AuditSigningKey::generate().unwrap();
        let public = key.public();
        let sig = key.sign(b"message");
        assert!(public.verify(b"message", &sig));
        assert!(!public.verify(b"messagf", &sig));
        let other = AuditSigningKey::generate().unwrap().public();
        assert!(!other.verify(b"message", &sig));
        assert_ne!(public.key_id(), other.key_id());
        assert_eq!(AuditPublicKey::from_hex(&public.to_hex()), Some(public.clone()));
        assert!(!format!("{key:?}").contains(&hex::encode(key.0.to_bytes())));
    }

    #[test]
    fn public_key_files_are_parsed_precisely() {
        let a = AuditSigningKey::generate().unwrap().public();
        let b = AuditSigningKey::generate().unwrap().public();
        let text = format!("# keys\n{}  server one\n\n{}\n", a.to_hex(), b.to_hex());
        assert_eq!(parse_public_keys(&text).unwrap(), vec![a, b]);
        assert!(parse_public_keys("").unwrap_err().contains("no public key"));
        assert!(parse_public_keys("# only a comment\n").is_err());
        assert!(parse_public_keys("zz\n").unwrap_err().contains("line 1"));
        // The identity point is a weak key: refused.
        let weak = format!("01{}", "00".repeat(31));
        assert!(parse_public_keys(&weak).is_err());
    }

    #[test]
    fn broken_signing_key_files_are_refused_precisely() {
        let dir = std::env::temp_dir().join(format!("custodian-keys-{}-{}", std::process::id(), line!()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("audit-signing.key");
        let (key, created) = AuditSigningKey::load_or_create(&path).unwrap();
        assert!(created);
        let good = std::fs::read_to_string(&path).unwrap();
        let reason = |e: KeyError| match e {
            KeyError::SigningKeyFile { reason, .. } => reason,
            other => panic!("unexpected {other}"),
        };
        // Truncated, garbage, empty: refused (never a new key silently replacing the old one).
        for broken in [&good[..good.len() / 2], "not hex at all", "", "\u{0}\u{ff}"] {
            custodian_crypto::write_secret_file(&path, broken.as_bytes()).unwrap();
            assert!(reason(AuditSigningKey::load(&path).unwrap_err()).contains("64 hex"), "{broken:?}");
            assert!(AuditSigningKey::load_or_create(&path).is_err(), "{broken:?}");
            assert_eq!(std::fs::read_to_string(&path).unwrap(), broken, "the broken file is left for inspection");
        }
        // A key others can read is refused.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            custodian_crypto::write_secret_file(&path, good.as_bytes()).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            assert!(AuditSigningKey::load(&path).is_err());
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        // The right file loads the same key; a missing one is an error for `load`.
        custodian_crypto::write_secret_file(&path, good.as_bytes()).unwrap();
        assert_eq!(AuditSigningKey::load(&path).unwrap().public(), key.public());
        assert!(AuditSigningKey::load(&dir.join("missing.key")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
