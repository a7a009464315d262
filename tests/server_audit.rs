//! The sidecar's decision log end to end: every decision endpoint, entity
//! change and reload lands exactly once; shadow mode logs exactly the
//! disagreements; redacted values never reach the file; the chain verifies.

mod common;

use std::time::Instant;

use common::{Server, Workspace, BIN};
use serde_json::{json, Value};

const PAT: &str = "User::\"pat\"";
const EMMA: &str = "User::\"emma\"";
const OWNER: &str = "User::\"owner\"";
const ACME: &str = "Account::\"acme\"";

/// The complete records of the log: a last line the writer is still writing
/// (no newline yet) is not a record yet.
fn records(path: &std::path::Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    complete
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Poll the log until `pred` holds for its records.
fn wait_log(path: &std::path::Path, what: &str, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let t0 = Instant::now();
    loop {
        let r = records(path);
        if pred(&r) {
            return r;
        }
        assert!(
            t0.elapsed() < common::PATIENCE,
            "timed out waiting for {what}: {r:?}"
        );
        std::thread::yield_now();
    }
}

fn invite(s: &Server, status: &str) -> Value {
    s.post(
        "/v1/is_authorized",
        &json!({"principal": OWNER, "action": "Action::\"invite_partner\"", "resource": ACME,
                "context": {"invitee": {"company": {"__entity": {"type": "PartnerCompany", "id": "x"}}, "status": status, "certified": true}}}),
    )
    .1
}

#[test]
fn every_kind_of_event_lands_once_with_its_fields_and_the_chain_verifies() {
    let ws = Workspace::new();
    let s = Server::start(&ws, &["--audit-redact-attr", "email"]);
    let log = ws.data().join("decisions.jsonl");
    s.load_demo();
    let single = s.ask(PAT, "grant_admin", EMMA);
    let (_, batch) = s.post(
        "/v1/is_authorized/batch",
        &json!({"requests": [{"principal": PAT, "action": "Action::\"dismiss_user\"", "resource": EMMA}]}),
    );
    let r = s
        .client
        .post(s.url("/access/v1/evaluation"))
        .header("X-Request-ID", "trace-7")
        .json(
            &json!({"subject": {"type": "User", "id": "emma"}, "action": {"name": "view_account"},
                      "resource": {"type": "Account", "id": "acme"}}),
        )
        .send()
        .unwrap();
    let authzen: Value = r.json().unwrap();
    // A reload (a comment-only edit still reloads).
    let file = ws.policies().join("10-members.cedar");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, format!("{text}\n// touched\n")).unwrap();

    let ids = [
        single["decision_id"].as_str().unwrap().to_string(),
        batch["results"][0]["decision_id"]
            .as_str()
            .unwrap()
            .to_string(),
        authzen["context"]["decision_id"]
            .as_str()
            .unwrap()
            .to_string(),
    ];
    let recs = wait_log(&log, "3 decisions, 5 changes and a reload", |r| {
        r.iter().filter(|x| x["kind"] == "decision").count() >= 3
            && r.iter().filter(|x| x["kind"] == "change").count() >= 5
            && r.iter().any(|x| x["kind"] == "reload")
    });
    for id in &ids {
        let matching: Vec<&Value> = recs
            .iter()
            .filter(|r| r["decision_id"] == id.as_str())
            .collect();
        assert_eq!(matching.len(), 1, "decision {id} must land exactly once");
        let d = matching[0];
        for field in [
            "seq",
            "ts",
            "decision_id",
            "kind",
            "request_id",
            "principal",
            "action",
            "resource",
            "context",
            "entities_hash",
            "decision",
            "reasons",
            "errors",
            "policy_version",
            "latency_us",
            "prev_hash",
            "hash",
        ] {
            assert!(
                d.get(field).is_some(),
                "decision record lacks `{field}`: {d}"
            );
        }
        assert!(d["replica"].is_string(), "{d}");
        // The slice is in the file: inline here or on an earlier decision.
        let carrier = recs
            .iter()
            .find(|r| r["entities_hash"] == d["entities_hash"])
            .unwrap();
        assert!(carrier["entities"].is_array(), "{carrier}");
        assert!(carrier["seq"].as_u64() <= d["seq"].as_u64());
    }
    let first = recs
        .iter()
        .find(|r| r["decision_id"] == ids[0].as_str())
        .unwrap();
    assert_eq!(first["decision"], "Deny");
    assert_eq!(first["reasons"][0]["id"], "partner-no-admin-grants");
    assert_eq!(first["principal"], PAT);
    let az = recs
        .iter()
        .find(|r| r["decision_id"] == ids[2].as_str())
        .unwrap();
    assert_eq!(az["request_id"], "trace-7");
    let changes: Vec<&Value> = recs.iter().filter(|r| r["kind"] == "change").collect();
    assert_eq!(changes.len(), 5, "one change per demo entity");
    assert!(changes
        .iter()
        .all(|c| c["operation"] == "entities.upsert" && c["before"].is_null()));
    let reload = recs.iter().find(|r| r["kind"] == "reload").unwrap();
    assert!(
        reload["version"].as_str().unwrap().starts_with("sha256:"),
        "{reload}"
    );

    // Redaction: no email reaches the file.
    let raw = std::fs::read_to_string(&log).unwrap();
    assert!(
        !raw.contains("@acme.example") && !raw.contains("@goldco.example"),
        "an email leaked"
    );

    // The chain verifies.
    let out = std::process::Command::new(BIN)
        .args(["audit", "verify"])
        .arg(&log)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn shadow_mode_logs_exactly_the_disagreements() {
    let ws = Workspace::new();
    let candidate = ws.path().join("candidate");
    common::copy_dir(&ws.policies(), &candidate);
    let guards = candidate.join("40-guards.cedar");
    let text = std::fs::read_to_string(&guards).unwrap();
    std::fs::write(
        &guards,
        text.replace(
            "context.invitee.status == \"gold\"",
            "context.invitee.status == \"silver\"",
        ),
    )
    .unwrap();
    let s = Server::start(&ws, &["--shadow-policies", candidate.to_str().unwrap()]);
    let log = ws.data().join("decisions.jsonl");
    s.load_demo();
    // Live answers are unaffected by the candidate.
    assert_eq!(invite(&s, "gold")["decision"], "Allow"); // candidate: Deny
    assert_eq!(invite(&s, "silver")["decision"], "Deny"); // candidate: Allow
    assert_eq!(invite(&s, "bronze")["decision"], "Deny"); // both deny
    assert_eq!(s.ask(PAT, "dismiss_user", EMMA)["decision"], "Allow"); // both allow
    let recs = wait_log(&log, "4 decisions", |r| {
        r.iter().filter(|x| x["kind"] == "decision").count() >= 4
    });
    let shadows: Vec<&Value> = recs
        .iter()
        .filter(|r| r.get("shadow").is_some_and(|s| !s.is_null()))
        .collect();
    assert_eq!(
        shadows.len(),
        2,
        "exactly the two disagreements: {shadows:?}"
    );
    assert_eq!(shadows[0]["decision"], "Allow");
    assert_eq!(shadows[0]["shadow"]["decision"], "Deny");
    assert_eq!(shadows[1]["shadow"]["decision"], "Allow");
    let metrics = s.metrics();
    assert!(
        metrics.contains("partnergate_shadow_disagreements_total 2"),
        "{metrics}"
    );
}

#[test]
fn orchestrator_operations_and_their_policy_checks_are_logged() {
    let ws = Workspace::new();
    let s = Server::start(&ws, &[]);
    let log = ws.data().join("decisions.jsonl");
    s.load_demo();
    assert_eq!(
        s.put(
            "/v1/partner-companies/goldco",
            &json!({"name": "GoldCo", "status": "gold", "certified": true, "emails": ["ann@goldco.example"]})
        )
        .0,
        200
    );
    let r = s
        .client
        .post(s.url("/v1/accounts/acme/partners"))
        .bearer_auth(&s.token)
        .json(&json!({"actor": "owner", "email": "ann@goldco.example", "name": "ann"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    let recs = wait_log(&log, "the invitation's change", |r| {
        r.iter().any(|x| x["operation"] == "partner.invite")
    });
    let invites: Vec<&Value> = recs
        .iter()
        .filter(|r| r["operation"] == "partner.invite")
        .collect();
    assert_eq!(invites.len(), 1, "{invites:?}");
    assert_eq!(invites[0]["actor"], OWNER);
    assert!(invites[0]["before"].is_null());
    assert_eq!(invites[0]["after"]["attrs"]["status"], "invited");
    assert_eq!(
        recs.iter()
            .filter(|r| r["operation"] == "registry.put")
            .count(),
        1
    );
    // The policy check the orchestrator made is a logged decision.
    assert!(recs.iter().any(|r| r["kind"] == "decision"
        && r["action"] == "Action::\"invite_partner\""
        && r["principal"] == OWNER
        && r["decision"] == "Allow"));
}

#[test]
fn cli_authorize_decisions_are_logged() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("cli.jsonl");
    let run = || {
        std::process::Command::new(BIN)
            .current_dir(common::repo())
            .args([
                "authorize",
                "--principal",
                PAT,
                "--action",
                "grant_admin",
                "--resource",
                EMMA,
            ])
            .args(["--entities", "demo/entities.json", "--audit-log"])
            .arg(&log)
            .output()
            .unwrap()
    };
    assert_eq!(run().status.code(), Some(2));
    assert_eq!(run().status.code(), Some(2));
    let recs = records(&log);
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[0]["action"], "Action::\"grant_admin\"");
    assert_eq!(recs[1]["decision"], "Deny");
    assert_eq!(
        recs[1]["prev_hash"], recs[0]["hash"],
        "one chain across runs"
    );
}

/// The decision cache over HTTP: a repeated question is served from it
/// (counted in `/metrics`) with the same answer and its own decision id, and
/// both decisions are in the log, each under its id; a write to an entity
/// the decision read is answered afresh at once.
#[test]
fn a_cached_decision_has_its_own_id_and_record_and_a_write_is_seen_at_once() {
    let ws = Workspace::new();
    let s = Server::start(&ws, &[]);
    let log = ws.data().join("decisions.jsonl");
    s.load_demo();
    let first = s.ask(PAT, "view_account", ACME);
    let second = s.ask(PAT, "view_account", ACME);
    assert_eq!(first["decision"], "Allow", "{first}");
    assert_ne!(first["decision_id"], second["decision_id"]);
    let strip = |mut v: Value| {
        v.as_object_mut().unwrap().remove("decision_id");
        v
    };
    assert_eq!(strip(first.clone()), strip(second.clone()));
    let metrics = s.metrics();
    let hits: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("partnergate_decision_cache_hits_total "))
        .unwrap_or_else(|| panic!("no cache hits counter in:\n{metrics}"))
        .trim()
        .parse()
        .unwrap();
    assert!(hits >= 1.0, "{metrics}");
    let ids = [first["decision_id"].clone(), second["decision_id"].clone()];
    let recs = wait_log(&log, "both decisions", |r| {
        ids.iter()
            .all(|id| r.iter().any(|x| x["decision_id"] == *id))
    });
    for id in &ids {
        let rec = recs.iter().find(|x| x["decision_id"] == *id).unwrap();
        assert_eq!(rec["decision"], "Allow");
        assert_eq!(rec["principal"], PAT);
    }
    // The company pat's partner record references loses its certification:
    // the next answer is a fresh one.
    let (status, _) = s.put_entities(&json!([{"uid": {"type": "PartnerCompany", "id": "goldco"},
        "attrs": {"name": "GoldCo", "status": "gold", "certified": false}, "parents": []}]));
    assert_eq!(status, 200);
    let after = s.ask(PAT, "view_account", ACME);
    assert_eq!(after["decision"], "Deny", "{after}");
}
