//! Second factor: completing a login, enrolment, step-up, and the admin reset.

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Auth, AuthEnrolling, Ctx, JsonBody, PathParams};
use crate::openapi::{ErrorBody, LoginDoc};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use custodian_core::ErrorCode;
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;
use uuid::Uuid;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MfaLoginBody {
    /// The challenge from `POST /auth/login`.
    pub challenge: String,
    /// A 6-digit TOTP code or a recovery code (xxxx-xxxx-xxxx-xxxx).
    pub code: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CodeBody {
    /// A 6-digit TOTP code (step-up also takes a recovery code).
    pub code: String,
}

#[utoipa::path(post, path = "/api/v1/auth/mfa", tag = "auth", request_body = MfaLoginBody,
    description = "Completes a login that answered mfa_required. The challenge is single-use and short-lived; wrong codes count toward login throttling; a TOTP code works once.",
    responses((status = 200, body = LoginDoc, description = "Also sets the session cookie"), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 429, body = ErrorBody)),
    security(()))]
pub async fn login_mfa(
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    JsonBody(body): JsonBody<MfaLoginBody>,
) -> ApiResult<Response> {
    let result = state.service.login_mfa(&ctx, &body.challenge, &body.code).await?;
    Ok(crate::routes::auth::session_response(&state, &result))
}

#[utoipa::path(post, path = "/api/v1/auth/mfa/enroll", tag = "auth",
    description = "Starts TOTP enrolment for the caller: {\"secret\" (base32), \"otpauth_uri\", \"qr_svg\"}, shown once. Restarting replaces a pending enrolment; an active factor answers 409.",
    responses((status = 200, description = "secret, otpauth_uri, qr_svg"), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn start_enrolment(State(state): State<AppState>, AuthEnrolling(ctx): AuthEnrolling) -> ApiResult<Response> {
    let enrolment = state.service.start_mfa_enrolment(&ctx).await?;
    Ok(Json(json!(enrolment)).into_response())
}

#[utoipa::path(post, path = "/api/v1/auth/mfa/enroll/confirm", tag = "auth", request_body = CodeBody,
    description = "Activates the pending enrolment with a current code and returns ten single-use recovery codes, shown once.",
    responses((status = 200, description = "{\"recovery_codes\": [...]}"), (status = 401, body = ErrorBody), (status = 409, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn confirm_enrolment(
    State(state): State<AppState>,
    AuthEnrolling(ctx): AuthEnrolling,
    JsonBody(body): JsonBody<CodeBody>,
) -> ApiResult<Response> {
    let codes = state.service.confirm_mfa_enrolment(&ctx, &body.code).await?;
    Ok(Json(json!({ "recovery_codes": codes })).into_response())
}

#[utoipa::path(post, path = "/api/v1/auth/step-up", tag = "auth", request_body = CodeBody,
    description = "Opens a five-minute step-up window on the current session with a fresh code. Sensitive operations answer 428 step_up_required without one.",
    responses((status = 200, description = "{\"step_up_until\"}"), (status = 401, body = ErrorBody), (status = 409, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn step_up(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    JsonBody(body): JsonBody<CodeBody>,
) -> ApiResult<Response> {
    Ok(Json(json!(state.service.step_up(&ctx, &body.code).await?)).into_response())
}

#[utoipa::path(post, path = "/api/v1/users/{id}/mfa/reset", tag = "admin", params(("id" = Uuid, Path)),
    description = "Removes the user's second factor and recovery codes and ends the user's sessions (admin; needs step-up). Roles that require MFA must enrol again.",
    responses((status = 200, description = "{\"reset\": bool}"), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 428, body = ErrorBody)))]
pub async fn reset_user_mfa(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    PathParams(id): PathParams<String>,
) -> ApiResult<Response> {
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::code(ErrorCode::NotFound))?;
    let reset = state.service.reset_user_mfa(&ctx, id).await?;
    Ok((StatusCode::OK, Json(json!({ "reset": reset }))).into_response())
}
