//! Access requests: an administrator of an account makes a request code;
//! a person of a certified Gold partner company asks for access to the
//! account with it (the scopes and the length asked for); an administrator
//! approves — through the seat rules of an invitation, in one transaction,
//! optionally narrowing the scopes and shortening the length, never
//! widening — or declines; the sweep expires what nobody answered. Each
//! step is a policy question (`create_partner_request_code`,
//! `request_partner_access`, `approve_partner_request`,
//! `decline_partner_request`) and each change a change record naming its
//! Allow. It never knows HTTP or the command line.

use std::cell::Cell;

use cedar_policy::EntityUid;
use serde_json::{json, Value};

use crate::access::{self, parse_duration, Access, AccessRequest};
use crate::allowed::AllowDecisions;
use crate::error::{ConflictCode, InvalidCode, OrchestratorError};
use crate::events::EventKind;
use crate::input::{id_of, normalize_email, parse_uid};
use crate::ops::invite::NewPartner;
use crate::ops::request_code::{self, MAX_OPEN_CODES};
use crate::ops::seat::invitee_context;
use crate::orchestrator::Orchestrator;
use crate::request::{RequestStatus, RequestView};
use crate::store::{AccountTx, StoredCode, WriteLocks};
use crate::view::{CodeOutcome, RequestOutcome};
use crate::write::ScopedWrites;
use partnergate_core::clock;

/// Most pending requests per account (each person has at most one).
pub const MAX_PENDING_REQUESTS: usize = 20;

/// Wrong codes per person and account per window (an hour: the
/// orchestrator's `code_attempts`).
const WRONG_CODES_PER_PERSON: u32 = 5;

/// Wrong codes per account per window (all people together).
const WRONG_CODES_PER_ACCOUNT: u32 = 50;

const DAY_MS: i64 = 86_400_000;

fn invalid(code: InvalidCode, field: &'static str, message: String) -> OrchestratorError {
    OrchestratorError::Invalid {
        code,
        field,
        message,
    }
}

fn conflict(code: ConflictCode, message: String) -> OrchestratorError {
    OrchestratorError::Conflict { code, message }
}

/// The length asked for (`duration` only: a request's end counts from its
/// approval), within `max_access_days`; required by `require_access_end`.
fn asked_duration(
    ask: &AccessRequest,
    max_days: u32,
    required: bool,
) -> Result<Option<i64>, OrchestratorError> {
    if ask.expires_at.is_some() {
        return Err(invalid(
            InvalidCode::Access,
            "expires_at",
            "a request asks for a `duration` (e.g. `90d`): its end counts from the approval".into(),
        ));
    }
    let Some(d) = &ask.duration else {
        if required {
            return Err(invalid(
                InvalidCode::Access,
                "duration",
                "a duration is required (quotas.toml `require_access_end`): give `duration` (e.g. `90d`)".into(),
            ));
        }
        return Ok(None);
    };
    let ms = parse_duration(d).map_err(|m| invalid(InvalidCode::Access, "duration", m))?;
    if ms > i64::from(max_days).saturating_mul(DAY_MS) {
        return Err(invalid(
            InvalidCode::AccessTooLong,
            "duration",
            format!("`{d}` is longer than the maximum of {max_days} days (quotas.toml `max_access_days`)"),
        ));
    }
    Ok(Some(ms))
}

fn duration_json(ms: i64) -> Value {
    json!({"__extn": {"fn": "duration", "arg": format!("{ms}ms")}})
}

fn show(ms: i64) -> String {
    clock::format_ms(ms).unwrap_or_else(|| ms.to_string())
}

/// Inside a transaction: a request as stored now.
fn request_in(tx: &mut dyn AccountTx, uid: &EntityUid) -> Result<RequestView, OrchestratorError> {
    let r = tx
        .entity(&uid.to_string())?
        .ok_or_else(|| OrchestratorError::NotFound(format!("no request {uid}")))?;
    let json: Value = serde_json::from_str(&r.json)
        .map_err(|e| OrchestratorError::Corrupt(format!("{uid}: {e}")))?;
    RequestView::from_json(&json)
}

