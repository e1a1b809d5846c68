//! The batch use case: many creates submitted at once.
//!
//! A submission is accepted once the batch and its items, cut into chunks, are stored in
//! Postgres (one transaction), with their CSR ids. The chunks then wait there: the bulk
//! dispatchers ([`crate::fairshare::bulk`]) publish them one by one, in fair-share order
//! across tenants, as the workers take them. Nothing more is published from here, so an
//! ingress that dies after the 202 loses nothing.

use std::time::Duration;

use crate::audit::{Actor, AuditEvent, Auditor};
use crate::db::batches::{self, Allowance, NewBatch, Stored};
use crate::db::{DbError, Pool};
use crate::domain::batch::parse_items;
use crate::domain::idempotency::request_fingerprint_of;
use crate::domain::{
    Batch, BatchEntry, BatchId, CreateCsr, CreateJob, IdempotencyKey, NamePolicy, Owner,
    ValidationErrors,
};
use crate::fairshare::{CpuSlots, Kick, Lane, TenantPolicy};

use super::limits::BatchAdmission;
use super::{Limits, ReadSlot, Refused, ServiceError};

/// How long a submission waits for room in the batch memory budget before 429.
const BATCH_MEMORY_WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("the Idempotency-Key was used with a different request")]
    IdempotencyKeyReused,
    #[error("the items are not valid")]
    Invalid(#[from] ValidationErrors),
    #[error(transparent)]
    Refused(#[from] Refused),
    #[error(transparent)]
    Service(#[from] ServiceError),
}

impl From<DbError> for BatchError {
    fn from(e: DbError) -> Self {
        BatchError::Service(e.into())
    }
}

impl From<deadpool_postgres::PoolError> for BatchError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        DbError::from(e).into()
    }
}

#[derive(Clone)]
pub struct BatchService {
    pool: Pool,
    /// Wakes this process's bulk dispatcher when a batch is stored.
    dispatch: Kick,
    chunk_cost: u32,
    limits: Limits,
    audit: Auditor,
    name_policy: NamePolicy,
    cpu: CpuSlots,
}

/// What a batch service is built from, besides the database.
pub struct BatchSettings {
    /// Cost units of one chunk at most (P-256 items count 1, RSA-2048 256).
    pub chunk_cost: usize,
    pub name_policy: NamePolicy,
    /// The process's CPU slots, where bodies are read.
    pub cpu: CpuSlots,
}

impl BatchService {
    pub fn new(
        pool: Pool,
        dispatch: Kick,
        settings: BatchSettings,
        limits: Limits,
        audit: Auditor,
    ) -> Self {
        Self {
            pool,
            dispatch,
            chunk_cost: u32::try_from(settings.chunk_cost.max(1)).unwrap_or(u32::MAX),
            limits,
            audit,
            name_policy: settings.name_policy,
            cpu: settings.cpu,
        }
    }

    /// Admits a large submission before its body is read: the tenant's open submissions are
    /// capped, and its memory is reserved from the process's budget as the body arrives
    /// (each wait for room up to [`BATCH_MEMORY_WAIT`]).
    pub fn admit(&self, owner: &Owner) -> Result<BatchAdmission, BatchError> {
        Ok(self.limits.admit_batch(owner, BATCH_MEMORY_WAIT)?)
    }

    /// Validates a submission's `body` (all items or none), charges its bytes to the request
    /// rate (the gate charged one request already), stores it and audits it. The admission is
    /// held until the batch is stored.
    pub async fn submit(
        &self,
        owner: Owner,
        body: impl AsRef<[u8]> + Send + 'static,
        key: Option<&IdempotencyKey>,
        admission: BatchAdmission,
    ) -> Result<Batch, BatchError> {
        self.limits.charge_body(&owner, body.as_ref().len()).await?;
        let (kind, policy) = (owner.kind(), self.name_policy);
        // Reading 32 MiB of items is tens of milliseconds of CPU: in the tenant's turns on
        // the CPU slots, off the async threads.
        let requests = self
            .cpu
            .run_in_turns(&owner, Lane::Bulk, move |turns| {
                parse_items(body.as_ref(), kind, policy, || turns.checkpoint())
            })
            .await
            .map_err(|e| ServiceError::Internal(Box::new(e)))??;
        let items = requests.len();
        let tenant = self.limits.policies().of(&owner);
        let batch = self.store(owner.clone(), requests, key, &tenant).await?;
        drop(admission);
        self.audit.record(
            AuditEvent::new("batch.submit", "ok", Actor::Anonymous)
                .owner(&owner)
                .target(batch.id)
                .detail(serde_json::json!({ "items": items })),
        );
        Ok(batch)
    }

