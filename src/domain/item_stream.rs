//! Bodies of many items, `{"items": [...]}` (batches, bulk certificate uploads), read as a
//! stream: each item is validated and dropped before the next is read, so memory is the
//! body, the validated items and one item, never a `serde_json::Value` tree of the whole body
//! (which costs 20 times the body).
//!
//! An item (or a field beside `items`) is first taken as raw JSON, which costs nothing but
//! its syntax check; only one within its size bound becomes a tree, so padding of any size
//! (`{"pad": [0, 0, …]}`) is refused without being built. Keys repeated at any depth are
//! refused, as [`super::strict_json`] does for single requests.

use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::validation::ErrorCollector;
use super::{ErrorCode, FieldError, ValidationErrors};

/// The shape of one kind of items body.
#[derive(Debug, Clone, Copy)]
pub struct ItemRules {
    pub max_items: usize,
    /// Raw JSON bytes of one item, at most.
    pub max_item_bytes: usize,
    /// What the items are, for messages ("create requests", "certificates").
    pub what: &'static str,
}

/// Raw JSON bytes of a field beside `items`, at most (such fields are ignored).
const MAX_OTHER_FIELD_BYTES: usize = 64 * 1024;

/// Reads `body` as `{"items": [...]}`: every item through `parse` (errors point inside the
/// item; they are prefixed with `/items/N`), all of them or every error (the first
/// [`MAX_REPORTED_ERRORS`](super::validation::MAX_REPORTED_ERRORS), and a count of the
/// rest). `checkpoint` is called between items (long parses give their CPU slot back there).
pub fn parse_items<T>(
    body: &[u8],
    rules: ItemRules,
    mut parse: impl FnMut(serde_json::Value) -> Result<T, ValidationErrors>,
    mut checkpoint: impl FnMut(),
) -> Result<Vec<T>, ValidationErrors> {
    let invalid = |pointer: &str, message: String| {
        ValidationErrors::single(FieldError::new(ErrorCode::InvalidRequest, pointer, message))
    };
    let mut de = serde_json::Deserializer::from_slice(body);
    let submission = Submission {
        rules,
        parse: &mut parse,
        checkpoint: &mut checkpoint,
    }
    .deserialize(&mut de)
    .and_then(|s| de.end().map(|()| s))
    .map_err(|e| invalid("", format!("request body is not valid JSON: {e}")))?;
    let items = match submission {
        Body::NotAnObject => return Err(invalid("", "request body must be a JSON object".into())),
        Body::Object(None) | Body::Object(Some(Items::NotAnArray)) => {
            return Err(invalid(
                "/items",
                format!("items must be an array of {}", rules.what),
            ));
        }
        Body::Object(Some(Items::Array(items))) => items,
    };
    if items.count == 0 || items.count > rules.max_items {
        return Err(invalid(
            "/items",
            format!(
                "items holds 1 to {} {}, not {}",
                rules.max_items, rules.what, items.count
            ),
        ));
    }
    match items.errors.finish() {
        Some(errors) => Err(errors),
        None => Ok(items.parsed),
    }
}

/// A visitor's answer to every JSON scalar: `$shape` (the wrong shape, reported by the
/// caller with its own pointer), rather than serde's type error.
macro_rules! scalars_are {
    ($shape:expr) => {
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok($shape)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok($shape)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
            Ok($shape)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok($shape)
        }
        fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
            Ok($shape)
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok($shape)
        }
    };
}

/// What the top level of a submission turned out to be.
enum Body<T> {
    NotAnObject,
    Object(Option<Items<T>>),
}

enum Items<T> {
    NotAnArray,
    Array(ParsedItems<T>),
}

struct ParsedItems<T> {
    /// Items seen (past the maximum, skipped unread).
    count: usize,
    parsed: Vec<T>,
    errors: ErrorCollector,
}

/// Reads the top-level object, validating `items` as it streams past.
struct Submission<'a, P, C> {
    rules: ItemRules,
    parse: &'a mut P,
    checkpoint: &'a mut C,
}

impl<'de, T, P, C> DeserializeSeed<'de> for Submission<'_, P, C>
where
    P: FnMut(serde_json::Value) -> Result<T, ValidationErrors>,
    C: FnMut(),
{
    type Value = Body<T>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Body<T>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, T, P, C> Visitor<'de> for Submission<'_, P, C>
where
    P: FnMut(serde_json::Value) -> Result<T, ValidationErrors>,
    C: FnMut(),
{
    type Value = Body<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object with an items array")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Body<T>, A::Error> {
        let mut seen = HashSet::new();
        let mut items = None;
        let Submission {
            rules,
            parse,
            checkpoint,
        } = self;
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                return Err(de::Error::custom(format_args!(
                    "the key {:?} appears more than once",
                    super::validation::echo(&key)
                )));
            }
            if key == "items" {
                items = Some(map.next_value_seed(ItemsSeed {
                    rules,
                    parse: &mut *parse,
                    checkpoint: &mut *checkpoint,
                })?);
            } else {
                // Unknown keys are ignored, but must still be well formed, unambiguous and
                // small.
                let raw: &RawValue = map.next_value()?;
                if raw.get().len() > MAX_OTHER_FIELD_BYTES {
                    return Err(de::Error::custom(format_args!(
                        "the field {:?} is larger than {MAX_OTHER_FIELD_BYTES} bytes",
                        super::validation::echo(&key)
                    )));
                }
                super::strict_json::parse(raw.get().as_bytes()).map_err(de::Error::custom)?;
            }
        }
        Ok(Body::Object(items))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Body<T>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Body::NotAnObject)
    }

    scalars_are!(Body::NotAnObject);
}

