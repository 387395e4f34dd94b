//! The store contract. Two backends implement it (SQLite, the embedded default, and
//! PostgreSQL); one conformance suite in `custodian-store-tests` runs unchanged against both.
//!
//! Stores are deliberately dumb: they never see plaintext of sensitive fields (the service
//! encrypts before calling them), never decide what is valid (the service validates) and never
//! decide who may see what (the service passes a `RowScope`, which the store turns into SQL).
//! What stores do guarantee: every `WriteBatch` is applied atomically together with its audit
//! events; versions are checked (optimistic concurrency) inside the transaction; unique keys are
//! enforced by the database; the audit chain stays linear.

use async_trait::async_trait;
use custodian_core::search::QueryToken;
use serde_json::{Map, Value};
use uuid::Uuid;

pub mod access;
pub mod audit;
pub mod duplicates;
pub mod jobs;
pub mod monitor;
pub mod writer_stats;
pub use access::{GrantRow, LoginCounterRow, RoleRow};
pub use audit::{
    AuditChainRow, AuditDraft, AuditRow, ChainedRows, CheckpointClaimOutcome, CheckpointClaimRequest,
    CheckpointClaimRow, CheckpointRange, EncodedEvent, chain_rows,
};
pub use duplicates::{
    CandidateRow, DismissalRow, GuardKey, GuardScan, MATCH_BLOCK_CAP, MATCH_KEYS_PER_CHECK, MatchGuard, MatchKeySet,
    MergeChange, MergeRow, ScanJobRow, StampedKeys,
};
pub use jobs::{
    FieldRulesRow, JOB_DUPLICATE_SCAN, JOB_MATCH_KEYS, JOB_REENCRYPT, JOB_RULE_CHECK, JobProgress, JobRow, KeyRefresh,
    ViolationRow,
};
pub use monitor::{
    ActionFilter, AlertRow, AlertRuleRow, AuditQuery, Bucket, BucketQuery, DeliveryOutcome, Measure, NotificationRow,
    OutboxRow,
};
pub use writer_stats::{WriterMeter, WriterStats, spawn_writer};

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    /// The record's version is not the one the writer expected.
    #[error("version conflict: current version is {current}")]
    VersionConflict { current: i64 },
    /// Another active record already holds this unique value.
    #[error("unique value of {object}.{field} is taken")]
    UniqueViolation { object: String, field: String, holder: Option<Uuid> },
    /// A row with this key already exists (usernames, custom field names, …).
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// The change conflicts with other rows (a role still held by users, …).
    #[error("conflict: {0}")]
    Conflict(String),
    /// A record that the write's duplicate check would have compared with it was written
    /// while the check ran (see [`MatchGuard`]); check again.
    #[error("records like this one were written while its duplicate check ran")]
    StaleCheck,
    /// The database is unreachable, busy beyond its timeout or shutting down.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store error: {0}")]
    Internal(String),
}

/// Whether `s` is a plain identifier (`[A-Za-z0-9_]+`), safe to splice into SQL text. Stores
/// inline object names and JSON paths that pass this check, so that the database can match
/// them against expression and partial indexes; anything else is bound or refused.
pub fn is_identifier(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Name of the index `ensure_field_index` creates: the field's value, then the record id, over
/// the records of one object, so that an equality filter reads its matches in id order (the
/// default list order) and stops at the page instead of sorting every match (`?status=new` of
/// 9,073 leads: 7 ms -> 0.07 ms on PostgreSQL with 200k records, and the gap grows with the
/// table). Indexes of the earlier form, on the value alone, were named `fx_…`
/// (`FIELD_INDEX_PREFIX_BEFORE`): PostgreSQL migration 0019 rebuilds them in the new form, the
/// SQLite store drops them when it opens (the service makes the new ones at start).
pub fn field_index_name(object: &str, path: &[String]) -> String {
    format!("fxid_{object}_{}", path.join("__"))
}

/// The prefix of the field indexes on the value alone that `field_index_name` replaced.
pub const FIELD_INDEX_PREFIX_BEFORE: &str = "fx_";

/// Current time in microseconds since the Unix epoch (the stores' time representation).
pub fn now_micros() -> i64 {
    let now = time::OffsetDateTime::now_utc();
    (now.unix_timestamp_nanos() / 1_000) as i64
}

/// A record as stored: sensitive field values are encryption envelopes.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRecord {
    pub id: Uuid,
    pub object: String,
    pub version: i64,
    pub owner_id: Option<Uuid>,
    pub team_id: Option<Uuid>,
    pub created_at: i64,
    pub created_by: Option<Uuid>,
    pub updated_at: i64,
    pub updated_by: Option<Uuid>,
    pub deleted_at: Option<i64>,
    pub fields: Map<String, Value>,
}

/// A candidate of the check at entry as `Store::candidate_fields` reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct CandidateFields {
    pub id: Uuid,
    pub version: i64,
    /// `None` when the version is the one the caller named.
    pub fields: Option<Map<String, Value>>,
}

/// What a write does to a record; stored with each version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteAction {
    Create,
    Update,
    Delete,
    Restore,
}

impl WriteAction {
    pub fn as_str(self) -> &'static str {
        match self {
            WriteAction::Create => "create",
            WriteAction::Update => "update",
            WriteAction::Delete => "delete",
            WriteAction::Restore => "restore",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "create" => WriteAction::Create,
            "update" => WriteAction::Update,
            "delete" => WriteAction::Delete,
            "restore" => WriteAction::Restore,
            _ => return None,
        })
    }
}

/// An immutable snapshot written by every change.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredVersion {
    pub record_id: Uuid,
    pub object: String,
    pub version: i64,
    pub action: WriteAction,
    pub owner_id: Option<Uuid>,
    pub team_id: Option<Uuid>,
    pub deleted_at: Option<i64>,
    pub fields: Map<String, Value>,
    pub changed_at: i64,
    pub changed_by: Option<Uuid>,
}

