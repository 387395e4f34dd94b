//! The matcher: prepares records, generates candidate pairs by blocking, compares them,
//! estimates the model on the data itself and scores every candidate pair.

use std::collections::HashMap;

use super::blocking::{self, KeyClass, PairList};
use super::cluster::{cluster_links, implied_links};
use super::compare::compare;
use super::kind::FieldKind;
use super::model::{self, EmSession, FieldModel, MISSING, Model, Patterns, ValueStats, logit, sigmoid};
use super::value::{Detail, Prepared, prepare};

/// Most fields a matcher accepts (blocking classes and EM sessions track fields in a 64-bit set).
pub const MAX_FIELDS: usize = 64;
/// Rounds of refining the exact-coincidence estimates and the posteriors (see `dedupe`).
const COINCIDENCE_ROUNDS: usize = 2;

/// One attribute of the records: a name for messages and its kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldSpec {
    pub name: String,
    pub kind: FieldKind,
}

impl FieldSpec {
    pub fn new(name: impl Into<String>, kind: FieldKind) -> Self {
        Self { name: name.into(), kind }
    }
}

/// Tuning that is about cost, not about what counts as a match.
#[derive(Debug, Clone, PartialEq)]
pub struct MatchConfig {
    /// Blocks of up to this many records compare all their pairs; larger ones use a window.
    pub max_block_size: usize,
    /// The same for the keys of coarse classes (company and address tokens, dates, halves of
    /// identifiers: see `blocking`).
    pub max_coarse_block_size: usize,
    /// Sorted-neighbourhood window inside large blocks.
    pub window: usize,
    /// The window inside large blocks of coarse classes.
    pub coarse_window: usize,
    /// Random pairs drawn to estimate `u`.
    pub u_sample_pairs: usize,
    /// EM iterations per session (it usually converges long before).
    pub em_iterations: usize,
    /// Seed of the random pair sample (results are deterministic for a given seed).
    pub seed: u64,
    /// Worker threads; 0 means one per available core.
    pub threads: usize,
}

impl Default for MatchConfig {
    fn default() -> Self {
        Self {
            max_block_size: 50,
            max_coarse_block_size: 10,
            window: 10,
            coarse_window: 3,
            u_sample_pairs: 20_000,
            em_iterations: 200,
            seed: 0x5eed,
            threads: 0,
        }
    }
}

/// Errors in setting up a matcher.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MatchError {
    #[error("no fields to compare: map at least one column to a kind")]
    NoFields,
    #[error("too many fields ({0}); at most {MAX_FIELDS} can be compared")]
    TooManyFields(usize),
    #[error("field {0:?} is listed twice")]
    DuplicateField(String),
}

/// The prepared values of one record, by field index. Only the values present are held (a
/// bit per field says which): a scan holds a million of these, and a missing value took a
/// whole slot (48 bytes) when every field had one.
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedRecord {
    /// Bit `k` set: field `k` has a value (fields are at most [`MAX_FIELDS`]).
    present: u64,
    /// The values present, in field order.
    values: Box<[Prepared]>,
}

impl PreparedRecord {
    /// A record from its values in field order (`None` = missing). Values past
    /// [`MAX_FIELDS`] are not kept (no matcher compares that many fields).
    pub fn new(values: impl IntoIterator<Item = Option<Prepared>>) -> Self {
        let mut present = 0u64;
        let mut kept = Vec::new();
        for (k, value) in values.into_iter().enumerate().take(MAX_FIELDS) {
            if let Some(v) = value {
                present |= 1 << k;
                kept.push(v);
            }
        }
        Self { present, values: kept.into_boxed_slice() }
    }

    /// The value of field `k`, if it has one.
    pub fn value(&self, k: usize) -> Option<&Prepared> {
        let bit = 1u64.checked_shl(u32::try_from(k).ok()?)?;
        if self.present & bit == 0 {
            return None;
        }
        self.values.get((self.present & (bit - 1)).count_ones() as usize)
    }

    /// [`Prepared::touch`] of every value.
    fn touch(&self) -> usize {
        self.values.iter().map(Prepared::touch).fold(self.present as usize, usize::wrapping_add)
    }

    /// The values present, in field order.
    pub(crate) fn present_mut(&mut self) -> impl Iterator<Item = &mut Prepared> {
        self.values.iter_mut()
    }
}

/// Pipeline stages reported to the progress callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Blocking,
    Comparing,
    Estimating,
    Scoring,
}

/// A scored candidate pair (record indexes, a < b).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoredPair {
    pub a: u32,
    pub b: u32,
    /// Sum of the field weights (log Bayes factor, nats).
    pub weight: f64,
    /// Match probability.
    pub probability: f64,
}

/// A pair reported at a threshold (see [`DedupeResult::linked_pairs`]): scored at or above it
/// by its own comparison, or implied by a chain of such pairs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkedPair {
    pub a: u32,
    pub b: u32,
    /// The pair's own match probability, or for an implied pair the product of the
    /// probabilities along its best chain.
    pub probability: f64,
    /// Whether the pair is implied by a chain rather than scored at the threshold itself.
    pub implied: bool,
}

/// Result of [`Matcher::dedupe`]: every candidate pair with its weight, and the model.
///
/// A pair's probability is not stored: it is the model's probability of the pair's weight,
/// computed when asked for (the same number the scoring computed), so that a run over millions
/// of pairs holds a pair and a weight per candidate and nothing more.
#[derive(Debug, Clone)]
pub struct DedupeResult {
    /// Candidate pairs (record indexes, a < b), ordered by (a, b).
    pairs: PairList,
    /// Sum of the field weights of each candidate pair, computed in `f64` and kept in `f32`
    /// (a few millionths of a nat are far below any difference a threshold tells apart, and a million
    /// records have tens of millions of candidates).
    weights: Vec<f32>,
    /// The model estimated on the input.
    pub model: Model,
    pub records: usize,
}

