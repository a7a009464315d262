//! Registered metric handles kept by label set: the `metrics` macros look a
//! labelled series up (and allocate its labels) on every call, about a
//! microsecond on the decision path; a handle registered once is not.
//!
//! Owns [`Handles`]. It must never know which metrics exist, their names or
//! their labels.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::RwLock;

/// The handles of one metric, by label set.
pub struct Handles<K, H> {
    map: RwLock<HashMap<K, H>>,
}

impl<K, H> Default for Handles<K, H> {
    fn default() -> Self {
        Handles {
            map: RwLock::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash, H: Clone> Handles<K, H> {
    /// The handle of `key`'s label set, registered by `register` the first
    /// time. A poisoned lock costs only the saving: the handle is
    /// registered again and still returned.
    pub fn get(&self, key: K, register: impl FnOnce(&K) -> H) -> H {
        if let Some(h) = self.map.read().ok().and_then(|m| m.get(&key).cloned()) {
            return h;
        }
        let h = register(&key);
        if let Ok(mut m) = self.map.write() {
            m.insert(key, h.clone());
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_once_per_label_set() {
        let handles: Handles<(&str, String), usize> = Handles::default();
        let mut registered = 0;
        for (i, key) in [("a", "x"), ("a", "y"), ("a", "x"), ("b", "x"), ("a", "y")]
            .into_iter()
            .enumerate()
        {
            let h = handles.get((key.0, key.1.to_string()), |_| {
                registered += 1;
                i
            });
            let first = match key {
                ("a", "x") => 0,
                ("a", "y") => 1,
                _ => 3,
            };
            assert_eq!(h, first, "{key:?} keeps the handle registered first");
        }
        assert_eq!(registered, 3);
    }
}
