//! The proof report: per invariant, the request environments checked and
//! the violations found, each with a counterexample (a request and a Cedar
//! JSON entity store that `partnergate authorize` replays).
//!
//! Owns [`ProofReport`] and the types it is made of. Plain data: it must
//! never know the solver, files on disk or how a counterexample is made.

use std::path::PathBuf;

use cedar_policy::RequestEnv;
use serde::Serialize;

use partnergate_policy::engine::{Decision, Effect};

use crate::invariants::InvariantKind;

/// One request environment: principal type × action × resource type.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct EnvLabel {
    /// The principal entity type, e.g. `User`.
    pub principal: String,
    /// The action uid in Cedar syntax, e.g. `Action::"view"`.
    pub action: String,
    /// The resource entity type.
    pub resource: String,
}

impl EnvLabel {
    pub(crate) fn of(env: &RequestEnv) -> Self {
        EnvLabel {
            principal: env.principal().to_string(),
            action: env.action().to_string(),
            resource: env.resource().to_string(),
        }
    }
}

impl std::fmt::Display for EnvLabel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} × {} × {}",
            self.principal, self.action, self.resource
        )
    }
}

/// A concrete request and entity store that break an invariant.
#[derive(Debug, Clone, Serialize)]
pub struct Counterexample {
    /// Entity uids in Cedar syntax, e.g. `User::"a"`.
    pub principal: String,
    /// The action uid in Cedar syntax.
    pub action: String,
    /// The resource uid in Cedar syntax.
    pub resource: String,
    /// The context record (Cedar JSON).
    pub context: serde_json::Value,
    /// The entity store (Cedar JSON entity array).
    pub entities: serde_json::Value,
    /// The decision that shows the violation: Allow for a ceiling (the
    /// production allows what the ceiling does not), Deny for a floor; none
    /// for never-errors and equivalence.
    pub offending: Option<Effect>,
    /// The production pack's decision (fail-closed, as `authorize` gives it),
    /// computed by replaying the JSON above.
    pub production: Decision,
    /// Whether the replayed production decision is the offending one (a
    /// `false` here means fail-closed semantics hide what Cedar's allow).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confirmed: Option<bool>,
    /// For `--equivalent`: the other pack's decision on the same input.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub other: Option<Decision>,
}

/// One violated request environment.
#[derive(Debug, Clone, Serialize)]
pub struct Violation {
    /// The request environment in which the invariant fails.
    pub environment: EnvLabel,
    /// For never-errors: the policy that can error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// A concrete input that shows the failure, from the solver's model.
    pub counterexample: Counterexample,
}

/// The outcome of one invariant over every request environment.
#[derive(Debug, Clone, Serialize)]
pub struct InvariantResult {
    /// The invariant's id (file stem; `never-errors`, `equivalent` for the
    /// built-in checks).
    pub id: String,
    /// What was checked.
    pub kind: InvariantKind,
    /// The invariant's `@description`, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The invariant file; none for the built-in checks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// True when no environment violates it (`violations` is empty).
    pub holds: bool,
    /// Request environments checked.
    pub environments: usize,
    /// Solver queries made.
    pub queries: usize,
    /// Wall time for this invariant (compiling it and every solver query).
    pub millis: f64,
    /// One entry per violated request environment.
    pub violations: Vec<Violation>,
}

/// The result of proving a pack.
#[derive(Debug, Clone, Serialize)]
pub struct ProofReport {
    /// The content-hash version of the production pack proven.
    pub policy_version: String,
    /// Every request environment of the schema, in the order checked.
    pub environments: Vec<EnvLabel>,
    /// One result per invariant (built-in checks included), in order.
    pub results: Vec<InvariantResult>,
    /// Compiling the production policies for every environment.
    pub compile_millis: f64,
    /// Everything, including starting the solver.
    pub total_millis: f64,
}

impl ProofReport {
    /// True when every invariant holds.
    pub fn holds(&self) -> bool {
        self.results.iter().all(|r| r.holds)
    }

    /// The invariants that do not hold.
    pub fn violated(&self) -> impl Iterator<Item = &InvariantResult> {
        self.results.iter().filter(|r| !r.holds)
    }
}
