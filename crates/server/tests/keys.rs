//! Data key rotation (PRODUCT.md S5) over HTTP on both backends: admins with a step-up add a key
//! version, every server learns it, a background job seals stored values again, versions keep
//! theirs, and every step is on the audit log.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::http::{Method, StatusCode};
use common::{PASSWORD, TestApp, as_user, id_of};
use custodian_crypto::{MasterKey, envelope_version};
use custodian_service::{Service, ServiceConfig, load_keyring};
use custodian_store::RowScope;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Waits until every job of a rotation is done; returns the jobs.
async fn finished(app: &TestApp, rotation: &Value) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut done = Vec::new();
    for job in rotation["jobs"].as_array().unwrap() {
        loop {
            let r = app.get(&format!("/api/v1/keys/jobs/{}", job["id"].as_str().unwrap())).await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.body);
            match r.body["status"].as_str().unwrap() {
                "done" => {
                    done.push(r.body);
                    break;
                }
                "failed" => panic!("job failed: {}", r.body),
                _ => {
                    assert!(Instant::now() < deadline, "job not done: {}", r.body);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
    done
}

async fn stored_mobile_version(app: &TestApp, id: &str) -> u32 {
    let r = app.store.get_record("contacts", id.parse().unwrap(), &RowScope::All).await.unwrap().unwrap();
    envelope_version(r.fields["mobile"].as_str().unwrap()).unwrap()
}

both_backends!(a_rotation_reaches_every_server_and_reseals_stored_values, |app: TestApp| async move {
    let c1 = id_of(
        &app.create(
            "contacts",
            json!({"name": "王小明", "mobile": "13800138000", "email": "wang@example.com", "id_number": "11010119900307803X"}),
        )
        .await,
    );
    let c2 = id_of(&app.create("contacts", json!({"name": "李雷", "mobile": "13900139000"})).await);
    app.create("leads", json!({"name": "韩梅梅", "mobile": "13700137000"})).await;
    // A deleted contact keeps its key through the rotation; restoring it writes it anew, under
    // the current key.
    let gone = id_of(&app.create("contacts", json!({"name": "离职客户", "mobile": "13500000001"})).await);
    assert_eq!(app.call(Method::DELETE, &format!("/api/v1/contacts/{gone}"), None).await.status, StatusCode::OK);
    app.create("companies", json!({"name": "杭州云栖科技有限公司"})).await;
    // A second server over the same store, started before the rotation.
    let master = MasterKey::from_hex(&app.master_hex).unwrap();
    let keyring = load_keyring(app.store.as_ref(), &master).await.unwrap();
    let other = Arc::new(Service::new(app.store.clone(), keyring, ServiceConfig::default()).await.unwrap());
    let other_router = custodian_server::app(other.clone());

    let r = app.get("/api/v1/keys").await;
    assert_eq!(r.body, json!({"current_version": 1, "versions": [1]}));
    let r =
        app.post("/api/v1/users", json!({"username": "steward", "password": PASSWORD, "role": "data_steward"})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let steward = app.login("steward", PASSWORD).await;
    for (method, path) in [(Method::GET, "/api/v1/keys"), (Method::POST, "/api/v1/keys/rotate")] {
        let r = as_user(&app, &steward, method, path, None).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{path}: {}", r.body);
    }
    let r = app.post("/api/v1/keys/rotate", json!({})).await;
    assert_eq!(r.status, StatusCode::PRECONDITION_REQUIRED, "{}", r.body);
    app.admin_step_up().await;
    let r = app.post("/api/v1/keys/rotate", json!({})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!((r.body["previous_version"].clone(), r.body["version"].clone()), (json!(1), json!(2)));
    let objects: Vec<&str> = r.body["jobs"].as_array().unwrap().iter().map(|j| j["object"].as_str().unwrap()).collect();
    assert_eq!(objects, ["contacts", "leads"], "objects with sensitive fields");
    let jobs = finished(&app, &r.body).await;
    assert_eq!(jobs[0]["found"], 2, "both contacts sealed again: {}", jobs[0]);
    assert_eq!(jobs[1]["found"], 1, "{}", jobs[1]);

    // Stored values are under key 2; the record's versions keep key 1 and still open.
    assert_eq!(stored_mobile_version(&app, &c1).await, 2);
    let stored = app.store.get_record("contacts", c1.parse().unwrap(), &RowScope::All).await.unwrap().unwrap();
    assert_eq!(stored.version, 1, "sealing again is not a change of the record");
    assert!(
        stored
            .fields
            .iter()
            .filter(|(k, _)| ["mobile", "email", "id_number"].contains(&k.as_str()))
            .all(|(_, v)| envelope_version(v.as_str().unwrap()) == Some(2))
    );
    let v1 = app.store.get_version("contacts", c1.parse().unwrap(), 1).await.unwrap().unwrap();
    assert_eq!(envelope_version(v1.fields["mobile"].as_str().unwrap()), Some(1));
    let r = app.get(&format!("/api/v1/contacts/{c1}")).await;
    assert_eq!(r.body["fields"]["mobile"], "+8613800138000");
    assert_eq!(r.body["fields"]["email"], "wang@example.com");
    let r = app.get(&format!("/api/v1/contacts/{c1}/history/1")).await;
    assert_eq!(r.body["fields"]["mobile"], "+8613800138000", "{}", r.body);
    // Blind indexes do not change: lookups still work.
    let r = app.get("/api/v1/contacts?mobile=13800138000").await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 1);
    // New values are sealed with key 2.
    let c3 = id_of(&app.create("contacts", json!({"name": "张伟", "mobile": "13600136000"})).await);
    assert_eq!(stored_mobile_version(&app, &c3).await, 2);

    // The other server learns the key from the store within the cache poll: it reads values
    // under key 2 and seals its own writes with it.
    tokio::time::sleep(custodian_service::CACHE_EPOCH_POLL + Duration::from_millis(50)).await;
    let via_other = |method: Method, path: String, body: Option<Value>| {
        let (app, router) = (&app, &other_router);
        async move {
            app.raw_via(router, method, &path, Some(&app.token), body.map(|b| b.to_string().into_bytes()), &[]).await
        }
    };
    let r = via_other(Method::GET, format!("/api/v1/contacts/{c2}"), None).await;
    assert_eq!(r.body["fields"]["mobile"], "+8613900139000", "{}", r.body);
    let body = json!({"fields": {"name": "赵敏", "mobile": "13500135000"}});
    let r = via_other(Method::POST, "/api/v1/contacts".into(), Some(body)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let c4 = id_of(&r.body);
    assert_eq!(stored_mobile_version(&app, &c4).await, 2);
    assert_eq!(other.key_status(&custodian_service::RequestContext::cli()).await.unwrap().current_version, 2);

    // On the record: who rotated, which versions, each job and its end; never key material.
    let events = app.get("/api/v1/audit/events?action=key.").await.body["items"].as_array().unwrap().clone();
    let actions: Vec<&str> = events.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions.iter().filter(|a| **a == "key.rotate").count(), 1, "{actions:?}");
    assert_eq!(actions.iter().filter(|a| **a == "key.reencrypt").count(), 2, "{actions:?}");
    assert_eq!(actions.iter().filter(|a| **a == "key.reencrypt_done").count(), 2, "{actions:?}");
    let rotate = events.iter().find(|e| e["action"] == "key.rotate").unwrap();
    assert_eq!(rotate["details"]["version"], 2);
    assert_eq!(rotate["actor_role"], "admin");
    assert!(rotate["details"].get("wrapped").is_none());
    let denied = app.get("/api/v1/audit/events?action=access.denied").await;
    assert!(denied.body["items"].as_array().unwrap().iter().any(|e| e["details"]["operation"] == "key.rotate"));

    // Again: key 3, and the values move on.
    app.admin_step_up().await;
    let r = app.post("/api/v1/keys/rotate", json!({})).await;
    assert_eq!(r.body["version"], 3, "{}", r.body);
    finished(&app, &r.body).await;
    for id in [&c1, &c2, &c3, &c4] {
        assert_eq!(stored_mobile_version(&app, id).await, 3);
    }
    let r = app.get("/api/v1/keys").await;
    assert_eq!(r.body, json!({"current_version": 3, "versions": [1, 2, 3]}));
    assert_eq!(stored_mobile_version(&app, &gone).await, 1, "deleted records are left");
    let r = app.post(&format!("/api/v1/contacts/{gone}/restore"), json!({})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["fields"]["mobile"], "+8613500000001", "old key versions still open");
    assert_eq!(stored_mobile_version(&app, &gone).await, 3);
    // A reseal (for a rotation whose jobs never ran) finds nothing left here.
    app.admin_step_up().await;
    let r = app.post("/api/v1/keys/reseal", json!({})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(r.body["version"], 3);
    let jobs = finished(&app, &r.body).await;
    assert!(jobs.iter().all(|j| j["found"] == 0), "{jobs:?}");
    assert_eq!(app.get("/api/v1/keys/jobs/01938f2c-0000-7000-8000-000000000001").await.status, StatusCode::NOT_FOUND);
});
