//! Durable persistence of Cedar entities behind a backend trait.
//!
//! The store knows nothing about policies or HTTP: it saves and returns
//! entities as Cedar entity JSON keyed by uid, each with the uids it points
//! at ([`references`], the `refs` column), which a start reads instead of
//! parsing every entity. The in-memory serving copy is
//! [`crate::directory::Directory`]; this module is only what survives a restart.
//! The default backend is embedded SQLite ([`sqlite::SqliteStore`]).

mod pg_compact;
mod pg_feed;
mod pg_pool;
pub mod postgres;
pub mod sqlite;

use std::path::PathBuf;

/// One persisted entity: its uid in Cedar syntax (`User::"alice"`) and its
/// Cedar entity JSON (`{"uid": .., "attrs": .., "parents": ..}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityRecord {
    /// The uid in Cedar syntax, the record's key.
    pub uid: String,
    /// The uid's entity type name (`User`, `Ns::Account`), an indexed column of its own.
    pub entity_type: String,
    /// The Cedar entity JSON, as text.
    pub json: String,
}

/// A migration that a crate above core brings for tables of its own (core
/// knows none of them): a name unique among every crate's migrations and
/// its DDL for each backend. A store opened with extra migrations
/// ([`sqlite::SqliteStore::open_with`], [`postgres::PgStore::open_with`])
/// runs them after its own, in the order given, each once, in the same
/// locked migration and recorded by name (`named_migrations`). Write them
/// so they may find their tables already there (`IF NOT EXISTS`): a
/// database created before a table moved out of core holds it already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migration {
    /// The migration's name, recorded once it has run (e.g. `orchestrator.1.registry`).
    pub name: &'static str,
    /// The statements on SQLite.
    pub sqlite: &'static str,
    /// The statements on PostgreSQL.
    pub postgres: &'static str,
}

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store could not be opened, created or migrated at start.
    #[error("cannot open the store at {path}: {message}")]
    Open {
        /// The database file, or the PostgreSQL URL with its password redacted.
        path: PathBuf,
        /// The database's error.
        message: String,
    },
    /// A statement failed, or the store was asked what it cannot do (the database's message).
    #[error("store: {0}")]
    Backend(String),
    /// The store cannot be reached right now (connection lost or refused); a later call may succeed.
    #[error("store is unavailable: {0}")]
    Unavailable(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Backend(e.to_string())
    }
}

/// One stored entity as a start reads it: its record's columns and its
/// references (the `refs` column, [`encode_refs`]), `None` when the row
/// predates that column and they must be derived from the JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedRow {
    /// The uid in Cedar syntax.
    pub uid: String,
    /// The uid's entity type name.
    pub entity_type: String,
    /// The Cedar entity JSON, as text.
    pub json: String,
    /// The stored references ([`encode_refs`]), if the row has them.
    pub refs: Option<String>,
}

/// The uids an entity's Cedar JSON points at, as (type, id) pairs, each
/// once, in order of appearance: its parents (`{"type", "id"}` or
/// `{"__entity": ..}`), then every `{"__entity": {"type", "id"}}` inside its
/// attributes. This is what a slice walks and what the referrers index is
/// built from; the stores keep it in the `refs` column so that a start does
/// not parse every entity. An error when `json` is not JSON.
pub fn references(json: &str) -> Result<Vec<(String, String)>, serde_json::Error> {
    let value: serde_json::Value = serde_json::from_str(json)?;
    Ok(references_in(&value))
}

/// [`references`] of an already parsed entity JSON.
pub fn references_in(value: &serde_json::Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Some(parents) = value.get("parents").and_then(|p| p.as_array()) {
        for p in parents {
            let p = p.get("__entity").unwrap_or(p);
            push_pair(p, &mut out);
        }
    }
    if let Some(attrs) = value.get("attrs") {
        collect_entity_refs(attrs, &mut out);
    }
    out
}

