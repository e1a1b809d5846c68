//! The audit sink in Postgres: events become `db::audit` rows. This is the one place the two
//! meet, so `db` knows nothing of events and the writer nothing of Postgres.

use futures_util::future::BoxFuture;

use super::{AuditEvent, AuditSink, SinkError};
use crate::db::audit::AuditRow;
use crate::db::prepared::Prepared;
use crate::db::{DbError, Pool};

/// Appends `events` in one statement on `client` (the CLI's own connection).
pub async fn append(client: &impl Prepared, events: &[AuditEvent]) -> Result<u64, DbError> {
    let rows: Vec<AuditRow<'_>> = events.iter().map(row).collect();
    crate::db::audit::append(client, &rows).await
}

/// The row that stores `event`, for a statement that writes it beside other rows.
pub fn row(event: &AuditEvent) -> AuditRow<'_> {
    AuditRow {
        at: event.at,
        action: event.action,
        outcome: event.outcome,
        actor_kind: event.actor.kind(),
        actor: event.actor.id(),
        owner: event.owner.as_ref(),
        target: event.target.as_deref(),
        remote_addr: event.remote_addr.as_deref(),
        request_id: event.request_id.as_deref(),
        trace_id: event.trace_id.as_deref(),
        detail: event.detail.as_ref(),
    }
}

impl AuditSink for Pool {
    fn append<'a>(&'a self, events: &'a [AuditEvent]) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            let appended = async {
                let client = self.get().await?;
                append(&*client, events).await
            };
            appended.await.map(drop).map_err(|e: DbError| SinkError {
                transient: e.is_transient(),
                message: crate::telemetry::ErrorChain(&e).to_string(),
            })
        })
    }
}
