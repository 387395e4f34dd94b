//! Duplicate scan, review queue and merges (PRODUCT.md A5). For data stewards and admins.

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Auth, JsonBody, PathParams, QueryPairs};
use crate::openapi::ErrorBody;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use custodian_core::ErrorCode;
use custodian_service::{AutoMerge, MergeRequest, MergeRule, ServiceError};
use serde_json::json;
use std::collections::BTreeMap;
use uuid::Uuid;

fn parse_id(text: &str) -> ApiResult<Uuid> {
    Uuid::parse_str(text).map_err(|_| ApiError::code(ErrorCode::NotFound))
}

fn invalid_body(field: &str, en: &str, zh: &str) -> ApiError {
    ApiError(ServiceError::validation(vec![custodian_core::FieldError::new(field, "invalid", en, zh)]))
}

#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScanBody {
    /// companies, contacts, leads or deals.
    pub object: String,
}

#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartScanBody {
    /// companies, contacts, leads or deals.
    pub object: String,
    /// Off unless given: the scan also merges, as the system, every group of records whose
    /// pairs all score at or above `threshold` (undoable like any merge). Needs a fresh second
    /// factor.
    #[serde(default)]
    pub auto_merge: Option<AutoMergeBody>,
}

#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AutoMergeBody {
    /// At least the object's floor: the lowest threshold whose precision on the project's
    /// labelled benchmark is 0.995 or more (contacts, leads and companies; deals have none).
    pub threshold: f64,
    /// survivor (default: the group's oldest record keeps its values), newest, most_complete
    /// or trusted_source.
    #[serde(default)]
    #[schema(pattern = "^(survivor|newest|most_complete|trusted_source)$")]
    pub rule: Option<String>,
    /// For the rule trusted_source: values of the object's source field, most trusted first.
    #[serde(default)]
    pub trusted_sources: Vec<String>,
}

fn merge_rule(rule: Option<&str>, field: &str) -> ApiResult<MergeRule> {
    match rule {
        None => Ok(MergeRule::default()),
        Some(r) => MergeRule::parse(r).ok_or_else(|| {
            invalid_body(
                field,
                "rule must be survivor, newest, most_complete or trusted_source.",
                "rule 须为 survivor、newest、most_complete 或 trusted_source。",
            )
        }),
    }
}

#[utoipa::path(post, path = "/api/v1/duplicates/scan", tag = "duplicates", request_body = StartScanBody,
    description = "Starts a background scan that proposes duplicate pairs of an object's active records (data stewards and admins); with auto_merge (off by default) it also merges the groups it is surest of. Poll the job with GET /api/v1/duplicates/scan/{id}.",
    responses((status = 202, description = "The job: {id, object, status, created_at, finished_at, records, pairs, error, auto_merge}"), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn start_scan(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    JsonBody(body): JsonBody<StartScanBody>,
) -> ApiResult<Response> {
    let auto_merge = match body.auto_merge {
        None => None,
        Some(a) => Some(AutoMerge {
            threshold: a.threshold,
            rule: merge_rule(a.rule.as_deref(), "auto_merge.rule")?,
            trusted_sources: a.trusted_sources,
        }),
    };
    let job = state.service.start_duplicate_scan(&ctx, &body.object, auto_merge).await?;
    Ok((StatusCode::ACCEPTED, Json(json!(job))).into_response())
}

#[utoipa::path(get, path = "/api/v1/duplicates/scan/{id}", tag = "duplicates",
    params(("id" = Uuid, Path)),
    responses((status = 200, description = "The job: status running, done or failed"), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn scan_job(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    PathParams(id): PathParams<String>,
) -> ApiResult<Response> {
    let job = state.service.duplicate_scan_job(&ctx, parse_id(&id)?).await?;
    Ok(Json(json!(job)).into_response())
}

#[utoipa::path(get, path = "/api/v1/duplicates", tag = "duplicates", operation_id = "list_duplicates",
    params(("object" = String, Query), ("status" = Option<String>, Query, description = "open (default), dismissed or merged"),
           ("cursor" = Option<String>, Query), ("limit" = Option<u32>, Query)),
    description = "The review queue: proposed pairs with score, reasons and the records the caller may see (masked); others are counted in hidden_records.",
    responses((status = 200, description = "{items: [{id, object, cluster_id, score, reasons, status, records, hidden_records}], next_cursor}"), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody, description = "unknown_object")))]
pub async fn list(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    QueryPairs(pairs): QueryPairs,
) -> ApiResult<Response> {
    let mut object = None;
    let mut status = None;
    let mut cursor = None;
    let mut limit = None;
    for (k, v) in pairs {
        match k.as_str() {
            "object" => object = Some(v),
            "status" => status = Some(v),
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
            other => {
                return Err(ApiError(ServiceError::invalid_query(
                    other,
                    "unknown_parameter",
                    "Only object, status, cursor and limit are accepted.",
                    "仅支持 object、status、cursor 和 limit 参数。",
                )));
            }
        }
    }
    let object = object.ok_or_else(|| {
        ApiError(ServiceError::invalid_query("object", "required", "object is required.", "须指定 object。"))
    })?;
    let page = state.service.list_duplicates(&ctx, &object, status.as_deref(), cursor.as_deref(), limit).await?;
    Ok(Json(json!(page)).into_response())
}

