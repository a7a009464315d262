//! The sidecar end to end: a real `partnergate serve` on an ephemeral port,
//! real policy files in a temp dir, the real SQLite store.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::entities::user;
use common::{Server, Workspace};
use serde_json::json;

const PAT: &str = "User::\"pat\"";
const EMMA: &str = "User::\"emma\"";
const OWNER: &str = "User::\"owner\"";
const ACME: &str = "Account::\"acme\"";

fn reason_ids(d: &serde_json::Value) -> Vec<String> {
    d["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn allow_and_deny_through_is_authorized_with_reasons() {
    let ws = Workspace::new();
    let s = Server::start(&ws, &[]);
    s.load_demo();
    let allow = s.ask(PAT, "dismiss_user", EMMA);
    assert_eq!(allow["decision"], "Allow");
    assert_eq!(reason_ids(&allow), vec!["partner-administer-users"]);
    assert!(allow["policy_version"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
    assert!(!allow["decision_id"].as_str().unwrap().is_empty());

    let deny = s.ask(PAT, "grant_admin", EMMA);
    assert_eq!(deny["decision"], "Deny");
    assert_eq!(reason_ids(&deny), vec!["partner-no-admin-grants"]);
    assert_eq!(
        deny["reasons"][0]["description"],
        "A partner cannot give or take away administrator rights"
    );

    let owner = s.ask(PAT, "dismiss_user", OWNER);
    assert_eq!(owner["decision"], "Deny");
    assert_eq!(reason_ids(&owner), vec!["partner-no-touch-admins"]);

    // Object form of uids is accepted too.
    let (st, obj) = s.post(
        "/v1/is_authorized",
        &json!({"principal": {"type": "User", "id": "emma"}, "action": {"type": "Action", "id": "view_account"},
                "resource": {"type": "Account", "id": "acme"}}),
    );
    assert_eq!(st, 200);
    assert_eq!(obj["decision"], "Allow");
}

#[test]
fn unknown_principal_is_a_deny_with_the_reason_and_request_entities_overlay() {
    let ws = Workspace::new();
    let s = Server::start(&ws, &[]);
    s.load_demo();
    let d = s.ask("User::\"ghost\"", "view_account", ACME);
    assert_eq!(d["decision"], "Deny");
    assert!(d["errors"][0]
        .as_str()
        .unwrap()
        .contains("unknown principal User::\"ghost\""));

    // The same ghost, sent with the request, is still unknown (issue #12:
    // request data never makes a principal known; `--request-entities
    // override` does, see tests/reliability/request_entities.rs).
    let ghost = json!([user("ghost", "acme")
        .email("g@acme.example")
        .two_factor(false)
        .json()]);
    let (st, d) = s.post(
        "/v1/is_authorized",
        &json!({"principal": "User::\"ghost\"", "action": "Action::\"view_account\"", "resource": ACME, "entities": ghost}),
    );
    assert_eq!(st, 200, "{d}");
    assert_eq!(d["decision"], "Deny", "{d}");
    assert!(d["errors"][0]
        .as_str()
        .unwrap()
        .contains("unknown principal User::\"ghost\""));

    // Request entities may not replace stored attributes: a 400 naming the field.
    let mut emma = s.get("/v1/entities/User/emma").1;
    emma["attrs"]["status"] = json!("dismissed");
    let (st, d) = s.post(
        "/v1/is_authorized",
        &json!({"principal": EMMA, "action": "Action::\"view_account\"", "resource": ACME, "entities": [emma]}),
    );
    assert_eq!(st, 400, "{d}");
    assert!(
        d["message"]
            .as_str()
            .unwrap()
            .contains("entities[0].attrs."),
        "{d}"
    );
}

#[test]
fn batch_keeps_order_and_enforces_its_limit() {
    let ws = Workspace::new();
    let s = Server::start(&ws, &["--max-batch", "3"]);
    s.load_demo();
    let req = |p: &str, a: &str, r: &str| json!({"principal": p, "action": format!("Action::\"{a}\""), "resource": r});
    let (st, body) = s.post(
        "/v1/is_authorized/batch",
        &json!({"requests": [req(PAT, "grant_admin", EMMA), req(PAT, "dismiss_user", EMMA), req(PAT, "no_such_action", EMMA)]}),
    );
    assert_eq!(st, 200, "{body}");
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    assert_eq!(results[0]["decision"], "Deny");
    assert_eq!(results[1]["decision"], "Allow");
    assert_eq!(results[2]["decision"], "Deny");
    assert_eq!(results[2]["error"], "bad_request");

    let four = json!({"requests": [req(PAT, "grant_admin", EMMA), req(PAT, "grant_admin", EMMA),
        req(PAT, "grant_admin", EMMA), req(PAT, "grant_admin", EMMA)]});
    let (st, body) = s.post("/v1/is_authorized/batch", &four);
    assert_eq!(st, 400);
    assert_eq!(body["error"], "batch_too_large");
}

#[test]
fn authzen_evaluation_and_every_evaluations_semantic() {
    let ws = Workspace::new();
    let s = Server::start(&ws, &[]);
    s.load_demo();
    let r = s
        .client
        .post(s.url("/access/v1/evaluation"))
        .header("X-Request-ID", "req-42")
        .json(
            &json!({"subject": {"type": "User", "id": "pat"}, "action": {"name": "grant_admin"},
                      "resource": {"type": "User", "id": "emma"}}),
        )
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-request-id"], "req-42");
    let body: serde_json::Value = r.json().unwrap();
    assert_eq!(body["decision"], false);
    assert_eq!(
        body["context"]["reasons"][0]["id"],
        "partner-no-admin-grants"
    );

    // Subject properties may not replace stored attributes (issue #12): a 400.
    let (st, body) = s.post(
        "/access/v1/evaluation",
        &json!({"subject": {"type": "User", "id": "emma", "properties": {"is_admin": true}},
                "action": {"name": "grant_admin"}, "resource": {"type": "User", "id": "pat"}}),
    );
    assert_eq!(st, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("subject.properties.is_admin"),
        "{body}"
    );

    let items = json!([
        {"action": {"name": "view_account"}, "resource": {"type": "Account", "id": "acme"}},
        {"action": {"name": "grant_admin"}},
        {"action": {"name": "dismiss_user"}},
    ]);
    let run = |semantic: Option<&str>| {
        let mut body = json!({"subject": {"type": "User", "id": "pat"},
            "resource": {"type": "User", "id": "emma"}, "evaluations": items});
        if let Some(sem) = semantic {
            body["options"] = json!({"evaluations_semantic": sem});
        }
        let (st, b) = s.post("/access/v1/evaluations", &body);
        assert_eq!(st, 200, "{b}");
        b["evaluations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["decision"].as_bool().unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(run(None), vec![true, false, true]);
    assert_eq!(run(Some("execute_all")), vec![true, false, true]);
    assert_eq!(run(Some("deny_on_first_deny")), vec![true, false]);
    assert_eq!(run(Some("permit_on_first_permit")), vec![true]);
    let (st, b) = s.post(
        "/access/v1/evaluations",
        &json!({"evaluations": items, "options": {"evaluations_semantic": "whatever"}}),
    );
    assert_eq!(st, 400, "{b}");

    let (st, conf) = s.get("/.well-known/authzen-configuration");
    assert_eq!(st, 200);
    assert!(conf["access_evaluation_endpoint"]
        .as_str()
        .unwrap()
        .ends_with("/access/v1/evaluation"));
}

#[test]
fn bad_requests_are_400_and_writes_need_the_token() {
    let ws = Workspace::new();
    let s = Server::start(&ws, &["--max-body-bytes", "2048"]);
    s.load_demo();
    let raw = |body: String| {
        let r = s
            .client
            .post(s.url("/v1/is_authorized"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .unwrap();
        let st = r.status().as_u16();
        (st, r.json::<serde_json::Value>().unwrap())
    };
    let (st, b) = raw("{\"principal\": ".into());
    assert_eq!(st, 400);
    assert_eq!(b["error"], "malformed_json");
    let (st, b) =
        raw(json!({"principal": PAT, "action": "Action::\"fly\"", "resource": EMMA}).to_string());
    assert_eq!(st, 400);
    assert!(
        b["message"].as_str().unwrap().contains("unknown action"),
        "{b}"
    );
    assert_eq!(b["details"]["field"], "action");
    let (st, b) = raw(json!({"principal": "Robot::\"r2\"", "action": "Action::\"view_account\"", "resource": ACME}).to_string());
    assert_eq!(st, 400);
    assert!(
        b["message"]
            .as_str()
            .unwrap()
            .contains("unknown entity type `Robot`"),
        "{b}"
    );
    let (st, b) = raw(
        json!({"principal": ACME, "action": "Action::\"view_account\"", "resource": ACME})
            .to_string(),
    );
    assert_eq!(st, 400, "wrong principal type for the action: {b}");
    let (st, b) = raw(
        json!({"principal": PAT, "action": "Action::\"invite_partner\"", "resource": ACME})
            .to_string(),
    );
    assert_eq!(st, 400, "missing required context: {b}");
    let (st, b) = raw(format!("{{\"principal\": \"{}\"}}", "x".repeat(4096)));
    assert_eq!(st, 413);
    assert_eq!(b["error"], "body_too_large");

    // Writes without (or with a wrong) token: 401, nothing changes.
    let before = s.get("/v1/entities/User/emma").1;
    let mut changed = before.clone();
    changed["attrs"]["is_admin"] = json!(true);
    for auth in [None, Some("Bearer wrong")] {
        let mut r = s.client.put(s.url("/v1/entities")).json(&json!([changed]));
        if let Some(a) = auth {
            r = r.header("Authorization", a);
        }
        let r = r.send().unwrap();
        assert_eq!(r.status(), 401);
    }
    assert_eq!(s.get("/v1/entities/User/emma").1, before);
    // An invalid entity is a 400 naming it; nothing is written.
    let mut bad = before.clone();
    bad["attrs"]["is_admin"] = json!("yes");
    let (st, b) = s.put_entities(&json!([changed, bad]));
    assert_eq!(st, 400, "{b}");
    assert!(b["message"].as_str().unwrap().contains("entity #1"), "{b}");
    assert_eq!(s.get("/v1/entities/User/emma").1, before);
    assert_eq!(s.get("/v1/entities/User/nobody").0, 404);
}

#[test]
fn entities_persist_across_restart_and_health_endpoints_answer() {
    let ws = Workspace::new();
    {
        let s = Server::start(&ws, &[]);
        s.load_demo();
        assert_eq!(s.get("/readyz").0, 200);
        s.signal("TERM");
        #[allow(clippy::let_and_return)] // the binding drops `s` after `wait` (edition 2021)
        let status = {
            let mut s = s;
            s.child.wait().unwrap()
        };
        assert!(status.success(), "SIGTERM must exit 0: {status:?}");
    }
    let s = Server::start(&ws, &[]);
    assert_eq!(s.ask(PAT, "dismiss_user", EMMA)["decision"], "Allow");
    assert_eq!(s.get("/healthz").0, 200);
    let metrics = s.metrics();
    assert!(metrics.contains("partnergate_decisions_total"), "{metrics}");
    assert!(metrics.contains("partnergate_policy_info"), "{metrics}");
    assert!(
        metrics.contains("partnergate_decision_duration_seconds_bucket"),
        "{metrics}"
    );
    let (_, doc) = s.get("/openapi.json");
    for path in [
        "/v1/is_authorized",
        "/v1/is_authorized/batch",
        "/v1/entities",
        "/v1/entities/{type}/{id}",
        "/v1/policies",
        "/access/v1/evaluation",
        "/access/v1/evaluations",
        "/.well-known/authzen-configuration",
        "/healthz",
        "/readyz",
        "/metrics",
    ] {
        assert!(doc["paths"].get(path).is_some(), "openapi lacks {path}");
    }
}

/// Replace the gold rule by a silver one: a visible change in decisions.
fn silver_edit(text: &str) -> String {
    text.replace(
        "context.invitee.status == \"gold\"",
        "context.invitee.status == \"silver\"",
    )
}

fn invite_with(s: &Server, status: &str) -> String {
    let (st, d) = s.post(
        "/v1/is_authorized",
        &json!({"principal": OWNER, "action": "Action::\"invite_partner\"", "resource": ACME,
                "context": {"invitee": {"company": {"__entity": {"type": "PartnerCompany", "id": "x"}}, "status": status, "certified": true}}}),
    );
    assert_eq!(st, 200, "{d}");
    d["decision"].as_str().unwrap().to_string()
}

#[test]
fn a_policy_edit_is_served_with_no_failed_request() {
    let ws = Workspace::new();
    let s = Server::start(&ws, &[]);
    s.load_demo();
    assert_eq!(invite_with(&s, "gold"), "Allow");
    let v0 = s.version();

    // Hammer the sidecar while the file changes. The loader holds a client
    // and the address, never the server: however the test ends, the
    // server (killed on drop) stops with it, and the guard stops the loader.
    let stop = Arc::new(AtomicBool::new(false));
    let _stop_on_exit = common::SetOnDrop(stop.clone());
    let failures = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let loader = {
        let (stop, failures, done) = (stop.clone(), failures.clone(), done.clone());
        let (client, url) = (s.client.clone(), s.url("/v1/is_authorized"));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let r = client
                    .post(&url)
                    .json(&json!({"principal": PAT, "action": "Action::\"dismiss_user\"", "resource": EMMA}))
                    .send();
                match r {
                    Ok(r) if r.status() == 200 => {}
                    _ => {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let file = ws.policies().join("40-guards.cedar");
    let text = std::fs::read_to_string(&file).unwrap();
    let t0 = std::time::Instant::now();
    std::fs::write(&file, silver_edit(&text)).unwrap();
    s.wait_policies(common::PATIENCE, "the edit to be served", |b| {
        b["version"] != v0.as_str()
    });
    let took = t0.elapsed();
    assert_eq!(invite_with(&s, "gold"), "Deny");
    assert_eq!(invite_with(&s, "silver"), "Allow");
    stop.store(true, Ordering::Relaxed);
    loader.join().unwrap();
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "requests failed during the edit"
    );
    assert!(done.load(Ordering::Relaxed) > 0);
    eprintln!("edit served after {took:?}");
}

#[test]
fn every_bad_edit_keeps_the_last_good_version_and_the_next_good_edit_recovers() {
    let ws = Workspace::new();
    let s = Server::start(&ws, &[]);
    s.load_demo();
    let guards = ws.policies().join("40-guards.cedar");
    let good = std::fs::read_to_string(&guards).unwrap();
    let schema_text = std::fs::read_to_string(ws.schema()).unwrap();

    type Edit = Box<dyn Fn(&Workspace)>;
    type Undo = Box<dyn Fn(&Workspace)>;
    let restore_guards: Undo = {
        let good = good.clone();
        Box::new(move |ws: &Workspace| {
            std::fs::write(ws.policies().join("40-guards.cedar"), &good).unwrap();
        })
    };
    let cases: Vec<(&str, &str, Edit, Undo)> = vec![
        (
            "syntax error",
            "40-guards.cedar",
            {
                let good = good.clone();
                Box::new(move |ws: &Workspace| {
                    std::fs::write(
                        ws.policies().join("40-guards.cedar"),
                        good.replacen("forbid (", "forbidd (", 1),
                    )
                    .unwrap();
                })
            },
            restore_guards,
        ),
        (
            "validation error",
            "no-cross-account-on-account",
            {
                let good = good.clone();
                Box::new(move |ws: &Workspace| {
                    std::fs::write(
                        ws.policies().join("40-guards.cedar"),
                        good.replacen(
                            "principal.account == resource",
                            "principal.acount == resource",
                            1,
                        ),
                    )
                    .unwrap();
                })
            },
            {
                let good = good.clone();
                Box::new(move |ws: &Workspace| {
                    std::fs::write(ws.policies().join("40-guards.cedar"), &good).unwrap();
                })
            },
        ),
        (
            "duplicate @id",
            "member-view-account",
            Box::new(|ws: &Workspace| {
                let members =
                    std::fs::read_to_string(ws.policies().join("10-members.cedar")).unwrap();
                std::fs::write(ws.policies().join("50-copy.cedar"), members).unwrap();
            }),
            Box::new(|ws: &Workspace| {
                std::fs::remove_file(ws.policies().join("50-copy.cedar")).unwrap();
            }),
        ),
        (
            "half-written file",
            "50-half.cedar",
            {
                let good = good.clone();
                Box::new(move |ws: &Workspace| {
                    std::fs::write(ws.policies().join("50-half.cedar"), &good[..good.len() / 2])
                        .unwrap();
                })
            },
            Box::new(|ws: &Workspace| {
                std::fs::remove_file(ws.policies().join("50-half.cedar")).unwrap();
            }),
        ),
        (
            "deleted schema",
            "partnergate.cedarschema",
            Box::new(|ws: &Workspace| std::fs::remove_file(ws.schema()).unwrap()),
            {
                let schema_text = schema_text.clone();
                Box::new(move |ws: &Workspace| std::fs::write(ws.schema(), &schema_text).unwrap())
            },
        ),
        (
            "deleted directory",
            "policies",
            Box::new(|ws: &Workspace| {
                std::fs::rename(ws.policies(), ws.path().join("policies.bak")).unwrap();
            }),
            Box::new(|ws: &Workspace| {
                std::fs::rename(ws.path().join("policies.bak"), ws.policies()).unwrap();
            }),
        ),
    ];
    let mut version = s.version();
    for (name, mentions, edit, undo) in cases {
        let failures_before = s.get("/v1/policies").1["reloads"]["failures"]
            .as_u64()
            .unwrap();
        edit(&ws);
        let body = s.wait_policies(Duration::from_secs(5), name, |b| {
            b["reloads"]["failures"].as_u64().unwrap_or(0) > failures_before
        });
        assert_eq!(
            body["version"],
            version.as_str(),
            "{name}: the last good version must keep serving"
        );
        let err = body["last_error"].to_string();
        assert!(
            err.contains(mentions),
            "{name}: error should mention {mentions}: {err}"
        );
        assert_eq!(
            s.ask(PAT, "grant_admin", EMMA)["decision"],
            "Deny",
            "{name}"
        );
        assert_eq!(
            s.ask(PAT, "dismiss_user", EMMA)["decision"],
            "Allow",
            "{name}"
        );
        // The next good edit recovers, without a restart.
        undo(&ws);
        let body = s.wait_policies(
            Duration::from_secs(5),
            &format!("recovery from {name}"),
            |b| b["last_error"].is_null(),
        );
        version = body["version"].as_str().unwrap().to_string();
    }
    // Recovered fully: an edit inside the re-created directory is still seen.
    let v = s.version();
    std::fs::write(&guards, silver_edit(&good)).unwrap();
    s.wait_policies(
        Duration::from_secs(5),
        "edit after directory came back",
        |b| b["version"] != v.as_str(),
    );
    assert_eq!(invite_with(&s, "silver"), "Allow");
}

#[test]
fn a_rename_save_and_sighup_are_picked_up() {
    let ws = Workspace::new();
    let s = Server::start(&ws, &[]);
    s.load_demo();
    let v0 = s.version();
    let file = ws.policies().join("40-guards.cedar");
    let text = std::fs::read_to_string(&file).unwrap();
    // Like vim / VS Code: write a temp file beside, then rename over.
    let tmp = ws.policies().join(".40-guards.cedar.swp");
    std::fs::write(&tmp, silver_edit(&text)).unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    let body = s.wait_policies(Duration::from_secs(2), "rename-save", |b| {
        b["version"] != v0.as_str()
    });
    assert!(body["last_error"].is_null());
    assert_eq!(invite_with(&s, "silver"), "Allow");

    // SIGHUP forces a reload (counted) even without a change.
    let n = body["reloads"]["successes"].as_u64().unwrap();
    s.signal("HUP");
    s.wait_policies(Duration::from_secs(5), "SIGHUP reload", |b| {
        b["reloads"]["successes"].as_u64().unwrap_or(0) > n
    });
}

#[test]
fn without_a_token_file_one_is_generated_private() {
    let ws = Workspace::new();
    let s = Server::start(&ws, &[]);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(ws.data().join("token"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(s.token.len(), 64);
    // --protect-queries puts the token on queries too.
    drop(s);
    let s = Server::start(&ws, &["--protect-queries"]);
    let (st, _) = s.post(
        "/v1/is_authorized",
        &json!({"principal": PAT, "action": "Action::\"view_account\"", "resource": ACME}),
    );
    assert_eq!(st, 401);
}

#[test]
fn prove_on_reload_rejects_an_edit_that_breaks_an_invariant() {
    if std::process::Command::new("cvc5")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: cvc5 not installed (apt-get install cvc5)");
        return;
    }
    let ws = Workspace::new();
    common::copy_dir(
        &common::repo().join("policies/invariants"),
        &ws.policies().join("invariants"),
    );
    let invariants = ws.policies().join("invariants");
    let s = Server::start(
        &ws,
        &[
            "--prove-on-reload",
            "--invariants",
            invariants.to_str().unwrap(),
        ],
    );
    s.load_demo();
    let v0 = s.version();
    // Weaken: the partner may now revoke admin rights.
    let file = ws.policies().join("30-partners.cedar");
    let text = std::fs::read_to_string(&file).unwrap();
    let weak = text.replace(
        "[Action::\"grant_admin\", Action::\"revoke_admin\"]",
        "[Action::\"grant_admin\"]",
    );
    assert_ne!(weak, text, "the edit must change the file");
    std::fs::write(&file, weak).unwrap();
    let body = s.wait_policies(
        Duration::from_secs(30),
        "the gate to reject the edit",
        |b| !b["last_error"].is_null(),
    );
    assert_eq!(
        body["version"],
        v0.as_str(),
        "the last good set keeps serving"
    );
    let err = body["last_error"].to_string();
    assert!(err.contains("partner-never-grants-admin"), "{err}");
    assert!(err.contains("counterexample"), "{err}");
    assert!(err.contains("revoke_admin"), "{err}");
    assert_eq!(s.ask(PAT, "revoke_admin", OWNER)["decision"], "Deny");
    // Restoring the file passes the gate again.
    std::fs::write(&file, text).unwrap();
    s.wait_policies(
        Duration::from_secs(30),
        "the good edit to pass the gate",
        |b| b["last_error"].is_null(),
    );
}

/// `--log-format json`: every line the sidecar logs is one JSON object
/// (with the event's fields, e.g. a refusal's error), even when a field
/// carries a newline; `--log-level` takes `RUST_LOG`'s directives over
/// `RUST_LOG` itself, and a bad one is refused at start, naming the flag.
#[test]
fn json_logs_are_one_object_per_line_and_the_level_is_a_flag() {
    let ws = Workspace::new();
    let log = ws.path().join("serve.log");
    // RUST_LOG says `error`; the flag says `info` and wins.
    let s = Server::start_logging_to(
        &ws,
        &["--log-format", "json", "--log-level", "info"],
        "error",
        &log,
    );
    // A refused question is logged at info, with the error as a field; the
    // principal's id carries a forged line.
    let (status, _) = s.post(
        "/v1/is_authorized",
        &json!({"principal": {"type": "User", "id": "x\n{\"level\":\"ERROR\",\"forged\":true}"},
            "action": "Action::\"no_such_action\"", "resource": "Account::\"acme\""}),
    );
    assert_eq!(status, 400);
    s.signal("TERM");
    let mut s = s;
    let _ = s.child.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "nothing logged");
    let mut refused = 0;
    for line in &lines {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {line}"));
        assert!(
            v["level"].is_string() && v["timestamp"].is_string(),
            "{line}"
        );
        assert_ne!(v["forged"], true, "a forged line: {line}");
        if v["message"] == "request refused before evaluation (deny)" {
            assert!(v["error"].is_string(), "{line}");
            refused += 1;
        }
    }
    assert_eq!(refused, 1, "{text}");

    // A bad directive is refused at start, naming the flag.
    let out = common::serve_command(&Workspace::new(), &["--log-level", "info,=[x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--log-level"), "{stderr}");
}

/// Every line logged while a request is answered names the request (its
/// `X-Request-ID`, method and path) and, once decided, the decision's id,
/// as the answer gives it: a log pipeline joins a line to its decision.
#[test]
fn json_log_lines_name_their_request_and_decision() {
    let ws = Workspace::new();
    let log = ws.path().join("serve.log");
    // tower_http at debug: one line as each request finishes.
    let s = Server::start_logging_to(
        &ws,
        &[
            "--log-format",
            "json",
            "--log-level",
            "info,tower_http=debug",
        ],
        "error",
        &log,
    );
    let asked = json!({"principal": PAT, "action": "Action::\"view_account\"", "resource": ACME});
    let r = s
        .client
        .post(s.url("/v1/is_authorized"))
        .header("x-request-id", "req-answered")
        .json(&asked)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let answer: serde_json::Value = r.json().unwrap();
    let decision_id = answer["decision_id"].as_str().unwrap().to_string();
    let refused =
        json!({"principal": PAT, "action": "Action::\"no_such_action\"", "resource": ACME});
    let r = s
        .client
        .post(s.url("/v1/is_authorized"))
        .header("x-request-id", "req-refused")
        .json(&refused)
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    // An over-long request id is refused, and its span holds no more of it
    // than a question may carry.
    let long_id = "x".repeat(4096);
    let r = s
        .client
        .post(s.url("/v1/is_authorized"))
        .header("x-request-id", &long_id)
        .json(&asked)
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    s.signal("TERM");
    let mut s = s;
    let _ = s.child.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    let cut = &long_id[..partnergate_core::limits::MAX_REQUEST_ID_BYTES];
    let long_lines: Vec<&str> = text.lines().filter(|l| l.contains(cut)).collect();
    assert!(
        !long_lines.is_empty(),
        "the long id's refusal is not logged: {text}"
    );
    for line in long_lines {
        assert!(
            !line.contains(&long_id[..cut.len() + 1]),
            "more than the limit: {line}"
        );
    }
    let spans: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v.get("span").cloned())
        .collect();
    let answered: Vec<_> = spans
        .iter()
        .filter(|s| s["request_id"] == "req-answered")
        .collect();
    assert!(!answered.is_empty(), "no line names the request: {text}");
    for span in &answered {
        assert_eq!(span["method"], "POST", "{span}");
        assert_eq!(span["path"], "/v1/is_authorized", "{span}");
    }
    assert!(
        answered
            .iter()
            .any(|s| s["decision_id"] == decision_id.as_str()),
        "no line names decision {decision_id}: {text}"
    );
    let refusal = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["message"] == "request refused before evaluation (deny)")
        .unwrap_or_else(|| panic!("the refusal is not logged: {text}"));
    assert_eq!(refusal["span"]["request_id"], "req-refused", "{refusal}");
    assert!(refusal["span"]["decision_id"].is_null(), "{refusal}");
}
