//! The record format of the decision log: the events callers hand to the
//! writer ([`Event`]), the record as read back ([`Record`]), and the
//! canonical encoding and SHA-256 hash that chain records together.
//!
//! Canonical encoding (what `hash` is computed over): the record as a JSON
//! object *without* its `hash` member, objects with their keys sorted by
//! byte order at every depth, no whitespace, strings and numbers as
//! serde_json writes them. `hash` = lowercase hex SHA-256 of those bytes.
//! Because it is computed from the parsed JSON value, any re-serialisation
//! of the same value (key order, spacing) verifies the same.
//!
//! The writer does not build that encoding twice: [`RecordEncoder`] encodes
//! each field value once (canonically), hashes the pieces in key order and
//! writes the same pieces in the documented order. A decision's entity slice
//! ([`EntitySlice`]) is redacted, encoded and hashed once however many
//! decisions share it; a file carries it inline (`entities`) on the first
//! decision that used it and names it by `entities_hash` on every decision.

use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::redact::Redaction;

use partnergate_policy::engine::{Decision, Effect, Reason};

/// `prev_hash` of the very first record of a log: 64 zeros.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

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

/// Where a gateway decision came from (issue #15): the proxied HTTP request
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

/// The entity slice of a decision (a Cedar entity JSON array), shared by
/// every decision made over the same entities. The writer redacts,
/// canonically encodes and hashes it at most once per redaction.
///
/// A slice is given either as a JSON value or as the JSON texts of its
/// entities ([`EntitySlice::from_texts`]: shared with whoever holds them,
/// parsed only when encoded, and never kept parsed), so that a slice kept
/// by a cache costs its encoding, not a second copy of its entities.
#[derive(Debug)]
pub struct EntitySlice {
    json: SliceJson,
    /// Why the decision's entities could not be turned into JSON (the slice
    /// is then `null` and the record says so in `entities_error`); for
    /// texts, known once they are parsed.
    error: OnceLock<Option<String>>,
    encoded: OnceLock<(u64, Arc<EncodedSlice>)>,
    /// [`EntitySlice::held_bytes`], computed once.
    bytes: OnceLock<u64>,
}

/// Where a slice's JSON comes from.
#[derive(Debug)]
enum SliceJson {
    Value(Value),
    Texts(Box<[Arc<str>]>),
}

/// An entity slice as written: redacted, canonically encoded, hashed.
#[derive(Debug, PartialEq, Eq)]
pub struct EncodedSlice {
    /// Lowercase hex SHA-256 of `canonical`: the record's `entities_hash`.
    pub hash: String,
    /// The canonical encoding of the redacted entity array.
    pub canonical: Vec<u8>,
}

impl EntitySlice {
    /// The slice of a Cedar entity JSON array.
    pub fn new(json: Value) -> Arc<Self> {
        Arc::new(EntitySlice {
            json: SliceJson::Value(json),
            error: OnceLock::from(None),
            encoded: OnceLock::new(),
            bytes: OnceLock::new(),
        })
    }

    /// The slice whose entities are the Cedar entity JSON `texts`, in
    /// order. A text that does not parse makes the slice unavailable (its
    /// reason in `entities_error`) when it is encoded, logged as an error.
    pub fn from_texts(texts: Box<[Arc<str>]>) -> Arc<Self> {
        Arc::new(EntitySlice {
            json: SliceJson::Texts(texts),
            error: OnceLock::new(),
            encoded: OnceLock::new(),
            bytes: OnceLock::new(),
        })
    }

    /// The slice as one JSON value (texts parsed), or why it cannot be.
    fn parsed(&self) -> Result<std::borrow::Cow<'_, Value>, String> {
        match &self.json {
            SliceJson::Value(v) => Ok(std::borrow::Cow::Borrowed(v)),
            SliceJson::Texts(texts) => texts
                .iter()
                .map(|t| serde_json::from_str(t))
                .collect::<Result<Vec<Value>, _>>()
                .map(|v| std::borrow::Cow::Owned(Value::Array(v)))
                .map_err(|e| {
                    let reason = format!("a stored entity of the slice is not JSON: {e}");
                    tracing::error!(error = %reason, "a decision's entity slice could not be read for the decision log");
                    reason
                }),
        }
    }

    /// The slice of a decision whose entities could not be serialised:
    /// `null`, and `reason` in the record's `entities_error`, so that replay
    /// reports the record as not replayable instead of deciding over nothing.
    pub fn unavailable(reason: impl Into<String>) -> Arc<Self> {
        Arc::new(EntitySlice {
            json: SliceJson::Value(Value::Null),
            error: OnceLock::from(Some(reason.into())),
            encoded: OnceLock::new(),
            bytes: OnceLock::new(),
        })
    }

    /// About how many bytes the slice holds (its entities, and their
    /// encoding once the writer has made it), computed once: what the
    /// writer's queue charges for it ([`Event::held_bytes`]).
    pub fn held_bytes(&self) -> u64 {
        *self.bytes.get_or_init(|| {
            let given = match &self.json {
                SliceJson::Value(v) => value_bytes(v),
                SliceJson::Texts(texts) => texts.iter().map(|t| t.len() as u64 + 16).sum(),
            };
            // The canonical encoding kept beside it is about its text again.
            given.saturating_mul(2)
        })
    }

    /// Why the slice is unavailable, if it is.
    pub fn error(&self) -> Option<&str> {
        self.error.get_or_init(|| self.parsed().err()).as_deref()
    }

    /// The entities as given (not redacted); `null` when unavailable.
    pub fn json(&self) -> std::borrow::Cow<'_, Value> {
        self.parsed()
            .unwrap_or(std::borrow::Cow::Owned(Value::Null))
    }

    /// The slice redacted by `redaction` and encoded. `key` identifies the
    /// redaction (0 for none): the first encoding is kept for that key, any
    /// other redaction encodes afresh.
    pub fn encoded(&self, redaction: &Redaction, key: u64) -> Arc<EncodedSlice> {
        if let Some((k, e)) = self.encoded.get() {
            if *k == key {
                return e.clone();
            }
        }
        let encode = || {
            let parsed = self.parsed();
            let _ = self.error.set(parsed.as_ref().err().cloned());
            let json = parsed.unwrap_or(std::borrow::Cow::Owned(Value::Null));
            let mut canonical = Vec::with_capacity(1024);
            if redaction.is_empty() {
                let _ = write_canonical(&json, &mut canonical);
            } else {
                let mut masked = json.into_owned();
                redaction.entities(&mut masked);
                let _ = write_canonical(&masked, &mut canonical);
            }
            Arc::new(EncodedSlice {
                hash: hex::encode(Sha256::digest(&canonical)),
                canonical,
            })
        };
        if self.encoded.get().is_some() {
            return encode();
        }
        self.encoded.get_or_init(|| (key, encode())).1.clone()
    }
}

