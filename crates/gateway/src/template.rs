//! Path templates of the routes file: `/api/users/{id}/dismiss`, `{name}`
//! segments and a trailing `{*rest}`. Owns parsing a template and matching a
//! request path against it; knows nothing of Cedar or of HTTP beyond the path.

use std::collections::BTreeMap;

/// One segment of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    /// Matches exactly this text.
    Literal(String),
    /// Matches one non-empty segment, bound to the name.
    Param(String),
    /// Matches the rest of the path (possibly empty), bound to the name; last only.
    Rest(String),
}

/// A parsed path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    text: String,
    segments: Vec<Segment>,
}

/// Why a template is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// Templates are absolute.
    #[error("a path template starts with `/`")]
    NotAbsolute,
    /// A `{` without its `}`, or text around a parameter within one segment.
    #[error("segment `{0}`: a parameter is a whole segment, `{{name}}` or `{{*name}}`")]
    BadSegment(String),
    /// `{*rest}` anywhere but last.
    #[error("`{{*{0}}}` must be the last segment")]
    RestNotLast(String),
    /// The same name twice.
    #[error("parameter `{0}` appears twice")]
    Duplicate(String),
}

fn is_name(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl Template {
    /// Parse `text` (e.g. `/api/users/{id}`).
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        let Some(body) = text.strip_prefix('/') else {
            return Err(TemplateError::NotAbsolute);
        };
        let parts: Vec<&str> = if body.is_empty() {
            Vec::new()
        } else {
            body.split('/').collect()
        };
        let mut segments = Vec::with_capacity(parts.len());
        let mut names = std::collections::BTreeSet::new();
        for (i, part) in parts.iter().enumerate() {
            let segment =
                if let Some(inner) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                    if let Some(rest) = inner.strip_prefix('*') {
                        if !is_name(rest) {
                            return Err(TemplateError::BadSegment((*part).to_string()));
                        }
                        if i + 1 != parts.len() {
                            return Err(TemplateError::RestNotLast(rest.to_string()));
                        }
                        Segment::Rest(rest.to_string())
                    } else if is_name(inner) {
                        Segment::Param(inner.to_string())
                    } else {
                        return Err(TemplateError::BadSegment((*part).to_string()));
                    }
                } else if part.contains('{') || part.contains('}') {
                    return Err(TemplateError::BadSegment((*part).to_string()));
                } else {
                    Segment::Literal((*part).to_string())
                };
            if let Segment::Param(n) | Segment::Rest(n) = &segment {
                if !names.insert(n.clone()) {
                    return Err(TemplateError::Duplicate(n.clone()));
                }
            }
            segments.push(segment);
        }
        Ok(Template {
            text: text.to_string(),
            segments,
        })
    }

    /// The template as written (the default resource is `Route::"<this>"`).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the template binds `name`.
    pub fn binds(&self, name: &str) -> bool {
        self.segments
            .iter()
            .any(|s| matches!(s, Segment::Param(n) | Segment::Rest(n) if n == name))
    }

    /// The parameters bound by matching `path` (without its query), or
    /// `None` when it does not match. Parameters are percent-decoded; a
    /// segment that decodes to something with `/` or is not UTF-8 does not
    /// match (a parameter never spans segments).
    pub fn matches(&self, path: &str) -> Option<BTreeMap<String, String>> {
        let body = path.strip_prefix('/')?;
        let mut parts = if body.is_empty() {
            Vec::new()
        } else {
            body.split('/').collect::<Vec<_>>()
        };
        let mut bound = BTreeMap::new();
        for (i, segment) in self.segments.iter().enumerate() {
            match segment {
                Segment::Literal(l) => {
                    let part = parts.get(i)?;
                    let same = if part.contains('%') {
                        decode(part).is_some_and(|d| d == *l)
                    } else {
                        part == l
                    };
                    if !same {
                        return None;
                    }
                }
                Segment::Param(n) => {
                    let value = decode(parts.get(i)?)?;
                    if value.is_empty() || value.contains('/') {
                        return None;
                    }
                    bound.insert(n.clone(), value);
                }
                Segment::Rest(n) => {
                    let rest: Vec<&str> = parts.drain(i.min(parts.len())..).collect();
                    let mut decoded = Vec::with_capacity(rest.len());
                    for p in rest {
                        decoded.push(decode(p)?);
                    }
                    bound.insert(n.clone(), decoded.join("/"));
                    return Some(bound);
                }
            }
        }
        (parts.len() == self.segments.len()).then_some(bound)
    }
}

