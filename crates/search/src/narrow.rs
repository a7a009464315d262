//! Narrowing: which stored entities of the searched type can possibly be
//! allowed, from Cedar's type-aware partial evaluation (TPE) of the pack
//! with the searched side unknown.
//!
//! TPE settles every policy that does not depend on the unknown entity and
//! leaves a residual expression for the others. Only the permits matter for
//! narrowing (an Allow needs one that holds): a residual permit whose
//! condition pins the unknown entity down — `resource == E`, `resource in E`,
//! `resource.account == Account::"acme"` (any attribute path ending in an
//! entity literal), in a conjunction, disjunction or `if` — is answered from
//! the directory's indexes ([`partnergate_core::directory::Directory::referrers`]),
//! so the candidates follow the result set, not the directory.
//!
//! Conservative by construction: the candidates are a superset of the
//! entities the pack can allow (anything not understood widens to "every
//! stored entity of the type"), and the caller confirms each candidate with
//! the full decision. Never a reason to return a result, only to skip a
//! candidate that no permit can reach. This module must never decide: it
//! knows nothing of the fail-closed semantics, the wire or the decision log.

use std::collections::{BTreeSet, HashSet};

use cedar_policy::{
    Context, Decision, EntityTypeName, EntityUid, PartialEntities, PartialEntityUid,
    PartialRequest, PolicySet, Schema,
};
use serde_json::Value;

use partnergate_core::directory::Directory;

/// Which side of the request is unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Var {
    /// Subject search: the principal is unknown.
    Principal,
    /// Resource search: the resource is unknown.
    Resource,
}

impl Var {
    fn name(self) -> &'static str {
        match self {
            Var::Principal => "principal",
            Var::Resource => "resource",
        }
    }
}

/// Where the candidates of a search come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Candidates {
    /// No permit can hold: nothing to confirm.
    None,
    /// These entities (and only they) can be allowed: a superset of the
    /// result, not yet filtered by type or presence.
    Some(BTreeSet<EntityUid>),
    /// Nothing narrows the search: every stored entity of the type.
    All,
}

/// One way a residual pins the unknown entity down.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Source {
    /// `var == E`: exactly E.
    Is(EntityUid),
    /// `var.a1...an == E`: the entities that reach E through at most n
    /// references (an attribute that is a record stays in the entity; one
    /// that is an entity is one more step), i.e. E's referrers, theirs, ...
    PointsAt(EntityUid, usize),
    /// `var in E`: E and its descendants.
    Within(EntityUid),
}

/// A union of sources; `None` in [`narrow_expr`] means "not narrowed".
type Sources = BTreeSet<Source>;

/// The candidates for the unknown side `var` of type `ty`, given the known
/// side `known`, the action and the context, from the TPE of `policies`
/// over `known_entities` (the known side's slice, concrete). Any failure of
/// TPE (an unsupported schema, a request TPE refuses) is [`Candidates::All`].
#[allow(clippy::too_many_arguments)]
pub fn candidates(
    policies: &PolicySet,
    schema: &Schema,
    var: Var,
    ty: &EntityTypeName,
    known: &EntityUid,
    action: &EntityUid,
    context: Context,
    known_entities: cedar_policy::Entities,
    directory: &Directory,
) -> Candidates {
    let unknown = PartialEntityUid::new(ty.clone(), None);
    let known_side = PartialEntityUid::from_concrete(known.clone());
    let (principal, resource) = match var {
        Var::Principal => (unknown, known_side),
        Var::Resource => (known_side, unknown),
    };
    let Ok(request) =
        PartialRequest::new(principal, action.clone(), resource, Some(context), schema)
    else {
        return Candidates::All;
    };
    let Ok(entities) = PartialEntities::from_concrete(known_entities, schema) else {
        return Candidates::All;
    };
    let Ok(response) = policies.tpe(&request, &entities, schema) else {
        return Candidates::All;
    };
    match response.decision() {
        Some(Decision::Deny) => return Candidates::None,
        Some(Decision::Allow) => return Candidates::All,
        None => {}
    }
    if response.true_permits().next().is_some() {
        return Candidates::All;
    }
    // Error permits never hold; false permits never hold; the residual
    // permits are the only ways to an Allow.
    let mut sources = Sources::new();
    for id in response.residual_permits() {
        let Some(policy) = response.get_policy(id) else {
            return Candidates::All;
        };
        let Ok(json) = policy.to_json() else {
            return Candidates::All;
        };
        match narrow_policy(&json, var.name()) {
            Some(s) => sources.extend(s),
            None => return Candidates::All,
        }
    }
    match resolve(&sources, directory) {
        Some(uids) => Candidates::Some(uids),
        None => Candidates::All,
    }
}

