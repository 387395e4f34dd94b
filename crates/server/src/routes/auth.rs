//! Login, logout and "who am I".

use crate::AppState;
use crate::error::ApiResult;
use crate::extract::{Auth, AuthEnrolling, Ctx, JsonBody, SESSION_COOKIE};
use crate::openapi::{ErrorBody, LoginBody, LoginDoc};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use custodian_service::{LoginOutcome, LoginResult};
use serde_json::json;

#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth", request_body = LoginBody,
    description = "Without a second factor: the session token, its expiry and the CSRF token, and an HttpOnly SameSite=Strict session cookie. With one: {\"mfa_required\": true, \"challenge\", \"expires_at\"}, completed with POST /api/v1/auth/mfa.",
    responses((status = 200, body = LoginDoc), (status = 401, body = ErrorBody), (status = 429, body = ErrorBody)),
    security(()))]
pub async fn login(
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    JsonBody(body): JsonBody<LoginBody>,
) -> ApiResult<Response> {
    match state.service.login(&ctx, &body.username, &body.password).await? {
        LoginOutcome::Session(result) => Ok(session_response(&state, &result)),
        LoginOutcome::MfaRequired(challenge) => Ok((StatusCode::OK, Json(json!(challenge))).into_response()),
    }
}

/// A new session: the token and CSRF token in the body, the token also as a cookie (HttpOnly,
/// SameSite=Strict, Secure unless turned off for plain-HTTP development).
pub(crate) fn session_response(state: &AppState, result: &LoginResult) -> Response {
    let secure = if state.options.secure_cookies { " Secure;" } else { "" };
    let cookie = format!(
        "{SESSION_COOKIE}={}; Path=/; HttpOnly;{secure} SameSite=Strict; Max-Age={}",
        result.token,
        state.service.config().session_absolute_secs
    );
    let mut response = (
        StatusCode::OK,
        Json(json!({ "token": result.token, "expires_at": result.expires_at, "csrf_token": result.csrf_token })),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth",
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn logout(State(state): State<AppState>, AuthEnrolling(ctx): AuthEnrolling) -> ApiResult<Response> {
    state.service.logout(&ctx).await?;
    let secure = if state.options.secure_cookies { " Secure;" } else { "" };
    let mut response = StatusCode::NO_CONTENT.into_response();
    if let Ok(v) =
        HeaderValue::from_str(&format!("{SESSION_COOKIE}=; Path=/; HttpOnly;{secure} SameSite=Strict; Max-Age=0"))
    {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(response)
}

#[utoipa::path(get, path = "/api/v1/me", tag = "auth",
    description = "The caller, with the second-factor state: mfa_enabled, mfa_required, mfa_enrollment_required, recovery_codes_left, stepped_up, step_up_until.",
    responses((status = 200, description = "The caller"), (status = 401, body = ErrorBody)))]
pub async fn me(State(state): State<AppState>, AuthEnrolling(ctx): AuthEnrolling) -> ApiResult<Response> {
    let mfa = state.service.mfa_status(&ctx).await?;
    let actor = ctx.actor.as_ref();
    Ok(Json(json!({
        "id": actor.map(|a| a.user_id),
        "username": actor.map(|a| a.username.clone()),
        "role": actor.map(|a| a.role.clone()),
        "team_id": actor.and_then(|a| a.team_id),
        "department_id": actor.and_then(|a| a.department_id),
        "mfa_enabled": mfa.mfa_enabled,
        "mfa_required": mfa.mfa_required,
        "mfa_enrollment_required": mfa.mfa_enrollment_required,
        "recovery_codes_left": mfa.recovery_codes_left,
        "stepped_up": mfa.stepped_up,
        "step_up_until": mfa.step_up_until,
    }))
    .into_response())
}

#[utoipa::path(get, path = "/api/v1/auth/sessions", tag = "auth",
    responses((status = 200, description = "The caller's sessions"), (status = 401, body = ErrorBody)))]
pub async fn my_sessions(State(state): State<AppState>, Auth(ctx): Auth) -> ApiResult<Response> {
    Ok(Json(json!({ "items": state.service.my_sessions(&ctx).await? })).into_response())
}

#[utoipa::path(delete, path = "/api/v1/auth/sessions", tag = "auth",
    description = "Ends every session of the caller, the current one included.",
    responses((status = 200), (status = 401, body = ErrorBody)))]
pub async fn end_my_sessions(State(state): State<AppState>, Auth(ctx): Auth) -> ApiResult<Response> {
    let n = state.service.end_my_sessions(&ctx).await?;
    Ok(Json(json!({ "ended": n })).into_response())
}

#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTokenBody {
    #[schema(min_length = 1, max_length = 100)]
    pub name: String,
    /// "read" or "read_write".
    #[schema(pattern = "^(read|read_write)$")]
    pub scope: String,
    /// 1-365.
    #[schema(minimum = 1, maximum = 365)]
    pub expires_in_days: u32,
}

#[utoipa::path(post, path = "/api/v1/auth/tokens", tag = "auth", request_body = NewTokenBody,
    description = "Creates a personal API token (shown once; stored hashed). Read-only tokens may only use GET.",
    responses((status = 201), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create_token(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    JsonBody(body): JsonBody<NewTokenBody>,
) -> ApiResult<Response> {
    let t = state.service.create_api_token(&ctx, &body.name, &body.scope, body.expires_in_days).await?;
    Ok((StatusCode::CREATED, Json(json!(t))).into_response())
}

#[utoipa::path(delete, path = "/api/v1/auth/sessions/{id}", tag = "auth", params(("id" = String, Path, description = "Session or token id from GET /auth/sessions")),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn end_session(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    crate::extract::PathParams(id): crate::extract::PathParams<String>,
) -> ApiResult<Response> {
    state.service.end_my_session(&ctx, &id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
