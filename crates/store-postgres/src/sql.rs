//! Dynamic SQL for lists and counts. Every value that comes from a caller — filter values,
//! JSON paths, cursor keys, search tokens, scope ids — is a bound parameter (`$n`); the only
//! text spliced into SQL is the fixed fragments written in this file and the `$n` placeholders
//! themselves. JSON paths are bound as `text[]` and used with `#>` / `#>>`, so field names need
//! no validation to be safe.
//!
//! Semantics follow the SQLite backend so that the conformance suite passes unchanged on both:
//! `Ne` also matches rows where the value is missing, text compares byte-wise (`COLLATE "C"`,
//! SQLite's BINARY), and missing values sort lowest.

use custodian_store::{
    Column, Cursor, DeletedFilter, Filter, FilterOp, FilterValue, ListQuery, RowScope, StoreError, StoreResult,
    ValueKind,
};
use serde_json::Value;
use sqlx::Row;
use sqlx::postgres::{PgArguments, PgRow};
use uuid::Uuid;

/// A bound parameter.
#[derive(Debug, Clone)]
pub enum Bind {
    Text(String),
    TextArray(Vec<String>),
    Int(i64),
    Bool(bool),
    Bytes(Vec<u8>),
    Uuid(Uuid),
    UuidArray(Vec<Uuid>),
}

/// WHERE conditions and their parameters. Placeholders are numbered in the order `bind` is
/// called, which is also the order the parameters are bound in.
#[derive(Default)]
pub struct QueryParts {
    conditions: Vec<String>,
    binds: Vec<Bind>,
}

impl QueryParts {
    /// Registers a parameter and returns its placeholder (`$n`).
    pub fn bind(&mut self, b: Bind) -> String {
        self.binds.push(b);
        format!("${}", self.binds.len())
    }

    pub fn push_where(&mut self, sql: impl Into<String>) {
        self.conditions.push(sql.into());
    }

    pub fn where_sql(&self) -> String {
        if self.conditions.is_empty() { "TRUE".to_owned() } else { self.conditions.join(" AND ") }
    }

    pub fn into_binds(self) -> Vec<Bind> {
        self.binds
    }
}

pub fn bind_all<'q>(
    mut q: sqlx::query::Query<'q, sqlx::Postgres, PgArguments>,
    binds: Vec<Bind>,
) -> sqlx::query::Query<'q, sqlx::Postgres, PgArguments> {
    for b in binds {
        q = match b {
            Bind::Text(s) => q.bind(s),
            Bind::TextArray(v) => q.bind(v),
            Bind::Int(i) => q.bind(i),
            Bind::Bool(b) => q.bind(b),
            Bind::Bytes(v) => q.bind(v),
            Bind::Uuid(u) => q.bind(u),
            Bind::UuidArray(v) => q.bind(v),
        };
    }
    q
}

fn invalid(msg: impl Into<String>) -> StoreError {
    StoreError::Internal(msg.into())
}

/// A JSON path for `#>` / `#>>`. Paths of plain identifiers are written as a literal (the form
/// `ensure_field_index` uses, so expression indexes match); any other path is bound. An empty
/// path would address the whole document and is refused.
fn bind_path(parts: &mut QueryParts, path: &[String]) -> StoreResult<String> {
    if path.is_empty() {
        return Err(invalid("empty field path"));
    }
    if path.iter().all(|s| custodian_store::is_identifier(s)) {
        return Ok(format!("'{{{}}}'::text[]", path.join(",")));
    }
    Ok(parts.bind(Bind::TextArray(path.to_vec())))
}

pub fn push_scope(parts: &mut QueryParts, scope: &RowScope) {
    let RowScope::Restricted { owner_ids, team_ids, record_ids } = scope else {
        return;
    };
    let mut alternatives = Vec::new();
    for (column, ids) in [("r.owner_id", owner_ids), ("r.team_id", team_ids), ("r.id", record_ids)] {
        if ids.is_empty() {
            continue;
        }
        let p = parts.bind(Bind::UuidArray(ids.clone()));
        alternatives.push(format!("{column} = ANY({p})"));
    }
    if alternatives.is_empty() {
        parts.push_where("FALSE");
    } else {
        parts.push_where(format!("({})", alternatives.join(" OR ")));
    }
}

