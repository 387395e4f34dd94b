//! Record exports (PRODUCT.md S8) over HTTP on both backends: permission, row scope, field
//! access, registration of every row id, step-up and cap, the watermark and the fingerprint
//! that `trace_leak` recognises, and the `export_rows` anomaly metric.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::http::{Method, StatusCode};
use common::{PASSWORD, Reply, TestApp, as_user, id_of};
use custodian_service::{RequestContext, ServiceConfig};
use custodian_store::now_micros;
use serde_json::{Value, json};
use std::collections::BTreeSet;

async fn user(app: &TestApp, name: &str, role: &str) -> (String, String) {
    let r = app.post("/api/v1/users", json!({"username": name, "password": PASSWORD, "role": role})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    (id_of(&r.body), app.login(name, PASSWORD).await)
}

/// The text of an export response.
fn text(r: &Reply) -> String {
    r.body.as_str().unwrap_or_else(|| panic!("not CSV: {} {}", r.status, r.body)).to_owned()
}

/// Header and rows of CSV text (after its byte-order mark).
fn parse(text: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let body = text.strip_prefix('\u{feff}').expect("a byte-order mark for spreadsheets");
    let mut reader = csv::ReaderBuilder::new().from_reader(body.as_bytes());
    let header = reader.headers().unwrap().iter().map(str::to_owned).collect();
    let rows = reader.records().map(|r| r.unwrap().iter().map(str::to_owned).collect()).collect();
    (header, rows)
}

fn column(header: &[String], rows: &[Vec<String>], name: &str) -> Vec<String> {
    let i = header.iter().position(|h| h == name).unwrap_or_else(|| panic!("no column {name} in {header:?}"));
    rows.iter().map(|r| r[i].clone()).collect()
}

async fn export_events(app: &TestApp) -> Vec<Value> {
    let r = app.get("/api/v1/audit/events?action=record.export").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.body["items"].as_array().unwrap().clone()
}

both_backends!(exports_follow_permission_scope_and_fields_and_register_every_row, |app: TestApp| async move {
    let (_, rep) = user(&app, "rep", "sales_rep").await;
    let (_, auditor) = user(&app, "auditor", "auditor").await;
    let (_, manager) = user(&app, "manager", "sales_manager").await;
    let c1 = id_of(
        &app.create(
            "contacts",
            json!({"name": "王小明", "mobile": "13800138000", "id_number": "11010119900307803X", "title": "经理"}),
        )
        .await,
    );
    let c2 = id_of(&app.create("contacts", json!({"name": "=HYPERLINK(\"x\")", "title": "总监"})).await);
    let c3 =
        id_of(&app.create("contacts", json!({"name": "Li, Lei", "title": "经理", "address": "say \"hi\" road"})).await);
    let mine = as_user(
        &app,
        &manager,
        Method::POST,
        "/api/v1/contacts",
        Some(json!({"fields": {"name": "经理的客户", "mobile": "13900139000", "title": "经理"}})),
    )
    .await;
    assert_eq!(mine.status, StatusCode::CREATED, "{}", mine.body);
    let c4 = id_of(&mine.body);

    // The admin: every row the filter selects, sensitive values in clear where the role reads
    // them, masked where it does not; the watermark names the exporter and the export.
    let r = app.get("/api/v1/contacts/export?title=%E7%BB%8F%E7%90%86").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.headers["content-type"].to_str().unwrap().starts_with("text/csv"));
    assert!(r.headers["content-disposition"].to_str().unwrap().starts_with("attachment; filename=\"contacts-"));
    let export_id = r.headers["x-export-id"].to_str().unwrap().to_owned();
    assert_eq!(r.headers["x-row-count"], "3");
    let (header, rows) = parse(&text(&r));
    assert_eq!(&header[..5], ["id", "version", "owner_id", "created_at", "updated_at"]);
    assert_eq!(header.last().unwrap(), "watermark");
    let ids: BTreeSet<String> = column(&header, &rows, "id").into_iter().collect();
    assert_eq!(ids, [c1.clone(), c3.clone(), c4.clone()].into_iter().collect());
    let row1 = rows.iter().position(|r| r[0] == c1).unwrap();
    assert_eq!(column(&header, &rows, "mobile")[row1], "+8613800138000");
    assert_eq!(column(&header, &rows, "id_number")[row1], "110101********803X", "admins see resident IDs masked");
    let row3 = rows.iter().position(|r| r[0] == c3).unwrap();
    assert_eq!(column(&header, &rows, "name")[row3], "Li, Lei");
    assert_eq!(column(&header, &rows, "address")[row3], "say \"hi\" road");
    for w in column(&header, &rows, "watermark") {
        assert!(w.starts_with("admin ") && w.ends_with(&export_id), "{w}");
    }
    // Registered before the rows left: the filter, the columns, the masked ones and every id.
    let events = export_events(&app).await;
    assert_eq!(events.len(), 1);
    let d = &events[0]["details"];
    assert_eq!(d["export_id"], export_id.as_str());
    assert_eq!(d["rows"], 3);
    assert_eq!(d["filters"], json!([{"key": "title", "value": "经理"}]));
    assert_eq!(d["masked_columns"], json!(["id_number"]));
    assert_eq!(d["columns"].as_array().unwrap().len(), header.len() - 1);
    let registered: BTreeSet<String> =
        d["ids"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect();
    assert_eq!(registered, ids);

    // A value a spreadsheet would run as a formula is defused; chosen columns, id always first.
    let r = app.get("/api/v1/contacts/export?columns=name,mobile&sort=created_at").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let (header, rows) = parse(&text(&r));
    assert_eq!(header, ["id", "name", "mobile", "watermark"]);
    assert_eq!(column(&header, &rows, "id"), [c1.clone(), c2.clone(), c3.clone(), c4.clone()]);
    assert_eq!(rows[1][1], "'=HYPERLINK(\"x\")");

    // A filter on a sensitive field is registered as a keyed hash, never its text.
    let r = app.get("/api/v1/contacts/export?mobile=13800138000").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(parse(&text(&r)).1.len(), 1);
    let event = export_events(&app).await[0].clone();
    assert!(event["details"]["filters"][0]["value"]["hmac"].is_string(), "{event}");
    assert!(!event.to_string().contains("13800138000"), "{event}");

    // The manager: own department scope (here: own records), sensitive values masked.
    let r = as_user(&app, &manager, Method::GET, "/api/v1/contacts/export", None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let (header, rows) = parse(&text(&r));
    assert_eq!(column(&header, &rows, "id"), vec![c4.clone()]);
    assert_eq!(column(&header, &rows, "mobile"), ["139****9000"]);
    assert!(column(&header, &rows, "watermark")[0].starts_with("manager "));

    // Roles without the export permission are refused, and the attempt is on the record.
    for token in [&rep, &auditor] {
        let r = as_user(&app, token, Method::GET, "/api/v1/contacts/export", None).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    }
    let denied = app.get("/api/v1/audit/events?action=access.denied").await;
    let refused: Vec<&Value> = denied.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["details"]["operation"] == "record.export")
        .collect();
    assert_eq!(refused.len(), 2, "{}", denied.body);

    // Bad requests: unknown or hidden columns, paging parameters, unknown objects, filters.
    for path in [
        "/api/v1/contacts/export?columns=name,nonsense",
        "/api/v1/contacts/export?cursor=abc",
        "/api/v1/contacts/export?limit=5",
        "/api/v1/contacts/export?nonsense=1",
        "/api/v1/contacts/export?amount[gte]=x",
    ] {
        let r = app.get(path).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path}: {}", r.body);
    }
    assert_eq!(app.get("/api/v1/nonsense/export").await.status, StatusCode::NOT_FOUND);
    // A filter that matches nothing is an empty export, still registered.
    let r = app.get("/api/v1/contacts/export?title=%E6%97%A0").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(parse(&text(&r)).1.is_empty());
    assert_eq!(export_events(&app).await[0]["details"]["rows"], 0);
});

