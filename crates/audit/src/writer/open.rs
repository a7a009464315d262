//! Opening a log ([`OpenInfo`]): the exclusive lock (`PATH.lock`), the last
//! record of the chain (in `PATH`, else in the newest rotated file) whose
//! `seq` and hash the writer continues, and crash repair: a torn last line
//! is cut away and a chained `kind: "repair"` record describing the cut is
//! appended first.
//!
//! Knows nothing of the queue or of how records are batched.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::config::{AuditConfig, Sink};
use super::queue::ByteBudget;
use super::status::Stats;
use super::thread::{private_append, Out, Writer};
use super::ts::format_ts;
use crate::chain::{self, parse_link, rotated_numbers, rotated_path, Location};
use crate::error::AuditError;
use crate::record::{repair_body, RepairInfo, GENESIS_HASH};

/// What opening found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenInfo {
    /// The seq the next logged event gets.
    pub next_seq: u64,
    /// The hash the next record chains to.
    pub prev_hash: String,
    /// Set when a torn last line was cut away (and a repair record written).
    pub repaired: Option<RepairInfo>,
}

impl Writer {
    /// Open the writer of `config`'s sink: for a file, take its lock, cut a
    /// torn last line away (stating it in a repair record), and continue the
    /// chain from the last record of the file or of its newest rotation.
    pub(super) fn open(
        config: &AuditConfig,
        stats: Arc<Stats>,
        budget: Arc<ByteBudget>,
    ) -> Result<(Writer, OpenInfo), AuditError> {
        let mut writer = Writer::new(config, stats, budget);
        let path = match &config.sink {
            Sink::Stdout => {
                return Ok((
                    writer,
                    OpenInfo {
                        next_seq: 1,
                        prev_hash: GENESIS_HASH.into(),
                        repaired: None,
                    },
                ))
            }
            Sink::File(p) => p.clone(),
        };
        let lock = lock_log(&path)?;
        let (repaired, size, mut last_line) = cut_torn_tail(&path)?;
        if last_line.is_none() {
            last_line = last_line_of_newest_rotation(&path)?;
        }
        if let Some((file, line)) = last_line {
            let link = intact_last_link(file, &line)?;
            writer.seq = link.seq;
            writer.prev_hash = link.hash;
        }
        let file = private_append()
            .open(&path)
            .map_err(|e| AuditError::io(&path, e))?;
        writer.out = Out::File {
            path: path.clone(),
            file,
            size,
            _lock: lock,
        };
        if let Some(info) = &repaired {
            writer
                .write_repair(info)
                .map_err(|e| AuditError::io(&path, e))?;
        }
        // A rule tightened since the last run, or a stop between a
        // retention record and its deletions: apply the rule now.
        writer.apply_retention();
        let info = OpenInfo {
            next_seq: writer.seq + 1,
            prev_hash: writer.prev_hash.clone(),
            repaired,
        };
        Ok((writer, info))
    }

    /// Append the chained record stating a repair, and make it durable.
    fn write_repair(&mut self, info: &RepairInfo) -> io::Result<()> {
        let ts = format_ts(OffsetDateTime::now_utc());
        let b = repair_body(info, &ts, self.replica.as_deref());
        let (bytes, hash) = self.seal_next(b);
        self.write_bytes(&bytes).and_then(|()| self.sync_now())?;
        self.seq += 1;
        self.prev_hash = hash;
        Ok(())
    }
}

/// The last line of a log file, with the file it was read from.
type LastLine = Option<(PathBuf, String)>;

/// Create the log's directory and take the exclusive lock `PATH.lock` (a
/// second writer of the same file is refused).
fn lock_log(path: &Path) -> Result<File, AuditError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| AuditError::io(dir, e))?;
    }
    let lock_path = {
        let mut s = path.as_os_str().to_os_string();
        s.push(".lock");
        PathBuf::from(s)
    };
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| AuditError::io(&lock_path, e))?;
    match lock.try_lock() {
        Ok(()) => Ok(lock),
        Err(std::fs::TryLockError::WouldBlock) => Err(AuditError::Locked(path.to_path_buf())),
        Err(std::fs::TryLockError::Error(e)) => Err(AuditError::io(&lock_path, e)),
    }
}

/// Cut a torn last line away from `path` (if it exists): what was cut, the
/// intact size and the last intact line.
fn cut_torn_tail(path: &Path) -> Result<(Option<RepairInfo>, u64, LastLine), AuditError> {
    if !path.exists() {
        return Ok((None, 0, None));
    }
    let t = chain::tail(path).map_err(|e| AuditError::io(path, e))?;
    let mut repaired = None;
    if !t.torn.is_empty() {
        let f = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| AuditError::io(path, e))?;
        f.set_len(t.intact_len)
            .and_then(|()| f.sync_all())
            .map_err(|e| AuditError::io(path, e))?;
        repaired = Some(RepairInfo {
            file: path.display().to_string(),
            offset: t.intact_len,
            cut_bytes: t.len - t.intact_len,
            cut_sha256: hex::encode(Sha256::digest(&t.torn)),
        });
    }
    let last_line = t.last_line.map(|l| (path.to_path_buf(), l));
    Ok((repaired, t.intact_len, last_line))
}

/// The last line of the newest rotated file of `path`, if any.
fn last_line_of_newest_rotation(path: &Path) -> Result<LastLine, AuditError> {
    let nums = rotated_numbers(path).map_err(|e| AuditError::io(path, e))?;
    // The smallest number is the newest rotated file.
    let Some(&n) = nums.first() else {
        return Ok(None);
    };
    let newest = rotated_path(path, n);
    let t = chain::tail(&newest).map_err(|e| AuditError::io(&newest, e))?;
    Ok(t.last_line.map(|l| (newest, l)))
}

/// The chain link of the last record the writer continues from: it must
/// parse and match its hash, else the log is corrupt.
fn intact_last_link(file: PathBuf, line: &str) -> Result<chain::Link, AuditError> {
    let loc = Location {
        file: file.clone(),
        line: 0,
    };
    let (_, link) = parse_link(line, &loc).map_err(|e| AuditError::Corrupt {
        file: file.clone(),
        message: format!(
            "the last record cannot be read ({}); run `partnergate audit verify`",
            e.into_message()
        ),
    })?;
    if !link.hash_ok {
        return Err(AuditError::Corrupt {
            file,
            message: format!(
                "the last record (seq {}) does not match its hash; run `partnergate audit verify`",
                link.seq
            ),
        });
    }
    Ok(link)
}
