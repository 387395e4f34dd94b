//! Imports (PRODUCT.md A6, the audited half of S6's "exports and imports").
//!
//! A table (header + rows, parsed by the caller) becomes creates of one object through the one
//! write path: columns are mapped to fields (given, or found by field name or label), each row
//! is validated, normalised and checked for duplicates — against stored records and against the
//! other rows of the file — exactly as an API create would be (`prepare_creates`, one batch).
//! A dry run reports per-row errors, duplicates and the normalisations applied, and changes
//! nothing. A commit writes every row in one transaction with a `record.import` event naming
//! every id, or nothing: a file with any bad row is refused unless the caller asks to skip bad
//! rows (they are then listed in the report and the event, never dropped silently). An import
//! can be reverted: its records are soft-deleted in one transaction (`record.import_revert`).

use crate::error::{ServiceError, ServiceResult};
use crate::records::{CreateOptions, PreparedWrite};
use crate::{Operation, RequestContext, Service};
use custodian_core::access::Scope;
use custodian_core::schema::{FieldDef, FieldType, ObjectDef};
use custodian_core::values::{index_text, validate_record};
use custodian_core::{ErrorCode, FieldError};
use custodian_store::{ActionFilter, AuditQuery};
use serde::Serialize;
use serde_json::{Map, Value, json};
use uuid::Uuid;

/// Most rows one import takes (one transaction, one duplicate-check batch).
pub const MAX_IMPORT_ROWS: usize = 20_000;
/// Problems and normalisations listed in a report (all are counted).
const MAX_LISTED: usize = 1_000;

/// What to import.
#[derive(Debug, Clone)]
pub struct ImportRequest {
    pub object: String,
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
    /// The file line of each row, for messages.
    pub lines: Vec<usize>,
    /// `(column, field)`; empty: columns named like a field (name or zh/en label) are mapped.
    pub mapping: Vec<(String, String)>,
    /// Name and SHA-256 of the file, for the record.
    pub file_name: String,
    pub file_sha256: String,
    /// Write (all rows in one transaction) instead of only reporting.
    pub commit: bool,
    /// With `commit`: write the good rows and report the bad ones instead of refusing the file.
    pub skip_invalid: bool,
}

/// One problem of one row.
#[derive(Debug, Clone, Serialize)]
pub struct RowProblem {
    /// 1-based row number (the header is row 0).
    pub row: usize,
    pub line: usize,
    pub code: String,
    pub message: String,
    pub details: Vec<FieldError>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extra: Option<Value>,
}

/// A value the import changed to its canonical form.
#[derive(Debug, Clone, Serialize)]
pub struct Normalisation {
    pub row: usize,
    pub field: String,
    pub from: String,
    pub to: String,
}

/// The outcome of an import or a dry run.
#[derive(Debug, Clone, Serialize)]
pub struct ImportReport {
    /// Set when rows were written.
    pub import_id: Option<Uuid>,
    pub object: String,
    pub committed: bool,
    pub rows: usize,
    pub valid_rows: usize,
    pub invalid_rows: usize,
    pub written: usize,
    pub mapping: Vec<Value>,
    pub unmapped_columns: Vec<String>,
    pub problems: Vec<RowProblem>,
    pub problems_total: usize,
    pub normalisations: Vec<Normalisation>,
    pub normalisations_total: usize,
    /// Ids of the records written, in row order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ids: Vec<Uuid>,
}

/// A cell's text as the JSON value the field's validator expects.
fn cell_value(def: &FieldDef, text: &str) -> Value {
    let t = text.trim();
    match def.field_type {
        FieldType::Boolean => match t.to_lowercase().as_str() {
            "true" | "1" | "yes" | "y" | "是" | "真" => Value::Bool(true),
            "false" | "0" | "no" | "n" | "否" | "假" => Value::Bool(false),
            _ => Value::String(t.to_owned()),
        },
        FieldType::MultiEnum => Value::Array(
            t.split([';', '；', '、', '|'])
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.to_owned()))
                .collect(),
        ),
        FieldType::Money => {
            let t = t.trim_start_matches(['¥', '￥']).trim();
            let (amount, currency) = match t.rsplit_once(' ') {
                Some((a, c)) if c.len() == 3 && c.chars().all(|ch| ch.is_ascii_alphabetic()) => (a.trim(), Some(c)),
                _ => (t, None),
            };
            let mut m = Map::new();
            m.insert("amount".into(), Value::String(amount.replace([',', '，'], "")));
            if let Some(c) = currency {
                m.insert("currency".into(), Value::String(c.to_owned()));
            }
            Value::Object(m)
        }
        _ => Value::String(t.to_owned()),
    }
}

