//! The policy index of one pack: which policies can possibly apply to a
//! request, selected from what each policy's scope and the first conjunct of
//! its first `when` clause pin down, so Cedar evaluates a small candidate set
//! instead of every policy.
//!
//! Exactness is the contract: a policy is left out only when Cedar would find
//! it not applicable *without an error* (its scope cannot match, or its first
//! evaluated expression `principal.A == LITERAL` / `resource.A == LITERAL` is
//! false on an entity that is present and has `A`). Anything else stays a
//! candidate. Candidate sets keep the pack's policy order, so Cedar's errors
//! come in the same order as over the whole set.
//!
//! This module must never know requests' origins (HTTP, CLI), the entity
//! stores or the decision semantics on top of Cedar's (that is [`crate::engine`]).

use std::collections::HashMap;
use std::sync::Arc;

use cedar_policy::{
    ActionConstraint, Entities, EntityTypeName, EntityUid, EvalResult, Policy, PolicySet,
    PrincipalConstraint, Request, ResourceConstraint,
};
use dashmap::DashMap;

/// How many candidate sets the index keeps (emptied when full).
pub const CANDIDATE_CACHE_MAX: usize = 4096;

/// Which request variable a key is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Var {
    Principal,
    Resource,
}

/// A literal a condition compares an attribute with.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Lit {
    Uid(EntityUid),
    Str(String),
    Long(i64),
    Bool(bool),
}

/// What a policy's action scope pins down.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum ActionKey {
    /// `action` (any) or a list of several actions: always a candidate.
    Any,
    /// `action == A`.
    Eq(EntityUid),
    /// `action in [G]` (one element): the request action or one of its groups is `G`.
    In(EntityUid),
}

/// The most selective thing a policy's principal/resource scope or first
/// condition pins down.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum SelKey {
    Eq(Var, EntityUid),
    In(Var, EntityUid),
    Is(Var, EntityTypeName),
    Attr(Var, String, Lit),
    Residual,
}

/// The buckets of one action key: each selector key to its bucket id, and
/// for each keyed attribute every bucket keyed on it (all candidates when
/// the attribute cannot be read without an error).
#[derive(Debug, Default)]
struct ActionBuckets {
    by_key: HashMap<SelKey, u32>,
    attrs: HashMap<(Var, String), Vec<u32>>,
}

/// The index of one pack's policies (built once per pack version).
pub struct PolicyIndex {
    /// The pack's policies in its order, and for each bucket its policies' positions.
    policies: Vec<Policy>,
    buckets: Vec<Vec<usize>>,
    actions: HashMap<ActionKey, ActionBuckets>,
    /// Candidate sets by the sorted bucket ids that selected them.
    cache: DashMap<Vec<u32>, Arc<PolicySet>>,
    full: Arc<PolicySet>,
}

impl std::fmt::Debug for PolicyIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyIndex")
            .field("policies", &self.policies.len())
            .field("buckets", &self.buckets.len())
            .field("cached_sets", &self.cache.len())
            .finish_non_exhaustive()
    }
}

/// What the index reads of one policy: its action key and its selector key.
/// It depends on the policy's text only (not its id), so a reload computes
/// it once per parsed policy and reuses it for the files that did not change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexKey {
    action: ActionKey,
    sel: SelKey,
}

impl IndexKey {
    /// The key of `policy`.
    pub fn of(policy: &Policy) -> Self {
        IndexKey {
            action: action_key(policy),
            sel: sel_key(policy),
        }
    }
}

impl PolicyIndex {
    /// Index every policy of `set` (static and template-linked).
    pub fn new(set: &PolicySet) -> Self {
        let keys: Vec<IndexKey> = set.policies().map(IndexKey::of).collect();
        Self::with_keys(set, &keys)
    }

    /// Index `set` with each policy's key computed before ([`IndexKey::of`]),
    /// `keys[i]` being the key of the `i`th policy of `set.policies()`. With
    /// another number of keys than policies, the keys are computed again.
    pub fn with_keys(set: &PolicySet, keys: &[IndexKey]) -> Self {
        if keys.len() != set.policies().count() {
            return Self::new(set);
        }
        let mut index = PolicyIndex {
            policies: Vec::with_capacity(keys.len()),
            buckets: Vec::new(),
            actions: HashMap::new(),
            cache: DashMap::new(),
            full: Arc::new(set.clone()),
        };
        let mut ids: HashMap<(&ActionKey, &SelKey), u32> = HashMap::new();
        for (pos, (policy, key)) in set.policies().zip(keys).enumerate() {
            index.policies.push(policy.clone());
            let next = u32::try_from(index.buckets.len()).unwrap_or(u32::MAX);
            let id = *ids.entry((&key.action, &key.sel)).or_insert_with(|| {
                let group = index.actions.entry(key.action.clone()).or_default();
                if let SelKey::Attr(var, attr, _) = &key.sel {
                    group
                        .attrs
                        .entry((*var, attr.clone()))
                        .or_default()
                        .push(next);
                }
                group.by_key.insert(key.sel.clone(), next);
                next
            });
            match index.buckets.get_mut(id as usize) {
                Some(bucket) => bucket.push(pos),
                None => index.buckets.push(vec![pos]),
            }
        }
        index
    }

