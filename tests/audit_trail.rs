//! One audit trail across replicas, with real parts: three `partnergate
//! serve` replicas on the real PostgreSQL behind a real nginx (round
//! robin), decisions spread over them; one replica killed (`kill -9`) mid-
//! stream and restarted, the shipper's PostgreSQL backend terminated
//! mid-ship, and then every replica's records are in the database exactly
//! once, each chain verifies, and the partner activity report over HTTP
//! (read from the database) is the union of the replicas' own files. Each
//! test runs in a schema of its own, dropped after.

mod common;
use common::audit_db::{cli, client, file_records, rows_of};

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{PgSchema, Server, Workspace, PATIENCE};
use serde_json::{json, Value};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// nginx, if installed (`PARTNERGATE_NGINX`, else on the PATH); required
/// when `PARTNERGATE_TEST_GATEWAY_REQUIRED=1`.
fn nginx_or_skip() -> Option<PathBuf> {
    let found = std::env::var("PARTNERGATE_NGINX")
        .ok()
        .map(PathBuf::from)
        .filter(|p| p.exists())
        .or_else(|| {
            ["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"]
                .iter()
                .map(PathBuf::from)
                .find(|p| p.exists())
        });
    if found.is_none() {
        assert!(
            std::env::var("PARTNERGATE_TEST_GATEWAY_REQUIRED").as_deref() != Ok("1"),
            "nginx is required (PARTNERGATE_TEST_GATEWAY_REQUIRED=1) but PARTNERGATE_NGINX is not set"
        );
        eprintln!("skipped: nginx not installed (set PARTNERGATE_NGINX)");
    }
    found
}

