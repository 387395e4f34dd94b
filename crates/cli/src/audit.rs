//! `custodian audit …`: verify the audit log against its signed checkpoints, write checkpoints,
//! prove that one event is in the log and check such a proof without the database. Also the
//! flags and start-up of the checkpoint writer that `serve` runs.
//!
//! Default locations are beside the data directory, never inside it (a copy of the data
//! directory must not carry the evidence against itself): for `--data-dir /srv/custodian/data`
//! the checkpoint file is `/srv/custodian/data.audit-checkpoints.log` and the signing key
//! `/srv/custodian/data.audit-signing.key` (public half: `….key.pub`).

use crate::{StoreArgs, open_store};
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use custodian_audit::checkpoint::CheckpointFile;
use custodian_audit::keys::public_key_path;
use custodian_audit::proof::ProveError;
use custodian_audit::verify::format_micros;
use custodian_audit::{
    AuditPublicKey, AuditSigningKey, CheckpointWriter, InclusionProof, VerifyStatus, WriterConfig, WriterTask,
    build_proof, check_proof, read_checkpoint_file, read_public_keys, verify_store,
};
use custodian_store::Store;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Exit status when the log was modified (the first bad sequence number is printed).
const EXIT_TAMPERED: i32 = 2;
/// Exit status when the checkpoint evidence is unusable (the log itself is consistent).
const EXIT_EVIDENCE: i32 = 3;
/// Largest proof file read.
const MAX_PROOF_BYTES: u64 = 16 << 20;

/// Where and how often signed audit checkpoints are written (by `serve` and `audit checkpoint`).
#[derive(Args, Clone, Debug)]
pub struct CheckpointArgs {
    /// Append-only file of signed audit checkpoints; keep it (or a copy) away from the database.
    /// Defaults to DATA_DIR.audit-checkpoints.log beside the data directory.
    #[arg(long, env = "CUSTODIAN_CHECKPOINT_FILE")]
    pub checkpoint_file: Option<PathBuf>,
    /// Ed25519 key that signs checkpoints, created (mode 0600) at first use with its public half
    /// in KEY.pub. Defaults to DATA_DIR.audit-signing.key beside the data directory.
    #[arg(long, env = "CUSTODIAN_AUDIT_SIGNING_KEY")]
    pub audit_signing_key: Option<PathBuf>,
    /// Write a checkpoint as soon as this many events are unchecked (also the longest range,
    /// which bounds inclusion proofs to log2(N) hashes).
    #[arg(long, env = "CUSTODIAN_CHECKPOINT_EVERY_EVENTS", default_value_t = 1000,
          value_parser = clap::value_parser!(i64).range(1..=65536))]
    pub checkpoint_every_events: i64,
    /// Write a checkpoint of whatever is pending at least this often (seconds).
    #[arg(long, env = "CUSTODIAN_CHECKPOINT_EVERY_SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub checkpoint_every_secs: u64,
}

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Verify the audit log: recompute the hash chain from every stored event and every signed
    /// checkpoint. Exit status 0: intact; 2: the log was modified (the first bad sequence number
    /// is printed); 3: the checkpoint evidence is unusable (garbled or truncated file, wrong key,
    /// bad signatures); 1: verification could not run.
    Verify(VerifyArgs),
    /// Print an inclusion proof (JSON) of one event against a signed checkpoint.
    Prove(ProveArgs),
    /// Check an inclusion proof without the database. Exit status 0: valid; 2: not valid.
    CheckProof(CheckProofArgs),
    /// Write signed checkpoints for every pending event now (servers do it every N events or
    /// T seconds).
    Checkpoint {
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        checkpoints: CheckpointArgs,
    },
}

#[derive(Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Checkpoint file to verify against; repeat for the files of several servers. Defaults to
    /// DATA_DIR.audit-checkpoints.log when it exists.
    #[arg(long = "checkpoint-file")]
    checkpoint_files: Vec<PathBuf>,
    /// File of trusted public keys (64 hex characters per line); repeatable. Defaults to the
    /// signing key's KEY.pub. Pass a copy kept away from the server for independent assurance.
    #[arg(long = "public-key")]
    public_keys: Vec<PathBuf>,
    /// Signing key whose KEY.pub is trusted when no --public-key is given.
    #[arg(long, env = "CUSTODIAN_AUDIT_SIGNING_KEY")]
    audit_signing_key: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct ProveArgs {
    /// Sequence number of the event.
    seq: i64,
    #[command(flatten)]
    store: StoreArgs,
    /// Checkpoint file to take the checkpoint from; repeatable. Defaults to
    /// DATA_DIR.audit-checkpoints.log.
    #[arg(long = "checkpoint-file")]
    checkpoint_files: Vec<PathBuf>,
    /// Only use checkpoints signed by these keys. Defaults to the signing key's KEY.pub.
    #[arg(long = "public-key")]
    public_keys: Vec<PathBuf>,
    #[arg(long, env = "CUSTODIAN_AUDIT_SIGNING_KEY")]
    audit_signing_key: Option<PathBuf>,
    /// Prove the event's hash only, without its body.
    #[arg(long)]
    hash_only: bool,
    /// Write the proof to this file instead of standard output.
    #[arg(long)]
    output: Option<PathBuf>,
}

