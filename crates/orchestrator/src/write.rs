//! The orchestrator's write path: [`ScopedWrites`], the write operations
//! under one [`WriteScope`] (from [`Orchestrator::with`]); the one store
//! transaction run inside the directory's write path, which judges the
//! [`AllowDecisions`] it rests on again once its locks are held (`allowed`)
//! and logs change records naming them (`commit`); the reads inside that
//! transaction. The operations are in `ops`. It never knows HTTP or the
//! command line.

use cedar_policy::EntityUid;
use serde_json::Value;

use crate::allowed::{AllowDecisions, Allowed};
use crate::error::OrchestratorError;
use crate::events::emit::{new_event, ChangeOf};
use crate::events::WriteTx;
use crate::orchestrator::Orchestrator;
use crate::scope::WriteScope;
use crate::store::{AccountTx, WriteLocks};
use crate::user::UserView;
use crate::view::Outcome;
use partnergate_audit as audit;
use partnergate_core::directory;
use partnergate_core::store::EntityRecord;

/// An operation inside [`ScopedWrites::commit`]'s transaction: the records
/// to write and the outcome to answer. Its second argument is the current
/// time read inside the transaction, once the write lock is held: every
/// time-dependent check of a write judges at that instant (a reading taken
/// before waiting for the lock could be older than a commit it follows).
/// The operation emits its lifecycle events through the [`WriteTx`] it
/// gets ([`WriteTx::emit`]): they are written with its records.
pub(crate) type OutcomeOp<'a, O = Outcome> =
    dyn FnMut(&mut WriteTx<'_>, i64) -> Result<(Vec<EntityRecord>, O), OrchestratorError> + 'a;

/// The orchestrator's write operations bound to one caller's
/// [`WriteScope`] (its deadline, `Idempotency-Key` and request id), made by
/// [`Orchestrator::with`]: each operation asks the policies, then commits
/// under that scope. The scope is a value the operations read, not state of
/// the thread they run on; everything else is the [`Orchestrator`]'s
/// (`Deref`).
pub struct ScopedWrites<'a> {
    orch: &'a Orchestrator,
    pub(crate) scope: WriteScope,
}

impl std::ops::Deref for ScopedWrites<'_> {
    type Target = Orchestrator;
    fn deref(&self) -> &Orchestrator {
        self.orch
    }
}

impl Orchestrator {
    /// The write operations under `scope` (deadline, `Idempotency-Key`,
    /// request id); `WriteScope::default()` for none.
    pub fn with(&self, scope: WriteScope) -> ScopedWrites<'_> {
        ScopedWrites { orch: self, scope }
    }
}

