//! Partner lifecycle events delivered to a real HTTP receiver started by
//! the test (`common::receiver`) by a real `partnergate serve`: failures
//! (500, no answer, connection refused while the receiver is down) are
//! retried until every event arrives, in order per account, signed
//! (checked with an independent HMAC), each answered 2xx once unless
//! redelivered explicitly; a `kill -9` between commit and delivery loses
//! nothing; a redirect is refused and recorded; a slow or endless
//! receiver does not hold other accounts; on PostgreSQL two replicas
//! deliver each event once.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::receiver::{verifies, Act, Hit, Receiver};
use common::{PgSchema, Server, Workspace, PATIENCE};
use serde_json::{json, Value};

/// Fast retries for the tests (the defaults are seconds to an hour).
fn config(ws: &Workspace, url: &str, max_attempts: u32) {
    std::fs::create_dir_all(ws.data()).unwrap();
    std::fs::write(
        ws.data().join("webhooks.toml"),
        format!(
            "[[endpoint]]\nname = \"test\"\nurl = \"{url}\"\n\n[delivery]\nmax_attempts = {max_attempts}\n\
             backoff_base_ms = 20\nbackoff_max_ms = 200\ntimeout_ms = 1000\nconnect_timeout_ms = 500\npoll_ms = 20\n"
        ),
    )
    .unwrap();
}

fn secret(ws: &Workspace) -> String {
    std::fs::read_to_string(ws.data().join("webhook-secret")).unwrap()
}

fn wait(what: &str, f: impl Fn() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < PATIENCE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every event of the outbox (GET /v1/events, paged).
fn events(s: &Server) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let r = s
            .client
            .get(s.url(&format!("/v1/events?limit=2&after={after}")))
            .bearer_auth(&s.token)
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let page: Value = r.json().unwrap();
        out.extend(page["events"].as_array().unwrap().iter().cloned());
        match page["next"].as_i64() {
            Some(n) => after = n,
            None => return out,
        }
    }
}

fn all_delivered(s: &Server, n: usize) -> bool {
    let e = events(s);
    e.len() >= n && e.iter().all(|e| e["status"] == "delivered")
}

/// Each event answered 2xx exactly once, and per account the 2xx answers
/// in sequence order with no attempt of an event before its predecessor
/// was answered 2xx.
fn once_and_in_order(hits: &[Hit], events: &[Value]) {
    let mut ok: HashMap<String, usize> = HashMap::new();
    let mut done_upto: HashMap<String, i64> = HashMap::new();
    for h in hits {
        let last = done_upto.entry(h.account()).or_insert(0);
        assert!(
            h.seq() <= *last + 1,
            "{} seq {} tried before seq {} was delivered",
            h.account(),
            h.seq(),
            *last + 1
        );
        if (200..300).contains(&h.answered) {
            *ok.entry(h.id.clone()).or_default() += 1;
            if h.seq() == *last + 1 {
                *last += 1;
            }
        }
    }
    for e in events {
        let id = e["id"].as_str().unwrap();
        assert_eq!(
            ok.get(id),
            Some(&1),
            "event {id} ({}) answered 2xx {:?} times",
            e["kind"],
            ok.get(id)
        );
    }
}

/// `owner` of `acme` (demo entities) and `gowner` of a second account
/// `globex`; the Gold company goldco with ann, bob, cat, dan.
fn seed(s: &Server) {
    s.load_demo();
    let (st, b) = s.put_entities(&json!([
        {"uid": {"type": "Account", "id": "globex"}, "attrs": {"name": "Globex"}, "parents": []},
        {"uid": {"type": "User", "id": "gowner"}, "parents": [{"type": "Account", "id": "globex"}],
         "attrs": {"email": "gowner@globex.example", "account": {"__entity": {"type": "Account", "id": "globex"}},
                   "is_admin": true, "status": "active", "two_factor": true}}
    ]));
    assert_eq!(st, 200, "{b}");
}

