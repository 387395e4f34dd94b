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
    // Spread the records over the existing sales users (reps and managers, else everyone
    // active), so that row scopes have something to show; with no users they stay unowned.
    let users = service.list_users(&ctx).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let active: Vec<_> = users.into_iter().filter(|u| u.status == "active").collect();
    let sales: Vec<_> =
        active.iter().filter(|u| matches!(u.role.as_str(), "sales_rep" | "sales_manager")).cloned().collect();
    let owners = if sales.is_empty() { active } else { sales };
    let progress = ProgressBar::new(data.records.len() as u64);
    progress.set_style(
        ProgressStyle::with_template("{spinner} {msg:12} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let mut ids: HashMap<(&'static str, usize), Uuid> = HashMap::with_capacity(data.records.len());
    let mut pending: Vec<Pending> = Vec::with_capacity(batch);
    let mut skipped: HashMap<String, usize> = HashMap::new();
    let mut created = 0usize;
    // Records of one object are prepared a batch at a time (their checks overlap), then
    // committed in one transaction.
    let mut i = 0;
    while i < data.records.len() {
        let object = data.records[i].object;
        progress.set_message(object);
        let mut end = i;
        while end < data.records.len() && end - i < batch.max(1) && data.records[end].object == object {
            end += 1;
        }
        let chunk = &data.records[i..end];
        // References point at earlier objects, which are committed by now.
        let input: Vec<(serde_json::Map<String, Value>, CreateOptions)> = chunk
            .iter()
            .map(|record| {
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
                let options = match owners.get(record.key % owners.len().max(1)) {
                    Some(u) => CreateOptions { owner_id: Some(u.id), team_id: u.team_id, ..Default::default() },
                    None => CreateOptions::default(),
                };
                (fields, options)
            })
            .collect();
        for (record, prepared) in chunk.iter().zip(service.prepare_creates(&ctx, object, &input).await) {
            match prepared {
                Ok((id, prepared)) => pending.push(Pending {
                    object: record.object,
                    key: record.key,
                    duplicate_of: record.duplicate_of,
                    id,
                    write: prepared,
                }),
                Err(e) => {
                    *skipped.entry(format!("{}: {}", record.object, e.code.as_str())).or_default() += 1;
                    stand_in(&mut ids, record.object, record.key, record.duplicate_of);
                }
            }
        }
        flush(service, &mut pending, &mut ids, &mut skipped, &mut created).await?;
        progress.inc(chunk.len() as u64);
        i = end;
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

/// Applies the pending writes in one transaction. Duplicates within a batch are refused when
/// it is prepared; when the store still refuses the batch because of one record (a value
/// taken by another writer meanwhile, or a unique rule on a field the duplicate check does not
/// compare), each write is retried alone so that only the refused record is skipped.
async fn flush(
    service: &Service,
    pending: &mut Vec<Pending>,
    ids: &mut HashMap<(&'static str, usize), Uuid>,
    skipped: &mut HashMap<String, usize>,
    created: &mut usize,
) -> Result<()> {
    if pending.is_empty() {
        return Ok(());
    }
    let items = std::mem::take(pending);
    let writes: Vec<PreparedWrite> = items.iter().map(|p| p.write.clone()).collect();
    match service.apply_prepared(writes).await {
        Ok(()) => {
            *created += items.len();
            for p in items {
                ids.insert((p.object, p.key), p.id);
            }
            Ok(())
        }
        Err(e) if matches!(e.code, ErrorCode::Duplicate | ErrorCode::VersionConflict | ErrorCode::Conflict) => {
            for p in items {
                match service.apply_prepared(vec![p.write]).await {
                    Ok(()) => {
                        *created += 1;
                        ids.insert((p.object, p.key), p.id);
                    }
                    Err(e) => {
                        *skipped.entry(format!("{}: {}", p.object, e.code.as_str())).or_default() += 1;
                        stand_in(ids, p.object, p.key, p.duplicate_of);
                    }
                }
            }
            Ok(())
        }
        Err(e) => anyhow::bail!("writing demo records failed: {e}"),
    }
}

/// A prepared demo record waiting for its batch.
struct Pending {
    object: &'static str,
    key: usize,
    duplicate_of: Option<usize>,
    id: Uuid,
    write: PreparedWrite,
}

/// A refused near-duplicate is represented by its original, so records that refer to it
/// (a deal of a duplicate company) still get a valid reference.
fn stand_in(
    ids: &mut HashMap<(&'static str, usize), Uuid>,
    object: &'static str,
    key: usize,
    duplicate_of: Option<usize>,
) {
    if let Some(original) = duplicate_of.and_then(|k| ids.get(&(object, k)).copied()) {
        ids.insert((object, key), original);
    }
}
