//! The bound on wrong request codes: a fixed window per key (an account,
//! or a person and an account) counting failures; past the limit the key
//! is refused until its window passes. In memory, per process: a guesser
//! gets at most `limit` tries per window per replica, against a code space
//! of 2^60 (see `ops::request_code`). The table holds at most
//! [`MAX_KEYS`] keys; when full and nothing in it has expired, new keys
//! are refused (fail closed: a flood of names cannot buy more guesses).
//!
//! Owns [`Attempts`]; it never knows codes, the store or HTTP.

use std::collections::HashMap;
use std::sync::Mutex;

/// One hour, the window request codes are counted in.
pub const HOUR_MS: i64 = 3_600_000;

/// Most keys held at once.
pub const MAX_KEYS: usize = 10_000;

/// Failures per key within one window.
#[derive(Debug)]
pub struct Attempts {
    window_ms: i64,
    table: Mutex<HashMap<String, (i64, u32)>>,
}

impl Attempts {
    /// Windows of `window_ms`.
    pub fn new(window_ms: i64) -> Self {
        Attempts {
            window_ms,
            table: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `key` may try again at `now` (fewer than `limit` failures in
    /// its window); `Err` carries the milliseconds until it may.
    pub fn check(&self, key: &str, limit: u32, now: i64) -> Result<(), i64> {
        let table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        match table.get(key) {
            Some((start, n)) if now < start + self.window_ms && *n >= limit => {
                Err(start + self.window_ms - now)
            }
            None if table.len() >= MAX_KEYS => Err(self.window_ms),
            _ => Ok(()),
        }
    }

    /// Count one failure of `key` at `now`.
    pub fn fail(&self, key: &str, now: i64) {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if table.len() >= MAX_KEYS && !table.contains_key(key) {
            let window = self.window_ms;
            table.retain(|_, (start, _)| now < *start + window);
            if table.len() >= MAX_KEYS {
                return;
            }
        }
        let entry = table.entry(key.to_string()).or_insert((now, 0));
        if now >= entry.0 + self.window_ms {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_past_its_limit_waits_for_its_window_and_others_do_not() {
        let a = Attempts::new(1_000);
        for _ in 0..3 {
            assert!(a.check("acme", 3, 0).is_ok());
            a.fail("acme", 0);
        }
        assert_eq!(a.check("acme", 3, 400), Err(600));
        assert!(a.check("other", 3, 400).is_ok());
        assert!(a.check("acme", 3, 1_000).is_ok(), "a new window");
        a.fail("acme", 1_000);
        assert!(a.check("acme", 3, 1_001).is_ok(), "counted from zero again");
    }

    #[test]
    fn a_full_table_refuses_new_keys_until_windows_pass() {
        let a = Attempts::new(1_000);
        for i in 0..MAX_KEYS {
            a.fail(&format!("k{i}"), 0);
        }
        assert!(a.check("new", 3, 10).is_err(), "fail closed when full");
        assert!(a.check("k1", 3, 10).is_ok(), "known keys still counted");
        a.fail("new", 2_000);
        assert!(a.check("new", 3, 2_001).is_ok(), "old windows made room");
    }
}
