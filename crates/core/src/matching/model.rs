//! Fellegi-Sunter match weights, estimated without labels.
//!
//! For every field and agreement level there are two probabilities: `m`, the chance of that
//! level when the two records are the same entity, and `u`, the chance when they are not.
//! A pair's log-odds of being a match are the prior log-odds plus, per field where both values
//! are present, ln(m/u) of the observed level; a missing value adds nothing.
//!
//! * `u` comes from pairs drawn at random: nearly all random pairs are non-matches, so the
//!   level frequencies among them estimate `u` directly. The exact level uses the value's own
//!   frequency (term-frequency adjustment): agreeing on 张伟 is weaker evidence than on 诸葛亮.
//! * `m` comes from expectation-maximisation over the candidate pairs, run separately for the
//!   pairs proposed by each blocking class with that class's own fields left out: records that
//!   share a surname key agree on the surname whether or not they match, so that agreement
//!   says nothing about `m` of the surname — but their phones, e-mails and dates do. A
//!   session takes only the pairs that agree exactly on the class's fields (pairs that share
//!   no more than a coarse key, such as a phone's exchange, are mostly neighbours), and it
//!   estimates the `u` of its own pairs alongside `m` (see [`estimate_m`]).
//! * The prior (the chance that two random records match) is the fixed point of "expected
//!   number of matches among the candidates divided by the number of possible pairs".
//!
//! * A value held by more than the compared pair: its other holders count towards `u` only
//!   as far as they are unrelated records; `dedupe` estimates that share from the posteriors
//!   of the pairs that agree on values held by about as many records.
//!
//! Estimates are smoothed towards defaults (Dirichlet pseudo-counts), clamped away from 0 and
//! 1, and constrained so that a higher agreement level never counts less than a lower one.

use std::collections::HashMap;

use super::engine::PreparedRecord;
use super::kind::FieldKind;
use super::value::{Detail, Prepared};

/// Marks a field whose value is missing on either side.
pub const MISSING: u8 = u8::MAX;
/// Pseudo-count of the prior on `m` (in expected matching pairs).
const M_PRIOR_STRENGTH: f64 = 20.0;
/// Pseudo-count of the prior on `u` (in pairs): negligible for real files, but a file of a
/// few records says little about chance agreement and then the defaults dominate.
const U_PRIOR_STRENGTH: f64 = 100.0;
/// No single field moves the log-odds by more than this many nats either way.
const MAX_FIELD_WEIGHT: f64 = 18.0;
/// Pseudo-count (in pairs) of the prior of a session's `u` (see [`estimate_m`]): the `u` of
/// all pairs.
const U_SESSION_PRIOR: f64 = 100.0;
const PROBABILITY_FLOOR: f64 = 1e-7;

/// Parameters of one field.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldModel {
    pub name: String,
    pub kind: FieldKind,
    /// P(level | match), per level.
    pub m: Vec<f64>,
    /// P(level | non-match), per level.
    pub u: Vec<f64>,
    /// Number of records where this field is present.
    pub(crate) present: u32,
    /// Pairs of records that hold the same exact value (the sum over values of holders × (holders −
    /// 1) / 2).
    pub(crate) same_value_pairs: u64,
    /// Chance that two unrelated records agree exactly, net of duplicates (see `dedupe`);
    /// the term-frequency `u` of a rare value is not taken below it.
    pub(crate) exact_floor: Option<f64>,
    /// Share of unrelated records among the other holders of a value, by how many records
    /// hold it (see [`holder_bucket`]; estimated by `dedupe`). Empty: all of them.
    pub(crate) coincidence_shares: Vec<f64>,
}

impl FieldModel {
    /// Defaults used before (or instead of) estimation.
    pub fn with_defaults(name: impl Into<String>, kind: FieldKind) -> Self {
        Self {
            name: name.into(),
            kind,
            m: default_m(kind.level_count()),
            u: default_u(kind.level_count()),
            present: 0,
            same_value_pairs: 0,
            exact_floor: None,
            coincidence_shares: Vec::new(),
        }
    }

    /// Number of records where this field is present (0 before the values were counted).
    pub fn present(&self) -> u32 {
        self.present
    }

    /// How common a value is when the field's values were not counted (a pair weighed on its
    /// own, as at entry): as if it were held once, its sound by nobody else.
    pub(crate) fn uncounted(&self, value: &Prepared) -> ValueStats {
        ValueStats::of(value, self.present, |_| None, |_| None, |_| None)
    }

