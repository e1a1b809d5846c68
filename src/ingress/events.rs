//! Consumes this instance's completion-event queue and wakes the waiting requests, across
//! reconnects: the queue goes with its consumer and is declared again on the next connection.

use std::sync::Arc;

use futures_util::StreamExt;
use lapin::options::BasicConsumeOptions;
use lapin::types::FieldTable;
use tokio_util::sync::CancellationToken;

use super::Waiters;
use crate::amqp::{Broker, Completion, Link, Topology};

/// Runs until shutdown.
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
        // Pause before the next attempt, so a channel that keeps failing does not spin.
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(std::time::Duration::from_millis(200)) => {}
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
            Some(Ok(d)) => match serde_json::from_slice::<Completion>(&d.data) {
                Ok(c) => {
                    waiters.complete(c);
                }
                Err(e) => tracing::warn!(error = %e, "ignoring malformed completion event"),
            },
            Some(Err(e)) => return Err(e),
            None => break,
        }
    }
    let _ = channel
        .basic_cancel(tag.as_str().into(), Default::default())
        .await;
    let _ = channel.close(200, "done".into()).await;
    Ok(())
}
