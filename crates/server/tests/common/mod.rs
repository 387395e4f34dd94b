//! A test harness: the full application (router + service + store) in process, on SQLite or on
//! a fresh PostgreSQL database, with an admin logged in (and enrolled in MFA, which the admin
//! role requires). The service runs on a manual clock: every TOTP code the harness computes
//! first moves it 30 seconds on, so each code is of a new time step (codes work once).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use custodian_crypto::MasterKey;
use custodian_service::{Clock, ManualClock, Service, ServiceConfig, load_keyring};
use custodian_store::Store;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tower::ServiceExt;

pub const ADMIN_PASSWORD: &str = "correct horse battery staple";

pub struct TestApp {
    pub router: Router,
    pub service: Arc<Service>,
    pub store: Arc<dyn Store>,
    pub token: String,
    pub backend: &'static str,
    /// SQLite: the data directory; PostgreSQL: the database URL.
    pub location: String,
    /// The master key (hex), to build further services over the same store.
    pub master_hex: String,
    /// Moves the service's clock (TOTP steps, step-up windows, challenge expiry).
    pub clock: ManualClock,
    /// TOTP secrets of the users the harness enrolled, by username.
    pub mfa_secrets: Mutex<HashMap<String, Vec<u8>>>,
    /// The time step of the last code `next_code` computed. The manual clock runs with the
    /// system clock plus an offset, so real time may cross a step boundary after it: "the code
    /// just used" must be that step's, not the current one's.
    pub last_step: Mutex<Option<i64>>,
    _guard: Box<dyn Any + Send + Sync>,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Reply {
    pub fn code(&self) -> &str {
        self.body.pointer("/error/code").and_then(Value::as_str).unwrap_or("")
    }
}

async fn build(store: Arc<dyn Store>, guard: Box<dyn Any + Send + Sync>, location: String) -> TestApp {
    let master_hex = hex::encode(custodian_crypto::random_bytes::<32>().unwrap());
    let master = MasterKey::from_hex(&master_hex).unwrap();
    let keyring = load_keyring(store.as_ref(), &master).await.unwrap();
    let (clock, manual) = Clock::manual();
    let config = ServiceConfig { clock, ..ServiceConfig::default() };
    let service = Arc::new(Service::new(store.clone(), keyring, config).await.unwrap());
    service.ensure_admin(Some(ADMIN_PASSWORD.into())).await.unwrap();
    let router = custodian_server::app(service.clone());
    let mut app = TestApp {
        router,
        service,
        backend: store.backend(),
        store,
        token: String::new(),
        location,
        master_hex,
        clock: manual,
        mfa_secrets: Mutex::new(HashMap::new()),
        last_step: Mutex::new(None),
        _guard: guard,
    };
    app.token = app.login("admin", ADMIN_PASSWORD).await;
    app
}

pub async fn sqlite_app() -> Option<TestApp> {
    let (store, dir) = custodian_store_tests::sqlite_test_store().await;
    let location = dir.path().display().to_string();
    Some(build(Arc::new(store), Box::new(dir), location).await)
}

pub async fn postgres_app() -> Option<TestApp> {
    let (store, db) = custodian_store_tests::postgres_test_store().await?;
    let location = db.url().to_owned();
    Some(build(Arc::new(store), Box::new(db), location).await)
}

impl TestApp {
    /// The same store and admin session behind a service built with `config`.
    pub async fn reconfigure(mut self, config: ServiceConfig) -> TestApp {
        let master = MasterKey::from_hex(&self.master_hex).unwrap();
        let keyring = load_keyring(self.store.as_ref(), &master).await.unwrap();
        // The same manual clock, so the harness's TOTP codes keep working.
        let config = ServiceConfig { clock: self.service.config().clock.clone(), ..config };
        self.service = Arc::new(Service::new(self.store.clone(), keyring, config).await.unwrap());
        self.router = custodian_server::app(self.service.clone());
        self
    }

    /// Logs in like a person would: password, then (for a user the harness enrolled) a TOTP
    /// code for the challenge; a user whose role requires MFA and who has none is enrolled on
    /// the spot. Returns a token that can use the whole API.
    pub async fn login(&self, username: &str, password: &str) -> String {
        let r = self.password_login(username, password).await;
        assert_eq!(r.status, StatusCode::OK, "login failed: {}", r.body);
        let token = if r.body["mfa_required"] == json!(true) {
            let code = self.next_code(username);
            let r = self.mfa(r.body["challenge"].as_str().unwrap(), &code).await;
            assert_eq!(r.status, StatusCode::OK, "MFA login failed: {}", r.body);
            r.body["token"].as_str().unwrap().to_owned()
        } else {
            r.body["token"].as_str().unwrap().to_owned()
        };
        let me = self.raw(Method::GET, "/api/v1/me", Some(&token), None, &[]).await;
        if me.body["mfa_enrollment_required"] == json!(true) {
            self.enrol(&token, username).await;
        }
        token
    }

    /// `POST /auth/login` only.
    pub async fn password_login(&self, username: &str, password: &str) -> Reply {
        self.raw(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(json!({"username": username, "password": password}).to_string().into_bytes()),
            &[],
        )
        .await
    }

