//! [`verify`]: the whole chain checked record by record (every hash
//! matches its record, every `prev_hash` the previous record's hash, every
//! `seq` the previous plus one), and the first break classified as edited,
//! missing, inserted or reordered by reading ahead for the record that
//! really follows.
//!
//! A chain starts at the genesis hash, or at a record that a `retention`
//! record of the chain names as the first record kept after the writer
//! deleted the oldest rotated files; any other start is records missing.
//!
//! Knows nothing of the writer.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::Value;

use super::files::{chain_files, Line, LineReader, Lines};
use super::link::{parse_link, Link};
use super::report::{BreakKind, ChainBreak, GapFound, RetentionFound, VerifyReport};
use crate::error::AuditError;
use crate::record::{ChainStart, GapInfo, RetentionInfo, GENESIS_HASH};

/// Check the whole chain of the log at `path` (with its rotated files):
/// every hash matches its record, every `prev_hash` the previous record's
/// hash, every `seq` the previous plus one, and the first record starts at
/// the genesis hash or is the first record kept that a retention record of
/// the chain names. Streams; memory does not grow with the log.
pub fn verify(path: &Path) -> Result<VerifyReport, AuditError> {
    let never = AtomicBool::new(false);
    // `never` is never set: the scan always runs to its end.
    verify_until(path, &never).map(|r| r.unwrap_or_else(|| empty_report(Vec::new())))
}

/// A report of nothing checked yet, over `files`.
fn empty_report(files: Vec<PathBuf>) -> VerifyReport {
    VerifyReport {
        files,
        records: 0,
        first_seq: None,
        last_seq: None,
        last_hash: None,
        problem: None,
        gaps: Vec::new(),
        records_not_logged: 0,
        retentions: Vec::new(),
        start_stated_by: None,
    }
}

/// [`verify`], checking `stop` as it reads: None when `stop` was set before
/// the scan ended (a timed-out request, a server stopping).
pub fn verify_until(path: &Path, stop: &AtomicBool) -> Result<Option<VerifyReport>, AuditError> {
    let files = chain_files(path).map_err(|e| AuditError::io(path, e))?;
    if files.is_empty() {
        return Err(AuditError::io(
            path,
            io::Error::new(io::ErrorKind::NotFound, "no such log file"),
        ));
    }
    let mut reader = LineReader::from_files(files.clone());
    verify_lines(files, &mut reader, stop)
}

/// [`verify_until`] over any source of lines in chain order (records read
/// back from a database, say), reported as over `files` (none for such a
/// source). The same checks, the same classification of the first break.
pub fn verify_lines(
    files: Vec<PathBuf>,
    reader: &mut dyn Lines,
    stop: &AtomicBool,
) -> Result<Option<VerifyReport>, AuditError> {
    verify_lines_from(files, reader, stop, None)
}

/// [`verify_lines`] of a chain whose start may also be `stated`: a start
/// stated outside the chain (a retention of the database that holds the
/// records, itself chained), accepted like the genesis, and only there.
pub fn verify_lines_from(
    files: Vec<PathBuf>,
    reader: &mut dyn Lines,
    stop: &AtomicBool,
    start: Option<&ChainStart>,
) -> Result<Option<VerifyReport>, AuditError> {
    let mut report = empty_report(files);
    let mut prev: Option<Link> = None;
    // A first record that is not the genesis: kept until a retention record
    // names it.
    let mut unanchored: Option<Link> = None;
    while let Some(line) = reader.next_line()? {
        if stop.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let (link, stated) = match read_link(&line) {
            Ok(l) => l,
            Err(b) => {
                report.problem = Some(b);
                return Ok(Some(report));
            }
        };
        if !link.hash_ok {
            report.problem = Some(ChainBreak {
                kind: BreakKind::Edited,
                seq: Some(link.seq),
                location: link.location.clone(),
                message:
                    "the record's content does not match its hash (changed after it was written)"
                        .into(),
            });
            return Ok(Some(report));
        }
        let ok = match &prev {
            None if link.prev_hash == GENESIS_HASH && link.seq == 1 => true,
            None if start.is_some_and(|s| s.seq == link.seq && s.prev_hash == link.prev_hash) => {
                true
            }
            // Not the genesis: a start only a retention record may state.
            None => {
                unanchored = Some(link.clone());
                true
            }
            Some(p) => link.prev_hash == p.hash && link.seq == p.seq + 1,
        };
        if !ok {
            // The earliest break first: a start no retention record named yet.
            if let Some(start) = unanchored
                .as_ref()
                .filter(|_| report.start_stated_by.is_none())
            {
                report.problem = Some(unstated_start(start, &report.retentions));
                return Ok(Some(report));
            }
            report.problem = Some(classify(prev.as_ref(), &link, reader, stop));
            if stop.load(Ordering::Relaxed) {
                return Ok(None);
            }
            return Ok(Some(report));
        }
        report.records += 1;
        report.first_seq.get_or_insert(link.seq);
        report.last_seq = Some(link.seq);
        report.last_hash = Some(link.hash.clone());
        note_stated(&mut report, unanchored.as_ref(), &link, stated);
        prev = Some(link);
    }
    if let Some(start) = unanchored {
        if report.start_stated_by.is_none() {
            report.problem = Some(unstated_start(&start, &report.retentions));
        }
    }
    Ok(Some(report))
}

