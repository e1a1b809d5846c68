//! Message formats. Jobs and events carry ids and public request data only: never key bytes.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::{CreateCsr, CsrId, Owner};

pub const JOB_VERSION: u8 = 1;

/// "Make this CSR": published by the ingress, consumed by a worker.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CreateJob {
    pub version: u8,
    pub id: CsrId,
    pub owner: Owner,
    pub request: CreateCsr,
    /// Stamped once at the ingress, so a redelivered job produces the same row.
    pub created_at: DateTime<Utc>,
    /// The ingress instance waiting for the completion event.
    pub reply_to: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    /// The row exists in Postgres.
    Created,
    /// The job cannot succeed; the reason is safe to log, never key material.
    Failed { reason: String },
}

/// "Job done": published by the worker to the waiting ingress instance. A wake-up only:
/// the ingress reads the result from Postgres.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Completion {
    pub id: CsrId,
    #[serde(flatten)]
    pub outcome: Outcome,
}
