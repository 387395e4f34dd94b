//! Record endpoints for every object: CRUD, restore, history.

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Auth, CsvBody, JsonBody, OptionalJsonBody, PathParams, QueryPairs};
use crate::openapi::{
    ConfirmNotDuplicateBody, ErrorBody, HistoryDoc, OverrideBody, RecordBody, RecordDoc, RecordListDoc, VersionBody,
    VersionDoc,
};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use custodian_core::ErrorCode;
use custodian_service::{CreateOptions, ListParams, RecordView, WriteOptions};
use futures::StreamExt;
use serde_json::json;
use uuid::Uuid;

/// An id in a path that is not a UUID cannot name a record: 404 like any unknown id.
fn parse_id(text: &str) -> ApiResult<Uuid> {
    Uuid::parse_str(text).map_err(|_| ApiError::code(ErrorCode::NotFound))
}

/// `If-Match: "3"` (or `W/"3"`, or `3`) and/or `"version": 3` in the body.
fn expected_version(headers: &HeaderMap, body_version: Option<i64>) -> ApiResult<Option<i64>> {
    let header_version = match headers.get(header::IF_MATCH) {
        None => None,
        Some(v) => {
            let text = v
                .to_str()
                .map_err(|_| ApiError::message(ErrorCode::MalformedRequest, "If-Match is not valid text."))?;
            let trimmed = text.trim().trim_start_matches("W/").trim_matches('"');
            Some(trimmed.parse::<i64>().map_err(|_| {
                ApiError::message(ErrorCode::MalformedRequest, "If-Match must be a record version, e.g. \"3\".")
            })?)
        }
    };
    match (header_version, body_version) {
        (Some(h), Some(b)) if h != b => {
            Err(ApiError::message(ErrorCode::MalformedRequest, "If-Match and body version disagree."))
        }
        (h, b) => Ok(h.or(b)),
    }
}

/// A create or update body: system properties (`owner_id`, `created_by`, `deleted_at`, …) at
/// the top level are a mass-assignment attempt — refused with 403 and audited, nothing changed
/// (among `fields` the service refuses them the same way); anything else that is not a
/// `RecordBody` is malformed.
async fn record_body(
    state: &AppState,
    ctx: &custodian_service::RequestContext,
    object: &str,
    id: Option<Uuid>,
    body: serde_json::Map<String, serde_json::Value>,
) -> ApiResult<RecordBody> {
    let system: Vec<String> = body
        .keys()
        .filter(|k| k.as_str() != "version" && custodian_service::SYSTEM_PROPERTIES.contains(&k.as_str()))
        .cloned()
        .collect();
    if !system.is_empty() {
        return Err(ApiError(state.service.refuse_system_properties(ctx, object, id, &system).await));
    }
    serde_json::from_value(serde_json::Value::Object(body))
        .map_err(|e| ApiError::message(ErrorCode::MalformedRequest, format!("Invalid JSON body: {e}")))
}

fn with_etag(status: StatusCode, record: RecordView) -> Response {
    let etag = HeaderValue::from_str(&format!("\"{}\"", record.version)).ok();
    let mut response = (status, Json(record)).into_response();
    if let Some(etag) = etag {
        response.headers_mut().insert(header::ETAG, etag);
    }
    response
}

fn list_params(pairs: Vec<(String, String)>) -> ApiResult<ListParams> {
    let mut params = ListParams::default();
    for (k, v) in pairs {
        match k.as_str() {
            "q" => params.q = Some(v),
            "sort" => params.sort = Some(v),
            "cursor" => params.cursor = Some(v),
            "deleted" => params.deleted = Some(v),
            "limit" => {
                let n = v.trim().parse::<u32>().map_err(|_| {
                    ApiError(custodian_service::ServiceError::invalid_query(
                        "limit",
                        "invalid_value",
                        "limit must be a positive integer.",
                        "limit 须为正整数。",
                    ))
                })?;
                params.limit = Some(n);
            }
            _ => params.filters.push((k, v)),
        }
    }
    Ok(params)
}

