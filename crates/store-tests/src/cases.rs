//! The store contract as executable cases. Every case gets a fresh, empty store.
//!
//! Conventions pinned here (and relied on by the service):
//! - `Ne` matches rows whose value is missing; `IsNull(true)` matches missing and JSON null.
//! - Text compares and sorts byte-wise (UTF-8 order); `Contains` is case-insensitive for ASCII.
//! - Sorting puts missing values lowest (empty text, nil owner, −∞ number, false < true with
//!   missing below false), ties broken by id in the same direction; cursors are opaque.

use custodian_core::audit::GENESIS_HASH;
use custodian_core::search::{QueryToken, index_text, query_tokens};
use custodian_store::audit::verify_chain;
use custodian_store::{
    AuditDraft, AuditRow, CandidateFields, CheckpointClaimOutcome, CheckpointClaimRequest, CheckpointRange, Column,
    CustomFieldRow, DeletedFilter, DepartmentRow, FieldDigest, Filter, FilterOp, FilterValue, JobProgress, ListQuery,
    MfaChallengeRow, MfaEffect, MfaFactor, RecordWrite, RowScope, SessionRow, Sort, Store, StoreError, StoredRecord,
    TeamRow, UserMfaRow, UserRow, ValueKind, WrappedKeyRow, WriteAction, WriteBatch, now_micros,
};
use serde_json::{Map, Value, json};
use std::cmp::Ordering;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use uuid::Uuid;

pub type DynStore = Arc<dyn Store>;

/// The object most cases work on.
pub const OBJ: &str = "contacts";

// ---- helpers -------------------------------------------------------------------------------

pub fn fields(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => panic!("record fields must be a JSON object, got {other}"),
    }
}

/// Search text of a record: its top-level string values, tokenised like the service does.
pub fn search_text_of(f: &Map<String, Value>) -> String {
    index_text(f.values().filter_map(Value::as_str))
}

pub fn new_record_of(object: &str, v: Value) -> StoredRecord {
    let now = now_micros();
    StoredRecord {
        id: Uuid::now_v7(),
        object: object.to_owned(),
        version: 1,
        owner_id: None,
        team_id: None,
        created_at: now,
        created_by: None,
        updated_at: now,
        updated_by: None,
        deleted_at: None,
        fields: fields(v),
    }
}

pub fn new_record(v: Value) -> StoredRecord {
    new_record_of(OBJ, v)
}

pub fn creation(record: &StoredRecord) -> RecordWrite {
    RecordWrite {
        action: WriteAction::Create,
        record: record.clone(),
        expected_version: None,
        blind_indexes: Vec::new(),
        unique_keys: Vec::new(),
        exclusive_keys: Vec::new(),
        search_text: search_text_of(&record.fields),
    }
}

/// The next version of `prev` with new fields.
pub fn successor(prev: &StoredRecord, v: Value) -> StoredRecord {
    let mut next = prev.clone();
    next.version = prev.version + 1;
    next.updated_at = now_micros().max(prev.updated_at + 1);
    next.updated_by = Some(Uuid::from_u128(0xabc));
    next.fields = fields(v);
    next
}

/// A change of `prev` into `next`, based on `prev.version`.
pub fn change(action: WriteAction, prev: &StoredRecord, next: &StoredRecord) -> RecordWrite {
    RecordWrite {
        action,
        record: next.clone(),
        expected_version: Some(prev.version),
        blind_indexes: Vec::new(),
        unique_keys: Vec::new(),
        exclusive_keys: Vec::new(),
        search_text: search_text_of(&next.fields),
    }
}

pub fn audit_for(w: &RecordWrite) -> AuditDraft {
    let mut d = AuditDraft::new(format!("record.{}", w.action.as_str()));
    d.object = Some(w.record.object.clone());
    d.record_id = Some(w.record.id);
    d.details = json!({ "version": w.record.version });
    d
}

/// `(kind, object)` of every job waiting to be run, claiming and finishing each (for tests of
/// what is queued). Each is finished before the next claim: a job is not claimed while another
/// of its kind and object runs, so two queued alike would otherwise be listed once.
pub async fn pending_jobs(store: &DynStore) -> Vec<(String, String)> {
    let mut out = Vec::new();
    while let Some(job) = store.claim_job("test", now_micros(), 60_000_000).await.expect("claim") {
        finish_job(store, job.id, "test").await;
        out.push((job.kind, job.object));
    }
    out.sort();
    out
}

/// Ends a job that `claimant` holds as done.
pub async fn finish_job(store: &DynStore, job: Uuid, claimant: &str) {
    let done = JobProgress { finish: Some(("done".to_owned(), None)), ..crate::job_cases::progress(job, claimant) };
    assert!(store.save_job_progress(done).await.expect("finish job"), "the claimed job is finished");
}

pub async fn apply(store: &DynStore, w: RecordWrite) -> Result<Vec<i64>, StoreError> {
    let audit = vec![audit_for(&w)];
    store.write(WriteBatch { records: vec![w], audit, ..Default::default() }).await
}

pub async fn create(store: &DynStore, v: Value) -> StoredRecord {
    let r = new_record(v);
    apply(store, creation(&r)).await.expect("create record");
    r
}

pub async fn create_with(store: &DynStore, r: StoredRecord) -> StoredRecord {
    apply(store, creation(&r)).await.expect("create record");
    r
}

pub async fn update(store: &DynStore, prev: &StoredRecord, v: Value) -> StoredRecord {
    let next = successor(prev, v);
    apply(store, change(WriteAction::Update, prev, &next)).await.expect("update record");
    next
}

pub async fn get(store: &DynStore, id: Uuid) -> Option<StoredRecord> {
    store.get_record(OBJ, id, &RowScope::All).await.expect("get_record")
}

pub async fn all_audit(store: &DynStore) -> Vec<AuditRow> {
    let mut out: Vec<AuditRow> = Vec::new();
    loop {
        let after = out.last().map(|r| r.seq).unwrap_or(0);
        let page = store.list_audit(after, 1000).await.expect("list_audit");
        if page.is_empty() {
            return out;
        }
        out.extend(page);
    }
}

pub fn query() -> ListQuery {
    let mut q = ListQuery::new(OBJ);
    q.limit = 1000;
    q
}

pub fn field(path: &str, kind: ValueKind) -> Column {
    Column::Field { path: path.split('.').map(str::to_owned).collect(), kind }
}

pub fn col(column: Column, op: FilterOp) -> Filter {
    Filter::Column { column, op }
}

/// Every page of `q`, following cursors; checks each page's size.
pub async fn list_all(store: &DynStore, mut q: ListQuery) -> Vec<StoredRecord> {
    let mut out = Vec::new();
    q.after = None;
    for _ in 0..10_000 {
        let page = store.list_records(&q).await.expect("list_records");
        assert!(page.items.len() <= q.limit as usize, "page larger than the limit");
        out.extend(page.items);
        match page.next {
            Some(cursor) => q.after = Some(cursor),
            None => return out,
        }
    }
    panic!("pagination does not terminate");
}

pub fn id_set(records: &[StoredRecord]) -> BTreeSet<Uuid> {
    records.iter().map(|r| r.id).collect()
}

/// Ids matching `filters` (one page, active records of OBJ).
pub async fn matching(store: &DynStore, filters: Vec<Filter>) -> BTreeSet<Uuid> {
    let mut q = query();
    q.filters = filters;
    let page = store.list_records(&q).await.expect("list_records");
    let count = store.count_records(&q).await.expect("count_records");
    assert_eq!(count as usize, page.items.len(), "count_records disagrees with list_records");
    id_set(&page.items)
}

pub fn ids<const N: usize>(records: [&StoredRecord; N]) -> BTreeSet<Uuid> {
    records.iter().map(|r| r.id).collect()
}

pub fn digest(byte: u8) -> Vec<u8> {
    vec![byte; 32]
}

pub fn key(field: &str, byte: u8) -> FieldDigest {
    FieldDigest { field: field.to_owned(), digest: digest(byte) }
}

/// An active sales rep with a dummy password hash, not yet stored.
pub fn user(name: &str) -> UserRow {
    UserRow {
        id: Uuid::now_v7(),
        username: name.to_owned(),
        display_name: format!("{name} 显示名"),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".to_owned(),
        role: "sales_rep".to_owned(),
        department_id: None,
        team_id: None,
        status: "active".to_owned(),
        created_at: now_micros(),
        email: None,
    }
}

// ---- records: create, read, update, versions --------------------------------------------

pub async fn create_get_update(store: DynStore) {
    assert!(matches!(store.backend(), "sqlite" | "postgres"));
    store.health().await.expect("health");

    let mut r1 = new_record(json!({
        "name": "张三",
        "age": 30,
        "tags": ["vip", "北京"],
        "amount": { "amount": "12.50", "currency": "CNY" },
        "nested": { "a": [1, 2, { "b": null }] },
        "mobile": { "kid": 1, "nonce": "bm9uY2U", "ct": "Y2lwaGVydGV4dA" },
    }));
    r1.owner_id = Some(Uuid::now_v7());
    r1.team_id = Some(Uuid::now_v7());
    r1.created_by = r1.owner_id;
    r1.updated_by = r1.owner_id;
    let w = creation(&r1);
    let first = audit_for(&w);
    let mut second = AuditDraft::new("record.view");
    second.record_id = Some(r1.id);
    let seqs = store
        .write(WriteBatch { records: vec![w], audit: vec![first, second], ..Default::default() })
        .await
        .expect("create");
    assert_eq!(seqs.len(), 2);
    assert_eq!(seqs[1], seqs[0] + 1);

    assert_eq!(get(&store, r1.id).await.as_ref(), Some(&r1));
    assert_eq!(store.get_record("companies", r1.id, &RowScope::All).await.expect("get"), None, "object must match");
    assert_eq!(get(&store, Uuid::now_v7()).await, None);

    let r2 = update(&store, &r1, json!({ "name": "张三", "age": 31 })).await;
    let got = get(&store, r1.id).await.expect("record exists");
    assert_eq!(got, r2);
    assert_eq!(got.version, 2);
    assert_eq!(got.created_at, r1.created_at);
    assert_eq!(got.created_by, r1.created_by);

    let versions = store.list_versions(OBJ, r1.id, 0, 100).await.expect("versions");
    assert_eq!(versions.len(), 2);
    let (v1, v2) = (&versions[0], &versions[1]);
    assert_eq!((v1.version, v1.action, v1.record_id, v1.object.as_str()), (1, WriteAction::Create, r1.id, OBJ));
    assert_eq!(v1.fields, r1.fields);
    assert_eq!((v1.owner_id, v1.team_id, v1.deleted_at), (r1.owner_id, r1.team_id, None));
    assert_eq!((v1.changed_at, v1.changed_by), (r1.updated_at, r1.updated_by));
    assert_eq!((v2.version, v2.action), (2, WriteAction::Update));
    assert_eq!(v2.fields, r2.fields);
    assert_eq!((v2.changed_at, v2.changed_by), (r2.updated_at, r2.updated_by));

    assert_eq!(store.get_version(OBJ, r1.id, 1).await.expect("get_version").as_ref(), Some(v1));
    assert_eq!(store.get_version(OBJ, r1.id, 2).await.expect("get_version").as_ref(), Some(v2));
    assert_eq!(store.get_version(OBJ, r1.id, 3).await.expect("get_version"), None);
    assert_eq!(store.get_version("companies", r1.id, 1).await.expect("get_version"), None);
    assert!(store.list_versions("companies", r1.id, 0, 100).await.expect("versions").is_empty());
}

pub async fn empty_batch_is_a_no_op(store: DynStore) {
    assert_eq!(store.write(WriteBatch::default()).await.expect("empty batch"), Vec::<i64>::new());
    assert!(all_audit(&store).await.is_empty());
    assert_eq!(store.append_audit(Vec::new()).await.expect("empty append"), Vec::<i64>::new());
}

/// The writer counts what it ran (`Store::writer_stats`, exported by `/metrics`): every record
/// write and audit append is one job of some group, concurrent ones share groups, and the
/// groups took time.
pub async fn writer_counts_its_groups_and_time(store: DynStore) {
    let before = store.writer_stats();
    create(&store, json!({ "name": "counted" })).await;
    store.append_audit(vec![AuditDraft::new("counted.read")]).await.expect("append");
    let mut tasks = Vec::new();
    for i in 0..20 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move { create(&store, json!({ "name": format!("c{i}") })).await }));
    }
    for t in tasks {
        t.await.expect("create task");
    }
    // A group is counted right after its jobs are answered: wait for the last one (2 s at most).
    let mut ran = store.writer_stats().since(&before);
    for _ in 0..200 {
        if ran.jobs >= 22 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        ran = store.writer_stats().since(&before);
    }
    assert_eq!(ran.jobs, 22, "{ran:?}");
    assert!((2..=22).contains(&ran.groups), "{ran:?}");
    assert!(ran.busy > std::time::Duration::ZERO, "{ran:?}");
    assert!(store.writer_stats().busy >= ran.busy, "the totals only grow");
}

pub async fn stale_version_conflicts_and_changes_nothing(store: DynStore) {
    let r1 = create(&store, json!({ "name": "v1" })).await;
    let r2 = update(&store, &r1, json!({ "name": "v2" })).await;
    let audit_before = all_audit(&store).await.len();

    let stale = successor(&r1, json!({ "name": "stale" }));
    match apply(&store, change(WriteAction::Update, &r1, &stale)).await {
        Err(StoreError::VersionConflict { current }) => assert_eq!(current, 2),
        other => panic!("expected VersionConflict, got {other:?}"),
    }
    assert_eq!(get(&store, r1.id).await, Some(r2.clone()));
    assert_eq!(store.list_versions(OBJ, r1.id, 0, 100).await.expect("versions").len(), 2);
    assert_eq!(all_audit(&store).await.len(), audit_before, "a failed write appends no audit event");

    // A version from the future conflicts too.
    let mut future = successor(&r2, json!({ "name": "future" }));
    future.version = 10;
    let mut w = change(WriteAction::Update, &r2, &future);
    w.expected_version = Some(9);
    assert!(matches!(apply(&store, w).await, Err(StoreError::VersionConflict { current: 2 })));

    // Updating a record that does not exist, or under another object, is NotFound.
    let ghost = new_record(json!({ "name": "ghost" }));
    let next = successor(&ghost, json!({ "name": "ghost 2" }));
    assert!(matches!(apply(&store, change(WriteAction::Update, &ghost, &next)).await, Err(StoreError::NotFound)));
    let mut elsewhere = successor(&r2, json!({ "name": "elsewhere" }));
    elsewhere.object = "companies".into();
    let mut prev_elsewhere = r2.clone();
    prev_elsewhere.object = "companies".into();
    assert!(matches!(
        apply(&store, change(WriteAction::Update, &prev_elsewhere, &elsewhere)).await,
        Err(StoreError::NotFound)
    ));

    // Creating an id that exists is AlreadyExists and changes nothing.
    let mut dup = new_record(json!({ "name": "dup" }));
    dup.id = r1.id;
    assert!(matches!(apply(&store, creation(&dup)).await, Err(StoreError::AlreadyExists(_))));
    assert_eq!(get(&store, r1.id).await, Some(r2));
    assert_eq!(all_audit(&store).await.len(), audit_before);
}

