//! Liveness, readiness, metrics and the OpenAPI document.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Serialize;
use utoipa::ToSchema;

use super::envelope::Failure;
use super::{ApiError, AppState};

const READY_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Serialize, ToSchema)]
pub struct Status {
    #[schema(example = "ok")]
    status: &'static str,
}

#[utoipa::path(get, path = "/healthz", tag = "Operations", responses((status = 200, description = "The process is alive", body = Status)))]
pub async fn healthz() -> Json<Status> {
    Json(Status { status: "ok" })
}

#[utoipa::path(get, path = "/readyz", tag = "Operations", responses(
    (status = 200, description = "Postgres answers and the RabbitMQ connections are open", body = Status),
    (status = 503, description = "A dependency is unreachable", body = Failure),
))]
pub async fn readyz(State(app): State<AppState>) -> Result<Json<Status>, ApiError> {
    let db = async {
        let client = app.pool.get().await.map_err(|e| e.to_string())?;
        client
            .simple_query("SELECT 1")
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(())
    };
    match tokio::time::timeout(READY_TIMEOUT, db).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(ApiError::Unavailable(format!("postgres: {e}"))),
        Err(_) => return Err(ApiError::Unavailable("postgres: timed out".into())),
    }
    if let Some(b) = app.brokers.iter().find(|b| !b.is_connected()) {
        return Err(ApiError::Unavailable(format!(
            "rabbitmq: {} is reconnecting",
            b.name()
        )));
    }
    Ok(Json(Status { status: "ready" }))
}

#[utoipa::path(get, path = "/metrics", tag = "Operations", responses(
    (status = 200, description = "Prometheus text exposition format", body = String, content_type = "text/plain"),
))]
pub async fn metrics() -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::metrics::render(),
    )
        .into_response()
}

#[utoipa::path(get, path = "/openapi.json", tag = "Operations", responses(
    (status = 200, description = "This document", content_type = "application/json"),
))]
pub async fn openapi_json(Extension(doc): Extension<Arc<utoipa::openapi::OpenApi>>) -> Response {
    Json(doc.as_ref().clone()).into_response()
}
