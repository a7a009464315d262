//! The retention rule: when rotation leaves more rotated files (or bytes)
//! than the rule keeps, the writer first appends a chained
//! `kind: "retention"` record naming the files it will delete (and their
//! seq ranges) and the first record kept (its seq and prev_hash), fsyncs
//! it, and only then deletes them; `verify` accepts a chain that starts at
//! a record some retention record names.
//!
//! Knows nothing of the queue or of how records are batched.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use time::OffsetDateTime;

use super::thread::{sync_dir, Out, Writer};
use super::ts::format_ts;
use crate::chain::{self, parse_link, rotated_numbers, rotated_path, Location};
use crate::record::{retention_body, ChainStart, RetainedFile, RetentionInfo};

impl Writer {
    /// Delete the oldest rotated files past the retention rule: first a
    /// chained `retention` record stating them and where the kept chain
    /// starts, fsynced, then the deletions. Nothing is deleted when the
    /// record cannot be written (or the kept start cannot be read); the
    /// next rotation tries again.
    pub(super) fn apply_retention(&mut self) {
        if self.max_files.is_none() && self.max_total_bytes.is_none() {
            return;
        }
        let Out::File { path, .. } = &self.out else {
            return;
        };
        let path = path.clone();
        if self.failing.is_some() {
            return;
        }
        let plan = match retention_plan(&path, self.max_files, self.max_total_bytes) {
            Ok(Some(p)) => p,
            Ok(None) => return,
            Err(e) => {
                tracing::error!(error = %e, path = %path.display(),
                    "audit log: the retention rule could not read the rotated files; nothing deleted");
                return;
            }
        };
        let kept_from = match plan.kept_first {
            Some(start) => start,
            // Nothing older is kept: the chain now starts at the retention
            // record itself.
            None => ChainStart {
                seq: self.seq + 1,
                prev_hash: self.prev_hash.clone(),
            },
        };
        let info = RetentionInfo {
            deleted: plan.deleted.iter().map(|(_, f)| f.clone()).collect(),
            kept_from,
            rule: plan.rule,
        };
        let ts = format_ts(OffsetDateTime::now_utc());
        let body = retention_body(&info, &ts, self.replica.as_deref());
        let (bytes, hash) = self.seal_next(body);
        let before = self.size();
        if let Err(e) = self.write_bytes(&bytes).and_then(|()| self.sync_now()) {
            self.stats.write_errors.fetch_add(1, Ordering::Relaxed);
            self.truncate(before);
            tracing::error!(error = %e, path = %path.display(),
                "audit log: the retention record could not be written; nothing deleted");
            return;
        }
        self.seq += 1;
        self.prev_hash = hash;
        self.stats.retentions.fetch_add(1, Ordering::Relaxed);
        for (file, _) in &plan.deleted {
            match std::fs::remove_file(file) {
                Ok(()) => {
                    self.stats.files_deleted.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => tracing::error!(error = %e, file = %file.display(),
                    "audit log: a rotated file the retention record names could not be deleted"),
            }
        }
        sync_dir(&path);
        tracing::info!(files = plan.deleted.len(), kept_from = info.kept_from.seq,
            rule = %info.rule, "audit log: retention deleted the oldest rotated files");
    }
}

/// What the retention rule deletes: the rotated files (path, and as the
/// record states them), oldest first, and the first record kept (None: no
/// file kept holds one; the retention record will be the first).
struct RetentionPlan {
    deleted: Vec<(PathBuf, RetainedFile)>,
    kept_first: Option<ChainStart>,
    rule: String,
}

/// The retention plan for the log at `path`, None when every rotated file
/// is kept.
fn retention_plan(
    path: &Path,
    max_files: Option<u32>,
    max_total_bytes: Option<u64>,
) -> io::Result<Option<RetentionPlan>> {
    // Ascending numbers: the newest rotated file first.
    let nums = rotated_numbers(path)?;
    let mut keep = nums.len();
    let mut rules = Vec::new();
    if let Some(m) = max_files {
        if nums.len() > m as usize {
            keep = keep.min(m as usize);
            rules.push(format!("max_files={m}"));
        }
    }
    if let Some(max) = max_total_bytes {
        let mut total = 0u64;
        for (i, n) in nums.iter().enumerate() {
            total = total.saturating_add(std::fs::metadata(rotated_path(path, *n))?.len());
            if total > max {
                if i < keep {
                    keep = i;
                }
                rules.push(format!("max_total_bytes={max}"));
                break;
            }
        }
    }
    if keep >= nums.len() {
        return Ok(None);
    }
    let kept_first = first_kept(path, &nums[..keep])?;
    let mut deleted = Vec::new();
    for &n in nums[keep..].iter().rev() {
        let file = rotated_path(path, n);
        let bytes = std::fs::metadata(&file)?.len();
        let seq_of = |line: Option<String>| {
            line.and_then(|l| {
                parse_link(
                    &l,
                    &Location {
                        file: file.clone(),
                        line: 0,
                    },
                )
                .ok()
                .map(|(_, link)| link.seq)
            })
        };
        let first_seq = seq_of(first_line(&file)?);
        let last_seq = seq_of(chain::tail(&file)?.last_line);
        deleted.push((
            file.clone(),
            RetainedFile {
                file: file
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                first_seq,
                last_seq,
                bytes,
            },
        ));
    }
    Ok(Some(RetentionPlan {
        deleted,
        kept_first,
        rule: rules.join(","),
    }))
}

/// The first record kept, named by seq and prev_hash: in the oldest of the
/// kept rotated files `kept` (ascending numbers) that holds one, else in the
/// active file; None: there is none (the retention record will be first).
fn first_kept(path: &Path, kept: &[u32]) -> io::Result<Option<ChainStart>> {
    let files = kept
        .iter()
        .rev()
        .map(|&n| rotated_path(path, n))
        .chain(std::iter::once(path.to_path_buf()));
    for file in files {
        if !file.exists() {
            continue;
        }
        if let Some(line) = first_line(&file)? {
            let loc = Location {
                file: file.clone(),
                line: 1,
            };
            let (_, link) = parse_link(&line, &loc).map_err(|e| io::Error::other(e.to_string()))?;
            return Ok(Some(ChainStart {
                seq: link.seq,
                prev_hash: link.prev_hash,
            }));
        }
    }
    Ok(None)
}

/// The first newline-terminated line of `file`, if any.
fn first_line(file: &Path) -> io::Result<Option<String>> {
    use std::io::BufRead;
    let mut r = io::BufReader::new(File::open(file)?);
    let mut buf = Vec::new();
    r.read_until(b'\n', &mut buf)?;
    if buf.pop() != Some(b'\n') {
        return Ok(None);
    }
    Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
}