impl PartialEq for EntitySlice {
    fn eq(&self, other: &Self) -> bool {
        self.json() == other.json() && self.error() == other.error()
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

/// About how many bytes a JSON value holds in memory: the text of its
/// strings and keys plus a fixed overhead per node and per member.
pub fn value_bytes(v: &Value) -> u64 {
    const NODE: u64 = std::mem::size_of::<Value>() as u64;
    const MEMBER: u64 = 48;
    NODE + match v {
        Value::Null | Value::Bool(_) | Value::Number(_) => 0,
        Value::String(t) => t.len() as u64,
        Value::Array(a) => a.iter().map(value_bytes).sum(),
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| MEMBER + k.len() as u64 + value_bytes(v))
            .sum(),
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

/// What a `repair` record says was cut.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairInfo {
    /// The file that had a torn last line.
    pub file: String,
    /// The byte offset the file was truncated to.
    pub offset: u64,
    /// How many bytes were cut.
    pub cut_bytes: u64,
    /// SHA-256 (hex) of the bytes cut, for the record.
    pub cut_sha256: String,
}

/// What a `gap` record says was not logged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GapInfo {
    /// Records not logged: `write_failed + queue_dropped`.
    pub records: u64,
    /// Accepted by the writer but lost to failed writes (e.g. a full disk).
    pub write_failed: u64,
    /// Refused by a full queue (`--audit-on-full drop`).
    pub queue_dropped: u64,
    /// Of `write_failed`, the decisions refused to their callers because
    /// their record could not be made durable (`--audit-required`).
    pub refused: u64,
    /// The timestamps of the first and last record not logged.
    pub from: String,
    /// See `from` (RFC 3339 UTC, like every `ts`).
    pub until: String,
    /// The write error, when there was one.
    pub error: Option<String>,
}

/// One rotated file a `retention` record states was deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetainedFile {
    /// The file's name when it was deleted (e.g. `decisions.jsonl.11`).
    pub file: String,
    /// The seq of its first record (none if it held no readable record).
    pub first_seq: Option<u64>,
    /// The seq of its last record.
    pub last_seq: Option<u64>,
    /// Its size in bytes.
    pub bytes: u64,
}

/// Where the kept chain starts after a retention: the first record that was
/// kept, named by its `seq` and `prev_hash`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainStart {
    /// The seq of the first record kept.
    pub seq: u64,
    /// Its `prev_hash`: the hash of the last record deleted.
    pub prev_hash: String,
}

/// What a `retention` record says was deleted, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionInfo {
    /// The rotated files deleted, oldest first.
    pub deleted: Vec<RetainedFile>,
    /// The first record kept: `audit verify` accepts a chain that starts
    /// there (and nowhere else but the genesis).
    pub kept_from: ChainStart,
    /// The rule that deleted them, e.g. `max_files=10`.
    pub rule: String,
}

/// A record as read back from the log: every field optional except the
/// chain fields, so that query and replay accept every kind.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
pub struct Record {
    /// The sequence number: the previous record's plus one.
    pub seq: u64,
    /// When the record was written, RFC 3339 UTC.
    pub ts: String,
    /// What the record is about (none if unknown to this version).
    pub kind: Option<Kind>,
    /// A decision's id, or the decision that authorized a change.
    #[serde(default)]
    pub decision_id: Option<String>,
    /// The request (`X-Request-ID`) that led to the record.
    #[serde(default)]
    pub request_id: Option<String>,
    /// The writer's replica name, when configured
    /// ([`AuditConfig::replica`](crate::AuditConfig::replica)).
    #[serde(default)]
    pub replica: Option<String>,
    /// A decision's principal uid in Cedar syntax.
    #[serde(default)]
    pub principal: Option<String>,
    /// A decision's action uid in Cedar syntax.
    #[serde(default)]
    pub action: Option<String>,
    /// A decision's resource uid in Cedar syntax.
    #[serde(default)]
    pub resource: Option<String>,
    /// A decision's request context (redacted).
    #[serde(default)]
    pub context: Option<Value>,
    /// A decision's entity slice (redacted Cedar entity JSON), when this
    /// record carries it inline; later records of the file name it by
    /// `entities_hash` only.
    #[serde(default)]
    pub entities: Option<Value>,
    /// Hex SHA-256 of the canonical slice: the name of the decision's slice
    /// within its file.
    #[serde(default)]
    pub entities_hash: Option<String>,
    /// Set when the decision's entities could not be logged (`entities` is null).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entities_error: Option<String>,
    /// A decision's effect.
    #[serde(default)]
    pub decision: Option<Effect>,
    /// A decision's determining policies (`@id` and `@description`).
    #[serde(default)]
    pub reasons: Option<Vec<Reason>>,
    /// A decision's evaluation errors.
    #[serde(default)]
    pub errors: Option<Vec<String>>,
    /// The pack version a decision was made under.
    #[serde(default)]
    pub policy_version: Option<String>,
    /// Time taken to decide, in microseconds.
    #[serde(default)]
    pub latency_us: Option<u64>,
    /// The shadow set's disagreement with the decision, if any.
    #[serde(default)]
    pub shadow: Option<Shadow>,
    /// The uids of the slice's entities that came from the request.
    #[serde(default)]
    pub request_entities: Option<Vec<String>>,
    /// A gateway decision's proxied request (method, path, route, source).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Gateway>,
    /// Who made a change.
    #[serde(default)]
    pub actor: Option<String>,
    /// What a change did, e.g. `user.dismiss`.
    #[serde(default)]
    pub operation: Option<String>,
    /// A change's state before (null when created).
    #[serde(default)]
    pub before: Option<Value>,
    /// A change's state after (null when deleted).
    #[serde(default)]
    pub after: Option<Value>,
    /// A change record's id, kept with its write in the store until the log holds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change_id: Option<String>,
    /// A change record written at a start from the store (its write's
    /// record was not in the log when the process stopped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovered: Option<bool>,
    /// The files a reload read.
    #[serde(default)]
    pub files: Option<Vec<String>>,
    /// The pack version live after a reload.
    #[serde(default)]
    pub version: Option<String>,
    /// Why a reload failed.
    #[serde(default)]
    pub error: Option<String>,
    /// What a `repair` record states was cut.
    #[serde(default)]
    pub repair: Option<RepairInfo>,
    /// What a `gap` record states was not logged.
    #[serde(default)]
    pub gap: Option<GapInfo>,
    /// What a `retention` record states was deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<RetentionInfo>,
    /// A `search` record's kind of search: `subject`, `resource` or `action`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search: Option<String>,
    /// A `search` record's number of results on its page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub results: Option<u64>,
    /// A `search` record's number of results of the whole search (last page).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    /// A `search` record's number of candidates evaluated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluated: Option<u64>,
    /// The previous record's `hash` (the genesis hash for the first).
    pub prev_hash: String,
    /// Hex SHA-256 of the canonical encoding of the record without `hash`.
    pub hash: String,
}

