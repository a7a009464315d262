//! The PostgreSQL backend, for several sidecar replicas sharing one store.
//!
//! Every write is one transaction that also appends to `entity_changes`
//! (with its transaction id); `NOTIFY partnergate_changes` follows its
//! commit, from a thread of its own. Writes
//! of different accounts run at once (see [`begin_write`] for the locks and
//! their order), so a lower sequence may commit after a higher one:
//! [`ChangeFeed`] reads, from its own connection, the changes of the
//! transactions that committed between its last snapshot and a new one
//! ([`read_changes`]; woken by `LISTEN`, and polling every [`FEED_POLL`] in
//! any case), so a replica misses nothing across restarts, dropped
//! connections or commits out of sequence order. Migrations are versioned and run
//! under a session advisory lock, so replicas may start at once. Each entity
//! row keeps its references (`refs`), and a start streams the rows.
//! A lost connection makes calls fail with [`StoreError::Unavailable`] and is
//! re-established on the next call.

use std::sync::Mutex;

use postgres::Client;

pub use super::pg_compact::{
    compact, horizon, Compacted, Compactor, COMPACT_BATCH, COMPACT_LOCK, COMPACT_SETTLE,
};
use super::pg_feed::{change, connect, unavailable, Notifier};
pub use super::pg_feed::{
    current_rows, load_rows, read_changes, ChangeFeed, Follower, FullLoad, Read, FEED_POLL,
};
use super::pg_pool::Pool;
pub use super::pg_pool::POOL_SIZE;

use super::{
    encode_refs, unix_now, Change, EntityBackend, EntityRecord, Guarded, KeptChange, LoadedRow,
    Migration, Remembered, StoreError, WriteGuard, IDEMPOTENCY_TTL_SECS,
};

/// The global write lock, across replicas: entity writes (`PUT
/// /v1/entities`, deletes) and the registry hold it exclusively
/// ([`begin_write`]); an account's write holds it shared
/// ([`begin_account_write`]), then its accounts' locks ([`lock_accounts`]).
pub const WRITE_LOCK: i64 = 0x5047_0001;
const MIGRATE_LOCK: i64 = 0x5047_0002;
/// The namespace of the per-account locks (`pg_advisory_xact_lock(ACCOUNT_LOCKS,
/// hashtext(account))`); two accounts whose names hash alike only wait
/// for each other.
pub const ACCOUNT_LOCKS: i32 = 0x5047_0003;

