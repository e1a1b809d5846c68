//! The worker role: consume create jobs, make key + CSR on the bounded blocking pool, seal the
//! key, insert the row (idempotent on the CSR id), announce completion, then ack.

pub mod job;

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::Connection;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::amqp::{Publisher, Topology};
use crate::crypto::Keyring;
use crate::db::Pool;

/// How long a stopping worker lets in-flight jobs finish before it closes its channel
/// (unacked jobs then return to the queue for another worker).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Clone)]
pub struct WorkerContext {
    pub pool: Pool,
    pub keyring: Arc<Keyring>,
    pub events: Publisher,
    pub topology: Topology,
    /// Bounds concurrent key generation to `CSRD_WORKERS`, whatever the prefetch.
    pub keygen_permits: Arc<Semaphore>,
    pub shutdown: CancellationToken,
}

/// Starts consuming; the returned task ends after shutdown once in-flight jobs are done.
pub async fn start(
    consume: &Connection,
    ctx: WorkerContext,
    workers: usize,
) -> lapin::Result<tokio::task::JoinHandle<()>> {
    let channel = consume.create_channel().await?;
    // Twice the keygen slots: a job is always ready when a slot frees up, yet a stopping or
    // crashing worker holds few jobs hostage.
    let prefetch = u16::try_from(workers * 2).unwrap_or(u16::MAX);
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await?;
    let tag = format!("worker-{}", uuid::Uuid::new_v4());
    let mut consumer = channel
        .basic_consume(
            ctx.topology.jobs_queue().as_str().into(),
            tag.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok(tokio::spawn(async move {
        let tracker = TaskTracker::new();
        loop {
            let next = tokio::select! {
                _ = ctx.shutdown.cancelled() => break,
                d = consumer.next() => d,
            };
            match next {
                Some(Ok(delivery)) => {
                    tracker.spawn(job::handle(ctx.clone(), delivery));
                }
                Some(Err(e)) => {
                    tracing::error!(error = %e, "job consumer failed");
                    break;
                }
                None => break,
            }
        }
        let _ = channel
            .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
            .await;
        tracker.close();
        if tokio::time::timeout(DRAIN_TIMEOUT, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("in-flight jobs did not finish in time; they return to the queue");
        }
        let _ = channel.close(200, "shutdown".into()).await;
    }))
}