    /// `POST /auth/mfa`.
    pub async fn mfa(&self, challenge: &str, code: &str) -> Reply {
        self.raw(
            Method::POST,
            "/api/v1/auth/mfa",
            None,
            Some(json!({"challenge": challenge, "code": code}).to_string().into_bytes()),
            &[],
        )
        .await
    }

    /// Enrols the token's user in TOTP; remembers the secret and returns the recovery codes.
    pub async fn enrol(&self, token: &str, username: &str) -> Vec<String> {
        let r = self.raw(Method::POST, "/api/v1/auth/mfa/enroll", Some(token), None, &[]).await;
        assert_eq!(r.status, StatusCode::OK, "enrolment failed: {}", r.body);
        let secret = custodian_crypto::totp::secret_from_base32(r.body["secret"].as_str().unwrap()).unwrap();
        self.mfa_secrets.lock().unwrap().insert(username.to_owned(), secret);
        let code = self.next_code(username);
        let r = self
            .raw(
                Method::POST,
                "/api/v1/auth/mfa/enroll/confirm",
                Some(token),
                Some(json!({ "code": code }).to_string().into_bytes()),
                &[],
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "enrolment confirmation failed: {}", r.body);
        r.body["recovery_codes"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_owned()).collect()
    }

    /// Moves the clock to the next TOTP step and returns the user's code for it.
    pub fn next_code(&self, username: &str) -> String {
        self.clock.advance_secs(custodian_crypto::totp::STEP_SECS);
        let step = custodian_crypto::totp::step_at(self.service.config().clock.now_secs());
        *self.last_step.lock().unwrap() = Some(step);
        self.code_at(username, step)
    }

    /// The user's code for the step `next_code` used last (the current step before any): the
    /// code just used, without moving the clock.
    pub fn current_code(&self, username: &str) -> String {
        let step = self
            .last_step
            .lock()
            .unwrap()
            .unwrap_or_else(|| custodian_crypto::totp::step_at(self.service.config().clock.now_secs()));
        self.code_at(username, step)
    }

    fn code_at(&self, username: &str, step: i64) -> String {
        let secret = self.mfa_secrets.lock().unwrap().get(username).cloned().expect("user enrolled by the harness");
        custodian_crypto::totp::code_for_step(&secret, step)
    }

    /// Opens a step-up window on `token`'s session with a fresh code.
    pub async fn step_up(&self, token: &str, username: &str) -> Reply {
        let code = self.next_code(username);
        self.raw(
            Method::POST,
            "/api/v1/auth/step-up",
            Some(token),
            Some(json!({ "code": code }).to_string().into_bytes()),
            &[],
        )
        .await
    }

    /// Steps up the admin session of the harness (for sensitive operations).
    pub async fn admin_step_up(&self) {
        let r = self.step_up(&self.token, "admin").await;
        assert_eq!(r.status, StatusCode::OK, "admin step-up failed: {}", r.body);
    }

    /// A request with the admin's token (or none when `token` is `None`).
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Vec<u8>>,
        headers: &[(&str, &str)],
    ) -> Reply {
        self.raw_via(&self.router, method, path, token, body, headers).await
    }

    /// `raw` through another router (another server over the same store).
    pub async fn raw_via(
        &self,
        router: &Router,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Vec<u8>>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut builder = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            builder = builder.header("authorization", format!("Bearer {t}"));
        }
        let has_body = body.is_some();
        if has_body && !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-type")) {
            builder = builder.header("content-type", "application/json");
        }
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        let request = builder.body(body.map(Body::from).unwrap_or_else(Body::empty)).unwrap();
        let response = router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Reply { status, headers, body }
    }

    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        self.raw(method, path, Some(&self.token), body.map(|b| b.to_string().into_bytes()), &[]).await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn create(&self, object: &str, fields: Value) -> Value {
        let r = self.post(&format!("/api/v1/{object}"), json!({ "fields": fields })).await;
        assert_eq!(r.status, StatusCode::CREATED, "create {object} failed: {}", r.body);
        r.body
    }
}

/// Runs one async test body against SQLite and (when reachable) PostgreSQL.
#[macro_export]
macro_rules! both_backends {
    ($name:ident, $body:expr) => {
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let app = common::sqlite_app().await.unwrap();
                ($body)(app).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let Some(app) = common::postgres_app().await else { return };
                ($body)(app).await;
            }
        }
    };
}

// ---- helpers shared by the HTTP test files ----------------------------------------------

/// The password the test files give the users they create.
pub const PASSWORD: &str = "a long enough password";

/// The `id` of a record (or user) body.
pub fn id_of(v: &Value) -> String {
    v["id"].as_str().unwrap().to_owned()
}

/// Creates a user (as the admin) with `PASSWORD` and returns their session token.
pub async fn user(app: &TestApp, name: &str, role: &str) -> String {
    let r = app.post("/api/v1/users", json!({"username": name, "password": PASSWORD, "role": role})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    app.login(name, PASSWORD).await
}

/// A request with another user's token.
pub async fn as_user(app: &TestApp, token: &str, method: Method, path: &str, body: Option<Value>) -> Reply {
    app.raw(method, path, Some(token), body.map(|b| b.to_string().into_bytes()), &[]).await
}
