//! HTTP rendering of errors. Every error body is built here from the one error-code table:
//! `{"error":{"code","message","details":[{"field","code","message"}], …}}`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use custodian_core::ErrorCode;
use custodian_service::ServiceError;
use serde_json::{Map, Value, json};

#[derive(Debug)]
pub struct ApiError(pub ServiceError);

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        ApiError(e)
    }
}

impl ApiError {
    pub fn code(code: ErrorCode) -> Self {
        ApiError(ServiceError::new(code))
    }

    pub fn message(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError(ServiceError::with_message(code, message))
    }
}

pub fn error_body(e: &ServiceError) -> Value {
    let mut error = Map::new();
    error.insert("code".into(), Value::String(e.code.as_str().to_owned()));
    error.insert("message".into(), Value::String(e.message.clone()));
    error.insert("message_zh".into(), Value::String(e.code.message_zh().to_owned()));
    error.insert("details".into(), serde_json::to_value(&e.details).unwrap_or(Value::Array(Vec::new())));
    if let Some(Value::Object(extra)) = &e.extra {
        for (k, v) in extra {
            error.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    json!({ "error": error })
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            tracing::error!(code = self.0.code.as_str(), message = %self.0.message, "request failed");
        }
        let body = error_body(&self.0).to_string();
        let mut response = (status, body).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(secs) = self.0.extra.as_ref().and_then(|e| e.get("retry_after_secs")).and_then(|v| v.as_u64())
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        if self.0.code == ErrorCode::Unauthenticated || self.0.code == ErrorCode::InvalidCredentials {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
