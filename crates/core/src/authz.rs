//! The decision path, in one straight line and free of HTTP:
//! typed query → policy snapshot → entity slice → Cedar → [`Answer`].
//!
//! [`Authz`] is what the sidecar's handlers call and what a Rust service
//! embeds instead of calling the sidecar:
//!
//! ```no_run
//! use std::sync::Arc;
//! use partnergate_core::authz::{Authz, Query};
//! use partnergate_core::directory::Directory;
//! use partnergate_policy::policies::PackSource;
//! use partnergate_core::reload::{watch, Evaluator};
//! use partnergate_core::store::sqlite::SqliteStore;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let source = PackSource::new("policies", Some("schemas/partnergate.cedarschema".into()));
//! let evaluator = Arc::new(Evaluator::load(source)?);
//! let _watch = watch(evaluator.clone(), vec![])?; // hot reload while `_watch` lives
//! let store = Arc::new(SqliteStore::open_in(std::path::Path::new("data"))?);
//! let directory = Arc::new(Directory::open(store)?);
//! let authz = Authz::new(evaluator, directory);
//! let answer = authz.is_authorized(&Query::parse(
//!     r#"User::"alice""#, r#"Action::"view_account""#, r#"Account::"acme""#)?)?;
//! println!("{:?}", answer.decision.decision);
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use cedar_policy::{Entities, Entity, EntityUid};
use dashmap::DashMap;

use crate::audit::{shadow_of, AuditLog, ChangeEvent, DecisionEvent, EntitySlice};
use crate::cache::{self, Cached, DecisionCache};
use crate::clock::{Clock, SystemClock};
use crate::directory::{self, Dependency, Directory, DirectoryError};
use crate::engine::{self, Decision, RequestError, Semantics};
use crate::policies::{PolicyPack, CLOCK_ATTRIBUTE};
use crate::reload::Evaluator;

/// One authorization question.
#[derive(Debug, Clone)]
pub struct Query {
    /// Who asks; unknown to the directory (and not invented by the request) means Deny.
    pub principal: EntityUid,
    /// What they want to do.
    pub action: EntityUid,
    /// What they want to do it to.
    pub resource: EntityUid,
    /// The Cedar context record; `None` or JSON `null` is the empty record.
    pub context: Option<serde_json::Value>,
    /// Extra Cedar entity JSON (an array), over the stored entities, for this request only.
    pub entities: Option<serde_json::Value>,
    /// Attributes of the principal for this request, over the stored ones (AuthZEN `properties`).
    pub principal_attrs: Option<serde_json::Map<String, serde_json::Value>>,
    /// Attributes of the resource for this request, over the stored ones.
    pub resource_attrs: Option<serde_json::Map<String, serde_json::Value>>,
    /// The caller's request id (`X-Request-ID`), for the decision log.
    pub request_id: Option<String>,
    /// The proxied HTTP request of a gateway decision, for the decision log
    /// (not part of the question: the cache and Cedar never see it).
    pub gateway: Option<crate::audit::Gateway>,
}

impl Query {
    /// A query without context, request entities, properties or request id;
    /// the `with_*` methods set them.
    pub fn new(principal: EntityUid, action: EntityUid, resource: EntityUid) -> Self {
        Query {
            principal,
            action,
            resource,
            context: None,
            entities: None,
            principal_attrs: None,
            resource_attrs: None,
            request_id: None,
            gateway: None,
        }
    }

    /// A query from uids in Cedar syntax, without context or extra entities.
    pub fn parse(principal: &str, action: &str, resource: &str) -> Result<Self, RequestError> {
        Ok(Query::new(
            engine::parse_uid("principal", principal)?,
            engine::parse_uid("action", action)?,
            engine::parse_uid("resource", resource)?,
        ))
    }

    /// The Cedar context record for this request.
    pub fn with_context(mut self, context: Option<serde_json::Value>) -> Self {
        self.context = context;
        self
    }

    /// Extra Cedar entity JSON for this request only.
    pub fn with_entities(mut self, entities: Option<serde_json::Value>) -> Self {
        self.entities = entities;
        self
    }

    /// Attributes of the principal and of the resource for this request.
    pub fn with_attrs(
        mut self,
        principal: Option<serde_json::Map<String, serde_json::Value>>,
        resource: Option<serde_json::Map<String, serde_json::Value>>,
    ) -> Self {
        self.principal_attrs = principal;
        self.resource_attrs = resource;
        self
    }

    /// The Cedar request of this query, checked against `schema`
    /// ([`engine::build_request`]).
    pub fn request(
        &self,
        schema: Option<&cedar_policy::Schema>,
    ) -> Result<cedar_policy::Request, RequestError> {
        engine::build_request(
            schema,
            self.principal.clone(),
            self.action.clone(),
            self.resource.clone(),
            self.context.clone(),
        )
    }

    /// The caller's request id, written to the decision log.
    pub fn with_request_id(mut self, request_id: Option<String>) -> Self {
        self.request_id = request_id;
        self
    }

    /// The proxied request a gateway decision answers, written to the log.
    pub fn with_gateway(mut self, gateway: Option<crate::audit::Gateway>) -> Self {
        self.gateway = gateway;
        self
    }
}

