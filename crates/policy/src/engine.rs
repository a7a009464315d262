//! Making one decision: a typed request (uids, context) checked against the
//! pack's schema, evaluated by Cedar over an entity set, and turned into a
//! [`Decision`] with reasons (policy ids and descriptions) and errors.
//!
//! This module owns PartnerGate's decision semantics on top of Cedar's:
//! fail closed. A request whose principal is not among the entities, or whose
//! evaluation raised any policy error while Cedar said Allow, is a Deny with
//! the cause in `errors`. [`Semantics::Cedar`] gives Cedar's own answer, for
//! running test suites written for the Cedar CLI.

use std::borrow::Borrow;
use std::str::FromStr;
use std::sync::OnceLock;

use cedar_policy::{
    Authorizer, Context, Entities, EntityUid, PolicySet, Request, Response, RestrictedExpression,
    Schema,
};
use dashmap::DashMap;
use serde::{Deserialize, Serialize};

use crate::policies::PolicyPack;

/// Why a request could not even be evaluated (a 400 on the wire, exit 1 in
/// the CLI). Each message names the field and the problem.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum RequestError {
    /// One field of the request is wrong.
    #[error("field `{field}`: {message}")]
    Field {
        /// The request field at fault: `principal`, `action`, `resource` or `context`.
        field: String,
        /// What is wrong with it, for a human.
        message: String,
    },
    /// The entity JSON does not parse or does not fit the schema (Cedar's message).
    #[error("entities: {0}")]
    Entities(String),
    /// Cedar rejected the assembled request against the schema (Cedar's message).
    #[error("request does not fit the schema: {0}")]
    Schema(String),
}

impl RequestError {
    /// A [`RequestError::Field`] naming `field`.
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        RequestError::Field {
            field: field.to_string(),
            message: message.into(),
        }
    }
}

/// Allow or Deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash)]
pub enum Effect {
    /// The request is permitted.
    Allow,
    /// The request is refused: no permit applied, a forbid did, or fail-closed semantics turned it down.
    Deny,
}

impl Effect {
    /// `Allow` or `Deny`, as the wire, the log and serde write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Allow => "Allow",
            Effect::Deny => "Deny",
        }
    }
}

impl std::fmt::Display for Effect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A text that is neither `allow` nor `deny` (in any case).
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error("`{0}` is neither \"allow\" nor \"deny\"")]
pub struct EffectParseError(pub String);

/// `allow` or `deny`, in any case (suites, `audit query --decision`).
impl FromStr for Effect {
    type Err = EffectParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("allow") {
            Ok(Effect::Allow)
        } else if s.eq_ignore_ascii_case("deny") {
            Ok(Effect::Deny)
        } else {
            Err(EffectParseError(s.to_string()))
        }
    }
}

/// A determining policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reason {
    /// The policy's id: its `@id` annotation, else Cedar's `policyN`.
    pub id: String,
    /// The policy's `@description` annotation, if it has one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub description: Option<String>,
}

/// The answer to one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// Allow or Deny, after the [`Semantics`] asked for.
    pub decision: Effect,
    /// The determining policies, sorted by id; empty when fail-closed semantics turned an Allow into a Deny.
    pub reasons: Vec<Reason>,
    /// Evaluation errors (Cedar's messages) and the cause of a fail-closed Deny.
    pub errors: Vec<String>,
    /// The version (content hash) of the pack that decided.
    pub policy_version: String,
}

impl Decision {
    /// Whether the decision is [`Effect::Allow`].
    pub fn is_allowed(&self) -> bool {
        self.decision == Effect::Allow
    }
}

/// Which answer to give when Cedar's and fail-closed semantics differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Semantics {
    /// PartnerGate's: unknown principal or any evaluation error => Deny.
    #[default]
    FailClosed,
    /// Cedar's own decision, for Cedar CLI compatible test suites.
    Cedar,
}

/// The fail-closed answer for a principal the store does not know: a Deny
/// with no reasons and `why` in its errors.
pub fn unknown_principal(pack: &PolicyPack, principal: &EntityUid, why: &str) -> Decision {
    Decision {
        decision: Effect::Deny,
        reasons: Vec::new(),
        errors: vec![format!("unknown principal {principal}: {why}")],
        policy_version: pack.version.clone(),
    }
}

/// How many parsed uids [`parse_uid`] remembers (emptied when full).
pub const UID_CACHE_MAX: usize = 100_000;

