//! Bulk loads: a Cedar entity JSON array validated in parallel (one chunk
//! per core) and written to a backend in one transaction, all or nothing,
//! without loading it into memory.
//!
//! Owns the bulk path; it must never know the in-memory directory.

use std::collections::HashSet;

use cedar_policy::{Entity, EntityUid, Schema};

use super::error::DirectoryError;
use super::write::to_record;
use crate::store::{EntityBackend, EntityRecord, StoreError};

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
