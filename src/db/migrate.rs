//! Applies the plain SQL files in `migrations/` (compiled into the binary) in order, once.

use tokio_postgres::Client;

use super::DbError;

struct Migration {
    version: i32,
    name: &'static str,
    sql: &'static str,
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "0001_init",
        sql: include_str!("../../migrations/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "0002_list_indexes",
        sql: include_str!("../../migrations/0002_list_indexes.sql"),
    },
    Migration {
        version: 3,
        name: "0003_tenant_counts",
        sql: include_str!("../../migrations/0003_tenant_counts.sql"),
    },
    Migration {
        version: 4,
        name: "0004_idempotency_and_failures",
        sql: include_str!("../../migrations/0004_idempotency_and_failures.sql"),
    },
];

/// Serialises concurrent `csrd migrate` / `csrd serve` starts on one database.
const MIGRATION_LOCK: i64 = 0x6373_7264_6d69_6772; // "csrdmigr"

/// Applies every pending migration in one transaction; returns the names applied.
pub async fn migrate(client: &mut Client) -> Result<Vec<&'static str>, DbError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    // "relation already exists, skipping" is expected on every start; keep it out of the log.
    tx.batch_execute("SET LOCAL client_min_messages = warning")
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    integer     PRIMARY KEY,
             name       text        NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await?;
    let applied: Vec<i32> = tx
        .query("SELECT version FROM schema_migrations", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut names = Vec::new();
    for m in MIGRATIONS.iter().filter(|m| !applied.contains(&m.version)) {
        tx.batch_execute(m.sql).await?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            &[&m.version, &m.name],
        )
        .await?;
        names.push(m.name);
    }
    tx.commit().await?;
    Ok(names)
}
