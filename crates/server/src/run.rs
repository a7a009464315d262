//! Start-up and shutdown: the token, building the sidecar's state over
//! the wired decision path, the listeners, SIGHUP reloads and the drain.

use std::path::PathBuf;
use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use partnergate_core::authz::Authz;
use partnergate_core::runtime::Runtime;
use partnergate_policy::policies::PackSource;

use crate::config::{ServeConfig, ServeError};
use crate::state::{metrics_handle, AppState};
use crate::{conn, gateway, router};
use partnergate_core::reload;

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
    pub feed: Option<partnergate_core::store::postgres::ChangeFeed>,
    /// The change feed's compaction (PostgreSQL, `--feed-retention-secs`).
    pub compactor: Option<partnergate_core::store::postgres::Compactor>,
    /// The watcher of the shadow policies, if any.
    pub shadow_watch: Option<reload::WatchHandle>,
    /// The sweep of ended partner access (dropping it stops it).
    pub sweeper: Option<partnergate_orchestrator::sweep::Sweeper>,
    /// The shipper of the decision log into PostgreSQL (dropping it stops
    /// it after its current transaction).
    pub shipper: Option<partnergate_core::audit_db::ShipThread>,
    /// The webhook endpoints the lifecycle events go to (`serve` starts
    /// their delivery once it listens), if configured.
    pub webhooks: Option<crate::webhooks::WebhookConfig>,
}

/// Start the shipper thread when the store is PostgreSQL, the log is a
/// file and shipping is not turned off.
fn start_shipper(
    config: &ServeConfig,
) -> Result<Option<partnergate_core::audit_db::ShipThread>, ServeError> {
    let partnergate_core::store::StoreSpec::Postgres(url) = &config.store else {
        return Ok(None);
    };
    let Some(partnergate_audit::Sink::File(log)) = config.audit.as_ref().map(|a| &a.sink) else {
        return Ok(None);
    };
    if !config.audit_ship {
        return Ok(None);
    }
    let thread = partnergate_core::audit_db::ShipThread::start(
        partnergate_core::audit_db::ShipThreadConfig {
            log: log.clone(),
            url: url.clone(),
            replica: config.replica.clone(),
            interval: config.audit_ship_interval,
            batch: config.audit_ship_batch,
            retention_days: config.audit_retention_days,
        },
    )?;
    Ok(Some(thread))
}

/// Load policies, open the store and build the state (no socket yet).
pub fn build(config: &ServeConfig) -> Result<Sidecar, ServeError> {
    // The operator's endpoints are read first: a bad file starts nothing.
    let webhooks =
        crate::webhooks::WebhookConfig::load(config.webhooks.as_deref(), &config.data_dir)?;
    let (runtime, quotas) = partnergate_orchestrator::runtime::with_quotas(runtime(config))
        .map_err(|p| partnergate_policy::policies::LoadError::Validation { problems: vec![*p] })?;
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
    let orchestrator = Arc::new(partnergate_orchestrator::runtime::orchestrator(
        &wired, quotas,
    ));
    let key = partnergate_search::TokenKey::load_or_create(&config.data_dir)?;
    let search = partnergate_search::Searcher::new(wired.authz.clone(), key, config.search_limits);
    let sweeper = partnergate_orchestrator::sweep::Sweeper::spawn_with(
        orchestrator.clone(),
        config.partner_sweep,
        config.ending_soon.clone(),
    )?;
    let shipper = start_shipper(config)?;
    let mut state = app_state(config, wired.authz, orchestrator, token, metrics, search);
    state.audit_ship = shipper.as_ref().map(|s| s.status());
    // While this replica ships its log, its readers read every replica's
    // shipped logs from the database instead of its own file.
    if shipper.is_some() {
        if let partnergate_core::store::StoreSpec::Postgres(url) = &config.store {
            state.audit_db = Some(Arc::new(partnergate_core::audit_db::DbReader::new(
                url,
                &config.replica,
            )));
        }
    }
    let state = Arc::new(state);
    Ok(Sidecar {
        state,
        token_path,
        watch: wired.watch,
        feed: wired.feed,
        compactor: wired.compactor,
        shadow_watch: wired.shadow_watch,
        sweeper: Some(sweeper),
        shipper,
        webhooks,
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
        .full_reloads(config.full_reload)
        .follow_changes(true)
        .feed_retention(config.feed_retention)
}

/// The handlers' state over the wired decision path.
fn app_state(
    config: &ServeConfig,
    authz: Authz,
    orchestrator: Arc<partnergate_orchestrator::Orchestrator>,
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
            Some(url) => std::sync::OnceLock::from(url.trim_end_matches('/').to_string()),
            None => std::sync::OnceLock::new(),
        },
        search,
        audit_path: match config.audit.as_ref().map(|a| &a.sink) {
            Some(partnergate_audit::Sink::File(path)) => Some(path.clone()),
            _ => None,
        },
        console: config
            .console
            .then(|| crate::state::ConsoleSettings::of(config)),
        verify_gate: Arc::default(),
        audit_ship: None,
        audit_db: None,
    }
}

/// The webhook delivery of the partner lifecycle events, when endpoints
/// are configured; its lease owner names the replica and this process.
fn start_delivering(sidecar: &Sidecar, replica: &str) -> Option<crate::webhooks::Delivering> {
    sidecar.webhooks.clone().map(|w| {
        tracing::info!(
            endpoints = w.endpoints.len(),
            "webhooks: delivering partner lifecycle events"
        );
        let owner = format!(
            "{replica}-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        );
        crate::webhooks::Delivering::start(sidecar.state.orchestrator.clone(), w, owner)
    })
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
    let delivering = start_delivering(&sidecar, &config.replica);
    let (grpc_stop, grpc) =
        spawn_ext_authz(&config, &sidecar.state, limits, &slots, &budget).await?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let router = router::app(sidecar.state.clone());
    let server = tokio::spawn(async move {
        conn::run(listener, router, limits, &slots, async move {
            let _ = stop_rx.await;
        })
        .await;
        Ok::<(), std::io::Error>(())
    });
    shutdown_signal().await;
    tracing::info!("shutting down: draining requests");
    // A chain check in flight stops now rather than outlive the grace.
    sidecar.state.verify_gate.stop_all();
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
    if let Some(d) = delivering {
        d.stop(config.shutdown_grace).await;
    }
    drop(sidecar.sweeper);
    drop(sidecar.watch);
    drop(sidecar.shadow_watch);
    drop(sidecar.compactor);
    drop(sidecar.feed);
    drop(sidecar.shipper);
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