pub async fn concurrent_updates_one_wins(store: DynStore) {
    let r1 = create(&store, json!({ "name": "start" })).await;
    let mut tasks = Vec::new();
    for i in 0..10 {
        let store = store.clone();
        let r1 = r1.clone();
        tasks.push(tokio::spawn(async move {
            let next = successor(&r1, json!({ "name": format!("writer {i}") }));
            apply(&store, change(WriteAction::Update, &r1, &next)).await.map(|_| next)
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        match t.await.expect("task") {
            Ok(next) => winners.push(next),
            Err(StoreError::VersionConflict { current }) => assert_eq!(current, 2),
            Err(e) => panic!("unexpected error {e:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one writer with the same expected version wins");
    assert_eq!(get(&store, r1.id).await.as_ref(), Some(&winners[0]));
    assert_eq!(store.list_versions(OBJ, r1.id, 0, 100).await.expect("versions").len(), 2);
    assert_eq!(all_audit(&store).await.len(), 2);
}

pub async fn concurrent_creates_of_one_id_one_wins(store: DynStore) {
    let id = Uuid::now_v7();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut r = new_record(json!({ "name": format!("creator {i}") }));
            r.id = id;
            apply(&store, creation(&r)).await.map(|_| r)
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        match t.await.expect("task") {
            Ok(r) => winners.push(r),
            Err(StoreError::AlreadyExists(_)) => {}
            Err(e) => panic!("unexpected error {e:?}"),
        }
    }
    assert_eq!(winners.len(), 1);
    assert_eq!(get(&store, id).await.as_ref(), Some(&winners[0]));
    assert_eq!(all_audit(&store).await.len(), 1);
}

pub async fn delete_and_restore_keep_id(store: DynStore) {
    let r1 = new_record(json!({ "name": "to delete", "mobile": "envelope" }));
    let mut w = creation(&r1);
    w.unique_keys = vec![key("mobile", 1)];
    w.blind_indexes = vec![key("mobile", 1)];
    apply(&store, w).await.expect("create");
    let other = create(&store, json!({ "name": "stays" })).await;

    let mut deleted = successor(&r1, Value::Object(r1.fields.clone()));
    deleted.deleted_at = Some(deleted.updated_at);
    let mut w = change(WriteAction::Delete, &r1, &deleted);
    w.blind_indexes = vec![key("mobile", 1)];
    apply(&store, w).await.expect("delete");

    // Still readable by id, with its deletion time.
    assert_eq!(get(&store, r1.id).await.as_ref(), Some(&deleted));
    let listed = |deleted_filter| {
        let store = store.clone();
        async move {
            let mut q = query();
            q.deleted = deleted_filter;
            let count = store.count_records(&q).await.expect("count");
            let items = list_all(&store, q).await;
            assert_eq!(count as usize, items.len());
            id_set(&items)
        }
    };
    assert_eq!(listed(DeletedFilter::Active).await, ids([&other]));
    assert_eq!(listed(DeletedFilter::Deleted).await, ids([&r1]));
    assert_eq!(listed(DeletedFilter::All).await, ids([&r1, &other]));
    assert_eq!(store.existing_ids(OBJ, &[r1.id, other.id]).await.expect("existing"), vec![other.id]);
    assert!(store.find_by_blind_index(OBJ, "mobile", &digest(1), 10).await.expect("blind").is_empty());

    let mut restored = successor(&deleted, Value::Object(r1.fields.clone()));
    restored.deleted_at = None;
    let mut w = change(WriteAction::Restore, &deleted, &restored);
    w.unique_keys = vec![key("mobile", 1)];
    w.blind_indexes = vec![key("mobile", 1)];
    apply(&store, w).await.expect("restore");
    let got = get(&store, r1.id).await.expect("restored record");
    assert_eq!(got, restored);
    assert_eq!((got.id, got.version, got.deleted_at), (r1.id, 3, None));
    assert_eq!(listed(DeletedFilter::Active).await, ids([&r1, &other]));
    assert_eq!(store.find_by_blind_index(OBJ, "mobile", &digest(1), 10).await.expect("blind"), vec![r1.id]);

    let versions = store.list_versions(OBJ, r1.id, 0, 100).await.expect("versions");
    let actions: Vec<_> = versions.iter().map(|v| v.action).collect();
    assert_eq!(actions, vec![WriteAction::Create, WriteAction::Delete, WriteAction::Restore]);
    assert_eq!(versions[1].deleted_at, deleted.deleted_at);
    assert_eq!(versions[2].deleted_at, None);
}

pub async fn versions_are_listed_and_paged(store: DynStore) {
    let mut r = create(&store, json!({ "n": 1 })).await;
    for n in 2..=6 {
        r = update(&store, &r, json!({ "n": n })).await;
    }
    let all = store.list_versions(OBJ, r.id, 0, 100).await.expect("versions");
    assert_eq!(all.iter().map(|v| v.version).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5, 6]);
    for v in &all {
        assert_eq!(v.fields.get("n"), Some(&json!(v.version)));
    }
    let page = store.list_versions(OBJ, r.id, 2, 2).await.expect("versions");
    assert_eq!(page.iter().map(|v| v.version).collect::<Vec<_>>(), vec![3, 4]);
    assert!(store.list_versions(OBJ, r.id, 6, 10).await.expect("versions").is_empty());
    assert!(store.list_versions(OBJ, Uuid::now_v7(), 0, 10).await.expect("versions").is_empty());
}

pub async fn version_at_finds_the_version_of_a_time(store: DynStore) {
    let mut r = create(&store, json!({ "n": 1 })).await;
    for n in 2..=40 {
        r = update(&store, &r, json!({ "n": n })).await;
    }
    let all = store.list_versions(OBJ, r.id, 0, 100).await.expect("versions");
    assert_eq!(all.len(), 40);
    let first = all[0].changed_at;
    assert_eq!(store.version_at(OBJ, r.id, first - 1).await.expect("version_at"), None);
    for v in &all {
        // Exactly at a version's time, and just before the next one's.
        assert_eq!(store.version_at(OBJ, r.id, v.changed_at).await.expect("version_at").as_ref(), Some(v));
        let next = all.iter().find(|n| n.version == v.version + 1).map_or(i64::MAX, |n| n.changed_at);
        assert_eq!(store.version_at(OBJ, r.id, next - 1).await.expect("version_at").as_ref(), Some(v));
    }
    assert_eq!(store.version_at(OBJ, r.id, i64::MAX).await.expect("version_at").map(|v| v.version), Some(40));
    // Another object, another record: nothing.
    assert_eq!(store.version_at("companies", r.id, i64::MAX).await.expect("version_at"), None);
    assert_eq!(store.version_at(OBJ, Uuid::now_v7(), i64::MAX).await.expect("version_at"), None);
}

// ---- unique keys and atomicity -------------------------------------------------------------

pub async fn unique_keys_are_enforced_and_freed(store: DynStore) {
    let a = new_record(json!({ "name": "A" }));
    let mut w = creation(&a);
    w.unique_keys = vec![key("mobile", 7)];
    apply(&store, w).await.expect("create A");
    let audit_before = all_audit(&store).await.len();

    let b = new_record(json!({ "name": "B" }));
    let mut wb = creation(&b);
    wb.unique_keys = vec![key("mobile", 7)];
    match apply(&store, wb.clone()).await {
        Err(StoreError::UniqueViolation { object, field, holder }) => {
            assert_eq!((object.as_str(), field.as_str(), holder), (OBJ, "mobile", Some(a.id)));
        }
        other => panic!("expected UniqueViolation, got {other:?}"),
    }
    assert_eq!(get(&store, b.id).await, None, "the refused record is not written");
    assert!(store.list_versions(OBJ, b.id, 0, 10).await.expect("versions").is_empty());
    assert_eq!(all_audit(&store).await.len(), audit_before);

    // The same digest under another field or another object is a different value.
    let c = new_record(json!({ "name": "C" }));
    let mut wc = creation(&c);
    wc.unique_keys = vec![key("email", 7)];
    apply(&store, wc).await.expect("other field");
    let d = new_record_of("companies", json!({ "name": "D" }));
    let mut wd = creation(&d);
    wd.unique_keys = vec![key("mobile", 7)];
    apply(&store, wd).await.expect("other object");

    // A keeps its own value across an update; listing a value twice is harmless.
    let a2 = successor(&a, json!({ "name": "A2" }));
    let mut w = change(WriteAction::Update, &a, &a2);
    w.unique_keys = vec![key("mobile", 7), key("mobile", 7)];
    apply(&store, w).await.expect("update keeping the key");

    // Deleting A frees the value (the delete carries no unique keys); B can now take it.
    let mut a3 = successor(&a2, json!({ "name": "A2" }));
    a3.deleted_at = Some(a3.updated_at);
    apply(&store, change(WriteAction::Delete, &a2, &a3)).await.expect("delete A");
    apply(&store, wb).await.expect("B takes the freed value");

    // Restoring A with the value now fails and leaves A deleted.
    let mut a4 = successor(&a3, json!({ "name": "A2" }));
    a4.deleted_at = None;
    let mut w = change(WriteAction::Restore, &a3, &a4);
    w.unique_keys = vec![key("mobile", 7)];
    match apply(&store, w).await {
        Err(StoreError::UniqueViolation { holder, .. }) => assert_eq!(holder, Some(b.id)),
        other => panic!("expected UniqueViolation, got {other:?}"),
    }
    assert_eq!(get(&store, a.id).await.expect("A").deleted_at, a3.deleted_at);

    // An update that drops a value frees it too.
    let b2 = successor(&b, json!({ "name": "B2" }));
    apply(&store, change(WriteAction::Update, &b, &b2)).await.expect("B drops the value");
    let e = new_record(json!({ "name": "E" }));
    let mut we = creation(&e);
    we.unique_keys = vec![key("mobile", 7)];
    apply(&store, we).await.expect("E takes the value");
}

pub async fn concurrent_unique_claims_one_wins(store: DynStore) {
    let mut tasks = Vec::new();
    for i in 0..10 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let r = new_record(json!({ "name": format!("claimant {i}") }));
            let mut w = creation(&r);
            w.unique_keys = vec![key("uscc", 42)];
            (r.id, apply(&store, w).await)
        }));
    }
    let mut winners = Vec::new();
    let mut holders = Vec::new();
    for t in tasks {
        let (id, result) = t.await.expect("task");
        match result {
            Ok(_) => winners.push(id),
            Err(StoreError::UniqueViolation { holder, .. }) => holders.push(holder),
            Err(e) => panic!("unexpected error {e:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one concurrent claimant holds a unique value");
    assert!(holders.iter().all(|h| *h == Some(winners[0])), "losers are told who holds the value: {holders:?}");
    let listed = list_all(&store, query()).await;
    assert_eq!(listed.len(), 1);
}

/// The background job that runs a duplicate scan.
pub fn scan_job_queued(job: &custodian_store::ScanJobRow) -> custodian_store::JobRow {
    let params = json!({ "scan_job_id": job.id });
    custodian_store::JobRow::pending(
        custodian_store::JOB_DUPLICATE_SCAN,
        &job.object,
        params,
        job.requested_by,
        job.created_at,
    )
}

/// A finished scan job proposing the pair `a`, `b` (the cluster named after `a`) as one open
/// candidate, which is returned.
async fn propose_pair(store: &DynStore, a: Uuid, b: Uuid, score: f64, reasons: Value) -> custodian_store::CandidateRow {
    let mut proposed = propose_pairs(store, &[(a, b)], score, reasons).await;
    proposed.remove(0)
}

/// A finished scan job proposing each pair (the cluster named after the first pair's first
/// record) as an open candidate; returns them in order.
async fn propose_pairs(
    store: &DynStore,
    pairs: &[(Uuid, Uuid)],
    score: f64,
    reasons: Value,
) -> Vec<custodian_store::CandidateRow> {
    use custodian_store::{CandidateRow, ScanJobRow};
    let job = ScanJobRow {
        id: Uuid::now_v7(),
        object: OBJ.into(),
        status: "running".into(),
        requested_by: None,
        created_at: now_micros(),
        finished_at: None,
        records: 2,
        pairs: pairs.len() as i64,
        error: None,
        auto_merge: None,
    };
    store.create_scan_job(job.clone(), scan_job_queued(&job), AuditDraft::new("duplicates.scan")).await.expect("job");
    let candidates: Vec<CandidateRow> = pairs
        .iter()
        .map(|&(a, b)| CandidateRow {
            id: Uuid::now_v7(),
            object: OBJ.into(),
            job_id: job.id,
            cluster_id: pairs[0].0,
            record_a: a.min(b),
            record_b: a.max(b),
            score,
            reasons: reasons.clone(),
            status: "open".into(),
            created_at: now_micros(),
            decided_at: None,
            decided_by: None,
            merge_id: None,
        })
        .collect();
    store.finish_scan_job(ScanJobRow { status: "done".into(), ..job }, candidates.clone()).await.expect("finish");
    candidates
}

/// A create whose write introduces strong key `byte` (blind index and exclusive key).
fn strong_creation(name: &str, byte: u8) -> (StoredRecord, RecordWrite) {
    let r = new_record(json!({ "name": name }));
    let mut w = creation(&r);
    w.blind_indexes = vec![key("mobile", byte)];
    w.exclusive_keys = vec![key("mobile", byte)];
    (r, w)
}

pub async fn exclusive_keys_refuse_a_second_active_holder(store: DynStore) {
    use custodian_store::DismissalRow;
    let (a, wa) = strong_creation("A", 11);
    apply(&store, wa).await.expect("A introduces the key");
    let audit_before = all_audit(&store).await.len();

    // A second record introducing the same key is refused, naming the holder; nothing is written.
    let (b, wb) = strong_creation("B", 11);
    match apply(&store, wb.clone()).await {
        Err(StoreError::UniqueViolation { object, field, holder }) => {
            assert_eq!((object.as_str(), field.as_str(), holder), (OBJ, "mobile", Some(a.id)));
        }
        other => panic!("expected UniqueViolation, got {other:?}"),
    }
    assert_eq!(get(&store, b.id).await, None);
    assert_eq!(all_audit(&store).await.len(), audit_before);
    assert_eq!(store.find_by_blind_index(OBJ, "mobile", &digest(11), 10).await.expect("lookup"), vec![a.id]);

    // Two writes of one batch introducing the same key: the batch fails as a whole.
    let (c, wc) = strong_creation("C", 12);
    let (d, wd) = strong_creation("D", 12);
    let batch =
        WriteBatch { audit: vec![audit_for(&wc), audit_for(&wd)], records: vec![wc.clone(), wd], ..Default::default() };
    assert!(matches!(store.write(batch).await, Err(StoreError::UniqueViolation { .. })));
    assert_eq!((get(&store, c.id).await, get(&store, d.id).await), (None, None));

    // The same digest under another field or another object is another key.
    let mut other_field = strong_creation("E", 11).1;
    other_field.blind_indexes = vec![key("email", 11)];
    other_field.exclusive_keys = vec![key("email", 11)];
    apply(&store, other_field).await.expect("other field");
    let mut other_object = creation(&new_record_of("leads", json!({ "name": "F" })));
    other_object.blind_indexes = vec![key("mobile", 11)];
    other_object.exclusive_keys = vec![key("mobile", 11)];
    apply(&store, other_object).await.expect("other object");

    // A write that keeps a key without introducing it (say, undoing a merge) may share it.
    let mut keeps = creation(&b);
    keeps.blind_indexes = vec![key("mobile", 11)];
    apply(&store, keeps).await.expect("a shared key not introduced by the write");
    // A record may re-introduce its own key; with another active holder around it may not.
    let a2 = successor(&a, json!({ "name": "A2" }));
    let mut w = change(WriteAction::Update, &a, &a2);
    w.blind_indexes = vec![key("mobile", 11)];
    w.exclusive_keys = vec![key("mobile", 11)];
    match apply(&store, w.clone()).await {
        Err(StoreError::UniqueViolation { holder, .. }) => assert_eq!(holder, Some(b.id)),
        other => panic!("expected UniqueViolation, got {other:?}"),
    }

    // A deleted holder holds nothing: once B is deleted, A may re-introduce the key.
    let mut b2 = successor(&b, json!({ "name": "B" }));
    b2.deleted_at = Some(b2.updated_at);
    let mut del = change(WriteAction::Delete, &b, &b2);
    del.blind_indexes = vec![key("mobile", 11)];
    apply(&store, del).await.expect("delete B");
    apply(&store, w).await.expect("A alone holds the key");

    // A pair a steward dismissed as "not a duplicate" may share the key.
    let (g, wg) = strong_creation("G", 13);
    apply(&store, wg).await.expect("G");
    let h = create(&store, json!({ "name": "H" })).await;
    let candidate = propose_pair(&store, g.id.min(h.id), g.id.max(h.id), 0.9, json!(["name:similar"])).await;
    let h2 = successor(&h, json!({ "name": "H" }));
    let mut takes = change(WriteAction::Update, &h, &h2);
    takes.blind_indexes = vec![key("mobile", 13)];
    takes.exclusive_keys = vec![key("mobile", 13)];
    assert!(matches!(apply(&store, takes.clone()).await, Err(StoreError::UniqueViolation { .. })));
    let dismissal = DismissalRow {
        object: OBJ.into(),
        record_a: g.id.max(h.id),
        record_b: g.id.min(h.id),
        reason: "同一部手机的两个人".into(),
        decided_by: None,
        decided_at: now_micros(),
    };
    store.dismiss_candidate(candidate.id, dismissal, AuditDraft::new("duplicates.dismiss")).await.expect("dismiss");
    apply(&store, takes).await.expect("a dismissed pair shares the key");
}

/// Undoing a merge brings back records that shared a strong key before the merge: they may
/// share it again, but a record outside the undo that took the key since still refuses it at
/// commit (also when it took it after the undo was prepared), nothing written.
pub async fn an_undo_shares_strong_keys_only_among_its_own_records(store: DynStore) {
    use custodian_store::{MergeChange, MergeRow};
    let (survivor, ws) = strong_creation("S", 41);
    apply(&store, ws).await.expect("survivor");
    let loser = create(&store, json!({ "name": "L" })).await;
    let row = |id: Uuid| MergeRow {
        id,
        object: OBJ.into(),
        survivor_id: survivor.id,
        loser_ids: vec![loser.id],
        records: json!([]),
        request: json!({}),
        created_at: now_micros(),
        created_by: None,
        undone_at: None,
        undone_by: None,
    };
    let merged = |id: Uuid| WriteBatch {
        audit: vec![AuditDraft::new("record.merge")],
        merge: Some(MergeChange::Record(Box::new(row(id)))),
        ..Default::default()
    };
    // The undo gives the loser back the survivor's key (as before the merge).
    let undo = |id: Uuid, loser_now: &StoredRecord| {
        let back = successor(loser_now, json!({ "name": "L" }));
        let mut w = change(WriteAction::Update, loser_now, &back);
        w.blind_indexes = vec![key("mobile", 41)];
        w.exclusive_keys = vec![key("mobile", 41)];
        let s2 = successor(&survivor, json!({ "name": "S" }));
        let mut ws = change(WriteAction::Update, &survivor, &s2);
        ws.blind_indexes = vec![key("mobile", 41)];
        ws.exclusive_keys = vec![key("mobile", 41)];
        WriteBatch {
            audit: vec![audit_for(&w), audit_for(&ws), AuditDraft::new("record.unmerge")],
            records: vec![w, ws],
            merge: Some(MergeChange::Undo { id, undone_at: now_micros(), undone_by: None }),
            ..Default::default()
        }
    };
    // Another record took the key: the undo is refused, naming it, and changes nothing.
    let first = Uuid::now_v7();
    store.write(merged(first)).await.expect("merge");
    let (taker, wt) = strong_creation("T", 41);
    let mut wt = wt;
    wt.exclusive_keys.clear(); // stored as a holder without claiming (as before this rule)
    apply(&store, wt).await.expect("taker");
    match store.write(undo(first, &loser)).await {
        Err(StoreError::UniqueViolation { holder, .. }) => assert_eq!(holder, Some(taker.id)),
        other => panic!("expected UniqueViolation, got {other:?}"),
    }
    assert_eq!(store.get_merge(first).await.expect("get").expect("merge").undone_at, None);
    assert_eq!(get(&store, loser.id).await.expect("loser").version, loser.version);
    // Without the taker the undo's own records share the key again.
    let t_now = get(&store, taker.id).await.expect("taker");
    let mut gone = successor(&t_now, json!({ "name": "T" }));
    gone.deleted_at = Some(gone.updated_at);
    apply(&store, change(WriteAction::Delete, &t_now, &gone)).await.expect("delete taker");
    store.write(undo(first, &loser)).await.expect("the undo's records share the key");
    let mut holders = store.find_by_blind_index(OBJ, "mobile", &digest(41), 10).await.expect("lookup");
    holders.sort();
    let mut expected = vec![survivor.id, loser.id];
    expected.sort();
    assert_eq!(holders, expected);
}

pub async fn concurrent_exclusive_claims_one_wins(store: DynStore) {
    let mut tasks = Vec::new();
    for i in 0..12 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            // Half of the claimants also write an unrelated record in the same batch.
            let (r, w) = strong_creation(&format!("claimant {i}"), 21);
            let mut records = vec![w];
            if i % 2 == 0 {
                records.push(creation(&new_record(json!({ "name": format!("bystander {i}") }))));
            }
            let audit = records.iter().map(audit_for).collect();
            (r.id, store.write(WriteBatch { records, audit, ..Default::default() }).await)
        }));
    }
    let mut winners = Vec::new();
    let mut holders = Vec::new();
    for t in tasks {
        let (id, result) = t.await.expect("task");
        match result {
            Ok(_) => winners.push(id),
            Err(StoreError::UniqueViolation { holder, .. }) => holders.push(holder),
            Err(e) => panic!("unexpected error {e:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one concurrent claimant introduces a strong key");
    assert!(holders.iter().all(|h| *h == Some(winners[0])), "losers are told who holds the key: {holders:?}");
    assert_eq!(store.find_by_blind_index(OBJ, "mobile", &digest(21), 20).await.expect("lookup"), winners);
}

/// Writes submitted together may be committed together (group commit): one that fails must
/// fail alone, with its own precise error, and leave every other write applied in full —
/// record, version, blind indexes, unique keys, search text and audit event.
pub async fn failing_write_fails_alone_among_concurrent_writes(store: DynStore) {
    let mut stale = Vec::new();
    for i in 0..5 {
        let r = create(&store, json!({ "name": format!("stale {i}") })).await;
        update(&store, &r, json!({ "name": format!("moved on {i}") })).await;
        stale.push(r);
    }
    let holder = new_record(json!({ "name": "holder" }));
    let mut w = creation(&holder);
    w.unique_keys = vec![key("uscc", 200)];
    apply(&store, w).await.expect("holder");
    let events_before = all_audit(&store).await.len();

    let mut tasks = Vec::new();
    for i in 0..30u8 {
        let store = store.clone();
        let stale = stale.clone();
        tasks.push(tokio::spawn(async move {
            let (w, expect_ok) = match i {
                0..=4 => {
                    let prev = &stale[usize::from(i)];
                    let next = successor(prev, json!({ "name": "lost update" }));
                    (change(WriteAction::Update, prev, &next), false)
                }
                5 => {
                    let r = new_record(json!({ "name": "clashes with holder" }));
                    let mut w = creation(&r);
                    w.unique_keys = vec![key("uscc", 200)];
                    (w, false)
                }
                _ => {
                    let r = new_record(json!({ "name": format!("并发写入 {i}") }));
                    let mut w = creation(&r);
                    w.blind_indexes = vec![key("mobile", i)];
                    w.unique_keys = vec![key("uscc", i)];
                    (w, true)
                }
            };
            let audit = audit_for(&w);
            let result =
                store.write(WriteBatch { records: vec![w.clone()], audit: vec![audit], ..Default::default() }).await;
            (i, w, expect_ok, result)
        }));
    }
    let mut committed = 0;
    for t in tasks {
        let (i, w, expect_ok, result) = t.await.expect("task");
        match (expect_ok, result) {
            (true, Ok(seqs)) => {
                assert_eq!(seqs.len(), 1);
                committed += 1;
                let stored = get(&store, w.record.id).await.expect("committed record is readable");
                assert_eq!(stored.fields, w.record.fields);
                let v = store.get_version(OBJ, w.record.id, 1).await.expect("version").expect("version 1 exists");
                assert_eq!(v.fields, w.record.fields);
                let found = store.find_by_blind_index(OBJ, "mobile", &digest(i), 10).await.expect("lookup");
                assert_eq!(found, vec![w.record.id], "blind index of write {i}");
                let mut q = query();
                q.search = query_tokens(&format!("并发写入 {i}"));
                assert!(list_all(&store, q).await.iter().any(|r| r.id == w.record.id), "search finds write {i}");
                let mut again = creation(&new_record(json!({ "name": "second claim" })));
                again.unique_keys = vec![key("uscc", i)];
                assert!(matches!(apply(&store, again).await, Err(StoreError::UniqueViolation { .. })));
            }
            (false, Err(StoreError::VersionConflict { current })) if i < 5 => assert_eq!(current, 2),
            (false, Err(StoreError::UniqueViolation { holder: h, .. })) if i == 5 => assert_eq!(h, Some(holder.id)),
            (expect_ok, other) => panic!("write {i} (expected ok: {expect_ok}) gave {other:?}"),
        }
    }
    assert_eq!(committed, 24);
    for r in &stale {
        assert_eq!(get(&store, r.id).await.expect("stale record").version, 2, "a refused update changed nothing");
    }
    let rows = all_audit(&store).await;
    assert_eq!(rows.len(), events_before + 24, "one event per committed write, none for refused ones");
    verify_chain(0, &GENESIS_HASH, &rows).expect("the chain verifies");
}

pub async fn batch_is_atomic(store: DynStore) {
    let a = create(&store, json!({ "name": "A" })).await;
    let b = create(&store, json!({ "name": "B" })).await;
    let _b2 = update(&store, &b, json!({ "name": "B2" })).await;
    let audit_before = all_audit(&store).await;

    // The second write is stale: the first must not be applied, no audit event appended.
    let a2 = successor(&a, json!({ "name": "A changed" }));
    let stale_b = successor(&b, json!({ "name": "B stale" }));
    let w1 = change(WriteAction::Update, &a, &a2);
    let w2 = change(WriteAction::Update, &b, &stale_b);
    let batch = WriteBatch { audit: vec![audit_for(&w1), audit_for(&w2)], records: vec![w1, w2], ..Default::default() };
    assert!(matches!(store.write(batch).await, Err(StoreError::VersionConflict { current: 2 })));
    assert_eq!(get(&store, a.id).await, Some(a.clone()));
    assert_eq!(store.list_versions(OBJ, a.id, 0, 10).await.expect("versions").len(), 1);
    assert_eq!(all_audit(&store).await, audit_before);

    // A create followed by a unique violation: the create is rolled back with it.
    let holder = new_record(json!({ "name": "holder" }));
    let mut wh = creation(&holder);
    wh.unique_keys = vec![key("email", 9)];
    apply(&store, wh).await.expect("holder");
    let audit_before = all_audit(&store).await;
    let c = new_record(json!({ "name": "C" }));
    let mut wc = creation(&c);
    wc.unique_keys = vec![key("mobile", 3)];
    wc.blind_indexes = vec![key("mobile", 3)];
    let d = new_record(json!({ "name": "D" }));
    let mut wd = creation(&d);
    wd.unique_keys = vec![key("email", 9)];
    let batch =
        WriteBatch { audit: vec![audit_for(&wc), audit_for(&wd)], records: vec![wc.clone(), wd], ..Default::default() };
    assert!(matches!(store.write(batch).await, Err(StoreError::UniqueViolation { .. })));
    assert_eq!(get(&store, c.id).await, None);
    assert_eq!(get(&store, d.id).await, None);
    assert!(store.find_by_blind_index(OBJ, "mobile", &digest(3), 10).await.expect("blind").is_empty());
    assert_eq!(all_audit(&store).await, audit_before);
    // C's unique value was not left claimed by the rolled-back batch.
    apply(&store, wc).await.expect("C alone");
}

pub async fn batch_applies_writes_in_order(store: DynStore) {
    let a = new_record(json!({ "name": "A" }));
    let a2 = successor(&a, json!({ "name": "A2" }));
    let w1 = creation(&a);
    let w2 = change(WriteAction::Update, &a, &a2);
    let b = new_record(json!({ "name": "B" }));
    let w3 = creation(&b);
    let audit = vec![audit_for(&w1), audit_for(&w2), audit_for(&w3)];
    let seqs = store.write(WriteBatch { records: vec![w1, w2, w3], audit, ..Default::default() }).await.expect("batch");
    assert_eq!(seqs.len(), 3);
    assert!(seqs.windows(2).all(|p| p[1] == p[0] + 1));
    assert_eq!(get(&store, a.id).await, Some(a2));
    assert_eq!(get(&store, b.id).await, Some(b));
    assert_eq!(store.list_versions(OBJ, a.id, 0, 10).await.expect("versions").len(), 2);
}

// ---- audit ------------------------------------------------------------------------------

pub async fn audit_rows_round_trip(store: DynStore) {
    let mut d1 = AuditDraft::new("login.success");
    d1.actor_id = Some(Uuid::now_v7());
    d1.object = Some("users".into());
    d1.record_id = d1.actor_id;
    d1.request_id = Some("req-1".into());
    d1.ip = Some("203.0.113.7".into());
    d1.user_agent = Some("Mozilla/5.0 \"quoted\" 浏览器".into());
    d1.details = json!({ "ids": [1, 2, 3], "reason": "登录成功", "nested": { "k": null } });
    let d2 = AuditDraft::new("record.list");
    let seqs = store.append_audit(vec![d1.clone(), d2.clone()]).await.expect("append");
    assert_eq!(seqs, vec![1, 2]);

    let rows = store.list_audit(0, 10).await.expect("list_audit");
    assert_eq!(rows.len(), 2);
    let (r1, r2) = (&rows[0], &rows[1]);
    assert_eq!((r1.seq, r1.at, r1.actor_id, r1.action.as_str()), (1, d1.at, d1.actor_id, "login.success"));
    assert_eq!((r1.object.as_deref(), r1.record_id), (Some("users"), d1.record_id));
    assert_eq!(r1.body, d1.canonical_body());
    assert_eq!(r1.prev_hash, GENESIS_HASH.to_vec());
    assert_eq!(r1.hash.len(), 32);
    assert_eq!((r2.seq, r2.body.clone()), (2, d2.canonical_body()));
    assert_eq!(r2.prev_hash, r1.hash);
    let head = verify_chain(0, &GENESIS_HASH, &rows).expect("chain verifies");
    assert_eq!(head, r2.hash);

    assert_eq!(store.list_audit(1, 10).await.expect("list_audit").len(), 1);
    assert_eq!(store.list_audit(0, 1).await.expect("list_audit").len(), 1);
    assert!(store.list_audit(2, 10).await.expect("list_audit").is_empty());

    // The verifier names a tampered entry.
    let mut tampered = rows.clone();
    tampered[0].body = tampered[0].body.replace("登录成功", "登录失败");
    assert_eq!(verify_chain(0, &GENESIS_HASH, &tampered), Err(1));

    // Events written with records and with people join the same chain.
    create(&store, json!({ "name": "x" })).await;
    let u = user("auditee");
    store.create_user(u, AuditDraft::new("user.create")).await.expect("user");
    let rows = all_audit(&store).await;
    assert_eq!(rows.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
    verify_chain(0, &GENESIS_HASH, &rows).expect("chain verifies");
}

pub async fn audit_chain_is_linear_under_concurrency(store: DynStore) {
    let mut tasks = Vec::new();
    for task in 0..20 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut written: Vec<(i64, AuditDraft)> = Vec::new();
            let r = new_record(json!({ "name": format!("task {task}") }));
            let w = creation(&r);
            let mut extra = AuditDraft::new("record.view");
            extra.details = json!({ "task": task, "step": "create-extra" });
            let drafts = vec![audit_for(&w), extra];
            let seqs = store
                .write(WriteBatch { records: vec![w], audit: drafts.clone(), ..Default::default() })
                .await
                .expect("create");
            written.extend(seqs.into_iter().zip(drafts));

            let next = successor(&r, json!({ "name": format!("task {task} updated") }));
            let w = change(WriteAction::Update, &r, &next);
            let drafts = vec![audit_for(&w)];
            let seqs = store
                .write(WriteBatch { records: vec![w], audit: drafts.clone(), ..Default::default() })
                .await
                .expect("update");
            written.extend(seqs.into_iter().zip(drafts));

            let mut read = AuditDraft::new("record.list");
            read.details = json!({ "task": task, "step": "list" });
            let seqs = store.append_audit(vec![read.clone()]).await.expect("append");
            written.extend(seqs.into_iter().zip([read]));
            written
        }));
    }
    let mut written: HashMap<i64, AuditDraft> = HashMap::new();
    for t in tasks {
        for (seq, draft) in t.await.expect("task") {
            assert!(written.insert(seq, draft).is_none(), "sequence number {seq} handed out twice");
        }
    }
    assert_eq!(written.len(), 80);
    let rows = all_audit(&store).await;
    assert_eq!(rows.iter().map(|r| r.seq).collect::<Vec<_>>(), (1..=80).collect::<Vec<_>>(), "no gaps, no forks");
    verify_chain(0, &GENESIS_HASH, &rows).expect("the chain verifies");
    for row in &rows {
        let draft = written.get(&row.seq).expect("every stored event was returned to its writer");
        assert_eq!(row.body, draft.canonical_body(), "seq {} holds the body its writer was told", row.seq);
    }
}

