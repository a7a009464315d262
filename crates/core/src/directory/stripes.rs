//! The directory's writer locks: one lock shared by the writes that run
//! beside each other (account writes, the change feed) and taken whole by
//! the writes that must run alone (entity and registry writes, a reload),
//! and under it one lock per stripe of uids, which orders memory with the
//! store for each entity: a writer holds its entities' stripes from before
//! its store commit until memory holds what it committed, and the change
//! feed holds its batch's stripes from before it reads the rows until it
//! has applied them, so memory never takes an entity back to an older
//! state. Stripes are taken in ascending order, all at once, and never
//! while waiting for anything else: no two holders wait for each other in
//! a cycle.
//!
//! It must never know the store, a transaction or what an entity holds.

use std::collections::BTreeSet;
use std::hash::{Hash, Hasher};
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use cedar_policy::EntityUid;

/// How many stripes the uids are spread over.
pub const STRIPES: usize = 64;

/// The writer locks ([`Directory::writer`](super::Directory)).
pub(crate) struct WriterLocks {
    whole: RwLock<()>,
    stripes: Box<[Mutex<()>]>,
}

/// Held stripes, released when dropped.
pub(crate) struct Claimed<'a> {
    held: Vec<(usize, MutexGuard<'a, ()>)>,
}

impl Claimed<'_> {
    fn holds(&self, stripe: usize) -> bool {
        self.held.iter().any(|(i, _)| *i == stripe)
    }

    /// Whether the stripe of `uid` is among these.
    pub(crate) fn covers(&self, key: &str) -> bool {
        self.holds(stripe_of_key(key))
    }
}

impl Default for WriterLocks {
    fn default() -> Self {
        WriterLocks {
            whole: RwLock::new(()),
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
        }
    }
}

impl WriterLocks {
    /// For a write that runs alone: no other write of this directory, and
    /// no feed batch, runs until the guard drops.
    pub(crate) fn alone(&self) -> RwLockWriteGuard<'_, ()> {
        self.whole.write().unwrap_or_else(|p| p.into_inner())
    }

    /// For a write that runs beside others: it must then claim its
    /// entities' stripes ([`WriterLocks::claim`]) before its commit.
    pub(crate) fn beside(&self) -> RwLockReadGuard<'_, ()> {
        self.whole.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The stripes of `keys` (uids in Cedar syntax, as `EntityUid` writes
    /// them: every stored key is).
    pub(crate) fn claim_keys<'k>(
        &self,
        keys: impl IntoIterator<Item = &'k str>,
        except: Option<&[Claimed<'_>]>,
    ) -> Claimed<'_> {
        self.claim(keys.into_iter().map(stripe_of_key), except)
    }

    /// The stripe of `uid`.
    pub(crate) fn claim_uid(&self, uid: &EntityUid, except: Option<&[Claimed<'_>]>) -> Claimed<'_> {
        self.claim([stripe_of_key(&uid.to_string())], except)
    }

    /// Take `stripes`, those already in `except` left out, in ascending order.
    fn claim(
        &self,
        stripes: impl IntoIterator<Item = usize>,
        except: Option<&[Claimed<'_>]>,
    ) -> Claimed<'_> {
        let held = |s: usize| except.is_some_and(|c| c.iter().any(|c| c.holds(s)));
        let wanted: BTreeSet<usize> = stripes.into_iter().filter(|s| !held(*s)).collect();
        Claimed {
            held: wanted
                .into_iter()
                .map(|i| (i, self.stripes[i].lock().unwrap_or_else(|p| p.into_inner())))
                .collect(),
        }
    }
}

/// The stripe of a uid in Cedar syntax.
fn stripe_of_key(key: &str) -> usize {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    (h.finish() % STRIPES as u64) as usize
}