/// The sources of a residual policy (EST JSON): its scope must be
/// unconstrained (TPE folds the scope into the condition) and one of its
/// `when` conditions must narrow.
fn narrow_policy(policy: &Value, var: &str) -> Option<Sources> {
    for scope in ["principal", "action", "resource"] {
        if policy
            .get(scope)
            .and_then(|s| s.get("op"))
            .and_then(Value::as_str)
            != Some("All")
        {
            return None;
        }
    }
    let conditions = policy.get("conditions")?.as_array()?;
    let mut best: Option<Sources> = None;
    for c in conditions {
        if c.get("kind").and_then(Value::as_str) != Some("when") {
            continue;
        }
        if let Some(s) = c.get("body").and_then(|b| narrow_expr(b, var)) {
            best = Some(smaller(best, s));
        }
    }
    best
}

/// Keep the narrower of two sources of one conjunction (fewer, and exact
/// uids before attribute references before hierarchies).
fn smaller(a: Option<Sources>, b: Sources) -> Sources {
    let weight = |s: &Sources| {
        s.iter()
            .map(|x| match x {
                Source::Is(_) => 1,
                Source::PointsAt(_, depth) => 100 * depth,
                Source::Within(_) => 1000,
            })
            .sum::<usize>()
    };
    match a {
        Some(a) if weight(&a) <= weight(&b) => a,
        _ => b,
    }
}

/// The sources of a residual expression (EST JSON), if it pins `var` down:
/// every entity of the type for which the expression is true is reachable
/// from one of them.
fn narrow_expr(e: &Value, var: &str) -> Option<Sources> {
    let obj = e.as_object()?;
    let (op, arg) = obj.iter().next()?;
    match op.as_str() {
        "Value" if arg == &Value::Bool(false) => Some(Sources::new()),
        "==" => {
            let (l, r) = (arg.get("left")?, arg.get("right")?);
            eq_source(l, r, var).or_else(|| eq_source(r, l, var))
        }
        "in" => {
            let (l, r) = (arg.get("left")?, arg.get("right")?);
            if !is_var(l, var) {
                return None;
            }
            let targets = match entity_literal(r) {
                Some(uid) => vec![uid],
                None => set_of_entities(r)?,
            };
            Some(targets.into_iter().map(Source::Within).collect())
        }
        "&&" => {
            let l = narrow_expr(arg.get("left")?, var);
            let r = narrow_expr(arg.get("right")?, var);
            match (l, r) {
                (Some(l), r) => Some(match r {
                    Some(r) => smaller(Some(l), r),
                    None => l,
                }),
                (None, r) => r,
            }
        }
        "||" => {
            let mut l = narrow_expr(arg.get("left")?, var)?;
            l.extend(narrow_expr(arg.get("right")?, var)?);
            Some(l)
        }
        "if-then-else" => {
            let mut t = narrow_expr(arg.get("then")?, var)?;
            t.extend(narrow_expr(arg.get("else")?, var)?);
            Some(t)
        }
        _ => None,
    }
}

/// `var == E` or `var.a.b == E` (with `lhs` the side rooted at `var`).
fn eq_source(lhs: &Value, rhs: &Value, var: &str) -> Option<Sources> {
    let uid = entity_literal(rhs)?;
    if is_var(lhs, var) {
        return Some(Sources::from([Source::Is(uid)]));
    }
    if let Some(depth) = attr_path_depth(lhs, var) {
        return Some(Sources::from([Source::PointsAt(uid, depth)]));
    }
    None
}

fn is_var(e: &Value, var: &str) -> bool {
    e.get("Var").and_then(Value::as_str) == Some(var)
}

/// `var.a`, `var.a.b`, ...: an attribute path rooted at `var`, and its length.
fn attr_path_depth(e: &Value, var: &str) -> Option<usize> {
    let left = e.get(".")?.get("left")?;
    if is_var(left, var) {
        Some(1)
    } else {
        attr_path_depth(left, var).map(|d| d + 1)
    }
}

/// An entity literal `{"Value": {"__entity": {type, id}}}`.
fn entity_literal(e: &Value) -> Option<EntityUid> {
    let v = e.get("Value")?;
    let inner = v.get("__entity")?;
    EntityUid::from_json(serde_json::json!({"__entity": inner})).ok()
}

/// A set literal of entity literals (`[E1, E2]`), as TPE or the policy wrote it.
fn set_of_entities(e: &Value) -> Option<Vec<EntityUid>> {
    if let Some(items) = e.get("Set").and_then(Value::as_array) {
        return items.iter().map(entity_literal).collect();
    }
    let items = e.get("Value")?.as_array()?;
    items
        .iter()
        .map(|v| {
            let inner = v.get("__entity")?;
            EntityUid::from_json(serde_json::json!({"__entity": inner})).ok()
        })
        .collect()
}

/// Upper bound on the entities a walk of the indexes gathers; past it the
/// search does not narrow (every stored entity of the type is a candidate).
pub const MAX_WALK: usize = 1_000_000;

