//! `custodian dedupe`: finds duplicate records in any CSV file, before import or for a one-off
//! clean-up. Columns are mapped to kinds (`--column name=person_name`); the matching engine
//! (`custodian_core::matching`) estimates its weights on the file itself, so no training data
//! or configuration is needed. Writes `id_a,id_b,score` for pairs at or above the threshold,
//! and optionally the clusters. The pairs are those scored at or above the threshold and those
//! the clusters imply through chains of them (A~B and B~C: A~C), scored by their best chain, so
//! that pairs and clusters tell one story; `--direct-only` leaves the implied ones out.
//!
//! Bad input gets a clear error and changes nothing: the input must be UTF-8 (GBK exports are
//! refused with the `iconv` command that converts them), quoting must be well-formed, fields,
//! lines and column counts are capped, and outputs are written to temporary files that replace
//! the targets only when everything succeeded.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use custodian_core::matching::{DedupeResult, FieldKind, FieldSpec, MatchConfig, Matcher, Stage};
pub use custodian_core::table::{Table, parse_table};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Files with at least this many rows show a progress bar (when stderr is a terminal).
const PROGRESS_FROM_ROWS: usize = 20_000;

#[derive(clap::Args, Debug, Clone)]
pub struct DedupeArgs {
    /// CSV file (UTF-8, comma-separated, first line = column names).
    #[arg(long)]
    pub input: PathBuf,
    /// Column holding each record's unique id.
    #[arg(long)]
    pub id_column: String,
    /// A column to compare and its kind, as NAME=KIND; repeat for each column. Kinds:
    /// person_name, given_name, surname, company_name, phone, email, date, address, postcode,
    /// city, id_number, text, exact.
    #[arg(long = "column", value_name = "NAME=KIND", required = true)]
    pub columns: Vec<String>,
    /// Where to write the pairs (`id_a,id_b,score`).
    #[arg(long)]
    pub output: PathBuf,
    /// Lowest match probability written (0 < threshold <= 1).
    #[arg(long, default_value_t = 0.9)]
    pub threshold: f64,
    /// Also write the clusters (`id,cluster_id,cluster_size`; every record, singletons too).
    #[arg(long)]
    pub clusters: Option<PathBuf>,
    /// Refuse to put two records in one cluster when their own score is below this
    /// (0 <= min_link <= 1). Without it, clusters are plain connected components.
    #[arg(long)]
    pub min_link: Option<f64>,
    /// Write only the pairs whose own comparison scored at or above the threshold. Without it,
    /// the pairs that chains of those imply are written too (A~B and B~C: A~C, scored by the
    /// product along its best chain; not when A and C were compared and clearly differ, nor
    /// within clusters of more than 100 records).
    #[arg(long)]
    pub direct_only: bool,
}

/// What to compare, resolved against a table's header.
#[derive(Debug, Clone)]
pub struct Plan {
    pub id_index: usize,
    /// (column index, field spec) per compared column.
    pub columns: Vec<(usize, FieldSpec)>,
}

/// Result of a dedupe run, for the caller's report.
#[derive(Debug)]
pub struct Outcome {
    pub ids: Vec<String>,
    pub result: DedupeResult,
    pub elapsed: Duration,
}

pub fn run(args: DedupeArgs) -> Result<()> {
    check_probability("--threshold", args.threshold, false)?;
    if let Some(min_link) = args.min_link {
        check_probability("--min-link", min_link, true)?;
    }
    let started = Instant::now();
    let table = read_table(&args.input)?;
    let plan = plan(&table, &args.id_column, &args.columns)?;
    let progress = progress_bar(table.rows.len());
    let outcome = dedupe_table(table, &plan, &progress)?;
    progress.set_message("writing");
    let written = write_pairs(&args.output, &outcome, args.threshold, args.min_link, args.direct_only)?;
    let clusters = match &args.clusters {
        Some(path) => Some(write_clusters(path, &outcome, args.threshold, args.min_link)?),
        None => None,
    };
    progress.finish_and_clear();
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{} records, {} candidate pairs compared, {} pairs with score >= {} written to {}{} ({:.2} s)",
        outcome.ids.len(),
        outcome.result.len(),
        written,
        args.threshold,
        args.output.display(),
        clusters.map_or(String::new(), |n| format!("; {n} clusters of two or more records")),
        started.elapsed().as_secs_f64(),
    )?;
    Ok(())
}

