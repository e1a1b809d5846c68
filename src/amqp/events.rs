//! Completion events: workers publish them to `{p}.events`, routed by ingress instance id; each
//! ingress instance consumes its own queue and wakes the waiting requests. The queue goes with
//! its consumer and is declared again on the next connection.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use backon::{ExponentialBuilder, Retryable};
use futures_util::StreamExt;
use lapin::options::BasicConsumeOptions;
use lapin::types::FieldTable;
use tokio_util::sync::CancellationToken;

use super::codec::{decode_completions, encode_completions, trace_headers};
use super::publish::{Publisher, Route};
use super::supervisor::bounded;
use super::{Broker, Link, Topology};
use crate::domain::Completion;
use crate::queue::{CompletionSink, PublishError, Waiters};

/// How long a finished job keeps trying to announce itself through a broker outage before
/// the job is returned to the queue (the row is committed; only the wake-up is missing, and
/// the redelivery announces again).
const ANNOUNCE_BUDGET: Duration = Duration::from_secs(30);

/// Completion events on RabbitMQ, for workers.
pub struct RabbitCompletions {
    publisher: Arc<Publisher>,
    topology: Topology,
    shutdown: CancellationToken,
}

impl RabbitCompletions {
    pub fn new(publisher: Arc<Publisher>, topology: Topology, shutdown: CancellationToken) -> Self {
        Self {
            publisher,
            topology,
            shutdown,
        }
    }

    async fn publish_once(
        &self,
        reply_to: &str,
        completions: &[Completion],
    ) -> Result<(), PublishError> {
        let message_id = completions
            .first()
            .map(|c| c.id.to_string())
            .unwrap_or_default();
        let exchange = self.topology.events_exchange();
        self.publisher
            .publish(
                Route {
                    exchange: &exchange,
                    routing_key: reply_to,
                    // The waiting ingress may be gone; its client then reads Postgres instead.
                    mandatory: false,
                    persistent: false,
                },
                &message_id,
                &encode_completions(completions)?,
                trace_headers(),
            )
            .await
    }
}

#[async_trait]
impl CompletionSink for RabbitCompletions {
    /// Rides out a short broker outage, so a reconnect does not cost the job a delivery.
    async fn announce(
        &self,
        reply_to: &str,
        completions: &[Completion],
    ) -> Result<(), PublishError> {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(2))
            .with_total_delay(Some(ANNOUNCE_BUDGET))
            .without_max_times();
        (|| self.publish_once(reply_to, completions))
            .retry(backoff)
            .sleep(tokio::time::sleep)
            .when(|e: &PublishError| e.is_connection_problem() && !self.shutdown.is_cancelled())
            .await
    }
}

/// Consumes this ingress instance's completion queue until shutdown, waking `waiters`.
pub async fn listen(
    broker: Arc<Broker>,
    topology: Topology,
    instance: String,
    waiters: Waiters,
    shutdown: CancellationToken,
) {
    while let Some(link) = broker.next_link(None, &shutdown).await {
        if let Err(e) = consume(&link, &topology, &instance, &waiters, &shutdown).await {
            tracing::warn!(error = %e, "completion events interrupted; waiting requests fall back to Postgres");
        }
        // A pause before the next attempt, so a channel that keeps failing does not spin.
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}

async fn consume(
    link: &Link,
    topology: &Topology,
    instance: &str,
    waiters: &Waiters,
    shutdown: &CancellationToken,
) -> lapin::Result<()> {
    let channel = link.conn.create_channel().await?;
    let queue = topology.declare_instance_queue(&channel, instance).await?;
    // Events are wake-ups, not the source of truth: losing one only delays an answer until
    // the ingress reads Postgres, so they are consumed without acks.
    let tag = format!("ingress-{instance}");
    let mut consumer = channel
        .basic_consume(
            queue.as_str().into(),
            tag.as_str().into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    loop {
        let delivery = tokio::select! {
            _ = shutdown.cancelled() => break,
            d = consumer.next() => d,
        };
        match delivery {
            Some(Ok(d)) => match decode_completions(&d.data) {
                Ok(completions) => {
                    for c in completions {
                        waiters.complete(c);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "ignoring malformed completion event"),
            },
            Some(Err(e)) => return Err(e),
            None => break,
        }
    }
    let cancel = channel.basic_cancel(tag.as_str().into(), Default::default());
    bounded("cancelling the completion consumer", cancel).await;
    bounded("closing a channel", channel.close(200, "done".into())).await;
    Ok(())
}
