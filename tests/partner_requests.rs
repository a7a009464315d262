//! Access requests end to end: a real `partnergate serve` on SQLite and on
//! PostgreSQL (request codes, a partner's request, narrowing approvals,
//! the seat rules and the swap, declines, replays, the attacks: forged,
//! guessed, reused and foreign codes, widening, a partner approving,
//! huge scope lists, floods), 64 concurrent approvals and invitations
//! across two companies, and the sweep of unanswered requests over the
//! library with a manual clock on both stores.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{Server, Workspace};
use partnergate::clock::ManualClock;
use partnergate::orchestrator::access::AccessRequest;
use partnergate::orchestrator::{Orchestrator, WriteScope};
use partnergate::runtime::Wired;
use partnergate::store::StoreSpec;
use serde_json::{json, Value};

/// Accounts acme (owner: admin, emma: employee) and globex (gowner:
/// admin); registry: goldco (Gold) with `names`@goldco.example, otherco
/// (Gold) with `others`@otherco.example, silverco (Silver) with
/// sam@silverco.example.
fn setup(server: &Server, names: &[String], others: &[String]) {
    let user = |id: &str, account: &str, admin: bool| {
        json!({"uid": {"type": "User", "id": id}, "parents": [{"type": "Account", "id": account}],
               "attrs": {"email": format!("{id}@{account}.example"),
                         "account": {"__entity": {"type": "Account", "id": account}},
                         "is_admin": admin, "status": "active", "two_factor": true}})
    };
    let account =
        |id: &str| json!({"uid": {"type": "Account", "id": id}, "parents": [], "attrs": {}});
    let (s, b) = server.put_entities(&json!([
        account("acme"),
        account("globex"),
        user("owner", "acme", true),
        user("emma", "acme", false),
        user("gowner", "globex", true)
    ]));
    assert_eq!(s, 200, "{b}");
    for (id, status, emails) in [
        (
            "goldco",
            "gold",
            names
                .iter()
                .map(|n| format!("{n}@goldco.example"))
                .collect::<Vec<_>>(),
        ),
        (
            "otherco",
            "gold",
            others
                .iter()
                .map(|n| format!("{n}@otherco.example"))
                .collect(),
        ),
        (
            "silverco",
            "silver",
            vec!["sam@silverco.example".to_string()],
        ),
    ] {
        let (s, b) = server.put(
            &format!("/v1/partner-companies/{id}"),
            &json!({"name": id, "status": status, "certified": true, "emails": emails}),
        );
        assert_eq!(s, 200, "{b}");
    }
}

fn code_for(server: &Server, account: &str, actor: &str) -> String {
    let (s, b) = server.post_with_token(
        &format!("/v1/accounts/{account}/partner-request-codes"),
        &json!({"actor": actor}),
    );
    assert_eq!(s, 201, "{b}");
    b["code"].as_str().unwrap().to_string()
}

fn ask(server: &Server, account: &str, body: &Value) -> (u16, Value) {
    server.post_with_token(&format!("/v1/accounts/{account}/partner-requests"), body)
}

fn answer(server: &Server, request: &str, verb: &str, body: &Value) -> (u16, Value) {
    server.post_with_token(&format!("/v1/partner-requests/{request}/{verb}"), body)
}

fn error(b: &Value) -> &str {
    b["error"].as_str().unwrap_or("")
}

/// A pending request of `who`@goldco.example to acme with a fresh code.
fn pending(server: &Server, who: &str, scopes: &[&str], duration: &str) -> String {
    let code = code_for(server, "acme", "owner");
    let (s, b) = ask(
        server,
        "acme",
        &json!({"email": format!("{who}@goldco.example"), "code": code,
                "scopes": scopes, "duration": duration}),
    );
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["request"]["status"], "pending", "{b}");
    b["request"]["id"].as_str().unwrap().to_string()
}

