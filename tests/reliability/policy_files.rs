//! Hostile policy files (issue #12, defects 1, 2 and 9): expressions nested
//! deep enough to overflow Cedar's recursion, files too large to parse
//! cheaply, too many policies, and an idle sidecar that must not reload
//! when its files are only read.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{Server, Workspace, BIN};

/// `n` levels of brackets around `true`: the 452-byte file of the report at 200.
fn nested_parens(n: usize) -> String {
    format!(
        "permit (principal, action, resource) when {{ {}true{} }};\n",
        "(".repeat(n),
        ")".repeat(n)
    )
}

/// Every shape that makes Cedar recurse, at `n` levels.
fn deep_shapes(n: usize) -> Vec<(&'static str, String)> {
    let when = |e: String| format!("permit (principal, action, resource) when {{ {e} }};\n");
    vec![
        ("parentheses", nested_parens(n)),
        ("negations", when(format!("{}true", "!".repeat(n)))),
        ("minus signs", when(format!("{}1 == 1", "-".repeat(n)))),
        (
            "a chain of &&",
            when(format!("true{}", " && true".repeat(n))),
        ),
        ("a chain of +", when(format!("1{} == 1", " + 1".repeat(n)))),
        (
            "attribute accesses",
            when(format!("context{} == 1", ".a".repeat(n))),
        ),
        (
            "nested sets",
            when(format!("{}1{}.contains(1)", "[".repeat(n), "]".repeat(n))),
        ),
        (
            "nested records",
            when(format!("{}1{} has a", "{a: ".repeat(n), "}".repeat(n))),
        ),
        (
            "nested if",
            when(format!(
                "{}true{}",
                "if true then ".repeat(n),
                " else false".repeat(n)
            )),
        ),
    ]
}

/// Run the binary to completion (bounded), returning (exit code, stderr).
/// A death by signal (a stack overflow aborts) fails the test.
fn run(args: &[&str], within: Duration) -> (i32, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "`partnergate {}` did not finish within {within:?}",
                args.join(" ")
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    match status.code() {
        Some(code) => (code, stderr),
        None => panic!(
            "`partnergate {}` was killed by a signal ({status:?}); stderr:\n{stderr}",
            args.join(" ")
        ),
    }
}

fn dir_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn check_refuses_every_deep_shape_with_file_line_and_column() {
    let ws = Workspace::new();
    for (what, text) in deep_shapes(5_000) {
        let file = ws.path().join("deep.cedar");
        std::fs::write(&file, &text).unwrap();
        let (code, stderr) = run(
            &["check", "--policies", dir_str(&file)],
            Duration::from_secs(30),
        );
        assert_eq!(code, 1, "{what}: {stderr}");
        assert!(
            stderr.contains("deep.cedar:1:") && stderr.contains("the limit is 64"),
            "{what}: the refusal names the file, line, column and limit: {stderr}"
        );
    }
}

