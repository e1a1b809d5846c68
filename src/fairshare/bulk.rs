//! The bulk lane's dispatcher: batch chunks go from Postgres to the broker's bulk queue a
//! message at a time, in fair-share order across tenants, as the workers take them.
//!
//! A submitted batch is stored as chunks ([`crate::db::bulk`]). Whenever the bulk queue holds
//! fewer than [`READY_TARGET`] messages no worker has taken yet, the dispatcher publishes the
//! next one: from the tenant with the fewest chunks already with the workers, then the one
//! furthest behind its weighted share (start-time fair queuing, its tags in Postgres). A
//! message carries the tenant's next chunk and, when they are small (many small batches), the
//! ones after it, up to one chunk's cost. Workers hold a few messages each (their bulk
//! prefetch), so a batch submitted later waits behind those and one ready message, not behind
//! every chunk submitted before it; two tenants' batches advance chunk by chunk; and a tenant
//! whose chunks progress slowly (its own single creates go first) cannot fill the prefetch.
//!
//! Every process runs one (ingress and worker roles alike): it is woken when its ingress
//! stored a batch and when its worker took or settled a bulk message, and every [`TICK`] in
//! any case. Dispatchers take turns through an advisory lock, so the state lives in Postgres
//! only and any number of processes may run one. A chunk is marked dispatched in the
//! transaction that published it, after the broker's confirm: a crash in between publishes it
//! again, which the workers, idempotent on the CSR id, absorb. A chunk whose stored items
//! cannot be read has them recorded as failed instead, so it never blocks the lane.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::db::bulk::{self, ChunkPart, DISPATCH_LOCK, NextDispatch};
use crate::db::{DbError, Pool, batches, jobs};
use crate::domain::{BatchSlot, CreateChunk, CreateJob, CsrId};
use crate::queue::{JobQueue, PublishError};
use crate::telemetry::ErrorChain;

/// Chunks left ready in the bulk queue, beyond those the workers hold: one, so a worker that
/// finishes a chunk finds the next at once while the dispatcher publishes another.
pub const READY_TARGET: u32 = 1;
/// How often every dispatcher looks, kicked or not (a kick lost with a crashed process, a
/// broker back from an outage).
pub const TICK: Duration = Duration::from_secs(1);
/// What a message costs a tenant beyond its items, in cost units: publishing, confirming,
/// committing and acknowledging it (a few milliseconds of the machine). Tenants sending many
/// tiny batches pay for the messages they cause.
pub const MESSAGE_COST: f64 = 16.0;
/// How long the broker gets to say how full the bulk queue is.
const BACKLOG_TIMEOUT: Duration = Duration::from_secs(2);
/// A whole pass, at most: a broker or database that hangs must not hold the dispatch lock (or
/// a shutdown) for ever. The lock's transaction is rolled back when the pass is dropped.
const PASS_TIMEOUT: Duration = Duration::from_secs(20);
/// Batches stored whole by an earlier release (a rolling upgrade) are adopted this long after
/// their submission, checked this often.
const ADOPT_AFTER: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("a chunk was not published")]
    Publish(#[from] PublishError),
    #[error("a dispatch pass took longer than {PASS_TIMEOUT:?}")]
    Timeout,
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
    /// Cost units of one message at most (`CSRD_BATCH_CHUNK_ITEMS`).
    max_cost: u32,
}

impl BulkDispatcher {
    pub fn new(pool: Pool, queue: Arc<dyn JobQueue>, kick: Kick, max_cost: usize) -> Self {
        Self {
            pool,
            queue,
            kick,
            max_cost: u32::try_from(max_cost.max(1)).unwrap_or(u32::MAX),
        }
    }

