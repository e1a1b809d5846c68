//! Where events go: the port the writer appends through. Postgres implements it
//! ([`super::postgres`]); tests may give the writer any other.

use futures_util::future::BoxFuture;

use super::AuditEvent;

/// Why an append failed, and whether trying again a little later may work.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SinkError {
    pub message: String,
    /// The store is away for now (connection refused, failover): worth retrying.
    pub transient: bool,
}

/// Appends events durably, all of them or none.
pub trait AuditSink: Send + Sync + 'static {
    fn append<'a>(&'a self, events: &'a [AuditEvent]) -> BoxFuture<'a, Result<(), SinkError>>;
}
