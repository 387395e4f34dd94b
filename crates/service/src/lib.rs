//! The one write path. Every mutation of Custodian data — from the HTTP API, the CLI, imports,
//! merges, bulk actions and automation — is a call on `Service`, which validates, normalises,
//! authorises, encrypts sensitive values, computes blind indexes, unique keys and search text,
//! and hands the store one `WriteBatch` holding the new record version and its audit event, to
//! be applied in one transaction. Reads pass through here too, so that row scope and field
//! visibility are applied before any value leaves this crate.

mod access;
mod alerts;
mod audit_query;
mod auth;
mod auto_merge;
mod backup;
mod caches;
mod clock;
mod convert;
mod create_groups;
mod duplicates;
mod error;
mod exports;
mod grants;
mod history;
mod imports;
mod keys;
mod merges;
mod mfa;
mod notifications;
mod people;
mod query;
mod records;
mod roles;
mod rules;
mod throttle;
mod users;
mod view;

pub use access::Operation;
pub use alerts::{AlertPage, AlertRule, AlertView, METRICS, WorkingHours};
pub use audit_query::{AuditEventView, AuditEvidence, AuditExport, AuditPage, AuditParams, MAX_AUDIT_PAGE};
pub use auth::{Actor, LoginOutcome, LoginResult, NewApiToken, NewUser, ROLES};
pub use auto_merge::{AutoMerge, auto_merge_floor};
pub use backup::{BACKUP_EXTENSION, BackupFile, BackupReport, Retention, ScratchDir, private_dir, private_file};
pub use caches::CACHE_EPOCH_POLL;
pub use clock::{Clock, ManualClock};
pub use convert::{ConversionView, ConvertCompany, ConvertRequest};
pub use duplicates::{
    CandidatePage, CandidateView, ConfirmNotDuplicate, DuplicateConfig, ProcessMemory, ScanJobView, ScanProbe,
};
pub use error::{ServiceError, ServiceResult};
pub use exports::{LeakTrace, RecordExport, TraceCandidate, WATERMARK_COLUMN};
pub use grants::{GRANT_TTL, GrantRequest, GrantView, MAX_GRANT_HOURS};
pub use history::VersionDiff;
pub use imports::{ImportReport, ImportRequest, MAX_IMPORT_ROWS, Normalisation, RowProblem};
pub use keys::{KeyRotation, KeyStatus, load_keyring};
pub use merges::{MAX_LOSERS, MergeRequest, MergeRule, MergeView, MergedRecord};
pub use mfa::{
    MFA_REQUIRED_ROLES, MfaChallengeView, MfaEnrolment, MfaStatus, RECOVERY_CODE_COUNT, STEP_UP_SECS, StepUpView,
};
pub use notifications::{NotificationPage, NotificationView};
pub use people::{DepartmentView, TeamView, UserView};
pub use query::ListParams;
pub use records::{
    BulkDeleteReport, CreateOptions, MAX_BULK_DELETE, OverrideReason, PreparedWrite, SYSTEM_PROPERTIES, WriteOptions,
};
pub use roles::{ROLE_TTL, RoleView};
pub use rules::{FieldRulesView, JobView, RuleCheckView, ViolationView};
pub use users::{ActivityLine, OffboardReport, SessionView, UserChanges};
pub use view::{HistoryPage, RecordList, RecordView, VersionView, micros_to_rfc3339};

use custodian_core::schema::Schema;
use custodian_crypto::Keyring;
use custodian_store::Store;
use std::sync::{Arc, RwLock};
use tokio::sync::Semaphore;

