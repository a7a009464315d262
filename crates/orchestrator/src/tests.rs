//! The orchestrator's unit tests: the directory's one write path under an
//! orchestrator write, the wire strings of the typed states, the listings'
//! reads through the referrers index.

use std::sync::Arc;

use cedar_policy::Entity;
use serde_json::{json, Value};

use super::*;
use crate::rules::{self, QuotaRules};
use crate::store::{self, OrchestratorStore, RegistryCompany};
use partnergate_core::authz::Authz;
use partnergate_core::directory::Directory;
use partnergate_core::reload::Evaluator;
use partnergate_core::store::sqlite::SqliteStore;
use partnergate_core::store::EntityRecord;
use partnergate_core::store::StoreError;
use partnergate_policy::engine;
use partnergate_policy::policies::PackSource;
use std::path::Path;
use std::sync::Mutex;

/// The shipped pack, a fresh SQLite store and a directory holding the
/// demo entities.
fn demo(
    dir: &Path,
) -> (
    Arc<Evaluator>,
    Arc<SqliteStore>,
    Arc<Directory>,
    Arc<QuotaRules>,
) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let source = PackSource::new(
        root.join("policies"),
        Some(root.join("schemas/partnergate.cedarschema")),
    );
    let evaluator = Arc::new(Evaluator::load(source).unwrap());
    let store = Arc::new(SqliteStore::open_in_with(dir, crate::migrations::MIGRATIONS).unwrap());
    let directory = Arc::new(Directory::open(store.clone()).unwrap());
    let demo: Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("demo/entities.json")).unwrap())
            .unwrap();
    directory
        .put_json(evaluator.current().schema.as_ref(), demo)
        .unwrap();
    let rules = QuotaRules::load(rules::quotas_path_for(&root.join("policies"))).unwrap();
    (evaluator, store, directory, rules)
}

/// The real SQLite store, except that the first transaction, once
/// committed, tells the test and waits for its go before it returns:
/// the window between an orchestrator's store commit and its memory update.
struct PauseAfterCommit {
    inner: Arc<SqliteStore>,
    armed: std::sync::atomic::AtomicBool,
    committed: std::sync::mpsc::SyncSender<()>,
    go: Mutex<std::sync::mpsc::Receiver<()>>,
}

impl OrchestratorStore for PauseAfterCommit {
    fn transact(
        &self,
        locks: &store::WriteLocks,
        op: &mut store::TxOp<'_>,
    ) -> Result<Vec<EntityRecord>, OrchestratorError> {
        let out = self.inner.transact(locks, op);
        if self.armed.swap(false, std::sync::atomic::Ordering::SeqCst) {
            self.committed.send(()).unwrap();
            self.go.lock().unwrap().recv().unwrap();
        }
        out
    }
    fn company_of_email(&self, email: &str) -> Result<Option<RegistryCompany>, StoreError> {
        self.inner.company_of_email(email)
    }
    fn put_companies(
        &self,
        companies: &[RegistryCompany],
        records: &[EntityRecord],
        guard: &partnergate_core::store::WriteGuard<'_>,
    ) -> Result<partnergate_core::store::Guarded, StoreError> {
        self.inner.put_companies(companies, records, guard)
    }
    fn companies(&self) -> Result<Vec<RegistryCompany>, StoreError> {
        self.inner.companies()
    }
}

impl crate::events::EventStore for PauseAfterCommit {
    fn claim(
        &self,
        owner: &str,
        now_ms: i64,
        lease_until_ms: i64,
        limit: i64,
    ) -> Result<Vec<crate::events::EventRow>, StoreError> {
        self.inner.claim(owner, now_ms, lease_until_ms, limit)
    }
    fn settle(
        &self,
        pos: i64,
        owner: &str,
        done: &[String],
        outcome: &crate::events::Settled,
    ) -> Result<bool, StoreError> {
        self.inner.settle(pos, owner, done, outcome)
    }
    fn list_events(
        &self,
        filter: &crate::events::EventFilter,
        limit: i64,
    ) -> Result<Vec<crate::events::EventRow>, StoreError> {
        self.inner.list_events(filter, limit)
    }
    fn redeliver(&self, filter: &crate::events::EventFilter) -> Result<usize, StoreError> {
        self.inner.redeliver(filter)
    }
    fn event_stats(&self) -> Result<crate::events::EventStats, StoreError> {
        self.inner.event_stats()
    }
    fn dedupe_taken(&self, keys: &[String]) -> Result<Vec<String>, StoreError> {
        self.inner.dedupe_taken(keys)
    }
}

