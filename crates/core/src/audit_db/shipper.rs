//! The shipper thread of a server whose store is PostgreSQL
//! ([`ShipThread`]): every interval it ships its log's new records
//! ([`Shipper`] rounds until none is left), on a connection of its own,
//! and keeps what a readiness probe and the metrics show ([`ShipStatus`]:
//! head, lag, the last error). A database that is down leaves the records
//! in the log file, and the next round after it is back catches up.
//!
//! Knows nothing of HTTP; never writes the log.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::Serialize;

use partnergate_audit::chain::newest_seq;

use super::ship::Shipper;
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
}

/// What the shipper thread reports.
#[derive(Debug, Default)]
pub struct ShipStatus {
    shipped: AtomicU64,
    head_seq: AtomicU64,
    lag_records: AtomicU64,
    failing: AtomicBool,
    error: Mutex<Option<String>>,
}

/// A copy of [`ShipStatus`] for a report.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ShipSnapshot {
    /// Records this process shipped.
    pub shipped: u64,
    /// The seq the database holds the log up to (as last read).
    pub head_seq: u64,
    /// Records of the log not in the database yet (as last read).
    pub lag_records: u64,
    /// Whether the last round failed.
    pub failing: bool,
    /// The last round's error, while failing.
    pub error: Option<String>,
}

impl ShipStatus {
    /// A copy of the status.
    pub fn snapshot(&self) -> ShipSnapshot {
        ShipSnapshot {
            shipped: self.shipped.load(Ordering::Relaxed),
            head_seq: self.head_seq.load(Ordering::Relaxed),
            lag_records: self.lag_records.load(Ordering::Relaxed),
            failing: self.failing.load(Ordering::Relaxed),
            error: self.error.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        }
    }

    /// A failed round: the lag is what the log holds beyond the last head
    /// seen (it grows while the database is unreachable).
    fn failed(&self, e: String, newest: Option<u64>) {
        metrics::counter!("partnergate_audit_ship_errors_total").increment(1);
        if let Some(n) = newest {
            let lag = n.saturating_sub(self.head_seq.load(Ordering::Relaxed));
            self.lag_records.store(lag, Ordering::Relaxed);
            metrics::gauge!("partnergate_audit_ship_lag_records").set(lag as f64);
        }
        if !self.failing.swap(true, Ordering::Relaxed) {
            tracing::warn!(error = %e, "shipping the decision log to PostgreSQL failed; the log file keeps the records and shipping resumes when it can");
        }
        *self.error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
    }

    fn progressed(&self, shipped: u64, head: u64, lag: u64) {
        self.shipped.fetch_add(shipped, Ordering::Relaxed);
        metrics::counter!("partnergate_audit_shipped_records_total").increment(shipped);
        self.head_seq.store(head, Ordering::Relaxed);
        self.lag_records.store(lag, Ordering::Relaxed);
        metrics::gauge!("partnergate_audit_ship_lag_records").set(lag as f64);
        if self.failing.swap(false, Ordering::Relaxed) {
            tracing::info!(head, lag, "shipping the decision log to PostgreSQL resumed");
        }
        *self.error.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
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
    loop {
        if store.is_none() {
            match PgStore::open(&config.url, &config.replica) {
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
                        status.progressed(r.shipped, r.head_seq, r.lag_records);
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
        }
        match wake.recv_timeout(config.interval) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}
