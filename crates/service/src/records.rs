//! Record writes and reads. `write_record` is the single function through which every record
//! mutation passes: validate → normalise → check references → authorise → encrypt and index →
//! one `WriteBatch` (new version + audit event) applied atomically by the store.

use crate::access::Operation;
use crate::duplicates::{CheckOptions, ConfirmNotDuplicate, DupCheck, Within};
use crate::error::{ServiceError, ServiceResult, again_if_stale};
use crate::view::{HistoryPage, RecordView, VersionView};
use crate::{RequestContext, Service};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use custodian_core::schema::{FieldType, ObjectDef};
use custodian_core::values::{ValidationContext, index_text, validate_record};
use custodian_core::{ErrorCode, FieldError, search};
use custodian_store::{
    AuditDraft, FieldDigest, ListQuery, MatchGuard, MatchKeySet, RecordWrite, RowScope, StoreError, StoredRecord,
    WriteAction, WriteBatch, now_micros,
};
use serde_json::{Map, Value, json};
use uuid::Uuid;

/// The version a create gives its record.
const FIRST_VERSION: i64 = 1;

/// Records taken to exist by a reference check: (object, id).
pub(crate) type References = std::collections::HashSet<(String, Uuid)>;

/// The record a reference field names: its id, and its object (None when the field has no
/// fixed target and `related_object` is missing). A reference without a fixed target takes it
/// from `related_object` (activities).
fn reference_of(f: &custodian_core::schema::FieldDef, fields: &Map<String, Value>) -> Option<(Uuid, Option<String>)> {
    let id = fields.get(&f.name).and_then(Value::as_str).and_then(|s| Uuid::parse_str(s).ok())?;
    let target = match &f.reference {
        Some(t) => Some(t.clone()),
        None => fields.get("related_object").and_then(Value::as_str).map(str::to_owned),
    };
    Some((id, target))
}

/// One create of a batch of creates, with its caller.
pub(crate) struct CreateInput<'a> {
    pub ctx: &'a RequestContext,
    pub fields: &'a Map<String, Value>,
    pub options: &'a CreateOptions,
}

/// Options of a create.
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    /// Owner of the new record; defaults to the caller.
    pub owner_id: Option<Uuid>,
    /// Team of the new record; defaults to the owner's team.
    pub team_id: Option<Uuid>,
    /// Overrides a `possible_duplicate` refusal; the reason is audited.
    pub confirm_not_duplicate: Option<ConfirmNotDuplicate>,
    /// Saves a USCC whose checksum fails (data stewards and admins; audited with the reason).
    pub uscc_override: Option<OverrideReason>,
}

/// Why a warning is overridden (`"override": {"uscc": {"reason": "…"}}`), kept in the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverrideReason {
    pub reason: String,
}

impl OverrideReason {
    /// Checks the reason (required, at most 500 characters).
    pub fn new(reason: &str) -> ServiceResult<Self> {
        let trimmed = reason.trim();
        if trimmed.is_empty() || trimmed.chars().count() > 500 || trimmed.chars().any(char::is_control) {
            return Err(ServiceError::validation(vec![FieldError::new(
                "override.uscc.reason",
                "required",
                "A reason (1-500 characters) is required to override a warning.",
                "覆盖警告时须填写原因（1-500 个字符）。",
            )]));
        }
        Ok(OverrideReason { reason: trimmed.to_owned() })
    }
}
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// The version the caller based the change on (`If-Match` or `"version"`).
    pub expected_version: Option<i64>,
    /// Overrides a `possible_duplicate` refusal of an update; the reason is audited.
    pub confirm_not_duplicate: Option<ConfirmNotDuplicate>,
    /// Saves a USCC whose checksum fails (data stewards and admins; audited with the reason).
    pub uscc_override: Option<OverrideReason>,
    /// Changes fields locked on the record (`locked_when` rules; data stewards and admins;
    /// audited with the reason, and the owner and their managers are notified).
    pub lock_override: Option<OverrideReason>,
}

/// Properties every record has that only the service sets: refused when a caller tries to
/// assign them in a body (mass assignment), whatever their value. `version` is accepted as the
/// expected version at the top level of a request body, never among the fields.
pub const SYSTEM_PROPERTIES: &[&str] = &[
    "id",
    "object",
    "version",
    "owner_id",
    "team_id",
    "created_at",
    "created_by",
    "updated_at",
    "updated_by",
    "deleted",
    "deleted_at",
    "masked_fields",
    "merged_into",
];

/// Most records one bulk delete may name.
pub const MAX_BULK_DELETE: usize = 500;

/// What a bulk delete did.
#[derive(Debug, Clone, serde::Serialize, PartialEq)]
pub struct BulkDeleteReport {
    pub object: String,
    pub deleted: Vec<Uuid>,
}

/// Stored fields (sensitive values encrypted), blind indexes, unique keys and search text.
type SealedFields = (Map<String, Value>, Vec<FieldDigest>, Vec<FieldDigest>, String);

/// One prepared record change, not yet applied.
#[derive(Clone)]
pub(crate) struct Prepared {
    pub write: RecordWrite,
    pub audit: AuditDraft,
    /// Owner, stage or amount changes that notify people (S13), sent with the write.
    pub notice: Option<crate::notifications::ChangeNotice>,
    /// The record's blocking keys for duplicate checks (see `duplicates`).
    pub match_keys: Option<MatchKeySet>,
    /// Unique fields whose value this write gives an active record (changed, or all of them
    /// for a create or a restore), strong duplicate keys left out (the duplicate check looks
    /// those up): looked up before the write (`check_unique_values`).
    pub unique_introduced: Vec<String>,
}

impl Prepared {
    /// Hands the write's duplicate-check guard to the store with its match keys (see
    /// `MatchGuard`); a write without keys (a deletion) needs none.
    pub(crate) fn guard(&mut self, guard: Option<MatchGuard>) {
        if let Some(set) = self.match_keys.as_mut().filter(|s| !s.keys.is_empty()) {
            set.guard = guard;
        }
    }
}

/// The match keys a create's duplicate check computed, and its guard.
type CheckedKeys = (Vec<Vec<u8>>, Option<MatchGuard>);

/// How many creates of a batch are prepared at once (their lookups wait on the store).
pub const PREPARE_CONCURRENCY: usize = 8;

impl Service {
    pub(crate) fn object_def(&self, object: &str) -> ServiceResult<ObjectDef> {
        self.schema()
            .object(object)
            .cloned()
            .ok_or_else(|| ServiceError::with_message(ErrorCode::UnknownObject, format!("Unknown object: {object}")))
    }

    pub(crate) fn validation_context(&self) -> ValidationContext {
        ValidationContext {
            accept_locked_changes: false,
            today: time::OffsetDateTime::now_utc().date(),
            default_region: self.config.default_region.clone(),
            accept_uscc_checksum: false,
        }
    }

