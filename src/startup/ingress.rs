//! The ingress role's wiring: its use cases over a queue, and the HTTP server.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::Stages;
use super::fairshare::FairShare;
use super::foundation::Foundation;
use crate::audit::Auditor;
use crate::http::server::HttpLimits;
use crate::http::{AppState, Services, router};
use crate::ingress::batch::BatchSettings;
use crate::ingress::{
    Access, Authenticator, BatchService, Catalog, Certificates, ChunkSettings, Coalescer,
    CreatePipeline, CreateService, Deliveries, Limits, Readiness, TenantLimits,
};
use crate::queue::{Connectivity, JobQueue, Waiters};
use crate::settings::Settings;

/// What the ingress publishes to and hears back from.
pub(super) struct IngressQueue {
    /// The plain jobs queue (single creates are coalesced on top of it).
    pub queue: Arc<dyn JobQueue>,
    /// What the queue's completions wake.
    pub waiters: Waiters,
    /// The name completions are routed to this ingress by.
    pub instance: String,
    /// The connections readiness reports on.
    pub brokers: Vec<Arc<dyn Connectivity>>,
}

/// The ingress use cases, and the audit writer's task (it stops with `stages.stop_work`).
pub(super) fn app_state(
    foundation: &Foundation,
    settings: &Settings,
    queue: IngressQueue,
    fair: &FairShare,
    stages: &Stages,
) -> (AppState, JoinHandle<()>) {
    let IngressQueue {
        queue,
        waiters,
        instance,
        brokers,
    } = queue;
    let pool = &foundation.pool;
    let (audit, audit_writer) = Auditor::start(Arc::new(pool.clone()), stages.stop_work.clone());
    let limits = Limits::new(
        TenantLimits::from(&settings.tenants),
        fair.policies.clone(),
        pool.clone(),
    );
    let authenticator = Authenticator::new(
        pool.clone(),
        settings.ingress.credential_cache(),
        settings.tenants.auth_failures_per_min,
        settings.tenants.auth_failures_per_addr_per_min,
    );
    let batches = settings.ingress.batch_api.then(|| {
        BatchService::new(
            pool.clone(),
            fair.dispatch.clone(),
            BatchSettings {
                chunk_cost: settings.ingress.batch_chunk_items,
                name_policy: settings.ingress.name_policy,
                cpu: fair.cpu.clone(),
            },
            limits.clone(),
            audit.clone(),
        )
    });
    let coalesced = Arc::new(Coalescer::start(
        queue,
        ChunkSettings::from(&settings.ingress),
    ));
    let pipeline = CreatePipeline::new(
        pool.clone(),
        coalesced,
        waiters,
        instance,
        settings.ingress.create_wait(),
    );
    let state = AppState::new(Services {
        access: Access::new(authenticator, limits.clone(), audit.clone()),
        creates: Arc::new(CreateService::new(pipeline, limits.clone(), audit.clone())),
        batches,
        catalog: Catalog::new(pool.clone(), audit.clone()),
        certificates: Certificates::new(
            crate::ingress::db_share::DbShare::quarter(pool.clone()),
            fair.cpu.clone(),
            fair.policies.clone(),
            limits.clone(),
            audit.clone(),
        ),
        deliveries: Deliveries::new(
            crate::ingress::db_share::DbShare::quarter(pool.clone()),
            foundation.keyring.clone(),
            fair.cpu.clone(),
            audit,
        ),
        limits: limits.clone(),
        cpu: fair.cpu.clone(),
        readiness: Readiness::new(pool.clone(), brokers),
        name_policy: settings.ingress.name_policy,
    });
    (state, audit_writer)
}

/// Serves HTTP on `listener` until `stages.stop_http`, then lets open requests finish.
pub(super) fn serve(
    state: AppState,
    settings: &Settings,
    listener: TcpListener,
    stages: &Stages,
) -> anyhow::Result<(SocketAddr, JoinHandle<()>)> {
    let addr = listener.local_addr()?;
    let app = router(state);
    let http = crate::http::server::serve(
        listener,
        app,
        HttpLimits::from(&settings.http),
        stages.stop_http.clone(),
    );
    tracing::info!(%addr, "ingress listening");
    Ok((addr, http))
}
