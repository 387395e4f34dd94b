//! Backups (PRODUCT.md R1): a consistent copy of the store taken while it runs, gzipped and
//! sealed with the backup key (`custodian_crypto::backup`), checksummed (SHA-256 of the copy in
//! the manifest), written under a new name and announced on the audit log (`backup.create`, or
//! `backup.failed`). The copy exists unsealed only for the moment it takes to seal it, in a
//! private (0700) directory beside the backup, and is removed whatever happens. Sensitive values
//! inside it are ciphertext in any case.
//!
//! Checking a backup (a restore drill) and restoring one open the copy as a store of its own;
//! they live in the CLI, which knows the store implementations, and record their outcome here.

use crate::error::{ServiceError, ServiceResult};
use crate::{RequestContext, Service};
use custodian_core::ErrorCode;
use custodian_store::now_micros;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use uuid::Uuid;

/// A private scratch directory, removed with everything in it when dropped (so also when the
/// future using it is dropped half-way).
pub struct ScratchDir(pub PathBuf);

impl ScratchDir {
    /// A new private (0700) directory at `path`.
    pub fn create(path: PathBuf) -> std::io::Result<ScratchDir> {
        private_dir(&path)?;
        Ok(ScratchDir(path))
    }

    /// A new private directory `PREFIX-<random>` in the system's temporary directory.
    pub fn in_temp(prefix: &str) -> std::io::Result<ScratchDir> {
        ScratchDir::create(std::env::temp_dir().join(format!("{prefix}-{}", Uuid::now_v7().simple())))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// File name extension of backups.
pub const BACKUP_EXTENSION: &str = "cbk";

/// A backup file found in a backup directory.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BackupFile {
    pub file: String,
    pub file_bytes: u64,
    /// Creation time (µs), from the manifest.
    #[serde(skip)]
    pub created_micros: i64,
    pub manifest: Value,
}

/// The backups (`*.cbk` with a readable manifest) in `dir`, newest first; files that are not
/// backups are left out.
fn backups_in(dir: &Path) -> std::io::Result<Vec<BackupFile>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some(BACKUP_EXTENSION) || !entry.file_type()?.is_file() {
            continue;
        }
        let mut input = BufReader::new(std::fs::File::open(&path)?);
        let Ok(text) = custodian_crypto::backup::read_manifest(&mut input) else { continue };
        let Ok(manifest) = serde_json::from_str::<Value>(&text) else { continue };
        let Some(created) = manifest["created_at"]
            .as_str()
            .and_then(|t| time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok())
        else {
            continue;
        };
        out.push(BackupFile {
            file: entry.file_name().to_string_lossy().into_owned(),
            file_bytes: entry.metadata()?.len(),
            created_micros: (created.unix_timestamp_nanos() / 1_000) as i64,
            manifest,
        });
    }
    out.sort_by(|a, b| (b.created_micros, &b.file).cmp(&(a.created_micros, &a.file)));
    Ok(out)
}

/// Grandfather-father-son retention: the newest backup of each of the last `daily` days, of
/// each of the last `weekly` ISO weeks and of each of the last `monthly` months that have
/// backups (UTC); the newest backup of all is always kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Retention {
    pub daily: usize,
    pub weekly: usize,
    pub monthly: usize,
}

impl Retention {
    /// Names of the backups of `files` (newest first) this retention lets go.
    pub fn to_delete(&self, files: &[BackupFile]) -> Vec<String> {
        let mut keep = std::collections::HashSet::new();
        if let Some(newest) = files.first() {
            keep.insert(newest.file.clone());
        }
        let period = |f: &BackupFile, kind: u8| -> Option<(i32, u32)> {
            let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(f.created_micros) * 1_000).ok()?;
            Some(match kind {
                0 => (t.year(), u32::from(t.ordinal())),
                1 => {
                    let (year, week, _) = t.to_iso_week_date();
                    (year, u32::from(week))
                }
                _ => (t.year(), u32::from(u8::from(t.month()))),
            })
        };
        for (kind, count) in [(0u8, self.daily), (1, self.weekly), (2, self.monthly)] {
            let mut seen = Vec::new();
            for f in files {
                let Some(p) = period(f, kind) else { continue };
                if seen.contains(&p) {
                    continue;
                }
                if seen.len() == count {
                    break;
                }
                seen.push(p);
                keep.insert(f.file.clone());
            }
        }
        files.iter().filter(|f| !keep.contains(&f.file)).map(|f| f.file.clone()).collect()
    }
}

/// A backup just written.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BackupReport {
    #[serde(skip)]
    pub path: PathBuf,
    pub file: String,
    pub file_bytes: u64,
    pub manifest: Value,
}

/// Creates `dir` (and its parents) readable by the owner only. A directory that exists
/// already keeps its permissions (it may be anyone's, e.g. a home directory).
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// A new file readable by the owner only (never an existing one).
pub fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

