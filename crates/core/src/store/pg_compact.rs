//! Compaction of the PostgreSQL change feed: the rows of `entity_changes`
//! that no follower should still need are deleted in small batches, and
//! the highest transaction id deleted is recorded as the feed's horizon
//! (`feed_horizon`), in the same transaction as each batch. A feed whose
//! position is older than the horizon may have lost rows: it must reload
//! its directory from the entities themselves (see `pg_feed`), never go on.
//!
//! Every bound is the database's own: a row is old by PostgreSQL's clock
//! (`at`, its transaction's `now()`), and the horizon is a transaction id
//! every transaction below which had ended when it was chosen, so the
//! replicas' clocks never matter. One replica compacts at a time (a
//! transaction-level try-lock: the others skip that round); a compaction
//! cut off mid-way (its replica killed, its connection lost) rolls back its
//! last batch whole, horizon included.
//!
//! It must never know the directory or what the changes mean.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use postgres::Client;

use super::pg_feed::connect;
use super::StoreError;

/// The advisory lock one compacting replica holds for a batch (the others
/// skip that round).
pub const COMPACT_LOCK: i64 = 0x5047_0004;

/// Rows deleted per transaction: short transactions, short row locks.
pub const COMPACT_BATCH: i64 = 1_000;

/// How old the previous round's bound must be before a round deletes
/// below it: every live feed reads at least every `FEED_POLL` (250 ms), so
/// one that kept up has read since, and its position is above the horizon.
pub const COMPACT_SETTLE: Duration = Duration::from_secs(5);

/// What one compaction pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Compacted {
    /// Rows deleted.
    pub deleted: u64,
    /// Whether another replica held the compaction lock (this pass stopped).
    pub skipped: bool,
}

/// One compaction pass. The first transaction reads the bound the previous
/// round left (`feed_horizon.bound`: the oldest transaction then running,
/// `pg_snapshot_xmin`), and leaves the current one for the next round; when
/// the previous bound is at least `settle` old (by the database's clock),
/// the horizon becomes the highest transaction id below it among the rows
/// older than `retention`. Every row at or below the horizon is then
/// deleted, [`COMPACT_BATCH`] per transaction, each of which raises
/// `feed_horizon.horizon` before its rows go.
///
/// Why the previous round's bound, not the current one: a feed that read
/// after it was taken (any feed that kept up, `settle` being longer than a
/// feed's poll) has a position whose oldest running transaction is at or
/// above it, so above the horizon: it never reloads. Every transaction
/// below the bound had ended when it was taken, so no row appears below
/// the horizon later. Stops when nothing is left, or when another replica
/// holds [`COMPACT_LOCK`] (`skipped`).
pub fn compact(
    c: &mut Client,
    retention: Duration,
    settle: Duration,
) -> Result<Compacted, postgres::Error> {
    let mut done = Compacted::default();
    let mut horizon: Option<String> = None;
    loop {
        let mut tx = c.transaction()?;
        let locked: bool = tx
            .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&COMPACT_LOCK])?
            .get(0);
        if !locked {
            done.skipped = true;
            return Ok(done);
        }
        if horizon.is_none() {
            horizon = choose_horizon(&mut tx, retention, settle)?;
            let Some(h) = horizon.as_deref() else {
                tx.commit()?;
                return Ok(done);
            };
            tx.execute(
                "UPDATE feed_horizon
                 SET horizon = GREATEST(COALESCE(horizon, $1::text::xid8), $1::text::xid8),
                     compacted_at = now()
                 WHERE id = 1",
                &[&h],
            )?;
        }
        let Some(h) = horizon.as_deref() else {
            return Ok(done);
        };
        let n = tx.execute(
            "DELETE FROM entity_changes WHERE seq IN (
               SELECT seq FROM entity_changes WHERE xid <= $1::text::xid8 LIMIT $2)",
            &[&h, &COMPACT_BATCH],
        )?;
        tx.commit()?;
        done.deleted += n;
        if n < COMPACT_BATCH as u64 {
            return Ok(done);
        }
    }
}

/// Inside the round's first transaction: the horizon this round deletes up
/// to (none when the previous bound is missing or younger than `settle`,
/// or no row is old enough), and the current bound left for the next round
/// (only once the previous one has served, so rounds of several replicas
/// in quick succession do not keep making it younger).
fn choose_horizon(
    tx: &mut postgres::Transaction<'_>,
    retention: Duration,
    settle: Duration,
) -> Result<Option<String>, postgres::Error> {
    let row = tx.query_one(
        "SELECT bound::text,
                COALESCE(bound IS NULL OR bound_at <= now() - make_interval(secs => $1), true)
         FROM feed_horizon WHERE id = 1 FOR UPDATE",
        &[&settle.as_secs_f64()],
    )?;
    let (bound, settled): (Option<String>, bool) = (row.get(0), row.get(1));
    if !settled {
        return Ok(None);
    }
    tx.execute(
        "UPDATE feed_horizon
         SET bound = pg_snapshot_xmin(pg_current_snapshot()), bound_at = now()
         WHERE id = 1",
        &[],
    )?;
    let Some(bound) = bound else {
        return Ok(None);
    };
    tx.query_one(
        "SELECT max(xid)::text FROM entity_changes
         WHERE at < now() - make_interval(secs => $1) AND xid < $2::text::xid8",
        &[&retention.as_secs_f64(), &bound],
    )
    .map(|r| r.get(0))
}

/// The feed's horizon (the highest transaction id whose changes may have
/// been deleted), as text; `None` before any compaction.
pub fn horizon(c: &mut impl postgres::GenericClient) -> Result<Option<String>, postgres::Error> {
    Ok(
        c.query_opt("SELECT horizon::text FROM feed_horizon WHERE id = 1", &[])?
            .and_then(|r| r.get(0)),
    )
}

/// A thread of `serve` that compacts the change feed every `every`, with
/// its own connection (re-made after a failure). Stops when dropped.
pub struct Compactor {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Compactor {
    /// Compact `url`'s change feed every `every`, keeping `retention`.
    pub fn start(url: &str, retention: Duration, every: Duration) -> Result<Self, StoreError> {
        let stop = Arc::new(AtomicBool::new(false));
        let (url, stop2) = (url.to_string(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("partnergate-compact".into())
            .spawn(move || compact_loop(&url, retention, every, &stop2))
            .map_err(|e| StoreError::Backend(e.to_string()))?;
        Ok(Compactor {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Compactor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn compact_loop(url: &str, retention: Duration, every: Duration, stop: &AtomicBool) {
    let tick = Duration::from_millis(100);
    let mut client: Option<Client> = None;
    loop {
        let mut waited = Duration::ZERO;
        while waited < every {
            if stop.load(Ordering::Acquire) {
                return;
            }
            std::thread::sleep(tick);
            waited += tick;
        }
        if client.as_ref().is_none_or(Client::is_closed) {
            client = connect(url).ok();
        }
        let Some(c) = client.as_mut() else {
            continue;
        };
        match compact(c, retention, COMPACT_SETTLE) {
            Ok(done) => {
                metrics::counter!("partnergate_feed_compacted_total").increment(done.deleted);
                if done.deleted > 0 {
                    tracing::info!(deleted = done.deleted, "change feed compacted");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "change feed compaction failed; trying again later");
                client = None;
            }
        }
    }
}
