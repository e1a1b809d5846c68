//! Publishing chunks of create jobs: persistent, `mandatory`, publisher confirm awaited.
//! Concurrent publishes share the confirm channel and are confirmed independently.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::codec::{encode_chunk, trace_headers};
use super::publish::{Publisher, Route};
use super::topology::{BULK_ROUTING_KEY, CREATE_ROUTING_KEY, Topology};
use crate::domain::CreateChunk;
use crate::queue::{JobQueue, PublishError};

/// After a connection problem, how long a publish waits for the broker to come back before it
/// publishes the unconfirmed job once more, or gives up (503).
const RECONNECT_GRACE: Duration = Duration::from_secs(1);

/// The jobs queue on RabbitMQ.
pub struct RabbitJobQueue {
    publisher: Arc<Publisher>,
    topology: Topology,
}

impl RabbitJobQueue {
    pub fn new(publisher: Arc<Publisher>, topology: Topology) -> Self {
        Self {
            publisher,
            topology,
        }
    }

    async fn publish_once(
        &self,
        chunk: &CreateChunk,
        routing_key: &str,
    ) -> Result<(), PublishError> {
        let exchange = self.topology.jobs_exchange();
        self.publisher
            .publish(
                Route {
                    exchange: &exchange,
                    routing_key,
                    mandatory: true,
                    persistent: true,
                },
                &chunk.label(),
                &encode_chunk(chunk)?,
                trace_headers(),
            )
            .await
    }
}

#[async_trait]
impl JobQueue for RabbitJobQueue {
    /// A chunk whose publish was not confirmed because the connection failed is published again
    /// once, on the next connection: the worker is idempotent on the CSR id, so a chunk that
    /// did arrive twice still makes one CSR per job.
    async fn publish(&self, chunk: &CreateChunk) -> Result<(), PublishError> {
        self.publish_confirmed(chunk, CREATE_ROUTING_KEY).await
    }

    async fn publish_bulk(&self, chunk: &CreateChunk) -> Result<(), PublishError> {
        self.publish_confirmed(chunk, BULK_ROUTING_KEY).await
    }

    /// The bulk queue's ready messages, from a passive declare (no management plugin).
    async fn bulk_backlog(&self) -> Option<u32> {
        let link = self.publisher.broker().current()?;
        super::depth::queue_depth(&link.conn, &self.topology.bulk_queue())
            .await
            .map(|(ready, _)| ready)
    }
}

impl RabbitJobQueue {
    async fn publish_confirmed(
        &self,
        chunk: &CreateChunk,
        routing_key: &str,
    ) -> Result<(), PublishError> {
        match self.publish_once(chunk, routing_key).await {
            Err(e) if e.is_connection_problem() => {
                static UNCONFIRMED: crate::log_throttle::LogThrottle =
                    crate::log_throttle::LogThrottle::new();
                if let Some(left_out) = UNCONFIRMED.allow() {
                    tracing::warn!(chunk = %chunk.label(), error = %e, left_out, "chunk not confirmed; republishing after reconnect");
                }
                let broker = self.publisher.broker();
                if broker.wait_connected(RECONNECT_GRACE).await.is_none() {
                    return Err(e);
                }
                self.publish_once(chunk, routing_key).await
            }
            other => other,
        }
    }
}
