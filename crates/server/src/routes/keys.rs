//! Data key status and rotation (PRODUCT.md S5), for admins.

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Auth, PathParams};
use crate::openapi::ErrorBody;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use custodian_core::ErrorCode;
use serde_json::json;
use uuid::Uuid;

#[utoipa::path(get, path = "/api/v1/keys", tag = "keys",
    description = "The data key versions and the one sealing new values: {current_version, versions}. Admins; key material never leaves the server.",
    responses((status = 200), (status = 403, body = ErrorBody)))]
pub async fn status(State(state): State<AppState>, Auth(ctx): Auth) -> ApiResult<Response> {
    Ok(Json(json!(state.service.key_status(&ctx).await?)).into_response())
}

#[utoipa::path(post, path = "/api/v1/keys/rotate", tag = "keys",
    description = "Adds data key version N+1 (audited key.rotate): every server seals new values with it within a second, and one background job per object with sensitive fields seals the stored values of active records again (poll GET /api/v1/keys/jobs/{id}). Record versions keep their ciphertext and every key version stays to open them. Admins, with a fresh step-up (428 otherwise).",
    responses((status = 202, description = "{previous_version, version, jobs}"), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody), (status = 428, body = ErrorBody)))]
pub async fn rotate(State(state): State<AppState>, Auth(ctx): Auth) -> ApiResult<Response> {
    let rotation = state.service.rotate_data_key(&ctx).await?;
    Ok((StatusCode::ACCEPTED, Json(json!(rotation))).into_response())
}

#[utoipa::path(post, path = "/api/v1/keys/reseal", tag = "keys",
    description = "Starts the background jobs that seal stored sensitive values of active records under the current data key again, without a new key: after a rotation whose jobs never started (its server stopped in between). Admins, with a fresh step-up (428 otherwise).",
    responses((status = 202, description = "{previous_version, version, jobs} (both versions the current one)"), (status = 403, body = ErrorBody), (status = 428, body = ErrorBody)))]
pub async fn reseal(State(state): State<AppState>, Auth(ctx): Auth) -> ApiResult<Response> {
    let started = state.service.reseal_stored_values(&ctx).await?;
    Ok((StatusCode::ACCEPTED, Json(json!(started))).into_response())
}

#[utoipa::path(get, path = "/api/v1/keys/jobs/{id}", tag = "keys",
    params(("id" = Uuid, Path)),
    responses((status = 200, description = "The job: {id, kind, object, status, scanned, found (records sealed again), error}"), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn job(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    PathParams(id): PathParams<String>,
) -> ApiResult<Response> {
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::code(ErrorCode::NotFound))?;
    Ok(Json(json!(state.service.reencrypt_job(&ctx, id).await?)).into_response())
}
