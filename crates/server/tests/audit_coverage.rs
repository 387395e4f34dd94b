//! Issue 5 §1 and §5 over HTTP on both backends: every action the issue lists leaves an audit
//! event carrying the actor, the client's IP, user agent and request id — refusals (404 out of
//! scope, 403, 428) included — and record history (as of a time, diff, revert, restore) applies
//! field access and keeps ids and relations. Also the periodic anomaly evaluation's lease.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request, StatusCode};
use common::{Reply, TestApp};
use custodian_service::ServiceConfig;
use custodian_store::now_micros;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use tower::ServiceExt;

const PASSWORD: &str = "a long enough password";
const CLIENT_IP: &str = "203.0.113.9";
const USER_AGENT: &str = "coverage-check/1.0 (issue 5)";

/// Requests as a real client sends them: from an address, with a user agent and a request id
/// of its own (a fresh one per request, so each request's events can be found).
struct Client<'a> {
    app: &'a TestApp,
    next: AtomicUsize,
}

struct Sent {
    reply: Reply,
    request_id: String,
    /// The request carried a session or API token.
    authenticated: bool,
}

impl<'a> Client<'a> {
    fn new(app: &'a TestApp) -> Self {
        Client { app, next: AtomicUsize::new(0) }
    }

    async fn send(&self, token: Option<&str>, method: Method, path: &str, body: Option<Value>) -> Sent {
        let request_id = format!("cov-{}-{}", std::process::id(), self.next.fetch_add(1, Ordering::Relaxed));
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header("user-agent", USER_AGENT)
            .header("x-request-id", &request_id);
        if let Some(t) = token {
            builder = builder.header("authorization", format!("Bearer {t}"));
        }
        if body.is_some() {
            builder = builder.header("content-type", "application/json");
        }
        let mut request = builder.body(body.map(|b| Body::from(b.to_string())).unwrap_or_else(Body::empty)).unwrap();
        let addr: SocketAddr = format!("{CLIENT_IP}:40123").parse().unwrap();
        request.extensions_mut().insert(ConnectInfo(addr));
        let response = self.app.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Sent { reply: Reply { status, headers, body }, request_id, authenticated: token.is_some() }
    }
}

/// The events of one request, as stored (decoded bodies).
async fn events_of(app: &TestApp, request_id: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let page = app.store.list_audit(after, 1000).await.unwrap();
        let Some(last) = page.last() else { break };
        after = last.seq;
        for row in &page {
            let body: Value = serde_json::from_str(&row.body).unwrap();
            if body["request_id"] == request_id {
                out.push(body);
            }
        }
    }
    out
}

/// Asserts that the request `sent` answered `status` and left an event `action` by `actor`
/// with the client's IP, user agent and request id; returns the event.
async fn expect_event(app: &TestApp, sent: &Sent, status: StatusCode, action: &str, actor: &str) -> Value {
    assert_eq!(sent.reply.status, status, "{action}: {}", sent.reply.body);
    let events = events_of(app, &sent.request_id).await;
    let event = events
        .iter()
        .find(|e| e["action"] == action)
        .unwrap_or_else(|| panic!("no {action} event for request {}: {events:?}", sent.request_id))
        .clone();
    assert_eq!(event["actor_id"], actor, "{action}: {event}");
    assert_eq!(event["ip"], CLIENT_IP, "{action}: {event}");
    assert_eq!(event["user_agent"], USER_AGENT, "{action}: {event}");
    assert_eq!(event["request_id"], sent.request_id.as_str(), "{action}: {event}");
    if sent.authenticated {
        // The actor is the user, the role they acted in, and the session or token used.
        assert!(event["actor_role"].as_str().is_some_and(|r| !r.is_empty()), "{action}: {event}");
        let via = [&event["session_id"], &event["token_id"]];
        assert_eq!(via.iter().filter(|v| v.as_str().is_some_and(|id| id.len() == 12)).count(), 1, "{action}: {event}");
    }
    event
}

/// A refusal: the status, and an `access.denied` (or `denied_action`) event naming the code.
async fn expect_refusal(app: &TestApp, sent: &Sent, status: StatusCode, action: &str, actor: &str) -> Value {
    let event = expect_event(app, sent, status, action, actor).await;
    assert_eq!(event["details"]["code"], sent.reply.body["error"]["code"], "{event}");
    event
}

