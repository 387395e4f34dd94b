//! Bad evidence: truncated, garbled or forged checkpoint files, wrong keys, forged and garbage
//! proofs, and several servers writing checkpoints for one database. Never a panic, never
//! "intact" for something that does not hold.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Fixture, draft, postgres_fixture, sqlite_fixture};
use custodian_audit::checkpoint::{Checkpoint, SignedCheckpoint, append_checkpoint};
use custodian_audit::proof::{ProofEvent, ProveError};
use custodian_audit::{
    AuditSigningKey, CheckpointWriter, InclusionProof, VerifyStatus, WriterConfig, build_proof, check_proof,
    read_checkpoint_file, verify_store,
};
use custodian_store::{CheckpointClaimOutcome, CheckpointClaimRequest, Store, now_micros};
use proptest::prelude::*;
use std::sync::Arc;
use std::time::Duration;

async fn with_checkpoints(f: &Fixture, events: usize, every: i64) {
    f.populate(events).await;
    f.checkpoint(every).await;
}

#[tokio::test]
async fn checkpoint_file_truncated_mid_line_is_reported() {
    let f = sqlite_fixture().await.unwrap();
    with_checkpoints(&f, 30, 10).await;
    let len = std::fs::metadata(&f.file).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&f.file).unwrap().set_len(len - 40).unwrap();
    let report = f.verify().await;
    assert_eq!(report.status(), VerifyStatus::EvidenceProblem, "{}", report.render());
    let text = report.render();
    assert!(text.contains(":3: the file ends in the middle of this line"), "{text}");
    assert_eq!(report.checkpoints_verified, 2);
    assert!(text.contains("result: NOT VERIFIED"));
}

#[tokio::test]
async fn checkpoint_file_missing_its_last_lines_is_reported() {
    let f = sqlite_fixture().await.unwrap();
    with_checkpoints(&f, 30, 10).await;
    let text = std::fs::read_to_string(&f.file).unwrap();
    let first_line: String = text.lines().next().unwrap().to_owned() + "\n";
    std::fs::write(&f.file, first_line).unwrap();
    let report = f.verify().await;
    // The log is intact; the file lost checkpoints the servers recorded writing.
    assert_eq!(report.status(), VerifyStatus::Intact, "{}", report.render());
    assert!(report.render().contains("2 checkpoint(s) recorded in the database are in none of the given files"));
    // Without any checkpoint file at all, yet with records of written checkpoints: not verified.
    std::fs::remove_file(&f.file).unwrap();
    let report = f.verify().await;
    assert_eq!(report.status(), VerifyStatus::EvidenceProblem, "{}", report.render());
    assert!(report.render().contains("no checkpoint file was found"));
}

#[tokio::test]
async fn a_wrong_public_key_is_reported_as_such() {
    let f = sqlite_fixture().await.unwrap();
    with_checkpoints(&f, 12, 10).await;
    let other = AuditSigningKey::generate().unwrap().public();
    let report = f.verify_with(&[other]).await;
    assert_eq!(report.status(), VerifyStatus::EvidenceProblem, "{}", report.render());
    let text = report.render();
    assert!(text.contains("not a trusted public key"), "{text}");
    assert!(text.contains("the --public-key given is not the key that signed"), "{text}");
    assert!(text.contains(&f.public().key_id().to_string()), "the signing key id is named: {text}");
}

#[tokio::test]
async fn a_checkpoint_altered_after_signing_is_reported() {
    let f = sqlite_fixture().await.unwrap();
    with_checkpoints(&f, 20, 10).await;
    let text = std::fs::read_to_string(&f.file).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let mut v: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
    v["to"] = 19.into();
    lines[1] = v.to_string();
    std::fs::write(&f.file, lines.join("\n") + "\n").unwrap();
    let report = f.verify().await;
    assert_eq!(report.status(), VerifyStatus::EvidenceProblem, "{}", report.render());
    assert!(report.render().contains(":2: the signature does not verify"), "{}", report.render());
}

