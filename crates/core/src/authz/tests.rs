use super::entities::{entity_datetimes, slice_from};
use super::*;
use crate::audit::DecisionEvent;
use crate::policies::PackSource;
use crate::store::sqlite::SqliteStore;
use cedar_policy::Entities;
use std::path::Path;

fn setup(dir: &Path) -> Authz {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    setup_with(dir, &root.join("policies"))
}

/// An authorizer over the policies in `policies`, the shipped schema and
/// the demo entities stored in `dir`.
fn setup_with(dir: &Path, policies: &Path) -> Authz {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let source = PackSource::new(policies, Some(root.join("schemas/partnergate.cedarschema")));
    let evaluator = Arc::new(Evaluator::load(source).unwrap());
    let store = Arc::new(SqliteStore::open_in(dir).unwrap());
    let directory = Arc::new(Directory::open(store).unwrap());
    let demo: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("demo/entities.json")).unwrap())
            .unwrap();
    directory
        .put_json(evaluator.current().schema.as_ref(), demo)
        .unwrap();
    Authz::new(evaluator, directory)
}

const QUESTIONS: &[(&str, &str, &str)] = &[
    (
        r#"User::"owner""#,
        r#"Action::"dismiss_user""#,
        r#"User::"emma""#,
    ),
    (
        r#"User::"emma""#,
        r#"Action::"dismiss_user""#,
        r#"User::"owner""#,
    ),
    (
        r#"User::"pat""#,
        r#"Action::"view_account""#,
        r#"Account::"acme""#,
    ),
    (
        r#"User::"pat""#,
        r#"Action::"grant_admin""#,
        r#"User::"emma""#,
    ),
    (
        r#"User::"nobody""#,
        r#"Action::"view_account""#,
        r#"Account::"acme""#,
    ),
];

/// A fresh authorizer over the same evaluator and directory (empty cache).
fn fresh(a: &Authz) -> Authz {
    Authz::new(a.evaluator.clone(), a.directory.clone())
}

fn same(a: &Answer, b: &Answer) {
    assert_eq!(a.decision, b.decision);
    assert_eq!(a.entities.uids(), b.entities.uids());
}

#[test]
fn cached_answers_are_the_fresh_answers_reasons_included() {
    let dir = tempfile::tempdir().unwrap();
    let authz = setup(dir.path());
    let mut allows = 0;
    for (p, a, r) in QUESTIONS {
        let q = Query::parse(p, a, r).unwrap();
        let first = authz.is_authorized(&q).unwrap();
        let cached = authz.is_authorized(&q).unwrap();
        let uncached = fresh(&authz).is_authorized(&q).unwrap();
        same(&first, &cached);
        same(&cached, &uncached);
        allows += usize::from(cached.decision.is_allowed());
    }
    assert!(allows > 0 && allows < QUESTIONS.len(), "a mix of answers");
}

#[test]
fn a_directory_write_invalidates_the_cached_entities() {
    let dir = tempfile::tempdir().unwrap();
    let authz = setup(dir.path());
    let q = Query::parse(QUESTIONS[0].0, QUESTIONS[0].1, QUESTIONS[0].2).unwrap();
    assert!(authz.is_authorized(&q).unwrap().decision.is_allowed());
    let schema = authz.evaluator.current().schema.clone();
    authz
        .directory
        .put_json(
            schema.as_ref(),
            serde_json::json!([{"uid": {"type": "User", "id": "owner"},
                "parents": [{"type": "Account", "id": "acme"}],
                "attrs": {"email": "owner@acme.example",
                    "account": {"__entity": {"type": "Account", "id": "acme"}},
                    "is_admin": true, "status": "dismissed", "two_factor": true}}]),
        )
        .unwrap();
    let after = authz.is_authorized(&q).unwrap();
    assert!(!after.decision.is_allowed(), "{:?}", after.decision);
    same(&after, &fresh(&authz).is_authorized(&q).unwrap());
    // And a delete: the principal is then unknown.
    let owner = engine::parse_uid("p", QUESTIONS[0].0).unwrap();
    authz.directory.delete(&[owner]).unwrap();
    let gone = authz.is_authorized(&q).unwrap();
    assert!(gone.decision.errors[0].contains("unknown principal"));
}

