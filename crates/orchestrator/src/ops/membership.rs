//! A user's membership of its account: dismissed (kept, never deleted),
//! hired back, administrator rights granted or revoked. It never knows HTTP
//! or the command line.

use crate::access::AccessRequest;
use crate::allowed::AllowDecisions;
use crate::error::{ConflictCode, InvalidCode, OrchestratorError};
use crate::events::EventKind;
use crate::input::parse_uid;
use crate::status::UserStatus;
use crate::view::Outcome;
use crate::write::ScopedWrites;

impl ScopedWrites<'_> {
    /// Dismiss a user (kept, never deleted); frees a partner seat.
    pub fn dismiss(&self, user: &str, actor: &str) -> Result<Outcome, OrchestratorError> {
        let uid = parse_uid("user", "User", user)?;
        let actor = parse_uid("actor", "User", actor)?;
        let decided = AllowDecisions::by(self.ask(&actor, "dismiss_user", &uid, None)?);
        self.simple_write(
            &uid,
            ("user.dismiss", &actor.to_string()),
            &decided,
            |tx, u, _now| {
                if u.status == UserStatus::Dismissed {
                    return Err(OrchestratorError::Conflict {
                        code: ConflictCode::AlreadyDismissed,
                        message: format!("user `{}` is already dismissed", u.id),
                    });
                }
                u.status = UserStatus::Dismissed;
                if u.partner.is_some() {
                    tx.emit(EventKind::Dismissed, u);
                }
                Ok(())
            },
        )
    }

    /// Hire a dismissed user back; a partner is re-verified against the
    /// registry and re-counted (same checks as an invitation).
    pub fn rehire(
        &self,
        user: &str,
        actor: &str,
        (replace, access): (Option<&str>, &AccessRequest),
    ) -> Result<Outcome, OrchestratorError> {
        let uid = parse_uid("user", "User", user)?;
        let actor = parse_uid("actor", "User", actor)?;
        let current = self.user_from_memory(&uid)?;
        if current.partner.is_none() && !access.is_empty() {
            return Err(OrchestratorError::Invalid {
                code: InvalidCode::Access,
                field: "scopes",
                message: format!(
                    "{uid} is not a partner: only a partner's rehire takes an end or scopes"
                ),
            });
        }
        let access = match current.partner {
            Some(_) => Some(self.access(access)?),
            None => None,
        };
        let decided = AllowDecisions::by(self.ask(&actor, "rehire_user", &uid, None)?);
        let Some(access) = access else {
            let rehire = ("user.rehire", actor.to_string());
            return self.simple_write(&uid, (rehire.0, &rehire.1), &decided, |_, u, _now| {
                if u.status != UserStatus::Dismissed {
                    return Err(OrchestratorError::Conflict {
                        code: ConflictCode::NotDismissed,
                        message: format!("user `{}` is not dismissed (status {})", u.id, u.status),
                    });
                }
                u.status = UserStatus::Active;
                Ok(())
            });
        };
        self.partner_access_write(
            &uid,
            &actor,
            (&current, &access),
            replace,
            true,
            "user.rehire",
        )
    }

    /// Grant (`true`) or revoke administrator rights.
    pub fn set_admin(
        &self,
        user: &str,
        actor: &str,
        admin: bool,
    ) -> Result<Outcome, OrchestratorError> {
        let uid = parse_uid("user", "User", user)?;
        let actor = parse_uid("actor", "User", actor)?;
        let action = if admin { "grant_admin" } else { "revoke_admin" };
        let decided = AllowDecisions::by(self.ask(&actor, action, &uid, None)?);
        self.simple_write(
            &uid,
            (
                if admin {
                    "user.grant_admin"
                } else {
                    "user.revoke_admin"
                },
                &actor.to_string(),
            ),
            &decided,
            |_, u, _now| {
                u.is_admin = admin;
                Ok(())
            },
        )
    }
}