    /// Counts the field's values of every record (`None` = missing) without keeping the
    /// counts: returns each value's [`ValueStats`] (in input order; a missing value gets the
    /// default) and keeps only the totals. Counting starts afresh.
    pub(crate) fn count_values<'a>(&mut self, values: &[Option<&'a Prepared>]) -> Vec<ValueStats> {
        let mut exact: HashMap<&'a str, u32> = HashMap::new();
        let mut sounds: HashMap<&'a str, u32> = HashMap::new();
        let mut parts: HashMap<&'a str, u32> = HashMap::new();
        let mut present = 0u32;
        for value in values.iter().flatten() {
            present += 1;
            *exact.entry(&value.exact).or_insert(0) += 1;
            if let Some(sound) = &value.sound {
                *sounds.entry(sound).or_insert(0) += 1;
            }
            if let Detail::Name(name) = &value.detail {
                for part in name.parts.iter() {
                    *parts.entry(part).or_insert(0) += 1;
                }
            }
        }
        self.present = present;
        self.same_value_pairs = exact.values().map(|&c| u64::from(c) * u64::from(c - 1) / 2).sum();
        values
            .iter()
            .map(|value| match value {
                Some(value) => ValueStats::of(
                    value,
                    present,
                    |v| exact.get(v).copied(),
                    |s| sounds.get(s).copied(),
                    |p| parts.get(p).copied(),
                ),
                None => ValueStats::default(),
            })
            .collect()
    }

    /// ln(m/u) of a level for two present values, adjusted by term frequencies when they are
    /// known:
    /// * exact level: `u` is the chance that an unrelated record has this very value, estimated
    ///   from the value's occurrences beyond the compared pair — or, for a value too rare to
    ///   say, the field's average (or, for a name, the product of its surname's and given
    ///   name's frequencies: a rare combination of common parts is still rare);
    /// * a near level reached by values of the same sound: `u` is at least the chance that
    ///   another record has this sound, so agreeing on a common name's sound is weak evidence.
    ///
    /// The values are known by their [`ValueStats`] (`None` = missing); `same_sound` says
    /// whether the two values have the same sound (asked only for a near level, so that
    /// weighing most pairs never reads the values themselves).
    pub(crate) fn weight_of(
        &self,
        level: u8,
        a: Option<ValueStats>,
        b: Option<ValueStats>,
        same_sound: impl FnOnce() -> bool,
    ) -> f64 {
        let level_index = usize::from(level);
        let (Some(&m), Some(&u)) = (self.m.get(level_index), self.u.get(level_index)) else {
            return 0.0;
        };
        let top = self.m.len() - 1;
        let present = f64::from(self.present.max(1));
        let u = match (a, b) {
            (Some(sa), _) if level_index == top && self.present > 2 => {
                // The value's other holders that are unrelated records (not further duplicates).
                let holders = sa.holders;
                let share = holder_bucket(holders)
                    .and_then(|bucket| self.coincidence_shares.get(bucket))
                    .copied()
                    .unwrap_or(1.0);
                let beyond_pair = f64::from(holders.saturating_sub(2)) * share / present;
                let floor = if sa.parts_chance >= 0.0 {
                    f64::from(sa.parts_chance).max(1.0 / (present * present))
                } else {
                    self.exact_floor.unwrap_or(u)
                };
                beyond_pair.max(floor)
            }
            (Some(sa), Some(sb)) if level_index > 0 && level_index < top && self.present > 1 && same_sound() => {
                // Other records with this sound, beyond the pair's own values.
                let others = sa.sound.saturating_sub(sa.holders.min(sb.holders)).saturating_sub(1);
                u.max(f64::from(others) / present)
            }
            _ => u,
        };
        let weight = (m.max(PROBABILITY_FLOOR) / u.max(PROBABILITY_FLOOR)).ln();
        let weight = weight.clamp(-MAX_FIELD_WEIGHT, MAX_FIELD_WEIGHT);
        // Exact agreement never counts against a match and disagreement never for one.
        if level_index == top {
            weight.max(0.0)
        } else if level_index == 0 {
            weight.min(0.0)
        } else {
            weight
        }
    }
}

