//! The audit log (query, CSV export, verification), anomaly alerts and their rules, and change
//! notifications (issue 5).

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Auth, JsonBody, PathParams, QueryPairs};
use crate::openapi::ErrorBody;
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use custodian_core::ErrorCode;
use custodian_service::{AuditEventView, AuditParams, ServiceError};
use futures::StreamExt;
use serde_json::json;
use uuid::Uuid;

fn unknown(k: &str, allowed: &str) -> ApiError {
    ApiError(ServiceError::invalid_query(
        k,
        "unknown_parameter",
        format!("Unknown parameter {k}; use {allowed}."),
        format!("未知参数 {k}。"),
    ))
}

/// The filters of an audit query, and whether CSV was asked for with `format=csv`.
fn audit_params(pairs: Vec<(String, String)>) -> ApiResult<(AuditParams, bool)> {
    let mut p = AuditParams::default();
    let mut csv = false;
    for (k, v) in pairs {
        let slot = match k.as_str() {
            "actor" | "actor_id" => &mut p.actor,
            "object" => &mut p.object,
            "record_id" | "record" => &mut p.record_id,
            "action" => &mut p.action,
            "from" => &mut p.from,
            "to" => &mut p.to,
            "cursor" => &mut p.cursor,
            "limit" => &mut p.limit,
            "format" => {
                match v.as_str() {
                    "csv" => csv = true,
                    "json" => csv = false,
                    _ => {
                        return Err(ApiError(ServiceError::invalid_query(
                            "format",
                            "invalid_value",
                            "format is json or csv.",
                            "format 须为 json 或 csv。",
                        )));
                    }
                }
                continue;
            }
            _ => return Err(unknown(&k, "actor, object, record_id, action, from, to, cursor, limit, format")),
        };
        *slot = Some(v);
    }
    Ok((p, csv))
}