/// Builds one record: each member (`"key":value`, the value encoded
/// canonically) is written once, straight into the line, in the order given;
/// the hash is then taken over the same bytes in key order (the canonical
/// encoding of the record without `hash`), and `hash` closes the line.
/// Reused between records to keep its buffers.
#[derive(Debug, Default)]
pub struct RecordEncoder {
    /// Key, start of the member and end of its value in `line`, in the
    /// order given.
    fields: Vec<(Key, usize, usize)>,
    /// `fields` in key order, and the keys it was computed for (the same
    /// keys in the same order, as for every decision, reuse it).
    order: Vec<usize>,
    order_keys: Vec<(usize, usize)>,
    line: Vec<u8>,
    hash: String,
}

impl RecordEncoder {
    fn push_with(&mut self, key: impl Into<Key>, write: impl FnOnce(&mut Vec<u8>)) {
        if self.fields.is_empty() {
            self.line.clear();
            self.line.push(b'{');
        } else {
            self.line.push(b',');
        }
        let key = key.into();
        let start = self.line.len();
        write_key(&mut self.line, &key);
        self.line.push(b':');
        write(&mut self.line);
        self.fields.push((key, start, self.line.len()));
    }

    fn str(&mut self, key: &'static str, s: &str) {
        self.push_with(key, |o| write_str(o, s));
    }

    fn opt_str(&mut self, key: &'static str, s: Option<&str>) {
        self.push_with(key, |o| match s {
            Some(s) => write_str(o, s),
            None => o.extend_from_slice(b"null"),
        });
    }

    fn u64(&mut self, key: &'static str, n: u64) {
        use std::io::Write as _;
        // Writing into a Vec cannot fail.
        self.push_with(key, |o| {
            let _ = write!(o, "{n}");
        });
    }

    fn value(&mut self, key: impl Into<Key>, v: &Value) {
        self.push_with(key, |o| {
            let _ = write_canonical(v, o);
        });
    }

    /// The line of the last sealed record (without newline).
    pub fn line(&self) -> &[u8] {
        &self.line
    }

    /// The hash of the last sealed record (lowercase hex).
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// Hash the fields given since the last seal and write the line.
    fn seal(&mut self) -> &str {
        let fields = &self.fields;
        let same_keys = self.order_keys.len() == fields.len()
            && fields
                .iter()
                .zip(&self.order_keys)
                .all(|((k, _, _), &(ptr, len))| {
                    k.as_str().as_ptr() as usize == ptr && k.as_str().len() == len
                });
        if !same_keys {
            self.order.clear();
            self.order.extend(0..fields.len());
            self.order
                .sort_unstable_by(|&a, &b| fields[a].0.as_str().cmp(fields[b].0.as_str()));
            self.order_keys.clear();
            // Only static keys can be recognised by address next time.
            if fields.iter().all(|(k, _, _)| matches!(k, Key::Static(_))) {
                self.order_keys.extend(
                    fields
                        .iter()
                        .map(|(k, _, _)| (k.as_str().as_ptr() as usize, k.as_str().len())),
                );
            }
        }
        let mut h = Sha256::new();
        h.update(b"{");
        for (n, &i) in self.order.iter().enumerate() {
            let (_, start, end) = &fields[i];
            if n > 0 {
                h.update(b",");
            }
            h.update(&self.line[*start..*end]);
        }
        h.update(b"}");
        let mut hex = [0u8; 64];
        // 32 bytes always fit 64 hex digits.
        let _ = hex::encode_to_slice(h.finalize(), &mut hex);
        self.hash.clear();
        self.hash
            .push_str(std::str::from_utf8(&hex).unwrap_or_default());
        self.line.extend_from_slice(b",\"hash\":\"");
        self.line.extend_from_slice(&hex);
        self.line.extend_from_slice(b"\"}");
        self.fields.clear();
        &self.hash
    }
}

