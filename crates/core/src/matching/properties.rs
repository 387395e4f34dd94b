//! Property tests of the matching engine: normalisation is idempotent, comparison and scoring
//! are symmetric, scores are probabilities, and no input panics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;

use super::model::Model;
use super::value::prepare;
use super::{FieldKind, FieldSpec, MatchConfig, Matcher, compare::compare};

fn kind() -> impl Strategy<Value = FieldKind> {
    (0..FieldKind::ALL.len()).prop_map(|i| FieldKind::ALL[i])
}

/// Text that looks like CRM cells: names in both scripts, digits in several widths,
/// punctuation, e-mail and address characters.
fn cell() -> impl Strategy<Value = String> {
    prop_oneof![
        "[张偉李娜王芳陈曾单欧阳诸葛 a-zA-Z.,'-]{0,12}",
        "[0-9０-９+() -]{0,16}",
        "[a-z0-9.+_]{1,10}@[a-z0-9.]{1,10}",
        "[0-9]{4}[-/.年][0-9]{1,2}[-/.月][0-9]{1,2}日?",
        "[浙江省杭州市西湖区文三路0-9号室 a-zA-Z]{0,20}",
        any::<String>(),
    ]
}

proptest! {
    #[test]
    fn exact_form_is_idempotent(kind in kind(), raw in cell()) {
        if let Some(once) = prepare(kind, &raw) {
            let twice = prepare(kind, &once.exact);
            prop_assert!(twice.is_some(), "{kind}: {raw:?} → {:?} is missing when prepared again", once.exact);
            prop_assert_eq!(&twice.unwrap().exact, &once.exact, "{}: {:?}", kind, raw);
        }
    }

    #[test]
    fn comparison_is_symmetric_and_bounded(kind in kind(), a in cell(), b in cell()) {
        if let (Some(x), Some(y)) = (prepare(kind, &a), prepare(kind, &b)) {
            let level = compare(kind, &x, &y);
            prop_assert_eq!(level, compare(kind, &y, &x));
            prop_assert!(usize::from(level) < kind.level_count());
            prop_assert_eq!(usize::from(compare(kind, &x, &x)), kind.level_count() - 1);
        }
    }

    #[test]
    fn scores_are_symmetric_probabilities(a in proptest::collection::vec(cell(), 5), b in proptest::collection::vec(cell(), 5)) {
        let kinds = [FieldKind::PersonName, FieldKind::Phone, FieldKind::Email, FieldKind::Date, FieldKind::CompanyName];
        let fields: Vec<FieldSpec> = kinds.iter().enumerate().map(|(i, k)| FieldSpec::new(format!("f{i}"), *k)).collect();
        let matcher = Matcher::new(fields, MatchConfig::default()).unwrap();
        let model = Model::with_defaults(
            &kinds.iter().enumerate().map(|(i, k)| (format!("f{i}"), *k)).collect::<Vec<_>>(),
            1e-4,
        );
        let (x, y) = (matcher.prepare(&a), matcher.prepare(&b));
        let forward = matcher.score(&model, &x, &y);
        let backward = matcher.score(&model, &y, &x);
        prop_assert!((0.0..=1.0).contains(&forward.probability));
        prop_assert!((forward.probability - backward.probability).abs() < 1e-12);
        prop_assert!((forward.weight - backward.weight).abs() < 1e-9);
    }
}

#[test]
fn dedupe_on_generated_people_is_accurate() {
    use super::evaluate::evaluate;
    use super::synth::{PEOPLE_COLUMNS, SynthConfig, people};
    let data = people(SynthConfig { records: 2000, seed: 21, duplicate_share: 0.4 });
    let fields: Vec<FieldSpec> =
        PEOPLE_COLUMNS[1..].iter().map(|(c, k)| FieldSpec::new(*c, k.parse().unwrap())).collect();
    let matcher = Matcher::new(fields.clone(), MatchConfig::default()).unwrap();
    let rows: Vec<Vec<String>> = data.rows.iter().map(|r| r[1..].to_vec()).collect();
    let records = matcher.prepare_all(&rows);
    let result = matcher.dedupe(&records, &mut |_, _, _| {});
    let candidates: Vec<(u32, u32)> = result.candidate_pairs().collect();
    assert_eq!(candidates.len(), result.len());
    let predicted: Vec<(u32, u32)> = result.pairs_at_or_above(0.9).map(|p| (p.a, p.b)).collect();
    let e = evaluate(&data.entity, &candidates, &predicted, &result.clusters(0.9, None));
    assert!(e.pair_completeness > 0.99, "{e:?}");
    assert!(e.precision > 0.98 && e.recall > 0.9 && e.f1 > 0.95, "{e:?}");
    // Deterministic for the same input.
    let again = matcher.dedupe(&records, &mut |_, _, _| {});
    assert!(again.pairs().eq(result.pairs()), "two runs on the same input differ");
    // And for any number of threads (sums over pairs are taken in pair order).
    for threads in [1, 3] {
        let other = Matcher::new(fields.clone(), MatchConfig { threads, ..MatchConfig::default() }).unwrap();
        let result_other = other.dedupe(&records, &mut |_, _, _| {});
        assert!(result_other.pairs().eq(result.pairs()), "{threads} threads change the result");
        assert_eq!(result_other.model, result.model);
    }
    // Clusters from the result are those of the scored pairs.
    let scored: Vec<(u32, u32, f64)> = result.pairs().map(|p| (p.a, p.b, p.probability)).collect();
    for min_link in [None, Some(0.5)] {
        assert_eq!(result.clusters(0.9, min_link), super::cluster(records.len(), &scored, 0.9, min_link));
    }
    // The linked pairs are the scored ones at the threshold and, besides them, pairs within one
    // cluster each scored at or above the threshold by a chain, never a pair that clearly differs.
    for min_link in [None, Some(0.5)] {
        let labels = result.clusters(0.9, min_link);
        let linked = result.linked_pairs(0.9, min_link);
        let direct: Vec<(u32, u32)> = linked.iter().filter(|p| !p.implied).map(|p| (p.a, p.b)).collect();
        assert_eq!(direct, predicted);
        let implied: Vec<_> = linked.iter().filter(|p| p.implied).collect();
        for p in &implied {
            assert_eq!(labels[p.a as usize], labels[p.b as usize], "{p:?}");
            assert!(p.probability >= 0.9 && p.probability <= 1.0, "{p:?}");
            assert!(result.probability(p.a, p.b).is_none_or(|own| own >= super::cluster::IMPLIED_VETO), "{p:?}");
        }
        if min_link.is_none() {
            assert!(!implied.is_empty(), "2,000 generated people have chains of three or more");
        }
        let written: Vec<(u32, u32)> = linked.iter().map(|p| (p.a, p.b)).collect();
        let with_implied = evaluate(&data.entity, &candidates, &written, &labels);
        assert!(with_implied.f1 >= e.f1 - 0.005, "{with_implied:?} against {e:?}");
    }
}
