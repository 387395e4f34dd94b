//! MFA, step-up, CSRF and password strength through the HTTP API, on both backends.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use common::TestApp;
use common::{PASSWORD, as_user};
use serde_json::json;
use tower::ServiceExt;

async fn create_user(app: &TestApp, name: &str, role: &str) -> String {
    let r = app.post("/api/v1/users", json!({"username": name, "password": PASSWORD, "role": role})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    r.body["id"].as_str().unwrap().to_owned()
}

async fn actions(app: &TestApp) -> Vec<String> {
    app.store.list_audit(0, 1_000_000).await.unwrap().into_iter().map(|e| e.action).collect()
}

both_backends!(privileged_user_is_blocked_until_enrolled_then_logs_in_with_a_challenge, |app: TestApp| async move {
    let id = create_user(&app, "steward", "data_steward").await;
    // The password alone gives a session that may only enrol, ask who it is, and log out.
    let r = app.password_login("steward", PASSWORD).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let token = r.body["token"].as_str().unwrap().to_owned();
    let me = as_user(&app, &token, Method::GET, "/api/v1/me", None).await;
    assert_eq!(
        (me.body["mfa_enrollment_required"].clone(), me.body["mfa_enabled"].clone()),
        (json!(true), json!(false))
    );
    for (method, path, body) in [
        (Method::GET, "/api/v1/contacts", None),
        (Method::POST, "/api/v1/contacts", Some(json!({"fields": {"name": "张三"}}))),
        (Method::GET, "/api/v1/auth/sessions", None),
        (Method::POST, "/api/v1/auth/tokens", Some(json!({"name": "x", "scope": "read", "expires_in_days": 1}))),
        (Method::POST, "/api/v1/auth/step-up", Some(json!({"code": "123456"}))),
    ] {
        let r = as_user(&app, &token, method.clone(), path, body).await;
        assert_eq!((r.status, r.code()), (StatusCode::FORBIDDEN, "mfa_enrollment_required"), "{method} {path}");
    }
    // Enrolment: secret, otpauth URI and QR code; a wrong code does not confirm it.
    let r = as_user(&app, &token, Method::POST, "/api/v1/auth/mfa/enroll", None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let secret_b32 = r.body["secret"].as_str().unwrap().to_owned();
    let uri = r.body["otpauth_uri"].as_str().unwrap();
    assert!(uri.starts_with("otpauth://totp/Custodian:steward?"), "{uri}");
    assert!(uri.contains(&format!("secret={secret_b32}")) && uri.contains("issuer=Custodian"), "{uri}");
    let svg = r.body["qr_svg"].as_str().unwrap();
    assert!(svg.contains("<svg") && svg.contains("<path"), "{svg}");
    let secret = custodian_crypto::totp::secret_from_base32(&secret_b32).unwrap();
    app.mfa_secrets.lock().unwrap().insert("steward".into(), secret);
    let wrong =
        as_user(&app, &token, Method::POST, "/api/v1/auth/mfa/enroll/confirm", Some(json!({"code": "12345x"}))).await;
    assert_eq!((wrong.status, wrong.code()), (StatusCode::UNAUTHORIZED, "invalid_mfa_code"));
    let code = app.next_code("steward");
    let r = as_user(&app, &token, Method::POST, "/api/v1/auth/mfa/enroll/confirm", Some(json!({"code": code}))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let codes: Vec<String> =
        r.body["recovery_codes"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_owned()).collect();
    assert_eq!(codes.len(), 10);
    assert_eq!(codes.iter().collect::<std::collections::HashSet<_>>().len(), 10);
    // The same session now has the whole API of its role.
    assert_eq!(as_user(&app, &token, Method::GET, "/api/v1/contacts", None).await.status, StatusCode::OK);
    let me = as_user(&app, &token, Method::GET, "/api/v1/me", None).await;
    assert_eq!((me.body["mfa_enabled"].clone(), me.body["recovery_codes_left"].clone()), (json!(true), json!(10)));
    // A second enrolment conflicts while the factor is active.
    let r = as_user(&app, &token, Method::POST, "/api/v1/auth/mfa/enroll", None).await;
    assert_eq!(r.status, StatusCode::CONFLICT);

    // The secret is encrypted at rest, the recovery codes are hashed, and neither is in the audit trail.
    let row = app.store.get_user_mfa(uuid::Uuid::parse_str(&id).unwrap()).await.unwrap().unwrap();
    assert!(row.secret.starts_with("enc:v1:") && !row.secret.contains(&secret_b32), "{}", row.secret);
    let events = app.store.list_audit(0, 1_000_000).await.unwrap();
    for e in &events {
        assert!(!e.body.contains(&secret_b32), "secret in audit event {}", e.action);
        assert!(codes.iter().all(|c| !e.body.contains(c.as_str())), "recovery code in audit event {}", e.action);
    }

    // Login now needs the second factor: the password gives a challenge, not a session.
    let r = app.password_login("steward", PASSWORD).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["mfa_required"], true);
    assert!(r.body.get("token").is_none(), "{}", r.body);
    let challenge = r.body["challenge"].as_str().unwrap().to_owned();
    // The code used for the confirmation is refused (replay), so is a wrong one.
    let replayed = app.current_code("steward");
    let r = app.mfa(&challenge, &replayed).await;
    assert_eq!((r.status, r.code()), (StatusCode::UNAUTHORIZED, "invalid_mfa_code"), "{}", r.body);
    let r = app.mfa(&challenge, "000000").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let fresh = app.next_code("steward");
    let r = app.mfa(&challenge, &fresh).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let session = r.body["token"].as_str().unwrap().to_owned();
    assert!(r.body["csrf_token"].as_str().is_some_and(|t| !t.is_empty()));
    let cookie = r.headers.get("set-cookie").unwrap().to_str().unwrap().to_owned();
    assert!(cookie.contains("HttpOnly") && cookie.contains("Secure") && cookie.contains("SameSite=Strict"), "{cookie}");
    assert_eq!(as_user(&app, &session, Method::GET, "/api/v1/contacts", None).await.status, StatusCode::OK);
    // The challenge is single-use, and the code works once.
    let r = app.mfa(&challenge, &app.next_code("steward")).await;
    assert_eq!((r.status, r.code()), (StatusCode::UNAUTHORIZED, "mfa_challenge_invalid"));
    let again = app.password_login("steward", PASSWORD).await.body["challenge"].as_str().unwrap().to_owned();
    let r = app.mfa(&again, &fresh).await;
    assert_eq!((r.status, r.code()), (StatusCode::UNAUTHORIZED, "invalid_mfa_code"), "replayed code");
    // Challenges are short-lived.
    app.clock.advance_secs(6 * 60);
    let r = app.mfa(&again, &app.current_code("steward")).await;
    assert_eq!((r.status, r.code()), (StatusCode::UNAUTHORIZED, "mfa_challenge_invalid"));
    let r = app.mfa("mfc_forged", "123456").await;
    assert_eq!(r.code(), "mfa_challenge_invalid");

    let actions = actions(&app).await;
    for a in [
        "mfa.enroll_start",
        "mfa.enroll_failed",
        "mfa.enroll_confirm",
        "auth.mfa_challenge",
        "auth.mfa_replay_refused",
        "auth.mfa_failed",
        "auth.mfa_success",
    ] {
        assert!(actions.iter().any(|x| x == a), "no {a} event");
    }
    assert!(actions.iter().filter(|a| *a == "access.denied").count() >= 5, "blocked calls are audited");
    let events = app.store.list_audit(0, 1_000_000).await.unwrap();
    custodian_store::audit::verify_chain(0, &custodian_core::audit::GENESIS_HASH, &events).unwrap();
});

both_backends!(an_unenrolled_privileged_user_may_log_out, |app: TestApp| async move {
    create_user(&app, "auditor1", "auditor").await;
    let token = app.password_login("auditor1", PASSWORD).await.body["token"].as_str().unwrap().to_owned();
    let r = as_user(&app, &token, Method::POST, "/api/v1/auth/logout", None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(as_user(&app, &token, Method::GET, "/api/v1/me", None).await.status, StatusCode::UNAUTHORIZED);
});

both_backends!(recovery_codes_work_once, |app: TestApp| async move {
    create_user(&app, "aud", "auditor").await;
    let token = app.password_login("aud", PASSWORD).await.body["token"].as_str().unwrap().to_owned();
    let codes = app.enrol(&token, "aud").await;
    let challenge = app.password_login("aud", PASSWORD).await.body["challenge"].as_str().unwrap().to_owned();
    // Typed in capitals with spaces instead of dashes, it still counts.
    let typed = codes[3].to_uppercase().replace('-', " ");
    let r = app.mfa(&challenge, &typed).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let session = r.body["token"].as_str().unwrap().to_owned();
    let me = as_user(&app, &session, Method::GET, "/api/v1/me", None).await;
    assert_eq!(me.body["recovery_codes_left"], 9);
    let challenge = app.password_login("aud", PASSWORD).await.body["challenge"].as_str().unwrap().to_owned();
    let r = app.mfa(&challenge, &codes[3]).await;
    assert_eq!((r.status, r.code()), (StatusCode::UNAUTHORIZED, "invalid_mfa_code"), "a used recovery code");
    let r = app.mfa(&challenge, "aaaa-bbbb-cccc-dddd").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "an unknown recovery code");
    let r = app.mfa(&challenge, &codes[4]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let events = app.store.list_audit(0, 1_000_000).await.unwrap();
    let used: Vec<_> = events.iter().filter(|e| e.action == "mfa.recovery_code_used").collect();
    assert_eq!(used.len(), 2);
    assert!(used[0].body.contains("\"recovery_codes_left\":9"), "{}", used[0].body);
});

both_backends!(wrong_codes_count_toward_the_login_throttle, |app: TestApp| async move {
    create_user(&app, "aud2", "auditor").await;
    app.login("aud2", PASSWORD).await; // enrols
    let challenge = app.password_login("aud2", PASSWORD).await.body["challenge"].as_str().unwrap().to_owned();
    for _ in 0..5 {
        let r = app.mfa(&challenge, "999999").await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    // Now even the right code waits, and so does the password.
    let r = app.mfa(&challenge, &app.next_code("aud2")).await;
    assert_eq!((r.status, r.code()), (StatusCode::TOO_MANY_REQUESTS, "throttled"), "{}", r.body);
    assert!(r.headers.get("retry-after").is_some());
    assert_eq!(app.password_login("aud2", PASSWORD).await.status, StatusCode::TOO_MANY_REQUESTS);
    let actions = actions(&app).await;
    assert_eq!(actions.iter().filter(|a| *a == "auth.mfa_failed").count(), 5);
    assert!(actions.iter().any(|a| a == "auth.mfa_throttled"));
});

both_backends!(step_up_opens_a_window_that_expires, |app: TestApp| async move {
    let contact = app.create("contacts", json!({"name": "李四", "id_number": "11010119900307803X"})).await;
    let reveal = format!("/api/v1/contacts/{}/reveal", contact["id"].as_str().unwrap());
    let r = app.post(&reveal, json!({"field": "id_number"})).await;
    assert_eq!((r.status, r.code()), (StatusCode::PRECONDITION_REQUIRED, "step_up_required"));
    // A wrong code, and a replayed one, open nothing.
    let r = app.post("/api/v1/auth/step-up", json!({"code": "000000"})).await;
    assert_eq!((r.status, r.code()), (StatusCode::UNAUTHORIZED, "invalid_mfa_code"));
    let used = app.current_code("admin"); // the admin's last login used this step
    let r = app.post("/api/v1/auth/step-up", json!({"code": used})).await;
    assert_eq!((r.status, r.code()), (StatusCode::UNAUTHORIZED, "invalid_mfa_code"));
    assert_eq!(app.get("/api/v1/me").await.body["stepped_up"], false);
    let code = app.next_code("admin");
    let r = app.post("/api/v1/auth/step-up", json!({"code": code})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.body["step_up_until"].is_string());
    let me = app.get("/api/v1/me").await.body;
    assert_eq!(me["stepped_up"], true);
    let r = app.post(&reveal, json!({"field": "id_number"})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["value"], "11010119900307803X");
    // The window belongs to this session only: another session of the same admin has none.
    let other = app.login("admin", common::ADMIN_PASSWORD).await;
    let r = as_user(&app, &other, Method::POST, &reveal, Some(json!({"field": "id_number"}))).await;
    assert_eq!(r.status, StatusCode::PRECONDITION_REQUIRED);
    // Four minutes later it is still open; after five it has closed.
    app.clock.advance_secs(4 * 60 - 30);
    assert_eq!(app.post(&reveal, json!({"field": "id_number"})).await.status, StatusCode::OK);
    app.clock.advance_secs(61);
    let r = app.post(&reveal, json!({"field": "id_number"})).await;
    assert_eq!((r.status, r.code()), (StatusCode::PRECONDITION_REQUIRED, "step_up_required"));
    assert_eq!(app.get("/api/v1/me").await.body["stepped_up"], false);
    let actions = actions(&app).await;
    for a in ["auth.step_up", "auth.step_up_failed", "auth.mfa_replay_refused", "record.reveal", "record.reveal_denied"]
    {
        assert!(actions.iter().any(|x| x == a), "no {a} event");
    }
});

both_backends!(sensitive_operations_answer_428_without_step_up, |app: TestApp| async move {
    let rep = create_user(&app, "rep", "sales_rep").await;
    let heir = create_user(&app, "heir", "sales_rep").await;
    let steward = create_user(&app, "stew", "data_steward").await;
    let steward_token = app.login("stew", PASSWORD).await;
    let cases = [
        (Method::PATCH, format!("/api/v1/users/{rep}"), Some(json!({"role": "sales_manager"}))),
        (Method::POST, format!("/api/v1/users/{rep}/suspend"), None),
        (Method::POST, format!("/api/v1/users/{steward}/mfa/reset"), None),
        (Method::POST, format!("/api/v1/users/{rep}/offboard"), Some(json!({"successor_id": heir}))),
    ];
    for (method, path, body) in &cases {
        let r = app.call(method.clone(), path, body.clone()).await;
        assert_eq!((r.status, r.code()), (StatusCode::PRECONDITION_REQUIRED, "step_up_required"), "{method} {path}");
    }
    // Nothing changed.
    let users = app.get("/api/v1/users").await.body;
    let rep_row = users["items"].as_array().unwrap().iter().find(|u| u["username"] == "rep").unwrap().clone();
    assert_eq!((rep_row["role"].as_str(), rep_row["status"].as_str()), (Some("sales_rep"), Some("active")));
    assert_eq!(as_user(&app, &steward_token, Method::GET, "/api/v1/me", None).await.status, StatusCode::OK);
    // A display-name change is not sensitive.
    let r = app.call(Method::PATCH, &format!("/api/v1/users/{rep}"), Some(json!({"display_name": "小王"}))).await;
    assert_eq!(r.status, StatusCode::OK);

    app.admin_step_up().await;
    for (method, path, body) in &cases {
        let r = app.call(method.clone(), path, body.clone()).await;
        assert_eq!(r.status, StatusCode::OK, "{method} {path}: {}", r.body);
    }
    // The MFA reset ended the steward's sessions; at the next login the steward must enrol again.
    assert_eq!(as_user(&app, &steward_token, Method::GET, "/api/v1/me", None).await.status, StatusCode::UNAUTHORIZED);
    let r = app.password_login("stew", PASSWORD).await;
    assert!(r.body["token"].is_string(), "no challenge without a factor: {}", r.body);
    let token = r.body["token"].as_str().unwrap();
    let r = as_user(&app, token, Method::GET, "/api/v1/contacts", None).await;
    assert_eq!(r.code(), "mfa_enrollment_required");
    // Nobody resets their own factor.
    let me = app.get("/api/v1/me").await.body["id"].as_str().unwrap().to_owned();
    let r = app.post(&format!("/api/v1/users/{me}/mfa/reset"), json!({})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let actions = actions(&app).await;
    assert!(actions.iter().any(|a| a == "mfa.reset"));
    let events = app.store.list_audit(0, 1_000_000).await.unwrap();
    let refused: Vec<_> =
        events.iter().filter(|e| e.action == "access.denied" && e.body.contains("step_up_required")).collect();
    assert!(refused.len() >= 4, "every 428 is audited: {}", refused.len());
});

both_backends!(cookie_sessions_need_the_csrf_token_for_unsafe_methods, |app: TestApp| async move {
    create_user(&app, "browser", "sales_rep").await;
    let r = app.password_login("browser", PASSWORD).await;
    let token = r.body["token"].as_str().unwrap().to_owned();
    let csrf = r.body["csrf_token"].as_str().unwrap().to_owned();
    let set_cookie = r.headers.get("set-cookie").unwrap().to_str().unwrap().to_owned();
    assert!(set_cookie.starts_with(&format!("custodian_session={token};")), "{set_cookie}");
    for attribute in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    let cookie = format!("custodian_session={token}");
    let body = || Some(json!({"fields": {"name": "王五"}}).to_string().into_bytes());
    // Safe methods: the cookie is enough.
    let r = app.raw(Method::GET, "/api/v1/contacts", None, None, &[("cookie", &cookie)]).await;
    assert_eq!(r.status, StatusCode::OK);
    // Unsafe methods: missing, wrong, or another session's token → 403 csrf_failed.
    let other_csrf = app.password_login("browser", PASSWORD).await.body["csrf_token"].as_str().unwrap().to_owned();
    assert_ne!(other_csrf, csrf, "bound to the session");
    for headers in [
        vec![("cookie", cookie.as_str())],
        vec![("cookie", cookie.as_str()), ("x-csrf-token", "")],
        vec![("cookie", cookie.as_str()), ("x-csrf-token", other_csrf.as_str())],
    ] {
        let r = app.raw(Method::POST, "/api/v1/contacts", None, body(), &headers).await;
        assert_eq!((r.status, r.code()), (StatusCode::FORBIDDEN, "csrf_failed"), "{headers:?}");
    }
    let r =
        app.raw(Method::POST, "/api/v1/contacts", None, body(), &[("cookie", &cookie), ("x-csrf-token", &csrf)]).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let id = r.body["id"].as_str().unwrap().to_owned();
    let r = app.raw(Method::DELETE, &format!("/api/v1/contacts/{id}"), None, None, &[("cookie", &cookie)]).await;
    assert_eq!(r.code(), "csrf_failed");
    let r = app
        .raw(
            Method::DELETE,
            &format!("/api/v1/contacts/{id}"),
            None,
            None,
            &[("cookie", &cookie), ("x-csrf-token", &csrf)],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    // Bearer requests need no CSRF token.
    let r = app.raw(Method::POST, "/api/v1/contacts", Some(&token), body(), &[]).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let refused = actions(&app).await.iter().filter(|a| *a == "auth.csrf_failed").count();
    assert_eq!(refused, 4);

    // For plain-HTTP development the Secure attribute can be turned off.
    let router =
        custodian_server::app_with_options(app.service.clone(), custodian_server::AppOptions { secure_cookies: false });
    let request = Request::builder()
        .method(Method::POST)
        .uri("/api/v1/auth/login")
        .header("content-type", "application/json")
        .body(Body::from(json!({"username": "browser", "password": PASSWORD}).to_string()))
        .unwrap();
    let response = router.oneshot(request).await.unwrap();
    let set_cookie = response.headers().get("set-cookie").unwrap().to_str().unwrap();
    assert!(set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict"), "{set_cookie}");
    assert!(!set_cookie.contains("Secure"), "{set_cookie}");
});

both_backends!(weak_passwords_are_refused_with_the_reason, |app: TestApp| async move {
    for (username, password) in
        [("weak1", "Password123!"), ("alice.wang", "alice.wang1985"), ("weak3", "qwertyuiopasdf")]
    {
        let r =
            app.post("/api/v1/users", json!({"username": username, "password": password, "role": "sales_rep"})).await;
        assert_eq!((r.status, r.code()), (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"), "{password}");
        assert_eq!(r.body["error"]["details"][0]["field"], "password");
        assert_eq!(r.body["error"]["details"][0]["code"], "password_weak", "{}", r.body);
        let strength = &r.body["error"]["password_strength"];
        assert!(strength["score"].as_u64().unwrap() < 3 && strength["min_score"] == 3, "{}", r.body);
    }
    let r = app.post("/api/v1/users", json!({"username": "short", "password": "short", "role": "sales_rep"})).await;
    assert_eq!(r.body["error"]["details"][0]["code"], "password_too_short");
    let r = app
        .post(
            "/api/v1/users",
            json!({"username": "strong", "password": "violet tractor quietly sings", "role": "sales_rep"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(app.get("/api/v1/users").await.body["items"].as_array().unwrap().len(), 2);
});
