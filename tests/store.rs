//! The entity store's test suite, run unchanged against every backend:
//! embedded SQLite, and PostgreSQL (the server on this machine; skipped with
//! a plain message when unreachable, required in CI).

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use cedar_policy::EntityUid;
use partnergate::directory::Directory;
use partnergate::policies::load_schema;
use partnergate::store::postgres::PgStore;
use partnergate::store::sqlite::SqliteStore;
use partnergate::store::{EntityBackend, EntityRecord};
use serde_json::json;

fn rec(uid: &str, json: &str) -> EntityRecord {
    EntityRecord {
        uid: uid.into(),
        entity_type: "User".into(),
        json: json.into(),
    }
}

fn demo() -> serde_json::Value {
    serde_json::from_str(
        &std::fs::read_to_string(common::repo().join("demo/entities.json")).unwrap(),
    )
    .unwrap()
}

/// The suite: raw records, then the directory over the backend.
fn suite(open: &dyn Fn() -> Arc<dyn EntityBackend>) {
    let b = open();
    b.ping().unwrap();
    assert!(b.load_all().unwrap().is_empty());
    b.upsert(&[rec("User::\"a\"", "1"), rec("User::\"b\"", "2")])
        .unwrap();
    b.upsert(&[rec("User::\"a\"", "3")]).unwrap();
    let mut all = b.load_all().unwrap();
    all.sort_by(|x, y| x.uid.cmp(&y.uid));
    assert_eq!(all, vec![rec("User::\"a\"", "3"), rec("User::\"b\"", "2")]);
    assert_eq!(
        b.delete(&["User::\"b\"".into(), "User::\"zz\"".into()])
            .unwrap(),
        1
    );
    assert_eq!(b.load_all().unwrap(), vec![rec("User::\"a\"", "3")]);
    b.delete(&["User::\"a\"".into()]).unwrap();

    // A reopened backend sees what was committed (migrations are idempotent).
    drop(b);
    let b = open();
    assert!(b.load_all().unwrap().is_empty());

    // The directory: validated writes, all or nothing; slices.
    let schema = load_schema(&common::repo().join("schemas/partnergate.cedarschema")).unwrap();
    let dir = Directory::open(b.clone()).unwrap();
    dir.put_json(Some(&schema), demo()).unwrap();
    assert_eq!(dir.len(), 5);
    let mut bad = demo();
    bad[3]["attrs"]["is_admin"] = json!("maybe");
    bad[2]["attrs"]["email"] = json!("changed@acme.example");
    let err = dir.put_json(Some(&schema), bad).unwrap_err();
    assert!(err.to_string().contains("entity #3"), "{err}");
    let owner: EntityUid = r#"User::"owner""#.parse().unwrap();
    assert_eq!(
        dir.get_json(&owner).unwrap()["attrs"]["email"],
        "owner@acme.example",
        "a failed write changes nothing"
    );
    let pat: EntityUid = r#"User::"pat""#.parse().unwrap();
    let emma: EntityUid = r#"User::"emma""#.parse().unwrap();
    let slice = dir.slice(&[&pat, &emma], &HashMap::new()).unwrap();
    let mut uids: Vec<String> = slice.iter().map(|e| e.uid().to_string()).collect();
    uids.sort();
    assert_eq!(
        uids,
        vec![
            r#"Account::"acme""#,
            r#"PartnerCompany::"goldco""#,
            r#"User::"emma""#,
            r#"User::"pat""#
        ],
        "principal, resource, their account and the partner company; not the owner"
    );
    // Persisted: a new directory over a reopened backend has them all.
    drop(dir);
    let again = Directory::open(open()).unwrap();
    assert_eq!(again.len(), 5);
    assert!(again.get(&pat).is_some());
}

#[test]
fn store_suite_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    suite(&|| Arc::new(SqliteStore::open_in(&path).unwrap()));
}

#[test]
fn store_suite_on_postgres() {
    let Some(schema) = common::PgSchema::new() else {
        return;
    };
    let url = schema.url.clone();
    suite(&|| Arc::new(PgStore::open(&url, "test").unwrap()));
}

