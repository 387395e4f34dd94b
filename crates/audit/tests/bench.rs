//! Benchmarks (ignored by default): `custodian audit verify` over a million events must take
//! under 5 s on 2 cores, and an inclusion proof must stay under 2 KB.
//!
//! ```text
//! cargo test --release -p custodian-audit --test bench -- --ignored --nocapture
//! CUSTODIAN_BENCH_AUDIT_EVENTS=200000 …                 # fewer events
//! CUSTODIAN_BENCH_AUDIT_DIR=/tmp/bench/data …           # keep a SQLite data dir for timing the CLI:
//!   custodian audit verify --data-dir /tmp/bench/data
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::draft;
use custodian_audit::{
    AuditSigningKey, CheckpointWriter, VerifyStatus, WriterConfig, build_proof, check_proof, read_checkpoint_file,
    verify_store,
};
use custodian_store::Store;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn events() -> usize {
    std::env::var("CUSTODIAN_BENCH_AUDIT_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000)
}

async fn run(name: &str, store: Arc<dyn Store>, file: PathBuf, key_path: PathBuf) {
    let n = events();
    let key = AuditSigningKey::load_or_create(&key_path).unwrap().0;
    let public = key.public();
    let started = Instant::now();
    let mut i = 0;
    let mut body_bytes = 0usize;
    while i < n {
        let batch: Vec<_> = (i..(i + 5000).min(n)).map(draft).collect();
        body_bytes += batch.iter().map(|d| d.canonical_body().len()).sum::<usize>();
        i += batch.len();
        store.append_audit(batch).await.unwrap();
    }
    eprintln!(
        "[{name}] appended {n} events (mean body {} bytes) in {:.1} s",
        body_bytes / n.max(1),
        started.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    let writer =
        CheckpointWriter::new(store.clone(), key, WriterConfig::new(file.clone(), 1000, Duration::from_secs(10)));
    let written = writer.write_due(true).await.unwrap();
    eprintln!(
        "[{name}] wrote {} checkpoints in {:.1} s ({} bytes of checkpoint file)",
        written.len(),
        started.elapsed().as_secs_f64(),
        std::fs::metadata(&file).unwrap().len()
    );

    let files = vec![read_checkpoint_file(&file).unwrap()];
    let mut best = f64::MAX;
    for round in 0..3 {
        let (started, cpu_before) = (Instant::now(), process_cpu_seconds());
        let report = verify_store(store.as_ref(), &files, std::slice::from_ref(&public)).await.unwrap();
        let secs = started.elapsed().as_secs_f64();
        let cpu = process_cpu_seconds() - cpu_before;
        best = best.min(secs);
        assert_eq!(report.status(), VerifyStatus::Intact, "{}", report.render());
        assert_eq!(report.events as usize, n);
        eprintln!(
            "[{name}] verify round {round}: {n} events, {} checkpoints in {secs:.2} s ({:.0} events/s; this \
             process used {cpu:.2} s of CPU)",
            report.checkpoints_verified,
            n as f64 / secs
        );
    }
    eprintln!("[{name}] verify best: {best:.2} s for {n} events (target < 5 s on 2 cores)");

    let mut largest = 0;
    let mut largest_without_body = 0;
    for seq in [1, 2, 500, 999, 1000, 1001, n as i64 / 2, n as i64 - 1, n as i64] {
        let proof = build_proof(store.as_ref(), &files, std::slice::from_ref(&public), seq, false).await.unwrap();
        let size = proof.to_json().to_string().len();
        let hash_only = build_proof(store.as_ref(), &files, std::slice::from_ref(&public), seq, true).await.unwrap();
        let size_hash_only = hash_only.to_json().to_string().len();
        check_proof(&proof, std::slice::from_ref(&public)).unwrap();
        check_proof(&hash_only, std::slice::from_ref(&public)).unwrap();
        largest = largest.max(size);
        largest_without_body = largest_without_body.max(size_hash_only);
        assert!(size < 2048, "proof of {seq}: {size} bytes");
    }
    eprintln!(
        "[{name}] largest inclusion proof: {largest} bytes with the event body, {largest_without_body} bytes hash-only \
         (target < 2048)"
    );
    assert!(best < 5.0 || cfg!(debug_assertions), "verify took {best:.2} s");
}

/// User + system CPU time of this process (Linux; 0 elsewhere).
fn process_cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return 0.0 };
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or_default().split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: cargo test --release -p custodian-audit --test bench -- --ignored --nocapture"]
async fn verify_and_prove_at_scale_on_sqlite() {
    if let Ok(dir) = std::env::var("CUSTODIAN_BENCH_AUDIT_DIR") {
        // The locations `custodian audit verify --data-dir DIR` looks at by default.
        let dir = PathBuf::from(dir);
        std::fs::create_dir_all(&dir).unwrap();
        let dir = std::fs::canonicalize(dir).unwrap();
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let beside = |suffix: &str| dir.parent().unwrap().join(format!("{name}.{suffix}"));
        let store = custodian_store_sqlite::SqliteStore::open(&dir.join("custodian.db")).await.unwrap();
        run("sqlite", Arc::new(store), beside("audit-checkpoints.log"), beside("audit-signing.key")).await;
        return;
    }
    let f = common::sqlite_fixture().await.unwrap();
    run("sqlite", f.store.clone(), f.file.clone(), f.key_path.clone()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: cargo test --release -p custodian-audit --test bench -- --ignored --nocapture"]
async fn verify_and_prove_at_scale_on_postgres() {
    let Some(f) = common::postgres_fixture().await else { return };
    run("postgres", f.store.clone(), f.file.clone(), f.key_path.clone()).await;
}
