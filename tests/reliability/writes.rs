//! A timed-out write that is either rolled back or answered (issue #12,
//! defect 7): a write answered 408 was never committed, a write that
//! committed answers its outcome, and `Idempotency-Key` makes a retry after a
//! lost answer return the first answer without applying anything again
//! (SQLite, and PostgreSQL when reachable).

use std::time::Duration;

use serde_json::{json, Value};

use crate::common::{entities, PgSchema, Server, Workspace};

fn user(id: &str) -> Value {
    entities::user(id, "acme").json()
}

/// A request with the token and an optional `Idempotency-Key`.
fn send(
    s: &Server,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: &Value,
) -> (u16, Value, bool) {
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut r = s
        .client
        .request(m, s.url(path))
        .bearer_auth(&s.token)
        .json(body);
    if let Some(k) = key {
        r = r.header("Idempotency-Key", k);
    }
    let resp = r.send().unwrap();
    let status = resp.status().as_u16();
    let replayed = resp.headers().contains_key("idempotent-replayed");
    (status, resp.json().unwrap_or(Value::Null), replayed)
}

fn stored(s: &Server, id: &str) -> bool {
    s.get(&format!("/v1/entities/User/{id}")).0 == 200
}

fn emails(s: &Server) -> Vec<String> {
    let (_, body) = s.get("/v1/accounts/acme/users");
    body["users"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|u| u["email"].as_str().map(str::to_string))
        .collect()
}

/// While the test holds the store's write lock longer than the request
/// timeout, an entity write and an invitation wait; when the lock goes they
/// must either answer their outcome, or answer 408 having written nothing.
/// (Before: the timeout layer answered 408 and the write committed later.)
#[test]
fn a_write_answered_408_was_never_committed() {
    let ws = Workspace::new();
    let s = Server::start(&ws, &["--request-timeout-ms", "300"]);
    s.load_demo();
    let db = rusqlite::Connection::open(ws.data().join("store.db")).unwrap();
    db.execute_batch("BEGIN IMMEDIATE").unwrap();
    let (put, invite) = std::thread::scope(|scope| {
        let put = scope.spawn(|| send(&s, "PUT", "/v1/entities", None, &json!([user("late")])));
        let invite = scope.spawn(|| {
            send(
                &s,
                "POST",
                "/v1/accounts/acme/users",
                None,
                &json!({"actor": "owner", "email": "late-invite@acme.example"}),
            )
        });
        std::thread::sleep(Duration::from_millis(1200));
        db.execute_batch("ROLLBACK").unwrap();
        (put.join().unwrap(), invite.join().unwrap())
    });
    // Whatever was answered, let anything still running land before checking.
    std::thread::sleep(Duration::from_millis(500));
    match put.0 {
        200 => assert!(stored(&s, "late"), "answered 200 but not stored: {}", put.1),
        408 => assert!(!stored(&s, "late"), "answered 408 but committed: {}", put.1),
        other => panic!("entity write: {other} {}", put.1),
    }
    let invited = emails(&s).contains(&"late-invite@acme.example".to_string());
    match invite.0 {
        201 => assert!(invited, "answered 201 but not stored: {}", invite.1),
        408 => assert!(!invited, "answered 408 but committed: {}", invite.1),
        other => panic!("invitation: {other} {}", invite.1),
    }
    // Held past the deadline, neither began in time: both were refused unapplied.
    assert_eq!((put.0, invite.0), (408, 408), "{} {}", put.1, invite.1);
    assert_eq!(put.1["error"], "request_timeout", "{}", put.1);
    // A retry now succeeds (nothing was remembered for the refused write).
    let (status, body, _) = send(
        &s,
        "PUT",
        "/v1/entities",
        Some("k-late"),
        &json!([user("late")]),
    );
    assert_eq!(status, 200, "{body}");
    assert!(stored(&s, "late"));
}

