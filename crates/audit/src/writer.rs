//! The writer: [`AuditLog`], a cheap cloneable handle whose [`AuditLog::log`]
//! only enqueues (no disk I/O on the caller's path) into a queue bounded by
//! count and by bytes, drained by ONE writer thread, which redacts, chains
//! (seq, prev_hash, hash), batches, writes, fsyncs per [`SyncMode`], rotates
//! by size and applies the retention rule to the rotated files.
//!
//! Retention: when rotation leaves more rotated files than the rule keeps,
//! the writer first appends a chained `kind: "retention"` record naming the
//! files it will delete (and their seq ranges) and the first record kept
//! (its seq and prev_hash), fsyncs it, and only then deletes them; `verify`
//! accepts a chain that starts at a record some retention record names.
//!
//! Opening a file log takes an exclusive lock (`PATH.lock`), finds the last
//! record of the chain (in `PATH`, else in the newest rotated file) and
//! continues its `seq` and hash. A torn last line (a crash mid-write) is cut
//! away and a `kind: "repair"` record describing the cut is appended first,
//! chained to the last intact record.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::chain::{self, parse_link, rotated_numbers, rotated_path, Location};
use super::record::{
    encode_event, gap_body, repair_body, retention_body, seal, ChainStart, EncodedSlice, Event,
    GapInfo, Link, RecordEncoder, RepairInfo, RetainedFile, RetentionInfo, SliceField,
    GENESIS_HASH,
};
use super::redact::Redaction;
use crate::error::AuditError;

/// When the writer calls fsync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncMode {
    /// After every record (slowest, nothing acknowledged-and-written is lost).
    Always,
    /// Group commit: while the writer is busy, at most every
    /// [`SYNC_INTERVAL`] (20 ms); at once when it goes idle, on a flush, a
    /// rotation and a stop.
    #[default]
    Batch,
    /// Never (the OS writes back; a power loss may lose the tail).
    Never,
}

/// What [`AuditLog::log`] does when the queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnFull {
    /// Wait for room (backpressure): nothing is lost.
    #[default]
    Block,
    /// Drop the event and count it ([`AuditLog::dropped`]).
    Drop,
}

/// Where records go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sink {
    /// A file, rotated to `PATH.N` by size, locked and repaired at open.
    File(PathBuf),
    /// Standard output (no rotation, no repair; the chain starts at seq 1).
    Stdout,
}

/// The default log path.
pub const DEFAULT_PATH: &str = "data/decisions.jsonl";

/// The queue's default byte bound (64 MiB).
pub const DEFAULT_QUEUE_BYTES: u64 = 64 * 1024 * 1024;

/// Rotated files kept by default.
pub const DEFAULT_MAX_FILES: u32 = 10;

/// The writer writes its pending records out once they reach this many
/// bytes, whatever the batch size, so that a batch of large records is not
/// held whole in memory.
const PENDING_BYTES: usize = 4 * 1024 * 1024;

/// How to open the log.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// Where the records go.
    pub sink: Sink,
    /// When the writer fsyncs.
    pub sync: SyncMode,
    /// What logging does when the queue is full.
    pub on_full: OnFull,
    /// Queue capacity in events.
    pub queue_capacity: usize,
    /// Queue capacity in bytes ([`Event::held_bytes`]): past it, logging
    /// blocks or drops exactly as when the count is reached. One event is
    /// always accepted into an empty queue, however large.
    pub queue_bytes: u64,
    /// Most records written (and fsynced, in batch mode) at once.
    pub max_batch: usize,
    /// Rotate when the active file would exceed this many bytes (None: never).
    pub max_file_bytes: Option<u64>,
    /// Keep at most this many rotated files (None: all); older ones are
    /// deleted after a `retention` record states it.
    pub max_files: Option<u32>,
    /// Keep rotated files totalling at most this many bytes (None: no byte
    /// rule); the oldest go first, after a `retention` record.
    pub max_total_bytes: Option<u64>,
    /// How long the writer lets a partial batch grow before writing it: the
    /// most a record waits in the queue when the writer keeps up. A flush or
    /// a stop does not wait for it.
    pub linger: Duration,
    /// The context keys and entity attributes masked before encoding.
    pub redaction: Redaction,
    /// Written as `replica` on every record, when set.
    pub replica: Option<String>,
}

impl AuditConfig {
    /// A file log at `path` with the defaults: batch fsync, blocking when
    /// full, 8192 queued events or [`DEFAULT_QUEUE_BYTES`], batches of 1024,
    /// rotation at 256 MiB keeping [`DEFAULT_MAX_FILES`] rotated files, the
    /// default linger, no redaction and no replica.
    pub fn file(path: impl Into<PathBuf>) -> Self {
        AuditConfig {
            sink: Sink::File(path.into()),
            sync: SyncMode::Batch,
            on_full: OnFull::Block,
            queue_capacity: 8192,
            queue_bytes: DEFAULT_QUEUE_BYTES,
            max_batch: 1024,
            max_file_bytes: Some(256 * 1024 * 1024),
            max_files: Some(DEFAULT_MAX_FILES),
            max_total_bytes: None,
            linger: DEFAULT_LINGER,
            redaction: Redaction::default(),
            replica: None,
        }
    }

    /// A log on standard output, with [`AuditConfig::file`]'s other defaults.
    pub fn stdout() -> Self {
        AuditConfig {
            sink: Sink::Stdout,
            ..Self::file(DEFAULT_PATH)
        }
    }
}

/// What opening found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenInfo {
    /// The seq the next logged event gets.
    pub next_seq: u64,
    /// The hash the next record chains to.
    pub prev_hash: String,
    /// Set when a torn last line was cut away (and a repair record written).
    pub repaired: Option<RepairInfo>,
}

/// Counters and health of the writer (for metrics and status).
#[derive(Debug)]
struct Stats {
    written: AtomicU64,
    /// Refused by the queue (full under `drop`, or the log closed).
    dropped: AtomicU64,
    /// Accepted but never written (a write or fsync of theirs failed, or the
    /// log was failing when they came).
    lost: AtomicU64,
    write_errors: AtomicU64,
    /// Gap records written.
    gaps: AtomicU64,
    /// Lost or dropped records that no gap record states yet.
    unrecorded: AtomicU64,
    /// Retention records written (and the rotated files they deleted).
    retentions: AtomicU64,
    files_deleted: AtomicU64,
    /// Time range (unix µs) of queue drops not yet taken into a gap.
    drop_first_us: AtomicI64,
    drop_last_us: AtomicI64,
    failing: AtomicBool,
    /// Since when and why the log is failing (set on each state change).
    health: Mutex<Option<(String, String)>>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            written: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            write_errors: AtomicU64::new(0),
            gaps: AtomicU64::new(0),
            unrecorded: AtomicU64::new(0),
            retentions: AtomicU64::new(0),
            files_deleted: AtomicU64::new(0),
            drop_first_us: AtomicI64::new(i64::MAX),
            drop_last_us: AtomicI64::new(i64::MIN),
            failing: AtomicBool::new(false),
            health: Mutex::new(None),
        }
    }
}

