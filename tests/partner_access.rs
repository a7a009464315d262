//! Time-bound, scoped partner access (issue #17) end to end: the shipped
//! pack, a real SQLite store and a real decision log, with the decision
//! path's clock under the test's control (a `ManualClock`, the one the
//! sidecar's `SystemClock` stands in for), so decisions and seat checks run
//! at and around an end instant; and a real `partnergate serve` for the HTTP
//! endpoints and the sweep in real time.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::entities::{account, user};
use common::orchestrator::open_pg;
use common::{Server, Workspace};
use partnergate::authz::Query;
use partnergate::clock::{format_ms, Clock, ManualClock};
use partnergate::orchestrator::access::AccessRequest;
use partnergate::orchestrator::{Orchestrator, OrchestratorError, UserStatus, WriteScope};
use partnergate::runtime::Wired;
use serde_json::{json, Value};

/// 2027-01-01T00:00:00Z.
const T: i64 = 1_798_761_600_000;
const DAY: i64 = 86_400_000;

/// The orchestrator over the shipped pack, SQLite in `dir` and the
/// decision log `dir/decisions.jsonl`, reading `clock`.
fn open(dir: &Path, clock: &Arc<ManualClock>) -> (Orchestrator, Wired) {
    common::orchestrator::open(
        partnergate::store::StoreSpec::Sqlite,
        dir,
        (None, "decisions.jsonl"),
        clock,
    )
}

/// Account acme (owner admin, emma employee), a Gold registry company with
/// 70 emails and another Gold company.
fn seed(o: &Orchestrator) {
    let mut emails: Vec<String> = ["ann", "bob", "cat", "dan", "eve"]
        .iter()
        .map(|n| format!("{n}@goldco.example"))
        .collect();
    emails.extend((0..64).map(|i| format!("g{i}@goldco.example")));
    common::orchestrator::seed_acme(o, emails);
}

fn access(duration: Option<&str>, scopes: Option<&[&str]>) -> AccessRequest {
    AccessRequest {
        expires_at: None,
        duration: duration.map(str::to_string),
        scopes: scopes.map(|s| s.iter().map(|x| x.to_string()).collect()),
    }
}

fn invite(o: &Orchestrator, email: &str, a: &AccessRequest) -> Result<String, OrchestratorError> {
    o.with(WriteScope::default())
        .invite_partner("acme", "owner", email, None, (None, a))
        .map(|out| out.user.id)
}

/// Every record of the log (all its files), parsed.
fn log_records(dir: &Path) -> Vec<Value> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix("decisions.jsonl"))
                .is_some_and(|rest| {
                    // The chain's files: `decisions.jsonl` and its rotated `.N`
                    // (not the `.lock` and `.id` files beside them).
                    rest.is_empty()
                        || rest
                            .strip_prefix('.')
                            .is_some_and(|n| n.parse::<u32>().is_ok())
                })
        })
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap())
                .collect::<Vec<_>>()
        })
        .collect()
}

fn ended_records(dir: &Path) -> Vec<Value> {
    log_records(dir)
        .into_iter()
        .filter(|r| r["operation"] == "partner.access_ended")
        .collect()
}

/// An ended access frees its seat at the end instant, in every seat check,
/// before the sweep ran; the sweep then marks it (dismissed, one change
/// record by `system`, naming no decision) and a second sweep repeats nothing.
#[test]
fn an_ended_access_frees_its_seat_without_the_sweep_and_the_sweep_marks_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::at(T - DAY));
    let (o, wired) = open(dir.path(), &clock);
    seed(&o);
    let ann = invite(&o, "ann@goldco.example", &access(Some("1d"), None)).unwrap();
    invite(&o, "bob@goldco.example", &access(None, None)).unwrap();
    invite(&o, "cat@goldco.example", &access(None, None)).unwrap();
    // One millisecond before ann's end the seats are full.
    clock.set(T - 1);
    assert_eq!(o.seats("acme").unwrap().partners, 3);
    match invite(&o, "dan@goldco.example", &access(None, None)) {
        Err(OrchestratorError::LimitReached { active, .. }) => {
            let ann_listed = active.iter().find(|u| u.id == ann).unwrap();
            assert_eq!(
                ann_listed.partner.as_ref().unwrap().expires_at.as_deref(),
                format_ms(T).as_deref(),
                "the refusal lists each active partner's end"
            );
        }
        other => panic!("expected the limit before the end, got {other:?}"),
    }
    // At the end instant: the seat is free, nothing swept yet.
    clock.set(T);
    assert_eq!(o.seats("acme").unwrap().partners, 2);
    let listed = o.users("acme").unwrap();
    let ann_row = listed.iter().find(|u| u.user.id == ann).unwrap();
    assert_eq!(ann_row.list_status.as_str(), "dismissed");
    assert_eq!(ann_row.user.status, UserStatus::Invited, "not marked yet");
    invite(&o, "dan@goldco.example", &access(None, None)).expect("the ended seat is free");
    assert!(matches!(
        invite(&o, "eve@goldco.example", &access(None, None)),
        Err(OrchestratorError::LimitReached { .. })
    ));
    // The sweep marks ann once.
    let call = o.with(WriteScope::default());
    // (An invitation whose access ended is not accepted any more.)
    let late = call.accept(&ann).unwrap_err();
    assert_eq!(late.code(), "access_ended", "{late}");
    let ended = call.end_expired().unwrap();
    assert_eq!(ended.iter().map(|u| &u.id).collect::<Vec<_>>(), vec![&ann]);
    assert_eq!(ended[0].status, UserStatus::Dismissed);
    assert!(call.end_expired().unwrap().is_empty(), "nothing to repeat");
    wired.shutdown_log();
    let records = ended_records(dir.path());
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["actor"], "system");
    assert_eq!(records[0]["after"]["attrs"]["status"], "dismissed");
    assert!(records[0].get("decision_id").is_none_or(Value::is_null));
}

