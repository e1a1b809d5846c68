//! The audit log: who did what, to which tenant, when, from which address, in which request
//! and trace. Never a secret: actors are token ids, emails or the operator's login.
//!
//! A single create's `csr.create` event is written by the worker that stores the CSR, in the
//! same transaction as the row ([`AuditEvent::created`], from the caller its job carries): a
//! CSR exists with its event or not at all, and a redelivery writes neither twice. Every other
//! HTTP event (a replay, a pending or failed create, deletes, batches, refusals) is recorded
//! by the ingress through an [`Auditor`]: a bounded channel in front of one writer task that
//! appends whatever has accumulated in one statement, so auditing adds no database round trip
//! to a request. The writer drains the channel when the process stops (after the last request
//! is answered); what a crash loses is those events of the last moments, never a create's. Each request runs inside an [`AuditScope`] (a task-local set
//! by the router's middleware) that carries its address, request id, trace id and, once
//! authenticated, its actor, so handlers only say what happened.
//!
//! The CLI appends its own events (token, user and KEK operations) directly, with [`append`].
//!
//! Events leave through the [`AuditSink`] port; Postgres is its one implementation
//! (`postgres.rs`), so this module depends on `db`, never the other way round.

// Request paths: a panic here would be a 500 (caught) or a dropped task; errors are
// answered in the Cloudflare envelope instead. Tests may unwrap.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod postgres;
mod scope;
mod sink;
mod writer;

use chrono::{DateTime, Utc};

use crate::domain::{CreateJob, Owner};
use crate::settings::OperatorSettings;

pub use postgres::{append, row};
pub use scope::{AuditScope, current_requester, identify_actor};
pub use sink::{AuditSink, SinkError};
pub use writer::{AuditWriter, Auditor};

/// `event` stamped with the current request's address, ids and actor, for a caller that
/// appends it itself (in the request, before answering) instead of through an [`Auditor`].
pub fn stamped(event: AuditEvent) -> AuditEvent {
    match AuditScope::current() {
        Some(scope) => scope.stamp(event),
        None => event,
    }
}

/// Who acted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// An API token, by its id.
    Token(String),
    /// A legacy X-Auth-Email user, by email.
    User(String),
    /// Someone running the `csrd` CLI, by login name.
    Operator(String),
    /// Not (yet) authenticated.
    Anonymous,
}

impl Actor {
    pub fn kind(&self) -> &'static str {
        match self {
            Actor::Token(_) => "token",
            Actor::User(_) => "user",
            Actor::Operator(_) => "operator",
            Actor::Anonymous => "anonymous",
        }
    }

    pub fn id(&self) -> Option<&str> {
        match self {
            Actor::Token(id) | Actor::User(id) | Actor::Operator(id) => Some(id),
            Actor::Anonymous => None,
        }
    }
}

/// Who is running this process (`CSRD_OPERATOR`, else the login: `OperatorSettings`),
/// checked as any operator-chosen label is: a name holding a newline or an escape sequence
/// would forge or hide lines in `csrd audit`.
pub fn operator_name(settings: &OperatorSettings) -> Result<String, String> {
    let name = settings.name();
    crate::auth::valid_label(name)
        .map(|()| name.to_owned())
        .map_err(|why| format!("the operator name (CSRD_OPERATOR or the login) {why}"))
}

/// One thing that happened.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    pub at: DateTime<Utc>,
    /// `csr.create`, `csr.delete`, `batch.submit`, `auth.failure`, `access.denied`,
    /// `token.create`, `token.revoke`, `user.create`, `user.revoke`, `kek.rewrap`,
    /// `keys.verify`.
    pub action: &'static str,
    /// `ok`, `pending`, `denied`, `failed`.
    pub outcome: &'static str,
    pub actor: Actor,
    pub owner: Option<Owner>,
    /// What was acted on: a CSR, batch or token id, a KEK id.
    pub target: Option<String>,
    pub remote_addr: Option<String>,
    pub request_id: Option<String>,
    pub trace_id: Option<String>,
    pub detail: Option<serde_json::Value>,
}

impl AuditEvent {
    pub fn new(action: &'static str, outcome: &'static str, actor: Actor) -> Self {
        Self {
            at: Utc::now(),
            action,
            outcome,
            actor,
            owner: None,
            target: None,
            remote_addr: None,
            request_id: None,
            trace_id: None,
            detail: None,
        }
    }

    pub fn owner(mut self, owner: &Owner) -> Self {
        self.owner = Some(owner.clone());
        self
    }

    pub fn target(mut self, target: impl ToString) -> Self {
        self.target = Some(target.to_string());
        self
    }

    pub fn detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = Some(detail);
        self
    }

    /// The `csr.create` event of a single create whose CSR has just been stored, in the name
    /// of the caller its job carries; `None` for a job nobody is audited for (a batch item).
    pub fn created(job: &CreateJob) -> Option<Self> {
        let by = job.requested_by.as_ref()?;
        let actor = match (by.actor_kind.as_str(), &by.actor) {
            ("token", Some(id)) => Actor::Token(id.clone()),
            ("user", Some(id)) => Actor::User(id.clone()),
            _ => Actor::Anonymous,
        };
        let mut event = Self::new("csr.create", "ok", actor)
            .owner(&job.owner)
            .target(job.id);
        event.remote_addr.clone_from(&by.remote_addr);
        event.request_id.clone_from(&by.request_id);
        event.trace_id.clone_from(&by.trace_id);
        Some(event)
    }
}
