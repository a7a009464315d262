//! What a decision gives back: [`Answer`], the fail-closed decision with
//! its id, its entities and, under `--audit-required`, the log's
//! acknowledgement that its record is durable.
//!
//! Owns the answer type and [`Derived`], the slot where an adapter keeps
//! what it derives from a decision. It must never know how the decision was
//! made or cached, nor any adapter's wire format (a derived value's type is
//! the adapter's).

use std::any::Any;
use std::sync::{Arc, OnceLock};

use crate::engine::Decision;

use super::entities::DecisionEntities;

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
    /// What an adapter derives from `decision` (e.g. its wire encoding
    /// without the decision id), shared with the decision cache: an answer
    /// served from the cache finds it made.
    pub derived: Derived,
}

/// A value an adapter derives from a decision once, shared by every answer
/// the decision cache serves from that decision. The value's type is the
/// adapter's; core keeps it without knowing it. Fill it only with a
/// function of the decision.
#[derive(Clone, Default)]
pub struct Derived(Arc<OnceLock<Box<dyn Any + Send + Sync>>>);

impl Derived {
    /// The `T` kept here, made by `make` on the first call. `None` when a
    /// value of another type was kept first (two adapters over one
    /// decision): the caller then makes its own.
    pub fn get_or_init<T: Any + Send + Sync>(&self, make: impl FnOnce() -> T) -> Option<&T> {
        self.0.get_or_init(|| Box::new(make())).downcast_ref()
    }
}

impl std::fmt::Debug for Derived {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "Derived(made)"
        } else {
            "Derived(empty)"
        })
    }
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
