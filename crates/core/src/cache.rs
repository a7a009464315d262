//! The exact decision cache: a decision kept with everything it was a
//! function of, and served again only while all of that is unchanged.
//!
//! A decision is a pure function of the pack (its version), the question
//! (principal, action, resource, context) and the entities Cedar saw. The
//! entities are the directory's slice for the question, and the slice is a
//! function of the state of every uid its walk looked up (held or not): the
//! walk records each with its version ([`Directory::slice_versioned`]). An
//! entry is served only when the pack version is the one it was decided
//! under and every recorded uid still has its recorded version
//! ([`Directory::is_current`]). A write to any entity of the slice — the
//! principal, an ancestor, a referenced company, or an entity that was absent
//! and now exists — changes a version and makes exactly the entries that read
//! it miss; writes elsewhere leave them alone (no global generation).
//! Questions that carry request entities or properties are never cached.
//!
//! Time: an action that takes the clock (`context.now`, supplied by the
//! decision path) is keyed without it, and its entry holds only over an
//! interval of time (`Cached::clock`): from the instant it was decided to
//! the first datetime value of its entities or of the caller's context at
//! or after that instant (a partner's end, say). When the pack compares
//! times only (`PolicyPack::time_compared_only`), no comparison can change
//! its outcome inside that interval, so the kept decision is the one a
//! fresh evaluation gives; otherwise a clocked decision is not kept. A
//! cached Allow therefore never outlives the end it was compared with.
//!
//! Owns [`DecisionCache`] and its key. It never knows HTTP, the decision log
//! or what a policy says.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use cedar_policy::EntityUid;

use crate::authz::answer::Derived;
use crate::authz::entities::DecisionEntities;
use crate::authz::query::Query;
use crate::directory::Directory;
use crate::engine::Decision;

/// How many decisions the sidecar keeps by default (`serve --decision-cache`).
/// An entry holds no Cedar entities, only what a hit needs: the decision,
/// its encoded answer, its dependencies and its log slice (the stored texts,
/// shared with the directory, and their encoding): about 3.5 KB on the
/// shipped pack (`scripts/cache_memory.sh`: 89,227 entries, 3,461 bytes each
/// over a 100,000-user directory; they were 19,854 while entries held Cedar
/// entity sets), so the default stays near 100 MB.
pub const DEFAULT_ENTRIES: usize = 30_000;

/// A question as the cache tells questions apart: the uids and the context
/// exactly as given (two spellings of one context are two entries, both exact).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    principal: EntityUid,
    action: EntityUid,
    resource: EntityUid,
    /// The context's JSON text; `None` for an absent or `null` context.
    context: Option<Box<str>>,
}

impl Key {
    /// The key of `q`, or `None` when `q` must not be cached (it brings
    /// request entities or properties, which are not in the directory's versions).
    pub fn of(q: &Query) -> Option<Key> {
        if !brings_no_entities(q) {
            return None;
        }
        let context = match &q.context {
            None | Some(serde_json::Value::Null) => None,
            Some(v) => Some(v.to_string().into_boxed_str()),
        };
        Some(Key {
            principal: q.principal.clone(),
            action: q.action.clone(),
            resource: q.resource.clone(),
            context,
        })
    }
}

/// Whether `q` carries no request entities and no properties (an empty
/// array or map counts as none).
pub fn brings_no_entities(q: &Query) -> bool {
    let no_entities = match &q.entities {
        None | Some(serde_json::Value::Null) => true,
        Some(serde_json::Value::Array(items)) => items.is_empty(),
        Some(_) => false,
    };
    no_entities
        && q.principal_attrs.as_ref().is_none_or(|a| a.is_empty())
        && q.resource_attrs.as_ref().is_none_or(|a| a.is_empty())
}

/// One kept decision.
#[derive(Debug)]
pub struct Cached {
    /// The version of the pack that decided.
    pub version: String,
    /// The decision (reasons and errors included).
    pub decision: Decision,
    /// What a hit needs of the entities it was decided over: their
    /// dependencies, uids and log slice, without the Cedar entities
    /// ([`DecisionEntities::for_cache`]).
    pub entities: Arc<DecisionEntities>,
    /// What an adapter derives from `decision` (e.g. the HTTP body without
    /// the decision id), made once and shared by every answer served from here.
    pub derived: Derived,
    /// For a clocked question: the instants (ms since the epoch) over which
    /// the decision holds, `[from, until)` (`until` `None`: no later
    /// datetime); `None` for a question that does not take the clock.
    pub clock: Option<(i64, Option<i64>)>,
}

impl Cached {
    /// Whether the decision holds at `now` (the clock reading of the
    /// question being answered; `None` when it takes no clock).
    fn holds_at(&self, now: Option<i64>) -> bool {
        match (self.clock, now) {
            (None, None) => true,
            (Some((from, until)), Some(n)) => from <= n && until.is_none_or(|u| n < u),
            _ => false,
        }
    }
}

/// A bounded, concurrent map from questions to kept decisions (S3-FIFO
/// eviction through `quick_cache`), with hit and miss counts.
pub struct DecisionCache {
    entries: quick_cache::sync::Cache<Key, Arc<Cached>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl std::fmt::Debug for DecisionCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecisionCache")
            .field("entries", &self.entries.len())
            .field("hits", &self.hits())
            .field("misses", &self.misses())
            .finish()
    }
}

impl DecisionCache {
    /// A cache of at most about `entries` decisions (at least one).
    pub fn new(entries: usize) -> Self {
        DecisionCache {
            entries: quick_cache::sync::Cache::new(entries.max(1)),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The decision kept for `key`, if it was decided under `version`,
    /// every entity it depended on is unchanged in `directory`, and it holds
    /// at `now` (the question's clock reading, if it takes one). Counts a
    /// hit or a miss.
    pub fn get(
        &self,
        key: &Key,
        version: &str,
        directory: &Directory,
        now: Option<i64>,
    ) -> Option<Arc<Cached>> {
        let found = self.entries.get(key).filter(|c| {
            c.version == version && c.holds_at(now) && directory.is_current(c.entities.deps())
        });
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Keep `cached` for `key` (replacing what was there) if its entities
    /// can be checked for changes (a complete slice).
    pub fn insert(&self, key: Key, cached: Arc<Cached>) {
        let empty_interval = cached
            .clock
            .is_some_and(|(from, until)| until.is_some_and(|u| u <= from));
        if cached.entities.is_complete() && !empty_interval {
            self.entries.insert(key, cached);
        }
    }

    /// Lookups that were served.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Lookups that were not (absent, stale, or another pack version).
    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }

    /// Decisions kept now.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no decision is kept.
    pub fn is_empty(&self) -> bool {
        self.entries.len() == 0
    }
}
