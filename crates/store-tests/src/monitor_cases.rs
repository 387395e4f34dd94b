//! Conformance cases of the audit query, activity buckets, alerts, notifications and the outbox
//! (issue 5). Re-exported from `cases` so that `conformance_tests!` runs them on both backends.

use crate::cases::{DynStore, audit_for, creation, new_record};
use custodian_store::{
    ActionFilter, AlertRow, AlertRuleRow, AuditDraft, AuditQuery, BucketQuery, DeliveryOutcome, Measure,
    NotificationRow, OutboxRow, StoreError, WriteBatch,
};
use serde_json::json;
use std::collections::HashSet;
use uuid::Uuid;

fn event(action: &str, actor: Uuid, at: i64, object: Option<&str>, record: Option<Uuid>) -> AuditDraft {
    let mut d = AuditDraft::new(action);
    d.actor_id = Some(actor);
    d.at = at;
    d.object = object.map(str::to_owned);
    d.record_id = record;
    d
}

pub async fn audit_query_filters_and_pages(store: DynStore) {
    let (alice, bob) = (Uuid::now_v7(), Uuid::now_v7());
    let (r1, r2) = (Uuid::now_v7(), Uuid::now_v7());
    let base = 1_700_000_000_000_000i64;
    let mut drafts = Vec::new();
    for i in 0..30i64 {
        let actor = if i % 2 == 0 { alice } else { bob };
        let (action, object, record) = match i % 3 {
            0 => ("record.view", Some("contacts"), Some(r1)),
            1 => ("record.update", Some("deals"), Some(r2)),
            _ => ("auth.login", None, None),
        };
        drafts.push(event(action, actor, base + i * 1_000_000, object, record));
    }
    // An action that sorts between "record." and "record/" byte-wise but is not a prefix match.
    drafts.push(event("recordx", alice, base + 40_000_000, None, None));
    store.append_audit(drafts).await.expect("append");

    let q = |f: fn(&mut AuditQuery)| {
        let mut q = AuditQuery { limit: 1000, ..Default::default() };
        f(&mut q);
        q
    };
    let all = store.query_audit(&q(|_| {})).await.expect("query");
    assert_eq!(all.len(), 31);
    assert!(all.windows(2).all(|w| w[0].seq > w[1].seq), "newest first");

    let mut by_actor = q(|_| {});
    by_actor.actor_id = Some(alice);
    let rows = store.query_audit(&by_actor).await.expect("actor");
    assert_eq!(rows.len(), 16);
    assert!(rows.iter().all(|r| r.actor_id == Some(alice)));
    assert_eq!(store.count_audit(&by_actor).await.expect("count"), 16);

    let prefix = q(|q| q.action = Some(ActionFilter::Prefix("record.".into())));
    let rows = store.query_audit(&prefix).await.expect("prefix");
    assert_eq!(rows.len(), 20);
    assert!(rows.iter().all(|r| r.action.starts_with("record.")));

    let exact = q(|q| q.action = Some(ActionFilter::Exact("record.view".into())));
    assert_eq!(store.count_audit(&exact).await.expect("exact"), 10);

    let mut by_record = q(|q| q.object = Some("deals".into()));
    by_record.record_id = Some(r2);
    assert_eq!(store.count_audit(&by_record).await.expect("record"), 10);

    let mut window = q(|_| {});
    window.from = Some(base + 10_000_000);
    window.to = Some(base + 19_000_000);
    let rows = store.query_audit(&window).await.expect("time");
    assert_eq!(rows.len(), 10);
    assert!(rows.iter().all(|r| (base + 10_000_000..=base + 19_000_000).contains(&r.at)));

    // Cursor pagination covers everything once.
    let mut seen = Vec::new();
    let mut page = q(|_| {});
    page.limit = 7;
    loop {
        let rows = store.query_audit(&page).await.expect("page");
        if rows.is_empty() {
            break;
        }
        page.before_seq = rows.last().map(|r| r.seq);
        seen.extend(rows.into_iter().map(|r| r.seq));
    }
    assert_eq!(seen, all.iter().map(|r| r.seq).collect::<Vec<_>>());
}

