//! The decision log flooded by size, and its chain check run by strangers:
//! large records through the real `partnergate serve` keep the process and
//! the writer's backlog within the queue's byte bound; rotation keeps at
//! most `--audit-max-files` rotated files, each deletion stated by a chained
//! retention record that `audit verify` reports (and a file deleted by hand
//! is still a break); the console's chain check needs the token, runs one
//! at a time, stops when its request times out, and does not hold SIGTERM
//! past the grace.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use partnergate::audit::{AuditConfig, AuditLog, DecisionEvent, EntitySlice, SyncMode};
use partnergate::engine::{Decision, Effect};
use serde_json::{json, Value};

use crate::common::{metric, Server, Workspace, BIN};

/// Request entities of about `kib` KiB: new accounts whose names are
/// strings of 4 KiB (each well under any per-string limit). They are added
/// to the decision's entity slice, so each record carries them.
fn big_entities(kib: usize) -> Value {
    let name = "x".repeat(4096);
    (0..kib / 4)
        .map(|i| json!({"uid": {"type": "Account", "id": format!("a{i}")}, "attrs": {"name": name}, "parents": []}))
        .collect()
}

fn decide_with(url: &str, client: &reqwest::blocking::Client, entities: &Value) -> u16 {
    client
        .post(url)
        .json(&json!({
            "principal": "User::\"pat\"",
            "action": "Action::\"dismiss_user\"",
            "resource": "User::\"emma\"",
            "entities": entities,
        }))
        .send()
        .map_or(0, |r| r.status().as_u16())
}

fn log_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("decisions.jsonl")
        })
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

/// The rotated files of the data directory's log.
fn rotated(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            n.strip_prefix("decisions.jsonl.")
                .is_some_and(|r| r.bytes().all(|b| b.is_ascii_digit()))
        })
        .collect();
    v.sort();
    v
}

