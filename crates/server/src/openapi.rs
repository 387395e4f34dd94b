//! OpenAPI 3.1 document. Paths come from the `#[utoipa::path]` annotations of the handlers that
//! the router actually registers (utoipa-axum), so the document cannot list a route that does
//! not exist or miss one that does. Per-object field schemas are generated from the live field
//! schema, custom fields included.

use custodian_core::ErrorCode;
use custodian_core::schema::{FieldType, Schema};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::extract::SESSION_COOKIE;

/// Error body shared by every error response.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDoc,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDoc {
    /// One of the codes of the error-code table (see `x-error-codes`).
    pub code: String,
    pub message: String,
    pub message_zh: String,
    pub details: Vec<FieldErrorDoc>,
}

#[derive(Serialize, ToSchema)]
pub struct FieldErrorDoc {
    pub field: String,
    pub code: String,
    pub message: String,
}

/// A record.
#[derive(Serialize, ToSchema)]
pub struct RecordDoc {
    pub id: uuid::Uuid,
    pub object: String,
    pub version: i64,
    pub owner_id: Option<uuid::Uuid>,
    pub team_id: Option<uuid::Uuid>,
    pub created_at: String,
    pub created_by: Option<uuid::Uuid>,
    pub updated_at: String,
    pub updated_by: Option<uuid::Uuid>,
    pub deleted_at: Option<String>,
    /// User fields; see the `Fields_<object>` schemas for each object's fields.
    #[schema(value_type = Object)]
    pub fields: serde_json::Map<String, Value>,
    pub masked_fields: Vec<String>,
    /// A tombstone left by a merge: the record it was merged into.
    pub merged_into: Option<uuid::Uuid>,
}

#[derive(Serialize, ToSchema)]
pub struct RecordListDoc {
    pub items: Vec<RecordDoc>,
    pub next_cursor: Option<String>,
}

/// Body of create and update requests.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordBody {
    #[schema(value_type = Object)]
    #[serde(default)]
    pub fields: serde_json::Map<String, Value>,
    /// Expected current version (alternative to `If-Match`).
    #[serde(default)]
    pub version: Option<i64>,
    /// Saves a record the duplicate check found similar to existing ones (409
    /// `possible_duplicate`); the reason is recorded in the audit log. Exact duplicates (409
    /// `duplicate`) cannot be overridden.
    #[serde(default)]
    pub confirm_not_duplicate: Option<ConfirmNotDuplicateBody>,
    /// Overrides a warning: `{"uscc": {"reason": "…"}}` saves a Unified Social Credit Code
    /// whose checksum fails (data stewards and admins; the reason is audited; others get 422).
    #[serde(default, rename = "override")]
    pub override_: Option<OverrideBody>,
}

/// Warnings a data steward or admin overrides, each with a reason.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OverrideBody {
    /// Save a USCC whose checksum fails: `{"reason": "…"}`.
    #[serde(default)]
    pub uscc: Option<ConfirmNotDuplicateBody>,
    /// Change fields locked on the record (`locked_when` rules): `{"reason": "…"}`. The owner
    /// and their managers are notified.
    #[serde(default)]
    pub lock: Option<ConfirmNotDuplicateBody>,
}

impl OverrideBody {
    fn reason(
        body: Option<&ConfirmNotDuplicateBody>,
    ) -> Result<Option<custodian_service::OverrideReason>, crate::error::ApiError> {
        body.map(|b| custodian_service::OverrideReason::new(&b.reason).map_err(crate::error::ApiError)).transpose()
    }

    pub fn uscc(body: Option<&Self>) -> Result<Option<custodian_service::OverrideReason>, crate::error::ApiError> {
        Self::reason(body.and_then(|b| b.uscc.as_ref()))
    }

    pub fn lock(body: Option<&Self>) -> Result<Option<custodian_service::OverrideReason>, crate::error::ApiError> {
        Self::reason(body.and_then(|b| b.lock.as_ref()))
    }
}

/// `{"reason": "…"}`: why the record is not a duplicate of the proposed candidates.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfirmNotDuplicateBody {
    #[schema(min_length = 1, max_length = 500)]
    pub reason: String,
}

impl ConfirmNotDuplicateBody {
    pub fn checked(
        body: Option<&Self>,
    ) -> Result<Option<custodian_service::ConfirmNotDuplicate>, crate::error::ApiError> {
        body.map(|b| custodian_service::ConfirmNotDuplicate::new(&b.reason).map_err(crate::error::ApiError)).transpose()
    }
}

