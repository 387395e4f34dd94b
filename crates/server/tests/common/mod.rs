//! A test harness: the full application (router + service + store) in process, on SQLite or on
//! a fresh PostgreSQL database, with an admin logged in.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use custodian_crypto::MasterKey;
use custodian_service::{Service, ServiceConfig, load_keyring};
use custodian_store::Store;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use std::any::Any;
use std::sync::Arc;
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
    let service = Arc::new(Service::new(store.clone(), keyring, ServiceConfig::default()).await.unwrap());
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
        self.service = Arc::new(Service::new(self.store.clone(), keyring, config).await.unwrap());
        self.router = custodian_server::app(self.service.clone());
        self
    }

    pub async fn login(&self, username: &str, password: &str) -> String {
        let r = self
            .raw(
                Method::POST,
                "/api/v1/auth/login",
                None,
                Some(json!({"username": username, "password": password}).to_string().into_bytes()),
                &[],
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "login failed: {}", r.body);
        r.body["token"].as_str().unwrap().to_owned()
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
        let response = self.router.clone().oneshot(request).await.unwrap();
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
