//! What a load reuses from the loads before it ([`LoadCache`]): each policy
//! file's parse (its policies, index keys, whether it computes with time),
//! its ids and its validation, and the schema's parse and validator; each
//! kept by path and reused only while the file's text is byte for byte the
//! same (and, for ids and validation, the policies before the file and the
//! schema are too).
//!
//! A file's result depends only on its name, its text, the number of
//! policies before it (for the `policyN` of a policy without `@id`) and the
//! schema; so a pack assembled from reused results equals a fresh load's.
//! Only results are kept: a file that fails to parse is parsed again at the
//! next load. One entry per path (the latest that parsed), and paths no
//! longer in the pack are dropped, so the cache holds at most about one pack.
//!
//! Owns what is kept and when it is dropped; it must never decide what a
//! pack is (the module root assembles one by the same steps with or without
//! reused results).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cedar_policy::{EntityUid, Schema, Validator};

use super::clock::{clock_actions, uses_time_arithmetic};
use super::error::LoadError;
use super::identify::{identify_file, parse_policy_file, FileIds, Parsed};
use super::pack::{action_entities, ActionEntities};
use super::schema::parse_schema;
use super::validate::{validate_file, Checked};
use crate::index::IndexKey;

/// The results of earlier loads, reused by [`load_reusing`](super::load_reusing)
/// for files whose text did not change. An empty cache gives a full load.
#[derive(Default)]
pub struct LoadCache {
    schema: Option<Arc<SchemaEntry>>,
    parsed: HashMap<PathBuf, Arc<ParsedFile>>,
    identified: HashMap<PathBuf, Arc<IdentifiedFile>>,
    checked: HashMap<PathBuf, Arc<CheckedFile>>,
    /// Files parsed (not reused) by the last load, for tests and logs.
    parsed_last: usize,
}

impl std::fmt::Debug for LoadCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadCache")
            .field("files", &self.parsed.len())
            .field("parsed_last", &self.parsed_last)
            .finish_non_exhaustive()
    }
}

/// A parsed schema, with what a pack reads of it.
pub(super) struct SchemaEntry {
    path: PathBuf,
    text: String,
    pub(super) schema: Schema,
    pub(super) validator: Validator,
    pub(super) clock_actions: HashSet<EntityUid>,
    pub(super) actions: ActionEntities,
}

/// One policy file as parsed, with what the pack reads of its policies.
pub(super) struct ParsedFile {
    pub(super) text: String,
    pub(super) parsed: Parsed,
    /// The index key of each policy, in file order.
    pub(super) keys: Vec<IndexKey>,
    /// Each policy's text as Cedar shows it (its source text), in file order.
    texts: Vec<String>,
    /// Whether the text may compute with times.
    pub(super) time_arithmetic: bool,
}

/// One file's policies under their pack ids, for the parse and first
/// number they were made from.
pub(super) struct IdentifiedFile {
    source: Arc<ParsedFile>,
    /// The first `policyN` number; `None` when every policy has an `@id`
    /// (the ids do not depend on it).
    first_number: Option<usize>,
    pub(super) ids: FileIds,
}

impl IdentifiedFile {
    /// The parse the ids were made from.
    pub(super) fn source(&self) -> &ParsedFile {
        &self.source
    }
}

/// One file's validation, for the ids and schema it was made from.
pub(super) struct CheckedFile {
    ids: Arc<IdentifiedFile>,
    schema: Arc<SchemaEntry>,
    pub(super) checked: Checked,
}

impl LoadCache {
    /// How many policy files the last load parsed (the others were reused).
    pub fn parsed_last(&self) -> usize {
        self.parsed_last
    }

    /// Start a load of `files`: forget the paths no longer in the pack.
    pub(super) fn begin(&mut self, files: &[PathBuf]) {
        let keep: HashSet<&PathBuf> = files.iter().collect();
        self.parsed.retain(|p, _| keep.contains(p));
        self.identified.retain(|p, _| keep.contains(p));
        self.checked.retain(|p, _| keep.contains(p));
        self.parsed_last = 0;
    }