/// `Ok` when every segment of `path` means the same to PartnerGate and to
/// any upstream: no dot segment (`.` or `..`, also percent-encoded, also
/// before a `;` parameter as some servers read it), no slash or backslash
/// hidden in a segment (`%2f`, `%5c`), no backslash (some servers read it
/// as `/`), no control character, nothing encoded twice into one of these
/// (`%252e`), no escape that is malformed or not UTF-8 (an overlong `%c0%ae`).
/// Refusing them, rather than normalising as one upstream would,
/// leaves nothing to guess about how the upstream normalises. Else which
/// segment and why.
pub fn unambiguous(path: &str) -> Result<(), String> {
    if path.contains('\\') {
        return Err("a segment with a backslash (some servers read it as `/`)".into());
    }
    for segment in path.split('/') {
        let lower = segment.to_ascii_lowercase();
        let Some(decoded) = decode(segment) else {
            return Err(format!(
                "segment `{}`: a percent escape that is malformed or does not decode to UTF-8 \
                 (an overlong `%c0%ae` is read as `.` by some servers)",
                escape(segment)
            ));
        };
        let decoded_lower = decoded.to_ascii_lowercase();
        let why = if lower.contains("%2f") || lower.contains("%5c") {
            Some("an encoded `/` or `\\` inside a segment")
        } else if decoded.contains('\\') {
            Some("an encoded backslash")
        } else if ["%2e", "%2f", "%5c"]
            .iter()
            .any(|e| decoded_lower.contains(e))
        {
            Some("a `.`, `/` or `\\` encoded twice")
        } else if decoded.chars().any(char::is_control) {
            Some("a control character")
        } else {
            let name = decoded.split(';').next().unwrap_or("");
            matches!(name, "." | "..").then_some("a dot segment (`.` or `..`)")
        };
        if let Some(why) = why {
            return Err(format!("segment `{}`: {why}", escape(segment)));
        }
    }
    Ok(())
}

/// `text` with control characters escaped, for a message.
fn escape(text: &str) -> String {
    text.chars().flat_map(char::escape_default).collect()
}

/// Percent-decode one path segment; `None` when it is malformed or not UTF-8.
pub(crate) fn decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = segment.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(t: &str, p: &str) -> Option<Vec<(String, String)>> {
        Template::parse(t)
            .unwrap()
            .matches(p)
            .map(|b| b.into_iter().collect())
    }

    #[test]
    fn literal_templates_match_only_themselves() {
        assert_eq!(m("/api/users", "/api/users"), Some(vec![]));
        assert_eq!(m("/api/users", "/api/users/x"), None);
        assert_eq!(m("/api/users", "/api/user"), None);
        assert_eq!(m("/", "/"), Some(vec![]));
        assert_eq!(m("/", "/x"), None);
    }

    #[test]
    fn parameters_bind_one_decoded_segment() {
        assert_eq!(
            m("/api/users/{id}/dismiss", "/api/users/pat/dismiss"),
            Some(vec![("id".into(), "pat".into())])
        );
        assert_eq!(
            m("/api/users/{id}", "/api/users/p%20at"),
            Some(vec![("id".into(), "p at".into())])
        );
        assert_eq!(m("/api/users/{id}", "/api/users/"), None, "empty segment");
        assert_eq!(
            m("/api/users/{id}", "/api/users/a%2Fb"),
            None,
            "an encoded slash"
        );
        assert_eq!(m("/api/users/{id}", "/api/users/%zz"), None, "bad escape");
        assert_eq!(m("/api/users/{id}/dismiss", "/api/users/pat"), None);
    }

    #[test]
    fn rest_binds_the_remainder_even_empty() {
        assert_eq!(
            m("/static/{*path}", "/static/css/a.css"),
            Some(vec![("path".into(), "css/a.css".into())])
        );
        assert_eq!(
            m("/static/{*path}", "/static/"),
            Some(vec![("path".into(), "".into())])
        );
        assert_eq!(
            m("/static/{*path}", "/static"),
            Some(vec![("path".into(), "".into())])
        );
        assert_eq!(m("/static/{*path}", "/other/x"), None);
    }

    #[test]
    fn bad_templates_are_refused_with_the_reason() {
        assert_eq!(Template::parse("api"), Err(TemplateError::NotAbsolute));
        assert_eq!(
            Template::parse("/a/{*r}/b"),
            Err(TemplateError::RestNotLast("r".into()))
        );
        assert_eq!(
            Template::parse("/a/x{id}"),
            Err(TemplateError::BadSegment("x{id}".into()))
        );
        assert_eq!(
            Template::parse("/a/{}"),
            Err(TemplateError::BadSegment("{}".into()))
        );
        assert_eq!(
            Template::parse("/a/{id}/{id}"),
            Err(TemplateError::Duplicate("id".into()))
        );
    }
}
