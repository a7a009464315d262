//! The queue between the handle and the writer thread: its messages
//! ([`Msg`]) and its byte bound ([`ByteBudget`]), taken by loggers before
//! they send and given back by the writer once it has encoded an event.
//!
//! Knows nothing of files, encoding or the record format beyond [`Event`].

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use time::OffsetDateTime;

use super::ticket::Durable;
use crate::record::Event;

// Events travel inline in the queue's slots: no allocation per event on the
// request path (an Event is a few hundred bytes; a decision's body is boxed).
// Each event carries the bytes it was charged to the queue's byte bound.
#[allow(clippy::large_enum_variant)]
pub(super) enum Msg {
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
pub(super) struct ByteBudget {
    pub(super) used: AtomicU64,
    pub(super) limit: u64,
    /// Loggers blocked for room (`block`), woken by the writer.
    pub(super) waiters: AtomicUsize,
    pub(super) lock: Mutex<()>,
    pub(super) room: Condvar,
}

impl ByteBudget {
    pub(super) fn new(limit: u64) -> Self {
        ByteBudget {
            used: AtomicU64::new(0),
            limit: limit.max(1),
            waiters: AtomicUsize::new(0),
            lock: Mutex::new(()),
            room: Condvar::new(),
        }
    }

    /// Take `n` bytes if they fit (or the queue holds none).
    pub(super) fn try_take(&self, n: u64) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used == 0 || used.saturating_add(n) <= self.limit).then(|| used.saturating_add(n))
            })
            .is_ok()
    }

    /// Take `n` bytes, waiting for room; false if the log closed meanwhile.
    pub(super) fn take_blocking(&self, n: u64, closed: &AtomicBool) -> bool {
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
    pub(super) fn release(&self, n: u64) {
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
