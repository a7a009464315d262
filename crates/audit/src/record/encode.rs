//! The record encoder: the writer does not build the canonical encoding
//! twice. [`RecordEncoder`] encodes each member value once (canonically),
//! writes the members in the documented order, and hashes the same bytes in
//! key order; [`encode_event`] lays out an event's members, with a
//! decision's entity slice inline (`entities`) on the first decision of a
//! file that used it and named by `entities_hash` on every decision;
//! [`seal`] chains any record object (the log's own records).
//!
//! Knows nothing of files, the queue or when records are written.

use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::event::{DecisionEvent, Event};
use super::hash::write_canonical;
use super::slice::EncodedSlice;
use crate::redact::Redaction;

use partnergate_policy::engine::Reason;

/// Builds one record: each member (`"key":value`, the value encoded
/// canonically) is written once, straight into the line, in the order given;
/// the hash is then taken over the same bytes in key order (the canonical
/// encoding of the record without `hash`), and `hash` closes the line.
/// Reused between records to keep its buffers.
#[derive(Debug, Default)]
pub struct RecordEncoder {
    /// Key, start of the member and end of its value in `line`, in the
    /// order given.
    fields: Vec<(Key, usize, usize)>,
    /// `fields` in key order, and the keys it was computed for (the same
    /// keys in the same order, as for every decision, reuse it).
    order: Vec<usize>,
    order_keys: Vec<(usize, usize)>,
    line: Vec<u8>,
    hash: String,
}

impl RecordEncoder {
    fn push_with(&mut self, key: impl Into<Key>, write: impl FnOnce(&mut Vec<u8>)) {
        if self.fields.is_empty() {
            self.line.clear();
            self.line.push(b'{');
        } else {
            self.line.push(b',');
        }
        let key = key.into();
        let start = self.line.len();
        write_key(&mut self.line, &key);
        self.line.push(b':');
        write(&mut self.line);
        self.fields.push((key, start, self.line.len()));
    }

    fn str(&mut self, key: &'static str, s: &str) {
        self.push_with(key, |o| write_str(o, s));
    }

    fn opt_str(&mut self, key: &'static str, s: Option<&str>) {
        self.push_with(key, |o| match s {
            Some(s) => write_str(o, s),
            None => o.extend_from_slice(b"null"),
        });
    }

    fn u64(&mut self, key: &'static str, n: u64) {
        use std::io::Write as _;
        // Writing into a Vec cannot fail.
        self.push_with(key, |o| {
            let _ = write!(o, "{n}");
        });
    }

    fn value(&mut self, key: impl Into<Key>, v: &Value) {
        self.push_with(key, |o| {
            let _ = write_canonical(v, o);
        });
    }

    /// The line of the last sealed record (without newline).
    pub fn line(&self) -> &[u8] {
        &self.line
    }

    /// The hash of the last sealed record (lowercase hex).
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// Hash the fields given since the last seal and write the line.
    fn seal(&mut self) -> &str {
        let fields = &self.fields;
        let same_keys = self.order_keys.len() == fields.len()
            && fields
                .iter()
                .zip(&self.order_keys)
                .all(|((k, _, _), &(ptr, len))| {
                    k.as_str().as_ptr() as usize == ptr && k.as_str().len() == len
                });
        if !same_keys {
            self.order.clear();
            self.order.extend(0..fields.len());
            self.order
                .sort_unstable_by(|&a, &b| fields[a].0.as_str().cmp(fields[b].0.as_str()));
            self.order_keys.clear();
            // Only static keys can be recognised by address next time.
            if fields.iter().all(|(k, _, _)| matches!(k, Key::Static(_))) {
                self.order_keys.extend(
                    fields
                        .iter()
                        .map(|(k, _, _)| (k.as_str().as_ptr() as usize, k.as_str().len())),
                );
            }
        }
        let mut h = Sha256::new();
        h.update(b"{");
        for (n, &i) in self.order.iter().enumerate() {
            let (_, start, end) = &fields[i];
            if n > 0 {
                h.update(b",");
            }
            h.update(&self.line[*start..*end]);
        }
        h.update(b"}");
        let mut hex = [0u8; 64];
        // 32 bytes always fit 64 hex digits.
        let _ = hex::encode_to_slice(h.finalize(), &mut hex);
        self.hash.clear();
        self.hash
            .push_str(std::str::from_utf8(&hex).unwrap_or_default());
        self.line.extend_from_slice(b",\"hash\":\"");
        self.line.extend_from_slice(&hex);
        self.line.extend_from_slice(b"\"}");
        self.fields.clear();
        &self.hash
    }
}

