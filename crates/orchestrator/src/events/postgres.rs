//! The events outbox on PostgreSQL, shared by replicas: the rows written
//! inside an operation's transaction (`keep_events_in`: the account's next
//! sequence number read under the account's lock, which every write of the
//! account holds), and [`EventStore`]: a claim leases each account's next
//! event with `FOR UPDATE SKIP LOCKED`, so two replicas claiming at once
//! never take the same event, and a lease past its time (a dead replica's)
//! is taken over.

use postgres::types::ToSql;
use postgres::{GenericClient, Row};

use crate::events::outbox::{
    done_list, filter_clause, status_of, EventFilter, EventRow, EventStats, EventStore,
    FilterValue, NewEvent, Settled, COLUMNS,
};
use partnergate_core::store::postgres::PgStore;
use partnergate_core::store::StoreError;

/// Write `events` in the transaction `tx` is in (holding their accounts'
/// locks), each with its account's next sequence number; one whose
/// `dedupe` key is taken is left out.
pub(crate) fn keep_events_in(
    tx: &mut impl GenericClient,
    events: &[NewEvent],
) -> Result<(), postgres::Error> {
    for e in events {
        let seq: i64 = tx
            .query_one(
                "SELECT COALESCE(MAX(seq), 0) + 1 FROM partner_events WHERE account = $1",
                &[&e.account],
            )?
            .get(0);
        tx.execute(
            "INSERT INTO partner_events (id, account, seq, kind, user_id, actor, change_id,
               decision_id, created_ms, data, dedupe, next_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 0)
             ON CONFLICT (dedupe) DO NOTHING",
            &[
                &e.id,
                &e.account,
                &seq,
                &e.kind,
                &e.user,
                &e.actor,
                &e.change_id,
                &e.decision_id,
                &e.created_ms,
                &e.data,
                &e.dedupe,
            ],
        )?;
    }
    Ok(())
}

fn row(r: &Row) -> EventRow {
    EventRow {
        pos: r.get(0),
        id: r.get(1),
        account: r.get(2),
        seq: r.get(3),
        kind: r.get(4),
        user: r.get(5),
        actor: r.get(6),
        change_id: r.get(7),
        decision_id: r.get(8),
        created_ms: r.get(9),
        data: r.get(10),
        status: status_of(r.get(11)),
        attempts: r.get(12),
        next_ms: r.get(13),
        done: done_list(r.get(14)),
        last_error: r.get(15),
        delivered_ms: r.get(16),
    }
}

/// The `WHERE` of a filter and its parameters (from `$1`).
fn filter_sql(f: &EventFilter) -> (String, Vec<Box<dyn ToSql + Sync>>) {
    let (sql, values) = filter_clause(f, |n| format!("${n}"));
    let args = values
        .into_iter()
        .map(|v| -> Box<dyn ToSql + Sync> {
            match v {
                FilterValue::Text(t) => Box::new(t),
                FilterValue::Int(i) => Box::new(i),
            }
        })
        .collect();
    (sql, args)
}

fn refs(args: &[Box<dyn ToSql + Sync>]) -> Vec<&(dyn ToSql + Sync)> {
    args.iter().map(|a| a.as_ref()).collect()
}

impl EventStore for PgStore {
    fn claim(
        &self,
        owner: &str,
        now_ms: i64,
        lease_until_ms: i64,
        limit: i64,
    ) -> Result<Vec<EventRow>, StoreError> {
        let sql = format!(
            "WITH heads AS (
               SELECT h.pos FROM partner_events h
               WHERE h.status = 'pending' AND h.next_ms <= $3
                 AND (h.lease_until_ms IS NULL OR h.lease_until_ms < $3)
                 AND NOT EXISTS (SELECT 1 FROM partner_events p WHERE p.account = h.account
                                 AND p.status = 'pending' AND p.seq < h.seq)
               ORDER BY h.pos LIMIT $4
               FOR UPDATE OF h SKIP LOCKED)
             UPDATE partner_events e SET lease_owner = $1, lease_until_ms = $2
             FROM heads WHERE e.pos = heads.pos
             RETURNING {}",
            COLUMNS
                .split(", ")
                .map(|c| format!("e.{}", c.trim()))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let rows =
            self.with_client(|c| c.query(&sql, &[&owner, &lease_until_ms, &now_ms, &limit]))?;
        let mut out: Vec<EventRow> = rows.iter().map(row).collect();
        out.sort_by_key(|r| r.pos);
        Ok(out)
    }

    fn settle(
        &self,
        pos: i64,
        owner: &str,
        done: &[String],
        outcome: &Settled,
    ) -> Result<bool, StoreError> {
        let (status, next, error, delivered) = outcome.columns();
        let done = serde_json::to_string(done).unwrap_or_else(|_| "[]".into());
        let n = self.with_client(|c| {
            c.execute(
                "UPDATE partner_events SET status = $1, attempts = attempts + 1,
                   next_ms = COALESCE($2, next_ms), last_error = COALESCE($3, last_error),
                   delivered_ms = $4, done = $5, lease_owner = NULL, lease_until_ms = NULL
                 WHERE pos = $6 AND lease_owner = $7",
                &[&status, &next, &error, &delivered, &done, &pos, &owner],
            )
        })?;
        Ok(n == 1)
    }

    fn list_events(&self, filter: &EventFilter, limit: i64) -> Result<Vec<EventRow>, StoreError> {
        let (clause, mut args) = filter_sql(filter);
        args.push(Box::new(limit));
        let sql = format!(
            "SELECT {COLUMNS} FROM partner_events WHERE {clause} ORDER BY pos LIMIT ${}",
            args.len()
        );
        let rows = self.with_client(|c| c.query(&sql, &refs(&args)))?;
        Ok(rows.iter().map(row).collect())
    }

    fn redeliver(&self, filter: &EventFilter) -> Result<usize, StoreError> {
        let (clause, args) = filter_sql(filter);
        let sql = format!(
            "UPDATE partner_events SET status = 'pending', attempts = 0, next_ms = 0,
               done = '[]', lease_owner = NULL, lease_until_ms = NULL, delivered_ms = NULL
             WHERE {clause}"
        );
        let n = self.with_client(|c| c.execute(&sql, &refs(&args)))?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    fn event_stats(&self) -> Result<EventStats, StoreError> {
        let r = self.with_client(|c| {
            c.query_one(
                "SELECT COUNT(*) FILTER (WHERE status = 'pending'),
                        COUNT(*) FILTER (WHERE status = 'delivered'),
                        COUNT(*) FILTER (WHERE status = 'dead'),
                        COUNT(*) FILTER (WHERE status = 'pending' AND attempts > 0),
                        MIN(created_ms) FILTER (WHERE status = 'pending')
                 FROM partner_events",
                &[],
            )
        })?;
        Ok(EventStats {
            pending: r.get(0),
            delivered: r.get(1),
            dead: r.get(2),
            failing: r.get(3),
            oldest_pending_ms: r.get(4),
        })
    }

    fn dedupe_taken(&self, keys: &[String]) -> Result<Vec<String>, StoreError> {
        let rows = self.with_client(|c| {
            c.query(
                "SELECT dedupe FROM partner_events WHERE dedupe = ANY($1)",
                &[&keys],
            )
        })?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }
}