fn invite(s: &Server, account: &str, actor: &str, name: &str) -> String {
    let (st, b) = s.post_with_token(
        &format!("/v1/accounts/{account}/partners"),
        &json!({"actor": actor, "email": format!("{name}@goldco.example"), "scopes": ["users"], "duration": "3d"}),
    );
    assert_eq!(st, 201, "{b}");
    let id = b["user"]["id"].as_str().unwrap().to_string();
    let (st, b) = s.post_with_token(&format!("/v1/users/{id}/accept"), &json!({}));
    assert_eq!(st, 200, "{b}");
    id
}

fn act(s: &Server, path: &str, body: Value) {
    let (st, b) = s.post_with_token(path, &body);
    assert_eq!(st, 200, "{path}: {b}");
}

#[test]
fn every_event_arrives_signed_once_and_in_order_through_failures_and_an_outage() {
    let ws = Workspace::new();
    // 500, no answer (past the timeout), 500 again, then 200.
    let rx = Receiver::start("127.0.0.1", |_, n| match n {
        0 | 2 => Act::Status(500),
        1 => Act::Hang,
        _ => Act::Status(204),
    });
    config(&ws, &rx.url(), 1000);
    let s = Server::start(&ws, &["--ending-soon", "none"]);
    seed(&s);
    let (st, _) = s.put(
        "/v1/partner-companies/goldco",
        &json!({"name": "GoldCo", "status": "gold", "certified": true,
                "emails": ["ann@goldco.example", "bob@goldco.example"]}),
    );
    assert_eq!(st, 200);
    let ann = invite(&s, "acme", "owner", "ann");
    let bob = invite(&s, "acme", "owner", "bob");
    // Down: connections are refused while more changes commit.
    rx.set_up(false);
    act(
        &s,
        &format!("/v1/users/{ann}/partner-access/suspend"),
        json!({"actor": "owner"}),
    );
    act(
        &s,
        &format!("/v1/users/{ann}/partner-access/resume"),
        json!({"actor": "owner"}),
    );
    act(
        &s,
        &format!("/v1/users/{bob}/partner-access/renew"),
        json!({"actor": "owner", "duration": "30d"}),
    );
    act(
        &s,
        &format!("/v1/users/{bob}/partner-access/end"),
        json!({"actor": "owner"}),
    );
    act(
        &s,
        &format!("/v1/users/{ann}/dismiss"),
        json!({"actor": "owner"}),
    );
    std::thread::sleep(Duration::from_millis(300));
    rx.set_up(true);
    wait("every event delivered", || all_delivered(&s, 9));
    let evs = events(&s);
    let kinds: Vec<&str> = evs.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "partner.invited",
            "partner.accepted",
            "partner.invited",
            "partner.accepted",
            "partner.suspended",
            "partner.resumed",
            "partner.renewed",
            "partner.access_ended",
            "partner.dismissed"
        ]
    );
    for (i, e) in evs.iter().enumerate() {
        assert_eq!(e["seq"], i + 1);
        assert_eq!(e["account"], "acme");
        assert!(e["change_id"].is_string(), "{e}");
        // The invitee accepts without a policy question.
        assert_eq!(
            e["decision_id"].is_string(),
            e["kind"] != "partner.accepted",
            "{e}"
        );
        assert_eq!(e["event"]["data"]["change_id"], e["change_id"]);
    }
    assert_eq!(evs[4]["event"]["data"]["partner"]["suspended"], true);
    assert_eq!(evs[4]["actor"], "User::\"owner\"");
    let hits = rx.hits();
    assert!(
        hits.iter().any(|h| h.answered == 500),
        "the 500s were tried"
    );
    assert!(hits.iter().any(|h| h.answered == 0), "the hang was tried");
    once_and_in_order(&hits, &evs);
    let secret = secret(&ws);
    for h in &hits {
        assert!(verifies(&secret, h), "signature of {}", h.id);
        let age = (h.timestamp.parse::<i64>().unwrap() - time_now()).abs();
        assert!(age < 300, "timestamp {} is the attempt's", h.timestamp);
    }
    // Forged: another body, or another id, under the same signature fails.
    let mut forged = hits[0].clone();
    forged.raw[2] ^= 1;
    assert!(!verifies(&secret, &forged));
    let mut replayed = hits[0].clone();
    replayed.id = hits[1].id.clone();
    assert!(!verifies(&secret, &replayed) || hits[0].id == hits[1].id);
    // An explicit redelivery from the CLI sends it again, once.
    let id = evs[4]["id"].as_str().unwrap();
    let (code, out, err) = events_cli(&ws, &["redeliver", "--id", id]);
    assert_eq!(code, 0, "{out}{err}");
    wait("the redelivery", || {
        rx.delivered().iter().filter(|h| h.id == id).count() == 2
    });
    let metrics = s.metrics();
    assert!(
        metrics.contains("partnergate_event_deliveries_total"),
        "{metrics}"
    );
    // The listing is the token's only, and refuses what it does not know.
    let r = s.client.get(s.url("/v1/events")).send().unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = s
        .client
        .get(s.url("/v1/events?status=lost"))
        .bearer_auth(&s.token)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
}

