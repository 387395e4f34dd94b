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

/// File name extension of backups.
pub const BACKUP_EXTENSION: &str = "cbk";

/// A backup just written.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BackupReport {
    pub path: PathBuf,
    pub file_bytes: u64,
    pub manifest: Value,
}

/// Creates `dir` (and its parents) readable by the owner only.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
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
pub fn file_digest(path: &Path) -> std::io::Result<(String, u64)> {
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
        let scratch = dir.join(format!(".tmp-{}", backup_id.simple()));
        let outcome = async {
            private_dir(dir).map_err(|e| io_error("the backup directory cannot be created", e))?;
            private_dir(&scratch).map_err(|e| io_error("the backup directory cannot be written", e))?;
            let audit_seq = self.store.audit_max_seq().await?;
            let copy = scratch.join("custodian.db");
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
        // The unsealed copy never outlives this call.
        let _ = std::fs::remove_dir_all(&scratch);
        match outcome {
            Ok((manifest, file_bytes)) => {
                let mut audit = self.audit_draft(ctx, "backup.create");
                audit.details = json!({
                    "backup_id": backup_id,
                    "file": name,
                    "file_bytes": file_bytes,
                    "db_sha256": manifest["db_sha256"],
                    "db_bytes": manifest["db_bytes"],
                    "audit_seq_at_start": manifest["audit_seq_at_start"],
                });
                self.store.append_audit(vec![audit]).await?;
                Ok(BackupReport { path, file_bytes, manifest })
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

    /// Records a check of a backup (a restore drill) or a restore: `action` is `backup.verify`
    /// or `backup.restore`, `details` what was found.
    pub async fn record_backup_event(&self, ctx: &RequestContext, action: &str, details: Value) -> ServiceResult<()> {
        if !matches!(action, "backup.verify" | "backup.restore" | "backup.prune") {
            return Err(ServiceError::new(ErrorCode::Internal));
        }
        let mut audit = self.audit_draft(ctx, action);
        audit.details = details;
        self.store.append_audit(vec![audit]).await?;
        Ok(())
    }
}
