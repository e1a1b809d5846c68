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
