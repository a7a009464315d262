//! The request-entities rules (issue #12, defect 5): request `entities` and
//! AuthZEN `properties` may add facts the store does not hold, never replace
//! a stored attribute; an invented principal is denied; `--request-entities
//! override` restores the old merge, `deny` refuses any request entity.

use serde_json::{json, Value};

use crate::common::{entities, Server, Workspace};

fn user(id: &str, is_admin: bool) -> Value {
    entities::user(id, "acme").admin(is_admin).json()
}

fn ask_with(s: &Server, p: &str, a: &str, r: &str, entities: Value) -> (u16, Value) {
    s.post(
        "/v1/is_authorized",
        &json!({"principal": format!("User::\"{p}\""), "action": format!("Action::\"{a}\""),
            "resource": format!("User::\"{r}\""), "entities": entities}),
    )
}

fn started(extra: &[&str]) -> (Workspace, Server) {
    let ws = Workspace::new();
    let s = Server::start(&ws, extra);
    s.load_demo();
    (ws, s)
}

#[test]
fn request_data_may_not_replace_a_stored_attribute() {
    let (_ws, s) = started(&[]);
    // emma made an administrator in the request: a 400 naming the field.
    let (status, body) = ask_with(
        &s,
        "emma",
        "grant_admin",
        "pat",
        json!([user("emma", true)]),
    );
    assert_eq!(status, 400, "{body}");
    let msg = body["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("entities[0].attrs.")
            && msg.contains(
                "User::\"emma\" is stored; request data may not replace a stored attribute"
            ),
        "{body}"
    );
    // The owner made a non-administrator so that pat may dismiss them: 400.
    let (status, body) = ask_with(
        &s,
        "pat",
        "dismiss_user",
        "owner",
        json!([user("owner", false)]),
    );
    assert_eq!(status, 400, "{body}");
    // The same through AuthZEN properties.
    let (status, body) = s.post(
        "/access/v1/evaluation",
        &json!({"subject": {"type": "User", "id": "emma", "properties": {"is_admin": true}},
            "action": {"name": "grant_admin"}, "resource": {"type": "User", "id": "pat"}}),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("subject.properties.is_admin"),
        "{body}"
    );
    // And the stored facts still decide: emma may not grant admin.
    assert_eq!(
        s.ask("User::\"emma\"", "grant_admin", "User::\"pat\"")["decision"],
        "Deny"
    );
    // Adding a stored parent to a stored entity is refused too.
    let moved = json!({"uid": {"type": "User", "id": "emma"},
        "parents": [{"type": "Account", "id": "other"}], "attrs": {}});
    let (status, body) = ask_with(&s, "emma", "dismiss_user", "pat", json!([moved]));
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("entities[0].parents"),
        "{body}"
    );
}

#[test]
fn an_invented_principal_is_denied_even_with_a_full_set_of_attributes() {
    let (_ws, s) = started(&[]);
    for (p, a, r) in [
        ("mallory", "dismiss_user", "emma"),
        ("mallory", "grant_admin", "emma"),
        ("mallory", "configure_account", "acme"),
    ] {
        let resource = if r == "acme" {
            "Account::\"acme\"".to_string()
        } else {
            format!("User::\"{r}\"")
        };
        let (status, body) = s.post(
            "/v1/is_authorized",
            &json!({"principal": format!("User::\"{p}\""), "action": format!("Action::\"{a}\""),
                "resource": resource, "entities": [user("mallory", true)]}),
        );
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["decision"], "Deny", "{a}: {body}");
        assert!(
            body["errors"][0]
                .as_str()
                .unwrap_or_default()
                .contains("unknown principal"),
            "{body}"
        );
    }
    // AuthZEN: a subject described only by properties is unknown too.
    let (status, body) = s.post(
        "/access/v1/evaluation",
        &json!({"subject": {"type": "User", "id": "mallory", "properties": user("mallory", true)["attrs"]},
            "action": {"name": "dismiss_user"}, "resource": {"type": "User", "id": "emma"}}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["decision"], false, "{body}");
}

#[test]
fn request_data_may_add_what_the_store_does_not_hold_and_the_log_marks_it() {
    let (ws, s) = started(&[]);
    // A resource the store does not hold: decided over the request's facts.
    let (status, body) = ask_with(
        &s,
        "owner",
        "dismiss_user",
        "newbie",
        json!([user("newbie", false)]),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["decision"], "Allow", "{body}");
    let id = body["decision_id"].as_str().unwrap_or_default().to_string();
    // The decision log marks which entities came from the request.
    let log = ws.data().join("decisions.jsonl");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let record = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains(&id)) {
            break serde_json::from_str::<Value>(line).unwrap();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no record of {id} in {}",
            log.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(
        record["request_entities"],
        json!(["User::\"newbie\""]),
        "{record}"
    );
}

