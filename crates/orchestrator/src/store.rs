//! The orchestrator's transactional store, behind a trait: one operation is
//! one serialisable write transaction that re-reads what it counts (the
//! account's users, the registry entry of an email) from the database — not
//! from memory — and then writes the changed entities, all or nothing.
//!
//! Nothing here names SQL: the embedded SQLite implementation lives in
//! [`super::sqlite`], and a PostgreSQL backend can implement the same trait
//! (e.g. `SERIALIZABLE`, or `SELECT .. FOR UPDATE` on an account row).

use partnergate_core::store::{
    EntityRecord, Guarded, KeptChange, Remembered, StoreError, WriteGuard,
};

use crate::error::OrchestratorError;

/// A partner company of the registry, with its certified emails.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryCompany {
    /// The `PartnerCompany` entity's id (trimmed, non-empty).
    pub id: String,
    /// The company's display name (non-empty).
    pub name: String,
    /// The partnership level, lower case (e.g. `gold`): the policies read it
    /// as `context.invitee.status`.
    pub status: String,
    /// Only the people of a certified company can become partners.
    pub certified: bool,
    /// The company's people's emails: lower case, sorted, without duplicates
    /// when stored; left empty when looked up by email (`company_of_email`).
    #[serde(default)]
    pub emails: Vec<String>,
}

/// How long a dead (expired) request code is kept before it is forgotten:
/// 30 days, so the table never grows past what the bound on open codes
/// lets through in that time.
pub const CODES_KEPT_MS: i64 = 30 * 86_400_000;

/// A request code as stored: the SHA-256 of the code (hex), never the
/// code itself, its account and its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCode {
    /// The SHA-256 of the normalised code, lower-case hex.
    pub hash: String,
    /// The account the code opens a request to.
    pub account: String,
    /// Who made it (`User::"owner"`).
    pub created_by: String,
    /// When it was made (ms since the epoch).
    pub created_at: i64,
    /// When it stops working (ms since the epoch).
    pub expires_at: i64,
}

/// What one operation locks on a store that locks per account (PostgreSQL):
/// the accounts it names and the accounts of the users it names (its
/// actor, the user it changes), which the store reads inside the
/// transaction before it takes the accounts' locks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteLocks {
    /// Account ids.
    pub accounts: Vec<String>,
    /// User uids in Cedar syntax (`User::"emma"`); one not stored locks nothing.
    pub users: Vec<String>,
}

impl WriteLocks {
    /// The locks of a write to `account`.
    pub fn account(account: &str) -> Self {
        WriteLocks {
            accounts: vec![account.to_string()],
            users: Vec::new(),
        }
    }

    /// The locks of a write to `users` (their accounts').
    pub fn users(users: &[&cedar_policy::EntityUid]) -> Self {
        WriteLocks {
            accounts: Vec::new(),
            users: users.iter().map(|u| u.to_string()).collect(),
        }
    }
}

/// What one operation may read inside its transaction.
pub trait AccountTx {
    /// Whether the transaction holds `account`'s lock, so that its users'
    /// rows cannot change before it commits (always, on a store that
    /// serialises every write).
    fn holds_account(&self, account: &str) -> bool;
    /// Every user entity of `account` (any status), as stored now.
    fn account_users(&mut self, account: &str) -> Result<Vec<EntityRecord>, StoreError>;
    /// One stored entity by uid (Cedar syntax), as stored now.
    fn entity(&mut self, uid: &str) -> Result<Option<EntityRecord>, StoreError>;
    /// The registry company an email (lower case) belongs to; `emails` is left empty.
    fn company_of_email(&mut self, email: &str) -> Result<Option<RegistryCompany>, StoreError>;
    /// Every `PartnerRequest` entity of `account` (any status), as stored now.
    fn account_requests(&mut self, account: &str) -> Result<Vec<EntityRecord>, StoreError>;
    /// The request codes of `account` not used and not expired at `now`.
    fn open_request_codes(
        &mut self,
        account: &str,
        now: i64,
    ) -> Result<Vec<StoredCode>, StoreError>;
    /// Store a new request code (its hash).
    fn add_request_code(&mut self, code: &StoredCode) -> Result<(), StoreError>;
    /// Mark the code of `hash` used at `now` by `by`; false when it was
    /// not open (used already): single use.
    fn use_request_code(&mut self, hash: &str, now: i64, by: &str) -> Result<bool, StoreError>;
    /// The remembered answer of an `Idempotency-Key` (not expired), as stored now.
    fn recall(&mut self, key: &str) -> Result<Option<Remembered>, StoreError>;
    /// Remember an `Idempotency-Key`'s answer with this transaction's writes.
    fn remember(&mut self, key: &str, answer: &Remembered) -> Result<(), StoreError>;
    /// Keep the writes' change records with them, until the log holds them
    /// (see `partnergate_core::changes`).
    fn keep_changes(&mut self, changes: &[KeptChange]) -> Result<(), StoreError>;
    /// Write lifecycle events into the outbox with this transaction's
    /// writes (see [`crate::events`]).
    fn keep_events(&mut self, events: &[crate::events::outbox::NewEvent])
        -> Result<(), StoreError>;
}

/// The operation run inside a transaction: reads through [`AccountTx`],
/// returns the entity records to upsert (or an error, which rolls back).
pub type TxOp<'a> =
    dyn FnMut(&mut dyn AccountTx) -> Result<Vec<EntityRecord>, OrchestratorError> + 'a;

/// A durable home for the orchestrator's state.
pub trait OrchestratorStore: crate::events::outbox::EventStore + Send + Sync {
    /// Run `op` in one write transaction that excludes every other write of
    /// the accounts `locks` names (in this process or another one on the
    /// same store) and every entity or registry write; commit its records
    /// if it returns `Ok`, roll back otherwise.
    fn transact(
        &self,
        locks: &WriteLocks,
        op: &mut TxOp<'_>,
    ) -> Result<Vec<EntityRecord>, OrchestratorError>;
    /// The registry company of an email, outside any transaction.
    fn company_of_email(&self, email: &str) -> Result<Option<RegistryCompany>, StoreError>;
    /// Replace the given companies (fields and whole email lists) and upsert
    /// their entity records, in one transaction. An email listed for a
    /// company moves to it from any other company.
    /// Under `guard` (see [`WriteGuard`]): nothing is written when the
    /// key is remembered or the deadline passed; its change records are
    /// kept with the write.
    fn put_companies(
        &self,
        companies: &[RegistryCompany],
        records: &[EntityRecord],
        guard: &WriteGuard<'_>,
    ) -> Result<Guarded, StoreError>;
    /// Every registry company with its emails, sorted by id.
    fn companies(&self) -> Result<Vec<RegistryCompany>, StoreError>;
}

/// The rows of a registry listing — a company and one of its emails (or
/// none), sorted by company id then email — gathered into one company each
/// with its emails: what both stores' `companies` read.
pub(crate) fn gather_companies(
    rows: impl IntoIterator<Item = (RegistryCompany, Option<String>)>,
) -> Vec<RegistryCompany> {
    let mut out: Vec<RegistryCompany> = Vec::new();
    for (company, email) in rows {
        if out.last().is_none_or(|c| c.id != company.id) {
            out.push(company);
        }
        if let (Some(e), Some(c)) = (email, out.last_mut()) {
            c.emails.push(e);
        }
    }
    out
}
