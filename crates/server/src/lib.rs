//! The HTTP server: axum routes, extractors, error rendering, OpenAPI, health and metrics.
//! This is the only crate that knows HTTP; everything it does to data is a call on
//! `custodian_service::Service`.

pub mod error;
pub mod extract;
pub mod openapi;
mod routes;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use custodian_core::ErrorCode;
use custodian_service::Service;
use error::ApiError;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Largest accepted request body.
pub const BODY_LIMIT_BYTES: usize = 1024 * 1024;

#[derive(Clone)]
pub struct AppState {
    pub service: Arc<Service>,
    pub options: AppOptions,
    metrics: PrometheusHandle,
    openapi: Arc<serde_json::Value>,
}

/// HTTP-level settings.
#[derive(Debug, Clone)]
pub struct AppOptions {
    /// Mark the session cookie `Secure` (sent over HTTPS only). Turn off only for plain-HTTP
    /// development on localhost.
    pub secure_cookies: bool,
}

impl Default for AppOptions {
    fn default() -> Self {
        AppOptions { secure_cookies: true }
    }
}

/// The process-wide Prometheus recorder (installed once; later calls share it).
fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// Every API route, registered together with its OpenAPI description.
fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(routes::auth::login))
        .routes(routes!(routes::auth::logout))
        .routes(routes!(routes::auth::me))
        .routes(routes!(routes::auth::my_sessions, routes::auth::end_my_sessions))
        .routes(routes!(routes::auth::end_session))
        .routes(routes!(routes::auth::create_token))
        .routes(routes!(routes::mfa::login_mfa))
        .routes(routes!(routes::mfa::start_enrolment))
        .routes(routes!(routes::mfa::confirm_enrolment))
        .routes(routes!(routes::mfa::step_up))
        .routes(routes!(routes::mfa::reset_user_mfa))
        .routes(routes!(routes::admin::update_user))
        .routes(routes!(routes::admin::suspend_user))
        .routes(routes!(routes::admin::reactivate_user))
        .routes(routes!(routes::admin::offboard_user))
        .routes(routes!(routes::admin::list_users, routes::admin::create_user))
        .routes(routes!(routes::admin::list_departments, routes::admin::create_department))
        .routes(routes!(routes::admin::list_teams, routes::admin::create_team))
        .routes(routes!(routes::admin::update_department))
        .routes(routes!(routes::admin::update_team))
        .routes(routes!(routes::access::list_roles, routes::access::create_role))
        .routes(routes!(routes::access::get_role, routes::access::update_role, routes::access::delete_role))
        .routes(routes!(routes::access::list_grants, routes::access::create_grant))
        .routes(routes!(routes::access::revoke_grant))
        .routes(routes!(routes::admin::schema))
        .routes(routes!(routes::admin::object_schema))
        .routes(routes!(routes::admin::add_field))
        .routes(routes!(routes::admin::field_rules, routes::admin::put_field_rules))
        .routes(routes!(routes::admin::rule_check))
        .routes(routes!(routes::monitor::audit_events))
        .routes(routes!(routes::monitor::audit_events_csv))
        .routes(routes!(routes::monitor::audit_verify))
        .routes(routes!(routes::backups::create, routes::backups::list))
        .routes(routes!(routes::keys::status))
        .routes(routes!(routes::keys::rotate))
        .routes(routes!(routes::keys::reseal))
        .routes(routes!(routes::keys::job))
        .routes(routes!(routes::monitor::list_alerts))
        .routes(routes!(routes::monitor::ack_alert))
        .routes(routes!(routes::monitor::list_alert_rules))
        .routes(routes!(routes::monitor::put_alert_rule))
        .routes(routes!(routes::monitor::list_notifications))
        .routes(routes!(routes::monitor::ack_notification))
        .routes(routes!(routes::duplicates::start_scan))
        .routes(routes!(routes::duplicates::scan_job))
        .routes(routes!(routes::duplicates::start_backfill))
        .routes(routes!(routes::duplicates::backfill_job))
        .routes(routes!(routes::duplicates::list))
        .routes(routes!(routes::duplicates::dismiss))
        .routes(routes!(routes::duplicates::merge))
        .routes(routes!(routes::duplicates::get_merge))
        .routes(routes!(routes::duplicates::undo_merge))
        .routes(routes!(routes::records::list, routes::records::create))
        .routes(routes!(routes::records::get, routes::records::update, routes::records::delete))
        .routes(routes!(routes::records::restore))
        .routes(routes!(routes::records::transfer))
        .routes(routes!(routes::records::bulk_delete))
        .routes(routes!(routes::records::export))
        .routes(routes!(routes::records::trace_leak))
        .routes(routes!(routes::records::import))
        .routes(routes!(routes::records::revert_import))
        .routes(routes!(routes::records::convert_lead))
        .routes(routes!(routes::records::reveal))
        .routes(routes!(routes::records::as_of))
        .routes(routes!(routes::records::diff))
        .routes(routes!(routes::records::revert))
        .routes(routes!(routes::records::history))
        .routes(routes!(routes::records::history_version))
}