/// Parse an entity uid written as `Type::"id"` (Cedar syntax).
///
/// Cedar's parser costs several microseconds per uid (it builds its lexer's
/// automaton each time), as much as a decision's evaluation on the HTTP path;
/// so uids that parsed are remembered (parsing is deterministic: the cache
/// only saves time). Failures are not cached.
pub fn parse_uid(field: &str, s: &str) -> Result<EntityUid, RequestError> {
    static PARSED: OnceLock<DashMap<String, EntityUid>> = OnceLock::new();
    let key = s.trim();
    let cache = PARSED.get_or_init(DashMap::new);
    if let Some(uid) = cache.get(key) {
        return Ok(uid.clone());
    }
    let uid = EntityUid::from_str(key).map_err(|e| {
        RequestError::field(
            field,
            format!("`{s}` is not an entity uid like User::\"alice\" ({e})"),
        )
    })?;
    if cache.len() >= UID_CACHE_MAX {
        cache.clear();
    }
    cache.insert(key.to_string(), uid.clone());
    Ok(uid)
}

/// Parse an entity uid from JSON: `"Type::\"id\""` or `{"type": .., "id": ..}`
/// (also Cedar's `{"__entity": {...}}`).
pub fn uid_from_json(field: &str, v: &serde_json::Value) -> Result<EntityUid, RequestError> {
    match v {
        serde_json::Value::String(s) => parse_uid(field, s),
        serde_json::Value::Object(_) => EntityUid::from_json(v.clone()).map_err(|e| {
            RequestError::field(
                field,
                format!("expected {{\"type\": \"User\", \"id\": \"alice\"}}: {e}"),
            )
        }),
        _ => Err(RequestError::field(
            field,
            "expected an entity uid: \"User::\\\"alice\\\"\" or {\"type\": \"User\", \"id\": \"alice\"}",
        )),
    }
}

/// Build a Cedar request, validated against the schema when there is one:
/// unknown entity types, unknown actions, wrong principal/resource types for
/// the action and ill-typed context are all errors naming the field.
pub fn build_request(
    schema: Option<&Schema>,
    principal: EntityUid,
    action: EntityUid,
    resource: EntityUid,
    context: Option<serde_json::Value>,
) -> Result<Request, RequestError> {
    if let Some(schema) = schema {
        check_uid_type(schema, "principal", &principal)?;
        check_uid_type(schema, "resource", &resource)?;
        if !schema.actions().any(|a| a == &action) {
            return Err(RequestError::field(
                "action",
                format!("unknown action {action}: the schema does not declare it"),
            ));
        }
    }
    let context = match context {
        None | Some(serde_json::Value::Null) => match schema {
            // An absent context is the empty record; the schema may still
            // require attributes, which the validation below reports.
            // The empty record is checked directly (parsing `{}` through
            // Cedar's JSON deserialiser costs microseconds); when it does not
            // fit, the parse gives the error the schema's JSON reading words.
            Some(schema) => match Context::empty().validate(schema, &action) {
                Ok(()) => Context::empty(),
                Err(_) => Context::from_json_value(serde_json::json!({}), Some((schema, &action)))
                    .map_err(|e| RequestError::field("context", e.to_string()))?,
            },
            None => Context::empty(),
        },
        Some(serde_json::Value::Object(map)) => match fast_clock_context(schema, &action, &map) {
            // The sidecar's clock alone (`{"now": datetime}`) that fits the
            // schema: built directly, as Cedar's JSON reading would build it
            // (its deserialiser costs tens of microseconds on an extension
            // value). Anything else, including a clock-only context the
            // schema refuses (an action that also requires `invitee`), is
            // read by Cedar, whose error names the field.
            Some(context) => context,
            None => Context::from_json_value(
                serde_json::Value::Object(map),
                schema.map(|s| (s, &action)),
            )
            .map_err(|e| RequestError::field("context", e.to_string()))?,
        },
        Some(_) => return Err(RequestError::field("context", "must be a JSON object")),
    };
    Request::new(principal, action, resource, context, schema)
        .map_err(|e| RequestError::Schema(e.to_string()))
}

