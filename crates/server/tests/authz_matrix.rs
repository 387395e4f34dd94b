//! The authorisation matrix: every route of the router × every built-in role × records that are
//! the caller's own, their team's, their department's and someone else's. A route that appears
//! in the router (and so in the OpenAPI document) without an expectation here fails the suite.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::http::{Method, StatusCode};
use common::TestApp;
use common::{PASSWORD, as_user};
use serde_json::{Value, json};
use std::collections::BTreeMap;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Cat {
    Own,
    Team,
    Department,
    Other,
}
const CATS: [Cat; 4] = [Cat::Own, Cat::Team, Cat::Department, Cat::Other];

struct Actor {
    role: &'static str,
    token: String,
    /// Record ids by category from this actor's point of view.
    records: BTreeMap<&'static str, String>,
}

fn cat_key(c: Cat) -> &'static str {
    match c {
        Cat::Own => "own",
        Cat::Team => "team",
        Cat::Department => "department",
        Cat::Other => "other",
    }
}

/// Expected visibility/permission per role and category.
fn can(role: &str, op: &str, c: Cat) -> bool {
    match (role, op) {
        ("admin" | "data_steward", _) => true,
        ("auditor", "read") => true,
        ("auditor", _) => false,
        ("sales_rep", _) => c == Cat::Own,
        ("sales_manager", "read") => c != Cat::Other,
        ("sales_manager", _) => matches!(c, Cat::Own | Cat::Team),
        _ => false,
    }
}

async fn setup(app: &TestApp) -> Vec<Actor> {
    let post = |path: &'static str, body: Value| async move {
        let r = app.post(path, body).await;
        assert_eq!(r.status, StatusCode::CREATED, "{path}: {}", r.body);
        r.body["id"].as_str().unwrap().to_owned()
    };
    let sales = post("/api/v1/departments", json!({"name": "销售部"})).await;
    let east = post("/api/v1/departments", json!({"name": "华东区", "parent_id": sales})).await;
    let north = post("/api/v1/departments", json!({"name": "华北区"})).await;
    let team_a = post("/api/v1/teams", json!({"name": "A 组", "department_id": east})).await;
    let team_b = post("/api/v1/teams", json!({"name": "B 组", "department_id": east})).await;
    let team_c = post("/api/v1/teams", json!({"name": "C 组", "department_id": north})).await;
    let users = [
        ("rep1", "sales_rep", Some(&team_a), Some(&east)),
        ("rep2", "sales_rep", Some(&team_b), Some(&east)),
        ("rep3", "sales_rep", Some(&team_c), Some(&north)),
        ("manager", "sales_manager", Some(&team_a), Some(&sales)),
        ("steward", "data_steward", None, None),
        ("auditor", "auditor", None, None),
    ];
    let mut tokens = BTreeMap::new();
    for (name, role, team, dept) in users {
        let r = app
            .post(
                "/api/v1/users",
                json!({"username": name, "password": PASSWORD, "role": role, "team_id": team, "department_id": dept}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        tokens.insert(name, app.login(name, PASSWORD).await);
    }
    tokens.insert("admin", app.token.clone());
    // One contact owned by each writer (distinct resident IDs: an equal one is a duplicate).
    let id_numbers = [
        "11010119900104803X",
        "11010119900112803X",
        "11010119900120803X",
        "11010119900219803X",
        "11010119900227803X",
        "11010119900307803X",
    ];
    let mut owned = BTreeMap::new();
    for (i, name) in ["rep1", "rep2", "rep3", "manager", "steward", "admin"].into_iter().enumerate() {
        let r = as_user(app, &tokens[name], Method::POST, "/api/v1/contacts", Some(json!({"fields": {"name": format!("客户{i}"), "mobile": format!("1390000000{i}"), "id_number": id_numbers[i]}}))).await;
        assert_eq!(r.status, StatusCode::CREATED, "{name}: {}", r.body);
        owned.insert(name, r.body["id"].as_str().unwrap().to_owned());
    }
    let cats = |own: &str, team: &str, dept: &str, other: &str| -> BTreeMap<&'static str, String> {
        [
            ("own", owned[own].clone()),
            ("team", owned[team].clone()),
            ("department", owned[dept].clone()),
            ("other", owned[other].clone()),
        ]
        .into_iter()
        .collect()
    };
    vec![
        Actor { role: "sales_rep", token: tokens["rep1"].clone(), records: cats("rep1", "manager", "rep2", "rep3") },
        Actor {
            role: "sales_manager",
            token: tokens["manager"].clone(),
            records: cats("manager", "rep1", "rep2", "rep3"),
        },
        Actor {
            role: "data_steward",
            token: tokens["steward"].clone(),
            records: cats("steward", "rep1", "rep2", "rep3"),
        },
        Actor { role: "auditor", token: tokens["auditor"].clone(), records: cats("admin", "rep1", "rep2", "rep3") },
        Actor { role: "admin", token: tokens["admin"].clone(), records: cats("admin", "rep1", "rep2", "rep3") },
    ]
}

