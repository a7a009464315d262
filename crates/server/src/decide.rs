//! The decision sequence of every front door (the own API, AuthZEN, the
//! console's Try, both gateway doors): the caller's request id, the
//! question decided by `Authz::is_authorized_with` (validated, cached,
//! logged), the wait for its record under `--audit-required`, and the
//! decision metrics. A front door parses its wire format into a `Query`
//! and renders the `Answer`; everything between is here, once, so no door
//! can forget the durable wait or the count.
//!
//! Knows no front door and no wire format beyond the request id header.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use partnergate_core::authz::{Answer, Query};
use partnergate_core::metric_handles;
use partnergate_policy::policies::PolicyPack;

use crate::error::AppError;
use crate::state::AppState;

/// The caller's `X-Request-ID` (set or propagated by the router's request
/// id layer), carried into every record the request makes.
#[derive(Debug, Clone, Default)]
pub struct RequestId(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for RequestId {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        Ok(RequestId(
            parts
                .headers
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
        ))
    }
}

/// Decide `query` on `pack` (a refusal of malformed input is a 4xx, logged;
/// nothing is counted: the caller counts as its call answers).
pub fn ask(state: &AppState, pack: &PolicyPack, query: &Query) -> Result<Answer, AppError> {
    state.authz.is_authorized_with(pack, query).map_err(|e| {
        tracing::info!(error = %e, "request refused before evaluation (deny)");
        AppError::from(e)
    })
}

/// One question as one call: decided on the serving pack, made durable,
/// counted under `endpoint` (a refusal as `invalid`, a record that could
/// not be made durable as `refused`: a 503, a deny).
pub async fn one(
    state: &AppState,
    endpoint: &'static str,
    query: &Query,
    started: Instant,
) -> Result<Answer, AppError> {
    let pack = state.authz.evaluator().current();
    let answer = match ask(state, &pack, query) {
        Ok(a) => a,
        Err(e) => {
            observe(endpoint, "invalid", started);
            return Err(e);
        }
    };
    settle(state, &answer, endpoint, started).await?;
    Ok(answer)
}

/// What a front door does once a decision is made elsewhere (the gateway
/// check decides inside `partnergate_gateway`): name the decision in the
/// request's log span, wait for its record under `--audit-required`, then
/// count it (or count the refusal).
pub async fn settle(
    state: &AppState,
    answer: &Answer,
    endpoint: &'static str,
    started: Instant,
) -> Result<(), AppError> {
    tracing::Span::current().record("decision_id", answer.decision_id.as_str());
    if let Err(e) = require_durable(state, answer, endpoint).await {
        observe(endpoint, "refused", started);
        return Err(e);
    }
    observe(endpoint, answer.decision.decision.as_str(), started);
    Ok(())
}

/// Many questions as one call (a batch, AuthZEN evaluations): one pack
/// snapshot, each answer counted, every record waited for at the end.
pub struct Batch {
    endpoint: &'static str,
    started: Instant,
    pack: std::sync::Arc<PolicyPack>,
    waiting: Vec<Answer>,
}

impl Batch {
    /// A call of `endpoint` begun at `started`, on the serving pack.
    pub fn new(state: &AppState, endpoint: &'static str, started: Instant) -> Self {
        Batch {
            endpoint,
            started,
            pack: state.authz.evaluator().current(),
            waiting: Vec::new(),
        }
    }

    /// Decide one item (a refusal is counted `invalid` and returned).
    pub fn ask(
        &mut self,
        state: &AppState,
        query: Result<Query, AppError>,
    ) -> Result<Answer, AppError> {
        match query.and_then(|q| ask(state, &self.pack, &q)) {
            Ok(mut a) => {
                count(self.endpoint, a.decision.decision.as_str());
                if let Some(d) = a.durable.take() {
                    self.waiting.push(Answer {
                        durable: Some(d),
                        ..a.clone()
                    });
                }
                Ok(a)
            }
            Err(e) => {
                count(self.endpoint, "invalid");
                Err(e)
            }
        }
    }

    /// The pack every item is decided on.
    pub fn pack(&self) -> &PolicyPack {
        &self.pack
    }

    /// Wait for every record (the first that cannot be made durable
    /// refuses the whole call) and record the call's latency.
    pub async fn finish(self, state: &AppState) -> Result<(), AppError> {
        for a in &self.waiting {
            require_durable(state, a, self.endpoint).await?;
        }
        observe_latency(self.endpoint, self.started);
        Ok(())
    }
}

/// The longest a decision waits for its record to be durable under
/// `--audit-required` (also bounded by the request timeout).
pub const AUDIT_ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// With `--audit-required`, wait for the decision's record to be durable
/// (group commit: released by its batch's fsync). A record that cannot be
/// made durable refuses the decision: a 503 (a deny), counted and logged.
async fn require_durable(
    state: &AppState,
    answer: &Answer,
    endpoint: &'static str,
) -> Result<(), AppError> {
    let Some(durable) = &answer.durable else {
        return Ok(());
    };
    let limit = AUDIT_ACK_TIMEOUT.min(state.request_timeout);
    let result = match tokio::time::timeout(limit, durable.wait()).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "the decision log did not make the record durable within {} ms",
            limit.as_millis()
        )),
    };
    result.map_err(|why| {
        metrics::counter!("partnergate_audit_refused_total", "endpoint" => endpoint).increment(1);
        tracing::info!(decision_id = %answer.decision_id, error = %why,
            "decision refused (deny): its record could not be made durable (--audit-required)");
        AppError::audit_unavailable(why).logged()
    })
}

/// Count one decision (or one refused request: `invalid`, `refused`).
pub fn count(endpoint: &'static str, decision: &'static str) {
    handles().counter(endpoint, decision).increment(1);
}

/// Record how long one call took (a batch counts once).
pub fn observe_latency(endpoint: &'static str, started: Instant) {
    handles()
        .histogram(endpoint)
        .record(started.elapsed().as_secs_f64());
}

/// Count one decision and record its call's latency.
pub fn observe(endpoint: &'static str, decision: &'static str, started: Instant) {
    count(endpoint, decision);
    observe_latency(endpoint, started);
}

/// The decision metrics' handles, registered once per label set.
#[derive(Default)]
struct Handles {
    counters: metric_handles::Handles<(&'static str, &'static str), metrics::Counter>,
    histograms: metric_handles::Handles<&'static str, metrics::Histogram>,
}

fn handles() -> &'static Handles {
    static HANDLES: std::sync::OnceLock<Handles> = std::sync::OnceLock::new();
    HANDLES.get_or_init(Handles::default)
}

impl Handles {
    fn counter(&self, endpoint: &'static str, decision: &'static str) -> metrics::Counter {
        self.counters.get((endpoint, decision), |_| {
            metrics::counter!("partnergate_decisions_total", "endpoint" => endpoint, "decision" => decision)
        })
    }

    fn histogram(&self, endpoint: &'static str) -> metrics::Histogram {
        self.histograms.get(endpoint, |_| {
            metrics::histogram!("partnergate_decision_duration_seconds", "endpoint" => endpoint)
        })
    }
}
