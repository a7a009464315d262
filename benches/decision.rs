//! In-process decision benchmarks (issue 6 §1 and §4, issue 3 acceptance).
//!
//! 1. A decision through [`Authz::is_authorized`] on the shipped pack vs a
//!    direct `cedar_policy::Authorizer::is_authorized` with the same request
//!    and the same entities (the slice PartnerGate builds). Target ≤ 1.15×.
//! 2. The same PartnerGate decision with 1,000 vs 1,000,000 users in the
//!    directory. Target ≤ 1.2×.
//!
//! Criterion reports each benchmark; at the end the ratios are measured again
//! by interleaving the two sides in alternating batches (robust to the noise of
//! a shared machine) and printed as `RATIO name value target`, a line format
//! that `scripts/bench.sh` picks up.
//!
//! `PARTNERGATE_BENCH_USERS` overrides the large directory size (default
//! 1,000,000), e.g. for a quick run.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cedar_policy::{Authorizer, Entities, Entity, Request};
use criterion::Criterion;
use partnergate::authz::{Authz, Query};
use partnergate::directory::{self, Directory};
use partnergate::engine;
use partnergate::policies::{PackSource, PolicyPack};
use partnergate::runtime::Runtime;
use serde_json::json;

const SMALL: usize = 1_000;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The shipped pack over SQLite under `dir`, wired by the [`Runtime`] (no
/// decision log), its directory filled by [`fill`].
fn authz(dir: &Path, users: usize) -> Authz {
    let r = root();
    let source = PackSource::new(
        r.join("policies"),
        Some(r.join("schemas/partnergate.cedarschema")),
    );
    let wired = Runtime::new(source)
        .sqlite_in(dir)
        .build()
        .expect("the shipped pack and the store open");
    fill(
        wired.authz.directory(),
        users,
        &wired.authz.evaluator().current(),
    );
    wired.authz
}

/// The demo entities plus `users` generated users (100 per account) and
/// their accounts, put through `Directory::put` into the directory's store.
fn fill(directory: &Directory, users: usize, pack: &PolicyPack) {
    let schema = pack.schema.as_ref();
    let demo: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("demo/entities.json")).expect("demo entities"),
    )
    .expect("demo entities are JSON");
    directory
        .put_json(schema, demo)
        .expect("demo entities load");
    let started = Instant::now();
    const CHUNK: usize = 50_000;
    let accounts = users.div_ceil(100);
    let mut batch = Vec::with_capacity(CHUNK);
    for a in 0..accounts {
        batch.push(json!({"uid": {"type": "Account", "id": format!("a{a}")},
            "attrs": {"name": format!("Account {a}")}, "parents": []}));
    }
    for i in 0..users {
        let acct = json!({"type": "Account", "id": format!("a{}", i / 100)});
        batch.push(json!({
            "uid": {"type": "User", "id": format!("u{i}")},
            "parents": [acct.clone()],
            "attrs": {"email": format!("u{i}@example.com"), "account": {"__entity": acct},
                "is_admin": i % 100 == 0, "status": "active", "two_factor": i % 2 == 0}
        }));
        if batch.len() >= CHUNK || i + 1 == users {
            let json = serde_json::Value::Array(std::mem::take(&mut batch));
            let entities = Directory::parse(schema, json).expect("generated entities are valid");
            directory.put(entities).expect("generated entities store");
            if users >= 100_000 && (i + 1) % 100_000 == 0 {
                eprintln!(
                    "  directory: {} / {users} users ({:.1}s)",
                    i + 1,
                    started.elapsed().as_secs_f64()
                );
            }
        }
    }
    eprintln!(
        "directory with {users} users: {} entities in {:.1}s",
        directory.len(),
        started.elapsed().as_secs_f64()
    );
}

/// The question: may the account owner dismiss a member of the account?
/// It reads attributes of both users and their account (a typical slice).
fn query() -> Query {
    Query::parse(
        r#"User::"owner""#,
        r#"Action::"dismiss_user""#,
        r#"User::"emma""#,
    )
    .expect("query parses")
}

/// What a direct Cedar caller holds: the same request and entities.
fn direct_inputs(authz: &Authz, q: &Query) -> (Request, Entities) {
    let pack = authz.evaluator().current();
    let request = engine::build_request(
        pack.schema.as_ref(),
        q.principal.clone(),
        q.action.clone(),
        q.resource.clone(),
        q.context.clone(),
    )
    .expect("request builds");
    let slice: Vec<Entity> = authz
        .directory()
        .slice(&[&q.principal, &q.resource], &Default::default())
        .expect("stored entities read");
    let entities =
        directory::entities_for(slice, pack.action_entities(&q.action)).expect("entities build");
    (request, entities)
}