pub(crate) fn check_probability(flag: &str, value: f64, zero_allowed: bool) -> Result<()> {
    let ok = value.is_finite() && value <= 1.0 && if zero_allowed { value >= 0.0 } else { value > 0.0 };
    if !ok {
        let range = if zero_allowed { "0 <= value <= 1" } else { "0 < value <= 1" };
        bail!("{flag} must be a probability ({range}), got {value}");
    }
    Ok(())
}

/// Reads and parses a CSV file, refusing anything that is not well-formed UTF-8 CSV.
pub fn read_table(path: &Path) -> Result<Table> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse_table(&bytes)
        .map_err(anyhow::Error::new)
        .with_context(|| format!("{} is not a usable CSV file", path.display()))
}

/// Resolves `--id-column` and `--column NAME=KIND` against the header.
pub fn plan(table: &Table, id_column: &str, columns: &[String]) -> Result<Plan> {
    let available = || table.header.iter().map(|h| format!("{h:?}")).collect::<Vec<_>>().join(", ");
    let find = |name: &str| -> Result<usize> {
        let hits: Vec<usize> = table.header.iter().enumerate().filter(|(_, h)| *h == name).map(|(i, _)| i).collect();
        match hits.as_slice() {
            [one] => Ok(*one),
            [] => bail!("no column named {name:?}; the columns are: {}", available()),
            _ => bail!("the header has {} columns named {name:?}; rename them so each name is unique", hits.len()),
        }
    };
    let id_index = find(id_column.trim()).context("--id-column")?;
    let mut ids: HashMap<&str, usize> = HashMap::with_capacity(table.rows.len());
    for (row, line) in table.rows.iter().zip(&table.lines) {
        let id = row[id_index].trim();
        if id.is_empty() {
            bail!("line {line}: the id column {id_column:?} is empty; every record needs an id");
        }
        if let Some(first) = ids.insert(id, *line) {
            bail!("id {id:?} appears on lines {first} and {line}; ids must be unique");
        }
    }
    if columns.is_empty() {
        bail!("map at least one column to a kind with --column NAME=KIND");
    }
    let mut planned: Vec<(usize, FieldSpec)> = Vec::new();
    for mapping in columns {
        let Some((name, kind)) = mapping.rsplit_once('=') else {
            bail!("--column {mapping:?} must be NAME=KIND, e.g. --column mobile=phone");
        };
        let kind: FieldKind = kind.parse().with_context(|| format!("--column {mapping:?}"))?;
        let index = find(name.trim()).with_context(|| format!("--column {mapping:?}"))?;
        if planned.iter().any(|(i, _)| *i == index) {
            bail!("--column {mapping:?}: column {name:?} is mapped twice");
        }
        planned.push((index, FieldSpec::new(name.trim(), kind)));
    }
    if planned.len() > custodian_core::matching::MAX_FIELDS {
        bail!("at most {} columns can be compared", custodian_core::matching::MAX_FIELDS);
    }
    Ok(Plan { id_index, columns: planned })
}

/// Rows prepared at a time: each batch's cells are freed once it is prepared, so the text of
/// the file is not held beside its prepared form.
const PREPARE_BATCH_ROWS: usize = 1 << 16;

/// Runs the matching engine on a table (consumed: its cells are freed as they are prepared).
pub fn dedupe_table(table: Table, plan: &Plan, progress: &ProgressBar) -> Result<Outcome> {
    let started = Instant::now();
    let fields: Vec<FieldSpec> = plan.columns.iter().map(|(_, f)| f.clone()).collect();
    let matcher = Matcher::new(fields, MatchConfig::default())?;
    progress.set_message("preparing");
    let ids: Vec<String> = table.rows.iter().map(|row| row[plan.id_index].trim().to_owned()).collect();
    let mut records = Vec::with_capacity(table.rows.len());
    let mut rows = table.rows.into_iter();
    loop {
        let batch: Vec<Vec<String>> = rows.by_ref().take(PREPARE_BATCH_ROWS).collect();
        if batch.is_empty() {
            break;
        }
        let raw: Vec<Vec<&str>> =
            batch.iter().map(|row| plan.columns.iter().map(|(i, _)| row[*i].as_str()).collect()).collect();
        records.extend(matcher.prepare_all(&raw));
    }
    drop(rows);
    let result = matcher.dedupe(&records, &mut |stage, done, total| {
        let name = match stage {
            Stage::Blocking => "blocking",
            Stage::Comparing => "comparing",
            Stage::Estimating => "estimating",
            Stage::Scoring => "scoring",
        };
        progress.set_message(name);
        progress.set_length(total.max(1));
        progress.set_position(done);
    });
    Ok(Outcome { ids, result, elapsed: started.elapsed() })
}