    /// The validation context of a write that brings back values stored earlier (restore,
    /// revert, merge): a USCC checksum warning was decided when the value was first saved.
    pub(crate) fn stored_values_context(&self) -> ValidationContext {
        ValidationContext { accept_uscc_checksum: true, ..self.validation_context() }
    }

    /// The validation context of new input: a failing USCC checksum is accepted only for data
    /// stewards and admins who sent an override with a reason (others get the 422).
    pub(crate) fn input_context(
        &self,
        ctx: &RequestContext,
        uscc_override: Option<&OverrideReason>,
        lock_override: Option<&OverrideReason>,
    ) -> ValidationContext {
        let role = self.role_of(ctx);
        ValidationContext {
            accept_uscc_checksum: uscc_override.is_some() && (role.admin || role.merge),
            accept_locked_changes: lock_override.is_some() && (role.admin || role.merge),
            ..self.validation_context()
        }
    }

    /// Refuses a write that brings back or merges values (revert, merge) when it would change a
    /// field locked on the record: those go through an update with a lock override.
    pub(crate) fn refuse_locked_changes(
        def: &ObjectDef,
        before: &Map<String, Value>,
        after: &Map<String, Value>,
    ) -> ServiceResult<()> {
        let errors = custodian_core::values::locked_change_errors(def, before, after);
        if errors.is_empty() { Ok(()) } else { Err(ServiceError::validation(errors)) }
    }

    /// The keyed hash that holds a unique value: over the value alone (scope global) or over
    /// the owner or team and the value, so it follows owner and team changes.
    pub(crate) fn unique_digest(
        &self,
        def: &ObjectDef,
        field: &custodian_core::FieldDef,
        owner_id: Option<Uuid>,
        team_id: Option<Uuid>,
        text: &str,
    ) -> Vec<u8> {
        use custodian_core::schema::UniqueScope;
        let scoped = |kind: &str, id: Option<Uuid>| {
            format!("{kind}:{}\u{1f}{text}", id.map(|u| u.to_string()).unwrap_or_else(|| "-".into()))
        };
        let keyed = match field.unique_scope {
            UniqueScope::Global => text.to_owned(),
            UniqueScope::PerOwner => scoped("owner", owner_id),
            UniqueScope::PerTeam => scoped("team", team_id),
        };
        self.keyring.unique_key(&def.name, &field.name, &keyed)
    }

    /// Loads a record the caller may see (else 404, like a missing record) and, for a write,
    /// checks that it is also inside the caller's write scope (else 403). Both checks are SQL
    /// predicates in the lookup itself.
    pub(crate) async fn load_scoped(
        &self,
        ctx: &RequestContext,
        def: &ObjectDef,
        id: Uuid,
        op: Operation,
    ) -> ServiceResult<StoredRecord> {
        let read = self.scope_for(ctx, &def.name, Operation::Read).await?;
        let record = self.store.get_record(&def.name, id, &read).await?.ok_or_else(ServiceError::not_found)?;
        if op != Operation::Read {
            let scope = self.scope_for(ctx, &def.name, op).await?;
            if scope != read && self.store.get_record(&def.name, id, &scope).await?.is_none() {
                return Err(ServiceError::new(ErrorCode::Forbidden));
            }
        }
        Ok(record)
    }

    /// `load_scoped`, recording an `access.denied` event (with `operation`) when the caller is
    /// refused: out of read scope (404) or out of write scope (403).
    pub(crate) async fn load_audited(
        &self,
        ctx: &RequestContext,
        def: &ObjectDef,
        id: Uuid,
        op: Operation,
        operation: &str,
    ) -> ServiceResult<StoredRecord> {
        let loaded = self.load_scoped(ctx, def, id, op).await;
        self.audited(ctx, &def.name, Some(id), operation, loaded).await
    }

    /// Passes a result through, recording an audit event when it is a refusal.
    async fn audited<T>(
        &self,
        ctx: &RequestContext,
        object: &str,
        id: Option<Uuid>,
        operation: &str,
        result: ServiceResult<T>,
    ) -> ServiceResult<T> {
        if let Err(e) = &result {
            self.audit_refusal(ctx, object, id, operation, e).await;
        }
        result
    }

    pub(crate) fn audit_draft(&self, ctx: &RequestContext, action: &str) -> AuditDraft {
        let mut d = AuditDraft::new(action);
        if let Some(actor) = &ctx.actor {
            d.actor_id = Some(actor.user_id);
            d.actor_role = Some(actor.role.clone());
            let id = Some(crate::auth::public_session_id(&actor.session_hash));
            if actor.api_token { d.token_id = id } else { d.session_id = id }
        }
        d.request_id = ctx.request_id.clone();
        d.ip = ctx.ip.clone();
        d.user_agent = ctx.user_agent.clone();
        d
    }

    /// Checks that reference fields point at existing, active records of the right object.
    pub(crate) async fn check_references(&self, def: &ObjectDef, fields: &Map<String, Value>) -> ServiceResult<()> {
        self.check_references_with(def, fields, &References::default()).await
    }

    /// `check_references`, where `known` are records taken to exist (object, id): created in
    /// the same batch, or found by the batch's one lookup (`known_references`).
    pub(crate) async fn check_references_with(
        &self,
        def: &ObjectDef,
        fields: &Map<String, Value>,
        known: &References,
    ) -> ServiceResult<()> {
        let mut errors = Vec::new();
        for f in def.fields.iter().filter(|f| f.field_type == FieldType::Reference) {
            let Some((id, target)) = reference_of(f, fields) else {
                continue;
            };
            let Some(target) = target else {
                errors.push(FieldError::new(
                    &f.name,
                    "required",
                    "related_object is required with related_id.",
                    "填写关联记录时须指定关联对象。",
                ));
                continue;
            };
            if known.contains(&(target.clone(), id)) {
                continue;
            }
            if self.store.existing_ids(&target, &[id]).await?.is_empty() {
                errors.push(FieldError::new(
                    &f.name,
                    "invalid_reference",
                    format!("No active {target} record with this id."),
                    format!("不存在该 ID 的有效{target}记录。"),
                ));
            }
        }
        if errors.is_empty() { Ok(()) } else { Err(ServiceError::validation(errors)) }
    }