/// A record's events are all found by the record filter, newest first and page by page, however
/// many events came between them and whenever they were appended: more than one batch of the
/// SQLite writer's record indexing (4,096 events) comes before the record's last events.
pub async fn audit_by_record_finds_every_event_of_the_record(store: DynStore) {
    let actor = Uuid::now_v7();
    let (record, other) = (Uuid::now_v7(), Uuid::now_v7());
    let mut expected = Vec::new();
    for round in 0..3 {
        let drafts: Vec<AuditDraft> = (0..2500i64)
            .map(|i| {
                let r = if i % 97 == round { record } else { other };
                event("record.view", actor, 1_700_000_000_000_000 + i, Some("contacts"), Some(r))
            })
            .collect();
        let mine: Vec<bool> = drafts.iter().map(|d| d.record_id == Some(record)).collect();
        let seqs = store.append_audit(drafts).await.expect("append");
        expected.extend(seqs.into_iter().zip(mine).filter(|(_, m)| *m).map(|(s, _)| s));
    }
    let last = store.append_audit(vec![event("record.update", actor, 1, Some("contacts"), Some(record))]).await;
    expected.extend(last.expect("append"));
    expected.reverse();

    let mut query = AuditQuery { record_id: Some(record), limit: 9, ..Default::default() };
    assert_eq!(store.count_audit(&query).await.expect("count"), expected.len() as u64);
    let mut seen = Vec::new();
    loop {
        let rows = store.query_audit(&query).await.expect("page");
        assert!(rows.iter().all(|r| r.record_id == Some(record)));
        let Some(end) = rows.last() else { break };
        query.before_seq = Some(end.seq);
        seen.extend(rows.iter().map(|r| r.seq));
    }
    assert_eq!(seen, expected);
    // With another filter beside it.
    query.before_seq = None;
    query.action = Some(ActionFilter::Exact("record.update".into()));
    let rows = store.query_audit(&query).await.expect("update");
    assert_eq!(rows.iter().map(|r| r.seq).collect::<Vec<_>>(), expected[..1].to_vec());
}

pub async fn audit_buckets_count_from_events(store: DynStore) {
    let (alice, bob) = (Uuid::now_v7(), Uuid::now_v7());
    let (r1, r2, r3) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let since = 1_700_000_000_000_000i64;
    let hour = 3_600_000_000i64;
    let mut drafts = vec![
        event("record.view", alice, since + 1, Some("contacts"), Some(r1)),
        event("record.view", alice, since + 2, Some("contacts"), Some(r1)),
        event("record.view", alice, since + 3, Some("contacts"), Some(r2)),
        event("record.view", alice, since + hour + 5, Some("contacts"), Some(r3)),
        event("record.view", bob, since + 4, Some("contacts"), Some(r3)),
        event("record.reveal", alice, since + 6, Some("contacts"), Some(r1)),
    ];
    let mut export = event("audit.export", alice, since + 2 * hour + 1, None, None);
    export.details = json!({ "rows": 120 });
    drafts.push(export);
    let mut export = event("audit.export", alice, since + 2 * hour + 2, None, None);
    export.details = json!({ "rows": 30 });
    drafts.push(export);
    store.append_audit(drafts).await.expect("append");

    let query = |actions: &[&str], measure: Measure| BucketQuery {
        actor_id: alice,
        actions: actions.iter().map(|s| (*s).to_owned()).collect(),
        measure,
        since,
        until: since + 3 * hour,
        bucket_micros: hour,
    };
    let distinct = store.audit_buckets(&query(&["record.view"], Measure::DistinctRecords)).await.expect("distinct");
    assert_eq!(distinct, vec![(0, 2), (1, 1)]);
    let events = store.audit_buckets(&query(&["record.view", "record.reveal"], Measure::Events)).await.expect("events");
    assert_eq!(events, vec![(0, 4), (1, 1)]);
    let rows = store.audit_buckets(&query(&["audit.export"], Measure::SumDetail("rows".into()))).await.expect("sum");
    assert_eq!(rows, vec![(2, 150)]);
    let actors: HashSet<Uuid> = store.active_actors(since, &[]).await.expect("actors").into_iter().collect();
    assert_eq!(actors, [alice, bob].into_iter().collect());
    // Only actors of the given actions, only inside the window.
    let reveal = ["record.reveal".to_owned()];
    assert_eq!(store.active_actors(since, &reveal).await.expect("actors"), vec![alice]);
    assert!(store.active_actors(since + 7, &reveal).await.expect("actors").is_empty());
    let views = ["record.view".to_owned(), "record.reveal".to_owned()];
    let late: HashSet<Uuid> = store.active_actors(since + 5, &views).await.expect("actors").into_iter().collect();
    assert_eq!(late, [alice].into_iter().collect());
}