/// The uids the sources reach in the directory: a superset of the entities
/// the residuals can be true for (the referrers index holds parents and every
/// attribute reference). `None` when a walk grew past [`MAX_WALK`].
fn resolve(sources: &Sources, directory: &Directory) -> Option<BTreeSet<EntityUid>> {
    let mut out = BTreeSet::new();
    for s in sources {
        match s {
            Source::Is(uid) => {
                out.insert(uid.clone());
            }
            Source::PointsAt(uid, depth) => {
                let mut seen: HashSet<EntityUid> = HashSet::new();
                let mut frontier = vec![uid.clone()];
                for _ in 0..*depth {
                    let mut next = Vec::new();
                    for u in &frontier {
                        for r in directory.referrers(u) {
                            if seen.insert(r.clone()) {
                                next.push(r);
                            }
                        }
                    }
                    if seen.len() > MAX_WALK {
                        return None;
                    }
                    frontier = next;
                }
                out.extend(seen);
            }
            Source::Within(uid) => {
                let mut seen: HashSet<EntityUid> = HashSet::new();
                let mut queue = vec![uid.clone()];
                while let Some(u) = queue.pop() {
                    if seen.len() > MAX_WALK {
                        return None;
                    }
                    if seen.insert(u.clone()) {
                        queue.extend(directory.referrers(&u));
                    }
                }
                out.extend(seen);
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ent(ty: &str, id: &str) -> Value {
        json!({"Value": {"__entity": {"type": ty, "id": id}}})
    }
    fn attr(var: &str, a: &str) -> Value {
        json!({".": {"left": {"Var": var}, "attr": a}})
    }
    fn uid(s: &str) -> EntityUid {
        s.parse().unwrap()
    }

    #[test]
    fn equality_membership_and_attribute_paths_narrow() {
        let acme = ent("Account", "acme");
        let e = json!({"==": {"left": attr("resource", "account"), "right": acme}});
        assert_eq!(
            narrow_expr(&e, "resource"),
            Some(Sources::from([Source::PointsAt(
                uid(r#"Account::"acme""#),
                1
            )]))
        );
        // Reversed operands, and the other variable does not narrow.
        let e = json!({"==": {"left": acme, "right": attr("principal", "account")}});
        assert!(narrow_expr(&e, "principal").is_some());
        assert_eq!(narrow_expr(&e, "resource"), None);
        let e = json!({"==": {"left": {"Var": "resource"}, "right": ent("User", "emma")}});
        assert_eq!(
            narrow_expr(&e, "resource"),
            Some(Sources::from([Source::Is(uid(r#"User::"emma""#))]))
        );
        let e = json!({"in": {"left": {"Var": "resource"}, "right": {"Set": [acme, ent("Account", "b")]}}});
        assert_eq!(narrow_expr(&e, "resource").map(|s| s.len()), Some(2));
    }

    #[test]
    fn conjunctions_keep_one_side_disjunctions_need_both() {
        let narrow =
            json!({"==": {"left": attr("resource", "account"), "right": ent("Account", "a")}});
        let wide = json!({"has": {"left": {"Var": "resource"}, "attr": "partner"}});
        let and = json!({"&&": {"left": wide, "right": narrow}});
        assert!(narrow_expr(&and, "resource").is_some());
        let or = json!({"||": {"left": wide, "right": narrow}});
        assert_eq!(narrow_expr(&or, "resource"), None);
        let or = json!({"||": {"left": narrow, "right": narrow}});
        assert!(narrow_expr(&or, "resource").is_some());
        // A string comparison is not an index lookup: no narrowing.
        let s = json!({"==": {"left": attr("resource", "status"), "right": {"Value": "active"}}});
        assert_eq!(narrow_expr(&s, "resource"), None);
        assert_eq!(
            narrow_expr(&json!({"Value": false}), "resource"),
            Some(Sources::new())
        );
        assert_eq!(narrow_expr(&json!({"Value": true}), "resource"), None);
    }

    #[test]
    fn a_scoped_residual_or_one_without_a_narrowing_when_is_not_narrowed() {
        let body = json!({"==": {"left": {"Var": "resource"}, "right": ent("User", "a")}});
        let all = json!({"op": "All"});
        let policy = json!({"effect": "permit", "principal": all, "action": all, "resource": all,
            "conditions": [{"kind": "unless", "body": body}]});
        assert_eq!(narrow_policy(&policy, "resource"), None);
        let policy = json!({"effect": "permit", "principal": all, "action": all, "resource": all,
            "conditions": [{"kind": "when", "body": body}]});
        assert!(narrow_policy(&policy, "resource").is_some());
        let policy = json!({"effect": "permit", "principal": all, "action": all,
            "resource": {"op": "==", "entity": {"type": "User", "id": "a"}},
            "conditions": [{"kind": "when", "body": body}]});
        assert_eq!(narrow_policy(&policy, "resource"), None);
    }
}