/// A keyed digest attached to a record field (blind index or unique key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldDigest {
    pub field: String,
    pub digest: Vec<u8>,
}

/// One record change. `record` is the complete new state (version already incremented);
/// the store writes it, a `StoredVersion` snapshot of it, and replaces the record's blind
/// indexes, unique keys and search text with the given sets.
#[derive(Debug, Clone)]
pub struct RecordWrite {
    pub action: WriteAction,
    pub record: StoredRecord,
    /// `None` only for creates; otherwise the version the change was based on. A mismatch
    /// fails the whole batch with `VersionConflict`.
    pub expected_version: Option<i64>,
    pub blind_indexes: Vec<FieldDigest>,
    /// Unique keys held by this record; must be empty when the record is deleted.
    pub unique_keys: Vec<FieldDigest>,
    /// Strong keys this write gives the record (blind indexes, among `blind_indexes`, of
    /// sensitive fields that identify one person: mobile, email, resident ID). Unlike unique
    /// keys they may be shared — by records stored before, by a pair a steward dismissed as
    /// "not a duplicate" — so the store does not forbid sharing them; it refuses the write
    /// (`UniqueViolation` naming the holder) when, with the whole batch applied, another active
    /// record of the object holds the same digest and the two are not a dismissed pair. The
    /// check is serialised per key (SQLite: the one writer; PostgreSQL: a transaction-level
    /// advisory lock per key taken before the check), so of two concurrent writes introducing
    /// the same key at most one commits. Empty for writes that bring back a former state
    /// (undoing a merge) or do not change these fields.
    pub exclusive_keys: Vec<FieldDigest>,
    pub search_text: String,
}

/// Record changes and audit events applied in one transaction: all or nothing. Change
/// notifications and the outbox messages announcing them commit with the change.
#[derive(Debug, Clone, Default)]
pub struct WriteBatch {
    pub records: Vec<RecordWrite>,
    pub audit: Vec<AuditDraft>,
    pub notifications: Vec<NotificationRow>,
    pub outbox: Vec<OutboxRow>,
    /// Blocking keys of written records (each set replaces the record's previous keys).
    pub match_keys: Vec<MatchKeySet>,
    /// Merge bookkeeping, applied after the records.
    pub merge: Option<MergeChange>,
}

impl WriteBatch {
    /// The records this batch writes or gives match keys (a guarded write's own batch).
    pub fn record_ids(&self) -> std::collections::HashSet<Uuid> {
        self.records.iter().map(|w| w.record.id).chain(self.match_keys.iter().map(|s| s.record_id)).collect()
    }

    /// Records whose holding a strong key does not count against this batch's
    /// `exclusive_keys`: undoing a merge brings back the state before it, in which its records
    /// may share strong keys (often why they were merged), so they may share them again; any
    /// other record still may not. Empty for every other batch.
    pub fn exclusive_key_peers(&self) -> std::collections::HashSet<Uuid> {
        match self.merge {
            Some(MergeChange::Undo { .. }) => self.record_ids(),
            _ => std::collections::HashSet::new(),
        }
    }

    /// The committed match keys a group of batches must be judged against (see [`MatchGuard`]):
    /// per object with guards, the lowest stamp those guards saw and the keys they looked up;
    /// the store reads those keys stamped above it (`(holder, key, stamp)`) before it writes
    /// the group's keys.
    pub fn guard_scans(batches: &[Option<&WriteBatch>]) -> std::collections::BTreeMap<String, GuardScan> {
        let mut scans: std::collections::BTreeMap<String, GuardScan> = std::collections::BTreeMap::new();
        for set in batches.iter().flatten().flat_map(|b| b.match_keys.iter()) {
            if let Some(g) = &set.guard {
                let scan = scans
                    .entry(set.object.clone())
                    .or_insert_with(|| GuardScan { since: g.seen_stamp, keys: Vec::new() });
                scan.since = scan.since.min(g.seen_stamp);
                scan.keys.extend(g.keys.iter().map(|k| k.key.clone()));
            }
        }
        for scan in scans.values_mut() {
            scan.keys.sort();
            scan.keys.dedup();
        }
        scans
    }

    /// Positions of the batches of a group (`None`: a job that is no record write) whose
    /// duplicate checks went stale: judged against `committed` (what `guard_scans` asked for,
    /// read inside the group's transaction before its keys are written) and, as if the batches
    /// were applied one after another, against the keys of the batches before them. A batch's
    /// own records never count against it.
    pub fn stale_in_group(batches: &[Option<&WriteBatch>], committed: &StampedKeys) -> Vec<usize> {
        use std::collections::HashMap;
        // (object, key) → holders with their stamps; the group's own keys are added as it goes,
        // stamped after every check.
        type Holders<'a> = HashMap<(&'a str, &'a [u8]), Vec<(Uuid, i64)>>;
        let mut holders: Holders<'_> = HashMap::new();
        for (object, rows) in committed {
            for (id, key, stamp) in rows {
                holders.entry((object.as_str(), key.as_slice())).or_default().push((*id, *stamp));
            }
        }
        let mut stale = Vec::new();
        for (j, batch) in batches.iter().enumerate() {
            let Some(batch) = batch else { continue };
            let own = batch.record_ids();
            let breached = batch.match_keys.iter().any(|set| {
                let Some(guard) = &set.guard else { return false };
                let rows = guard.keys.iter().flat_map(|k| {
                    let key = k.key.as_slice();
                    let found = holders.get(&(set.object.as_str(), key));
                    found.into_iter().flatten().map(move |(id, stamp)| (*id, key, *stamp))
                });
                guard.breached_by(rows, |id| own.contains(id)).is_some()
            });
            if breached {
                stale.push(j);
                continue;
            }
            for set in &batch.match_keys {
                for k in &set.keys {
                    holders.entry((set.object.as_str(), k.as_slice())).or_default().push((set.record_id, i64::MAX));
                }
            }
        }
        stale
    }

