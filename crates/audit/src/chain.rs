//! The log on disk as one chain: which files make it up (the active file
//! and its rotated siblings `PATH.1`, `PATH.2`, ... — higher numbers are
//! older), reading their lines in chain order with file:line locations, the
//! tail of a file (for crash repair), and `verify`, which checks the chain
//! and classifies the first break as edited, missing, inserted or reordered.
//!
//! A chain starts at the genesis hash, or at a record that a `retention`
//! record of the chain names as the first record kept after the writer
//! deleted the oldest rotated files; any other start is records missing.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;
use serde_json::{Map, Value};

use super::record::{compute_hash, GapInfo, RetentionInfo, GENESIS_HASH};
use crate::error::AuditError;

/// The entity slices carried inline (`entities`) by the records of the file
/// being read, by `entities_hash`, for readers that resolve a decision's
/// `entities_hash` ([`super::replay`], [`super::query`]). A log file stands
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

pub use crate::error::Location;

/// The path of rotated file number `n` of the log at `path`.
pub fn rotated_path(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// The numbers of the rotated siblings of `path` that exist, ascending.
pub fn rotated_numbers(path: &Path) -> io::Result<Vec<u32>> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return Ok(Vec::new());
    };
    let prefix = format!("{name}.");
    let mut nums = Vec::new();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(nums),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        if let Some(n) = entry
            .file_name()
            .to_str()
            .and_then(|f| f.strip_prefix(&prefix))
            .filter(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|rest| rest.parse::<u32>().ok())
        {
            nums.push(n);
        }
    }
    nums.sort_unstable();
    Ok(nums)
}

/// The files of the chain in order, oldest first: `PATH.N`, ..., `PATH.1`,
/// `PATH` (those that exist).
pub fn chain_files(path: &Path) -> io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = rotated_numbers(path)?
        .into_iter()
        .rev()
        .map(|n| rotated_path(path, n))
        .collect();
    if path.exists() {
        files.push(path.to_path_buf());
    }
    Ok(files)
}

/// Streams the lines of all chain files in order, in constant memory.
pub struct LineReader {
    files: std::vec::IntoIter<PathBuf>,
    current: Option<(PathBuf, BufReader<File>, u64)>,
    buf: Vec<u8>,
}

/// One line read: where, its text (without the newline), and whether it was
/// terminated by a newline (a last line without one is torn).
pub struct Line {
    /// Where the line is.
    pub location: Location,
    /// The line's text, without the newline (invalid UTF-8 replaced).
    pub text: String,
    /// False for a last line with no newline: a torn write.
    pub terminated: bool,
}

impl LineReader {
    /// Read the chain of the log at `path`. Fails if no file exists.
    pub fn open(path: &Path) -> Result<Self, AuditError> {
        let files = chain_files(path).map_err(|e| AuditError::io(path, e))?;
        if files.is_empty() {
            return Err(AuditError::io(
                path,
                io::Error::new(io::ErrorKind::NotFound, "no such log file"),
            ));
        }
        Ok(Self::from_files(files))
    }

    /// Read the given files in order (as [`chain_files`] lists them); a
    /// file that cannot be opened is an error when it is reached.
    pub fn from_files(files: Vec<PathBuf>) -> Self {
        LineReader {
            files: files.into_iter(),
            current: None,
            buf: Vec::with_capacity(4096),
        }
    }

    /// The next line, `None` at the end of the last file.
    pub fn next_line(&mut self) -> Result<Option<Line>, AuditError> {
        loop {
            if self.current.is_none() {
                let Some(f) = self.files.next() else {
                    return Ok(None);
                };
                let file = File::open(&f).map_err(|e| AuditError::io(&f, e))?;
                self.current = Some((f, BufReader::with_capacity(64 * 1024, file), 0));
            }
            let Some((path, reader, n)) = self.current.as_mut() else {
                continue;
            };
            self.buf.clear();
            let read = reader
                .read_until(b'\n', &mut self.buf)
                .map_err(|e| AuditError::io(path, e))?;
            if read == 0 {
                self.current = None;
                continue;
            }
            *n += 1;
            let terminated = self.buf.last() == Some(&b'\n');
            if terminated {
                self.buf.pop();
            }
            let location = Location {
                file: path.clone(),
                line: *n,
            };
            let text = String::from_utf8(std::mem::take(&mut self.buf)).map_err(|_| {
                AuditError::Malformed {
                    location: location.clone(),
                    message: "not UTF-8".into(),
                }
            })?;
            return Ok(Some(Line {
                location,
                text,
                terminated,
            }));
        }
    }
}

/// The end of a log file: its length, the length of its intact part (up
/// to and including the last newline), and its last complete line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tail {
    /// The file's length in bytes.
    pub len: u64,
    /// Bytes up to and including the last newline (0 if there is none).
    pub intact_len: u64,
    /// The last newline-terminated line, without its newline.
    pub last_line: Option<String>,
    /// The bytes after the last newline: a torn (partly written) line.
    pub torn: Vec<u8>,
}