/// Bug (issue #13): an orchestrator write and a `PUT /v1/entities` on the
/// same entity took two different locks, so the PUT could commit and
/// reach memory between the orchestrator's commit and its memory update:
/// store order orchestrator-then-PUT, memory order PUT-then-orchestrator,
/// and memory differed from the store until a restart. Now both go
/// through the directory's one writer lock: the PUT waits.
#[test]
fn a_put_during_an_orchestrator_write_leaves_memory_equal_to_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let (evaluator, sqlite, directory, rules) = demo(dir.path());
    let (committed_tx, committed) = std::sync::mpsc::sync_channel(1);
    let (go, go_rx) = std::sync::mpsc::sync_channel(1);
    let paused = Arc::new(PauseAfterCommit {
        inner: sqlite.clone(),
        armed: true.into(),
        committed: committed_tx,
        go: Mutex::new(go_rx),
    });
    let o = Orchestrator::new(Authz::new(evaluator, directory.clone()), paused, rules);
    let emma = engine::parse_uid("u", "User::\"emma\"").unwrap();
    let put = json!({"uid": {"type": "User", "id": "emma"},
        "parents": [{"type": "Account", "id": "acme"}],
        "attrs": {"email": "emma.put@acme.example", "is_admin": false, "status": "active",
            "two_factor": false,
            "account": {"__entity": {"type": "Account", "id": "acme"}}}});
    std::thread::scope(|s| {
        let orchestrator = s.spawn(|| {
            o.with(WriteScope::default())
                .set_admin("emma", "owner", true)
                .unwrap()
        });
        committed.recv().unwrap();
        let (done_tx, done) = std::sync::mpsc::channel();
        let directory = &directory;
        let writer = s.spawn(move || {
            let out = directory.put(vec![Entity::from_json_value(put, None).unwrap()]);
            done_tx.send(()).unwrap();
            out
        });
        // The old code lets the PUT finish inside the window; the fixed
        // code blocks it on the writer lock until the go.
        let _ = done.recv_timeout(std::time::Duration::from_secs(1));
        go.send(()).unwrap();
        orchestrator.join().unwrap();
        writer.join().unwrap().unwrap();
    });
    let fresh = Directory::open(sqlite).unwrap();
    assert_eq!(
        directory.get_json(&emma),
        fresh.get_json(&emma),
        "memory differs from the store"
    );
    assert_eq!(
        fresh.get_json(&emma).unwrap()["attrs"]["email"],
        json!("emma.put@acme.example"),
        "the PUT came last"
    );
}

/// The typed states keep the wire format: statuses, list statuses and
/// error codes serialise to the same strings as before; a status the
/// orchestrator does not know is kept as written.
#[test]
fn typed_states_keep_the_wire_strings() {
    let stored = json!({"uid": {"type": "User", "id": "u"},
        "parents": [{"type": "Account", "id": "acme"}],
        "attrs": {"email": "u@acme.example", "is_admin": false, "status": "invited",
            "two_factor": false, "account": {"__entity": {"type": "Account", "id": "acme"}}}});
    let mut u = UserView::from_json(&stored).unwrap();
    assert_eq!(u.status, UserStatus::Invited);
    assert_eq!(u.to_entity_json(), stored);
    assert_eq!(
        serde_json::to_value(&u).unwrap()["status"],
        json!("invited")
    );
    for (status, shown) in [
        ("invited", "invited"),
        ("active", "employee"),
        ("dismissed", "dismissed"),
        ("suspended", "employee"),
    ] {
        u.status = UserStatus::from(status.to_string());
        assert_eq!(u.status.as_str(), status);
        assert_eq!(u.to_entity_json()["attrs"]["status"], json!(status));
        assert_eq!(
            serde_json::to_value(u.list_status(0)).unwrap(),
            json!(shown)
        );
    }
    u.status = UserStatus::Active;
    u.is_admin = true;
    assert_eq!(format!("{:<14}|", u.list_status(0)), "administrator |");
    u.partner = Some(PartnerView {
        company: "goldco".into(),
        verified: true,
        expires_at: None,
        scopes: None,
        suspended: false,
    });
    assert_eq!(u.list_status(0).as_str(), "partner");
    if let Some(p) = u.partner.as_mut() {
        p.suspended = true;
    }
    assert_eq!(u.list_status(0).as_str(), "suspended");
    assert_eq!(
        u.to_entity_json()["attrs"]["partner"]["suspended"],
        json!(true)
    );
    u.status = UserStatus::Dismissed;
    assert_eq!(u.list_status(0).as_str(), "dismissed");
    u.status = UserStatus::Active;
    if let Some(p) = u.partner.as_mut() {
        p.suspended = false;
    }
    // Not suspended: the attribute is absent, as before suspensions existed.
    assert!(u.to_entity_json()["attrs"]["partner"]
        .get("suspended")
        .is_none());
    let codes: Vec<&str> = [
        InvalidCode::Replace,
        InvalidCode::Company,
        InvalidCode::User,
    ]
    .iter()
    .map(|c| c.as_str())
    .collect();
    assert_eq!(
        codes,
        ["invalid_replace", "invalid_company", "invalid_user"]
    );
    let e = OrchestratorError::Conflict {
        code: ConflictCode::RegistryChanged,
        message: String::new(),
    };
    assert_eq!(e.code(), "registry_changed");
}

