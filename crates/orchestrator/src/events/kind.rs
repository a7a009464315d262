//! The kinds of partner lifecycle events ([`EventKind`]): one per change
//! the lifecycle knows, with its wire name (`partner.suspended`, ...), the
//! `type` of the webhook payload. Plain data: it never knows the store or
//! the transport.

use serde::Serialize;

/// A partner lifecycle change, as the outbox and the webhooks name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum EventKind {
    /// A partner was invited into an account.
    Invited,
    /// A partner asked for access to an account.
    Requested,
    /// An administrator approved a partner's request.
    Approved,
    /// An administrator declined a partner's request.
    Declined,
    /// A partner's request expired unanswered.
    RequestExpired,
    /// The invited partner accepted: its access is active.
    Accepted,
    /// Partner access was given to an existing user (also a partner's rehire).
    Granted,
    /// A partner was dismissed to free its seat for another (the swap).
    Replaced,
    /// A partner was dismissed.
    Dismissed,
    /// A partner's access got a new end.
    Renewed,
    /// A partner's access was suspended.
    Suspended,
    /// A partner's suspended access was resumed.
    Resumed,
    /// A partner's access ends within one of the configured lead times.
    EndingSoon,
    /// A partner's access ended (by an administrator, or at its end by the sweep).
    Ended,
    /// A partner's access ended because it was not used.
    Lapsed,
    /// A partner's access is due for its periodic review.
    ReviewDue,
    /// A partner's review is past its grace period.
    ReviewOverdue,
}

impl EventKind {
    /// Every kind, in the order above.
    pub const ALL: [EventKind; 17] = [
        EventKind::Invited,
        EventKind::Requested,
        EventKind::Approved,
        EventKind::Declined,
        EventKind::RequestExpired,
        EventKind::Accepted,
        EventKind::Granted,
        EventKind::Replaced,
        EventKind::Dismissed,
        EventKind::Renewed,
        EventKind::Suspended,
        EventKind::Resumed,
        EventKind::EndingSoon,
        EventKind::Ended,
        EventKind::Lapsed,
        EventKind::ReviewDue,
        EventKind::ReviewOverdue,
    ];

    /// The wire name: the payload's `type` and the stored `kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Invited => "partner.invited",
            EventKind::Requested => "partner.requested",
            EventKind::Approved => "partner.approved",
            EventKind::Declined => "partner.declined",
            EventKind::RequestExpired => "partner.request_expired",
            EventKind::Accepted => "partner.accepted",
            EventKind::Granted => "partner.granted",
            EventKind::Replaced => "partner.replaced",
            EventKind::Dismissed => "partner.dismissed",
            EventKind::Renewed => "partner.renewed",
            EventKind::Suspended => "partner.suspended",
            EventKind::Resumed => "partner.resumed",
            EventKind::EndingSoon => "partner.access_ending_soon",
            EventKind::Ended => "partner.access_ended",
            EventKind::Lapsed => "partner.lapsed",
            EventKind::ReviewDue => "partner.review_due",
            EventKind::ReviewOverdue => "partner.review_overdue",
        }
    }

    /// The kind of a wire name; `None` for an unknown one.
    pub fn parse(s: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_reads_back_from_its_wire_name_and_names_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for k in EventKind::ALL {
            assert_eq!(EventKind::parse(k.as_str()), Some(k));
            assert!(seen.insert(k.as_str()), "{k} twice");
        }
        assert_eq!(EventKind::parse("partner.nope"), None);
    }
}
