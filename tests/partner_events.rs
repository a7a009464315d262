//! The lifecycle events an orchestrator write leaves in the outbox,
//! in-process over the shipped pack on SQLite and PostgreSQL (the same
//! scenario on both), with the test's clock: one event per change, in the
//! change's transaction (a refused write leaves none), naming its change
//! record, decision and the transaction's clock, numbered per account;
//! "access ending soon" once per end and lead time, again after a renewal;
//! the sweep's end by `system`.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use partnergate::clock::ManualClock;
use partnergate::orchestrator::access::AccessRequest;
use partnergate::orchestrator::events::{EventFilter, EventRow};
use partnergate::orchestrator::{Orchestrator, WriteScope};
use partnergate::store::StoreSpec;

/// 2027-01-01T00:00:00Z.
const T: i64 = 1_798_761_600_000;
const DAY: i64 = 86_400_000;

fn events(o: &Orchestrator) -> Vec<EventRow> {
    o.events()
        .list_events(&EventFilter::default(), 1000)
        .unwrap()
}

fn kinds(o: &Orchestrator) -> Vec<String> {
    events(o).into_iter().map(|e| e.kind).collect()
}

fn lifecycle(o: &Orchestrator, clock: &ManualClock) {
    common::orchestrator::seed_acme(
        o,
        ["ann", "bob"]
            .iter()
            .map(|n| format!("{n}@goldco.example"))
            .collect(),
    );
    let call = o.with(WriteScope {
        request_id: Some("req-1".into()),
        ..WriteScope::default()
    });
    let leads = [Duration::from_secs(7 * 86_400), Duration::from_secs(86_400)];
    let ten_days = AccessRequest {
        duration: Some("10d".into()),
        scopes: Some(vec!["users".into()]),
        ..AccessRequest::default()
    };
    let ann = call
        .invite_partner(
            "acme",
            "owner",
            "ann@goldco.example",
            None,
            (None, &ten_days),
        )
        .unwrap()
        .user
        .id;
    call.accept(&ann).unwrap();
    call.suspend(&ann, "owner").unwrap();
    // Refused writes leave no event.
    assert!(call.suspend(&ann, "owner").is_err());
    assert!(call.suspend(&ann, &ann).is_err());
    call.resume(&ann, "owner").unwrap();
    assert_eq!(
        kinds(o),
        [
            "partner.invited",
            "partner.accepted",
            "partner.suspended",
            "partner.resumed"
        ]
    );
    let e = events(o);
    for (i, ev) in e.iter().enumerate() {
        assert_eq!(ev.seq, i64::try_from(i).unwrap() + 1);
        assert_eq!(ev.account, "acme");
        assert_eq!(ev.created_ms, T, "the transaction's clock");
        assert_eq!(ev.user.as_deref(), Some(ann.as_str()));
        assert!(ev.change_id.is_some(), "{ev:?}");
        let data: serde_json::Value = serde_json::from_str(&ev.data).unwrap();
        assert_eq!(data["request_id"], "req-1");
    }
    assert_eq!(e[1].actor, format!("User::\"{ann}\""));
    assert!(e[1].decision_id.is_none(), "accept asks no policy question");
    assert!(e[2].decision_id.is_some() && e[2].actor == "User::\"owner\"");

    // Nothing ends within 7 days yet.
    assert_eq!(call.announce_ending(&leads).unwrap(), 0);
    clock.set(T + 3 * DAY + 1);
    assert_eq!(call.announce_ending(&leads).unwrap(), 1, "the 7-day lead");
    assert_eq!(call.announce_ending(&leads).unwrap(), 0, "once");
    clock.set(T + 9 * DAY + 1);
    assert_eq!(call.announce_ending(&leads).unwrap(), 1, "the 1-day lead");
    assert_eq!(call.announce_ending(&leads).unwrap(), 0, "once");
    // A renewal is a new end: new announcements when it nears.
    call.renew(
        &ann,
        "owner",
        &AccessRequest {
            duration: Some("10d".into()),
            ..AccessRequest::default()
        },
    )
    .unwrap();
    assert_eq!(call.announce_ending(&leads).unwrap(), 0);
    clock.set(T + 9 * DAY + 1 + 4 * DAY);
    assert_eq!(call.announce_ending(&leads).unwrap(), 1);
    // Past the end: the sweep ends it, by `system`.
    clock.set(T + 30 * DAY);
    assert_eq!(call.end_expired().unwrap().len(), 1);
    let e = events(o);
    let tail: Vec<&str> = e[4..].iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        tail,
        [
            "partner.access_ending_soon",
            "partner.access_ending_soon",
            "partner.renewed",
            "partner.access_ending_soon",
            "partner.access_ended"
        ]
    );
    let leads_seen: Vec<String> = [4, 5, 7]
        .iter()
        .map(|i| {
            serde_json::from_str::<serde_json::Value>(&e[*i].data).unwrap()["lead"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(leads_seen, ["7d", "1d", "7d"]);
    assert_eq!(e[8].actor, "system");
    assert_eq!(e[8].created_ms, T + 30 * DAY);
    assert!(e[8].change_id.is_some());
    // A dismissed partner (here still invited) has its event.
    let bob = call
        .invite_partner(
            "acme",
            "owner",
            "bob@goldco.example",
            None,
            (None, &ten_days),
        )
        .unwrap()
        .user
        .id;
    call.dismiss(&bob, "owner").unwrap();
    let last: Vec<String> = kinds(o).into_iter().skip(9).collect();
    assert_eq!(last, ["partner.invited", "partner.dismissed"]);
    // Listing filters.
    let f = EventFilter {
        kind: Some("partner.access_ending_soon".into()),
        ..EventFilter::default()
    };
    assert_eq!(o.events().list_events(&f, 100).unwrap().len(), 3);
}

fn run(store: StoreSpec, dir: &Path) {
    let clock = Arc::new(ManualClock::at(T));
    let (o, wired) = common::orchestrator::open(store, dir, (None, "decisions.jsonl"), &clock);
    lifecycle(&o, &clock);
    wired.shutdown_log();
}

#[test]
fn each_lifecycle_change_writes_its_event_in_its_transaction_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    run(StoreSpec::Sqlite, dir.path());
}

#[test]
fn each_lifecycle_change_writes_its_event_in_its_transaction_on_postgres() {
    let Some(pg) = common::PgSchema::new() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    run(StoreSpec::Postgres(pg.url.clone()), dir.path());
}
