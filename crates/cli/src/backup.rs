//! `custodian backup create|verify|restore` (PRODUCT.md R1, R2).
//!
//! `create` asks the service for a backup (a consistent copy, gzipped, sealed, checksummed,
//! audited). `verify` is a restore drill: the backup is opened into a private temporary
//! directory and checked — the seal (a wrong master key or any damage is refused), the checksum
//! of the copy, the hash chain of its audit log, that the master key opens its data keys, and
//! its record counts — then removed. `restore` does the same into an empty data directory (or
//! an empty PostgreSQL database) and keeps the result, migrated to this version and with a
//! `backup.restore` event on its log.

use crate::{StoreArgs, open_service};
use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use custodian_crypto::MasterKey;
use custodian_crypto::backup::{BackupKey, open, read_manifest};
use custodian_service::{RequestContext, Retention, ScratchDir, Service, ServiceConfig, private_dir, private_file};
use custodian_store::{DeletedFilter, ListQuery, Store};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[derive(Subcommand)]
pub enum BackupCommand {
    /// Back the store up into a new file in --output-dir while it is in use (SQLite: a copy;
    /// PostgreSQL: pg_dump).
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
    /// Restore a backup into an empty --data-dir, or an empty database with --database-url (the
    /// master key must be there already, or in CUSTODIAN_MASTER_KEY / --master-key-file:
    /// backups never contain it).
    Restore {
        #[command(flatten)]
        store: StoreArgs,
        /// The backup file.
        file: PathBuf,
    },
}

