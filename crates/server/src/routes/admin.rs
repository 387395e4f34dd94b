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
    /// Where the user's change notifications are mailed.
    #[serde(default)]
    pub email: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewDepartmentBody {
    #[schema(min_length = 1, max_length = 100)]
    pub name: String,
    #[serde(default)]
    pub parent_id: Option<Uuid>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTeamBody {
    #[schema(min_length = 1, max_length = 100)]
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
    let new = custodian_service::NewUser {
        username: &body.username,
        password: &body.password,
        role: &body.role,
        team_id: body.team_id,
        department_id: body.department_id,
        email: body.email.as_deref(),
    };
    let user = state.service.add_user(&ctx, new).await?;
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

/// `{"name"}` (a string) and one id key (`null` clears, a UUID sets, absence keeps); any other
/// key is refused.
fn rename_and_move(
    body: &serde_json::Map<String, serde_json::Value>,
    id_key: &str,
) -> Result<(Option<String>, Option<Option<Uuid>>), crate::error::ApiError> {
    if let Some(k) = body.keys().find(|k| k.as_str() != "name" && k.as_str() != id_key) {
        return Err(malformed(&format!("Unknown key {k}.")));
    }
    let name = match body.get("name") {
        None => None,
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(malformed("name must be a string.")),
    };
    Ok((name, optional_id(body, id_key)?))
}

#[utoipa::path(patch, path = "/api/v1/departments/{id}", tag = "admin", params(("id" = Uuid, Path)), request_body = Object,
    description = "Renames a department or moves it: {\"name\", \"parent_id\"} (null = top level). A move below itself or its own sub-departments is refused.",
    responses((status = 200), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn update_department(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    PathParams(id): PathParams<String>,
    JsonBody(body): JsonBody<serde_json::Map<String, serde_json::Value>>,
) -> ApiResult<Response> {
    let id = parse_user_id(&id)?;
    let (name, parent_id) = rename_and_move(&body, "parent_id")?;
    let d = state.service.update_department(&ctx, id, name.as_deref(), parent_id).await?;
    Ok(Json(json!(d)).into_response())
}

#[utoipa::path(patch, path = "/api/v1/teams/{id}", tag = "admin", params(("id" = Uuid, Path)), request_body = Object,
    description = "Renames a team or moves it to another department: {\"name\", \"department_id\"} (null = none).",
    responses((status = 200), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn update_team(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    PathParams(id): PathParams<String>,
    JsonBody(body): JsonBody<serde_json::Map<String, serde_json::Value>>,
) -> ApiResult<Response> {
    let id = parse_user_id(&id)?;
    let (name, department_id) = rename_and_move(&body, "department_id")?;
    let t = state.service.update_team(&ctx, id, name.as_deref(), department_id).await?;
    Ok(Json(json!(t)).into_response())
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

#[utoipa::path(post, path = "/api/v1/schema/{object}/fields", tag = "schema", params(("object" = String, Path)), request_body = Object,
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

fn parse_user_id(text: &str) -> Result<Uuid, crate::error::ApiError> {
    Uuid::parse_str(text).map_err(|_| crate::error::ApiError::code(custodian_core::ErrorCode::NotFound))
}

fn malformed(msg: &str) -> crate::error::ApiError {
    crate::error::ApiError::message(custodian_core::ErrorCode::MalformedRequest, msg)
}

/// `null` clears, a UUID sets, absence keeps.
fn optional_id(
    body: &serde_json::Map<String, serde_json::Value>,
    key: &str,
) -> Result<Option<Option<Uuid>>, crate::error::ApiError> {
    match body.get(key) {
        None => Ok(None),
        Some(serde_json::Value::Null) => Ok(Some(None)),
        Some(serde_json::Value::String(s)) => {
            Uuid::parse_str(s).map(|u| Some(Some(u))).map_err(|_| malformed("Ids must be UUIDs."))
        }
        Some(_) => Err(malformed("Ids must be UUIDs or null.")),
    }
}

#[utoipa::path(patch, path = "/api/v1/users/{id}", tag = "admin", params(("id" = Uuid, Path)), request_body = Object,
    description = "Changes {\"role\", \"team_id\", \"department_id\", \"display_name\", \"email\"} (null removes the e-mail address); a role change ends the user's sessions. Nobody changes their own role.",
    responses((status = 200), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn update_user(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    PathParams(id): PathParams<String>,
    JsonBody(body): JsonBody<serde_json::Map<String, serde_json::Value>>,
) -> ApiResult<Response> {
    let id = parse_user_id(&id)?;
    if let Some(k) =
        body.keys().find(|k| !["role", "team_id", "department_id", "display_name", "email"].contains(&k.as_str()))
    {
        return Err(malformed(&format!("Unknown key {k}.")));
    }
    let text = |k: &str| match body.get(k) {
        None => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(malformed("role and display_name must be strings.")),
    };
    let email = match body.get("email") {
        None => None,
        Some(serde_json::Value::Null) => Some(None),
        Some(serde_json::Value::String(s)) => Some(Some(s.clone())),
        Some(_) => return Err(malformed("email must be a string or null.")),
    };
    let changes = custodian_service::UserChanges {
        role: text("role")?,
        display_name: text("display_name")?,
        team_id: optional_id(&body, "team_id")?,
        department_id: optional_id(&body, "department_id")?,
        email,
    };
    let user = state.service.update_user(&ctx, id, &changes).await?;
    Ok(Json(json!(custodian_service::UserView::from(&user))).into_response())
}

#[utoipa::path(post, path = "/api/v1/users/{id}/suspend", tag = "admin", params(("id" = Uuid, Path)),
    responses((status = 200), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn suspend_user(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    PathParams(id): PathParams<String>,
) -> ApiResult<Response> {
    let user = state.service.set_user_active(&ctx, parse_user_id(&id)?, false).await?;
    Ok(Json(json!(custodian_service::UserView::from(&user))).into_response())
}

#[utoipa::path(post, path = "/api/v1/users/{id}/reactivate", tag = "admin", params(("id" = Uuid, Path)),
    responses((status = 200), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn reactivate_user(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    PathParams(id): PathParams<String>,
) -> ApiResult<Response> {
    let user = state.service.set_user_active(&ctx, parse_user_id(&id)?, true).await?;
    Ok(Json(json!(custodian_service::UserView::from(&user))).into_response())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OffboardBody {
    pub successor_id: Uuid,
}

#[utoipa::path(post, path = "/api/v1/users/{id}/offboard", tag = "admin", params(("id" = Uuid, Path)), request_body = OffboardBody,
    description = "Disables the account, ends every session and token, moves every owned record to the successor in one transaction, and reports the last 90 days of activity with unusual volumes flagged.",
    responses((status = 200), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn offboard_user(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    PathParams(id): PathParams<String>,
    JsonBody(body): JsonBody<OffboardBody>,
) -> ApiResult<Response> {
    let report = state.service.offboard_user(&ctx, parse_user_id(&id)?, body.successor_id).await?;
    Ok(Json(json!(report)).into_response())
}

#[utoipa::path(get, path = "/api/v1/schema/{object}/fields/{field}/rules", tag = "schema",
    params(("object" = String, Path), ("field" = String, Path)),
    description = "The rules of a standard or custom field: [{\"kind\": \"required\" | \"required_when\" | \"unique\" | \"regex\" | \"range\" | \"length\" | \"allowed_values\", …}] with the revision (0 while the defaults apply).",
    responses((status = 200, description = "{object, field, rules, revision}"), (status = 404, body = ErrorBody)))]
pub async fn field_rules(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    PathParams((object, field)): PathParams<(String, String)>,
) -> ApiResult<Response> {
    Ok(Json(json!(state.service.field_rules(&ctx, &object, &field).await?)).into_response())
}

#[utoipa::path(put, path = "/api/v1/schema/{object}/fields/{field}/rules", tag = "schema",
    params(("object" = String, Path), ("field" = String, Path)), request_body = Object,
    description = "Replaces the rules of a field (admins and data stewards; audited with before and after): {\"rules\": [{\"kind\": \"required\"}, {\"kind\": \"required_when\", \"field\": \"stage\", \"values\": [\"won\"]}, {\"kind\": \"unique\", \"scope\": \"global\" | \"per_owner\" | \"per_team\"}, {\"kind\": \"regex\", \"pattern\": \"…\"}, {\"kind\": \"range\", \"min\": 0, \"max\": 10}, {\"kind\": \"length\", \"min\": 1, \"max\": 50}, {\"kind\": \"allowed_values\", \"values\": [\"…\"]}], \"revision\": 3 (optional: the revision the change is based on)}. Starts a background re-check of the object's stored records; poll GET /api/v1/rule-checks/{id}.",
    responses((status = 200, description = "{object, field, rules, revision, job}"), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn put_field_rules(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    PathParams((object, field)): PathParams<(String, String)>,
    JsonBody(body): JsonBody<serde_json::Map<String, serde_json::Value>>,
) -> ApiResult<Response> {
    if let Some(k) = body.keys().find(|k| !["rules", "revision"].contains(&k.as_str())) {
        return Err(malformed(&format!("Unknown key {k}.")));
    }
    let rules = body.get("rules").ok_or_else(|| malformed("rules is required."))?;
    let revision = match body.get("revision") {
        None | Some(serde_json::Value::Null) => None,
        Some(v) => Some(v.as_i64().filter(|r| *r >= 0).ok_or_else(|| malformed("revision must be a number."))?),
    };
    let view = state.service.set_field_rules(&ctx, &object, &field, rules, revision).await?;
    Ok(Json(json!(view)).into_response())
}

#[utoipa::path(get, path = "/api/v1/rule-checks/{id}", tag = "schema",
    params(("id" = Uuid, Path), ("cursor" = Option<String>, Query), ("limit" = Option<u32>, Query)),
    description = "A re-check of stored records after a rule change: its status and the violators (record id, field, code, the value as the caller may see it) inside the caller's read scope.",
    responses((status = 200, description = "{id, kind, object, field, status, scanned, found, violators, next_cursor}"), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn rule_check(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    PathParams(id): PathParams<String>,
    crate::extract::QueryPairs(pairs): crate::extract::QueryPairs,
) -> ApiResult<Response> {
    let id = Uuid::parse_str(&id).map_err(|_| crate::error::ApiError::code(custodian_core::ErrorCode::NotFound))?;
    let mut cursor = None;
    let mut limit = None;
    for (k, v) in pairs {
        match k.as_str() {
            "cursor" => cursor = Some(v),
            "limit" => {
                limit = Some(v.trim().parse::<u32>().map_err(|_| {
                    crate::error::ApiError(custodian_service::ServiceError::invalid_query(
                        "limit",
                        "invalid_value",
                        "limit must be a positive integer.",
                        "limit 须为正整数。",
                    ))
                })?)
            }
            other => {
                return Err(crate::error::ApiError(custodian_service::ServiceError::invalid_query(
                    other,
                    "unknown_parameter",
                    "Only cursor and limit are accepted.",
                    "仅支持 cursor 和 limit 参数。",
                )));
            }
        }
    }
    let view = state.service.rule_check(&ctx, id, cursor.as_deref(), limit).await?;
    Ok(Json(json!(view)).into_response())
}
