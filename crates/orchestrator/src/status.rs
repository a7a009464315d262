//! A user's statuses: [`UserStatus`], the stored `status` attribute of a
//! `User` entity, and [`ListStatus`], the status the employees list shows.
//!
//! Owns their wire forms and the list's order; it must never know the
//! store, the policies, the seat rules or the orchestrator's operations.

use serde::Serialize;

/// A user's stored `status`: `"invited"`, `"active"`, `"dismissed"`, or
/// any other string a `PUT /v1/entities` stored (kept as written; the
/// orchestrator treats it as neither invited nor dismissed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(from = "String", into = "String")]
pub enum UserStatus {
    /// Invited, the invitation not yet accepted; a partner holds a seat.
    Invited,
    /// Accepted the invitation (or rehired): a working member of the account.
    Active,
    /// Dismissed: kept, never deleted; holds no seat and can be rehired.
    Dismissed,
    /// Any other stored string, kept exactly as written.
    Other(String),
}

impl UserStatus {
    /// The wire (and stored) form.
    pub fn as_str(&self) -> &str {
        match self {
            UserStatus::Invited => "invited",
            UserStatus::Active => "active",
            UserStatus::Dismissed => "dismissed",
            UserStatus::Other(s) => s,
        }
    }
}

impl From<String> for UserStatus {
    fn from(s: String) -> Self {
        match s.as_str() {
            "invited" => UserStatus::Invited,
            "active" => UserStatus::Active,
            "dismissed" => UserStatus::Dismissed,
            _ => UserStatus::Other(s),
        }
    }
}

impl From<UserStatus> for String {
    fn from(s: UserStatus) -> Self {
        match s {
            UserStatus::Other(s) => s,
            known => known.as_str().to_string(),
        }
    }
}

impl std::fmt::Display for UserStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// The status shown in the employees list ([`UserView::list_status`](crate::UserView::list_status)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ListStatus {
    /// Not a partner, neither dismissed nor invited, with administrator rights.
    Administrator,
    /// Not a partner, neither dismissed nor invited, without administrator rights.
    Employee,
    /// A partner user who is neither dismissed nor invited (whatever its admin rights).
    Partner,
    /// A partner user, neither dismissed nor invited, whose access is
    /// suspended (listed with the partners: it holds its seat).
    Suspended,
    /// A dismissed user (partner or not).
    Dismissed,
    /// A user whose invitation is still open (partner or not).
    Invited,
}

impl ListStatus {
    /// The wire form.
    pub fn as_str(self) -> &'static str {
        match self {
            ListStatus::Administrator => "administrator",
            ListStatus::Employee => "employee",
            ListStatus::Partner => "partner",
            ListStatus::Suspended => "suspended",
            ListStatus::Dismissed => "dismissed",
            ListStatus::Invited => "invited",
        }
    }

    /// The employees list's order: administrators and employees, partners
    /// (suspended or not), dismissed, invited.
    pub(crate) fn rank(self) -> u8 {
        match self {
            ListStatus::Administrator | ListStatus::Employee => 0,
            ListStatus::Partner | ListStatus::Suspended => 1,
            ListStatus::Dismissed => 2,
            ListStatus::Invited => 3,
        }
    }
}

impl std::fmt::Display for ListStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}
