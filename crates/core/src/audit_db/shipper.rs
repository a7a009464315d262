//! The shipper thread of a server whose store is PostgreSQL
//! ([`ShipThread`]): every interval it ships its log's new records
//! ([`Shipper`] rounds until none is left), on a connection of its own,
//! and keeps what a readiness probe and the metrics show ([`ShipStatus`]:
//! head, lag, the last error). A database that is down leaves the records
//! in the log file, and the next round after it is back catches up.
//!
//! Knows nothing of HTTP; never writes the log.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;
use time::OffsetDateTime;

use partnergate_audit::chain::newest_seq;

use super::retention::apply_retention;
use super::ship::{ShipRound, Shipper};
use crate::store::postgres::{redact, PgStore};

/// How the shipper thread runs.
#[derive(Debug, Clone)]
pub struct ShipThreadConfig {
    /// The log to ship (its rotated siblings included).
    pub log: PathBuf,
    /// The PostgreSQL URL.
    pub url: String,
    /// This replica's name (labels the connection's migrations).
    pub replica: String,
    /// The pause between two rounds that found nothing more to ship.
    pub interval: Duration,
    /// Records per transaction.
    pub batch: usize,
    /// Drop the day partitions older than this many days
    /// ([`apply_retention`], at start and every [`RETENTION_EVERY`]);
    /// None: keep everything.
    pub retention_days: Option<u32>,
}

/// How often the shipper thread runs the retention, when it has one.
pub const RETENTION_EVERY: Duration = Duration::from_secs(3600);
/// How soon a failed retention is tried again.
const RETENTION_RETRY: Duration = Duration::from_secs(60);

/// What the shipper thread reports.
#[derive(Debug, Default)]
pub struct ShipStatus {
    shipped: AtomicU64,
    head_seq: AtomicU64,
    lag_records: AtomicU64,
    /// When the oldest record not shipped yet was written (unix micros;
    /// 0: none known), as of the last round that reached the database.
    oldest_unshipped_us: AtomicI64,
    failing: AtomicBool,
    error: Mutex<Option<String>>,
    retention: Mutex<Option<String>>,
}

/// A copy of [`ShipStatus`] for a report.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ShipSnapshot {
    /// Records this process shipped.
    pub shipped: u64,
    /// The seq the database holds the log up to (as last read).
    pub head_seq: u64,
    /// Records of the log not in the database yet (as last read).
    pub lag_records: u64,
    /// Seconds since the oldest record not in the database yet was
    /// written (0 when none is left; grows while the database is down).
    pub lag_seconds: f64,
    /// Whether the last round failed.
    pub failing: bool,
    /// The last round's error, while failing.
    pub error: Option<String>,
    /// The last retention's outcome, when the thread runs one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention: Option<String>,
}

impl ShipStatus {
    /// A copy of the status.
    pub fn snapshot(&self) -> ShipSnapshot {
        ShipSnapshot {
            shipped: self.shipped.load(Ordering::Relaxed),
            head_seq: self.head_seq.load(Ordering::Relaxed),
            lag_records: self.lag_records.load(Ordering::Relaxed),
            lag_seconds: self.lag_seconds(),
            failing: self.failing.load(Ordering::Relaxed),
            error: self.error.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            retention: self
                .retention
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }

    /// Seconds since the oldest unshipped record was written, now.
    fn lag_seconds(&self) -> f64 {
        let oldest = self.oldest_unshipped_us.load(Ordering::Relaxed);
        if oldest == 0 || self.lag_records.load(Ordering::Relaxed) == 0 {
            return 0.0;
        }
        let now = OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000;
        ((now - i128::from(oldest)).max(0) as f64) / 1e6
    }

    /// Set the lag gauges from the status.
    fn publish(&self) {
        metrics::gauge!("partnergate_audit_ship_lag_records")
            .set(self.lag_records.load(Ordering::Relaxed) as f64);
        metrics::gauge!("partnergate_audit_ship_lag_seconds").set(self.lag_seconds());
    }

    /// A failed round: the lag is what the log holds beyond the last head
    /// seen (it grows while the database is unreachable).
    fn failed(&self, e: String, newest: Option<u64>) {
        metrics::counter!("partnergate_audit_ship_errors_total").increment(1);
        if let Some(n) = newest {
            let lag = n.saturating_sub(self.head_seq.load(Ordering::Relaxed));
            self.lag_records.store(lag, Ordering::Relaxed);
            if lag > 0 && self.oldest_unshipped_us.load(Ordering::Relaxed) == 0 {
                // Not known yet (the database was never reached): the
                // records waiting are at least as old as this failure.
                self.oldest_unshipped_us.store(now_us(), Ordering::Relaxed);
            }
        }
        self.publish();
        if !self.failing.swap(true, Ordering::Relaxed) {
            tracing::warn!(error = %e, "shipping the decision log to PostgreSQL failed; the log file keeps the records and shipping resumes when it can");
        }
        *self.error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
    }

    fn progressed(&self, r: &ShipRound) {
        let (head, lag) = (r.head_seq, r.lag_records);
        self.shipped.fetch_add(r.shipped, Ordering::Relaxed);
        metrics::counter!("partnergate_audit_shipped_records_total").increment(r.shipped);
        self.head_seq.store(head, Ordering::Relaxed);
        self.lag_records.store(lag, Ordering::Relaxed);
        // The oldest record left: the one the round stopped before, else
        // (it read to the end) one written after the round read.
        let oldest = match r.oldest_unshipped.as_deref().and_then(ts_us) {
            Some(t) => t,
            None if lag == 0 => 0,
            None => now_us(),
        };
        self.oldest_unshipped_us.store(oldest, Ordering::Relaxed);
        self.publish();
        if self.failing.swap(false, Ordering::Relaxed) {
            tracing::info!(head, lag, "shipping the decision log to PostgreSQL resumed");
        }
        *self.error.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    fn retained(&self, outcome: String) {
        *self.retention.lock().unwrap_or_else(|p| p.into_inner()) = Some(outcome);
    }
}

/// `url` with the connection named `partnergate-ship:REPLICA` (characters
/// other than letters, digits, `-`, `_`, `.` and `:` made `_`), so that an
/// operator sees, and may end, the shipper's backend in `pg_stat_activity`.
pub fn named(url: &str, replica: &str) -> String {
    let name: String = format!("partnergate-ship:{replica}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.:".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(63)
        .collect();
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}application_name={name}")
    } else {
        format!("{url} application_name={name}")
    }
}

fn now_us() -> i64 {
    i64::try_from(OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000).unwrap_or(i64::MAX)
}

/// An RFC 3339 time in unix microseconds.
fn ts_us(ts: &str) -> Option<i64> {
    let t = OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1000).ok()
}

