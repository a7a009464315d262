//! Canonical encoding and hashing: what a record's `hash` is computed over
//! (the record object *without* its `hash` member, objects with their keys
//! sorted by byte order at every depth, no whitespace, strings and numbers
//! as serde_json writes them; `hash` = lowercase hex SHA-256 of those
//! bytes), and the genesis hash a log's chain starts from. Because it is
//! computed from the parsed JSON value, any re-serialisation of the same
//! value (key order, spacing) verifies the same.
//!
//! Knows nothing of events, of the order the writer writes members in, or
//! of files.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// `prev_hash` of the very first record of a log: 64 zeros.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

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

pub(super) fn write_canonical<W: std::io::Write>(v: &Value, out: &mut W) -> std::io::Result<()> {
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
    let mut members: Vec<(&String, &Value)> =
        m.iter().filter(|(k, _)| Some(k.as_str()) != skip).collect();
    members.sort_unstable_by(|a, b| a.0.cmp(b.0));
    out.write_all(b"{")?;
    for (i, (k, v)) in members.into_iter().enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        serde_json::to_writer(&mut *out, k).map_err(std::io::Error::other)?;
        out.write_all(b":")?;
        write_canonical(v, out)?;
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
}
