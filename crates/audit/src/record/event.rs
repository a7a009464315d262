//! The events callers hand to the writer ([`Event`]: a decision, a change,
//! a reload, a search page), what a record is about ([`Kind`]), a
//! decision's shadow disagreement ([`Shadow`]) and gateway origin
//! ([`Gateway`]), how an event is masked before it is encoded, and how many
//! bytes it holds while it waits in the writer's queue.
//!
//! Knows nothing of how a record is encoded, hashed, written or read back.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::slice::{value_bytes, EntitySlice};
use crate::redact::Redaction;

use partnergate_policy::engine::{Decision, Effect, Reason};

/// What a record is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// An authorization decision.
    Decision,
    /// A change to the directory or the registry, or an orchestrator operation.
    Change,
    /// A policy reload, good or bad.
    Reload,
    /// Written by the log itself at open: a torn last line was cut away.
    Repair,
    /// Written by the log itself when writing resumes: records that were
    /// not logged (write failures, queue drops), how many and when.
    Gap,
    /// One page of a search (subject, resource or action search): the
    /// query, the policy version, the number of results and the time taken.
    Search,
    /// Written by the log itself when the retention rule deletes its oldest
    /// rotated files: which files (and seq ranges) and where the kept chain
    /// now starts.
    Retention,
}

impl Kind {
    /// The record's `kind` value: `decision`, `change`, `reload`, `repair`,
    /// `gap`, `search` or `retention`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Decision => "decision",
            Kind::Change => "change",
            Kind::Reload => "reload",
            Kind::Repair => "repair",
            Kind::Gap => "gap",
            Kind::Search => "search",
            Kind::Retention => "retention",
        }
    }
}

impl std::str::FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "decision" => Ok(Kind::Decision),
            "change" => Ok(Kind::Change),
            "reload" => Ok(Kind::Reload),
            "repair" => Ok(Kind::Repair),
            "gap" => Ok(Kind::Gap),
            "search" => Ok(Kind::Search),
            "retention" => Ok(Kind::Retention),
            other => Err(format!(
                "unknown kind `{other}` (expected decision, change, reload, repair, gap, search or retention)"
            )),
        }
    }
}

/// The disagreement of a candidate (shadow) policy set with the live one,
/// attached to a decision record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shadow {
    /// The candidate's decision (differs from the record's `decision`).
    pub decision: Effect,
    /// The candidate's determining policies.
    pub reasons: Vec<Reason>,
    /// The candidate's evaluation errors.
    pub errors: Vec<String>,
    /// The candidate pack's version.
    pub policy_version: String,
}

/// The `shadow` field for a decision: `Some` exactly when the candidate's
/// effect differs from the live one (reasons alone differing is agreement).
pub fn shadow_of(live: &Decision, candidate: &Decision) -> Option<Shadow> {
    if live.decision == candidate.decision {
        return None;
    }
    Some(Shadow {
        decision: candidate.decision,
        reasons: candidate.reasons.clone(),
        errors: candidate.errors.clone(),
        policy_version: candidate.policy_version.clone(),
    })
}

/// Where a gateway decision came from: the proxied HTTP request
/// and the route that mapped it. A decision record carries it as `gateway`
/// only when a proxy asked (Envoy's ext_authz, a forward-auth endpoint).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gateway {
    /// The proxied request's method.
    pub method: String,
    /// The proxied request's path (without the query).
    pub path: String,
    /// The matched route's path template.
    pub route: String,
    /// How the principal was established: `jwt` or `header`.
    pub source: String,
    /// The front door: `grpc` (Envoy's ext_authz) or `http` (forward auth).
    pub via: String,
    /// A dry-run route: the decision was logged, the request allowed whatever it said.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
}

/// A new decision id (UUID v7: time-ordered), to return to the caller and
/// to log in `decision_id`.
pub fn new_decision_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// One authorization decision, as the server or CLI hands it to the log.
#[derive(Debug, Clone, PartialEq)]
pub struct DecisionEvent {
    /// The id returned to the caller ([`new_decision_id`]).
    pub decision_id: String,
    /// The caller's request id (`X-Request-ID`), if any.
    pub request_id: Option<String>,
    /// Entity uids in Cedar syntax, e.g. `User::"alice"` (shared: the
    /// sidecar formats a question's uids once, not per decision).
    pub principal: Arc<str>,
    /// The action uid in Cedar syntax.
    pub action: Arc<str>,
    /// The resource uid in Cedar syntax.
    pub resource: Arc<str>,
    /// The request context (a JSON object, or null).
    pub context: Value,
    /// The entity slice the decision was made over, so that `audit replay`
    /// can re-evaluate it. Share one [`EntitySlice`] between the decisions
    /// that used the same entities: it is encoded once.
    pub entities: Arc<EntitySlice>,
    /// The decision given: effect, determining policies, errors, version.
    pub decision: Decision,
    /// Time taken to decide, in microseconds.
    pub latency_us: u64,
    /// Disagreement of the shadow policy set, if any ([`shadow_of`]).
    pub shadow: Option<Shadow>,
    /// The uids (sorted) of the slice's entities that came from the request
    /// (`entities`, AuthZEN `properties`) rather than from the store; the
    /// record carries `request_entities` only when there are some.
    pub request_entities: Vec<String>,
    /// The proxied HTTP request of a gateway decision, if a proxy asked.
    pub gateway: Option<Gateway>,
}