/// The text a stored value shows as (to tell whether normalising changed it).
fn shown(value: &Value) -> String {
    match value {
        Value::Object(m) => match (m.get("amount"), m.get("currency")) {
            (Some(a), Some(c)) => format!("{} {}", index_text(a), index_text(c)),
            _ => value.to_string(),
        },
        Value::Array(items) => items.iter().map(index_text).collect::<Vec<_>>().join(";"),
        other => index_text(other),
    }
}

impl Service {
    /// The column → field mapping of an import: the one given (every field must exist; no
    /// column or field twice), or each column named like a field's name or label.
    fn import_mapping(&self, def: &ObjectDef, req: &ImportRequest) -> ServiceResult<Vec<(usize, FieldDef)>> {
        let bad = |field: &str, code: &str, en: String, zh: String| {
            ServiceError::validation(vec![FieldError::new(field, code, en, zh)])
        };
        let mut out: Vec<(usize, FieldDef)> = Vec::new();
        if req.mapping.is_empty() {
            for (i, column) in req.header.iter().enumerate() {
                let c = column.trim();
                let found = def
                    .fields
                    .iter()
                    .find(|f| f.name.eq_ignore_ascii_case(c) || f.label_zh == c || f.label_en.eq_ignore_ascii_case(c));
                if let Some(f) = found
                    && !out.iter().any(|(_, g)| g.name == f.name)
                {
                    out.push((i, f.clone()));
                }
            }
        } else {
            for (column, field) in &req.mapping {
                let Some(i) = req.header.iter().position(|h| h.trim() == column.trim()) else {
                    return Err(bad(
                        column,
                        "unknown_column",
                        format!("The file has no column {column}."),
                        format!("文件中没有列 {column}。"),
                    ));
                };
                let Some(f) = def.field(field) else {
                    return Err(bad(
                        field,
                        "unknown_field",
                        format!("Object {} has no field {field}.", def.name),
                        format!("对象 {} 没有字段 {field}。", def.name),
                    ));
                };
                if out.iter().any(|(j, g)| *j == i || g.name == f.name) {
                    return Err(bad(
                        field,
                        "mapped_twice",
                        format!("Column {column} or field {field} is mapped twice."),
                        format!("列 {column} 或字段 {field} 被重复映射。"),
                    ));
                }
                out.push((i, f.clone()));
            }
        }
        if out.is_empty() {
            return Err(bad(
                "mapping",
                "nothing_mapped",
                format!("No column maps to a field of {}; map them (COLUMN=FIELD).", def.name),
                format!("没有列对应 {} 的字段，请指定映射（列名=字段）。", def.name),
            ));
        }
        Ok(out)
    }