impl DedupeResult {
    /// Number of candidate pairs.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// The candidate pairs (a < b), ordered by (a, b).
    pub fn candidate_pairs(&self) -> impl ExactSizeIterator<Item = (u32, u32)> + '_ {
        self.pairs.iter()
    }

    /// The match probability of records `a` and `b` (in either order), `None` when blocking did
    /// not propose the pair for comparison.
    pub fn probability(&self, a: u32, b: u32) -> Option<f64> {
        let i = self.pairs.position(a.min(b), a.max(b))?;
        Some(sigmoid(logit(self.model.prior) + f64::from(self.weights[i])))
    }

    /// Every candidate pair with its score, ordered by (a, b).
    pub fn pairs(&self) -> impl ExactSizeIterator<Item = ScoredPair> + '_ {
        let prior = logit(self.model.prior);
        self.pairs.iter().zip(&self.weights).map(move |((a, b), &weight)| ScoredPair {
            a,
            b,
            weight: f64::from(weight),
            probability: sigmoid(prior + f64::from(weight)),
        })
    }

    /// Pairs scored at or above `threshold`, ordered by (a, b).
    pub fn pairs_at_or_above(&self, threshold: f64) -> impl Iterator<Item = ScoredPair> + '_ {
        self.pairs().filter(move |p| p.probability >= threshold)
    }

    /// Cluster label per record (smallest record index of its cluster).
    pub fn clusters(&self, threshold: f64, min_link: Option<f64>) -> Vec<u32> {
        cluster_links(self.records, self.links(threshold), min_link, |x, y| self.probability(x, y))
    }

    /// The pairs to report at `threshold`: those scored at or above it, and those the clusters
    /// (as [`Self::clusters`] with `min_link`) imply through chains of them (see
    /// [`implied_links`]), so that the pairs agree with the clusters. Ordered by (a, b).
    pub fn linked_pairs(&self, threshold: f64, min_link: Option<f64>) -> Vec<LinkedPair> {
        let links = self.links(threshold);
        let labels = cluster_links(self.records, links.clone(), min_link, |x, y| self.probability(x, y));
        let implied = implied_links(&links, &labels, threshold, |x, y| self.probability(x, y));
        let mut pairs: Vec<LinkedPair> = links
            .into_iter()
            .map(|(a, b, probability)| LinkedPair { a, b, probability, implied: false })
            .chain(implied.into_iter().map(|(a, b, probability)| LinkedPair { a, b, probability, implied: true }))
            .collect();
        pairs.sort_by_key(|p| (p.a, p.b));
        pairs
    }

    /// The pairs scored at or above `threshold` as `(a, b, probability)`.
    fn links(&self, threshold: f64) -> Vec<(u32, u32, f64)> {
        self.pairs_at_or_above(threshold).map(|p| (p.a, p.b, p.probability)).collect()
    }
}

/// A configured matcher for one record layout.
#[derive(Debug, Clone)]
pub struct Matcher {
    fields: Vec<FieldSpec>,
    kinds: Vec<FieldKind>,
    classes: Vec<KeyClass>,
    config: MatchConfig,
}

impl Matcher {
    pub fn new(fields: Vec<FieldSpec>, config: MatchConfig) -> Result<Self, MatchError> {
        if fields.is_empty() {
            return Err(MatchError::NoFields);
        }
        if fields.len() > MAX_FIELDS {
            return Err(MatchError::TooManyFields(fields.len()));
        }
        for (i, f) in fields.iter().enumerate() {
            if fields[..i].iter().any(|g| g.name == f.name) {
                return Err(MatchError::DuplicateField(f.name.clone()));
            }
        }
        let kinds: Vec<FieldKind> = fields.iter().map(|f| f.kind).collect();
        let classes = blocking::key_classes(&kinds);
        Ok(Self { fields, kinds, classes, config })
    }

    pub fn fields(&self) -> &[FieldSpec] {
        &self.fields
    }

    pub fn key_classes(&self) -> &[KeyClass] {
        &self.classes
    }

    /// Prepares one record from its raw values in field order (absent trailing values count
    /// as missing).
    pub fn prepare<S: AsRef<str>>(&self, raw: &[S]) -> PreparedRecord {
        let values = self.kinds.iter().enumerate().map(|(i, kind)| raw.get(i).and_then(|v| prepare(*kind, v.as_ref())));
        let mut record = PreparedRecord::new(values);
        mark_name_like_emails(&self.kinds, &mut record);
        record
    }

    /// Prepares many records on all worker threads.
    pub fn prepare_all<R, S>(&self, rows: &[R]) -> Vec<PreparedRecord>
    where
        R: AsRef<[S]> + Sync,
        S: AsRef<str>,
    {
        self.prepare_each(rows, |row| self.prepare(row.as_ref()))
    }

    /// Prepares many items on all worker threads, `prepare` reading each one's raw values
    /// there too (a scan decrypts them on the same threads).
    pub fn prepare_each<T: Sync>(
        &self,
        items: &[T],
        prepare: impl Fn(&T) -> PreparedRecord + Sync,
    ) -> Vec<PreparedRecord> {
        parallel_map(items, self.threads(), prepare)
    }

    /// Agreement level per field (`MISSING` where either value is missing).
    pub fn compare(&self, a: &PreparedRecord, b: &PreparedRecord) -> Vec<u8> {
        let mut out = vec![MISSING; self.kinds.len()];
        self.compare_into(a, b, &mut out);
        out
    }

    fn compare_into(&self, a: &PreparedRecord, b: &PreparedRecord, out: &mut [u8]) {
        for (k, kind) in self.kinds.iter().enumerate() {
            out[k] = match (a.value(k), b.value(k)) {
                (Some(x), Some(y)) => compare(*kind, x, y),
                _ => MISSING,
            };
        }
    }

    /// Blocking keys of a record as (class name, key text), all tokens included for token
    /// classes. A store keeps (a keyed hash of) these to find candidates for a new record.
    pub fn blocking_keys(&self, record: &PreparedRecord) -> Vec<(String, String)> {
        let mut out = Vec::new();
        blocking::record_keys(&self.classes, record, None, &mut out);
        out.into_iter().map(|(c, text)| (self.classes[usize::from(c)].name.clone(), text)).collect()
    }

    /// Scores a pair with a given model (e.g. one estimated earlier by [`Matcher::dedupe`]).
    pub fn score(&self, model: &Model, a: &PreparedRecord, b: &PreparedRecord) -> ScoredPair {
        let levels = self.compare(a, b);
        let weight = model.total_weight(&levels, a, b);
        ScoredPair { a: 0, b: 0, weight, probability: model.probability(weight) }
    }

    fn threads(&self) -> usize {
        if self.config.threads > 0 { self.config.threads } else { all_cores() }
    }