#[test]
fn every_shape_at_the_limit_parses_and_evaluates_without_crashing() {
    // The shapes just under the documented limit go through Cedar's parser
    // and evaluator (the CLI's `authorize`), on the stacks PartnerGate
    // gives its threads; a raised limit is covered too.
    // A policy file alone, with no schema beside it (one would be found
    // and used): these shapes are about recursion, not about the schema.
    let alone = tempfile::tempdir().unwrap();
    let entities = crate::common::repo().join("demo/entities.json");
    for limit in [64usize, 1000] {
        for (i, (what, _)) in deep_shapes(1).into_iter().enumerate() {
            // The most levels of this shape that the limit admits.
            let depth = |n: usize| {
                let text = deep_shapes(n).swap_remove(i).1;
                partnergate::prescan::scan(Path::new("x"), &text, usize::MAX)
                    .unwrap()
                    .depth
            };
            let levels = (1..=limit).rev().find(|&n| depth(n) <= limit).unwrap();
            assert!(depth(levels) >= limit - 3, "{what}: {levels} levels");
            let text = deep_shapes(levels).swap_remove(i).1;
            let limit = limit.to_string();
            let limit = limit.as_str();
            let file = alone.path().join("deep.cedar");
            std::fs::write(&file, &text).unwrap();
            let (code, stderr) = run(
                &[
                    "authorize",
                    "--max-policy-nesting",
                    limit,
                    "--policies",
                    dir_str(&file),
                    "--principal",
                    "User::\"pat\"",
                    "--action",
                    "Action::\"view_account\"",
                    "--resource",
                    "Account::\"acme\"",
                    "--entities",
                    dir_str(&entities),
                ],
                Duration::from_secs(60),
            );
            assert!(
                !stderr.contains("limit is"),
                "{what} at {levels} levels is under the limit {limit}: {stderr}"
            );
            // Allow (0), Deny (2) or an evaluation error: never a signal.
            assert!(code <= 2, "{what} at {levels}: exit {code}: {stderr}");
        }
    }
}

#[test]
fn a_deep_policy_saved_while_serving_keeps_the_last_good_set() {
    let ws = Workspace::new();
    let server = Server::start(&ws, &[]);
    server.load_demo();
    let good = server.version();
    std::fs::write(ws.policies().join("99-deep.cedar"), nested_parens(200)).unwrap();
    let status = server.wait_policies(Duration::from_secs(10), "the refused reload", |b| {
        b["last_error"]["problems"][0]["file"]
            .as_str()
            .is_some_and(|f| f.ends_with("99-deep.cedar"))
    });
    let problem = &status["last_error"]["problems"][0];
    assert_eq!(problem["line"], 1, "{status}");
    assert!(problem["column"].as_u64().unwrap() > 40, "{status}");
    assert!(
        problem["message"].as_str().unwrap().contains("limit is 64"),
        "{status}"
    );
    assert_eq!(status["version"], good.as_str(), "the last good set serves");
    let mut server = server;
    assert!(server.child.try_wait().unwrap().is_none(), "still running");
    assert_eq!(
        server.ask("User::\"pat\"", "dismiss_user", "User::\"emma\"")["decision"],
        "Allow"
    );
    // Removing the file is a good reload again.
    std::fs::remove_file(ws.policies().join("99-deep.cedar")).unwrap();
    server.wait_policies(Duration::from_secs(10), "the good reload", |b| {
        b["last_error"].is_null()
    });
}

#[test]
fn a_start_with_a_deep_policy_exits_nonzero_with_the_message() {
    let ws = Workspace::new();
    std::fs::write(ws.policies().join("99-deep.cedar"), nested_parens(200)).unwrap();
    let (code, stderr) = run(
        &[
            "serve",
            "--policies",
            dir_str(&ws.policies()),
            "--schema",
            dir_str(&ws.schema()),
            "--data-dir",
            dir_str(&ws.data()),
            "--bind",
            "127.0.0.1:0",
        ],
        Duration::from_secs(30),
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("99-deep.cedar:1:") && stderr.contains("limit is 64"),
        "{stderr}"
    );
}

#[test]
fn a_policy_file_over_the_byte_limit_is_refused_before_parsing() {
    let ws = Workspace::new();
    let server = Server::start(&ws, &["--max-policy-file-bytes", "65536"]);
    let good = server.version();
    // 100 KiB of valid policies: over the limit, refused whatever it holds.
    let one = "permit (principal, action == Action::\"view_account\", resource);\n";
    let big = one.repeat(100 * 1024 / one.len() + 1);
    std::fs::write(ws.policies().join("99-big.cedar"), &big).unwrap();
    let status = server.wait_policies(Duration::from_secs(10), "the refused reload", |b| {
        !b["last_error"].is_null()
    });
    let message = status["last_error"]["problems"][0]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        message.contains(&format!("has {} bytes", big.len())) && message.contains("65536"),
        "{status}"
    );
    assert_eq!(status["version"], good.as_str());
}