async fn user(app: &TestApp, name: &str, role: &str) -> String {
    let r = app.post("/api/v1/users", json!({"username": name, "password": PASSWORD, "role": role})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    r.body["id"].as_str().unwrap().to_owned()
}

async fn admin_id(app: &TestApp) -> String {
    app.get("/api/v1/me").await.body["id"].as_str().unwrap().to_owned()
}

both_backends!(every_listed_action_is_audited_with_actor_ip_agent_and_request_id, |app: TestApp| async move {
    let c = Client::new(&app);
    let admin = admin_id(&app).await;
    let token = app.token.clone();
    let t = Some(token.as_str());

    // ---- keys: the first start created the data key and the blind-index key, each audited by
    // its label (the material exists only wrapped, in its own table) ----
    let keys: Vec<Value> = app
        .store
        .list_audit(0, 1000)
        .await
        .unwrap()
        .iter()
        .map(|row| serde_json::from_str::<Value>(&row.body).unwrap())
        .filter(|e| e["action"] == "key.create")
        .collect();
    assert_eq!(keys.len(), 2, "{keys:?}");
    let wrapped = app.store.list_wrapped_keys().await.unwrap();
    for key in &wrapped {
        assert!(keys.iter().any(|e| e["details"]["label"] == key.label.as_str()), "{} is audited", key.label);
    }

    // ---- records: create, update, view, list, search, history, as-of, diff, revert ----
    let s = c
        .send(
            t,
            Method::POST,
            "/api/v1/contacts",
            Some(json!({"fields": {"name": "覆盖检查", "mobile": "13512340000", "id_number": "11010119900307803X"}})),
        )
        .await;
    let created = expect_event(&app, &s, StatusCode::CREATED, "record.create", &admin).await;
    let id = s.reply.body["id"].as_str().unwrap().to_owned();
    assert_eq!(created["record_id"], id.as_str());
    let path = format!("/api/v1/contacts/{id}");
    let s = c.send(t, Method::PATCH, &path, Some(json!({"fields": {"title": "经理"}}))).await;
    expect_event(&app, &s, StatusCode::OK, "record.update", &admin).await;
    // The same change again changes nothing, but still shows the record: a view.
    let s = c.send(t, Method::PATCH, &path, Some(json!({"fields": {"title": "经理"}}))).await;
    let unchanged = expect_event(&app, &s, StatusCode::OK, "record.view", &admin).await;
    assert_eq!(unchanged["details"]["unchanged"], "update", "{unchanged}");
    assert_eq!(unchanged["details"]["masked"], json!(["id_number"]), "{unchanged}");
    let s = c.send(t, Method::GET, &path, None).await;
    let view = expect_event(&app, &s, StatusCode::OK, "record.view", &admin).await;
    assert_eq!(view["details"]["masked"], json!(["id_number"]));
    let s = c.send(t, Method::GET, "/api/v1/contacts?limit=5", None).await;
    let list = expect_event(&app, &s, StatusCode::OK, "record.list", &admin).await;
    assert!(list.to_string().contains(&id), "lists record the ids returned: {list}");
    let s = c.send(t, Method::GET, "/api/v1/contacts?q=%E8%A6%86%E7%9B%96", None).await;
    expect_event(&app, &s, StatusCode::OK, "record.search", &admin).await;
    for suffix in ["/history", "/history/1", "/as-of?at=2100-01-01T00:00:00Z", "/diff?from=1&to=2"] {
        let s = c.send(t, Method::GET, &format!("{path}{suffix}"), None).await;
        expect_event(&app, &s, StatusCode::OK, "record.history", &admin).await;
    }
    let s = c.send(t, Method::POST, &format!("{path}/revert"), Some(json!({"to_version": 1, "field": "title"}))).await;
    let revert = expect_event(&app, &s, StatusCode::OK, "record.revert", &admin).await;
    assert_eq!(revert["details"]["reverted_to"], 1);
    let s = c.send(t, Method::POST, &format!("{path}/revert"), Some(json!({"to_version": 1, "field": "title"}))).await;
    let unchanged = expect_event(&app, &s, StatusCode::OK, "record.view", &admin).await;
    assert_eq!(unchanged["details"]["unchanged"], "revert", "{unchanged}");

    // ---- reveal: refused without a step-up (428), then allowed ----
    let s = c.send(t, Method::POST, &format!("{path}/reveal"), Some(json!({"field": "id_number"}))).await;
    expect_refusal(&app, &s, StatusCode::PRECONDITION_REQUIRED, "record.reveal_denied", &admin).await;
    let code = app.next_code("admin");
    let s = c.send(t, Method::POST, "/api/v1/auth/step-up", Some(json!({"code": code}))).await;
    expect_event(&app, &s, StatusCode::OK, "auth.step_up", &admin).await;
    let s = c.send(t, Method::POST, &format!("{path}/reveal"), Some(json!({"field": "id_number"}))).await;
    let reveal = expect_event(&app, &s, StatusCode::OK, "record.reveal", &admin).await;
    assert!(!reveal.to_string().contains("11010119900307803X"), "no plaintext in the log: {reveal}");

    // ---- delete and restore ----
    let s = c.send(t, Method::DELETE, &path, None).await;
    expect_event(&app, &s, StatusCode::OK, "record.delete", &admin).await;
    let s = c.send(t, Method::POST, &format!("{path}/restore"), None).await;
    expect_event(&app, &s, StatusCode::OK, "record.restore", &admin).await;

    // ---- merge and unmerge ----
    let a = app.create("companies", json!({"name": "合并甲有限公司"})).await;
    let b = app.create("companies", json!({"name": "合并乙贸易有限公司"})).await;
    let (a, b) = (a["id"].as_str().unwrap(), b["id"].as_str().unwrap());
    let s = c
        .send(
            t,
            Method::POST,
            "/api/v1/merges",
            Some(json!({"object": "companies", "survivor_id": a, "loser_ids": [b]})),
        )
        .await;
    expect_event(&app, &s, StatusCode::CREATED, "record.merge", &admin).await;
    let merge = s.reply.body["id"].as_str().unwrap().to_owned();
    let s = c.send(t, Method::POST, &format!("/api/v1/merges/{merge}/undo"), None).await;
    expect_event(&app, &s, StatusCode::OK, "record.unmerge", &admin).await;

    // ---- users, roles, organisation and configuration ----
    let s = c
        .send(
            t,
            Method::POST,
            "/api/v1/users",
            Some(json!({"username": "rep", "password": PASSWORD, "role": "sales_rep"})),
        )
        .await;
    expect_event(&app, &s, StatusCode::CREATED, "user.create", &admin).await;
    let rep_id = s.reply.body["id"].as_str().unwrap().to_owned();
    let s = c.send(t, Method::PATCH, &format!("/api/v1/users/{rep_id}"), Some(json!({"role": "sales_manager"}))).await;
    let role = expect_event(&app, &s, StatusCode::OK, "user.update", &admin).await;
    assert!(role.to_string().contains("sales_manager"), "{role}");
    app.call(Method::PATCH, &format!("/api/v1/users/{rep_id}"), Some(json!({"role": "sales_rep"}))).await;
    let s = c.send(t, Method::POST, "/api/v1/departments", Some(json!({"name": "华东区"}))).await;
    expect_event(&app, &s, StatusCode::CREATED, "department.create", &admin).await;
    let s = c.send(t, Method::POST, "/api/v1/teams", Some(json!({"name": "华东一组"}))).await;
    expect_event(&app, &s, StatusCode::CREATED, "team.create", &admin).await;
    let field = json!({"name": "grade", "type": "text", "label_en": "Grade", "label_zh": "等级"});
    let s = c.send(t, Method::POST, "/api/v1/schema/contacts/fields", Some(field)).await;
    expect_event(&app, &s, StatusCode::CREATED, "schema.add_field", &admin).await;
    let rule = json!({"enabled": true, "window_secs": 3600, "absolute": 1, "baseline_multiple": null, "baseline_min": 0, "auto_suspend": false});
    let s = c.send(t, Method::PUT, "/api/v1/alert-rules/reveals", Some(rule)).await;
    let changed = expect_event(&app, &s, StatusCode::OK, "alert.rule_update", &admin).await;
    assert_eq!(changed["details"]["new"]["absolute"], 1);
    let s = c
        .send(
            t,
            Method::POST,
            "/api/v1/auth/tokens",
            Some(json!({"name": "报表", "scope": "read", "expires_in_days": 30})),
        )
        .await;
    expect_event(&app, &s, StatusCode::CREATED, "auth.token_create", &admin).await;
    // A request made with the token names the token, not a session.
    let api_token = s.reply.body["token"].as_str().unwrap().to_owned();
    let token_id = s.reply.body["id"].as_str().unwrap().to_owned();
    let s = c.send(Some(&api_token), Method::GET, &path, None).await;
    let by_token = expect_event(&app, &s, StatusCode::OK, "record.view", &admin).await;
    assert_eq!(by_token["token_id"], token_id.as_str(), "{by_token}");
    assert_eq!(by_token["actor_role"], "admin", "{by_token}");
    assert!(by_token.get("session_id").is_none(), "{by_token}");

    // ---- alerts: the reveal above raises one; listing and acknowledging it are audited ----
    let raised = app.service.evaluate_alerts(now_micros()).await.unwrap();
    let alert = raised.iter().find(|a| a.metric == "reveals").expect("reveals alert");
    let s = c.send(t, Method::GET, "/api/v1/alerts", None).await;
    let listed = expect_event(&app, &s, StatusCode::OK, "alert.list", &admin).await;
    assert!(listed["details"]["ids"].to_string().contains(&alert.id.to_string()), "{listed}");
    // So are the other lists that show something: grants, the caller's sessions, notifications.
    for (uri, action) in [
        ("/api/v1/grants", "grant.list"),
        ("/api/v1/auth/sessions", "auth.sessions_list"),
        ("/api/v1/notifications", "notification.list"),
    ] {
        let s = c.send(t, Method::GET, uri, None).await;
        expect_event(&app, &s, StatusCode::OK, action, &admin).await;
    }
    let s = c.send(t, Method::POST, &format!("/api/v1/alerts/{}/ack", alert.id), None).await;
    expect_event(&app, &s, StatusCode::OK, "alert.ack", &admin).await;

    // ---- login success, failure, logout ----
    let s = c
        .send(
            None,
            Method::POST,
            "/api/v1/auth/login",
            Some(json!({"username": "rep", "password": "wrong password here"})),
        )
        .await;
    expect_event(&app, &s, StatusCode::UNAUTHORIZED, "auth.login_failed", &rep_id).await;
    let s =
        c.send(None, Method::POST, "/api/v1/auth/login", Some(json!({"username": "rep", "password": PASSWORD}))).await;
    let login = expect_event(&app, &s, StatusCode::OK, "auth.login", &rep_id).await;
    assert_eq!(login["actor_role"], "sales_rep", "{login}");
    let rep = s.reply.body["token"].as_str().unwrap().to_owned();
    let r = Some(rep.as_str());
    // The login names the session that the rep's own session list shows as current, and the
    // rep's later requests name the same session.
    let sessions = c.send(r, Method::GET, "/api/v1/auth/sessions", None).await;
    let current =
        sessions.reply.body["items"].as_array().and_then(|list| list.iter().find(|s| s["current"] == true)).cloned();
    let session_id = current.as_ref().and_then(|s| s["id"].as_str()).expect("current session").to_owned();
    assert_eq!(login["session_id"], session_id.as_str(), "{login}");

    // ---- refusals of the rep: out-of-scope ids are 404 everywhere, admin routes 403 ----
    for (method, suffix, body) in [
        (Method::GET, "", None),
        (Method::PATCH, "", Some(json!({"fields": {"title": "x"}}))),
        (Method::DELETE, "", None),
        (Method::GET, "/history", None),
        (Method::GET, "/history/1", None),
        (Method::GET, "/as-of?at=2100-01-01T00:00:00Z", None),
        (Method::GET, "/diff?from=1&to=2", None),
        (Method::POST, "/revert", Some(json!({"to_version": 1}))),
        (Method::POST, "/reveal", Some(json!({"field": "mobile"}))),
    ] {
        let s = c.send(r, method.clone(), &format!("{path}{suffix}"), body).await;
        let e = expect_refusal(&app, &s, StatusCode::NOT_FOUND, "access.denied", &rep_id).await;
        assert_eq!(e["record_id"], id.as_str(), "{method} {suffix}: {e}");
    }
    for (method, route, body) in [
        (
            Method::POST,
            "/api/v1/users".to_owned(),
            Some(json!({"username": "x1", "password": PASSWORD, "role": "admin"})),
        ),
        (Method::GET, "/api/v1/users".to_owned(), None),
        (Method::PATCH, format!("/api/v1/users/{admin}"), Some(json!({"role": "sales_rep"}))),
        (Method::POST, format!("/api/v1/users/{admin}/suspend"), Some(json!({}))),
        (Method::POST, "/api/v1/teams".to_owned(), Some(json!({"name": "t"}))),
        (Method::POST, "/api/v1/departments".to_owned(), Some(json!({"name": "d"}))),
        (
            Method::POST,
            "/api/v1/schema/contacts/fields".to_owned(),
            Some(json!({"name": "y", "type": "text", "label_en": "Y", "label_zh": "Y"})),
        ),
        (
            Method::PUT,
            "/api/v1/alert-rules/reveals".to_owned(),
            Some(
                json!({"enabled": false, "window_secs": 3600, "absolute": 1, "baseline_multiple": null, "baseline_min": 0, "auto_suspend": false}),
            ),
        ),
        (Method::GET, "/api/v1/alerts".to_owned(), None),
        (Method::GET, "/api/v1/audit/events".to_owned(), None),
        (Method::GET, "/api/v1/contacts/export".to_owned(), None),
        (
            Method::POST,
            "/api/v1/merges".to_owned(),
            Some(json!({"object": "companies", "survivor_id": a, "loser_ids": [b]})),
        ),
    ] {
        let s = c.send(r, method.clone(), &route, body).await;
        expect_refusal(&app, &s, StatusCode::FORBIDDEN, "access.denied", &rep_id).await;
    }
    // Reading the audit log is itself audited.
    let s = c.send(t, Method::GET, "/api/v1/audit/events?limit=5", None).await;
    expect_event(&app, &s, StatusCode::OK, "audit.query", &admin).await;
    let s = c.send(t, Method::GET, "/api/v1/audit/events.csv?action=record.", None).await;
    expect_event(&app, &s, StatusCode::OK, "audit.export", &admin).await;
    let s = c.send(t, Method::POST, "/api/v1/audit/verify", None).await;
    expect_event(&app, &s, StatusCode::OK, "audit.verify", &admin).await;
    // So is every export of records, with the row ids it sent.
    let s = c.send(t, Method::GET, "/api/v1/companies/export?columns=name", None).await;
    let event = expect_event(&app, &s, StatusCode::OK, "record.export", &admin).await;
    assert!(event["details"]["ids"].as_array().is_some_and(|ids| !ids.is_empty()), "{event}");

    // ---- change notifications and their sign-off ----
    let company = c.send(r, Method::POST, "/api/v1/companies", Some(json!({"fields": {"name": "覆盖客户"}}))).await;
    expect_event(&app, &company, StatusCode::CREATED, "record.create", &rep_id).await;
    let company = company.reply.body["id"].clone();
    let deal = c
        .send(
            r,
            Method::POST,
            "/api/v1/deals",
            Some(json!({"fields": {"name": "覆盖单", "stage": "proposal", "company_id": company}})),
        )
        .await;
    expect_event(&app, &deal, StatusCode::CREATED, "record.create", &rep_id).await;
    let deal = deal.reply.body["id"].as_str().unwrap().to_owned();
    // A won deal needs its contract number (a default rule).
    let won = json!({"fields": {"stage": "won", "contract_no": "HT-2026-0001"}});
    let s = c.send(t, Method::PATCH, &format!("/api/v1/deals/{deal}"), Some(won)).await;
    expect_event(&app, &s, StatusCode::OK, "record.update", &admin).await;
    let mine = c.send(r, Method::GET, "/api/v1/notifications", None).await.reply.body;
    let note = mine["items"][0]["id"].as_str().expect("a notification for the owner").to_owned();
    let s = c.send(r, Method::POST, &format!("/api/v1/notifications/{note}/ack"), None).await;
    expect_event(&app, &s, StatusCode::OK, "notification.ack", &rep_id).await;

    // ---- sessions: ending them and logging out ----
    let s = c.send(r, Method::DELETE, "/api/v1/auth/sessions", None).await;
    expect_event(&app, &s, StatusCode::OK, "auth.sessions_ended", &rep_id).await;
    let again =
        c.send(None, Method::POST, "/api/v1/auth/login", Some(json!({"username": "rep", "password": PASSWORD}))).await;
    let rep = again.reply.body["token"].as_str().unwrap().to_owned();
    let s = c.send(Some(&rep), Method::POST, "/api/v1/auth/logout", None).await;
    expect_event(&app, &s, StatusCode::NO_CONTENT, "auth.logout", &rep_id).await;

    // ---- MFA: enrolment of a privileged user, login with the second factor, reset ----
    let steward_id = user(&app, "steward", "data_steward").await;
    let s = c
        .send(None, Method::POST, "/api/v1/auth/login", Some(json!({"username": "steward", "password": PASSWORD})))
        .await;
    expect_event(&app, &s, StatusCode::OK, "auth.login", &steward_id).await;
    let steward = s.reply.body["token"].as_str().unwrap().to_owned();
    let s = c.send(Some(&steward), Method::GET, "/api/v1/contacts", None).await;
    expect_refusal(&app, &s, StatusCode::FORBIDDEN, "access.denied", &steward_id).await;
    let s = c.send(Some(&steward), Method::POST, "/api/v1/auth/mfa/enroll", None).await;
    expect_event(&app, &s, StatusCode::OK, "mfa.enroll_start", &steward_id).await;
    let secret = custodian_crypto::totp::secret_from_base32(s.reply.body["secret"].as_str().unwrap()).unwrap();
    app.mfa_secrets.lock().unwrap().insert("steward".into(), secret);
    let code = app.next_code("steward");
    let s = c.send(Some(&steward), Method::POST, "/api/v1/auth/mfa/enroll/confirm", Some(json!({"code": code}))).await;
    expect_event(&app, &s, StatusCode::OK, "mfa.enroll_confirm", &steward_id).await;
    let s = c
        .send(None, Method::POST, "/api/v1/auth/login", Some(json!({"username": "steward", "password": PASSWORD})))
        .await;
    expect_event(&app, &s, StatusCode::OK, "auth.mfa_challenge", &steward_id).await;
    let challenge = s.reply.body["challenge"].as_str().unwrap().to_owned();
    let s =
        c.send(None, Method::POST, "/api/v1/auth/mfa", Some(json!({"challenge": challenge, "code": "000000"}))).await;
    assert_eq!(s.reply.status, StatusCode::UNAUTHORIZED, "{}", s.reply.body);
    assert!(!events_of(&app, &s.request_id).await.is_empty(), "a wrong second factor is audited");
    let code = app.next_code("steward");
    let s = c.send(None, Method::POST, "/api/v1/auth/mfa", Some(json!({"challenge": challenge, "code": code}))).await;
    expect_event(&app, &s, StatusCode::OK, "auth.mfa_success", &steward_id).await;
    // The admin's step-up window is long over: 428, then the reset with a fresh step-up.
    app.clock.advance_secs(3600);
    let s = c.send(t, Method::POST, &format!("/api/v1/users/{steward_id}/mfa/reset"), None).await;
    expect_refusal(&app, &s, StatusCode::PRECONDITION_REQUIRED, "access.denied", &admin).await;
    app.admin_step_up().await;
    let s = c.send(t, Method::POST, &format!("/api/v1/users/{steward_id}/mfa/reset"), None).await;
    expect_event(&app, &s, StatusCode::OK, "mfa.reset", &admin).await;

    // ---- suspension and offboarding ----
    let s = c.send(t, Method::POST, &format!("/api/v1/users/{steward_id}/suspend"), Some(json!({}))).await;
    expect_event(&app, &s, StatusCode::OK, "user.suspend", &admin).await;
    let s = c
        .send(t, Method::POST, &format!("/api/v1/users/{rep_id}/offboard"), Some(json!({"successor_id": admin})))
        .await;
    expect_event(&app, &s, StatusCode::OK, "user.offboard", &admin).await;

    // The whole log still verifies.
    let all = app.store.list_audit(0, 100_000).await.unwrap();
    custodian_store::audit::verify_chain(0, &custodian_core::audit::GENESIS_HASH, &all).unwrap();
});

both_backends!(history_applies_field_access_and_restore_keeps_relations, |app: TestApp| async move {
    let c = Client::new(&app);
    let auditor_id = user(&app, "auditor", "auditor").await;
    let auditor = app.login("auditor", PASSWORD).await;
    let company = app.create("companies", json!({"name": "关系保持有限公司"})).await;
    let company_id = company["id"].as_str().unwrap().to_owned();
    let contact = app
        .create("contacts", json!({"name": "历史人", "company_id": company_id, "mobile": "13711112222", "id_number": "11010119900307803X"}))
        .await;
    let id = contact["id"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/contacts/{id}");
    let r = app.call(Method::PATCH, &path, Some(json!({"fields": {"mobile": "13733334444", "title": "总监"}}))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);

    // As of now and the diff, as the auditor sees them: sensitive values masked on both sides,
    // and nothing in clear in the answer or in the log.
    let s = c.send(Some(&auditor), Method::GET, &format!("{path}/as-of?at=2100-01-01T00:00:00Z"), None).await;
    assert_eq!(s.reply.status, StatusCode::OK, "{}", s.reply.body);
    assert_eq!(s.reply.body["version"], 2);
    assert_eq!(s.reply.body["fields"]["mobile"], "137****4444");
    assert!(s.reply.body["masked_fields"].as_array().unwrap().contains(&json!("mobile")));
    assert_ne!(s.reply.body["fields"]["id_number"], "11010119900307803X");
    expect_event(&app, &s, StatusCode::OK, "record.history", &auditor_id).await;
    let s = c.send(Some(&auditor), Method::GET, &format!("{path}/diff?from=1&to=2"), None).await;
    assert_eq!(s.reply.status, StatusCode::OK, "{}", s.reply.body);
    assert_eq!(s.reply.body["changes"]["mobile"], json!({"old": "137****2222", "new": "137****4444"}));
    assert_eq!(s.reply.body["changes"]["title"], json!({"old": null, "new": "总监"}));
    assert!(s.reply.body["changes"].get("id_number").is_none(), "{}", s.reply.body);
    let text = s.reply.body.to_string();
    assert!(!text.contains("13711112222") && !text.contains("13733334444"), "{text}");
    expect_event(&app, &s, StatusCode::OK, "record.history", &auditor_id).await;
    // The admin sees the clear values; auditors cannot revert (403 inside read scope).
    let d = app.get(&format!("{path}/diff?from=1&to=2")).await;
    assert_eq!(d.body["changes"]["mobile"], json!({"old": "+8613711112222", "new": "+8613733334444"}));
    let s = c.send(Some(&auditor), Method::POST, &format!("{path}/revert"), Some(json!({"to_version": 1}))).await;
    expect_refusal(&app, &s, StatusCode::FORBIDDEN, "access.denied", &auditor_id).await;

    // Reverting one field of a deleted record is refused: restore it first.
    let company_path = format!("/api/v1/companies/{company_id}");
    let deal = app.create("deals", json!({"name": "关系单", "company_id": company_id})).await;
    let deal_id = deal["id"].as_str().unwrap().to_owned();
    assert_eq!(app.call(Method::DELETE, &company_path, None).await.status, StatusCode::OK);
    let r = app.post(&format!("{company_path}/revert"), json!({"to_version": 1})).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    // While the company is deleted nothing new may point at it …
    let r = app.post("/api/v1/deals", json!({"fields": {"name": "新单", "company_id": company_id}})).await;
    assert_eq!(r.body["error"]["details"][0]["code"], "invalid_reference", "{}", r.body);
    // … and once restored it has its id, its relations still point at it, and it can be
    // referenced again.
    let r = app.call(Method::POST, &format!("{company_path}/restore"), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["id"], company_id.as_str());
    assert_eq!(r.body["version"], 3);
    assert_eq!(app.get(&path).await.body["fields"]["company_id"], company_id.as_str());
    assert_eq!(app.get(&format!("/api/v1/deals/{deal_id}")).await.body["fields"]["company_id"], company_id.as_str());
    let r = app.post("/api/v1/deals", json!({"fields": {"name": "新单", "company_id": company_id}})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let listed = app.get(&format!("/api/v1/contacts?company_id={company_id}")).await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.body);
    assert!(listed.body["items"].as_array().unwrap().iter().any(|x| x["id"] == id.as_str()), "{}", listed.body);

    // Reverting one field, then the whole record: new versions, same id, through the write
    // path (the old mobile is re-validated and its blind index rewritten: it is found again).
    let r = app.post(&format!("{path}/revert"), json!({"to_version": 1, "field": "mobile"})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!((r.body["version"].clone(), r.body["id"].clone()), (json!(3), json!(id)));
    assert_eq!(r.body["fields"]["mobile"], "+8613711112222");
    assert_eq!(r.body["fields"]["title"], "总监");
    let found = app.get("/api/v1/contacts?mobile=13711112222").await;
    assert_eq!(found.body["items"][0]["id"], id.as_str(), "{}", found.body);
    let r = app.post(&format!("{path}/revert"), json!({"to_version": 1})).await;
    assert_eq!(r.body["version"], 4, "{}", r.body);
    assert!(r.body["fields"].get("title").is_none(), "{}", r.body);
    let events = app.store.list_audit(0, 100_000).await.unwrap();
    let reverts: Vec<_> = events.iter().filter(|e| e.action == "record.revert").collect();
    assert_eq!(reverts.len(), 2);
    assert!(reverts.iter().all(|e| !e.body.contains("13711112222")), "no plaintext in revert events");
    let restore = events.iter().find(|e| e.action == "record.restore").unwrap();
    assert_eq!(restore.record_id.map(|r| r.to_string()), Some(company_id));
});

both_backends!(periodic_evaluation_runs_once_per_period_across_servers, |app: TestApp| async move {
    // Two services over one store stand for two servers.
    let second = {
        let master = custodian_crypto::MasterKey::from_hex(&app.master_hex).unwrap();
        let keyring = custodian_service::load_keyring(app.store.as_ref(), &master).await.unwrap();
        std::sync::Arc::new(
            custodian_service::Service::new(app.store.clone(), keyring, ServiceConfig::default()).await.unwrap(),
        )
    };
    let rule = json!({"enabled": true, "window_secs": 3600, "absolute": 1, "baseline_multiple": null, "baseline_min": 0, "auto_suspend": false});
    assert_eq!(
        app.call(Method::PUT, "/api/v1/alert-rules/distinct_records_viewed", Some(rule)).await.status,
        StatusCode::OK
    );
    let c = app.create("contacts", json!({"name": "周期"})).await;
    app.get(&format!("/api/v1/contacts/{}", c["id"].as_str().unwrap())).await;
    // `now` and `now + 60 s` in one fixed hour, so both evaluations see the same alert window.
    let hour = 3_600_000_000i64;
    let mut now = now_micros();
    if now.rem_euclid(hour) > hour - 61_000_000 {
        now += 62_000_000;
    }
    let (a, b) = tokio::join!(
        app.service.evaluate_alerts_if_due("server-a", now, 60),
        second.evaluate_alerts_if_due("server-b", now, 60)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(a.is_some() != b.is_some(), "exactly one server evaluates: {a:?} / {b:?}");
    let raised = a.or(b).unwrap();
    assert!(raised.iter().any(|x| x.metric == "distinct_records_viewed"), "{raised:?}");
    // Within the period nobody evaluates again; after it, either server does.
    assert!(second.evaluate_alerts_if_due("server-b", now + 30_000_000, 60).await.unwrap().is_none());
    assert!(app.service.evaluate_alerts_if_due("server-a", now + 59_000_000, 60).await.unwrap().is_none());
    let later = second.evaluate_alerts_if_due("server-b", now + 60_000_000, 60).await.unwrap();
    // Same window, same alert: raised once in the database.
    assert!(later.expect("due again").iter().all(|x| x.metric != "distinct_records_viewed"));
    let alerts = app.store.list_alerts(None, 100).await.unwrap();
    assert_eq!(alerts.iter().filter(|x| x.metric == "distinct_records_viewed").count(), 1);
});

/// Read events the database refuses to store, as a full disk or a broken audit table would:
/// a trigger rejects every insert of one of `actions` (or, with an empty list, takes it away).
async fn refuse_audit_inserts(app: &TestApp, actions: &[&str]) {
    use sqlx::Connection;
    let list = actions.iter().map(|a| format!("'{a}'")).collect::<Vec<_>>().join(", ");
    if app.backend == "sqlite" {
        let path = std::path::Path::new(&app.location).join("custodian.db");
        let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display())).await.unwrap();
        let drop = "DROP TRIGGER IF EXISTS test_refuse_read_events";
        sqlx::query(drop).execute(&mut conn).await.unwrap();
        if !actions.is_empty() {
            let create = format!(
                "CREATE TRIGGER test_refuse_read_events BEFORE INSERT ON audit_events WHEN NEW.action IN ({list}) \
                 BEGIN SELECT RAISE(ABORT, 'audit storage unavailable'); END"
            );
            sqlx::query(sqlx::AssertSqlSafe(create)).execute(&mut conn).await.unwrap();
        }
    } else {
        let mut conn = sqlx::PgConnection::connect(&app.location).await.unwrap();
        let drop = "DROP TRIGGER IF EXISTS test_refuse_read_events ON audit_events";
        sqlx::query(drop).execute(&mut conn).await.unwrap();
        if !actions.is_empty() {
            sqlx::query(
                "CREATE OR REPLACE FUNCTION test_refuse_read_events() RETURNS trigger LANGUAGE plpgsql AS \
                 $$ BEGIN RAISE EXCEPTION 'audit storage unavailable'; END $$",
            )
            .execute(&mut conn)
            .await
            .unwrap();
            let create = format!(
                "CREATE TRIGGER test_refuse_read_events BEFORE INSERT ON audit_events FOR EACH ROW \
                 WHEN (NEW.action IN ({list})) EXECUTE FUNCTION test_refuse_read_events()"
            );
            sqlx::query(sqlx::AssertSqlSafe(create)).execute(&mut conn).await.unwrap();
        }
    }
}

// A read that is served is never missing its event: when the event cannot be stored, the
// view, list, search, history and reveal all fail with a structured error that carries none of
// the record's values, and nothing is logged as shown. Once the audit table takes events again,
// reads are served and the chain still verifies.
both_backends!(a_read_whose_event_cannot_be_stored_is_not_served, |app: TestApp| async move {
    let c = Client::new(&app);
    let token = app.token.clone();
    let t = Some(token.as_str());
    let created =
        app.create("contacts", json!({"name": "审计失败", "mobile": "13512349876", "title": "采购总监"})).await;
    let id = created["id"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/contacts/{id}");
    app.admin_step_up().await;
    let reads: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, path.clone(), None),
        (Method::GET, "/api/v1/contacts?limit=5".into(), None),
        (Method::GET, "/api/v1/contacts?q=%E5%AE%A1%E8%AE%A1".into(), None),
        (Method::GET, format!("{path}/history"), None),
        (Method::GET, format!("{path}/history/1"), None),
        (Method::POST, format!("{path}/reveal"), Some(json!({"field": "mobile"}))),
    ];
    let read_actions = ["record.view", "record.list", "record.search", "record.history", "record.reveal"];
    refuse_audit_inserts(&app, &read_actions).await;
    let before = app.store.list_audit(0, 100_000).await.unwrap().len();
    for (method, uri, body) in &reads {
        let s = c.send(t, method.clone(), uri, body.clone()).await;
        assert!(s.reply.status.is_server_error(), "{method} {uri}: {} {}", s.reply.status, s.reply.body);
        assert!(s.reply.body["error"]["code"].is_string(), "structured error for {uri}: {}", s.reply.body);
        let text = s.reply.body.to_string();
        for value in ["审计失败", "13512349876", "采购总监", "9876"] {
            assert!(!text.contains(value), "{uri} leaked {value}: {text}");
        }
        assert!(
            events_of(&app, &s.request_id)
                .await
                .iter()
                .all(|e| !read_actions.contains(&e["action"].as_str().unwrap_or("")))
        );
    }
    assert_eq!(app.store.list_audit(0, 100_000).await.unwrap().len(), before, "no event was stored");
    // Writes are not read events: they still work while reads are refused.
    let s = c.send(t, Method::PATCH, &path, Some(json!({"fields": {"title": "总监"}}))).await;
    let admin = admin_id(&app).await;
    expect_event(&app, &s, StatusCode::OK, "record.update", &admin).await;
    refuse_audit_inserts(&app, &[]).await;
    for (method, uri, body) in &reads {
        let s = c.send(t, method.clone(), uri, body.clone()).await;
        assert!(s.reply.status.is_success(), "{method} {uri}: {} {}", s.reply.status, s.reply.body);
    }
    let all = app.store.list_audit(0, 100_000).await.unwrap();
    custodian_store::audit::verify_chain(0, &custodian_core::audit::GENESIS_HASH, &all).unwrap();
});
