//! The record as read back from the log ([`Record`]): every kind in one
//! struct, every field optional except the chain fields, so that query and
//! replay accept every kind (and kinds this version does not know).
//!
//! Knows nothing of how a record is encoded, hashed or written.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::event::{Gateway, Kind, Shadow};
use super::own::{GapInfo, RepairInfo, RetentionInfo};

use partnergate_policy::engine::{Effect, Reason};

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
