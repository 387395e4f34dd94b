//! Backups in the server's configured directory (PRODUCT.md R1), for admins.

use crate::AppState;
use crate::error::ApiResult;
use crate::extract::Auth;
use crate::openapi::ErrorBody;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[utoipa::path(post, path = "/api/v1/backups", tag = "backups", operation_id = "create_backup",
    description = "Writes a backup of the store into the server's backup directory (serve --backup-dir) while it keeps serving: a consistent copy, gzipped, sealed under a key derived from the master key, with the copy's SHA-256 in its manifest (audited backup.create). SQLite stores; PostgreSQL answers 409 (back it up with pg_basebackup or pg_dump). Admins, with a fresh step-up. Check a backup with `custodian backup verify`, restore with `custodian backup restore`.",
    responses((status = 201, description = "{file, file_bytes, manifest}"), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody), (status = 428, body = ErrorBody)))]
pub async fn create(State(state): State<AppState>, Auth(ctx): Auth) -> ApiResult<Response> {
    let report = state.service.backup_now(&ctx).await?;
    Ok((StatusCode::CREATED, Json(json!(report))).into_response())
}

#[utoipa::path(get, path = "/api/v1/backups", tag = "backups", operation_id = "list_backups",
    description = "The backups in the server's backup directory, newest first: {items: [{file, file_bytes, manifest}]}. Admins.",
    responses((status = 200), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn list(State(state): State<AppState>, Auth(ctx): Auth) -> ApiResult<Response> {
    let items = state.service.list_backups(&ctx).await?;
    Ok(Json(json!({ "items": items })).into_response())
}