    /// Checks an import and, when asked, writes it (see the module documentation).
    pub async fn import_records(&self, ctx: &RequestContext, req: &ImportRequest) -> ServiceResult<ImportReport> {
        let def = self.object_def(&req.object)?;
        if !self.role_of(ctx).object(&def.name).create {
            let e = ServiceError::new(ErrorCode::Forbidden);
            self.audit_refusal(ctx, &def.name, None, "record.import", &e).await;
            return Err(e);
        }
        if req.rows.len() > MAX_IMPORT_ROWS {
            return Err(ServiceError::validation(vec![FieldError::new(
                "rows",
                "too_many",
                format!("An import takes at most {MAX_IMPORT_ROWS} rows; split the file."),
                format!("单次导入最多 {MAX_IMPORT_ROWS} 行，请拆分文件。"),
            )]));
        }
        if req.rows.iter().any(|r| r.len() != req.header.len()) || req.lines.len() != req.rows.len() {
            return Err(ServiceError::with_message(
                ErrorCode::MalformedRequest,
                "Every row needs one cell per column.",
            ));
        }
        let mapping = self.import_mapping(&def, req)?;
        let records: Vec<(Map<String, Value>, CreateOptions)> = req
            .rows
            .iter()
            .map(|row| {
                let fields = mapping
                    .iter()
                    .filter(|(i, _)| !row[*i].trim().is_empty())
                    .map(|(i, f)| (f.name.clone(), cell_value(f, &row[*i])))
                    .collect();
                (fields, CreateOptions::default())
            })
            .collect();
        let prepared = self.prepare_creates(ctx, &def.name, &records).await;

        let mut problems = Vec::new();
        let mut normalisations = Vec::new();
        let mut normalisations_total = 0;
        let mut good: Vec<(usize, Uuid, PreparedWrite)> = Vec::new();
        for (i, result) in prepared.into_iter().enumerate() {
            match result {
                Ok((id, write)) => {
                    // The values as normalised (pure work again; the write holds them sealed).
                    let validation = self.input_context(ctx, None, None);
                    let stored = validate_record(&def, None, &records[i].0, &validation).unwrap_or_default();
                    for (column, f) in &mapping {
                        let cell = req.rows[i][*column].trim();
                        let Some(value) = stored.get(&f.name) else { continue };
                        let to = shown(value);
                        if !cell.is_empty() && to != cell {
                            normalisations_total += 1;
                            if normalisations.len() < MAX_LISTED {
                                normalisations.push(Normalisation {
                                    row: i + 1,
                                    field: f.name.clone(),
                                    from: cell.to_owned(),
                                    to,
                                });
                            }
                        }
                    }
                    good.push((i, id, write));
                }
                Err(e) => {
                    // A duplicate of another row of the file names that row.
                    let mut extra = e.extra.clone();
                    if let Some(candidates) =
                        extra.as_mut().and_then(|x| x.get_mut("candidates")).and_then(Value::as_array_mut)
                    {
                        for c in candidates {
                            if let Some(index) = c.get("batch_index").and_then(Value::as_u64) {
                                c["row"] = json!(index + 1);
                            }
                        }
                    }
                    problems.push(RowProblem {
                        row: i + 1,
                        line: req.lines[i],
                        code: e.code.as_str().to_owned(),
                        message: e.message.clone(),
                        details: e.details.clone(),
                        extra,
                    })
                }
            }
        }
        let problems_total = problems.len();
        let invalid_rows = problems_total;
        let write = req.commit && !good.is_empty() && (problems.is_empty() || req.skip_invalid);
        let mut report = ImportReport {
            import_id: None,
            object: def.name.clone(),
            committed: false,
            rows: req.rows.len(),
            valid_rows: good.len(),
            invalid_rows,
            written: 0,
            mapping: mapping.iter().map(|(i, f)| json!({ "column": req.header[*i], "field": f.name })).collect(),
            unmapped_columns: req
                .header
                .iter()
                .enumerate()
                .filter(|(i, _)| !mapping.iter().any(|(j, _)| j == i))
                .map(|(_, h)| h.clone())
                .collect(),
            problems: Vec::new(),
            problems_total,
            normalisations,
            normalisations_total,
            ids: Vec::new(),
        };
        let skipped: Vec<usize> = problems.iter().map(|p| p.row).collect();
        problems.truncate(MAX_LISTED);
        report.problems = problems;
        if !write {
            // A dry run (or a refused commit) reads stored records for its duplicate check: on
            // the record, with counts only.
            let mut audit =
                self.audit_draft(ctx, if req.commit { "record.import_refused" } else { "record.import_dry_run" });
            audit.object = Some(def.name.clone());
            audit.details = json!({
                "file": req.file_name, "file_sha256": req.file_sha256, "rows": report.rows,
                "valid_rows": report.valid_rows, "invalid_rows": report.invalid_rows,
            });
            self.store.append_audit(vec![audit]).await?;
            return Ok(report);
        }
        let import_id = Uuid::now_v7();
        let ids: Vec<Uuid> = good.iter().map(|(_, id, _)| *id).collect();
        let mut summary = self.audit_draft(ctx, "record.import");
        summary.object = Some(def.name.clone());
        summary.details = json!({
            "import_id": import_id,
            "file": req.file_name,
            "file_sha256": req.file_sha256,
            "rows": report.rows,
            "written": ids.len(),
            "skipped_rows": skipped,
            "mapping": report.mapping,
            "ids": ids,
        });
        let writes = good
            .into_iter()
            .map(|(_, _, w)| {
                let mut p = w.0;
                if let Value::Object(d) = &mut p.audit.details {
                    d.insert("import_id".into(), json!(import_id));
                }
                p
            })
            .collect();
        self.apply_with(writes, vec![summary]).await?;
        report.import_id = Some(import_id);
        report.committed = true;
        report.written = ids.len();
        report.ids = ids;
        Ok(report)
    }

