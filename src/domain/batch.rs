//! Batches: many creates submitted at once (beyond Cloudflare's API). Every item is validated
//! before anything is created; the items then travel as chunks through the same pipeline as
//! single creates and become ordinary custom CSRs.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::item_stream::ItemRules;
use super::{CreateCsr, CsrId, CustomCsr, NamePolicy, Owner, OwnerKind, ValidationErrors};

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

/// Validates a submission `{"items": [...]}`: all items or none, read item by item (see
/// [`super::item_stream`]). Every error's pointer says which item (`/items/17/sans/0`).
/// `checkpoint` is called between items.
pub fn parse_items(
    body: &[u8],
    owner: OwnerKind,
    policy: NamePolicy,
    checkpoint: impl FnMut(),
) -> Result<Vec<CreateCsr>, ValidationErrors> {
    super::item_stream::parse_items(
        body,
        ItemRules {
            max_items: MAX_BATCH_ITEMS,
            max_item_bytes: MAX_ITEM_BYTES,
            what: "create requests",
        },
        |item| CreateCsr::from_value(item, owner, policy),
        checkpoint,
    )
}

/// Raw JSON bytes of one batch item, at most: the largest valid one (150 SANs of 253
/// characters, every other field at its limit) is about 40 KB.
pub const MAX_ITEM_BYTES: usize = 256 * 1024;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ErrorCode;

    fn parse(body: &[u8]) -> Result<Vec<CreateCsr>, ValidationErrors> {
        parse_items(body, OwnerKind::Account, NamePolicy::Permissive, || {})
    }
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
        let errors = parse(body.to_string().as_bytes()).unwrap_err();
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
            let e = parse(body.to_string().as_bytes()).unwrap_err();
            assert_eq!(e.0[0].code, ErrorCode::InvalidRequest);
        }
        let ok = json!({"items": [item("a.io"), item("b.io")]});
        let parsed = parse(ok.to_string().as_bytes()).unwrap();
        assert_eq!(parsed.len(), 2);
    }

    #[test]
    fn errors_are_capped_and_counted_and_repeated_keys_refused() {
        let mut bad = item("a.io");
        bad["sans"] = json!(vec!["not a name"; 150]);
        let body = json!({"items": vec![bad; 20]});
        let errors = parse(body.to_string().as_bytes()).unwrap_err();
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
            let e = parse(body.as_bytes()).unwrap_err();
            assert!(e.0[0].message.contains("more than once"), "{body}: {e}");
        }
        let e = parse(br#"{"items": [1, 2]} x"#).unwrap_err();
        assert!(e.0[0].message.contains("not valid JSON"), "{e}");
    }

    #[test]
    fn too_many_items_are_counted_without_being_read() {
        let body = format!(
            "{{\"items\": [{}]}}",
            vec!["{}"; MAX_BATCH_ITEMS + 5].join(",")
        );
        let e = parse(body.as_bytes()).unwrap_err();
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
