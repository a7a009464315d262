//! The checks of an operation's input before anything is asked or written:
//! a well-formed email ([`normalize_email`]), a uid of the expected type
//! ([`parse_uid`]), and the ids the orchestrator makes for new users. Pure
//! functions: it never knows the store, the policies or the transport.

use cedar_policy::EntityUid;
use serde_json::json;

use crate::error::OrchestratorError;
use partnergate_policy::engine::{self, RequestError};

/// Lower-case, trimmed email if it is well formed.
pub fn normalize_email(raw: &str) -> Result<String, OrchestratorError> {
    let email = raw.trim().to_lowercase();
    let bad = || OrchestratorError::InvalidEmail {
        email: raw.to_string(),
    };
    let (local, domain) = email.split_once('@').ok_or_else(bad)?;
    let ok = !local.is_empty()
        && local.len() <= 64
        && email.len() <= 254
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..")
        && email
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "@.!#$%&'*+/=?^_`{|}~-".contains(c));
    if ok {
        Ok(email)
    } else {
        Err(bad())
    }
}

/// A uid from `id` or `Type::"id"` syntax.
pub fn parse_uid(field: &str, ty: &str, raw: &str) -> Result<EntityUid, RequestError> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Err(RequestError::field(field, "must not be empty"));
    }
    let uid = if raw.contains("::") {
        engine::parse_uid(field, raw)?
    } else {
        engine::uid_from_json(field, &json!({"type": ty, "id": raw}))?
    };
    if uid.type_name().to_string() != ty {
        return Err(RequestError::field(
            field,
            format!("expected a {ty}, got {uid}"),
        ));
    }
    Ok(uid)
}

pub(crate) fn id_of(uid: &EntityUid) -> String {
    uid.id().unescaped().to_string()
}

/// A readable, unique user id: a slug of the name (or the email's local part) and a random suffix.
pub(crate) fn new_user_id(email: &str, name: Option<&str>) -> String {
    let base = name
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| email.split('@').next().unwrap_or("user"));
    let mut slug = String::new();
    for c in base.chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.ends_with('-') && !slug.is_empty() {
            slug.push('-');
        }
        if slug.len() >= 24 {
            break;
        }
    }
    let slug = slug.trim_end_matches('-');
    let suffix: u32 = rand::random();
    format!(
        "{}-{:06x}",
        if slug.is_empty() { "user" } else { slug },
        suffix & 0xff_ffff
    )
}
