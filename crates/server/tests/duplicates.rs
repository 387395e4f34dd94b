//! Duplicate prevention at entry, the scan and review queue, and reversible merges (PRODUCT.md
//! A3, A5), through the HTTP API on both backends.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::http::{Method, StatusCode};
use common::TestApp;
use common::{as_user, id_of, user};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

both_backends!(exact_duplicates_are_refused_with_the_candidates_the_caller_may_see, |app: TestApp| async move {
    let rep = user(&app, "rep1", "sales_rep").await;
    let manager = user(&app, "manager1", "sales_manager").await;
    let a = app.create("contacts", json!({"name": "张伟", "mobile": "13812345678", "email": "zw@example.com"})).await;

    // The admin sees the candidate, with the fields that matched.
    let r = app.post("/api/v1/contacts", json!({"fields": {"name": "王芳", "mobile": "+86 138-1234-5678"}})).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert_eq!(r.code(), "duplicate");
    let candidates = r.body["error"]["candidates"].as_array().unwrap();
    assert_eq!(candidates.len(), 1);
    assert_eq!(candidates[0]["id"], a["id"]);
    assert_eq!(candidates[0]["matched_on"], json!(["mobile"]));
    assert_eq!(candidates[0]["fields"]["name"], "张伟");
    assert_eq!(r.body["error"]["hidden_candidates"], 0);

    // A rep cannot see the admin's record: it is only counted, nothing about it is shown.
    let r = as_user(
        &app,
        &rep,
        Method::POST,
        "/api/v1/contacts",
        Some(json!({"fields": {"name": "李四", "email": "ZW@example.com"}})),
    )
    .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert_eq!(r.code(), "duplicate");
    assert_eq!(r.body["error"]["candidates"], json!([]));
    assert_eq!(r.body["error"]["hidden_candidates"], 1);
    assert!(!r.body.to_string().contains("张伟"));

    // A manager's own record is shown with the mobile masked, as everywhere for managers.
    let own = as_user(
        &app,
        &manager,
        Method::POST,
        "/api/v1/contacts",
        Some(json!({"fields": {"name": "赵敏", "mobile": "13900001111"}})),
    )
    .await;
    assert_eq!(own.status, StatusCode::CREATED, "{}", own.body);
    let r = as_user(
        &app,
        &manager,
        Method::POST,
        "/api/v1/contacts",
        Some(json!({"fields": {"name": "钱多多", "mobile": "139 0000 1111"}})),
    )
    .await;
    assert_eq!(r.code(), "duplicate", "{}", r.body);
    let c = &r.body["error"]["candidates"][0];
    assert_eq!(c["id"], own.body["id"]);
    assert_eq!(c["fields"]["mobile"], "139****1111");
    assert_eq!(c["masked_fields"], json!(["mobile"]));
    assert!(!r.body.to_string().contains("13900001111"));

    // Updates are checked too, and confirm_not_duplicate cannot override an exact duplicate.
    let b = app.create("contacts", json!({"name": "孙悦", "mobile": "13700000000"})).await;
    let path = format!("/api/v1/contacts/{}", id_of(&b));
    let r = app.call(Method::PATCH, &path, Some(json!({"fields": {"mobile": "13812345678"}, "confirm_not_duplicate": {"reason": "same phone, other person"}}))).await;
    assert_eq!(r.code(), "duplicate", "{}", r.body);
    // Changing other fields of a record is not blocked by its own values.
    let r = app.call(Method::PATCH, &path, Some(json!({"fields": {"title": "经理"}}))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);

    // A deleted record is no longer a duplicate.
    let r = app.call(Method::DELETE, &format!("/api/v1/contacts/{}", id_of(&a)), None).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = app.call(Method::PATCH, &path, Some(json!({"fields": {"mobile": "13812345678"}}))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    // Nor can it come back while another record holds its mobile: restoring is refused with
    // the candidate, and the record stays deleted; once the other lets go, it comes back.
    let restore = format!("/api/v1/contacts/{}/restore", id_of(&a));
    let r = app.post(&restore, json!({})).await;
    assert_eq!(r.code(), "duplicate", "{}", r.body);
    assert_eq!(r.body["error"]["candidates"][0]["id"], b["id"], "{}", r.body);
    let r = app.get(&format!("/api/v1/contacts/{}", id_of(&a))).await;
    assert!(r.body["deleted_at"].is_string(), "still deleted: {}", r.body);
    let r = app.call(Method::PATCH, &path, Some(json!({"fields": {"mobile": "13700000001"}}))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = app.post(&restore, json!({})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = app.call(Method::PATCH, &path, Some(json!({"fields": {"mobile": "13812345678"}}))).await;
    assert_eq!(r.code(), "duplicate", "the restored record holds its mobile again: {}", r.body);
    let r = app.call(Method::DELETE, &format!("/api/v1/contacts/{}", id_of(&a)), None).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = app.call(Method::PATCH, &path, Some(json!({"fields": {"mobile": "13812345678"}}))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);

    // Strong keys of the other objects: USCC (unique), contract number, lead e-mail.
    let c1 = app.create("companies", json!({"name": "杭州云图信息科技有限公司", "uscc": "9144030071526726XG"})).await;
    let r =
        app.post("/api/v1/companies", json!({"fields": {"name": "另一家公司", "uscc": "9144030071526726XG"}})).await;
    assert_eq!(r.code(), "duplicate");
    assert_eq!(r.body["error"]["candidates"][0]["id"], c1["id"]);
    assert_eq!(r.body["error"]["candidates"][0]["matched_on"], json!(["uscc"]));
    app.create("deals", json!({"name": "年度框架", "company_id": id_of(&c1), "contract_no": "HT-2026-0001"})).await;
    let r = app
        .post(
            "/api/v1/deals",
            json!({"fields": {"name": "续约", "company_id": id_of(&c1), "contract_no": "HT-2026-0001"}}),
        )
        .await;
    assert_eq!(r.code(), "duplicate");
    app.create("leads", json!({"name": "Emily Carter", "email": "emily@example.com"})).await;
    let r = app.post("/api/v1/leads", json!({"fields": {"name": "E. Carter", "email": "Emily@Example.com"}})).await;
    assert_eq!(r.code(), "duplicate");

    // Reverting to old values is checked as well.
    let r = app.post("/api/v1/contacts", json!({"fields": {"name": "周舟", "mobile": "15011112222"}})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let zhou = format!("/api/v1/contacts/{}", id_of(&r.body));
    let r = app.call(Method::PATCH, &zhou, Some(json!({"fields": {"mobile": "15033334444"}}))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    app.create("contacts", json!({"name": "吴越", "mobile": "15011112222"})).await;
    let r = app.post(&format!("{zhou}/revert"), json!({"to_version": 1})).await;
    assert_eq!(r.code(), "duplicate", "{}", r.body);

    // Showing candidates is an audited read.
    let events = app.store.list_audit(0, 100_000).await.unwrap();
    assert!(events.iter().any(|e| e.action == "record.list" && e.body.contains("duplicate_check")));
});

both_backends!(concurrent_creates_of_one_strong_key_admit_one, |app: TestApp| async move {
    // Every request passes its duplicate check before any of them commits; the store's check at
    // commit must still let only one through, for creates and for updates alike.
    for (round, mobile) in ["13512340000", "13512340001"].into_iter().enumerate() {
        let calls = (0..10).map(|i| {
            let body = json!({"fields": {"name": format!("并发{round}-{i}号"), "mobile": mobile}});
            app.post("/api/v1/contacts", body)
        });
        let replies = futures::future::join_all(calls).await;
        let created: Vec<_> = replies.iter().filter(|r| r.status == StatusCode::CREATED).collect();
        assert_eq!(created.len(), 1, "{:?}", replies.iter().map(|r| r.body.to_string()).collect::<Vec<_>>());
        for r in replies.iter().filter(|r| r.status != StatusCode::CREATED) {
            // Refused by its own check (exact, or — once the winner is stored — also fuzzy, the
            // names being alike) or by the store's check at commit.
            assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
            assert!(["duplicate", "possible_duplicate"].contains(&r.code()), "{}", r.body);
        }
        let found = app.get(&format!("/api/v1/contacts?mobile={mobile}")).await;
        assert_eq!(found.body["items"].as_array().unwrap().len(), 1, "{}", found.body);
    }
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(id_of(
            &app.create("contacts", json!({"name": format!("更新{i}"), "email": format!("u{i}@example.com")})).await,
        ));
    }
    let paths: Vec<String> = ids.iter().map(|id| format!("/api/v1/contacts/{id}")).collect();
    let calls =
        paths.iter().map(|path| app.call(Method::PATCH, path, Some(json!({"fields": {"email": "same@example.com"}}))));
    let replies = futures::future::join_all(calls).await;
    assert_eq!(replies.iter().filter(|r| r.status == StatusCode::OK).count(), 1);
    for r in replies.iter().filter(|r| r.status != StatusCode::OK) {
        assert!(["duplicate", "possible_duplicate"].contains(&r.code()), "{}", r.body);
    }
    let found = app.get("/api/v1/contacts?email=same@example.com").await;
    assert_eq!(found.body["items"].as_array().unwrap().len(), 1, "{}", found.body);
});

both_backends!(concurrent_creates_of_one_person_without_strong_keys_admit_one, |app: TestApp| async move {
    // No mobile, e-mail or ID: only the fuzzy check can tell these apart, and every request
    // passes it before any of them commits. The store re-checks at commit what each check
    // could not see, so one is created and the others are refused as possible duplicates.
    for (round, (name, address)) in
        [("欧阳晓明", "杭州市西湖区文三路 90 号"), ("司马静怡", "北京市海淀区中关村大街 27 号")].into_iter().enumerate()
    {
        let calls = (0..10).map(|_| {
            let body = json!({"fields": {"name": name, "birth_date": "1985-03-07", "address": address}});
            app.post("/api/v1/contacts", body)
        });
        let replies = futures::future::join_all(calls).await;
        let created: Vec<_> = replies.iter().filter(|r| r.status == StatusCode::CREATED).collect();
        assert_eq!(
            created.len(),
            1,
            "round {round}: {:?}",
            replies.iter().map(|r| r.body.to_string()).collect::<Vec<_>>()
        );
        for r in replies.iter().filter(|r| r.status != StatusCode::CREATED) {
            assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
            assert_eq!(r.code(), "possible_duplicate", "{}", r.body);
            assert_eq!(r.body["error"]["candidates"][0]["id"], created[0].body["id"], "{}", r.body);
        }
        let found = app.get(&format!("/api/v1/contacts?name={name}")).await;
        assert_eq!(found.body["items"].as_array().unwrap().len(), 1, "{}", found.body);
    }
    // People who merely share a name are still created side by side.
    let calls = (0..6).map(|i| {
        let body = json!({"fields": {"name": "上官婉儿", "email": format!("wan{i}@example.com"), "birth_date": format!("199{i}-0{}-1{i}", i + 1)}});
        app.post("/api/v1/contacts", body)
    });
    let replies = futures::future::join_all(calls).await;
    assert!(
        replies.iter().all(|r| r.status == StatusCode::CREATED),
        "{:?}",
        replies.iter().map(|r| r.body.to_string()).collect::<Vec<_>>()
    );
});

both_backends!(concurrent_creates_are_prepared_together_each_as_its_own_caller, |app: TestApp| async move {
    // Single creates that arrive at once are validated and checked as one group: each must
    // still be answered as its own caller's create (access, rules, owner, which candidates of
    // a refusal it may see), whatever else is in its group.
    let rep = user(&app, "rep_grouped", "sales_rep").await;
    let auditor = user(&app, "auditor_grouped", "auditor").await;
    let (groups_before, creates_before) = app.service.create_groups_prepared();
    // Four rounds of people who share nothing with one another.
    let stored_people = [
        ("欧阳娜娜", "13912345678", "ouyang@example.com"),
        ("Samuel Whitfield", "15887654321", "s.whitfield@corp.cn"),
        ("诸葛明远", "18611223344", "zhuge@shu.cn"),
        ("Priya Raman", "17755667788", "priya.r@tang.cn"),
    ];
    let new_people = [
        ("司马光", "13701020304", "Harriet Osei", "harriet@osei.org"),
        ("Tobias Brenner", "15100998877", "上官飞燕", "feiyan@shangguan.cn"),
        ("慕容雪", "18955443322", "Ignacio Ferreyra", "ignacio@ferreyra.ar"),
        ("Olga Petrova", "13366778899", "东方朔", "dongfang@han.cn"),
    ];
    for (round, ((stored_name, mobile, email), (rep_name, rep_mobile, admin_name, admin_email))) in
        stored_people.into_iter().zip(new_people).enumerate()
    {
        let stored = app.create("contacts", json!({"name": stored_name, "mobile": mobile, "email": email})).await;
        let app = &app;
        let post = |token: Option<&str>, fields: Value| {
            let body = json!({ "fields": fields }).to_string().into_bytes();
            let token = token.unwrap_or(&app.token).to_owned();
            async move { app.raw(Method::POST, "/api/v1/contacts", Some(&token), Some(body), &[]).await }
        };
        let replies = futures::future::join_all([
            // The admin's look-alike: refused, the stored record shown.
            post(None, json!({"name": "管理员录入", "mobile": mobile})),
            // The rep's look-alike: refused, the admin's record only counted.
            post(Some(&rep), json!({"name": "代表录入", "email": email})),
            // The rep's new contact: theirs (a rep sees only their own records: created for anyone
            // else, it would be answered not_found).
            post(Some(&rep), json!({"name": rep_name, "mobile": rep_mobile})),
            // The admin's new contact.
            post(None, json!({"name": admin_name, "email": admin_email})),
            // The rep's invalid contact: refused by the rules alone.
            post(Some(&rep), json!({"name": "无效号码", "mobile": "12345"})),
            // An auditor may not create at all.
            post(Some(&auditor), json!({"name": "审计录入"})),
        ])
        .await;
        let codes: Vec<(StatusCode, &str)> = replies.iter().map(|r| (r.status, r.code())).collect();
        assert_eq!(
            codes,
            vec![
                (StatusCode::CONFLICT, "duplicate"),
                (StatusCode::CONFLICT, "duplicate"),
                (StatusCode::CREATED, ""),
                (StatusCode::CREATED, ""),
                (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
                (StatusCode::FORBIDDEN, "forbidden"),
            ],
            "round {round}: {:?}",
            replies.iter().map(|r| r.body.to_string()).collect::<Vec<_>>()
        );
        assert_eq!(replies[0].body["error"]["candidates"][0]["id"], stored["id"], "{}", replies[0].body);
        assert_eq!(replies[1].body["error"]["candidates"], json!([]), "{}", replies[1].body);
        assert_eq!(replies[1].body["error"]["hidden_candidates"], 1, "{}", replies[1].body);
        let theirs =
            as_user(app, &rep, Method::GET, &format!("/api/v1/contacts/{}", id_of(&replies[2].body)), None).await;
        assert_eq!(theirs.status, StatusCode::OK, "{}", theirs.body);
        let not_theirs =
            as_user(app, &rep, Method::GET, &format!("/api/v1/contacts/{}", id_of(&replies[3].body)), None).await;
        assert_eq!(not_theirs.status, StatusCode::NOT_FOUND, "{}", not_theirs.body);
    }
    // The creates of a round did meet in groups (else this test proved nothing about them).
    let (groups, creates) = app.service.create_groups_prepared();
    let (groups, creates) = (groups - groups_before, creates - creates_before);
    assert!(creates > groups, "{creates} creates in {groups} groups");
});

both_backends!(possible_duplicates_need_a_confirmation_with_a_reason, |app: TestApp| async move {
    let a = app
        .create("contacts", json!({"name": "张伟", "birth_date": "1985-03-07", "email": "zhang.wei@example.com", "address": "杭州市西湖区文三路 90 号"}))
        .await;
    // Traditional characters, same birth date and address: the engine says "probably the same".
    let fields = json!({"name": "張偉", "birth_date": "1985-03-07", "address": "杭州市西湖区文三路90号"});
    let r = app.post("/api/v1/contacts", json!({"fields": fields})).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert_eq!(r.code(), "possible_duplicate");
    let c = &r.body["error"]["candidates"][0];
    assert_eq!(c["id"], a["id"]);
    assert!(c["score"].as_f64().unwrap() >= 0.8, "{c}");
    assert!(c["matched_on"].as_array().unwrap().iter().any(|m| m.as_str().unwrap().starts_with("name:")), "{c}");

    // A reason is required.
    let r = app.post("/api/v1/contacts", json!({"fields": fields, "confirm_not_duplicate": {"reason": "  "}})).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    let r = app.post("/api/v1/contacts", json!({"fields": fields, "confirm_not_duplicate": {}})).await;
    assert!(r.status.is_client_error(), "{}", r.body);
    let r = app
        .post(
            "/api/v1/contacts",
            json!({"fields": fields, "confirm_not_duplicate": {"reason": "同名同生日的另一位客户，已电话确认"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let created = id_of(&r.body);
    let events = app.store.list_audit(0, 100_000).await.unwrap();
    let create = events
        .iter()
        .find(|e| e.action == "record.create" && e.record_id.map(|u| u.to_string()) == Some(created.clone()))
        .unwrap();
    assert!(create.body.contains("同名同生日的另一位客户"), "{}", create.body);
    assert!(create.body.contains(&id_of(&a)), "{}", create.body);

    // Clearly different people with a common name are not proposed.
    let r = app.post("/api/v1/contacts", json!({"fields": {"name": "张伟", "birth_date": "1990-11-02", "email": "wei.z@163.com", "mobile": "13611112222"}})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let r = app.post("/api/v1/contacts", json!({"fields": {"name": "王小明", "birth_date": "1985-03-07"}})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);

    // Updates that make a record look like another one are checked as well.
    let other = app.create("contacts", json!({"name": "刘洋", "address": "北京市海淀区中关村大街 1 号"})).await;
    let path = format!("/api/v1/contacts/{}", id_of(&other));
    let r = app
        .call(
            Method::PATCH,
            &path,
            Some(
                json!({"fields": {"name": "张伟", "birth_date": "1985-03-07", "address": "杭州市西湖区文三路 90 号"}}),
            ),
        )
        .await;
    assert_eq!(r.code(), "possible_duplicate", "{}", r.body);
});

// An English familiar form of the given name is the same name at entry: Beth Johnson is
// checked against the stored Elizabeth Johnson like a typo of her name would be.
both_backends!(a_familiar_form_of_a_name_is_checked_like_the_name, |app: TestApp| async move {
    let a = app
        .create(
            "contacts",
            json!({"name": "Elizabeth Johnson", "birth_date": "1979-06-21", "address": "上海市徐汇区漕溪北路 88 号"}),
        )
        .await;
    let fields = json!({"name": "Johnson, Beth", "birth_date": "1979-06-21", "address": "上海市徐汇区漕溪北路88号"});
    let r = app.post("/api/v1/contacts", json!({"fields": fields})).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert_eq!(r.code(), "possible_duplicate", "{}", r.body);
    let c = &r.body["error"]["candidates"][0];
    assert_eq!(c["id"], a["id"], "{c}");
    assert!(c["matched_on"].as_array().unwrap().iter().any(|m| m == "name:close"), "{c}");
});

// The check at entry keeps stored candidates' prepared values by record version: a candidate
// changed since it was last scored is scored as it is now.
both_backends!(a_changed_candidate_is_scored_as_it_is_now, |app: TestApp| async move {
    let a = create_zhang_wei(&app).await;
    let fields = json!({"name": "張偉", "birth_date": "1985-03-07", "address": "杭州市西湖区文三路90号"});
    let r = app.post("/api/v1/contacts", json!({"fields": fields})).await;
    assert_eq!(r.code(), "possible_duplicate", "{}", r.body);

    // Same name (still a candidate), another birth date and address: no longer alike.
    let path = format!("/api/v1/contacts/{}", id_of(&a));
    let changed = json!({"fields": {"birth_date": "1962-11-30", "address": "广州市天河区珠江东路 1 号"}, "version": 1});
    let r = app.call(Method::PATCH, &path, Some(changed)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = app.post("/api/v1/contacts", json!({"fields": fields})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);

    // And alike again after a change back: the new record is now the first candidate's twin.
    let back = json!({"fields": {"birth_date": "1985-03-07", "address": "杭州市西湖区文三路 90 号"}, "version": 2});
    let r = app.call(Method::PATCH, &path, Some(back)).await;
    assert_eq!(r.code(), "possible_duplicate", "{}", r.body);
});

/// Everything a merge touches, as the admin sees it: fields, owner, team, deleted flag.
async fn snapshot(app: &TestApp, records: &[(&str, &str)]) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for (object, id) in records {
        let r = app.get(&format!("/api/v1/{object}/{id}")).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        out.insert(
            format!("{object}/{id}"),
            json!({
                "fields": r.body["fields"],
                "owner_id": r.body["owner_id"],
                "team_id": r.body["team_id"],
                "deleted": r.body["deleted_at"].is_string(),
            }),
        );
    }
    out
}

both_backends!(merge_reparents_and_undo_restores_the_exact_state, |app: TestApp| async move {
    let steward = user(&app, "steward1", "data_steward").await;
    let rep = user(&app, "rep2", "sales_rep").await;
    let survivor = app
        .create("companies", json!({"name": "杭州云图信息科技有限公司", "uscc": "9144030071526726XG", "city": "杭州"}))
        .await;
    let r = app
        .post(
            "/api/v1/companies",
            json!({"fields": {"name": "云图信息科技(杭州)有限公司", "uscc": "91110108551385082Q", "phone": "0571-88886666", "website": "https://yuntu.example.com"},
                   "confirm_not_duplicate": {"reason": "checked later by the steward"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let loser = r.body;
    let (s, l) = (id_of(&survivor), id_of(&loser));
    let contact = app.create("contacts", json!({"name": "陈晨", "company_id": l, "mobile": "13512345678"})).await;
    let deal = app.create("deals", json!({"name": "云平台采购", "company_id": l, "contact_id": id_of(&contact), "contract_no": "YT-2026-0042"})).await;
    let activity = app
        .create(
            "activities",
            json!({"subject": "拜访", "kind": "visit", "related_object": "companies", "related_id": l}),
        )
        .await;
    let untouched = app
        .create(
            "activities",
            json!({"subject": "电话", "kind": "call", "related_object": "contacts", "related_id": id_of(&contact)}),
        )
        .await;
    let records = [
        ("companies", s.as_str()),
        ("companies", l.as_str()),
        ("contacts", &id_of(&contact)),
        ("deals", &id_of(&deal)),
        ("activities", &id_of(&activity)),
        ("activities", &id_of(&untouched)),
    ];
    let records: Vec<(&str, &str)> = records.iter().map(|(o, i)| (*o, *i)).collect();
    let before = snapshot(&app, &records).await;

    let body = json!({"object": "companies", "survivor_id": s, "loser_ids": [l], "fields": {"phone": l, "uscc": s, "name": s}, "rule": "newest"});
    // Reps may not merge.
    let r = as_user(&app, &rep, Method::POST, "/api/v1/merges", Some(body.clone())).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    // A merge needs a fresh second factor, even from a steward.
    let r = as_user(&app, &steward, Method::POST, "/api/v1/merges", Some(body.clone())).await;
    assert_eq!((r.status, r.code()), (StatusCode::PRECONDITION_REQUIRED, "step_up_required"), "{}", r.body);
    assert_eq!(snapshot(&app, &records).await, before);
    let r = app.step_up(&steward, "steward1").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    // Bad requests change nothing.
    for bad in [
        json!({"object": "companies", "survivor_id": s, "loser_ids": [s]}),
        json!({"object": "companies", "survivor_id": s, "loser_ids": []}),
        json!({"object": "companies", "survivor_id": s, "loser_ids": [l], "rule": "oldest"}),
        json!({"object": "companies", "survivor_id": s, "loser_ids": [l], "fields": {"phone": id_of(&contact)}}),
        json!({"object": "companies", "survivor_id": s, "loser_ids": [l], "fields": {"nope": l}}),
    ] {
        let r = as_user(&app, &steward, Method::POST, "/api/v1/merges", Some(bad.clone())).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {}", r.body);
    }
    assert_eq!(snapshot(&app, &records).await, before);

    let r = as_user(&app, &steward, Method::POST, "/api/v1/merges", Some(body)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let merge_id = id_of(&r.body);
    assert_eq!(r.body["records"].as_array().unwrap().len(), 5, "{}", r.body);

    // The survivor has the chosen values, the loser is a tombstone, relations point at the survivor.
    let sv = app.get(&format!("/api/v1/companies/{s}")).await.body;
    assert_eq!(sv["fields"]["phone"], loser["fields"]["phone"]);
    assert_eq!(sv["fields"]["uscc"], "9144030071526726XG");
    assert_eq!(sv["fields"]["website"], loser["fields"]["website"]);
    assert_eq!(sv["fields"]["city"], "杭州");
    assert_eq!(sv["fields"]["name"], "杭州云图信息科技有限公司");
    let tombstone = app.get(&format!("/api/v1/companies/{l}")).await.body;
    assert!(tombstone["deleted_at"].is_string());
    assert_eq!(tombstone["merged_into"], s.as_str());
    assert_eq!(
        app.get(&format!("/api/v1/contacts/{}", id_of(&contact))).await.body["fields"]["company_id"],
        s.as_str()
    );
    let d = app.get(&format!("/api/v1/deals/{}", id_of(&deal))).await.body;
    assert_eq!(d["fields"]["company_id"], s.as_str());
    assert_eq!(d["fields"]["contact_id"], id_of(&contact).as_str());
    assert_eq!(
        app.get(&format!("/api/v1/activities/{}", id_of(&activity))).await.body["fields"]["related_id"],
        s.as_str()
    );
    assert_eq!(
        app.get(&format!("/api/v1/activities/{}", id_of(&untouched))).await.body["fields"]["related_id"],
        id_of(&contact).as_str()
    );
    let m = as_user(&app, &steward, Method::GET, &format!("/api/v1/merges/{merge_id}"), None).await;
    assert_eq!(m.status, StatusCode::OK);
    assert_eq!(m.body["loser_ids"], json!([l]));
    assert!(m.body["undone_at"].is_null());

    // The loser's unique USCC is free now: another company takes it, and undo then conflicts.
    let taker = app.create("companies", json!({"name": "抢注公司", "uscc": "91110108551385082Q"})).await;
    let r = as_user(&app, &steward, Method::POST, &format!("/api/v1/merges/{merge_id}/undo"), None).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert_eq!(r.code(), "duplicate");
    let r = app.call(Method::DELETE, &format!("/api/v1/companies/{}", id_of(&taker)), None).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = as_user(&app, &rep, Method::POST, &format!("/api/v1/merges/{merge_id}/undo"), None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    let r = as_user(&app, &steward, Method::POST, &format!("/api/v1/merges/{merge_id}/undo"), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.body["undone_at"].is_string());
    assert_eq!(snapshot(&app, &records).await, before);
    assert!(app.get(&format!("/api/v1/companies/{l}")).await.body.get("merged_into").is_none());
    // Unique keys are back with their holder.
    let r = app.post("/api/v1/companies", json!({"fields": {"name": "又一家", "uscc": "91110108551385082Q"}})).await;
    assert_eq!(r.code(), "duplicate", "{}", r.body);
    assert_eq!(r.body["error"]["candidates"][0]["id"], l.as_str());
    // Undo is once.
    let r = as_user(&app, &steward, Method::POST, &format!("/api/v1/merges/{merge_id}/undo"), None).await;
    assert_eq!(r.status, StatusCode::CONFLICT);

    // A record changed after a merge makes its undo refuse rather than overwrite the change.
    let r = as_user(
        &app,
        &steward,
        Method::POST,
        "/api/v1/merges",
        Some(json!({"object": "companies", "survivor_id": s, "loser_ids": [l], "rule": "most_complete"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let second = id_of(&r.body);
    let r = app
        .call(
            Method::PATCH,
            &format!("/api/v1/contacts/{}", id_of(&contact)),
            Some(json!({"fields": {"title": "CTO"}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = as_user(&app, &steward, Method::POST, &format!("/api/v1/merges/{second}/undo"), None).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert_eq!(r.code(), "conflict");
    assert_eq!(r.body["error"]["changed"][0]["id"], id_of(&contact).as_str());

    let events = app.store.list_audit(0, 100_000).await.unwrap();
    assert_eq!(events.iter().filter(|e| e.action == "record.merge").count(), 2);
    assert_eq!(events.iter().filter(|e| e.action == "record.unmerge").count(), 1);
});

/// Stores 张伟 of Hangzhou, whose duplicate `create_traditional_zhang_wei` stores.
async fn create_zhang_wei(app: &TestApp) -> Value {
    app.create("contacts", json!({"name": "张伟", "birth_date": "1985-03-07", "address": "杭州市西湖区文三路 90 号"}))
        .await
}

/// Stores the same 张伟 written in traditional characters (confirmed not a duplicate at entry,
/// as an import would): the pair a scan must propose.
async fn create_traditional_zhang_wei(app: &TestApp) -> Value {
    let r = app
        .post(
            "/api/v1/contacts",
            json!({"fields": {"name": "張偉", "birth_date": "1985-03-07", "address": "杭州市西湖区文三路90号"}, "confirm_not_duplicate": {"reason": "import"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    r.body
}

/// Stores contacts that duplicate nobody (each its own mobile and birth date).
async fn create_strangers(app: &TestApp, names: &[&str]) {
    for (i, name) in names.iter().enumerate() {
        app.create("contacts", json!({"name": name, "mobile": format!("1360000000{i}"), "birth_date": format!("19{}-0{}-1{}", 70 + i, i + 1, i)})).await;
    }
}

/// Starts a contacts scan and waits until it is done.
async fn run_scan(app: &TestApp, token: &str) -> Value {
    run_scan_with(app, token, json!({"object": "contacts"})).await
}

/// Starts a scan with `body` and waits until it is done.
async fn run_scan_with(app: &TestApp, token: &str, body: Value) -> Value {
    let r = as_user(app, token, Method::POST, "/api/v1/duplicates/scan", Some(body)).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let job = id_of(&r.body);
    for _ in 0..600 {
        let r = as_user(app, token, Method::GET, &format!("/api/v1/duplicates/scan/{job}"), None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        match r.body["status"].as_str().unwrap() {
            "running" => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
            "done" => return r.body,
            other => panic!("scan {other}: {}", r.body),
        }
    }
    panic!("the scan did not finish");
}

// A scan reads the stored records page by page, several ranges of ids side by side: with
// pages of two and three readers, a pair stored four pages apart is still compared, and every
// record is read exactly once and put in id order (none lost or read twice between pages or
// ranges, whatever order the pages arrived in).
both_backends!(a_scan_compares_records_across_its_pages, |app: TestApp| async move {
    let mut config = custodian_service::ServiceConfig::default();
    config.duplicates.scan_page = 2;
    config.duplicates.scan_readers = 3;
    let scanned = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&scanned);
    config.duplicates.scan_probe = Some(custodian_service::ScanProbe(Arc::new(move |_, ids, _| {
        seen.lock().unwrap().push(ids.to_vec());
    })));
    let app = app.reconfigure(config).await;
    let steward = user(&app, "steward9", "data_steward").await;
    let a = create_zhang_wei(&app).await;
    create_strangers(&app, &["李娜", "王强", "赵雷", "Emily Carter", "周杰", "吴敏", "Olivia Brown"]).await;
    let b = create_traditional_zhang_wei(&app).await;
    let job = run_scan(&app, &steward).await;
    assert_eq!(job["records"], 9, "{job}");
    let r = as_user(&app, &steward, Method::GET, "/api/v1/duplicates?object=contacts", None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let pairs: Vec<Vec<&str>> = r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["records"].as_array().unwrap().iter().map(|x| x["id"].as_str().unwrap()).collect())
        .collect();
    let (ia, ib) = (id_of(&a), id_of(&b));
    assert!(pairs.iter().any(|p| p.contains(&ia.as_str()) && p.contains(&ib.as_str())), "{}", r.body);
    let scanned = scanned.lock().unwrap().clone();
    assert_eq!(scanned.len(), 1, "one scan");
    let mut in_order = scanned[0].clone();
    in_order.sort();
    in_order.dedup();
    assert_eq!(scanned[0], in_order, "records read twice or out of id order");
    assert_eq!(scanned[0].len(), 9);
});

both_backends!(scan_proposes_pairs_and_dismissed_pairs_are_never_proposed_again, |app: TestApp| async move {
    let steward = user(&app, "steward2", "data_steward").await;
    let rep = user(&app, "rep3", "sales_rep").await;
    let a = create_zhang_wei(&app).await;
    let b = create_traditional_zhang_wei(&app).await;
    create_strangers(&app, &["李娜", "王强", "赵雷", "Emily Carter", "周杰", "吴敏"]).await;

    let r = as_user(&app, &rep, Method::POST, "/api/v1/duplicates/scan", Some(json!({"object": "contacts"}))).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r =
        as_user(&app, &steward, Method::POST, "/api/v1/duplicates/scan", Some(json!({"object": "activities"}))).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    let r = as_user(&app, &steward, Method::POST, "/api/v1/duplicates/scan", Some(json!({"object": "nothing"}))).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);

    let job = run_scan(&app, &steward).await;
    assert_eq!(job["records"], 8);

    let r = as_user(&app, &rep, Method::GET, "/api/v1/duplicates?object=contacts", None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = as_user(&app, &steward, Method::GET, "/api/v1/duplicates?object=contacts&status=bogus", None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = as_user(&app, &steward, Method::GET, "/api/v1/duplicates?object=contacts", None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let items = r.body["items"].as_array().unwrap();
    let pair = items
        .iter()
        .find(|c| {
            let ids: Vec<&str> = c["records"].as_array().unwrap().iter().map(|x| x["id"].as_str().unwrap()).collect();
            ids.contains(&id_of(&a).as_str()) && ids.contains(&id_of(&b).as_str())
        })
        .unwrap_or_else(|| panic!("pair not proposed: {}", r.body));
    assert!(pair["score"].as_f64().unwrap() >= 0.8);
    assert!(pair["reasons"].as_array().unwrap().iter().any(|x| x.as_str().unwrap().starts_with("name:")));
    let candidate = id_of(pair);

    let path = format!("/api/v1/duplicates/{candidate}/dismiss");
    let r = as_user(&app, &rep, Method::POST, &path, Some(json!({"reason": "x"}))).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = as_user(&app, &steward, Method::POST, &path, Some(json!({"reason": ""}))).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let r = as_user(&app, &steward, Method::POST, &path, Some(json!({"reason": "父子同名，生日相同纯属巧合"}))).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    let r = as_user(&app, &steward, Method::POST, &path, Some(json!({"reason": "again"}))).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let dismissed =
        as_user(&app, &steward, Method::GET, "/api/v1/duplicates?object=contacts&status=dismissed", None).await;
    assert_eq!(dismissed.body["items"][0]["id"], candidate.as_str());

    // Not proposed again by a new scan …
    run_scan(&app, &steward).await;
    let r = as_user(&app, &steward, Method::GET, "/api/v1/duplicates?object=contacts", None).await;
    assert!(
        !r.body["items"].as_array().unwrap().iter().any(|c| {
            let ids: Vec<&str> = c["records"].as_array().unwrap().iter().map(|x| x["id"].as_str().unwrap()).collect();
            ids.contains(&id_of(&a).as_str()) && ids.contains(&id_of(&b).as_str())
        }),
        "{}",
        r.body
    );
    // … nor at entry, when one of the two is edited.
    let r = app
        .call(Method::PATCH, &format!("/api/v1/contacts/{}", id_of(&b)), Some(json!({"fields": {"name": "张伟"}})))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);

    let events = app.store.list_audit(0, 100_000).await.unwrap();
    assert!(events.iter().any(|e| e.action == "duplicates.scan"));
    assert!(events.iter().any(|e| e.action == "duplicates.dismiss" && e.body.contains("父子同名")));
});

both_backends!(auto_merge_is_off_by_default_merges_only_sure_groups_and_is_undone_exactly, |app: TestApp| async move {
    let steward = user(&app, "steward9", "data_steward").await;
    let rep = user(&app, "rep9", "sales_rep").await;
    let company = app.create("companies", json!({"name": "杭州云图信息科技有限公司"})).await;
    let person = |name: &str, mobile: &str| {
        json!({"name": name, "mobile": mobile, "birth_date": "1985-03-07", "address": "杭州市西湖区文三路 90 号",
               "wechat": "zhangwei_hz", "company_id": id_of(&company), "title": "采购经理"})
    };
    // The same person twice (another mobile): the older record must survive.
    let older = app.create("contacts", person("张伟", "13812340001")).await;
    let confirm = json!({"reason": "the steward will look"});
    let r = app
        .post("/api/v1/contacts", json!({"fields": person("張偉", "13812340002"), "confirm_not_duplicate": confirm}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let newer = r.body;
    // A likely pair, but not a sure one: a namesake with the birth date only.
    let r = app
        .post(
            "/api/v1/contacts",
            json!({"fields": {"name": "张伟", "birth_date": "1985-03-07"}, "confirm_not_duplicate": confirm}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    create_strangers(&app, &["李娜", "王强", "赵雷", "Emily Carter", "周杰", "吴敏"]).await;
    let activity = app
        .create(
            "activities",
            json!({"subject": "拜访", "kind": "visit", "related_object": "contacts", "related_id": id_of(&newer)}),
        )
        .await;
    let (o, n, a) = (id_of(&older), id_of(&newer), id_of(&activity));
    let records = [("contacts", o.as_str()), ("contacts", n.as_str()), ("activities", a.as_str())];
    let before = snapshot(&app, &records).await;
    let is_pair = |c: &Value, x: &str, y: &str| {
        let ids: Vec<&str> = c["records"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap()).collect();
        ids.contains(&x) && ids.contains(&y)
    };

    // Off by default: a scan only proposes, even a pair it is sure of.
    let job = run_scan(&app, &steward).await;
    assert!(job["auto_merge"].is_null(), "{job}");
    let queue = as_user(&app, &steward, Method::GET, "/api/v1/duplicates?object=contacts", None).await.body;
    let items = queue["items"].as_array().unwrap().clone();
    let sure = items.iter().find(|c| is_pair(c, &o, &n)).unwrap_or_else(|| panic!("{queue}"));
    assert!(sure["score"].as_f64().unwrap() >= 0.99, "{sure}");
    assert!(items.iter().any(|c| c["score"].as_f64().unwrap() < 0.99), "a pair below the threshold: {queue}");
    assert_eq!(snapshot(&app, &records).await, before);

    // Asking for it: stewards only, with a fresh second factor, never below the floor.
    let ask = |threshold: Value| json!({"object": "contacts", "auto_merge": {"threshold": threshold}});
    let r = as_user(&app, &rep, Method::POST, "/api/v1/duplicates/scan", Some(ask(json!(0.99)))).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    let r = as_user(&app, &steward, Method::POST, "/api/v1/duplicates/scan", Some(ask(json!(0.99)))).await;
    assert_eq!((r.status, r.code()), (StatusCode::PRECONDITION_REQUIRED, "step_up_required"), "{}", r.body);
    let r = app.step_up(&steward, "steward9").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    for (bad, code) in [
        (ask(json!(0.9)), "out_of_range"),
        (ask(json!(1.5)), "out_of_range"),
        (ask(json!("high")), "malformed_request"),
        (json!({"object": "deals", "auto_merge": {"threshold": 0.999}}), "not_supported"),
        (json!({"object": "contacts", "auto_merge": {"threshold": 0.99, "rule": "oldest"}}), "invalid"),
        (json!({"object": "contacts", "auto_merge": {"threshold": 0.99, "now": true}}), "malformed_request"),
    ] {
        let r = as_user(&app, &steward, Method::POST, "/api/v1/duplicates/scan", Some(bad.clone())).await;
        assert!(r.status.is_client_error(), "{bad}: {}", r.body);
        assert!(r.body.to_string().contains(code), "{bad}: {}", r.body);
    }
    // A custom role that merges its own records by hand may not have a scan merge everyone's.
    app.admin_step_up().await;
    let own_merger = json!({"name": "own_merger", "label_en": "Own merger", "label_zh": "本人合并", "merge": true, "sensitive_default": "masked",
        "objects": {"contacts": {"create": true, "read": "all", "update": "own", "delete": "own", "export": false}}});
    let r = app.post("/api/v1/roles", own_merger).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let merger = user(&app, "merger9", "own_merger").await;
    let r = app.step_up(&merger, "merger9").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = as_user(&app, &merger, Method::POST, "/api/v1/duplicates/scan", Some(ask(json!(0.99)))).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    // Proposing is still theirs. Their scan is waited for, so that the pairs the steward's
    // auto-merge scan below acts on are its own (a pair names the last scan that found it;
    // scans of one object run one after the other, see `claim_job`).
    let job = run_scan_with(&app, &merger, json!({"object": "contacts"})).await;
    assert!(job["auto_merge"].is_null(), "{job}");
    let scans = |events: &[custodian_store::AuditRow]| events.iter().filter(|e| e.action == "duplicates.scan").count();
    assert_eq!(scans(&app.store.list_audit(0, 100_000).await.unwrap()), 2, "refused scans start nothing");
    assert_eq!(snapshot(&app, &records).await, before);

    let job = run_scan_with(
        &app,
        &steward,
        json!({"object": "contacts", "auto_merge": {"threshold": 0.99, "rule": "most_complete"}}),
    )
    .await;
    let outcome = &job["auto_merge"];
    assert_eq!((outcome["threshold"].as_f64(), outcome["rule"].as_str()), (Some(0.99), Some("most_complete")));
    assert_eq!((outcome["merged"].as_u64(), outcome["records_merged"].as_u64()), (Some(1), Some(1)), "{job}");
    // The older record survives; the newer is a tombstone; the activity follows the survivor.
    let tombstone = app.get(&format!("/api/v1/contacts/{n}")).await.body;
    assert!(tombstone["deleted_at"].is_string());
    assert_eq!(tombstone["merged_into"], o.as_str());
    let moved = app.get(&format!("/api/v1/activities/{}", id_of(&activity))).await.body;
    assert_eq!(moved["fields"]["related_id"], o.as_str());
    // What was sure is merged, with the merge named; everything else waits for a steward.
    let merged = as_user(&app, &steward, Method::GET, "/api/v1/duplicates?object=contacts&status=merged", None).await;
    let merged_items = merged.body["items"].as_array().unwrap();
    assert_eq!(merged_items.len(), 1, "{}", merged.body);
    assert!(merged_items[0]["score"].as_f64().unwrap() >= 0.99);
    let merge_id = merged_items[0]["merge_id"].as_str().unwrap().to_owned();
    let open = as_user(&app, &steward, Method::GET, "/api/v1/duplicates?object=contacts", None).await.body;
    assert!(!open["items"].as_array().unwrap().is_empty(), "{open}");
    for c in open["items"].as_array().unwrap() {
        assert!(c["score"].as_f64().unwrap() < 0.99 && c["merge_id"].is_null(), "{c}");
    }
    // The merge was the system's, on the steward's request, and says so.
    let m = as_user(&app, &steward, Method::GET, &format!("/api/v1/merges/{merge_id}"), None).await.body;
    assert_eq!(m["survivor_id"], o.as_str());
    assert_eq!(m["loser_ids"], json!([n]));
    assert_eq!(m["auto"]["scan_job_id"], job["id"]);
    assert_eq!(m["auto"]["threshold"].as_f64(), Some(0.99));
    let me = as_user(&app, &steward, Method::GET, "/api/v1/me", None).await.body;
    assert_eq!(m["auto"]["requested_by"], me["id"]);
    let events = app.store.list_audit(0, 100_000).await.unwrap();
    let merge_event = events.iter().find(|e| e.action == "record.merge").expect("merge audited");
    assert_eq!(merge_event.actor_id, None);
    assert!(merge_event.body.contains(job["id"].as_str().unwrap()), "{}", merge_event.body);

    // Undone exactly, by the steward, from the review queue's merge id.
    let r = as_user(&app, &steward, Method::POST, &format!("/api/v1/merges/{merge_id}/undo"), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(snapshot(&app, &records).await, before);
    // The pair is open again, for the steward to dismiss: then no later auto-merge takes it.
    let open = as_user(&app, &steward, Method::GET, "/api/v1/duplicates?object=contacts", None).await.body;
    let again = open["items"].as_array().unwrap().iter().find(|c| is_pair(c, &o, &n)).expect("reopened").clone();
    let path = format!("/api/v1/duplicates/{}/dismiss", id_of(&again));
    let r = as_user(&app, &steward, Method::POST, &path, Some(json!({"reason": "两位同名同事"}))).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    let job = run_scan_with(&app, &steward, json!({"object": "contacts", "auto_merge": {"threshold": 0.99}})).await;
    assert_eq!(job["auto_merge"]["merged"], 0, "{job}");
    assert_eq!(snapshot(&app, &records).await, before);
});

// An auto-merge runs long after it was asked for (a scan of a million records takes minutes):
// the steward's rights are read again before each merge, and rights taken away stop it.
both_backends!(an_auto_merge_stops_when_its_steward_may_no_longer_merge, |app: TestApp| async move {
    let config = custodian_service::ServiceConfig { start_jobs_at_once: false, ..Default::default() };
    let app = app.reconfigure(config).await;
    let steward = user(&app, "steward7", "data_steward").await;
    let steward_id = as_user(&app, &steward, Method::GET, "/api/v1/me", None).await.body["id"].clone();
    let person = |mobile: &str| {
        json!({"name": "张伟", "mobile": mobile, "birth_date": "1985-03-07", "address": "杭州市西湖区文三路 90 号",
               "wechat": "zhangwei_hz", "title": "采购经理"})
    };
    let a = app.create("contacts", person("13812340001")).await;
    let r = app
        .post(
            "/api/v1/contacts",
            json!({"fields": person("13812340002"), "confirm_not_duplicate": {"reason": "later"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let b = r.body;
    create_strangers(&app, &["李娜", "王强", "赵雷", "Emily Carter", "周杰", "吴敏"]).await;
    let (ia, ib) = (id_of(&a), id_of(&b));
    let records = [("contacts", ia.as_str()), ("contacts", ib.as_str())];
    let before = snapshot(&app, &records).await;
    let ask = json!({"object": "contacts", "auto_merge": {"threshold": 0.99}});
    let scan = |token: String| {
        let app = &app;
        let ask = ask.clone();
        async move {
            let r = as_user(app, &token, Method::POST, "/api/v1/duplicates/scan", Some(ask)).await;
            assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
            let job = id_of(&r.body);
            app.service.run_jobs("test-server").await.unwrap();
            let r = app.get(&format!("/api/v1/duplicates/scan/{job}")).await;
            assert_eq!((r.status, r.body["status"].as_str()), (StatusCode::OK, Some("done")), "{}", r.body);
            r.body
        }
    };
    let r = app.step_up(&steward, "steward7").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = as_user(&app, &steward, Method::POST, "/api/v1/duplicates/scan", Some(ask.clone())).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let job = id_of(&r.body);
    // The steward becomes a sales rep before the scan has run.
    app.admin_step_up().await;
    let r = app
        .call(
            Method::PATCH,
            &format!("/api/v1/users/{}", steward_id.as_str().unwrap()),
            Some(json!({"role": "sales_rep"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    app.service.run_jobs("test-server").await.unwrap();
    let done = app.get(&format!("/api/v1/duplicates/scan/{job}")).await.body;
    assert_eq!(done["status"], "done", "{done}");
    let outcome = &done["auto_merge"];
    assert_eq!(outcome["merged"], 0, "{done}");
    assert_eq!(
        (outcome["stopped"]["code"].as_str(), outcome["stopped"]["groups_left"].as_u64()),
        (Some("forbidden"), Some(1)),
        "{done}"
    );
    assert!(outcome["left_for_review"].as_u64().unwrap() >= 1, "{done}");
    assert_eq!(snapshot(&app, &records).await, before);
    let events = app.store.list_audit(0, 100_000).await.unwrap();
    let stop = events.iter().find(|e| e.action == "duplicates.auto_merge_stopped").expect("the stop is audited");
    assert!(stop.body.contains(&job) && stop.body.contains(steward_id.as_str().unwrap()), "{}", stop.body);
    // A steward suspended before their scan has run stops it the same way.
    let other = user(&app, "steward6", "data_steward").await;
    let other_id = as_user(&app, &other, Method::GET, "/api/v1/me", None).await.body["id"].clone();
    let r = app.step_up(&other, "steward6").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = as_user(&app, &other, Method::POST, "/api/v1/duplicates/scan", Some(ask.clone())).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let job = id_of(&r.body);
    let r = app.post(&format!("/api/v1/users/{}/suspend", other_id.as_str().unwrap()), json!({})).await;
    assert!(r.status.is_success(), "{}", r.body);
    app.service.run_jobs("test-server").await.unwrap();
    let done = app.get(&format!("/api/v1/duplicates/scan/{job}")).await.body;
    assert_eq!(
        (done["auto_merge"]["merged"].as_u64(), done["auto_merge"]["stopped"]["code"].as_str()),
        (Some(0), Some("forbidden")),
        "{done}"
    );
    assert!(done["auto_merge"]["stopped"]["message"].as_str().unwrap().contains("no longer active"), "{done}");
    assert_eq!(snapshot(&app, &records).await, before);
    // The pair waits for review; someone who may still merge gets it merged.
    let queue = app.get("/api/v1/duplicates?object=contacts").await.body;
    assert!(queue["items"].as_array().unwrap().iter().any(|c| c["score"].as_f64().unwrap() >= 0.99), "{queue}");
    let job = scan(app.token.clone()).await;
    assert_eq!((job["auto_merge"]["merged"].as_u64(), job["auto_merge"].get("stopped")), (Some(1), None), "{job}");
});

both_backends!(trusted_source_survivorship_takes_each_value_from_the_most_trusted_source, |app: TestApp| async move {
    app.admin_step_up().await;
    let confirm = json!({"reason": "the steward merges them below"});
    let mut ids = Vec::new();
    for fields in [
        json!({"name": "云图信息科技", "source": "web", "phone": "0571-88880001", "website": "https://yuntu.example.com", "city": "杭州"}),
        json!({"name": "杭州云图信息科技有限公司", "source": "partner", "phone": "0571-88880002"}),
        json!({"name": "云图科技", "source": "referral", "phone": "0571-88880003", "city": "杭州市", "industry": "软件"}),
    ] {
        let r = app.post("/api/v1/companies", json!({"fields": fields, "confirm_not_duplicate": confirm})).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        ids.push(id_of(&r.body));
    }
    let (web, partner, referral) = (&ids[0], &ids[1], &ids[2]);
    let records: Vec<(&str, &str)> = ids.iter().map(|id| ("companies", id.as_str())).collect();
    let before = snapshot(&app, &records).await;
    let merge = |rule: &str, sources: Value| json!({"object": "companies", "survivor_id": web, "loser_ids": [partner, referral], "rule": rule, "trusted_sources": sources});
    // A ranking that does not fit is refused, and nothing changes.
    for bad in [
        merge("trusted_source", json!([])),
        merge("trusted_source", json!(["erp"])),
        merge("trusted_source", json!(["partner", "partner"])),
        merge("newest", json!(["partner"])),
        json!({"object": "deals", "survivor_id": web, "loser_ids": [partner], "rule": "trusted_source", "trusted_sources": ["web"]}),
    ] {
        let r = app.post("/api/v1/merges", bad.clone()).await;
        assert!(r.status.is_client_error(), "{bad}: {}", r.body);
    }
    assert_eq!(snapshot(&app, &records).await, before);

    let r = app.post("/api/v1/merges", merge("trusted_source", json!(["partner", "referral"]))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(
        (r.body["rule"].as_str(), &r.body["trusted_sources"]),
        (Some("trusted_source"), &json!(["partner", "referral"]))
    );
    let merge_id = id_of(&r.body);
    let survivor = app.get(&format!("/api/v1/companies/{web}")).await.body["fields"].clone();
    // The partner's values first, then the referral's; the web form's only where no one else has one.
    assert_eq!(survivor["name"], "杭州云图信息科技有限公司");
    assert_eq!(survivor["source"], "partner");
    assert_eq!(survivor["phone"], before[&format!("companies/{partner}")]["fields"]["phone"]);
    assert_eq!(survivor["city"], "杭州市");
    assert_eq!(survivor["industry"], "软件");
    assert_eq!(survivor["website"], before[&format!("companies/{web}")]["fields"]["website"]);
    let r = app.post(&format!("/api/v1/merges/{merge_id}/undo"), json!({})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(snapshot(&app, &records).await, before);
});

both_backends!(a_batch_is_checked_against_the_store_and_against_itself, |app: TestApp| async move {
    use custodian_service::{CreateOptions, RequestContext};
    let stored = app.create("contacts", json!({"name": "张伟", "mobile": "13812345678"})).await;
    let ctx = RequestContext::cli();
    let confirm = CreateOptions {
        confirm_not_duplicate: Some(custodian_service::ConfirmNotDuplicate::new("两位同名同生日").unwrap()),
        ..CreateOptions::default()
    };
    let rows: Vec<(Value, CreateOptions)> = vec![
        // 0: an exact duplicate of the stored record.
        (json!({"name": "李雷", "mobile": "+86 138 1234 5678"}), CreateOptions::default()),
        // 1: new.
        (
            json!({"name": "韩梅梅", "mobile": "13900002222", "birth_date": "1990-01-02", "address": "北京市海淀区中关村大街 1 号"}),
            CreateOptions::default(),
        ),
        // 2: the same mobile as 1, in the same batch.
        (json!({"name": "王五", "mobile": "139-0000-2222"}), CreateOptions::default()),
        // 3: the same person as 1 (traditional characters, same birth date and address).
        (
            json!({"name": "韓梅梅", "birth_date": "1990-01-02", "address": "北京市海淀区中关村大街1号"}),
            CreateOptions::default(),
        ),
        // 4: the same again, confirmed as another person.
        (json!({"name": "韩梅梅", "birth_date": "1990-01-02", "address": "北京市海淀区中关村大街 1 号"}), confirm),
        // 5: invalid, so never written ...
        (json!({"name": "赵六", "mobile": "13700003333", "email": "not an email"}), CreateOptions::default()),
        // 6: ... and therefore no duplicate for this one.
        (json!({"name": "孙七", "mobile": "13700003333"}), CreateOptions::default()),
    ];
    let input: Vec<_> = rows.iter().map(|(f, o)| (f.as_object().unwrap().clone(), o.clone())).collect();
    let results = app.service.prepare_creates(&ctx, "contacts", &input).await;
    assert_eq!(results.len(), rows.len());
    let code = |i: usize| results[i].as_ref().err().map(|e| e.code.as_str().to_owned());
    let extra = |i: usize| results[i].as_ref().err().and_then(|e| e.extra.clone()).unwrap_or(Value::Null);
    assert_eq!(code(0).as_deref(), Some("duplicate"));
    assert_eq!(extra(0)["candidates"][0]["id"], stored["id"]);
    assert!(results[1].is_ok());
    assert_eq!(code(2).as_deref(), Some("duplicate"));
    let first = results[1].as_ref().unwrap().0.to_string();
    assert_eq!(
        extra(2)["candidates"],
        json!([{"id": first, "object": "contacts", "batch_index": 1, "matched_on": ["mobile"]}])
    );
    assert_eq!(code(3).as_deref(), Some("possible_duplicate"), "{:?}", results[3].as_ref().err());
    assert_eq!(extra(3)["candidates"][0]["batch_index"], 1);
    assert!(extra(3)["candidates"][0]["score"].as_f64().unwrap() >= 0.8);
    assert!(results[4].is_ok(), "{:?}", results[4].as_ref().err());
    assert_eq!(code(5).as_deref(), Some("validation_failed"));
    assert!(results[6].is_ok(), "{:?}", results[6].as_ref().err());
    // What passed is written together, and is then a duplicate for later writes.
    let writes: Vec<_> = results.into_iter().filter_map(Result::ok).map(|(_, w)| w).collect();
    assert_eq!(writes.len(), 3);
    app.service.apply_prepared(writes).await.unwrap();
    let r = app.post("/api/v1/contacts", json!({"fields": {"name": "周八", "mobile": "13700003333"}})).await;
    assert_eq!(r.code(), "duplicate", "{}", r.body);
    let r = app
        .post(
            "/api/v1/contacts",
            json!({"fields": {"name": "韩梅梅", "birth_date": "1990-01-02", "address": "北京市海淀区中关村大街1号"}}),
        )
        .await;
    assert_eq!(r.code(), "possible_duplicate", "{}", r.body);
    assert_eq!(r.body["error"]["candidates"].as_array().unwrap().len(), 2, "{}", r.body);
});

both_backends!(a_batch_checks_plain_strong_keys_and_references_in_one_read, |app: TestApp| async move {
    // Strong keys that are not encrypted (USCC, contract number) and references are looked up
    // once for a whole batch; each record still gets its own answer.
    use custodian_service::{CreateOptions, RequestContext};
    let stored = app.create("companies", json!({"name": "华为技术有限公司", "uscc": "914403001922038216"})).await;
    let other =
        app.create("companies", json!({"name": "腾讯科技（深圳）有限公司", "uscc": "9144030071526726XG"})).await;
    let ctx = RequestContext::cli();
    let batch = |rows: Vec<Value>| -> Vec<_> {
        rows.into_iter().map(|f| (f.as_object().unwrap().clone(), CreateOptions::default())).collect()
    };
    let companies = batch(vec![
        // 0: the stored company's USCC.
        json!({"name": "华为终端", "uscc": "914403001922038216"}),
        // 1: new.
        json!({"name": "北京字节跳动科技有限公司", "uscc": "91110108551385082Q"}),
        // 2: the same USCC as 1, in the same batch.
        json!({"name": "字节跳动（北京）", "uscc": "91110108551385082Q"}),
    ]);
    let results = app.service.prepare_creates(&ctx, "companies", &companies).await;
    let code = |r: &Result<_, custodian_service::ServiceError>| r.as_ref().err().map(|e| e.code.as_str().to_owned());
    assert_eq!(code(&results[0]).as_deref(), Some("duplicate"));
    assert_eq!(results[0].as_ref().err().unwrap().extra.clone().unwrap()["candidates"][0]["id"], stored["id"]);
    assert!(results[1].is_ok(), "{:?}", results[1].as_ref().err());
    assert_eq!(code(&results[2]).as_deref(), Some("duplicate"));
    assert_eq!(results[2].as_ref().err().unwrap().extra.clone().unwrap()["candidates"][0]["batch_index"], 1);

    let missing = uuid::Uuid::now_v7().to_string();
    let deals = batch(vec![
        json!({"name": "年度框架", "company_id": id_of(&stored), "contract_no": "HT-2026-0101"}),
        json!({"name": "续约", "company_id": id_of(&other), "contract_no": "HT-2026-0101"}),
        json!({"name": "扩容", "company_id": missing, "contract_no": "HT-2026-0102"}),
        json!({"name": "新签", "company_id": id_of(&other), "contract_no": "HT-2026-0103"}),
    ]);
    let results = app.service.prepare_creates(&ctx, "deals", &deals).await;
    assert!(results[0].is_ok(), "{:?}", results[0].as_ref().err());
    assert_eq!(code(&results[1]).as_deref(), Some("duplicate"), "the same contract number as deal 0");
    assert_eq!(code(&results[2]).as_deref(), Some("validation_failed"));
    let details = serde_json::to_string(&results[2].as_ref().err().unwrap().details).unwrap();
    assert!(details.contains("invalid_reference"), "{details}");
    assert!(results[3].is_ok(), "{:?}", results[3].as_ref().err());
    let writes: Vec<_> = results.into_iter().filter_map(Result::ok).map(|(_, w)| w).collect();
    app.service.apply_prepared(writes).await.unwrap();
    // Once written, the contract number is a duplicate for the next batch too.
    let again = batch(vec![json!({"name": "重复", "company_id": id_of(&stored), "contract_no": "HT-2026-0103"})]);
    let results = app.service.prepare_creates(&ctx, "deals", &again).await;
    assert_eq!(code(&results[0]).as_deref(), Some("duplicate"));
});

both_backends!(a_scan_whose_server_died_is_taken_over_by_another, |app: TestApp| async move {
    use custodian_store::{AuditDraft, ScanJobRow, now_micros};
    create_zhang_wei(&app).await;
    create_traditional_zhang_wei(&app).await;
    // A server queued a scan, claimed its job with a short lease and died.
    let scan = ScanJobRow {
        id: uuid::Uuid::now_v7(),
        object: "contacts".into(),
        status: "running".into(),
        requested_by: None,
        created_at: now_micros(),
        finished_at: None,
        records: 0,
        pairs: 0,
        error: None,
        auto_merge: None,
    };
    let queued = custodian_store_tests::cases::scan_job_queued(&scan);
    app.store.create_scan_job(scan.clone(), queued.clone(), AuditDraft::new("duplicates.scan")).await.unwrap();
    let claimed = app.store.claim_job("dead-server", now_micros(), 1_000).await.unwrap().unwrap();
    assert_eq!(claimed.id, queued.id);
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    // Another server's job loop takes it over and finishes the scan.
    assert_eq!(app.service.run_jobs("live-server").await.unwrap(), 1);
    let r = app.get(&format!("/api/v1/duplicates/scan/{}", scan.id)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!((r.body["status"].as_str(), r.body["records"].as_i64()), (Some("done"), Some(2)), "{}", r.body);
    assert_eq!(r.body["pairs"], 1, "{}", r.body);
    let job = app.store.get_job(queued.id).await.unwrap().unwrap();
    assert_eq!((job.status.as_str(), job.claimed_by.as_deref()), ("done", Some("live-server")));
    // The dead server, were it to come back, no longer holds the lease: its result is not taken.
    let late = custodian_store::JobProgress {
        finish: Some(("done".into(), None)),
        ..custodian_store_tests::job_cases::progress(queued.id, "dead-server")
    };
    assert!(!app.store.save_job_progress(late).await.unwrap());
    // Nothing is left to run.
    assert_eq!(app.service.run_jobs("live-server").await.unwrap(), 0);
});

both_backends!(undo_never_restores_a_mobile_another_record_took_since, |app: TestApp| async move {
    let a = app.create("contacts", json!({"name": "陈一", "mobile": "13800000001"})).await;
    let b = app.create("contacts", json!({"name": "林二", "mobile": "13800000002"})).await;
    let (a, b) = (id_of(&a), id_of(&b));
    app.admin_step_up().await;
    let r = app
        .post(
            "/api/v1/merges",
            json!({"object": "contacts", "survivor_id": a, "loser_ids": [b], "fields": {"mobile": a}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let merge = id_of(&r.body);
    // The loser's mobile is free after the merge: a new contact takes it.
    let taker = app.create("contacts", json!({"name": "新人", "mobile": "13800000002"})).await;
    let before = app.get(&format!("/api/v1/contacts/{b}")).await.body;
    let r = app.post(&format!("/api/v1/merges/{merge}/undo"), json!({})).await;
    assert_eq!((r.status, r.code()), (StatusCode::CONFLICT, "duplicate"), "{}", r.body);
    assert!(r.body.to_string().contains(&id_of(&taker)), "the holder is named: {}", r.body);
    assert_eq!(app.get(&format!("/api/v1/contacts/{b}")).await.body, before, "nothing changed");
    let found = app.get("/api/v1/contacts?mobile=13800000002").await.body;
    assert_eq!(found["items"].as_array().unwrap().len(), 1, "one holder: {found}");
    // Once the taker is gone, undo brings the loser back with its mobile.
    assert_eq!(
        app.call(Method::DELETE, &format!("/api/v1/contacts/{}", id_of(&taker)), None).await.status,
        StatusCode::OK
    );
    let r = app.post(&format!("/api/v1/merges/{merge}/undo"), json!({})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let found = app.get("/api/v1/contacts?mobile=13800000002").await.body;
    assert_eq!(found["items"][0]["id"], b.as_str(), "{found}");
});

// A WeChat ID is a personal account name: two contacts sharing one are very likely one person,
// whatever else changed (a second phone, a pinyin name). Checked at entry and by the scan.
both_backends!(a_shared_wechat_id_is_evidence_of_one_person, |app: TestApp| async move {
    let a = app.create("contacts", json!({"name": "徐浩", "mobile": "13800001111", "wechat": "xuhao6681"})).await;
    let fields = json!({"name": "Xu Hao", "mobile": "13900002222", "wechat": " xuhao6681 "});
    let r = app.post("/api/v1/contacts", json!({"fields": fields})).await;
    assert_eq!(r.code(), "possible_duplicate", "{}", r.body);
    let c = &r.body["error"]["candidates"][0];
    assert_eq!(c["id"], a["id"]);
    assert!(c["matched_on"].as_array().unwrap().iter().any(|m| m == "wechat:exact"), "{c}");
    // The same name without the shared account is another person of that name.
    let other = json!({"name": "Xu Hao", "mobile": "13900003333", "wechat": "haoxu_1990"});
    let r = app.post("/api/v1/contacts", json!({"fields": other})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    // Stored anyway (an import a user confirmed), the pair is proposed by the scan.
    let confirmed = json!({"fields": fields, "confirm_not_duplicate": {"reason": "导入时确认"}});
    let r = app.post("/api/v1/contacts", confirmed).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let b = id_of(&r.body);
    // The scan estimates its model on the records scanned: a few hundred demo contacts, some
    // of them look-alikes stored after a confirmation (those with the same mobile are refused).
    let demo = custodian_core::demo::generate(1000, 11, 0.1);
    let confirm = custodian_service::CreateOptions {
        confirm_not_duplicate: Some(custodian_service::ConfirmNotDuplicate::new("导入").unwrap()),
        ..Default::default()
    };
    let input: Vec<_> = demo
        .of("contacts")
        .iter()
        .map(|r| {
            let mut fields = r.fields.clone();
            fields.remove("company_id");
            (fields, confirm.clone())
        })
        .collect();
    let ctx = custodian_service::RequestContext::cli();
    let writes: Vec<_> = app.service.prepare_creates(&ctx, "contacts", &input).await.into_iter().flatten().collect();
    assert!(writes.len() > 200, "{} demo contacts", writes.len());
    app.service.apply_prepared(writes.into_iter().map(|(_, w)| w).collect()).await.unwrap();
    let admin = app.token.clone();
    run_scan(&app, &admin).await;
    let r = as_user(&app, &admin, Method::GET, "/api/v1/duplicates?object=contacts", None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let pair = r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| {
            let ids: Vec<&str> = c["records"].as_array().unwrap().iter().map(|x| x["id"].as_str().unwrap()).collect();
            ids.contains(&id_of(&a).as_str()) && ids.contains(&b.as_str())
        })
        .unwrap_or_else(|| panic!("pair not proposed: {}", r.body));
    assert!(pair["reasons"].as_array().unwrap().iter().any(|x| x == "wechat:exact"), "{pair}");
});

both_backends!(namesakes_at_one_company_are_paired_by_it, |app: TestApp| async move {
    // A common name's block is too large to pair its records (hundreds of 王伟): a second entry
    // of the person that shares nothing but the name and the company is found by the company.
    let company = app.create("companies", json!({"name": "杭州云栖数据科技有限公司"})).await;
    store_namesakes(&app, |_| None).await;
    let a = app
        .create(
            "contacts",
            json!({"name": "王伟", "mobile": "13900001111", "company_id": company["id"], "title": "销售总监"}),
        )
        .await;

    // From a business card: the name, a title and the company.
    let card = json!({"name": "王 伟", "company_id": company["id"], "title": "销售总监"});
    let r = app.post("/api/v1/contacts", json!({"fields": card})).await;
    assert_eq!(r.code(), "possible_duplicate", "{}", r.body);
    let c = &r.body["error"]["candidates"][0];
    assert_eq!(c["id"], a["id"], "{}", r.body);
    assert!(c["matched_on"].as_array().unwrap().iter().any(|m| m == "company_id:exact"), "{c}");
    // The shared title weighs nothing at entry, so it is not named as a reason.
    assert!(!c["matched_on"].as_array().unwrap().iter().any(|m| m == "title:exact"), "{c}");
    // Another 王伟 at no company is another person of that name.
    let r = app.post("/api/v1/contacts", json!({"fields": {"name": "王伟", "mobile": "13900003333"}})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);

    // With a second mobile number it is left to the scan, which proposes the pair.
    let fields = json!({"name": "王伟", "mobile": "13987654321", "company_id": company["id"], "title": "销售总监"});
    let r = app
        .post("/api/v1/contacts", json!({"fields": fields, "confirm_not_duplicate": {"reason": "导入时确认"}}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let b = id_of(&r.body);
    // The scan's blocking compares the pair (its score is the scan's model's business, estimated
    // on the records scanned).
    assert!(scan_compares(app, &id_of(&a), &b).await.is_some(), "the scan's blocking did not pair the two");
});

/// 300 contacts named 王伟 (other mobiles, from 13900000000 up), each stored as a user who
/// confirms "not a duplicate" stores it, with `title` for the `i`th.
async fn store_namesakes(app: &TestApp, title: impl Fn(usize) -> Option<&'static str>) {
    let confirm = custodian_service::CreateOptions {
        confirm_not_duplicate: Some(custodian_service::ConfirmNotDuplicate::new("导入").unwrap()),
        ..Default::default()
    };
    let input: Vec<_> = (0..300)
        .map(|i| {
            let mut fields = json!({"name": "王伟", "mobile": format!("139{:08}", i * 333_667)});
            if let Some(t) = title(i) {
                fields["title"] = json!(t);
            }
            (fields.as_object().unwrap().clone(), confirm.clone())
        })
        .collect();
    let ctx = custodian_service::RequestContext::cli();
    let writes: Vec<_> = app.service.prepare_creates(&ctx, "contacts", &input).await.into_iter().flatten().collect();
    assert_eq!(writes.len(), 300);
    app.service.apply_prepared(writes.into_iter().map(|(_, w)| w).collect()).await.unwrap();
}

/// Runs a contacts scan and returns the probability it gave the pair (a, b), or None when its
/// blocking did not compare them.
async fn scan_compares(app: TestApp, a: &str, b: &str) -> Option<f64> {
    let compared: Arc<Mutex<Option<Option<f64>>>> = Arc::default();
    let seen = compared.clone();
    let (ia, ib) = (uuid::Uuid::parse_str(a).unwrap(), uuid::Uuid::parse_str(b).unwrap());
    let mut config = app.service.config().clone();
    config.duplicates.scan_probe = Some(custodian_service::ScanProbe(Arc::new(move |_, ids, result| {
        let at = |id| ids.iter().position(|x| *x == id).unwrap() as u32;
        *seen.lock().unwrap() = Some(result.probability(at(ia), at(ib)));
    })));
    let app = app.reconfigure(config).await;
    let admin = app.token.clone();
    run_scan(&app, &admin).await;
    compared.lock().unwrap().expect("the scan ran")
}

both_backends!(namesakes_with_one_title_are_paired_by_the_scan, |app: TestApp| async move {
    // Two entries of one 王伟 share only the name and a title that 20 other 王伟 hold too; sorted
    // by mobile they lie at the two ends of the name's block of 300 and of the title's block
    // of 22, so neither block's windows pair them. The name with the title is a block of 22,
    // compared in full. At entry the title weighs nothing (a title is shared by many), so the
    // second entry is created without a confirmation.
    store_namesakes(&app, |i| (i % 15 == 0).then_some("采购总监")).await;
    let a = app.create("contacts", json!({"name": "王伟", "mobile": "13900000005", "title": "采购总监"})).await;
    let r = app
        .post("/api/v1/contacts", json!({"fields": {"name": "王伟", "mobile": "13999999990", "title": "采购总监"}}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert!(
        scan_compares(app, &id_of(&a), &id_of(&r.body)).await.is_some(),
        "the scan's blocking did not pair the two"
    );
});

both_backends!(a_remembered_candidate_scores_as_its_stored_record, |app: TestApp| async move {
    // A create keeps its prepared match values for the checks after it, which then need not
    // read, decrypt and prepare the record again. A server that did not write it (another
    // server, or this one restarted) prepares it from the stored, encrypted record: both must
    // see the same candidate, with the same score and reasons.
    let a = app
        .create(
            "contacts",
            json!({"name": "欧阳娜娜", "mobile": "+86 139-0571-2468", "email": "Ouyang.Nana@Example.COM",
                   "wechat": "oyn_1990", "birth_date": "1990-11-02", "address": "杭州市滨江区江南大道 1 号",
                   "title": "采购经理"}),
        )
        .await;
    let probe = json!({"fields": {"name": "歐陽娜娜", "email": "ouyang.nana@example.com.cn", "birth_date": "1990-11-02",
                                  "address": "杭州市滨江区江南大道1号"}});
    let candidate = |r: &common::Reply| {
        assert_eq!(r.code(), "possible_duplicate", "{}", r.body);
        let c = r.body["error"]["candidates"][0].clone();
        assert_eq!(c["id"], a["id"]);
        c
    };
    let remembered = candidate(&app.post("/api/v1/contacts", probe.clone()).await);
    let config = app.service.config().clone();
    let app = app.reconfigure(config).await;
    let from_store = candidate(&app.post("/api/v1/contacts", probe.clone()).await);
    assert_eq!(remembered["score"], from_store["score"]);
    assert_eq!(remembered["matched_on"], from_store["matched_on"]);

    // An update keeps the prepared values of the version it wrote, likewise: the probe scores
    // the same against them as a restarted server does against the stored version.
    let path = format!("/api/v1/contacts/{}", id_of(&a));
    let change = json!({"fields": {"address": "杭州市西湖区文三路 90 号"}, "version": 1});
    let r = app.call(Method::PATCH, &path, Some(change)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let remembered = candidate(&app.post("/api/v1/contacts", probe.clone()).await);
    assert_ne!(remembered["score"], from_store["score"], "the update changed what the probe is compared with");
    let config = app.service.config().clone();
    let app = app.reconfigure(config).await;
    let after_restart = candidate(&app.post("/api/v1/contacts", probe).await);
    assert_eq!(remembered["score"], after_restart["score"]);
    assert_eq!(remembered["matched_on"], after_restart["matched_on"]);
});
