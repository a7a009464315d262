//! Search (issue #16, the AuthZEN 1.0 Search APIs): who may do this to that
//! resource (subject search), to which entities may this principal do it
//! (resource search), what may this principal do to that resource (action
//! search) — exact over the stored directory, paginated with signed tokens.
//!
//! Sound and complete by construction: [`narrow`] derives a superset of the
//! entities that can be allowed from Cedar's type-aware partial evaluation
//! and the directory's indexes; every candidate is then confirmed with
//! [`Authz::decide_unlogged`], the decision `/access/v1/evaluation` gives
//! (same request validation, entity slice and fail-closed semantics). So a
//! result is exactly an evaluation that answers `true`, and an entity left
//! out is one no permit can reach. Results are sorted by entity id (actions
//! by name); a page token ([`token`]) carries the last one returned.
//!
//! Depends on `partnergate-policy`, `-audit` and `-core`. It must never know
//! HTTP, the command line or the partner rules (the quotas are not part of
//! a search: it answers the policy question only).

#![warn(missing_docs, clippy::too_many_lines)]

pub mod narrow;
pub mod token;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Instant;

use cedar_policy::{EntityId, EntityTypeName, EntityUid};
use serde_json::Value;

use partnergate_audit::SearchEvent;
use partnergate_core::authz::{Authz, Query};
use partnergate_core::directory;
use partnergate_policy::engine::{self, RequestError};
use partnergate_policy::policies::PolicyPack;

pub use narrow::Candidates;
pub use token::{KeyError, TokenError, TokenKey, KEY_FILE};

/// What is searched for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchKind {
    /// The principals (AuthZEN subjects) that may do an action to a resource.
    Subject,
    /// The resources a principal may do an action to.
    Resource,
    /// The actions a principal may do to a resource.
    Action,
}

impl SearchKind {
    /// `subject`, `resource` or `action`.
    pub fn as_str(self) -> &'static str {
        match self {
            SearchKind::Subject => "subject",
            SearchKind::Resource => "resource",
            SearchKind::Action => "action",
        }
    }
}

impl FromStr for SearchKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "subject" => Ok(SearchKind::Subject),
            "resource" => Ok(SearchKind::Resource),
            "action" => Ok(SearchKind::Action),
            other => Err(format!("`{other}`: expected subject, resource or action")),
        }
    }
}

/// One search: the known sides, the searched one, and the context.
#[derive(Debug, Clone)]
pub struct SearchRequest {
    /// What is searched for, and the sides that are given.
    pub target: Target,
    /// The Cedar context record of every evaluation (`None`: empty).
    pub context: Option<Value>,
    /// The caller's request id, for the decision log.
    pub request_id: Option<String>,
}

/// The sides of a search.
#[derive(Debug, Clone)]
pub enum Target {
    /// Principals of `principal_type` that may do `action` to `resource`.
    Subjects {
        /// The searched principals' entity type.
        principal_type: EntityTypeName,
        /// The action.
        action: EntityUid,
        /// The resource.
        resource: EntityUid,
    },
    /// Resources of `resource_type` that `principal` may do `action` to.
    Resources {
        /// The principal.
        principal: EntityUid,
        /// The action.
        action: EntityUid,
        /// The searched resources' entity type.
        resource_type: EntityTypeName,
    },
    /// Actions `principal` may do to `resource`.
    Actions {
        /// The principal.
        principal: EntityUid,
        /// The resource.
        resource: EntityUid,
    },
}

impl SearchRequest {
    /// A search without context or request id.
    pub fn new(target: Target) -> Self {
        SearchRequest {
            target,
            context: None,
            request_id: None,
        }
    }

    /// The Cedar context of every evaluation.
    pub fn with_context(mut self, context: Option<Value>) -> Self {
        self.context = context;
        self
    }

    /// The caller's request id, for the decision log.
    pub fn with_request_id(mut self, request_id: Option<String>) -> Self {
        self.request_id = request_id;
        self
    }

    /// What is searched for.
    pub fn kind(&self) -> SearchKind {
        match self.target {
            Target::Subjects { .. } => SearchKind::Subject,
            Target::Resources { .. } => SearchKind::Resource,
            Target::Actions { .. } => SearchKind::Action,
        }
    }