/// The policy index evaluates a subset of the policies: for every action
/// of the schema and every principal/resource pair of the demo entities,
/// the answer — decision, reasons and errors — is the one the whole set gives.
#[test]
fn the_action_index_answers_exactly_like_the_whole_policy_set() {
    let dir = tempfile::tempdir().unwrap();
    let authz = setup(dir.path());
    let pack = authz.evaluator.current();
    let schema = pack.schema.as_ref().unwrap();
    let users = ["owner", "emma", "pat", "nobody"];
    let invitee = serde_json::json!({"invitee": {
        "company": {"__entity": {"type": "PartnerCompany", "id": "goldco"}},
        "status": "gold", "certified": true}});
    let (mut compared, mut allows, mut smaller) = (0, 0, 0);
    for action in schema.actions() {
        for p in users {
            for r in [
                "Account::\"acme\"",
                "User::\"owner\"",
                "User::\"emma\"",
                "User::\"pat\"",
            ] {
                let mut q =
                    Query::parse(&format!("User::\"{p}\""), &action.to_string(), r).unwrap();
                let context = action
                    .id()
                    .unescaped()
                    .contains("partner")
                    .then(|| invitee.clone());
                q.context = context.clone();
                let Ok(request) = engine::build_request(
                    Some(schema),
                    q.principal.clone(),
                    q.action.clone(),
                    q.resource.clone(),
                    context,
                ) else {
                    continue; // not a valid request for this action
                };
                let slice = authz
                    .directory
                    .slice(&[&q.principal, &q.resource], &HashMap::new())
                    .unwrap();
                let entities =
                    directory::entities_for(slice, pack.action_entities(&q.action)).unwrap();
                let whole = engine::decide_with(
                    &pack.policy_set,
                    &pack,
                    &request,
                    &entities,
                    Semantics::FailClosed,
                );
                let subset = pack.policy_index().candidates(&request, &entities);
                if subset.policies().count() < pack.policy_set.policies().count() {
                    smaller += 1;
                }
                let ours = authz.is_authorized(&q).unwrap().decision;
                assert_eq!(ours, whole, "{p} {action} {r}");
                compared += 1;
                allows += usize::from(whole.is_allowed());
            }
        }
    }
    assert!(
        compared > 50 && allows > 5,
        "compared {compared}, allows {allows}"
    );
    assert!(smaller > 0, "the index must actually leave policies out");
}

/// A store left by a version before the `refs` column (the same rows,
/// without references) is migrated on open and gives every question
/// the decision, reasons and entities the current layout gives.
#[test]
fn a_store_in_the_layout_before_refs_decides_the_same() {
    let (new_dir, old_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let current = setup(new_dir.path());
    let rows = current.directory.backend().load_all().unwrap();
    assert_eq!(rows.len(), 5);
    crate::store::sqlite::create_before_refs(&old_dir.path().join("store.db"), &rows);
    let store = Arc::new(SqliteStore::open_in(old_dir.path()).unwrap());
    let migrated = Authz::new(
        current.evaluator.clone(),
        Arc::new(Directory::open(store).unwrap()),
    );
    let pack = current.evaluator.current();
    let schema = pack.schema.as_ref().unwrap();
    let invitee = serde_json::json!({"invitee": {
        "company": {"__entity": {"type": "PartnerCompany", "id": "goldco"}},
        "status": "gold", "certified": true}});
    // The slice as the decision log records it, entity by entity.
    let logged = |a: &Answer| {
        let json = a.entities.slice().json().into_owned();
        let mut v: Vec<String> = json
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| e.to_string())
            .collect();
        v.sort();
        v
    };
    let (mut compared, mut allows) = (0, 0);
    for action in schema.actions() {
        for p in ["owner", "emma", "pat", "nobody"] {
            for r in [r#"Account::"acme""#, r#"User::"owner""#, r#"User::"emma""#] {
                let mut q =
                    Query::parse(&format!("User::\"{p}\""), &action.to_string(), r).unwrap();
                q.context = action
                    .id()
                    .unescaped()
                    .contains("partner")
                    .then(|| invitee.clone());
                let (Ok(a), Ok(b)) = (current.is_authorized(&q), migrated.is_authorized(&q)) else {
                    continue; // not a valid request for this action
                };
                same(&a, &b);
                assert_eq!(logged(&a), logged(&b), "{p} {action} {r}");
                compared += 1;
                allows += usize::from(a.decision.is_allowed());
            }
        }
    }
    assert!(
        compared > 30 && allows > 3,
        "compared {compared}, allows {allows}"
    );
}

