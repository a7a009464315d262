//! Request size rules that keep the decision log from being flooded: a
//! question's identifiers and strings are bounded before anything is
//! decided or logged, and the JSON endpoints read only bodies declared
//! JSON (so no web page can drive them across sites).

use serde_json::{json, Value};

use crate::common::{Server, Workspace};

fn started() -> (Workspace, Server) {
    let ws = Workspace::new();
    let s = Server::start(&ws, &[]);
    s.load_demo();
    (ws, s)
}

/// The size of the decision log's files, after a flush of what is queued.
fn log_bytes(ws: &Workspace) -> u64 {
    std::fs::read_dir(ws.data())
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("decisions.jsonl")
        })
        .map(|e| e.metadata().map_or(0, |m| m.len()))
        .sum()
}

#[test]
fn a_huge_identifier_is_refused_before_it_is_decided_or_logged() {
    let (ws, mut s) = started();
    let huge = "x".repeat(900 * 1024);
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "/v1/is_authorized",
            json!({"principal": {"type": "User", "id": huge}, "action": "Action::\"view_account\"",
                "resource": "Account::\"acme\""}),
            "principal.id",
        ),
        (
            "/v1/is_authorized",
            json!({"principal": "User::\"pat\"", "action": "Action::\"view_account\"",
                "resource": "Account::\"acme\"", "context": {"note": huge}}),
            "context.note",
        ),
        (
            "/access/v1/evaluation",
            json!({"subject": {"type": "User", "id": "pat"}, "action": {"name": "view_account"},
                "resource": {"type": "Account", "id": huge}}),
            "resource.id",
        ),
        (
            "/v1/is_authorized/batch",
            json!({"requests": [{"principal": "User::\"pat\"", "action": "Action::\"view_account\"",
                "resource": {"type": "Account", "id": huge}}]}),
            "resource.id",
        ),
    ];
    let before = log_bytes(&ws);
    for (path, body, field) in &cases {
        let (status, answer) = s.post(path, body);
        let text = answer.to_string();
        // A refusal that names the field and does not echo the value.
        if *path == "/v1/is_authorized/batch" {
            assert_eq!(status, 200, "{path}: {text:.300}");
            assert!(text.contains(field), "{path}: {text:.300}");
        } else {
            assert_eq!(status, 400, "{path}: {text:.300}");
            assert!(
                answer["message"]
                    .as_str()
                    .unwrap_or_default()
                    .contains(field),
                "{path}: {text:.300}"
            );
        }
        assert!(
            text.len() < 4096,
            "{path}: an answer of {} bytes",
            text.len()
        );
    }
    // A normal question still works and is logged; the refused ones were
    // not: the log grew by far less than one huge identifier.
    assert_eq!(
        s.ask("User::\"pat\"", "view_account", "Account::\"acme\"")["decision"],
        "Allow"
    );
    s.signal("TERM");
    let _ = s.child.wait();
    let grown = log_bytes(&ws) - before;
    assert!(grown < 100 * 1024, "the log grew by {grown} bytes");
}

#[test]
fn json_endpoints_refuse_bodies_not_declared_json() {
    let (_ws, s) = started();
    let question = json!({"principal": "User::\"pat\"", "action": "Action::\"dismiss_user\"",
        "resource": "User::\"emma\""})
    .to_string();
    // What a web page can send across sites without a preflight: refused.
    for (path, content_type) in [
        ("/v1/is_authorized", Some("text/plain")),
        (
            "/v1/is_authorized",
            Some("application/x-www-form-urlencoded"),
        ),
        ("/v1/is_authorized", Some("multipart/form-data; boundary=x")),
        ("/v1/is_authorized", None),
        ("/access/v1/evaluation", Some("text/plain;charset=UTF-8")),
        ("/access/v1/evaluations", Some("text/plain")),
        ("/v1/is_authorized/batch", Some("text/plain")),
        ("/v1/search/subject", Some("text/plain")),
        ("/access/v1/search/subject", Some("text/plain")),
    ] {
        let mut r = s.client.post(s.url(path)).body(question.clone());
        if let Some(ct) = content_type {
            r = r.header("content-type", ct);
        }
        let r = r.send().unwrap();
        let status = r.status().as_u16();
        let body: Value = r.json().unwrap_or(Value::Null);
        assert_eq!(status, 415, "{path} {content_type:?}: {body}");
        assert_eq!(body["error"], "unsupported_media_type", "{body}");
    }
    // A write with the token but as a form: refused too.
    let r = s
        .client
        .put(s.url("/v1/entities"))
        .bearer_auth(&s.token)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("[]")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 415);
    // JSON, with parameters or as a +json type, is read.
    for ct in [
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON",
        "application/vnd.partnergate+json",
    ] {
        let r = s
            .client
            .post(s.url("/v1/is_authorized"))
            .header("content-type", ct)
            .body(question.clone())
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{ct}");
        let body: Value = r.json().unwrap();
        assert_eq!(body["decision"], "Allow", "{ct}: {body}");
    }
}
