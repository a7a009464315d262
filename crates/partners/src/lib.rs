//! The partner orchestrator: the partner rules that need state — at most N
//! active partner users per account, all from one partner company, the swap
//! of the fourth, dismiss and rehire, verification against the partner
//! registry — kept true under concurrent requests and crashes.
//!
//! Every operation runs in the same order:
//! 1. input checks (a well-formed email: [`OrchestratorError::InvalidEmail`]);
//! 2. **policy first**: [`Authz`] decides whether the actor may do it (a Deny
//!    is [`OrchestratorError::Denied`] with the policies' reasons);
//! 3. one store transaction ([`store::OrchestratorStore::transact`]) that
//!    re-reads the account's users and the registry from the database, runs
//!    the counting rules of [`rules::Quotas`] — seat free or `replace` given,
//!    same company as the active partners, certified partner email — and
//!    writes the changed users, all or nothing — run inside
//!    [`Directory::commit_with`], so that
//! 4. the in-memory [`Directory`] is updated with what was committed under
//!    the directory's one writer lock (the lock every entity writer takes),
//!    and one change record per written entity names the Allow decision of
//!    step 2 and the request id.
//!
//! Writes run through [`Orchestrator::with`] and a [`WriteScope`] value
//! (deadline, `Idempotency-Key`, request id): no thread state.
//! HTTP and the CLI are thin adapters over [`Orchestrator`].
//!
//! Depends on `partnergate-core`, `partnergate-audit` and
//! `partnergate-policy`; it must never know HTTP or the command line.

#![warn(missing_docs, clippy::too_many_lines)]

pub mod access;
pub mod activity;
pub mod error;
pub mod postgres;
pub mod rules;
pub mod runtime;
pub mod scopes;
pub mod sqlite;
pub mod status;
pub mod store;
pub mod sweep;
pub mod user;

pub use error::{ConflictCode, InvalidCode, OrchestratorError};
pub use status::{ListStatus, UserStatus};
pub use user::{PartnerView, UserView};

use std::sync::Arc;

use cedar_policy::{Entity, EntityUid};
use serde::Serialize;
use serde_json::{json, Value};

use access::{Access, AccessRequest};
use partnergate_audit as audit;
use partnergate_core::authz::{Authz, Query};
use partnergate_core::directory::{self, Directory};
use partnergate_core::store::EntityRecord;
use partnergate_policy::engine::{self, RequestError};
use rules::QuotaRules;
use store::{AccountTx, OrchestratorStore, RegistryCompany};

// Reading a stored user is the orchestrator's, so the views in `user.rs`
// need not know its errors.
impl UserView {
    /// Read a stored `User` entity JSON.
    pub fn from_json(json: &Value) -> Result<Self, OrchestratorError> {
        let bad = |what: &str| OrchestratorError::Corrupt(format!("{what} in {json}"));
        let id = json
            .pointer("/uid/id")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("no uid"))?;
        let attrs = json.get("attrs").ok_or_else(|| bad("no attrs"))?;
        let s = |k: &str| attrs.get(k).and_then(Value::as_str).map(str::to_string);
        let b = |k: &str| attrs.get(k).and_then(Value::as_bool).unwrap_or(false);
        let partner = attrs.get("partner").map(|p| PartnerView {
            company: p
                .pointer("/company/__entity/id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            verified: p.get("verified").and_then(Value::as_bool).unwrap_or(false),
            expires_at: p
                .get("expires_at")
                .and_then(|e| e.pointer("/__extn/arg").or_else(|| e.get("arg")))
                .and_then(Value::as_str)
                .map(str::to_string),
            scopes: p.get("scopes").and_then(Value::as_array).map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            }),
        });
        Ok(UserView {
            id: id.to_string(),
            email: s("email").ok_or_else(|| bad("no email"))?,
            account: attrs
                .pointer("/account/__entity/id")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("no account"))?
                .to_string(),
            status: s("status").ok_or_else(|| bad("no status"))?.into(),
            is_admin: b("is_admin"),
            two_factor: b("two_factor"),
            partner,
        })
    }

    fn from_record(r: &EntityRecord) -> Result<Self, OrchestratorError> {
        let json: Value =
            serde_json::from_str(&r.json).map_err(|e| OrchestratorError::Corrupt(e.to_string()))?;
        Self::from_json(&json)
    }
}

/// The longest an operation waits for its authorizing decision's record to
/// be durable under `--audit-required`.
const AUDIT_ACK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// One line of the employees list.
#[derive(Debug, Clone, Serialize)]
pub struct ListedUser {
    /// The user (its fields inline in the JSON line).
    #[serde(flatten)]
    pub user: UserView,
    /// "administrator", "employee", "partner", "dismissed" or "invited".
    pub list_status: ListStatus,
    /// "Partner" for a partner user (whatever the status).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mark: Option<&'static str>,
}

/// Seat counts of an account. Partners count as neither paid users nor administrators.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Seats {
    /// The account's id (without the type).
    pub account: String,
    /// Users who are not partners and not dismissed (invitations included).
    pub paid_users: usize,
    /// Of those, the administrators.
    pub administrators: usize,
    /// Partner users holding a seat (invited or active).
    pub partners: usize,
    /// The serving `max_active_partners`: most partner seats per account.
    pub partner_limit: u32,
}

/// The result of a write: the user it made or changed, and the partner it
/// dismissed to free a seat, if any.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// The user as written (after the change).
    pub user: UserView,
    /// The partner dismissed by `replace` in the same transaction, as written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dismissed: Option<UserView>,
}