/// Schema migrations, applied in order and recorded in `schema_migrations`.
const MIGRATIONS: &[&str] = &[
    // 1: entities and their change feed
    "CREATE TABLE entities (
        uid TEXT PRIMARY KEY,
        entity_type TEXT NOT NULL,
        json TEXT NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
     );
     CREATE INDEX entities_by_type ON entities(entity_type);
     CREATE TABLE entity_changes (
        seq BIGSERIAL PRIMARY KEY,
        uid TEXT NOT NULL,
        json TEXT,
        replica TEXT NOT NULL,
        at TIMESTAMPTZ NOT NULL DEFAULT now()
     );",
    // 2: once the partner registry; its tables are the orchestrator's
    // migrations now (`super::Migration`), so a new database skips it and
    // an old one keeps what it made.
    "",
    // 3: answers of writes made with an Idempotency-Key
    "CREATE TABLE idempotency_keys (
        key TEXT PRIMARY KEY,
        fingerprint TEXT NOT NULL,
        status INTEGER NOT NULL,
        body TEXT NOT NULL,
        created_at BIGINT NOT NULL
     );
     CREATE INDEX idempotency_keys_by_age ON idempotency_keys(created_at);",
    // 4: each entity's references (`super::encode_refs`), so that a start
    // reads them instead of parsing every entity; rows written before are
    // filled by `backfill_refs` in the same transaction.
    "ALTER TABLE entities ADD COLUMN refs TEXT;",
    // 5: each write's change records, kept until the decision log holds
    // them (`super::KeptChange`)
    "CREATE TABLE change_outbox (
        change_id TEXT PRIMARY KEY,
        log_id TEXT NOT NULL,
        body TEXT NOT NULL,
        at_ms BIGINT NOT NULL
     );
     CREATE INDEX change_outbox_by_log ON change_outbox(log_id, at_ms);",
    // 6: the names of the migrations run for the crates above
    // (`super::Migration`)
    "CREATE TABLE named_migrations (
        name TEXT PRIMARY KEY,
        applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
     );",
    // 7: each change's transaction id, so that the feed reads the changes
    // of the transactions that committed between two snapshots, whatever
    // their sequence (writes of different accounts commit concurrently)
    "ALTER TABLE entity_changes ADD COLUMN xid xid8 NOT NULL DEFAULT pg_current_xact_id();
     CREATE INDEX entity_changes_by_xid ON entity_changes(xid);",
    // 8: the decision logs shipped by their replicas (`crate::audit_db`):
    // how far each log is copied, and its records, partitioned by day (the
    // shipper creates each day's partition before inserting into it).
    "CREATE TABLE audit_logs (
        log_id TEXT PRIMARY KEY,
        replica TEXT,
        head_seq BIGINT NOT NULL DEFAULT 0,
        head_hash TEXT,
        shipped_at TIMESTAMPTZ NOT NULL DEFAULT now()
     );
     CREATE TABLE audit_records (
        log_id TEXT NOT NULL,
        seq BIGINT NOT NULL,
        ts TIMESTAMPTZ NOT NULL,
        replica TEXT,
        kind TEXT,
        hash TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        record TEXT NOT NULL,
        PRIMARY KEY (log_id, seq, ts)
     ) PARTITION BY RANGE (ts);
     CREATE INDEX audit_records_by_ts ON audit_records(ts);",
    // 9: the retentions of the shipped logs (`crate::audit_db::retention`):
    // a chain of their own, one record per log cut, so that a chain that
    // starts after dropped day partitions is a stated start, not a
    // tampering.
    "CREATE TABLE audit_retentions (
        seq BIGINT PRIMARY KEY,
        ts TIMESTAMPTZ NOT NULL,
        log_id TEXT NOT NULL,
        hash TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        record TEXT NOT NULL
     );",
    // 10: the change feed's horizon: the highest transaction id whose
    // changes compaction may have deleted (`super::pg_compact`); a feed
    // older than it reloads from the entities
    "CREATE TABLE feed_horizon (
        id INT PRIMARY KEY CHECK (id = 1),
        horizon xid8,
        compacted_at TIMESTAMPTZ,
        bound xid8,
        bound_at TIMESTAMPTZ
     );
     INSERT INTO feed_horizon (id) VALUES (1);",
];

/// The migration (1-based) that added the `refs` column.
const REFS_MIGRATION: usize = 4;

/// A PostgreSQL entity store.
pub struct PgStore {
    url: String,
    replica: String,
    pool: Pool,
    notifier: Notifier,
    /// The snapshot the last start's load read ([`EntityBackend::load_each`]):
    /// where the change feed starts.
    loaded: Mutex<Option<String>>,
}

impl PgStore {
    /// Connect and migrate. `replica` labels this process's changes.
    pub fn open(url: &str, replica: &str) -> Result<Self, StoreError> {
        Self::open_with(url, replica, &[])
    }

    /// [`Self::open`], also running `extra` after core's migrations, under
    /// the same lock (see [`Migration`]).
    pub fn open_with(url: &str, replica: &str, extra: &[Migration]) -> Result<Self, StoreError> {
        let mut client = connect(url).map_err(|e| StoreError::Open {
            path: redact(url).into(),
            message: e.to_string(),
        })?;
        migrate(&mut client, extra)?;
        Ok(PgStore {
            url: url.to_string(),
            replica: replica.to_string(),
            pool: Pool::new(url, client),
            notifier: Notifier::start(url)?,
            loaded: Mutex::new(None),
        })
    }

