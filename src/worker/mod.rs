//! The worker role: consume create jobs, make key + CSR on the bounded blocking pool, seal the
//! key, insert the row (idempotent on the CSR id), announce completion, then ack. A second
//! consumer turns dead-lettered jobs into a recorded failure the client can see.

pub mod dead;
pub mod job;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::Channel;
use lapin::message::Delivery;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::amqp::{Broker, Link, Publisher, Topology};
use crate::crypto::Keyring;
use crate::db::Pool;

/// How long a stopping worker lets in-flight jobs finish before it closes its channel
/// (unacked jobs then return to the queue for another worker).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(25);

#[derive(Clone)]
pub struct WorkerContext {
    pub pool: Pool,
    pub keyring: Arc<Keyring>,
    pub events: Arc<Publisher>,
    pub topology: Topology,
    /// Bounds concurrent key generation to `CSRD_WORKERS`, whatever the prefetch.
    pub keygen_permits: Arc<Semaphore>,
    pub shutdown: CancellationToken,
}

/// Consumes the jobs queue and the dead-letter queue until shutdown, then drains.
pub async fn run(consume: Arc<Broker>, ctx: WorkerContext, workers: usize) {
    let tracker = TaskTracker::new();
    // Channels whose consumers were cancelled at shutdown: closed once their jobs are acked.
    let draining = Arc::new(std::sync::Mutex::new(Vec::new()));
    // Twice the keygen slots: a job is always ready when a slot frees up, yet a stopping or
    // crashing worker holds few jobs hostage.
    let prefetch = u16::try_from(workers * 2).unwrap_or(u16::MAX);
    let jobs = {
        let (ctx, tracker, draining) = (ctx.clone(), tracker.clone(), draining.clone());
        let queue = ctx.topology.jobs_queue();
        let stop = ctx.shutdown.clone();
        consume_queue(
            consume.clone(),
            queue,
            prefetch,
            stop,
            tracker,
            draining,
            move |d| job::handle(ctx.clone(), d),
        )
    };
    let dead = {
        let (ctx, tracker, draining) = (ctx.clone(), tracker.clone(), draining.clone());
        let queue = ctx.topology.dead_letter_queue();
        let stop = ctx.shutdown.clone();
        consume_queue(consume, queue, 4, stop, tracker, draining, move |d| {
            dead::handle(ctx.clone(), d)
        })
    };
    tokio::join!(jobs, dead);
    tracker.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("in-flight jobs did not finish in time; they return to the queue");
    }
}

/// Consumes `queue` on every connection the broker makes, spawning `handle` per delivery.
async fn consume_queue<F, Fut>(
    broker: Arc<Broker>,
    queue: String,
    prefetch: u16,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    draining: Arc<std::sync::Mutex<Vec<Channel>>>,
    handle: F,
) where
    F: Fn(Delivery) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    while let Some(link) = broker.next_link(None, &shutdown).await {
        if let Err(e) = consume_link(
            &link, &queue, prefetch, &shutdown, &tracker, &draining, &handle,
        )
        .await
        {
            tracing::warn!(%queue, error = %e, "consumer interrupted; resuming when RabbitMQ is back");
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}

async fn consume_link<F, Fut>(
    link: &Link,
    queue: &str,
    prefetch: u16,
    shutdown: &CancellationToken,
    tracker: &TaskTracker,
    draining: &std::sync::Mutex<Vec<Channel>>,
    handle: &F,
) -> lapin::Result<()>
where
    F: Fn(Delivery) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let channel = link.conn.create_channel().await?;
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await?;
    let tag = format!("csrd-{}", uuid::Uuid::new_v4().simple());
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            tag.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    loop {
        let next = tokio::select! {
            _ = shutdown.cancelled() => break,
            d = consumer.next() => d,
        };
        match next {
            Some(Ok(delivery)) => {
                tracker.spawn(handle(delivery));
            }
            Some(Err(e)) => return Err(e),
            None => return Ok(()),
        }
    }
    // Stop new deliveries; in-flight ones finish and ack on this channel, closed by `run`
    // once they are done.
    let _ = channel
        .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
        .await;
    draining
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(channel);
    Ok(())
}
