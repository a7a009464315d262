//! Cedar syntax colouring for the Policies page: a small lexer that splits
//! policy text into comments, strings, keywords, annotations, entity type
//! paths, numbers and the rest, each rendered as an escaped `<span>` with a
//! class. Colour only: it never decides what the text means, and text it
//! does not recognise is shown unchanged.

use maud::{html, Markup};

const KEYWORDS: [&str; 17] = [
    "permit",
    "forbid",
    "when",
    "unless",
    "principal",
    "action",
    "resource",
    "context",
    "in",
    "is",
    "has",
    "like",
    "if",
    "then",
    "else",
    "true",
    "false",
];

/// One piece of source and its class ("" for plain text).
fn tokens(src: &str) -> Vec<(&'static str, &str)> {
    fn push<'s>(
        src: &'s str,
        out: &mut Vec<(&'static str, &'s str)>,
        plain: &mut usize,
        class: &'static str,
        from: usize,
        to: usize,
    ) {
        if *plain < from {
            out.push(("", &src[*plain..from]));
        }
        out.push((class, &src[from..to]));
        *plain = to;
    }
    let bytes = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let mut plain = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c == b'/' && bytes.get(i + 1) == Some(&b'/') {
            let end = src[i..].find('\n').map_or(src.len(), |n| i + n);
            push(src, &mut out, &mut plain, "c", i, end);
            i = end;
        } else if c == b'"' {
            let mut j = i + 1;
            while j < bytes.len() && bytes[j] != b'"' {
                j += if bytes[j] == b'\\' { 2 } else { 1 };
            }
            let end = (j + 1).min(bytes.len());
            push(src, &mut out, &mut plain, "s", i, end);
            i = end;
        } else if c == b'@' || c.is_ascii_alphabetic() || c == b'_' {
            let mut j = i + 1;
            while j < bytes.len() && (bytes[j].is_ascii_alphanumeric() || bytes[j] == b'_') {
                j += 1;
            }
            let word = &src[i..j];
            let class = if c == b'@' {
                "a"
            } else if src[j..].starts_with("::") {
                "t"
            } else if KEYWORDS.contains(&word) {
                "k"
            } else {
                ""
            };
            if class.is_empty() {
                i = j;
            } else {
                push(src, &mut out, &mut plain, class, i, j);
                i = j;
            }
        } else if c.is_ascii_digit() {
            let mut j = i + 1;
            while j < bytes.len() && bytes[j].is_ascii_digit() {
                j += 1;
            }
            push(src, &mut out, &mut plain, "n", i, j);
            i = j;
        } else {
            // Step over one whole character (text may be any UTF-8).
            i += src[i..].chars().next().map_or(1, char::len_utf8);
        }
    }
    if plain < src.len() {
        out.push(("", &src[plain..]));
    }
    out
}

/// `src` as coloured, escaped markup (inside a `<pre>`).
pub fn cedar(src: &str) -> Markup {
    html! {
        pre.cedar {
            code {
                @for (class, text) in tokens(src) {
                    @if class.is_empty() { (text) } @else { span class=(class) { (text) } }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_is_kept_and_classes_are_found() {
        let src = "@id(\"p<1>\")\npermit (principal in Group::\"a\\\"b\", action, resource)\nwhen { context.n > 12 }; // é <script>";
        let t = tokens(src);
        let joined: String = t.iter().map(|(_, s)| *s).collect();
        assert_eq!(joined, src);
        assert!(t.contains(&("a", "@id")));
        assert!(t.contains(&("s", "\"p<1>\"")));
        assert!(t.contains(&("k", "permit")));
        assert!(t.contains(&("t", "Group")));
        assert!(t.contains(&("s", "\"a\\\"b\"")));
        assert!(t.contains(&("n", "12")));
        assert!(t.contains(&("c", "// é <script>")));
        let html = cedar(src).into_string();
        assert!(html.contains("&lt;script&gt;"), "{html}");
        assert!(!html.contains("<script>"));
    }

    #[test]
    fn an_unterminated_string_or_escape_at_the_end_is_safe() {
        for src in ["\"abc", "\"a\\", "x\"", "@", "é"] {
            let joined: String = tokens(src).iter().map(|(_, s)| *s).collect();
            assert_eq!(joined, src);
        }
    }
}
