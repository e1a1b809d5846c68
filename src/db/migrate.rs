//! Schema migrations: the plain SQL files in `migrations/` (`V<n>__<name>.sql`), compiled into
//! the binary and applied by refinery. Every pending migration runs in one transaction, and an
//! advisory lock makes concurrent `csrd migrate` / `csrd serve` starts take turns.

use refinery::Runner;
use tokio_postgres::Client;

use super::DbError;

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Serialises concurrent migrations on one database.
const MIGRATION_LOCK: i64 = 0x6373_7264_6d69_6772; // "csrdmigr"

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("applying the migrations failed")]
    Apply(#[from] refinery::Error),
}

impl From<tokio_postgres::Error> for MigrateError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Db(e.into())
    }
}

/// Applies every pending migration; returns the ones applied (`V5__name`).
pub async fn migrate(client: &mut Client) -> Result<Vec<String>, MigrateError> {
    // "relation already exists, skipping" is expected on every start; keep it out of the log.
    client
        .batch_execute("SET client_min_messages = warning")
        .await?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let applied = apply(client).await;
    // The connection goes back to a pool: release the lock and the setting either way.
    let released = client
        .batch_execute(&format!(
            "SELECT pg_advisory_unlock({MIGRATION_LOCK}); RESET client_min_messages"
        ))
        .await;
    let applied = applied?;
    released?;
    Ok(applied)
}

/// The newest migration this binary carries.
pub fn newest_version() -> i32 {
    embedded::migrations::runner()
        .get_migrations()
        .iter()
        .map(|m| m.version())
        .max()
        .unwrap_or(0)
}

/// The newest migration applied to the connected database; 0 when none ever was.
pub async fn applied_version(client: &Client) -> Result<i32, DbError> {
    // Two statements: a query naming a table that does not exist fails when it is planned.
    let history = client
        .query_one(
            "SELECT to_regclass('refinery_schema_history') IS NOT NULL",
            &[],
        )
        .await?;
    if !history.get::<_, bool>(0) {
        return Ok(0);
    }
    let row = client
        .query_one(
            "SELECT coalesce(max(version), 0) FROM refinery_schema_history",
            &[],
        )
        .await?;
    Ok(row.get(0))
}

async fn apply(client: &mut Client) -> Result<Vec<String>, MigrateError> {
    let runner = embedded::migrations::runner().set_grouped(true);
    adopt_legacy_history(client, &runner).await?;
    let report = runner.run_async(client).await?;
    Ok(report
        .applied_migrations()
        .iter()
        .map(ToString::to_string)
        .collect())
}

/// Before refinery, csrd recorded applied versions in `schema_migrations`. A database from
/// then gets refinery's history table filled once from it (with refinery's checksums of the
/// same files), so its migrations are not applied a second time.
async fn adopt_legacy_history(client: &mut Client, runner: &Runner) -> Result<(), MigrateError> {
    let tx = client.transaction().await?;
    let legacy: bool = tx
        .query_one(
            "SELECT to_regclass('schema_migrations') IS NOT NULL
                AND to_regclass('refinery_schema_history') IS NULL",
            &[],
        )
        .await?
        .get(0);
    if !legacy {
        return Ok(());
    }
    tx.batch_execute(
        "CREATE TABLE refinery_schema_history (
             version int4 PRIMARY KEY,
             name varchar(255),
             applied_on varchar(255),
             checksum varchar(255)
         )",
    )
    .await?;
    let rows = tx
        .query(
            "SELECT version,
                    to_char(applied_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')
             FROM schema_migrations ORDER BY version",
            &[],
        )
        .await?;
    for row in rows {
        let version: i32 = row.get(0);
        let applied_on: String = row.get(1);
        let Some(m) = runner
            .get_migrations()
            .iter()
            .find(|m| m.version() == version)
        else {
            return Err(DbError::Corrupt(format!(
                "schema_migrations names version {version}, which this csrd does not know"
            ))
            .into());
        };
        tx.execute(
            "INSERT INTO refinery_schema_history (version, name, applied_on, checksum)
             VALUES ($1, $2, $3, $4)",
            &[&version, &m.name(), &applied_on, &m.checksum().to_string()],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}
