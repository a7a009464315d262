//! The pack every decision is made against: [`PolicyPack`] (the policy
//! set, its schema, version and files, each policy's [`PolicyInfo`], the
//! action entities a decision needs, the policy index, what the pack says
//! about time, and the values reload gates added, [`Extension`]).
//!
//! Owns the type and its lookups; it must never know how files are read,
//! parsed or validated (the module root assembles a pack from those steps).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use cedar_policy::{Entity, EntityUid, PolicySet, Schema};
use serde::Serialize;

use super::clock::Clock;
use crate::problem::Problem;

/// Where a policy came from.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PolicyInfo {
    /// The policy id: its `@id` annotation, or Cedar's default `policyN`.
    pub id: String,
    /// The one-line `@description` annotation, if any.
    pub description: Option<String>,
    /// `permit` or `forbid`.
    pub effect: String,
    /// The file the policy was read from.
    pub file: PathBuf,
    /// 1-based line of the policy's first character in `file`.
    pub line: usize,
}

/// A parsed, strictly validated set of policies with its schema.
#[derive(Debug, Clone)]
pub struct PolicyPack {
    /// Every policy of the pack, under its `@id` (else `policyN`).
    pub policy_set: PolicySet,
    /// The schema the policies were validated against; `None` when the pack has none (nothing was validated).
    pub schema: Option<Schema>,
    /// Content hash of the policy files and the schema, `sha256:` + 16 hex digits.
    pub version: String,
    /// The files read, in load order (policy files, then the schema).
    pub files: Vec<PathBuf>,
    /// The schema file the pack was loaded with, by its role (never look for
    /// it by its position in `files`).
    pub schema_file: Option<PathBuf>,
    /// Policies in load order.
    pub policies: Vec<PolicyInfo>,
    /// Validation warnings, rendered (only when a schema was given).
    pub warnings: Vec<Problem>,
    pub(super) index: HashMap<String, usize>,
    /// For each action of the schema: its entity and its ancestors' entities
    /// (what a decision needs to evaluate `action in ...`).
    pub(super) actions: HashMap<EntityUid, Vec<Entity>>,
    /// The same entities as Cedar entity JSON texts (for decision logs).
    pub(super) action_texts: HashMap<EntityUid, Box<[Arc<str>]>>,
    /// Values the reload gates built from other files of the pack (e.g. the
    /// quotas): part of this snapshot, so they serve with these policies
    /// and are replaced only with them.
    pub(super) extensions: Vec<Extension>,
    /// The index of `policy_set`, built with it (so per pack version).
    pub(super) policy_index: std::sync::Arc<crate::index::PolicyIndex>,
    /// The clock: the actions whose context declares [`CLOCK_ATTRIBUTE`](super::CLOCK_ATTRIBUTE)
    /// and whether the policies use the time only in comparisons.
    pub(super) clock: Clock,
}

/// A value a reload gate adds to the pack it accepted (any type; looked up
/// by type with [`PolicyPack::extension`]).
pub type Extension = std::sync::Arc<dyn std::any::Any + Send + Sync>;

impl PolicyPack {
    /// The extension of type `T` a gate added, if any.
    pub fn extension<T: std::any::Any + Send + Sync>(&self) -> Option<std::sync::Arc<T>> {
        self.extensions
            .iter()
            .find_map(|e| e.clone().downcast::<T>().ok())
    }

    /// Add a gate's value (replacing one of the same type).
    pub fn add_extension(&mut self, value: Extension) {
        let id = (*value).type_id();
        self.extensions.retain(|e| (**e).type_id() != id);
        self.extensions.push(value);
    }

    /// Metadata of one policy by id.
    pub fn policy(&self, id: &str) -> Option<&PolicyInfo> {
        self.index.get(id).map(|&i| &self.policies[i])
    }

    /// The description of a policy, if it has one.
    pub fn description(&self, id: &str) -> Option<&str> {
        self.policy(id).and_then(|p| p.description.as_deref())
    }

    /// The index of [`PolicyPack::policy_set`], built when the pack loaded.
    pub fn policy_index(&self) -> &crate::index::PolicyIndex {
        &self.policy_index
    }

    /// Whether the action's context declares the clock ([`CLOCK_ATTRIBUTE`](super::CLOCK_ATTRIBUTE)).
    pub fn takes_clock(&self, action: &EntityUid) -> bool {
        self.clock.actions.contains(action)
    }

    /// Whether the policies use datetimes only in comparisons: no
    /// `datetime(..)`/`duration(..)` literal and no datetime arithmetic
    /// (`offset`, `durationSince`, `toDate`, `toTime`, ...) in any policy
    /// text. Then a decision taken at time `t` is the same at every later
    /// time before the first datetime value of its entities and context
    /// that is `>= t`; otherwise a clocked decision holds only at `t`.
    pub fn time_compared_only(&self) -> bool {
        self.clock.compared_only
    }

    /// The action entity and its ancestors, from the schema (empty without one).
    pub fn action_entities(&self, action: &EntityUid) -> &[Entity] {
        self.actions.get(action).map_or(&[], Vec::as_slice)
    }

    /// [`PolicyPack::action_entities`] as Cedar entity JSON texts, made once
    /// per pack (schema action entities hold no attributes: they always
    /// serialise).
    pub fn action_entities_json(&self, action: &EntityUid) -> &[Arc<str>] {
        self.action_texts.get(action).map_or(&[], |t| t)
    }
}

/// Each action of the schema with its entity and its ancestors' entities,
/// and the same entities as Cedar entity JSON texts (empty without a schema).
pub(super) type ActionEntities = (
    HashMap<EntityUid, Vec<Entity>>,
    HashMap<EntityUid, Box<[Arc<str>]>>,
);

/// The action entities of `schema`, built once per pack: the entities and
/// their JSON texts ([`PolicyPack::action_entities`],
/// [`PolicyPack::action_entities_json`]).
pub(super) fn action_entities(schema: Option<&Schema>) -> ActionEntities {
    let actions = schema.map(action_closure).unwrap_or_default();
    let action_texts = actions
        .iter()
        .map(|(uid, entities)| {
            let texts = entities
                .iter()
                .filter_map(|e| e.to_json_value().ok())
                .map(|v| Arc::from(v.to_string()))
                .collect();
            (uid.clone(), texts)
        })
        .collect();
    (actions, action_texts)
}

fn action_closure(schema: &Schema) -> HashMap<EntityUid, Vec<Entity>> {
    let mut out = HashMap::new();
    let Ok(all) = schema.action_entities() else {
        return out;
    };
    for e in all.iter() {
        let (uid, _, ancestors) = e.clone().into_inner();
        let mut v = vec![e.clone()];
        v.extend(ancestors.iter().filter_map(|a| all.get(a).cloned()));
        out.insert(uid, v);
    }
    out
}
