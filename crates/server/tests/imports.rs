//! Imports (PRODUCT.md A6) through the service on both backends: mapping by label, dry run with
//! per-row problems, normalisations and in-file duplicates; all-or-nothing commit in one
//! transaction with its `record.import` event; skipping bad rows only when asked; the caller's
//! permissions and row ownership; revert.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::http::{Method, StatusCode};
use common::{PASSWORD, TestApp, as_user};
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
    let r = common::as_user(&app, &rep_token, Method::GET, "/api/v1/contacts", None).await;
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

/// A CSV request body (`Content-Type: text/csv`) with `token`.
async fn upload(app: &TestApp, token: &str, path: &str, csv: &[u8]) -> common::Reply {
    app.raw(Method::POST, path, Some(token), Some(csv.to_vec()), &[("content-type", "text/csv; charset=utf-8")]).await
}

both_backends!(imports_over_http, |app: TestApp| async move {
    let r = app.post("/api/v1/users", json!({"username": "rep", "password": PASSWORD, "role": "sales_rep"})).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let rep = app.login("rep", PASSWORD).await;
    let csv = "名称,手机,来源\n赵敏,13700001111,web\n周芷若,137-0000-2222,朋友介绍\n".as_bytes();
    let path =
        "/api/v1/leads/import?map=%E5%90%8D%E7%A7%B0:name&map=%E6%89%8B%E6%9C%BA:mobile&map=%E6%9D%A5%E6%BA%90:source";
    // Dry run: 200 with the report.
    let r = upload(&app, &rep, path, csv).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!((r.body["valid_rows"].clone(), r.body["invalid_rows"].clone()), (json!(1), json!(1)));
    assert_eq!(r.body["problems"][0]["details"][0]["field"], "source");
    // A commit with a bad row: 422, nothing written, the report in error.report.
    let r = upload(&app, &rep, &format!("{path}&commit=true"), csv).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert_eq!(r.body["error"]["report"]["invalid_rows"], 1, "{}", r.body);
    assert!(as_user(&app, &rep, Method::GET, "/api/v1/leads", None).await.body["items"].as_array().unwrap().is_empty());
    // Skipping it: 201 and the import id.
    let r = upload(&app, &rep, &format!("{path}&commit=true&skip_invalid=true&file_name=leads.csv"), csv).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let import_id = r.body["import_id"].as_str().unwrap().to_owned();
    let leads = as_user(&app, &rep, Method::GET, "/api/v1/leads", None).await;
    assert_eq!(leads.body["items"][0]["fields"]["mobile"], "+8613700001111");
    let event = app.get("/api/v1/audit/events?action=record.import").await.body["items"][0].clone();
    assert_eq!(event["details"]["file"], "leads.csv");
    assert_eq!(event["details"]["file_sha256"].as_str().unwrap().len(), 64);
    // Bad input: content type, broken CSV, GBK, unknown parameters, a bad mapping.
    let r = app.raw(Method::POST, path, Some(&rep), Some(csv.to_vec()), &[("content-type", "application/json")]).await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let r = upload(&app, &rep, path, b"a,b\n1,\"open\n").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    let r = upload(&app, &rep, "/api/v1/leads/import", b"name\n\xd5\xc5\xce\xb0\n").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body["error"]["message"].as_str().unwrap().contains("iconv"), "{}", r.body);
    for bad in
        ["/api/v1/leads/import?nonsense=1", "/api/v1/leads/import?commit=maybe", "/api/v1/leads/import?map=nocolon"]
    {
        assert_eq!(upload(&app, &rep, bad, csv).await.status, StatusCode::BAD_REQUEST, "{bad}");
    }
    let r = upload(&app, &rep, "/api/v1/leads/import?map=%E5%90%8D%E7%A7%B0:nonsense", csv).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert_eq!(upload(&app, &rep, "/api/v1/nonsense/import", csv).await.status, StatusCode::NOT_FOUND);
    // Revert: a rep has no second factor to step up with; the admin does.
    let revert = format!("/api/v1/imports/{import_id}/revert");
    let r = as_user(&app, &rep, Method::POST, &revert, None).await;
    assert_eq!(r.status, StatusCode::PRECONDITION_REQUIRED, "{}", r.body);
    app.admin_step_up().await;
    let r = app.post(&revert, json!({})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["deleted"].as_array().unwrap().len(), 1);
    assert!(as_user(&app, &rep, Method::GET, "/api/v1/leads", None).await.body["items"].as_array().unwrap().is_empty());
});