#[tokio::test]
async fn an_attacker_resigning_a_rewritten_tail_with_another_key_is_caught() {
    let f = sqlite_fixture().await.unwrap();
    with_checkpoints(&f, 30, 10).await;
    f.drop_guards().await;
    f.rechain_from(21, (0..10).map(|i| draft(500 + i)).collect()).await;
    // The attacker signs new checkpoints for the forged tail with a key of their own, and
    // appends them to the file.
    let rows = f.rows().await;
    let forged_key = AuditSigningKey::generate().unwrap();
    let leaves: Vec<_> = rows[20..30].iter().map(|r| custodian_core::audit::merkle_leaf(r.seq, &r.hash)).collect();
    let forged = Checkpoint {
        log_id: rows[0].hash.clone().try_into().unwrap(),
        seq_from: 21,
        seq_to: 30,
        prev_head: rows[19].hash.clone().try_into().unwrap(),
        head: rows[29].hash.clone().try_into().unwrap(),
        root: custodian_core::audit::merkle_root(&leaves).unwrap(),
        at: now_micros(),
    }
    .sign(&forged_key);
    // Claiming the trusted key's id does not help either.
    let claiming = SignedCheckpoint { key_id: f.public().key_id(), ..forged.clone() };
    append_checkpoint(&f.file, &forged).unwrap();
    append_checkpoint(&f.file, &claiming).unwrap();
    let report = f.verify().await;
    assert_eq!(report.status(), VerifyStatus::Tampered, "{}", report.render());
    assert_eq!(report.first_bad.as_ref().unwrap().seq, 21);
    assert_eq!(report.checkpoint_problems.len(), 2, "{}", report.render());
}

#[tokio::test]
async fn garbage_checkpoint_files_are_reported_not_trusted() {
    let f = sqlite_fixture().await.unwrap();
    f.populate(5).await;
    let garbage: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::create_dir_all(f.file.parent().unwrap()).unwrap();
    for bytes in [garbage.as_slice(), b"{}\n[]\nnull\n", b"{\"v\":1}\n", b"\n\n\n"] {
        std::fs::write(&f.file, bytes).unwrap();
        let report = f.verify().await;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            assert_eq!(report.status(), VerifyStatus::Intact);
        } else {
            assert_eq!(report.status(), VerifyStatus::EvidenceProblem, "{}", report.render());
            assert!(!report.checkpoint_problems.is_empty());
        }
    }
}

#[tokio::test]
async fn checkpoints_of_another_log_are_told_apart() {
    let a = sqlite_fixture().await.unwrap();
    let b = sqlite_fixture().await.unwrap();
    with_checkpoints(&a, 12, 10).await;
    b.populate(7).await;
    let other = CheckpointWriter::new(
        b.store.clone(),
        a.key(),
        WriterConfig::new(a.file.clone(), 10, Duration::from_secs(3600)),
    );
    other.write_due(true).await.unwrap();
    let report = a.verify().await;
    assert_eq!(report.status(), VerifyStatus::Intact, "{}", report.render());
    assert_eq!((report.checkpoints_verified, report.checkpoints_other_logs), (2, 1));
    let files = vec![read_checkpoint_file(&a.file).unwrap()];
    let report = verify_store(b.store.as_ref(), &files, &[a.public()]).await.unwrap();
    assert_eq!(report.status(), VerifyStatus::Intact, "{}", report.render());
    assert_eq!((report.checkpoints_verified, report.checkpoints_other_logs), (1, 2));
}

#[tokio::test]
async fn two_histories_signed_by_one_key_are_reported() {
    let f = sqlite_fixture().await.unwrap();
    with_checkpoints(&f, 10, 10).await;
    let line = std::fs::read_to_string(&f.file).unwrap();
    let mut c = SignedCheckpoint::from_line(line.trim()).unwrap().checkpoint;
    c.head = [9; 32];
    append_checkpoint(&f.file, &c.sign(&f.key())).unwrap();
    let report = f.verify().await;
    assert_ne!(report.status(), VerifyStatus::Intact, "{}", report.render());
    assert!(report.render().contains("two histories were signed"), "{}", report.render());
}

