//! The PostgreSQL change feed: [`ChangeFeed`] follows `entity_changes` from
//! a connection of its own and hands each batch to the directory; a batch
//! is the changes of the transactions that committed between two snapshots
//! ([`read_changes`]), so a lower sequence that commits after a higher one
//! is still read, once. Also the connection both the store and the feed
//! open ([`connect`]) and the notification channel.
//!
//! It must never know the directory, the locks or the tables of writes.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, NoTls};

use super::{Change, CurrentRows, StoreError};

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

/// A row of `seq, uid, json` as a [`Change`].
pub(super) fn change(r: &postgres::Row) -> Change {
    Change {
        seq: r.get(0),
        uid: r.get(1),
        json: r.get(2),
    }
}

/// The changes of the transactions that committed after snapshot `since`
/// and before a snapshot taken now, oldest sequence first, with that
/// snapshot: the next call's `since`. A transaction still running now is
/// in neither, so it is read by a later call whatever its sequence: no
/// change is skipped when a lower sequence commits after a higher one.
pub fn read_changes(
    c: &mut impl postgres::GenericClient,
    since: &str,
) -> Result<(Vec<Change>, String), postgres::Error> {
    let now: String = c
        .query_one("SELECT pg_current_snapshot()::text", &[])?
        .get(0);
    let rows = c.query(
        "SELECT seq, uid, json FROM entity_changes
         WHERE xid >= pg_snapshot_xmin($1::text::pg_snapshot)
           AND pg_visible_in_snapshot(xid, $2::text::pg_snapshot)
           AND NOT pg_visible_in_snapshot(xid, $1::text::pg_snapshot)
         ORDER BY seq",
        &[&since, &now],
    )?;
    Ok((rows.iter().map(change).collect(), now))
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

/// Follows `entity_changes` from its own connection and hands each batch of
/// changes, in order, to `apply`, with a reader of the batch's rows as
/// committed now ([`CurrentRows`]). A batch whose `apply` fails is read
/// again after a reconnect: the feed moves past a batch only once it was
/// applied. Stops when dropped.
pub struct ChangeFeed {
    stop: Arc<AtomicBool>,
    last: Arc<AtomicI64>,
    connected: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ChangeFeed {
    /// Start after snapshot `from` (`pg_snapshot` as text: what the
    /// directory's load saw, [`PgStore::loaded_snapshot`]); `seq` is the
    /// highest sequence that load saw.
    pub fn start(
        url: &str,
        (from, seq): (String, i64),
        apply: impl Fn(Vec<Change>, &mut CurrentRows<'_>) -> Result<(), StoreError> + Send + 'static,
    ) -> Result<Self, StoreError> {
        let stop = Arc::new(AtomicBool::new(false));
        let last = Arc::new(AtomicI64::new(seq));
        let connected = Arc::new(AtomicBool::new(false));
        let (url, stop2, last2, connected2) = (
            url.to_string(),
            stop.clone(),
            last.clone(),
            connected.clone(),
        );
        let thread = std::thread::Builder::new()
            .name("partnergate-feed".into())
            .spawn(move || feed_loop(&url, from, (&stop2, &last2, &connected2), &apply))
            .map_err(|e| StoreError::Backend(e.to_string()))?;
        Ok(ChangeFeed {
            stop,
            last,
            connected,
            thread: Some(thread),
        })
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

/// What the feed hands each batch to.
type Apply = dyn Fn(Vec<Change>, &mut CurrentRows<'_>) -> Result<(), StoreError>;

fn feed_loop(
    url: &str,
    mut since: String,
    (stop, last, connected): (&AtomicBool, &AtomicI64, &AtomicBool),
    apply: &Apply,
) {
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
            let mut failed = false;
            match read_changes(&mut client, &since) {
                Ok((batch, now)) => {
                    let end = batch.iter().map(|c| c.seq).max();
                    let applied = if batch.is_empty() {
                        Ok(())
                    } else {
                        let mut current =
                            |uids: &[String]| current_rows(&mut client, uids).map_err(unavailable);
                        apply(last_of_each(batch), &mut current)
                    };
                    match applied {
                        Ok(()) => {
                            if let Some(end) = end {
                                last.fetch_max(end, Ordering::AcqRel);
                            }
                            since = now;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "change feed: a batch could not be applied; reading it again");
                            failed = true;
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "change feed: read failed; reconnecting");
                    failed = true;
                }
            }
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
