//! Turning list parameters (`?FIELD=value`, `?FIELD[gte]=…`, `?q=`, `?sort=`, `?cursor=`) into a
//! store `ListQuery`. Field names are checked against the schema, values are normalised like
//! stored values (so `?mobile=138 1234 5678` finds `+8613812345678`), sensitive fields are
//! matched only through their blind index, and every problem is a structured 400.

use crate::error::{ServiceError, ServiceResult};
use crate::view::RecordList;
use crate::{RequestContext, Service};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use custodian_core::schema::{FieldDef, FieldType, ObjectDef};
use custodian_core::search;
use custodian_core::values::{index_text, normalize_value, parse_date, parse_datetime, parse_decimal};
use custodian_store::{Column, Cursor, DeletedFilter, Filter, FilterOp, FilterValue, ListQuery, Sort, ValueKind};
use serde_json::{Value, json};
use uuid::Uuid;

/// Parameters of a list or search, as given by the caller.
#[derive(Debug, Clone, Default)]
pub struct ListParams {
    /// `(key, value)` pairs other than the reserved ones below, e.g. `("city", "杭州")` or
    /// `("amount[gte]", "1000")`.
    pub filters: Vec<(String, String)>,
    pub q: Option<String>,
    pub sort: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<u32>,
    /// `active` (default), `deleted` or `all`.
    pub deleted: Option<String>,
}

const OPS: &[&str] = &["eq", "ne", "gt", "gte", "lt", "lte", "contains", "null"];

fn bad(field: &str, code: &str, en: impl Into<String>, zh: impl Into<String>) -> ServiceError {
    ServiceError::invalid_query(field, code, en, zh)
}

/// A list's page size: 50 when none is asked, else 1 to `max`; outside that refused (400
/// `invalid_query`), never cut to the bound, so that a short page is always the last one.
pub(crate) fn page_size_within(limit: Option<u32>, max: u32) -> ServiceResult<u32> {
    match limit {
        None => Ok(50),
        Some(n) if (1..=max).contains(&n) => Ok(n),
        Some(_) => Err(bad(
            "limit",
            "out_of_range",
            format!("limit must be between 1 and {max}."),
            format!("limit 须在 1 到 {max} 之间。"),
        )),
    }
}

fn system_column(name: &str) -> Option<Column> {
    Some(match name {
        "id" => Column::Id,
        "owner_id" => Column::OwnerId,
        "team_id" => Column::TeamId,
        "created_at" => Column::CreatedAt,
        "updated_at" => Column::UpdatedAt,
        "created_by" => Column::CreatedBy,
        "updated_by" => Column::UpdatedBy,
        _ => return None,
    })
}

fn value_kind(t: FieldType) -> ValueKind {
    match t {
        FieldType::Integer | FieldType::Decimal | FieldType::Money => ValueKind::Number,
        FieldType::Boolean => ValueKind::Boolean,
        FieldType::MultiEnum => ValueKind::Array,
        _ => ValueKind::Text,
    }
}

fn field_column(def: &FieldDef) -> Column {
    let mut path = vec![def.name.clone()];
    if def.field_type == FieldType::Money {
        path.push("amount".into());
    }
    Column::Field { path, kind: value_kind(def.field_type) }
}

impl Service {
    pub(crate) fn page_size(&self, limit: Option<u32>) -> ServiceResult<u32> {
        page_size_within(limit, self.config.max_page_size)
    }

    fn system_filter_value(&self, name: &str, column: &Column, raw: &str) -> ServiceResult<FilterValue> {
        match column {
            Column::CreatedAt | Column::UpdatedAt => {
                let text = parse_datetime(raw)
                    .or_else(|| parse_date(raw).map(|d| format!("{d}T00:00:00Z")))
                    .ok_or_else(|| {
                        bad(
                            name,
                            "invalid_value",
                            "Expected a date or RFC 3339 date-time.",
                            "应为日期或 RFC 3339 时间。",
                        )
                    })?;
                let t = time::OffsetDateTime::parse(&text, &time::format_description::well_known::Rfc3339)
                    .map_err(|_| bad(name, "invalid_value", "Expected a date-time.", "应为日期时间。"))?;
                Ok(FilterValue::Micros((t.unix_timestamp_nanos() / 1_000) as i64))
            }
            _ => Uuid::parse_str(raw.trim())
                .map(FilterValue::Uuid)
                .map_err(|_| bad(name, "invalid_value", "Expected an id.", "应为 ID。")),
        }
    }

