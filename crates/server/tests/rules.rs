//! Field rules as data (PRODUCT.md A1): editing them at runtime, refusing bad ones, the re-check
//! job and its violators, unique scopes, the USCC checksum override, the match-key backfill,
//! and a proof that no write path skips the rule engine — through the HTTP API on both backends.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::http::{Method, StatusCode};
use common::TestApp;
use common::{as_user, id_of, user};
use custodian_crypto::MasterKey;
use custodian_service::{CreateOptions, RequestContext, Service, ServiceConfig, load_keyring};
use custodian_store::{AuditRow, DeletedFilter, ListQuery};
use serde_json::{Value, json};
use std::sync::Arc;

async fn put_rules(app: &TestApp, path: &str, rules: Value) -> common::Reply {
    app.call(Method::PUT, path, Some(json!({ "rules": rules }))).await
}

/// Runs pending jobs on this server, then returns the rule check as the admin sees it.
async fn finished_check(app: &TestApp, job: &Value) -> Value {
    let id = job["id"].as_str().unwrap();
    for _ in 0..200 {
        app.service.run_jobs("test").await.unwrap();
        let r = app.get(&format!("/api/v1/rule-checks/{id}?limit=500")).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        if r.body["status"] == "done" {
            return r.body;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("rule check {id} did not finish");
}

async fn events(app: &TestApp, action: &str) -> Vec<(AuditRow, Value)> {
    app.store
        .list_audit(0, 1_000_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.action == action)
        .map(|e| {
            let body: Value = serde_json::from_str(&e.body).unwrap();
            (e, body)
        })
        .collect()
}

both_backends!(rules_are_data_checked_audited_and_seen_by_every_server, |app: TestApp| async move {
    // The default conditional rule: a won deal needs its contract number.
    let r = app.get("/api/v1/schema/deals/fields/contract_no/rules").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["revision"], 0);
    assert!(
        r.body["rules"]
            .as_array()
            .unwrap()
            .contains(&json!({"kind": "required_when", "field": "stage", "values": ["won"]}))
    );
    assert!(r.body["rules"].as_array().unwrap().contains(&json!({"kind": "unique", "scope": "global"})));
    let company = app.create("companies", json!({"name": "甲公司"})).await;
    let r = app
        .post("/api/v1/deals", json!({"fields": {"name": "d", "company_id": id_of(&company), "stage": "won"}}))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert_eq!(r.body["error"]["details"][0]["field"], "contract_no");
    assert_eq!(r.body["error"]["details"][0]["code"], "required");
    assert!(r.body["error"]["details"][0]["message_zh"].as_str().unwrap().contains("必填"));
    assert_eq!(app.get("/api/v1/schema/deals/fields/nope/rules").await.status, StatusCode::NOT_FOUND);
    assert_eq!(app.get("/api/v1/schema/nope/fields/name/rules").await.status, StatusCode::NOT_FOUND);

    // Stored records, some of which the new rule will not accept.
    let retail = app.create("companies", json!({"name": "乙公司", "industry": "零售"})).await;
    let finance = app.create("companies", json!({"name": "丙公司", "industry": "金融"})).await;

    // Only admins and data stewards edit rules (refusals are audited).
    let rep = user(&app, "rep1", "sales_rep").await;
    let path = "/api/v1/schema/companies/fields/industry/rules";
    let body = json!({"rules": [{"kind": "allowed_values", "values": ["金融", "制造"]}]});
    let r = as_user(&app, &rep, Method::PUT, path, Some(body.clone())).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert!(events(&app, "access.denied").await.iter().any(|(_, b)| b["details"]["operation"] == "set_rules"));
    let r = as_user(&app, &rep, Method::GET, path, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["rules"], json!([]));

    // Bad rules: structured 422s, nothing stored.
    for (field, rules, code) in [
        ("contract_no", json!([{"kind": "regex", "pattern": "(unclosed"}]), "invalid_regex"),
        ("contract_no", json!([{"kind": "regex", "pattern": "(a{1000}){1000}"}]), "invalid_regex"),
        ("amount", json!([{"kind": "range", "min": 10, "max": 1}]), "contradictory"),
        ("amount", json!([{"kind": "range", "max": 1e300}]), "out_of_range"),
        ("contract_no", json!([{"kind": "required_when", "field": "nope", "values": ["x"]}]), "unknown_field"),
        ("stage", json!([{"kind": "allowed_values", "values": ["won", "someday"]}]), "not_allowed"),
        ("tags", json!([{"kind": "unique"}]), "unsupported"),
        ("name", json!([{"kind": "length", "max": 0}]), "out_of_range"),
        ("name", json!([{"kind": "teleport"}]), "unknown_rule"),
    ] {
        let r = put_rules(&app, &format!("/api/v1/schema/deals/fields/{field}/rules"), rules.clone()).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{rules}: {}", r.body);
        assert_eq!(r.code(), "validation_failed");
        assert_eq!(r.body["error"]["details"][0]["code"], code, "{rules}: {}", r.body);
        assert_eq!(r.body["error"]["details"][0]["field"], "rules[0]");
    }
    let r = app.call(Method::PUT, path, Some(json!({"rules": "none"}))).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let r = app.call(Method::PUT, path, Some(json!({"rules": [], "surprise": 1}))).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(events(&app, "schema.set_rules").await.is_empty());

    // A good change: stored, audited with before and after, re-check started.
    let r = app.call(Method::PUT, path, Some(body.clone())).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["revision"], 1);
    let job = r.body["job"].clone();
    assert_eq!(job["kind"], "rule_check");
    let set = events(&app, "schema.set_rules").await;
    assert_eq!(set.len(), 1);
    assert_eq!(set[0].1["details"]["before"], json!([]));
    assert_eq!(set[0].1["details"]["after"], body["rules"]);
    assert_eq!(set[0].1["details"]["field"], "industry");
    assert_eq!(app.get(path).await.body["revision"], 1);
    // A change based on an outdated revision conflicts.
    let r = app.call(Method::PUT, path, Some(json!({"rules": [], "revision": 0}))).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert_eq!(r.code(), "version_conflict");

    // Writes follow the new rule at once on this server.
    let r = app.post("/api/v1/companies", json!({"fields": {"name": "丁公司", "industry": "零售"}})).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert_eq!(r.body["error"]["details"][0]["code"], "not_allowed");

    // The re-check lists the stored violator and changes nothing.
    let check = finished_check(&app, &job).await;
    assert_eq!(check["scanned"], 3);
    let violators = check["violators"].as_array().unwrap();
    assert_eq!(violators.len(), 1, "{check}");
    assert_eq!(violators[0]["record_id"], retail["id"]);
    assert_eq!(violators[0]["field"], "industry");
    assert_eq!(violators[0]["code"], "not_allowed");
    assert_eq!(violators[0]["value"], "零售");
    let still = app.get(&format!("/api/v1/companies/{}", id_of(&retail))).await;
    assert_eq!(still.body["version"], 1);
    assert_eq!(still.body["fields"]["industry"], "零售");
    assert!(!violators.iter().any(|v| v["record_id"] == finance["id"]));
    // Violators outside the caller's read scope are not listed (the admin owns them all).
    let r =
        as_user(&app, &rep, Method::GET, &format!("/api/v1/rule-checks/{}", job["id"].as_str().unwrap()), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["violators"], json!([]));
    assert_eq!(r.body["status"], "done");
    let r = app.get(&format!("/api/v1/rule-checks/{}", company["id"].as_str().unwrap())).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    // Another server sharing the database (its schema read just now, so its cache lifetime of
    // `schema_ttl_secs` is far off) applies the rule once it has read the store's cache epoch.
    let master = MasterKey::from_hex(&app.master_hex).unwrap();
    let keyring = load_keyring(app.store.as_ref(), &master).await.unwrap();
    let config = ServiceConfig { schema_ttl_secs: 3600, ..ServiceConfig::default() };
    let other = Service::new(app.store.clone(), keyring, config).await.unwrap();
    let r = app.call(Method::PUT, path, Some(json!({"rules": [{"kind": "allowed_values", "values": ["制造"]}]}))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    tokio::time::sleep(custodian_service::CACHE_EPOCH_POLL + std::time::Duration::from_millis(50)).await;
    let fields = json!({"name": "戊公司", "industry": "金融"});
    let refused = other
        .create_record(&RequestContext::cli(), "companies", fields.as_object().unwrap(), &CreateOptions::default())
        .await;
    let e = refused.expect_err("the other server applies the new rule");
    assert_eq!(e.details[0].code, "not_allowed");
});

both_backends!(unique_scopes_follow_the_rule_and_the_owner, |app: TestApp| async move {
    let rep = user(&app, "rep1", "sales_rep").await;
    let path = "/api/v1/schema/contacts/fields/wechat/rules";
    let r = put_rules(&app, path, json!([{"kind": "unique", "scope": "per_owner"}])).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    finished_check(&app, &r.body["job"]).await;
    // Per owner: the admin cannot hold the value twice; another owner may hold it too.
    let a = app.create("contacts", json!({"name": "甲", "wechat": "wx-001"})).await;
    let r = app.post("/api/v1/contacts", json!({"fields": {"name": "乙", "wechat": "wx-001"}})).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert_eq!(r.code(), "duplicate");
    assert_eq!(r.body["error"]["details"][0]["field"], "wechat");
    assert!(r.body["error"]["details"][0]["message_zh"].is_string());
    let r = as_user(
        &app,
        &rep,
        Method::POST,
        "/api/v1/contacts",
        Some(json!({"fields": {"name": "丙", "wechat": "wx-001"}})),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let theirs = r.body.clone();
    // Deleted records hold nothing; restoring one whose value was taken meanwhile conflicts.
    let r = app.call(Method::DELETE, &format!("/api/v1/contacts/{}", id_of(&a)), None).await;
    assert_eq!(r.status, StatusCode::OK);
    let b = app.create("contacts", json!({"name": "乙", "wechat": "wx-001"})).await;
    let r = app.post(&format!("/api/v1/contacts/{}/restore", id_of(&a)), json!({})).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert_eq!(r.code(), "duplicate");

    // Global scope: the re-check reports the records that now share a value, and the database
    // enforces the new scope from then on.
    let r = put_rules(&app, path, json!([{"kind": "unique", "scope": "global"}])).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let check = finished_check(&app, &r.body["job"]).await;
    let mut dup: Vec<&str> = check["violators"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["code"] == "duplicate")
        .map(|v| v["record_id"].as_str().unwrap())
        .collect();
    dup.sort();
    let mut want = vec![b["id"].as_str().unwrap(), theirs["id"].as_str().unwrap()];
    want.sort();
    assert_eq!(dup, want, "{check}");
    // A sales rep sees only the violators inside their own scope.
    let r = as_user(
        &app,
        &rep,
        Method::GET,
        &format!("/api/v1/rule-checks/{}", r.body["job"]["id"].as_str().unwrap()),
        None,
    )
    .await;
    let theirs_only = r.body["violators"].as_array().unwrap();
    assert!(!theirs_only.is_empty());
    for v in theirs_only {
        assert_eq!(v["record_id"], theirs["id"], "only the rep's own record: {}", r.body);
    }
    let r = as_user(
        &app,
        &rep,
        Method::POST,
        "/api/v1/contacts",
        Some(json!({"fields": {"name": "丁", "wechat": "wx-002"}})),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let r = app.post("/api/v1/contacts", json!({"fields": {"name": "戊", "wechat": "wx-002"}})).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert_eq!(r.code(), "duplicate");
});

both_backends!(a_failing_uscc_checksum_is_a_warning_stewards_override_with_a_reason, |app: TestApp| async move {
    let bad = "91110108551385082A"; // valid charset and shape, wrong check character
    let r = app.post("/api/v1/companies", json!({"fields": {"name": "甲公司", "uscc": bad}})).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert_eq!(r.body["error"]["details"][0]["code"], "uscc_checksum");
    // An empty reason is refused.
    let r = app
        .post(
            "/api/v1/companies",
            json!({"fields": {"name": "甲公司", "uscc": bad}, "override": {"uscc": {"reason": " "}}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    // Others get the 422 even with a reason.
    let rep = user(&app, "rep1", "sales_rep").await;
    let body =
        json!({"fields": {"name": "甲公司", "uscc": bad}, "override": {"uscc": {"reason": "营业执照上就是这个号码"}}});
    let r = as_user(&app, &rep, Method::POST, "/api/v1/companies", Some(body.clone())).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert_eq!(r.body["error"]["details"][0]["code"], "uscc_checksum");
    // A data steward saves it; the reason is audited with the write.
    let steward = user(&app, "steward1", "data_steward").await;
    let r = as_user(&app, &steward, Method::POST, "/api/v1/companies", Some(body)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["fields"]["uscc"], bad);
    let created = events(&app, "record.create").await;
    let (_, event) = created.iter().find(|(e, _)| e.record_id.map(|u| u.to_string()) == Some(id_of(&r.body))).unwrap();
    assert_eq!(event["details"]["override"]["uscc"]["reason"], "营业执照上就是这个号码");
    // Later writes that keep the value need no override; a restore does not either.
    let id = id_of(&r.body);
    let r =
        app.call(Method::PATCH, &format!("/api/v1/companies/{id}"), Some(json!({"fields": {"city": "北京"}}))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(app.call(Method::DELETE, &format!("/api/v1/companies/{id}"), None).await.status, StatusCode::OK);
    let r = app.post(&format!("/api/v1/companies/{id}/restore"), json!({})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    // An unknown override is malformed.
    let r =
        app.post("/api/v1/companies", json!({"fields": {"name": "乙"}, "override": {"phone": {"reason": "x"}}})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
});

/// The state a refused write must leave untouched: every company with its version and
/// deletion, and the number of audit events that are record writes.
async fn snapshot(app: &TestApp) -> (Vec<(uuid::Uuid, i64, Option<i64>)>, usize) {
    let mut q = ListQuery::new("companies");
    q.deleted = DeletedFilter::All;
    q.limit = 1000;
    let records =
        app.store.list_records(&q).await.unwrap().items.into_iter().map(|r| (r.id, r.version, r.deleted_at)).collect();
    let writes = app
        .store
        .list_audit(0, 1_000_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| {
            e.action.starts_with("record.")
                && !matches!(e.action.as_str(), "record.view" | "record.list" | "record.history")
        })
        .count();
    (records, writes)
}

both_backends!(no_write_path_skips_the_rule_engine, |app: TestApp| async move {
    // Records written before the rule: each path below would bring back or write a value the
    // new rule refuses.
    let deleted = app.create("companies", json!({"name": "已删除", "industry": "零售"})).await;
    assert_eq!(
        app.call(Method::DELETE, &format!("/api/v1/companies/{}", id_of(&deleted)), None).await.status,
        StatusCode::OK
    );
    let reverted = app.create("companies", json!({"name": "改过", "industry": "零售"})).await;
    let r = app
        .call(
            Method::PATCH,
            &format!("/api/v1/companies/{}", id_of(&reverted)),
            Some(json!({"fields": {"industry": "金融"}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let survivor = app.create("companies", json!({"name": "保留", "industry": "金融"})).await;
    let loser = app.create("companies", json!({"name": "合并", "industry": "零售"})).await;
    let r = put_rules(
        &app,
        "/api/v1/schema/companies/fields/industry/rules",
        json!([{"kind": "allowed_values", "values": ["金融", "制造"]}]),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    finished_check(&app, &r.body["job"]).await;
    let before = snapshot(&app).await;
    let refused = |r: &common::Reply, what: &str| {
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{what}: {}", r.body);
        assert!(
            r.body["error"]["details"]
                .as_array()
                .unwrap()
                .iter()
                .any(|d| d["field"] == "industry" && d["code"] == "not_allowed"),
            "{what}: {}",
            r.body
        );
    };
    // API create, update, restore, revert, merge.
    refused(&app.post("/api/v1/companies", json!({"fields": {"name": "新", "industry": "零售"}})).await, "create");
    refused(
        &app.call(
            Method::PATCH,
            &format!("/api/v1/companies/{}", id_of(&survivor)),
            Some(json!({"fields": {"industry": "零售"}})),
        )
        .await,
        "update",
    );
    refused(&app.post(&format!("/api/v1/companies/{}/restore", id_of(&deleted)), json!({})).await, "restore");
    refused(
        &app.post(&format!("/api/v1/companies/{}/revert", id_of(&reverted)), json!({"to_version": 1})).await,
        "revert",
    );
    let merge = json!({"object": "companies", "survivor_id": id_of(&survivor), "loser_ids": [id_of(&loser)], "fields": {"industry": id_of(&loser)}});
    // Merging needs a step-up; with it, the rule still refuses.
    app.admin_step_up().await;
    refused(&app.post("/api/v1/merges", merge).await, "merge");
    // The batch path of the demo loader, the importer and the CLI (prepare + apply, with the
    // CLI's context).
    let ctx = RequestContext::cli();
    let bad = json!({"name": "批量", "industry": "零售"});
    let e = app
        .service
        .prepare_create(&ctx, "companies", bad.as_object().unwrap(), &CreateOptions::default())
        .await
        .err()
        .expect("refused");
    assert!(e.details.iter().any(|d| d.field == "industry" && d.code == "not_allowed"), "{e:?}");
    assert_eq!(snapshot(&app).await, before, "a refused write changed something");
    // The same paths pass once the values follow the rule.
    let good = json!({"name": "批量", "industry": "制造"});
    let (_, prepared) = app
        .service
        .prepare_create(&ctx, "companies", good.as_object().unwrap(), &CreateOptions::default())
        .await
        .unwrap();
    app.service.apply_prepared(vec![prepared]).await.unwrap();
    let r = app
        .post(
            "/api/v1/merges",
            json!({"object": "companies", "survivor_id": id_of(&survivor), "loser_ids": [id_of(&loser)]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
});

both_backends!(a_backfill_gives_old_records_their_match_keys, |app: TestApp| async move {
    let fields = json!({"name": "张伟", "birth_date": "1985-03-07", "email": "zhang.wei@example.com", "address": "杭州市西湖区文三路 90 号"});
    let old = app.create("contacts", fields).await;
    let old_id: uuid::Uuid = id_of(&old).parse().unwrap();
    // Make it a record from before the duplicate work: no match keys (through a job, the only
    // writer of keys outside a record's own write).
    let mut job = custodian_store_tests::job_cases::job_row(custodian_store::JOB_MATCH_KEYS);
    job.object = "contacts".into();
    app.store.create_job(job.clone(), custodian_store::AuditDraft::new("test")).await.unwrap();
    let claimed = app.store.claim_job("test", custodian_store::now_micros(), 60_000_000).await.unwrap().unwrap();
    assert_eq!(claimed.id, job.id);
    let version =
        app.store.get_record("contacts", old_id, &custodian_store::RowScope::All).await.unwrap().unwrap().version;
    let wipe = custodian_store::JobProgress {
        id: job.id,
        claimant: "test".into(),
        now: custodian_store::now_micros(),
        lease_until: custodian_store::now_micros(),
        cursor: None,
        scanned: 0,
        violations: Vec::new(),
        refresh: vec![custodian_store::KeyRefresh {
            object: "contacts".into(),
            record_id: old_id,
            version,
            match_keys: Some(Vec::new()),
            unique_key: None,
            envelopes: Vec::new(),
        }],
        finish: Some(("done".into(), None)),
    };
    assert!(app.store.save_job_progress(wipe).await.unwrap());
    // The check at entry cannot see it: a near-duplicate goes through.
    let similar = json!({"name": "張偉", "birth_date": "1985-03-07", "address": "杭州市西湖区文三路90号"});
    let r = app.post("/api/v1/contacts", json!({"fields": similar})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(
        app.call(Method::DELETE, &format!("/api/v1/contacts/{}", id_of(&r.body)), None).await.status,
        StatusCode::OK
    );
    // Only stewards and admins start a backfill.
    let rep = user(&app, "rep1", "sales_rep").await;
    let r = as_user(&app, &rep, Method::POST, "/api/v1/duplicates/backfill", Some(json!({"object": "contacts"}))).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = app.post("/api/v1/duplicates/backfill", json!({"object": "activities"})).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let r = app.post("/api/v1/duplicates/backfill", json!({"object": "contacts"})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let id = id_of(&r.body);
    let mut done = Value::Null;
    for _ in 0..200 {
        app.service.run_jobs("test").await.unwrap();
        done = app.get(&format!("/api/v1/duplicates/backfill/{id}")).await.body;
        if done["status"] == "done" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(done["status"], "done", "{done}");
    assert_eq!(done["scanned"], 1, "active records only: {done}");
    assert_eq!(done["found"], 1);
    // Now the entry check finds the old record.
    let r = app.post("/api/v1/contacts", json!({"fields": similar})).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert_eq!(r.code(), "possible_duplicate");
    assert_eq!(r.body["error"]["candidates"][0]["id"], old["id"]);
    assert!(!events(&app, "duplicates.backfill").await.is_empty());
});

// A job whose server died mid-way is taken over by another server and resumes from its
// cursor: every record is checked once.
both_backends!(a_rule_check_resumes_on_another_server, |app: TestApp| async move {
    let master = MasterKey::from_hex(&app.master_hex).unwrap();
    let config = ServiceConfig { job_page_size: 2, start_jobs_at_once: false, ..ServiceConfig::default() };
    let mut ids = Vec::new();
    for i in 0..5 {
        let c = app
            .create(
                "companies",
                json!({"name": format!("公司{i}"), "industry": if i % 2 == 0 { "零售" } else { "金融" }}),
            )
            .await;
        ids.push(id_of(&c).parse::<uuid::Uuid>().unwrap());
    }
    ids.sort();
    let keyring = load_keyring(app.store.as_ref(), &master).await.unwrap();
    let first = Arc::new(Service::new(app.store.clone(), keyring, config.clone()).await.unwrap());
    let ctx = RequestContext::cli();
    let rules = json!([{"kind": "allowed_values", "values": ["金融"]}]);
    let view = first.set_field_rules(&ctx, "companies", "industry", &rules, None).await.unwrap();
    let job_id = view.job.unwrap().id;
    // A server claims it, saves its first page (records 0 and 1: one violation) and dies.
    let now = custodian_store::now_micros();
    let claimed = app.store.claim_job("dead-server", now, 1_000).await.unwrap().unwrap();
    assert_eq!(claimed.id, job_id);
    let page = custodian_store::JobProgress {
        id: job_id,
        claimant: "dead-server".into(),
        now,
        lease_until: now + 1_000,
        cursor: Some(ids[1]),
        scanned: 2,
        violations: vec![custodian_store::ViolationRow {
            job_id,
            record_id: ids[0],
            field: "industry".into(),
            code: "not_allowed".into(),
        }],
        refresh: Vec::new(),
        finish: None,
    };
    assert!(app.store.save_job_progress(page).await.unwrap());
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    // Another server takes it over after the lease and goes on from the cursor.
    let keyring = load_keyring(app.store.as_ref(), &master).await.unwrap();
    let second = Service::new(app.store.clone(), keyring, config).await.unwrap();
    assert_eq!(second.run_jobs("second-server").await.unwrap(), 1);
    let job = app.store.get_job(job_id).await.unwrap().unwrap();
    assert_eq!(job.status, "done");
    assert_eq!(job.scanned, 5, "each record once");
    assert_eq!(job.found, 3);
    let listed = app.get(&format!("/api/v1/rule-checks/{job_id}")).await;
    let mut flagged: Vec<String> = listed.body["violators"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["record_id"].as_str().unwrap().to_owned())
        .collect();
    flagged.sort();
    let mut want: Vec<String> = [ids[0], ids[2], ids[4]].iter().map(|u| u.to_string()).collect();
    want.sort();
    // Record ids and creation order agree (time-ordered ids): 0, 2 and 4 are the retail ones.
    let industries: Vec<Value> = {
        let mut v = Vec::new();
        for id in &ids {
            v.push(app.get(&format!("/api/v1/companies/{id}")).await.body["fields"]["industry"].clone());
        }
        v
    };
    assert_eq!(industries, vec![json!("零售"), json!("金融"), json!("零售"), json!("金融"), json!("零售")]);
    assert_eq!(flagged, want);
});

both_backends!(a_new_unique_rule_holds_before_its_check_job_has_run, |app: TestApp| async move {
    // Records written before the rule hold no unique key until the re-check job reaches them;
    // writes in the meantime must still not take their values.
    let master = MasterKey::from_hex(&app.master_hex).unwrap();
    let old = app.create("contacts", json!({"name": "甲", "title": "区域经理", "wechat": "wx-old"})).await;
    // Written before the rule too, with the same title: the re-check will list one of the two.
    app.create("contacts", json!({"name": "甲二", "title": "区域经理"})).await;
    let keyring = load_keyring(app.store.as_ref(), &master).await.unwrap();
    let config = ServiceConfig { start_jobs_at_once: false, ..ServiceConfig::default() };
    let server = Arc::new(Service::new(app.store.clone(), keyring, config).await.unwrap());
    let ctx = RequestContext::cli();
    for field in ["title", "wechat"] {
        let rules = json!([{"kind": "unique"}]);
        server.set_field_rules(&ctx, "contacts", field, &rules, None).await.unwrap();
    }
    let fields = |v: Value| v.as_object().unwrap().clone();
    let options = CreateOptions::default();
    // Not sensitive (title) and sensitive (wechat, through its blind index).
    for body in [json!({"name": "乙", "title": "区域经理"}), json!({"name": "丙", "wechat": "wx-old"})] {
        let e = server.create_record(&ctx, "contacts", &fields(body.clone()), &options).await.unwrap_err();
        assert_eq!(e.code.as_str(), "duplicate", "{body}: {e}");
    }
    // The old record itself may still be edited, and other values are free.
    let id: uuid::Uuid = id_of(&old).parse().unwrap();
    let changes = fields(json!({"name": "甲一"}));
    server.update_record(&ctx, "contacts", id, &changes, &Default::default()).await.unwrap();
    let ok = json!({"name": "丁", "title": "销售总监", "wechat": "wx-new"});
    server.create_record(&ctx, "contacts", &fields(ok), &options).await.unwrap();
    // After the jobs ran, the keys hold the values as before, and the record holding a shared
    // value can still be edited (its value is not new; the re-check lists the other one).
    server.run_jobs("test").await.unwrap();
    let changes = fields(json!({"name": "甲二号"}));
    server.update_record(&ctx, "contacts", id, &changes, &Default::default()).await.unwrap();
    let again = json!({"name": "戊", "title": "销售总监"});
    let e = server.create_record(&ctx, "contacts", &fields(again), &options).await.unwrap_err();
    assert_eq!(e.code.as_str(), "duplicate");
});
