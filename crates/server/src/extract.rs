//! Request extractors that turn every malformed input into an error from the table instead of
//! axum's plain-text rejections.

use crate::AppState;
use crate::error::ApiError;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{Method, header};
use custodian_core::ErrorCode;
use custodian_service::RequestContext;
use serde::de::DeserializeOwned;
use std::net::SocketAddr;

/// Name of the session cookie set at login.
pub const SESSION_COOKIE: &str = "custodian_session";

/// The request's id (set by the request-id layer), client IP and user agent.
pub fn request_context(parts: &Parts) -> RequestContext {
    let header_text = |name: &str| {
        parts.headers.get(name).and_then(|v| v.to_str().ok()).map(|s| s.chars().take(256).collect::<String>())
    };
    RequestContext {
        actor: None,
        request_id: header_text("x-request-id"),
        ip: parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip().to_string()),
        user_agent: header_text("user-agent"),
    }
}

/// Header carrying the CSRF token of a cookie-authenticated unsafe request.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// How the request presented its token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenSource {
    Header,
    Cookie,
}

fn request_token(parts: &Parts) -> Option<(String, TokenSource)> {
    if let Some(v) = parts.headers.get(header::AUTHORIZATION) {
        let text = v.to_str().ok()?;
        let (scheme, token) = text.split_once(' ')?;
        return scheme.eq_ignore_ascii_case("bearer").then(|| (token.trim().to_owned(), TokenSource::Header));
    }
    for value in parts.headers.get_all(header::COOKIE) {
        let Ok(text) = value.to_str() else { continue };
        for pair in text.split(';') {
            if let Some((k, v)) = pair.trim().split_once('=')
                && k == SESSION_COOKIE
            {
                return Some((v.to_owned(), TokenSource::Cookie));
            }
        }
    }
    None
}

fn is_safe(method: &Method) -> bool {
    method == Method::GET || method == Method::HEAD || method == Method::OPTIONS
}

/// Authenticates a request: bearer token or session cookie. A cookie-authenticated unsafe
/// request must carry the session's CSRF token in `X-CSRF-Token` (a cross-site form can send
/// the cookie but cannot read or set the token); bearer requests need none. A read-only
/// personal token may only read. Unless `allow_unenrolled`, a user whose role requires MFA and
/// who has not enrolled is refused.
async fn authenticate(parts: &Parts, state: &AppState, allow_unenrolled: bool) -> Result<RequestContext, ApiError> {
    let ctx = request_context(parts);
    let (token, source) = request_token(parts).ok_or_else(|| ApiError::code(ErrorCode::Unauthenticated))?;
    let actor = state.service.authenticate(&token).await?;
    let ctx = ctx.with_actor(actor);
    let actor = ctx.actor.as_ref().ok_or_else(|| ApiError::code(ErrorCode::Unauthenticated))?;
    if actor.read_only && parts.method != Method::GET && parts.method != Method::HEAD {
        return Err(ApiError::message(ErrorCode::Forbidden, "This API token is read-only."));
    }
    if source == TokenSource::Cookie && !is_safe(&parts.method) {
        let presented = parts.headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
        state.service.check_csrf(&ctx, presented).await?;
    }
    if !allow_unenrolled {
        state.service.require_mfa_enrolled(&ctx).await?;
    }
    Ok(ctx)
}

/// An authenticated request: the extractor fails with 401 when the token is missing, unknown,
/// expired or belongs to a disabled user, 403 `csrf_failed` for a cookie-authenticated unsafe
/// request without its CSRF token, and 403 `mfa_enrollment_required` while a role that needs
/// MFA has not enrolled.
pub struct Auth(pub RequestContext);

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        authenticate(parts, state, false).await.map(Auth)
    }
}

/// Like `Auth`, but also admits a caller who still has to enrol in MFA: only for enrolment,
/// "me" and logout.
pub struct AuthEnrolling(pub RequestContext);

