//! The console's chain checks (`audit verify` over the whole log, a costly
//! scan): at most one at a time, each stopped when its request is dropped
//! or the server stops. Knows no route and no page.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// The console's chain checks: at most one runs at a time, and each stops
/// when its request is dropped (timed out, client gone) or the server stops.
#[derive(Debug, Default)]
pub struct VerifyGate {
    running: AtomicBool,
    /// Set once the server stops: the scan in flight ends, no new one starts.
    stopping: AtomicBool,
    /// The stop flag of the scan in flight.
    current: Mutex<Option<Arc<AtomicBool>>>,
}

impl VerifyGate {
    /// Whether the server is stopping (no new scan starts).
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Stop the scan in flight and refuse new ones (the server is stopping).
    pub fn stop_all(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        if let Ok(c) = self.current.lock() {
            if let Some(flag) = c.as_ref() {
                flag.store(true, Ordering::SeqCst);
            }
        }
    }

    /// The right to run the one scan, or why not.
    pub fn begin(self: &Arc<Self>) -> Result<VerifyPermit, &'static str> {
        if self.stopping.load(Ordering::SeqCst) {
            return Err("the server is stopping");
        }
        if self.running.swap(true, Ordering::SeqCst) {
            return Err("a chain check is already running; one runs at a time");
        }
        let stop = Arc::new(AtomicBool::new(false));
        if let Ok(mut c) = self.current.lock() {
            *c = Some(stop.clone());
        }
        // A stop that raced with this start.
        if self.stopping.load(Ordering::SeqCst) {
            stop.store(true, Ordering::SeqCst);
        }
        metrics::gauge!("partnergate_console_verify_running").set(1.0);
        Ok(VerifyPermit {
            gate: self.clone(),
            stop,
        })
    }
}

/// The running scan's hold on the gate, released when the scan ends (not
/// when its request does).
pub struct VerifyPermit {
    gate: Arc<VerifyGate>,
    /// The scan's stop flag: set when its request is dropped or the server stops.
    pub stop: Arc<AtomicBool>,
}

impl Drop for VerifyPermit {
    fn drop(&mut self) {
        if let Ok(mut c) = self.gate.current.lock() {
            *c = None;
        }
        self.gate.running.store(false, Ordering::SeqCst);
        metrics::gauge!("partnergate_console_verify_running").set(0.0);
    }
}