/// A restart between the end and the sweep loses nothing (the first sweep
/// after it ends the access) and a restart after the sweep repeats nothing.
#[test]
fn a_restart_between_the_end_and_the_sweep_loses_and_repeats_no_end() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::at(T - DAY));
    let ann = {
        let (o, wired) = open(dir.path(), &clock);
        seed(&o);
        let ann = invite(&o, "ann@goldco.example", &access(Some("1d"), None)).unwrap();
        clock.set(T + 5);
        wired.shutdown_log();
        ann
    };
    for round in 0..2 {
        let (o, wired) = open(dir.path(), &clock);
        let ended = o.with(WriteScope::default()).end_expired().unwrap();
        let expected: Vec<&String> = if round == 0 { vec![&ann] } else { vec![] };
        assert_eq!(
            ended.iter().map(|u| &u.id).collect::<Vec<_>>(),
            expected,
            "round {round}"
        );
        assert_eq!(o.seats("acme").unwrap().partners, 0);
        wired.shutdown_log();
    }
    assert_eq!(ended_records(dir.path()).len(), 1);
}

/// 64 invitations at once while the clock crosses two partners' end (and
/// the sweep runs beside them): never more than three partners hold a seat
/// at any clock reading, and exactly the two freed seats are taken.
#[test]
fn sixty_four_concurrent_invitations_around_an_expiry_keep_at_most_three_active() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::at(T - DAY));
    let (o, wired) = open(dir.path(), &clock);
    seed(&o);
    invite(&o, "ann@goldco.example", &access(Some("1d"), None)).unwrap();
    invite(&o, "bob@goldco.example", &access(Some("1d"), None)).unwrap();
    invite(&o, "cat@goldco.example", &access(None, None)).unwrap();
    clock.set(T - 2);
    let o = Arc::new(o);
    let sweeper =
        partnergate::orchestrator::sweep::Sweeper::spawn(o.clone(), Duration::from_millis(10))
            .unwrap();
    let done = Arc::new(AtomicUsize::new(0));
    let ok = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(65));
    let mut threads = Vec::new();
    for i in 0..64 {
        let (o, done, ok, barrier) = (o.clone(), done.clone(), ok.clone(), barrier.clone());
        threads.push(std::thread::spawn(move || {
            barrier.wait();
            let r = invite(&o, &format!("g{i}@goldco.example"), &access(None, None));
            match r {
                Ok(_) => {
                    ok.fetch_add(1, Ordering::SeqCst);
                }
                Err(OrchestratorError::LimitReached { .. }) => {}
                Err(e) => panic!("g{i}: {e}"),
            }
            let n = o.seats("acme").unwrap().partners;
            assert!(n <= 3, "{n} partners hold a seat");
            done.fetch_add(1, Ordering::SeqCst);
        }));
    }
    barrier.wait();
    // Cross the end once a quarter of the invitations answered.
    while done.load(Ordering::SeqCst) < 16 {
        std::thread::yield_now();
    }
    clock.set(T);
    for t in threads {
        t.join().unwrap();
    }
    drop(sweeper);
    assert_eq!(ok.load(Ordering::SeqCst), 2, "exactly the two freed seats");
    let holding: Vec<_> = o
        .users("acme")
        .unwrap()
        .into_iter()
        .filter(|u| u.user.holds_partner_seat(clock.now_ms()))
        .collect();
    assert_eq!(holding.len(), 3);
    wired.shutdown_log();
}

