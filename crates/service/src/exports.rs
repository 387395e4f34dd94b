//! Record exports and leak tracing (PRODUCT.md S8).
//!
//! An export is a list without pages: the same filters, search, sort and row scope as
//! `list_records`, the same field access (hidden fields cannot be asked for, masked ones leave
//! masked). It needs the role's export permission; above `export_step_up_rows` rows a fresh
//! step-up; above `export_max_rows` it is refused. Before the first row leaves, the export is
//! registered as a `record.export` audit event naming the filter, the columns and every row id;
//! if that event cannot be written, nothing is exported. The anomaly metric `export_rows` sums
//! these events' `rows`.
//!
//! Every export carries a visible watermark column (exporter, time, export id) and the
//! invisible quoting fingerprint of `custodian_core::export`, keyed by the export id under the
//! server's keys. `trace_leak` compares a file with every registered export: fingerprint,
//! watermark and row ids, strongest evidence first.

use crate::error::{ServiceError, ServiceResult};
use crate::query::ListParams;
use crate::{RequestContext, Service};
use custodian_core::ErrorCode;
use custodian_core::access::FieldAccess;
use custodian_core::export::{Agreement, FingerprintKey, agreement, read_raw, safe_cell_text, write_line};
use custodian_core::schema::ObjectDef;
use custodian_store::{ActionFilter, AuditQuery, ListQuery, StoredRecord};
use futures::StreamExt;
use futures::stream::{self, BoxStream};
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::sync::Arc;
use uuid::Uuid;

/// Rows read per store page while exporting.
const EXPORT_PAGE: u32 = 500;
/// System properties an export may include, in this order before the fields.
const SYSTEM_COLUMNS: &[&str] = &["id", "version", "owner_id", "team_id", "created_at", "updated_at"];
/// The columns an export has when none are asked for: these, then every visible field.
const DEFAULT_SYSTEM_COLUMNS: &[&str] = &["id", "version", "owner_id", "created_at", "updated_at"];
/// The visible watermark column, last in every export.
pub const WATERMARK_COLUMN: &str = "watermark";
/// Cells of a file compared with each registered export's fingerprint.
const TRACE_MAX_CELLS: usize = 20_000;

/// An export under way: registered (audited) already; `lines` yields the CSV text.
pub struct RecordExport {
    pub export_id: Uuid,
    pub object: String,
    pub rows: u64,
    pub filename: String,
    pub lines: BoxStream<'static, ServiceResult<String>>,
}

/// One registered export compared with a file.
#[derive(Debug, Clone, Serialize)]
pub struct TraceCandidate {
    pub export_id: Uuid,
    /// Sequence number of the export's `record.export` audit event.
    pub seq: i64,
    pub at: String,
    pub actor_id: Option<Uuid>,
    pub actor: Option<String>,
    pub object: Option<String>,
    pub rows: u64,
    pub columns: Vec<String>,
    /// The file's quoting matches this export's fingerprint.
    pub fingerprint_match: bool,
    pub fingerprint_cells: usize,
    pub fingerprint_agreeing: usize,
    /// The file's watermark column names this export, and the file's rows agree with it.
    pub watermark_match: bool,
    /// File rows whose id this export contained.
    pub ids_matched: usize,
}

/// What `trace_leak` found.
#[derive(Debug, Clone, Serialize)]
pub struct LeakTrace {
    /// SHA-256 of the file.
    pub file_sha256: String,
    pub file_rows: usize,
    pub file_ids: usize,
    /// `fingerprint`, `watermark`, `ids` (the kind of evidence behind `export_id`) or `none`.
    pub verdict: String,
    /// The export the file came from, when the evidence names one.
    pub export_id: Option<Uuid>,
    /// Registered exports with any evidence, strongest first (at most 10).
    pub candidates: Vec<TraceCandidate>,
}

