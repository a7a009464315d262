//! The search endpoints over a real `partnergate serve`: the three
//! partner-portal questions on the shipped pack (AuthZEN and own API), each
//! answer checked against `/access/v1/evaluation`; page tokens (bound to the
//! request, signed, server-specific); one decision-log record per search;
//! a search during a stream of entity writes.

mod common;

use std::collections::BTreeSet;

use common::entities::{account, company, user};
use common::{Server, Workspace};
use serde_json::{json, Value};

/// acme: owner (admin), emma, ed (employees), adam (admin), pat (verified
/// goldco partner), pia (another goldco partner, admin), dan (dismissed);
/// beta: bob. Companies goldco (Gold, certified).
fn directory() -> Value {
    json!([
        account("acme", Some("Acme")),
        account("beta", None),
        company("goldco", "gold", true),
        user("owner", "acme").admin(true).json(),
        user("emma", "acme").two_factor(false).json(),
        user("ed", "acme").json(),
        user("adam", "acme").admin(true).json(),
        user("pat", "acme").partner("goldco", true).json(),
        user("pia", "acme")
            .admin(true)
            .partner("goldco", true)
            .json(),
        user("dan", "acme").status("dismissed").json(),
        user("bob", "beta").json(),
    ])
}

fn users() -> Vec<&'static str> {
    vec!["adam", "bob", "dan", "ed", "emma", "owner", "pat", "pia"]
}

fn evaluation(s: &Server, subject: &str, action: &str, rtype: &str, rid: &str) -> bool {
    let (status, body) = s.post(
        "/access/v1/evaluation",
        &json!({"subject": {"type": "User", "id": subject}, "action": {"name": action},
                "resource": {"type": rtype, "id": rid}}),
    );
    assert_eq!(status, 200, "{body}");
    body["decision"].as_bool().unwrap()
}

fn ids(results: &Value, key: &str) -> Vec<String> {
    results
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[key].as_str().unwrap().to_string())
        .collect()
}

fn started() -> (Workspace, Server) {
    let ws = Workspace::new();
    let s = Server::start(&ws, &[]);
    let (status, body) = s.put_entities(&directory());
    assert_eq!(status, 200, "{body}");
    (ws, s)
}

