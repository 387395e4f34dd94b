//! `custodian import` and `custodian import-revert` (PRODUCT.md A6, X3): a CSV file checked
//! (dry run, the default) or written through the service's one write path, as the operator.

use crate::exports::describe;
use crate::{StoreArgs, open_service};
use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use custodian_service::{ImportRequest, RequestContext, ServiceConfig};
use sha2::{Digest, Sha256};
use std::path::PathBuf;

#[derive(Args)]
pub struct ImportArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// companies, contacts, leads, deals or activities.
    #[arg(long)]
    object: String,
    /// The CSV file (UTF-8, header row; GBK files are refused with the command that converts them).
    #[arg(long)]
    input: PathBuf,
    /// COLUMN=FIELD (repeatable). Without any, columns named like a field (its name, or its
    /// Chinese or English label, e.g. 手机 or Mobile) are mapped.
    #[arg(long = "column", value_name = "COLUMN=FIELD")]
    columns: Vec<String>,
    /// Write the rows (one transaction). Without it, only check them and report.
    #[arg(long)]
    commit: bool,
    /// With --commit: write the good rows and list the bad ones instead of refusing the file.
    #[arg(long, requires = "commit")]
    skip_invalid: bool,
    /// Write the JSON report here instead of standard output.
    #[arg(long)]
    report: Option<PathBuf>,
}

#[derive(Args)]
pub struct RevertArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// The import id its report (and the audit log) gave.
    import_id: uuid::Uuid,
}

pub async fn import(args: ImportArgs) -> Result<()> {
    let bytes = std::fs::read(&args.input).with_context(|| format!("reading {}", args.input.display()))?;
    let table = crate::dedupe::parse_table(&bytes).with_context(|| format!("{}", args.input.display()))?;
    let mut mapping = Vec::new();
    for c in &args.columns {
        let (column, field) = c.rsplit_once('=').with_context(|| format!("--column {c}: expected COLUMN=FIELD"))?;
        mapping.push((column.trim().to_owned(), field.trim().to_owned()));
    }
    let request = ImportRequest {
        object: args.object.clone(),
        header: table.header,
        rows: table.rows,
        lines: table.lines,
        mapping,
        file_name: args.input.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        file_sha256: hex::encode(Sha256::digest(&bytes)),
        commit: args.commit,
        skip_invalid: args.skip_invalid,
    };
    let service = open_service(&args.store, ServiceConfig::default()).await?;
    let report =
        service.import_records(&RequestContext::cli(), &request).await.map_err(|e| anyhow!("{}", describe(&e)))?;
    let text = serde_json::to_string_pretty(&report)?;
    match &args.report {
        Some(path) => std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?,
        None => println!("{text}"),
    }
    eprintln!(
        "{} rows: {} valid, {} with problems; {}",
        report.rows,
        report.valid_rows,
        report.invalid_rows,
        match report.import_id {
            Some(id) => format!("{} written (import {id})", report.written),
            None if args.commit => "nothing written".to_owned(),
            None => "dry run, nothing written (add --commit to write)".to_owned(),
        }
    );
    if report.invalid_rows > 0 && !report.committed {
        bail!("{} rows have problems (see the report)", report.invalid_rows);
    }
    Ok(())
}

pub async fn revert(args: RevertArgs) -> Result<()> {
    let service = open_service(&args.store, ServiceConfig::default()).await?;
    let deleted =
        service.revert_import(&RequestContext::cli(), args.import_id).await.map_err(|e| anyhow!("{}", describe(&e)))?;
    println!("{}", serde_json::json!({ "import_id": args.import_id, "deleted": deleted }));
    Ok(())
}
