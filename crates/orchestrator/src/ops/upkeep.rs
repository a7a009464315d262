//! The system's own writes, run by the sweep: ended partner access marked
//! dismissed, and partners stored before scopes existed given the default
//! scopes; each candidate re-read in its own transaction, a change record by
//! `system`. It never knows HTTP or the command line.

use cedar_policy::EntityUid;
use serde_json::json;

use crate::access::{self, AccessRequest};
use crate::allowed::AllowDecisions;
use crate::error::OrchestratorError;
use crate::events::EventKind;
use crate::orchestrator::Orchestrator;
use crate::status::UserStatus;
use crate::store::WriteLocks;
use crate::user::UserView;
use crate::view::Outcome;
use crate::write::{user_in, ScopedWrites};
use partnergate_policy::engine;

impl ScopedWrites<'_> {
    /// The sweep: mark every partner whose access has ended by now and who
    /// is not dismissed as dismissed, one transaction each (re-read from
    /// the store: a renewal or rehire that came first wins; a partner
    /// already marked is left alone, so a sweep never repeats an end).
    /// Each end is a change record `partner.access_ended` by `system`.
    /// Returns the partners it ended.
    pub fn end_expired(&self) -> Result<Vec<UserView>, OrchestratorError> {
        let now = self.now();
        let mut ended = Vec::new();
        let swept = self.each_in_own_transaction(
            ("partner.access_ended", Some(EventKind::Ended)),
            self.ended_candidates(now)?,
            |u, now| u.access_ended(now) && u.status != UserStatus::Dismissed,
            |u| u.status = UserStatus::Dismissed,
        )?;
        for user in swept {
            if user.status == UserStatus::Dismissed {
                tracing::info!(user = %user.id, account = %user.account, "partner access ended; seat freed");
                ended.push(user);
            }
        }
        Ok(ended)
    }

    /// The upgrade of partners stored before scopes existed (no `scopes`
    /// attribute, which the policies read as nothing): each gets the
    /// default set (`default_partner_scopes`, else every scope of the
    /// schema), one transaction each, with a change record
    /// `partner.scopes_default` by `system`. Run once at start by the
    /// [`crate::sweep::Sweeper`]; a partner given `[]` is left alone. Returns the
    /// partners it changed.
    pub fn default_missing_scopes(&self) -> Result<Vec<UserView>, OrchestratorError> {
        let pack = self.authz.evaluator().current();
        let scopes = access::resolve_scopes(
            &AccessRequest::default(),
            &self.rules.current(),
            pack.schema.as_ref(),
        )?;
        let unscoped = |u: &UserView| u.partner.as_ref().is_some_and(|p| p.scopes.is_none());
        self.each_in_own_transaction(
            ("partner.scopes_default", None),
            self.partners_where(unscoped)?,
            |u, _now| unscoped(u),
            |u| {
                if let Some(p) = u.partner.as_mut() {
                    p.scopes = Some(scopes.clone());
                }
            },
        )
    }

    /// A system write (`operation` by `system`, no policy question) over
    /// each of `candidates`, one transaction each: the user is re-read from
    /// the store and, if `due` still holds at the transaction's clock,
    /// changed by `change` and written (so a write that came first wins,
    /// and nothing is done twice), with the lifecycle `event` if any. Returns every candidate as re-read,
    /// changed or not.
    fn each_in_own_transaction(
        &self,
        (operation, event): (&str, Option<EventKind>),
        candidates: Vec<EntityUid>,
        due: impl Fn(&UserView, i64) -> bool,
        change: impl Fn(&mut UserView),
    ) -> Result<Vec<UserView>, OrchestratorError> {
        let mut out = Vec::with_capacity(candidates.len());
        for uid in candidates {
            let pack = self.authz.evaluator().current();
            let schema = pack.schema.as_ref();
            let outcome = self.commit(
                (operation, "system"),
                &AllowDecisions::default(),
                WriteLocks::users(&[&uid]),
                &mut |tx, now| {
                    let mut u = user_in(tx, &uid)?;
                    let due = due(&u, now);
                    if due {
                        change(&mut u);
                        if let Some(kind) = event {
                            tx.emit(kind, &u);
                        }
                    }
                    let writes = if due {
                        vec![Orchestrator::record(schema, &u)?]
                    } else {
                        Vec::new()
                    };
                    Ok((
                        writes,
                        Outcome {
                            user: u,
                            dismissed: None,
                        },
                    ))
                },
                schema,
            )?;
            out.push(outcome.user);
        }
        Ok(out)
    }

    /// Partner users (through their companies' referrers, not every user)
    /// for which `keep` holds, as the directory has them now.
    pub(crate) fn partners_where(
        &self,
        keep: impl Fn(&UserView) -> bool,
    ) -> Result<Vec<EntityUid>, OrchestratorError> {
        let mut out = Vec::new();
        for c in self.store.companies()? {
            let company =
                engine::uid_from_json("company", &json!({"type": "PartnerCompany", "id": c.id}))?;
            for uid in self.directory().referrers(&company) {
                let Some(json) = self.directory().get_json(&uid) else {
                    continue;
                };
                if UserView::from_json(&json).is_ok_and(|u| keep(&u)) && !out.contains(&uid) {
                    out.push(uid);
                }
            }
        }
        Ok(out)
    }

    /// Partner users whose access has ended at `now` and who are not dismissed.
    pub(crate) fn ended_candidates(&self, now: i64) -> Result<Vec<EntityUid>, OrchestratorError> {
        self.partners_where(|u| u.access_ended(now) && u.status != UserStatus::Dismissed)
    }
}
