//! The entity directory: every Cedar entity PartnerGate knows, served from
//! memory and persisted through a [`crate::store::EntityBackend`].
//!
//! It owns the write path (schema validation of every entity, then one store
//! transaction, then the in-memory copy, all under one writer lock that every
//! writer takes — [`Directory::commit_with`] for writers that run their own
//! store transaction) and the read path that matters for
//! latency: [`Directory::slice`], the entities one decision needs (principal,
//! resource, their ancestors and the entities their attributes reference),
//! so that a decision's cost does not grow with the size of the directory.
//! Memory holds each entity compactly (its JSON text, its references, its
//! version) and builds the Cedar entity when a slice needs it, keeping the
//! most recently built ones ([`BUILT_ENTITIES`]); a start reads the stored
//! references and parses no entity.
//! Nothing here is specific to the partner pack.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use cedar_policy::{Entities, Entity, EntityId, EntityTypeName, EntityUid, Schema};
use dashmap::DashMap;

use crate::store::{
    decode_refs, references, references_in, Change, EntityBackend, EntityRecord, LoadedRow,
    StoreError,
};

/// Upper bound on the entities one slice may gather (a guard against
/// pathological reference graphs; the shipped pack needs about five).
pub const MAX_SLICE: usize = 10_000;

/// How many built Cedar entities the directory keeps for slices
/// ([`Directory::slice`]), by version: the hot ones (accounts, frequent
/// principals) are parsed once, and memory stays bounded (a user entity is
/// about 2 KB built, against a few hundred bytes of JSON).
pub const BUILT_ENTITIES: usize = 32_768;

/// Why a directory operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    /// The entities given are not a JSON array (a 400).
    #[error("entities: expected a JSON array of Cedar entities")]
    NotAnArray,
    /// One entity of a write is not valid Cedar entity JSON, does not fit the schema, or repeats a uid (a 400).
    #[error("entity #{index}{}: {message}", .uid.as_ref().map(|u| format!(" ({u})")).unwrap_or_default())]
    Invalid {
        /// 0-based position of the entity in the array written.
        index: usize,
        /// Its uid, when one could be read.
        uid: Option<String>,
        /// What is wrong (Cedar's message, or PartnerGate's).
        message: String,
    },
    /// A write names an action entity (its uid); actions are the schema's (a 400).
    #[error("entity {0} is an action: actions come from the schema")]
    Action(String),
    /// The entity store failed (its [`StoreError`]).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored entity does not parse back (the store's contents, not the caller, are at fault).
    #[error("stored entity {uid} is unreadable: {message}")]
    Corrupt {
        /// The stored entity's uid.
        uid: String,
        /// Why it does not parse.
        message: String,
    },
    /// The request's deadline had passed when the write's transaction began; nothing was written.
    #[error("the write did not start before the request timeout; nothing was written")]
    TimedOut,
}

impl DirectoryError {
    /// Is this the caller's fault (a 400), rather than the store's?
    pub fn is_bad_input(&self) -> bool {
        !matches!(
            self,
            DirectoryError::Store(_) | DirectoryError::Corrupt { .. } | DirectoryError::TimedOut
        )
    }
}

/// An `Idempotency-Key` write: the key, the request's fingerprint, and the
/// (HTTP status, JSON body) answered for the written uids.
pub type IdempotentAnswer<'a> = (&'a str, &'a str, &'a dyn Fn(&[EntityUid]) -> (u16, String));

/// One entity of a write, for its change record ([`Directory::put_recorded`]).
#[derive(Debug, Clone)]
pub struct Changed {
    /// Its Cedar entity JSON before the write (null: it was not stored).
    pub before: serde_json::Value,
    /// Its Cedar entity JSON as written.
    pub after: serde_json::Value,
}

/// What a guarded write did ([`Directory::put_guarded`]).
#[derive(Debug)]
pub enum Written {
    /// The write was committed: the uids written, in the order given.
    Applied(Vec<EntityUid>),
    /// The `Idempotency-Key` was remembered: nothing written; its first answer.
    Replayed(crate::store::Remembered),
}