/// The master key that must already exist (never created here: a new key opens nothing).
fn existing_master_key(args: &StoreArgs) -> Result<MasterKey> {
    if let Some(key) = crate::master_key_from_env() {
        return key;
    }
    let path = crate::master_key_path(args);
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

/// Checks a backup as a restore would, in a private temporary directory (and, for a
/// PostgreSQL backup, a scratch database on the server of `database_url`, dropped afterwards).
/// Returns whether every check passed and the report.
pub async fn drill(file: &Path, master: &MasterKey, database_url: Option<&str>) -> Result<(bool, Value)> {
    // Removed when this returns or is dropped half-way (a server stopping mid-drill).
    let scratch = ScratchDir::in_temp("custodian-drill")?;
    let outcome = async {
        let content = scratch.0.join("content");
        let manifest = unseal(file, master, &content)?;
        let (ok, mut report) = match manifest["backend"].as_str() {
            Some("sqlite") => {
                let store = custodian_store_sqlite::SqliteStore::open_read_only(&content)
                    .await
                    .map_err(|e| anyhow!("the restored database does not open: {e}"))?;
                let checked = inspect(&store, master).await;
                // Closed before the scratch directory goes.
                drop(store);
                checked?
            }
            Some("postgres") => {
                let url = database_url.ok_or_else(|| {
                    anyhow!(
                        "a PostgreSQL backup is checked in a scratch database: give --database-url of a server to use"
                    )
                })?;
                pg_drill(url, &content, master).await?
            }
            other => bail!("{}: a backup of an unknown store ({other:?})", file.display()),
        };
        report["backup_id"] = manifest["backup_id"].clone();
        report["created_at"] = manifest["created_at"].clone();
        report["backend"] = manifest["backend"].clone();
        report["checksum"] = json!("ok");
        report["seal"] = json!("ok");
        Ok::<_, anyhow::Error>((ok, report))
    }
    .await;
    drop(scratch);
    outcome
}

/// `drill`, with a failure to run it reported as a failed check: whether the backup passed, and
/// the report for the `backup.verify` event (the file's name and the outcome included).
async fn drill_details(file: &Path, master: &MasterKey, database_url: Option<&str>) -> (bool, Value) {
    let (ok, mut report) = match drill(file, master, database_url).await {
        Ok(r) => r,
        Err(e) => (false, json!({ "error": format!("{e:#}") })),
    };
    report["file"] = json!(file.file_name().map(|n| n.to_string_lossy().into_owned()));
    report["ok"] = json!(ok);
    (ok, report)
}

/// Restores a pg_dump file into a scratch database, inspects it read-only and drops it.
async fn pg_drill(url: &str, dump: &Path, master: &MasterKey) -> Result<(bool, Value)> {
    use custodian_store_postgres::backup as pg;
    let name = format!("custodian_drill_{}", uuid::Uuid::now_v7().simple());
    let scratch_url = pg::create_database(url, &name).await.map_err(|e| anyhow!("{e}"))?;
    let checked = async {
        pg::restore(&scratch_url, dump).await.map_err(|e| anyhow!("the dump does not restore: {e}"))?;
        let store = custodian_store_postgres::PostgresStore::connect_read_only(&scratch_url)
            .await
            .map_err(|e| anyhow!("the restored database does not open: {e}"))?;
        let checked = inspect(&store, master).await;
        store.close().await;
        checked
    }
    .await;
    if let Err(e) = pg::drop_database(url, &name).await {
        tracing::warn!(database = %name, error = %e, "the drill's scratch database could not be dropped");
    }
    checked
}

pub async fn run(command: BackupCommand) -> Result<()> {
    let ctx = RequestContext::cli();
    match command {
        BackupCommand::Create { store, output_dir } => {
            let service = open_service(&store, ServiceConfig::default()).await?;
            let report = service.create_backup(&ctx, &output_dir).await.map_err(|e| anyhow!("{e}"))?;
            let mut shown = serde_json::to_value(&report)?;
            shown["path"] = json!(report.path);
            println!("{}", serde_json::to_string_pretty(&shown)?);
        }
        BackupCommand::Verify { store, file } => {
            let master = existing_master_key(&store)?;
            let (ok, details) = drill_details(&file, &master, store.database_url.as_deref()).await;
            println!("{}", serde_json::to_string_pretty(&json!({ "ok": ok, "report": details }))?);
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
            if let Some(url) = store.database_url.clone() {
                return restore_postgres(&store, &url, &file).await;
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
            if manifest["backend"] != "sqlite" {
                let _ = std::fs::remove_file(&partial);
                bail!("this is a backup of a PostgreSQL store: restore it with --database-url");
            }
            std::fs::rename(&partial, &db)?;
            finish_restore(&store, &master, &manifest).await?;
        }
    }
    Ok(())
}

/// Opens a restored store (which migrates it to this version and loads its keys with the
/// master key), checks it and records `backup.restore` on its log.
async fn finish_restore(store: &StoreArgs, master: &MasterKey, manifest: &Value) -> Result<()> {
    let service = open_service(store, ServiceConfig::default()).await?;
    let (ok, report) = inspect(service.store().as_ref(), master).await?;
    let mut details = report.clone();
    details["backup_id"] = manifest["backup_id"].clone();
    details["backup_created_at"] = manifest["created_at"].clone();
    details["ok"] = json!(ok);
    service.record_backup_event(&RequestContext::cli(), "backup.restore", details).await.map_err(|e| anyhow!("{e}"))?;
    println!("{}", serde_json::to_string_pretty(&json!({ "ok": ok, "manifest": manifest, "report": report }))?);
    if !ok {
        bail!("the restored store failed its check (see the report); it is kept for inspection");
    }
    Ok(())
}

/// Restores a PostgreSQL backup into the empty database of `url` (pg_restore, one transaction).
async fn restore_postgres(store: &StoreArgs, url: &str, file: &Path) -> Result<()> {
    crate::check_postgres_url(url)?;
    use custodian_store_postgres::backup as pg;
    if !pg::is_empty(url).await.map_err(|e| anyhow!("{e}"))? {
        bail!("the target database has tables already: restore into an empty database");
    }
    let master = existing_master_key(store)?;
    let scratch = ScratchDir::in_temp("custodian-restore")?;
    let dump = scratch.0.join("content");
    let manifest = unseal(file, &master, &dump)?;
    if manifest["backend"] != "postgres" {
        bail!("this is a backup of a SQLite store: restore it with --data-dir (no --database-url)");
    }
    pg::restore(url, &dump).await.map_err(|e| anyhow!("{e}"))?;
    drop(scratch);
    finish_restore(store, &master, &manifest).await
}

/// The name of the backup schedule in the database's job leases.
const BACKUP_JOB: &str = "scheduled_backup";

/// Backups made by `serve` (the directory is also where `POST /api/v1/backups` writes).
#[derive(Args, Clone, Debug)]
pub struct BackupScheduleArgs {
    /// Directory of backups (created 0700; keep it on another disk, copy it offsite). With it
    /// the server backs up on a schedule, checks each new backup with a restore drill, and
    /// deletes the backups the retention lets go.
    #[arg(long, env = "CUSTODIAN_BACKUP_DIR")]
    pub backup_dir: Option<PathBuf>,
    /// Back up when the newest backup is this old (seconds); 0: only on request.
    #[arg(long, env = "CUSTODIAN_BACKUP_EVERY_SECS", default_value_t = 86_400)]
    pub backup_every_secs: u64,
    /// Keep the newest backup of each of this many recent days …
    #[arg(long, env = "CUSTODIAN_BACKUP_KEEP_DAILY", default_value_t = 7)]
    pub backup_keep_daily: usize,
    /// … of this many recent ISO weeks …
    #[arg(long, env = "CUSTODIAN_BACKUP_KEEP_WEEKLY", default_value_t = 4)]
    pub backup_keep_weekly: usize,
    /// … and of this many recent months (the newest backup is always kept).
    #[arg(long, env = "CUSTODIAN_BACKUP_KEEP_MONTHLY", default_value_t = 12)]
    pub backup_keep_monthly: usize,
}

impl BackupScheduleArgs {
    fn retention(&self) -> Retention {
        Retention { daily: self.backup_keep_daily, weekly: self.backup_keep_weekly, monthly: self.backup_keep_monthly }
    }
}

/// The context of scheduled backup work on the audit log.
fn scheduler_ctx() -> RequestContext {
    RequestContext { user_agent: Some("custodian backup schedule".into()), ..RequestContext::default() }
}

/// One scheduled round: a backup, its restore drill (recorded), then the retention.
async fn scheduled_backup(
    service: &Service,
    dir: &Path,
    master: &MasterKey,
    keep: Retention,
    database_url: Option<&str>,
) -> Result<()> {
    let ctx = scheduler_ctx();
    let report = service.create_backup(&ctx, dir).await.map_err(|e| anyhow!("{e}"))?;
    let (ok, mut details) = drill_details(&report.path, master, database_url).await;
    details["scheduled"] = json!(true);
    service.record_backup_event(&ctx, "backup.verify", details).await.map_err(|e| anyhow!("{e}"))?;
    if !ok {
        // Nothing is deleted after a backup that failed its drill.
        bail!("the new backup {} failed its restore drill", report.file);
    }
    let deleted = service.prune_backups(&ctx, dir, keep).await.map_err(|e| anyhow!("{e}"))?;
    tracing::info!(file = %report.file, bytes = report.file_bytes, deleted = deleted.len(), "scheduled backup written and checked");
    Ok(())
}

/// Starts the backup schedule of `serve`, when a directory and an interval are configured.
pub fn start_schedule(
    service: Arc<Service>,
    args: &BackupScheduleArgs,
    master: MasterKey,
    database_url: Option<String>,
) -> Option<tokio::task::JoinHandle<()>> {
    let dir = args.backup_dir.clone()?;
    if args.backup_every_secs == 0 {
        return None;
    }
    let every = Duration::from_secs(args.backup_every_secs);
    let keep = args.retention();
    let holder = format!("backup-{}", uuid::Uuid::now_v7());
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(every.min(Duration::from_secs(60)));
        loop {
            tick.tick().await;
            let newest = match service.list_backups(&scheduler_ctx()).await {
                Ok(files) => files.first().map(|f| f.created_micros),
                Err(e) if e.code == custodian_core::ErrorCode::Unavailable => None,
                Err(e) => {
                    tracing::warn!(error = %e, "backup directory unreadable");
                    continue;
                }
            };
            let every_micros = i64::try_from(every.as_micros()).unwrap_or(i64::MAX);
            let now = custodian_store::now_micros();
            if newest.is_some_and(|t| now.saturating_sub(t) < every_micros) {
                continue;
            }
            // Servers sharing a PostgreSQL database back it up once per period between them
            // (a lease in the database); one that dies mid-backup hands over after the lease.
            let lease = every_micros.max(3_600_000_000).saturating_mul(2);
            match service.store().claim_periodic_job(BACKUP_JOB, &holder, now, lease, every_micros).await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "the backup lease could not be taken");
                    continue;
                }
            }
            if let Err(e) = scheduled_backup(&service, &dir, &master, keep, database_url.as_deref()).await {
                tracing::error!(error = %format!("{e:#}"), "scheduled backup failed");
            }
            if let Err(e) = service.store().release_periodic_job(BACKUP_JOB, &holder).await {
                tracing::warn!(error = %e, "the backup lease could not be released; it expires by itself");
            }
        }
    }))
}