/// Take what a gap or retention record states into the report; a
/// retention record naming the chain's (non-genesis) start anchors it.
fn note_stated(
    report: &mut VerifyReport,
    unanchored: Option<&Link>,
    link: &Link,
    stated: Option<Stated>,
) {
    match stated {
        Some(Stated::Gap(info)) => {
            report.records_not_logged += info.records;
            report.gaps.push(GapFound {
                seq: link.seq,
                location: link.location.clone(),
                info,
            });
        }
        Some(Stated::Retention(info)) => {
            if let Some(start) = unanchored {
                if report.start_stated_by.is_none()
                    && info.kept_from.seq == start.seq
                    && info.kept_from.prev_hash == start.prev_hash
                {
                    report.start_stated_by = Some(link.seq);
                }
            }
            report.retentions.push(RetentionFound {
                seq: link.seq,
                location: link.location.clone(),
                info,
            });
        }
        None => {}
    }
}

/// The break of a chain whose first record is not the genesis and that no
/// retention record names: records before it were removed.
fn unstated_start(start: &Link, retentions: &[RetentionFound]) -> ChainBreak {
    let stated = match retentions.last() {
        Some(r) => format!(
            "; the last retention record ({}) states that the kept chain starts at seq {}",
            r.location, r.info.kept_from.seq
        ),
        None => "; no retention record states that older records were deleted".into(),
    };
    ChainBreak {
        kind: BreakKind::Missing,
        // The first record missing: the start the last retention record
        // states, else the first of the log.
        seq: Some(
            retentions
                .last()
                .map(|r| r.info.kept_from.seq)
                .filter(|&s| s < start.seq)
                .unwrap_or(1),
        ),
        location: start.location.clone(),
        message: format!(
            "the chain starts at seq {} (prev_hash {}), not at the genesis, and no retention record names that start: records before it were removed{stated}",
            start.seq, start.prev_hash
        ),
    }
}

/// What a gap or retention record states.
enum Stated {
    Gap(GapInfo),
    Retention(RetentionInfo),
}

/// The chain fields of a line, and what it states if it is a gap or a
/// retention record.
fn read_link(line: &Line) -> Result<(Link, Option<Stated>), ChainBreak> {
    if !line.terminated {
        return Err(ChainBreak {
            kind: BreakKind::Malformed,
            seq: None,
            location: line.location.clone(),
            message: "torn last line (no newline: the writer crashed mid-write); opening the log for writing repairs it".into(),
        });
    }
    let (obj, l) = parse_link(&line.text, &line.location).map_err(|e| ChainBreak {
        kind: BreakKind::Malformed,
        seq: None,
        location: line.location.clone(),
        message: e.into_message(),
    })?;
    let unreadable = |what: &str| ChainBreak {
        kind: BreakKind::Malformed,
        seq: Some(l.seq),
        location: line.location.clone(),
        message: what.to_string(),
    };
    match obj.get("kind").and_then(Value::as_str) {
        Some("gap") => match obj.get("gap").cloned().map(serde_json::from_value::<GapInfo>) {
            Some(Ok(info)) => Ok((l, Some(Stated::Gap(info)))),
            _ => Err(unreadable(
                "a gap record without a readable `gap` field (how many records, which time range)",
            )),
        },
        Some("retention") => match obj
            .get("retention")
            .cloned()
            .map(serde_json::from_value::<RetentionInfo>)
        {
            Some(Ok(info)) => Ok((l, Some(Stated::Retention(info)))),
            _ => Err(unreadable(
                "a retention record without a readable `retention` field (files deleted, first record kept)",
            )),
        },
        _ => Ok((l, None)),
    }
}

