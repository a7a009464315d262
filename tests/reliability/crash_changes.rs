//! `kill -9` storms against the change records of acknowledged writes: entity
//! writes (`PUT /v1/entities`) and invitations (`POST /v1/accounts/acme/users`)
//! run from several clients while the real `partnergate serve` is killed with
//! SIGKILL mid-stream, several times, and restarted on the same data (SQLite;
//! PostgreSQL when reachable). A write's change record is queued for the
//! log's writer after the commit, so a kill in between loses it unless the
//! next start writes it from the store. At the end, every write answered
//! 2xx has its change record in the log exactly once (found by the request
//! id each write sent), `partnergate audit verify` passes, and the records
//! written at a start are marked `recovered` and carry a `change_id` that
//! nothing else in the log carries.
//!
//! The log's linger is raised (`--audit-linger-ms`) so that the window
//! between an acknowledgement and the record's write is wide enough for
//! every kill to fall into it: each round ends with one write answered and
//! the kill right after it.

use std::collections::HashMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::{entities, PgSchema, Server, Workspace, BIN};

const ROUNDS: usize = 5;
const CLIENTS: usize = 4;
/// Writes acknowledged in a round before its kill.
const PER_ROUND: usize = 150;

/// One write with the token and `X-Request-ID: rid`: an entity write (even
/// `n`) or an invitation (odd `n`). `Some(status)`, or `None` when the
/// server was unreachable (killed).
fn write(s: &Server, n: usize, rid: &str) -> Option<u16> {
    let (method, path, body) = if n.is_multiple_of(2) {
        (
            reqwest::Method::PUT,
            "/v1/entities",
            json!([entities::user(&format!("w{n}"), "acme").json()]),
        )
    } else {
        (
            reqwest::Method::POST,
            "/v1/accounts/acme/users",
            json!({"actor": "owner", "email": format!("i{n}@acme.example")}),
        )
    };
    s.client
        .request(method, s.url(path))
        .bearer_auth(&s.token)
        .header("X-Request-ID", rid)
        .json(&body)
        .send()
        .ok()
        .map(|r| r.status().as_u16())
}

/// Every record of the log at `path` (and its rotated files), oldest first.
fn records(path: &std::path::Path) -> Vec<Value> {
    let mut files: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name == "decisions.jsonl"
                || name
                    .strip_prefix("decisions.jsonl.")
                    .is_some_and(|n| n.parse::<u32>().is_ok())
        })
        .collect();
    files.sort_by_key(|p| std::cmp::Reverse(p.to_string_lossy().len()));
    files
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .filter(|l| !l.is_empty())
                .map(|l| serde_json::from_str::<Value>(l).unwrap())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// `ROUNDS` rounds of `CLIENTS` writers against a server started with
/// `flags`, each ended by SIGKILL right after a write was answered; then one
/// more start (which writes what the last kill lost) and the checks.
fn storm(ws: &Workspace, flags: &[&str]) {
    let mut flags = flags.to_vec();
    flags.extend(["--audit-linger-ms", "200"]);
    let acked: Mutex<Vec<String>> = Mutex::default();
    let next = AtomicUsize::new(0);
    for round in 0..ROUNDS {
        let mut s = Server::start(ws, &flags);
        if round == 0 {
            s.load_demo();
        }
        let stop = AtomicBool::new(false);
        let answered = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for _ in 0..CLIENTS {
                scope.spawn(|| {
                    while !stop.load(Ordering::Acquire) {
                        let n = next.fetch_add(1, Ordering::AcqRel);
                        let rid = format!("crash-{n}");
                        match write(&s, n, &rid) {
                            Some(st) if (200..300).contains(&st) => {
                                acked.lock().unwrap().push(rid);
                                answered.fetch_add(1, Ordering::AcqRel);
                            }
                            Some(st) => panic!("write {rid} answered {st}"),
                            None => break,
                        }
                    }
                });
            }
            let deadline = Instant::now() + Duration::from_secs(120);
            while answered.load(Ordering::Acquire) < PER_ROUND && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            // One more write answered, and the kill at once: its record is
            // still in the writer's queue (the linger), with others.
            let n = next.fetch_add(1, Ordering::AcqRel);
            let rid = format!("crash-{n}");
            let st = write(&s, n, &rid);
            assert!(
                st.is_some_and(|st| (200..300).contains(&st)),
                "{rid}: {st:?}"
            );
            acked.lock().unwrap().push(rid);
            s.signal("KILL");
            stop.store(true, Ordering::Release);
        });
        s.child.wait().unwrap();
        assert!(
            answered.load(Ordering::Acquire) >= PER_ROUND,
            "round {round}: only {} writes answered",
            answered.load(Ordering::Acquire)
        );
    }
    // The last start writes what the last kill lost, before it serves.
    let s = Server::start(ws, &flags);
    assert_eq!(s.get("/healthz").0, 200);
    drop(s);

    let log = ws.data().join("decisions.jsonl");
    let all = records(&log);
    let changes: Vec<&Value> = all.iter().filter(|r| r["kind"] == "change").collect();
    let mut by_request: HashMap<&str, usize> = HashMap::new();
    for c in &changes {
        if let Some(rid) = c["request_id"].as_str() {
            *by_request.entry(rid).or_default() += 1;
        }
    }
    let acked = acked.into_inner().unwrap();
    let missing: Vec<&String> = acked
        .iter()
        .filter(|rid| !by_request.contains_key(rid.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged writes have no change record in the log: {missing:?}",
        missing.len(),
        acked.len()
    );
    // Each write writes one entity: one change record.
    let twice: Vec<_> = acked
        .iter()
        .filter_map(|rid| {
            by_request
                .get(rid.as_str())
                .filter(|n| **n > 1)
                .map(|n| (rid, n))
        })
        .collect();
    assert!(
        twice.is_empty(),
        "change records in the log twice: {twice:?}"
    );
    let mut ids: HashMap<&str, usize> = HashMap::new();
    for c in &changes {
        if let Some(id) = c["change_id"].as_str() {
            *ids.entry(id).or_default() += 1;
        }
    }
    assert!(
        ids.values().all(|n| *n == 1),
        "a change_id twice in the log"
    );
    let recovered: Vec<&&Value> = changes.iter().filter(|c| c["recovered"] == true).collect();
    assert!(
        recovered.iter().all(|c| c["change_id"].is_string()),
        "{recovered:?}"
    );
    assert!(
        !recovered.is_empty(),
        "no change record was recovered: the kills lost nothing to recover"
    );
    assert!(
        all.iter()
            .all(|r| r["kind"] == "change" || r.get("recovered").is_none()),
        "only change records are marked recovered"
    );
    let o = Command::new(BIN)
        .args(["audit", "verify"])
        .arg(&log)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "audit verify: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    eprintln!(
        "{} writes acknowledged over {ROUNDS} kills; {} change records recovered at starts",
        acked.len(),
        recovered.len()
    );
}

#[test]
fn kill_9_storms_on_sqlite_lose_no_change_record_of_an_acknowledged_write() {
    let ws = Workspace::new();
    storm(&ws, &[]);
}

#[test]
fn kill_9_storms_on_postgres_lose_no_change_record_of_an_acknowledged_write() {
    let Some(pg) = PgSchema::new() else { return };
    let ws = Workspace::new();
    storm(&ws, &["--store", &pg.url, "--replica-id", "storm"]);
}
