//! Conformance cases of field rules and background jobs (leases, progress, violations).

use crate::cases::{DynStore, OBJ, create, create_with, key, new_record, successor};
use custodian_store::{
    AuditDraft, FieldRulesRow, JobProgress, JobRow, KeyRefresh, RowScope, StoreError, ViolationRow, now_micros,
};
use serde_json::json;
use uuid::Uuid;

fn rules_row(field: &str, revision: i64) -> FieldRulesRow {
    FieldRulesRow {
        object: OBJ.into(),
        field: field.into(),
        rules: json!([{ "kind": "length", "max": revision }]),
        revision,
        updated_at: now_micros(),
        updated_by: Some(Uuid::now_v7()),
    }
}

pub fn job_row(kind: &str) -> JobRow {
    JobRow::pending(kind, OBJ, json!({ "field": "name" }), None, now_micros())
}

/// A page of no work that extends `claimant`'s lease on `job` by a minute.
pub fn progress(job: Uuid, claimant: &str) -> JobProgress {
    JobProgress {
        id: job,
        claimant: claimant.into(),
        now: now_micros(),
        lease_until: now_micros() + 60_000_000,
        cursor: None,
        scanned: 0,
        violations: Vec::new(),
        refresh: Vec::new(),
        finish: None,
    }
}

pub async fn field_rules_are_revised_with_their_job(store: DynStore) {
    assert!(store.list_field_rules().await.expect("list").is_empty());
    let job = job_row(custodian_store::JOB_RULE_CHECK);
    store.put_field_rules(rules_row("name", 1), job.clone(), AuditDraft::new("schema.set_rules")).await.expect("put");
    let rows = store.list_field_rules().await.expect("list");
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].field.as_str(), rows[0].revision), ("name", 1));
    assert_eq!(rows[0].rules, json!([{ "kind": "length", "max": 1 }]));
    assert_eq!(store.get_job(job.id).await.expect("job"), Some(job));
    // A change based on an outdated revision is refused and writes nothing (no job, no event).
    let events = store.list_audit(0, 1000).await.expect("audit").len();
    let stale = job_row(custodian_store::JOB_RULE_CHECK);
    let r = store.put_field_rules(rules_row("name", 1), stale.clone(), AuditDraft::new("schema.set_rules")).await;
    assert!(matches!(r, Err(StoreError::VersionConflict { current: 1 })), "{r:?}");
    assert_eq!(store.get_job(stale.id).await.expect("job"), None);
    assert_eq!(store.list_audit(0, 1000).await.expect("audit").len(), events);
    // Two servers changing the same revision at once: one wins.
    let (a, b) = tokio::join!(
        store.put_field_rules(rules_row("name", 2), job_row("rule_check"), AuditDraft::new("schema.set_rules")),
        store.put_field_rules(rules_row("name", 2), job_row("rule_check"), AuditDraft::new("schema.set_rules")),
    );
    assert_eq!(usize::from(a.is_ok()) + usize::from(b.is_ok()), 1, "{a:?} {b:?}");
    assert_eq!(store.list_field_rules().await.expect("list")[0].revision, 2);
}