/// A decision with what an auditor needs to replay it.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The fail-closed decision, with its reasons, errors and policy version.
    pub decision: Decision,
    /// A fresh UUIDv7 naming this decision in the log and on the wire.
    pub decision_id: String,
    /// The entities the decision used (the slice plus the action's
    /// entities), for the decision log and replay.
    pub entities: Arc<DecisionEntities>,
    /// Microseconds spent deciding (request, entities, Cedar); shadow evaluation and logging are not included.
    pub latency_us: u64,
    /// With `--audit-required`: the log's acknowledgement that the decision's
    /// record is durable; the answer must not be given before it succeeds.
    pub durable: Option<crate::audit::Durable>,
    /// Where an adapter keeps its encoding of `decision` (everything but the
    /// decision id), shared with the decision cache: an answer served from
    /// the cache finds it made. Fill it only with a function of `decision`.
    pub encoded: Arc<std::sync::OnceLock<Box<str>>>,
}

impl Answer {
    /// Block (at most `timeout`) until the decision's record is durable;
    /// Ok at once when no acknowledgement is asked for. For threads that
    /// may block (the CLI, the orchestrator under `spawn_blocking`).
    pub fn wait_durable(&self, timeout: std::time::Duration) -> Result<(), String> {
        match &self.durable {
            Some(d) => d.wait_blocking(timeout),
            None => Ok(()),
        }
    }
}

/// The entity set of a decision, with its Cedar entity JSON computed at
/// most once (for the decision log), however many decisions share it: the
/// log then encodes and hashes it once too ([`EntitySlice`]).
#[derive(Debug)]
pub struct DecisionEntities {
    /// The entities Cedar decided over: the directory's slice (plus request entities) and the action's entities.
    pub entities: Entities,
    slice: std::sync::OnceLock<Arc<EntitySlice>>,
    uids: std::sync::OnceLock<QuestionUids>,
    /// Every uid the directory's walk looked up, with its version; empty
    /// when the set was not read from the directory alone.
    deps: Box<[Dependency]>,
    /// Whether `deps` covers everything the set was built from (a stored
    /// slice that the walk did not cut short): only then may it be reused.
    complete: bool,
    /// The datetimes of the directory entities of the set, as the walk read
    /// them from their stored JSON; `None` when the set was not built from
    /// the directory alone (then they are read from the set itself).
    stored_datetimes: Option<Result<Box<[i64]>, String>>,
    /// When the set was built from the directory alone: the stored JSON
    /// texts of its directory entities, then its action entities' JSON (the
    /// pack's): its log slice, shared, never serialised again.
    stored_texts: Option<Box<[Arc<str>]>>,
    /// Whether `entities` was left empty because this copy is kept by the
    /// decision cache ([`DecisionEntities::for_cache`]) and serves only the log.
    light: bool,
}

/// A question's uids as the decision log writes them.
#[derive(Debug)]
pub struct QuestionUids {
    /// The principal in Cedar syntax (`User::"alice"`).
    pub principal: Arc<str>,
    /// The action in Cedar syntax.
    pub action: Arc<str>,
    /// The resource in Cedar syntax.
    pub resource: Arc<str>,
}

impl QuestionUids {
    fn of(q: &Query) -> Self {
        QuestionUids {
            principal: q.principal.to_string().into(),
            action: q.action.to_string().into(),
            resource: q.resource.to_string().into(),
        }
    }
}

impl DecisionEntities {
    /// Wrap an entity set; its log slice and uids are computed on first use.
    /// It records no dependencies, so it is never reused for another decision.
    pub fn new(entities: Entities) -> Self {
        Self::versioned(entities, Box::new([]), false)
    }

    /// Wrap an entity set built from a directory slice whose walk read
    /// `deps` (see [`Directory::slice_versioned`]).
    pub fn versioned(entities: Entities, deps: Box<[Dependency]>, complete: bool) -> Self {
        DecisionEntities {
            entities,
            slice: std::sync::OnceLock::new(),
            uids: std::sync::OnceLock::new(),
            deps,
            complete,
            stored_datetimes: None,
            stored_texts: None,
            light: false,
        }
    }

    /// What the decision cache keeps of a set built from the directory
    /// alone: everything a hit needs (the uids, the dependencies, the log
    /// slice, which shares the stored texts) but not the Cedar entities,
    /// which are most of a set's memory; `None` for any other set. A hit
    /// that needs them (the shadow set) builds them again.
    pub fn for_cache(&self, q: &Query) -> Option<Arc<DecisionEntities>> {
        self.stored_texts.as_ref()?;
        let uids = std::sync::OnceLock::new();
        let _ = uids.set(QuestionUids::of(q));
        Some(Arc::new(DecisionEntities {
            entities: Entities::empty(),
            slice: std::sync::OnceLock::from(self.slice().clone()),
            uids,
            deps: self.deps.clone(),
            complete: self.complete,
            stored_datetimes: self.stored_datetimes.clone(),
            stored_texts: self.stored_texts.clone(),
            light: true,
        }))
    }

    /// Whether this is the decision cache's copy, without Cedar entities.
    pub fn is_light(&self) -> bool {
        self.light
    }

    /// The set with the stored JSON texts of its directory entities and the
    /// JSON of the action entities added to them ([`directory::entities_for`]).
    pub fn with_stored_texts(mut self, mut texts: Vec<Arc<str>>, actions: &[Arc<str>]) -> Self {
        texts.extend(actions.iter().cloned());
        self.stored_texts = Some(texts.into_boxed_slice());
        self
    }

    /// The set with the datetimes its directory entities hold (read from
    /// their stored JSON by [`Directory::slice_versioned`]).
    pub fn with_stored_datetimes(
        mut self,
        datetimes: Result<Vec<i64>, crate::clock::UnreadableDatetime>,
    ) -> Self {
        self.stored_datetimes = Some(
            datetimes
                .map(Vec::into_boxed_slice)
                .map_err(|e| e.to_string()),
        );
        self
    }