    /// Dispatches whenever kicked, and every [`TICK`], until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        // At start too: a process started after an upgrade adopts what the old release left.
        let mut adopted_at: Option<tokio::time::Instant> = None;
        loop {
            let passed = tokio::time::timeout(PASS_TIMEOUT, self.pass())
                .await
                .unwrap_or(Err(DispatchError::Timeout));
            if let Err(e) = passed {
                static FAILED: crate::log_throttle::LogThrottle =
                    crate::log_throttle::LogThrottle::new();
                if let Some(left_out) = FAILED.allow() {
                    tracing::warn!(error = %ErrorChain(&e), left_out, "bulk dispatch failed; trying again");
                }
            }
            if adopted_at.is_none_or(|at| at.elapsed() >= ADOPT_AFTER) {
                adopted_at = Some(tokio::time::Instant::now());
                self.adopt_legacy().await;
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = self.kick.0.notified() => {}
                () = tokio::time::sleep(TICK) => {}
            }
        }
    }

    async fn adopt_legacy(&self) {
        let adopted = async {
            let client = self.pool.get().await.map_err(DbError::from)?;
            bulk::adopt_legacy_batches(&**client, ADOPT_AFTER.as_secs_f64()).await
        };
        match adopted.await {
            Ok(0) => {}
            Ok(n) => tracing::info!(batches = n, "batches stored by an earlier release adopted"),
            Err(e) => tracing::debug!(error = %ErrorChain(&e), "legacy batches not checked"),
        }
    }

    /// Publishes messages until the bulk queue holds [`READY_TARGET`] ready ones or no chunk is
    /// left; returns how many it published.
    pub async fn pass(&self) -> Result<usize, DispatchError> {
        // Most kicks find the queue stocked: no lock, no query.
        if self
            .backlog()
            .await
            .is_none_or(|ready| ready >= READY_TARGET)
        {
            return Ok(0);
        }
        let mut pooled = self.pool.get().await?;
        let tx = pooled.transaction().await?;
        // A dispatcher that died holding the lock must not hold it long.
        tx.batch_execute("SET LOCAL idle_in_transaction_session_timeout = '30s'")
            .await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&DISPATCH_LOCK])
            .await?;
        let mut published = 0;
        let mut read_bytes = 0;
        // Asked again under the lock: another dispatcher may have filled it meanwhile.
        let Some(mut ready) = self.backlog().await else {
            return Ok(0);
        };
        while ready < READY_TARGET {
            let Some(next) = bulk::next_dispatch(&tx, self.max_cost).await? else {
                break;
            };
            fail_unreadable(&tx, &next).await?;
            let chunk = chunk_jobs(&next);
            read_bytes += chunk
                .jobs
                .iter()
                .map(|j| j.request.approx_bytes())
                .sum::<usize>();
            if !chunk.jobs.is_empty() {
                if let Err(e) = publish(&*self.queue, &next, &chunk).await {
                    // Keep what this pass did publish recorded as such.
                    tx.commit().await?;
                    return Err(e.into());
                }
                ready += 1;
                published += 1;
            }
            // Start-time fair queuing: the tenant's next message starts after this one's cost.
            let finish =
                next.start + (next.cost + MESSAGE_COST) / next.weight.max(super::MIN_WEIGHT);
            bulk::mark_dispatched(&tx, &next, finish).await?;
        }
        tx.commit().await?;
        crate::db::release_sized(pooled, read_bytes);
        Ok(published)
    }

    async fn backlog(&self) -> Option<u32> {
        tokio::time::timeout(BACKLOG_TIMEOUT, self.queue.bulk_backlog())
            .await
            .ok()
            .flatten()
    }
}

/// Records the items of stored chunks that cannot be read as failed (with their batches'
/// progress), so one bad chunk never stops the lane.
async fn fail_unreadable(
    client: &impl crate::db::prepared::Prepared,
    next: &NextDispatch,
) -> Result<(), DbError> {
    for part in &next.parts {
        let Err(reason) = &part.items else { continue };
        tracing::error!(batch_id = %part.batch, seq = part.seq, %reason, "a stored batch chunk cannot be read; its items fail");
        let reason = format!("the stored batch item could not be read: {reason}");
        let ids: Vec<CsrId> = (part.first_index..part.first_index + part.item_count)
            .map(|i| CsrId::for_batch_item(part.batch.0, i))
            .collect();
        let failures: Vec<_> = ids
            .iter()
            .map(|id| (*id, &next.owner, reason.as_str()))
            .collect();
        let failed = jobs::record_failures(client, &failures).await?;
        let n = i32::try_from(failed.len()).unwrap_or(i32::MAX);
        batches::record_progress(client, &[(part.batch, 0, n)]).await?;
    }
    Ok(())
}

/// Publishes one message to the bulk lane, in the trace of the request that submitted its
/// first batch.
async fn publish(
    queue: &dyn JobQueue,
    next: &NextDispatch,
    chunk: &CreateChunk,
) -> Result<(), PublishError> {
    let first = &next.parts[0];
    let span = tracing::info_span!(
        "dispatch_chunk",
        batch_id = %first.batch,
        seq = first.seq,
        items = chunk.jobs.len(),
        trace_id = tracing::field::Empty
    );
    crate::telemetry::adopt_parent(&span, |name| {
        first
            .trace_context
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    });
    crate::metrics::chunk_published(chunk.jobs.len());
    queue.publish_bulk(chunk).instrument(span).await
}

/// The jobs of the stored chunks going out: item `i` of a batch always gets the same CSR id
/// and `created_at`, however often it is published.
fn chunk_jobs(next: &NextDispatch) -> CreateChunk {
    let jobs = next
        .parts
        .iter()
        .filter_map(|part| Some((part, part.items.as_ref().ok()?)))
        .flat_map(|(part, items)| {
            items
                .iter()
                .zip(part.first_index..)
                .map(move |(r, i)| (part, r, i))
        })
        .map(|(part, request, index): (&ChunkPart, _, u32)| CreateJob {
            id: CsrId::for_batch_item(part.batch.0, index),
            owner: next.owner.clone(),
            request: request.clone(),
            created_at: part.created_at,
            // Nobody waits for a batch item: the client polls the batch.
            reply_to: String::new(),
            batch: Some(BatchSlot {
                batch_id: part.batch.0,
                index,
            }),
            requested_by: None,
        })
        .collect();
    CreateChunk::new(jobs)
}
