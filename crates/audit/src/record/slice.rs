//! A decision's entity slice ([`EntitySlice`]): given as one JSON value or
//! as the JSON texts of its entities, shared by every decision over the same
//! entities, and redacted, canonically encoded and hashed at most once per
//! redaction ([`EncodedSlice`]); and about how many bytes a JSON value holds
//! in memory ([`value_bytes`]), the unit the writer's queue is bounded in.
//!
//! Knows nothing of the events that carry a slice or of the record it is
//! written into.

use std::sync::{Arc, OnceLock};

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::hash::write_canonical;
use crate::redact::Redaction;

/// The entity slice of a decision (a Cedar entity JSON array), shared by
/// every decision made over the same entities. The writer redacts,
/// canonically encodes and hashes it at most once per redaction.
///
/// A slice is given either as a JSON value or as the JSON texts of its
/// entities ([`EntitySlice::from_texts`]: shared with whoever holds them,
/// parsed only when encoded, and never kept parsed), so that a slice kept
/// by a cache costs its encoding, not a second copy of its entities.
#[derive(Debug)]
pub struct EntitySlice {
    json: SliceJson,
    /// Why the decision's entities could not be turned into JSON (the slice
    /// is then `null` and the record says so in `entities_error`); for
    /// texts, known once they are parsed.
    error: OnceLock<Option<String>>,
    encoded: OnceLock<(u64, Arc<EncodedSlice>)>,
    /// [`EntitySlice::held_bytes`], computed once.
    bytes: OnceLock<u64>,
}

/// Where a slice's JSON comes from.
#[derive(Debug)]
enum SliceJson {
    Value(Value),
    Texts(Box<[Arc<str>]>),
}

/// An entity slice as written: redacted, canonically encoded, hashed.
#[derive(Debug, PartialEq, Eq)]
pub struct EncodedSlice {
    /// Lowercase hex SHA-256 of `canonical`: the record's `entities_hash`.
    pub hash: String,
    /// The canonical encoding of the redacted entity array.
    pub canonical: Vec<u8>,
}

impl EntitySlice {
    /// The slice of a Cedar entity JSON array.
    pub fn new(json: Value) -> Arc<Self> {
        Arc::new(EntitySlice {
            json: SliceJson::Value(json),
            error: OnceLock::from(None),
            encoded: OnceLock::new(),
            bytes: OnceLock::new(),
        })
    }

    /// The slice whose entities are the Cedar entity JSON `texts`, in
    /// order. A text that does not parse makes the slice unavailable (its
    /// reason in `entities_error`) when it is encoded, logged as an error.
    pub fn from_texts(texts: Box<[Arc<str>]>) -> Arc<Self> {
        Arc::new(EntitySlice {
            json: SliceJson::Texts(texts),
            error: OnceLock::new(),
            encoded: OnceLock::new(),
            bytes: OnceLock::new(),
        })
    }

