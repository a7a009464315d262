//! The policy index against Cedar over the whole set: random packs, entity
//! sets and requests (seeded, so a failure reproduces) must get the same
//! decision, the same reason ids and the same errors.

use std::collections::BTreeSet;
use std::str::FromStr;

use cedar_policy::{Authorizer, Context, Entities, EntityUid, PolicySet, Request};
use partnergate_policy::index::PolicyIndex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn pick<'a>(rng: &mut StdRng, xs: &'a [&'a str]) -> &'a str {
    xs[rng.random_range(0..xs.len())]
}

const USERS: &[&str] = &["u0", "u1", "u2", "u3"];
const GROUPS: &[&str] = &["g0", "g1", "g2"];
const DOCS: &[&str] = &["d0", "d1", "d2", "d3"];
const ACCTS: &[&str] = &["a0", "a1", "a2"];
const ACTIONS: &[&str] = &["read", "write", "admin"];

fn scope(rng: &mut StdRng, var: &str) -> String {
    let (ty, ids, parent_ty, parents) = if var == "principal" {
        ("User", USERS, "Group", GROUPS)
    } else {
        ("Doc", DOCS, "Account", ACCTS)
    };
    match rng.random_range(0..6) {
        0 => var.to_string(),
        1 => format!("{var} == {ty}::\"{}\"", pick(rng, ids)),
        2 => format!("{var} in {parent_ty}::\"{}\"", pick(rng, parents)),
        3 => format!("{var} is {ty}"),
        4 => format!("{var} is {ty} in {parent_ty}::\"{}\"", pick(rng, parents)),
        _ => format!("{var} == {parent_ty}::\"{}\"", pick(rng, parents)),
    }
}

fn action_scope(rng: &mut StdRng) -> String {
    match rng.random_range(0..4) {
        0 => "action".into(),
        1 => format!("action == Action::\"{}\"", pick(rng, ACTIONS)),
        2 => "action in [Action::\"all\"]".into(),
        _ => format!(
            "action in [Action::\"{}\", Action::\"{}\"]",
            pick(rng, ACTIONS),
            pick(rng, ACTIONS)
        ),
    }
}

fn condition(rng: &mut StdRng) -> String {
    let first = match rng.random_range(0..7) {
        0 => format!("resource.account == Account::\"{}\"", pick(rng, ACCTS)),
        1 => format!("Account::\"{}\" == resource.account", pick(rng, ACCTS)),
        2 => format!("principal.level == {}", rng.random_range(0..3)),
        3 => format!("principal.name == \"{}\"", pick(rng, USERS)),
        4 => "principal.admin == true".into(),
        5 => "resource.owner == principal".into(),
        _ => "true".into(),
    };
    let rest = match rng.random_range(0..4) {
        0 => String::new(),
        1 => format!(" && principal in Group::\"{}\"", pick(rng, GROUPS)),
        2 => " && principal.level > 0".into(),
        _ => " && resource.secret == false".into(),
    };
    let clause = if rng.random_bool(0.15) {
        "unless"
    } else {
        "when"
    };
    let mut out = format!("{clause} {{ {first}{rest} }}");
    if rng.random_bool(0.2) {
        out.push_str(" unless { principal.name == \"u3\" }");
    }
    out
}

fn pack(rng: &mut StdRng) -> PolicySet {
    let mut text = String::new();
    for i in 0..rng.random_range(1..25) {
        let effect = if rng.random_bool(0.25) {
            "forbid"
        } else {
            "permit"
        };
        let cond = if rng.random_bool(0.8) {
            condition(rng)
        } else {
            String::new()
        };
        text.push_str(&format!(
            "@id(\"p{i}\") {effect}({}, {}, {}) {cond};\n",
            scope(rng, "principal"),
            action_scope(rng),
            scope(rng, "resource")
        ));
    }
    text.push_str(
        "@id(\"t\") permit(principal == ?principal, action, resource in ?resource) \
         when { resource.account == Account::\"a1\" };\n",
    );
    let mut set = PolicySet::from_str(&text).unwrap();
    // `@id` does not rename a template: Cedar numbers it like the policies.
    let template = set.templates().next().unwrap().id().clone();
    for i in 0..rng.random_range(0..4) {
        let vals = [
            (
                cedar_policy::SlotId::principal(),
                uid("User", pick(rng, USERS)),
            ),
            (
                cedar_policy::SlotId::resource(),
                uid("Account", pick(rng, ACCTS)),
            ),
        ];
        let id = cedar_policy::PolicyId::new(format!("link{i}"));
        set.link(template.clone(), id, vals.into_iter().collect())
            .unwrap();
    }
    set
}

fn uid(ty: &str, id: &str) -> EntityUid {
    EntityUid::from_str(&format!("{ty}::\"{id}\"")).unwrap()
}

fn entity_json(rng: &mut StdRng, ty: &str, id: &str) -> Option<serde_json::Value> {
    if rng.random_bool(0.15) {
        return None; // absent entity
    }
    let mut attrs = serde_json::Map::new();
    let mut parents = Vec::new();
    if ty == "User" {
        if rng.random_bool(0.8) {
            attrs.insert("level".into(), rng.random_range(0..3).into());
        }
        if rng.random_bool(0.8) {
            attrs.insert("name".into(), pick(rng, USERS).into());
        }
        if rng.random_bool(0.5) {
            attrs.insert("admin".into(), rng.random_bool(0.5).into());
        }
        for g in GROUPS {
            if rng.random_bool(0.4) {
                parents.push(serde_json::json!({"type": "Group", "id": g}));
            }
        }
    } else {
        let a = pick(rng, ACCTS);
        match rng.random_range(0..4) {
            0 => {}
            1 => {
                attrs.insert("account".into(), "a0".into());
            }
            _ => {
                attrs.insert(
                    "account".into(),
                    serde_json::json!({"__entity": {"type": "Account", "id": a}}),
                );
            }
        }
        if rng.random_bool(0.7) {
            attrs.insert("secret".into(), rng.random_bool(0.3).into());
        }
        if rng.random_bool(0.5) {
            attrs.insert(
                "owner".into(),
                serde_json::json!({"__entity": {"type": "User", "id": pick(rng, USERS)}}),
            );
        }
        if rng.random_bool(0.7) {
            parents.push(serde_json::json!({"type": "Account", "id": a}));
        }
    }
    Some(serde_json::json!({"uid": {"type": ty, "id": id}, "attrs": attrs, "parents": parents}))
}

fn entities(rng: &mut StdRng, principal: &str, resource: &str) -> Entities {
    let mut list: Vec<serde_json::Value> = Vec::new();
    list.extend(entity_json(rng, "User", principal));
    list.extend(entity_json(rng, "Doc", resource));
    for g in GROUPS {
        list.push(
            serde_json::json!({"uid": {"type": "Group", "id": g}, "attrs": {}, "parents": []}),
        );
    }
    for a in ACTIONS {
        let parents: Vec<serde_json::Value> = if *a == "admin" || rng.random_bool(0.5) {
            vec![serde_json::json!({"type": "Action", "id": "all"})]
        } else {
            vec![]
        };
        list.push(serde_json::json!({"uid": {"type": "Action", "id": a}, "attrs": {}, "parents": parents}));
    }
    Entities::from_json_value(serde_json::Value::Array(list), None).unwrap()
}

type Answer = (cedar_policy::Decision, BTreeSet<String>, Vec<String>);

fn answer(req: &Request, set: &PolicySet, entities: &Entities) -> Answer {
    let r = Authorizer::new().is_authorized(req, set, entities);
    let reasons = r.diagnostics().reason().map(ToString::to_string).collect();
    let mut errors: Vec<String> = r.diagnostics().errors().map(ToString::to_string).collect();
    errors.sort();
    (r.decision(), reasons, errors)
}

#[test]
fn the_indexed_decision_is_cedars_decision_over_the_whole_set() {
    let mut rng = StdRng::seed_from_u64(14);
    let (mut compared, mut allows, mut with_errors, mut smaller) = (0, 0, 0, 0);
    for _ in 0..60 {
        let set = pack(&mut rng);
        let index = PolicyIndex::new(&set);
        for _ in 0..12 {
            let (p, r) = (pick(&mut rng, USERS), pick(&mut rng, DOCS));
            let ents = entities(&mut rng, p, r);
            let action = uid("Action", pick(&mut rng, ACTIONS));
            let req = Request::new(
                uid("User", p),
                action,
                uid("Doc", r),
                Context::empty(),
                None,
            )
            .unwrap();
            let whole = answer(&req, &set, &ents);
            let candidates = index.candidates(&req, &ents);
            let ours = answer(&req, &candidates, &ents);
            assert_eq!(
                ours, whole,
                "request {req}\nentities {ents:?}\npolicies\n{set}"
            );
            compared += 1;
            allows += usize::from(whole.0 == cedar_policy::Decision::Allow);
            with_errors += usize::from(!whole.2.is_empty());
            smaller += usize::from(candidates.policies().count() < set.policies().count());
        }
    }
    assert!(
        compared >= 500 && allows > 50 && with_errors > 50 && smaller > 200,
        "compared {compared}, allows {allows}, with errors {with_errors}, smaller {smaller}"
    );
}
