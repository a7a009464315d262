//! What a pack says about time: the reserved context attribute that carries
//! the current time ([`CLOCK_ATTRIBUTE`]), the actions whose context
//! declares it (read from the schema) and whether the policies use
//! datetimes only in comparisons.
//!
//! Owns those readings of the schema and policy texts; it must never know
//! how files are read or how a pack is assembled or served.

use std::path::Path;

use cedar_policy::EntityUid;

/// The reserved context attribute that carries the current time (a Cedar
/// `datetime`). The decision path supplies it to every action whose
/// context declares it; a caller never does.
pub const CLOCK_ATTRIBUTE: &str = "now";

/// What a pack says about time: which actions take the clock, and whether
/// a decision can depend on the time only by comparing it (no datetime or
/// duration literals, no arithmetic in any policy), so that a decision
/// holds until the next datetime value of its entities or context.
#[derive(Debug, Clone, Default)]
pub(super) struct Clock {
    pub(super) actions: std::collections::HashSet<EntityUid>,
    pub(super) compared_only: bool,
}

/// The actions whose context record declares [`CLOCK_ATTRIBUTE`] (directly
/// or through a common type), read from the schema's JSON form. A schema
/// that parsed as a [`Schema`] parses as a fragment too; if it did not,
/// no action takes the clock (and the policies' `context has now` is false).
pub(super) fn clock_actions(path: &Path, text: &str) -> std::collections::HashSet<EntityUid> {
    let is_json = path.extension().is_some_and(|e| e == "json");
    let json = if is_json {
        serde_json::from_str(text).ok()
    } else {
        cedar_policy::SchemaFragment::from_cedarschema_str(text)
            .ok()
            .and_then(|(f, _)| f.to_json_value().ok())
    };
    let mut out = std::collections::HashSet::new();
    let Some(serde_json::Value::Object(namespaces)) = json else {
        return out;
    };
    for (ns, body) in &namespaces {
        let common = body.get("commonTypes");
        let Some(actions) = body.get("actions").and_then(|a| a.as_object()) else {
            continue;
        };
        for (name, action) in actions {
            let Some(mut ctx) = action.pointer("/appliesTo/context") else {
                continue;
            };
            // A reference to a common type: `{"type": "T"}` or
            // `{"type": "EntityOrCommon", "name": "T"}`.
            let named = ctx
                .get("name")
                .or_else(|| ctx.get("type").filter(|t| *t != "Record"))
                .and_then(|n| n.as_str());
            if let Some(t) = named.and_then(|n| common.and_then(|c| c.get(n))) {
                ctx = t;
            }
            if ctx
                .pointer(&format!("/attributes/{CLOCK_ATTRIBUTE}"))
                .is_none()
            {
                continue;
            }
            let ty = if ns.is_empty() {
                "Action".to_string()
            } else {
                format!("{ns}::Action")
            };
            let uid = serde_json::json!({"type": ty, "id": name});
            if let Ok(uid) = EntityUid::from_json(uid) {
                out.insert(uid);
            }
        }
    }
    out
}

/// Whether a policy text may compute with times (see
/// [`PolicyPack::time_compared_only`](super::PolicyPack::time_compared_only)); conservative: a comment that names
/// one of these functions counts too.
pub(super) fn uses_time_arithmetic(text: &str) -> bool {
    const CALLS: [&str; 11] = [
        "datetime(",
        "duration(",
        "offset(",
        "durationSince(",
        "toDate(",
        "toTime(",
        "toDays(",
        "toHours(",
        "toMinutes(",
        "toSeconds(",
        "toMilliseconds(",
    ];
    CALLS.iter().any(|c| text.contains(c))
}
