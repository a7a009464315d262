//! Redaction: masking configured context keys and entity attribute names
//! (e.g. `email`) before a record is encoded, so the values never reach the
//! file. Matching is by key name, ASCII case-insensitive, at any depth.

use serde_json::Value;

/// The mask written in place of a redacted value.
pub const MASK: &str = "***";

/// Which keys to mask.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Redaction {
    /// Keys masked anywhere inside a decision's `context`.
    pub context_keys: Vec<String>,
    /// Attribute names masked anywhere inside an entity's `attrs` (in
    /// `entities`), and inside a change's `before`/`after`.
    pub entity_attrs: Vec<String>,
}

impl Redaction {
    /// True when no key is configured: masking changes nothing.
    pub fn is_empty(&self) -> bool {
        self.context_keys.is_empty() && self.entity_attrs.is_empty()
    }

    /// Mask the keys of `context` (a decision's or a search's context).
    pub fn context(&self, context: &mut Value) {
        mask_keys(context, &self.context_keys);
    }

    /// Mask a change's `before` or `after` (entity attributes and context
    /// keys alike).
    pub fn change_state(&self, state: &mut Value) {
        mask_keys(state, &self.entity_attrs);
        mask_keys(state, &self.context_keys);
    }

    /// Mask attribute names inside the `attrs` of every entity of a Cedar
    /// entity JSON array (or a single entity object).
    pub fn entities(&self, entities: &mut Value) {
        match entities {
            Value::Array(items) => {
                for e in items {
                    self.entities(e);
                }
            }
            Value::Object(e) => {
                if let Some(attrs) = e.get_mut("attrs") {
                    mask_keys(attrs, &self.entity_attrs);
                }
            }
            _ => {}
        }
    }
}

/// Replace the value of every member named in `keys`, at any depth.
pub fn mask_keys(v: &mut Value, keys: &[String]) {
    if keys.is_empty() {
        return;
    }
    match v {
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                if keys.iter().any(|r| r.eq_ignore_ascii_case(k)) {
                    *x = Value::String(MASK.into());
                } else {
                    mask_keys(x, keys);
                }
            }
        }
        Value::Array(a) => {
            for x in a {
                mask_keys(x, keys);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn masks_at_any_depth_and_only_named_keys() {
        let mut v = json!({"email": "a@x", "invitee": {"Email": "b@x", "list": [{"email": "c@x", "n": 1}]}, "other": "keep"});
        mask_keys(&mut v, &["email".to_string()]);
        assert_eq!(
            v,
            json!({"email": "***", "invitee": {"Email": "***", "list": [{"email": "***", "n": 1}]}, "other": "keep"})
        );
    }

    #[test]
    fn entity_attrs_only_inside_attrs() {
        let r = Redaction {
            context_keys: vec![],
            entity_attrs: vec!["email".into()],
        };
        let mut v = json!([{"uid": {"type": "User", "id": "email"}, "attrs": {"email": "a@x", "partner": {"email": "p@x"}}, "parents": []}]);
        r.entities(&mut v);
        assert_eq!(v[0]["attrs"]["email"], json!("***"));
        assert_eq!(v[0]["attrs"]["partner"]["email"], json!("***"));
        assert_eq!(v[0]["uid"]["id"], json!("email"));
    }
}
