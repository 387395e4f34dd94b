//! The conformance story of the HTTP API, run unchanged against SQLite and PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::http::{Method, StatusCode};
use common::TestApp;
use common::id_of;
use serde_json::{Value, json};

both_backends!(record_lifecycle_versions_and_history, |app: TestApp| async move {
    let company = app.create("companies", json!({"name": "杭州云图信息科技有限公司", "uscc": "9144030071526726XG", "city": "杭州", "status": "active"})).await;
    let cid = id_of(&company);
    assert_eq!(company["version"], 1);
    assert_eq!(company["fields"]["uscc"], "9144030071526726XG");
    assert!(company["masked_fields"].as_array().unwrap().is_empty());

    let contact = app
        .create("contacts", json!({"name": " 张 三 ", "company_id": cid, "mobile": "１３８ 1234-5678", "email": "Zhang.San@Example.COM", "wechat": "zs_wx"}))
        .await;
    let id = id_of(&contact);
    assert_eq!(contact["fields"]["name"], "张三");
    assert_eq!(contact["fields"]["mobile"], "+8613812345678");
    assert_eq!(contact["owner_id"], contact["created_by"]);
    assert_eq!(contact["masked_fields"], json!([]));

    // Update with If-Match; the stale version then conflicts and changes nothing.
    let path = format!("/api/v1/contacts/{id}");
    let r = app
        .raw(
            Method::PATCH,
            &path,
            Some(&app.token),
            Some(json!({"fields": {"title": "销售总监"}}).to_string().into_bytes()),
            &[("if-match", "\"1\"")],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["version"], 2);
    assert_eq!(r.headers.get("etag").unwrap(), "\"2\"");
    let r = app
        .raw(
            Method::PATCH,
            &path,
            Some(&app.token),
            Some(json!({"fields": {"title": "CEO"}}).to_string().into_bytes()),
            &[("if-match", "\"1\"")],
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.code(), "version_conflict");
    assert_eq!(r.body["error"]["current_version"], 2);
    let r = app.call(Method::PATCH, &path, Some(json!({"fields": {"title": "CEO"}, "version": 1}))).await;
    assert_eq!(r.code(), "version_conflict");
    assert_eq!(app.get(&path).await.body["fields"]["title"], "销售总监");

    // Clearing a field with null.
    let r = app.call(Method::PATCH, &path, Some(json!({"fields": {"wechat": null}, "version": 2}))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.body["fields"].get("wechat").is_none());

    // Soft delete keeps the record; lists skip it; restore brings it back with the same id.
    let r = app.call(Method::DELETE, &path, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.body["deleted_at"].is_string());
    let got = app.get(&path).await;
    assert_eq!(got.status, StatusCode::OK);
    assert!(got.body["deleted_at"].is_string());
    let list = app.get("/api/v1/contacts").await;
    assert!(list.body["items"].as_array().unwrap().iter().all(|r| r["id"] != id.as_str()));
    let deleted = app.get("/api/v1/contacts?deleted=deleted").await;
    assert_eq!(deleted.body["items"].as_array().unwrap().len(), 1);
    let r = app.call(Method::PATCH, &path, Some(json!({"fields": {"title": "x"}}))).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "a deleted record cannot be edited");
    let r = app.call(Method::POST, &format!("{path}/restore"), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["id"], id.as_str());
    assert!(r.body["deleted_at"].is_null());
    assert_eq!(r.body["version"], 5);

    // History: every change is an immutable version with who/when.
    let h = app.get(&format!("{path}/history")).await;
    assert_eq!(h.status, StatusCode::OK);
    let actions: Vec<_> =
        h.body["items"].as_array().unwrap().iter().map(|v| v["action"].as_str().unwrap().to_owned()).collect();
    assert_eq!(actions, vec!["create", "update", "update", "delete", "restore"]);
    let v1 = app.get(&format!("{path}/history/1")).await;
    assert_eq!(v1.body["fields"]["wechat"], "zs_wx");
    assert_eq!(v1.body["fields"]["mobile"], "+8613812345678");
    assert!(v1.body["changed_by"].is_string());
    let page = app.get(&format!("{path}/history?limit=2")).await;
    assert_eq!(page.body["items"].as_array().unwrap().len(), 2);
    let next = page.body["next_cursor"].as_str().unwrap();
    let page2 = app.get(&format!("{path}/history?limit=2&cursor={next}")).await;
    assert_eq!(page2.body["items"][0]["version"], 3);
    assert_eq!(app.get(&format!("{path}/history/99")).await.status, StatusCode::NOT_FOUND);

    // Every write produced an audit event in a verifying chain.
    let events = app.store.list_audit(0, 10_000).await.unwrap();
    assert!(events.iter().filter(|e| e.record_id.map(|r| r.to_string()) == Some(id.clone())).count() >= 5);
    custodian_store::audit::verify_chain(0, &custodian_core::audit::GENESIS_HASH, &events).unwrap();
});

