//! Publishing create jobs: persistent, `mandatory`, publisher confirm awaited.

use crate::amqp::publish::Route;
use crate::amqp::topology::CREATE_ROUTING_KEY;
use crate::amqp::{CreateJob, PublishError, Publisher, Topology};

use super::{Waiter, Waiters};

#[derive(Clone)]
pub struct JobSubmitter {
    publisher: Publisher,
    topology: Topology,
    instance: String,
    waiters: Waiters,
}

impl JobSubmitter {
    pub fn new(
        publisher: Publisher,
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

    /// Registers the wait first (an event can arrive before the confirm), then publishes.
    /// Returns once the broker has the job safely; the waiter then receives its completion.
    pub async fn submit(&self, job: &CreateJob) -> Result<Waiter, PublishError> {
        let waiter = self.waiters.register(job.id);
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
                &[],
            )
            .await?;
        Ok(waiter)
    }
}
