//! The one error-code table. Every error body the API sends, every CLI error and the OpenAPI
//! error schema are derived from this table, so a code means the same thing everywhere.

use serde::Serialize;

macro_rules! error_codes {
    ($($variant:ident, $code:literal, $status:literal, $en:literal, $zh:literal;)*) => {
        /// A stable, machine-readable error code.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode { $($variant),* }

        impl ErrorCode {
            /// Every code, in table order (used by the OpenAPI document and the tests).
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant),*];

            /// The snake_case code sent to clients.
            pub fn as_str(self) -> &'static str {
                match self { $(ErrorCode::$variant => $code),* }
            }

            /// The HTTP status this code maps to.
            pub fn http_status(self) -> u16 {
                match self { $(ErrorCode::$variant => $status),* }
            }

            /// Default English message.
            pub fn message_en(self) -> &'static str {
                match self { $(ErrorCode::$variant => $en),* }
            }

            /// Default Chinese message.
            pub fn message_zh(self) -> &'static str {
                match self { $(ErrorCode::$variant => $zh),* }
            }
        }
    };
}

error_codes! {
    MalformedRequest, "malformed_request", 400, "The request could not be parsed.", "请求格式错误，无法解析。";
    InvalidQuery, "invalid_query", 400, "A query parameter is invalid.", "查询参数无效。";
    PayloadTooLarge, "payload_too_large", 413, "The request body is too large.", "请求体过大。";
    UnsupportedMediaType, "unsupported_media_type", 415, "The request body must be JSON.", "请求体必须是 JSON。";
    Unauthenticated, "unauthenticated", 401, "Authentication is required.", "需要登录认证。";
    InvalidCredentials, "invalid_credentials", 401, "Username or password is wrong.", "用户名或密码错误。";
    InvalidMfaCode, "invalid_mfa_code", 401, "The verification code is wrong, expired or already used.", "验证码错误、已过期或已被使用。";
    MfaChallengeInvalid, "mfa_challenge_invalid", 401, "The login challenge is unknown or expired; log in again.", "登录验证已失效，请重新登录。";
    Forbidden, "forbidden", 403, "You are not allowed to do this.", "无权执行此操作。";
    MfaEnrollmentRequired, "mfa_enrollment_required", 403, "Your role requires two-factor authentication; enrol first (POST /api/v1/auth/mfa/enroll).", "您的角色必须启用两步验证，请先完成绑定。";
    CsrfFailed, "csrf_failed", 403, "Missing or wrong X-CSRF-Token header for a cookie-authenticated request.", "使用 Cookie 认证的请求缺少或带有错误的 X-CSRF-Token。";
    NotFound, "not_found", 404, "Not found.", "未找到。";
    UnknownObject, "unknown_object", 404, "Unknown object type.", "未知的对象类型。";
    MethodNotAllowed, "method_not_allowed", 405, "Method not allowed.", "不支持该请求方法。";
    VersionConflict, "version_conflict", 409, "The record was changed by someone else; reload and retry.", "记录已被他人修改，请刷新后重试。";
    Duplicate, "duplicate", 409, "A record with the same unique value already exists.", "已存在具有相同唯一值的记录。";
    PossibleDuplicate, "possible_duplicate", 409, "This looks like a record that already exists; confirm with confirm_not_duplicate and a reason if it is not.", "疑似与已有记录重复；如确认不是重复，请提供 confirm_not_duplicate 及原因。";
    Conflict, "conflict", 409, "The request conflicts with the current state.", "请求与当前状态冲突。";
    ValidationFailed, "validation_failed", 422, "Some fields are invalid.", "部分字段无效。";
    StepUpRequired, "step_up_required", 428, "This action needs a fresh second-factor confirmation.", "此操作需要重新进行二次验证。";
    PreconditionRequired, "precondition_required", 428, "This change needs the record version (If-Match).", "此修改需要提供记录版本（If-Match）。";
    Throttled, "throttled", 429, "Too many requests; slow down.", "请求过于频繁，请稍后再试。";
    Internal, "internal", 500, "Internal error; it has been logged.", "内部错误，已记录。";
    Unavailable, "unavailable", 503, "The service is temporarily unavailable.", "服务暂时不可用。";
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// One problem with one field of a request, as listed in `error.details`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub code: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_zh: Option<String>,
}

impl FieldError {
    pub fn new(
        field: impl Into<String>,
        code: impl Into<String>,
        en: impl Into<String>,
        zh: impl Into<String>,
    ) -> Self {
        FieldError { field: field.into(), code: code.into(), message: en.into(), message_zh: Some(zh.into()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn codes_are_unique_and_statuses_are_client_or_server_errors() {
        let mut seen = HashSet::new();
        for code in ErrorCode::ALL {
            assert!(seen.insert(code.as_str()), "duplicate code {}", code.as_str());
            assert!((400..600).contains(&code.http_status()));
            assert!(!code.message_en().is_empty() && !code.message_zh().is_empty());
        }
    }
}
