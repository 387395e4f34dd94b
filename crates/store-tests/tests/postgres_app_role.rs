//! PostgreSQL with the schema owned by the migrating role and the server connected as an
//! application role (`PostgresStore::grant_app_role`): the whole conformance suite runs
//! unchanged with the application role's privileges, and that role can append to the audit log
//! and the record versions but neither rewrite them nor take their triggers away.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use custodian_core::audit::GENESIS_HASH;
use custodian_store::audit::verify_chain;
use custodian_store::{AuditDraft, Store};
use custodian_store_postgres::PostgresStore;
use custodian_store_tests::cases;
use sqlx::Connection;
use std::sync::Arc;

custodian_store_tests::conformance_tests!(custodian_store_tests::postgres_app_role_test_store().await);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_app_role_can_append_history_but_not_rewrite_it_or_drop_its_guards() {
    let Some((store, guard)) = custodian_store_tests::postgres_app_role_test_store().await else {
        return;
    };
    let protection = store.audit_protection().await.unwrap();
    assert!(!protection.relies_on_triggers_alone(), "{protection:?}");
    let store: Arc<dyn Store> = Arc::new(store);
    let record = cases::create(&store, serde_json::json!({ "name": "x" })).await;
    store.append_audit(vec![AuditDraft::new("a"), AuditDraft::new("b")]).await.unwrap();
    let events = store.list_audit(0, 100).await.unwrap().len();

    let mut app = sqlx::PgConnection::connect(&guard.app_url()).await.unwrap();
    for sql in [
        "UPDATE audit_events SET body = '{}' WHERE seq = 1",
        "DELETE FROM audit_events WHERE seq = 2",
        "TRUNCATE audit_events",
        "ALTER TABLE audit_events DISABLE TRIGGER ALL",
        "ALTER TABLE audit_events DISABLE TRIGGER audit_events_no_update",
        "DROP TRIGGER audit_events_no_update ON audit_events",
        "DROP TABLE audit_events",
        "UPDATE record_versions SET fields = '{}'::jsonb",
        "DELETE FROM record_versions",
        "TRUNCATE record_versions",
        "ALTER TABLE record_versions DISABLE TRIGGER ALL",
        "TRUNCATE audit_head",
        "DELETE FROM _sqlx_migrations",
        "CREATE TABLE audit_events_copy (seq bigint)",
    ] {
        let err = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut app).await.expect_err(sql);
        let code = err.as_database_error().and_then(|e| e.code()).map(|c| c.into_owned());
        // 42501: insufficient privilege; the trigger guards answer P0001 only to roles that
        // hold the privilege, which this one must not.
        assert_eq!(code.as_deref(), Some("42501"), "{sql}: {err}");
    }
    // Granting itself more is a no-op with a warning: the role holds no grant option.
    sqlx::query("GRANT UPDATE, DELETE, TRUNCATE ON audit_events TO PUBLIC").execute(&mut app).await.unwrap();
    let may_rewrite: bool = sqlx::query_scalar(
        "SELECT has_table_privilege('audit_events', 'UPDATE') OR has_table_privilege('audit_events', 'DELETE') \
         OR has_table_privilege('audit_events', 'TRUNCATE')",
    )
    .fetch_one(&mut app)
    .await
    .unwrap();
    assert!(!may_rewrite);
    app.close().await.unwrap();

    // The owner (the role that migrated) still sees the guards in place and the log intact.
    let owner = PostgresStore::connect(guard.owner_url()).await.unwrap();
    let triggers: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'audit_events'::regclass AND tgenabled <> 'D' AND NOT tgisinternal",
    )
    .fetch_one(owner.pool())
    .await
    .unwrap();
    assert!(triggers >= 3, "{triggers} triggers left on audit_events");
    let rows = store.list_audit(0, 100).await.unwrap();
    assert_eq!(rows.len(), events);
    verify_chain(0, &GENESIS_HASH, &rows).unwrap();
    assert_eq!(store.list_versions(cases::OBJ, record.id, 0, 10).await.unwrap().len(), 1);
    owner.close().await;
}

/// The role must be one of its own: a superuser or the owner would not be bound by privileges.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grant_app_role_refuses_roles_that_privileges_would_not_bind() {
    let Some((store, _db)) = custodian_store_tests::postgres_test_store().await else {
        return;
    };
    let me: String = sqlx::query_scalar("SELECT current_user::text").fetch_one(store.pool()).await.unwrap();
    for role in [me.as_str(), "postgres", "no_such_role_here", "Bad-Name", "x; DROP TABLE records"] {
        assert!(store.grant_app_role(role).await.is_err(), "{role} must be refused");
    }
    // The test server's own role owns the schema: only triggers protect the log from it.
    assert!(store.audit_protection().await.unwrap().relies_on_triggers_alone());
}
