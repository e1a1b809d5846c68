//! The create pipeline: from an admitted, validated request to a CSR, a pending id, or a final
//! failure ([`super::CreateService`] admits and audits around it).
//!
//! 1. Decide. Without an Idempotency-Key the job is new. With one, the key is claimed in
//!    Postgres; a key claimed earlier with a different request is refused, and one claimed
//!    with the same request leads to an [`IdempotencyDecision`].
//! 2. Act on it: publish the job (registering the wait first, so an early completion is never
//!    missed), wait for the earlier job, or answer at once with the earlier result.
//! 3. Wait: the completion event carries the CSR (or the failure), which is the answer. Without
//!    one (lost or late), every [`DB_POLL_INTERVAL`] Postgres, the source of truth, is read
//!    until the CSR exists or the job failed; at the end of the wait budget the create is still
//!    pending and the caller gets its id.
//!

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::db::{DbError, Pool, csrs, jobs};
use crate::domain::idempotency::request_fingerprint;
use crate::domain::{
    CreateChunk, CreateCsr, CreateJob, CreateOutcome, CustomCsr, IdempotencyDecision,
    IdempotencyKey, JobOutcome, Owner, PendingCreate, Requester, Settled,
};
use crate::queue::{JobQueue, PublishError, Waiter, Waiters};

use super::CreateError;

/// While waiting for the completion, Postgres is read this often, so a lost completion delays
/// an answer by at most this much.
pub const DB_POLL_INTERVAL: Duration = Duration::from_secs(2);

pub struct CreatePipeline {
    pool: Pool,
    queue: Arc<dyn JobQueue>,
    waiters: Waiters,
    /// This ingress instance: completions for the jobs it publishes are routed to it.
    instance: String,
    wait_budget: Duration,
}

impl CreatePipeline {
    /// `waiters` must be the registry the queue's completions wake.
    pub fn new(
        pool: Pool,
        queue: Arc<dyn JobQueue>,
        waiters: Waiters,
        instance: String,
        wait_budget: Duration,
    ) -> Self {
        Self {
            pool,
            queue,
            waiters,
            instance,
            wait_budget,
        }
    }

    /// How long a create waits for its CSR before answering with its id.
    pub fn wait_budget(&self) -> Duration {
        self.wait_budget
    }

    /// `requested_by` rides with the job: the worker writes the `csr.create` event with the row.
    pub async fn create(
        &self,
        owner: Owner,
        request: CreateCsr,
        key: Option<&IdempotencyKey>,
        requested_by: Option<Requester>,
    ) -> Result<CreateOutcome, CreateError> {
        let job = CreateJob {
            requested_by,
            ..CreateJob::new(owner, request, self.instance.clone())
        };
        let Some(key) = key else {
            let waiter = self.publish(&job, None).await?;
            return self.wait(&job, waiter, false).await;
        };
        // The cold paths' futures (a key's claim, a poll of Postgres) are boxed: inline, their
        // database queries and the second job they hold would make every open create's future
        // kilobytes larger, and 10,000 creates may be waiting at once.
        Box::pin(self.create_with_key(job, key)).await
    }

    /// A create under an Idempotency-Key: claim the key, or resume, republish or replay the
    /// earlier create that claimed it.
    async fn create_with_key(
        &self,
        job: CreateJob,
        key: &IdempotencyKey,
    ) -> Result<CreateOutcome, CreateError> {
        let (job, decision) = Box::pin(self.decide(job, key)).await?;
        let waiter = match decision {
            IdempotencyDecision::Start => self.publish(&job, Some((key, Claim::New))).await?,
            IdempotencyDecision::Republish => {
                self.publish(&job, Some((key, Claim::Earlier))).await?
            }
            IdempotencyDecision::ResumeWaiting => self.waiters.register(job.id),
            IdempotencyDecision::Replay(settled) => return Ok(outcome(&job, settled, true)),
        };
        self.wait(&job, waiter, decision != IdempotencyDecision::Start)
            .await
    }

    /// Claims the key for `job`, or finds the earlier job that claimed it and decides what to
    /// do about it. Returns the job to go on with: `job` itself, or the earlier one (same CSR
    /// id), now answering to this instance.
    pub async fn decide(
        &self,
        job: CreateJob,
        key: &IdempotencyKey,
    ) -> Result<(CreateJob, IdempotencyDecision), CreateError> {
        let fingerprint = request_fingerprint(&job.request);
        let claimed = {
            let client = self.pool.get().await?;
            jobs::claim_idempotency_key(&**client, key, &fingerprint, &job).await?
        };
        let Some(earlier) = claimed else {
            return Ok((job, IdempotencyDecision::Start));
        };
        if !earlier.is_same_request(&fingerprint) {
            return Err(CreateError::IdempotencyKeyReused);
        }
        let settled = if earlier.csr_deleted {
            Some(Settled::Deleted)
        } else {
            self.settled(&earlier.job).await?
        };
        let decision = IdempotencyDecision::for_earlier(&earlier, settled);
        let job = CreateJob {
            reply_to: self.instance.clone(),
            ..earlier.job
        };
        Ok((job, decision))
    }