/// Tunables of the service layer.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Region assumed for phone numbers written without a country code.
    pub default_region: String,
    /// A session unused for this long expires.
    pub session_idle_secs: i64,
    /// A session expires this long after login, used or not.
    pub session_absolute_secs: i64,
    /// Largest page a list may ask for.
    pub max_page_size: u32,
    /// Password hashes computed at once (they are deliberately expensive).
    pub hashing_concurrency: usize,
    /// Login attempts handled at once; the rest wait their turn without using the CPU or the
    /// store, so that a flood of bad logins (each one audited) cannot crowd out other users.
    pub login_concurrency: usize,
    /// Record every view, list and search in the audit log (PRODUCT.md S6). A read whose event
    /// cannot be stored fails. Only benchmarks turn this off, to measure its cost.
    pub audit_reads: bool,
    /// Append the audit event of every record write in its transaction (PRODUCT.md S6). Only
    /// `custodian bench` turns this off, to measure what write auditing costs; no flag,
    /// variable or file of `serve` reaches it.
    pub audit_writes: bool,
    /// Checkpoint files and trusted keys for `POST /api/v1/audit/verify`.
    pub audit_evidence: AuditEvidence,
    /// Delivery channels configured ("webhook", "email"): alerts and notifications get one
    /// outbox message per channel.
    pub outbox_channels: Vec<String>,
    /// Duplicate detection at entry and by scans.
    pub duplicates: DuplicateConfig,
    /// Length of the step-up window a fresh second factor opens (PRODUCT.md S2: five minutes).
    pub step_up_secs: i64,
    /// Lifetime of a login challenge waiting for its second factor.
    pub mfa_challenge_secs: i64,
    /// Time for TOTP steps, step-up windows and challenges (injectable for tests).
    pub clock: Clock,
    /// How long a server uses its copy of the schema (custom fields, field rules) before it
    /// reads it again before a write; changes made through this server apply at once.
    pub schema_ttl_secs: u64,
    /// Records a background job processes per saved page (and per lease extension).
    pub job_page_size: u32,
    /// How long a claimed job stays leased to this server without progress.
    pub job_lease_secs: i64,
    /// Where `POST /api/v1/backups` and the backup schedule write backups (none: backups come
    /// from `custodian backup create` only).
    pub backup_dir: Option<std::path::PathBuf>,
    /// An export of more rows than this needs a fresh step-up (PRODUCT.md S8).
    pub export_step_up_rows: u64,
    /// No export has more rows than this; a larger one is refused (narrow the filters).
    pub export_max_rows: u64,
    /// Whether the server that starts a job (a rule change, a backfill) also runs it at once;
    /// otherwise it waits for a worker (`run_jobs`) on any server.
    pub start_jobs_at_once: bool,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            default_region: "CN".into(),
            session_idle_secs: 30 * 60,
            session_absolute_secs: 12 * 60 * 60,
            max_page_size: 500,
            hashing_concurrency: 2,
            login_concurrency: 4,
            audit_reads: true,
            audit_writes: true,
            audit_evidence: AuditEvidence::default(),
            outbox_channels: Vec::new(),
            duplicates: DuplicateConfig::default(),
            step_up_secs: STEP_UP_SECS,
            mfa_challenge_secs: 5 * 60,
            clock: Clock::system(),
            schema_ttl_secs: 5,
            job_page_size: 500,
            job_lease_secs: 60,
            start_jobs_at_once: true,
            backup_dir: None,
            export_step_up_rows: 1_000,
            export_max_rows: 10_000,
        }
    }
}

/// Who is asking, and from where; recorded in every audit event.
#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    pub actor: Option<Actor>,
    pub request_id: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

impl RequestContext {
    /// A context for offline CLI work (no HTTP request).
    pub fn cli() -> Self {
        RequestContext { actor: None, request_id: None, ip: None, user_agent: Some("custodian-cli".into()) }
    }

    pub fn with_actor(mut self, actor: Actor) -> Self {
        self.actor = Some(actor);
        self
    }
}

pub struct Service {
    store: Arc<dyn Store>,
    keyring: Arc<Keyring>,
    schema: RwLock<Arc<Schema>>,
    /// When `schema` was read from the store, and in which cache generation (see `caches`).
    schema_at: std::sync::Mutex<Option<(std::time::Instant, u64)>>,
    config: ServiceConfig,
    hashing: Arc<Semaphore>,
    logins: Semaphore,
    org_cache: access::OrgCache,
    roles: roles::RoleCache,
    grant_cache: grants::GrantCache,
    cache_sync: caches::CacheSync,
    throttle: throttle::LoginThrottle,
    /// One audit verification at a time (it reads the whole log).
    verifying: Semaphore,
    mfa_sessions: mfa::EnrolledSessions,
    sessions: auth::SessionCache,
    prepared_cache: duplicates::PreparedCache,
    create_groups: create_groups::CreateGroups,
}