    /// Finds duplicates among `records`: blocking, comparison, unsupervised estimation, scoring.
    ///
    /// Per candidate pair it holds the pair, the set of classes that proposed it (until the EM
    /// sessions are counted), its comparison levels, packed (until the last weights), and its
    /// weight.
    /// Weights are computed on all worker threads, and sums over pairs are taken in pair
    /// order, so that the result does not depend on the number of threads.
    pub fn dedupe(&self, records: &[PreparedRecord], progress: &mut dyn FnMut(Stage, u64, u64)) -> DedupeResult {
        let n = records.len();
        let width = self.kinds.len();

        progress(Stage::Blocking, 0, n as u64);
        let frequencies = blocking::token_frequencies(&self.classes, records, width);
        let rank = sort_ranks(&self.kinds, records);
        let blocking::Candidates { pairs, proposed_by, class_sets } =
            blocking::candidate_pairs(&self.classes, records, &frequencies, &rank, &self.config, self.threads());
        drop((frequencies, rank));
        progress(Stage::Blocking, n as u64, n as u64);

        // Comparison vectors of the candidates.
        let total = pairs.len() as u64;
        progress(Stage::Comparing, 0, total);
        let levels = self.compare_pairs(records, &pairs);
        progress(Stage::Comparing, total, total);
        // The EM sessions' patterns, counted now so that the proposing classes (four bytes a
        // pair) are freed before the estimation holds its value counts and the weights.
        let sessions = self.sessions(&proposed_by, &class_sets, &levels);
        drop(proposed_by);

        // Parameters.
        progress(Stage::Estimating, 0, 4);
        let mut fields: Vec<FieldModel> =
            self.fields.iter().map(|f| FieldModel::with_defaults(f.name.clone(), f.kind)).collect();
        let stats = value_stats(&mut fields, records, self.threads());
        // `u` is the level distribution over all pairs, estimated by strata: the candidate
        // pairs are all counted, the rest are sampled. The high levels occur almost only among
        // candidates, so their `u` is counted rather than guessed from a handful of samples.
        let sample: Vec<(u32, u32)> = random_pairs(n, self.config.u_sample_pairs, self.config.seed)
            .into_iter()
            .filter(|&(a, b)| pairs.position(a, b).is_none())
            .collect();
        let sample_levels = self.compare_pairs(records, sample.as_slice());
        let candidate_counts = level_counts(&levels, &fields);
        let sample_counts = level_counts(&sample_levels, &fields);
        for ((field, in_candidates), in_sample) in fields.iter_mut().zip(candidate_counts).zip(sample_counts) {
            let present = f64::from(field.present);
            let all_pairs = present * (present - 1.0) / 2.0;
            let candidate_pairs: f64 = in_candidates.iter().sum();
            let sampled: f64 = in_sample.iter().sum();
            let rest = (all_pairs - candidate_pairs).max(0.0);
            let counts: Vec<f64> = if sampled > 0.0 {
                // Expected counts over all pairs, rescaled to the sample size so that the
                // smoothing prior keeps its weight.
                let scale = sampled / all_pairs.max(1.0);
                in_candidates.iter().zip(&in_sample).map(|(c, s)| (c + rest * s / sampled) * scale).collect()
            } else {
                in_candidates
            };
            model::estimate_u(field, &counts, None);
        }
        progress(Stage::Estimating, 1, 4);

        let reports: Vec<EmSession> = model::estimate_m(&mut fields, &sessions, self.config.em_iterations);
        let mut model = Model { fields, prior: 1e-6, sessions: reports };
        let possible = n as f64 * (n as f64 - 1.0) / 2.0;
        let mut weights = vec![0.0f32; pairs.len()];
        self.weights(&model, records, &stats, &pairs, &levels, &mut weights);
        model.prior = model::estimate_prior(&weights, possible);
        progress(Stage::Estimating, 2, 4);

        // Exactly agreeing pairs include the true duplicates, which inflate `u` of exact
        // agreement (for a unique identifier, every exact agreement is a duplicate). With
        // posteriors known, the non-matching share of the agreeing pairs gives the chance of a
        // coincidence; it is the floor of the term-frequency `u` of values too rare to count.
        // The same share, taken among the pairs agreeing on values held by about as many
        // records, says how many of a value's other holders are unrelated records rather than
        // further duplicates of the pair (a phone held by three records is one person entered
        // three times, a name held by thirty is thirty people). Posteriors and these estimates
        // are refined twice. The other levels and `m` keep the first estimates, which leave a
        // margin for the dependence between fields that the model ignores.
        // These estimates change the weights of exact agreements only, and those read only the
        // first record's statistics: each round corrects the weights by what changed in them
        // (reading the pairs in order) instead of weighing every field of every pair again
        // (a third of a million-record scan, most of it waiting on the second record's values).
        for _ in 0..COINCIDENCE_ROUNDS {
            let before = model.fields.clone();
            self.estimate_coincidences(&mut model, &stats, &pairs, &levels, &weights);
            Self::reweigh_exact(&before, &model.fields, &stats, &pairs, &levels, &mut weights, self.threads());
            model.prior = model::estimate_prior(&weights, possible);
        }
        drop(levels);
        progress(Stage::Estimating, 4, 4);

        // Scores are the model's probabilities of the weights, computed when asked for.
        progress(Stage::Scoring, 0, total);
        progress(Stage::Scoring, total, total);
        DedupeResult { pairs, weights, model, records: n }
    }

    /// From the posteriors of `weights`: each field's chance of an exact coincidence between
    /// unrelated records (`FieldModel::exact_floor`) and the non-matching share of exact
    /// agreements by how many records hold the value (`FieldModel::coincidence_shares`).
    fn estimate_coincidences(
        &self,
        model: &mut Model,
        stats: &Stats,
        pairs: &PairList,
        levels: &LevelRows,
        weights: &[f32],
    ) {
        let width = levels.width;
        let tops: Vec<u8> = model.fields.iter().map(|f| f.kind.exact_level()).collect();
        let mut agreeing = vec![0.0f64; width];
        let mut agreeing_non_match = vec![0.0f64; width];
        // Per field and holder-count bucket: (agreeing pairs, their expected non-matches).
        let mut by_holders = vec![[(0.0f64, 0.0f64); model::HOLDER_BUCKETS]; width];
        let mut row = [MISSING; MAX_FIELDS];
        let row = &mut row[..width];
        for (((a, _), packed), &weight) in pairs.iter().zip(levels.rows()).zip(weights) {
            levels.unpack(packed, row);
            let q = 1.0 - model.probability(f64::from(weight));
            for (k, (&level, &top)) in row.iter().zip(&tops).enumerate() {
                if level != top {
                    continue;
                }
                agreeing[k] += 1.0;
                agreeing_non_match[k] += q;
                // The value is present (the pair agrees on it).
                let holders = stats.of(a, k).holders;
                if let Some(bucket) = model::holder_bucket(holders) {
                    by_holders[k][bucket].0 += 1.0;
                    by_holders[k][bucket].1 += q;
                }
            }
        }
        for (k, field) in model.fields.iter_mut().enumerate() {
            let present = f64::from(field.present);
            let all_pairs = present * (present - 1.0) / 2.0;
            if all_pairs > 0.0 {
                let coincidences = (model::exact_pairs(field) - agreeing[k]).max(0.0) + agreeing_non_match[k];
                field.exact_floor = Some((coincidences / all_pairs).max(1.0 / (present * present)));
            }
            // A pseudo-pair that is a coincidence keeps a bucket with little evidence near the
            // cautious answer (every other holder unrelated).
            field.coincidence_shares =
                by_holders[k].iter().map(|&(agree, non_match)| (non_match + 1.0) / (agree + 1.0)).collect();
        }
    }

