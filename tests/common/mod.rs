//! Shared helpers for the integration tests: a real `partnergate serve`
//! process on an ephemeral port, over temp copies of the shipped pack.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
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
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.path().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// A running sidecar; killed on drop.
pub struct Server {
    pub child: Child,
    pub base: String,
    pub token: String,
    pub client: reqwest::blocking::Client,
}

impl Server {
    pub fn start(ws: &Workspace, extra: &[&str]) -> Self {
        let mut child = Command::new(BIN)
            .arg("serve")
            .arg("--policies")
            .arg(ws.policies())
            .arg("--schema")
            .arg(ws.schema())
            .arg("--data-dir")
            .arg(ws.data())
            .args(["--bind", "127.0.0.1:0"])
            .args(extra)
            .env(
                "RUST_LOG",
                std::env::var("PG_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let base = line
            .trim()
            .strip_prefix("partnergate listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .to_string();
        let token = std::fs::read_to_string(ws.data().join("token"))
            .unwrap_or_default()
            .trim()
            .to_string();
        Server {
            child,
            base,
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

    pub fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let r = self.client.get(self.url(path)).send().unwrap();
        let status = r.status().as_u16();
        (status, r.json().unwrap_or(serde_json::Value::Null))
    }

    pub fn put_entities(&self, body: &serde_json::Value) -> (u16, serde_json::Value) {
        let r = self
            .client
            .put(self.url("/v1/entities"))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().unwrap_or(serde_json::Value::Null))
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
    pub fn wait_policies(
        &self,
        within: Duration,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + within;
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