impl Service {
    /// Builds the service over an opened store. `keyring` comes from `load_keyring`.
    pub async fn new(store: Arc<dyn Store>, keyring: Keyring, config: ServiceConfig) -> ServiceResult<Service> {
        config.duplicates.check().map_err(|reason| {
            tracing::error!(%reason, "invalid duplicate configuration");
            ServiceError::with_message(custodian_core::ErrorCode::Internal, reason)
        })?;
        let hashing = Arc::new(Semaphore::new(config.hashing_concurrency.max(1)));
        let logins = Semaphore::new(config.login_concurrency.max(1));
        let service = Service {
            store,
            keyring: Arc::new(keyring),
            schema: RwLock::new(Arc::new(Schema::standard())),
            schema_at: std::sync::Mutex::new(None),
            config,
            hashing,
            logins,
            org_cache: Default::default(),
            roles: Default::default(),
            grant_cache: Default::default(),
            cache_sync: Default::default(),
            throttle: Default::default(),
            verifying: Semaphore::new(1),
            mfa_sessions: Default::default(),
            sessions: Default::default(),
            prepared_cache: Default::default(),
            create_groups: Default::default(),
        };
        service.note_cache_epoch().await?;
        service.refresh_schema().await?;
        service.ensure_field_indexes().await?;
        service.reload_roles().await?;
        Ok(service)
    }

    /// Makes sure every filterable field has its index (cheap when they exist).
    pub async fn ensure_field_indexes(&self) -> ServiceResult<()> {
        use custodian_core::schema::FieldType as T;
        let schema = self.schema();
        for object in schema.objects() {
            for f in &object.fields {
                let indexable = !f.sensitive
                    && matches!(
                        f.field_type,
                        T::Text
                            | T::Enum
                            | T::Date
                            | T::Datetime
                            | T::Reference
                            | T::Phone
                            | T::Email
                            | T::Url
                            | T::CnUscc
                            | T::CnResidentId
                    );
                if indexable {
                    self.store.ensure_field_index(&object.name, std::slice::from_ref(&f.name)).await?;
                }
            }
        }
        Ok(())
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn config(&self) -> &ServiceConfig {
        &self.config
    }

    /// The current schema (standard objects plus custom fields).
    pub fn schema(&self) -> Arc<Schema> {
        match self.schema.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Reloads the schema when another server changed it (see `sync_caches`), or when this
    /// server's copy is older than `schema_ttl_secs`. Every write path calls it first.
    pub(crate) async fn refresh_schema_if_stale(&self) -> ServiceResult<()> {
        let ttl = std::time::Duration::from_secs(self.config.schema_ttl_secs);
        self.sync_caches().await?;
        let generation = self.cache_sync.generation();
        let stale = match self.schema_at.lock() {
            Ok(at) => at.is_none_or(|(at, read_in)| at.elapsed() >= ttl || read_in != generation),
            Err(_) => true,
        };
        if stale { self.refresh_schema().await } else { Ok(()) }
    }

    /// Reloads custom fields and field rules from the store (another server may have changed
    /// them).
    pub async fn refresh_schema(&self) -> ServiceResult<()> {
        let started = std::time::Instant::now();
        let generation = self.cache_sync.generation();
        let rows = self.store.list_custom_fields().await?;
        let mut custom = Vec::with_capacity(rows.len());
        for row in rows {
            match serde_json::from_value(row.definition) {
                Ok(def) => custom.push((row.object, def)),
                Err(e) => {
                    tracing::error!(object = %row.object, field = %row.name, error = %e, "stored custom field definition is unreadable; skipped")
                }
            }
        }
        let mut schema = Schema::with_custom_fields(custom);
        for row in self.store.list_field_rules().await? {
            let parsed = custodian_core::rules::parse_rules(&row.rules);
            match (parsed, schema.field_mut(&row.object, &row.field)) {
                (Ok(rules), Some(field)) => custodian_core::rules::apply_rules(field, &rules),
                (Err(e), _) => {
                    tracing::error!(object = %row.object, field = %row.field, errors = ?e, "stored field rules are unreadable; defaults kept")
                }
                (Ok(_), None) => {}
            }
        }
        let schema = Arc::new(schema);
        match self.schema.write() {
            Ok(mut guard) => *guard = schema,
            Err(poisoned) => *poisoned.into_inner() = schema,
        }
        if let Ok(mut at) = self.schema_at.lock() {
            *at = Some((started, generation));
        }
        Ok(())
    }
}
