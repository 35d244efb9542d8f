//! URL and query templates: literal text with `{name}` placeholders.
//!
//! Syntax: `{name}` where `name` is one or more of `A-Z a-z 0-9 _ - .`; `{{` and `}}` stand for
//! literal braces. Anything else (an unclosed `{`, an empty `{}`, a stray `}`) is a syntax error,
//! reported when the template is parsed (so when a route spec is deserialized or built).
//!
//! Which names a template may use depends on where it is used; the route specs check that when
//! the transport is built (see the crate docs, "Templates"). Values are percent-encoded when they
//! are substituted: every byte outside the RFC 3986 unreserved set (`A-Z a-z 0-9 - . _ ~`) is
//! escaped, so a key such as `a/b c` can never change the path.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A parsed template.
#[derive(Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
    /// Set by [`Template::lenient`] when the text did not parse.
    error: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Lit(String),
    Var(String),
}

/// A template that failed to parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    /// The template text.
    pub template: String,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad template `{}`: {}", self.template, self.reason)
    }
}

impl std::error::Error for TemplateError {}

/// What a placeholder resolves to while rendering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// Substitute this text (encoded as the caller asks).
    Text(String),
    /// The value is not available; the caller decides (omit a query parameter, or fail).
    Absent,
}

fn name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')
}

impl Template {
    /// Parses `source`.
    pub fn parse(source: &str) -> Result<Self, TemplateError> {
        let err = |reason: String| TemplateError {
            template: source.to_owned(),
            reason,
        };
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut chars = source.char_indices().peekable();
        while let Some((at, c)) = chars.next() {
            match c {
                '{' if chars.peek().map(|(_, c)| *c) == Some('{') => {
                    chars.next();
                    lit.push('{');
                }
                '}' if chars.peek().map(|(_, c)| *c) == Some('}') => {
                    chars.next();
                    lit.push('}');
                }
                '}' => {
                    return Err(err(format!(
                        "stray `}}` at byte {at} (write `}}}}` for a literal brace)"
                    )));
                }
                '{' => {
                    let mut name = String::new();
                    let mut closed = false;
                    for (_, c) in chars.by_ref() {
                        if c == '}' {
                            closed = true;
                            break;
                        }
                        name.push(c);
                    }
                    if !closed {
                        return Err(err(format!("unclosed `{{` at byte {at}")));
                    }
                    if name.is_empty() {
                        return Err(err(format!("empty placeholder `{{}}` at byte {at}")));
                    }
                    if let Some(bad) = name.chars().find(|c| !name_char(*c)) {
                        return Err(err(format!(
                            "placeholder `{{{name}}}` contains `{bad}`; names use letters, \
                             digits, `_`, `-` and `.` (write `{{{{` for a literal brace)"
                        )));
                    }
                    if !lit.is_empty() {
                        parts.push(Part::Lit(std::mem::take(&mut lit)));
                    }
                    parts.push(Part::Var(name));
                }
                c => lit.push(c),
            }
        }
        if !lit.is_empty() {
            parts.push(Part::Lit(lit));
        }
        Ok(Template {
            source: source.to_owned(),
            parts,
            error: None,
        })
    }

    /// Parses `source`, keeping a syntax error inside the template instead of failing, so
    /// builder methods can take plain strings; [`Template::error`] reports it (the transport
    /// builder's validation does).
    pub fn lenient(source: &str) -> Self {
        Template::parse(source).unwrap_or_else(|e| Template {
            source: source.to_owned(),
            parts: Vec::new(),
            error: Some(e.reason),
        })
    }

    /// The syntax error of a template made by [`Template::lenient`], if any.
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    /// The template text as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The placeholder names, in order of appearance (with repeats).
    pub fn placeholders(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Var(name) => Some(name.as_str()),
            Part::Lit(_) => None,
        })
    }

    /// Whether the template uses `name`.
    pub fn uses(&self, name: &str) -> bool {
        self.placeholders().any(|p| p == name)
    }

    /// Renders the template. `lookup` resolves each placeholder; `encode` decides whether
    /// substituted values are percent-encoded. Returns `Ok(None)` if some placeholder is
    /// [`Value::Absent`]; errors from `lookup` are passed through.
    pub fn render<E>(
        &self,
        encode: bool,
        mut lookup: impl FnMut(&str) -> Result<Value, E>,
    ) -> Result<Option<String>, E> {
        let mut out = String::with_capacity(self.source.len() + 16);
        for part in &self.parts {
            match part {
                Part::Lit(text) => out.push_str(text),
                Part::Var(name) => match lookup(name)? {
                    Value::Text(value) if encode => encode_component(&value, &mut out),
                    Value::Text(value) => out.push_str(&value),
                    Value::Absent => return Ok(None),
                },
            }
        }
        Ok(Some(out))
    }
}

/// Appends `value` percent-encoded: everything but RFC 3986 unreserved characters is escaped.
pub fn encode_component(value: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in value.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0F)]));
        }
    }
}

/// `value` percent-encoded (see [`encode_component`]).
pub fn encoded(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    encode_component(value, &mut out);
    out
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Template({:?})", self.source)
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl std::str::FromStr for Template {
    type Err = TemplateError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Template::parse(s)
    }
}

impl Serialize for Template {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.source)
    }
}

impl<'de> Deserialize<'de> for Template {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let source = String::deserialize(deserializer)?;
        Template::parse(&source).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(t: &Template, pairs: &[(&str, &str)], encode: bool) -> Option<String> {
        t.render::<()>(encode, |name| {
            Ok(pairs
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| Value::Text((*v).to_owned()))
                .unwrap_or(Value::Absent))
        })
        .ok()
        .flatten()
    }

    #[test]
    fn parses_placeholders_and_escaped_braces() {
        let t = Template::parse("/api/{table}/{id}?q={{x}}&f=(u > '{cursor}')").unwrap();
        assert_eq!(
            t.placeholders().collect::<Vec<_>>(),
            ["table", "id", "cursor"]
        );
        assert_eq!(
            render(
                &t,
                &[("table", "posts"), ("id", "p1"), ("cursor", "5")],
                false
            )
            .as_deref(),
            Some("/api/posts/p1?q={x}&f=(u > '5')")
        );
    }

    #[test]
    fn substituted_values_are_percent_encoded() {
        let t = Template::parse("/api/posts/{id}").unwrap();
        assert_eq!(
            render(&t, &[("id", "a/b c?&=é")], true).as_deref(),
            Some("/api/posts/a%2Fb%20c%3F%26%3D%C3%A9")
        );
        assert_eq!(encoded("AZaz09-._~"), "AZaz09-._~");
    }

    #[test]
    fn absent_value_renders_none() {
        let t = Template::parse("gt.{cursor}").unwrap();
        assert_eq!(render(&t, &[], true), None);
    }

    #[test]
    fn syntax_errors_are_explained() {
        for (src, needle) in [
            ("/a/{id", "unclosed"),
            ("/a/{}", "empty placeholder"),
            ("/a/}", "stray"),
            ("/a/{i d}", "contains ` `"),
            ("/a/{x{y}}", "contains `{`"),
        ] {
            let err = Template::parse(src).unwrap_err();
            assert!(err.to_string().contains(needle), "{src}: {err}");
        }
    }

    #[test]
    fn serde_round_trip_and_error() {
        let t: Template = serde_json::from_str("\"/p/{id}\"").unwrap();
        assert_eq!(serde_json::to_string(&t).unwrap(), "\"/p/{id}\"");
        let err = serde_json::from_str::<Template>("\"/p/{id\"").unwrap_err();
        assert!(err.to_string().contains("unclosed"), "{err}");
    }
}
