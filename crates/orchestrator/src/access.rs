//! Time-bound, scoped partner access: what an invitation, a grant, a
//! partner's rehire or a renewal asks for — an end (`expires_at`, RFC 3339,
//! or a `duration` such as `90d`) and the scopes — checked against the
//! serving `quotas.toml` (`max_access_days`, `require_access_end`,
//! `default_partner_scopes`) and the scopes the schema declares (its
//! `"scope:NAME"` action groups; which actions belong to each is the
//! schema's and the policies' business, never this module's).
//!
//! Owns [`AccessRequest`], [`Access`] and their validation; it never knows
//! HTTP, the command line or the seat rules.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::{InvalidCode, OrchestratorError};
use crate::rules::Quotas;
pub use crate::scopes::{known_scopes, SCOPE_GROUP_PREFIX};
use partnergate_core::clock;

const DAY_MS: i64 = 86_400_000;

/// The access a caller asks for; every field optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessRequest {
    /// The end, RFC 3339 (`2027-01-01T00:00:00Z`); not with `duration`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// The end as a duration from now: a whole number and a unit, `d`,
    /// `h`, `m` or `s` (`90d`, `36h`); not with `expires_at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    /// The scopes; absent: the default set (`default_partner_scopes`, else
    /// every scope of the schema).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
}

impl AccessRequest {
    /// Whether nothing is asked (no end, no scopes).
    pub fn is_empty(&self) -> bool {
        self.expires_at.is_none() && self.duration.is_none() && self.scopes.is_none()
    }
}

/// The access as granted: the end (ms since the epoch) and the scopes,
/// sorted and without duplicates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// The end; `None`: no end.
    pub expires_at: Option<i64>,
    /// The scopes.
    pub scopes: Vec<String>,
}

impl Access {
    /// The policy context's `access` record (`AccessGrant` of the schema).
    pub fn context(&self) -> Value {
        let mut v = json!({"scopes": self.scopes});
        if let (Some(end), Some(map)) = (
            self.expires_at.and_then(clock::datetime_json),
            v.as_object_mut(),
        ) {
            map.insert("expires_at".into(), end);
        }
        v
    }
}

fn invalid(code: InvalidCode, field: &'static str, message: String) -> OrchestratorError {
    OrchestratorError::Invalid {
        code,
        field,
        message,
    }
}

/// A duration (`90d`, `36h`, `45m`, `30s`) in milliseconds.
pub fn parse_duration(raw: &str) -> Result<i64, String> {
    let s = raw.trim();
    let unit_at = s.len().saturating_sub(1);
    let (n, unit) = s.split_at(unit_at);
    let per = match unit {
        "d" => DAY_MS,
        "h" => 3_600_000,
        "m" => 60_000,
        "s" => 1_000,
        _ => {
            return Err(format!(
                "`{raw}`: give a whole number and a unit d, h, m or s (e.g. `90d`)"
            ))
        }
    };
    let n: i64 = n.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
        format!("`{raw}`: give a positive whole number before the unit (e.g. `90d`)")
    })?;
    n.checked_mul(per)
        .ok_or_else(|| format!("`{raw}`: too long"))
}

/// The end asked for, checked at `now` against the quotas: in the future,
/// at most `max_access_days` from now; required when `require` (the
/// quotas' `require_access_end`, or a renewal).
pub fn resolve_end(
    req: &AccessRequest,
    now: i64,
    quotas: &Quotas,
    require: bool,
) -> Result<Option<i64>, OrchestratorError> {
    let end = match (&req.expires_at, &req.duration) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                InvalidCode::Access,
                "duration",
                "give either `expires_at` or `duration`, not both".into(),
            ))
        }
        (Some(at), None) => Some(
            clock::parse_rfc3339_ms(at)
                .map_err(|m| invalid(InvalidCode::Access, "expires_at", m))?,
        ),
        (None, Some(d)) => {
            let ms = parse_duration(d).map_err(|m| invalid(InvalidCode::Access, "duration", m))?;
            Some(now.saturating_add(ms))
        }
        (None, None) => None,
    };
    let field = if req.duration.is_some() {
        "duration"
    } else {
        "expires_at"
    };
    let Some(end) = end else {
        if require {
            return Err(invalid(
                InvalidCode::Access,
                "expires_at",
                "an end is required: give `expires_at` (RFC 3339) or `duration` (e.g. `90d`)"
                    .into(),
            ));
        }
        return Ok(None);
    };
    if end <= now {
        return Err(invalid(
            InvalidCode::Access,
            field,
            format!(
                "the end {} is not in the future (now is {})",
                show(end),
                show(now)
            ),
        ));
    }
    let max = i64::from(quotas.max_access_days).saturating_mul(DAY_MS);
    if end - now > max {
        return Err(invalid(
            InvalidCode::AccessTooLong,
            field,
            format!(
                "the end {} is more than the maximum of {} days from now (quotas.toml `max_access_days`); the latest end is {}",
                show(end),
                quotas.max_access_days,
                show(now + max)
            ),
        ));
    }
    if clock::format_ms(end).is_none() {
        return Err(invalid(
            InvalidCode::Access,
            field,
            "the end is out of range".into(),
        ));
    }
    Ok(Some(end))
}