/// How common one value of a field is: what its weight needs beyond the comparison level.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ValueStats {
    /// Records holding this exact value (at least 1).
    pub holders: u32,
    /// Records holding its sound (0 without a sound).
    pub sound: u32,
    /// For a name of two parts or more, the product of its parts' frequencies (the chance of
    /// the combination); [`NO_PARTS`] otherwise. Kept in `f32` (twelve bytes a value, not
    /// sixteen: a million-record scan holds eight of these per record): its few millionths of
    /// relative error move a weight by as little, and the weights are kept in `f32` too. A
    /// product too small for `f32` becomes 0, below the floor `1 / present²` that the weight
    /// takes instead.
    pub parts_chance: f32,
}

/// [`ValueStats::parts_chance`] of a value that is not a name of several parts.
const NO_PARTS: f32 = -1.0;

impl ValueStats {
    /// The stats of `value` from counts of exact values, sounds and name parts among `present`
    /// values.
    fn of(
        value: &Prepared,
        present: u32,
        exact: impl Fn(&str) -> Option<u32>,
        sound: impl Fn(&str) -> Option<u32>,
        part: impl Fn(&str) -> Option<u32>,
    ) -> Self {
        let present = f64::from(present.max(1));
        Self {
            holders: exact(&value.exact).unwrap_or(1).max(1),
            sound: value.sound.as_deref().and_then(sound).unwrap_or(0),
            parts_chance: match &value.detail {
                Detail::Name(name) if name.parts.len() >= 2 => {
                    name.parts.iter().map(|p| f64::from(part(p).unwrap_or(1).max(1)) / present).product::<f64>() as f32
                }
                _ => NO_PARTS,
            },
        }
    }
}

impl Default for ValueStats {
    fn default() -> Self {
        Self { holders: 1, sound: 0, parts_chance: NO_PARTS }
    }
}

/// Buckets of [`holder_bucket`].
pub(crate) const HOLDER_BUCKETS: usize = 16;

/// Bucket of a value held by `holders` records, if more than a pair: 3, 4–5, 6–9, 10–17, …
pub(crate) fn holder_bucket(holders: u32) -> Option<usize> {
    (holders >= 3).then(|| ((holders - 2).ilog2() as usize).min(HOLDER_BUCKETS - 1))
}

/// Default `m`: most matching pairs agree exactly, the rest spread over lower levels.
fn default_m(levels: usize) -> Vec<f64> {
    let mut m = vec![0.0; levels];
    match levels {
        0 => {}
        1 => m[0] = 1.0,
        _ => {
            m[levels - 1] = 0.7;
            let rest = 0.3 / (levels - 1) as f64;
            for v in m.iter_mut().take(levels - 1) {
                *v = rest;
            }
        }
    }
    m
}

/// Default `u`: most random pairs disagree; each higher level is ten times rarer.
fn default_u(levels: usize) -> Vec<f64> {
    let mut u: Vec<f64> = (0..levels).map(|l| 0.1f64.powi(l as i32 + 1)).collect();
    if let Some(first) = u.first_mut() {
        *first = 0.0;
    }
    let rest: f64 = u.iter().sum();
    if let Some(first) = u.first_mut() {
        *first = 1.0 - rest;
    }
    u
}

/// The fitted model.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    pub fields: Vec<FieldModel>,
    /// Probability that two records drawn at random are the same entity.
    pub prior: f64,
    /// EM diagnostics, one per run: the blocking class's fields, the pairs it ran on (the
    /// class's candidate pairs that agree exactly on those fields), iterations, and the
    /// estimated share of matches among those pairs.
    pub sessions: Vec<EmSession>,
}

/// Diagnostics of one EM run.
#[derive(Debug, Clone, PartialEq)]
pub struct EmSession {
    /// Bit set of the fields left out (those the blocking keys were made from).
    pub excluded_fields: u64,
    /// Candidate pairs of the run: those agreeing exactly on the fields left out.
    pub pairs: usize,
    pub iterations: usize,
    pub match_share: f64,
}

impl Model {
    /// A model with default parameters and the given prior, e.g. for checking one new record
    /// against stored candidates before any estimation has run.
    pub fn with_defaults(fields: &[(String, FieldKind)], prior: f64) -> Self {
        Self {
            fields: fields.iter().map(|(n, k)| FieldModel::with_defaults(n.clone(), *k)).collect(),
            prior: prior.clamp(1e-12, 0.5),
            sessions: Vec::new(),
        }
    }

