//! How a create request ends, as the create use case reports it to whoever called it (the HTTP
//! handler today, the batch API next).

use chrono::{DateTime, Utc};

use super::{CsrId, CustomCsr, KeyDelivery, KeyType, Owner};

// Made and moved once per request: boxing the large variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateOutcome {
    /// The CSR exists. `replayed`: an earlier request with the same Idempotency-Key made it.
    Created { csr: CustomCsr, replayed: bool },
    /// Accepted and durably queued, but not finished within the wait budget.
    Pending(PendingCreate),
    /// The job failed for good (it was dead-lettered). Nothing was stored.
    Failed { id: CsrId, reason: String },
    /// The CSR an earlier request with this Idempotency-Key made has been deleted since.
    Deleted { id: CsrId },
}

/// What a client needs to find a pending CSR later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingCreate {
    pub id: CsrId,
    pub owner: Owner,
    pub key_type: KeyType,
    pub key_delivery: KeyDelivery,
    pub created_at: DateTime<Utc>,
}
