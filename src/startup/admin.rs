//! The admin listener (`CSRD_ADMIN_LISTEN`, loopback by default): `/metrics` and `/healthz` for
//! operators and Prometheus, in every role, apart from the public API, so the public listener
//! shows no figures across tenants (request volume, auth failures).

use std::net::SocketAddr;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Serves `/metrics` and `/healthz` on `listener` until `stop`.
pub(super) fn serve(
    listener: TcpListener,
    pool: crate::db::Pool,
    limits: crate::http::server::HttpLimits,
    stop: CancellationToken,
) -> anyhow::Result<(SocketAddr, JoinHandle<()>)> {
    let addr = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(pool);
    let task = crate::http::server::serve(listener, app, limits, stop);
    tracing::info!(%addr, "admin listener (metrics) on");
    Ok((addr, task))
}

/// The Prometheus text exposition, with this process's Postgres pool as it is now and the
/// certificates about to expire (read at each scrape; kept as they were when Postgres does
/// not answer within a second, so a scrape never hangs on it).
async fn metrics(State(pool): State<crate::db::Pool>) -> Response {
    let expiring = tokio::time::timeout(std::time::Duration::from_secs(1), async {
        let client = pool.get().await.ok()?;
        crate::db::certificates::count_expiring(&**client)
            .await
            .ok()
    })
    .await;
    if let Ok(Some((within_7, within_30))) = expiring {
        crate::metrics::certificates_expiring(within_7, within_30);
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::metrics::render(Some(pool.status())),
    )
        .into_response()
}
