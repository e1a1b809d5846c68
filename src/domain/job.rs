//! The create pipeline's messages as plain data: what the ingress asks a worker to do, and what
//! the worker reports back. The adapters encode them (RabbitMQ messages, the Idempotency-Key
//! record in Postgres); none of them ever carries key material.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{CreateCsr, CsrId, Owner};

/// "Make this CSR": made by the ingress, handled by a worker.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CreateJob {
    pub id: CsrId,
    pub owner: Owner,
    pub request: CreateCsr,
    /// Stamped once at the ingress, so a redelivered job produces the same row.
    pub created_at: DateTime<Utc>,
    /// The ingress instance waiting for the completion.
    pub reply_to: String,
}

impl CreateJob {
    /// A new job with a fresh CSR id, stamped now.
    pub fn new(owner: Owner, request: CreateCsr, reply_to: String) -> Self {
        Self {
            id: CsrId::new(),
            owner,
            request,
            created_at: now_micros(),
            reply_to,
        }
    }
}

/// Postgres keeps microseconds; stamping at that precision makes the 201 and every later read
/// show the same `created_at`.
fn now_micros() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now)
}

/// How a job ended on the worker.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum JobOutcome {
    /// The row exists in Postgres.
    Created,
    /// The job cannot succeed; the reason is safe to log, never key material.
    Failed { reason: String },
}

/// "Job done": sent by the worker to the waiting ingress instance. A wake-up only: the ingress
/// reads the result from Postgres, the source of truth.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Completion {
    pub id: CsrId,
    #[serde(flatten)]
    pub outcome: JobOutcome,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completion_wire_shape_is_flat() {
        let id = CsrId::new();
        let failed = Completion {
            id,
            outcome: JobOutcome::Failed { reason: "x".into() },
        };
        let v = serde_json::to_value(&failed).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"id": id.to_string(), "status": "failed", "reason": "x"})
        );
        assert_eq!(serde_json::from_value::<Completion>(v).unwrap(), failed);
    }

    #[test]
    fn created_at_has_microsecond_precision() {
        let t = now_micros();
        assert_eq!(t.timestamp_subsec_nanos() % 1000, 0);
    }
}
