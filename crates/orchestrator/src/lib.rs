//! The partner orchestrator: the partner rules that need state — at most N
//! active partner users per account, all from one partner company, the swap
//! of the fourth, dismiss and rehire, verification against the partner
//! registry — kept true under concurrent requests and crashes.
//!
//! Every operation runs in the same order:
//! 1. input checks (a well-formed email: [`OrchestratorError::InvalidEmail`]);
//! 2. **policy first**: [`partnergate_core::authz::Authz`] decides whether
//!    the actor may do it (a Deny is [`OrchestratorError::Denied`] with the
//!    policies' reasons);
//! 3. one store transaction ([`store::OrchestratorStore::transact`]) that
//!    re-reads the account's users and the registry from the database, runs
//!    the counting rules of [`rules::Quotas`] — seat free or `replace` given,
//!    same company as the active partners, certified partner email — and
//!    writes the changed users, all or nothing; once its locks are held it
//!    first judges the step-2 answers again over the entities as stored
//!    (`allowed`: memory brought up to any row that differs, the question
//!    asked again; a Deny now refuses the write) — run inside
//!    [`partnergate_core::directory::Directory::commit_with`], so that
//! 4. the in-memory [`partnergate_core::directory::Directory`] is updated
//!    with what was committed under the directory's one writer lock (the
//!    lock every entity writer takes),
//!    and one change record per written entity names the Allow decision of
//!    step 2 and the request id.
//!
//! Writes run through [`Orchestrator::with`] and a [`WriteScope`] value
//! (deadline, `Idempotency-Key`, request id): no thread state.
//! HTTP and the CLI are thin adapters over [`Orchestrator`].
//!
//! This root only lists the modules and re-exports the API: the type and
//! its reads in `orchestrator`, the write path in `write`, the Allow
//! decisions it rests on in `allowed`, the operations
//! by idea in `ops`, what they answer in `view`.
//!
//! Depends on `partnergate-core`, `partnergate-audit` and
//! `partnergate-policy`; it must never know HTTP or the command line.

#![warn(missing_docs, clippy::too_many_lines)]

pub mod access;
pub mod activity;
mod allowed;
pub mod attempts;
pub mod error;
pub mod events;
mod idempotency;
mod input;
pub mod migrations;
mod ops;
mod orchestrator;
pub mod postgres;
mod request;
pub mod rules;
pub mod runtime;
mod scope;
pub mod scopes;
pub mod sqlite;
pub mod status;
pub mod store;
pub mod sweep;
pub mod user;
mod view;
mod write;

pub use error::{ConflictCode, InvalidCode, OrchestratorError};
pub use idempotency::Idempotency;
pub use input::{normalize_email, parse_uid};
pub use ops::DEFAULT_ENDING_SOON;
pub use orchestrator::Orchestrator;
pub use request::RequestView;
pub use scope::WriteScope;
pub use status::{ListStatus, UserStatus};
pub use user::{PartnerView, UserView};
pub use view::{CodeOutcome, ListedUser, Outcome, RequestOutcome, Seats};
pub use write::ScopedWrites;

#[cfg(test)]
mod tests;
