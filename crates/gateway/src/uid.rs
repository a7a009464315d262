//! Entity uids built per request from the routes file's uid templates
//! (`User::"{id}"`, `Account::"acme-{account}"`, the principal's
//! `<principal_type>::"<id>"`, an action `Action::"<name>"`). Owns the
//! compiled form of such a template and the one rule that builds a uid from
//! it: the text form's uid, exactly.
//!
//! The text form is the template with each value escaped as a Cedar string
//! literal, read by Cedar's uid parser ([`by_text`]); that parser was about
//! a third of a gateway request's mapping. The compiled form parses the
//! type and the template's own text once, at load, joins the request's
//! values into the id with no parser, and keeps the uid only when its
//! normalized text (what Cedar's parser compares its input with) is the
//! filled text: then the parser would have read this very uid. Any other
//! request (a control character, a quote Cedar escapes another way) takes
//! the text form, so both give the same uid or the same error.
//! Knows nothing of HTTP or routes.

use cedar_policy::{EntityId, EntityTypeName, EntityUid};

/// Why a uid cannot be built from a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UidError {
    /// A `{name}` the request does not bind (the text is the reason).
    Unbound(String),
    /// The filled text is not a Cedar entity uid (Cedar's message).
    Parse(String),
}

impl UidError {
    /// The reason a refusal gives: an unbound name as it is, a parse
    /// error after `what: ` (`resource: ...`) when `what` is given.
    pub fn reason(&self, what: Option<&str>) -> String {
        match (self, what) {
            (UidError::Unbound(m), _) | (UidError::Parse(m), None) => m.clone(),
            (UidError::Parse(m), Some(w)) => format!("{w}: {m}"),
        }
    }
}

/// One piece of a compiled id.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    /// Text of the template, already unescaped.
    Text(String),
    /// A value of the request, by name.
    Value(String),
}

/// A uid template, compiled where it can be.
#[derive(Debug, Clone)]
pub struct UidTemplate {
    text: String,
    compiled: Option<(EntityTypeName, Vec<Piece>)>,
}

impl UidTemplate {
    /// Compile `text` (`Type::"...{name}..."`). A template the compiled form
    /// cannot take (no `::"`, an escape next to a `{`, a type Cedar refuses)
    /// keeps the text form only: slower, never different.
    pub fn new(text: &str) -> Self {
        UidTemplate {
            text: text.to_string(),
            compiled: compile(text),
        }
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The uid with each `{name}` replaced by `value(name)`: the uid
    /// [`by_text`] gives, or its error.
    pub fn build<'v>(
        &self,
        value: &dyn Fn(&str) -> Option<&'v str>,
    ) -> Result<EntityUid, UidError> {
        let filled = fill(&self.text, value)?;
        match self.compiled_uid(&filled, value) {
            Some(uid) => Ok(uid),
            None => parse(&filled),
        }
    }

    /// The uid of the compiled form, when it is the one Cedar's parser
    /// reads from `filled` (its normalized text; Cedar's parser reads a uid
    /// only from that text, and reads it back as the same uid).
    fn compiled_uid<'v>(
        &self,
        filled: &str,
        value: &dyn Fn(&str) -> Option<&'v str>,
    ) -> Option<EntityUid> {
        let (ty, pieces) = self.compiled.as_ref()?;
        let mut id = String::with_capacity(filled.len());
        for piece in pieces {
            match piece {
                Piece::Text(t) => id.push_str(t),
                Piece::Value(name) => id.push_str(value(name)?),
            }
        }
        let uid = EntityUid::from_type_name_and_id(ty.clone(), EntityId::new(id));
        (uid.to_string() == filled).then_some(uid)
    }
}

/// Uids of one type whose id is a request's value as a whole (the
/// principal `<principal_type>::"<id>"`, an action `Action::"<method>"`).
#[derive(Debug, Clone)]
pub struct TypedId {
    ty_text: String,
    ty: Option<EntityTypeName>,
}

impl TypedId {
    /// Uids of type `ty` (as written in the routes file).
    pub fn new(ty: &str) -> Self {
        TypedId {
            ty_text: ty.to_string(),
            ty: ty.parse().ok(),
        }
    }

    /// `<ty>::"<id>"`, the id escaped as a Cedar string literal, as Cedar's
    /// parser reads it (its error, when it refuses).
    pub fn build(&self, id: &str) -> Result<EntityUid, UidError> {
        let quoted = serde_json::to_string(id).map_err(|e| UidError::Parse(e.to_string()))?;
        let filled = format!("{}::{quoted}", self.ty_text);
        let uid = self
            .ty
            .as_ref()
            .map(|ty| EntityUid::from_type_name_and_id(ty.clone(), EntityId::new(id)));
        match uid {
            // Its normalized text: what Cedar's parser reads it from.
            Some(uid) if uid.to_string() == filled => Ok(uid),
            _ => parse(&filled),
        }
    }
}

fn unbound(name: &str) -> UidError {
    UidError::Unbound(format!("`{{{name}}}` is not a parameter of the path"))
}

/// The text form: `text` with every `{name}` replaced by `value(name)`
/// escaped for a Cedar string literal (so a value can never change the
/// uid's type or close its quotes), read by Cedar's uid parser.
pub fn by_text<'v>(
    text: &str,
    value: &dyn Fn(&str) -> Option<&'v str>,
) -> Result<EntityUid, UidError> {
    parse(&fill(text, value)?)
}

fn parse(filled: &str) -> Result<EntityUid, UidError> {
    filled
        .parse()
        .map_err(|e: cedar_policy::ParseErrors| UidError::Parse(e.to_string()))
}