/// A write longer than the request timeout (a large upload) answers its
/// outcome instead of a 408 for something that committed.
#[test]
fn a_slow_write_answers_its_outcome() {
    let ws = Workspace::new();
    let s = Server::start(
        &ws,
        &["--request-timeout-ms", "20", "--max-body-bytes", "16777216"],
    );
    // Five small entities fit in 20 ms, unless the machine is busy: a 408
    // then wrote nothing, and a retry is what a client does.
    let demo: Value = serde_json::from_str(
        &std::fs::read_to_string(crate::common::repo().join("demo/entities.json")).unwrap(),
    )
    .unwrap();
    let loaded = (0..20).any(|_| s.put_entities(&demo).0 == 200);
    assert!(loaded, "the demo entities never fit in 20 ms");
    let many: Vec<Value> = (0..3000).map(|i| user(&format!("bulk{i}"))).collect();
    let (status, body, _) = send(&s, "PUT", "/v1/entities", None, &Value::Array(many));
    match status {
        200 => assert_eq!(body["upserted"], 3000, "{body}"),
        408 => {
            std::thread::sleep(Duration::from_millis(500));
            assert!(
                !stored(&s, "bulk0") && !stored(&s, "bulk2999"),
                "408 but committed"
            );
        }
        other => panic!("{other} {body}"),
    }
    // Decisions keep their timeout and still answer.
    assert_eq!(
        s.ask("User::\"pat\"", "dismiss_user", "User::\"emma\"")["decision"],
        "Allow"
    );
}

fn idempotent_writes(s: &Server) {
    // PUT /v1/entities: the retry gets the first answer and re-applies nothing.
    let first = send(
        s,
        "PUT",
        "/v1/entities",
        Some("key-1"),
        &json!([user("idem")]),
    );
    assert_eq!(first.0, 200, "{}", first.1);
    let mut changed = user("idem");
    changed["attrs"]["status"] = json!("dismissed");
    assert_eq!(s.put_entities(&json!([changed])).0, 200);
    let retry = send(
        s,
        "PUT",
        "/v1/entities",
        Some("key-1"),
        &json!([user("idem")]),
    );
    assert_eq!((retry.0, &retry.1, retry.2), (200, &first.1, true));
    let (_, now) = s.get("/v1/entities/User/idem");
    assert_eq!(
        now["attrs"]["status"], "dismissed",
        "the retry re-applied: {now}"
    );
    // Same key, another body: 422 naming the header.
    let other = send(
        s,
        "PUT",
        "/v1/entities",
        Some("key-1"),
        &json!([user("other")]),
    );
    assert_eq!(other.0, 422, "{}", other.1);
    assert!(
        other.1["message"]
            .as_str()
            .unwrap_or_default()
            .contains("Idempotency-Key"),
        "{}",
        other.1
    );
    assert!(!stored(s, "other"));
    // An invitation: the retry answers the same user (same random id), once.
    let body = json!({"actor": "owner", "email": "idem-invite@acme.example"});
    let a = send(s, "POST", "/v1/accounts/acme/users", Some("key-2"), &body);
    assert_eq!(a.0, 201, "{}", a.1);
    let b = send(s, "POST", "/v1/accounts/acme/users", Some("key-2"), &body);
    assert_eq!((b.0, &b.1, b.2), (201, &a.1, true));
    let n = emails(s)
        .iter()
        .filter(|e| *e == "idem-invite@acme.example")
        .count();
    assert_eq!(n, 1);
    // The same key on another route is another request: 422.
    let c = send(
        s,
        "POST",
        "/v1/users/emma/dismiss",
        Some("key-2"),
        &json!({"actor": "owner"}),
    );
    assert_eq!(c.0, 422, "{}", c.1);
    // Without a key, a second invitation of the same email is refused (409).
    let d = send(s, "POST", "/v1/accounts/acme/users", None, &body);
    assert_eq!(d.0, 409, "{}", d.1);
}

#[test]
fn idempotency_keys_replay_the_first_answer_on_sqlite() {
    let ws = Workspace::new();
    let s = Server::start(&ws, &[]);
    s.load_demo();
    idempotent_writes(&s);
    // Remembered durably: the same after a restart.
    drop(s);
    let s = Server::start(&ws, &[]);
    let retry = send(
        &s,
        "PUT",
        "/v1/entities",
        Some("key-1"),
        &json!([user("idem")]),
    );
    assert_eq!((retry.0, retry.2), (200, true), "{}", retry.1);
}

#[test]
fn idempotency_keys_replay_the_first_answer_on_postgres() {
    let Some(pg) = PgSchema::new() else {
        return;
    };
    let ws = Workspace::new();
    let s = Server::start(&ws, &["--store", &pg.url]);
    s.load_demo();
    idempotent_writes(&s);
}
