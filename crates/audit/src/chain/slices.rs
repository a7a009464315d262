//! The entity slices a file carries ([`FileSlices`]), for readers that
//! resolve a decision's `entities_hash` within its file.
//!
//! Knows nothing of the record format: a slice is whatever the reader keeps.

use std::path::PathBuf;

use crate::error::Location;

/// The entity slices carried inline (`entities`) by the records of the file
/// being read, by `entities_hash`, for readers that resolve a decision's
/// `entities_hash` ([`crate::replay`], [`crate::query`]). A log file stands
/// alone (the writer carries each slice again in every file), so moving on
/// to another file forgets what the last one carried.
#[derive(Debug)]
pub struct FileSlices<T> {
    file: PathBuf,
    by_hash: std::collections::HashMap<String, T>,
}

impl<T> Default for FileSlices<T> {
    fn default() -> Self {
        FileSlices {
            file: PathBuf::new(),
            by_hash: std::collections::HashMap::new(),
        }
    }
}

impl<T> FileSlices<T> {
    /// Note where the reader is; call before `insert`/`get` for each record.
    pub fn at(&mut self, location: &Location) {
        if location.file != self.file {
            self.file.clone_from(&location.file);
            self.by_hash.clear();
        }
    }

    /// Keep the slice a record carries (the first copy of a hash wins).
    pub fn insert(&mut self, hash: String, slice: T) -> &T {
        self.by_hash.entry(hash).or_insert(slice)
    }

    /// The slice of this file named `hash`.
    pub fn get(&self, hash: &str) -> Option<&T> {
        self.by_hash.get(hash)
    }
}
