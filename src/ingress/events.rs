//! Consumes this instance's completion-event queue and wakes the waiting requests.

use futures_util::StreamExt;
use lapin::Connection;
use lapin::options::BasicConsumeOptions;
use lapin::types::FieldTable;
use tokio_util::sync::CancellationToken;

use super::Waiters;
use crate::amqp::{Completion, Topology};

/// Declares the instance queue, starts consuming, and returns the task that dispatches events.
pub async fn listen(
    conn: &Connection,
    topology: &Topology,
    instance: &str,
    waiters: Waiters,
    shutdown: CancellationToken,
) -> lapin::Result<tokio::task::JoinHandle<()>> {
    let channel = conn.create_channel().await?;
    let queue = topology.declare_instance_queue(&channel, instance).await?;
    // Events are wake-ups, not the source of truth: losing one only delays an answer until
    // the ingress reads Postgres, so they are consumed without acks.
    let mut consumer = channel
        .basic_consume(
            queue.as_str().into(),
            format!("ingress-{instance}").as_str().into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    Ok(tokio::spawn(async move {
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
                Some(Err(e)) => {
                    tracing::error!(error = %e, "completion event consumer failed");
                    break;
                }
                None => break,
            }
        }
        let _ = channel.close(200, "shutdown".into()).await;
    }))
}