    /// The uids the set was read from, with their versions.
    pub fn deps(&self) -> &[Dependency] {
        &self.deps
    }

    /// Whether [`DecisionEntities::deps`] covers the whole set (it may be reused).
    pub fn is_complete(&self) -> bool {
        self.complete
    }

    /// The uids of `q`, formatted once: an entity set is built for one
    /// question (the cache is keyed by principal, action and resource), so
    /// every decision that shares it asked the same.
    pub fn uids_of(&self, q: &Query) -> &QuestionUids {
        self.uids.get_or_init(|| QuestionUids::of(q))
    }

    /// The entities as the decision log's slice (made once): for a set
    /// built from the directory alone, the stored JSON texts of its entities
    /// as committed, then its action entities' (parsed only when the log
    /// encodes them, never rebuilt from the Cedar entities); otherwise
    /// [`log_slice`] of the set. Both read back as the same entities (shown
    /// by a test).
    pub fn slice(&self) -> &Arc<EntitySlice> {
        self.slice.get_or_init(|| match &self.stored_texts {
            Some(texts) => EntitySlice::from_texts(texts.clone()),
            None => log_slice(&self.entities),
        })
    }

    /// The uids of the entities, sorted (for comparisons).
    pub fn uids(&self) -> Vec<String> {
        let mut v: Vec<String> = self.entities.iter().map(|e| e.uid().to_string()).collect();
        v.sort();
        v
    }
}

/// The decision log's slice of `entities` (Cedar entity JSON). Entities
/// that cannot be serialised are never logged as a silent `null`: the error
/// is logged and counted, and the slice is marked unavailable
/// (`entities_error` in the record; replay skips it).
pub fn log_slice(entities: &Entities) -> Arc<EntitySlice> {
    slice_from(entities.to_json_value())
}

/// [`log_slice`] given the result of serialising the entities.
fn slice_from<E: std::fmt::Display>(json: Result<serde_json::Value, E>) -> Arc<EntitySlice> {
    match json {
        Ok(v) => EntitySlice::new(v),
        Err(e) => {
            let reason = e.to_string();
            tracing::error!(error = %reason, "a decision's entity slice could not be serialised for the decision log");
            metrics::counter!("partnergate_audit_slice_errors_total").increment(1);
            EntitySlice::unavailable(reason)
        }
    }
}

/// What request data (`entities`, AuthZEN `properties`) may do to the
/// stored facts (`serve --request-entities`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RequestEntities {
    /// Request data may add entities the store does not hold; about a stored
    /// entity it may only repeat what is stored (equal attribute values, its
    /// own parents): an attribute it replaces, an attribute it adds (the
    /// stored entity's lack of it is a stored fact) or a parent it adds is a
    /// 400 naming the field. A principal the store does not hold is unknown
    /// (Deny) even when the request describes it.
    #[default]
    Add,
    /// Request data replaces stored entities and attributes (the behaviour
    /// before issue #12; only for callers that never forward user input).
    Override,
    /// Any request entity or property is a 400.
    Deny,
}

impl std::str::FromStr for RequestEntities {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "add" => Ok(RequestEntities::Add),
            "override" => Ok(RequestEntities::Override),
            "deny" => Ok(RequestEntities::Deny),
            other => Err(format!("`{other}`: expected add, override or deny")),
        }
    }
}

/// How many (principal, action, resource) entity sets [`Authz`] keeps;
/// past that the cache is emptied and refilled.
pub const ENTITY_CACHE_MAX: usize = 10_000;

/// The entity set of one question without request entities, as built for a
/// policy version (its dependencies say when the directory changed under it).
struct CachedEntities {
    version: String,
    entities: Arc<DecisionEntities>,
}

type CacheKey = (EntityUid, EntityUid, EntityUid);

/// A request's own entities (`entities`, AuthZEN `properties`), by uid.
type Overlay = HashMap<EntityUid, Entity>;

/// The in-process authorizer: live policies plus the entity directory, and
/// optionally a decision log and a shadow (candidate) policy set.
///
/// Building Cedar's `Entities` for a slice (hierarchy closure included) is
/// the largest cost of a decision after Cedar's own evaluation, so the set
/// built for a question without request entities is kept and reused while
/// every entity it was read from is unchanged and the pack's version is the
/// same; and with [`Authz::with_decision_cache`], the decision itself is kept
/// under the same rule ([`crate::cache`]). Either way the answer is the one
/// a fresh evaluation gives (`tests` below check it).
#[derive(Clone)]
pub struct Authz {
    evaluator: Arc<Evaluator>,
    directory: Arc<Directory>,
    audit: Option<AuditLog>,
    /// Gives change records their ids and keeps them with their writes.
    changes: Option<Arc<crate::changes::ChangeRecorder>>,
    /// Every decision waits for its record to be durable (`Answer::durable`).
    audit_required: bool,
    shadow: Option<Arc<Evaluator>>,
    cache: Arc<DashMap<CacheKey, Arc<CachedEntities>>>,
    request_entities: RequestEntities,
    decisions: Option<Arc<DecisionCache>>,
    clock: Arc<dyn Clock>,
}

impl Authz {
    /// An authorizer over the live pack of `evaluator` and the entities of
    /// `directory`: no decision log, no shadow, request entities
    /// [`RequestEntities::Add`].
    pub fn new(evaluator: Arc<Evaluator>, directory: Arc<Directory>) -> Self {
        Authz {
            evaluator,
            directory,
            audit: None,
            changes: None,
            audit_required: false,
            shadow: None,
            cache: Arc::new(DashMap::new()),
            request_entities: RequestEntities::default(),
            decisions: None,
            clock: Arc::new(SystemClock),
        }
    }

