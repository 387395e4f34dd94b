//! Duplicate prevention at entry (PRODUCT.md A3) and the duplicate scan with its review queue
//! (A5). Both use the matching engine of `custodian_core::matching`.
//!
//! At entry, inside the one write path (`prepare_create`, `update_record`, and through them
//! bulk paths and merges):
//! 1. strong keys (mobile, email, resident ID, USCC, contract number) are looked up exactly
//!    among active records — through blind indexes for encrypted fields — and a hit refuses the
//!    write with 409 `duplicate`;
//! 2. otherwise the record's blocking keys (kept per record, as keyed hashes, in `match_keys`,
//!    written in the same transaction as the record) propose candidates, which the engine scores;
//!    a score at or above the object's warn threshold refuses the write with 409
//!    `possible_duplicate` unless the request carries `confirm_not_duplicate` with a reason,
//!    which then goes into the write's audit event.
//!
//! Candidates are shown only as the caller may see them: records outside the caller's read
//! scope are only counted (`hidden_candidates`), shown ones are masked by field access, and
//! showing them is an audited read. Pairs a steward dismissed as "not a duplicate" are never
//! proposed again, at entry or by a scan.

use crate::access::Operation;
use crate::auto_merge::AutoMerge;
use crate::error::{ServiceError, ServiceResult};
use crate::view::{decrypt_stored, micros_to_rfc3339};
use crate::{RequestContext, Service};
use custodian_core::matching::{
    DedupeResult, FieldKind, FieldSpec, MatchConfig, Matcher, Model, PreparedRecord, map_on_all_cores,
};
use custodian_core::schema::ObjectDef;
use custodian_core::values::index_text;
use custodian_core::{ErrorCode, FieldError};
use custodian_crypto::Keyring;
use custodian_store::{
    CandidateRow, Column, DismissalRow, Filter, FilterOp, FilterValue, GuardKey, JOB_DUPLICATE_SCAN, JobProgress,
    JobRow, ListQuery, MATCH_KEYS_PER_CHECK, MatchGuard, MatchKeySet, RecordPage, RowScope, ScanJobRow, StoredRecord,
    ValueKind, now_micros,
};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use uuid::Uuid;

/// Tunables of duplicate detection.
#[derive(Debug, Clone)]
pub struct DuplicateConfig {
    /// Match probability at or above which a new or changed record is a possible duplicate of
    /// a stored one, per object (objects not listed use `default_warn_threshold`).
    pub warn_thresholds: BTreeMap<String, f64>,
    pub default_warn_threshold: f64,
    /// Prior match probability of two records compared at entry (there is no estimated model
    /// for one new record): it sets how much agreement it takes to warn.
    pub entry_prior: f64,
    /// Most stored records scored for one write.
    pub max_entry_candidates: u32,
    /// Records a scan compares at most (larger objects are refused, not silently truncated).
    pub max_scan_records: usize,
    /// Records a scan reads per page (1 to 1,000).
    pub scan_page: u32,
    /// Pages a scan reads at once (1 to 16), each from its own range of ids, while it prepares
    /// the pages read: a page read waits on the database, on disk reads when its pages are not
    /// cached, and several keep the disk and the cores busy.
    pub scan_readers: u32,
    /// Shown every scan's blocking before its pairs are stored (`custodian bench --only scan`
    /// measures the pair completeness of the real scan on labelled records with it). `None`
    /// outside benchmarks.
    pub scan_probe: Option<ScanProbe>,
}

/// A look at a scan's outcome: the ids of the records scanned (in the order of the result's
/// record indexes) and the result (`DedupeResult::probability` of a pair of them). Runs on the
/// scan's blocking thread; it must be quick, since its time counts in the scan's.
#[derive(Clone)]
pub struct ScanProbe(pub Arc<ScanProbeFn>);

/// The function of a [`ScanProbe`]: object, ids of the records scanned, the result.
pub type ScanProbeFn = dyn Fn(&str, &[Uuid], &DedupeResult) + Send + Sync;

impl std::fmt::Debug for ScanProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScanProbe")
    }
}

impl Default for DuplicateConfig {
    fn default() -> Self {
        DuplicateConfig {
            warn_thresholds: BTreeMap::new(),
            default_warn_threshold: 0.8,
            entry_prior: 1e-6,
            max_entry_candidates: 50,
            max_scan_records: 2_000_000,
            scan_page: 1000,
            scan_readers: 4,
            scan_probe: None,
        }
    }
}

impl DuplicateConfig {
    pub fn warn_threshold(&self, object: &str) -> f64 {
        self.warn_thresholds.get(object).copied().unwrap_or(self.default_warn_threshold)
    }

    /// Refuses absurd settings (thresholds outside (0, 1], a prior outside (0, 0.5]).
    pub fn check(&self) -> Result<(), String> {
        let ok = |t: f64| t.is_finite() && t > 0.0 && t <= 1.0;
        if !ok(self.default_warn_threshold) {
            return Err(format!("duplicate warn threshold {} is not in (0, 1]", self.default_warn_threshold));
        }
        for (object, t) in &self.warn_thresholds {
            if !ok(*t) {
                return Err(format!("duplicate warn threshold of {object} ({t}) is not in (0, 1]"));
            }
        }
        if !(1..=1000).contains(&self.scan_page) {
            return Err(format!("duplicate scan page of {} records is not in 1..=1000", self.scan_page));
        }
        if !(1..=16).contains(&self.scan_readers) {
            return Err(format!("duplicate scan readers ({}) are not in 1..=16", self.scan_readers));
        }
        if !(self.entry_prior.is_finite() && self.entry_prior > 0.0 && self.entry_prior <= 0.5) {
            return Err(format!("duplicate entry prior {} is not in (0, 0.5]", self.entry_prior));
        }
        Ok(())
    }
}

/// Stored records' prepared match values, by record id, each with the version it was prepared
/// from. A version's fields never change and the policies are fixed in code, so an entry is
/// good for as long as its version is the record's current one, which the store tells each
/// check (`Store::candidate_fields`); the last version put replaces the one before. This saves
/// the duplicate check at entry the decryption and preparation of candidates it has scored
/// before — the records of common names, scored against many new ones. Bounded; in memory only.
///
/// The eviction is scan-resistant (S3-FIFO, `quick_cache`), not least-recently-used: a batch
/// of a thousand contacts asks for some ten thousand candidates, and once those outnumber the
/// entries an LRU evicted each before it was asked for again — at 15,000 stored contacts every
/// candidate of a batch was read, decrypted and prepared again (none found held). Records asked
/// for again and again (common names) now stay; those asked for once pass through, after a
/// while (`PREPARED_CACHE_FREQUENT_SHARE`).
pub(crate) struct PreparedCache(quick_cache::sync::Cache<Uuid, (i64, Arc<PreparedRecord>)>);

/// Entries of the `PreparedCache` (a contact's prepared values take about a kilobyte).
const PREPARED_CACHE_ENTRIES: usize = 8192;

/// Share of the `PreparedCache` kept for records asked for again (S3-FIFO's main queue); the
/// rest holds what was put lately, until it is asked for again or pushed out. quick_cache's
/// default (0.97) left some 250 entries for the latter: at 200k contacts HTTP creates then found
/// 23% of their candidates held, against 38% with an LRU and 37% with this half and half,
/// which still keeps a batch's cycle of candidates (the unit tests below ask both ways).
const PREPARED_CACHE_FREQUENT_SHARE: f64 = 0.5;

impl Default for PreparedCache {
    fn default() -> Self {
        let options = quick_cache::OptionsBuilder::new()
            .estimated_items_capacity(PREPARED_CACHE_ENTRIES)
            .weight_capacity(PREPARED_CACHE_ENTRIES as u64)
            .hot_allocation(PREPARED_CACHE_FREQUENT_SHARE)
            .build();
        match options {
            Ok(options) => PreparedCache(quick_cache::sync::Cache::with_options(
                options,
                quick_cache::UnitWeighter,
                quick_cache::DefaultHashBuilder::default(),
                quick_cache::sync::DefaultLifecycle::default(),
            )),
            Err(_) => PreparedCache(quick_cache::sync::Cache::new(PREPARED_CACHE_ENTRIES)),
        }
    }
}

impl PreparedCache {
    /// The cached entry of each record id (its version and prepared values), `None` where there
    /// is none.
    fn held(&self, ids: &[Uuid]) -> Vec<Option<(i64, Arc<PreparedRecord>)>> {
        ids.iter().map(|id| self.0.get(id)).collect()
    }

    fn put_many(&self, entries: impl Iterator<Item = ((Uuid, i64), Arc<PreparedRecord>)>) {
        for ((id, version), prepared) in entries {
            self.0.insert(id, (version, prepared));
        }
    }
}

/// What counts as the same record, per object.
#[derive(Clone, Copy)]
pub(crate) struct Policy {
    /// Fields whose exact equality (normalised) means the same record.
    pub strong: &'static [&'static str],
    /// Fields the engine compares, with their kinds.
    pub compare: &'static [(&'static str, FieldKind)],
    /// Fields among `compare` whose blocking keys are stored for the check at entry.
    pub blocking: &'static [&'static str],
    /// Fields among `compare` that weigh only in a scan, whose model is estimated on the
    /// stored records: at entry the defaults cannot say how common a value is, and a title is
    /// shared by many (each agreement of a default text field weighs as much as a rare name).
    pub scan_only: &'static [&'static str],
    /// Whether fuzzy candidates are checked at entry (a scan always compares).
    pub fuzzy_at_entry: bool,
    /// Fields shown for a candidate.
    pub display: &'static [&'static str],
}

