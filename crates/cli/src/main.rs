//! `custodian`: the one binary. Serves the API, administers users, runs migrations and loads
//! demo data. The backend is chosen here, once: `--database-url postgres://…` selects
//! PostgreSQL, otherwise SQLite in `--data-dir`.

mod admin;
mod audit;
mod backup;
mod bench;
mod dedupe;
mod demo;
mod exports;
mod imports;
mod keys;
mod linkage;
mod monitor;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use custodian_crypto::MasterKey;
use custodian_service::{RequestContext, Service, ServiceConfig, load_keyring};
use custodian_store::Store;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;

/// mimalloc instead of glibc malloc: rows and requests are built on one thread and dropped on
/// another (the SQLite driver's worker thread, tokio's workers, the verifier thread), and glibc
/// then locks the allocating thread's arena for every free — a profile of `audit verify` over
/// 1M events spent about a fifth of its time in those futex waits.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "custodian",
    version,
    about = "Custodian — a self-hosted CRM whose customer data is accurate and safe",
    long_about = "Custodian keeps customer data accurate and safe: validated and normalised on every write, \
                  sensitive fields encrypted at rest, every change versioned and audited.\n\n\
                  Storage: SQLite in --data-dir by default; --database-url postgres://… selects PostgreSQL."
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, env = "CUSTODIAN_LOG_FORMAT", default_value = "json", value_parser = ["json", "text"])]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct StoreArgs {
    /// Directory for the SQLite database and the master key file.
    #[arg(long, env = "CUSTODIAN_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
    /// PostgreSQL URL (postgres://user@host/db). When given, PostgreSQL is used instead of SQLite.
    #[arg(long, env = "CUSTODIAN_DATABASE_URL")]
    database_url: Option<String>,
    /// Master key file (created with mode 0600 at first start). Defaults to DATA_DIR/master.key.
    /// The environment variable CUSTODIAN_MASTER_KEY (64 hex characters) takes precedence.
    #[arg(long, env = "CUSTODIAN_MASTER_KEY_FILE")]
    master_key_file: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP server.
    Serve {
        #[command(flatten)]
        store: StoreArgs,
        /// Address to listen on.
        #[arg(long, env = "CUSTODIAN_LISTEN", default_value = "127.0.0.1:8080")]
        listen: String,
        /// Default region for phone numbers without a country code (ISO 3166 code).
        #[arg(long, env = "CUSTODIAN_DEFAULT_REGION", default_value = "CN")]
        default_region: String,
        /// Leave the Secure attribute off the session cookie, so that browsers send it over plain
        /// HTTP (development on http://localhost only; never behind a public address).
        #[arg(long, env = "CUSTODIAN_INSECURE_COOKIES")]
        insecure_cookies: bool,
        #[command(flatten)]
        checkpoints: audit::CheckpointArgs,
        #[command(flatten)]
        monitor: monitor::MonitorArgs,
        #[command(flatten)]
        backups: backup::BackupScheduleArgs,
    },
    /// Verify the tamper-evident audit log, write signed checkpoints, prove and check inclusion.
    Audit {
        #[command(subcommand)]
        command: audit::AuditCommand,
    },
    /// Manage user accounts (works offline, directly on the store).
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Manage roles: the built-in ones are listed read-only; custom roles are JSON definitions.
    Role {
        #[command(subcommand)]
        command: admin::RoleCommand,
    },
    /// Manage teams.
    Team {
        #[command(subcommand)]
        command: admin::TeamCommand,
    },
    /// Manage departments (a tree).
    Department {
        #[command(subcommand)]
        command: admin::DepartmentCommand,
    },
    /// Manage time-boxed grants.
    Grant {
        #[command(subcommand)]
        command: admin::GrantCommand,
    },
    /// Create or upgrade the database schema, then exit.
    ///
    /// On PostgreSQL, run it as the role that owns the schema, and with --app-role give the
    /// role servers connect as exactly what they need: the audit log and record versions can
    /// be read and appended to, never changed, deleted or truncated, and the role owns nothing,
    /// so it cannot drop their triggers either. Run it again after every upgrade.
    Migrate {
        #[command(flatten)]
        store: StoreArgs,
        /// PostgreSQL only: an existing login role (not a superuser, not the owner) to grant a
        /// server's privileges to.
        #[arg(long)]
        app_role: Option<String>,
    },
    /// Load realistic demo data (Chinese and English companies, contacts, leads, deals and
    /// activities, with a known share of near-duplicates). Seeded and reproducible.
    Demo {
        #[command(flatten)]
        store: StoreArgs,
        /// Number of records to create across all objects.
        #[arg(long, default_value_t = 1000)]
        records: usize,
        /// Random seed: the same seed gives the same data.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Share of companies, contacts and leads that are near-duplicates of another record.
        #[arg(long, default_value_t = 0.05)]
        duplicate_share: f64,
        /// Records per transaction.
        #[arg(long, default_value_t = 1000)]
        batch: usize,
    },
    /// Benchmark the write and read paths against bare baselines in the same run (fresh
    /// temporary stores; loopback only). Prints one line per scenario and a summary table.
    Bench {
        #[command(flatten)]
        args: bench::BenchArgs,
    },
    /// Find duplicate records in a CSV file: map columns to kinds, get scored pairs (and
    /// clusters). Weights are estimated on the file itself; no training data is needed.
    Dedupe {
        #[command(flatten)]
        args: dedupe::DedupeArgs,
    },
    /// Backups: create (online, sealed, checksummed), verify (a restore drill), restore.
    Backup {
        #[command(subcommand)]
        command: backup::BackupCommand,
    },
    /// Data keys: status, rotation (re-encrypting stored values under the new key) and reseal.
    Keys {
        #[command(subcommand)]
        command: keys::KeysCommand,
    },
    /// Import a CSV file into one object: checked row by row like API creates (rules,
    /// normalisation, duplicates against stored records and within the file); a dry run unless
    /// --commit, which writes every row in one transaction (or nothing).
    Import {
        #[command(flatten)]
        args: imports::ImportArgs,
    },
    /// Undo an import: soft-delete every record it wrote that is still active (one transaction).
    ImportRevert {
        #[command(flatten)]
        args: imports::RevertArgs,
    },
    /// Export records as CSV (offline, as the operator): the same filters, search and sort as
    /// the API, registered in the audit log with every row id, watermarked and fingerprinted.
    Export {
        #[command(flatten)]
        args: exports::ExportArgs,
    },
    /// Name the export a leaked CSV file came from: its invisible fingerprint, its watermark
    /// column and its record ids are compared with every registered export.
    TraceLeak {
        #[command(flatten)]
        args: exports::TraceArgs,
    },
    /// Labelled benchmark of the matching engine: generate synthetic records with known
    /// duplicates, or measure precision, recall, F1 and time on them.
    LinkageBench {
        #[command(subcommand)]
        command: linkage::LinkageCommand,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a user. The password is read from standard input.
    Create {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        username: String,
        /// One of: sales_rep, sales_manager, data_steward, auditor, admin, or a custom role.
        #[arg(long)]
        role: String,
        /// Team of the user.
        #[arg(long)]
        team_id: Option<uuid::Uuid>,
        /// Department of the user.
        #[arg(long)]
        department_id: Option<uuid::Uuid>,
        /// The user's e-mail address: their change notifications are mailed there.
        #[arg(long)]
        email: Option<String>,
        /// Read the password from standard input (required: passwords never go on the command line).
        #[arg(long, required = true)]
        password_stdin: bool,
    },
    /// List users.
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Offboard a user in one action: disable the account, end every session and token, move
    /// every owned record to the successor (one transaction), and print the last 90 days'
    /// activity report as JSON.
    Offboard {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        username: String,
        /// Username of the colleague who takes over the records.
        #[arg(long)]
        successor: String,
    },
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CUSTODIAN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if format == "json" {
        builder.json().flatten_event(true).with_current_span(true).init();
    } else {
        builder.init();
    }
}

/// Refuses a `--database-url` that is not a PostgreSQL URL.
pub(crate) fn check_postgres_url(url: &str) -> Result<()> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        bail!("--database-url must start with postgres:// (SQLite is selected with --data-dir)");
    }
    Ok(())
}

