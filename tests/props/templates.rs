//! Route templates: any text parses or fails with a reason, never panics; well-formed
//! templates render exactly, and substituted values can never change the URL's structure.

use proptest::prelude::*;
use tidesync_transport_rest::Template;
use tidesync_transport_rest::template::{Value as Slot, encoded};

/// Undoes percent-encoding (for checking that rendering is reversible).
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn check_parse(source: &str) -> Result<(), TestCaseError> {
    match Template::parse(source) {
        Ok(t) => {
            prop_assert_eq!(t.as_str(), source);
            prop_assert!(Template::lenient(source).error().is_none());
            for name in t.placeholders() {
                prop_assert!(!name.is_empty());
                prop_assert!(
                    name.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
                );
            }
            // Rendering with every placeholder absent never panics.
            let rendered = t.render::<()>(true, |_| Ok(Slot::Absent)).unwrap();
            prop_assert_eq!(rendered.is_none(), t.placeholders().next().is_some());
        }
        Err(err) => {
            let text = err.to_string();
            prop_assert!(text.starts_with("bad template `"), "{}", text);
            prop_assert!(!err.reason.is_empty());
            prop_assert_eq!(err.template.as_str(), source);
            // The lenient form keeps the same error for the builder's validation.
            let lenient = Template::lenient(source);
            prop_assert_eq!(lenient.error(), Some(err.reason.as_str()));
            // Through serde the error is a clear deserialization error, not a panic.
            let json = serde_json::to_string(source).unwrap();
            let de = serde_json::from_str::<Template>(&json)
                .unwrap_err()
                .to_string();
            prop_assert!(de.contains(&err.reason), "{}", de);
        }
    }
    Ok(())
}

/// A literal, with braces escaped the template way.
fn escape(lit: &str) -> String {
    lit.replace('{', "{{").replace('}', "}}")
}

proptest! {
    #![proptest_config(crate::cases(512))]

    #[test]
    fn any_text_parses_or_explains_why(source in any::<String>()) {
        check_parse(&source)?;
    }

    #[test]
    fn brace_soup_parses_or_explains_why(source in "[{}a-z_./ ?=&-]{0,40}") {
        check_parse(&source)?;
    }

    #[test]
    fn well_formed_templates_render_exactly(
        parts in prop::collection::vec((".{0,8}", "[A-Za-z0-9_.-]{1,10}"), 0..6),
        values in prop::collection::vec(any::<String>(), 6),
        tail in ".{0,8}",
    ) {
        let mut source = String::new();
        let mut expected = String::new();
        for (i, (lit, name)) in parts.iter().enumerate() {
            source.push_str(&escape(lit));
            source.push('{');
            source.push_str(name);
            source.push('}');
            expected.push_str(lit);
            expected.push_str(&encoded(&values[i]));
        }
        source.push_str(&escape(&tail));
        expected.push_str(&tail);
        let t = Template::parse(&source).expect("well-formed");
        let names: Vec<&str> = t.placeholders().collect();
        let wanted: Vec<&str> = parts.iter().map(|(_, n)| n.as_str()).collect();
        prop_assert_eq!(names, wanted);
        // Values are looked up by position (names may repeat).
        let mut next = 0;
        let rendered = t
            .render::<()>(true, |_| {
                next += 1;
                Ok(Slot::Text(values[next - 1].clone()))
            })
            .unwrap()
            .unwrap();
        prop_assert_eq!(&rendered, &expected);
    }

    #[test]
    fn substituted_values_cannot_change_the_url(value in any::<String>()) {
        let t = Template::parse("/api/posts/{id}?x=1").unwrap();
        let rendered = t
            .render::<()>(true, |_| Ok(Slot::Text(value.clone())))
            .unwrap()
            .unwrap();
        let middle = rendered
            .strip_prefix("/api/posts/")
            .and_then(|r| r.strip_suffix("?x=1"))
            .expect("the literal parts are intact");
        prop_assert!(
            middle
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~%".contains(&b)),
            "unescaped byte in {:?}",
            middle
        );
        prop_assert_eq!(percent_decode(middle), Some(value));
    }
}
