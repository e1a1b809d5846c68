//! Batches: many creates submitted at once (beyond Cloudflare's API). Every item is validated
//! before anything is created; the items then travel as chunks through the same pipeline as
//! single creates and become ordinary custom CSRs.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use super::{
    CreateCsr, CsrId, CustomCsr, ErrorCode, FieldError, NamePolicy, Owner, OwnerKind,
    ValidationErrors,
};

/// Items per batch, at most.
pub const MAX_BATCH_ITEMS: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct BatchId(pub uuid::Uuid);

impl BatchId {
    pub fn new() -> Self {
        Self(uuid::Uuid::new_v4())
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
    let mut chunks = Vec::new();
    let mut current = ChunkSpan {
        first: 0,
        len: 0,
        cost: 0,
    };
    for (i, request) in requests.iter().enumerate() {
        let cost = request.key_type.cost();
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
/// which item (`/items/17/sans/0`).
pub fn parse_items(
    body: &[u8],
    owner: OwnerKind,
    policy: NamePolicy,
) -> Result<Vec<CreateCsr>, ValidationErrors> {
    let invalid = |pointer: &str, message: String| {
        ValidationErrors::single(FieldError::new(ErrorCode::InvalidRequest, pointer, message))
    };
    let value: Value = super::strict_json::parse(body)
        .map_err(|e| invalid("", format!("request body is not valid JSON: {e}")))?;
    let Value::Object(mut obj) = value else {
        return Err(invalid("", "request body must be a JSON object".into()));
    };
    let Some(Value::Array(items)) = obj.remove("items") else {
        return Err(invalid(
            "/items",
            "items must be an array of create requests".into(),
        ));
    };
    if items.is_empty() || items.len() > MAX_BATCH_ITEMS {
        return Err(invalid(
            "/items",
            format!(
                "a batch holds 1 to {MAX_BATCH_ITEMS} items, not {}",
                items.len()
            ),
        ));
    }
    let mut parsed = Vec::with_capacity(items.len());
    let mut errors = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        match CreateCsr::from_value(item, owner, policy) {
            Ok(request) => parsed.push(request),
            Err(ValidationErrors(item_errors)) => {
                errors.extend(item_errors.into_iter().map(|mut e| {
                    e.pointer = format!("/items/{i}{}", e.pointer);
                    e
                }))
            }
        }
    }
    if errors.is_empty() {
        Ok(parsed)
    } else {
        Err(ValidationErrors(errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
    fn status_follows_the_counts() {
        assert_eq!(BatchStatus::of(3, 0, 0), BatchStatus::Pending);
        assert_eq!(BatchStatus::of(3, 1, 0), BatchStatus::Running);
        assert_eq!(BatchStatus::of(3, 3, 0), BatchStatus::Done);
        assert_eq!(BatchStatus::of(3, 2, 1), BatchStatus::Failed);
    }
}