/// How long dropping a [`ShipThread`] waits for its round to end before
/// leaving the thread behind (a database that stopped answering must not
/// hold up a server's shutdown; an unfinished round commits nothing).
const STOP_WAIT: Duration = Duration::from_secs(5);

/// The running shipper thread; dropping it stops the thread after its
/// current round (nothing half-committed: a round is one transaction).
pub struct ShipThread {
    status: Arc<ShipStatus>,
    stop: Option<mpsc::Sender<()>>,
    done: mpsc::Receiver<()>,
    thread: Option<JoinHandle<()>>,
}

impl ShipThread {
    /// Start shipping `config.log` to `config.url`.
    pub fn start(config: ShipThreadConfig) -> std::io::Result<Self> {
        let status = Arc::new(ShipStatus::default());
        let (stop, wake) = mpsc::channel::<()>();
        let (finished, done) = mpsc::channel::<()>();
        let s = status.clone();
        let thread = std::thread::Builder::new()
            .name("partnergate-audit-ship".into())
            .spawn(move || {
                run(&config, &s, &wake);
                let _ = finished.send(());
            })?;
        Ok(ShipThread {
            status,
            stop: Some(stop),
            done,
            thread: Some(thread),
        })
    }

    /// The shipper's status.
    pub fn status(&self) -> Arc<ShipStatus> {
        self.status.clone()
    }
}

impl Drop for ShipThread {
    fn drop(&mut self) {
        drop(self.stop.take());
        let Some(t) = self.thread.take() else { return };
        match self.done.recv_timeout(STOP_WAIT) {
            Ok(()) | Err(RecvTimeoutError::Disconnected) => {
                if t.join().is_err() {
                    tracing::warn!("the audit shipper thread panicked");
                }
            }
            Err(RecvTimeoutError::Timeout) => tracing::warn!(
                "the audit shipper's round did not end in {STOP_WAIT:?}; leaving it (it commits nothing unfinished)"
            ),
        }
    }
}

fn run(config: &ShipThreadConfig, status: &ShipStatus, wake: &mpsc::Receiver<()>) {
    let mut store: Option<PgStore> = None;
    let mut shipper: Option<Shipper> = None;
    let mut next_retention = Instant::now();
    loop {
        if store.is_none() {
            match PgStore::open(&named(&config.url, &config.replica), &config.replica) {
                Ok(s) => store = Some(s),
                Err(e) => status.failed(
                    format!("{}: {e}", redact(&config.url)),
                    newest_seq(&config.log),
                ),
            }
        }
        if shipper.is_none() {
            match Shipper::new(&config.log, config.batch) {
                Ok(s) => shipper = Some(s),
                Err(e) => status.failed(e.to_string(), newest_seq(&config.log)),
            }
        }
        if let (Some(store), Some(shipper)) = (store.as_ref(), shipper.as_mut()) {
            // Rounds until nothing is left or a stop is asked.
            loop {
                match shipper.round(store) {
                    Ok(r) => {
                        status.progressed(&r);
                        if r.shipped == 0 && !r.raced {
                            break;
                        }
                    }
                    Err(e) => {
                        status.failed(e.to_string(), newest_seq(&config.log));
                        break;
                    }
                }
                if !matches!(wake.try_recv(), Err(mpsc::TryRecvError::Empty)) {
                    return;
                }
            }
        } else {
            status.publish();
        }
        if let (Some(days), Some(store)) = (config.retention_days, store.as_ref()) {
            if Instant::now() >= next_retention {
                let outcome = match apply_retention(
                    store,
                    i64::from(days),
                    OffsetDateTime::now_utc(),
                    &config.replica,
                ) {
                    Ok(done) => {
                        next_retention = Instant::now() + RETENTION_EVERY;
                        if !done.dropped.is_empty() {
                            tracing::info!(cut_before = %done.cut_before, dropped = ?done.dropped, logs = done.logs.len(), "audit retention dropped old day partitions of the shipped logs");
                        }
                        format!(
                            "ok: {} partition(s) before {} dropped, {} log(s) cut",
                            done.dropped.len(),
                            done.cut_before,
                            done.logs.len()
                        )
                    }
                    Err(e) => {
                        next_retention = Instant::now() + RETENTION_RETRY;
                        tracing::warn!(error = %e, "audit retention of the shipped logs failed; retried in a minute");
                        format!("failed: {e}")
                    }
                };
                status.retained(outcome);
            }
        }
        match wake.recv_timeout(config.interval) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}