pub async fn audit_chain_streams_raw_rows(store: DynStore) {
    use futures::TryStreamExt;
    assert!(store.audit_chain(0, None).try_collect::<Vec<_>>().await.expect("empty chain").is_empty());
    assert_eq!(store.audit_max_seq().await.expect("max seq"), 0);
    let mut d = AuditDraft::new("record.view");
    d.actor_id = Some(Uuid::now_v7());
    d.object = Some(OBJ.into());
    d.record_id = Some(Uuid::now_v7());
    d.request_id = Some("req-7".into());
    d.details = json!({ "fields": ["name", "mobile"], "note": "见过 \"quoted\"" });
    store.append_audit(vec![d.clone(), AuditDraft::new("record.list"), AuditDraft::new("x")]).await.expect("append");
    let listed = store.list_audit(0, 10).await.expect("list_audit");
    let raw: Vec<_> = store.audit_chain(0, None).try_collect().await.expect("chain");
    assert_eq!(raw.len(), 3);
    for (r, l) in raw.iter().zip(&listed) {
        assert_eq!(r.seq, l.seq);
        assert_eq!(r.at, Some(l.at));
        assert_eq!(r.action.as_deref(), Some(l.action.as_str()));
        assert_eq!(r.actor_id, l.actor_id.map(|u| u.to_string()));
        assert_eq!(r.object, l.object);
        assert_eq!(r.record_id, l.record_id.map(|u| u.to_string()));
        assert_eq!(r.body.as_deref(), Some(l.body.as_bytes()));
        assert_eq!(r.prev_hash.as_deref(), Some(l.prev_hash.as_slice()));
        assert_eq!(r.hash.as_deref(), Some(l.hash.as_slice()));
    }
    assert_eq!(raw[0].request_id.as_deref(), Some("req-7"));
    assert_eq!(raw[1].actor_id, None);
    assert_eq!(store.audit_max_seq().await.expect("max seq"), 3);
    let all: Vec<_> = store.audit_chain(i64::MIN, None).try_collect().await.expect("chain");
    assert_eq!(all.len(), 3);
    let middle: Vec<_> = store.audit_chain(1, Some(2)).try_collect().await.expect("chain");
    assert_eq!(middle.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![2]);
    let tail: Vec<_> = store.audit_chain(2, None).try_collect().await.expect("chain");
    assert_eq!(tail.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![3]);
}

/// A chain longer than what one statement reads (the SQLite store reads it 10,000 events at a
/// time) streams every event once, in order, from any start to any end, and the chain verifies.
pub async fn audit_chain_streams_a_long_log_whole(store: DynStore) {
    use futures::TryStreamExt;
    let drafts: Vec<AuditDraft> = (0..25_001).map(|i| AuditDraft::new(format!("record.view.{}", i % 7))).collect();
    store.append_audit(drafts).await.expect("append");
    let seqs = |rows: Vec<custodian_store::AuditChainRow>| rows.iter().map(|r| r.seq).collect::<Vec<_>>();
    let all: Vec<_> = store.audit_chain(0, None).try_collect().await.expect("chain");
    assert_eq!(seqs(all), (1..=25_001).collect::<Vec<i64>>());
    for (after, through) in [(5, Some(20_005)), (9_999, Some(10_001)), (10_000, None), (20_000, Some(30_000))] {
        let part: Vec<_> = store.audit_chain(after, through).try_collect().await.expect("part");
        let end = through.unwrap_or(i64::MAX).min(25_001);
        assert_eq!(seqs(part), (after + 1..=end).collect::<Vec<i64>>(), "after {after}, through {through:?}");
    }
    let rows = store.list_audit(0, 100_000).await.expect("list");
    custodian_store::audit::verify_chain(0, &custodian_core::audit::GENESIS_HASH, &rows).expect("verifies");
}

fn claim_request(claimant: &str, max_events: i64, now: i64) -> CheckpointClaimRequest {
    CheckpointClaimRequest {
        claimant: claimant.to_owned(),
        max_events,
        every_micros: 10_000_000,
        lease_micros: 60_000_000,
        now,
    }
}

fn claimed(from: i64, to: i64) -> CheckpointClaimOutcome {
    CheckpointClaimOutcome::Claimed(CheckpointRange { seq_from: from, seq_to: to })
}

pub async fn checkpoint_claims_hand_out_consecutive_ranges(store: DynStore) {
    let t0 = now_micros();
    assert_eq!(
        store.claim_audit_checkpoint(claim_request("a", 3, t0)).await.expect("claim"),
        CheckpointClaimOutcome::Nothing
    );
    store.append_audit((0..5).map(|i| AuditDraft::new(format!("e{i}"))).collect()).await.expect("append");
    // The first range is due at once; it never exceeds max_events.
    assert_eq!(store.claim_audit_checkpoint(claim_request("a", 3, t0)).await.expect("claim"), claimed(1, 3));
    store.complete_audit_checkpoint(CheckpointRange { seq_from: 1, seq_to: 3 }, t0).await.expect("complete");
    // Two events pending: fewer than max_events and the newest claim is recent.
    assert_eq!(
        store.claim_audit_checkpoint(claim_request("b", 3, t0 + 1)).await.expect("claim"),
        CheckpointClaimOutcome::Nothing
    );
    // Once `every` has passed (for any server), the short range is due.
    let later = t0 + 10_000_000;
    assert_eq!(store.claim_audit_checkpoint(claim_request("b", 3, later)).await.expect("claim"), claimed(4, 5));
    // Not written yet, within its lease: nobody else gets it, nothing else is pending.
    assert_eq!(
        store.claim_audit_checkpoint(claim_request("c", 3, later + 1)).await.expect("claim"),
        CheckpointClaimOutcome::Nothing
    );
    // Its writer died: after the lease, the next writer takes over the same range.
    let expired = later + 60_000_000;
    assert_eq!(store.claim_audit_checkpoint(claim_request("c", 3, expired)).await.expect("claim"), claimed(4, 5));
    store.complete_audit_checkpoint(CheckpointRange { seq_from: 4, seq_to: 5 }, expired).await.expect("complete");
    assert_eq!(
        store.claim_audit_checkpoint(claim_request("d", 3, expired + 100_000_000)).await.expect("claim"),
        CheckpointClaimOutcome::Nothing
    );
    // A clock moved backwards does not stall time-based checkpoints.
    store.append_audit(vec![AuditDraft::new("e5")]).await.expect("append");
    assert_eq!(
        store.claim_audit_checkpoint(claim_request("d", 3, t0 - 3_600_000_000)).await.expect("claim"),
        claimed(6, 6)
    );

    let claims = store.list_audit_checkpoint_claims(0, 10).await.expect("claims");
    assert_eq!(claims.iter().map(|c| (c.seq_from, c.seq_to)).collect::<Vec<_>>(), vec![(1, 3), (4, 5), (6, 6)]);
    assert_eq!((claims[0].claimant.as_str(), claims[0].written_at), ("a", Some(t0)));
    assert_eq!((claims[1].claimant.as_str(), claims[1].written_at), ("c", Some(expired)));
    assert_eq!(claims[2].written_at, None);
    assert_eq!(store.list_audit_checkpoint_claims(1, 10).await.expect("claims").len(), 2);
}

