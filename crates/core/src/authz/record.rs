//! The decision's record: what the decision log is given for one answer
//! (the question, the context as decided, the entity slice, the request's
//! own entities, the shadow disagreement), and the durability
//! acknowledgement under `--audit-required`.
//!
//! Owns writing one decision to the log. It must never know how the
//! decision was made, the caches or HTTP.

use std::collections::HashMap;

use cedar_policy::{Entity, EntityUid};

use crate::audit::{AuditLog, DecisionEvent};

use super::answer::Answer;
use super::query::Query;

/// Write the decision's record to the log, if there is one; with
/// `audit_required`, the answer then carries the durability acknowledgement.
pub(super) fn log_decision(
    log: Option<&AuditLog>,
    audit_required: bool,
    q: &Query,
    context: Option<serde_json::Value>,
    overlay: &HashMap<EntityUid, Entity>,
    shadow: Option<crate::audit::Shadow>,
    answer: &mut Answer,
) {
    let Some(log) = log else {
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
    if audit_required {
        answer.durable = Some(log.log_durable(event));
    } else {
        log.log(event);
    }
}