impl FromRequestParts<AppState> for AuthEnrolling {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        authenticate(parts, state, true).await.map(AuthEnrolling)
    }
}

/// An unauthenticated request's context (login).
pub struct Ctx(pub RequestContext);

impl FromRequestParts<AppState> for Ctx {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &AppState) -> Result<Self, Self::Rejection> {
        Ok(Ctx(request_context(parts)))
    }
}

/// A JSON body. Wrong content type → 415, too large → 413, anything unparsable (invalid
/// UTF-8, syntax, wrong shape, unknown keys) → 400 `malformed_request`.
pub struct JsonBody<T>(pub T);

fn check_json_content_type(req: &Request) -> Result<(), ApiError> {
    if let Some(ct) = req.headers().get(header::CONTENT_TYPE) {
        let ok =
            ct.to_str().map(|s| s.trim_start().to_ascii_lowercase().starts_with("application/json")).unwrap_or(false);
        if !ok {
            return Err(ApiError::code(ErrorCode::UnsupportedMediaType));
        }
    }
    Ok(())
}

async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::code(ErrorCode::PayloadTooLarge)
        } else {
            ApiError::message(ErrorCode::MalformedRequest, "The request body could not be read.")
        }
    })
}

fn parse_json_object<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::message(ErrorCode::MalformedRequest, format!("Invalid JSON body: {e}")))?;
    // NUL is never part of a valid value, and PostgreSQL cannot store it in text or JSON.
    if bytes.windows(6).any(|w| w.eq_ignore_ascii_case(b"\\u0000")) {
        return Err(ApiError::message(ErrorCode::MalformedRequest, "The body contains a NUL character."));
    }
    // Every body of this API is a JSON object (serde would also accept arrays for structs).
    if !value.is_object() {
        return Err(ApiError::message(ErrorCode::MalformedRequest, "The body must be a JSON object."));
    }
    serde_json::from_value(value)
        .map_err(|e| ApiError::message(ErrorCode::MalformedRequest, format!("Invalid JSON body: {e}")))
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        check_json_content_type(&req)?;
        let bytes = read_body(req, state).await?;
        parse_json_object(&bytes).map(JsonBody)
    }
}

/// A CSV body (`Content-Type: text/csv`, anything else 415; too large 413), as bytes: the
/// table reader decides what is usable.
pub struct CsvBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for CsvBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let csv = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|ct| ct.to_str().ok())
            .is_some_and(|s| s.trim_start().to_ascii_lowercase().starts_with("text/csv"));
        if !csv {
            return Err(ApiError::message(ErrorCode::UnsupportedMediaType, "The body must be text/csv."));
        }
        read_body(req, state).await.map(CsvBody)
    }
}

/// A JSON body that may be left out entirely (an empty body means `T::default()`); a body that
/// is there is checked exactly like `JsonBody`.
pub struct OptionalJsonBody<T>(pub T);

impl<T: DeserializeOwned + Default, S: Send + Sync> FromRequest<S> for OptionalJsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let has_content_type = req.headers().contains_key(header::CONTENT_TYPE);
        let checked = check_json_content_type(&req);
        let bytes = read_body(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJsonBody(T::default()));
        }
        if has_content_type {
            checked?;
        }
        parse_json_object(&bytes).map(OptionalJsonBody)
    }
}

/// Path parameters. A path that cannot be decoded (e.g. invalid UTF-8) names nothing: 404.
pub struct PathParams<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for PathParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| PathParams(p.0))
            .map_err(|_| ApiError::code(ErrorCode::NotFound))
    }
}

/// All query pairs, percent-decoded (invalid UTF-8 replaced, never a rejection).
pub struct QueryPairs(pub Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for QueryPairs {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let q = parts.uri.query().unwrap_or("");
        if q.len() > 16 * 1024 {
            return Err(ApiError::message(ErrorCode::InvalidQuery, "The query string is too long."));
        }
        Ok(QueryPairs(form_urlencoded::parse(q.as_bytes()).into_owned().collect()))
    }
}