/// Body of delete and restore requests (optional).
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct VersionBody {
    #[serde(default)]
    pub version: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct VersionDoc {
    pub record_id: uuid::Uuid,
    pub object: String,
    pub version: i64,
    /// create, update, delete or restore
    pub action: String,
    pub owner_id: Option<uuid::Uuid>,
    pub team_id: Option<uuid::Uuid>,
    pub deleted_at: Option<String>,
    pub changed_at: String,
    pub changed_by: Option<uuid::Uuid>,
    #[schema(value_type = Object)]
    pub fields: serde_json::Map<String, Value>,
    pub masked_fields: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct HistoryDoc {
    pub items: Vec<VersionDoc>,
    pub next_cursor: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    pub username: String,
    pub password: String,
}

/// Either a session (`token`, `expires_at`, `csrf_token`) or, for a user with a second factor,
/// `{"mfa_required": true, "challenge", "expires_at"}` to complete with `POST /auth/mfa`.
#[derive(Serialize, ToSchema)]
pub struct LoginDoc {
    pub token: Option<String>,
    pub expires_at: String,
    /// Send as `X-CSRF-Token` with unsafe requests authenticated by the session cookie.
    pub csrf_token: Option<String>,
    pub mfa_required: Option<bool>,
    pub challenge: Option<String>,
}

fn field_schema(t: FieldType, options: &[String]) -> Value {
    match t {
        FieldType::Text | FieldType::LongText => json!({"type": "string"}),
        FieldType::Integer => json!({"type": "integer", "format": "int64"}),
        FieldType::Decimal => json!({"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]+)?$"}),
        FieldType::Money => {
            json!({"type": "object", "properties": {"amount": {"type": "string"}, "currency": {"type": "string", "minLength": 3, "maxLength": 3}}, "required": ["amount"]})
        }
        FieldType::Date => json!({"type": "string", "format": "date"}),
        FieldType::Datetime => json!({"type": "string", "format": "date-time"}),
        FieldType::Boolean => json!({"type": "boolean"}),
        FieldType::Enum => json!({"type": "string", "enum": options}),
        FieldType::MultiEnum if options.is_empty() => {
            json!({"type": "array", "items": {"type": "string"}})
        }
        FieldType::MultiEnum => {
            json!({"type": "array", "items": {"type": "string", "enum": options}})
        }
        FieldType::Phone => json!({"type": "string", "description": "Normalised to E.164"}),
        FieldType::Email => json!({"type": "string", "format": "email"}),
        FieldType::Url => json!({"type": "string", "format": "uri"}),
        FieldType::CnResidentId => {
            json!({"type": "string", "description": "Chinese resident ID (GB 11643)"})
        }
        FieldType::CnUscc => {
            json!({"type": "string", "description": "Unified Social Credit Code (GB 32100)"})
        }
        FieldType::Reference => json!({"type": "string", "format": "uuid"}),
    }
}

/// The whole document: `complete_document` and then `with_schema`.
pub fn finish_document(doc: Value, service: &custodian_service::Service) -> Value {
    with_schema(complete_document(doc, service.config().max_page_size), &service.schema())
}

/// Completes the generated document once, when the application is built: the version and
/// licence, the security schemes, on every operation the bounds of its paging parameters and
/// the responses every request can get, links from a created record to the operations on it,
/// and the error-code table. What follows the live schema is left to `with_schema`.
pub fn complete_document(mut doc: Value, max_page_size: u32) -> Value {
    doc["openapi"] = json!("3.1.0");
    doc["info"] = json!({
        "title": "Custodian API",
        "version": env!("CARGO_PKG_VERSION"),
        "description": "Self-hosted CRM whose data is accurate and safe. Authenticate with POST /api/v1/auth/login and send `Authorization: Bearer TOKEN`.",
        "license": {"name": "MIT OR Apache-2.0", "identifier": "MIT OR Apache-2.0"}
    });
    doc["components"]["securitySchemes"] = json!({
        "bearer": {"type": "http", "scheme": "bearer", "description": "A session token from POST /api/v1/auth/login, or a personal API token."},
        "session_cookie": {"type": "apiKey", "in": "cookie", "name": SESSION_COOKIE, "description": "The session cookie set by login; unsafe requests also need the X-CSRF-Token header."}
    });
    doc["security"] = json!([{"bearer": []}, {"session_cookie": []}]);
    let links = doc["paths"].as_object().map(record_links).unwrap_or_default();
    for_each_operation(&mut doc, |method, path, operation| {
        bound_parameters(operation, max_page_size);
        complete_responses(operation);
        if (method, path) == ("post", "/api/v1/{object}") {
            operation["responses"]["201"]["links"] = links.clone();
        }
    });
    doc["x-error-codes"] = Value::Array(
        ErrorCode::ALL
            .iter()
            .map(|c| json!({"code": c.as_str(), "status": c.http_status(), "message": c.message_en(), "message_zh": c.message_zh()}))
            .collect(),
    );
    doc
}

/// Adds what follows the live schema (custom fields change it, so this runs for each request
/// of the document): one `Fields_<object>` and one `FieldsUpdate_<object>` schema per object,
/// the objects as the values of a record path's `{object}`, and the fields a create or an
/// update takes. Running it again on its own output changes nothing.
pub fn with_schema(mut doc: Value, schema: &Schema) -> Value {
    let schemas = doc.pointer_mut("/components/schemas").and_then(Value::as_object_mut);
    if let Some(schemas) = schemas {
        for object in schema.objects() {
            let mut props = serde_json::Map::new();
            let mut required = Vec::new();
            for f in &object.fields {
                // null clears a field (`validate_record`); a required one stays required.
                let mut s = match field_schema(f.field_type, &f.options) {
                    s if f.required => s,
                    s => json!({"anyOf": [s, {"type": "null"}]}),
                };
                s["title"] = json!(f.label_en);
                s["x-label-zh"] = json!(f.label_zh);
                if f.sensitive {
                    s["x-sensitive"] = json!(true);
                }
                props.insert(f.name.clone(), s);
                if f.required {
                    required.push(f.name.clone());
                }
            }
            // An update names only the fields it changes: the same fields, none required.
            schemas.insert(
                format!("FieldsUpdate_{}", object.name),
                json!({"type": "object", "title": object.label_en, "properties": props.clone(), "additionalProperties": false}),
            );
            schemas.insert(
                format!("Fields_{}", object.name),
                json!({"type": "object", "title": object.label_en, "properties": props, "required": required, "additionalProperties": false}),
            );
        }
    }
    let object_names: Vec<&str> = schema.objects().map(|o| o.name.as_str()).collect();
    for_each_operation(&mut doc, |method, path, operation| {
        name_objects(operation, path, &object_names);
        match (method, path) {
            ("post", "/api/v1/{object}") => describe_record_fields(operation, "Fields_", &object_names),
            ("patch", "/api/v1/{object}/{id}") => describe_record_fields(operation, "FieldsUpdate_", &object_names),
            _ => {}
        }
    });
    doc
}

/// Calls `f` with the method, the path template and the operation of every operation.
fn for_each_operation(doc: &mut Value, mut f: impl FnMut(&str, &str, &mut Value)) {
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else { return };
    for (path, operations) in paths.iter_mut() {
        let Some(operations) = operations.as_object_mut() else { continue };
        for (method, operation) in operations.iter_mut() {
            f(method, path, operation);
        }
    }
}

/// Every list names its page size `limit` and its position `cursor`; outside the service's
/// bounds (`page_size_within`; the audit log's `MAX_AUDIT_PAGE` is the same 500 by default) they
/// are refused with 400 `invalid_query`. `If-Match` takes a record version.
fn bound_parameters(operation: &mut Value, max_page_size: u32) {
    if let Some(parameters) = operation.get_mut("parameters").and_then(Value::as_array_mut) {
        for parameter in parameters.iter_mut() {
            if parameter["in"] == "header" && parameter["name"] == "If-Match" {
                // What `expected_version` in routes/records.rs reads: "3", W/"3" or 3.
                parameter["schema"] = json!({"type": "string", "pattern": "^(W/)?\"?[0-9]{1,18}\"?$"});
                continue;
            }
            if parameter["in"] != "query" {
                continue;
            }
            match parameter["name"].as_str() {
                Some("limit") => {
                    parameter["schema"] = json!({"type": "integer", "minimum": 1, "maximum": max_page_size});
                }
                Some("cursor") => {
                    parameter["schema"] = json!({"type": "string", "minLength": 1});
                    parameter["description"] = json!("next_cursor of the previous page");
                }
                _ => {}
            }
        }
    }
}

/// Adds to an operation the error statuses that the layers every request passes through can
/// answer with, whatever the handler documents: 400 (a query parameter the handler does not
/// know, a body that is not JSON), 401 (no or an expired session), 403 (a role without the
/// right, a role that must enrol a second factor first, a cookie request without its CSRF
/// token), 503 (the store unavailable, the request's time limit); 404 where the path names
/// something; 413 and 415 where a body is read. Then gives every response the description
/// OpenAPI requires: the codes of the error table behind an error status, so that a client
/// knows which `error.code` values to expect.
fn complete_responses(operation: &mut Value) {
    let has_path_parameters =
        operation["parameters"].as_array().is_some_and(|parameters| parameters.iter().any(|p| p["in"] == "path"));
    let has_body = operation.get("requestBody").is_some();
    let Some(responses) = operation.get_mut("responses").and_then(Value::as_object_mut) else { return };
    let mut statuses = vec![400u16, 401, 403, 503];
    if has_path_parameters {
        statuses.push(404);
    }
    if has_body {
        statuses.extend([413, 415]);
    }
    for status in statuses {
        responses.entry(status.to_string()).or_insert_with(|| json!({}));
    }
    for (status, response) in responses.iter_mut() {
        if response.get("description").is_some() {
            continue;
        }
        let codes: Vec<&str> =
            ErrorCode::ALL.iter().filter(|c| c.http_status().to_string() == *status).map(|c| c.as_str()).collect();
        let description = match status.as_str() {
            "200" => "OK".to_owned(),
            "201" => "Created".to_owned(),
            "202" => "Accepted".to_owned(),
            "204" => "No content".to_owned(),
            _ if codes.is_empty() => format!("HTTP {status}"),
            _ => format!("Error; `error.code` is one of: {}", codes.join(", ")),
        };
        response["description"] = json!(description);
        if !codes.is_empty() && response.get("content").is_none() {
            response["content"] = json!({"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}});
        }
    }
}

/// Where a path's `{object}` is a record object (the record routes and the schema routes), its
/// values are the objects of the live schema: any other answers 404 `unknown_object`.
fn name_objects(operation: &mut Value, path: &str, object_names: &[&str]) {
    if !path.starts_with("/api/v1/{object}") && !path.starts_with("/api/v1/schema/{object}") {
        return;
    }
    if let Some(parameters) = operation.get_mut("parameters").and_then(Value::as_array_mut) {
        for parameter in parameters.iter_mut().filter(|p| p["in"] == "path" && p["name"] == "object") {
            parameter["schema"] = json!({"type": "string", "enum": object_names});
        }
    }
}

/// OpenAPI links from a created record to every operation on one record, each given the
/// record's object and id (and version where the operation names one), so that a client or a
/// stateful test tool can follow a record from its creation through its changes and history.
fn record_links(paths: &serde_json::Map<String, Value>) -> Value {
    let mut links = serde_json::Map::new();
    for (path, operations) in paths.iter().filter(|(p, _)| p.starts_with("/api/v1/{object}/{id}")) {
        for operation in operations.as_object().into_iter().flat_map(|ops| ops.values()) {
            let Some(id) = operation["operationId"].as_str() else { continue };
            let mut parameters = json!({"object": "$response.body#/object", "id": "$response.body#/id"});
            if path.contains("{version}") {
                parameters["version"] = json!("$response.body#/version");
            }
            links.insert(id.to_owned(), json!({"operationId": id, "parameters": parameters}));
        }
    }
    Value::Object(links)
}

/// The `fields` of a create or an update are those of the path's object (`Fields_<object>`, or
/// `FieldsUpdate_<object>` where none is required): one of the objects' field schemas.
fn describe_record_fields(operation: &mut Value, prefix: &str, object_names: &[&str]) {
    let one_of_the_objects: Vec<Value> =
        object_names.iter().map(|o| json!({"$ref": format!("#/components/schemas/{prefix}{o}")})).collect();
    if let Some(content) = operation.pointer_mut("/requestBody/content/application~1json") {
        content["schema"] = json!({
            "allOf": [
                {"$ref": "#/components/schemas/RecordBody"},
                {"type": "object", "properties": {"fields": {"anyOf": one_of_the_objects}}}
            ]
        });
    }
}
