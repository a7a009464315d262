//! The directory's unit tests: the write path, the referrers index, a
//! start from stored rows and unreadable entities.

use std::collections::HashMap;
use std::sync::Arc;

use cedar_policy::EntityUid;

use super::*;
use crate::store::sqlite::SqliteStore;
use crate::store::{Change, EntityRecord};

fn record(uid: &str, json: &str) -> EntityRecord {
    EntityRecord {
        uid: uid.into(),
        entity_type: "User".into(),
        json: json.into(),
    }
}

/// A committed record that cannot be read back is not dropped silently:
/// it is counted (and logged), and the readable ones still go in.
#[test]
fn commit_with_counts_an_unreadable_record_and_applies_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open_in(dir.path()).unwrap());
    let directory = Directory::open(store).unwrap();
    let good = r#"{"uid":{"type":"User","id":"a"},"attrs":{},"parents":[]}"#;
    let out = directory.commit_with(None, |_| {
        Ok::<_, DirectoryError>((
            vec![
                record(r#"User::"bad""#, "{not json"),
                record(r#"User::"a""#, good),
            ],
            7,
        ))
    });
    assert_eq!(out.unwrap(), 7);
    assert_eq!(directory.dropped(), 1);
    assert_eq!(directory.len(), 1);
    let a = uid_from_key(r#"User::"a""#).unwrap();
    assert_ne!(directory.version_of(&a), ABSENT);
    // A failing write applies nothing.
    let failed: Result<(), _> = directory.commit_with(None, |_| Err(DirectoryError::TimedOut));
    assert!(matches!(failed, Err(DirectoryError::TimedOut)));
    assert_eq!((directory.len(), directory.dropped()), (1, 1));
}

fn uid(s: &str) -> EntityUid {
    uid_from_key(s).unwrap()
}

fn user_in(id: &str, account: &str) -> serde_json::Value {
    serde_json::json!({"uid": {"type": "User", "id": id},
        "parents": [{"type": "Account", "id": account}],
        "attrs": {"account": {"__entity": {"type": "Account", "id": account}}}})
}

/// Moving a user to another account moves it in the referrers index,
/// and a directory opened again from the store (which read the stored
/// references, not the JSON) has the same index and slices.
#[test]
fn a_rewrite_moves_the_referrers_and_a_reopen_reads_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open_in(dir.path()).unwrap());
    let directory = Directory::open(store.clone()).unwrap();
    let account = |id: &str| serde_json::json!({"uid": {"type": "Account", "id": id}, "attrs": {}, "parents": []});
    directory
        .put_json(
            None,
            serde_json::json!([
                account("one"),
                account("two"),
                user_in("a", "one"),
                user_in("b", "one")
            ]),
        )
        .unwrap();
    directory
        .put_json(None, serde_json::json!([user_in("a", "two")]))
        .unwrap();
    let (one, two) = (uid(r#"Account::"one""#), uid(r#"Account::"two""#));
    assert_eq!(directory.referrers(&one), vec![uid(r#"User::"b""#)]);
    assert_eq!(directory.referrers(&two), vec![uid(r#"User::"a""#)]);
    let slice_uids = |d: &Directory| {
        let mut out: Vec<String> = d
            .slice(&[&uid(r#"User::"a""#)], &HashMap::new())
            .unwrap()
            .iter()
            .map(|e| e.uid().to_string())
            .collect();
        out.sort();
        out
    };
    assert_eq!(
        slice_uids(&directory),
        [r#"Account::"two""#, r#"User::"a""#]
    );
    let again = Directory::open(store).unwrap();
    assert_eq!(again.referrers(&one), directory.referrers(&one));
    assert_eq!(again.referrers(&two), directory.referrers(&two));
    assert_eq!(slice_uids(&again), slice_uids(&directory));
    assert_eq!(
        again.get_json(&uid(r#"User::"a""#)),
        directory.get_json(&uid(r#"User::"a""#))
    );
}

/// A row whose references are missing (written by a version before the
/// column, after the migration) has them derived from its JSON.
#[test]
fn a_row_without_stored_references_gets_them_from_its_json() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open_in(dir.path()).unwrap());
    store
        .conn()
        .unwrap()
        .execute(
            "INSERT INTO entities (uid, entity_type, json) VALUES (?1, 'User', ?2)",
            rusqlite::params![r#"User::"a""#, user_in("a", "one").to_string()],
        )
        .unwrap();
    let directory = Directory::open(store).unwrap();
    assert_eq!(
        directory.referrers(&uid(r#"Account::"one""#)),
        vec![uid(r#"User::"a""#)]
    );
}

/// A stored entity that does not parse is found when a slice needs it:
/// the slice fails (the decision cannot be made without it), never
/// leaves it out.
#[test]
fn an_unreadable_stored_entity_fails_the_slice() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open_in(dir.path()).unwrap());
    store
        .conn()
        .unwrap()
        .execute(
            "INSERT INTO entities (uid, entity_type, json, refs) VALUES (?1, 'User', ?2, '[]')",
            rusqlite::params![r#"User::"a""#, r#"{"uid": "not a uid"}"#],
        )
        .unwrap();
    let directory = Directory::open(store).unwrap();
    assert_eq!(directory.len(), 1);
    let a = uid(r#"User::"a""#);
    let err = directory.slice(&[&a], &HashMap::new()).unwrap_err();
    assert!(matches!(err, DirectoryError::Corrupt { .. }), "{err}");
    assert!(directory.slice_versioned(&[&a]).is_err());
    assert!(directory.get(&a).is_none());
}

/// The change feed counts an unreadable row the same way.
#[test]
fn apply_changes_counts_an_unreadable_row() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open_in(dir.path()).unwrap());
    let directory = Directory::open(store).unwrap();
    directory.apply_changes(vec![Change {
        seq: 1,
        uid: r#"User::"x""#.into(),
        json: Some("[]".into()),
    }]);
    assert_eq!((directory.len(), directory.dropped()), (0, 1));
}

/// Inside a writer's commit, memory is compared with a stored row by
/// content, not by uid (Cedar's own equality of entities), and a row that
/// differs is put into memory.
#[test]
fn held_compares_memory_with_a_row_by_content_and_refreshes_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open_in(dir.path()).unwrap());
    let directory = Directory::open(store).unwrap();
    let admin = r#"{"uid":{"type":"User","id":"a"},"attrs":{"is_admin":true,"n":1},"parents":[]}"#;
    let reordered =
        r#"{"parents":[],"attrs":{"n":1,"is_admin":true},"uid":{"type":"User","id":"a"}}"#;
    let revoked =
        r#"{"uid":{"type":"User","id":"a"},"attrs":{"is_admin":false,"n":1},"parents":[]}"#;
    let a = uid(r#"User::"a""#);
    let b = uid(r#"User::"b""#);
    directory
        .commit_with(None, |_| {
            Ok::<_, DirectoryError>((vec![record(r#"User::"a""#, admin)], ()))
        })
        .unwrap();
    directory
        .commit_with(None, |held| {
            assert!(held.holds_as_stored(&a, Some(reordered)));
            assert!(!held.holds_as_stored(&a, Some(revoked)));
            assert!(!held.holds_as_stored(&a, None));
            assert!(held.holds_as_stored(&b, None));
            assert!(!held.holds_as_stored(&b, Some(admin)));
            held.refresh(&a, Some(revoked));
            assert!(held.holds_as_stored(&a, Some(revoked)));
            Ok::<_, DirectoryError>((Vec::new(), ()))
        })
        .unwrap();
    assert_eq!(directory.get_json(&a).unwrap()["attrs"]["is_admin"], false);
}