#[utoipa::path(get, path = "/api/v1/audit/events", tag = "audit",
    params(("actor" = Option<Uuid>, Query, description = "User id of the actor"),
           ("object" = Option<String>, Query), ("record_id" = Option<Uuid>, Query),
           ("action" = Option<String>, Query, description = "Exact action, or a prefix ending in '.' or '*' (record.)"),
           ("from" = Option<String>, Query, description = "RFC 3339, inclusive"), ("to" = Option<String>, Query, description = "RFC 3339, inclusive"),
           ("cursor" = Option<String>, Query), ("limit" = Option<u32>, Query, description = "Page size, 1-500"),
           ("format" = Option<String>, Query, description = "json (default) or csv (the whole filtered log, like events.csv)")),
    description = "Audit events newest first, for auditors and admins. Diffs follow the caller's field access (hidden fields absent, masked ones masked). Every query is itself an audit event (audit.query).",
    responses((status = 200, description = "{items, next_cursor}"), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn audit_events(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    QueryPairs(pairs): QueryPairs,
) -> ApiResult<Response> {
    let (params, csv) = audit_params(pairs)?;
    if csv {
        return export(&state, &ctx, &params).await;
    }
    Ok(Json(state.service.query_audit_events(&ctx, &params).await?).into_response())
}

#[utoipa::path(get, path = "/api/v1/audit/events.csv", tag = "audit",
    params(("actor" = Option<Uuid>, Query), ("object" = Option<String>, Query), ("record_id" = Option<Uuid>, Query),
           ("action" = Option<String>, Query), ("from" = Option<String>, Query), ("to" = Option<String>, Query)),
    description = "Every audit event matching the filters as CSV (streamed, newest first). The export is itself audited (audit.export, with the filter and row count) before the first row is sent.",
    responses((status = 200, content_type = "text/csv"), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn audit_events_csv(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    QueryPairs(pairs): QueryPairs,
) -> ApiResult<Response> {
    let (params, _) = audit_params(pairs)?;
    export(&state, &ctx, &params).await
}

const CSV_HEADER: [&str; 15] = [
    "seq",
    "at",
    "actor_id",
    "action",
    "object",
    "record_id",
    "request_id",
    "ip",
    "user_agent",
    "actor_role",
    "session_id",
    "token_id",
    "details",
    "masked_fields",
    "hash",
];

/// A cell that a spreadsheet would run as a formula is prefixed with an apostrophe.
fn cell(text: String) -> String {
    if text.starts_with(['=', '+', '-', '@', '\t', '\r']) { format!("'{text}") } else { text }
}

fn csv_bytes(rows: &[&[String]]) -> Result<Bytes, ServiceError> {
    let mut w = csv::Writer::from_writer(Vec::new());
    for row in rows {
        w.write_record(*row).map_err(|_| ServiceError::new(ErrorCode::Internal))?;
    }
    w.into_inner().map(Bytes::from).map_err(|_| ServiceError::new(ErrorCode::Internal))
}

fn csv_row(e: &AuditEventView) -> Vec<String> {
    let opt = |v: &Option<String>| cell(v.clone().unwrap_or_default());
    vec![
        e.seq.to_string(),
        e.at.clone(),
        e.actor_id.map(|u| u.to_string()).unwrap_or_default(),
        cell(e.action.clone()),
        opt(&e.object),
        e.record_id.map(|u| u.to_string()).unwrap_or_default(),
        opt(&e.request_id),
        opt(&e.ip),
        opt(&e.user_agent),
        opt(&e.actor_role),
        opt(&e.session_id),
        opt(&e.token_id),
        cell(e.details.to_string()),
        e.masked_fields.join(" "),
        e.hash.clone(),
    ]
}

async fn export(
    state: &AppState,
    ctx: &custodian_service::RequestContext,
    params: &AuditParams,
) -> ApiResult<Response> {
    let export = state.service.export_audit_events(ctx, params).await?;
    let header: Vec<String> = CSV_HEADER.iter().map(|s| (*s).to_owned()).collect();
    let head = futures::stream::once(async move { csv_bytes(&[&header]) });
    let rows = export.events.chunks(200).map(|chunk| {
        let mut lines = Vec::with_capacity(chunk.len());
        for event in chunk {
            lines.push(csv_row(&event?));
        }
        let refs: Vec<&[String]> = lines.iter().map(Vec::as_slice).collect();
        csv_bytes(&refs)
    });
    let mut response = Response::new(Body::from_stream(head.chain(rows)));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/csv; charset=utf-8"));
    headers.insert(header::CONTENT_DISPOSITION, HeaderValue::from_static("attachment; filename=\"audit-events.csv\""));
    if let Ok(v) = HeaderValue::from_str(&export.rows.to_string()) {
        headers.insert("x-row-count", v);
    }
    Ok(response)
}

#[utoipa::path(post, path = "/api/v1/audit/verify", tag = "audit",
    description = "Runs the verifier of `custodian audit verify` over the stored hash chain and the server's signed checkpoint file: {intact, status, first_bad_seq, first_bad_reason, events, checkpoints_verified, …}. Auditors and admins; audited (audit.verify). One verification at a time per server (429 otherwise).",
    responses((status = 200), (status = 403, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn audit_verify(State(state): State<AppState>, Auth(ctx): Auth) -> ApiResult<Response> {
    Ok(Json(state.service.verify_audit(&ctx).await?).into_response())
}

fn paging(pairs: Vec<(String, String)>) -> ApiResult<(Option<String>, Option<u32>)> {
    let mut cursor = None;
    let mut limit = None;
    for (k, v) in pairs {
        match k.as_str() {
            "cursor" => cursor = Some(v),
            "limit" => {
                limit = Some(v.trim().parse::<u32>().map_err(|_| {
                    ApiError(ServiceError::invalid_query(
                        "limit",
                        "invalid_value",
                        "limit must be a positive integer.",
                        "limit 须为正整数。",
                    ))
                })?)
            }
            _ => return Err(unknown(&k, "cursor, limit")),
        }
    }
    Ok((cursor, limit))
}

/// An id that is not a UUID names nothing: 404.
fn parse_id(text: &str) -> ApiResult<Uuid> {
    Uuid::parse_str(text).map_err(|_| ApiError::code(ErrorCode::NotFound))
}

#[utoipa::path(get, path = "/api/v1/alerts", tag = "alerts",
    params(("cursor" = Option<String>, Query), ("limit" = Option<u32>, Query)),
    description = "Anomaly alerts newest first (auditors and admins).",
    responses((status = 200, description = "{items, next_cursor}"), (status = 403, body = ErrorBody)))]
pub async fn list_alerts(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    QueryPairs(pairs): QueryPairs,
) -> ApiResult<Response> {
    let (cursor, limit) = paging(pairs)?;
    Ok(Json(state.service.list_alerts(&ctx, cursor.as_deref(), limit).await?).into_response())
}

#[utoipa::path(post, path = "/api/v1/alerts/{id}/ack", tag = "alerts", params(("id" = Uuid, Path)),
    description = "Acknowledges an alert (auditors and admins; audited as alert.ack).",
    responses((status = 200), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn ack_alert(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    PathParams(id): PathParams<String>,
) -> ApiResult<Response> {
    Ok(Json(state.service.ack_alert(&ctx, parse_id(&id)?).await?).into_response())
}

#[utoipa::path(get, path = "/api/v1/alert-rules", tag = "alerts",
    description = "Every anomaly rule (one per metric: distinct_records_viewed, reveals, export_rows, failed_logins, off_hours). Auditors and admins.",
    responses((status = 200), (status = 403, body = ErrorBody)))]
pub async fn list_alert_rules(State(state): State<AppState>, Auth(ctx): Auth) -> ApiResult<Response> {
    Ok(Json(json!({ "items": state.service.list_alert_rules(&ctx).await? })).into_response())
}

#[utoipa::path(put, path = "/api/v1/alert-rules/{metric}", tag = "alerts", params(("metric" = String, Path)), request_body = Object,
    description = "Replaces a rule: {\"enabled\", \"window_secs\", \"absolute\", \"baseline_multiple\", \"baseline_min\", \"auto_suspend\", \"working_hours\": {\"timezone\", \"start\", \"end\", \"weekdays\"}}. Admins only; audited with the old and new rule.",
    responses((status = 200), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn put_alert_rule(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    PathParams(metric): PathParams<String>,
    JsonBody(body): JsonBody<serde_json::Value>,
) -> ApiResult<Response> {
    Ok(Json(state.service.put_alert_rule(&ctx, &metric, body).await?).into_response())
}

#[utoipa::path(get, path = "/api/v1/notifications", tag = "notifications",
    params(("cursor" = Option<String>, Query), ("limit" = Option<u32>, Query)),
    description = "The caller's own change notifications (owner, deal stage and amount changes of their records or their team's), newest first.",
    responses((status = 200, description = "{items, next_cursor}")))]
pub async fn list_notifications(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    QueryPairs(pairs): QueryPairs,
) -> ApiResult<Response> {
    let (cursor, limit) = paging(pairs)?;
    Ok(Json(state.service.list_notifications(&ctx, cursor.as_deref(), limit).await?).into_response())
}

#[utoipa::path(post, path = "/api/v1/notifications/{id}/ack", tag = "notifications", params(("id" = Uuid, Path)),
    description = "Signs off one of the caller's notifications (签字确认), recorded as the audit event notification.ack. Someone else's notification is 404.",
    responses((status = 200), (status = 404, body = ErrorBody)))]
pub async fn ack_notification(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    PathParams(id): PathParams<String>,
) -> ApiResult<Response> {
    Ok(Json(state.service.ack_notification(&ctx, parse_id(&id)?).await?).into_response())
}
