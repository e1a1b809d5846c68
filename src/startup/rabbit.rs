//! The RabbitMQ side of a process: two supervised connections (publishing and consuming, as
//! RabbitMQ recommends), and the queue port's RabbitMQ implementations for each role.

use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use tokio::task::JoinHandle;

use super::fairshare::FairShare;
use super::foundation::Foundation;
use super::ingress::IngressQueue;
use super::worker::WorkerQueue;
use super::{Role, Stages};
use crate::amqp::{
    Broker, Publisher, QueueLimits, RabbitCompletions, RabbitConsumer, RabbitJobQueue, Topology,
};
use crate::http::AppState;
use crate::queue::{Connectivity, Waiters};
use crate::settings::Settings;

/// How long start-up waits for RabbitMQ, so `docker compose up` does not race.
const STARTUP_WAIT: Duration = Duration::from_secs(30);

pub(super) struct Rabbit {
    publish: Arc<Broker>,
    consume: Arc<Broker>,
    publisher: Arc<Publisher>,
    topology: Topology,
}

impl Rabbit {
    /// Starts both connections and waits for them; returns the supervisors' tasks, which end
    /// once `stages.close_connections` is cancelled and the connections are closed.
    pub async fn connect(
        role: Role,
        settings: &Settings,
        stages: &Stages,
    ) -> anyhow::Result<(Self, Vec<JoinHandle<()>>)> {
        let topology = Topology::new(
            &settings.broker.amqp_prefix,
            QueueLimits::from(&settings.broker),
        );
        let name = format!("{}-{}", settings.broker.amqp_prefix, role.name());
        let urls = settings.broker.broker_urls();
        if urls.is_empty() {
            bail!("AMQP_URL (or CSRD_AMQP_URLS) names no broker");
        }
        let (publish, publishing) = Broker::start(
            urls.clone(),
            format!("{name}-publish"),
            Some(topology.clone()),
            stages.close_connections.clone(),
        );
        let (consume, consuming) = Broker::start(
            urls,
            format!("{name}-consume"),
            None,
            stages.close_connections.clone(),
        );
        let supervisors = vec![publishing, consuming];
        for broker in [&publish, &consume] {
            if broker.wait_connected(STARTUP_WAIT).await.is_none() {
                stages.close_connections.cancel();
                for supervisor in supervisors {
                    let _ = supervisor.await;
                }
                bail!(
                    "RabbitMQ unreachable at start-up ({}); is it running at AMQP_URL?",
                    broker.name()
                );
            }
        }
        let publisher = Arc::new(Publisher::new(publish.clone()));
        let rabbit = Self {
            publish,
            consume,
            publisher,
            topology,
        };
        Ok((rabbit, supervisors))
    }

    /// Samples the work queues' depths for `/metrics` until `stages.stop_work`.
    pub fn sample_queue_depths(&self, stages: &Stages) -> JoinHandle<()> {
        tokio::spawn(crate::amqp::depth::sample_queue_depths(
            self.publish.clone(),
            self.topology.clone(),
            stages.stop_work.clone(),
        ))
    }

    pub fn publisher(&self) -> Arc<Publisher> {
        self.publisher.clone()
    }

    /// The jobs queue on the publishing connection, as it is (no coalescing).
    pub fn job_queue(&self) -> Arc<RabbitJobQueue> {
        Arc::new(RabbitJobQueue::new(
            self.publisher.clone(),
            self.topology.clone(),
        ))
    }

    /// The jobs and dead-letter consumers and the completion sink for the worker role.
    pub fn worker_queue(&self, settings: &Settings, stages: &Stages) -> WorkerQueue {
        // Sized for I/O: chunks being written or announced hold no keygen slot, so a few more
        // than the slots keep both busy; a stopping or crashing worker holds few hostage.
        let prefetch = settings.worker.worker_prefetch.max(1);
        WorkerQueue {
            completions: Arc::new(RabbitCompletions::new(
                self.publisher.clone(),
                self.topology.clone(),
                stages.stop_work.clone(),
            )),
            jobs: Box::new(RabbitConsumer::jobs(
                self.consume.clone(),
                self.topology.jobs_queue(),
                prefetch,
                stages.stop_work.clone(),
            )),
            bulk: Box::new(RabbitConsumer::jobs(
                self.consume.clone(),
                self.topology.bulk_queue(),
                settings.worker.worker_bulk_prefetch(),
                stages.stop_work.clone(),
            )),
            dead_letters: Box::new(RabbitConsumer::dead_letters(
                self.consume.clone(),
                self.topology.dead_letter_queue(),
                4,
                stages.stop_work.clone(),
            )),
        }
    }

    /// The ingress's use cases publishing to RabbitMQ, and its tasks: the one that consumes
    /// this instance's completion events, and the audit writer.
    pub fn ingress_state(
        &self,
        foundation: &Foundation,
        settings: &Settings,
        fair: &FairShare,
        stages: &Stages,
    ) -> (AppState, Vec<JoinHandle<()>>) {
        let instance = uuid::Uuid::new_v4().simple().to_string();
        let waiters = Waiters::default();
        let listening = tokio::spawn(crate::amqp::events::listen(
            self.consume.clone(),
            self.topology.clone(),
            instance.clone(),
            waiters.clone(),
            stages.stop_work.clone(),
        ));
        let brokers: Vec<Arc<dyn Connectivity>> = vec![self.publish.clone(), self.consume.clone()];
        let queue = IngressQueue {
            queue: self.job_queue(),
            waiters,
            instance,
            brokers,
        };
        let (state, audit_writer) =
            super::ingress::app_state(foundation, settings, queue, fair, stages);
        (state, vec![listening, audit_writer])
    }
}
