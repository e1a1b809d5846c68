//! The request an event belongs to, without threading it through every handler: the HTTP
//! layer runs each request inside a task-local [`AuditScope`] (`http::request_scope`).

use std::cell::RefCell;

use super::{Actor, AuditEvent};
use crate::auth::Principal;
use crate::domain::Requester;

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
    /// Runs `work` inside this scope: events it records are stamped with it.
    pub async fn within<F: Future>(self, work: F) -> F::Output {
        SCOPE.scope(RefCell::new(self), work).await
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

/// The current request's caller and origin, for a job that is audited where it completes (the
/// worker writes a single create's event with its row).
pub fn current_requester() -> Option<Requester> {
    let scope = AuditScope::current()?;
    let actor = scope.actor.unwrap_or(Actor::Anonymous);
    Some(Requester {
        actor_kind: actor.kind().to_owned(),
        actor: actor.id().map(str::to_owned),
        remote_addr: scope.remote_addr,
        request_id: scope.request_id,
        trace_id: scope.trace_id,
    })
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
