//! The clocked question: PartnerGate supplies `context.now`, never the
//! caller; how a question gets it, and the interval of time over which a
//! clocked decision holds (what the decision cache keeps it for).
//!
//! Owns refusing a caller's clock, setting `context.now`, and
//! `holds_until`. It must never know the cache's storage, the decision log
//! or HTTP.

use crate::engine::RequestError;
use crate::policies::{PolicyPack, CLOCK_ATTRIBUTE};

use super::entities::{entity_datetimes, DecisionEntities};
use super::query::Query;

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
pub(super) fn clock_value(now: i64) -> Result<serde_json::Value, RequestError> {
    crate::clock::datetime_json(now).ok_or_else(|| {
        RequestError::field(
            &format!("context.{CLOCK_ATTRIBUTE}"),
            format!("the clock reads {now} ms, outside the years 0000-9999"),
        )
    })
}

/// `q` with `value` as `context.now`.
pub(super) fn with_clock(q: &Query, value: serde_json::Value) -> Query {
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
pub(super) fn clocked_context(
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
pub(super) fn holds_until(
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