/// SHA-256 (hex) and length of a file.
fn file_digest(path: &Path) -> std::io::Result<(String, u64)> {
    let mut file = BufReader::new(std::fs::File::open(path)?);
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut len = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok((hex::encode(h.finalize()), len));
        }
        h.update(&buf[..n]);
        len += n as u64;
    }
}

/// Gzips and seals the database copy `db` into the new file `out`.
fn seal_copy(key: &custodian_crypto::backup::BackupKey, manifest: &str, db: &Path, out: &Path) -> std::io::Result<u64> {
    let plain = BufReader::new(std::fs::File::open(db)?);
    let mut gz = flate2::read::GzEncoder::new(plain, flate2::Compression::default());
    let file = private_file(out)?;
    let mut writer = BufWriter::new(file);
    custodian_crypto::backup::seal(key, manifest, &mut gz, &mut writer).map_err(std::io::Error::other)?;
    writer.flush()?;
    let file = writer.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    Ok(file.metadata()?.len())
}

fn io_error(what: &str, e: impl std::fmt::Display) -> ServiceError {
    tracing::error!(error = %e, "{what}");
    ServiceError::with_message(ErrorCode::Unavailable, format!("{what}: {e}"))
}

impl Service {
    /// Writes a new backup into `dir` (admins with a fresh step-up; the operator offline).
    pub async fn create_backup(&self, ctx: &RequestContext, dir: &Path) -> ServiceResult<BackupReport> {
        self.admin_or_refuse(ctx, "backup.create").await?;
        self.require_step_up(ctx, "backup.create").await?;
        let key = self
            .keyring
            .backup_key()
            .ok_or_else(|| ServiceError::with_message(ErrorCode::Unavailable, "No master key to seal backups with."))?;
        let backup_id = Uuid::now_v7();
        let started = now_micros();
        let stamp = crate::micros_to_rfc3339(started).replace([':', '-'], "");
        let stamp = stamp.get(..15).unwrap_or("backup").to_owned();
        let name = format!("custodian-{stamp}Z-{}.{BACKUP_EXTENSION}", &backup_id.simple().to_string()[24..]);
        let path = dir.join(&name);
        let outcome = async {
            private_dir(dir).map_err(|e| io_error("the backup directory cannot be created", e))?;
            // The unsealed copy never outlives this block, even when the call is dropped
            // half-way (a client that hangs up, a server that stops).
            let scratch = ScratchDir::create(dir.join(format!(".tmp-{}", backup_id.simple())))
                .map_err(|e| io_error("the backup directory cannot be written", e))?;
            let audit_seq = self.store.audit_max_seq().await?;
            let copy = scratch.0.join("custodian.db");
            self.store.backup_copy(&copy).await?;
            let manifest_base = json!({
                "format": 1,
                "backup_id": backup_id,
                "created_at": crate::micros_to_rfc3339(started),
                "backend": self.store.backend(),
                "custodian_version": env!("CARGO_PKG_VERSION"),
                "compression": "gzip",
                "audit_seq_at_start": audit_seq,
                "data_key_versions": self.keyring.versions(),
            });
            let (path, scratch_copy) = (path.clone(), copy.clone());
            let sealed = tokio::task::spawn_blocking(move || -> std::io::Result<(Value, u64)> {
                let (sha, bytes) = file_digest(&scratch_copy)?;
                let mut manifest = manifest_base;
                manifest["db_sha256"] = json!(sha);
                manifest["db_bytes"] = json!(bytes);
                let partial = path.with_extension("partial");
                let written = seal_copy(&key, &manifest.to_string(), &scratch_copy, &partial);
                let file_bytes = match written {
                    Ok(n) => n,
                    Err(e) => {
                        let _ = std::fs::remove_file(&partial);
                        return Err(e);
                    }
                };
                std::fs::rename(&partial, &path)?;
                Ok((manifest, file_bytes))
            })
            .await
            .map_err(|e| io_error("the backup could not be sealed", e))?;
            sealed.map_err(|e| io_error("the backup could not be sealed", e))
        }
        .await;
        match outcome {
            Ok((manifest, file_bytes)) => {
                let mut audit = self.audit_draft(ctx, "backup.create");
                audit.details = json!({
                    "backup_id": backup_id,
                    "file": &name,
                    "file_bytes": file_bytes,
                    "db_sha256": manifest["db_sha256"],
                    "db_bytes": manifest["db_bytes"],
                    "audit_seq_at_start": manifest["audit_seq_at_start"],
                });
                self.store.append_audit(vec![audit]).await?;
                Ok(BackupReport { path, file: name, file_bytes, manifest })
            }
            Err(e) => {
                let mut audit = self.audit_draft(ctx, "backup.failed");
                audit.details = json!({ "backup_id": backup_id, "code": e.code.as_str(), "reason": e.message });
                if let Err(err) = self.store.append_audit(vec![audit]).await {
                    tracing::error!(error = %err, "could not record a failed backup");
                }
                Err(e)
            }
        }
    }

