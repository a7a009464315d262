//! The write path: every writer takes the directory's one writer lock, so
//! the store and memory apply writes in the same order; entities are
//! validated against the schema, committed in one store transaction, then
//! put into memory. [`Directory::put_guarded`] (a deadline, an
//! `Idempotency-Key`), [`Directory::put_recorded`] (change records),
//! [`Directory::delete`], [`Directory::commit_with`] for writers that run
//! their own store transaction, and [`Directory::apply_changes`] for the
//! change feed; a committed entity that cannot be read back is logged and
//! counted, never dropped silently.
//!
//! Owns the order of a write's steps; it must never know how a decision
//! walks the entities.

use std::collections::HashSet;
use std::sync::atomic::Ordering;

use cedar_policy::{Entity, EntityUid, Schema};

use super::error::DirectoryError;
use super::held::Held;
use super::memory::{loaded, uid_from_key, Directory};
use crate::store::{Change, CurrentRows, EntityRecord, FullLoad, StoreError};

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

impl Directory {
    /// Apply changes another replica committed (from a change feed), in
    /// order: memory only, under the writer lock. Unreadable rows are logged,
    /// counted ([`Directory::dropped`]) and skipped. A feed applies
    /// [`Directory::apply_current`] instead: a change read late may be
    /// older than what memory holds.
    pub fn apply_changes(&self, changes: Vec<Change>) {
        let _beside = self.writer.beside();
        let _claimed = self
            .writer
            .claim_keys(changes.iter().map(|c| c.uid.as_str()), None);
        self.apply_states(changes);
    }

    /// Apply a change feed's batch as the rows of its uids are committed
    /// now, read by `current` while the stripes of the batch's uids are held
    /// (beside other writers). Every write of this replica holds its
    /// entities' stripes from before its store commit until memory holds
    /// it, so what `current` reads is at least as new as anything memory holds: a
    /// change of this replica's own, or another's older than a write memory
    /// already has, cannot take memory back, even for the time between two
    /// batches. An error of `current` applies nothing (the feed reads the
    /// batch again).
    pub fn apply_current(
        &self,
        changes: Vec<Change>,
        current: &mut CurrentRows<'_>,
    ) -> Result<(), StoreError> {
        let _beside = self.writer.beside();
        let _claimed = self
            .writer
            .claim_keys(changes.iter().map(|c| c.uid.as_str()), None);
        let uids: Vec<String> = changes.iter().map(|c| c.uid.clone()).collect();
        let mut rows: std::collections::HashMap<String, Option<String>> =
            current(&uids)?.into_iter().collect();
        let mut states = Vec::with_capacity(changes.len());
        for c in changes {
            // A uid the reader did not answer for is an error, never an
            // absence: absent would remove the entity from memory.
            let Some(json) = rows.remove(&c.uid) else {
                return Err(StoreError::Backend(format!(
                    "the current rows lack {}",
                    c.uid
                )));
            };
            states.push(Change { json, ..c });
        }
        self.apply_states(states);
        Ok(())
    }

    /// Replace memory with every row `load` streams (a change feed that
    /// lost changes to compaction reloads this way), under the writer lock:
    /// an entity whose row is unchanged keeps its version, one without a
    /// row leaves memory, and a row that cannot be read is logged and
    /// counted ([`Directory::dropped`]), never fatal. A failing `load`
    /// leaves memory as it was, apart from the rows it had already put in
    /// (each one as committed): nothing is removed.
    pub fn reload(&self, load: &mut FullLoad<'_>) -> Result<usize, StoreError> {
        let _alone = self.writer.alone();
        let mut seen: HashSet<EntityUid> = HashSet::new();
        load(&mut |row| {
            let key = row.uid.clone();
            let read = loaded(
                &mut self.types.lock().unwrap_or_else(|p| p.into_inner()),
                row,
            );
            match read {
                Ok((uid, s)) => {
                    let same = self.held(&uid).is_some_and(|h| h.json == s.json);
                    seen.insert(uid.clone());
                    if !same {
                        self.insert(uid, s);
                    }
                }
                Err(e) => {
                    self.dropped.fetch_add(1, Ordering::AcqRel);
                    metrics::counter!("partnergate_directory_dropped_total").increment(1);
                    tracing::error!(uid = key, reason = %e,
                        "directory: a stored entity is unreadable on reload; memory differs from the store for it");
                }
            }
        })?;
        let gone: Vec<EntityUid> = self
            .entities
            .iter()
            .filter(|e| !seen.contains(e.key()))
            .map(|e| e.key().clone())
            .collect();
        for uid in &gone {
            self.remove(uid);
        }
        Ok(seen.len())
    }

    /// Put each change's state into memory (a `None` JSON removes the
    /// entity); the caller holds the writer lock.
    fn apply_states(&self, changes: Vec<Change>) {
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
    /// `write` is given the lock as [`Held`], through which it may bring
    /// memory up to the state its own transaction reads before it commits.
    pub fn commit_with<T, E>(
        &self,
        schema: Option<&Schema>,
        write: impl FnOnce(&Held<'_>) -> Result<(Vec<EntityRecord>, T), E>,
    ) -> Result<T, E> {
        let _alone = self.writer.alone();
        let held = Held::alone(self, schema);
        let (records, out) = write(&held)?;
        for r in &records {
            self.apply_json(&r.uid, &r.json, schema);
        }
        Ok(out)
    }

    /// [`Directory::commit_with`] beside other writers (the writes of
    /// different accounts, which the store's own locks keep apart): `write`
    /// must claim the stripes of the entities it writes ([`Held::claim`])
    /// before its store transaction commits; they are held until memory
    /// holds what it committed. Writes that must run alone wait for it,
    /// and it for them.
    pub fn commit_beside<T, E>(
        &self,
        schema: Option<&Schema>,
        write: impl FnOnce(&Held<'_>) -> Result<(Vec<EntityRecord>, T), E>,
    ) -> Result<T, E> {
        let _beside = self.writer.beside();
        let held = Held::beside(self, schema);
        let (records, out) = write(&held)?;
        if !held.claims(records.iter().map(|r| r.uid.as_str())) {
            tracing::error!(
                "directory: a write committed entities whose stripes it had not claimed"
            );
            held.claim(records.iter().map(|r| r.uid.as_str()));
        }
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
    pub(super) fn apply_json(&self, uid: &str, json: &str, schema: Option<&Schema>) {
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
        let _alone = self.writer.alone();
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
        let _alone = self.writer.alone();
        let n = self.backend.delete(&keys)?;
        for u in uids {
            self.remove(u);
        }
        Ok(n)
    }
}

/// The stored form of an entity: its record and its Cedar entity JSON.
pub(super) fn to_record(
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
