//! What the writer does when writing fails (a full disk, a failed fsync):
//! the records are counted as lost and the chain rolled back, the log is
//! marked failing and retried with backoff, queue drops are taken into the
//! gap, and the chained `gap` record stating them is written when writing
//! resumes.
//!
//! Knows nothing of the handle or of how a batch is taken off the queue.

use std::io;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use super::queue::Msg;
use super::thread::{Failing, Gap, Pending, Writer};
use super::ticket::Durable;
use super::ts::format_ts;
use crate::record::{gap_body, GapInfo};

/// The first retry after a failed write, doubled after each failed retry
/// up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(50);

const MAX_BACKOFF: Duration = Duration::from_secs(1);

impl Writer {
    /// Count the pending records as lost (for the next gap record), fail
    /// their waiters, and roll the chain back to before them.
    pub(super) fn lose(&mut self, pending: &mut Pending) {
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
        Durable::complete_all(&mut pending.tickets, &Err(why));
        // Slices first written inline by the lost records are not in the file.
        self.slices_in_file.clear();
        self.seq = pending.mark.0;
        self.prev_hash = std::mem::take(&mut pending.mark.1);
        pending.buf.clear();
        pending.n = 0;
        pending.first_ts = None;
        pending.last_ts = None;
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
    pub(super) fn enter_failing(&mut self, e: &io::Error) {
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
    pub(super) fn try_resume(&mut self, force: bool) {
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
                let (bytes, hash) = self.seal_next(body);
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
                Durable::complete_all(&mut self.unsynced_tickets, &Ok(()));
            }
            Err(e) => self.write_failed(before, &e),
        }
    }

    /// Wait for the next message while idle; while failing (or with a gap
    /// to state), wake at the retry time to try again. None: disconnected.
    pub(super) fn next_idle(&mut self, rx: &Receiver<Msg>) -> Option<Msg> {
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
}