/// The scopes asked for (else the default set), each one the schema
/// declares; an unknown scope is refused naming it and the known ones.
pub fn resolve_scopes(
    req: &AccessRequest,
    quotas: &Quotas,
    schema: Option<&cedar_policy::Schema>,
) -> Result<Vec<String>, OrchestratorError> {
    let known = known_scopes(schema);
    let (asked, field) = match (&req.scopes, &quotas.default_partner_scopes) {
        (Some(s), _) => (s.clone(), "scopes"),
        (None, Some(d)) => (d.clone(), "default_partner_scopes"),
        (None, None) => (known.clone(), "scopes"),
    };
    let mut scopes: Vec<String> = asked.iter().map(|s| s.trim().to_lowercase()).collect();
    scopes.sort();
    scopes.dedup();
    if scopes.is_empty() {
        return Err(invalid(
            InvalidCode::Access,
            "scopes",
            format!("give at least one scope (known: {})", known.join(", ")),
        ));
    }
    if let Some(unknown) = scopes.iter().find(|s| !known.contains(s)) {
        return Err(invalid(
            InvalidCode::UnknownScope,
            field,
            format!(
                "unknown scope `{unknown}`: the schema declares {}",
                if known.is_empty() {
                    "no scopes".to_string()
                } else {
                    known.join(", ")
                }
            ),
        ));
    }
    Ok(scopes)
}

/// The whole access asked for, at `now`.
pub fn resolve(
    req: &AccessRequest,
    now: i64,
    quotas: &Quotas,
    schema: Option<&cedar_policy::Schema>,
) -> Result<Access, OrchestratorError> {
    Ok(Access {
        expires_at: resolve_end(req, now, quotas, quotas.require_access_end)?,
        scopes: resolve_scopes(req, quotas, schema)?,
    })
}

/// `ms` for a message (RFC 3339 UTC).
pub fn show(ms: i64) -> String {
    clock::format_ms(ms).unwrap_or_else(|| format!("{ms} ms"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_in_whole_units_and_bad_ones_say_how() {
        assert_eq!(parse_duration("90d"), Ok(90 * DAY_MS));
        assert_eq!(parse_duration("36h"), Ok(36 * 3_600_000));
        assert_eq!(parse_duration(" 5m "), Ok(300_000));
        for bad in ["", "d", "0d", "-3d", "3w", "1.5d", "99999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_end_past_the_maximum_is_refused_naming_the_limit() {
        let q = Quotas::default();
        let now = 1_798_761_600_000;
        let at = |days: i64| AccessRequest {
            expires_at: Some(show(now + days * DAY_MS)),
            ..Default::default()
        };
        assert_eq!(
            resolve_end(&at(730), now, &q, false).unwrap(),
            Some(now + 730 * DAY_MS)
        );
        let e = resolve_end(&at(731), now, &q, false).unwrap_err();
        assert_eq!(e.code(), "access_too_long");
        assert!(e.to_string().contains("730 days"), "{e}");
        let past = resolve_end(&at(-1), now, &q, false).unwrap_err();
        assert!(past.to_string().contains("not in the future"), "{past}");
        let required = resolve_end(&AccessRequest::default(), now, &q, true).unwrap_err();
        assert!(
            required.to_string().contains("an end is required"),
            "{required}"
        );
        assert_eq!(
            resolve_end(&AccessRequest::default(), now, &q, false).unwrap(),
            None
        );
    }
}