async fn open_store(args: &StoreArgs) -> Result<Arc<dyn Store>> {
    match &args.database_url {
        Some(url) => {
            check_postgres_url(url)?;
            let store = custodian_store_postgres::PostgresStore::connect(url)
                .await
                .map_err(|e| anyhow::anyhow!("cannot open PostgreSQL store: {e}"))?;
            Ok(Arc::new(store))
        }
        None => {
            let path = args.data_dir.join("custodian.db");
            let store = custodian_store_sqlite::SqliteStore::open(&path)
                .await
                .map_err(|e| anyhow::anyhow!("cannot open SQLite store at {}: {e}", path.display()))?;
            Ok(Arc::new(store))
        }
    }
}

/// The master key given in `CUSTODIAN_MASTER_KEY`, if one is.
pub(crate) fn master_key_from_env() -> Option<Result<MasterKey>> {
    let hex = std::env::var("CUSTODIAN_MASTER_KEY").ok()?;
    Some(MasterKey::from_hex(&hex).context("CUSTODIAN_MASTER_KEY"))
}

/// Where the master key file of `args` is (`--master-key-file`, else DATA_DIR/master.key).
pub(crate) fn master_key_path(args: &StoreArgs) -> PathBuf {
    args.master_key_file.clone().unwrap_or_else(|| args.data_dir.join("master.key"))
}

