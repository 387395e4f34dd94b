//! Dynamic SQL for lists, counts and lookups. Every user-supplied value is a bound parameter;
//! the only text spliced into SQL is fixed fragments and JSON paths whose segments were checked
//! to be plain identifiers.

use custodian_store::{
    Column, Cursor, DeletedFilter, Filter, FilterOp, FilterValue, ListQuery, RowScope, StoreError, StoreResult,
    ValueKind,
};
use serde_json::Value;
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

#[derive(Clone)]
pub enum Bind {
    Text(String),
    Int(i64),
    Real(f64),
    Blob(Vec<u8>),
}

#[derive(Default)]
pub struct QueryParts {
    conditions: Vec<String>,
    binds: Vec<Bind>,
}

impl QueryParts {
    pub fn push_where(&mut self, sql: impl Into<String>, binds: Vec<Bind>) {
        self.conditions.push(sql.into());
        self.binds.extend(binds);
    }

    pub fn finish_where(self) -> (String, Vec<Bind>) {
        let sql = if self.conditions.is_empty() { "1".to_owned() } else { self.conditions.join(" AND ") };
        (sql, self.binds)
    }
}

fn invalid(msg: impl Into<String>) -> StoreError {
    StoreError::Internal(msg.into())
}

/// `$.a.b` for a path of identifier segments.
fn json_path(path: &[String]) -> StoreResult<String> {
    if path.is_empty() {
        return Err(invalid("empty field path"));
    }
    let mut out = String::from("$");
    for seg in path {
        if seg.is_empty() || !seg.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(invalid(format!("invalid field path segment {seg:?}")));
        }
        out.push('.');
        out.push_str(seg);
    }
    Ok(out)
}

fn field_expr(path: &[String]) -> StoreResult<String> {
    Ok(format!("json_extract(r.fields, '{}')", json_path(path)?))
}

pub fn push_scope(parts: &mut QueryParts, scope: &RowScope) {
    let RowScope::Restricted { owner_ids, team_ids, record_ids } = scope else {
        return;
    };
    let mut alternatives = Vec::new();
    let mut binds = Vec::new();
    for (column, ids) in [("r.owner_id", owner_ids), ("r.team_id", team_ids), ("r.id", record_ids)] {
        if ids.is_empty() {
            continue;
        }
        alternatives.push(format!("{column} IN ({})", vec!["?"; ids.len()].join(", ")));
        binds.extend(ids.iter().map(|u| Bind::Text(u.to_string())));
    }
    if alternatives.is_empty() {
        parts.push_where("0", Vec::new());
    } else {
        parts.push_where(format!("({})", alternatives.join(" OR ")), binds);
    }
}

fn value_bind(v: &FilterValue) -> Bind {
    match v {
        FilterValue::Text(s) => Bind::Text(s.clone()),
        FilterValue::Number(n) => Bind::Text(n.clone()),
        FilterValue::Bool(b) => Bind::Int(i64::from(*b)),
        FilterValue::Uuid(u) => Bind::Text(u.to_string()),
        FilterValue::Micros(m) => Bind::Int(*m),
    }
}

fn system_column(column: &Column) -> Option<&'static str> {
    Some(match column {
        Column::Id => "r.id",
        Column::OwnerId => "r.owner_id",
        Column::TeamId => "r.team_id",
        Column::CreatedAt => "r.created_at",
        Column::UpdatedAt => "r.updated_at",
        Column::CreatedBy => "r.created_by",
        Column::UpdatedBy => "r.updated_by",
        Column::Field { .. } => return None,
    })
}