/// Renewing: within the maximum it moves the end; past `max_access_days`
/// it is refused with the limit named and nothing written; once the access
/// has ended it is refused with the way out (rehire), and the rehire works
/// as today's, with a new end.
#[test]
fn renewals_stay_within_the_maximum_and_an_ended_partner_is_rehired() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::at(T - DAY));
    let (o, wired) = open(dir.path(), &clock);
    seed(&o);
    let ann = invite(&o, "ann@goldco.example", &access(Some("1d"), None)).unwrap();
    let call = o.with(WriteScope::default());
    let too_long = call
        .renew(&ann, "owner", &access(Some("731d"), None))
        .unwrap_err();
    assert_eq!(too_long.code(), "access_too_long");
    assert!(
        too_long.to_string().contains("maximum of 730 days"),
        "{too_long}"
    );
    let renewed = call
        .renew(&ann, "owner", &access(Some("30d"), None))
        .unwrap();
    let end = renewed.user.partner.as_ref().unwrap().ends_at().unwrap();
    assert_eq!(end, T - DAY + 30 * DAY);
    let emma_renews = call
        .renew(&ann, "emma", &access(Some("30d"), None))
        .unwrap_err();
    assert_eq!(emma_renews.code(), "policy_denied");
    let scopes = call
        .renew(&ann, "owner", &access(Some("3d"), Some(&["users"])))
        .unwrap_err();
    assert!(
        scopes.to_string().contains("changes the end only"),
        "{scopes}"
    );
    clock.set(end);
    let ended = call
        .renew(&ann, "owner", &access(Some("30d"), None))
        .unwrap_err();
    assert_eq!(ended.code(), "access_ended");
    assert!(ended.to_string().contains("rehire"), "{ended}");
    // Rehire before the sweep marked it: as today's rehire, with a new end.
    let back = call
        .rehire(
            &ann,
            "owner",
            (None, &access(Some("10d"), Some(&["settings"]))),
        )
        .unwrap();
    let p = back.user.partner.as_ref().unwrap();
    assert_eq!(p.ends_at(), Some(end + 10 * DAY));
    assert_eq!(p.scopes.as_deref(), Some(&["settings".to_string()][..]));
    assert!(back.user.holds_partner_seat(end));
    assert!(
        call.end_expired().unwrap().is_empty(),
        "the new end is later"
    );
    wired.shutdown_log();
}

/// An unknown scope is refused naming it (and the known ones), before any
/// policy question or write; no scope given means quotas.toml's default.
#[test]
fn an_invitation_with_an_unknown_scope_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::at(T));
    let (o, wired) = open(dir.path(), &clock);
    seed(&o);
    let e = invite(
        &o,
        "ann@goldco.example",
        &access(None, Some(&["users", "payroll"])),
    )
    .unwrap_err();
    assert_eq!(e.code(), "unknown_scope");
    let m = e.to_string();
    assert!(
        m.contains("`payroll`") && m.contains("billing, integrations, settings, users"),
        "{m}"
    );
    assert_eq!(o.seats("acme").unwrap().partners, 0, "nothing written");
    let id = invite(&o, "ann@goldco.example", &access(None, None)).unwrap();
    let users = o.users("acme").unwrap();
    let ann = users.iter().find(|u| u.user.id == id).unwrap();
    assert_eq!(
        ann.user.partner.as_ref().unwrap().scopes.as_deref(),
        Some(
            &[
                "integrations".to_string(),
                "settings".into(),
                "users".into()
            ][..]
        ),
        "quotas.toml's default_partner_scopes"
    );
    wired.shutdown_log();
}

