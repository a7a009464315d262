//! The Allow decisions a write rests on: each an [`Allowed`] (its decision
//! id, the question, and every entity its answer was read from), asked
//! first over memory ([`Orchestrator::ask_as`]) and judged again inside the
//! write's transaction, once its locks are held ([`Orchestrator::reaffirm`]).
//!
//! Why again: memory may be behind the store (another replica's write not
//! yet fed, or a write that committed while this one waited for its locks,
//! such as the actor dismissed or its administrator rights revoked). Inside
//! the transaction, no other write to these entities can commit before this
//! one, so their rows are the state the write commits over: each entity the
//! answer was read from is compared with its row; any that differs is put
//! into memory from the row and the question asked again. An answer stands
//! only when memory held every one of its entities as stored. It never
//! knows HTTP, SQL or which locks the store takes.

use cedar_policy::EntityUid;
use serde_json::{json, Value};

use crate::error::{ConflictCode, OrchestratorError};
use crate::orchestrator::Orchestrator;
use crate::store::AccountTx;
use partnergate_core::authz::Query;
use partnergate_core::directory::Held;
use partnergate_policy::engine;

/// The longest an operation waits for its authorizing decision's record to
/// be durable under `--audit-required`.
const AUDIT_ACK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// How many times a question is asked again inside a transaction before
/// the write is refused ([`ConflictCode::DecisionStale`]): each round brings
/// memory up to the rows, so a second round finds them equal unless a row
/// does not read back.
const REAFFIRM_ROUNDS: usize = 3;

/// One Allow decision: its id (which change records name), the question,
/// and the entities its answer was read from.
#[derive(Debug, Clone)]
pub(crate) struct Allowed {
    pub(crate) id: String,
    query: Query,
    deps: Vec<EntityUid>,
    /// Whether `deps` covers every entity the answer was read from.
    complete: bool,
}

/// The Allow decisions a write rests on, which its change records name:
/// `by` for each record, except the records `others` names (the replaced
/// partner: its `dismiss_user` decision). Empty for the writes no policy
/// question precedes (an invitee's acceptance, the sweep's).
#[derive(Debug, Default)]
pub(crate) struct AllowDecisions {
    by: Option<Allowed>,
    pub(crate) others: Vec<(String, Allowed)>,
}

impl AllowDecisions {
    /// Every record rests on the decision `allowed`.
    pub(crate) fn by(allowed: Allowed) -> Self {
        AllowDecisions {
            by: Some(allowed),
            others: Vec::new(),
        }
    }

    /// The decision id a change record of `uid` (Cedar syntax) names.
    pub(crate) fn of(&self, uid: &str) -> Option<String> {
        self.others
            .iter()
            .find(|(u, _)| u == uid)
            .map(|(_, a)| a.id.clone())
            .or_else(|| self.by.as_ref().map(|a| a.id.clone()))
    }
}

impl Orchestrator {
    /// Ask the policies (the decision record carries `request_id`); an
    /// Allow is an [`Allowed`], which the operation's change records name;
    /// a Deny is an error carrying the reasons.
    pub(crate) fn ask_as(
        &self,
        request_id: Option<String>,
        actor: &EntityUid,
        action: &str,
        resource: &EntityUid,
        context: Option<Value>,
    ) -> Result<Allowed, OrchestratorError> {
        let q = Query::new(
            actor.clone(),
            engine::uid_from_json("action", &json!({"type": "Action", "id": action}))?,
            resource.clone(),
        )
        .with_context(context)
        .with_request_id(request_id);
        self.ask_query(q)
    }

    fn ask_query(&self, q: Query) -> Result<Allowed, OrchestratorError> {
        let answer = self.authz.is_authorized(&q)?;
        // Called off the async threads (spawn_blocking): blocking is fine.
        answer
            .wait_durable(AUDIT_ACK_TIMEOUT)
            .map_err(OrchestratorError::AuditUnavailable)?;
        if answer.decision.is_allowed() {
            Ok(Allowed {
                id: answer.decision_id,
                deps: answer
                    .entities
                    .deps()
                    .iter()
                    .map(|(u, _)| u.clone())
                    .collect(),
                complete: answer.entities.is_complete(),
                query: q,
            })
        } else {
            tracing::info!(actor = %q.principal, action = %q.action, resource = %q.resource,
                reasons = ?answer.decision.reasons, "orchestrator: policy deny");
            Err(OrchestratorError::Denied {
                actor: q.principal.to_string(),
                action: id_of_action(&q.action),
                resource: q.resource.to_string(),
                reasons: answer.decision.reasons,
                errors: answer.decision.errors,
            })
        }
    }

    /// Inside the write's transaction, its locks held: `decided` judged
    /// again over the stored state (see the module doc). The decisions that
    /// stand, with the ids of any asked again; a Deny now is the error.
    pub(crate) fn reaffirm(
        &self,
        tx: &mut dyn AccountTx,
        held: &Held<'_>,
        decided: &AllowDecisions,
    ) -> Result<AllowDecisions, OrchestratorError> {
        let by = decided
            .by
            .as_ref()
            .map(|a| self.reaffirm_one(tx, held, a))
            .transpose()?;
        let others = decided
            .others
            .iter()
            .map(|(u, a)| Ok((u.clone(), self.reaffirm_one(tx, held, a)?)))
            .collect::<Result<_, OrchestratorError>>()?;
        Ok(AllowDecisions { by, others })
    }

    fn reaffirm_one(
        &self,
        tx: &mut dyn AccountTx,
        held: &Held<'_>,
        first: &Allowed,
    ) -> Result<Allowed, OrchestratorError> {
        let mut current = first.clone();
        for _ in 0..REAFFIRM_ROUNDS {
            if !current.complete {
                break;
            }
            let mut same = true;
            for uid in &current.deps {
                let row = tx.entity(&uid.to_string())?;
                let stored = row.as_ref().map(|r| r.json.as_str());
                // A stored user's row is stable only under its account's
                // lock: one this write does not hold (or cannot name) is
                // not used.
                if let Some(json) = stored.filter(|_| uid.type_name().to_string() == "User") {
                    let account = account_of(json).unwrap_or_default();
                    if !tx.holds_account(&account) {
                        return Err(unlocked(uid, &account));
                    }
                }
                if !held.holds_as_stored(uid, stored) {
                    held.refresh(uid, stored);
                    same = false;
                }
            }
            if same {
                return Ok(current);
            }
            tracing::info!(actor = %current.query.principal, action = %current.query.action,
                "orchestrator: memory was behind the store; asking again inside the write");
            current = self.ask_query(current.query.clone())?;
        }
        Err(OrchestratorError::Conflict {
            code: ConflictCode::DecisionStale,
            message: format!(
                "the entities the decision {} rests on could not be read as stored; try again",
                first.id
            ),
        })
    }
}

/// The account a stored user's JSON names (`attrs.account`), if any.
fn account_of(json: &str) -> Option<String> {
    let v: Value = serde_json::from_str(json).ok()?;
    v.pointer("/attrs/account/__entity/id")?
        .as_str()
        .map(str::to_string)
}

/// An answer that rests on a user of an account the write does not lock:
/// its row could change before the write commits, so it is not used.
fn unlocked(uid: &EntityUid, account: &str) -> OrchestratorError {
    OrchestratorError::Conflict {
        code: ConflictCode::DecisionStale,
        message: format!(
            "the decision rests on {uid} of account `{account}`, which this write does not lock"
        ),
    }
}

/// An action uid's id (`Action::"dismiss_user"` → `dismiss_user`).
fn id_of_action(action: &EntityUid) -> String {
    action.id().unescaped().to_string()
}