/// `partnergate events ARGS --data-dir DATA`.
fn events_cli(ws: &Workspace, args: &[&str]) -> (i32, String, String) {
    let o = std::process::Command::new(common::BIN)
        .arg("events")
        .args(args)
        .arg("--data-dir")
        .arg(ws.data())
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn time_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[test]
fn a_kill_9_between_commit_and_delivery_loses_no_event() {
    let ws = Workspace::new();
    let rx = Receiver::start("127.0.0.1", |_, _| Act::Status(503));
    config(&ws, &rx.url(), 1000);
    let mut s = Server::start(&ws, &["--ending-soon", "none"]);
    seed(&s);
    let (st, _) = s.put(
        "/v1/partner-companies/goldco",
        &json!({"name": "GoldCo", "status": "gold", "certified": true, "emails": ["ann@goldco.example"]}),
    );
    assert_eq!(st, 200);
    let ann = invite(&s, "acme", "owner", "ann");
    act(
        &s,
        &format!("/v1/users/{ann}/partner-access/suspend"),
        json!({"actor": "owner"}),
    );
    wait("a failed attempt", || !rx.hits().is_empty());
    s.child.kill().unwrap(); // SIGKILL
    s.child.wait().unwrap();
    rx.behave(|_, _| Act::Status(200));
    let s = Server::start(&ws, &["--ending-soon", "none"]);
    wait("every event delivered after the restart", || {
        all_delivered(&s, 3)
    });
    let evs = events(&s);
    assert_eq!(evs.len(), 3);
    once_and_in_order(&rx.hits(), &evs);
}

#[test]
fn a_redirect_is_refused_recorded_and_dead_until_redelivered() {
    let ws = Workspace::new();
    let elsewhere = Receiver::start("127.0.0.2", |_, _| Act::Status(200));
    let to = format!("http://127.0.0.2:{}/stolen", elsewhere.port);
    let rx = Receiver::start("127.0.0.1", move |_, _| Act::Redirect(to.clone()));
    config(&ws, &rx.url(), 2);
    let s = Server::start(&ws, &["--ending-soon", "none"]);
    seed(&s);
    let (st, _) = s.put(
        "/v1/partner-companies/goldco",
        &json!({"name": "GoldCo", "status": "gold", "certified": true, "emails": ["ann@goldco.example"]}),
    );
    assert_eq!(st, 200);
    invite(&s, "acme", "owner", "ann");
    wait("both events dead", || {
        let e = events(&s);
        e.len() == 2 && e.iter().all(|e| e["status"] == "dead")
    });
    let evs = events(&s);
    for e in &evs {
        assert_eq!(e["attempts"], 2);
        assert!(e["last_error"].as_str().unwrap().contains("302"), "{e}");
    }
    assert!(elsewhere.hits().is_empty(), "the redirect was followed");
    let (code, out, _) = events_cli(&ws, &["list", "--status", "dead"]);
    assert_eq!((code, out.lines().count()), (0, 2), "{out}");
    // Redelivered over HTTP once the receiver answers.
    rx.behave(|_, _| Act::Status(200));
    for e in &evs {
        act(
            &s,
            &format!("/v1/events/{}/redeliver", e["id"].as_str().unwrap()),
            json!({}),
        );
    }
    wait("both delivered", || all_delivered(&s, 2));
    let (st, _) = s.post_with_token("/v1/events/evt_nope/redeliver", &json!({}));
    assert_eq!(st, 404);
}

#[test]
fn a_slow_receiver_holds_neither_other_accounts_nor_memory() {
    let ws = Workspace::new();
    // acme's events get a status line and then a header byte now and then
    // (never done); globex's first event an endless body, then 200s.
    let rx = Receiver::start("127.0.0.1", |body, n| {
        if body["data"]["account"] == "acme" {
            Act::TrickleHeaders
        } else if n == 0 && body["data"]["account_seq"] == 1 {
            Act::HugeBody
        } else {
            Act::Status(200)
        }
    });
    config(&ws, &rx.url(), 1000);
    let s = Server::start(&ws, &["--ending-soon", "none"]);
    seed(&s);
    let (st, _) = s.put(
        "/v1/partner-companies/goldco",
        &json!({"name": "GoldCo", "status": "gold", "certified": true,
                "emails": ["ann@goldco.example", "bob@goldco.example"]}),
    );
    assert_eq!(st, 200);
    invite(&s, "acme", "owner", "ann");
    let bob = invite(&s, "globex", "gowner", "bob");
    act(
        &s,
        &format!("/v1/users/{bob}/partner-access/suspend"),
        json!({"actor": "gowner"}),
    );
    wait("globex delivered while acme's receiver trickles", || {
        let e = events(&s);
        e.iter()
            .filter(|e| e["account"] == "globex")
            .all(|e| e["status"] == "delivered")
            && e.iter().filter(|e| e["account"] == "globex").count() == 3
    });
    let acme: Vec<Value> = events(&s)
        .into_iter()
        .filter(|e| e["account"] == "acme")
        .collect();
    assert_eq!(acme[0]["status"], "pending");
    assert_eq!(
        acme[1]["attempts"], 0,
        "acme's second event waits for its first"
    );
    assert!(s.rss() < 512 * 1024 * 1024, "rss {}", s.rss());
}

#[test]
fn two_postgres_replicas_deliver_each_event_once_in_order() {
    let Some(pg) = PgSchema::new() else { return };
    let rx = Receiver::start("127.0.0.1", |_, n| {
        if n == 0 {
            Act::Status(500)
        } else {
            Act::Status(200)
        }
    });
    let (wa, wb) = (Workspace::new(), Workspace::new());
    config(&wa, &rx.url(), 1000);
    config(&wb, &rx.url(), 1000);
    let a = Server::start(
        &wa,
        &[
            "--store",
            &pg.url,
            "--replica-id",
            "a",
            "--ending-soon",
            "none",
        ],
    );
    let b = Server::start(
        &wb,
        &[
            "--store",
            &pg.url,
            "--replica-id",
            "b",
            "--ending-soon",
            "none",
        ],
    );
    seed(&a);
    let (st, _) = a.put(
        "/v1/partner-companies/goldco",
        &json!({"name": "GoldCo", "status": "gold", "certified": true,
                "emails": ["ann@goldco.example", "bob@goldco.example", "cat@goldco.example"]}),
    );
    assert_eq!(st, 200);
    wait("replica b has the seed", || {
        b.get("/v1/entities/User/gowner").0 == 200
    });
    let ann = invite(&a, "acme", "owner", "ann");
    let bob = invite(&b, "globex", "gowner", "bob");
    invite(&b, "acme", "owner", "cat");
    act(
        &a,
        &format!("/v1/users/{bob}/partner-access/suspend"),
        json!({"actor": "gowner"}),
    );
    act(
        &b,
        &format!("/v1/users/{ann}/partner-access/suspend"),
        json!({"actor": "owner"}),
    );
    act(
        &a,
        &format!("/v1/users/{ann}/partner-access/resume"),
        json!({"actor": "owner"}),
    );
    wait("every event delivered", || all_delivered(&a, 9));
    let evs = events(&b);
    assert_eq!(evs.len(), 9);
    once_and_in_order(&rx.hits(), &evs);
}
