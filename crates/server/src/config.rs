//! What `partnergate serve` can be told ([`ServeConfig`], its one set of
//! [`defaults`]) and why it may fail to start ([`ServeError`]). Plain data:
//! it must never know the router, a handler or the command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use partnergate_core::runtime::RuntimeError;

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
    /// Reload every policy file from scratch, not only the files whose text
    /// changed (the same packs, slower; to compare the two).
    pub full_reload: bool,
    /// Reject a reload that breaks an invariant (needs cvc5).
    pub prove_on_reload: bool,
    /// The invariants directory for `prove_on_reload`.
    pub invariants: PathBuf,
    /// Where entities live: embedded SQLite (default) or PostgreSQL.
    pub store: partnergate_core::store::StoreSpec,
    /// This replica's name, in change feeds and logs.
    pub replica: String,
    /// Over PostgreSQL: how long the change feed keeps its rows (by the
    /// database's clock) before compaction deletes them; a replica stopped
    /// longer reloads every entity when it resumes. `None`: never compacted.
    pub feed_retention: Option<Duration>,
    /// The decision log (None: off).
    pub audit: Option<partnergate_audit::AuditConfig>,
    /// Refuse (503) a decision whose log record cannot be made durable.
    pub audit_required: bool,
    /// Ship the decision log file into PostgreSQL when the store is
    /// PostgreSQL (`--no-audit-ship`: off).
    pub audit_ship: bool,
    /// The pause between shipping rounds that found nothing more to ship.
    pub audit_ship_interval: Duration,
    /// Records per shipping transaction.
    pub audit_ship_batch: usize,
    /// Drop the shipped logs' day partitions older than this many days
    /// (the shipper thread, hourly); None: keep all.
    pub audit_retention_days: Option<u32>,
    /// A candidate policy directory evaluated beside the live one (shadow mode).
    pub shadow_policies: Option<PathBuf>,
    /// Sizes and nesting of policy files refused before parsing.
    pub limits: partnergate_policy::prescan::PackLimits,
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
    pub request_entities: partnergate_core::authz::RequestEntities,
    /// How many decisions the exact decision cache keeps (0: off).
    pub decision_cache: usize,
    /// Where Envoy's gRPC ext_authz service listens (None: not served).
    pub ext_authz_grpc: Option<GrpcListen>,
    /// Search page sizes: the default and the largest a request may ask.
    pub search_limits: partnergate_search::Limits,
    /// How often ended partner access is swept (marked, its seat freed).
    pub partner_sweep: Duration,
    /// Before a partner's end, when "access ending soon" is announced
    /// (once per end and lead time); empty: never.
    pub ending_soon: Vec<Duration>,
    /// The webhook configuration file (`--webhooks`); `None`:
    /// `DATA_DIR/webhooks.toml` if present, else no delivery.
    pub webhooks: Option<PathBuf>,
    /// Serve the web console at `/console`.
    pub console: bool,
    /// The policy test suites the console runs.
    pub tests: PathBuf,
}

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
    /// `--feed-retention-secs` (1 h)
    pub const FEED_RETENTION_SECS: u64 = 3_600;
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
            full_reload: false,
            prove_on_reload: false,
            invariants: defaults::INVARIANTS.into(),
            store: partnergate_core::store::StoreSpec::Sqlite,
            replica: partnergate_core::runtime::default_replica_id(),
            feed_retention: Some(Duration::from_secs(defaults::FEED_RETENTION_SECS)),
            audit: None,
            audit_required: false,
            audit_ship: true,
            audit_ship_interval: Duration::from_millis(1000),
            audit_ship_batch: 1000,
            audit_retention_days: None,
            shadow_policies: None,
            limits: partnergate_policy::prescan::PackLimits::default(),
            header_timeout: Duration::from_millis(defaults::HEADER_TIMEOUT_MS),
            idle_timeout: Duration::from_millis(defaults::IDLE_TIMEOUT_MS),
            max_connections: defaults::MAX_CONNECTIONS,
            protect_metrics: false,
            public_url: None,
            request_entities: partnergate_core::authz::RequestEntities::default(),
            decision_cache: defaults::DECISION_CACHE,
            ext_authz_grpc: None,
            search_limits: partnergate_search::Limits::default(),
            partner_sweep: Duration::from_millis(defaults::PARTNER_SWEEP_MS),
            ending_soon: partnergate_orchestrator::DEFAULT_ENDING_SOON.to_vec(),
            webhooks: None,
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
    Load(#[from] partnergate_policy::policies::LoadError),
    /// The stored entities could not be loaded into the directory.
    #[error(transparent)]
    Directory(#[from] partnergate_core::directory::DirectoryError),
    /// The store could not be opened or migrated.
    #[error(transparent)]
    Store(#[from] partnergate_core::store::StoreError),
    /// The policy watcher could not start.
    #[error(transparent)]
    Watch(#[from] partnergate_core::reload::WatchError),
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
    Audit(#[from] partnergate_audit::AuditError),
    /// `--audit-required` was given without a decision log.
    #[error("--audit-required needs a decision log (not --audit-log off)")]
    AuditRequiredWithoutLog,
    /// The change records kept with writes could not be written to the log at start.
    #[error("decision log: {0}")]
    Recover(#[from] partnergate_core::changes::RecoverError),
    /// The page-token key (`DATA_DIR/search.key`) could not be read or created.
    #[error(transparent)]
    SearchKey(#[from] partnergate_search::KeyError),
    /// The webhook configuration (or a secret it names) is unusable.
    #[error("webhooks: {0}")]
    Webhooks(#[from] crate::webhooks::WebhookConfigError),
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

/// Where the gRPC ext_authz service listens (`--ext-authz-grpc`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrpcListen {
    /// A TCP address (port 0: any free port, printed at start).
    Tcp(std::net::SocketAddr),
    /// A Unix socket path (`unix:PATH`); a stale socket file is replaced.
    Unix(PathBuf),
}

impl std::str::FromStr for GrpcListen {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("`unix:` needs a socket path, e.g. unix:/run/partnergate.sock".into());
            }
            return Ok(GrpcListen::Unix(PathBuf::from(path)));
        }
        s.parse()
            .map(GrpcListen::Tcp)
            .map_err(|e| format!("`{s}` is neither an address (127.0.0.1:9191) nor unix:PATH: {e}"))
    }
}

impl std::fmt::Display for GrpcListen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GrpcListen::Tcp(a) => write!(f, "{a}"),
            GrpcListen::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}
