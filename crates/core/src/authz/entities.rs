//! The entity set of a decision and the cache of entity sets.
//!
//! Owns [`DecisionEntities`] (the entities Cedar decided over, with what the
//! decision log and the decision cache need of them, each made at most
//! once), the log slice of a set, and `EntitySets`, the sets built for
//! questions without request entities, reused while every entity they were
//! read from is unchanged. It must never know the decision log's writer,
//! the decision cache's policy, request-data rules or HTTP.

use std::sync::Arc;

use cedar_policy::{Entities, EntityUid};
use dashmap::DashMap;

use crate::audit::EntitySlice;
use crate::directory::{self, Dependency, Directory};
use crate::engine::RequestError;
use crate::policies::PolicyPack;

use super::query::Query;

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
    pub(super) stored_texts: Option<Box<[Arc<str>]>>,
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
pub(super) fn slice_from<E: std::fmt::Display>(
    json: Result<serde_json::Value, E>,
) -> Arc<EntitySlice> {
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

/// The entity sets [`ENTITY_CACHE_MAX`] bounds, by (principal, action, resource).
#[derive(Default)]
pub(super) struct EntitySets(DashMap<CacheKey, Arc<CachedEntities>>);

impl EntitySets {
    /// The entity set for a question without request entities: from the
    /// cache when it was built for this pack's version and every entity it
    /// was read from is unchanged, else built now (and kept).
    pub(super) fn get(
        &self,
        directory: &Directory,
        pack: &PolicyPack,
        q: &Query,
    ) -> Result<Arc<DecisionEntities>, RequestError> {
        let key = (q.principal.clone(), q.action.clone(), q.resource.clone());
        if let Some(hit) = self.0.get(&key) {
            if hit.version == pack.version && directory.is_current(hit.entities.deps()) {
                return Ok(hit.entities.clone());
            }
        }
        let slice = directory
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
        if self.0.len() >= ENTITY_CACHE_MAX {
            self.0.clear();
        }
        self.0.insert(key, built);
        Ok(entities)
    }
}

/// Every datetime of the JSON of `entities` (the set `q` was decided over),
/// as [`crate::clock::datetimes_in`] finds them. A set built from the
/// directory alone was read during the walk, from the stored JSON, and the
/// rest of it is the action entities of `q`, which hold no attributes: only
/// their ids can read as datetimes. Any other set is serialised and walked.
pub(super) fn entity_datetimes(
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