#[derive(Args)]
pub struct CheckProofArgs {
    /// The proof file (`-` for standard input).
    file: PathBuf,
    /// File of trusted public keys (64 hex characters per line); repeatable.
    #[arg(long = "public-key", required = true)]
    public_keys: Vec<PathBuf>,
}

/// `DATA_DIR.<suffix>` beside the data directory.
fn beside_data_dir(data_dir: &Path, suffix: &str) -> PathBuf {
    let abs = std::fs::canonicalize(data_dir)
        .or_else(|_| std::path::absolute(data_dir))
        .unwrap_or_else(|_| data_dir.to_owned());
    let name = abs.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "custodian".into());
    abs.parent().unwrap_or_else(|| Path::new("/")).join(format!("{name}.{suffix}"))
}

pub fn default_checkpoint_file(store: &StoreArgs) -> PathBuf {
    beside_data_dir(&store.data_dir, "audit-checkpoints.log")
}

pub fn default_signing_key(store: &StoreArgs) -> PathBuf {
    beside_data_dir(&store.data_dir, "audit-signing.key")
}

fn is_inside(path: &Path, dir: &Path) -> bool {
    let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_owned());
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| abs(dir));
    let file = path
        .parent()
        .and_then(|p| std::fs::canonicalize(if p.as_os_str().is_empty() { Path::new(".") } else { p }).ok())
        .unwrap_or_else(|| abs(path));
    file.starts_with(dir)
}

/// Loads (or creates) the signing key and builds a writer.
async fn checkpoint_writer(
    store: Arc<dyn Store>,
    store_args: &StoreArgs,
    args: &CheckpointArgs,
) -> Result<CheckpointWriter> {
    let key_path = args.audit_signing_key.clone().unwrap_or_else(|| default_signing_key(store_args));
    let file = args.checkpoint_file.clone().unwrap_or_else(|| default_checkpoint_file(store_args));
    if store_args.database_url.is_none() && is_inside(&file, &store_args.data_dir) {
        tracing::warn!(file = %file.display(), "the audit checkpoint file is inside the data directory: keep it elsewhere");
    }
    if store_args.database_url.is_none() && is_inside(&key_path, &store_args.data_dir) {
        tracing::warn!(key = %key_path.display(), "the audit signing key is inside the data directory: keep it elsewhere");
    }
    let (key, created) = AuditSigningKey::load_or_create(&key_path)?;
    if created {
        tracing::warn!(
            key = %key_path.display(),
            public_key = %public_key_path(&key_path).display(),
            key_id = %key.public().key_id(),
            "created a new audit signing key (mode 0600); keep a copy of its .pub file away from this server to verify checkpoints"
        );
        // The log itself records which key signs its checkpoints from now on.
        let mut event = custodian_store::AuditDraft::new("key.create");
        event.user_agent = Some("custodian".into());
        event.details = serde_json::json!({
            "label": "audit-signing",
            "purpose": "signing audit checkpoints",
            "key_id": key.public().key_id().to_string(),
            "public_key": key.public().to_hex(),
            "file": key_path.display().to_string(),
        });
        store.append_audit(vec![event]).await.context("recording the new audit signing key in the audit log")?;
    }
    // Fail now, not at the first checkpoint, when the file cannot be appended to.
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&file)
        .with_context(|| format!("cannot open the audit checkpoint file {}", file.display()))?;
    let config = WriterConfig::new(file, args.checkpoint_every_events, Duration::from_secs(args.checkpoint_every_secs));
    Ok(CheckpointWriter::new(store, key, config))
}

/// The checkpoint file and trusted public key the server's verify API checks against: the
/// ones its checkpoint writer uses.
pub fn evidence(store_args: &StoreArgs, args: &CheckpointArgs) -> custodian_service::AuditEvidence {
    let key_path = args.audit_signing_key.clone().unwrap_or_else(|| default_signing_key(store_args));
    custodian_service::AuditEvidence {
        checkpoint_files: vec![args.checkpoint_file.clone().unwrap_or_else(|| default_checkpoint_file(store_args))],
        public_key_files: vec![public_key_path(&key_path)],
    }
}

