//! `custodian dedupe` and `custodian linkage-bench` end to end through the built binary: a
//! generated benchmark is deduplicated, and every kind of bad input is refused with a clear
//! message, a non-zero exit and no output file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_custodian");

struct TempDir(PathBuf);
impl TempDir {
    fn new() -> Self {
        let p = std::env::temp_dir().join(format!("custodian-dedupe-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn custodian(args: &[&str]) -> Output {
    Command::new(BIN).args(args).env("CUSTODIAN_LOG", "warn").output().unwrap()
}

const PEOPLE_COLUMNS: &[&str] = &[
    "--column",
    "name=person_name",
    "--column",
    "mobile=phone",
    "--column",
    "email=email",
    "--column",
    "birth_date=date",
    "--column",
    "id_number=id_number",
    "--column",
    "company=company_name",
    "--column",
    "city=city",
    "--column",
    "address=address",
];

fn dedupe(input: &Path, output: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["dedupe", "--input", input.to_str().unwrap(), "--id-column", "id"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--output", output.to_str().unwrap()]);
    custodian(&args)
}

/// 3,000 people: the precision of a smaller sample moves by about 0.0035 (one standard error
/// at 1,500 people, some 800 pairs) with changes that leave the benchmark's unchanged.
#[test]
fn generated_benchmark_is_deduplicated_with_high_precision() {
    let dir = TempDir::new();
    let out =
        custodian(&["linkage-bench", "generate", "--people", "3000", "--seed", "5", "--out", dir.0.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let records = dir.path("records.csv");
    let pairs = dir.path("pairs.csv");
    let clusters = dir.path("clusters.csv");
    let mut extra: Vec<&str> = PEOPLE_COLUMNS.to_vec();
    extra.extend_from_slice(&["--threshold", "0.95", "--clusters", clusters.to_str().unwrap()]);
    let out = dedupe(&records, &pairs, &extra);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("3000 records"));

    let truth: std::collections::HashMap<String, String> = std::fs::read_to_string(dir.path("truth.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            let (id, entity) = l.split_once(',').unwrap();
            (id.to_owned(), entity.to_owned())
        })
        .collect();
    let text = std::fs::read_to_string(&pairs).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("id_a,id_b,score"));
    let (mut right, mut total) = (0usize, 0usize);
    let mut previous = f64::INFINITY;
    for line in lines {
        let fields: Vec<&str> = line.split(',').collect();
        let score: f64 = fields[2].parse().unwrap();
        assert!((0.95..=1.0).contains(&score), "{line}");
        assert!(score <= previous, "pairs are written best first");
        previous = score;
        total += 1;
        right += usize::from(truth[fields[0]] == truth[fields[1]]);
    }
    assert!(total > 200, "{total} pairs");
    assert!(right as f64 / total as f64 >= 0.99, "precision {right}/{total}");
    let clusters = std::fs::read_to_string(&clusters).unwrap();
    assert!(clusters.starts_with("id,cluster_id,cluster_size\n"));
    assert_eq!(clusters.lines().count(), 3001);

    let errors = dir.path("wrong.csv");
    let out =
        custodian(&["linkage-bench", "run", "--dir", dir.0.to_str().unwrap(), "--errors", errors.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report = String::from_utf8_lossy(&out.stdout);
    for needle in
        ["pair completeness", "precision", "direct-F1", "cl-F1", "B3-F1", "candidate pairs compared", "matching time"]
    {
        assert!(report.contains(needle), "{needle} missing in:\n{report}");
    }
    // The pairs got wrong, each with its fields' comparison levels.
    let wrong = std::fs::read_to_string(dir.path("people-wrong.csv")).unwrap();
    let mut lines = wrong.lines();
    assert!(lines.next().unwrap().starts_with("kind,score,levels,a.id,a.name,"));
    let rows: Vec<&str> = lines.collect();
    assert!(!rows.is_empty(), "a generated file has hard pairs");
    for row in rows {
        assert!(
            ["false_pair,", "false_implied,", "scored_below,", "not_proposed,"].iter().any(|k| row.starts_with(k)),
            "{row}"
        );
        assert!(row.contains("name="), "{row}");
    }
}

/// The quality targets of issue 4 on the project's labelled set of 5,000 people (seed 7, as the
/// closing notes report it): pairwise F1 of the pairs `dedupe` writes at its default threshold
/// at least 0.99, and a reported threshold whose directly scored pairs (those auto-merge
/// requires) have precision at least 0.995. The run is seeded, so the numbers only move when the
/// engine or the generator changes.
#[test]
fn the_labelled_benchmark_of_5000_people_meets_its_quality_targets() {
    let dir = TempDir::new();
    let out =
        custodian(&["linkage-bench", "generate", "--people", "5000", "--seed", "7", "--out", dir.0.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = custodian(&["linkage-bench", "run", "--dir", dir.0.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report = String::from_utf8_lossy(&out.stdout);
    let headline = report.lines().find(|l| l.ends_with("<- --threshold")).unwrap_or_else(|| panic!("{report}"));
    let numbers: Vec<f64> = headline.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    // threshold, precision, recall, F1, direct precision, direct recall, direct F1, ...
    assert_eq!(numbers[0], 0.9, "{headline}");
    assert!(numbers[3] >= 0.99, "F1 {} below 0.99:\n{report}", numbers[3]);
    assert!(report.contains("with direct precision >= 0.995 (auto-merge)"), "{report}");
}

/// Runs dedupe on `content` and expects a failure whose message contains every `needle`, and
/// no output file.
fn refused(content: &[u8], extra: &[&str], needles: &[&str]) {
    let dir = TempDir::new();
    let input = dir.path("in.csv");
    std::fs::write(&input, content).unwrap();
    let output = dir.path("pairs.csv");
    let out = dedupe(&input, &output, extra);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "accepted: {extra:?}");
    for needle in needles {
        assert!(stderr.contains(needle), "{needle:?} not in {stderr}");
    }
    assert!(!output.exists(), "no output on failure");
    assert!(std::fs::read_dir(&dir.0).unwrap().count() == 1, "no temporary files left behind");
}

const GOOD: &[u8] = "id,name,mobile\n1,张伟,13812345678\n2,張偉,138-1234-5678\n".as_bytes();

#[test]
fn bad_inputs_are_refused_clearly() {
    let name = &["--column", "name=person_name"];
    // GBK-encoded 张伟 (a typical Excel export in a Chinese locale).
    refused(b"id,name\n1,\xd5\xc5\xce\xb0\n2,\xd5\xc5\xce\xb0\n", name, &["not valid UTF-8", "iconv -f GBK -t UTF-8"]);
    refused(b"", name, &["empty"]);
    refused(b"id,name\n", name, &["no data rows"]);
    refused(b"id,name\n1,\"Zhang\n2,Li\n", name, &["never closed"]);
    refused(b"id,name\n1,Zh\"ang\n", name, &["quote inside an unquoted field"]);
    refused(b"id,name\n1,Zhang,extra\n", name, &["line 2 has 3 fields"]);
    let wide = format!("{}\n", vec!["c"; 1_000_000].join(","));
    refused(wide.as_bytes(), name, &["more than 2048 columns"]);
    let long = format!("id,name\n1,{}\n", "张".repeat(400_000));
    refused(long.as_bytes(), name, &["longer than"]);
    refused(GOOD, &["--column", "nom=person_name"], &["no column named \"nom\"", "\"name\""]);
    refused(GOOD, &["--column", "name=nickname"], &["unknown kind", "person_name"]);
    refused(GOOD, &["--column", "name"], &["NAME=KIND"]);
    for threshold in ["--threshold=1.5", "--threshold=0", "--threshold=-1", "--threshold=NaN", "--threshold=inf"] {
        refused(GOOD, &["--column", "name=person_name", threshold], &["--threshold"]);
    }
    refused(GOOD, &["--column", "name=person_name", "--min-link=2"], &["--min-link"]);
    refused(b"id,name\n1,a\n1,b\n", name, &["appears on lines 2 and 3"]);
}

#[test]
fn missing_input_and_id_column() {
    let dir = TempDir::new();
    let out = dedupe(&dir.path("absent.csv"), &dir.path("pairs.csv"), &["--column", "name=text"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
    let input = dir.path("in.csv");
    std::fs::write(&input, GOOD).unwrap();
    let mut args = vec!["dedupe", "--input", input.to_str().unwrap(), "--id-column", "key"];
    args.extend_from_slice(&["--column", "name=person_name", "--output", "/nonexistent-dir/pairs.csv"]);
    let out = custodian(&args);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--id-column"));
}

#[test]
fn small_file_works() {
    let dir = TempDir::new();
    let input = dir.path("in.csv");
    std::fs::write(&input, GOOD).unwrap();
    let output = dir.path("pairs.csv");
    let out =
        dedupe(&input, &output, &["--column", "name=person_name", "--column", "mobile=phone", "--threshold", "0.5"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(&output).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "id_a,id_b,score");
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[1].starts_with("1,2,"), "{text}");
}

/// `linkage-bench score` on a labelled file that is not ours: English names, entities named by
/// text, columns of other names. The numbers come from the truth given, not from our generator.
#[test]
fn any_labelled_file_is_scored() {
    let dir = TempDir::new();
    let input = dir.path("people.csv");
    std::fs::write(
        &input,
        "first,last,born,phone,rec\n\
         Margaret,Whitfield,1961-04-12,13812345678,a1\n\
         Maggie,Whitfield,1961-04-12,138 1234 5678,a2\n\
         Thomas,Okonkwo,1979-11-03,13987654321,b1\n\
         Tom,Okonkwo,1979-11-03,+86 139 8765 4321,b2\n\
         Thomas,Okonkwo,1979-11-30,13987654321,b3\n\
         Priya,Raman,1990-01-05,13700001111,c1\n\
         Lars,Eriksen,1955-07-21,13611112222,d1\n",
    )
    .unwrap();
    let truth = dir.path("truth.csv");
    std::fs::write(
        &truth,
        "id,entity\na1,whitfield\na2,whitfield\nb1,okonkwo\nb2,okonkwo\nb3,okonkwo\nc1,raman\nd1,eriksen\n",
    )
    .unwrap();
    let errors = dir.path("wrong.csv");
    let mut args = vec!["linkage-bench", "score", "--input", input.to_str().unwrap(), "--id-column", "rec"];
    for c in ["first=given_name", "last=surname", "born=date", "phone=phone"] {
        args.extend_from_slice(&["--column", c]);
    }
    args.extend_from_slice(&["--truth", truth.to_str().unwrap(), "--threshold", "0.5"]);
    let with_errors = [args.clone(), vec!["--errors", errors.to_str().unwrap()]].concat();
    let out = custodian(&with_errors);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains("7 records, 4 true duplicate pairs"), "{report}");
    assert!(report.contains("pair completeness 1.0000"), "{report}");
    // Every true pair shares the phone number and the birth date or surname: all found, none
    // wrong, so the errors file holds its header only.
    let headline = report.lines().find(|l| l.contains("<- --threshold")).unwrap();
    let cells: Vec<&str> = headline.split_whitespace().collect();
    assert_eq!(&cells[1..4], ["1.0000", "1.0000", "1.0000"], "{report}");
    let wrong = std::fs::read_to_string(&errors).unwrap();
    assert_eq!(wrong.lines().count(), 1, "{wrong}");
    assert!(wrong.starts_with("kind,score,levels,a.first,a.last,a.born,a.phone,a.rec,b.first,"), "{wrong}");
    // `--model` adds the fitted model: each field with its kind and how many records hold it,
    // m and u of every level (each a distribution), and the EM runs.
    let out = custodian(&[args.clone(), vec!["--model"]].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report = String::from_utf8_lossy(&out.stdout);
    let model: Vec<&str> = report.lines().skip_while(|l| !l.trim_start().starts_with("model: prior")).collect();
    assert!(!model.is_empty(), "{report}");
    for field in ["first (given_name)", "last (surname)", "born (date)", "phone (phone)"] {
        assert!(model.iter().any(|l| l.trim() == format!("{field}, present in 7 records")), "{report}");
    }
    let phone: Vec<&str> = model
        .iter()
        .skip_while(|l| !l.contains("phone (phone)"))
        .skip(1)
        .take_while(|l| l.starts_with("      "))
        .copied()
        .collect();
    let levels: Vec<&str> = phone.iter().filter_map(|l| l.split_whitespace().next()).collect();
    assert_eq!(levels, ["different", "partial", "one_typo", "exact"], "{report}");
    let column = |name: &str| -> f64 {
        phone
            .iter()
            .map(|l| {
                let cells: Vec<&str> = l.split_whitespace().collect();
                let at = cells.iter().position(|c| *c == name).unwrap();
                cells[at + 1].parse::<f64>().unwrap()
            })
            .sum()
    };
    assert!((column("m") - 1.0).abs() < 1e-3 && (column("u") - 1.0).abs() < 1e-3, "{report}");
    assert!(model.iter().any(|l| l.trim_start().starts_with("EM without [")), "{report}");
    // At a threshold no pair reaches, every true pair is listed, each with both records' values
    // (the id column need not come first).
    let strict = [args.clone(), vec!["--errors", errors.to_str().unwrap()]].concat();
    let strict: Vec<&str> = strict.iter().map(|a| if *a == "0.5" { "0.999999" } else { a }).collect();
    let out = custodian(&strict);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let wrong = std::fs::read_to_string(&errors).unwrap();
    let rows: Vec<&str> = wrong.lines().skip(1).collect();
    assert!(!rows.is_empty(), "{wrong}");
    for row in rows {
        assert!(row.starts_with("scored_below,"), "{row}");
        assert!(row.contains("Whitfield") || row.contains("Okonkwo"), "{row}");
    }

    // A truth that misses a record, or names one twice, is refused.
    std::fs::write(&truth, "id,entity\na1,x\na2,x\n").unwrap();
    let out = custodian(&args);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not in"), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::write(&truth, "id,entity\na1,x\na1,y\n").unwrap();
    let out = custodian(&args);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("appears twice"), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::write(&truth, "id,entity\na1,x\na2,\n").unwrap();
    let out = custodian(&args);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("empty entity"), "{}", String::from_utf8_lossy(&out.stderr));
}