    /// Stores a batch, or finds the one submitted earlier with the same key; refuses one that
    /// would take the tenant over what its `policy` allows outstanding or per hour.
    async fn store(
        &self,
        owner: Owner,
        requests: Vec<CreateCsr>,
        key: Option<&IdempotencyKey>,
        policy: &TenantPolicy,
    ) -> Result<Batch, BatchError> {
        let allowance = Allowance {
            max_outstanding: policy.max_outstanding,
            items_per_hour: policy.items_per_hour,
        };
        let fingerprint = request_fingerprint_of(&requests);
        let trace_context = crate::telemetry::current_context_headers();
        let batch = NewBatch {
            id: BatchId::new(),
            owner: &owner,
            created_at: CreateJob::now(),
            requests: &requests,
            key: key.map(|k| (k.as_str(), fingerprint.as_slice())),
            trace_context: &trace_context,
            chunk_cost: self.chunk_cost,
        };
        let stored = {
            let mut pooled = self.pool.get().await?;
            let stored = batches::insert(&mut pooled, &batch, allowance).await?;
            let bytes = requests.iter().map(CreateCsr::approx_bytes).sum();
            crate::db::release_sized(pooled, bytes);
            stored
        };
        let id = match stored {
            Stored::New => {
                tracing::info!(batch_id = %batch.id, items = requests.len(), "batch accepted");
                self.dispatch.kick();
                batch.id
            }
            Stored::Earlier(e) if e.request_hash != fingerprint => {
                return Err(BatchError::IdempotencyKeyReused);
            }
            Stored::Earlier(e) => e.id,
            Stored::OverOutstanding { outstanding, limit } => {
                return Err(Refused::Outstanding { outstanding, limit }.into());
            }
            Stored::OverHourlyQuota { limit } => {
                return Err(Refused::HourlyQuota {
                    limit,
                    retry_after: super::limits::until_next_hour(),
                }
                .into());
            }
        };
        self.get(&owner, id)
            .await?
            .ok_or_else(|| ServiceError::Internal("a stored batch vanished".into()).into())
    }

    pub async fn get(&self, owner: &Owner, id: BatchId) -> Result<Option<Batch>, ServiceError> {
        let client = self.pool.get().await?;
        Ok(batches::get(&**client, owner, id).await?)
    }

    pub async fn list(
        &self,
        owner: &Owner,
        offset: i64,
        limit: i64,
    ) -> Result<(Vec<Batch>, i64), ServiceError> {
        let client = self.pool.get().await?;
        Ok(batches::list(&**client, owner, offset, limit).await?)
    }

    /// One page of a batch's results (entries `offset..offset + limit`), if `owner` owns the
    /// batch. The entries are read part by part as the page is sent (see [`ResultPage`]); the
    /// page holds one of the tenant's read slots until it is dropped.
    pub async fn results(
        &self,
        owner: &Owner,
        id: BatchId,
        offset: i64,
        limit: i64,
    ) -> Result<Option<ResultPage>, BatchError> {
        let read = self.limits.admit_read(owner)?;
        let Some(batch) = self.get(owner, id).await? else {
            return Ok(None);
        };
        let first = offset.clamp(0, batch.total);
        let end = offset.saturating_add(limit).clamp(first, batch.total);
        Ok(Some(ResultPage {
            pool: self.pool.clone(),
            batch,
            next: first,
            end,
            _read: read,
        }))
    }
}

/// Entries read from Postgres at once for a results page. An entry is at most about 80 KB
/// (150 SANs of 253 characters, in the CSR and beside it), so a part is at most a few MB
/// whatever the page size, and each part takes a pooled connection only while it is read: a
/// client reading slowly holds neither memory nor a connection for its whole page.
pub const RESULTS_PER_PART: i64 = 32;

/// A page of a batch's results, read part by part.
pub struct ResultPage {
    pool: Pool,
    batch: Batch,
    next: i64,
    end: i64,
    _read: ReadSlot,
}

impl ResultPage {
    pub fn batch(&self) -> &Batch {
        &self.batch
    }

    /// Entries on the page.
    pub fn len(&self) -> usize {
        usize::try_from(self.end - self.next).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The next part of the page, in item order; `None` once the page is done.
    pub async fn next_part(&mut self) -> Option<Result<Vec<BatchEntry>, ServiceError>> {
        if self.next >= self.end {
            return None;
        }
        let len = RESULTS_PER_PART.min(self.end - self.next);
        let read = async {
            let client = self.pool.get().await.map_err(DbError::from)?;
            batches::results(&*client, &self.batch, self.next, len).await
        };
        match read.await {
            Ok(entries) => {
                self.next += len;
                Some(Ok(entries))
            }
            Err(e) => {
                // A part that failed ends the page: the client gets a cut-off answer.
                self.next = self.end;
                Some(Err(e.into()))
            }
        }
    }
}