/// A small seeded generator (xorshift), so a failing interleaving can be replayed.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

fn user(id: &str, admin: bool, status: &str, partner: Option<bool>) -> serde_json::Value {
    let mut attrs = serde_json::json!({"email": format!("{id}@acme.example"),
        "account": {"__entity": {"type": "Account", "id": "acme"}},
        "is_admin": admin, "status": status, "two_factor": true});
    if let Some(verified) = partner {
        attrs["partner"] = serde_json::json!({"verified": verified,
            "scopes": ["users", "settings", "integrations", "billing"],
            "company": {"__entity": {"type": "PartnerCompany", "id": "goldco"}}});
    }
    serde_json::json!({"uid": {"type": "User", "id": id},
        "parents": [{"type": "Account", "id": "acme"}], "attrs": attrs})
}

fn company(status: &str, certified: bool) -> serde_json::Value {
    serde_json::json!({"uid": {"type": "PartnerCompany", "id": "goldco"},
        "attrs": {"name": "GoldCo", "status": status, "certified": certified}, "parents": []})
}

/// Every question over the demo's users and resources, for every action
/// of the schema (with an invitee context for the partner actions).
fn all_questions(authz: &Authz) -> Vec<Query> {
    let pack = authz.evaluator.current();
    let schema = pack.schema.as_ref().unwrap();
    let invitee = serde_json::json!({"invitee": {
        "company": {"__entity": {"type": "PartnerCompany", "id": "goldco"}},
        "status": "gold", "certified": true}});
    let mut out = Vec::new();
    for action in schema.actions() {
        for p in ["owner", "emma", "pat", "nobody"] {
            for r in [
                r#"Account::"acme""#,
                r#"User::"owner""#,
                r#"User::"emma""#,
                r#"User::"pat""#,
                r#"User::"nobody""#,
            ] {
                let mut q =
                    Query::parse(&format!("User::\"{p}\""), &action.to_string(), r).unwrap();
                if action.id().unescaped().contains("partner") {
                    q.context = Some(invitee.clone());
                }
                let checked = engine::build_request(
                    Some(schema),
                    q.principal.clone(),
                    q.action.clone(),
                    q.resource.clone(),
                    q.context.clone(),
                );
                if checked.is_ok() {
                    out.push(q);
                }
            }
        }
    }
    out
}

/// The answer of a fresh evaluation: a new slice walk and Cedar over
/// the whole policy set, no cache of any kind.
fn fresh_decision(authz: &Authz, q: &Query) -> Decision {
    let pack = authz.evaluator.current();
    let request = q.request(pack.schema.as_ref()).unwrap();
    let slice = authz
        .directory
        .slice(&[&q.principal, &q.resource], &HashMap::new())
        .unwrap();
    let entities = directory::entities_for(slice, pack.action_entities(&q.action)).unwrap();
    engine::decide_with(
        &pack.policy_set,
        &pack,
        &request,
        &entities,
        Semantics::FailClosed,
    )
}

