//! Publishing chunks of create jobs: persistent, `mandatory`, publisher confirm awaited.
//! Concurrent publishes share the confirm channel and are confirmed independently.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::codec::{encode_chunk, trace_headers};
use super::publish::{Publisher, Route};
use super::topology::{CREATE_ROUTING_KEY, Topology};
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

    async fn publish_once(&self, chunk: &CreateChunk) -> Result<(), PublishError> {
        let exchange = self.topology.jobs_exchange();
        self.publisher
            .publish(
                Route {
                    exchange: &exchange,
                    routing_key: CREATE_ROUTING_KEY,
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
        match self.publish_once(chunk).await {
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
                self.publish_once(chunk).await
            }
            other => other,
        }
    }
}
