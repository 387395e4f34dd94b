//! `custodian demo`: loads generated demo data through the service's write path (validation,
//! normalisation, encryption, versions and audit events — no shortcut), in batches of one
//! transaction each.

use anyhow::Result;
use custodian_core::ErrorCode;
use custodian_core::demo::generate;
use custodian_service::{CreateOptions, PreparedWrite, RequestContext, Service};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;
use std::collections::HashMap;
use std::time::Instant;
use uuid::Uuid;

pub async fn load(service: &Service, records: usize, seed: u64, duplicate_share: f64, batch: usize) -> Result<()> {
    let started = Instant::now();
    let data = generate(records, seed, duplicate_share);
    let ctx = RequestContext::cli();
    let progress = ProgressBar::new(data.records.len() as u64);
    progress.set_style(
        ProgressStyle::with_template("{spinner} {msg:12} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let mut ids: HashMap<(&'static str, usize), Uuid> = HashMap::with_capacity(data.records.len());
    let mut pending: Vec<(&'static str, usize, Uuid, PreparedWrite)> = Vec::with_capacity(batch);
    let mut skipped: HashMap<String, usize> = HashMap::new();
    let mut created = 0usize;
    let mut current_object = "";
    for record in &data.records {
        if record.object != current_object {
            // References point at earlier objects: commit them before preparing the next object.
            flush(service, &mut pending, &mut ids, &mut skipped, &mut created).await?;
            current_object = record.object;
            progress.set_message(current_object);
        }
        let mut fields = record.fields.clone();
        for (field, target, key) in &record.refs {
            match ids.get(&(*target, *key)) {
                Some(id) => {
                    fields.insert((*field).to_owned(), Value::String(id.to_string()));
                }
                None => {
                    fields.remove(*field);
                }
            }
        }
        match service.prepare_create(&ctx, record.object, &fields, &CreateOptions::default()).await {
            Ok((id, prepared)) => pending.push((record.object, record.key, id, prepared)),
            Err(e) => *skipped.entry(format!("{}: {}", record.object, e.code.as_str())).or_default() += 1,
        }
        if pending.len() >= batch {
            flush(service, &mut pending, &mut ids, &mut skipped, &mut created).await?;
        }
        progress.inc(1);
    }
    flush(service, &mut pending, &mut ids, &mut skipped, &mut created).await?;
    progress.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "created {created} records in {secs:.1} s ({:.0} records/s), seed {seed}",
        created as f64 / secs.max(1e-9)
    );
    let mut skipped: Vec<_> = skipped.into_iter().collect();
    skipped.sort();
    for (reason, n) in skipped {
        println!("skipped {n} ({reason})");
    }
    Ok(())
}

/// Applies the pending writes in one transaction. When the store refuses the batch because of
/// one record (an injected exact duplicate hitting a unique key), each write is retried alone
/// so that only the refused record is skipped.
async fn flush(
    service: &Service,
    pending: &mut Vec<(&'static str, usize, Uuid, PreparedWrite)>,
    ids: &mut HashMap<(&'static str, usize), Uuid>,
    skipped: &mut HashMap<String, usize>,
    created: &mut usize,
) -> Result<()> {
    if pending.is_empty() {
        return Ok(());
    }
    let items = std::mem::take(pending);
    let keys: Vec<_> = items.iter().map(|(o, k, id, _)| (*o, *k, *id)).collect();
    let (writes, retry): (Vec<PreparedWrite>, Vec<PreparedWrite>) =
        items.into_iter().map(|(_, _, _, p)| (p.clone(), p)).unzip();
    match service.apply_prepared(writes).await {
        Ok(()) => {
            *created += keys.len();
            for (o, k, id) in keys {
                ids.insert((o, k), id);
            }
            Ok(())
        }
        Err(e) if matches!(e.code, ErrorCode::Duplicate | ErrorCode::VersionConflict | ErrorCode::Conflict) => {
            for ((o, k, id), write) in keys.into_iter().zip(retry) {
                match service.apply_prepared(vec![write]).await {
                    Ok(()) => {
                        *created += 1;
                        ids.insert((o, k), id);
                    }
                    Err(e) => *skipped.entry(format!("{o}: {}", e.code.as_str())).or_default() += 1,
                }
            }
            Ok(())
        }
        Err(e) => anyhow::bail!("writing demo records failed: {e}"),
    }
}
