//! Limits checked on a policy or schema text before Cedar sees it.
//!
//! Cedar's parser, validator and evaluator recurse over the expression
//! tree, so a small file of deeply nested expressions
//! (`((((…true…))))`, `!!!!…x`, `a.b.c.…`, `x && x && …`) overflows a
//! thread's stack and aborts the process — at start, at every restart and
//! on every reload. A huge file takes memory and time far out of
//! proportion to its size. This module refuses both before parsing: one
//! linear pass over the text (comments and string literals skipped) that
//! measures the *nesting depth* of every expression and counts the
//! policies, against [`PackLimits`]. It knows nothing about files on disk
//! beyond the name it puts in a [`Problem`], and nothing about Cedar's
//! grammar beyond brackets, operators, comments and strings.
//!
//! The nesting depth is an upper bound of the depth of the expression tree
//! Cedar builds: each open bracket (`(`, `[`, `{`) adds one level, and
//! within a level every operator token (`&&`, `||`, comparisons, `+`, `-`,
//! `*`, `!`, `.`, `has`, `like`, `is`, `in`, `if`, `then`, `else`) adds one
//! more, because a chain of operators becomes a chain of nested nodes. A
//! `,` or `;` starts a new sibling expression at its level (a set or a
//! record's members are siblings, not nested).

use std::path::Path;

use crate::problem::{line_col, Problem};

/// Default of [`PackLimits::max_nesting`].
pub const DEFAULT_MAX_NESTING: usize = 64;
/// Default of [`PackLimits::max_file_bytes`] (1 MiB).
pub const DEFAULT_MAX_FILE_BYTES: u64 = 1024 * 1024;
/// Default of [`PackLimits::max_policies`].
pub const DEFAULT_MAX_POLICIES: usize = 10_000;

/// The stack, in bytes, of every thread that parses, validates or
/// evaluates policies (the CLI's worker, the reload thread, the sidecar's
/// runtime threads). With [`DEFAULT_MAX_NESTING`] a debug build needs
/// about 3 MiB; this leaves room for raised limits. Stacks are reserved,
/// not committed: untouched pages cost no memory.
pub const POLICY_THREAD_STACK: usize = 64 * 1024 * 1024;

/// What a policy pack may hold, checked before parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackLimits {
    /// Deepest expression nesting (see the module doc) in a policy or
    /// schema file.
    pub max_nesting: usize,
    /// Largest policy or schema file, in bytes.
    pub max_file_bytes: u64,
    /// Most policies in the whole pack (all files together).
    pub max_policies: usize,
}

impl Default for PackLimits {
    fn default() -> Self {
        PackLimits {
            max_nesting: DEFAULT_MAX_NESTING,
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
            max_policies: DEFAULT_MAX_POLICIES,
        }
    }
}

/// What one pass over a text found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scan {
    /// The deepest nesting seen.
    pub depth: usize,
    /// Top-level `permit`/`forbid` keywords: the number of policies.
    pub policies: usize,
}

/// Scan `text` (the contents of `file`) and refuse it when an expression
/// nests deeper than `max_nesting`, naming the line and column where the
/// limit was crossed.
#[allow(clippy::too_many_lines)] // one byte scanner loop: its states (comment, string, bracket, operator, word) share the cursor and the depth, and read best side by side
pub fn scan(file: &Path, text: &str, max_nesting: usize) -> Result<Scan, Box<Problem>> {
    let bytes = text.as_bytes();
    // The operator count of each open bracket level (index 0: top level).
    let mut levels: Vec<usize> = vec![0];
    // Sum over `levels` of (1 + operators): the current depth.
    let mut depth = 1usize;
    let mut deepest = 1usize;
    let mut policies = 0usize;
    let mut i = 0usize;
    let too_deep = |at: usize, depth: usize| {
        let (line, column) = line_col(text, at);
        let message = format!(
            "expression nested {depth} levels deep (brackets and chained operators); \
             the limit is {max_nesting} (--max-policy-nesting): split the condition or \
             flatten the brackets"
        );
        Box::new(Problem {
            file: Some(file.to_path_buf()),
            line: Some(line),
            column: Some(column),
            policy_id: None,
            rendered: format!("{}:{line}:{column}: {message}", file.display()),
            message,
        })
    };
    while i < bytes.len() {
        let b = bytes[i];
        let mut op = false;
        match b {
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
                continue;
            }
            b'(' | b'[' | b'{' => {
                levels.push(0);
                depth += 1;
            }
            b')' | b']' | b'}' if levels.len() > 1 => {
                let ops = levels.pop().unwrap_or(0);
                depth -= 1 + ops;
            }
            b',' | b';' => {
                if let Some(ops) = levels.last_mut() {
                    depth -= *ops;
                    *ops = 0;
                }
            }
            b'&' | b'|' | b'=' | b'<' | b'>' | b'+' | b'-' | b'*' | b'.' => {
                op = true;
                // Two-character operators count once.
                if matches!(
                    (b, bytes.get(i + 1)),
                    (b'&', Some(b'&')) | (b'|', Some(b'|')) | (b'=' | b'<' | b'>', Some(b'='))
                ) {
                    i += 1;
                }
            }
            b'!' => {
                op = true;
                if bytes.get(i + 1) == Some(&b'=') {
                    i += 1;
                }
            }
            b if b.is_ascii_alphabetic() || b == b'_' => {
                let start = i;
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                let word = &text[start..i];
                let after_path = start >= 2 && &bytes[start - 2..start] == b"::";
                match word {
                    "has" | "like" | "is" | "in" | "if" | "then" | "else" if !after_path => {
                        bump(&mut levels, &mut depth, &mut deepest);
                        if depth > max_nesting {
                            return Err(too_deep(start, depth));
                        }
                    }
                    "permit" | "forbid" if levels.len() == 1 && !after_path => policies += 1,
                    _ => {}
                }
                continue;
            }
            _ => {}
        }
        if op {
            bump(&mut levels, &mut depth, &mut deepest);
        } else {
            deepest = deepest.max(depth);
        }
        if depth > max_nesting {
            return Err(too_deep(i, depth));
        }
        i += 1;
    }
    Ok(Scan {
        depth: deepest,
        policies,
    })
}