impl Stats {
    /// Count one event refused by the queue, and when.
    fn drop_one(&self) {
        let us = (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000) as i64;
        self.drop_first_us.fetch_min(us, Ordering::Relaxed);
        self.drop_last_us.fetch_max(us, Ordering::Relaxed);
        self.dropped.fetch_add(1, Ordering::Release);
    }
}

/// Whether the log is writing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditState {
    /// Records are being written.
    Ok,
    /// Writes fail (e.g. the disk is full): records are being lost, and are
    /// counted; a gap record states them when writing resumes.
    Failing,
}

/// The log's state and counters, for `/readyz`, `GET /v1/policies` and metrics.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AuditStatus {
    /// Whether writes currently succeed.
    pub state: AuditState,
    /// When the log started failing (RFC 3339), while it is.
    pub since: Option<String>,
    /// The last write error, while failing.
    pub error: Option<String>,
    /// Records written since the log was opened.
    pub written: u64,
    /// Records accepted but not written (write failures).
    pub lost: u64,
    /// Records refused by the queue (`--audit-on-full drop`, or after shutdown).
    pub dropped: u64,
    /// Lost or dropped records no gap record states yet.
    pub unrecorded: u64,
    /// Gap records written.
    pub gaps: u64,
    /// Failed writes, fsyncs and rotations since the log was opened.
    pub write_errors: u64,
    /// Bytes ([`Event::held_bytes`]) of the events waiting in the queue now.
    pub queued_bytes: u64,
    /// The queue's byte bound.
    pub queue_bytes_limit: u64,
    /// Retention records written since the log was opened.
    pub retentions: u64,
    /// Rotated files the retention rule deleted since the log was opened.
    pub files_deleted: u64,
}

/// The durable acknowledgement of one record ([`AuditLog::log_durable`]):
/// completed by the writer once the record is written and fsynced (per the
/// sync mode), or failed with the reason it could not be.
#[derive(Clone)]
pub struct Durable(Arc<DurableSlot>);

struct DurableSlot {
    result: Mutex<Option<Result<(), String>>>,
    cv: Condvar,
    notify: tokio::sync::Notify,
}

impl std::fmt::Debug for Durable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Durable").field(&self.peek()).finish()
    }
}

impl Durable {
    fn new() -> Self {
        Durable(Arc::new(DurableSlot {
            result: Mutex::new(None),
            cv: Condvar::new(),
            notify: tokio::sync::Notify::new(),
        }))
    }

    fn complete(&self, result: Result<(), String>) {
        if let Ok(mut r) = self.0.result.lock() {
            if r.is_none() {
                *r = Some(result);
            }
        }
        self.0.cv.notify_all();
        self.0.notify.notify_waiters();
    }

    /// The outcome, if known yet.
    pub fn peek(&self) -> Option<Result<(), String>> {
        self.0.result.lock().ok().and_then(|r| r.clone())
    }

    /// Wait (async) for the outcome.
    pub async fn wait(&self) -> Result<(), String> {
        loop {
            let notified = self.0.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(r) = self.peek() {
                return r;
            }
            notified.await;
        }
    }

    /// Wait (blocking the thread) at most `timeout` for the outcome.
    pub fn wait_blocking(&self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let Ok(mut r) = self.0.result.lock() else {
            return Err("the decision log's acknowledgement is unreadable".into());
        };
        loop {
            if let Some(r) = r.as_ref() {
                return r.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "the record was not made durable within {} ms",
                    timeout.as_millis()
                ));
            }
            r = match self.0.cv.wait_timeout(r, left) {
                Ok((g, _)) => g,
                Err(_) => return Err("the decision log's acknowledgement is unreadable".into()),
            };
        }
    }
}

// Events travel inline in the queue's slots: no allocation per event on the
// request path (an Event is a few hundred bytes; a decision's body is boxed).
// Each event carries the bytes it was charged to the queue's byte bound.
#[allow(clippy::large_enum_variant)]
enum Msg {
    Event(OffsetDateTime, Event, u64),
    /// An event whose caller waits for it to be durable (boxed: the queue's
    /// slots keep the size they have without `--audit-required`).
    Durable(Box<(OffsetDateTime, Event, Durable, u64)>),
    Flush(SyncSender<()>),
    Shutdown,
}

/// The queue's byte bound: the bytes of the queued events, taken before an
/// event is sent and given back by the writer once it has encoded it.
#[derive(Debug)]
struct ByteBudget {
    used: AtomicU64,
    limit: u64,
    /// Loggers blocked for room (`block`), woken by the writer.
    waiters: std::sync::atomic::AtomicUsize,
    lock: Mutex<()>,
    room: Condvar,
}

impl ByteBudget {
    fn new(limit: u64) -> Self {
        ByteBudget {
            used: AtomicU64::new(0),
            limit: limit.max(1),
            waiters: std::sync::atomic::AtomicUsize::new(0),
            lock: Mutex::new(()),
            room: Condvar::new(),
        }
    }

    /// Take `n` bytes if they fit (or the queue holds none).
    fn try_take(&self, n: u64) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used == 0 || used.saturating_add(n) <= self.limit).then(|| used.saturating_add(n))
            })
            .is_ok()
    }

    /// Take `n` bytes, waiting for room; false if the log closed meanwhile.
    fn take_blocking(&self, n: u64, closed: &AtomicBool) -> bool {
        if self.try_take(n) {
            return true;
        }
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let mut guard = self.lock.lock().ok();
        let taken = loop {
            if self.try_take(n) {
                break true;
            }
            if closed.load(Ordering::SeqCst) {
                break false;
            }
            guard = if let Some(g) = guard {
                self.room
                    .wait_timeout(g, Duration::from_millis(50))
                    .ok()
                    .map(|(g, _)| g)
            } else {
                std::thread::sleep(Duration::from_millis(1));
                None
            };
        };
        drop(guard);
        self.waiters.fetch_sub(1, Ordering::SeqCst);
        taken
    }

    /// Give `n` bytes back and wake the loggers waiting for room.
    fn release(&self, n: u64) {
        if n == 0 {
            return;
        }
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                Some(used.saturating_sub(n))
            });
        if self.waiters.load(Ordering::SeqCst) > 0 {
            let _guard = self.lock.lock();
            self.room.notify_all();
        }
    }
}

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

