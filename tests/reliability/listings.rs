//! The listings with 50,000 users in other accounts (issue #12, defect 8):
//! `GET /v1/accounts/{id}/seats|users|partners` of a 3-user account are
//! right however many users other accounts have. That they read only the
//! account's own users (an index, not a scan) is proven by the unit test
//! `orchestrator::tests::listings_read_only_the_accounts_own_users`; the
//! timing comparison is `scripts/listing_bench.sh` (no timing asserted here).

use std::process::Command;

use serde_json::{json, Value};

use crate::common::{entities, Server, Workspace, BIN};

const OTHERS: usize = 50_000;

fn user(id: &str, account: &str, admin: bool, partner: bool) -> Value {
    let u = entities::user(id, account).admin(admin);
    if partner {
        u.partner("goldco", true)
    } else {
        u
    }
    .json()
}

#[test]
fn listings_of_a_small_account_are_right_with_50000_users_in_other_accounts() {
    let ws = Workspace::new();
    let demo: Value = serde_json::from_str(
        &std::fs::read_to_string(crate::common::repo().join("demo/entities.json")).unwrap(),
    )
    .unwrap();
    let mut all = demo.as_array().cloned().unwrap_or_default();
    for a in 0..OTHERS / 100 {
        let account = format!("acct{a}");
        all.push(json!({"uid": {"type": "Account", "id": account}, "attrs": {}, "parents": []}));
        for u in 0..100 {
            all.push(user(&format!("u{a}-{u}"), &account, u == 0, u % 10 == 1));
        }
    }
    let file = ws.path().join("bulk.json");
    std::fs::write(&file, serde_json::to_vec(&Value::Array(all)).unwrap()).unwrap();
    let out = Command::new(BIN)
        .args(["import", "--data-dir"])
        .arg(ws.data())
        .arg("--schema")
        .arg(ws.schema())
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = Server::start(&ws, &[]);
    let (status, seats) = s.get("/v1/accounts/acme/seats");
    assert_eq!(status, 200, "{seats}");
    assert_eq!(
        seats,
        json!({"account": "acme", "paid_users": 2, "administrators": 1, "partners": 1, "partner_limit": 3})
    );
    let (status, users) = s.get("/v1/accounts/acme/users");
    assert_eq!(status, 200, "{users}");
    let ids: Vec<&str> = users["users"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|u| u["id"].as_str())
        .collect();
    assert_eq!(ids, ["emma", "owner", "pat"], "{users}");
    let (status, partners) = s.get("/v1/accounts/acme/partners");
    assert_eq!(status, 200, "{partners}");
    assert_eq!(
        partners["partners"].as_array().map(Vec::len),
        Some(1),
        "{partners}"
    );
    assert_eq!(partners["partners"][0]["id"], "pat");
    // Another account is listed with its own 100 users, not acme's.
    let (status, other) = s.get("/v1/accounts/acct7/seats");
    assert_eq!(status, 200, "{other}");
    assert_eq!(
        (
            other["paid_users"].as_u64(),
            other["administrators"].as_u64(),
            other["partners"].as_u64()
        ),
        (Some(90), Some(1), Some(10)),
        "{other}"
    );
}