both_backends!(large_exports_need_a_step_up_and_the_cap_holds, |app: TestApp| async move {
    let config = ServiceConfig { export_step_up_rows: 2, export_max_rows: 3, ..ServiceConfig::default() };
    let app = app.reconfigure(config).await;
    for i in 0..3 {
        app.create("companies", json!({"name": format!("杭州测试{i}号科技有限公司")})).await;
    }
    let r = app.get("/api/v1/companies/export").await;
    assert_eq!(r.status, StatusCode::PRECONDITION_REQUIRED, "{}", r.body);
    assert_eq!(r.code(), "step_up_required");
    assert!(export_events(&app).await.is_empty(), "nothing registered, nothing sent");
    app.admin_step_up().await;
    let r = app.get("/api/v1/companies/export").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(parse(&text(&r)).1.len(), 3);
    app.create("companies", json!({"name": "杭州测试9号科技有限公司"})).await;
    let r = app.get("/api/v1/companies/export").await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert_eq!(r.body["error"]["details"][0]["code"], "export_too_large");
    let denied = app.get("/api/v1/audit/events?action=access.denied").await;
    assert_eq!(denied.body["items"][0]["details"]["operation"], "record.export");
    assert_eq!(export_events(&app).await.len(), 1);
    // Narrowed, it passes.
    let r = app.get("/api/v1/companies/export?name[contains]=9").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(parse(&text(&r)).1.len(), 1);
});

