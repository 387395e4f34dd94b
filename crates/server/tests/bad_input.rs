//! Bad input of every kind gets a structured 4xx from the error table and changes nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::http::{Method, StatusCode};
use common::TestApp;
use custodian_core::ErrorCode;
use proptest::prelude::*;
use serde_json::{Value, json};

fn assert_table_error(r: &common::Reply, status: StatusCode, code: &str) {
    assert_eq!(r.status, status, "body: {}", r.body);
    assert_eq!(r.code(), code, "body: {}", r.body);
    assert!(r.body["error"]["message"].is_string());
    assert!(r.body["error"]["details"].is_array());
}

/// Audit actions that record reads and refusals rather than changes.
const READ_OR_REFUSAL: &[&str] = &[
    "auth.login_failed",
    "auth.csrf_failed",
    "access.denied",
    "record.view",
    "record.list",
    "record.search",
    "record.history",
];

/// Number of audit events (other than reads, refusals and failed logins) and of active
/// contacts: neither may move on a refused request.
async fn state(app: &TestApp) -> (usize, usize) {
    let events = app
        .store
        .list_audit(0, 100_000)
        .await
        .unwrap()
        .iter()
        .filter(|e| !READ_OR_REFUSAL.contains(&e.action.as_str()))
        .count();
    let contacts = app.get("/api/v1/contacts?limit=500").await.body["items"].as_array().unwrap().len();
    (events, contacts)
}

