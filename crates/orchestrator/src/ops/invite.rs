//! Invitations: a partner or an ordinary user invited by email, and the
//! invitee's acceptance (a partner verified against the registry then). It
//! never knows HTTP or the command line.

use crate::access::{Access, AccessRequest};
use crate::allowed::AllowDecisions;
use crate::error::{ConflictCode, OrchestratorError};
use crate::events::EventKind;
use crate::input::{id_of, new_user_id, normalize_email, parse_uid};
use crate::ops::seat::{end_still_ahead, partner_view, SeatRequest};
use crate::orchestrator::Orchestrator;
use crate::status::UserStatus;
use crate::store::{AccountTx, RegistryCompany, WriteLocks};
use crate::user::UserView;
use crate::view::Outcome;
use crate::write::{users_in, ScopedWrites};
use partnergate_core::store::EntityRecord;

/// A partner given a seat by email: by an invitation (invited, verified
/// when accepted) or an approved request (active and verified at once).
pub(crate) struct NewPartner<'a> {
    pub(crate) account: &'a str,
    pub(crate) email: &'a str,
    pub(crate) name: Option<&'a str>,
    pub(crate) replace: Option<&'a str>,
    /// The certified registry company the policies were asked about.
    pub(crate) asked: Option<&'a RegistryCompany>,
    pub(crate) access: &'a Access,
    /// Active and verified now (an approved request), else invited.
    pub(crate) active: bool,
}

impl Orchestrator {
    /// Inside a write's transaction, at its clock reading `now`: the seat
    /// rules for `p` (seat free or `replace` given, one company, certified
    /// email, registry unchanged, end still ahead), then the partner user
    /// (a dismissed user of the same email keeps its id) and the partner
    /// it replaces, as records to write.
    pub(crate) fn seat_new_partner(
        &self,
        tx: &mut dyn AccountTx,
        schema: Option<&cedar_policy::Schema>,
        p: &NewPartner<'_>,
        now: i64,
    ) -> Result<(Vec<EntityRecord>, Outcome), OrchestratorError> {
        let (account, email) = (p.account, p.email);
        let users = users_in(tx, account)?;
        let existing = users.iter().find(|u| u.email == email);
        if let Some(u) = existing.filter(|u| u.status != UserStatus::Dismissed) {
            return Err(OrchestratorError::Conflict {
                code: ConflictCode::AlreadyMember,
                message: format!(
                    "{email} is already a user of account `{account}` ({}, status {}); to make them a partner use partner access",
                    u.id, u.status
                ),
            });
        }
        let (company, dismissed) = self.seat_checks(
            tx,
            &users,
            &SeatRequest {
                account,
                email,
                subject: existing.map(|u| u.id.as_str()),
                replace: p.replace,
                asked: p.asked,
            },
            now,
        )?;
        end_still_ahead(p.access.expires_at, now)?;
        let user = UserView {
            id: existing.map_or_else(|| new_user_id(email, p.name), |u| u.id.clone()),
            email: email.to_string(),
            account: account.to_string(),
            status: if p.active {
                UserStatus::Active
            } else {
                UserStatus::Invited
            },
            is_admin: existing.is_some_and(|u| u.is_admin),
            two_factor: true,
            partner: Some(partner_view(company.id, p.active, p.access)),
        };
        let mut writes = vec![Orchestrator::record(schema, &user)?];
        if let Some(d) = &dismissed {
            writes.push(Orchestrator::record(schema, d)?);
        }
        Ok((writes, Outcome { user, dismissed }))
    }
}

