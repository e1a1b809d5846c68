//! The audit log: who did what, to which tenant, when, from which address, in which request
//! and trace. Never a secret: actors are token ids, emails or the operator's login.
//!
//! HTTP events are recorded by the ingress through an [`Auditor`]: a bounded channel in front
//! of one writer task that appends whatever has accumulated in one statement, so auditing adds
//! no database round trip to a request. The writer drains the channel when the process stops
//! (after the last request is answered); what a crash loses is the events of the last moments,
//! never the creates themselves. Each request runs inside an [`AuditScope`] (a task-local set
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

use crate::domain::Owner;
use crate::settings::OperatorSettings;

pub use postgres::append;
pub use scope::{AuditScope, identify_actor};
pub use sink::{AuditSink, SinkError};
pub use writer::{AuditWriter, Auditor};

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
}