/// How long the writer lets a partial batch grow, by default.
pub const DEFAULT_LINGER: Duration = Duration::from_millis(20);

/// With `batch`, the longest a written record waits for fsync while the
/// writer is busy (group commit); an idle writer, a flush, a rotation and a
/// stop fsync at once.
pub const SYNC_INTERVAL: Duration = Duration::from_millis(20);

const TS_FORMAT: &[time::format_description::FormatItem<'static>] = time::macros::format_description!(
    "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
);

/// Format a timestamp as the log does: RFC 3339, UTC, microseconds.
pub fn format_ts(t: OffsetDateTime) -> String {
    let mut out = Vec::with_capacity(32);
    format_ts_into(t, &mut out);
    String::from_utf8(out).unwrap_or_default()
}

/// [`format_ts`], appended to `out` (digits written directly: this runs
/// for every record).
fn format_ts_into(t: OffsetDateTime, out: &mut Vec<u8>) {
    let t = t.to_offset(time::UtcOffset::UTC);
    if !(0..=9999).contains(&t.year()) {
        // Not a date the clock gives; the general formatter handles it.
        let _ = t.format_into(out, TS_FORMAT);
        return;
    }
    let parts = [
        (t.year() as u32, 4, b'-'),
        (u32::from(u8::from(t.month())), 2, b'-'),
        (u32::from(t.day()), 2, b'T'),
        (u32::from(t.hour()), 2, b':'),
        (u32::from(t.minute()), 2, b':'),
        (u32::from(t.second()), 2, b'.'),
        (t.microsecond(), 6, b'Z'),
    ];
    for (n, width, then) in parts {
        for i in (0..width).rev() {
            out.push(b'0' + (n / 10u32.pow(i) % 10) as u8);
        }
        out.push(then);
    }
}

enum Out {
    File {
        path: PathBuf,
        file: File,
        size: u64,
        _lock: File,
    },
    Stdout(io::Stdout),
}

/// Encoded records not yet written, and the chain state before them.
#[derive(Default)]
struct Pending {
    buf: Vec<u8>,
    n: u64,
    mark: (u64, String),
    /// The events' time range, and the callers waiting for them.
    first_ts: Option<OffsetDateTime>,
    last_ts: Option<OffsetDateTime>,
    tickets: Vec<Durable>,
}

/// Records lost or dropped that no gap record states yet.
struct Gap {
    write_failed: u64,
    queue_dropped: u64,
    refused: u64,
    from: OffsetDateTime,
    until: OffsetDateTime,
    error: Option<String>,
}

impl Gap {
    fn add(gap: &mut Option<Gap>, from: OffsetDateTime, until: OffsetDateTime) -> &mut Gap {
        let g = gap.get_or_insert(Gap {
            write_failed: 0,
            queue_dropped: 0,
            refused: 0,
            from,
            until,
            error: None,
        });
        g.from = g.from.min(from);
        g.until = g.until.max(until);
        g
    }
}

/// The writer cannot write: when it tries again.
struct Failing {
    next_try: Instant,
    backoff: Duration,
}

/// The first retry after a failed write, doubled after each failed retry
/// up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

struct Writer {
    out: Out,
    sync: SyncMode,
    max_bytes: Option<u64>,
    seq: u64,
    prev_hash: String,
    replica: Option<String>,
    redaction: Redaction,
    stats: Arc<Stats>,
    /// The queue's byte bound, given back as events are encoded.
    budget: Arc<ByteBudget>,
    /// The retention rule for rotated files.
    max_files: Option<u32>,
    max_total_bytes: Option<u64>,
    /// Identifies `redaction` to the entity slices' encoding cache.
    redaction_key: u64,
    /// Written but not yet fsynced (`batch` only), and when the last fsync was.
    unsynced: bool,
    last_sync: std::time::Instant,
    /// Reused buffers for encoding one record.
    enc: RecordEncoder,
    ts_buf: Vec<u8>,
    /// `entities_hash` of the slices written inline in the active file
    /// (including pending records): later decisions only name them.
    slices_in_file: HashSet<String>,
    /// Written, waiting for the next fsync (`batch`).
    unsynced_tickets: Vec<Durable>,
    /// What no gap record states yet, and whether writes are failing.
    gap: Option<Gap>,
    failing: Option<Failing>,
    /// Queue drops already taken into a gap.
    seen_dropped: u64,
}

/// Past this many distinct slices in one file the set is emptied (the next
/// use of each slice writes it inline again).
const MAX_SLICES_PER_FILE: usize = 100_000;

/// Keys for non-empty redactions (0 is "no redaction").
static NEXT_REDACTION_KEY: AtomicU64 = AtomicU64::new(1);

impl Writer {
    /// Open the writer of `config`'s sink: for a file, take its lock, cut a
    /// torn last line away (stating it in a repair record), and continue the
    /// chain from the last record of the file or of its newest rotation.
    fn open(
        config: &AuditConfig,
        stats: Arc<Stats>,
        budget: Arc<ByteBudget>,
    ) -> Result<(Writer, OpenInfo), AuditError> {
        let mut writer = Writer::new(config, stats, budget);
        let path = match &config.sink {
            Sink::Stdout => {
                return Ok((
                    writer,
                    OpenInfo {
                        next_seq: 1,
                        prev_hash: GENESIS_HASH.into(),
                        repaired: None,
                    },
                ))
            }
            Sink::File(p) => p.clone(),
        };
        let lock = lock_log(&path)?;
        let (repaired, size, mut last_line) = cut_torn_tail(&path)?;
        if last_line.is_none() {
            last_line = last_line_of_newest_rotation(&path)?;
        }
        if let Some((file, line)) = last_line {
            let link = intact_last_link(file, &line)?;
            writer.seq = link.seq;
            writer.prev_hash = link.hash;
        }
        let file = private_append()
            .open(&path)
            .map_err(|e| AuditError::io(&path, e))?;
        writer.out = Out::File {
            path: path.clone(),
            file,
            size,
            _lock: lock,
        };
        if let Some(info) = &repaired {
            writer
                .write_repair(info)
                .map_err(|e| AuditError::io(&path, e))?;
        }
        // A rule tightened since the last run, or a stop between a
        // retention record and its deletions: apply the rule now.
        writer.apply_retention();
        let info = OpenInfo {
            next_seq: writer.seq + 1,
            prev_hash: writer.prev_hash.clone(),
            repaired,
        };
        Ok((writer, info))
    }

