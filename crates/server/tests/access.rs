//! Issue 3 access control over HTTP: custom roles as data, time-boxed grants, step-up for
//! sensitive operations, escalation attempts, and login throttling shared across servers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::http::{Method, StatusCode};
use common::TestApp;
use common::{PASSWORD, as_user};
use custodian_service::{Service, ServiceConfig, load_keyring};
use serde_json::{Value, json};
use std::sync::Arc;

/// Creates a user (as the admin) and returns (id, token).
async fn user(app: &TestApp, name: &str, role: &str, team: Option<&str>, dept: Option<&str>) -> (String, String) {
    let r = app
        .post(
            "/api/v1/users",
            json!({"username": name, "password": PASSWORD, "role": role, "team_id": team, "department_id": dept}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    (r.body["id"].as_str().unwrap().to_owned(), app.login(name, PASSWORD).await)
}

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap().to_owned()
}

async fn actions(app: &TestApp) -> Vec<(String, Value)> {
    let rows = app.store.list_audit(0, 1_000_000).await.unwrap();
    rows.into_iter()
        .map(|e| {
            let body: Value = serde_json::from_str(&e.body).unwrap();
            (e.action, body["details"].clone())
        })
        .collect()
}

async fn denied(app: &TestApp, operation: &str) -> usize {
    actions(app).await.iter().filter(|(a, d)| a == "access.denied" && d["operation"] == operation).count()
}

fn analyst(read: &str) -> Value {
    json!({"name": "analyst", "label_en": "Analyst", "label_zh": "分析员", "sensitive_default": "masked",
        "fields": {"contacts.mobile": "read"},
        "objects": {"contacts": {"create": false, "read": read, "update": "none", "delete": "none", "export": false}}})
}

both_backends!(custom_roles_are_data_edited_with_step_up_and_audited, |app: TestApp| async move {
    // Changes need a step-up; reading does not.
    let r = app.post("/api/v1/roles", analyst("all")).await;
    assert_eq!((r.status, r.code()), (StatusCode::PRECONDITION_REQUIRED, "step_up_required"), "{}", r.body);
    let r = app.get("/api/v1/roles").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["items"].as_array().unwrap().len(), 5, "the built-in roles are listed");
    assert!(r.body["items"].as_array().unwrap().iter().all(|x| x["builtin"] == true));
    app.admin_step_up().await;
    // Bad definitions are refused field by field, and nothing is stored.
    for (bad, field) in [
        (
            json!({"name": "admin", "label_en": "A", "label_zh": "A", "objects": {}, "sensitive_default": "hidden"}),
            "name",
        ),
        (
            json!({"name": "Bad Name", "label_en": "A", "label_zh": "A", "objects": {}, "sensitive_default": "hidden"}),
            "name",
        ),
        (
            json!({"name": "wide", "label_en": "A", "label_zh": "A", "sensitive_default": "hidden",
            "objects": {"contacts": {"create": false, "read": "own", "update": "all", "delete": "none", "export": false}}}),
            "objects.contacts.update",
        ),
        (
            json!({"name": "ghosts", "label_en": "A", "label_zh": "A", "sensitive_default": "hidden",
            "objects": {"ghosts": {"create": false, "read": "all", "update": "none", "delete": "none", "export": false}}}),
            "objects.ghosts",
        ),
        (
            json!({"name": "badfield", "label_en": "A", "label_zh": "A", "sensitive_default": "hidden", "objects": {},
            "fields": {"contacts.nope": "read"}}),
            "fields.contacts.nope",
        ),
        (
            json!({"name": "extra", "label_en": "A", "label_zh": "A", "sensitive_default": "hidden", "objects": {}, "superuser": true}),
            "superuser",
        ),
        (
            json!({"name": "scopes", "label_en": "A", "label_zh": "A", "sensitive_default": "hidden",
            "objects": {"contacts": {"create": false, "read": "everything", "update": "none", "delete": "none", "export": false}}}),
            "definition",
        ),
    ] {
        let r = app.post("/api/v1/roles", bad.clone()).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {}", r.body);
        assert!(
            r.body["error"]["details"].as_array().unwrap().iter().any(|d| d["field"] == field),
            "{bad}: {}",
            r.body
        );
    }
    let r = app.post("/api/v1/roles", analyst("all")).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!((r.body["name"].as_str(), r.body["builtin"].as_bool()), (Some("analyst"), Some(false)));
    assert_eq!(app.post("/api/v1/roles", analyst("all")).await.status, StatusCode::CONFLICT);
    assert_eq!(app.get("/api/v1/roles").await.body["items"].as_array().unwrap().len(), 6);
    assert_eq!(app.get("/api/v1/roles/analyst").await.body["objects"]["contacts"]["read"], "all");
    assert_eq!(app.get("/api/v1/roles/nobody").await.status, StatusCode::NOT_FOUND);
    // Built-in roles are read-only.
    for m in [Method::PUT, Method::DELETE] {
        let body = (m == Method::PUT).then(|| analyst("all"));
        let r = app.call(m, "/api/v1/roles/sales_rep", body).await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    }
    // Users can be given the custom role (and no unknown one).
    let r = app.post("/api/v1/users", json!({"username": "ghost", "password": PASSWORD, "role": "nope"})).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let (ana_id, ana) = user(&app, "ana", "analyst", None, None).await;
    let contact =
        app.create("contacts", json!({"name": "王五", "mobile": "13812345678", "email": "w@example.com"})).await;
    let path = format!("/api/v1/contacts/{}", id(&contact));
    let r = as_user(&app, &ana, Method::GET, &path, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["fields"]["mobile"], "+8613812345678", "field access from the definition");
    assert_eq!(r.body["fields"]["email"], "w***@example.com", "sensitive default masked");
    let r = as_user(&app, &ana, Method::PATCH, &path, Some(json!({"fields": {"title": "x"}}))).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(as_user(&app, &ana, Method::GET, "/api/v1/deals", None).await.status, StatusCode::FORBIDDEN);
    // Editing the role changes what its holders may do at their next request.
    let r = app.call(Method::PUT, "/api/v1/roles/analyst", Some(analyst("none"))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(as_user(&app, &ana, Method::GET, &path, None).await.status, StatusCode::NOT_FOUND);
    // A held role is not deleted; once nobody holds it, it is.
    let r = app.call(Method::DELETE, "/api/v1/roles/analyst", None).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    let r = app.call(Method::PATCH, &format!("/api/v1/users/{ana_id}"), Some(json!({"role": "sales_rep"}))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(app.call(Method::DELETE, "/api/v1/roles/analyst", None).await.status, StatusCode::NO_CONTENT);
    assert_eq!(app.get("/api/v1/roles/analyst").await.status, StatusCode::NOT_FOUND);
    // Every change is audited with before and after.
    let events = actions(&app).await;
    let update = events.iter().find(|(a, _)| a == "role.update").unwrap();
    assert_eq!(update.1["before"]["objects"]["contacts"]["read"], "all");
    assert_eq!(update.1["after"]["objects"]["contacts"]["read"], "none");
    assert!(events.iter().any(|(a, d)| a == "role.create" && d["before"].is_null()));
    assert!(events.iter().any(|(a, d)| a == "role.delete" && d["after"].is_null()));
    assert_eq!(denied(&app, "role.update").await, 1, "the built-in edit was recorded");
});

both_backends!(custom_admin_roles_must_enrol_mfa, |app: TestApp| async move {
    app.admin_step_up().await;
    let role = json!({"name": "junior_admin", "label_en": "Junior admin", "label_zh": "初级管理员",
        "sensitive_default": "masked", "objects": {}, "admin": true});
    assert_eq!(app.post("/api/v1/roles", role).await.status, StatusCode::CREATED);
    let r =
        app.post("/api/v1/users", json!({"username": "junior", "password": PASSWORD, "role": "junior_admin"})).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = app.password_login("junior", PASSWORD).await;
    let token = r.body["token"].as_str().unwrap().to_owned();
    let r = as_user(&app, &token, Method::GET, "/api/v1/users", None).await;
    assert_eq!((r.status, r.code()), (StatusCode::FORBIDDEN, "mfa_enrollment_required"), "{}", r.body);
    // Enrolled, the custom admin role works.
    let token = app.login("junior", PASSWORD).await;
    assert_eq!(as_user(&app, &token, Method::GET, "/api/v1/users", None).await.status, StatusCode::OK);
});

both_backends!(grants_widen_scope_until_they_expire_or_are_revoked, |app: TestApp| async move {
    let dept = id(&app.post("/api/v1/departments", json!({"name": "销售部"})).await.body);
    let team_a = id(&app.post("/api/v1/teams", json!({"name": "A", "department_id": dept})).await.body);
    let team_b = id(&app.post("/api/v1/teams", json!({"name": "B", "department_id": dept})).await.body);
    let (rep1_id, rep1) = user(&app, "rep1", "sales_rep", Some(&team_a), Some(&dept)).await;
    let (rep2_id, rep2) = user(&app, "rep2", "sales_rep", Some(&team_b), Some(&dept)).await;
    let (manager_id, manager) = user(&app, "manager", "sales_manager", Some(&team_a), Some(&dept)).await;
    let mk = |token: String, name: &'static str| {
        let app = &app;
        async move {
            let r =
                as_user(app, &token, Method::POST, "/api/v1/contacts", Some(json!({"fields": {"name": name}}))).await;
            assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
            id(&r.body)
        }
    };
    let m_rec = mk(manager.clone(), "经理的客户").await;
    let x_rec = mk(rep2.clone(), "二号的客户").await;
    let grant = |user: &str, record: Option<&str>, team: Option<&str>, access: &str, hours: u32| {
        json!({"user_id": user, "object": "contacts", "record_id": record, "team_id": team, "access": access,
            "hours": hours, "reason": "covering for 张三 during leave"})
    };
    let get = |token: String, rec: String| {
        let app = &app;
        async move { as_user(app, &token, Method::GET, &format!("/api/v1/contacts/{rec}"), None).await.status }
    };
    assert_eq!(get(rep1.clone(), x_rec.clone()).await, StatusCode::NOT_FOUND);

    // A rep may not grant, least of all to themselves: 403, audited, nothing stored.
    let r =
        as_user(&app, &rep1, Method::POST, "/api/v1/grants", Some(grant(&rep1_id, Some(&x_rec), None, "write", 24)))
            .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert_eq!(denied(&app, "grant.create").await, 1);
    // A manager may not grant to themselves either (before any step-up).
    let r = as_user(
        &app,
        &manager,
        Method::POST,
        "/api/v1/grants",
        Some(grant(&manager_id, Some(&x_rec), None, "read", 1)),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    // Managers need a step-up (and so a second factor) to grant.
    let r =
        as_user(&app, &manager, Method::POST, "/api/v1/grants", Some(grant(&rep1_id, Some(&m_rec), None, "read", 1)))
            .await;
    assert_eq!(r.status, StatusCode::PRECONDITION_REQUIRED, "{}", r.body);
    app.enrol(&manager, "manager").await;
    assert_eq!(app.step_up(&manager, "manager").await.status, StatusCode::OK);
    // Only inside the manager's own update scope: rep2's record (team B) is readable, not editable.
    let r =
        as_user(&app, &manager, Method::POST, "/api/v1/grants", Some(grant(&rep1_id, Some(&x_rec), None, "read", 1)))
            .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    let r =
        as_user(&app, &manager, Method::POST, "/api/v1/grants", Some(grant(&rep1_id, None, Some(&team_b), "read", 1)))
            .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    // Bad input.
    for bad in [
        grant(&rep1_id, Some(&m_rec), None, "read", 0),
        grant(&rep1_id, Some(&m_rec), None, "read", 721),
        grant(&rep1_id, Some(&m_rec), None, "own", 1),
        grant(&rep1_id, Some(&m_rec), Some(&team_a), "read", 1),
        grant(&rep1_id, None, None, "read", 1),
        grant("01938f2c-0000-7000-8000-000000000001", Some(&m_rec), None, "read", 1),
    ] {
        let r = as_user(&app, &manager, Method::POST, "/api/v1/grants", Some(bad.clone())).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {}", r.body);
    }
    let r =
        as_user(&app, &manager, Method::POST, "/api/v1/grants", Some(grant(&rep1_id, Some(&m_rec), None, "read", 1)))
            .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let manager_grant = id(&r.body);
    assert_eq!(r.body["active"], true);
    // Read grant: visible (also in lists), not editable.
    assert_eq!(get(rep1.clone(), m_rec.clone()).await, StatusCode::OK);
    let list = as_user(&app, &rep1, Method::GET, "/api/v1/contacts", None).await;
    assert!(list.body["items"].as_array().unwrap().iter().any(|c| c["id"] == m_rec.as_str()));
    let r = as_user(
        &app,
        &rep1,
        Method::PATCH,
        &format!("/api/v1/contacts/{m_rec}"),
        Some(json!({"fields": {"title": "x"}})),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    // The admin grants rep1 write access to rep2's record for one hour, and team B for two.
    app.admin_step_up().await;
    let r = app.post("/api/v1/grants", grant(&rep1_id, Some(&x_rec), None, "write", 1)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let r = as_user(
        &app,
        &rep1,
        Method::PATCH,
        &format!("/api/v1/contacts/{x_rec}"),
        Some(json!({"fields": {"title": "代管"}})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = as_user(&app, &rep1, Method::DELETE, &format!("/api/v1/contacts/{x_rec}"), None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "grants never widen deletes");
    let y_rec = mk(rep2.clone(), "二号的另一个客户").await;
    assert_eq!(get(rep1.clone(), y_rec.clone()).await, StatusCode::NOT_FOUND);
    let r = app.post("/api/v1/grants", grant(&rep1_id, None, Some(&team_b), "read", 3)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let team_grant = id(&r.body);
    assert_eq!(get(rep1.clone(), y_rec.clone()).await, StatusCode::OK);

    // Listing: everyone sees the grants given to or by them; admins all.
    let mine = as_user(&app, &rep1, Method::GET, "/api/v1/grants", None).await;
    assert_eq!(mine.body["items"].as_array().unwrap().len(), 3);
    let theirs = as_user(&app, &rep2, Method::GET, "/api/v1/grants", None).await;
    assert!(theirs.body["items"].as_array().unwrap().is_empty());
    let given = as_user(&app, &manager, Method::GET, "/api/v1/grants", None).await;
    assert_eq!(given.body["items"].as_array().unwrap().len(), 1);
    // A manager cannot revoke the admin's grant (it is not theirs: not found).
    let r = as_user(&app, &manager, Method::DELETE, &format!("/api/v1/grants/{team_grant}"), None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    // One hour later the one-hour grants stop working by themselves; the team grant goes on.
    app.clock.advance_secs(3_601);
    let r = as_user(
        &app,
        &rep1,
        Method::PATCH,
        &format!("/api/v1/contacts/{x_rec}"),
        Some(json!({"fields": {"title": "晚了"}})),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "x is still readable through the team grant: {}", r.body);
    assert_eq!(get(rep1.clone(), m_rec.clone()).await, StatusCode::NOT_FOUND);
    assert_eq!(get(rep1.clone(), y_rec.clone()).await, StatusCode::OK);
    let all = app.get("/api/v1/grants?include_inactive=true").await;
    assert_eq!(all.body["items"].as_array().unwrap().len(), 3);
    assert_eq!(app.get("/api/v1/grants").await.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(app.get("/api/v1/grants?bogus=1").await.status, StatusCode::BAD_REQUEST);

    // Revocation ends a grant at once, and only once.
    app.admin_step_up().await;
    let r = app.call(Method::DELETE, &format!("/api/v1/grants/{team_grant}"), None).await;
    assert_eq!((r.status, r.body["active"].as_bool()), (StatusCode::OK, Some(false)), "{}", r.body);
    assert_eq!(get(rep1.clone(), y_rec.clone()).await, StatusCode::NOT_FOUND);
    assert_eq!(
        app.call(Method::DELETE, &format!("/api/v1/grants/{team_grant}"), None).await.status,
        StatusCode::CONFLICT
    );
    assert_eq!(app.call(Method::DELETE, "/api/v1/grants/not-a-uuid", None).await.status, StatusCode::NOT_FOUND);
    let _ = (rep2_id, manager_grant);
    let events = actions(&app).await;
    assert_eq!(events.iter().filter(|(a, _)| a == "grant.create").count(), 3);
    assert_eq!(events.iter().filter(|(a, _)| a == "grant.revoke").count(), 1);
    let created = events.iter().find(|(a, _)| a == "grant.create").unwrap();
    assert_eq!(created.1["reason"], "covering for 张三 during leave");
});

both_backends!(sensitive_operations_need_a_step_up, |app: TestApp| async move {
    let (heir_id, _) = user(&app, "heir", "sales_rep", None, None).await;
    let c1 = id(&app.create("contacts", json!({"name": "甲"})).await);
    let c2 = id(&app.create("contacts", json!({"name": "乙"})).await);
    let c3 = id(&app.create("contacts", json!({"name": "丙"})).await);
    // Ownership transfer.
    let transfer = format!("/api/v1/contacts/{c1}/transfer");
    let r = app.post(&transfer, json!({"owner_id": heir_id})).await;
    assert_eq!((r.status, r.code()), (StatusCode::PRECONDITION_REQUIRED, "step_up_required"), "{}", r.body);
    assert_eq!(app.get(&format!("/api/v1/contacts/{c1}")).await.body["version"], 1);
    // Bulk delete.
    let r = app.post("/api/v1/contacts/bulk-delete", json!({"ids": [c2, c3]})).await;
    assert_eq!(r.status, StatusCode::PRECONDITION_REQUIRED, "{}", r.body);
    assert!(app.get(&format!("/api/v1/contacts/{c2}")).await.body["deleted_at"].is_null());
    // Role and grant changes, merges and their undo.
    let r = app.post("/api/v1/roles", analyst("all")).await;
    assert_eq!(r.status, StatusCode::PRECONDITION_REQUIRED);
    let r = app.post("/api/v1/grants", json!({"user_id": heir_id, "object": "contacts", "record_id": c1, "access": "read", "hours": 1, "reason": "x"})).await;
    assert_eq!(r.status, StatusCode::PRECONDITION_REQUIRED);
    let r = app.post("/api/v1/merges", json!({"object": "contacts", "survivor_id": c1, "loser_ids": [c2]})).await;
    assert_eq!(r.status, StatusCode::PRECONDITION_REQUIRED);
    let r = app.post(&format!("/api/v1/merges/{c1}/undo"), json!({})).await;
    assert_eq!(r.status, StatusCode::PRECONDITION_REQUIRED);
    let steps: Vec<String> = actions(&app)
        .await
        .into_iter()
        .filter(|(a, d)| a == "access.denied" && d["code"] == "step_up_required")
        .map(|(_, d)| d["operation"].as_str().unwrap().to_owned())
        .collect();
    for op in ["record.transfer", "record.bulk_delete", "role.create", "grant.create", "record.merge", "record.unmerge"]
    {
        assert!(steps.iter().any(|s| s == op), "{op} not audited: {steps:?}");
    }

    app.admin_step_up().await;
    let r = app.post(&transfer, json!({"owner_id": heir_id, "version": 1})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!((r.body["owner_id"].as_str(), r.body["version"].as_i64()), (Some(heir_id.as_str()), Some(2)));
    let r = app.post(&transfer, json!({"owner_id": "01938f2c-0000-7000-8000-000000000001"})).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let r = app.post(&transfer, json!({"owner_id": heir_id, "version": 1})).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "stale version");
    let events = actions(&app).await;
    let t = events.iter().find(|(a, _)| a == "record.transfer").unwrap();
    assert_eq!(t.1["owner_id"]["new"], heir_id.as_str());
    // Bulk delete is all or nothing.
    let r =
        app.post("/api/v1/contacts/bulk-delete", json!({"ids": [c2, "01938f2c-0000-7000-8000-000000000001"]})).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
    assert!(app.get(&format!("/api/v1/contacts/{c2}")).await.body["deleted_at"].is_null());
    for bad in [json!({"ids": []}), json!({"ids": [c2, c2]})] {
        assert_eq!(app.post("/api/v1/contacts/bulk-delete", bad).await.status, StatusCode::UNPROCESSABLE_ENTITY);
    }
    let r = app.post("/api/v1/contacts/bulk-delete", json!({"ids": [c2, c3]})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["deleted"].as_array().unwrap().len(), 2);
    for c in [&c2, &c3] {
        assert!(app.get(&format!("/api/v1/contacts/{c}")).await.body["deleted_at"].is_string());
    }
});

both_backends!(escalation_attempts_are_refused_changed_nothing_and_audited, |app: TestApp| async move {
    let team = id(&app.post("/api/v1/teams", json!({"name": "A"})).await.body);
    let (rep1_id, rep1) = user(&app, "rep1", "sales_rep", Some(&team), None).await;
    let (rep2_id, _) = user(&app, "rep2", "sales_rep", None, None).await;
    let (manager_id, manager) = user(&app, "manager", "sales_manager", Some(&team), None).await;
    // A manager editing their own role, or the role definition itself.
    let r =
        as_user(&app, &manager, Method::PATCH, &format!("/api/v1/users/{manager_id}"), Some(json!({"role": "admin"})))
            .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let mut elevated = analyst("all");
    elevated["name"] = json!("sales_manager");
    elevated["admin"] = json!(true);
    let r = as_user(&app, &manager, Method::PUT, "/api/v1/roles/sales_manager", Some(elevated)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(app.get("/api/v1/roles/sales_manager").await.body["admin"], false);
    assert_eq!(
        app.get("/api/v1/users").await.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["id"] == manager_id.as_str())
            .unwrap()["role"],
        "sales_manager"
    );
    assert_eq!(denied(&app, "user.role_change").await, 1);
    assert_eq!(denied(&app, "role.update").await, 1);
    // Not even an admin changes their own role.
    app.admin_step_up().await;
    let me = app.get("/api/v1/me").await.body;
    let admin_id = me["id"].as_str().unwrap().to_owned();
    let r = app.call(Method::PATCH, &format!("/api/v1/users/{admin_id}"), Some(json!({"role": "sales_rep"}))).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(denied(&app, "user.role_change").await, 2);

    // A rep granting themselves a grant.
    let r = as_user(
        &app,
        &rep1,
        Method::POST,
        "/api/v1/grants",
        Some(json!({"user_id": rep1_id, "object": "contacts",
        "team_id": team, "access": "write", "hours": 720, "reason": "mine"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(app.get("/api/v1/grants?include_inactive=true").await.body["items"].as_array().unwrap().is_empty());
    assert_eq!(denied(&app, "grant.create").await, 1);

    // A rep moving their record to someone else (out of their own scope), by transfer or by
    // writing owner_id.
    let r = as_user(&app, &rep1, Method::POST, "/api/v1/contacts", Some(json!({"fields": {"name": "张三"}}))).await;
    let rec = id(&r.body);
    let path = format!("/api/v1/contacts/{rec}");
    let r = as_user(&app, &rep1, Method::POST, &format!("{path}/transfer"), Some(json!({"owner_id": rep2_id}))).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert_eq!(denied(&app, "transfer").await, 1);
    // Mass assignment of system properties, at the top level or among the fields.
    let attempts = [
        json!({"owner_id": rep2_id, "fields": {"title": "x"}}),
        json!({"fields": {"owner_id": rep2_id}}),
        json!({"fields": {"team_id": team}}),
        json!({"fields": {"id": "01938f2c-0000-7000-8000-000000000001"}}),
        json!({"fields": {"version": 99}}),
        json!({"created_by": rep2_id, "fields": {}}),
        json!({"fields": {"deleted": true}}),
        json!({"deleted_at": "2020-01-01T00:00:00Z", "fields": {}}),
        json!({"fields": {"created_at": "2020-01-01T00:00:00Z", "title": "x"}}),
    ];
    for body in &attempts {
        let r = as_user(&app, &rep1, Method::PATCH, &path, Some(body.clone())).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{body}: {}", r.body);
        assert!(r.body["error"]["details"].as_array().unwrap().iter().any(|d| d["code"] == "read_only"), "{}", r.body);
    }
    let after = as_user(&app, &rep1, Method::GET, &path, None).await.body;
    assert_eq!((after["version"].as_i64(), after["owner_id"].as_str()), (Some(1), Some(rep1_id.as_str())));
    assert!(after["fields"].get("title").is_none() && after["deleted_at"].is_null());
    let r = as_user(
        &app,
        &rep1,
        Method::POST,
        "/api/v1/contacts",
        Some(json!({"owner_id": rep2_id, "fields": {"name": "李四"}})),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = as_user(
        &app,
        &rep1,
        Method::POST,
        "/api/v1/contacts",
        Some(json!({"fields": {"name": "李四", "created_by": rep2_id}})),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let mine = as_user(&app, &rep1, Method::GET, "/api/v1/contacts", None).await.body;
    assert_eq!(mine["items"].as_array().unwrap().len(), 1, "nothing was created");
    assert_eq!(denied(&app, "mass_assignment").await, 4, "top-level attempts");
    assert_eq!(denied(&app, "update").await, 6, "attempts among the fields");
    assert_eq!(denied(&app, "create").await, 1);
});

/// A second server (service and router) on the same store.
async fn second_server(app: &TestApp) -> axum::Router {
    let master = custodian_crypto::MasterKey::from_hex(&app.master_hex).unwrap();
    let keyring = load_keyring(app.store.as_ref(), &master).await.unwrap();
    let config = ServiceConfig { clock: app.service.config().clock.clone(), ..ServiceConfig::default() };
    let service = Arc::new(Service::new(app.store.clone(), keyring, config).await.unwrap());
    custodian_server::app(service)
}

both_backends!(login_throttling_is_shared_by_servers_on_one_database, |app: TestApp| async move {
    use tower::ServiceExt;
    user(&app, "victim", "sales_rep", None, None).await;
    let other = second_server(&app).await;
    let login = |router: axum::Router, password: &'static str| async move {
        let body = json!({"username": "victim", "password": password}).to_string();
        let req = axum::http::Request::builder()
            .method(Method::POST)
            .uri("/api/v1/auth/login")
            .header("content-type", "application/json")
            .body(axum::body::Body::from(body))
            .unwrap();
        router.oneshot(req).await.unwrap().status()
    };
    // Failures alternate between the two servers: the counter is one.
    let mut statuses = Vec::new();
    for i in 0..6u32 {
        let router = if i.is_multiple_of(2) { app.router.clone() } else { other.clone() };
        statuses.push(login(router, "wrong password!!").await);
    }
    assert_eq!(&statuses[..5], &[StatusCode::UNAUTHORIZED; 5], "{statuses:?}");
    assert_eq!(statuses[5], StatusCode::TOO_MANY_REQUESTS, "{statuses:?}");
    // Both servers refuse the right password now.
    assert_eq!(login(app.router.clone(), PASSWORD).await, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(login(other.clone(), PASSWORD).await, StatusCode::TOO_MANY_REQUESTS);
    let events = actions(&app).await;
    assert_eq!(events.iter().filter(|(a, _)| a == "auth.login_failed").count(), 5);
});

/// A request to `router` as the holder of `token`: (status, body).
async fn on(
    router: &axum::Router,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let mut req =
        axum::http::Request::builder().method(method).uri(path).header("authorization", format!("Bearer {token}"));
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let req =
        req.body(body.map(|b| axum::body::Body::from(b.to_string())).unwrap_or_else(axum::body::Body::empty)).unwrap();
    let resp = router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// Asks `router` for `path` until it answers `want`; panics after `within` (returns how long it
/// took otherwise).
async fn answers_within(
    router: &axum::Router,
    token: &str,
    path: &str,
    want: StatusCode,
    within: std::time::Duration,
) -> std::time::Duration {
    let started = std::time::Instant::now();
    loop {
        let (status, body) = on(router, token, Method::GET, path, None).await;
        if status == want {
            return started.elapsed();
        }
        assert!(started.elapsed() < within, "still {status} after {within:?}, not {want}: {body}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

both_backends!(access_changes_reach_other_servers_at_once, |app: TestApp| async move {
    // Each change is made on the first server right after the second one answered from a fresh
    // cache: the caches' own lifetime (5 s) would keep the old answer far longer than the bound.
    let bound = custodian_service::CACHE_EPOCH_POLL * 4;
    assert!(bound < custodian_service::GRANT_TTL && bound < custodian_service::ROLE_TTL);
    let north = id(&app.post("/api/v1/departments", json!({"name": "华北区"})).await.body);
    let south = id(&app.post("/api/v1/departments", json!({"name": "华南区"})).await.body);
    let team_a = id(&app.post("/api/v1/teams", json!({"name": "A", "department_id": north})).await.body);
    let team_b = id(&app.post("/api/v1/teams", json!({"name": "B", "department_id": south})).await.body);
    let (rep1_id, rep1) = user(&app, "rep1", "sales_rep", Some(&team_a), Some(&north)).await;
    let (rep2_id, rep2) = user(&app, "rep2", "sales_rep", Some(&team_b), Some(&south)).await;
    let (_, manager) = user(&app, "manager", "sales_manager", Some(&team_a), Some(&north)).await;
    let r =
        as_user(&app, &rep2, Method::POST, "/api/v1/contacts", Some(json!({"fields": {"name": "二号的客户"}}))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let path = format!("/api/v1/contacts/{}", id(&r.body));
    let other = second_server(&app).await;
    app.admin_step_up().await;

    // A grant given on one server opens the record on the other ...
    answers_within(&other, &rep1, &path, StatusCode::NOT_FOUND, bound).await;
    let r = app
        .post(
            "/api/v1/grants",
            json!({"user_id": rep1_id, "object": "contacts", "record_id": path.rsplit('/').next(), "access": "read",
                "hours": 1, "reason": "covering during leave"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let grant = id(&r.body);
    answers_within(&other, &rep1, &path, StatusCode::OK, bound).await;
    // ... and its revocation closes it again.
    let r = app.call(Method::DELETE, &format!("/api/v1/grants/{grant}"), None).await;
    assert!(r.status.is_success(), "{}", r.body);
    answers_within(&other, &rep1, &path, StatusCode::NOT_FOUND, bound).await;

    // A custom role's new definition applies to its holders on the other server.
    assert_eq!(app.post("/api/v1/roles", analyst("own")).await.status, StatusCode::CREATED);
    let (_, analyst_token) = user(&app, "ana", "analyst", None, None).await;
    answers_within(&other, &analyst_token, &path, StatusCode::NOT_FOUND, bound).await;
    let r = app.call(Method::PUT, "/api/v1/roles/analyst", Some(analyst("all"))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    answers_within(&other, &analyst_token, &path, StatusCode::OK, bound).await;

    // The record's owner moving into the manager's department brings the record into the
    // manager's department scope there (the organisation snapshot), and moving back takes it out.
    answers_within(&other, &manager, &path, StatusCode::NOT_FOUND, bound).await;
    let moved = json!({"department_id": north, "team_id": team_a});
    let r = app.call(Method::PATCH, &format!("/api/v1/users/{rep2_id}"), Some(moved)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    answers_within(&other, &manager, &path, StatusCode::OK, bound).await;
    let back = json!({"department_id": south, "team_id": team_b});
    let r = app.call(Method::PATCH, &format!("/api/v1/users/{rep2_id}"), Some(back)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    answers_within(&other, &manager, &path, StatusCode::NOT_FOUND, bound).await;
});

both_backends!(sessions_ended_or_users_suspended_elsewhere_are_refused_at_once, |app: TestApp| async move {
    // Servers cache sessions; what ends one on the first server must reach the second within
    // the epoch poll, however fresh its cached copy (its backstop lifetime is 30 s).
    let bound = custodian_service::CACHE_EPOCH_POLL * 4;
    let (_, rep) = user(&app, "rep1", "sales_rep", None, None).await;
    let (rep2_id, rep2) = user(&app, "rep2", "sales_rep", None, None).await;
    let other = second_server(&app).await;
    let list = "/api/v1/contacts";
    app.admin_step_up().await;

    // Logout on the first server: the token stops working on the second.
    answers_within(&other, &rep, list, StatusCode::OK, bound).await;
    let (status, _) = on(&app.router, &rep, Method::POST, "/api/v1/auth/logout", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    // On the server that ended it, at once.
    assert_eq!(on(&app.router, &rep, Method::GET, list, None).await.0, StatusCode::UNAUTHORIZED);
    answers_within(&other, &rep, list, StatusCode::UNAUTHORIZED, bound).await;

    // Suspension on the first server: the user's sessions stop working on the second, and
    // reactivation does not bring them back (suspension revoked them).
    answers_within(&other, &rep2, list, StatusCode::OK, bound).await;
    let r = app.call(Method::POST, &format!("/api/v1/users/{rep2_id}/suspend"), None).await;
    assert!(r.status.is_success(), "{}", r.body);
    assert_eq!(on(&app.router, &rep2, Method::GET, list, None).await.0, StatusCode::UNAUTHORIZED);
    answers_within(&other, &rep2, list, StatusCode::UNAUTHORIZED, bound).await;
    let r = app.call(Method::POST, &format!("/api/v1/users/{rep2_id}/reactivate"), None).await;
    assert!(r.status.is_success(), "{}", r.body);
    tokio::time::sleep(bound).await;
    assert_eq!(on(&other, &rep2, Method::GET, list, None).await.0, StatusCode::UNAUTHORIZED);

    // A session's owner ending it from "my sessions" on the second server: the first refuses.
    let rep3 = app.login("rep1", PASSWORD).await;
    let rep3b = app.login("rep1", PASSWORD).await;
    answers_within(&app.router, &rep3, list, StatusCode::OK, bound).await;
    let (status, mine) = on(&other, &rep3b, Method::GET, "/api/v1/auth/sessions", None).await;
    assert_eq!(status, StatusCode::OK, "{mine}");
    let target = mine["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["current"] != json!(true))
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .unwrap();
    let (status, body) = on(&other, &rep3b, Method::DELETE, &format!("/api/v1/auth/sessions/{target}"), None).await;
    assert!(status.is_success(), "{status} {body}");
    answers_within(&app.router, &rep3, list, StatusCode::UNAUTHORIZED, bound).await;
    assert_eq!(on(&other, &rep3b, Method::GET, list, None).await.0, StatusCode::OK);
});

both_backends!(departments_and_teams_are_renamed_and_moved_and_scopes_follow, |app: TestApp| async move {
    let north = id(&app.post("/api/v1/departments", json!({"name": "华北区"})).await.body);
    let south = id(&app.post("/api/v1/departments", json!({"name": "华南区"})).await.body);
    let team_a = id(&app.post("/api/v1/teams", json!({"name": "A", "department_id": north})).await.body);
    let team_b = id(&app.post("/api/v1/teams", json!({"name": "B", "department_id": south})).await.body);
    let (_, rep2) = user(&app, "rep2", "sales_rep", Some(&team_b), Some(&south)).await;
    let (_, manager) = user(&app, "manager", "sales_manager", Some(&team_a), Some(&north)).await;
    let r = as_user(&app, &rep2, Method::POST, "/api/v1/contacts", Some(json!({"fields": {"name": "南区客户"}}))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let record = format!("/api/v1/contacts/{}", id(&r.body));
    let seen = |token: String| {
        let app = &app;
        let record = record.clone();
        async move { as_user(app, &token, Method::GET, &record, None).await.status }
    };
    assert_eq!(seen(manager.clone()).await, StatusCode::NOT_FOUND);

    // Only admins change the organisation; the refusal is audited and changes nothing.
    let dept_path = |d: &str| format!("/api/v1/departments/{d}");
    let r = as_user(&app, &manager, Method::PATCH, &dept_path(&south), Some(json!({"parent_id": north}))).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert_eq!(denied(&app, "department.update").await, 1);
    let r =
        as_user(&app, &manager, Method::PATCH, &format!("/api/v1/teams/{team_b}"), Some(json!({"name": "x"}))).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);

    // Moving 华南区 below 华北区 brings its records into the north manager's department scope.
    let r = app.call(Method::PATCH, &dept_path(&south), Some(json!({"parent_id": north, "name": "华南分区"}))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!((r.body["name"].as_str(), r.body["parent_id"].as_str()), (Some("华南分区"), Some(north.as_str())));
    assert_eq!(seen(manager.clone()).await, StatusCode::OK);

    // No cycles: not below itself, not below its own sub-department; no missing parent.
    let missing = "01938f2c-0000-7000-8000-0000000000ff";
    for (dept, parent) in [(&north, north.as_str()), (&north, south.as_str()), (&south, missing)] {
        let r = app.call(Method::PATCH, &dept_path(dept), Some(json!({ "parent_id": parent }))).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
        assert_eq!(r.body["error"]["details"][0]["field"], "parent_id", "{}", r.body);
    }
    // Bad bodies and unknown ids.
    for (body, status) in [
        (json!({"name": ""}), StatusCode::UNPROCESSABLE_ENTITY),
        (json!({"name": 7}), StatusCode::BAD_REQUEST),
        (json!({"parent_id": "not-a-uuid"}), StatusCode::BAD_REQUEST),
        (json!({"manager": "me"}), StatusCode::BAD_REQUEST),
    ] {
        let r = app.call(Method::PATCH, &dept_path(&north), Some(body.clone())).await;
        assert_eq!(r.status, status, "{body}: {}", r.body);
    }
    let r = app.call(Method::PATCH, &dept_path(missing), Some(json!({"name": "x"}))).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
    let depts = app.get("/api/v1/departments").await.body;
    let north_now = depts["items"].as_array().unwrap().iter().find(|d| d["id"] == north.as_str()).unwrap().clone();
    assert_eq!((north_now["name"].as_str(), &north_now["parent_id"]), (Some("华北区"), &Value::Null), "unchanged");

    // Back to the top level: out of scope again.
    let r = app.call(Method::PATCH, &dept_path(&south), Some(json!({"parent_id": null}))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(seen(manager.clone()).await, StatusCode::NOT_FOUND);

    // A team moved into 华北区 takes its records' team into the manager's department scope.
    let team_path = format!("/api/v1/teams/{team_b}");
    let r = app.call(Method::PATCH, &team_path, Some(json!({"department_id": missing}))).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    let r = app.call(Method::PATCH, &team_path, Some(json!({"department_id": north, "name": "B 组"}))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!((r.body["name"].as_str(), r.body["department_id"].as_str()), (Some("B 组"), Some(north.as_str())));
    assert_eq!(seen(manager.clone()).await, StatusCode::OK);

    // Every change is audited with before and after.
    let events = actions(&app).await;
    let moves: Vec<&Value> = events.iter().filter(|(a, _)| a == "department.update").map(|(_, d)| d).collect();
    assert_eq!(moves.len(), 2, "refused changes write no update event");
    assert_eq!(moves[0]["before"], json!({"name": "华南区", "parent_id": null}));
    assert_eq!(moves[0]["after"], json!({"name": "华南分区", "parent_id": north}));
    let team_moves: Vec<&Value> = events.iter().filter(|(a, _)| a == "team.update").map(|(_, d)| d).collect();
    assert_eq!(team_moves.len(), 1);
    assert_eq!(team_moves[0]["before"], json!({"name": "B", "department_id": south}));
    assert_eq!(team_moves[0]["after"], json!({"name": "B 组", "department_id": north}));
});