fn master_key(args: &StoreArgs) -> Result<MasterKey> {
    if let Some(key) = master_key_from_env() {
        return key;
    }
    let path = master_key_path(args);
    let (key, created) = MasterKey::load_or_create(&path)?;
    if created {
        tracing::warn!(path = %path.display(), "created a new master key file (mode 0600); back it up separately from the database");
    }
    Ok(key)
}

async fn open_service(args: &StoreArgs, config: ServiceConfig) -> Result<Arc<Service>> {
    let store = open_store(args).await?;
    let master = master_key(args)?;
    let keyring = load_keyring(store.as_ref(), &master).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let service = Service::new(store, keyring, config).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(Arc::new(service))
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is called (before the
/// listener accepts anything), so a signal that arrives early still shuts down gracefully
/// instead of killing the process.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()> + Send + 'static> {
    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    #[cfg(unix)]
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .context("installing the SIGINT handler")?;
    Ok(async move {
        #[cfg(unix)]
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down: finishing in-flight requests");
    })
}

async fn serve(
    store: StoreArgs,
    listen: String,
    default_region: String,
    insecure_cookies: bool,
    checkpoints: audit::CheckpointArgs,
    monitor_args: monitor::MonitorArgs,
    backups: backup::BackupScheduleArgs,
) -> Result<()> {
    let delivery = monitor_args.delivery()?;
    let config = ServiceConfig {
        default_region,
        // POST /api/v1/audit/verify checks the same evidence as `custodian audit verify`.
        audit_evidence: audit::evidence(&store, &checkpoints),
        outbox_channels: delivery.channels(),
        backup_dir: backups.backup_dir.clone(),
        ..ServiceConfig::default()
    };
    let service = open_service(&store, config).await?;
    let admin_password = std::env::var("CUSTODIAN_ADMIN_PASSWORD").ok().filter(|p| !p.is_empty());
    if let Some(generated) =
        service.ensure_admin(admin_password).await.map_err(|e| anyhow::anyhow!("creating the admin user: {e}"))?
    {
        // Printed once, on stdout only (never logged).
        println!("Created user 'admin' with password: {generated}");
        println!("Store it now; it will not be shown again.");
    }
    let shutdown = shutdown_signal()?;
    // Other servers may add custom fields and change rules: refresh the schema periodically.
    // Background jobs (rule re-checks, match-key backfills) started anywhere, or left behind by
    // a server that died, are claimed and run here too.
    let refresher = service.clone();
    tokio::spawn(async move {
        let claimant = format!("serve-{}", uuid::Uuid::now_v7());
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(10));
        loop {
            tick.tick().await;
            if let Err(e) = refresher.refresh_schema().await {
                tracing::warn!(error = %e, "schema refresh failed");
            }
            if let Err(e) = refresher.run_jobs(&claimant).await {
                tracing::warn!(error = %e, "background jobs stopped early; they resume when claimed again");
            }
        }
    });
    // Signed audit checkpoints every N events or T seconds; a last one at shutdown.
    let checkpoint_writer = audit::start_checkpoint_writer(service.store().clone(), &store, &checkpoints).await?;
    // Anomaly evaluation and outbox delivery (webhook, SMTP).
    let monitor_tasks = monitor::MonitorTasks::spawn(service.clone(), &monitor_args, delivery)?;
    // Scheduled backups, each checked by a restore drill, old ones pruned.
    let backup_schedule =
        backup::start_schedule(service.clone(), &backups, master_key(&store)?, store.database_url.clone());
    let listener =
        tokio::net::TcpListener::bind(&listen).await.with_context(|| format!("cannot listen on {listen}"))?;
    tracing::info!(address = %listener.local_addr()?, backend = service.store().backend(), "custodian is listening");
    let options = custodian_server::AppOptions { secure_cookies: !insecure_cookies };
    let served =
        custodian_server::serve(listener, custodian_server::app_with_options(service, options), shutdown).await;
    checkpoint_writer.shutdown(std::time::Duration::from_secs(30)).await;
    monitor_tasks.shutdown().await;
    if let Some(task) = backup_schedule {
        task.abort();
    }
    served?;
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log_format);
    match run(cli.command).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> Result<()> {
    match command {
        Command::Serve { store, listen, default_region, insecure_cookies, checkpoints, monitor, backups } => {
            serve(store, listen, default_region, insecure_cookies, checkpoints, monitor, backups).await
        }
        Command::Audit { command } => audit::run(command).await,
        Command::Migrate { store, app_role: None } => {
            let s = open_store(&store).await?;
            println!("{} store is at the current schema version", s.backend());
            Ok(())
        }
        Command::Migrate { store, app_role: Some(role) } => {
            let Some(url) = store.database_url.as_deref() else {
                bail!("--app-role applies to PostgreSQL only (give --database-url)");
            };
            let s = custodian_store_postgres::PostgresStore::connect(url)
                .await
                .map_err(|e| anyhow::anyhow!("cannot open PostgreSQL store: {e}"))?;
            s.grant_app_role(&role).await.map_err(|e| anyhow::anyhow!("{e}"))?;
            println!(
                "postgres store is at the current schema version; role {role} may now run servers \
                 (the audit log and record versions are append-only for it)"
            );
            Ok(())
        }
        Command::Role { command } => admin::role(command).await,
        Command::Team { command } => admin::team(command).await,
        Command::Department { command } => admin::department(command).await,
        Command::Grant { command } => admin::grant(command).await,
        Command::User {
            command: UserCommand::Create { store, username, role, team_id, department_id, email, password_stdin },
        } => {
            if !password_stdin {
                bail!("pass --password-stdin and write the password to standard input");
            }
            let mut password = String::new();
            std::io::stdin().read_to_string(&mut password).context("reading the password from stdin")?;
            let password = password.trim_end_matches(['\n', '\r']).to_owned();
            let service = open_service(&store, ServiceConfig::default()).await?;
            let user = service
                .add_user(
                    &RequestContext::cli(),
                    custodian_service::NewUser {
                        username: &username,
                        password: &password,
                        role: &role,
                        team_id,
                        department_id,
                        email: email.as_deref(),
                    },
                )
                .await
                .map_err(|e| {
                    let details: Vec<String> =
                        e.details.iter().map(|d| format!("{}: {}", d.field, d.message)).collect();
                    anyhow::anyhow!("{} {}", e.message, details.join("; "))
                })?;
            println!("created user {} ({}) with role {}", user.username, user.id, user.role);
            Ok(())
        }
        Command::User { command: UserCommand::Offboard { store, username, successor } } => {
            let service = open_service(&store, ServiceConfig::default()).await?;
            let find = |name: String| {
                let service = service.clone();
                async move {
                    service
                        .store()
                        .get_user_by_username(&name)
                        .await
                        .map_err(|e| anyhow::anyhow!("{e}"))?
                        .ok_or_else(|| anyhow::anyhow!("no user named {name}"))
                }
            };
            let user = find(username).await?;
            let heir = find(successor).await?;
            let report = service
                .offboard_user(&RequestContext::cli(), user.id, heir.id)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
        Command::User { command: UserCommand::List { store } } => {
            let service = open_service(&store, ServiceConfig::default()).await?;
            for u in service.list_users(&RequestContext::cli()).await.map_err(|e| anyhow::anyhow!("{e}"))? {
                println!("{}\t{}\t{}\t{}", u.id, u.username, u.role, u.status);
            }
            Ok(())
        }
        Command::Demo { store, records, seed, duplicate_share, batch } => {
            if !(0.0..=0.5).contains(&duplicate_share) {
                bail!("--duplicate-share must be between 0 and 0.5");
            }
            let service = open_service(&store, ServiceConfig::default()).await?;
            demo::load(&service, records, seed, duplicate_share, batch.clamp(1, 10_000)).await
        }
        Command::Bench { args } => bench::run(args).await,
        Command::Dedupe { args } => dedupe::run(args),
        Command::Export { args } => exports::export(args).await,
        Command::Import { args } => imports::import(args).await,
        Command::ImportRevert { args } => imports::revert(args).await,
        Command::Keys { command } => keys::run(command).await,
        Command::Backup { command } => backup::run(command).await,
        Command::TraceLeak { args } => exports::trace(args).await,
        Command::LinkageBench { command } => linkage::run(command),
    }
}
