//! Newest-first pages of a decision log, for an explorer: the records that
//! [`query`](super::query::query) selects with the same [`Filter`], in the
//! reverse order, read from the end of the newest file backwards in
//! fixed-size chunks. The first page of a large log costs what the page
//! holds, not what the log holds; memory is bounded by the page and the
//! longest line; a scan stops after a byte budget and returns a cursor to
//! go on from, so a filter that matches nothing cannot keep a request busy.
//!
//! A [`Cursor`] names a record by its sequence number and byte offset: the
//! next page holds only records older than it. Rotation renames files but
//! never changes their bytes, so a cursor is found again in whichever file
//! holds that record now.
//!
//! Also here: [`histogram`] (allows and denies over time, on the same scan)
//! and [`find_slice`] (the slice a decision names by `entities_hash`,
//! looked up backwards in its own file).
//!
//! Must never know HTTP or how pages are rendered.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use time::OffsetDateTime;

use super::chain::chain_files;
use super::query::{Filter, Head};
use super::record::Kind;
use crate::error::AuditError;
use partnergate_policy::engine::Effect;

/// Bytes read per step backwards.
const CHUNK: usize = 256 * 1024;

/// Where the next (older) page starts: strictly before the record with
/// sequence number `seq` that starts at byte `offset` of its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// The record's sequence number.
    pub seq: u64,
    /// The byte offset where the record's line starts in its file.
    pub offset: u64,
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.seq, self.offset)
    }
}

impl std::str::FromStr for Cursor {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("`{s}` is not a log cursor (SEQ.OFFSET)");
        let (seq, offset) = s.split_once('.').ok_or_else(bad)?;
        Ok(Cursor {
            seq: seq.parse().map_err(|_| bad())?,
            offset: offset.parse().map_err(|_| bad())?,
        })
    }
}

/// One selected record.
#[derive(Debug, Clone)]
pub struct Found {
    /// The file that holds it now.
    pub file: PathBuf,
    /// The byte offset of its line in `file`.
    pub offset: u64,
    /// The line as written (without the newline).
    pub text: String,
    /// Its head fields.
    pub head: Head,
}

impl Found {
    /// The cursor of this record (the next page starts before it).
    pub fn cursor(&self) -> Cursor {
        Cursor {
            seq: self.head.seq,
            offset: self.offset,
        }
    }
}

/// A page of records, newest first.
#[derive(Debug, Clone, Default)]
pub struct Page {
    /// The selected records, newest first.
    pub records: Vec<Found>,
    /// Where the next page starts, when older records remain to be read.
    pub next: Option<Cursor>,
    /// Bytes of log read for this page.
    pub scanned_bytes: u64,
    /// Records read for this page.
    pub scanned_records: u64,
    /// The scan stopped at the byte budget before the page was full.
    pub budget_hit: bool,
}

/// The lines of one file, last first.
struct Backwards {
    file: File,
    path: PathBuf,
    /// The file's bytes `[start, start + data.len())` not yet returned.
    data: Vec<u8>,
    start: u64,
}

impl Backwards {
    /// Read `path` backwards from byte `end` (exclusive).
    fn open(path: &Path, end: u64) -> Result<Self, AuditError> {
        let file = File::open(path).map_err(|e| AuditError::io(path, e))?;
        Ok(Backwards {
            file,
            path: path.to_path_buf(),
            data: Vec::new(),
            start: end,
        })
    }

    /// Read the chunk before `start` into the front of `data`.
    fn read_more(&mut self) -> Result<(), AuditError> {
        let want = CHUNK.max(self.data.len()) as u64;
        let from = self.start.saturating_sub(want);
        let len = usize::try_from(self.start - from).unwrap_or(CHUNK);
        let mut chunk = vec![0u8; len];
        self.file
            .seek(SeekFrom::Start(from))
            .and_then(|_| self.file.read_exact(&mut chunk))
            .map_err(|e| AuditError::io(&self.path, e))?;
        chunk.extend_from_slice(&self.data);
        self.data = chunk;
        self.start = from;
        Ok(())
    }

    /// The previous line: its offset, its bytes (without the newline) and
    /// whether it ended with one.
    fn prev(&mut self) -> Result<Option<(u64, Vec<u8>, bool)>, AuditError> {
        loop {
            if self.data.is_empty() && self.start == 0 {
                return Ok(None);
            }
            let terminated = self.data.last() == Some(&b'\n');
            let body = if terminated {
                self.data.len() - 1
            } else {
                self.data.len()
            };
            if let Some(i) = self.data[..body].iter().rposition(|&b| b == b'\n') {
                let line = self.data[i + 1..body].to_vec();
                self.data.truncate(i + 1);
                return Ok(Some((self.start + i as u64 + 1, line, terminated)));
            }
            if self.start == 0 {
                let line = self.data[..body].to_vec();
                self.data.clear();
                return Ok(Some((0, line, terminated)));
            }
            self.read_more()?;
        }
    }
}

