//! Custom roles and time-boxed grants (issue 3).

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Auth, JsonBody, PathParams, QueryPairs};
use crate::openapi::ErrorBody;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use custodian_core::ErrorCode;
use custodian_service::GrantRequest;
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;
use uuid::Uuid;

#[utoipa::path(get, path = "/api/v1/roles", tag = "admin",
    description = "Every role: the five built-in roles (read-only) and the custom roles stored as data. Admins only.",
    responses((status = 200), (status = 403, body = ErrorBody)))]
pub async fn list_roles(State(state): State<AppState>, Auth(ctx): Auth) -> ApiResult<Response> {
    Ok(Json(json!({ "items": state.service.list_roles(&ctx).await? })).into_response())
}

#[utoipa::path(post, path = "/api/v1/roles", tag = "admin", request_body = Object,
    description = "Creates a custom role: {\"name\", \"label_en\", \"label_zh\", \"objects\": {OBJECT: {\"create\", \"read\", \"update\", \"delete\", \"export\"}} with scopes none|own|team|department|all, \"fields\": {\"OBJECT.FIELD\": hidden|masked|masked_write|read|write}, \"sensitive_default\", \"can_reveal\", \"admin\", \"audit\", \"merge\", \"grant\"}. Admins only, fresh step-up (428); audited.",
    responses((status = 201), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody), (status = 428, body = ErrorBody)))]
pub async fn create_role(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    JsonBody(body): JsonBody<serde_json::Value>,
) -> ApiResult<Response> {
    let role = state.service.create_role(&ctx, &body).await?;
    Ok((StatusCode::CREATED, Json(json!(role))).into_response())
}

#[utoipa::path(get, path = "/api/v1/roles/{name}", tag = "admin", params(("name" = String, Path)),
    responses((status = 200), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_role(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    PathParams(name): PathParams<String>,
) -> ApiResult<Response> {
    Ok(Json(json!(state.service.get_role(&ctx, &name).await?)).into_response())
}

#[utoipa::path(put, path = "/api/v1/roles/{name}", tag = "admin", params(("name" = String, Path)), request_body = Object,
    description = "Replaces a custom role's definition (same shape as POST). Built-in roles are read-only (409). Admins only, fresh step-up (428); audited with before and after.",
    responses((status = 200), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody), (status = 428, body = ErrorBody)))]
pub async fn update_role(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    PathParams(name): PathParams<String>,
    JsonBody(body): JsonBody<serde_json::Value>,
) -> ApiResult<Response> {
    Ok(Json(json!(state.service.update_role(&ctx, &name, &body).await?)).into_response())
}

#[utoipa::path(delete, path = "/api/v1/roles/{name}", tag = "admin", params(("name" = String, Path)),
    description = "Deletes a custom role that no user holds (409 otherwise, and for built-in roles). Admins only, fresh step-up (428); audited.",
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 428, body = ErrorBody)))]
pub async fn delete_role(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    PathParams(name): PathParams<String>,
) -> ApiResult<Response> {
    state.service.delete_role(&ctx, &name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantBody {
    pub user_id: Uuid,
    /// companies, contacts, leads, deals, activities
    pub object: String,
    /// One record (or `team_id`).
    #[serde(default)]
    pub record_id: Option<Uuid>,
    /// A team's records (or `record_id`).
    #[serde(default)]
    pub team_id: Option<Uuid>,
    /// read or write
    #[schema(pattern = "^(read|write)$")]
    pub access: String,
    /// 1-720
    #[schema(minimum = 1, maximum = 720)]
    pub hours: u32,
    #[schema(min_length = 1, max_length = 500)]
    pub reason: String,
}

#[utoipa::path(get, path = "/api/v1/grants", tag = "admin",
    params(("include_inactive" = Option<bool>, Query, description = "Also expired and revoked grants")),
    description = "Grants in force: all for admins, otherwise those given to or by the caller.",
    responses((status = 200), (status = 400, body = ErrorBody)))]
pub async fn list_grants(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    QueryPairs(pairs): QueryPairs,
) -> ApiResult<Response> {
    let mut include_inactive = false;
    for (k, v) in pairs {
        match (k.as_str(), v.as_str()) {
            ("include_inactive", "true") => include_inactive = true,
            ("include_inactive", "false") => include_inactive = false,
            _ => {
                return Err(ApiError(custodian_service::ServiceError::invalid_query(
                    &k,
                    "unknown_parameter",
                    "Only include_inactive=true|false is accepted.",
                    "仅支持 include_inactive=true|false。",
                )));
            }
        }
    }
    Ok(Json(json!({ "items": state.service.list_grants(&ctx, include_inactive).await? })).into_response())
}

#[utoipa::path(post, path = "/api/v1/grants", tag = "admin", request_body = GrantBody,
    description = "Gives a user read or write access to one record, or to a team's records, for 1-720 hours. Admins any; sales managers (roles with `grant`) only inside their own update scope and never to themselves. Fresh step-up (428); audited.",
    responses((status = 201), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody), (status = 428, body = ErrorBody)))]
pub async fn create_grant(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    JsonBody(body): JsonBody<GrantBody>,
) -> ApiResult<Response> {
    let req = GrantRequest {
        user_id: body.user_id,
        object: body.object,
        record_id: body.record_id,
        team_id: body.team_id,
        access: body.access,
        hours: body.hours,
        reason: body.reason,
    };
    let grant = state.service.create_grant(&ctx, &req).await?;
    Ok((StatusCode::CREATED, Json(json!(grant))).into_response())
}

#[utoipa::path(delete, path = "/api/v1/grants/{id}", tag = "admin", params(("id" = Uuid, Path)),
    description = "Revokes a grant (admins any, others those they gave). Fresh step-up (428); audited.",
    responses((status = 200), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 428, body = ErrorBody)))]
pub async fn revoke_grant(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    PathParams(id): PathParams<String>,
) -> ApiResult<Response> {
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::code(ErrorCode::NotFound))?;
    Ok(Json(json!(state.service.revoke_grant(&ctx, id).await?)).into_response())
}
