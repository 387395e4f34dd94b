//! `custodian linkage-bench`: the labelled benchmark of the matching engine. `generate` writes
//! synthetic CRM records with realistic duplicates and the truth kept apart; `run` deduplicates
//! them exactly as `custodian dedupe` would and reports pairwise precision, recall and F1 of
//! the pairs `dedupe` writes (and of the directly scored ones alone, which auto-merge uses),
//! B-cubed F1, pair completeness of blocking, the number of pairs compared and the time.
//! `score` reports the same numbers for any labelled CSV (a steward's own labelled records, or
//! a public benchmark such as FEBRL), so that the engine is not judged on our generator alone.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use custodian_core::matching::evaluate::{Evaluation, evaluate};
use custodian_core::matching::model::{MISSING, Model};
use custodian_core::matching::synth::{self, SynthConfig, SynthData};
use custodian_core::matching::{FieldSpec, LinkedPair, MatchConfig, Matcher};
use indicatif::ProgressBar;

use crate::dedupe;

/// Thresholds reported by `run`, besides the one asked for.
const REPORTED_THRESHOLDS: &[f64] = &[0.5, 0.8, 0.9, 0.95, 0.99, 0.999];
/// Precision required of the automatic-merge threshold (ISSUE 4, item 5).
const AUTO_MERGE_PRECISION: f64 = 0.995;

#[derive(clap::Subcommand, Debug, Clone)]
pub enum LinkageCommand {
    /// Write a labelled benchmark into a directory: records.csv + truth.csv (people) and, with
    /// --companies, companies.csv + companies_truth.csv. Seeded and reproducible.
    Generate {
        /// Number of people records.
        #[arg(long, default_value_t = 5000)]
        people: usize,
        /// Number of company records (0 = none).
        #[arg(long, default_value_t = 0)]
        companies: usize,
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// Share of people (and companies) entered more than once.
        #[arg(long, default_value_t = 0.4)]
        duplicate_share: f64,
        #[arg(long)]
        out: PathBuf,
    },
    /// Deduplicate a generated benchmark as `custodian dedupe` does and report its quality.
    /// With --errors, `people-` or `companies-` is put before the file name, per benchmark file.
    Run {
        #[arg(long)]
        dir: PathBuf,
        #[command(flatten)]
        report: Report,
    },
    /// Deduplicate any labelled CSV (your own records, or a public record-linkage benchmark)
    /// as `custodian dedupe` does and report the same numbers as `run`: the truth is a CSV of
    /// `id,entity` rows (any text; records of one entity are duplicates of each other).
    Score {
        /// CSV file to deduplicate (as `custodian dedupe --input`).
        #[arg(long)]
        input: PathBuf,
        /// Column holding each record's unique id.
        #[arg(long)]
        id_column: String,
        /// A column to compare and its kind, as NAME=KIND (as `custodian dedupe --column`).
        #[arg(long = "column", value_name = "NAME=KIND", required = true)]
        columns: Vec<String>,
        /// CSV of `id,entity` rows with a header line: every record of --input, each with the
        /// entity it belongs to.
        #[arg(long)]
        truth: PathBuf,
        #[command(flatten)]
        report: Report,
    },
}

/// What `run` and `score` report, and where the pairs got wrong go.
#[derive(clap::Args, Debug, Clone)]
pub struct Report {
    /// Threshold of the headline numbers.
    #[arg(long, default_value_t = 0.9)]
    threshold: f64,
    /// Minimum link for the clusters (see `custodian dedupe --min-link`).
    #[arg(long)]
    min_link: Option<f64>,
    /// Also write the pairs got wrong at --threshold into this CSV file: true pairs blocking
    /// never proposed, true pairs scored below the threshold (and not implied), and false pairs
    /// written (scored at or above it, or implied through a chain), each with both records'
    /// values side by side.
    #[arg(long)]
    errors: Option<PathBuf>,
    /// Also print the fitted model: per field and agreement level, m (chance among matches),
    /// u (chance among non-matches) and the weight ln(m/u); then the prior and the EM runs.
    #[arg(long)]
    model: bool,
}

