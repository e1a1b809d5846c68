//! Queue depths from the broker itself, for `/metrics`: every few seconds a passive declare of
//! each of csrd's work queues on the publishing connection (no management plugin needed).

use std::sync::Arc;
use std::time::Duration;

use lapin::Connection;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use tokio_util::sync::CancellationToken;

use super::{Broker, Topology};

const EVERY: Duration = Duration::from_secs(5);

/// Samples the jobs, bulk and dead-letter queues until `stop`.
pub async fn sample_queue_depths(broker: Arc<Broker>, topology: Topology, stop: CancellationToken) {
    let queues = [
        topology.jobs_queue(),
        topology.bulk_queue(),
        topology.dead_letter_queue(),
    ];
    let mut tick = tokio::time::interval(EVERY);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Some(link) = broker.current() else {
            continue;
        };
        for queue in &queues {
            if let Some((messages, consumers)) = queue_depth(&link.conn, queue).await {
                crate::metrics::queue_depth(queue, messages, consumers);
            }
        }
    }
}

/// Messages ready in `queue` and its consumers; `None` when it does not exist (or the
/// connection failed). A passive declare of a missing queue closes its channel, so each call
/// uses a channel of its own.
pub async fn queue_depth(conn: &Connection, queue: &str) -> Option<(u32, u32)> {
    let ch = conn.create_channel().await.ok()?;
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let q = ch
        .queue_declare(queue.into(), passive, FieldTable::default())
        .await
        .ok()?;
    // Closed before the connection: lapin turns a dropped channel racing a connection close
    // into a logged connection error.
    let _ = ch.close(200, "sampled".into()).await;
    Some((q.message_count(), q.consumer_count()))
}