    fn field_filter_value(&self, def: &FieldDef, raw: &str) -> ServiceResult<FilterValue> {
        let invalid = |en: &str, zh: &str| bad(&def.name, "invalid_value", en, zh);
        Ok(match def.field_type {
            FieldType::Integer | FieldType::Decimal | FieldType::Money => {
                FilterValue::Number(parse_decimal(raw, 10).ok_or_else(|| invalid("Expected a number.", "应为数字。"))?)
            }
            FieldType::Boolean => FilterValue::Bool(match raw.trim() {
                "true" | "1" => true,
                "false" | "0" => false,
                _ => return Err(invalid("Expected true or false.", "应为 true 或 false。")),
            }),
            FieldType::MultiEnum | FieldType::Text | FieldType::LongText | FieldType::Enum => {
                FilterValue::Text(raw.trim().to_owned())
            }
            _ => {
                // Typed values are compared in normalised form.
                let v = normalize_value(def, &Value::String(raw.to_owned()), &self.validation_context())
                    .map_err(|e| bad(&def.name, &e.code, e.message, e.message_zh.unwrap_or_default()))?
                    .ok_or_else(|| invalid("Empty value.", "值为空。"))?;
                FilterValue::Text(index_text(&v))
            }
        })
    }

    fn parse_filter(&self, ctx: &RequestContext, def: &ObjectDef, key: &str, raw: &str) -> ServiceResult<Filter> {
        let (name, op) = match key.split_once('[') {
            Some((name, rest)) => {
                let op = rest
                    .strip_suffix(']')
                    .ok_or_else(|| bad(key, "invalid_filter", "Use FIELD[op]=value.", "请使用 FIELD[op]=value。"))?;
                (name, op)
            }
            None => (key, "eq"),
        };
        if !OPS.contains(&op) {
            return Err(bad(
                key,
                "invalid_operator",
                format!("Unknown operator; use one of {}.", OPS.join(", ")),
                "未知的过滤运算符。",
            ));
        }
        if op == "null" {
            let is_null = match raw {
                "true" | "1" => true,
                "false" | "0" => false,
                _ => {
                    return Err(bad(key, "invalid_value", "Expected true or false.", "应为 true 或 false。"));
                }
            };
            let column = match system_column(name) {
                Some(c) => c,
                None => {
                    let f = self.queryable_field(ctx, def, name)?;
                    field_column(f)
                }
            };
            return Ok(Filter::Column { column, op: FilterOp::IsNull(is_null) });
        }
        if let Some(column) = system_column(name) {
            if op == "contains" {
                return Err(bad(
                    key,
                    "invalid_operator",
                    "contains works on text fields only.",
                    "contains 仅适用于文本字段。",
                ));
            }
            let value = self.system_filter_value(name, &column, raw)?;
            return Ok(Filter::Column { column, op: make_op(op, value) });
        }
        let f = self.queryable_field(ctx, def, name)?;
        if f.sensitive {
            if op != "eq" {
                return Err(bad(
                    key,
                    "unsupported_filter",
                    "Sensitive fields are encrypted and support only exact matches.",
                    "敏感字段已加密，仅支持精确匹配。",
                ));
            }
            let v = normalize_value(f, &Value::String(raw.to_owned()), &self.validation_context())
                .map_err(|e| bad(&f.name, &e.code, e.message, e.message_zh.unwrap_or_default()))?
                .ok_or_else(|| bad(key, "invalid_value", "Empty value.", "值为空。"))?;
            let digest = self.keyring.blind_index(&def.name, &f.name, &index_text(&v));
            return Ok(Filter::BlindIndex { field: f.name.clone(), digest });
        }
        if op == "contains" {
            if !matches!(
                f.field_type,
                FieldType::Text | FieldType::LongText | FieldType::Url | FieldType::Email | FieldType::Phone
            ) {
                return Err(bad(
                    key,
                    "invalid_operator",
                    "contains works on text fields only.",
                    "contains 仅适用于文本字段。",
                ));
            }
            let needle = raw.trim();
            if needle.is_empty() || needle.chars().count() > 200 {
                return Err(bad(
                    key,
                    "invalid_value",
                    "contains needs 1-200 characters.",
                    "contains 需要 1-200 个字符。",
                ));
            }
            return Ok(Filter::Column { column: field_column(f), op: FilterOp::Contains(needle.to_owned()) });
        }
        if matches!(op, "gt" | "gte" | "lt" | "lte")
            && matches!(f.field_type, FieldType::Boolean | FieldType::MultiEnum | FieldType::Reference)
        {
            return Err(bad(
                key,
                "invalid_operator",
                "Ranges work on numbers, dates and text only.",
                "范围过滤仅适用于数字、日期和文本。",
            ));
        }
        let value = self.field_filter_value(f, raw)?;
        Ok(Filter::Column { column: field_column(f), op: make_op(op, value) })
    }