pub async fn checkpoint_claims_are_disjoint_under_concurrency(store: DynStore) {
    store.append_audit((0..100).map(|i| AuditDraft::new(format!("e{i}"))).collect()).await.expect("append");
    let mut tasks = Vec::new();
    for task in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let request = claim_request(&format!("writer {task}"), 7, now_micros());
                match store.claim_audit_checkpoint(request).await.expect("claim") {
                    CheckpointClaimOutcome::Claimed(range) => got.push(range),
                    _ => break,
                }
            }
            got
        }));
    }
    let mut ranges = Vec::new();
    for t in tasks {
        ranges.extend(t.await.expect("task"));
    }
    ranges.sort_by_key(|r| r.seq_from);
    let mut next = 1;
    for r in &ranges {
        assert_eq!(r.seq_from, next, "ranges are consecutive and never handed out twice: {ranges:?}");
        assert!(r.seq_to >= r.seq_from && r.seq_to - r.seq_from < 7);
        next = r.seq_to + 1;
    }
    // 14 full ranges; the last 2 events wait for `every` (the newest claim is recent).
    assert_eq!(next, 99);
}

// ---- filters --------------------------------------------------------------------------------

pub async fn filter_text(store: DynStore) {
    let names = ["Alice", "bob", "Carol", "50% off", "5000 off", "a_b", "axb", "back\\slash", "张三", ""];
    let mut by_name = Vec::new();
    for n in names {
        by_name.push((n, create(&store, json!({ "name": n })).await));
    }
    let missing = create(&store, json!({ "other": 1 })).await;
    let null = create(&store, json!({ "name": null })).await;
    let all: BTreeSet<Uuid> = by_name.iter().map(|(_, r)| r.id).chain([missing.id, null.id]).collect();
    let name = || field("name", ValueKind::Text);
    let text = |s: &str| FilterValue::Text(s.to_owned());
    let named = |pred: &dyn Fn(&str) -> bool| -> BTreeSet<Uuid> {
        by_name.iter().filter(|(n, _)| pred(n)).map(|(_, r)| r.id).collect()
    };

    assert_eq!(matching(&store, vec![col(name(), FilterOp::Eq(text("Alice")))]).await, named(&|n| n == "Alice"));
    assert_eq!(matching(&store, vec![col(name(), FilterOp::Eq(text("alice")))]).await, BTreeSet::new(), "Eq is exact");
    assert_eq!(matching(&store, vec![col(name(), FilterOp::Eq(text("张三")))]).await, named(&|n| n == "张三"));
    let mut ne = all.clone();
    ne.remove(&by_name[0].1.id);
    assert_eq!(
        matching(&store, vec![col(name(), FilterOp::Ne(text("Alice")))]).await,
        ne,
        "Ne includes missing values"
    );
    for bound in ["a", "C", "b", "张"] {
        assert_eq!(
            matching(&store, vec![col(name(), FilterOp::Gt(text(bound)))]).await,
            named(&|n| n > bound),
            "Gt {bound}"
        );
        assert_eq!(
            matching(&store, vec![col(name(), FilterOp::Gte(text(bound)))]).await,
            named(&|n| n >= bound),
            "Gte {bound}"
        );
        assert_eq!(
            matching(&store, vec![col(name(), FilterOp::Lt(text(bound)))]).await,
            named(&|n| n < bound),
            "Lt {bound}"
        );
        assert_eq!(
            matching(&store, vec![col(name(), FilterOp::Lte(text(bound)))]).await,
            named(&|n| n <= bound),
            "Lte {bound}"
        );
    }
    let contains = |s: &str| col(name(), FilterOp::Contains(s.to_owned()));
    assert_eq!(matching(&store, vec![contains("%")]).await, named(&|n| n == "50% off"), "% is literal");
    assert_eq!(matching(&store, vec![contains("_")]).await, named(&|n| n == "a_b"), "_ is literal");
    assert_eq!(matching(&store, vec![contains("\\")]).await, named(&|n| n == "back\\slash"), "\\ is literal");
    assert_eq!(matching(&store, vec![contains("0% ")]).await, named(&|n| n == "50% off"));
    assert_eq!(matching(&store, vec![contains("0 o")]).await, named(&|n| n == "5000 off"));
    assert_eq!(matching(&store, vec![contains("ALI")]).await, named(&|n| n == "Alice"), "Contains ignores ASCII case");
    assert_eq!(matching(&store, vec![contains("三")]).await, named(&|n| n == "张三"));
    assert_eq!(matching(&store, vec![col(name(), FilterOp::IsNull(true))]).await, ids([&missing, &null]));
    assert_eq!(matching(&store, vec![col(name(), FilterOp::IsNull(false))]).await, named(&|_| true));
}

pub async fn filter_number(store: DynStore) {
    let values = [json!(1), json!(2), json!(2.0), json!("2.50"), json!(10), json!(-3), json!("100.5")];
    let mut recs = Vec::new();
    for v in &values {
        recs.push(create(&store, json!({ "score": v })).await);
    }
    let missing = create(&store, json!({ "name": "no score" })).await;
    let score = || field("score", ValueKind::Number);
    let num = |s: &str| FilterValue::Number(s.to_owned());
    let pick = |idx: &[usize]| -> BTreeSet<Uuid> { idx.iter().map(|&i| recs[i].id).collect() };

    assert_eq!(matching(&store, vec![col(score(), FilterOp::Eq(num("2")))]).await, pick(&[1, 2]));
    assert_eq!(matching(&store, vec![col(score(), FilterOp::Eq(num("2.5")))]).await, pick(&[3]), "2.50 equals 2.5");
    assert_eq!(
        matching(&store, vec![col(score(), FilterOp::Gt(num("2")))]).await,
        pick(&[3, 4, 6]),
        "numeric, not text, order"
    );
    assert_eq!(matching(&store, vec![col(score(), FilterOp::Gte(num("2")))]).await, pick(&[1, 2, 3, 4, 6]));
    assert_eq!(matching(&store, vec![col(score(), FilterOp::Lt(num("2")))]).await, pick(&[0, 5]));
    assert_eq!(matching(&store, vec![col(score(), FilterOp::Lte(num("-3")))]).await, pick(&[5]));
    assert_eq!(matching(&store, vec![col(score(), FilterOp::Gt(num("-3.5")))]).await, pick(&[0, 1, 2, 3, 4, 5, 6]));
    let mut ne = pick(&[0, 3, 4, 5, 6]);
    ne.insert(missing.id);
    assert_eq!(matching(&store, vec![col(score(), FilterOp::Ne(num("2")))]).await, ne, "Ne includes missing values");
    assert_eq!(matching(&store, vec![col(score(), FilterOp::IsNull(true))]).await, ids([&missing]));
    assert_eq!(matching(&store, vec![col(score(), FilterOp::IsNull(false))]).await, pick(&[0, 1, 2, 3, 4, 5, 6]));

    // Money: a decimal string inside an object.
    let cheap = create(&store, json!({ "amount": { "amount": "12.50", "currency": "CNY" } })).await;
    let dear = create(&store, json!({ "amount": { "amount": "1200", "currency": "CNY" } })).await;
    let amount = || field("amount.amount", ValueKind::Number);
    assert_eq!(matching(&store, vec![col(amount(), FilterOp::Eq(num("12.5")))]).await, ids([&cheap]));
    assert_eq!(matching(&store, vec![col(amount(), FilterOp::Gt(num("100")))]).await, ids([&dear]));
    assert_eq!(matching(&store, vec![col(amount(), FilterOp::Lte(num("1200.00")))]).await, ids([&cheap, &dear]));
}

pub async fn filter_number_tolerates_malformed_values(store: DynStore) {
    // A value that is not a number must not break queries on the field.
    let small = create(&store, json!({ "score": 3 })).await;
    let big = create(&store, json!({ "score": 30 })).await;
    let _text = create(&store, json!({ "score": "abc" })).await;
    let _object = create(&store, json!({ "score": { "x": 1 } })).await;
    let _boolean = create(&store, json!({ "score": true })).await;
    let score = || field("score", ValueKind::Number);
    let got = matching(&store, vec![col(score(), FilterOp::Gt(FilterValue::Number("5".into())))]).await;
    assert_eq!(got, ids([&big]));
    let got = matching(&store, vec![col(score(), FilterOp::Eq(FilterValue::Number("3".into())))]).await;
    assert_eq!(got, ids([&small]));
    let mut q = query();
    q.sort = Sort { column: score(), descending: true };
    q.limit = 2;
    assert_eq!(list_all(&store, q).await.len(), 5, "sorting on the field pages through every record");
}

pub async fn filter_boolean(store: DynStore) {
    let yes = create(&store, json!({ "active": true })).await;
    let no = create(&store, json!({ "active": false })).await;
    let missing = create(&store, json!({ "name": "x" })).await;
    let text_true = create(&store, json!({ "active": "yes" })).await;
    let active = || field("active", ValueKind::Boolean);
    let b = FilterValue::Bool;
    assert_eq!(matching(&store, vec![col(active(), FilterOp::Eq(b(true)))]).await, ids([&yes]));
    assert_eq!(matching(&store, vec![col(active(), FilterOp::Eq(b(false)))]).await, ids([&no]));
    assert_eq!(matching(&store, vec![col(active(), FilterOp::Ne(b(true)))]).await, ids([&no, &missing, &text_true]));
    assert_eq!(matching(&store, vec![col(active(), FilterOp::IsNull(true))]).await, ids([&missing]));
    assert_eq!(matching(&store, vec![col(active(), FilterOp::IsNull(false))]).await, ids([&yes, &no, &text_true]));
}

pub async fn filter_array(store: DynStore) {
    let both = create(&store, json!({ "tags": ["vip", "north"] })).await;
    let south = create(&store, json!({ "tags": ["south"] })).await;
    let empty = create(&store, json!({ "tags": [] })).await;
    let missing = create(&store, json!({ "name": "untagged" })).await;
    let vip = create(&store, json!({ "tags": ["vip"] })).await;
    let near = create(&store, json!({ "tags": ["vipx", "中文标签"] })).await;
    let tags = || field("tags", ValueKind::Array);
    let t = |s: &str| FilterValue::Text(s.to_owned());
    assert_eq!(
        matching(&store, vec![col(tags(), FilterOp::Eq(t("vip")))]).await,
        ids([&both, &vip]),
        "element, not substring"
    );
    assert_eq!(matching(&store, vec![col(tags(), FilterOp::Eq(t("中文标签")))]).await, ids([&near]));
    assert_eq!(
        matching(&store, vec![col(tags(), FilterOp::Ne(t("vip")))]).await,
        ids([&south, &empty, &missing, &near]),
        "Ne: records without the element, also untagged ones"
    );
    assert_eq!(matching(&store, vec![col(tags(), FilterOp::Contains("VI".into()))]).await, ids([&both, &vip, &near]));
    assert_eq!(matching(&store, vec![col(tags(), FilterOp::IsNull(true))]).await, ids([&missing]));
    assert_eq!(
        matching(&store, vec![col(tags(), FilterOp::Eq(t("vip"))), col(tags(), FilterOp::Eq(t("north")))]).await,
        ids([&both])
    );
}

pub async fn filter_system_columns(store: DynStore) {
    let (u1, u2, t1) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let mk = |owner: Option<Uuid>, team: Option<Uuid>, at: i64| {
        let mut r = new_record(json!({ "name": "sys" }));
        r.owner_id = owner;
        r.team_id = team;
        r.created_by = owner;
        r.updated_by = owner.or(Some(u2));
        r.created_at = at;
        r.updated_at = at + 500;
        r
    };
    let a = create_with(&store, mk(Some(u1), Some(t1), 1_000)).await;
    let b = create_with(&store, mk(Some(u2), Some(t1), 2_000)).await;
    let c = create_with(&store, mk(None, None, 3_000)).await;
    let u = FilterValue::Uuid;
    let m = FilterValue::Micros;
    let f = |c: Column, op| vec![col(c, op)];
    assert_eq!(matching(&store, f(Column::OwnerId, FilterOp::Eq(u(u1)))).await, ids([&a]));
    assert_eq!(
        matching(&store, f(Column::OwnerId, FilterOp::Ne(u(u1)))).await,
        ids([&b, &c]),
        "Ne includes null owners"
    );
    assert_eq!(matching(&store, f(Column::OwnerId, FilterOp::IsNull(true))).await, ids([&c]));
    assert_eq!(matching(&store, f(Column::OwnerId, FilterOp::IsNull(false))).await, ids([&a, &b]));
    assert_eq!(matching(&store, f(Column::TeamId, FilterOp::Eq(u(t1)))).await, ids([&a, &b]));
    assert_eq!(matching(&store, f(Column::CreatedBy, FilterOp::Eq(u(u2)))).await, ids([&b]));
    assert_eq!(matching(&store, f(Column::UpdatedBy, FilterOp::Eq(u(u2)))).await, ids([&b, &c]));
    assert_eq!(matching(&store, f(Column::Id, FilterOp::Eq(u(b.id)))).await, ids([&b]));
    assert_eq!(matching(&store, f(Column::Id, FilterOp::Ne(u(b.id)))).await, ids([&a, &c]));
    assert_eq!(matching(&store, f(Column::CreatedAt, FilterOp::Gt(m(1_500)))).await, ids([&b, &c]));
    assert_eq!(matching(&store, f(Column::CreatedAt, FilterOp::Gte(m(2_000)))).await, ids([&b, &c]));
    assert_eq!(matching(&store, f(Column::CreatedAt, FilterOp::Lt(m(2_000)))).await, ids([&a]));
    assert_eq!(matching(&store, f(Column::CreatedAt, FilterOp::Lte(m(2_000)))).await, ids([&a, &b]));
    assert_eq!(matching(&store, f(Column::CreatedAt, FilterOp::Eq(m(3_000)))).await, ids([&c]));
    assert_eq!(matching(&store, f(Column::UpdatedAt, FilterOp::Gt(m(2_400)))).await, ids([&b, &c]));
    assert_eq!(
        matching(
            &store,
            vec![col(Column::TeamId, FilterOp::Eq(u(t1))), col(Column::CreatedAt, FilterOp::Gt(m(1_000)))]
        )
        .await,
        ids([&b])
    );
}

pub async fn filters_combine(store: DynStore) {
    let owner = Uuid::now_v7();
    let mut a = new_record(json!({ "name": "Acme 云图科技", "city": "北京", "score": 5 }));
    a.owner_id = Some(owner);
    let a = create_with(&store, a).await;
    let mut b = new_record(json!({ "name": "Acme 北方", "city": "上海", "score": 5 }));
    b.owner_id = Some(owner);
    let b = create_with(&store, b).await;
    let _c = create(&store, json!({ "name": "Acme 南方", "city": "北京", "score": 5 })).await;
    let mut q = query();
    q.scope = RowScope::Restricted { owner_ids: vec![owner], team_ids: vec![], record_ids: vec![] };
    q.search = query_tokens("acme");
    q.filters = vec![
        col(field("city", ValueKind::Text), FilterOp::Eq(FilterValue::Text("北京".into()))),
        col(field("score", ValueKind::Number), FilterOp::Gte(FilterValue::Number("5".into()))),
    ];
    assert_eq!(id_set(&list_all(&store, q.clone()).await), ids([&a]));
    assert_eq!(store.count_records(&q).await.expect("count"), 1);
    q.filters.pop();
    q.filters[0] = col(field("city", ValueKind::Text), FilterOp::Ne(FilterValue::Text("北京".into())));
    assert_eq!(id_set(&list_all(&store, q.clone()).await), ids([&b]));
}

// ---- sorting and pagination --------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, PartialOrd)]
enum Key {
    Text(String),
    Int(i64),
    Num(f64),
    Id(Uuid),
}

fn cmp_keys(a: &Key, b: &Key) -> Ordering {
    a.partial_cmp(b).unwrap_or(Ordering::Equal)
}

/// The sort key the contract prescribes for `column` (missing values lowest).
fn expected_key(r: &StoredRecord, column: &Column) -> Key {
    let nil = Uuid::nil();
    match column {
        Column::Id => Key::Id(r.id),
        Column::CreatedAt => Key::Int(r.created_at),
        Column::UpdatedAt => Key::Int(r.updated_at),
        Column::OwnerId => Key::Id(r.owner_id.unwrap_or(nil)),
        Column::TeamId => Key::Id(r.team_id.unwrap_or(nil)),
        Column::CreatedBy => Key::Id(r.created_by.unwrap_or(nil)),
        Column::UpdatedBy => Key::Id(r.updated_by.unwrap_or(nil)),
        Column::Field { path, kind } => {
            let mut v = Some(&Value::Object(r.fields.clone())).cloned();
            for seg in path {
                v = v.and_then(|x| x.get(seg).cloned());
            }
            let v = v.filter(|x| !x.is_null());
            match kind {
                ValueKind::Text | ValueKind::Array => Key::Text(match v {
                    Some(Value::String(s)) => s,
                    Some(other) => other.to_string(),
                    None => String::new(),
                }),
                ValueKind::Number => Key::Num(match v {
                    Some(Value::Number(n)) => n.as_f64().unwrap_or(f64::NEG_INFINITY),
                    Some(Value::String(s)) => s.parse().unwrap_or(f64::NEG_INFINITY),
                    _ => f64::NEG_INFINITY,
                }),
                ValueKind::Boolean => Key::Int(match v {
                    Some(Value::Bool(true)) => 1,
                    Some(Value::Bool(false)) => 0,
                    _ => -1,
                }),
            }
        }
    }
}

