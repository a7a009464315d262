//! What memory holds: the [`Directory`] over its backend, each entity as
//! its committed JSON text, its references (uids whose type names are parsed
//! once and shared) and its version stamp; a start that reads the stored
//! rows and parses no entity; the Cedar entities built on demand and the
//! last [`BUILT_ENTITIES`] kept by version; the reads of single entities.
//!
//! Owns the in-memory form and its primitives (insert, remove, lookups);
//! it must never know the write protocol, a decision's slice or a bulk
//! import.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use cedar_policy::{Entity, EntityId, EntityTypeName, EntityUid};
use dashmap::DashMap;

use super::error::DirectoryError;
use super::referrers::Referrers;
use super::stripes::WriterLocks;
use crate::store::{decode_refs, references, EntityBackend, LoadedRow};

/// How many built Cedar entities the directory keeps for slices
/// ([`Directory::slice`]), by version: the hot ones (accounts, frequent
/// principals) are parsed once, and memory stays bounded (a user entity is
/// about 2 KB built, against a few hundred bytes of JSON).
pub const BUILT_ENTITIES: usize = 32_768;

/// One entity as memory holds it: its Cedar entity JSON as committed (text,
/// a few hundred bytes; the Cedar `Entity` is built from it only when a slice
/// or a reader asks, [`Stored::entity`]), the uids it points at (parents and
/// attribute references, [`crate::store::references`]: read from the store at
/// start, computed once at write time), and the stamp of the write that put
/// it in memory.
#[derive(Debug)]
pub(super) struct Stored {
    pub(super) json: Arc<str>,
    pub(super) refs: Box<[EntityUid]>,
    /// Unique to this write of this entity (see [`Directory::version_of`]);
    /// 0 until [`Directory::insert`] stamps it.
    pub(super) version: u64,
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
pub(super) struct TypeNames(HashMap<String, EntityTypeName>);

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
    pub(super) fn refs(&mut self, pairs: &[(String, String)]) -> Box<[EntityUid]> {
        pairs.iter().filter_map(|(t, i)| self.uid(t, i)).collect()
    }
}

/// The version [`Directory::version_of`] gives a uid the directory does not hold.
pub const ABSENT: u64 = 0;

/// In-memory entities over a durable backend.
pub struct Directory {
    pub(super) entities: DashMap<EntityUid, Arc<Stored>>,
    /// For each uid, the entities that point at it (parents and attribute
    /// references): listings such as "the users of an account" read these,
    /// not every entity. Changed together with `entities`, under its lock.
    pub(super) referrers: Mutex<Referrers>,
    pub(super) backend: Arc<dyn EntityBackend>,
    /// The writer locks, so the store and memory apply each entity's writes
    /// in the same order: every write path takes them around its store
    /// write and its memory update, alone (`put_guarded`, `delete`,
    /// `commit_with`, `reload`) or beside others with its entities' stripes
    /// (`commit_beside`, `apply_current`); see [`super::stripes`].
    pub(super) writer: WriterLocks,
    /// The store's change-feed position the loaded entities reflect.
    pub(super) loaded_seq: i64,
    /// The last version stamp given to a write ([`Directory::version_of`]).
    pub(super) stamps: AtomicU64,
    /// Committed entities that could not be put into memory ([`Directory::dropped`]).
    pub(super) dropped: AtomicU64,
    /// The entity type names of the uids memory holds, each parsed once.
    pub(super) types: Mutex<TypeNames>,
    /// Recently built entities by version (a version is never reused, so an
    /// entry is never stale; a rewritten entity's old one ages out).
    pub(super) built: quick_cache::sync::Cache<u64, Arc<Entity>>,
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
            referrers: Mutex::new(Referrers::default()),
            backend,
            writer: WriterLocks::default(),
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
    pub(super) fn insert(&self, uid: EntityUid, mut s: Stored) {
        s.version = self.stamps.fetch_add(1, Ordering::AcqRel) + 1;
        let s = Arc::new(s);
        let mut referrers = self.referrers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = self.entities.insert(uid.clone(), Arc::clone(&s)) {
            referrers.unlink(&uid, &old.refs);
        }
        referrers.link(&uid, &s.refs);
    }

    /// The memory form of committed Cedar entity JSON: the text and its
    /// references (uids built with the shared type names).
    pub(super) fn stored(&self, json: String) -> Result<Stored, String> {
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
    pub(super) fn remove(&self, uid: &EntityUid) {
        let mut referrers = self.referrers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, old)) = self.entities.remove(uid) {
            referrers.unlink(uid, &old.refs);
        }
    }

    /// The uids of the entities that point at `uid` (as a parent or from an
    /// attribute), sorted: an index lookup, whatever the directory's size.
    pub fn referrers(&self, uid: &EntityUid) -> Vec<EntityUid> {
        let referrers = self.referrers.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = referrers.of(uid);
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

    /// The backend, for readiness checks.
    pub fn backend(&self) -> &Arc<dyn EntityBackend> {
        &self.backend
    }

    /// The held state of `uid`, out of the map (no map lock held after).
    pub(super) fn held(&self, uid: &EntityUid) -> Option<Arc<Stored>> {
        self.entities.get(uid).map(|s| Arc::clone(&s))
    }

    /// The Cedar entity of a held state: built from its JSON, or the copy
    /// built for its version before.
    pub(super) fn entity_of(&self, uid: &EntityUid, s: &Stored) -> Result<Entity, DirectoryError> {
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
}

/// One loaded row in memory form: its uid (from the key, without Cedar's
/// parser when it can) and its stored references, or those derived from its
/// JSON when the row has none.
pub(super) fn loaded(
    types: &mut TypeNames,
    row: LoadedRow,
) -> Result<(EntityUid, Stored), DirectoryError> {
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

/// Parse a uid in Cedar syntax, for keys read back from a store.
pub fn uid_from_key(key: &str) -> Option<EntityUid> {
    EntityUid::from_str(key).ok()
}
