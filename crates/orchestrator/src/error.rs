//! Why an orchestrator operation was refused or failed:
//! [`OrchestratorError`], with the stable wire codes of its invalid-input
//! ([`InvalidCode`]) and conflict ([`ConflictCode`]) cases and its
//! machine-readable details.
//!
//! Owns the error vocabulary shared by the orchestrator, [`crate::access`]
//! and the stores; it must never know how an operation runs, HTTP or the
//! command line.

use serde_json::{json, Value};

use crate::user::UserView;
use partnergate_core::store::StoreError;
use partnergate_policy::engine::{Reason, RequestError};

/// Why an input is invalid: the stable `code` of the wire format
/// ([`InvalidCode::as_str`]); the HTTP adapter picks the status by variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidCode {
    /// `replace` is not an active partner of the account.
    Replace,
    /// A registry company is malformed.
    Company,
    /// The user would not validate against the schema.
    User,
    /// An access end or scope list that cannot be given (malformed, in the
    /// past, both an end and a duration, required and missing, empty).
    Access,
    /// An end further than `max_access_days` from now.
    AccessTooLong,
    /// A scope the schema does not declare.
    UnknownScope,
    /// An approval that gives more than the request asked for (a scope it
    /// did not ask for, or a longer access).
    AccessWidened,
}

impl InvalidCode {
    /// The wire `code`: `invalid_replace`, `invalid_company` or `invalid_user`.
    pub fn as_str(self) -> &'static str {
        match self {
            InvalidCode::Replace => "invalid_replace",
            InvalidCode::Company => "invalid_company",
            InvalidCode::User => "invalid_user",
            InvalidCode::Access => "invalid_access",
            InvalidCode::AccessTooLong => "access_too_long",
            InvalidCode::UnknownScope => "unknown_scope",
            InvalidCode::AccessWidened => "access_widened",
        }
    }
}

/// What a conflict is about: the stable `code` of the wire format
/// ([`ConflictCode::as_str`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConflictCode {
    /// The email is already a user of the account who is not dismissed.
    AlreadyMember,
    /// The email is a dismissed user of the account: rehire, not invite.
    UserDismissed,
    /// `accept` of a user without an open invitation.
    NotInvited,
    /// `rehire` of a user who is not dismissed.
    NotDismissed,
    /// Partner access for a user who already holds a partner seat.
    AlreadyPartner,
    /// `dismiss` of a user who is already dismissed.
    AlreadyDismissed,
    /// The email's registry entry changed between the policy question and
    /// the transaction; the request may be retried.
    RegistryChanged,
    /// A renewal of a partner whose access has ended or who is dismissed
    /// (rehire them instead).
    AccessEnded,
    /// A renewal, an end, a suspension or a resume of a user who is not a partner.
    NotPartner,
    /// A suspension of a partner already suspended.
    AlreadySuspended,
    /// A resume of a partner who is not suspended.
    NotSuspended,
    /// An approval or a decline of a request already approved, declined or
    /// expired (a replay).
    RequestAnswered,
    /// A request whose time to be answered has passed.
    RequestExpired,
    /// The same person already has a pending request to the account.
    RequestPending,
    /// The account has as many pending requests, or open request codes, as
    /// it may.
    TooManyOpen,
    /// The entities a policy answer rests on could not be read inside the
    /// write's transaction as stored; the request may be retried.
    DecisionStale,
}

impl ConflictCode {
    /// The wire `code`, the variant's name in snake case (`already_member`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ConflictCode::AlreadyMember => "already_member",
            ConflictCode::UserDismissed => "user_dismissed",
            ConflictCode::NotInvited => "not_invited",
            ConflictCode::NotDismissed => "not_dismissed",
            ConflictCode::AlreadyPartner => "already_partner",
            ConflictCode::AlreadyDismissed => "already_dismissed",
            ConflictCode::RegistryChanged => "registry_changed",
            ConflictCode::AccessEnded => "access_ended",
            ConflictCode::NotPartner => "not_a_partner",
            ConflictCode::AlreadySuspended => "already_suspended",
            ConflictCode::NotSuspended => "not_suspended",
            ConflictCode::RequestAnswered => "request_answered",
            ConflictCode::RequestExpired => "request_expired",
            ConflictCode::RequestPending => "request_pending",
            ConflictCode::TooManyOpen => "too_many_open",
            ConflictCode::DecisionStale => "decision_stale",
        }
    }
}

