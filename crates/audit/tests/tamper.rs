//! Adversarial tests: each kind of tampering, done the way an attacker with access to the
//! database would (guards dropped, raw SQL), on SQLite and on PostgreSQL. The verifier must
//! never call a modified log intact and must name the first bad sequence number.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Fixture, draft};
use custodian_audit::VerifyStatus;
use custodian_audit::verify::VerifyReport;
use custodian_core::audit::chain_hash;
use custodian_store::AuditDraft;

/// 50 events, checkpoints of 10: [1..10], [11..20], … [41..50].
async fn prepared(f: &Fixture) {
    f.populate(50).await;
    assert_eq!(f.checkpoint(10).await.len(), 5);
    let report = f.verify().await;
    assert_eq!(report.status(), VerifyStatus::Intact, "{}", report.render());
    f.assert_guards_refuse().await;
    f.drop_guards().await;
}

fn assert_first_bad(report: &VerifyReport, seq: i64) {
    assert_eq!(report.status(), VerifyStatus::Tampered, "{}", report.render());
    assert_eq!(report.first_bad.as_ref().map(|b| b.seq), Some(seq), "{}", report.render());
    assert!(report.render().contains(&format!("FIRST BAD SEQUENCE NUMBER: {seq}")));
}

pub async fn intact_log_verifies(f: Fixture) {
    f.populate(23).await;
    let written = f.checkpoint(10).await;
    assert_eq!(
        written.iter().map(|s| (s.checkpoint.seq_from, s.checkpoint.seq_to)).collect::<Vec<_>>(),
        vec![(1, 10), (11, 20), (21, 23)]
    );
    f.populate(4).await;
    let report = f.verify().await;
    assert_eq!(report.status(), VerifyStatus::Intact, "{}", report.render());
    assert_eq!((report.events, report.last_seq, report.checkpoints_verified, report.covered_through), (27, 27, 3, 23));
    assert!(report.render().contains("events 24..27 are not yet covered"));
    assert!(report.render().ends_with("result: INTACT\n"));
    // Nothing pending is nothing written.
    assert_eq!(f.checkpoint(10).await.len(), 1);
    assert!(f.checkpoint(10).await.is_empty());
}

pub async fn edited_body_is_named(f: Fixture) {
    prepared(&f).await;
    let row = f.rows().await.into_iter().find(|r| r.seq == 17).unwrap();
    f.set_body(17, &row.body.replace("record.", "rec0rd.")).await;
    assert_first_bad(&f.verify().await, 17);
}

pub async fn edited_and_rehashed_event_is_named(f: Fixture) {
    prepared(&f).await;
    let rows = f.rows().await;
    let body = rows[16].body.replace("张三", "李四");
    f.set_body(17, &body).await;
    f.set_hash(17, &chain_hash(&rows[15].hash, 17, body.as_bytes())).await;
    assert_first_bad(&f.verify().await, 17);
}

pub async fn edited_column_is_named(f: Fixture) {
    prepared(&f).await;
    f.exec_ok("UPDATE audit_events SET action = 'record.view' WHERE seq = 24 AND action <> 'record.view'").await;
    f.exec_ok("UPDATE audit_events SET action = 'record.delete' WHERE seq = 24 AND action = 'record.view'").await;
    let report = f.verify().await;
    assert_first_bad(&report, 24);
    assert!(report.first_bad.unwrap().message.contains("`action`"));
    // And a column an audit query would filter on.
    f.exec_ok("UPDATE audit_events SET actor_id = NULL WHERE seq = 8").await;
    assert_first_bad(&f.verify().await, 8);
}

pub async fn deleted_event_is_named(f: Fixture) {
    prepared(&f).await;
    f.exec_ok("DELETE FROM audit_events WHERE seq = 30").await;
    let report = f.verify().await;
    assert_first_bad(&report, 30);
    assert!(report.first_bad.unwrap().message.contains("missing"));
}

pub async fn deleted_and_renumbered_event_is_named(f: Fixture) {
    prepared(&f).await;
    f.exec_ok("DELETE FROM audit_events WHERE seq = 30").await;
    for seq in 31..=50 {
        f.exec_ok(&format!("UPDATE audit_events SET seq = {} WHERE seq = {seq}", seq - 1)).await;
    }
    assert_first_bad(&f.verify().await, 30);
}

pub async fn inserted_event_is_named(f: Fixture) {
    prepared(&f).await;
    let rows = f.rows().await;
    // Make room at 20 and slip a well-formed event in, linked to 19.
    for seq in (20..=50).rev() {
        f.exec_ok(&format!("UPDATE audit_events SET seq = {} WHERE seq = {seq}", seq + 1)).await;
    }
    let forged = AuditDraft::new("user.grant_admin");
    let hash = chain_hash(&rows[18].hash, 20, forged.canonical_body().as_bytes());
    f.exec_ok(&f.insert_sql(20, &forged, &rows[18].hash, &hash)).await;
    assert_first_bad(&f.verify().await, 20);
}

pub async fn reordered_events_are_named(f: Fixture) {
    prepared(&f).await;
    let rows = f.rows().await;
    f.set_body(12, &rows[12].body).await;
    f.set_body(13, &rows[11].body).await;
    assert_first_bad(&f.verify().await, 12);
}