    /// The slice as one JSON value (texts parsed), or why it cannot be.
    fn parsed(&self) -> Result<std::borrow::Cow<'_, Value>, String> {
        match &self.json {
            SliceJson::Value(v) => Ok(std::borrow::Cow::Borrowed(v)),
            SliceJson::Texts(texts) => texts
                .iter()
                .map(|t| serde_json::from_str(t))
                .collect::<Result<Vec<Value>, _>>()
                .map(|v| std::borrow::Cow::Owned(Value::Array(v)))
                .map_err(|e| {
                    let reason = format!("a stored entity of the slice is not JSON: {e}");
                    tracing::error!(error = %reason, "a decision's entity slice could not be read for the decision log");
                    reason
                }),
        }
    }

    /// The slice of a decision whose entities could not be serialised:
    /// `null`, and `reason` in the record's `entities_error`, so that replay
    /// reports the record as not replayable instead of deciding over nothing.
    pub fn unavailable(reason: impl Into<String>) -> Arc<Self> {
        Arc::new(EntitySlice {
            json: SliceJson::Value(Value::Null),
            error: OnceLock::from(Some(reason.into())),
            encoded: OnceLock::new(),
            bytes: OnceLock::new(),
        })
    }

    /// About how many bytes the slice holds (its entities, and their
    /// encoding once the writer has made it), computed once: what the
    /// writer's queue charges for it ([`Event::held_bytes`](super::Event::held_bytes)).
    pub fn held_bytes(&self) -> u64 {
        *self.bytes.get_or_init(|| {
            let given = match &self.json {
                SliceJson::Value(v) => value_bytes(v),
                SliceJson::Texts(texts) => texts.iter().map(|t| t.len() as u64 + 16).sum(),
            };
            // The canonical encoding kept beside it is about its text again.
            given.saturating_mul(2)
        })
    }

    /// Why the slice is unavailable, if it is.
    pub fn error(&self) -> Option<&str> {
        self.error.get_or_init(|| self.parsed().err()).as_deref()
    }

    /// The entities as given (not redacted); `null` when unavailable.
    pub fn json(&self) -> std::borrow::Cow<'_, Value> {
        self.parsed()
            .unwrap_or(std::borrow::Cow::Owned(Value::Null))
    }

    /// The slice redacted by `redaction` and encoded. `key` identifies the
    /// redaction (0 for none): the first encoding is kept for that key, any
    /// other redaction encodes afresh.
    pub fn encoded(&self, redaction: &Redaction, key: u64) -> Arc<EncodedSlice> {
        if let Some((k, e)) = self.encoded.get() {
            if *k == key {
                return e.clone();
            }
        }
        let encode = || {
            let parsed = self.parsed();
            let _ = self.error.set(parsed.as_ref().err().cloned());
            let json = parsed.unwrap_or(std::borrow::Cow::Owned(Value::Null));
            let mut canonical = Vec::with_capacity(1024);
            if redaction.is_empty() {
                let _ = write_canonical(&json, &mut canonical);
            } else {
                let mut masked = json.into_owned();
                redaction.entities(&mut masked);
                let _ = write_canonical(&masked, &mut canonical);
            }
            Arc::new(EncodedSlice {
                hash: hex::encode(Sha256::digest(&canonical)),
                canonical,
            })
        };
        if self.encoded.get().is_some() {
            return encode();
        }
        self.encoded.get_or_init(|| (key, encode())).1.clone()
    }
}

impl PartialEq for EntitySlice {
    fn eq(&self, other: &Self) -> bool {
        self.json() == other.json() && self.error() == other.error()
    }
}

/// About how many bytes a JSON value holds in memory: the text of its
/// strings and keys plus a fixed overhead per node and per member.
pub fn value_bytes(v: &Value) -> u64 {
    const NODE: u64 = std::mem::size_of::<Value>() as u64;
    const MEMBER: u64 = 48;
    NODE + match v {
        Value::Null | Value::Bool(_) | Value::Number(_) => 0,
        Value::String(t) => t.len() as u64,
        Value::Array(a) => a.iter().map(value_bytes).sum(),
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| MEMBER + k.len() as u64 + value_bytes(v))
            .sum(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A slice given as texts encodes, hashes and reads back as the same
    /// slice given as one value; a text that is not JSON makes it
    /// unavailable (`null` and a reason), never a half slice.
    #[test]
    fn a_slice_of_texts_is_the_slice_of_their_values() {
        let texts: Vec<Arc<str>> = vec![
            Arc::from(
                r#"{"uid":{"type":"User","id":"a"},"attrs":{"email":"a@x","n":1},"parents":[]}"#,
            ),
            Arc::from(r#"{"uid":{"type":"Account","id":"x"},"attrs":{},"parents":[]}"#),
        ];
        let values: Vec<Value> = texts
            .iter()
            .map(|t| serde_json::from_str(t).unwrap())
            .collect();
        let as_value = EntitySlice::new(Value::Array(values));
        let as_texts = EntitySlice::from_texts(texts.clone().into_boxed_slice());
        let redaction = Redaction {
            context_keys: vec![],
            entity_attrs: vec!["email".into()],
        };
        for (r, key) in [(Redaction::default(), 0), (redaction, 1)] {
            assert_eq!(as_value.encoded(&r, key), as_texts.encoded(&r, key));
        }
        assert_eq!(as_value.json(), as_texts.json());
        assert_eq!(as_texts.error(), None);
        assert!(*as_value == *as_texts);

        let mut bad = texts;
        bad.push(Arc::from("{\"uid\": "));
        let broken = EntitySlice::from_texts(bad.into_boxed_slice());
        let encoded = broken.encoded(&Redaction::default(), 0);
        assert_eq!(encoded.canonical, b"null");
        assert!(
            broken.error().is_some_and(|e| e.contains("not JSON")),
            "{:?}",
            broken.error()
        );
        assert_eq!(*broken.json(), Value::Null);
    }
}
