//! The ingress role's wiring: its use cases over a queue, and the HTTP server.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::Stages;
use super::foundation::Foundation;
use crate::audit::Auditor;
use crate::http::{AppState, router};
use crate::ingress::{
    Authenticator, BatchService, Catalog, Coalescer, CreateService, Limits, Readiness,
};
use crate::queue::{Connectivity, JobQueue, Waiters};
use crate::settings::Settings;

/// The ingress use cases, and the audit writer's task (it stops with `stages.stop_work`).
/// `waiters` is what the queue's completions wake; `instance` is the name they are routed by;
/// `brokers` are the connections readiness reports on.
pub(super) fn app_state(
    foundation: &Foundation,
    settings: &Settings,
    queue: Arc<dyn JobQueue>,
    waiters: Waiters,
    instance: String,
    brokers: Vec<Arc<dyn Connectivity>>,
    stages: &Stages,
) -> (AppState, JoinHandle<()>) {
    let pool = &foundation.pool;
    let (audit, audit_writer) = Auditor::start(pool.clone(), stages.stop_work.clone());
    let batches = settings
        .batch_api
        .then(|| BatchService::new(pool.clone(), queue.clone(), settings.batch_chunk_items));
    let coalesced = Arc::new(Coalescer::start(queue, settings.chunks()));
    let state = AppState {
        creates: Arc::new(CreateService::new(
            pool.clone(),
            coalesced,
            waiters,
            instance,
            settings.create_wait(),
        )),
        batches,
        catalog: Catalog::new(pool.clone()),
        authenticator: Authenticator::new(
            pool.clone(),
            settings.credential_cache(),
            settings.tenants.auth_failures_per_min,
        ),
        limits: Limits::new(settings.tenants.limits()),
        readiness: Readiness::new(pool.clone(), brokers),
        name_policy: settings.name_policy,
        audit,
    };
    (state, audit_writer)
}

/// Serves HTTP until `stages.stop_http`, then lets open requests finish.
pub(super) async fn serve(
    state: AppState,
    settings: &Settings,
    listener: Option<TcpListener>,
    stages: &Stages,
) -> anyhow::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = match listener {
        Some(l) => l,
        None => TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("binding {}", settings.listen))?,
    };
    let addr = listener.local_addr()?;
    let app = router(state);
    let http = crate::http::server::serve(
        listener,
        app,
        settings.http.limits(),
        stages.stop_http.clone(),
    );
    tracing::info!(%addr, "ingress listening");
    Ok((addr, http))
}