#[utoipa::path(get, path = "/api/v1/{object}", tag = "records",
    params(("object" = String, Path, description = "companies, contacts, leads, deals, activities"),
           ("q" = Option<String>, Query, description = "Full-text search over non-sensitive text (Chinese names included)"),
           ("sort" = Option<String>, Query, description = "Field or system property; prefix with - for descending"),
           ("cursor" = Option<String>, Query), ("limit" = Option<u32>, Query, description = "1-500, default 50"),
           ("deleted" = Option<String>, Query, description = "active (default), deleted or all")),
    description = "Any other query key filters: `FIELD=value` (equality; sensitive fields through their blind index), `FIELD[op]=value` with op in eq, ne, gt, gte, lt, lte, contains, null.",
    responses((status = 200, body = RecordListDoc), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    PathParams(object): PathParams<String>,
    QueryPairs(pairs): QueryPairs,
) -> ApiResult<Response> {
    let params = list_params(pairs)?;
    let list = state.service.list_records(&ctx, &object, &params).await?;
    Ok(Json(list).into_response())
}

#[utoipa::path(get, path = "/api/v1/{object}/export", tag = "records",
    params(("object" = String, Path, description = "companies, contacts, leads, deals, activities"),
           ("columns" = Option<String>, Query, description = "Comma-separated fields and system properties (id, version, owner_id, team_id, created_at, updated_at); default: id, version, owner_id, created_at, updated_at and every field you may see"),
           ("q" = Option<String>, Query), ("sort" = Option<String>, Query),
           ("deleted" = Option<String>, Query, description = "active (default), deleted or all")),
    description = "Every record the filters select (same filters, search, sort and row scope as the list) as UTF-8 CSV with a byte-order mark. Needs the role's export permission; more rows than the server's step-up threshold (default 1,000) need a fresh step-up (428), more than its cap (default 10,000) are refused (422 export_too_large). Hidden fields cannot be exported; masked fields leave masked. The export is registered before the first row is sent (audit event record.export with the filter, columns and every row id); each row carries a watermark column naming the exporter and the export, and the file an invisible fingerprint that `custodian trace-leak` recognises.",
    responses((status = 200, content_type = "text/csv", description = "Headers x-export-id and x-row-count"), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody), (status = 428, body = ErrorBody)))]
pub async fn export(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    PathParams(object): PathParams<String>,
    QueryPairs(mut pairs): QueryPairs,
) -> ApiResult<Response> {
    let columns = pairs.iter().position(|(k, _)| k == "columns").map(|i| pairs.remove(i).1);
    let params = list_params(pairs)?;
    let export = state.service.export_records(&ctx, &object, &params, columns.as_deref()).await?;
    let body = export.lines.map(|line| line.map(axum::body::Bytes::from));
    let mut response = Response::new(axum::body::Body::from_stream(body));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/csv; charset=utf-8"));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{}\"", export.filename)) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    for (name, value) in [("x-export-id", export.export_id.to_string()), ("x-row-count", export.rows.to_string())] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    }
    Ok(response)
}

#[utoipa::path(post, path = "/api/v1/exports/trace", tag = "records",
    request_body(content = String, content_type = "text/csv", description = "The leaked file (or part of it), at most 1 MiB"),
    description = "Names the registered export a (leaked) CSV file came from: its invisible quoting fingerprint, then its watermark column (believed only where the file's ids agree), then the record ids it shares with each export. Auditors and admins; audited (export.trace). Larger files: `custodian trace-leak`.",
    responses((status = 200, description = "{file_sha256, file_rows, file_ids, verdict: fingerprint|watermark|ids|ambiguous|none, export_id, candidates}"), (status = 403, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody)))]
pub async fn trace_leak(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    CsvBody(bytes): CsvBody,
) -> ApiResult<Response> {
    Ok(Json(state.service.trace_leak(&ctx, &bytes).await?).into_response())
}

