//! The batch use case: many creates submitted at once.
//!
//! A submission is accepted once the batch and its items, cut into chunks, are stored in
//! Postgres (one transaction), with their CSR ids. The chunks then wait there: the bulk
//! dispatchers ([`crate::fairshare::bulk`]) publish them one by one, in fair-share order
//! across tenants, as the workers take them. Nothing more is published from here, so an
//! ingress that dies after the 202 loses nothing.

use crate::db::batches::{self, Allowance, NewBatch, Stored};
use crate::db::{DbError, Pool};
use crate::domain::idempotency::request_fingerprint_of;
use crate::domain::{Batch, BatchEntry, BatchId, CreateCsr, CreateJob, IdempotencyKey, Owner};
use crate::fairshare::{Kick, TenantPolicy};

use super::{Refused, ServiceError};

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("the Idempotency-Key was used with a different request")]
    IdempotencyKeyReused,
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
}

impl BatchService {
    /// `chunk_cost`: cost units of one chunk at most (P-256 items count 1, RSA-2048 256).
    pub fn new(pool: Pool, dispatch: Kick, chunk_cost: usize) -> Self {
        Self {
            pool,
            dispatch,
            chunk_cost: u32::try_from(chunk_cost.max(1)).unwrap_or(u32::MAX),
        }
    }

    /// Stores a batch, or finds the one submitted earlier with the same key; refuses one that
    /// would take the tenant over what its `policy` allows outstanding or per hour.
    pub async fn submit(
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
            let mut client = self.pool.get().await?;
            let client: &mut tokio_postgres::Client = &mut client;
            batches::insert(client, &batch, allowance).await?
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

    /// The batch (if `owner` owns it) and the entries of one page of its results.
    pub async fn results(
        &self,
        owner: &Owner,
        id: BatchId,
        offset: i64,
        limit: i64,
    ) -> Result<Option<(Batch, Vec<BatchEntry>)>, ServiceError> {
        let client = self.pool.get().await?;
        let Some(batch) = batches::get(&**client, owner, id).await? else {
            return Ok(None);
        };
        let entries = batches::results(&**client, &batch, offset, limit).await?;
        Ok(Some((batch, entries)))
    }
}
