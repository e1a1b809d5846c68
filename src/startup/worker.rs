//! The worker role's wiring: the job and dead-letter consumers, keygen slots, housekeeping.

use std::sync::Arc;

use tokio::task::JoinHandle;

use super::Stages;
use super::fairshare::FairShare;
use super::foundation::Foundation;
use crate::queue::{CompletionSink, JobConsumer};
use crate::settings::Settings;
use crate::worker::{self, KeyPoolSizes, KeySource, WorkerContext, housekeeping};

/// What a worker consumes from and reports to.
pub(super) struct WorkerQueue {
    pub completions: Arc<dyn CompletionSink>,
    pub jobs: Box<dyn JobConsumer>,
    /// Batch chunks, dispatched a few at a time by the bulk dispatchers.
    pub bulk: Box<dyn JobConsumer>,
    pub dead_letters: Box<dyn JobConsumer>,
}

/// Spawns the worker and its housekeeping; both end after `stages.stop_work`.
pub(super) fn start(
    foundation: &Foundation,
    settings: &Settings,
    queue: WorkerQueue,
    fair: &FairShare,
    stages: &Stages,
) -> Vec<JoinHandle<()>> {
    let workers = settings.worker.workers();
    let keygen_slots = fair.cpu.gate().clone();
    let keys = KeySource::new(KeyPoolSizes::from(&settings.worker));
    let ctx = WorkerContext {
        pool: foundation.pool.clone(),
        keyring: foundation.keyring.clone(),
        completions: queue.completions,
        keygen_slots: keygen_slots.clone(),
        policies: fair.policies.clone(),
        bulk_kick: fair.dispatch.clone(),
        keys: keys.clone(),
        shutdown: stages.stop_work.clone(),
    };
    tracing::info!(workers, pool = ?KeyPoolSizes::from(&settings.worker), "worker consuming");
    vec![
        tokio::spawn(keys.refill(keygen_slots, stages.stop_work.clone())),
        tokio::spawn(worker::run(ctx, queue.jobs, queue.bulk, queue.dead_letters)),
        tokio::spawn(housekeeping::watch_nonce_budgets(
            foundation.pool.clone(),
            stages.stop_work.clone(),
        )),
        tokio::spawn(housekeeping::prune_idempotency_keys(
            foundation.pool.clone(),
            settings.worker.idempotency_ttl_hours,
            stages.stop_work.clone(),
        )),
    ]
}