    /// The snapshot (`pg_snapshot` as text) the last load read, which the
    /// change feed starts from; `None` before any load.
    pub fn loaded_snapshot(&self) -> Option<String> {
        self.loaded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn keep_loaded(&self, snapshot: String) {
        *self.loaded.lock().unwrap_or_else(|p| p.into_inner()) = Some(snapshot);
    }

    /// Run `f` on a live connection of the store's (see [`POOL_SIZE`]:
    /// calls run at once, each on its own connection); a connection that
    /// broke during `f` is dropped, and the next call makes a new one.
    pub fn with_client<T>(
        &self,
        f: impl FnOnce(&mut Client) -> Result<T, postgres::Error>,
    ) -> Result<T, StoreError> {
        let mut lease = self.pool.take()?;
        let Some(client) = lease.client() else {
            return Err(unavailable("no connection"));
        };
        match f(client) {
            Ok(v) => {
                lease.give_back();
                Ok(v)
            }
            Err(e) => {
                let broken = client.is_closed() || e.as_db_error().is_none();
                if broken {
                    // Dropped with the lease.
                    Err(unavailable(e))
                } else {
                    lease.give_back();
                    Err(StoreError::Backend(e.to_string()))
                }
            }
        }
    }

    /// Wake every replica's change feed: a write of this store committed
    /// changes (sent from a thread of its own, see `Notifier`).
    pub fn notify_changes(&self) {
        self.notifier.changed();
    }

    /// The connection URL as given, password included (log [`redact`] of it).
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for PgStore {
    /// The synchronous client closes its connection by blocking on its own
    /// runtime, which panics on a thread that already runs one (the
    /// sidecar's async shutdown drops the store there): the connection is
    /// closed on a thread of its own, and waited for (every idle one).
    fn drop(&mut self) {
        let clients = self.pool.drain();
        if !clients.is_empty() {
            let closing = std::thread::Builder::new()
                .name("partnergate-pg-close".into())
                .spawn(move || drop(clients));
            match closing {
                Ok(t) => {
                    if t.join().is_err() {
                        tracing::warn!("closing the PostgreSQL connection failed");
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot close the PostgreSQL connection on a thread of its own");
                }
            }
        }
    }
}

/// Core's migrations (recorded by version in `schema_migrations`), then each
/// of `extra` not yet recorded in `named_migrations`, one transaction each,
/// all under the migration lock.
fn migrate(client: &mut Client, extra: &[Migration]) -> Result<(), StoreError> {
    let run = |client: &mut Client| -> Result<(), postgres::Error> {
        client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATE_LOCK])?;
        let result = (|| {
            client.batch_execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (
                    version INT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
            )?;
            let done: i32 = client
                .query_one(
                    "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                    &[],
                )?
                .get(0);
            for (i, sql) in MIGRATIONS.iter().enumerate().skip(done.max(0) as usize) {
                let mut tx = client.transaction()?;
                tx.batch_execute(sql)?;
                if i + 1 == REFS_MIGRATION {
                    backfill_refs(&mut tx)?;
                }
                let v = (i + 1) as i32;
                tx.execute("INSERT INTO schema_migrations (version) VALUES ($1)", &[&v])?;
                tx.commit()?;
            }
            for m in extra {
                let mut tx = client.transaction()?;
                let ran = tx
                    .query_opt("SELECT 1 FROM named_migrations WHERE name = $1", &[&m.name])?
                    .is_some();
                if !ran {
                    tx.batch_execute(m.postgres)?;
                    tx.execute(
                        "INSERT INTO named_migrations (name) VALUES ($1)",
                        &[&m.name],
                    )?;
                }
                tx.commit()?;
            }
            Ok(())
        })();
        client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATE_LOCK])?;
        result
    };
    run(client).map_err(|e| StoreError::Backend(format!("migration failed: {e}")))
}

/// Fill the `refs` column of every row that lacks it (rows written before
/// migration 4), inside the migration's transaction.
fn backfill_refs(tx: &mut postgres::Transaction<'_>) -> Result<(), postgres::Error> {
    let rows = tx.query("SELECT uid, json FROM entities WHERE refs IS NULL", &[])?;
    let update = tx.prepare("UPDATE entities SET refs = $2 WHERE uid = $1")?;
    for r in &rows {
        let uid: &str = r.get(0);
        let json: &str = r.get(1);
        tx.execute(&update, &[&uid, &encode_refs(json)])?;
    }
    Ok(())
}

