//! A partner's access request as the orchestrator reports it:
//! [`RequestView`], its `PartnerRequest` entity JSON (written only by the
//! orchestrator) and its reading back. It never knows the store, the
//! policies, the request codes or the seat rules.

use serde::Serialize;
use serde_json::{json, Value};

use crate::error::OrchestratorError;
use partnergate_core::clock;

/// A request's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestStatus {
    /// Waiting for an administrator's answer.
    Pending,
    /// Approved: the partner was given access.
    Approved,
    /// Declined by an administrator.
    Declined,
    /// Not answered in time (the sweep marked it).
    Expired,
}

impl RequestStatus {
    /// The stored (and wire) name.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestStatus::Pending => "pending",
            RequestStatus::Approved => "approved",
            RequestStatus::Declined => "declined",
            RequestStatus::Expired => "expired",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => RequestStatus::Pending,
            "approved" => RequestStatus::Approved,
            "declined" => RequestStatus::Declined,
            "expired" => RequestStatus::Expired,
            _ => return None,
        })
    }
}

/// A partner's access request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RequestView {
    /// The `PartnerRequest` entity's id.
    pub id: String,
    /// The account asked for.
    pub account: String,
    /// The person asking (lower case), in the registry under `company`.
    pub email: String,
    /// The registry company of `email` when it asked.
    pub company: String,
    /// Where the request is.
    pub status: RequestStatus,
    /// The scopes asked for (sorted, without duplicates).
    pub scopes: Vec<String>,
    /// The length of the access asked for, in milliseconds from the
    /// approval; none: no end asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<i64>,
    /// When it was made (RFC 3339).
    pub requested_at: String,
    /// When it expires unanswered (RFC 3339).
    pub expires_at: String,
}

impl RequestView {
    /// When it expires unanswered, in ms (an unreadable one: the epoch, so
    /// it reads as expired, never as a longer life).
    pub fn expires_ms(&self) -> i64 {
        clock::parse_cedar_ms(&self.expires_at).unwrap_or(0)
    }

    /// Pending and not expired at `now`.
    pub fn open_at(&self, now: i64) -> bool {
        self.status == RequestStatus::Pending && self.expires_ms() > now
    }

    /// The Cedar entity JSON of this request.
    pub fn to_entity_json(&self) -> Value {
        let dt = |s: &str| json!({"__extn": {"fn": "datetime", "arg": s}});
        let mut attrs = json!({
            "account": {"__entity": {"type": "Account", "id": self.account}},
            "email": self.email,
            "company": {"__entity": {"type": "PartnerCompany", "id": self.company}},
            "status": self.status.as_str(),
            "scopes": self.scopes,
            "requested_at": dt(&self.requested_at),
            "expires_at": dt(&self.expires_at),
        });
        if let (Some(ms), Some(map)) = (self.duration_ms, attrs.as_object_mut()) {
            map.insert(
                "duration".into(),
                json!({"__extn": {"fn": "duration", "arg": format!("{ms}ms")}}),
            );
        }
        json!({"uid": {"type": "PartnerRequest", "id": self.id},
               "parents": [{"type": "Account", "id": self.account}],
               "attrs": attrs})
    }

    /// Read a stored `PartnerRequest` entity JSON.
    pub fn from_json(json: &Value) -> Result<Self, OrchestratorError> {
        let bad = |what: &str| OrchestratorError::Corrupt(format!("{what} in {json}"));
        let attrs = json.get("attrs").ok_or_else(|| bad("no attrs"))?;
        let text = |ptr: &str| {
            json.pointer(ptr)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| bad(ptr))
        };
        let extn = |name: &str| {
            attrs
                .get(name)
                .and_then(|e| e.pointer("/__extn/arg").or_else(|| e.get("arg")))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        let duration_ms = match extn("duration") {
            Some(d) => Some(
                d.strip_suffix("ms")
                    .and_then(|n| n.parse::<i64>().ok())
                    .ok_or_else(|| bad("duration"))?,
            ),
            None => None,
        };
        Ok(RequestView {
            id: text("/uid/id")?,
            account: text("/attrs/account/__entity/id")?,
            email: text("/attrs/email")?,
            company: text("/attrs/company/__entity/id")?,
            status: RequestStatus::parse(&text("/attrs/status")?).ok_or_else(|| bad("status"))?,
            scopes: attrs
                .get("scopes")
                .and_then(Value::as_array)
                .ok_or_else(|| bad("scopes"))?
                .iter()
                .map(|s| s.as_str().map(str::to_string).ok_or_else(|| bad("scope")))
                .collect::<Result<_, _>>()?,
            duration_ms,
            requested_at: extn("requested_at").ok_or_else(|| bad("requested_at"))?,
            expires_at: extn("expires_at").ok_or_else(|| bad("expires_at"))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_reads_back_as_written() {
        let r = RequestView {
            id: "req-1".into(),
            account: "acme".into(),
            email: "ann@goldco.example".into(),
            company: "goldco".into(),
            status: RequestStatus::Pending,
            scopes: vec!["settings".into(), "users".into()],
            duration_ms: Some(86_400_000),
            requested_at: "2027-01-01T00:00:00.000Z".into(),
            expires_at: "2027-01-31T00:00:00.000Z".into(),
        };
        assert_eq!(RequestView::from_json(&r.to_entity_json()).unwrap(), r);
        let mut j = r.to_entity_json();
        j["attrs"]["status"] = json!("granted");
        assert!(RequestView::from_json(&j).is_err());
    }
}