/// A pending request can be answered at `now`: else a replay (409
/// `request_answered`) or too late (409 `request_expired`).
fn still_open(r: &RequestView, now: i64) -> Result<(), OrchestratorError> {
    if r.status != RequestStatus::Pending {
        return Err(conflict(
            ConflictCode::RequestAnswered,
            format!(
                "request `{}` was already answered (status {})",
                r.id,
                r.status.as_str()
            ),
        ));
    }
    if r.expires_ms() <= now {
        return Err(conflict(
            ConflictCode::RequestExpired,
            format!(
                "request `{}` expired unanswered at {}: the partner may ask again",
                r.id, r.expires_at
            ),
        ));
    }
    Ok(())
}

impl Orchestrator {
    /// The requests to `account` (from the serving directory), newest first.
    pub fn requests(&self, account: &str) -> Result<Vec<RequestView>, OrchestratorError> {
        let account_uid = parse_uid("account", "Account", account)?;
        if self.directory().get(&account_uid).is_none() {
            return Err(OrchestratorError::NotFound(format!(
                "no account {account_uid}"
            )));
        }
        let mut out = Vec::new();
        for uid in self.directory().referrers(&account_uid) {
            if uid.type_name().to_string() != "PartnerRequest" {
                continue;
            }
            if let Some(json) = self.directory().get_json(&uid) {
                out.push(RequestView::from_json(&json)?);
            }
        }
        out.sort_by(|a, b| (&b.requested_at, &b.id).cmp(&(&a.requested_at, &a.id)));
        Ok(out)
    }

    fn request_from_memory(&self, uid: &EntityUid) -> Result<RequestView, OrchestratorError> {
        let json = self
            .directory()
            .get_json(uid)
            .ok_or_else(|| OrchestratorError::NotFound(format!("no request {uid}")))?;
        RequestView::from_json(&json)
    }

    /// Pending requests whose time has passed at `now` (through the
    /// registry companies' referrers, as the directory has them).
    fn expired_requests(&self, now: i64) -> Result<Vec<EntityUid>, OrchestratorError> {
        let mut out = Vec::new();
        for c in self.store.companies()? {
            let company = partnergate_policy::engine::uid_from_json(
                "company",
                &json!({"type": "PartnerCompany", "id": c.id}),
            )?;
            for uid in self.directory().referrers(&company) {
                if uid.type_name().to_string() != "PartnerRequest" || out.contains(&uid) {
                    continue;
                }
                let Some(json) = self.directory().get_json(&uid) else {
                    continue;
                };
                if RequestView::from_json(&json)
                    .is_ok_and(|r| r.status == RequestStatus::Pending && r.expires_ms() <= now)
                {
                    out.push(uid);
                }
            }
        }
        Ok(out)
    }
}