/// Expected status of one record route for one actor and category.
fn expected(route: &str, role: &str, c: Cat) -> StatusCode {
    let read = can(role, "read", c);
    let write = |op: &str, ok: StatusCode| {
        if !read {
            StatusCode::NOT_FOUND
        } else if !can(role, op, c) {
            StatusCode::FORBIDDEN
        } else {
            ok
        }
    };
    match route {
        "GET /api/v1/{object}/{id}"
        | "GET /api/v1/{object}/{id}/history"
        | "GET /api/v1/{object}/{id}/history/{version}"
        | "GET /api/v1/{object}/{id}/as-of"
        | "GET /api/v1/{object}/{id}/diff" => {
            if read {
                StatusCode::OK
            } else {
                StatusCode::NOT_FOUND
            }
        }
        "PATCH /api/v1/{object}/{id}" | "POST /api/v1/{object}/{id}/revert" => write("update", StatusCode::OK),
        // Ownership transfer to rep3 (outside every sales caller's own update scope, so refused
        // for them before any step-up); roles that may edit everything need a step-up first.
        "POST /api/v1/{object}/{id}/transfer" => {
            let ok = if matches!(role, "admin" | "data_steward") {
                StatusCode::PRECONDITION_REQUIRED
            } else {
                StatusCode::FORBIDDEN
            };
            write("update", ok)
        }
        // Restoring an active record conflicts once the caller is allowed to try.
        "POST /api/v1/{object}/{id}/restore" => write("delete", StatusCode::CONFLICT),
        "DELETE /api/v1/{object}/{id}" => write("delete", StatusCode::OK),
        // Duplicate review and merges are for stewards and admins; the ids here name no scan
        // job, candidate or merge.
        // Undoing a merge needs a step-up before anything is looked up.
        "POST /api/v1/merges/{id}/undo" => {
            if merger(role) {
                StatusCode::PRECONDITION_REQUIRED
            } else {
                StatusCode::FORBIDDEN
            }
        }
        "GET /api/v1/duplicates/scan/{id}"
        | "GET /api/v1/duplicates/backfill/{id}"
        | "POST /api/v1/duplicates/{id}/dismiss"
        | "GET /api/v1/merges/{id}" => {
            if merger(role) {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::FORBIDDEN
            }
        }
        // No import has this id (a record id): not found (the permission to delete the
        // import's records is checked once the import is known: tests/imports.rs).
        "POST /api/v1/imports/{id}/revert" => StatusCode::NOT_FOUND,
        // Re-encryption jobs: admins; a record id names no job.
        "GET /api/v1/keys/jobs/{id}" => {
            if role == "admin" {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::FORBIDDEN
            }
        }
        // No rule check has this id (a record id): not found for everyone who may read records.
        "GET /api/v1/rule-checks/{id}" => StatusCode::NOT_FOUND,
        // The id names a contact, not a lead: not found (real conversions in tests/convert.rs).
        "POST /api/v1/leads/{id}/convert" => StatusCode::NOT_FOUND,
        "POST /api/v1/{object}/{id}/reveal" => {
            if !read {
                StatusCode::NOT_FOUND
            } else if role == "auditor" {
                // Masked for auditors, who may not reveal.
                StatusCode::FORBIDDEN
            } else {
                StatusCode::OK
            }
        }
        other => panic!("no expectation for record route {other}"),
    }
}