pub(crate) fn policy(object: &str) -> Option<Policy> {
    use FieldKind as K;
    Some(match object {
        "contacts" => Policy {
            strong: &["mobile", "email", "id_number"],
            compare: &[
                ("name", K::PersonName),
                ("mobile", K::Phone),
                ("email", K::Email),
                ("birth_date", K::Date),
                ("company_id", K::Exact),
                ("address", K::Address),
                ("wechat", K::IdNumber),
                // Last: the fields' indexes name the stored match keys' classes.
                ("title", K::Text),
            ],
            // The company: a person entered twice at one company ("Michael Clark" and
            // "M. Clark", 李丽 and "LI Li") often shares nothing else, and a common name's
            // block is too large to pair them; a company's contacts are few.
            blocking: &["name", "mobile", "email", "wechat", "company_id"],
            // A title is no evidence alone, but within a common name's block it is: the scan
            // blocks on the name with the title (two entries of one person often share little
            // else).
            scan_only: &["title"],
            fuzzy_at_entry: true,
            display: &["name", "company_id", "title", "mobile", "email"],
        },
        "leads" => Policy {
            strong: &["mobile", "email"],
            compare: &[
                ("name", K::PersonName),
                ("company_name", K::CompanyName),
                ("mobile", K::Phone),
                ("email", K::Email),
            ],
            blocking: &["name", "mobile", "email"],
            scan_only: &[],
            fuzzy_at_entry: true,
            display: &["name", "company_name", "mobile", "email"],
        },
        "companies" => Policy {
            strong: &["uscc"],
            compare: &[
                ("name", K::CompanyName),
                ("city", K::City),
                ("phone", K::Phone),
                ("address", K::Address),
                ("website", K::Exact),
                ("uscc", K::IdNumber),
            ],
            blocking: &["name", "phone"],
            scan_only: &[],
            fuzzy_at_entry: true,
            display: &["name", "uscc", "city"],
        },
        "deals" => Policy {
            strong: &["contract_no"],
            compare: &[("name", K::Text), ("company_id", K::Exact), ("contract_no", K::Exact)],
            blocking: &["name"],
            scan_only: &[],
            // Deals of one company are often named alike on purpose (renewals); only a scan
            // proposes them.
            fuzzy_at_entry: false,
            display: &["name", "contract_no", "company_id"],
        },
        _ => return None,
    })
}

impl Policy {
    /// The matcher of a request: one thread (requests run side by side).
    pub(crate) fn matcher(&self) -> Option<Matcher> {
        self.matcher_on(1)
    }

    /// The matcher of `threads` worker threads (0: one per core).
    pub(crate) fn matcher_on(&self, threads: usize) -> Option<Matcher> {
        let fields = self.compare.iter().map(|(name, kind)| FieldSpec::new(*name, *kind)).collect();
        Matcher::new(fields, MatchConfig { threads, ..MatchConfig::default() }).ok()
    }

    /// A record's values in the matcher's field order.
    pub(crate) fn raw_values(&self, plain: &Map<String, Value>) -> Vec<String> {
        self.compare.iter().map(|(name, _)| plain.get(*name).map(index_text).unwrap_or_default()).collect()
    }

    /// `raw_values` of a stored record, only the compared fields decrypted (the check at entry
    /// and the scan read stored candidates this way).
    pub(crate) fn stored_raw_values(
        &self,
        keyring: &Keyring,
        def: &ObjectDef,
        record_id: Uuid,
        stored: &Map<String, Value>,
    ) -> Vec<String> {
        let compared = |name: &str| self.compare.iter().any(|(n, _)| *n == name);
        self.raw_values(&decrypt_stored(keyring, def, record_id, stored, compared))
    }

    /// Field indexes whose blocking key classes are stored.
    fn blocking_indexes(&self) -> BTreeSet<usize> {
        self.compare.iter().enumerate().filter(|(_, (n, _))| self.blocking.contains(n)).map(|(i, _)| i).collect()
    }
}

/// The candidate records of a refused write, before they are shown.
struct Found {
    id: Uuid,
    /// Strong fields that are equal (exact) or the match probability (fuzzy).
    matched_on: Vec<String>,
    score: Option<f64>,
    /// The candidate's position in the same batch, when it is not stored yet.
    pending: Option<usize>,
}

/// The body of `confirm_not_duplicate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfirmNotDuplicate {
    pub reason: String,
}

impl ConfirmNotDuplicate {
    /// Checks the reason (required, at most 500 characters).
    pub fn new(reason: &str) -> ServiceResult<Self> {
        let trimmed = reason.trim();
        if trimmed.is_empty() || trimmed.chars().count() > 500 || trimmed.chars().any(|c| c == '\0') {
            return Err(ServiceError::validation(vec![FieldError::new(
                "confirm_not_duplicate.reason",
                "required",
                "A reason (1-500 characters) is required to confirm that this is not a duplicate.",
                "确认非重复记录时须填写原因（1-500 个字符）。",
            )]));
        }
        Ok(ConfirmNotDuplicate { reason: trimmed.to_owned() })
    }
}

/// The active records of `object` whose (not encrypted) `field` equals `text`, at most 20.
/// Sorted by the field itself (all equal), so that an order the field's index cannot give never
/// competes with it. This alone does not make SQLite use that index: without statistics for
/// `records` it still picks the (object, updated_at) index, which is why the SQLite writer
/// refreshes statistics often.
pub(crate) fn equal_value_query(object: &str, field: &str, text: String) -> ListQuery {
    let mut q = ListQuery::new(object.to_owned());
    let column = Column::Field { path: vec![field.to_owned()], kind: ValueKind::Text };
    // In id order (the default sort), not by the field: every match has the same value, and
    // an order on the field's sort expression, which no index has, let SQLite's planner (with
    // the statistics of a growing table not yet refreshed) walk every record of the object.
    q.filters.push(Filter::Column { column, op: FilterOp::Eq(FilterValue::Text(text)) });
    q.limit = 20;
    q
}

/// Options of the duplicate check of one write.
#[derive(Debug, Clone, Default)]
pub(crate) struct CheckOptions<'a> {
    /// The record being written (None for a create).
    pub record_id: Option<Uuid>,
    /// Its values before the change (None for a create): unchanged keys are not re-checked.
    pub before: Option<&'a Map<String, Value>>,
    /// Records that are not candidates (e.g. the losers of a merge).
    pub exclude: &'a [Uuid],
    pub confirm: Option<&'a ConfirmNotDuplicate>,
    /// Only strong keys (merges: the steward already decided which records are one).
    pub exact_only: bool,
}

/// Whether the writes of a batch duplicate check are also checked against one another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Within {
    /// They are written together (a batch): each is checked against the ones before it that
    /// passed, which the store cannot see yet.
    Batch,
    /// Each is written on its own, as if checked alone (single writes checked together): the
    /// writer's guards judge them against one another when they commit (`MatchGuard`), and a
    /// refusal names stored records only.
    Alone,
}

/// One write's part in a (batch) duplicate check.
pub(crate) struct DupCheck<'a> {
    /// Who writes: the candidates a refusal lists are the ones this caller may see.
    pub ctx: &'a RequestContext,
    /// The record's id: the id a create will get, or the id of the record being changed.
    pub id: Uuid,
    /// Its normalised values after the write.
    pub after: &'a Map<String, Value>,
    pub options: CheckOptions<'a>,
}

impl DupCheck<'_> {
    /// Whether the write changes `name` (every field of a create does).
    fn changed(&self, name: &str) -> bool {
        self.options.before.is_none_or(|b| b.get(name) != self.after.get(name))
    }
}

/// The outcome of one write's duplicate check, and the write's match keys when the check
/// computed them (a create stores exactly these instead of computing them again).
pub(crate) struct DupOutcome {
    pub result: ServiceResult<Option<Value>>,
    pub match_keys: Option<Vec<Vec<u8>>>,
    /// What the fuzzy check saw, for the store to re-check at commit (see `MatchGuard`).
    pub guard: Option<MatchGuard>,
    /// The write's prepared match values when the check computed them: a create keeps them
    /// (`remember_prepared`) for the checks that will find its record among their candidates,
    /// and so does an update once its version is written.
    pub prepared: Option<Arc<PreparedRecord>>,
}

/// A passed duplicate check of one write.
#[derive(Debug, Default)]
pub(crate) struct Checked {
    /// The audit details of a confirmed override (`confirm_not_duplicate` given while fuzzy
    /// candidates exist), if any.
    pub confirmed: Option<Value>,
    /// What the fuzzy check saw; the write's match keys carry it to the store.
    pub guard: Option<MatchGuard>,
    /// The write's prepared match values when the check computed them (an update keeps them
    /// for its new version once written, as a create does).
    pub prepared: Option<Arc<PreparedRecord>>,
}

/// A write's prepared values and its match keys, each with the field (index in the policy's
/// `compare` order) it was made from.
type PreparedWithKeys = (Arc<PreparedRecord>, Vec<(Vec<u8>, u8)>);

/// A block (the records sharing one match key) of at most this many records is selective: one
/// shared key of it is reason enough to score a candidate.
const SELECTIVE_BLOCK: usize = 20;

/// This process's resident memory and its peak, in kB (Linux, from /proc/self/status; `None`
/// elsewhere): the scan logs them at each stage, the benchmarks report them.
#[derive(Debug, Clone, Copy)]
pub struct ProcessMemory {
    pub resident_kb: u64,
    pub peak_kb: u64,
}

impl ProcessMemory {
    pub fn read() -> Option<ProcessMemory> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let kb = |field: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(field))
                .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        };
        Some(ProcessMemory { resident_kb: kb("VmRSS:")?, peak_kb: kb("VmHWM:")? })
    }
}

/// " (resident N MB, peak M MB)", or nothing where the memory cannot be read: for the scan's
/// log of its stages.
fn resident_memory() -> String {
    match ProcessMemory::read() {
        Some(m) => format!(" (resident {} MB, peak {} MB)", m.resident_kb / 1024, m.peak_kb / 1024),
        None => String::new(),
    }
}

/// A read of the check at entry is cut into at most this many parts read at once, none with
/// fewer than READ_PART_MIN items. Its keys and candidates are scattered over large indexes
/// and tables (at a million contacts, gigabytes): what a check reads is rarely all in memory,
/// and one statement reads its pages one after the other, waiting on each.
const READ_PARTS: usize = 3;
const READ_PART_MIN: usize = 4;

/// `items` cut into the parts of a check's read (see READ_PARTS), in order.
fn read_parts<T>(items: &[T]) -> std::slice::Chunks<'_, T> {
    items.chunks(items.len().div_ceil(READ_PARTS).max(READ_PART_MIN))
}

