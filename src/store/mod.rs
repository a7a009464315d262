//! Durable persistence of Cedar entities behind a backend trait.
//!
//! The store knows nothing about policies or HTTP: it saves and returns
//! entities as Cedar entity JSON keyed by uid. The in-memory serving copy is
//! [`crate::directory::Directory`]; this module is only what survives a restart.
//! The default backend is embedded SQLite ([`sqlite::SqliteStore`]).

pub mod sqlite;

use std::path::PathBuf;

/// One persisted entity: its uid in Cedar syntax (`User::"alice"`) and its
/// Cedar entity JSON (`{"uid": .., "attrs": .., "parents": ..}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityRecord {
    pub uid: String,
    pub entity_type: String,
    pub json: String,
}

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the store at {path}: {message}")]
    Open { path: PathBuf, message: String },
    #[error("store: {0}")]
    Backend(String),
    #[error("store is unavailable: {0}")]
    Unavailable(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Backend(e.to_string())
    }
}

/// A durable home for entities. Implementations are `Send + Sync`; each
/// method is one transaction.
pub trait EntityBackend: Send + Sync {
    /// Every stored entity, for loading the in-memory directory at start.
    fn load_all(&self) -> Result<Vec<EntityRecord>, StoreError>;
    /// Insert or replace the given entities, all or nothing.
    fn upsert(&self, records: &[EntityRecord]) -> Result<(), StoreError>;
    /// Delete entities by uid, all or nothing; returns how many existed.
    fn delete(&self, uids: &[String]) -> Result<usize, StoreError>;
    /// Is the backend reachable right now?
    fn ping(&self) -> Result<(), StoreError>;
    /// A short human description (`sqlite:/path/to/store.db`).
    fn describe(&self) -> String;
}