    /// Registers the wait, then publishes. With a key: a confirmed job is recorded as such; a
    /// job that certainly did not reach the queue gives back a key this request claimed, so a
    /// retry starts afresh. (If it may have arrived, the claim stays and a retry republishes
    /// this very job.)
    async fn publish(
        &self,
        job: &CreateJob,
        key: Option<(&IdempotencyKey, Claim)>,
    ) -> Result<Waiter, CreateError> {
        let waiter = self.waiters.register(job.id);
        let published = self.queue.publish(&CreateChunk::one(job.clone())).await;
        if let Some((key, claim)) = key {
            Box::pin(self.record_publication(job, key, claim, &published)).await?;
        }
        published?;
        tracing::info!(csr_id = %job.id, key_type = job.request.key_type.as_str(), "create accepted");
        Ok(waiter)
    }

    /// Records in the key's claim whether its job reached the queue.
    async fn record_publication(
        &self,
        job: &CreateJob,
        key: &IdempotencyKey,
        claim: Claim,
        published: &Result<(), PublishError>,
    ) -> Result<(), CreateError> {
        let client = self.pool.get().await?;
        match published {
            Ok(()) => jobs::mark_published(&**client, &job.owner, key).await?,
            Err(e) if claim == Claim::New && e.certainly_not_delivered() => {
                jobs::release_claim(&**client, &job.owner, key, job.id).await?
            }
            Err(_) => {}
        }
        Ok(())
    }

    /// Waits for the job's final state within the wait budget.
    async fn wait(
        &self,
        job: &CreateJob,
        mut waiter: Waiter,
        replayed: bool,
    ) -> Result<CreateOutcome, CreateError> {
        let deadline = Instant::now() + self.wait_budget;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                break;
            }
            // The completion is the answer when it carries one; otherwise (an older worker, a
            // poll interval gone by) Postgres has it.
            match waiter.next(remaining.min(DB_POLL_INTERVAL)).await {
                Some(JobOutcome::Created {
                    csr_pem: Some(csr_pem),
                }) => {
                    let csr = CustomCsr {
                        id: job.id,
                        owner: job.owner.clone(),
                        request: job.request.clone(),
                        csr_pem,
                        created_at: job.created_at,
                    };
                    return Ok(outcome(job, Settled::Created(csr), replayed));
                }
                Some(JobOutcome::Failed { reason }) => {
                    return Ok(outcome(job, Settled::Failed(reason), replayed));
                }
                Some(JobOutcome::Created { csr_pem: None }) | None => {}
            }
            match Box::pin(self.settled(job)).await {
                Ok(Some(settled)) => return Ok(outcome(job, settled, replayed)),
                Ok(None) => {}
                // The job is accepted already: a database outage now means "not yet", answered
                // with its id at the end of the budget, never an error that invites a second
                // create.
                Err(e) if e.is_transient() => tracing::debug!(error = %e, "still waiting"),
                Err(e) => return Err(e.into()),
            }
        }
        static PENDING: crate::log_throttle::LogThrottle = crate::log_throttle::LogThrottle::new();
        if let Some(left_out) = PENDING.allow() {
            tracing::warn!(csr_id = %job.id, left_out, "create still pending when the wait budget ran out");
        }
        Ok(CreateOutcome::Pending(PendingCreate {
            id: job.id,
            owner: job.owner.clone(),
            key_type: job.request.key_type,
            key_delivery: job.request.key_delivery,
            created_at: job.created_at,
        }))
    }

    /// The job's final state, if it has one yet: its CSR, or the failure recorded when it was
    /// dead-lettered.
    async fn settled(&self, job: &CreateJob) -> Result<Option<Settled>, DbError> {
        let client = self.pool.get().await?;
        if let Some(csr) = csrs::get(&**client, &job.owner, job.id).await? {
            return Ok(Some(Settled::Created(csr)));
        }
        Ok(jobs::failure(&**client, &job.owner, job.id)
            .await?
            .map(Settled::Failed))
    }
}

/// Whether this request claimed the key, or an earlier one did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Claim {
    New,
    Earlier,
}

fn outcome(job: &CreateJob, settled: Settled, replayed: bool) -> CreateOutcome {
    match settled {
        Settled::Created(csr) => CreateOutcome::Created { csr, replayed },
        Settled::Failed(reason) => CreateOutcome::Failed { id: job.id, reason },
        Settled::Deleted => CreateOutcome::Deleted { id: job.id },
    }
}