    /// Match keys are kept for active records only (so that [`Store::match_blocks`] never has
    /// to look at the records): the key set of a record this batch writes as deleted is emptied,
    /// which still removes its previous keys. Stores call this before writing.
    pub fn clear_keys_of_deleted(&mut self) {
        let deleted: std::collections::HashSet<Uuid> =
            self.records.iter().filter(|w| w.record.deleted_at.is_some()).map(|w| w.record.id).collect();
        if deleted.is_empty() {
            return;
        }
        for set in self.match_keys.iter_mut().filter(|s| deleted.contains(&s.record_id)) {
            set.keys.clear();
        }
    }
}

/// Which rows a caller may touch. Pushed into SQL as a predicate; never applied after a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowScope {
    All,
    /// Rows owned by one of `owner_ids`, or in one of `team_ids`, or listed in `record_ids`.
    Restricted {
        owner_ids: Vec<Uuid>,
        team_ids: Vec<Uuid>,
        record_ids: Vec<Uuid>,
    },
}

impl RowScope {
    /// Whether a record is in this scope: what the stores' SQL for the scope selects (owner,
    /// team or record listed; a restricted scope listing nothing admits nothing).
    pub fn admits(&self, record: &StoredRecord) -> bool {
        match self {
            RowScope::All => true,
            RowScope::Restricted { owner_ids, team_ids, record_ids } => {
                record.owner_id.is_some_and(|o| owner_ids.contains(&o))
                    || record.team_id.is_some_and(|t| team_ids.contains(&t))
                    || record_ids.contains(&record.id)
            }
        }
    }
}

/// A column a filter or sort can target.
#[derive(Debug, Clone, PartialEq)]
pub enum Column {
    Id,
    OwnerId,
    TeamId,
    CreatedAt,
    UpdatedAt,
    CreatedBy,
    UpdatedBy,
    /// A user field; `path` descends into its JSON (e.g. `["amount", "amount"]` for money).
    Field {
        path: Vec<String>,
        kind: ValueKind,
    },
}

/// How a field value compares in SQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    Text,
    Number,
    Boolean,
    /// A JSON array of strings (multi-enum); equality means "contains the element".
    Array,
}

#[derive(Debug, Clone, PartialEq)]
pub enum FilterValue {
    Text(String),
    /// A canonical decimal string.
    Number(String),
    Bool(bool),
    Uuid(Uuid),
    /// Microseconds since the epoch (system time columns).
    Micros(i64),
}