fn bump(levels: &mut [usize], depth: &mut usize, deepest: &mut usize) {
    if let Some(ops) = levels.last_mut() {
        *ops += 1;
        *depth += 1;
        *deepest = (*deepest).max(*depth);
    }
}

/// Read `path` as UTF-8 text, refusing it before reading when it is larger
/// than `max_bytes` (and if it grows past the limit while being read).
pub fn read_limited(path: &Path, max_bytes: u64) -> Result<String, ReadError> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(ReadError::Io)?;
    let len = file.metadata().map_err(ReadError::Io)?.len();
    if len > max_bytes {
        return Err(ReadError::TooLarge {
            bytes: len,
            limit: max_bytes,
        });
    }
    let mut buf = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.take(max_bytes + 1)
        .read_to_end(&mut buf)
        .map_err(ReadError::Io)?;
    if buf.len() as u64 > max_bytes {
        return Err(ReadError::TooLarge {
            bytes: buf.len() as u64,
            limit: max_bytes,
        });
    }
    String::from_utf8(buf).map_err(|e| {
        ReadError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("not UTF-8 text (byte {})", e.utf8_error().valid_up_to()),
        ))
    })
}

/// Why [`read_limited`] refused a file.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The file could not be opened or read, or is not UTF-8 text (`InvalidData`).
    #[error("{0}")]
    Io(std::io::Error),
    /// The file is larger than the limit; it was not read whole.
    #[error("the file has {bytes} bytes; the limit is {limit} bytes (--max-policy-file-bytes)")]
    TooLarge {
        /// The file's size in bytes (from its metadata, or what was read past the limit).
        bytes: u64,
        /// The limit in bytes.
        limit: u64,
    },
}

/// Run `f` on a new thread with [`POLICY_THREAD_STACK`] and wait for it.
/// If no thread can be spawned (out of threads or memory), `f` runs on the
/// caller's thread, whose stack the nesting limit still protects.
pub fn with_policy_stack<T: Send, F: FnOnce() -> T + Send>(f: F) -> T {
    // The thread takes the job out of `job`; a thread that cannot be
    // spawned drops its closure unrun, and the job is still here.
    let mut job = Some(f);
    let slot = &mut job;
    let ran = std::thread::scope(|s| {
        let handle = std::thread::Builder::new()
            .name("partnergate-policies".into())
            .stack_size(POLICY_THREAD_STACK)
            .spawn_scoped(s, move || slot.take().map(|f| f()))
            .ok()?;
        match handle.join() {
            Ok(v) => v,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    });
    match (ran, job) {
        (Some(v), _) => v,
        (None, Some(f)) => f(),
        (None, None) => unreachable!("the job ran on its thread and returned"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn depth(text: &str) -> usize {
        scan(Path::new("t.cedar"), text, usize::MAX).unwrap().depth
    }

    #[test]
    fn brackets_and_operator_chains_count_as_nesting() {
        assert_eq!(depth("permit(principal, action, resource);"), 2);
        assert_eq!(
            depth(&format!("{}true{}", "(".repeat(50), ")".repeat(50))),
            51
        );
        assert_eq!(depth(&format!("{}x", "!".repeat(30))), 31);
        assert_eq!(depth(&"x && ".repeat(40)), 41);
        assert_eq!(depth("a.b.c.d"), 4);
        // Siblings in a set do not add up.
        assert_eq!(depth("[a.b, c.d, e.f]"), 3);
    }

    #[test]
    fn comments_and_strings_are_not_scanned() {
        let text = format!(
            "// {}\n@id(\"{}\") permit(principal, action, resource);",
            "(".repeat(500),
            "((((\\\"".repeat(100)
        );
        let s = scan(Path::new("t.cedar"), &text, 10).unwrap();
        assert_eq!(s.policies, 1);
        assert!(s.depth <= 3, "{s:?}");
    }

    #[test]
    fn the_limit_names_line_and_column() {
        let text = format!(
            "permit(principal, action, resource)\nwhen {{ {}true }};",
            "(".repeat(70)
        );
        let p = scan(Path::new("p.cedar"), &text, 64).unwrap_err();
        assert_eq!(p.line, Some(2));
        assert!(p.column.unwrap() > 60, "{p:?}");
        assert!(p.message.contains("limit is 64"), "{}", p.message);
    }

    #[test]
    fn counts_top_level_policies_only() {
        let text = "permit(principal, action, resource) when { principal has forbid };\n\
                    forbid(principal, action == Action::\"permit\", resource);";
        assert_eq!(scan(Path::new("t"), text, 64).unwrap().policies, 2);
    }

    #[test]
    fn a_file_over_the_byte_limit_is_refused_before_reading() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("big.cedar");
        std::fs::write(&f, "x".repeat(2000)).unwrap();
        assert!(matches!(
            read_limited(&f, 1000),
            Err(ReadError::TooLarge {
                bytes: 2000,
                limit: 1000
            })
        ));
        assert_eq!(read_limited(&f, 2000).unwrap().len(), 2000);
    }
}