    /// A writer to standard output at the chain's start (`open` points it
    /// at the file and the chain's end).
    fn new(config: &AuditConfig, stats: Arc<Stats>, budget: Arc<ByteBudget>) -> Writer {
        Writer {
            out: Out::Stdout(io::stdout()),
            sync: config.sync,
            max_bytes: config.max_file_bytes,
            seq: 0,
            prev_hash: GENESIS_HASH.to_string(),
            replica: config.replica.clone(),
            redaction: config.redaction.clone(),
            stats,
            budget,
            max_files: config.max_files,
            max_total_bytes: config.max_total_bytes,
            redaction_key: if config.redaction.is_empty() {
                0
            } else {
                NEXT_REDACTION_KEY.fetch_add(1, Ordering::Relaxed)
            },
            unsynced: false,
            last_sync: std::time::Instant::now(),
            enc: RecordEncoder::default(),
            ts_buf: Vec::with_capacity(32),
            slices_in_file: HashSet::new(),
            unsynced_tickets: Vec::new(),
            gap: None,
            failing: None,
            seen_dropped: 0,
        }
    }

    /// Append the chained record stating a repair, and make it durable.
    fn write_repair(&mut self, info: &RepairInfo) -> io::Result<()> {
        let ts = format_ts(OffsetDateTime::now_utc());
        let b = repair_body(info, &ts, self.replica.as_deref());
        let (line, hash) = seal(b, self.seq + 1, &self.prev_hash);
        let mut bytes = line.into_bytes();
        bytes.push(b'\n');
        self.write_bytes(&bytes).and_then(|()| self.sync_now())?;
        self.seq += 1;
        self.prev_hash = hash;
        Ok(())
    }