pub async fn jobs_are_leased_once_and_taken_over_after_their_lease(store: DynStore) {
    let first = job_row(custodian_store::JOB_MATCH_KEYS);
    let second = job_row(custodian_store::JOB_RULE_CHECK);
    store.create_job(first.clone(), AuditDraft::new("duplicates.backfill")).await.expect("job");
    store.create_job(second.clone(), AuditDraft::new("schema.set_rules")).await.expect("job");
    let now = now_micros();
    let lease = 60_000_000;
    // Concurrent claims get different jobs; a third finds nothing.
    let (a, b) = tokio::join!(store.claim_job("server-a", now, lease), store.claim_job("server-b", now, lease));
    let (a, b) = (a.expect("claim").expect("a job"), b.expect("claim").expect("a job"));
    assert_ne!(a.id, b.id);
    assert_eq!(a.status, "running");
    assert!(store.claim_job("server-c", now, lease).await.expect("claim").is_none());
    // Only the holder saves progress.
    assert!(!store.save_job_progress(progress(a.id, "server-c")).await.expect("save"));
    let mut p = progress(a.id, a.claimed_by.as_deref().expect("holder"));
    p.cursor = Some(Uuid::now_v7());
    p.scanned = 7;
    assert!(store.save_job_progress(p.clone()).await.expect("save"));
    let saved = store.get_job(a.id).await.expect("job").expect("exists");
    assert_eq!((saved.scanned, saved.cursor), (7, p.cursor));
    // After the lease ends, another server takes the job over and resumes from its cursor; the
    // old holder can no longer save.
    let later = p.lease_until + 1;
    let taken = store.claim_job("server-c", later, lease).await.expect("claim").expect("expired job");
    assert!(taken.id == a.id || taken.id == b.id);
    let taken = if taken.id == a.id {
        taken
    } else {
        store.claim_job("server-c", later, lease).await.expect("claim").expect("a")
    };
    assert_eq!((taken.id, taken.cursor, taken.scanned), (a.id, p.cursor, 7));
    assert!(!store.save_job_progress(progress(a.id, "server-a")).await.expect("save"));
    assert!(!store.save_job_progress(progress(a.id, "server-b")).await.expect("save"));
    let mut done = progress(a.id, "server-c");
    done.scanned = 3;
    done.finish = Some(("done".into(), None));
    assert!(store.save_job_progress(done).await.expect("save"));
    let finished = store.get_job(a.id).await.expect("job").expect("exists");
    assert_eq!((finished.status.as_str(), finished.scanned), ("done", 10));
    assert!(finished.finished_at.is_some());
    // A finished job is never claimed again, nor saved.
    assert!(!store.save_job_progress(progress(a.id, "server-c")).await.expect("save"));
    let far = later + 10 * lease;
    while let Some(j) = store.claim_job("server-d", far, lease).await.expect("claim") {
        assert_ne!(j.id, a.id);
        let mut end = progress(j.id, "server-d");
        end.finish = Some(("failed".into(), Some("test".into())));
        assert!(store.save_job_progress(end).await.expect("save"));
    }
}

pub async fn jobs_of_one_kind_and_object_run_one_at_a_time(store: DynStore) {
    let kind = custodian_store::JOB_DUPLICATE_SCAN;
    let first = job_row(kind);
    let second = job_row(kind);
    let mut other_object = job_row(kind);
    other_object.object = "other".into();
    let other_kind = job_row(custodian_store::JOB_RULE_CHECK);
    for job in [&first, &second, &other_object, &other_kind] {
        store.create_job(job.clone(), AuditDraft::new("duplicates.scan")).await.expect("job");
    }
    let (now, lease) = (now_micros(), 60_000_000);
    // Servers claiming at once: the first scan, the other object's and the other kind's, never
    // the second scan of the object while the first runs.
    let claims =
        futures::future::join_all(["a", "b", "c", "d"].map(|server| store.claim_job(server, now, lease))).await;
    let mut claimed: Vec<Uuid> = claims.into_iter().filter_map(|c| c.expect("claim")).map(|j| j.id).collect();
    claimed.sort();
    let mut expected = vec![first.id, other_object.id, other_kind.id];
    expected.sort();
    assert_eq!(claimed, expected);
    // The first's lease ends: the first is taken over (it is older), still not the second.
    let later = now + lease + 1;
    let taken = store.claim_job("e", later, lease).await.expect("claim").expect("expired job");
    assert_eq!(taken.id, first.id);
    assert!(store.claim_job("e", later, lease).await.expect("claim").is_none_or(|j| j.id != second.id));
    // Once it is done, the second is claimed.
    crate::cases::finish_job(&store, first.id, "e").await;
    let next = store.claim_job("f", later, lease).await.expect("claim").expect("second");
    assert_eq!(next.id, second.id);
}

