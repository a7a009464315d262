//! Several `partnergate serve` replicas on one PostgreSQL database: shared
//! entities through the change feed, catch-up after a restart, and decisions
//! from memory while the database is unreachable (a TCP proxy in front of
//! PostgreSQL is cut and restored, so the real server keeps running for the
//! other tests).

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{PgSchema, Server, Workspace};
use serde_json::json;

const EMMA: &str = "User::\"emma\"";
const ACME: &str = "Account::\"acme\"";

fn start(ws: &Workspace, url: &str, replica: &str) -> Server {
    Server::start(ws, &["--store", url, "--replica-id", replica])
}

fn emma_with(s: &Server, attrs: serde_json::Value) -> serde_json::Value {
    let mut emma = s.get("/v1/entities/User/emma").1;
    for (k, v) in attrs.as_object().unwrap() {
        emma["attrs"][k] = v.clone();
    }
    emma
}

/// Poll `f` until it returns true; returns how long it took. `expected`
/// is how soon it should hold on an idle machine (printed when passed);
/// the test fails only after a generous deadline, so that a busy machine
/// does not fail it (propagation speed is measured by the benchmarks).
fn within(expected: Duration, what: &str, f: impl Fn() -> bool) -> Duration {
    let limit = expected.max(common::PATIENCE);
    let t0 = Instant::now();
    while !f() {
        assert!(
            t0.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::yield_now();
    }
    let took = t0.elapsed();
    if took > expected {
        eprintln!("{what}: took {took:?}, more than the {expected:?} expected");
    }
    took
}

#[test]
fn a_change_through_one_replica_reaches_the_other_and_a_restart_catches_up() {
    let Some(pg) = PgSchema::new() else { return };
    let ws_a = Workspace::new();
    let ws_b = Workspace::new();
    let a = start(&ws_a, &pg.url, "a");
    let mut b = start(&ws_b, &pg.url, "b");
    a.load_demo();
    // B learns A's entities through the feed.
    within(Duration::from_secs(1), "B to see the demo entities", || {
        b.get("/v1/entities/User/emma").0 == 200
    });
    assert_eq!(b.ask(EMMA, "view_account", ACME)["decision"], "Allow");

    // A dismisses emma: B's decision changes (within a second on an idle
    // machine; the test waits longer).
    let (st, _) = a.put_entities(&json!([emma_with(&a, json!({"status": "dismissed"}))]));
    assert_eq!(st, 200);
    let took = within(Duration::from_secs(1), "B's decision to change", || {
        b.ask(EMMA, "view_account", ACME)["decision"] == "Deny"
    });
    eprintln!("change reached the other replica after {took:?}");

    // B is down while A rehires emma; restarted, B catches up.
    let _ = b.child.kill();
    let _ = b.child.wait();
    let (st, _) = a.put_entities(&json!([emma_with(&a, json!({"status": "active"}))]));
    assert_eq!(st, 200);
    b = start(&ws_b, &pg.url, "b");
    assert_eq!(b.ask(EMMA, "view_account", ACME)["decision"], "Allow");
    // A replica's own write is visible to its own next decision.
    let (st, _) = b.put_entities(&json!([emma_with(&b, json!({"status": "invited"}))]));
    assert_eq!(st, 200);
    assert_eq!(b.ask(EMMA, "view_account", ACME)["decision"], "Deny");
}

/// A TCP proxy to PostgreSQL that can be cut (every connection closed, new
/// ones refused) and restored.
struct Proxy {
    addr: String,
    up: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn start(target: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let up = Arc::new(AtomicBool::new(true));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (up2, conns2) = (up.clone(), conns.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if !up2.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                conns2
                    .lock()
                    .unwrap()
                    .extend([client.try_clone().unwrap(), server.try_clone().unwrap()]);
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16384];
                        while let Ok(n) = from.read(&mut buf) {
                            if n == 0 || to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        Proxy { addr, up, conns }
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

#[test]
fn without_the_database_decisions_continue_writes_get_503_and_it_recovers() {
    let Some(pg) = PgSchema::new() else { return };
    let proxy = Proxy::start("127.0.0.1:5432");
    let ws = Workspace::new();
    let other_ws = Workspace::new();
    let s = start(&ws, &pg.url_via(&proxy.addr), "cut");
    let other = start(&other_ws, &pg.url, "direct");
    s.load_demo();
    assert_eq!(s.get("/readyz").0, 200);

    proxy.cut();
    // Decisions continue from memory.
    for _ in 0..20 {
        assert_eq!(s.ask(EMMA, "view_account", ACME)["decision"], "Allow");
    }
    // Writes are refused with a clear 503; readiness says why.
    let (st, body) = s.put_entities(&json!([emma_with(&s, json!({"status": "dismissed"}))]));
    assert_eq!(st, 503, "{body}");
    assert_eq!(body["error"], "unavailable");
    let (st, ready) = s.get("/readyz");
    assert_eq!(st, 503);
    assert!(
        ready["detail"].as_str().unwrap().contains("from memory"),
        "{ready}"
    );
    let metrics = s.metrics();
    assert!(metrics.contains("partnergate_store_up 0"), "{metrics}");

    // Meanwhile another replica changes emma (once its feed brought her: a
    // replica sees another's writes after its feed reads them); after the
    // database returns, the cut replica catches up and accepts writes again.
    within(
        Duration::from_secs(10),
        "the other replica to see emma",
        || other.get("/v1/entities/User/emma").0 == 200,
    );
    let (st, _) = other.put_entities(&json!([emma_with(&other, json!({"status": "dismissed"}))]));
    assert_eq!(st, 200);
    proxy.restore();
    within(
        Duration::from_secs(10),
        "the cut replica to catch up",
        || s.ask(EMMA, "view_account", ACME)["decision"] == "Deny",
    );
    within(Duration::from_secs(10), "readiness to return", || {
        s.get("/readyz").0 == 200
    });
    let (st, body) = s.put_entities(&json!([emma_with(&s, json!({"status": "active"}))]));
    assert_eq!(st, 200, "{body}");
}

#[test]
fn concurrent_invitations_through_two_replicas_keep_three_seats_and_one_company() {
    let Some(pg) = PgSchema::new() else { return };
    let (ws_a, ws_b) = (Workspace::new(), Workspace::new());
    let a = start(&ws_a, &pg.url, "a");
    let b = start(&ws_b, &pg.url, "b");
    a.load_demo();
    let emails = |d: &str| (0..40).map(|i| format!("p{i}@{d}")).collect::<Vec<_>>();
    assert_eq!(
        a.put(
            "/v1/partner-companies/goldco",
            &json!({"name": "Gold One", "status": "gold", "certified": true, "emails": emails("one.example")})
        )
        .0,
        200
    );
    assert_eq!(
        b.put(
            "/v1/partner-companies/gold2",
            &json!({"name": "Gold Two", "status": "gold", "certified": true, "emails": emails("two.example")})
        )
        .0,
        200
    );
    within(
        Duration::from_secs(2),
        "both replicas to know the owner",
        || b.get("/v1/entities/User/owner").0 == 200,
    );
    let servers = [&a, &b];
    let barrier = std::sync::Barrier::new(64);
    let created: Mutex<Vec<String>> = Mutex::default();
    let statuses: Mutex<Vec<u16>> = Mutex::default();
    std::thread::scope(|scope| {
        for i in 0..64 {
            let s = servers[i % 2];
            let (barrier, created, statuses) = (&barrier, &created, &statuses);
            scope.spawn(move || {
                let domain = if (i / 2) % 2 == 0 {
                    "one.example"
                } else {
                    "two.example"
                };
                let body = json!({"actor": "owner", "email": format!("p{}@{domain}", i / 4)});
                barrier.wait();
                let r = s
                    .client
                    .post(s.url("/v1/accounts/acme/partners"))
                    .bearer_auth(&s.token)
                    .json(&body)
                    .send()
                    .unwrap();
                let st = r.status().as_u16();
                let v: serde_json::Value = r.json().unwrap_or_default();
                if st == 201 {
                    created
                        .lock()
                        .unwrap()
                        .push(v["user"]["id"].as_str().unwrap_or_default().to_string());
                }
                statuses.lock().unwrap().push(st);
            });
        }
    });
    let statuses = statuses.into_inner().unwrap();
    assert!(
        statuses.iter().all(|s| [201, 409].contains(s)),
        "only created or refused: {statuses:?}"
    );
    let created = created.into_inner().unwrap();
    // pat (goldco) already holds one seat: at most two more, from goldco.
    assert!(
        !created.is_empty() && created.len() <= 2,
        "{} created",
        created.len()
    );
    // The shared database holds at most three active partners of one company,
    // and every 201 is there.
    let mut c = postgres::Client::connect(&pg.url, postgres::NoTls).unwrap();
    let rows = c
        .query(
            "SELECT uid, json FROM entities WHERE entity_type = 'User'
             AND (json::jsonb #>> '{attrs,account,__entity,id}') = 'acme'
             AND (json::jsonb #> '{attrs,partner}') IS NOT NULL
             AND (json::jsonb #>> '{attrs,status}') <> 'dismissed'",
            &[],
        )
        .unwrap();
    assert!(rows.len() <= 3, "{} active partners", rows.len());
    let companies: std::collections::BTreeSet<String> = rows
        .iter()
        .map(|r| {
            let j: serde_json::Value = serde_json::from_str(r.get::<_, &str>(1)).unwrap();
            j["attrs"]["partner"]["company"]["__entity"]["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(companies.len(), 1, "{companies:?}");
    let stored: std::collections::BTreeSet<String> =
        rows.iter().map(|r| r.get::<_, String>(0)).collect();
    for id in &created {
        assert!(
            stored.contains(&format!("User::\"{id}\"")),
            "201 for {id} but not stored: {stored:?}"
        );
    }
    // Both replicas agree on the seats.
    within(
        Duration::from_secs(2),
        "both replicas to agree on the seats",
        || {
            a.get("/v1/accounts/acme/seats").1["partners"]
                == b.get("/v1/accounts/acme/seats").1["partners"]
        },
    );
}

/// SIGTERM with the PostgreSQL store: the store's connection is closed
/// without a panic (before, every stop printed "Cannot start a runtime from
/// within a runtime" from the store's `Drop`, and still exited 0).
#[test]
fn sigterm_with_the_postgres_store_exits_cleanly_without_a_panic() {
    let Some(pg) = PgSchema::new() else { return };
    let ws = Workspace::new();
    let mut s = Server::start_with_stderr(&ws, &["--store", &pg.url, "--replica-id", "term"]);
    let mut stderr = s.child.stderr.take().unwrap();
    s.load_demo();
    // A write and a read, so the store's connection is in use at the stop.
    let (st, body) = s.put_entities(&json!([emma_with(&s, json!({"status": "active"}))]));
    assert_eq!(st, 200, "{body}");
    s.signal("TERM");
    let status = s.child.wait().unwrap();
    let mut text = String::new();
    stderr.read_to_string(&mut text).unwrap();
    assert!(!text.contains("panicked"), "a panic at shutdown: {text}");
    assert!(status.success(), "SIGTERM must exit 0: {status:?}\n{text}");
}

/// Both replicas' decision logs reach the database; one replica's
/// connection is cut while it keeps deciding (its file keeps the records),
/// and once it is restored its shipper catches up: every record of both
/// files is in the database once, and both chains verify there.
#[test]
fn both_replicas_logs_reach_the_database_and_a_cut_shipper_catches_up() {
    let Some(pg) = PgSchema::new() else { return };
    let proxy = Proxy::start("127.0.0.1:5432");
    let (ws_a, ws_b) = (Workspace::new(), Workspace::new());
    let ship = ["--audit-ship-interval-ms", "20"];
    let a = Server::start(
        &ws_a,
        &[&["--store", &pg.url, "--replica-id", "a"][..], &ship].concat(),
    );
    let via = pg.url_via(&proxy.addr);
    let b = Server::start(
        &ws_b,
        &[&["--store", via.as_str(), "--replica-id", "b"][..], &ship].concat(),
    );
    a.load_demo();
    within(Duration::from_secs(10), "b to see the demo", || {
        b.ask(EMMA, "view_account", ACME)["decision"] == "Allow"
    });
    proxy.cut();
    for _ in 0..20 {
        assert_eq!(b.ask(EMMA, "view_account", ACME)["decision"], "Allow");
        assert_eq!(a.ask(EMMA, "view_account", ACME)["decision"], "Allow");
    }
    // The cut replica's shipper fails and says how far behind its file is.
    within(
        Duration::from_secs(10),
        "b's shipper to report the cut",
        || {
            let ship = &b.get("/readyz").1["audit"]["ship"];
            ship["failing"] == true && ship["lag_records"].as_u64().unwrap_or(0) > 0
        },
    );
    proxy.restore();
    let logs = [
        ws_a.data().join("decisions.jsonl"),
        ws_b.data().join("decisions.jsonl"),
    ];
    let caught_up = |s: &Server, log: &std::path::Path| {
        let ship = &s.get("/readyz").1["audit"]["ship"];
        let last = partnergate::audit::chain::verify(log)
            .unwrap()
            .last_seq
            .unwrap_or(0);
        ship["head_seq"] == last && ship["lag_records"] == 0 && ship["failing"] == false
    };
    within(Duration::from_secs(10), "both shippers to catch up", || {
        caught_up(&a, &logs[0]) && caught_up(&b, &logs[1])
    });
    let mut c = postgres::Client::connect(&pg.url, postgres::NoTls).unwrap();
    for log in &logs {
        let id = partnergate::audit::recovered::log_id(log).unwrap();
        let report = partnergate::audit::chain::verify(log).unwrap();
        assert!(report.ok(), "{:?}", report.problem);
        let row = c
            .query_one(
                "SELECT count(*), count(DISTINCT seq), max(seq) FROM audit_records WHERE log_id = $1",
                &[&id],
            )
            .unwrap();
        let (n, distinct, max): (i64, i64, Option<i64>) = (row.get(0), row.get(1), row.get(2));
        // The server may have logged more since; what was shipped is whole.
        assert!(
            n as u64 >= report.records && n == distinct && max == Some(n),
            "{}",
            log.display()
        );
    }
    let out = std::process::Command::new(common::BIN)
        .args(["audit", "verify", "--pg", &pg.url])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert_eq!(text.matches("chain intact").count(), 2, "{text}");
    assert!(a.metrics().contains("partnergate_audit_ship_lag_records"));
    // Repeated decisions name their slice by hash; the query over the
    // database gives each its entities back from its own log.
    let b_file = std::fs::read_to_string(&logs[1]).unwrap();
    assert!(b_file
        .lines()
        .any(|l| l.contains("\"kind\":\"decision\"") && !l.contains("\"entities\":")));
    let out = std::process::Command::new(common::BIN)
        .args(["audit", "query", "--pg", &pg.url, "--kind", "decision"])
        .args(["--json", "--with-entities"])
        .output()
        .unwrap();
    let (text, err) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("warning"), "{err}");
    assert!(text.lines().count() >= 40, "{text}");
    assert!(text.lines().all(|l| l.contains("\"entities\":")), "{text}");
}
