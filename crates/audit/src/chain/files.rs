//! The files of a log's chain: the active file and its rotated siblings
//! `PATH.1`, `PATH.2`, ... (higher numbers are older), their lines in chain
//! order with file:line locations ([`LineReader`]), and the end of a file
//! read backwards ([`tail`], for crash repair).
//!
//! Knows nothing of the record format: a line is text here.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::error::{AuditError, Location};

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

/// A source of log lines in chain order: the files of a log
/// ([`LineReader`]), or records read back from elsewhere (a database), so
/// that one [`verify`](super::verify) checks them all.
pub trait Lines {
    /// The next line, `None` at the end.
    fn next_line(&mut self) -> Result<Option<Line>, AuditError>;
}

impl Lines for LineReader {
    fn next_line(&mut self) -> Result<Option<Line>, AuditError> {
        LineReader::next_line(self)
    }
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