/// The URL without its password, for logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// Append `changes` (uid, new JSON or `None` for a delete) to
/// `entity_changes` as `replica`'s (with the transaction's id), inside a
/// write transaction holding the locks of what it writes (so the changes
/// of one entity are in commit order). The feeds are woken after the
/// commit ([`PgStore::notify_changes`]), not from inside it.
pub fn write_changes(
    tx: &mut postgres::Transaction<'_>,
    replica: &str,
    changes: &[(String, Option<String>)],
) -> Result<(), postgres::Error> {
    let stmt = tx.prepare("INSERT INTO entity_changes (uid, json, replica) VALUES ($1, $2, $3)")?;
    for (uid, json) in changes {
        tx.execute(&stmt, &[uid, json, &replica])?;
    }
    Ok(())
}

/// Keep a write's change records inside its transaction.
pub fn keep_changes_in(
    tx: &mut postgres::Transaction<'_>,
    changes: &[KeptChange],
) -> Result<(), postgres::Error> {
    if changes.is_empty() {
        return Ok(());
    }
    let stmt = tx.prepare(
        "INSERT INTO change_outbox (change_id, log_id, body, at_ms) VALUES ($1, $2, $3, $4)",
    )?;
    for c in changes {
        tx.execute(&stmt, &[&c.change_id, &c.log_id, &c.body, &c.at_ms])?;
    }
    Ok(())
}

/// Begin a write transaction holding [`WRITE_LOCK`] exclusively: no other
/// write, of entities or of any account, on any replica, runs beside it.
///
/// The lock order, which every writer keeps so that none waits in a cycle:
/// [`WRITE_LOCK`] (exclusive, or shared for an account's write) first, then
/// the accounts' locks in ascending order of their keys, all of them before
/// the transaction's first write (so a transaction never waits for a lock
/// while holding a row, and its id is given after its locks: the changes of
/// one entity have increasing ids in commit order).
pub fn begin_write(c: &mut Client) -> Result<postgres::Transaction<'_>, postgres::Error> {
    let mut tx = c.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&WRITE_LOCK])?;
    Ok(tx)
}

/// Begin an account's write transaction: [`WRITE_LOCK`] shared (entity
/// and registry writes wait; other accounts' writes do not). Its accounts'
/// locks follow ([`lock_accounts`]) before its first write.
pub fn begin_account_write(c: &mut Client) -> Result<postgres::Transaction<'_>, postgres::Error> {
    let mut tx = c.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock_shared($1)", &[&WRITE_LOCK])?;
    Ok(tx)
}

/// Take the locks of `accounts` (each once, in ascending order of key: see
/// [`begin_write`]) inside an account's write transaction.
pub fn lock_accounts(
    tx: &mut postgres::Transaction<'_>,
    accounts: &[String],
) -> Result<(), postgres::Error> {
    let keys: Vec<i32> = tx
        .query(
            "SELECT DISTINCT hashtext(a) AS k FROM unnest($1::text[]) AS a ORDER BY k",
            &[&accounts],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for k in keys {
        tx.execute(
            "SELECT pg_advisory_xact_lock($1, $2)",
            &[&ACCOUNT_LOCKS, &k],
        )?;
    }
    Ok(())
}

/// Begin a read-only transaction over one snapshot (repeatable read): all
/// its reads see the database as of one commit.
pub fn begin_snapshot(c: &mut Client) -> Result<postgres::Transaction<'_>, postgres::Error> {
    c.build_transaction()
        .isolation_level(postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
}

/// Begin a write transaction under the shared write lock, as a guarded
/// write does: `Err(stop)` (the transaction rolled back, nothing written)
/// when the `Idempotency-Key` is remembered or the deadline has passed.
pub fn begin_guarded<'c>(
    c: &'c mut Client,
    guard: &WriteGuard<'_>,
) -> Result<Result<postgres::Transaction<'c>, Guarded>, postgres::Error> {
    let mut tx = begin_write(c)?;
    let recalled = match guard.idempotency {
        Some((key, _)) => recall_in(&mut tx, key)?,
        None => None,
    };
    // Dropping the transaction rolls it back.
    Ok(match guard.stop(recalled) {
        Some(stop) => Err(stop),
        None => Ok(tx),
    })
}