#[utoipa::path(post, path = "/api/v1/{object}/import", tag = "records",
    request_body(content = String, content_type = "text/csv", description = "UTF-8 CSV with a header row (GBK and UTF-16 are refused with the command that converts them)"),
    params(("object" = String, Path),
           ("map" = Option<String>, Query, description = "COLUMN:field, repeatable; without any, columns named like a field (name, or zh/en label) are mapped"),
           ("commit" = Option<bool>, Query, description = "Write the rows (default: a dry run)"),
           ("skip_invalid" = Option<bool>, Query, description = "With commit: write the good rows, list the bad ones"),
           ("file_name" = Option<String>, Query, description = "Recorded with the import")),
    description = "Imports rows as creates through the one write path: rules, normalisation and the duplicate check against stored records and the other rows. A dry run (200) reports per-row problems and normalisations; a commit writes every row and a record.import event in one transaction (201), or nothing (422 with the report in error.report) unless skip_invalid. At most 20,000 rows and the body limit (1 MiB); larger files go through `custodian import`.",
    responses((status = 200, description = "Dry-run report"), (status = 201, description = "Committed: report with import_id and ids"), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn import(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    PathParams(object): PathParams<String>,
    QueryPairs(pairs): QueryPairs,
    CsvBody(bytes): CsvBody,
) -> ApiResult<Response> {
    let flag = |v: &str, key: &str| match v.trim() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(query_error(key, "Expected true or false.", "应为 true 或 false。")),
    };
    let (mut commit, mut skip_invalid, mut mapping, mut file_name) =
        (false, false, Vec::new(), "upload.csv".to_owned());
    for (k, v) in &pairs {
        match k.as_str() {
            "commit" => commit = flag(v, k)?,
            "skip_invalid" => skip_invalid = flag(v, k)?,
            "file_name" => file_name = v.chars().take(200).collect(),
            "map" => {
                let (column, field) = v
                    .rsplit_once(':')
                    .ok_or_else(|| query_error("map", "map is COLUMN:field.", "map 的格式为 列名:字段。"))?;
                mapping.push((column.trim().to_owned(), field.trim().to_owned()));
            }
            other => {
                return Err(query_error(other, "Unknown parameter.", "未知参数。"));
            }
        }
    }
    let table = custodian_core::table::parse_table(&bytes)
        .map_err(|e| ApiError::message(ErrorCode::MalformedRequest, format!("Not a usable CSV file: {e}")))?;
    let request = custodian_service::ImportRequest {
        object,
        header: table.header,
        rows: table.rows,
        lines: table.lines,
        mapping,
        file_name,
        file_sha256: custodian_crypto::sha256_hex(&bytes),
        commit,
        skip_invalid,
    };
    let report = state.service.import_records(&ctx, &request).await?;
    if report.committed {
        return Ok((StatusCode::CREATED, Json(report)).into_response());
    }
    if commit {
        let e = custodian_service::ServiceError::with_message(
            ErrorCode::ValidationFailed,
            "Some rows have problems; nothing was written (see error.report, or send skip_invalid=true).",
        )
        .with_extra(json!({ "report": report }));
        return Err(ApiError(e));
    }
    Ok(Json(report).into_response())
}

#[utoipa::path(post, path = "/api/v1/imports/{id}/revert", tag = "records",
    params(("id" = Uuid, Path, description = "The import_id of a committed import")),
    description = "Soft-deletes every record the import wrote that is still active, in one transaction (the caller's delete scope applies; needs a fresh step-up).",
    responses((status = 200, description = "{import_id, deleted}"), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 428, body = ErrorBody)))]
pub async fn revert_import(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    PathParams(id): PathParams<String>,
) -> ApiResult<Response> {
    let id = parse_id(&id)?;
    let deleted = state.service.revert_import(&ctx, id).await?;
    Ok(Json(json!({ "import_id": id, "deleted": deleted })).into_response())
}

#[utoipa::path(post, path = "/api/v1/{object}", tag = "records", request_body = RecordBody,
    params(("object" = String, Path)),
    responses((status = 201, body = RecordDoc), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    PathParams(object): PathParams<String>,
    JsonBody(body): JsonBody<serde_json::Map<String, serde_json::Value>>,
) -> ApiResult<Response> {
    let body = record_body(&state, &ctx, &object, None, body).await?;
    if body.version.is_some() {
        return Err(ApiError::message(ErrorCode::MalformedRequest, "A new record has no version."));
    }
    let options = CreateOptions {
        confirm_not_duplicate: ConfirmNotDuplicateBody::checked(body.confirm_not_duplicate.as_ref())?,
        uscc_override: OverrideBody::uscc(body.override_.as_ref())?,
        ..Default::default()
    };
    let record = state.service.create_record(&ctx, &object, &body.fields, &options).await?;
    let location = format!("/api/v1/{}/{}", record.object, record.id);
    let mut response = with_etag(StatusCode::CREATED, record);
    if let Ok(v) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    Ok(response)
}