#[test]
fn a_pack_over_the_policy_count_does_not_start() {
    let ws = Workspace::new();
    let (code, stderr) = run(
        &[
            "check",
            "--policies",
            dir_str(&ws.policies()),
            "--max-policies",
            "3",
        ],
        Duration::from_secs(30),
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("more than 3 policies") && stderr.contains("--max-policies"),
        "{stderr}"
    );
}

/// The reload successes `GET /v1/policies` reports.
fn reloads(server: &Server) -> u64 {
    server.get("/v1/policies").1["reloads"]["successes"]
        .as_u64()
        .unwrap()
}

/// The value of `partnergate_reloads_total` (all results), 0 if absent.
fn reload_counter(server: &Server) -> f64 {
    let text = server
        .client
        .get(server.url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with("partnergate_reloads_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Read every file of the pack the way `cat`, `ls` and an editor do.
fn read_everything(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            let _ = std::fs::read(&p).unwrap();
            let _ = std::fs::metadata(&p).unwrap();
        }
    }
}

fn reload_records(ws: &Workspace) -> usize {
    std::fs::read_to_string(ws.data().join("decisions.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("\"kind\":\"reload\""))
        .count()
}

#[test]
fn an_idle_sidecar_does_not_reload_when_its_files_are_read_or_touched() {
    let ws = Workspace::new();
    let server = Server::start(&ws, &[]);
    let start = (reloads(&server), reload_counter(&server));
    for _ in 0..5 {
        read_everything(&ws.policies());
        read_everything(&ws.path().join("schemas"));
        std::thread::sleep(Duration::from_millis(100));
    }
    // `touch` and a save of the same bytes change no content.
    let file = ws.policies().join("10-members.cedar");
    let same = std::fs::read(&file).unwrap();
    std::fs::write(&file, &same).unwrap();
    let f = std::fs::File::options().append(true).open(&file).unwrap();
    f.set_modified(std::time::SystemTime::now()).unwrap();
    drop(f);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        (reloads(&server), reload_counter(&server)),
        start,
        "reads and same-content saves reloaded nothing"
    );
    assert_eq!(
        reload_records(&ws),
        0,
        "no reload record in the decision log"
    );

    // One SIGHUP: exactly one reload (it reads the files; that is not a change).
    server.signal("HUP");
    server.wait_policies(Duration::from_secs(10), "the SIGHUP reload", |b| {
        b["reloads"]["successes"].as_u64() == Some(start.0 + 1)
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        reloads(&server),
        start.0 + 1,
        "exactly one reload after SIGHUP"
    );
    assert_eq!(reload_counter(&server), start.1 + 1.0);

    // A real edit: exactly one more.
    let mut text = String::from_utf8(same).unwrap();
    text.push_str("\n// an edit\n");
    std::fs::write(&file, text).unwrap();
    server.wait_policies(Duration::from_secs(10), "the edit's reload", |b| {
        b["reloads"]["successes"].as_u64() == Some(start.0 + 2)
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(reloads(&server), start.0 + 2, "exactly one reload per edit");
}

#[test]
fn two_replicas_on_one_policy_directory_do_not_ping_pong() {
    let ws = Workspace::new();
    let a = Server::start(&ws, &[]);
    // The second replica's policy directory is the first one's.
    let ws_b = Workspace::new();
    std::fs::remove_dir_all(ws_b.policies()).unwrap();
    std::os::unix::fs::symlink(ws.policies(), ws_b.policies()).unwrap();
    let b = Server::start(&ws_b, &[]);
    let start = (reloads(&a), reloads(&b));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!((reloads(&a), reloads(&b)), start, "idle replicas stay idle");
    a.signal("HUP");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        (reloads(&a), reloads(&b)),
        (start.0 + 1, start.1),
        "one replica's reload reads the files; the other does not react"
    );
}
