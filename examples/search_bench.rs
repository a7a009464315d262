//! Resource search "the users of account A that partner P may dismiss"
//! (issue #16) against the brute-force loop (every stored user asked with
//! the full decision), on directories of SIZES users over 1,000 accounts,
//! in one run: time to the first page (limit 50), to the whole result (pages
//! of 1,000), and of the loop. The answers are checked equal before timing.
//! Every directory is loaded at once; each round times every (directory,
//! account) in turn, the order reversed every other round; medians printed.
//!
//! Two accounts are searched in each directory: a typical one (SIZE/1,000
//! users, the one the "≥ 50× faster than brute force" and "first page ≤ 10
//! ms" goals are about) and `fixed`, which has FIXED users whatever the
//! directory's size (the "1M vs 100k ≤ 1.5× for a fixed result size" goal).
//!
//! ```sh
//! scripts/search_bench.sh                 # or:
//! cargo run --release --example search_bench -- [SIZES] [ROUNDS] [BRUTE_ROUNDS]
//! # SIZES: comma-separated (default 100000,1000000)
//! ```

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Instant;

use partnergate::authz::{Authz, Query};
use partnergate::directory;
use partnergate::policies::PackSource;
use partnergate::runtime::{Runtime, Wired};
use partnergate::search::{Limits, PageRequest, SearchRequest, Searcher, Target, TokenKey};
use partnergate::store::sqlite::SqliteStore;
use serde_json::{json, Value};

/// Users of the `fixed` account in every directory.
const FIXED: usize = 100;
const ACCOUNTS: usize = 1000;

fn user(id: &str, account: &str, admin: bool, partner: bool) -> Value {
    let mut attrs = json!({"email": format!("{id}@{account}.example"),
        "account": {"__entity": {"type": "Account", "id": account}},
        "is_admin": admin, "status": "active", "two_factor": true});
    if partner {
        attrs["partner"] = json!({"company": {"__entity": {"type": "PartnerCompany", "id": "goldco"}}, "verified": true});
    }
    json!({"uid": {"type": "User", "id": id}, "parents": [{"type": "Account", "id": account}], "attrs": attrs})
}

/// SIZE users: FIXED in `fixed` (with partner `pf`), the rest spread over
/// 999 accounts `a000`..`a998` (partner `p-a000` in `a000`); one user in
/// ten is an administrator.
fn directory(size: usize) -> Value {
    let mut all = vec![
        json!({"uid": {"type": "PartnerCompany", "id": "goldco"}, "attrs": {"name": "GoldCo", "status": "gold", "certified": true}, "parents": []}),
        json!({"uid": {"type": "Account", "id": "fixed"}, "attrs": {}, "parents": []}),
    ];
    for a in 0..ACCOUNTS - 1 {
        all.push(json!({"uid": {"type": "Account", "id": format!("a{a:03}")}, "attrs": {}, "parents": []}));
    }
    all.push(user("pf", "fixed", false, true));
    for i in 1..FIXED {
        all.push(user(&format!("f{i:06}"), "fixed", i % 10 == 0, false));
    }
    all.push(user("p-a000", "a000", false, true));
    for i in 0..size - FIXED - 1 {
        let account = format!("a{:03}", i % (ACCOUNTS - 1));
        all.push(user(&format!("u{i:07}"), &account, i % 10 == 3, false));
    }
    Value::Array(all)
}

fn wire(dir: &Path, size: usize) -> Wired {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let source = PackSource::new(
        root.join("policies"),
        Some(root.join("schemas/partnergate.cedarschema")),
    );
    let schema = partnergate::policies::load(&source)
        .expect("policies")
        .schema;
    let store = SqliteStore::open_in(dir).expect("store");
    directory::import(&store, schema.as_ref(), directory(size)).expect("import");
    drop(store);
    Runtime::new(source)
        .sqlite_in(dir)
        .build()
        .expect("policies and store")
}

fn request(partner: &str) -> SearchRequest {
    SearchRequest::new(Target::Resources {
        principal: format!("User::\"{partner}\"").parse().expect("uid"),
        action: "Action::\"dismiss_user\"".parse().expect("uid"),
        resource_type: "User".parse().expect("type"),
    })
}

/// (milliseconds, results) of the first page.
fn first_page(s: &Searcher, req: &SearchRequest) -> (f64, usize) {
    let t = Instant::now();
    let page = s
        .search(
            req,
            &PageRequest {
                limit: Some(50),
                token: None,
                deadline: None,
            },
        )
        .expect("search");
    (t.elapsed().as_secs_f64() * 1e3, page.results.len())
}

/// (milliseconds, results) of every page of 1,000.
fn whole(s: &Searcher, req: &SearchRequest) -> (f64, BTreeSet<String>) {
    let t = Instant::now();
    let mut out = BTreeSet::new();
    let mut token = None;
    loop {
        let page = s
            .search(
                req,
                &PageRequest {
                    limit: Some(1000),
                    token,
                    deadline: None,
                },
            )
            .expect("search");
        out.extend(page.results.iter().map(ToString::to_string));
        if page.next_token.is_empty() {
            break;
        }
        token = Some(page.next_token);
    }
    (t.elapsed().as_secs_f64() * 1e3, out)
}