/// One entity as memory holds it: its Cedar entity JSON as committed (text,
/// a few hundred bytes; the Cedar `Entity` is built from it only when a slice
/// or a reader asks, [`Stored::entity`]), the uids it points at (parents and
/// attribute references, [`crate::store::references`]: read from the store at
/// start, computed once at write time), and the stamp of the write that put
/// it in memory.
#[derive(Debug)]
struct Stored {
    json: Arc<str>,
    refs: Box<[EntityUid]>,
    /// Unique to this write of this entity (see [`Directory::version_of`]);
    /// 0 until [`Directory::insert`] stamps it.
    version: u64,
}

impl Stored {
    /// The Cedar entity, parsed from the JSON (as a start always did: no
    /// schema, the JSON is the validated write's own serialisation).
    fn entity(&self, uid: &EntityUid) -> Result<Entity, DirectoryError> {
        Entity::from_json_str(&self.json, None).map_err(|e| {
            metrics::counter!("partnergate_directory_unreadable_total").increment(1);
            tracing::error!(%uid, reason = %e, "directory: a stored entity is unreadable");
            DirectoryError::Corrupt {
                uid: uid.to_string(),
                message: e.to_string(),
            }
        })
    }
}

/// Entity type names, each parsed once and shared (an `Arc` inside) by every
/// uid of the type that memory builds, so a uid costs no allocation of its own.
#[derive(Default)]
struct TypeNames(HashMap<String, EntityTypeName>);

impl TypeNames {
    fn get(&mut self, name: &str) -> Option<EntityTypeName> {
        if let Some(t) = self.0.get(name) {
            return Some(t.clone());
        }
        let t = EntityTypeName::from_str(name).ok()?;
        self.0.insert(name.to_string(), t.clone());
        Some(t)
    }

    fn uid(&mut self, ty: &str, id: &str) -> Option<EntityUid> {
        Some(EntityUid::from_type_name_and_id(
            self.get(ty)?,
            EntityId::new(id),
        ))
    }

    /// A stored key (a uid in Cedar syntax, `Type::"id"`) of type `ty`:
    /// read without Cedar's parser when the id has no escapes (Cedar writes
    /// a backslash for every character it escapes), else parsed.
    fn key(&mut self, key: &str, ty: &str) -> Option<EntityUid> {
        let plain = key
            .strip_prefix(ty)
            .and_then(|r| r.strip_prefix("::\""))
            .and_then(|r| r.strip_suffix('"'))
            .filter(|id| !id.contains('\\'));
        match plain {
            Some(id) => self.uid(ty, id),
            None => uid_from_key(key),
        }
    }

    /// The uids of (type, id) pairs ([`crate::store::references`]); a pair
    /// whose type is not a Cedar name is skipped (it names no entity).
    fn refs(&mut self, pairs: &[(String, String)]) -> Box<[EntityUid]> {
        pairs.iter().filter_map(|(t, i)| self.uid(t, i)).collect()
    }
}

/// The version [`Directory::version_of`] gives a uid the directory does not hold.
pub const ABSENT: u64 = 0;

/// A uid a decision read and the version it had then ([`Directory::version_of`]).
pub type Dependency = (EntityUid, u64);

/// The entities one decision needs ([`Directory::slice_versioned`]) and what
/// they were read from: every uid the walk looked up, held or not, with its
/// version. While [`Directory::is_current`] holds for `deps`, a new walk
/// would gather exactly the same entities.
#[derive(Debug)]
pub struct VersionedSlice {
    /// The entities gathered (roots, ancestors, attribute references).
    pub entities: Vec<Entity>,
    /// Every uid looked up, with its version ([`ABSENT`] if not held).
    pub deps: Vec<Dependency>,
    /// False when the walk stopped at [`MAX_SLICE`] (do not cache it).
    pub complete: bool,
    /// Every datetime of the gathered entities' stored JSON
    /// ([`crate::clock::datetimes_in_text`]), read during the walk so that a
    /// clocked decision never serialises its entities to find them.
    pub datetimes: Result<Vec<i64>, crate::clock::UnreadableDatetime>,
    /// The stored JSON text of each gathered entity, in `entities`' order
    /// (shared with memory, not copied): the decision log's slice is read
    /// from these rather than serialised again from the Cedar entities.
    pub texts: Vec<Arc<str>>,
}

