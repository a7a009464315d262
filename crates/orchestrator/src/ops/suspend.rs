//! A partner's access suspended and resumed by an administrator of the
//! account: the `partner.suspended` fact the forbid `partner-suspended`
//! reads, written only here. A suspension keeps the seat and lets the end
//! run. It never knows HTTP or the command line, nor who may suspend (the
//! policies' `suspend_partner` / `resume_partner` decide).

use crate::allowed::AllowDecisions;
use crate::error::{ConflictCode, OrchestratorError};
use crate::events::EventKind;
use crate::input::parse_uid;
use crate::ops::partner::not_partner;
use crate::status::UserStatus;
use crate::view::Outcome;
use crate::write::ScopedWrites;

impl ScopedWrites<'_> {
    /// Suspend a partner's access (`suspend_partner`): from the commit on,
    /// every decision for the partner is a Deny (`partner-suspended`); the
    /// seat stays taken and the end keeps running. An access that has ended
    /// (or a dismissed partner) is not suspended:
    /// [`ConflictCode::AccessEnded`]; a suspended one is
    /// [`ConflictCode::AlreadySuspended`].
    pub fn suspend(&self, user: &str, actor: &str) -> Result<Outcome, OrchestratorError> {
        self.set_suspended(user, actor, true)
    }

    /// Resume a suspended partner's access (`resume_partner`): the partner
    /// works again within its scopes and until its end. Also for a
    /// dismissed or ended partner (a suspension outlives a rehire until
    /// resumed); a partner who is not suspended is
    /// [`ConflictCode::NotSuspended`].
    pub fn resume(&self, user: &str, actor: &str) -> Result<Outcome, OrchestratorError> {
        self.set_suspended(user, actor, false)
    }

    fn set_suspended(
        &self,
        user: &str,
        actor: &str,
        suspended: bool,
    ) -> Result<Outcome, OrchestratorError> {
        let uid = parse_uid("user", "User", user)?;
        let actor = parse_uid("actor", "User", actor)?;
        let (action, operation) = if suspended {
            ("suspend_partner", "partner.suspend")
        } else {
            ("resume_partner", "partner.resume")
        };
        let decided = AllowDecisions::by(self.ask(&actor, action, &uid, None)?);
        self.simple_write(
            &uid,
            (operation, &actor.to_string()),
            &decided,
            |tx, u, now| {
                // Judged on the stored user at the transaction's clock.
                let ended = u.status == UserStatus::Dismissed || u.access_ended(now);
                let Some(p) = u.partner.as_mut() else {
                    return Err(not_partner(&uid));
                };
                let refused = match (suspended, p.suspended) {
                    (true, true) => Some((
                        ConflictCode::AlreadySuspended,
                        format!("the partner access of {uid} is already suspended"),
                    )),
                    (false, false) => Some((
                        ConflictCode::NotSuspended,
                        format!("the partner access of {uid} is not suspended"),
                    )),
                    (true, false) if ended => Some((
                        ConflictCode::AccessEnded,
                        format!(
                            "the partner access of {uid} has ended: there is nothing to suspend"
                        ),
                    )),
                    _ => None,
                };
                if let Some((code, message)) = refused {
                    return Err(OrchestratorError::Conflict { code, message });
                }
                p.suspended = suspended;
                tx.emit(
                    if suspended {
                        EventKind::Suspended
                    } else {
                        EventKind::Resumed
                    },
                    u,
                );
                Ok(())
            },
        )
    }
}