/// The whole request life cycle and what an attacker tries, over HTTP.
fn lifecycle(server: &Server) {
    let names: Vec<String> = ["ann", "bob", "cat", "dan", "eve", "fay", "gus"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    setup(server, &names, &["xan".to_string()]);

    // No code, a forged one, a made-up shape: refused, nothing written
    // (gus guesses: four wrong codes, under the bound of five).
    let ann =
        json!({"email": "ann@goldco.example", "scopes": ["users", "settings"], "duration": "30d"});
    let (s, b) = ask(server, "acme", &ann);
    assert_eq!((s, error(&b)), (403, "request_code_invalid"), "{b}");
    let gus = json!({"email": "gus@goldco.example"});
    for forged in ["AAAA-BBBB-CCCC", "not a code", ""] {
        let mut body = gus.clone();
        body["code"] = json!(forged);
        let (s, b) = ask(server, "acme", &body);
        assert_eq!(
            (s, error(&b)),
            (403, "request_code_invalid"),
            "{forged}: {b}"
        );
    }

    // Never with an Idempotency-Key: its replay would have to keep the code.
    let r = reqwest::blocking::Client::new()
        .post(server.url("/v1/accounts/acme/partner-request-codes"))
        .bearer_auth(&server.token)
        .header("Idempotency-Key", "code-1")
        .json(&json!({"actor": "owner"}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    // Only an administrator of the account makes codes.
    let (s, b) = server.post_with_token(
        "/v1/accounts/acme/partner-request-codes",
        &json!({"actor": "emma"}),
    );
    assert_eq!((s, error(&b)), (403, "policy_denied"), "{b}");
    let (s, b) = server.post_with_token(
        "/v1/accounts/acme/partner-request-codes",
        &json!({"actor": "gowner"}),
    );
    assert_eq!((s, error(&b)), (403, "policy_denied"), "{b}");

    // A code of another account opens nothing here.
    let foreign = code_for(server, "globex", "gowner");
    let mut body = gus.clone();
    body["code"] = json!(foreign);
    let (s, b) = ask(server, "acme", &body);
    assert_eq!((s, error(&b)), (403, "request_code_invalid"), "{b}");

    // Not Gold (Silver), or not in the registry: refused.
    let code = code_for(server, "acme", "owner");
    let (s, b) = ask(
        server,
        "acme",
        &json!({"email": "sam@silverco.example", "code": code}),
    );
    assert_eq!((s, error(&b)), (403, "policy_denied"), "{b}");
    assert!(
        b.to_string().contains("partner-access-requires-gold"),
        "{b}"
    );
    let (s, b) = ask(
        server,
        "acme",
        &json!({"email": "nobody@nowhere.example", "code": code}),
    );
    assert_eq!((s, error(&b)), (422, "not_a_certified_partner"), "{b}");
    // A huge scope list (unknown names) is refused, naming one.
    let huge: Vec<String> = (0..10_000).map(|i| format!("scope{i}")).collect();
    let (s, b) = ask(
        server,
        "acme",
        &json!({"email": "ann@goldco.example", "code": code, "scopes": huge}),
    );
    assert_eq!((s, error(&b)), (422, "unknown_scope"), "{b}");

    // The code the Silver partner could not use still works, once.
    let mut body = ann.clone();
    body["code"] = json!(code.to_lowercase().replace('-', " "));
    let (s, b) = ask(server, "acme", &body);
    assert_eq!(s, 201, "typed loosely, still the code: {b}");
    let ann_req = b["request"]["id"].as_str().unwrap().to_string();
    assert_eq!(b["request"]["scopes"], json!(["settings", "users"]), "{b}");
    let (_, seats) = server.get("/v1/accounts/acme/seats");
    assert_eq!(seats["pending_requests"], 1, "{seats}");
    let (s, b) = ask(
        server,
        "acme",
        &json!({"email": "bob@goldco.example", "code": code}),
    );
    assert_eq!(
        (s, error(&b)),
        (403, "request_code_invalid"),
        "single use: {b}"
    );
    // One pending request per person.
    let again = code_for(server, "acme", "owner");
    let mut body = ann.clone();
    body["code"] = json!(again);
    let (s, b) = ask(server, "acme", &body);
    assert_eq!((s, error(&b)), (409, "request_pending"), "{b}");

    // Approval never widens: another scope, a longer length.
    let owner = |extra: Value| {
        let mut b = json!({"actor": "owner"});
        if let (Some(m), Some(e)) = (b.as_object_mut(), extra.as_object()) {
            m.extend(e.clone());
        }
        b
    };
    let (s, b) = answer(
        server,
        &ann_req,
        "approve",
        &owner(json!({"scopes": ["users", "billing"]})),
    );
    assert_eq!((s, error(&b)), (422, "access_widened"), "{b}");
    let (s, b) = answer(
        server,
        &ann_req,
        "approve",
        &owner(json!({"duration": "31d"})),
    );
    assert_eq!((s, error(&b)), (422, "access_widened"), "{b}");
    // An employee, and an administrator of another account, do not approve.
    let (s, b) = answer(server, &ann_req, "approve", &json!({"actor": "emma"}));
    assert_eq!((s, error(&b)), (403, "policy_denied"), "{b}");
    let (s, b) = answer(server, &ann_req, "approve", &json!({"actor": "gowner"}));
    assert_eq!((s, error(&b)), (403, "policy_denied"), "{b}");

    // Narrowed approval: active and verified at once, with what was given.
    let (s, b) = answer(
        server,
        &ann_req,
        "approve",
        &owner(json!({"scopes": ["users"], "duration": "7d"})),
    );
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["request"]["status"], "approved", "{b}");
    let ann_id = b["user"]["id"].as_str().unwrap().to_string();
    assert_eq!(b["user"]["status"], "active", "{b}");
    assert_eq!(b["user"]["partner"]["verified"], true, "{b}");
    assert_eq!(b["user"]["partner"]["scopes"], json!(["users"]), "{b}");
    assert!(b["user"]["partner"]["expires_at"].is_string(), "{b}");
    // Replays: approve or decline an answered request.
    let (s, b) = answer(server, &ann_req, "approve", &owner(json!({})));
    assert_eq!((s, error(&b)), (409, "request_answered"), "{b}");
    let (s, b) = answer(server, &ann_req, "decline", &owner(json!({})));
    assert_eq!((s, error(&b)), (409, "request_answered"), "{b}");

    // A partner (even with the users scope) never answers a request.
    let bob_req = pending(server, "bob", &["users"], "30d");
    let (s, b) = answer(server, &bob_req, "approve", &json!({"actor": ann_id}));
    assert_eq!((s, error(&b)), (403, "policy_denied"), "{b}");
    assert!(
        b.to_string().contains("partner-never-answers-requests"),
        "{b}"
    );
    let (s, b) = answer(server, &bob_req, "decline", &json!({"actor": ann_id}));
    assert_eq!((s, error(&b)), (403, "policy_denied"), "{b}");
    let (s, b) = server.post_with_token(
        "/v1/accounts/acme/partner-request-codes",
        &json!({"actor": ann_id}),
    );
    assert_eq!((s, error(&b)), (403, "policy_denied"), "{b}");

    // The seat rules of an invitation: three seats, the swap, one company.
    let (s, b) = answer(server, &bob_req, "approve", &owner(json!({})));
    assert_eq!(s, 200, "{b}");
    let bob_id = b["user"]["id"].as_str().unwrap().to_string();
    let cat_req = pending(server, "cat", &["users"], "30d");
    assert_eq!(
        answer(server, &cat_req, "approve", &owner(json!({}))).0,
        200
    );
    let dan_req = pending(server, "dan", &["users"], "30d");
    let (s, b) = answer(server, &dan_req, "approve", &owner(json!({})));
    assert_eq!((s, error(&b)), (409, "partner_limit_reached"), "{b}");
    assert_eq!(
        b["details"]["active_partners"].as_array().map(Vec::len),
        Some(3),
        "{b}"
    );
    let (s, b) = answer(
        server,
        &dan_req,
        "approve",
        &owner(json!({"replace": bob_id})),
    );
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["dismissed"]["id"], bob_id.as_str(), "{b}");
    let code = code_for(server, "acme", "owner");
    let (s, b) = ask(
        server,
        "acme",
        &json!({"email": "xan@otherco.example", "code": code}),
    );
    assert_eq!(s, 201, "{b}");
    let xan_req = b["request"]["id"].as_str().unwrap().to_string();
    let (s, b) = answer(
        server,
        &xan_req,
        "approve",
        &owner(json!({"replace": ann_id})),
    );
    assert_eq!((s, error(&b)), (409, "different_partner_company"), "{b}");
    let (s, b) = answer(server, &xan_req, "decline", &owner(json!({})));
    assert_eq!(
        (s, b["request"]["status"].as_str()),
        (200, Some("declined")),
        "{b}"
    );
    let (s, b) = answer(server, &xan_req, "approve", &owner(json!({})));
    assert_eq!((s, error(&b)), (409, "request_answered"), "{b}");

    let (s, seats) = server.get("/v1/accounts/acme/seats");
    assert_eq!((s, seats["partners"].as_u64()), (200, Some(3)), "{seats}");
    assert!(
        seats.get("pending_requests").is_none(),
        "none pending: {seats}"
    );
    let (s, list) = server.get("/v1/accounts/acme/partner-requests");
    assert_eq!(s, 200, "{list}");
    let statuses: Vec<&str> = list["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == "approved").count(),
        4,
        "{list}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == "declined").count(),
        1,
        "{list}"
    );

    // Guessing: wrong codes are counted per person and account; past the
    // bound, even the right code waits for the window (429).
    let right = code_for(server, "acme", "owner");
    let mut last = (0, Value::Null);
    for i in 0..6 {
        last = ask(
            server,
            "acme",
            &json!({"email": "eve@goldco.example", "code": format!("ZZZZ-ZZZZ-ZZ{i:02}")}),
        );
    }
    assert_eq!(
        (last.0, error(&last.1)),
        (429, "too_many_attempts"),
        "{}",
        last.1
    );
    let (s, b) = ask(
        server,
        "acme",
        &json!({"email": "eve@goldco.example", "code": right}),
    );
    assert_eq!((s, error(&b)), (429, "too_many_attempts"), "{b}");
    // Another person is not held back by eve's guesses.
    let (s, b) = ask(
        server,
        "acme",
        &json!({"email": "fay@goldco.example", "code": right}),
    );
    assert_eq!(s, 201, "{b}");
}

#[test]
fn requests_over_http_on_sqlite() {
    let ws = Workspace::new();
    let server = Server::start(&ws, &[]);
    lifecycle(&server);
}

#[test]
fn requests_over_http_on_postgres() {
    let Some(pg) = common::PgSchema::new() else {
        return;
    };
    let ws = Workspace::new();
    let server = Server::start(&ws, &["--store", &pg.url, "--replica-id", "a"]);
    lifecycle(&server);
}

/// 64 writes at once on one account: 16 approvals of pending requests and
/// 48 invitations, half from goldco and half from otherco. Whatever the
/// order, never more than three seats and never two companies.
fn concurrent_seats(server: &Server) {
    let gold: Vec<String> = (0..32).map(|i| format!("g{i}")).collect();
    let other: Vec<String> = (0..32).map(|i| format!("o{i}")).collect();
    setup(server, &gold, &other);
    let mut jobs: Vec<(String, Value)> = Vec::new();
    for i in 0..16 {
        let email = if i % 2 == 0 {
            format!("g{i}@goldco.example")
        } else {
            format!("o{i}@otherco.example")
        };
        let code = code_for(server, "acme", "owner");
        let (s, b) = ask(server, "acme", &json!({"email": email, "code": code}));
        assert_eq!(s, 201, "{b}");
        let id = b["request"]["id"].as_str().unwrap();
        jobs.push((
            format!("/v1/partner-requests/{id}/approve"),
            json!({"actor": "owner"}),
        ));
    }
    for i in 16..64 {
        let email = if i % 2 == 0 {
            format!("g{}@goldco.example", i / 2)
        } else {
            format!("o{}@otherco.example", i / 2)
        };
        jobs.push((
            "/v1/accounts/acme/partners".into(),
            json!({"actor": "owner", "email": email}),
        ));
    }
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = jobs
            .iter()
            .map(|(path, body)| {
                let client = &client;
                s.spawn(move || {
                    client
                        .post(server.url(path))
                        .bearer_auth(server_token(server))
                        .json(body)
                        .send()
                        .map_or(0, |r| r.status().as_u16())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ok = statuses.iter().filter(|s| **s == 200 || **s == 201).count();
    assert_eq!(ok, 3, "exactly three seats given: {statuses:?}");
    assert!(
        statuses.iter().all(|s| [200, 201, 409].contains(s)),
        "every other write a conflict: {statuses:?}"
    );
    let (_, list) = server.get("/v1/accounts/acme/partners");
    let partners = list["partners"].as_array().unwrap();
    assert_eq!(partners.len(), 3, "{list}");
    let companies: std::collections::BTreeSet<&str> = partners
        .iter()
        .map(|p| p["partner"]["company"].as_str().unwrap())
        .collect();
    assert_eq!(companies.len(), 1, "one company: {list}");
}

fn server_token(server: &Server) -> String {
    server.token.clone()
}

#[test]
fn sixty_four_concurrent_approvals_and_invitations_on_sqlite() {
    let ws = Workspace::new();
    let server = Server::start(&ws, &[]);
    concurrent_seats(&server);
}

#[test]
fn sixty_four_concurrent_approvals_and_invitations_on_postgres() {
    let Some(pg) = common::PgSchema::new() else {
        return;
    };
    let ws = Workspace::new();
    let server = Server::start(&ws, &["--store", &pg.url, "--replica-id", "a"]);
    concurrent_seats(&server);
}

/// 2027-01-01T00:00:00Z.
const T: i64 = 1_798_761_600_000;
const DAY: i64 = 86_400_000;

fn open(store: StoreSpec, dir: &Path, clock: &Arc<ManualClock>) -> (Orchestrator, Wired) {
    common::orchestrator::open(store, dir, (None, "decisions.jsonl"), clock)
}

/// Unanswered requests expire (the sweep, at the transaction's clock); an
/// answer after the time is 409 `request_expired`; the sweep's change
/// record is by `system`; a code stops working after its days.
fn expiry(o: &Orchestrator, clock: &ManualClock) {
    common::orchestrator::seed_acme(
        o,
        vec!["ann@goldco.example".into(), "bob@goldco.example".into()],
    );
    let call = o.with(WriteScope::default());
    let ask = AccessRequest {
        expires_at: None,
        duration: Some("10d".into()),
        scopes: Some(vec!["users".into()]),
    };
    let code = call.create_request_code("acme", "owner").unwrap().code;
    let r = call
        .request_access("acme", "ann@goldco.example", Some(&code), &ask)
        .unwrap()
        .request;
    let stale = call.create_request_code("acme", "owner").unwrap().code;
    clock.set(T + 29 * DAY);
    assert!(call.expire_requests().unwrap().is_empty(), "not yet");
    clock.set(T + 30 * DAY);
    let e = call.approve_request(&r.id, "owner", (None, &AccessRequest::default()));
    assert_eq!(e.unwrap_err().code(), "request_expired");
    let expired = call.expire_requests().unwrap();
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].status.as_str(), "expired");
    assert!(call.expire_requests().unwrap().is_empty(), "never twice");
    let e = call.decline_request(&r.id, "owner");
    assert_eq!(e.unwrap_err().code(), "request_answered");
    // The code made at T expired after request_code_ttl_days (7).
    let e = call.request_access("acme", "bob@goldco.example", Some(&stale), &ask);
    assert_eq!(e.unwrap_err().code(), "request_code_invalid");
}

fn records(dir: &Path, operation: &str) -> Vec<Value> {
    std::fs::read_to_string(dir.join("decisions.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["operation"] == operation)
        .collect()
}

#[test]
fn unanswered_requests_expire_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::at(T));
    let (o, wired) = open(StoreSpec::Sqlite, dir.path(), &clock);
    expiry(&o, &clock);
    wired.shutdown_log();
    let made = records(dir.path(), "partner.request");
    assert_eq!(made.len(), 1);
    assert!(
        made[0]["decision_id"].is_string(),
        "names its Allow: {}",
        made[0]
    );
    let expired = records(dir.path(), "partner.request_expired");
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0]["actor"], "system");
}

#[test]
fn unanswered_requests_expire_on_postgres() {
    let Some(pg) = common::PgSchema::new() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::at(T));
    let (o, wired) = open(StoreSpec::Postgres(pg.url.clone()), dir.path(), &clock);
    expiry(&o, &clock);
    wired.shutdown_log();
    assert_eq!(records(dir.path(), "partner.request_expired").len(), 1);
}