    /// The schema at `path` with this text: reused when the text is the
    /// same, else parsed (and kept when it parses).
    pub(super) fn schema(
        &mut self,
        path: &Path,
        text: &str,
    ) -> Result<Arc<SchemaEntry>, LoadError> {
        if let Some(s) = &self.schema {
            if s.path == path && s.text == text {
                return Ok(s.clone());
            }
        }
        let schema = parse_schema(path, text)?;
        let entry = Arc::new(SchemaEntry {
            path: path.to_path_buf(),
            text: text.to_string(),
            validator: Validator::new(schema.clone()),
            clock_actions: clock_actions(path, text),
            actions: action_entities(Some(&schema)),
            schema,
        });
        self.schema = Some(entry.clone());
        Ok(entry)
    }

    /// The policy file `file` with this text: reused when the text is the
    /// same, else parsed (and kept when it parses).
    pub(super) fn parsed(
        &mut self,
        file: &Path,
        text: String,
    ) -> Result<Arc<ParsedFile>, LoadError> {
        if let Some(p) = self.parsed.get(file) {
            if p.text == text {
                return Ok(p.clone());
            }
        }
        let parsed = parse_policy_file(file, &text)?;
        self.parsed_last += 1;
        // The index key of a policy whose text the file's last parse held
        // is that one's (computing a key costs more than parsing).
        let known: HashMap<&str, &IndexKey> =
            self.parsed.get(file).map_or_else(HashMap::new, |old| {
                old.texts
                    .iter()
                    .map(String::as_str)
                    .zip(&old.keys)
                    .collect()
            });
        let texts: Vec<String> = parsed.policies.iter().map(ToString::to_string).collect();
        let keys = parsed
            .policies
            .iter()
            .zip(&texts)
            .map(|(p, t)| {
                known
                    .get(t.as_str())
                    .map_or_else(|| IndexKey::of(p), |k| (*k).clone())
            })
            .collect();
        drop(known);
        let entry = Arc::new(ParsedFile {
            keys,
            texts,
            time_arithmetic: uses_time_arithmetic(&text),
            parsed,
            text,
        });
        self.parsed.insert(file.to_path_buf(), entry.clone());
        Ok(entry)
    }

    /// `parsed`'s policies under their pack ids, from `first_number` on:
    /// reused when made from the same parse and number (if it matters).
    pub(super) fn identified(
        &mut self,
        file: &Path,
        parsed: &Arc<ParsedFile>,
        first_number: usize,
    ) -> Arc<IdentifiedFile> {
        let first_number = parsed.parsed.numbered.then_some(first_number);
        if let Some(i) = self.identified.get(file) {
            if Arc::ptr_eq(&i.source, parsed) && i.first_number == first_number {
                return i.clone();
            }
        }
        let ids = identify_file(
            file,
            &parsed.text,
            &parsed.parsed,
            first_number.unwrap_or(0),
        );
        let entry = Arc::new(IdentifiedFile {
            source: parsed.clone(),
            first_number,
            ids,
        });
        self.identified.insert(file.to_path_buf(), entry.clone());
        entry
    }

    /// `ids` validated against `schema`: reused when made from the same ids
    /// and schema.
    pub(super) fn checked(
        &mut self,
        file: &Path,
        ids: &Arc<IdentifiedFile>,
        schema: &Arc<SchemaEntry>,
    ) -> Result<Arc<CheckedFile>, LoadError> {
        if let Some(c) = self.checked.get(file) {
            if Arc::ptr_eq(&c.ids, ids) && Arc::ptr_eq(&c.schema, schema) {
                return Ok(c.clone());
            }
        }
        let checked = validate_file(&schema.validator, file, &ids.source.text, &ids.ids)?;
        let entry = Arc::new(CheckedFile {
            ids: ids.clone(),
            schema: schema.clone(),
            checked,
        });
        self.checked.insert(file.to_path_buf(), entry.clone());
        Ok(entry)
    }
}