/// The listings read only the users that point at the account (the
/// directory's index), never every user: another account's user that is
/// not even a readable user (no email) does not disturb them. Before the
/// index every user was read, and this listing failed on that one.
#[test]
fn listings_read_only_the_accounts_own_users() {
    let dir = tempfile::tempdir().unwrap();
    let (evaluator, store, directory, rules) = demo(dir.path());
    // Written without a schema: a `User` the orchestrator cannot read.
    let ghost = json!({"uid": {"type": "User", "id": "ghost"},
        "parents": [{"type": "Account", "id": "other"}],
        "attrs": {"account": {"__entity": {"type": "Account", "id": "other"}}}});
    directory
        .put(vec![Entity::from_json_value(ghost, None).unwrap()])
        .unwrap();
    let o = Orchestrator::new(Authz::new(evaluator, directory.clone()), store, rules);
    let ids: Vec<String> = o
        .users("acme")
        .unwrap()
        .into_iter()
        .map(|u| u.user.id)
        .collect();
    assert_eq!(ids.len(), 3, "{ids:?}");
    assert!(
        ["owner", "emma", "pat"]
            .iter()
            .all(|i| ids.contains(&i.to_string())),
        "{ids:?}"
    );
    let seats = o.seats("acme").unwrap();
    assert_eq!(
        (seats.paid_users, seats.administrators, seats.partners),
        (2, 1, 1)
    );
    // The index follows writes: emma moves to `other`, then is deleted.
    let acme = engine::parse_uid("a", "Account::\"acme\"").unwrap();
    let emma = engine::parse_uid("u", "User::\"emma\"").unwrap();
    assert!(directory.referrers(&acme).contains(&emma));
    let moved = json!({"uid": {"type": "User", "id": "emma"},
        "parents": [{"type": "Account", "id": "other"}],
        "attrs": {"email": "emma@acme.example", "is_admin": false, "status": "active",
            "two_factor": false,
            "account": {"__entity": {"type": "Account", "id": "other"}}}});
    directory
        .put(vec![Entity::from_json_value(moved, None).unwrap()])
        .unwrap();
    assert!(!directory.referrers(&acme).contains(&emma));
    assert_eq!(o.users("acme").unwrap().len(), 2);
    directory.delete(std::slice::from_ref(&emma)).unwrap();
    let other = engine::parse_uid("a", "Account::\"other\"").unwrap();
    assert!(!directory.referrers(&other).contains(&emma));
}

/// A database made before the registry tables were the orchestrator's
/// (core's migration 2 created them, so they hold companies and no
/// `named_migrations` row names them) opens with the orchestrator's
/// migrations: nothing is lost or created twice, and the migration is
/// recorded so it never runs again.
#[test]
fn a_registry_made_by_the_old_core_migration_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let old = SqliteStore::open(&path).unwrap();
    // What core's migration 2 made, word for word, and a company in it.
    old.conn()
        .unwrap()
        .execute_batch(
            "CREATE TABLE partner_companies (
                id TEXT PRIMARY KEY,
                name TEXT NOT NULL,
                status TEXT NOT NULL,
                certified INTEGER NOT NULL CHECK (certified IN (0, 1)),
                updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now'))
            );
            CREATE TABLE partner_emails (
                email TEXT PRIMARY KEY,
                company_id TEXT NOT NULL REFERENCES partner_companies(id) ON DELETE CASCADE
            );
            CREATE INDEX partner_emails_by_company ON partner_emails(company_id);
            CREATE INDEX entities_users_by_account
                ON entities(json_extract(json, '$.attrs.account.__entity.id'))
                WHERE entity_type = 'User';
            INSERT INTO partner_companies (id, name, status, certified)
                VALUES ('goldco', 'Gold Co', 'gold', 1);
            INSERT INTO partner_emails (email, company_id) VALUES ('ann@goldco.example', 'goldco');",
        )
        .unwrap();
    drop(old);
    for _ in 0..2 {
        let store = SqliteStore::open_with(&path, crate::migrations::MIGRATIONS).unwrap();
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
        let recorded: i64 = store
            .conn()
            .unwrap()
            .query_row(
                "SELECT count(*) FROM named_migrations WHERE name = 'orchestrator.1.registry'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(recorded, 1);
    }
}
