//! Shared helpers for the integration tests: a real `partnergate serve`
//! process on an ephemeral port, over temp copies of the shipped pack.
#![allow(dead_code)]

pub mod audit_db;
pub mod entities;
pub mod orchestrator;
pub mod receiver;

use std::io::{BufRead, BufReader, Read};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_partnergate");

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A temp directory holding `policies/`, `schemas/` (copies of the shipped
/// pack) and `data/`.
pub struct Workspace {
    pub dir: tempfile::TempDir,
}

impl Workspace {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(&repo().join("policies"), &dir.path().join("policies"));
        copy_dir(&repo().join("schemas"), &dir.path().join("schemas"));
        Workspace { dir }
    }
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    pub fn policies(&self) -> PathBuf {
        self.path().join("policies")
    }
    pub fn schema(&self) -> PathBuf {
        self.path().join("schemas/partnergate.cedarschema")
    }
    pub fn data(&self) -> PathBuf {
        self.path().join("data")
    }
    /// The binary over this workspace: `args`, then `--data-dir`,
    /// `--schema` and (but for `import`, which takes none) `--policies`,
    /// then `extra`.
    pub fn command(&self, args: &[&str], extra: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .arg("--data-dir")
            .arg(self.data())
            .arg("--schema")
            .arg(self.schema());
        if args.first() != Some(&"import") {
            cmd.arg("--policies").arg(self.policies());
        }
        cmd.args(extra);
        cmd
    }
    /// Run [`Workspace::command`] with `env` set and no terminal (stdin is
    /// null). Returns the exit code, stdout and stderr.
    pub fn cli(
        &self,
        args: &[&str],
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> (i32, String, String) {
        let o = self
            .command(args, extra)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    }
}

/// The arguments of `partnergate partners invite` into account `acme`:
/// `actor` invites `email` (the state flags are [`Workspace::command`]'s).
pub const fn invite_args<'a>(actor: &'a str, email: &'a str) -> [&'a str; 8] {
    [
        "partners",
        "invite",
        "--account",
        "acme",
        "--actor",
        actor,
        "--email",
        email,
    ]
}

/// Copy a directory tree (files and subdirectories, e.g. `policies/invariants`).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A running sidecar; killed on drop.
pub struct Server {
    pub child: Child,
    pub base: String,
    /// The ext_authz gRPC address (`--ext-authz-grpc` given), e.g. `127.0.0.1:40123`.
    pub grpc: Option<String>,
    pub token: String,
    pub client: reqwest::blocking::Client,
}

/// `partnergate serve` over `ws` on a free port, with `extra` flags.
pub fn serve_command(ws: &Workspace, extra: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command
        .arg("serve")
        .arg("--policies")
        .arg(ws.policies())
        .arg("--schema")
        .arg(ws.schema())
        .arg("--data-dir")
        .arg(ws.data())
        .args(["--bind", "127.0.0.1:0"])
        .args(extra);
    command
}