// ---- proofs ------------------------------------------------------------------------------

async fn proofs_round_trip(f: Fixture) {
    with_checkpoints(&f, 37, 10).await;
    let files = f.files();
    let keys = [f.public()];
    for seq in 1..=37 {
        let proof = build_proof(f.store.as_ref(), &files, &keys, seq, false).await.unwrap();
        let text = proof.to_json().to_string();
        assert!(text.len() < 2048, "proof of {seq} is {} bytes", text.len());
        let parsed = InclusionProof::parse(text.as_bytes()).unwrap();
        assert_eq!(parsed, proof);
        let ok = check_proof(&parsed, &keys).unwrap();
        assert_eq!(ok.seq, seq);
        assert!(ok.summary.unwrap().starts_with("record."));
        let hash_only = build_proof(f.store.as_ref(), &files, &keys, seq, true).await.unwrap();
        assert!(check_proof(&hash_only, &keys).is_ok());
        assert_eq!(hash_only.event.hash(), proof.event.hash());
    }
    f.populate(1).await;
    assert!(matches!(
        build_proof(f.store.as_ref(), &files, &keys, 38, false).await,
        Err(ProveError::NotCovered { seq: 38, .. })
    ));
    assert!(matches!(build_proof(f.store.as_ref(), &files, &keys, 99, false).await, Err(ProveError::NoSuchEvent(99))));
    // Proving from a tampered range is refused.
    f.drop_guards().await;
    f.set_body(15, "{\"forged\":true}").await;
    let err = build_proof(f.store.as_ref(), &files, &keys, 12, false).await.unwrap_err();
    assert!(matches!(err, ProveError::Mismatch(_)), "{err}");
    assert!(err.to_string().contains("the chain is broken at event 15"), "{err}");
}

#[tokio::test]
async fn proofs_round_trip_on_sqlite() {
    proofs_round_trip(sqlite_fixture().await.unwrap()).await;
}

#[tokio::test]
async fn proofs_round_trip_on_postgres() {
    if let Some(f) = postgres_fixture().await {
        proofs_round_trip(f).await;
    }
}

#[tokio::test]
async fn forged_proofs_are_refused() {
    let f = sqlite_fixture().await.unwrap();
    with_checkpoints(&f, 20, 20).await;
    let keys = [f.public()];
    let proof = build_proof(f.store.as_ref(), &f.files(), &keys, 6, false).await.unwrap();
    check_proof(&proof, &keys).unwrap();
    let ProofEvent::Full { seq, prev_hash, body } = proof.event.clone() else { panic!() };
    let with_event = |event| InclusionProof { event, ..proof.clone() };
    let mut forgeries = vec![
        ("edited body", with_event(ProofEvent::Full { seq, prev_hash, body: body.replace("record.", "rec0rd.") })),
        ("other seq", with_event(ProofEvent::Full { seq: seq + 1, prev_hash, body: body.clone() })),
        ("other prev", with_event(ProofEvent::Full { seq, prev_hash: [1; 32], body: body.clone() })),
        ("other hash", with_event(ProofEvent::HashOnly { seq, hash: [2; 32] })),
        ("outside range", with_event(ProofEvent::Full { seq: 21, prev_hash, body: body.clone() })),
    ];
    let mut path = proof.clone();
    path.path[0][5] ^= 0x40;
    forgeries.push(("altered path", path));
    let mut short = proof.clone();
    short.path.pop();
    forgeries.push(("short path", short));
    let mut long = proof.clone();
    long.path.push([3; 32]);
    forgeries.push(("long path", long));
    let mut root = proof.clone();
    root.checkpoint.checkpoint.root = [4; 32];
    forgeries.push(("altered root", root));
    let attacker = AuditSigningKey::generate().unwrap();
    let mut resigned = proof.clone();
    resigned.checkpoint = resigned.checkpoint.checkpoint.clone().sign(&attacker);
    forgeries.push(("signed by another key", resigned.clone()));
    resigned.checkpoint.key_id = f.public().key_id();
    forgeries.push(("another key claiming the trusted id", resigned));
    for (what, forged) in forgeries {
        assert!(check_proof(&forged, &keys).is_err(), "{what} must be refused");
        // And through the JSON form.
        let reparsed = InclusionProof::parse(forged.to_json().to_string().as_bytes());
        assert!(reparsed.is_err() || check_proof(&reparsed.unwrap(), &keys).is_err(), "{what}");
    }
    // A valid proof with the wrong key: refused, naming the key.
    let wrong = check_proof(&proof, &[attacker.public()]).unwrap_err();
    assert!(wrong.contains("not a trusted public key"), "{wrong}");
}