    /// Corrects each pair's total weight in `weights` from the field models `before` to
    /// `after`, which differ only in how exact agreements weigh ([`FieldModel::exact_floor`],
    /// [`FieldModel::coincidence_shares`]): for each field a pair agrees on exactly, the
    /// weight under `after` replaces the one under `before`. On all worker threads.
    fn reweigh_exact(
        before: &[FieldModel],
        after: &[FieldModel],
        stats: &Stats,
        pairs: &PairList,
        levels: &LevelRows,
        weights: &mut [f32],
        threads: usize,
    ) {
        let tops: Vec<u8> = after.iter().map(|f| f.kind.exact_level()).collect();
        fill_on_threads(weights, threads, |first, chunk| {
            let mut row = [MISSING; MAX_FIELDS];
            let row = &mut row[..levels.width];
            for (((a, _), packed), weight) in pairs.iter_from(first).zip(levels.rows_from(first)).zip(chunk) {
                levels.unpack(packed, row);
                for (k, (&level, &top)) in row.iter().zip(&tops).enumerate() {
                    if level != top {
                        continue;
                    }
                    let (Some(old), Some(new)) = (before.get(k), after.get(k)) else { continue };
                    // The statistics of the second record and the sound are not read at the
                    // exact level.
                    let sa = Some(stats.of(a, k));
                    let change = new.weight_of(level, sa, None, || false) - old.weight_of(level, sa, None, || false);
                    *weight = (f64::from(*weight) + change) as f32;
                }
            }
        });
    }

    /// Total weight of each pair, into `out` (one per pair), on all worker threads.
    fn weights(
        &self,
        model: &Model,
        records: &[PreparedRecord],
        stats: &Stats,
        pairs: &PairList,
        levels: &LevelRows,
        out: &mut [f32],
    ) {
        fill_on_threads(out, self.threads(), |first, chunk| {
            let mut row = [MISSING; MAX_FIELDS];
            let row = &mut row[..levels.width];
            for (((a, b), packed), weight) in pairs.iter_from(first).zip(levels.rows_from(first)).zip(chunk) {
                levels.unpack(packed, row);
                *weight = model.total_weight_with(
                    row,
                    &records[a as usize],
                    &records[b as usize],
                    |k| Some(stats.of(a, k)),
                    |k| Some(stats.of(b, k)),
                ) as f32;
            }
        });
    }

    /// Comparison vectors of `pairs`, packed.
    fn compare_pairs<P: Pairs + ?Sized>(&self, records: &[PreparedRecord], pairs: &P) -> LevelRows {
        let mut out = LevelRows::new(self.kinds.len(), pairs.count());
        if pairs.count() == 0 {
            return out;
        }
        let (width, words) = (out.width, out.words);
        let threads = self.threads();
        let per_thread = pairs.count().div_ceil(threads).max(1);
        std::thread::scope(|scope| {
            for (i, out_chunk) in out.data.chunks_mut(per_thread * words).enumerate() {
                scope.spawn(move || {
                    let mut row = [MISSING; MAX_FIELDS];
                    let row = &mut row[..width];
                    // The second record of a pair is anywhere in memory (pairs come in the
                    // first record's order), its values' parts in separate allocations: each
                    // read of a comparison waited on memory in turn. Touching the second
                    // record of the pair `TOUCH_AHEAD` places on has those reads under way
                    // together, while this pair is compared.
                    let mut ahead = pairs.from((i * per_thread + TOUCH_AHEAD).min(pairs.count()));
                    let mut touched = 0usize;
                    for ((a, b), packed) in pairs.from(i * per_thread).zip(out_chunk.chunks_exact_mut(words)) {
                        if let Some((_, next)) = ahead.next()
                            && let Some(record) = records.get(next as usize)
                        {
                            touched = touched.wrapping_add(record.touch());
                        }
                        self.compare_into(&records[a as usize], &records[b as usize], row);
                        LevelRows::pack(row, packed);
                    }
                    std::hint::black_box(touched);
                });
            }
        });
        out
    }

    /// One EM session per set of fields that blocking classes are made from; each sees the
    /// candidate pairs its classes proposed that agree exactly on those fields, with those
    /// fields left out. Pairs that share only a coarse key of them (a phone's exchange, a word
    /// of a street's name) are mostly neighbours: with them in, a session holds neighbours,
    /// strangers and duplicates, and EM, splitting it in two, took "one building" for "one
    /// entity".
    fn sessions(&self, proposed_by: &[u32], class_sets: &[u64], levels: &LevelRows) -> Vec<Patterns> {
        let width = self.kinds.len();
        let tops: Vec<u8> = self.kinds.iter().map(|k| k.exact_level()).collect();
        let mut field_sets: Vec<u64> = self.classes.iter().map(|c| c.fields).collect();
        field_sets.sort_unstable();
        field_sets.dedup();
        let class_masks: Vec<u64> = field_sets
            .iter()
            .map(|set| {
                self.classes
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| c.fields == *set)
                    .fold(0u64, |mask, (i, _)| mask | (1u64 << i))
            })
            .collect();
        let mut counts: Vec<HashMap<Vec<u8>, u64>> = vec![HashMap::new(); field_sets.len()];
        let mut pattern = vec![MISSING; width];
        let mut row = vec![MISSING; width];
        for (&set, packed) in proposed_by.iter().zip(levels.rows()) {
            let bits = class_sets[set as usize];
            levels.unpack(packed, &mut row);
            for ((session, &mask), &excluded) in counts.iter_mut().zip(&class_masks).zip(&field_sets) {
                if bits & mask == 0 {
                    continue;
                }
                if !agree_exactly(&row, &tops, excluded) {
                    continue;
                }
                for (k, (&level, slot)) in row.iter().zip(pattern.iter_mut()).enumerate() {
                    *slot = if k < 64 && excluded & (1u64 << k) != 0 { MISSING } else { level };
                }
                // Looked up by slice, so that a pattern is copied once, not once per pair.
                match session.get_mut(pattern.as_slice()) {
                    Some(count) => *count += 1,
                    None => {
                        session.insert(pattern.clone(), 1);
                    }
                }
            }
        }
        field_sets
            .iter()
            .zip(counts)
            .map(|(&excluded_fields, map)| {
                let mut counts: Vec<(Vec<u8>, u64)> = map.into_iter().collect();
                counts.sort_unstable();
                Patterns { excluded_fields, counts }
            })
            .collect()
    }
}