    /// Read the current time from `clock` (default: the system clock): it
    /// is `context.now` of every action that declares it.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The clock decisions read (the orchestrator counts seats by it too).
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Keep up to about `entries` decisions and answer a repeated question
    /// from them while nothing it depended on changed ([`crate::cache`]);
    /// 0 keeps none (every decision is evaluated).
    pub fn with_decision_cache(mut self, entries: usize) -> Self {
        self.decisions = (entries > 0).then(|| Arc::new(DecisionCache::new(entries)));
        self
    }

    /// The decision cache, if there is one (for its hit and miss counts).
    pub fn decision_cache(&self) -> Option<&Arc<DecisionCache>> {
        self.decisions.as_ref()
    }

    /// What request data may do to the stored facts (default [`RequestEntities::Add`]).
    pub fn with_request_entities(mut self, mode: RequestEntities) -> Self {
        self.request_entities = mode;
        self
    }

    /// Log every decision and change to `log` (change records are not
    /// kept with their writes: see [`Authz::with_change_recorder`]).
    pub fn with_audit(mut self, log: AuditLog) -> Self {
        self.changes = Some(Arc::new(crate::changes::ChangeRecorder::unkept(
            log.clone(),
        )));
        self.audit = Some(log);
        self
    }

    /// Give change records to `recorder` (which keeps them with their
    /// writes until the log holds them); after [`Authz::with_audit`].
    pub fn with_change_recorder(mut self, recorder: crate::changes::ChangeRecorder) -> Self {
        self.changes = Some(Arc::new(recorder));
        self
    }

    /// Make every decision wait for its log record to be durable: the
    /// answer carries the acknowledgement ([`Answer::durable`]) that the
    /// caller awaits (or [`Answer::wait_durable`]) before acting on it.
    pub fn with_audit_required(mut self, required: bool) -> Self {
        self.audit_required = required;
        self
    }

    /// Also evaluate every request against `candidate`; disagreements are
    /// logged (`shadow`) and counted, never answered.
    pub fn with_shadow(mut self, candidate: Arc<Evaluator>) -> Self {
        self.shadow = Some(candidate);
        self
    }

    /// The decision log decisions and changes go to, if any.
    pub fn audit(&self) -> Option<&AuditLog> {
        self.audit.as_ref()
    }

    /// Whether decisions wait for their record to be durable.
    pub fn audit_required(&self) -> bool {
        self.audit_required
    }

    /// The candidate evaluated beside every decision, if any.
    pub fn shadow(&self) -> Option<&Arc<Evaluator>> {
        self.shadow.as_ref()
    }

    /// Validate and upsert entities (Cedar entity JSON array), logging one
    /// change record per entity with its state before and after.
    pub fn put_entities(
        &self,
        actor: &str,
        request_id: Option<String>,
        json: serde_json::Value,
    ) -> Result<Vec<EntityUid>, DirectoryError> {
        match self.put_entities_guarded(actor, request_id, json, None, None)? {
            directory::Written::Applied(uids) => Ok(uids),
            directory::Written::Replayed(_) => Ok(Vec::new()), // no key given: unreachable
        }
    }

    /// [`Authz::put_entities`] under a deadline and an `Idempotency-Key`
    /// (see [`Directory::put_guarded`]); a replay writes and logs nothing.
    pub fn put_entities_guarded(
        &self,
        actor: &str,
        request_id: Option<String>,
        json: serde_json::Value,
        deadline: Option<Instant>,
        idempotency: Option<directory::IdempotentAnswer<'_>>,
    ) -> Result<directory::Written, DirectoryError> {
        let pack = self.evaluator.current();
        let entities = Directory::parse(pack.schema.as_ref(), json)?;
        self.directory.put_recorded(
            entities,
            deadline,
            idempotency,
            |changed| {
                self.prepare_changes(
                    changed
                        .into_iter()
                        .map(|c| {
                            ChangeEvent::new(actor, "entities.upsert", c.before, c.after)
                                .request(request_id.clone())
                        })
                        .collect(),
                )
            },
            |prepared| self.log_changes(prepared),
        )
    }

    /// Change records of a write, ready for its store transaction: each
    /// with a `change_id`, and what the transaction keeps when the log can
    /// be read back ([`crate::changes`]); nothing without a log.
    pub fn prepare_changes(&self, events: Vec<ChangeEvent>) -> crate::changes::Prepared {
        match &self.changes {
            Some(c) => c.prepare(events),
            None => crate::changes::Prepared::default(),
        }
    }

    /// Log the change records of a committed write (call it under the lock
    /// the write committed under, so that the log follows the commit order).
    pub fn log_changes(&self, prepared: crate::changes::Prepared) {
        if let Some(c) = &self.changes {
            c.log(prepared);
        }
    }

    /// The evaluator holding the live pack.
    pub fn evaluator(&self) -> &Arc<Evaluator> {
        &self.evaluator
    }

    /// The entity directory decisions read.
    pub fn directory(&self) -> &Arc<Directory> {
        &self.directory
    }

    /// Decide one query against the current snapshot.
    pub fn is_authorized(&self, q: &Query) -> Result<Answer, RequestError> {
        let pack = self.evaluator.current();
        self.is_authorized_with(&pack, q)
    }