/// Read the end of `path` backwards (in growing chunks; whole lines only).
pub fn tail(path: &Path) -> io::Result<Tail> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(Tail {
            len,
            intact_len: 0,
            last_line: None,
            torn: Vec::new(),
        });
    }
    let mut size: u64 = 64 * 1024;
    loop {
        let start = len.saturating_sub(size);
        file.seek(SeekFrom::Start(start))?;
        let mut buf = Vec::with_capacity((len - start) as usize);
        file.by_ref().take(len - start).read_to_end(&mut buf)?;
        let last_nl = buf.iter().rposition(|&b| b == b'\n');
        match last_nl {
            None if start > 0 => {}
            None => {
                return Ok(Tail {
                    len,
                    intact_len: 0,
                    last_line: None,
                    torn: buf,
                })
            }
            Some(a) => {
                let prev_nl = buf[..a].iter().rposition(|&b| b == b'\n');
                if prev_nl.is_some() || start == 0 {
                    let from = prev_nl.map_or(0, |b| b + 1);
                    let last = String::from_utf8_lossy(&buf[from..a]).into_owned();
                    return Ok(Tail {
                        len,
                        intact_len: start + a as u64 + 1,
                        last_line: Some(last),
                        torn: buf[a + 1..].to_vec(),
                    });
                }
            }
        }
        size = size.saturating_mul(2);
    }
}

/// The chain fields of one parsed line.
#[derive(Debug, Clone)]
pub struct Link {
    /// The record's sequence number, 1 more than its predecessor's.
    pub seq: u64,
    /// The predecessor's `hash` (hex SHA-256; [`GENESIS_HASH`] for the
    /// first record).
    pub prev_hash: String,
    /// The hash the record states for itself (hex SHA-256 of its canonical
    /// encoding without `hash`).
    pub hash: String,
    /// Whether `hash` matches the content.
    pub hash_ok: bool,
    /// Where the record is.
    pub location: Location,
}

/// Parse a line into its object and chain fields.
pub fn parse_link(
    text: &str,
    location: &Location,
) -> Result<(Map<String, Value>, Link), AuditError> {
    let malformed = |message: String| AuditError::Malformed {
        location: location.clone(),
        message,
    };
    let v: Value =
        serde_json::from_str(text).map_err(|e| malformed(format!("not a JSON record: {e}")))?;
    let Value::Object(obj) = v else {
        return Err(malformed("not a JSON object".into()));
    };
    let seq = obj
        .get("seq")
        .and_then(Value::as_u64)
        .ok_or_else(|| malformed("field `seq`: missing or not an unsigned integer".into()))?;
    let field = |name: &str| {
        obj.get(name)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| malformed(format!("field `{name}`: missing or not a string")))
    };
    let prev_hash = field("prev_hash")?;
    let hash = field("hash")?;
    let hash_ok = compute_hash(&obj) == hash;
    let link = Link {
        seq,
        prev_hash,
        hash,
        hash_ok,
        location: location.clone(),
    };
    Ok((obj, link))
}

/// What is wrong with a chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BreakKind {
    /// A record's content was changed after it was written.
    Edited,
    /// One or more records are missing (deleted).
    Missing,
    /// A record that does not belong was added.
    Inserted,
    /// Records are out of order.
    Reordered,
    /// A line is not a record (not JSON, missing chain fields, torn).
    Malformed,
}

/// The first break found in a chain.
#[derive(Debug, Clone, Serialize)]
pub struct ChainBreak {
    /// What kind of break it is.
    pub kind: BreakKind,
    /// The seq of the record concerned, when known.
    pub seq: Option<u64>,
    /// The line at which the break was found.
    pub location: Location,
    /// The details (expected and found seq or hash, parse error).
    pub message: String,
}

impl std::fmt::Display for ChainBreak {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            BreakKind::Edited => "edited record",
            BreakKind::Missing => "missing record(s)",
            BreakKind::Inserted => "inserted record",
            BreakKind::Reordered => "reordered record",
            BreakKind::Malformed => "malformed record",
        };
        match self.seq {
            Some(s) => write!(f, "{kind}: seq {s} at {}: {}", self.location, self.message),
            None => write!(f, "{kind} at {}: {}", self.location, self.message),
        }
    }
}

/// A `gap` record found by [`verify`]: records the writer states it could
/// not log (a full disk, a full queue). Chained like every record, so not
/// tampering, but the log is not complete.
#[derive(Debug, Clone, Serialize)]
pub struct GapFound {
    /// The gap record's own seq.
    pub seq: u64,
    /// Where the gap record is.
    pub location: Location,
    /// What the gap record states (counts, period, error).
    #[serde(flatten)]
    pub info: GapInfo,
}

