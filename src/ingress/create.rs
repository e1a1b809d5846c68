//! The create use case: admit a single create into the tenant's share of the machine, run it
//! through the [`CreatePipeline`], give back what it did not use, and audit the outcome.
//! The HTTP handler parses the request, calls [`CreateService::create`] once, and maps the
//! [`CreateOutcome`] to its answer.

use crate::audit::{Actor, AuditEvent, Auditor};
use crate::db::DbError;
use crate::domain::{CreateCsr, CreateOutcome, IdempotencyKey, Owner};
use crate::queue::PublishError;

use super::pipeline::CreatePipeline;
use super::{Limits, Refused, ServiceError};

#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("the Idempotency-Key was used with a different request")]
    IdempotencyKeyReused,
    #[error(transparent)]
    Refused(#[from] Refused),
    #[error("the create job could not be queued")]
    Publish(#[from] PublishError),
    #[error(transparent)]
    Service(#[from] ServiceError),
}

impl From<DbError> for CreateError {
    fn from(e: DbError) -> Self {
        CreateError::Service(e.into())
    }
}

impl From<deadpool_postgres::PoolError> for CreateError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        DbError::from(e).into()
    }
}

pub struct CreateService {
    pipeline: CreatePipeline,
    limits: Limits,
    audit: Auditor,
}

impl CreateService {
    pub fn new(pipeline: CreatePipeline, limits: Limits, audit: Auditor) -> Self {
        Self {
            pipeline,
            limits,
            audit,
        }
    }

    /// Creates a CSR for `owner`: within its in-flight cap, its fair turn in the window
    /// (waiting at most the create wait for it) and its hourly quota.
    pub async fn create(
        &self,
        owner: Owner,
        request: CreateCsr,
        key: Option<&IdempotencyKey>,
    ) -> Result<CreateOutcome, CreateError> {
        let mut admitted = self
            .limits
            .admit_create(&owner, request.key_type, self.pipeline.wait_budget())
            .await?;
        let requested_by = crate::audit::current_requester();
        let outcome = self
            .pipeline
            .create(owner.clone(), request, key, requested_by)
            .await;
        if !made_an_item(&outcome) {
            // Boxed: inline, this cold path's database query was 4 KB of every open create's
            // future (6.4 KB in all; 10,000 creates may be waiting at once).
            Box::pin(admitted.uncount()).await;
        }
        let outcome = outcome?;
        // A CSR this request made is audited by the worker, in the statement that stored it.
        if !is_newly_created(&outcome) {
            self.audit.record(create_event(&owner, &outcome));
        }
        Ok(outcome)
    }
}

/// Whether this request's own job made the CSR (its event was written with the row).
fn is_newly_created(outcome: &CreateOutcome) -> bool {
    matches!(
        outcome,
        CreateOutcome::Created {
            replayed: false,
            ..
        }
    )
}

/// Whether the create counts against an hourly quota: a replay, a deleted CSR or an error
/// made nothing new.
fn made_an_item(outcome: &Result<CreateOutcome, CreateError>) -> bool {
    !matches!(
        outcome,
        Err(_) | Ok(CreateOutcome::Created { replayed: true, .. } | CreateOutcome::Deleted { .. })
    )
}

fn create_event(owner: &Owner, outcome: &CreateOutcome) -> AuditEvent {
    let (result, id, replayed) = match outcome {
        CreateOutcome::Created { csr, replayed } => ("ok", csr.id, *replayed),
        CreateOutcome::Pending(p) => ("pending", p.id, false),
        CreateOutcome::Failed { id, .. } => ("failed", *id, false),
        CreateOutcome::Deleted { id } => ("deleted", *id, true),
    };
    let event = AuditEvent::new("csr.create", result, Actor::Anonymous)
        .owner(owner)
        .target(id);
    if replayed {
        event.detail(serde_json::json!({ "replayed": true }))
    } else {
        event
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{CsrId, OwnerKind, PendingCreate};

    fn owner() -> Owner {
        Owner::parse(OwnerKind::Zone, "023e105f4ecef8ad9ca31a8372d0c353").unwrap()
    }

    #[test]
    fn only_new_items_count_against_the_quota() {
        let id = CsrId::new();
        let pending = Ok(CreateOutcome::Pending(PendingCreate {
            id,
            owner: owner(),
            key_type: crate::domain::KeyType::P256v1,
            key_delivery: crate::domain::KeyDelivery::None,
            created_at: chrono::Utc::now(),
        }));
        assert!(made_an_item(&pending));
        assert!(!made_an_item(&Ok(CreateOutcome::Deleted { id })));
        assert!(!made_an_item(&Err(CreateError::IdempotencyKeyReused)));
        assert!(made_an_item(&Ok(CreateOutcome::Failed {
            id,
            reason: "x".into()
        })));
    }

    #[test]
    fn the_audit_event_says_what_became_of_the_create() {
        let id = CsrId::new();
        let event = create_event(&owner(), &CreateOutcome::Deleted { id });
        assert_eq!((event.action, event.outcome), ("csr.create", "deleted"));
        assert_eq!(event.target, Some(id.to_string()));
        assert_eq!(event.detail, Some(serde_json::json!({ "replayed": true })));
        let failed = create_event(
            &owner(),
            &CreateOutcome::Failed {
                id,
                reason: "x".into(),
            },
        );
        assert_eq!(failed.outcome, "failed");
        assert_eq!(failed.detail, None);
    }
}
