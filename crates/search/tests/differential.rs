//! Differential tests: every search equals the brute-force loop that asks
//! the evaluation path (`Authz::is_authorized`, what `/access/v1/evaluation`
//! calls) about every stored candidate, for every action, over generated
//! directories (seeded, so a failure names its seed), on the shipped pack and
//! on a generic pack (hierarchies, attribute paths across entities,
//! disjunctions, conditions no index answers). Pagination with every limit
//! returns the same set, in order, without duplicates.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cedar_policy::{EntityTypeName, EntityUid};
use partnergate_core::authz::{Authz, Query};
use partnergate_core::directory::Directory;
use partnergate_core::reload::Evaluator;
use partnergate_core::store::sqlite::SqliteStore;
use partnergate_policy::policies::PackSource;
use partnergate_search::{
    Limits, PageRequest, SearchError, SearchRequest, Searcher, Target, TokenKey,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

/// Generated directories per pack.
const SEEDS: u64 = 6;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

struct World {
    _dir: tempfile::TempDir,
    authz: Authz,
    searcher: Searcher,
}

fn world(policies: &Path, schema: &Path, entities: Value) -> World {
    let dir = tempfile::tempdir().unwrap();
    let evaluator =
        Arc::new(Evaluator::load(PackSource::new(policies, Some(schema.to_path_buf()))).unwrap());
    let store = Arc::new(SqliteStore::open_in(dir.path()).unwrap());
    let directory = Arc::new(Directory::open(store).unwrap());
    let authz = Authz::new(evaluator, directory);
    let pack = authz.evaluator().current();
    authz
        .directory()
        .put_json(pack.schema.as_ref(), entities)
        .unwrap();
    let searcher = Searcher::new(authz.clone(), TokenKey::random(), Limits::default());
    World {
        _dir: dir,
        authz,
        searcher,
    }
}

fn uid(ty: &str, id: &str) -> EntityUid {
    EntityUid::from_json(json!({"type": ty, "id": id})).unwrap()
}

fn eref(ty: &str, id: &str) -> Value {
    json!({"__entity": {"type": ty, "id": id}})
}

impl World {
    fn allowed(&self, p: &EntityUid, a: &EntityUid, r: &EntityUid, ctx: &Option<Value>) -> bool {
        let q = Query::new(p.clone(), a.clone(), r.clone()).with_context(ctx.clone());
        self.authz
            .is_authorized(&q)
            .is_ok_and(|a| a.decision.is_allowed())
    }

    fn stored(&self, ty: &str) -> Vec<EntityUid> {
        let ty: EntityTypeName = ty.parse().unwrap();
        self.authz.directory().uids_of_type(&ty)
    }

    /// Every result of `req`, page after page of `limit`; checks that the
    /// pages are sorted, disjoint and that `total` matches on the last one.
    fn all(&self, req: &SearchRequest, limit: Option<usize>) -> Vec<EntityUid> {
        let mut out: Vec<EntityUid> = Vec::new();
        let mut token = None;
        for _ in 0..10_000 {
            let page = self
                .searcher
                .search(
                    req,
                    &PageRequest {
                        limit,
                        token,
                        deadline: None,
                    },
                )
                .unwrap_or_else(|e| panic!("{req:?}: {e}"));
            if let Some(l) = limit {
                assert!(page.results.len() <= l);
            }
            out.extend(page.results);
            if page.next_token.is_empty() {
                assert_eq!(page.total, Some(out.len()), "{req:?}");
                let keys: Vec<String> =
                    out.iter().map(|u| u.id().unescaped().to_string()).collect();
                let mut sorted = keys.clone();
                sorted.sort();
                sorted.dedup();
                assert_eq!(keys, sorted, "pages sorted and without duplicates: {req:?}");
                return out;
            }
            assert!(page.total.is_none());
            token = Some(page.next_token);
        }
        panic!("no last page: {req:?}");
    }

    fn set(&self, req: &SearchRequest) -> BTreeSet<EntityUid> {
        self.all(req, Some(Limits::default().max))
            .into_iter()
            .collect()
    }

    /// Whether `req` is refused as a bad request; then every evaluation of
    /// a candidate is refused too (`questions`), as `/access/v1/evaluation`
    /// would answer a 400 for each.
    fn refused(&self, req: &SearchRequest, questions: &[Query]) -> bool {
        match self.searcher.search(req, &PageRequest::default()) {
            Ok(_) => false,
            Err(SearchError::Request(e)) => {
                for q in questions {
                    assert!(
                        self.authz.is_authorized(q).is_err(),
                        "{req:?} refused ({e}) but {q:?} is not"
                    );
                }
                true
            }
            Err(e) => panic!("{req:?}: {e}"),
        }
    }

    /// Every search over every action, principal, resource and searched
    /// type, against the brute-force loop.
    fn check_everything(&self, contexts: &[Option<Value>], seed: u64) {
        let pack = self.authz.evaluator().current();
        let schema = pack.schema.clone().unwrap();
        let types: Vec<EntityTypeName> = schema.entity_types().cloned().collect();
        let actions: Vec<EntityUid> = schema.actions().cloned().collect();
        let all: Vec<EntityUid> = types
            .iter()
            .flat_map(|t| self.stored(&t.to_string()))
            .collect();
        for ctx in contexts {
            for action in &actions {
                for p_ty in schema.principals_for_action(action).into_iter().flatten() {
                    for r_ty in schema.resources_for_action(action).into_iter().flatten() {
                        self.check_action(action, p_ty, r_ty, &all, ctx, seed);
                    }
                }
            }
            for p in &all {
                for r in &all {
                    let req = SearchRequest::new(Target::Actions {
                        principal: p.clone(),
                        resource: r.clone(),
                    })
                    .with_context(ctx.clone());
                    let expected: BTreeSet<EntityUid> = schema
                        .actions_for_principal_and_resource(p.type_name(), r.type_name())
                        .filter(|a| self.allowed(p, a, r, ctx))
                        .cloned()
                        .collect();
                    assert_eq!(self.set(&req), expected, "seed {seed}: {req:?}");
                }
            }
        }
    }

    fn check_action(
        &self,
        action: &EntityUid,
        p_ty: &EntityTypeName,
        r_ty: &EntityTypeName,
        all: &[EntityUid],
        ctx: &Option<Value>,
        seed: u64,
    ) {
        let of = |ty: &EntityTypeName| -> Vec<&EntityUid> {
            all.iter().filter(|u| u.type_name() == ty).collect()
        };
        // Resource search from every stored principal (and one unknown).
        let mut principals: Vec<EntityUid> = of(p_ty).into_iter().cloned().collect();
        principals.push(EntityUid::from_type_name_and_id(
            p_ty.clone(),
            "nobody".parse().unwrap(),
        ));
        for p in &principals {
            let req = SearchRequest::new(Target::Resources {
                principal: p.clone(),
                action: action.clone(),
                resource_type: r_ty.clone(),
            })
            .with_context(ctx.clone());
            let questions: Vec<Query> = of(r_ty)
                .into_iter()
                .map(|r| Query::new(p.clone(), action.clone(), r.clone()).with_context(ctx.clone()))
                .collect();
            if self.refused(&req, &questions) {
                continue;
            }
            let expected: BTreeSet<EntityUid> = of(r_ty)
                .into_iter()
                .filter(|r| self.allowed(p, action, r, ctx))
                .cloned()
                .collect();
            assert_eq!(self.set(&req), expected, "seed {seed}: {req:?}");
        }
        // Subject search on every stored resource (and one unknown).
        let mut resources: Vec<EntityUid> = of(r_ty).into_iter().cloned().collect();
        resources.push(EntityUid::from_type_name_and_id(
            r_ty.clone(),
            "nothing".parse().unwrap(),
        ));
        for r in &resources {
            let req = SearchRequest::new(Target::Subjects {
                principal_type: p_ty.clone(),
                action: action.clone(),
                resource: r.clone(),
            })
            .with_context(ctx.clone());
            let questions: Vec<Query> = of(p_ty)
                .into_iter()
                .map(|p| Query::new(p.clone(), action.clone(), r.clone()).with_context(ctx.clone()))
                .collect();
            if self.refused(&req, &questions) {
                continue;
            }
            let expected: BTreeSet<EntityUid> = of(p_ty)
                .into_iter()
                .filter(|p| self.allowed(p, action, r, ctx))
                .cloned()
                .collect();
            assert_eq!(self.set(&req), expected, "seed {seed}: {req:?}");
        }
    }
}

// ---------------------------------------------------------------- shipped pack

/// A random directory over the shipped schema: accounts, companies (Gold
/// and certified or not), users with every combination of the attributes
/// the policies read.
fn partner_directory(rng: &mut StdRng) -> Value {
    let accounts = ["acme", "beta", "gamma"];
    let companies = [
        ("goldco", "gold", true),
        ("silverco", "silver", true),
        ("oldco", "gold", false),
    ];
    let mut out = Vec::new();
    for a in accounts {
        out.push(json!({"uid": {"type": "Account", "id": a}, "attrs": {"name": a}, "parents": []}));
    }
    for (c, status, certified) in companies {
        out.push(json!({"uid": {"type": "PartnerCompany", "id": c},
            "attrs": {"name": c, "status": status, "certified": certified}, "parents": []}));
    }
    let n = rng.random_range(4..14);
    for i in 0..n {
        let account = accounts[rng.random_range(0..accounts.len())];
        let status = ["active", "active", "invited", "dismissed"][rng.random_range(0..4)];
        let mut attrs = json!({
            "email": format!("u{i}@x.example"),
            "account": eref("Account", account),
            "is_admin": rng.random_bool(0.3),
            "status": status,
            "two_factor": rng.random_bool(0.5),
        });
        if rng.random_bool(0.4) {
            let (c, _, _) = companies[rng.random_range(0..companies.len())];
            attrs["partner"] =
                json!({"company": eref("PartnerCompany", c), "verified": rng.random_bool(0.7)});
        }
        out.push(
            json!({"uid": {"type": "User", "id": format!("u{i:02}")}, "attrs": attrs,
            "parents": [{"type": "Account", "id": account}]}),
        );
    }
    Value::Array(out)
}

fn invitee(company: &str, status: &str, certified: bool) -> Option<Value> {
    Some(
        json!({"invitee": {"company": eref("PartnerCompany", company), "status": status, "certified": certified}}),
    )
}

#[test]
fn shipped_pack_every_search_equals_brute_force() {
    for seed in 0..SEEDS {
        let mut rng = StdRng::seed_from_u64(seed);
        let w = world(
            &repo().join("policies"),
            &repo().join("schemas/partnergate.cedarschema"),
            partner_directory(&mut rng),
        );
        // Without context the invite actions' requests do not fit the
        // schema (a 400, like their evaluation); with an invitee, the other
        // actions' do not.
        w.check_everything(
            &[
                None,
                invitee("goldco", "gold", true),
                invitee("silverco", "silver", true),
            ],
            seed,
        );
    }
}

#[test]
fn pagination_with_every_limit_returns_the_same_set() {
    let mut rng = StdRng::seed_from_u64(99);
    let w = world(
        &repo().join("policies"),
        &repo().join("schemas/partnergate.cedarschema"),
        partner_directory(&mut rng),
    );
    // An active admin of an account with the most users: many results.
    let users = w.stored("User");
    let owner = users
        .iter()
        .max_by_key(|u| {
            let req = SearchRequest::new(Target::Resources {
                principal: (*u).clone(),
                action: uid("Action", "edit_profile"),
                resource_type: "User".parse().unwrap(),
            });
            w.set(&req).len()
        })
        .unwrap()
        .clone();
    let req = SearchRequest::new(Target::Resources {
        principal: owner,
        action: uid("Action", "edit_profile"),
        resource_type: "User".parse().unwrap(),
    });
    let full = w.all(&req, None);
    assert!(full.len() >= 2, "a search with several results: {full:?}");
    for limit in 1..=full.len() + 1 {
        assert_eq!(w.all(&req, Some(limit)), full, "limit {limit}");
    }
    // Subject searches page the same way.
    let account = uid("Account", "acme");
    let viewers = SearchRequest::new(Target::Subjects {
        principal_type: "User".parse().unwrap(),
        action: uid("Action", "view_account"),
        resource: account,
    });
    let all_viewers = w.all(&viewers, None);
    for limit in 1..=all_viewers.len() + 1 {
        assert_eq!(w.all(&viewers, Some(limit)), all_viewers, "limit {limit}");
    }
    // And action searches: the actions the busiest principal may do to itself.
    let actions = SearchRequest::new(Target::Actions {
        principal: full[0].clone(),
        resource: full[0].clone(),
    });
    let all_actions = w.all(&actions, None);
    for limit in 1..=all_actions.len() + 1 {
        assert_eq!(w.all(&actions, Some(limit)), all_actions, "limit {limit}");
    }
}

// ---------------------------------------------------------------- generic pack

const GENERIC_SCHEMA: &str = r#"
entity Team;
entity Person in [Team] { team: Team, level: Long, boss?: Person };
entity Folder in [Folder] { owner: Person, public: Bool };
entity Doc in [Folder] { folder: Folder, owner: Person, tag: String };
action read, write, share appliesTo { principal: Person, resource: [Doc, Folder] };
action manage appliesTo { principal: Person, resource: Person };
"#;

const GENERIC_POLICIES: &str = r#"
@id("owner-reads")
permit (principal, action == Action::"read", resource) when { resource.owner == principal };
@id("folder-owner-reads-docs")
permit (principal, action == Action::"read", resource is Doc) when { resource.folder.owner == principal };
@id("seniors-do-anything-in-f0")
permit (principal, action, resource in Folder::"f0") when { principal.level >= 2 };
@id("public-folders")
permit (principal, action == Action::"read", resource is Folder) when { resource.public };
@id("drafts-or-own")
permit (principal, action == Action::"write", resource is Doc) when { resource.tag == "draft" || resource.owner == principal };
@id("share-if")
permit (principal, action == Action::"share", resource) when { if principal.level > 1 then resource.owner == principal else resource == Doc::"d0" };
@id("juniors-never-write")
forbid (principal, action == Action::"write", resource) unless { principal.level > 0 };
@id("boss-manages")
permit (principal, action == Action::"manage", resource) when { resource has boss && resource.boss == principal };
@id("team-peers-manage")
permit (principal, action == Action::"manage", resource) when { principal in resource.team && principal.level > resource.level };
@id("self")
permit (principal == Person::"p0", action == Action::"manage", resource);
@id("in-team-t1")
permit (principal in Team::"t1", action == Action::"read", resource is Doc) when { resource.tag == "team" };
@id("negative-levels-nothing")
forbid (principal, action, resource) when { principal.level < 0 };
"#;

fn generic_directory(rng: &mut StdRng) -> Value {
    let mut out = Vec::new();
    let teams = ["t0", "t1"];
    for t in teams {
        out.push(json!({"uid": {"type": "Team", "id": t}, "attrs": {}, "parents": []}));
    }
    let people = rng.random_range(2..7);
    for i in 0..people {
        let team = teams[rng.random_range(0..2)];
        let mut attrs = json!({"team": eref("Team", team), "level": rng.random_range(-1..4)});
        if i > 0 && rng.random_bool(0.5) {
            attrs["boss"] = eref("Person", &format!("p{}", rng.random_range(0..i)));
        }
        out.push(
            json!({"uid": {"type": "Person", "id": format!("p{i}")}, "attrs": attrs,
            "parents": [{"type": "Team", "id": team}]}),
        );
    }
    let person = |rng: &mut StdRng| format!("p{}", rng.random_range(0..people));
    let folders = rng.random_range(1..5);
    for i in 0..folders {
        let parents = if i > 0 {
            json!([{"type": "Folder", "id": format!("f{}", rng.random_range(0..i))}])
        } else {
            json!([])
        };
        let owner = person(rng);
        out.push(json!({"uid": {"type": "Folder", "id": format!("f{i}")},
            "attrs": {"owner": eref("Person", &owner), "public": rng.random_bool(0.3)}, "parents": parents}));
    }
    for i in 0..rng.random_range(1..9) {
        let folder = format!("f{}", rng.random_range(0..folders));
        let owner = person(rng);
        let tag = ["draft", "team", "final"][rng.random_range(0..3)];
        out.push(json!({"uid": {"type": "Doc", "id": format!("d{i}")},
            "attrs": {"folder": eref("Folder", &folder), "owner": eref("Person", &owner), "tag": tag},
            "parents": [{"type": "Folder", "id": folder}]}));
    }
    Value::Array(out)
}

#[test]
fn generic_pack_every_search_equals_brute_force() {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::write(policies.join("generic.cedar"), GENERIC_POLICIES).unwrap();
    let schema = dir.path().join("generic.cedarschema");
    std::fs::write(&schema, GENERIC_SCHEMA).unwrap();
    for seed in 0..SEEDS * 2 {
        let mut rng = StdRng::seed_from_u64(1000 + seed);
        let w = world(&policies, &schema, generic_directory(&mut rng));
        w.check_everything(&[None], seed);
    }
}

// ---------------------------------------------------------------- narrowing

/// On the shipped pack a resource search reads the principal's account's
/// users only (the residual `resource.account == Account::"…"` answered from
/// the referrers index), not the directory: the candidates confirmed are
/// counted, whatever the number of other accounts' users.
#[test]
fn resource_search_on_the_shipped_pack_evaluates_only_the_accounts_users() {
    let mut entities = vec![
        json!({"uid": {"type": "Account", "id": "acme"}, "attrs": {}, "parents": []}),
        json!({"uid": {"type": "Account", "id": "other"}, "attrs": {}, "parents": []}),
        json!({"uid": {"type": "PartnerCompany", "id": "goldco"}, "attrs": {"name": "g", "status": "gold", "certified": true}, "parents": []}),
    ];
    let user = |id: &str, account: &str, admin: bool| {
        json!({"uid": {"type": "User", "id": id}, "parents": [{"type": "Account", "id": account}],
            "attrs": {"email": "e", "account": eref("Account", account), "is_admin": admin, "status": "active", "two_factor": true}})
    };
    entities.push(json!({"uid": {"type": "User", "id": "pat"}, "parents": [{"type": "Account", "id": "acme"}],
        "attrs": {"email": "e", "account": eref("Account", "acme"), "is_admin": false, "status": "active", "two_factor": true,
                  "partner": {"company": eref("PartnerCompany", "goldco"), "verified": true,
                              "scopes": ["users", "settings", "integrations"]}}}));
    for i in 0..20 {
        entities.push(user(&format!("a{i:02}"), "acme", i == 0));
    }
    for i in 0..300 {
        entities.push(user(&format!("o{i:03}"), "other", false));
    }
    let w = world(
        &repo().join("policies"),
        &repo().join("schemas/partnergate.cedarschema"),
        Value::Array(entities),
    );
    let req = SearchRequest::new(Target::Resources {
        principal: uid("User", "pat"),
        action: uid("Action", "dismiss_user"),
        resource_type: "User".parse().unwrap(),
    });
    let page = w
        .searcher
        .search(
            &req,
            &PageRequest {
                limit: Some(100),
                token: None,
                deadline: None,
            },
        )
        .unwrap();
    // pat may dismiss the 19 non-admin employees and pat, not the admin a00.
    assert_eq!(page.results.len(), 20, "{:?}", page.results);
    assert!(!page.results.contains(&uid("User", "a00")));
    assert!(
        page.evaluated <= 21,
        "evaluated {} candidates",
        page.evaluated
    );
    // "Who can administer this account?" reads the account's users only too.
    let req = SearchRequest::new(Target::Subjects {
        principal_type: "User".parse().unwrap(),
        action: uid("Action", "configure_account"),
        resource: uid("Account", "acme"),
    });
    let page = w.searcher.search(&req, &PageRequest::default()).unwrap();
    assert_eq!(page.results, vec![uid("User", "a00"), uid("User", "pat")]);
    assert!(
        page.evaluated <= 21,
        "evaluated {} candidates",
        page.evaluated
    );
}
