//! `custodian backup create|verify|restore` (PRODUCT.md R1, R2).
//!
//! `create` asks the service for a backup (a consistent copy, gzipped, sealed, checksummed,
//! audited). `verify` is a restore drill: the backup is opened into a private temporary
//! directory and checked — the seal (a wrong master key or any damage is refused), the checksum
//! of the copy, the hash chain of its audit log, that the master key opens its data keys, and
//! its record counts — then removed. `restore` does the same into an empty data directory and
//! keeps the result, migrated to this version and with a `backup.restore` event on its log.

use crate::{StoreArgs, open_service};
use anyhow::{Context, Result, anyhow, bail};
use clap::Subcommand;
use custodian_crypto::MasterKey;
use custodian_crypto::backup::{BackupKey, open, read_manifest};
use custodian_service::{RequestContext, ServiceConfig, private_dir, private_file};
use custodian_store::{DeletedFilter, ListQuery, Store};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};

#[derive(Subcommand)]
pub enum BackupCommand {
    /// Back the store up into a new file in --output-dir while it is in use (SQLite).
    Create {
        #[command(flatten)]
        store: StoreArgs,
        /// Directory of backups (created 0700); keep it on another disk or copy it offsite.
        #[arg(long)]
        output_dir: PathBuf,
    },
    /// Restore drill: open the backup in a private temporary directory and check its seal,
    /// checksum, audit chain, keys and records; exits non-zero when any check fails.
    Verify {
        #[command(flatten)]
        store: StoreArgs,
        /// The backup file.
        file: PathBuf,
    },
    /// Restore a backup into an empty --data-dir (the master key must be there already, or in
    /// CUSTODIAN_MASTER_KEY / --master-key-file: backups never contain it).
    Restore {
        #[command(flatten)]
        store: StoreArgs,
        /// The backup file.
        file: PathBuf,
    },
}

/// The master key that must already exist (never created here: a new key opens nothing).
fn existing_master_key(args: &StoreArgs) -> Result<MasterKey> {
    if let Ok(hex) = std::env::var("CUSTODIAN_MASTER_KEY") {
        return MasterKey::from_hex(&hex).context("CUSTODIAN_MASTER_KEY");
    }
    let path = args.master_key_file.clone().unwrap_or_else(|| args.data_dir.join("master.key"));
    if !path.is_file() {
        bail!(
            "no master key at {} (backups are sealed with the master key of the store they came from; \
             copy its key file there, or give --master-key-file or CUSTODIAN_MASTER_KEY)",
            path.display()
        );
    }
    Ok(MasterKey::load_or_create(&path)?.0)
}

/// Writes what it is given to a file while hashing it.
struct HashingFile {
    file: std::fs::File,
    hash: Sha256,
    len: u64,
}

impl Write for HashingFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hash.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// Opens `file` into the new database file `db`: the seal, then the checksum against the
/// manifest. Returns the manifest.
fn unseal(file: &Path, master: &MasterKey, db: &Path) -> Result<Value> {
    let mut input = BufReader::new(std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?);
    let manifest_text = read_manifest(&mut input).map_err(|e| anyhow!("{}: {e}", file.display()))?;
    let manifest: Value =
        serde_json::from_str(&manifest_text).map_err(|_| anyhow!("{}: the manifest is not JSON", file.display()))?;
    let out = HashingFile { file: private_file(db)?, hash: Sha256::new(), len: 0 };
    let mut gunzip = flate2::write::GzDecoder::new(out);
    open(&BackupKey::derive(master), &manifest_text, &mut input, &mut gunzip)
        .map_err(|e| anyhow!("{}: {e}", file.display()))?;
    let out = gunzip.finish().map_err(|e| anyhow!("{}: the content does not decompress: {e}", file.display()))?;
    out.file.sync_all()?;
    let sha = hex::encode(out.hash.finalize());
    if manifest["db_sha256"].as_str() != Some(sha.as_str()) || manifest["db_bytes"].as_u64() != Some(out.len) {
        bail!("{}: the restored database does not match the backup's checksum", file.display());
    }
    Ok(manifest)
}

/// What a restored database holds: its audit chain checked, its keys opened, its records counted.
async fn inspect(store: &dyn Store, master: &MasterKey) -> Result<(bool, Value)> {
    let report =
        custodian_audit::verify_store(store, &[], &[]).await.map_err(|e| anyhow!("audit verification: {e}"))?;
    let chain_ok = report.first_bad.is_none();
    let mut keys_ok = 0;
    let mut keys_bad = Vec::new();
    for row in store.list_wrapped_keys().await.map_err(|e| anyhow!("{e}"))? {
        match master.unwrap(&row.wrapped, &row.label) {
            Ok(_) => keys_ok += 1,
            Err(_) => keys_bad.push(row.label),
        }
    }
    let mut records = serde_json::Map::new();
    for object in custodian_core::access::STANDARD_OBJECTS {
        let mut query = ListQuery::new(*object);
        query.deleted = DeletedFilter::All;
        let n = store.count_records(&query).await.map_err(|e| anyhow!("{e}"))?;
        records.insert((*object).to_owned(), json!(n));
    }
    let ok = chain_ok && keys_bad.is_empty() && keys_ok > 0;
    Ok((
        ok,
        json!({
            "audit_chain": if chain_ok { "intact" } else { "tampered" },
            "audit_events": report.events,
            "audit_last_seq": report.last_seq,
            "audit_first_bad_seq": report.first_bad.as_ref().map(|f| f.seq),
            "keys_opened": keys_ok,
            "keys_refused": keys_bad,
            "records": records,
        }),
    ))
}