    /// Decide one query against a given pack (the batch endpoint uses one
    /// snapshot for all its items; shadow mode passes the candidate).
    ///
    /// The current time is the sidecar's: a context that sets
    /// [`CLOCK_ATTRIBUTE`] is refused (`context.now`), and an action whose
    /// context declares it gets this [`Authz`]'s clock reading, which the
    /// decision log records with the context.
    pub fn is_authorized_with(&self, pack: &PolicyPack, q: &Query) -> Result<Answer, RequestError> {
        let started = Instant::now();
        crate::limits::check(q)?;
        refuse_callers_clock(q.context.as_ref())?;
        let now = pack.takes_clock(&q.action).then(|| self.clock.now_ms());
        let key = self.decisions.as_ref().and_then(|_| cache::Key::of(q));
        let kept = match (&self.decisions, &key) {
            (Some(c), Some(k)) => c.get(k, &pack.version, &self.directory, now),
            _ => None,
        };
        let caller_context = q.context.as_ref();
        let clock = now.map(clock_value).transpose()?;
        // The clocked question (`context.now` set): what Cedar, the shadow
        // set and the record see. A hit that no shadow set decides needs
        // only its context, for the record.
        let mut clocked = None;
        let (kept, overlay) = if let Some(hit) = kept {
            if self.shadow.is_some() {
                clocked = clock.clone().map(|v| with_clock(q, v));
            }
            (hit, Overlay::new())
        } else {
            clocked = clock.clone().map(|v| with_clock(q, v));
            let q = clocked.as_ref().unwrap_or(q);
            let (fresh, overlay) = self.evaluate(pack, q, now.map(|n| (n, caller_context)))?;
            if let (Some(c), Some(k)) = (&self.decisions, key) {
                if let Some(light) = fresh.entities.for_cache(q) {
                    c.insert(
                        k,
                        Arc::new(Cached {
                            version: fresh.version.clone(),
                            decision: fresh.decision.clone(),
                            entities: light,
                            encoded: fresh.encoded.clone(),
                            clock: fresh.clock,
                        }),
                    );
                }
            }
            (fresh, overlay)
        };
        let record_context = match (&clocked, clock) {
            (Some(c), _) => c.context.clone(),
            (None, Some(v)) => clocked_context(q.context.as_ref(), v),
            (None, None) => q.context.clone(),
        };
        let q = clocked.as_ref().unwrap_or(q);
        let mut answer = Answer {
            decision: kept.decision.clone(),
            decision_id: uuid::Uuid::now_v7().to_string(),
            entities: kept.entities.clone(),
            latency_us: started.elapsed().as_micros() as u64,
            durable: None,
            encoded: kept.encoded.clone(),
        };
        let shadow = self.shadow_disagreement(pack, q, &answer);
        self.log_decision(q, record_context, &overlay, shadow, &mut answer);
        Ok(answer)
    }

    /// The decision [`Authz::is_authorized_with`] gives `q` (the same
    /// request validation, request-data rules, entity slice and fail-closed
    /// semantics), without the decision cache, the entity-set cache, the
    /// shadow set or the decision log: for callers that decide many
    /// questions as one operation and log that operation once (search).
    pub fn decide_unlogged(&self, pack: &PolicyPack, q: &Query) -> Result<Decision, RequestError> {
        crate::limits::check(q)?;
        let request = q.request(pack.schema.as_ref())?;
        let overlay = self.overlay(pack.schema.as_ref(), q)?;
        let slice = self
            .directory
            .slice(&[&q.principal, &q.resource], &overlay)
            .map_err(|e| RequestError::Entities(e.to_string()))?;
        let entities = directory::entities_for(slice, pack.action_entities(&q.action))
            .map_err(RequestError::Entities)?;
        let entities = DecisionEntities::new(entities);
        Ok(self.decide_over(pack, q, &request, &overlay, &entities))
    }

    /// Evaluate `q` with Cedar (no decision cache): the fail-closed
    /// decision over its entities, as the cache would keep it, and the
    /// request's own entities.
    /// `clock` is the clock reading of a clocked question and the caller's
    /// context (without it), for the interval the decision holds over.
    fn evaluate(
        &self,
        pack: &PolicyPack,
        q: &Query,
        clock: Option<(i64, Option<&serde_json::Value>)>,
    ) -> Result<(Arc<Cached>, Overlay), RequestError> {
        let request = q.request(pack.schema.as_ref())?;
        let overlay = self.overlay(pack.schema.as_ref(), q)?;
        let entities = self.decision_entities(pack, q, &overlay)?;
        let decision = self.decide_over(pack, q, &request, &overlay, &entities);
        let clock =
            clock.map(|(now, context)| (now, holds_until(pack, q, now, &entities, context)));
        let fresh = Cached {
            version: pack.version.clone(),
            decision,
            entities,
            encoded: Arc::new(std::sync::OnceLock::new()),
            clock,
        };
        Ok((Arc::new(fresh), overlay))
    }

    /// The entities of a decision: the cached set when the request brings
    /// none, else the directory's slice under the request's `overlay`.
    fn decision_entities(
        &self,
        pack: &PolicyPack,
        q: &Query,
        overlay: &HashMap<EntityUid, Entity>,
    ) -> Result<Arc<DecisionEntities>, RequestError> {
        if overlay.is_empty() {
            return self.cached_entities(pack, q);
        }
        let slice = self
            .directory
            .slice(&[&q.principal, &q.resource], overlay)
            .map_err(|e| RequestError::Entities(e.to_string()))?;
        let entities = directory::entities_for(slice, pack.action_entities(&q.action))
            .map_err(RequestError::Entities)?;
        Ok(Arc::new(DecisionEntities::new(entities)))
    }