/// A JSON string, exactly as serde_json writes it.
fn write_str(out: &mut Vec<u8>, s: &str) {
    // Most strings (hashes, ids, timestamps) need no escape: checked eight
    // bytes at a time, then copied.
    if needs_escape(s.as_bytes()) {
        // Writing into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    } else {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    }
}

/// Whether a JSON string of `bytes` needs an escape: a control byte, `"`
/// or `\\` (SWAR: eight bytes per step).
fn needs_escape(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // A byte of `x` is zero.
    let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        let x = u64::from_le_bytes(w);
        // Bytes below 0x20 (exact for ASCII; a byte >= 0x80 may give a
        // false positive, which only takes the slow path).
        let control = x.wrapping_sub(ONES * 0x20) & !x & HIGH;
        if control | zero(x ^ (ONES * u64::from(b'"'))) | zero(x ^ (ONES * u64::from(b'\\'))) != 0 {
            return true;
        }
    }
    chunks
        .remainder()
        .iter()
        .any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

/// A member name of a record: one of ours (a literal, known to need no
/// escape) or one read from a record object.
#[derive(Debug)]
enum Key {
    Static(&'static str),
    Dynamic(String),
}

impl Key {
    fn as_str(&self) -> &str {
        match self {
            Key::Static(k) => k,
            Key::Dynamic(k) => k,
        }
    }
}

impl From<&'static str> for Key {
    fn from(k: &'static str) -> Self {
        Key::Static(k)
    }
}

impl From<String> for Key {
    fn from(k: String) -> Self {
        Key::Dynamic(k)
    }
}

fn write_key(out: &mut Vec<u8>, key: &Key) {
    match key {
        Key::Static(k) => {
            out.push(b'"');
            out.extend_from_slice(k.as_bytes());
            out.push(b'"');
        }
        Key::Dynamic(k) => write_str(out, k),
    }
}

fn write_strs(out: &mut Vec<u8>, items: &[String]) {
    out.push(b'[');
    for (i, s) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(out, s);
    }
    out.push(b']');
}

/// Reasons in canonical form (`description` sorts before `id`; an absent
/// description is omitted, as serde omits it).
fn write_reasons(out: &mut Vec<u8>, reasons: &[Reason]) {
    out.push(b'[');
    for (i, r) in reasons.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'{');
        if let Some(d) = &r.description {
            out.extend_from_slice(b"\"description\":");
            write_str(out, d);
            out.push(b',');
        }
        out.extend_from_slice(b"\"id\":");
        write_str(out, &r.id);
        out.push(b'}');
    }
    out.push(b']');
}

fn json<T: Serialize>(v: &T) -> Value {
    // Serialising our own plain data types cannot fail.
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// How a decision record carries its entity slice.
#[derive(Debug, Clone, Copy)]
pub enum SliceField<'a> {
    /// `entities` (the slice) and `entities_hash`.
    Inline(&'a EncodedSlice),
    /// `entities_hash` only: an earlier record of the same file has the slice.
    Reference(&'a EncodedSlice),
}

/// Where a record goes in the chain.
#[derive(Debug, Clone, Copy)]
pub struct Link<'a> {
    /// The record's sequence number.
    pub seq: u64,
    /// The hash of the record before it.
    pub prev_hash: &'a str,
}

/// The members of a decision record, after `seq`, `ts` and `kind`.
fn encode_decision(enc: &mut RecordEncoder, d: &DecisionEvent, slice: Option<SliceField<'_>>) {
    enc.str("decision_id", &d.decision_id);
    enc.opt_str("request_id", d.request_id.as_deref());
    enc.str("principal", &d.principal);
    enc.str("action", &d.action);
    enc.str("resource", &d.resource);
    enc.value("context", &d.context);
    let own;
    let slice = if let Some(s) = slice {
        s
    } else {
        own = d.entities.encoded(&Redaction::default(), 0);
        SliceField::Inline(&own)
    };
    let encoded = match slice {
        SliceField::Inline(e) => {
            enc.push_with("entities", |o| o.extend_from_slice(&e.canonical));
            e
        }
        SliceField::Reference(e) => e,
    };
    enc.str("entities_hash", &encoded.hash);
    if let Some(e) = d.entities.error() {
        enc.str("entities_error", e);
    }
    enc.str("decision", d.decision.decision.as_str());
    enc.push_with("reasons", |o| write_reasons(o, &d.decision.reasons));
    enc.push_with("errors", |o| write_strs(o, &d.decision.errors));
    enc.str("policy_version", &d.decision.policy_version);
    enc.u64("latency_us", d.latency_us);
    if let Some(s) = &d.shadow {
        enc.value("shadow", &json(s));
    }
    if !d.request_entities.is_empty() {
        enc.push_with("request_entities", |o| write_strs(o, &d.request_entities));
    }
    if let Some(g) = &d.gateway {
        enc.value("gateway", &json(g));
    }
}

/// Encode an event (context already redacted) as the record at `link`,
/// fields in the documented order; the line is then in
/// [`RecordEncoder::line`]. `slice` is how a decision carries its entities
/// (inline and unredacted when `None`). Returns the record's hash.
pub fn encode_event<'e>(
    enc: &'e mut RecordEncoder,
    event: &Event,
    ts: &str,
    replica: Option<&str>,
    link: Link<'_>,
    slice: Option<SliceField<'_>>,
) -> &'e str {
    enc.u64("seq", link.seq);
    enc.str("ts", ts);
    enc.str("kind", event.kind().as_str());
    match event {
        Event::Decision(d) => encode_decision(enc, d, slice),
        Event::Change(c) => {
            enc.opt_str("decision_id", c.decision_id.as_deref());
            enc.opt_str("request_id", c.request_id.as_deref());
            enc.str("actor", &c.actor);
            enc.str("operation", &c.operation);
            enc.value("before", &c.before);
            enc.value("after", &c.after);
            if let Some(id) = &c.change_id {
                enc.str("change_id", id);
            }
            if c.recovered {
                enc.value("recovered", &Value::Bool(true));
            }
        }
        Event::Reload(r) => {
            enc.opt_str("decision_id", None);
            enc.opt_str("request_id", r.request_id.as_deref());
            enc.push_with("files", |o| write_strs(o, &r.files));
            enc.opt_str("version", r.version.as_deref());
            enc.opt_str("error", r.error.as_deref());
        }
        Event::Search(q) => {
            enc.str("decision_id", &q.decision_id);
            enc.opt_str("request_id", q.request_id.as_deref());
            enc.str("search", &q.search);
            enc.str("principal", &q.principal);
            enc.str("action", &q.action);
            enc.str("resource", &q.resource);
            enc.value("context", &q.context);
            enc.u64("results", q.results);
            match q.total {
                Some(t) => enc.u64("total", t),
                None => enc.value("total", &Value::Null),
            }
            enc.u64("evaluated", q.evaluated);
            enc.str("policy_version", &q.policy_version);
            enc.u64("latency_us", q.latency_us);
        }
    }
    if let Some(r) = replica {
        enc.str("replica", r);
    }
    enc.str("prev_hash", link.prev_hash);
    enc.seal()
}

