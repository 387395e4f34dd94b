//! Backups over HTTP (PRODUCT.md R1) on both backends: admins with a step-up write a sealed,
//! checksummed backup (SQLite: VACUUM INTO; PostgreSQL: pg_dump) into the configured directory
//! and list them; every attempt is on the audit log.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::http::{Method, StatusCode};
use common::{PASSWORD, TestApp, as_user};
use custodian_service::ServiceConfig;
use serde_json::json;

both_backends!(backups_are_written_listed_and_audited, |app: TestApp| async move {
    // Without a directory there is nowhere to write.
    app.admin_step_up().await;
    let r = app.post("/api/v1/backups", json!({})).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    let dir = tempfile_dir();
    let config = ServiceConfig { backup_dir: Some(dir.clone()), ..ServiceConfig::default() };
    let app = app.reconfigure(config).await;
    app.create("contacts", json!({"name": "王小明", "mobile": "13800138000"})).await;
    let r = app.post("/api/v1/users", json!({"username": "rep", "password": PASSWORD, "role": "sales_rep"})).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let rep = app.login("rep", PASSWORD).await;
    for (method, path) in [(Method::POST, "/api/v1/backups"), (Method::GET, "/api/v1/backups")] {
        assert_eq!(as_user(&app, &rep, method, path, None).await.status, StatusCode::FORBIDDEN);
    }
    // A step-up older than its window does not count.
    app.clock.advance_secs(600);
    let r = app.post("/api/v1/backups", json!({})).await;
    assert_eq!(r.status, StatusCode::PRECONDITION_REQUIRED, "{}", r.body);
    app.admin_step_up().await;
    let r = app.post("/api/v1/backups", json!({})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let file = r.body["file"].as_str().unwrap().to_owned();
    assert!(r.body.get("path").is_none(), "server paths stay on the server");
    assert_eq!(r.body["manifest"]["backend"], app.backend);
    assert_eq!(r.body["manifest"]["db_sha256"].as_str().unwrap().len(), 64);
    let names: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names, vec![file.clone()], "the backup only: no scratch copy, no partial file");
    let bytes = std::fs::read(dir.join(&file)).unwrap();
    assert!(bytes.starts_with(b"CUSTODIAN-BACKUP-1\n"));
    for plain in ["王小明".as_bytes(), b"SQLite format 3", b"PGDMP"] {
        assert!(!bytes.windows(plain.len()).any(|w| w == plain), "sealed: no plaintext inside");
    }
    let r = app.get("/api/v1/backups").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["items"][0]["file"], file.as_str());
    let created = app.get("/api/v1/audit/events?action=backup.create").await;
    let event = &created.body["items"][0];
    assert_eq!(event["details"]["file"], file.as_str());
    assert_eq!(event["actor_role"], "admin");
    let _ = std::fs::remove_dir_all(&dir);
});

fn tempfile_dir() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("custodian-backups-{}", uuid::Uuid::now_v7().simple()))
}