pub fn run(command: LinkageCommand) -> Result<()> {
    match command {
        LinkageCommand::Generate { people, companies, seed, duplicate_share, out } => {
            if !(0.0..=0.9).contains(&duplicate_share) {
                bail!("--duplicate-share must be between 0 and 0.9");
            }
            if people == 0 && companies == 0 {
                bail!("nothing to generate: give --people or --companies a positive number");
            }
            if people.max(companies) > 2_000_000 {
                bail!("at most 2,000,000 records per file");
            }
            std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
            if people > 0 {
                let data = synth::people(SynthConfig { records: people, seed, duplicate_share });
                write_data(&out, "records.csv", "truth.csv", &data)?;
                println!(
                    "wrote {} and {}; deduplicate with:\n  custodian dedupe --input {} --id-column id {} --output pairs.csv",
                    out.join("records.csv").display(),
                    out.join("truth.csv").display(),
                    out.join("records.csv").display(),
                    column_flags(synth::PEOPLE_COLUMNS)
                );
            }
            if companies > 0 {
                let data = synth::companies(SynthConfig { records: companies, seed, duplicate_share });
                write_data(&out, "companies.csv", "companies_truth.csv", &data)?;
                println!(
                    "wrote {} and {}",
                    out.join("companies.csv").display(),
                    out.join("companies_truth.csv").display()
                );
            }
            Ok(())
        }
        LinkageCommand::Run { dir, report: Report { threshold, min_link, errors, model } } => {
            let mut found = false;
            for (label, records, truth, columns) in [
                ("people", "records.csv", "truth.csv", synth::PEOPLE_COLUMNS),
                ("companies", "companies.csv", "companies_truth.csv", synth::COMPANY_COLUMNS),
            ] {
                if dir.join(records).exists() {
                    found = true;
                    let errors = errors.as_ref().map(|path| labelled(path, label));
                    let paths = BenchFiles { records: &dir.join(records), truth: &dir.join(truth), errors };
                    let mapping: Vec<String> = columns[1..].iter().map(|(c, k)| format!("{c}={k}")).collect();
                    bench(&paths, columns[0].0, &mapping, threshold, min_link, model)?;
                }
            }
            if !found {
                bail!(
                    "{} has neither records.csv nor companies.csv; run `custodian linkage-bench generate` first",
                    dir.display()
                );
            }
            Ok(())
        }
        LinkageCommand::Score {
            input,
            id_column,
            columns,
            truth,
            report: Report { threshold, min_link, errors, model },
        } => {
            dedupe::check_probability("--threshold", threshold, false)?;
            let paths = BenchFiles { records: &input, truth: &truth, errors };
            bench(&paths, &id_column, &columns, threshold, min_link, model)
        }
    }
}

fn column_flags(columns: &[(&str, &str)]) -> String {
    columns[1..].iter().map(|(c, k)| format!("--column {c}={k}")).collect::<Vec<_>>().join(" ")
}

fn write_data(dir: &Path, records: &str, truth: &str, data: &SynthData) -> Result<()> {
    let mut w = csv::Writer::from_path(dir.join(records)).with_context(|| format!("cannot write {records}"))?;
    w.write_record(&data.header)?;
    for row in &data.rows {
        w.write_record(row)?;
    }
    w.flush()?;
    let mut t = csv::Writer::from_path(dir.join(truth)).with_context(|| format!("cannot write {truth}"))?;
    t.write_record(["id", "entity_id"])?;
    for (row, entity) in data.rows.iter().zip(&data.entity) {
        t.write_record([row[0].as_str(), entity.to_string().as_str()])?;
    }
    t.flush()?;
    Ok(())
}

/// `dir/name` → `dir/label-name`.
fn labelled(path: &Path, label: &str) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!("{label}-{name}"))
}

/// The files of one benchmark run.
struct BenchFiles<'a> {
    records: &'a Path,
    truth: &'a Path,
    /// Where to write the pairs got wrong (`--errors`).
    errors: Option<PathBuf>,
}

