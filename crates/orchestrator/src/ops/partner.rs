//! Partner access of an existing user: given (also a partner's rehire, with
//! the seat checks), renewed and ended. It never knows HTTP or the command
//! line.

use cedar_policy::EntityUid;
use serde_json::json;

use crate::access::{self, Access, AccessRequest};
use crate::allowed::AllowDecisions;
use crate::error::{ConflictCode, InvalidCode, OrchestratorError};
use crate::events::EventKind;
use crate::input::{id_of, normalize_email, parse_uid};
use crate::ops::seat::{end_still_ahead, partner_view, SeatRequest};
use crate::orchestrator::Orchestrator;
use crate::status::UserStatus;
use crate::store::{RegistryCompany, WriteLocks};
use crate::user::UserView;
use crate::view::Outcome;
use crate::write::{user_in, users_in, ScopedWrites};

impl ScopedWrites<'_> {
    /// Give partner access to an existing user (re-activating a dismissed one).
    pub fn grant_partner_access(
        &self,
        user: &str,
        actor: &str,
        (replace, access): (Option<&str>, &AccessRequest),
    ) -> Result<Outcome, OrchestratorError> {
        let uid = parse_uid("user", "User", user)?;
        let actor = parse_uid("actor", "User", actor)?;
        let access = self.access(access)?;
        let current = self.user_from_memory(&uid)?;
        self.partner_access_write(
            &uid,
            &actor,
            (&current, &access),
            replace,
            false,
            "user.partner_access",
        )
    }

    /// Partner access for an existing user (also a partner's rehire): the
    /// policy checks (`grant_partner_access`, and `dismiss_user` on the one
    /// to replace), then the seat checks and the write.
    pub(crate) fn partner_access_write(
        &self,
        uid: &EntityUid,
        actor: &EntityUid,
        (current, access): (&UserView, &Access),
        replace: Option<&str>,
        must_be_dismissed: bool,
        operation: &str,
    ) -> Result<Outcome, OrchestratorError> {
        let email = normalize_email(&current.email)?;
        let account_uid = parse_uid("account", "Account", &current.account)?;
        let replace_uid = replace
            .map(|r| parse_uid("replace", "User", r))
            .transpose()?;
        let (asked, by) = self.ask_partner_access(
            actor,
            "grant_partner_access",
            uid,
            &account_uid,
            (&email, access.context()),
        )?;
        let decided = self.with_replace(actor, by, replace_uid.as_ref())?;
        let replace_id = replace_uid.as_ref().map(id_of);
        self.partner_seat_write(
            uid,
            &email,
            (replace_id.as_deref(), access),
            (asked.as_ref(), &decided),
            must_be_dismissed,
            (operation, &actor.to_string()),
        )
    }

    /// Shared by partner access and rehire: the seat checks and the write.
    /// `asked` and `decided` are the policy answers: the registry company
    /// asked about and the Allow decisions.
    pub(crate) fn partner_seat_write(
        &self,
        uid: &EntityUid,
        email: &str,
        (replace, access): (Option<&str>, &Access),
        (asked, decided): (Option<&RegistryCompany>, &AllowDecisions),
        must_be_dismissed: bool,
        (operation, actor): (&str, &str),
    ) -> Result<Outcome, OrchestratorError> {
        let pack = self.authz.evaluator().current();
        let schema = pack.schema.as_ref();
        let outcome = self.commit(
            (operation, actor),
            decided,
            WriteLocks::users(&[uid]),
            &mut |tx, now| {
                let mut u = user_in(tx, uid)?;
                // An ended access is hired back like a dismissal (the sweep
                // may not have marked it yet).
                if must_be_dismissed && u.status != UserStatus::Dismissed && !u.access_ended(now) {
                    return Err(OrchestratorError::Conflict {
                        code: ConflictCode::NotDismissed,
                        message: format!("{uid} is not dismissed (status {})", u.status),
                    });
                }
                if !must_be_dismissed && u.holds_partner_seat(now) {
                    return Err(OrchestratorError::Conflict {
                        code: ConflictCode::AlreadyPartner,
                        message: format!("{uid} is already a partner user (status {})", u.status),
                    });
                }
                let users = users_in(tx, &u.account)?;
                let (company, dismissed) = self.seat_checks(
                    tx,
                    &users,
                    &SeatRequest {
                        account: &u.account,
                        email,
                        subject: Some(&u.id),
                        replace,
                        asked,
                    },
                    now,
                )?;
                end_still_ahead(access.expires_at, now)?;
                if u.status == UserStatus::Dismissed {
                    u.status = UserStatus::Active;
                }
                u.two_factor = true;
                // A suspension outlives an end and a rehire: only a resume
                // lifts it (else a partner could end and rehire a suspended
                // partner of its company).
                let suspended = u.is_suspended();
                let mut partner = partner_view(company.id, u.status == UserStatus::Active, access);
                partner.suspended = suspended;
                u.partner = Some(partner);
                let mut writes = vec![Orchestrator::record(schema, &u)?];
                if let Some(d) = &dismissed {
                    writes.push(Orchestrator::record(schema, d)?);
                }
                let outcome = Outcome { user: u, dismissed };
                tx.emit_seated(EventKind::Granted, &outcome);
                Ok((writes, outcome))
            },
            schema,
        )?;
        Ok(outcome)
    }

    /// Renew a partner's access: a new end (required, within
    /// `max_access_days` from now; the scopes stay), asked as
    /// `renew_partner_access` with the partner's scopes and the new end.
    /// An access that has ended (or a dismissed partner) is not renewed:
    /// [`ConflictCode::AccessEnded`], hire them back instead.
    pub fn renew(
        &self,
        user: &str,
        actor: &str,
        req: &AccessRequest,
    ) -> Result<Outcome, OrchestratorError> {
        let uid = parse_uid("user", "User", user)?;
        let actor = parse_uid("actor", "User", actor)?;
        if req.scopes.is_some() {
            return Err(OrchestratorError::Invalid {
                code: InvalidCode::Access,
                field: "scopes",
                message:
                    "a renewal changes the end only: give partner access again to change the scopes"
                        .into(),
            });
        }
        let end = access::resolve_end(req, self.now(), &self.rules.current(), true)?;
        let current = self.user_from_memory(&uid)?;
        let scopes = current
            .partner
            .as_ref()
            .and_then(|p| p.scopes.clone())
            .unwrap_or_default();
        let granted = Access {
            expires_at: end,
            scopes,
        };
        let context = json!({"access": granted.context()});
        let decided =
            AllowDecisions::by(self.ask(&actor, "renew_partner_access", &uid, Some(context))?);
        self.simple_write(
            &uid,
            ("partner.renew", &actor.to_string()),
            &decided,
            |tx, u, now| {
                let ended = u.access_ended(now) || u.status == UserStatus::Dismissed;
                let Some(p) = u.partner.as_mut() else {
                    return Err(not_partner(&uid));
                };
                if ended {
                    return Err(OrchestratorError::Conflict {
                        code: ConflictCode::AccessEnded,
                        message: format!(
                            "the partner access of {uid} has ended ({}): hire them back (rehire) with a new end",
                            p.expires_at.as_deref().unwrap_or("dismissed")
                        ),
                    });
                }
                end_still_ahead(end, now)?;
                p.expires_at = end.and_then(partnergate_core::clock::format_ms);
                tx.emit(EventKind::Renewed, u);
                Ok(())
            },
        )
    }

    /// End a partner's access now (`end_partner_access`): the partner is
    /// dismissed and its end set to now if later; the seat is free, and a
    /// rehire gives access again.
    pub fn end_access(&self, user: &str, actor: &str) -> Result<Outcome, OrchestratorError> {
        let uid = parse_uid("user", "User", user)?;
        let actor = parse_uid("actor", "User", actor)?;
        let decided = AllowDecisions::by(self.ask(&actor, "end_partner_access", &uid, None)?);
        self.simple_write(
            &uid,
            ("partner.end", &actor.to_string()),
            &decided,
            |tx, u, now| {
                end_now(&uid, u, now)?;
                tx.emit(EventKind::Ended, u);
                Ok(())
            },
        )
    }
}

pub(crate) fn not_partner(uid: &EntityUid) -> OrchestratorError {
    OrchestratorError::Conflict {
        code: ConflictCode::NotPartner,
        message: format!("{uid} is not a partner user"),
    }
}

/// End `u`'s partner access at `now`: dismissed, its end no later than now.
pub(crate) fn end_now(
    uid: &EntityUid,
    u: &mut UserView,
    now: i64,
) -> Result<(), OrchestratorError> {
    if u.status == UserStatus::Dismissed {
        return Err(OrchestratorError::Conflict {
            code: ConflictCode::AlreadyDismissed,
            message: format!("user `{}` is already dismissed", u.id),
        });
    }
    let Some(p) = u.partner.as_mut() else {
        return Err(not_partner(uid));
    };
    if p.ends_at().is_none_or(|end| end > now) {
        p.expires_at = partnergate_core::clock::format_ms(now);
    }
    u.status = UserStatus::Dismissed;
    Ok(())
}
