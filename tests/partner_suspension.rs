//! Suspended partner access end to end: the shipped pack over a real
//! SQLite store and a real PostgreSQL store (the same scenario on both),
//! a real decision log, and a real `partnergate serve` for the HTTP
//! endpoints, the employees list, the seats and the request-data rule that
//! a caller cannot lift a suspension.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{Server, Workspace};
use partnergate::authz::Query;
use partnergate::clock::ManualClock;
use partnergate::orchestrator::access::AccessRequest;
use partnergate::orchestrator::{Orchestrator, OrchestratorError, UserStatus, WriteScope};
use partnergate::runtime::Wired;
use partnergate::store::StoreSpec;
use serde_json::{json, Value};

/// 2027-01-01T00:00:00Z.
const T: i64 = 1_798_761_600_000;

fn open(store: StoreSpec, dir: &Path, clock: &Arc<ManualClock>) -> (Orchestrator, Wired) {
    common::orchestrator::open(store, dir, (None, "decisions.jsonl"), clock)
}

/// Account acme (owner admin, emma employee) and the Gold company goldco.
fn seed(o: &Orchestrator) {
    let emails = ["ann", "bob", "cat", "dan"]
        .iter()
        .map(|n| format!("{n}@goldco.example"))
        .collect();
    common::orchestrator::seed_acme(o, emails);
}

/// Invite `name`@goldco.example with the users and settings scopes for a
/// day, and accept.
fn partner(o: &Orchestrator, name: &str) -> String {
    let call = o.with(WriteScope::default());
    let access = AccessRequest {
        expires_at: None,
        duration: Some("1d".into()),
        scopes: Some(vec!["users".into(), "settings".into()]),
    };
    let id = call
        .invite_partner(
            "acme",
            "owner",
            &format!("{name}@goldco.example"),
            None,
            (None, &access),
        )
        .unwrap()
        .user
        .id;
    call.accept(&id).unwrap();
    id
}

fn code<T: std::fmt::Debug>(r: Result<T, OrchestratorError>) -> String {
    r.unwrap_err().code().to_string()
}