    /// The fail-closed decision over `entities`, with the policies that can
    /// apply to the action; a principal only the request describes is unknown.
    fn decide_over(
        &self,
        pack: &PolicyPack,
        q: &Query,
        request: &cedar_policy::Request,
        overlay: &HashMap<EntityUid, Entity>,
        entities: &DecisionEntities,
    ) -> Decision {
        // Request data never makes a principal known (unless `override`).
        let invented = !overlay.is_empty()
            && self.request_entities != RequestEntities::Override
            && !self.directory.contains(&q.principal);
        if invented {
            return engine::unknown_principal(
                pack,
                &q.principal,
                "not in the entity store (entities sent with the request do not make a principal known)",
            );
        }
        engine::decide(pack, request, &entities.entities, Semantics::FailClosed)
    }

    /// The shadow candidate's disagreement with `answer` (counted), if there
    /// is a candidate and it decides otherwise.
    /// The request is built again (checked against `pack`'s schema, as the
    /// decision's was), so a decision served from the cache is compared too.
    fn shadow_disagreement(
        &self,
        pack: &PolicyPack,
        q: &Query,
        answer: &Answer,
    ) -> Option<crate::audit::Shadow> {
        let candidate = self.shadow.as_ref()?.current();
        let request = q.request(pack.schema.as_ref()).ok()?;
        // The decision cache keeps no Cedar entities: a hit builds them again.
        let built;
        let entities = if answer.entities.is_light() {
            built = self.cached_entities(pack, q).ok()?;
            &built.entities
        } else {
            &answer.entities.entities
        };
        let theirs = engine::decide(&candidate, &request, entities, Semantics::FailClosed);
        let disagreement = shadow_of(&answer.decision, &theirs);
        if disagreement.is_some() {
            metrics::counter!("partnergate_shadow_disagreements_total").increment(1);
        }
        disagreement
    }

    /// Write the decision's record to the log, if there is one; with
    /// `audit_required`, the answer then carries the durability acknowledgement.
    fn log_decision(
        &self,
        q: &Query,
        context: Option<serde_json::Value>,
        overlay: &HashMap<EntityUid, Entity>,
        shadow: Option<crate::audit::Shadow>,
        answer: &mut Answer,
    ) {
        let Some(log) = &self.audit else {
            return;
        };
        let uids = answer.entities.uids_of(q);
        let mut request_entities: Vec<String> = overlay.keys().map(|u| u.to_string()).collect();
        request_entities.sort();
        let event = DecisionEvent::new(
            uids.principal.clone(),
            uids.action.clone(),
            uids.resource.clone(),
            answer.entities.slice().clone(),
            answer.decision.clone(),
        )
        .with_decision_id(answer.decision_id.clone())
        .with_request_id(q.request_id.clone())
        .with_context(context)
        .with_latency_us(answer.latency_us)
        .with_shadow(shadow)
        .with_request_entities(request_entities)
        .with_gateway(q.gateway.clone());
        if self.audit_required {
            answer.durable = Some(log.log_durable(event));
        } else {
            log.log(event);
        }
    }

    /// The entity set for a question without request entities: from the
    /// cache when it was built for this pack's version and every entity it
    /// was read from is unchanged, else built now (and kept).
    fn cached_entities(
        &self,
        pack: &PolicyPack,
        q: &Query,
    ) -> Result<Arc<DecisionEntities>, RequestError> {
        let key = (q.principal.clone(), q.action.clone(), q.resource.clone());
        if let Some(hit) = self.cache.get(&key) {
            if hit.version == pack.version && self.directory.is_current(hit.entities.deps()) {
                return Ok(hit.entities.clone());
            }
        }
        let slice = self
            .directory
            .slice_versioned(&[&q.principal, &q.resource])
            .map_err(|e| RequestError::Entities(e.to_string()))?;
        let entities = directory::entities_for(slice.entities, pack.action_entities(&q.action))
            .map_err(RequestError::Entities)?;
        let entities = Arc::new(
            DecisionEntities::versioned(entities, slice.deps.into_boxed_slice(), slice.complete)
                .with_stored_datetimes(slice.datetimes)
                .with_stored_texts(slice.texts, pack.action_entities_json(&q.action)),
        );
        if !slice.complete {
            return Ok(entities);
        }
        let built = Arc::new(CachedEntities {
            version: pack.version.clone(),
            entities: entities.clone(),
        });
        if self.cache.len() >= ENTITY_CACHE_MAX {
            self.cache.clear();
        }
        self.cache.insert(key, built);
        Ok(entities)
    }

    /// The request's entities (`entities` and AuthZEN `properties`), checked
    /// against the stored facts under the configured [`RequestEntities`].
    fn overlay(
        &self,
        schema: Option<&cedar_policy::Schema>,
        q: &Query,
    ) -> Result<HashMap<EntityUid, Entity>, RequestError> {
        let mode = self.request_entities;
        let mut overlay: HashMap<EntityUid, Entity> = HashMap::new();
        let items = match &q.entities {
            None | Some(serde_json::Value::Null) => Vec::new(),
            Some(serde_json::Value::Array(items)) => items.clone(),
            Some(_) => {
                return Err(RequestError::Entities(
                    DirectoryError::NotAnArray.to_string(),
                ))
            }
        };
        if mode == RequestEntities::Deny && !items.is_empty() {
            return Err(refused("entities"));
        }
        let items = if mode == RequestEntities::Add {
            items
                .into_iter()
                .enumerate()
                .map(|(i, item)| self.added_to_stored(schema, i, item))
                .collect::<Result<Vec<_>, _>>()?
        } else {
            items
        };
        if !items.is_empty() {
            for e in Directory::parse(schema, serde_json::Value::Array(items))
                .map_err(|e| RequestError::Entities(e.to_string()))?
            {
                overlay.insert(e.uid(), e);
            }
        }
        for (field, uid, attrs) in [
            ("subject.properties", &q.principal, &q.principal_attrs),
            ("resource.properties", &q.resource, &q.resource_attrs),
        ] {
            let Some(attrs) = attrs.as_ref().filter(|a| !a.is_empty()) else {
                continue;
            };
            if mode == RequestEntities::Deny {
                return Err(refused(field));
            }
            let e = self.with_attrs(schema, &overlay, field, uid, attrs)?;
            overlay.insert(uid.clone(), e);
        }
        Ok(overlay)
    }