    fn parse_sort(&self, ctx: &RequestContext, def: &ObjectDef, sort: Option<&str>) -> ServiceResult<Sort> {
        let Some(spec) = sort.map(str::trim).filter(|s| !s.is_empty()) else {
            return Ok(Sort::default());
        };
        let (descending, name) = match spec.strip_prefix('-') {
            Some(n) => (true, n),
            None => (false, spec.strip_prefix('+').unwrap_or(spec)),
        };
        if let Some(column) = system_column(name) {
            return Ok(Sort { column, descending });
        }
        let f = self.queryable_field(ctx, def, name)?;
        if f.sensitive || f.field_type == FieldType::MultiEnum {
            return Err(bad("sort", "unsupported_sort", "This field cannot be sorted on.", "该字段不支持排序。"));
        }
        Ok(Sort { column: field_column(f), descending })
    }

    /// Builds the store query for a list request (scope included).
    pub(crate) async fn build_list_query(
        &self,
        ctx: &RequestContext,
        def: &ObjectDef,
        params: &ListParams,
    ) -> ServiceResult<(ListQuery, bool)> {
        let mut query = ListQuery::new(def.name.clone());
        self.check_object_readable(ctx, &def.name)?;
        query.scope = self.scope_for(ctx, &def.name, crate::Operation::Read).await?;
        query.limit = self.page_size(params.limit)?;
        query.deleted = match params.deleted.as_deref() {
            None | Some("active") => DeletedFilter::Active,
            Some("deleted") => DeletedFilter::Deleted,
            Some("all") => DeletedFilter::All,
            Some(_) => {
                return Err(bad(
                    "deleted",
                    "invalid_value",
                    "deleted is active, deleted or all.",
                    "deleted 取值为 active、deleted 或 all。",
                ));
            }
        };
        if params.filters.len() > 32 {
            return Err(bad("filters", "too_many", "At most 32 filters.", "最多 32 个过滤条件。"));
        }
        for (key, value) in &params.filters {
            // NUL cannot be stored by PostgreSQL and is never part of a real value.
            if value.contains('\0') || key.contains('\0') {
                return Err(bad(
                    key,
                    "invalid_value",
                    "Filter values cannot contain NUL characters.",
                    "过滤值不能包含 NUL 字符。",
                ));
            }
            if value.len() > 1_000 {
                return Err(bad(key, "too_long", "Filter values are limited to 1000 bytes.", "过滤值最长 1000 字节。"));
            }
            query.filters.push(self.parse_filter(ctx, def, key, value)?);
        }
        let mut impossible = false;
        if let Some(q) = &params.q {
            if q.chars().count() > 200 {
                return Err(bad(
                    "q",
                    "too_long",
                    "Search text is limited to 200 characters.",
                    "搜索内容最长 200 个字符。",
                ));
            }
            query.search = search::query_tokens(q);
            // A query made only of punctuation matches nothing.
            impossible = query.search.is_empty() && !q.trim().is_empty();
        }
        query.sort = self.parse_sort(ctx, def, params.sort.as_deref())?;
        if let Some(cursor) = &params.cursor {
            query.after = Some(decode_cursor(cursor, params.sort.as_deref().unwrap_or(""))?);
        }
        Ok((query, impossible))
    }