/// The context of `map` when it is a lone datetime ([`lone_datetime`])
/// that Cedar builds and `schema` accepts for `action`; `None` otherwise (the
/// caller then reads `map` with Cedar's JSON reader, for its errors).
fn fast_clock_context(
    schema: Option<&Schema>,
    action: &EntityUid,
    map: &serde_json::Map<String, serde_json::Value>,
) -> Option<Context> {
    let (name, arg) = lone_datetime(map)?;
    let context = clock_context(name, arg)?;
    match schema {
        Some(schema) => context.validate(schema, action).ok().map(|()| context),
        None => Some(context),
    }
}

thread_local! {
    /// The last context [`clock_context`] built on this thread: requests
    /// decided within the same millisecond share it.
    static LAST_CLOCK_CONTEXT: std::cell::RefCell<Option<(String, String, Context)>> =
        const { std::cell::RefCell::new(None) };
}

/// The context `{name: datetime(arg)}`, or `None` when Cedar refuses `arg`
/// (the caller's fallback, Cedar's JSON reader, then words the error).
/// Building one costs microseconds (Cedar parses the extension's name each
/// time), so the last one built on this thread is kept and given again for
/// the same attribute and argument.
fn clock_context(name: &str, arg: &str) -> Option<Context> {
    let kept = LAST_CLOCK_CONTEXT.with_borrow(|last| {
        last.as_ref()
            .filter(|(n, a, _)| n == name && a == arg)
            .map(|(_, _, c)| c.clone())
    });
    if kept.is_some() {
        return kept;
    }
    let context =
        Context::from_pairs([(name.to_string(), RestrictedExpression::new_datetime(arg))]).ok()?;
    LAST_CLOCK_CONTEXT.set(Some((name.to_string(), arg.to_string(), context.clone())));
    Some(context)
}

/// The attribute name and argument of a context whose only attribute is a
/// datetime in Cedar's JSON form (`{"now": {"__extn": {"fn": "datetime",
/// "arg": "..."}}}`, nothing else in either object).
fn lone_datetime(map: &serde_json::Map<String, serde_json::Value>) -> Option<(&str, &str)> {
    let (name, value) = map.iter().next().filter(|_| map.len() == 1)?;
    let extn = value.as_object().filter(|o| o.len() == 1)?.get("__extn")?;
    let call = extn.as_object().filter(|o| o.len() == 2)?;
    if call.get("fn")?.as_str()? != "datetime" {
        return None;
    }
    Some((name.as_str(), call.get("arg")?.as_str()?))
}

fn check_uid_type(schema: &Schema, field: &str, uid: &EntityUid) -> Result<(), RequestError> {
    let ty = uid.type_name();
    if schema.entity_types().any(|t| t == ty) {
        Ok(())
    } else {
        Err(RequestError::field(
            field,
            format!("unknown entity type `{ty}`: the schema does not declare it"),
        ))
    }
}

/// Parse Cedar entity JSON (an array of `{uid, attrs, parents}`), validated
/// against the schema when there is one; action entities come from the schema.
pub fn parse_entities(
    schema: Option<&Schema>,
    json: serde_json::Value,
) -> Result<Entities, RequestError> {
    Entities::from_json_value(json, schema).map_err(|e| RequestError::Entities(e.to_string()))
}

/// An authorization question as JSON and the command line carry it: uids in
/// Cedar syntax, an optional context object and the Cedar entity JSON to
/// decide over. [`Question::parse`] turns it into a checked request; every
/// caller that decides from JSON (`authorize`, suites, counterexample
/// replay, `audit replay`, `audit stress`) goes through it.
#[derive(Debug, Clone)]
pub struct JsonQuestion<'a> {
    /// The principal's uid in Cedar syntax (`User::"alice"`).
    pub principal: &'a str,
    /// The action's uid in Cedar syntax (`Action::"read"`).
    pub action: &'a str,
    /// The resource's uid in Cedar syntax.
    pub resource: &'a str,
    /// The context record; `None` or JSON `null` is the empty record.
    pub context: Option<serde_json::Value>,
    /// The Cedar entity JSON (an array of `{uid, attrs, parents}`) to decide over.
    pub entities: serde_json::Value,
}

/// Which part of a [`JsonQuestion`] is wrong (the inner error names the
/// field): callers word the three differently.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum QuestionError {
    /// A uid is not one (`field `principal`: ...`).
    #[error(transparent)]
    Uid(RequestError),
    /// The request does not fit the schema (types, action, context).
    #[error(transparent)]
    Request(RequestError),
    /// The entities do not parse or do not fit the schema.
    #[error(transparent)]
    Entities(RequestError),
}

