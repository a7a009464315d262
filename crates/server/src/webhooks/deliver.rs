//! The delivery loop: a task that leases each account's next due event
//! from the outbox (`EventStore::claim`), POSTs it to every endpoint not
//! yet done, and records the outcome (`EventStore::settle`): delivered on
//! 2xx from all, else retried after a backoff with jitter, dead after the
//! configured attempts. Accounts are delivered side by side (up to the
//! concurrency), each in order; a lease outlives the longest attempt, and a
//! lease past its time (a process killed mid-delivery) is taken over.
//!
//! The HTTP client is hyper-util's: no redirect is followed (a 3xx is a
//! failure), the connection and the whole exchange have timeouts, the
//! response body is never read (only the status counts).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::task::JoinSet;

use crate::webhooks::config::{Endpoint, WebhookConfig};
use crate::webhooks::sign::signature;
use partnergate_orchestrator::events::{backoff, EventRow, Settled};
use partnergate_orchestrator::Orchestrator;

/// How often the outbox's counts are read for the metrics.
const STATS_EVERY: Duration = Duration::from_secs(5);
/// Kept of a failure's text.
const MAX_ERROR: usize = 300;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// The running delivery; [`Delivering::stop`] ends it.
pub struct Delivering {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Delivering {
    /// Start delivering `orchestrator`'s outbox to `config`'s endpoints,
    /// leasing as `owner` (unique per process).
    pub fn start(orchestrator: Arc<Orchestrator>, config: WebhookConfig, owner: String) -> Self {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(run(orchestrator, Arc::new(config), owner, stopped));
        Delivering { stop, task }
    }

    /// Stop taking events and wait up to `grace` for attempts in flight
    /// (one cut short is retried after its lease: at least once).
    pub async fn stop(self, grace: Duration) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(grace, self.task).await;
    }
}

/// Milliseconds since the epoch on this process's clock.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn client(config: &WebhookConfig) -> HttpClient {
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(config.delivery.connect_timeout));
    http.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(8)
        .build(http)
}

async fn run(
    orch: Arc<Orchestrator>,
    config: Arc<WebhookConfig>,
    owner: String,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    let http = client(&config);
    let d = &config.delivery;
    // A lease outlives every endpoint's attempt, with room to record it.
    let per_event =
        (d.timeout + d.connect_timeout) * u32::try_from(config.endpoints.len()).unwrap_or(u32::MAX);
    let lease = per_event + Duration::from_secs(5);
    let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
    let mut flying: JoinSet<()> = JoinSet::new();
    let mut last_stats = None::<std::time::Instant>;
    loop {
        if *stopped.borrow() {
            break;
        }
        if last_stats.is_none_or(|t| t.elapsed() >= STATS_EVERY) {
            last_stats = Some(std::time::Instant::now());
            publish_stats(&orch).await;
        }
        let free = d.concurrency.saturating_sub(flying.len());
        let mut claimed = 0;
        if free > 0 {
            let (o, who) = (orch.clone(), owner.clone());
            let now = now_ms();
            let limit = i64::try_from(free).unwrap_or(1);
            match tokio::task::spawn_blocking(move || {
                o.events()
                    .claim(&who, now, now.saturating_add(lease_ms), limit)
            })
            .await
            {
                Ok(Ok(rows)) => {
                    claimed = rows.len();
                    for row in rows {
                        flying.spawn(deliver(
                            orch.clone(),
                            config.clone(),
                            http.clone(),
                            owner.clone(),
                            row,
                        ));
                    }
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "webhooks: cannot read the events outbox; retrying");
                }
                Err(e) => tracing::warn!(error = %e, "webhooks: the outbox read failed"),
            }
        }
        if claimed > 0 && flying.len() < d.concurrency {
            continue;
        }
        tokio::select! {
            _ = stopped.changed() => {}
            Some(_) = flying.join_next(), if !flying.is_empty() => {}
            () = tokio::time::sleep(d.poll) => {}
        }
    }
    // Attempts in flight finish (their own timeouts bound them).
    while flying.join_next().await.is_some() {}
}

