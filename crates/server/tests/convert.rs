//! Lead conversion through the HTTP API on both backends: one transaction through the write
//! path, duplicate checks like a create, references, audit and scope.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::http::{Method, StatusCode};
use common::TestApp;
use common::{as_user, id_of, user};
use serde_json::{Value, json};

async fn count(app: &TestApp, object: &str) -> usize {
    app.get(&format!("/api/v1/{object}?limit=500")).await.body["items"].as_array().unwrap().len()
}

both_backends!(a_lead_converts_in_one_transaction_with_references_and_audit, |app: TestApp| async move {
    let lead = app
        .create("leads", json!({"name": "李娜", "company_name": "杭州云图信息科技有限公司", "mobile": "13912345678", "status": "qualified", "source": "referral"}))
        .await;
    let path = format!("/api/v1/leads/{}/convert", id_of(&lead));
    let r = app
        .post(
            &path,
            json!({
                "company": {"fields": {"name": "杭州云图信息科技有限公司", "uscc": "91110108551385082Q"}},
                "contact": {"fields": {"name": "李娜", "mobile": "13912345678"}},
                "deal": {"fields": {"name": "云平台采购", "stage": "proposal"}},
            }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let (company, contact, deal) = (&r.body["company"], &r.body["contact"], &r.body["deal"]);
    assert_eq!(contact["fields"]["company_id"], company["id"]);
    assert_eq!(deal["fields"]["company_id"], company["id"]);
    assert_eq!(deal["fields"]["contact_id"], contact["id"]);
    // The company and contact keep the channel the lead came through.
    assert_eq!(
        (company["fields"]["source"].as_str(), contact["fields"]["source"].as_str()),
        (Some("referral"), Some("referral"))
    );
    let lead_after = app.get(&format!("/api/v1/leads/{}", id_of(&lead))).await.body;
    assert_eq!(lead_after["fields"]["status"], "converted");
    assert_eq!(lead_after["fields"]["converted_company_id"], company["id"]);
    assert_eq!(lead_after["fields"]["converted_contact_id"], contact["id"]);
    assert_eq!(lead_after["fields"]["converted_deal_id"], deal["id"]);
    // Audited: the lead's conversion event names what it created; each new record says where
    // it came from.
    let events = app.store.list_audit(0, 1_000_000).await.unwrap();
    let convert = events.iter().find(|e| e.action == "record.convert").expect("conversion event");
    let body: Value = serde_json::from_str(&convert.body).unwrap();
    assert_eq!(body["details"]["conversion"]["company_id"], company["id"]);
    assert_eq!(body["details"]["conversion"]["company_created"], true);
    let created: Vec<Value> = events
        .iter()
        .filter(|e| e.action == "record.create")
        .map(|e| serde_json::from_str::<Value>(&e.body).unwrap())
        .filter(|b| b["details"]["converted_from_lead"] == lead["id"])
        .collect();
    assert_eq!(created.len(), 3);
    // Converting twice conflicts.
    let r = app.post(&path, json!({"company": {"id": id_of(company)}, "contact": {"fields": {"name": "李娜2"}}})).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);

    // Another lead into the existing company: its USCC duplicate refuses a new company, and
    // nothing at all is written.
    let second = app.create("leads", json!({"name": "王强", "mobile": "13700001111"})).await;
    let path = format!("/api/v1/leads/{}/convert", id_of(&second));
    let (companies, contacts) = (count(&app, "companies").await, count(&app, "contacts").await);
    let r = app
        .post(
            &path,
            json!({"company": {"fields": {"name": "云图科技", "uscc": "91110108551385082Q"}}, "contact": {"fields": {"name": "王强"}}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert_eq!(r.code(), "duplicate");
    assert_eq!(r.body["error"]["candidates"][0]["id"], company["id"]);
    // The contact is checked like a create: the same mobile is an exact duplicate.
    let r = app
        .post(&path, json!({"company": {"id": id_of(company)}, "contact": {"fields": {"name": "王强", "mobile": "13912345678"}}}))
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert_eq!(r.code(), "duplicate");
    // A similar contact is a possible duplicate until confirmed with a reason.
    let existing = app
        .create("contacts", json!({"name": "李娜", "birth_date": "1990-01-01", "address": "杭州市西湖区文三路 90 号"}))
        .await;
    let body = json!({"company": {"id": id_of(company)}, "contact": {"fields": {"name": "李娜", "birth_date": "1990-01-01", "address": "杭州市西湖区文三路90号"}}});
    let r = app.post(&path, body.clone()).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert_eq!(r.code(), "possible_duplicate");
    assert!(r.body["error"]["candidates"].as_array().unwrap().iter().any(|c| c["id"] == existing["id"]));
    assert_eq!((count(&app, "companies").await, count(&app, "contacts").await), (companies, contacts + 1));
    let still = app.get(&format!("/api/v1/leads/{}", id_of(&second))).await.body;
    assert_eq!(still["version"], 1);
    let mut confirmed = body.clone();
    confirmed["confirm_not_duplicate"] = json!({"reason": "同名不同人，已电话确认"});
    let r = app.post(&path, confirmed).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["contact"]["fields"]["company_id"], company["id"]);
    assert!(r.body["deal"].is_null());
    // Links are set by the conversion, not by the caller.
    let third = app.create("leads", json!({"name": "赵六"})).await;
    let r = app
        .post(
            &format!("/api/v1/leads/{}/convert", id_of(&third)),
            json!({"company": {"id": id_of(company)}, "contact": {"fields": {"name": "赵六", "company_id": id_of(company)}}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    let r = app
        .post(
            &format!("/api/v1/leads/{}/convert", id_of(&third)),
            json!({"company": {}, "contact": {"fields": {"name": "赵六"}}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
});

both_backends!(conversion_needs_the_lead_in_update_scope, |app: TestApp| async move {
    let rep1 = user(&app, "rep1", "sales_rep").await;
    let rep2 = user(&app, "rep2", "sales_rep").await;
    let auditor = user(&app, "auditor1", "auditor").await;
    let r = as_user(&app, &rep1, Method::POST, "/api/v1/leads", Some(json!({"fields": {"name": "孙七"}}))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let path = format!("/api/v1/leads/{}/convert", id_of(&r.body));
    let body = json!({"company": {"fields": {"name": "孙氏贸易"}}, "contact": {"fields": {"name": "孙七"}}});
    // Someone else's lead is not found; an auditor may read it but not convert it.
    let r = as_user(&app, &rep2, Method::POST, &path, Some(body.clone())).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
    let r = as_user(&app, &auditor, Method::POST, &path, Some(body.clone())).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert_eq!(count(&app, "companies").await, 0);
    // The owner converts it; the new records are theirs.
    let r = as_user(&app, &rep1, Method::POST, &path, Some(body)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["company"]["owner_id"], r.body["lead"]["owner_id"]);
    assert_eq!(r.body["contact"]["owner_id"], r.body["lead"]["owner_id"]);
});
