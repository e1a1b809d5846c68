//! Liveness, readiness and the OpenAPI document (`/metrics` is on the admin listener).

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Serialize;
use utoipa::ToSchema;

use super::envelope::Failure;
use super::{ApiError, AppState};

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
    (status = 200, description = "Postgres answers and takes writes, and the RabbitMQ connections are open", body = Status),
    (status = 503, description = "Postgres is unreachable or read-only (a standby), or a broker connection is reconnecting", body = Failure),
))]
pub async fn readyz(State(app): State<AppState>) -> Result<Json<Status>, ApiError> {
    app.readiness.check().await?;
    Ok(Json(Status { status: "ready" }))
}

#[utoipa::path(get, path = "/openapi.json", tag = "Operations", responses(
    (status = 200, description = "This document", content_type = "application/json"),
))]
pub async fn openapi_json(Extension(doc): Extension<Arc<utoipa::openapi::OpenApi>>) -> Response {
    Json(doc.as_ref().clone()).into_response()
}
