//! The worker role: take chunks of create jobs from the queue, make keys + CSRs on the bounded
//! blocking pool, seal the keys, insert the chunk's rows in one statement (idempotent on the
//! CSR id), announce the completions, then settle the delivery. A second consumer turns
//! dead-lettered chunks into recorded failures the clients can see. The queue is whatever
//! implements the `queue` port (RabbitMQ in production).

pub mod dead;
pub mod housekeeping;
pub mod job;
pub mod keys;
mod spare_cpu;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::crypto::Keyring;
use crate::db::Pool;
use crate::domain::{Completion, CreateChunk};
use crate::fairshare::{FairGate, Kick, Policies};
use crate::queue::{CompletionSink, JobConsumer, JobDelivery, PublishError};

pub use keys::{KeyPoolSizes, KeySource};

/// How long a stopping worker lets in-flight jobs finish before it closes its channels
/// (unacked jobs then return to the queue for another worker).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(25);

#[derive(Clone)]
pub struct WorkerContext {
    pub pool: Pool,
    pub keyring: Arc<Keyring>,
    pub completions: Arc<dyn CompletionSink>,
    /// Bounds concurrent key generation to `CSRD_WORKERS`, whatever the prefetch, and hands
    /// the slots out by fair share between tenants (by weight, charged in measured keygen
    /// time), a tenant's single creates before its batch items.
    pub keygen_slots: FairGate,
    /// Tenants' weights.
    pub policies: Policies,
    /// Wakes this process's bulk dispatcher once a batch chunk is settled.
    pub bulk_kick: Kick,
    /// Pre-generated keys, or fresh ones.
    pub keys: Arc<KeySource>,
    pub shutdown: CancellationToken,
}

/// Per batch, how many of `created` and `failed` (ids settled by this transaction) are its
/// items: `(batch, created, failed)`.
pub(crate) fn batch_progress(
    chunk: &CreateChunk,
    created: &[crate::domain::CsrId],
    failed: &[crate::domain::CsrId],
) -> Vec<(crate::domain::BatchId, i32, i32)> {
    let mut by_batch: std::collections::BTreeMap<uuid::Uuid, (i32, i32)> = Default::default();
    let batch_of: std::collections::HashMap<_, _> = chunk
        .jobs
        .iter()
        .filter_map(|j| j.batch.map(|b| (j.id, b.batch_id)))
        .collect();
    for id in created {
        if let Some(b) = batch_of.get(id) {
            by_batch.entry(*b).or_default().0 += 1;
        }
    }
    for id in failed {
        if let Some(b) = batch_of.get(id) {
            by_batch.entry(*b).or_default().1 += 1;
        }
    }
    by_batch
        .into_iter()
        .map(|(b, (c, f))| (crate::domain::BatchId(b), c, f))
        .collect()
}

/// Sends each waiting ingress instance one event with its jobs' completions (`completions` in
/// the chunk's order). Jobs nobody waits for (batch items) are skipped.
pub(crate) async fn announce(
    ctx: &WorkerContext,
    chunk: &CreateChunk,
    completions: &[Completion],
) -> Result<(), PublishError> {
    let mut by_instance: std::collections::BTreeMap<&str, Vec<Completion>> = Default::default();
    for (job, completion) in chunk.jobs.iter().zip(completions) {
        if !job.reply_to.is_empty() {
            by_instance
                .entry(job.reply_to.as_str())
                .or_default()
                .push(completion.clone());
        }
    }
    let sends = by_instance
        .iter()
        .map(|(reply_to, completions)| ctx.completions.announce(reply_to, completions));
    futures_util::future::try_join_all(sends).await?;
    Ok(())
}

/// Handles jobs and dead letters until shutdown, then stops consuming, lets in-flight jobs
/// finish and settle, and closes both consumers.
pub async fn run(
    ctx: WorkerContext,
    jobs: Box<dyn JobConsumer>,
    bulk: Box<dyn JobConsumer>,
    dead: Box<dyn JobConsumer>,
) {
    let tracker = TaskTracker::new();
    let (jobs, bulk, dead) = tokio::join!(
        consume(jobs, &ctx, &tracker, job::handle),
        consume(bulk, &ctx, &tracker, job::handle),
        consume(dead, &ctx, &tracker, dead::handle),
    );
    tracker.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("in-flight jobs did not finish in time; they return to the queue");
    }
    tokio::join!(jobs.close(), bulk.close(), dead.close());
}

/// Spawns `handle` for every delivery until shutdown, then stops the consumer (in-flight
/// deliveries can still be settled) and hands it back for closing.
async fn consume<F, Fut>(
    mut consumer: Box<dyn JobConsumer>,
    ctx: &WorkerContext,
    tracker: &TaskTracker,
    handle: F,
) -> Box<dyn JobConsumer>
where
    F: Fn(WorkerContext, JobDelivery) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        let next = tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            d = consumer.next() => d,
        };
        match next {
            Some(delivery) => {
                tracker.spawn(handle(ctx.clone(), delivery));
            }
            None => break,
        }
    }
    consumer.stop().await;
    consumer
}