pub async fn sort_and_paginate(store: DynStore) {
    let names: [Option<&str>; 8] =
        [Some("b"), Some("a"), Some("B"), None, Some(""), Some("张三"), Some("a"), Some("Zed")];
    let scores: [Option<Value>; 6] =
        [Some(json!(3)), Some(json!(-1)), None, Some(json!("2.5")), Some(json!(3)), Some(json!(100))];
    let flags: [Option<bool>; 3] = [Some(true), None, Some(false)];
    let owners = [Some(Uuid::now_v7()), None, Some(Uuid::now_v7())];
    let base = 1_700_000_000_000_000_i64;
    let mut all = Vec::new();
    for i in 0..23_usize {
        let mut f = Map::new();
        if let Some(n) = names[i % names.len()] {
            f.insert("name".into(), json!(n));
        }
        if let Some(s) = &scores[i % scores.len()] {
            f.insert("score".into(), s.clone());
        }
        if let Some(b) = flags[i % flags.len()] {
            f.insert("flag".into(), json!(b));
        }
        if i % 7 == 0 {
            f.insert("name".into(), Value::Null);
        }
        let mut r = new_record(Value::Object(f));
        r.owner_id = owners[i % owners.len()];
        r.created_at = base + (i as i64 % 5) * 1_000; // many equal values
        r.updated_at = base + i as i64;
        all.push(create_with(&store, r).await);
    }
    let deleted = create(&store, json!({ "name": "deleted" })).await;
    let mut gone = successor(&deleted, json!({ "name": "deleted" }));
    gone.deleted_at = Some(gone.updated_at);
    apply(&store, change(WriteAction::Delete, &deleted, &gone)).await.expect("delete");

    let columns = [
        Column::Id,
        Column::CreatedAt,
        Column::UpdatedAt,
        Column::OwnerId,
        field("name", ValueKind::Text),
        field("score", ValueKind::Number),
        field("flag", ValueKind::Boolean),
    ];
    for column in &columns {
        let mut expected = all.clone();
        expected.sort_by(|a, b| cmp_keys(&expected_key(a, column), &expected_key(b, column)).then(a.id.cmp(&b.id)));
        let expected_asc: Vec<Uuid> = expected.iter().map(|r| r.id).collect();
        for descending in [false, true] {
            let mut want = expected_asc.clone();
            if descending {
                want.reverse();
            }
            for limit in [1_u32, 4, 7, 23, 100] {
                let mut q = query();
                q.sort = Sort { column: column.clone(), descending };
                q.limit = limit;
                let got: Vec<Uuid> = list_all(&store, q).await.iter().map(|r| r.id).collect();
                let unique: HashSet<Uuid> = got.iter().copied().collect();
                assert_eq!(unique.len(), got.len(), "duplicates sorting by {column:?} desc={descending} limit={limit}");
                assert_eq!(got, want, "order sorting by {column:?} desc={descending} limit={limit}");
            }
        }
    }

    // Keyset pagination combined with a filter.
    let mut q = query();
    q.sort = Sort { column: field("score", ValueKind::Number), descending: true };
    q.filters = vec![col(field("score", ValueKind::Number), FilterOp::Gte(FilterValue::Number("0".into())))];
    q.limit = 2;
    let got = list_all(&store, q).await;
    let want = all
        .iter()
        .filter(|r| matches!(expected_key(r, &field("score", ValueKind::Number)), Key::Num(n) if n >= 0.0))
        .count();
    assert_eq!(got.len(), want);
}

pub async fn page_limit_and_next(store: DynStore) {
    for i in 0..5 {
        create(&store, json!({ "n": i })).await;
    }
    let mut q = query();
    q.limit = 5;
    let page = store.list_records(&q).await.expect("list");
    assert_eq!(page.items.len(), 5);
    assert_eq!(page.next, None, "no cursor when nothing follows");
    q.limit = 2;
    let page = store.list_records(&q).await.expect("list");
    assert_eq!(page.items.len(), 2);
    let next = page.next.expect("a cursor when more follow");
    assert_eq!(next.id, page.items[1].id, "the cursor points after the last item returned");
    q.after = Some(next);
    let page2 = store.list_records(&q).await.expect("list");
    assert_eq!(page2.items.len(), 2);
    assert!(page2.items.iter().all(|r| !page.items.contains(r)));
    let mut q = query();
    q.object = "nothing_here".into();
    let page = store.list_records(&q).await.expect("list");
    assert!(page.items.is_empty() && page.next.is_none());
    assert_eq!(store.count_records(&q).await.expect("count"), 0);
}

// ---- search -------------------------------------------------------------------------------

pub async fn search_cjk_and_latin(store: DynStore) {
    let zhang = create(&store, json!({ "name": "张三" })).await;
    let zhang_feng = create(&store, json!({ "name": "张三丰" })).await;
    let li = create(&store, json!({ "name": "李四" })).await;
    let acme = create(&store, json!({ "name": "Acme 云图科技有限公司", "city": "Beijing" })).await;
    let number = create(&store, json!({ "name": "Order 20240101" })).await;
    let search = |text: &'static str| {
        let store = store.clone();
        async move {
            let mut q = query();
            q.search = query_tokens(text);
            let items = list_all(&store, q.clone()).await;
            assert_eq!(store.count_records(&q).await.expect("count") as usize, items.len());
            id_set(&items)
        }
    };
    let found = search("张三").await;
    assert!(found.contains(&zhang.id), "张三 finds 张三");
    assert!(!found.contains(&li.id), "张三 does not find 李四");
    assert_eq!(found, ids([&zhang, &zhang_feng]));
    assert_eq!(search("李").await, ids([&li]), "single CJK character");
    assert_eq!(search("三丰").await, ids([&zhang_feng]));
    assert_eq!(search("acm").await, ids([&acme]), "Latin words match as prefixes");
    assert_eq!(search("ACME").await, ids([&acme]), "case-insensitive");
    assert_eq!(search("云图科技").await, ids([&acme]));
    assert_eq!(search("beij 云图").await, ids([&acme]), "every token must match");
    assert_eq!(search("acme 李四").await, BTreeSet::new());
    assert_eq!(search("2024").await, ids([&number]));
    assert_eq!(search("zzz").await, BTreeSet::new());
    assert_eq!(search("公司 有限").await, ids([&acme]));
}

pub async fn search_follows_updates_and_deletes(store: DynStore) {
    let li = create(&store, json!({ "name": "李四" })).await;
    let other = create(&store, json!({ "name": "李四光" })).await;
    let renamed = update(&store, &li, json!({ "name": "赵六" })).await;
    let find = |text: &'static str, deleted| {
        let store = store.clone();
        async move {
            let mut q = query();
            q.search = query_tokens(text);
            q.deleted = deleted;
            id_set(&list_all(&store, q).await)
        }
    };
    assert_eq!(find("李四", DeletedFilter::Active).await, ids([&other]), "old search text is replaced");
    assert_eq!(find("赵六", DeletedFilter::Active).await, ids([&li]));
    let mut gone = successor(&renamed, json!({ "name": "赵六" }));
    gone.deleted_at = Some(gone.updated_at);
    apply(&store, change(WriteAction::Delete, &renamed, &gone)).await.expect("delete");
    assert_eq!(find("赵六", DeletedFilter::Active).await, BTreeSet::new());
    assert_eq!(find("赵六", DeletedFilter::Deleted).await, ids([&li]));
    // Clearing the search text removes the record from search.
    let mut w = change(WriteAction::Update, &other, &successor(&other, json!({ "name": "李四光" })));
    w.search_text = String::new();
    apply(&store, w).await.expect("update");
    assert_eq!(find("李四", DeletedFilter::All).await, BTreeSet::new());
}

// ---- strong keys by value ---------------------------------------------------------------------

/// `find_by_field_values`: each key answered at its positions (repeats too), only active
/// records of the object, the limit per key, a value compared as it is (quotes included).
pub async fn field_value_lookup(store: DynStore) {
    let a = create(&store, json!({ "name": "Alpha" })).await;
    let b = create(&store, json!({ "name": "Beta" })).await;
    let d = create(&store, json!({ "name": "Alpha" })).await;
    create_with(&store, new_record_of("leads", json!({ "name": "Alpha" }))).await;
    let gone = create(&store, json!({ "name": "Beta" })).await;
    let mut g2 = successor(&gone, json!({ "name": "Beta" }));
    g2.deleted_at = Some(g2.updated_at);
    apply(&store, change(WriteAction::Delete, &gone, &g2)).await.expect("delete");
    create(&store, json!({ "name": "x' OR '1'='1" })).await;
    let name = |v: &str| ("name".to_owned(), v.to_owned());
    let (lo, hi) = if a.id < d.id { (a.id, d.id) } else { (d.id, a.id) };
    let keys = vec![name("Alpha"), name("Zeta"), name("Beta"), name("Alpha")];
    let found = store.find_by_field_values(OBJ, &keys, 10).await.expect("find");
    assert_eq!(found, vec![(0, lo), (0, hi), (2, b.id), (3, lo), (3, hi)]);
    let one_each = store.find_by_field_values(OBJ, &keys, 1).await.expect("find");
    assert_eq!(one_each, vec![(0, lo), (2, b.id), (3, lo)], "the smallest id of each key");
    assert!(store.find_by_field_values(OBJ, &[], 10).await.expect("find").is_empty());
    assert!(store.find_by_field_values(OBJ, &keys, 0).await.expect("find").is_empty());
    // More values than one SQLite statement takes.
    let mut many: Vec<(String, String)> = (0..450).map(|i| name(&format!("none {i}"))).collect();
    many.push(name("Beta"));
    assert_eq!(store.find_by_field_values(OBJ, &many, 10).await.expect("find"), vec![(450, b.id)]);
    let injected = store.find_by_field_values(OBJ, &[name("x' OR '1'"), name("x")], 10).await.expect("find");
    assert!(injected.is_empty(), "{injected:?}");
    assert_eq!(store.find_by_field_values("leads", &[name("Beta")], 10).await.expect("find"), vec![]);
    // A field name that is not an identifier is refused, not run.
    assert!(store.find_by_field_values(OBJ, &[("name') = 1 --".to_owned(), "Alpha".to_owned())], 10).await.is_err());
}

// ---- blind indexes and scope ----------------------------------------------------------------

pub async fn blind_index_filter_and_lookup(store: DynStore) {
    let with = |object: &str, name: &str, digests: Vec<FieldDigest>| {
        let r = new_record_of(object, json!({ "name": name }));
        let mut w = creation(&r);
        w.blind_indexes = digests;
        (r, w)
    };
    let (a, wa) = with(OBJ, "A", vec![key("mobile", 1), key("email", 2)]);
    let (b, wb) = with(OBJ, "B", vec![key("mobile", 3)]);
    let (c, wc) = with("leads", "C", vec![key("mobile", 1)]);
    let (d, wd) = with(OBJ, "D", vec![key("mobile", 1)]);
    for w in [wa, wb, wc, wd] {
        apply(&store, w).await.expect("create");
    }
    let blind = |field: &str, byte: u8| Filter::BlindIndex { field: field.into(), digest: digest(byte) };
    assert_eq!(matching(&store, vec![blind("mobile", 1)]).await, ids([&a, &d]), "only this object's records");
    assert_eq!(matching(&store, vec![blind("email", 1)]).await, BTreeSet::new(), "field must match");
    assert_eq!(matching(&store, vec![blind("email", 2)]).await, ids([&a]));
    assert_eq!(
        matching(
            &store,
            vec![blind("mobile", 1), col(field("name", ValueKind::Text), FilterOp::Eq(FilterValue::Text("D".into())))]
        )
        .await,
        ids([&d])
    );
    let mut found = store.find_by_blind_index(OBJ, "mobile", &digest(1), 10).await.expect("find");
    found.sort();
    let mut want = vec![a.id, d.id];
    want.sort();
    assert_eq!(found, want);
    assert_eq!(store.find_by_blind_index(OBJ, "mobile", &digest(1), 1).await.expect("find").len(), 1, "limit");
    assert_eq!(store.find_by_blind_index("leads", "mobile", &digest(1), 10).await.expect("find"), vec![c.id]);
    // Many digests at once: each answered at its positions (repeats too), the limit per digest.
    let mobile = |i: u8| ("mobile".to_owned(), digest(i));
    let digests = vec![mobile(1), mobile(9), mobile(2), mobile(1)];
    let batch = store.find_by_blind_indexes(OBJ, &digests, 10).await.expect("find");
    let (lo, hi) = if a.id < d.id { (a.id, d.id) } else { (d.id, a.id) };
    assert_eq!(batch, vec![(0, lo), (0, hi), (3, lo), (3, hi)]);
    let one_each = store.find_by_blind_indexes(OBJ, &digests, 1).await.expect("find");
    assert_eq!(one_each, vec![(0, lo), (3, lo)], "limit per digest, smallest id first");
    assert!(store.find_by_blind_indexes(OBJ, &[], 10).await.expect("find").is_empty());
    // Several fields in one read: a digest counts only for its own field.
    let fields = vec![("email".to_owned(), digest(1)), mobile(1), ("email".to_owned(), digest(2))];
    let mixed = store.find_by_blind_indexes(OBJ, &fields, 10).await.expect("find");
    assert_eq!(mixed, vec![(1, lo), (1, hi), (2, a.id)], "{mixed:?}");

    // A digest many records hold (a switchboard number) gives the smallest ids up to the limit.
    let mut shared = Vec::new();
    for n in 0..30 {
        let (r, w) = with(OBJ, &format!("S{n}"), vec![key("mobile", 7)]);
        apply(&store, w).await.expect("create");
        shared.push(r.id);
    }
    shared.sort();
    let some = store.find_by_blind_indexes(OBJ, &[mobile(7), ("email".to_owned(), digest(2))], 5).await.expect("find");
    let want: Vec<(usize, Uuid)> = shared.iter().take(5).map(|id| (0, *id)).chain(std::iter::once((1, a.id))).collect();
    assert_eq!(some, want);

    // An update replaces the record's blind indexes.
    let a2 = successor(&a, json!({ "name": "A" }));
    let mut w = change(WriteAction::Update, &a, &a2);
    w.blind_indexes = vec![key("mobile", 4)];
    apply(&store, w).await.expect("update");
    assert_eq!(matching(&store, vec![blind("mobile", 1)]).await, ids([&d]));
    assert_eq!(matching(&store, vec![blind("mobile", 4)]).await, ids([&a]));
    assert_eq!(matching(&store, vec![blind("email", 2)]).await, BTreeSet::new());

    // Deleted records are not found by lookup (but can be listed explicitly).
    let mut b2 = successor(&b, json!({ "name": "B" }));
    b2.deleted_at = Some(b2.updated_at);
    let mut w = change(WriteAction::Delete, &b, &b2);
    w.blind_indexes = vec![key("mobile", 3)];
    apply(&store, w).await.expect("delete");
    assert!(store.find_by_blind_index(OBJ, "mobile", &digest(3), 10).await.expect("find").is_empty());
    let mut q = query();
    q.deleted = DeletedFilter::All;
    q.filters = vec![blind("mobile", 3)];
    assert_eq!(id_set(&list_all(&store, q).await), ids([&b]));
}

pub async fn row_scope_restricts_reads(store: DynStore) {
    let (u1, u2, t1) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let mk = |owner: Option<Uuid>, team: Option<Uuid>| {
        let mut r = new_record(json!({ "name": "scoped" }));
        r.owner_id = owner;
        r.team_id = team;
        r
    };
    let r1 = create_with(&store, mk(Some(u1), None)).await;
    let r2 = create_with(&store, mk(Some(u2), Some(t1))).await;
    let r3 = create_with(&store, mk(Some(u2), None)).await;
    let r4 = create_with(&store, mk(None, None)).await;
    let scope = |owners: Vec<Uuid>, teams: Vec<Uuid>, records: Vec<Uuid>| RowScope::Restricted {
        owner_ids: owners,
        team_ids: teams,
        record_ids: records,
    };
    let cases = [
        (RowScope::All, ids([&r1, &r2, &r3, &r4])),
        (scope(vec![u1], vec![], vec![]), ids([&r1])),
        (scope(vec![], vec![t1], vec![]), ids([&r2])),
        (scope(vec![], vec![], vec![r3.id]), ids([&r3])),
        (scope(vec![u1], vec![t1], vec![r4.id]), ids([&r1, &r2, &r4])),
        (scope(vec![u2], vec![], vec![]), ids([&r2, &r3])),
        (scope(vec![], vec![], vec![]), BTreeSet::new()),
    ];
    for (scope, want) in cases {
        let mut q = query();
        q.scope = scope.clone();
        assert_eq!(id_set(&list_all(&store, q.clone()).await), want, "list under {scope:?}");
        assert_eq!(store.count_records(&q).await.expect("count") as usize, want.len(), "count under {scope:?}");
        for r in [&r1, &r2, &r3, &r4] {
            let got = store.get_record(OBJ, r.id, &scope).await.expect("get");
            assert_eq!(got.is_some(), want.contains(&r.id), "get {} under {scope:?}", r.id);
            // The in-memory check (a create's answer) agrees with the store's SQL.
            assert_eq!(scope.admits(r), want.contains(&r.id), "admits {} under {scope:?}", r.id);
        }
    }
}

