//! The record format of the decision log: the events callers hand to the
//! writer ([`Event`]), the record as read back ([`Record`]), and the
//! canonical encoding and SHA-256 hash that chain records together.
//!
//! Canonical encoding (what `hash` is computed over): the record as a JSON
//! object *without* its `hash` member, objects with their keys sorted by
//! byte order at every depth, no whitespace, strings and numbers as
//! serde_json writes them. `hash` = lowercase hex SHA-256 of those bytes.
//! Because it is computed from the parsed JSON value, any re-serialisation
//! of the same value (key order, spacing) verifies the same.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::engine::{Decision, Effect, Reason};

/// `prev_hash` of the very first record of a log: 64 zeros.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What a record is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// An authorization decision.
    Decision,
    /// A change to the directory or the registry, or an orchestrator operation.
    Change,
    /// A policy reload, good or bad.
    Reload,
    /// Written by the log itself at open: a torn last line was cut away.
    Repair,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Decision => "decision",
            Kind::Change => "change",
            Kind::Reload => "reload",
            Kind::Repair => "repair",
        }
    }
}

impl std::str::FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "decision" => Ok(Kind::Decision),
            "change" => Ok(Kind::Change),
            "reload" => Ok(Kind::Reload),
            "repair" => Ok(Kind::Repair),
            other => Err(format!(
                "unknown kind `{other}` (expected decision, change, reload or repair)"
            )),
        }
    }
}

/// The disagreement of a candidate (shadow) policy set with the live one,
/// attached to a decision record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shadow {
    /// The candidate's decision (differs from the record's `decision`).
    pub decision: Effect,
    /// The candidate's determining policies.
    pub reasons: Vec<Reason>,
    /// The candidate's evaluation errors.
    pub errors: Vec<String>,
    /// The candidate pack's version.
    pub policy_version: String,
}

/// The `shadow` field for a decision: `Some` exactly when the candidate's
/// effect differs from the live one (reasons alone differing is agreement).
pub fn shadow_of(live: &Decision, candidate: &Decision) -> Option<Shadow> {
    if live.decision == candidate.decision {
        return None;
    }
    Some(Shadow {
        decision: candidate.decision,
        reasons: candidate.reasons.clone(),
        errors: candidate.errors.clone(),
        policy_version: candidate.policy_version.clone(),
    })
}

/// A new decision id (UUID v7: time-ordered), to return to the caller and
/// to log in `decision_id`.
pub fn new_decision_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// One authorization decision, as the server or CLI hands it to the log.
#[derive(Debug, Clone, PartialEq)]
pub struct DecisionEvent {
    /// The id returned to the caller ([`new_decision_id`]).
    pub decision_id: String,
    pub request_id: Option<String>,
    /// Entity uids in Cedar syntax, e.g. `User::"alice"`.
    pub principal: String,
    pub action: String,
    pub resource: String,
    /// The request context (a JSON object, or null).
    pub context: Value,
    /// The entity slice the decision was made over (Cedar entity JSON
    /// array), so that `audit replay` can re-evaluate it.
    pub entities: Value,
    pub decision: Decision,
    pub latency_us: u64,
    /// Disagreement of the shadow policy set, if any ([`shadow_of`]).
    pub shadow: Option<Shadow>,
}

/// A change to the directory or registry, or an orchestrator operation.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeEvent {
    /// The decision that authorized the change, if there was one.
    pub decision_id: Option<String>,
    pub request_id: Option<String>,
    /// Who made the change (an entity uid or an operator name).
    pub actor: String,
    /// What was done, e.g. `user.dismiss` or `registry.update`.
    pub operation: String,
    /// The state before (null when created) and after (null when deleted).
    pub before: Value,
    pub after: Value,
}

/// A policy reload, successful (`error` None) or not.
#[derive(Debug, Clone, PartialEq)]
pub struct ReloadEvent {
    pub request_id: Option<String>,
    /// The files read.
    pub files: Vec<String>,
    /// The version now live (after a failed reload: the one still live).
    pub version: Option<String>,
    /// Why the reload failed, if it did.
    pub error: Option<String>,
}

/// Something to append to the log.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Decision(Box<DecisionEvent>),
    Change(ChangeEvent),
    Reload(ReloadEvent),
}

impl Event {
    pub fn kind(&self) -> Kind {
        match self {
            Event::Decision(_) => Kind::Decision,
            Event::Change(_) => Kind::Change,
            Event::Reload(_) => Kind::Reload,
        }
    }
}

impl From<DecisionEvent> for Event {
    fn from(e: DecisionEvent) -> Self {
        Event::Decision(Box::new(e))
    }
}
impl From<ChangeEvent> for Event {
    fn from(e: ChangeEvent) -> Self {
        Event::Change(e)
    }
}
impl From<ReloadEvent> for Event {
    fn from(e: ReloadEvent) -> Self {
        Event::Reload(e)
    }
}

