//! The embedded SQLite backend: one file under the data directory, WAL mode,
//! foreign keys on, versioned migrations (`PRAGMA user_version`). Each entity
//! row keeps its references (`refs`, written with the JSON by every writer),
//! and a start streams the rows (`load_each`) rather than listing them.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension};

use super::{
    encode_refs, unix_now, EntityBackend, EntityRecord, Guarded, KeptChange, LoadedRow, Migration,
    Remembered, StoreError, WriteGuard, IDEMPOTENCY_TTL_SECS,
};

/// Schema migrations, applied in order; `user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    // 1: entities
    "CREATE TABLE entities (
        uid TEXT PRIMARY KEY,
        entity_type TEXT NOT NULL,
        json TEXT NOT NULL,
        updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now'))
    );
    CREATE INDEX entities_by_type ON entities(entity_type);",
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
        created_at INTEGER NOT NULL
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
        at_ms INTEGER NOT NULL
    );
    CREATE INDEX change_outbox_by_log ON change_outbox(log_id, at_ms);",
    // 6: the names of the migrations run for the crates above
    // (`super::Migration`)
    "CREATE TABLE named_migrations (
        name TEXT PRIMARY KEY,
        applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now'))
    );",
];

/// The migration (1-based) that added the `refs` column.
const REFS_MIGRATION: usize = 4;

/// SQLite store. One connection behind a mutex: SQLite serialises writers
/// anyway, and reads are served from memory, not from here.
pub struct SqliteStore {
    path: PathBuf,
    conn: Mutex<Connection>,
}

impl SqliteStore {
    /// Open (creating if needed) `store.db` in `data_dir`, and migrate it.
    pub fn open_in(data_dir: &Path) -> Result<Self, StoreError> {
        Self::open_in_with(data_dir, &[])
    }

    /// [`Self::open_in`], also running `extra` (see [`Migration`]).
    pub fn open_in_with(data_dir: &Path, extra: &[Migration]) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|e| StoreError::Open {
            path: data_dir.to_path_buf(),
            message: e.to_string(),
        })?;
        Self::open_with(&data_dir.join("store.db"), extra)
    }

    /// Open (creating if needed) the database file at `path`, and migrate it.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with(path, &[])
    }

    /// [`Self::open`], also running `extra` after core's migrations, in
    /// the same transaction (see [`Migration`]).
    pub fn open_with(path: &Path, extra: &[Migration]) -> Result<Self, StoreError> {
        let open_err = |e: rusqlite::Error| StoreError::Open {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        // Created 0600 (it holds emails); SQLite gives its -wal/-shm files
        // the same mode.
        #[cfg(unix)]
        if !path.exists() {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| StoreError::Open {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                })?;
        }
        let mut conn = Connection::open(path).map_err(open_err)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;
             PRAGMA foreign_keys = ON;
             PRAGMA busy_timeout = 5000;",
        )
        .map_err(open_err)?;
        migrate(&mut conn, extra).map_err(open_err)?;
        Ok(SqliteStore {
            path: path.to_path_buf(),
            conn: Mutex::new(conn),
        })
    }

    /// The one connection, locked for the caller (layers above run their own
    /// statements on it); a `Backend` error if a holder panicked.
    pub fn conn(&self) -> Result<std::sync::MutexGuard<'_, Connection>, StoreError> {
        self.conn
            .lock()
            .map_err(|_| StoreError::Backend("store connection poisoned".into()))
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// One guarded write (`BEGIN IMMEDIATE`): once it has begun, stopped as
    /// `guard` says (nothing written); else `also` (the caller's own
    /// statements), `records` upserted, the key's answer remembered and the
    /// change records kept, all committed together.
    pub fn write_guarded(
        &self,
        records: &[EntityRecord],
        guard: &WriteGuard<'_>,
        also: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<()>,
    ) -> Result<Guarded, StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let recalled = match guard.idempotency {
            Some((key, _)) => recall_in(&tx, key)?,
            None => None,
        };
        if let Some(stop) = guard.stop(recalled) {
            return Ok(stop); // dropping the transaction rolls it back
        }
        also(&tx)?;
        upsert_in(&tx, records)?;
        if let Some((key, answer)) = guard.idempotency {
            remember_in(&tx, key, answer)?;
        }
        keep_changes_in(&tx, guard.changes)?;
        tx.commit()?;
        Ok(Guarded::Applied)
    }
}