    /// Sum of the field weights of a comparison vector for two records' prepared values.
    pub fn total_weight(&self, levels: &[u8], a: &PreparedRecord, b: &PreparedRecord) -> f64 {
        let stats = |record: &PreparedRecord, k: usize| {
            let field = self.fields.get(k)?;
            record.value(k).map(|v| field.uncounted(v))
        };
        self.total_weight_with(levels, a, b, |k| stats(a, k), |k| stats(b, k))
    }

    /// [`Model::total_weight`] with each value's [`ValueStats`] given by `stats_a` and `stats_b`
    /// (by field index). The values themselves are read only for what their stats do not say
    /// (the sound of a near agreement, the kind of an e-mail address).
    pub(crate) fn total_weight_with(
        &self,
        levels: &[u8],
        a: &PreparedRecord,
        b: &PreparedRecord,
        stats_a: impl Fn(usize) -> Option<ValueStats>,
        stats_b: impl Fn(usize) -> Option<ValueStats>,
    ) -> f64 {
        let mut total = 0.0;
        for (k, &level) in levels.iter().enumerate() {
            if level == MISSING {
                continue;
            }
            let Some(field) = self.fields.get(k) else { continue };
            // The values are read only when needed (reading them is a cache miss per pair).
            let same_sound = || same_sound(a.value(k), b.value(k));
            let mut weight = field.weight_of(level, stats_a(k), stats_b(k), same_sound);
            // E-mail users made from the name agree whenever the names do (namesakes share
            // zhangwei@…, and liuyi@ is one letter from liuyu@): short of the same address, or
            // that address with its domain mistyped, that agreement adds nothing.
            if field.kind == FieldKind::Email
                && usize::from(level) + 1 < field.m.len()
                && let (Some(Detail::Email(p)), Some(Detail::Email(q))) =
                    (a.value(k).map(|v| &v.detail), b.value(k).map(|v| &v.detail))
                && p.name_like
                && q.name_like
                && !(field.kind.levels().get(usize::from(level)) == Some(&"one_typo") && p.user == q.user)
            {
                weight = weight.min(0.0);
            }
            total += weight;
        }
        total
    }

    /// Match probability for a total weight.
    pub fn probability(&self, total_weight: f64) -> f64 {
        sigmoid(logit(self.prior) + total_weight)
    }
}

/// Whether two values have the same sound (both have one).
fn same_sound(a: Option<&Prepared>, b: Option<&Prepared>) -> bool {
    matches!((a.and_then(|v| v.sound.as_ref()), b.and_then(|v| v.sound.as_ref())), (Some(x), Some(y)) if x == y)
}

pub(crate) fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

pub(crate) fn logit(p: f64) -> f64 {
    let p = p.clamp(1e-15, 1.0 - 1e-15);
    (p / (1.0 - p)).ln()
}

/// Level counts among random pairs → `u`, smoothed towards the default; the exact level is
/// replaced by the probability that two random present values are equal, computed exactly
/// from the term counts.
pub(crate) fn estimate_u(field: &mut FieldModel, level_counts: &[f64], exact_override: Option<f64>) {
    let levels = field.m.len();
    let prior = default_u(levels);
    let total: f64 = level_counts.iter().sum();
    let mut u: Vec<f64> = (0..levels)
        .map(|l| {
            (level_counts.get(l).copied().unwrap_or(0.0) + U_PRIOR_STRENGTH * prior[l]) / (total + U_PRIOR_STRENGTH)
        })
        .collect();
    let present = f64::from(field.present);
    if present >= 2.0 && levels >= 2 {
        let exact = match exact_override {
            Some(exact) => exact,
            None => {
                let same = 2 * field.same_value_pairs;
                (same as f64 + U_PRIOR_STRENGTH * prior[levels - 1]) / (present * (present - 1.0) + U_PRIOR_STRENGTH)
            }
        };
        let exact = exact.clamp(1.0 / (present * present), 1.0);
        let others: f64 = u[..levels - 1].iter().sum();
        if others > 0.0 {
            let scale = (1.0 - exact) / others;
            for v in u[..levels - 1].iter_mut() {
                *v *= scale;
            }
        }
        u[levels - 1] = exact;
    }
    for v in u.iter_mut() {
        *v = v.clamp(PROBABILITY_FLOOR, 1.0);
    }
    field.u = u;
}