    /// The principal, action and resource as the decision log and tokens
    /// write them: a uid, or the searched type (`User`), or `*` for the
    /// searched actions.
    pub fn sides(&self) -> (String, String, String) {
        match &self.target {
            Target::Subjects {
                principal_type,
                action,
                resource,
            } => (
                principal_type.to_string(),
                action.to_string(),
                resource.to_string(),
            ),
            Target::Resources {
                principal,
                action,
                resource_type,
            } => (
                principal.to_string(),
                action.to_string(),
                resource_type.to_string(),
            ),
            Target::Actions {
                principal,
                resource,
            } => (principal.to_string(), "*".into(), resource.to_string()),
        }
    }
}

/// Parse an entity type name (`User`, `Ns::Type`) for `field`.
pub fn parse_type(field: &str, s: &str) -> Result<EntityTypeName, RequestError> {
    EntityTypeName::from_str(s.trim())
        .map_err(|e| RequestError::field(field, format!("`{s}` is not an entity type name ({e})")))
}

/// Which page of a search.
#[derive(Debug, Clone, Default)]
pub struct PageRequest {
    /// How many results at most (`None`: the default limit).
    pub limit: Option<usize>,
    /// The previous page's `next_token` (`None` or empty: the first page).
    pub token: Option<String>,
    /// Stop with [`SearchError::TimedOut`] past this instant (checked
    /// between candidates).
    pub deadline: Option<Instant>,
}

/// The default and the largest page size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The page size when the request gives none.
    pub default: usize,
    /// The largest page size a request may ask for (more is a 400).
    pub max: usize,
    /// Searches that may run at once; one more is refused
    /// ([`SearchError::Busy`]) instead of queued, so that searches, which
    /// may each cost seconds of CPU on a large account, never take every
    /// core from the decisions.
    pub concurrent: usize,
}

/// The longest a page waits for its record to be durable under
/// `--audit-required` (as a decision does).
pub const AUDIT_ACK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// `serve --search-default-limit`.
pub const DEFAULT_LIMIT: usize = 50;
/// `--search-max-limit`.
pub const MAX_LIMIT: usize = 1000;
/// `--max-concurrent-searches`.
pub const CONCURRENT: usize = 2;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            default: DEFAULT_LIMIT,
            max: MAX_LIMIT,
            concurrent: CONCURRENT,
        }
    }
}

/// One page of results.
#[derive(Debug, Clone)]
pub struct SearchPage {
    /// What was searched for.
    pub kind: SearchKind,
    /// The results, sorted by entity id (actions: `Action::"name"`, by name).
    pub results: Vec<EntityUid>,
    /// The token of the next page; empty on the last page.
    pub next_token: String,
    /// The number of results of the whole search: known on the last page
    /// (earlier pages stop as soon as they are full).
    pub total: Option<usize>,
    /// The pack version that decided.
    pub policy_version: String,
    /// This search's id in the decision log.
    pub search_id: String,
    /// How many candidates were confirmed with a full decision.
    pub evaluated: usize,
    /// Microseconds spent.
    pub latency_us: u64,
}

/// Why a search was refused (a 400 naming the field), or could not run.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// A request field is wrong (the same errors `/access/v1/evaluation`
    /// gives for that field).
    #[error(transparent)]
    Request(#[from] RequestError),
    /// The page token is refused: edited, foreign, or for another request.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// `limit` is 0 or over the maximum.
    #[error("field `limit`: {0}")]
    Limit(String),
    /// The deadline passed before the page was complete.
    #[error("the search did not finish before the request timeout")]
    TimedOut,
    /// As many searches as [`Limits::concurrent`] are running: try again.
    #[error("{0} searches are running, the most this sidecar runs at once (--max-concurrent-searches); try again shortly")]
    Busy(usize),
    /// Under `--audit-required`, the page's decision-log record could not
    /// be made durable: the page is refused.
    #[error("the search is refused because its decision-log record could not be made durable (--audit-required): {0}")]
    AuditUnavailable(String),
}