    /// Under [`RequestEntities::Add`], a request entity (`entities[index]`)
    /// for a stored uid: refused unless it only repeats what is stored (its
    /// attributes present and equal, its parents among the stored ones);
    /// then the stored entity itself.
    fn added_to_stored(
        &self,
        schema: Option<&cedar_policy::Schema>,
        index: usize,
        item: serde_json::Value,
    ) -> Result<serde_json::Value, RequestError> {
        let Some(uid) = item
            .get("uid")
            .and_then(|u| EntityUid::from_json(u.clone()).ok())
        else {
            return Ok(item); // not a uid: the schema check reports it
        };
        let Some(stored) = self.directory.get_json(&uid) else {
            return Ok(item);
        };
        if let Some(attrs) = item.get("attrs").and_then(|a| a.as_object()) {
            let at = |k: &str| format!("entities[{index}].attrs.{k}");
            check_repeats_stored(schema, &stored, &uid, attrs, at)?;
        }
        let stored_parents: Vec<EntityUid> = stored
            .get("parents")
            .and_then(|p| p.as_array())
            .map(|ps| {
                ps.iter()
                    .filter_map(|p| EntityUid::from_json(p.clone()).ok())
                    .collect()
            })
            .unwrap_or_default();
        for p in item
            .get("parents")
            .and_then(|p| p.as_array())
            .into_iter()
            .flatten()
        {
            let known = EntityUid::from_json(p.clone()).is_ok_and(|p| stored_parents.contains(&p));
            if !known {
                return Err(RequestError::field(
                    &format!("entities[{index}].parents"),
                    format!("{uid} is stored; request data may not add parents to a stored entity"),
                ));
            }
        }
        Ok(stored)
    }