both_backends!(a_leaked_file_is_traced_to_its_export, |app: TestApp| async move {
    let (_, steward) = user(&app, "steward", "data_steward").await;
    for i in 0..30 {
        let birth = format!("19{:02}-0{}-1{}", 60 + i, 1 + i % 9, i % 10);
        app.create("contacts", json!({"name": format!("客户{i}"), "birth_date": birth, "title": format!("经理 {i}")}))
            .await;
    }
    let a = app.get("/api/v1/contacts/export").await;
    let b = as_user(&app, &steward, Method::GET, "/api/v1/contacts/export", None).await;
    assert_eq!(b.status, StatusCode::OK, "{}", b.body);
    let a_id = a.headers["x-export-id"].to_str().unwrap().to_owned();
    let b_id = b.headers["x-export-id"].to_str().unwrap().to_owned();
    let b_text = text(&b);
    assert_ne!(text(&a).replace(&a_id, ""), b_text.replace(&b_id, ""), "same rows, different quoting");
    let trace = |bytes: Vec<u8>| {
        let service = app.service.clone();
        async move { service.trace_leak(&RequestContext::cli(), &bytes).await.unwrap() }
    };

    // The whole file: the fingerprint names B (both exports hold every id).
    let t = trace(b_text.clone().into_bytes()).await;
    assert_eq!(t.verdict, "fingerprint", "{t:?}");
    assert_eq!(t.export_id.unwrap().to_string(), b_id);
    assert_eq!(t.candidates.len(), 2);
    assert!(!t.candidates[1].fingerprint_match, "A's pattern does not fit B's file");

    // A fragment: the watermark column cut off, some rows kept in another order.
    let lines: Vec<&str> = b_text.split("\r\n").filter(|l| !l.is_empty()).collect();
    let cut = |line: &str| line.rsplit_once(',').unwrap().0.to_owned();
    let mut fragment = vec![cut(lines[0])];
    fragment.extend(lines[5..25].iter().rev().map(|l| cut(l)));
    let t = trace(fragment.join("\n").into_bytes()).await;
    assert_eq!(t.verdict, "fingerprint", "{t:?}");
    assert_eq!(t.export_id.unwrap().to_string(), b_id);

    // Re-saved by a tool that rewrites the quoting: the watermark still names B.
    let (header, rows) = parse(&b_text);
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(&header).unwrap();
    for r in &rows {
        w.write_record(r).unwrap();
    }
    let resaved = w.into_inner().unwrap();
    let t = trace(resaved).await;
    assert_eq!(t.verdict, "watermark", "{t:?}");
    assert_eq!(t.export_id.unwrap().to_string(), b_id);
    // … and without the watermark only the ids are left: both exports hold them all.
    let mut w = csv::Writer::from_writer(Vec::new());
    for r in std::iter::once(&header).chain(&rows) {
        w.write_record(&r[..r.len() - 1]).unwrap();
    }
    let t = trace(w.into_inner().unwrap()).await;
    assert_eq!(t.verdict, "ambiguous", "{t:?}");
    assert!(t.export_id.is_none());
    assert!(t.candidates.iter().all(|c| c.ids_matched == 30));
    // A watermark copied onto rows of another export is not believed: the ids disagree.
    let (a_header, a_rows) = parse(&text(&a));
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(&a_header).unwrap();
    for r in a_rows.iter().take(3) {
        let mut r = r.clone();
        let last = r.len() - 1;
        r[last] = rows[0][rows[0].len() - 1].clone();
        r[0] = uuid::Uuid::now_v7().to_string();
        w.write_record(&r).unwrap();
    }
    let t = trace(w.into_inner().unwrap()).await;
    assert_ne!(t.verdict, "watermark", "{t:?}");
    // A file from elsewhere names nothing.
    let t = trace(b"id,name\r\n1,x\r\n".to_vec()).await;
    assert_eq!(t.verdict, "none");
    // Over HTTP, for auditors and admins (a CSV body), audited the same way.
    let (_, auditor) = user(&app, "auditor", "auditor").await;
    let csv = [("content-type", "text/csv")];
    let r =
        app.raw(Method::POST, "/api/v1/exports/trace", Some(&auditor), Some(b_text.clone().into_bytes()), &csv).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["verdict"], "fingerprint");
    assert_eq!(r.body["export_id"], b_id.as_str());
    let r =
        app.raw(Method::POST, "/api/v1/exports/trace", Some(&steward), Some(b_text.clone().into_bytes()), &csv).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "stewards export, they do not investigate: {}", r.body);
    // Every trace is on the record.
    let traces = app.get("/api/v1/audit/events?action=export.trace").await;
    assert_eq!(traces.body["items"].as_array().unwrap().len(), 7);
});