    /// Turns a normalised plaintext field map into what the store keeps: sensitive values
    /// encrypted, their blind indexes, unique keys and the search text.
    fn seal_fields(
        &self,
        def: &ObjectDef,
        record: &StoredRecord,
        plain: &Map<String, Value>,
    ) -> ServiceResult<SealedFields> {
        let active = record.deleted_at.is_none();
        let id = record.id.to_string();
        let mut stored = Map::with_capacity(plain.len());
        let mut blind = Vec::new();
        let mut unique = Vec::new();
        let mut searchable: Vec<&str> = Vec::new();
        for (name, value) in plain {
            let Some(f) = def.field(name) else { continue };
            let text = index_text(value);
            if f.sensitive {
                let envelope = self.keyring.encrypt_field(&def.name, name, &id, &value.to_string()).map_err(|e| {
                    tracing::error!(error = %e, "encryption failed");
                    ServiceError::new(ErrorCode::Internal)
                })?;
                stored.insert(name.clone(), Value::String(envelope));
                blind.push(FieldDigest {
                    field: name.clone(),
                    digest: self.keyring.blind_index(&def.name, name, &text),
                });
            } else {
                stored.insert(name.clone(), value.clone());
                if f.searchable()
                    && let Some(s) = value.as_str()
                {
                    searchable.push(s);
                }
            }
            if f.unique && active {
                let digest = self.unique_digest(def, f, record.owner_id, record.team_id, &text);
                unique.push(FieldDigest { field: name.clone(), digest });
            }
        }
        let search_text = search::index_text(searchable);
        Ok((stored, blind, unique, search_text))
    }

    /// Field-level changes for the audit event. Sensitive values appear only as a keyed hash:
    /// their blind index, taken from `after_digests` (the write's own blind indexes of `after`)
    /// when it is there, computed otherwise.
    fn audit_changes(
        &self,
        def: &ObjectDef,
        before: Option<&Map<String, Value>>,
        after: &Map<String, Value>,
        after_digests: &[FieldDigest],
    ) -> Value {
        let empty = Map::new();
        let before = before.unwrap_or(&empty);
        let mut changes = Map::new();
        let names: std::collections::BTreeSet<&String> = before.keys().chain(after.keys()).collect();
        for name in names {
            let (old, new) = (before.get(name), after.get(name));
            if old == new {
                continue;
            }
            let sensitive = def.field(name).is_some_and(|f| f.sensitive);
            let show = |v: Option<&Value>, known: Option<&[u8]>| -> Value {
                match v {
                    None => Value::Null,
                    Some(v) if sensitive => {
                        let computed;
                        let digest = match known {
                            Some(d) => d,
                            None => {
                                computed = self.keyring.blind_index(&def.name, name, &index_text(v));
                                computed.as_slice()
                            }
                        };
                        Value::String(format!("hmac:{}", hex::encode(&digest[..16])))
                    }
                    Some(v) => v.clone(),
                }
            };
            let known = after_digests.iter().find(|d| &d.field == name).map(|d| d.digest.as_slice());
            changes.insert(name.clone(), json!({ "old": show(old, None), "new": show(new, known) }));
        }
        Value::Object(changes)
    }

