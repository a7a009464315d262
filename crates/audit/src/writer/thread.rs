//! The writer thread ([`Writer`]): takes batches off the queue, redacts,
//! chains (seq, prev_hash, hash) and encodes each event, writes the batch,
//! fsyncs per [`SyncMode`] (group commit with `batch`) and releases the
//! durable tickets, rotates by size, and carries a decision's entity slice
//! inline once per file. What it does when writes fail is in `failing`,
//! how it opens in `open`, the retention rule in `retention`.
//!
//! Knows nothing of the handle: it only receives the queue's messages.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use time::OffsetDateTime;

use super::config::{AuditConfig, SyncMode, SYNC_INTERVAL};
use super::queue::{ByteBudget, Msg};
use super::status::Stats;
use super::ticket::Durable;
use super::ts::format_ts_into;
use crate::chain::{rotated_numbers, rotated_path};
use crate::record::{
    encode_event, seal, EncodedSlice, Event, Link, RecordEncoder, SliceField, GENESIS_HASH,
};
use crate::redact::Redaction;

/// The writer writes its pending records out once they reach this many
/// bytes, whatever the batch size, so that a batch of large records is not
/// held whole in memory.
const PENDING_BYTES: usize = 4 * 1024 * 1024;

/// Where the writer writes: the active file (its size, and the lock held
/// on it) or standard output.
pub(super) enum Out {
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
pub(super) struct Pending {
    pub(super) buf: Vec<u8>,
    pub(super) n: u64,
    pub(super) mark: (u64, String),
    /// The events' time range, and the callers waiting for them.
    pub(super) first_ts: Option<OffsetDateTime>,
    pub(super) last_ts: Option<OffsetDateTime>,
    pub(super) tickets: Vec<Durable>,
}

/// Records lost or dropped that no gap record states yet.
pub(super) struct Gap {
    pub(super) write_failed: u64,
    pub(super) queue_dropped: u64,
    pub(super) refused: u64,
    pub(super) from: OffsetDateTime,
    pub(super) until: OffsetDateTime,
    pub(super) error: Option<String>,
}

impl Gap {
    pub(super) fn add(
        gap: &mut Option<Gap>,
        from: OffsetDateTime,
        until: OffsetDateTime,
    ) -> &mut Gap {
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
pub(super) struct Failing {
    pub(super) next_try: Instant,
    pub(super) backoff: Duration,
}

/// The writer thread's state: the output, the end of the chain, the
/// rules, the counters, what no gap record states yet, reused buffers.
pub(super) struct Writer {
    pub(super) out: Out,
    pub(super) sync: SyncMode,
    pub(super) max_bytes: Option<u64>,
    pub(super) seq: u64,
    pub(super) prev_hash: String,
    pub(super) replica: Option<String>,
    pub(super) redaction: Redaction,
    pub(super) stats: Arc<Stats>,
    /// The queue's byte bound, given back as events are encoded.
    pub(super) budget: Arc<ByteBudget>,
    /// The retention rule for rotated files.
    pub(super) max_files: Option<u32>,
    pub(super) max_total_bytes: Option<u64>,
    /// Identifies `redaction` to the entity slices' encoding cache.
    pub(super) redaction_key: u64,
    /// Written but not yet fsynced (`batch` only), and when the last fsync was.
    pub(super) unsynced: bool,
    pub(super) last_sync: std::time::Instant,
    /// Reused buffers for encoding one record.
    pub(super) enc: RecordEncoder,
    pub(super) ts_buf: Vec<u8>,
    /// `entities_hash` of the slices written inline in the active file
    /// (including pending records): later decisions only name them.
    pub(super) slices_in_file: HashSet<String>,
    /// Written, waiting for the next fsync (`batch`).
    pub(super) unsynced_tickets: Vec<Durable>,
    /// What no gap record states yet, and whether writes are failing.
    pub(super) gap: Option<Gap>,
    pub(super) failing: Option<Failing>,
    /// Queue drops already taken into a gap.
    pub(super) seen_dropped: u64,
}

/// Past this many distinct slices in one file the set is emptied (the next
/// use of each slice writes it inline again).
const MAX_SLICES_PER_FILE: usize = 100_000;

/// Keys for non-empty redactions (0 is "no redaction").
static NEXT_REDACTION_KEY: AtomicU64 = AtomicU64::new(1);

impl Writer {
    /// A writer to standard output at the chain's start (`open` points it
    /// at the file and the chain's end).
    pub(super) fn new(config: &AuditConfig, stats: Arc<Stats>, budget: Arc<ByteBudget>) -> Writer {
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

    /// The writer thread's loop: take a batch, write it, sync and release
    /// its waiters, linger; after a stop, write what raced with it.
    pub(super) fn run(&mut self, rx: Receiver<Msg>, max_batch: usize, linger: Duration) {
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
                    Durable::complete_all(&mut self.unsynced_tickets, &Ok(()));
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
                    Durable::complete_all(&mut pending.tickets, &Ok(()));
                }
            }
            Err(e) => {
                self.write_failed(before, &e);
                self.lose(pending);
            }
        }
        pending.buf.clear();
        pending.n = 0;
    }

    /// Seal `body` (one of the log's own records) as the next record of
    /// the chain: its line, newline included, and its hash. The chain
    /// moves on only once the line is written.
    pub(super) fn seal_next(&self, body: Map<String, Value>) -> (Vec<u8>, String) {
        let (line, hash) = seal(body, self.seq + 1, &self.prev_hash);
        let mut bytes = line.into_bytes();
        bytes.push(b'\n');
        (bytes, hash)
    }

    /// A write (or its fsync) failed: count it, cut the file back to
    /// `before` (the size before the write) and become failing.
    pub(super) fn write_failed(&mut self, before: u64, e: &io::Error) {
        self.stats.write_errors.fetch_add(1, Ordering::Relaxed);
        self.truncate(before);
        self.enter_failing(e);
    }

    pub(super) fn truncate(&mut self, len: u64) {
        if let Out::File { file, size, .. } = &mut self.out {
            let _ = file.set_len(len);
            *size = len;
        }
    }

    pub(super) fn describe(&self) -> String {
        match &self.out {
            Out::File { path, .. } => path.display().to_string(),
            Out::Stdout(_) => "-".into(),
        }
    }

    pub(super) fn size(&self) -> u64 {
        match &self.out {
            Out::File { size, .. } => *size,
            Out::Stdout(_) => 0,
        }
    }

    pub(super) fn write_bytes(&mut self, bytes: &[u8]) -> io::Result<()> {
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
            Durable::complete_all(&mut self.unsynced_tickets, &Ok(()));
            return;
        }
        match self.sync_now() {
            Ok(()) => {
                Durable::complete_all(&mut self.unsynced_tickets, &Ok(()));
            }
            Err(e) => {
                self.stats.write_errors.fetch_add(1, Ordering::Relaxed);
                self.enter_failing(&e);
                let why = format!("the decision log cannot fsync: {e}");
                Durable::complete_all(&mut self.unsynced_tickets, &Err(why));
            }
        }
    }

    pub(super) fn sync_now(&mut self) -> io::Result<()> {
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
pub(super) fn sync_dir(path: &Path) {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
}

/// Append-open options that create the file 0600 (it holds emails).
pub(super) fn private_append() -> OpenOptions {
    let mut opts = OpenOptions::new();
    opts.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    opts
}
