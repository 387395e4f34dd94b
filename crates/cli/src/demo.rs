//! `custodian demo`: loads generated demo data through the service's write path (validation,
//! normalisation, encryption, versions and audit events — no shortcut), in batches of one
//! transaction each.

use anyhow::Result;
use custodian_core::ErrorCode;
use custodian_core::demo::{DemoData, generate};
use custodian_service::{CreateOptions, PreparedWrite, RequestContext, Service, ServiceError};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::time::Instant;
use uuid::Uuid;

pub async fn load(service: &Service, records: usize, seed: u64, duplicate_share: f64, batch: usize) -> Result<()> {
    let started = Instant::now();
    let data = generate(records, seed, duplicate_share);
    let loaded = load_data(service, &data, batch).await?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "created {} records in {secs:.1} s ({:.0} records/s), seed {seed}",
        loaded.created,
        loaded.created as f64 / secs.max(1e-9)
    );
    for (reason, n) in loaded.skipped {
        println!("skipped {n} ({reason})");
    }
    Ok(())
}

/// What `load_data` did.
#[derive(Debug)]
struct Loaded {
    created: usize,
    /// Records refused, by "object: error code".
    skipped: BTreeMap<String, usize>,
}

/// Creates the records of `data` through the batch path, `batch` records of one object at a
/// time.
async fn load_data(service: &Service, data: &DemoData, batch: usize) -> Result<Loaded> {
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
    let mut loaded = Loaded { created: 0, skipped: BTreeMap::new() };
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
                    *loaded.skipped.entry(format!("{}: {}", record.object, e.code.as_str())).or_default() += 1;
                    stand_in(&mut ids, record.object, record.key, record.duplicate_of, &e);
                }
            }
        }
        flush(service, &mut pending, &mut ids, &mut loaded).await?;
        progress.inc(chunk.len() as u64);
        i = end;
    }
    flush(service, &mut pending, &mut ids, &mut loaded).await?;
    progress.finish_and_clear();
    Ok(loaded)
}