/// The live store of `args`, when there is one to record the check in.
async fn live_service(args: &StoreArgs) -> Result<Option<std::sync::Arc<custodian_service::Service>>> {
    if args.database_url.is_none() && !args.data_dir.join("custodian.db").is_file() {
        return Ok(None);
    }
    Ok(Some(open_service(args, ServiceConfig::default()).await?))
}

/// Checks a backup as a restore would, in a private temporary directory. Returns whether every
/// check passed and the report.
pub async fn drill(file: &Path, master: &MasterKey) -> Result<(bool, Value)> {
    let scratch = std::env::temp_dir().join(format!("custodian-drill-{}", uuid::Uuid::now_v7().simple()));
    private_dir(&scratch)?;
    let outcome = async {
        let db = scratch.join("custodian.db");
        let manifest = unseal(file, master, &db)?;
        let store = custodian_store_sqlite::SqliteStore::open_read_only(&db)
            .await
            .map_err(|e| anyhow!("the restored database does not open: {e}"))?;
        let (ok, mut report) = inspect(&store, master).await?;
        // Closed before the scratch directory goes.
        drop(store);
        report["backup_id"] = manifest["backup_id"].clone();
        report["created_at"] = manifest["created_at"].clone();
        report["checksum"] = json!("ok");
        report["seal"] = json!("ok");
        Ok::<_, anyhow::Error>((ok, report))
    }
    .await;
    let _ = std::fs::remove_dir_all(&scratch);
    outcome
}

pub async fn run(command: BackupCommand) -> Result<()> {
    let ctx = RequestContext::cli();
    match command {
        BackupCommand::Create { store, output_dir } => {
            let service = open_service(&store, ServiceConfig::default()).await?;
            let report = service.create_backup(&ctx, &output_dir).await.map_err(|e| anyhow!("{e}"))?;
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        BackupCommand::Verify { store, file } => {
            let master = existing_master_key(&store)?;
            let (ok, report) = match drill(&file, &master).await {
                Ok(r) => r,
                Err(e) => (false, json!({ "error": format!("{e:#}") })),
            };
            let mut details = report.clone();
            details["file"] = json!(file.file_name().map(|n| n.to_string_lossy().into_owned()));
            details["ok"] = json!(ok);
            println!("{}", serde_json::to_string_pretty(&json!({ "ok": ok, "report": report }))?);
            // On the log of the store this runs beside, when there is one it can open.
            let recorded = async {
                match live_service(&store).await? {
                    Some(service) => service
                        .record_backup_event(&ctx, "backup.verify", details)
                        .await
                        .map(|_| true)
                        .map_err(|e| anyhow!("{e}")),
                    None => Ok(false),
                }
            };
            match recorded.await {
                Ok(true) => {}
                Ok(false) => eprintln!("note: no store at --data-dir: the check is not recorded on an audit log"),
                Err(e) => eprintln!("warning: the check could not be recorded on the audit log: {e:#}"),
            }
            if !ok {
                bail!("the backup failed its check");
            }
        }
        BackupCommand::Restore { store, file } => {
            if store.database_url.is_some() {
                bail!("custodian backup restores SQLite stores (--data-dir); restore PostgreSQL with its own tools");
            }
            let db = store.data_dir.join("custodian.db");
            if db.exists() {
                bail!("{} exists already: restore into an empty data directory", db.display());
            }
            let master = existing_master_key(&store)?;
            private_dir(&store.data_dir)?;
            let partial = store.data_dir.join("custodian.db.restoring");
            let _ = std::fs::remove_file(&partial);
            let manifest = match unseal(&file, &master, &partial) {
                Ok(m) => m,
                Err(e) => {
                    let _ = std::fs::remove_file(&partial);
                    return Err(e);
                }
            };
            std::fs::rename(&partial, &db)?;
            // Opening migrates it to this version and loads its keys with the master key.
            let service = open_service(&store, ServiceConfig::default()).await?;
            let (ok, report) = inspect(service.store().as_ref(), &master).await?;
            let mut details = report.clone();
            details["backup_id"] = manifest["backup_id"].clone();
            details["backup_created_at"] = manifest["created_at"].clone();
            details["ok"] = json!(ok);
            service.record_backup_event(&ctx, "backup.restore", details).await.map_err(|e| anyhow!("{e}"))?;
            println!("{}", serde_json::to_string_pretty(&json!({ "ok": ok, "manifest": manifest, "report": report }))?);
            if !ok {
                bail!("the restored store failed its check (see the report); it is kept for inspection");
            }
        }
    }
    Ok(())
}