    /// Prepares the write of `plain` (complete normalised fields) as the next state of a record.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn prepare_write(
        &self,
        ctx: &RequestContext,
        def: &ObjectDef,
        action: WriteAction,
        current: Option<&StoredRecord>,
        current_plain: Option<&Map<String, Value>>,
        plain: &Map<String, Value>,
        record: StoredRecord,
    ) -> ServiceResult<Prepared> {
        self.prepare_write_with(ctx, def, action, current, current_plain, plain, record, None)
    }

    /// `prepare_write` with the record's match keys when they are known already (computed by
    /// the duplicate check from the same values).
    #[allow(clippy::too_many_arguments)]
    fn prepare_write_with(
        &self,
        ctx: &RequestContext,
        def: &ObjectDef,
        action: WriteAction,
        current: Option<&StoredRecord>,
        current_plain: Option<&Map<String, Value>>,
        plain: &Map<String, Value>,
        record: StoredRecord,
        match_keys: Option<Vec<Vec<u8>>>,
    ) -> ServiceResult<Prepared> {
        let (stored, blind, unique, search_text) = self.seal_fields(def, &record, plain)?;
        // The strong keys this write gives an active record (changed ones; all of them when a
        // deleted record comes back): the store refuses the write if, at commit, another active
        // record holds one (two concurrent creates of one mobile).
        let revived = current.is_some_and(|c| c.deleted_at.is_some());
        let introduced = |name: &str| revived || current_plain.is_none_or(|before| before.get(name) != plain.get(name));
        let policy = crate::duplicates::policy(&def.name);
        let strong = |name: &str| policy.as_ref().is_some_and(|p| p.strong.contains(&name));
        // Strong keys are looked up by the duplicate check already (and re-checked at commit).
        let unique_introduced: Vec<String> =
            unique.iter().map(|u| u.field.clone()).filter(|name| !strong(name) && introduced(name)).collect();
        let exclusive_keys = match policy {
            Some(policy) if record.deleted_at.is_none() => blind
                .iter()
                .filter(|d| policy.strong.contains(&d.field.as_str()) && introduced(&d.field))
                .cloned()
                .collect(),
            _ => Vec::new(),
        };
        let mut record = record;
        record.fields = stored;
        let mut audit = self.audit_draft(ctx, &format!("record.{}", action.as_str()));
        audit.object = Some(def.name.clone());
        audit.record_id = Some(record.id);
        audit.details = json!({
            "version": record.version,
            "changes": self.audit_changes(def, current_plain, plain, &blind),
        });
        let notice = crate::notifications::change_notice(
            &def.name,
            action,
            current.and_then(|c| c.owner_id),
            record.owner_id,
            &audit.details["changes"],
            |name| def.field(name).is_some_and(|f| f.sensitive),
        );
        // A deleted record is no candidate: its keys go with it (a restore writes them again).
        let match_keys = match match_keys {
            Some(keys) => Some(MatchKeySet { object: def.name.clone(), record_id: record.id, keys, guard: None }),
            None => self.match_key_set(def, record.id, plain),
        };
        let match_keys = match_keys.map(|mut set| {
            if record.deleted_at.is_some() {
                set.keys.clear();
            }
            set
        });
        Ok(Prepared {
            notice,
            write: RecordWrite {
                action,
                expected_version: current.map(|c| c.version),
                record,
                blind_indexes: blind,
                unique_keys: unique,
                exclusive_keys,
                search_text,
            },
            audit,
            match_keys,
            unique_introduced,
        })
    }

    /// Unique values held by records without a unique key. The store's `unique_keys` enforce a
    /// unique rule, but after an admin adds one, records written before hold no key until the
    /// rule's re-check job has reached them; until then a new write could take a value such a
    /// record has. So every write of a value under a unique rule also looks the value up among
    /// the active records in the rule's scope (`Prepared::unique_introduced` leaves out fields
    /// that are also strong duplicate keys; by default those are the only unique ones, so a
    /// default write does no lookup here).
    /// Concurrent writes of one value, and records written by the same batch (a merge, an
    /// undo that swaps values back), are decided by the store's keys.
    /// Only values a write introduces are looked up: a record that keeps its value keeps its
    /// key, even while another record (a violator the re-check lists) shares the value.
    pub(crate) async fn check_unique_values(&self, prepared: &[Prepared]) -> ServiceResult<()> {
        if prepared.iter().all(|p| p.unique_introduced.is_empty()) {
            return Ok(());
        }
        let in_batch: std::collections::HashSet<Uuid> = prepared.iter().map(|p| p.write.record.id).collect();
        for p in prepared.iter().filter(|p| !p.unique_introduced.is_empty()) {
            self.check_unique_values_of(&p.write, &p.unique_introduced, &in_batch).await?;
        }
        Ok(())
    }

    async fn check_unique_values_of(
        &self,
        w: &RecordWrite,
        fields: &[String],
        in_batch: &std::collections::HashSet<Uuid>,
    ) -> ServiceResult<()> {
        use custodian_core::schema::UniqueScope;
        let def = self.object_def(&w.record.object)?;
        for name in fields {
            let Some(f) = def.field(name) else { continue };
            let mut candidates: Vec<StoredRecord> = Vec::new();
            if f.sensitive {
                let Some(blind) = w.blind_indexes.iter().find(|b| b.field == f.name) else { continue };
                let ids: Vec<Uuid> = self
                    .store
                    .find_by_blind_indexes(&def.name, &[(f.name.clone(), blind.digest.clone())], 20)
                    .await?
                    .into_iter()
                    .map(|(_, id)| id)
                    .filter(|id| *id != w.record.id)
                    .collect();
                if !ids.is_empty() {
                    let mut q = ListQuery::new(def.name.clone());
                    q.scope = RowScope::Restricted { owner_ids: Vec::new(), team_ids: Vec::new(), record_ids: ids };
                    q.limit = 20;
                    candidates = self.store.list_records(&q).await?.items;
                }
            } else {
                let Some(value) = w.record.fields.get(&f.name).filter(|v| !v.is_null()) else { continue };
                let q = crate::duplicates::equal_value_query(&def.name, &f.name, index_text(value));
                candidates = self.store.list_records(&q).await?.items;
            }
            let holder = candidates.into_iter().find(|r| {
                !in_batch.contains(&r.id)
                    && match f.unique_scope {
                        UniqueScope::Global => true,
                        UniqueScope::PerOwner => r.owner_id == w.record.owner_id,
                        UniqueScope::PerTeam => r.team_id == w.record.team_id,
                    }
            });
            if let Some(holder) = holder {
                return Err(StoreError::UniqueViolation {
                    object: def.name.clone(),
                    field: f.name.clone(),
                    holder: Some(holder.id),
                }
                .into());
            }
        }
        Ok(())
    }

    pub(crate) async fn apply(&self, prepared: Vec<Prepared>) -> ServiceResult<()> {
        self.apply_with(prepared, Vec::new()).await
    }

    /// `apply`, with `extra` audit events (a summary of the whole batch) in the same
    /// transaction.
    pub(crate) async fn apply_with(&self, prepared: Vec<Prepared>, extra: Vec<AuditDraft>) -> ServiceResult<()> {
        self.check_unique_values(&prepared).await?;
        let mut batch = WriteBatch::default();
        // Change notifications commit with the change (or not at all).
        (batch.notifications, batch.outbox) = self.notifications_for(&prepared).await?;
        for p in prepared {
            batch.records.push(p.write);
            if self.config.audit_writes {
                batch.audit.push(p.audit);
            }
            batch.match_keys.extend(p.match_keys);
        }
        batch.audit.extend(extra);
        self.store.write(batch).await?;
        Ok(())
    }

    /// Validates and prepares a create without applying it (used by `create_record` and by
    /// batch paths such as the demo loader and the importer).
    pub async fn prepare_create(
        &self,
        ctx: &RequestContext,
        object: &str,
        fields: &Map<String, Value>,
        options: &CreateOptions,
    ) -> ServiceResult<(Uuid, PreparedWrite)> {
        self.prepare_create_with(ctx, object, fields, options, &[]).await
    }

    /// `prepare_create` where references may name `pending` records (created in the same batch).
    pub(crate) async fn prepare_create_with(
        &self,
        ctx: &RequestContext,
        object: &str,
        fields: &Map<String, Value>,
        options: &CreateOptions,
        pending: &[(String, Uuid)],
    ) -> ServiceResult<(Uuid, PreparedWrite)> {
        let records = [(fields.clone(), options.clone())];
        let mut prepared = self.prepare_creates_with(ctx, object, &records, pending).await;
        prepared.pop().unwrap_or_else(|| Err(ServiceError::new(ErrorCode::Internal)))
    }

    /// Prepares the creates of many records of one object (batch paths: demo loader, importer).
    /// Each is checked exactly like `prepare_create`: access, rules, references, and the
    /// duplicate check — done for the whole batch at once, and also between the records of the
    /// batch (a record duplicating an earlier one of the same batch is refused like a duplicate
    /// of a stored one, its candidate named by `batch_index`). Results come in input order.
    pub async fn prepare_creates(
        &self,
        ctx: &RequestContext,
        object: &str,
        records: &[(Map<String, Value>, CreateOptions)],
    ) -> Vec<ServiceResult<(Uuid, PreparedWrite)>> {
        self.prepare_creates_with(ctx, object, records, &[]).await
    }

    async fn prepare_creates_with(
        &self,
        ctx: &RequestContext,
        object: &str,
        records: &[(Map<String, Value>, CreateOptions)],
        pending: &[(String, Uuid)],
    ) -> Vec<ServiceResult<(Uuid, PreparedWrite)>> {
        let inputs: Vec<CreateInput<'_>> =
            records.iter().map(|(fields, options)| CreateInput { ctx, fields, options }).collect();
        self.prepare_creates_of(object, &inputs, pending, Within::Batch).await
    }

    /// Prepares creates of one object, each with its own caller: `Within::Batch` for the
    /// records of one batch, written together; `Within::Alone` for single creates that arrived
    /// at once, each then written on its own (see `create_groups`).
    pub(crate) async fn prepare_creates_of(
        &self,
        object: &str,
        records: &[CreateInput<'_>],
        pending: &[(String, Uuid)],
        within: Within,
    ) -> Vec<ServiceResult<(Uuid, PreparedWrite)>> {
        let known = self.known_references(object, records.iter().map(|r| r.fields), pending).await;
        // 1. Access, rules and references, PREPARE_CONCURRENCY at a time so that the reference
        // lookups overlap. (Futures made eagerly per chunk: a stream combinator here would make
        // the handlers' futures fail the Send bound through a higher-ranked closure.)
        let mut validated: Vec<ServiceResult<(ObjectDef, Map<String, Value>)>> = Vec::with_capacity(records.len());
        for chunk in records.chunks(PREPARE_CONCURRENCY) {
            let mut futures = Vec::with_capacity(chunk.len());
            for r in chunk {
                futures.push(self.validate_create(r.ctx, object, r.fields, r.options, &known));
            }
            validated.extend(futures::future::join_all(futures).await);
        }
        let Some(def) = validated.iter().find_map(|v| v.as_ref().ok().map(|(def, _)| def.clone())) else {
            // Every record failed before its duplicate check.
            return validated.into_iter().filter_map(Result::err).map(Err).collect();
        };
        // 2. The duplicate check of the valid ones, as one batch.
        let ids: Vec<Uuid> = records.iter().map(|_| Uuid::now_v7()).collect();
        let mut checks = Vec::new();
        let mut positions = Vec::new();
        for (i, v) in validated.iter().enumerate() {
            if let Ok((_, plain)) = v {
                let confirm = records[i].options.confirm_not_duplicate.as_ref();
                checks.push(DupCheck {
                    ctx: records[i].ctx,
                    id: ids[i],
                    after: plain,
                    options: CheckOptions { confirm, ..Default::default() },
                });
                positions.push(i);
            }
        }
        let mut outcomes: Vec<Option<ServiceResult<Option<Value>>>> = records.iter().map(|_| None).collect();
        let mut match_keys: Vec<Option<CheckedKeys>> = records.iter().map(|_| None).collect();
        let mut prepared_values = Vec::new();
        match self.check_duplicates_many(&def, &checks, within).await {
            Ok(results) => {
                for (i, r) in positions.into_iter().zip(results) {
                    if let (Ok(_), Some(prepared)) = (&r.result, r.prepared) {
                        prepared_values.push(((ids[i], FIRST_VERSION), prepared));
                    }
                    outcomes[i] = Some(r.result);
                    match_keys[i] = r.match_keys.map(|keys| (keys, r.guard));
                }
            }
            Err(e) => {
                for i in positions {
                    outcomes[i] = Some(Err(e.clone()));
                }
            }
        }
        drop(checks);
        self.remember_prepared(prepared_values.into_iter());
        // 3. The writes of those that passed (sealing is CPU work: spread over every core).
        let inputs: Vec<_> = validated.into_iter().zip(outcomes).zip(records).zip(ids).zip(match_keys).collect();
        custodian_core::matching::map_on_all_cores(&inputs, |((((v, outcome), input), id), keys)| {
            let (def, plain) = v.as_ref().map_err(Clone::clone)?;
            let confirmed = outcome.clone().unwrap_or(Ok(None))?;
            let (ctx, options) = (input.ctx, input.options);
            let now = now_micros();
            let actor = ctx.actor.as_ref();
            let record = StoredRecord {
                id: *id,
                object: def.name.clone(),
                version: FIRST_VERSION,
                owner_id: options.owner_id.or(actor.map(|a| a.user_id)),
                team_id: options.team_id.or(actor.and_then(|a| a.team_id)),
                created_at: now,
                created_by: actor.map(|a| a.user_id),
                updated_at: now,
                updated_by: actor.map(|a| a.user_id),
                deleted_at: None,
                fields: Map::new(),
            };
            let (keys, guard) = keys.clone().unzip();
            let mut prepared =
                self.prepare_write_with(ctx, def, WriteAction::Create, None, None, plain, record, keys)?;
            prepared.guard(guard.flatten());
            note_confirmation(&mut prepared, confirmed);
            note_override(&mut prepared, uscc_override_note(def, None, plain, options.uscc_override.as_ref()));
            Ok((*id, PreparedWrite(prepared)))
        })
    }

    /// The records the references of a batch name that exist: `pending` (created in the same
    /// batch) and, for a batch of more than one record, those found active by one lookup per
    /// target object instead of one per record and field. Read from the input as given: a
    /// reference this misses is looked up on its own by `check_references_with`, and a failed
    /// lookup here leaves every reference to that check.
    async fn known_references<'a>(
        &self,
        object: &str,
        records: impl ExactSizeIterator<Item = &'a Map<String, Value>>,
        pending: &[(String, Uuid)],
    ) -> References {
        let mut known: References = pending.iter().cloned().collect();
        let Ok(def) = self.object_def(object) else { return known };
        if records.len() < 2 {
            return known;
        }
        let mut wanted: std::collections::BTreeMap<String, std::collections::BTreeSet<Uuid>> = Default::default();
        for fields in records {
            for f in def.fields.iter().filter(|f| f.field_type == FieldType::Reference) {
                let Some((id, target)) = reference_of(f, fields) else {
                    continue;
                };
                let target = target.filter(|t| self.object_def(t).is_ok() && !known.contains(&(t.clone(), id)));
                if let Some(target) = target {
                    wanted.entry(target).or_default().insert(id);
                }
            }
        }
        for (target, ids) in wanted {
            let ids: Vec<Uuid> = ids.into_iter().collect();
            match self.store.existing_ids(&target, &ids).await {
                Ok(found) => known.extend(found.into_iter().map(|id| (target.clone(), id))),
                Err(e) => tracing::debug!(error = %e, object = %target, "batch reference lookup failed"),
            }
        }
        known
    }

    /// The checks of a create before its duplicate check: access (refusals audited), field
    /// rules, references. Returns the object and the normalised values.
    async fn validate_create(
        &self,
        ctx: &RequestContext,
        object: &str,
        fields: &Map<String, Value>,
        options: &CreateOptions,
        known: &References,
    ) -> ServiceResult<(ObjectDef, Map<String, Value>)> {
        self.refresh_schema_if_stale().await?;
        let def = self.object_def(object)?;
        if let Err(e) = self.check_create(ctx, object).and_then(|()| self.check_field_writes(ctx, &def, fields)) {
            self.audit_refusal(ctx, object, None, "create", &e).await;
            return Err(e);
        }
        let validation = self.input_context(ctx, options.uscc_override.as_ref(), None);
        let plain = validate_record(&def, None, fields, &validation).map_err(ServiceError::validation)?;
        self.check_references_with(&def, &plain, known).await?;
        Ok((def, plain))
    }

    /// Applies prepared writes in one transaction: all or nothing.
    pub async fn apply_prepared(&self, writes: Vec<PreparedWrite>) -> ServiceResult<()> {
        self.apply(writes.into_iter().map(|p| p.0).collect()).await
    }

    pub async fn create_record(
        &self,
        ctx: &RequestContext,
        object: &str,
        fields: &Map<String, Value>,
        options: &CreateOptions,
    ) -> ServiceResult<RecordView> {
        let record = again_if_stale(|| async {
            let (_, prepared) = self.prepare_create_grouped(ctx, object, fields, options).await?;
            let record = prepared.0.write.record.clone();
            self.apply_prepared(vec![prepared]).await.map(|()| record)
        })
        .await?;
        // The view of the version just written, without reading it back, shown as a read
        // would show it: only if the caller's read scope admits it (as `fetch_view`).
        let def = self.object_def(object)?;
        if !self.scope_for(ctx, object, Operation::Read).await?.admits(&record) {
            return Err(ServiceError::not_found());
        }
        Ok(self.record_view(ctx, &def, &record))
    }

    fn check_expected(current: &StoredRecord, options: &WriteOptions) -> ServiceResult<()> {
        match options.expected_version {
            Some(v) if v != current.version => {
                Err(ServiceError::new(ErrorCode::VersionConflict)
                    .with_extra(json!({ "current_version": current.version })))
            }
            _ => Ok(()),
        }
    }

    pub async fn update_record(
        &self,
        ctx: &RequestContext,
        object: &str,
        id: Uuid,
        changes: &Map<String, Value>,
        options: &WriteOptions,
    ) -> ServiceResult<RecordView> {
        again_if_stale(|| self.update_record_once(ctx, object, id, changes, options)).await
    }

    async fn update_record_once(
        &self,
        ctx: &RequestContext,
        object: &str,
        id: Uuid,
        changes: &Map<String, Value>,
        options: &WriteOptions,
    ) -> ServiceResult<RecordView> {
        self.refresh_schema_if_stale().await?;
        let def = self.object_def(object)?;
        let loaded = self.load_scoped(ctx, &def, id, Operation::Update).await;
        let current = self.audited(ctx, object, Some(id), "update", loaded).await?;
        if current.deleted_at.is_some() {
            return Err(ServiceError::not_found());
        }
        let allowed = self.check_field_writes(ctx, &def, changes);
        self.audited(ctx, object, Some(id), "update", allowed).await?;
        Self::check_expected(&current, options)?;
        let before = self.decrypt_fields(&def, id, &current.fields);
        let validation = self.input_context(ctx, options.uscc_override.as_ref(), options.lock_override.as_ref());
        let after = validate_record(&def, Some(&before), changes, &validation).map_err(ServiceError::validation)?;
        let locked = custodian_core::values::locked_fields_changed(&def, &before, &after);
        if after == before {
            return self.unchanged_view(ctx, &def, &current, "update").await;
        }
        self.check_references(&def, &after).await?;
        let check = CheckOptions {
            record_id: Some(id),
            before: Some(&before),
            confirm: options.confirm_not_duplicate.as_ref(),
            ..Default::default()
        };
        let checked = self.check_duplicates(ctx, &def, &after, check).await?;
        let actor = ctx.actor.as_ref().map(|a| a.user_id);
        let next = StoredRecord {
            version: current.version + 1,
            updated_at: now_micros().max(current.updated_at),
            updated_by: actor,
            ..current.clone()
        };
        let version = next.version;
        let mut prepared =
            self.prepare_write(ctx, &def, WriteAction::Update, Some(&current), Some(&before), &after, next)?;
        note_confirmation(&mut prepared, checked.confirmed);
        prepared.guard(checked.guard);
        note_override(&mut prepared, uscc_override_note(&def, Some(&before), &after, options.uscc_override.as_ref()));
        if let (false, Some(o)) = (locked.is_empty(), options.lock_override.as_ref()) {
            note_override(&mut prepared, Some(json!({ "lock": { "reason": o.reason, "fields": locked } })));
            crate::notifications::notice_locked(&mut prepared, &def, &locked, current.owner_id);
        }
        self.apply(vec![prepared]).await?;
        // Only once written: a concurrent update that won would have written this version
        // with other values.
        self.remember_prepared(checked.prepared.map(|p| ((id, version), p)).into_iter());
        self.fetch_view(ctx, object, id).await
    }

    /// Soft delete: the record keeps its id and versions; its unique values are freed.
    pub async fn delete_record(
        &self,
        ctx: &RequestContext,
        object: &str,
        id: Uuid,
        options: &WriteOptions,
    ) -> ServiceResult<RecordView> {
        self.set_deleted(ctx, object, id, options, true).await
    }

    /// Brings a deleted record back with the same id (fails with `duplicate` if another
    /// active record took one of its unique values meanwhile).
    pub async fn restore_record(
        &self,
        ctx: &RequestContext,
        object: &str,
        id: Uuid,
        options: &WriteOptions,
    ) -> ServiceResult<RecordView> {
        self.set_deleted(ctx, object, id, options, false).await
    }

    async fn set_deleted(
        &self,
        ctx: &RequestContext,
        object: &str,
        id: Uuid,
        options: &WriteOptions,
        delete: bool,
    ) -> ServiceResult<RecordView> {
        self.refresh_schema_if_stale().await?;
        let def = self.object_def(object)?;
        let action = if delete { WriteAction::Delete } else { WriteAction::Restore };
        let loaded = self.load_scoped(ctx, &def, id, Operation::Delete).await;
        let current = self.audited(ctx, object, Some(id), action.as_str(), loaded).await?;
        if current.deleted_at.is_some() == delete {
            return Err(if delete {
                ServiceError::not_found()
            } else {
                ServiceError::with_message(ErrorCode::Conflict, "The record is not deleted.")
            });
        }
        Self::check_expected(&current, options)?;
        let plain = self.decrypt_fields(&def, id, &current.fields);
        if !delete {
            // A record that comes back is an active record again: today's rules apply to it
            // (its stored values are kept as they are).
            let checked = validate_record(&def, None, &plain, &self.stored_values_context());
            self.audited(ctx, object, Some(id), "restore", checked.map_err(ServiceError::validation)).await?;
            // Nor may it bring back a customer that exists again meanwhile (a new record with
            // its mobile, say): 409 `duplicate` with the candidates, and a steward can merge.
            // Exact keys only: a restore carries no `confirm_not_duplicate`.
            let check = CheckOptions { record_id: Some(id), exact_only: true, ..CheckOptions::default() };
            self.check_duplicates(ctx, &def, &plain, check).await?;
        }
        let now = now_micros().max(current.updated_at);
        let next = StoredRecord {
            version: current.version + 1,
            updated_at: now,
            updated_by: ctx.actor.as_ref().map(|a| a.user_id),
            deleted_at: if delete { Some(now) } else { None },
            ..current.clone()
        };
        let prepared = self.prepare_write(ctx, &def, action, Some(&current), Some(&plain), &plain, next)?;
        self.apply(vec![prepared]).await?;
        let after = self.load_scoped(ctx, &def, id, Operation::Read).await?;
        Ok(self.record_view(ctx, &def, &after))
    }

    /// Refuses (403, audited, nothing changed) a request body that tries to set system
    /// properties such as `owner_id`, `created_by` or `deleted_at` directly.
    pub async fn refuse_system_properties(
        &self,
        ctx: &RequestContext,
        object: &str,
        id: Option<Uuid>,
        keys: &[String],
    ) -> ServiceError {
        let details = keys
            .iter()
            .map(|k| {
                FieldError::new(
                    k,
                    "read_only",
                    format!("{k} is a system property and cannot be set."),
                    format!("{k} 是系统属性，不能设置。"),
                )
            })
            .collect();
        let e = ServiceError { details, ..ServiceError::new(ErrorCode::Forbidden) };
        let mut audit = self.audit_draft(ctx, "access.denied");
        audit.object = Some(object.to_owned());
        audit.record_id = id;
        audit.details = json!({ "operation": "mass_assignment", "code": e.code.as_str(), "properties": keys });
        if let Err(err) = self.store.append_audit(vec![audit]).await {
            tracing::error!(error = %err, "could not record a refused attempt");
        }
        e
    }

    /// Ownership transfer: a new owner (and the owner's team) for a record, as a new version
    /// with a `record.transfer` event. Needs the record in the caller's update scope, a new owner
    /// who is an active user, a result that stays inside the caller's update scope (nobody moves
    /// a record out of their own reach, which is how a rep would hide one), and a fresh step-up.
    pub async fn transfer_record(
        &self,
        ctx: &RequestContext,
        object: &str,
        id: Uuid,
        new_owner: Uuid,
        options: &WriteOptions,
    ) -> ServiceResult<RecordView> {
        let def = self.object_def(object)?;
        let loaded = self.load_scoped(ctx, &def, id, Operation::Update).await;
        let current = self.audited(ctx, object, Some(id), "transfer", loaded).await?;
        if current.deleted_at.is_some() {
            return Err(ServiceError::not_found());
        }
        let owner = self.store.get_user(new_owner).await?.filter(|u| u.status == "active").ok_or_else(|| {
            ServiceError::validation(vec![FieldError::new(
                "owner_id",
                "invalid_reference",
                "The new owner must be an active user.",
                "新负责人必须是在职用户。",
            )])
        })?;
        let update = self.role_scope_for(ctx, &def.name, Operation::Update).await?;
        let stays = match &update {
            RowScope::All => true,
            RowScope::Restricted { owner_ids, team_ids, .. } => {
                owner_ids.contains(&new_owner) || owner.team_id.is_some_and(|t| team_ids.contains(&t))
            }
        };
        if !stays {
            let e = ServiceError::with_message(
                ErrorCode::Forbidden,
                "The new owner is outside your own scope: you could no longer edit the record.",
            );
            self.audit_refusal(ctx, object, Some(id), "transfer", &e).await;
            return Err(e);
        }
        self.require_step_up(ctx, "record.transfer").await?;
        Self::check_expected(&current, options)?;
        if current.owner_id == Some(new_owner) && current.team_id == owner.team_id {
            return Ok(self.record_view(ctx, &def, &current));
        }
        let plain = self.decrypt_fields(&def, id, &current.fields);
        let next = StoredRecord {
            version: current.version + 1,
            owner_id: Some(new_owner),
            team_id: owner.team_id,
            updated_at: now_micros().max(current.updated_at),
            updated_by: ctx.actor.as_ref().map(|a| a.user_id),
            ..current.clone()
        };
        let mut p = self.prepare_write(ctx, &def, WriteAction::Update, Some(&current), Some(&plain), &plain, next)?;
        p.audit.action = "record.transfer".into();
        if let Value::Object(d) = &mut p.audit.details {
            d.insert("owner_id".into(), json!({ "old": current.owner_id, "new": new_owner }));
            d.insert("team_id".into(), json!({ "old": current.team_id, "new": owner.team_id }));
        }
        self.apply(vec![p]).await?;
        self.fetch_view(ctx, object, id).await
    }

    /// Soft-deletes up to `MAX_BULK_DELETE` records in one transaction: all or nothing. Every
    /// record must be active and inside the caller's delete scope (the first that is not
    /// refuses the whole request: 404 outside read scope, 403 outside delete scope); a fresh
    /// step-up is required.
    pub async fn bulk_delete(
        &self,
        ctx: &RequestContext,
        object: &str,
        ids: &[Uuid],
    ) -> ServiceResult<BulkDeleteReport> {
        let def = self.object_def(object)?;
        let mut seen = Vec::with_capacity(ids.len());
        for id in ids {
            if seen.contains(id) {
                return Err(ServiceError::validation(vec![FieldError::new(
                    "ids",
                    "duplicate_id",
                    "Each id may appear once.",
                    "每个 ID 只能出现一次。",
                )]));
            }
            seen.push(*id);
        }
        if seen.is_empty() || seen.len() > MAX_BULK_DELETE {
            return Err(ServiceError::validation(vec![FieldError::new(
                "ids",
                "out_of_range",
                format!("Give 1-{MAX_BULK_DELETE} ids."),
                format!("须提供 1-{MAX_BULK_DELETE} 个 ID。"),
            )]));
        }
        if self.role_of(ctx).object(&def.name).delete == custodian_core::access::Scope::None {
            let e = ServiceError::new(ErrorCode::Forbidden);
            self.audit_refusal(ctx, object, None, "bulk_delete", &e).await;
            return Err(e);
        }
        self.require_step_up(ctx, "record.bulk_delete").await?;
        let mut prepared = Vec::with_capacity(seen.len());
        for id in &seen {
            let loaded = self.load_scoped(ctx, &def, *id, Operation::Delete).await;
            let current = self.audited(ctx, object, Some(*id), "bulk_delete", loaded).await?;
            if current.deleted_at.is_some() {
                return Err(ServiceError::not_found().with_extra(json!({ "id": id })));
            }
            prepared.push(self.prepare_soft_delete(ctx, &def, &current, ("bulk", json!(seen.len())))?);
        }
        self.apply(prepared).await?;
        Ok(BulkDeleteReport { object: def.name.clone(), deleted: seen })
    }

    /// The soft delete of an active record as one write of a batch (bulk delete, import
    /// revert), `note` added to its audit details.
    pub(crate) fn prepare_soft_delete(
        &self,
        ctx: &RequestContext,
        def: &ObjectDef,
        current: &StoredRecord,
        note: (&str, Value),
    ) -> ServiceResult<Prepared> {
        let plain = self.decrypt_fields(def, current.id, &current.fields);
        let now = now_micros().max(current.updated_at);
        let next = StoredRecord {
            version: current.version + 1,
            updated_at: now,
            updated_by: ctx.actor.as_ref().map(|a| a.user_id),
            deleted_at: Some(now),
            ..current.clone()
        };
        let mut p = self.prepare_write(ctx, def, WriteAction::Delete, Some(current), Some(&plain), &plain, next)?;
        if let Value::Object(d) = &mut p.audit.details {
            d.insert(note.0.to_owned(), note.1);
        }
        Ok(p)
    }

    /// One record (also a deleted one, which shows `deleted_at`).
    pub async fn get_record(&self, ctx: &RequestContext, object: &str, id: Uuid) -> ServiceResult<RecordView> {
        let def = self.object_def(object)?;
        let loaded = self.load_scoped(ctx, &def, id, Operation::Read).await;
        let record = self.audited(ctx, object, Some(id), "read", loaded).await?;
        let mut view = self.record_view(ctx, &def, &record);
        if record.deleted_at.is_some() {
            view.merged_into = self.store.merged_into(&def.name, id).await?;
        }
        self.audit_read(
            ctx,
            "record.view",
            &def.name,
            Some(id),
            json!({ "fields": view.fields.keys().collect::<Vec<_>>(), "masked": view.masked_fields }),
        )
        .await?;
        Ok(view)
    }

    /// The record of a write that changed nothing (no version, no write event), as the caller
    /// sees it: a read like any other, audited as a view that names the write it answered.
    pub(crate) async fn unchanged_view(
        &self,
        ctx: &RequestContext,
        def: &ObjectDef,
        record: &StoredRecord,
        operation: &str,
    ) -> ServiceResult<RecordView> {
        let view = self.record_view(ctx, def, record);
        let details = json!({
            "fields": view.fields.keys().collect::<Vec<_>>(),
            "masked": view.masked_fields,
            "unchanged": operation,
        });
        self.audit_read(ctx, "record.view", &def.name, Some(record.id), details).await?;
        Ok(view)
    }

    /// The record as the caller sees it right after their own write (part of that write's
    /// audit event, not a separate view).
    pub(crate) async fn fetch_view(&self, ctx: &RequestContext, object: &str, id: Uuid) -> ServiceResult<RecordView> {
        let def = self.object_def(object)?;
        let record = self.load_scoped(ctx, &def, id, Operation::Read).await?;
        Ok(self.record_view(ctx, &def, &record))
    }

    /// Records a read in the audit log before its result is returned: a served read never
    /// lacks its event (if the event cannot be stored, the read fails).
    pub(crate) async fn audit_read(
        &self,
        ctx: &RequestContext,
        action: &str,
        object: &str,
        record_id: Option<Uuid>,
        details: Value,
    ) -> ServiceResult<()> {
        self.audit_read_event(ctx, action, Some(object), record_id, details).await
    }

    /// `audit_read` of something that is not one object's records (notifications, alerts,
    /// grants, sessions): `details` names what was shown.
    pub(crate) async fn audit_read_event(
        &self,
        ctx: &RequestContext,
        action: &str,
        object: Option<&str>,
        record_id: Option<Uuid>,
        details: Value,
    ) -> ServiceResult<()> {
        if !self.config.audit_reads || ctx.actor.is_none() {
            return Ok(());
        }
        let mut audit = self.audit_draft(ctx, action);
        audit.object = object.map(str::to_owned);
        audit.record_id = record_id;
        audit.details = details;
        self.store.append_audit(vec![audit]).await?;
        Ok(())
    }

    /// Versions of a record, oldest first, paginated.
    pub async fn history(
        &self,
        ctx: &RequestContext,
        object: &str,
        id: Uuid,
        cursor: Option<&str>,
        limit: Option<u32>,
    ) -> ServiceResult<HistoryPage> {
        let def = self.object_def(object)?;
        let loaded = self.load_scoped(ctx, &def, id, Operation::Read).await;
        self.audited(ctx, object, Some(id), "history", loaded).await?;
        let limit = self.page_size(limit)?;
        let after = match cursor {
            None => 0,
            Some(c) => B64
                .decode(c)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|s| s.strip_prefix("v:").and_then(|n| n.parse::<i64>().ok()))
                .ok_or_else(|| {
                    ServiceError::invalid_query("cursor", "invalid_cursor", "The cursor is invalid.", "分页游标无效。")
                })?,
        };
        let mut versions = self.store.list_versions(&def.name, id, after, limit + 1).await?;
        let next_cursor = if versions.len() > limit as usize {
            versions.truncate(limit as usize);
            versions.last().map(|v| B64.encode(format!("v:{}", v.version)))
        } else {
            None
        };
        let page =
            HistoryPage { items: versions.iter().map(|v| self.version_view(ctx, &def, v)).collect(), next_cursor };
        let shown: Vec<i64> = page.items.iter().map(|v| v.version).collect();
        self.audit_read(ctx, "record.history", &def.name, Some(id), json!({ "versions": shown })).await?;
        Ok(page)
    }

    pub async fn history_version(
        &self,
        ctx: &RequestContext,
        object: &str,
        id: Uuid,
        version: i64,
    ) -> ServiceResult<VersionView> {
        let def = self.object_def(object)?;
        let loaded = self.load_scoped(ctx, &def, id, Operation::Read).await;
        self.audited(ctx, object, Some(id), "history", loaded).await?;
        let v = self.store.get_version(&def.name, id, version).await?.ok_or_else(ServiceError::not_found)?;
        let view = self.version_view(ctx, &def, &v);
        self.audit_read(
            ctx,
            "record.history",
            &def.name,
            Some(id),
            json!({ "versions": [version], "masked": view.masked_fields }),
        )
        .await?;
        Ok(view)
    }
}