fn bench(
    files: &BenchFiles,
    id_column: &str,
    mapping: &[String],
    threshold: f64,
    min_link: Option<f64>,
    show_model: bool,
) -> Result<()> {
    let (records, truth) = (files.records, files.truth);
    let table = dedupe::read_table(records)?;
    let rows = files.errors.as_ref().map(|_| (table.header.clone(), table.rows.clone()));
    let plan = dedupe::plan(&table, id_column, mapping)?;
    let outcome = dedupe::dedupe_table(table, &plan, &ProgressBar::hidden())?;
    let records_count = outcome.ids.len();

    let entity_of = read_truth(truth)?;
    let entities: Vec<u32> = outcome
        .ids
        .iter()
        .map(|id| {
            entity_of.get(id.as_str()).copied().with_context(|| format!("id {id:?} is not in {}", truth.display()))
        })
        .collect::<Result<_>>()?;
    let candidates: Vec<(u32, u32)> = outcome.result.candidate_pairs().collect();
    // At threshold t: the pairs `dedupe` writes (with the implied ones), and the pairs scored
    // at or above t by their own comparison (what auto-merge requires of every pair of a group).
    let at = |t: f64| -> (Evaluation, Evaluation) {
        let clusters = outcome.result.clusters(t, min_link);
        let linked = outcome.result.linked_pairs(t, min_link);
        let written: Vec<(u32, u32)> = linked.iter().map(|p| (p.a, p.b)).collect();
        let direct: Vec<(u32, u32)> = linked.iter().filter(|p| !p.implied).map(|p| (p.a, p.b)).collect();
        (evaluate(&entities, &candidates, &written, &clusters), evaluate(&entities, &candidates, &direct, &clusters))
    };

    let (headline, _) = at(threshold);
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}: {} records, {} true duplicate pairs", records.display(), records_count, headline.true_pairs)?;
    writeln!(
        out,
        "  blocking: {} candidate pairs compared ({:.4}% of all pairs), pair completeness {:.4}",
        headline.candidate_pairs,
        100.0 * headline.candidate_pairs as f64 / (records_count as f64 * (records_count as f64 - 1.0) / 2.0),
        headline.pair_completeness
    )?;
    writeln!(
        out,
        "  matching time (prepare, block, compare, estimate, score): {:.3} s",
        outcome.elapsed.as_secs_f64()
    )?;
    writeln!(
        out,
        "  threshold  precision  recall   F1       direct-P  direct-R  direct-F1  cl-F1    B3-precision  B3-recall  B3-F1    pairs"
    )?;
    let mut thresholds: Vec<f64> = REPORTED_THRESHOLDS.to_vec();
    if !thresholds.iter().any(|t| (t - threshold).abs() < 1e-12) {
        thresholds.push(threshold);
        thresholds.sort_by(f64::total_cmp);
    }
    let mut auto_merge: Option<f64> = None;
    for t in thresholds {
        let (e, direct) = at(t);
        if auto_merge.is_none() && direct.precision >= AUTO_MERGE_PRECISION {
            auto_merge = Some(t);
        }
        writeln!(
            out,
            "  {:<9}  {:.4}     {:.4}   {:.4}   {:.4}    {:.4}    {:.4}     {:.4}   {:.4}        {:.4}     {:.4}   {}{}",
            t,
            e.precision,
            e.recall,
            e.f1,
            direct.precision,
            direct.recall,
            direct.f1,
            e.cluster_f1,
            e.bcubed_precision,
            e.bcubed_recall,
            e.bcubed_f1,
            e.predicted_pairs,
            if (t - threshold).abs() < 1e-12 { "  <- --threshold" } else { "" }
        )?;
    }
    match auto_merge {
        Some(t) => writeln!(
            out,
            "  lowest reported threshold with direct precision >= {AUTO_MERGE_PRECISION} (auto-merge): {t}"
        )?,
        None => writeln!(out, "  no reported threshold reaches direct precision {AUTO_MERGE_PRECISION}")?,
    }
    if show_model {
        write_model(&mut out, &outcome.result.model)?;
    }
    if let (Some(path), Some((header, rows))) = (&files.errors, rows) {
        let linked = outcome.result.linked_pairs(threshold, min_link);
        let written = write_errors(path, &header, &rows, &plan, &outcome, &entities, &linked)?;
        writeln!(out, "  {written} pairs got wrong at {threshold} written to {}", path.display())?;
    }
    Ok(())
}

/// The fitted model (`--model`): each field's m, u and weight per level, the prior and the EM runs.
fn write_model(out: &mut impl Write, model: &Model) -> Result<()> {
    writeln!(out, "  model: prior {:.3e}", model.prior)?;
    for field in &model.fields {
        writeln!(out, "    {} ({}), present in {} records", field.name, field.kind, field.present())?;
        for (level, (m, u)) in field.kind.levels().iter().zip(field.m.iter().zip(&field.u)) {
            writeln!(out, "      {level:<18} m {m:.4}  u {u:.3e}  ln(m/u) {:+.2}", (m / u).ln())?;
        }
    }
    for session in &model.sessions {
        let left_out: Vec<&str> = model
            .fields
            .iter()
            .enumerate()
            .filter(|(k, _)| *k < 64 && session.excluded_fields & (1u64 << k) != 0)
            .map(|(_, f)| f.name.as_str())
            .collect();
        writeln!(
            out,
            "    EM without [{}]: {} pairs, {} iterations, match share {:.4}",
            left_out.join(", "),
            session.pairs,
            session.iterations,
            session.match_share
        )?;
    }
    Ok(())
}

