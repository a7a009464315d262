//! The orchestrator's command line writes the decision log like `serve`:
//! the decision that allowed an operation and the change records it made,
//! in a chain `partnergate audit verify` accepts (issue #13 §2: the CLI
//! logged nothing).
//!
//! (That a change record names its decision id is the orchestrator's part
//! of the same issue and is tested with the orchestrator.)

mod common;

use std::path::Path;
use std::process::Command;

use common::entities::{account, user};
use common::{invite_args, Workspace, BIN};
use serde_json::{json, Value};

/// Run the binary over the workspace (no terminal: stdin is null).
fn run(ws: &Workspace, args: &[&str], extra: &[&str]) -> (i32, String, String) {
    ws.cli(args, extra, &[])
}

/// The invitation of ann@goldco.example into `acme` by its owner.
const INVITE_ANN: [&str; 8] = invite_args("owner", "ann@goldco.example");

/// A workspace with account `acme` (its administrator `owner`) and the
/// partner company `goldco` in the registry; the set-up commands log nothing.
fn seeded() -> Workspace {
    let ws = Workspace::new();
    let ents = ws.path().join("entities.json");
    let entities = json!([
        account("acme", Some("Acme")),
        user("owner", "acme").admin(true).json(),
    ]);
    std::fs::write(&ents, entities.to_string()).unwrap();
    let (code, out, err) = run(&ws, &["import", ents.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{out}{err}");
    let reg = ws.path().join("registry.json");
    let companies = json!([{"id": "goldco", "name": "GoldCo", "status": "gold",
        "certified": true, "emails": ["ann@goldco.example"]}]);
    std::fs::write(&reg, companies.to_string()).unwrap();
    let (code, out, err) = ws.cli(
        &["registry", "import", reg.to_str().unwrap()],
        &[],
        &[("PARTNERGATE_AUDIT_LOG", "off")],
    );
    assert_eq!(code, 0, "{out}{err}");
    ws
}

fn records(log: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(log)
        .unwrap_or_else(|e| panic!("no decision log at {}: {e}", log.display()));
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn invite(ws: &Workspace, extra: &[&str]) -> String {
    let (code, out, err) = run(ws, &INVITE_ANN, extra);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("status invited, company goldco"), "{out}");
    out
}

/// The log holds the Allow decision of the invitation and its change
/// records, and its chain verifies.
fn assert_logged_invite(log: &Path) {
    let recs = records(log);
    let allow = recs
        .iter()
        .find(|r| r["kind"] == "decision" && r["decision"] == "Allow")
        .unwrap_or_else(|| panic!("no Allow decision in {recs:#?}"));
    assert_eq!(allow["principal"], "User::\"owner\"", "{allow}");
    let changes: Vec<&Value> = recs.iter().filter(|r| r["kind"] == "change").collect();
    assert!(!changes.is_empty(), "no change record in {recs:#?}");
    assert!(
        changes
            .iter()
            .all(|c| c["actor"] == "User::\"owner\"" && c["operation"] == "partner.invite"),
        "{changes:#?}"
    );
    let o = Command::new(BIN)
        .args(["audit", "verify"])
        .arg(log)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "audit verify: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn partners_invite_writes_the_decision_and_its_changes_to_the_given_log() {
    let ws = seeded();
    let log = ws.path().join("cli-decisions.jsonl");
    invite(&ws, &["--audit-log", log.to_str().unwrap()]);
    assert_logged_invite(&log);
}

#[test]
fn partners_invite_logs_to_the_data_directory_by_default_like_serve() {
    let ws = seeded();
    let log = ws.data().join("decisions.jsonl");
    assert!(!log.exists(), "the set-up logged nothing");
    invite(&ws, &[]);
    assert_logged_invite(&log);
}

#[test]
fn partners_invite_with_the_log_off_writes_none() {
    let ws = seeded();
    invite(&ws, &["--audit-log", "off"]);
    assert!(!ws.data().join("decisions.jsonl").exists());
}

#[test]
fn partners_invite_beside_a_logging_sidecar_is_refused_with_a_hint_and_writes_nothing() {
    let ws = seeded();
    // The sidecar holds the data directory's decision log.
    let server = common::Server::start(&ws, &[]);
    let (code, out, err) = run(&ws, &INVITE_ANN, &[]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("a running sidecar?") && err.contains("--audit-log PATH"),
        "{err}"
    );
    let (code, listed, err) = run(
        &ws,
        &["users", "list", "--account", "acme"],
        &["--audit-log", "off"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(!listed.contains("ann@goldco.example"), "{listed}");
    // The hint works: a log of its own.
    let log = ws.path().join("cli-decisions.jsonl");
    invite(&ws, &["--audit-log", log.to_str().unwrap()]);
    assert_logged_invite(&log);
    drop(server);
}

#[test]
fn partners_suspend_and_resume_show_in_the_list_and_the_seats() {
    let ws = seeded();
    let out = invite(&ws, &[]);
    let ann = out.split_whitespace().next().unwrap().to_string();
    let cmd = |verb: &str, actor: &str| {
        run(
            &ws,
            &["partners", verb, "--user", &ann, "--actor", actor],
            &[],
        )
    };
    let (code, _, err) = run(&ws, &["users", "accept", "--user", &ann], &[]);
    assert_eq!(code, 0, "{err}");
    // ann (a partner) cannot suspend herself.
    let (code, _, err) = cmd("suspend", &ann);
    assert_eq!(code, 2, "a policy deny: {err}");
    assert!(err.contains("policy_denied"), "{err}");
    let (code, out, err) = cmd("suspend", "owner");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(", suspended"), "{out}");
    let (code, listed, err) = run(&ws, &["users", "list", "--account", "acme"], &[]);
    assert_eq!(code, 0, "{err}");
    let line = listed
        .lines()
        .find(|l| l.contains("ann@goldco.example"))
        .unwrap();
    assert!(line.contains("suspended"), "{listed}");
    let (code, seats, err) = run(&ws, &["seats", "--account", "acme"], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        seats.contains("partners 1 (limit 3), 1 suspended"),
        "{seats}"
    );
    let (code, out, err) = cmd("resume", "owner");
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("suspended"), "{out}");
    let (code, _, err) = cmd("resume", "owner");
    assert_ne!(code, 0);
    assert!(err.contains("not_suspended"), "{err}");
}