/// What the caller (the HTTP adapter, the CLI) asks of the writes it runs
/// through [`Orchestrator::with`]: a deadline, checked once the write
/// transaction has begun (past it, nothing is applied:
/// [`OrchestratorError::TimedOut`]; a transaction that has begun runs to
/// completion and answers), an `Idempotency-Key` whose answer is stored in
/// the write's transaction, and the request id (`X-Request-ID`) that the
/// operation's decision and change records carry.
#[derive(Debug, Clone, Default)]
pub struct WriteScope {
    /// Past this instant when the transaction begins, nothing is applied
    /// ([`OrchestratorError::TimedOut`]); `None`: no deadline.
    pub deadline: Option<std::time::Instant>,
    /// The request's `Idempotency-Key`, if it sent one.
    pub idempotency: Option<Idempotency>,
    /// The request id the decision and change records carry.
    pub request_id: Option<String>,
}

/// An `Idempotency-Key`, the fingerprint of its request, and the HTTP status
/// a success answers (the body is the operation's JSON result).
#[derive(Debug, Clone)]
pub struct Idempotency {
    /// The key as the client sent it (trimmed; checked by the adapter).
    pub key: String,
    /// A digest of the request (method, route, body): the same key with
    /// another fingerprint is [`OrchestratorError::IdempotencyKeyReused`].
    pub fingerprint: String,
    /// The HTTP status a success answers, stored with the body.
    pub status: u16,
}

impl Idempotency {
    /// The answer to give for a remembered key: the first answer if the
    /// request is the same, else [`OrchestratorError::IdempotencyKeyReused`].
    pub fn replay(&self, r: partnergate_core::store::Remembered) -> OrchestratorError {
        if r.fingerprint == self.fingerprint {
            OrchestratorError::Replayed(r)
        } else {
            OrchestratorError::IdempotencyKeyReused
        }
    }

    /// The answer to remember under this key: the success status and
    /// `result` (the operation's result) as the JSON body.
    fn answer(
        &self,
        result: &impl Serialize,
    ) -> Result<partnergate_core::store::Remembered, OrchestratorError> {
        Ok(partnergate_core::store::Remembered {
            fingerprint: self.fingerprint.clone(),
            status: self.status,
            body: serde_json::to_string(result)
                .map_err(|e| OrchestratorError::Corrupt(e.to_string()))?,
        })
    }
}

/// An operation inside [`Orchestrator::commit`]'s transaction: the records
/// to write and the outcome to answer. Its second argument is the current
/// time read inside the transaction, once the write lock is held: every
/// time-dependent check of a write judges at that instant (a reading taken
/// before waiting for the lock could be older than a commit it follows).
type OutcomeOp<'a> = dyn FnMut(&mut dyn AccountTx, i64) -> Result<(Vec<EntityRecord>, Outcome), OrchestratorError>
    + 'a;

/// Orchestrator operations over the policies, the directory and the store.
/// Its writes go through [`Orchestrator::with`]; each runs its store
/// transaction inside [`Directory::commit_with`], the directory's one write
/// path, so store and memory apply every writer's writes in the same order.
pub struct Orchestrator {
    authz: Authz,
    store: Arc<dyn OrchestratorStore>,
    rules: Arc<QuotaRules>,
}

/// The orchestrator's write operations under one [`WriteScope`] (see
/// [`Orchestrator::with`]): the scope is a value the operations read, not
/// state of the thread they run on.
pub struct Call<'a> {
    orch: &'a Orchestrator,
    scope: WriteScope,
}

impl std::ops::Deref for Call<'_> {
    type Target = Orchestrator;
    fn deref(&self) -> &Orchestrator {
        self.orch
    }
}

/// The Allow decisions an operation's writes rest on: `by` for each record,
/// except the records `others` names (the replaced partner: `dismiss_user`).
#[derive(Debug, Default)]
struct Decided {
    by: Option<String>,
    others: Vec<(String, String)>,
}

impl Decided {
    fn by(id: String) -> Self {
        Decided {
            by: Some(id),
            others: Vec::new(),
        }
    }

    /// The decision id a change record of `uid` (Cedar syntax) names.
    fn of(&self, uid: &str) -> Option<String> {
        self.others
            .iter()
            .find(|(u, _)| u == uid)
            .map(|(_, id)| id.clone())
            .or_else(|| self.by.clone())
    }
}

/// Lower-case, trimmed email if it is well formed.
pub fn normalize_email(raw: &str) -> Result<String, OrchestratorError> {
    let email = raw.trim().to_lowercase();
    let bad = || OrchestratorError::InvalidEmail {
        email: raw.to_string(),
    };
    let (local, domain) = email.split_once('@').ok_or_else(bad)?;
    let ok = !local.is_empty()
        && local.len() <= 64
        && email.len() <= 254
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..")
        && email
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "@.!#$%&'*+/=?^_`{|}~-".contains(c));
    if ok {
        Ok(email)
    } else {
        Err(bad())
    }
}

/// A uid from `id` or `Type::"id"` syntax.
pub fn parse_uid(field: &str, ty: &str, raw: &str) -> Result<EntityUid, RequestError> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Err(RequestError::field(field, "must not be empty"));
    }
    let uid = if raw.contains("::") {
        engine::parse_uid(field, raw)?
    } else {
        engine::uid_from_json(field, &json!({"type": ty, "id": raw}))?
    };
    if uid.type_name().to_string() != ty {
        return Err(RequestError::field(
            field,
            format!("expected a {ty}, got {uid}"),
        ));
    }
    Ok(uid)
}

fn id_of(uid: &EntityUid) -> String {
    uid.id().unescaped().to_string()
}

/// A readable, unique user id: a slug of the name (or the email's local part) and a random suffix.
fn new_user_id(email: &str, name: Option<&str>) -> String {
    let base = name
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| email.split('@').next().unwrap_or("user"));
    let mut slug = String::new();
    for c in base.chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.ends_with('-') && !slug.is_empty() {
            slug.push('-');
        }
        if slug.len() >= 24 {
            break;
        }
    }
    let slug = slug.trim_end_matches('-');
    let suffix: u32 = rand::random();
    format!(
        "{}-{:06x}",
        if slug.is_empty() { "user" } else { slug },
        suffix & 0xff_ffff
    )
}