/// Random writes (to principals, resources, the ancestor account, the
/// referenced company, entities no question reads; creations and
/// deletions) interleaved with random questions: with the decision cache
/// on, every answer — decision, reasons, errors — is a fresh evaluation's.
#[test]
fn the_decision_cache_answers_like_a_fresh_evaluation_under_random_writes() {
    let dir = tempfile::tempdir().unwrap();
    let authz = setup(dir.path()).with_decision_cache(10_000);
    let schema = authz.evaluator.current().schema.clone();
    let questions = all_questions(&authz);
    let writes = [
        user("owner", true, "active", None),
        user("owner", true, "dismissed", None),
        user("emma", false, "active", None),
        user("emma", true, "active", None),
        user("pat", false, "active", Some(true)),
        user("pat", false, "active", Some(false)),
        user("pat", true, "active", Some(true)),
        user("nobody", false, "active", None),
        company("gold", true),
        company("gold", false),
        company("silver", true),
        serde_json::json!({"uid": {"type": "Account", "id": "acme"}, "attrs": {"name": "Acme"}, "parents": []}),
        serde_json::json!({"uid": {"type": "Account", "id": "elsewhere"}, "attrs": {"name": "E"}, "parents": []}),
    ];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut allows, mut denies) = (0, 0);
    for _ in 0..400 {
        match rng.below(10) {
            0..=5 => {
                let w = writes[rng.below(writes.len())].clone();
                authz
                    .directory
                    .put_json(schema.as_ref(), serde_json::json!([w]))
                    .unwrap();
            }
            6 => {
                let id = ["emma", "nobody", "pat"][rng.below(3)];
                let uid = engine::parse_uid("u", &format!("User::\"{id}\"")).unwrap();
                authz.directory.delete(&[uid]).unwrap();
            }
            _ => {}
        }
        for _ in 0..12 {
            let q = &questions[rng.below(questions.len())];
            let ours = authz.is_authorized(q).unwrap().decision;
            assert_eq!(ours, fresh_decision(&authz, q), "{q:?}");
            if ours.is_allowed() {
                allows += 1;
            } else {
                denies += 1;
            }
        }
    }
    let cache = authz.decision_cache().unwrap();
    assert!(
        allows > 100 && denies > 100,
        "{allows} allows, {denies} denies"
    );
    assert!(
        cache.hits() > 500 && cache.misses() > 500,
        "both paths taken: {cache:?}"
    );
}

