//! The referrers index: for each uid, the entities that point at it
//! (parents and attribute references), so listings such as "the users of
//! an account" read an index entry, never every entity.
//!
//! Owns the index and keeping it in step with one entity's references; it
//! must never know how entities are stored, parsed or locked.

use std::collections::{HashMap, HashSet};

use cedar_policy::EntityUid;

/// Who points at each uid.
#[derive(Debug, Default)]
pub(super) struct Referrers(HashMap<EntityUid, HashSet<EntityUid>>);

impl Referrers {
    /// Remember that `uid` points at `refs`.
    pub(super) fn link(&mut self, uid: &EntityUid, refs: &[EntityUid]) {
        for r in refs {
            self.0.entry(r.clone()).or_default().insert(uid.clone());
        }
    }

    /// Forget that `uid` points at `refs`.
    pub(super) fn unlink(&mut self, uid: &EntityUid, refs: &[EntityUid]) {
        for r in refs {
            if let Some(set) = self.0.get_mut(r) {
                set.remove(uid);
                if set.is_empty() {
                    self.0.remove(r);
                }
            }
        }
    }

    /// The uids that point at `uid`, in no order.
    pub(super) fn of(&self, uid: &EntityUid) -> Vec<EntityUid> {
        self.0
            .get(uid)
            .map(|set| set.iter().cloned().collect())
            .unwrap_or_default()
    }
}
