//! [`Held`]: the directory's writer lock as a writer inside
//! [`Directory::commit_with`] holds it, with what that writer may do to
//! memory before its own records go in: compare an entity in memory with
//! the state its store transaction reads ([`Held::holds_as_stored`]) and,
//! when they differ, put the stored state into memory ([`Held::refresh`]),
//! ahead of the change feed. A writer that holds the store's locks for an
//! entity reads its final committed state, so memory can be brought up to
//! it before a decision is asked again.
//!
//! It must never know which store, transaction or lock the caller holds.

use std::cell::RefCell;

use cedar_policy::{Entity, EntityUid, Schema};

use super::memory::Directory;
use super::stripes::Claimed;

/// The writer lock, held inside [`Directory::commit_with`] (alone) or
/// [`Directory::commit_beside`] (beside other writers: the stripes of the
/// entities it refreshes or writes are taken as it goes, see
/// [`super::stripes`]).
pub struct Held<'a> {
    directory: &'a Directory,
    schema: Option<&'a Schema>,
    /// Beside other writers: the stripes claimed for the write's records.
    claimed: Option<RefCell<Vec<Claimed<'a>>>>,
}

impl<'a> Held<'a> {
    pub(super) fn alone(directory: &'a Directory, schema: Option<&'a Schema>) -> Self {
        Held {
            directory,
            schema,
            claimed: None,
        }
    }

    pub(super) fn beside(directory: &'a Directory, schema: Option<&'a Schema>) -> Self {
        Held {
            directory,
            schema,
            claimed: Some(RefCell::new(Vec::new())),
        }
    }

    /// Beside other writers: take the stripes of the entities (uids in
    /// Cedar syntax) the write is about to commit, once, just before its
    /// store commit; held until memory holds them. Alone, nothing to take.
    pub fn claim<'k>(&self, uids: impl IntoIterator<Item = &'k str>) {
        if let Some(claimed) = &self.claimed {
            let mut claimed = claimed.borrow_mut();
            let more = self
                .directory
                .writer
                .claim_keys(uids, Some(claimed.as_slice()));
            claimed.push(more);
        }
    }

    /// Whether the stripes of `uids` are claimed (always, alone).
    pub(super) fn claims<'k>(&self, uids: impl IntoIterator<Item = &'k str>) -> bool {
        match &self.claimed {
            None => true,
            Some(claimed) => {
                let claimed = claimed.borrow();
                uids.into_iter()
                    .all(|k| claimed.iter().any(|c| c.covers(k)))
            }
        }
    }

    /// Whether memory holds `uid` as the store does: `stored` is the row's
    /// Cedar entity JSON (`None`: no row). Both absent is the same; one
    /// that does not parse is never the same.
    pub fn holds_as_stored(&self, uid: &EntityUid, stored: Option<&str>) -> bool {
        let held = self.directory.held(uid);
        match (held, stored) {
            (None, None) => true,
            (Some(h), Some(s)) => {
                h.json.as_ref() == s
                    || (self
                        .parse(&h.json)
                        .is_some_and(|a| self.parse(s) == Some(a)))
            }
            _ => false,
        }
    }

    /// Put the store's state of `uid` into memory: its row's JSON, or (for
    /// `None`) its absence. An unreadable row is logged and counted like a
    /// committed one ([`Directory::dropped`]).
    pub fn refresh(&self, uid: &EntityUid, stored: Option<&str>) {
        // Beside other writers, under the entity's stripe (unless claimed).
        let _stripe = self.claimed.as_ref().map(|claimed| {
            self.directory
                .writer
                .claim_uid(uid, Some(claimed.borrow().as_slice()))
        });
        match stored {
            Some(json) => self
                .directory
                .apply_json(&uid.to_string(), json, self.schema),
            None => self.directory.remove(uid),
        }
    }

    /// The entity's canonical JSON: read as Cedar reads it (with the
    /// schema), written back, its parents in one order. Cedar's own
    /// equality of entities compares their uids only.
    fn parse(&self, json: &str) -> Option<serde_json::Value> {
        let value = serde_json::from_str(json).ok()?;
        let mut canonical = Entity::from_json_value(value, self.schema)
            .ok()?
            .to_json_value()
            .ok()?;
        if let Some(parents) = canonical
            .get_mut("parents")
            .and_then(serde_json::Value::as_array_mut)
        {
            parents.sort_by_key(serde_json::Value::to_string);
        }
        Some(canonical)
    }
}