/// In-memory entities over a durable backend.
pub struct Directory {
    entities: DashMap<EntityUid, Arc<Stored>>,
    /// For each uid, the entities that point at it (parents and attribute
    /// references): listings such as "the users of an account" read these,
    /// not every entity. Changed together with `entities`, under its lock.
    referrers: Mutex<HashMap<EntityUid, HashSet<EntityUid>>>,
    backend: Arc<dyn EntityBackend>,
    /// One writer at a time, so the store and memory apply writes in the same
    /// order: every write path takes it (`put_guarded`, `delete`,
    /// `commit_with`, `apply_changes`), around the store write and the memory update.
    writer: Mutex<()>,
    /// The store's change-feed position the loaded entities reflect.
    loaded_seq: i64,
    /// The last version stamp given to a write ([`Directory::version_of`]).
    stamps: AtomicU64,
    /// Committed entities that could not be put into memory ([`Directory::dropped`]).
    dropped: AtomicU64,
    /// The entity type names of the uids memory holds, each parsed once.
    types: Mutex<TypeNames>,
    /// Recently built entities by version (a version is never reused, so an
    /// entry is never stale; a rewritten entity's old one ages out).
    built: quick_cache::sync::Cache<u64, Arc<Entity>>,
}

impl Directory {
    /// Load every stored entity into memory: each row's JSON text and its
    /// stored references, streamed from the store; no entity is parsed (a
    /// row without stored references has them derived from its JSON, and
    /// fails the open if that is not JSON). The Cedar entities are built
    /// when a slice needs them.
    pub fn open(backend: Arc<dyn EntityBackend>) -> Result<Self, DirectoryError> {
        let mut directory = Directory {
            entities: DashMap::new(),
            referrers: Mutex::new(HashMap::new()),
            backend,
            writer: Mutex::new(()),
            loaded_seq: 0,
            stamps: AtomicU64::new(ABSENT),
            dropped: AtomicU64::new(0),
            types: Mutex::new(TypeNames::default()),
            built: quick_cache::sync::Cache::new(BUILT_ENTITIES),
        };
        let mut types = TypeNames::default();
        let mut failed = None;
        let seq = directory.backend.load_each(&mut |row| {
            if failed.is_some() {
                return;
            }
            match loaded(&mut types, row) {
                Ok((uid, s)) => directory.insert(uid, s),
                Err(e) => failed = Some(e),
            }
        })?;
        if let Some(e) = failed {
            return Err(e);
        }
        directory.loaded_seq = seq;
        directory.types = Mutex::new(types);
        Ok(directory)
    }

    /// Insert or replace one entity in memory, keeping `referrers` in step;
    /// the entity gets a fresh version stamp.
    fn insert(&self, uid: EntityUid, mut s: Stored) {
        s.version = self.stamps.fetch_add(1, Ordering::AcqRel) + 1;
        let s = Arc::new(s);
        let mut referrers = self.referrers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = self.entities.insert(uid.clone(), Arc::clone(&s)) {
            unlink(&mut referrers, &uid, &old.refs);
        }
        for r in &s.refs {
            referrers.entry(r.clone()).or_default().insert(uid.clone());
        }
    }

    /// The memory form of committed Cedar entity JSON: the text and its
    /// references (uids built with the shared type names).
    fn stored(&self, json: String) -> Result<Stored, String> {
        let pairs = references(&json).map_err(|e| e.to_string())?;
        let refs = self
            .types
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .refs(&pairs);
        Ok(Stored {
            json: json.into(),
            refs,
            version: ABSENT,
        })
    }

