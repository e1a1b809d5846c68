//! Each request runs inside its audit scope: the client's address, a request id (the client's
//! own when it is short and plain, else a fresh one, echoed as `x-request-id`) and its trace.

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;

use super::server::PeerAddr;
use crate::audit::AuditScope;

/// Runs the request inside its scope and answers with its `x-request-id`.
pub async fn request_scope_middleware(request: Request, next: Next) -> Response {
    let scope = scope_of(&request);
    let request_id = scope.request_id.clone();
    let mut response = scope.within(next.run(request)).await;
    if let Some(value) = request_id.and_then(|id| HeaderValue::from_str(&id).ok()) {
        response.headers_mut().insert("x-request-id", value);
    }
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
