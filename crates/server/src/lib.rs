//! The HTTP sidecar: configuration, the router, start-up and graceful
//! shutdown. Only this crate knows axum and the wire format; decisions come
//! from [`partnergate_core::authz`].
//!
//! The top library layer: it may depend on every other PartnerGate library
//! crate, and is the only one allowed axum, tower, tower-http, hyper,
//! hyper-util, utoipa and the Prometheus exporter. It must never know the
//! command line.
//!
//! - `api`: the PartnerGate endpoints (`/v1/...`, health, metrics).
//! - `authzen`: the OpenID AuthZEN Authorization API 1.0 endpoints.
//! - `error`: the JSON error body.
//! - `http`: token/size/URI guards before the body, JSON bodies for every error.
//! - `conn`: the accept loop: header and idle timeouts, the connection cap.
//! - `orchestrator`: partner invitations, users, seats and the partner registry.
//! - `gateway`: gateway mode's front doors: Envoy's gRPC ext_authz and the
//!   HTTP forward-auth endpoints (nginx, Traefik, Caddy, Envoy's HTTP mode).
//! - `search`: subject, resource and action search (AuthZEN and own API).
//! - `console`: the web console at `/console` (server-rendered pages over the
//!   same library calls as the API).

#![warn(missing_docs, clippy::too_many_lines)]

pub mod api;
pub mod authzen;
pub mod conn;
pub mod console;
pub mod error;
pub mod gateway;
pub mod http;
pub mod idempotency;
pub mod orchestrator;
pub mod search;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, StatusCode};
use axum::Router;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

use partnergate_audit as audit;
use partnergate_core::authz::{self, Authz};
use partnergate_core::directory;
use partnergate_core::reload;
use partnergate_core::runtime::{Runtime, RuntimeError};
use partnergate_core::store;
use partnergate_policy::policies::{self, PackSource};
use partnergate_policy::{engine, prescan};

/// Everything `partnergate serve` can be told.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The policy directory (or one policy file); `quotas.toml` is beside
    /// the policies.
    pub policies: PathBuf,
    /// The Cedar schema file the pack is validated against.
    pub schema: PathBuf,
    /// Where the SQLite store (`store.db`) and the generated token live.
    pub data_dir: PathBuf,
    /// The address to listen on (port 0: any free port, printed at start).
    pub bind: SocketAddr,
    /// File holding the bearer token for writes; generated in the data
    /// directory when absent.
    pub token_file: Option<PathBuf>,
    /// Also require the token on query endpoints.
    pub protect_queries: bool,
    /// Most items in one batch call (`/v1/is_authorized/batch`, AuthZEN
    /// `evaluations`); more is a 400.
    pub max_batch: usize,
    /// Largest request body in bytes; a larger one is a 413 (on its
    /// `Content-Length` before any byte is read, else at the limit).
    pub max_body_bytes: usize,
    /// Most bytes of request bodies held at once across all connections
    /// (the gRPC listener's calls; at least `max_body_bytes`).
    pub max_body_bytes_in_flight: usize,
    /// How long a decision or a read may take, and a write's body reading
    /// (408 past it; a write whose transaction began answers its outcome).
    pub request_timeout: Duration,
    /// After SIGTERM or Ctrl-C, how long requests in flight may finish
    /// before the remaining connections are closed.
    pub shutdown_grace: Duration,
    /// Reload when the policies, the schema or the gates' inputs change.
    pub watch: bool,
    /// Reject a reload that breaks an invariant (needs cvc5).
    pub prove_on_reload: bool,
    /// The invariants directory for `prove_on_reload`.
    pub invariants: PathBuf,
    /// Where entities live: embedded SQLite (default) or PostgreSQL.
    pub store: crate::store::StoreSpec,
    /// This replica's name, in change feeds and logs.
    pub replica: String,
    /// The decision log (None: off).
    pub audit: Option<crate::audit::AuditConfig>,
    /// Refuse (503) a decision whose log record cannot be made durable.
    pub audit_required: bool,
    /// A candidate policy directory evaluated beside the live one (shadow mode).
    pub shadow_policies: Option<PathBuf>,
    /// Sizes and nesting of policy files refused before parsing.
    pub limits: crate::prescan::PackLimits,
    // HTTP limits (issue #12).
    /// Close a connection without complete request headers after this long.
    pub header_timeout: Duration,
    /// Close a keep-alive connection idle for this long.
    pub idle_timeout: Duration,
    /// Most connections at once (lowered to fit the open-files limit).
    pub max_connections: usize,
    /// Require the token on `/metrics`.
    pub protect_metrics: bool,
    /// The base URL the AuthZEN metadata advertises (default: the bound address).
    pub public_url: Option<String>,
    /// What request entities and properties may do to stored facts.
    pub request_entities: crate::authz::RequestEntities,
    /// How many decisions the exact decision cache keeps (0: off).
    pub decision_cache: usize,
    /// Where Envoy's gRPC ext_authz service listens (None: not served).
    pub ext_authz_grpc: Option<gateway::GrpcListen>,
    /// Search page sizes: the default and the largest a request may ask.
    pub search_limits: partnergate_search::Limits,
    /// How often ended partner access is swept (marked, its seat freed).
    pub partner_sweep: Duration,
    /// Serve the web console at `/console`.
    pub console: bool,
    /// The policy test suites the console runs.
    pub tests: PathBuf,
}