/// The body of a `repair` record.
pub fn repair_body(info: &RepairInfo, ts: &str, replica: Option<&str>) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("seq".into(), Value::Null);
    m.insert("ts".into(), Value::String(ts.to_string()));
    m.insert("kind".into(), Value::String(Kind::Repair.as_str().into()));
    m.insert("decision_id".into(), Value::Null);
    m.insert("request_id".into(), Value::Null);
    m.insert(
        "operation".into(),
        Value::String("truncate_torn_line".into()),
    );
    m.insert("repair".into(), json(info));
    if let Some(r) = replica {
        m.insert("replica".into(), Value::String(r.to_string()));
    }
    m
}

/// The body of a `gap` record.
pub fn gap_body(info: &GapInfo, ts: &str, replica: Option<&str>) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("seq".into(), Value::Null);
    m.insert("ts".into(), Value::String(ts.to_string()));
    m.insert("kind".into(), Value::String(Kind::Gap.as_str().into()));
    m.insert("decision_id".into(), Value::Null);
    m.insert("request_id".into(), Value::Null);
    m.insert("gap".into(), json(info));
    if let Some(r) = replica {
        m.insert("replica".into(), Value::String(r.to_string()));
    }
    m
}

/// The body of a `retention` record.
pub fn retention_body(info: &RetentionInfo, ts: &str, replica: Option<&str>) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("seq".into(), Value::Null);
    m.insert("ts".into(), Value::String(ts.to_string()));
    m.insert(
        "kind".into(),
        Value::String(Kind::Retention.as_str().into()),
    );
    m.insert("decision_id".into(), Value::Null);
    m.insert("request_id".into(), Value::Null);
    m.insert("retention".into(), json(info));
    if let Some(r) = replica {
        m.insert("replica".into(), Value::String(r.to_string()));
    }
    m
}

/// Complete a record object into a chained record: set `seq` (in place of a
/// `seq` member, else first) and `prev_hash`, compute and append `hash`.
/// Returns the JSON line (without newline) and the hash.
pub fn seal(m: Map<String, Value>, seq: u64, prev_hash: &str) -> (String, String) {
    let mut enc = RecordEncoder::default();
    if !m.contains_key("seq") {
        enc.u64("seq", seq);
    }
    for (k, v) in m {
        match k.as_str() {
            "seq" => enc.u64("seq", seq),
            "hash" | "prev_hash" => {}
            _ => enc.value(k, &v),
        }
    }
    enc.str("prev_hash", prev_hash);
    let hash = enc.seal().to_string();
    (String::from_utf8_lossy(enc.line()).into_owned(), hash)
}

/// Feeds written bytes into a SHA-256.
struct HashWriter(Sha256);

impl std::io::Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The hash a record object should carry: SHA-256 (lowercase hex) of its
/// canonical encoding without `hash`. The encoding is streamed into the
/// hash, never built.
pub fn compute_hash(record: &Map<String, Value>) -> String {
    // Buffered: serde_json writes a string in several small pieces.
    let mut h = std::io::BufWriter::with_capacity(4096, HashWriter(Sha256::new()));
    // Writing into a hasher cannot fail.
    let _ = write_canonical_map(record, &mut h, Some("hash"));
    match h.into_inner() {
        Ok(h) => hex::encode(h.0.finalize()),
        Err(_) => String::new(),
    }
}

/// The canonical encoding of a JSON value (sorted keys, no whitespace).
pub fn canonical(v: &Value) -> String {
    let mut out = Vec::new();
    let _ = write_canonical(v, &mut out);
    String::from_utf8(out).unwrap_or_default()
}

fn write_canonical<W: std::io::Write>(v: &Value, out: &mut W) -> std::io::Result<()> {
    match v {
        Value::Object(m) => write_canonical_map(m, out, None),
        Value::Array(a) => {
            out.write_all(b"[")?;
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.write_all(b",")?;
                }
                write_canonical(x, out)?;
            }
            out.write_all(b"]")
        }
        scalar => serde_json::to_writer(&mut *out, scalar).map_err(std::io::Error::other),
    }
}

