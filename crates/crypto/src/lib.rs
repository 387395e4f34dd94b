//! Keys and field encryption. Sensitive field values are sealed with XChaCha20-Poly1305 under a
//! data key; the associated data binds object, field, record id and key version, so a
//! ciphertext copied to another record or field fails to open. Data keys are stored in the
//! database only wrapped by the master key, which lives in a 0600 file (or the environment).
//! Equality lookups use blind indexes: HMAC-SHA256 of the normalised value under a per-field key
//! derived with HKDF from the index root key, so equal values give equal digests without the
//! value ever being stored.

pub mod backup;
pub mod totp;
use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD as B64;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretBox};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

/// Length of every symmetric key.
pub const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 24;
/// Prefix of every encrypted field value (`enc:v1:{key_version}:{base64(nonce || ciphertext)}`).
pub const ENVELOPE_PREFIX: &str = "enc:v1:";

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("master key file {path}: {reason}")]
    KeyFile { path: String, reason: String },
    #[error("master key from the environment must be 64 hex characters")]
    BadEnvKey,
    #[error("a key could not be unwrapped: wrong master key or damaged key material")]
    Unwrap,
    #[error("an encrypted value could not be opened (wrong key, wrong record or damaged)")]
    Open,
    #[error("an encrypted value is malformed")]
    Malformed,
    #[error("no data key with version {0}")]
    UnknownKeyVersion(u32),
    #[error("the operating system random generator failed")]
    Random,
}

/// A 256-bit secret key that is never printed.
pub struct Key(SecretBox<[u8; KEY_LEN]>);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(<redacted>)")
    }
}

impl Key {
    pub fn generate() -> Result<Self, CryptoError> {
        let mut bytes = Box::new([0u8; KEY_LEN]);
        getrandom::fill(bytes.as_mut_slice()).map_err(|_| CryptoError::Random)?;
        Ok(Key(SecretBox::new(bytes)))
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let arr: [u8; KEY_LEN] = bytes.try_into().ok()?;
        Some(Key(SecretBox::new(Box::new(arr))))
    }

    fn bytes(&self) -> &[u8; KEY_LEN] {
        self.0.expose_secret()
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(self.bytes().into())
    }
}

pub fn random_bytes<const N: usize>() -> Result<[u8; N], CryptoError> {
    let mut out = [0u8; N];
    getrandom::fill(&mut out).map_err(|_| CryptoError::Random)?;
    Ok(out)
}

fn seal(key: &Key, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let nonce_bytes = random_bytes::<NONCE_LEN>()?;
    let nonce = XNonce::try_from(&nonce_bytes[..]).map_err(|_| CryptoError::Malformed)?;
    let ct = key.cipher().encrypt(&nonce, Payload { msg: plaintext, aad }).map_err(|_| CryptoError::Malformed)?;
    let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
    out.extend_from_slice(&nonce_bytes);
    out.extend_from_slice(&ct);
    Ok(out)
}

fn open(key: &Key, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
    if sealed.len() < NONCE_LEN + 16 {
        return Err(CryptoError::Malformed);
    }
    let (nonce_bytes, ct) = sealed.split_at(NONCE_LEN);
    let nonce = XNonce::try_from(nonce_bytes).map_err(|_| CryptoError::Malformed)?;
    key.cipher().decrypt(&nonce, Payload { msg: ct, aad }).map_err(|_| CryptoError::Open)
}

/// The master key: wraps data keys, never touches field values directly.
#[derive(Debug)]
pub struct MasterKey(Key);

impl MasterKey {
    /// Reads the key from `CUSTODIAN_MASTER_KEY`-style text (64 hex characters).
    pub fn from_hex(text: &str) -> Result<Self, CryptoError> {
        let bytes = hex::decode(text.trim()).map_err(|_| CryptoError::BadEnvKey)?;
        Key::from_bytes(&bytes).map(MasterKey).ok_or(CryptoError::BadEnvKey)
    }

    /// Loads the key file, or creates it (mode 0600, written to a temporary file and renamed)
    /// when it does not exist. Returns the key and whether it was created.
    pub fn load_or_create(path: &Path) -> Result<(Self, bool), CryptoError> {
        let err = |reason: String| CryptoError::KeyFile { path: path.display().to_string(), reason };
        match std::fs::read_to_string(path) {
            Ok(text) => {
                check_key_file_mode(path).map_err(err)?;
                Ok((Self::from_hex(&text).map_err(|_| err("not 64 hex characters".into()))?, false))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = Key::generate()?;
                write_secret_file(path, hex::encode(key.bytes()).as_bytes()).map_err(|e| err(e.to_string()))?;
                Ok((MasterKey(key), true))
            }
            Err(e) => Err(err(e.to_string())),
        }
    }

