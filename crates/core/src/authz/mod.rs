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
//!
//! The path is split by idea: [`query`] (the question), [`answer`] (what it
//! gives back), [`entities`] (the entity set of a decision and the cache
//! of entity sets), [`overlay`] (the request's own entities and properties
//! over the stored facts), [`clocked`] (the clock PartnerGate supplies and
//! the interval a clocked decision holds over) and [`record`] (the
//! decision's log record). This module owns [`Authz`], which runs them in
//! order. It must never know HTTP, the partner rules or the command line.

pub(crate) mod answer;
mod clocked;
pub(crate) mod entities;
mod overlay;
pub(crate) mod query;
mod record;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use cedar_policy::{Entity, EntityUid};

use crate::audit::{shadow_of, AuditLog, ChangeEvent};
use crate::cache::{self, Cached, DecisionCache};
use crate::clock::{Clock, SystemClock};
use crate::directory::{self, Directory, DirectoryError};
use crate::engine::{self, Decision, RequestError, Semantics};
use crate::policies::PolicyPack;
use crate::reload::Evaluator;

pub use answer::{Answer, Derived};
pub use clocked::{refuse_callers_clock, with_now};
pub use entities::{log_slice, DecisionEntities, QuestionUids, ENTITY_CACHE_MAX};
pub use overlay::{uid_json, RequestEntities};
pub use query::Query;

use clocked::{clock_value, clocked_context, holds_until, with_clock};
use entities::EntitySets;
use overlay::{Overlay, RequestData};

/// The in-process authorizer: live policies plus the entity directory, and
/// optionally a decision log and a shadow (candidate) policy set.
///
/// Building Cedar's `Entities` for a slice (hierarchy closure included) is
/// the largest cost of a decision after Cedar's own evaluation, so the set
/// built for a question without request entities is kept and reused while
/// every entity it was read from is unchanged and the pack's version is the
/// same; and with [`Authz::with_decision_cache`], the decision itself is kept
/// under the same rule ([`crate::cache`]). Either way the answer is the one
/// a fresh evaluation gives (the tests in `authz/tests.rs` check it).
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
    cache: Arc<EntitySets>,
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
            cache: Arc::new(EntitySets::default()),
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
                            derived: fresh.derived.clone(),
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
            derived: kept.derived.clone(),
        };
        let shadow = self.shadow_disagreement(pack, q, &answer);
        record::log_decision(
            self.audit.as_ref(),
            self.audit_required,
            q,
            record_context,
            &overlay,
            shadow,
            &mut answer,
        );
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
        let overlay = self.request_data().overlay(pack.schema.as_ref(), q)?;
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
        let overlay = self.request_data().overlay(pack.schema.as_ref(), q)?;
        let entities = self.decision_entities(pack, q, &overlay)?;
        let decision = self.decide_over(pack, q, &request, &overlay, &entities);
        let clock =
            clock.map(|(now, context)| (now, holds_until(pack, q, now, &entities, context)));
        let fresh = Cached {
            version: pack.version.clone(),
            decision,
            entities,
            derived: Derived::default(),
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

    /// The entity set for a question without request entities
    /// ([`EntitySets`]).
    fn cached_entities(
        &self,
        pack: &PolicyPack,
        q: &Query,
    ) -> Result<Arc<DecisionEntities>, RequestError> {
        self.cache.get(&self.directory, pack, q)
    }

    /// The request-data rules over this authorizer's directory.
    fn request_data(&self) -> RequestData<'_> {
        RequestData {
            directory: &self.directory,
            request_entities: self.request_entities,
        }
    }
}
