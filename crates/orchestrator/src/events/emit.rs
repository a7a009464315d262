//! Emitting an event from inside an operation's transaction: [`WriteTx`]
//! is what every operation's closure gets from the write path — the
//! store's reads ([`AccountTx`], delegated) plus [`WriteTx::emit`], one
//! call per lifecycle change. The write path turns what was emitted into
//! outbox rows ([`NewEvent`]) naming the change record and the Allow
//! decision of the same write, and writes them in the same transaction:
//! an event exists exactly when its change committed. It never knows HTTP
//! or the command line.

use serde_json::{json, Value};

use crate::events::kind::EventKind;
use crate::events::outbox::NewEvent;
use crate::store::{AccountTx, RegistryCompany, StoredCode};
use crate::user::UserView;
use crate::view::Outcome;
use partnergate_core::store::{EntityRecord, KeptChange, Remembered, StoreError};

/// One event an operation emitted, before the write path names its
/// change record and decision.
#[derive(Debug, Clone)]
pub struct Emitted {
    /// The lifecycle change.
    pub kind: EventKind,
    /// The partner as the change leaves it.
    pub user: UserView,
    /// More members of the payload's `data` (an object), if any.
    pub detail: Option<Value>,
    /// A once-only key (see [`NewEvent::dedupe`]).
    pub dedupe: Option<String>,
}

/// An operation's view of its transaction: the store's reads, and
/// [`WriteTx::emit`].
pub struct WriteTx<'a> {
    inner: &'a mut dyn AccountTx,
    pub(crate) emitted: Vec<Emitted>,
}

impl<'a> WriteTx<'a> {
    pub(crate) fn new(inner: &'a mut dyn AccountTx) -> Self {
        WriteTx {
            inner,
            emitted: Vec::new(),
        }
    }

    /// The event `kind` about `user` (as this write leaves it): written to
    /// the outbox with this transaction, or not at all.
    pub fn emit(&mut self, kind: EventKind, user: &UserView) {
        self.emit_with(Emitted {
            kind,
            user: user.clone(),
            detail: None,
            dedupe: None,
        });
    }

    /// The events of a partner given a seat: `kind` about the partner, and
    /// `replaced` about the partner a swap dismissed in the same write.
    pub fn emit_seated(&mut self, kind: EventKind, outcome: &Outcome) {
        self.emit(kind, &outcome.user);
        if let Some(d) = &outcome.dismissed {
            self.emit(EventKind::Replaced, d);
        }
    }

    /// [`WriteTx::emit`] with more payload members or a once-only key.
    pub fn emit_with(&mut self, event: Emitted) {
        self.emitted.push(event);
    }

    /// The store's transaction, for what the write path writes itself.
    pub(crate) fn store(&mut self) -> &mut dyn AccountTx {
        self.inner
    }
}

impl AccountTx for WriteTx<'_> {
    fn holds_account(&self, account: &str) -> bool {
        self.inner.holds_account(account)
    }
    fn account_users(&mut self, account: &str) -> Result<Vec<EntityRecord>, StoreError> {
        self.inner.account_users(account)
    }
    fn entity(&mut self, uid: &str) -> Result<Option<EntityRecord>, StoreError> {
        self.inner.entity(uid)
    }
    fn company_of_email(&mut self, email: &str) -> Result<Option<RegistryCompany>, StoreError> {
        self.inner.company_of_email(email)
    }
    fn account_requests(&mut self, account: &str) -> Result<Vec<EntityRecord>, StoreError> {
        self.inner.account_requests(account)
    }
    fn open_request_codes(
        &mut self,
        account: &str,
        now: i64,
    ) -> Result<Vec<StoredCode>, StoreError> {
        self.inner.open_request_codes(account, now)
    }
    fn add_request_code(&mut self, code: &StoredCode) -> Result<(), StoreError> {
        self.inner.add_request_code(code)
    }
    fn use_request_code(&mut self, hash: &str, now: i64, by: &str) -> Result<bool, StoreError> {
        self.inner.use_request_code(hash, now, by)
    }
    fn recall(&mut self, key: &str) -> Result<Option<Remembered>, StoreError> {
        self.inner.recall(key)
    }
    fn remember(&mut self, key: &str, answer: &Remembered) -> Result<(), StoreError> {
        self.inner.remember(key, answer)
    }
    fn keep_changes(&mut self, changes: &[KeptChange]) -> Result<(), StoreError> {
        self.inner.keep_changes(changes)
    }
    fn keep_events(&mut self, events: &[NewEvent]) -> Result<(), StoreError> {
        self.inner.keep_events(events)
    }
}

/// What the write path knows of the change an event belongs to.
pub(crate) struct ChangeOf<'a> {
    /// Who made it.
    pub(crate) actor: &'a str,
    /// The change record's operation (`partner.suspend`).
    pub(crate) operation: &'a str,
    /// The request id of the write, if any.
    pub(crate) request_id: Option<&'a str>,
    /// The committing transaction's clock (ms).
    pub(crate) now: i64,
}

/// The outbox row of `e`, naming `change_id` and `decision_id`.
pub(crate) fn new_event(
    e: Emitted,
    change: &ChangeOf<'_>,
    change_id: Option<String>,
    decision_id: Option<String>,
) -> NewEvent {
    let u = &e.user;
    let partner = json!({
        "id": u.id,
        "email": u.email,
        "status": u.status,
        "company": u.partner.as_ref().map(|p| p.company.clone()),
        "expires_at": u.partner.as_ref().and_then(|p| p.expires_at.clone()),
        "scopes": u.partner.as_ref().and_then(|p| p.scopes.clone()),
        "suspended": u.is_suspended(),
    });
    let mut data = json!({
        "account": u.account,
        "partner": partner,
        "actor": change.actor,
        "operation": change.operation,
        "change_id": change_id,
        "decision_id": decision_id,
        "request_id": change.request_id,
    });
    if let (Some(map), Some(Value::Object(more))) = (data.as_object_mut(), e.detail) {
        map.extend(more);
    }
    NewEvent {
        id: format!("evt_{}", partnergate_audit::new_decision_id()),
        account: u.account.clone(),
        kind: e.kind.as_str().to_string(),
        user: Some(u.id.clone()),
        actor: change.actor.to_string(),
        change_id,
        decision_id,
        created_ms: change.now,
        data: data.to_string(),
        dedupe: e.dedupe,
    }
}