/// Applies the pending writes in one transaction. Duplicates within a batch are refused when
/// it is prepared; when the store still refuses the batch because of one record (a value
/// taken by another writer meanwhile, or a unique rule on a field the duplicate check does not
/// compare), each write is retried alone so that only the refused record is skipped.
async fn flush(
    service: &Service,
    pending: &mut Vec<Pending>,
    ids: &mut HashMap<(&'static str, usize), Uuid>,
    loaded: &mut Loaded,
) -> Result<()> {
    if pending.is_empty() {
        return Ok(());
    }
    let items = std::mem::take(pending);
    let writes: Vec<PreparedWrite> = items.iter().map(|p| p.write.clone()).collect();
    match service.apply_prepared(writes).await {
        Ok(()) => {
            loaded.created += items.len();
            for p in items {
                ids.insert((p.object, p.key), p.id);
            }
            Ok(())
        }
        Err(e) if matches!(e.code, ErrorCode::Duplicate | ErrorCode::VersionConflict | ErrorCode::Conflict) => {
            for p in items {
                match service.apply_prepared(vec![p.write]).await {
                    Ok(()) => {
                        loaded.created += 1;
                        ids.insert((p.object, p.key), p.id);
                    }
                    Err(e) => {
                        *loaded.skipped.entry(format!("{}: {}", p.object, e.code.as_str())).or_default() += 1;
                        stand_in(ids, p.object, p.key, p.duplicate_of, &e);
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

/// The first candidate a duplicate refusal names (a stored record, or one written earlier in the
/// same batch); `None` for any other error.
pub(crate) fn refused_as_duplicate_of(refusal: &ServiceError) -> Option<Uuid> {
    if !matches!(refusal.code, ErrorCode::Duplicate | ErrorCode::PossibleDuplicate) {
        return None;
    }
    refusal.extra.as_ref()?.get("candidates")?.as_array()?.first()?.get("id")?.as_str()?.parse::<Uuid>().ok()
}

/// A refused record is represented by the record it duplicates, so that records referring to
/// it (a deal of that company) still get a valid reference: an injected near-duplicate by its
/// original, any other look-alike (the generator makes a few by chance) by the first candidate
/// its refusal names. A record refused for another reason has no stand-in; references to it
/// are left out.
fn stand_in(
    ids: &mut HashMap<(&'static str, usize), Uuid>,
    object: &'static str,
    key: usize,
    duplicate_of: Option<usize>,
    refusal: &ServiceError,
) {
    let original = duplicate_of.and_then(|k| ids.get(&(object, k)).copied());
    if let Some(id) = original.or_else(|| refused_as_duplicate_of(refusal)) {
        ids.insert((object, key), id);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use custodian_service::{ListParams, ServiceConfig, load_keyring};
    use custodian_store::Store;
    use std::sync::Arc;

    async fn service(store: Arc<dyn Store>) -> Service {
        let master = custodian_crypto::MasterKey::from_hex(&"cd".repeat(32)).unwrap();
        let keyring = load_keyring(store.as_ref(), &master).await.unwrap();
        Service::new(store, keyring, ServiceConfig::default()).await.unwrap()
    }

    /// Demo data in which company 1 is a copy of company 0 that the generator did not mark as
    /// an injected duplicate (as happens by chance in large runs), and every deal and contact
    /// refers to company 1.
    fn data_with_an_accidental_look_alike() -> DemoData {
        let mut data = generate(60, 11, 0.0);
        let first = data.index_of("companies", 0).unwrap();
        let second = data.index_of("companies", 1).unwrap();
        data.records[second].fields = data.records[first].fields.clone();
        assert_eq!(data.records[second].duplicate_of, None);
        for r in data.records.iter_mut().filter(|r| r.object == "deals" || r.object == "contacts") {
            for (field, target, key) in &mut r.refs {
                if *field == "company_id" && *target == "companies" {
                    *key = 1;
                }
            }
        }
        data
    }

    /// The refused look-alike is represented by the record it duplicates: the records that
    /// refer to it are created, linked to the stored company (before, every deal of such a
    /// company was refused as invalid, and its contacts lost their company).
    async fn look_alike_stands_in(store: Arc<dyn Store>) {
        let service = service(store).await;
        let data = data_with_an_accidental_look_alike();
        let deals = data.of("deals").len();
        assert!(deals > 0 && data.of("deals").iter().all(|d| d.refs.iter().any(|r| r.0 == "company_id")));
        let loaded = load_data(&service, &data, 4).await.unwrap();
        assert_eq!(loaded.created, data.records.len() - 1, "{loaded:?}");
        assert_eq!(loaded.skipped.len(), 1, "{loaded:?}");
        assert!(loaded.skipped.keys().all(|k| k.starts_with("companies: ")), "{loaded:?}");

        let ctx = RequestContext::cli();
        let all = ListParams { limit: Some(200), ..Default::default() };
        let companies = service.list_records(&ctx, "companies", &all).await.unwrap().items;
        assert_eq!(companies.len(), data.of("companies").len() - 1);
        // Ids grow in the order of creation: company 0 came first.
        let original = companies.iter().map(|c| c.id).min().unwrap();
        let original = Value::String(original.to_string());
        let stored_deals = service.list_records(&ctx, "deals", &all).await.unwrap().items;
        assert_eq!(stored_deals.len(), deals);
        assert!(stored_deals.iter().all(|d| d.fields.get("company_id") == Some(&original)), "{stored_deals:?}");
        let contacts = service.list_records(&ctx, "contacts", &all).await.unwrap().items;
        assert_eq!(contacts.len(), data.of("contacts").len());
        let linked = contacts.iter().filter(|c| c.fields.get("company_id") == Some(&original)).count();
        let referring = data.of("contacts").iter().filter(|c| c.refs.iter().any(|r| r.0 == "company_id")).count();
        assert_eq!(linked, referring, "{contacts:?}");
    }

    #[tokio::test]
    async fn look_alike_stands_in_on_sqlite() {
        let (store, _dir) = custodian_store_tests::sqlite_test_store().await;
        look_alike_stands_in(Arc::new(store)).await;
    }

    #[tokio::test]
    async fn look_alike_stands_in_on_postgres() {
        let Some((store, _db)) = custodian_store_tests::postgres_test_store().await else { return };
        look_alike_stands_in(Arc::new(store)).await;
    }
}