/// A settings-only, time-bound partner: configures the account until its
/// end and not at it, never invites users; the owner ends another
/// partner's access early, which frees the seat. Every decision's record
/// carries the `now` it was taken at, and `audit replay` against the same
/// pack gives the same answers.
#[test]
fn a_scoped_time_bound_partner_acts_within_its_scopes_until_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::at(T - DAY));
    let (o, wired) = open(dir.path(), &clock);
    seed(&o);
    let call = o.with(WriteScope::default());
    let ann = invite(
        &o,
        "ann@goldco.example",
        &access(Some("1d"), Some(&["settings"])),
    )
    .unwrap();
    call.accept(&ann).unwrap();
    let ask = |action: &str| {
        let q = Query::parse(
            &format!("User::\"{ann}\""),
            &format!("Action::\"{action}\""),
            r#"Account::"acme""#,
        )
        .unwrap();
        o.authz().is_authorized(&q).unwrap().decision
    };
    clock.set(T - 1);
    assert!(ask("configure_account").is_allowed());
    assert!(!ask("invite_user").is_allowed(), "not in its scopes");
    let by_partner = call
        .invite_user("acme", &ann, "new@acme.example", None)
        .unwrap_err();
    assert_eq!(by_partner.code(), "policy_denied");
    clock.set(T);
    let at_end = ask("configure_account");
    assert!(!at_end.is_allowed());
    assert!(at_end
        .reasons
        .iter()
        .any(|r| r.id == "partner-access-ended"));
    // End bob's access early.
    let bob = invite(&o, "bob@goldco.example", &access(None, None)).unwrap();
    assert_eq!(o.seats("acme").unwrap().partners, 1);
    let ended = call.end_access(&bob, "owner").unwrap();
    assert_eq!(ended.user.status, UserStatus::Dismissed);
    assert_eq!(ended.user.partner.as_ref().unwrap().ends_at(), Some(T));
    assert_eq!(o.seats("acme").unwrap().partners, 0);
    let again = call.end_access(&bob, "owner").unwrap_err();
    assert_eq!(again.code(), "already_dismissed");
    wired.shutdown_log();
    // The records: each decision's context carries the clock's reading.
    let decisions: Vec<Value> = log_records(dir.path())
        .into_iter()
        .filter(|r| r["kind"] == "decision" && r["action"] == "Action::\"configure_account\"")
        .collect();
    let nows: Vec<&Value> = decisions
        .iter()
        .map(|d| &d["context"]["now"]["__extn"]["arg"])
        .collect();
    assert_eq!(
        nows,
        vec![
            &json!(format_ms(T - 1).unwrap()),
            &json!(format_ms(T).unwrap())
        ]
    );
    let pack = o.authz().evaluator().current();
    let report = partnergate::audit::replay::replay(
        &dir.path().join("decisions.jsonl"),
        &pack,
        &Default::default(),
    )
    .unwrap();
    assert!(report.replayed >= 6, "{report:?}");
    assert_eq!(report.changed, 0, "{report:?}");
    assert_eq!(report.skipped, 0, "{report:?}");

    // What did ann do? Her three questions, with reasons and `now`; the
    // owner's decisions and changes are not hers.
    use partnergate::orchestrator::activity::{partner_activity, ActivityQuery};
    let log = dir.path().join("decisions.jsonl");
    let q = ActivityQuery {
        account: "acme".into(),
        partner: Some(ann.clone()),
        ..Default::default()
    };
    let r = partner_activity(&log, &q).unwrap();
    assert!(r.chain.verified, "{:?}", r.chain);
    let seen: Vec<(String, String)> = r
        .items
        .iter()
        .map(|i| (i.action.clone(), i.outcome.clone()))
        .collect();
    assert_eq!(
        seen,
        vec![
            ("configure_account".to_string(), "Allow".to_string()),
            ("invite_user".into(), "Deny".into()),
            ("invite_user".into(), "Deny".into()),
            ("configure_account".into(), "Deny".into()),
        ],
        "{r:?}"
    );
    assert_eq!(r.items[3].reasons, vec!["partner-access-ended".to_string()]);
    assert_eq!(r.items[3].now, format_ms(T));
    // Every partner of the account: bob's invitation was the owner's act,
    // so only ann's decisions; nothing before ann was invited is hers.
    let all = partner_activity(
        &log,
        &ActivityQuery {
            partner: None,
            ..q.clone()
        },
    )
    .unwrap();
    assert_eq!(all.items.len(), 4, "{all:?}");
    let none = partner_activity(
        &log,
        &ActivityQuery {
            since: Some(time::OffsetDateTime::now_utc() + time::Duration::days(1)),
            ..q.clone()
        },
    )
    .unwrap();
    assert!(none.items.is_empty());
    // The same report over the log shipped into PostgreSQL.
    if let Some(pg) = common::PgSchema::new() {
        use partnergate::orchestrator::activity::partner_activity_db;
        let store = partnergate_core::store::postgres::PgStore::open(&pg.url, "t").unwrap();
        partnergate_core::audit_db::Shipper::new(&log, 100)
            .unwrap()
            .ship_all(&store)
            .unwrap();
        let from_db = partner_activity_db(&store, &q).unwrap();
        assert!(from_db.chain.verified, "{:?}", from_db.chain);
        assert_eq!(
            serde_json::to_value(&from_db.items).unwrap(),
            serde_json::to_value(&r.items).unwrap()
        );
        let all_db = partner_activity_db(
            &store,
            &ActivityQuery {
                partner: None,
                ..q.clone()
            },
        );
        assert_eq!(all_db.unwrap().items.len(), 4);
        // A row edited in the database: the report says so.
        let mut c = postgres::Client::connect(&pg.url, postgres::NoTls).unwrap();
        c.execute(
            "UPDATE audit_records SET record = replace(record, '\"Deny\"', '\"Allow\"')
             WHERE seq = (SELECT min(seq) FROM audit_records WHERE record LIKE '%\"Deny\"%')",
            &[],
        )
        .unwrap();
        let tampered = partner_activity_db(&store, &q).unwrap();
        assert!(!tampered.chain.verified);
        assert!(tampered.chain.problem.unwrap().contains("edited"));
    }
    // An edited record: the report says the chain did not verify.
    let text = std::fs::read_to_string(&log).unwrap();
    std::fs::write(&log, text.replacen("\"Deny\"", "\"Allow\"", 1)).unwrap();
    let tampered = partner_activity(&log, &q).unwrap();
    assert!(!tampered.chain.verified);
    assert!(tampered.chain.problem.is_some());
}

