//! The own API's question and answer on the wire (`POST /v1/is_authorized`
//! and its batch items, the console's Try): [`IsAuthorizedRequest`] into a
//! `Query`, an `Answer` into [`IsAuthorizedResponse`]'s JSON. Knows no
//! route and no handler.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;

use crate::error::AppError;
use partnergate_core::authz::{Answer, Query};
use partnergate_policy::engine::{self, Effect, Reason};

/// One authorization question on the wire. A uid is `"User::\"alice\""` or
/// `{"type": "User", "id": "alice"}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IsAuthorizedRequest {
    /// Who asks: the principal's uid.
    #[schema(value_type = Object, example = json!("User::\"alice\""))]
    pub principal: Value,
    /// What is asked: the action's uid (`Action::"<id>"`).
    #[schema(value_type = Object, example = json!("Action::\"view_account\""))]
    pub action: Value,
    /// On what: the resource's uid.
    #[schema(value_type = Object, example = json!("Account::\"acme\""))]
    pub resource: Value,
    /// The Cedar context (a JSON object).
    #[schema(value_type = Option<Object>)]
    pub context: Option<Value>,
    /// Extra Cedar entity JSON, over the stored entities, for this request only.
    #[schema(value_type = Option<Vec<Object>>)]
    pub entities: Option<Value>,
}

/// A decision on the wire.
#[derive(Debug, Serialize, ToSchema)]
pub struct IsAuthorizedResponse {
    /// "Allow" or "Deny".
    #[schema(value_type = String, example = "Allow")]
    pub decision: Effect,
    /// The determining policies.
    #[schema(value_type = Vec<Object>)]
    pub reasons: Vec<Reason>,
    /// The decision's errors (evaluation errors, an unknown principal); any
    /// error makes the decision a Deny.
    pub errors: Vec<String>,
    /// The content-hash version of the policy set that decided.
    pub policy_version: String,
    /// The decision's id, as recorded in the decision log.
    pub decision_id: String,
}

/// The JSON body of `answer` as [`IsAuthorizedResponse`] writes it. All
/// but the decision id is a function of the decision, so it is encoded once
/// and kept in the answer's [`Derived`](partnergate_core::authz::Derived)
/// slot, which the decision cache shares: a decision served from the cache
/// is not encoded again.
pub fn response_body(answer: &Answer) -> String {
    let made;
    let head = if let Some(kept) = answer
        .derived
        .get_or_init(|| BodyHead::of(&answer.decision))
    {
        kept
    } else {
        made = BodyHead::of(&answer.decision);
        &made
    };
    let mut body = String::with_capacity(head.0.len() + 64);
    body.push_str(&head.0);
    body.push_str(",\"decision_id\":");
    body.push_str(&Value::String(answer.decision_id.clone()).to_string());
    body.push('}');
    body
}

/// [`IsAuthorizedResponse`]'s JSON without the decision id and the closing
/// brace: what every answer of one decision shares.
struct BodyHead(Box<str>);

impl BodyHead {
    fn of(d: &engine::Decision) -> BodyHead {
        let v = json!({"decision": d.decision, "reasons": d.reasons, "errors": d.errors,
            "policy_version": d.policy_version});
        let mut text = v.to_string();
        text.pop(); // the closing brace: the decision id follows
        BodyHead(text.into_boxed_str())
    }
}

impl From<Answer> for IsAuthorizedResponse {
    fn from(a: Answer) -> Self {
        IsAuthorizedResponse {
            decision: a.decision.decision,
            reasons: a.decision.reasons,
            errors: a.decision.errors,
            policy_version: a.decision.policy_version,
            decision_id: a.decision_id,
        }
    }
}

/// Turn a wire request into a typed query.
pub fn to_query(r: IsAuthorizedRequest) -> Result<Query, AppError> {
    Ok(Query::new(
        engine::uid_from_json("principal", &r.principal)?,
        engine::uid_from_json("action", &r.action)?,
        engine::uid_from_json("resource", &r.resource)?,
    )
    .with_context(r.context)
    .with_entities(r.entities))
}