fn not_partner(uid: &EntityUid) -> OrchestratorError {
    OrchestratorError::Conflict {
        code: ConflictCode::NotPartner,
        message: format!("{uid} is not a partner user"),
    }
}

/// End `u`'s partner access at `now`: dismissed, its end no later than now.
fn end_now(uid: &EntityUid, u: &mut UserView, now: i64) -> Result<(), OrchestratorError> {
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

/// Inside a write's transaction, at its clock reading `now`: the end being
/// given must still be ahead (it was checked, and the policies asked about
/// it, before the write lock was held; past it, the access would be
/// written already ended).
fn end_still_ahead(end: Option<i64>, now: i64) -> Result<(), OrchestratorError> {
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
fn partner_view(company: String, verified: bool, access: &Access) -> PartnerView {
    PartnerView {
        company,
        verified,
        expires_at: access
            .expires_at
            .and_then(partnergate_core::clock::format_ms),
        scopes: Some(access.scopes.clone()),
    }
}

fn invitee_context(c: &RegistryCompany) -> Value {
    json!({"invitee": {
        "company": {"__entity": {"type": "PartnerCompany", "id": c.id}},
        "status": c.status,
        "certified": c.certified,
    }})
}

/// Inside a transaction: the account's users as stored now.
fn users_in(tx: &mut dyn AccountTx, account: &str) -> Result<Vec<UserView>, OrchestratorError> {
    tx.account_users(account)?
        .iter()
        .map(UserView::from_record)
        .collect()
}

fn user_in(tx: &mut dyn AccountTx, uid: &EntityUid) -> Result<UserView, OrchestratorError> {
    let r = tx
        .entity(&uid.to_string())?
        .ok_or_else(|| OrchestratorError::NotFound(format!("no user {uid}")))?;
    UserView::from_record(&r)
}

/// Registry company `c`, number `i` of a `put_companies` request, checked
/// and normalised (trimmed id; non-empty name; trimmed, lower-case status;
/// its emails normalised, sorted, without duplicates), with its
/// `PartnerCompany` entity validated against `schema` and as a record.
fn clean_company(
    schema: Option<&cedar_policy::Schema>,
    i: usize,
    mut c: RegistryCompany,
) -> Result<(RegistryCompany, EntityRecord, Entity), OrchestratorError> {
    let invalid = |field: &'static str, message: String| OrchestratorError::Invalid {
        code: InvalidCode::Company,
        field,
        message: format!("company #{i}: {message}"),
    };
    c.id = c.id.trim().to_string();
    if c.id.is_empty() {
        return Err(invalid("id", "must not be empty".into()));
    }
    if c.name.trim().is_empty() {
        return Err(invalid("name", format!("`{}`: must not be empty", c.id)));
    }
    c.status = c.status.trim().to_lowercase();
    if c.status.is_empty() {
        return Err(invalid("status", format!("`{}`: must not be empty", c.id)));
    }
    let mut emails = Vec::with_capacity(c.emails.len());
    for e in &c.emails {
        emails.push(normalize_email(e).map_err(|_| {
            invalid(
                "emails",
                format!("`{}`: `{e}` is not a well-formed email address", c.id),
            )
        })?);
    }
    emails.sort();
    emails.dedup();
    c.emails = emails;
    let json = json!({"uid": {"type": "PartnerCompany", "id": c.id},
        "attrs": {"name": c.name, "status": c.status, "certified": c.certified},
        "parents": []});
    let entity = Entity::from_json_value(json.clone(), schema)
        .map_err(|e| invalid("company", format!("`{}`: {e}", c.id)))?;
    let record = EntityRecord {
        uid: entity.uid().to_string(),
        entity_type: "PartnerCompany".into(),
        json: json.to_string(),
    };
    Ok((c, record, entity))
}

/// What the partner checks of one operation need.
struct SeatRequest<'a> {
    account: &'a str,
    email: &'a str,
    /// The user who gets the seat, if already a user (excluded from the count).
    subject: Option<&'a str>,
    replace: Option<&'a str>,
    /// The certified registry company the policies were asked about (if any).
    asked: Option<&'a RegistryCompany>,
}

impl Orchestrator {
    /// The orchestrator over `authz` (its evaluator, directory and decision
    /// log) and `store` (the orchestrator's tables, in the directory's
    /// database); binds `rules` to the evaluator, so the quotas are the
    /// serving pack's.
    pub fn new(authz: Authz, store: Arc<dyn OrchestratorStore>, rules: Arc<QuotaRules>) -> Self {
        rules.bind(authz.evaluator());
        Orchestrator {
            authz,
            store,
            rules,
        }
    }