    /// How many policies the index holds.
    pub fn len(&self) -> usize {
        self.policies.len()
    }

    /// Whether the index holds no policy.
    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    /// The policies that can apply to `request` over `entities`: evaluating
    /// only them gives Cedar's answer over the whole set (decision, reasons
    /// and errors, in the same order).
    pub fn candidates(&self, request: &Request, entities: &Entities) -> Arc<PolicySet> {
        let (Some(principal), Some(action), Some(resource)) =
            (request.principal(), request.action(), request.resource())
        else {
            return self.full.clone();
        };
        let mut selected = Vec::new();
        let mut groups: Vec<&EntityUid> = vec![action];
        if let Some(up) = entities.ancestors(action) {
            groups.extend(up);
        }
        let vars = [(Var::Principal, principal), (Var::Resource, resource)];
        for (key, buckets) in &self.actions {
            let applies = match key {
                ActionKey::Any => true,
                ActionKey::Eq(a) => a == action,
                ActionKey::In(g) => groups.contains(&g),
            };
            if applies {
                select(buckets, &vars, entities, &mut selected);
            }
        }
        selected.sort_unstable();
        if selected.len() == self.buckets.len() {
            return self.full.clone();
        }
        if let Some(hit) = self.cache.get(&selected) {
            return hit.clone();
        }
        let built = Arc::new(self.build(&selected));
        if self.cache.len() >= CANDIDATE_CACHE_MAX {
            self.cache.clear();
        }
        self.cache.insert(selected, built.clone());
        built
    }

    /// The policy set of the selected buckets' policies, in the pack's order;
    /// the whole set if it cannot be built.
    fn build(&self, selected: &[u32]) -> PolicySet {
        let mut positions: Vec<usize> = selected
            .iter()
            .filter_map(|&b| self.buckets.get(b as usize))
            .flatten()
            .copied()
            .collect();
        positions.sort_unstable();
        let mut set = PolicySet::new();
        for &pos in &positions {
            let Some(policy) = self.policies.get(pos) else {
                continue;
            };
            if add_policy(&mut set, &self.full, policy).is_err() {
                return (*self.full).clone();
            }
        }
        set
    }
}

/// Add one policy (linking it when it is template-linked) to `set`.
fn add_policy(set: &mut PolicySet, full: &PolicySet, policy: &Policy) -> Result<(), ()> {
    match (policy.template_id(), policy.template_links()) {
        (Some(tid), Some(links)) => {
            if set.template(tid).is_none() {
                let template = full.template(tid).ok_or(())?.clone();
                set.add_template(template).map_err(|_| ())?;
            }
            set.link(tid.clone(), policy.id().clone(), links)
                .map_err(|_| ())
        }
        _ => set.add(policy.clone()).map_err(|_| ()),
    }
}

/// Push the ids of the buckets of one action key that can apply.
fn select(
    buckets: &ActionBuckets,
    vars: &[(Var, &EntityUid); 2],
    entities: &Entities,
    out: &mut Vec<u32>,
) {
    let mut look = |k: SelKey| {
        if let Some(&id) = buckets.by_key.get(&k) {
            out.push(id);
        }
    };
    look(SelKey::Residual);
    for &(var, uid) in vars {
        look(SelKey::Eq(var, uid.clone()));
        look(SelKey::In(var, uid.clone()));
        look(SelKey::Is(var, uid.type_name().clone()));
        if let Some(up) = entities.ancestors(uid) {
            for a in up {
                look(SelKey::In(var, a.clone()));
            }
        }
    }
    for ((var, attr), all) in &buckets.attrs {
        let Some(&(_, uid)) = vars.iter().find(|(v, _)| v == var) else {
            continue;
        };
        match attr_value(entities, uid, attr) {
            // Present: only the bucket keyed on its value can hold a true conjunct.
            Some(value) => {
                if let Some(lit) = value {
                    if let Some(&id) = buckets.by_key.get(&SelKey::Attr(*var, attr.clone(), lit)) {
                        out.push(id);
                    }
                }
            }
            // Absent entity or attribute: Cedar raises an error for each.
            None => out.extend_from_slice(all),
        }
    }
}