/// The remembered answer of `key`, if younger than the TTL.
pub fn recall_in(
    c: &mut impl postgres::GenericClient,
    key: &str,
) -> Result<Option<Remembered>, postgres::Error> {
    let since = unix_now() - IDEMPOTENCY_TTL_SECS;
    Ok(c.query_opt(
        "SELECT fingerprint, status, body FROM idempotency_keys WHERE key = $1 AND created_at > $2",
        &[&key, &since],
    )?
    .map(|r| Remembered {
        fingerprint: r.get(0),
        status: r.get::<_, i32>(1).clamp(100, 599) as u16,
        body: r.get(2),
    }))
}

/// Remember `key`'s answer inside a write transaction (expired keys go, a
/// few at a time: only rows no other transaction holds, so writes of other
/// accounts, which hold the keys they remember, never wait for this one).
pub fn remember_in(
    tx: &mut postgres::Transaction<'_>,
    key: &str,
    r: &Remembered,
) -> Result<(), postgres::Error> {
    let now = unix_now();
    tx.execute(
        "DELETE FROM idempotency_keys WHERE key IN (
           SELECT key FROM idempotency_keys WHERE created_at <= $1
           LIMIT 100 FOR UPDATE SKIP LOCKED)",
        &[&(now - IDEMPOTENCY_TTL_SECS)],
    )?;
    tx.execute(
        "INSERT INTO idempotency_keys (key, fingerprint, status, body, created_at)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (key) DO UPDATE SET fingerprint = EXCLUDED.fingerprint,
           status = EXCLUDED.status, body = EXCLUDED.body, created_at = EXCLUDED.created_at",
        &[&key, &r.fingerprint, &i32::from(r.status), &r.body, &now],
    )?;
    Ok(())
}

impl EntityBackend for PgStore {
    fn recall(&self, key: &str) -> Result<Option<Remembered>, StoreError> {
        self.with_client(|c| recall_in(c, key))
    }

    fn upsert_guarded(
        &self,
        records: &[EntityRecord],
        guard: &WriteGuard<'_>,
    ) -> Result<Guarded, StoreError> {
        self.write_guarded(records, guard, |_| Ok(()))
    }

    fn kept_changes(&self, log_id: &str) -> Result<Vec<KeptChange>, StoreError> {
        let rows = self.with_client(|c| {
            c.query(
                "SELECT change_id, log_id, body, at_ms FROM change_outbox WHERE log_id = $1
                 ORDER BY at_ms, change_id",
                &[&log_id],
            )
        })?;
        Ok(rows
            .iter()
            .map(|r| KeptChange {
                change_id: r.get(0),
                log_id: r.get(1),
                body: r.get(2),
                at_ms: r.get(3),
            })
            .collect())
    }

    fn forget_changes(&self, change_ids: &[String]) -> Result<(), StoreError> {
        if change_ids.is_empty() {
            return Ok(());
        }
        self.with_client(|c| {
            c.execute(
                "DELETE FROM change_outbox WHERE change_id = ANY($1)",
                &[&change_ids],
            )
            .map(|_| ())
        })
    }

    fn load_all(&self) -> Result<Vec<EntityRecord>, StoreError> {
        Ok(self.load_all_with_seq()?.0)
    }

    fn load_all_with_seq(&self) -> Result<(Vec<EntityRecord>, i64), StoreError> {
        let (records, seq, snapshot) = self.with_client(|c| {
            let mut tx = begin_snapshot(c)?;
            let (seq, snapshot) = position(&mut tx)?;
            let rows = tx.query(
                "SELECT uid, entity_type, json FROM entities ORDER BY uid",
                &[],
            )?;
            tx.commit()?;
            let records = rows
                .iter()
                .map(|r| EntityRecord {
                    uid: r.get(0),
                    entity_type: r.get(1),
                    json: r.get(2),
                })
                .collect::<Vec<_>>();
            Ok((records, seq, snapshot))
        })?;
        self.keep_loaded(snapshot);
        Ok((records, seq))
    }

    fn load_each(&self, each: &mut dyn FnMut(LoadedRow)) -> Result<i64, StoreError> {
        let (snapshot, seq) = self.with_client(|c| load_rows(c, each))?;
        self.keep_loaded(snapshot);
        Ok(seq)
    }

    fn upsert(&self, records: &[EntityRecord]) -> Result<(), StoreError> {
        self.with_client(|c| {
            let mut tx = begin_write(c)?;
            upsert_in(&mut tx, &self.replica, records)?;
            tx.commit()
        })?;
        self.notify_changes();
        Ok(())
    }

