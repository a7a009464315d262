//! [`OrchestratorStore`] on the embedded SQLite store: `BEGIN IMMEDIATE`
//! takes the database's write lock before the first read, so the seat count
//! an operation reads cannot change before it commits — also across
//! processes (the CLI beside a server) sharing the file.

use rusqlite::{params, OptionalExtension, Transaction, TransactionBehavior};

use super::store::{
    gather_companies, AccountTx, OrchestratorStore, RegistryCompany, StoredCode, TxOp, WriteLocks,
    CODES_KEPT_MS,
};
use crate::error::OrchestratorError;
use partnergate_core::store::sqlite::SqliteStore;
use partnergate_core::store::sqlite::{keep_changes_in, recall_in, remember_in};
use partnergate_core::store::{
    EntityRecord, Guarded, KeptChange, Remembered, StoreError, WriteGuard,
};

struct Tx<'a> {
    tx: &'a Transaction<'a>,
}

fn record(r: &rusqlite::Row<'_>) -> rusqlite::Result<EntityRecord> {
    Ok(EntityRecord {
        uid: r.get(0)?,
        entity_type: r.get(1)?,
        json: r.get(2)?,
    })
}

fn company_of_email(
    conn: &rusqlite::Connection,
    email: &str,
) -> Result<Option<RegistryCompany>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT c.id, c.name, c.status, c.certified FROM partner_emails e
             JOIN partner_companies c ON c.id = e.company_id WHERE e.email = ?1",
        )?
        .query_row(params![email], |r| {
            Ok(RegistryCompany {
                id: r.get(0)?,
                name: r.get(1)?,
                status: r.get(2)?,
                certified: r.get::<_, i64>(3)? != 0,
                emails: Vec::new(),
            })
        })
        .optional()?)
}

// The literal `entity_type` lets each query use its partial index.
const ACCOUNT_USERS: &str = "SELECT uid, entity_type, json FROM entities
     WHERE entity_type = 'User'
       AND json_extract(json, '$.attrs.account.__entity.id') = ?1
     ORDER BY rowid";
const ACCOUNT_REQUESTS: &str = "SELECT uid, entity_type, json FROM entities
     WHERE entity_type = 'PartnerRequest'
       AND json_extract(json, '$.attrs.account.__entity.id') = ?1
     ORDER BY rowid";