/// The OpenAPI document of `api_routes` (also used by tests to enumerate routes).
pub fn openapi_document(service: &Service) -> serde_json::Value {
    let (_, api) = api_routes().split_for_parts();
    let doc = serde_json::to_value(&api).unwrap_or_default();
    openapi::finish_document(doc, service)
}

/// Builds the application with all middleware and default options. `service` is shared by
/// every request.
pub fn app(service: Arc<Service>) -> Router {
    app_with_options(service, AppOptions::default())
}

/// Builds the application with all middleware.
pub fn app_with_options(service: Arc<Service>, options: AppOptions) -> Router {
    let (api_router, api) = api_routes().split_for_parts();
    let doc =
        openapi::complete_document(serde_json::to_value(&api).unwrap_or_default(), service.config().max_page_size);
    let state = AppState { service, options, metrics: metrics_handle(), openapi: Arc::new(doc) };
    let request_id = HeaderName::from_static("x-request-id");
    Router::new()
        .merge(api_router)
        .route("/api/v1/openapi.json", get(openapi_json))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(record_metrics))
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT_BYTES))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, Duration::from_secs(30)))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            let id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("");
            tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
        }))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .layer(SetSensitiveRequestHeadersLayer::new([header::AUTHORIZATION, header::COOKIE]))
        .with_state(state)
}

async fn openapi_json(State(state): State<AppState>) -> Response {
    // Custom fields change the document: add the schema-driven part on each request.
    let doc = openapi::with_schema((*state.openapi).clone(), &state.service.schema());
    axum::Json(doc).into_response()
}

async fn healthz(State(state): State<AppState>) -> Response {
    match state.service.store().health().await {
        Ok(()) => {
            axum::Json(serde_json::json!({ "status": "ok", "store": state.service.store().backend() })).into_response()
        }
        Err(_) => ApiError::code(ErrorCode::Unavailable).into_response(),
    }
}

async fn metrics_text(State(state): State<AppState>) -> Response {
    let mut text = state.metrics.render();
    writer_metrics(&mut text, &state.service.store().writer_stats());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// The store writer's totals (`custodian_store::WriterStats`) in the Prometheus text format,
/// read when scraped: `rate(custodian_store_writer_busy_seconds_total[1m])` near 1 means the
/// single writer is the limit of writes and audited reads.
fn writer_metrics(text: &mut String, stats: &custodian_store::WriterStats) {
    use std::fmt::Write;
    let lines = [
        ("custodian_store_writer_groups_total", "Group transactions run by the store's writer.", stats.groups as f64),
        ("custodian_store_writer_jobs_total", "Writes and audit appends in those groups.", stats.jobs as f64),
        (
            "custodian_store_writer_busy_seconds_total",
            "Time the writer spent running groups.",
            stats.busy.as_secs_f64(),
        ),
        (
            "custodian_store_writer_upkeep_seconds_total",
            "Time the writer spent on upkeep between groups (SQLite: WAL checkpoints, statistics).",
            stats.upkeep.as_secs_f64(),
        ),
    ];
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    for (name, help, value) in lines {
        let _ = write!(text, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n");
    }
}

async fn not_found() -> Response {
    ApiError::code(ErrorCode::NotFound).into_response()
}

async fn method_not_allowed() -> Response {
    ApiError::code(ErrorCode::MethodNotAllowed).into_response()
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    ApiError::code(ErrorCode::Internal).into_response()
}

async fn record_metrics(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route =
        req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "unmatched".into());
    let method = req.method().to_string();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("custodian_http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status).increment(1);
    metrics::histogram!("custodian_http_request_duration_seconds", "method" => method, "route" => route)
        .record(start.elapsed().as_secs_f64());
    response
}

/// Serves `app` on `listener` until `shutdown` resolves, then finishes in-flight requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>())
        .with_graceful_shutdown(shutdown)
        .await
}