impl std::fmt::Display for GapFound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let g = &self.info;
        write!(
            f,
            "gap record seq {} at {}: {} record(s) not logged between {} and {} ({} lost to failed writes, {} dropped by a full queue; {} of them refused to the caller)",
            self.seq, self.location, g.records, g.from, g.until, g.write_failed, g.queue_dropped, g.refused
        )?;
        if let Some(e) = &g.error {
            write!(f, "; error: {e}")?;
        }
        Ok(())
    }
}

/// A `retention` record found by [`verify`]: the writer deleted its oldest
/// rotated files by its retention rule, and states which and where the
/// kept chain starts. Chained like every record: not tampering.
#[derive(Debug, Clone, Serialize)]
pub struct RetentionFound {
    /// The retention record's own seq.
    pub seq: u64,
    /// Where the retention record is.
    pub location: Location,
    /// What it states (files deleted, seq ranges, first record kept, rule).
    #[serde(flatten)]
    pub info: RetentionInfo,
}

impl std::fmt::Display for RetentionFound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = &self.info;
        let files: Vec<String> = r
            .deleted
            .iter()
            .map(|d| match (d.first_seq, d.last_seq) {
                (Some(a), Some(b)) => format!("{} (seq {a}..={b})", d.file),
                _ => d.file.clone(),
            })
            .collect();
        write!(
            f,
            "retention record seq {} at {}: {} deleted by rule {}; the kept chain starts at seq {}",
            self.seq,
            self.location,
            if files.is_empty() {
                "nothing".to_string()
            } else {
                files.join(", ")
            },
            r.rule,
            r.kept_from.seq
        )
    }
}

/// The outcome of [`verify`].
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// The chain files read, oldest first.
    pub files: Vec<PathBuf>,
    /// Records checked (up to the break, if any).
    pub records: u64,
    /// The seq of the first record checked (none for an empty log).
    pub first_seq: Option<u64>,
    /// The seq of the last intact record checked.
    pub last_seq: Option<u64>,
    /// The hash of the last record checked: the head of the chain (up to
    /// the break, if any).
    pub last_hash: Option<String>,
    /// The first break, if the chain is not intact.
    pub problem: Option<ChainBreak>,
    /// The gap records of the chain (up to the break, if any).
    pub gaps: Vec<GapFound>,
    /// The records the gap records state were not logged.
    pub records_not_logged: u64,
    /// The retention records of the chain (up to the break, if any).
    pub retentions: Vec<RetentionFound>,
    /// When the chain does not start at the genesis: the seq of the
    /// retention record that names its first record.
    pub start_stated_by: Option<u64>,
}

impl VerifyReport {
    /// The chain is unbroken and nothing is stated missing.
    pub fn ok(&self) -> bool {
        self.intact() && self.gaps.is_empty()
    }

    /// The chain is unbroken (no record edited, removed, inserted or
    /// reordered); gap records may still state records that were not logged.
    pub fn intact(&self) -> bool {
        self.problem.is_none()
    }
}

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
    let mut report = empty_report(files.clone());
    let mut reader = LineReader::from_files(files);
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
            report.problem = Some(classify(prev.as_ref(), &link, &mut reader, stop));
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
        message: match e {
            AuditError::Malformed { message, .. } => message,
            other => other.to_string(),
        },
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
fn classify(p: Option<&Link>, r: &Link, reader: &mut LineReader, stop: &AtomicBool) -> ChainBreak {
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
fn find_successor(reader: &mut LineReader, p_hash: &str, stop: &AtomicBool) -> Option<Link> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_finds_a_long_last_line_and_the_torn_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let long = "b".repeat(200_000);
        std::fs::write(&path, format!("a\n{long}\ntorn")).unwrap();
        let t = tail(&path).unwrap();
        assert_eq!(t.last_line.as_deref(), Some(long.as_str()));
        assert_eq!(t.torn, b"torn");
        assert_eq!(t.intact_len, 2 + 200_001);
        assert_eq!(t.len, t.intact_len + 4);

        std::fs::write(&path, "only torn").unwrap();
        let t = tail(&path).unwrap();
        assert_eq!((t.intact_len, t.last_line, t.torn.len()), (0, None, 9));

        std::fs::write(&path, "x\n").unwrap();
        let t = tail(&path).unwrap();
        assert_eq!(
            (t.intact_len, t.last_line.as_deref(), t.torn.len()),
            (2, Some("x"), 0)
        );
    }

    #[test]
    fn chain_files_orders_rotated_files_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.jsonl");
        for name in [
            "d.jsonl",
            "d.jsonl.1",
            "d.jsonl.10",
            "d.jsonl.2",
            "d.jsonl.lock",
            "d.jsonl.x1",
        ] {
            std::fs::write(dir.path().join(name), "").unwrap();
        }
        let names: Vec<String> = chain_files(&path)
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["d.jsonl.10", "d.jsonl.2", "d.jsonl.1", "d.jsonl"]);
    }
}