/// Why an orchestrator operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum OrchestratorError {
    /// An email that [`normalize_email`](crate::normalize_email) rejects; nothing was asked or written.
    #[error("`{email}` is not a well-formed email address")]
    InvalidEmail {
        /// The email as the caller gave it (not normalised).
        email: String,
    },
    /// The policies did not allow the operation (step 2); nothing was written.
    #[error("the policies do not allow {actor} to {action} {resource}")]
    Denied {
        /// The acting user's uid, in Cedar syntax.
        actor: String,
        /// The action's id (`invite_partner`, `dismiss_user`, ...).
        action: String,
        /// The resource's uid, in Cedar syntax.
        resource: String,
        /// The determining forbid policies (empty for a deny by default or a
        /// fail-closed deny, whose cause is in `errors`).
        reasons: Vec<Reason>,
        /// The decision's errors (evaluation errors, an unknown principal).
        errors: Vec<String>,
    },
    /// Every partner seat of the account is taken and `replace` did not
    /// free one.
    #[error("the maximum number of partners is reached ({limit} active): dismiss one of them and invite the new one")]
    LimitReached {
        /// The serving `max_active_partners`.
        limit: u32,
        /// The seat holders, so the caller can pick one to `replace`.
        active: Vec<UserView>,
    },
    /// The email's certified company is not the company of the account's
    /// active partners (`one_company_per_account`).
    #[error("{email} belongs to partner company `{company}`, but the account's active partners belong to `{active_company}`: all partners of an account come from one company")]
    DifferentCompany {
        /// The normalised email of the would-be partner.
        email: String,
        /// The registry company that certifies `email`.
        company: String,
        /// The company of an active partner of the account.
        active_company: String,
    },
    /// No certified registry company lists the email (at the seat checks, or
    /// at `accept` when the company is no longer certified or not the same).
    #[error("there is no certified partner with this email: {email}")]
    NotCertified {
        /// The normalised email.
        email: String,
    },
    /// An access request without a request code, or with one that is not
    /// an open code of the account (wrong, used, expired, another
    /// account's): refused, nothing written.
    #[error("{0}")]
    RequestCode(String),
    /// Too many wrong request codes lately for this account (or this
    /// person and account): refused until the window passes.
    #[error("{message}")]
    TooManyAttempts {
        /// What was limited and until when.
        message: String,
        /// Seconds until the window passes.
        retry_after_secs: u64,
    },
    /// A user or account that does not exist; the message names its uid.
    #[error("{0}")]
    NotFound(String),
    /// The operation does not fit the user's current state (see
    /// [`ConflictCode`]); nothing was written.
    #[error("{message}")]
    Conflict {
        /// What the conflict is about.
        code: ConflictCode,
        /// A sentence for the caller, naming the user and the way out.
        message: String,
    },
    /// An input field that the rules or the schema reject.
    #[error("field `{field}`: {message}")]
    Invalid {
        /// Which rule rejected it.
        code: InvalidCode,
        /// The request field at fault (`replace`, `id`, `emails`, `user`, ...).
        field: &'static str,
        /// Why, naming the value.
        message: String,
    },
    /// A uid or the policy question is malformed (see [`RequestError`]).
    #[error(transparent)]
    Request(#[from] RequestError),
    /// The store failed to read or write; a transaction that fails is
    /// rolled back.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Stored data the orchestrator cannot read (a user entity without its
    /// uid, account, email or status), or an answer it cannot encode.
    #[error("stored user is unreadable: {0}")]
    Corrupt(String),
    /// `--audit-required`: the authorizing decision's record could not be
    /// made durable, so the operation is refused.
    #[error("the operation is refused because its decision-log record could not be made durable (--audit-required): {0}")]
    AuditUnavailable(String),
    /// The [`WriteScope`](crate::WriteScope) deadline had passed when the transaction began;
    /// nothing was applied.
    #[error("the write did not start before the request timeout; nothing was applied")]
    TimedOut,
    /// The `Idempotency-Key` is remembered with another request's
    /// fingerprint; nothing was applied.
    #[error("header `Idempotency-Key`: this key was used for a different request (method, route or body); use a new key")]
    IdempotencyKeyReused,
    /// The `Idempotency-Key` was remembered: nothing applied; the first answer.
    #[error("replayed the first answer of this Idempotency-Key")]
    Replayed(partnergate_core::store::Remembered),
}

impl OrchestratorError {
    /// The stable error code of the wire format.
    pub fn code(&self) -> &'static str {
        match self {
            OrchestratorError::InvalidEmail { .. } => "invalid_email",
            OrchestratorError::Denied { .. } => "policy_denied",
            OrchestratorError::LimitReached { .. } => "partner_limit_reached",
            OrchestratorError::DifferentCompany { .. } => "different_partner_company",
            OrchestratorError::NotCertified { .. } => "not_a_certified_partner",
            OrchestratorError::NotFound(_) => "not_found",
            OrchestratorError::RequestCode(_) => "request_code_invalid",
            OrchestratorError::TooManyAttempts { .. } => "too_many_attempts",
            OrchestratorError::Conflict { code, .. } => code.as_str(),
            OrchestratorError::Invalid { code, .. } => code.as_str(),
            OrchestratorError::Request(_) => "bad_request",
            OrchestratorError::Store(_) | OrchestratorError::Corrupt(_) => "unavailable",
            OrchestratorError::AuditUnavailable(_) => "audit_unavailable",
            OrchestratorError::TimedOut => "request_timeout",
            OrchestratorError::IdempotencyKeyReused => "idempotency_key_reused",
            OrchestratorError::Replayed(_) => "replayed",
        }
    }

    /// Machine-readable details for the error body.
    pub fn details(&self) -> Value {
        match self {
            OrchestratorError::InvalidEmail { email } => json!({"field": "email", "email": email}),
            OrchestratorError::Denied {
                actor,
                action,
                resource,
                reasons,
                errors,
            } => json!({"actor": actor, "action": action, "resource": resource,
                "reasons": reasons, "errors": errors}),
            OrchestratorError::LimitReached { limit, active } => json!({
                "limit": limit,
                "active_partners": active,
                "hint": "dismiss one of them and invite the new one: repeat the request with \"replace\": \"<id of the partner to dismiss>\"",
            }),
            OrchestratorError::DifferentCompany {
                email,
                company,
                active_company,
            } => json!({"email": email, "company": company, "active_company": active_company}),
            OrchestratorError::NotCertified { email } => json!({"email": email}),
            OrchestratorError::IdempotencyKeyReused => json!({"header": "Idempotency-Key"}),
            OrchestratorError::RequestCode(_) => json!({"field": "code"}),
            OrchestratorError::TooManyAttempts {
                retry_after_secs, ..
            } => json!({"retry_after_secs": retry_after_secs}),
            OrchestratorError::Invalid { field, .. } => json!({"field": field}),
            OrchestratorError::Request(RequestError::Field { field, .. }) => {
                json!({"field": field})
            }
            _ => Value::Null,
        }
    }
}