/// Pairs of present values that agree exactly, over all pairs of records.
pub(crate) fn exact_pairs(field: &FieldModel) -> f64 {
    field.same_value_pairs as f64
}

/// Comparison patterns of the candidate pairs of one EM session, with their counts.
pub(crate) struct Patterns {
    pub excluded_fields: u64,
    /// Distinct patterns with their counts, sorted (so that sums, and results, do not depend
    /// on hash order).
    pub counts: Vec<(Vec<u8>, u64)>,
}

/// Runs EM for each session, pools the expected level counts of the matching pairs across
/// sessions, and sets each field's `m` from them.
///
/// A session's pairs share a blocking key, and its non-matches share more than chance would
/// give: restaurants of one cuisine are often in one town, with numbers of one exchange. Their
/// level distribution (`u` within the session) is therefore estimated with `m`: it starts from
/// the session's own level frequencies (most candidate pairs are non-matches) and then follows
/// the expected non-matches, smoothed towards the field's `u` over all pairs by
/// [`U_SESSION_PRIOR`] pseudo-pairs. Measured against the `u` of random pairs instead, that
/// shared agreement counted as evidence of a match and EM took neighbours for duplicates.
/// The session's `u` serves only the estimate of `m`; scoring uses the `u` of all pairs.
pub(crate) fn estimate_m(fields: &mut [FieldModel], sessions: &[Patterns], max_iterations: usize) -> Vec<EmSession> {
    let n = fields.len();
    let mut pooled: Vec<Vec<f64>> = fields.iter().map(|f| vec![0.0; f.m.len()]).collect();
    let mut report = Vec::new();
    for session in sessions {
        let total: u64 = session.counts.iter().map(|(_, c)| c).sum();
        if total == 0 {
            continue;
        }
        let included: Vec<bool> = (0..n).map(|k| k >= 64 || session.excluded_fields & (1u64 << k) == 0).collect();
        let mut m: Vec<Vec<f64>> = fields.iter().map(|f| default_m(f.m.len())).collect();
        let mut seen: Vec<Vec<f64>> = fields.iter().map(|f| vec![0.0; f.m.len()]).collect();
        for (pattern, count) in &session.counts {
            for (k, &level) in pattern.iter().enumerate() {
                if level != MISSING && included[k] {
                    seen[k][usize::from(level)] += *count as f64;
                }
            }
        }
        let mut u: Vec<Vec<f64>> = fields.iter().zip(&seen).map(|(f, counts)| session_u(counts, &f.u)).collect();
        let mut share = 0.1f64;
        let mut expected: Vec<Vec<f64>> = fields.iter().map(|f| vec![0.0; f.m.len()]).collect();
        let mut expected_non: Vec<Vec<f64>> = fields.iter().map(|f| vec![0.0; f.m.len()]).collect();
        let mut iterations = 0;
        for iteration in 0..max_iterations.max(1) {
            iterations = iteration + 1;
            for row in expected.iter_mut().chain(expected_non.iter_mut()) {
                row.iter_mut().for_each(|v| *v = 0.0);
            }
            let prior = logit(share);
            let mut matched = 0.0;
            for (pattern, count) in &session.counts {
                let count = *count;
                let mut log_odds = prior;
                for (k, &level) in pattern.iter().enumerate() {
                    if level == MISSING || !included[k] {
                        continue;
                    }
                    let l = usize::from(level);
                    log_odds += (m[k][l].max(PROBABILITY_FLOOR) / u[k][l]).ln();
                }
                let g = sigmoid(log_odds) * count as f64;
                matched += g;
                for (k, &level) in pattern.iter().enumerate() {
                    if level != MISSING && included[k] {
                        expected[k][usize::from(level)] += g;
                        expected_non[k][usize::from(level)] += count as f64 - g;
                    }
                }
            }
            let new_share = (matched / total as f64).clamp(1e-6, 0.999);
            let mut change = (new_share - share).abs();
            share = new_share;
            for k in 0..n {
                if !included[k] {
                    continue;
                }
                u[k] = session_u(&expected_non[k], &fields[k].u);
                let new_m = smoothed_monotone_m(&expected[k], &u[k]);
                for (old, new) in m[k].iter_mut().zip(new_m) {
                    change = change.max((*old - new).abs());
                    *old = new;
                }
            }
            if change < 1e-6 {
                break;
            }
        }
        for k in 0..n {
            if included[k] {
                for (p, e) in pooled[k].iter_mut().zip(&expected[k]) {
                    *p += e;
                }
            }
        }
        report.push(EmSession {
            excluded_fields: session.excluded_fields,
            pairs: total as usize,
            iterations,
            match_share: share,
        });
    }
    for (field, counts) in fields.iter_mut().zip(&pooled) {
        field.m = smoothed_monotone_m(counts, &field.u);
    }
    report
}

