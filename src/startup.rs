//! Wiring: builds the pool, keyring, broker connections and roles, and runs them until
//! shutdown. `start` is the single entry point for `main` and for the tests.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::amqp::{self, Publisher, Topology};
use crate::crypto::{KekId, Keyring};
use crate::db::{self, Pool, build_pool};
use crate::http::{AppState, router};
use crate::ingress::{JobSubmitter, Waiters, events};
use crate::settings::Settings;
use crate::worker::{self, WorkerContext};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Ingress and workers in one process; applies migrations; may create a dev KEK.
    Serve,
    Ingress,
    Worker,
}

impl Role {
    fn runs_ingress(self) -> bool {
        matches!(self, Role::Serve | Role::Ingress)
    }

    fn runs_worker(self) -> bool {
        matches!(self, Role::Serve | Role::Worker)
    }
}

/// A started csrd process.
pub struct Running {
    pub http_addr: Option<SocketAddr>,
    shutdown: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    connections: Vec<Arc<lapin::Connection>>,
}

impl Running {
    /// A token that stops everything when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops accepting work, lets in-flight work finish, closes connections.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        self.wait().await;
    }

    /// Waits until the process has stopped (after the shutdown token is cancelled).
    pub async fn wait(self) {
        for t in self.tasks {
            let _ = t.await;
        }
        for c in self.connections {
            let _ = c.close(200, "shutdown".into()).await;
        }
    }
}

pub async fn start(
    role: Role,
    settings: &Settings,
    listener: Option<TcpListener>,
) -> anyhow::Result<Running> {
    let keyring = Arc::new(load_keyring(role, settings)?);
    let pool = build_pool(
        &settings.db.database_url,
        settings.db.db_pool_size,
        &format!("csrd-{role:?}").to_lowercase(),
    )?;
    {
        let mut client = retry("Postgres", || pool.get()).await?;
        if role == Role::Serve {
            let applied = db::migrate::migrate(&mut client).await?;
            if !applied.is_empty() {
                tracing::info!(?applied, "migrations applied");
            }
        }
        db::keks::verify_keyring(&client, &keyring).await?;
    }

    let topology = Topology::new(&settings.amqp_prefix, settings.queue_limits());
    let tag = format!("csrd-{}", format!("{role:?}").to_lowercase());
    let (publish_name, consume_name) = (format!("{tag}-publish"), format!("{tag}-consume"));
    let publish_conn = Arc::new(
        retry("RabbitMQ", || {
            amqp::connect(&settings.amqp_url, &publish_name)
        })
        .await?,
    );
    let consume_conn = Arc::new(
        retry("RabbitMQ", || {
            amqp::connect(&settings.amqp_url, &consume_name)
        })
        .await?,
    );
    {
        let ch = publish_conn.create_channel().await?;
        topology
            .declare(&ch)
            .await
            .context("declaring the RabbitMQ topology")?;
        let _ = ch.close(200, "declared".into()).await;
    }

    let shutdown = CancellationToken::new();
    let mut tasks = Vec::new();
    let mut http_addr = None;

    if role.runs_worker() {
        let workers = settings.workers();
        let ctx = WorkerContext {
            pool: pool.clone(),
            keyring: keyring.clone(),
            events: Publisher::open(&publish_conn).await?,
            topology: topology.clone(),
            keygen_permits: Arc::new(Semaphore::new(workers)),
            shutdown: shutdown.clone(),
        };
        tasks.push(worker::start(&consume_conn, ctx, workers).await?);
        tracing::info!(workers, queue = %topology.jobs_queue(), "worker consuming");
    }

    if role.runs_ingress() {
        let instance = uuid::Uuid::new_v4().simple().to_string();
        let waiters = Waiters::default();
        tasks.push(
            events::listen(
                &consume_conn,
                &topology,
                &instance,
                waiters.clone(),
                shutdown.clone(),
            )
            .await?,
        );
        let submitter = JobSubmitter::new(
            Publisher::open(&publish_conn).await?,
            topology.clone(),
            instance,
            waiters,
        );
        let state = AppState {
            pool: pool.clone(),
            submitter,
            name_policy: settings.name_policy,
            create_wait: settings.create_wait(),
            amqp: Arc::new(vec![publish_conn.clone(), consume_conn.clone()]),
        };
        let listener = match listener {
            Some(l) => l,
            None => TcpListener::bind(settings.listen)
                .await
                .with_context(|| format!("binding {}", settings.listen))?,
        };
        http_addr = Some(listener.local_addr()?);
        let stop = shutdown.clone();
        let app = router(state);
        tasks.push(tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "HTTP server failed");
            }
        }));
        tracing::info!(addr = ?http_addr, "ingress listening");
    }

    Ok(Running {
        http_addr,
        shutdown,
        tasks,
        connections: vec![publish_conn, consume_conn],
    })
}

/// Retries a dependency for up to 30 s at start-up, so `docker compose up` does not race.
async fn retry<T, E: std::fmt::Display, F, Fut>(what: &str, mut connect: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut last = String::new();
    for attempt in 0..30 {
        match connect().await {
            Ok(v) => return Ok(v),
            Err(e) => {
                last = e.to_string();
                if attempt == 0 {
                    tracing::warn!(error = %last, "{what} not reachable yet; retrying for 30 s");
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    bail!("{what} unreachable: {last}")
}

fn load_keyring(role: Role, settings: &Settings) -> anyhow::Result<Keyring> {
    if let Some(spec) = settings.keks.as_deref().filter(|s| !s.trim().is_empty()) {
        return Ok(Keyring::parse(spec)?);
    }
    if role != Role::Serve {
        bail!(
            "CSRD_KEKS is required for `csrd {}` (generate one with `csrd kek generate`)",
            format!("{role:?}").to_lowercase()
        );
    }
    let spec = dev_kek(&settings.dev_kek_file)?;
    Ok(Keyring::parse(&spec)?)
}

/// Reads or creates the development KEK file (mode 0600), warning loudly either way.
fn dev_kek(path: &Path) -> anyhow::Result<String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;

    if let Ok(spec) = std::fs::read_to_string(path) {
        tracing::warn!(path = %path.display(), "CSRD_KEKS is not set: using the DEVELOPMENT key-encryption key from this file. Do not use it in production.");
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
    tracing::warn!(path = %path.display(), "CSRD_KEKS is not set: CREATED a DEVELOPMENT key-encryption key in this file. Keys sealed with it are only as safe as that file. Do not use it in production.");
    Ok(entry.to_string())
}

/// Connects and migrates (for `csrd migrate`).
pub async fn migrate(settings: &crate::settings::DbSettings) -> anyhow::Result<Vec<&'static str>> {
    let pool: Pool = build_pool(&settings.database_url, 1, "csrd-migrate")?;
    let mut client = retry("Postgres", || pool.get()).await?;
    Ok(db::migrate::migrate(&mut client).await?)
}