    pub async fn list_records(
        &self,
        ctx: &RequestContext,
        object: &str,
        params: &ListParams,
    ) -> ServiceResult<RecordList> {
        let def = self.object_def(object)?;
        let (query, impossible) = self.build_list_query(ctx, &def, params).await?;
        if impossible {
            return Ok(RecordList { items: Vec::new(), next_cursor: None });
        }
        let page = self.store.list_records(&query).await?;
        // Which ids were returned (never the values), and how they were asked for.
        let ids: Vec<String> = page.items.iter().map(|r| r.id.to_string()).collect();
        let action = if params.q.is_some() { "record.search" } else { "record.list" };
        let filters: Vec<&str> = params.filters.iter().map(|(k, _)| k.as_str()).collect();
        self.audit_read(ctx, action, &def.name, None, serde_json::json!({ "ids": ids, "filters": filters })).await?;
        let sort_spec = params.sort.as_deref().unwrap_or("");
        Ok(RecordList {
            items: page.items.iter().map(|r| self.record_view(ctx, &def, r)).collect(),
            next_cursor: page.next.map(|c| encode_cursor(&c, sort_spec)),
        })
    }

    pub async fn count_records(&self, ctx: &RequestContext, object: &str, params: &ListParams) -> ServiceResult<u64> {
        let def = self.object_def(object)?;
        let (query, impossible) = self.build_list_query(ctx, &def, params).await?;
        if impossible {
            return Ok(0);
        }
        Ok(self.store.count_records(&query).await?)
    }
}

fn make_op(op: &str, v: FilterValue) -> FilterOp {
    match op {
        "ne" => FilterOp::Ne(v),
        "gt" => FilterOp::Gt(v),
        "gte" => FilterOp::Gte(v),
        "lt" => FilterOp::Lt(v),
        "lte" => FilterOp::Lte(v),
        _ => FilterOp::Eq(v),
    }
}

impl Service {
    /// A field the caller may filter or sort on: hidden fields are unknown to them, masked ones
    /// cannot be probed with filters.
    fn queryable_field<'a>(&self, ctx: &RequestContext, def: &'a ObjectDef, name: &str) -> ServiceResult<&'a FieldDef> {
        let f = def.field(name).ok_or_else(|| unknown_field(def, name))?;
        if self.field_queryable(ctx, def, name) {
            return Ok(f);
        }
        let role = self.role_of(ctx);
        if role.field_access(&def.name, f) == custodian_core::access::FieldAccess::Hidden {
            return Err(unknown_field(def, name));
        }
        Err(bad(name, "not_permitted", "You may not filter or sort on this field.", "您无权按该字段过滤或排序。"))
    }
}

fn unknown_field(def: &ObjectDef, name: &str) -> ServiceError {
    bad(
        name,
        "unknown_field",
        format!("Object {} has no field {name}.", def.name),
        format!("对象 {} 没有字段 {name}。", def.name),
    )
}

/// Cursors are opaque to clients: base64url of `{"k": sort key, "i": id, "s": sort spec}`.
fn encode_cursor(c: &Cursor, sort: &str) -> String {
    B64.encode(json!({ "k": c.key, "i": c.id, "s": sort }).to_string())
}

fn decode_cursor(text: &str, sort: &str) -> ServiceResult<Cursor> {
    let invalid = || {
        bad(
            "cursor",
            "invalid_cursor",
            "The cursor is invalid or belongs to another sort order.",
            "分页游标无效或与排序不符。",
        )
    };
    if text.len() > 2_000 {
        return Err(invalid());
    }
    let bytes = B64.decode(text.trim()).map_err(|_| invalid())?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    if v.get("s").and_then(Value::as_str) != Some(sort) {
        return Err(invalid());
    }
    let id = v.get("i").and_then(Value::as_str).and_then(|s| Uuid::parse_str(s).ok()).ok_or_else(invalid)?;
    let key = v.get("k").cloned().ok_or_else(invalid)?;
    if !(key.is_string() || key.is_number()) {
        return Err(invalid());
    }
    Ok(Cursor { key, id })
}