/// A JSON string, exactly as serde_json writes it.
fn write_str(out: &mut Vec<u8>, s: &str) {
    // Most strings (hashes, ids, timestamps) need no escape: checked eight
    // bytes at a time, then copied.
    if needs_escape(s.as_bytes()) {
        // Writing into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    } else {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    }
}

/// Whether a JSON string of `bytes` needs an escape: a control byte, `"`
/// or `\\` (SWAR: eight bytes per step).
fn needs_escape(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // A byte of `x` is zero.
    let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        let x = u64::from_le_bytes(w);
        // Bytes below 0x20 (exact for ASCII; a byte >= 0x80 may give a
        // false positive, which only takes the slow path).
        let control = x.wrapping_sub(ONES * 0x20) & !x & HIGH;
        if control | zero(x ^ (ONES * u64::from(b'"'))) | zero(x ^ (ONES * u64::from(b'\\'))) != 0 {
            return true;
        }
    }
    chunks
        .remainder()
        .iter()
        .any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

/// A member name of a record: one of ours (a literal, known to need no
/// escape) or one read from a record object.
#[derive(Debug)]
enum Key {
    Static(&'static str),
    Dynamic(String),
}

impl Key {
    fn as_str(&self) -> &str {
        match self {
            Key::Static(k) => k,
            Key::Dynamic(k) => k,
        }
    }
}

impl From<&'static str> for Key {
    fn from(k: &'static str) -> Self {
        Key::Static(k)
    }
}

impl From<String> for Key {
    fn from(k: String) -> Self {
        Key::Dynamic(k)
    }
}

fn write_key(out: &mut Vec<u8>, key: &Key) {
    match key {
        Key::Static(k) => {
            out.push(b'"');
            out.extend_from_slice(k.as_bytes());
            out.push(b'"');
        }
        Key::Dynamic(k) => write_str(out, k),
    }
}

fn write_strs(out: &mut Vec<u8>, items: &[String]) {
    out.push(b'[');
    for (i, s) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(out, s);
    }
    out.push(b']');
}

/// Reasons in canonical form (`description` sorts before `id`; an absent
/// description is omitted, as serde omits it).
fn write_reasons(out: &mut Vec<u8>, reasons: &[Reason]) {
    out.push(b'[');
    for (i, r) in reasons.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'{');
        if let Some(d) = &r.description {
            out.extend_from_slice(b"\"description\":");
            write_str(out, d);
            out.push(b',');
        }
        out.extend_from_slice(b"\"id\":");
        write_str(out, &r.id);
        out.push(b'}');
    }
    out.push(b']');
}

