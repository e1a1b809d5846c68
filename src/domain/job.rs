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
    /// The ingress instance waiting for the completion; empty when nobody waits (a batch item,
    /// whose client polls the batch instead).
    pub reply_to: String,
    /// The batch this job is an item of, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<BatchSlot>,
    /// Who asked for this single create, from where: the worker writes the create's audit
    /// event with the row, in the same transaction, so no CSR exists without its event and
    /// none is audited twice. `None` for a batch item (its batch's submission is audited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<Requester>,
}

/// The caller of a single create, as its audit event names it. Plain data: the `audit` module
/// makes it from the request's scope and turns it back into an event.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Requester {
    /// `token` or `user`.
    pub actor_kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_addr: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}

/// Where a batch item sits in its batch.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct BatchSlot {
    pub batch_id: uuid::Uuid,
    pub index: u32,
}

/// The unit on the jobs queue: one or many create jobs, for one or many tenants, handled
/// together by one worker (keys in parallel, rows in one statement and one commit). Per-create
/// costs (messages, commits, round trips) become per-chunk costs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CreateChunk {
    pub jobs: Vec<CreateJob>,
}

impl CreateChunk {
    pub fn new(jobs: Vec<CreateJob>) -> Self {
        Self { jobs }
    }

    pub fn one(job: CreateJob) -> Self {
        Self { jobs: vec![job] }
    }

    /// A short label for logs and message ids: the first job's id and the size.
    pub fn label(&self) -> String {
        match self.jobs.first() {
            Some(first) if self.jobs.len() == 1 => first.id.to_string(),
            Some(first) => format!("{}+{}", first.id, self.jobs.len() - 1),
            None => "empty".into(),
        }
    }
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
            batch: None,
            requested_by: None,
        }
    }

    /// Now, at the precision Postgres keeps.
    pub fn now() -> DateTime<Utc> {
        now_micros()
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
    /// The row exists in Postgres. The CSR (public data) rides along when the worker has it,
    /// so the waiting ingress answers without reading the row back.
    Created {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        csr_pem: Option<String>,
    },
    /// The job cannot succeed; the reason is safe to log, never key material.
    Failed { reason: String },
}

/// "Job done": sent by the worker to the waiting ingress instance, one event per chunk and
/// instance carrying all of that instance's completions. The ingress answers from it; Postgres
/// (the source of truth) is read when the event is lost or late.
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
        let old_created = serde_json::json!({"id": id.to_string(), "status": "created"});
        assert_eq!(
            serde_json::from_value::<Completion>(old_created)
                .unwrap()
                .outcome,
            JobOutcome::Created { csr_pem: None }
        );
    }

    #[test]
    fn created_at_has_microsecond_precision() {
        let t = now_micros();
        assert_eq!(t.timestamp_subsec_nanos() % 1000, 0);
    }
}