impl QuestionError {
    /// The error inside, whichever part it is about.
    pub fn inner(&self) -> &RequestError {
        match self {
            QuestionError::Uid(e) | QuestionError::Request(e) | QuestionError::Entities(e) => e,
        }
    }
}

/// A [`JsonQuestion`] checked against a schema: the Cedar request and the
/// entity set, ready to decide.
#[derive(Debug, Clone)]
pub struct Question {
    /// The Cedar request, checked against the schema when there is one.
    pub request: Request,
    /// The entity set, checked against the schema when there is one.
    pub entities: Entities,
}

impl Question {
    /// Parse the uids, build the request ([`build_request`]) and parse the
    /// entities ([`parse_entities`]), in that order, against `schema` (the
    /// pack's, or another one: `--equivalent` replays a counterexample of
    /// one pack against the other).
    pub fn parse(schema: Option<&Schema>, q: JsonQuestion<'_>) -> Result<Self, QuestionError> {
        let principal = parse_uid("principal", q.principal).map_err(QuestionError::Uid)?;
        let action = parse_uid("action", q.action).map_err(QuestionError::Uid)?;
        let resource = parse_uid("resource", q.resource).map_err(QuestionError::Uid)?;
        let request = build_request(schema, principal, action, resource, q.context)
            .map_err(QuestionError::Request)?;
        let entities = parse_entities(schema, q.entities).map_err(QuestionError::Entities)?;
        Ok(Question { request, entities })
    }

    /// Decide the question with `pack`.
    pub fn decide(&self, pack: &PolicyPack, semantics: Semantics) -> Decision {
        decide(pack, &self.request, &self.entities, semantics)
    }
}

/// Decide a [`JsonQuestion`] with `pack`, checked against the pack's schema.
pub fn decide_json(
    pack: &PolicyPack,
    q: JsonQuestion<'_>,
    semantics: Semantics,
) -> Result<Decision, QuestionError> {
    Ok(Question::parse(pack.schema.as_ref(), q)?.decide(pack, semantics))
}

/// Evaluate `request` against `pack` over `entities`.
pub fn decide(
    pack: &PolicyPack,
    request: &Request,
    entities: &Entities,
    semantics: Semantics,
) -> Decision {
    evaluate(pack, request, entities, semantics, || {
        pack.policy_index().candidates(request, entities)
    })
}

/// Evaluate against an explicit policy set (not indexed: every policy of
/// `policy_set` is evaluated) while describing reasons from `pack`.
pub fn decide_with(
    policy_set: &PolicySet,
    pack: &PolicyPack,
    request: &Request,
    entities: &Entities,
    semantics: Semantics,
) -> Decision {
    evaluate(pack, request, entities, semantics, || policy_set)
}

/// What [`decide`] and [`decide_with`] share: under fail-closed semantics a
/// principal that is not in `entities` is denied before any policy is
/// chosen or evaluated; otherwise Cedar evaluates the policies `policies`
/// gives, and [`to_decision`] applies the semantics to its answer.
fn evaluate<P: Borrow<PolicySet>>(
    pack: &PolicyPack,
    request: &Request,
    entities: &Entities,
    semantics: Semantics,
    policies: impl FnOnce() -> P,
) -> Decision {
    if semantics == Semantics::FailClosed {
        if let Some(p) = request.principal() {
            if entities.get(p).is_none() {
                return unknown_principal(pack, p, "not in the entity store nor in the request");
            }
        }
    }
    let policies = policies();
    let response = Authorizer::new().is_authorized(request, policies.borrow(), entities);
    to_decision(pack, &response, semantics)
}

