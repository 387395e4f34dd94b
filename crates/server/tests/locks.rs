//! Key-field locks (PRODUCT.md A7, without approvals) and their notifications (S13) over HTTP on
//! both backends: a won deal's amount, company, contract number and stage are locked; changes
//! are refused with a per-field `locked` error, also through revert; data stewards and admins
//! change them with a reasoned override, which is audited and notifies the owner and their
//! manager; locks are rules as data, editable like the others.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::http::{Method, StatusCode};
use common::{PASSWORD, TestApp, as_user, id_of};
use serde_json::{Value, json};

async fn user(app: &TestApp, name: &str, role: &str, team: &str) -> (String, String) {
    let r =
        app.post("/api/v1/users", json!({"username": name, "password": PASSWORD, "role": role, "team_id": team})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    (id_of(&r.body), app.login(name, PASSWORD).await)
}

fn locked_fields(body: &Value) -> Vec<String> {
    body["error"]["details"]
        .as_array()
        .map(|d| d.iter().filter(|e| e["code"] == "locked").map(|e| e["field"].as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

both_backends!(won_deals_lock_their_key_fields, |app: TestApp| async move {
    let team = id_of(&app.post("/api/v1/teams", json!({"name": "A 组"})).await.body);
    let (_, rep) = user(&app, "rep", "sales_rep", &team).await;
    let (_, manager) = user(&app, "manager", "sales_manager", &team).await;
    let company =
        as_user(&app, &rep, Method::POST, "/api/v1/companies", Some(json!({"fields": {"name": "甲公司"}}))).await;
    let other =
        as_user(&app, &rep, Method::POST, "/api/v1/companies", Some(json!({"fields": {"name": "乙公司"}}))).await;
    let deal = as_user(&app, &rep, Method::POST, "/api/v1/deals", Some(json!({"fields": {"name": "大单", "company_id": company.body["id"], "stage": "proposal", "amount": {"amount": "1000"}}}))).await;
    assert_eq!(deal.status, StatusCode::CREATED, "{}", deal.body);
    let path = format!("/api/v1/deals/{}", id_of(&deal.body));
    let patch = |token: &str, body: Value| {
        let (app, path, token) = (&app, path.clone(), token.to_owned());
        async move { as_user(app, &token, Method::PATCH, &path, Some(body)).await }
    };
    // Before it is won nothing is locked.
    let r = patch(&rep, json!({"fields": {"amount": {"amount": "1200"}}})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r =
        patch(&rep, json!({"fields": {"stage": "won", "contract_no": "HT-2026-0001", "amount": {"amount": "1500"}}}))
            .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let won_version = r.body["version"].as_i64().unwrap();

    // Won: amount, company, contract number and stage are locked, for everyone without an
    // override; other fields are not.
    let r = patch(
        &rep,
        json!({"fields": {"amount": {"amount": "1"}, "company_id": other.body["id"], "name": "大单（改）"}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    let mut fields = locked_fields(&r.body);
    fields.sort();
    assert_eq!(fields, ["amount", "company_id"]);
    assert!(r.body["error"]["details"][0]["message_zh"].as_str().unwrap().contains("已锁定"));
    for change in [json!({"stage": "negotiation"}), json!({"contract_no": "HT-2026-0002"}), json!({"amount": null})] {
        let r = patch(&manager, json!({"fields": change})).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{change}: {}", r.body);
        assert_eq!(locked_fields(&r.body).len(), 1, "{}", r.body);
    }
    let r = patch(&rep, json!({"fields": {"name": "大单（改）"}})).await;
    assert_eq!(r.status, StatusCode::OK, "unlocked fields change freely: {}", r.body);
    // A rep's override is no override; a steward's or admin's needs a reason.
    let r =
        patch(&rep, json!({"fields": {"amount": {"amount": "1"}}, "override": {"lock": {"reason": "客户要求"}}})).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    let r = app
        .call(
            Method::PATCH,
            &path,
            Some(json!({"fields": {"amount": {"amount": "1"}}, "override": {"lock": {"reason": " "}}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    // Bringing old values back is a change too.
    let r = app.post(&format!("{path}/revert"), json!({"to_version": 1})).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert!(locked_fields(&r.body).contains(&"stage".to_owned()), "{}", r.body);

    // The admin corrects the amount with a reason: audited, and the owner and manager hear.
    let r = app
        .call(
            Method::PATCH,
            &path,
            Some(json!({"fields": {"amount": {"amount": "1450"}}, "override": {"lock": {"reason": "合同金额以盖章版为准"}}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.body["version"].as_i64().unwrap() > won_version);
    let events = app.get("/api/v1/audit/events?action=record.update").await.body["items"].as_array().unwrap().clone();
    let event = &events[0];
    assert_eq!(event["details"]["override"]["lock"]["reason"], "合同金额以盖章版为准");
    assert_eq!(event["details"]["override"]["lock"]["fields"], json!(["amount"]));
    for token in [&rep, &manager] {
        let n = as_user(&app, token, Method::GET, "/api/v1/notifications", None).await;
        let latest = &n.body["items"][0];
        assert_eq!(latest["changes"]["amount"]["locked"], true, "{}", n.body);
        assert_eq!(latest["changes"]["amount"]["new"], json!({"amount": "1450.00", "currency": "CNY"}), "{}", n.body);
    }

    // Locks are rules: listed with the field's rules, and a steward can lift one.
    let r = app.get("/api/v1/schema/deals/fields/amount/rules").await;
    assert!(
        r.body["rules"]
            .as_array()
            .unwrap()
            .contains(&json!({"kind": "locked_when", "field": "stage", "values": ["won"]})),
        "{}",
        r.body
    );
    let bad = app
        .call(
            Method::PUT,
            "/api/v1/schema/deals/fields/amount/rules",
            Some(json!({"rules": [{"kind": "locked_when", "field": "nonsense", "values": ["won"]}]})),
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", bad.body);
    let bad = app
        .call(
            Method::PUT,
            "/api/v1/schema/deals/fields/amount/rules",
            Some(json!({"rules": [{"kind": "locked_when", "field": "stage", "values": ["sold"]}]})),
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY, "unknown stage: {}", bad.body);
    let r = app
        .call(
            Method::PUT,
            "/api/v1/schema/deals/fields/amount/rules",
            Some(json!({"rules": [{"kind": "range", "min": 0.0}]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = patch(&rep, json!({"fields": {"amount": {"amount": "1460"}}})).await;
    assert_eq!(r.status, StatusCode::OK, "the lock is lifted: {}", r.body);
});
