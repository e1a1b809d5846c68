//! Publishing create jobs: persistent, `mandatory`, publisher confirm awaited.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::codec::{encode_job, trace_headers};
use super::publish::{Publisher, Route};
use super::topology::{CREATE_ROUTING_KEY, Topology};
use crate::domain::CreateJob;
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

    async fn publish_once(&self, job: &CreateJob) -> Result<(), PublishError> {
        let exchange = self.topology.jobs_exchange();
        self.publisher
            .publish(
                Route {
                    exchange: &exchange,
                    routing_key: CREATE_ROUTING_KEY,
                    mandatory: true,
                    persistent: true,
                },
                &job.id.to_string(),
                &encode_job(job)?,
                trace_headers(),
            )
            .await
    }
}

#[async_trait]
impl JobQueue for RabbitJobQueue {
    /// A job whose publish was not confirmed because the connection failed is published again
    /// once, on the next connection: the worker is idempotent on the CSR id, so a job that did
    /// arrive twice still makes one CSR.
    async fn publish(&self, job: &CreateJob) -> Result<(), PublishError> {
        match self.publish_once(job).await {
            Err(e) if e.is_connection_problem() => {
                tracing::warn!(csr_id = %job.id, error = %e, "job not confirmed; republishing after reconnect");
                let broker = self.publisher.broker();
                if broker.wait_connected(RECONNECT_GRACE).await.is_none() {
                    return Err(e);
                }
                self.publish_once(job).await
            }
            other => other,
        }
    }
}
