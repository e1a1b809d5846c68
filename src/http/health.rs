//! Liveness, readiness and metrics.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{ApiError, AppState};

const READY_TIMEOUT: Duration = Duration::from_secs(2);

pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// Ready when Postgres answers a query and every RabbitMQ connection is open.
pub async fn readyz(State(app): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
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
    if let Some(c) = app.amqp.iter().find(|c| !c.status().connected()) {
        return Err(ApiError::Unavailable(format!(
            "rabbitmq: connection is {}",
            if c.status().closed() {
                "closed"
            } else {
                "not connected"
            }
        )));
    }
    Ok(Json(
        json!({"status": "ready", "postgres": "ok", "rabbitmq": "ok"}),
    ))
}

pub async fn metrics() -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::metrics::render(),
    )
        .into_response()
}
