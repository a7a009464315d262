//! [`OrchestratorStore`] on PostgreSQL, for replicas sharing one database:
//! every operation is one transaction that first takes the global write
//! lock shared and then its accounts' locks (`begin_account_write`,
//! `lock_accounts`: the accounts it names and those of the users it names,
//! read under the shared lock, which keeps a user's account from changing),
//! so seat counts read inside it cannot change before it commits, across
//! all replicas, while other accounts' writes run beside it; its entity
//! writes go to the change feed like any other write.

use postgres::Transaction;

use super::store::{
    gather_companies, AccountTx, OrchestratorStore, RegistryCompany, StoredCode, TxOp, WriteLocks,
    CODES_KEPT_MS,
};
use crate::error::OrchestratorError;
use partnergate_core::store::postgres::{
    begin_account_write, keep_changes_in, lock_accounts, recall_in, remember_in, upsert_in, PgStore,
};
use partnergate_core::store::{
    EntityRecord, Guarded, KeptChange, Remembered, StoreError, WriteGuard,
};

fn backend(e: postgres::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn record(r: &postgres::Row) -> EntityRecord {
    EntityRecord {
        uid: r.get(0),
        entity_type: r.get(1),
        json: r.get(2),
    }
}

const COMPANY_OF_EMAIL: &str = "SELECT c.id, c.name, c.status, c.certified FROM partner_emails e
     JOIN partner_companies c ON c.id = e.company_id WHERE e.email = $1";

fn company(r: &postgres::Row) -> RegistryCompany {
    RegistryCompany {
        id: r.get(0),
        name: r.get(1),
        status: r.get(2),
        certified: r.get(3),
        emails: Vec::new(),
    }
}

struct Tx<'a, 'b> {
    tx: &'a mut Transaction<'b>,
    accounts: &'a [String],
}

// The literal `entity_type` lets each query use its partial index.
const ACCOUNT_USERS: &str = "SELECT uid, entity_type, json FROM entities
     WHERE entity_type = 'User'
       AND (json::jsonb #>> '{attrs,account,__entity,id}') = $1
     ORDER BY uid";
const ACCOUNT_REQUESTS: &str = "SELECT uid, entity_type, json FROM entities
     WHERE entity_type = 'PartnerRequest'
       AND (json::jsonb #>> '{attrs,account,__entity,id}') = $1
     ORDER BY uid";

impl Tx<'_, '_> {
    /// The records `sql` (one of the queries above) selects for `account`.
    fn of_account(&mut self, sql: &str, account: &str) -> Result<Vec<EntityRecord>, StoreError> {
        let rows = self.tx.query(sql, &[&account]).map_err(backend)?;
        Ok(rows.iter().map(record).collect())
    }
}

impl AccountTx for Tx<'_, '_> {
    fn holds_account(&self, account: &str) -> bool {
        self.accounts.iter().any(|a| a == account)
    }

    fn account_users(&mut self, account: &str) -> Result<Vec<EntityRecord>, StoreError> {
        self.of_account(ACCOUNT_USERS, account)
    }

    fn entity(&mut self, uid: &str) -> Result<Option<EntityRecord>, StoreError> {
        let row = self
            .tx
            .query_opt(
                "SELECT uid, entity_type, json FROM entities WHERE uid = $1",
                &[&uid],
            )
            .map_err(backend)?;
        Ok(row.as_ref().map(record))
    }

    fn company_of_email(&mut self, email: &str) -> Result<Option<RegistryCompany>, StoreError> {
        let row = self
            .tx
            .query_opt(COMPANY_OF_EMAIL, &[&email])
            .map_err(backend)?;
        Ok(row.as_ref().map(company))
    }

    fn account_requests(&mut self, account: &str) -> Result<Vec<EntityRecord>, StoreError> {
        self.of_account(ACCOUNT_REQUESTS, account)
    }

    fn open_request_codes(
        &mut self,
        account: &str,
        now: i64,
    ) -> Result<Vec<StoredCode>, StoreError> {
        let rows = self
            .tx
            .query(
                "SELECT hash, account, created_by, created_at, expires_at FROM partner_request_codes
                 WHERE account = $1 AND used_at IS NULL AND expires_at > $2 ORDER BY created_at",
                &[&account, &now],
            )
            .map_err(backend)?;
        Ok(rows
            .iter()
            .map(|r| StoredCode {
                hash: r.get(0),
                account: r.get(1),
                created_by: r.get(2),
                created_at: r.get(3),
                expires_at: r.get(4),
            })
            .collect())
    }

    fn add_request_code(&mut self, c: &StoredCode) -> Result<(), StoreError> {
        // Codes long dead are forgotten as new ones are made.
        self.tx
            .execute(
                "DELETE FROM partner_request_codes WHERE account = $1 AND expires_at < $2",
                &[&c.account, &c.created_at.saturating_sub(CODES_KEPT_MS)],
            )
            .map_err(backend)?;
        self.tx
            .execute(
                "INSERT INTO partner_request_codes (hash, account, created_by, created_at, expires_at)
                 VALUES ($1, $2, $3, $4, $5)",
                &[&c.hash, &c.account, &c.created_by, &c.created_at, &c.expires_at],
            )
            .map_err(backend)?;
        Ok(())
    }

    fn use_request_code(&mut self, hash: &str, now: i64, by: &str) -> Result<bool, StoreError> {
        let n = self
            .tx
            .execute(
                "UPDATE partner_request_codes SET used_at = $2, used_by = $3
                 WHERE hash = $1 AND used_at IS NULL AND expires_at > $2",
                &[&hash, &now, &by],
            )
            .map_err(backend)?;
        Ok(n == 1)
    }

    fn recall(&mut self, key: &str) -> Result<Option<Remembered>, StoreError> {
        recall_in(self.tx, key).map_err(backend)
    }

    fn remember(&mut self, key: &str, answer: &Remembered) -> Result<(), StoreError> {
        remember_in(self.tx, key, answer).map_err(backend)
    }

    fn keep_changes(&mut self, changes: &[KeptChange]) -> Result<(), StoreError> {
        keep_changes_in(self.tx, changes).map_err(backend)
    }

    fn keep_events(&mut self, events: &[crate::events::NewEvent]) -> Result<(), StoreError> {
        crate::events::postgres::keep_events_in(self.tx, events).map_err(backend)
    }
}

impl OrchestratorStore for PgStore {
    fn transact(
        &self,
        locks: &WriteLocks,
        op: &mut TxOp<'_>,
    ) -> Result<Vec<EntityRecord>, OrchestratorError> {
        let replica = self.replica().to_string();
        self.with_client(|c| {
            let mut tx = begin_account_write(c)?;
            let mut accounts = locks.accounts.clone();
            for row in tx.query(
                "SELECT DISTINCT json::jsonb #>> '{attrs,account,__entity,id}' FROM entities
                 WHERE uid = ANY($1) AND entity_type = 'User'",
                &[&locks.users],
            )? {
                if let Some(a) = row.get::<_, Option<String>>(0) {
                    accounts.push(a);
                }
            }
            accounts.sort();
            accounts.dedup();
            lock_accounts(&mut tx, &accounts)?;
            let result = {
                let mut view = Tx {
                    tx: &mut tx,
                    accounts: &accounts,
                };
                op(&mut view)
            };
            match result {
                Ok(records) => {
                    upsert_in(&mut tx, &replica, &records)?;
                    tx.commit()?;
                    Ok(Ok(records))
                }
                // Dropping the transaction rolls it back.
                Err(e) => Ok(Err(e)),
            }
        })?
        .inspect(|_| self.notify_changes())
    }

    fn company_of_email(&self, email: &str) -> Result<Option<RegistryCompany>, StoreError> {
        self.with_client(|c| c.query_opt(COMPANY_OF_EMAIL, &[&email]))
            .map(|r| r.as_ref().map(company))
    }

    fn put_companies(
        &self,
        companies: &[RegistryCompany],
        records: &[EntityRecord],
        guard: &WriteGuard<'_>,
    ) -> Result<Guarded, StoreError> {
        self.write_guarded(records, guard, |tx| {
            for co in companies {
                tx.execute(
                    "INSERT INTO partner_companies (id, name, status, certified) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, status = EXCLUDED.status,
                       certified = EXCLUDED.certified, updated_at = now()",
                    &[&co.id, &co.name, &co.status, &co.certified],
                )?;
                tx.execute("DELETE FROM partner_emails WHERE company_id = $1", &[&co.id])?;
                for e in &co.emails {
                    tx.execute(
                        "INSERT INTO partner_emails (email, company_id) VALUES ($1, $2)
                         ON CONFLICT (email) DO UPDATE SET company_id = EXCLUDED.company_id",
                        &[e, &co.id],
                    )?;
                }
            }
            Ok(())
        })
    }

    fn companies(&self) -> Result<Vec<RegistryCompany>, StoreError> {
        let rows = self.with_client(|c| {
            c.query(
                "SELECT c.id, c.name, c.status, c.certified, e.email FROM partner_companies c
                 LEFT JOIN partner_emails e ON e.company_id = c.id ORDER BY c.id, e.email",
                &[],
            )
        })?;
        Ok(gather_companies(
            rows.iter()
                .map(|r| (company(r), r.get::<_, Option<String>>(4))),
        ))
    }
}
