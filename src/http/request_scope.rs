//! Each request runs inside its audit scope: the client's address, a request id (the client's
//! own when it is short and plain, else a fresh one, echoed as `x-request-id`) and its trace.
//! The same middleware counts the responses and times them by route template (never by raw
//! path: ids would explode the label set), and counts the requests in flight: one layer, so one
//! boxed future per open request instead of two.

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;

use super::server::PeerAddr;
use crate::audit::AuditScope;

/// Runs the request inside its scope, answers with its `x-request-id`, and counts it.
pub async fn request_scope_middleware(
    matched: Option<MatchedPath>,
    request: Request,
    next: Next,
) -> Response {
    let _in_flight = crate::metrics::request_started();
    let started = std::time::Instant::now();
    let scope = scope_of(&request);
    let request_id = scope.request_id.clone();
    let mut response = scope.within(next.run(request)).await;
    if let Some(value) = request_id.and_then(|id| HeaderValue::from_str(&id).ok()) {
        response.headers_mut().insert("x-request-id", value);
    }
    crate::metrics::http_response(
        matched.as_ref().map_or("unmatched", |m| m.as_str()),
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

fn scope_of(request: &Request) -> AuditScope {
    let remote_addr = request
        .extensions()
        .get::<PeerAddr>()
        .map(|p| p.0.ip().to_string());
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| plain_request_id(v))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    AuditScope {
        remote_addr,
        request_id: Some(request_id),
        trace_id: crate::telemetry::current_trace_id(),
        actor: None,
    }
}

/// Short, and nothing that could forge a log line or a header.
fn plain_request_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_request_ids_are_kept() {
        assert!(plain_request_id("req-1_2.3:4"));
        assert!(!plain_request_id(""));
        assert!(!plain_request_id("a\r\nx-forged: 1"));
        assert!(!plain_request_id(&"a".repeat(65)));
    }
}