#[test]
fn the_three_portal_questions_over_http_equal_the_evaluations() {
    let (ws, s) = started();
    // "Which users of this account may this partner dismiss?"
    let (status, body) = s.post(
        "/access/v1/search/resource",
        &json!({"subject": {"type": "User", "id": "pat"}, "action": {"name": "dismiss_user"},
                "resource": {"type": "User", "id": "ignored"}}),
    );
    assert_eq!(status, 200, "{body}");
    let dismissable = ids(&body["results"], "id");
    assert!(body["results"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["type"] == "User"));
    // Not the administrators (unless a partner of the same company), not
    // another account's user.
    assert_eq!(dismissable, ["dan", "ed", "emma", "pat", "pia"]);
    let expected: Vec<&str> = users()
        .into_iter()
        .filter(|u| evaluation(&s, "pat", "dismiss_user", "User", u))
        .collect();
    assert_eq!(dismissable, expected);
    assert_eq!(body["page"]["next_token"], "");
    assert_eq!(body["page"]["count"], 5);
    assert_eq!(body["page"]["total"], 5);
    assert!(body["context"]["policy_version"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));

    // "Who can administer this account?"
    let (status, body) = s.post(
        "/access/v1/search/subject",
        &json!({"subject": {"type": "User"}, "action": {"name": "configure_account"},
                "resource": {"type": "Account", "id": "acme"}}),
    );
    assert_eq!(status, 200, "{body}");
    let admins = ids(&body["results"], "id");
    assert_eq!(admins, ["adam", "owner", "pat", "pia"]);
    let expected: Vec<&str> = users()
        .into_iter()
        .filter(|u| evaluation(&s, u, "configure_account", "Account", "acme"))
        .collect();
    assert_eq!(admins, expected);

    // "What may this partner do to this user?"
    let (status, body) = s.post(
        "/access/v1/search/action",
        &json!({"subject": {"type": "User", "id": "pat"}, "resource": {"type": "User", "id": "emma"}}),
    );
    assert_eq!(status, 200, "{body}");
    let actions = ids(&body["results"], "name");
    assert_eq!(
        actions,
        [
            "dismiss_user",
            "edit_profile",
            "end_partner_access",
            "rehire_user"
        ]
    );
    let all = [
        "dismiss_user",
        "rehire_user",
        "edit_profile",
        "grant_admin",
        "revoke_admin",
        "disable_two_factor",
        "end_partner_access",
    ];
    let expected: BTreeSet<&str> = all
        .into_iter()
        .filter(|a| evaluation(&s, "pat", a, "User", "emma"))
        .collect();
    assert_eq!(
        actions.iter().map(String::as_str).collect::<BTreeSet<_>>(),
        expected
    );

    // The same in PartnerGate's own API.
    let (status, body) = s.post(
        "/v1/search/resource",
        &json!({"principal": "User::\"pat\"", "action": "dismiss_user", "resource_type": "User"}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["results"],
        json!([
            "User::\"dan\"",
            "User::\"ed\"",
            "User::\"emma\"",
            "User::\"pat\"",
            "User::\"pia\""
        ])
    );
    assert_eq!(body["total"], 5);
    // The time is the sidecar's, as for an evaluation: a caller's is refused.
    let (status, body) = s.post(
        "/access/v1/search/resource",
        &json!({"subject": {"type": "User", "id": "pat"}, "action": {"name": "dismiss_user"},
                "resource": {"type": "User"}, "context": {"now": "2020-01-01T00:00:00Z"}}),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("context.now"),
        "{body}"
    );
    let (status, body) = s.post(
        "/v1/search/subject",
        &json!({"principal_type": "User", "action": "Action::\"configure_account\"", "resource": {"type": "Account", "id": "acme"}}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["count"], 4);
    let (status, body) = s.post(
        "/v1/search/action",
        &json!({"principal": "User::\"pat\"", "resource": "User::\"emma\""}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["results"],
        json!([
            "Action::\"dismiss_user\"",
            "Action::\"edit_profile\"",
            "Action::\"end_partner_access\"",
            "Action::\"rehire_user\""
        ])
    );

    // The metadata lists the search endpoints.
    let (_, meta) = s.get("/.well-known/authzen-configuration");
    for kind in ["subject", "resource", "action"] {
        let url = meta[format!("search_{kind}_endpoint")].as_str().unwrap();
        assert_eq!(url, s.url(&format!("/access/v1/search/{kind}")));
    }

    // The OpenAPI document lists both search routes.
    let (_, doc) = s.get("/openapi.json");
    for path in ["/access/v1/search/{kind}", "/v1/search/{kind}"] {
        assert!(doc["paths"].get(path).is_some(), "openapi lacks {path}");
    }

    // One decision-log record per search, not one per candidate (the
    // writer thread appends within its linger time: wait for the sixth).
    let searches = || -> Vec<Value> {
        std::fs::read_to_string(ws.data().join("decisions.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|r| r["kind"] == "search")
            .collect()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while searches().len() < 6 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    drop(s);
    let searches = searches();
    assert_eq!(searches.len(), 6, "{searches:?}");
    let first = &searches[0];
    assert_eq!(first["search"], "resource");
    assert_eq!(first["principal"], "User::\"pat\"");
    assert_eq!(first["action"], "Action::\"dismiss_user\"");
    assert_eq!(first["resource"], "User");
    assert_eq!(first["results"], 5);
    assert!(first["policy_version"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
    assert!(first["latency_us"].as_u64().is_some());
}

#[test]
fn bad_search_requests_are_400s_naming_the_field() {
    let (_ws, s) = started();
    let cases = [
        (
            "/access/v1/search/resource",
            json!({"subject": {"type": "User", "id": "pat"}, "action": {"name": "dismiss_user"}, "resource": {}}),
            "resource.type",
        ),
        (
            "/access/v1/search/resource",
            json!({"subject": {"type": "User", "id": "pat"}, "action": {"name": "dismiss_user"}, "resource": {"type": "Nope"}}),
            "resource.type",
        ),
        (
            "/access/v1/search/resource",
            json!({"subject": {"type": "User", "id": "pat"}, "action": {"name": "fly"}, "resource": {"type": "User"}}),
            "action",
        ),
        (
            "/access/v1/search/subject",
            json!({"subject": {"type": "User"}, "action": {"name": "view_account"}, "resource": {"type": "Nope", "id": "acme"}}),
            "resource",
        ),
        (
            "/access/v1/search/resource",
            json!({"subject": {"type": "User", "id": "pat"}, "action": {"name": "invite_partner"}, "resource": {"type": "Account"}}),
            "context",
        ),
        (
            "/access/v1/search/resource",
            json!({"subject": {"type": "User", "id": "pat"}, "action": {"name": "dismiss_user"}, "resource": {"type": "User"}, "page": {"limit": 0}}),
            "page.limit",
        ),
        (
            "/access/v1/search/resource",
            json!({"subject": {"type": "User", "id": "pat"}, "action": {"name": "dismiss_user"}, "resource": {"type": "User"}, "page": {"limit": 1001}}),
            "page.limit",
        ),
        (
            "/access/v1/search/resource",
            json!({"subject": {"type": "User", "id": "pat", "properties": {"is_admin": true}}, "action": {"name": "dismiss_user"}, "resource": {"type": "User"}}),
            "subject.properties",
        ),
        (
            "/v1/search/resource",
            json!({"principal": "User::\"pat\"", "action": "dismiss_user", "resource_type": "Nope"}),
            "resource_type",
        ),
    ];
    for (path, body, field) in cases {
        let (status, answer) = s.post(path, &body);
        assert_eq!(status, 400, "{path} {body}: {answer}");
        assert_eq!(answer["details"]["field"], field, "{path} {body}: {answer}");
    }
    let (status, _) = s.post("/access/v1/search/everything", &json!({}));
    assert_eq!(status, 404);
}

fn page(s: &Server, subject: &str, limit: u64, token: &str, context: Value) -> (u16, Value) {
    s.post(
        "/access/v1/search/resource",
        &json!({"subject": {"type": "User", "id": subject}, "action": {"name": "dismiss_user"},
                "resource": {"type": "User"}, "context": context,
                "page": {"limit": limit, "next_token": token}}),
    )
}

#[test]
fn page_tokens_are_bound_to_the_request_signed_and_server_specific() {
    let (ws, s) = started();
    // Limit 2: five results in three pages, then the same set.
    let mut token = String::new();
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let (status, body) = page(&s, "pat", 2, &token, json!({}));
        assert_eq!(status, 200, "{body}");
        seen.extend(ids(&body["results"], "id"));
        pages += 1;
        token = body["page"]["next_token"].as_str().unwrap().to_string();
        if token.is_empty() {
            assert_eq!(body["page"]["total"], 5);
            break;
        }
        assert!(body["page"].get("total").is_none(), "{body}");
        if pages == 1 {
            // Reused with another subject, action, context or limit: a 400 naming it.
            let (status, e) = page(&s, "pia", 2, &token, json!({}));
            assert_eq!(
                (status, e["details"]["field"].clone()),
                (400, json!("subject")),
                "{e}"
            );
            let (status, e) = page(&s, "pat", 3, &token, json!({}));
            assert_eq!(
                (status, e["details"]["field"].clone()),
                (400, json!("page.limit")),
                "{e}"
            );
            let (status, e) = page(&s, "pat", 2, &token, json!({"x": 1}));
            assert_eq!(
                (status, e["details"]["field"].clone()),
                (400, json!("context")),
                "{e}"
            );
            let (status, e) = s.post(
                "/access/v1/search/resource",
                &json!({"subject": {"type": "User", "id": "pat"}, "action": {"name": "rehire_user"},
                        "resource": {"type": "User"}, "page": {"limit": 2, "next_token": token}}),
            );
            assert_eq!(
                (status, e["details"]["field"].clone()),
                (400, json!("action")),
                "{e}"
            );
            let (status, e) = s.post(
                "/access/v1/search/subject",
                &json!({"subject": {"type": "User"}, "action": {"name": "dismiss_user"},
                        "resource": {"type": "User", "id": "emma"}, "page": {"limit": 2, "next_token": token}}),
            );
            assert_eq!(status, 400, "{e}");
            // An edited token: one hex digit of the payload changed.
            let mut edited = token.clone().into_bytes();
            edited[10] = if edited[10] == b'0' { b'1' } else { b'0' };
            let edited = String::from_utf8(edited).unwrap();
            let (status, e) = page(&s, "pat", 2, &edited, json!({}));
            assert_eq!(
                (status, e["details"]["field"].clone()),
                (400, json!("page.next_token")),
                "{e}"
            );
            let (status, e) = page(&s, "pat", 2, "garbage", json!({}));
            assert_eq!(
                (status, e["details"]["field"].clone()),
                (400, json!("page.next_token")),
                "{e}"
            );
            // Another server (its own data directory, its own key).
            let ws2 = Workspace::new();
            let other = Server::start(&ws2, &[]);
            let (status, _) = other.put_entities(&directory());
            assert_eq!(status, 200);
            let (status, e) = page(&other, "pat", 2, &token, json!({}));
            assert_eq!(
                (status, e["details"]["field"].clone()),
                (400, json!("page.next_token")),
                "{e}"
            );
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, ["dan", "ed", "emma", "pat", "pia"]);
    // The key is private, and survives a restart (tokens stay valid).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(ws.data().join("search.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let (_, first) = page(&s, "pat", 2, "", json!({}));
    let token = first["page"]["next_token"].as_str().unwrap().to_string();
    drop(s);
    let s = Server::start(&ws, &[]);
    let (status, body) = page(&s, "pat", 2, &token, json!({}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(ids(&body["results"], "id"), ["emma", "pat"]);
}

#[test]
fn a_search_during_a_stream_of_entity_writes_completes() {
    let (_ws, s) = started();
    let base = s.base.clone();
    let token = s.token.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let client = reqwest::blocking::Client::new();
            let mut i = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // Users come and go: new ones, and existing ones made admins
                // (no longer dismissable by pat) and back.
                let batch = json!([
                    user(&format!("n{:03}", i % 50), "acme").json(),
                    user("ed", "acme").admin(i.is_multiple_of(2)).json(),
                ]);
                let r = client
                    .put(format!("{base}/v1/entities"))
                    .bearer_auth(&token)
                    .json(&batch)
                    .send()
                    .unwrap();
                assert_eq!(r.status().as_u16(), 200);
                i += 1;
            }
            i
        })
    };
    for _ in 0..15 {
        let mut token = String::new();
        let mut seen: Vec<String> = Vec::new();
        loop {
            let (status, body) = page(&s, "pat", 3, &token, json!({}));
            assert_eq!(status, 200, "{body}");
            let got = ids(&body["results"], "id");
            // Sorted and strictly after the previous page: never a duplicate.
            for id in &got {
                assert!(
                    seen.last().is_none_or(|last| last < id),
                    "{seen:?} then {got:?}"
                );
                seen.push(id.clone());
            }
            // Never an entity outside the search: no administrator who is
            // not a partner, nobody of another account.
            assert!(!seen
                .iter()
                .any(|u| ["owner", "adam", "bob"].contains(&u.as_str())));
            token = body["page"]["next_token"].as_str().unwrap().to_string();
            if token.is_empty() {
                break;
            }
        }
        assert!(seen.contains(&"emma".to_string()));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let writes = writer.join().unwrap();
    assert!(writes > 0);
}

#[test]
fn the_cli_searches_the_data_directorys_store_and_pages_with_tokens() {
    let ws = Workspace::new();
    let demo = common::repo().join("demo/entities.json");
    let (code, _, err) = ws.cli(&["import"], &[demo.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = ws.cli(
        &["search", "resource"],
        &[
            "--principal",
            "User::\"pat\"",
            "--action",
            "dismiss_user",
            "--type",
            "User",
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..2], ["User::\"emma\"", "User::\"pat\""], "{out}");
    assert!(
        lines[2].starts_with("(2 in all; policy version sha256:"),
        "{out}"
    );
    // One page of one, then its token continues it.
    let args = [
        "--type",
        "User",
        "--action",
        "configure_account",
        "--resource",
        "Account::\"acme\"",
    ];
    let (code, out, err) = ws.cli(
        &["search", "subject"],
        &[&args[..], &["--limit", "1", "--json"]].concat(),
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let page: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(page["results"], json!(["User::\"owner\""]));
    let token = page["next_token"].as_str().unwrap().to_string();
    assert!(!token.is_empty());
    let (code, out, err) = ws.cli(
        &["search", "subject"],
        &[
            &args[..],
            &["--limit", "1", "--json", "--next-token", &token],
        ]
        .concat(),
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let page: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (page["results"].clone(), page["total"].clone()),
        (json!(["User::\"pat\""]), json!(2))
    );
    // The token with another limit is refused, naming the field; exit 1.
    let (code, _, err) = ws.cli(
        &["search", "subject"],
        &[&args[..], &["--limit", "2", "--next-token", &token]].concat(),
        &[],
    );
    assert_eq!(code, 1);
    assert!(err.contains("field `limit`"), "{err}");
    // Action search, every page.
    let (code, out, err) = ws.cli(
        &["search", "action"],
        &[
            "--principal",
            "User::\"pat\"",
            "--resource",
            "User::\"emma\"",
            "--limit",
            "1",
            "--all",
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.lines().take(3).collect::<Vec<_>>(),
        [
            "Action::\"dismiss_user\"",
            "Action::\"edit_profile\"",
            "Action::\"end_partner_access\""
        ]
    );
}

#[test]
fn a_client_that_follows_the_specification_pages_with_page_token() {
    let (_ws, s) = started();
    // Authorization API 1.0, "Paginated Requests": the previous answer's
    // `next_token` goes back as `page.token`.
    let mut token = String::new();
    let mut seen = Vec::new();
    for _ in 0..10 {
        let (status, body) = s.post(
            "/access/v1/search/resource",
            &json!({"subject": {"type": "User", "id": "pat"}, "action": {"name": "dismiss_user"},
                    "resource": {"type": "User"}, "page": {"limit": 2, "token": token}}),
        );
        assert_eq!(status, 200, "{body}");
        seen.extend(ids(&body["results"], "id"));
        token = body["page"]["next_token"].as_str().unwrap().to_string();
        if token.is_empty() {
            break;
        }
    }
    assert!(token.is_empty(), "pages never ended: {seen:?}");
    let unique: BTreeSet<_> = seen.iter().cloned().collect();
    assert_eq!(seen.len(), 5, "{seen:?}");
    assert_eq!(unique.len(), 5, "a result came twice: {seen:?}");
    // A forged `page.token` is a 400 naming `page.token`.
    let (status, body) = s.post(
        "/access/v1/search/resource",
        &json!({"subject": {"type": "User", "id": "pat"}, "action": {"name": "dismiss_user"},
                "resource": {"type": "User"}, "page": {"limit": 2, "token": "00ff"}}),
    );
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["details"]["field"], "page.token", "{body}");
    // Unknown members of `page` are named in a 400, never ignored.
    let (status, body) = s.post(
        "/access/v1/search/resource",
        &json!({"subject": {"type": "User", "id": "pat"}, "action": {"name": "dismiss_user"},
                "resource": {"type": "User"}, "page": {"limit": 2, "cursor": "x", "size": 3}}),
    );
    assert_eq!(status, 400, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("`page.cursor`") && message.contains("`page.size`"),
        "{body}"
    );
}

#[test]
fn searches_beyond_the_concurrency_bound_are_refused_with_retry_after() {
    let ws = Workspace::new();
    let s = Server::start(&ws, &["--max-concurrent-searches", "1"]);
    let (status, body) = s.put_entities(&directory());
    assert_eq!(status, 200, "{body}");
    // A large account, so that each "who may configure it" search costs.
    for chunk in 0..5 {
        let users: Vec<Value> = (0..2000)
            .map(|i| user(&format!("u{chunk}-{i}"), "acme").json())
            .collect();
        let (status, body) = s.put_entities(&Value::Array(users));
        assert_eq!(status, 200, "{body}");
    }
    let question = json!({"subject": {"type": "User"}, "action": {"name": "configure_account"},
        "resource": {"type": "Account", "id": "acme"}, "page": {"limit": 1000}});
    // The server answers each search within its request timeout (a 408
    // past it); the client waits longer, so a busy machine is not a failure.
    let client = reqwest::blocking::Client::builder()
        .timeout(common::PATIENCE)
        .build()
        .unwrap();
    // One search: its status, `Retry-After` and body.
    let search = || {
        let r = client
            .post(s.url("/access/v1/search/subject"))
            .json(&question)
            .send()
            .unwrap();
        let status = r.status().as_u16();
        let retry = r
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        (status, retry, r.json().unwrap_or(Value::Null))
    };
    let mut refused = None;
    for _round in 0..10 {
        let answers: Vec<(u16, Option<String>, Value)> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4).map(|_| scope.spawn(search)).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (status, retry, body) in &answers {
            assert!(matches!(status, 200 | 408 | 429), "{status}: {body}");
            if *status == 429 {
                assert_eq!(body["error"], "search_busy", "{body}");
                assert_eq!(retry.as_deref(), Some("1"), "{body}");
                refused = Some(body.clone());
            }
        }
        if refused.is_some() {
            break;
        }
    }
    assert!(
        refused.is_some(),
        "four searches at once with a bound of one: none refused"
    );
    let metrics = s.metrics();
    assert!(
        common::metric(&metrics, "partnergate_search_refusals_total", &[]) >= 1.0,
        "{metrics}"
    );
    // The places are given back once the searches stop (a search the
    // server answered 408 still runs until its own deadline): one search
    // alone is then taken.
    let deadline = std::time::Instant::now() + common::PATIENCE;
    loop {
        let (status, _, _) = search();
        if matches!(status, 200 | 408) {
            break;
        }
        assert_eq!(status, 429, "a search alone: {status}");
        assert!(
            std::time::Instant::now() < deadline,
            "the places were never given back"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}
