//! The partner orchestrator end to end: a real `partnergate serve` process
//! over a real SQLite store — the rule table through HTTP (every error code),
//! concurrency, a SIGKILL mid-storm, hot-reloaded quotas, and the CLI flows
//! (the selection prompt under a pseudo-terminal).

mod common;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use common::entities::{account, user};
use common::{invite_args, Server, Workspace};
use serde_json::{json, Value};

/// Accounts `acme` (owner admin, emma employee) and `extra` accounts with an admin each.
fn entities(extra: &[String]) -> Value {
    let mut v = vec![
        account("acme", Some("Acme")),
        user("owner", "acme").admin(true).json(),
        user("emma", "acme").json(),
    ];
    for a in extra {
        v.push(account(a, None));
        v.push(
            user(&format!("{a}-admin"), a)
                .email(&format!("admin@{a}.example"))
                .admin(true)
                .json(),
        );
    }
    Value::Array(v)
}

fn registry() -> Vec<(String, Value)> {
    let pool = |p: &str, d: &str| (0..64).map(|i| format!("{p}{i}@{d}")).collect::<Vec<_>>();
    let mut gold = vec![
        "ann@goldco.example".to_string(),
        "bob@goldco.example".into(),
        "cat@goldco.example".into(),
        "dan@goldco.example".into(),
    ];
    gold.extend(pool("g", "goldco.example"));
    let mut other = vec!["olga@other.example".to_string()];
    other.extend(pool("o", "other.example"));
    vec![
        (
            "goldco".into(),
            json!({"name": "GoldCo", "status": "gold", "certified": true, "emails": gold}),
        ),
        (
            "otherco".into(),
            json!({"name": "Other Partners", "status": "gold", "certified": true, "emails": other}),
        ),
        (
            "silverco".into(),
            json!({"name": "SilverCo", "status": "silver", "certified": true, "emails": ["sam@silver.example"]}),
        ),
        (
            "lapsed".into(),
            json!({"name": "Lapsed", "status": "gold", "certified": false, "emails": ["lee@lapsed.example"]}),
        ),
    ]
}

trait Api {
    fn call(&self, method: &str, path: &str, body: Option<&Value>, token: bool) -> (u16, Value);
    fn w(&self, method: &str, path: &str, body: &Value) -> (u16, Value) {
        self.call(method, path, Some(body), true)
    }
    fn invite(
        &self,
        account: &str,
        actor: &str,
        email: &str,
        replace: Option<&str>,
    ) -> (u16, Value) {
        let mut b = json!({"actor": actor, "email": email});
        if let Some(r) = replace {
            b["replace"] = json!(r);
        }
        self.w("POST", &format!("/v1/accounts/{account}/partners"), &b)
    }
    fn users(&self, account: &str) -> Vec<Value> {
        let (s, b) = self.call("GET", &format!("/v1/accounts/{account}/users"), None, false);
        assert_eq!(s, 200, "{b}");
        b["users"].as_array().unwrap().clone()
    }
    fn seats(&self, account: &str) -> Value {
        let (s, b) = self.call("GET", &format!("/v1/accounts/{account}/seats"), None, false);
        assert_eq!(s, 200, "{b}");
        b
    }
}

impl Api for Server {
    fn call(&self, method: &str, path: &str, body: Option<&Value>, token: bool) -> (u16, Value) {
        let mut r = self.client.request(method.parse().unwrap(), self.url(path));
        if token {
            r = r.bearer_auth(&self.token);
        }
        if let Some(b) = body {
            r = r.json(b);
        }
        let r = r.send().unwrap();
        let status = r.status().as_u16();
        (status, r.json().unwrap_or(Value::Null))
    }
}

fn setup(ws: &Workspace, extra: &[String]) -> Server {
    let s = Server::start(ws, &[]);
    let (st, b) = s.put_entities(&entities(extra));
    assert_eq!(st, 200, "{b}");
    for (id, body) in registry() {
        let (st, b) = s.w("PUT", &format!("/v1/partner-companies/{id}"), &body);
        assert_eq!(st, 200, "{b}");
    }
    s
}