/// Median time per call of `a` and of `b`, measured in alternating batches.
fn interleaved(mut a: impl FnMut(), mut b: impl FnMut(), rounds: usize) -> (f64, f64) {
    const BATCH: usize = 2_000;
    let mut ta = Vec::with_capacity(rounds);
    let mut tb = Vec::with_capacity(rounds);
    let deadline = Instant::now() + Duration::from_secs(30);
    for _ in 0..rounds {
        let t = Instant::now();
        for _ in 0..BATCH {
            a();
        }
        ta.push(t.elapsed().as_secs_f64() / BATCH as f64);
        let t = Instant::now();
        for _ in 0..BATCH {
            b();
        }
        tb.push(t.elapsed().as_secs_f64() / BATCH as f64);
        if Instant::now() > deadline {
            break;
        }
    }
    (median(&mut ta), median(&mut tb))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|x, y| x.total_cmp(y));
    v[v.len() / 2]
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let large: usize = std::env::var("PARTNERGATE_BENCH_USERS")
        .ok()
        .and_then(|s| s.replace('_', "").parse().ok())
        .unwrap_or(1_000_000);

    let small_dir = tempfile::tempdir().expect("tempdir");
    let small = authz(small_dir.path(), SMALL);
    let q = query();

    // 1. PartnerGate vs Cedar directly — same answer first.
    let (request, entities) = direct_inputs(&small, &q);
    let pack = small.evaluator().current();
    let authorizer = Authorizer::new();
    let direct = authorizer.is_authorized(&request, &pack.policy_set, &entities);
    let ours = small.is_authorized(&q).expect("decides");
    let direct_allow = direct.decision() == cedar_policy::Decision::Allow;
    assert_eq!(
        direct_allow,
        ours.decision.is_allowed(),
        "PartnerGate and Cedar disagree"
    );
    let mut direct_reasons: Vec<String> = direct
        .diagnostics()
        .reason()
        .map(|p| p.to_string())
        .collect();
    direct_reasons.sort();
    let our_reasons: Vec<String> = ours.decision.reasons.iter().map(|r| r.id.clone()).collect();
    assert_eq!(direct_reasons, our_reasons, "reasons differ");
    eprintln!(
        "decision: {} by {:?} (both agree; slice of {} entities)",
        ours.decision.decision,
        our_reasons,
        ours.entities.uids().len()
    );

    let mut g = c.benchmark_group("in_process");
    g.bench_function("cedar_authorizer_direct", |b| {
        b.iter(|| black_box(authorizer.is_authorized(&request, &pack.policy_set, &entities)));
    });
    g.bench_function("partnergate_is_authorized", |b| {
        b.iter(|| black_box(small.is_authorized(black_box(&q))));
    });
    // Without PartnerGate's entity-set cache (a new Authz each time): the
    // cost of a question not asked since the last directory write.
    g.bench_function("partnergate_is_authorized_cold", |b| {
        b.iter(|| {
            let cold = Authz::new(small.evaluator().clone(), small.directory().clone());
            black_box(cold.is_authorized(black_box(&q)))
        });
    });
    // What a direct Cedar caller pays per question when it builds the
    // request (schema-checked) and the entities from the same slice itself.
    let slice = small
        .directory()
        .slice(&[&q.principal, &q.resource], &Default::default())
        .expect("stored entities read");
    g.bench_function("cedar_build_and_authorize", |b| {
        b.iter(|| {
            let request = engine::build_request(
                pack.schema.as_ref(),
                q.principal.clone(),
                q.action.clone(),
                q.resource.clone(),
                None,
            )
            .expect("request builds");
            let entities = directory::entities_for(slice.clone(), pack.action_entities(&q.action))
                .expect("entities build");
            black_box(authorizer.is_authorized(&request, &pack.policy_set, &entities))
        });
    });
    g.finish();

    // 2. Directory size.
    let large_dir = tempfile::tempdir().expect("tempdir");
    let big = authz(large_dir.path(), large);
    let big_answer = big.is_authorized(&q).expect("decides");
    assert_eq!(
        big_answer.decision.decision, ours.decision.decision,
        "the directory size changed the answer"
    );
    let mut g = c.benchmark_group("directory_size");
    g.bench_function(format!("users_{SMALL}"), |b| {
        b.iter(|| black_box(small.is_authorized(black_box(&q))));
    });
    g.bench_function(format!("users_{large}"), |b| {
        b.iter(|| black_box(big.is_authorized(black_box(&q))));
    });
    g.finish();

    c.final_summary();

    // Ratios, interleaved in the same run.
    let (pg, cedar) = interleaved(
        || {
            black_box(small.is_authorized(black_box(&q)).ok());
        },
        || {
            black_box(authorizer.is_authorized(&request, &pack.policy_set, &entities));
        },
        100,
    );
    println!(
        "RATIO in_process_vs_cedar {:.3} target<=1.15 (partnergate {:.2}us, cedar {:.2}us)",
        pg / cedar,
        pg * 1e6,
        cedar * 1e6
    );
    let (cold, cedar) = interleaved(
        || {
            let cold = Authz::new(small.evaluator().clone(), small.directory().clone());
            black_box(cold.is_authorized(black_box(&q)).ok());
        },
        || {
            black_box(authorizer.is_authorized(&request, &pack.policy_set, &entities));
        },
        100,
    );
    println!(
        "INFO in_process_cold_vs_cedar {:.3} (partnergate without the entity-set cache {:.2}us, cedar {:.2}us)",
        cold / cedar,
        cold * 1e6,
        cedar * 1e6
    );
    let (t_big, t_small) = interleaved(
        || {
            black_box(big.is_authorized(black_box(&q)).ok());
        },
        || {
            black_box(small.is_authorized(black_box(&q)).ok());
        },
        100,
    );
    println!(
        "RATIO users_{large}_vs_{SMALL} {:.3} target<=1.2 ({large} users {:.2}us, {SMALL} users {:.2}us)",
        t_big / t_small,
        t_big * 1e6,
        t_small * 1e6
    );
}
