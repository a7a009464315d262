//! The records of a log after a given seq, in chain order ([`After`]), for
//! a shipper that copies the log elsewhere and keeps, there, how far it
//! got: whole (newline-terminated) records only, files that end at or
//! before the seq skipped by their last line, and every record checked to
//! continue the chain the copy holds (the seq one more, the `prev_hash` the
//! last copied record's hash), so that a log repaired or edited after its
//! records were copied is reported, not continued as if it were the same
//! chain.
//!
//! Knows nothing of where the records go.

use std::io;
use std::path::Path;

use serde_json::Value;

use super::files::{chain_files, tail, LineReader};
use super::link::parse_link;
use crate::error::AuditError;

/// One record to copy: its chain fields, the fields a copy indexes, and
/// the line exactly as written (its hash covers it).
#[derive(Debug, Clone)]
pub struct Shippable {
    /// The record's seq.
    pub seq: u64,
    /// The previous record's hash.
    pub prev_hash: String,
    /// The hash the record states (not recomputed here: a copy keeps the
    /// record as written and `verify` over the copy checks it).
    pub hash: String,
    /// The record's time as written (RFC 3339 UTC).
    pub ts: String,
    /// The record's kind as written, if any.
    pub kind: Option<String>,
    /// The writer's replica name, if the record has one.
    pub replica: Option<String>,
    /// The line as written, without its newline.
    pub text: String,
}

/// Reads the records of a log after a given seq, in chain order.
pub struct After {
    reader: LineReader,
    after: u64,
    last: Option<(u64, String)>,
}

impl After {
    /// The records of the log at `path` with a seq above `after`; `head`
    /// is the hash of the record at `after` as the copy holds it (None when
    /// nothing was copied, `after` 0), which the first record returned must
    /// name as its `prev_hash`.
    pub fn open(path: &Path, after: u64, head: Option<&str>) -> Result<Self, AuditError> {
        let files = chain_files(path).map_err(|e| AuditError::io(path, e))?;
        if files.is_empty() {
            return Err(AuditError::io(
                path,
                io::Error::new(io::ErrorKind::NotFound, "no such log file"),
            ));
        }
        // Leave out the oldest files whose last record is already copied;
        // a file whose end cannot be read is read through.
        let skip = files
            .iter()
            .take(files.len() - 1)
            .take_while(|f| last_seq(f).is_some_and(|s| s <= after))
            .count();
        Ok(After {
            reader: LineReader::from_files(files.into_iter().skip(skip).collect()),
            after,
            last: head.map(|h| (after, h.to_string())),
        })
    }

    /// The next record, `None` at the end of the log or at a line still
    /// being written (no newline yet); an error when a line is not a
    /// record or a record does not continue the chain.
    pub fn next_record(&mut self) -> Result<Option<Shippable>, AuditError> {
        while let Some(line) = self.reader.next_line()? {
            if !line.terminated {
                return Ok(None);
            }
            let (obj, link) = parse_link(&line.text, &line.location)?;
            if link.seq <= self.after {
                continue;
            }
            if let Some((seq, hash)) = &self.last {
                if link.seq != seq + 1 || &link.prev_hash != hash {
                    return Err(AuditError::Diverged {
                        location: line.location,
                        message: format!(
                            "seq {} (prev_hash {}) does not follow seq {seq} (hash {hash}) as copied: records are missing, or the log was repaired or edited after they were copied; `partnergate audit verify` on the log and on the copy locates it",
                            link.seq, link.prev_hash
                        ),
                    });
                }
            }
            let text_of = |k: &str| obj.get(k).and_then(Value::as_str).map(str::to_string);
            let record = Shippable {
                seq: link.seq,
                ts: text_of("ts").unwrap_or_default(),
                kind: text_of("kind"),
                replica: text_of("replica"),
                prev_hash: link.prev_hash,
                hash: link.hash,
                text: line.text,
            };
            self.last = Some((record.seq, record.hash.clone()));
            return Ok(Some(record));
        }
        Ok(None)
    }
}

/// The seq of the last whole record of the log at `path` (its active file,
/// or the newest rotated file when the active one is empty), if readable.
pub fn newest_seq(path: &Path) -> Option<u64> {
    let files = chain_files(path).ok()?;
    files.iter().rev().find_map(|f| last_seq(f))
}

/// The seq of the last whole record of one file, if it has one.
fn last_seq(file: &Path) -> Option<u64> {
    let line = tail(file).ok()?.last_line?;
    let v: Value = serde_json::from_str(&line).ok()?;
    v.get("seq").and_then(Value::as_u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{compute_hash, GENESIS_HASH};
    use serde_json::{json, Map};

    fn line(seq: u64, prev: &str) -> (String, String) {
        let mut obj: Map<String, Value> = json!({
            "seq": seq, "ts": "2026-12-07T05:00:00Z", "kind": "reload", "prev_hash": prev
        })
        .as_object()
        .cloned()
        .unwrap();
        let h = compute_hash(&obj);
        obj.insert("hash".into(), Value::String(h.clone()));
        (serde_json::to_string(&obj).unwrap(), h)
    }

    fn chain(n: u64) -> (Vec<String>, Vec<String>) {
        let (mut lines, mut hashes) = (Vec::new(), Vec::new());
        let mut prev = GENESIS_HASH.to_string();
        for seq in 1..=n {
            let (l, h) = line(seq, &prev);
            lines.push(l);
            hashes.push(h.clone());
            prev = h;
        }
        (lines, hashes)
    }

    #[test]
    fn reads_after_a_seq_across_rotated_files_and_stops_at_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.jsonl");
        let (lines, hashes) = chain(6);
        std::fs::write(dir.path().join("d.jsonl.1"), lines[..3].join("\n") + "\n").unwrap();
        std::fs::write(&path, lines[3..].join("\n") + "\n{\"seq\":7").unwrap();
        let seqs = |after: u64, head: Option<&str>| {
            let mut a = After::open(&path, after, head).unwrap();
            let mut out = Vec::new();
            while let Some(r) = a.next_record().unwrap() {
                out.push(r.seq);
            }
            out
        };
        assert_eq!(seqs(0, None), [1, 2, 3, 4, 5, 6]);
        assert_eq!(seqs(3, Some(&hashes[2])), [4, 5, 6]);
        assert_eq!(seqs(6, Some(&hashes[5])), Vec::<u64>::new());
        assert_eq!(newest_seq(&path), Some(6));
    }

    #[test]
    fn a_log_that_does_not_continue_the_copy_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.jsonl");
        let (lines, hashes) = chain(4);
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        // The copy holds another record at seq 2.
        let mut a = After::open(&path, 2, Some(&hashes[0])).unwrap();
        let e = a.next_record().unwrap_err().to_string();
        assert!(e.contains("does not follow seq 2"), "{e}");
        // A record missing from the log after what was copied.
        let without_3 = [&lines[..2], &lines[3..]].concat();
        std::fs::write(&path, without_3.join("\n") + "\n").unwrap();
        let mut a = After::open(&path, 2, Some(&hashes[1])).unwrap();
        assert!(a.next_record().is_err());
    }
}
