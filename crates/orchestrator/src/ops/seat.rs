//! A partner seat: the policy question for giving partner access (with the
//! registry's company as the invitee) and the counting rules inside the
//! write's transaction — seat free or `replace` given, one company, certified
//! email, registry unchanged since the question — plus the partner record
//! written. It never knows HTTP or the command line.

use cedar_policy::EntityUid;
use serde_json::{json, Value};

use crate::access::Access;
use crate::allowed::{AllowDecisions, Allowed};
use crate::error::{ConflictCode, InvalidCode, OrchestratorError};
use crate::orchestrator::Orchestrator;
use crate::status::UserStatus;
use crate::store::{AccountTx, RegistryCompany};
use crate::user::{PartnerView, UserView};
use crate::write::ScopedWrites;

/// What the partner checks of one operation need.
pub(crate) struct SeatRequest<'a> {
    pub(crate) account: &'a str,
    pub(crate) email: &'a str,
    /// The user who gets the seat, if already a user (excluded from the count).
    pub(crate) subject: Option<&'a str>,
    pub(crate) replace: Option<&'a str>,
    /// The certified registry company the policies were asked about (if any).
    pub(crate) asked: Option<&'a RegistryCompany>,
}

impl Orchestrator {
    /// The counting rules, inside the transaction, in the documented order:
    /// seat free or `replace` given (409), same company (409), certified
    /// partner email (422). Returns the company and the dismissed partner.
    pub(crate) fn seat_checks(
        &self,
        tx: &mut dyn AccountTx,
        users: &[UserView],
        req: &SeatRequest<'_>,
        now: i64,
    ) -> Result<(RegistryCompany, Option<UserView>), OrchestratorError> {
        let quotas = self.rules.current();
        let mut active: Vec<&UserView> = users
            .iter()
            .filter(|u| u.holds_partner_seat(now) && Some(u.id.as_str()) != req.subject)
            .collect();
        let mut dismissed = None;
        if let Some(r) = req.replace {
            let Some(pos) = active.iter().position(|u| u.id == r) else {
                return Err(OrchestratorError::Invalid {
                    code: InvalidCode::Replace,
                    field: "replace",
                    message: format!(
                        "`{r}` is not an active partner of account `{}`",
                        req.account
                    ),
                });
            };
            let mut victim = active.remove(pos).clone();
            victim.status = UserStatus::Dismissed;
            dismissed = Some(victim);
        }
        if active.len() >= quotas.max_active_partners as usize {
            return Err(OrchestratorError::LimitReached {
                limit: quotas.max_active_partners,
                active: active.into_iter().cloned().collect(),
            });
        }
        // Only a certified company makes its people partners: an email of an
        // uncertified company is "no certified partner", not "another company".
        let registry = tx.company_of_email(req.email)?.filter(|c| c.certified);
        if quotas.one_company_per_account {
            if let (Some(c), Some(other)) = (
                &registry,
                active
                    .iter()
                    .filter_map(|u| u.partner.as_ref())
                    .find(|p| registry.as_ref().is_some_and(|c| c.id != p.company)),
            ) {
                return Err(OrchestratorError::DifferentCompany {
                    email: req.email.to_string(),
                    company: c.id.clone(),
                    active_company: other.company.clone(),
                });
            }
        }
        let company =
            registry
                .filter(|c| c.certified)
                .ok_or_else(|| OrchestratorError::NotCertified {
                    email: req.email.to_string(),
                })?;
        // The registry changed between the policy question and now: the
        // answer was about another company, so refuse rather than guess.
        let same = req
            .asked
            .is_some_and(|a| a.id == company.id && a.status == company.status);
        if !same {
            return Err(OrchestratorError::Conflict {
                code: ConflictCode::RegistryChanged,
                message: format!(
                    "the partner registry entry of {} changed during the request; try again",
                    req.email
                ),
            });
        }
        Ok((company, dismissed))
    }
}

impl ScopedWrites<'_> {
    /// The decisions a seat-giving write rests on: `by` for its records
    /// and, when it dismisses `replace` to free a seat, the actor's
    /// `dismiss_user` Allow for that partner's record.
    pub(crate) fn with_replace(
        &self,
        actor: &EntityUid,
        by: Allowed,
        replace: Option<&EntityUid>,
    ) -> Result<AllowDecisions, OrchestratorError> {
        let mut decided = AllowDecisions::by(by);
        if let Some(r) = replace {
            let id = self.ask(actor, "dismiss_user", r, None)?;
            decided.others.push((r.to_string(), id));
        }
        Ok(decided)
    }

    /// The policy question for giving partner access to `email` (`access`:
    /// the context's `access` record): with the
    /// registry's company as the invitee when the email belongs to a
    /// certified company; otherwise there is no invitee to ask about, and
    /// the actor must at least be allowed to invite users into the account
    /// (the refusal `not_a_certified_partner` comes later, in check order).
    pub(crate) fn ask_partner_access(
        &self,
        actor: &EntityUid,
        action: &str,
        resource: &EntityUid,
        account: &EntityUid,
        (email, access): (&str, Value),
    ) -> Result<(Option<RegistryCompany>, Allowed), OrchestratorError> {
        let certified = self.store.company_of_email(email)?.filter(|c| c.certified);
        let decided = match &certified {
            Some(c) => {
                let mut context = invitee_context(c);
                context["access"] = access;
                self.ask(actor, action, resource, Some(context))?
            }
            None => self.ask(actor, "invite_user", account, None)?,
        };
        Ok((certified, decided))
    }
}

/// Inside a write's transaction, at its clock reading `now`: the end being
/// given must still be ahead (it was checked, and the policies asked about
/// it, before the write lock was held; past it, the access would be
/// written already ended).
pub(crate) fn end_still_ahead(end: Option<i64>, now: i64) -> Result<(), OrchestratorError> {
    match end {
        Some(e) if e <= now => Err(OrchestratorError::Invalid {
            code: InvalidCode::Access,
            field: "expires_at",
            message: format!(
                "the end {} had passed when the write could commit: ask again with a later end",
                partnergate_core::clock::format_ms(e).unwrap_or_else(|| e.to_string())
            ),
        }),
        _ => Ok(()),
    }
}

/// A partner record of `company` with the access given.
pub(crate) fn partner_view(company: String, verified: bool, access: &Access) -> PartnerView {
    PartnerView {
        company,
        verified,
        expires_at: access
            .expires_at
            .and_then(partnergate_core::clock::format_ms),
        scopes: Some(access.scopes.clone()),
        suspended: false,
    }
}

pub(crate) fn invitee_context(c: &RegistryCompany) -> Value {
    json!({"invitee": {
        "company": {"__entity": {"type": "PartnerCompany", "id": c.id}},
        "status": c.status,
        "certified": c.certified,
    }})
}