/// Roles that review duplicates and merge.
fn merger(role: &str) -> bool {
    matches!(role, "admin" | "data_steward")
}

/// Roles that must have MFA (and so are enrolled by the harness).
fn privileged(role: &str) -> bool {
    matches!(role, "admin" | "data_steward" | "auditor")
}

/// Expected status of a route that is not about one record.
fn expected_other(route: &str, role: &str) -> Option<StatusCode> {
    let admin = role == "admin";
    Some(match route {
        "GET /api/v1/me"
        | "GET /api/v1/auth/sessions"
        | "GET /api/v1/departments"
        | "GET /api/v1/teams"
        | "GET /api/v1/schema"
        | "GET /api/v1/schema/{object}"
        | "GET /api/v1/schema/{object}/fields/{field}/rules"
        | "GET /api/v1/{object}" => StatusCode::OK,
        // Backups: admins, with a step-up; the matrix's server has no backup directory (409).
        "POST /api/v1/backups" | "GET /api/v1/backups" => {
            if admin {
                StatusCode::CONFLICT
            } else {
                StatusCode::FORBIDDEN
            }
        }
        // Data keys: admins; a rotation needs a step-up; the id in the path names no job.
        "GET /api/v1/keys" => {
            if admin {
                StatusCode::OK
            } else {
                StatusCode::FORBIDDEN
            }
        }
        "POST /api/v1/keys/rotate" | "POST /api/v1/keys/reseal" => {
            if admin {
                StatusCode::PRECONDITION_REQUIRED
            } else {
                StatusCode::FORBIDDEN
            }
        }
        // (GET /api/v1/keys/jobs/{id} is with the routes that take an id, in `expected`.)
        // Imports: every role that creates records (an empty body is no CSV: 400 after the
        // permission check passes the request on; a dry run otherwise).
        "POST /api/v1/{object}/import" | "POST /api/v1/exports/trace" => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        // Exports: roles with the export permission (rows, scope and fields in tests/exports.rs).
        "GET /api/v1/{object}/export" => {
            if matches!(role, "admin" | "data_steward" | "sales_manager") {
                StatusCode::OK
            } else {
                StatusCode::FORBIDDEN
            }
        }
        // Rules are edited by admins and data stewards.
        "PUT /api/v1/schema/{object}/fields/{field}/rules" => {
            if merger(role) {
                StatusCode::OK
            } else {
                StatusCode::FORBIDDEN
            }
        }
        "GET /api/v1/users" => {
            if admin {
                StatusCode::OK
            } else {
                StatusCode::FORBIDDEN
            }
        }
        // Admins only; the id in the path (a user's) names no department or team.
        "PATCH /api/v1/departments/{id}" | "PATCH /api/v1/teams/{id}" => {
            if admin {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::FORBIDDEN
            }
        }
        "POST /api/v1/users"
        | "POST /api/v1/departments"
        | "POST /api/v1/teams"
        | "POST /api/v1/schema/{object}/fields" => {
            if admin {
                StatusCode::CREATED
            } else {
                StatusCode::FORBIDDEN
            }
        }
        "POST /api/v1/duplicates/scan" | "POST /api/v1/duplicates/backfill" => {
            if merger(role) {
                StatusCode::ACCEPTED
            } else {
                StatusCode::FORBIDDEN
            }
        }
        "GET /api/v1/duplicates" => {
            if merger(role) {
                StatusCode::OK
            } else {
                StatusCode::FORBIDDEN
            }
        }
        // Merges need a step-up (a real merge is in tests/duplicates.rs).
        "POST /api/v1/merges" => {
            if merger(role) {
                StatusCode::PRECONDITION_REQUIRED
            } else {
                StatusCode::FORBIDDEN
            }
        }
        // Roles: admins only; changes need a step-up; built-in roles are read-only (409).
        "GET /api/v1/roles" | "GET /api/v1/roles/{name}" => {
            if admin {
                StatusCode::OK
            } else {
                StatusCode::FORBIDDEN
            }
        }
        "POST /api/v1/roles" => {
            if admin {
                StatusCode::PRECONDITION_REQUIRED
            } else {
                StatusCode::FORBIDDEN
            }
        }
        "PUT /api/v1/roles/{name}" | "DELETE /api/v1/roles/{name}" => {
            if admin {
                StatusCode::CONFLICT
            } else {
                StatusCode::FORBIDDEN
            }
        }
        // Grants: everyone lists their own; admins and managers give and revoke (with a
        // step-up); the id in the path names no grant.
        "GET /api/v1/grants" => StatusCode::OK,
        "POST /api/v1/grants" => {
            if matches!(role, "admin" | "sales_manager") {
                StatusCode::PRECONDITION_REQUIRED
            } else {
                StatusCode::FORBIDDEN
            }
        }
        "DELETE /api/v1/grants/{id}" => {
            if matches!(role, "admin" | "sales_manager") {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::FORBIDDEN
            }
        }
        // Bulk delete needs a step-up from every role that may delete at all.
        "POST /api/v1/{object}/bulk-delete" => {
            if role == "auditor" {
                StatusCode::FORBIDDEN
            } else {
                StatusCode::PRECONDITION_REQUIRED
            }
        }
        "POST /api/v1/{object}" => {
            if role == "auditor" {
                StatusCode::FORBIDDEN
            } else {
                StatusCode::CREATED
            }
        }
        // Covered by their own tests (they change the caller's session).
        "POST /api/v1/auth/login"
        | "POST /api/v1/auth/mfa"
        | "POST /api/v1/auth/logout"
        | "DELETE /api/v1/auth/sessions"
        | "DELETE /api/v1/auth/sessions/{id}" => return None,
        "POST /api/v1/auth/tokens" => StatusCode::CREATED,
        // Privileged roles are enrolled (the harness enrols them at login): a second enrolment
        // conflicts. Sales roles may enrol voluntarily; the matrix starts one and never confirms
        // it, so confirming with a wrong code is refused while nothing is pending, and a
        // step-up without an active factor conflicts.
        "POST /api/v1/auth/mfa/enroll" => {
            if privileged(role) {
                StatusCode::CONFLICT
            } else {
                StatusCode::OK
            }
        }
        "POST /api/v1/auth/mfa/enroll/confirm" => {
            if privileged(role) {
                StatusCode::CONFLICT
            } else {
                StatusCode::UNAUTHORIZED
            }
        }
        "POST /api/v1/auth/step-up" => {
            if privileged(role) {
                StatusCode::UNAUTHORIZED
            } else {
                StatusCode::CONFLICT
            }
        }
        // A display-name change and reactivation are not sensitive.
        "PATCH /api/v1/users/{id}" | "POST /api/v1/users/{id}/reactivate" => {
            if admin {
                StatusCode::OK
            } else {
                StatusCode::FORBIDDEN
            }
        }
        // Sensitive: an admin without a fresh step-up gets 428 and nothing changes (the admin
        // outcomes after a step-up are covered by their own tests).
        "POST /api/v1/users/{id}/suspend"
        | "POST /api/v1/users/{id}/offboard"
        | "POST /api/v1/users/{id}/mfa/reset" => {
            if admin {
                StatusCode::PRECONDITION_REQUIRED
            } else {
                StatusCode::FORBIDDEN
            }
        }
        // The audit log, alerts and their rules: auditors and admins (rules are edited by admins).
        "GET /api/v1/audit/events"
        | "GET /api/v1/audit/events.csv"
        | "POST /api/v1/audit/verify"
        | "GET /api/v1/alerts"
        | "GET /api/v1/alert-rules" => {
            if matches!(role, "admin" | "auditor") {
                StatusCode::OK
            } else {
                StatusCode::FORBIDDEN
            }
        }
        // No alert has this id (a user id): not found once the caller may acknowledge alerts.
        "POST /api/v1/alerts/{id}/ack" => {
            if matches!(role, "admin" | "auditor") {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::FORBIDDEN
            }
        }
        "PUT /api/v1/alert-rules/{metric}" => {
            if admin {
                StatusCode::OK
            } else {
                StatusCode::FORBIDDEN
            }
        }
        // Everyone reads their own notifications; nobody acknowledges someone else's (or a
        // missing one): 404.
        "GET /api/v1/notifications" => StatusCode::OK,
        "POST /api/v1/notifications/{id}/ack" => StatusCode::NOT_FOUND,
        other => panic!("route {other} has no authorisation expectation: add it to the matrix"),
    })
}