    /// Delete the oldest rotated files past the retention rule: first a
    /// chained `retention` record stating them and where the kept chain
    /// starts, fsynced, then the deletions. Nothing is deleted when the
    /// record cannot be written (or the kept start cannot be read); the
    /// next rotation tries again.
    fn apply_retention(&mut self) {
        if self.max_files.is_none() && self.max_total_bytes.is_none() {
            return;
        }
        let Out::File { path, .. } = &self.out else {
            return;
        };
        let path = path.clone();
        if self.failing.is_some() {
            return;
        }
        let plan = match retention_plan(&path, self.max_files, self.max_total_bytes) {
            Ok(Some(p)) => p,
            Ok(None) => return,
            Err(e) => {
                tracing::error!(error = %e, path = %path.display(),
                    "audit log: the retention rule could not read the rotated files; nothing deleted");
                return;
            }
        };
        let kept_from = match plan.kept_first {
            Some(start) => start,
            // Nothing older is kept: the chain now starts at the retention
            // record itself.
            None => ChainStart {
                seq: self.seq + 1,
                prev_hash: self.prev_hash.clone(),
            },
        };
        let info = RetentionInfo {
            deleted: plan.deleted.iter().map(|(_, f)| f.clone()).collect(),
            kept_from,
            rule: plan.rule,
        };
        let ts = format_ts(OffsetDateTime::now_utc());
        let body = retention_body(&info, &ts, self.replica.as_deref());
        let (line, hash) = seal(body, self.seq + 1, &self.prev_hash);
        let mut bytes = line.into_bytes();
        bytes.push(b'\n');
        let before = self.size();
        if let Err(e) = self.write_bytes(&bytes).and_then(|()| self.sync_now()) {
            self.stats.write_errors.fetch_add(1, Ordering::Relaxed);
            self.truncate(before);
            tracing::error!(error = %e, path = %path.display(),
                "audit log: the retention record could not be written; nothing deleted");
            return;
        }
        self.seq += 1;
        self.prev_hash = hash;
        self.stats.retentions.fetch_add(1, Ordering::Relaxed);
        for (file, _) in &plan.deleted {
            match std::fs::remove_file(file) {
                Ok(()) => {
                    self.stats.files_deleted.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => tracing::error!(error = %e, file = %file.display(),
                    "audit log: a rotated file the retention record names could not be deleted"),
            }
        }
        sync_dir(&path);
        tracing::info!(files = plan.deleted.len(), kept_from = info.kept_from.seq,
            rule = %info.rule, "audit log: retention deleted the oldest rotated files");
    }

    /// The writer thread's loop: take a batch, write it, sync and release
    /// its waiters, linger; after a stop, write what raced with it.
    fn run(&mut self, rx: Receiver<Msg>, max_batch: usize, linger: Duration) {
        let mut pending = Pending::default();
        let mut acks: Vec<SyncSender<()>> = Vec::new();
        let mut stop = false;
        while !stop {
            self.try_resume(false);
            let Some(batch) = self.next_batch(&rx, max_batch) else {
                break;
            };
            let was_full = batch.len() >= max_batch;
            let commit_each = self.sync == SyncMode::Always;
            for msg in batch {
                stop |= self.take(msg, &mut pending, &mut acks, commit_each);
            }
            self.end_batch(&mut pending, &mut acks, stop);
            // Linger: let a partial batch grow for a moment rather than being
            // woken once per record (each wake-up is a syscall on the
            // decision path). A flush or a stop wakes it early. Not with
            // `always`, whose callers wait on fsync.
            if !was_full && !stop && self.sync != SyncMode::Always && !linger.is_zero() {
                std::thread::park_timeout(linger);
            }
        }
        self.finish(&rx, pending, acks);
    }

    /// The next batch: the queued messages, at most `max_batch`. When none
    /// is queued, first make what was written durable, then wait (`None`:
    /// the queue is closed).
    fn next_batch(&mut self, rx: &Receiver<Msg>, max_batch: usize) -> Option<Vec<Msg>> {
        let first = if let Ok(m) = rx.try_recv() {
            m
        } else {
            // Idle: make what was written durable before waiting.
            self.sync_deferred();
            self.next_idle(rx)?
        };
        let mut batch = vec![first];
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        Some(batch)
    }

    /// Take one message: an event is appended to `pending` (and committed at
    /// once with `commit_each`), a flush waiter is kept in `acks` for the
    /// batch's end. Returns true for a shutdown.
    fn take(
        &mut self,
        msg: Msg,
        pending: &mut Pending,
        acks: &mut Vec<SyncSender<()>>,
        commit_each: bool,
    ) -> bool {
        match msg {
            Msg::Event(ts, event, bytes) => {
                self.append(pending, ts, event, None);
                self.budget.release(bytes);
            }
            Msg::Durable(d) => {
                let (ts, event, ticket, bytes) = *d;
                self.append(pending, ts, event, Some(ticket));
                self.budget.release(bytes);
            }
            Msg::Flush(ack) => {
                acks.push(ack);
                return false;
            }
            Msg::Shutdown => return true,
        }
        if commit_each || pending.buf.len() >= PENDING_BYTES {
            self.commit(pending);
        }
        false
    }

    /// End a batch: write what is pending, fsync when a flush, a stop, a
    /// durable waiter or the sync interval asks for it, and release the
    /// flush waiters.
    fn end_batch(&mut self, pending: &mut Pending, acks: &mut Vec<SyncSender<()>>, stop: bool) {
        self.commit(pending);
        // Waiters for durability are released by this batch's fsync.
        if !acks.is_empty()
            || stop
            || !self.unsynced_tickets.is_empty()
            || self.last_sync.elapsed() >= SYNC_INTERVAL
        {
            self.sync_deferred();
        }
        for ack in acks.drain(..) {
            let _ = ack.send(());
        }
    }

    /// After the loop: write the events that raced with shutdown, make
    /// everything durable, state the drops that raced with the stop if the
    /// log can, and release the last flush waiters.
    fn finish(&mut self, rx: &Receiver<Msg>, mut pending: Pending, mut acks: Vec<SyncSender<()>>) {
        // Events that raced with shutdown: write them too.
        self.try_resume(true);
        while let Ok(msg) = rx.try_recv() {
            self.take(msg, &mut pending, &mut acks, false);
        }
        self.commit(&mut pending);
        self.unsynced = true;
        self.sync_deferred();
        // Drops that raced with the stop: state them if the log can.
        self.try_resume(true);
        if let Some(g) = &self.gap {
            tracing::error!(
                records = g.write_failed + g.queue_dropped,
                "audit log: stopped with records lost that no gap record states"
            );
        }
        for ack in acks.drain(..) {
            let _ = ack.send(());
        }
    }

    /// Redact, chain and encode one event into the pending buffer, rotating
    /// first if the record would not fit in the active file.
    fn append(
        &mut self,
        pending: &mut Pending,
        ts: OffsetDateTime,
        mut event: Event,
        ticket: Option<Durable>,
    ) {
        let at = ts;
        event.redact(&self.redaction);
        let mut ts_buf = std::mem::take(&mut self.ts_buf);
        ts_buf.clear();
        format_ts_into(ts, &mut ts_buf);
        let ts = std::str::from_utf8(&ts_buf).unwrap_or_default();
        let slice = match &event {
            Event::Decision(d) => Some(d.entities.encoded(&self.redaction, self.redaction_key)),
            Event::Change(_) | Event::Reload(_) | Event::Search(_) => None,
        };
        self.encode(&event, ts, slice.as_deref());
        let len = self.enc.line().len() as u64 + 1;
        if self.needs_rotation(pending.buf.len() as u64, len) {
            self.commit(pending);
            match self.rotate() {
                // The old file was fsynced; the new one is empty.
                Ok(()) => {
                    self.unsynced = false;
                    for t in self.unsynced_tickets.drain(..) {
                        t.complete(Ok(()));
                    }
                    self.apply_retention();
                }
                Err(e) => {
                    tracing::error!(error = %e, "audit log: rotation failed");
                    self.stats.write_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            // A new file carries every slice it uses; and a failed commit
            // rolled the chain back: encode again either way.
            self.slices_in_file.clear();
            self.encode(&event, ts, slice.as_deref());
        }
        self.ts_buf = ts_buf;
        if let Some(s) = &slice {
            if !self.slices_in_file.contains(&s.hash) {
                if self.slices_in_file.len() >= MAX_SLICES_PER_FILE {
                    self.slices_in_file.clear();
                }
                self.slices_in_file.insert(s.hash.clone());
            }
        }
        if pending.n == 0 {
            pending.mark = (self.seq, self.prev_hash.clone());
            pending.first_ts = Some(at);
        }
        pending.last_ts = Some(at);
        pending.tickets.extend(ticket);
        pending.buf.extend_from_slice(self.enc.line());
        pending.buf.push(b'\n');
        pending.n += 1;
        self.seq += 1;
        self.prev_hash.clear();
        self.prev_hash.push_str(self.enc.hash());
    }

    /// Encode `event` as the next record into `self.enc`, its slice inline
    /// unless the active file already has it.
    fn encode(&mut self, event: &Event, ts: &str, slice: Option<&EncodedSlice>) {
        let field = slice.map(|s| {
            if self.slices_in_file.contains(&s.hash) {
                SliceField::Reference(s)
            } else {
                SliceField::Inline(s)
            }
        });
        let link = Link {
            seq: self.seq + 1,
            prev_hash: &self.prev_hash,
        };
        encode_event(
            &mut self.enc,
            event,
            ts,
            self.replica.as_deref(),
            link,
            field,
        );
    }

    /// Write the pending records out (and fsync with `always`). On failure,
    /// cut the file back and roll the chain back to before them, so that the
    /// chain stays unbroken; the records are counted as lost, kept for the
    /// next gap record, and their waiters fail. While the log is failing
    /// nothing is tried until the next retry ([`Writer::try_resume`]).
    fn commit(&mut self, pending: &mut Pending) {
        if pending.n == 0 {
            return;
        }
        if self.failing.is_some() {
            self.lose(pending);
            return;
        }
        let before = self.size();
        let result = self.write_bytes(&pending.buf).and_then(|()| {
            if self.sync == SyncMode::Always {
                self.sync_now()
            } else {
                self.unsynced = self.sync == SyncMode::Batch;
                Ok(())
            }
        });
        match result {
            Ok(()) => {
                self.stats.written.fetch_add(pending.n, Ordering::Relaxed);
                if self.sync == SyncMode::Batch {
                    self.unsynced_tickets.append(&mut pending.tickets);
                } else {
                    for t in pending.tickets.drain(..) {
                        t.complete(Ok(()));
                    }
                }
            }
            Err(e) => {
                self.stats.write_errors.fetch_add(1, Ordering::Relaxed);
                self.truncate(before);
                self.enter_failing(&e);
                self.lose(pending);
            }
        }
        pending.buf.clear();
        pending.n = 0;
    }

    /// Count the pending records as lost (for the next gap record), fail
    /// their waiters, and roll the chain back to before them.
    fn lose(&mut self, pending: &mut Pending) {
        let now = OffsetDateTime::now_utc();
        let (from, until) = (
            pending.first_ts.unwrap_or(now),
            pending.last_ts.unwrap_or(now),
        );
        let error = self.failing_error();
        let g = Gap::add(&mut self.gap, from, until);
        g.write_failed += pending.n;
        g.refused += pending.tickets.len() as u64;
        if g.error.is_none() {
            g.error.clone_from(&error);
        }
        self.stats.lost.fetch_add(pending.n, Ordering::Relaxed);
        self.stats
            .unrecorded
            .fetch_add(pending.n, Ordering::Relaxed);
        let why = format!(
            "the decision log cannot write: {}",
            error.as_deref().unwrap_or("write failed")
        );
        for t in pending.tickets.drain(..) {
            t.complete(Err(why.clone()));
        }
        // Slices first written inline by the lost records are not in the file.
        self.slices_in_file.clear();
        self.seq = pending.mark.0;
        self.prev_hash = std::mem::take(&mut pending.mark.1);
        pending.buf.clear();
        pending.n = 0;
        pending.first_ts = None;
        pending.last_ts = None;
    }

    fn truncate(&mut self, len: u64) {
        if let Out::File { file, size, .. } = &mut self.out {
            let _ = file.set_len(len);
            *size = len;
        }
    }

    fn failing_error(&self) -> Option<String> {
        self.stats
            .health
            .lock()
            .ok()
            .and_then(|h| h.as_ref().map(|(_, e)| e.clone()))
    }

    /// A write or fsync failed: become (or stay) failing, and retry later.
    /// Logged once per state change, not per failure.
    fn enter_failing(&mut self, e: &io::Error) {
        if let Some(f) = &mut self.failing {
            f.backoff = (f.backoff * 2).min(MAX_BACKOFF);
            f.next_try = Instant::now() + f.backoff;
            tracing::debug!(error = %e, "audit log: still failing");
        } else {
            tracing::error!(error = %e, path = %self.describe(),
                "audit log: writing failed; records are being lost (counted, and stated by a gap record when writing resumes)");
            self.failing = Some(Failing {
                next_try: Instant::now() + FIRST_BACKOFF,
                backoff: FIRST_BACKOFF,
            });
            if let Ok(mut h) = self.stats.health.lock() {
                *h = Some((format_ts(OffsetDateTime::now_utc()), e.to_string()));
            }
            self.stats.failing.store(true, Ordering::Relaxed);
        }
    }

    fn describe(&self) -> String {
        match &self.out {
            Out::File { path, .. } => path.display().to_string(),
            Out::Stdout(_) => "-".into(),
        }
    }

    /// Take the queue's drops since the last look into the gap.
    fn absorb_drops(&mut self) {
        let dropped = self.stats.dropped.load(Ordering::Acquire);
        if dropped <= self.seen_dropped {
            return;
        }
        let n = dropped - self.seen_dropped;
        self.seen_dropped = dropped;
        let first = self.stats.drop_first_us.swap(i64::MAX, Ordering::Relaxed);
        let last = self.stats.drop_last_us.swap(i64::MIN, Ordering::Relaxed);
        let now = OffsetDateTime::now_utc();
        let at = |us: i64| {
            OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000).unwrap_or(now)
        };
        let (from, until) = if first <= last {
            (at(first), at(last))
        } else {
            (now, now)
        };
        Gap::add(&mut self.gap, from, until).queue_dropped += n;
        self.stats.unrecorded.fetch_add(n, Ordering::Relaxed);
    }

    /// Write the pending gap record, if any, and fsync: when not failing at
    /// once; when failing, at the retry time (or now with `force`). Success
    /// ends the failing state; failure backs off.
    fn try_resume(&mut self, force: bool) {
        self.absorb_drops();
        match &self.failing {
            Some(f) if !force && Instant::now() < f.next_try => return,
            None if self.gap.is_none() => return,
            _ => {}
        }
        let before = self.size();
        let mut sealed = None;
        let result = match &self.gap {
            Some(g) => {
                let info = GapInfo {
                    records: g.write_failed + g.queue_dropped,
                    write_failed: g.write_failed,
                    queue_dropped: g.queue_dropped,
                    refused: g.refused,
                    from: format_ts(g.from),
                    until: format_ts(g.until),
                    error: g.error.clone(),
                };
                let ts = format_ts(OffsetDateTime::now_utc());
                let body = gap_body(&info, &ts, self.replica.as_deref());
                let (line, hash) = seal(body, self.seq + 1, &self.prev_hash);
                let mut bytes = line.into_bytes();
                bytes.push(b'\n');
                sealed = Some((info, hash));
                self.write_bytes(&bytes)
            }
            None => Ok(()),
        }
        .and_then(|()| self.sync_now());
        match result {
            Ok(()) => {
                if let Some((info, hash)) = sealed {
                    self.seq += 1;
                    self.prev_hash = hash;
                    self.gap = None;
                    self.stats.gaps.fetch_add(1, Ordering::Relaxed);
                    self.stats.unrecorded.store(0, Ordering::Relaxed);
                    tracing::warn!(records = info.records, from = %info.from, until = %info.until,
                        "audit log: a gap record states records that were not logged");
                }
                if self.failing.take().is_some() {
                    self.stats.failing.store(false, Ordering::Relaxed);
                    tracing::warn!(path = %self.describe(), "audit log: writing resumed");
                }
                for t in self.unsynced_tickets.drain(..) {
                    t.complete(Ok(()));
                }
            }
            Err(e) => {
                self.stats.write_errors.fetch_add(1, Ordering::Relaxed);
                self.truncate(before);
                self.enter_failing(&e);
            }
        }
    }

    /// Wait for the next message while idle; while failing (or with a gap
    /// to state), wake at the retry time to try again. None: disconnected.
    fn next_idle(&mut self, rx: &Receiver<Msg>) -> Option<Msg> {
        loop {
            let wait = match &self.failing {
                Some(f) => f.next_try.saturating_duration_since(Instant::now()),
                None if self.gap.is_some() => FIRST_BACKOFF,
                None => return rx.recv().ok(),
            };
            match rx.recv_timeout(wait.max(Duration::from_millis(1))) {
                Ok(m) => return Some(m),
                Err(RecvTimeoutError::Timeout) => self.try_resume(false),
                Err(RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    fn size(&self) -> u64 {
        match &self.out {
            Out::File { size, .. } => *size,
            Out::Stdout(_) => 0,
        }
    }

    fn write_bytes(&mut self, bytes: &[u8]) -> io::Result<()> {
        match &mut self.out {
            Out::File { file, size, .. } => {
                file.write_all(bytes)?;
                *size += bytes.len() as u64;
                Ok(())
            }
            Out::Stdout(s) => {
                let mut l = s.lock();
                l.write_all(bytes)?;
                l.flush()
            }
        }
    }

    /// With `batch`: fsync what was written since the last fsync (group
    /// commit), then release the callers waiting for it. A failure is
    /// counted and makes the log failing: the records are in the file but
    /// may not be on disk, and their waiters fail.
    fn sync_deferred(&mut self) {
        if !self.unsynced {
            for t in self.unsynced_tickets.drain(..) {
                t.complete(Ok(()));
            }
            return;
        }
        match self.sync_now() {
            Ok(()) => {
                for t in self.unsynced_tickets.drain(..) {
                    t.complete(Ok(()));
                }
            }
            Err(e) => {
                self.stats.write_errors.fetch_add(1, Ordering::Relaxed);
                self.enter_failing(&e);
                let why = format!("the decision log cannot fsync: {e}");
                for t in self.unsynced_tickets.drain(..) {
                    t.complete(Err(why.clone()));
                }
            }
        }
    }

    fn sync_now(&mut self) -> io::Result<()> {
        self.unsynced = false;
        self.last_sync = std::time::Instant::now();
        match &mut self.out {
            Out::File { file, .. } => file.sync_data(),
            Out::Stdout(_) => Ok(()),
        }
    }

    /// Whether a record of `extra` bytes, after `pending` unwritten bytes,
    /// would take a non-empty active file over the size limit.
    fn needs_rotation(&self, pending: u64, extra: u64) -> bool {
        match (&self.out, self.max_bytes) {
            (Out::File { size, .. }, Some(max)) => {
                *size + pending > 0 && *size + pending + extra > max
            }
            _ => false,
        }
    }

    /// `PATH.k` -> `PATH.k+1` (highest first), `PATH` -> `PATH.1`, new `PATH`.
    fn rotate(&mut self) -> io::Result<()> {
        let Out::File {
            path, file, size, ..
        } = &mut self.out
        else {
            return Ok(());
        };
        file.sync_all()?;
        for n in rotated_numbers(path)?.into_iter().rev() {
            std::fs::rename(rotated_path(path, n), rotated_path(path, n + 1))?;
        }
        std::fs::rename(&*path, rotated_path(path, 1))?;
        *file = private_append().open(&*path)?;
        *size = 0;
        sync_dir(path);
        Ok(())
    }
}

/// Fsync the directory of `path` (renames, creations and deletions).
fn sync_dir(path: &Path) {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
}

/// What the retention rule deletes: the rotated files (path, and as the
/// record states them), oldest first, and the first record kept (None: no
/// file kept holds one; the retention record will be the first).
struct RetentionPlan {
    deleted: Vec<(PathBuf, RetainedFile)>,
    kept_first: Option<ChainStart>,
    rule: String,
}

/// The retention plan for the log at `path`, None when every rotated file
/// is kept.
fn retention_plan(
    path: &Path,
    max_files: Option<u32>,
    max_total_bytes: Option<u64>,
) -> io::Result<Option<RetentionPlan>> {
    // Ascending numbers: the newest rotated file first.
    let nums = rotated_numbers(path)?;
    let mut keep = nums.len();
    let mut rules = Vec::new();
    if let Some(m) = max_files {
        if nums.len() > m as usize {
            keep = keep.min(m as usize);
            rules.push(format!("max_files={m}"));
        }
    }
    if let Some(max) = max_total_bytes {
        let mut total = 0u64;
        for (i, n) in nums.iter().enumerate() {
            total = total.saturating_add(std::fs::metadata(rotated_path(path, *n))?.len());
            if total > max {
                if i < keep {
                    keep = i;
                }
                rules.push(format!("max_total_bytes={max}"));
                break;
            }
        }
    }
    if keep >= nums.len() {
        return Ok(None);
    }
    let kept_first = first_kept(path, &nums[..keep])?;
    let mut deleted = Vec::new();
    for &n in nums[keep..].iter().rev() {
        let file = rotated_path(path, n);
        let bytes = std::fs::metadata(&file)?.len();
        let seq_of = |line: Option<String>| {
            line.and_then(|l| {
                parse_link(
                    &l,
                    &Location {
                        file: file.clone(),
                        line: 0,
                    },
                )
                .ok()
                .map(|(_, link)| link.seq)
            })
        };
        let first_seq = seq_of(first_line(&file)?);
        let last_seq = seq_of(chain::tail(&file)?.last_line);
        deleted.push((
            file.clone(),
            RetainedFile {
                file: file
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                first_seq,
                last_seq,
                bytes,
            },
        ));
    }
    Ok(Some(RetentionPlan {
        deleted,
        kept_first,
        rule: rules.join(","),
    }))
}

/// The first record kept, named by seq and prev_hash: in the oldest of the
/// kept rotated files `kept` (ascending numbers) that holds one, else in the
/// active file; None: there is none (the retention record will be first).
fn first_kept(path: &Path, kept: &[u32]) -> io::Result<Option<ChainStart>> {
    let files = kept
        .iter()
        .rev()
        .map(|&n| rotated_path(path, n))
        .chain(std::iter::once(path.to_path_buf()));
    for file in files {
        if !file.exists() {
            continue;
        }
        if let Some(line) = first_line(&file)? {
            let loc = Location {
                file: file.clone(),
                line: 1,
            };
            let (_, link) = parse_link(&line, &loc).map_err(|e| io::Error::other(e.to_string()))?;
            return Ok(Some(ChainStart {
                seq: link.seq,
                prev_hash: link.prev_hash,
            }));
        }
    }
    Ok(None)
}

/// The first newline-terminated line of `file`, if any.
fn first_line(file: &Path) -> io::Result<Option<String>> {
    use std::io::BufRead;
    let mut r = io::BufReader::new(File::open(file)?);
    let mut buf = Vec::new();
    r.read_until(b'\n', &mut buf)?;
    if buf.pop() != Some(b'\n') {
        return Ok(None);
    }
    Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
}

/// The last line of a log file, with the file it was read from.
type LastLine = Option<(PathBuf, String)>;

/// Create the log's directory and take the exclusive lock `PATH.lock` (a
/// second writer of the same file is refused).
fn lock_log(path: &Path) -> Result<File, AuditError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| AuditError::io(dir, e))?;
    }
    let lock_path = {
        let mut s = path.as_os_str().to_os_string();
        s.push(".lock");
        PathBuf::from(s)
    };
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| AuditError::io(&lock_path, e))?;
    match lock.try_lock() {
        Ok(()) => Ok(lock),
        Err(std::fs::TryLockError::WouldBlock) => Err(AuditError::Locked(path.to_path_buf())),
        Err(std::fs::TryLockError::Error(e)) => Err(AuditError::io(&lock_path, e)),
    }
}

/// Cut a torn last line away from `path` (if it exists): what was cut, the
/// intact size and the last intact line.
fn cut_torn_tail(path: &Path) -> Result<(Option<RepairInfo>, u64, LastLine), AuditError> {
    if !path.exists() {
        return Ok((None, 0, None));
    }
    let t = chain::tail(path).map_err(|e| AuditError::io(path, e))?;
    let mut repaired = None;
    if !t.torn.is_empty() {
        let f = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| AuditError::io(path, e))?;
        f.set_len(t.intact_len)
            .and_then(|()| f.sync_all())
            .map_err(|e| AuditError::io(path, e))?;
        repaired = Some(RepairInfo {
            file: path.display().to_string(),
            offset: t.intact_len,
            cut_bytes: t.len - t.intact_len,
            cut_sha256: hex::encode(Sha256::digest(&t.torn)),
        });
    }
    let last_line = t.last_line.map(|l| (path.to_path_buf(), l));
    Ok((repaired, t.intact_len, last_line))
}

/// The last line of the newest rotated file of `path`, if any.
fn last_line_of_newest_rotation(path: &Path) -> Result<LastLine, AuditError> {
    let nums = rotated_numbers(path).map_err(|e| AuditError::io(path, e))?;
    // The smallest number is the newest rotated file.
    let Some(&n) = nums.first() else {
        return Ok(None);
    };
    let newest = rotated_path(path, n);
    let t = chain::tail(&newest).map_err(|e| AuditError::io(&newest, e))?;
    Ok(t.last_line.map(|l| (newest, l)))
}

/// The chain link of the last record the writer continues from: it must
/// parse and match its hash, else the log is corrupt.
fn intact_last_link(file: PathBuf, line: &str) -> Result<chain::Link, AuditError> {
    let loc = Location {
        file: file.clone(),
        line: 0,
    };
    let (_, link) = parse_link(line, &loc).map_err(|e| AuditError::Corrupt {
        file: file.clone(),
        message: format!(
            "the last record cannot be read ({}); run `partnergate audit verify`",
            match e {
                AuditError::Malformed { message, .. } => message,
                other => other.to_string(),
            }
        ),
    })?;
    if !link.hash_ok {
        return Err(AuditError::Corrupt {
            file,
            message: format!(
                "the last record (seq {}) does not match its hash; run `partnergate audit verify`",
                link.seq
            ),
        });
    }
    Ok(link)
}

/// The path of the log: the default when none is given.
pub fn default_path() -> &'static Path {
    Path::new(DEFAULT_PATH)
}