    /// The stored (or overlaid) entity with `attrs` (AuthZEN `properties`,
    /// reported as `field`) merged over its attributes; under
    /// [`RequestEntities::Add`] a stored attribute is never replaced.
    fn with_attrs(
        &self,
        schema: Option<&cedar_policy::Schema>,
        overlay: &HashMap<EntityUid, Entity>,
        field: &str,
        uid: &EntityUid,
        attrs: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Entity, RequestError> {
        let base = match overlay.get(uid) {
            Some(e) => e.to_json_value().ok(),
            None => self.directory.get_json(uid),
        };
        let stored = overlay.get(uid).is_none() && base.is_some();
        let mut json = base.unwrap_or_else(
            || serde_json::json!({"uid": uid_json(uid), "attrs": {}, "parents": []}),
        );
        if stored && self.request_entities == RequestEntities::Add {
            check_repeats_stored(schema, &json, uid, attrs, |k| format!("{field}.{k}"))?;
        } else if let Some(map) = json.get_mut("attrs").and_then(|a| a.as_object_mut()) {
            for (k, v) in attrs {
                map.insert(k.clone(), v.clone());
            }
        }
        Entity::from_json_value(json, schema).map_err(|e| RequestError::field(field, e.to_string()))
    }
}

/// `q` with `context.now` set to the datetime `now` (ms since the epoch).
/// A context that is not an object is left for the schema check to refuse.
/// A caller's context may not set the time: a 400 naming `context.now`.
pub fn refuse_callers_clock(context: Option<&serde_json::Value>) -> Result<(), RequestError> {
    if context.and_then(|c| c.get(CLOCK_ATTRIBUTE)).is_some() {
        return Err(RequestError::field(
            &format!("context.{CLOCK_ATTRIBUTE}"),
            "the current time is supplied by PartnerGate, never by the request: remove the field",
        ));
    }
    Ok(())
}

/// `q` with the clock reading `now` (ms since the epoch) as `context.now`
/// (the search confirms its candidates with the time the evaluation uses).
pub fn with_now(q: &Query, now: i64) -> Result<Query, RequestError> {
    Ok(with_clock(q, clock_value(now)?))
}

/// The clock reading `now` (ms since the epoch) as the Cedar JSON of
/// `context.now`.
fn clock_value(now: i64) -> Result<serde_json::Value, RequestError> {
    crate::clock::datetime_json(now).ok_or_else(|| {
        RequestError::field(
            &format!("context.{CLOCK_ATTRIBUTE}"),
            format!("the clock reads {now} ms, outside the years 0000-9999"),
        )
    })
}

/// `q` with `value` as `context.now`.
fn with_clock(q: &Query, value: serde_json::Value) -> Query {
    Query {
        principal: q.principal.clone(),
        action: q.action.clone(),
        resource: q.resource.clone(),
        context: clocked_context(q.context.as_ref(), value),
        entities: q.entities.clone(),
        principal_attrs: q.principal_attrs.clone(),
        resource_attrs: q.resource_attrs.clone(),
        request_id: q.request_id.clone(),
        gateway: q.gateway.clone(),
    }
}

/// `context` with `value` as its `now` (a context that is not a record is
/// kept as it is: the request's validation refuses it).
fn clocked_context(
    context: Option<&serde_json::Value>,
    value: serde_json::Value,
) -> Option<serde_json::Value> {
    match context {
        None | Some(serde_json::Value::Null) => Some(serde_json::json!({ CLOCK_ATTRIBUTE: value })),
        Some(serde_json::Value::Object(map)) => {
            let mut map = map.clone();
            map.insert(CLOCK_ATTRIBUTE.to_string(), value);
            Some(serde_json::Value::Object(map))
        }
        Some(other) => Some(other.clone()),
    }
}

/// The end of the interval from `now` over which a clocked decision over
/// `entities` and the caller's `context` holds (see [`crate::cache`]): the
/// first datetime value of either at or after `now` (`None`: none, it holds
/// from now on). When the pack may compute with times, or a datetime
/// cannot be read, the interval is empty (`Some(now)`): never served again.
fn holds_until(
    pack: &PolicyPack,
    q: &Query,
    now: i64,
    entities: &DecisionEntities,
    context: Option<&serde_json::Value>,
) -> Option<i64> {
    if !pack.time_compared_only() {
        return Some(now);
    }
    let mut found = Vec::new();
    let read = entity_datetimes(pack, q, entities, &mut found)
        .and_then(|()| context.map_or(Ok(()), |c| crate::clock::datetimes_in(c, &mut found)));
    if read.is_err() {
        return Some(now);
    }
    found.into_iter().filter(|t| *t >= now).min()
}

/// Every datetime of the JSON of `entities` (the set `q` was decided over),
/// as [`crate::clock::datetimes_in`] finds them. A set built from the
/// directory alone was read during the walk, from the stored JSON, and the
/// rest of it is the action entities of `q`, which hold no attributes: only
/// their ids can read as datetimes. Any other set is serialised and walked.
fn entity_datetimes(
    pack: &PolicyPack,
    q: &Query,
    entities: &DecisionEntities,
    found: &mut Vec<i64>,
) -> Result<(), crate::clock::UnreadableDatetime> {
    match &entities.stored_datetimes {
        Some(Ok(stored)) => {
            found.extend_from_slice(stored);
            let actions = pack.action_entities(&q.action);
            found.extend(
                actions
                    .iter()
                    .filter_map(|a| crate::clock::parse_cedar_ms(a.uid().id().unescaped())),
            );
            Ok(())
        }
        Some(Err(e)) => Err(crate::clock::UnreadableDatetime(e.clone())),
        None => entities
            .entities
            .to_json_value()
            .map_err(|e| crate::clock::UnreadableDatetime(e.to_string()))
            .and_then(|json| crate::clock::datetimes_in(&json, found)),
    }
}

/// The 400 of `--request-entities deny`.
fn refused(field: &str) -> RequestError {
    RequestError::field(
        field,
        "this sidecar refuses request entities and properties (--request-entities deny); store the facts with PUT /v1/entities",
    )
}

/// Check that `attrs`, request data about the stored entity `stored` (of
/// `uid`), only repeats what is stored: each attribute must be one the
/// stored entity has (its absence is a stored fact too), with an equal
/// value (compared as Cedar reads both under `schema`, so another accepted
/// spelling of the same value is equal); else a 400 naming `at(name)`.
fn check_repeats_stored(
    schema: Option<&cedar_policy::Schema>,
    stored: &serde_json::Value,
    uid: &EntityUid,
    attrs: &serde_json::Map<String, serde_json::Value>,
    at: impl Fn(&str) -> String,
) -> Result<(), RequestError> {
    let empty = serde_json::Map::new();
    let held = stored
        .get("attrs")
        .and_then(|a| a.as_object())
        .unwrap_or(&empty);
    let mut spelled_otherwise = Vec::new();
    for (k, v) in attrs {
        match held.get(k) {
            None => {
                return Err(RequestError::field(
                    &at(k),
                    format!(
                        "{uid} is stored; request data may not add an attribute to a stored entity \
                         (the stored entity has no `{k}`: that absence is a stored fact)"
                    ),
                ))
            }
            Some(s) if s == v => {}
            Some(_) => spelled_otherwise.push(k.as_str()),
        }
    }
    if spelled_otherwise.is_empty() {
        return Ok(());
    }
    // Values that differ as JSON may still be equal for Cedar (an entity
    // reference with or without `__entity`, a set in another order): read
    // the stored entity with the request's values as Cedar would, and
    // compare its canonical JSON with the stored one (stored entities are
    // kept in that canonical form).
    let mut candidate = stored.clone();
    if let Some(map) = candidate.get_mut("attrs").and_then(|a| a.as_object_mut()) {
        for k in &spelled_otherwise {
            if let Some(v) = attrs.get(*k) {
                map.insert((*k).to_string(), v.clone());
            }
        }
    }
    let canonical = Entity::from_json_value(candidate, schema)
        .ok()
        .and_then(|e| e.to_json_value().ok());
    for k in spelled_otherwise {
        let same = canonical
            .as_ref()
            .and_then(|c| c.get("attrs"))
            .and_then(|a| a.get(k))
            .is_some_and(|v| Some(v) == held.get(k));
        if !same {
            return Err(RequestError::field(
                &at(k),
                format!("{uid} is stored; request data may not replace a stored attribute"),
            ));
        }
    }
    Ok(())
}

/// `{"type": .., "id": ..}` for a uid.
pub fn uid_json(uid: &EntityUid) -> serde_json::Value {
    serde_json::json!({"type": uid.type_name().to_string(), "id": uid.id().unescaped()})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policies::PackSource;
    use crate::store::sqlite::SqliteStore;
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
        let demo: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(root.join("demo/entities.json")).unwrap(),
        )
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
                    let (Ok(a), Ok(b)) = (current.is_authorized(&q), migrated.is_authorized(&q))
                    else {
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
}