/// `Some(value)` when `uid` is in `entities` and has `attr` (the inner
/// `None`: a value no literal equals, e.g. a record); `None` when reading it
/// would raise an error (or cannot be known).
fn attr_value(entities: &Entities, uid: &EntityUid, attr: &str) -> Option<Option<Lit>> {
    let entity = entities.get(uid)?;
    let value = entity.attr(attr)?.ok()?;
    Some(match value {
        EvalResult::Bool(b) => Some(Lit::Bool(b)),
        EvalResult::Long(n) => Some(Lit::Long(n)),
        EvalResult::String(s) => Some(Lit::Str(s)),
        EvalResult::EntityUid(u) => Some(Lit::Uid(u)),
        _ => None,
    })
}

fn action_key(policy: &Policy) -> ActionKey {
    match policy.action_constraint() {
        ActionConstraint::Eq(a) => ActionKey::Eq(a),
        ActionConstraint::In(list) if list.len() == 1 => list
            .into_iter()
            .next()
            .map_or(ActionKey::Any, ActionKey::In),
        _ => ActionKey::Any,
    }
}

/// The policy's key, most selective first: `==` uid, then `in` uid, then
/// the first condition's literal equality, then `is`.
fn sel_key(policy: &Policy) -> SelKey {
    let (p_eq, p_in, p_is) = match policy.principal_constraint() {
        PrincipalConstraint::Eq(u) => (Some(u), None, None),
        PrincipalConstraint::In(u) | PrincipalConstraint::IsIn(_, u) => (None, Some(u), None),
        PrincipalConstraint::Is(t) => (None, None, Some(t)),
        PrincipalConstraint::Any => (None, None, None),
    };
    let (r_eq, r_in, r_is) = match policy.resource_constraint() {
        ResourceConstraint::Eq(u) => (Some(u), None, None),
        ResourceConstraint::In(u) | ResourceConstraint::IsIn(_, u) => (None, Some(u), None),
        ResourceConstraint::Is(t) => (None, None, Some(t)),
        ResourceConstraint::Any => (None, None, None),
    };
    if let Some(u) = p_eq {
        return SelKey::Eq(Var::Principal, u);
    }
    if let Some(u) = r_eq {
        return SelKey::Eq(Var::Resource, u);
    }
    if let Some(u) = p_in {
        return SelKey::In(Var::Principal, u);
    }
    if let Some(u) = r_in {
        return SelKey::In(Var::Resource, u);
    }
    if let Some((var, attr, lit)) = first_equality(policy) {
        return SelKey::Attr(var, attr, lit);
    }
    if let Some(t) = p_is {
        return SelKey::Is(Var::Principal, t);
    }
    r_is.map_or(SelKey::Residual, |t| SelKey::Is(Var::Resource, t))
}

/// `principal.A == LIT` or `resource.A == LIT` (either side) when it is the
/// leftmost `&&` conjunct of the policy's first clause, a `when`.
fn first_equality(policy: &Policy) -> Option<(Var, String, Lit)> {
    let est = policy.to_json().ok()?;
    let first = est.get("conditions")?.as_array()?.first()?;
    if first.get("kind")?.as_str()? != "when" {
        return None;
    }
    let mut expr = first.get("body")?;
    while let Some(and) = expr.get("&&") {
        expr = and.get("left")?;
    }
    let eq = expr.get("==")?;
    let (left, right) = (eq.get("left")?, eq.get("right")?);
    attr_of(left)
        .zip(literal(right))
        .or_else(|| attr_of(right).zip(literal(left)))
        .map(|((var, attr), lit)| (var, attr, lit))
}

/// `principal.A` or `resource.A` in EST.
fn attr_of(e: &serde_json::Value) -> Option<(Var, String)> {
    let dot = e.get(".")?;
    let var = match dot.get("left")?.get("Var")?.as_str()? {
        "principal" => Var::Principal,
        "resource" => Var::Resource,
        _ => return None,
    };
    Some((var, dot.get("attr")?.as_str()?.to_string()))
}

/// A literal entity uid, string, long or bool in EST.
fn literal(e: &serde_json::Value) -> Option<Lit> {
    let obj = e.as_object()?;
    if obj.len() != 1 {
        return None;
    }
    match obj.get("Value")? {
        serde_json::Value::String(s) => Some(Lit::Str(s.clone())),
        serde_json::Value::Bool(b) => Some(Lit::Bool(*b)),
        serde_json::Value::Number(n) => n.as_i64().map(Lit::Long),
        serde_json::Value::Object(o) if o.len() == 1 && o.contains_key("__entity") => {
            EntityUid::from_json(serde_json::Value::Object(o.clone()))
                .ok()
                .map(Lit::Uid)
        }
        _ => None,
    }
}