/// Append-open options that create the file 0600 (it holds emails).
fn private_append() -> OpenOptions {
    let mut opts = OpenOptions::new();
    opts.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    opts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn big_event(kib: usize) -> Event {
        let d = partnergate_policy::engine::Decision {
            decision: partnergate_policy::engine::Effect::Deny,
            reasons: Vec::new(),
            errors: Vec::new(),
            policy_version: "v".into(),
        };
        crate::record::DecisionEvent::new(
            "User::\"a\"",
            "Action::\"b\"",
            "User::\"c\"",
            crate::record::EntitySlice::new(serde_json::json!([])),
            d,
        )
        .with_context(Some(serde_json::json!({ "pad": "x".repeat(kib * 1024) })))
        .into()
    }

    #[test]
    fn past_the_byte_bound_drop_refuses_and_log_durable_fails_its_ticket() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = AuditConfig::file(dir.path().join("d.jsonl"));
        c.on_full = OnFull::Drop;
        c.queue_bytes = 1;
        c.linger = Duration::from_secs(5);
        let (log, _) = AuditLog::open(c).unwrap();
        // The writer lingers: the first fills the queue, the next is refused.
        let mut refused = 0;
        let mut tickets = Vec::new();
        for _ in 0..20 {
            let t = log.log_durable(big_event(64));
            if let Some(Err(e)) = t.peek() {
                assert!(e.contains("queue is full"), "{e}");
                refused += 1;
            }
            tickets.push(t);
        }
        assert!(refused > 0, "no record was refused past a 1-byte bound");
        assert_eq!(log.dropped(), refused);
        log.shutdown();
        let report = crate::chain::verify(&dir.path().join("d.jsonl")).unwrap();
        assert!(report.intact(), "{:?}", report.problem);
        assert_eq!(report.records_not_logged, refused);
    }

    #[test]
    fn a_stop_between_the_retention_record_and_the_deletions_leaves_a_chain_that_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.jsonl");
        let mut c = AuditConfig::file(&path);
        c.max_file_bytes = Some(20_000);
        c.max_files = None;
        let (log, _) = AuditLog::open(c.clone()).unwrap();
        for _ in 0..30 {
            log.log(big_event(4));
        }
        log.shutdown();
        drop(log);
        let before = chain::rotated_numbers(&path).unwrap();
        assert!(before.len() > 3, "{before:?}");
        let saved: Vec<(PathBuf, Vec<u8>)> = before
            .iter()
            .map(|&n| rotated_path(&path, n))
            .map(|p| {
                let b = std::fs::read(&p).unwrap();
                (p, b)
            })
            .collect();
        // Open with a rule keeping 2: the record is written, then the rest go.
        c.max_files = Some(2);
        let (log, _) = AuditLog::open(c.clone()).unwrap();
        log.shutdown();
        drop(log);
        assert_eq!(chain::rotated_numbers(&path).unwrap(), vec![1, 2]);
        let report = crate::chain::verify(&path).unwrap();
        assert!(report.ok(), "{:?}", report.problem);
        assert_eq!(report.retentions.len(), 1);
        assert!(report.start_stated_by.is_some());
        // The state a crash after the record's fsync and before the
        // deletions leaves: the record and every file.
        for (p, b) in &saved {
            std::fs::write(p, b).unwrap();
        }
        let report = crate::chain::verify(&path).unwrap();
        assert!(report.ok(), "{:?}", report.problem);
        assert_eq!(report.first_seq, Some(1));
        // The next open finishes the deletion with a new record.
        let (log, _) = AuditLog::open(c).unwrap();
        log.shutdown();
        drop(log);
        assert_eq!(chain::rotated_numbers(&path).unwrap(), vec![1, 2]);
        let report = crate::chain::verify(&path).unwrap();
        assert!(report.ok(), "{:?}", report.problem);
        // One file more deleted by hand: a break.
        std::fs::remove_file(rotated_path(&path, 2)).unwrap();
        let report = crate::chain::verify(&path).unwrap();
        let problem = report.problem.expect("a deleted file is a break");
        assert_eq!(problem.kind, chain::BreakKind::Missing);
    }

    #[test]
    fn timestamps_are_formatted_as_the_general_formatter_does() {
        let base = OffsetDateTime::from_unix_timestamp(1_764_400_000).unwrap();
        for offset_us in [
            0i64,
            1,
            999_999,
            86_399_000_001,
            -31_536_000_000_000,
            7_000_000_000_123_456,
        ] {
            let t = base + time::Duration::microseconds(offset_us);
            let mut ours = Vec::new();
            format_ts_into(t, &mut ours);
            let general = t.to_offset(time::UtcOffset::UTC).format(TS_FORMAT).unwrap();
            assert_eq!(String::from_utf8(ours).unwrap(), general);
        }
    }
}