/// Escapes `%`, `_` and `\` for `LIKE … ESCAPE '\'`.
pub fn escape_like(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Whether `s` is a plain decimal number PostgreSQL's `numeric` accepts: optional sign,
/// digits with an optional fraction, optional short exponent. Mirrors the regular expression
/// of `custodian_numeric` in the migration.
pub fn is_decimal(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
        i += 1;
    }
    let mut digits = 0;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
        digits += 1;
    }
    if i < b.len() && b[i] == b'.' {
        i += 1;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
            digits += 1;
        }
    }
    if digits == 0 {
        return false;
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        let mut exp_digits = 0;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
            exp_digits += 1;
        }
        if !(1..=3).contains(&exp_digits) {
            return false;
        }
    }
    i == b.len()
}

fn value_as_text(v: &FilterValue) -> String {
    match v {
        FilterValue::Text(s) | FilterValue::Number(s) => s.clone(),
        FilterValue::Bool(b) => b.to_string(),
        FilterValue::Uuid(u) => u.to_string(),
        FilterValue::Micros(m) => m.to_string(),
    }
}

fn value_as_number(v: &FilterValue) -> Option<String> {
    match v {
        FilterValue::Text(s) | FilterValue::Number(s) => is_decimal(s.trim()).then(|| s.trim().to_owned()),
        FilterValue::Bool(b) => Some(if *b { "1".into() } else { "0".into() }),
        FilterValue::Micros(m) => Some(m.to_string()),
        FilterValue::Uuid(_) => None,
    }
}

fn value_as_bool(v: &FilterValue) -> Option<bool> {
    match v {
        FilterValue::Bool(b) => Some(*b),
        FilterValue::Text(s) | FilterValue::Number(s) => match s.trim() {
            "true" | "1" => Some(true),
            "false" | "0" => Some(false),
            _ => None,
        },
        FilterValue::Micros(m) => match m {
            1 => Some(true),
            0 => Some(false),
            _ => None,
        },
        FilterValue::Uuid(_) => None,
    }
}

fn value_as_micros(v: &FilterValue) -> Option<i64> {
    match v {
        FilterValue::Micros(m) => Some(*m),
        FilterValue::Text(s) | FilterValue::Number(s) => s.trim().parse().ok(),
        FilterValue::Bool(_) | FilterValue::Uuid(_) => None,
    }
}

fn comparison(op: &FilterOp) -> Option<(&'static str, &FilterValue)> {
    Some(match op {
        FilterOp::Eq(v) => ("=", v),
        FilterOp::Ne(v) => ("<>", v),
        FilterOp::Gt(v) => (">", v),
        FilterOp::Gte(v) => (">=", v),
        FilterOp::Lt(v) => ("<", v),
        FilterOp::Lte(v) => ("<=", v),
        FilterOp::Contains(_) | FilterOp::IsNull(_) => return None,
    })
}

/// A text field as the left side of `sym`: byte order (`COLLATE "C"`) for ranges; equality as
/// it is, because under a deterministic collation (every collation PostgreSQL creates by
/// default) text equality is byte equality anyway, and a field's expression index
/// (`fxid_<object>_<field>`, in the database's collation) only serves a comparison in its own
/// collation: with `COLLATE "C"`, `?uscc=…` and the duplicate check's strong-key lookup read
/// every record of the object.
fn text_operand(text: &str, sym: &str) -> String {
    if matches!(sym, "=" | "<>") { text.to_owned() } else { format!("{text} COLLATE \"C\"") }
}

/// `lhs sym rhs`, where `Ne` also matches a missing (NULL) left-hand side, as on SQLite.
fn compare(lhs: &str, sym: &str, rhs: &str) -> String {
    if sym == "<>" { format!("({lhs} IS NULL OR {lhs} <> {rhs})") } else { format!("{lhs} {sym} {rhs}") }
}

