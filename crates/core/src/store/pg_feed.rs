//! The PostgreSQL change feed: [`ChangeFeed`] follows `entity_changes` from
//! a connection of its own and hands each batch to the directory; a batch
//! is the changes of the transactions that committed between two snapshots
//! ([`read_changes`]), so a lower sequence that commits after a higher one
//! is still read, once. A feed whose position is older than the horizon of
//! compaction (`pg_compact`) may have lost rows: it reloads every entity
//! instead, through the reload its owner gives ([`FullLoad`]), and goes on
//! from the snapshot that load read. Also the connection both the store and
//! the feed open ([`connect`]), the notification channel and the
//! [`Notifier`] that wakes the other replicas' feeds after a write commits.
//!
//! It must never know the directory, the locks or the tables of writes.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, NoTls};

pub use super::FullLoad;
use super::{Change, CurrentRows, LoadedRow, StoreError};

/// How often the change feed polls when no notification arrives: the
/// staleness bound for other replicas' writes when NOTIFY is lost.
pub const FEED_POLL: Duration = Duration::from_millis(250);

/// The channel every write notifies and the feed listens on.
pub(super) const CHANNEL: &str = "partnergate_changes";

pub(super) fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// A connection to `url` (3 s to connect), named `partnergate`.
pub(super) fn connect(url: &str) -> Result<Client, StoreError> {
    let mut config: postgres::Config = url
        .parse()
        .map_err(|e| StoreError::Backend(format!("invalid PostgreSQL URL: {e}")))?;
    config.connect_timeout(Duration::from_secs(3));
    // A name the URL gives is kept (the audit shipper names its own).
    if config.get_application_name().is_none() {
        config.application_name("partnergate");
    }
    config.connect(NoTls).map_err(unavailable)
}

