//! Users as the orchestrator reports them: [`UserView`] and its partner
//! membership [`PartnerView`], their Cedar entity JSON and what they say at
//! a given time (seat held, access ended, list status).
//!
//! Owns these views; reading them from stored JSON (and its errors) is the
//! crate root's. It must never know the store, the policies, the seat rules
//! or the orchestrator's errors.

use serde::Serialize;
use serde_json::{json, Value};

use crate::status::{ListStatus, UserStatus};

/// A user as the orchestrator reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserView {
    /// The `User` entity's id (without the type).
    pub id: String,
    /// The email, lower case (as [`normalize_email`](crate::normalize_email) made it when written).
    pub email: String,
    /// The id of the `Account` the user belongs to (also its parent).
    pub account: String,
    /// Where the user is in the invite / accept / dismiss life cycle.
    pub status: UserStatus,
    /// Holds administrator rights in the account.
    pub is_admin: bool,
    /// Two-factor authentication is on (the orchestrator sets it for every partner).
    pub two_factor: bool,
    /// The partner membership; `None` for an ordinary user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partner: Option<PartnerView>,
}

/// A user's partner membership: the `partner` attribute of the entity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartnerView {
    /// The id of the `PartnerCompany` (registry company) the user is from.
    pub company: String,
    /// Checked against the registry when the user became active (`accept`,
    /// or partner access to an active user); false while invited.
    pub verified: bool,
    /// The end of the access (RFC 3339, UTC, milliseconds); none: no end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// What the partner may administer (scope names of the schema); none:
    /// stored before scopes existed, which the policies read as nothing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
    /// An administrator of the account suspended the access: the partner
    /// can do nothing, its seat stays taken and its end keeps running.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub suspended: bool,
}

impl PartnerView {
    /// The end in milliseconds since the epoch, if any (an unreadable end
    /// reads as the epoch: ended, never a longer access).
    pub fn ends_at(&self) -> Option<i64> {
        self.expires_at
            .as_deref()
            .map(|s| partnergate_core::clock::parse_cedar_ms(s).unwrap_or(0))
    }

    /// Whether the access has ended at `now` (its end is not after `now`).
    pub fn ended_at(&self, now: i64) -> bool {
        self.ends_at().is_some_and(|end| end <= now)
    }
}

impl UserView {
    /// Holds a partner seat at `now`: a partner user who is not dismissed
    /// and whose access has not ended (an ended access frees its seat even
    /// before the sweep marks it).
    pub fn holds_partner_seat(&self, now: i64) -> bool {
        self.partner.as_ref().is_some_and(|p| !p.ended_at(now))
            && self.status != UserStatus::Dismissed
    }

    /// Whether this is a partner whose access has ended at `now`.
    pub fn access_ended(&self, now: i64) -> bool {
        self.partner.as_ref().is_some_and(|p| p.ended_at(now))
    }

    /// The Cedar entity JSON of this user.
    pub fn to_entity_json(&self) -> Value {
        let mut attrs = json!({
            "email": self.email,
            "account": {"__entity": {"type": "Account", "id": self.account}},
            "is_admin": self.is_admin,
            "status": self.status,
            "two_factor": self.two_factor,
        });
        if let (Some(p), Some(map)) = (&self.partner, attrs.as_object_mut()) {
            let mut partner = json!({"company": {"__entity": {"type": "PartnerCompany", "id": p.company}},
                       "verified": p.verified});
            if let Some(record) = partner.as_object_mut() {
                if let Some(end) = p.ends_at().and_then(partnergate_core::clock::datetime_json) {
                    record.insert("expires_at".into(), end);
                }
                if let Some(scopes) = &p.scopes {
                    record.insert("scopes".into(), json!(scopes));
                }
                if p.suspended {
                    record.insert("suspended".into(), json!(true));
                }
            }
            map.insert("partner".into(), partner);
        }
        json!({"uid": {"type": "User", "id": self.id},
               "parents": [{"type": "Account", "id": self.account}],
               "attrs": attrs})
    }

    /// Whether this is a partner whose access is suspended.
    pub fn is_suspended(&self) -> bool {
        self.partner.as_ref().is_some_and(|p| p.suspended)
    }

    /// The status shown in the employees list at `now`, by precedence:
    /// dismissed (an ended partner access too) and invited win over the
    /// role; a suspended partner shows "suspended", any other partner
    /// "partner", over its admin rights.
    pub fn list_status(&self, now: i64) -> ListStatus {
        if self.status == UserStatus::Dismissed || self.access_ended(now) {
            ListStatus::Dismissed
        } else if self.status == UserStatus::Invited {
            ListStatus::Invited
        } else if self.is_suspended() {
            ListStatus::Suspended
        } else if self.partner.is_some() {
            ListStatus::Partner
        } else if self.is_admin {
            ListStatus::Administrator
        } else {
            ListStatus::Employee
        }
    }
}
