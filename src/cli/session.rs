//! What every operator command shares: its one Postgres connection, and the audit event it
//! appends for what it did.

use anyhow::Context;

use crate::audit::AuditEvent;
use crate::db::build_pool;
use crate::settings::DbSettings;

/// The Postgres connection of an operator command: one, from a pool of its own, to a
/// database migrated as far as this binary needs (else it says to run `csrd migrate`,
/// rather than failing later on a missing table).
pub(super) async fn cli_client(db: &DbSettings) -> anyhow::Result<deadpool_postgres::Object> {
    let pool = build_pool(&db.database_url, 1, "csrd-cli")?;
    let client = pool
        .get()
        .await
        .context("connecting to Postgres (DATABASE_URL)")?;
    let applied = crate::db::migrate::applied_version(&client)
        .await
        .context("reading the migration history")?;
    let needed = crate::db::migrate::newest_version();
    anyhow::ensure!(applied >= needed, "{}", unmigrated_message(applied, needed));
    Ok(client)
}

fn unmigrated_message(applied: i32, needed: i32) -> String {
    let state = if applied == 0 {
        "is not migrated".to_string()
    } else {
        format!("is at migration V{applied}, this csrd needs V{needed}")
    };
    format!(
        "the database at DATABASE_URL {state}: run `csrd migrate` with the same DATABASE_URL \
         (`csrd serve` also migrates on start)"
    )
}

/// Appends one operator event to the audit log.
pub(super) async fn operator_event(
    client: &impl crate::db::prepared::Prepared,
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
    fn an_unmigrated_database_is_named_with_the_fix() {
        assert!(unmigrated_message(0, 12).contains("is not migrated: run `csrd migrate`"));
        assert!(unmigrated_message(9, 12).contains("is at migration V9, this csrd needs V12"));
    }

    #[test]
    fn a_run_with_any_failure_is_audited_as_failed() {
        assert_eq!(outcome(0), "ok");
        assert_eq!(outcome(1), "failed");
    }
}