/// Classify the break between `p` (the last good record, None at the start)
/// and `r` (whose own hash is valid), looking ahead for the record that
/// really follows `p`.
fn classify(p: Option<&Link>, r: &Link, reader: &mut dyn Lines, stop: &AtomicBool) -> ChainBreak {
    let (p_seq, p_hash) = match p {
        Some(p) => (p.seq, p.hash.as_str()),
        None => (0, GENESIS_HASH),
    };
    if r.prev_hash == p_hash {
        return ChainBreak {
            kind: BreakKind::Edited,
            seq: Some(r.seq),
            location: r.location.clone(),
            message: format!(
                "seq should be {} (the record was changed and re-hashed)",
                p_seq + 1
            ),
        };
    }
    let successor = find_successor(reader, p_hash, stop);
    if r.seq <= p_seq {
        inserted_copy(p, p_seq, r, successor.as_ref())
    } else if r.seq == p_seq + 1 {
        wrong_next(p, p_seq, r, successor.as_ref())
    } else {
        reordered_or_missing(p, p_seq, r, successor.as_ref())
    }
}

/// Read ahead for the record chained to `p_hash` (the true successor).
fn find_successor(reader: &mut dyn Lines, p_hash: &str, stop: &AtomicBool) -> Option<Link> {
    while let Ok(Some(line)) = reader.next_line() {
        if stop.load(Ordering::Relaxed) {
            return None;
        }
        if let Ok((l, _)) = read_link(&line) {
            if l.prev_hash == p_hash {
                return Some(l);
            }
        }
    }
    None
}

/// Where a record is, for a message.
fn at(l: &Link) -> String {
    format!("{}", l.location)
}

/// `r` repeats or goes back behind `p`'s seq: an inserted record.
fn inserted_copy(p: Option<&Link>, p_seq: u64, r: &Link, successor: Option<&Link>) -> ChainBreak {
    let message = match p {
        Some(p) if r.seq == p.seq => format!(
            "seq {} appears twice ({} and {}): a record was inserted",
            r.seq,
            at(p),
            at(r)
        ),
        _ => format!(
            "a record with seq {} does not belong after seq {p_seq} (a copy or a forgery){}",
            r.seq,
            successor
                .map(|s| format!("; the chain continues at {}", at(s)))
                .unwrap_or_default()
        ),
    };
    ChainBreak {
        kind: BreakKind::Inserted,
        seq: Some(r.seq),
        location: r.location.clone(),
        message,
    }
}

/// `r` has the next seq but another chain: inserted if the true successor
/// comes later, else `p` (or the genesis link) was edited.
fn wrong_next(p: Option<&Link>, p_seq: u64, r: &Link, successor: Option<&Link>) -> ChainBreak {
    if let Some(s) = successor {
        return ChainBreak {
            kind: BreakKind::Inserted,
            seq: Some(r.seq),
            location: r.location.clone(),
            message: format!(
                "this record does not follow seq {p_seq}; the record that does is at {} (seq {})",
                at(s),
                s.seq
            ),
        };
    }
    match p {
        Some(p) => ChainBreak {
            kind: BreakKind::Edited,
            seq: Some(p.seq),
            location: p.location.clone(),
            message: format!(
                "the record was changed and re-hashed: the next record ({}) was chained to another hash",
                at(r)
            ),
        },
        None => ChainBreak {
            kind: BreakKind::Edited,
            seq: Some(r.seq),
            location: r.location.clone(),
            message: "the first record does not start at the genesis hash".into(),
        },
    }
}

/// `r` skips ahead of `p`: reordered if the true successor comes later,
/// else the records between are missing.
fn reordered_or_missing(
    p: Option<&Link>,
    p_seq: u64,
    r: &Link,
    successor: Option<&Link>,
) -> ChainBreak {
    if let Some(s) = successor {
        return ChainBreak {
            kind: BreakKind::Reordered,
            seq: Some(r.seq),
            location: r.location.clone(),
            message: format!(
                "seq {} comes before seq {} (found later, at {})",
                r.seq,
                s.seq,
                at(s)
            ),
        };
    }
    let missing = if r.seq == p_seq + 2 {
        format!("seq {} is missing", p_seq + 1)
    } else {
        format!("seq {}..={} are missing", p_seq + 1, r.seq - 1)
    };
    ChainBreak {
        kind: BreakKind::Missing,
        seq: Some(p_seq + 1),
        location: r.location.clone(),
        message: format!(
            "{missing} before this record (seq {}){}",
            r.seq,
            p.map(|p| format!("; previous record at {}", at(p)))
                .unwrap_or_default()
        ),
    }
}