    /// The write operations under `scope` (deadline, `Idempotency-Key`,
    /// request id); `WriteScope::default()` for none.
    pub fn with(&self, scope: WriteScope) -> Call<'_> {
        Call { orch: self, scope }
    }

    /// The quota rules the seat checks read.
    pub fn rules(&self) -> &Arc<QuotaRules> {
        &self.rules
    }

    /// The decision path the operations ask first.
    pub fn authz(&self) -> &Authz {
        &self.authz
    }

    fn directory(&self) -> &Arc<Directory> {
        self.authz.directory()
    }

    /// The current time, from the clock decisions read (ms since the epoch).
    pub fn now(&self) -> i64 {
        self.authz.clock().now_ms()
    }

    /// The access `req` asks for, checked now against the serving quotas
    /// and the schema's scopes.
    fn access(&self, req: &AccessRequest) -> Result<Access, OrchestratorError> {
        let pack = self.authz.evaluator().current();
        access::resolve(req, self.now(), &self.rules.current(), pack.schema.as_ref())
    }

    /// The counting rules, inside the transaction, in the documented order:
    /// seat free or `replace` given (409), same company (409), certified
    /// partner email (422). Returns the company and the dismissed partner.
    fn seat_checks(
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

    /// A user view as an entity record, validated against the schema.
    fn record(
        schema: Option<&cedar_policy::Schema>,
        u: &UserView,
    ) -> Result<EntityRecord, OrchestratorError> {
        let json = u.to_entity_json();
        let entity = Entity::from_json_value(json.clone(), schema).map_err(|e| {
            OrchestratorError::Invalid {
                code: InvalidCode::User,
                field: "user",
                message: e.to_string(),
            }
        })?;
        Ok(EntityRecord {
            uid: entity.uid().to_string(),
            entity_type: "User".into(),
            json: json.to_string(),
        })
    }

    fn user_from_memory(&self, uid: &EntityUid) -> Result<UserView, OrchestratorError> {
        let json = self
            .directory()
            .get_json(uid)
            .ok_or_else(|| OrchestratorError::NotFound(format!("no user {uid}")))?;
        UserView::from_json(&json)
    }

    /// Every user of an account (from the serving directory).
    fn account_users(&self, account: &str) -> Result<Vec<UserView>, OrchestratorError> {
        let account_uid = parse_uid("account", "Account", account)?;
        let account = id_of(&account_uid);
        let mut users = Vec::new();
        // The users pointing at the account (index lookup), not every user.
        for uid in self.directory().referrers(&account_uid) {
            if uid.type_name().to_string() != "User" {
                continue;
            }
            if let Some(json) = self.directory().get_json(&uid) {
                let u = UserView::from_json(&json)?;
                if u.account == account {
                    users.push(u);
                }
            }
        }
        if users.is_empty() && self.directory().get(&account_uid).is_none() {
            return Err(OrchestratorError::NotFound(format!(
                "no account {account_uid}"
            )));
        }
        Ok(users)
    }

    /// The employees list, by status precedence (administrator/employee,
    /// partner, dismissed, invited), then email.
    pub fn users(&self, account: &str) -> Result<Vec<ListedUser>, OrchestratorError> {
        let users = self.account_users(account)?;
        // The clock is read after the users: the state is never newer than
        // the instant it is judged at (an earlier reading could count an
        // access that ended before a newer partner took its seat).
        let now = self.now();
        let mut list: Vec<ListedUser> = users
            .into_iter()
            .map(|u| ListedUser {
                list_status: u.list_status(now),
                mark: u.partner.as_ref().map(|_| "Partner"),
                user: u,
            })
            .collect();
        list.sort_by(|a, b| {
            (a.list_status.rank(), &a.user.email).cmp(&(b.list_status.rank(), &b.user.email))
        });
        Ok(list)
    }

    /// Seat counts: partners are neither paid users nor administrators.
    pub fn seats(&self, account: &str) -> Result<Seats, OrchestratorError> {
        let users = self.account_users(account)?;
        let now = self.now(); // after the read, as in `users`
        let holding: Vec<&UserView> = users
            .iter()
            .filter(|u| u.status != UserStatus::Dismissed)
            .collect();
        Ok(Seats {
            account: id_of(&parse_uid("account", "Account", account)?),
            paid_users: holding.iter().filter(|u| u.partner.is_none()).count(),
            administrators: holding
                .iter()
                .filter(|u| u.partner.is_none() && u.is_admin)
                .count(),
            partners: users.iter().filter(|u| u.holds_partner_seat(now)).count(),
            partner_limit: self.rules.current().max_active_partners,
        })
    }

    /// The registry.
    pub fn companies(&self) -> Result<Vec<RegistryCompany>, OrchestratorError> {
        Ok(self.store.companies()?)
    }
}