    /// Soft-deletes every record an import wrote that is still active, in one transaction
    /// (the caller's delete scope applies; a fresh step-up is needed as for a bulk delete).
    /// Returns the ids deleted.
    pub async fn revert_import(&self, ctx: &RequestContext, import_id: Uuid) -> ServiceResult<Vec<Uuid>> {
        let (object, ids) = self.import_event(import_id).await?;
        let def = self.object_def(&object)?;
        if self.role_of(ctx).object(&def.name).delete == Scope::None {
            let e = ServiceError::new(ErrorCode::Forbidden);
            self.audit_refusal(ctx, &def.name, None, "record.import_revert", &e).await;
            return Err(e);
        }
        self.require_step_up(ctx, "record.import_revert").await?;
        let mut prepared = Vec::new();
        let mut deleted = Vec::new();
        for id in ids {
            let current = self.load_audited(ctx, &def, id, Operation::Delete, "record.import_revert").await?;
            if current.deleted_at.is_some() {
                continue;
            }
            prepared.push(self.prepare_soft_delete(ctx, &def, &current, ("import_id", json!(import_id)))?);
            deleted.push(id);
        }
        let mut summary = self.audit_draft(ctx, "record.import_revert");
        summary.object = Some(def.name.clone());
        summary.details = json!({ "import_id": import_id, "deleted": deleted });
        self.apply_with(prepared, vec![summary]).await?;
        Ok(deleted)
    }

    /// The object and record ids of a committed import, from its `record.import` event.
    async fn import_event(&self, import_id: Uuid) -> ServiceResult<(String, Vec<Uuid>)> {
        let wanted = import_id.to_string();
        let mut before_seq = None;
        loop {
            let query = AuditQuery {
                action: Some(ActionFilter::Exact("record.import".into())),
                before_seq,
                limit: 200,
                ..AuditQuery::default()
            };
            let events = self.store.query_audit(&query).await?;
            let Some(last) = events.last() else { return Err(ServiceError::not_found()) };
            before_seq = Some(last.seq);
            for event in &events {
                let body: Value = serde_json::from_str(&event.body).unwrap_or(Value::Null);
                let details = &body["details"];
                if details["import_id"].as_str() == Some(wanted.as_str()) {
                    let ids = details["ids"]
                        .as_array()
                        .map(|a| a.iter().filter_map(Value::as_str).filter_map(|s| Uuid::parse_str(s).ok()).collect())
                        .unwrap_or_default();
                    return Ok((event.object.clone().unwrap_or_default(), ids));
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn cells_become_the_values_validators_expect() {
        let schema = custodian_core::Schema::standard();
        let deals = schema.object("deals").expect("deals");
        let amount = deals.field("amount").expect("amount");
        assert_eq!(cell_value(amount, "¥1,234.50"), json!({"amount": "1234.50"}));
        assert_eq!(cell_value(amount, "99 usd"), json!({"amount": "99", "currency": "usd"}));
        let tags = deals.field("tags").expect("tags");
        assert_eq!(cell_value(tags, "重点；华东、 vip"), json!(["重点", "华东", "vip"]));
        let name = deals.field("name").expect("name");
        assert_eq!(cell_value(name, "  项目  "), json!("项目"));
        assert_eq!(shown(&json!({"amount": "1234.50", "currency": "CNY"})), "1234.50 CNY");
        assert_eq!(shown(&json!(["a", "b"])), "a;b");
    }
}