#[derive(Debug, Clone, PartialEq)]
pub enum FilterOp {
    Eq(FilterValue),
    Ne(FilterValue),
    Gt(FilterValue),
    Gte(FilterValue),
    Lt(FilterValue),
    Lte(FilterValue),
    /// Case-insensitive substring match on text.
    Contains(String),
    /// The column is null (true) or not null (false).
    IsNull(bool),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    Column {
        column: Column,
        op: FilterOp,
    },
    /// Equality on a sensitive field through its blind index.
    BlindIndex {
        field: String,
        digest: Vec<u8>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeletedFilter {
    Active,
    Deleted,
    All,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Sort {
    pub column: Column,
    pub descending: bool,
}

impl Default for Sort {
    fn default() -> Self {
        Sort { column: Column::Id, descending: false }
    }
}

/// Position after which a page starts. `key` is the sort key as the store returned it in
/// `RecordPage::next`; the service treats it as opaque.
#[derive(Debug, Clone, PartialEq)]
pub struct Cursor {
    pub key: Value,
    pub id: Uuid,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ListQuery {
    pub object: String,
    pub scope: RowScope,
    pub filters: Vec<Filter>,
    /// Every token must match the record's search text.
    pub search: Vec<QueryToken>,
    pub sort: Sort,
    pub after: Option<Cursor>,
    pub limit: u32,
    pub deleted: DeletedFilter,
}

impl ListQuery {
    pub fn new(object: impl Into<String>) -> Self {
        ListQuery {
            object: object.into(),
            scope: RowScope::All,
            filters: Vec::new(),
            search: Vec::new(),
            sort: Sort::default(),
            after: None,
            limit: 50,
            deleted: DeletedFilter::Active,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RecordPage {
    pub items: Vec<StoredRecord>,
    /// Present when more rows may follow.
    pub next: Option<Cursor>,
}

/// A user account as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct UserRow {
    pub id: Uuid,
    pub username: String,
    pub display_name: String,
    pub password_hash: String,
    pub role: String,
    pub department_id: Option<Uuid>,
    pub team_id: Option<Uuid>,
    pub status: String,
    pub created_at: i64,
    /// Where the user's change notifications are mailed (normalised; optional).
    pub email: Option<String>,
}

/// A login session or API token: only the SHA-256 of the token is stored.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionRow {
    pub token_hash: String,
    pub user_id: Uuid,
    pub created_at: i64,
    pub last_seen_at: i64,
    pub expires_at: i64,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// "session" (login, idle expiry) or "api_token" (personal token, no idle expiry).
    pub kind: String,
    /// "read_write" or "read".
    pub scope: String,
    /// Label of a personal token.
    pub name: Option<String>,
    /// End (µs) of the step-up window opened on this session by a fresh second factor; kept in
    /// the row so that every server sharing the database sees it.
    pub step_up_until: Option<i64>,
}

/// A user's TOTP second factor. The secret is an encryption envelope made by the service; the
/// store never sees it in clear.
#[derive(Debug, Clone, PartialEq)]
pub struct UserMfaRow {
    pub user_id: Uuid,
    /// Encryption envelope of the base32 TOTP secret.
    pub secret: String,
    /// False while enrolment waits for its first code.
    pub enabled: bool,
    /// Highest TOTP time step accepted for this user: a code of this step or an earlier one is
    /// refused (replay protection that holds across servers).
    pub last_used_step: i64,
    pub created_at: i64,
    pub confirmed_at: Option<i64>,
    /// Unused recovery codes (filled by `get_user_mfa`; ignored when writing).
    pub recovery_codes_left: i64,
}

/// A pending login that passed the password and waits for the second factor. Only the hash of
/// the challenge handed to the client is stored.
#[derive(Debug, Clone, PartialEq)]
pub struct MfaChallengeRow {
    pub challenge_hash: String,
    pub user_id: Uuid,
    pub created_at: i64,
    pub expires_at: i64,
}

/// The second factor a request presents.
#[derive(Debug, Clone, PartialEq)]
pub enum MfaFactor {
    /// A TOTP code that matched this time step; accepted only when the step is later than the
    /// user's `last_used_step`.
    Totp { step: i64 },
    /// The hash of a recovery code; accepted only while that code is unused.
    RecoveryCode { code_hash: String, now: i64 },
}

/// What an accepted second factor does, in the same transaction.
#[derive(Debug, Clone, PartialEq)]
pub enum MfaEffect {
    /// Completes a login: the challenge (unexpired at `now`, of this user) is consumed and the
    /// session is created. A missing, expired or foreign challenge fails with `NotFound` and
    /// nothing changes (the factor is not consumed either).
    Login { challenge_hash: String, now: i64, session: SessionRow },
    /// Opens a step-up window on a session of the user until `until` (µs). `NotFound` when the
    /// session does not exist.
    StepUp { token_hash: String, until: i64 },
}

#[derive(Debug, Clone, PartialEq)]
pub struct DepartmentRow {
    pub id: Uuid,
    pub name: String,
    pub parent_id: Option<Uuid>,
    pub created_at: i64,
}

/// Checks a department move inside the moving transaction, given every department as
/// (id, parent id): `NotFound` when `id` is no department; `Conflict` when `new_parent` is no
/// department, or is `id` itself or below it (the move would make a cycle).
pub fn check_department_move(
    departments: &[(Uuid, Option<Uuid>)],
    id: Uuid,
    new_parent: Option<Uuid>,
) -> StoreResult<()> {
    let parents: std::collections::HashMap<Uuid, Option<Uuid>> = departments.iter().copied().collect();
    if !parents.contains_key(&id) {
        return Err(StoreError::NotFound);
    }
    // Walk up from the new parent: reaching the department itself would make a cycle.
    let mut at = new_parent;
    while let Some(current) = at {
        if current == id {
            return Err(StoreError::Conflict("a department cannot be moved below itself".into()));
        }
        let Some(up) = parents.get(&current) else {
            return Err(StoreError::Conflict(format!("no department {current}")));
        };
        at = *up;
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq)]
pub struct TeamRow {
    pub id: Uuid,
    pub name: String,
    pub department_id: Option<Uuid>,
    pub created_at: i64,
}

/// A custom field definition as stored (`definition` is a serialised `FieldDef`).
#[derive(Debug, Clone, PartialEq)]
pub struct CustomFieldRow {
    pub object: String,
    pub name: String,
    pub definition: Value,
    pub created_at: i64,
}

/// A key wrapped by the master key.
#[derive(Debug, Clone, PartialEq)]
pub struct WrappedKeyRow {
    pub label: String,
    pub wrapped: Vec<u8>,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// "sqlite" or "postgres".
    fn backend(&self) -> &'static str;

    /// What the writer (group commit of record writes and audit appends) has done since the
    /// store opened: see `WriterStats`.
    fn writer_stats(&self) -> WriterStats;

    /// Cheap liveness check of the database.
    async fn health(&self) -> StoreResult<()>;

    /// Writes a consistent copy of the whole database to the new file `dest` while the store
    /// stays in use (PRODUCT.md R1): SQLite `VACUUM INTO`, PostgreSQL `pg_dump` (custom format;
    /// the client tools must be installed).
    async fn backup_copy(&self, dest: &std::path::Path) -> StoreResult<()>;

    // ---- records -------------------------------------------------------------------------

    /// Applies record changes and audit events atomically. Returns the sequence numbers
    /// assigned to the audit events.
    async fn write(&self, batch: WriteBatch) -> StoreResult<Vec<i64>>;

    /// One record by id, deleted or not, if it is of `object` and inside `scope`.
    async fn get_record(&self, object: &str, id: Uuid, scope: &RowScope) -> StoreResult<Option<StoredRecord>>;

    /// The current version of each record among `ids` that exists as an active record of
    /// `object`, in no particular order (each id once). Cheap: no fields are read.
    async fn active_versions(&self, object: &str, ids: &[Uuid]) -> StoreResult<Vec<(Uuid, i64)>>;

    /// The candidates of the check at entry in one read: each active record of `object` among
    /// `wanted`, with its current version, and with its fields unless that version is the one
    /// given beside its id (the caller holds what it needs of that version already). `wanted`
    /// names each id once; the answer is in no particular order. Where the check first asked
    /// for the versions and then read the records it lacked, each candidate's row was looked up
    /// twice, in two round trips.
    async fn candidate_fields(&self, object: &str, wanted: &[(Uuid, Option<i64>)])
    -> StoreResult<Vec<CandidateFields>>;

    /// Ids among `ids` that exist as active records of `object` (reference checks).
    async fn existing_ids(&self, object: &str, ids: &[Uuid]) -> StoreResult<Vec<Uuid>> {
        Ok(self.active_versions(object, ids).await?.into_iter().map(|(id, _)| id).collect())
    }

    async fn list_records(&self, query: &ListQuery) -> StoreResult<RecordPage>;

    /// Number of records matching the query's scope, filters, search and deleted filter.
    async fn count_records(&self, query: &ListQuery) -> StoreResult<u64>;

    /// Versions of a record with version > `after`, oldest first.
    async fn list_versions(&self, object: &str, id: Uuid, after: i64, limit: u32) -> StoreResult<Vec<StoredVersion>>;

    async fn get_version(&self, object: &str, id: Uuid, version: i64) -> StoreResult<Option<StoredVersion>>;

    /// The last version of the record written at or before `at` (µs): one index seek on
    /// `(record_id, changed_at)`, however many versions the record has.
    async fn version_at(&self, object: &str, id: Uuid, at: i64) -> StoreResult<Option<StoredVersion>>;

    /// Ids of active records of `object` holding `digest` as blind index of `field`.
    async fn find_by_blind_index(
        &self,
        object: &str,
        field: &str,
        digest: &[u8],
        limit: u32,
    ) -> StoreResult<Vec<Uuid>> {
        let found = self.find_by_blind_indexes(object, &[(field.to_owned(), digest.to_vec())], limit).await?;
        Ok(found.into_iter().map(|(_, id)| id).collect())
    }

    /// For many `(field, digest)` keys at once, of one field or several (the duplicate check of
    /// a batch, every strong field in one round trip): `(index into keys, id)` of the active
    /// records of `object` holding each digest as blind index of its field, at most `limit`
    /// per key, ordered by key index, then id.
    async fn find_by_blind_indexes(
        &self,
        object: &str,
        keys: &[(String, Vec<u8>)],
        limit: u32,
    ) -> StoreResult<Vec<(usize, Uuid)>>;

    /// `find_by_blind_indexes` for fields that are not encrypted: for many `(field, value)`
    /// keys at once, `(index into keys, id)` of the active records of `object` whose text
    /// field `field` equals `value`, at most `limit` per key, ordered by key index, then id.
    /// One round trip per field for a whole batch, through the field's expression index (the
    /// duplicate check's strong keys that are not encrypted, such as USCC or contract number).
    async fn find_by_field_values(
        &self,
        object: &str,
        keys: &[(String, String)],
        limit: u32,
    ) -> StoreResult<Vec<(usize, Uuid)>>;

    // ---- audit ---------------------------------------------------------------------------

    /// Appends events that accompany no record change (reads, logins, refusals).
    async fn append_audit(&self, events: Vec<AuditDraft>) -> StoreResult<Vec<i64>>;

    /// Events with seq > `after_seq`, in order.
    async fn list_audit(&self, after_seq: i64, limit: u32) -> StoreResult<Vec<AuditRow>>;

    /// Every stored event with `after_seq < seq <= through_seq` (no upper bound when `None`),
    /// ordered by seq, streamed from one query so that a million events never sit in memory
    /// and a row stored twice under one seq is seen twice. Rows are raw (`AuditChainRow`): the
    /// verifier reads a database that may have been tampered with.
    fn audit_chain(
        &self,
        after_seq: i64,
        through_seq: Option<i64>,
    ) -> futures::stream::BoxStream<'_, StoreResult<AuditChainRow>>;

    /// The highest sequence number stored in the events table (0 when empty): what is there,
    /// not what the chain head claims.
    async fn audit_max_seq(&self) -> StoreResult<i64>;

    /// Hands out the next range of events to checkpoint, serialised across every server sharing
    /// the database, so that one server writes one checkpoint per range. Stale claims (their
    /// writer died) come first; see `audit::plan_checkpoint_claim` for the rest.
    async fn claim_audit_checkpoint(&self, request: CheckpointClaimRequest) -> StoreResult<CheckpointClaimOutcome>;

    /// Marks a claimed range as written to a checkpoint file.
    async fn complete_audit_checkpoint(&self, range: CheckpointRange, now: i64) -> StoreResult<()>;

    /// Checkpoint claims with seq_from > `after_seq_from`, in order (for the verifier's
    /// cross-check of checkpoint files against what the servers say they wrote).
    async fn list_audit_checkpoint_claims(
        &self,
        after_seq_from: i64,
        limit: u32,
    ) -> StoreResult<Vec<CheckpointClaimRow>>;

    // ---- schema and keys -----------------------------------------------------------------

    /// Creates, if missing, an index that serves equality and range filters on one field of
    /// one object (`path` segments and `object` are plain identifiers, else `Internal`).
    /// Idempotent; the service calls it at start and when a field is added.
    async fn ensure_field_index(&self, object: &str, path: &[String]) -> StoreResult<()>;

    async fn list_custom_fields(&self) -> StoreResult<Vec<CustomFieldRow>>;

    /// Fails with `AlreadyExists` when the object already has a custom field of that name.
    async fn add_custom_field(&self, field: CustomFieldRow, audit: AuditDraft) -> StoreResult<()>;

    async fn list_wrapped_keys(&self) -> StoreResult<Vec<WrappedKeyRow>>;

    /// Inserts the key unless one with the label exists; returns whether it was inserted. Two
    /// servers starting at once thus agree on one key. `audit` (the key's creation) is appended
    /// in the same transaction, and only when the key was inserted.
    async fn insert_wrapped_key(&self, key: WrappedKeyRow, audit: AuditDraft) -> StoreResult<bool>;

    // ---- people --------------------------------------------------------------------------

    async fn create_user(&self, user: UserRow, audit: AuditDraft) -> StoreResult<()>;
    async fn get_user(&self, id: Uuid) -> StoreResult<Option<UserRow>>;
    async fn get_user_by_username(&self, username: &str) -> StoreResult<Option<UserRow>>;
    async fn list_users(&self) -> StoreResult<Vec<UserRow>>;
    async fn count_users(&self) -> StoreResult<u64>;

    async fn create_department(&self, department: DepartmentRow, audit: AuditDraft) -> StoreResult<()>;
    async fn list_departments(&self) -> StoreResult<Vec<DepartmentRow>>;
    async fn create_team(&self, team: TeamRow, audit: AuditDraft) -> StoreResult<()>;
    async fn list_teams(&self) -> StoreResult<Vec<TeamRow>>;
    /// Renames a department or moves it (`parent_id`; `None` = a top-level department), with
    /// its audit event, in one transaction that checks the new parent exists and is neither the
    /// department itself nor below it (`Conflict` otherwise, nothing changed; two concurrent
    /// moves can never make a cycle). `NotFound` when there is no such department.
    async fn update_department(&self, department: DepartmentRow, audit: AuditDraft) -> StoreResult<()>;
    /// Renames a team or moves it to another department (which must exist: `Conflict`
    /// otherwise), with its audit event. `NotFound` when there is no such team.
    async fn update_team(&self, team: TeamRow, audit: AuditDraft) -> StoreResult<()>;

    // ---- sessions ------------------------------------------------------------------------

    async fn create_session(&self, session: SessionRow, audit: AuditDraft) -> StoreResult<()>;
    async fn get_session(&self, token_hash: &str) -> StoreResult<Option<SessionRow>>;
    /// A session with its user, in one read (every authenticated request asks for both).
    async fn get_session_user(&self, token_hash: &str) -> StoreResult<Option<(SessionRow, UserRow)>>;
    /// Moves `last_seen_at` forward (idle expiry).
    async fn touch_session(&self, token_hash: &str, now: i64) -> StoreResult<()>;
    async fn delete_session(&self, token_hash: &str, audit: AuditDraft) -> StoreResult<()>;

    /// Sessions and tokens of one user, newest first.
    async fn list_user_sessions(&self, user_id: Uuid) -> StoreResult<Vec<SessionRow>>;

    /// Ends every session and token of a user at once; returns how many there were.
    async fn delete_user_sessions(&self, user_id: Uuid, audit: AuditDraft) -> StoreResult<u64>;

    /// Replaces a user's role, team, department, display name and status (by id), and revokes
    /// all of the user's sessions when `revoke_sessions` is set — in one transaction with the
    /// audit event. `NotFound` when the user does not exist.
    async fn update_user(&self, user: UserRow, revoke_sessions: bool, audit: AuditDraft) -> StoreResult<()>;

    /// Number of audit events per (actor, action) since `since` (µs), for activity reports and
    /// baselines.
    async fn audit_activity(&self, since: i64) -> StoreResult<Vec<ActivityCount>>;

    // ---- audit query, anomaly alerts, notifications, outbox (issue 5) --------------------

    /// Events matching every filter of `query`, newest first, at most `query.limit` (1..=1000).
    async fn query_audit(&self, query: &AuditQuery) -> StoreResult<Vec<AuditRow>>;

    /// Number of events matching `query` (its limit is ignored).
    async fn count_audit(&self, query: &AuditQuery) -> StoreResult<u64>;

    /// Activity of one actor per time bucket, counted from the audit events (non-empty buckets
    /// only, by index).
    async fn audit_buckets(&self, query: &BucketQuery) -> StoreResult<Vec<Bucket>>;

    /// Users who were the actor of at least one event of `actions` (any action when empty)
    /// since `since` (µs). An index range scan of the window only.
    async fn active_actors(&self, since: i64, actions: &[String]) -> StoreResult<Vec<Uuid>>;

    /// Takes the lease of the periodic job `job` (e.g. anomaly evaluation) for `holder` until
    /// `now + lease_micros` when no lease runs and the job last started at least `every_micros`
    /// before `now` (or "in the future", after a clock moved backwards). Returns whether
    /// `holder` got it and should run the job now. Decided by one conditional statement in the
    /// database: servers sharing it run the job once per period, one at a time.
    async fn claim_periodic_job(
        &self,
        job: &str,
        holder: &str,
        now: i64,
        lease_micros: i64,
        every_micros: i64,
    ) -> StoreResult<bool>;

    /// Ends `holder`'s lease of `job` (nothing when another holder has it).
    async fn release_periodic_job(&self, job: &str, holder: &str) -> StoreResult<()>;

    async fn list_alert_rules(&self) -> StoreResult<Vec<AlertRuleRow>>;

    /// Inserts or replaces the rule of `rule.metric`, with its audit event.
    async fn put_alert_rule(&self, rule: AlertRuleRow, audit: AuditDraft) -> StoreResult<()>;

    /// Stores an alert with its outbox messages and audit event in one transaction. Returns
    /// false (and writes nothing) when the metric already has an alert for this user and window:
    /// several servers evaluating at once raise it once.
    async fn insert_alert(&self, alert: AlertRow, outbox: Vec<OutboxRow>, audit: AuditDraft) -> StoreResult<bool>;

    /// Alerts newest first, with `raised_at`/id below the cursor `(raised_at, id)`.
    async fn list_alerts(&self, before: Option<(i64, Uuid)>, limit: u32) -> StoreResult<Vec<AlertRow>>;

    /// Marks an alert acknowledged (the first acknowledgement stays) with its audit event.
    /// `NotFound` when there is no such alert.
    async fn ack_alert(&self, id: Uuid, by: Uuid, at: i64, audit: AuditDraft) -> StoreResult<AlertRow>;

    /// Notifications of one recipient, newest first, below the cursor `(created_at, id)`.
    async fn list_notifications(
        &self,
        user_id: Uuid,
        before: Option<(i64, Uuid)>,
        limit: u32,
    ) -> StoreResult<Vec<NotificationRow>>;

    /// Acknowledges a notification of `user_id` (signed off, 签字确认) with its audit event,
    /// whose object and record id are set to the notification's record. `NotFound` when it does
    /// not exist or belongs to someone else.
    async fn ack_notification(
        &self,
        id: Uuid,
        user_id: Uuid,
        at: i64,
        audit: AuditDraft,
    ) -> StoreResult<NotificationRow>;

    /// Leases up to `limit` undelivered messages that are due (`next_attempt_at <= now`) and
    /// not leased by another worker, for `lease_micros`, counting an attempt on each. Several
    /// servers calling this at once never receive the same message while its lease runs.
    async fn claim_outbox(
        &self,
        claimant: &str,
        now: i64,
        lease_micros: i64,
        limit: u32,
    ) -> StoreResult<Vec<OutboxRow>>;

    /// Records the outcome of an attempt by the holder of the lease (ignored otherwise).
    async fn finish_outbox(&self, id: Uuid, claimant: &str, outcome: DeliveryOutcome) -> StoreResult<()>;

    /// Every outbox message, oldest first (operations and tests).
    async fn list_outbox(&self, limit: u32) -> StoreResult<Vec<OutboxRow>>;
    // ---- duplicates and merges (A3, A5) -------------------------------------------------

    /// The blocks of `keys` (match keys of `object`), for the duplicate check of one record or
    /// of a whole batch at once: `(index into keys, record id)` of the records holding each key
    /// (active ones only: see [`WriteBatch::clear_keys_of_deleted`]), at most [`MATCH_BLOCK_CAP`] per key (the first in key order), so that the cost
    /// of a check does not grow with the table when a key is common (a surname, say). Ordered
    /// by key index, then id. The caller counts shared keys and ranks the candidates.
    async fn match_blocks(&self, object: &str, keys: &[Vec<u8>]) -> StoreResult<Vec<(usize, Uuid)>>;

    /// The highest stamp of `object`'s match keys (0 before any): read before a duplicate
    /// check's block lookups, it tells which keys the check could not have seen
    /// ([`MatchGuard::seen_stamp`]).
    async fn match_key_stamp(&self, object: &str) -> StoreResult<i64>;

    /// `match_key_stamp` and `match_blocks` in one round trip (a duplicate check at entry waits
    /// for each), the stamp read in the same snapshot as the blocks or before them, so that it
    /// never claims keys the blocks could not have held.
    async fn stamped_match_blocks(&self, object: &str, keys: &[Vec<u8>]) -> StoreResult<(i64, Vec<(usize, Uuid)>)>;

    /// Records among `others` whose pair with `record` was dismissed as "not a duplicate".
    async fn dismissed_with(&self, object: &str, record: Uuid, others: &[Uuid]) -> StoreResult<Vec<Uuid>>;

    /// Every dismissed pair of an object (for scans).
    async fn list_dismissals(&self, object: &str) -> StoreResult<Vec<DismissalRow>>;

    /// Stores a new duplicate scan with the background job (`JOB_DUPLICATE_SCAN`) that any
    /// server claims to run it, and the audit event, in one transaction.
    async fn create_scan_job(&self, job: ScanJobRow, queued: JobRow, audit: AuditDraft) -> StoreResult<()>;

    async fn get_scan_job(&self, id: Uuid) -> StoreResult<Option<ScanJobRow>>;

    /// Finishes a job (status, counts, error and `auto_merge`). When it is "done", the object's
    /// open candidates are replaced by `candidates` in the same transaction (decided ones are
    /// kept).
    async fn finish_scan_job(&self, job: ScanJobRow, candidates: Vec<CandidateRow>) -> StoreResult<()>;

    /// Replaces a scan job's `auto_merge` (what its auto-merge did, once done); `NotFound` when
    /// there is no such job.
    async fn set_scan_auto_merge(&self, id: Uuid, auto_merge: Value) -> StoreResult<()>;

    /// Candidates of an object with a status, ordered by id after `after`: open and dismissed
    /// ones whose records are both active, merged ones whatever became of their records (a
    /// merge leaves a tombstone).
    async fn list_candidates(
        &self,
        object: &str,
        status: &str,
        after: Option<Uuid>,
        limit: u32,
    ) -> StoreResult<Vec<CandidateRow>>;

    async fn get_candidate(&self, id: Uuid) -> StoreResult<Option<CandidateRow>>;

    /// Marks an open candidate dismissed and remembers the pair, with its audit event.
    /// `NotFound` when the candidate is not open.
    async fn dismiss_candidate(&self, id: Uuid, dismissal: DismissalRow, audit: AuditDraft) -> StoreResult<()>;

    async fn get_merge(&self, id: Uuid) -> StoreResult<Option<MergeRow>>;

    /// The survivor a record was merged into: the newest merge not undone that lists `loser`.
    async fn merged_into(&self, object: &str, loser: Uuid) -> StoreResult<Option<Uuid>>;

    // ---- field rules and background jobs (A1) ---------------------------------------------

    /// Every field's stored rules (fields without a row keep their schema defaults).
    async fn list_field_rules(&self) -> StoreResult<Vec<FieldRulesRow>>;

    /// Stores the rules of a field, the re-check job they start and the audit event in one
    /// transaction — if the field's stored revision is `row.revision - 1` (0: none stored);
    /// otherwise `VersionConflict` with the current revision and nothing is written.
    async fn put_field_rules(&self, row: FieldRulesRow, job: JobRow, audit: AuditDraft) -> StoreResult<()>;

    /// Stores a new (pending) job with its audit event.
    async fn create_job(&self, job: JobRow, audit: AuditDraft) -> StoreResult<()>;

    async fn get_job(&self, id: Uuid) -> StoreResult<Option<JobRow>>;

    /// Leases the oldest job that is pending, or running with a lease that ended before `now`,
    /// to `claimant` until `now + lease_micros`. Two servers claiming at once never get the same
    /// job while its lease runs. A job is not claimed while another job of its kind and object
    /// is running under a lease that has not ended: such jobs run one after the other (two
    /// duplicate scans of one object would replace each other's open pairs).
    async fn claim_job(&self, claimant: &str, now: i64, lease_micros: i64) -> StoreResult<Option<JobRow>>;

    /// Saves a page of a job's work (violations, key refreshes, cursor, counters, lease, end) in
    /// one transaction, if `claimant` still holds the job's lease and the job is running.
    /// Returns false, writing nothing, otherwise.
    async fn save_job_progress(&self, progress: JobProgress) -> StoreResult<bool>;

    /// Violations of a job whose records are inside `scope` (a SQL predicate on the records),
    /// ordered by (record id, field, code), after `after`, at most `limit`.
    async fn list_job_violations(
        &self,
        job_id: Uuid,
        scope: &RowScope,
        after: Option<&ViolationRow>,
        limit: u32,
    ) -> StoreResult<Vec<ViolationRow>>;

    // ---- MFA: TOTP enrolment, recovery codes, login challenges, step-up --------------------

    /// The user's second factor, enabled or pending, with the number of unused recovery codes.
    async fn get_user_mfa(&self, user_id: Uuid) -> StoreResult<Option<UserMfaRow>>;

    /// Stores a pending enrolment (`enabled` false), replacing an earlier pending one of the
    /// user. `AlreadyExists` when the user has an enabled factor (it must be reset first).
    async fn start_mfa_enrolment(&self, row: UserMfaRow, audit: AuditDraft) -> StoreResult<()>;

    /// Activates the pending enrolment of the user with the code of `step` (which becomes
    /// `last_used_step`) and replaces the user's recovery codes with `recovery_code_hashes`, in
    /// one transaction with the audit event. `Ok(false)`, with nothing changed, when there is no
    /// pending enrolment or `step` is not later than the last used one.
    async fn confirm_mfa_enrolment(
        &self,
        user_id: Uuid,
        step: i64,
        recovery_code_hashes: Vec<String>,
        now: i64,
        audit: AuditDraft,
    ) -> StoreResult<bool>;

    /// Consumes a second factor of a user with an enabled factor and applies `effect`, with the
    /// audit events, in one transaction. `Ok(false)`, with nothing changed and no event, when
    /// the factor is not accepted (step already used, recovery code unknown or used, no enabled
    /// factor); the caller records the refusal.
    async fn use_mfa_factor(
        &self,
        user_id: Uuid,
        factor: MfaFactor,
        effect: MfaEffect,
        audit: Vec<AuditDraft>,
    ) -> StoreResult<bool>;

    /// Removes the user's factor and recovery codes and ends every session and token of the
    /// user, with the audit event. Returns whether a factor existed.
    async fn reset_mfa(&self, user_id: Uuid, audit: AuditDraft) -> StoreResult<bool>;

    /// Stores a login challenge (and forgets expired ones), with the audit event.
    async fn create_mfa_challenge(&self, challenge: MfaChallengeRow, audit: AuditDraft) -> StoreResult<()>;

    async fn get_mfa_challenge(&self, challenge_hash: &str) -> StoreResult<Option<MfaChallengeRow>>;

    // ---- access: custom roles, time-boxed grants, shared login throttling -----------------

    /// A counter that every committed change to roles, grants, departments, teams, users'
    /// roles and places, custom fields or field rules moves forward (bumped by triggers in the
    /// changing transaction). Servers poll it to drop their caches of those.
    async fn cache_epoch(&self) -> StoreResult<i64>;

    /// Every custom role, by name.
    async fn list_roles(&self) -> StoreResult<Vec<RoleRow>>;

    /// Stores a new custom role with its audit event. `AlreadyExists` when the name is taken.
    async fn create_role(&self, role: RoleRow, audit: AuditDraft) -> StoreResult<()>;

    /// Replaces the definition of a custom role (`updated_at` too) with its audit event.
    /// `NotFound` when there is no such role.
    async fn update_role(&self, role: RoleRow, audit: AuditDraft) -> StoreResult<()>;

    /// Deletes a custom role with its audit event, in one transaction that first checks no
    /// user holds it (`Conflict` otherwise, nothing changed). `NotFound` when there is none.
    async fn delete_role(&self, name: &str, audit: AuditDraft) -> StoreResult<()>;

    /// Stores a grant with its audit event.
    async fn create_grant(&self, grant: GrantRow, audit: AuditDraft) -> StoreResult<()>;

    /// Grants, newest first: only those in force at `active_at` (µs) when given, else all.
    async fn list_grants(&self, active_at: Option<i64>) -> StoreResult<Vec<GrantRow>>;

    async fn get_grant(&self, id: Uuid) -> StoreResult<Option<GrantRow>>;

    /// Revokes a grant that is not revoked yet, with its audit event. `Ok(false)` (nothing
    /// changed, no event) when it was already revoked; `NotFound` when it does not exist.
    async fn revoke_grant(&self, id: Uuid, at: i64, by: Option<Uuid>, audit: AuditDraft) -> StoreResult<bool>;

    /// The login-failure counters of `keys` (missing keys have none).
    async fn login_counters(&self, keys: &[String]) -> StoreResult<Vec<LoginCounterRow>>;

    /// Counts one failed login under every key, atomically per key (a counter whose last
    /// failure is older than `forget_before` starts again at one). Returns the counters after
    /// the increment. (The caller appends the audit event; the counter is not evidence.)
    async fn record_login_failure(
        &self,
        keys: &[String],
        now: i64,
        forget_before: i64,
    ) -> StoreResult<Vec<LoginCounterRow>>;

    /// Forgets the counter of `key` (a successful login clears the account's failures).
    async fn clear_login_failures(&self, key: &str) -> StoreResult<()>;
}

/// One row of `Store::audit_activity`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivityCount {
    pub actor_id: Option<Uuid>,
    pub action: String,
    pub count: i64,
}
