//! Query parameters of a pull feed, kept in the order they were written.
//!
//! Order matters to real APIs: many read the sort from the parameter order
//! (`orderby.updatedAt=asc&orderby.id=asc`), and a walk over data sorted by another key than the
//! one meant skips rows as the table changes. So the parameters go out exactly in the order of
//! the config file (TOML or JSON) or of the builder calls.

use std::fmt;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::template::Template;

/// Query parameters (name → value template) in the order written. Names are unique; setting a
/// name again replaces its value in place.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryParams(Vec<(String, Template)>);

impl QueryParams {
    /// No parameters.
    pub fn new() -> Self {
        QueryParams(Vec::new())
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Sets `name` (replacing its value in place if it is already there, else appending).
    pub fn insert(&mut self, name: impl Into<String>, value: Template) {
        let name = name.into();
        match self.0.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => self.0.push((name, value)),
        }
    }

    /// The value template of `name`.
    pub fn get(&self, name: &str) -> Option<&Template> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    /// The parameters in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Template)> {
        self.0.iter().map(|(n, t)| (n.as_str(), t))
    }

    /// The value templates in order.
    pub fn values(&self) -> impl Iterator<Item = &Template> {
        self.0.iter().map(|(_, t)| t)
    }
}

impl<'a> IntoIterator for &'a QueryParams {
    type Item = (&'a str, &'a Template);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (String, Template)>,
        fn(&'a (String, Template)) -> (&'a str, &'a Template),
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(n, t)| (n.as_str(), t))
    }
}

impl Serialize for QueryParams {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (name, value) in &self.0 {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

struct OrderedVisitor;

impl<'de> Visitor<'de> for OrderedVisitor {
    type Value = QueryParams;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a table of query parameter names to value templates")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<QueryParams, A::Error> {
        let mut out = QueryParams::new();
        while let Some((name, value)) = access.next_entry::<String, Template>()? {
            if out.get(&name).is_some() {
                return Err(serde::de::Error::custom(format!(
                    "query parameter `{name}` is given twice"
                )));
            }
            out.0.push((name, value));
        }
        Ok(out)
    }
}

impl<'de> Deserialize<'de> for QueryParams {
    /// Entries arrive in the order of the document for JSON and for TOML (the workspace builds
    /// `toml` with `preserve_order`).
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(OrderedVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_order_is_kept_and_duplicates_refused() {
        let q: QueryParams = serde_json::from_str(
            r#"{"orderby.updatedAt": "asc", "orderby.id": "asc", "a": "{limit}"}"#,
        )
        .unwrap();
        let names: Vec<&str> = q.iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["orderby.updatedAt", "orderby.id", "a"]);
        assert_eq!(
            serde_json::to_string(&q).unwrap(),
            r#"{"orderby.updatedAt":"asc","orderby.id":"asc","a":"{limit}"}"#
        );
        let err = serde_json::from_str::<QueryParams>(r#"{"a": "1", "a": "2"}"#).unwrap_err();
        assert!(err.to_string().contains("`a` is given twice"), "{err}");
    }

    #[test]
    fn insert_replaces_in_place() {
        let mut q = QueryParams::new();
        q.insert("b", Template::lenient("1"));
        q.insert("a", Template::lenient("2"));
        q.insert("b", Template::lenient("3"));
        let got: Vec<(String, String)> = q
            .iter()
            .map(|(n, t)| (n.to_owned(), t.to_string()))
            .collect();
        assert_eq!(got, [("b".into(), "3".into()), ("a".into(), "2".into())]);
    }
}