#[test]
fn garbage_proofs_are_refused_precisely() {
    for (bytes, expected) in [
        (&b""[..], "empty"),
        (b"\xff\xfe", "not UTF-8"),
        (b"{", "not a proof"),
        (b"[]", "not a proof"),
        (b"{\"v\":1}", "not a proof"),
        (b"{\"v\":2,\"event\":{\"seq\":1,\"hash\":\"00\"},\"path\":[],\"checkpoint\":{}}", "version 2"),
        (b"{\"v\":1,\"event\":{\"seq\":1},\"path\":[],\"checkpoint\":{}}", "either"),
        (b"{\"v\":1,\"event\":{\"seq\":1,\"hash\":\"zz\"},\"path\":[],\"checkpoint\":{}}", "not hex"),
        (b"{\"v\":1,\"event\":{\"seq\":1,\"hash\":\"00\"},\"path\":[],\"checkpoint\":{}}", "1 bytes"),
    ] {
        let err = InclusionProof::parse(bytes).unwrap_err();
        assert!(err.contains(expected), "{:?}: {err}", String::from_utf8_lossy(bytes));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = InclusionProof::parse(&bytes);
        let _ = custodian_audit::checkpoint::parse_checkpoint_file(std::path::Path::new("x"), &bytes);
    }

    #[test]
    fn mutated_proofs_never_verify(position in 0usize..2000, byte in any::<u8>()) {
        let key = AuditSigningKey::from_hex(&"11".repeat(32)).unwrap();
        let proof = sample_proof(&key);
        let mut text = proof.to_json().to_string().into_bytes();
        let i = position % text.len();
        prop_assume!(text[i] != byte);
        text[i] = byte;
        if let Ok(p) = InclusionProof::parse(&text) {
            // A mutation may only survive where it changes nothing that is checked.
            if check_proof(&p, &[key.public()]).is_ok() {
                prop_assert_eq!(p, proof);
            }
        }
    }
}

/// A proof of event 3 of 5 built without a database.
fn sample_proof(key: &AuditSigningKey) -> InclusionProof {
    use custodian_core::audit::{GENESIS_HASH, chain_hash, merkle_leaf, merkle_path, merkle_root};
    let bodies: Vec<String> = (0..5).map(|i| draft(i).canonical_body()).collect();
    let mut prev = GENESIS_HASH;
    let mut hashes = Vec::new();
    for (seq, b) in (1..).zip(&bodies) {
        prev = chain_hash(&prev, seq, b.as_bytes());
        hashes.push(prev);
    }
    let leaves: Vec<_> = (1..).zip(&hashes).map(|(s, h)| merkle_leaf(s, h)).collect();
    let checkpoint = Checkpoint {
        log_id: hashes[0],
        seq_from: 1,
        seq_to: 5,
        prev_head: GENESIS_HASH,
        head: hashes[4],
        root: merkle_root(&leaves).unwrap(),
        at: 1,
    }
    .sign(key);
    InclusionProof {
        event: ProofEvent::Full { seq: 3, prev_hash: hashes[1], body: bodies[2].clone() },
        path: merkle_path(&leaves, 2).unwrap(),
        checkpoint,
    }
}