/// The scenario both stores run: a partner actor is refused, the owner
/// suspends, every decision of the partner is a Deny with its own reason,
/// the seat stays taken, the listing says so; resume restores; a
/// suspension outlives an end and a rehire.
fn suspend_and_resume(o: &Orchestrator, clock: &ManualClock) {
    seed(o);
    let call = o.with(WriteScope::default());
    let ann = partner(o, "ann");
    let bob = partner(o, "bob");
    let ask = |who: &str, action: &str| {
        let q = Query::parse(
            &format!("User::\"{who}\""),
            &format!("Action::\"{action}\""),
            r#"Account::"acme""#,
        )
        .unwrap();
        o.authz().is_authorized(&q).unwrap().decision
    };
    assert!(ask(&ann, "configure_account").is_allowed());

    // A partner (even with the users scope) neither suspends nor resumes.
    assert_eq!(code(call.suspend(&ann, &bob)), "policy_denied");
    assert_eq!(code(call.suspend(&bob, &bob)), "policy_denied");
    // Only partner users are suspended.
    assert_eq!(code(call.suspend("emma", "owner")), "policy_denied");
    assert_eq!(code(call.resume(&ann, "owner")), "not_suspended");

    let out = call.suspend(&ann, "owner").unwrap();
    assert!(out.user.partner.as_ref().unwrap().suspended);
    assert_eq!(code(call.suspend(&ann, "owner")), "already_suspended");
    for action in ["configure_account", "view_account", "invite_user"] {
        let d = ask(&ann, action);
        assert!(!d.is_allowed(), "{action}");
        assert!(
            d.reasons.iter().any(|r| r.id == "partner-suspended"),
            "{action}: {d:?}"
        );
    }
    assert!(
        ask(&bob, "configure_account").is_allowed(),
        "bob unaffected"
    );
    // The suspended partner acting through the orchestrator is refused.
    assert_eq!(
        code(call.invite_user("acme", &ann, "new@acme.example", None)),
        "policy_denied"
    );
    assert_eq!(code(call.resume(&ann, &ann)), "policy_denied");

    // The seat stays taken: ann, bob, cat fill the three seats.
    let seats = o.seats("acme").unwrap();
    assert_eq!((seats.partners, seats.suspended_partners), (2, 1));
    partner(o, "cat");
    let fourth = call.invite_partner(
        "acme",
        "owner",
        "dan@goldco.example",
        None,
        (None, &AccessRequest::default()),
    );
    assert!(
        matches!(fourth, Err(OrchestratorError::LimitReached { .. })),
        "{fourth:?}"
    );
    let listed = o.users("acme").unwrap();
    let row = listed.iter().find(|u| u.user.id == ann).unwrap();
    assert_eq!(row.list_status.as_str(), "suspended");
    assert_eq!(row.mark, Some("Partner"));

    call.resume(&ann, "owner").unwrap();
    assert!(ask(&ann, "configure_account").is_allowed());
    assert_eq!(o.seats("acme").unwrap().suspended_partners, 0);

    // The end keeps running while suspended, and a suspension outlives an
    // end and a rehire: only a resume lifts it.
    call.suspend(&bob, "owner").unwrap();
    let ended = call.end_access(&bob, "owner").unwrap();
    assert_eq!(ended.user.status, UserStatus::Dismissed);
    let access = AccessRequest {
        expires_at: None,
        duration: Some("1d".into()),
        scopes: Some(vec!["users".into()]),
    };
    let back = call.rehire(&bob, "owner", (None, &access)).unwrap();
    assert!(back.user.partner.as_ref().unwrap().suspended, "{back:?}");
    assert!(!ask(&bob, "view_account").is_allowed());
    clock.set(T + 2 * 86_400_000);
    let d = ask(&ann, "view_account");
    assert!(
        d.reasons.iter().any(|r| r.id == "partner-access-ended"),
        "{d:?}"
    );
    // Resuming an ended, suspended partner only lifts the suspension.
    assert_eq!(code(call.suspend(&ann, "owner")), "access_ended");
}

/// The change records of the suspension writes, from the log in `dir`.
fn suspension_records(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("decisions.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["operation"] == "partner.suspend" || r["operation"] == "partner.resume")
        .collect()
}

#[test]
fn a_suspended_partner_does_nothing_and_keeps_its_seat_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::at(T));
    let (o, wired) = open(StoreSpec::Sqlite, dir.path(), &clock);
    suspend_and_resume(&o, &clock);
    wired.shutdown_log();
    let records = suspension_records(dir.path());
    let ops: Vec<&str> = records
        .iter()
        .map(|r| r["operation"].as_str().unwrap())
        .collect();
    assert_eq!(
        ops,
        ["partner.suspend", "partner.resume", "partner.suspend"]
    );
    for r in &records {
        assert_eq!(r["actor"], "User::\"owner\"", "{r}");
        assert!(r["decision_id"].is_string(), "names its Allow: {r}");
    }
}

#[test]
fn a_suspended_partner_does_nothing_and_keeps_its_seat_on_postgres() {
    let Some(pg) = common::PgSchema::new() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::at(T));
    let (o, wired) = open(StoreSpec::Postgres(pg.url.clone()), dir.path(), &clock);
    suspend_and_resume(&o, &clock);
    wired.shutdown_log();
    assert_eq!(suspension_records(dir.path()).len(), 3);
}