both_backends!(unique_values_and_references, |app: TestApp| async move {
    let a = app.create("companies", json!({"name": "A 公司", "uscc": "914403001922038216"})).await;
    let r = app.post("/api/v1/companies", json!({"fields": {"name": "B 公司", "uscc": "91440300 1922 0382 16"}})).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.code(), "duplicate");
    assert_eq!(r.body["error"]["details"][0]["field"], "uscc");
    // Deleting frees the unique value; restoring the first then conflicts.
    app.call(Method::DELETE, &format!("/api/v1/companies/{}", id_of(&a)), None).await;
    let b = app.create("companies", json!({"name": "B 公司", "uscc": "914403001922038216"})).await;
    let r = app.call(Method::POST, &format!("/api/v1/companies/{}/restore", id_of(&a)), None).await;
    assert_eq!(r.code(), "duplicate");
    // References must point at active records of the right object.
    let r = app.post("/api/v1/deals", json!({"fields": {"name": "d", "company_id": id_of(&a)}})).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.body["error"]["details"][0]["code"], "invalid_reference");
    let contact = app.create("contacts", json!({"name": "王五"})).await;
    let r = app.post("/api/v1/deals", json!({"fields": {"name": "d", "company_id": id_of(&contact)}})).await;
    assert_eq!(r.body["error"]["details"][0]["code"], "invalid_reference");
    let deal = app.create("deals", json!({"name": "d", "company_id": id_of(&b), "amount": {"amount": "1999.5", "currency": "CNY"}, "stage": "won", "contract_no": "HT-2026-0099"})).await;
    assert_eq!(deal["fields"]["amount"], json!({"amount": "1999.50", "currency": "CNY"}));
    // Ids of another object are not found.
    assert_eq!(app.get(&format!("/api/v1/companies/{}", id_of(&deal))).await.status, StatusCode::NOT_FOUND);
    assert_eq!(app.get(&format!("/api/v1/contacts/{}", id_of(&b))).await.status, StatusCode::NOT_FOUND);
});

both_backends!(filters_sort_search_and_pagination, |app: TestApp| async move {
    let co = app.create("companies", json!({"name": "北京字节跳动科技有限公司", "city": "北京"})).await;
    let co2 = app
        .create("companies", json!({"name": "Northwind Trading Co., Ltd.", "city": "上海", "tags": ["vip", "east"]}))
        .await;
    for (i, (name, mobile)) in
        [("张三", "13800000001"), ("张三丰", "13856780002"), ("李四", "13800000003"), ("Emily Carter", "13800000004")]
            .iter()
            .enumerate()
    {
        app.create(
            "contacts",
            json!({"name": name, "mobile": mobile, "title": format!("经理{i}"), "company_id": id_of(&co)}),
        )
        .await;
    }
    for (i, amount) in ["100", "2500.50", "99999", "0"].iter().enumerate() {
        app.create("deals", json!({"name": format!("deal {i}"), "company_id": id_of(&co2), "amount": {"amount": amount}, "expected_close_date": format!("2026-12-0{}", i + 1)})).await;
    }
    let names = |r: &common::Reply| -> Vec<String> {
        r.body["items"].as_array().unwrap().iter().map(|x| x["fields"]["name"].as_str().unwrap().to_owned()).collect()
    };

    // Two-character Chinese names are found by search; sensitive fields are not searchable.
    let r = app.get("/api/v1/contacts?q=%E5%BC%A0%E4%B8%89").await;
    let found = names(&r);
    assert!(found.contains(&"张三".to_owned()) && !found.contains(&"李四".to_owned()), "{found:?}");
    assert!(names(&app.get("/api/v1/contacts?q=emily").await).contains(&"Emily Carter".to_owned()));
    assert!(names(&app.get("/api/v1/contacts?q=13800000001").await).is_empty());
    assert!(
        names(&app.get("/api/v1/companies?q=%E5%AD%97%E8%8A%82").await)
            .contains(&"北京字节跳动科技有限公司".to_owned())
    );

    // Exact lookup of an encrypted field through its blind index, in any input format.
    let r = app.get("/api/v1/contacts?mobile=%2B86%20138-0000-0003").await;
    assert_eq!(names(&r), vec!["李四"]);
    let r = app.get("/api/v1/contacts?mobile[contains]=138").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.code(), "invalid_query");

    // Equality, contains, ranges, arrays, null tests, system columns.
    assert_eq!(names(&app.get("/api/v1/companies?city=%E4%B8%8A%E6%B5%B7").await), vec!["Northwind Trading Co., Ltd."]);
    assert_eq!(names(&app.get("/api/v1/companies?name[contains]=trading").await).len(), 1);
    assert_eq!(names(&app.get("/api/v1/companies?tags=vip").await).len(), 1);
    assert_eq!(names(&app.get("/api/v1/companies?tags[null]=true").await), vec!["北京字节跳动科技有限公司"]);
    assert_eq!(names(&app.get("/api/v1/deals?amount[gte]=2500.5").await).len(), 2);
    assert_eq!(names(&app.get("/api/v1/deals?amount[lt]=100").await), vec!["deal 3"]);
    assert_eq!(
        names(&app.get("/api/v1/deals?expected_close_date[gt]=2026-12-02&expected_close_date[lte]=2026-12-04").await)
            .len(),
        2
    );
    assert_eq!(names(&app.get(&format!("/api/v1/contacts?company_id={}", id_of(&co))).await).len(), 4);
    assert_eq!(app.get("/api/v1/contacts?created_at[gte]=2020-01-01").await.body["items"].as_array().unwrap().len(), 4);

    // Sort both ways, numbers numerically.
    assert_eq!(names(&app.get("/api/v1/deals?sort=-amount").await), vec!["deal 2", "deal 1", "deal 0", "deal 3"]);
    assert_eq!(names(&app.get("/api/v1/deals?sort=amount").await), vec!["deal 3", "deal 0", "deal 1", "deal 2"]);

    // Cursor pagination visits every record exactly once, for several sorts.
    for sort in ["", "name", "-name", "-created_at", "title"] {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/api/v1/contacts?limit=1&sort={sort}");
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let r = app.get(&path).await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.body);
            seen.extend(names(&r));
            match r.body["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
        let mut sorted = seen.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 4, "sort {sort:?} gave {seen:?}");
    }
    // A cursor of another sort order is refused.
    let c = app.get("/api/v1/contacts?limit=1&sort=name").await.body["next_cursor"].as_str().unwrap().to_owned();
    assert_eq!(app.get(&format!("/api/v1/contacts?limit=1&cursor={c}")).await.code(), "invalid_query");
});