/// A comparison whose right-hand value cannot be read as the column's type: nothing equals it
/// (so `Ne` matches everything) and nothing orders against it.
fn incomparable(sym: &str) -> String {
    if sym == "<>" { "TRUE".to_owned() } else { "FALSE".to_owned() }
}

fn system_column(column: &Column) -> Option<(&'static str, bool)> {
    // (column, is a uuid column)
    Some(match column {
        Column::Id => ("r.id", true),
        Column::OwnerId => ("r.owner_id", true),
        Column::TeamId => ("r.team_id", true),
        Column::CreatedBy => ("r.created_by", true),
        Column::UpdatedBy => ("r.updated_by", true),
        Column::CreatedAt => ("r.created_at", false),
        Column::UpdatedAt => ("r.updated_at", false),
        Column::Field { .. } => return None,
    })
}

fn contains_sql(parts: &mut QueryParts, lhs_text: &str, needle: &str) -> String {
    let p = parts.bind(Bind::Text(escape_like(needle)));
    format!("{lhs_text} ILIKE '%' || {p} || '%' ESCAPE '\\'")
}

fn push_filter(parts: &mut QueryParts, filter: &Filter, object: &str) -> StoreResult<()> {
    let (column, op) = match filter {
        Filter::BlindIndex { field, digest } => {
            // The object is a constant, not `r.object`: a correlated subquery would run once
            // per row of the object instead of one index lookup.
            let o = parts.bind(Bind::Text(object.to_owned()));
            let f = parts.bind(Bind::Text(field.clone()));
            let d = parts.bind(Bind::Bytes(digest.clone()));
            parts.push_where(format!(
                "r.id IN (SELECT b.record_id FROM blind_indexes b WHERE b.object = {o} AND b.field = {f} AND b.digest = {d})"
            ));
            return Ok(());
        }
        Filter::Column { column, op } => (column, op),
    };
    let sql = match column {
        Column::Field { path, kind } => field_filter(parts, path, *kind, op)?,
        other => {
            let Some((col, is_uuid)) = system_column(other) else {
                return Err(invalid("unknown column"));
            };
            system_filter(parts, col, is_uuid, op)
        }
    };
    parts.push_where(sql);
    Ok(())
}

fn system_filter(parts: &mut QueryParts, col: &str, is_uuid: bool, op: &FilterOp) -> String {
    match op {
        FilterOp::IsNull(true) => format!("{col} IS NULL"),
        FilterOp::IsNull(false) => format!("{col} IS NOT NULL"),
        FilterOp::Contains(s) => contains_sql(parts, &format!("{col}::text"), s),
        _ => {
            let Some((sym, v)) = comparison(op) else {
                return "FALSE".into();
            };
            if is_uuid {
                match v {
                    FilterValue::Uuid(u) => {
                        let p = parts.bind(Bind::Uuid(*u));
                        compare(col, sym, &p)
                    }
                    // Ids are compared as their hyphenated lower-case text, which orders like
                    // the uuid itself.
                    other => {
                        let p = parts.bind(Bind::Text(value_as_text(other).to_lowercase()));
                        compare(&format!("{col}::text"), sym, &format!("{p} COLLATE \"C\""))
                    }
                }
            } else {
                match value_as_micros(v) {
                    Some(m) => {
                        let p = parts.bind(Bind::Int(m));
                        compare(col, sym, &p)
                    }
                    None => incomparable(sym),
                }
            }
        }
    }
}