/// The records `sql` (one of the queries above) selects for `account`.
fn of_account(
    tx: &Transaction<'_>,
    sql: &str,
    account: &str,
) -> Result<Vec<EntityRecord>, StoreError> {
    let mut stmt = tx.prepare_cached(sql)?;
    let rows = stmt.query_map(params![account], record)?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

impl AccountTx for Tx<'_> {
    fn holds_account(&self, _account: &str) -> bool {
        // `BEGIN IMMEDIATE`: no other write runs beside this one.
        true
    }

    fn account_users(&mut self, account: &str) -> Result<Vec<EntityRecord>, StoreError> {
        of_account(self.tx, ACCOUNT_USERS, account)
    }

    fn entity(&mut self, uid: &str) -> Result<Option<EntityRecord>, StoreError> {
        Ok(self
            .tx
            .prepare_cached("SELECT uid, entity_type, json FROM entities WHERE uid = ?1")?
            .query_row(params![uid], record)
            .optional()?)
    }

    fn company_of_email(&mut self, email: &str) -> Result<Option<RegistryCompany>, StoreError> {
        company_of_email(self.tx, email)
    }

    fn account_requests(&mut self, account: &str) -> Result<Vec<EntityRecord>, StoreError> {
        of_account(self.tx, ACCOUNT_REQUESTS, account)
    }

    fn open_request_codes(
        &mut self,
        account: &str,
        now: i64,
    ) -> Result<Vec<StoredCode>, StoreError> {
        let mut stmt = self.tx.prepare_cached(
            "SELECT hash, account, created_by, created_at, expires_at FROM partner_request_codes
             WHERE account = ?1 AND used_at IS NULL AND expires_at > ?2 ORDER BY created_at",
        )?;
        let rows = stmt.query_map(params![account, now], |r| {
            Ok(StoredCode {
                hash: r.get(0)?,
                account: r.get(1)?,
                created_by: r.get(2)?,
                created_at: r.get(3)?,
                expires_at: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    fn add_request_code(&mut self, c: &StoredCode) -> Result<(), StoreError> {
        // Codes long dead are forgotten as new ones are made: the table
        // holds what the bound on open codes lets through, no more.
        self.tx.execute(
            "DELETE FROM partner_request_codes WHERE account = ?1 AND expires_at < ?2",
            params![c.account, c.created_at.saturating_sub(CODES_KEPT_MS)],
        )?;
        self.tx.execute(
            "INSERT INTO partner_request_codes (hash, account, created_by, created_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![c.hash, c.account, c.created_by, c.created_at, c.expires_at],
        )?;
        Ok(())
    }

    fn use_request_code(&mut self, hash: &str, now: i64, by: &str) -> Result<bool, StoreError> {
        let n = self.tx.execute(
            "UPDATE partner_request_codes SET used_at = ?2, used_by = ?3
             WHERE hash = ?1 AND used_at IS NULL AND expires_at > ?2",
            params![hash, now, by],
        )?;
        Ok(n == 1)
    }

    fn recall(&mut self, key: &str) -> Result<Option<Remembered>, StoreError> {
        Ok(recall_in(self.tx, key)?)
    }

    fn remember(&mut self, key: &str, answer: &Remembered) -> Result<(), StoreError> {
        Ok(remember_in(self.tx, key, answer)?)
    }

    fn keep_changes(&mut self, changes: &[KeptChange]) -> Result<(), StoreError> {
        Ok(keep_changes_in(self.tx, changes)?)
    }

    fn keep_events(&mut self, events: &[crate::events::NewEvent]) -> Result<(), StoreError> {
        Ok(crate::events::sqlite::keep_events_in(self.tx, events)?)
    }
}

fn upsert(tx: &Transaction<'_>, records: &[EntityRecord]) -> Result<(), StoreError> {
    Ok(partnergate_core::store::sqlite::upsert_in(tx, records)?)
}

impl OrchestratorStore for SqliteStore {
    fn transact(
        &self,
        _locks: &WriteLocks,
        op: &mut TxOp<'_>,
    ) -> Result<Vec<EntityRecord>, OrchestratorError> {
        let mut conn = self.conn()?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(StoreError::from)?;
        let records = {
            let mut view = Tx { tx: &tx };
            op(&mut view)?
        };
        upsert(&tx, &records)?;
        tx.commit().map_err(StoreError::from)?;
        Ok(records)
    }

    fn company_of_email(&self, email: &str) -> Result<Option<RegistryCompany>, StoreError> {
        let conn = self.conn()?;
        company_of_email(&conn, email)
    }

    fn put_companies(
        &self,
        companies: &[RegistryCompany],
        records: &[EntityRecord],
        guard: &WriteGuard<'_>,
    ) -> Result<Guarded, StoreError> {
        self.write_guarded(records, guard, |tx| {
            for c in companies {
                tx.execute(
                    "INSERT INTO partner_companies (id, name, status, certified) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT(id) DO UPDATE SET name = excluded.name, status = excluded.status,
                       certified = excluded.certified,
                       updated_at = strftime('%Y-%m-%dT%H:%M:%fZ','now')",
                    params![c.id, c.name, c.status, i64::from(c.certified)],
                )?;
                tx.execute(
                    "DELETE FROM partner_emails WHERE company_id = ?1",
                    params![c.id],
                )?;
                let mut stmt = tx.prepare_cached(
                    "INSERT INTO partner_emails (email, company_id) VALUES (?1, ?2)
                     ON CONFLICT(email) DO UPDATE SET company_id = excluded.company_id",
                )?;
                for e in &c.emails {
                    stmt.execute(params![e, c.id])?;
                }
            }
            Ok(())
        })
    }

    fn companies(&self) -> Result<Vec<RegistryCompany>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(
            "SELECT c.id, c.name, c.status, c.certified, e.email FROM partner_companies c
             LEFT JOIN partner_emails e ON e.company_id = c.id ORDER BY c.id, e.email",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                RegistryCompany {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    status: r.get(2)?,
                    certified: r.get::<_, i64>(3)? != 0,
                    emails: Vec::new(),
                },
                r.get::<_, Option<String>>(4)?,
            ))
        })?;
        Ok(gather_companies(rows.collect::<Result<Vec<_>, _>>()?))
    }
}
