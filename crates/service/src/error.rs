//! Service errors carry a code from the one error-code table (`custodian_core::ErrorCode`),
//! a message safe to show to the caller, and per-field details. They never carry sensitive
//! values.

use custodian_core::{ErrorCode, FieldError};
use custodian_store::StoreError;
use serde_json::Value;

#[derive(Debug, Clone)]
pub struct ServiceError {
    pub code: ErrorCode,
    pub message: String,
    pub details: Vec<FieldError>,
    /// Extra machine-readable context, e.g. `{"current_version": 4}`.
    pub extra: Option<Value>,
}

pub type ServiceResult<T> = Result<T, ServiceError>;

impl ServiceError {
    pub fn new(code: ErrorCode) -> Self {
        ServiceError { code, message: code.message_en().to_owned(), details: Vec::new(), extra: None }
    }

    pub fn with_message(code: ErrorCode, message: impl Into<String>) -> Self {
        ServiceError { code, message: message.into(), details: Vec::new(), extra: None }
    }

    pub fn validation(details: Vec<FieldError>) -> Self {
        ServiceError { details, ..ServiceError::new(ErrorCode::ValidationFailed) }
    }

    pub fn invalid_query(field: &str, code: &str, en: impl Into<String>, zh: impl Into<String>) -> Self {
        ServiceError {
            details: vec![FieldError::new(field, code, en, zh)],
            ..ServiceError::new(ErrorCode::InvalidQuery)
        }
    }

    pub fn not_found() -> Self {
        ServiceError::new(ErrorCode::NotFound)
    }

    pub fn with_extra(mut self, extra: Value) -> Self {
        self.extra = Some(extra);
        self
    }

    /// Whether the store refused the write because its duplicate check went stale (a record
    /// it would have been compared with was written meanwhile): checking again may pass.
    pub fn is_stale_check(&self) -> bool {
        self.code == ErrorCode::Conflict && self.extra.as_ref().is_some_and(|x| x["stale_duplicate_check"] == true)
    }
}

/// How often a write whose duplicate check went stale is checked and sent again before the
/// caller is told to try again later. Each time another similar record was committed while it
/// was being checked; of n similar writes sent at once at least one commits per round, so n
/// writes need at most n tries. In a store of a few thousand records most name keys are still
/// selective and 32 clients creating people at once made chains of 10 on PostgreSQL (once in
/// 25,000 creates), so the bound is well above that.
pub(crate) const STALE_CHECK_ATTEMPTS: u32 = 30;

/// The longest pause before a new try of a write whose check went stale.
const STALE_CHECK_MAX_PAUSE_MICROS: u128 = 50_000;

/// Runs `attempt` (a whole write: duplicate check, then the write) again while its write is
/// refused because its check went stale, at most `STALE_CHECK_ATTEMPTS` times in all. Before
/// each new try it waits a random pause of up to 2 ms per try so far (at most 50 ms), so that
/// writes refused together do not all come back in the same group commit.
pub(crate) async fn again_if_stale<T, F, Fut>(mut attempt: F) -> ServiceResult<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ServiceResult<T>>,
{
    let mut tries = 1;
    loop {
        match attempt().await {
            Err(e) if e.is_stale_check() && tries < STALE_CHECK_ATTEMPTS => {
                let ceiling = (2_000 * u128::from(tries)).min(STALE_CHECK_MAX_PAUSE_MICROS);
                let pause = uuid::Uuid::new_v4().as_u128() % ceiling;
                tokio::time::sleep(std::time::Duration::from_micros(pause as u64)).await;
                tries += 1;
            }
            outcome => return outcome,
        }
    }
}

impl std::fmt::Display for ServiceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl std::error::Error for ServiceError {}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ServiceError::not_found(),
            StoreError::VersionConflict { current } => ServiceError::new(ErrorCode::VersionConflict)
                .with_extra(serde_json::json!({ "current_version": current })),
            StoreError::UniqueViolation { object, field, .. } => ServiceError {
                details: vec![FieldError::new(
                    &field,
                    "duplicate",
                    format!("Another {object} record already has this {field}."),
                    format!("已有其他记录使用了该 {field}。"),
                )],
                ..ServiceError::new(ErrorCode::Duplicate)
            },
            StoreError::AlreadyExists(what) => {
                ServiceError::with_message(ErrorCode::Conflict, format!("Already exists: {what}"))
            }
            StoreError::Conflict(what) => ServiceError::with_message(ErrorCode::Conflict, what),
            StoreError::StaleCheck => ServiceError::with_message(
                ErrorCode::Conflict,
                "Similar records were being written at the same time; send the request again.",
            )
            .with_extra(serde_json::json!({ "stale_duplicate_check": true })),
            StoreError::Unavailable(reason) => {
                tracing::error!(%reason, "store unavailable");
                ServiceError::new(ErrorCode::Unavailable)
            }
            StoreError::Internal(reason) => {
                tracing::error!(%reason, "store error");
                ServiceError::new(ErrorCode::Internal)
            }
        }
    }
}