    fn delete(&self, uids: &[String]) -> Result<usize, StoreError> {
        self.with_client(|c| {
            let mut tx = begin_write(c)?;
            let mut n = 0;
            for u in uids {
                n += tx.execute("DELETE FROM entities WHERE uid = $1", &[u])? as usize;
            }
            let changes: Vec<(String, Option<String>)> =
                uids.iter().map(|u| (u.clone(), None)).collect();
            write_changes(&mut tx, &self.replica, &changes)?;
            tx.commit()?;
            Ok(n)
        })
        .inspect(|_| self.notify_changes())
    }

    fn ping(&self) -> Result<(), StoreError> {
        self.with_client(|c| c.simple_query("SELECT 1").map(|_| ()))
            .map_err(|e| match e {
                StoreError::Backend(m) => StoreError::Unavailable(m),
                other => other,
            })
    }

    fn describe(&self) -> String {
        redact(&self.url)
    }

    fn changes_since(&self, seq: i64, limit: i64) -> Result<Vec<Change>, StoreError> {
        self.with_client(|c| {
            let rows = c.query(
                "SELECT seq, uid, json FROM entity_changes WHERE seq > $1 ORDER BY seq LIMIT $2",
                &[&seq, &limit],
            )?;
            Ok(rows.iter().map(change).collect())
        })
    }
}

/// Upsert entity records and append them to the change feed, inside `tx`
/// (which must hold [`WRITE_LOCK`]).
pub fn upsert_in(
    tx: &mut postgres::Transaction<'_>,
    replica: &str,
    records: &[EntityRecord],
) -> Result<(), postgres::Error> {
    let stmt = tx.prepare(
        "INSERT INTO entities (uid, entity_type, json, refs) VALUES ($1, $2, $3, $4)
         ON CONFLICT (uid) DO UPDATE SET entity_type = EXCLUDED.entity_type,
           json = EXCLUDED.json, refs = EXCLUDED.refs, updated_at = now()",
    )?;
    for r in records {
        let refs = encode_refs(&r.json);
        tx.execute(&stmt, &[&r.uid, &r.entity_type, &r.json, &refs])?;
    }
    let changes: Vec<(String, Option<String>)> = records
        .iter()
        .map(|r| (r.uid.clone(), Some(r.json.clone())))
        .collect();
    write_changes(tx, replica, &changes)
}

impl PgStore {
    /// This replica's label on the changes it writes.
    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// One guarded write under [`WRITE_LOCK`] ([`begin_guarded`]): stopped
    /// as `guard` says (nothing written); else `also` (the caller's own
    /// statements), `records` upserted and sent to the change feed, the
    /// key's answer remembered and the change records kept, all committed
    /// together.
    pub fn write_guarded(
        &self,
        records: &[EntityRecord],
        guard: &WriteGuard<'_>,
        also: impl FnOnce(&mut postgres::Transaction<'_>) -> Result<(), postgres::Error>,
    ) -> Result<Guarded, StoreError> {
        self.with_client(|c| {
            let mut tx = match begin_guarded(c, guard)? {
                Ok(tx) => tx,
                Err(stop) => return Ok(stop),
            };
            also(&mut tx)?;
            upsert_in(&mut tx, &self.replica, records)?;
            if let Some((key, answer)) = guard.idempotency {
                remember_in(&mut tx, key, answer)?;
            }
            keep_changes_in(&mut tx, guard.changes)?;
            tx.commit()?;
            Ok(Guarded::Applied)
        })
        .inspect(|g| {
            if matches!(g, Guarded::Applied) {
                self.notify_changes();
            }
        })
    }
}

/// Inside a load's snapshot: the highest sequence it sees and the snapshot
/// itself (`pg_snapshot` as text), where the change feed starts.
fn position(tx: &mut postgres::Transaction<'_>) -> Result<(i64, String), postgres::Error> {
    let row = tx.query_one(
        "SELECT COALESCE(MAX(seq), 0), pg_current_snapshot()::text FROM entity_changes",
        &[],
    )?;
    Ok((row.get(0), row.get(1)))
}