/// A write to one entity — a principal, the account every user is in
/// (an ancestor), or the partner company a partner's record references —
/// makes exactly the kept decisions whose slice read it miss; every
/// other one is still served from the cache.
#[test]
fn a_write_deep_in_a_slice_invalidates_exactly_the_decisions_that_read_it() {
    let dir = tempfile::tempdir().unwrap();
    let authz = setup(dir.path()).with_decision_cache(10_000);
    let schema = authz.evaluator.current().schema.clone();
    let questions = all_questions(&authz);
    let cache = authz.decision_cache().unwrap().clone();
    for (target, write) in [
        (r#"PartnerCompany::"goldco""#, company("gold", true)),
        (
            r#"Account::"acme""#,
            serde_json::json!({"uid": {"type": "Account", "id": "acme"}, "attrs": {"name": "Acme"}, "parents": []}),
        ),
        (r#"User::"emma""#, user("emma", false, "active", None)),
    ] {
        // Fill the cache, and note which decisions read the target.
        let read: Vec<bool> = questions
            .iter()
            .map(|q| {
                let a = authz.is_authorized(q).unwrap();
                a.entities
                    .deps()
                    .iter()
                    .any(|(u, _)| u.to_string() == target)
            })
            .collect();
        authz
            .directory
            .put_json(schema.as_ref(), serde_json::json!([write]))
            .unwrap();
        let (mut missed, mut kept) = (0, 0);
        for (q, read) in questions.iter().zip(read) {
            let hits = cache.hits();
            let ours = authz.is_authorized(q).unwrap().decision;
            let hit = cache.hits() > hits;
            assert_eq!(hit, !read, "{target}: {q:?} read it: {read}, served: {hit}");
            assert_eq!(ours, fresh_decision(&authz, q));
            if hit {
                kept += 1;
            } else {
                missed += 1;
            }
        }
        assert!(
            missed > 0 && kept > 0,
            "{target}: {missed} missed, {kept} kept"
        );
    }
}

/// A question that brings request entities or properties is never
/// answered from the cache nor kept in it.
#[test]
fn questions_with_request_entities_bypass_the_decision_cache() {
    let dir = tempfile::tempdir().unwrap();
    let authz = setup(dir.path()).with_decision_cache(100);
    let cache = authz.decision_cache().unwrap().clone();
    let q = Query::parse(QUESTIONS[2].0, QUESTIONS[2].1, QUESTIONS[2].2).unwrap();
    authz.is_authorized(&q).unwrap();
    assert!(authz.is_authorized(&q).unwrap().decision.is_allowed());
    assert_eq!((cache.hits(), cache.len()), (1, 1));
    let extra = serde_json::json!([{"uid": {"type": "Account", "id": "other"},
        "attrs": {"name": "Other"}, "parents": []}]);
    let with = q.clone().with_entities(Some(extra));
    let mut attrs = serde_json::Map::new();
    attrs.insert("nickname".into(), serde_json::json!("p"));
    let with_props = q.clone().with_attrs(Some(attrs), None);
    for q in [&with, &with_props] {
        let _ = authz.is_authorized(q);
    }
    assert_eq!((cache.hits(), cache.misses(), cache.len()), (1, 1, 1));
    // An empty entity array is no request data: cached as usual.
    authz
        .is_authorized(&q.clone().with_entities(Some(serde_json::json!([]))))
        .unwrap();
    assert_eq!(cache.hits(), 2);
}

/// A reload that changes the pack serves the new pack's answer, not the
/// one kept under the old version.
#[test]
fn a_reload_is_never_answered_from_the_old_packs_decisions() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    for f in std::fs::read_dir(root.join("policies")).unwrap() {
        let f = f.unwrap().path();
        if f.extension().is_some_and(|e| e == "cedar") {
            std::fs::copy(&f, policies.join(f.file_name().unwrap())).unwrap();
        }
    }
    let authz = setup_with(dir.path(), &policies).with_decision_cache(100);
    let evaluator = authz.evaluator().clone();
    let q = Query::parse(QUESTIONS[2].0, QUESTIONS[2].1, QUESTIONS[2].2).unwrap();
    let before = authz.is_authorized(&q).unwrap();
    assert!(authz.is_authorized(&q).unwrap().decision.is_allowed());
    std::fs::write(
        policies.join("99-deny.cedar"),
        "@id(\"deny-all\")\nforbid (principal, action, resource);\n",
    )
    .unwrap();
    evaluator.reload().unwrap();
    let after = authz.is_authorized(&q).unwrap();
    assert!(!after.decision.is_allowed(), "{:?}", after.decision);
    assert_ne!(
        after.decision.policy_version,
        before.decision.policy_version
    );
    assert_eq!(after.decision, fresh_decision(&authz, &q));
}

#[test]
fn a_slice_that_fails_to_serialise_is_marked_unavailable_not_null() {
    let failed = slice_from::<&str>(Err("an attribute Cedar cannot write"));
    assert_eq!(failed.error(), Some("an attribute Cedar cannot write"));
    assert_eq!(*failed.json(), serde_json::Value::Null);
    let ok = slice_from::<&str>(Ok(serde_json::json!([])));
    assert_eq!(ok.error(), None);
    assert_eq!(*ok.json(), serde_json::json!([]));

    // The record says so, and still verifies.
    let decision = engine::Decision {
        decision: engine::Effect::Deny,
        reasons: vec![],
        errors: vec![],
        policy_version: "v".into(),
    };
    let event = DecisionEvent::new(
        "User::\"a\"",
        "Action::\"b\"",
        "Account::\"c\"",
        failed,
        decision,
    );
    let mut enc = crate::audit::record::RecordEncoder::default();
    let link = crate::audit::record::Link {
        seq: 1,
        prev_hash: crate::audit::record::GENESIS_HASH,
    };
    let hash = crate::audit::record::encode_event(
        &mut enc,
        &event.into(),
        "2026-01-01T00:00:00Z",
        None,
        link,
        None,
    )
    .to_string();
    let rec: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(enc.line()).unwrap();
    assert_eq!(
        rec["entities_error"],
        serde_json::json!("an attribute Cedar cannot write")
    );
    assert_eq!(rec["entities"], serde_json::Value::Null);
    assert_eq!(crate::audit::record::compute_hash(&rec), hash);
}

fn timed_pat(end: Option<i64>) -> serde_json::Value {
    let mut pat = user("pat", false, "active", Some(true));
    if let Some(end) = end {
        pat["attrs"]["partner"]["expires_at"] = crate::clock::datetime_json(end).unwrap();
    }
    pat
}

/// A request never picks "now": a context that sets it is refused
/// naming the field, whatever the action, and nothing is decided.
#[test]
fn a_caller_supplied_now_is_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let authz = setup(dir.path());
    for action in ["view_account", "configure_account"] {
        let q = Query::parse(
            r#"User::"pat""#,
            &format!("Action::\"{action}\""),
            r#"Account::"acme""#,
        )
        .unwrap()
        .with_context(Some(
            serde_json::json!({"now": {"__extn": {"fn": "datetime", "arg": "2000-01-01"}}}),
        ));
        match authz.is_authorized(&q) {
            Err(RequestError::Field { field, .. }) => assert_eq!(field, "context.now"),
            other => panic!("{action}: expected a refusal of context.now, got {other:?}"),
        }
    }
}