pub async fn periodic_jobs_run_once_per_period_one_server_at_a_time(store: DynStore) {
    let minute = 60_000_000i64;
    let lease = 5 * minute;
    let t0 = 1_700_000_000_000_000i64;
    // Eight servers claim at once: exactly one runs the job.
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store.claim_periodic_job("evaluation", &format!("s{i}"), t0, lease, minute).await
        }));
    }
    let mut winners = 0;
    for t in tasks {
        if t.await.expect("join").expect("claim") {
            winners += 1;
        }
    }
    assert_eq!(winners, 1);
    // While it runs, nobody else; after it finished, nobody before the period is over.
    assert!(!store.claim_periodic_job("evaluation", "other", t0 + 2 * minute, lease, minute).await.expect("claim"));
    store.release_periodic_job("evaluation", "not-the-holder").await.expect("release");
    assert!(!store.claim_periodic_job("evaluation", "other", t0 + 2 * minute, lease, minute).await.expect("claim"));
    for i in 0..8 {
        store.release_periodic_job("evaluation", &format!("s{i}")).await.expect("release");
    }
    assert!(!store.claim_periodic_job("evaluation", "other", t0 + minute / 2, lease, minute).await.expect("claim"));
    assert!(store.claim_periodic_job("evaluation", "other", t0 + minute, lease, minute).await.expect("claim"));
    // Another job has its own lease.
    assert!(store.claim_periodic_job("other-job", "s0", t0 + minute, lease, minute).await.expect("claim"));
    // A holder that died: its lease runs out and another server takes over.
    assert!(
        !store.claim_periodic_job("evaluation", "s1", t0 + minute + lease - 1, lease, minute).await.expect("claim")
    );
    assert!(store.claim_periodic_job("evaluation", "s1", t0 + minute + lease, lease, minute).await.expect("claim"));
    store.release_periodic_job("evaluation", "s1").await.expect("release");
    // A clock moved backwards by an hour does not stop the job for an hour.
    assert!(
        store
            .claim_periodic_job("evaluation", "s2", t0 + minute + lease - 60 * minute, lease, minute)
            .await
            .expect("claim")
    );
}

fn alert(user: Uuid, window_start: i64) -> AlertRow {
    AlertRow {
        id: Uuid::now_v7(),
        metric: "reveals".into(),
        user_id: user,
        window_start,
        raised_at: custodian_store::now_micros(),
        value: 42,
        details: json!({ "threshold": 10 }),
        acked_at: None,
        acked_by: None,
    }
}

pub async fn alerts_are_unique_per_window_and_acknowledged(store: DynStore) {
    let user = Uuid::now_v7();
    let rule = AlertRuleRow { metric: "reveals".into(), definition: json!({ "absolute": 10 }), updated_at: 1 };
    store.put_alert_rule(rule.clone(), AuditDraft::new("alert.rule_update")).await.expect("rule");
    let changed = AlertRuleRow { definition: json!({ "absolute": 20 }), updated_at: 2, ..rule };
    store.put_alert_rule(changed.clone(), AuditDraft::new("alert.rule_update")).await.expect("rule again");
    assert_eq!(store.list_alert_rules().await.expect("rules"), vec![changed]);

    // Several evaluators race on the same window: exactly one alert and one set of messages.
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let outbox = vec![OutboxRow::new("webhook", "alert", json!({ "n": 1 }), custodian_store::now_micros())];
            store.insert_alert(alert(user, 1000), outbox, AuditDraft::new("alert.raised")).await.expect("insert")
        }));
    }
    let mut inserted = 0;
    for t in tasks {
        inserted += usize::from(t.await.expect("join"));
    }
    assert_eq!(inserted, 1);
    assert_eq!(store.list_outbox(100).await.expect("outbox").len(), 1);
    assert!(store.insert_alert(alert(user, 2000), Vec::new(), AuditDraft::new("alert.raised")).await.expect("next"));
    let alerts = store.list_alerts(None, 10).await.expect("list");
    assert_eq!(alerts.len(), 2);
    let page = store.list_alerts(Some((alerts[0].raised_at, alerts[0].id)), 10).await.expect("page");
    assert_eq!(page, alerts[1..].to_vec());
    let admin = Uuid::now_v7();
    let acked = store.ack_alert(alerts[1].id, admin, 77, AuditDraft::new("alert.ack")).await.expect("ack");
    assert_eq!((acked.acked_at, acked.acked_by), (Some(77), Some(admin)));
    // A second acknowledgement keeps the first.
    let again = store.ack_alert(alerts[1].id, Uuid::now_v7(), 99, AuditDraft::new("alert.ack")).await.expect("ack");
    assert_eq!((again.acked_at, again.acked_by), (Some(77), Some(admin)));
    match store.ack_alert(Uuid::now_v7(), admin, 1, AuditDraft::new("alert.ack")).await {
        Err(StoreError::NotFound) => {}
        other => panic!("expected NotFound, got {other:?}"),
    }
}