both_backends!(concurrent_writers_never_both_win, |app: TestApp| async move {
    let c = app.create("contacts", json!({"name": "并发"})).await;
    let path = format!("/api/v1/contacts/{}", id_of(&c));
    let app = std::sync::Arc::new(app);
    let mut tasks = Vec::new();
    for i in 0..12 {
        let app = app.clone();
        let path = path.clone();
        tasks.push(tokio::spawn(async move {
            app.call(Method::PATCH, &path, Some(json!({"fields": {"title": format!("t{i}")}, "version": 1})))
                .await
                .status
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            StatusCode::OK => ok += 1,
            StatusCode::CONFLICT => {}
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(ok, 1, "exactly one writer wins");
    let h = app.get(&format!("{path}/history")).await;
    assert_eq!(h.body["items"].as_array().unwrap().len(), 2);
});

both_backends!(custom_fields_at_runtime, |app: TestApp| async move {
    let r = app.post("/api/v1/schema/contacts/fields", json!({"name": "level", "type": "enum", "label_en": "Level", "label_zh": "等级", "options": ["A", "B", "C"]})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let r = app
        .post(
            "/api/v1/schema/contacts/fields",
            json!({"name": "qq", "type": "text", "label_en": "QQ", "label_zh": "QQ号", "sensitive": true}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let r = app
        .post(
            "/api/v1/schema/contacts/fields",
            json!({"name": "level", "type": "text", "label_en": "x", "label_zh": "x"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let r = app
        .post(
            "/api/v1/schema/contacts/fields",
            json!({"name": "Bad Name", "type": "text", "label_en": "x", "label_zh": "x"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let r = app.post("/api/v1/schema/contacts/fields", json!({"name": "x", "type": "text", "label_en": "x", "label_zh": "x", "rules": [{"kind": "regex", "pattern": "("}]})).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.body["error"]["details"][0]["code"], "invalid_regex");

    let a = app.create("contacts", json!({"name": "甲", "level": "A", "qq": "12345"})).await;
    app.create("contacts", json!({"name": "乙", "level": "B"})).await;
    let r = app.post("/api/v1/contacts", json!({"fields": {"name": "丙", "level": "Z"}})).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let r = app.get("/api/v1/contacts?level=A").await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(r.body["items"][0]["fields"]["qq"], "12345");
    let r = app.get("/api/v1/contacts?qq=12345").await;
    assert_eq!(r.body["items"][0]["id"], a["id"]);
    let schema = app.get("/api/v1/schema/contacts").await;
    assert!(schema.body["fields"].as_array().unwrap().iter().any(|f| f["name"] == "level" && f["custom"] == true));
    let doc = app.get("/api/v1/openapi.json").await;
    assert!(doc.body["components"]["schemas"]["Fields_contacts"]["properties"]["level"].is_object());
});

// Before `source` became a standard field of companies and contacts, an admin could add a
// custom field of that name. Upgrading must not take it over: its values keep their type,
// sealing and blind index, and what builds on the standard field leaves that object alone.
both_backends!(a_custom_field_stored_before_a_standard_field_of_its_name_keeps_its_values, |app: TestApp| async move {
    use custodian_store::{AuditDraft, CustomFieldRow, now_micros};
    let definition = json!({"name": "source", "type": "text", "label_en": "Lead source", "label_zh": "线索来源",
        "sensitive": true, "custom": true});
    let row = CustomFieldRow { object: "contacts".into(), name: "source".into(), definition, created_at: now_micros() };
    app.store.add_custom_field(row, AuditDraft::new("schema.add_field")).await.unwrap();
    // A server starting on that store (as after an upgrade).
    let app = app.reconfigure(custodian_service::ServiceConfig::default()).await;
    let schema = app.get("/api/v1/schema/contacts").await;
    let fields = schema.body["fields"].as_array().unwrap();
    let source: Vec<&Value> = fields.iter().filter(|f| f["name"] == "source").collect();
    assert_eq!(source.len(), 1, "{}", schema.body);
    assert_eq!(
        (&source[0]["type"], &source[0]["custom"], &source[0]["sensitive"]),
        (&json!("text"), &json!(true), &json!(true))
    );

    let a = app.create("contacts", json!({"name": "周杰", "source": "LinkedIn 广告"})).await;
    let path = format!("/api/v1/contacts/{}", id_of(&a));
    assert_eq!(app.get(&path).await.body["fields"]["source"], "LinkedIn 广告");
    // Found by its blind index, like any sensitive field.
    let r = app.get("/api/v1/contacts?source=LinkedIn%20%E5%B9%BF%E5%91%8A").await;
    assert_eq!(r.body["items"].as_array().map(Vec::len), Some(1), "{}", r.body);
    assert_eq!(r.body["items"][0]["id"], a["id"]);
    let r = app.call(Method::PATCH, &path, Some(json!({"fields": {"title": "采购经理"}, "version": 1}))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["fields"]["source"], "LinkedIn 广告");

    // Nothing to rank on contacts now; companies keep the standard choice.
    let b = app.create("contacts", json!({"name": "周杰伦", "source": "展会"})).await;
    app.admin_step_up().await;
    let merge = json!({"object": "contacts", "survivor_id": a["id"], "loser_ids": [b["id"]], "rule": "trusted_source", "trusted_sources": ["web"]});
    let before = app.get(&path).await.body;
    let r = app.post("/api/v1/merges", merge).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert_eq!(r.body["error"]["details"][0]["code"], "not_supported", "{}", r.body);
    assert_eq!(app.get(&path).await.body, before);

    // A converted lead's channel goes to the new company, not into the contact's own field.
    let lead =
        app.create("leads", json!({"name": "吴磊", "company_name": "宁波海曙贸易有限公司", "source": "event"})).await;
    let r = app
        .post(
            &format!("/api/v1/leads/{}/convert", id_of(&lead)),
            json!({"company": {"fields": {"name": "宁波海曙贸易有限公司"}}, "contact": {"fields": {"name": "吴磊"}}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["company"]["fields"]["source"], "event");
    assert!(r.body["contact"]["fields"].get("source").is_none(), "{}", r.body);
});

both_backends!(sensitive_values_are_not_stored_in_plaintext, |app: TestApp| async move {
    let secrets = [
        "13912345678",
        "secret.person@example.org",
        "11010119900307803X",
        "wx_secret_handle",
        "北京市朝阳区秘密路88号",
    ];
    app.create(
        "contacts",
        json!({"name": "保密", "mobile": secrets[0], "email": secrets[1], "id_number": secrets[2], "wechat": secrets[3], "address": secrets[4]}),
    )
    .await;
    app.create("leads", json!({"name": "线索", "mobile": "13712345678", "email": "lead.secret@example.net"})).await;
    let mut all = secrets.to_vec();
    all.extend(["13712345678", "lead.secret@example.net", "8613912345678"]);
    let haystack: Vec<u8> = match app.backend {
        "sqlite" => {
            // The database file plus its WAL and shared-memory files, byte for byte.
            let mut bytes = Vec::new();
            for entry in std::fs::read_dir(&app.location).unwrap() {
                let path = entry.unwrap().path();
                if path.file_name().unwrap().to_string_lossy().starts_with("custodian.db") {
                    bytes.extend(std::fs::read(&path).unwrap());
                }
            }
            assert!(bytes.len() > 10_000);
            bytes
        }
        _ => {
            use sqlx::{Connection, Row};
            let mut conn = sqlx::PgConnection::connect(&app.location).await.unwrap();
            let tables: Vec<String> =
                sqlx::query_scalar("SELECT tablename::text FROM pg_tables WHERE schemaname = 'public'")
                    .fetch_all(&mut conn)
                    .await
                    .unwrap();
            let mut bytes = Vec::new();
            for t in tables {
                let rows = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT t::text AS row FROM \"{t}\" t")))
                    .fetch_all(&mut conn)
                    .await
                    .unwrap();
                for row in rows {
                    bytes.extend(row.get::<String, _>("row").into_bytes());
                }
            }
            bytes
        }
    };
    for secret in all {
        let needle = secret.as_bytes();
        assert!(
            !haystack.windows(needle.len()).any(|w| w == needle),
            "plaintext {secret} found in the {} store",
            app.backend
        );
    }
    // The values are still readable through the API (the resident ID masked even for admins).
    let r = app.get("/api/v1/contacts?email=SECRET.person@example.org").await;
    assert_eq!(r.body["items"][0]["fields"]["mobile"], "+8613912345678");
    assert_eq!(r.body["items"][0]["fields"]["id_number"], "110101********803X");
    assert_eq!(r.body["items"][0]["masked_fields"], json!(["id_number"]));
});

/// The value of an unlabelled metric in a Prometheus text page.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from {text}"))
}

both_backends!(metrics_show_the_store_writers_work, |app: TestApp| async move {
    let scrape = || async {
        let r = app.raw(Method::GET, "/metrics", None, None, &[]).await;
        assert_eq!(r.status, StatusCode::OK);
        r.body.as_str().unwrap_or_default().to_owned()
    };
    let before = scrape().await;
    for kind in ["groups", "jobs", "busy_seconds", "upkeep_seconds"] {
        assert!(before.contains(&format!("# TYPE custodian_store_writer_{kind}_total counter\n")), "{before}");
    }
    app.create("companies", json!({"name": "杭州计量科技有限公司"})).await;
    // A group is counted right after its jobs are answered: scrape until it is (2 s at most).
    let jobs = "custodian_store_writer_jobs_total";
    let mut after = scrape().await;
    for _ in 0..200 {
        if metric(&after, jobs) >= metric(&before, jobs) + 1.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        after = scrape().await;
    }
    for name in ["custodian_store_writer_groups_total", jobs] {
        assert!(metric(&after, name) >= metric(&before, name) + 1.0, "{name}: {before} -> {after}");
    }
    let busy = "custodian_store_writer_busy_seconds_total";
    assert!(metric(&after, busy) > metric(&before, busy), "{before} -> {after}");
});

#[tokio::test]
async fn operations_endpoints_and_request_ids() {
    let app = common::sqlite_app().await.unwrap();
    let r = app.raw(Method::GET, "/healthz", None, None, &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["store"], "sqlite");
    // Every response carries a request id; a client-supplied one is propagated.
    assert!(r.headers.get("x-request-id").is_some());
    let r = app.raw(Method::GET, "/api/v1/contacts", Some(&app.token), None, &[("x-request-id", "trace-me-123")]).await;
    assert_eq!(r.headers.get("x-request-id").unwrap(), "trace-me-123");
    let r = app.raw(Method::GET, "/metrics", None, None, &[]).await;
    let text = r.body.as_str().unwrap_or_default().to_owned();
    assert!(text.contains("custodian_http_requests_total"), "{text}");
    // The OpenAPI document is 3.1 and documents every route of the router.
    let doc = app.raw(Method::GET, "/api/v1/openapi.json", None, None, &[]).await.body;
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/api/v1/auth/login",
        "/api/v1/{object}",
        "/api/v1/{object}/{id}",
        "/api/v1/{object}/{id}/restore",
        "/api/v1/{object}/{id}/history",
        "/api/v1/{object}/{id}/history/{version}",
        "/api/v1/schema/{object}/fields",
    ] {
        assert!(paths.contains_key(p), "{p} missing from the OpenAPI document");
    }
    let codes: Vec<_> =
        doc["x-error-codes"].as_array().unwrap().iter().map(|c| c["code"].as_str().unwrap().to_owned()).collect();
    assert!(codes.contains(&"version_conflict".to_owned()) && codes.contains(&"duplicate".to_owned()));
    // Logout ends the session.
    let r = app.call(Method::POST, "/api/v1/auth/logout", None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(app.get("/api/v1/contacts").await.status, StatusCode::UNAUTHORIZED);
}

/// What a client generator, a validator or a schema-driven test tool (schemathesis) needs of the
/// OpenAPI document: a description on every response (OpenAPI requires one), operation ids
/// that are unique, the security schemes, the error statuses that every request can meet, and
/// the page bounds the service enforces.
#[tokio::test]
async fn openapi_document_is_complete_for_clients_and_validators() {
    let app = common::sqlite_app().await.unwrap();
    let doc = app.raw(Method::GET, "/api/v1/openapi.json", None, None, &[]).await.body;
    let bearer = &doc["components"]["securitySchemes"]["bearer"];
    assert_eq!((bearer["type"].as_str(), bearer["scheme"].as_str()), (Some("http"), Some("bearer")), "{bearer}");
    assert!(doc["security"].as_array().is_some_and(|s| s.iter().any(|r| r.get("bearer").is_some())));
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    let mut operation_ids = std::collections::HashSet::new();
    let mut operations = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            operations += 1;
            let at = format!("{method} {path}");
            let id = operation["operationId"].as_str().unwrap_or_else(|| panic!("{at}: no operationId"));
            assert!(operation_ids.insert(id.to_owned()), "{at}: operationId {id} used twice");
            let responses = operation["responses"].as_object().unwrap();
            for (status, response) in responses {
                assert!(response["description"].is_string(), "{at} {status}: no description");
                if status.as_str() >= "400" {
                    let schema = &response["content"]["application/json"]["schema"]["$ref"];
                    assert_eq!(schema, "#/components/schemas/ErrorBody", "{at} {status}");
                }
            }
            let mut expected = vec!["400", "401", "403", "503"];
            let parameters = operation["parameters"].as_array().cloned().unwrap_or_default();
            if parameters.iter().any(|p| p["in"] == "path") {
                expected.push("404");
            }
            if operation.get("requestBody").is_some() {
                expected.extend(["413", "415"]);
            }
            for status in expected {
                assert!(responses.contains_key(status), "{at}: status {status} not documented");
            }
            for p in parameters.iter().filter(|p| p["in"] == "query" && p["name"] == "limit") {
                assert_eq!(
                    (p["schema"]["minimum"].as_u64(), p["schema"]["maximum"].as_u64()),
                    (Some(1), Some(500)),
                    "{at}"
                );
            }
        }
    }
    assert!(operations >= 75, "{operations} operations");
    // A created record links to the operations on it; `{object}` names the schema's objects;
    // a create's fields are one object's fields.
    let create = &doc["paths"]["/api/v1/{object}"]["post"];
    let links = create["responses"]["201"]["links"].as_object().unwrap();
    for id in ["get", "update", "delete", "restore", "history", "history_version"] {
        assert_eq!(links[id]["parameters"]["id"], "$response.body#/id", "{id}");
    }
    assert_eq!(links["history_version"]["parameters"]["version"], "$response.body#/version");
    let object = create["parameters"].as_array().unwrap().iter().find(|p| p["name"] == "object").unwrap();
    assert!(object["schema"]["enum"].as_array().unwrap().contains(&json!("contacts")), "{object}");
    let body = create["requestBody"]["content"]["application/json"]["schema"].to_string();
    assert!(body.contains("Fields_contacts") && !body.contains("FieldsUpdate_"), "{body}");
    // null clears a field that is not required.
    let contact = &schemas["Fields_contacts"]["properties"];
    assert_eq!(contact["name"]["type"], "string", "{}", contact["name"]);
    assert!(contact["title"]["anyOf"].as_array().unwrap().contains(&json!({"type": "null"})), "{}", contact["title"]);
    // Logging in needs no credentials; every `$ref` names a schema that exists.
    assert_eq!(doc["paths"]["/api/v1/auth/login"]["post"]["security"], json!([{}]));
    let text = doc.to_string();
    for reference in text.split("\"#/components/schemas/").skip(1) {
        let name = reference.split('"').next().unwrap();
        assert!(schemas.contains_key(name), "$ref to a missing schema {name}");
    }
}

both_backends!(as_of_diff_and_revert, |app: TestApp| async move {
    let c = app.create("contacts", json!({"name": "历史", "title": "一", "mobile": "13711112222"})).await;
    let id = id_of(&c);
    let path = format!("/api/v1/contacts/{id}");
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let between = time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    app.call(Method::PATCH, &path, Some(json!({"fields": {"title": "二", "mobile": "13733334444"}}))).await;
    app.call(Method::PATCH, &path, Some(json!({"fields": {"title": "三"}}))).await;

    let r = app
        .get(&format!("{path}/as-of?at={}", form_urlencoded::byte_serialize(between.as_bytes()).collect::<String>()))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["version"], 1);
    assert_eq!(r.body["fields"]["title"], "一");
    assert_eq!(app.get(&format!("{path}/as-of?at=2000-01-01T00:00:00Z")).await.status, StatusCode::NOT_FOUND);
    assert_eq!(app.get(&format!("{path}/as-of?at=yesterday")).await.code(), "invalid_query");

    let d = app.get(&format!("{path}/diff?from=1&to=3")).await;
    assert_eq!(d.body["changes"]["title"], json!({"old": "一", "new": "三"}));
    assert_eq!(d.body["changes"]["mobile"], json!({"old": "+8613711112222", "new": "+8613733334444"}));
    assert!(d.body["changes"].get("name").is_none());

    // Revert one field, then the whole record: new versions, same id, audited.
    let r = app.post(&format!("{path}/revert"), json!({"to_version": 1, "field": "mobile"})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["version"], 4);
    assert_eq!(r.body["fields"]["mobile"], "+8613711112222");
    assert_eq!(r.body["fields"]["title"], "三");
    let r = app.post(&format!("{path}/revert"), json!({"to_version": 2, "version": 3})).await;
    assert_eq!(r.code(), "version_conflict");
    let r = app.post(&format!("{path}/revert"), json!({"to_version": 2, "version": 4})).await;
    assert_eq!(r.body["version"], 5);
    assert_eq!(r.body["fields"]["title"], "二");
    assert_eq!(r.body["fields"]["mobile"], "+8613733334444");
    assert_eq!(app.post(&format!("{path}/revert"), json!({"to_version": 99})).await.status, StatusCode::NOT_FOUND);
    let events = app.store.list_audit(0, 10_000).await.unwrap();
    assert_eq!(events.iter().filter(|e| e.action == "record.revert").count(), 2);
});

both_backends!(login_flood_is_throttled_and_audited, |app: TestApp| async move {
    let body = |pw: &str| Some(json!({"username": "admin", "password": pw}).to_string().into_bytes());
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(app.raw(Method::POST, "/api/v1/auth/login", None, body("wrong password!!"), &[]).await.status);
    }
    assert_eq!(&statuses[..5], &[StatusCode::UNAUTHORIZED; 5]);
    assert!(statuses[5..].iter().all(|s| *s == StatusCode::TOO_MANY_REQUESTS), "{statuses:?}");
    // Even the right password is refused while the account is throttled.
    let r = app.raw(Method::POST, "/api/v1/auth/login", None, body(common::ADMIN_PASSWORD), &[]).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.code(), "throttled");
    assert!(r.headers.get("retry-after").is_some());
    // The existing session keeps working.
    assert_eq!(app.get("/api/v1/contacts").await.status, StatusCode::OK);
    let events = app.store.list_audit(0, 10_000).await.unwrap();
    assert_eq!(events.iter().filter(|e| e.action == "auth.login_failed").count(), 5);
    assert!(events.iter().any(|e| e.action == "auth.login_throttled"));
});

both_backends!(offboarding_moves_everything_and_cuts_access_at_once, |app: TestApp| async move {
    let mk = |name: &str, role: &str| json!({"username": name, "password": "a long enough password", "role": role});
    let leaver = app.post("/api/v1/users", mk("leaver", "sales_rep")).await.body;
    let heir = app.post("/api/v1/users", mk("heir", "sales_rep")).await.body;
    let leaver_id = leaver["id"].as_str().unwrap().to_owned();
    let heir_id = heir["id"].as_str().unwrap().to_owned();
    let token = app.login("leaver", "a long enough password").await;
    let other_session = app.login("leaver", "a long enough password").await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let r = app
            .raw(
                Method::POST,
                "/api/v1/contacts",
                Some(&token),
                Some(
                    json!({"fields": {"name": format!("客户{i}"), "mobile": format!("1360000000{i}")}})
                        .to_string()
                        .into_bytes(),
                ),
                &[],
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        ids.push(r.body["id"].as_str().unwrap().to_owned());
    }
    let company = app
        .raw(
            Method::POST,
            "/api/v1/companies",
            Some(&token),
            Some(json!({"fields": {"name": "离职者的客户"}}).to_string().into_bytes()),
            &[],
        )
        .await;
    // One of the leaver's records is deleted: it moves too.
    app.raw(Method::DELETE, &format!("/api/v1/contacts/{}", ids[4]), Some(&token), None, &[]).await;
    let sessions = app.raw(Method::GET, "/api/v1/auth/sessions", Some(&token), None, &[]).await;
    assert_eq!(sessions.body["items"].as_array().unwrap().len(), 2);

    // Refusals: unknown successor, self as successor.
    let r = app.post(&format!("/api/v1/users/{leaver_id}/offboard"), json!({"successor_id": leaver_id})).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    // Offboarding is sensitive: without a fresh second factor it answers 428 and changes nothing.
    let r = app.post(&format!("/api/v1/users/{leaver_id}/offboard"), json!({"successor_id": heir_id})).await;
    assert_eq!((r.status, r.code()), (StatusCode::PRECONDITION_REQUIRED, "step_up_required"), "{}", r.body);
    let r = app.raw(Method::GET, "/api/v1/contacts", Some(&token), None, &[]).await;
    assert_eq!(r.status, StatusCode::OK, "the refused offboarding left the leaver's session alone");
    app.admin_step_up().await;
    let r = app.post(&format!("/api/v1/users/{leaver_id}/offboard"), json!({"successor_id": heir_id})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["sessions_revoked"], 2);
    assert_eq!(r.body["records_transferred"]["contacts"], 5);
    assert_eq!(r.body["records_transferred"]["companies"], 1);
    assert!(r.body["activity"].as_array().unwrap().iter().any(|a| a["action"] == "record.create" && a["count"] == 6));

    // Both of the leaver's tokens fail on their very next request; the password no longer works.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    for t in [&token, &other_session] {
        let r = app.raw(Method::GET, "/api/v1/contacts", Some(t), None, &[]).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    let r = app
        .raw(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(json!({"username": "leaver", "password": "a long enough password"}).to_string().into_bytes()),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    // Every record now belongs to the heir, with a new version and a transfer event.
    let heir_token = app.login("heir", "a long enough password").await;
    for id in ids.iter().take(4) {
        let r = app.raw(Method::GET, &format!("/api/v1/contacts/{id}"), Some(&heir_token), None, &[]).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.body["owner_id"], heir_id.as_str());
        assert_eq!(r.body["version"], 2);
    }
    let deleted = app.get(&format!("/api/v1/contacts/{}", ids[4])).await;
    assert_eq!(deleted.body["owner_id"], heir_id.as_str());
    assert!(deleted.body["deleted_at"].is_string());
    assert_eq!(
        app.get(&format!("/api/v1/companies/{}", company.body["id"].as_str().unwrap())).await.body["owner_id"],
        heir_id.as_str()
    );
    let events = app.store.list_audit(0, 100_000).await.unwrap();
    assert_eq!(events.iter().filter(|e| e.action == "record.transfer").count(), 6);
    assert!(events.iter().any(|e| e.action == "user.offboard"));
    custodian_store::audit::verify_chain(0, &custodian_core::audit::GENESIS_HASH, &events).unwrap();
});

both_backends!(suspension_role_changes_and_my_sessions, |app: TestApp| async move {
    let u = app
        .post("/api/v1/users", json!({"username": "temp", "password": "a long enough password", "role": "sales_rep"}))
        .await
        .body;
    let id = u["id"].as_str().unwrap().to_owned();
    let token = app.login("temp", "a long enough password").await;
    // Suspension and role changes are sensitive: 428 without a fresh second factor.
    let r = app.post(&format!("/api/v1/users/{id}/suspend"), json!({})).await;
    assert_eq!((r.status, r.code()), (StatusCode::PRECONDITION_REQUIRED, "step_up_required"), "{}", r.body);
    let r = app.call(Method::PATCH, &format!("/api/v1/users/{id}"), Some(json!({"role": "sales_manager"}))).await;
    assert_eq!((r.status, r.code()), (StatusCode::PRECONDITION_REQUIRED, "step_up_required"), "{}", r.body);
    assert_eq!(app.raw(Method::GET, "/api/v1/me", Some(&token), None, &[]).await.body["role"], "sales_rep");
    app.admin_step_up().await;
    let r = app.post(&format!("/api/v1/users/{id}/suspend"), json!({})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(app.raw(Method::GET, "/api/v1/me", Some(&token), None, &[]).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(app.post(&format!("/api/v1/users/{id}/reactivate"), json!({})).await.status, StatusCode::OK);
    let token = app.login("temp", "a long enough password").await;
    // A role change ends the user's sessions so the new permissions apply at once.
    let r = app.call(Method::PATCH, &format!("/api/v1/users/{id}"), Some(json!({"role": "sales_manager"}))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["role"], "sales_manager");
    assert_eq!(app.raw(Method::GET, "/api/v1/me", Some(&token), None, &[]).await.status, StatusCode::UNAUTHORIZED);
    // Nobody changes their own role, and non-admins change nobody's.
    let me = app.get("/api/v1/me").await.body["id"].as_str().unwrap().to_owned();
    let r = app.call(Method::PATCH, &format!("/api/v1/users/{me}"), Some(json!({"role": "sales_rep"}))).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let token = app.login("temp", "a long enough password").await;
    let r = app
        .raw(
            Method::PATCH,
            &format!("/api/v1/users/{id}"),
            Some(&token),
            Some(json!({"role": "admin"}).to_string().into_bytes()),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = app.call(Method::PATCH, &format!("/api/v1/users/{id}"), Some(json!({"role": "overlord"}))).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    // End all my sessions.
    let second = app.login("temp", "a long enough password").await;
    let r = app.raw(Method::DELETE, "/api/v1/auth/sessions", Some(&token), None, &[]).await;
    assert_eq!(r.body["ended"], 2);
    assert_eq!(app.raw(Method::GET, "/api/v1/me", Some(&second), None, &[]).await.status, StatusCode::UNAUTHORIZED);
});

both_backends!(personal_api_tokens, |app: TestApp| async move {
    let r = app.post("/api/v1/auth/tokens", json!({"name": "报表脚本", "scope": "read", "expires_in_days": 30})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let read_token = r.body["token"].as_str().unwrap().to_owned();
    assert!(read_token.starts_with("cpt_"));
    let read_id = r.body["id"].as_str().unwrap().to_owned();
    let rw = app
        .post("/api/v1/auth/tokens", json!({"name": "同步", "scope": "read_write", "expires_in_days": 365}))
        .await
        .body;
    let rw_token = rw["token"].as_str().unwrap().to_owned();
    for bad in [
        json!({"name": "x", "scope": "admin", "expires_in_days": 30}),
        json!({"name": "x", "scope": "read", "expires_in_days": 0}),
        json!({"name": "x", "scope": "read", "expires_in_days": 9999}),
    ] {
        assert_eq!(app.post("/api/v1/auth/tokens", bad).await.status, StatusCode::UNPROCESSABLE_ENTITY);
    }
    // Read-only tokens read but never write; read-write tokens write; tokens cannot mint tokens.
    assert_eq!(app.raw(Method::GET, "/api/v1/contacts", Some(&read_token), None, &[]).await.status, StatusCode::OK);
    let body = Some(json!({"fields": {"name": "令牌"}}).to_string().into_bytes());
    assert_eq!(
        app.raw(Method::POST, "/api/v1/contacts", Some(&read_token), body.clone(), &[]).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(app.raw(Method::POST, "/api/v1/contacts", Some(&rw_token), body, &[]).await.status, StatusCode::CREATED);
    let mint = Some(json!({"name": "x", "scope": "read", "expires_in_days": 1}).to_string().into_bytes());
    assert_eq!(
        app.raw(Method::POST, "/api/v1/auth/tokens", Some(&rw_token), mint, &[]).await.status,
        StatusCode::FORBIDDEN
    );
    // Tokens are stored only as hashes and listed without their secret.
    let list = app.get("/api/v1/auth/sessions").await.body;
    assert!(!list.to_string().contains(&read_token[4..]));
    assert!(
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["kind"] == "api_token" && s["scope"] == "read" && s["name"] == "报表脚本")
    );
    // Revocation takes effect at once.
    assert_eq!(
        app.call(Method::DELETE, &format!("/api/v1/auth/sessions/{read_id}"), None).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.raw(Method::GET, "/api/v1/contacts", Some(&read_token), None, &[]).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(app.call(Method::DELETE, "/api/v1/auth/sessions/zzzz", None).await.status, StatusCode::NOT_FOUND);
    let events = app.store.list_audit(0, 10_000).await.unwrap();
    assert_eq!(events.iter().filter(|e| e.action == "auth.token_create").count(), 2);
    assert!(events.iter().any(|e| e.action == "auth.token_revoke"));
});

both_backends!(every_read_is_audited_with_what_was_shown, |app: TestApp| async move {
    let c = app
        .create("contacts", json!({"name": "被查看", "mobile": "13500001111", "id_number": "11010119900307803X"}))
        .await;
    let id = id_of(&c);
    let before = app.store.list_audit(0, 100_000).await.unwrap().len();
    app.get(&format!("/api/v1/contacts/{id}")).await;
    app.get("/api/v1/contacts?q=%E8%A2%AB%E6%9F%A5").await;
    app.get("/api/v1/contacts?limit=5").await;
    app.get(&format!("/api/v1/contacts/{id}/history")).await;
    let events = app.store.list_audit(0, 100_000).await.unwrap();
    let new: Vec<_> = events[before..].iter().collect();
    let view = new.iter().find(|e| e.action == "record.view").expect("view event");
    assert_eq!(view.record_id.map(|r| r.to_string()), Some(id.clone()));
    let body: Value = serde_json::from_str(&view.body).unwrap();
    assert_eq!(body["details"]["masked"], json!(["id_number"]));
    assert!(body["details"]["fields"].as_array().unwrap().contains(&json!("mobile")));
    // Lists and searches record the ids returned, never the values.
    let search = new.iter().find(|e| e.action == "record.search").expect("search event");
    assert!(search.body.contains(&id));
    assert!(!search.body.contains("13500001111") && !search.body.contains("被查看"));
    assert!(new.iter().any(|e| e.action == "record.list"));
    assert!(new.iter().any(|e| e.action == "record.history"));
    // No plaintext of sensitive values anywhere in the log.
    assert!(events.iter().all(|e| !e.body.contains("13500001111") && !e.body.contains("11010119900307803X")));
});
