//! The bulk lane's dispatcher: batch chunks go from Postgres to the broker's bulk queue one at
//! a time, in fair-share order across tenants, as the workers take them.
//!
//! A submitted batch is stored as chunks ([`crate::db::bulk`]). Whenever the bulk queue holds
//! fewer than [`READY_TARGET`] chunks no worker has taken yet, the dispatcher publishes the
//! next chunk: the one whose tenant is furthest behind its weighted share (start-time fair
//! queuing, its tags in Postgres). Workers hold a few chunks each (their bulk prefetch), so a
//! batch submitted later waits behind those and one ready chunk, not behind every chunk
//! submitted before it; two tenants' batches advance chunk by chunk, side by side.
//!
//! Every process runs one (ingress and worker roles alike): it is woken when its ingress
//! stored a batch and when its worker settled a bulk chunk, and every [`TICK`] in any case.
//! Dispatchers take turns through an advisory lock, so the state lives in Postgres only and
//! any number of processes may run one. A chunk is marked dispatched in the transaction that
//! published it, after the broker's confirm: a crash in between publishes it again, which the
//! workers, idempotent on the CSR id, absorb.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::db::bulk::{self, DISPATCH_LOCK, NextChunk};
use crate::db::{DbError, Pool};
use crate::domain::{BatchSlot, CreateChunk, CreateJob, CsrId};
use crate::queue::{JobQueue, PublishError};
use crate::telemetry::ErrorChain;

/// Chunks left ready in the bulk queue, beyond those the workers hold: one, so a worker that
/// finishes a chunk finds the next at once while the dispatcher publishes another.
pub const READY_TARGET: u32 = 1;
/// How often every dispatcher looks, kicked or not (a kick lost with a crashed process, a
/// broker back from an outage).
pub const TICK: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("a chunk was not published")]
    Publish(#[from] PublishError),
}

impl From<deadpool_postgres::PoolError> for DispatchError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        DbError::from(e).into()
    }
}

impl From<tokio_postgres::Error> for DispatchError {
    fn from(e: tokio_postgres::Error) -> Self {
        DbError::from(e).into()
    }
}

/// Wakes a process's dispatcher. Cheap to clone.
#[derive(Clone, Default)]
pub struct Kick(Arc<Notify>);

impl Kick {
    pub fn kick(&self) {
        self.0.notify_one();
    }
}

pub struct BulkDispatcher {
    pool: Pool,
    /// The plain jobs queue (not the coalescer): chunks go to its bulk lane as they are.
    queue: Arc<dyn JobQueue>,
    kick: Kick,
}

impl BulkDispatcher {
    pub fn new(pool: Pool, queue: Arc<dyn JobQueue>, kick: Kick) -> Self {
        Self { pool, queue, kick }
    }

    /// Dispatches whenever kicked, and every [`TICK`], until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        loop {
            match self.pass().await {
                Ok(_) => {}
                Err(e) => {
                    static FAILED: crate::log_throttle::LogThrottle =
                        crate::log_throttle::LogThrottle::new();
                    if let Some(left_out) = FAILED.allow() {
                        tracing::warn!(error = %ErrorChain(&e), left_out, "bulk dispatch failed; trying again");
                    }
                }
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = self.kick.0.notified() => {}
                () = tokio::time::sleep(TICK) => {}
            }
        }
    }

    /// Publishes chunks until the bulk queue holds [`READY_TARGET`] ready ones or none is
    /// left; returns how many it published.
    pub async fn pass(&self) -> Result<usize, DispatchError> {
        // Most kicks find the queue stocked: no lock, no query.
        if !self.room().await {
            return Ok(0);
        }
        let mut client = self.pool.get().await?;
        let client: &mut tokio_postgres::Client = &mut client;
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&DISPATCH_LOCK])
            .await?;
        let mut published = 0;
        // Asked again under the lock: another dispatcher may have filled it meanwhile.
        let Some(mut ready) = self.queue.bulk_backlog().await else {
            return Ok(0);
        };
        while ready < READY_TARGET {
            let Some(chunk) = bulk::next_chunk(&tx).await? else {
                break;
            };
            if let Err(e) = publish(&*self.queue, &chunk).await {
                // Keep what this pass did publish recorded as such.
                tx.commit().await?;
                return Err(e.into());
            }
            bulk::mark_dispatched(&tx, &chunk).await?;
            ready += 1;
            published += 1;
        }
        tx.commit().await?;
        Ok(published)
    }

    async fn room(&self) -> bool {
        self.queue
            .bulk_backlog()
            .await
            .is_some_and(|ready| ready < READY_TARGET)
    }
}

/// Publishes one chunk to the bulk lane, in the trace of the request that submitted its batch.
async fn publish(queue: &dyn JobQueue, chunk: &NextChunk) -> Result<(), PublishError> {
    let span = tracing::info_span!(
        "dispatch_chunk",
        batch_id = %chunk.batch,
        seq = chunk.seq,
        items = chunk.items.len(),
        trace_id = tracing::field::Empty
    );
    crate::telemetry::adopt_parent(&span, |name| {
        chunk
            .trace_context
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    });
    let jobs = chunk_jobs(chunk);
    crate::metrics::chunk_published(jobs.jobs.len());
    queue.publish_bulk(&jobs).instrument(span).await
}

/// The jobs of a stored chunk: item `i` of a batch always gets the same CSR id and
/// `created_at`, however often it is published.
fn chunk_jobs(chunk: &NextChunk) -> CreateChunk {
    let jobs = chunk
        .items
        .iter()
        .zip(chunk.first_index..)
        .map(|(request, index)| CreateJob {
            id: CsrId::for_batch_item(chunk.batch.0, index),
            owner: chunk.owner.clone(),
            request: request.clone(),
            created_at: chunk.created_at,
            // Nobody waits for a batch item: the client polls the batch.
            reply_to: String::new(),
            batch: Some(BatchSlot {
                batch_id: chunk.batch.0,
                index,
            }),
        })
        .collect();
    CreateChunk::new(jobs)
}
