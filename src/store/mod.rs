//! Durable persistence of Cedar entities behind a backend trait.
//!
//! The store knows nothing about policies or HTTP: it saves and returns
//! entities as Cedar entity JSON keyed by uid. The in-memory serving copy is
//! [`crate::directory::Directory`]; this module is only what survives a restart.
//! The default backend is embedded SQLite ([`sqlite::SqliteStore`]).

pub mod postgres;
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

/// A committed change from a shared store's feed, in commit order: the
/// entity's new JSON, or `None` when it was deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub seq: i64,
    pub uid: String,
    pub json: Option<String>,
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
    /// Every entity plus the change-feed position it reflects (0 for a store
    /// without a feed), read as one consistent snapshot.
    fn load_all_with_seq(&self) -> Result<(Vec<EntityRecord>, i64), StoreError> {
        Ok((self.load_all()?, 0))
    }
    /// Changes committed after `seq`, oldest first (none for a store that
    /// is not shared).
    fn changes_since(&self, _seq: i64, _limit: i64) -> Result<Vec<Change>, StoreError> {
        Ok(Vec::new())
    }
}

/// Where the entities live: `sqlite` (default) or a `postgres://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSpec {
    /// `store.db` in the data directory.
    Sqlite,
    /// A PostgreSQL connection URL.
    Postgres(String),
}

impl StoreSpec {
    /// `None`/`""`/`sqlite` → SQLite; `postgres://…`/`postgresql://…` → PostgreSQL.
    pub fn parse(s: Option<&str>) -> Result<Self, StoreError> {
        match s.map(str::trim) {
            None | Some("") | Some("sqlite") => Ok(StoreSpec::Sqlite),
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Ok(StoreSpec::Postgres(url.to_string()))
            }
            Some(other) => Err(StoreError::Backend(format!(
                "--store `{other}`: expected `sqlite` or a postgres:// URL"
            ))),
        }
    }
}