impl Call<'_> {
    /// Ask the policies (the decision record carries the scope's request
    /// id); an Allow gives its decision id, which the operation's change
    /// records name; a Deny is an error carrying the reasons.
    fn ask(
        &self,
        actor: &EntityUid,
        action: &str,
        resource: &EntityUid,
        context: Option<Value>,
    ) -> Result<String, OrchestratorError> {
        let q = Query::new(
            actor.clone(),
            engine::uid_from_json("action", &json!({"type": "Action", "id": action}))?,
            resource.clone(),
        )
        .with_context(context)
        .with_request_id(self.scope.request_id.clone());
        let answer = self.authz.is_authorized(&q)?;
        // Called off the async threads (spawn_blocking): blocking is fine.
        answer
            .wait_durable(AUDIT_ACK_TIMEOUT)
            .map_err(OrchestratorError::AuditUnavailable)?;
        if answer.decision.is_allowed() {
            Ok(answer.decision_id)
        } else {
            tracing::info!(%actor, action, %resource, reasons = ?answer.decision.reasons, "orchestrator: policy deny");
            Err(OrchestratorError::Denied {
                actor: actor.to_string(),
                action: action.to_string(),
                resource: resource.to_string(),
                reasons: answer.decision.reasons,
                errors: answer.decision.errors,
            })
        }
    }

    /// The policy question for giving partner access to `email`: with the
    /// registry's company as the invitee when the email belongs to a
    /// certified company; otherwise there is no invitee to ask about, and
    /// the actor must at least be allowed to invite users into the account
    /// (the refusal `not_a_certified_partner` comes later, in check order).
    fn ask_partner_access(
        &self,
        actor: &EntityUid,
        action: &str,
        resource: &EntityUid,
        account: &EntityUid,
        (email, access): (&str, &Access),
    ) -> Result<(Option<RegistryCompany>, String), OrchestratorError> {
        let certified = self.store.company_of_email(email)?.filter(|c| c.certified);
        let decided = match &certified {
            Some(c) => {
                let mut context = invitee_context(c);
                context["access"] = access.context();
                self.ask(actor, action, resource, Some(context))?
            }
            None => self.ask(actor, "invite_user", account, None)?,
        };
        Ok((certified, decided))
    }

    /// Run `op` in one store transaction inside the directory's write path
    /// ([`Directory::commit_with`]: the store commit and the memory update
    /// under the directory's writer lock), logging one change record per
    /// written entity that names the decision that allowed it (`decided`)
    /// and the scope's request id. Under the [`WriteScope`], the transaction
    /// first stops on a remembered `Idempotency-Key` or a passed deadline,
    /// and remembers the key's answer (the outcome) with the writes.
    fn commit(
        &self,
        (operation, actor): (&str, &str),
        decided: &Decided,
        op: &mut OutcomeOp<'_>,
        schema: Option<&cedar_policy::Schema>,
    ) -> Result<Outcome, OrchestratorError> {
        let scope = &self.scope;
        let mut outcome = None;
        let changes = std::cell::RefCell::new(None);
        let mut guarded = |tx: &mut dyn AccountTx| {
            if let Some(i) = &scope.idempotency {
                if let Some(r) = tx.recall(&i.key)? {
                    return Err(i.replay(r));
                }
            }
            if scope
                .deadline
                .is_some_and(|d| std::time::Instant::now() >= d)
            {
                return Err(OrchestratorError::TimedOut);
            }
            // The clock is read here, inside the transaction that commits:
            // no other write can commit between this reading and ours.
            let now = self.now();
            let (records, o) = op(tx, now)?;
            if let Some(i) = &scope.idempotency {
                tx.remember(&i.key, &i.answer(&o)?)?;
            }
            // The change records go into the same transaction, kept until
            // the log holds them; memory still holds the state before.
            let prepared = self.authz.prepare_changes(
                records
                    .iter()
                    .map(|r| {
                        let before = crate::directory::uid_from_key(&r.uid)
                            .and_then(|u| self.directory().get_json(&u))
                            .unwrap_or(Value::Null);
                        let after = serde_json::from_str(&r.json).unwrap_or(Value::Null);
                        crate::audit::ChangeEvent::new(actor, operation, before, after)
                            .decided_by(decided.of(&r.uid))
                            .request(scope.request_id.clone())
                    })
                    .collect(),
            );
            tx.keep_changes(prepared.kept())?;
            *changes.borrow_mut() = Some(prepared);
            outcome = Some(o);
            Ok(records)
        };
        self.directory().commit_with(schema, || {
            let records = self.store.transact(&mut guarded)?;
            if let Some(prepared) = changes.borrow_mut().take() {
                self.authz.log_changes(prepared);
            }
            Ok::<_, OrchestratorError>((records, ()))
        })?;
        outcome.ok_or_else(|| OrchestratorError::Corrupt("no outcome".into()))
    }

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
            (&email, &access),
        )?;
        let mut decided = Decided::by(by);
        if let Some(r) = &replace_uid {
            let id = self.ask(&actor, "dismiss_user", r, None)?;
            decided.others.push((r.to_string(), id));
        }
        let replace_id = replace_uid.as_ref().map(id_of);
        let pack = self.authz.evaluator().current();
        let schema = pack.schema.as_ref();
        let outcome = self.commit(
            ("partner.invite", &actor.to_string()),
            &decided,
            &mut |tx, now| {
                let users = users_in(tx, &account)?;
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
                        account: &account,
                        email: &email,
                        subject: existing.map(|u| u.id.as_str()),
                        replace: replace_id.as_deref(),
                        asked: asked.as_ref(),
                    },
                    now,
                )?;
                end_still_ahead(access.expires_at, now)?;
                let user = UserView {
                    id: existing.map_or_else(|| new_user_id(&email, name), |u| u.id.clone()),
                    email: email.clone(),
                    account: account.clone(),
                    status: UserStatus::Invited,
                    is_admin: existing.is_some_and(|u| u.is_admin),
                    two_factor: true,
                    partner: Some(partner_view(company.id, false, &access)),
                };
                let mut writes = vec![Orchestrator::record(schema, &user)?];
                if let Some(d) = &dismissed {
                    writes.push(Orchestrator::record(schema, d)?);
                }
                Ok((writes, Outcome { user, dismissed }))
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
        let decided = Decided::by(self.ask(&actor, "invite_user", &account_uid, None)?);
        let pack = self.authz.evaluator().current();
        let schema = pack.schema.as_ref();
        let outcome = self.commit(
            ("user.invite", &actor.to_string()),
            &decided,
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
        let decided = Decided::default();
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
                Ok(())
            },
        )
    }

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

    /// Shared by partner access and rehire: the seat checks and the write.
    /// `asked` and `decided` are the policy answers: the registry company
    /// asked about and the Allow decisions.
    fn partner_seat_write(
        &self,
        uid: &EntityUid,
        email: &str,
        (replace, access): (Option<&str>, &Access),
        (asked, decided): (Option<&RegistryCompany>, &Decided),
        must_be_dismissed: bool,
        (operation, actor): (&str, &str),
    ) -> Result<Outcome, OrchestratorError> {
        let pack = self.authz.evaluator().current();
        let schema = pack.schema.as_ref();
        let outcome = self.commit(
            (operation, actor),
            decided,
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
                u.partner = Some(partner_view(
                    company.id,
                    u.status == UserStatus::Active,
                    access,
                ));
                let mut writes = vec![Orchestrator::record(schema, &u)?];
                if let Some(d) = &dismissed {
                    writes.push(Orchestrator::record(schema, d)?);
                }
                Ok((writes, Outcome { user: u, dismissed }))
            },
            schema,
        )?;
        Ok(outcome)
    }

    /// Dismiss a user (kept, never deleted); frees a partner seat.
    pub fn dismiss(&self, user: &str, actor: &str) -> Result<Outcome, OrchestratorError> {
        let uid = parse_uid("user", "User", user)?;
        let actor = parse_uid("actor", "User", actor)?;
        let decided = Decided::by(self.ask(&actor, "dismiss_user", &uid, None)?);
        self.simple_write(
            &uid,
            ("user.dismiss", &actor.to_string()),
            &decided,
            |_, u, _now| {
                if u.status == UserStatus::Dismissed {
                    return Err(OrchestratorError::Conflict {
                        code: ConflictCode::AlreadyDismissed,
                        message: format!("user `{}` is already dismissed", u.id),
                    });
                }
                u.status = UserStatus::Dismissed;
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
        let decided = Decided::by(self.ask(&actor, "rehire_user", &uid, None)?);
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

    /// Partner access for an existing user (also a partner's rehire): the
    /// policy checks (`grant_partner_access`, and `dismiss_user` on the one
    /// to replace), then the seat checks and the write.
    fn partner_access_write(
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
            (&email, access),
        )?;
        let mut decided = Decided::by(by);
        if let Some(r) = &replace_uid {
            let id = self.ask(actor, "dismiss_user", r, None)?;
            decided.others.push((r.to_string(), id));
        }
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
        let decided = Decided::by(self.ask(&actor, "renew_partner_access", &uid, Some(context))?);
        self.simple_write(
            &uid,
            ("partner.renew", &actor.to_string()),
            &decided,
            |_, u, now| {
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
        let decided = Decided::by(self.ask(&actor, "end_partner_access", &uid, None)?);
        self.simple_write(
            &uid,
            ("partner.end", &actor.to_string()),
            &decided,
            |_, u, now| end_now(&uid, u, now),
        )
    }

    /// The sweep: mark every partner whose access has ended by now and who
    /// is not dismissed as dismissed, one transaction each (re-read from
    /// the store: a renewal or rehire that came first wins; a partner
    /// already marked is left alone, so a sweep never repeats an end).
    /// Each end is a change record `partner.access_ended` by `system`.
    /// Returns the partners it ended.
    pub fn end_expired(&self) -> Result<Vec<UserView>, OrchestratorError> {
        let now = self.now();
        let mut ended = Vec::new();
        for uid in self.ended_candidates(now)? {
            let outcome = self.commit(
                ("partner.access_ended", "system"),
                &Decided::default(),
                &mut |tx, now| {
                    let mut u = user_in(tx, &uid)?;
                    let due = u.access_ended(now) && u.status != UserStatus::Dismissed;
                    if due {
                        u.status = UserStatus::Dismissed;
                    }
                    let pack = self.authz.evaluator().current();
                    let writes = if due {
                        vec![Orchestrator::record(pack.schema.as_ref(), &u)?]
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
                self.authz.evaluator().current().schema.as_ref(),
            )?;
            if outcome.user.status == UserStatus::Dismissed {
                tracing::info!(user = %outcome.user.id, account = %outcome.user.account, "partner access ended; seat freed");
                ended.push(outcome.user);
            }
        }
        Ok(ended)
    }

    /// The upgrade of partners stored before scopes existed (no `scopes`
    /// attribute, which the policies read as nothing): each gets the
    /// default set (`default_partner_scopes`, else every scope of the
    /// schema), one transaction each, with a change record
    /// `partner.scopes_default` by `system`. Run once at start by the
    /// [`sweep::Sweeper`]; a partner given `[]` is left alone. Returns the
    /// partners it changed.
    pub fn default_missing_scopes(&self) -> Result<Vec<UserView>, OrchestratorError> {
        let pack = self.authz.evaluator().current();
        let scopes = access::resolve_scopes(
            &AccessRequest::default(),
            &self.rules.current(),
            pack.schema.as_ref(),
        )?;
        let mut changed = Vec::new();
        for uid in
            self.partners_where(|u| u.partner.as_ref().is_some_and(|p| p.scopes.is_none()))?
        {
            let outcome = self.commit(
                ("partner.scopes_default", "system"),
                &Decided::default(),
                &mut |tx, _now| {
                    let mut u = user_in(tx, &uid)?;
                    let due = u.partner.as_ref().is_some_and(|p| p.scopes.is_none());
                    if let (true, Some(p)) = (due, u.partner.as_mut()) {
                        p.scopes = Some(scopes.clone());
                    }
                    let writes = if due {
                        vec![Orchestrator::record(pack.schema.as_ref(), &u)?]
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
                pack.schema.as_ref(),
            )?;
            changed.push(outcome.user);
        }
        Ok(changed)
    }

    /// Partner users (through their companies' referrers, not every user)
    /// for which `keep` holds, as the directory has them now.
    fn partners_where(
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
    fn ended_candidates(&self, now: i64) -> Result<Vec<EntityUid>, OrchestratorError> {
        self.partners_where(|u| u.access_ended(now) && u.status != UserStatus::Dismissed)
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
        let decided = Decided::by(self.ask(&actor, action, &uid, None)?);
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

    fn simple_write(
        &self,
        uid: &EntityUid,
        (operation, actor): (&str, &str),
        decided: &Decided,
        change: impl Fn(&mut dyn store::AccountTx, &mut UserView, i64) -> Result<(), OrchestratorError>,
    ) -> Result<Outcome, OrchestratorError> {
        let pack = self.authz.evaluator().current();
        let schema = pack.schema.as_ref();
        let outcome = self.commit(
            (operation, actor),
            decided,
            &mut |tx, now| {
                let mut u = user_in(tx, uid)?;
                change(tx, &mut u, now)?;
                let writes = vec![Orchestrator::record(schema, &u)?];
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
        Ok(outcome)
    }

    /// Insert or replace registry companies (fields and email lists) and
    /// their `PartnerCompany` entities, in one transaction.
    pub fn put_companies(
        &self,
        companies: Vec<RegistryCompany>,
    ) -> Result<Vec<RegistryCompany>, OrchestratorError> {
        let pack = self.authz.evaluator().current();
        let schema = pack.schema.as_ref();
        let mut clean = Vec::with_capacity(companies.len());
        let mut records = Vec::with_capacity(companies.len());
        let mut entities = Vec::with_capacity(companies.len());
        for (i, c) in companies.into_iter().enumerate() {
            let (c, record, entity) = clean_company(schema, i, c)?;
            records.push(record);
            entities.push(entity);
            clean.push(c);
        }
        let scope = &self.scope;
        let answer = scope
            .idempotency
            .as_ref()
            .map(|i| i.answer(&clean.last()))
            .transpose()?;
        self.directory().commit_with(schema, || {
            let changes = self.registry_changes(&clean, &entities);
            let guard = partnergate_core::store::WriteGuard {
                deadline: scope.deadline,
                idempotency: scope
                    .idempotency
                    .as_ref()
                    .zip(answer.as_ref())
                    .map(|(i, a)| (i.key.as_str(), a)),
                changes: changes.kept(),
            };
            match self.store.put_companies(&clean, &records, &guard)? {
                partnergate_core::store::Guarded::Applied => {}
                partnergate_core::store::Guarded::TimedOut => {
                    return Err(OrchestratorError::TimedOut)
                }
                partnergate_core::store::Guarded::Replayed(r) => {
                    return Err(match &scope.idempotency {
                        Some(i) => i.replay(r),
                        None => OrchestratorError::Replayed(r),
                    })
                }
            }
            self.authz.log_changes(changes);
            Ok::<_, OrchestratorError>((records.clone(), ()))
        })?;
        Ok(clean)
    }

    /// Inside the registry write's commit, before memory is updated: one
    /// change record per company, from its entity in memory to the company
    /// as written, with the scope's request id, prepared for the write's
    /// transaction.
    fn registry_changes(
        &self,
        clean: &[RegistryCompany],
        entities: &[Entity],
    ) -> partnergate_core::changes::Prepared {
        self.authz.prepare_changes(
            clean
                .iter()
                .zip(entities)
                .map(|(c, e)| {
                    let before = self.directory().get_json(&e.uid()).unwrap_or(Value::Null);
                    let after = serde_json::to_value(c).unwrap_or(Value::Null);
                    // No policy question: the registry is the operator's (bearer token).
                    crate::audit::ChangeEvent::new("registry", "registry.put", before, after)
                        .request(self.scope.request_id.clone())
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use partnergate_core::reload::Evaluator;
    use partnergate_core::store::sqlite::SqliteStore;
    use partnergate_core::store::StoreError;
    use partnergate_policy::policies::PackSource;
    use std::path::Path;
    use std::sync::Mutex;

    /// The shipped pack, a fresh SQLite store and a directory holding the
    /// demo entities.
    fn demo(
        dir: &Path,
    ) -> (
        Arc<Evaluator>,
        Arc<SqliteStore>,
        Arc<Directory>,
        Arc<QuotaRules>,
    ) {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let source = PackSource::new(
            root.join("policies"),
            Some(root.join("schemas/partnergate.cedarschema")),
        );
        let evaluator = Arc::new(Evaluator::load(source).unwrap());
        let store = Arc::new(SqliteStore::open_in(dir).unwrap());
        let directory = Arc::new(Directory::open(store.clone()).unwrap());
        let demo: Value = serde_json::from_str(
            &std::fs::read_to_string(root.join("demo/entities.json")).unwrap(),
        )
        .unwrap();
        directory
            .put_json(evaluator.current().schema.as_ref(), demo)
            .unwrap();
        let rules = QuotaRules::load(rules::quotas_path_for(&root.join("policies"))).unwrap();
        (evaluator, store, directory, rules)
    }

    /// The real SQLite store, except that the first transaction, once
    /// committed, tells the test and waits for its go before it returns:
    /// the window between an orchestrator's store commit and its memory update.
    struct PauseAfterCommit {
        inner: Arc<SqliteStore>,
        armed: std::sync::atomic::AtomicBool,
        committed: std::sync::mpsc::SyncSender<()>,
        go: Mutex<std::sync::mpsc::Receiver<()>>,
    }

    impl OrchestratorStore for PauseAfterCommit {
        fn transact(
            &self,
            op: &mut store::TxOp<'_>,
        ) -> Result<Vec<EntityRecord>, OrchestratorError> {
            let out = self.inner.transact(op);
            if self.armed.swap(false, std::sync::atomic::Ordering::SeqCst) {
                self.committed.send(()).unwrap();
                self.go.lock().unwrap().recv().unwrap();
            }
            out
        }
        fn company_of_email(&self, email: &str) -> Result<Option<RegistryCompany>, StoreError> {
            self.inner.company_of_email(email)
        }
        fn put_companies(
            &self,
            companies: &[RegistryCompany],
            records: &[EntityRecord],
            guard: &partnergate_core::store::WriteGuard<'_>,
        ) -> Result<partnergate_core::store::Guarded, StoreError> {
            self.inner.put_companies(companies, records, guard)
        }
        fn companies(&self) -> Result<Vec<RegistryCompany>, StoreError> {
            self.inner.companies()
        }
    }

    /// Bug (issue #13): an orchestrator write and a `PUT /v1/entities` on the
    /// same entity took two different locks, so the PUT could commit and
    /// reach memory between the orchestrator's commit and its memory update:
    /// store order orchestrator-then-PUT, memory order PUT-then-orchestrator,
    /// and memory differed from the store until a restart. Now both go
    /// through the directory's one writer lock: the PUT waits.
    #[test]
    fn a_put_during_an_orchestrator_write_leaves_memory_equal_to_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let (evaluator, sqlite, directory, rules) = demo(dir.path());
        let (committed_tx, committed) = std::sync::mpsc::sync_channel(1);
        let (go, go_rx) = std::sync::mpsc::sync_channel(1);
        let paused = Arc::new(PauseAfterCommit {
            inner: sqlite.clone(),
            armed: true.into(),
            committed: committed_tx,
            go: Mutex::new(go_rx),
        });
        let o = Orchestrator::new(Authz::new(evaluator, directory.clone()), paused, rules);
        let emma = engine::parse_uid("u", "User::\"emma\"").unwrap();
        let put = json!({"uid": {"type": "User", "id": "emma"},
            "parents": [{"type": "Account", "id": "acme"}],
            "attrs": {"email": "emma.put@acme.example", "is_admin": false, "status": "active",
                "two_factor": false,
                "account": {"__entity": {"type": "Account", "id": "acme"}}}});
        std::thread::scope(|s| {
            let orchestrator = s.spawn(|| {
                o.with(WriteScope::default())
                    .set_admin("emma", "owner", true)
                    .unwrap()
            });
            committed.recv().unwrap();
            let (done_tx, done) = std::sync::mpsc::channel();
            let directory = &directory;
            let writer = s.spawn(move || {
                let out = directory.put(vec![Entity::from_json_value(put, None).unwrap()]);
                done_tx.send(()).unwrap();
                out
            });
            // The old code lets the PUT finish inside the window; the fixed
            // code blocks it on the writer lock until the go.
            let _ = done.recv_timeout(std::time::Duration::from_secs(1));
            go.send(()).unwrap();
            orchestrator.join().unwrap();
            writer.join().unwrap().unwrap();
        });
        let fresh = Directory::open(sqlite).unwrap();
        assert_eq!(
            directory.get_json(&emma),
            fresh.get_json(&emma),
            "memory differs from the store"
        );
        assert_eq!(
            fresh.get_json(&emma).unwrap()["attrs"]["email"],
            json!("emma.put@acme.example"),
            "the PUT came last"
        );
    }

    /// The typed states keep the wire format: statuses, list statuses and
    /// error codes serialise to the same strings as before; a status the
    /// orchestrator does not know is kept as written.
    #[test]
    fn typed_states_keep_the_wire_strings() {
        let stored = json!({"uid": {"type": "User", "id": "u"},
            "parents": [{"type": "Account", "id": "acme"}],
            "attrs": {"email": "u@acme.example", "is_admin": false, "status": "invited",
                "two_factor": false, "account": {"__entity": {"type": "Account", "id": "acme"}}}});
        let mut u = UserView::from_json(&stored).unwrap();
        assert_eq!(u.status, UserStatus::Invited);
        assert_eq!(u.to_entity_json(), stored);
        assert_eq!(
            serde_json::to_value(&u).unwrap()["status"],
            json!("invited")
        );
        for (status, shown) in [
            ("invited", "invited"),
            ("active", "employee"),
            ("dismissed", "dismissed"),
            ("suspended", "employee"),
        ] {
            u.status = UserStatus::from(status.to_string());
            assert_eq!(u.status.as_str(), status);
            assert_eq!(u.to_entity_json()["attrs"]["status"], json!(status));
            assert_eq!(
                serde_json::to_value(u.list_status(0)).unwrap(),
                json!(shown)
            );
        }
        u.status = UserStatus::Active;
        u.is_admin = true;
        assert_eq!(format!("{:<14}|", u.list_status(0)), "administrator |");
        u.partner = Some(PartnerView {
            company: "goldco".into(),
            verified: true,
            expires_at: None,
            scopes: None,
        });
        assert_eq!(u.list_status(0).as_str(), "partner");
        let codes: Vec<&str> = [
            InvalidCode::Replace,
            InvalidCode::Company,
            InvalidCode::User,
        ]
        .iter()
        .map(|c| c.as_str())
        .collect();
        assert_eq!(
            codes,
            ["invalid_replace", "invalid_company", "invalid_user"]
        );
        let e = OrchestratorError::Conflict {
            code: ConflictCode::RegistryChanged,
            message: String::new(),
        };
        assert_eq!(e.code(), "registry_changed");
    }

    /// The listings read only the users that point at the account (the
    /// directory's index), never every user: another account's user that is
    /// not even a readable user (no email) does not disturb them. Before the
    /// index every user was read, and this listing failed on that one.
    #[test]
    fn listings_read_only_the_accounts_own_users() {
        let dir = tempfile::tempdir().unwrap();
        let (evaluator, store, directory, rules) = demo(dir.path());
        // Written without a schema: a `User` the orchestrator cannot read.
        let ghost = json!({"uid": {"type": "User", "id": "ghost"},
            "parents": [{"type": "Account", "id": "other"}],
            "attrs": {"account": {"__entity": {"type": "Account", "id": "other"}}}});
        directory
            .put(vec![Entity::from_json_value(ghost, None).unwrap()])
            .unwrap();
        let o = Orchestrator::new(Authz::new(evaluator, directory.clone()), store, rules);
        let ids: Vec<String> = o
            .users("acme")
            .unwrap()
            .into_iter()
            .map(|u| u.user.id)
            .collect();
        assert_eq!(ids.len(), 3, "{ids:?}");
        assert!(
            ["owner", "emma", "pat"]
                .iter()
                .all(|i| ids.contains(&i.to_string())),
            "{ids:?}"
        );
        let seats = o.seats("acme").unwrap();
        assert_eq!(
            (seats.paid_users, seats.administrators, seats.partners),
            (2, 1, 1)
        );
        // The index follows writes: emma moves to `other`, then is deleted.
        let acme = engine::parse_uid("a", "Account::\"acme\"").unwrap();
        let emma = engine::parse_uid("u", "User::\"emma\"").unwrap();
        assert!(directory.referrers(&acme).contains(&emma));
        let moved = json!({"uid": {"type": "User", "id": "emma"},
            "parents": [{"type": "Account", "id": "other"}],
            "attrs": {"email": "emma@acme.example", "is_admin": false, "status": "active",
                "two_factor": false,
                "account": {"__entity": {"type": "Account", "id": "other"}}}});
        directory
            .put(vec![Entity::from_json_value(moved, None).unwrap()])
            .unwrap();
        assert!(!directory.referrers(&acme).contains(&emma));
        assert_eq!(o.users("acme").unwrap().len(), 2);
        directory.delete(std::slice::from_ref(&emma)).unwrap();
        let other = engine::parse_uid("a", "Account::\"other\"").unwrap();
        assert!(!directory.referrers(&other).contains(&emma));
    }
}