/// The head of the line starting at `offset` of `path`, if it is one.
fn head_at(path: &Path, offset: u64) -> Option<Head> {
    serde_json::from_str(&line_at(path, offset).ok()?).ok()
}

/// The line of `path` that starts at byte `offset`, without its newline.
fn line_at(path: &Path, offset: u64) -> std::io::Result<String> {
    let mut f = File::open(path)?;
    f.seek(SeekFrom::Start(offset))?;
    let mut line = Vec::new();
    BufReader::new(f).read_until(b'\n', &mut line)?;
    if line.last() == Some(&b'\n') {
        line.pop();
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

/// The chain files newest first, each with where reading starts: the
/// whole file, or for the one holding `before`, that record's offset.
fn plan(path: &Path, before: Option<Cursor>) -> Result<Vec<(PathBuf, u64)>, AuditError> {
    let mut files = chain_files(path).map_err(|e| AuditError::io(path, e))?;
    files.reverse();
    let Some(c) = before else {
        return files
            .into_iter()
            .map(|f| {
                let len = std::fs::metadata(&f)
                    .map_err(|e| AuditError::io(&f, e))?
                    .len();
                Ok((f, len))
            })
            .collect();
    };
    let at = files
        .iter()
        .position(|f| head_at(f, c.offset).is_some_and(|h| h.seq == c.seq))
        .ok_or_else(|| {
            AuditError::Cursor(format!(
                "no record {} at byte {} in any file of {}: the log was rotated away or replaced",
                c.seq,
                c.offset,
                path.display()
            ))
        })?;
    let mut out = vec![(files[at].clone(), c.offset)];
    for f in files.into_iter().skip(at + 1) {
        let len = std::fs::metadata(&f)
            .map_err(|e| AuditError::io(&f, e))?
            .len();
        out.push((f, len));
    }
    Ok(out)
}

/// The record `at` names, in whichever file holds it now.
pub fn record_at(path: &Path, at: Cursor) -> Result<Found, AuditError> {
    let files = plan(path, Some(at))?;
    let file = files
        .into_iter()
        .next()
        .map(|(f, _)| f)
        .ok_or_else(|| AuditError::Cursor(format!("no record {at}")))?;
    let text = line_at(&file, at.offset).map_err(|e| AuditError::io(&file, e))?;
    let head: Head = serde_json::from_str(&text).map_err(|e| AuditError::Cursor(e.to_string()))?;
    Ok(Found {
        file,
        offset: at.offset,
        text,
        head,
    })
}

/// Visit the records of the log at `path` newest first (before `before`,
/// if given), decoding the head of each line that could match `filter`,
/// until `visit` says stop or `budget` bytes were read. Returns the bytes
/// and records read and the cursor of the last record read (None when the
/// oldest record was reached).
fn scan(
    path: &Path,
    filter: &Filter,
    before: Option<Cursor>,
    budget: u64,
    mut visit: impl FnMut(Found) -> bool,
) -> Result<(u64, u64, Option<Cursor>, bool), AuditError> {
    let needles = filter.needles();
    let (mut bytes, mut records) = (0u64, 0u64);
    let mut last: Option<Cursor>;
    let files = plan(path, before)?;
    for (i, (file, end)) in files.into_iter().enumerate() {
        let mut lines = Backwards::open(&file, end)?;
        // Only the active file's last line may be torn (mid-write); the
        // active file is `path` itself (the rotated ones are `PATH.N`).
        let may_be_torn = i == 0 && before.is_none() && file == path;
        let mut first = true;
        while let Some((offset, line, terminated)) = lines.prev()? {
            let torn = first && may_be_torn && !terminated;
            first = false;
            if torn || line.is_empty() {
                continue;
            }
            bytes += line.len() as u64 + 1;
            records += 1;
            let text = String::from_utf8_lossy(&line);
            let candidate = needles.iter().all(|n| text.contains(n));
            let head: Option<Head> = if candidate {
                Some(
                    serde_json::from_str(&text).map_err(|e| AuditError::Malformed {
                        location: crate::chain::Location {
                            file: file.clone(),
                            line: 0,
                        },
                        message: format!("not a decision log record at byte {offset}: {e}"),
                    })?,
                )
            } else {
                // Only the sequence number is needed for the cursor.
                serde_json::from_str::<SeqOnly>(&text).ok().map(|s| Head {
                    seq: s.seq,
                    ..Head::default()
                })
            };
            let Some(head) = head else { continue };
            last = Some(Cursor {
                seq: head.seq,
                offset,
            });
            if candidate && filter.matches(&head) {
                let found = Found {
                    file: file.clone(),
                    offset,
                    text: text.into_owned(),
                    head,
                };
                if !visit(found) {
                    return Ok((bytes, records, last, false));
                }
            }
            if bytes >= budget {
                return Ok((bytes, records, last, true));
            }
        }
    }
    Ok((bytes, records, None, false))
}

#[derive(serde::Deserialize)]
struct SeqOnly {
    seq: u64,
}

/// The newest `limit` records of the log at `path` that `filter` selects,
/// older than `before` if given; at most `budget` bytes are read (then the
/// page may be short, with `budget_hit` and a cursor to go on from).
pub fn newest_first(
    path: &Path,
    filter: &Filter,
    before: Option<Cursor>,
    limit: usize,
    budget: u64,
) -> Result<Page, AuditError> {
    let mut page = Page::default();
    if limit == 0 {
        return Ok(page);
    }
    let (bytes, records, last, budget_hit) = scan(path, filter, before, budget, |found| {
        page.records.push(found);
        page.records.len() < limit
    })?;
    page.scanned_bytes = bytes;
    page.scanned_records = records;
    page.budget_hit = budget_hit;
    page.next = match page.records.last() {
        // A full page: go on before its oldest record.
        Some(r) if page.records.len() == limit => Some(r.cursor()),
        _ => last,
    };
    Ok(page)
}

/// Allows and denies per time bucket, oldest bucket first.
#[derive(Debug, Clone, Default)]
pub struct Histogram {
    /// Bucket width in seconds.
    pub width_s: i64,
    /// `(bucket start, allows, denies)`, oldest first.
    pub buckets: Vec<(OffsetDateTime, u64, u64)>,
    /// The scan stopped at the byte budget: older decisions are not counted.
    pub partial: bool,
    /// Decisions counted.
    pub decisions: u64,
}

/// Count the decisions `filter` selects per time bucket (at most
/// `max_buckets` of a round width), newest first until `budget` bytes.
pub fn histogram(
    path: &Path,
    filter: &Filter,
    max_buckets: usize,
    budget: u64,
) -> Result<Histogram, AuditError> {
    let rfc = time::format_description::well_known::Rfc3339;
    let mut seconds: Vec<(i64, bool)> = Vec::new();
    let filter = Filter {
        kind: Some(Kind::Decision),
        ..filter.clone()
    };
    let (_, _, _, partial) = scan(path, &filter, None, budget, |f| {
        if let (Ok(ts), Some(d)) = (OffsetDateTime::parse(&f.head.ts, &rfc), f.head.decision) {
            seconds.push((ts.unix_timestamp(), d == Effect::Allow));
        }
        true
    })?;
    Ok(buckets(seconds, max_buckets, partial))
}

/// The histogram of `seconds` (each decision's unix time and whether it
/// was an Allow): at most `max_buckets` of a round width, oldest first.
pub fn buckets(seconds: Vec<(i64, bool)>, max_buckets: usize, partial: bool) -> Histogram {
    let mut out = Histogram {
        partial,
        decisions: seconds.len() as u64,
        ..Histogram::default()
    };
    let (Some(lo), Some(hi)) = (
        seconds.iter().map(|s| s.0).min(),
        seconds.iter().map(|s| s.0).max(),
    ) else {
        return out;
    };
    let span = (hi - lo + 1).max(1);
    let widths = [1, 10, 60, 300, 900, 3600, 6 * 3600, 86_400, 7 * 86_400];
    let max = i64::try_from(max_buckets.max(1)).unwrap_or(60);
    let width = widths
        .iter()
        .copied()
        .find(|w| span / w < max)
        .unwrap_or(30 * 86_400);
    let first = lo - lo.rem_euclid(width);
    let n = usize::try_from((hi - first) / width + 1).unwrap_or(1);
    let mut counts = vec![(0u64, 0u64); n];
    for (t, allow) in seconds {
        let i = usize::try_from((t - first) / width).unwrap_or(0).min(n - 1);
        if allow {
            counts[i].0 += 1;
        } else {
            counts[i].1 += 1;
        }
    }
    out.width_s = width;
    out.buckets = counts
        .into_iter()
        .enumerate()
        .map(|(i, (a, d))| {
            let start = first + width * i64::try_from(i).unwrap_or(0);
            let t =
                OffsetDateTime::from_unix_timestamp(start).unwrap_or(OffsetDateTime::UNIX_EPOCH);
            (t, a, d)
        })
        .collect();
    out
}

/// The slice (Cedar entity JSON, as written) named `hash` that a decision
/// at `offset` of `file` refers to: carried inline by the first record of
/// that file that used it, so it is looked for backwards from the
/// decision. None when not found within `budget` bytes.
pub fn find_slice(
    file: &Path,
    offset: u64,
    hash: &str,
    budget: u64,
) -> Result<Option<serde_json::Value>, AuditError> {
    #[derive(serde::Deserialize)]
    struct Carried {
        #[serde(default)]
        entities_hash: Option<String>,
        #[serde(default)]
        entities: Option<serde_json::Value>,
    }
    let mut lines = Backwards::open(file, offset)?;
    let mut bytes = 0u64;
    while let Some((_, line, _)) = lines.prev()? {
        bytes += line.len() as u64 + 1;
        let text = String::from_utf8_lossy(&line);
        if text.contains(hash) && text.contains("\"entities\":") {
            if let Ok(Carried {
                entities_hash: Some(h),
                entities: Some(e),
            }) = serde_json::from_str::<Carried>(&text)
            {
                if h == hash {
                    return Ok(Some(e));
                }
            }
        }
        if bytes >= budget {
            break;
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write_lines(path: &Path, lines: &[String], torn: Option<&str>) {
        let mut f = File::create(path).unwrap();
        for l in lines {
            writeln!(f, "{l}").unwrap();
        }
        if let Some(t) = torn {
            write!(f, "{t}").unwrap();
        }
    }

    fn rec(seq: u64, who: &str, pad: usize) -> String {
        format!(
            r#"{{"seq":{seq},"ts":"2026-12-03T10:00:{:02}Z","kind":"decision","principal":"User::\"{who}\"","decision":"Allow","pad":"{}"}}"#,
            seq % 60,
            "x".repeat(pad)
        )
    }

    #[test]
    fn pages_walk_back_across_chunks_and_files_without_the_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.jsonl");
        // Rotated file: seq 1..=300 (long lines cross chunk borders); active: 301..=400.
        let old: Vec<String> = (1..=300)
            .map(|s| rec(s, if s % 3 == 0 { "bob" } else { "alice" }, 3000))
            .collect();
        write_lines(&super::super::chain::rotated_path(&path, 1), &old, None);
        let new: Vec<String> = (301..=400)
            .map(|s| rec(s, if s % 3 == 0 { "bob" } else { "alice" }, 10))
            .collect();
        write_lines(&path, &new, Some(r#"{"seq":401,"ts":"#));
        let filter = Filter {
            principal: Some("bob".into()),
            ..Filter::default()
        };
        let mut seen = Vec::new();
        let mut before = None;
        loop {
            let page = newest_first(&path, &filter, before, 7, u64::MAX).unwrap();
            seen.extend(page.records.iter().map(|r| r.head.seq));
            match page.next {
                Some(c) => before = Some(c),
                None => break,
            }
        }
        let expected: Vec<u64> = (1..=400).rev().filter(|s| s % 3 == 0).collect();
        assert_eq!(seen, expected);
    }

    #[test]
    fn a_budget_stops_the_scan_with_a_cursor_to_go_on_from() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.jsonl");
        let lines: Vec<String> = (1..=1000).map(|s| rec(s, "alice", 100)).collect();
        write_lines(&path, &lines, None);
        let filter = Filter {
            principal: Some("nobody".into()),
            ..Filter::default()
        };
        let page = newest_first(&path, &filter, None, 10, 10_000).unwrap();
        assert!(page.records.is_empty());
        assert!(page.budget_hit);
        let next = page.next.expect("a cursor");
        assert!(next.seq > 900, "stopped early: {next}");
        let rest = newest_first(&path, &Filter::default(), Some(next), 1, u64::MAX).unwrap();
        assert_eq!(rest.records[0].head.seq, next.seq - 1);
    }

    #[test]
    fn cursors_parse_and_a_stale_cursor_is_an_error() {
        let c: Cursor = "12.345".parse().unwrap();
        assert_eq!(
            c,
            Cursor {
                seq: 12,
                offset: 345
            }
        );
        assert!("12".parse::<Cursor>().is_err());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.jsonl");
        write_lines(&path, &[rec(1, "a", 1), rec(2, "a", 1)], None);
        assert!(newest_first(
            &path,
            &Filter::default(),
            Some(Cursor { seq: 9, offset: 0 }),
            5,
            u64::MAX
        )
        .is_err());
    }
}
