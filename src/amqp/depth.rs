//! Queue depths from the broker itself, for `/metrics`: every few seconds a passive declare of
//! each of csrd's work queues on the publishing connection (no management plugin needed).

use std::sync::Arc;
use std::time::Duration;

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
            // A passive declare of a missing queue closes its channel: one channel per queue.
            let Ok(ch) = link.conn.create_channel().await else {
                break;
            };
            let passive = QueueDeclareOptions {
                passive: true,
                ..Default::default()
            };
            if let Ok(q) = ch
                .queue_declare(queue.as_str().into(), passive, FieldTable::default())
                .await
            {
                crate::metrics::queue_depth(queue, q.message_count(), q.consumer_count());
                let _ = ch.close(200, "sampled".into()).await;
            }
        }
    }
}