pub use partnergate_core::runtime::default_replica_id;

/// The one set of defaults of `partnergate serve`: [`ServeConfig::default`]
/// and the binary's flags both read them, so they cannot drift.
pub mod defaults {
    /// `--policies`
    pub const POLICIES: &str = "policies";
    /// `--schema`
    pub const SCHEMA: &str = "schemas/partnergate.cedarschema";
    /// `--data-dir`
    pub const DATA_DIR: &str = "data";
    /// `--bind`
    pub const BIND: &str = "127.0.0.1:8380";
    /// `--max-batch`
    pub const MAX_BATCH: usize = 100;
    /// `--max-body-bytes` (1 MiB)
    pub const MAX_BODY_BYTES: usize = 1024 * 1024;
    /// `--max-body-bytes-in-flight` (64 MiB)
    pub const MAX_BODY_BYTES_IN_FLIGHT: usize = 64 * 1024 * 1024;
    /// `--request-timeout-ms`
    pub const REQUEST_TIMEOUT_MS: u64 = 10_000;
    /// `--shutdown-grace-ms`
    pub const SHUTDOWN_GRACE_MS: u64 = 10_000;
    /// `--invariants`
    pub const INVARIANTS: &str = "policies/invariants";
    /// `--header-timeout-ms`
    pub const HEADER_TIMEOUT_MS: u64 = 10_000;
    /// `--idle-timeout-ms`
    pub const IDLE_TIMEOUT_MS: u64 = 60_000;
    /// `--max-connections`
    pub const MAX_CONNECTIONS: usize = 10_000;
    /// `--decision-cache`
    pub const DECISION_CACHE: usize = partnergate_core::cache::DEFAULT_ENTRIES;
    /// `--partner-sweep-ms`
    pub const PARTNER_SWEEP_MS: u64 = 30_000;
    /// `--tests`
    pub const TESTS: &str = "tests/policies";
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            policies: defaults::POLICIES.into(),
            schema: defaults::SCHEMA.into(),
            data_dir: defaults::DATA_DIR.into(),
            bind: defaults::BIND
                .parse()
                .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 8380))),
            token_file: None,
            protect_queries: false,
            max_batch: defaults::MAX_BATCH,
            max_body_bytes: defaults::MAX_BODY_BYTES,
            max_body_bytes_in_flight: defaults::MAX_BODY_BYTES_IN_FLIGHT,
            request_timeout: Duration::from_millis(defaults::REQUEST_TIMEOUT_MS),
            shutdown_grace: Duration::from_millis(defaults::SHUTDOWN_GRACE_MS),
            watch: true,
            prove_on_reload: false,
            invariants: defaults::INVARIANTS.into(),
            store: crate::store::StoreSpec::Sqlite,
            replica: default_replica_id(),
            audit: None,
            audit_required: false,
            shadow_policies: None,
            limits: crate::prescan::PackLimits::default(),
            header_timeout: Duration::from_millis(defaults::HEADER_TIMEOUT_MS),
            idle_timeout: Duration::from_millis(defaults::IDLE_TIMEOUT_MS),
            max_connections: defaults::MAX_CONNECTIONS,
            protect_metrics: false,
            public_url: None,
            request_entities: crate::authz::RequestEntities::default(),
            decision_cache: defaults::DECISION_CACHE,
            ext_authz_grpc: None,
            search_limits: partnergate_search::Limits::default(),
            partner_sweep: Duration::from_millis(defaults::PARTNER_SWEEP_MS),
            console: true,
            tests: defaults::TESTS.into(),
        }
    }
}

