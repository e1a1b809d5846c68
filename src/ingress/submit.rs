//! Publishing create jobs: persistent, `mandatory`, publisher confirm awaited.

use std::sync::Arc;
use std::time::Duration;

use crate::amqp::publish::Route;
use crate::amqp::topology::CREATE_ROUTING_KEY;
use crate::amqp::{CreateJob, PublishError, Publisher, Topology};

use super::{Waiter, Waiters};

/// After a connection problem, how long a create waits for the broker to come back before
/// it republishes the unconfirmed job once, or answers 503.
const RECONNECT_GRACE: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct JobSubmitter {
    publisher: Arc<Publisher>,
    topology: Topology,
    instance: String,
    waiters: Waiters,
}

impl JobSubmitter {
    pub fn new(
        publisher: Arc<Publisher>,
        topology: Topology,
        instance: String,
        waiters: Waiters,
    ) -> Self {
        Self {
            publisher,
            topology,
            instance,
            waiters,
        }
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    pub fn waiters(&self) -> &Waiters {
        &self.waiters
    }

    /// Registers the wait first (an event can arrive before the confirm), then publishes.
    /// A job whose publish was not confirmed because the connection failed is published
    /// again once, on the next connection; the worker is idempotent on the CSR id, so a job
    /// that did arrive twice still makes one CSR.
    pub async fn submit(&self, job: &CreateJob) -> Result<Waiter, PublishError> {
        let waiter = self.waiters.register(job.id);
        match self.publish(job).await {
            Err(e) if e.is_connection_problem() => {
                tracing::warn!(csr_id = %job.id, error = %e, "job not confirmed; republishing after reconnect");
                if self
                    .publisher
                    .broker()
                    .wait_connected(RECONNECT_GRACE)
                    .await
                    .is_none()
                {
                    return Err(e);
                }
                self.publish(job).await?;
            }
            other => other?,
        }
        Ok(waiter)
    }

    async fn publish(&self, job: &CreateJob) -> Result<(), PublishError> {
        let exchange = self.topology.jobs_exchange();
        self.publisher
            .publish_json(
                Route {
                    exchange: &exchange,
                    routing_key: CREATE_ROUTING_KEY,
                    mandatory: true,
                    persistent: true,
                },
                &job.id.to_string(),
                job,
                &crate::telemetry::current_context_headers(),
            )
            .await
    }
}