fn id(b: &Value) -> String {
    b["user"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no user id in {b}"))
        .to_string()
}

fn err(b: &Value) -> &str {
    b["error"].as_str().unwrap_or("")
}

fn reason_ids(b: &Value) -> Vec<String> {
    b["details"]["reasons"]
        .as_array()
        .map(|r| {
            r.iter()
                .map(|r| r["id"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// The quota invariant on the stored users of one account: at most `max`
/// partners holding a seat, all from one company. Returns the holders.
fn assert_invariant(users: &[Value], max: usize) -> Vec<Value> {
    let holders: Vec<Value> = users
        .iter()
        .filter(|u| u.get("partner").is_some() && u["status"] != "dismissed")
        .cloned()
        .collect();
    assert!(
        holders.len() <= max,
        "more than {max} partners: {holders:?}"
    );
    let companies: BTreeSet<&str> = holders
        .iter()
        .map(|u| u["partner"]["company"].as_str().unwrap())
        .collect();
    assert!(companies.len() <= 1, "two companies: {holders:?}");
    holders
}

#[test]
fn rule_table_over_http() {
    let ws = Workspace::new();
    let s = setup(&ws, &[]);

    // Three partners from GoldCo; invitations hold their seats.
    let (st, ann) = s.invite("acme", "owner", "Ann@GoldCo.example", None);
    assert_eq!(st, 201, "{ann}");
    assert_eq!(ann["user"]["status"], "invited");
    assert_eq!(ann["user"]["email"], "ann@goldco.example");
    assert_eq!(
        ann["user"]["partner"],
        json!({"company": "goldco", "verified": false,
               "scopes": ["integrations", "settings", "users"]}),
        "no scopes asked: quotas.toml's default_partner_scopes"
    );
    let ann = id(&ann);
    let (st, bob) = s.invite("acme", "owner", "bob@goldco.example", None);
    assert_eq!(st, 201, "{bob}");
    let bob = id(&bob);
    let (st, cat) = s.invite("acme", "owner", "cat@goldco.example", None);
    assert_eq!(st, 201, "{cat}");
    let cat = id(&cat);
    assert_eq!(
        s.seats("acme"),
        json!({"account": "acme", "paid_users": 2, "administrators": 1, "partners": 3, "partner_limit": 3})
    );

    // Malformed email: 422 before anything else.
    let (st, b) = s.invite("acme", "owner", "not-an-email", None);
    assert_eq!((st, err(&b)), (422, "invalid_email"), "{b}");

    // The fourth: 409 with the active partners and a hint.
    let (st, b) = s.invite("acme", "owner", "dan@goldco.example", None);
    assert_eq!((st, err(&b)), (409, "partner_limit_reached"), "{b}");
    let listed: BTreeSet<&str> = b["details"]["active_partners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        listed,
        BTreeSet::from([ann.as_str(), bob.as_str(), cat.as_str()])
    );
    assert!(
        b["details"]["hint"].as_str().unwrap().contains("replace"),
        "{b}"
    );
    assert!(
        b["message"]
            .as_str()
            .unwrap()
            .contains("dismiss one of them"),
        "{b}"
    );
    // Seat check comes before the certification check (domain order).
    let (st, b) = s.invite("acme", "owner", "nobody@nowhere.example", None);
    assert_eq!((st, err(&b)), (409, "partner_limit_reached"), "{b}");

    // The swap: one transaction dismisses ann and invites dan.
    let (st, b) = s.invite("acme", "owner", "dan@goldco.example", Some(&ann));
    assert_eq!(st, 201, "{b}");
    assert_eq!(b["dismissed"]["id"], json!(ann));
    assert_eq!(b["dismissed"]["status"], "dismissed");
    let dan = id(&b);
    // replace must name an active partner of the account.
    let (st, b) = s.invite("acme", "owner", "g1@goldco.example", Some("emma"));
    assert_eq!((st, err(&b)), (422, "invalid_replace"), "{b}");
    assert_invariant(&s.users("acme"), 3);

    // Free a seat; now the other checks show.
    let (st, b) = s.w(
        "POST",
        &format!("/v1/users/{cat}/dismiss"),
        &json!({"actor": "owner"}),
    );
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["user"]["status"], "dismissed");
    let (st, b) = s.invite("acme", "owner", "olga@other.example", None);
    assert_eq!((st, err(&b)), (409, "different_partner_company"), "{b}");
    assert_eq!(b["details"]["active_company"], "goldco");
    let (st, b) = s.invite("acme", "owner", "nobody@nowhere.example", None);
    assert_eq!((st, err(&b)), (422, "not_a_certified_partner"), "{b}");
    assert!(b["message"]
        .as_str()
        .unwrap()
        .contains("no certified partner with this email"));
    let (st, b) = s.invite("acme", "owner", "lee@lapsed.example", None);
    assert_eq!((st, err(&b)), (422, "not_a_certified_partner"), "{b}");
    // The policies decide the acceptable status: Silver is refused with the reason.
    let (st, b) = s.invite("acme", "owner", "sam@silver.example", None);
    assert_eq!((st, err(&b)), (403, "policy_denied"), "{b}");
    assert_eq!(reason_ids(&b), vec!["partner-access-requires-gold"]);
    // An employee may not invite partners.
    let (st, b) = s.invite("acme", "emma", "g2@goldco.example", None);
    assert_eq!((st, err(&b)), (403, "policy_denied"), "{b}");
    // Already a member.
    let (st, b) = s.invite("acme", "owner", "bob@goldco.example", None);
    assert_eq!((st, err(&b)), (409, "already_member"), "{b}");

    // An invited partner can do nothing until verified (accepted).
    let (st, b) = s.w(
        "POST",
        "/v1/accounts/acme/users",
        &json!({"actor": bob, "email": "new@acme.example"}),
    );
    assert_eq!((st, err(&b)), (403, "policy_denied"), "{b}");
    assert!(
        reason_ids(&b).contains(&"inactive-users-do-nothing".to_string()),
        "{b}"
    );
    let (st, b) = s.w("POST", &format!("/v1/users/{bob}/accept"), &json!({}));
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["user"]["status"], "active");
    assert_eq!(b["user"]["partner"]["verified"], true);
    let (st, b) = s.w("POST", &format!("/v1/users/{bob}/accept"), &json!({}));
    assert_eq!((st, err(&b)), (409, "not_invited"), "{b}");

    // A verified partner invites users and dismisses them...
    let (st, b) = s.w(
        "POST",
        "/v1/accounts/acme/users",
        &json!({"actor": bob, "email": "new@acme.example", "name": "New Person"}),
    );
    assert_eq!(st, 201, "{b}");
    assert!(id(&b).starts_with("new-person-"), "{b}");
    let (st, b) = s.w("POST", "/v1/users/emma/dismiss", &json!({"actor": bob}));
    assert_eq!(st, 200, "{b}");
    // ...but grants no admin rights and does not dismiss a non-partner administrator.
    let (st, b) = s.w("PUT", "/v1/users/emma/admin", &json!({"actor": bob}));
    assert_eq!((st, err(&b)), (403, "policy_denied"), "{b}");
    assert!(
        reason_ids(&b).contains(&"partner-no-admin-grants".to_string()),
        "{b}"
    );
    let (st, b) = s.w("POST", "/v1/users/owner/dismiss", &json!({"actor": bob}));
    assert_eq!((st, err(&b)), (403, "policy_denied"), "{b}");
    assert_eq!(reason_ids(&b), vec!["partner-no-touch-admins"]);
    // A partner may act on another partner of the same company.
    let (st, b) = s.w(
        "POST",
        &format!("/v1/users/{dan}/dismiss"),
        &json!({"actor": bob}),
    );
    assert_eq!(st, 200, "{b}");
    // The owner grants and revokes admin rights.
    let (st, b) = s.w("PUT", "/v1/users/emma/admin", &json!({"actor": "owner"}));
    assert_eq!(
        (st, b["user"]["is_admin"].clone()),
        (200, json!(true)),
        "{b}"
    );
    let (st, b) = s.call(
        "DELETE",
        "/v1/users/emma/admin",
        Some(&json!({"actor": "owner"})),
        true,
    );
    assert_eq!(
        (st, b["user"]["is_admin"].clone()),
        (200, json!(false)),
        "{b}"
    );

    // Rehire: an ordinary user comes back active; a partner is re-counted.
    let (st, b) = s.w("POST", "/v1/users/emma/rehire", &json!({"actor": "owner"}));
    assert_eq!(
        (st, b["user"]["status"].clone()),
        (200, json!("active")),
        "{b}"
    );
    let (st, b) = s.w("POST", "/v1/users/emma/rehire", &json!({"actor": "owner"}));
    assert_eq!((st, err(&b)), (409, "not_dismissed"), "{b}");
    // Seats now: bob only (ann, cat, dan dismissed). Fill up with g3, g4.
    for e in ["g3@goldco.example", "g4@goldco.example"] {
        let (st, b) = s.invite("acme", "owner", e, None);
        assert_eq!(st, 201, "{b}");
    }
    let (st, b) = s.w(
        "POST",
        &format!("/v1/users/{ann}/rehire"),
        &json!({"actor": "owner"}),
    );
    assert_eq!((st, err(&b)), (409, "partner_limit_reached"), "{b}");
    let (st, b) = s.w(
        "POST",
        &format!("/v1/users/{ann}/rehire"),
        &json!({"actor": "owner", "replace": bob}),
    );
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["user"]["status"], "active");
    assert_eq!(b["user"]["partner"]["verified"], true);
    assert_eq!(b["dismissed"]["id"], json!(bob));

    // Partner access for an existing user: emma's email is not in the registry.
    let (st, b) = s.w("POST", "/v1/users/emma/dismiss", &json!({"actor": "owner"}));
    assert_eq!(st, 200, "{b}");
    let (st, b) = s.w(
        "POST",
        &format!("/v1/users/{cat}/dismiss"),
        &json!({"actor": "owner"}),
    );
    assert_eq!((st, err(&b)), (409, "already_dismissed"), "{b}");
    let g4 = s
        .users("acme")
        .into_iter()
        .find(|u| u["email"] == "g4@goldco.example")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (st, b) = s.w(
        "POST",
        &format!("/v1/users/{g4}/dismiss"),
        &json!({"actor": "owner"}),
    );
    assert_eq!(st, 200, "{b}");
    let (st, b) = s.w(
        "POST",
        "/v1/users/emma/partner-access",
        &json!({"actor": "owner"}),
    );
    assert_eq!((st, err(&b)), (422, "not_a_certified_partner"), "{b}");
    // ...cat's is: partner access re-activates the dismissed cat (same checks).
    let (st, b) = s.w(
        "POST",
        &format!("/v1/users/{cat}/partner-access"),
        &json!({"actor": "owner"}),
    );
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["user"]["status"], "active");
    let (st, b) = s.w(
        "POST",
        &format!("/v1/users/{cat}/partner-access"),
        &json!({"actor": "owner"}),
    );
    assert_eq!((st, err(&b)), (409, "already_partner"), "{b}");
    let (st, b) = s.w(
        "POST",
        "/v1/users/nobody/dismiss",
        &json!({"actor": "owner"}),
    );
    assert_eq!(
        (st, err(&b)),
        (403, "policy_denied"),
        "unknown user: fail closed {b}"
    );
    let (st, b) = s.w(
        "POST",
        "/v1/users/nobody/partner-access",
        &json!({"actor": "owner"}),
    );
    assert_eq!((st, err(&b)), (404, "not_found"), "{b}");

    // Employees list: the mark and the status precedence.
    let users = s.users("acme");
    let order: Vec<&str> = users
        .iter()
        .map(|u| u["list_status"].as_str().unwrap())
        .collect();
    let rank = |s: &str| {
        [
            "administrator",
            "employee",
            "partner",
            "dismissed",
            "invited",
        ]
        .iter()
        .position(|x| *x == s)
        .unwrap()
        .max(1)
            - 1
    };
    assert!(
        order.windows(2).all(|w| rank(w[0]) <= rank(w[1])),
        "{order:?}"
    );
    for u in &users {
        assert_eq!(u.get("mark").is_some(), u.get("partner").is_some(), "{u}");
    }
    let partners: Vec<&Value> = users
        .iter()
        .filter(|u| u["list_status"] == "partner")
        .collect();
    assert!(partners.iter().all(|u| u["mark"] == "Partner"));
    let holders = assert_invariant(&users, 3);
    // Partners are neither paid users nor administrators.
    let seats = s.seats("acme");
    assert_eq!(seats["partners"], json!(holders.len()));
    assert_eq!(seats["administrators"], 1);
    assert_eq!(
        seats["paid_users"], 2,
        "owner and the invited new@acme: {seats}"
    );
}

#[test]
fn a_write_without_the_token_is_401_and_changes_nothing() {
    let ws = Workspace::new();
    let s = setup(&ws, &[]);
    let (st, b) = s.invite("acme", "owner", "ann@goldco.example", None);
    assert_eq!(st, 201, "{b}");
    let ann = id(&b);
    let before = (
        s.users("acme"),
        s.seats("acme"),
        s.call("GET", "/v1/partner-companies", None, false).1,
    );
    let writes: Vec<(&str, String, Value)> = vec![
        (
            "POST",
            "/v1/accounts/acme/partners".into(),
            json!({"actor": "owner", "email": "bob@goldco.example"}),
        ),
        (
            "POST",
            "/v1/accounts/acme/users".into(),
            json!({"actor": "owner", "email": "x@acme.example"}),
        ),
        ("POST", format!("/v1/users/{ann}/accept"), json!({})),
        (
            "POST",
            format!("/v1/users/{ann}/dismiss"),
            json!({"actor": "owner"}),
        ),
        (
            "POST",
            "/v1/users/emma/rehire".into(),
            json!({"actor": "owner"}),
        ),
        (
            "POST",
            "/v1/users/emma/partner-access".into(),
            json!({"actor": "owner"}),
        ),
        (
            "PUT",
            "/v1/users/emma/admin".into(),
            json!({"actor": "owner"}),
        ),
        (
            "DELETE",
            "/v1/users/owner/admin".into(),
            json!({"actor": "owner"}),
        ),
        (
            "PUT",
            "/v1/partner-companies/goldco".into(),
            json!({"name": "x", "status": "silver", "certified": false, "emails": []}),
        ),
    ];
    for (m, p, body) in &writes {
        let (st, b) = s.call(m, p, Some(body), false);
        assert_eq!((st, err(&b)), (401, "unauthorized"), "{m} {p}: {b}");
        let r = s
            .client
            .request(m.parse().unwrap(), s.url(p))
            .bearer_auth("wrong-token")
            .json(body)
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 401, "{m} {p} with a wrong token");
    }
    let after = (
        s.users("acme"),
        s.seats("acme"),
        s.call("GET", "/v1/partner-companies", None, false).1,
    );
    assert_eq!(before, after);
}

#[test]
fn concurrent_invitations_never_break_the_quota() {
    let ws = Workspace::new();
    let rounds: Vec<String> = (0..5).map(|r| format!("race{r}")).collect();
    let s = setup(&ws, &rounds);
    let mut all_created: Vec<(String, String)> = Vec::new();
    for account in &rounds {
        let admin = format!("{account}-admin");
        let barrier = Arc::new(Barrier::new(64));
        let created = Arc::new(Mutex::new(Vec::new()));
        let codes = Arc::new(Mutex::new(HashMap::<String, usize>::new()));
        std::thread::scope(|scope| {
            for i in 0..64 {
                let (barrier, created, codes) = (barrier.clone(), created.clone(), codes.clone());
                let (s, admin) = (&s, &admin);
                scope.spawn(move || {
                    let email = if i % 2 == 0 {
                        format!("g{i}@goldco.example")
                    } else {
                        format!("o{i}@other.example")
                    };
                    barrier.wait();
                    let (st, b) = s.invite(account, admin, &email, None);
                    let code = if st == 201 {
                        "201".to_string()
                    } else {
                        format!("{st} {}", err(&b))
                    };
                    *codes.lock().unwrap().entry(code).or_default() += 1;
                    if st == 201 {
                        created.lock().unwrap().push((
                            id(&b),
                            b["user"]["partner"]["company"]
                                .as_str()
                                .unwrap()
                                .to_string(),
                        ));
                    }
                });
            }
        });
        let created = created.lock().unwrap().clone();
        let codes = codes.lock().unwrap().clone();
        assert_eq!(
            created.len(),
            3,
            "{account}: exactly three seats are given: {codes:?}"
        );
        let companies: BTreeSet<&String> = created.iter().map(|(_, c)| c).collect();
        assert_eq!(companies.len(), 1, "{account}: one company: {created:?}");
        for code in codes.keys() {
            assert!(
                [
                    "201",
                    "409 partner_limit_reached",
                    "409 different_partner_company"
                ]
                .contains(&code.as_str()),
                "{account}: unexpected {code}: {codes:?}"
            );
        }
        let holders = assert_invariant(&s.users(account), 3);
        assert_eq!(holders.len(), 3);
        all_created.extend(created.into_iter().map(|(id, _)| (account.clone(), id)));
    }
    // Every 201 is persisted: visible after a restart, read back from the store.
    drop(s);
    let s = Server::start(&ws, &[]);
    for (account, user) in &all_created {
        let users = s.users(account);
        assert!(
            users.iter().any(|u| u["id"] == json!(user)),
            "{user} lost in {account}"
        );
        assert_invariant(&users, 3);
    }
}

#[test]
fn sigkill_in_an_invitation_storm_loses_no_acknowledged_invitation() {
    let ws = Workspace::new();
    let accounts: Vec<String> = (0..24).map(|a| format!("storm{a}")).collect();
    let mut s = setup(&ws, &accounts);
    let acknowledged = Arc::new(Mutex::new(Vec::<(String, String)>::new()));
    let answered = Arc::new(AtomicUsize::new(0));
    let (base, token) = (s.base.clone(), s.token.clone());
    let workers: Vec<_> = (0..8)
        .map(|t| {
            let (acknowledged, answered, accounts) =
                (acknowledged.clone(), answered.clone(), accounts.clone());
            let (base, token) = (base.clone(), token.clone());
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(5))
                    .build()
                    .unwrap();
                for n in 0usize.. {
                    let account = &accounts[(n * 7 + t * 3) % accounts.len()];
                    let email = if (n + t) % 3 == 0 {
                        format!("o{}@other.example", (n * 8 + t) % 64)
                    } else {
                        format!("g{}@goldco.example", (n * 8 + t) % 64)
                    };
                    let r = client
                        .post(format!("{base}/v1/accounts/{account}/partners"))
                        .bearer_auth(&token)
                        .json(&json!({"actor": format!("{account}-admin"), "email": email}))
                        .send();
                    let Ok(r) = r else { return };
                    let status = r.status().as_u16();
                    let Ok(b) = r.json::<Value>() else { return };
                    if status == 201 {
                        acknowledged.lock().unwrap().push((account.clone(), id(&b)));
                    }
                    answered.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    // Kill the server (SIGKILL) once the storm is well under way.
    let deadline = Instant::now() + Duration::from_secs(60);
    while answered.load(Ordering::SeqCst) < 40 {
        assert!(Instant::now() < deadline, "the storm did not get going");
        std::thread::yield_now();
    }
    s.child.kill().unwrap();
    s.child.wait().unwrap();
    for w in workers {
        w.join().unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(!acknowledged.is_empty());
    let s = Server::start(&ws, &[]);
    for account in &accounts {
        assert_invariant(&s.users(account), 3);
    }
    for (account, user) in &acknowledged {
        assert!(
            s.users(account).iter().any(|u| u["id"] == json!(user)),
            "acknowledged invitation {user} in {account} is lost"
        );
    }
}

#[test]
fn quotas_are_hot_reloaded_and_a_bad_edit_keeps_the_last_good_rules() {
    let ws = Workspace::new();
    let s = setup(&ws, &[]);
    for e in ["ann", "bob", "cat"] {
        let (st, b) = s.invite("acme", "owner", &format!("{e}@goldco.example"), None);
        assert_eq!(st, 201, "{b}");
    }
    let quotas = ws.policies().join("quotas.toml");
    std::fs::write(
        &quotas,
        "max_active_partners = 2\none_company_per_account = true\n",
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while s.seats("acme")["partner_limit"] != 2 {
        assert!(Instant::now() < deadline, "quotas not reloaded");
        std::thread::yield_now();
    }
    // Lowering the limit dismisses nobody; it refuses new partners.
    assert_eq!(s.seats("acme")["partners"], 3);
    let (st, b) = s.invite("acme", "owner", "dan@goldco.example", None);
    assert_eq!((st, err(&b)), (409, "partner_limit_reached"), "{b}");
    assert_eq!(b["details"]["limit"], 2);
    // Even a swap is refused while the count (minus the replaced) is at the limit.
    let ann = s
        .users("acme")
        .into_iter()
        .find(|u| u["email"] == "ann@goldco.example")
        .unwrap()["id"]
        .clone();
    let (st, b) = s.invite("acme", "owner", "dan@goldco.example", ann.as_str());
    assert_eq!((st, err(&b)), (409, "partner_limit_reached"), "{b}");

    // A bad edit: rejected with file and line, the last good rules keep serving.
    std::fs::write(
        &quotas,
        "max_active_partners = 2\none_company_per_account = \"yes\"\n",
    )
    .unwrap();
    let body = s.wait_policies(Duration::from_secs(20), "the bad quotas edit", |b| {
        !b["last_error"].is_null()
    });
    let problem = &body["last_error"]["problems"][0];
    assert!(
        problem["file"].as_str().unwrap().ends_with("quotas.toml"),
        "{body}"
    );
    assert_eq!(problem["line"], 2, "{body}");
    assert_eq!(s.seats("acme")["partner_limit"], 2);
    // One company per account off: another company may join when a seat is free.
    std::fs::write(
        &quotas,
        "max_active_partners = 4\none_company_per_account = false\n",
    )
    .unwrap();
    s.wait_policies(Duration::from_secs(20), "the good quotas edit", |b| {
        b["last_error"].is_null()
    });
    assert_eq!(s.seats("acme")["partner_limit"], 4);
    let (st, b) = s.invite("acme", "owner", "olga@other.example", None);
    assert_eq!(st, 201, "{b}");
}

// ----- CLI -----

struct CliWs {
    ws: Workspace,
}

impl CliWs {
    fn new() -> Self {
        let ws = Workspace::new();
        let ents = ws.path().join("entities.json");
        std::fs::write(&ents, entities(&[]).to_string()).unwrap();
        let reg: Vec<Value> = registry()
            .into_iter()
            .map(|(id, mut b)| {
                b["id"] = json!(id);
                b
            })
            .collect();
        let regf = ws.path().join("registry.json");
        std::fs::write(&regf, Value::Array(reg).to_string()).unwrap();
        let me = CliWs { ws };
        let (code, out, e) = me.run(&["import", ents.to_str().unwrap()]);
        assert_eq!(code, 0, "{out}{e}");
        let (code, out, e) = me.run(&["registry", "import", regf.to_str().unwrap()]);
        assert_eq!(code, 0, "{out}{e}");
        assert!(out.contains("imported 4 partner companies"), "{out}");
        me
    }

    /// Run with the workspace's state args appended (no terminal).
    fn run(&self, args: &[&str]) -> (i32, String, String) {
        self.ws.cli(args, &[], &[])
    }

    fn users(&self) -> Vec<Value> {
        let (code, out, e) = self.run(&["users", "list", "--account", "acme", "--json"]);
        assert_eq!(code, 0, "{e}");
        serde_json::from_str::<Value>(&out)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }

    fn id_of(&self, email: &str) -> String {
        self.users()
            .into_iter()
            .find(|u| u["email"] == email)
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    }
}

#[test]
fn cli_invite_limit_swap_dismiss_rehire_without_a_terminal() {
    let c = CliWs::new();
    let invite = |email: &str, extra: &[&str]| {
        let mut a = invite_args("owner", email).to_vec();
        a.extend_from_slice(extra);
        c.run(&a)
    };
    for e in ["ann", "bob", "cat"] {
        let (code, out, err) = invite(&format!("{e}@goldco.example"), &[]);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("status invited, company goldco"), "{out}");
    }
    let ann = c.id_of("ann@goldco.example");
    // No terminal: the active partners are printed and the exit is non-zero.
    let (code, out, err) = invite("dan@goldco.example", &[]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("partner_limit_reached") && err.contains(&ann) && err.contains("--replace"),
        "{err}"
    );
    let (code, out, err) = invite("dan@goldco.example", &["--replace", &ann]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("dismissed {ann}")), "{out}");
    let (code, _, err) = invite(
        "olga@other.example",
        &["--replace", &c.id_of("bob@goldco.example")],
    );
    assert_eq!(code, 1);
    assert!(err.contains("different_partner_company"), "{err}");
    let (code, _, err) = c.run(&invite_args("emma", "g1@goldco.example"));
    assert_eq!(code, 2, "a policy deny exits 2: {err}");
    assert!(err.contains("policy_denied"), "{err}");
    // Seats, dismiss, rehire.
    let (code, out, _) = c.run(&["seats", "--account", "acme"]);
    assert_eq!(code, 0);
    assert_eq!(
        out.trim(),
        "account acme: paid users 2, administrators 1, partners 3 (limit 3)"
    );
    let cat = c.id_of("cat@goldco.example");
    let (code, out, err) = c.run(&["users", "dismiss", "--user", &cat, "--actor", "owner"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("status dismissed"), "{out}");
    let (code, out, err) = c.run(&["users", "rehire", "--user", &ann, "--actor", "owner"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("{ann} <ann@goldco.example> (status active")),
        "{out}"
    );
    let (code, out, _) = c.run(&["users", "list", "--account", "acme"]);
    assert_eq!(code, 0);
    assert!(
        out.lines()
            .any(|l| l.contains(&ann) && l.contains("partner") && l.contains(" Partner ")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.contains(&cat) && l.contains("dismissed")),
        "{out}"
    );
    // A bad registry file: named error, nothing imported.
    let bad = c.ws.path().join("bad.json");
    std::fs::write(&bad, r#"[{"id": "x", "name": "X", "status": "gold", "certified": true, "emails": ["not-an-email"]}]"#).unwrap();
    let (code, _, err) = c.run(&["registry", "import", bad.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        err.contains("bad.json")
            && err.contains("not-an-email")
            && err.contains("nothing was imported"),
        "{err}"
    );
    let (_, out, _) = c.run(&["registry", "list", "--json"]);
    assert!(!out.contains("\"x\""), "{out}");
}

#[test]
fn cli_asks_which_partner_to_dismiss_in_a_terminal() {
    use expectrl::{Eof, Expect};
    let c = CliWs::new();
    for e in ["ann", "bob", "cat"] {
        let (code, _, err) = c.run(&invite_args("owner", &format!("{e}@goldco.example")));
        assert_eq!(code, 0, "{err}");
    }
    let before: Vec<String> = ["ann", "bob", "cat"]
        .iter()
        .map(|e| c.id_of(&format!("{e}@goldco.example")))
        .collect();
    let cmd =
        c.ws.command(&invite_args("owner", "dan@goldco.example"), &[]);
    let mut p = expectrl::Session::spawn(cmd).unwrap();
    p.set_expect_timeout(Some(Duration::from_secs(30)));
    p.expect("Which partner should be dismissed?").unwrap();
    // Move down to the second partner in the list and choose it.
    p.send("j").unwrap();
    p.send("\r").unwrap();
    p.expect("dismissed").unwrap();
    p.expect(Eof).unwrap();
    let users = c.users();
    let dismissed: Vec<&Value> = users
        .iter()
        .filter(|u| u["list_status"] == "dismissed")
        .collect();
    assert_eq!(dismissed.len(), 1, "{users:?}");
    assert_eq!(
        dismissed[0]["id"],
        json!(before[1]),
        "the second listed partner is dismissed"
    );
    assert!(users
        .iter()
        .any(|u| u["email"] == "dan@goldco.example" && u["status"] == "invited"));
    // Cancelling dismisses nobody and invites nobody.
    let cmd =
        c.ws.command(&invite_args("owner", "g5@goldco.example"), &[]);
    let mut p = expectrl::Session::spawn(cmd).unwrap();
    p.set_expect_timeout(Some(Duration::from_secs(30)));
    p.expect("Which partner should be dismissed?").unwrap();
    p.send("\x1b").unwrap(); // Esc
    p.expect("cancelled").unwrap();
    p.expect(Eof).unwrap();
    assert_eq!(c.users(), users);
}

/// Bug (issue #13 §2, audit-trail gaps): an orchestrator write's change
/// records named no decision (`ask()` dropped the decision id) and no
/// request id (the `X-Request-ID` never reached the orchestrator, nor its
/// policy questions). Now each change record names the Allow decision that
/// permitted it — in a swap, the replaced partner's record names the
/// `dismiss_user` decision — and the request id, as do those decisions.
#[test]
fn orchestrator_change_records_name_their_allow_decision_and_request_id() {
    let ws = Workspace::new();
    let s = setup(&ws, &[]);
    let log = ws.data().join("decisions.jsonl");
    let send = |rid: &str, path: &str, body: Value| {
        let r = s
            .client
            .post(s.url(path))
            .bearer_auth(&s.token)
            .header("X-Request-ID", rid)
            .json(&body)
            .send()
            .unwrap();
        let status = r.status().as_u16();
        let b: Value = r.json().unwrap();
        assert!(status < 300, "{rid}: {status} {b}");
        b
    };
    let invite = |rid: &str, email: &str, replace: Option<&str>| {
        let mut b = json!({"actor": "owner", "email": email});
        if let Some(r) = replace {
            b["replace"] = json!(r);
        }
        send(rid, "/v1/accounts/acme/partners", b)
    };
    let ann = id(&invite("trace-ann", "ann@goldco.example", None));
    invite("trace-bob", "bob@goldco.example", None);
    invite("trace-cat", "cat@goldco.example", None);
    let swap = invite("trace-swap", "dan@goldco.example", Some(&ann));
    assert_eq!(swap["dismissed"]["id"], json!(ann.as_str()));
    send(
        "trace-dismiss",
        &format!("/v1/users/{}/dismiss", id(&swap)),
        json!({"actor": "owner"}),
    );

    let traced = |r: &Value| {
        r["request_id"]
            .as_str()
            .is_some_and(|i| i.starts_with("trace-"))
    };
    let t0 = Instant::now();
    let records: Vec<Value> = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
        let records: Vec<Value> = complete
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let changes = records
            .iter()
            .filter(|r| r["kind"] == "change" && traced(r))
            .count();
        // 3 invitations, the swap (2 users) and the dismissal.
        if changes >= 6 {
            break records;
        }
        assert!(
            t0.elapsed() < common::PATIENCE,
            "timed out waiting for 6 traced change records: {records:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let changes: Vec<&Value> = records
        .iter()
        .filter(|r| r["kind"] == "change" && traced(r))
        .collect();
    assert_eq!(changes.len(), 6, "{changes:?}");
    for c in &changes {
        let id = c["decision_id"]
            .as_str()
            .unwrap_or_else(|| panic!("a change record without a decision id: {c}"));
        let d = records
            .iter()
            .find(|r| r["kind"] == "decision" && r["decision_id"] == id)
            .unwrap_or_else(|| panic!("no decision record {id} for {c}"));
        assert_eq!(d["decision"], "Allow", "{d}");
        assert_eq!(d["request_id"], c["request_id"], "{d} / {c}");
        let expected = match (c["request_id"].as_str(), c["before"]["uid"]["id"].as_str()) {
            (Some("trace-swap"), Some(u)) if u == ann => "Action::\"dismiss_user\"",
            (Some("trace-dismiss"), _) => "Action::\"dismiss_user\"",
            _ => "Action::\"invite_partner\"",
        };
        assert_eq!(d["action"], expected, "{c} / {d}");
    }
}