fn to_decision(pack: &PolicyPack, response: &Response, semantics: Semantics) -> Decision {
    let mut reasons: Vec<Reason> = response
        .diagnostics()
        .reason()
        .map(|id| Reason {
            id: id.to_string(),
            description: pack.description(id.as_ref()).map(str::to_string),
        })
        .collect();
    reasons.sort_by(|a, b| a.id.cmp(&b.id));
    let errors: Vec<String> = response
        .diagnostics()
        .errors()
        .map(|e| e.to_string())
        .collect();
    let mut decision = match response.decision() {
        cedar_policy::Decision::Allow => Effect::Allow,
        cedar_policy::Decision::Deny => Effect::Deny,
    };
    if semantics == Semantics::FailClosed && decision == Effect::Allow && !errors.is_empty() {
        // A forbid that errored was skipped by Cedar; never let that allow.
        decision = Effect::Deny;
        reasons.clear();
    }
    Decision {
        decision,
        reasons,
        errors,
        policy_version: pack.version.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_effect_parses_in_any_case_and_a_bad_one_is_named() {
        for (s, e) in [
            ("allow", Effect::Allow),
            ("ALLOW", Effect::Allow),
            ("Deny", Effect::Deny),
        ] {
            assert_eq!(s.parse::<Effect>(), Ok(e));
            assert_eq!(e.as_str().parse::<Effect>(), Ok(e));
        }
        let err = "permit".parse::<Effect>().unwrap_err().to_string();
        assert_eq!(err, "`permit` is neither \"allow\" nor \"deny\"");
    }

    #[test]
    fn parse_uid_gives_the_same_uid_the_second_time_and_still_rejects_bad_ones() {
        for s in [
            r#"User::"alice""#,
            r#" Ns::Type::"a\"b" "#,
            r#"Account::"""#,
        ] {
            let first = parse_uid("principal", s).unwrap();
            let again = parse_uid("principal", s).unwrap();
            assert_eq!(first, again);
            assert_eq!(first, EntityUid::from_str(s.trim()).unwrap());
        }
        for bad in ["User::alice", "", r#"User::"x"#] {
            for _ in 0..2 {
                let e = parse_uid("resource", bad).unwrap_err().to_string();
                assert!(e.contains("field `resource`"), "{e}");
            }
        }
    }

    /// A clock-only context, built directly (and reused within a thread),
    /// is the context Cedar's JSON reading builds, or an error where it errs.
    #[test]
    fn a_clock_only_context_is_the_context_cedars_json_reading_builds() {
        let schema_text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../schemas/partnergate.cedarschema"
        ))
        .unwrap();
        let (schema, _) = Schema::from_cedarschema_str(&schema_text).unwrap();
        let uid = |s: &str| EntityUid::from_str(s).unwrap();
        let action = uid(r#"Action::"view_account""#);
        for arg in [
            "2026-12-03",
            "2026-12-03T12:00:00Z",
            "2026-12-03T12:00:00.001Z",
            "2026-12-03T13:00:00+0100",
            "soon",
            "2026-13-01",
        ] {
            let json = serde_json::json!({"now": {"__extn": {"fn": "datetime", "arg": arg}}});
            let cedars = Context::from_json_value(json.clone(), Some((&schema, &action)))
                .map_err(|e| e.to_string())
                .and_then(|c| {
                    Request::new(
                        uid(r#"User::"a""#),
                        action.clone(),
                        uid(r#"Account::"x""#),
                        c,
                        Some(&schema),
                    )
                    .map_err(|e| e.to_string())
                });
            for round in 0..2 {
                let ours = build_request(
                    Some(&schema),
                    uid(r#"User::"a""#),
                    action.clone(),
                    uid(r#"Account::"x""#),
                    Some(json.clone()),
                );
                match (&cedars, ours) {
                    (Ok(c), Ok(o)) => {
                        let now = |r: &Request| r.context().and_then(|c| c.get("now"));
                        assert_eq!(now(c), now(&o), "{arg}, round {round}");
                        assert!(now(&o).is_some(), "{arg}");
                    }
                    (Err(_), Err(e)) => assert!(e.to_string().contains("context"), "{arg}: {e}"),
                    (c, o) => panic!("{arg}, round {round}: Cedar {c:?}, ours {o:?}"),
                }
            }
        }
        // A clock-only context for an action that also requires `invitee`:
        // refused naming the field `context`, as Cedar's JSON reading words it.
        let invite = uid(r#"Action::"invite_partner""#);
        let json = serde_json::json!({"now": {"__extn": {"fn": "datetime", "arg": "2026-12-03"}}});
        let err = build_request(
            Some(&schema),
            uid(r#"User::"a""#),
            invite,
            uid(r#"Account::"x""#),
            Some(json),
        )
        .unwrap_err();
        match err {
            RequestError::Field { field, message } => {
                assert_eq!(field, "context");
                assert!(message.contains("invitee"), "{message}");
            }
            other => panic!("expected a context field error, got {other:?}"),
        }
    }
}