#[test]
fn override_restores_the_merge_and_deny_refuses_request_entities() {
    let (_ws, s) = started(&["--request-entities", "override"]);
    let (status, body) = ask_with(
        &s,
        "emma",
        "grant_admin",
        "pat",
        json!([user("emma", true)]),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["decision"], "Allow",
        "override merges over the stored facts: {body}"
    );
    drop(s);
    let (_ws, s) = started(&["--request-entities", "deny"]);
    let (status, body) = ask_with(
        &s,
        "owner",
        "dismiss_user",
        "newbie",
        json!([user("newbie", false)]),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("--request-entities deny"),
        "{body}"
    );
    // Without request data, decisions are unchanged.
    assert_eq!(
        s.ask("User::\"pat\"", "dismiss_user", "User::\"emma\"")["decision"],
        "Allow"
    );
}

/// emma as stored (demo/entities.json), with the partner attribute she
/// does not have.
fn emma_as_a_partner() -> Value {
    entities::user("emma", "acme")
        .two_factor(false)
        .partner("goldco", true)
        .json()
}

#[test]
fn request_data_may_not_give_a_stored_entity_an_attribute_it_lacks() {
    let (_ws, s) = started(&[]);
    // Without request data, emma (an employee) may not dismiss pat.
    assert_eq!(
        s.ask("User::\"emma\"", "dismiss_user", "User::\"pat\"")["decision"],
        "Deny"
    );
    // The absence of `partner` on the stored emma is a stored fact: a
    // request entity that adds it (alone, or beside her stored attributes)
    // is a 400 naming the field, never an Allow.
    let partner = emma_as_a_partner()["attrs"]["partner"].clone();
    let only_partner = json!({"uid": {"type": "User", "id": "emma"},
        "attrs": {"partner": partner}, "parents": []});
    for entity in [only_partner, emma_as_a_partner()] {
        let (status, body) = ask_with(&s, "emma", "dismiss_user", "pat", json!([entity]));
        assert_eq!(status, 400, "{entity}: {body}");
        let msg = body["message"].as_str().unwrap_or_default();
        assert!(
            msg.contains("entities[0].attrs.partner")
                && msg.contains("User::\"emma\" is stored; request data may not add an attribute"),
            "{body}"
        );
    }
    // The same through AuthZEN subject properties.
    let (status, body) = s.post(
        "/access/v1/evaluation",
        &json!({"subject": {"type": "User", "id": "emma", "properties": {"partner": partner}},
            "action": {"name": "manage_billing"}, "resource": {"type": "Account", "id": "acme"}}),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("subject.properties.partner"),
        "{body}"
    );
    // And a stored resource (the account) may not gain one either.
    let (status, body) = s.post(
        "/access/v1/evaluation",
        &json!({"subject": {"type": "User", "id": "emma"},
            "action": {"name": "manage_billing"},
            "resource": {"type": "User", "id": "owner", "properties": {"partner": partner}}}),
    );
    assert_eq!(status, 400, "{body}");
}

#[test]
fn request_data_may_repeat_a_stored_entity_exactly() {
    let (_ws, s) = started(&[]);
    let demo: Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("demo/entities.json"),
        )
        .unwrap(),
    )
    .unwrap();
    // Every stored entity sent back as stored (the pattern of callers that
    // send their full entity list with every question): decided as without.
    for (p, a, r, want) in [
        ("emma", "dismiss_user", "pat", "Deny"),
        ("pat", "dismiss_user", "emma", "Allow"),
        ("pat", "grant_admin", "emma", "Deny"),
    ] {
        let (status, body) = ask_with(&s, p, a, r, demo.clone());
        assert_eq!(status, 200, "{p} {a} {r}: {body}");
        assert_eq!(body["decision"], want, "{p} {a} {r}: {body}");
    }
    // Equal values in another accepted spelling (an entity reference
    // without `__entity`, attributes in another order) are equal too.
    let emma = json!({"uid": {"type": "User", "id": "emma"},
        "parents": [{"type": "Account", "id": "acme"}],
        "attrs": {"two_factor": false, "status": "active", "is_admin": false,
            "account": {"type": "Account", "id": "acme"}, "email": "emma@acme.example"}});
    let (status, body) = ask_with(&s, "emma", "dismiss_user", "pat", json!([emma]));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["decision"], "Deny", "{body}");
    // AuthZEN properties equal to the stored ones are accepted as well.
    let (status, body) = s.post(
        "/access/v1/evaluation",
        &json!({"subject": {"type": "User", "id": "pat", "properties": {"is_admin": false}},
            "action": {"name": "dismiss_user"}, "resource": {"type": "User", "id": "emma"}}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["decision"], true, "{body}");
}