async fn publish_stats(orch: &Arc<Orchestrator>) {
    let o = orch.clone();
    if let Ok(Ok(s)) = tokio::task::spawn_blocking(move || o.events().event_stats()).await {
        metrics::gauge!("partnergate_events_pending").set(s.pending as f64);
        metrics::gauge!("partnergate_events_delivered").set(s.delivered as f64);
        metrics::gauge!("partnergate_events_dead").set(s.dead as f64);
        metrics::gauge!("partnergate_events_failing").set(s.failing as f64);
        let age = s
            .oldest_pending_ms
            .map_or(0.0, |t| (now_ms() - t).max(0) as f64 / 1000.0);
        metrics::gauge!("partnergate_events_oldest_pending_age_seconds").set(age);
    }
}

/// One event to every endpoint not yet done, then its outcome recorded.
async fn deliver(
    orch: Arc<Orchestrator>,
    config: Arc<WebhookConfig>,
    http: HttpClient,
    owner: String,
    row: EventRow,
) {
    let body = Bytes::from(row.payload().to_string());
    let mut done = row.done.clone();
    let mut errors = Vec::new();
    for e in &config.endpoints {
        if done.contains(&e.name) {
            continue;
        }
        let result = post(&http, e, &row.id, body.clone(), config.delivery.timeout).await;
        let label = if result.is_ok() {
            "delivered"
        } else {
            "failed"
        };
        metrics::counter!("partnergate_event_deliveries_total", "endpoint" => e.name.clone(), "result" => label).increment(1);
        match result {
            Ok(()) => done.push(e.name.clone()),
            Err(why) => errors.push(format!("{}: {why}", e.name)),
        }
    }
    let attempts = u32::try_from(row.attempts)
        .unwrap_or(u32::MAX)
        .saturating_add(1);
    let outcome = if errors.is_empty() {
        Settled::Delivered { at_ms: now_ms() }
    } else {
        let mut error = errors.join("; ");
        if error.len() > MAX_ERROR {
            let mut cut = MAX_ERROR;
            while !error.is_char_boundary(cut) {
                cut -= 1;
            }
            error.truncate(cut);
        }
        if attempts >= config.delivery.max_attempts {
            tracing::warn!(event = %row.id, account = %row.account, attempts, error = %error, "webhooks: event given up (dead letter)");
            Settled::Dead { error }
        } else {
            let d = &config.delivery;
            let pause = backoff(
                attempts,
                u64::try_from(d.backoff_base.as_millis()).unwrap_or(u64::MAX),
                u64::try_from(d.backoff_max.as_millis()).unwrap_or(u64::MAX),
            );
            Settled::Retry {
                next_ms: now_ms().saturating_add(i64::try_from(pause).unwrap_or(i64::MAX)),
                error,
            }
        }
    };
    let pos = row.pos;
    let settled =
        tokio::task::spawn_blocking(move || orch.events().settle(pos, &owner, &done, &outcome))
            .await;
    match settled {
        Ok(Ok(true)) => {}
        Ok(Ok(false)) => {
            tracing::warn!(event = %row.id, "webhooks: the lease of an event passed during its attempt; another process took it over");
        }
        Ok(Err(e)) => {
            tracing::warn!(event = %row.id, error = %e, "webhooks: cannot record an attempt; the event is retried after its lease");
        }
        Err(e) => {
            tracing::warn!(event = %row.id, error = %e, "webhooks: recording an attempt failed");
        }
    }
}

/// POST `body` to `endpoint`, signed; `Ok` only on a 2xx answer within
/// `timeout`. The response body is dropped unread.
async fn post(
    http: &HttpClient,
    endpoint: &Endpoint,
    id: &str,
    body: Bytes,
    timeout: Duration,
) -> Result<(), String> {
    let ts = now_ms() / 1000;
    let request = hyper::Request::post(endpoint.url.clone())
        .header("content-type", "application/json")
        .header(
            "user-agent",
            concat!("partnergate-webhooks/", env!("CARGO_PKG_VERSION")),
        )
        .header("webhook-id", id)
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", signature(&endpoint.key, id, ts, &body))
        .body(Full::new(body))
        .map_err(|e| format!("cannot build the request: {e}"))?;
    match tokio::time::timeout(timeout, http.request(request)).await {
        Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
        Ok(Err(e)) => Err(format!("{e}: {}", source_chain(&e))),
        Ok(Ok(r)) if r.status().is_success() => Ok(()),
        Ok(Ok(r)) if r.status().is_redirection() => Err(format!(
            "HTTP {} (redirects are not followed)",
            r.status().as_u16()
        )),
        Ok(Ok(r)) => Err(format!("HTTP {}", r.status().as_u16())),
    }
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut out = Vec::new();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push(s.to_string());
        cur = s.source();
    }
    out.join(": ")
}