/// The decision path supplies `context.now` from its clock: a partner
/// with an end is allowed before it and denied at it, and the answer's
/// decision is taken at the clock's reading.
#[test]
fn the_sidecar_clock_decides_at_and_around_a_partners_end() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(crate::clock::ManualClock::at(1_798_761_600_000 - 1));
    let authz = setup(dir.path()).with_clock(clock.clone());
    let end = 1_798_761_600_000; // 2027-01-01T00:00:00Z
    let schema = authz.evaluator.current().schema.clone();
    authz
        .directory
        .put_json(schema.as_ref(), serde_json::json!([timed_pat(Some(end))]))
        .unwrap();
    let q = Query::parse(
        r#"User::"pat""#,
        r#"Action::"configure_account""#,
        r#"Account::"acme""#,
    )
    .unwrap();
    assert!(
        authz.is_authorized(&q).unwrap().decision.is_allowed(),
        "1 ms before the end"
    );
    clock.set(end);
    let at_end = authz.is_authorized(&q).unwrap();
    assert!(!at_end.decision.is_allowed(), "at the end");
    assert!(
        at_end
            .decision
            .reasons
            .iter()
            .any(|r| r.id == "partner-access-ended"),
        "{:?}",
        at_end.decision.reasons
    );
}

/// Random clock moves around a partner's end (before, at, just after,
/// far after, and back) and random writes of the end, with the
/// decision cache on: every answer is a fresh evaluation's at the same
/// instant — a kept Allow never outlives the end it was compared with —
/// and questions do hit the cache between the breakpoints.
#[test]
fn a_cached_decision_never_outlives_a_partners_end() {
    let dir = tempfile::tempdir().unwrap();
    let end = 1_798_761_600_000;
    let clock = Arc::new(crate::clock::ManualClock::at(end - 10));
    let authz = setup(dir.path())
        .with_decision_cache(1_000)
        .with_clock(clock.clone());
    let schema = authz.evaluator.current().schema.clone();
    let pack = authz.evaluator.current();
    let questions = all_questions(&authz);
    let ends = [Some(end), Some(end + 5), Some(end - 1_000), None];
    let times = [
        end - 10,
        end - 1,
        end,
        end + 1,
        end + 4,
        end + 5,
        end + 6,
        end + 86_400_000,
    ];
    let mut rng = Rng(0x51f1_5eed);
    let (mut allows, mut denies) = (0, 0);
    for _ in 0..600 {
        match rng.below(8) {
            0 => {
                let w = timed_pat(ends[rng.below(ends.len())]);
                authz
                    .directory
                    .put_json(schema.as_ref(), serde_json::json!([w]))
                    .unwrap();
            }
            1..=3 => clock.set(times[rng.below(times.len())]),
            _ => {}
        }
        let q = &questions[rng.below(questions.len())];
        let answer = authz.is_authorized(q).unwrap();
        let clocked = if pack.takes_clock(&q.action) {
            with_now(q, clock.now_ms()).unwrap()
        } else {
            q.clone()
        };
        let fresh = fresh_decision(&authz, &clocked);
        assert_eq!(
            answer.decision.decision,
            fresh.decision,
            "{q:?} at {}",
            clock.now_ms()
        );
        assert_eq!(
            answer.decision.reasons,
            fresh.reasons,
            "{q:?} at {}",
            clock.now_ms()
        );
        if answer.decision.is_allowed() {
            allows += 1;
        } else {
            denies += 1;
        }
    }
    let cache = authz.decision_cache().unwrap();
    assert!(
        allows > 20 && denies > 20,
        "{allows} allows, {denies} denies"
    );
    assert!(
        cache.hits() > 50,
        "the cache served clocked questions: {cache:?}"
    );
}