/// The truth file: `id,entity` rows after a header line, each entity (any text) numbered in
/// order of first appearance.
fn read_truth(path: &Path) -> Result<HashMap<String, u32>> {
    let table = dedupe::read_table(path)?;
    if table.header.len() < 2 {
        bail!("{}: expected two columns, id and entity", path.display());
    }
    let mut numbers: HashMap<String, u32> = HashMap::new();
    let mut entity_of = HashMap::with_capacity(table.rows.len());
    for (line, row) in table.rows.into_iter().enumerate() {
        let mut cells = row.into_iter();
        let (Some(id), Some(entity)) = (cells.next(), cells.next()) else {
            bail!("{}: row {} lacks an id or an entity", path.display(), line + 2);
        };
        if entity.trim().is_empty() {
            // Records with no entity would all count as one.
            bail!("{}: row {} has an empty entity", path.display(), line + 2);
        }
        let next = u32::try_from(numbers.len()).context("too many entities")?;
        let number = *numbers.entry(entity).or_insert(next);
        if entity_of.insert(id.clone(), number).is_some() {
            bail!("{}: id {id:?} appears twice", path.display());
        }
    }
    Ok(entity_of)
}

/// Writes the pairs got wrong among `linked` (the pairs written at the threshold, see
/// `--errors`), each with the comparison level of every field; returns how many.
fn write_errors(
    path: &Path,
    header: &[String],
    rows: &[Vec<String>],
    plan: &dedupe::Plan,
    outcome: &dedupe::Outcome,
    entities: &[u32],
    linked: &[LinkedPair],
) -> Result<usize> {
    let row_of: HashMap<&str, &Vec<String>> =
        rows.iter().filter_map(|r| Some((r.get(plan.id_index)?.as_str(), r))).collect();
    let scored: HashMap<(u32, u32), f64> = outcome.result.pairs().map(|p| ((p.a, p.b), p.probability)).collect();
    let written: HashMap<(u32, u32), &LinkedPair> = linked.iter().map(|p| ((p.a, p.b), p)).collect();
    let mut wrong: Vec<(&str, u32, u32, Option<f64>)> = Vec::new();
    for p in linked {
        if entities[p.a as usize] != entities[p.b as usize] {
            let kind = if p.implied { "false_implied" } else { "false_pair" };
            wrong.push((kind, p.a, p.b, Some(p.probability)));
        }
    }
    let mut members: HashMap<u32, Vec<u32>> = HashMap::new();
    for (i, e) in entities.iter().enumerate() {
        members.entry(*e).or_default().push(i as u32);
    }
    for group in members.values() {
        for (x, &a) in group.iter().enumerate() {
            for &b in &group[x + 1..] {
                if written.contains_key(&(a, b)) {
                    continue;
                }
                match scored.get(&(a, b)) {
                    None => wrong.push(("not_proposed", a, b, None)),
                    Some(&p) => wrong.push(("scored_below", a, b, Some(p))),
                }
            }
        }
    }
    wrong.sort_by_key(|(kind, a, b, _)| (*kind, *a, *b));
    let mut w = csv::Writer::from_path(path).with_context(|| format!("cannot write {}", path.display()))?;
    let fields: Vec<FieldSpec> = plan.columns.iter().map(|(_, f)| f.clone()).collect();
    let matcher = Matcher::new(fields.clone(), MatchConfig::default())?;
    let prepared = |row: &[String]| {
        let raw: Vec<&str> = plan.columns.iter().map(|(i, _)| row.get(*i).map(String::as_str).unwrap_or("")).collect();
        matcher.prepare(&raw)
    };
    let mut head = vec!["kind".to_owned(), "score".to_owned(), "levels".to_owned()];
    head.extend(header.iter().map(|h| format!("a.{h}")));
    head.extend(header.iter().map(|h| format!("b.{h}")));
    w.write_record(&head)?;
    let empty = Vec::new();
    for (kind, a, b, p) in &wrong {
        let row = |i: u32| row_of.get(outcome.ids[i as usize].as_str()).copied().unwrap_or(&empty);
        let levels = matcher.compare(&prepared(row(*a)), &prepared(row(*b)));
        let levels: Vec<String> = fields
            .iter()
            .zip(levels)
            .filter(|(_, level)| *level != MISSING)
            .map(|(f, level)| format!("{}={}", f.name, f.kind.levels().get(usize::from(level)).unwrap_or(&"?")))
            .collect();
        let mut line = vec![(*kind).to_owned(), p.map(|p| format!("{p:.4}")).unwrap_or_default(), levels.join(" ")];
        line.extend(row(*a).iter().cloned());
        line.extend(row(*b).iter().cloned());
        w.write_record(&line)?;
    }
    w.flush()?;
    Ok(wrong.len())
}