    /// Wraps a key for storage; `label` is bound as associated data (e.g. "data:3").
    pub fn wrap(&self, key: &Key, label: &str) -> Result<Vec<u8>, CryptoError> {
        seal(&self.0, format!("custodian-wrap:{label}").as_bytes(), key.bytes())
    }

    pub fn unwrap(&self, wrapped: &[u8], label: &str) -> Result<Key, CryptoError> {
        let bytes =
            open(&self.0, format!("custodian-wrap:{label}").as_bytes(), wrapped).map_err(|_| CryptoError::Unwrap)?;
        Key::from_bytes(&bytes).ok_or(CryptoError::Unwrap)
    }

    /// A second handle on the same key (for the keyring, which unwraps and wraps data keys
    /// added by rotations while the server runs).
    pub fn duplicate(&self) -> MasterKey {
        MasterKey(Key(SecretBox::new(Box::new(*self.0.bytes()))))
    }
}

#[cfg(unix)]
fn check_key_file_mode(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).map_err(|e| e.to_string())?.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(format!("permissions {:o} are too open; run chmod 600", mode & 0o777));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_key_file_mode(_path: &Path) -> Result<(), String> {
    Ok(())
}

/// Writes a secret to a new file readable only by its owner (0600 from creation on).
pub fn write_secret_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let _ = std::fs::remove_file(&tmp);
    let mut file = options.open(&tmp)?;
    file.write_all(contents)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Labels under which the store keeps wrapped keys.
pub fn data_key_label(version: u32) -> String {
    format!("data:{version}")
}
pub const INDEX_KEY_LABEL: &str = "index:1";

/// The version of the data key an envelope was sealed with, if it is an envelope.
pub fn envelope_version(envelope: &str) -> Option<u32> {
    envelope.strip_prefix(ENVELOPE_PREFIX)?.split_once(':')?.0.parse().ok()
}

/// The unwrapped keys the service works with. Data keys can be added while it is in use (a
/// rotation here or on another server); the highest version seals new values, every known
/// version opens old ones.
pub struct Keyring {
    data_keys: std::sync::RwLock<BTreeMap<u32, Arc<Key>>>,
    current: AtomicU32,
    index_root: Key,
    /// Wraps and unwraps the data keys a rotation adds (absent in keyrings built for tests).
    master: Option<MasterKey>,
    /// Per (purpose, object, field): the HMAC state keyed with the HKDF-derived key, so that a
    /// digest costs one HMAC instead of a key derivation plus an HMAC (a write computes
    /// several digests per record). Derived from `index_root` only; never written anywhere.
    keyed: std::sync::RwLock<std::collections::HashMap<String, HmacSha256>>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring").field("versions", &self.versions()).field("current", &self.current_version()).finish()
    }
}

type HmacSha256 = Hmac<Sha256>;

impl Keyring {
    /// `data_keys` must not be empty; the highest version encrypts new values.
    pub fn new(data_keys: BTreeMap<u32, Key>, index_root: Key) -> Option<Self> {
        let current = *data_keys.keys().next_back()?;
        let data_keys = data_keys.into_iter().map(|(v, k)| (v, Arc::new(k))).collect();
        Some(Keyring {
            data_keys: std::sync::RwLock::new(data_keys),
            current: AtomicU32::new(current),
            index_root,
            master: None,
            keyed: Default::default(),
        })
    }

    /// The keyring keeps `master` to unwrap data keys added later and to wrap new ones.
    pub fn with_master(mut self, master: MasterKey) -> Self {
        self.master = Some(master);
        self
    }

    /// The version that seals new values: the highest known.
    pub fn current_version(&self) -> u32 {
        self.current.load(Ordering::Acquire)
    }

    /// Every known data key version, ascending.
    pub fn versions(&self) -> Vec<u32> {
        self.data_keys.read().unwrap_or_else(|e| e.into_inner()).keys().copied().collect()
    }

    fn data_key(&self, version: u32) -> Result<Arc<Key>, CryptoError> {
        let keys = self.data_keys.read().unwrap_or_else(|e| e.into_inner());
        keys.get(&version).cloned().ok_or(CryptoError::UnknownKeyVersion(version))
    }