/// Starts the periodic checkpoint writer of `serve`.
pub async fn start_checkpoint_writer(
    store: Arc<dyn Store>,
    store_args: &StoreArgs,
    args: &CheckpointArgs,
) -> Result<WriterTask> {
    let writer = checkpoint_writer(store, store_args, args).await?;
    tracing::info!(
        file = %writer.config().file.display(),
        every_events = args.checkpoint_every_events,
        every_secs = args.checkpoint_every_secs,
        "writing signed audit checkpoints"
    );
    Ok(WriterTask::spawn(writer))
}

pub async fn run(command: AuditCommand) -> Result<()> {
    match command {
        AuditCommand::Verify(args) => verify(args).await,
        AuditCommand::Prove(args) => prove(args).await,
        AuditCommand::CheckProof(args) => check(args),
        AuditCommand::Checkpoint { store, checkpoints } => checkpoint_now(store, checkpoints).await,
    }
}

fn exit(code: i32) -> ! {
    let _ = std::io::stdout().flush();
    std::process::exit(code)
}

/// Opens the store for reading the log; refuses to create an empty SQLite database.
async fn open_existing_store(args: &StoreArgs) -> Result<Arc<dyn Store>> {
    if args.database_url.is_none() {
        let db = args.data_dir.join("custodian.db");
        if !db.exists() {
            bail!("no Custodian database at {} (wrong --data-dir?)", db.display());
        }
    }
    open_store(args).await
}

/// `open_existing_store` for commands that only read the log (verify, prove): a SQLite file is
/// opened read-only, a PostgreSQL database through read-only sessions, neither migrated nor
/// written, so checking the evidence leaves it as it was.
async fn open_store_to_read(args: &StoreArgs) -> Result<Arc<dyn Store>> {
    if let Some(url) = &args.database_url {
        crate::check_postgres_url(url)?;
        let store = custodian_store_postgres::PostgresStore::connect_read_only(url)
            .await
            .map_err(|e| anyhow::anyhow!("cannot open PostgreSQL store for reading: {e}"))?;
        return Ok(Arc::new(store));
    }
    let db = args.data_dir.join("custodian.db");
    if !db.exists() {
        bail!("no Custodian database at {} (wrong --data-dir?)", db.display());
    }
    let store = custodian_store_sqlite::SqliteStore::open_read_only(&db)
        .await
        .map_err(|e| anyhow::anyhow!("cannot open SQLite store at {} for reading: {e}", db.display()))?;
    Ok(Arc::new(store))
}

fn read_files(explicit: &[PathBuf], store: &StoreArgs) -> Result<(Vec<CheckpointFile>, Vec<PathBuf>)> {
    let paths: Vec<PathBuf> = if explicit.is_empty() {
        let default = default_checkpoint_file(store);
        if default.exists() { vec![default] } else { Vec::new() }
    } else {
        explicit.to_vec()
    };
    let mut files = Vec::new();
    for p in &paths {
        files
            .push(read_checkpoint_file(p).with_context(|| format!("cannot read the checkpoint file {}", p.display()))?);
    }
    Ok((files, paths))
}

/// The trusted keys: the files given, else the signing key's `.pub` (or the key itself).
fn trusted_keys(
    explicit: &[PathBuf],
    signing_key: Option<&Path>,
    store: &StoreArgs,
) -> Result<Vec<(AuditPublicKey, String)>> {
    let mut keys = Vec::new();
    if !explicit.is_empty() {
        for p in explicit {
            for k in read_public_keys(p)? {
                keys.push((k, p.display().to_string()));
            }
        }
        return Ok(keys);
    }
    let key_path = signing_key.map(Path::to_owned).unwrap_or_else(|| default_signing_key(store));
    let public = public_key_path(&key_path);
    if public.exists() {
        for k in read_public_keys(&public)? {
            keys.push((k, public.display().to_string()));
        }
    } else if key_path.exists() {
        keys.push((AuditSigningKey::load(&key_path)?.public(), key_path.display().to_string()));
    }
    Ok(keys)
}

