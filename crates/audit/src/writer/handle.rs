//! The handle ([`AuditLog`]): a cheap cloneable `Send + Sync` handle whose
//! `log` only enqueues (no disk I/O on the caller's path), `log_durable`
//! hands back a [`Durable`] ticket, `flush` waits for what was logged, and
//! `shutdown` (or the last handle dropped) stops the writer thread after it
//! has written everything queued.
//!
//! Knows nothing of encoding, files or the chain: the writer thread does.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use time::OffsetDateTime;

use super::config::{AuditConfig, OnFull};
use super::open::OpenInfo;
use super::queue::{ByteBudget, Msg};
use super::status::{AuditState, AuditStatus, Stats};
use super::thread::Writer;
use super::ticket::Durable;
use crate::error::AuditError;
use crate::record::Event;

struct Inner {
    tx: SyncSender<Msg>,
    on_full: OnFull,
    budget: Arc<ByteBudget>,
    stats: Arc<Stats>,
    closed: AtomicBool,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// The writer thread, to wake it from its linger for a flush or a stop.
    writer: std::thread::Thread,
}

impl Inner {
    /// Send `msg` (charged `bytes`) if both bounds have room: waiting for it
    /// under [`OnFull::Block`], else refusing. False: not queued.
    fn enqueue(&self, bytes: u64, msg: Msg) -> bool {
        match self.on_full {
            OnFull::Block => {
                if !self.budget.take_blocking(bytes, &self.closed) {
                    return false;
                }
                if self.tx.send(msg).is_ok() {
                    true
                } else {
                    self.budget.release(bytes);
                    false
                }
            }
            OnFull::Drop => {
                if !self.budget.try_take(bytes) {
                    return false;
                }
                match self.tx.try_send(msg) {
                    Ok(()) => true,
                    Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                        self.budget.release(bytes);
                        false
                    }
                }
            }
        }
    }

    fn shutdown(&self) {
        // The first caller asks the writer to stop; every caller then joins
        // it if nobody has yet.
        if !self.closed.swap(true, Ordering::SeqCst) {
            // Loggers blocked for room give up (their events are dropped).
            {
                let _guard = self.budget.lock.lock();
                self.budget.room.notify_all();
            }
            let _ = self.tx.send(Msg::Shutdown);
            self.writer.unpark();
        }
        let handle = self.thread.lock().ok().and_then(|mut h| h.take());
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The handle to the decision log. Clone it freely (`Send + Sync`); the
/// writer thread stops, after writing everything queued, on
/// [`AuditLog::shutdown`] or when the last handle is dropped.
#[derive(Clone)]
pub struct AuditLog {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("written", &self.written())
            .field("dropped", &self.dropped())
            .finish()
    }
}

