//! The batch use case: many creates submitted at once.
//!
//! A submission is accepted once its items' jobs are stored in Postgres (one transaction), with
//! their CSR ids; its chunks are then published, all at once, their confirms awaited together.
//! A batch whose chunks were not all confirmed (broker down, process killed) is published again,
//! under the same CSR ids, by a retry with the same Idempotency-Key or by [`republish_stalled`]
//! in every ingress; the workers are idempotent on the CSR id, so nothing is made twice.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::db::{DbError, Pool, batches};
use crate::domain::idempotency::request_fingerprint_of;
use crate::domain::{
    Batch, BatchEntry, BatchId, BatchSlot, CreateChunk, CreateCsr, CreateJob, CsrId,
    IdempotencyKey, KeyType, Owner,
};
use crate::queue::{JobQueue, PublishError};

use super::ServiceError;

/// How long a batch may stay unconfirmed before another ingress publishes it again.
pub const REPUBLISH_AFTER: Duration = Duration::from_secs(30);

/// One RSA item weighs as much as this many P-256 items when cutting chunks, so an RSA chunk
/// holds a few seconds of keygen, not minutes.
const RSA_WEIGHT: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("the Idempotency-Key was used with a different request")]
    IdempotencyKeyReused,
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
    queue: Arc<dyn JobQueue>,
    chunk_items: usize,
}

impl BatchService {
    /// `queue` is the plain jobs queue (a batch cuts its own chunks); `chunk_items` is the
    /// weight of one chunk (P-256 items; an RSA item counts [`RSA_WEIGHT`]).
    pub fn new(pool: Pool, queue: Arc<dyn JobQueue>, chunk_items: usize) -> Self {
        Self {
            pool,
            queue,
            chunk_items: chunk_items.max(1),
        }
    }

    /// Stores and publishes a batch, or finds the one submitted earlier with the same key.
    pub async fn submit(
        &self,
        owner: Owner,
        requests: Vec<CreateCsr>,
        key: Option<&IdempotencyKey>,
    ) -> Result<Batch, BatchError> {
        let fingerprint = request_fingerprint_of(&requests);
        let id = BatchId::new();
        let created_at = CreateJob::now();
        let earlier = {
            let client = self.pool.get().await?;
            let key = key.map(|k| (k.as_str(), fingerprint.as_slice()));
            batches::insert(&**client, id, &owner, created_at, &requests, key).await?
        };
        let id = match earlier {
            None => {
                tracing::info!(batch_id = %id, items = requests.len(), "batch accepted");
                let jobs = batch_jobs(id, &owner, created_at, requests);
                self.publish(id, &jobs).await;
                id
            }
            Some(e) if e.request_hash != fingerprint => {
                return Err(BatchError::IdempotencyKeyReused);
            }
            Some(e) if e.published => e.id,
            Some(e) => {
                self.publish_stored(e.id).await?;
                e.id
            }
        };
        self.get(&owner, id)
            .await?
            .ok_or_else(|| ServiceError::Internal("a stored batch vanished".into()).into())
    }

    /// Publishes a stored batch's jobs again (all of them: the workers skip what exists).
    async fn publish_stored(&self, id: BatchId) -> Result<(), BatchError> {
        let stored = {
            let client = self.pool.get().await?;
            batches::items(&**client, id).await?
        };
        if let Some((owner, created_at, requests)) = stored {
            let jobs = batch_jobs(id, &owner, created_at, requests);
            self.publish(id, &jobs).await;
        }
        Ok(())
    }