both_backends!(export_rows_feed_the_anomaly_metric, |app: TestApp| async move {
    let (manager_id, manager) = user(&app, "manager", "sales_manager").await;
    let company = as_user(
        &app,
        &manager,
        Method::POST,
        "/api/v1/companies",
        Some(json!({"fields": {"name": "杭州云栖科技有限公司"}})),
    )
    .await;
    let company = id_of(&company.body);
    for i in 0..3 {
        let r = as_user(
            &app,
            &manager,
            Method::POST,
            "/api/v1/deals",
            Some(json!({"fields": {"name": format!("项目{i}"), "stage": "qualification", "company_id": company}})),
        )
        .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    }
    let rule = json!({"enabled": true, "window_secs": 3600, "absolute": 5, "baseline_multiple": null, "baseline_min": 0, "auto_suspend": false});
    assert_eq!(app.call(Method::PUT, "/api/v1/alert-rules/export_rows", Some(rule)).await.status, StatusCode::OK);
    let export = || as_user(&app, &manager, Method::GET, "/api/v1/deals/export", None);
    assert_eq!(export().await.status, StatusCode::OK);
    assert!(app.service.evaluate_alerts(now_micros()).await.unwrap().is_empty(), "3 rows < 5");
    assert_eq!(export().await.status, StatusCode::OK);
    let raised = app.service.evaluate_alerts(now_micros()).await.unwrap();
    assert_eq!(raised.len(), 1, "{raised:?}");
    assert_eq!(raised[0].metric, "export_rows");
    assert_eq!(raised[0].value, 6);
    assert_eq!(raised[0].user_id.to_string(), manager_id);
});