#[utoipa::path(get, path = "/api/v1/{object}/{id}", tag = "records",
    params(("object" = String, Path), ("id" = Uuid, Path)),
    responses((status = 200, body = RecordDoc), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    PathParams((object, id)): PathParams<(String, String)>,
) -> ApiResult<Response> {
    let id = parse_id(&id)?;
    Ok(with_etag(StatusCode::OK, state.service.get_record(&ctx, &object, id).await?))
}

#[utoipa::path(patch, path = "/api/v1/{object}/{id}", tag = "records", request_body = RecordBody,
    params(("object" = String, Path), ("id" = Uuid, Path), ("If-Match" = Option<String>, Header, description = "Expected version, e.g. \"3\"")),
    responses((status = 200, body = RecordDoc), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    PathParams((object, id)): PathParams<(String, String)>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<serde_json::Map<String, serde_json::Value>>,
) -> ApiResult<Response> {
    let id = parse_id(&id)?;
    let body = record_body(&state, &ctx, &object, Some(id), body).await?;
    let options = WriteOptions {
        expected_version: expected_version(&headers, body.version)?,
        confirm_not_duplicate: ConfirmNotDuplicateBody::checked(body.confirm_not_duplicate.as_ref())?,
        uscc_override: OverrideBody::uscc(body.override_.as_ref())?,
        lock_override: OverrideBody::lock(body.override_.as_ref())?,
    };
    Ok(with_etag(StatusCode::OK, state.service.update_record(&ctx, &object, id, &body.fields, &options).await?))
}

#[utoipa::path(delete, path = "/api/v1/{object}/{id}", tag = "records", request_body(content = VersionBody, description = "Optional"),
    params(("object" = String, Path), ("id" = Uuid, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 200, body = RecordDoc, description = "The soft-deleted record"), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    PathParams((object, id)): PathParams<(String, String)>,
    headers: HeaderMap,
    OptionalJsonBody(body): OptionalJsonBody<VersionBody>,
) -> ApiResult<Response> {
    let id = parse_id(&id)?;
    let options = WriteOptions { expected_version: expected_version(&headers, body.version)?, ..Default::default() };
    Ok(with_etag(StatusCode::OK, state.service.delete_record(&ctx, &object, id, &options).await?))
}

#[utoipa::path(post, path = "/api/v1/{object}/{id}/restore", tag = "records", request_body(content = VersionBody, description = "Optional"),
    params(("object" = String, Path), ("id" = Uuid, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 200, body = RecordDoc), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn restore(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    PathParams((object, id)): PathParams<(String, String)>,
    headers: HeaderMap,
    OptionalJsonBody(body): OptionalJsonBody<VersionBody>,
) -> ApiResult<Response> {
    let id = parse_id(&id)?;
    let options = WriteOptions { expected_version: expected_version(&headers, body.version)?, ..Default::default() };
    Ok(with_etag(StatusCode::OK, state.service.restore_record(&ctx, &object, id, &options).await?))
}

#[utoipa::path(get, path = "/api/v1/{object}/{id}/history", tag = "records",
    params(("object" = String, Path), ("id" = Uuid, Path), ("cursor" = Option<String>, Query), ("limit" = Option<u32>, Query)),
    responses((status = 200, body = HistoryDoc), (status = 404, body = ErrorBody)))]
pub async fn history(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    PathParams((object, id)): PathParams<(String, String)>,
    QueryPairs(pairs): QueryPairs,
) -> ApiResult<Response> {
    let id = parse_id(&id)?;
    let params = list_params(pairs)?;
    if let Some((k, _)) = params.filters.first() {
        return Err(ApiError(custodian_service::ServiceError::invalid_query(
            k,
            "unknown_parameter",
            "History accepts only cursor and limit.",
            "历史记录仅支持 cursor 和 limit 参数。",
        )));
    }
    let page = state.service.history(&ctx, &object, id, params.cursor.as_deref(), params.limit).await?;
    Ok(Json(page).into_response())
}

#[utoipa::path(get, path = "/api/v1/{object}/{id}/history/{version}", tag = "records",
    params(("object" = String, Path), ("id" = Uuid, Path), ("version" = i64, Path)),
    responses((status = 200, body = VersionDoc), (status = 404, body = ErrorBody)))]