/// Insert or replace entity records inside a transaction (shared by the
/// entity store and the orchestrator's transactions).
pub fn upsert_in(tx: &rusqlite::Transaction<'_>, records: &[EntityRecord]) -> rusqlite::Result<()> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO entities (uid, entity_type, json, refs) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(uid) DO UPDATE SET entity_type = excluded.entity_type,
           json = excluded.json, refs = excluded.refs,
           updated_at = strftime('%Y-%m-%dT%H:%M:%fZ','now')",
    )?;
    for r in records {
        stmt.execute(params![r.uid, r.entity_type, r.json, encode_refs(&r.json)])?;
    }
    Ok(())
}

/// Keep a write's change records inside its transaction.
pub fn keep_changes_in(
    tx: &rusqlite::Transaction<'_>,
    changes: &[KeptChange],
) -> rusqlite::Result<()> {
    if changes.is_empty() {
        return Ok(());
    }
    let mut stmt = tx.prepare_cached(
        "INSERT INTO change_outbox (change_id, log_id, body, at_ms) VALUES (?1, ?2, ?3, ?4)",
    )?;
    for c in changes {
        stmt.execute(params![c.change_id, c.log_id, c.body, c.at_ms])?;
    }
    Ok(())
}

/// The remembered answer of `key`, if younger than [`IDEMPOTENCY_TTL_SECS`].
pub fn recall_in(conn: &Connection, key: &str) -> rusqlite::Result<Option<Remembered>> {
    conn.prepare_cached(
        "SELECT fingerprint, status, body FROM idempotency_keys WHERE key = ?1 AND created_at > ?2",
    )?
    .query_row(params![key, unix_now() - IDEMPOTENCY_TTL_SECS], |r| {
        Ok(Remembered {
            fingerprint: r.get(0)?,
            status: r.get::<_, i64>(1)?.clamp(100, 599) as u16,
            body: r.get(2)?,
        })
    })
    .optional()
}

/// Remember `key`'s answer inside a write transaction (expired keys go).
pub fn remember_in(
    tx: &rusqlite::Transaction<'_>,
    key: &str,
    r: &Remembered,
) -> rusqlite::Result<()> {
    let now = unix_now();
    tx.prepare_cached("DELETE FROM idempotency_keys WHERE created_at <= ?1")?
        .execute(params![now - IDEMPOTENCY_TTL_SECS])?;
    tx.prepare_cached(
        "INSERT INTO idempotency_keys (key, fingerprint, status, body, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT(key) DO UPDATE SET fingerprint = excluded.fingerprint,
           status = excluded.status, body = excluded.body, created_at = excluded.created_at",
    )?
    .execute(params![
        key,
        r.fingerprint,
        i64::from(r.status),
        r.body,
        now
    ])?;
    Ok(())
}

/// Core's migrations (counted by `user_version`), then each of `extra` not
/// yet recorded in `named_migrations`, in one write transaction.
fn migrate(conn: &mut Connection, extra: &[Migration]) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let done: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(done.max(0) as usize) {
        tx.execute_batch(sql)?;
        if i + 1 == REFS_MIGRATION {
            backfill_refs(&tx)?;
        }
        tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))?;
    }
    for m in extra {
        let ran = tx
            .query_row(
                "SELECT 1 FROM named_migrations WHERE name = ?1",
                params![m.name],
                |_| Ok(()),
            )
            .optional()?
            .is_some();
        if !ran {
            tx.execute_batch(m.sqlite)?;
            tx.execute(
                "INSERT INTO named_migrations (name) VALUES (?1)",
                params![m.name],
            )?;
        }
    }
    tx.commit()
}

/// Fill the `refs` column of every row that lacks it (rows written before
/// migration 4), inside the migration's transaction.
fn backfill_refs(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    let mut read = tx.prepare("SELECT rowid, json FROM entities WHERE refs IS NULL")?;
    let mut write = tx.prepare("UPDATE entities SET refs = ?2 WHERE rowid = ?1")?;
    let mut rows = read.query([])?;
    while let Some(row) = rows.next()? {
        let rowid: i64 = row.get(0)?;
        let json: String = row.get(1)?;
        write.execute(params![rowid, encode_refs(&json)])?;
    }
    Ok(())
}

/// A database at `path` in the layout before the `refs` column (migrations
/// 1–3) holding `records`, as an older PartnerGate left it: what a start
/// after an upgrade opens.
#[cfg(test)]
pub(crate) fn create_before_refs(path: &Path, records: &[EntityRecord]) {
    let conn = Connection::open(path).unwrap();
    for sql in &MIGRATIONS[..REFS_MIGRATION - 1] {
        conn.execute_batch(sql).unwrap();
    }
    conn.execute_batch(&format!("PRAGMA user_version = {}", REFS_MIGRATION - 1))
        .unwrap();
    for r in records {
        conn.execute(
            "INSERT INTO entities (uid, entity_type, json) VALUES (?1, ?2, ?3)",
            params![r.uid, r.entity_type, r.json],
        )
        .unwrap();
    }
}

