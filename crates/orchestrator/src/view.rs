//! What the orchestrator answers: a user of the employees list
//! ([`ListedUser`]), an account's seat counts ([`Seats`]), a write's
//! [`Outcome`] (a request write's [`RequestOutcome`]); and the reading of a stored `User` entity into a
//! [`UserView`] (here, so the views in `user` never name the errors).
//! Plain data: it never knows the store, the policies or the transport.

use serde::Serialize;
use serde_json::Value;

use crate::error::OrchestratorError;
use crate::status::ListStatus;
use crate::user::{PartnerView, UserView};
use partnergate_core::store::EntityRecord;

/// One line of the employees list.
#[derive(Debug, Clone, Serialize)]
pub struct ListedUser {
    /// The user (its fields inline in the JSON line).
    #[serde(flatten)]
    pub user: UserView,
    /// "administrator", "employee", "partner", "suspended", "dismissed" or "invited".
    pub list_status: ListStatus,
    /// "Partner" for a partner user (whatever the status).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mark: Option<&'static str>,
}

/// Seat counts of an account. Partners count as neither paid users nor administrators.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Seats {
    /// The account's id (without the type).
    pub account: String,
    /// Users who are not partners and not dismissed (invitations included).
    pub paid_users: usize,
    /// Of those, the administrators.
    pub administrators: usize,
    /// Partner users holding a seat (invited or active).
    pub partners: usize,
    /// Of those, the suspended ones (a suspended partner keeps its seat);
    /// left out of the JSON when none is, so the answer's shape is the one
    /// clients knew before suspensions.
    #[serde(skip_serializing_if = "is_zero")]
    pub suspended_partners: usize,
    /// Access requests waiting for an administrator's answer (left out
    /// when none is).
    #[serde(skip_serializing_if = "is_zero")]
    pub pending_requests: usize,
    /// The serving `max_active_partners`: most partner seats per account.
    pub partner_limit: u32,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// The result of a write: the user it made or changed, and the partner it
/// dismissed to free a seat, if any.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// The user as written (after the change).
    pub user: UserView,
    /// The partner dismissed by `replace` in the same transaction, as written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dismissed: Option<UserView>,
}

/// The result of a request write: the request as written, and for an
/// approval the partner it made (and the partner it dismissed, if any).
#[derive(Debug, Clone, Serialize)]
pub struct RequestOutcome {
    /// The request after the change.
    pub request: crate::request::RequestView,
    /// The partner an approval made, as written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<UserView>,
    /// The partner dismissed by `replace` in the same transaction.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dismissed: Option<UserView>,
}

/// A new request code: shown only in the answer that made it (only its
/// hash is stored).
#[derive(Debug, Clone, Serialize)]
pub struct CodeOutcome {
    /// The account it opens a request to.
    pub account: String,
    /// The code to hand to the partner (`XXXX-XXXX-XXXX`).
    pub code: String,
    /// When it stops working (RFC 3339).
    pub expires_at: String,
}

// Reading a stored user is the orchestrator's, so the views in `user.rs`
// need not know its errors.
impl UserView {
    /// Read a stored `User` entity JSON.
    pub fn from_json(json: &Value) -> Result<Self, OrchestratorError> {
        let bad = |what: &str| OrchestratorError::Corrupt(format!("{what} in {json}"));
        let id = json
            .pointer("/uid/id")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("no uid"))?;
        let attrs = json.get("attrs").ok_or_else(|| bad("no attrs"))?;
        let s = |k: &str| attrs.get(k).and_then(Value::as_str).map(str::to_string);
        let b = |k: &str| attrs.get(k).and_then(Value::as_bool).unwrap_or(false);
        let partner = attrs.get("partner").map(|p| PartnerView {
            company: p
                .pointer("/company/__entity/id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            verified: p.get("verified").and_then(Value::as_bool).unwrap_or(false),
            expires_at: p
                .get("expires_at")
                .and_then(|e| e.pointer("/__extn/arg").or_else(|| e.get("arg")))
                .and_then(Value::as_str)
                .map(str::to_string),
            scopes: p.get("scopes").and_then(Value::as_array).map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            }),
            suspended: p.get("suspended").and_then(Value::as_bool).unwrap_or(false),
        });
        Ok(UserView {
            id: id.to_string(),
            email: s("email").ok_or_else(|| bad("no email"))?,
            account: attrs
                .pointer("/account/__entity/id")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("no account"))?
                .to_string(),
            status: s("status").ok_or_else(|| bad("no status"))?.into(),
            is_admin: b("is_admin"),
            two_factor: b("two_factor"),
            partner,
        })
    }

    pub(crate) fn from_record(r: &EntityRecord) -> Result<Self, OrchestratorError> {
        let json: Value =
            serde_json::from_str(&r.json).map_err(|e| OrchestratorError::Corrupt(e.to_string()))?;
        Self::from_json(&json)
    }
}