impl ScopedWrites<'_> {
    /// Invite a partner by email into `account` (optionally dismissing
    /// `replace` in the same transaction).
    pub fn invite_partner(
        &self,
        account: &str,
        actor: &str,
        email: &str,
        name: Option<&str>,
        (replace, access): (Option<&str>, &AccessRequest),
    ) -> Result<Outcome, OrchestratorError> {
        let email = normalize_email(email)?;
        let actor = parse_uid("actor", "User", actor)?;
        let account_uid = parse_uid("account", "Account", account)?;
        let account = id_of(&account_uid);
        let replace_uid = replace
            .map(|r| parse_uid("replace", "User", r))
            .transpose()?;
        let access = self.access(access)?;
        let (asked, by) = self.ask_partner_access(
            &actor,
            "invite_partner",
            &account_uid,
            &account_uid,
            (&email, access.context()),
        )?;
        let decided = self.with_replace(&actor, by, replace_uid.as_ref())?;
        let replace_id = replace_uid.as_ref().map(id_of);
        let pack = self.authz.evaluator().current();
        let schema = pack.schema.as_ref();
        let outcome = self.commit(
            ("partner.invite", &actor.to_string()),
            &decided,
            WriteLocks::account(&account),
            &mut |tx, now| {
                let partner = NewPartner {
                    account: &account,
                    email: &email,
                    name,
                    replace: replace_id.as_deref(),
                    asked: asked.as_ref(),
                    access: &access,
                    active: false,
                };
                let (writes, outcome) = self.seat_new_partner(tx, schema, &partner, now)?;
                tx.emit_seated(EventKind::Invited, &outcome);
                Ok((writes, outcome))
            },
            schema,
        )?;
        tracing::info!(account, user = %outcome.user.id, email, dismissed = ?outcome.dismissed.as_ref().map(|d| &d.id), "partner invited");
        Ok(outcome)
    }

    /// Invite an ordinary user by email into `account`.
    pub fn invite_user(
        &self,
        account: &str,
        actor: &str,
        email: &str,
        name: Option<&str>,
    ) -> Result<Outcome, OrchestratorError> {
        let email = normalize_email(email)?;
        let actor = parse_uid("actor", "User", actor)?;
        let account_uid = parse_uid("account", "Account", account)?;
        let account = id_of(&account_uid);
        let decided = AllowDecisions::by(self.ask(&actor, "invite_user", &account_uid, None)?);
        let pack = self.authz.evaluator().current();
        let schema = pack.schema.as_ref();
        let outcome = self.commit(
            ("user.invite", &actor.to_string()),
            &decided,
            WriteLocks::account(&account),
            &mut |tx, _now| {
                let users = users_in(tx, &account)?;
                if let Some(u) = users.iter().find(|u| u.email == email) {
                    let (code, message) = if u.status == UserStatus::Dismissed {
                        (ConflictCode::UserDismissed, format!("{email} is a dismissed user of account `{account}` ({}): hire them back with rehire", u.id))
                    } else {
                        (ConflictCode::AlreadyMember, format!("{email} is already a user of account `{account}` ({}, status {})", u.id, u.status))
                    };
                    return Err(OrchestratorError::Conflict { code, message });
                }
                let user = UserView {
                    id: new_user_id(&email, name),
                    email: email.clone(),
                    account: account.clone(),
                    status: UserStatus::Invited,
                    is_admin: false,
                    two_factor: false,
                    partner: None,
                };
                let writes = vec![Orchestrator::record(schema, &user)?];
                Ok((
                    writes,
                    Outcome {
                        user,
                        dismissed: None,
                    },
                ))
            },
            schema,
        )?;
        Ok(outcome)
    }

    /// The invitee accepts the invitation: active, and a partner is
    /// verified against the registry now (refused if no longer certified).
    pub fn accept(&self, user: &str) -> Result<Outcome, OrchestratorError> {
        let uid = parse_uid("user", "User", user)?;
        // No policy question: the invitee accepts its own invitation.
        let decided = AllowDecisions::default();
        self.simple_write(
            &uid,
            ("user.accept", &uid.to_string()),
            &decided,
            |tx, u, now| {
                if u.status != UserStatus::Invited {
                    return Err(OrchestratorError::Conflict {
                        code: ConflictCode::NotInvited,
                        message: format!("{uid} has no open invitation (status {})", u.status),
                    });
                }
                if u.access_ended(now) {
                    return Err(OrchestratorError::Conflict {
                        code: ConflictCode::AccessEnded,
                        message: format!(
                            "the partner access of {uid} ended before it was accepted: ask for a new invitation"
                        ),
                    });
                }
                if let Some(p) = &mut u.partner {
                    let company = tx
                        .company_of_email(&u.email)?
                        .filter(|c| c.certified && c.id == p.company)
                        .ok_or_else(|| OrchestratorError::NotCertified {
                            email: u.email.clone(),
                        })?;
                    p.company = company.id;
                    p.verified = true;
                }
                u.status = UserStatus::Active;
                if u.partner.is_some() {
                    tx.emit(EventKind::Accepted, u);
                }
                Ok(())
            },
        )
    }
}