    /// Publishes every chunk at once (the confirms are awaited together) and records the batch
    /// as published when all were confirmed. A failure is logged, not returned: the batch is
    /// accepted already, and will be published again.
    async fn publish(&self, id: BatchId, jobs: &[CreateJob]) {
        let chunks = cut(jobs, self.chunk_items);
        let sends = chunks.iter().map(|c| self.queue.publish_bulk(c));
        let results = futures_util::future::join_all(sends).await;
        for chunk in &chunks {
            crate::metrics::chunk_published(chunk.jobs.len());
        }
        if let Some(e) = results.into_iter().find_map(Result::err) {
            log_unpublished(id, &e);
            return;
        }
        let marked = async {
            let client = self.pool.get().await.map_err(DbError::from)?;
            batches::mark_published(&**client, id).await
        };
        if let Err(e) = marked.await {
            tracing::warn!(batch_id = %id, error = %crate::telemetry::ErrorChain(&e), "batch published but not marked; it will be published again");
        }
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

/// The jobs of a batch: item `i` always gets the same CSR id and `created_at`, however often
/// the batch is published.
pub fn batch_jobs(
    id: BatchId,
    owner: &Owner,
    created_at: chrono::DateTime<chrono::Utc>,
    requests: Vec<CreateCsr>,
) -> Vec<CreateJob> {
    requests
        .into_iter()
        .enumerate()
        .map(|(i, request)| {
            let index = u32::try_from(i).unwrap_or(u32::MAX);
            CreateJob {
                id: CsrId::for_batch_item(id.0, index),
                owner: owner.clone(),
                request,
                created_at,
                // Nobody waits for a batch item: the client polls the batch.
                reply_to: String::new(),
                batch: Some(BatchSlot {
                    batch_id: id.0,
                    index,
                }),
            }
        })
        .collect()
}

fn log_unpublished(id: BatchId, e: &PublishError) {
    tracing::warn!(batch_id = %id, error = %crate::telemetry::ErrorChain(e), "batch stored but not all its chunks were confirmed; it will be published again");
}

/// Cuts a batch's jobs into chunks of at most `weight` (P-256 items count 1, RSA items
/// [`RSA_WEIGHT`]).
fn cut(jobs: &[CreateJob], weight: usize) -> Vec<CreateChunk> {
    let mut chunks = Vec::new();
    let mut current = Vec::new();
    let mut used = 0;
    for job in jobs {
        let w = match job.request.key_type {
            KeyType::Rsa2048 => RSA_WEIGHT,
            KeyType::P256v1 => 1,
        };
        if used + w > weight && !current.is_empty() {
            chunks.push(CreateChunk::new(std::mem::take(&mut current)));
            used = 0;
        }
        current.push(job.clone());
        used += w;
    }
    if !current.is_empty() {
        chunks.push(CreateChunk::new(current));
    }
    chunks
}

/// Publishes again, every [`REPUBLISH_AFTER`], the batches whose chunks were never all
/// confirmed (the broker refused them, or the ingress died in between), until shutdown.
pub async fn republish_stalled(service: BatchService, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(REPUBLISH_AFTER) => {}
        }
        let stalled = async {
            let client = service.pool.get().await.map_err(DbError::from)?;
            batches::unpublished(&**client, REPUBLISH_AFTER.as_secs_f64()).await
        };
        match stalled.await {
            Ok(ids) => {
                for id in ids {
                    tracing::info!(batch_id = %id, "publishing a stalled batch again");
                    if let Err(e) = service.publish_stored(id).await {
                        tracing::warn!(batch_id = %id, error = %crate::telemetry::ErrorChain(&e), "stalled batch not published");
                    }
                }
            }
            Err(e) => {
                tracing::debug!(error = %crate::telemetry::ErrorChain(&e), "stalled batches not checked")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{AccountId, NamePolicy, OwnerKind};

    fn job(key_type: &str) -> CreateJob {
        let body = format!(
            r#"{{"common_name":"a.io","country":"US","state":"CA","locality":"SF",
            "organization":"A","sans":["a.io"],"key_type":"{key_type}"}}"#
        );
        let request =
            CreateCsr::parse(body.as_bytes(), OwnerKind::Account, NamePolicy::Permissive).unwrap();
        let owner = Owner::Account(AccountId::parse(&"a".repeat(32)).unwrap());
        CreateJob::new(owner, request, String::new())
    }

    #[test]
    fn chunks_are_cut_by_weight_and_keep_item_order() {
        let jobs: Vec<CreateJob> = (0..10).map(|_| job("p256v1")).collect();
        let chunks = cut(&jobs, 4);
        assert_eq!(
            chunks.iter().map(|c| c.jobs.len()).collect::<Vec<_>>(),
            [4, 4, 2]
        );
        let flat: Vec<_> = chunks
            .iter()
            .flat_map(|c| c.jobs.iter().map(|j| j.id))
            .collect();
        assert_eq!(flat, jobs.iter().map(|j| j.id).collect::<Vec<_>>());

        let rsa: Vec<CreateJob> = (0..3).map(|_| job("rsa2048")).collect();
        assert_eq!(cut(&rsa, 2 * RSA_WEIGHT).len(), 2);
        assert_eq!(
            cut(&rsa, 1).len(),
            3,
            "an item heavier than a chunk goes alone"
        );
    }
}