    /// Adds a data key version unwrapped from its stored form (label `data:N`); a version
    /// already known is left as it is. Returns whether the keyring changed.
    pub fn add_wrapped_data_key(&self, version: u32, wrapped: &[u8]) -> Result<bool, CryptoError> {
        if self.data_key(version).is_ok() {
            return Ok(false);
        }
        let master = self.master.as_ref().ok_or(CryptoError::Unwrap)?;
        let key = master.unwrap(wrapped, &data_key_label(version))?;
        self.insert_data_key(version, key);
        Ok(true)
    }

    fn insert_data_key(&self, version: u32, key: Key) {
        let mut keys = self.data_keys.write().unwrap_or_else(|e| e.into_inner());
        keys.entry(version).or_insert_with(|| Arc::new(key));
        self.current.fetch_max(version, Ordering::AcqRel);
    }

    /// The key that seals backups (derived from the master key), if this keyring has it.
    pub fn backup_key(&self) -> Option<backup::BackupKey> {
        self.master.as_ref().map(backup::BackupKey::derive)
    }

    /// A new data key of `version`, wrapped for storage under its label. It seals nothing until
    /// `add_wrapped_data_key` adds it (after the store kept it).
    pub fn new_wrapped_data_key(&self, version: u32) -> Result<Vec<u8>, CryptoError> {
        let master = self.master.as_ref().ok_or(CryptoError::Unwrap)?;
        master.wrap(&Key::generate()?, &data_key_label(version))
    }

    fn aad(object: &str, field: &str, record_id: &str, version: u32) -> Vec<u8> {
        // Length-prefixed so that no two different tuples give the same bytes.
        let mut aad = Vec::new();
        for part in [object.as_bytes(), field.as_bytes(), record_id.as_bytes()] {
            aad.extend_from_slice(&(part.len() as u32).to_be_bytes());
            aad.extend_from_slice(part);
        }
        aad.extend_from_slice(&version.to_be_bytes());
        aad
    }

    /// Encrypts one field value into its text envelope.
    pub fn encrypt_field(
        &self,
        object: &str,
        field: &str,
        record_id: &str,
        plaintext: &str,
    ) -> Result<String, CryptoError> {
        let current = self.current_version();
        let key = self.data_key(current)?;
        let sealed = seal(&key, &Self::aad(object, field, record_id, current), plaintext.as_bytes())?;
        Ok(format!("{ENVELOPE_PREFIX}{current}:{}", B64.encode(sealed)))
    }

    /// The envelope sealed again under the current data key, or `None` when it already is.
    pub fn reseal_field(
        &self,
        object: &str,
        field: &str,
        record_id: &str,
        envelope: &str,
    ) -> Result<Option<String>, CryptoError> {
        if envelope_version(envelope).ok_or(CryptoError::Malformed)? == self.current_version() {
            return Ok(None);
        }
        let plain = self.decrypt_field(object, field, record_id, envelope)?;
        self.encrypt_field(object, field, record_id, &plain).map(Some)
    }

    /// Opens an envelope made by `encrypt_field` for the same object, field and record.
    pub fn decrypt_field(
        &self,
        object: &str,
        field: &str,
        record_id: &str,
        envelope: &str,
    ) -> Result<String, CryptoError> {
        let rest = envelope.strip_prefix(ENVELOPE_PREFIX).ok_or(CryptoError::Malformed)?;
        let (version, body) = rest.split_once(':').ok_or(CryptoError::Malformed)?;
        let version: u32 = version.parse().map_err(|_| CryptoError::Malformed)?;
        let key = self.data_key(version)?;
        let sealed = B64.decode(body).map_err(|_| CryptoError::Malformed)?;
        let plain = open(&key, &Self::aad(object, field, record_id, version), &sealed)?;
        String::from_utf8(plain).map_err(|_| CryptoError::Malformed)
    }

    fn field_key(&self, info: &str) -> zeroize::Zeroizing<[u8; KEY_LEN]> {
        let hk = hkdf::Hkdf::<Sha256>::new(Some(b"custodian-index"), self.index_root.bytes());
        let mut okm = zeroize::Zeroizing::new([0u8; KEY_LEN]);
        // HKDF-SHA256 can expand up to 8160 bytes; 32 always succeeds.
        let _ = hk.expand(info.as_bytes(), okm.as_mut_slice());
        okm
    }