fn field_filter(parts: &mut QueryParts, path: &[String], kind: ValueKind, op: &FilterOp) -> StoreResult<String> {
    if path.is_empty() {
        return Err(invalid("empty field path"));
    }
    // Decide incomparable values before binding anything: every bound parameter must appear in
    // the statement.
    if let Some((sym, v)) = comparison(op) {
        let readable = match kind {
            ValueKind::Number => value_as_number(v).is_some(),
            ValueKind::Boolean => value_as_bool(v).is_some(),
            ValueKind::Text | ValueKind::Array => true,
        };
        if !readable {
            return Ok(incomparable(sym));
        }
    }
    let p = bind_path(parts, path)?;
    let json = format!("(r.fields #> {p})");
    let text = format!("(r.fields #>> {p})");
    Ok(match op {
        FilterOp::IsNull(true) => format!("{text} IS NULL"),
        FilterOp::IsNull(false) => format!("{text} IS NOT NULL"),
        FilterOp::Contains(s) => contains_sql(parts, &text, s),
        _ => {
            let Some((sym, v)) = comparison(op) else {
                return Ok("FALSE".into());
            };
            match kind {
                ValueKind::Text => {
                    let vp = parts.bind(Bind::Text(value_as_text(v)));
                    compare(&text_operand(&text, sym), sym, &vp)
                }
                ValueKind::Number => match value_as_number(v) {
                    Some(n) => {
                        let vp = parts.bind(Bind::Text(n));
                        compare(&format!("custodian_numeric({text})"), sym, &format!("{vp}::numeric"))
                    }
                    None => incomparable(sym),
                },
                ValueKind::Boolean => match value_as_bool(v) {
                    Some(b) => {
                        let vp = parts.bind(Bind::Bool(b));
                        let lhs = format!("(CASE WHEN jsonb_typeof({json}) = 'boolean' THEN {text}::boolean END)");
                        compare(&lhs, sym, &vp)
                    }
                    None => incomparable(sym),
                },
                ValueKind::Array => match sym {
                    // Membership of a string element (or equality with a string scalar).
                    "=" | "<>" => {
                        let vp = parts.bind(Bind::Text(value_as_text(v)));
                        let has = format!("COALESCE({json} ? {vp}, FALSE)");
                        if sym == "=" { has } else { format!("NOT {has}") }
                    }
                    _ => {
                        let vp = parts.bind(Bind::Text(value_as_text(v)));
                        compare(&format!("{text} COLLATE \"C\""), sym, &vp)
                    }
                },
            }
        }
    })
}

/// The tsquery text for the search tokens: each token quoted as a lexeme, prefix tokens with
/// `:*`, all required (`&`). Tokens must be letters and digits only (as
/// `custodian_core::search::query_tokens` makes them); anything else is refused rather than
/// escaped, like on SQLite.
fn tsquery_text(query: &ListQuery) -> StoreResult<String> {
    let mut terms = Vec::with_capacity(query.search.len());
    for t in &query.search {
        if t.text.is_empty() || !t.text.chars().all(char::is_alphanumeric) {
            return Err(invalid("search tokens must be alphanumeric"));
        }
        let lexeme = t.text.to_lowercase();
        terms.push(if t.prefix { format!("'{lexeme}':*") } else { format!("'{lexeme}'") });
    }
    Ok(terms.join(" & "))
}

pub fn push_list_conditions(parts: &mut QueryParts, query: &ListQuery) -> StoreResult<()> {
    push_list_conditions_ordered(parts, query, false)
}