/// Reads `items`, one item at a time.
struct ItemsSeed<'a, P, C> {
    rules: ItemRules,
    parse: &'a mut P,
    checkpoint: &'a mut C,
}

impl<'de, T, P, C> DeserializeSeed<'de> for ItemsSeed<'_, P, C>
where
    P: FnMut(serde_json::Value) -> Result<T, ValidationErrors>,
    C: FnMut(),
{
    type Value = Items<T>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Items<T>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, T, P, C> Visitor<'de> for ItemsSeed<'_, P, C>
where
    P: FnMut(serde_json::Value) -> Result<T, ValidationErrors>,
    C: FnMut(),
{
    type Value = Items<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an array of {}", self.rules.what)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Items<T>, A::Error> {
        let mut items = ParsedItems {
            count: 0,
            parsed: Vec::new(),
            errors: ErrorCollector::default(),
        };
        loop {
            (self.checkpoint)();
            if items.count >= self.rules.max_items {
                // Too many: the rest are counted for the answer, not read.
                if seq.next_element::<IgnoredAny>()?.is_none() {
                    break;
                }
                items.count += 1;
                continue;
            }
            let Some(raw) = seq.next_element::<&RawValue>()? else {
                break;
            };
            let i = items.count;
            items.count += 1;
            let parsed = if raw.get().len() > self.rules.max_item_bytes {
                Err(ValidationErrors::single(FieldError::new(
                    ErrorCode::InvalidRequest,
                    "",
                    format!(
                        "the item is {} bytes of JSON; one item is at most {}",
                        raw.get().len(),
                        self.rules.max_item_bytes
                    ),
                )))
            } else {
                let value =
                    super::strict_json::parse(raw.get().as_bytes()).map_err(de::Error::custom)?;
                (self.parse)(value)
            };
            match parsed {
                Ok(item) if items.errors.is_empty() => items.parsed.push(item),
                // Once one item failed nothing will be kept: the valid ones are dropped.
                Ok(_) => {}
                Err(ValidationErrors(item_errors)) => {
                    items.parsed = Vec::new();
                    for mut e in item_errors {
                        e.pointer = format!("/items/{i}{}", e.pointer);
                        items.errors.push(e);
                    }
                }
            }
        }
        Ok(Items::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Items<T>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Items::NotAnArray)
    }
    scalars_are!(Items::NotAnArray);
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: ItemRules = ItemRules {
        max_items: 3,
        max_item_bytes: 100,
        what: "things",
    };

    fn numbers(body: &str) -> Result<Vec<i64>, ValidationErrors> {
        parse_items(
            body.as_bytes(),
            RULES,
            |v| {
                v["n"].as_i64().ok_or_else(|| {
                    ValidationErrors::single(FieldError::new(
                        ErrorCode::InvalidRequest,
                        "/n",
                        "n must be a number",
                    ))
                })
            },
            || {},
        )
    }

    #[test]
    fn items_are_parsed_in_order_and_errors_point_at_their_item() {
        assert_eq!(
            numbers(r#"{"items": [{"n": 1}, {"n": 2}]}"#).unwrap(),
            [1, 2]
        );
        let e = numbers(r#"{"items": [{"n": 1}, {"x": 2}, {"n": "3"}]}"#).unwrap_err();
        let pointers: Vec<&str> = e.0.iter().map(|f| f.pointer.as_str()).collect();
        assert_eq!(pointers, ["/items/1/n", "/items/2/n"]);
    }

    #[test]
    fn padding_of_any_size_is_refused_without_being_built() {
        let pad = vec!["0"; 1_000_000].join(",");
        let e = numbers(&format!(r#"{{"items": [{{"n": 1, "pad": [{pad}]}}]}}"#)).unwrap_err();
        assert_eq!(e.0[0].pointer, "/items/0");
        assert!(e.0[0].message.contains("at most 100"), "{e}");
        let e = numbers(&format!(r#"{{"pad": [{pad}], "items": [{{"n": 1}}]}}"#)).unwrap_err();
        assert!(e.0[0].message.contains("\"pad\" is larger"), "{e}");
        // Small unknown fields are taken, but must not repeat keys.
        assert!(numbers(r#"{"x": {"a": 1}, "items": [{"n": 1}]}"#).is_ok());
        assert!(numbers(r#"{"x": {"a": 1, "a": 2}, "items": [{"n": 1}]}"#).is_err());
    }

    #[test]
    fn the_item_count_is_bounded_and_the_shape_checked() {
        for body in [
            r#"{"items": []}"#,
            r#"{"items": {}}"#,
            "{}",
            "[1]",
            r#"{"items": [1,2,3,4]}"#,
        ] {
            assert!(numbers(body).is_err(), "{body}");
        }
        let e = numbers(r#"{"items": [{"n":1},{"n":1},{"n":1},{},{},{}]}"#).unwrap_err();
        assert!(e.0[0].message.contains("not 6"), "{e}");
    }
}