impl AuditLog {
    /// Open (or create) the log and start its writer thread.
    pub fn open(config: AuditConfig) -> Result<(AuditLog, OpenInfo), AuditError> {
        let stats = Arc::new(Stats::default());
        let budget = Arc::new(ByteBudget::new(config.queue_bytes));
        let (mut writer, info) = Writer::open(&config, stats.clone(), budget.clone())?;
        let (tx, rx) = mpsc::sync_channel(config.queue_capacity.max(1));
        let max_batch = config.max_batch.max(1);
        let linger = config.linger;
        let thread = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer.run(rx, max_batch, linger))
            .map_err(AuditError::Spawn)?;
        let log = AuditLog {
            inner: Arc::new(Inner {
                tx,
                on_full: config.on_full,
                budget,
                stats,
                closed: AtomicBool::new(false),
                writer: thread.thread().clone(),
                thread: Mutex::new(Some(thread)),
            }),
        };
        Ok((log, info))
    }

    /// Enqueue an event; the timestamp is taken now. Never touches the disk.
    /// Returns false when the event was dropped (queue full under
    /// [`OnFull::Drop`], or the log is shut down); drops are counted.
    pub fn log(&self, event: impl Into<Event>) -> bool {
        let inner = &self.inner;
        if inner.closed.load(Ordering::Relaxed) {
            inner.stats.drop_one();
            return false;
        }
        let event = event.into();
        let bytes = event.held_bytes();
        let sent = inner.enqueue(bytes, Msg::Event(OffsetDateTime::now_utc(), event, bytes));
        if !sent {
            inner.stats.drop_one();
        }
        sent
    }

    /// Enqueue an event and return its durable acknowledgement: the writer
    /// completes it after the record's batch is written and fsynced (group
    /// commit: one fsync releases every waiter of the batch), or fails it at
    /// once when the record cannot be written (the log is failing, the queue
    /// is full under [`OnFull::Drop`], or the log is shut down). Never
    /// touches the disk itself; wakes the writer from its linger.
    pub fn log_durable(&self, event: impl Into<Event>) -> Durable {
        let inner = &self.inner;
        let ticket = Durable::new();
        if inner.closed.load(Ordering::Relaxed) {
            inner.stats.drop_one();
            ticket.complete(Err("the decision log is shut down".into()));
            return ticket;
        }
        let event = event.into();
        let bytes = event.held_bytes();
        let msg = Msg::Durable(Box::new((
            OffsetDateTime::now_utc(),
            event,
            ticket.clone(),
            bytes,
        )));
        let sent = inner.enqueue(bytes, msg);
        if sent {
            inner.writer.unpark();
        } else {
            inner.stats.drop_one();
            ticket.complete(Err("the decision log's queue is full".into()));
        }
        ticket
    }

    /// The log's state and counters.
    pub fn status(&self) -> AuditStatus {
        let s = &self.inner.stats;
        let failing = s.failing.load(Ordering::Relaxed);
        let health = s.health.lock().ok().and_then(|h| h.clone());
        let (since, error) = match (failing, health) {
            (true, Some((since, error))) => (Some(since), Some(error)),
            _ => (None, None),
        };
        AuditStatus {
            state: if failing {
                AuditState::Failing
            } else {
                AuditState::Ok
            },
            since,
            error,
            written: s.written.load(Ordering::Relaxed),
            lost: s.lost.load(Ordering::Relaxed),
            dropped: s.dropped.load(Ordering::Relaxed),
            unrecorded: s.unrecorded.load(Ordering::Relaxed),
            gaps: s.gaps.load(Ordering::Relaxed),
            write_errors: s.write_errors.load(Ordering::Relaxed),
            queued_bytes: self.inner.budget.used.load(Ordering::Relaxed),
            queue_bytes_limit: self.inner.budget.limit,
            retentions: s.retentions.load(Ordering::Relaxed),
            files_deleted: s.files_deleted.load(Ordering::Relaxed),
        }
    }

    /// Wait until everything logged before this call is written (and
    /// fsynced unless the sync mode is `never`). False if the log is closed.
    pub fn flush(&self) -> bool {
        if self.inner.closed.load(Ordering::Relaxed) {
            return false;
        }
        let (ack_tx, ack_rx) = mpsc::sync_channel(1);
        if self.inner.tx.send(Msg::Flush(ack_tx)).is_err() {
            return false;
        }
        self.inner.writer.unpark();
        ack_rx.recv().is_ok()
    }

    /// Write everything queued, fsync, and stop the writer thread. Later
    /// `log` calls are dropped (and counted). Idempotent.
    pub fn shutdown(&self) {
        self.inner.shutdown();
    }

    /// Records written so far (by this handle's writer).
    pub fn written(&self) -> u64 {
        self.inner.stats.written.load(Ordering::Relaxed)
    }

    /// Events refused by the queue: full under [`OnFull::Drop`], or logged
    /// after shutdown.
    pub fn dropped(&self) -> u64 {
        self.inner.stats.dropped.load(Ordering::Relaxed)
    }

    /// Events accepted but lost to a write error (stated by a gap record
    /// once writing resumes).
    pub fn lost(&self) -> u64 {
        self.inner.stats.lost.load(Ordering::Relaxed)
    }

    /// Failed writes and fsyncs (the records lost are counted in `lost`).
    pub fn write_errors(&self) -> u64 {
        self.inner.stats.write_errors.load(Ordering::Relaxed)
    }
}