    /// Remove one entity from memory, keeping `referrers` in step.
    fn remove(&self, uid: &EntityUid) {
        let mut referrers = self.referrers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, old)) = self.entities.remove(uid) {
            unlink(&mut referrers, uid, &old.refs);
        }
    }

    /// The uids of the entities that point at `uid` (as a parent or from an
    /// attribute), sorted: an index lookup, whatever the directory's size.
    pub fn referrers(&self, uid: &EntityUid) -> Vec<EntityUid> {
        let referrers = self.referrers.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<EntityUid> = referrers
            .get(uid)
            .map(|set| set.iter().cloned().collect())
            .unwrap_or_default();
        drop(referrers);
        // Each uid formatted once (a key per comparison costs n log n formats).
        out.sort_by_cached_key(|u| u.to_string());
        out
    }

    /// The uids of every stored entity of type `ty`: a scan of the whole
    /// directory (for searches whose candidates no index narrows).
    pub fn uids_of_type(&self, ty: &EntityTypeName) -> Vec<EntityUid> {
        self.entities
            .iter()
            .filter(|e| e.key().type_name() == ty)
            .map(|e| e.key().clone())
            .collect()
    }

    /// The change-feed position of the initial load (where a feed starts).
    pub fn loaded_seq(&self) -> i64 {
        self.loaded_seq
    }

    /// Apply changes another replica committed (from a change feed), in
    /// order: memory only, under the writer lock. Unreadable rows are logged,
    /// counted ([`Directory::dropped`]) and skipped.
    pub fn apply_changes(&self, changes: Vec<Change>) {
        let _guard = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        for c in changes {
            match c.json {
                None => {
                    if let Some(uid) = uid_from_key(&c.uid) {
                        self.remove(&uid);
                    }
                }
                Some(json) => self.apply_json(&c.uid, &json, None),
            }
        }
    }

    /// The one write path for writers that run their own store transaction
    /// (the orchestrator): `write` runs under the directory's writer lock
    /// (the lock every other write takes too), and the records it returns —
    /// what it committed — go into memory before the lock is released, so
    /// the store and memory see every write in the same order. A record that
    /// cannot be read back (with `schema`) is logged, counted and skipped.
    pub fn commit_with<T, E>(
        &self,
        schema: Option<&Schema>,
        write: impl FnOnce() -> Result<(Vec<EntityRecord>, T), E>,
    ) -> Result<T, E> {
        let _guard = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let (records, out) = write()?;
        for r in &records {
            self.apply_json(&r.uid, &r.json, schema);
        }
        Ok(out)
    }

    /// Put one committed entity (Cedar entity JSON) into memory; the caller
    /// holds the writer lock. One that cannot be read is never dropped
    /// silently: it is logged with its uid and the reason, and counted.
    /// The entity is parsed (and checked against `schema`) here, on the
    /// write path, and memory keeps its canonical JSON.
    fn apply_json(&self, uid: &str, json: &str, schema: Option<&Schema>) {
        let parsed = serde_json::from_str(json)
            .map_err(|e| e.to_string())
            .and_then(|v| Entity::from_json_value(v, schema).map_err(|e| e.to_string()))
            .and_then(|e| {
                let json = e.to_json_value().map_err(|e| e.to_string())?;
                Ok((e.uid(), self.stored(json.to_string())?))
            });
        match parsed {
            Ok((uid, s)) => self.insert(uid, s),
            Err(reason) => {
                self.dropped.fetch_add(1, Ordering::AcqRel);
                metrics::counter!("partnergate_directory_dropped_total").increment(1);
                tracing::error!(uid, reason = %reason,
                    "directory: a committed entity is unreadable; memory differs from the store for it until a reload");
            }
        }
    }

    /// How many committed entities could not be put into memory (see
    /// [`Directory::commit_with`], [`Directory::apply_changes`]); also the
    /// `partnergate_directory_dropped_total` counter.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Acquire)
    }

    /// Number of entities.
    pub fn len(&self) -> usize {
        self.entities.len()
    }

    /// Whether the directory holds no entity.
    pub fn is_empty(&self) -> bool {
        self.entities.is_empty()
    }

    /// The version of `uid` in memory: a stamp unique to the write that put
    /// its current state there (no two writes, of any entities, share one),
    /// or [`ABSENT`] when it is not held. Equal versions at two times mean
    /// the same state: an entity written and then deleted is absent again,
    /// and one written twice has a new stamp even if the content is the same.
    pub fn version_of(&self, uid: &EntityUid) -> u64 {
        self.entities.get(uid).map_or(ABSENT, |s| s.version)
    }

    /// Whether every dependency still has the version it was read with:
    /// then a slice walked now would be the one that recorded `deps`.
    pub fn is_current(&self, deps: &[Dependency]) -> bool {
        deps.iter().all(|(uid, v)| self.version_of(uid) == *v)
    }

    /// The backend, for readiness checks.
    pub fn backend(&self) -> &Arc<dyn EntityBackend> {
        &self.backend
    }

    /// The held state of `uid`, out of the map (no map lock held after).
    fn held(&self, uid: &EntityUid) -> Option<Arc<Stored>> {
        self.entities.get(uid).map(|s| Arc::clone(&s))
    }

    /// The Cedar entity of a held state: built from its JSON, or the copy
    /// built for its version before.
    fn entity_of(&self, uid: &EntityUid, s: &Stored) -> Result<Entity, DirectoryError> {
        if let Some(e) = self.built.get(&s.version) {
            return Ok(Entity::clone(&e));
        }
        let e = s.entity(uid)?;
        self.built.insert(s.version, Arc::new(e.clone()));
        Ok(e)
    }

    /// One entity (built from its JSON; `None` if it is not held, or is
    /// unreadable, which is logged).
    pub fn get(&self, uid: &EntityUid) -> Option<Entity> {
        let s = self.held(uid)?;
        self.entity_of(uid, &s).ok()
    }

    /// Is `uid` stored?
    pub fn contains(&self, uid: &EntityUid) -> bool {
        self.entities.contains_key(uid)
    }

    /// One entity as Cedar entity JSON.
    pub fn get_json(&self, uid: &EntityUid) -> Option<serde_json::Value> {
        serde_json::from_str(&self.held(uid)?.json).ok()
    }

    /// Parse and validate Cedar entity JSON (an array) against `schema`
    /// without storing anything.
    pub fn parse(
        schema: Option<&Schema>,
        json: serde_json::Value,
    ) -> Result<Vec<Entity>, DirectoryError> {
        let serde_json::Value::Array(items) = json else {
            return Err(DirectoryError::NotAnArray);
        };
        let actions: HashSet<EntityUid> = schema
            .map(|s| s.actions().cloned().collect())
            .unwrap_or_default();
        let mut out = Vec::with_capacity(items.len());
        let mut seen = HashSet::new();
        for (index, item) in items.into_iter().enumerate() {
            let uid_hint = item
                .get("uid")
                .and_then(|u| EntityUid::from_json(u.clone()).ok())
                .map(|u| u.to_string());
            let entity =
                Entity::from_json_value(item, schema).map_err(|e| DirectoryError::Invalid {
                    index,
                    uid: uid_hint.clone(),
                    message: e.to_string(),
                })?;
            let uid = entity.uid();
            if actions.contains(&uid) {
                return Err(DirectoryError::Action(uid.to_string()));
            }
            if !seen.insert(uid.clone()) {
                return Err(DirectoryError::Invalid {
                    index,
                    uid: uid_hint,
                    message: "the same uid appears twice in one write".into(),
                });
            }
            out.push(entity);
        }
        Ok(out)
    }

    /// Validate and upsert entities (Cedar entity JSON array) in one
    /// transaction; memory changes only after the store committed.
    pub fn put_json(
        &self,
        schema: Option<&Schema>,
        json: serde_json::Value,
    ) -> Result<Vec<EntityUid>, DirectoryError> {
        let entities = Self::parse(schema, json)?;
        self.put(entities)
    }

    /// Upsert already-validated entities in one transaction.
    pub fn put(&self, entities: Vec<Entity>) -> Result<Vec<EntityUid>, DirectoryError> {
        match self.put_guarded(entities, None, None)? {
            Written::Applied(uids) => Ok(uids),
            Written::Replayed(_) => Err(DirectoryError::Store(StoreError::Backend(
                "a write without an Idempotency-Key was replayed".into(),
            ))),
        }
    }

    /// [`Directory::put`] under a deadline (checked once the transaction has
    /// begun: past it, nothing is written, [`DirectoryError::TimedOut`]) and
    /// an `Idempotency-Key`: `(key, fingerprint, answer)` where `answer`
    /// gives the (status, JSON body) answered for the written uids, stored in
    /// the same transaction; a key already remembered writes nothing and
    /// returns its first answer.
    pub fn put_guarded(
        &self,
        entities: Vec<Entity>,
        deadline: Option<std::time::Instant>,
        idempotency: Option<IdempotentAnswer<'_>>,
    ) -> Result<Written, DirectoryError> {
        self.put_recorded(
            entities,
            deadline,
            idempotency,
            |_| crate::changes::Prepared::default(),
            |_| {},
        )
    }

    /// [`Directory::put_guarded`] with its change records: under the writer
    /// lock, `record` is given each entity's state before (memory, which
    /// holds what the store committed) and after, and prepares the records
    /// the store transaction keeps with the write; once the write is
    /// committed and in memory, still under the lock (so records follow the
    /// commit order), `log` logs them. A replayed or timed-out write logs nothing.
    pub fn put_recorded(
        &self,
        entities: Vec<Entity>,
        deadline: Option<std::time::Instant>,
        idempotency: Option<IdempotentAnswer<'_>>,
        record: impl FnOnce(Vec<Changed>) -> crate::changes::Prepared,
        log: impl FnOnce(crate::changes::Prepared),
    ) -> Result<Written, DirectoryError> {
        let mut records = Vec::with_capacity(entities.len());
        let mut prepared = Vec::with_capacity(entities.len());
        let mut uids = Vec::with_capacity(entities.len());
        for (index, entity) in entities.into_iter().enumerate() {
            let (record, _) = to_record(index, &entity)?;
            let s =
                self.stored(record.json.clone())
                    .map_err(|message| DirectoryError::Invalid {
                        index,
                        uid: Some(record.uid.clone()),
                        message,
                    })?;
            records.push(record);
            prepared.push(s);
            uids.push(entity.uid());
        }
        let remembered = idempotency.map(|(key, fingerprint, answer)| {
            let (status, body) = answer(&uids);
            let fingerprint = fingerprint.to_string();
            (
                key,
                crate::store::Remembered {
                    fingerprint,
                    status,
                    body,
                },
            )
        });
        let _guard = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let changed = uids
            .iter()
            .zip(&records)
            .map(|(uid, r)| Changed {
                before: self.get_json(uid).unwrap_or(serde_json::Value::Null),
                after: serde_json::from_str(&r.json).unwrap_or(serde_json::Value::Null),
            })
            .collect();
        let changes = record(changed);
        let guard = crate::store::WriteGuard {
            deadline,
            idempotency: remembered.as_ref().map(|(k, r)| (*k, r)),
            changes: changes.kept(),
        };
        match self.backend.upsert_guarded(&records, &guard)? {
            crate::store::Guarded::Applied => {}
            crate::store::Guarded::Replayed(r) => return Ok(Written::Replayed(r)),
            crate::store::Guarded::TimedOut => return Err(DirectoryError::TimedOut),
        }
        for (uid, s) in uids.iter().zip(prepared) {
            self.insert(uid.clone(), s);
        }
        log(changes);
        Ok(Written::Applied(uids))
    }

    /// Delete entities; returns how many existed.
    pub fn delete(&self, uids: &[EntityUid]) -> Result<usize, DirectoryError> {
        let keys: Vec<String> = uids.iter().map(|u| u.to_string()).collect();
        let _guard = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let n = self.backend.delete(&keys)?;
        for u in uids {
            self.remove(u);
        }
        Ok(n)
    }

    /// The entities a decision about `roots` needs: the roots, their
    /// ancestors, and what their attributes reference, transitively.
    /// `overlay` entities (sent with the request) win over stored ones.
    /// Each stored entity is built from its JSON here; one that does not
    /// parse fails the slice ([`DirectoryError::Corrupt`], logged), so a
    /// decision never runs without it.
    pub fn slice(
        &self,
        roots: &[&EntityUid],
        overlay: &HashMap<EntityUid, Entity>,
    ) -> Result<Vec<Entity>, DirectoryError> {
        let mut out = Vec::with_capacity(8);
        let mut seen: HashSet<EntityUid> = HashSet::with_capacity(8);
        let mut queue: Vec<EntityUid> = roots.iter().map(|u| (*u).clone()).collect();
        // Overlay entities are always part of the request's world.
        for (uid, e) in overlay {
            if seen.insert(uid.clone()) {
                out.push(e.clone());
                if let Ok(json) = e.to_json_value() {
                    let pairs = references_in(&json);
                    let mut types = self.types.lock().unwrap_or_else(|p| p.into_inner());
                    queue.extend(types.refs(&pairs).into_vec());
                }
            }
        }
        while let Some(uid) = queue.pop() {
            if out.len() >= MAX_SLICE {
                break;
            }
            if !seen.insert(uid.clone()) {
                continue;
            }
            if let Some(s) = self.held(&uid) {
                out.push(self.entity_of(&uid, &s)?);
                queue.extend(s.refs.iter().cloned());
            }
        }
        Ok(out)
    }

    /// The slice of the stored entities for `roots` (no request entities)
    /// with the version of every uid the walk looked up, so that a result
    /// computed from it can be kept until one of them changes
    /// ([`Directory::is_current`]). Each entity is read with its version in
    /// one lookup, so a write racing with the walk shows as a version that
    /// is already stale, never as a newer one. An unreadable stored entity
    /// fails it, as in [`Directory::slice`].
    pub fn slice_versioned(&self, roots: &[&EntityUid]) -> Result<VersionedSlice, DirectoryError> {
        let mut entities = Vec::with_capacity(8);
        let mut deps: Vec<Dependency> = Vec::with_capacity(8);
        let mut seen: HashSet<EntityUid> = HashSet::with_capacity(8);
        let mut queue: Vec<EntityUid> = roots.iter().map(|u| (*u).clone()).collect();
        let mut complete = true;
        let mut datetimes = Ok(Vec::new());
        let mut texts = Vec::with_capacity(8);
        while let Some(uid) = queue.pop() {
            if entities.len() >= MAX_SLICE {
                complete = false;
                break;
            }
            if !seen.insert(uid.clone()) {
                continue;
            }
            // The Arc is cloned out so no map lock is held while walking on.
            match self.held(&uid) {
                Some(s) => {
                    entities.push(self.entity_of(&uid, &s)?);
                    texts.push(Arc::clone(&s.json));
                    if let Ok(found) = &mut datetimes {
                        if let Err(e) = crate::clock::datetimes_in_text(&s.json, found) {
                            datetimes = Err(e);
                        }
                    }
                    queue.extend(s.refs.iter().cloned());
                    deps.push((uid, s.version));
                }
                None => deps.push((uid, ABSENT)),
            }
        }
        Ok(VersionedSlice {
            entities,
            deps,
            complete,
            datetimes,
            texts,
        })
    }
}

