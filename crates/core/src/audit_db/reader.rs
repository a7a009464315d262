//! A server's connection for reading the shipped logs ([`DbReader`]),
//! opened on first use, so that a database that is down at start (or
//! later) makes a read fail with [`ShipError::Store`] (an HTTP 503), never
//! the server. Reads take turns on it. Knows nothing of HTTP.

use std::sync::{Arc, Mutex};

use super::ship::ShipError;
use crate::store::postgres::PgStore;

/// The lazily opened connection.
pub struct DbReader {
    url: String,
    label: String,
    store: Mutex<Option<Arc<PgStore>>>,
}

impl std::fmt::Debug for DbReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbReader")
            .field("url", &crate::store::postgres::redact(&self.url))
            .finish()
    }
}

impl DbReader {
    /// A reader of the database at `url`; `label` names the connection.
    pub fn new(url: &str, label: &str) -> Self {
        DbReader {
            url: url.to_string(),
            label: label.to_string(),
            store: Mutex::new(None),
        }
    }

    /// The store, opened now if it was not yet (it reconnects by itself
    /// after).
    pub fn store(&self) -> Result<Arc<PgStore>, ShipError> {
        let mut guard = self.store.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = guard.as_ref() {
            return Ok(s.clone());
        }
        let s = Arc::new(PgStore::open(&self.url, &self.label)?);
        *guard = Some(s.clone());
        Ok(s)
    }
}