impl ScopedWrites<'_> {
    /// An administrator of `account` makes a request code to hand to a
    /// partner (`create_partner_request_code`): single use, it stops
    /// working after `request_code_ttl_days`; at most [`MAX_OPEN_CODES`]
    /// open per account. The code is in this answer only (the store keeps
    /// its hash), so an `Idempotency-Key` is refused: its replay would
    /// have to keep the code.
    pub fn create_request_code(
        &self,
        account: &str,
        actor: &str,
    ) -> Result<CodeOutcome, OrchestratorError> {
        if self.scope.idempotency.is_some() {
            return Err(OrchestratorError::Request(
                partnergate_policy::engine::RequestError::field(
                    "Idempotency-Key",
                    "not accepted when making a request code: the code is shown once and never stored, so no answer could be replayed",
                ),
            ));
        }
        let actor = parse_uid("actor", "User", actor)?;
        let account_uid = parse_uid("account", "Account", account)?;
        let account = id_of(&account_uid);
        let decided = AllowDecisions::by(self.ask(
            &actor,
            "create_partner_request_code",
            &account_uid,
            None,
        )?);
        let ttl = i64::from(self.rules.current().request_code_ttl_days) * DAY_MS;
        let pack = self.authz.evaluator().current();
        let actor_s = actor.to_string();
        self.commit(
            ("partner.request_code", &actor_s),
            &decided,
            WriteLocks::account(&account),
            &mut |tx, now| {
                let open = tx.open_request_codes(&account, now)?;
                if open.len() >= MAX_OPEN_CODES {
                    return Err(conflict(
                        ConflictCode::TooManyOpen,
                        format!(
                            "account `{account}` has {MAX_OPEN_CODES} open request codes, the most it may: wait until one is used or expires (the oldest expires at {})",
                            open.first().map_or_else(String::new, |c| show(c.expires_at))
                        ),
                    ));
                }
                let code = request_code::new_code();
                let normal = request_code::normalize(&code)
                    .ok_or_else(|| OrchestratorError::Corrupt("a new code reads back".into()))?;
                let expires_at = now.saturating_add(ttl);
                tx.add_request_code(&StoredCode {
                    hash: request_code::hash(&account, &normal),
                    account: account.clone(),
                    created_by: actor_s.clone(),
                    created_at: now,
                    expires_at,
                })?;
                tracing::info!(account, actor = %actor_s, expires_at = %show(expires_at), "request code made");
                Ok((
                    Vec::new(),
                    CodeOutcome {
                        account: account.clone(),
                        code,
                        expires_at: show(expires_at),
                    },
                ))
            },
            pack.schema.as_ref(),
        )
    }

    /// The person of `email` asks for access to `account`
    /// (`request_partner_access`, asked as its registry company): the
    /// scopes and the `duration` asked for, with a request `code` of the
    /// account when `request_code_required` (a wrong one is counted; too
    /// many lately are refused until the window passes). One pending
    /// request per person and account, at most [`MAX_PENDING_REQUESTS`]
    /// per account. The request expires after `request_ttl_days`.
    #[allow(clippy::too_many_lines)] // the documented check order, then one transaction's closure: read best top to bottom (to split: the code check and the narrowing into helpers)
    pub fn request_access(
        &self,
        account: &str,
        email: &str,
        code: Option<&str>,
        ask: &AccessRequest,
    ) -> Result<RequestOutcome, OrchestratorError> {
        let email = normalize_email(email)?;
        let account_uid = parse_uid("account", "Account", account)?;
        let account = id_of(&account_uid);
        let quotas = self.rules.current();
        let pack = self.authz.evaluator().current();
        let schema = pack.schema.as_ref();
        let scopes = access::resolve_scopes(ask, &quotas, schema)?;
        let duration = asked_duration(ask, quotas.max_access_days, quotas.require_access_end)?;
        let company = self
            .store
            .company_of_email(&email)?
            .filter(|c| c.certified)
            .ok_or_else(|| OrchestratorError::NotCertified {
                email: email.clone(),
            })?;
        if self.directory().get(&account_uid).is_none() {
            return Err(OrchestratorError::NotFound(format!(
                "no account {account_uid}"
            )));
        }
        let keys = [
            (account.clone(), WRONG_CODES_PER_ACCOUNT),
            (format!("{account}\0{email}"), WRONG_CODES_PER_PERSON),
        ];
        let now = self.now();
        for (key, limit) in &keys {
            if let Err(wait) = self.code_attempts.check(key, *limit, now) {
                let secs = u64::try_from((wait + 999) / 1000).unwrap_or(1);
                return Err(OrchestratorError::TooManyAttempts {
                    message: format!(
                        "too many wrong request codes for account `{account}` lately: try again in {secs} s"
                    ),
                    retry_after_secs: secs,
                });
            }
        }
        let wrong_code = || {
            for (key, _) in &keys {
                self.code_attempts.fail(key, self.now());
            }
            OrchestratorError::RequestCode(format!(
                "a request to account `{account}` needs a request code its administrator made for you (single use, it expires): this one is not open"
            ))
        };
        let code_hash = if quotas.request_code_required {
            match code.map(request_code::normalize) {
                Some(Some(c)) => Some(request_code::hash(&account, &c)),
                Some(None) => return Err(wrong_code()),
                // No code at all is no guess: refused, not counted.
                None => return Err(OrchestratorError::RequestCode(format!(
                    "a request to account `{account}` needs a request code its administrator made for you: give `code`"
                ))),
            }
        } else {
            None
        };
        let principal = partnergate_policy::engine::uid_from_json(
            "company",
            &json!({"type": "PartnerCompany", "id": company.id}),
        )?;
        let mut context = invitee_context(&company);
        context["access"] = json!({"scopes": scopes});
        if let Some(ms) = duration {
            context["access"]["duration"] = duration_json(ms);
        }
        let decided = AllowDecisions::by(self.ask(
            &principal,
            "request_partner_access",
            &account_uid,
            Some(context),
        )?);
        let ttl = i64::from(quotas.request_ttl_days) * DAY_MS;
        let code_was_wrong = Cell::new(false);
        let result = self.commit(
            ("partner.request", &principal.to_string()),
            &decided,
            WriteLocks::account(&account),
            &mut |tx, now| {
                if let Some(h) = &code_hash {
                    let open = tx.open_request_codes(&account, now)?;
                    let found = request_code::matching(&open, h).is_some();
                    if !found || !tx.use_request_code(h, now, &email)? {
                        code_was_wrong.set(true);
                        return Err(OrchestratorError::RequestCode(String::new()));
                    }
                }
                // The registry entry the question was about, still.
                let stored = tx.company_of_email(&email)?;
                if stored.as_ref().is_none_or(|c| {
                    !c.certified || c.id != company.id || c.status != company.status
                }) {
                    return Err(conflict(
                        ConflictCode::RegistryChanged,
                        format!("the partner registry entry of {email} changed during the request; try again"),
                    ));
                }
                let mut pending = Vec::new();
                for r in tx.account_requests(&account)? {
                    let json: Value = serde_json::from_str(&r.json)
                        .map_err(|e| OrchestratorError::Corrupt(e.to_string()))?;
                    let r = RequestView::from_json(&json)?;
                    if r.open_at(now) {
                        pending.push(r);
                    }
                }
                if let Some(p) = pending.iter().find(|r| r.email == email) {
                    return Err(conflict(
                        ConflictCode::RequestPending,
                        format!("{email} already has a pending request to account `{account}` ({}): wait for its answer", p.id),
                    ));
                }
                if pending.len() >= MAX_PENDING_REQUESTS {
                    return Err(conflict(
                        ConflictCode::TooManyOpen,
                        format!("account `{account}` has {MAX_PENDING_REQUESTS} pending requests, the most it may: ask again once they are answered"),
                    ));
                }
                let request = RequestView {
                    id: format!("req-{:016x}", rand::random::<u64>()),
                    account: account.clone(),
                    email: email.clone(),
                    company: company.id.clone(),
                    status: RequestStatus::Pending,
                    scopes: scopes.clone(),
                    duration_ms: duration,
                    requested_at: show(now),
                    expires_at: show(now.saturating_add(ttl)),
                };
                let record = Orchestrator::entity_record(
                    schema,
                    request.to_entity_json(),
                    ("PartnerRequest", "request"),
                )?;
                Ok((
                    vec![record],
                    RequestOutcome {
                        request,
                        user: None,
                        dismissed: None,
                    },
                ))
            },
            schema,
        );
        if code_was_wrong.get() {
            return Err(wrong_code());
        }
        let out = result?;
        tracing::info!(account, request = %out.request.id, email, "partner access requested");
        Ok(out)
    }

    /// An administrator approves a request (`approve_partner_request`):
    /// the scopes asked for or fewer (`scopes`), the length asked for or
    /// shorter (`duration`): anything wider is
    /// [`InvalidCode::AccessWidened`]. In one transaction, exactly like an
    /// invitation: Gold and certified, one company, the seat limit and
    /// the swap (`replace`); the partner is active and verified at once
    /// (it asked; the registry is read in the transaction). A request
    /// answered already is [`ConflictCode::RequestAnswered`].
    #[allow(clippy::too_many_lines)] // the documented check order, then one transaction's closure: read best top to bottom (to split: the code check and the narrowing into helpers)
    pub fn approve_request(
        &self,
        request: &str,
        actor: &str,
        (replace, narrowed): (Option<&str>, &AccessRequest),
    ) -> Result<RequestOutcome, OrchestratorError> {
        let actor = parse_uid("actor", "User", actor)?;
        let req_uid = parse_uid("request", "PartnerRequest", request)?;
        let replace_uid = replace
            .map(|r| parse_uid("replace", "User", r))
            .transpose()?;
        let current = self.request_from_memory(&req_uid)?;
        let now = self.now();
        still_open(&current, now)?;
        let quotas = self.rules.current();
        let pack = self.authz.evaluator().current();
        let schema = pack.schema.as_ref();
        let scopes = match &narrowed.scopes {
            Some(_) => {
                let given = access::resolve_scopes(narrowed, &quotas, schema)?;
                if let Some(s) = given.iter().find(|s| !current.scopes.contains(s)) {
                    return Err(invalid(
                        InvalidCode::AccessWidened,
                        "scopes",
                        format!(
                            "scope `{s}` was not asked for: an approval narrows the scopes ({}), never widens them",
                            current.scopes.join(", ")
                        ),
                    ));
                }
                given
            }
            None => current.scopes.clone(),
        };
        let given = asked_duration(narrowed, quotas.max_access_days, false)?;
        let duration = match (given, current.duration_ms) {
            (Some(g), Some(asked)) if g > asked => {
                return Err(invalid(
                    InvalidCode::AccessWidened,
                    "duration",
                    format!(
                        "longer than the {} asked for: an approval shortens the length, never lengthens it",
                        show_duration(asked)
                    ),
                ))
            }
            (Some(g), _) => Some(g),
            (None, asked) => asked,
        };
        let max = i64::from(quotas.max_access_days).saturating_mul(DAY_MS);
        if duration.is_some_and(|d| d > max) {
            return Err(invalid(
                InvalidCode::AccessTooLong,
                "duration",
                format!(
                    "the length asked for is more than today's maximum of {} days (quotas.toml `max_access_days`): approve it shorter",
                    quotas.max_access_days
                ),
            ));
        }
        if duration.is_none() && quotas.require_access_end {
            return Err(invalid(
                InvalidCode::Access,
                "duration",
                "an end is required (quotas.toml `require_access_end`): give `duration`".into(),
            ));
        }
        let access = Access {
            expires_at: duration.map(|d| now.saturating_add(d)),
            scopes,
        };
        let mut context = access.context();
        if let Some(d) = duration {
            context["duration"] = duration_json(d);
        }
        let account_uid = parse_uid("account", "Account", &current.account)?;
        let (asked, by) = self.ask_partner_access(
            &actor,
            "approve_partner_request",
            &req_uid,
            &account_uid,
            (&current.email, context),
        )?;
        let decided = self.with_replace(&actor, by, replace_uid.as_ref())?;
        let replace_id = replace_uid.as_ref().map(id_of);
        let out = self.commit(
            ("partner.request_approved", &actor.to_string()),
            &decided,
            WriteLocks::account(&current.account),
            &mut |tx, now| {
                let mut r = request_in(tx, &req_uid)?;
                still_open(&r, now)?;
                if asked.as_ref().is_some_and(|c| c.id != r.company) {
                    return Err(conflict(
                        ConflictCode::RegistryChanged,
                        format!(
                            "{} asked as a person of `{}` and is now listed under another company: decline the request",
                            r.email, r.company
                        ),
                    ));
                }
                let partner = NewPartner {
                    account: &r.account,
                    email: &r.email,
                    name: None,
                    replace: replace_id.as_deref(),
                    asked: asked.as_ref(),
                    access: &access,
                    active: true,
                };
                let (mut writes, o) = self.seat_new_partner(tx, schema, &partner, now)?;
                tx.emit_seated(EventKind::Approved, &o);
                r.status = RequestStatus::Approved;
                writes.push(Orchestrator::entity_record(
                    schema,
                    r.to_entity_json(),
                    ("PartnerRequest", "request"),
                )?);
                Ok((
                    writes,
                    RequestOutcome {
                        request: r,
                        user: Some(o.user),
                        dismissed: o.dismissed,
                    },
                ))
            },
            schema,
        )?;
        tracing::info!(request = %out.request.id, account = %out.request.account, "partner request approved");
        Ok(out)
    }

    /// An administrator declines a request (`decline_partner_request`).
    pub fn decline_request(
        &self,
        request: &str,
        actor: &str,
    ) -> Result<RequestOutcome, OrchestratorError> {
        let actor = parse_uid("actor", "User", actor)?;
        let req_uid = parse_uid("request", "PartnerRequest", request)?;
        let current = self.request_from_memory(&req_uid)?;
        still_open(&current, self.now())?;
        let decided =
            AllowDecisions::by(self.ask(&actor, "decline_partner_request", &req_uid, None)?);
        self.answer_in_own_transaction(
            &req_uid,
            &current.account,
            ("partner.request_declined", &actor.to_string()),
            &decided,
            |r, now| {
                still_open(r, now)?;
                r.status = RequestStatus::Declined;
                Ok(true)
            },
        )
    }

    /// The sweep: every pending request whose time has passed is marked
    /// expired, one transaction each (re-read: an answer that came first
    /// wins), a change record `partner.request_expired` by `system`.
    pub fn expire_requests(&self) -> Result<Vec<RequestView>, OrchestratorError> {
        let mut out = Vec::new();
        for uid in self.expired_requests(self.now())? {
            let Some(current) = self
                .directory()
                .get_json(&uid)
                .and_then(|j| RequestView::from_json(&j).ok())
            else {
                continue;
            };
            let o = self.answer_in_own_transaction(
                &uid,
                &current.account,
                ("partner.request_expired", "system"),
                &AllowDecisions::default(),
                |r, now| {
                    let due = r.status == RequestStatus::Pending && r.expires_ms() <= now;
                    if due {
                        r.status = RequestStatus::Expired;
                    }
                    Ok(due)
                },
            )?;
            if o.request.status == RequestStatus::Expired {
                out.push(o.request);
            }
        }
        Ok(out)
    }

    /// A request re-read in its own transaction, changed by `change` at the
    /// transaction's clock (written only when it says so).
    fn answer_in_own_transaction(
        &self,
        uid: &EntityUid,
        account: &str,
        (operation, actor): (&str, &str),
        decided: &AllowDecisions,
        change: impl Fn(&mut RequestView, i64) -> Result<bool, OrchestratorError>,
    ) -> Result<RequestOutcome, OrchestratorError> {
        let pack = self.authz.evaluator().current();
        let schema = pack.schema.as_ref();
        self.commit(
            (operation, actor),
            decided,
            WriteLocks::account(account),
            &mut |tx, now| {
                let mut r = request_in(tx, uid)?;
                let writes = if change(&mut r, now)? {
                    vec![Orchestrator::entity_record(
                        schema,
                        r.to_entity_json(),
                        ("PartnerRequest", "request"),
                    )?]
                } else {
                    Vec::new()
                };
                Ok((
                    writes,
                    RequestOutcome {
                        request: r,
                        user: None,
                        dismissed: None,
                    },
                ))
            },
            schema,
        )
    }
}

/// A length for a message (`30d`, `36h`, or seconds).
fn show_duration(ms: i64) -> String {
    if ms % DAY_MS == 0 {
        format!("{}d", ms / DAY_MS)
    } else if ms % 3_600_000 == 0 {
        format!("{}h", ms / 3_600_000)
    } else {
        format!("{}s", ms / 1000)
    }
}
