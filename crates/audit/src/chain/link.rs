//! The chain fields of one line ([`Link`]: seq, prev_hash, the hash it
//! states and whether that hash matches its content), parsed by
//! [`parse_link`].
//!
//! Knows nothing of files or of how a chain is verified.

use serde_json::{Map, Value};

use crate::error::{AuditError, Location};
use crate::record::compute_hash;

/// The chain fields of one parsed line.
#[derive(Debug, Clone)]
pub struct Link {
    /// The record's sequence number, 1 more than its predecessor's.
    pub seq: u64,
    /// The predecessor's `hash` (hex SHA-256; [`GENESIS_HASH`](crate::record::GENESIS_HASH) for the
    /// first record).
    pub prev_hash: String,
    /// The hash the record states for itself (hex SHA-256 of its canonical
    /// encoding without `hash`).
    pub hash: String,
    /// Whether `hash` matches the content.
    pub hash_ok: bool,
    /// Where the record is.
    pub location: Location,
}

/// Parse a line into its object and chain fields.
pub fn parse_link(
    text: &str,
    location: &Location,
) -> Result<(Map<String, Value>, Link), AuditError> {
    let malformed = |message: String| AuditError::Malformed {
        location: location.clone(),
        message,
    };
    let v: Value =
        serde_json::from_str(text).map_err(|e| malformed(format!("not a JSON record: {e}")))?;
    let Value::Object(obj) = v else {
        return Err(malformed("not a JSON object".into()));
    };
    let seq = obj
        .get("seq")
        .and_then(Value::as_u64)
        .ok_or_else(|| malformed("field `seq`: missing or not an unsigned integer".into()))?;
    let field = |name: &str| {
        obj.get(name)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| malformed(format!("field `{name}`: missing or not a string")))
    };
    let prev_hash = field("prev_hash")?;
    let hash = field("hash")?;
    let hash_ok = compute_hash(&obj) == hash;
    let link = Link {
        seq,
        prev_hash,
        hash,
        hash_ok,
        location: location.clone(),
    };
    Ok((obj, link))
}