/// Why the sidecar could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The pack (policies, schema, `quotas.toml`, or the invariants under
    /// `--prove-on-reload`) did not load; nothing is served.
    #[error("cannot load the policies:\n{}", .0.render())]
    Load(#[from] crate::policies::LoadError),
    /// The stored entities could not be loaded into the directory.
    #[error(transparent)]
    Directory(#[from] crate::directory::DirectoryError),
    /// The store could not be opened or migrated.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The policy watcher could not start.
    #[error(transparent)]
    Watch(#[from] crate::reload::WatchError),
    /// The token file could not be read or created, or is empty.
    #[error("token file {path}: {message}")]
    Token {
        /// The token file (`--token-file`, else `token` in the data directory).
        path: PathBuf,
        /// What went wrong with it.
        message: String,
    },
    /// A limit that cannot hold with another.
    #[error("--max-body-bytes-in-flight ({in_flight}) is below --max-body-bytes ({one}): a request of the largest size allowed could never be read")]
    BodyBudget {
        /// `--max-body-bytes-in-flight`.
        in_flight: usize,
        /// `--max-body-bytes`.
        one: usize,
    },
    /// The listening socket could not be bound.
    #[error("cannot bind {addr}: {source}")]
    Bind {
        /// The address asked for (`--bind`).
        addr: SocketAddr,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The gRPC ext_authz listener could not be bound.
    #[error("cannot bind the ext_authz gRPC listener {addr}: {source}")]
    BindGrpc {
        /// The address asked for (`--ext-authz-grpc`).
        addr: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// An I/O error of the running server (or its start-up task failed).
    #[error("server: {0}")]
    Io(#[from] std::io::Error),
    /// The decision log could not be opened.
    #[error("decision log: {0}")]
    Audit(#[from] crate::audit::AuditError),
    /// `--audit-required` was given without a decision log.
    #[error("--audit-required needs a decision log (not --audit-log off)")]
    AuditRequiredWithoutLog,
    /// The change records kept with writes could not be written to the log at start.
    #[error("decision log: {0}")]
    Recover(#[from] partnergate_core::changes::RecoverError),
    /// The page-token key (`DATA_DIR/search.key`) could not be read or created.
    #[error(transparent)]
    SearchKey(#[from] partnergate_search::KeyError),
}

impl From<RuntimeError> for ServeError {
    fn from(e: RuntimeError) -> Self {
        match e {
            RuntimeError::Load(e) => ServeError::Load(e),
            RuntimeError::Directory(e) => ServeError::Directory(e),
            RuntimeError::Store(e) => ServeError::Store(e),
            RuntimeError::Watch(e) => ServeError::Watch(e),
            RuntimeError::Audit(e) => ServeError::Audit(e),
            RuntimeError::AuditRequiredWithoutLog => ServeError::AuditRequiredWithoutLog,
            RuntimeError::Recover(e) => ServeError::Recover(e),
        }
    }
}

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
    pub orchestrator: Arc<partnergate_partners::Orchestrator>,
    /// Require the token on `/metrics`.
    pub protect_metrics: bool,
    /// The AuthZEN base URL: `--public-url`, else set to the bound address.
    pub public_url: OnceLock<String>,
    /// Subject, resource and action search over the same decision path.
    pub search: partnergate_search::Searcher,
    /// The decision log file, if decisions are logged to one (the partner
    /// activity report reads it).
    pub audit_path: Option<PathBuf>,
    /// The web console's inputs, when it is served (`--no-console`: None).
    pub console: Option<console::Settings>,
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

/// The router, separate from sockets so tests can drive it directly.
pub fn app(state: Arc<AppState>) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    let timeout = state.request_timeout;
    let max_body = state.max_body_bytes;
    let console = state.console.is_some();
    api::routes()
        .merge(if console {
            console::routes()
        } else {
            Router::new()
        })
        .merge(authzen::routes())
        .merge(orchestrator::routes())
        .merge(gateway::routes())
        .merge(search::routes())
        .with_state(state.clone())
        // The `Bytes` extractor stops reading at the limit (a 413); a write's
        // body is read (within the limit) by `request_timeout`; both only
        // after `guard` checked the token and `Content-Length` on the
        // headers, before any body byte is read.
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn_with_state(
            (timeout, max_body),
            request_timeout,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            http::guard,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state,
            http::json_errors,
        ))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
}

/// Is this request a write (its outcome must never be a 408 after it
/// committed)? Every PUT/POST/DELETE except the decision endpoints.
fn is_write(req: &axum::extract::Request) -> bool {
    use axum::http::Method;
    let path = req.uri().path();
    let decision = path.starts_with("/v1/is_authorized")
        || path.starts_with("/access/v1/")
        || gateway::is_gateway_path(path)
        || search::is_search_path(path)
        || console::is_query(path);
    matches!(*req.method(), Method::PUT | Method::POST | Method::DELETE) && !decision
}

fn timed_out(what: &str, timeout: Duration) -> axum::response::Response {
    use axum::response::IntoResponse;
    error::AppError::new(
        StatusCode::REQUEST_TIMEOUT,
        "request_timeout",
        format!(
            "{what} took longer than the request timeout ({} ms)",
            timeout.as_millis()
        ),
    )
    .into_response()
}

/// `--request-timeout-ms`: a decision or a read is answered 408 when it
/// takes longer; a write only while its body is read — once read, the write
/// handler owns the deadline: its transaction stops before writing anything
/// if the deadline has passed when it begins (408), and otherwise runs to
/// completion and answers its outcome. So a 408 never follows a commit.
async fn request_timeout(
    axum::extract::State((timeout, max_body)): axum::extract::State<(Duration, usize)>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    use http_body_util::BodyExt;
    if !is_write(&req) {
        return match tokio::time::timeout(timeout, next.run(req)).await {
            Ok(resp) => resp,
            Err(_) => timed_out("the request", timeout),
        };
    }
    let (parts, body) = req.into_parts();
    // Read at most `max_body` bytes: a longer body stops here with a 413.
    let limited = http_body_util::Limited::new(body, max_body).collect();
    match tokio::time::timeout(timeout, limited).await {
        Err(_) => timed_out("reading the request body", timeout),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            http::body_too_large(max_body).into_response()
        }
        Ok(Err(e)) => error::AppError::bad_request(format!("cannot read the request body: {e}"))
            .into_response(),
        Ok(Ok(collected)) => {
            let bytes = collected.to_bytes();
            next.run(axum::extract::Request::from_parts(
                parts,
                axum::body::Body::from(bytes),
            ))
            .await
        }
    }
}

/// Read the token, or generate one (mode 0600) in the data directory.
pub fn load_or_create_token(config: &ServeConfig) -> Result<(String, PathBuf), ServeError> {
    let path = config
        .token_file
        .clone()
        .unwrap_or_else(|| config.data_dir.join("token"));
    let err = |message: String| ServeError::Token {
        path: path.clone(),
        message,
    };
    if path.exists() {
        let token = std::fs::read_to_string(&path).map_err(|e| err(e.to_string()))?;
        let token = token.trim().to_string();
        if token.is_empty() {
            return Err(err("the file is empty".into()));
        }
        return Ok((token, path));
    }
    if config.token_file.is_some() {
        return Err(err("no such file".into()));
    }
    let bytes: [u8; 32] = rand::random();
    let token = hex::encode(bytes);
    partnergate_core::secret::create_private(&path, &token).map_err(|e| err(e.to_string()))?;
    Ok((token, path))
}

/// A started sidecar's parts, for embedding and tests.
pub struct Sidecar {
    /// The handlers' state, for [`app`].
    pub state: Arc<AppState>,
    /// The token file read or generated at start.
    pub token_path: PathBuf,
    /// The policy watcher, if watching (dropping it stops it).
    pub watch: Option<reload::WatchHandle>,
    /// The PostgreSQL change feed (other replicas' writes), if shared.
    pub feed: Option<crate::store::postgres::ChangeFeed>,
    /// The watcher of the shadow policies, if any.
    pub shadow_watch: Option<reload::WatchHandle>,
    /// The sweep of ended partner access (dropping it stops it).
    pub sweeper: Option<partnergate_partners::sweep::Sweeper>,
}

/// Load policies, open the store and build the state (no socket yet).
pub fn build(config: &ServeConfig) -> Result<Sidecar, ServeError> {
    let (runtime, quotas) = partnergate_partners::runtime::with_quotas(runtime(config))
        .map_err(|p| crate::policies::LoadError::Validation { problems: vec![*p] })?;
    // Gateway mode: the routes file beside the policies reloads with them
    // (absent: the gateway endpoints deny, saying so).
    let routes = partnergate_gateway::routes_path_for(&config.policies);
    let gate = partnergate_gateway::gate(routes.clone(), Some(config.schema.clone()));
    let runtime = runtime.gate(gate, [routes]);
    let runtime = if config.prove_on_reload {
        runtime.gate(
            partnergate_prove::reload_gate(config.invariants.clone()),
            [config.invariants.clone()],
        )
    } else {
        runtime
    };
    let wired = runtime.build()?;
    let (token, token_path) = load_or_create_token(config)?;
    // The recorder first: the gauge below must reach it.
    let metrics = metrics_handle();
    let pack = wired.authz.evaluator().current();
    metrics::gauge!("partnergate_policy_info", "version" => pack.version.clone()).set(1.0);
    let orchestrator = Arc::new(partnergate_partners::runtime::orchestrator(&wired, quotas));
    let key = partnergate_search::TokenKey::load_or_create(&config.data_dir)?;
    let search = partnergate_search::Searcher::new(wired.authz.clone(), key, config.search_limits);
    let sweeper =
        partnergate_partners::sweep::Sweeper::spawn(orchestrator.clone(), config.partner_sweep)?;
    let state = app_state(config, wired.authz, orchestrator, token, metrics, search);
    let state = Arc::new(state);
    Ok(Sidecar {
        state,
        token_path,
        watch: wired.watch,
        feed: wired.feed,
        shadow_watch: wired.shadow_watch,
        sweeper: Some(sweeper),
    })
}

/// The runtime `config` asks for: the pack, the store, the decision log,
/// the shadow set, watching and the change feed.
fn runtime(config: &ServeConfig) -> Runtime {
    let source = PackSource::new(config.policies.clone(), Some(config.schema.clone()))
        .with_limits(config.limits);
    Runtime::new(source)
        .store(config.store.clone(), config.data_dir.clone())
        .replica(config.replica.clone())
        .audit(config.audit.clone())
        .audit_required(config.audit_required)
        .request_entities(config.request_entities)
        .decision_cache(config.decision_cache)
        .shadow(config.shadow_policies.clone())
        .watch(config.watch)
        .follow_changes(true)
}

/// The handlers' state over the wired decision path.
fn app_state(
    config: &ServeConfig,
    authz: Authz,
    orchestrator: Arc<partnergate_partners::Orchestrator>,
    token: String,
    metrics: PrometheusHandle,
    search: partnergate_search::Searcher,
) -> AppState {
    AppState {
        authz,
        orchestrator,
        token,
        protect_queries: config.protect_queries,
        max_batch: config.max_batch,
        max_body_bytes: config.max_body_bytes,
        request_timeout: config.request_timeout,
        metrics,
        protect_metrics: config.protect_metrics,
        public_url: match &config.public_url {
            Some(url) => OnceLock::from(url.trim_end_matches('/').to_string()),
            None => OnceLock::new(),
        },
        search,
        audit_path: match config.audit.as_ref().map(|a| &a.sink) {
            Some(crate::audit::Sink::File(path)) => Some(path.clone()),
            _ => None,
        },
        console: config.console.then(|| console::Settings::of(config)),
    }
}

/// Run the sidecar until SIGTERM or Ctrl-C; SIGHUP forces a reload.
pub async fn serve(config: ServeConfig) -> Result<(), ServeError> {
    if config.max_body_bytes_in_flight < config.max_body_bytes {
        return Err(ServeError::BodyBudget {
            in_flight: config.max_body_bytes_in_flight,
            one: config.max_body_bytes,
        });
    }
    // Loading may prove invariants, which runs its own runtime: off the async threads.
    let sidecar = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || build(&config))
            .await
            .map_err(|e| ServeError::Io(std::io::Error::other(e.to_string())))??
    };
    let listener = tokio::net::TcpListener::bind(config.bind)
        .await
        .map_err(|source| ServeError::Bind {
            addr: config.bind,
            source,
        })?;
    let addr = listener.local_addr()?;
    let pack = sidecar.state.authz.evaluator().current();
    tracing::info!(%addr, version = %pack.version, policies = pack.policies.len(),
        entities = sidecar.state.authz.directory().len(),
        store = %sidecar.state.authz.directory().backend().describe(),
        token_file = %sidecar.token_path.display(), replica = %config.replica, "partnergate listening");
    // Machine-readable line for scripts: the bound address.
    println!("partnergate listening on http://{addr}");
    // Without --public-url the AuthZEN metadata names the bound address.
    let _ = sidecar.state.public_url.set(format!("http://{addr}"));
    let limits = conn::ConnLimits {
        header_timeout: config.header_timeout,
        idle_timeout: config.idle_timeout,
        max_connections: conn::fit_connection_cap(config.max_connections),
    };
    // One budget of connections (of file descriptors) for both listeners.
    let slots = conn::Slots::new(limits.max_connections);
    let budget = conn::BodyBudget::new(config.max_body_bytes_in_flight);

    spawn_sighup_reload(sidecar.state.clone());
    let (grpc_stop, grpc) =
        spawn_ext_authz(&config, &sidecar.state, limits, &slots, &budget).await?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let router = app(sidecar.state.clone());
    let server = tokio::spawn(async move {
        conn::run(listener, router, limits, &slots, async move {
            let _ = stop_rx.await;
        })
        .await;
        Ok::<(), std::io::Error>(())
    });
    shutdown_signal().await;
    tracing::info!("shutting down: draining requests");
    let _ = stop_tx.send(());
    let _ = grpc_stop.send(());
    if let Some(g) = grpc {
        let _ = tokio::time::timeout(config.shutdown_grace, g).await;
    }
    match tokio::time::timeout(config.shutdown_grace, server).await {
        Ok(Ok(Ok(()))) => tracing::info!("drained; bye"),
        Ok(Ok(Err(e))) => return Err(ServeError::Io(e)),
        Ok(Err(e)) => tracing::error!(error = %e, "server task failed"),
        Err(_) => tracing::warn!("drain timed out; closing remaining connections"),
    }
    drop(sidecar.sweeper);
    drop(sidecar.watch);
    drop(sidecar.shadow_watch);
    drop(sidecar.feed);
    if let Some(log) = sidecar.state.authz.audit() {
        log.shutdown();
    }
    Ok(())
}

/// Bind and start Envoy's gRPC ext_authz listener, if asked; it stops when
/// the returned sender fires (or is dropped).
async fn spawn_ext_authz(
    config: &ServeConfig,
    state: &Arc<AppState>,
    limits: conn::ConnLimits,
    slots: &conn::Slots,
    budget: &conn::BodyBudget,
) -> Result<
    (
        tokio::sync::oneshot::Sender<()>,
        Option<tokio::task::JoinHandle<()>>,
    ),
    ServeError,
> {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let Some(at) = &config.ext_authz_grpc else {
        return Ok((tx, None));
    };
    let listener =
        gateway::GrpcListener::bind(at)
            .await
            .map_err(|source| ServeError::BindGrpc {
                addr: at.to_string(),
                source,
            })?;
    let bound = listener.describe();
    tracing::info!(addr = %bound, "ext_authz gRPC listening");
    // Second machine-readable line; a closed stdout is no reason to stop.
    {
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stdout(),
            "partnergate ext_authz gRPC listening on {bound}"
        );
    }
    let state = state.clone();
    let (slots, budget) = (slots.clone(), budget.clone());
    let task = tokio::spawn(async move {
        let stop = async move {
            let _ = rx.await;
        };
        listener.serve(state, limits, &slots, &budget, stop).await;
    });
    Ok((tx, Some(task)))
}

fn spawn_sighup_reload(state: Arc<AppState>) {
    #[cfg(unix)]
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            return;
        };
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading policies");
            let ev = state.authz.evaluator().clone();
            let _ = tokio::task::spawn_blocking(move || ev.reload()).await;
        }
    });
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