impl DecisionEvent {
    /// A decision over `entities` with a new decision id, no request id, a
    /// null context, no latency, no shadow and no request entities; the
    /// `with_*` methods set the rest.
    pub fn new(
        principal: impl Into<Arc<str>>,
        action: impl Into<Arc<str>>,
        resource: impl Into<Arc<str>>,
        entities: Arc<EntitySlice>,
        decision: Decision,
    ) -> Self {
        DecisionEvent {
            decision_id: new_decision_id(),
            request_id: None,
            principal: principal.into(),
            action: action.into(),
            resource: resource.into(),
            context: Value::Null,
            entities,
            decision,
            latency_us: 0,
            shadow: None,
            request_entities: Vec::new(),
            gateway: None,
        }
    }

    /// The id returned to the caller (instead of a new one).
    pub fn with_decision_id(mut self, id: impl Into<String>) -> Self {
        self.decision_id = id.into();
        self
    }

    /// The caller's request id (`X-Request-ID`).
    pub fn with_request_id(mut self, id: Option<String>) -> Self {
        self.request_id = id;
        self
    }

    /// The request context (`None`: null).
    pub fn with_context(mut self, context: Option<Value>) -> Self {
        self.context = context.unwrap_or(Value::Null);
        self
    }

    /// The time taken to decide, in microseconds.
    pub fn with_latency_us(mut self, us: u64) -> Self {
        self.latency_us = us;
        self
    }

    /// The shadow set's disagreement, if any ([`shadow_of`]).
    pub fn with_shadow(mut self, shadow: Option<Shadow>) -> Self {
        self.shadow = shadow;
        self
    }

    /// The uids (sorted) of the entities that came from the request.
    pub fn with_request_entities(mut self, uids: Vec<String>) -> Self {
        self.request_entities = uids;
        self
    }

    /// The proxied request of a gateway decision.
    pub fn with_gateway(mut self, gateway: Option<Gateway>) -> Self {
        self.gateway = gateway;
        self
    }
}

/// A change to the directory or registry, or an orchestrator operation.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeEvent {
    /// The decision that authorized the change, if there was one.
    pub decision_id: Option<String>,
    /// The request (`X-Request-ID`) that made the change, if known.
    pub request_id: Option<String>,
    /// Who made the change (an entity uid or an operator name).
    pub actor: String,
    /// What was done, e.g. `user.dismiss` or `registry.update`.
    pub operation: String,
    /// The state before (null when created) and after (null when deleted).
    pub before: Value,
    /// The state after (null when deleted).
    pub after: Value,
    /// Names this change record: kept with the write in the store's
    /// transaction until the log holds the record (see [`crate::recovered`]).
    pub change_id: Option<String>,
    /// Written at a start from the store, because the record was not in the
    /// log when the process stopped (`"recovered": true`).
    pub recovered: bool,
}

impl ChangeEvent {
    /// The one constructor: `actor` did `operation`, changing `before` into
    /// `after`; the decision and the request are added with
    /// [`ChangeEvent::decided_by`] and [`ChangeEvent::request`].
    pub fn new(
        actor: impl Into<String>,
        operation: impl Into<String>,
        before: Value,
        after: Value,
    ) -> Self {
        ChangeEvent {
            decision_id: None,
            request_id: None,
            actor: actor.into(),
            operation: operation.into(),
            before,
            after,
            change_id: None,
            recovered: false,
        }
    }

    /// The change record's id ([`ChangeEvent::change_id`]).
    pub fn change(mut self, change_id: Option<String>) -> Self {
        self.change_id = change_id;
        self
    }

    /// The decision that authorized the change (None: no policy question did).
    pub fn decided_by(mut self, decision_id: Option<String>) -> Self {
        self.decision_id = decision_id;
        self
    }

    /// The request (`X-Request-ID`) that made the change.
    pub fn request(mut self, request_id: Option<String>) -> Self {
        self.request_id = request_id;
        self
    }
}

/// A policy reload, successful (`error` None) or not.
#[derive(Debug, Clone, PartialEq)]
pub struct ReloadEvent {
    /// The request that triggered the reload, if any.
    pub request_id: Option<String>,
    /// The files read.
    pub files: Vec<String>,
    /// The version now live (after a failed reload: the one still live).
    pub version: Option<String>,
    /// Why the reload failed, if it did.
    pub error: Option<String>,
}

/// One page of a search: one record, however many candidates it
/// evaluated (not one record per candidate).
#[derive(Debug, Clone, PartialEq)]
pub struct SearchEvent {
    /// The search page's id.
    pub decision_id: String,
    /// The request (`X-Request-ID`) that asked.
    pub request_id: Option<String>,
    /// `subject`, `resource` or `action`.
    pub search: String,
    /// The principal's uid, or the searched type (subject search).
    pub principal: String,
    /// The action's uid, or `*` (action search).
    pub action: String,
    /// The resource's uid, or the searched type (resource search).
    pub resource: String,
    /// The request context.
    pub context: Value,
    /// How many results the page returned.
    pub results: u64,
    /// The number of results of the whole search, when known (last page).
    pub total: Option<u64>,
    /// How many candidates were confirmed with a full decision.
    pub evaluated: u64,
    /// The pack version that decided.
    pub policy_version: String,
    /// Time taken, in microseconds.
    pub latency_us: u64,
}

