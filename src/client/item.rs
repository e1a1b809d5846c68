//! One input line on its way to the API, and what both ways of sending lines (batches,
//! single creates) derive from lines the same way: their Idempotency-Keys and their errors.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// One valid input line on its way to the API.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub line: usize,
    /// A JSON object, compact.
    pub body: String,
}

/// `errors` when it is a non-empty list, else one error saying `why`.
pub fn errors_or(errors: &Value, why: &str) -> Value {
    match errors {
        Value::Array(list) if !list.is_empty() => errors.clone(),
        _ => json!([{"code": 1500, "message": why}]),
    }
}

/// An Idempotency-Key that only this owner and these lines (numbers and bodies) give.
pub fn derive_key(kind: &str, owner_path: &str, items: &[Item]) -> String {
    let mut h = Sha256::new();
    h.update(kind.as_bytes());
    h.update([0]);
    h.update(owner_path.as_bytes());
    for item in items {
        h.update(item.line.to_le_bytes());
        h.update(item.body.as_bytes());
        h.update([0]);
    }
    format!("csrd-{kind}-{}", hex::encode(&h.finalize()[..20]))
}
