//! What every role stands on: the keyring (checked against the database's KEK check values)
//! and the Postgres pool (migrated first by `csrd serve`).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use backon::{ConstantBuilder, Retryable};

use super::Role;
use crate::crypto::{KekId, Keyring, KeyringError};
use crate::db::{self, Pool, build_pool};
use crate::settings::{DbSettings, Settings};
use crate::telemetry::ErrorChain;

/// How long start-up waits for Postgres, so `docker compose up` does not race.
const STARTUP_ATTEMPTS: usize = 30;
const STARTUP_PAUSE: Duration = Duration::from_secs(1);

pub(super) struct Foundation {
    pub keyring: Arc<Keyring>,
    pub pool: Pool,
}

impl Foundation {
    pub async fn open(role: Role, settings: &Settings) -> anyhow::Result<Self> {
        crate::metrics::init();
        let keyring = Arc::new(load_keyring(role, settings)?);
        let pool = build_pool(
            &settings.db.database_url,
            settings.db.db_pool_size,
            &format!("csrd-{}", role.name()),
        )?;
        let mut client = connect(&pool).await?;
        if role == Role::Serve {
            let applied = db::migrate::migrate(&mut client).await?;
            if !applied.is_empty() {
                tracing::info!(?applied, "migrations applied");
            }
        }
        db::keks::verify_keyring(&client, &keyring).await?;
        Ok(Self { keyring, pool })
    }
}

/// A pooled connection, retrying for up to 30 s while Postgres comes up.
async fn connect(pool: &Pool) -> anyhow::Result<deadpool_postgres::Object> {
    let attempts = ConstantBuilder::default()
        .with_delay(STARTUP_PAUSE)
        .with_max_times(STARTUP_ATTEMPTS - 1);
    let mut warned = false;
    (|| pool.get())
        .retry(attempts)
        .sleep(tokio::time::sleep)
        .notify(|e, _| {
            if !std::mem::replace(&mut warned, true) {
                tracing::warn!(error = %ErrorChain(e), "Postgres not reachable yet; retrying for 30 s");
            }
        })
        .await
        .context("Postgres unreachable")
}

/// Connects and migrates (for `csrd migrate`).
pub async fn migrate(settings: &DbSettings) -> anyhow::Result<Vec<String>> {
    let pool: Pool = build_pool(&settings.database_url, 1, "csrd-migrate")?;
    let mut client = connect(&pool).await?;
    Ok(db::migrate::migrate(&mut client).await?)
}

fn load_keyring(role: Role, settings: &Settings) -> anyhow::Result<Keyring> {
    if let Some(spec) = &settings.keys.keks {
        match Keyring::from_secret(spec) {
            Ok(keyring) => return Ok(keyring),
            // An empty CSRD_KEKS counts as unset.
            Err(KeyringError::Empty) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if role != Role::Serve {
        bail!(
            "CSRD_KEKS is required for `csrd {}` (generate one with `csrd kek generate`)",
            role.name()
        );
    }
    let spec = dev_kek(&settings.keys.dev_kek_file)?;
    Ok(Keyring::parse(&spec)?)
}

/// Reads or creates the development KEK file (mode 0600), warning loudly either way.
fn dev_kek(path: &Path) -> anyhow::Result<String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;

    let shown = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    if let Ok(spec) = std::fs::read_to_string(path) {
        tracing::warn!(path = %shown.display(), "CSRD_KEKS is not set: using the DEVELOPMENT key-encryption key from this file. Do not use it in production.");
        return Ok(spec.trim().to_owned());
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let entry = Keyring::generate_entry(&KekId::parse("dev").expect("static id"));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(entry.as_bytes())?;
    tracing::warn!(path = %shown.display(), "CSRD_KEKS is not set: CREATED a DEVELOPMENT key-encryption key in this file. Keys sealed with it are only as safe as that file. Do not use it in production.");
    Ok(entry.to_string())
}