/// Add `{"type": T, "id": I}` to `out` as (T, I) unless already there.
fn push_pair(v: &serde_json::Value, out: &mut Vec<(String, String)>) {
    let (Some(t), Some(i)) = (
        v.get("type").and_then(|t| t.as_str()),
        v.get("id").and_then(|i| i.as_str()),
    ) else {
        return;
    };
    if !out.iter().any(|(a, b)| a == t && b == i) {
        out.push((t.to_string(), i.to_string()));
    }
}

fn collect_entity_refs(v: &serde_json::Value, out: &mut Vec<(String, String)>) {
    match v {
        serde_json::Value::Object(map) => {
            if let Some(e) = map.get("__entity") {
                push_pair(e, out);
                return;
            }
            for v in map.values() {
                collect_entity_refs(v, out);
            }
        }
        serde_json::Value::Array(items) => {
            for v in items {
                collect_entity_refs(v, out);
            }
        }
        _ => {}
    }
}

/// The `refs` column of an entity's JSON: its [`references`] as a JSON
/// array of `[type, id]` pairs; `None` when the JSON does not parse (the
/// loader then derives them, and reports the row).
pub fn encode_refs(json: &str) -> Option<String> {
    let refs = references(json).ok()?;
    serde_json::to_string(&refs).ok()
}

/// The pairs of a `refs` column ([`encode_refs`]); `None` if malformed.
pub fn decode_refs(column: &str) -> Option<Vec<(String, String)>> {
    serde_json::from_str(column).ok()
}

/// A committed change from a shared store's feed, in commit order: the
/// entity's new JSON, or `None` when it was deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The change's position in the feed (increasing in commit order).
    pub seq: i64,
    /// The entity's uid in Cedar syntax.
    pub uid: String,
    /// Its Cedar entity JSON after the change; `None`: deleted.
    pub json: Option<String>,
}

/// Reads the rows of some uids as committed now (not as of a snapshot):
/// each uid given, with its entity JSON or `None` when it has no row. A
/// shared store's feed hands one to whoever applies its batches.
pub type CurrentRows<'a> =
    dyn FnMut(&[String]) -> Result<Vec<(String, Option<String>)>, StoreError> + 'a;

/// A full load: it streams every stored entity row, from one snapshot, to
/// the function given (a change feed that lost changes reloads this way).
pub type FullLoad<'a> = dyn FnMut(&mut dyn FnMut(LoadedRow)) -> Result<(), StoreError> + 'a;

/// How long an `Idempotency-Key`'s answer is remembered (24 h): a retry
/// with the key within that time gets the first answer, without re-applying.
pub const IDEMPOTENCY_TTL_SECS: i64 = 24 * 60 * 60;

/// The answer of a write made with an `Idempotency-Key`, stored in the
/// write's own transaction: the request's fingerprint (method, route and
/// body hashed) and the HTTP status and JSON body that were answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remembered {
    /// The first request's fingerprint (its method, route and body, hashed).
    pub fingerprint: String,
    /// The HTTP status answered.
    pub status: u16,
    /// The JSON body answered.
    pub body: String,
}

/// A write's change record, kept in the write's own transaction (table
/// `change_outbox`) until the decision log holds it: a start writes the
/// kept records its log lacks (`crate::changes`), then they are forgotten.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptChange {
    /// The change record's `change_id` (a UUIDv7).
    pub change_id: String,
    /// The id of the log the record belongs to (`PATH.id` beside it).
    pub log_id: String,
    /// The record's body ([`crate::audit::recovered::body`]).
    pub body: String,
    /// When the write kept it: milliseconds since the epoch, this process's clock.
    pub at_ms: i64,
}

/// Conditions of one write transaction, checked once it has begun (write
/// lock held): an `Idempotency-Key` whose answer is remembered, and a
/// deadline after which nothing is written; and the change records the
/// transaction keeps with the write.
#[derive(Debug, Clone, Copy, Default)]
pub struct WriteGuard<'a> {
    /// Past this instant, when the transaction begins, nothing is written ([`Guarded::TimedOut`]).
    pub deadline: Option<std::time::Instant>,
    /// The key and the answer to remember with the write.
    pub idempotency: Option<(&'a str, &'a Remembered)>,
    /// The write's change records, kept in the same transaction.
    pub changes: &'a [KeptChange],
}