/// Whether a comparison row agrees at the top level on every field of `fields` (a bit set).
fn agree_exactly(row: &[u8], tops: &[u8], fields: u64) -> bool {
    row.iter().zip(tops).enumerate().all(|(k, (&level, &top))| k >= 64 || fields & (1u64 << k) == 0 || level == top)
}

/// [`ValueStats`] of every record's values, record after record.
struct Stats {
    values: Vec<ValueStats>,
    width: usize,
}

impl Stats {
    fn of(&self, record: u32, field: usize) -> ValueStats {
        self.values[record as usize * self.width + field]
    }
}

/// How common each value of `records` is (the counts themselves are not kept); also counts
/// each field's values present into `fields`. Fields are counted `threads` at a time (each on
/// its own thread: their counts are independent), so that no more than that many fields' value
/// maps are held at once.
fn value_stats(fields: &mut [FieldModel], records: &[PreparedRecord], threads: usize) -> Stats {
    let width = fields.len();
    let threads = threads.max(1);
    let mut stats = vec![ValueStats::default(); records.len() * width];
    for (group, models) in fields.chunks_mut(threads).enumerate() {
        let counted: Vec<Vec<ValueStats>> = std::thread::scope(|scope| {
            let handles: Vec<_> = models
                .iter_mut()
                .enumerate()
                .map(|(j, field)| {
                    let k = group * threads + j;
                    scope.spawn(move || {
                        let values: Vec<Option<&Prepared>> = records.iter().map(|r| r.value(k)).collect();
                        field.count_values(&values)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|handle| match handle.join() {
                    Ok(column) => column,
                    Err(panic) => std::panic::resume_unwind(panic),
                })
                .collect()
        });
        for (j, column) in counted.into_iter().enumerate() {
            let k = group * threads + j;
            for (i, s) in column.into_iter().enumerate() {
                stats[i * width + k] = s;
            }
        }
    }
    Stats { values: stats, width }
}

/// Pairs that can be read from any index on: the candidates, or a sample.
trait Pairs: Sync {
    fn count(&self) -> usize;
    fn from(&self, first: usize) -> impl Iterator<Item = (u32, u32)> + '_;
}

impl Pairs for PairList {
    fn count(&self) -> usize {
        self.len()
    }

    fn from(&self, first: usize) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.iter_from(first)
    }
}

impl Pairs for [(u32, u32)] {
    fn count(&self) -> usize {
        self.len()
    }

    fn from(&self, first: usize) -> impl Iterator<Item = (u32, u32)> + '_ {
        self[first..].iter().copied()
    }
}

/// How many pairs ahead of the one compared [`Matcher::compare_pairs`] touches the second
/// record ([`PreparedRecord::touch`]).
const TOUCH_AHEAD: usize = 4;

/// Comparison levels of many pairs, packed three bits to a field and ten fields to a 32-bit
/// word (a row of eight fields takes four bytes instead of eight). Levels are below
/// `MAX_LEVELS` (every kind has at most six); a missing value is stored as 7.
#[derive(Debug)]
struct LevelRows {
    width: usize,
    /// Words per row.
    words: usize,
    data: Vec<u32>,
}

const LEVEL_BITS: usize = 3;
const FIELDS_PER_WORD: usize = 10;
const PACKED_MISSING: u32 = 7;
/// Levels a kind may have for its levels to be packed.
const MAX_LEVELS: usize = 7;

impl LevelRows {
    fn new(width: usize, rows: usize) -> Self {
        let words = width.div_ceil(FIELDS_PER_WORD).max(1);
        Self { width, words, data: vec![0; rows * words] }
    }

    fn pack(row: &[u8], out: &mut [u32]) {
        out.fill(0);
        for (k, &level) in row.iter().enumerate() {
            debug_assert!(level == MISSING || usize::from(level) < MAX_LEVELS, "level {level} cannot be packed");
            let code = if level == MISSING { PACKED_MISSING } else { u32::from(level) };
            out[k / FIELDS_PER_WORD] |= code << ((k % FIELDS_PER_WORD) * LEVEL_BITS);
        }
    }

    fn unpack(&self, packed: &[u32], row: &mut [u8]) {
        for (k, slot) in row.iter_mut().enumerate() {
            let code = (packed[k / FIELDS_PER_WORD] >> ((k % FIELDS_PER_WORD) * LEVEL_BITS)) & PACKED_MISSING;
            *slot = if code == PACKED_MISSING { MISSING } else { code as u8 };
        }
    }

    fn rows(&self) -> std::slice::ChunksExact<'_, u32> {
        self.data.chunks_exact(self.words)
    }

    /// Rows from row `first` on.
    fn rows_from(&self, first: usize) -> std::slice::ChunksExact<'_, u32> {
        self.data[first * self.words..].chunks_exact(self.words)
    }
}

/// Fills `out` on up to `threads` scoped threads: `f` gets the index of its chunk's first item
/// and the chunk. Fewer than 256 items stay on the calling thread.
fn fill_on_threads<U: Send>(out: &mut [U], threads: usize, f: impl Fn(usize, &mut [U]) + Sync) {
    if out.len() < 256 || threads <= 1 {
        f(0, out);
        return;
    }
    let per_thread = out.len().div_ceil(threads);
    let f = &f;
    std::thread::scope(|scope| {
        for (i, chunk) in out.chunks_mut(per_thread).enumerate() {
            scope.spawn(move || f(i * per_thread, chunk));
        }
    });
}

/// Count of each level of each field in comparison rows (`MISSING` is not counted). The counts
/// are whole numbers below 2^53, so they equal adding 1.0 per pair.
fn level_counts(levels: &LevelRows, fields: &[FieldModel]) -> Vec<Vec<f64>> {
    let mut counts: Vec<Vec<u64>> = fields.iter().map(|f| vec![0; f.m.len()]).collect();
    let mut row = vec![MISSING; levels.width];
    for packed in levels.rows() {
        levels.unpack(packed, &mut row);
        for (&level, field_counts) in row.iter().zip(counts.iter_mut()) {
            if let Some(slot) = field_counts.get_mut(usize::from(level)) {
                *slot += 1;
            }
        }
    }
    counts.into_iter().map(|c| c.into_iter().map(|x| x as f64).collect()).collect()
}

