//! A store with events, checkpoints and a raw connection that plays an attacker with access to
//! the database itself (SQLite file, PostgreSQL superuser): triggers dropped, rows rewritten.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use custodian_audit::checkpoint::{CheckpointFile, SignedCheckpoint};
use custodian_audit::keys::AuditPublicKey;
use custodian_audit::{
    AuditSigningKey, CheckpointWriter, VerifyReport, WriterConfig, read_checkpoint_file, verify_store,
};
use custodian_core::audit::{GENESIS_HASH, chain_hash};
use custodian_store::{AuditDraft, AuditRow, Store};
use custodian_store_tests::{PgTestDb, TestDir};
use serde_json::json;
use sqlx::{AssertSqlSafe, Connection};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub struct Fixture {
    pub backend: Backend,
    pub store: Arc<dyn Store>,
    pub raw_url: String,
    pub dir: TestDir,
    pub file: PathBuf,
    pub key_path: PathBuf,
    _pg: Option<PgTestDb>,
}

pub async fn sqlite_fixture() -> Option<Fixture> {
    let (store, dir) = custodian_store_tests::sqlite_test_store().await;
    let raw_url = format!("sqlite://{}", dir.database_file().display());
    Some(Fixture::new(Backend::Sqlite, Arc::new(store), raw_url, dir, None))
}

pub async fn postgres_fixture() -> Option<Fixture> {
    let (store, db) = custodian_store_tests::postgres_test_store().await?;
    let raw_url = db.url().to_owned();
    Some(Fixture::new(Backend::Postgres, Arc::new(store), raw_url, TestDir::new(), Some(db)))
}

/// A realistic event: a field-level update by a user, from an address, with a request id.
pub fn draft(i: usize) -> AuditDraft {
    let mut d = AuditDraft::new(if i.is_multiple_of(3) { "record.update" } else { "record.view" });
    d.actor_id = Some(Uuid::now_v7());
    d.object = Some("contacts".into());
    d.record_id = Some(Uuid::now_v7());
    d.request_id = Some(format!("req-{i}"));
    d.ip = Some("203.0.113.9".into());
    d.user_agent = Some("Mozilla/5.0 (X11; Linux x86_64)".into());
    d.details = json!({
        "version": i,
        "changes": { "name": { "before": "张三", "after": format!("张三{i}") },
                     "mobile": { "before": "hmac:1f2e3d", "after": "hmac:4a5b6c" } }
    });
    d
}

impl Fixture {
    fn new(backend: Backend, store: Arc<dyn Store>, raw_url: String, dir: TestDir, pg: Option<PgTestDb>) -> Fixture {
        let file = dir.path().join("checkpoints").join("audit-checkpoints.log");
        let key_path = dir.path().join("keys").join("audit-signing.key");
        AuditSigningKey::load_or_create(&key_path).unwrap();
        Fixture { backend, store, raw_url, dir, file, key_path, _pg: pg }
    }

    pub fn key(&self) -> AuditSigningKey {
        AuditSigningKey::load(&self.key_path).unwrap()
    }

    pub fn public(&self) -> AuditPublicKey {
        self.key().public()
    }

    pub async fn populate(&self, n: usize) {
        let mut i = 0;
        while i < n {
            let batch: Vec<AuditDraft> = (i..(i + 7).min(n)).map(draft).collect();
            i += batch.len();
            self.store.append_audit(batch).await.unwrap();
        }
    }

    pub fn writer(&self, every_events: i64) -> CheckpointWriter {
        let config = WriterConfig::new(self.file.clone(), every_events, Duration::from_secs(3600));
        CheckpointWriter::new(self.store.clone(), self.key(), config)
    }

    /// Writes checkpoints for everything pending, ranges of at most `every_events`.
    pub async fn checkpoint(&self, every_events: i64) -> Vec<SignedCheckpoint> {
        self.writer(every_events).write_due(true).await.unwrap()
    }

    pub fn files(&self) -> Vec<CheckpointFile> {
        if self.file.exists() { vec![read_checkpoint_file(&self.file).unwrap()] } else { Vec::new() }
    }

    pub async fn verify(&self) -> VerifyReport {
        self.verify_with(&[self.public()]).await
    }

    pub async fn verify_with(&self, keys: &[AuditPublicKey]) -> VerifyReport {
        verify_store(self.store.as_ref(), &self.files(), keys).await.unwrap()
    }

    pub async fn rows(&self) -> Vec<AuditRow> {
        self.store.list_audit(0, 100_000).await.unwrap()
    }

    // ---- the attacker ------------------------------------------------------------------

    pub async fn exec(&self, sql: &str) -> Result<(), sqlx::Error> {
        match self.backend {
            Backend::Sqlite => {
                let mut c = sqlx::SqliteConnection::connect(&self.raw_url).await.unwrap();
                let r = sqlx::query(AssertSqlSafe(sql.to_owned())).execute(&mut c).await.map(|_| ());
                c.close().await.unwrap();
                r
            }
            Backend::Postgres => {
                let mut c = sqlx::PgConnection::connect(&self.raw_url).await.unwrap();
                let r = sqlx::query(AssertSqlSafe(sql.to_owned())).execute(&mut c).await.map(|_| ());
                c.close().await.unwrap();
                r
            }
        }
    }

