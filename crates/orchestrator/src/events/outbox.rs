//! The events outbox as data and as a store: a new event as an operation's
//! transaction writes it ([`NewEvent`]), an event as stored with its
//! delivery state ([`EventRow`], [`EventStatus`]), its payload (the webhook
//! body and the `GET /v1/events` item are the same JSON), and
//! [`EventStore`], what delivery, the listing and redelivery do with the
//! table (leases, outcomes, filters). The SQL is in `events::sqlite` and
//! `events::postgres`; it never knows HTTP or the command line.

use serde::Serialize;
use serde_json::{json, Value};

use partnergate_core::store::StoreError;

/// An event written in its change's own transaction (see
/// [`crate::events::WriteTx::emit`]); the store gives it the account's next
/// sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// `evt_` and a UUIDv7: the `webhook-id` a receiver deduplicates on.
    pub id: String,
    /// The account it is about (its events are delivered in order).
    pub account: String,
    /// The wire name of its [`crate::events::EventKind`].
    pub kind: String,
    /// The partner user's id, if it is about one.
    pub user: Option<String>,
    /// Who made the change (`User::"owner"`, `system`).
    pub actor: String,
    /// The change record's `change_id` in the decision log, if any.
    pub change_id: Option<String>,
    /// The Allow decision the change rests on, if any.
    pub decision_id: Option<String>,
    /// The committing transaction's clock (ms since the epoch).
    pub created_ms: i64,
    /// The payload's `data` (JSON object text).
    pub data: String,
    /// A key that makes the event once-only (`ending_soon:USER:END:DAYS`):
    /// a second event with the same key is not written.
    pub dedupe: Option<String>,
}

/// Where an event is in its delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventStatus {
    /// Not yet answered 2xx by every endpoint (retried, in account order).
    Pending,
    /// Every endpoint answered 2xx.
    Delivered,
    /// Given up after the configured attempts (redeliver to try again).
    Dead,
}

impl EventStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventStatus::Pending => "pending",
            EventStatus::Delivered => "delivered",
            EventStatus::Dead => "dead",
        }
    }

    /// The status of a stored name; `None` for another text.
    pub fn parse(s: &str) -> Option<EventStatus> {
        [
            EventStatus::Pending,
            EventStatus::Delivered,
            EventStatus::Dead,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// An event as stored, with its delivery state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventRow {
    /// Its position in the outbox (increasing in insertion order; the
    /// listing's cursor).
    pub pos: i64,
    /// The event id (`webhook-id`).
    pub id: String,
    /// The account.
    pub account: String,
    /// The account's sequence number (1, 2, ...: the order of delivery).
    pub seq: i64,
    /// The wire name of its kind.
    pub kind: String,
    /// The partner user's id, if any.
    pub user: Option<String>,
    /// Who made the change.
    pub actor: String,
    /// The change record's `change_id`, if any.
    pub change_id: Option<String>,
    /// The Allow decision's id, if any.
    pub decision_id: Option<String>,
    /// When the change committed (ms since the epoch).
    pub created_ms: i64,
    /// The payload's `data` (JSON object text).
    #[serde(skip)]
    pub data: String,
    /// The delivery state.
    pub status: EventStatus,
    /// Delivery attempts made.
    pub attempts: i64,
    /// The next attempt's earliest time (ms), while pending.
    pub next_ms: i64,
    /// The endpoints that answered 2xx (by name).
    pub done: Vec<String>,
    /// The last failure, if any.
    pub last_error: Option<String>,
    /// When the last endpoint answered 2xx (ms), if delivered.
    pub delivered_ms: Option<i64>,
}

impl EventRow {
    /// The webhook body (and the listing's `event`): Standard Webhooks'
    /// `{type, timestamp, data}`, `data` carrying the event id, the
    /// account's sequence number and what the change wrote.
    pub fn payload(&self) -> Value {
        let mut data: Value = serde_json::from_str(&self.data).unwrap_or_else(|_| json!({}));
        if let Some(map) = data.as_object_mut() {
            map.insert("event_id".into(), json!(self.id));
            map.insert("account_seq".into(), json!(self.seq));
        }
        json!({
            "type": self.kind,
            "timestamp": partnergate_core::clock::format_ms(self.created_ms),
            "data": data,
        })
    }
}

/// How a delivery attempt of one event ended, for [`EventStore::settle`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    /// Every endpoint has answered 2xx.
    Delivered {
        /// When (ms).
        at_ms: i64,
    },
    /// Some endpoint failed: try again at `next_ms` (the endpoints that
    /// answered 2xx are in `done`).
    Retry {
        /// The next attempt's earliest time (ms).
        next_ms: i64,
        /// Why.
        error: String,
    },
    /// Some endpoint failed and the attempts are spent.
    Dead {
        /// Why.
        error: String,
    },
}

/// Which events a listing or a redelivery takes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Only this account's.
    pub account: Option<String>,
    /// Only this kind (wire name).
    pub kind: Option<String>,
    /// Only this status.
    pub status: Option<EventStatus>,
    /// Only this event.
    pub id: Option<String>,
    /// Only events after this position (the listing's cursor).
    pub after: Option<i64>,
}

/// The outbox's counts for the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct EventStats {
    /// Events not yet delivered (nor dead).
    pub pending: i64,
    /// Events delivered.
    pub delivered: i64,
    /// Events given up (dead letters).
    pub dead: i64,
    /// Pending events whose last attempt failed.
    pub failing: i64,
    /// The creation time (ms) of the oldest pending event, if any.
    pub oldest_pending_ms: Option<i64>,
}