/// Marks e-mail values whose user part is made from the record's name (see
/// `EmailValue::name_like`).
fn mark_name_like_emails(kinds: &[FieldKind], record: &mut PreparedRecord) {
    let mut tokens: Vec<Box<str>> = Vec::new();
    for (k, kind) in kinds.iter().enumerate() {
        if let (FieldKind::PersonName | FieldKind::GivenName | FieldKind::Surname, Some(v)) = (kind, record.value(k))
            && let Detail::Name(name) = &v.detail
        {
            tokens.extend(name.tokens.iter().map(Box::from));
        }
    }
    if tokens.is_empty() {
        return;
    }
    for value in record.present_mut() {
        if let Detail::Email(email) = &mut value.detail {
            let letters: String = email.user.chars().filter(|c| !c.is_ascii_digit()).collect();
            email.name_like = is_made_from(&letters, &tokens);
        }
    }
}

/// Whether `user` is a name's words run together in some order, one word, the initials, or a
/// word with the initial of another (zhangwei, weizhang, carter, zw, ecarter, carter.e).
fn is_made_from(user: &str, tokens: &[Box<str>]) -> bool {
    if user.is_empty() || tokens.len() > 6 {
        return false;
    }
    let initials: String = tokens.iter().filter_map(|t| t.chars().next()).collect();
    if user == initials || tokens.iter().any(|t| **t == *user) {
        return true;
    }
    let n = tokens.len();
    for i in 0..n {
        for j in 0..n {
            if i == j {
                continue;
            }
            let (a, b) = (&*tokens[i], &*tokens[j]);
            let initial = &b[..b.chars().next().map_or(0, char::len_utf8)];
            if user == format!("{a}{b}") || user == format!("{initial}{a}") || user == format!("{a}{initial}") {
                return true;
            }
        }
    }
    // Three or more words, in written or reversed order.
    let joined: String = tokens.concat();
    let reversed: String = tokens.iter().rev().map(|t| &**t).collect();
    user == joined || user == reversed
}

/// Rank of each record when sorted by a name-like key: the sound of the name, the company,
/// the birth date, the e-mail, the phone — the first two that are present. A date before the
/// e-mail and phone: a person's second entry often has another phone or address of e-mail,
/// rarely another birth date, so within a common name's block their entries stay neighbours
/// (demo contacts at 200k: the scan's pair completeness 0.9398 → 0.9434; the 200k linkage set
/// unchanged).
fn sort_ranks(kinds: &[FieldKind], records: &[PreparedRecord]) -> Vec<u32> {
    let priority = |kind: FieldKind| match kind {
        FieldKind::PersonName => 0,
        FieldKind::Surname => 1,
        FieldKind::GivenName => 2,
        FieldKind::CompanyName => 3,
        FieldKind::Date => 4,
        FieldKind::Email => 5,
        FieldKind::Phone => 6,
        FieldKind::IdNumber => 7,
        _ => 8,
    };
    let mut order: Vec<usize> = (0..kinds.len()).collect();
    order.sort_by_key(|&k| (priority(kinds[k]), k));
    let keys: Vec<String> = records
        .iter()
        .map(|record| {
            let mut key = String::new();
            let mut used = 0;
            for &k in &order {
                if let Some(v) = record.value(k) {
                    let part = match &v.detail {
                        Detail::Name(name) => name.forms.first().map_or_else(|| v.exact.to_string(), str::to_owned),
                        _ => v.exact.to_string(),
                    };
                    key.push_str(&part);
                    key.push('\u{1}');
                    used += 1;
                    if used == 2 {
                        break;
                    }
                }
            }
            key
        })
        .collect();
    let mut by_key: Vec<u32> = (0..records.len() as u32).collect();
    by_key.sort_by(|&x, &y| keys[x as usize].cmp(&keys[y as usize]).then(x.cmp(&y)));
    let mut rank = vec![0u32; records.len()];
    for (position, &record) in by_key.iter().enumerate() {
        rank[record as usize] = position as u32;
    }
    rank
}

/// `count` distinct random pairs (all pairs when there are fewer), deterministic for a seed.
fn random_pairs(n: usize, count: usize, seed: u64) -> Vec<(u32, u32)> {
    let possible = (n as u128) * (n as u128).saturating_sub(1) / 2;
    if possible == 0 || count == 0 {
        return Vec::new();
    }
    if possible <= count as u128 {
        let mut all = Vec::with_capacity(possible as usize);
        for a in 0..n as u32 {
            for b in a + 1..n as u32 {
                all.push((a, b));
            }
        }
        return all;
    }
    let mut state = seed;
    let mut next = move || {
        // SplitMix64.
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let mut pairs = Vec::with_capacity(count);
    while pairs.len() < count {
        let a = (next() % n as u64) as u32;
        let b = (next() % n as u64) as u32;
        if a != b {
            pairs.push((a.min(b), a.max(b)));
        }
    }
    pairs
}

/// The cores this process may use, read once: `available_parallelism` reads the cgroup files
/// on every call, which cost a single create a tenth of its time when asked per write.
fn all_cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()).min(16))
}

/// `f` over `items` in order, spread over every core (scoped threads); fewer than 256 items
/// stay on the calling thread, where starting threads would cost more than it saves.
pub fn map_on_all_cores<T: Sync, U: Send>(items: &[T], f: impl Fn(&T) -> U + Sync) -> Vec<U> {
    parallel_map(items, all_cores(), f)
}

