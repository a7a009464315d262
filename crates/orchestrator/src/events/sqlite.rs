//! The events outbox on the embedded SQLite store: the rows written inside
//! an operation's transaction (`keep_events_in`, the account's next
//! sequence number read there: `BEGIN IMMEDIATE` holds every writer off),
//! and [`EventStore`] for the one delivering process.

use rusqlite::{params, params_from_iter, Connection, Row, ToSql};

use crate::events::outbox::{
    done_list, filter_clause, status_of, EventFilter, EventRow, EventStats, EventStore,
    FilterValue, NewEvent, Settled, COLUMNS,
};
use partnergate_core::store::sqlite::SqliteStore;
use partnergate_core::store::StoreError;

/// Write `events` in the transaction `conn` is in, each with its
/// account's next sequence number; one whose `dedupe` key is taken is
/// left out.
pub(crate) fn keep_events_in(conn: &Connection, events: &[NewEvent]) -> rusqlite::Result<()> {
    for e in events {
        let seq: i64 = conn
            .prepare_cached(
                "SELECT COALESCE(MAX(seq), 0) + 1 FROM partner_events WHERE account = ?1",
            )?
            .query_row(params![e.account], |r| r.get(0))?;
        conn.prepare_cached(
            "INSERT INTO partner_events (id, account, seq, kind, user_id, actor, change_id,
               decision_id, created_ms, data, dedupe, next_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 0)
             ON CONFLICT(dedupe) DO NOTHING",
        )?
        .execute(params![
            e.id,
            e.account,
            seq,
            e.kind,
            e.user,
            e.actor,
            e.change_id,
            e.decision_id,
            e.created_ms,
            e.data,
            e.dedupe
        ])?;
    }
    Ok(())
}

fn row(r: &Row<'_>) -> rusqlite::Result<EventRow> {
    Ok(EventRow {
        pos: r.get(0)?,
        id: r.get(1)?,
        account: r.get(2)?,
        seq: r.get(3)?,
        kind: r.get(4)?,
        user: r.get(5)?,
        actor: r.get(6)?,
        change_id: r.get(7)?,
        decision_id: r.get(8)?,
        created_ms: r.get(9)?,
        data: r.get(10)?,
        status: status_of(&r.get::<_, String>(11)?),
        attempts: r.get(12)?,
        next_ms: r.get(13)?,
        done: done_list(&r.get::<_, String>(14)?),
        last_error: r.get(15)?,
        delivered_ms: r.get(16)?,
    })
}

/// The `WHERE` of a filter and its parameters (from `?1`).
fn filter_sql(f: &EventFilter) -> (String, Vec<Box<dyn ToSql>>) {
    let (sql, values) = filter_clause(f, |n| format!("?{n}"));
    let args = values
        .into_iter()
        .map(|v| -> Box<dyn ToSql> {
            match v {
                FilterValue::Text(t) => Box::new(t),
                FilterValue::Int(i) => Box::new(i),
            }
        })
        .collect();
    (sql, args)
}

impl EventStore for SqliteStore {
    fn claim(
        &self,
        owner: &str,
        now_ms: i64,
        lease_until_ms: i64,
        limit: i64,
    ) -> Result<Vec<EventRow>, StoreError> {
        let conn = self.conn()?;
        let sql = format!(
            "UPDATE partner_events SET lease_owner = ?1, lease_until_ms = ?2
             WHERE pos IN (
               SELECT h.pos FROM partner_events h
               WHERE h.status = 'pending' AND h.next_ms <= ?3
                 AND (h.lease_until_ms IS NULL OR h.lease_until_ms < ?3)
                 AND NOT EXISTS (SELECT 1 FROM partner_events p WHERE p.account = h.account
                                 AND p.status = 'pending' AND p.seq < h.seq)
               ORDER BY h.pos LIMIT ?4)
             RETURNING {COLUMNS}"
        );
        let mut stmt = conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(params![owner, lease_until_ms, now_ms, limit], row)?;
        let mut out = rows.collect::<Result<Vec<_>, _>>()?;
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
        let conn = self.conn()?;
        let (status, next, error, delivered) = outcome.columns();
        let done = serde_json::to_string(done).unwrap_or_else(|_| "[]".into());
        let n = conn
            .prepare_cached(
                "UPDATE partner_events SET status = ?1, attempts = attempts + 1,
                   next_ms = COALESCE(?2, next_ms), last_error = COALESCE(?3, last_error),
                   delivered_ms = ?4, done = ?5, lease_owner = NULL, lease_until_ms = NULL
                 WHERE pos = ?6 AND lease_owner = ?7",
            )?
            .execute(params![status, next, error, delivered, done, pos, owner])?;
        Ok(n == 1)
    }

    fn list_events(&self, filter: &EventFilter, limit: i64) -> Result<Vec<EventRow>, StoreError> {
        let conn = self.conn()?;
        let (clause, mut args) = filter_sql(filter);
        args.push(Box::new(limit));
        let sql = format!(
            "SELECT {COLUMNS} FROM partner_events WHERE {clause} ORDER BY pos LIMIT ?{}",
            args.len()
        );
        let mut stmt = conn.prepare(&sql)?;
        let rows = stmt.query_map(params_from_iter(args.iter()), row)?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    fn redeliver(&self, filter: &EventFilter) -> Result<usize, StoreError> {
        let conn = self.conn()?;
        let (clause, args) = filter_sql(filter);
        let sql = format!(
            "UPDATE partner_events SET status = 'pending', attempts = 0, next_ms = 0,
               done = '[]', lease_owner = NULL, lease_until_ms = NULL, delivered_ms = NULL
             WHERE {clause}"
        );
        Ok(conn.execute(&sql, params_from_iter(args.iter()))?)
    }

    fn event_stats(&self) -> Result<EventStats, StoreError> {
        let conn = self.conn()?;
        Ok(conn.query_row(
            "SELECT COALESCE(SUM(status = 'pending'), 0), COALESCE(SUM(status = 'delivered'), 0),
                    COALESCE(SUM(status = 'dead'), 0),
                    COALESCE(SUM(status = 'pending' AND attempts > 0), 0),
                    MIN(CASE WHEN status = 'pending' THEN created_ms END)
             FROM partner_events",
            [],
            |r| {
                Ok(EventStats {
                    pending: r.get(0)?,
                    delivered: r.get(1)?,
                    dead: r.get(2)?,
                    failing: r.get(3)?,
                    oldest_pending_ms: r.get(4)?,
                })
            },
        )?)
    }

    fn dedupe_taken(&self, keys: &[String]) -> Result<Vec<String>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached("SELECT 1 FROM partner_events WHERE dedupe = ?1")?;
        let mut out = Vec::new();
        for k in keys {
            if stmt.exists(params![k])? {
                out.push(k.clone());
            }
        }
        Ok(out)
    }
}