/// Something to append to the log.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// An authorization decision.
    Decision(Box<DecisionEvent>),
    /// A change to the directory or registry, or an orchestrator operation.
    Change(ChangeEvent),
    /// A policy reload.
    Reload(ReloadEvent),
    /// One page of a search.
    Search(Box<SearchEvent>),
}

impl Event {
    /// Mask the event in place under `redaction`. A decision's entity slice
    /// is shared and is masked when it is encoded ([`EntitySlice::encoded`]).
    pub fn redact(&mut self, redaction: &Redaction) {
        if redaction.is_empty() {
            return;
        }
        match self {
            Event::Decision(d) => redaction.context(&mut d.context),
            Event::Change(c) => {
                for v in [&mut c.before, &mut c.after] {
                    redaction.change_state(v);
                }
            }
            Event::Search(q) => redaction.context(&mut q.context),
            Event::Reload(_) => {}
        }
    }
}

impl Event {
    /// The `kind` of the record this event becomes.
    pub fn kind(&self) -> Kind {
        match self {
            Event::Decision(_) => Kind::Decision,
            Event::Change(_) => Kind::Change,
            Event::Reload(_) => Kind::Reload,
            Event::Search(_) => Kind::Search,
        }
    }
}

impl Event {
    /// About how many bytes the event holds in memory while it waits in
    /// the writer's queue: its strings and JSON values (their text plus a
    /// fixed overhead per node) and its entity slice, counted in full even
    /// when other decisions share it. The writer's byte bound
    /// ([`AuditConfig::queue_bytes`](crate::AuditConfig::queue_bytes)) is
    /// kept in these units.
    pub fn held_bytes(&self) -> u64 {
        const BASE: u64 = 512;
        let s = |x: &str| x.len() as u64;
        let o = |x: &Option<String>| x.as_deref().map_or(0, s);
        BASE + match self {
            Event::Decision(d) => {
                let reasons = |rs: &[Reason]| -> u64 {
                    rs.iter()
                        .map(|r| 64 + s(&r.id) + r.description.as_deref().map_or(0, s))
                        .sum()
                };
                let strs = |v: &[String]| -> u64 { v.iter().map(|e| 24 + s(e)).sum() };
                s(&d.decision_id)
                    + o(&d.request_id)
                    + s(&d.principal)
                    + s(&d.action)
                    + s(&d.resource)
                    + value_bytes(&d.context)
                    + d.entities.held_bytes()
                    + reasons(&d.decision.reasons)
                    + strs(&d.decision.errors)
                    + s(&d.decision.policy_version)
                    + strs(&d.request_entities)
                    + d.gateway.as_ref().map_or(0, |g| {
                        s(&g.method) + s(&g.path) + s(&g.route) + s(&g.source) + s(&g.via)
                    })
                    + d.shadow.as_ref().map_or(0, |sh| {
                        reasons(&sh.reasons) + strs(&sh.errors) + s(&sh.policy_version)
                    })
            }
            Event::Change(c) => {
                o(&c.decision_id)
                    + o(&c.request_id)
                    + s(&c.actor)
                    + s(&c.operation)
                    + value_bytes(&c.before)
                    + value_bytes(&c.after)
            }
            Event::Reload(r) => {
                o(&r.request_id)
                    + r.files.iter().map(|f| 24 + s(f)).sum::<u64>()
                    + o(&r.version)
                    + o(&r.error)
            }
            Event::Search(q) => {
                s(&q.decision_id)
                    + o(&q.request_id)
                    + s(&q.search)
                    + s(&q.principal)
                    + s(&q.action)
                    + s(&q.resource)
                    + value_bytes(&q.context)
                    + s(&q.policy_version)
            }
        }
    }
}

impl From<DecisionEvent> for Event {
    fn from(e: DecisionEvent) -> Self {
        Event::Decision(Box::new(e))
    }
}

impl From<ChangeEvent> for Event {
    fn from(e: ChangeEvent) -> Self {
        Event::Change(e)
    }
}

impl From<SearchEvent> for Event {
    fn from(e: SearchEvent) -> Self {
        Event::Search(Box::new(e))
    }
}

impl From<ReloadEvent> for Event {
    fn from(e: ReloadEvent) -> Self {
        Event::Reload(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shadow_only_when_effects_differ() {
        let d = |e| Decision {
            decision: e,
            reasons: vec![],
            errors: vec![],
            policy_version: "v".into(),
        };
        assert!(shadow_of(&d(Effect::Allow), &d(Effect::Allow)).is_none());
        let s = shadow_of(&d(Effect::Allow), &d(Effect::Deny)).unwrap();
        assert_eq!(s.decision, Effect::Deny);
    }
}