fn parallel_map<T: Sync, U: Send>(items: &[T], threads: usize, f: impl Fn(&T) -> U + Sync) -> Vec<U> {
    if items.len() < 256 || threads <= 1 {
        return items.iter().map(&f).collect();
    }
    let per_thread = items.len().div_ceil(threads);
    let f = &f;
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(per_thread)
            .map(|chunk| scope.spawn(move || chunk.iter().map(f).collect::<Vec<U>>()))
            .collect();
        let mut out = Vec::with_capacity(items.len());
        for handle in handles {
            match handle.join() {
                Ok(part) => out.extend(part),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        out
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// A record holds only its present values, and answers each field index as the full row
    /// of values did: the value at that index, or none (also past the last field, and past
    /// the 64 fields a record can have).
    #[test]
    fn a_record_answers_every_field_as_its_full_row_did() {
        let raw: Vec<String> =
            (0..MAX_FIELDS).map(|k| if k % 3 == 1 { String::new() } else { format!("v{k}") }).collect();
        let row: Vec<Option<Prepared>> = raw.iter().map(|r| prepare(FieldKind::Exact, r)).collect();
        let record = PreparedRecord::new(row.clone());
        assert_eq!(record.values.len(), row.iter().flatten().count(), "only the present values are held");
        for k in 0..MAX_FIELDS + 3 {
            assert_eq!(record.value(k), row.get(k).and_then(Option::as_ref), "field {k}");
        }
        assert_eq!(record.value(usize::MAX), None);
        let sparse = PreparedRecord::new([None, None, prepare(FieldKind::Exact, "x")]);
        assert_eq!((sparse.value(0), sparse.value(1)), (None, None));
        assert_eq!(sparse.value(2).map(|v| &*v.exact), Some("x"));
        let past = PreparedRecord::new((0..MAX_FIELDS + 2).map(|_| prepare(FieldKind::Exact, "y")));
        assert_eq!((past.values.len(), past.value(MAX_FIELDS)), (MAX_FIELDS, None), "no field past the 64th");
        let empty = PreparedRecord::new([]);
        assert_eq!((empty.value(0), empty.values.len()), (None, 0));
    }

    #[test]
    fn levels_pack_and_unpack() {
        for kind in FieldKind::ALL {
            assert!(kind.level_count() <= MAX_LEVELS, "{kind} has too many levels to pack");
        }
        for width in [1usize, 8, 10, 11, 64] {
            let row: Vec<u8> =
                (0..width).map(|k| if k % 5 == 4 { MISSING } else { (k % MAX_LEVELS) as u8 % 6 }).collect();
            let mut levels = LevelRows::new(width, 3);
            let words = levels.words;
            LevelRows::pack(&row, &mut levels.data[words..2 * words]);
            let mut back = vec![0; width];
            levels.unpack(levels.rows_from(1).next().unwrap(), &mut back);
            assert_eq!(back, row);
            levels.unpack(levels.rows().next().unwrap(), &mut back);
            assert!(back.iter().all(|&l| l == 0));
        }
    }

    /// The refinement rounds correct the weights of exact agreements in place: the result is
    /// what weighing every pair again with the final model gives.
    #[test]
    fn refined_weights_are_the_final_models_weights() {
        let matcher = Matcher::new(
            vec![
                FieldSpec::new("name", FieldKind::PersonName),
                FieldSpec::new("phone", FieldKind::Phone),
                FieldSpec::new("email", FieldKind::Email),
                FieldSpec::new("city", FieldKind::City),
            ],
            MatchConfig::default(),
        )
        .unwrap();
        let names = ["张伟", "王芳", "李娜", "刘洋", "John Smith", "Mary Jones", "陈静", "杨磊"];
        let cities = ["北京", "上海", "广州"];
        let rows: Vec<[String; 4]> = (0..400usize)
            .map(|i| {
                let person = i / 3;
                [
                    format!("{}{}", names[person % names.len()], if i % 3 == 2 { "" } else { " " }),
                    format!("1381234{:04}", person % 97),
                    format!("user{}@example.com", person % 53),
                    cities[person % cities.len()].to_owned(),
                ]
            })
            .collect();
        let records = matcher.prepare_all(&rows);
        let result = matcher.dedupe(&records, &mut |_, _, _| {});
        assert!(result.len() > 100, "{}", result.len());
        let mut fields: Vec<FieldModel> =
            matcher.fields.iter().map(|f| FieldModel::with_defaults(f.name.clone(), f.kind)).collect();
        let stats = value_stats(&mut fields, &records, 1);
        let levels = matcher.compare_pairs(&records, &result.pairs);
        let mut full = vec![0.0f32; result.len()];
        matcher.weights(&result.model, &records, &stats, &result.pairs, &levels, &mut full);
        let changed = result.model.fields.iter().any(|f| f.exact_floor.is_some());
        assert!(changed, "the rounds estimated nothing");
        for (i, (refined, full)) in result.weights.iter().zip(&full).enumerate() {
            // Each round rounds its correction to `f32`.
            assert!((refined - full).abs() < 1e-4, "pair {i}: {refined} refined, {full} weighed again");
        }
    }

    /// Comparing touches a record some pairs ahead: lists shorter than that distance, on
    /// several threads, compare as one pair at a time does.
    #[test]
    fn short_pair_lists_compare_as_single_pairs_do() {
        let config = MatchConfig { threads: 3, ..MatchConfig::default() };
        let matcher = Matcher::new(
            vec![FieldSpec::new("name", FieldKind::PersonName), FieldSpec::new("phone", FieldKind::Phone)],
            config,
        )
        .unwrap();
        let rows = [["张伟", "13812345678"], ["張偉", "13812345678"], ["John Smith", ""], ["Jon Smyth", "13812345679"]];
        let records = matcher.prepare_all(&rows.map(|r| r.map(str::to_owned)));
        for count in 0..=TOUCH_AHEAD + 2 {
            let pairs: Vec<(u32, u32)> = (0..count as u32).map(|i| (i % 4, (i + 1) % 4)).collect();
            let levels = matcher.compare_pairs(&records, pairs.as_slice());
            let mut row = [MISSING; 2];
            for (&(a, b), packed) in pairs.iter().zip(levels.rows()) {
                levels.unpack(packed, &mut row);
                assert_eq!(row.to_vec(), matcher.compare(&records[a as usize], &records[b as usize]), "{count} pairs");
            }
            assert_eq!(levels.rows().count(), count);
        }
    }

    #[test]
    fn map_on_all_cores_keeps_order_above_and_below_the_threshold() {
        for n in [0usize, 3, 255, 256, 1001] {
            let items: Vec<usize> = (0..n).collect();
            assert_eq!(map_on_all_cores(&items, |i| i * 2), items.iter().map(|i| i * 2).collect::<Vec<_>>());
        }
    }

    #[test]
    fn name_like_emails() {
        let matcher = Matcher::new(
            vec![FieldSpec::new("name", FieldKind::PersonName), FieldSpec::new("email", FieldKind::Email)],
            MatchConfig::default(),
        )
        .unwrap();
        let like = |name: &str, email: &str| match &matcher.prepare(&[name, email]).value(1) {
            Some(Prepared { detail: Detail::Email(e), .. }) => e.name_like,
            other => panic!("{other:?}"),
        };
        assert!(like("张伟", "zhangwei85@qq.com"));
        assert!(like("张伟", "wei.zhang@163.com"));
        assert!(like("Emily Carter", "ecarter@example.com"));
        assert!(like("Emily Carter", "emily.carter@example.com"));
        assert!(like("李小明", "lx1985@qq.com"));
        assert!(!like("张伟", "12345678@qq.com"));
        assert!(!like("Emily Carter", "sunshine@example.com"));
    }

    /// A phone held by three records that are one person entered three times is as strong
    /// evidence as one held by two: the third holder is a further duplicate, not an unrelated
    /// record that happens to share the number. (Counting it as unrelated put `u` at 1/present,
    /// and two entries of one person that agree on the phone but write the name differently
    /// fell below the threshold.)
    #[test]
    fn further_duplicates_do_not_make_a_shared_value_common() {
        let matcher = Matcher::new(
            vec![FieldSpec::new("name", FieldKind::PersonName), FieldSpec::new("phone", FieldKind::Phone)],
            MatchConfig::default(),
        )
        .unwrap();
        let surnames = ["王", "李", "张", "刘", "陈", "杨", "黄", "赵", "吴", "周"];
        let given = ["伟", "芳", "娜", "敏", "静", "丽", "强", "磊", "军", "洋", "勇", "艳", "杰", "娟", "涛"];
        let mut rows: Vec<[String; 2]> = Vec::new();
        for i in 0..3000u32 {
            let name = format!(
                "{}{}{}",
                surnames[(i % 10) as usize],
                given[(i / 10 % 15) as usize],
                given[(i / 150 % 15) as usize]
            );
            let phone = format!("139{:08}", 10_000_000 + i * 7919 % 89_999_999);
            rows.push([name.clone(), phone.clone()]);
            // Every tenth person is entered again with the same name, every thirtieth a third
            // time with one character of the given name left out.
            if i % 10 == 0 {
                rows.push([name.clone(), phone.clone()]);
            }
            if i % 30 == 0 {
                rows.push([name.chars().take(2).collect(), phone]);
            }
        }
        let records = matcher.prepare_all(&rows);
        let result = matcher.dedupe(&records, &mut |_, _, _| {});
        // The counts of the phones again (`dedupe` keeps only the estimates).
        let mut phone = result.model.fields[1].clone();
        let phones: Vec<Option<&Prepared>> = records.iter().map(|r| r.value(1)).collect();
        let stats = phone.count_values(&phones);
        let weight = |row: usize| {
            let value = records[row].value(1).map(|_| stats[row]);
            phone.weight_of(3, value, value, || true)
        };
        // Rows 0..=2: person 0 three times; person 10's phone is held by two records.
        let held_by_two = rows
            .iter()
            .enumerate()
            .find(|(_, r)| rows.iter().filter(|o| o[1] == r[1]).count() == 2)
            .map(|(i, _)| i)
            .unwrap();
        assert_eq!(rows.iter().filter(|o| o[1] == rows[0][1]).count(), 3);
        let (three, two) = (weight(0), weight(held_by_two));
        // Counting the third holder as unrelated gives ln(m × present) ≈ 8; what is left of
        // the gap to two holders is the estimate's caution (a pseudo-count of coincidence).
        assert!(three > two - 3.0, "a phone held by three entries of one person weighs {three:.2}, by two {two:.2}");
        assert!(three > 11.0, "a phone held by three entries of one person weighs only {three:.2}");
    }

    /// Businesses in one building share its street address, city and switchboard prefix, and
    /// differ in name. Pairs blocked on the address or the phone are mostly such neighbours;
    /// measured against `u` of random pairs they agree on the city and the phone's head far
    /// more often than chance, and EM took "same building" for "same business": it learned
    /// that matches mostly have different names, and paired the neighbours.
    #[test]
    fn neighbours_are_not_taken_for_one_entity() {
        let matcher = Matcher::new(
            vec![
                FieldSpec::new("name", FieldKind::CompanyName),
                FieldSpec::new("addr", FieldKind::Address),
                FieldSpec::new("city", FieldKind::City),
                FieldSpec::new("phone", FieldKind::Phone),
            ],
            MatchConfig::default(),
        )
        .unwrap();
        let first = [
            "golden", "silver", "blue", "red", "green", "royal", "little", "grand", "happy", "lucky", "old", "new",
            "sunny", "quiet", "bright", "noble",
        ];
        let second = [
            "dragon", "harbor", "garden", "kitchen", "palace", "table", "lantern", "bistro", "grill", "corner",
            "spoon", "oven", "terrace", "market", "tavern", "orchard",
        ];
        let streets = ["main street", "ocean avenue", "park road", "river lane", "hill drive", "lake boulevard"];
        let cities = ["springfield", "riverton", "lakeside", "fairview", "greenville"];
        let mut rows: Vec<[String; 4]> = Vec::new();
        let mut entity: Vec<usize> = Vec::new();
        // Two businesses of the first building (rows of the first and the third).
        let mut neighbours = None;
        for b in 0..40usize {
            let addr = format!("{} {}", 100 + b * 7, streets[b % streets.len()]);
            let city = cities[b % cities.len()].to_owned();
            for k in 0..6usize {
                let n = b * 6 + k;
                let name =
                    format!("{} {} {}", first[n % 16], second[(n / 16 + n) % 16], ["cafe", "restaurant", "bar"][n % 3]);
                let phone = format!("21{:04}{:04}", 3000 + b * 37, 1000 + k * 11);
                rows.push([name.clone(), addr.clone(), city.clone(), phone.clone()]);
                entity.push(n);
                if n % 3 == 0 {
                    // The same business listed again: its name without the last word.
                    let short: Vec<&str> = name.split(' ').take(2).collect();
                    rows.push([short.join(" "), addr.clone(), city.clone(), phone]);
                    entity.push(n);
                }
                if b == 0 && k == 2 {
                    neighbours = Some((rows.len() - 1, rows.len() - 4));
                }
            }
        }
        let records = matcher.prepare_all(&rows);
        let result = matcher.dedupe(&records, &mut |_, _, _| {});
        let name = &result.model.fields[0].m;
        assert!(name[0] < 0.1, "m of names that differ: {name:?}");
        let (a, b) = neighbours.unwrap();
        let p = result.probability(a.min(b) as u32, a.max(b) as u32).unwrap();
        assert!(p < 0.1, "{:?} and {:?}, neighbours, score {p:.3}", rows[a], rows[b]);
        // The businesses entered twice are still found, and no neighbours with them.
        let (same, other): (Vec<ScoredPair>, Vec<ScoredPair>) =
            result.pairs_at_or_above(0.9).partition(|p| entity[p.a as usize] == entity[p.b as usize]);
        assert!(same.len() >= 78, "{} of the 80 businesses entered twice found", same.len());
        assert!(other.is_empty(), "{} pairs of neighbours at 0.9", other.len());
    }
}
