//! Users, departments, teams and the field schema (custom fields at runtime).

use crate::AppState;
use crate::error::ApiResult;
use crate::extract::{Auth, JsonBody, PathParams};
use crate::openapi::ErrorBody;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use custodian_core::schema::FieldDef;
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;
use uuid::Uuid;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUserBody {
    pub username: String,
    pub password: String,
    pub role: String,
    #[serde(default)]
    pub team_id: Option<Uuid>,
    #[serde(default)]
    pub department_id: Option<Uuid>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewDepartmentBody {
    pub name: String,
    #[serde(default)]
    pub parent_id: Option<Uuid>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTeamBody {
    pub name: String,
    #[serde(default)]
    pub department_id: Option<Uuid>,
}

#[utoipa::path(get, path = "/api/v1/users", tag = "admin", responses((status = 200), (status = 403, body = ErrorBody)))]
pub async fn list_users(State(state): State<AppState>, Auth(ctx): Auth) -> ApiResult<Response> {
    Ok(Json(json!({ "items": state.service.list_users(&ctx).await? })).into_response())
}

#[utoipa::path(post, path = "/api/v1/users", tag = "admin", request_body = NewUserBody,
    responses((status = 201), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create_user(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    JsonBody(body): JsonBody<NewUserBody>,
) -> ApiResult<Response> {
    let user = state
        .service
        .create_user(&ctx, &body.username, &body.password, &body.role, body.team_id, body.department_id)
        .await?;
    Ok((StatusCode::CREATED, Json(json!(custodian_service::UserView::from(&user)))).into_response())
}

#[utoipa::path(get, path = "/api/v1/departments", tag = "admin", responses((status = 200)))]
pub async fn list_departments(State(state): State<AppState>, Auth(ctx): Auth) -> ApiResult<Response> {
    Ok(Json(json!({ "items": state.service.list_departments(&ctx).await? })).into_response())
}

#[utoipa::path(post, path = "/api/v1/departments", tag = "admin", request_body = NewDepartmentBody,
    responses((status = 201), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create_department(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    JsonBody(body): JsonBody<NewDepartmentBody>,
) -> ApiResult<Response> {
    let d = state.service.create_department(&ctx, &body.name, body.parent_id).await?;
    Ok((StatusCode::CREATED, Json(json!(d))).into_response())
}

#[utoipa::path(get, path = "/api/v1/teams", tag = "admin", responses((status = 200)))]
pub async fn list_teams(State(state): State<AppState>, Auth(ctx): Auth) -> ApiResult<Response> {
    Ok(Json(json!({ "items": state.service.list_teams(&ctx).await? })).into_response())
}

#[utoipa::path(post, path = "/api/v1/teams", tag = "admin", request_body = NewTeamBody,
    responses((status = 201), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create_team(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    JsonBody(body): JsonBody<NewTeamBody>,
) -> ApiResult<Response> {
    let t = state.service.create_team(&ctx, &body.name, body.department_id).await?;
    Ok((StatusCode::CREATED, Json(json!(t))).into_response())
}

#[utoipa::path(get, path = "/api/v1/schema", tag = "schema", responses((status = 200, description = "Every object with its fields")))]
pub async fn schema(State(state): State<AppState>, Auth(_ctx): Auth) -> ApiResult<Response> {
    let schema = state.service.schema();
    let objects: Vec<_> = schema.objects().cloned().collect();
    Ok(Json(json!({ "objects": objects })).into_response())
}

#[utoipa::path(get, path = "/api/v1/schema/{object}", tag = "schema", params(("object" = String, Path)),
    responses((status = 200), (status = 404, body = ErrorBody)))]
pub async fn object_schema(
    State(state): State<AppState>,
    Auth(_ctx): Auth,
    PathParams(object): PathParams<String>,
) -> ApiResult<Response> {
    Ok(Json(json!(state.service.object_schema(&object)?)).into_response())
}

#[utoipa::path(post, path = "/api/v1/schema/{object}/fields", tag = "schema", params(("object" = String, Path)),
    description = "Adds a custom field: {\"name\",\"type\",\"label_en\",\"label_zh\",\"required\",\"unique\",\"sensitive\",\"options\",\"reference\",\"rules\"}",
    responses((status = 201), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn add_field(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    PathParams(object): PathParams<String>,
    JsonBody(field): JsonBody<serde_json::Value>,
) -> ApiResult<Response> {
    let field: FieldDef = serde_json::from_value(field).map_err(|e| {
        crate::error::ApiError::message(
            custodian_core::ErrorCode::MalformedRequest,
            format!("Invalid field definition: {e}"),
        )
    })?;
    let def = state.service.add_custom_field(&ctx, &object, field).await?;
    Ok((StatusCode::CREATED, Json(json!(def))).into_response())
}