/// A POST with the bearer token.
fn post(server: &Server, path: &str, body: &Value) -> (u16, Value) {
    server.post_with_token(path, body)
}

/// Over HTTP: a time-bound, scoped invitation, the employees list with its
/// end and scopes, a renewal, a renewal past the maximum (422), an unknown
/// scope (422), an early end, a caller's `context.now` refused (400), and
/// the sweep in real time marking a one-second access.
#[test]
fn the_http_endpoints_and_the_sweep_in_real_time() {
    let ws = Workspace::new();
    let server = Server::start(&ws, &["--partner-sweep-ms", "50"]);
    server.load_demo();
    let (s, _) = server.put(
        "/v1/partner-companies/goldco",
        &json!({"name": "GoldCo", "status": "gold", "certified": true,
                "emails": ["ann@goldco.example", "bob@goldco.example", "pat@goldco.example"]}),
    );
    assert_eq!(s, 200);
    let (s, b) = post(
        &server,
        "/v1/accounts/acme/partners",
        &json!({"actor": "owner", "email": "ann@goldco.example", "name": "ann",
                "duration": "30d", "scopes": ["users", "settings"]}),
    );
    assert_eq!(s, 201, "{b}");
    let ann = b["user"]["id"].as_str().unwrap().to_string();
    assert_eq!(b["user"]["partner"]["scopes"], json!(["settings", "users"]));
    assert!(b["user"]["partner"]["expires_at"].is_string(), "{b}");
    let (_, list) = server.get("/v1/accounts/acme/users");
    let row = list["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["id"] == ann.as_str())
        .unwrap()
        .clone();
    assert_eq!(row["partner"]["scopes"], json!(["settings", "users"]));
    let (s, b) = post(
        &server,
        &format!("/v1/users/{ann}/partner-access/renew"),
        &json!({"actor": "owner", "duration": "731d"}),
    );
    assert_eq!(
        (s, b["error"].as_str()),
        (422, Some("access_too_long")),
        "{b}"
    );
    let (s, b) = post(
        &server,
        &format!("/v1/users/{ann}/partner-access/renew"),
        &json!({"actor": "owner", "expires_at": "2099-01-01T00:00:00Z"}),
    );
    assert_eq!(s, 422, "beyond 730 days from now: {b}");
    let (s, b) = post(
        &server,
        &format!("/v1/users/{ann}/partner-access/renew"),
        &json!({"actor": "owner", "duration": "60d"}),
    );
    assert_eq!(s, 200, "{b}");
    let (s, b) = post(
        &server,
        "/v1/accounts/acme/partners",
        &json!({"actor": "owner", "email": "bob@goldco.example", "scopes": ["payroll"]}),
    );
    assert_eq!(
        (s, b["error"].as_str()),
        (422, Some("unknown_scope")),
        "{b}"
    );
    assert!(b["message"].as_str().unwrap().contains("payroll"), "{b}");
    let (s, b) = post(
        &server,
        "/v1/is_authorized",
        &json!({"principal": "User::\"owner\"", "action": "Action::\"view_account\"",
                "resource": "Account::\"acme\"", "context": {"now": {"__extn": {"fn": "datetime", "arg": "2000-01-01"}}}}),
    );
    assert_eq!(s, 400, "{b}");
    assert!(b.to_string().contains("context.now"), "{b}");
    // ann accepts and asks; the owner reads what she did (token only).
    let (s, b) = post(&server, &format!("/v1/users/{ann}/accept"), &json!({}));
    assert_eq!(s, 200, "{b}");
    let (s, b) = post(
        &server,
        "/v1/is_authorized",
        &json!({"principal": format!("User::\"{ann}\""), "action": "Action::\"manage_billing\"",
                "resource": "Account::\"acme\""}),
    );
    assert_eq!((s, b["decision"].as_str()), (200, Some("Deny")), "{b}");
    let path = format!("/v1/accounts/acme/partner-activity?partner={ann}");
    assert_eq!(server.get(&path).0, 401, "the activity needs the token");
    // The log is written by its own thread: poll until the record is there.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let report = loop {
        let r = server
            .client
            .get(server.url(&path))
            .bearer_auth(&server.token)
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let report: Value = r.json().unwrap();
        let found = report["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["action"] == "manage_billing" && i["outcome"] == "Deny");
        if found {
            break report;
        }
        assert!(std::time::Instant::now() < deadline, "{report}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(report["chain"]["verified"].is_boolean(), "{report}");
    let bad = server
        .client
        .get(server.url("/v1/accounts/acme/partner-activity?since=yesterday"))
        .bearer_auth(&server.token)
        .send()
        .unwrap();
    assert_eq!(bad.status().as_u16(), 400);
    let (s, b) = post(
        &server,
        &format!("/v1/users/{ann}/partner-access/end"),
        &json!({"actor": "owner"}),
    );
    assert_eq!(
        (s, b["user"]["status"].as_str()),
        (200, Some("dismissed")),
        "{b}"
    );
    // A one-second access, swept in real time.
    let (s, b) = post(
        &server,
        "/v1/accounts/acme/partners",
        &json!({"actor": "owner", "email": "bob@goldco.example", "duration": "1s"}),
    );
    assert_eq!(s, 201, "{b}");
    let bob = b["user"]["id"].as_str().unwrap().to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, list) = server.get("/v1/accounts/acme/users");
        let row = list["users"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["id"] == bob.as_str())
            .unwrap()
            .clone();
        if row["status"] == "dismissed" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not swept: {row}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The command line: a time-bound, scoped invitation, the employees list
/// with the end and the scopes, an unknown scope (exit 1, named), a renewal
/// and one past the maximum, an early end, the sweep, and the activity
/// report over the CLI's own decision log.
#[test]
fn the_cli_gives_renews_ends_and_reports_partner_access() {
    let ws = Workspace::new();
    let ents = ws.path().join("entities.json");
    std::fs::write(
        &ents,
        json!([
            account("acme", Some("Acme")),
            user("owner", "acme").admin(true).json()
        ])
        .to_string(),
    )
    .unwrap();
    let (code, out, err) = ws.cli(&["import", ents.to_str().unwrap()], &[], &[]);
    assert_eq!(code, 0, "{out}{err}");
    let reg = ws.path().join("registry.json");
    std::fs::write(
        &reg,
        json!([{"id": "goldco", "name": "GoldCo", "status": "gold", "certified": true,
                "emails": ["ann@goldco.example", "bob@goldco.example"]}])
        .to_string(),
    )
    .unwrap();
    let (code, out, err) = ws.cli(&["registry", "import", reg.to_str().unwrap()], &[], &[]);
    assert_eq!(code, 0, "{out}{err}");
    let invite = |email: &str, extra: &[&str]| {
        let mut args = vec![
            "partners",
            "invite",
            "--account",
            "acme",
            "--actor",
            "owner",
        ];
        args.extend(["--email", email]);
        args.extend(extra);
        ws.cli(&args, &[], &[])
    };
    let (code, _, err) = invite("ann@goldco.example", &["--scopes", "users,payroll"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("unknown_scope") && err.contains("`payroll`"),
        "{err}"
    );
    let (code, out, err) = invite(
        "ann@goldco.example",
        &["--duration", "90d", "--scopes", "settings,users"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(", ends ") && out.contains("scopes settings,users"),
        "{out}"
    );
    let ann = out.split_whitespace().next().unwrap().to_string();
    let (code, out, _) = ws.cli(&["users", "list", "--account", "acme"], &[], &[]);
    assert_eq!(code, 0);
    let header = out.lines().next().unwrap();
    assert!(
        header.contains("ENDS") && header.contains("SCOPES"),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with(&ann) && l.ends_with("settings,users")),
        "{out}"
    );
    let renew = |extra: &[&str]| {
        let mut args = vec!["partners", "renew", "--user", &ann, "--actor", "owner"];
        args.extend(extra);
        ws.cli(&args, &[], &[])
    };
    let (code, _, err) = renew(&["--duration", "800d"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("access_too_long") && err.contains("730 days"),
        "{err}"
    );
    let (code, out, err) = renew(&["--expires-at", "2026-12-31T00:00:00Z", "--duration", "3d"]);
    assert_ne!(code, 0, "both an end and a duration: {out}");
    assert!(
        err.contains("--duration") || err.contains("--expires-at"),
        "{err}"
    );
    let (code, out, err) = renew(&["--duration", "180d"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(", ends "), "{out}");
    let (code, out, err) = ws.cli(
        &["partners", "end", "--user", &ann, "--actor", "owner"],
        &[],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("status dismissed"), "{out}");
    let (code, out, err) = ws.cli(&["partners", "sweep"], &[], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("0 partner access(es) ended"),
        "an ended-early access is already marked: {out}"
    );
    let log = ws.data().join("decisions.jsonl");
    // `audit` takes no --data-dir: run the binary directly.
    let o = std::process::Command::new(common::BIN)
        .args([
            "audit",
            "partner-activity",
            log.to_str().unwrap(),
            "--account",
            "acme",
            "--json",
        ])
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["chain"]["verified"], true, "{report}");
    assert_eq!(
        report["items"],
        json!([]),
        "the owner acted, no partner: {report}"
    );
}

/// The same storm on PostgreSQL, from two replicas of the orchestrator
/// (two stores over one database, 32 invitations each) while the clock
/// crosses two partners' end: the shared write lock keeps the account at
/// three seats, and exactly the two freed seats are taken.
#[test]
fn concurrent_invitations_around_an_expiry_on_postgres_from_two_replicas() {
    let Some(pg) = common::PgSchema::new() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::at(T - DAY));
    let (a, wired_a) = open_pg(&pg.url, dir.path(), "a", &clock);
    seed(&a);
    invite(&a, "ann@goldco.example", &access(Some("1d"), None)).unwrap();
    invite(&a, "bob@goldco.example", &access(Some("1d"), None)).unwrap();
    invite(&a, "cat@goldco.example", &access(None, None)).unwrap();
    let (b, wired_b) = open_pg(&pg.url, dir.path(), "b", &clock);
    clock.set(T - 2);
    let replicas = [Arc::new(a), Arc::new(b)];
    let done = Arc::new(AtomicUsize::new(0));
    let ok = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(65));
    let mut threads = Vec::new();
    for i in 0..64 {
        let o = replicas[i % 2].clone();
        let (done, ok, barrier) = (done.clone(), ok.clone(), barrier.clone());
        threads.push(std::thread::spawn(move || {
            barrier.wait();
            match invite(&o, &format!("g{i}@goldco.example"), &access(None, None)) {
                Ok(_) => {
                    ok.fetch_add(1, Ordering::SeqCst);
                }
                Err(OrchestratorError::LimitReached { .. }) => {}
                Err(e) => panic!("g{i}: {e}"),
            }
            done.fetch_add(1, Ordering::SeqCst);
        }));
    }
    barrier.wait();
    while done.load(Ordering::SeqCst) < 16 {
        std::thread::yield_now();
    }
    clock.set(T);
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(ok.load(Ordering::SeqCst), 2, "exactly the two freed seats");
    wired_a.shutdown_log();
    wired_b.shutdown_log();
    drop(replicas);
    // A fresh replica reads the store: three seats held at the clock.
    let (c, wired_c) = open_pg(&pg.url, dir.path(), "c", &clock);
    assert_eq!(c.seats("acme").unwrap().partners, 3);
    let ended = c.with(WriteScope::default()).end_expired().unwrap();
    assert_eq!(ended.len(), 2, "ann and bob are marked once");
    wired_c.shutdown_log();
}

/// The upgrade: a partner stored before scopes existed (no `scopes`, which
/// the policies read as nothing) gets quotas.toml's default set once, with
/// a change record by `system`; a partner given `[]` keeps nothing.
#[test]
fn partners_stored_without_scopes_get_the_default_set_once() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::at(T));
    let (o, wired) = open(dir.path(), &clock);
    seed(&o);
    let mut legacy = user("old", "acme").partner("goldco", true).json();
    legacy["attrs"]["partner"]
        .as_object_mut()
        .unwrap()
        .remove("scopes");
    let mut none = user("none", "acme").partner("goldco", true).json();
    none["attrs"]["partner"]["scopes"] = json!([]);
    o.authz()
        .put_entities("test", None, json!([legacy, none]))
        .unwrap();
    let configure = |who: &str| {
        let q = Query::parse(
            &format!("User::\"{who}\""),
            r#"Action::"configure_account""#,
            r#"Account::"acme""#,
        )
        .unwrap();
        o.authz().is_authorized(&q).unwrap().decision.is_allowed()
    };
    assert!(!configure("old"), "no scopes: nothing");
    let call = o.with(WriteScope::default());
    let changed = call.default_missing_scopes().unwrap();
    assert_eq!(
        changed.iter().map(|u| u.id.as_str()).collect::<Vec<_>>(),
        vec!["old"]
    );
    assert_eq!(
        changed[0].partner.as_ref().unwrap().scopes.as_deref(),
        Some(
            &[
                "integrations".to_string(),
                "settings".into(),
                "users".into()
            ][..]
        )
    );
    assert!(configure("old"));
    assert!(!configure("none"), "an empty set stays empty");
    assert!(call.default_missing_scopes().unwrap().is_empty(), "once");
    wired.shutdown_log();
    let records: Vec<Value> = log_records(dir.path())
        .into_iter()
        .filter(|r| r["operation"] == "partner.scopes_default")
        .collect();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["actor"], "system");
}

