//! `custodian export` and `custodian trace-leak` (PRODUCT.md S8, X3): both run offline on the
//! store through the service, as the operator, and both are audit events.

use crate::{StoreArgs, open_service};
use anyhow::{Context, Result, bail};
use clap::Args;
use custodian_service::{ListParams, RequestContext, ServiceConfig};
use futures::StreamExt;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;

/// A service error with its per-field details, for the terminal.
pub(crate) fn describe(e: &custodian_service::ServiceError) -> String {
    let mut text = e.to_string();
    for d in &e.details {
        text.push_str(&format!("\n  {}: {} ({})", d.field, d.message, d.code));
    }
    text
}

#[derive(Args)]
pub struct ExportArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// companies, contacts, leads, deals or activities.
    #[arg(long)]
    object: String,
    /// A filter as in the API: FIELD=value or FIELD[op]=value (repeatable).
    #[arg(long = "filter", value_name = "FIELD=VALUE")]
    filters: Vec<String>,
    /// Full-text search.
    #[arg(long)]
    q: Option<String>,
    /// Sort: a field or system property, prefixed with - for descending.
    #[arg(long)]
    sort: Option<String>,
    /// Comma-separated columns (default: id, version, owner, times and every field).
    #[arg(long)]
    columns: Option<String>,
    /// Refuse exports of more rows than this.
    #[arg(long, default_value_t = 1_000_000)]
    max_rows: u64,
    /// The CSV file to write (it must not exist yet).
    #[arg(long)]
    output: PathBuf,
}

/// Writes the export to a new file; prints the export id and row count.
pub async fn export(args: ExportArgs) -> Result<()> {
    let mut params = ListParams { q: args.q, sort: args.sort, ..ListParams::default() };
    for f in &args.filters {
        let (k, v) = f.split_once('=').with_context(|| format!("--filter {f}: expected FIELD=VALUE"))?;
        params.filters.push((k.trim().to_owned(), v.to_owned()));
    }
    let config = ServiceConfig { export_max_rows: args.max_rows, ..ServiceConfig::default() };
    let service = open_service(&args.store, config).await?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&args.output)
        .with_context(|| format!("creating {}", args.output.display()))?;
    let ctx = RequestContext::cli();
    let export = service
        .export_records(&ctx, &args.object, &params, args.columns.as_deref())
        .await
        .map_err(|e| anyhow::anyhow!("{}", describe(&e)))?;
    let bar = if export.rows >= 10_000 && std::io::stderr().is_terminal() {
        indicatif::ProgressBar::new(export.rows)
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut lines = export.lines;
    let mut written = 0u64;
    while let Some(chunk) = lines.next().await {
        let chunk = chunk.map_err(|e| anyhow::anyhow!("{}", describe(&e)))?;
        let rows = chunk.matches("\r\n").count() as u64;
        file.write_all(chunk.as_bytes()).with_context(|| format!("writing {}", args.output.display()))?;
        written += rows;
        bar.set_position(written.saturating_sub(1));
    }
    file.sync_all()?;
    bar.finish_and_clear();
    println!(
        "{}",
        serde_json::json!({ "export_id": export.export_id, "object": export.object, "rows": export.rows, "output": args.output })
    );
    Ok(())
}

#[derive(Args)]
pub struct TraceArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// The leaked file (CSV).
    file: PathBuf,
}

/// Prints what the file is traced to (JSON); exits non-zero when no export is named.
pub async fn trace(args: TraceArgs) -> Result<()> {
    let bytes = std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let service = open_service(&args.store, ServiceConfig::default()).await?;
    let trace =
        service.trace_leak(&RequestContext::cli(), &bytes).await.map_err(|e| anyhow::anyhow!("{}", describe(&e)))?;
    println!("{}", serde_json::to_string_pretty(&trace)?);
    if trace.export_id.is_none() {
        bail!("no registered export is named by the evidence (verdict: {})", trace.verdict);
    }
    Ok(())
}