async fn verify(args: VerifyArgs) -> Result<()> {
    let (files, paths) = read_files(&args.checkpoint_files, &args.store)?;
    let keys = trusted_keys(&args.public_keys, args.audit_signing_key.as_deref(), &args.store)?;
    if !files.is_empty() && keys.is_empty() {
        bail!(
            "cannot check the checkpoint signatures: no public key found (pass --public-key FILE, the KEY.pub written \
             beside the audit signing key)"
        );
    }
    let store = open_store_to_read(&args.store).await?;
    let public: Vec<AuditPublicKey> = keys.iter().map(|(k, _)| k.clone()).collect();
    let report = verify_store(store.as_ref(), &files, &public).await?;
    if args.json {
        println!("{}", report.to_json());
    } else {
        for p in &paths {
            println!("checkpoint file: {}", p.display());
        }
        for (k, from) in &keys {
            println!("trusted key: {} (from {from})", k.key_id());
        }
        print!("{}", report.render());
    }
    match report.status() {
        VerifyStatus::Intact => Ok(()),
        VerifyStatus::Tampered => {
            if let Some(first) = &report.first_bad {
                eprintln!("error: the audit log was modified: first bad sequence number {}", first.seq);
            }
            exit(EXIT_TAMPERED)
        }
        VerifyStatus::EvidenceProblem => {
            eprintln!("error: the audit checkpoints could not all be verified (see the problems above)");
            exit(EXIT_EVIDENCE)
        }
    }
}

async fn prove(args: ProveArgs) -> Result<()> {
    if args.seq < 1 {
        bail!("sequence numbers start at 1");
    }
    let (files, paths) = read_files(&args.checkpoint_files, &args.store)?;
    if files.is_empty() {
        bail!("no checkpoint file at {} (pass --checkpoint-file)", default_checkpoint_file(&args.store).display());
    }
    let keys: Vec<AuditPublicKey> = trusted_keys(&args.public_keys, args.audit_signing_key.as_deref(), &args.store)?
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    if keys.is_empty() {
        eprintln!("warning: no public key found: checkpoint signatures were not checked before proving");
    }
    let store = open_store_to_read(&args.store).await?;
    let proof = match build_proof(store.as_ref(), &files, &keys, args.seq, args.hash_only).await {
        Ok(p) => p,
        Err(e @ ProveError::Mismatch(_)) => {
            eprintln!("error: {e}");
            exit(EXIT_TAMPERED)
        }
        Err(e) => return Err(e.into()),
    };
    let text = proof.to_json().to_string();
    let c = &proof.checkpoint.checkpoint;
    match &args.output {
        Some(path) => {
            std::fs::write(path, format!("{text}\n")).with_context(|| format!("writing {}", path.display()))?
        }
        None => println!("{text}"),
    }
    eprintln!(
        "proof of event {} against the checkpoint of seq {}..{} signed {} ({}; {} bytes, path of {} hashes)",
        args.seq,
        c.seq_from,
        c.seq_to,
        format_micros(c.at),
        paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "),
        text.len(),
        proof.path.len()
    );
    Ok(())
}

fn check(args: CheckProofArgs) -> Result<()> {
    let mut keys = Vec::new();
    for p in &args.public_keys {
        keys.extend(read_public_keys(p)?);
    }
    let mut bytes = Vec::new();
    if args.file.as_os_str() == "-" {
        std::io::stdin().take(MAX_PROOF_BYTES + 1).read_to_end(&mut bytes).context("reading the proof from stdin")?;
    } else {
        std::fs::File::open(&args.file)
            .and_then(|f| f.take(MAX_PROOF_BYTES + 1).read_to_end(&mut bytes))
            .with_context(|| format!("cannot read the proof {}", args.file.display()))?;
    }
    let outcome = if bytes.len() as u64 > MAX_PROOF_BYTES {
        Err(format!("not a proof: larger than {MAX_PROOF_BYTES} bytes"))
    } else {
        InclusionProof::parse(&bytes).and_then(|proof| check_proof(&proof, &keys))
    };
    match outcome {
        Ok(ok) => {
            println!(
                "VALID: event {} (hash {}) is in the audit log: covered by the checkpoint of seq {}..{} signed {} by key {}",
                ok.seq,
                hex::encode(ok.event_hash),
                ok.seq_from,
                ok.seq_to,
                format_micros(ok.signed_at),
                ok.key_id
            );
            if let Some(summary) = ok.summary {
                println!("event: {summary}");
            }
            Ok(())
        }
        Err(reason) => {
            println!("INVALID: {reason}");
            exit(EXIT_TAMPERED)
        }
    }
}

async fn checkpoint_now(store_args: StoreArgs, args: CheckpointArgs) -> Result<()> {
    let store = open_existing_store(&store_args).await?;
    let writer = checkpoint_writer(store, &store_args, &args).await?;
    let written = writer.write_due(true).await?;
    if written.is_empty() {
        println!("no pending events: nothing to checkpoint");
    }
    for s in &written {
        let c = &s.checkpoint;
        println!(
            "checkpoint of seq {}..{} (head {}) signed by key {} and appended to {}",
            c.seq_from,
            c.seq_to,
            hex::encode(c.head),
            s.key_id,
            writer.config().file.display()
        );
    }
    Ok(())
}