/// `text` with every `{name}` replaced by `value(name)`, escaped for a
/// Cedar string literal.
pub(crate) fn fill<'v>(
    text: &str,
    value: &dyn Fn(&str) -> Option<&'v str>,
) -> Result<String, UidError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..]
            .find('}')
            .ok_or_else(|| UidError::Unbound(format!("`{text}`: a `{{` without its `}}`")))?;
        let name = &rest[open + 1..open + close];
        let v = value(name).ok_or_else(|| unbound(name))?;
        let escaped = serde_json::to_string(v).map_err(|e| UidError::Parse(e.to_string()))?;
        out.push_str(&escaped[1..escaped.len() - 1]);
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The compiled form of `text`, when every piece of it can be read alone:
/// `Type::"` + pieces + `"`, each text piece a valid Cedar string literal
/// on its own (so no escape spans a value), the type one Cedar accepts.
fn compile(text: &str) -> Option<(EntityTypeName, Vec<Piece>)> {
    let quote = text.find('"')?;
    let ty_text = text[..quote].strip_suffix("::")?;
    let body = text[quote + 1..].strip_suffix('"')?;
    if ty_text.contains(['{', '}']) {
        return None;
    }
    let ty: EntityTypeName = ty_text.parse().ok()?;
    let mut pieces = Vec::new();
    let mut rest = body;
    while let Some(open) = rest.find('{') {
        let close = rest[open..].find('}')? + open;
        if open > 0 {
            pieces.push(Piece::Text(unescape(ty_text, &rest[..open])?));
        }
        pieces.push(Piece::Value(rest[open + 1..close].to_string()));
        rest = &rest[close + 1..];
    }
    if !rest.is_empty() {
        pieces.push(Piece::Text(unescape(ty_text, rest)?));
    }
    Some((ty, pieces))
}

/// The string a piece of a Cedar string literal stands for, as Cedar reads
/// it; `None` when Cedar does not read it alone.
fn unescape(ty: &str, piece: &str) -> Option<String> {
    let uid: EntityUid = format!("{ty}::\"{piece}\"").parse().ok()?;
    Some(uid.id().unescaped().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<&'a str> + 'a {
        move |n| pairs.iter().find(|(k, _)| *k == n).map(|(_, v)| *v)
    }

    /// Values that stress the escaping: quotes, backslashes, braces,
    /// control characters, non-ASCII, Cedar's own escape forms, empty.
    const VALUES: &[&str] = &[
        "emma",
        "",
        "a\"b",
        "a\\b",
        "\\",
        "\"",
        "{id}",
        "x}y{",
        "tab\there",
        "line\nbreak",
        "nul\0",
        "bell\u{7}",
        "del\u{7f}",
        "\u{85}next-line",
        "émile ✓ 😀",
        "\\u{41}",
        "\\n",
        "'single'",
        "::\"Admin\"",
        "a/b?c=d&e",
    ];

    const TEMPLATES: &[&str] = &[
        "User::\"{id}\"",
        "Account::\"acme-{account}\"",
        "Account::\"{account}-{id}\"",
        "Account::\"pre\\\"{id}\\\\post\"",
        "Account::\"\\u{e9}{id}\\n\"",
        "Route::\"/api/users/{id}\"",
        "User::\"fixed\"",
        "Account::\"{missing}\"",
        "Nope::\"{id}\"",
        "User::{id}",
        "user::\"{id}\"",
        "User::\"a\\{id}\"",
        "User::\"{id\"",
    ];

    #[test]
    fn the_compiled_form_gives_the_text_forms_uid_or_error() {
        let mut compiled = 0;
        for t in TEMPLATES {
            let template = UidTemplate::new(t);
            compiled += usize::from(template.compiled.is_some());
            for v in VALUES {
                for w in VALUES {
                    let pairs = [("id", *v), ("account", *w)];
                    let value = values(&pairs);
                    assert_eq!(
                        template.build(&value),
                        by_text(t, &value),
                        "template {t:?}, id {v:?}, account {w:?}"
                    );
                }
            }
        }
        // The shapes the routes file uses take the compiled form for plain
        // values (else the text form answers everything, slowly).
        assert!(compiled >= 7, "{compiled} of {} compiled", TEMPLATES.len());
        for t in [
            "User::\"{id}\"",
            "Account::\"acme-{id}\"",
            "Partner::User::\"{id}\"",
        ] {
            let filled = fill(t, &|_| Some("emma é")).unwrap();
            let fast = UidTemplate::new(t).compiled_uid(&filled, &|_| Some("emma é"));
            assert_eq!(fast, Some(filled.parse().unwrap()), "{t}");
        }
    }

    #[test]
    fn a_typed_id_is_the_quoted_id_read_by_cedar() {
        for ty in [
            "User",
            "Partner::User",
            "user",
            "Us er",
            "User\"x",
            "Action",
            "{id}",
        ] {
            let typed = TypedId::new(ty);
            for v in VALUES {
                let quoted = serde_json::to_string(v).unwrap();
                let expected = parse(&format!("{ty}::{quoted}"));
                assert_eq!(typed.build(v), expected, "{ty:?} {v:?}");
            }
        }
        assert!(TypedId::new("Partner::User").ty.is_some());
    }

    #[test]
    fn reasons_keep_the_wording_of_the_refusals() {
        let t = UidTemplate::new("Account::\"{missing}\"");
        let e = t.build(&|_| None).unwrap_err();
        assert_eq!(
            e.reason(Some("resource")),
            "`{missing}` is not a parameter of the path"
        );
        let e = UidTemplate::new("User::\"{id}\"")
            .build(&|_| Some("nul\0"))
            .unwrap_err();
        assert!(
            e.reason(Some("resource")).starts_with("resource: "),
            "{e:?}"
        );
        assert!(!e.reason(None).starts_with("resource: "));
    }
}