/// What a guarded write did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Guarded {
    /// Written and committed (with the key's answer, if any).
    Applied,
    /// The key was already remembered: nothing written; its first answer.
    Replayed(Remembered),
    /// The deadline had passed when the transaction began: nothing written.
    TimedOut,
}

impl WriteGuard<'_> {
    /// Inside a transaction that has begun: the outcome that stops the write
    /// (`recalled` is the key's remembered answer, if any), else `None`.
    pub fn stop(&self, recalled: Option<Remembered>) -> Option<Guarded> {
        if let Some(r) = recalled {
            return Some(Guarded::Replayed(r));
        }
        self.deadline
            .filter(|d| std::time::Instant::now() >= *d)
            .map(|_| Guarded::TimedOut)
    }
}

/// Seconds since the epoch (for idempotency key ages).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
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
    /// Every stored entity with its stored references, handed to `each` one
    /// at a time (no list of every row is built), from one consistent
    /// snapshot; returns the change-feed position it reflects (0 for a
    /// store without a feed).
    fn load_each(&self, each: &mut dyn FnMut(LoadedRow)) -> Result<i64, StoreError> {
        let (records, seq) = self.load_all_with_seq()?;
        for r in records {
            each(LoadedRow {
                uid: r.uid,
                entity_type: r.entity_type,
                json: r.json,
                refs: None,
            });
        }
        Ok(seq)
    }
    /// Changes committed after `seq`, oldest first (none for a store that
    /// is not shared). On PostgreSQL, compaction deletes old changes: a
    /// follower must use the change feed, which knows when it fell behind.
    fn changes_since(&self, _seq: i64, _limit: i64) -> Result<Vec<Change>, StoreError> {
        Ok(Vec::new())
    }
    /// The remembered answer of an `Idempotency-Key` (not expired), if any.
    fn recall(&self, _key: &str) -> Result<Option<Remembered>, StoreError> {
        Ok(None)
    }
    /// The change records kept for the log `log_id` ([`KeptChange`]), oldest first.
    fn kept_changes(&self, _log_id: &str) -> Result<Vec<KeptChange>, StoreError> {
        Ok(Vec::new())
    }
    /// Forget kept change records (the log holds them), by `change_id`.
    fn forget_changes(&self, _change_ids: &[String]) -> Result<(), StoreError> {
        Ok(())
    }
    /// [`EntityBackend::upsert`] under a [`WriteGuard`]: in one transaction,
    /// stop if the key is remembered or the deadline passed, else write the
    /// records, remember the key's answer and keep the change records. A
    /// backend without idempotency support refuses a key rather than ignore
    /// it, and one that cannot keep change records refuses them.
    fn upsert_guarded(
        &self,
        records: &[EntityRecord],
        guard: &WriteGuard<'_>,
    ) -> Result<Guarded, StoreError> {
        if guard.idempotency.is_some() {
            return Err(StoreError::Backend(format!(
                "{} does not support Idempotency-Key",
                self.describe()
            )));
        }
        if !guard.changes.is_empty() {
            return Err(StoreError::Backend(format!(
                "{} cannot keep change records",
                self.describe()
            )));
        }
        if let Some(stop) = guard.stop(None) {
            return Ok(stop);
        }
        self.upsert(records)?;
        Ok(Guarded::Applied)
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
            None | Some("" | "sqlite") => Ok(StoreSpec::Sqlite),
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Ok(StoreSpec::Postgres(url.to_string()))
            }
            Some(other) => Err(StoreError::Backend(format!(
                "--store `{other}`: expected `sqlite` or a postgres:// URL"
            ))),
        }
    }
}