/// The tests' list of queued jobs (`cases::pending_jobs`) names each of two queued alike,
/// although the second cannot be claimed while the first runs.
pub async fn queued_jobs_alike_are_each_listed(store: DynStore) {
    for _ in 0..2 {
        store
            .create_job(job_row(custodian_store::JOB_DUPLICATE_SCAN), AuditDraft::new("duplicates.scan"))
            .await
            .expect("job");
    }
    let scan = (custodian_store::JOB_DUPLICATE_SCAN.to_owned(), OBJ.to_owned());
    assert_eq!(crate::cases::pending_jobs(&store).await, vec![scan.clone(), scan]);
}

pub async fn job_progress_records_violations_and_refreshes_keys(store: DynStore) {
    let owner = Uuid::now_v7();
    let mine = {
        let mut r = new_record(json!({ "name": "mine" }));
        r.owner_id = Some(owner);
        create_with(&store, r).await
    };
    let other = create(&store, json!({ "name": "other" })).await;
    let job = job_row(custodian_store::JOB_RULE_CHECK);
    store.create_job(job.clone(), AuditDraft::new("schema.set_rules")).await.expect("job");
    let claimed = store.claim_job("s", now_micros(), 60_000_000).await.expect("claim").expect("job");
    let violation =
        |r: Uuid, code: &str| ViolationRow { job_id: job.id, record_id: r, field: "name".into(), code: code.into() };
    let mut p = progress(claimed.id, "s");
    p.violations =
        vec![violation(mine.id, "pattern_mismatch"), violation(other.id, "duplicate"), violation(mine.id, "duplicate")];
    // Keys: the current version gets its unique key and match keys; a stale version is skipped.
    p.refresh = vec![
        KeyRefresh {
            object: OBJ.into(),
            record_id: mine.id,
            version: mine.version,
            match_keys: Some(vec![b"mk".to_vec()]),
            unique_key: Some(("name".into(), Some(key("name", 1).digest))),
            envelopes: Vec::new(),
        },
        KeyRefresh {
            object: OBJ.into(),
            record_id: other.id,
            version: other.version + 5,
            match_keys: Some(vec![b"mk".to_vec()]),
            unique_key: Some(("name".into(), Some(key("name", 2).digest))),
            envelopes: Vec::new(),
        },
    ];
    let stamp = store.match_key_stamp(OBJ).await.expect("stamp");
    assert!(store.save_job_progress(p.clone()).await.expect("save"));
    // Refreshed match keys are stamped like any written ones: a check in flight sees them.
    assert!(store.match_key_stamp(OBJ).await.expect("stamp") > stamp);
    // Saving the same violations again does not count them twice.
    let mut again = progress(claimed.id, "s");
    again.violations = p.violations.clone();
    assert!(store.save_job_progress(again).await.expect("save"));
    assert_eq!(store.get_job(job.id).await.expect("job").expect("exists").found, 4);
    assert_eq!(crate::cases::block_members(&store, OBJ, &[b"mk"]).await, vec![mine.id]);
    // The refreshed unique key is enforced: another record cannot take it.
    let mut taker = new_record(json!({ "name": "taker" }));
    taker.owner_id = None;
    let mut w = crate::cases::creation(&taker);
    w.unique_keys = vec![key("name", 1)];
    let r = crate::cases::apply(&store, w).await;
    assert!(matches!(r, Err(StoreError::UniqueViolation { .. })), "{r:?}");
    // Violations are listed in (record, field, code) order, paged, inside the row scope only.
    let all = store.list_job_violations(job.id, &RowScope::All, None, 10).await.expect("list");
    assert_eq!(all.len(), 3);
    let mut sorted = all.clone();
    sorted.sort();
    assert_eq!(all, sorted);
    let page = store.list_job_violations(job.id, &RowScope::All, Some(&all[0]), 1).await.expect("list");
    assert_eq!(page, vec![all[1].clone()]);
    let scope = RowScope::Restricted { owner_ids: vec![owner], team_ids: Vec::new(), record_ids: Vec::new() };
    let scoped = store.list_job_violations(job.id, &scope, None, 10).await.expect("list");
    assert_eq!(scoped.len(), 2);
    assert!(scoped.iter().all(|v| v.record_id == mine.id));
    let nothing = RowScope::Restricted { owner_ids: Vec::new(), team_ids: Vec::new(), record_ids: Vec::new() };
    assert!(store.list_job_violations(job.id, &nothing, None, 10).await.expect("list").is_empty());
    // A newer version of a record keeps the keys its own write computed.
    let next = successor(&mine, json!({ "name": "mine 2" }));
    crate::cases::apply(&store, crate::cases::change(custodian_store::WriteAction::Update, &mine, &next))
        .await
        .expect("update");
    let mut stale = progress(claimed.id, "s");
    stale.refresh = vec![KeyRefresh {
        object: OBJ.into(),
        record_id: mine.id,
        version: mine.version,
        match_keys: Some(vec![b"old".to_vec()]),
        unique_key: None,
        envelopes: Vec::new(),
    }];
    assert!(store.save_job_progress(stale).await.expect("save"));
    assert!(crate::cases::block_members(&store, OBJ, &[b"old"]).await.is_empty());
}

