//! The request an event belongs to, without threading it through every handler: the router's
//! middleware runs each request inside a task-local [`AuditScope`].

use std::cell::RefCell;

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;

use super::{Actor, AuditEvent};
use crate::auth::Principal;
use crate::http::server::PeerAddr;

tokio::task_local! {
    static SCOPE: RefCell<AuditScope>;
}

/// Where a request came from and who made it.
#[derive(Debug, Clone, Default)]
pub struct AuditScope {
    pub remote_addr: Option<String>,
    pub request_id: Option<String>,
    pub trace_id: Option<String>,
    pub actor: Option<Actor>,
}

impl AuditScope {
    fn of(request: &Request) -> Self {
        let remote_addr = request
            .extensions()
            .get::<PeerAddr>()
            .map(|p| p.0.ip().to_string());
        // A client's own request id is kept when it is short and plain; otherwise ours.
        let request_id = request
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .filter(|v| {
                !v.is_empty()
                    && v.len() <= 64
                    && v.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
            })
            .map(str::to_owned)
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        Self {
            remote_addr,
            request_id: Some(request_id),
            trace_id: crate::telemetry::current_trace_id(),
            actor: None,
        }
    }

    /// `event` with this request's address, ids and actor filled in.
    pub(super) fn stamp(&self, mut event: AuditEvent) -> AuditEvent {
        event.remote_addr = event.remote_addr.or_else(|| self.remote_addr.clone());
        event.request_id = event.request_id.or_else(|| self.request_id.clone());
        event.trace_id = event.trace_id.or_else(|| self.trace_id.clone());
        if event.actor == Actor::Anonymous
            && let Some(actor) = &self.actor
        {
            event.actor = actor.clone();
        }
        event
    }

    /// The current request's scope, if there is one.
    pub(super) fn current() -> Option<Self> {
        SCOPE.try_with(|s| s.borrow().clone()).ok()
    }
}

/// Runs the request inside its scope and answers with its `x-request-id`.
pub async fn audit_scope_middleware(request: Request, next: Next) -> Response {
    let scope = AuditScope::of(&request);
    let request_id = scope.request_id.clone();
    let mut response = SCOPE.scope(RefCell::new(scope), next.run(request)).await;
    if let Some(value) = request_id.and_then(|id| HeaderValue::from_str(&id).ok()) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

/// Records who the current request's caller is, for its later events.
pub fn identify_actor(principal: &Principal) {
    let actor = match principal.label.split_once(':') {
        Some(("user", email)) => Actor::User(email.to_owned()),
        Some(("token", id)) => Actor::Token(id.to_owned()),
        _ => Actor::Token(principal.label.clone()),
    };
    let _ = SCOPE.try_with(|s| s.borrow_mut().actor = Some(actor));
}
