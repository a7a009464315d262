//! [`Runtime`]: the one place a policy pack, an entity store, the directory
//! over it and the decision log are wired together into an [`Authz`].
//!
//! The sidecar, the orchestrator's command line, the benches and the
//! examples all build their decision path here, so each gets the same
//! gates, the same store opening, the same decision log (reloads logged
//! too) and the same request-entity rules. It must never know the partner
//! pack (the orchestrator builds itself over a [`Wired`]'s pieces), HTTP or
//! the command line.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::audit::{AuditConfig, AuditError, AuditLog, ReloadEvent, Sink};
use crate::authz::{Authz, RequestEntities};
use crate::directory::{Directory, DirectoryError};
use crate::policies::{LoadError, PackSource};
use crate::reload::{self, Evaluator, Gate, WatchError, WatchHandle};
use crate::store::postgres::{ChangeFeed, Compactor, Follower, FullLoad, PgStore};
use crate::store::sqlite::SqliteStore;
use crate::store::{Change, CurrentRows, EntityBackend, Migration, StoreError, StoreSpec};

/// A default replica id: host name and process id.
pub fn default_replica_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map_or_else(|_| "host".into(), |h| h.trim().to_string());
    format!("{host}-{}", std::process::id())
}

/// Why a runtime could not be wired.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The first load of the pack or of the shadow policies failed (or a gate refused it).
    #[error("cannot load the policies:\n{}", .0.render())]
    Load(#[from] LoadError),
    /// The directory could not read the store's entities into memory.
    #[error(transparent)]
    Directory(#[from] DirectoryError),
    /// The entity store could not be opened or migrated, or its change feed could not start.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The policy watcher could not start.
    #[error(transparent)]
    Watch(#[from] WatchError),
    /// The decision log could not be opened (or repaired).
    #[error("decision log: {0}")]
    Audit(#[from] AuditError),
    /// The change records kept with writes could not be checked against
    /// the log or written to it at start.
    #[error("decision log: {0}")]
    Recover(#[from] crate::changes::RecoverError),
    /// `--audit-required` was asked without a decision log to wait on.
    #[error("--audit-required needs a decision log (not --audit-log off)")]
    AuditRequiredWithoutLog,
}

/// The opened entity store, by kind: the directory reads it as an
/// [`EntityBackend`]; layers above (the orchestrator) use the same
/// connection for their own tables.
#[derive(Clone)]
pub enum OpenStore {
    /// A SQLite database file.
    Sqlite(Arc<SqliteStore>),
    /// A PostgreSQL database (one connection, reopened after a loss).
    Postgres(Arc<PgStore>),
}

impl OpenStore {
    /// The store as the directory's backend.
    pub fn backend(&self) -> Arc<dyn EntityBackend> {
        match self {
            OpenStore::Sqlite(s) => s.clone(),
            OpenStore::Postgres(s) => s.clone(),
        }
    }
}

/// The wired pieces: the decision path and what its owner keeps alive.
pub struct Wired {
    /// The decision path (evaluator, directory, decision log, shadow set).
    pub authz: Authz,
    /// The store the directory was loaded from.
    pub store: OpenStore,
    /// The policy watcher, when asked for ([`Runtime::watch`]).
    pub watch: Option<WatchHandle>,
    /// The shadow policies' watcher, when watching with a shadow set.
    pub shadow_watch: Option<WatchHandle>,
    /// The PostgreSQL change feed (other replicas' writes), when asked for
    /// ([`Runtime::follow_changes`]) over PostgreSQL.
    pub feed: Option<ChangeFeed>,
    /// The change feed's compaction ([`Runtime::feed_retention`]), over
    /// PostgreSQL while following changes.
    pub compactor: Option<Compactor>,
}

impl Wired {
    /// Stop the decision log's writer after writing what is queued (a
    /// short-lived command calls this before it exits).
    pub fn shutdown_log(&self) {
        if let Some(log) = self.authz.audit() {
            log.shutdown();
        }
    }
}

/// A builder of the decision path: the pack (with its gates), the store,
/// the decision log and the options; [`Runtime::build`] wires them once.
pub struct Runtime {
    source: PackSource,
    gates: Vec<Gate>,
    gate_inputs: Vec<PathBuf>,
    store: StoreSpec,
    migrations: Vec<Migration>,
    data_dir: PathBuf,
    replica: Option<String>,
    audit: Option<AuditConfig>,
    audit_required: bool,
    request_entities: RequestEntities,
    decision_cache: usize,
    shadow: Option<PathBuf>,
    watch: bool,
    full_reloads: bool,
    follow_changes: bool,
    feed_retention: Option<std::time::Duration>,
    clock: Arc<dyn crate::clock::Clock>,
}

impl Runtime {
    /// A runtime over `source` with SQLite in the `data` directory, no
    /// decision log, no watcher, the default request-entity rules and the
    /// default decision cache.
    pub fn new(source: PackSource) -> Self {
        Runtime {
            source,
            gates: Vec::new(),
            gate_inputs: Vec::new(),
            store: StoreSpec::Sqlite,
            migrations: Vec::new(),
            data_dir: PathBuf::from("data"),
            replica: None,
            audit: None,
            audit_required: false,
            request_entities: RequestEntities::default(),
            decision_cache: crate::cache::DEFAULT_ENTRIES,
            shadow: None,
            watch: false,
            full_reloads: false,
            follow_changes: false,
            feed_retention: None,
            clock: Arc::new(crate::clock::SystemClock),
        }
    }

    /// Also run `migrations` when the store opens, after core's own: the
    /// tables of a crate above core (see [`Migration`]).
    pub fn migrations(mut self, migrations: &[Migration]) -> Self {
        self.migrations.extend_from_slice(migrations);
        self
    }

    /// The clock decisions read `context.now` from (default: the system clock).
    pub fn clock(mut self, clock: Arc<dyn crate::clock::Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The pack's files.
    pub fn source(&self) -> &PackSource {
        &self.source
    }

    /// A gate every pack must pass, and the files or directories it reads
    /// (counted as reload inputs and watched).
    pub fn gate(mut self, gate: Gate, inputs: impl IntoIterator<Item = PathBuf>) -> Self {
        self.gates.push(gate);
        self.gate_inputs.extend(inputs);
        self
    }

    /// The entity store (SQLite: `store.db` in `data_dir`).
    pub fn store(mut self, spec: StoreSpec, data_dir: impl Into<PathBuf>) -> Self {
        self.store = spec;
        self.data_dir = data_dir.into();
        self
    }

    /// SQLite's `store.db` in `data_dir`.
    pub fn sqlite_in(self, data_dir: impl Into<PathBuf>) -> Self {
        self.store(StoreSpec::Sqlite, data_dir)
    }

    /// This replica's name: in the PostgreSQL change feed and on every log
    /// record that has no replica of its own ([`default_replica_id`] when
    /// PostgreSQL needs one and none is given).
    pub fn replica(mut self, replica: impl Into<String>) -> Self {
        self.replica = Some(replica.into());
        self
    }

    /// The decision log (None: off).
    pub fn audit(mut self, config: Option<AuditConfig>) -> Self {
        self.audit = config;
        self
    }

    /// Refuse a decision whose log record cannot be made durable.
    pub fn audit_required(mut self, required: bool) -> Self {
        self.audit_required = required;
        self
    }

    /// What request entities may do to stored facts.
    pub fn request_entities(mut self, mode: RequestEntities) -> Self {
        self.request_entities = mode;
        self
    }

    /// How many decisions the exact decision cache keeps (default
    /// [`crate::cache::DEFAULT_ENTRIES`]; 0 turns it off).
    pub fn decision_cache(mut self, entries: usize) -> Self {
        self.decision_cache = entries;
        self
    }

    /// A candidate policy directory evaluated beside the live one.
    pub fn shadow(mut self, dir: Option<PathBuf>) -> Self {
        self.shadow = dir;
        self
    }

    /// Watch the policy files (and the shadow set's) and reload on change.
    pub fn watch(mut self, watch: bool) -> Self {
        self.watch = watch;
        self
    }

    /// Reload every policy file from scratch instead of only the files
    /// whose text changed (the same packs, slower; see
    /// [`Evaluator::set_full_reloads`]).
    pub fn full_reloads(mut self, full: bool) -> Self {
        self.full_reloads = full;
        self
    }

    /// Over PostgreSQL, follow other replicas' writes into the directory.
    pub fn follow_changes(mut self, follow: bool) -> Self {
        self.follow_changes = follow;
        self
    }

    /// Over PostgreSQL while following changes, compact the change feed:
    /// its rows older than `retention` (by the database's clock) are
    /// deleted by whichever replica takes the compaction lock, checked
    /// every `retention / 4` (at least every second, at most every
    /// minute). `None`: never compacted.
    pub fn feed_retention(mut self, retention: Option<std::time::Duration>) -> Self {
        self.feed_retention = retention;
        self
    }

    /// Load the pack, open the store, the directory and the decision log,
    /// and wire them into an [`Authz`].
    pub fn build(self) -> Result<Wired, RuntimeError> {
        if self.audit_required && self.audit.is_none() {
            return Err(RuntimeError::AuditRequiredWithoutLog);
        }
        let evaluator = Arc::new(Evaluator::load_with_inputs(
            self.source.clone(),
            self.gates,
            self.gate_inputs.clone(),
        )?);
        evaluator.set_full_reloads(self.full_reloads);
        let store = open_store(
            &self.store,
            &self.data_dir,
            self.replica.as_deref(),
            &self.migrations,
        )?;
        let directory = Arc::new(Directory::open(store.backend())?);
        let feed = match (&store, self.follow_changes) {
            (OpenStore::Postgres(pg), true) => Some(follow(pg, &directory)?),
            _ => None,
        };
        let compactor = match (&store, self.follow_changes, self.feed_retention) {
            (OpenStore::Postgres(pg), true, Some(retention)) => {
                let every = (retention / 4).clamp(
                    std::time::Duration::from_secs(1),
                    std::time::Duration::from_secs(60),
                );
                Some(Compactor::start(pg.url(), retention, every)?)
            }
            _ => None,
        };
        let watch = if self.watch {
            Some(reload::watch(evaluator.clone(), self.gate_inputs)?)
        } else {
            None
        };
        let mut authz = Authz::new(evaluator.clone(), directory)
            .with_request_entities(self.request_entities)
            .with_decision_cache(self.decision_cache)
            .with_clock(self.clock);
        let mut shadow_watch = None;
        if let Some(dir) = &self.shadow {
            let candidate = load_shadow(&self.source, dir)?;
            if self.watch {
                shadow_watch = Some(reload::watch(candidate.clone(), Vec::new())?);
            }
            authz = authz.with_shadow(candidate);
        }
        if let Some(mut config) = self.audit {
            if config.replica.is_none() {
                config.replica.clone_from(&self.replica);
            }
            let sink = config.sink.clone();
            let log = open_log(config)?;
            log_reloads(&evaluator, log.clone());
            authz = authz
                .with_audit(log.clone())
                .with_audit_required(self.audit_required);
            if let Sink::File(path) = sink {
                authz = authz.with_change_recorder(recover_changes(log, &path, store.backend())?);
            }
        }
        Ok(Wired {
            authz,
            store,
            watch,
            shadow_watch,
            feed,
            compactor,
        })
    }
}

/// Open the store a [`StoreSpec`] names, running `migrations` after core's.
fn open_store(
    spec: &StoreSpec,
    data_dir: &Path,
    replica: Option<&str>,
    migrations: &[Migration],
) -> Result<OpenStore, StoreError> {
    Ok(match spec {
        StoreSpec::Sqlite => {
            OpenStore::Sqlite(Arc::new(SqliteStore::open_in_with(data_dir, migrations)?))
        }
        StoreSpec::Postgres(url) => {
            let replica = replica.map_or_else(default_replica_id, str::to_string);
            OpenStore::Postgres(Arc::new(PgStore::open_with(url, &replica, migrations)?))
        }
    })
}

/// Start the PostgreSQL change feed into `directory` from what it loaded.
fn follow(pg: &PgStore, directory: &Arc<Directory>) -> Result<ChangeFeed, StoreError> {
    let from = pg
        .loaded_snapshot()
        .ok_or_else(|| StoreError::Backend("the change feed starts after a load".into()))?;
    ChangeFeed::start(
        pg.url(),
        (from, directory.loaded_seq()),
        DirectoryFollower(directory.clone()),
    )
}

/// The directory as a change feed's [`Follower`].
pub struct DirectoryFollower(pub Arc<Directory>);

impl Follower for DirectoryFollower {
    fn apply(&self, changes: Vec<Change>, current: &mut CurrentRows<'_>) -> Result<(), StoreError> {
        metrics::counter!("partnergate_feed_changes_total").increment(changes.len() as u64);
        self.0.apply_current(changes, current)
    }

    fn reload(&self, load: &mut FullLoad<'_>) -> Result<(), StoreError> {
        let n = self.0.reload(load)?;
        tracing::info!(entities = n, "directory reloaded from the store");
        Ok(())
    }
}

/// Load the shadow policies with the live pack's schema and limits.
fn load_shadow(live: &PackSource, dir: &Path) -> Result<Arc<Evaluator>, LoadError> {
    let candidate = Arc::new(Evaluator::load(
        PackSource::new(dir.to_path_buf(), live.schema.clone()).with_limits(live.limits),
    )?);
    tracing::info!(dir = %dir.display(), version = %candidate.current().version, "shadow policies loaded");
    Ok(candidate)
}

/// Before serving: write the change records kept for the log at `path`
/// that it lacks ([`crate::changes::recover`]), then keep every later
/// write's records until the log holds them.
fn recover_changes(
    log: AuditLog,
    path: &Path,
    backend: Arc<dyn EntityBackend>,
) -> Result<crate::changes::ChangeRecorder, RuntimeError> {
    let log_id = crate::audit::recovered::log_id(path)?;
    let done = crate::changes::recover(&log, path, &log_id, backend.as_ref())?;
    if done.kept > 0 {
        tracing::info!(?done, log_id, "decision log: kept change records checked");
    }
    crate::changes::ChangeRecorder::kept(log, log_id, backend)
        .map_err(|e| RuntimeError::Audit(AuditError::Spawn(e)))
}

/// Open the decision log, warning when a torn last record was repaired.
fn open_log(config: AuditConfig) -> Result<AuditLog, AuditError> {
    let (log, info) = AuditLog::open(config)?;
    if let Some(repair) = &info.repaired {
        tracing::warn!(?repair, "decision log: a torn last record was repaired");
    }
    Ok(log)
}

/// Log every reload attempt of `evaluator` (its files, the version serving,
/// the error if it failed).
fn log_reloads(evaluator: &Evaluator, log: AuditLog) {
    evaluator.on_reload(Box::new(move |pack, error| {
        log.log(ReloadEvent {
            request_id: None,
            files: pack.files.iter().map(|f| f.display().to_string()).collect(),
            version: Some(pack.version.clone()),
            error: error.map(|e| {
                let problems: Vec<String> = e.problems().iter().map(|p| p.to_string()).collect();
                format!("{e}: {problems}", problems = problems.join("; "))
            }),
        });
    }));
}