/// A key rotation's job seals values again: the new envelopes replace the fields they name in
/// the record's current state only while the record is still at the version the job read; the
/// other fields and the stored versions keep what they hold.
pub async fn reencryption_replaces_current_envelopes_only(store: DynStore) {
    let record = create(&store, json!({ "name": "张三", "mobile": "enc:v1:1:AAAA", "email": "enc:v1:1:BBBB" })).await;
    let moved = create(&store, json!({ "name": "李四", "mobile": "enc:v1:1:CCCC" })).await;
    let next = successor(&moved, json!({ "name": "李四", "mobile": "enc:v1:1:DDDD" }));
    crate::cases::apply(&store, crate::cases::change(custodian_store::WriteAction::Update, &moved, &next))
        .await
        .expect("update");
    let job = job_row(custodian_store::JOB_REENCRYPT);
    store.create_job(job.clone(), AuditDraft::new("key.rotate")).await.expect("job");
    let claimed = store.claim_job("s", now_micros(), 60_000_000).await.expect("claim").expect("job");
    let refresh = |r: &custodian_store::StoredRecord, envelopes: Vec<(&str, &str)>| KeyRefresh {
        object: OBJ.into(),
        record_id: r.id,
        version: r.version,
        match_keys: None,
        unique_key: None,
        envelopes: envelopes.into_iter().map(|(f, e)| (f.to_owned(), e.to_owned())).collect(),
    };
    let mut p = progress(claimed.id, "s");
    p.refresh = vec![
        refresh(&record, vec![("mobile", "enc:v1:2:NEW1"), ("email", "enc:v1:2:NEW2")]),
        // Read before the update: stale, skipped.
        refresh(&moved, vec![("mobile", "enc:v1:2:STALE")]),
    ];
    p.finish = Some(("done".into(), None));
    assert!(store.save_job_progress(p).await.expect("save"));
    let now = store.get_record(OBJ, record.id, &RowScope::All).await.expect("get").expect("exists");
    assert_eq!(
        now.fields,
        json!({ "name": "张三", "mobile": "enc:v1:2:NEW1", "email": "enc:v1:2:NEW2" })
            .as_object()
            .cloned()
            .unwrap_or_default()
    );
    assert_eq!(now.version, record.version, "no new version: the values did not change");
    let v1 = store.get_version(OBJ, record.id, record.version).await.expect("version").expect("exists");
    assert_eq!(v1.fields["mobile"], "enc:v1:1:AAAA", "versions are immutable");
    let later = store.get_record(OBJ, moved.id, &RowScope::All).await.expect("get").expect("exists");
    assert_eq!(later.fields["mobile"], "enc:v1:1:DDDD");
    assert_eq!(store.get_job(job.id).await.expect("job").expect("exists").found, 1);
}