pub async fn existing_ids_are_active_of_object(store: DynStore) {
    let a = create(&store, json!({ "n": 1 })).await;
    let b = create(&store, json!({ "n": 2 })).await;
    let c = create(&store, json!({ "n": 3 })).await;
    let mut c2 = successor(&c, json!({ "n": 3 }));
    c2.deleted_at = Some(c2.updated_at);
    apply(&store, change(WriteAction::Delete, &c, &c2)).await.expect("delete");
    let d = new_record_of("companies", json!({ "n": 4 }));
    apply(&store, creation(&d)).await.expect("create");
    let mut got = store.existing_ids(OBJ, &[a.id, b.id, c.id, d.id, Uuid::now_v7(), a.id]).await.expect("existing");
    got.sort();
    got.dedup();
    let mut want = vec![a.id, b.id];
    want.sort();
    assert_eq!(got, want);
    assert!(store.existing_ids(OBJ, &[]).await.expect("existing").is_empty());
    assert_eq!(store.existing_ids("companies", &[d.id, a.id]).await.expect("existing"), vec![d.id]);
    // Their current versions: a record changed since reports its new version.
    let b2 = successor(&b, json!({ "n": 22 }));
    apply(&store, change(WriteAction::Update, &b, &b2)).await.expect("update");
    let mut versions = store.active_versions(OBJ, &[b.id, a.id, c.id, d.id, b.id]).await.expect("versions");
    versions.sort();
    let mut want = vec![(a.id, a.version), (b.id, b2.version)];
    want.sort();
    assert_eq!(versions, want);
    assert_eq!(b2.version, b.version + 1);
    // The check at entry's candidates: fields only where the version named is not the
    // current one (or none is named); deleted records and other objects' are left out.
    let wanted = [(a.id, Some(a.version)), (b.id, Some(b.version)), (c.id, None), (d.id, None), (Uuid::now_v7(), None)];
    let mut got = store.candidate_fields(OBJ, &wanted).await.expect("candidates");
    got.sort_by_key(|c| c.id);
    let mut want = vec![
        CandidateFields { id: a.id, version: a.version, fields: None },
        CandidateFields { id: b.id, version: b2.version, fields: Some(b2.fields.clone()) },
    ];
    want.sort_by_key(|c| c.id);
    assert_eq!(got, want);
    let unnamed = store.candidate_fields(OBJ, &[(a.id, None)]).await.expect("candidates");
    assert_eq!(unnamed, vec![CandidateFields { id: a.id, version: a.version, fields: Some(a.fields.clone()) }]);
    assert!(store.candidate_fields(OBJ, &[]).await.expect("candidates").is_empty());
    assert!(store.candidate_fields("companies", &[(a.id, None)]).await.expect("candidates").is_empty());
}

// ---- people, sessions, schema, keys ------------------------------------------------------

pub async fn users_round_trip(store: DynStore) {
    assert_eq!(store.count_users().await.expect("count"), 0);
    let mut zhang = user("zhangsan");
    zhang.department_id = Some(Uuid::now_v7());
    zhang.team_id = Some(Uuid::now_v7());
    zhang.email = Some("zhangsan@example.cn".into());
    let admin = user("admin");
    store.create_user(zhang.clone(), AuditDraft::new("user.create")).await.expect("create");
    store.create_user(admin.clone(), AuditDraft::new("user.create")).await.expect("create");
    assert_eq!(store.get_user(zhang.id).await.expect("get"), Some(zhang.clone()));
    assert_eq!(store.get_user_by_username("zhangsan").await.expect("get"), Some(zhang.clone()));
    assert_eq!(store.get_user_by_username("nobody").await.expect("get"), None);
    assert_eq!(store.get_user(Uuid::now_v7()).await.expect("get"), None);
    assert_eq!(store.list_users().await.expect("list"), vec![admin.clone(), zhang.clone()], "ordered by username");
    assert_eq!(store.count_users().await.expect("count"), 2);

    let mut same_name = user("zhangsan");
    same_name.display_name = "impostor".into();
    assert!(matches!(
        store.create_user(same_name, AuditDraft::new("user.create")).await,
        Err(StoreError::AlreadyExists(_))
    ));
    let mut same_id = user("someone_else");
    same_id.id = zhang.id;
    assert!(matches!(
        store.create_user(same_id, AuditDraft::new("user.create")).await,
        Err(StoreError::AlreadyExists(_))
    ));
    assert_eq!(store.count_users().await.expect("count"), 2);
    let audit = all_audit(&store).await;
    assert_eq!(audit.len(), 2, "refused creations append no audit event");
    assert!(audit.iter().all(|r| r.action == "user.create"));

    // The e-mail address changes and goes like the other columns.
    let mut moved = zhang.clone();
    moved.email = Some("san.zhang@example.cn".into());
    store.update_user(moved.clone(), false, AuditDraft::new("user.update")).await.expect("update");
    assert_eq!(store.get_user(zhang.id).await.expect("get"), Some(moved.clone()));
    moved.email = None;
    store.update_user(moved.clone(), false, AuditDraft::new("user.update")).await.expect("update");
    assert_eq!(store.get_user_by_username("zhangsan").await.expect("get"), Some(moved));
}

pub async fn sessions_round_trip(store: DynStore) {
    let now = now_micros();
    let s = SessionRow {
        token_hash: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
        user_id: Uuid::now_v7(),
        created_at: now,
        last_seen_at: now,
        expires_at: now + 3_600_000_000,
        ip: Some("198.51.100.1".into()),
        user_agent: Some("curl/8".into()),
        kind: "session".into(),
        scope: "read_write".into(),
        name: None,
        step_up_until: None,
    };
    store.create_session(s.clone(), AuditDraft::new("session.create")).await.expect("create");
    assert_eq!(store.get_session(&s.token_hash).await.expect("get"), Some(s.clone()));
    assert_eq!(store.get_session("unknown").await.expect("get"), None);
    // With its user in one read: only when the user exists, every column its own.
    assert_eq!(store.get_session_user(&s.token_hash).await.expect("get"), None, "no such user");
    let mut owner = user("session_owner");
    owner.id = s.user_id;
    owner.created_at = now - 1_000;
    owner.team_id = Some(Uuid::now_v7());
    owner.email = Some("owner@example.cn".into());
    store.create_user(owner.clone(), AuditDraft::new("user.create")).await.expect("user");
    assert_eq!(store.get_session_user(&s.token_hash).await.expect("get"), Some((s.clone(), owner.clone())));
    assert_eq!(store.get_session_user("unknown").await.expect("get"), None);
    store.touch_session(&s.token_hash, now + 10).await.expect("touch");
    assert_eq!(store.get_session(&s.token_hash).await.expect("get").expect("session").last_seen_at, now + 10);
    store.touch_session(&s.token_hash, now + 5).await.expect("touch");
    assert_eq!(
        store.get_session(&s.token_hash).await.expect("get").expect("session").last_seen_at,
        now + 10,
        "last_seen_at only moves forward"
    );
    store.touch_session("unknown", now).await.expect("touching a missing session is harmless");
    let bare = SessionRow {
        token_hash: "other".into(),
        ip: None,
        user_agent: None,
        kind: "api_token".into(),
        scope: "read".into(),
        name: Some("报表脚本".into()),
        ..s.clone()
    };
    store.create_session(bare.clone(), AuditDraft::new("session.create")).await.expect("create");
    store.delete_session(&s.token_hash, AuditDraft::new("session.delete")).await.expect("delete");
    assert_eq!(store.get_session(&s.token_hash).await.expect("get"), None);
    assert_eq!(store.get_session("other").await.expect("get"), Some(bare));
    let actions: Vec<String> = all_audit(&store).await.into_iter().map(|r| r.action).collect();
    assert_eq!(actions, vec!["session.create", "user.create", "session.create", "session.delete"]);
}

pub async fn departments_and_teams_round_trip(store: DynStore) {
    let now = now_micros();
    let root = DepartmentRow { id: Uuid::now_v7(), name: "总部".into(), parent_id: None, created_at: now };
    let sales =
        DepartmentRow { id: Uuid::now_v7(), name: "销售部".into(), parent_id: Some(root.id), created_at: now + 1 };
    store.create_department(root.clone(), AuditDraft::new("department.create")).await.expect("create");
    store.create_department(sales.clone(), AuditDraft::new("department.create")).await.expect("create");
    let dup = DepartmentRow { name: "dup".into(), ..root.clone() };
    assert!(matches!(
        store.create_department(dup, AuditDraft::new("department.create")).await,
        Err(StoreError::AlreadyExists(_))
    ));
    assert_eq!(store.list_departments().await.expect("list"), vec![root.clone(), sales.clone()]);

    let north =
        TeamRow { id: Uuid::now_v7(), name: "华北组".into(), department_id: Some(sales.id), created_at: now };
    let floating = TeamRow { id: Uuid::now_v7(), name: "floating".into(), department_id: None, created_at: now + 1 };
    store.create_team(north.clone(), AuditDraft::new("team.create")).await.expect("create");
    store.create_team(floating.clone(), AuditDraft::new("team.create")).await.expect("create");
    let dup = TeamRow { name: "dup".into(), ..north.clone() };
    assert!(matches!(store.create_team(dup, AuditDraft::new("team.create")).await, Err(StoreError::AlreadyExists(_))));
    assert_eq!(store.list_teams().await.expect("list"), vec![north, floating]);
    assert_eq!(all_audit(&store).await.len(), 4);
}

pub async fn custom_fields_round_trip(store: DynStore) {
    let now = now_micros();
    let def = json!({ "name": "wechat_group", "type": "text", "label": { "zh": "微信群", "en": "WeChat group" },
        "rules": { "required": false, "max_length": 64, "allowed": ["a", "b"] }, "sensitive": true });
    let f1 = CustomFieldRow {
        object: "contacts".into(),
        name: "wechat_group".into(),
        definition: def.clone(),
        created_at: now,
    };
    let f2 = CustomFieldRow {
        object: "companies".into(),
        name: "wechat_group".into(),
        definition: json!({ "type": "text" }),
        created_at: now + 1,
    };
    store.add_custom_field(f1.clone(), AuditDraft::new("schema.field_add")).await.expect("add");
    store
        .add_custom_field(f2.clone(), AuditDraft::new("schema.field_add"))
        .await
        .expect("add, same name on another object");
    let again = CustomFieldRow { definition: json!({ "type": "integer" }), ..f1.clone() };
    assert!(matches!(
        store.add_custom_field(again, AuditDraft::new("schema.field_add")).await,
        Err(StoreError::AlreadyExists(_))
    ));
    let mut listed = store.list_custom_fields().await.expect("list");
    listed.sort_by(|a, b| (a.created_at, &a.object, &a.name).cmp(&(b.created_at, &b.object, &b.name)));
    assert_eq!(listed, vec![f1, f2]);
    assert_eq!(all_audit(&store).await.len(), 2);
}

pub async fn wrapped_keys_first_writer_wins(store: DynStore) {
    assert!(store.list_wrapped_keys().await.expect("list").is_empty());
    let k1 = WrappedKeyRow { label: "data-v1".into(), wrapped: vec![0, 1, 2, 255, 0] };
    assert!(store.insert_wrapped_key(k1.clone(), AuditDraft::new("key.create")).await.expect("insert"));
    let other = WrappedKeyRow { label: "data-v1".into(), wrapped: vec![9; 48] };
    assert!(
        !store.insert_wrapped_key(other, AuditDraft::new("key.create")).await.expect("insert"),
        "second insert of a label is refused"
    );
    let k0 = WrappedKeyRow { label: "blind-v1".into(), wrapped: vec![7; 40] };
    assert!(store.insert_wrapped_key(k0.clone(), AuditDraft::new("key.create")).await.expect("insert"));
    assert_eq!(store.list_wrapped_keys().await.expect("list"), vec![k0, k1], "ordered by label, first value kept");

    // Two servers starting at once agree on one key.
    let mut tasks = Vec::new();
    for i in 0..8_u8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let key = WrappedKeyRow { label: "race".into(), wrapped: vec![i; 8] };
            store.insert_wrapped_key(key, AuditDraft::new("key.create")).await
        }));
    }
    let mut inserted = 0;
    for t in tasks {
        if t.await.expect("task").expect("insert") {
            inserted += 1;
        }
    }
    assert_eq!(inserted, 1);
    // Each key created is one audit event in its transaction; a refused second insert is none.
    let events = all_audit(&store).await;
    assert_eq!(events.iter().filter(|e| e.action == "key.create").count(), 3);
}

// ---- hostile and unusual input -------------------------------------------------------------

pub async fn sql_metacharacters_are_harmless(store: DynStore) {
    let evil = "'; DROP TABLE records; --";
    let bobby = "Robert'); DROP TABLE students;-- \" \\ $1 ? :x %s";
    let a = create(&store, json!({ "name": evil, "note": "\\x00 E'\\'' $$ $tag$" })).await;
    let b = create(&store, json!({ "name": bobby, evil: "value" })).await;
    assert_eq!(get(&store, a.id).await, Some(a.clone()));
    assert_eq!(get(&store, b.id).await, Some(b.clone()));
    let name = || field("name", ValueKind::Text);
    let t = |s: &str| FilterValue::Text(s.to_owned());
    assert_eq!(matching(&store, vec![col(name(), FilterOp::Eq(t(evil)))]).await, ids([&a]));
    assert_eq!(matching(&store, vec![col(name(), FilterOp::Eq(t(bobby)))]).await, ids([&b]));
    assert_eq!(matching(&store, vec![col(name(), FilterOp::Contains(evil.into()))]).await, ids([&a]));
    assert_eq!(matching(&store, vec![col(name(), FilterOp::Contains("'); DROP".into()))]).await, ids([&b]));
    matching(&store, vec![col(name(), FilterOp::Gt(t(evil)))]).await;
    matching(&store, vec![col(field("n", ValueKind::Number), FilterOp::Eq(FilterValue::Number(evil.into())))]).await;
    matching(&store, vec![col(field("n", ValueKind::Boolean), FilterOp::Eq(t(evil)))]).await;
    matching(&store, vec![col(field("n", ValueKind::Array), FilterOp::Eq(t(evil)))]).await;
    matching(&store, vec![col(Column::OwnerId, FilterOp::Eq(t(evil)))]).await;
    matching(&store, vec![col(Column::CreatedAt, FilterOp::Gt(t(evil)))]).await;
    matching(&store, vec![Filter::BlindIndex { field: evil.into(), digest: evil.as_bytes().to_vec() }]).await;

    // Hostile field paths, sorts, tokens and cursors: refused or harmless, never executed.
    let hostile_path = Column::Field { path: vec![evil.into()], kind: ValueKind::Text };
    let mut q = query();
    q.filters = vec![col(hostile_path.clone(), FilterOp::Eq(t("value")))];
    if let Ok(page) = store.list_records(&q).await {
        assert_eq!(id_set(&page.items), ids([&b]), "a path is a key, not SQL");
    }
    let mut q = query();
    q.sort = Sort { column: hostile_path, descending: true };
    let _ = store.list_records(&q).await;
    let mut q = query();
    q.search = query_tokens(evil);
    assert_eq!(id_set(&list_all(&store, q).await), ids([&a]), "the search finds the text, nothing else");
    for text in ["x' | 'y", "a\" OR \"b", "*", "a:*", "NEAR(a b)", "'", ""] {
        let mut q = query();
        q.search = vec![QueryToken { text: text.into(), prefix: true }];
        if let Ok(page) = store.list_records(&q).await {
            assert!(page.items.len() <= 2);
        }
    }
    for column in
        [Column::Id, Column::CreatedAt, field("n", ValueKind::Number), field("n", ValueKind::Text), Column::OwnerId]
    {
        let mut q = query();
        q.sort = Sort { column, descending: false };
        q.after = Some(custodian_store::Cursor { key: json!(evil), id: a.id });
        let _ = store.list_records(&q).await;
        q.after = Some(custodian_store::Cursor { key: json!({ "x": [evil] }), id: a.id });
        let _ = store.list_records(&q).await;
    }

    assert_eq!(store.get_user_by_username(evil).await.expect("lookup"), None);
    assert_eq!(store.get_session(evil).await.expect("lookup"), None);
    assert!(
        store
            .insert_wrapped_key(WrappedKeyRow { label: evil.into(), wrapped: vec![1] }, AuditDraft::new("key.create"))
            .await
            .expect("key")
    );
    assert!(store.find_by_blind_index(evil, evil, evil.as_bytes(), 5).await.expect("lookup").is_empty());
    assert!(store.existing_ids(evil, &[a.id]).await.expect("lookup").is_empty());
    let mut d = AuditDraft::new(evil);
    d.object = Some(evil.into());
    d.request_id = Some(bobby.into());
    store.append_audit(vec![d]).await.expect("audit");

    // Everything is still there.
    store.health().await.expect("health");
    assert_eq!(id_set(&list_all(&store, query()).await), ids([&a, &b]));
    verify_chain(0, &GENESIS_HASH, &all_audit(&store).await).expect("chain");
}

pub async fn unusual_values_round_trip(store: DynStore) {
    let r = create(
        &store,
        json!({
            "emoji": "👩‍💼🚀",
            "zero_width": "a\u{200b}b",
            "rtl": "مرحبا",
            "newline": "line1\nline2\ttab",
            "quote": "\"'`",
            "empty": "",
            "big": i64::MAX,
            "small": i64::MIN,
            "huge": u64::MAX,
            "float": 1.5,
            "neg": -0.25,
            "tenth": 0.1,
            "名字": "值",
            "dotted.key": "d",
            "deep": { "a": { "b": { "c": { "d": [[], {}, [null, true, false]] } } } },
            "long": "长".repeat(5000),
        }),
    )
    .await;
    assert_eq!(get(&store, r.id).await, Some(r.clone()));
    let v = store.get_version(OBJ, r.id, 1).await.expect("version").expect("version 1");
    assert_eq!(v.fields, r.fields);
    let mut q = query();
    q.filters = vec![col(field("emoji", ValueKind::Text), FilterOp::Eq(FilterValue::Text("👩‍💼🚀".into())))];
    assert_eq!(id_set(&list_all(&store, q).await), ids([&r]));

    // A NUL character either round-trips or is refused without a partial write.
    let nul = new_record(json!({ "name": "a\u{0}b" }));
    match apply(&store, creation(&nul)).await {
        Ok(_) => assert_eq!(get(&store, nul.id).await, Some(nul)),
        Err(StoreError::Internal(_)) => assert_eq!(get(&store, nul.id).await, None),
        Err(e) => panic!("unexpected error {e:?}"),
    }
}

// The issue-5 cases live in their own file.
pub use crate::job_cases::*;
pub use crate::monitor_cases::*;
// The issue-3 access cases too.
pub use crate::access_cases::*;
// ---- duplicates and merges ---------------------------------------------------------------

fn keyed(record: &StoredRecord, keys: &[&[u8]]) -> custodian_store::MatchKeySet {
    custodian_store::MatchKeySet {
        object: record.object.clone(),
        record_id: record.id,
        keys: keys.iter().map(|k| k.to_vec()).collect(),
        guard: None,
    }
}

