//! The sweep of ended partner access and unanswered requests: a background
//! thread that runs [`crate::ScopedWrites::end_expired`] and
//! [`crate::ScopedWrites::expire_requests`] at start and then at a fixed interval, so an
//! access is marked ended (its seat freed in the store, a change record by
//! `system`) at most one interval after its end. Seat checks never wait for
//! it: they count an ended access as free already. A restart loses nothing
//! (the first sweep runs at start over what the store holds) and repeats
//! nothing (each end re-reads the partner in its own transaction). Each
//! round also announces the access ending within a lead time
//! ([`crate::ScopedWrites::announce_ending`], once per end and lead).
//!
//! Owns [`Sweeper`]; it never knows HTTP or the command line.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::orchestrator::Orchestrator;
use crate::scope::WriteScope;

/// The running sweep; dropping it stops the thread (and waits for it).
#[derive(Debug)]
pub struct Sweeper {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Sweeper {
    /// Sweep `orchestrator` now and then every `every` (at least 10 ms),
    /// announcing the access ending at the default lead times
    /// ([`crate::DEFAULT_ENDING_SOON`]).
    pub fn spawn(orchestrator: Arc<Orchestrator>, every: Duration) -> std::io::Result<Sweeper> {
        Sweeper::spawn_with(orchestrator, every, crate::DEFAULT_ENDING_SOON.to_vec())
    }

    /// [`Sweeper::spawn`] announcing the access ending at `ending_soon`
    /// before its end (none: no announcements).
    pub fn spawn_with(
        orchestrator: Arc<Orchestrator>,
        every: Duration,
        ending_soon: Vec<Duration>,
    ) -> std::io::Result<Sweeper> {
        let (stop, stopped) = mpsc::channel::<()>();
        let every = every.max(Duration::from_millis(10));
        let thread = std::thread::Builder::new()
            .name("partner-sweep".into())
            .spawn(move || {
                // Once, at start: partners stored before scopes existed get
                // the default set (else they could administer nothing).
                match orchestrator.with(WriteScope::default()).default_missing_scopes() {
                    Ok(changed) if !changed.is_empty() => {
                        tracing::info!(partners = changed.len(), "partners stored without scopes got the default scopes");
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "giving partners stored without scopes the default scopes failed"),
                }
                sweep_until_stopped(&orchestrator, (every, &ending_soon), &stopped);
            })?;
        Ok(Sweeper {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

/// The sweep loop: now, then every `every`, until the [`Sweeper`] is dropped.
fn sweep_until_stopped(
    orchestrator: &Orchestrator,
    (every, ending_soon): (Duration, &[Duration]),
    stopped: &mpsc::Receiver<()>,
) {
    loop {
        match orchestrator
            .with(WriteScope::default())
            .announce_ending(ending_soon)
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(events = n, "partner sweep: access ending soon announced"),
            Err(e) => {
                tracing::warn!(error = %e, "announcing access ending soon failed; retrying at the next interval");
            }
        }
        match orchestrator.with(WriteScope::default()).end_expired() {
            Ok(ended) => {
                if !ended.is_empty() {
                    tracing::info!(ended = ended.len(), "partner sweep: access ended");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "partner sweep failed; retrying at the next interval");
            }
        }
        match orchestrator.with(WriteScope::default()).expire_requests() {
            Ok(expired) if !expired.is_empty() => {
                tracing::info!(
                    expired = expired.len(),
                    "partner sweep: requests expired unanswered"
                );
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "partner request sweep failed; retrying at the next interval");
            }
        }
        match stopped.recv_timeout(every) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

impl Drop for Sweeper {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
