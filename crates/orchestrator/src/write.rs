//! The orchestrator's write path: [`ScopedWrites`], the write operations
//! under one [`WriteScope`] (from [`Orchestrator::with`]); the policy
//! question asked first ([`ScopedWrites::ask`]); the one store transaction
//! run inside the directory's write path, with the change records naming
//! the [`AllowDecisions`] it rests on (`commit`); the reads inside that
//! transaction. The operations are in `ops`. It never knows HTTP or the
//! command line.

use cedar_policy::EntityUid;
use serde_json::{json, Value};

use crate::error::OrchestratorError;
use crate::orchestrator::Orchestrator;
use crate::scope::WriteScope;
use crate::store::AccountTx;
use crate::user::UserView;
use crate::view::Outcome;
use partnergate_audit as audit;
use partnergate_core::authz::Query;
use partnergate_core::directory;
use partnergate_core::store::EntityRecord;
use partnergate_policy::engine;

/// The longest an operation waits for its authorizing decision's record to
/// be durable under `--audit-required`.
const AUDIT_ACK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// An operation inside [`ScopedWrites::commit`]'s transaction: the records
/// to write and the outcome to answer. Its second argument is the current
/// time read inside the transaction, once the write lock is held: every
/// time-dependent check of a write judges at that instant (a reading taken
/// before waiting for the lock could be older than a commit it follows).
pub(crate) type OutcomeOp<'a> = dyn FnMut(&mut dyn AccountTx, i64) -> Result<(Vec<EntityRecord>, Outcome), OrchestratorError>
    + 'a;

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

/// The Allow decisions a write rests on, which its change records name:
/// `by` for each record, except the records `others` names (the replaced
/// partner: its `dismiss_user` decision). Empty for the writes no policy
/// question precedes (an invitee's acceptance, the sweep's).
#[derive(Debug, Default)]
pub(crate) struct AllowDecisions {
    by: Option<String>,
    pub(crate) others: Vec<(String, String)>,
}

impl AllowDecisions {
    /// Every record rests on the decision `id`.
    pub(crate) fn by(id: String) -> Self {
        AllowDecisions {
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

impl Orchestrator {
    /// The write operations under `scope` (deadline, `Idempotency-Key`,
    /// request id); `WriteScope::default()` for none.
    pub fn with(&self, scope: WriteScope) -> ScopedWrites<'_> {
        ScopedWrites { orch: self, scope }
    }
}

impl ScopedWrites<'_> {
    /// Ask the policies (the decision record carries the scope's request
    /// id); an Allow gives its decision id, which the operation's change
    /// records name; a Deny is an error carrying the reasons.
    pub(crate) fn ask(
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

    /// Run `op` in one store transaction inside the directory's write path
    /// ([`Directory::commit_with`]: the store commit and the memory update
    /// under the directory's writer lock), logging one change record per
    /// written entity that names the decision that allowed it (`decided`)
    /// and the scope's request id. Under the [`WriteScope`], the transaction
    /// first stops on a remembered `Idempotency-Key` or a passed deadline,
    /// and remembers the key's answer (the outcome) with the writes.
    pub(crate) fn commit(
        &self,
        (operation, actor): (&str, &str),
        decided: &AllowDecisions,
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

    pub(crate) fn simple_write(
        &self,
        uid: &EntityUid,
        (operation, actor): (&str, &str),
        decided: &AllowDecisions,
        change: impl Fn(&mut dyn AccountTx, &mut UserView, i64) -> Result<(), OrchestratorError>,
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