pub async fn truncated_tail_is_named(f: Fixture) {
    prepared(&f).await;
    f.exec_ok("DELETE FROM audit_events WHERE seq >= 46").await;
    let report = f.verify().await;
    assert_first_bad(&report, 46);
    // Also when the attacker wipes the database's own records of the checkpoints: the
    // signed checkpoint file still covers 41..50.
    f.exec_ok("DELETE FROM audit_checkpoint_claims").await;
    let report = f.verify().await;
    assert_first_bad(&report, 46);
    assert!(report.first_bad.as_ref().unwrap().message.contains("tail truncated"), "{}", report.render());
    // A writer refuses to go on from a truncated log.
    f.exec_ok("INSERT INTO audit_checkpoint_claims (seq_from, seq_to, claimant, claimed_at, written_at) VALUES (41, 50, 'x', 0, 0)").await;
    let err = f.writer(10).write_due(true).await.unwrap_err();
    assert!(err.to_string().contains("removed from the end"), "{err}");
}

pub async fn replaced_and_rechained_tail_is_detected(f: Fixture) {
    prepared(&f).await;
    // Rewritten from 35 on, consistently re-chained: the chain alone cannot tell.
    f.rechain_from(35, (0..16).map(|i| draft(1000 + i)).collect()).await;
    let report = f.verify().await;
    assert_eq!(report.status(), VerifyStatus::Tampered, "{}", report.render());
    // 31..40 no longer matches its checkpoint, 21..30 still does: the first event not vouched
    // for is 31.
    assert_first_bad(&report, 31);
    assert!(report.checkpoints_failed.len() >= 2, "{}", report.render());
    assert!(report.first_bad.unwrap().message.contains("re-chained"));
}

pub async fn rechained_tail_on_a_checkpoint_boundary_is_named_exactly(f: Fixture) {
    prepared(&f).await;
    f.rechain_from(21, (0..30).map(|i| draft(2000 + i)).collect()).await;
    assert_first_bad(&f.verify().await, 21);
}

pub async fn rechained_whole_log_is_not_intact(f: Fixture) {
    prepared(&f).await;
    f.rechain_from(1, (0..50).map(|i| draft(3000 + i)).collect()).await;
    let report = f.verify().await;
    assert_ne!(report.status(), VerifyStatus::Intact, "{}", report.render());
    assert!(
        report.render().contains("none of the 5 signed checkpoints belongs to this audit log"),
        "{}",
        report.render()
    );
}

pub async fn emptied_log_is_not_intact(f: Fixture) {
    prepared(&f).await;
    f.exec_ok("DELETE FROM audit_events").await;
    assert_first_bad(&f.verify().await, 1);
}

pub async fn writer_refuses_to_sign_a_broken_chain(f: Fixture) {
    f.populate(10).await;
    f.checkpoint(10).await;
    f.populate(5).await;
    f.drop_guards().await;
    f.set_body(12, "{}").await;
    let err = f.writer(10).write_due(true).await.unwrap_err();
    assert!(err.to_string().contains("refusing to sign events 11..15"), "{err}");
    assert_first_bad(&f.verify().await, 12);
}

pub async fn clock_moved_backwards_is_a_warning_only(f: Fixture) {
    f.populate(5).await;
    let mut old = draft(99);
    old.at -= 3_600_000_000;
    f.store.append_audit(vec![old]).await.unwrap();
    f.populate(2).await;
    f.checkpoint(10).await;
    let report = f.verify().await;
    assert_eq!(report.status(), VerifyStatus::Intact, "{}", report.render());
    assert!(report.render().contains("a clock moved backwards"), "{}", report.render());
}

macro_rules! tamper_tests {
    ($fixture:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let Some(f) = $fixture else { return };
                super::$case(f).await;
            }
        )*
    };
}

macro_rules! all_tamper_tests {
    ($fixture:expr) => {
        tamper_tests!($fixture;
            intact_log_verifies,
            edited_body_is_named,
            edited_and_rehashed_event_is_named,
            edited_column_is_named,
            deleted_event_is_named,
            deleted_and_renumbered_event_is_named,
            inserted_event_is_named,
            reordered_events_are_named,
            truncated_tail_is_named,
            replaced_and_rechained_tail_is_detected,
            rechained_tail_on_a_checkpoint_boundary_is_named_exactly,
            rechained_whole_log_is_not_intact,
            emptied_log_is_not_intact,
            writer_refuses_to_sign_a_broken_chain,
            clock_moved_backwards_is_a_warning_only,
        );
    };
}

mod sqlite {
    all_tamper_tests!(crate::common::sqlite_fixture().await);
}

mod postgres {
    all_tamper_tests!(crate::common::postgres_fixture().await);

    /// Without a primary key an attacker can store a second event under a number in use.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn duplicated_number_is_named() {
        let Some(f) = crate::common::postgres_fixture().await else { return };
        super::prepared(&f).await;
        f.exec_ok("ALTER TABLE audit_events DROP CONSTRAINT audit_events_pkey").await;
        let rows = f.rows().await;
        let forged = custodian_store::AuditDraft::new("forged");
        f.exec_ok(&f.insert_sql(25, &forged, &rows[23].hash, &rows[24].hash)).await;
        super::assert_first_bad(&f.verify().await, 25);
    }
}