/// Records a confirmed "not a duplicate" override in the write's audit event.
fn note_confirmation(prepared: &mut Prepared, confirmed: Option<Value>) {
    if let (Some(confirmed), Value::Object(details)) = (confirmed, &mut prepared.audit.details) {
        details.insert("confirm_not_duplicate".into(), confirmed);
    }
}

/// Records a warning override (USCC checksum) in the write's audit event.
pub(crate) fn note_override(prepared: &mut Prepared, note: Option<Value>) {
    let (Some(Value::Object(note)), Value::Object(details)) = (note, &mut prepared.audit.details) else { return };
    // Several overrides of one write (a USCC and a lock) sit side by side.
    match details.entry("override") {
        serde_json::map::Entry::Occupied(mut o) => {
            if let Value::Object(existing) = o.get_mut() {
                existing.extend(note);
            }
        }
        serde_json::map::Entry::Vacant(v) => {
            v.insert(Value::Object(note));
        }
    }
}

/// The audit note of a USCC override that was needed: the changed USCC fields whose checksum
/// fails, with the reason. `None` when no such value is written.
pub(crate) fn uscc_override_note(
    def: &ObjectDef,
    before: Option<&Map<String, Value>>,
    after: &Map<String, Value>,
    uscc_override: Option<&OverrideReason>,
) -> Option<Value> {
    let o = uscc_override?;
    let fields: Vec<&str> = def
        .fields
        .iter()
        .filter(|f| f.field_type == FieldType::CnUscc)
        .filter(|f| before.is_none_or(|b| b.get(&f.name) != after.get(&f.name)))
        .filter(|f| {
            after
                .get(&f.name)
                .and_then(Value::as_str)
                .and_then(|v| custodian_core::normalize::normalize_uscc(v).ok())
                .is_some_and(|u| !u.checksum_ok)
        })
        .map(|f| f.name.as_str())
        .collect();
    if fields.is_empty() { None } else { Some(json!({ "uscc": { "reason": o.reason, "fields": fields } })) }
}

/// A validated, encrypted record change waiting to be applied with `Service::apply_prepared`.
#[derive(Clone)]
pub struct PreparedWrite(pub(crate) Prepared);
