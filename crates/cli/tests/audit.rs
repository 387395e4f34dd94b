//! `custodian audit …` end to end on SQLite: a server writes signed checkpoints (a last one at
//! shutdown) beside the data directory; `audit verify` exits 0 on the intact log and 2 naming
//! the first bad sequence number once the database file is tampered with; `audit prove` and
//! `audit check-proof` work, the latter without the database; bad evidence exits non-zero.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_custodian");

struct TempDir(PathBuf);
impl TempDir {
    fn new() -> Self {
        let p = std::env::temp_dir().join(format!("custodian-audit-cli-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(["--log-format", "text"])
        .args(args)
        .env_remove("CUSTODIAN_MASTER_KEY")
        .env_remove("CUSTODIAN_DATABASE_URL")
        .env_remove("CUSTODIAN_CHECKPOINT_FILE")
        .env_remove("CUSTODIAN_AUDIT_SIGNING_KEY")
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn create_user(data: &str, name: &str) {
    let mut child = Command::new(BIN)
        .args(["user", "create", "--data-dir", data, "--username", name, "--role", "sales_rep", "--password-stdin"])
        .env_remove("CUSTODIAN_MASTER_KEY")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"a long enough password 1\n").unwrap();
    assert!(child.wait().unwrap().success());
}

/// Starts a server (which writes its first checkpoint at once and, with T = 1 h, the next one
/// only at shutdown), makes it audit a failed login, then stops it with SIGTERM and waits.
fn serve_and_stop(data: &Path) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = Command::new(BIN)
        .args(["serve", "--data-dir", data.to_str().unwrap(), "--listen", &format!("127.0.0.1:{port}")])
        .args(["--checkpoint-every-secs", "3600"])
        .env("CUSTODIAN_ADMIN_PASSWORD", "correct horse battery staple 9")
        .env_remove("CUSTODIAN_MASTER_KEY")
        .env_remove("CUSTODIAN_DATABASE_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let body = r#"{"username":"admin","password":"wrong password here"}"#;
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    let _ = std::io::Read::read_to_string(&mut s, &mut out);
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "server did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn verify_prove_and_tamper_end_to_end() {
    let root = TempDir::new();
    let data = root.0.join("data");
    let d = data.to_str().unwrap();
    create_user(d, "bob");
    serve_and_stop(&data);
    // Defaults: beside the data directory, not inside it.
    let checkpoints = root.0.join("data.audit-checkpoints.log");
    let public = root.0.join("data.audit-signing.key.pub");
    assert!(checkpoints.exists() && public.exists() && root.0.join("data.audit-signing.key").exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(root.0.join("data.audit-signing.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // The database and its WAL (which a stopped server may leave behind), byte for byte; an
    // absent WAL holds what an empty one does (a reader of a WAL database may create it empty).
    let files = || -> Vec<Vec<u8>> {
        ["custodian.db", "custodian.db-wal"].iter().map(|f| std::fs::read(data.join(f)).unwrap_or_default()).collect()
    };
    let before = files();
    let ok = run(&["audit", "verify", "--data-dir", d]);
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok));
    assert!(text(&ok).contains("result: INTACT"));
    // The shutdown checkpoint covers every event.
    assert!(!text(&ok).contains("not yet covered"), "{}", text(&ok));

    let proof = root.0.join("proof.json");
    let out = run(&["audit", "prove", "2", "--data-dir", d, "--output", proof.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(std::fs::metadata(&proof).unwrap().len() < 2048);
    // Checking the evidence leaves it as it was: the database is opened read-only.
    assert!(files() == before, "verify or prove changed the database file or its WAL");
    let p = proof.to_str().unwrap();
    let pk = public.to_str().unwrap();
    let checked = run(&["audit", "check-proof", p, "--public-key", pk]);
    assert_eq!(checked.status.code(), Some(0), "{}", text(&checked));
    assert!(text(&checked).starts_with("VALID: event 2"), "{}", text(&checked));

    // A forged proof, garbage, a wrong key.
    let original = std::fs::read_to_string(&proof).unwrap();
    let forged = original
        .replace("user.create", "user.delete")
        .replace("auth.login_failed", "auth.login_worked")
        .replace("key.create", "key.delete");
    assert_ne!(forged, original, "the forgery must change the proven event");
    std::fs::write(root.0.join("forged.json"), forged).unwrap();
    std::fs::write(root.0.join("garbage.json"), b"\x00\xffnot a proof").unwrap();
    for f in ["forged.json", "garbage.json"] {
        let out = run(&["audit", "check-proof", root.0.join(f).to_str().unwrap(), "--public-key", pk]);
        assert_eq!(out.status.code(), Some(2), "{f}: {}", text(&out));
        assert!(text(&out).starts_with("INVALID: "), "{}", text(&out));
    }

    // A checkpoint file cut in the middle of its last line: reported, not intact.
    let full = std::fs::read(&checkpoints).unwrap();
    let cut = root.0.join("cut.log");
    std::fs::write(&cut, &full[..full.len() - 20]).unwrap();
    let out = run(&["audit", "verify", "--data-dir", d, "--checkpoint-file", cut.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("ends in the middle of this line"), "{}", text(&out));

    // The attacker with file access: drops the guards, edits the failed login, deletes the last
    // event.
    let (failed, last): (i64, i64) = {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            use sqlx::Connection;
            let url = format!("sqlite://{}", data.join("custodian.db").display());
            let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
            let failed: i64 = sqlx::query_scalar("SELECT seq FROM audit_events WHERE action = 'auth.login_failed'")
                .fetch_one(&mut c)
                .await
                .unwrap();
            for sql in [
                "DROP TRIGGER audit_events_no_update".to_owned(),
                "DROP TRIGGER audit_events_no_delete".to_owned(),
                // The attacker makes the failed login look like a success.
                format!("UPDATE audit_events SET body = replace(body, 'auth.login_failed', 'auth.login') WHERE seq = {failed}"),
            ] {
                sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut c).await.unwrap();
            }
            (failed, sqlx::query_scalar("SELECT max(seq) FROM audit_events").fetch_one(&mut c).await.unwrap())
        })
    };
    let out = run(&["audit", "verify", "--data-dir", d]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains(&format!("FIRST BAD SEQUENCE NUMBER: {failed}")), "{}", text(&out));
    // The proof made before still checks (it is about the event as it was signed) …
    assert_eq!(run(&["audit", "check-proof", p, "--public-key", pk]).status.code(), Some(0));
    // … but no new proof is issued from the tampered range.
    let out = run(&["audit", "prove", &failed.to_string(), "--data-dir", d]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        use sqlx::Connection;
        let url = format!("sqlite://{}", data.join("custodian.db").display());
        let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
        let original = format!(
            "UPDATE audit_events SET body = replace(body, 'auth.login', 'auth.login_failed') WHERE seq = {failed}"
        );
        sqlx::query(sqlx::AssertSqlSafe(original)).execute(&mut c).await.unwrap();
        let truncate = format!("DELETE FROM audit_events WHERE seq = {last}");
        sqlx::query(sqlx::AssertSqlSafe(truncate)).execute(&mut c).await.unwrap();
    });
    let out = run(&["audit", "verify", "--data-dir", d]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains(&format!("FIRST BAD SEQUENCE NUMBER: {last}")), "{}", text(&out));

    // Verifying a directory without a database is an error, not an empty "intact" log.
    let out = run(&["audit", "verify", "--data-dir", root.0.join("nothing").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(!root.0.join("nothing").exists());
}