fn escape_like(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn push_filter(parts: &mut QueryParts, filter: &Filter) -> StoreResult<()> {
    let (column, op) = match filter {
        Filter::BlindIndex { field, digest } => {
            parts.push_where(
                "r.id IN (SELECT b.record_id FROM blind_indexes b WHERE b.object = r.object AND b.field = ? AND b.digest = ?)",
                vec![Bind::Text(field.clone()), Bind::Blob(digest.clone())],
            );
            return Ok(());
        }
        Filter::Column { column, op } => (column, op),
    };
    // The left-hand expression and how the right-hand value is wrapped.
    let (lhs, kind) = match column {
        Column::Field { path, kind } => (field_expr(path)?, *kind),
        other => (system_column(other).unwrap_or("NULL").to_owned(), ValueKind::Text),
    };
    let cmp = |sym: &str, v: &FilterValue| -> (String, Vec<Bind>) {
        match (kind, v) {
            (ValueKind::Number, _) => (format!("CAST({lhs} AS REAL) {sym} CAST(? AS REAL)"), vec![value_bind(v)]),
            _ => (format!("{lhs} {sym} ?"), vec![value_bind(v)]),
        }
    };
    let (sql, binds) = match op {
        FilterOp::Eq(v) if kind == ValueKind::Array => {
            (format!("EXISTS (SELECT 1 FROM json_each({lhs}) WHERE json_each.value = ?)"), vec![value_bind(v)])
        }
        FilterOp::Ne(v) if kind == ValueKind::Array => {
            (format!("NOT EXISTS (SELECT 1 FROM json_each({lhs}) WHERE json_each.value = ?)"), vec![value_bind(v)])
        }
        FilterOp::Eq(v) => cmp("=", v),
        FilterOp::Ne(v) => {
            let (s, b) = cmp("<>", v);
            (format!("({lhs} IS NULL OR {s})"), b)
        }
        FilterOp::Gt(v) => cmp(">", v),
        FilterOp::Gte(v) => cmp(">=", v),
        FilterOp::Lt(v) => cmp("<", v),
        FilterOp::Lte(v) => cmp("<=", v),
        FilterOp::Contains(s) => (format!("{lhs} LIKE '%' || ? || '%' ESCAPE '\\'"), vec![Bind::Text(escape_like(s))]),
        FilterOp::IsNull(true) => (format!("{lhs} IS NULL"), Vec::new()),
        FilterOp::IsNull(false) => (format!("{lhs} IS NOT NULL"), Vec::new()),
    };
    parts.push_where(sql, binds);
    Ok(())
}

/// FTS5 MATCH expression: every token quoted (tokens contain only letters and digits), prefix
/// tokens with `*`, implicit AND.
fn match_expression(query: &ListQuery) -> String {
    query
        .search
        .iter()
        .map(|t| if t.prefix { format!("\"{}\"*", t.text) } else { format!("\"{}\"", t.text) })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `r.object = …`. A literal lets SQLite use the per-object partial field indexes, and keeps
/// the statement from being re-prepared on every execution (matching a bound value against a
/// partial index's WHERE makes SQLite recompile the statement whenever that value is rebound).
pub fn push_object(parts: &mut QueryParts, object: &str) {
    if custodian_store::is_identifier(object) {
        parts.push_where(format!("r.object = '{object}'"), Vec::new());
    } else {
        parts.push_where("r.object = ?", vec![Bind::Text(object.to_owned())]);
    }
}

pub fn push_list_conditions(parts: &mut QueryParts, query: &ListQuery) -> StoreResult<()> {
    push_object(parts, &query.object);
    match query.deleted {
        DeletedFilter::Active => parts.push_where("r.deleted_at IS NULL", Vec::new()),
        DeletedFilter::Deleted => parts.push_where("r.deleted_at IS NOT NULL", Vec::new()),
        DeletedFilter::All => {}
    }
    push_scope(parts, &query.scope);
    for f in &query.filters {
        push_filter(parts, f)?;
    }
    if !query.search.is_empty() {
        if query.search.iter().any(|t| !t.text.chars().all(char::is_alphanumeric)) {
            return Err(invalid("search tokens must be alphanumeric"));
        }
        parts.push_where(
            "r.seq IN (SELECT rowid FROM record_search WHERE record_search MATCH ?)",
            vec![Bind::Text(match_expression(query))],
        );
    }
    Ok(())
}

/// How a sort key is read back and bound again for the next page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Text,
    Int,
    Real,
}

pub struct SortExpr {
    pub expr: String,
    pub kind: KeyKind,
}

pub fn sort_expr(column: &Column) -> StoreResult<SortExpr> {
    Ok(match column {
        Column::Id => SortExpr { expr: "r.id".into(), kind: KeyKind::Text },
        Column::CreatedAt => SortExpr { expr: "r.created_at".into(), kind: KeyKind::Int },
        Column::UpdatedAt => SortExpr { expr: "r.updated_at".into(), kind: KeyKind::Int },
        Column::OwnerId | Column::TeamId | Column::CreatedBy | Column::UpdatedBy => {
            SortExpr { expr: format!("COALESCE({}, '')", system_column(column).unwrap_or("NULL")), kind: KeyKind::Text }
        }
        Column::Field { path, kind } => {
            let e = field_expr(path)?;
            match kind {
                ValueKind::Number => {
                    SortExpr { expr: format!("COALESCE(CAST({e} AS REAL), -1e308)"), kind: KeyKind::Real }
                }
                ValueKind::Boolean => SortExpr { expr: format!("COALESCE({e}, -1)"), kind: KeyKind::Int },
                ValueKind::Text | ValueKind::Array => {
                    SortExpr { expr: format!("COALESCE(CAST({e} AS TEXT), '')"), kind: KeyKind::Text }
                }
            }
        }
    })
}

fn key_bind(kind: KeyKind, key: &Value) -> StoreResult<Bind> {
    let bad = || invalid("cursor does not match the sort");
    Ok(match kind {
        KeyKind::Text => Bind::Text(key.as_str().ok_or_else(bad)?.to_owned()),
        KeyKind::Int => Bind::Int(key.as_i64().ok_or_else(bad)?),
        KeyKind::Real => Bind::Real(key.as_f64().ok_or_else(bad)?),
    })
}

pub fn push_keyset(parts: &mut QueryParts, sort: &SortExpr, descending: bool, after: &Cursor) -> StoreResult<()> {
    let op = if descending { "<" } else { ">" };
    let id = Bind::Text(after.id.to_string());
    if sort.expr == "r.id" {
        parts.push_where(format!("r.id {op} ?"), vec![id]);
        return Ok(());
    }
    let k1 = key_bind(sort.kind, &after.key)?;
    let k2 = key_bind(sort.kind, &after.key)?;
    parts.push_where(format!("({e} {op} ? OR ({e} = ? AND r.id {op} ?))", e = sort.expr), vec![k1, k2, id]);
    Ok(())
}

pub fn read_sort_key(row: &SqliteRow, kind: KeyKind) -> StoreResult<Value> {
    let err = |e: sqlx::Error| StoreError::Internal(e.to_string());
    Ok(match kind {
        KeyKind::Text => Value::String(row.try_get::<String, _>("sort_key").map_err(err)?),
        KeyKind::Int => Value::from(row.try_get::<i64, _>("sort_key").map_err(err)?),
        KeyKind::Real => {
            let f: f64 = row.try_get("sort_key").map_err(err)?;
            serde_json::Number::from_f64(f).map(Value::Number).unwrap_or(Value::Null)
        }
    })
}
