//! The HTTP adapter: Cloudflare-compatible routes under `/client/v4`, health and the OpenAPI
//! document (`/metrics` is the admin listener's, `startup::admin`). It reaches Postgres and
//! the queue only through the ingress use cases in `AppState`.

// Request paths: a panic here would be a 500 (caught) or a dropped task; errors are
// answered in the Cloudflare envelope instead. Tests may unwrap.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod auth;
pub mod authorized;
pub mod batches;
pub mod certificate_routes;
pub mod certificates;
pub mod csrs;
pub mod envelope;
pub mod error;
pub mod error_item;
pub mod extract;
pub mod health;
mod large_answer;
pub mod openapi;
pub mod recipient_routes;
pub mod recipients;
pub mod request_scope;
pub mod result;
pub mod routes;
pub mod server;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::response::{IntoResponse, Response};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::{DefaultOnFailure, TraceLayer};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use error::ApiError;

use crate::domain::NamePolicy;
use crate::ingress::{
    Access, BatchService, Catalog, Certificates, CreateService, Deliveries, Readiness,
};

/// What every request handler is given: the [`Services`], shared (axum clones the state for
/// each request: one reference count, not one per service).
#[derive(Clone)]
pub struct AppState(Arc<Services>);

impl AppState {
    pub fn new(services: Services) -> Self {
        Self(Arc::new(services))
    }
}

impl std::ops::Deref for AppState {
    type Target = Services;
    fn deref(&self) -> &Services {
        &self.0
    }
}

/// Everything a request handler may use: the ingress use cases, and the one setting that
/// shapes request parsing.
pub struct Services {
    /// The gate every API request passes first (`authorized::Authorized`).
    pub access: Access,
    pub creates: Arc<CreateService>,
    /// `None` when the batch API is switched off (its routes then answer 404).
    pub batches: Option<BatchService>,
    pub catalog: Catalog,
    pub certificates: Certificates,
    /// Key recipients and the sealed release of keys.
    pub deliveries: Deliveries,
    /// The tenants' limits (the memory budget request bodies are read within).
    pub limits: crate::ingress::Limits,
    /// The process's CPU slots, where large bodies are parsed.
    pub cpu: crate::fairshare::CpuSlots,
    pub readiness: Readiness,
    pub name_policy: NamePolicy,
}

/// Every route, registered once with its documentation.
fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(
            routes::list_for_account,
            routes::create_for_account
        ))
        .routes(routes!(routes::get_for_account, routes::delete_for_account))
        .routes(routes!(routes::list_for_zone, routes::create_for_zone))
        .routes(routes!(routes::get_for_zone, routes::delete_for_zone))
        .routes(routes!(
            routes::list_batches_for_account,
            routes::submit_batch_for_account
        ))
        .routes(routes!(routes::get_batch_for_account))
        .routes(routes!(routes::batch_results_for_account))
        .routes(routes!(
            routes::list_batches_for_zone,
            routes::submit_batch_for_zone
        ))
        .routes(routes!(routes::get_batch_for_zone))
        .routes(routes!(routes::batch_results_for_zone))
        .routes(routes!(
            certificate_routes::list_for_zone,
            certificate_routes::upload_for_zone
        ))
        .routes(routes!(
            certificate_routes::get_for_zone,
            certificate_routes::edit_for_zone,
            certificate_routes::delete_for_zone
        ))
        .routes(routes!(certificate_routes::bulk_upload_for_zone))
        .routes(routes!(certificate_routes::bulk_upload_for_account))
        .routes(routes!(
            certificate_routes::list_for_account,
            certificate_routes::upload_for_account
        ))
        .routes(routes!(
            certificate_routes::get_for_account,
            certificate_routes::edit_for_account,
            certificate_routes::delete_for_account
        ))
        .routes(routes!(
            recipient_routes::list_for_account,
            recipient_routes::enroll_for_account
        ))
        .routes(routes!(
            recipient_routes::get_for_account,
            recipient_routes::revoke_for_account
        ))
        .routes(routes!(recipient_routes::deliveries_for_account))
        .routes(routes!(
            recipient_routes::list_for_zone,
            recipient_routes::enroll_for_zone
        ))
        .routes(routes!(
            recipient_routes::get_for_zone,
            recipient_routes::revoke_for_zone
        ))
        .routes(routes!(recipient_routes::deliveries_for_zone))
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(health::openapi_json))
}

pub fn router(state: AppState) -> Router {
    let (api, doc) = api_routes().split_for_parts();
    // One middleware for both (each layer is a boxed future per open request).
    api.route_layer(axum::middleware::from_fn(
        request_scope::request_scope_middleware,
    ))
    .fallback(no_route)
    .method_not_allowed_fallback(method_not_allowed)
    .layer(axum::Extension(Arc::new(doc)))
    .layer(DefaultBodyLimit::max(error::MAX_BODY_BYTES))
    .with_state(state)
    .layer(
        TraceLayer::new_for_http()
            .make_span_with(request_span)
            // `ApiError` logs every 5xx once, with its cause; the trace layer's own line
            // for the same response would only repeat the status.
            .on_failure(DefaultOnFailure::new().level(tracing::Level::DEBUG)),
    )
    .layer(CatchPanicLayer::custom(panic_response))
}

/// The OpenAPI document `GET /openapi.json` serves.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    api_routes().split_for_parts().1
}

/// 404 for an unknown path, counted like every other response (the route layer above does
/// not wrap the fallbacks).
async fn no_route() -> Response {
    counted_refusal(None, ApiError::NoRoute)
}

/// 405 for a known path and an unsupported method, counted under the path's route.
async fn method_not_allowed(matched: Option<axum::extract::MatchedPath>) -> Response {
    counted_refusal(matched, ApiError::MethodNotAllowed)
}

fn counted_refusal(matched: Option<axum::extract::MatchedPath>, error: ApiError) -> Response {
    let response = error.into_response();
    crate::metrics::http_response(
        matched.as_ref().map_or("unmatched", |m| m.as_str()),
        response.status().as_u16(),
        0.0,
    );
    response
}

/// One span per request, a child of the caller's W3C `traceparent` when it sends one.
fn request_span(request: &axum::http::Request<axum::body::Body>) -> tracing::Span {
    let span = tracing::info_span!(
        "http_request",
        method = %request.method(),
        uri = %request.uri().path(),
        trace_id = tracing::field::Empty
    );
    crate::telemetry::adopt_parent(&span, |name| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    });
    span
}

/// A panic is a bug; the client still gets the failure envelope, never a dropped connection.
fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a request handler panicked".to_owned());
    ApiError::internal(message).into_response()
}