/// The candidates worth scoring, from `(candidate, size of a block it shares with the new
/// record, the field that block's key comes from)` — one entry per shared key. A candidate is
/// scored when it shares keys of two or more fields, or one key of a selective block. One
/// field's keys count once, because they are correlated: people of the same name share its
/// surname-initial, sound and spelling keys, and namesakes alone (a common name in a crowded
/// block) say too little to spend a comparison on at entry — the duplicate scan compares
/// those. Those sharing the most fields, then the most keys, come first, at most `limit`.
pub(crate) fn choose_candidates<T: Ord + Copy + std::hash::Hash>(
    shared: impl Iterator<Item = (T, usize, u8)>,
    limit: usize,
) -> Vec<T> {
    #[derive(Default)]
    struct Shared {
        fields: u64,
        keys: usize,
        selective: bool,
    }
    let mut counts: HashMap<T, Shared> = HashMap::new();
    for (id, block, field) in shared {
        let e = counts.entry(id).or_default();
        e.fields |= 1u64 << (field % 64);
        e.keys += 1;
        e.selective |= block <= SELECTIVE_BLOCK;
    }
    let mut ranked: Vec<(u32, usize, bool, T)> = counts
        .into_iter()
        .map(|(id, s)| (s.fields.count_ones(), s.keys, s.selective, id))
        .filter(|(fields, _, selective, _)| *fields >= 2 || *selective)
        .collect();
    ranked.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)).then(b.2.cmp(&a.2)).then(a.3.cmp(&b.3)));
    ranked.into_iter().take(limit).map(|(_, _, _, id)| id).collect()
}

impl Service {
    /// The keyed hashes of a record's blocking keys (empty for objects without a policy).
    pub(crate) fn match_key_set(
        &self,
        def: &ObjectDef,
        record_id: Uuid,
        plain: &Map<String, Value>,
    ) -> Option<MatchKeySet> {
        let policy = policy(&def.name)?;
        let matcher = policy.matcher()?;
        Some(MatchKeySet {
            object: def.name.clone(),
            record_id,
            keys: self.match_keys(&policy, &matcher, plain),
            guard: None,
        })
    }

    fn match_keys(&self, policy: &Policy, matcher: &Matcher, plain: &Map<String, Value>) -> Vec<Vec<u8>> {
        self.prepared_match_keys(policy, matcher, &matcher.prepare(&policy.raw_values(plain)))
    }

    fn prepared_match_keys(&self, policy: &Policy, matcher: &Matcher, prepared: &PreparedRecord) -> Vec<Vec<u8>> {
        self.prepared_match_keys_of_fields(policy, matcher, prepared).into_iter().map(|(key, _)| key).collect()
    }

    /// The keyed hashes of a record's blocking keys, sorted and distinct, each with the index
    /// (in the policy's `compare` order) of the field it was made from.
    fn prepared_match_keys_of_fields(
        &self,
        policy: &Policy,
        matcher: &Matcher,
        prepared: &PreparedRecord,
    ) -> Vec<(Vec<u8>, u8)> {
        let wanted = policy.blocking_indexes();
        // Classes of one field only ("3:phone_parts"): a class over two fields ("0+7:name_with",
        // whose prefix is no field index) is the scan's.
        let mut keys: Vec<(Vec<u8>, u8)> = matcher
            .blocking_keys(prepared)
            .into_iter()
            .filter_map(|(class, text)| {
                let field = class.split_once(':').and_then(|(i, _)| i.parse::<usize>().ok())?;
                let field = u8::try_from(field).ok().filter(|f| wanted.contains(&usize::from(*f)))?;
                Some((self.keyring.blind_index("match_keys", &class, &text), field))
            })
            .collect();
        keys.sort();
        keys.dedup_by(|a, b| a.0 == b.0);
        keys
    }

    /// Runs the duplicate check of one write.
    pub(crate) async fn check_duplicates(
        &self,
        ctx: &RequestContext,
        def: &ObjectDef,
        after: &Map<String, Value>,
        options: CheckOptions<'_>,
    ) -> ServiceResult<Checked> {
        let id = options.record_id.unwrap_or_else(Uuid::nil);
        let mut outcomes =
            self.check_duplicates_many(def, &[DupCheck { ctx, id, after, options }], Within::Alone).await?;
        match outcomes.pop() {
            Some(o) => o.result.map(|confirmed| Checked { confirmed, guard: o.guard, prepared: o.prepared }),
            None => Ok(Checked::default()),
        }
    }

    /// Keeps the prepared match values of records just prepared for writing, under the
    /// version each write gives its record: the next checks that find one of them among their
    /// candidates need not read, decrypt and prepare it again (a batch of new records is the
    /// next batch's candidates). An entry of a write that never commits is never asked for.
    pub(crate) fn remember_prepared(&self, entries: impl Iterator<Item = ((Uuid, i64), Arc<PreparedRecord>)>) {
        self.prepared_cache.put_many(entries);
    }

    /// `Store::stamped_match_blocks` of `keys` read in parts at once (see READ_PARTS). The
    /// parts may read different snapshots: the stamp is the lowest one read, so a key stamped
    /// after it counts as unseen (a guard then has the write checked again), never the reverse.
    async fn stamped_blocks_in_parts(
        &self,
        object: &str,
        keys: &[Vec<u8>],
    ) -> ServiceResult<(i64, Vec<(usize, Uuid)>)> {
        let parts: Vec<&[Vec<u8>]> = read_parts(keys).collect();
        let read =
            futures::future::try_join_all(parts.iter().map(|part| self.store.stamped_match_blocks(object, part)))
                .await?;
        let (mut stamp, mut found, mut first) = (i64::MAX, Vec::new(), 0);
        for (part, (seen, rows)) in parts.iter().zip(read) {
            stamp = stamp.min(seen);
            found.extend(rows.into_iter().map(|(pos, id)| (first + pos, id)));
            first += part.len();
        }
        Ok((stamp, found))
    }

