//! The `custodian` binary end to end: first start, offline user creation, durability of
//! acknowledged writes across kill -9, graceful shutdown; the administration commands also on
//! PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_custodian");

/// A data directory inside its own temporary directory: the server keeps its audit checkpoint
/// file and signing key beside the data directory, and they must be cleaned up too.
struct TempDir(PathBuf);
impl TempDir {
    fn new() -> Self {
        let root = std::env::temp_dir().join(format!("custodian-cli-{}", uuid::Uuid::new_v4().simple()));
        let data = root.join("data");
        std::fs::create_dir_all(&data).unwrap();
        TempDir(data)
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        if let Some(root) = self.0.parent() {
            let _ = std::fs::remove_dir_all(root);
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A minimal HTTP/1.1 client (one request per connection).
fn http(port: u16, method: &str, path: &str, token: Option<&str>, body: Option<&Value>) -> (u16, Value) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()).unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status: u16 = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    let json =
        text.split_once("\r\n\r\n").map(|(_, b)| serde_json::from_str(b).unwrap_or(Value::Null)).unwrap_or(Value::Null);
    (status, json)
}

struct Server {
    child: Child,
    port: u16,
    stdout: BufReader<std::process::ChildStdout>,
}

/// Where the commands keep their data: SQLite in `dir`, or the PostgreSQL database `url` (the
/// master key file and the audit checkpoints stay in and beside `dir`).
struct Target {
    dir: PathBuf,
    url: Option<String>,
}

impl Target {
    fn sqlite(dir: &Path) -> Target {
        Target { dir: dir.to_owned(), url: None }
    }

    /// The store options every command takes.
    fn args(&self) -> Vec<String> {
        let mut args = vec!["--data-dir".to_owned(), self.dir.to_str().unwrap().to_owned()];
        if let Some(url) = &self.url {
            args.extend(["--database-url".to_owned(), url.clone()]);
        }
        args
    }
}

/// A fresh PostgreSQL database for `dir`, or `None` when PostgreSQL is not reachable and not
/// required (the store tests' helper says so on stderr). The guard drops the database.
fn postgres_target(dir: &Path) -> Option<(Target, custodian_store_tests::PgTestDb)> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (store, db) = rt.block_on(custodian_store_tests::postgres_test_store())?;
    rt.block_on(store.close());
    Some((Target { dir: dir.to_owned(), url: Some(db.url().to_owned()) }, db))
}

fn start(dir: &Path, admin_password: Option<&str>) -> Server {
    start_on(&Target::sqlite(dir), admin_password)
}

fn start_on(target: &Target, admin_password: Option<&str>) -> Server {
    start_with(target, admin_password, &[])
}

/// `start_on` with extra environment variables for the server.
fn start_with(target: &Target, admin_password: Option<&str>, env: &[(&str, &str)]) -> Server {
    let port = free_port();
    let mut cmd = Command::new(BIN);
    cmd.envs(env.iter().copied());
    cmd.arg("serve")
        .args(target.args())
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env_remove("CUSTODIAN_MASTER_KEY")
        .env_remove("CUSTODIAN_DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    match admin_password {
        Some(p) => cmd.env("CUSTODIAN_ADMIN_PASSWORD", p),
        None => cmd.env_remove("CUSTODIAN_ADMIN_PASSWORD"),
    };
    let mut child = cmd.spawn().unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "server did not start");
        assert!(child.try_wait().unwrap().is_none(), "server exited early");
        std::thread::sleep(Duration::from_millis(50));
    }
    Server { child, port, stdout }
}

/// `custodian user create` with the password on standard input.
fn create_user(data_dir: &str, username: &str, role: &str, password: &[u8]) -> std::process::Output {
    create_user_on(&Target::sqlite(Path::new(data_dir)), username, role, password)
}

fn create_user_on(target: &Target, username: &str, role: &str, password: &[u8]) -> std::process::Output {
    let mut child = Command::new(BIN)
        .args(["--log-format", "text", "user", "create"])
        .args(target.args())
        .args(["--username", username, "--role", role])
        .arg("--password-stdin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(password).unwrap();
    child.wait_with_output().unwrap()
}

fn login(port: u16, user: &str, password: &str) -> String {
    let (status, body) =
        http(port, "POST", "/api/v1/auth/login", None, Some(&json!({"username": user, "password": password})));
    assert_eq!(status, 200, "{body}");
    body["token"].as_str().unwrap().to_owned()
}

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// Logs in a user whose role requires MFA, the way a person with an authenticator app would:
/// the first time it enrols (and keeps the secret in `secret`), afterwards it answers the login
/// challenge with the code of the next time step (the step used before is refused as a replay).
fn login_with_mfa(port: u16, user: &str, password: &str, secret: &mut Option<Vec<u8>>) -> String {
    use custodian_crypto::totp;
    let (status, body) =
        http(port, "POST", "/api/v1/auth/login", None, Some(&json!({"username": user, "password": password})));
    assert_eq!(status, 200, "{body}");
    if body["mfa_required"] == json!(true) {
        let s = secret.as_ref().expect("the user enrolled earlier");
        let code = totp::code_for_step(s, totp::step_at(unix_now()) + 1);
        let (status, body) =
            http(port, "POST", "/api/v1/auth/mfa", None, Some(&json!({"challenge": body["challenge"], "code": code})));
        assert_eq!(status, 200, "{body}");
        return body["token"].as_str().unwrap().to_owned();
    }
    let token = body["token"].as_str().unwrap().to_owned();
    // Until enrolled, the admin may do nothing else.
    let (status, body) = http(port, "GET", "/api/v1/contacts", Some(&token), None);
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("mfa_enrollment_required")), "{body}");
    let (status, body) = http(port, "POST", "/api/v1/auth/mfa/enroll", Some(&token), None);
    assert_eq!(status, 200, "{body}");
    let s = totp::secret_from_base32(body["secret"].as_str().unwrap()).unwrap();
    let code = totp::code_for_step(&s, totp::step_at(unix_now()));
    let (status, body) =
        http(port, "POST", "/api/v1/auth/mfa/enroll/confirm", Some(&token), Some(&json!({"code": code})));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["recovery_codes"].as_array().unwrap().len(), 10);
    *secret = Some(s);
    token
}