/// A cell's text for a value as the caller may see it.
fn cell_text(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Array(items)) => items.iter().map(|v| cell_text(Some(v))).collect::<Vec<_>>().join(";"),
        Some(Value::Object(m)) => match (m.get("amount"), m.get("currency")) {
            (Some(amount), Some(currency)) => format!("{} {}", cell_text(Some(amount)), cell_text(Some(currency))),
            _ => Value::Object(m.clone()).to_string(),
        },
    }
}

/// The per-export fingerprint key: a keyed hash of the export id under the server's keys.
fn fingerprint_key(service: &Service, export_id: Uuid) -> Option<FingerprintKey> {
    FingerprintKey::from_secret(&service.keyring.keyed_mac("export-fingerprint", &export_id.to_string()))
}

/// What one export writes for each record.
struct Renderer {
    service: Arc<Service>,
    ctx: RequestContext,
    def: ObjectDef,
    columns: Vec<String>,
    watermark: String,
    key: Option<FingerprintKey>,
}

impl Renderer {
    fn header(&self) -> String {
        let mut out = String::from("\u{feff}");
        let cells: Vec<(&str, &str)> = self
            .columns
            .iter()
            .map(|c| (c.as_str(), c.as_str()))
            .chain([(WATERMARK_COLUMN, WATERMARK_COLUMN)])
            .collect();
        write_line(&mut out, &cells, self.key.as_ref());
        out
    }

    fn line(&self, out: &mut String, r: &StoredRecord) {
        let (fields, _) = self.service.view_fields(&self.ctx, &self.def, r.id, &r.fields);
        let texts: Vec<String> = self
            .columns
            .iter()
            .map(|c| {
                let text = match c.as_str() {
                    "id" => r.id.to_string(),
                    "version" => r.version.to_string(),
                    "owner_id" => r.owner_id.map(|u| u.to_string()).unwrap_or_default(),
                    "team_id" => r.team_id.map(|u| u.to_string()).unwrap_or_default(),
                    "created_at" => crate::micros_to_rfc3339(r.created_at),
                    "updated_at" => crate::micros_to_rfc3339(r.updated_at),
                    field => cell_text(fields.get(field)),
                };
                safe_cell_text(&text)
            })
            .collect();
        let cells: Vec<(&str, &str)> = self
            .columns
            .iter()
            .map(String::as_str)
            .zip(texts.iter().map(String::as_str))
            .chain([(WATERMARK_COLUMN, self.watermark.as_str())])
            .collect();
        write_line(out, &cells, self.key.as_ref());
    }
}

