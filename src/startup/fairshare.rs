//! What every role shares for fair share: the tenants' policies (kept fresh from Postgres) and
//! the bulk dispatcher, each ending with `stages.stop_work`.

use std::sync::Arc;

use tokio::task::JoinHandle;

use super::Stages;
use super::foundation::Foundation;
use crate::fairshare::{BulkDispatcher, CpuSlots, Defaults, Kick, Policies};
use crate::queue::JobQueue;
use crate::settings::Settings;

#[derive(Clone)]
pub(super) struct FairShare {
    pub policies: Policies,
    /// Wakes this process's bulk dispatcher.
    pub dispatch: Kick,
    /// The process's CPU slots (`CSRD_WORKERS` of them), shared by its worker and its ingress.
    pub cpu: CpuSlots,
}

pub(super) struct FairShareTasks {
    /// Keeps the policies fresh; ends with `stages.stop_work`.
    pub policies: JoinHandle<()>,
    /// Dispatches batch chunks; ends with `stages.stop_http`, so that nothing is handed to
    /// the broker once the workers may have stopped (undispatched chunks wait in Postgres).
    pub dispatcher: JoinHandle<()>,
}

/// `queue` is the plain jobs queue the dispatcher publishes batch chunks to.
pub(super) fn start(
    foundation: &Foundation,
    settings: &Settings,
    queue: Arc<dyn JobQueue>,
    stages: &Stages,
) -> (FairShare, FairShareTasks) {
    let policies = Policies::new(Defaults::from(&settings.tenants));
    let dispatch = Kick::default();
    let dispatcher = BulkDispatcher::new(
        foundation.pool.clone(),
        queue,
        dispatch.clone(),
        settings.ingress.batch_chunk_items,
    );
    let tasks = FairShareTasks {
        policies: tokio::spawn(
            policies
                .clone()
                .keep_fresh(foundation.pool.clone(), stages.stop_work.clone()),
        ),
        dispatcher: tokio::spawn(dispatcher.run(stages.stop_http.clone())),
    };
    let cpu = CpuSlots::new(settings.worker.workers(), policies.clone());
    (
        FairShare {
            policies,
            dispatch,
            cpu,
        },
        tasks,
    )
}
