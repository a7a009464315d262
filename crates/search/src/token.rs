//! Page tokens: opaque to the client, bound to the request they continue,
//! and signed so that a client cannot forge or edit one.
//!
//! A token carries a short hash of each request field (kind, principal,
//! action, resource, context) and the page limit, the cursor (the last id
//! returned) and how many results earlier pages returned, all under an
//! HMAC-SHA256 with a key kept in the data directory ([`KEY_FILE`], mode
//! 0600, created if missing). A token presented with a request that differs
//! in any bound field is refused naming that field; an edited token, or one
//! signed with another key (another server), is refused as a whole. This
//! module knows nothing about candidates, decisions or the wire.

use std::path::{Path, PathBuf};

use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The key file's name in the data directory.
pub const KEY_FILE: &str = "search.key";

/// Longest token accepted (a cursor is one entity id; ids are short).
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Why the key file could not be read or created.
#[derive(Debug, thiserror::Error)]
#[error("search key {}: {message}", .path.display())]
pub struct KeyError {
    /// The key file.
    pub path: PathBuf,
    /// What went wrong with it.
    pub message: String,
}

/// Why a presented token is refused (a 400 naming `field`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}`: {message}")]
pub struct TokenError {
    /// The request field at fault: `token` itself (edited, foreign,
    /// malformed), or the bound field that differs from the token's request
    /// (`principal`, `action`, `resource`, `context`, `limit`, `kind`).
    pub field: &'static str,
    /// Why, for a human.
    pub message: String,
}

/// The HMAC key of page tokens.
pub struct TokenKey([u8; 32]);

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

impl TokenKey {
    /// A fresh random key (tokens die with the process).
    pub fn random() -> Self {
        TokenKey(rand::random())
    }

    /// Read the key from `dir/search.key`, or create it (32 random bytes,
    /// hex, mode 0600) if the file does not exist.
    pub fn load_or_create(dir: &Path) -> Result<Self, KeyError> {
        let path = dir.join(KEY_FILE);
        let err = |message: String| KeyError {
            path: path.clone(),
            message,
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let bytes = hex::decode(text.trim()).map_err(|e| {
                    err(format!("not a hex key ({e}); delete it to make a new one"))
                })?;
                let key: [u8; 32] = bytes.try_into().map_err(|_| {
                    err("expected 32 bytes (64 hex digits); delete it to make a new one".into())
                })?;
                Ok(TokenKey(key))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = TokenKey::random();
                partnergate_core::secret::create_private(&path, &hex::encode(key.0))
                    .map_err(|e| err(e.to_string()))?;
                Ok(key)
            }
            Err(e) => Err(err(e.to_string())),
        }
    }

    fn mac(&self, payload: &[u8]) -> Hmac<Sha256> {
        // HMAC accepts a key of any length: this cannot fail.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(payload);
        mac
    }
}

/// What a token is bound to: the search's kind, a hash of each request
/// field, and the page limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    /// `subject`, `resource` or `action`.
    #[serde(rename = "k")]
    pub kind: String,
    #[serde(rename = "p")]
    principal: String,
    #[serde(rename = "a")]
    action: String,
    #[serde(rename = "r")]
    resource: String,
    #[serde(rename = "c")]
    context: String,
    /// The page limit.
    #[serde(rename = "l")]
    pub limit: usize,
}

impl Binding {
    /// Bind a request: `principal`, `action` and `resource` as the search
    /// sees them (a uid, or the searched type), `context` as given.
    pub fn new(
        kind: &str,
        principal: &str,
        action: &str,
        resource: &str,
        context: Option<&Value>,
        limit: usize,
    ) -> Self {
        let context = match context {
            None | Some(Value::Null) => Value::Object(serde_json::Map::new()),
            Some(v) => v.clone(),
        };
        Binding {
            kind: kind.to_string(),
            principal: short_hash(principal.as_bytes()),
            action: short_hash(action.as_bytes()),
            resource: short_hash(resource.as_bytes()),
            context: short_hash(canonical(&context).as_bytes()),
            limit,
        }
    }

    /// The first bound field in which `other` differs, with its name.
    fn differs(&self, other: &Binding) -> Option<&'static str> {
        if self.kind != other.kind {
            Some("kind")
        } else if self.principal != other.principal {
            Some("principal")
        } else if self.action != other.action {
            Some("action")
        } else if self.resource != other.resource {
            Some("resource")
        } else if self.context != other.context {
            Some("context")
        } else if self.limit != other.limit {
            Some("limit")
        } else {
            None
        }
    }
}

/// Where the next page starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// The sort key (entity id, action name) of the last result returned.
    pub after: String,
    /// How many results the earlier pages returned.
    pub returned: usize,
}

#[derive(Serialize, Deserialize)]
struct Payload {
    v: u8,
    #[serde(flatten)]
    binding: Binding,
    after: String,
    n: usize,
}