/// [`push_list_conditions`] of a list ordered by `r.object, r.id` when `by_id`: the object is
/// then matched as `r.object = ANY('{…}')`, which the planner does not take for a constant, so
/// that the order keeps both keys and only the (object, id) index gives it. With
/// `r.object = '…'` the order is `r.id` alone, and the planner walks the primary key, assuming
/// the object's rows spread evenly over the ids; v7 ids follow the order of loading, and the
/// first page of contacts read past the 150k companies loaded before them (100 ms at 1M
/// records, against 0.2 ms through (object, id)). Partial indexes on `object = '…'` still apply
/// (a constant array is proved to imply their predicate), but the planner then counts the
/// object's share twice, so lists with field filters keep the plain equality.
pub fn push_list_conditions_ordered(parts: &mut QueryParts, query: &ListQuery, by_id: bool) -> StoreResult<()> {
    let object = if custodian_store::is_identifier(&query.object) {
        // A literal lets the planner use the per-object partial field indexes.
        format!("'{}'", query.object)
    } else {
        parts.bind(Bind::Text(query.object.clone()))
    };
    if by_id {
        parts.push_where(format!("r.object = ANY(ARRAY[{object}])"));
    } else {
        parts.push_where(format!("r.object = {object}"));
    }
    match query.deleted {
        DeletedFilter::Active => parts.push_where("r.deleted_at IS NULL"),
        DeletedFilter::Deleted => parts.push_where("r.deleted_at IS NOT NULL"),
        DeletedFilter::All => {}
    }
    push_scope(parts, &query.scope);
    for f in &query.filters {
        push_filter(parts, f, &query.object)?;
    }
    if !query.search.is_empty() {
        let q = parts.bind(Bind::Text(tsquery_text(query)?));
        parts.push_where(format!("r.search @@ {q}::tsquery"));
    }
    Ok(())
}

/// Lexemes stored for a record's search text: split like SQLite's unicode61 tokenizer (on
/// anything that is not a letter or digit) and lower-cased. Building the `tsvector` from these
/// with `array_to_tsvector` keeps PostgreSQL's locale-dependent text parser out of the way, so
/// both backends index exactly the same tokens.
pub fn search_lexemes(search_text: &str) -> Vec<String> {
    // PostgreSQL refuses lexemes of 2 KiB or more; such "words" are not searchable anyway.
    const MAX_LEXEME_BYTES: usize = 2046;
    let mut out: Vec<String> = search_text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
        .map(str::to_lowercase)
        .filter(|t| t.len() <= MAX_LEXEME_BYTES)
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// How a sort key is read back and bound again for the next page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// Text compared byte-wise.
    Text,
    /// A uuid, carried in the cursor as its hyphenated text.
    Uuid,
    Int,
    /// An exact decimal, carried in the cursor as its `numeric` text ("-Infinity" when missing).
    Numeric,
}

pub struct SortExpr {
    /// The ORDER BY expression; may refer to parameters already bound in the query parts.
    pub expr: String,
    /// The expression selected as `sort_key`.
    pub select: String,
    pub kind: KeyKind,
    pub is_id: bool,
}

pub fn sort_expr(parts: &mut QueryParts, column: &Column) -> StoreResult<SortExpr> {
    let simple = |expr: &str, kind| SortExpr { expr: expr.to_owned(), select: expr.to_owned(), kind, is_id: false };
    Ok(match column {
        Column::Id => SortExpr { is_id: true, ..simple("r.id", KeyKind::Uuid) },
        Column::CreatedAt => simple("r.created_at", KeyKind::Int),
        Column::UpdatedAt => simple("r.updated_at", KeyKind::Int),
        Column::OwnerId | Column::TeamId | Column::CreatedBy | Column::UpdatedBy => {
            let (col, _) = system_column(column).unwrap_or(("r.id", true));
            simple(&format!("COALESCE({col}, '00000000-0000-0000-0000-000000000000'::uuid)"), KeyKind::Uuid)
        }
        Column::Field { path, kind } => {
            let p = bind_path(parts, path)?;
            match kind {
                ValueKind::Number => {
                    let expr = format!("COALESCE(custodian_numeric(r.fields #>> {p}), '-Infinity'::numeric)");
                    SortExpr { select: format!("({expr})::text"), expr, kind: KeyKind::Numeric, is_id: false }
                }
                ValueKind::Boolean => simple(
                    &format!(
                        "(CASE jsonb_typeof(r.fields #> {p}) WHEN 'boolean' THEN \
                         (CASE WHEN (r.fields #> {p}) = 'true'::jsonb THEN 1 ELSE 0 END) ELSE -1 END)::bigint"
                    ),
                    KeyKind::Int,
                ),
                ValueKind::Text | ValueKind::Array => {
                    simple(&format!("(COALESCE(r.fields #>> {p}, '') COLLATE \"C\")"), KeyKind::Text)
                }
            }
        }
    })
}