pub async fn notifications_commit_with_the_write(store: DynStore) {
    let owner = Uuid::now_v7();
    let r = new_record(json!({ "name": "甲" }));
    let w = creation(&r);
    let note = NotificationRow {
        id: Uuid::now_v7(),
        user_id: owner,
        object: "contacts".into(),
        record_id: r.id,
        version: 1,
        actor_id: None,
        changes: json!({ "owner_id": { "old": null, "new": owner } }),
        created_at: 5,
        acked_at: None,
    };
    let outbox = OutboxRow::new("email", "notification", json!({ "id": note.id }), 5);
    let batch = WriteBatch {
        audit: vec![audit_for(&w)],
        records: vec![w.clone()],
        notifications: vec![note.clone()],
        outbox: vec![outbox.clone()],
        ..Default::default()
    };
    store.write(batch.clone()).await.expect("write");
    assert_eq!(store.list_notifications(owner, None, 10).await.expect("list"), vec![note.clone()]);
    assert_eq!(store.list_outbox(10).await.expect("outbox"), vec![outbox]);
    // A failing write (same record created twice) leaves no notification behind.
    let mut again = batch;
    again.notifications[0].id = Uuid::now_v7();
    again.outbox[0].id = Uuid::now_v7();
    assert!(store.write(again).await.is_err());
    assert_eq!(store.list_notifications(owner, None, 10).await.expect("list").len(), 1);
    assert_eq!(store.list_outbox(10).await.expect("outbox").len(), 1);
    // Only the recipient acknowledges.
    match store.ack_notification(note.id, Uuid::now_v7(), 9, AuditDraft::new("notification.ack")).await {
        Err(StoreError::NotFound) => {}
        other => panic!("expected NotFound, got {other:?}"),
    }
    let acked = store.ack_notification(note.id, owner, 9, AuditDraft::new("notification.ack")).await.expect("ack");
    assert_eq!(acked.acked_at, Some(9));
}

pub async fn outbox_leases_deliver_each_message_once(store: DynStore) {
    let now = 1_000_000i64;
    let messages: Vec<OutboxRow> =
        (0..20).map(|i| OutboxRow::new("webhook", "alert", json!({ "i": i }), now)).collect();
    let batch = WriteBatch { outbox: messages.clone(), ..Default::default() };
    store.write(batch).await.expect("write");
    // Several workers claim at once: every message is handed out exactly once.
    let mut tasks = Vec::new();
    for w in 0..4 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store.claim_outbox(&format!("worker{w}"), now, 60_000_000, 8).await.expect("claim")
        }));
    }
    let mut claimed = Vec::new();
    for t in tasks {
        claimed.extend(t.await.expect("join"));
    }
    let ids: HashSet<Uuid> = claimed.iter().map(|m| m.id).collect();
    assert_eq!(ids.len(), claimed.len(), "no message twice");
    assert_eq!(ids.len(), 20);
    assert!(claimed.iter().all(|m| m.attempts == 1));
    // Leased messages are not handed out again while the lease runs.
    assert!(store.claim_outbox("late", now + 1, 60_000_000, 100).await.expect("claim").is_empty());
    let first = claimed[0].clone();
    // Only the lease holder records outcomes: every worker reports, one of them holds it.
    for w in 0..4 {
        store
            .finish_outbox(
                first.id,
                &format!("worker{w}"),
                DeliveryOutcome::Failed { error: "connection refused".into(), retry_at: Some(now + 5) },
            )
            .await
            .expect("finish");
    }
    let after = store.list_outbox(100).await.expect("list");
    let failed = after.iter().find(|m| m.id == first.id).expect("message");
    assert_eq!(failed.last_error.as_deref(), Some("connection refused"));
    assert_eq!(failed.next_attempt_at, now + 5);
    // Due again after its back-off, not before; the others stay leased.
    assert!(store.claim_outbox("retry", now + 4, 60_000_000, 100).await.expect("claim").is_empty());
    let retried = store.claim_outbox("retry", now + 5, 60_000_000, 100).await.expect("claim");
    assert_eq!(retried.iter().map(|m| m.id).collect::<Vec<_>>(), vec![first.id]);
    assert_eq!(retried[0].attempts, 2);
    // A stranger's outcome is ignored; the holder's is kept.
    store.finish_outbox(first.id, "stranger", DeliveryOutcome::Delivered { at: 1 }).await.expect("ignored");
    store.finish_outbox(first.id, "retry", DeliveryOutcome::Delivered { at: now + 6 }).await.expect("delivered");
    let done = store.list_outbox(100).await.expect("list").into_iter().find(|m| m.id == first.id).expect("message");
    assert_eq!(done.delivered_at, Some(now + 6));
    // Delivered messages are never claimed again, even after every lease expired.
    let later = store.claim_outbox("later", now + 120_000_000, 60_000_000, 100).await.expect("claim");
    assert_eq!(later.len(), 19);
    assert!(later.iter().all(|m| m.id != first.id));
}