/// Wait (generously) until `f` holds; panics naming `what` past 60 s.
fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(std::time::Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Set when the orchestrator's SQLite connection found the database locked
/// (its busy handler ran): the write is waiting for the lock.
static SQLITE_WAITED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn note_wait_and_retry(_: i32) -> bool {
    SQLITE_WAITED.store(true, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(2));
    true
}

/// A renewal that waited past the partner's end `end` was refused
/// `access_ended`, and `ann`'s stored end is unchanged.
fn refused_as_ended<R: std::fmt::Debug>(
    renewed: Result<R, partnergate::orchestrator::OrchestratorError>,
    o: &partnergate::orchestrator::Orchestrator,
    ann: &str,
    end: i64,
) {
    let e = renewed.expect_err("renewed after its end");
    assert_eq!(e.code(), "access_ended", "{e}");
    let stored = o.users("acme").unwrap();
    let ann_now = stored.iter().find(|u| u.user.id == ann).unwrap();
    assert_eq!(
        ann_now.user.partner.as_ref().unwrap().ends_at(),
        Some(end),
        "the end is unchanged"
    );
}

/// SQLite, two handles on one file: while the other handle holds the write
/// lock (`BEGIN IMMEDIATE`, as a large write does), a renewal waits for it
/// and the partner's end passes; once the lock is released the renewal is
/// refused `access_ended` (judged at the instant it commits, not at the
/// instant it started to wait), and the partner is not renewed.
#[test]
fn a_renewal_that_waits_for_the_write_lock_past_the_end_is_refused_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::at(T - DAY));
    let (o, wired) = open(dir.path(), &clock);
    seed(&o);
    let ann = invite(&o, "ann@goldco.example", &access(Some("1d"), None)).unwrap();
    clock.set(T - 1_000);
    let partnergate::runtime::OpenStore::Sqlite(store) = &wired.store else {
        panic!("a SQLite store")
    };
    store
        .conn()
        .unwrap()
        .busy_handler(Some(note_wait_and_retry))
        .unwrap();
    let mut other = rusqlite::Connection::open(dir.path().join("store.db")).unwrap();
    let held = other
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .unwrap();
    let renewed = std::thread::scope(|s| {
        let renewal = s.spawn(|| {
            o.with(WriteScope::default())
                .renew(&ann, "owner", &access(Some("30d"), None))
        });
        wait_until("the renewal to wait for the write lock", || {
            SQLITE_WAITED.load(Ordering::SeqCst)
        });
        clock.set(T + 1_000);
        held.rollback().unwrap();
        renewal.join().unwrap()
    });
    refused_as_ended(renewed, &o, &ann, T);
    wired.shutdown_log();
}

