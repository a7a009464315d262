//! The sidecar's log output, one event per line whatever the event carries:
//! a writer under the `tracing` formatter that escapes every control
//! character (newline, carriage return, escape, the other C0 and C1 codes)
//! and the Unicode line and paragraph separators in each formatted event,
//! keeping only the newline that ends it. So a field that carries a
//! request's text (a path, a header, a principal) cannot forge a line, move
//! the cursor or colour a terminal, and no call site has to remember it.
//!
//! It owns only the bytes of a formatted event: it must never know which
//! fields an event has, nor filter or reorder events.

use std::io::{self, Write};

/// A [`tracing_subscriber::fmt::MakeWriter`] over stderr whose writer escapes.
#[derive(Debug, Clone, Copy, Default)]
pub struct EscapedStderr;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for EscapedStderr {
    type Writer = Escaped<io::Stderr>;
    fn make_writer(&'a self) -> Self::Writer {
        Escaped(io::stderr())
    }
}

/// Writes each buffer it is given (the formatter gives one event per call)
/// with its control characters escaped, keeping one trailing newline.
#[derive(Debug)]
pub struct Escaped<W>(pub W);

impl<W: Write> Write for Escaped<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write_all(escape_event(buf).as_bytes())?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// One formatted event as one line: every control character but a final
/// newline written as `\n`, `\r`, `\t`, `\u{1b}`..., invalid UTF-8 as U+FFFD.
pub fn escape_event(buf: &[u8]) -> String {
    let text = String::from_utf8_lossy(buf);
    let (body, ends_line) = match text.strip_suffix('\n') {
        Some(b) => (b, true),
        None => (&*text, false),
    };
    let mut out = String::with_capacity(body.len() + 1);
    for c in body.chars() {
        if c.is_control() || c == '\u{2028}' || c == '\u{2029}' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    if ends_line {
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_stays_one_line() {
        let forged =
            "INFO gateway: no route path=/x\n2030-01-01 INFO forged\r\u{1b}[2K\u{85}\u{2028}y\n";
        let out = escape_event(forged.as_bytes());
        assert_eq!(out.matches('\n').count(), 1);
        assert!(out.ends_with('\n'));
        assert!(out.contains("/x\\n2030-01-01 INFO forged\\r\\u{1b}[2K\\u{85}\\u{2028}y"));
        assert_eq!(escape_event(b"plain\n"), "plain\n");
        assert_eq!(escape_event(b"no end"), "no end");
    }
}