/// A session's `u` from its (expected) non-matching level counts, smoothed towards the
/// field's `u` over all pairs.
fn session_u(counts: &[f64], all_pairs: &[f64]) -> Vec<f64> {
    let total: f64 = counts.iter().sum();
    counts
        .iter()
        .zip(all_pairs)
        .map(|(c, u)| ((c + U_SESSION_PRIOR * u) / (total + U_SESSION_PRIOR)).clamp(PROBABILITY_FLOOR, 1.0))
        .collect()
}

/// `m` from expected counts: Dirichlet-smoothed towards the default, then the ratio m/u made
/// non-decreasing in the level by pooling adjacent violators.
fn smoothed_monotone_m(expected: &[f64], u: &[f64]) -> Vec<f64> {
    let levels = expected.len();
    let prior = default_m(levels);
    let total: f64 = expected.iter().sum();
    let m: Vec<f64> =
        (0..levels).map(|l| (expected[l] + M_PRIOR_STRENGTH * prior[l]) / (total + M_PRIOR_STRENGTH)).collect();
    let mut m = monotone_ratio(&m, u);
    for v in m.iter_mut() {
        *v = v.clamp(PROBABILITY_FLOOR, 1.0 - PROBABILITY_FLOOR);
    }
    m
}

/// Pool-adjacent-violators on the ratio m/u (weights u): the result keeps the total of `m` and
/// has a non-decreasing ratio across levels.
fn monotone_ratio(m: &[f64], u: &[f64]) -> Vec<f64> {
    // Blocks of (first level, sum m, sum u).
    let mut blocks: Vec<(usize, f64, f64)> = Vec::with_capacity(m.len());
    for (l, (&mv, &uv)) in m.iter().zip(u).enumerate() {
        blocks.push((l, mv, uv.max(PROBABILITY_FLOOR)));
        while blocks.len() >= 2 {
            let (_, m2, u2) = blocks[blocks.len() - 1];
            let (_, m1, u1) = blocks[blocks.len() - 2];
            if m1 / u1 > m2 / u2 {
                blocks.pop();
                if let Some(last) = blocks.last_mut() {
                    last.1 += m2;
                    last.2 += u2;
                }
            } else {
                break;
            }
        }
    }
    let mut out = vec![0.0; m.len()];
    for (b, &(start, mv, uv)) in blocks.iter().enumerate() {
        let end = blocks.get(b + 1).map_or(m.len(), |next| next.0);
        for l in start..end {
            out[l] = u[l].max(PROBABILITY_FLOOR) * mv / uv;
        }
    }
    out
}