impl EntityBackend for SqliteStore {
    fn load_all(&self) -> Result<Vec<EntityRecord>, StoreError> {
        let conn = self.conn()?;
        let mut stmt =
            conn.prepare("SELECT uid, entity_type, json FROM entities ORDER BY rowid")?;
        let rows = stmt.query_map([], |r| {
            Ok(EntityRecord {
                uid: r.get(0)?,
                entity_type: r.get(1)?,
                json: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    fn load_each(&self, each: &mut dyn FnMut(LoadedRow)) -> Result<i64, StoreError> {
        let conn = self.conn()?;
        let mut stmt =
            conn.prepare("SELECT uid, entity_type, json, refs FROM entities ORDER BY rowid")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            each(LoadedRow {
                uid: r.get(0)?,
                entity_type: r.get(1)?,
                json: r.get(2)?,
                refs: r.get(3)?,
            });
        }
        Ok(0)
    }

    fn upsert(&self, records: &[EntityRecord]) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        upsert_in(&tx, records)?;
        tx.commit()?;
        Ok(())
    }

    fn delete(&self, uids: &[String]) -> Result<usize, StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut n = 0;
        {
            let mut stmt = tx.prepare_cached("DELETE FROM entities WHERE uid = ?1")?;
            for u in uids {
                n += stmt.execute(params![u])?;
            }
        }
        tx.commit()?;
        Ok(n)
    }

    fn recall(&self, key: &str) -> Result<Option<Remembered>, StoreError> {
        let conn = self.conn()?;
        Ok(recall_in(&conn, key)?)
    }

    fn upsert_guarded(
        &self,
        records: &[EntityRecord],
        guard: &WriteGuard<'_>,
    ) -> Result<Guarded, StoreError> {
        self.write_guarded(records, guard, |_| Ok(()))
    }

    fn kept_changes(&self, log_id: &str) -> Result<Vec<KeptChange>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(
            "SELECT change_id, log_id, body, at_ms FROM change_outbox WHERE log_id = ?1
             ORDER BY at_ms, rowid",
        )?;
        let rows = stmt.query_map(params![log_id], |r| {
            Ok(KeptChange {
                change_id: r.get(0)?,
                log_id: r.get(1)?,
                body: r.get(2)?,
                at_ms: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    fn forget_changes(&self, change_ids: &[String]) -> Result<(), StoreError> {
        if change_ids.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        {
            let mut stmt = tx.prepare_cached("DELETE FROM change_outbox WHERE change_id = ?1")?;
            for id in change_ids {
                stmt.execute(params![id])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn ping(&self) -> Result<(), StoreError> {
        let conn = self.conn()?;
        conn.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))
            .optional()
            .map(|_| ())
            .map_err(|e| StoreError::Unavailable(e.to_string()))
    }

    fn describe(&self) -> String {
        format!("sqlite:{}", self.path.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(uid: &str, json: &str) -> EntityRecord {
        EntityRecord {
            uid: uid.into(),
            entity_type: "User".into(),
            json: json.into(),
        }
    }

    /// A remembered Idempotency-Key answer is recalled until it is
    /// IDEMPOTENCY_TTL_SECS old, then forgotten (and purged by the next write).
    #[test]
    fn idempotency_keys_expire_after_the_ttl() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open_in(dir.path()).unwrap();
        let answer = Remembered {
            fingerprint: "f".into(),
            status: 201,
            body: "{}".into(),
        };
        let guard = WriteGuard {
            deadline: None,
            idempotency: Some(("k", &answer)),
            changes: &[],
        };
        assert_eq!(
            s.upsert_guarded(&[rec("User::\"a\"", "1")], &guard)
                .unwrap(),
            Guarded::Applied
        );
        assert_eq!(s.recall("k").unwrap(), Some(answer.clone()));
        // The same key again: nothing written, the first answer.
        let again = s
            .upsert_guarded(&[rec("User::\"a\"", "2")], &guard)
            .unwrap();
        assert_eq!(again, Guarded::Replayed(answer.clone()));
        assert_eq!(s.load_all().unwrap()[0].json, "1");
        // A day and a second later: forgotten.
        s.conn()
            .unwrap()
            .execute(
                "UPDATE idempotency_keys SET created_at = created_at - ?1",
                params![IDEMPOTENCY_TTL_SECS + 1],
            )
            .unwrap();
        assert_eq!(s.recall("k").unwrap(), None);
        let fresh = s
            .upsert_guarded(&[rec("User::\"a\"", "3")], &guard)
            .unwrap();
        assert_eq!(fresh, Guarded::Applied);
        let n: i64 = s
            .conn()
            .unwrap()
            .query_row("SELECT COUNT(*) FROM idempotency_keys", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1, "the expired row was purged");
    }

    fn refs_column(s: &SqliteStore, uid: &str) -> Option<String> {
        s.conn()
            .unwrap()
            .query_row("SELECT refs FROM entities WHERE uid = ?1", [uid], |r| {
                r.get(0)
            })
            .unwrap()
    }

    /// A store left by a version before the `refs` column is migrated on
    /// open: every row gets the references of its JSON.
    #[test]
    fn opening_a_store_before_refs_fills_the_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let user = r#"{"uid":{"type":"User","id":"a"},"parents":[{"type":"Account","id":"acme"}],
            "attrs":{"account":{"__entity":{"type":"Account","id":"acme"}},
                     "partner":{"company":{"__entity":{"type":"PartnerCompany","id":"goldco"}}}}}"#;
        create_before_refs(&path, &[rec("User::\"a\"", user), rec("User::\"b\"", "2")]);
        let s = SqliteStore::open(&path).unwrap();
        assert_eq!(
            refs_column(&s, "User::\"a\"").as_deref(),
            Some(r#"[["Account","acme"],["PartnerCompany","goldco"]]"#)
        );
        assert_eq!(refs_column(&s, "User::\"b\"").as_deref(), Some("[]"));
        let v: i64 = s
            .conn()
            .unwrap()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, MIGRATIONS.len() as i64);
    }

    /// Every write keeps the row's references in step with its JSON.
    #[test]
    fn a_write_updates_the_stored_references() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open_in(dir.path()).unwrap();
        let with_parent = |p: &str| {
            format!(
                r#"{{"uid":{{"type":"User","id":"a"}},"attrs":{{}},"parents":[{{"type":"Account","id":"{p}"}}]}}"#
            )
        };
        s.upsert(&[rec("User::\"a\"", &with_parent("one"))])
            .unwrap();
        assert_eq!(
            refs_column(&s, "User::\"a\"").as_deref(),
            Some(r#"[["Account","one"]]"#)
        );
        let guard = WriteGuard::default();
        s.upsert_guarded(&[rec("User::\"a\"", &with_parent("two"))], &guard)
            .unwrap();
        assert_eq!(
            refs_column(&s, "User::\"a\"").as_deref(),
            Some(r#"[["Account","two"]]"#)
        );
        let mut rows = Vec::new();
        s.load_each(&mut |r| rows.push(r)).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].refs.as_deref(), Some(r#"[["Account","two"]]"#));
        assert_eq!(rows[0].json, with_parent("two"));
    }

    #[test]
    fn upsert_replace_delete_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SqliteStore::open_in(dir.path()).unwrap();
            s.upsert(&[rec("User::\"a\"", "1"), rec("User::\"b\"", "2")])
                .unwrap();
            s.upsert(&[rec("User::\"a\"", "3")]).unwrap();
            assert_eq!(
                s.delete(&["User::\"b\"".into(), "User::\"zz\"".into()])
                    .unwrap(),
                1
            );
        }
        let s = SqliteStore::open_in(dir.path()).unwrap();
        let all = s.load_all().unwrap();
        assert_eq!(all, vec![rec("User::\"a\"", "3")]);
        // Migrations are idempotent on reopen.
        let v: i64 = s
            .conn()
            .unwrap()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, MIGRATIONS.len() as i64);
    }

    /// Extra migrations run after core's, each once: a reopen with the same
    /// set runs none again, and a set that grew runs only the new one.
    #[test]
    fn extra_migrations_run_once_each() {
        const FIRST: Migration = Migration {
            name: "test.1",
            sqlite: "CREATE TABLE extra_one (id TEXT PRIMARY KEY);",
            postgres: "",
        };
        const SECOND: Migration = Migration {
            name: "test.2",
            sqlite: "INSERT INTO extra_one (id) VALUES ('second');",
            postgres: "",
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        drop(SqliteStore::open_with(&path, &[FIRST]).unwrap());
        // Not idempotent on its own: a second run would fail.
        drop(SqliteStore::open_with(&path, &[FIRST]).unwrap());
        let s = SqliteStore::open_with(&path, &[FIRST, SECOND]).unwrap();
        drop(SqliteStore::open_with(&path, &[FIRST, SECOND]).unwrap());
        let conn = s.conn().unwrap();
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM extra_one", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 1);
        let names: Vec<String> = conn
            .prepare("SELECT name FROM named_migrations ORDER BY name")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(names, ["test.1", "test.2"]);
    }
}