fn body_for(route: &str, n: usize) -> Option<Value> {
    Some(match route {
        "PATCH /api/v1/{object}/{id}" => json!({"fields": {"title": format!("t{n}")}}),
        "POST /api/v1/{object}/{id}/reveal" => json!({"field": "mobile"}),
        "POST /api/v1/duplicates/scan" | "POST /api/v1/duplicates/backfill" => json!({"object": "contacts"}),
        "PUT /api/v1/schema/{object}/fields/{field}/rules" => json!({"rules": [{"kind": "length", "max": 200 + n}]}),
        "POST /api/v1/duplicates/{id}/dismiss" => json!({"reason": "different people"}),
        "POST /api/v1/merges" => {
            json!({"object": "contacts", "survivor_id": "01938f2c-0000-7000-8000-000000000001", "loser_ids": ["01938f2c-0000-7000-8000-000000000002"]})
        }
        "POST /api/v1/{object}/{id}/revert" => json!({"to_version": 1, "field": "title"}),
        "POST /api/v1/roles" => json!({"name": format!("role_{n}"), "label_en": "R", "label_zh": "R",
            "objects": {}, "sensitive_default": "hidden"}),
        "PUT /api/v1/roles/{name}" => {
            json!({"label_en": "R", "label_zh": "R", "objects": {}, "sensitive_default": "hidden"})
        }
        "POST /api/v1/grants" => json!({"user_id": "01938f2c-0000-7000-8000-000000000009", "object": "contacts",
            "record_id": "01938f2c-0000-7000-8000-00000000000a", "access": "read", "hours": 1, "reason": "cover"}),
        "POST /api/v1/{object}/bulk-delete" => json!({"ids": ["01938f2c-0000-7000-8000-00000000000b"]}),
        "POST /api/v1/leads/{id}/convert" => {
            json!({"company": {"fields": {"name": format!("转化 {n}")}}, "contact": {"fields": {"name": "转化人"}}})
        }
        "POST /api/v1/users" => json!({"username": format!("newuser{n}"), "password": PASSWORD, "role": "sales_rep"}),
        "POST /api/v1/departments" | "POST /api/v1/teams" => json!({"name": format!("org {n}")}),
        "PATCH /api/v1/departments/{id}" | "PATCH /api/v1/teams/{id}" => json!({"name": format!("renamed {n}")}),
        "POST /api/v1/schema/{object}/fields" => {
            json!({"name": format!("extra_{n}"), "type": "text", "label_en": "Extra", "label_zh": "扩展"})
        }
        "POST /api/v1/{object}" => json!({"fields": {"name": format!("new {n}")}}),
        "PATCH /api/v1/users/{id}" => json!({"display_name": format!("Name {n}")}),
        "POST /api/v1/auth/tokens" => json!({"name": format!("token {n}"), "scope": "read", "expires_in_days": 30}),
        "POST /api/v1/users/{id}/offboard" => json!({"successor_id": "01938f2c-0000-7000-8000-000000000000"}),
        "PUT /api/v1/alert-rules/{metric}" => json!({"enabled": true, "window_secs": 3600, "absolute": 30 + n,
            "baseline_multiple": 3.0, "baseline_min": 10, "auto_suspend": false}),
        // A wrong code (the right one would be a one-in-a-million accident).
        "POST /api/v1/auth/mfa/enroll/confirm" | "POST /api/v1/auth/step-up" => json!({"code": "000000"}),
        _ => return None,
    })
}

