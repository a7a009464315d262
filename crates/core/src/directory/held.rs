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

use cedar_policy::{Entity, EntityUid, Schema};

use super::memory::Directory;

/// The writer lock, held inside [`Directory::commit_with`].
pub struct Held<'a> {
    pub(super) directory: &'a Directory,
    pub(super) schema: Option<&'a Schema>,
}

impl Held<'_> {
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