/// Wakes the feeds of every replica after this one's writes commit: a
/// `NOTIFY` sent from a thread and connection of its own, once for any
/// number of commits signalled while the last one was on its way. Not
/// inside the writes' transactions: PostgreSQL commits the transactions
/// that notify one at a time (a database-wide lock held through the commit
/// and its WAL flush), which made writes of different accounts queue.
pub(super) struct Notifier {
    state: Arc<(Mutex<(bool, bool)>, std::sync::Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Notifier {
    /// A notifier on `url` (connected when first needed).
    pub(super) fn start(url: &str) -> Result<Self, StoreError> {
        let state = Arc::new((Mutex::new((false, false)), std::sync::Condvar::new()));
        let (url, shared) = (url.to_string(), state.clone());
        let thread = std::thread::Builder::new()
            .name("partnergate-notify".into())
            .spawn(move || notify_loop(&url, &shared))
            .map_err(|e| StoreError::Backend(e.to_string()))?;
        Ok(Notifier {
            state,
            thread: Some(thread),
        })
    }

    /// A write committed: notify soon.
    pub(super) fn changed(&self) {
        let (lock, cv) = &*self.state;
        lock.lock().unwrap_or_else(|p| p.into_inner()).0 = true;
        cv.notify_one();
    }
}

impl Drop for Notifier {
    fn drop(&mut self) {
        let (lock, cv) = &*self.state;
        lock.lock().unwrap_or_else(|p| p.into_inner()).1 = true;
        cv.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// (pending, stopping) and its condition variable.
type NotifyState = (Mutex<(bool, bool)>, std::sync::Condvar);

fn notify_loop(url: &str, state: &NotifyState) {
    let (lock, cv) = state;
    // Connected before the first write: a notification is not held up by a
    // connection being made.
    let mut client: Option<Client> = connect(url).ok();
    loop {
        {
            let mut st = lock.lock().unwrap_or_else(|p| p.into_inner());
            while !st.0 && !st.1 {
                st = cv.wait(st).unwrap_or_else(|p| p.into_inner());
            }
            if st.1 {
                return;
            }
            st.0 = false;
        }
        if client.as_ref().is_none_or(Client::is_closed) {
            client = connect(url).ok();
        }
        let sent = client
            .as_mut()
            .map(|c| c.batch_execute(&format!("NOTIFY {CHANNEL}")));
        if !matches!(sent, Some(Ok(()))) {
            // The feeds poll anyway (FEED_POLL): a lost notification only
            // delays them. Retried on the next commit.
            client = None;
        }
    }
}

/// A row of `seq, uid, json` as a [`Change`].
pub(super) fn change(r: &postgres::Row) -> Change {
    Change {
        seq: r.get(0),
        uid: r.get(1),
        json: r.get(2),
    }
}

/// What the feed read after a snapshot ([`read_changes`]).
#[derive(Debug)]
pub enum Read {
    /// The changes of the transactions that committed after the snapshot,
    /// oldest sequence first, and the snapshot they were read in (the
    /// next read's start).
    Changes(Vec<Change>, String),
    /// Compaction deleted changes this snapshot had not seen: the reader
    /// must reload every entity (the horizon, as text, says how far).
    Stale(String),
}

/// The changes of the transactions that committed after snapshot `since`
/// and before a snapshot taken now, oldest sequence first, with that
/// snapshot: the next call's `since`. A transaction still running now is
/// in neither, so it is read by a later call whatever its sequence: no
/// change is skipped when a lower sequence commits after a higher one.
/// The horizon of compaction is read in the same snapshot as the rows: when
/// rows `since` had not seen may be gone, the answer is [`Read::Stale`].
pub fn read_changes(
    c: &mut impl postgres::GenericClient,
    since: &str,
) -> Result<Read, postgres::Error> {
    // One statement, so one snapshot: the snapshot taken, the horizon and
    // the rows are read together (a compaction commits its horizon with
    // its deletions, so either both are seen or neither). The first row
    // carries the snapshot and the horizon even when no change matches.
    let rows = c.query(
        "WITH s AS (
           SELECT pg_current_snapshot() AS now, pg_snapshot_xmin($1::text::pg_snapshot) AS since_xmin,
                  (SELECT horizon FROM feed_horizon WHERE id = 1) AS horizon
         )
         SELECT s.now::text, s.horizon::text, s.since_xmin <= s.horizon AS lost,
                c.seq, c.uid, c.json
         FROM s LEFT JOIN entity_changes c
           ON c.xid >= pg_snapshot_xmin($1::text::pg_snapshot)
          AND pg_visible_in_snapshot(c.xid, s.now)
          AND NOT pg_visible_in_snapshot(c.xid, $1::text::pg_snapshot)
          AND NOT COALESCE(s.since_xmin <= s.horizon, false)
         ORDER BY c.seq",
        &[&since],
    )?;
    let Some(first) = rows.first() else {
        return Ok(Read::Changes(Vec::new(), since.to_string()));
    };
    let (now, horizon, lost): (String, Option<String>, Option<bool>) =
        (first.get(0), first.get(1), first.get(2));
    if let (Some(h), Some(true)) = (horizon, lost) {
        return Ok(Read::Stale(h));
    }
    let changes = rows
        .iter()
        .filter_map(|r| {
            Some(Change {
                seq: r.get::<_, Option<i64>>(3)?,
                uid: r.get(4),
                json: r.get(5),
            })
        })
        .collect();
    Ok(Read::Changes(changes, now))
}

/// Every entity row, streamed to `each` from one snapshot: that snapshot
/// (where a feed goes on from) and the highest sequence it sees.
pub fn load_rows(
    c: &mut Client,
    each: &mut dyn FnMut(LoadedRow),
) -> Result<(String, i64), postgres::Error> {
    let mut tx = c
        .build_transaction()
        .isolation_level(postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()?;
    let row = tx.query_one(
        "SELECT pg_current_snapshot()::text, COALESCE(MAX(seq), 0) FROM entity_changes",
        &[],
    )?;
    let (snapshot, seq): (String, i64) = (row.get(0), row.get(1));
    // Streamed: rows are handed on as they arrive, never all held.
    let mut rows = tx.query_raw(
        "SELECT uid, entity_type, json, refs FROM entities ORDER BY uid",
        std::iter::empty::<&str>(),
    )?;
    while let Some(r) = rows.next()? {
        each(LoadedRow {
            uid: r.get(0),
            entity_type: r.get(1),
            json: r.get(2),
            refs: r.get(3),
        });
    }
    drop(rows);
    tx.commit()?;
    Ok((snapshot, seq))
}

/// Of a batch in sequence order, each entity's last change only: applied
/// together, memory never shows an entity's older state after its newer one.
fn last_of_each(batch: Vec<Change>) -> Vec<Change> {
    let mut last: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for (i, c) in batch.iter().enumerate() {
        last.insert(c.uid.as_str(), i);
    }
    let keep: std::collections::HashSet<usize> = last.into_values().collect();
    batch
        .into_iter()
        .enumerate()
        .filter(|(i, _)| keep.contains(i))
        .map(|(_, c)| c)
        .collect()
}

/// The rows of `uids` as committed now (not as of a snapshot): each uid
/// with its entity JSON, or `None` when it has no row. A batch is applied
/// as these states, never as the changes' own texts: a change the feed
/// reads late may be older than what this replica's memory already holds.
pub fn current_rows(
    c: &mut impl postgres::GenericClient,
    uids: &[String],
) -> Result<Vec<(String, Option<String>)>, postgres::Error> {
    let mut found: std::collections::HashMap<String, String> = c
        .query(
            "SELECT uid, json FROM entities WHERE uid = ANY($1)",
            &[&uids],
        )?
        .into_iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    Ok(uids.iter().map(|u| (u.clone(), found.remove(u))).collect())
}

/// What a feed hands its batches to ([`ChangeFeed::start`]).
pub trait Follower: Send + 'static {
    /// Apply a batch of changes, in order, with a reader of the batch's
    /// rows as committed now.
    fn apply(&self, changes: Vec<Change>, current: &mut CurrentRows<'_>) -> Result<(), StoreError>;
    /// Replace everything with every row `load` streams: the feed lost
    /// changes to compaction.
    fn reload(&self, load: &mut FullLoad<'_>) -> Result<(), StoreError>;
}

/// Follows `entity_changes` from its own connection and hands each batch of
/// changes, in order, to its [`Follower`], with a reader of the batch's rows as
/// committed now ([`CurrentRows`]). A batch whose `apply` fails is read
/// again after a reconnect: the feed moves past a batch only once it was
/// applied. A position older than the compaction horizon makes the
/// follower reload every entity instead ([`Follower::reload`]), and the
/// feed goes on from the snapshot of that load. Stops when dropped.
pub struct ChangeFeed {
    stop: Arc<AtomicBool>,
    last: Arc<AtomicI64>,
    connected: Arc<AtomicBool>,
    reloads: Arc<AtomicI64>,
    position: Arc<Mutex<String>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ChangeFeed {
    /// Start after snapshot `from` (`pg_snapshot` as text: what the
    /// directory's load saw, [`PgStore::loaded_snapshot`]); `seq` is the
    /// highest sequence that load saw.
    pub fn start(
        url: &str,
        (from, seq): (String, i64),
        follower: impl Follower,
    ) -> Result<Self, StoreError> {
        let stop = Arc::new(AtomicBool::new(false));
        let last = Arc::new(AtomicI64::new(seq));
        let connected = Arc::new(AtomicBool::new(false));
        let reloads = Arc::new(AtomicI64::new(0));
        let position = Arc::new(Mutex::new(from.clone()));
        let state = FeedState {
            stop: stop.clone(),
            last: last.clone(),
            connected: connected.clone(),
            reloads: reloads.clone(),
            position: position.clone(),
        };
        let url = url.to_string();
        let thread = std::thread::Builder::new()
            .name("partnergate-feed".into())
            .spawn(move || feed_loop(&url, from, &state, &follower))
            .map_err(|e| StoreError::Backend(e.to_string()))?;
        Ok(ChangeFeed {
            stop,
            last,
            connected,
            reloads,
            position,
            thread: Some(thread),
        })
    }

    /// The snapshot (`pg_snapshot` as text) the feed has read up to: a
    /// feed started again from it misses nothing.
    pub fn position(&self) -> String {
        self.position
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// How many times the feed found its position compacted away and had
    /// every entity reloaded.
    pub fn reloads(&self) -> i64 {
        self.reloads.load(Ordering::Acquire)
    }

    /// The highest sequence applied (the feed reads by snapshot: a lower
    /// one may still come).
    pub fn last_seq(&self) -> i64 {
        self.last.load(Ordering::Acquire)
    }

    /// Is the feed's connection up?
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }
}

impl Drop for ChangeFeed {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The feed thread's shared counters.
struct FeedState {
    stop: Arc<AtomicBool>,
    last: Arc<AtomicI64>,
    connected: Arc<AtomicBool>,
    reloads: Arc<AtomicI64>,
    position: Arc<Mutex<String>>,
}

impl FeedState {
    fn moved_to(&self, since: &str) {
        since.clone_into(&mut self.position.lock().unwrap_or_else(|p| p.into_inner()));
    }
}

fn feed_loop(url: &str, mut since: String, state: &FeedState, follower: &dyn Follower) {
    let FeedState {
        stop,
        last,
        connected,
        ..
    } = state;
    let mut backoff = Duration::from_millis(100);
    while !stop.load(Ordering::Acquire) {
        let mut client = match connect(url) {
            Ok(c) => c,
            Err(e) => {
                connected.store(false, Ordering::Release);
                tracing::warn!(error = %e, "change feed: database unreachable; retrying");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        if let Err(e) = client.batch_execute(&format!("LISTEN {CHANNEL}")) {
            tracing::warn!(error = %e, "change feed: LISTEN failed; polling only");
        }
        connected.store(true, Ordering::Release);
        tracing::info!(from = last.load(Ordering::Acquire), "change feed connected");
        loop {
            if stop.load(Ordering::Acquire) {
                return;
            }
            // Catch up completely, then wait for a notification or the poll tick.
            let failed = !catch_up(&mut client, &mut since, state, follower);
            if failed || client.is_closed() {
                connected.store(false, Ordering::Release);
                break;
            }
            let mut notifications = client.notifications();
            let mut waiter = notifications.timeout_iter(FEED_POLL);
            match waiter.next() {
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "change feed: connection lost; reconnecting");
                    connected.store(false, Ordering::Release);
                    break;
                }
            }
        }
    }
}

/// One read of the feed, applied (or the follower reloaded): whether it
/// went through (else the connection is made again and it is read again).
fn catch_up(
    client: &mut Client,
    since: &mut String,
    state: &FeedState,
    follower: &dyn Follower,
) -> bool {
    let FeedState { last, reloads, .. } = state;
    let failed = match read_changes(client, since) {
        Ok(Read::Changes(batch, now)) => {
            let end = batch.iter().map(|c| c.seq).max();
            let applied = if batch.is_empty() {
                Ok(())
            } else {
                let mut current = |uids: &[String]| current_rows(client, uids).map_err(unavailable);
                follower.apply(last_of_each(batch), &mut current)
            };
            match applied {
                Ok(()) => {
                    if let Some(end) = end {
                        last.fetch_max(end, Ordering::AcqRel);
                    }
                    *since = now;
                    state.moved_to(since);
                    false
                }
                Err(e) => {
                    tracing::warn!(error = %e, "change feed: a batch could not be applied; reading it again");
                    true
                }
            }
        }
        Ok(Read::Stale(horizon)) => {
            tracing::warn!(%horizon, since = %since,
                        "change feed: changes this replica had not read were compacted; reloading every entity");
            match reload(client, follower) {
                Ok((snapshot, seq)) => {
                    reloads.fetch_add(1, Ordering::AcqRel);
                    metrics::counter!("partnergate_feed_reloads_total").increment(1);
                    last.fetch_max(seq, Ordering::AcqRel);
                    *since = snapshot;
                    state.moved_to(since);
                    false
                }
                Err(e) => {
                    tracing::warn!(error = %e, "change feed: the reload failed; trying again");
                    true
                }
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "change feed: read failed; reconnecting");
            true
        }
    };
    !failed
}

/// Have `follower` reload every entity from one snapshot: that snapshot
/// and the highest sequence it saw.
fn reload(client: &mut Client, follower: &dyn Follower) -> Result<(String, i64), StoreError> {
    let mut position = None;
    let mut load = |each: &mut dyn FnMut(LoadedRow)| -> Result<(), StoreError> {
        position = Some(load_rows(client, each).map_err(unavailable)?);
        Ok(())
    };
    follower.reload(&mut load)?;
    position.ok_or_else(|| StoreError::Backend("the reload read no snapshot".into()))
}