    /// The HMAC state keyed for `purpose:object:field` (derived once, then cloned).
    fn keyed_mac_state(&self, purpose: &str, object: &str, field: &str) -> Option<HmacSha256> {
        let info = format!("{purpose}:{object}:{field}");
        // A poisoned lock only means another thread panicked mid-insert of a pure value.
        if let Some(mac) = self.keyed.read().unwrap_or_else(|e| e.into_inner()).get(&info) {
            return Some(mac.clone());
        }
        // HMAC accepts keys of any length: `new_from_slice` cannot fail here.
        let mac = <HmacSha256 as KeyInit>::new_from_slice(self.field_key(&info).as_slice()).ok()?;
        let mut cache = self.keyed.write().unwrap_or_else(|e| e.into_inner());
        // Bounded: the (purpose, object, field) triples are few (fields of the schema).
        if cache.len() < 4096 {
            cache.insert(info, mac.clone());
        }
        Some(mac)
    }

    fn keyed_digest(&self, purpose: &str, object: &str, field: &str, value: &str) -> Vec<u8> {
        let Some(mut mac) = self.keyed_mac_state(purpose, object, field) else {
            // Unreachable (see `keyed_mac_state`).
            return Sha256::digest(value.as_bytes()).to_vec();
        };
        mac.update(value.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    /// Blind index of a normalised sensitive value: equal values give equal digests.
    pub fn blind_index(&self, object: &str, field: &str, normalised: &str) -> Vec<u8> {
        self.keyed_digest("blind", object, field, normalised)
    }

    /// Key of a unique value (sensitive or not): a keyed hash so that the uniqueness table
    /// never holds plaintext.
    pub fn unique_key(&self, object: &str, field: &str, normalised: &str) -> Vec<u8> {
        self.keyed_digest("unique", object, field, normalised)
    }

    /// A keyed MAC for values the service derives rather than stores (for example the CSRF
    /// token of a session, derived from the session's token hash): the same input gives the
    /// same MAC, and nobody without the keys can compute it. `purpose` separates the uses.
    pub fn keyed_mac(&self, purpose: &str, value: &str) -> Vec<u8> {
        self.keyed_digest("mac", purpose, "", value)
    }
}

/// SHA-256 as lowercase hex, used for session and API token hashes.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn keyring() -> Keyring {
        let mut keys = BTreeMap::new();
        keys.insert(1, Key::generate().unwrap());
        Keyring::new(keys, Key::generate().unwrap()).unwrap()
    }

    #[test]
    fn a_rotation_seals_new_values_with_the_new_key_and_opens_old_ones() {
        let master = MasterKey::from_hex(&"ab".repeat(32)).unwrap();
        let mut keys = BTreeMap::new();
        keys.insert(1, Key::generate().unwrap());
        let ring = Keyring::new(keys, Key::generate().unwrap()).unwrap().with_master(master.duplicate());
        let old = ring.encrypt_field("contacts", "mobile", "r1", "+8613800138000").unwrap();
        assert_eq!(envelope_version(&old), Some(1));
        assert_eq!(ring.reseal_field("contacts", "mobile", "r1", &old).unwrap(), None, "already current");
        let wrapped = ring.new_wrapped_data_key(2).unwrap();
        assert_eq!(ring.current_version(), 1, "not in use before it is stored and added");
        // Another server's keyring learns the key from its wrapped form.
        let mut other_keys = BTreeMap::new();
        other_keys
            .insert(1, master.unwrap(&master.wrap(&Key::generate().unwrap(), "data:1").unwrap(), "data:1").unwrap());
        assert!(ring.add_wrapped_data_key(2, &wrapped).unwrap());
        assert!(!ring.add_wrapped_data_key(2, &wrapped).unwrap(), "known already");
        assert_eq!(ring.versions(), vec![1, 2]);
        assert_eq!(ring.current_version(), 2);
        let resealed = ring.reseal_field("contacts", "mobile", "r1", &old).unwrap().unwrap();
        assert_eq!(envelope_version(&resealed), Some(2));
        assert_eq!(ring.decrypt_field("contacts", "mobile", "r1", &resealed).unwrap(), "+8613800138000");
        assert_eq!(ring.decrypt_field("contacts", "mobile", "r1", &old).unwrap(), "+8613800138000");
        // A wrapped key under another label, or another master key, is refused.
        assert!(ring.add_wrapped_data_key(3, &wrapped).is_err());
        let stranger = Keyring::new(other_keys, Key::generate().unwrap())
            .unwrap()
            .with_master(MasterKey::from_hex(&"cd".repeat(32)).unwrap());
        assert!(stranger.add_wrapped_data_key(2, &wrapped).is_err());
        assert!(
            Keyring::new(BTreeMap::from([(1, Key::generate().unwrap())]), Key::generate().unwrap())
                .unwrap()
                .new_wrapped_data_key(2)
                .is_err(),
            "no master, no new keys"
        );
        assert_eq!(envelope_version("plain text"), None);
    }