fn write_canonical_map<W: std::io::Write>(
    m: &Map<String, Value>,
    out: &mut W,
    skip: Option<&str>,
) -> std::io::Result<()> {
    let mut members: Vec<(&String, &Value)> =
        m.iter().filter(|(k, _)| Some(k.as_str()) != skip).collect();
    members.sort_unstable_by(|a, b| a.0.cmp(b.0));
    out.write_all(b"{")?;
    for (i, (k, v)) in members.into_iter().enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        serde_json::to_writer(&mut *out, k).map_err(std::io::Error::other)?;
        out.write_all(b":")?;
        write_canonical(v, out)?;
    }
    out.write_all(b"}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A slice given as texts encodes, hashes and reads back as the same
    /// slice given as one value; a text that is not JSON makes it
    /// unavailable (`null` and a reason), never a half slice.
    #[test]
    fn a_slice_of_texts_is_the_slice_of_their_values() {
        let texts: Vec<Arc<str>> = vec![
            Arc::from(
                r#"{"uid":{"type":"User","id":"a"},"attrs":{"email":"a@x","n":1},"parents":[]}"#,
            ),
            Arc::from(r#"{"uid":{"type":"Account","id":"x"},"attrs":{},"parents":[]}"#),
        ];
        let values: Vec<Value> = texts
            .iter()
            .map(|t| serde_json::from_str(t).unwrap())
            .collect();
        let as_value = EntitySlice::new(Value::Array(values));
        let as_texts = EntitySlice::from_texts(texts.clone().into_boxed_slice());
        let redaction = Redaction {
            context_keys: vec![],
            entity_attrs: vec!["email".into()],
        };
        for (r, key) in [(Redaction::default(), 0), (redaction, 1)] {
            assert_eq!(as_value.encoded(&r, key), as_texts.encoded(&r, key));
        }
        assert_eq!(as_value.json(), as_texts.json());
        assert_eq!(as_texts.error(), None);
        assert!(*as_value == *as_texts);

        let mut bad = texts;
        bad.push(Arc::from("{\"uid\": "));
        let broken = EntitySlice::from_texts(bad.into_boxed_slice());
        let encoded = broken.encoded(&Redaction::default(), 0);
        assert_eq!(encoded.canonical, b"null");
        assert!(
            broken.error().is_some_and(|e| e.contains("not JSON")),
            "{:?}",
            broken.error()
        );
        assert_eq!(*broken.json(), Value::Null);
    }

    #[test]
    fn canonical_sorts_keys_at_every_depth() {
        let v = json!({"b": 1, "a": {"z": [ {"y": 1, "x": "é\n"} ], "c": null}});
        assert_eq!(
            canonical(&v),
            r#"{"a":{"c":null,"z":[{"x":"é\n","y":1}]},"b":1}"#
        );
    }

    #[test]
    fn seal_hash_is_independent_of_key_order_and_verifies() {
        let mut m = Map::new();
        m.insert("seq".into(), Value::Null);
        m.insert("ts".into(), json!("2026-01-01T00:00:00Z"));
        m.insert("kind".into(), json!("change"));
        let (line, hash) = seal(m, 7, GENESIS_HASH);
        let parsed: Value = serde_json::from_str(&line).unwrap();
        let obj = parsed.as_object().unwrap();
        assert_eq!(obj["hash"], json!(hash));
        assert_eq!(compute_hash(obj), hash);
        // Reverse the key order: same hash.
        let rev: Map<String, Value> = obj
            .iter()
            .rev()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        assert_eq!(compute_hash(&rev), hash);
        // Change one value: another hash.
        let mut edited = obj.clone();
        edited.insert("seq".into(), json!(8));
        assert_ne!(compute_hash(&edited), hash);
    }

    #[test]
    fn strings_are_written_exactly_as_serde_json_writes_them() {
        let mut cases: Vec<String> = vec![
            String::new(),
            "User::\"alice\"".into(),
            "a\\b".into(),
            "tab\there".into(),
            "é ünïcode ✓ and more than eight bytes".into(),
            "0123456789abcdef0123456789abcdef".into(),
            "\u{7f}\u{1f}".into(),
        ];
        // Each special byte at every position of a 17-byte string (the
        // eight-byte steps and the remainder).
        for special in ['"', '\\', '\n', '\u{1}', '\u{1f}', 'é'] {
            for i in 0..17 {
                let mut s: Vec<char> = "abcdefghijklmnopq".chars().collect();
                s[i] = special;
                cases.push(s.into_iter().collect());
            }
        }
        for s in cases {
            let mut ours = Vec::new();
            write_str(&mut ours, &s);
            assert_eq!(ours, serde_json::to_vec(&s).unwrap(), "{s:?}");
            let naive = s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\');
            assert_eq!(needs_escape(s.as_bytes()), naive, "{s:?}");
        }
    }

    #[test]
    fn an_encoded_event_verifies_with_the_canonical_hash() {
        let slice = EntitySlice::new(
            json!([{"uid": {"type": "User", "id": "a\"b"}, "attrs": {"z": 1, "email": "x@y"}, "parents": []}]),
        );
        let decision = Decision {
            decision: Effect::Deny,
            reasons: vec![
                Reason {
                    id: "p1".into(),
                    description: Some("why \"quoted\"".into()),
                },
                Reason {
                    id: "p2".into(),
                    description: None,
                },
            ],
            errors: vec!["an \"error\"".into()],
            policy_version: "sha256:0".into(),
        };
        let event: Event = DecisionEvent::new(
            "User::\"a\\\"b\"",
            "Action::\"view\"",
            "Account::\"acme\"",
            slice.clone(),
            decision,
        )
        .with_decision_id("d1")
        .with_context(Some(json!({"b": [1, {"y": null, "x": "\n"}], "a": true})))
        .with_latency_us(12)
        .into();
        let mut enc = RecordEncoder::default();
        let redaction = Redaction {
            context_keys: vec![],
            entity_attrs: vec!["email".into()],
        };
        let encoded = slice.encoded(&redaction, 1);
        for field in [
            SliceField::Inline(&encoded),
            SliceField::Reference(&encoded),
        ] {
            let link = Link {
                seq: 3,
                prev_hash: GENESIS_HASH,
            };
            let hash = encode_event(
                &mut enc,
                &event,
                "2026-01-01T00:00:00.000000Z",
                Some("r1"),
                link,
                Some(field),
            )
            .to_string();
            let parsed: Map<String, Value> = serde_json::from_slice(enc.line()).unwrap();
            assert_eq!(parsed["hash"], json!(hash));
            assert_eq!(compute_hash(&parsed), hash);
            assert_eq!(parsed.keys().next().unwrap(), "seq");
            assert_eq!(parsed["entities_hash"], json!(encoded.hash));
            assert_eq!(parsed["reasons"][1], json!({"id": "p2"}));
            match field {
                SliceField::Inline(_) => {
                    assert_eq!(parsed["entities"][0]["attrs"]["email"], json!("***"));
                }
                SliceField::Reference(_) => assert!(!parsed.contains_key("entities")),
            }
        }
    }

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

    /// Random events, the encoder's line against the same event built
    /// through serde: equal JSON, and the hash is the canonical hash that
    /// `verify` computes ([`compute_hash`], and SHA-256 of [`canonical`]).
    mod encoder_property {
        use super::*;
        use rand::rngs::StdRng;
        use rand::{Rng, SeedableRng};

        const CASES: usize = 3000;

        fn string(rng: &mut StdRng) -> String {
            const POOL: &[char] = &[
                'a', 'Z', '0', ' ', ':', '"', '\\', '/', '\n', '\r', '\t', '\u{0}', '\u{1}',
                '\u{1f}', '\u{7f}', '\u{80}', 'é', '✓', '\u{2028}', '\u{fffd}', '😀',
            ];
            let len = rng.random_range(0..24);
            (0..len)
                .map(|_| {
                    if rng.random_bool(0.2) {
                        // Any scalar value.
                        loop {
                            if let Some(c) = char::from_u32(rng.random_range(0..0x11_0000)) {
                                break c;
                            }
                        }
                    } else {
                        POOL[rng.random_range(0..POOL.len())]
                    }
                })
                .collect()
        }

        fn opt_string(rng: &mut StdRng) -> Option<String> {
            rng.random_bool(0.5).then(|| string(rng))
        }

        fn value(rng: &mut StdRng, depth: u32) -> Value {
            let pick = if depth == 0 {
                rng.random_range(0..6)
            } else {
                rng.random_range(0..8)
            };
            match pick {
                0 => Value::Null,
                1 => Value::Bool(rng.random()),
                2 => json!(rng.random::<i64>()),
                3 => json!(rng.random::<u64>()),
                4 => serde_json::Number::from_f64(rng.random::<f64>() * 1e6 - 5e5)
                    .map_or(Value::Null, Value::Number),
                5 => Value::String(string(rng)),
                6 => Value::Array(
                    (0..rng.random_range(0..4))
                        .map(|_| value(rng, depth - 1))
                        .collect(),
                ),
                _ => Value::Object(object(rng, depth - 1)),
            }
        }

        fn object(rng: &mut StdRng, depth: u32) -> Map<String, Value> {
            (0..rng.random_range(0..5))
                .map(|_| (string(rng), value(rng, depth)))
                .collect()
        }

        fn strings(rng: &mut StdRng) -> Vec<String> {
            (0..rng.random_range(0..3)).map(|_| string(rng)).collect()
        }

        fn reasons(rng: &mut StdRng) -> Vec<Reason> {
            (0..rng.random_range(0..3))
                .map(|_| Reason {
                    id: string(rng),
                    description: opt_string(rng),
                })
                .collect()
        }

        fn effect(rng: &mut StdRng) -> Effect {
            if rng.random() {
                Effect::Allow
            } else {
                Effect::Deny
            }
        }

        fn to_value<T: Serialize>(v: &T) -> Value {
            serde_json::to_value(v).unwrap()
        }

        /// A random event, and the record (without seq, ts, chain and
        /// replica) built from it through serde.
        // One arm per event kind, each listing its members: split, the
        // members of a kind would be far from each other.
        #[allow(clippy::too_many_lines)]
        fn event(rng: &mut StdRng) -> (Event, Map<String, Value>, Option<Arc<EntitySlice>>) {
            let mut m = Map::new();
            match rng.random_range(0..4) {
                0 => {
                    let decision = Decision {
                        decision: effect(rng),
                        reasons: reasons(rng),
                        errors: strings(rng),
                        policy_version: string(rng),
                    };
                    let slice = if rng.random_bool(0.1) {
                        EntitySlice::unavailable(string(rng))
                    } else {
                        EntitySlice::new(value(rng, 3))
                    };
                    let shadow = rng.random_bool(0.3).then(|| Shadow {
                        decision: effect(rng),
                        reasons: reasons(rng),
                        errors: strings(rng),
                        policy_version: string(rng),
                    });
                    let context = rng.random_bool(0.8).then(|| Value::Object(object(rng, 3)));
                    let ev = DecisionEvent::new(
                        string(rng),
                        string(rng),
                        string(rng),
                        slice.clone(),
                        decision.clone(),
                    )
                    .with_decision_id(string(rng))
                    .with_request_id(opt_string(rng))
                    .with_context(context)
                    .with_latency_us(rng.random())
                    .with_shadow(shadow.clone())
                    .with_request_entities(strings(rng))
                    .with_gateway(rng.random_bool(0.3).then(|| Gateway {
                        method: string(rng),
                        path: string(rng),
                        route: string(rng),
                        source: string(rng),
                        via: string(rng),
                        dry_run: rng.random_bool(0.5),
                    }));
                    m.insert("kind".into(), json!("decision"));
                    m.insert("decision_id".into(), json!(ev.decision_id));
                    m.insert("request_id".into(), json!(ev.request_id));
                    m.insert("principal".into(), json!(&*ev.principal));
                    m.insert("action".into(), json!(&*ev.action));
                    m.insert("resource".into(), json!(&*ev.resource));
                    m.insert("context".into(), ev.context.clone());
                    let hash = hex::encode(Sha256::digest(canonical(&slice.json()).as_bytes()));
                    m.insert("entities_hash".into(), json!(hash));
                    if let Some(e) = slice.error() {
                        m.insert("entities_error".into(), json!(e));
                    }
                    m.insert("decision".into(), to_value(&decision.decision));
                    m.insert("reasons".into(), to_value(&decision.reasons));
                    m.insert("errors".into(), to_value(&decision.errors));
                    m.insert("policy_version".into(), json!(decision.policy_version));
                    m.insert("latency_us".into(), json!(ev.latency_us));
                    if let Some(s) = &shadow {
                        m.insert("shadow".into(), to_value(s));
                    }
                    if !ev.request_entities.is_empty() {
                        m.insert("request_entities".into(), to_value(&ev.request_entities));
                    }
                    if let Some(g) = &ev.gateway {
                        m.insert("gateway".into(), to_value(g));
                    }
                    (ev.into(), m, Some(slice))
                }
                1 => {
                    let ev = ChangeEvent {
                        decision_id: opt_string(rng),
                        request_id: opt_string(rng),
                        actor: string(rng),
                        operation: string(rng),
                        before: value(rng, 3),
                        after: value(rng, 3),
                        change_id: None,
                        recovered: false,
                    };
                    m.insert("kind".into(), json!("change"));
                    m.insert("decision_id".into(), json!(ev.decision_id));
                    m.insert("request_id".into(), json!(ev.request_id));
                    m.insert("actor".into(), json!(ev.actor));
                    m.insert("operation".into(), json!(ev.operation));
                    m.insert("before".into(), ev.before.clone());
                    m.insert("after".into(), ev.after.clone());
                    (ev.into(), m, None)
                }
                3 => {
                    let ev = SearchEvent {
                        decision_id: string(rng),
                        request_id: opt_string(rng),
                        search: string(rng),
                        principal: string(rng),
                        action: string(rng),
                        resource: string(rng),
                        context: Value::Object(object(rng, 3)),
                        results: rng.random(),
                        total: rng.random_bool(0.5).then(|| rng.random()),
                        evaluated: rng.random(),
                        policy_version: string(rng),
                        latency_us: rng.random(),
                    };
                    m.insert("kind".into(), json!("search"));
                    m.insert("decision_id".into(), json!(ev.decision_id));
                    m.insert("request_id".into(), json!(ev.request_id));
                    m.insert("search".into(), json!(ev.search));
                    m.insert("principal".into(), json!(ev.principal));
                    m.insert("action".into(), json!(ev.action));
                    m.insert("resource".into(), json!(ev.resource));
                    m.insert("context".into(), ev.context.clone());
                    m.insert("results".into(), json!(ev.results));
                    m.insert("total".into(), json!(ev.total));
                    m.insert("evaluated".into(), json!(ev.evaluated));
                    m.insert("policy_version".into(), json!(ev.policy_version));
                    m.insert("latency_us".into(), json!(ev.latency_us));
                    (ev.into(), m, None)
                }
                _ => {
                    let ev = ReloadEvent {
                        request_id: opt_string(rng),
                        files: strings(rng),
                        version: opt_string(rng),
                        error: opt_string(rng),
                    };
                    m.insert("kind".into(), json!("reload"));
                    m.insert("decision_id".into(), Value::Null);
                    m.insert("request_id".into(), json!(ev.request_id));
                    m.insert("files".into(), to_value(&ev.files));
                    m.insert("version".into(), json!(ev.version));
                    m.insert("error".into(), json!(ev.error));
                    (ev.into(), m, None)
                }
            }
        }

        #[test]
        fn the_encoders_line_and_hash_are_the_serde_record_and_its_canonical_hash() {
            let mut rng = StdRng::seed_from_u64(0x5eed_0013);
            // One encoder for all cases, as the writer reuses it.
            let mut enc = RecordEncoder::default();
            for case in 0..CASES {
                let (event, mut expected, slice) = event(&mut rng);
                let seq = rng.random::<u64>() >> 1;
                let ts = string(&mut rng);
                let prev_hash = hex::encode(Sha256::digest(string(&mut rng).as_bytes()));
                let replica = opt_string(&mut rng);
                let encoded = slice.as_ref().map(|s| s.encoded(&Redaction::default(), 0));
                let field = match (&encoded, rng.random_range(0..3)) {
                    (Some(e), 0) => Some(SliceField::Reference(e)),
                    (Some(e), 1) => Some(SliceField::Inline(e)),
                    _ => None, // a decision: inline, unredacted
                };
                if let Some(s) = &slice {
                    if !matches!(field, Some(SliceField::Reference(_))) {
                        expected.insert("entities".into(), s.json().into_owned());
                    }
                }
                expected.insert("seq".into(), json!(seq));
                expected.insert("ts".into(), json!(ts));
                if let Some(r) = &replica {
                    expected.insert("replica".into(), json!(r));
                }
                expected.insert("prev_hash".into(), json!(prev_hash));
                let link = Link {
                    seq,
                    prev_hash: &prev_hash,
                };
                let hash = encode_event(&mut enc, &event, &ts, replica.as_deref(), link, field)
                    .to_string();
                let mut parsed: Map<String, Value> = serde_json::from_slice(enc.line())
                    .unwrap_or_else(|e| {
                        panic!(
                            "case {case}: not JSON ({e}): {:?}",
                            String::from_utf8_lossy(enc.line())
                        )
                    });
                assert_eq!(parsed.remove("hash"), Some(json!(hash)), "case {case}");
                assert_eq!(parsed, expected, "case {case}: {event:?}");
                assert_eq!(compute_hash(&expected), hash, "case {case}: {event:?}");
                let canonical_hash = hex::encode(Sha256::digest(
                    canonical(&Value::Object(expected)).as_bytes(),
                ));
                assert_eq!(canonical_hash, hash, "case {case}");
            }
        }
    }

    /// `verify` re-hashes what it parses: a float must read back as the
    /// same f64, or its record is taken for an edited one.
    #[test]
    fn a_record_with_any_float_verifies() {
        for f in [
            371_057.878_890_132_76_f64,
            0.1,
            1e-300,
            5e-324,
            f64::MAX,
            -2.5,
        ] {
            let ev: Event = ChangeEvent {
                decision_id: None,
                request_id: None,
                actor: "a".into(),
                operation: "o".into(),
                before: Value::Null,
                after: json!({"limit": f}),
                change_id: None,
                recovered: false,
            }
            .into();
            let mut enc = RecordEncoder::default();
            let link = Link {
                seq: 1,
                prev_hash: GENESIS_HASH,
            };
            let hash = encode_event(&mut enc, &ev, "t", None, link, None).to_string();
            let parsed: Map<String, Value> = serde_json::from_slice(enc.line()).unwrap();
            assert_eq!(compute_hash(&parsed), hash, "{f:e}");
        }
    }
}