pub async fn history_version(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    PathParams((object, id, version)): PathParams<(String, String, String)>,
) -> ApiResult<Response> {
    let id = parse_id(&id)?;
    let version = version.parse::<i64>().map_err(|_| ApiError::code(ErrorCode::NotFound))?;
    let v = state.service.history_version(&ctx, &object, id, version).await?;
    Ok(Json(json!(v)).into_response())
}

#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevealBody {
    pub field: String,
}

#[utoipa::path(post, path = "/api/v1/{object}/{id}/reveal", tag = "records", request_body = RevealBody,
    params(("object" = String, Path), ("id" = Uuid, Path)),
    description = "Reveals one masked field value (audited). Restricted fields need a step-up (428 otherwise).",
    responses((status = 200, description = "{\"field\", \"value\"}"), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody), (status = 428, body = ErrorBody)))]
pub async fn reveal(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    PathParams((object, id)): PathParams<(String, String)>,
    JsonBody(body): JsonBody<RevealBody>,
) -> ApiResult<Response> {
    let id = parse_id(&id)?;
    let value = state.service.reveal_field(&ctx, &object, id, &body.field).await?;
    Ok(Json(json!({ "field": body.field, "value": value })).into_response())
}

#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferBody {
    /// The new owner (an active user); the record moves to the owner's team.
    pub owner_id: Uuid,
    /// Expected current version (alternative to `If-Match`).
    #[serde(default)]
    pub version: Option<i64>,
}

#[utoipa::path(post, path = "/api/v1/{object}/{id}/transfer", tag = "records", request_body = TransferBody,
    params(("object" = String, Path), ("id" = Uuid, Path), ("If-Match" = Option<String>, Header)),
    description = "Ownership transfer: a new owner (and the owner's team), as a new version with a `record.transfer` audit event. The record must be in the caller's update scope and stay there with its new owner; needs a fresh step-up (428).",
    responses((status = 200, body = RecordDoc), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody), (status = 428, body = ErrorBody)))]
pub async fn transfer(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    PathParams((object, id)): PathParams<(String, String)>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<TransferBody>,
) -> ApiResult<Response> {
    let id = parse_id(&id)?;
    let options = WriteOptions { expected_version: expected_version(&headers, body.version)?, ..Default::default() };
    Ok(with_etag(StatusCode::OK, state.service.transfer_record(&ctx, &object, id, body.owner_id, &options).await?))
}

#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkDeleteBody {
    /// 1-500 distinct record ids.
    #[schema(min_items = 1, max_items = 500)]
    pub ids: Vec<Uuid>,
}

#[utoipa::path(post, path = "/api/v1/{object}/bulk-delete", tag = "records", request_body = BulkDeleteBody,
    params(("object" = String, Path)),
    description = "Soft-deletes up to 500 records in one transaction, all or nothing; every record must be active and in the caller's delete scope. Needs a fresh step-up (428).",
    responses((status = 200, description = "{\"object\", \"deleted\": [ids]}"), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody), (status = 428, body = ErrorBody)))]
pub async fn bulk_delete(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    PathParams(object): PathParams<String>,
    JsonBody(body): JsonBody<BulkDeleteBody>,
) -> ApiResult<Response> {
    Ok(Json(json!(state.service.bulk_delete(&ctx, &object, &body.ids).await?)).into_response())
}

fn query_value<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

fn query_error(field: &str, en: &str, zh: &str) -> ApiError {
    ApiError(custodian_service::ServiceError::invalid_query(field, "invalid_value", en, zh))
}