    /// A backup into the configured directory (`ServiceConfig::backup_dir`).
    pub async fn backup_now(&self, ctx: &RequestContext) -> ServiceResult<BackupReport> {
        let dir = self.configured_backup_dir(ctx, "backup.create").await?;
        self.create_backup(ctx, &dir).await
    }

    async fn configured_backup_dir(&self, ctx: &RequestContext, operation: &str) -> ServiceResult<PathBuf> {
        self.admin_or_refuse(ctx, operation).await?;
        self.config.backup_dir.clone().ok_or_else(|| {
            ServiceError::with_message(
                ErrorCode::Conflict,
                "No backup directory is configured (serve --backup-dir DIR).",
            )
        })
    }

    /// The backups in the configured directory, newest first (admins): name, size, manifest.
    pub async fn list_backups(&self, ctx: &RequestContext) -> ServiceResult<Vec<BackupFile>> {
        let dir = self.configured_backup_dir(ctx, "backup.list").await?;
        tokio::task::spawn_blocking(move || backups_in(&dir))
            .await
            .map_err(|e| io_error("the backup directory cannot be read", e))?
            .map_err(|e| io_error("the backup directory cannot be read", e))
    }

    /// Deletes the backups in `dir` that `keep` does not keep (never the newest); audited as
    /// `backup.prune` when any went. Returns the names deleted.
    pub async fn prune_backups(&self, ctx: &RequestContext, dir: &Path, keep: Retention) -> ServiceResult<Vec<String>> {
        self.admin_or_refuse(ctx, "backup.prune").await?;
        let dir = dir.to_owned();
        let deleted = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<String>> {
            let files = backups_in(&dir)?;
            let mut deleted = Vec::new();
            for name in keep.to_delete(&files) {
                std::fs::remove_file(dir.join(&name))?;
                deleted.push(name);
            }
            Ok(deleted)
        })
        .await
        .map_err(|e| io_error("old backups cannot be deleted", e))?
        .map_err(|e| io_error("old backups cannot be deleted", e))?;
        if !deleted.is_empty() {
            let mut audit = self.audit_draft(ctx, "backup.prune");
            audit.details = json!({ "deleted": deleted, "keep": keep });
            self.store.append_audit(vec![audit]).await?;
        }
        Ok(deleted)
    }

    /// Records a check of a backup (a restore drill) or a restore: `action` is `backup.verify`
    /// or `backup.restore`, `details` what was found.
    pub async fn record_backup_event(&self, ctx: &RequestContext, action: &str, details: Value) -> ServiceResult<()> {
        if !matches!(action, "backup.verify" | "backup.restore") {
            return Err(ServiceError::new(ErrorCode::Internal));
        }
        let mut audit = self.audit_draft(ctx, action);
        audit.details = details;
        self.store.append_audit(vec![audit]).await?;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn at(text: &str) -> BackupFile {
        let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).unwrap();
        BackupFile {
            file: format!("{text}.cbk"),
            file_bytes: 1,
            created_micros: (t.unix_timestamp_nanos() / 1_000) as i64,
            manifest: Value::Null,
        }
    }

    #[test]
    fn grandfather_father_son() {
        // Two a day for 70 days, newest first.
        let start = time::macros::datetime!(2026-09-01 00:00 UTC);
        let mut files: Vec<BackupFile> = (0..140)
            .map(|i| {
                let t = start + time::Duration::hours(12 * i);
                at(&t.format(&time::format_description::well_known::Rfc3339).unwrap())
            })
            .collect();
        files.reverse();
        let keep = Retention { daily: 7, weekly: 4, monthly: 3 };
        let deleted = keep.to_delete(&files);
        let kept: Vec<&str> =
            files.iter().map(|f| f.file.as_str()).filter(|f| !deleted.iter().any(|d| d == f)).collect();
        assert_eq!(kept[0], files[0].file, "the newest stays");
        // 7 days (one each, the newest of the day), older weeks' and months' newest.
        assert!(kept.len() >= 7 && kept.len() <= 7 + 4 + 3, "{kept:?}");
        assert!(kept.contains(&"2026-11-09T12:00:00Z.cbk"), "newest of the last day: {kept:?}");
        assert!(!kept.contains(&"2026-11-09T00:00:00Z.cbk"));
        assert!(kept.contains(&"2026-09-30T12:00:00Z.cbk"), "newest of September: {kept:?}");
        assert!(!kept.contains(&"2026-09-01T00:00:00Z.cbk"), "September's oldest goes");
        assert_eq!(deleted.len() + kept.len(), files.len());
        // Nothing kept but the newest when every count is zero; nothing at all to do when empty.
        let none = Retention { daily: 0, weekly: 0, monthly: 0 };
        assert_eq!(none.to_delete(&files).len(), files.len() - 1);
        assert!(keep.to_delete(&[]).is_empty());
    }
}