/// How long a functional test waits for something that should happen
/// (a reload served, a record written, a replica caught up) before it
/// fails: generous, so that a busy machine does not fail it. How fast it
/// happens is measured by the benchmarks in `scripts/`, never asserted.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// Sets its flag when dropped: a test's helper threads watch the flag, so
/// they stop however the test ends (a failed assertion included).
pub struct SetOnDrop(pub std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The servers' log level: `PG_TEST_LOG`, else `warn`.
fn default_log_level() -> String {
    std::env::var("PG_TEST_LOG").unwrap_or_else(|_| "warn".into())
}

impl Server {
    pub fn start(ws: &Workspace, extra: &[&str]) -> Self {
        Self::start_with(ws, extra, &default_log_level(), Stdio::inherit())
    }

    /// [`Server::start`] with its standard error piped: take it from
    /// `child.stderr` to read what the server wrote there.
    pub fn start_with_stderr(ws: &Workspace, extra: &[&str]) -> Self {
        Self::start_with(ws, extra, &default_log_level(), Stdio::piped())
    }

    /// [`Server::start`] with its log (`RUST_LOG=level`) going to `log`.
    pub fn start_logging_to(ws: &Workspace, extra: &[&str], level: &str, log: &Path) -> Self {
        let file = std::fs::File::create(log).unwrap();
        Self::start_with(ws, extra, level, Stdio::from(file))
    }

    fn start_with(ws: &Workspace, extra: &[&str], level: &str, stderr: Stdio) -> Self {
        let mut child = serve_command(ws, extra)
            .env("RUST_LOG", level)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let base = line
            .trim()
            .strip_prefix("partnergate listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .to_string();
        let grpc = extra.contains(&"--ext-authz-grpc").then(|| {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            line.trim()
                .strip_prefix("partnergate ext_authz gRPC listening on ")
                .unwrap_or_else(|| panic!("unexpected second line: {line:?}"))
                .to_string()
        });
        let token = std::fs::read_to_string(ws.data().join("token"))
            .unwrap_or_default()
            .trim()
            .to_string();
        Server {
            child,
            base,
            grpc,
            token,
            client: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn post(&self, path: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
        let r = self.client.post(self.url(path)).json(body).send().unwrap();
        let status = r.status().as_u16();
        (status, r.json().unwrap_or(serde_json::Value::Null))
    }

    /// A POST with the bearer token.
    pub fn post_with_token(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let r = self
            .client
            .post(self.url(path))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().unwrap_or(serde_json::Value::Null))
    }

    /// The Gold company `goldco` with `NAME@goldco.example` for each of
    /// `names`, each invited into `acme` by `owner` with `scopes` and
    /// accepted; their user ids, in order (the demo entities loaded).
    pub fn goldco_partners(&self, names: &[&str], scopes: &[&str]) -> Vec<String> {
        let emails: Vec<String> = names
            .iter()
            .map(|n| format!("{n}@goldco.example"))
            .collect();
        let (s, b) = self.put(
            "/v1/partner-companies/goldco",
            &serde_json::json!({"name": "GoldCo", "status": "gold", "certified": true,
                                "emails": emails}),
        );
        assert_eq!(s, 200, "{b}");
        let mut ids = Vec::new();
        for email in &emails {
            let (s, b) = self.post_with_token(
                "/v1/accounts/acme/partners",
                &serde_json::json!({"actor": "owner", "email": email, "scopes": scopes}),
            );
            assert_eq!(s, 201, "{b}");
            let id = b["user"]["id"].as_str().unwrap_or_default().to_string();
            let (s, b) =
                self.post_with_token(&format!("/v1/users/{id}/accept"), &serde_json::json!({}));
            assert_eq!(s, 200, "{b}");
            ids.push(id);
        }
        ids
    }

    pub fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let r = self.client.get(self.url(path)).send().unwrap();
        let status = r.status().as_u16();
        (status, r.json().unwrap_or(serde_json::Value::Null))
    }

    /// A PUT with the bearer token.
    pub fn put(&self, path: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
        let r = self
            .client
            .put(self.url(path))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().unwrap_or(serde_json::Value::Null))
    }

    /// The Prometheus text of `GET /metrics`.
    /// The server's resident set size, in bytes (`/proc/<pid>/status` VmRSS).
    pub fn rss(&self) -> usize {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kib: usize = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        kib * 1024
    }

    pub fn metrics(&self) -> String {
        self.client
            .get(self.url("/metrics"))
            .send()
            .unwrap()
            .text()
            .unwrap()
    }

    pub fn put_entities(&self, body: &serde_json::Value) -> (u16, serde_json::Value) {
        self.put("/v1/entities", body)
    }

    pub fn load_demo(&self) {
        let demo: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(repo().join("demo/entities.json")).unwrap(),
        )
        .unwrap();
        let (status, body) = self.put_entities(&demo);
        assert_eq!(status, 200, "{body}");
    }

    pub fn version(&self) -> String {
        self.get("/v1/policies").1["version"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// Poll `/v1/policies` until `pred` holds (or panic after `within`).
    /// Poll `GET /v1/policies` until `pred` holds; fail after `expected`
    /// or [`PATIENCE`], whichever is longer (a busy machine may be slow;
    /// reload speed is the benchmarks' business).
    pub fn wait_policies(
        &self,
        expected: Duration,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + expected.max(PATIENCE);
        loop {
            let (_, body) = self.get("/v1/policies");
            if pred(&body) {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: last {body}"
            );
            std::thread::yield_now();
        }
    }

    pub fn ask(&self, principal: &str, action: &str, resource: &str) -> serde_json::Value {
        let (status, body) = self.post(
            "/v1/is_authorized",
            &serde_json::json!({"principal": principal, "action": format!("Action::\"{action}\""), "resource": resource}),
        );
        assert_eq!(status, 200, "{body}");
        body
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The PostgreSQL server the tests use (`PARTNERGATE_TEST_PG`, default the
/// local one). `None` (with a plain "skipped" line) when it is unreachable,
/// unless `PARTNERGATE_TEST_PG_REQUIRED=1` (CI), which makes that a failure.
pub fn pg_base_url() -> Option<String> {
    let url = std::env::var("PARTNERGATE_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    match postgres::Client::connect(&url, postgres::NoTls) {
        Ok(_) => Some(url),
        Err(e) => {
            if std::env::var("PARTNERGATE_TEST_PG_REQUIRED").is_ok_and(|v| v == "1") {
                panic!("PostgreSQL is required (PARTNERGATE_TEST_PG_REQUIRED=1) but {url} is unreachable: {e}");
            }
            eprintln!("skipped: PostgreSQL not reachable at {url} ({e})");
            None
        }
    }
}

/// A fresh, empty PostgreSQL schema for one test: the URL whose
/// search_path points at it. Dropped with the returned guard.
pub struct PgSchema {
    pub url: String,
    base: String,
    name: String,
}

impl PgSchema {
    pub fn new() -> Option<Self> {
        let base = pg_base_url()?;
        let name = format!("pgtest_{}", uuid_like());
        let mut c = postgres::Client::connect(&base, postgres::NoTls).unwrap();
        c.batch_execute(&format!("CREATE SCHEMA {name}")).unwrap();
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}options=-csearch_path%3D{name}");
        Some(PgSchema { url, base, name })
    }
    /// The same schema reached through another host:port (a proxy).
    pub fn url_via(&self, addr: &str) -> String {
        self.url.replace("127.0.0.1:5432", addr)
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        if let Ok(mut c) = postgres::Client::connect(&self.base, postgres::NoTls) {
            let _ = c.batch_execute(&format!("DROP SCHEMA {} CASCADE", self.name));
        }
    }
}

fn uuid_like() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{:x}{:x}", n, std::process::id())
}

/// The sum of the samples of the metric `name` in Prometheus text whose
/// labels include every one of `labels` (e.g. `listener="grpc"`); 0 when
/// there is none.
pub fn metric(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Whether the server has closed `c` (EOF or reset) within `within`;
/// what it sends meanwhile (a response, an HTTP/2 preface) is read past.
pub fn closed_within(c: &mut TcpStream, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        c.set_read_timeout(Some(
            deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1)),
        ))
        .unwrap();
        match c.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return false
            }
            Err(_) => return true,
        }
    }
    false
}