#[test]
fn first_start_prints_admin_password_once_and_creates_a_private_key_file() {
    let dir = TempDir::new();
    let mut server = start(&dir.0, None);
    let mut line = String::new();
    server.stdout.read_line(&mut line).unwrap();
    let password = line.trim().rsplit(' ').next().unwrap().to_owned();
    assert!(line.contains("Created user 'admin'"), "{line}");
    login(server.port, "admin", &password);
    let (status, health) = http(server.port, "GET", "/healthz", None, None);
    assert_eq!((status, health["status"].as_str()), (200, Some("ok")));
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.0.join("master.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // A second start prints nothing: the admin exists.
    let mut server = start(&dir.0, None);
    login(server.port, "admin", &password);
    server.child.kill().unwrap();
    let mut rest = String::new();
    server.stdout.read_to_string(&mut rest).unwrap();
    assert!(!rest.contains("password"), "{rest}");
    // The keys the first start created are in the audit log (by label and public half, never
    // their material), once: the data key, the blind-index key and the checkpoint signing key.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let bodies: Vec<String> = rt.block_on(async {
        use sqlx::Connection;
        let url = format!("sqlite://{}", dir.0.join("custodian.db").display());
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query_scalar("SELECT body FROM audit_events WHERE action = 'key.create' ORDER BY seq")
            .fetch_all(&mut conn)
            .await
            .unwrap()
    });
    assert_eq!(bodies.len(), 3, "{bodies:?}");
    let signing = bodies.iter().find(|b| b.contains("audit-signing")).expect("signing key event");
    let public = std::fs::read_to_string(dir.0.parent().unwrap().join("data.audit-signing.key.pub")).unwrap();
    assert!(signing.contains(public.trim()), "{signing} names {public}");
}

#[test]
fn user_create_is_offline_and_reads_the_password_from_stdin() {
    let dir = TempDir::new();
    let d = dir.0.to_str().unwrap();
    let out = create_user(d, "alice", "sales_rep", b"a long enough password\n");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("created user alice"));
    // Weak input is refused with a clear message and a failure exit code.
    let out = create_user(d, "bob", "sales_rep", b"short\n");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("password"));
    // So is a long but common one, with the reason.
    let out = create_user(d, "bob", "sales_rep", b"Password123!\n");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("too weak"), "{}", String::from_utf8_lossy(&out.stderr));
    let list = Command::new(BIN).args(["user", "list", "--data-dir", d]).output().unwrap();
    assert!(String::from_utf8_lossy(&list.stdout).contains("alice\tsales_rep"));
    let mut server = start(&dir.0, Some("admin password 123"));
    login(server.port, "alice", "a long enough password");
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}