impl ScopedWrites<'_> {
    /// Ask the policies under the scope's request id
    /// ([`Orchestrator::ask_as`]).
    pub(crate) fn ask(
        &self,
        actor: &EntityUid,
        action: &str,
        resource: &EntityUid,
        context: Option<Value>,
    ) -> Result<Allowed, OrchestratorError> {
        self.orch.ask_as(
            self.scope.request_id.clone(),
            actor,
            action,
            resource,
            context,
        )
    }

    /// Run `op` in one store transaction inside the directory's write path
    /// ([`Directory::commit_beside`]: beside this replica's writes of other
    /// accounts, the written entities' stripes claimed from before the store
    /// commit until memory holds them), logging one change record per
    /// written entity that names the decision that allowed it (`decided`)
    /// and the scope's request id. Under the [`WriteScope`], the transaction
    /// first stops on a remembered `Idempotency-Key` or a passed deadline,
    /// and remembers the key's answer (the outcome) with the writes.
    pub(crate) fn commit<O: serde::Serialize>(
        &self,
        (operation, actor): (&str, &str),
        decided: &AllowDecisions,
        mut locks: WriteLocks,
        op: &mut OutcomeOp<'_, O>,
        schema: Option<&cedar_policy::Schema>,
    ) -> Result<O, OrchestratorError> {
        // The actor's account is locked too: the answers rest on its row.
        if actor.starts_with("User::") {
            locks.users.push(actor.to_string());
        }
        let scope = &self.scope;
        let mut outcome = None;
        let changes = std::cell::RefCell::new(None);
        self.directory().commit_beside(schema, |held| {
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
                // The policy answers, judged again over what this transaction
                // reads: nothing they rest on can change before it commits.
                let decided = self.reaffirm(tx, held, decided)?;
                // The clock is read here, inside the transaction that commits:
                // no other write can commit between this reading and ours.
                let now = self.now();
                let mut wtx = WriteTx::new(tx);
                let (records, o) = op(&mut wtx, now)?;
                let emitted = std::mem::take(&mut wtx.emitted);
                let tx = wtx.store();
                // Beside this replica's other writes: from here until memory
                // holds them, no other write or feed batch of these entities
                // goes into memory (their states before are read after).
                held.claim(records.iter().map(|r| r.uid.as_str()));
                if let Some(i) = &scope.idempotency {
                    tx.remember(&i.key, &i.answer(&o)?)?;
                }
                // The change records go into the same transaction, kept until
                // the log holds them; memory still holds the state before.
                let prepared = self.authz.prepare_changes(
                    records
                        .iter()
                        .map(|r| {
                            let before = directory::uid_from_key(&r.uid)
                                .and_then(|u| self.directory().get_json(&u))
                                .unwrap_or(Value::Null);
                            let after = serde_json::from_str(&r.json).unwrap_or(Value::Null);
                            audit::ChangeEvent::new(actor, operation, before, after)
                                .decided_by(decided.of(&r.uid))
                                .request(scope.request_id.clone())
                        })
                        .collect(),
                );
                tx.keep_changes(prepared.kept())?;
                // The events of the write, in the same transaction, each
                // naming its user's change record and decision.
                if !emitted.is_empty() {
                    let change_of = ChangeOf {
                        actor,
                        operation,
                        request_id: scope.request_id.as_deref(),
                        now,
                    };
                    let ids: Vec<(&str, Option<&str>)> = records
                        .iter()
                        .map(|r| r.uid.as_str())
                        .zip(prepared.change_ids())
                        .collect();
                    let events: Vec<_> = emitted
                        .into_iter()
                        .map(|e| {
                            let uid = user_uid(&e.user.id);
                            let change_id = ids
                                .iter()
                                .find(|(u, _)| *u == uid)
                                .and_then(|(_, c)| c.map(str::to_string));
                            new_event(e, &change_of, change_id, decided.of(&uid))
                        })
                        .collect();
                    tx.keep_events(&events)?;
                }
                *changes.borrow_mut() = Some(prepared);
                outcome = Some(o);
                Ok(records)
            };
            let records = self.store.transact(&locks, &mut guarded)?;
            if let Some(prepared) = changes.borrow_mut().take() {
                self.authz.log_changes(prepared);
            }
            Ok::<_, OrchestratorError>((records, ()))
        })?;
        outcome.ok_or_else(|| OrchestratorError::Corrupt("no outcome".into()))
    }

    pub(crate) fn simple_write(
        &self,
        uid: &EntityUid,
        (operation, actor): (&str, &str),
        decided: &AllowDecisions,
        change: impl Fn(&mut WriteTx<'_>, &mut UserView, i64) -> Result<(), OrchestratorError>,
    ) -> Result<Outcome, OrchestratorError> {
        let pack = self.authz.evaluator().current();
        let schema = pack.schema.as_ref();
        let outcome = self.commit(
            (operation, actor),
            decided,
            WriteLocks::users(&[uid]),
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
}

/// Inside a transaction: the account's users as stored now.
pub(crate) fn users_in(
    tx: &mut dyn AccountTx,
    account: &str,
) -> Result<Vec<UserView>, OrchestratorError> {
    tx.account_users(account)?
        .iter()
        .map(UserView::from_record)
        .collect()
}

pub(crate) fn user_in(
    tx: &mut dyn AccountTx,
    uid: &EntityUid,
) -> Result<UserView, OrchestratorError> {
    let r = tx
        .entity(&uid.to_string())?
        .ok_or_else(|| OrchestratorError::NotFound(format!("no user {uid}")))?;
    UserView::from_record(&r)
}

/// A user's uid in Cedar syntax, as the records name it.
fn user_uid(id: &str) -> String {
    partnergate_policy::engine::uid_from_json(
        "user",
        &serde_json::json!({"type": "User", "id": id}),
    )
    .map_or_else(|_| format!("User::{id:?}"), |u| u.to_string())
}
