//! The ingress and the worker of one process around the in-memory queue instead of RabbitMQ:
//! the real use cases, worker, Postgres and HTTP router, no broker. For tests (and anyone
//! embedding csrd in a test harness); nothing it has queued survives the process, which is
//! why no command starts it.

use std::sync::Arc;

use axum::Router;

use super::foundation::Foundation;
use super::worker::WorkerQueue;
use super::{Role, Running, Stages, Tasks};
use crate::queue::Waiters;
use crate::queue::memory::{MemoryLimits, MemoryQueue};
use crate::settings::Settings;

/// A started in-memory csrd: its router (drive it with `tower::ServiceExt::oneshot`, no socket
/// needed), its queue (to inspect), and the running worker.
pub struct InMemory {
    pub router: Router,
    pub queue: MemoryQueue,
    pub running: Running,
}

/// Like `start(Role::Serve, …)` with the in-memory queue; serves no socket.
pub async fn start_in_memory(settings: &Settings) -> anyhow::Result<InMemory> {
    let foundation = Foundation::open(Role::Serve, settings).await?;
    let stages = Stages::default();
    let waiters = Waiters::default();
    let limits = crate::amqp::QueueLimits::from(&settings.broker);
    let queue = MemoryQueue::new(
        MemoryLimits {
            max_length: usize::try_from(limits.max_length).unwrap_or(usize::MAX),
            delivery_limit: u32::try_from(limits.delivery_limit).unwrap_or(u32::MAX),
        },
        waiters.clone(),
    );
    let (fair, fair_tasks) =
        super::fairshare::start(&foundation, settings, Arc::new(queue.clone()), &stages);
    let mut work = vec![fair_tasks.policies];
    work.extend(super::worker::start(
        &foundation,
        settings,
        WorkerQueue {
            completions: Arc::new(queue.clone()),
            jobs: queue.jobs(),
            bulk: Box::new(crate::queue::memory::NoLane),
            dead_letters: queue.dead_letters(),
        },
        &fair,
        &stages,
    ));
    let ingress_queue = super::ingress::IngressQueue {
        queue: Arc::new(queue.clone()),
        waiters,
        instance: "in-memory".into(),
        brokers: Vec::new(),
    };
    let (state, audit_writer) =
        super::ingress::app_state(&foundation, settings, ingress_queue, &fair, &stages);
    work.push(audit_writer);
    let tasks = Tasks {
        work,
        feeding: vec![fair_tasks.dispatcher],
        ..Tasks::default()
    };
    Ok(InMemory {
        router: crate::http::router(state),
        queue,
        running: Running::new(None, None, stages, tasks),
    })
}