fn stop(mut s: Server) {
    s.signal("TERM");
    let deadline = Instant::now() + Duration::from_secs(60);
    while s.child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the sidecar did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn verify_text(log: &Path) -> (i32, String) {
    let out = Command::new(BIN)
        .args(["audit", "verify"])
        .arg(log)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn large_records_keep_the_writers_backlog_and_the_process_within_the_queues_byte_bound() {
    let ws = Workspace::new();
    // fsync per record: the writer is slower than the clients, so the queue
    // fills; its count bound (8192) alone would hold gigabytes of records.
    let s = Server::start(&ws, &["--audit-sync", "always"]);
    s.load_demo();
    let base = s.rss();
    let context = Arc::new(big_entities(400));
    let stop_clients = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let clients: Vec<_> = (0..6)
        .map(|_| {
            let (context, stop_clients, sent) =
                (context.clone(), stop_clients.clone(), sent.clone());
            let url = s.url("/v1/is_authorized");
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(120))
                    .build()
                    .unwrap();
                while !stop_clients.load(Ordering::Relaxed) {
                    if decide_with(&url, &client, &context) == 200 {
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    let mut peak = 0;
    let until = Instant::now() + Duration::from_secs(30);
    while Instant::now() < until {
        peak = peak.max(s.rss());
        std::thread::sleep(Duration::from_millis(100));
    }
    stop_clients.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    peak = peak.max(s.rss());
    // What the writer still had to write when the clients stopped.
    let at_stop = log_bytes(&ws.data());
    let mut last = at_stop;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        std::thread::sleep(Duration::from_millis(1000));
        let now = log_bytes(&ws.data());
        if now == last || Instant::now() > deadline {
            last = now;
            break;
        }
        last = now;
    }
    let backlog = last - at_stop;
    let sent = sent.load(Ordering::Relaxed);
    eprintln!(
        "flood: {sent} decisions of ~400 KiB; rss {} MiB -> peak {} MiB; backlog after the clients stopped {} MiB",
        base >> 20,
        peak >> 20,
        backlog >> 20
    );
    assert!(sent > 0, "no decision was answered");
    // The queue holds at most 64 MiB, counted conservatively (the records'
    // bytes on disk are fewer than what they held in memory).
    assert!(
        backlog <= 64 << 20,
        "the writer wrote {} MiB after the clients stopped: more than the queue's 64 MiB bound",
        backlog >> 20
    );
    assert!(
        peak <= base + (160 << 20),
        "the process grew from {} MiB to {} MiB under large records",
        base >> 20,
        peak >> 20
    );
    stop(s);
    let (code, text) = verify_text(&ws.data().join("decisions.jsonl"));
    assert_eq!(code, 0, "{text}");
}

#[test]
fn past_the_byte_bound_drop_counts_the_refused_records_and_a_gap_record_states_them() {
    let ws = Workspace::new();
    let s = Server::start(
        &ws,
        &[
            "--audit-sync",
            "always",
            "--audit-on-full",
            "drop",
            "--audit-queue-bytes",
            "2000000",
        ],
    );
    let context = big_entities(400);
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (url, context) = (s.url("/v1/is_authorized"), context.clone());
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::new();
                let body = json!({"principal": "User::\"pat\"", "action": "Action::\"dismiss_user\"",
                    "resource": "User::\"emma\"", "entities": context});
                for _ in 0..40 {
                    let _ = client.post(&url).json(&body).send();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let (_, ready) = s.get("/readyz");
    let dropped = ready["audit"]["dropped"].as_u64().unwrap_or(0);
    assert!(dropped > 0, "nothing was dropped past 2 MB: {ready}");
    assert_eq!(ready["audit"]["queue_bytes_limit"], 2_000_000, "{ready}");
    let m = s.metrics();
    assert!(
        metric(&m, "partnergate_audit_records_dropped_total", &[]) >= dropped as f64,
        "{m}"
    );
    stop(s);
    let out = Command::new(BIN)
        .args(["audit", "verify", "--json"])
        .arg(ws.data().join("decisions.jsonl"))
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["intact"], true, "{v}");
    let stated: u64 = v["report"]["gaps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["queue_dropped"].as_u64().unwrap())
        .sum();
    assert_eq!(stated, dropped, "{v}");
}

#[test]
fn rotation_keeps_at_most_the_retained_files_and_verify_reports_each_retention() {
    let ws = Workspace::new();
    // 20 KiB records, 100 KB files: ~5 records a file; defaults keep 10.
    let s = Server::start(&ws, &["--audit-max-bytes", "100000"]);
    let context = big_entities(20);
    let client = reqwest::blocking::Client::new();
    let url = s.url("/v1/is_authorized");
    for _ in 0..150 {
        assert_eq!(decide_with(&url, &client, &context), 200);
    }
    stop(s);
    let dir = ws.data();
    let log = dir.join("decisions.jsonl");
    let files = rotated(&dir);
    assert!(
        files.len() <= 10,
        "{} rotated files kept: {files:?}",
        files.len()
    );
    let (code, text) = verify_text(&log);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("retention record"), "{text}");
    // Every reader takes the new kind.
    let out = Command::new(BIN)
        .args(["audit", "query", "--kind", "retention"])
        .arg(&log)
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{listed}");
    assert!(listed.contains("retention"), "{listed}");
    let out = Command::new(BIN)
        .args(["audit", "query"])
        .arg(&log)
        .output()
        .unwrap();
    assert!(out.status.success());

    // One more old file deleted by hand: no retention record states it.
    let oldest = files
        .iter()
        .max_by_key(|n| n.rsplit('.').next().unwrap().parse::<u32>().unwrap())
        .unwrap();
    std::fs::remove_file(dir.join(oldest)).unwrap();
    let (code, text) = verify_text(&log);
    assert_ne!(code, 0, "{text}");
    assert!(
        text.contains("FAILED") && text.contains("no retention record names that start"),
        "{text}"
    );
}

/// A log of about `bytes` bytes of large decisions, written directly.
fn big_log(path: &Path, bytes: u64) {
    let mut config = AuditConfig::file(path);
    config.sync = SyncMode::Never;
    config.max_file_bytes = None;
    let (log, _) = AuditLog::open(config).unwrap();
    let context = json!({ "pad": "x".repeat(8 * 1024) });
    let slice = EntitySlice::new(json!([]));
    let decision = Decision {
        decision: Effect::Deny,
        reasons: Vec::new(),
        errors: Vec::new(),
        policy_version: "v".into(),
    };
    let n = bytes / (8 * 1024 + 600);
    for _ in 0..n {
        log.log(
            DecisionEvent::new(
                "User::\"pat\"",
                "Action::\"dismiss_user\"",
                "User::\"emma\"",
                slice.clone(),
                decision.clone(),
            )
            .with_context(Some(context.clone())),
        );
    }
    log.shutdown();
}

fn verify_status(s: &Server, token: Option<&str>) -> (u16, Option<String>) {
    let mut r = s.client.get(s.url("/console/f/decisions/verify"));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let r = r.send().unwrap();
    let retry = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    (r.status().as_u16(), retry)
}

fn wait_metric(s: &Server, name: &str, labels: &[&str], want: f64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let m = s.metrics();
        if metric(&m, name, labels) == want {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_consoles_chain_check_needs_the_token_runs_once_and_stops_with_its_request() {
    let ws = Workspace::new();
    big_log(&ws.data().join("decisions.jsonl"), 300 << 20);
    let s = Server::start(&ws, &["--request-timeout-ms", "1500"]);
    let (code, _) = verify_status(&s, None);
    assert_eq!(code, 401, "the chain check answered without the token");
    let (base, token) = (s.base.clone(), s.token.clone());
    let first = std::thread::spawn(move || {
        let client = reqwest::blocking::Client::new();
        client
            .get(format!("{base}/console/f/decisions/verify"))
            .bearer_auth(token)
            .send()
            .map_or(0, |r| r.status().as_u16())
    });
    wait_metric(
        &s,
        "partnergate_console_verify_running",
        &[],
        1.0,
        "the first chain check to start",
    );
    let (code, retry) = verify_status(&s, Some(&s.token));
    assert_eq!(code, 429, "a second chain check ran beside the first");
    assert!(retry.is_some(), "the 429 has no Retry-After");
    assert_eq!(first.join().unwrap(), 408);
    // The scan ends because its request did: stopped, not finished.
    wait_metric(
        &s,
        "partnergate_console_verify_running",
        &[],
        0.0,
        "the timed-out chain check to end",
    );
    let m = s.metrics();
    assert_eq!(
        metric(
            &m,
            "partnergate_console_verify_total",
            &["outcome=\"stopped\""]
        ),
        1.0,
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "partnergate_console_verify_total",
            &["outcome=\"done\""]
        ),
        0.0,
        "{m}"
    );
}

#[test]
fn sigterm_with_a_chain_check_in_flight_exits_within_the_grace() {
    let ws = Workspace::new();
    big_log(&ws.data().join("decisions.jsonl"), 300 << 20);
    let mut s = Server::start(
        &ws,
        &[
            "--request-timeout-ms",
            "600000",
            "--shutdown-grace-ms",
            "1000",
        ],
    );
    let (base, token) = (s.base.clone(), s.token.clone());
    let _scan = std::thread::spawn(move || {
        let _ = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(600))
            .build()
            .unwrap()
            .get(format!("{base}/console/f/decisions/verify"))
            .bearer_auth(token)
            .send();
    });
    wait_metric(
        &s,
        "partnergate_console_verify_running",
        &[],
        1.0,
        "the chain check to start",
    );
    s.signal("TERM");
    // The grace (1 s, for each of the two listeners and the runtime) plus
    // a generous margin; the scan alone takes far longer.
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(st) = s.child.try_wait().unwrap() {
            break Some(st);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        status.is_some(),
        "SIGTERM with a chain check in flight did not exit within the grace and the margin"
    );
}