#[test]
fn acknowledged_writes_survive_kill_minus_9() {
    let dir = TempDir::new();
    let mut server = start(&dir.0, Some("admin password 123"));
    let mut secret = None;
    let token = login_with_mfa(server.port, "admin", "admin password 123", &mut secret);
    let port = server.port;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut writers = Vec::new();
    for w in 0..8 {
        let token = token.clone();
        let stop = stop.clone();
        let answered = answered.clone();
        writers.push(std::thread::spawn(move || {
            let mut acked = Vec::new();
            for i in 0..10_000 {
                if stop.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                let body = json!({"fields": {"name": format!("客户 {w}-{i}"), "city": "杭州"}});
                // A request cut off by the kill is simply not acknowledged.
                let result =
                    std::panic::catch_unwind(|| http(port, "POST", "/api/v1/companies", Some(&token), Some(&body)));
                match result {
                    Ok((201, v)) => {
                        acked.push(v["id"].as_str().unwrap().to_owned());
                        answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    _ => break,
                }
            }
            acked
        }));
    }
    // Killed while the writers are busy: once enough writes were acknowledged (counted, not
    // timed: on a loaded machine 1.5 s once brought only 14), or after a minute at the latest.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while answered.load(std::sync::atomic::Ordering::SeqCst) < 100 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    server.child.kill().unwrap(); // SIGKILL
    server.child.wait().unwrap();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let acked: Vec<String> = writers.into_iter().flat_map(|w| w.join().unwrap()).collect();
    assert!(acked.len() > 20, "too few writes acknowledged before the kill: {}", acked.len());

    let mut server = start(&dir.0, None);
    let token = login_with_mfa(server.port, "admin", "admin password 123", &mut secret);
    for id in &acked {
        let (status, body) = http(server.port, "GET", &format!("/api/v1/companies/{id}"), Some(&token), None);
        assert_eq!(status, 200, "acknowledged record {id} lost after kill -9: {body}");
    }
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}

#[cfg(unix)]
#[test]
fn sigterm_shuts_down_gracefully() {
    let dir = TempDir::new();
    let mut server = start(&dir.0, Some("admin password 123"));
    let status = Command::new("kill").args(["-TERM", &server.child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(exit) = server.child.try_wait().unwrap() {
            assert!(exit.success(), "exit status {exit}");
            break;
        }
        assert!(Instant::now() < deadline, "server did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn help_lists_the_commands() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for c in ["serve", "user", "migrate", "demo"] {
        assert!(text.contains(c), "{text}");
    }
}

#[test]
fn offboard_from_the_command_line() {
    let dir = TempDir::new();
    offboard_scenario(&Target::sqlite(&dir.0));
}

#[test]
fn offboard_from_the_command_line_on_postgres() {
    let dir = TempDir::new();
    let Some((target, _db)) = postgres_target(&dir.0) else { return };
    offboard_scenario(&target);
    assert!(!dir.0.join("custodian.db").exists(), "everything went to PostgreSQL");
}

/// The schema owner migrates and prepares an application role; a server running as that role
/// serves records, and the role cannot rewrite the audit log. `--app-role` without PostgreSQL
/// is refused.
#[test]
fn a_server_runs_as_the_application_role_that_migrate_prepares() {
    let dir = TempDir::new();
    let out = cli(&["migrate", "--data-dir", dir.0.to_str().unwrap(), "--app-role", "custodian_app"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("PostgreSQL only"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let Some((owner, db)) = rt.block_on(custodian_store_tests::postgres_app_role_test_db()) else { return };
    rt.block_on(owner.close());
    let app = Target { dir: dir.0.clone(), url: Some(db.app_url()) };
    // Before the grant the role cannot even read the schema.
    let out = cli_on(&app, &["user", "list"]);
    assert!(!out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let owner = Target { dir: dir.0.clone(), url: Some(db.owner_url().to_owned()) };
    let out = cli_on(&owner, &["migrate", "--app-role", db.role()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains(db.role()));
    // Nothing is pending, so the application role "migrates" without creating anything.
    let out = cli_on(&app, &["migrate"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(create_user_on(&app, "rep", "sales_rep", b"a long enough password").status.success());
    let server = start_on(&app, Some("an admin password of some length"));
    let token = login(server.port, "rep", "a long enough password");
    let body = json!({"fields": {"name": "应用角色", "mobile": "13812340077"}});
    let (status, created) = http(server.port, "POST", "/api/v1/contacts", Some(&token), Some(&body));
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap();
    let (status, read) = http(server.port, "GET", &format!("/api/v1/contacts/{id}"), Some(&token), None);
    assert_eq!(status, 200, "{read}");
    stop(server);
    rt.block_on(async {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&db.app_url()).await.unwrap();
        for sql in ["DELETE FROM audit_events", "ALTER TABLE audit_events DISABLE TRIGGER ALL"] {
            assert!(sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await.is_err(), "{sql}");
        }
        let events: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_events").fetch_one(&mut conn).await.unwrap();
        assert!(events >= 3, "{events}");
    });
}

fn offboard_scenario(target: &Target) {
    for name in ["leaver", "heir"] {
        assert!(create_user_on(target, name, "sales_rep", b"a long enough password").status.success());
    }
    let out = cli_on(target, &["user", "offboard", "--username", "leaver", "--successor", "heir"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["window_days"], 90);
    let list = cli_on(target, &["user", "list"]);
    assert!(String::from_utf8_lossy(&list.stdout).contains("leaver\tsales_rep\tdisabled"));
    let out = cli_on(target, &["user", "offboard", "--username", "ghost", "--successor", "heir"]);
    assert!(!out.status.success());
}

#[test]
fn demo_data_belongs_to_the_sales_users() {
    let dir = TempDir::new();
    let d = dir.0.to_str().unwrap();
    assert!(create_user(d, "rep", "sales_rep", b"a long enough password").status.success());
    let out = Command::new(BIN).args(["demo", "--data-dir", d, "--records", "120", "--seed", "3"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut server = start(&dir.0, Some("admin password 123"));
    // The rep sees their own demo records (row scope "own").
    let token = login(server.port, "rep", "a long enough password");
    let (status, body) = http(server.port, "GET", "/api/v1/contacts?limit=500", Some(&token), None);
    assert_eq!(status, 200, "{body}");
    assert!(body["items"].as_array().unwrap().len() >= 20, "{body}");
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}

#[test]
fn verify_api_checks_the_servers_own_checkpoints() {
    let dir = TempDir::new();
    let mut server = start(&dir.0, Some("admin password 123"));
    let mut secret = None;
    let token = login_with_mfa(server.port, "admin", "admin password 123", &mut secret);
    // The writer checkpoints pending events within its poll interval.
    let checkpoints = dir.0.parent().unwrap().join("data.audit-checkpoints.log");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::metadata(&checkpoints).map(|m| m.len()).unwrap_or(0) == 0 {
        assert!(Instant::now() < deadline, "no checkpoint written");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, report) = http(server.port, "POST", "/api/v1/audit/verify", Some(&token), None);
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["intact"], true, "{report}");
    assert!(report["checkpoints_verified"].as_u64().unwrap() >= 1, "{report}");
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}

#[test]
fn webhook_delivery_refuses_to_start_without_a_signing_secret() {
    let dir = TempDir::new();
    let out = Command::new(BIN)
        .args(["serve", "--data-dir", dir.0.to_str().unwrap(), "--listen", "127.0.0.1:0"])
        .args(["--webhook-url", "http://127.0.0.1:9/hook"])
        .env_remove("CUSTODIAN_WEBHOOK_SECRET")
        .env_remove("CUSTODIAN_MASTER_KEY")
        .env_remove("CUSTODIAN_DATABASE_URL")
        .env("CUSTODIAN_ADMIN_PASSWORD", "admin password 123")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("CUSTODIAN_WEBHOOK_SECRET"));
}

/// The binary with text logs and none of the caller's key or database settings.
fn custodian<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Command {
    let mut command = Command::new(BIN);
    command
        .args(["--log-format", "text"])
        .args(args)
        .env_remove("CUSTODIAN_MASTER_KEY")
        .env_remove("CUSTODIAN_DATABASE_URL");
    command
}

fn cli<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> std::process::Output {
    custodian(args).output().unwrap()
}

/// `cli` with the target's store options after `args`.
fn cli_on(target: &Target, args: &[&str]) -> std::process::Output {
    let all: Vec<String> = args.iter().map(|a| (*a).to_owned()).chain(target.args()).collect();
    cli(&all)
}

fn cli_json<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(args: &[S]) -> Value {
    let out = cli(args);
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{args:?}: {e}: {}", String::from_utf8_lossy(&out.stdout)))
}

fn stop(mut server: Server) {
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}

#[test]
fn roles_teams_departments_and_grants_from_the_command_line() {
    let dir = TempDir::new();
    roles_scenario(&Target::sqlite(&dir.0));
}

#[test]
fn roles_teams_departments_and_grants_from_the_command_line_on_postgres() {
    let dir = TempDir::new();
    let Some((target, _db)) = postgres_target(&dir.0) else { return };
    roles_scenario(&target);
    assert!(!dir.0.join("custodian.db").exists(), "everything went to PostgreSQL");
}

fn roles_scenario(target: &Target) {
    let data = target.args();
    let with =
        |args: &[&str]| -> Vec<String> { args.iter().map(|a| (*a).to_owned()).chain(data.iter().cloned()).collect() };
    // The first start creates the admin (only on an empty store).
    stop(start_on(target, Some("admin password 123")));
    // Organisation.
    let dept = cli_json(&with(&["department", "create", "--name", "销售部"]));
    let dept_id = dept["id"].as_str().unwrap().to_owned();
    let team = cli_json(&with(&["team", "create", "--name", "A 组", "--department-id", dept_id.as_str()]));
    let team_id = team["id"].as_str().unwrap().to_owned();
    assert_eq!(cli_json(&with(&["team", "list"])).as_array().unwrap().len(), 1);
    assert_eq!(cli_json(&with(&["department", "list"]))[0]["name"], "销售部");
    // Renaming and moving: a second department below the first, the team into it and out of
    // any; a department below itself is refused.
    let east = cli_json(&with(&["department", "create", "--name", "华东区"]));
    let east_id = east["id"].as_str().unwrap().to_owned();
    let moved = cli_json(&with(&["department", "update", &east_id, "--parent-id", &dept_id, "--name", "华东分部"]));
    assert_eq!((moved["name"].as_str(), moved["parent_id"].as_str()), (Some("华东分部"), Some(dept_id.as_str())));
    let out = cli(&with(&["department", "update", &dept_id, "--parent-id", &east_id]));
    assert!(!out.status.success(), "a cycle is refused");
    assert!(String::from_utf8_lossy(&out.stderr).contains("parent_id"), "{}", String::from_utf8_lossy(&out.stderr));
    let t = cli_json(&with(&["team", "update", &team_id, "--department-id", &east_id]));
    assert_eq!(t["department_id"].as_str(), Some(east_id.as_str()));
    let t = cli_json(&with(&["team", "update", &team_id, "--no-department", "--name", "A 组"]));
    assert_eq!((t["name"].as_str(), &t["department_id"]), (Some("A 组"), &Value::Null));
    let top = cli_json(&with(&["department", "update", &east_id, "--top-level"]));
    assert_eq!(top["parent_id"], Value::Null);
    let t = cli_json(&with(&["team", "update", &team_id, "--department-id", &dept_id]));
    assert_eq!(t["department_id"].as_str(), Some(dept_id.as_str()));
    // A custom role from a file.
    let role_file = target.dir.join("analyst.json");
    let role = json!({"name": "analyst", "label_en": "Analyst", "label_zh": "分析员", "sensitive_default": "masked",
        "objects": {"contacts": {"create": false, "read": "all", "update": "none", "delete": "none", "export": false}}});
    std::fs::write(&role_file, role.to_string()).unwrap();
    let created = cli_json(&with(&["role", "create", "--file", role_file.to_str().unwrap()]));
    assert_eq!((created["name"].as_str(), created["builtin"].as_bool()), (Some("analyst"), Some(false)));
    let names: Vec<String> = cli_json(&with(&["role", "list"]))
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["sales_rep", "sales_manager", "data_steward", "auditor", "admin", "analyst"]);
    let mut changed = role.clone();
    changed["label_en"] = json!("Senior analyst");
    std::fs::write(&role_file, changed.to_string()).unwrap();
    cli_json(&with(&["role", "update", "analyst", "--file", role_file.to_str().unwrap()]));
    assert_eq!(cli_json(&with(&["role", "show", "analyst"]))["label_en"], "Senior analyst");
    // Built-in roles are read-only; unknown roles cannot be assigned.
    let out = cli(&with(&["role", "update", "sales_rep", "--file", role_file.to_str().unwrap()]));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("read-only"), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!create_user_on(target, "ghost", "no_such_role", b"a long enough password").status.success());
    // Users with the custom role and in the team.
    assert!(create_user_on(target, "ana", "analyst", b"a long enough password").status.success());
    let mut child = Command::new(BIN)
        .args(["--log-format", "text", "user", "create"])
        .args(target.args())
        .args(["--username", "rep1", "--role", "sales_rep"])
        .args(["--team-id", &team_id, "--password-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"a long enough password").unwrap();
    assert!(child.wait_with_output().unwrap().status.success());
    // A held role is not deleted.
    let out = cli(&with(&["role", "delete", "analyst"]));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("hold"), "{}", String::from_utf8_lossy(&out.stderr));

    // The admin creates a contact the rep cannot see; the analyst reads it through the role.
    let server = start_on(target, Some("admin password 123"));
    let mut secret = None;
    let admin = login_with_mfa(server.port, "admin", "admin password 123", &mut secret);
    let (status, contact) =
        http(server.port, "POST", "/api/v1/contacts", Some(&admin), Some(&json!({"fields": {"name": "王五"}})));
    assert_eq!(status, 201, "{contact}");
    let contact_id = contact["id"].as_str().unwrap().to_owned();
    let rep = login(server.port, "rep1", "a long enough password");
    let path = format!("/api/v1/contacts/{contact_id}");
    assert_eq!(http(server.port, "GET", &path, Some(&rep), None).0, 404);
    let ana = login(server.port, "ana", "a long enough password");
    assert_eq!(http(server.port, "GET", &path, Some(&ana), None).0, 200);
    assert_eq!(http(server.port, "PATCH", &path, Some(&ana), Some(&json!({"fields": {"title": "x"}}))).0, 403);
    stop(server);

    // A grant from the command line opens the record to the rep until it is revoked.
    let grant = cli_json(&with(&[
        "grant",
        "create",
        "--user",
        "rep1",
        "--object",
        "contacts",
        "--record-id",
        contact_id.as_str(),
        "--hours",
        "2",
        "--reason",
        "covering for 张三",
    ]));
    assert_eq!((grant["access"].as_str(), grant["active"].as_bool()), (Some("read"), Some(true)));
    let grant_id = grant["id"].as_str().unwrap().to_owned();
    assert_eq!(cli_json(&with(&["grant", "list"])).as_array().unwrap().len(), 1);
    let server = start_on(target, None);
    let rep = login(server.port, "rep1", "a long enough password");
    assert_eq!(http(server.port, "GET", &path, Some(&rep), None).0, 200);
    // Every CLI change is in the audit log, made by the system actor.
    let admin = login_with_mfa(server.port, "admin", "admin password 123", &mut secret);
    for (prefix, n) in [("role.", 2), ("grant.", 1), ("team.", 1), ("department.", 1), ("user.create", 3)] {
        let (status, events) =
            http(server.port, "GET", &format!("/api/v1/audit/events?action={prefix}"), Some(&admin), None);
        assert_eq!(status, 200, "{events}");
        let items = events["items"].as_array().unwrap();
        assert!(items.len() >= n, "{prefix}: {events}");
        assert!(items.iter().all(|e| e["actor_id"].is_null()), "{events}");
    }
    stop(server);
    let revoked = cli_json(&with(&["grant", "revoke", grant_id.as_str()]));
    assert_eq!(revoked["active"], false);
    assert!(cli_json(&with(&["grant", "list"])).as_array().unwrap().is_empty());
    assert_eq!(cli_json(&with(&["grant", "list", "--all"])).as_array().unwrap().len(), 1);
    let server = start_on(target, None);
    let rep = login(server.port, "rep1", "a long enough password");
    assert_eq!(http(server.port, "GET", &path, Some(&rep), None).0, 404, "revoked grants stop working");
    stop(server);
}

#[test]
fn export_and_trace_leak_from_the_command_line() {
    let dir = TempDir::new();
    export_scenario(&Target::sqlite(&dir.0));
}

#[test]
fn export_and_trace_leak_from_the_command_line_on_postgres() {
    let dir = TempDir::new();
    let Some((target, _db)) = postgres_target(&dir.0) else { return };
    export_scenario(&target);
    assert!(!dir.0.join("custodian.db").exists(), "everything went to PostgreSQL");
}

/// Demo data exported twice (filtered, then all contacts); a part of the second file is traced
/// to its export; the export is refused above `--max-rows`; an existing file is never replaced.
fn export_scenario(target: &Target) {
    let out = cli_on(target, &["demo", "--records", "200", "--seed", "5"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let root = target.dir.parent().unwrap();
    let first = root.join("first.csv");
    let second = root.join("second.csv");
    let out = cli_on(
        target,
        &["export", "--object", "companies", "--filter", "name[contains]=科技", "--output", first.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = cli_on(target, &["export", "--object", "contacts", "--output", second.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = report["rows"].as_u64().unwrap();
    assert!(rows >= 20, "{report}");
    let text = std::fs::read_to_string(&second).unwrap();
    let mut reader = csv::Reader::from_reader(text.trim_start_matches('\u{feff}').as_bytes());
    assert_eq!(reader.records().count() as u64, rows);
    // A part of the file, with the watermark column cut off: still traced to its export.
    let lines: Vec<&str> = text.split("\r\n").filter(|l| !l.is_empty()).collect();
    let cut = |l: &str| l.rsplit_once(',').unwrap().0.to_owned();
    let part: Vec<String> = std::iter::once(lines[0]).chain(lines[3..15].iter().copied()).map(cut).collect();
    let leaked = root.join("leaked.csv");
    std::fs::write(&leaked, part.join("\r\n")).unwrap();
    let out = cli_on(target, &["trace-leak", leaked.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let trace: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(trace["verdict"], "fingerprint", "{trace}");
    assert_eq!(trace["export_id"], report["export_id"], "{trace}");
    // A file no export produced: non-zero exit.
    let stranger = root.join("stranger.csv");
    std::fs::write(&stranger, "id,name\r\nx,y\r\n").unwrap();
    let out = cli_on(target, &["trace-leak", stranger.to_str().unwrap()]);
    assert!(!out.status.success());
    // The cap, and an existing output file, refuse the export.
    let third = root.join("third.csv");
    let out =
        cli_on(target, &["export", "--object", "contacts", "--max-rows", "5", "--output", third.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("export_too_large"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli_on(target, &["export", "--object", "contacts", "--output", second.to_str().unwrap()]);
    assert!(!out.status.success());
    assert_eq!(std::fs::read_to_string(&second).unwrap(), text, "never overwritten");
}

#[test]
fn key_rotation_from_the_command_line() {
    let dir = TempDir::new();
    rotation_scenario(&Target::sqlite(&dir.0));
}

#[test]
fn key_rotation_from_the_command_line_on_postgres() {
    let dir = TempDir::new();
    let Some((target, _db)) = postgres_target(&dir.0) else { return };
    rotation_scenario(&target);
}

/// Demo data, a rotation run to the end, the values still readable (through an export) and the
/// audit chain intact.
fn rotation_scenario(target: &Target) {
    let out = cli_on(target, &["demo", "--records", "150", "--seed", "9"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let status = |target: &Target| -> Value {
        let out = cli_on(target, &["keys", "status"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    assert_eq!(status(target), json!({"current_version": 1, "versions": [1]}));
    let out = cli_on(target, &["keys", "rotate"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rotation: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rotation["version"], 2, "{rotation}");
    let jobs = rotation["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 2, "{rotation}");
    assert!(jobs.iter().all(|j| j["status"] == "done"), "{rotation}");
    assert!(jobs[0]["found"].as_i64().unwrap() > 10, "contacts sealed again: {rotation}");
    assert_eq!(status(target), json!({"current_version": 2, "versions": [1, 2]}));
    // A reseal finds nothing left to seal again.
    let out = cli_on(target, &["keys", "reseal"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let reseal: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(reseal["jobs"].as_array().unwrap().iter().all(|j| j["status"] == "done" && j["found"] == 0), "{reseal}");
    let csv = target.dir.parent().unwrap().join("after-rotation.csv");
    let out =
        cli_on(target, &["export", "--object", "contacts", "--columns", "mobile", "--output", csv.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(&csv).unwrap();
    let mut reader = csv::Reader::from_reader(text.trim_start_matches('\u{feff}').as_bytes());
    let mobiles: Vec<String> = reader.records().map(|r| r.unwrap()[1].to_owned()).collect();
    assert!(mobiles.iter().filter(|m| m.starts_with("+86")).count() > 10, "{mobiles:?}");
    let out = cli_on(target, &["audit", "verify"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// A backup taken while the server writes, checked by a restore drill, restored into an empty
/// directory (the same records and an intact chain); wrong keys, damage and truncation refused.
#[test]
fn backup_verify_and_restore_from_the_command_line() {
    let dir = TempDir::new();
    let data = dir.0.to_str().unwrap().to_owned();
    let root = dir.0.parent().unwrap().to_owned();
    let backups = root.join("backups");
    assert!(create_user(&data, "boss", "admin", b"admin password 123").status.success());
    let out = cli(&["demo", "--data-dir", &data, "--records", "200", "--seed", "4"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(create_user(&data, "rep", "sales_rep", b"a long enough password").status.success());
    // Checkpoints at start only (and then every 65,536 events or a day): the ones signed are
    // all before the backup, whatever the speed of this machine.
    let slow_checkpoints =
        [("CUSTODIAN_CHECKPOINT_EVERY_SECS", "86400"), ("CUSTODIAN_CHECKPOINT_EVERY_EVENTS", "65536")];
    let server = start_with(&Target::sqlite(&dir.0), None, &slow_checkpoints);
    let mut secret = None;
    let token = login_with_mfa(server.port, "boss", "admin password 123", &mut secret);
    let rep = login(server.port, "rep", "a long enough password");
    // Writes go on while the backup is taken.
    let writer = std::thread::spawn({
        let port = server.port;
        let token = rep.clone();
        move || {
            for i in 0..30 {
                let body = json!({"fields": {"name": format!("备份期间客户{i}")}});
                let (status, _) = http(port, "POST", "/api/v1/companies", Some(&token), Some(&body));
                assert_eq!(status, 201);
            }
        }
    });
    let out = cli(&["backup", "create", "--data-dir", &data, "--output-dir", backups.to_str().unwrap()]);
    writer.join().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let created: Value = serde_json::from_slice(&out.stdout).unwrap();
    let file = PathBuf::from(created["path"].as_str().unwrap());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    }
    assert_eq!(std::fs::read_dir(&backups).unwrap().count(), 1, "no scratch copy left behind");
    // Known plaintext of a sensitive field never appears in the backup (it is sealed; inside,
    // sensitive values are ciphertext anyway).
    let bytes = std::fs::read(&file).unwrap();
    assert!(!bytes.windows("备份期间客户".len()).any(|w| w == "备份期间客户".as_bytes()));
    let (_, audit) = http(server.port, "GET", "/api/v1/audit/events?action=backup.", Some(&token), None);
    assert_eq!(audit["items"][0]["action"], "backup.create", "{audit}");
    stop(server);

    let out = cli(&["backup", "verify", "--data-dir", &data, file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let drill: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(drill["report"]["audit_chain"], "intact", "{drill}");
    assert_eq!(drill["report"]["keys_refused"], json!([]), "{drill}");
    let companies = drill["report"]["records"]["companies"].as_u64().unwrap();

    // Restore: refused without the master key, and into a directory that has a store.
    // (In a directory of its own: the checkpoints signed beside the old data directory cover
    // events written after the backup, which a verifier there would rightly miss.)
    let target = root.join("elsewhere").join("data");
    std::fs::create_dir_all(&target).unwrap();
    let out = cli(&["backup", "restore", "--data-dir", target.to_str().unwrap(), file.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no master key"));
    std::fs::copy(dir.0.join("master.key"), target.join("master.key")).unwrap();
    let out = cli(&["backup", "restore", "--data-dir", target.to_str().unwrap(), file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let restored: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(restored["report"]["records"]["companies"].as_u64().unwrap(), companies);
    // The restored log verifies against the checkpoints the original server signed (they end
    // inside the backup: it was taken after them).
    let out = cli(&[
        "audit",
        "verify",
        "--data-dir",
        target.to_str().unwrap(),
        "--checkpoint-file",
        root.join("data.audit-checkpoints.log").to_str().unwrap(),
        "--audit-signing-key",
        root.join("data.audit-signing.key").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let out = cli(&["backup", "restore", "--data-dir", target.to_str().unwrap(), file.to_str().unwrap()]);
    assert!(!out.status.success(), "never over an existing store");
    // The restored store serves, with the same users.
    let server = start(&target, None);
    let token = login_with_mfa(server.port, "boss", "admin password 123", &mut secret);
    let (status, body) = http(server.port, "GET", "/api/v1/companies?limit=500", Some(&token), None);
    assert_eq!(status, 200);
    assert_eq!(body["items"].as_array().unwrap().len() as u64, companies);
    stop(server);

    // A wrong master key, a flipped byte, a cut file: refused, and the check is on the record.
    let other_key = root.join("other.key");
    std::fs::write(&other_key, "cd".repeat(32)).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&other_key, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let out = cli(&[
        "backup",
        "verify",
        "--data-dir",
        &data,
        "--master-key-file",
        other_key.to_str().unwrap(),
        file.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("another master key"));
    let mut flipped = bytes.clone();
    let at = flipped.len() / 2;
    flipped[at] ^= 0x20;
    let damaged = root.join("damaged.cbk");
    std::fs::write(&damaged, &flipped).unwrap();
    let out = cli(&["backup", "verify", "--data-dir", &data, damaged.to_str().unwrap()]);
    assert!(!out.status.success());
    let cut = root.join("cut.cbk");
    std::fs::write(&cut, &bytes[..bytes.len() - 100]).unwrap();
    let out = cli(&["backup", "verify", "--data-dir", &data, cut.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("cut short"));
    let server = start(&dir.0, None);
    let token = login_with_mfa(server.port, "boss", "admin password 123", &mut secret);
    let (_, audit) = http(server.port, "GET", "/api/v1/audit/events?action=backup.verify", Some(&token), None);
    let checks: Vec<bool> =
        audit["items"].as_array().unwrap().iter().map(|e| e["details"]["ok"].as_bool().unwrap()).collect();
    // (The check with the wrong key could not open this store's keys either: not recorded.)
    assert_eq!(checks, [false, false, true], "newest first: {audit}");
    stop(server);
}

#[test]
fn backup_verify_and_restore_on_postgres() {
    let dir = TempDir::new();
    let Some((target, _db)) = postgres_target(&dir.0) else { return };
    let url = target.url.clone().unwrap();
    let out = cli_on(&target, &["demo", "--records", "150", "--seed", "6"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let backups = dir.0.join("b");
    let out = cli_on(&target, &["backup", "create", "--output-dir", backups.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let created: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(created["manifest"]["backend"], "postgres");
    let file = created["path"].as_str().unwrap().to_owned();
    // The drill restores into a scratch database of the same server and drops it.
    let out = cli_on(&target, &["backup", "verify", &file]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let drill: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(drill["report"]["audit_chain"], "intact", "{drill}");
    let companies = drill["report"]["records"]["companies"].as_u64().unwrap();
    assert!(companies > 0);
    // Never over a database that has tables; into an empty one, with the same records.
    let out = cli_on(&target, &["backup", "restore", &file]);
    assert!(!out.status.success(), "the live database is not empty");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let name = format!("custodian_t_{}", uuid::Uuid::new_v4().simple());
    let empty = rt.block_on(custodian_store_postgres::backup::create_database(&url, &name)).unwrap();
    let restored = Target { dir: dir.0.clone(), url: Some(empty.clone()) };
    let out = cli_on(&restored, &["backup", "restore", &file]);
    let dropped = rt.block_on(custodian_store_postgres::backup::drop_database(&url, &name));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["report"]["records"]["companies"].as_u64().unwrap(), companies);
    assert_eq!(report["report"]["audit_chain"], "intact");
    dropped.unwrap();
    // No scratch database is left behind by the drill.
    let mut conn = rt.block_on(<sqlx::PgConnection as sqlx::Connection>::connect(&url)).unwrap();
    let left: i64 = rt
        .block_on(
            sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname LIKE 'custodian_drill_%'")
                .fetch_one(&mut conn),
        )
        .unwrap();
    assert_eq!(left, 0);
}

/// `serve --backup-dir` backs up on its schedule, checks every backup with a restore drill and
/// keeps what the retention says (here: the newest of today only).
#[test]
fn scheduled_backups_are_checked_and_pruned() {
    let dir = TempDir::new();
    let data = dir.0.to_str().unwrap().to_owned();
    let backups = dir.0.parent().unwrap().join("backups");
    assert!(create_user(&data, "boss", "admin", b"admin password 123").status.success());
    let server = start_with(
        &Target::sqlite(&dir.0),
        None,
        &[
            ("CUSTODIAN_BACKUP_DIR", backups.to_str().unwrap()),
            ("CUSTODIAN_BACKUP_EVERY_SECS", "1"),
            ("CUSTODIAN_BACKUP_KEEP_DAILY", "1"),
            ("CUSTODIAN_BACKUP_KEEP_WEEKLY", "0"),
            ("CUSTODIAN_BACKUP_KEEP_MONTHLY", "0"),
        ],
    );
    let mut secret = None;
    let token = login_with_mfa(server.port, "boss", "admin password 123", &mut secret);
    let deadline = Instant::now() + Duration::from_secs(60);
    let events = loop {
        let (_, body) = http(server.port, "GET", "/api/v1/audit/events?action=backup.&limit=100", Some(&token), None);
        let items = body["items"].as_array().cloned().unwrap_or_default();
        if items.iter().any(|e| e["action"] == "backup.prune") {
            break items;
        }
        assert!(Instant::now() < deadline, "no pruning yet: {body}");
        std::thread::sleep(Duration::from_millis(200));
    };
    stop(server);
    let verified: Vec<&serde_json::Value> = events.iter().filter(|e| e["action"] == "backup.verify").collect();
    assert!(verified.len() >= 2, "{events:?}");
    assert!(verified.iter().all(|e| e["details"]["ok"] == true && e["details"]["scheduled"] == true), "{events:?}");
    assert!(events.iter().any(|e| e["action"] == "backup.create"));
    let files: Vec<_> = std::fs::read_dir(&backups).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(!files.is_empty() && files.len() <= 2, "the newest is kept, older ones pruned: {files:?}");
    assert!(files.iter().all(|f| f.to_string_lossy().ends_with(".cbk")), "no scratch copies: {files:?}");
}

#[test]
fn import_from_the_command_line() {
    let dir = TempDir::new();
    import_scenario(&Target::sqlite(&dir.0));
}

#[test]
fn import_from_the_command_line_on_postgres() {
    let dir = TempDir::new();
    let Some((target, _db)) = postgres_target(&dir.0) else { return };
    import_scenario(&target);
}

/// A dry run that finds problems (non-zero exit, report on stdout), a commit that skips them,
/// the revert, and a GBK file refused with the command that converts it.
fn import_scenario(target: &Target) {
    let root = target.dir.parent().unwrap().to_owned();
    let file = root.join("leads.csv");
    std::fs::write(&file, "名称,手机,来源\n赵敏,13700001111,web\n周芷若,137-0000-2222,朋友介绍\n").unwrap();
    let path = file.to_str().unwrap();
    let mapping = ["--column", "名称=name", "--column", "手机=mobile", "--column", "来源=source"];
    let dry: Vec<&str> = ["import", "--object", "leads", "--input", path].into_iter().chain(mapping).collect();
    let out = cli_on(target, &dry);
    assert!(!out.status.success(), "problems make the dry run fail");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["problems"][0]["details"][0]["field"], "source", "{report}");
    assert_eq!(report["committed"], false);
    let commit: Vec<&str> = dry.iter().copied().chain(["--commit", "--skip-invalid"]).collect();
    let out = cli_on(target, &commit);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["written"], 1, "{report}");
    let import_id = report["import_id"].as_str().unwrap().to_owned();
    let out = cli_on(target, &["import-revert", &import_id]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let reverted: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(reverted["deleted"].as_array().unwrap().len(), 1);
    let gbk = root.join("gbk.csv");
    std::fs::write(&gbk, b"name\n\xd5\xc5\xce\xb0\n").unwrap();
    let out = cli_on(target, &["import", "--object", "leads", "--input", gbk.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("iconv -f GBK"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// CLI commands open and close the store beside a running server. SQLite's locks on the WAL
/// index are POSIX locks, which a process loses when it closes any descriptor of the file: if
/// the server did, a command closing its last connection reset the WAL index under the
/// server's mapping and the server died of SIGBUS (found by the backup test). Here the server
/// writes while commands come and go, and must answer every request and stay up.
#[test]
fn the_server_survives_commands_opening_and_closing_its_store() {
    let dir = TempDir::new();
    let data = dir.0.to_str().unwrap().to_owned();
    assert!(create_user(&data, "rep", "sales_rep", b"a long enough password").status.success());
    let mut server = start(&dir.0, None);
    let rep = login(server.port, "rep", "a long enough password");
    let writer = std::thread::spawn({
        let port = server.port;
        move || {
            for i in 0..150 {
                let body = json!({"fields": {"name": format!("并发客户{i}")}});
                let (status, body) = http(port, "POST", "/api/v1/companies", Some(&rep), Some(&body));
                assert_eq!(status, 201, "{body}");
            }
        }
    });
    for _ in 0..12 {
        let out = cli(&["user", "list", "--data-dir", &data]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let written = writer.join();
    let alive = server.child.try_wait().unwrap();
    assert!(alive.is_none(), "the server died: {alive:?}");
    assert!(written.is_ok(), "a request went unanswered");
    stop(server);
}

/// An import is all or nothing even when its process is killed (R3): a 20,000-row commit is
/// killed with SIGKILL while its transaction is being written (the write-ahead log growing is
/// the sign), which leaves no row; the log verifies, and a new run writes every row.
#[test]
fn an_import_killed_mid_way_leaves_all_rows_or_none() {
    const ROWS: u64 = 20_000;
    let dir = TempDir::new();
    let data = dir.0.to_str().unwrap().to_owned();
    let file = dir.0.parent().unwrap().join("many.csv");
    let mut csv = String::from("主题,类型,内容\n");
    for i in 0..ROWS {
        csv.push_str(&format!("拜访客户{i:05},visit,{}\n", "详细记录".repeat(20)));
    }
    std::fs::write(&file, csv).unwrap();
    let db = dir.0.join("custodian.db");
    let wal = dir.0.join("custodian.db-wal");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let count = || -> u64 {
        rt.block_on(async {
            use custodian_store::Store;
            let store = custodian_store_sqlite::SqliteStore::open_read_only(&db).await.unwrap();
            let mut query = custodian_store::ListQuery::new("activities");
            query.deleted = custodian_store::DeletedFilter::All;
            store.count_records(&query).await.unwrap()
        })
    };
    // The store exists before the kill, so that it hits the import, not the first start.
    assert!(create_user(&data, "rep", "sales_rep", b"a long enough password").status.success());
    let args = [
        "import",
        "--data-dir",
        &data,
        "--object",
        "activities",
        "--input",
        file.to_str().unwrap(),
        "--column",
        "主题=subject",
        "--column",
        "类型=kind",
        "--column",
        "内容=body",
        "--commit",
    ];
    let wal_len = || std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    let before = wal_len();
    let mut child = custodian(&args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut exited = false;
    while wal_len() < before + (4 << 20) {
        if child.try_wait().unwrap().is_some() {
            exited = true;
            break;
        }
        assert!(Instant::now() < deadline, "the import never wrote");
        std::thread::sleep(Duration::from_millis(2));
    }
    let _ = child.kill(); // SIGKILL, in the middle of the transaction
    child.wait().unwrap();
    let n = count();
    assert!(n == 0 || n == ROWS, "the killed import is half there: {n} rows");
    assert!(exited || n == 0, "killed while writing, yet committed");
    let out = cli(&["audit", "verify", "--data-dir", &data]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    if n == 0 {
        let out = cli(&args);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    assert_eq!(count(), ROWS);
}
