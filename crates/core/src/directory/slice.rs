//! The entities one decision needs: [`Directory::slice`] (the roots, their
//! ancestors and what their attributes reference, transitively, bounded by
//! [`MAX_SLICE`]), [`Directory::slice_versioned`] with the version of every
//! uid the walk read ([`Dependency`]) and [`Directory::is_current`], and the
//! Cedar entity set of a slice plus the action's entities.
//!
//! Owns the walk; it must never know how entities are written or imported.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use cedar_policy::{Entities, Entity, EntityUid};

use super::error::DirectoryError;
use super::memory::{Directory, ABSENT};
use crate::store::references_in;

/// Upper bound on the entities one slice may gather (a guard against
/// pathological reference graphs; the shipped pack needs about five).
pub const MAX_SLICE: usize = 10_000;

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

impl Directory {
    /// Whether every dependency still has the version it was read with:
    /// then a slice walked now would be the one that recorded `deps`.
    pub fn is_current(&self, deps: &[Dependency]) -> bool {
        deps.iter().all(|(uid, v)| self.version_of(uid) == *v)
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

/// Build the Cedar entity set for one decision from a slice plus the action
/// entities of the request's action (from the pack).
pub fn entities_for(slice: Vec<Entity>, actions: &[Entity]) -> Result<Entities, String> {
    Entities::from_entities(slice.into_iter().chain(actions.iter().cloned()), None)
        .map_err(|e| e.to_string())
}