    /// The cached keyed state gives the digest of the plain construction (HKDF-derived field
    /// key, then HMAC): digests already stored stay valid.
    #[test]
    fn cached_digests_equal_the_derived_key_construction() {
        let k = keyring();
        let reference = |purpose: &str, object: &str, field: &str, value: &str| {
            let hk = hkdf::Hkdf::<Sha256>::new(Some(b"custodian-index"), k.index_root.bytes());
            let mut okm = [0u8; KEY_LEN];
            hk.expand(format!("{purpose}:{object}:{field}").as_bytes(), &mut okm).unwrap();
            let mut mac = <HmacSha256 as KeyInit>::new_from_slice(&okm).unwrap();
            mac.update(value.as_bytes());
            mac.finalize().into_bytes().to_vec()
        };
        for _ in 0..2 {
            assert_eq!(
                k.blind_index("contacts", "mobile", "+8613812345678"),
                reference("blind", "contacts", "mobile", "+8613812345678")
            );
            assert_eq!(
                k.unique_key("deals", "contract_no", "HT-1"),
                reference("unique", "deals", "contract_no", "HT-1")
            );
            assert_eq!(k.keyed_mac("csrf", "abc"), reference("mac", "csrf", "", "abc"));
        }
        assert_ne!(k.blind_index("contacts", "mobile", "x"), k.blind_index("contacts", "email", "x"));
    }

    #[test]
    fn ciphertext_is_bound_to_object_field_and_record() {
        let k = keyring();
        let env = k.encrypt_field("contacts", "mobile", "r1", "+8613812345678").unwrap();
        assert!(!env.contains("13812345678"));
        assert_eq!(k.decrypt_field("contacts", "mobile", "r1", &env).unwrap(), "+8613812345678");
        assert!(k.decrypt_field("contacts", "mobile", "r2", &env).is_err());
        assert!(k.decrypt_field("contacts", "email", "r1", &env).is_err());
        assert!(k.decrypt_field("leads", "mobile", "r1", &env).is_err());
    }

    #[test]
    fn wrapped_keys_need_the_right_master_key_and_label() {
        let m1 = MasterKey(Key::generate().unwrap());
        let m2 = MasterKey(Key::generate().unwrap());
        let dk = Key::generate().unwrap();
        let w = m1.wrap(&dk, "data:1").unwrap();
        assert_eq!(m1.unwrap(&w, "data:1").unwrap().bytes(), dk.bytes());
        assert!(m2.unwrap(&w, "data:1").is_err());
        assert!(m1.unwrap(&w, "data:2").is_err());
    }

    #[test]
    fn key_file_is_created_with_mode_0600_and_reloaded() {
        let dir = std::env::temp_dir().join(format!("custodian-key-{}", sha256_hex(&random_bytes::<8>().unwrap())));
        let path = dir.join("master.key");
        let (k1, created) = MasterKey::load_or_create(&path).unwrap();
        assert!(created);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let (k2, created) = MasterKey::load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(k1.0.bytes(), k2.0.bytes());
        assert!(!format!("{k1:?}").contains(&hex::encode(k1.0.bytes())));
        std::fs::remove_dir_all(dir).unwrap();
    }

    proptest! {
        #[test]
        fn encryption_round_trips_any_text(value in any::<String>(), record in "[a-f0-9-]{1,36}") {
            let k = keyring();
            let env = k.encrypt_field("contacts", "address", &record, &value).unwrap();
            prop_assert_eq!(k.decrypt_field("contacts", "address", &record, &env).unwrap(), value);
        }

        #[test]
        fn blind_indexes_are_deterministic_and_field_specific(value in "[0-9+]{1,20}") {
            let k = keyring();
            prop_assert_eq!(k.blind_index("contacts", "mobile", &value), k.blind_index("contacts", "mobile", &value));
            prop_assert_ne!(k.blind_index("contacts", "mobile", &value), k.blind_index("leads", "mobile", &value));
            prop_assert_ne!(k.blind_index("contacts", "mobile", &value), k.unique_key("contacts", "mobile", &value));
        }

        #[test]
        fn garbage_envelopes_never_panic(text in any::<String>()) {
            let k = keyring();
            let _ = k.decrypt_field("contacts", "mobile", "r", &text);
            let _ = k.decrypt_field("contacts", "mobile", "r", &format!("enc:v1:1:{text}"));
        }
    }
}