impl Service {
    /// The columns of an export: `id` first, then the asked-for system properties and fields
    /// (or the defaults), never a field hidden from the caller.
    fn export_columns(&self, ctx: &RequestContext, def: &ObjectDef, asked: Option<&str>) -> ServiceResult<Vec<String>> {
        let role = self.role_of(ctx);
        let visible =
            |name: &str| def.field(name).is_some_and(|f| role.field_access(&def.name, f) != FieldAccess::Hidden);
        let mut columns = vec!["id".to_owned()];
        match asked {
            None => {
                columns.extend(DEFAULT_SYSTEM_COLUMNS.iter().skip(1).map(|c| (*c).to_owned()));
                columns.extend(def.fields.iter().filter(|f| visible(&f.name)).map(|f| f.name.clone()));
            }
            Some(list) => {
                for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                    if !(SYSTEM_COLUMNS.contains(&name) || visible(name)) {
                        return Err(ServiceError::invalid_query(
                            "columns",
                            "unknown_field",
                            format!("Object {} has no column {name} you may export.", def.name),
                            format!("对象 {} 没有可导出的列 {name}。", def.name),
                        ));
                    }
                    if !columns.iter().any(|c| c == name) {
                        columns.push(name.to_owned());
                    }
                }
            }
        }
        if columns.len() > 200 {
            return Err(ServiceError::invalid_query("columns", "too_many", "At most 200 columns.", "最多 200 列。"));
        }
        Ok(columns)
    }

    /// Every id an export's query selects, in its order; refused (audited) beyond the cap.
    async fn export_ids(&self, ctx: &RequestContext, query: &ListQuery) -> ServiceResult<Vec<Uuid>> {
        let max = self.config.export_max_rows;
        let mut ids = Vec::new();
        let mut page_query = query.clone();
        loop {
            let page = self.store.list_records(&page_query).await?;
            ids.extend(page.items.iter().map(|r| r.id));
            if ids.len() as u64 > max {
                let e = ServiceError::validation(vec![custodian_core::FieldError::new(
                    "rows",
                    "export_too_large",
                    format!("An export is limited to {max} rows; narrow the filters."),
                    format!("单次导出最多 {max} 行，请缩小筛选范围。"),
                )]);
                self.audit_denied(ctx, "record.export", &e, json!({ "object": query.object, "limit": max })).await;
                return Err(e);
            }
            match page.next {
                Some(next) => page_query.after = Some(next),
                None => return Ok(ids),
            }
        }
    }

    /// Exports the records `params` select as CSV (see the module documentation). The export
    /// is registered before this returns; the lines are produced as the stream is read.
    pub async fn export_records(
        self: &Arc<Self>,
        ctx: &RequestContext,
        object: &str,
        params: &ListParams,
        columns: Option<&str>,
    ) -> ServiceResult<RecordExport> {
        let def = self.object_def(object)?;
        if !self.role_of(ctx).object(&def.name).export {
            let e = ServiceError::new(ErrorCode::Forbidden);
            self.audit_refusal(ctx, &def.name, None, "record.export", &e).await;
            return Err(e);
        }
        if params.cursor.is_some() || params.limit.is_some() {
            return Err(ServiceError::invalid_query(
                if params.cursor.is_some() { "cursor" } else { "limit" },
                "unknown_parameter",
                "An export has every matching row; cursor and limit do not apply.",
                "导出包含全部匹配行，不接受 cursor 和 limit 参数。",
            ));
        }
        let columns = self.export_columns(ctx, &def, columns)?;
        let (mut query, impossible) = self.build_list_query(ctx, &def, params).await?;
        query.limit = EXPORT_PAGE;
        let ids = if impossible { Vec::new() } else { self.export_ids(ctx, &query).await? };
        if ids.len() as u64 > self.config.export_step_up_rows {
            self.require_step_up(ctx, "record.export").await?;
        }
        let export_id = Uuid::now_v7();
        let now = self.config.clock.now_micros();
        let exporter = ctx.actor.as_ref().map_or("custodian-cli", |a| a.username.as_str());
        let at = crate::micros_to_rfc3339(now);
        let watermark = format!("{exporter} {at} {export_id}");
        let role = self.role_of(ctx);
        let masked: Vec<&String> = columns
            .iter()
            .filter(|c| {
                def.field(c).is_some_and(|f| {
                    matches!(role.field_access(&def.name, f), FieldAccess::Masked | FieldAccess::MaskedWrite)
                })
            })
            .collect();
        let mut audit = self.audit_draft(ctx, "record.export");
        audit.object = Some(def.name.clone());
        audit.details = json!({
            "export_id": export_id,
            "format": "csv",
            "filters": self.export_filter_record(&def, params),
            "q": params.q,
            "sort": params.sort,
            "deleted": params.deleted,
            "columns": columns,
            "masked_columns": masked,
            "rows": ids.len(),
            "ids": ids,
            "watermark": watermark,
            "fingerprint": "quoting-v1",
        });
        self.store.append_audit(vec![audit]).await?;

        let renderer = Arc::new(Renderer {
            service: self.clone(),
            ctx: ctx.clone(),
            def: def.clone(),
            columns,
            watermark,
            key: fingerprint_key(self, export_id),
        });
        let rows = ids.len() as u64;
        let wanted: Arc<HashSet<Uuid>> = Arc::new(ids.into_iter().collect());
        let header = stream::once({
            let renderer = renderer.clone();
            async move { Ok(renderer.header()) }
        });
        let store = self.store.clone();
        let start = (!impossible && rows > 0).then(|| (query, HashSet::<Uuid>::new()));
        let body = stream::unfold(start, move |state| {
            let store = store.clone();
            let renderer = renderer.clone();
            let wanted = wanted.clone();
            async move {
                let (query, mut written) = state?;
                let page = match store.list_records(&query).await {
                    Ok(page) => page,
                    Err(e) => return Some((Err(ServiceError::from(e)), None)),
                };
                let mut out = String::new();
                // Only the registered rows leave, each once (a record whose sort key changed
                // meanwhile may come round twice): one created or moved into the filter since
                // the registration is not in the file.
                for r in page.items.iter().filter(|r| wanted.contains(&r.id)) {
                    if written.insert(r.id) {
                        renderer.line(&mut out, r);
                    }
                }
                let next = match page.next {
                    Some(after) if written.len() < wanted.len() => {
                        Some((ListQuery { after: Some(after), ..query }, written))
                    }
                    _ => None,
                };
                Some((Ok(out), next))
            }
        });
        let date = at.get(..10).unwrap_or("export").to_owned();
        let short = export_id.simple().to_string();
        Ok(RecordExport {
            export_id,
            object: def.name.clone(),
            rows,
            filename: format!("{}-{date}-{}.csv", def.name, &short[short.len() - 8..]),
            lines: header.chain(body).boxed(),
        })
    }

    /// The filters of an export as registered: field and value, except that values of
    /// sensitive fields are a keyed hash (never their text).
    fn export_filter_record(&self, def: &ObjectDef, params: &ListParams) -> Vec<Value> {
        params
            .filters
            .iter()
            .map(|(key, value)| {
                let field = key.split('[').next().unwrap_or(key);
                let sensitive = def.field(field).is_some_and(|f| f.sensitive);
                let value = if sensitive {
                    json!({ "hmac": hex::encode(self.keyring.keyed_mac("audit-filter", value)) })
                } else {
                    json!(value)
                };
                json!({ "key": key, "value": value })
            })
            .collect()
    }

    /// Compares a (leaked) file with every registered export and names the one it came from
    /// (auditors and admins; audited as `export.trace`).
    pub async fn trace_leak(&self, ctx: &RequestContext, file: &[u8]) -> ServiceResult<LeakTrace> {
        // Auditors and admins, or the operator offline (`custodian trace-leak`).
        if ctx.actor.is_some() {
            self.auditor_or_refuse(ctx, "export.trace").await?;
        }
        // A file re-saved in another encoding keeps its ASCII ids; the rest may be lost.
        let text = String::from_utf8_lossy(file);
        let raw = read_raw(&text);
        let empty = Vec::new();
        let (header, rows) = raw.split_first().map_or((&empty, &raw[..0]), |(h, r)| (h, r));
        let position = |name: &str| header.iter().position(|c| c.text.trim().eq_ignore_ascii_case(name));
        let file_ids: HashSet<Uuid> = match position("id") {
            Some(i) => {
                rows.iter().filter_map(|r| r.get(i)).filter_map(|c| Uuid::parse_str(c.text.trim()).ok()).collect()
            }
            // No id column: any cell holding an id counts.
            None => rows.iter().flatten().filter_map(|c| Uuid::parse_str(c.text.trim()).ok()).collect(),
        };
        let watermarks: HashSet<&str> = position(WATERMARK_COLUMN)
            .map(|i| rows.iter().filter_map(|r| r.get(i)).map(|c| c.text.as_str()).collect())
            .unwrap_or_default();

        let mut candidates = Vec::new();
        let mut before_seq = None;
        loop {
            let query = AuditQuery {
                action: Some(ActionFilter::Exact("record.export".into())),
                before_seq,
                limit: 500,
                ..AuditQuery::default()
            };
            let events = self.store.query_audit(&query).await?;
            let Some(last) = events.last() else { break };
            before_seq = Some(last.seq);
            for event in &events {
                let body: Value = serde_json::from_str(&event.body).unwrap_or(Value::Null);
                let details = &body["details"];
                let Some(export_id) = details["export_id"].as_str().and_then(|s| Uuid::parse_str(s).ok()) else {
                    continue;
                };
                let columns: Vec<String> = details["columns"]
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
                    .unwrap_or_default();
                let ids_matched = details["ids"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .filter_map(|s| Uuid::parse_str(s).ok())
                            .filter(|u| file_ids.contains(u))
                            .count()
                    })
                    .unwrap_or(0);
                let export_text = export_id.to_string();
                // Anyone who saw an export can copy its watermark: it counts only where the
                // rows agree with it (at least half of the file's ids were in that export).
                let watermark_match = watermarks.iter().any(|w| w.contains(&export_text))
                    && (file_ids.is_empty() || ids_matched * 2 >= file_ids.len());
                let fp = match fingerprint_key(self, export_id) {
                    Some(key) if !header.is_empty() => {
                        let known = |c: &str| c == WATERMARK_COLUMN || columns.iter().any(|k| k == c);
                        agreement(&key, header, rows, &known, TRACE_MAX_CELLS)
                    }
                    _ => Agreement::default(),
                };
                if !(fp.is_match() || watermark_match || ids_matched > 0) {
                    continue;
                }
                candidates.push(TraceCandidate {
                    export_id,
                    seq: event.seq,
                    at: crate::micros_to_rfc3339(event.at),
                    actor_id: event.actor_id,
                    actor: details["watermark"].as_str().and_then(|w| w.split(' ').next()).map(str::to_owned),
                    object: event.object.clone(),
                    rows: details["rows"].as_u64().unwrap_or(0),
                    columns,
                    fingerprint_match: fp.is_match(),
                    fingerprint_cells: fp.observed,
                    fingerprint_agreeing: fp.agreeing,
                    watermark_match,
                    ids_matched,
                });
            }
        }
        candidates.sort_by(|a, b| {
            (b.fingerprint_match, b.watermark_match, b.ids_matched, b.seq).cmp(&(
                a.fingerprint_match,
                a.watermark_match,
                a.ids_matched,
                a.seq,
            ))
        });
        let (verdict, export_id) = verdict(&candidates);
        candidates.truncate(10);
        let trace = LeakTrace {
            file_sha256: custodian_crypto::sha256_hex(file),
            file_rows: rows.len(),
            file_ids: file_ids.len(),
            verdict: verdict.to_owned(),
            export_id,
            candidates,
        };
        let mut audit = self.audit_draft(ctx, "export.trace");
        audit.details = json!({
            "file_sha256": trace.file_sha256,
            "file_rows": trace.file_rows,
            "verdict": trace.verdict,
            "export_id": trace.export_id,
        });
        self.store.append_audit(vec![audit]).await?;
        Ok(trace)
    }
}