/// The interval a clocked decision holds over ends at the partner's
/// end as Cedar writes it back (so the datetime is read, not skipped).
#[test]
fn a_clocked_decision_holds_until_the_partners_end_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let end = 1_798_761_600_000;
    let authz = setup(dir.path());
    let schema = authz.evaluator.current().schema.clone();
    authz
        .directory
        .put_json(schema.as_ref(), serde_json::json!([timed_pat(Some(end))]))
        .unwrap();
    let pack = authz.evaluator.current();
    let q = Query::parse(
        r#"User::"pat""#,
        r#"Action::"configure_account""#,
        r#"Account::"acme""#,
    )
    .unwrap();
    let entities = authz.cached_entities(&pack, &q).unwrap();
    assert_eq!(holds_until(&pack, &q, end - 10, &entities, None), Some(end));
    assert_eq!(
        holds_until(&pack, &q, end, &entities, None),
        Some(end),
        "empty at the end itself"
    );
    assert_eq!(
        holds_until(&pack, &q, end + 1, &entities, None),
        None,
        "after it: no later breakpoint"
    );
    let later = serde_json::json!({"x": "2027-01-01T00:00:00.500Z"});
    assert_eq!(
        holds_until(&pack, &q, end + 1, &entities, Some(&later)),
        Some(end + 500)
    );
}