#[utoipa::path(get, path = "/api/v1/{object}/{id}/as-of", tag = "records",
    params(("object" = String, Path), ("id" = Uuid, Path), ("at" = String, Query, description = "RFC 3339 date-time")),
    responses((status = 200, body = VersionDoc, description = "The version in force at that time"), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn as_of(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    PathParams((object, id)): PathParams<(String, String)>,
    QueryPairs(pairs): QueryPairs,
) -> ApiResult<Response> {
    let id = parse_id(&id)?;
    let at = query_value(&pairs, "at")
        .and_then(|t| time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok())
        .ok_or_else(|| query_error("at", "at must be an RFC 3339 date-time.", "at 须为 RFC 3339 时间。"))?;
    let micros = (at.unix_timestamp_nanos() / 1_000) as i64;
    let v = state.service.record_as_of(&ctx, &object, id, micros).await?;
    Ok(Json(json!(v)).into_response())
}

#[utoipa::path(get, path = "/api/v1/{object}/{id}/diff", tag = "records",
    params(("object" = String, Path), ("id" = Uuid, Path), ("from" = i64, Query), ("to" = i64, Query)),
    responses((status = 200, description = "{record_id, from, to, changes: {field: {old, new}}}"), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn diff(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    PathParams((object, id)): PathParams<(String, String)>,
    QueryPairs(pairs): QueryPairs,
) -> ApiResult<Response> {
    let id = parse_id(&id)?;
    let version = |key: &str| {
        query_value(&pairs, key)
            .and_then(|v| v.parse::<i64>().ok())
            .ok_or_else(|| query_error(key, "from and to must be version numbers.", "from 和 to 须为版本号。"))
    };
    let d = state.service.diff_versions(&ctx, &object, id, version("from")?, version("to")?).await?;
    Ok(Json(json!(d)).into_response())
}

#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevertBody {
    /// The version whose values to bring back.
    pub to_version: i64,
    /// Only this field (default: the whole record).
    #[serde(default)]
    pub field: Option<String>,
    /// Expected current version (alternative to If-Match).
    #[serde(default)]
    pub version: Option<i64>,
}

#[utoipa::path(post, path = "/api/v1/{object}/{id}/revert", tag = "records", request_body = RevertBody,
    params(("object" = String, Path), ("id" = Uuid, Path), ("If-Match" = Option<String>, Header)),
    description = "Writes a new version with the values of an earlier one (whole record or one field).",
    responses((status = 200, body = RecordDoc), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn revert(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    PathParams((object, id)): PathParams<(String, String)>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<RevertBody>,
) -> ApiResult<Response> {
    let id = parse_id(&id)?;
    let options = WriteOptions { expected_version: expected_version(&headers, body.version)?, ..Default::default() };
    let r = state.service.revert_record(&ctx, &object, id, body.to_version, body.field.as_deref(), &options).await?;
    Ok(with_etag(StatusCode::OK, r))
}

/// `{"fields": {…}}` of a record a conversion creates.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FieldsBody {
    #[schema(value_type = Object)]
    pub fields: serde_json::Map<String, serde_json::Value>,
}

/// The company of a conversion: `{"id": "…"}` (existing) or `{"fields": {…}}` (new).
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConvertCompanyBody {
    #[serde(default)]
    pub id: Option<Uuid>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub fields: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConvertBody {
    pub company: ConvertCompanyBody,
    pub contact: FieldsBody,
    #[serde(default)]
    pub deal: Option<FieldsBody>,
    /// Saves a company or contact the duplicate check found similar to existing ones.
    #[serde(default)]
    pub confirm_not_duplicate: Option<ConfirmNotDuplicateBody>,
    #[serde(default, rename = "override")]
    pub override_: Option<OverrideBody>,
}

#[utoipa::path(post, path = "/api/v1/leads/{id}/convert", tag = "records", request_body = ConvertBody,
    params(("id" = Uuid, Path)),
    description = "Converts a lead (in the caller's update scope) into a company (new, checked for duplicates like a create, or an existing one by id), a contact and optionally a deal, and marks the lead converted with references to them — in one transaction, audited.",
    responses((status = 201, description = "{lead, company, contact, deal}"), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn convert_lead(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    PathParams(id): PathParams<String>,
    JsonBody(body): JsonBody<ConvertBody>,
) -> ApiResult<Response> {
    let id = parse_id(&id)?;
    let company = match (body.company.id, body.company.fields) {
        (Some(id), None) => custodian_service::ConvertCompany::Existing(id),
        (None, Some(fields)) => custodian_service::ConvertCompany::New(fields),
        _ => {
            return Err(ApiError::message(
                ErrorCode::MalformedRequest,
                "company needs either id (an existing company) or fields (a new one).",
            ));
        }
    };
    let request = custodian_service::ConvertRequest {
        company,
        contact: body.contact.fields,
        deal: body.deal.map(|d| d.fields),
        confirm_not_duplicate: ConfirmNotDuplicateBody::checked(body.confirm_not_duplicate.as_ref())?,
        uscc_override: OverrideBody::uscc(body.override_.as_ref())?,
    };
    let view = state.service.convert_lead(&ctx, id, &request).await?;
    Ok((StatusCode::CREATED, Json(json!(view))).into_response())
}