/// The prior that makes the expected number of matches among the candidates (each weighted by
/// its posterior) equal to prior × all possible pairs.
pub(crate) fn estimate_prior(weights: &[f32], possible_pairs: f64) -> f64 {
    if weights.is_empty() || possible_pairs < 1.0 {
        return 1e-6;
    }
    let floor = (1.0 / possible_pairs).min(0.5) * 1e-3;
    let mut prior = (weights.iter().filter(|&&w| w > 0.0).count() as f64 / possible_pairs).clamp(floor, 0.5);
    for _ in 0..200 {
        let l = logit(prior);
        let expected: f64 = weights.iter().map(|&w| sigmoid(l + f64::from(w))).sum();
        let next = (expected / possible_pairs).clamp(floor, 0.5);
        if (next - prior).abs() <= prior * 1e-6 {
            prior = next;
            break;
        }
        prior = next;
    }
    prior
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_distributions() {
        for levels in 2..6 {
            let m = default_m(levels);
            let u = default_u(levels);
            assert!((m.iter().sum::<f64>() - 1.0).abs() < 1e-9);
            assert!((u.iter().sum::<f64>() - 1.0).abs() < 1e-9);
            assert!(m[levels - 1] / u[levels - 1] > 1.0 && m[0] / u[0] < 1.0);
        }
    }

    #[test]
    fn monotone_pooling() {
        let u = [0.9, 0.05, 0.04, 0.01];
        let m = [0.1, 0.3, 0.1, 0.5];
        let out = monotone_ratio(&m, &u);
        let ratios: Vec<f64> = out.iter().zip(&u).map(|(m, u)| m / u).collect();
        assert!(ratios.windows(2).all(|w| w[0] <= w[1] + 1e-12), "{ratios:?}");
        assert!((out.iter().sum::<f64>() - 1.0).abs() < 1e-9);
    }

    #[test]
    fn weights_respect_signs_and_term_frequency() {
        use super::super::value::prepare;
        let mut f = FieldModel::with_defaults("name", FieldKind::PersonName);
        f.m = vec![0.04, 0.01, 0.05, 0.1, 0.2, 0.6];
        f.u = vec![0.98, 0.01, 0.007, 0.002, 0.0005, 0.0005];
        let value = |raw: &str| prepare(FieldKind::PersonName, raw);
        let mut raw = vec!["Emily Carter"; 1000];
        for _ in 0..100 {
            raw.extend(["张伟", "Wei Zhang"]);
        }
        raw.extend(["诸葛亮", "诸葛亮", "Zhuge Liang", "Liang Zhuge", "司马光", "Sima Guang"]);
        let values: Vec<Option<Prepared>> = raw.iter().map(|r| value(r)).collect();
        let refs: Vec<Option<&Prepared>> = values.iter().map(Option::as_ref).collect();
        let stats = f.count_values(&refs);
        // The stats and value of the first record holding `name`.
        let at = |name: &str| {
            let i = raw.iter().position(|r| *r == name).unwrap();
            (stats[i], values[i].as_ref())
        };
        let weight = |level: u8, a: &str, b: &str| {
            let ((sa, va), (sb, vb)) = (at(a), at(b));
            f.weight_of(level, Some(sa), Some(sb), || same_sound(va, vb))
        };
        let common = weight(5, "张伟", "张伟");
        let rare = weight(5, "诸葛亮", "诸葛亮");
        assert!(rare > common && common >= 0.0, "{rare} {common}");
        let common_sound = weight(4, "张伟", "Wei Zhang");
        let rare_sound = weight(4, "诸葛亮", "Zhuge Liang");
        assert!(rare_sound > common_sound, "{rare_sound} {common_sound}");
        let unique_sound = weight(4, "司马光", "Sima Guang");
        assert!((unique_sound - (0.2f64 / 0.0005).ln()).abs() < 1e-9, "a sound of its own keeps the global u");
        assert!(f.weight_of(0, None, None, || false) < 0.0);
    }

    /// `count_values` says of each value how many records hold it, its sound and its parts.
    #[test]
    fn counting_values_counts_holders_sounds_and_parts() {
        use super::super::value::prepare;
        let raw =
            ["张伟", "张伟", "Wei Zhang", "章伟", "诸葛亮", "Zhuge Liang", "", "Emily Carter", "张伟", "E. Carter"];
        let values: Vec<Option<Prepared>> = raw.iter().map(|r| prepare(FieldKind::PersonName, r)).collect();
        let refs: Vec<Option<&Prepared>> = values.iter().map(Option::as_ref).collect();
        let mut counted = FieldModel::with_defaults("name", FieldKind::PersonName);
        let stats = counted.count_values(&refs);
        assert_eq!(counted.present, 9, "the empty name is missing");
        assert_eq!(counted.same_value_pairs, 3, "张伟 three times");
        assert_eq!(stats[6], ValueStats::default());
        for (i, v) in values.iter().enumerate().filter_map(|(i, v)| v.as_ref().map(|v| (i, v))) {
            let holders = values.iter().flatten().filter(|w| w.exact == v.exact).count() as u32;
            let sound = values.iter().flatten().filter(|w| v.sound.is_some() && w.sound == v.sound).count() as u32;
            assert_eq!((stats[i].holders, stats[i].sound), (holders, sound), "{}", raw[i]);
        }
        assert_eq!(stats[0].holders, 3);
        assert!(stats[4].sound >= 2, "诸葛亮 sounds like Zhuge Liang");
        // 张伟: the chance of its surname times that of its given name, among the 9 present.
        let Detail::Name(name) = &values[0].as_ref().unwrap().detail else { panic!("a name") };
        let chance: f64 = name
            .parts
            .iter()
            .map(|p| {
                let holders = values
                    .iter()
                    .flatten()
                    .filter(|w| matches!(&w.detail, Detail::Name(n) if n.parts.iter().any(|q| q == p)))
                    .count();
                holders as f64 / 9.0
            })
            .product();
        let kept = f64::from(stats[0].parts_chance);
        assert!((kept - chance).abs() <= chance * 1e-7, "{kept} {chance}");
        assert_eq!(stats[7].holders, 1);
    }

    #[test]
    fn a_value_s_stats_take_twelve_bytes() {
        // A million-record scan holds one per record and compared field.
        assert_eq!(std::mem::size_of::<ValueStats>(), 12);
    }

    #[test]
    fn em_recovers_m_on_a_clean_mixture() {
        // Two fields, three levels each; 1,000 matches mostly agreeing, 9,000 non-matches
        // disagreeing at the u rates.
        let mut fields = vec![
            FieldModel::with_defaults("a", FieldKind::CompanyName),
            FieldModel::with_defaults("b", FieldKind::CompanyName),
            FieldModel::with_defaults("c", FieldKind::CompanyName),
        ];
        for f in fields.iter_mut() {
            f.u = vec![0.9, 0.07, 0.02, 0.01];
        }
        let mut counts: HashMap<Vec<u8>, u64> = HashMap::new();
        // matches: every field exact 80%, level 2 20% (independently) → enumerate.
        for a in [2u8, 3] {
            for b in [2u8, 3] {
                for c in [2u8, 3] {
                    let p: f64 = [a, b, c].iter().map(|&l| if l == 3 { 0.8 } else { 0.2 }).product();
                    *counts.entry(vec![a, b, c]).or_insert(0) += (1000.0 * p).round() as u64;
                }
            }
        }
        for a in 0u8..4 {
            for b in 0u8..4 {
                for c in 0u8..4 {
                    let u: [f64; 4] = [0.9, 0.07, 0.02, 0.01];
                    let p = u[a as usize] * u[b as usize] * u[c as usize];
                    *counts.entry(vec![a, b, c]).or_insert(0) += (9000.0 * p).round() as u64;
                }
            }
        }
        let mut counts: Vec<(Vec<u8>, u64)> = counts.into_iter().collect();
        counts.sort();
        let sessions = [Patterns { excluded_fields: 0, counts }];
        let report = estimate_m(&mut fields, &sessions, 200);
        assert!((report[0].match_share - 0.1).abs() < 0.01, "{report:?}");
        for f in &fields {
            assert!((f.m[3] - 0.8).abs() < 0.03, "{:?}", f.m);
        }
    }

    #[test]
    fn prior_fixed_point() {
        // 100 sure matches among a million possible pairs, plus a thousand sure non-matches.
        let mut weights = vec![30.0; 100];
        weights.extend(vec![-30.0; 1000]);
        let prior = estimate_prior(&weights, 1e6);
        assert!((prior - 1e-4).abs() < 1e-6, "{prior}");
    }

    /// Pairs blocked on one field share more than that field: two restaurants of one cuisine
    /// are often in one town, with numbers from one exchange. Against `u` of random pairs,
    /// that agreement looks like evidence of a match, and EM took the neighbours for matches.
    #[test]
    fn em_learns_what_the_non_matches_of_a_session_share() {
        let mut fields = vec![
            FieldModel::with_defaults("name", FieldKind::CompanyName),
            FieldModel::with_defaults("city", FieldKind::City),
            FieldModel::with_defaults("phone", FieldKind::Phone),
            FieldModel::with_defaults("type", FieldKind::Text),
        ];
        fields[0].u = vec![0.998, 0.001, 0.0005, 0.0005];
        fields[1].u = vec![0.78, 0.01, 0.01, 0.2];
        fields[2].u = vec![0.9989, 0.0006, 0.0001, 0.0004];
        // Pairs of one type (field 3, left out): 40 matches, 400 neighbours, 1,560 strangers.
        let session = Patterns {
            excluded_fields: 1 << 3,
            counts: vec![(vec![0, 0, 0, MISSING], 1560), (vec![0, 3, 1, MISSING], 400), (vec![3, 3, 3, MISSING], 40)],
        };
        estimate_m(&mut fields, &[session], 200);
        let name = &fields[0].m;
        // The 40 matches all agree on the name; before, the 400 neighbours counted as matches.
        assert!(name[0] < 0.1 && name[3] > 0.8, "m of the name's levels: {name:?}");
    }
}