impl SearchError {
    /// The request field at fault.
    pub fn field(&self) -> Option<&str> {
        match self {
            SearchError::Request(RequestError::Field { field, .. }) => Some(field),
            SearchError::Request(RequestError::Entities(_)) => Some("entities"),
            SearchError::Request(RequestError::Schema(_)) => None,
            SearchError::Token(t) => Some(t.field),
            SearchError::Limit(_) => Some("limit"),
            SearchError::TimedOut | SearchError::Busy(_) | SearchError::AuditUnavailable(_) => None,
        }
    }
}

/// Runs searches over an [`Authz`] (its live pack, directory and log).
#[derive(Clone)]
pub struct Searcher {
    authz: Authz,
    key: Arc<TokenKey>,
    limits: Limits,
    running: Arc<std::sync::atomic::AtomicUsize>,
}

/// One running search's place among [`Limits::concurrent`]; given back on drop.
struct Running(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

impl Searcher {
    /// Searches over `authz`, with tokens signed by `key`.
    pub fn new(authz: Authz, key: TokenKey, limits: Limits) -> Self {
        Searcher {
            authz,
            key: Arc::new(key),
            limits,
            running: Arc::default(),
        }
    }

    /// A place among the searches that may run at once, or
    /// [`SearchError::Busy`].
    fn take_place(&self) -> Result<Running, SearchError> {
        use std::sync::atomic::Ordering;
        let max = self.limits.concurrent.max(1);
        self.running
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .map(|_| Running(self.running.clone()))
            .map_err(SearchError::Busy)
    }

    /// The page sizes.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// One page of `req`.
    pub fn search(
        &self,
        req: &SearchRequest,
        page: &PageRequest,
    ) -> Result<SearchPage, SearchError> {
        let started = Instant::now();
        let _running = self.take_place()?;
        let deadline = page.deadline;
        let pack = self.authz.evaluator().current();
        let limit = page.limit.unwrap_or(self.limits.default);
        if limit == 0 || limit > self.limits.max {
            return Err(SearchError::Limit(format!(
                "{limit}: must be between 1 and {}",
                self.limits.max
            )));
        }
        let context = match &req.context {
            None | Some(Value::Null) => None,
            Some(v @ Value::Object(_)) => Some(v.clone()),
            Some(_) => return Err(RequestError::field("context", "must be a JSON object").into()),
        };
        // The time is the sidecar's, as for an evaluation: one reading per page.
        partnergate_core::authz::refuse_callers_clock(context.as_ref())?;
        let now = self.authz.clock().now_ms();
        let (p, a, r) = req.sides();
        let binding = token::Binding::new(req.kind().as_str(), &p, &a, &r, context.as_ref(), limit);
        let cursor = match page.token.as_deref() {
            None | Some("") => None,
            Some(t) => Some(token::open(&self.key, t, &binding)?),
        };
        let run = Run {
            authz: &self.authz,
            pack: &pack,
            context: &context,
            now,
        };
        let candidates = run.candidates(&req.target)?;
        let after = cursor.as_ref().map(|c| c.after.as_str());
        let (results, more, evaluated) = run.confirm(&candidates, after, limit, page.deadline)?;
        let returned = cursor.map_or(0, |c| c.returned);
        let (next_token, total) = match (more, results.last()) {
            (true, Some((last, _))) => {
                let next = token::Cursor {
                    after: last.clone(),
                    returned: returned + results.len(),
                };
                (token::issue(&self.key, &binding, &next), None)
            }
            _ => (String::new(), Some(returned + results.len())),
        };
        let page = SearchPage {
            kind: req.kind(),
            results: results.into_iter().map(|(_, uid)| uid).collect(),
            next_token,
            total,
            policy_version: pack.version.clone(),
            search_id: partnergate_audit::new_decision_id(),
            evaluated,
            latency_us: started.elapsed().as_micros() as u64,
        };
        self.log(req, &page, &context, deadline)?;
        Ok(page)
    }

    /// One decision-log record for the page: the query, the policy
    /// version, the number of results and the time taken. Under
    /// `--audit-required` the page is answered only once the record is
    /// durable ([`SearchError::AuditUnavailable`] otherwise).
    fn log(
        &self,
        req: &SearchRequest,
        page: &SearchPage,
        context: &Option<Value>,
        deadline: Option<Instant>,
    ) -> Result<(), SearchError> {
        let Some(log) = self.authz.audit() else {
            return Ok(());
        };
        let (principal, action, resource) = req.sides();
        let event = SearchEvent {
            decision_id: page.search_id.clone(),
            request_id: req.request_id.clone(),
            search: req.kind().as_str().to_string(),
            principal,
            action,
            resource,
            context: context
                .clone()
                .unwrap_or(Value::Object(serde_json::Map::new())),
            results: page.results.len() as u64,
            total: page.total.map(|t| t as u64),
            evaluated: page.evaluated as u64,
            policy_version: page.policy_version.clone(),
            latency_us: page.latency_us,
        };
        if !self.authz.audit_required() {
            log.log(event);
            return Ok(());
        }
        let limit = deadline.map_or(AUDIT_ACK_TIMEOUT, |d| {
            d.saturating_duration_since(Instant::now())
                .min(AUDIT_ACK_TIMEOUT)
        });
        log.log_durable(event)
            .wait_blocking(limit)
            .map_err(SearchError::AuditUnavailable)
    }
}

/// The sort key of a result: its entity id (an action's name).
type Key = String;

/// A page's results (key, uid), whether more exist after them, and how many
/// candidates were evaluated.
type Confirmed = (Vec<(Key, EntityUid)>, bool, usize);

/// One page's work over one pack snapshot.
struct Run<'a> {
    authz: &'a Authz,
    pack: &'a PolicyPack,
    context: &'a Option<Value>,
    /// The clock reading (ms) every clocked question of the page gets.
    now: i64,
}