/// What a `repair` record says was cut.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairInfo {
    /// The file that had a torn last line.
    pub file: String,
    /// The byte offset the file was truncated to.
    pub offset: u64,
    /// How many bytes were cut.
    pub cut_bytes: u64,
    /// SHA-256 (hex) of the bytes cut, for the record.
    pub cut_sha256: String,
}

/// A record as read back from the log: every field optional except the
/// chain fields, so that query and replay accept every kind.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
pub struct Record {
    pub seq: u64,
    pub ts: String,
    pub kind: Option<Kind>,
    #[serde(default)]
    pub decision_id: Option<String>,
    #[serde(default)]
    pub request_id: Option<String>,
    #[serde(default)]
    pub replica: Option<String>,
    #[serde(default)]
    pub principal: Option<String>,
    #[serde(default)]
    pub action: Option<String>,
    #[serde(default)]
    pub resource: Option<String>,
    #[serde(default)]
    pub context: Option<Value>,
    #[serde(default)]
    pub entities: Option<Value>,
    #[serde(default)]
    pub decision: Option<Effect>,
    #[serde(default)]
    pub reasons: Option<Vec<Reason>>,
    #[serde(default)]
    pub errors: Option<Vec<String>>,
    #[serde(default)]
    pub policy_version: Option<String>,
    #[serde(default)]
    pub latency_us: Option<u64>,
    #[serde(default)]
    pub shadow: Option<Shadow>,
    #[serde(default)]
    pub actor: Option<String>,
    #[serde(default)]
    pub operation: Option<String>,
    #[serde(default)]
    pub before: Option<Value>,
    #[serde(default)]
    pub after: Option<Value>,
    #[serde(default)]
    pub files: Option<Vec<String>>,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub repair: Option<RepairInfo>,
    pub prev_hash: String,
    pub hash: String,
}

fn opt(v: &Option<String>) -> Value {
    v.as_ref().map_or(Value::Null, |s| Value::String(s.clone()))
}

fn json<T: Serialize>(v: &T) -> Value {
    // Serialising our own plain data types cannot fail.
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// The record body of an event (every field but the chain fields `seq`,
/// `prev_hash`, `hash`, which the writer adds), in the documented order.
/// The event must already be redacted.
pub fn body(event: Event, ts: &str, replica: Option<&str>) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("seq".into(), Value::Null); // placeholder keeps `seq` first
    m.insert("ts".into(), Value::String(ts.to_string()));
    m.insert("kind".into(), Value::String(event.kind().as_str().into()));
    match event {
        Event::Decision(d) => {
            let d = *d;
            m.insert("decision_id".into(), Value::String(d.decision_id));
            m.insert("request_id".into(), opt(&d.request_id));
            m.insert("principal".into(), Value::String(d.principal));
            m.insert("action".into(), Value::String(d.action));
            m.insert("resource".into(), Value::String(d.resource));
            m.insert("context".into(), d.context);
            m.insert("entities".into(), d.entities);
            m.insert("decision".into(), json(&d.decision.decision));
            m.insert("reasons".into(), json(&d.decision.reasons));
            m.insert("errors".into(), json(&d.decision.errors));
            m.insert(
                "policy_version".into(),
                Value::String(d.decision.policy_version),
            );
            m.insert("latency_us".into(), Value::from(d.latency_us));
            if let Some(s) = &d.shadow {
                m.insert("shadow".into(), json(s));
            }
        }
        Event::Change(c) => {
            m.insert("decision_id".into(), opt(&c.decision_id));
            m.insert("request_id".into(), opt(&c.request_id));
            m.insert("actor".into(), Value::String(c.actor));
            m.insert("operation".into(), Value::String(c.operation));
            m.insert("before".into(), c.before);
            m.insert("after".into(), c.after);
        }
        Event::Reload(r) => {
            m.insert("decision_id".into(), Value::Null);
            m.insert("request_id".into(), opt(&r.request_id));
            m.insert("files".into(), json(&r.files));
            m.insert("version".into(), opt(&r.version));
            m.insert("error".into(), opt(&r.error));
        }
    }
    if let Some(r) = replica {
        m.insert("replica".into(), Value::String(r.to_string()));
    }
    m
}

/// The body of a `repair` record.
pub fn repair_body(info: &RepairInfo, ts: &str, replica: Option<&str>) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("seq".into(), Value::Null);
    m.insert("ts".into(), Value::String(ts.to_string()));
    m.insert("kind".into(), Value::String(Kind::Repair.as_str().into()));
    m.insert("decision_id".into(), Value::Null);
    m.insert("request_id".into(), Value::Null);
    m.insert(
        "operation".into(),
        Value::String("truncate_torn_line".into()),
    );
    m.insert("repair".into(), json(info));
    if let Some(r) = replica {
        m.insert("replica".into(), Value::String(r.to_string()));
    }
    m
}