/// nginx balancing over `upstreams` (round robin); stopped on drop.
struct Nginx {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Nginx {
    fn start(bin: &Path, upstreams: &[String]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let servers: String = upstreams
            .iter()
            .map(|u| {
                format!(
                    "    server {} max_fails=0;\n",
                    u.trim_start_matches("http://")
                )
            })
            .collect();
        let conf = format!(
            "pid {dir}/nginx.pid;\nworker_processes 1;\nerror_log {dir}/error.log error;\nevents {{ worker_connections 256; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {dir}/body;\n  proxy_temp_path {dir}/proxy;\n\
             fastcgi_temp_path {dir}/fcgi;\n  uwsgi_temp_path {dir}/uwsgi;\n  scgi_temp_path {dir}/scgi;\n\
             upstream replicas {{\n{servers}  }}\n\
             server {{\n    listen 127.0.0.1:{port};\n    location / {{\n      proxy_pass http://replicas;\n\
             proxy_next_upstream error timeout;\n      proxy_connect_timeout 2s;\n    }}\n  }}\n}}\n",
            dir = dir.path().display()
        );
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, conf).unwrap();
        let child = Command::new(bin)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&path)
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let client = reqwest::blocking::Client::new();
        let deadline = Instant::now() + PATIENCE;
        while client.get(format!("{base}/healthz")).send().is_err() {
            assert!(Instant::now() < deadline, "nginx did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Nginx {
            child,
            base,
            _dir: dir,
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A replica named `name` (unique to this test run, so that its shipper's
/// backend is told apart from other tests' in `pg_stat_activity`).
fn replica(ws: &Workspace, url: &str, name: &str, token_file: Option<&Path>) -> Server {
    let mut args = vec![
        "--store",
        url,
        "--replica-id",
        name,
        "--audit-ship-interval-ms",
        "50",
        "--audit-ship-batch",
        "64",
        "--no-watch",
    ];
    let tf;
    if let Some(t) = token_file {
        tf = t.display().to_string();
        args.extend(["--token-file", &tf]);
    }
    Server::start(ws, &args)
}

/// The decision ids of a log file (its rotated files included).
fn file_decisions(log: &Path) -> Vec<String> {
    let (code, out, err) = cli(&[
        "audit",
        "query",
        log.to_str().unwrap(),
        "--kind",
        "decision",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    out.lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v["decision_id"].as_str().unwrap().to_string()
        })
        .collect()
}

/// Wait until the replica's shipper has the whole file in the database.
fn shipped(s: &Server, log: &Path) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let n = file_records(log);
        let ship = s.get("/readyz").1["audit"]["ship"].clone();
        if ship["head_seq"].as_u64() == Some(n) && ship["lag_records"].as_u64() == Some(0) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{}: not shipped: {ship} (file: {n} records)",
            log.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn three_replicas_behind_nginx_ship_every_decision_once_through_a_kill_and_a_cut() {
    let Some(pg) = PgSchema::new() else { return };
    let Some(nginx_bin) = nginx_or_skip() else {
        return;
    };
    let tag = format!("trail{}", std::process::id());
    let names: Vec<String> = ["a", "b", "c"]
        .iter()
        .map(|n| format!("{tag}-{n}"))
        .collect();
    let ws: Vec<Workspace> = (0..3).map(|_| Workspace::new()).collect();
    let a = replica(&ws[0], &pg.url, &names[0], None);
    a.load_demo();
    let token_file = ws[0].data().join("token");
    let mut replicas = vec![
        a,
        replica(&ws[1], &pg.url, &names[1], Some(&token_file)),
        replica(&ws[2], &pg.url, &names[2], Some(&token_file)),
    ];
    let token = replicas[0].token.clone();
    // Every replica sees the demo entities before the load starts.
    for r in &replicas {
        let deadline = Instant::now() + PATIENCE;
        while r.get("/v1/entities/User/pat").0 != 200 {
            assert!(Instant::now() < deadline, "{} never saw pat", r.base);
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let upstreams: Vec<String> = replicas.iter().map(|r| r.base.clone()).collect();
    let lb = Nginx::start(&nginx_bin, &upstreams);

    // A stream of decisions through nginx: Pat (a partner of acme)
    // dismisses Emma; answers that fail (a replica killed under a request)
    // are counted apart.
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let _stop_on_drop = common::SetOnDrop(stop.clone());
    let sender = {
        let (stop, ok, base) = (stop.clone(), ok.clone(), lb.base.clone());
        std::thread::spawn(move || {
            let c = reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap();
            let body = json!({"principal": "User::\"pat\"", "action": "Action::\"dismiss_user\"", "resource": "User::\"emma\""});
            while !stop.load(Ordering::Relaxed) {
                if let Ok(r) = c
                    .post(format!("{base}/v1/is_authorized"))
                    .json(&body)
                    .send()
                {
                    if r.status() == 200 {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
    };
    let at_least = |n: u64| {
        let deadline = Instant::now() + PATIENCE;
        while ok.load(Ordering::Relaxed) < n {
            assert!(Instant::now() < deadline, "the load stalled");
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    at_least(150);

    // kill -9 of replica b mid-stream, then its restart on the same data
    // directory (the same log, the same log id).
    let _ = replicas[1].child.kill();
    let _ = replicas[1].child.wait();
    at_least(ok.load(Ordering::Relaxed) + 60);
    replicas[1] = replica(&ws[1], &pg.url, &names[1], Some(&token_file));

    // The shipper's backend of replica a terminated several times mid-ship.
    let mut admin = client(&pg.url);
    let app = format!("partnergate-ship:{}", names[0]);
    let mut cut = 0;
    for _ in 0..5 {
        at_least(ok.load(Ordering::Relaxed) + 40);
        cut += admin
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
                &[&app],
            )
            .unwrap()
            .len();
    }
    assert!(cut > 0, "no shipper backend named {app} was found");
    at_least(ok.load(Ordering::Relaxed) + 60);
    stop.store(true, Ordering::Relaxed);
    sender.join().unwrap();

    // Every replica's file in the database, exactly once.
    let logs: Vec<PathBuf> = ws
        .iter()
        .map(|w| w.data().join("decisions.jsonl"))
        .collect();
    let mut c = client(&pg.url);
    let mut decisions_in_files = Vec::new();
    for (r, log) in replicas.iter().zip(&logs) {
        shipped(r, log);
        let n = file_records(log) as i64;
        let id = partnergate::audit::recovered::log_id(log).unwrap();
        assert_eq!(rows_of(&mut c, &id), (n, n, 1, n), "{}", log.display());
        let d = file_decisions(log);
        assert!(!d.is_empty(), "{}: no decision reached it", log.display());
        decisions_in_files.extend(d);
    }
    // (A decision answered by b just before its kill may not have reached
    // its file: the answer does not wait for the record by default. What
    // the files hold is what the database must hold.)
    let in_db: i64 = c
        .query_one(
            "SELECT count(*) FROM audit_records WHERE kind = 'decision'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(in_db as usize, decisions_in_files.len());
    let lag = replicas[0].get("/readyz").1["audit"]["ship"].clone();
    assert_eq!(lag["lag_seconds"].as_f64(), Some(0.0), "{lag}");

    // Each replica's chain verified in the database.
    let (code, out, err) = cli(&["audit", "verify", "--pg", &pg.url]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.matches("chain intact").count(), 3, "{out}");

    // The activity report over HTTP (any replica, through nginx) reads the
    // database: the union of the replicas' own files.
    let http = reqwest::blocking::Client::new();
    let report: Value = http
        .get(format!("{}/v1/accounts/acme/partner-activity", lb.base))
        .bearer_auth(&token)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(report["chain"]["verified"], true, "{}", report["chain"]);
    let mut from_http: Vec<String> = report["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["decision_id"].as_str().unwrap().to_string())
        .collect();
    let mut from_files = Vec::new();
    for log in &logs {
        let (code, out, err) = cli(&[
            "audit",
            "partner-activity",
            log.to_str().unwrap(),
            "--account",
            "acme",
            "--json",
        ]);
        assert_eq!(code, 0, "{out}{err}");
        let v: Value = serde_json::from_str(&out).unwrap();
        from_files.extend(
            v["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["decision_id"].as_str().unwrap().to_string()),
        );
    }
    assert!(!from_http.is_empty());
    from_http.sort();
    from_files.sort();
    assert_eq!(from_http, from_files);

    // The console's Decisions page over the database lists records of
    // every replica.
    let page = http
        .get(format!(
            "{}/console/f/decisions?kind=decision",
            replicas[2].base
        ))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(page.status(), 200);
    let page = page.text().unwrap();
    assert!(page.contains("of every replica"), "{page}");
    // A garbage cursor is a message, not a failure.
    let bad = http
        .get(format!(
            "{}/console/f/decisions?before=1.2.%27%22%3Cx%3E",
            replicas[2].base
        ))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert!(bad.status().as_u16() < 500);
}