#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DismissBody {
    /// Why the two records are not the same (required).
    #[schema(min_length = 1, max_length = 500)]
    pub reason: String,
}

#[utoipa::path(post, path = "/api/v1/duplicates/{id}/dismiss", tag = "duplicates", request_body = DismissBody,
    params(("id" = Uuid, Path)),
    description = "\"Not a duplicate\": the pair is remembered and never proposed again (by scans or at entry).",
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn dismiss(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    PathParams(id): PathParams<String>,
    JsonBody(body): JsonBody<DismissBody>,
) -> ApiResult<Response> {
    state.service.dismiss_duplicate(&ctx, parse_id(&id)?, &body.reason).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MergeBody {
    pub object: String,
    pub survivor_id: Uuid,
    pub loser_ids: Vec<Uuid>,
    /// Field name → id of the record (survivor or loser) whose value the survivor takes.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub fields: BTreeMap<String, Uuid>,
    /// For fields not listed: survivor (default: the survivor's value, else the newest),
    /// newest, most_complete or trusted_source (the value of the record whose source comes
    /// first in trusted_sources; others after, the newest among equals).
    #[serde(default)]
    #[schema(pattern = "^(survivor|newest|most_complete|trusted_source)$")]
    pub rule: Option<String>,
    /// For the rule trusted_source: values of the object's source field, most trusted first.
    #[serde(default)]
    pub trusted_sources: Vec<String>,
}

#[utoipa::path(post, path = "/api/v1/merges", tag = "duplicates", request_body = MergeBody,
    description = "Merges records into a survivor in one transaction: losers become tombstones, related records are re-parented, everything is recorded for undo.",
    responses((status = 201, description = "{id, object, survivor_id, loser_ids, records: [{object, id, before_version, after_version, role}], rule, created_at, …}"), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody), (status = 428, body = ErrorBody)))]
pub async fn merge(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    JsonBody(body): JsonBody<MergeBody>,
) -> ApiResult<Response> {
    let rule = merge_rule(body.rule.as_deref(), "rule")?;
    let request = MergeRequest {
        object: body.object,
        survivor_id: body.survivor_id,
        loser_ids: body.loser_ids,
        fields: body.fields,
        rule,
        trusted_sources: body.trusted_sources,
        auto: None,
    };
    let merge = state.service.merge_records(&ctx, &request).await?;
    Ok((StatusCode::CREATED, Json(json!(merge))).into_response())
}

#[utoipa::path(get, path = "/api/v1/merges/{id}", tag = "duplicates", params(("id" = Uuid, Path)),
    responses((status = 200, description = "The merge"), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_merge(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    PathParams(id): PathParams<String>,
) -> ApiResult<Response> {
    Ok(Json(json!(state.service.get_merge(&ctx, parse_id(&id)?).await?)).into_response())
}

#[utoipa::path(post, path = "/api/v1/merges/{id}/undo", tag = "duplicates", params(("id" = Uuid, Path)),
    description = "Restores every record the merge wrote to its pre-merge state (new versions). 409 when records changed since the merge or it was undone already.",
    responses((status = 200, description = "The merge, now with undone_at"), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 428, body = ErrorBody)))]
pub async fn undo_merge(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    PathParams(id): PathParams<String>,
) -> ApiResult<Response> {
    Ok(Json(json!(state.service.undo_merge(&ctx, parse_id(&id)?).await?)).into_response())
}

#[utoipa::path(post, path = "/api/v1/duplicates/backfill", tag = "duplicates", request_body = ScanBody,
    description = "Starts a resumable background job that computes the match keys of an object's active records (records written before duplicate detection existed, or after a change of the key definitions), so the check at entry and scans see them. Data stewards and admins.",
    responses((status = 202, description = "The job: {id, kind, object, status, scanned, found, …}"), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn start_backfill(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    JsonBody(body): JsonBody<ScanBody>,
) -> ApiResult<Response> {
    let job = state.service.start_match_key_backfill(&ctx, &body.object).await?;
    Ok((StatusCode::ACCEPTED, Json(json!(job))).into_response())
}

#[utoipa::path(get, path = "/api/v1/duplicates/backfill/{id}", tag = "duplicates",
    params(("id" = Uuid, Path)),
    responses((status = 200, description = "The job: status pending, running, done or failed"), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn backfill_job(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    PathParams(id): PathParams<String>,
) -> ApiResult<Response> {
    let job = state.service.match_key_backfill(&ctx, parse_id(&id)?).await?;
    Ok(Json(json!(job)).into_response())
}
