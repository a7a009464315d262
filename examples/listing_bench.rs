//! Measures the account listings (`Orchestrator::users` and `seats`, what
//! `GET /v1/accounts/{id}/users|partners|seats` answer) of a 3-user account
//! with OTHERS users in other accounts against the same account in an
//! otherwise empty store, side by side (alternating rounds), and prints the
//! ratio of the medians. Issue #12 defect 8: it must not grow with other
//! accounts' users.
//!
//! ```sh
//! scripts/listing_bench.sh            # or:
//! cargo run --release --example listing_bench -- [OTHERS] [ROUNDS]
//! ```
//!
//! Measured 2026-12-01 (release, 2 cores shared with builds): 35.3 us empty
//! vs 35.9 us with 50,000 other users (1.02x, 2,000 rounds); the scan it
//! replaced: 93.9 us vs 1,286,245 us (13,697x, 20 rounds).

use std::path::Path;
use std::time::Instant;

use partnergate::directory;
use partnergate::orchestrator::{runtime, Orchestrator};
use partnergate::policies::PackSource;
use partnergate::runtime::Runtime;
use partnergate::store::sqlite::SqliteStore;
use serde_json::{json, Value};

fn orchestrator(dir: &Path, others: usize) -> Orchestrator {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let source = PackSource::new(
        root.join("policies"),
        Some(root.join("schemas/partnergate.cedarschema")),
    );
    let schema = partnergate::policies::load(&source)
        .expect("policies")
        .schema;
    let demo: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("demo/entities.json")).expect("demo"),
    )
    .expect("demo json");
    let mut all = demo.as_array().cloned().unwrap_or_default();
    for i in 0..others {
        let account = format!("acct{}", i / 100);
        if i % 100 == 0 {
            all.push(
                json!({"uid": {"type": "Account", "id": account}, "attrs": {}, "parents": []}),
            );
        }
        all.push(json!({"uid": {"type": "User", "id": format!("u{i}")},
            "parents": [{"type": "Account", "id": account}],
            "attrs": {"email": format!("u{i}@{account}.example"),
                "account": {"__entity": {"type": "Account", "id": account}},
                "is_admin": false, "status": "active", "two_factor": true}}));
    }
    // Bulk-load the store first (as `partnergate import` does), then wire.
    let store = SqliteStore::open_in(dir).expect("store");
    directory::import(&store, schema.as_ref(), Value::Array(all)).expect("import");
    drop(store);
    let (runtime, quotas) =
        runtime::with_quotas(Runtime::new(source).sqlite_in(dir)).expect("quotas");
    let wired = runtime.build().expect("policies and store");
    runtime::orchestrator(&wired, quotas)
}

/// Microseconds of one `users` + `seats` call pair.
fn once(o: &Orchestrator) -> f64 {
    let t = Instant::now();
    let users = o.users("acme").expect("users");
    let seats = o.seats("acme").expect("seats");
    assert_eq!(users.len(), 3);
    assert_eq!(seats.paid_users, 2);
    t.elapsed().as_secs_f64() * 1e6
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let others: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(50_000);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2_000);
    let (d1, d2) = (
        tempfile::tempdir().expect("tmp"),
        tempfile::tempdir().expect("tmp"),
    );
    let empty = orchestrator(d1.path(), 0);
    let big = orchestrator(d2.path(), others);
    for _ in 0..(rounds / 10).clamp(1, 100) {
        once(&empty);
        once(&big);
    }
    let (mut e, mut b) = (Vec::with_capacity(rounds), Vec::with_capacity(rounds));
    for _ in 0..rounds {
        e.push(once(&empty));
        b.push(once(&big));
    }
    let (me, mb) = (median(&mut e), median(&mut b));
    println!("listing of a 3-user account (users + seats), median of {rounds} alternating rounds:");
    println!("  empty store:                      {me:9.1} us");
    println!("  {others} users in other accounts: {mb:9.1} us");
    println!("  ratio: {:.2}x", mb / me);
}
