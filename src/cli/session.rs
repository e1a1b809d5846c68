//! What every operator command shares: its one Postgres connection, and the audit event it
//! appends for what it did.

use anyhow::Context;

use crate::audit::AuditEvent;
use crate::db::build_pool;
use crate::settings::DbSettings;

/// The Postgres connection of an operator command: one, from a pool of its own.
pub(super) async fn cli_client(db: &DbSettings) -> anyhow::Result<deadpool_postgres::Object> {
    let pool = build_pool(&db.database_url, 1, "csrd-cli")?;
    pool.get().await.context("connecting to Postgres")
}

/// Appends one operator event to the audit log.
pub(super) async fn operator_event(
    client: &impl tokio_postgres::GenericClient,
    event: AuditEvent,
) -> anyhow::Result<()> {
    crate::audit::append(client, &[event])
        .await
        .context("writing the audit log")?;
    Ok(())
}

/// The `outcome` of an operator event for a run over many records: `failed` when any failed.
pub(super) fn outcome(failed: u64) -> &'static str {
    if failed == 0 { "ok" } else { "failed" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_with_any_failure_is_audited_as_failed() {
        assert_eq!(outcome(0), "ok");
        assert_eq!(outcome(1), "failed");
    }
}