fn progress_bar(rows: usize) -> ProgressBar {
    if rows < PROGRESS_FROM_ROWS || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(rows as u64), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg:10} [{bar:40}] {pos}/{len} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// A probability with six decimals, rounded down so that a written score is never above the
/// computed one (a pair written at "0.900000" did reach 0.9).
fn format_score(p: f64) -> String {
    format!("{:.6}", (p * 1e6).floor() / 1e6)
}

/// Writes `path` through a temporary file next to it, renamed into place only on success.
fn write_atomically(path: &Path, write: impl FnOnce(&mut csv::Writer<std::fs::File>) -> Result<()>) -> Result<()> {
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "output".into());
    let temporary = path.with_file_name(format!(".{file_name}.{}.tmp", std::process::id()));
    let result = (|| -> Result<()> {
        let file = std::fs::File::create(&temporary).with_context(|| format!("cannot create {}", path.display()))?;
        let mut writer = csv::Writer::from_writer(file);
        write(&mut writer)?;
        let file =
            writer.into_inner().map_err(|e| anyhow::anyhow!("cannot write {}: {}", path.display(), e.error()))?;
        file.sync_all().with_context(|| format!("cannot write {}", path.display()))?;
        std::fs::rename(&temporary, path).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    result
}

/// Pairs at or above the threshold (with the implied ones unless `direct_only`), best first;
/// returns how many were written.
pub fn write_pairs(
    path: &Path,
    outcome: &Outcome,
    threshold: f64,
    min_link: Option<f64>,
    direct_only: bool,
) -> Result<usize> {
    let mut pairs: Vec<_> = outcome.result.linked_pairs(threshold, min_link);
    pairs.retain(|p| !(direct_only && p.implied));
    pairs.sort_by(|x, y| y.probability.total_cmp(&x.probability).then((x.a, x.b).cmp(&(y.a, y.b))));
    write_atomically(path, |w| {
        w.write_record(["id_a", "id_b", "score"])?;
        for p in &pairs {
            let score = format_score(p.probability);
            w.write_record([outcome.ids[p.a as usize].as_str(), outcome.ids[p.b as usize].as_str(), score.as_str()])?;
        }
        Ok(())
    })?;
    Ok(pairs.len())
}

/// Every record with its cluster (named by the id of its first record in file order) and the
/// cluster's size; returns the number of clusters with two or more records.
pub fn write_clusters(path: &Path, outcome: &Outcome, threshold: f64, min_link: Option<f64>) -> Result<usize> {
    let labels = outcome.result.clusters(threshold, min_link);
    let mut sizes: HashMap<u32, usize> = HashMap::new();
    for label in &labels {
        *sizes.entry(*label).or_insert(0) += 1;
    }
    write_atomically(path, |w| {
        w.write_record(["id", "cluster_id", "cluster_size"])?;
        for (i, label) in labels.iter().enumerate() {
            let size = sizes.get(label).copied().unwrap_or(1).to_string();
            w.write_record([outcome.ids[i].as_str(), outcome.ids[*label as usize].as_str(), size.as_str()])?;
        }
        Ok(())
    })?;
    Ok(sizes.values().filter(|&&s| s >= 2).count())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn table() -> Table {
        parse_table("id,name,mobile\nA,张伟,13812345678\nB,張偉,+86 138 1234 5678\nC,李娜,13900000000\n".as_bytes())
            .unwrap()
    }

    #[test]
    fn plan_errors() {
        let t = table();
        let cols = |c: &[&str]| c.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert!(plan(&t, "id", &cols(&["name=person_name", "mobile=phone"])).is_ok());
        let e = |id: &str, c: &[&str]| format!("{:#}", plan(&t, id, &cols(c)).unwrap_err());
        assert!(e("nope", &["name=person_name"]).contains("no column named \"nope\""));
        assert!(e("id", &["nam=person_name"]).contains("the columns are"));
        assert!(e("id", &["name=nickname"]).contains("valid kinds"));
        assert!(e("id", &["name"]).contains("NAME=KIND"));
        assert!(e("id", &["name=person_name", "name=text"]).contains("mapped twice"));
        assert!(e("id", &[]).contains("at least one column"));
        let dup = parse_table(b"id,name\nA,x\nA,y\n").unwrap();
        assert!(
            format!("{:#}", plan(&dup, "id", &cols(&["name=text"])).unwrap_err()).contains("appears on lines 2 and 3")
        );
        let empty_id = parse_table(b"id,name\n,x\n").unwrap();
        assert!(format!("{:#}", plan(&empty_id, "id", &cols(&["name=text"])).unwrap_err()).contains("is empty"));
    }

    #[test]
    fn thresholds() {
        for bad in [0.0, -0.1, 1.5, f64::NAN, f64::INFINITY] {
            assert!(check_probability("--threshold", bad, false).is_err(), "{bad}");
        }
        assert!(check_probability("--threshold", 1.0, false).is_ok());
        assert!(check_probability("--min-link", 0.0, true).is_ok());
        assert_eq!(format_score(0.9999999), "0.999999");
        assert_eq!(format_score(0.9), "0.900000");
    }

    #[test]
    fn end_to_end_on_a_generated_file() {
        use custodian_core::matching::synth;
        let data = synth::people(synth::SynthConfig { records: 600, seed: 11, duplicate_share: 0.4 });
        let dir = std::env::temp_dir().join(format!("custodian-dedupe-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let input = dir.join("records.csv");
        let mut w = csv::Writer::from_path(&input).unwrap();
        w.write_record(&data.header).unwrap();
        for row in &data.rows {
            w.write_record(row).unwrap();
        }
        w.flush().unwrap();
        let args = DedupeArgs {
            input: input.clone(),
            id_column: "id".into(),
            columns: synth::PEOPLE_COLUMNS[1..].iter().map(|(c, k)| format!("{c}={k}")).collect(),
            output: dir.join("pairs.csv"),
            threshold: 0.9,
            clusters: Some(dir.join("clusters.csv")),
            min_link: Some(0.5),
            direct_only: false,
        };
        run(args.clone()).unwrap();
        run(DedupeArgs { output: dir.join("direct.csv"), direct_only: true, ..args }).unwrap();
        let read_pairs = |name: &str| -> Vec<(String, String, f64)> {
            let text = std::fs::read_to_string(dir.join(name)).unwrap();
            let mut lines = text.lines();
            assert_eq!(lines.next(), Some("id_a,id_b,score"));
            lines
                .map(|line| {
                    let parts: Vec<&str> = line.split(',').collect();
                    (parts[0].to_owned(), parts[1].to_owned(), parts[2].parse().unwrap())
                })
                .collect()
        };
        let (pairs, direct) = (read_pairs("pairs.csv"), read_pairs("direct.csv"));
        let entity: HashMap<&str, u32> = data.rows.iter().zip(&data.entity).map(|(r, e)| (r[0].as_str(), *e)).collect();
        let (mut right, mut total) = (0, 0);
        for (a, b, score) in &pairs {
            assert!((0.9..=1.0).contains(score));
            total += 1;
            right += usize::from(entity[a.as_str()] == entity[b.as_str()]);
        }
        assert!(total > 50 && right as f64 / total as f64 > 0.95, "{right}/{total}");
        let clusters = std::fs::read_to_string(dir.join("clusters.csv")).unwrap();
        assert_eq!(clusters.lines().count(), 601);
        // The direct pairs are all written; each pair written besides them joins two records of
        // one cluster.
        let cluster_of: HashMap<&str, &str> =
            clusters.lines().skip(1).filter_map(|l| l.split(',').next().zip(l.split(',').nth(1))).collect();
        let key = |p: &(String, String, f64)| (p.0.clone(), p.1.clone());
        let direct_keys: std::collections::HashSet<_> = direct.iter().map(key).collect();
        let all_keys: std::collections::HashSet<_> = pairs.iter().map(key).collect();
        assert!(direct_keys.is_subset(&all_keys));
        for (a, b) in all_keys.difference(&direct_keys) {
            assert_eq!(cluster_of[a.as_str()], cluster_of[b.as_str()], "{a} {b}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
