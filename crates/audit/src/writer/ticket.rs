//! The durable acknowledgement of one record ([`Durable`]): a ticket the
//! writer completes once the record is written and fsynced, or fails with
//! the reason it could not be; waited on by a thread or a task.
//!
//! Knows nothing of the queue, the writer or the files.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// The durable acknowledgement of one record ([`AuditLog::log_durable`](super::AuditLog::log_durable)):
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
    pub(super) fn new() -> Self {
        Durable(Arc::new(DurableSlot {
            result: Mutex::new(None),
            cv: Condvar::new(),
            notify: tokio::sync::Notify::new(),
        }))
    }

    pub(super) fn complete(&self, result: Result<(), String>) {
        if let Ok(mut r) = self.0.result.lock() {
            if r.is_none() {
                *r = Some(result);
            }
        }
        self.0.cv.notify_all();
        self.0.notify.notify_waiters();
    }

    /// Complete every ticket of `tickets` with `result`, emptying it.
    pub(super) fn complete_all(tickets: &mut Vec<Durable>, result: &Result<(), String>) {
        for t in tickets.drain(..) {
            t.complete(result.clone());
        }
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
