//! Cedar's diagnostics as [`Problem`]s: located against a file's text
//! (line, column, a miette rendering with the file's name and a caret), and
//! the plain problem of a whole file.
//!
//! Owns the translation from miette diagnostics; it must never know how a
//! pack is loaded.

use std::fmt;
use std::path::Path;

use miette::{Diagnostic, NamedSource};

use crate::problem::{line_col, Problem};

pub(super) fn plain_problem(file: &Path, message: &str) -> Problem {
    Problem {
        file: Some(file.to_path_buf()),
        line: None,
        column: None,
        policy_id: None,
        message: message.to_string(),
        rendered: format!("{}: {message}", file.display()),
    }
}

/// Flatten a Cedar diagnostic (possibly with related diagnostics) into
/// located problems against `file`/`text`.
pub fn problems_from(
    diag: &dyn Diagnostic,
    file: &Path,
    text: &str,
    policy_id: Option<&str>,
) -> Vec<Problem> {
    let mut out = Vec::new();
    let related: Vec<&dyn Diagnostic> = diag.related().map(|r| r.collect()).unwrap_or_default();
    let diags: Vec<&dyn Diagnostic> = if related.is_empty() {
        vec![diag]
    } else {
        related
    };
    for d in diags {
        let offset = d
            .labels()
            .and_then(|mut l| l.next())
            .map(|l| l.offset())
            .filter(|&o| o <= text.len());
        let (line, column) = match offset {
            Some(o) => {
                let (l, c) = line_col(text, o);
                (Some(l), Some(c))
            }
            None => (None, None),
        };
        let message = diagnostic_message(d);
        let rendered = render_with_source(d, file, text);
        out.push(Problem {
            file: Some(file.to_path_buf()),
            line,
            column,
            policy_id: policy_id.map(str::to_string),
            message,
            rendered,
        });
    }
    out
}

fn diagnostic_message(d: &dyn Diagnostic) -> String {
    match d.help() {
        Some(help) => format!("{d} (help: {help})"),
        None => d.to_string(),
    }
}

/// Render a diagnostic with miette's graphical handler (no colours), using
/// `text` named `file` as its source so the output shows `file:line:col`.
pub fn render_with_source(d: &dyn Diagnostic, file: &Path, text: &str) -> String {
    let named = NamedSource::new(file.display().to_string(), text.to_string());
    let wrapped = Rendered {
        inner: d,
        src: named,
    };
    let mut out = String::new();
    let handler =
        miette::GraphicalReportHandler::new_themed(miette::GraphicalTheme::unicode_nocolor());
    if handler.render_report(&mut out, &wrapped).is_err() {
        return d.to_string();
    }
    out
}

/// A diagnostic re-homed onto a named source (Cedar's own spans carry the
/// source text but not the file name).
struct Rendered<'a> {
    inner: &'a dyn Diagnostic,
    src: NamedSource<String>,
}

impl fmt::Debug for Rendered<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.inner, f)
    }
}
impl fmt::Display for Rendered<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner, f)
    }
}
impl std::error::Error for Rendered<'_> {}
impl Diagnostic for Rendered<'_> {
    fn code<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        self.inner.code()
    }
    fn severity(&self) -> Option<miette::Severity> {
        self.inner.severity()
    }
    fn help<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        self.inner.help()
    }
    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        Some(&self.src)
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = miette::LabeledSpan> + '_>> {
        self.inner.labels()
    }
}