/// A set built from the directory keeps its stored JSON for the log
/// slice and its datetimes: both must read as what serialising the Cedar
/// entities gives (the path every other set takes). Over every question
/// of the demo directory, with a partner whose access ends and a note
/// that reads as a date.
#[test]
fn the_stored_json_gives_the_slice_and_datetimes_the_cedar_entities_give() {
    let dir = tempfile::tempdir().unwrap();
    let authz = setup(dir.path());
    let pack = authz.evaluator.current();
    let mut pat = timed_pat(Some(1_798_761_600_000));
    pat["attrs"]["email"] = serde_json::json!("2027-02-03@example.com");
    authz
        .directory
        .put_json(pack.schema.as_ref(), serde_json::json!([pat]))
        .unwrap();
    let as_entities = |json: &serde_json::Value| {
        let set = Entities::from_json_value(json.clone(), None).unwrap();
        let mut v: Vec<(String, Entity)> = set
            .iter()
            .map(|e| (e.uid().to_string(), e.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    let mut with_datetimes = 0;
    for q in all_questions(&authz) {
        let set = authz.cached_entities(&pack, &q).unwrap();
        assert!(set.stored_texts.is_some(), "{q:?}");
        let serialised = log_slice(&set.entities);
        assert_eq!(
            as_entities(&set.slice().json()),
            as_entities(&serialised.json()),
            "{q:?}"
        );
        let (mut stored, mut walked) = (Vec::new(), Vec::new());
        entity_datetimes(&pack, &q, &set, &mut stored).unwrap();
        crate::clock::datetimes_in(&serialised.json(), &mut walked).unwrap();
        stored.sort_unstable();
        walked.sort_unstable();
        assert_eq!(stored, walked, "{q:?}");
        with_datetimes += usize::from(!stored.is_empty());
    }
    assert!(with_datetimes > 0, "no question read pat's end");
}

/// A hit is logged with the clock it was answered at (its own
/// `context.now`, not the miss's), and its answer is the cache's.
#[test]
fn a_hit_is_logged_with_the_clock_it_was_answered_at() {
    let dir = tempfile::tempdir().unwrap();
    let t = 1_798_761_600_000;
    let clock = Arc::new(crate::clock::ManualClock::at(t));
    let log_path = dir.path().join("decisions.log");
    let (log, _) = AuditLog::open(crate::audit::AuditConfig::file(&log_path)).unwrap();
    let authz = setup(dir.path())
        .with_decision_cache(100)
        .with_clock(clock.clone())
        .with_audit(log);
    let q = Query::parse(
        r#"User::"pat""#,
        r#"Action::"configure_account""#,
        r#"Account::"acme""#,
    )
    .unwrap();
    assert!(authz.evaluator.current().takes_clock(&q.action));
    let fresh = authz.is_authorized(&q).unwrap();
    clock.set(t + 1_234);
    let hit = authz.is_authorized(&q).unwrap();
    assert!(
        !fresh.entities.is_light() && hit.entities.is_light(),
        "a miss, then a hit"
    );
    assert!(authz.audit().unwrap().flush());
    let nows: Vec<serde_json::Value> = std::fs::read_to_string(&log_path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["kind"] == "decision")
        .map(|r| r["context"].clone())
        .collect();
    let at = |ms| serde_json::json!({"now": crate::clock::datetime_json(ms).unwrap()});
    assert_eq!(nows, vec![at(t), at(t + 1_234)]);
}

/// The decision cache keeps a copy without Cedar entities: a hit logs
/// the same slice as the fresh decision, and the shadow set still
/// decides it (over entities built again) and disagrees as it did.
#[test]
fn a_hit_logs_the_fresh_slice_and_is_still_shadowed() {
    let dir = tempfile::tempdir().unwrap();
    let shadow_dir = tempfile::tempdir().unwrap();
    std::fs::write(
        shadow_dir.path().join("all.cedar"),
        "@id(\"nothing\")\nforbid(principal, action, resource);\n",
    )
    .unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let candidate = Arc::new(
        Evaluator::load(PackSource::new(
            shadow_dir.path(),
            Some(root.join("schemas/partnergate.cedarschema")),
        ))
        .unwrap(),
    );
    let authz = setup(dir.path())
        .with_decision_cache(100)
        .with_shadow(candidate);
    let pack = authz.evaluator.current();
    let (p, a, r) = QUESTIONS[0];
    let q = Query::parse(p, a, r).unwrap();
    let fresh = authz.is_authorized(&q).unwrap();
    let hit = authz.is_authorized(&q).unwrap();
    assert_eq!(fresh.decision.decision, engine::Effect::Allow, "{q:?}");
    assert!(!fresh.entities.is_light());
    assert!(hit.entities.is_light(), "the second answer is the cache's");
    assert_eq!(hit.entities.entities.iter().count(), 0);
    assert_eq!(fresh.entities.slice().json(), hit.entities.slice().json());
    assert!(fresh
        .entities
        .slice()
        .json()
        .as_array()
        .is_some_and(|a| !a.is_empty()));
    for answer in [&fresh, &hit] {
        let shadow = authz.shadow_disagreement(&pack, &q, answer);
        assert!(shadow.is_some(), "the candidate forbids everything");
    }
}