fn key_placeholder(parts: &mut QueryParts, kind: KeyKind, key: &Value) -> StoreResult<String> {
    let bad = || invalid("cursor does not match the sort");
    Ok(match kind {
        KeyKind::Text => parts.bind(Bind::Text(key.as_str().ok_or_else(bad)?.to_owned())),
        KeyKind::Uuid => {
            let u = Uuid::parse_str(key.as_str().ok_or_else(bad)?).map_err(|_| bad())?;
            parts.bind(Bind::Uuid(u))
        }
        KeyKind::Int => parts.bind(Bind::Int(key.as_i64().ok_or_else(bad)?)),
        KeyKind::Numeric => {
            let text = key.as_str().ok_or_else(bad)?;
            if text != "-Infinity" && !is_decimal(text) {
                return Err(bad());
            }
            format!("{}::numeric", parts.bind(Bind::Text(text.to_owned())))
        }
    })
}

pub fn push_keyset(parts: &mut QueryParts, sort: &SortExpr, descending: bool, after: &Cursor) -> StoreResult<()> {
    let op = if descending { "<" } else { ">" };
    let id = parts.bind(Bind::Uuid(after.id));
    if sort.is_id {
        parts.push_where(format!("r.id {op} {id}"));
        return Ok(());
    }
    let k = key_placeholder(parts, sort.kind, &after.key)?;
    parts.push_where(format!("({e} {op} {k} OR ({e} = {k} AND r.id {op} {id}))", e = sort.expr));
    Ok(())
}