/// Creates a record with these match keys.
pub async fn create_keyed(store: &DynStore, v: Value, keys: &[&[u8]]) -> StoredRecord {
    let r = new_record(v);
    write_with_keys(store, creation(&r), keyed(&r, keys)).await;
    r
}

async fn write_with_keys(store: &DynStore, w: RecordWrite, keys: custodian_store::MatchKeySet) {
    let audit = vec![audit_for(&w)];
    store
        .write(WriteBatch { records: vec![w], audit, match_keys: vec![keys], ..Default::default() })
        .await
        .expect("write");
}

/// The distinct records of the blocks of `keys`, sorted.
pub(crate) async fn block_members(store: &DynStore, object: &str, keys: &[&[u8]]) -> Vec<Uuid> {
    let keys: Vec<Vec<u8>> = keys.iter().map(|k| k.to_vec()).collect();
    let mut ids: Vec<Uuid> =
        store.match_blocks(object, &keys).await.expect("match").into_iter().map(|(_, id)| id).collect();
    ids.sort();
    ids.dedup();
    ids
}

fn sorted(mut ids: Vec<Uuid>) -> Vec<Uuid> {
    ids.sort();
    ids
}

pub async fn match_keys_find_active_candidates(store: DynStore) {
    let a = new_record(json!({ "name": "a" }));
    let b = new_record(json!({ "name": "b" }));
    let c = new_record(json!({ "name": "c" }));
    write_with_keys(&store, creation(&a), keyed(&a, &[b"k1", b"k2"])).await;
    write_with_keys(&store, creation(&b), keyed(&b, &[b"k2"])).await;
    write_with_keys(&store, creation(&c), keyed(&c, &[b"k3"])).await;
    // Each key's block, by key position then id; other objects never.
    let keys = vec![b"k1".to_vec(), b"k2".to_vec(), b"nothing".to_vec()];
    let blocks = store.match_blocks(OBJ, &keys).await.expect("match");
    let (lo, hi) = if a.id < b.id { (a.id, b.id) } else { (b.id, a.id) };
    assert_eq!(blocks, vec![(0, a.id), (1, lo), (1, hi)]);
    // The same key twice is answered at both positions.
    let twice = store.match_blocks(OBJ, &[b"k3".to_vec(), b"k3".to_vec()]).await.expect("match");
    assert_eq!(twice, vec![(0, c.id), (1, c.id)]);
    assert!(store.match_blocks("companies", &keys).await.expect("match").is_empty());
    assert!(store.match_blocks(OBJ, &[]).await.expect("match").is_empty());
    // With the stamp, in one read: the same blocks, the stamp the object has now (0 for an
    // object without keys), with keys or without.
    let stamp = store.match_key_stamp(OBJ).await.expect("stamp");
    assert!(stamp > 0);
    assert_eq!(store.stamped_match_blocks(OBJ, &keys).await.expect("match"), (stamp, blocks.clone()));
    assert_eq!(store.stamped_match_blocks(OBJ, &[]).await.expect("match"), (stamp, vec![]));
    assert_eq!(store.stamped_match_blocks("companies", &keys).await.expect("match"), (0, vec![]));
    // More keys than one statement takes (SQLite reads them in several, in key order: these
    // two keys sort after every filler, so the last statement finds them): all found at their
    // positions, one stamp.
    let mut many: Vec<Vec<u8>> = (0..2500u32).map(|i| format!("filler {i}").into_bytes()).collect();
    many.insert(1200, b"k3".to_vec());
    many.push(b"k1".to_vec());
    assert_eq!(store.stamped_match_blocks(OBJ, &many).await.expect("match"), (stamp, vec![(1200, c.id), (2501, a.id)]));
    // A new write replaces the record's keys; deleted records are no candidates.
    let a2 = successor(&a, json!({ "name": "a2" }));
    write_with_keys(&store, change(WriteAction::Update, &a, &a2), keyed(&a2, &[b"k3"])).await;
    assert_eq!(block_members(&store, OBJ, &[b"k1", b"k2"]).await, vec![b.id]);
    let mut b2 = successor(&b, json!({ "name": "b" }));
    b2.deleted_at = Some(b2.updated_at);
    write_with_keys(&store, change(WriteAction::Delete, &b, &b2), keyed(&b2, &[b"k2"])).await;
    assert!(block_members(&store, OBJ, &[b"k1", b"k2"]).await.is_empty());
    assert_eq!(block_members(&store, OBJ, &[b"k3"]).await, sorted(vec![a.id, c.id]));
    // A failing batch leaves the keys as they were.
    let stale = change(WriteAction::Update, &a, &successor(&a, json!({ "name": "x" })));
    let audit = vec![audit_for(&stale)];
    let r = store
        .write(WriteBatch { records: vec![stale], audit, match_keys: vec![keyed(&a, &[b"k9"])], ..Default::default() })
        .await;
    assert!(matches!(r, Err(StoreError::VersionConflict { .. })), "{r:?}");
    assert!(block_members(&store, OBJ, &[b"k9"]).await.is_empty());
}

/// `keys` of a record, guarded as a duplicate check that read `seen_stamp` would guard them:
/// `(key, field, selective)`.
fn guarded(record: &StoredRecord, keys: &[(&[u8], u8, bool)], seen_stamp: i64) -> custodian_store::MatchKeySet {
    let mut set = keyed(record, &keys.iter().map(|(k, _, _)| *k).collect::<Vec<_>>());
    set.guard = Some(custodian_store::MatchGuard {
        seen_stamp,
        keys: keys
            .iter()
            .map(|(k, field, selective)| custodian_store::GuardKey {
                key: k.to_vec(),
                field: *field,
                selective: *selective,
            })
            .collect(),
    });
    set
}

async fn try_write_with_keys(
    store: &DynStore,
    w: RecordWrite,
    keys: custodian_store::MatchKeySet,
) -> custodian_store::StoreResult<()> {
    let audit = vec![audit_for(&w)];
    store.write(WriteBatch { records: vec![w], audit, match_keys: vec![keys], ..Default::default() }).await.map(|_| ())
}

/// A write whose duplicate check read the match-key stamp before a record it would have
/// compared with was stored is refused (`StaleCheck`), nothing written; records that would not
/// have been candidates, records the check saw, and the write's own batch never refuse it. Of
/// two such writes sent at once, exactly one commits.
pub async fn stale_duplicate_checks_are_refused_at_commit(store: DynStore) {
    let before = store.match_key_stamp(OBJ).await.expect("stamp");
    let a = new_record(json!({ "name": "a" }));
    write_with_keys(&store, creation(&a), keyed(&a, &[b"name", b"phone", b"email"])).await;
    let after_a = store.match_key_stamp(OBJ).await.expect("stamp");
    assert!(after_a > before, "storing keys moves the stamp");
    assert_eq!(store.stamped_match_blocks(OBJ, &[b"name".to_vec()]).await.expect("match"), (after_a, vec![(0, a.id)]));
    assert_eq!(store.match_key_stamp("companies").await.expect("stamp"), 0, "per object");

    // Checked before `a` was stored, sharing keys of two fields with it: refused.
    let w = new_record(json!({ "name": "w" }));
    let r =
        try_write_with_keys(&store, creation(&w), guarded(&w, &[(b"name", 0, false), (b"phone", 1, false)], before))
            .await;
    assert!(matches!(r, Err(StoreError::StaleCheck)), "{r:?}");
    assert!(
        store.get_record(OBJ, w.id, &RowScope::All).await.expect("get").is_none(),
        "nothing of a refused write is stored"
    );
    assert_eq!(block_members(&store, OBJ, &[b"name"]).await, vec![a.id]);
    // One selective key is enough.
    let r = try_write_with_keys(&store, creation(&w), guarded(&w, &[(b"email", 2, true)], before)).await;
    assert!(matches!(r, Err(StoreError::StaleCheck)), "{r:?}");
    // Two crowded keys of one field (namesakes) are not; nor are keys the check saw.
    try_write_with_keys(&store, creation(&w), guarded(&w, &[(b"name", 0, false), (b"email", 0, false)], before))
        .await
        .expect("namesake");
    let v = new_record(json!({ "name": "v" }));
    let now = store.match_key_stamp(OBJ).await.expect("stamp");
    try_write_with_keys(&store, creation(&v), guarded(&v, &[(b"name", 0, true), (b"phone", 1, true)], now))
        .await
        .expect("seen");
    // A record changed after the check counts as unseen: its new keys were not compared.
    let a2 = successor(&a, json!({ "name": "a2" }));
    write_with_keys(&store, change(WriteAction::Update, &a, &a2), keyed(&a2, &[b"x", b"y"])).await;
    let seen = store.match_key_stamp(OBJ).await.expect("stamp");
    let u = new_record(json!({ "name": "u" }));
    let a3 = successor(&a2, json!({ "name": "a3" }));
    write_with_keys(&store, change(WriteAction::Update, &a2, &a3), keyed(&a3, &[b"x", b"y"])).await;
    let r = try_write_with_keys(&store, creation(&u), guarded(&u, &[(b"x", 0, false), (b"y", 1, false)], seen)).await;
    assert!(matches!(r, Err(StoreError::StaleCheck)), "{r:?}");

    // One batch's own writes were compared with each other by its check.
    let (p, q) = (new_record(json!({ "name": "p" })), new_record(json!({ "name": "q" })));
    let stamp = store.match_key_stamp(OBJ).await.expect("stamp");
    let mut batch = WriteBatch::default();
    for r in [&p, &q] {
        let w = creation(r);
        batch.audit.push(audit_for(&w));
        batch.records.push(w);
        batch.match_keys.push(guarded(r, &[(b"pq1", 0, true), (b"pq2", 1, true)], stamp));
    }
    store.write(batch).await.expect("a batch never refuses itself");

    // Two near-duplicates checked at the same moment, sent at once, several times over: one
    // commits, the other is refused (whichever order the store applies them in).
    for round in 0..8u8 {
        let stamp = store.match_key_stamp(OBJ).await.expect("stamp");
        let key1 = [b'r', round, 1];
        let key2 = [b'r', round, 2];
        let twins: Vec<StoredRecord> =
            (0..2).map(|i| new_record(json!({ "name": format!("twin {round} {i}") }))).collect();
        let sends = twins.iter().map(|t| {
            let store = store.clone();
            let keys = guarded(t, &[(&key1[..], 0, false), (&key2[..], 1, false)], stamp);
            let w = creation(t);
            async move { try_write_with_keys(&store, w, keys).await }
        });
        let outcomes = futures::future::join_all(sends).await;
        let committed = outcomes.iter().filter(|r| r.is_ok()).count();
        assert_eq!(committed, 1, "round {round}: {outcomes:?}");
        assert!(outcomes.iter().any(|r| matches!(r, Err(StoreError::StaleCheck))), "round {round}: {outcomes:?}");
        assert_eq!(block_members(&store, OBJ, &[&key1[..]]).await.len(), 1);
    }
}

/// A key shared by more records than the cap contributes only the cap, in key order; the
/// answer for a batch of keys is the answer for each key, whatever the number of keys.
pub async fn match_keys_bound_common_blocks(store: DynStore) {
    use custodian_store::MATCH_BLOCK_CAP;
    let crowd: Vec<StoredRecord> =
        (0..MATCH_BLOCK_CAP + 30).map(|i| new_record(json!({ "name": format!("w{i}") }))).collect();
    let mut target = new_record(json!({ "name": "t" }));
    target.id = Uuid::from_u128(u128::MAX);
    let mut batch = WriteBatch::default();
    for r in &crowd {
        let w = creation(r);
        batch.audit.push(audit_for(&w));
        batch.records.push(w);
        batch.match_keys.push(keyed(r, &[b"common"]));
    }
    let w = creation(&target);
    batch.audit.push(audit_for(&w));
    batch.records.push(w);
    batch.match_keys.push(keyed(&target, &[b"common", b"rare"]));
    store.write(batch).await.expect("write");
    // The target sorts after the whole crowd in key order, so only the rare key finds it.
    let only_common = block_members(&store, OBJ, &[b"common"]).await;
    assert_eq!(only_common.len(), MATCH_BLOCK_CAP as usize);
    assert!(!only_common.contains(&target.id));
    let mut first_ids: Vec<Uuid> = crowd.iter().map(|r| r.id).collect();
    first_ids.sort();
    first_ids.truncate(MATCH_BLOCK_CAP as usize);
    assert_eq!(only_common, first_ids, "the first records in key order");
    let both = block_members(&store, OBJ, &[b"common", b"rare"]).await;
    assert!(both.contains(&target.id));
    assert_eq!(both.len(), MATCH_BLOCK_CAP as usize + 1);
    // Many keys in one call (more than one statement's worth on SQLite): each position
    // answered as alone.
    let mut keys: Vec<Vec<u8>> = (0..450).map(|i| format!("none{i}").into_bytes()).collect();
    keys[7] = b"rare".to_vec();
    keys[333] = b"rare".to_vec();
    keys[449] = b"common".to_vec();
    let blocks = store.match_blocks(OBJ, &keys).await.expect("match");
    assert_eq!(blocks.iter().filter(|(i, _)| *i == 7 || *i == 333).count(), 2);
    assert!(blocks.iter().filter(|(i, _)| *i == 7 || *i == 333).all(|(_, id)| *id == target.id));
    assert_eq!(blocks.iter().filter(|(i, _)| *i == 449).count(), MATCH_BLOCK_CAP as usize);
    assert_eq!(blocks.len(), MATCH_BLOCK_CAP as usize + 2);
}

pub async fn scan_jobs_candidates_and_dismissals(store: DynStore) {
    use custodian_store::{CandidateRow, DismissalRow, ScanJobRow};
    let a = create(&store, json!({ "name": "a" })).await;
    let b = create(&store, json!({ "name": "b" })).await;
    let c = create(&store, json!({ "name": "c" })).await;
    let job = ScanJobRow {
        id: Uuid::now_v7(),
        object: OBJ.into(),
        status: "running".into(),
        requested_by: Some(Uuid::now_v7()),
        created_at: now_micros(),
        finished_at: None,
        records: 0,
        pairs: 0,
        error: None,
        auto_merge: Some(json!({ "threshold": 0.99, "rule": "survivor" })),
    };
    store.create_scan_job(job.clone(), scan_job_queued(&job), AuditDraft::new("duplicates.scan")).await.expect("job");
    assert_eq!(store.get_scan_job(job.id).await.expect("get"), Some(job.clone()));
    assert_eq!(store.get_scan_job(Uuid::now_v7()).await.expect("get"), None);
    // The scan's job was queued with it, for any server to claim.
    let claimed = store.claim_job("server-a", now_micros(), 60_000_000).await.expect("claim").expect("queued");
    assert_eq!(
        (claimed.kind.as_str(), &claimed.params),
        (custodian_store::JOB_DUPLICATE_SCAN, &json!({ "scan_job_id": job.id }))
    );
    let pair = |x: &StoredRecord, y: &StoredRecord, score: f64| CandidateRow {
        id: Uuid::now_v7(),
        object: OBJ.into(),
        job_id: job.id,
        cluster_id: x.id.min(y.id),
        record_a: x.id.min(y.id),
        record_b: x.id.max(y.id),
        score,
        reasons: json!(["name:exact"]),
        status: "open".into(),
        created_at: now_micros(),
        decided_at: None,
        decided_by: None,
        merge_id: None,
    };
    let ab = pair(&a, &b, 0.97);
    let bc = pair(&b, &c, 0.85);
    // What an auto-merge did is kept with the finished job.
    let outcome = json!({ "threshold": 0.99, "rule": "survivor", "merged": 0, "records_merged": 0 });
    let done = ScanJobRow {
        status: "done".into(),
        finished_at: Some(now_micros()),
        records: 3,
        pairs: 2,
        auto_merge: Some(outcome),
        ..job.clone()
    };
    store.finish_scan_job(done.clone(), vec![ab.clone(), bc.clone()]).await.expect("finish");
    assert_eq!(store.get_scan_job(job.id).await.expect("get"), Some(done.clone()));
    let merged = json!({ "threshold": 0.99, "rule": "survivor", "merged": 2, "records_merged": 3 });
    store.set_scan_auto_merge(job.id, merged.clone()).await.expect("auto-merge outcome");
    let got = store.get_scan_job(job.id).await.expect("get").expect("job");
    assert_eq!(got, ScanJobRow { auto_merge: Some(merged), ..done });
    assert!(matches!(store.set_scan_auto_merge(Uuid::now_v7(), json!({})).await, Err(StoreError::NotFound)));
    let open = store.list_candidates(OBJ, "open", None, 10).await.expect("list");
    assert_eq!(open, vec![ab.clone(), bc.clone()]);
    assert_eq!(store.list_candidates(OBJ, "open", Some(ab.id), 10).await.expect("list"), vec![bc.clone()]);
    assert_eq!(store.get_candidate(bc.id).await.expect("get"), Some(bc.clone()));

    let dismissal = DismissalRow {
        object: OBJ.into(),
        record_a: b.id.max(a.id),
        record_b: b.id.min(a.id),
        reason: "两个人".into(),
        decided_by: Some(Uuid::now_v7()),
        decided_at: now_micros(),
    };
    store.dismiss_candidate(ab.id, dismissal.clone(), AuditDraft::new("duplicates.dismiss")).await.expect("dismiss");
    assert!(matches!(
        store.dismiss_candidate(ab.id, dismissal.clone(), AuditDraft::new("duplicates.dismiss")).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(store.dismissed_with(OBJ, a.id, &[b.id, c.id]).await.expect("dismissed"), vec![b.id]);
    assert_eq!(store.dismissed_with(OBJ, b.id, &[a.id, c.id]).await.expect("dismissed"), vec![a.id]);
    assert!(store.dismissed_with("companies", a.id, &[b.id]).await.expect("dismissed").is_empty());
    let listed = store.list_dismissals(OBJ).await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].record_a, listed[0].record_b), (a.id.min(b.id), a.id.max(b.id)));
    assert_eq!(store.list_candidates(OBJ, "dismissed", None, 10).await.expect("list")[0].id, ab.id);

    // A new finished scan replaces the open candidates and keeps the decided ones.
    let job2 = ScanJobRow { id: Uuid::now_v7(), ..job.clone() };
    store.create_scan_job(job2.clone(), scan_job_queued(&job2), AuditDraft::new("duplicates.scan")).await.expect("job");
    let ac = CandidateRow { job_id: job2.id, ..pair(&a, &c, 0.9) };
    let done2 = ScanJobRow { status: "done".into(), finished_at: Some(now_micros()), ..job2.clone() };
    store.finish_scan_job(done2, vec![ac.clone()]).await.expect("finish");
    assert_eq!(store.list_candidates(OBJ, "open", None, 10).await.expect("list"), vec![ac.clone()]);
    assert_eq!(store.list_candidates(OBJ, "dismissed", None, 10).await.expect("list").len(), 1);
    // A failed scan keeps them too.
    let job3 = ScanJobRow { id: Uuid::now_v7(), ..job.clone() };
    store.create_scan_job(job3.clone(), scan_job_queued(&job3), AuditDraft::new("duplicates.scan")).await.expect("job");
    let failed = ScanJobRow { status: "failed".into(), error: Some("boom".into()), ..job3 };
    store.finish_scan_job(failed, Vec::new()).await.expect("finish");
    assert_eq!(store.list_candidates(OBJ, "open", None, 10).await.expect("list"), vec![ac.clone()]);
    // Candidates whose records are deleted are not listed.
    let mut c2 = successor(&c, json!({ "name": "c" }));
    c2.deleted_at = Some(c2.updated_at);
    apply(&store, change(WriteAction::Delete, &c, &c2)).await.expect("delete");
    assert!(store.list_candidates(OBJ, "open", None, 10).await.expect("list").is_empty());
    let events = store.list_audit(0, 1000).await.expect("audit");
    assert_eq!(events.iter().filter(|e| e.action == "duplicates.scan").count(), 3);
    assert_eq!(events.iter().filter(|e| e.action == "duplicates.dismiss").count(), 1);
}

