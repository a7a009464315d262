//! The size limits of a question's identifiers and strings, checked before
//! anything is decided or logged: every decision is a record in the
//! decision log, so an unbounded identifier would let any caller make the
//! log (and the answer, which echoes it) as large as the request body.
//!
//! Owns the limits and the check of a [`Query`]; knows nothing of the wire
//! format that carried it (a too long value is a [`RequestError`] naming the
//! field, which every adapter turns into a 400 or a deny).

use cedar_policy::EntityUid;
use partnergate_policy::engine::RequestError;
use serde_json::Value;

use crate::authz::query::Query;

/// Longest entity id (the `id` of `Type::"id"`), in bytes.
pub const MAX_ID_BYTES: usize = 1024;

/// Longest entity type name (with its namespace), in bytes.
pub const MAX_TYPE_BYTES: usize = 256;

/// Longest string (a value or an attribute name) in a question's context,
/// request entities and AuthZEN properties, in bytes.
pub const MAX_STRING_BYTES: usize = 8 * 1024;

/// Longest caller request id (`X-Request-ID`), in bytes.
pub const MAX_REQUEST_ID_BYTES: usize = 256;

/// Longest proxied path a gateway decision records, in bytes (the HTTP
/// listener already refuses longer request targets).
pub const MAX_PATH_BYTES: usize = 8 * 1024;

/// Check every identifier and string of `q` against the limits.
pub fn check(q: &Query) -> Result<(), RequestError> {
    uid("principal", &q.principal)?;
    uid("action", &q.action)?;
    uid("resource", &q.resource)?;
    if let Some(c) = &q.context {
        strings("context", c)?;
    }
    if let Some(e) = &q.entities {
        strings("entities", e)?;
    }
    for (field, attrs) in [
        ("subject.properties", &q.principal_attrs),
        ("resource.properties", &q.resource_attrs),
    ] {
        if let Some(map) = attrs {
            // A map is a JSON object: its keys and values are checked alike
            // (copied into one only to name the string over the limit).
            if map.keys().any(|k| k.len() > MAX_STRING_BYTES) || any_too_long(map.values()) {
                return Err(first_too_long(field, &Value::Object(map.clone())));
            }
        }
    }
    if let Some(id) = &q.request_id {
        bounded("request_id (X-Request-ID)", id.len(), MAX_REQUEST_ID_BYTES)?;
    }
    if let Some(g) = &q.gateway {
        bounded("path", g.path.len(), MAX_PATH_BYTES)?;
    }
    Ok(())
}

fn uid(field: &str, uid: &EntityUid) -> Result<(), RequestError> {
    // The type name's length without building its text (this runs on every
    // decision, cache hits included).
    struct Len(usize);
    impl std::fmt::Write for Len {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            self.0 += s.len();
            Ok(())
        }
    }
    let mut type_len = Len(0);
    // Writing into a counter cannot fail.
    let _ = std::fmt::write(&mut type_len, format_args!("{}", uid.type_name()));
    if type_len.0 > MAX_TYPE_BYTES {
        bounded(&format!("{field}.type"), type_len.0, MAX_TYPE_BYTES)?;
    }
    let id_len = uid.id().unescaped().len();
    if id_len > MAX_ID_BYTES {
        bounded(&format!("{field}.id"), id_len, MAX_ID_BYTES)?;
    }
    Ok(())
}

fn bounded(field: &str, len: usize, max: usize) -> Result<(), RequestError> {
    if len > max {
        return Err(RequestError::field(field, over(len, max)));
    }
    Ok(())
}

/// Every string of `value` (object keys included), reported under `field`
/// with the path to it. Iterative (a deep value costs no stack); the path
/// is spelled out only for a string over the limit.
fn strings(field: &str, value: &Value) -> Result<(), RequestError> {
    if any_too_long([value]) {
        return Err(first_too_long(field, value));
    }
    Ok(())
}

/// Whether any string (object keys included) in `values` is over the limit.
/// Iterative: a deep value costs no stack.
fn any_too_long<'a>(values: impl IntoIterator<Item = &'a Value>) -> bool {
    let mut todo: Vec<&Value> = values.into_iter().collect();
    while let Some(v) = todo.pop() {
        let too_long = match v {
            Value::String(s) => s.len() > MAX_STRING_BYTES,
            Value::Array(items) => {
                todo.extend(items);
                false
            }
            Value::Object(map) => {
                todo.extend(map.values());
                map.keys().any(|k| k.len() > MAX_STRING_BYTES)
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => false,
        };
        if too_long {
            return true;
        }
    }
    false
}

/// The error naming the first string of `value` over the limit (by path).
fn first_too_long(field: &str, value: &Value) -> RequestError {
    let mut todo: Vec<(String, &Value)> = vec![(field.to_string(), value)];
    while let Some((at, v)) = todo.pop() {
        match v {
            Value::String(s) if s.len() > MAX_STRING_BYTES => {
                return RequestError::field(&at, over(s.len(), MAX_STRING_BYTES));
            }
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate().rev() {
                    todo.push((format!("{at}[{i}]"), item));
                }
            }
            Value::Object(map) => {
                for (k, item) in map {
                    let here = format!("{at}.{k:.64}");
                    if k.len() > MAX_STRING_BYTES {
                        return RequestError::field(
                            &format!("{here}…"),
                            format!("an attribute name of {}", over(k.len(), MAX_STRING_BYTES)),
                        );
                    }
                    todo.push((here, item));
                }
            }
            _ => {}
        }
    }
    RequestError::field(field, "a string is over the limit")
}

fn over(len: usize, max: usize) -> String {
    format!("{len} bytes; the limit is {max} bytes (docs/limits.md)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn query(id: &str) -> Query {
        let u = |t: &str, i: &str| EntityUid::from_json(json!({"type": t, "id": i})).unwrap();
        Query::new(u("User", id), u("Action", "view"), u("Account", "acme"))
    }

    #[test]
    fn identifiers_and_strings_at_the_limit_pass_and_one_byte_more_is_refused() {
        assert!(check(&query(&"a".repeat(MAX_ID_BYTES))).is_ok());
        let err = check(&query(&"a".repeat(MAX_ID_BYTES + 1))).unwrap_err();
        assert!(err.to_string().contains("principal.id"), "{err}");

        let at_limit = json!({"note": "x".repeat(MAX_STRING_BYTES)});
        assert!(check(&query("pat").with_context(Some(at_limit))).is_ok());
        let deep = json!({"a": [{"b": "x".repeat(MAX_STRING_BYTES + 1)}]});
        let err = check(&query("pat").with_context(Some(deep))).unwrap_err();
        assert!(err.to_string().contains("context.a[0].b"), "{err}");

        let long_key = json!([{"attrs": {"k".repeat(MAX_STRING_BYTES + 1): 1}}]);
        let err = check(&query("pat").with_entities(Some(long_key))).unwrap_err();
        assert!(err.to_string().contains("entities[0].attrs."), "{err}");
    }
}
