//! Batches: many creates submitted at once (beyond Cloudflare's API). Every item is validated
//! before anything is created; the items then travel as chunks through the same pipeline as
//! single creates and become ordinary custom CSRs.

use std::collections::HashSet;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::validation::ErrorCollector;
use super::{
    CreateCsr, CsrId, CustomCsr, ErrorCode, FieldError, NamePolicy, Owner, OwnerKind,
    ValidationErrors,
};

/// Items per batch, at most.
pub const MAX_BATCH_ITEMS: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct BatchId(pub uuid::Uuid);

impl BatchId {
    /// A fresh, time-ordered id (its items' ids share its time prefix: `CsrId::for_batch_item`).
    pub fn new() -> Self {
        Self(super::ids::time_ordered_uuid())
    }

    pub fn parse(s: &str) -> Option<Self> {
        uuid::Uuid::try_parse(s).ok().map(Self)
    }
}

impl Default for BatchId {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Display for BatchId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Where a batch stands. `done`: every item created. `failed`: every item settled, at least
/// one of them failed (the results say which).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchStatus {
    /// No item settled yet.
    Pending,
    /// Some items settled.
    Running,
    Done,
    Failed,
}

impl BatchStatus {
    pub fn of(total: i64, done: i64, failed: i64) -> Self {
        if done + failed >= total {
            if failed > 0 { Self::Failed } else { Self::Done }
        } else if done + failed > 0 {
            Self::Running
        } else {
            Self::Pending
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub id: BatchId,
    pub owner: Owner,
    pub total: i64,
    pub done: i64,
    pub failed: i64,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl Batch {
    pub fn status(&self) -> BatchStatus {
        BatchStatus::of(self.total, self.done, self.failed)
    }
}

/// One item's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemState {
    Created(Box<CustomCsr>),
    Failed(String),
    /// Not settled yet.
    Pending,
    /// Created, then deleted.
    Deleted,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchEntry {
    pub index: u32,
    pub csr_id: CsrId,
    pub state: ItemState,
}

/// A run of a batch's items that travels as one message: items `first..first + len`, whose
/// cost units (see [`super::KeyType::cost`]) add up to `cost`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkSpan {
    pub first: usize,
    pub len: usize,
    pub cost: u32,
}

/// Cuts a batch's items, in order, into chunks of at most `max_cost` cost units each (an item
/// costing more than that goes alone), so a chunk is a bounded amount of work whatever its
/// key types: 512 P-256 items, or 2 RSA-2048 ones, at the default.
pub fn cut_chunks(requests: &[CreateCsr], max_cost: u32) -> Vec<ChunkSpan> {
    cut_by_cost(requests.iter().map(|r| r.key_type.cost()), max_cost)
}

/// Cuts a run of items with these `costs`, in order, into spans of at most `max_cost` each (an
/// item costing more than that goes alone). The one chunking rule: batches are cut into
/// messages with it, and a worker cuts its keys into blocking tasks with it.
pub fn cut_by_cost(costs: impl IntoIterator<Item = u32>, max_cost: u32) -> Vec<ChunkSpan> {
    let mut chunks = Vec::new();
    let mut current = ChunkSpan {
        first: 0,
        len: 0,
        cost: 0,
    };
    for (i, cost) in costs.into_iter().enumerate() {
        if current.len > 0 && current.cost.saturating_add(cost) > max_cost {
            chunks.push(current);
            current = ChunkSpan {
                first: i,
                len: 0,
                cost: 0,
            };
        }
        current.len += 1;
        current.cost = current.cost.saturating_add(cost);
    }
    if current.len > 0 {
        chunks.push(current);
    }
    chunks
}

/// Validates a submission `{"items": [...]}`: all items or none. Every error's pointer says
/// which item (`/items/17/sans/0`); the answer lists the first
/// [`MAX_REPORTED_ERRORS`](super::validation::MAX_REPORTED_ERRORS) and counts the rest.
///
/// The body is read as a stream of items: each item becomes a JSON value, is validated and
/// dropped before the next one is read, so memory is the body, the validated requests and one
/// item, never a `serde_json::Value` tree of the whole body (which cost 20 times the body).
/// Keys repeated at any depth are refused, as [`super::strict_json`] does for single creates.
pub fn parse_items(
    body: &[u8],
    owner: OwnerKind,
    policy: NamePolicy,
) -> Result<Vec<CreateCsr>, ValidationErrors> {
    let invalid = |pointer: &str, message: String| {
        ValidationErrors::single(FieldError::new(ErrorCode::InvalidRequest, pointer, message))
    };
    let mut de = serde_json::Deserializer::from_slice(body);
    let submission = (Submission { owner, policy })
        .deserialize(&mut de)
        .and_then(|s| de.end().map(|()| s))
        .map_err(|e| invalid("", format!("request body is not valid JSON: {e}")))?;
    let items = match submission {
        Body::NotAnObject => return Err(invalid("", "request body must be a JSON object".into())),
        Body::Object(None) | Body::Object(Some(Items::NotAnArray)) => {
            return Err(invalid(
                "/items",
                "items must be an array of create requests".into(),
            ));
        }
        Body::Object(Some(Items::Array(items))) => items,
    };
    if items.count == 0 || items.count > MAX_BATCH_ITEMS {
        return Err(invalid(
            "/items",
            format!(
                "a batch holds 1 to {MAX_BATCH_ITEMS} items, not {}",
                items.count
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
enum Body {
    NotAnObject,
    Object(Option<Items>),
}

enum Items {
    NotAnArray,
    Array(ParsedItems),
}

struct ParsedItems {
    /// Items seen (past [`MAX_BATCH_ITEMS`], skipped unread).
    count: usize,
    parsed: Vec<CreateCsr>,
    errors: ErrorCollector,
}

/// Reads the top-level object, validating `items` as it streams past.
struct Submission {
    owner: OwnerKind,
    policy: NamePolicy,
}

impl<'de> DeserializeSeed<'de> for Submission {
    type Value = Body;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Body, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Submission {
    type Value = Body;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object with an items array")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Body, A::Error> {
        let mut seen = HashSet::new();
        let mut items = None;
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                return Err(de::Error::custom(format_args!(
                    "the key {:?} appears more than once",
                    super::validation::echo(&key)
                )));
            }
            if key == "items" {
                items = Some(map.next_value_seed(ItemsSeed {
                    owner: self.owner,
                    policy: self.policy,
                })?);
            } else {
                // Unknown keys are ignored, but must still be well formed and unambiguous.
                map.next_value::<super::strict_json::Strict>()?;
            }
        }
        Ok(Body::Object(items))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Body, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Body::NotAnObject)
    }

    scalars_are!(Body::NotAnObject);
}

/// Reads `items`, one create request at a time.
struct ItemsSeed {
    owner: OwnerKind,
    policy: NamePolicy,
}

impl<'de> DeserializeSeed<'de> for ItemsSeed {
    type Value = Items;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Items, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ItemsSeed {
    type Value = Items;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of create requests")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Items, A::Error> {
        let mut items = ParsedItems {
            count: 0,
            parsed: Vec::new(),
            errors: ErrorCollector::default(),
        };
        loop {
            if items.count >= MAX_BATCH_ITEMS {
                // Too many: the rest are counted for the answer, not read.
                if seq.next_element::<IgnoredAny>()?.is_none() {
                    break;
                }
                items.count += 1;
                continue;
            }
            let Some(super::strict_json::Strict(item)) = seq.next_element()? else {
                break;
            };
            let i = items.count;
            items.count += 1;
            match CreateCsr::from_value(item, self.owner, self.policy) {
                Ok(request) if items.errors.is_empty() => items.parsed.push(request),
                // Once one item failed nothing will be created: the valid ones are not kept.
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

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Items, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Items::NotAnArray)
    }
    scalars_are!(Items::NotAnArray);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn item(cn: &str) -> Value {
        json!({"common_name": cn, "country": "US", "state": "CA", "locality": "SF",
               "organization": "Acme", "sans": [cn], "key_type": "p256v1"})
    }

    #[test]
    fn every_invalid_item_is_reported_with_its_index() {
        let mut bad = item("b.io");
        bad["sans"] = json!(["not a name"]);
        let mut worse = item("c.io");
        worse["country"] = json!("XX");
        let body = json!({"items": [item("a.io"), bad, worse]});
        let errors = parse_items(
            body.to_string().as_bytes(),
            OwnerKind::Account,
            NamePolicy::Permissive,
        )
        .unwrap_err();
        let pointers: Vec<&str> = errors.0.iter().map(|e| e.pointer.as_str()).collect();
        assert!(pointers.contains(&"/items/1/sans/0"), "{pointers:?}");
        assert!(pointers.contains(&"/items/2/country"), "{pointers:?}");
        assert!(!pointers.iter().any(|p| p.starts_with("/items/0")));
    }

    #[test]
    fn chunks_are_cut_by_cost_and_keep_item_order() {
        let parse = |key_type: &str| {
            let mut v = item("a.io");
            v["key_type"] = json!(key_type);
            CreateCsr::from_value(v, OwnerKind::Account, NamePolicy::Permissive).unwrap()
        };
        let p256: Vec<CreateCsr> = (0..10).map(|_| parse("p256v1")).collect();
        let spans = cut_chunks(&p256, 4);
        assert_eq!(
            spans.iter().map(|c| (c.first, c.len)).collect::<Vec<_>>(),
            [(0, 4), (4, 4), (8, 2)]
        );
        let rsa: Vec<CreateCsr> = (0..3).map(|_| parse("rsa2048")).collect();
        assert_eq!(cut_chunks(&rsa, 512).len(), 2);
        let alone = cut_chunks(&rsa, 1);
        assert_eq!(alone.len(), 3, "an item costlier than a chunk goes alone");
        assert_eq!(alone[0].cost, 256);
        assert!(cut_chunks(&[], 512).is_empty());
    }

    #[test]
    fn the_item_count_is_bounded() {
        for body in [
            json!({"items": []}),
            json!({"items": {}}),
            json!({}),
            json!([1]),
        ] {
            let e = parse_items(
                body.to_string().as_bytes(),
                OwnerKind::Account,
                NamePolicy::Permissive,
            )
            .unwrap_err();
            assert_eq!(e.0[0].code, ErrorCode::InvalidRequest);
        }
        let ok = json!({"items": [item("a.io"), item("b.io")]});
        let parsed = parse_items(
            ok.to_string().as_bytes(),
            OwnerKind::Account,
            NamePolicy::Permissive,
        )
        .unwrap();
        assert_eq!(parsed.len(), 2);
    }

    #[test]
    fn errors_are_capped_and_counted_and_repeated_keys_refused() {
        let mut bad = item("a.io");
        bad["sans"] = json!(vec!["not a name"; 150]);
        let body = json!({"items": vec![bad; 20]});
        let errors = parse_items(
            body.to_string().as_bytes(),
            OwnerKind::Account,
            NamePolicy::Permissive,
        )
        .unwrap_err();
        assert_eq!(errors.0.len(), 101);
        assert!(
            errors.0[100].message.starts_with("2900 more errors"),
            "{:?}",
            errors.0[100]
        );
        for body in [
            r#"{"items": [], "items": []}"#,
            r#"{"items": [{"sans": [], "sans": []}]}"#,
            r#"{"x": {"a": 1, "a": 2}, "items": []}"#,
        ] {
            let e = parse_items(body.as_bytes(), OwnerKind::Account, NamePolicy::Permissive)
                .unwrap_err();
            assert!(e.0[0].message.contains("more than once"), "{body}: {e}");
        }
        let e = parse_items(
            br#"{"items": [1, 2]} x"#,
            OwnerKind::Account,
            NamePolicy::Permissive,
        )
        .unwrap_err();
        assert!(e.0[0].message.contains("not valid JSON"), "{e}");
    }

    #[test]
    fn too_many_items_are_counted_without_being_read() {
        let body = format!(
            "{{\"items\": [{}]}}",
            vec!["{}"; MAX_BATCH_ITEMS + 5].join(",")
        );
        let e =
            parse_items(body.as_bytes(), OwnerKind::Account, NamePolicy::Permissive).unwrap_err();
        assert_eq!(e.0.len(), 1);
        assert!(e.0[0].message.contains("not 10005"), "{e}");
    }

    #[test]
    fn status_follows_the_counts() {
        assert_eq!(BatchStatus::of(3, 0, 0), BatchStatus::Pending);
        assert_eq!(BatchStatus::of(3, 1, 0), BatchStatus::Running);
        assert_eq!(BatchStatus::of(3, 3, 0), BatchStatus::Done);
        assert_eq!(BatchStatus::of(3, 2, 1), BatchStatus::Failed);
    }
}