pub async fn merge_rows_are_written_with_their_batch_and_undone_once(store: DynStore) {
    use custodian_store::{MergeChange, MergeRow};
    let survivor = create(&store, json!({ "name": "s" })).await;
    let loser = create(&store, json!({ "name": "l" })).await;
    let outsider = create(&store, json!({ "name": "o" })).await;
    let proposed = propose_pairs(&store, &[(survivor.id, loser.id), (loser.id, outsider.id)], 0.99, json!([])).await;
    let (candidate, beside) = (proposed[0].clone(), proposed[1].clone());
    let row = MergeRow {
        id: Uuid::now_v7(),
        object: OBJ.into(),
        survivor_id: survivor.id,
        loser_ids: vec![loser.id],
        records: json!([{ "object": OBJ, "id": loser.id, "before_version": 1, "after_version": 2, "role": "loser" }]),
        request: json!({ "rule": "newest", "fields": {} }),
        created_at: now_micros(),
        created_by: Some(Uuid::now_v7()),
        undone_at: None,
        undone_by: None,
    };
    // A batch that fails stores no merge row.
    let stale = change(WriteAction::Update, &loser, &successor(&loser, json!({ "name": "x" })));
    let mut bad = stale.clone();
    bad.expected_version = Some(7);
    let r = store
        .write(WriteBatch {
            records: vec![bad],
            audit: vec![AuditDraft::new("record.merge")],
            match_keys: Vec::new(),
            merge: Some(MergeChange::Record(Box::new(row.clone()))),
            ..Default::default()
        })
        .await;
    assert!(r.is_err());
    assert_eq!(store.get_merge(row.id).await.expect("get"), None);
    let mut gone = successor(&loser, json!({ "name": "l" }));
    gone.deleted_at = Some(gone.updated_at);
    store
        .write(WriteBatch {
            records: vec![change(WriteAction::Delete, &loser, &gone)],
            audit: vec![AuditDraft::new("record.merge")],
            match_keys: Vec::new(),
            merge: Some(MergeChange::Record(Box::new(row.clone()))),
            ..Default::default()
        })
        .await
        .expect("merge");
    assert_eq!(store.get_merge(row.id).await.expect("get"), Some(row.clone()));
    assert_eq!(store.merged_into(OBJ, loser.id).await.expect("merged"), Some(survivor.id));
    assert_eq!(store.merged_into(OBJ, survivor.id).await.expect("merged"), None);
    assert_eq!(store.merged_into("companies", loser.id).await.expect("merged"), None);
    // Open candidates between the merge's records are decided by it, and name it; they are
    // listed as merged although the loser is a tombstone now.
    let decided = store.get_candidate(candidate.id).await.expect("get").expect("candidate");
    assert_eq!((decided.status.as_str(), decided.merge_id), ("merged", Some(row.id)));
    assert_eq!(store.list_candidates(OBJ, "merged", None, 10).await.expect("list"), vec![decided]);
    // A pair of the loser and a record outside the merge was not merged: it stays open, out of
    // the queue while the loser is a tombstone.
    assert_eq!(store.get_candidate(beside.id).await.expect("get"), Some(beside.clone()));
    assert!(store.list_candidates(OBJ, "open", None, 10).await.expect("list").is_empty());
    let undo = |at: i64| WriteBatch {
        records: Vec::new(),
        audit: vec![AuditDraft::new("record.unmerge")],
        match_keys: Vec::new(),
        merge: Some(MergeChange::Undo { id: row.id, undone_at: at, undone_by: row.created_by }),
        ..Default::default()
    };
    let at = now_micros();
    store.write(undo(at)).await.expect("undo");
    let undone = store.get_merge(row.id).await.expect("get").expect("merge");
    assert_eq!((undone.undone_at, undone.undone_by), (Some(at), row.created_by));
    // Its pair is undecided again.
    assert_eq!(store.get_candidate(candidate.id).await.expect("get"), Some(candidate.clone()));
    assert_eq!(store.merged_into(OBJ, loser.id).await.expect("merged"), None);
    assert!(matches!(store.write(undo(at + 1)).await, Err(StoreError::AlreadyExists(_))));
    let missing = WriteBatch {
        merge: Some(MergeChange::Undo { id: Uuid::now_v7(), undone_at: at, undone_by: None }),
        ..Default::default()
    };
    assert!(matches!(store.write(missing).await, Err(StoreError::NotFound)));
    // Two concurrent undos of one merge: exactly one wins.
    let row2 = MergeRow { id: Uuid::now_v7(), ..row.clone() };
    store
        .write(WriteBatch { merge: Some(MergeChange::Record(Box::new(row2.clone()))), ..Default::default() })
        .await
        .expect("merge");
    let tries = (0..4).map(|i| {
        let store = store.clone();
        let id = row2.id;
        tokio::spawn(async move {
            store
                .write(WriteBatch {
                    merge: Some(MergeChange::Undo { id, undone_at: now_micros() + i, undone_by: None }),
                    ..Default::default()
                })
                .await
        })
    });
    let results = futures::future::join_all(tries).await;
    assert_eq!(results.into_iter().filter(|r| matches!(r, Ok(Ok(_)))).count(), 1);
}

// ---- MFA -----------------------------------------------------------------------------------

/// A fresh one-hour login session of `user_id`.
pub fn session_for(user_id: Uuid, token_hash: &str) -> SessionRow {
    let now = now_micros();
    SessionRow {
        token_hash: token_hash.into(),
        user_id,
        created_at: now,
        last_seen_at: now,
        expires_at: now + 3_600_000_000,
        ip: None,
        user_agent: None,
        kind: "session".into(),
        scope: "read_write".into(),
        name: None,
        step_up_until: None,
    }
}

fn pending_mfa(user_id: Uuid, secret: &str) -> UserMfaRow {
    UserMfaRow {
        user_id,
        secret: secret.into(),
        enabled: false,
        last_used_step: 0,
        created_at: now_micros(),
        confirmed_at: None,
        recovery_codes_left: 0,
    }
}

async fn enabled_mfa(store: &DynStore, user_id: Uuid, step: i64, codes: &[&str]) {
    store
        .start_mfa_enrolment(pending_mfa(user_id, "enc:v1:1:secret"), AuditDraft::new("mfa.enroll_start"))
        .await
        .expect("start");
    let hashes = codes.iter().map(|c| (*c).to_owned()).collect();
    assert!(
        store
            .confirm_mfa_enrolment(user_id, step, hashes, now_micros(), AuditDraft::new("mfa.enroll_confirm"))
            .await
            .expect("confirm")
    );
}

pub async fn mfa_enrolment_and_replay_guard(store: DynStore) {
    let user = Uuid::now_v7();
    assert_eq!(store.get_user_mfa(user).await.expect("get"), None);
    store
        .start_mfa_enrolment(pending_mfa(user, "enc:v1:1:first"), AuditDraft::new("mfa.enroll_start"))
        .await
        .expect("start");
    // A second start while pending replaces the secret.
    store
        .start_mfa_enrolment(pending_mfa(user, "enc:v1:1:second"), AuditDraft::new("mfa.enroll_start"))
        .await
        .expect("restart");
    let pending = store.get_user_mfa(user).await.expect("get").expect("row");
    assert_eq!((pending.secret.as_str(), pending.enabled, pending.recovery_codes_left), ("enc:v1:1:second", false, 0));
    // A factor cannot be used before it is confirmed.
    let stepup = MfaEffect::StepUp { token_hash: "t".into(), until: 1 };
    assert!(!store.use_mfa_factor(user, MfaFactor::Totp { step: 50 }, stepup.clone(), vec![]).await.expect("use"));
    let codes: Vec<String> = (0..10).map(|i| format!("hash-{i}")).collect();
    assert!(
        store
            .confirm_mfa_enrolment(user, 100, codes, now_micros(), AuditDraft::new("mfa.enroll_confirm"))
            .await
            .expect("confirm")
    );
    // Confirming twice does nothing.
    assert!(!store.confirm_mfa_enrolment(user, 101, vec![], now_micros(), AuditDraft::new("x")).await.expect("again"));
    let active = store.get_user_mfa(user).await.expect("get").expect("row");
    assert!(active.enabled);
    assert_eq!((active.last_used_step, active.recovery_codes_left), (100, 10));
    assert!(active.confirmed_at.is_some());
    // An enabled factor is not replaced by a new enrolment.
    assert!(matches!(
        store.start_mfa_enrolment(pending_mfa(user, "enc:v1:1:third"), AuditDraft::new("x")).await,
        Err(StoreError::AlreadyExists(_))
    ));
    store.create_session(session_for(user, "tok"), AuditDraft::new("auth.login")).await.expect("session");
    let stepup = MfaEffect::StepUp { token_hash: "tok".into(), until: 42 };
    // The step used at confirmation, and earlier ones, are refused.
    for step in [99, 100] {
        assert!(
            !store
                .use_mfa_factor(user, MfaFactor::Totp { step }, stepup.clone(), vec![AuditDraft::new("x")])
                .await
                .expect("use")
        );
    }
    assert!(
        store
            .use_mfa_factor(user, MfaFactor::Totp { step: 101 }, stepup.clone(), vec![AuditDraft::new("auth.step_up")])
            .await
            .expect("use")
    );
    assert!(
        !store
            .use_mfa_factor(user, MfaFactor::Totp { step: 101 }, stepup, vec![AuditDraft::new("x")])
            .await
            .expect("replay")
    );
    assert_eq!(store.get_user_mfa(user).await.expect("get").expect("row").last_used_step, 101);
    let actions: Vec<String> = all_audit(&store).await.into_iter().map(|r| r.action).collect();
    assert_eq!(
        actions,
        vec!["mfa.enroll_start", "mfa.enroll_start", "mfa.enroll_confirm", "auth.login", "auth.step_up"],
        "refused factors change nothing and append nothing"
    );
}

pub async fn mfa_recovery_codes_are_single_use(store: DynStore) {
    let user = Uuid::now_v7();
    enabled_mfa(&store, user, 10, &["code-a", "code-b"]).await;
    store.create_session(session_for(user, "tok"), AuditDraft::new("auth.login")).await.expect("session");
    let effect = MfaEffect::StepUp { token_hash: "tok".into(), until: 7 };
    let code = |h: &str| MfaFactor::RecoveryCode { code_hash: h.into(), now: now_micros() };
    assert!(
        store
            .use_mfa_factor(user, code("code-a"), effect.clone(), vec![AuditDraft::new("mfa.recovery_used")])
            .await
            .expect("use")
    );
    assert!(!store.use_mfa_factor(user, code("code-a"), effect.clone(), vec![]).await.expect("reuse"));
    assert!(!store.use_mfa_factor(user, code("unknown"), effect.clone(), vec![]).await.expect("unknown"));
    // Another user's code is not this user's.
    let other = Uuid::now_v7();
    enabled_mfa(&store, other, 10, &["code-z"]).await;
    assert!(!store.use_mfa_factor(user, code("code-z"), effect, vec![]).await.expect("foreign"));
    assert_eq!(store.get_user_mfa(user).await.expect("get").expect("row").recovery_codes_left, 1);
    assert_eq!(store.get_session("tok").await.expect("get").expect("session").step_up_until, Some(7));
}

pub async fn mfa_login_challenge_is_single_use(store: DynStore) {
    let user = Uuid::now_v7();
    enabled_mfa(&store, user, 10, &[]).await;
    let now = now_micros();
    let challenge =
        MfaChallengeRow { challenge_hash: "ch".into(), user_id: user, created_at: now, expires_at: now + 300_000_000 };
    store.create_mfa_challenge(challenge.clone(), AuditDraft::new("auth.mfa_challenge")).await.expect("challenge");
    assert_eq!(store.get_mfa_challenge("ch").await.expect("get"), Some(challenge.clone()));
    assert_eq!(store.get_mfa_challenge("other").await.expect("get"), None);
    let login = |hash: &str, token: &str, at: i64| MfaEffect::Login {
        challenge_hash: hash.into(),
        now: at,
        session: session_for(user, token),
    };
    // An unknown challenge fails the whole transaction: the step is not consumed.
    assert!(matches!(
        store
            .use_mfa_factor(user, MfaFactor::Totp { step: 11 }, login("nope", "s0", now), vec![AuditDraft::new("x")])
            .await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(store.get_user_mfa(user).await.expect("get").expect("row").last_used_step, 10);
    // Expired at `now`: refused the same way.
    assert!(matches!(
        store.use_mfa_factor(user, MfaFactor::Totp { step: 11 }, login("ch", "s0", now + 300_000_000), vec![]).await,
        Err(StoreError::NotFound)
    ));
    assert!(
        store
            .use_mfa_factor(
                user,
                MfaFactor::Totp { step: 11 },
                login("ch", "s1", now),
                vec![AuditDraft::new("auth.login")]
            )
            .await
            .expect("login")
    );
    assert_eq!(store.get_session("s1").await.expect("get").map(|s| s.user_id), Some(user));
    assert_eq!(store.get_mfa_challenge("ch").await.expect("get"), None, "consumed");
    assert!(matches!(
        store.use_mfa_factor(user, MfaFactor::Totp { step: 12 }, login("ch", "s2", now), vec![]).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(store.get_session("s0").await.expect("get"), None);
    assert_eq!(store.get_session("s2").await.expect("get"), None);
    // Creating a challenge forgets expired ones.
    let old = MfaChallengeRow { challenge_hash: "old".into(), user_id: user, created_at: now, expires_at: now + 1 };
    store.create_mfa_challenge(old, AuditDraft::new("auth.mfa_challenge")).await.expect("old");
    let fresh =
        MfaChallengeRow { challenge_hash: "new".into(), user_id: user, created_at: now + 2, expires_at: now + 100 };
    store.create_mfa_challenge(fresh, AuditDraft::new("auth.mfa_challenge")).await.expect("new");
    assert_eq!(store.get_mfa_challenge("old").await.expect("get"), None);
}

pub async fn mfa_step_up_and_reset(store: DynStore) {
    let user = Uuid::now_v7();
    enabled_mfa(&store, user, 10, &["c1"]).await;
    // Step-up on a session that does not exist (or is another user's) changes nothing.
    let other = Uuid::now_v7();
    store.create_session(session_for(other, "foreign"), AuditDraft::new("auth.login")).await.expect("session");
    assert!(matches!(
        store
            .use_mfa_factor(
                user,
                MfaFactor::Totp { step: 11 },
                MfaEffect::StepUp { token_hash: "foreign".into(), until: 5 },
                vec![]
            )
            .await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(store.get_user_mfa(user).await.expect("get").expect("row").last_used_step, 10);
    store.create_session(session_for(user, "mine"), AuditDraft::new("auth.login")).await.expect("session");
    assert!(
        store
            .use_mfa_factor(
                user,
                MfaFactor::Totp { step: 11 },
                MfaEffect::StepUp { token_hash: "mine".into(), until: 5 },
                vec![]
            )
            .await
            .expect("step up")
    );
    assert_eq!(store.get_session("mine").await.expect("get").expect("s").step_up_until, Some(5));
    assert_eq!(store.get_session("foreign").await.expect("get").expect("s").step_up_until, None);
    assert!(store.reset_mfa(user, AuditDraft::new("mfa.reset")).await.expect("reset"));
    assert_eq!(store.get_user_mfa(user).await.expect("get"), None);
    assert_eq!(store.get_session("mine").await.expect("get"), None, "reset ends the user's sessions");
    assert!(store.get_session("foreign").await.expect("get").is_some());
    assert!(!store.reset_mfa(user, AuditDraft::new("mfa.reset")).await.expect("reset again"));
    // After a reset the user can enrol again from scratch.
    enabled_mfa(&store, user, 3, &["c2"]).await;
    let row = store.get_user_mfa(user).await.expect("get").expect("row");
    assert_eq!((row.last_used_step, row.recovery_codes_left), (3, 1));
}

pub async fn mfa_concurrent_use_of_one_step_one_wins(store: DynStore) {
    let user = Uuid::now_v7();
    enabled_mfa(&store, user, 10, &[]).await;
    for i in 0..8 {
        store
            .create_session(session_for(user, &format!("t{i}")), AuditDraft::new("auth.login"))
            .await
            .expect("session");
    }
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let effect = MfaEffect::StepUp { token_hash: format!("t{i}"), until: 99 };
            store
                .use_mfa_factor(user, MfaFactor::Totp { step: 11 }, effect, vec![AuditDraft::new("auth.step_up")])
                .await
        }));
    }
    let mut wins = 0;
    for t in tasks {
        if t.await.expect("join").expect("use") {
            wins += 1;
        }
    }
    assert_eq!(wins, 1, "one code, one use");
}