// ---- several servers -------------------------------------------------------------------------

/// Two servers on one PostgreSQL database, each with its own key and its own file, writing
/// checkpoints while both append: every range is written once, and both files together verify.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn several_servers_write_each_range_once() {
    let Some(f) = postgres_fixture().await else { return };
    let second: Arc<dyn Store> =
        Arc::new(custodian_store_postgres::PostgresStore::connect_with_pool_size(&f.raw_url, 4).await.unwrap());
    let key_b = AuditSigningKey::generate().unwrap();
    let public_b = key_b.public();
    let file_b = f.dir.path().join("server-b.log");
    let writer_a = Arc::new(f.writer(5));
    let writer_b = Arc::new(CheckpointWriter::new(
        second.clone(),
        key_b,
        WriterConfig::new(file_b.clone(), 5, Duration::from_secs(3600)),
    ));
    let mut tasks = Vec::new();
    for round in 0..6 {
        for (store, writer) in [(f.store.clone(), writer_a.clone()), (second.clone(), writer_b.clone())] {
            tasks.push(tokio::spawn(async move {
                store.append_audit((0..4).map(|i| draft(round * 10 + i)).collect()).await.unwrap();
                writer.write_due(false).await.unwrap()
            }));
        }
    }
    let mut written = Vec::new();
    for t in tasks {
        written.extend(t.await.unwrap());
    }
    written.extend(writer_b.write_due(true).await.unwrap());
    let mut ranges: Vec<_> = written.iter().map(|s| (s.checkpoint.seq_from, s.checkpoint.seq_to)).collect();
    ranges.sort();
    let mut next = 1;
    for (from, to) in &ranges {
        assert_eq!(*from, next, "each range once, none skipped: {ranges:?}");
        next = to + 1;
    }
    assert_eq!(next, 49);
    let files = vec![read_checkpoint_file(&f.file).unwrap(), read_checkpoint_file(&file_b).unwrap()];
    let report = verify_store(f.store.as_ref(), &files, &[f.public(), public_b]).await.unwrap();
    assert_eq!(report.status(), VerifyStatus::Intact, "{}", report.render());
    assert_eq!(report.checkpoints_verified, ranges.len());
    assert_eq!(report.signing_keys.len(), 2);
}

/// A writer that dies holding a claim: after the lease another takes over; if the first one
/// finishes after all, the duplicate checkpoint verifies too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_claim_taken_over_gives_duplicates_that_verify() {
    let Some(f) = postgres_fixture().await else { return };
    f.populate(8).await;
    let request = |claimant: &str| CheckpointClaimRequest {
        claimant: claimant.into(),
        max_events: 10,
        every_micros: 0,
        lease_micros: 60_000_000,
        now: now_micros(),
    };
    let CheckpointClaimOutcome::Claimed(range) = f.store.claim_audit_checkpoint(request("slow")).await.unwrap() else {
        panic!("nothing claimed")
    };
    let key_b = AuditSigningKey::generate().unwrap();
    let public_b = key_b.public();
    let file_b = f.dir.path().join("server-b.log");
    let mut config = WriterConfig::new(file_b.clone(), 10, Duration::from_secs(3600));
    config.lease = Duration::ZERO;
    let taker = CheckpointWriter::new(f.store.clone(), key_b, config);
    let taken = taker.write_due(true).await.unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!((taken[0].checkpoint.seq_from, taken[0].checkpoint.seq_to), (range.seq_from, range.seq_to));
    // The slow writer finishes after all.
    f.writer(10).write_range(range).await.unwrap();
    let files = vec![read_checkpoint_file(&f.file).unwrap(), read_checkpoint_file(&file_b).unwrap()];
    let report = verify_store(f.store.as_ref(), &files, &[f.public(), public_b]).await.unwrap();
    assert_eq!(report.status(), VerifyStatus::Intact, "{}", report.render());
    assert_eq!(report.checkpoints_verified, 2);
}