/// (milliseconds, results) of the loop over every stored user.
fn brute(authz: &Authz, partner: &str) -> (f64, BTreeSet<String>) {
    let pack = authz.evaluator().current();
    let t = Instant::now();
    let principal: cedar_policy::EntityUid = format!("User::\"{partner}\"").parse().expect("uid");
    let action: cedar_policy::EntityUid = "Action::\"dismiss_user\"".parse().expect("uid");
    let ty = "User".parse().expect("type");
    let mut out = BTreeSet::new();
    for r in authz.directory().uids_of_type(&ty) {
        let q = Query::new(principal.clone(), action.clone(), r.clone());
        if authz
            .decide_unlogged(&pack, &q)
            .is_ok_and(|d| d.is_allowed())
        {
            out.insert(r.to_string());
        }
    }
    (t.elapsed().as_secs_f64() * 1e3, out)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

struct Row {
    size: usize,
    account: &'static str,
    results: usize,
    first: Vec<f64>,
    whole: Vec<f64>,
    brute: Vec<f64>,
}

/// One directory, wired, with its searcher.
struct World {
    size: usize,
    _dir: tempfile::TempDir,
    wired: Wired,
    searcher: Searcher,
}

fn world(size: usize) -> World {
    let dir = tempfile::tempdir().expect("tmp");
    let t = Instant::now();
    let wired = wire(dir.path(), size);
    eprintln!(
        "{size} users: imported and loaded in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let searcher = Searcher::new(wired.authz.clone(), TokenKey::random(), Limits::default());
    World {
        size,
        _dir: dir,
        wired,
        searcher,
    }
}

const ACCOUNTS_SEARCHED: [(&str, &str); 2] = [("typical", "p-a000"), ("fixed", "pf")];

/// Every directory loaded at once: each round times every (directory,
/// account) in turn, the order reversed every other round, so that the
/// machine's load falls on all of them alike. The loop runs BRUTE_ROUNDS
/// times per directory for the typical account (its cost does not depend on
/// the account: it evaluates every stored user); the fixed account's loop
/// runs once, as the check.
fn measure(worlds: &[World], rounds: usize, brute_rounds: usize) -> Vec<Row> {
    let mut rows = Vec::new();
    for w in worlds {
        for (account, partner) in ACCOUNTS_SEARCHED {
            // The same answer first (this loop is also the first timing).
            let (_, found) = whole(&w.searcher, &request(partner));
            let (ms, expected) = brute(&w.wired.authz, partner);
            assert_eq!(found, expected, "search and brute force differ ({account})");
            rows.push(Row {
                size: w.size,
                account,
                results: found.len(),
                first: Vec::new(),
                whole: Vec::new(),
                brute: vec![ms],
            });
        }
    }
    let mut order: Vec<usize> = (0..rows.len()).collect();
    for round in 0..rounds {
        order.reverse();
        for &i in &order {
            let w = &worlds[i / ACCOUNTS_SEARCHED.len()];
            let req = request(ACCOUNTS_SEARCHED[i % ACCOUNTS_SEARCHED.len()].1);
            let row = &mut rows[i];
            if round % 2 == 0 {
                row.first.push(first_page(&w.searcher, &req).0);
                row.whole.push(whole(&w.searcher, &req).0);
            } else {
                row.whole.push(whole(&w.searcher, &req).0);
                row.first.push(first_page(&w.searcher, &req).0);
            }
        }
    }
    for _ in 1..brute_rounds {
        for (i, w) in worlds.iter().enumerate() {
            let row = &mut rows[i * ACCOUNTS_SEARCHED.len()];
            row.brute
                .push(brute(&w.wired.authz, ACCOUNTS_SEARCHED[0].1).0);
        }
    }
    rows
}

fn main() {
    let mut args = std::env::args().skip(1);
    let sizes: Vec<usize> = args
        .next()
        .unwrap_or_else(|| "100000,1000000".into())
        .split(',')
        .map(|s| s.trim().parse().expect("a size"))
        .collect();
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(31);
    let brute_rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    let worlds: Vec<World> = sizes.iter().map(|s| world(*s)).collect();
    let mut rows = measure(&worlds, rounds, brute_rounds.max(1));
    println!("resource search: users of an account that a partner may dismiss (medians; {rounds} rounds alternating over every directory and account; brute force: {brute_rounds} run(s) per directory)");
    println!("| users | account | results | first page (50) | whole result | brute force | brute / whole |");
    println!("|---|---|---|---|---|---|---|");
    // The loop's cost is the directory's, whichever account: the typical
    // account's runs stand for both.
    for i in 0..rows.len() {
        let brute = median(&mut rows[i - i % ACCOUNTS_SEARCHED.len()].brute.clone());
        let r = &mut rows[i];
        let (first, whole) = (median(&mut r.first), median(&mut r.whole));
        println!(
            "| {} | {} | {} | {first:.2} ms | {whole:.2} ms | {brute:.1} ms | {:.0}x |",
            r.size,
            r.account,
            r.results,
            brute / whole
        );
    }
    let fixed: Vec<&Row> = rows.iter().filter(|r| r.account == "fixed").collect();
    if let (Some(small), Some(big)) = (fixed.first(), fixed.last()) {
        if big.size != small.size {
            println!(
                "fixed result size ({} results): {} / {} users: first page {:.2}x, whole result {:.2}x",
                big.results,
                big.size,
                small.size,
                median(&mut big.first.clone()) / median(&mut small.first.clone()),
                median(&mut big.whole.clone()) / median(&mut small.whole.clone())
            );
        }
    }
}