/// The outbox table, for delivery, the listing and redelivery.
pub trait EventStore: Send + Sync {
    /// Lease up to `limit` events to `owner` until `lease_until_ms`: for
    /// each account at most its next event (the pending one with the
    /// lowest sequence number), and only when that one is due at `now_ms`
    /// and not leased by another owner (a lease past its time is taken
    /// over). On PostgreSQL, replicas claiming at once never lease the same
    /// event (`FOR UPDATE SKIP LOCKED`).
    fn claim(
        &self,
        owner: &str,
        now_ms: i64,
        lease_until_ms: i64,
        limit: i64,
    ) -> Result<Vec<EventRow>, StoreError>;
    /// Record an attempt's outcome of event `pos` leased by `owner` (one
    /// attempt more, the endpoints `done`, the lease released); nothing when
    /// the lease has gone to another owner. Returns whether it was recorded.
    fn settle(
        &self,
        pos: i64,
        owner: &str,
        done: &[String],
        outcome: &Settled,
    ) -> Result<bool, StoreError>;
    /// At most `limit` events the filter takes, by position.
    fn list_events(&self, filter: &EventFilter, limit: i64) -> Result<Vec<EventRow>, StoreError>;
    /// Deliver again the events the filter takes (to every endpoint): each
    /// made pending, due now, with no attempts, no endpoint done and no
    /// lease. Returns how many.
    fn redeliver(&self, filter: &EventFilter) -> Result<usize, StoreError>;
    /// The counts for the metrics.
    fn event_stats(&self) -> Result<EventStats, StoreError>;
    /// Which of `keys` some event was already written with (`dedupe`).
    fn dedupe_taken(&self, keys: &[String]) -> Result<Vec<String>, StoreError>;
}

/// The pause before attempt `attempts + 1` after `attempts` failed ones:
/// `base` doubled per failure, at most `max`, then a random part of up to
/// a half taken off (jitter), so retries of many events spread out.
pub fn backoff(attempts: u32, base_ms: u64, max_ms: u64) -> u64 {
    let doubled = base_ms.saturating_mul(1u64 << attempts.saturating_sub(1).min(32));
    let capped = doubled.min(max_ms).max(1);
    let jitter = rand::random::<u64>() % (capped / 2 + 1);
    capped - jitter
}

impl Settled {
    /// The stored columns of an outcome: status, next attempt, error,
    /// delivery time.
    pub(crate) fn columns(&self) -> (&'static str, Option<i64>, Option<&str>, Option<i64>) {
        match self {
            Settled::Delivered { at_ms } => ("delivered", None, None, Some(*at_ms)),
            Settled::Retry { next_ms, error } => ("pending", Some(*next_ms), Some(error), None),
            Settled::Dead { error } => ("dead", None, Some(error), None),
        }
    }
}

/// One parameter of a filter's `WHERE`.
pub(crate) enum FilterValue {
    Text(String),
    Int(i64),
}

/// A filter's `WHERE` (`1 = 1` for none) with its parameters in order,
/// each placeholder written by `placeholder(n)` (n from 1).
pub(crate) fn filter_clause(
    f: &EventFilter,
    placeholder: impl Fn(usize) -> String,
) -> (String, Vec<FilterValue>) {
    let mut clauses = Vec::new();
    let mut args = Vec::new();
    let text = |s: &str| FilterValue::Text(s.to_string());
    let wanted = [
        ("account", f.account.as_deref().map(text)),
        ("kind", f.kind.as_deref().map(text)),
        ("status", f.status.map(|s| text(s.as_str()))),
        ("id", f.id.as_deref().map(text)),
    ];
    for (column, value) in wanted {
        if let Some(v) = value {
            args.push(v);
            clauses.push(format!("{column} = {}", placeholder(args.len())));
        }
    }
    if let Some(p) = f.after {
        args.push(FilterValue::Int(p));
        clauses.push(format!("pos > {}", placeholder(args.len())));
    }
    let sql = if clauses.is_empty() {
        "1 = 1".to_string()
    } else {
        clauses.join(" AND ")
    };
    (sql, args)
}

/// The columns every query of an [`EventRow`] reads, in order.
pub(crate) const COLUMNS: &str = "pos, id, account, seq, kind, user_id, actor, change_id, \
     decision_id, created_ms, data, status, attempts, next_ms, done, last_error, delivered_ms";

/// The stored `done` list (JSON array text) read back; unreadable: none.
pub(crate) fn done_list(text: &str) -> Vec<String> {
    serde_json::from_str(text).unwrap_or_default()
}

/// A stored status read back (an unknown one reads as pending: it is
/// tried again rather than forgotten).
pub(crate) fn status_of(text: &str) -> EventStatus {
    EventStatus::parse(text).unwrap_or(EventStatus::Pending)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_at_most_half_taken_off() {
        for _ in 0..200 {
            let first = backoff(1, 1000, 60_000);
            assert!((500..=1000).contains(&first), "{first}");
            let fourth = backoff(4, 1000, 60_000);
            assert!((4000..=8000).contains(&fourth), "{fourth}");
            let late = backoff(40, 1000, 60_000);
            assert!((30_000..=60_000).contains(&late), "{late}");
        }
    }
}