/// The token continuing `binding` after `cursor`.
pub fn issue(key: &TokenKey, binding: &Binding, cursor: &Cursor) -> String {
    let payload = Payload {
        v: 1,
        binding: binding.clone(),
        after: cursor.after.clone(),
        n: cursor.returned,
    };
    let bytes = serde_json::to_vec(&payload).unwrap_or_default();
    let tag = key.mac(&bytes).finalize().into_bytes();
    format!("{}.{}", hex::encode(&bytes), hex::encode(tag))
}

/// The cursor of `token`, if this server signed it for `binding`.
pub fn open(key: &TokenKey, token: &str, binding: &Binding) -> Result<Cursor, TokenError> {
    let bad = |message: &str| TokenError {
        field: "token",
        message: message.to_string(),
    };
    if token.len() > MAX_TOKEN_BYTES {
        return Err(bad("too long to be a page token of this server"));
    }
    let (payload, tag) = token
        .split_once('.')
        .ok_or_else(|| bad("not a page token of this server"))?;
    let (Ok(bytes), Ok(tag)) = (hex::decode(payload), hex::decode(tag)) else {
        return Err(bad("not a page token of this server"));
    };
    key.mac(&bytes).verify_slice(&tag).map_err(|_| {
        bad("the token was not issued by this server or was edited (its signature does not match)")
    })?;
    let payload: Payload = serde_json::from_slice(&bytes)
        .map_err(|_| bad("the token's contents are not readable by this version"))?;
    if payload.v != 1 {
        return Err(bad("the token's format version is not supported"));
    }
    if let Some(field) = payload.binding.differs(binding) {
        return Err(TokenError {
            field,
            message: "differs from the request the page token was issued for; a token continues only the search it came from (repeat the request without a token to start over)".to_string(),
        });
    }
    Ok(Cursor {
        after: payload.after,
        returned: payload.n,
    })
}

/// The first 8 bytes of SHA-256, hex.
fn short_hash(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    hex::encode(&digest[..8])
}

/// JSON with object keys sorted at every level (the request's key order
/// does not change the search).
fn canonical(v: &Value) -> String {
    fn sorted(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                let mut out = serde_json::Map::new();
                for k in keys {
                    out.insert(k.clone(), sorted(&m[k]));
                }
                Value::Object(out)
            }
            Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    sorted(v).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn binding(context: Value, limit: usize) -> Binding {
        Binding::new(
            "resource",
            r#"User::"pat""#,
            r#"Action::"dismiss_user""#,
            "User",
            Some(&context),
            limit,
        )
    }

    #[test]
    fn a_token_opens_only_for_its_request_and_key() {
        let key = TokenKey::random();
        let b = binding(json!({"x": 1, "y": [1, 2]}), 10);
        let cursor = Cursor {
            after: "emma".into(),
            returned: 10,
        };
        let t = issue(&key, &b, &cursor);
        assert_eq!(open(&key, &t, &b), Ok(cursor));
        // The same context with its keys in another order is the same request.
        let reordered = binding(json!({"y": [1, 2], "x": 1}), 10);
        assert!(open(&key, &t, &reordered).is_ok());
        let field = |b: &Binding| open(&key, &t, b).unwrap_err().field;
        assert_eq!(field(&binding(json!({"x": 2, "y": [1, 2]}), 10)), "context");
        assert_eq!(field(&binding(json!({"x": 1, "y": [1, 2]}), 11)), "limit");
        let other = Binding::new(
            "resource",
            r#"User::"ann""#,
            r#"Action::"dismiss_user""#,
            "User",
            None,
            10,
        );
        assert_eq!(field(&other), "principal");
        let other = Binding::new(
            "subject",
            r#"User::"pat""#,
            r#"Action::"dismiss_user""#,
            "User",
            None,
            10,
        );
        assert_eq!(field(&other), "kind");
        // Another server's key, an edited payload, garbage.
        assert_eq!(
            open(&TokenKey::random(), &t, &b).unwrap_err().field,
            "token"
        );
        let (payload, tag) = t.split_once('.').unwrap();
        let mut bytes = hex::decode(payload).unwrap();
        let text = String::from_utf8(bytes.clone())
            .unwrap()
            .replace("emma", "zzzz");
        bytes = text.into_bytes();
        let edited = format!("{}.{tag}", hex::encode(bytes));
        assert_eq!(open(&key, &edited, &b).unwrap_err().field, "token");
        assert_eq!(open(&key, "nonsense", &b).unwrap_err().field, "token");
        assert_eq!(open(&key, "zz.zz", &b).unwrap_err().field, "token");
    }

    #[test]
    fn the_key_is_created_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let a = TokenKey::load_or_create(dir.path()).unwrap();
        let b = TokenKey::load_or_create(dir.path()).unwrap();
        assert_eq!(a.0, b.0);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(dir.path().join(KEY_FILE), "not hex").unwrap();
        let e = TokenKey::load_or_create(dir.path()).unwrap_err();
        assert!(e.to_string().contains("search.key"), "{e}");
    }
}