both_backends!(every_route_every_role_every_scope, |app: TestApp| async move {
    let actors = setup(&app).await;
    let doc = app.get("/api/v1/openapi.json").await.body;
    let mut routes = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if ["get", "post", "patch", "delete", "put"].contains(&method.as_str()) {
                routes.push((method.to_uppercase(), path.clone()));
            }
        }
    }
    assert!(routes.len() >= 18, "{routes:?}");
    let users = app.get("/api/v1/users").await.body;
    let rep3 = users["items"].as_array().unwrap().iter().find(|u| u["username"] == "rep3").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut n = 0;
    for actor in &actors {
        for (method, path) in &routes {
            let route = format!("{method} {path}");
            let m = Method::from_bytes(method.as_bytes()).unwrap();
            let not_a_record = [
                "/api/v1/users/",
                "/api/v1/auth/",
                "/api/v1/alerts/",
                "/api/v1/notifications/",
                "/api/v1/grants/",
                "/api/v1/departments/",
                "/api/v1/teams/",
            ];
            if path.contains("{id}") && !not_a_record.iter().any(|p| path.starts_with(p)) {
                // DELETE last: it changes the record for the routes after it.
                if method == "DELETE" {
                    continue;
                }
                for c in CATS {
                    n += 1;
                    let id = &actor.records[cat_key(c)];
                    let concrete = path.replace("{object}", "contacts").replace("{id}", id).replace("{version}", "1")
                        + match path.as_str() {
                            "/api/v1/{object}/{id}/as-of" => "?at=2100-01-01T00:00:00Z",
                            "/api/v1/{object}/{id}/diff" => "?from=1&to=1",
                            _ => "",
                        };
                    let body = if route == "POST /api/v1/{object}/{id}/transfer" {
                        Some(json!({ "owner_id": rep3 }))
                    } else {
                        body_for(&route, n)
                    };
                    let r = as_user(&app, &actor.token, m.clone(), &concrete, body).await;
                    assert_eq!(
                        r.status,
                        expected(&route, actor.role, c),
                        "{} {route} on {:?}: {}",
                        actor.role,
                        c,
                        r.body
                    );
                    if r.status == StatusCode::NOT_FOUND {
                        // Out of scope looks exactly like missing: no existence leak.
                        assert_eq!(r.code(), "not_found");
                    }
                    if route == "POST /api/v1/{object}/{id}/reveal" && r.status == StatusCode::OK {
                        assert!(r.body["value"].as_str().unwrap().starts_with("+86139"));
                    }
                }
            } else {
                n += 1;
                let Some(status) = expected_other(&route, actor.role) else { continue };
                let concrete = path
                    .replace("{object}", "contacts")
                    .replace("{id}", &rep3)
                    .replace("{metric}", "reveals")
                    .replace("{name}", "sales_rep")
                    .replace("{field}", "title")
                    + if path == "/api/v1/duplicates" { "?object=contacts" } else { "" };
                let r = as_user(&app, &actor.token, m, &concrete, body_for(&route, n)).await;
                assert_eq!(r.status, status, "{} {route}: {}", actor.role, r.body);
            }
        }
        // Lists return exactly the records in the caller's read scope, and counts agree.
        let r = as_user(&app, &actor.token, Method::GET, "/api/v1/contacts?limit=500", None).await;
        let ids: Vec<String> =
            r.body["items"].as_array().unwrap().iter().map(|x| x["id"].as_str().unwrap().to_owned()).collect();
        for c in CATS {
            assert_eq!(
                ids.contains(&actor.records[cat_key(c)]),
                can(actor.role, "read", c),
                "{} list, {c:?}",
                actor.role
            );
        }
        // Search and blind-index lookups are scoped too.
        let other_mobile = "13900000002"; // rep3's record, "other" for reps and managers
        let r =
            as_user(&app, &actor.token, Method::GET, &format!("/api/v1/contacts?mobile={other_mobile}"), None).await;
        let found = r.body["items"].as_array().map(|a| a.len()).unwrap_or(0);
        match actor.role {
            "sales_rep" => assert_eq!(found, 0),
            "sales_manager" | "auditor" => {
                assert_eq!(r.status, StatusCode::BAD_REQUEST, "masked fields cannot be probed")
            }
            _ => assert_eq!(found, 1, "{}", actor.role),
        }
        // Field visibility: the resident ID is masked for everyone, the mobile for managers and auditors.
        let r = as_user(&app, &actor.token, Method::GET, &format!("/api/v1/contacts/{}", actor.records["other"]), None)
            .await;
        if r.status == StatusCode::OK {
            let masked_id = r.body["fields"]["id_number"].as_str().unwrap();
            assert!(
                masked_id.starts_with("110101********") && masked_id.ends_with("803X"),
                "{}: {masked_id}",
                actor.role
            );
            let masked_mobile = r.body["fields"]["mobile"].as_str().unwrap().contains('*');
            assert_eq!(masked_mobile, matches!(actor.role, "sales_manager" | "auditor"), "{}", actor.role);
            // History versions are masked the same way.
            let h = as_user(
                &app,
                &actor.token,
                Method::GET,
                &format!("/api/v1/contacts/{}/history/1", actor.records["other"]),
                None,
            )
            .await;
            let masked_id = h.body["fields"]["id_number"].as_str().unwrap();
            assert!(masked_id.starts_with("110101********") && masked_id.ends_with("803X"), "{masked_id}");
        }
        // Restricted fields need a step-up even for roles that may reveal; roles that may not
        // reveal are refused outright.
        let r = as_user(
            &app,
            &actor.token,
            Method::POST,
            &format!("/api/v1/contacts/{}/reveal", actor.records["own"]),
            Some(json!({"field": "id_number"})),
        )
        .await;
        if matches!(actor.role, "sales_rep" | "auditor") {
            assert_eq!(r.status, StatusCode::FORBIDDEN, "{}: {}", actor.role, r.body);
        } else {
            assert_eq!(r.status, StatusCode::PRECONDITION_REQUIRED, "{}: {}", actor.role, r.body);
            assert_eq!(r.code(), "step_up_required");
        }
    }
    // With a fresh step-up, the roles that may reveal see the restricted value.
    for (actor, username) in actors.iter().filter_map(|a| match a.role {
        "data_steward" => Some((a, "steward")),
        "admin" => Some((a, "admin")),
        _ => None,
    }) {
        let r = app.step_up(&actor.token, username).await;
        assert_eq!(r.status, StatusCode::OK, "{}: {}", actor.role, r.body);
        let r = as_user(
            &app,
            &actor.token,
            Method::POST,
            &format!("/api/v1/contacts/{}/reveal", actor.records["own"]),
            Some(json!({"field": "id_number"})),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{}: {}", actor.role, r.body);
        // Each writer's contact has its own resident ID (see `setup`).
        let own_id_number = if username == "steward" { "11010119900227803X" } else { "11010119900307803X" };
        assert_eq!(r.body["value"], own_id_number);
    }
    // Finally deletes, per category, checked against the delete scope.
    for actor in &actors {
        for c in CATS {
            let id = &actor.records[cat_key(c)];
            let before = app.get(&format!("/api/v1/contacts/{id}")).await;
            let r = as_user(&app, &actor.token, Method::DELETE, &format!("/api/v1/contacts/{id}"), None).await;
            let want = if before.body["deleted_at"].is_string()
                && can(actor.role, "read", c)
                && can(actor.role, "delete", c)
            {
                StatusCode::NOT_FOUND // already deleted by an earlier actor
            } else {
                expected("DELETE /api/v1/{object}/{id}", actor.role, c)
            };
            assert_eq!(r.status, want, "{} DELETE on {c:?}: {}", actor.role, r.body);
            if r.status == StatusCode::OK {
                app.call(Method::POST, &format!("/api/v1/contacts/{id}/restore"), None).await;
            }
        }
    }
    // Refusals are audited.
    let events = app.store.list_audit(0, 1_000_000).await.unwrap();
    assert!(events.iter().any(|e| e.action == "access.denied"));
    assert!(events.iter().any(|e| e.action == "record.reveal"));
    assert!(events.iter().any(|e| e.action == "record.reveal_denied"));
});