both_backends!(every_kind_of_bad_input_is_refused_cleanly, |app: TestApp| async move {
    let existing = app.create("contacts", json!({"name": "已存在"})).await;
    let id = existing["id"].as_str().unwrap().to_owned();
    let before = state(&app).await;
    let t = Some(app.token.as_str());
    let post = |path: &'static str, body: Vec<u8>| {
        let app = &app;
        async move { app.raw(Method::POST, path, t, Some(body), &[]).await }
    };

    assert_table_error(
        &post("/api/v1/contacts", b"{not json".to_vec()).await,
        StatusCode::BAD_REQUEST,
        "malformed_request",
    );
    assert_table_error(
        &post("/api/v1/contacts", vec![b'{', 0xff, 0xfe, b'}']).await,
        StatusCode::BAD_REQUEST,
        "malformed_request",
    );
    assert_table_error(&post("/api/v1/contacts", b"[]".to_vec()).await, StatusCode::BAD_REQUEST, "malformed_request");
    assert_table_error(
        &post("/api/v1/contacts", br#"{"fields":{"name":"x"},"bogus":"x"}"#.to_vec()).await,
        StatusCode::BAD_REQUEST,
        "malformed_request",
    );
    // A system property is a mass-assignment attempt: refused as such (and audited).
    assert_table_error(
        &post("/api/v1/contacts", br#"{"fields":{"name":"x"},"owner_id":"x"}"#.to_vec()).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    assert_table_error(
        &post("/api/v1/contacts", br#"{"fields":"x"}"#.to_vec()).await,
        StatusCode::BAD_REQUEST,
        "malformed_request",
    );
    assert_table_error(
        &post("/api/v1/contacts", br#"{"fields":{"name":"x"},"version":3}"#.to_vec()).await,
        StatusCode::BAD_REQUEST,
        "malformed_request",
    );
    assert_table_error(
        &post("/api/v1/contacts", br#"{"fields":{"name":"a\u0000b"}}"#.to_vec()).await,
        StatusCode::BAD_REQUEST,
        "malformed_request",
    );
    assert_table_error(&app.get("/api/v1/contacts?name=a%00b").await, StatusCode::BAD_REQUEST, "invalid_query");
    let big = format!(r#"{{"fields":{{"name":"{}"}}}}"#, "x".repeat(2 * 1024 * 1024));
    assert_table_error(
        &post("/api/v1/contacts", big.into_bytes()).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );
    let r = app
        .raw(
            Method::POST,
            "/api/v1/contacts",
            t,
            Some(b"name=x".to_vec()),
            &[("content-type", "application/x-www-form-urlencoded")],
        )
        .await;
    assert_table_error(&r, StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");

    // Wrong types, unknown fields, invalid values, missing required fields: 422 with details.
    let r = post("/api/v1/contacts", br#"{"fields":{"name":5,"birth_date":"1990-02-30","email":"not-an-email","mobile":"12","id_number":"110101199003078031","nope":1}}"#.to_vec()).await;
    assert_table_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    let fields: Vec<_> = r.body["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["field"].as_str().unwrap().to_owned())
        .collect();
    for f in ["name", "birth_date", "email", "mobile", "id_number", "nope"] {
        assert!(fields.contains(&f.to_owned()), "{f} missing in {fields:?}");
    }
    // Error details never echo a sensitive value back.
    assert!(!r.body.to_string().contains("110101199003078031"));
    assert_table_error(
        &post("/api/v1/contacts", br#"{"fields":{}}"#.to_vec()).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );

    // Unknown objects, routes, methods and ids.
    assert_table_error(
        &post("/api/v1/spaceships", br#"{"fields":{}}"#.to_vec()).await,
        StatusCode::NOT_FOUND,
        "unknown_object",
    );
    assert_table_error(&app.get("/api/v1/spaceships").await, StatusCode::NOT_FOUND, "unknown_object");
    assert_table_error(&app.get("/api/v1/contacts/not-a-uuid").await, StatusCode::NOT_FOUND, "not_found");
    assert_table_error(
        &app.get("/api/v1/contacts/01938f2c-0000-7000-8000-000000000000").await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_table_error(&app.get("/api/v1/nothing/here/at/all/really").await, StatusCode::NOT_FOUND, "not_found");
    assert_table_error(
        &app.call(Method::PUT, &format!("/api/v1/contacts/{id}"), Some(json!({}))).await,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
    let r = app
        .raw(
            Method::PATCH,
            &format!("/api/v1/contacts/{id}"),
            t,
            Some(br#"{"fields":{"title":"x"}}"#.to_vec()),
            &[("if-match", "banana")],
        )
        .await;
    assert_table_error(&r, StatusCode::BAD_REQUEST, "malformed_request");

    // Authentication.
    assert_table_error(
        &app.raw(Method::GET, "/api/v1/contacts", None, None, &[]).await,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
    );
    assert_table_error(
        &app.raw(Method::GET, "/api/v1/contacts", Some("cst_forged"), None, &[]).await,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
    );
    let r = app
        .raw(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(br#"{"username":"admin","password":"wrong password!"}"#.to_vec()),
            &[],
        )
        .await;
    assert_table_error(&r, StatusCode::UNAUTHORIZED, "invalid_credentials");
    let r = app
        .raw(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(br#"{"username":"nobody","password":"wrong password!"}"#.to_vec()),
            &[],
        )
        .await;
    assert_table_error(&r, StatusCode::UNAUTHORIZED, "invalid_credentials");
    // A session cookie alone does not authorise state changes (CSRF): the session's CSRF token
    // must come along in X-CSRF-Token.
    let cookie = format!("custodian_session={}", app.token);
    for headers in [vec![("cookie", cookie.as_str())], vec![("cookie", cookie.as_str()), ("x-csrf-token", "forged")]] {
        let r = app
            .raw(Method::POST, "/api/v1/contacts", None, Some(br#"{"fields":{"name":"csrf"}}"#.to_vec()), &headers)
            .await;
        assert_table_error(&r, StatusCode::FORBIDDEN, "csrf_failed");
    }
    let r = app
        .raw(Method::GET, "/api/v1/contacts", None, None, &[("cookie", &format!("custodian_session={}", app.token))])
        .await;
    assert_eq!(r.status, StatusCode::OK);

    // Query parameters: page sizes, operators, unknown fields, SQL metacharacters.
    assert_table_error(&app.get("/api/v1/contacts?limit=100000000").await, StatusCode::BAD_REQUEST, "invalid_query");
    assert_table_error(&app.get("/api/v1/contacts?limit=-1").await, StatusCode::BAD_REQUEST, "invalid_query");
    assert_table_error(&app.get("/api/v1/contacts?limit=0").await, StatusCode::BAD_REQUEST, "invalid_query");
    // Every list refuses a page size out of range rather than cutting it silently.
    for list in
        ["/api/v1/alerts", "/api/v1/notifications", "/api/v1/audit/events", "/api/v1/duplicates?object=contacts&"]
    {
        let sep = if list.ends_with('&') { "" } else { "?" };
        for limit in ["0", "501", "2147483648"] {
            let r = app.get(&format!("{list}{sep}limit={limit}")).await;
            assert_table_error(&r, StatusCode::BAD_REQUEST, "invalid_query");
        }
    }
    assert_table_error(&app.get("/api/v1/contacts?nope=1").await, StatusCode::BAD_REQUEST, "invalid_query");
    assert_table_error(&app.get("/api/v1/contacts?name[like]=1").await, StatusCode::BAD_REQUEST, "invalid_query");
    assert_table_error(&app.get("/api/v1/contacts?sort=mobile").await, StatusCode::BAD_REQUEST, "invalid_query");
    assert_table_error(&app.get("/api/v1/contacts?cursor=%%%").await, StatusCode::BAD_REQUEST, "invalid_query");
    assert_table_error(
        &app.get("/api/v1/contacts?birth_date[gt]=yesterday").await,
        StatusCode::BAD_REQUEST,
        "invalid_query",
    );
    assert_table_error(&app.get("/api/v1/deals?amount[gt]=1e9").await, StatusCode::BAD_REQUEST, "invalid_query");
    for evil in ["'; DROP TABLE records; --", "\" OR 1=1 --", "%' OR '1'='1", "NEAR(a b)", "*", "\\", "a:b^c"] {
        let enc: String = form_urlencoded::byte_serialize(evil.as_bytes()).collect();
        for path in [
            format!("/api/v1/contacts?q={enc}"),
            format!("/api/v1/contacts?name={enc}"),
            format!("/api/v1/contacts?name[contains]={enc}"),
            format!("/api/v1/contacts?title[gte]={enc}"),
        ] {
            let r = app.get(&path).await;
            assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.body);
            assert!(r.body["items"].as_array().unwrap().is_empty(), "{path}");
        }
        let r = app.get(&format!("/api/v1/contacts?mobile={enc}")).await;
        assert!(r.status == StatusCode::BAD_REQUEST || r.status == StatusCode::OK, "{}", r.body);
    }

    assert_eq!(state(&app).await, before, "refused requests changed nothing");
    let failed_logins =
        app.store.list_audit(0, 100_000).await.unwrap().iter().filter(|e| e.action == "auth.login_failed").count();
    assert_eq!(failed_logins, 2, "each failed login is audited");
    assert_eq!(app.get(&format!("/api/v1/contacts/{id}")).await.body["version"], 1);
});

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map(Value::Number).unwrap_or(Value::Null)),
        ".{0,40}".prop_map(Value::String),
        prop::sample::select(vec![
            "13812345678",
            "张三",
            "2026-02-30",
            "x@y",
            "9144030071526726XG",
            "110101199003078031",
            "http://a",
            ""
        ])
        .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop::sample::select(vec![
                    "name",
                    "fields",
                    "version",
                    "mobile",
                    "email",
                    "amount",
                    "currency",
                    "stage",
                    "company_id",
                    "tags",
                    "birth_date",
                    "x",
                    "title",
                    "status",
                    "uscc"
                ])
                .prop_map(str::to_owned),
                inner,
                0..5
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

#[derive(Debug, Clone)]
enum Body {
    Json(Value),
    Fields(Value),
    Bytes(Vec<u8>),
}

fn body() -> impl Strategy<Value = Body> {
    prop_oneof![
        json_value().prop_map(Body::Json),
        json_value().prop_map(Body::Fields),
        prop::collection::vec(any::<u8>(), 0..64).prop_map(Body::Bytes),
    ]
}

fn path() -> impl Strategy<Value = String> {
    let object = prop::sample::select(vec![
        "companies",
        "contacts",
        "leads",
        "deals",
        "activities",
        "users",
        "x",
        "schema/contacts/fields",
        "auth/login",
        "keys",
        "backups",
        "imports",
        "merges",
        "duplicates",
        "grants",
        "alerts",
        "notifications",
        "audit/events",
    ]);
    let id = prop_oneof![
        Just("01938f2c-0000-7000-8000-000000000000".to_owned()),
        Just("export".to_owned()),
        Just("import".to_owned()),
        Just("rotate".to_owned()),
        "[a-z0-9%-]{0,12}"
    ];
    let suffix = prop::sample::select(vec![
        "",
        "/restore",
        "/history",
        "/history/1",
        "/history/x",
        "/reveal",
        "/revert",
        "/transfer",
        "/as-of",
        "/diff",
        "/undo",
        "/dismiss",
        "/ack",
    ]);
    let query = prop_oneof![Just(String::new()), "\\?[a-z_\\[\\]=&%0-9]{0,30}"];
    (object, prop::option::of(id), suffix, query).prop_map(|(o, id, s, q)| match id {
        Some(id) => format!("/api/v1/{o}/{id}{s}{q}"),
        None => format!("/api/v1/{o}{q}"),
    })
}

/// The statuses the OpenAPI document lists for the operation that `path` reaches with
/// `method`, or `None` where no documented operation takes the request (the router's own 404
/// and 405). Among the templates that match, the router takes the one whose segments are
/// literal furthest to the left, and so does this.
fn documented_statuses(doc: &Value, method: &Method, path: &str) -> Option<Vec<u16>> {
    let path = path.split('?').next().unwrap_or(path);
    let segments: Vec<&str> = path.split('/').collect();
    let mut best: Option<(Vec<bool>, &Value)> = None;
    for (template, operations) in doc["paths"].as_object()? {
        let parts: Vec<&str> = template.split('/').collect();
        let matches = parts.len() == segments.len()
            && parts.iter().zip(&segments).all(|(t, s)| if t.starts_with('{') { !s.is_empty() } else { t == s });
        let literal: Vec<bool> = parts.iter().map(|t| !t.starts_with('{')).collect();
        if matches && best.as_ref().is_none_or(|(b, _)| literal > *b) {
            best = Some((literal, operations));
        }
    }
    let operation = best?.1.get(method.as_str().to_lowercase())?;
    Some(operation["responses"].as_object()?.keys().filter_map(|k| k.parse().ok()).collect())
}

/// Thousands of generated requests: never a 5xx, every error from the table, every status one
/// that the OpenAPI document lists for the operation (clients and outside tests check
/// responses against it).
#[test]
fn generated_requests_never_produce_server_errors_sqlite() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let app = rt.block_on(common::sqlite_app()).unwrap();
    fuzz(&rt, &app, 3000);
}

#[test]
fn generated_requests_never_produce_server_errors_postgres() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let Some(app) = rt.block_on(common::postgres_app()) else { return };
    fuzz(&rt, &app, 600);
}

fn fuzz(rt: &tokio::runtime::Runtime, app: &TestApp, default_cases: u32) {
    let known: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    let cases: u32 = std::env::var("CUSTODIAN_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default_cases);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let doc = rt.block_on(app.get("/api/v1/openapi.json")).body;
    let methods = prop::sample::select(vec![Method::GET, Method::POST, Method::PATCH, Method::DELETE]);
    runner
        .run(&(methods, path(), body()), |(method, path, body)| {
            let bytes = match body {
                Body::Json(v) => v.to_string().into_bytes(),
                Body::Fields(v) => json!({ "fields": v }).to_string().into_bytes(),
                Body::Bytes(b) => b,
            };
            let r = rt.block_on(app.raw(method.clone(), &path, Some(&app.token), Some(bytes), &[]));
            prop_assert!(r.status.as_u16() < 500, "{method} {path} → {} {}", r.status, r.body);
            if r.status.as_u16() >= 400 {
                prop_assert!(known.contains(&r.code()), "{method} {path} → unknown error body {}", r.body);
            }
            if let Some(statuses) = documented_statuses(&doc, &method, &path) {
                prop_assert!(
                    statuses.contains(&r.status.as_u16()),
                    "{method} {path} → {}, which the OpenAPI document does not list ({statuses:?}): {}",
                    r.status,
                    r.body
                );
            }
            Ok(())
        })
        .unwrap();
    // CSV uploads to the importer: lines of cells with quotes, commas, line breaks, NUL and
    // bytes that are not UTF-8, with and without a mapping and a commit.
    let cell = prop_oneof!["[a-z张王0-9 ,\"\r\n]{0,12}", Just("\u{0}".to_owned()), Just("13800138000".to_owned())];
    let csv = prop_oneof![
        prop::collection::vec(prop::collection::vec(cell, 0..6), 0..8).prop_map(|rows| rows
            .iter()
            .map(|r| r.join(","))
            .collect::<Vec<_>>()
            .join("\n")
            .into_bytes()),
        prop::collection::vec(any::<u8>(), 0..200),
    ];
    let query =
        prop::sample::select(vec!["", "?commit=true", "?map=name:name&commit=true&skip_invalid=true", "?map=a:b"]);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: cases / 10 + 1,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    runner
        .run(&(csv, query), |(bytes, query)| {
            let path = format!("/api/v1/contacts/import{query}");
            let r = rt.block_on(app.raw(
                Method::POST,
                &path,
                Some(&app.token),
                Some(bytes),
                &[("content-type", "text/csv")],
            ));
            prop_assert!(r.status.as_u16() < 500, "{path} → {} {}", r.status, r.body);
            if r.status.as_u16() >= 400 {
                prop_assert!(known.contains(&r.code()), "{path} → unknown error body {}", r.body);
            }
            let statuses = documented_statuses(&doc, &Method::POST, &path).unwrap_or_default();
            prop_assert!(statuses.contains(&r.status.as_u16()), "{path} → {} not in {statuses:?}", r.status);
            Ok(())
        })
        .unwrap();
    // The audit chain is still intact after everything the generator managed to write.
    let events = rt.block_on(app.store.list_audit(0, 1_000_000)).unwrap();
    custodian_store::audit::verify_chain(0, &custodian_core::audit::GENESIS_HASH, &events).unwrap();
}
