//! Strong sign-in for partners, the customer's choice, over a real
//! `partnergate serve`: the account's `require_partner_mfa` written like
//! any account attribute (`PUT /v1/entities`), the sign-in methods in
//! `context.amr`, a partner without "mfa" denied with its own reason,
//! ordinary users unaffected, and request data that cannot lift the
//! requirement.

mod common;

use common::{Server, Workspace};
use serde_json::{json, Value};

#[test]
fn a_partner_without_a_strong_sign_in_is_denied_where_the_account_requires_it() {
    let ws = Workspace::new();
    let server = Server::start(&ws, &[]);
    server.load_demo();
    let ann = server
        .goldco_partners(&["ann"], &["users", "settings"])
        .remove(0);
    let principal = format!("User::\"{ann}\"");
    let ask = |who: &str, amr: Option<&[&str]>, entities: Option<Value>| {
        let mut q = json!({"principal": who, "action": "Action::\"configure_account\"",
                           "resource": "Account::\"acme\""});
        if let Some(amr) = amr {
            q["context"] = json!({"amr": amr});
        }
        if let Some(e) = entities {
            q["entities"] = e;
        }
        server.post("/v1/is_authorized", &q)
    };
    // Not required yet: a password sign-in works.
    let (s, d) = ask(&principal, Some(&["pwd"]), None);
    assert_eq!((s, d["decision"].as_str()), (200, Some("Allow")), "{d}");

    // The customer requires it (an account attribute, an entity write).
    let (_, stored) = server.get("/v1/entities/Account/acme");
    let mut strict = stored.clone();
    strict["attrs"]["require_partner_mfa"] = json!(true);
    let (s, b) = server.put_entities(&json!([strict]));
    assert_eq!(s, 200, "{b}");

    for amr in [None, Some(&["pwd"][..]), Some(&[][..])] {
        let (s, d) = ask(&principal, amr, None);
        assert_eq!(
            (s, d["decision"].as_str()),
            (200, Some("Deny")),
            "{amr:?}: {d}"
        );
        assert!(
            d.to_string().contains("partner-requires-strong-sign-in"),
            "{amr:?}: {d}"
        );
    }
    let (s, d) = ask(&principal, Some(&["pwd", "mfa"]), None);
    assert_eq!((s, d["decision"].as_str()), (200, Some("Allow")), "{d}");
    // Ordinary users are unaffected.
    let (s, d) = ask("User::\"owner\"", Some(&["pwd"]), None);
    assert_eq!((s, d["decision"].as_str()), (200, Some("Allow")), "{d}");
    // A caller's copy of the account that says it is not required is
    // refused; one that leaves it out changes nothing (the stored fact holds).
    let mut lifted = stored.clone();
    lifted["attrs"]["require_partner_mfa"] = json!(false);
    let (s, d) = ask(&principal, Some(&["pwd"]), Some(json!([lifted])));
    assert_eq!(s, 400, "the stored requirement cannot be replaced: {d}");
    let (s, d) = ask(&principal, Some(&["pwd"]), Some(json!([stored])));
    assert_eq!((s, d["decision"].as_str()), (200, Some("Deny")), "{d}");
    // A claim of the wrong type is no strong sign-in: a Deny or a 400, never an Allow.
    let (s, d) = server.post(
        "/v1/is_authorized",
        &json!({"principal": principal, "action": "Action::\"configure_account\"",
                "resource": "Account::\"acme\"", "context": {"amr": "mfa"}}),
    );
    assert!(s == 400 || d["decision"] == "Deny", "{s} {d}");

    // The orchestrator's endpoints carry no sign-in: a partner actor is
    // refused there while the account requires it (fail closed).
    let (s, b) = server.post_with_token(
        "/v1/accounts/acme/users",
        &json!({"actor": ann, "email": "new@acme.example"}),
    );
    assert_eq!(
        (s, b["error"].as_str()),
        (403, Some("policy_denied")),
        "{b}"
    );
    let (s, b) = server.post_with_token(
        "/v1/accounts/acme/users",
        &json!({"actor": "owner", "email": "new@acme.example"}),
    );
    assert_eq!(s, 201, "{b}");
}
