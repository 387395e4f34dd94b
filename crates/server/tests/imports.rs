//! Imports (PRODUCT.md A6) through the service on both backends: mapping by label, dry run with
//! per-row problems, normalisations and in-file duplicates; all-or-nothing commit in one
//! transaction with its `record.import` event; skipping bad rows only when asked; the caller's
//! permissions and row ownership; revert.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::http::StatusCode;
use common::{PASSWORD, TestApp};
use custodian_service::{ImportRequest, RequestContext};
use serde_json::json;

fn request(rows: &[&[&str]], commit: bool, skip_invalid: bool) -> ImportRequest {
    ImportRequest {
        object: "contacts".into(),
        header: ["姓名", "手机", "Email", "职务", "备注"].iter().map(|s| (*s).to_owned()).collect(),
        rows: rows.iter().map(|r| r.iter().map(|s| (*s).to_owned()).collect()).collect(),
        lines: (2..2 + rows.len()).collect(),
        mapping: Vec::new(),
        file_name: "contacts.csv".into(),
        file_sha256: "00".repeat(32),
        commit,
        skip_invalid,
    }
}

const ROWS: &[&[&str]] = &[
    &["张伟", "138 1234 5678", "ZhangWei@Example.com", "经理", "x"],
    &["李娜", "+86 139-0000-0001", "", "总监", ""],
    &["王芳", "12345", "", "", ""],
    &["张伟", "13812345678", "", "", "same mobile as row 1"],
];

both_backends!(imports_check_every_row_and_write_all_or_nothing, |app: TestApp| async move {
    let r = app.post("/api/v1/users", json!({"username": "rep", "password": PASSWORD, "role": "sales_rep"})).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let rep_token = app.login("rep", PASSWORD).await;
    let rep = RequestContext::default().with_actor(app.service.authenticate(&rep_token).await.unwrap());
    let count = || async { app.get("/api/v1/contacts?limit=500").await.body["items"].as_array().unwrap().len() };

    // Dry run: columns found by label, problems per row, normalisations, nothing written.
    let report = app.service.import_records(&rep, &request(ROWS, false, false)).await.unwrap();
    assert_eq!(report.mapping.len(), 4, "{:?}", report.mapping);
    assert_eq!(report.unmapped_columns, ["备注"]);
    assert_eq!((report.valid_rows, report.invalid_rows), (2, 2));
    let rows: Vec<usize> = report.problems.iter().map(|p| p.row).collect();
    assert_eq!(rows, [3, 4]);
    assert_eq!(report.problems[0].details[0].code, "invalid_phone");
    assert_eq!(report.problems[1].code, "duplicate");
    assert_eq!(report.problems[1].extra.as_ref().unwrap()["candidates"][0]["row"], 1, "the row it duplicates");
    assert!(
        report.normalisations.iter().any(|n| n.row == 1 && n.field == "mobile" && n.to == "+8613812345678"),
        "{:?}",
        report.normalisations
    );
    assert_eq!(count().await, 0);

    // A commit of a file with bad rows writes nothing.
    let report = app.service.import_records(&rep, &request(ROWS, true, false)).await.unwrap();
    assert!(!report.committed && report.import_id.is_none());
    assert_eq!(count().await, 0);
    // Asked to skip them: the good rows in one transaction, the bad ones listed in the event.
    let report = app.service.import_records(&rep, &request(ROWS, true, true)).await.unwrap();
    assert!(report.committed);
    assert_eq!(report.written, 2);
    let import_id = report.import_id.unwrap();
    assert_eq!(count().await, 2);
    let events = app.get("/api/v1/audit/events?action=record.import").await.body["items"].as_array().unwrap().clone();
    let summary = events.iter().find(|e| e["action"] == "record.import").unwrap();
    assert_eq!(summary["details"]["import_id"], import_id.to_string());
    assert_eq!(summary["details"]["skipped_rows"], json!([3, 4]));
    assert_eq!(summary["details"]["ids"].as_array().unwrap().len(), 2);
    assert_eq!(summary["actor_role"], "sales_rep");
    assert!(!summary.to_string().contains("13812345678"), "no values in the event");
    let dry = app.get("/api/v1/audit/events?action=record.import_dry_run").await;
    assert_eq!(dry.body["items"].as_array().unwrap().len(), 1);
    // Each record has its own create event, tied to the import, and is the rep's own.
    let creates = app.get("/api/v1/audit/events?action=record.create").await.body["items"].as_array().unwrap().clone();
    assert!(creates.iter().filter(|e| e["details"]["import_id"] == import_id.to_string()).count() == 2);
    let r = common::as_user(&app, &rep_token, axum::http::Method::GET, "/api/v1/contacts", None).await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 2, "owned by the importer");

    // Importing the same file again: every row now duplicates a stored record.
    let report = app.service.import_records(&rep, &request(&ROWS[..2], true, false)).await.unwrap();
    assert!(!report.committed);
    assert!(report.problems.iter().all(|p| p.code == "duplicate"), "{:?}", report.problems);

    // Bad requests: unknown fields in a mapping, nothing mappable, too many cells.
    let mut bad = request(ROWS, false, false);
    bad.mapping = vec![("姓名".into(), "nonsense".into())];
    assert_eq!(app.service.import_records(&rep, &bad).await.unwrap_err().code.as_str(), "validation_failed");
    let mut bad = request(ROWS, false, false);
    bad.header = (0..5).map(|i| format!("c{i}")).collect();
    assert_eq!(app.service.import_records(&rep, &bad).await.unwrap_err().details[0].code, "nothing_mapped");
    let mut bad = request(ROWS, false, false);
    bad.rows[0].push("extra".into());
    assert!(app.service.import_records(&rep, &bad).await.is_err());

    // Auditors create nothing: refused and on the record.
    let r = app.post("/api/v1/users", json!({"username": "aud", "password": PASSWORD, "role": "auditor"})).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let aud = RequestContext::default()
        .with_actor(app.service.authenticate(&app.login("aud", PASSWORD).await).await.unwrap());
    assert_eq!(
        app.service.import_records(&aud, &request(ROWS, false, false)).await.unwrap_err().code.as_str(),
        "forbidden"
    );

    // Revert: needs a step-up from a person; then every record of the import goes, in one go.
    assert_eq!(app.service.revert_import(&rep, import_id).await.unwrap_err().code.as_str(), "step_up_required");
    let deleted = app.service.revert_import(&RequestContext::cli(), import_id).await.unwrap();
    assert_eq!(deleted.len(), 2);
    assert_eq!(count().await, 0);
    assert!(app.service.revert_import(&RequestContext::cli(), import_id).await.unwrap().is_empty(), "once");
    assert_eq!(
        app.service.revert_import(&RequestContext::cli(), uuid::Uuid::now_v7()).await.unwrap_err().code.as_str(),
        "not_found"
    );
    let reverts = app.get("/api/v1/audit/events?action=record.import_revert").await;
    assert_eq!(reverts.body["items"][1]["details"]["deleted"].as_array().unwrap().len(), 2, "{}", reverts.body);
});