    /// The duplicate check of many writes of one object at once (a batch, or one write): the
    /// same answers as checking each alone against the stored records, with a fixed number of
    /// store round trips for the whole batch, and, with `Within::Batch`, each write also
    /// checked against the writes before it in the batch that passed (they are written
    /// together, so the store cannot see them yet). The outer error is a store failure; the
    /// inner results are per write.
    pub(crate) async fn check_duplicates_many(
        &self,
        def: &ObjectDef,
        items: &[DupCheck<'_>],
        within: Within,
    ) -> ServiceResult<Vec<DupOutcome>> {
        let Some(policy) = policy(&def.name) else {
            return Ok(items
                .iter()
                .map(|_| DupOutcome { result: Ok(None), match_keys: None, guard: None, prepared: None })
                .collect());
        };
        let n = items.len();
        // A write's own record (`id` is the record being changed, for an update) and the ids it
        // excludes are never its candidates.
        let excluded = |i: usize, id: &Uuid| *id == items[i].id || items[i].options.exclude.contains(id);

        // 1. Strong keys: blind-index digests of sensitive fields, normalised text otherwise.
        let mut strong: Vec<Vec<(&'static str, Vec<u8>)>> = vec![Vec::new(); n];
        for (i, item) in items.iter().enumerate() {
            for name in policy.strong.iter().filter(|name| item.changed(name)) {
                let Some(value) = item.after.get(*name).filter(|v| !v.is_null()) else { continue };
                let Some(f) = def.field(name) else { continue };
                let text = index_text(value);
                let key =
                    if f.sensitive { self.keyring.blind_index(&def.name, name, &text) } else { text.into_bytes() };
                strong[i].push((*name, key));
            }
        }
        let mut exact: Vec<BTreeMap<Uuid, Vec<String>>> = vec![BTreeMap::new(); n];
        let wanted = |name: &str| -> Vec<(usize, &Vec<u8>)> {
            strong
                .iter()
                .enumerate()
                .flat_map(|(i, keys)| keys.iter().filter(|(f, _)| *f == name).map(move |(_, k)| (i, k)))
                .collect()
        };
        // Sensitive fields by blind index, every field in one read (field after field, so a
        // record's fields are listed in the policy's order).
        let mut blind: Vec<(usize, &'static str)> = Vec::new();
        let mut digests: Vec<(String, Vec<u8>)> = Vec::new();
        for name in policy.strong.iter().copied().filter(|name| def.field(name).is_some_and(|f| f.sensitive)) {
            for (i, key) in wanted(name) {
                blind.push((i, name));
                digests.push((name.to_owned(), key.clone()));
            }
        }
        // The others by value, every field in one read per field.
        let mut plain: Vec<(usize, &'static str)> = Vec::new();
        let mut values: Vec<(String, String)> = Vec::new();
        for name in policy.strong.iter().copied().filter(|name| def.field(name).is_some_and(|f| !f.sensitive)) {
            for (i, key) in wanted(name) {
                plain.push((i, name));
                values.push((name.to_owned(), String::from_utf8_lossy(key).into_owned()));
            }
        }

        // 2. Fuzzy candidates: the blocks of every write's keys in one read, ranked per write;
        // the chosen stored candidates loaded and prepared once for the whole batch. The CPU
        // work (preparing, key digests, scoring) is spread over every core for large batches.
        let matcher = policy.matcher();
        let fuzzy: Vec<usize> = (0..n)
            .filter(|&i| {
                !items[i].options.exact_only
                    && policy.fuzzy_at_entry
                    && policy.compare.iter().any(|(name, _)| items[i].changed(name))
            })
            .collect();
        // Each write's prepared values and its match keys, each with the field it comes from.
        let mut new: Vec<Option<PreparedWithKeys>> = (0..n).map(|_| None).collect();
        if let Some(m) = &matcher {
            let made = map_on_all_cores(&fuzzy, |&i| {
                let prepared = m.prepare(&policy.raw_values(items[i].after));
                let keys = self.prepared_match_keys_of_fields(&policy, m, &prepared);
                (Arc::new(prepared), keys)
            });
            for (i, made) in fuzzy.iter().zip(made) {
                new[*i] = Some(made);
            }
        }
        // Each write's keys (all of them are stored with the record) are looked up up to
        // MATCH_KEYS_PER_CHECK.
        let lookup = |keys: &[(Vec<u8>, u8)]| keys.len().min(MATCH_KEYS_PER_CHECK);
        let mut key_index: HashMap<&[u8], usize> = HashMap::new();
        let mut distinct: Vec<Vec<u8>> = Vec::new();
        for (_, keys) in new.iter().flatten() {
            for (k, _) in &keys[..lookup(keys)] {
                key_index.entry(k.as_slice()).or_insert_with(|| {
                    distinct.push(k.clone());
                    distinct.len() - 1
                });
            }
        }

        // The three reads do not depend on one another: they run at once (each on its own
        // connection of the read pool), so a check waits for the slowest, not for their sum.
        let (by_blind, by_value, by_block) = futures::join!(
            async {
                if digests.is_empty() {
                    return Ok(Vec::new());
                }
                self.store.find_by_blind_indexes(&def.name, &digests, 20).await
            },
            async {
                if values.is_empty() {
                    return Ok(Vec::new());
                }
                self.store.find_by_field_values(&def.name, &values, 20).await
            },
            async {
                if distinct.is_empty() {
                    return Ok(None);
                }
                self.stamped_blocks_in_parts(&def.name, &distinct).await.map(Some)
            },
        );
        for (pos, id) in by_blind? {
            let Some(&(i, name)) = blind.get(pos) else { continue };
            if !excluded(i, &id) {
                exact[i].entry(id).or_default().push(name.to_owned());
            }
        }
        for (pos, id) in by_value? {
            let Some(&(i, name)) = plain.get(pos) else { continue };
            if !excluded(i, &id) {
                exact[i].entry(id).or_default().push(name.to_owned());
            }
        }
        let mut blocks: Vec<Vec<Uuid>> = vec![Vec::new(); distinct.len()];
        // The stamp is read with the blocks: keys stamped later were not seen (see `MatchGuard`).
        let mut seen_stamp = None;
        if let Some((stamp, found)) = by_block? {
            seen_stamp = Some(stamp);
            for (pos, id) in found {
                if let Some(block) = blocks.get_mut(pos) {
                    block.push(id);
                }
            }
        }
        let limit = self.config.duplicates.max_entry_candidates as usize;
        let chosen: Vec<Vec<Uuid>> = (0..n)
            .map(|i| {
                let Some((_, keys)) = &new[i] else { return Vec::new() };
                let shared = keys[..lookup(keys)]
                    .iter()
                    .filter_map(|(k, field)| key_index.get(k.as_slice()).map(|&x| (x, *field)))
                    .flat_map(|(x, field)| {
                        let block = &blocks[x];
                        block.iter().map(move |id| (*id, block.len(), field))
                    });
                choose_candidates(shared.filter(|(id, _, _)| !excluded(i, id)), limit)
            })
            .collect();
        let mut stored: HashMap<Uuid, Arc<PreparedRecord>> = HashMap::new();
        if let Some(m) = &matcher {
            let wanted: BTreeSet<Uuid> = chosen.iter().flatten().copied().collect();
            let wanted: Vec<Uuid> = wanted.into_iter().collect();
            // The candidates in one read per 500 (the store returns active records only): with
            // the version of each whose prepared values are held, so that the store sends the
            // fields only of the others, which are decrypted and prepared. Reading every candidate
            // whole cost more than scoring it: a contact's row is a kilobyte or two of JSON to parse.
            // The parts of a read run at once, each on its own connection (see `read_parts`).
            for ids in wanted.chunks(500) {
                let held: HashMap<Uuid, (i64, Arc<PreparedRecord>)> =
                    ids.iter().zip(self.prepared_cache.held(ids)).filter_map(|(id, h)| Some((*id, h?))).collect();
                let known: Vec<(Uuid, Option<i64>)> =
                    ids.iter().map(|id| (*id, held.get(id).map(|(version, _)| *version))).collect();
                let parts = futures::future::try_join_all(
                    read_parts(&known).map(|part| self.store.candidate_fields(&def.name, part)),
                )
                .await?;
                let mut read = Vec::new();
                for row in parts.into_iter().flatten() {
                    match row.fields {
                        Some(fields) => read.push((row.id, row.version, fields)),
                        None => stored.extend(held.get(&row.id).map(|(_, p)| (row.id, p.clone()))),
                    }
                }
                let made: Vec<Arc<PreparedRecord>> = map_on_all_cores(&read, |(id, _, fields)| {
                    Arc::new(m.prepare(&policy.stored_raw_values(&self.keyring, def, *id, fields)))
                });
                self.prepared_cache
                    .put_many(read.iter().map(|(id, version, _)| (*id, *version)).zip(made.iter().cloned()));
                stored.extend(read.iter().map(|(id, _, _)| *id).zip(made));
            }
        }
        // Each write scored against its stored candidates (independent of batch order).
        let model = entry_model(&policy, self.config.duplicates.entry_prior);
        let threshold = self.config.duplicates.warn_threshold(&def.name);
        let against_stored: Vec<Vec<(Uuid, f64, Vec<String>)>> = match &matcher {
            Some(m) => map_on_all_cores(&(0..n).collect::<Vec<usize>>(), |&i| {
                let Some((prepared, _)) = &new[i] else { return Vec::new() };
                chosen[i]
                    .iter()
                    .filter_map(|id| {
                        let other = stored.get(id)?;
                        let probability = m.score(&model, prepared, other).probability;
                        (probability >= threshold)
                            .then(|| (*id, probability, reasons(m, prepared, other, policy.scan_only)))
                    })
                    .collect()
            }),
            None => (0..n).map(|_| Vec::new()).collect(),
        };

        // 3. Decisions, in batch order: each write against the stored records and against the
        // writes before it that passed.
        let mut taken: HashMap<(&'static str, Vec<u8>), usize> = HashMap::new();
        let mut pending_blocks: HashMap<&[u8], Vec<usize>> = HashMap::new();
        let mut out = Vec::with_capacity(n);
        for (i, item) in items.iter().enumerate() {
            let mut hits = std::mem::take(&mut exact[i]);
            self.drop_dismissed(def, item.options.record_id, &mut hits).await?;
            let mut found: Vec<Found> =
                hits.into_iter().map(|(id, matched_on)| Found { id, matched_on, score: None, pending: None }).collect();
            let mut earlier: BTreeMap<usize, Vec<String>> = BTreeMap::new();
            for (name, key) in &strong[i] {
                if let Some(&j) = taken.get(&(*name, key.clone())) {
                    earlier.entry(j).or_default().push((*name).to_owned());
                }
            }
            found.extend(earlier.into_iter().map(|(j, matched_on)| Found {
                id: items[j].id,
                matched_on,
                score: None,
                pending: Some(j),
            }));
            if !found.is_empty() {
                out.push(Err(self.duplicate_error(item.ctx, def, &policy, ErrorCode::Duplicate, found).await));
                continue;
            }
            let outcome = match (&matcher, &new[i]) {
                (Some(m), Some((prepared, keys))) => {
                    let mut scored: BTreeMap<Uuid, Vec<String>> = BTreeMap::new();
                    let mut scores: HashMap<Uuid, (f64, Option<usize>)> = HashMap::new();
                    for (id, probability, why) in &against_stored[i] {
                        scored.insert(*id, why.clone());
                        scores.insert(*id, (*probability, None));
                    }
                    let mut consider = |id: Uuid, other: &PreparedRecord, pending: usize| {
                        let probability = m.score(&model, prepared, other).probability;
                        if probability >= threshold {
                            scored.insert(id, reasons(m, prepared, other, policy.scan_only));
                            scores.insert(id, (probability, Some(pending)));
                        }
                    };
                    let shared = keys[..lookup(keys)].iter().flat_map(|(k, field)| {
                        let stored_len = key_index.get(k.as_slice()).map_or(0, |&x| blocks[x].len());
                        let earlier = pending_blocks.get(k.as_slice()).map(Vec::as_slice).unwrap_or_default();
                        earlier.iter().map(move |j| (*j, stored_len + earlier.len(), *field))
                    });
                    for j in choose_candidates(shared, limit) {
                        if let Some((other, _)) = &new[j] {
                            consider(items[j].id, other, j);
                        }
                    }
                    self.drop_dismissed(def, item.options.record_id, &mut scored).await?;
                    if scored.is_empty() {
                        Ok(None)
                    } else if let Some(confirm) = item.options.confirm {
                        Ok(Some(json!({
                            "reason": confirm.reason,
                            "candidates": scored.keys().collect::<Vec<_>>(),
                        })))
                    } else {
                        let found = scored
                            .into_iter()
                            .map(|(id, matched_on)| {
                                let (score, pending) = scores.get(&id).copied().unzip();
                                Found { id, matched_on, score, pending: pending.flatten() }
                            })
                            .collect();
                        Err(self.duplicate_error(item.ctx, def, &policy, ErrorCode::PossibleDuplicate, found).await)
                    }
                }
                _ => Ok(None),
            };
            if outcome.is_ok() && within == Within::Batch {
                for (name, key) in &strong[i] {
                    taken.entry((*name, key.clone())).or_insert(i);
                }
                if let Some((_, keys)) = &new[i] {
                    for (k, _) in &keys[..lookup(keys)] {
                        pending_blocks.entry(k.as_slice()).or_default().push(i);
                    }
                }
            }
            out.push(outcome);
        }
        let guard = |keys: &[(Vec<u8>, u8)]| {
            let seen_stamp = seen_stamp?;
            let keys = keys[..lookup(keys)]
                .iter()
                .map(|(key, field)| GuardKey {
                    key: key.clone(),
                    field: *field,
                    selective: key_index.get(key.as_slice()).is_some_and(|&x| blocks[x].len() <= SELECTIVE_BLOCK),
                })
                .collect();
            Some(MatchGuard { seen_stamp, keys })
        };
        Ok(out
            .into_iter()
            .zip(&new)
            .map(|(result, new)| {
                let (match_keys, guard) = match new {
                    Some((_, keys)) => (
                        Some(keys.iter().map(|(k, _)| k.clone()).collect()),
                        result.is_ok().then(|| guard(keys)).flatten(),
                    ),
                    None => (None, None),
                };
                let prepared = new.as_ref().map(|(prepared, _)| prepared.clone());
                DupOutcome { result, match_keys, guard, prepared }
            })
            .collect())
    }

    async fn drop_dismissed(
        &self,
        def: &ObjectDef,
        record_id: Option<Uuid>,
        found: &mut BTreeMap<Uuid, Vec<String>>,
    ) -> ServiceResult<()> {
        let Some(record_id) = record_id else { return Ok(()) };
        if found.is_empty() {
            return Ok(());
        }
        let ids: Vec<Uuid> = found.keys().copied().collect();
        for id in self.store.dismissed_with(&def.name, record_id, &ids).await? {
            found.remove(&id);
        }
        Ok(())
    }

    /// The 409 error listing the candidates the caller may see (masked), the others counted.
    async fn duplicate_error(
        &self,
        ctx: &RequestContext,
        def: &ObjectDef,
        policy: &Policy,
        code: ErrorCode,
        found: Vec<Found>,
    ) -> ServiceError {
        // For an exact duplicate, the fields that are taken (as for a unique-key violation).
        let mut details: Vec<FieldError> = Vec::new();
        if code == ErrorCode::Duplicate {
            let fields: BTreeSet<&String> = found.iter().flat_map(|f| f.matched_on.iter()).collect();
            for field in fields {
                details.push(FieldError::new(
                    field,
                    "duplicate",
                    format!("Another {} record already has this {field}.", def.name),
                    format!("已有其他记录使用了该 {field}。"),
                ));
            }
        }
        match self.render_candidates(ctx, def, policy, found).await {
            Ok((candidates, hidden)) => ServiceError { details, ..ServiceError::new(code) }
                .with_extra(json!({ "candidates": candidates, "hidden_candidates": hidden })),
            Err(e) => e,
        }
    }

    async fn render_candidates(
        &self,
        ctx: &RequestContext,
        def: &ObjectDef,
        policy: &Policy,
        found: Vec<Found>,
    ) -> ServiceResult<(Vec<Value>, usize)> {
        let scope = self.scope_for(ctx, &def.name, Operation::Read).await?;
        let mut shown = Vec::new();
        let mut hidden = 0;
        for f in found {
            if let Some(index) = f.pending {
                // A write earlier in the same batch: the caller sent its values; it has none
                // stored to show.
                let mut c = json!({ "id": f.id, "object": def.name, "batch_index": index, "matched_on": f.matched_on });
                if let (Some(score), Value::Object(m)) = (f.score, &mut c) {
                    m.insert("score".into(), json!((score * 1000.0).round() / 1000.0));
                }
                shown.push(c);
                continue;
            }
            match self.store.get_record(&def.name, f.id, &scope).await? {
                Some(record) => shown.push(self.candidate_view(ctx, def, policy, &record, &f)),
                None => hidden += 1,
            }
        }
        if !shown.is_empty() {
            let ids: Vec<&Value> = shown.iter().filter_map(|c| c.get("id")).collect();
            self.audit_read(ctx, "record.list", &def.name, None, json!({ "ids": ids, "purpose": "duplicate_check" }))
                .await?;
        }
        Ok((shown, hidden))
    }

    fn candidate_view(
        &self,
        ctx: &RequestContext,
        def: &ObjectDef,
        policy: &Policy,
        record: &StoredRecord,
        found: &Found,
    ) -> Value {
        let mut plain = self.decrypt_fields(def, record.id, &record.fields);
        plain.retain(|k, _| policy.display.contains(&k.as_str()));
        let (fields, masked) = self.apply_field_access(ctx, def, plain);
        let mut out = json!({
            "id": record.id,
            "object": def.name,
            "fields": fields,
            "masked_fields": masked,
            "matched_on": found.matched_on,
        });
        if let (Some(score), Value::Object(m)) = (found.score, &mut out) {
            m.insert("score".into(), json!((score * 1000.0).round() / 1000.0));
        }
        out
    }
}

/// The model that scores one write against stored candidates. There is nothing to estimate it
/// from (one new record), so it is the engine's defaults with one correction: the defaults say
/// that two unrelated records share an exact value once in a million pairs, which is right for
/// identifiers but not for names (张伟 is shared by hundreds of thousands of people). An exact
/// name is taken to be shared by one pair in ten thousand; it then takes a second agreeing
/// field (birth date, address, company, a similar e-mail) to reach the warn threshold.
///
/// And one for exact fields: their defaults say one pair in a hundred shares a value (right for
/// a value from a short list), but the exact fields of the policies identify something: a
/// company reference (a contact's colleagues are few of all contacts), a website, a contract
/// number. They are taken to be shared by one pair in a thousand, so that a name and the same
/// company reach the warn threshold (not against a different mobile number: that is for the
/// scan's review queue).
///
/// A policy's `scan_only` fields weigh nothing here.
fn entry_model(policy: &Policy, prior: f64) -> Model {
    let fields: Vec<(String, FieldKind)> = policy.compare.iter().map(|(n, k)| ((*n).to_owned(), *k)).collect();
    let mut model = Model::with_defaults(&fields, prior);
    for field in &mut model.fields {
        if policy.scan_only.contains(&field.name.as_str()) {
            // m = u: every level weighs nothing.
            field.m = field.u.clone();
            continue;
        }
        if field.kind == FieldKind::Exact
            && let [different, exact] = field.u.as_mut_slice()
        {
            let shared = 1e-3_f64.min(*exact);
            *different += *exact - shared;
            *exact = shared;
        }
        if matches!(field.kind, FieldKind::PersonName | FieldKind::CompanyName | FieldKind::Text)
            && let (Some(top), Some(first)) = (field.u.last().copied(), field.u.first().copied())
        {
            let name_u = 1e-4_f64.max(top);
            let last = field.u.len() - 1;
            field.u[last] = name_u;
            field.u[0] = (first - (name_u - top)).max(0.0);
        }
    }
    model
}

/// Fields that agree at some level, as "field:level" (e.g. "name:same_sound"), except the
/// `weightless` ones (at entry, a policy's `scan_only` fields: they are no reason there).
pub(crate) fn reasons(matcher: &Matcher, a: &PreparedRecord, b: &PreparedRecord, weightless: &[&str]) -> Vec<String> {
    let levels = matcher.compare(a, b);
    matcher
        .fields()
        .iter()
        .zip(levels)
        .filter(|(f, level)| *level != u8::MAX && *level > 0 && !weightless.contains(&f.name.as_str()))
        .filter_map(|(f, level)| f.kind.levels().get(usize::from(level)).map(|name| format!("{}:{name}", f.name)))
        .collect()
}

// ---- scan and review queue (A5) ------------------------------------------------------------

/// Ranges of ids a scan with several readers cuts an object into (see
/// `Service::read_prepared`): enough that readers done early take over the rest.
const SCAN_RANGES: usize = 16;

/// Aborts a background task when dropped (also on an early return).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A duplicate scan job as callers see it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ScanJobView {
    pub id: Uuid,
    pub object: String,
    /// "running", "done" or "failed".
    pub status: String,
    pub created_at: String,
    pub finished_at: Option<String>,
    pub records: i64,
    pub pairs: i64,
    pub error: Option<String>,
    /// The auto-merge the scan was asked for, with what it did once done: `{threshold, rule,
    /// trusted_sources, merged, records_merged, left_for_review, refused}`, and `stopped` or
    /// `error` when it ended early; `null` when it only proposes pairs.
    pub auto_merge: Option<Value>,
}

/// The auto-merge a scan job asked for and has not done yet.
fn pending_auto_merge(job: &ScanJobRow) -> Option<AutoMerge> {
    let asked = job.auto_merge.as_ref()?;
    let done = asked.get("merged").is_some() || asked.get("error").is_some();
    if done || job.status == "failed" { None } else { AutoMerge::from_json(asked) }
}

fn job_view(job: &ScanJobRow) -> ScanJobView {
    // A scan whose auto-merge is still to come is running, as far as its caller can tell.
    let status = if job.status == "done" && pending_auto_merge(job).is_some() { "running" } else { &job.status };
    ScanJobView {
        id: job.id,
        object: job.object.clone(),
        status: status.to_owned(),
        created_at: micros_to_rfc3339(job.created_at),
        finished_at: job.finished_at.map(micros_to_rfc3339),
        records: job.records,
        pairs: job.pairs,
        error: job.error.clone(),
        auto_merge: job.auto_merge.clone(),
    }
}

/// One proposed pair in the review queue.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CandidateView {
    pub id: Uuid,
    pub object: String,
    pub cluster_id: Uuid,
    pub score: f64,
    /// Fields that agree, as "field:level".
    pub reasons: Value,
    pub status: String,
    /// The pair's records the caller may see (display fields, masked).
    pub records: Vec<Value>,
    /// Records of the pair outside the caller's read scope (counted, not shown).
    pub hidden_records: usize,
    /// The merge that took a "merged" pair (`POST /api/v1/merges/{id}/undo` undoes it).
    pub merge_id: Option<Uuid>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct CandidatePage {
    pub items: Vec<CandidateView>,
    pub next_cursor: Option<String>,
}

impl Service {
    /// Starts a background scan of an object's active records; returns the job at once. With
    /// `auto_merge`, the scan also merges the groups it is surest of (see `auto_merge`): that
    /// takes a fresh second factor, like a merge, and a threshold no lower than the object's
    /// floor.
    pub async fn start_duplicate_scan(
        self: &Arc<Self>,
        ctx: &RequestContext,
        object: &str,
        auto_merge: Option<AutoMerge>,
    ) -> ServiceResult<ScanJobView> {
        let def = self.object_def(object)?;
        if let Err(e) = self.require_merge(ctx) {
            self.audit_refusal(ctx, &def.name, None, "duplicate_scan", &e).await;
            return Err(e);
        }
        if policy(&def.name).is_none() {
            return Err(ServiceError::validation(vec![FieldError::new(
                "object",
                "not_supported",
                format!("{} records are not checked for duplicates.", def.name),
                format!("{} 不支持查重。", def.name),
            )]));
        }
        if let Some(settings) = &auto_merge {
            settings.check(&def)?;
            if let Err(e) = self.may_auto_merge(ctx, &def.name).await? {
                self.audit_refusal(ctx, &def.name, None, "duplicate_auto_merge", &e).await;
                return Err(e);
            }
            self.require_step_up(ctx, "duplicates.auto_merge").await?;
        }
        let job = ScanJobRow {
            id: Uuid::now_v7(),
            object: def.name.clone(),
            status: "running".into(),
            requested_by: ctx.actor.as_ref().map(|a| a.user_id),
            created_at: now_micros(),
            finished_at: None,
            records: 0,
            pairs: 0,
            error: None,
            auto_merge: auto_merge.as_ref().map(AutoMerge::to_json),
        };
        // The scan runs as a leased background job: started here at once, and taken over by
        // another server (from the start) when this one dies before finishing it.
        let params = json!({ "scan_job_id": job.id });
        let queued = JobRow::pending(JOB_DUPLICATE_SCAN, &def.name, params, job.requested_by, job.created_at);
        let mut audit = self.audit_draft(ctx, "duplicates.scan");
        audit.object = Some(def.name.clone());
        audit.details = json!({ "job_id": job.id, "auto_merge": job.auto_merge });
        self.store.create_scan_job(job.clone(), queued, audit).await?;
        self.start_jobs();
        Ok(job_view(&job))
    }

    /// Runs the claimed background job of a duplicate scan: the whole scan in one step, then
    /// its auto-merge when it was asked for one, with the job's lease renewed while they run.
    /// Only the holder of the lease stores the result and merges. A scan already finished (by
    /// a server that died before closing its job) is only closed, after the auto-merge it still
    /// owes (which starts again from the scan's open pairs: what was merged is no longer open).
    /// Returns false when the lease was lost.
    pub(crate) async fn run_scan_job(&self, claimant: &str, job: &JobRow) -> ServiceResult<bool> {
        let lease = self.config.job_lease_secs.max(1) * 1_000_000;
        let progress = |scanned: i64, finish: Option<(&str, Option<String>)>| {
            let now = now_micros();
            JobProgress {
                id: job.id,
                claimant: claimant.to_owned(),
                now,
                lease_until: now + lease,
                cursor: None,
                scanned,
                violations: Vec::new(),
                refresh: Vec::new(),
                finish: finish.map(|(status, error)| (status.to_owned(), error)),
            }
        };
        let scan_id = job.params.get("scan_job_id").and_then(Value::as_str).and_then(|s| Uuid::parse_str(s).ok());
        let scan = match scan_id {
            Some(id) => self.store.get_scan_job(id).await?,
            None => None,
        };
        let Some(scan) = scan else {
            let failed = progress(0, Some(("failed", Some("no such duplicate scan".into()))));
            return self.store.save_job_progress(failed).await.map_err(Into::into);
        };
        let owed = pending_auto_merge(&scan);
        if scan.status != "running" && owed.is_none() {
            return self.store.save_job_progress(progress(0, Some(("done", None)))).await.map_err(Into::into);
        }
        // Renew the lease a few times per lease period while the scan and its auto-merge run.
        let store = Arc::clone(&self.store);
        let beat = progress(0, None);
        let period = std::time::Duration::from_micros((lease / 3).max(1) as u64);
        let _heartbeat = AbortOnDrop(tokio::spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                let now = now_micros();
                let beat = JobProgress { now, lease_until: now + lease, ..beat.clone() };
                if !matches!(store.save_job_progress(beat).await, Ok(true)) {
                    break;
                }
            }
        }));
        let (mut records, mut status) = (scan.records, ("done", None));
        if scan.status == "running" {
            let outcome = self.run_duplicate_scan(&scan).await;
            if !self.store.save_job_progress(progress(0, None)).await? {
                tracing::warn!(job = %job.id, "lost the lease of a duplicate scan; another server runs it");
                return Ok(false);
            }
            let (finished, candidates) = match outcome {
                Ok(done) => done,
                Err(e) => {
                    tracing::error!(job = %scan.id, error = %e, "duplicate scan failed");
                    let failed = ScanJobRow {
                        status: "failed".into(),
                        finished_at: Some(now_micros()),
                        error: Some(e.message.clone()),
                        ..scan.clone()
                    };
                    status = ("failed", Some(e.message));
                    (failed, Vec::new())
                }
            };
            records = finished.records;
            let (started, pairs) = (std::time::Instant::now(), candidates.len());
            self.store.finish_scan_job(finished, candidates).await?;
            tracing::info!(job = %scan.id, pairs, secs = started.elapsed().as_secs_f64(), "duplicate scan stored its pairs");
        }
        if status.0 == "done"
            && let Some(settings) = owed
        {
            // Only the holder of the lease merges.
            if !self.store.save_job_progress(progress(records, None)).await? {
                tracing::warn!(job = %job.id, "lost the lease of a duplicate scan; another server merges");
                return Ok(false);
            }
            let outcome = self.auto_merge_scan(&scan, &settings).await.unwrap_or_else(|e| {
                tracing::error!(job = %scan.id, error = %e, "auto-merge failed");
                let mut failed = settings.to_json();
                if let Value::Object(o) = &mut failed {
                    o.insert("error".into(), json!(e.message));
                }
                failed
            });
            self.store.set_scan_auto_merge(scan.id, outcome).await?;
        }
        self.store.save_job_progress(progress(records, Some(status))).await.map_err(Into::into)
    }

    /// Reads and prepares every active record of `def` for a scan, in id order: its ids and
    /// prepared values. The ids are cut into ranges ([`SCAN_RANGES`]), read page by page by
    /// `scan_readers` tasks side by side, each taking the next range when done with one; the
    /// pages are decrypted and prepared as they come, so that only the pages in flight hold
    /// plaintext values, and put back in id order at the end (a scan's result does not depend
    /// on the order pages arrived in).
    async fn read_prepared(
        &self,
        def: &ObjectDef,
        policy: &Policy,
        matcher: &Arc<Matcher>,
    ) -> ServiceResult<(Vec<Uuid>, Vec<PreparedRecord>)> {
        let readers = self.config.duplicates.scan_readers.max(1) as usize;
        let def = Arc::new(def.clone());
        let mut base = ListQuery::new(def.name.clone());
        base.limit = self.config.duplicates.scan_page;
        let ranges = Arc::new(self.scan_ranges(&base, readers).await?);
        let (tx, mut rx) = tokio::sync::mpsc::channel::<(usize, ServiceResult<RecordPage>)>(readers * 2);
        let next_range = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let _readers: Vec<AbortOnDrop<()>> = (0..readers.min(ranges.len()))
            .map(|_| {
                let (store, tx, next_range, ranges, base) =
                    (Arc::clone(&self.store), tx.clone(), Arc::clone(&next_range), Arc::clone(&ranges), base.clone());
                AbortOnDrop(tokio::spawn(async move {
                    loop {
                        let r = next_range.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(&(from, to)) = ranges.get(r) else { return };
                        let mut query = base.clone();
                        let bound = |op| Filter::Column { column: Column::Id, op };
                        query.filters.extend(from.map(|id| bound(FilterOp::Gte(FilterValue::Uuid(id)))));
                        query.filters.extend(to.map(|id| bound(FilterOp::Lt(FilterValue::Uuid(id)))));
                        loop {
                            let page = store.list_records(&query).await.map_err(ServiceError::from);
                            let next = page.as_ref().ok().and_then(|p| p.next.clone());
                            if tx.send((r, page)).await.is_err() {
                                return;
                            }
                            match next {
                                Some(after) => query.after = Some(after),
                                None => break,
                            }
                        }
                    }
                }))
            })
            .collect();
        drop(tx);
        let mut parts: Vec<(Vec<Uuid>, Vec<PreparedRecord>)> = ranges.iter().map(|_| Default::default()).collect();
        let mut count = 0usize;
        while let Some((r, page)) = rx.recv().await {
            let page = page?;
            count += page.items.len();
            if count > self.config.duplicates.max_scan_records {
                return Err(ServiceError::with_message(
                    ErrorCode::Conflict,
                    format!("More than {} records: too many for one scan.", self.config.duplicates.max_scan_records),
                ));
            }
            let ids: Vec<Uuid> = page.items.iter().map(|record| record.id).collect();
            // Decrypted (only the fields compared) and prepared on every core: decrypting on
            // this task kept one core busy while the other waited.
            let (m, keyring, def, policy) = (Arc::clone(matcher), Arc::clone(&self.keyring), Arc::clone(&def), *policy);
            let prepared = tokio::task::spawn_blocking(move || {
                m.prepare_each(&page.items, |record| {
                    m.prepare(&policy.stored_raw_values(&keyring, &def, record.id, &record.fields))
                })
            })
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "duplicate scan task failed");
                ServiceError::new(ErrorCode::Internal)
            })?;
            let Some(part) = parts.get_mut(r) else { return Err(ServiceError::new(ErrorCode::Internal)) };
            part.0.extend(ids);
            part.1.extend(prepared);
        }
        let (mut ids, mut records) = (Vec::with_capacity(count), Vec::with_capacity(count));
        for (part_ids, part_records) in parts {
            ids.extend(part_ids);
            records.extend(part_records);
        }
        Ok((ids, records))
    }

    /// The ranges of ids a scan reads side by side: `[from, to)`, the first open below and the
    /// last open above (so that every record is in one, whatever its id). Cut evenly between
    /// the first and the last id: v7 ids (the ones this server gives) grow with time, so the
    /// ranges hold the records created in equal stretches of time; the readers balance uneven
    /// ones by taking the next range when done.
    async fn scan_ranges(&self, base: &ListQuery, readers: usize) -> ServiceResult<Vec<(Option<Uuid>, Option<Uuid>)>> {
        let end = |descending| {
            let mut query = base.clone();
            query.limit = 1;
            query.sort.descending = descending;
            async move { Ok::<_, ServiceError>(self.store.list_records(&query).await?.items.first().map(|r| r.id)) }
        };
        let (Some(first), Some(last)) = (end(false).await?, end(true).await?) else {
            return Ok(vec![(None, None)]);
        };
        let parts = if readers > 1 { SCAN_RANGES as u128 } else { 1 };
        let (lo, hi) = (first.as_u128(), last.as_u128());
        let step = hi.saturating_sub(lo) / parts;
        let mut cuts: Vec<Uuid> = (1..parts).map(|i| Uuid::from_u128(lo + step * i)).collect();
        cuts.dedup();
        let mut ranges = Vec::with_capacity(cuts.len() + 1);
        let mut from = None;
        for cut in cuts {
            ranges.push((from, Some(cut)));
            from = Some(cut);
        }
        ranges.push((from, None));
        Ok(ranges)
    }

    /// Compares every active record of the job's object and returns the finished job with the
    /// candidate pairs at or above the warn threshold (dismissed pairs left out).
    async fn run_duplicate_scan(&self, job: &ScanJobRow) -> ServiceResult<(ScanJobRow, Vec<CandidateRow>)> {
        let def = self.object_def(&job.object)?;
        let policy = policy(&def.name).ok_or_else(|| ServiceError::new(ErrorCode::Internal))?;
        // A scan uses every core: it is one long job (minutes at a million records), and a
        // request's single thread left the other cores idle all along.
        let matcher = Arc::new(policy.matcher_on(0).ok_or_else(|| ServiceError::new(ErrorCode::Internal))?);
        let started = std::time::Instant::now();
        let (ids, records) = self.read_prepared(&def, &policy, &matcher).await?;
        let read = started.elapsed();
        let dismissed: HashSet<(Uuid, Uuid)> = self
            .store
            .list_dismissals(&def.name)
            .await?
            .into_iter()
            .map(|d| (d.record_a.min(d.record_b), d.record_a.max(d.record_b)))
            .collect();
        let threshold = self.config.duplicates.warn_threshold(&def.name);
        let count = ids.len();
        let probe = self.config.duplicates.scan_probe.clone();
        let object = def.name.clone();
        let ids = Arc::new(ids);
        let scanned = Arc::clone(&ids);
        let scored = tokio::task::spawn_blocking(move || {
            // When each stage of the engine ended (seconds since the previous mark) and the
            // process's resident memory then, logged with the scan's times: where a long scan
            // spends them, and what it holds (a million contacts take gigabytes).
            let mut stages: Vec<String> = Vec::new();
            let mut mark = std::time::Instant::now();
            let result = matcher.dedupe(&records, &mut |stage, done, total| {
                // Each stage's end, and each step of the estimation.
                if done > 0 && (done == total || stage == custodian_core::matching::Stage::Estimating) {
                    stages.push(format!(
                        "{stage:?} {done}/{total} {:.1}s{}",
                        mark.elapsed().as_secs_f64(),
                        resident_memory()
                    ));
                    mark = std::time::Instant::now();
                }
            });
            if let Some(ScanProbe(probe)) = &probe {
                probe(&object, &scanned, &result);
            }
            let clusters = result.clusters(threshold, None);
            let pairs: Vec<(u32, u32, f64, Vec<String>)> = result
                .pairs_at_or_above(threshold)
                .map(|p| {
                    let why = reasons(&matcher, &records[p.a as usize], &records[p.b as usize], &[]);
                    (p.a, p.b, p.probability, why)
                })
                .collect();
            stages.push(format!("clusters and reasons {:.1}s{}", mark.elapsed().as_secs_f64(), resident_memory()));
            tracing::info!(candidates = result.len(), stages = %stages.join(", "), "duplicate scan stages");
            (clusters, pairs)
        })
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "duplicate scan task failed");
            ServiceError::new(ErrorCode::Internal)
        })?;
        let (clusters, pairs) = scored;
        tracing::info!(
            object = %def.name,
            records = count,
            pairs = pairs.len(),
            read_secs = read.as_secs_f64(),
            compare_secs = (started.elapsed() - read).as_secs_f64(),
            "duplicate scan compared the stored records"
        );
        let now = now_micros();
        let mut candidates = Vec::new();
        for (a, b, probability, why) in pairs {
            let (Some(&ia), Some(&ib)) = (ids.get(a as usize), ids.get(b as usize)) else { continue };
            let (record_a, record_b) = (ia.min(ib), ia.max(ib));
            if dismissed.contains(&(record_a, record_b)) {
                continue;
            }
            let cluster = clusters.get(a as usize).and_then(|&c| ids.get(c as usize)).copied().unwrap_or(record_a);
            candidates.push(CandidateRow {
                id: Uuid::now_v7(),
                object: def.name.clone(),
                job_id: job.id,
                cluster_id: cluster,
                record_a,
                record_b,
                score: probability,
                reasons: json!(why),
                status: "open".into(),
                created_at: now,
                decided_at: None,
                decided_by: None,
                merge_id: None,
            });
        }
        let done = ScanJobRow {
            status: "done".into(),
            finished_at: Some(now_micros()),
            records: count as i64,
            pairs: candidates.len() as i64,
            ..job.clone()
        };
        Ok((done, candidates))
    }

    pub async fn duplicate_scan_job(&self, ctx: &RequestContext, id: Uuid) -> ServiceResult<ScanJobView> {
        self.merge_or_refuse(ctx, "duplicates", "duplicates.scan_job").await?;
        let job = self.store.get_scan_job(id).await?.ok_or_else(ServiceError::not_found)?;
        Ok(job_view(&job))
    }

    /// The review queue: candidate pairs of an object with a status ("open" by default).
    pub async fn list_duplicates(
        &self,
        ctx: &RequestContext,
        object: &str,
        status: Option<&str>,
        cursor: Option<&str>,
        limit: Option<u32>,
    ) -> ServiceResult<CandidatePage> {
        let def = self.object_def(object)?;
        if let Err(e) = self.require_merge(ctx) {
            self.audit_refusal(ctx, &def.name, None, "duplicate_review", &e).await;
            return Err(e);
        }
        let status = status.unwrap_or("open");
        if !matches!(status, "open" | "dismissed" | "merged") {
            return Err(ServiceError::invalid_query(
                "status",
                "invalid_value",
                "status must be open, dismissed or merged.",
                "status 须为 open、dismissed 或 merged。",
            ));
        }
        let after = match cursor {
            None => None,
            Some(c) => Some(Uuid::parse_str(c).map_err(|_| {
                ServiceError::invalid_query("cursor", "invalid_cursor", "The cursor is invalid.", "分页游标无效。")
            })?),
        };
        let limit = self.page_size(limit)?;
        let mut rows = self.store.list_candidates(&def.name, status, after, limit + 1).await?;
        let next_cursor = if rows.len() > limit as usize {
            rows.truncate(limit as usize);
            rows.last().map(|r| r.id.to_string())
        } else {
            None
        };
        let scope = self.scope_for(ctx, &def.name, Operation::Read).await?;
        let policy = policy(&def.name);
        let mut items = Vec::with_capacity(rows.len());
        let mut shown_ids = Vec::new();
        for row in rows {
            let (records, hidden) = self.pair_views(ctx, &def, policy.as_ref(), &scope, &row).await?;
            shown_ids.extend(records.iter().filter_map(|r| r.get("id").cloned()));
            items.push(CandidateView {
                id: row.id,
                object: row.object,
                cluster_id: row.cluster_id,
                score: (row.score * 1000.0).round() / 1000.0,
                reasons: row.reasons,
                status: row.status,
                records,
                hidden_records: hidden,
                merge_id: row.merge_id,
            });
        }
        self.audit_read(
            ctx,
            "record.list",
            &def.name,
            None,
            json!({ "ids": shown_ids, "purpose": "duplicate_review" }),
        )
        .await?;
        Ok(CandidatePage { items, next_cursor })
    }

    async fn pair_views(
        &self,
        ctx: &RequestContext,
        def: &ObjectDef,
        policy: Option<&Policy>,
        scope: &RowScope,
        row: &CandidateRow,
    ) -> ServiceResult<(Vec<Value>, usize)> {
        let mut shown = Vec::new();
        let mut hidden = 0;
        for id in [row.record_a, row.record_b] {
            match (self.store.get_record(&def.name, id, scope).await?, policy) {
                (Some(record), Some(policy)) => {
                    let found = Found { id, matched_on: Vec::new(), score: None, pending: None };
                    let mut view = self.candidate_view(ctx, def, policy, &record, &found);
                    if let Value::Object(m) = &mut view {
                        m.remove("matched_on");
                    }
                    shown.push(view);
                }
                _ => hidden += 1,
            }
        }
        Ok((shown, hidden))
    }

    /// "Not a duplicate": the pair is remembered and never proposed again (by scans or at entry).
    pub async fn dismiss_duplicate(&self, ctx: &RequestContext, id: Uuid, reason: &str) -> ServiceResult<()> {
        if let Err(e) = self.require_merge(ctx) {
            self.audit_refusal(ctx, "duplicates", Some(id), "dismiss", &e).await;
            return Err(e);
        }
        let reason = ConfirmNotDuplicate::new(reason).map_err(|mut e| {
            for d in &mut e.details {
                d.field = "reason".into();
            }
            e
        })?;
        let row = self.store.get_candidate(id).await?.ok_or_else(ServiceError::not_found)?;
        let def = self.object_def(&row.object)?;
        for record in [row.record_a, row.record_b] {
            self.load_audited(ctx, &def, record, Operation::Read, "dismiss").await?;
        }
        if row.status != "open" {
            return Err(ServiceError::with_message(ErrorCode::Conflict, "This pair was decided already."));
        }
        let dismissal = DismissalRow {
            object: def.name.clone(),
            record_a: row.record_a,
            record_b: row.record_b,
            reason: reason.reason.clone(),
            decided_by: ctx.actor.as_ref().map(|a| a.user_id),
            decided_at: now_micros(),
        };
        let mut audit = self.audit_draft(ctx, "duplicates.dismiss");
        audit.object = Some(def.name.clone());
        audit.record_id = Some(row.record_a);
        audit.details = json!({
            "candidate_id": id,
            "record_a": row.record_a,
            "record_b": row.record_b,
            "reason": reason.reason,
        });
        self.store.dismiss_candidate(id, dismissal, audit).await.map_err(|e| match e {
            custodian_store::StoreError::NotFound => {
                ServiceError::with_message(ErrorCode::Conflict, "This pair was decided already.")
            }
            other => other.into(),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn the_scans_log_reads_this_processs_resident_memory_and_peak() {
        let note = resident_memory();
        let numbers: Vec<u64> = note
            .trim()
            .trim_start_matches("(resident ")
            .trim_end_matches(" MB)")
            .split(" MB, peak ")
            .map(|n| n.parse().expect("a number of megabytes"))
            .collect();
        assert_eq!(numbers.len(), 2, "{note}");
        assert!(numbers[0] > 0 && numbers[0] <= numbers[1], "{note}");
    }

    #[test]
    fn records_put_lately_are_still_held_when_asked_for_soon_after() {
        // What single creates into a large store ask: a record put (a new contact, a candidate
        // read) is often a candidate again a little later, after a few thousand other puts
        // that are never asked for again. A cache keeping only what was asked for twice lost
        // most of them (at 200k contacts, HTTP creates found 23% of their candidates held
        // against 38% with an LRU).
        let cache = PreparedCache::default();
        let m = policy("contacts").and_then(|p| p.matcher()).expect("a contacts matcher");
        let prepared = Arc::new(m.prepare(&["王芳"]));
        let ids: Vec<Uuid> = (0..20_000).map(|_| Uuid::now_v7()).collect();
        let (gap, mut held) = (PREPARED_CACHE_ENTRIES / 4, 0);
        for (i, id) in ids.iter().enumerate() {
            cache.put_many(std::iter::once(((*id, 1), prepared.clone())));
            if let Some(earlier) = i.checked_sub(gap) {
                held += usize::from(cache.held(&ids[earlier..=earlier])[0].is_some());
            }
        }
        let asked = ids.len() - gap;
        assert!(held * 10 >= asked * 9, "{held} of {asked} held");
    }

    #[test]
    fn candidates_asked_for_in_cycles_larger_than_the_cache_are_still_found_held() {
        // What a batch load asks: each batch of a thousand contacts the same ten thousand or so
        // stored candidates (the blocks of common names), more than the cache holds. An LRU
        // evicted each of them before it was asked for again and found none held after the
        // first pass; the cache must keep a good share of them.
        let cache = PreparedCache::default();
        let m = policy("contacts").and_then(|p| p.matcher()).expect("a contacts matcher");
        let prepared = Arc::new(m.prepare(&["张伟", "13812345678"]));
        let candidates: Vec<Uuid> = (0..PREPARED_CACHE_ENTRIES * 5 / 4).map(|_| Uuid::now_v7()).collect();
        let mut held_per_pass = Vec::new();
        for _ in 0..6 {
            let mut held = 0;
            for batch in candidates.chunks(500) {
                let found = cache.held(batch);
                held += found.iter().flatten().count();
                let missed =
                    batch.iter().zip(&found).filter(|(_, f)| f.is_none()).map(|(id, _)| ((*id, 1), prepared.clone()));
                cache.put_many(missed);
            }
            held_per_pass.push(held);
        }
        assert_eq!(held_per_pass[0], 0);
        let last = held_per_pass[held_per_pass.len() - 1];
        assert!(last * 2 >= candidates.len(), "held per pass of {}: {held_per_pass:?}", candidates.len());
        // A version put later replaces the one held.
        let id = candidates[0];
        cache.put_many(std::iter::once(((id, 2), prepared.clone())));
        assert_eq!(cache.held(&[id])[0].as_ref().map(|(version, _)| *version), Some(2));
    }

    #[test]
    fn a_checks_read_is_cut_into_few_parts_that_keep_every_item_in_order() {
        for n in 1..=200usize {
            let items: Vec<usize> = (0..n).collect();
            let parts: Vec<&[usize]> = read_parts(&items).collect();
            assert!(parts.len() <= READ_PARTS, "{n} items in {} parts", parts.len());
            assert!(parts.iter().all(|p| !p.is_empty()));
            if n <= READ_PART_MIN {
                assert_eq!(parts.len(), 1, "{n} items are read at once");
            } else {
                assert!(parts.len() > 1, "{n} items are read in parts");
            }
            let joined: Vec<usize> = parts.concat();
            assert_eq!(joined, items, "the parts joined are the items in order");
        }
    }

    #[test]
    fn candidates_need_keys_of_two_fields_or_a_selective_block() {
        let crowded = SELECTIVE_BLOCK + 1;
        // 1 shares only a crowded block; 2 crowded blocks of two fields; 3 one selective block;
        // 4 three keys of two fields; 5 three crowded keys of one field (a namesake: the
        // surname-initial, sound and spelling keys of one common name).
        let shared = [
            (1, crowded, 0),
            (2, crowded, 0),
            (2, 150, 1),
            (3, 2, 0),
            (4, crowded, 0),
            (4, crowded, 0),
            (4, 5, 2),
            (5, crowded, 0),
            (5, crowded, 0),
            (5, 150, 0),
        ];
        assert_eq!(choose_candidates(shared.into_iter(), 10), vec![4, 2, 3]);
        assert_eq!(choose_candidates(shared.into_iter(), 2), vec![4, 2], "most shared fields first");
        // The same name in a selective block is still worth a comparison.
        let rare_name = [(6, crowded, 0), (6, crowded, 0), (6, 3, 0)];
        assert_eq!(choose_candidates(rare_name.into_iter(), 10), vec![6]);
        // Equal field counts: more shared keys, then a selective block, then by id.
        let ties = [(9, crowded, 0), (9, crowded, 1), (8, 3, 0), (8, crowded, 1), (7, crowded, 0), (7, crowded, 1)];
        assert_eq!(choose_candidates(ties.into_iter(), 10), vec![8, 7, 9]);
        let more_keys = [(9, crowded, 0), (9, crowded, 1), (9, crowded, 1), (8, 3, 0), (8, crowded, 1)];
        assert_eq!(choose_candidates(more_keys.into_iter(), 10), vec![9, 8]);
        assert!(choose_candidates(std::iter::empty::<(u8, usize, u8)>(), 10).is_empty());
        assert!(choose_candidates(shared.into_iter(), 0).is_empty());
    }

    #[test]
    fn absurd_settings_are_refused() {
        assert!(DuplicateConfig::default().check().is_ok());
        for bad in [0.0, -0.5, 1.5, f64::NAN, f64::INFINITY] {
            let config = DuplicateConfig { default_warn_threshold: bad, ..DuplicateConfig::default() };
            assert!(config.check().is_err(), "{bad}");
            let mut per_object = DuplicateConfig::default();
            per_object.warn_thresholds.insert("contacts".into(), bad);
            assert!(per_object.check().is_err(), "{bad}");
            let prior = DuplicateConfig { entry_prior: bad, ..DuplicateConfig::default() };
            assert!(prior.check().is_err(), "{bad}");
        }
        for bad in [0, 1001] {
            assert!(DuplicateConfig { scan_page: bad, ..DuplicateConfig::default() }.check().is_err(), "{bad}");
        }
        for bad in [0, 17] {
            assert!(DuplicateConfig { scan_readers: bad, ..DuplicateConfig::default() }.check().is_err(), "{bad}");
        }
        let mut config = DuplicateConfig::default();
        config.warn_thresholds.insert("leads".into(), 0.95);
        assert_eq!(config.warn_threshold("leads"), 0.95);
        assert_eq!(config.warn_threshold("contacts"), 0.8);
    }

    fn score(object: &str, a: Value, b: Value) -> f64 {
        let policy = policy(object).unwrap();
        let matcher = policy.matcher().unwrap();
        let model = entry_model(&policy, DuplicateConfig::default().entry_prior);
        let prepare = |v: Value| matcher.prepare(&policy.raw_values(v.as_object().unwrap()));
        matcher.score(&model, &prepare(a), &prepare(b)).probability
    }

    #[test]
    fn entry_model_needs_more_than_a_shared_name() {
        let warn = DuplicateConfig::default().default_warn_threshold;
        let base =
            serde_json::json!({"name": "张伟", "birth_date": "1985-03-07", "address": "杭州市西湖区文三路 90 号"});
        // Same person in traditional characters, same birth date and address.
        assert!(
            score(
                "contacts",
                base.clone(),
                serde_json::json!({"name": "張偉", "birth_date": "1985-03-07", "address": "杭州市西湖区文三路90号"})
            ) >= warn
        );
        // A namesake with a different birth date and phone.
        assert!(
            score(
                "contacts",
                base.clone(),
                serde_json::json!({"name": "张伟", "birth_date": "1990-11-02", "mobile": "+8613611112222"})
            ) < warn
        );
        // The name alone is not enough either.
        assert!(score("contacts", base.clone(), serde_json::json!({"name": "张伟"})) < warn);
        // Another name with the same birth date.
        assert!(score("contacts", base, serde_json::json!({"name": "王小明", "birth_date": "1985-03-07"})) < warn);
        // A second phone, the name in pinyin, the same WeChat account.
        let a = serde_json::json!({"name": "徐浩", "mobile": "+8613800001111", "wechat": "xuhao6681"});
        let b = serde_json::json!({"name": "Xu Hao", "mobile": "+8613900002222", "wechat": "xuhao6681"});
        assert!(score("contacts", a.clone(), b) >= warn);
        // Without the account it is a namesake; with it but another name, not enough either.
        let namesake = serde_json::json!({"name": "Xu Hao", "mobile": "+8613900002222"});
        assert!(score("contacts", a.clone(), namesake) < 0.01);
        let other = serde_json::json!({"name": "王小明", "mobile": "+8613900002222", "wechat": "xuhao6681"});
        assert!(score("contacts", a, other) < warn);
        // The same name at the same company (a business card without the phone); with a
        // different mobile it is left to the scan; the name alone at another company is not
        // enough.
        let company = "01a23291-992f-736a-979d-086dc7e38912";
        let a = serde_json::json!({"name": "王伟", "mobile": "+8613900001111", "company_id": company});
        let card = serde_json::json!({"name": "王 伟", "title": "销售总监", "company_id": company});
        assert!(score("contacts", a.clone(), card) >= warn);
        let second_phone = serde_json::json!({"name": "王伟", "mobile": "+8613900002222", "company_id": company});
        assert!(score("contacts", a.clone(), second_phone) < warn);
        let elsewhere = serde_json::json!({"name": "王伟", "company_id": "01a23291-992f-736a-979d-086dc7e38999"});
        assert!(score("contacts", a, elsewhere) < 0.01);
        // Colleagues: one company, one office address, other names.
        let office = "上海市浦东新区世纪大道100号环球金融中心25楼";
        let colleague = |name: &str| serde_json::json!({"name": name, "company_id": company, "address": office});
        for (x, y) in [("王倩轩", "王惠永"), ("王倩轩", "李明"), ("Emily Carter", "John Smith")] {
            assert!(score("contacts", colleague(x), colleague(y)) < warn, "{x} and {y}");
        }
        // A shared title weighs nothing at entry (the scan estimates what it is worth): two
        // 张伟 who are both sales managers score as two 张伟.
        let name_only = score("contacts", serde_json::json!({"name": "张伟"}), serde_json::json!({"name": "張偉"}));
        let same_title = score(
            "contacts",
            serde_json::json!({"name": "张伟", "title": "销售经理"}),
            serde_json::json!({"name": "張偉", "title": "销售经理"}),
        );
        assert!((same_title - name_only).abs() < 1e-12, "{same_title} vs {name_only}");
        // Companies: the same canonical name and phone.
        assert!(
            score(
                "companies",
                serde_json::json!({"name": "杭州云图信息科技有限公司", "phone": "+8657188886666"}),
                serde_json::json!({"name": "杭州云图信息科技股份有限公司", "phone": "+8657188886666"})
            ) >= warn
        );
    }

    #[test]
    fn every_policy_names_fields_of_its_object() {
        let schema = custodian_core::schema::Schema::standard();
        for object in schema.objects() {
            let Some(p) = policy(&object.name) else { continue };
            for name in p.strong.iter().chain(p.blocking).chain(p.display).chain(p.compare.iter().map(|(n, _)| n)) {
                assert!(object.field(name).is_some(), "{}.{name}", object.name);
            }
            assert!(p.matcher().is_some());
        }
    }
}