/// Complete a body into a chained record: set `seq` and `prev_hash`, compute
/// and append `hash`. Returns the JSON line (without newline) and the hash.
pub fn seal(m: Map<String, Value>, seq: u64, prev_hash: &str) -> (String, String) {
    let mut line = Vec::with_capacity(1024);
    let hash = seal_into(m, seq, prev_hash, &mut line);
    (String::from_utf8(line).unwrap_or_default(), hash)
}

/// [`seal`], appending the JSON line (without newline) to `out`.
pub fn seal_into(
    mut m: Map<String, Value>,
    seq: u64,
    prev_hash: &str,
    out: &mut Vec<u8>,
) -> String {
    m.insert("seq".into(), Value::from(seq));
    m.remove("hash");
    m.insert("prev_hash".into(), Value::String(prev_hash.to_string()));
    let hash = compute_hash(&m);
    m.insert("hash".into(), Value::String(hash.clone()));
    // Writing a Value into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, &m);
    hash
}

/// Feeds written bytes into a SHA-256.
struct HashWriter(Sha256);

impl std::io::Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The hash a record object should carry: SHA-256 (lowercase hex) of its
/// canonical encoding without `hash`. The encoding is streamed into the
/// hash, never built.
pub fn compute_hash(record: &Map<String, Value>) -> String {
    // Buffered: serde_json writes a string in several small pieces.
    let mut h = std::io::BufWriter::with_capacity(4096, HashWriter(Sha256::new()));
    // Writing into a hasher cannot fail.
    let _ = write_canonical_map(record, &mut h, Some("hash"));
    match h.into_inner() {
        Ok(h) => hex::encode(h.0.finalize()),
        Err(_) => String::new(),
    }
}

/// The canonical encoding of a JSON value (sorted keys, no whitespace).
pub fn canonical(v: &Value) -> String {
    let mut out = Vec::new();
    let _ = write_canonical(v, &mut out);
    String::from_utf8(out).unwrap_or_default()
}

fn write_canonical<W: std::io::Write>(v: &Value, out: &mut W) -> std::io::Result<()> {
    match v {
        Value::Object(m) => write_canonical_map(m, out, None),
        Value::Array(a) => {
            out.write_all(b"[")?;
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.write_all(b",")?;
                }
                write_canonical(x, out)?;
            }
            out.write_all(b"]")
        }
        scalar => serde_json::to_writer(&mut *out, scalar).map_err(std::io::Error::other),
    }
}

fn write_canonical_map<W: std::io::Write>(
    m: &Map<String, Value>,
    out: &mut W,
    skip: Option<&str>,
) -> std::io::Result<()> {
    let mut keys: Vec<&String> = m.keys().filter(|k| Some(k.as_str()) != skip).collect();
    keys.sort_unstable();
    out.write_all(b"{")?;
    for (i, k) in keys.into_iter().enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        serde_json::to_writer(&mut *out, k).map_err(std::io::Error::other)?;
        out.write_all(b":")?;
        write_canonical(&m[k.as_str()], out)?;
    }
    out.write_all(b"}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_sorts_keys_at_every_depth() {
        let v = json!({"b": 1, "a": {"z": [ {"y": 1, "x": "é\n"} ], "c": null}});
        assert_eq!(
            canonical(&v),
            r#"{"a":{"c":null,"z":[{"x":"é\n","y":1}]},"b":1}"#
        );
    }

    #[test]
    fn seal_hash_is_independent_of_key_order_and_verifies() {
        let mut m = Map::new();
        m.insert("seq".into(), Value::Null);
        m.insert("ts".into(), json!("2026-01-01T00:00:00Z"));
        m.insert("kind".into(), json!("change"));
        let (line, hash) = seal(m, 7, GENESIS_HASH);
        let parsed: Value = serde_json::from_str(&line).unwrap();
        let obj = parsed.as_object().unwrap();
        assert_eq!(obj["hash"], json!(hash));
        assert_eq!(compute_hash(obj), hash);
        // Reverse the key order: same hash.
        let rev: Map<String, Value> = obj
            .iter()
            .rev()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        assert_eq!(compute_hash(&rev), hash);
        // Change one value: another hash.
        let mut edited = obj.clone();
        edited.insert("seq".into(), json!(8));
        assert_ne!(compute_hash(&edited), hash);
    }

    #[test]
    fn shadow_only_when_effects_differ() {
        let d = |e| Decision {
            decision: e,
            reasons: vec![],
            errors: vec![],
            policy_version: "v".into(),
        };
        assert!(shadow_of(&d(Effect::Allow), &d(Effect::Allow)).is_none());
        let s = shadow_of(&d(Effect::Allow), &d(Effect::Deny)).unwrap();
        assert_eq!(s.decision, Effect::Deny);
    }
}