/// The candidates of a search, sorted by key, each with the question that
/// confirms it.
struct Sorted {
    items: Vec<(Key, EntityUid, Query)>,
}

impl Run<'_> {
    /// Validate the request (as an evaluation of it would be) and list the
    /// candidates, sorted.
    fn candidates(&self, target: &Target) -> Result<Sorted, SearchError> {
        match target {
            Target::Subjects {
                principal_type,
                action,
                resource,
            } => {
                let probe = probe(principal_type);
                let request = self
                    .query(&probe, action, resource)
                    .request(self.schema())?;
                let uids = self.narrowed(
                    narrow::Var::Principal,
                    principal_type,
                    resource,
                    action,
                    &request,
                );
                Ok(sorted(uids, |p| self.query(p, action, resource)))
            }
            Target::Resources {
                principal,
                action,
                resource_type,
            } => {
                let probe = probe(resource_type);
                let request = self
                    .query(principal, action, &probe)
                    .request(self.schema())?;
                if !self.authz.directory().contains(principal) {
                    // Every evaluation is a Deny (unknown principal).
                    return Ok(Sorted { items: Vec::new() });
                }
                let uids = self.narrowed(
                    narrow::Var::Resource,
                    resource_type,
                    principal,
                    action,
                    &request,
                );
                Ok(sorted(uids, |r| self.query(principal, action, r)))
            }
            Target::Actions {
                principal,
                resource,
            } => self.actions(principal, resource),
        }
    }

    fn schema(&self) -> Option<&cedar_policy::Schema> {
        self.pack.schema.as_ref()
    }

    /// The question of one candidate, with `context.now` when the action
    /// takes the clock (as `Authz::is_authorized` adds it; a reading outside
    /// Cedar's datetime range leaves it out, and the policies then deny).
    fn query(&self, principal: &EntityUid, action: &EntityUid, resource: &EntityUid) -> Query {
        let q = Query::new(principal.clone(), action.clone(), resource.clone())
            .with_context(self.context.clone());
        if !self.pack.takes_clock(action) {
            return q;
        }
        partnergate_core::authz::with_now(&q, self.now).unwrap_or(q)
    }

    /// The stored entities of `ty` the narrowing leaves (unsorted).
    fn narrowed(
        &self,
        var: narrow::Var,
        ty: &EntityTypeName,
        known: &EntityUid,
        action: &EntityUid,
        request: &cedar_policy::Request,
    ) -> Vec<EntityUid> {
        let directory = self.authz.directory();
        let candidates = match (self.schema(), request.context()) {
            (Some(schema), Some(context)) => {
                let slice = directory
                    .slice(&[known], &Default::default())
                    .map_err(|e| e.to_string());
                match slice
                    .and_then(|s| directory::entities_for(s, self.pack.action_entities(action)))
                {
                    Ok(entities) => narrow::candidates(
                        &self.pack.policy_set,
                        schema,
                        var,
                        ty,
                        known,
                        action,
                        context.clone(),
                        entities,
                        directory,
                    ),
                    Err(_) => Candidates::All,
                }
            }
            _ => Candidates::All,
        };
        match candidates {
            Candidates::None => Vec::new(),
            Candidates::Some(uids) => uids
                .into_iter()
                .filter(|u| u.type_name() == ty && directory.contains(u))
                .collect(),
            Candidates::All => directory.uids_of_type(ty),
        }
    }

    /// Action search: the schema's actions that apply to the principal's
    /// and resource's types, as candidates (each confirmed like any other).
    fn actions(&self, principal: &EntityUid, resource: &EntityUid) -> Result<Sorted, SearchError> {
        let Some(schema) = self.schema() else {
            return Err(RequestError::Schema(
                "action search needs a schema (it lists the actions that apply)".into(),
            )
            .into());
        };
        for (field, uid) in [("principal", principal), ("resource", resource)] {
            if !schema.entity_types().any(|t| t == uid.type_name()) {
                return Err(RequestError::field(
                    field,
                    format!(
                        "unknown entity type `{}`: the schema does not declare it",
                        uid.type_name()
                    ),
                )
                .into());
            }
        }
        let mut items: Vec<(Key, EntityUid, Query)> = schema
            .actions_for_principal_and_resource(principal.type_name(), resource.type_name())
            .map(|a| {
                let key = a.id().unescaped().to_string();
                (key, a.clone(), self.query(principal, a, resource))
            })
            .collect();
        items.sort_by(|a, b| a.0.cmp(&b.0));
        items.dedup_by(|a, b| a.0 == b.0);
        Ok(Sorted { items })
    }

    /// Confirm the candidates after `after` in order until `limit` are
    /// allowed, then look for one more (is there a next page?). Returns the
    /// results (key, uid), whether more exist, and how many were evaluated.
    fn confirm(
        &self,
        candidates: &Sorted,
        after: Option<&str>,
        limit: usize,
        deadline: Option<Instant>,
    ) -> Result<Confirmed, SearchError> {
        let start = match after {
            Some(a) => candidates
                .items
                .partition_point(|(k, _, _)| k.as_str() <= a),
            None => 0,
        };
        let mut out = Vec::with_capacity(limit.min(candidates.items.len()));
        let mut evaluated = 0;
        for (key, uid, q) in &candidates.items[start..] {
            if evaluated % 64 == 63 && deadline.is_some_and(|d| Instant::now() > d) {
                return Err(SearchError::TimedOut);
            }
            evaluated += 1;
            let allowed = self
                .authz
                .decide_unlogged(self.pack, q)
                .is_ok_and(|d| d.is_allowed());
            if !allowed {
                continue;
            }
            if out.len() == limit {
                return Ok((out, true, evaluated));
            }
            out.push((key.clone(), uid.clone()));
        }
        Ok((out, false, evaluated))
    }
}

/// The candidates `uids` sorted by entity id, each with its question.
fn sorted(uids: Vec<EntityUid>, question: impl Fn(&EntityUid) -> Query) -> Sorted {
    let mut items: Vec<(Key, EntityUid, Query)> = uids
        .into_iter()
        .map(|u| {
            let q = question(&u);
            (u.id().unescaped().to_string(), u, q)
        })
        .collect();
    items.sort_by(|a, b| a.0.cmp(&b.0));
    Sorted { items }
}

/// A uid of `ty` that stands for the searched side while the request is
/// checked against the schema.
fn probe(ty: &EntityTypeName) -> EntityUid {
    EntityUid::from_type_name_and_id(ty.clone(), EntityId::new(""))
}

/// The uid of an action name (`dismiss_user` → `Action::"dismiss_user"`).
pub fn action_uid(field: &str, name: &str) -> Result<EntityUid, RequestError> {
    engine::uid_from_json(field, &serde_json::json!({"type": "Action", "id": name}))
}