/// The export the evidence names: a fingerprint match (unique by construction), else a
/// watermark naming one export, else the one export holding the most of the file's ids when
/// no other holds as many.
fn verdict(sorted: &[TraceCandidate]) -> (&'static str, Option<Uuid>) {
    let Some(best) = sorted.first() else { return ("none", None) };
    if best.fingerprint_match {
        return ("fingerprint", Some(best.export_id));
    }
    if best.watermark_match {
        return ("watermark", Some(best.export_id));
    }
    let most = sorted.iter().map(|c| c.ids_matched).max().unwrap_or(0);
    let tied = sorted.iter().filter(|c| c.ids_matched == most).count();
    if most > 0 && tied == 1 {
        let best = sorted.iter().find(|c| c.ids_matched == most).map(|c| c.export_id);
        return ("ids", best);
    }
    ("ambiguous", None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_render_every_value_kind() {
        assert_eq!(cell_text(None), "");
        assert_eq!(cell_text(Some(&json!(null))), "");
        assert_eq!(cell_text(Some(&json!("张三"))), "张三");
        assert_eq!(cell_text(Some(&json!(12))), "12");
        assert_eq!(cell_text(Some(&json!(true))), "true");
        assert_eq!(cell_text(Some(&json!(["a", "b"]))), "a;b");
        assert_eq!(cell_text(Some(&json!({"amount": "12.50", "currency": "CNY"}))), "12.50 CNY");
        assert_eq!(cell_text(Some(&json!({"x": 1}))), "{\"x\":1}");
    }
}