/// PostgreSQL, two replicas on one database: while another session holds
/// the shared write lock (as a large entity write on the other replica
/// does), a renewal through replica B waits for it and the partner's end
/// passes; released, the renewal is refused `access_ended`.
#[test]
fn a_renewal_that_waits_for_the_write_lock_past_the_end_is_refused_on_postgres() {
    let Some(pg) = common::PgSchema::new() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::at(T - DAY));
    let (a, wired_a) = open_pg(&pg.url, dir.path(), "a", &clock);
    seed(&a);
    let ann = invite(&a, "ann@goldco.example", &access(Some("1d"), None)).unwrap();
    let (b, wired_b) = open_pg(&pg.url, dir.path(), "b", &clock);
    clock.set(T - 1_000);
    let mut holder = postgres::Client::connect(&pg.url, postgres::NoTls).unwrap();
    let mut waiting = common::orchestrator::waiting_for(&pg.url, &mut holder);
    let mut held = holder.transaction().unwrap();
    common::orchestrator::hold_write_lock(&mut held);
    let renewed = std::thread::scope(|s| {
        let renewal = s.spawn(|| {
            b.with(WriteScope::default())
                .renew(&ann, "owner", &access(Some("30d"), None))
        });
        wait_until("the renewal to wait for the write lock", &mut waiting);
        clock.set(T + 1_000);
        held.rollback().unwrap();
        renewal.join().unwrap()
    });
    refused_as_ended(renewed, &b, &ann, T);
    wired_a.shutdown_log();
    wired_b.shutdown_log();
}