/// Over HTTP: a partner's suspend refused (403), the owner's (200), the
/// partner denied with `partner-suspended`, request data that says
/// `suspended: false` refused (400), the list and the seats, resume.
#[test]
fn suspend_and_resume_over_http() {
    let ws = Workspace::new();
    let server = Server::start(&ws, &[]);
    server.load_demo();
    let ids = server.goldco_partners(&["ann", "bob"], &["users", "settings"]);
    let (ann, bob) = (&ids[0], &ids[1]);
    let (_, before) = server.get("/v1/accounts/acme/seats");
    // Decided (and cached: the decision cache is on by default) before the
    // suspension; the suspension's write must make the entry miss.
    let principal = format!("User::\"{ann}\"");
    for _ in 0..2 {
        let d = server.ask(&principal, "configure_account", "Account::\"acme\"");
        assert_eq!(d["decision"], "Allow", "{d}");
    }
    let suspend = format!("/v1/users/{ann}/partner-access/suspend");
    let resume = format!("/v1/users/{ann}/partner-access/resume");
    let (s, b) = server.post_with_token(&suspend, &json!({"actor": bob}));
    assert_eq!(
        (s, b["error"].as_str()),
        (403, Some("policy_denied")),
        "{b}"
    );
    assert!(b.to_string().contains("partner-no-suspend"), "{b}");
    let (s, b) = server.post_with_token(&suspend, &json!({"actor": "owner", "replace": bob}));
    assert_eq!(s, 400, "{b}");
    let (s, b) = server.post_with_token(&suspend, &json!({"actor": "owner"}));
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["user"]["partner"]["suspended"], true, "{b}");
    let (s, b) = server.post_with_token(&suspend, &json!({"actor": "owner"}));
    assert_eq!(
        (s, b["error"].as_str()),
        (409, Some("already_suspended")),
        "{b}"
    );

    let d = server.ask(&principal, "configure_account", "Account::\"acme\"");
    assert_eq!(d["decision"], "Deny", "{d}");
    assert!(d.to_string().contains("partner-suspended"), "{d}");

    // The caller cannot lift the suspension with its own copy of ann.
    let (_, list) = server.get("/v1/accounts/acme/users");
    let row = list["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["id"] == ann.as_str())
        .unwrap()
        .clone();
    assert_eq!(row["list_status"], "suspended", "{row}");
    let (s, stored) = server.get(&format!("/v1/entities/User/{ann}"));
    assert_eq!(s, 200, "{stored}");
    assert_eq!(stored["attrs"]["partner"]["suspended"], true, "{stored}");
    let with = |entity: &Value| {
        server.post(
            "/v1/is_authorized",
            &json!({"principal": principal, "action": "Action::\"configure_account\"",
                    "resource": "Account::\"acme\"", "entities": [entity]}),
        )
    };
    // Repeating the stored fact is allowed (and changes nothing)...
    let (s, b) = with(&stored);
    assert_eq!((s, b["decision"].as_str()), (200, Some("Deny")), "{b}");
    // ...saying the partner is not suspended, or leaving it out, is refused.
    let mut forged = stored.clone();
    forged["attrs"]["partner"]["suspended"] = json!(false);
    let (s, b) = with(&forged);
    assert_eq!(s, 400, "a caller's suspended = false is refused: {b}");
    assert!(b.to_string().contains("partner"), "names the field: {b}");
    if let Some(p) = forged["attrs"]["partner"].as_object_mut() {
        p.remove("suspended");
    }
    let (s, b) = with(&forged);
    assert_eq!(
        s, 400,
        "a caller's partner without the suspension is refused: {b}"
    );

    let (_, seats) = server.get("/v1/accounts/acme/seats");
    assert_eq!(
        seats["partners"], before["partners"],
        "the seat stays taken: {seats}"
    );
    assert_eq!(seats["suspended_partners"], 1, "{seats}");
    assert!(before.get("suspended_partners").is_none(), "none: {before}");

    let (s, b) = server.post_with_token(&resume, &json!({"actor": bob}));
    assert_eq!(s, 403, "{b}");
    let (s, b) = server.post_with_token(&resume, &json!({"actor": "owner"}));
    assert_eq!(s, 200, "{b}");
    assert!(b["user"]["partner"].get("suspended").is_none(), "{b}");
    let d = server.ask(&principal, "configure_account", "Account::\"acme\"");
    assert_eq!(d["decision"], "Allow", "{d}");
}
