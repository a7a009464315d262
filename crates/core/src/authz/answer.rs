//! What a decision gives back: [`Answer`], the fail-closed decision with
//! its id, its entities and, under `--audit-required`, the log's
//! acknowledgement that its record is durable.
//!
//! Owns the answer type. It must never know how the decision was made or
//! cached, nor any adapter's wire format (the encoding it carries is the
//! adapter's, made by the adapter).

use std::sync::Arc;

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