/// Forget that `uid` points at `refs`.
fn unlink(
    referrers: &mut HashMap<EntityUid, HashSet<EntityUid>>,
    uid: &EntityUid,
    refs: &[EntityUid],
) {
    for r in refs {
        if let Some(set) = referrers.get_mut(r) {
            set.remove(uid);
            if set.is_empty() {
                referrers.remove(r);
            }
        }
    }
}

/// One loaded row in memory form: its uid (from the key, without Cedar's
/// parser when it can) and its stored references, or those derived from its
/// JSON when the row has none.
fn loaded(types: &mut TypeNames, row: LoadedRow) -> Result<(EntityUid, Stored), DirectoryError> {
    let corrupt = |message: String| DirectoryError::Corrupt {
        uid: row.uid.clone(),
        message,
    };
    let uid = types
        .key(&row.uid, &row.entity_type)
        .ok_or_else(|| corrupt("the key is not a Cedar uid".into()))?;
    let pairs = match row.refs.as_deref().and_then(decode_refs) {
        Some(pairs) => pairs,
        None => references(&row.json).map_err(|e| corrupt(e.to_string()))?,
    };
    let refs = types.refs(&pairs);
    Ok((
        uid,
        Stored {
            json: row.json.into(),
            refs,
            version: ABSENT,
        },
    ))
}