#[test]
fn postgres_feed_delivers_other_writers_changes_in_order() {
    let Some(schema) = common::PgSchema::new() else {
        return;
    };
    let a = PgStore::open(&schema.url, "a").unwrap();
    let b = PgStore::open(&schema.url, "b").unwrap();
    a.upsert(&[rec("User::\"x\"", "1")]).unwrap();
    b.upsert(&[rec("User::\"x\"", "2")]).unwrap();
    a.delete(&["User::\"x\"".into()]).unwrap();
    let changes = b.changes_since(0, 100).unwrap();
    let seen: Vec<(String, Option<String>)> = changes
        .iter()
        .map(|c| (c.uid.clone(), c.json.clone()))
        .collect();
    assert_eq!(
        seen,
        vec![
            ("User::\"x\"".into(), Some("1".into())),
            ("User::\"x\"".into(), Some("2".into())),
            ("User::\"x\"".into(), None)
        ]
    );
    assert!(changes.windows(2).all(|w| w[0].seq < w[1].seq));
    assert!(b.changes_since(changes[2].seq, 100).unwrap().is_empty());
}

#[test]
fn replicas_migrate_concurrently_without_conflict() {
    let Some(schema) = common::PgSchema::new() else {
        return;
    };
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let url = schema.url.clone();
            std::thread::spawn(move || PgStore::open(&url, &format!("r{i}")).map(|_| ()))
        })
        .collect();
    for h in handles {
        h.join().unwrap().unwrap();
    }
}

#[test]
fn import_is_all_or_nothing_and_names_the_first_bad_entity() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open_in(dir.path()).unwrap();
    let schema = load_schema(&common::repo().join("schemas/partnergate.cedarschema")).unwrap();
    let many: Vec<serde_json::Value> = (0..500)
        .map(|i| json!({"uid": {"type": "Account", "id": format!("a{i}")}, "attrs": {}, "parents": []}))
        .collect();
    let mut bad = many.clone();
    bad[321]["attrs"]["name"] = json!(7);
    bad[400]["attrs"]["name"] = json!(8);
    let err = partnergate::directory::import(&store, Some(&schema), json!(bad)).unwrap_err();
    assert!(err.to_string().starts_with("entity #321"), "{err}");
    assert!(store.load_all().unwrap().is_empty(), "nothing written");
    let mut dup = many.clone();
    dup.push(many[3].clone());
    let err = partnergate::directory::import(&store, Some(&schema), json!(dup)).unwrap_err();
    assert!(err.to_string().contains("twice"), "{err}");
    assert_eq!(
        partnergate::directory::import(&store, Some(&schema), json!(many)).unwrap(),
        500
    );
    assert_eq!(store.load_all().unwrap().len(), 500);
}

