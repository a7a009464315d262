//! The state every handler shares ([`AppState`]) and the process-wide
//! Prometheus recorder. Must never know a route or a wire format.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use partnergate_core::authz::Authz;

use crate::config::ServeConfig;

/// Shared state of the handlers.
pub struct AppState {
    /// The decision path: evaluator, directory, decision log.
    pub authz: Authz,
    /// The bearer token, compared in constant time by [`http::require_token`].
    pub token: String,
    /// Also require the token on query endpoints ([`ServeConfig::protect_queries`]).
    pub protect_queries: bool,
    /// [`ServeConfig::max_batch`].
    pub max_batch: usize,
    /// [`ServeConfig::max_body_bytes`].
    pub max_body_bytes: usize,
    /// [`ServeConfig::request_timeout`]; also the deadline of every write.
    pub request_timeout: Duration,
    /// The Prometheus recorder that `/metrics` renders.
    pub metrics: PrometheusHandle,
    /// The partner orchestrator (shares the evaluator, directory and store).
    pub orchestrator: Arc<partnergate_orchestrator::Orchestrator>,
    /// Require the token on `/metrics`.
    pub protect_metrics: bool,
    /// The AuthZEN base URL: `--public-url`, else set to the bound address.
    pub public_url: OnceLock<String>,
    /// Subject, resource and action search over the same decision path.
    pub search: partnergate_search::Searcher,
    /// The decision log file, if decisions are logged to one (the partner
    /// activity report reads it).
    pub audit_path: Option<PathBuf>,
    /// The shipper of the decision log into PostgreSQL, when it runs.
    pub audit_ship: Option<Arc<partnergate_core::audit_db::ShipStatus>>,
    /// The shipped logs of every replica, read instead of `audit_path` by
    /// the partner activity report and the console's Decisions page while
    /// this replica ships its log into PostgreSQL.
    pub audit_db: Option<Arc<partnergate_core::audit_db::DbReader>>,
    /// The web console's inputs, when it is served (`--no-console`: None).
    pub console: Option<ConsoleSettings>,
    /// The console's chain checks: one at a time, stopped with the server.
    pub verify_gate: Arc<crate::verify_gate::VerifyGate>,
}

/// The process-wide Prometheus recorder (installed once).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05,
                    0.1, 0.25, 0.5, 1.0,
                ])
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder is installed; we keep our handle either way.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// What the web console reads besides the serving pack.
#[derive(Debug, Clone)]
pub struct ConsoleSettings {
    /// The policy directory (its files are listed from the pack).
    pub policies: PathBuf,
    /// The schema file (the invariants are read against it).
    pub schema: PathBuf,
    /// The invariants directory `prove` checks.
    pub invariants: PathBuf,
    /// The policy test suites (`--tests`).
    pub tests: PathBuf,
    /// The routes file beside the policies (gateway mode).
    pub routes: PathBuf,
    /// The quotas file beside the policies.
    pub quotas: PathBuf,
}

impl ConsoleSettings {
    /// The console's inputs for a sidecar configured by `config`.
    pub fn of(config: &ServeConfig) -> Self {
        ConsoleSettings {
            policies: config.policies.clone(),
            schema: config.schema.clone(),
            invariants: config.invariants.clone(),
            tests: config.tests.clone(),
            routes: partnergate_gateway::routes_path_for(&config.policies),
            quotas: partnergate_orchestrator::rules::quotas_path_for(&config.policies),
        }
    }
}