pub fn read_sort_key(row: &PgRow, kind: KeyKind) -> StoreResult<Value> {
    let err = |e: sqlx::Error| StoreError::Internal(e.to_string());
    Ok(match kind {
        KeyKind::Text | KeyKind::Numeric => Value::String(row.try_get::<String, _>("sort_key").map_err(err)?),
        KeyKind::Uuid => Value::String(row.try_get::<Uuid, _>("sort_key").map_err(err)?.to_string()),
        KeyKind::Int => Value::from(row.try_get::<i64, _>("sort_key").map_err(err)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_are_recognised() {
        for ok in ["0", "-1", "+2.5", "10.", ".5", "1e3", "1.5E-10", "123456789012345678901234567890.123"] {
            assert!(is_decimal(ok), "{ok}");
        }
        for bad in ["", "-", ".", "e3", "1e", "1e1234", "abc", "1,5", " 1", "NaN", "Infinity", "1e+"] {
            assert!(!is_decimal(bad), "{bad}");
        }
    }

    /// Placeholders `$n` used in `sql`.
    fn placeholders(sql: &str) -> std::collections::BTreeSet<usize> {
        let mut out = std::collections::BTreeSet::new();
        let b = sql.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'$' {
                let start = i + 1;
                let mut j = start;
                while j < b.len() && b[j].is_ascii_digit() {
                    j += 1;
                }
                if j > start {
                    out.insert(sql[start..j].parse().unwrap_or(0));
                }
                i = j.max(i + 1);
            } else {
                i += 1;
            }
        }
        out
    }

    /// Equality on a text field must compare in the database's collation, the one its
    /// expression index (`fxid_<object>_<field>`) is built in, or the index cannot serve it:
    /// a filter such as `?uscc=…` (and the duplicate check's lookup of a strong key that is not
    /// encrypted) read every record of the object. Ranges compare byte-wise.
    #[test]
    fn text_equality_can_use_the_field_index_and_ranges_compare_bytes() {
        let column = Column::Field { path: vec!["uscc".into()], kind: ValueKind::Text };
        let sql_of = |op: FilterOp| {
            let mut query = ListQuery::new("companies");
            query.filters = vec![Filter::Column { column: column.clone(), op }];
            let mut parts = QueryParts::default();
            push_list_conditions(&mut parts, &query).unwrap_or_else(|e| panic!("{e}"));
            parts.where_sql()
        };
        let value = || FilterValue::Text("91350100M000100Y43".into());
        for sql in [sql_of(FilterOp::Eq(value())), sql_of(FilterOp::Ne(value()))] {
            assert!(sql.contains("(r.fields #>> "), "{sql}");
            assert!(!sql.contains("COLLATE"), "equality must not change the collation: {sql}");
        }
        for sql in [sql_of(FilterOp::Gt(value())), sql_of(FilterOp::Lte(value()))] {
            assert!(sql.contains("COLLATE \"C\""), "ranges compare byte-wise: {sql}");
        }
    }

    #[test]
    fn every_bound_parameter_appears_in_the_statement() {
        let columns = [
            Column::Id,
            Column::OwnerId,
            Column::TeamId,
            Column::CreatedAt,
            Column::UpdatedAt,
            Column::CreatedBy,
            Column::UpdatedBy,
            Column::Field { path: vec!["a".into(), "b".into()], kind: ValueKind::Text },
            Column::Field { path: vec!["a".into()], kind: ValueKind::Number },
            Column::Field { path: vec!["a".into()], kind: ValueKind::Boolean },
            Column::Field { path: vec!["a".into()], kind: ValueKind::Array },
        ];
        let values = [
            FilterValue::Text("x".into()),
            FilterValue::Text("12".into()),
            FilterValue::Text("true".into()),
            FilterValue::Number("1.5".into()),
            FilterValue::Number("bad".into()),
            FilterValue::Bool(true),
            FilterValue::Uuid(Uuid::nil()),
            FilterValue::Micros(7),
        ];
        let mut ops = vec![FilterOp::Contains("%".into()), FilterOp::IsNull(true), FilterOp::IsNull(false)];
        for v in &values {
            ops.extend([
                FilterOp::Eq(v.clone()),
                FilterOp::Ne(v.clone()),
                FilterOp::Gt(v.clone()),
                FilterOp::Gte(v.clone()),
                FilterOp::Lt(v.clone()),
                FilterOp::Lte(v.clone()),
            ]);
        }
        let keys = [
            Value::String("k".into()),
            Value::from(3),
            Value::String("1.5".into()),
            Value::String(Uuid::nil().to_string()),
        ];
        for column in &columns {
            for op in &ops {
                for sort_column in &columns {
                    for key in &keys {
                        let mut query = ListQuery::new("o");
                        query.filters = vec![
                            Filter::Column { column: column.clone(), op: op.clone() },
                            Filter::BlindIndex { field: "f".into(), digest: vec![1] },
                        ];
                        query.scope =
                            RowScope::Restricted { owner_ids: vec![Uuid::nil()], team_ids: vec![], record_ids: vec![] };
                        query.search = custodian_core::search::query_tokens("abc 张三");
                        let mut parts = QueryParts::default();
                        push_list_conditions(&mut parts, &query).unwrap_or_else(|e| panic!("{e}"));
                        let Ok(sort) = sort_expr(&mut parts, sort_column) else { panic!("sort") };
                        let cursor = Cursor { key: key.clone(), id: Uuid::nil() };
                        if push_keyset(&mut parts, &sort, true, &cursor).is_err() {
                            continue; // a cursor of the wrong shape is refused
                        }
                        let sql = format!("{} {} {}", parts.where_sql(), sort.expr, sort.select);
                        let n = parts.into_binds().len();
                        assert_eq!(
                            placeholders(&sql),
                            (1..=n).collect(),
                            "{column:?} {op:?} sort {sort_column:?}: {sql}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn like_metacharacters_are_escaped() {
        assert_eq!(escape_like(r"50%_a\b"), r"50\%\_a\\b");
    }

    #[test]
    fn lexemes_split_like_unicode61() {
        assert_eq!(search_lexemes("张 三 张三 Acme-Co  x"), vec!["acme", "co", "x", "三", "张", "张三"]);
        assert!(search_lexemes("").is_empty());
    }
}