/// A PostgreSQL store left by a version before the `refs` column (the
/// demo's rows, no references) is migrated on open (every row gets the
/// references of its JSON), and a directory over it holds what a directory
/// over the current layout holds: the same entities, referrers and slices.
#[test]
fn postgres_store_before_refs_is_migrated_and_loads_the_same() {
    let Some(pg) = common::PgSchema::new() else {
        return;
    };
    let schema = load_schema(&common::repo().join("schemas/partnergate.cedarschema")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let current = Directory::open(Arc::new(SqliteStore::open_in(tmp.path()).unwrap())).unwrap();
    current.put_json(Some(&schema), demo()).unwrap();
    let rows = current.backend().load_all().unwrap();
    let mut c = postgres::Client::connect(&pg.url, postgres::NoTls).unwrap();
    c.batch_execute(
        "CREATE TABLE schema_migrations (
            version INT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now());
         INSERT INTO schema_migrations (version) VALUES (1), (2), (3);
         CREATE TABLE entities (uid TEXT PRIMARY KEY, entity_type TEXT NOT NULL,
            json TEXT NOT NULL, updated_at TIMESTAMPTZ NOT NULL DEFAULT now());
         CREATE TABLE entity_changes (seq BIGSERIAL PRIMARY KEY, uid TEXT NOT NULL,
            json TEXT, replica TEXT NOT NULL, at TIMESTAMPTZ NOT NULL DEFAULT now());",
    )
    .unwrap();
    for r in &rows {
        c.execute(
            "INSERT INTO entities (uid, entity_type, json) VALUES ($1, $2, $3)",
            &[&r.uid, &r.entity_type, &r.json],
        )
        .unwrap();
    }
    let store = Arc::new(PgStore::open(&pg.url, "test").unwrap());
    for r in &rows {
        let refs: Option<String> = c
            .query_one("SELECT refs FROM entities WHERE uid = $1", &[&r.uid])
            .unwrap()
            .get(0);
        assert_eq!(refs, partnergate::store::encode_refs(&r.json), "{}", r.uid);
    }
    let migrated = Directory::open(store).unwrap();
    assert_eq!(migrated.len(), current.len());
    let acme: EntityUid = r#"Account::"acme""#.parse().unwrap();
    let goldco: EntityUid = r#"PartnerCompany::"goldco""#.parse().unwrap();
    assert_eq!(migrated.referrers(&acme), current.referrers(&acme));
    assert_eq!(migrated.referrers(&goldco), current.referrers(&goldco));
    for r in &rows {
        let uid: EntityUid = r.uid.parse().unwrap();
        assert_eq!(migrated.get_json(&uid), current.get_json(&uid));
        let uids = |d: &Directory| {
            let mut v: Vec<String> = d
                .slice(&[&uid], &HashMap::new())
                .unwrap()
                .iter()
                .map(|e| e.uid().to_string())
                .collect();
            v.sort();
            v
        };
        assert_eq!(uids(&migrated), uids(&current), "{}", r.uid);
    }
}

/// A PostgreSQL database made before the registry tables were the
/// orchestrator's (core's migration 2 created them, with companies in them)
/// opens with the orchestrator's migrations: the registry is kept, and the
/// migration is recorded once however many replicas open it.
#[test]
fn postgres_registry_made_by_the_old_core_migration_is_kept() {
    use partnergate::orchestrator::store::OrchestratorStore;
    let Some(pg) = common::PgSchema::new() else {
        return;
    };
    drop(PgStore::open(&pg.url, "old").unwrap());
    let mut c = postgres::Client::connect(&pg.url, postgres::NoTls).unwrap();
    // What core's migration 2 made, word for word, and a company in it.
    c.batch_execute(
        "CREATE TABLE partner_companies (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            status TEXT NOT NULL,
            certified BOOLEAN NOT NULL,
            updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
         );
         CREATE TABLE partner_emails (
            email TEXT PRIMARY KEY,
            company_id TEXT NOT NULL REFERENCES partner_companies(id) ON DELETE CASCADE
         );
         CREATE INDEX partner_emails_by_company ON partner_emails(company_id);
         CREATE INDEX entities_users_by_account
            ON entities ((json::jsonb #>> '{attrs,account,__entity,id}'))
            WHERE entity_type = 'User';
         INSERT INTO partner_companies (id, name, status, certified)
            VALUES ('goldco', 'Gold Co', 'gold', true);
         INSERT INTO partner_emails (email, company_id) VALUES ('ann@goldco.example', 'goldco');",
    )
    .unwrap();
    let migrations = partnergate::orchestrator::migrations::MIGRATIONS;
    for replica in ["a", "b"] {
        let store = PgStore::open_with(&pg.url, replica, migrations).unwrap();
        let companies = store.companies().unwrap();
        assert_eq!(companies.len(), 1, "{companies:?}");
        assert_eq!(companies[0].emails, ["ann@goldco.example"]);
        assert_eq!(
            store
                .company_of_email("ann@goldco.example")
                .unwrap()
                .map(|c| c.id),
            Some("goldco".to_string())
        );
    }
    let recorded: i64 = c
        .query_one(
            "SELECT count(*) FROM named_migrations WHERE name = 'orchestrator.1.registry'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(recorded, 1);
}