/// A plain data type as a JSON value.
pub(super) fn json<T: Serialize>(v: &T) -> Value {
    // Serialising our own plain data types cannot fail.
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// How a decision record carries its entity slice.
#[derive(Debug, Clone, Copy)]
pub enum SliceField<'a> {
    /// `entities` (the slice) and `entities_hash`.
    Inline(&'a EncodedSlice),
    /// `entities_hash` only: an earlier record of the same file has the slice.
    Reference(&'a EncodedSlice),
}

/// Where a record goes in the chain.
#[derive(Debug, Clone, Copy)]
pub struct Link<'a> {
    /// The record's sequence number.
    pub seq: u64,
    /// The hash of the record before it.
    pub prev_hash: &'a str,
}

/// The members of a decision record, after `seq`, `ts` and `kind`.
fn encode_decision(enc: &mut RecordEncoder, d: &DecisionEvent, slice: Option<SliceField<'_>>) {
    enc.str("decision_id", &d.decision_id);
    enc.opt_str("request_id", d.request_id.as_deref());
    enc.str("principal", &d.principal);
    enc.str("action", &d.action);
    enc.str("resource", &d.resource);
    enc.value("context", &d.context);
    let own;
    let slice = if let Some(s) = slice {
        s
    } else {
        own = d.entities.encoded(&Redaction::default(), 0);
        SliceField::Inline(&own)
    };
    let encoded = match slice {
        SliceField::Inline(e) => {
            enc.push_with("entities", |o| o.extend_from_slice(&e.canonical));
            e
        }
        SliceField::Reference(e) => e,
    };
    enc.str("entities_hash", &encoded.hash);
    if let Some(e) = d.entities.error() {
        enc.str("entities_error", e);
    }
    enc.str("decision", d.decision.decision.as_str());
    enc.push_with("reasons", |o| write_reasons(o, &d.decision.reasons));
    enc.push_with("errors", |o| write_strs(o, &d.decision.errors));
    enc.str("policy_version", &d.decision.policy_version);
    enc.u64("latency_us", d.latency_us);
    if let Some(s) = &d.shadow {
        enc.value("shadow", &json(s));
    }
    if !d.request_entities.is_empty() {
        enc.push_with("request_entities", |o| write_strs(o, &d.request_entities));
    }
    if let Some(g) = &d.gateway {
        enc.value("gateway", &json(g));
    }
}

/// Encode an event (context already redacted) as the record at `link`,
/// fields in the documented order; the line is then in
/// [`RecordEncoder::line`]. `slice` is how a decision carries its entities
/// (inline and unredacted when `None`). Returns the record's hash.
pub fn encode_event<'e>(
    enc: &'e mut RecordEncoder,
    event: &Event,
    ts: &str,
    replica: Option<&str>,
    link: Link<'_>,
    slice: Option<SliceField<'_>>,
) -> &'e str {
    enc.u64("seq", link.seq);
    enc.str("ts", ts);
    enc.str("kind", event.kind().as_str());
    match event {
        Event::Decision(d) => encode_decision(enc, d, slice),
        Event::Change(c) => {
            enc.opt_str("decision_id", c.decision_id.as_deref());
            enc.opt_str("request_id", c.request_id.as_deref());
            enc.str("actor", &c.actor);
            enc.str("operation", &c.operation);
            enc.value("before", &c.before);
            enc.value("after", &c.after);
            if let Some(id) = &c.change_id {
                enc.str("change_id", id);
            }
            if c.recovered {
                enc.value("recovered", &Value::Bool(true));
            }
        }
        Event::Reload(r) => {
            enc.opt_str("decision_id", None);
            enc.opt_str("request_id", r.request_id.as_deref());
            enc.push_with("files", |o| write_strs(o, &r.files));
            enc.opt_str("version", r.version.as_deref());
            enc.opt_str("error", r.error.as_deref());
        }
        Event::Search(q) => {
            enc.str("decision_id", &q.decision_id);
            enc.opt_str("request_id", q.request_id.as_deref());
            enc.str("search", &q.search);
            enc.str("principal", &q.principal);
            enc.str("action", &q.action);
            enc.str("resource", &q.resource);
            enc.value("context", &q.context);
            enc.u64("results", q.results);
            match q.total {
                Some(t) => enc.u64("total", t),
                None => enc.value("total", &Value::Null),
            }
            enc.u64("evaluated", q.evaluated);
            enc.str("policy_version", &q.policy_version);
            enc.u64("latency_us", q.latency_us);
        }
    }
    if let Some(r) = replica {
        enc.str("replica", r);
    }
    enc.str("prev_hash", link.prev_hash);
    enc.seal()
}

/// Complete a record object into a chained record: set `seq` (in place of a
/// `seq` member, else first) and `prev_hash`, compute and append `hash`.
/// Returns the JSON line (without newline) and the hash.
pub fn seal(m: Map<String, Value>, seq: u64, prev_hash: &str) -> (String, String) {
    let mut enc = RecordEncoder::default();
    if !m.contains_key("seq") {
        enc.u64("seq", seq);
    }
    for (k, v) in m {
        match k.as_str() {
            "seq" => enc.u64("seq", seq),
            "hash" | "prev_hash" => {}
            _ => enc.value(k, &v),
        }
    }
    enc.str("prev_hash", prev_hash);
    let hash = enc.seal().to_string();
    (String::from_utf8_lossy(enc.line()).into_owned(), hash)
}

#[cfg(test)]
mod tests;