/// The stored form of an entity: its record and its Cedar entity JSON.
fn to_record(
    index: usize,
    entity: &Entity,
) -> Result<(EntityRecord, serde_json::Value), DirectoryError> {
    let uid = entity.uid();
    let json = entity
        .to_json_value()
        .map_err(|e| DirectoryError::Invalid {
            index,
            uid: Some(uid.to_string()),
            message: e.to_string(),
        })?;
    let record = EntityRecord {
        uid: uid.to_string(),
        entity_type: uid.type_name().to_string(),
        json: json.to_string(),
    };
    Ok((record, json))
}

/// Validate every entity of a Cedar entity JSON array (in parallel, one
/// chunk per core), then write them all to `backend` in one transaction
/// (all or nothing), without loading them into memory. Returns how many were
/// written. The first invalid entity (lowest index) is the error.
pub fn import(
    backend: &dyn EntityBackend,
    schema: Option<&Schema>,
    json: serde_json::Value,
) -> Result<usize, DirectoryError> {
    let serde_json::Value::Array(items) = json else {
        return Err(DirectoryError::NotAnArray);
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = items.len().div_ceil(threads).max(1);
    let parsed: Vec<Result<Vec<EntityRecord>, DirectoryError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .enumerate()
            .map(|(c, part)| {
                scope.spawn(move || {
                    let mut out = Vec::with_capacity(part.len());
                    for (i, item) in part.iter().enumerate() {
                        let index = c * chunk + i;
                        let entity =
                            Entity::from_json_value(item.clone(), schema).map_err(|e| {
                                DirectoryError::Invalid {
                                    index,
                                    uid: item
                                        .get("uid")
                                        .and_then(|u| EntityUid::from_json(u.clone()).ok())
                                        .map(|u| u.to_string()),
                                    message: e.to_string(),
                                }
                            })?;
                        out.push(to_record(index, &entity)?.0);
                    }
                    Ok(out)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(DirectoryError::Store(StoreError::Backend(
                        "an import thread panicked".into(),
                    )))
                })
            })
            .collect()
    });
    let mut records = Vec::with_capacity(items.len());
    for part in parsed {
        records.extend(part?);
    }
    let actions: HashSet<String> = schema
        .map(|s| s.actions().map(|a| a.to_string()).collect())
        .unwrap_or_default();
    let mut seen = HashSet::with_capacity(records.len());
    for (index, r) in records.iter().enumerate() {
        if actions.contains(&r.uid) {
            return Err(DirectoryError::Action(r.uid.clone()));
        }
        if !seen.insert(r.uid.as_str()) {
            return Err(DirectoryError::Invalid {
                index,
                uid: Some(r.uid.clone()),
                message: "the same uid appears twice in one write".into(),
            });
        }
    }
    backend.upsert(&records)?;
    Ok(records.len())
}

/// Build the Cedar entity set for one decision from a slice plus the action
/// entities of the request's action (from the pack).
pub fn entities_for(slice: Vec<Entity>, actions: &[Entity]) -> Result<Entities, String> {
    Entities::from_entities(slice.into_iter().chain(actions.iter().cloned()), None)
        .map_err(|e| e.to_string())
}

/// Parse a uid in Cedar syntax, for keys read back from a store.
pub fn uid_from_key(key: &str) -> Option<EntityUid> {
    EntityUid::from_str(key).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;

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
        let out = directory.commit_with(None, || {
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
        let failed: Result<(), _> = directory.commit_with(None, || Err(DirectoryError::TimedOut));
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
}