    pub async fn exec_ok(&self, sql: &str) {
        self.exec(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// A bytea / blob literal.
    pub fn blob(&self, bytes: &[u8]) -> String {
        match self.backend {
            Backend::Sqlite => format!("X'{}'", hex::encode(bytes)),
            Backend::Postgres => format!("'\\x{}'::bytea", hex::encode(bytes)),
        }
    }

    pub fn text(s: &str) -> String {
        format!("'{}'", s.replace('\'', "''"))
    }

    fn uuid_or_null(&self, u: Option<Uuid>) -> String {
        match (u, self.backend) {
            (None, _) => "NULL".into(),
            (Some(u), Backend::Sqlite) => Self::text(&u.to_string()),
            (Some(u), Backend::Postgres) => format!("'{u}'::uuid"),
        }
    }

    /// The database refuses to rewrite history as long as its guards are in place.
    pub async fn assert_guards_refuse(&self) {
        let rows = self.rows().await;
        let last = rows.last().unwrap();
        for sql in [
            "UPDATE audit_events SET body = '{}' WHERE seq = 1".to_owned(),
            "DELETE FROM audit_events WHERE seq = 1".to_owned(),
            format!("DELETE FROM audit_events WHERE seq = {}", last.seq),
            // An insert that does not extend the head: a taken number, or the right number
            // with a wrong predecessor.
            self.insert_sql(last.seq, &AuditDraft::new("forged"), &last.prev_hash, &[0u8; 32]),
            self.insert_sql(last.seq + 1, &AuditDraft::new("forged"), &[7u8; 32], &[0u8; 32]),
        ] {
            assert!(self.exec(&sql).await.is_err(), "{sql} must be refused");
        }
        if self.backend == Backend::Postgres {
            assert!(self.exec("TRUNCATE audit_events").await.is_err());
        }
    }

    /// What an attacker with file access (SQLite) or superuser rights (PostgreSQL) does first.
    pub async fn drop_guards(&self) {
        match self.backend {
            Backend::Sqlite => {
                for t in ["audit_events_no_update", "audit_events_no_delete", "audit_events_extend_head"] {
                    self.exec_ok(&format!("DROP TRIGGER IF EXISTS {t}")).await;
                }
            }
            Backend::Postgres => {
                for t in ["audit_events_no_update", "audit_events_no_truncate", "audit_events_extend_head"] {
                    self.exec_ok(&format!("DROP TRIGGER IF EXISTS {t} ON audit_events")).await;
                }
                self.exec_ok("DROP TRIGGER IF EXISTS audit_head_forward_only ON audit_head").await;
            }
        }
    }

    pub fn insert_sql(&self, seq: i64, d: &AuditDraft, prev: &[u8], hash: &[u8]) -> String {
        format!(
            "INSERT INTO audit_events (seq, at, actor_id, action, object, record_id, request_id, body, prev_hash, hash) \
             VALUES ({seq}, {}, {}, {}, {}, {}, {}, {}, {}, {})",
            d.at,
            self.uuid_or_null(d.actor_id),
            Self::text(&d.action),
            d.object.as_deref().map(Self::text).unwrap_or_else(|| "NULL".into()),
            self.uuid_or_null(d.record_id),
            d.request_id.as_deref().map(Self::text).unwrap_or_else(|| "NULL".into()),
            Self::text(&d.canonical_body()),
            self.blob(prev),
            self.blob(hash),
        )
    }

    pub async fn set_body(&self, seq: i64, body: &str) {
        self.exec_ok(&format!("UPDATE audit_events SET body = {} WHERE seq = {seq}", Self::text(body))).await;
    }

    pub async fn set_hash(&self, seq: i64, hash: &[u8]) {
        self.exec_ok(&format!("UPDATE audit_events SET hash = {} WHERE seq = {seq}", self.blob(hash))).await;
    }

    /// Deletes events `from..` and appends `drafts` in their place with a correctly recomputed
    /// chain: the tail replaced and re-chained.
    pub async fn rechain_from(&self, from: i64, drafts: Vec<AuditDraft>) {
        let rows = self.rows().await;
        let mut prev = rows.iter().find(|r| r.seq == from - 1).map(|r| r.hash.clone()).unwrap_or(GENESIS_HASH.to_vec());
        self.exec_ok(&format!("DELETE FROM audit_events WHERE seq >= {from}")).await;
        for (seq, d) in (from..).zip(drafts) {
            let hash = chain_hash(&prev, seq, d.canonical_body().as_bytes()).to_vec();
            self.exec_ok(&self.insert_sql(seq, &d, &prev, &hash)).await;
            prev = hash;
        }
        if self.backend == Backend::Postgres {
            self.exec_ok(&format!(
                "UPDATE audit_head SET seq = (SELECT max(seq) FROM audit_events), hash = {} WHERE id = 1",
                self.blob(&prev)
            ))
            .await;
        }
    }
}
