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

use crate::amqp::{Broker, Publisher, Topology};
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
///
/// Shutdown runs in stages so that nothing accepted is dropped: stop accepting HTTP requests
/// and let the open ones finish (their events and workers still run); then stop consuming and
/// let in-flight jobs finish and ack; then close the broker connections.
pub struct Running {
    pub http_addr: Option<SocketAddr>,
    stop: CancellationToken,
    done: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Cancelling this token starts a graceful shutdown.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Starts a graceful shutdown and waits for it.
    pub async fn shutdown(self) {
        self.stop.cancel();
        self.wait().await;
    }

    /// Waits until the process has stopped (after the shutdown token is cancelled).
    pub async fn wait(self) {
        let _ = self.done.await;
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

    // Three stages of shutdown (see `Running`).
    let stop = CancellationToken::new();
    let stop_work = CancellationToken::new();
    let close_connections = CancellationToken::new();

    let topology = Topology::new(&settings.amqp_prefix, settings.queue_limits());
    let tag = format!(
        "{}-{}",
        settings.amqp_prefix,
        format!("{role:?}").to_lowercase()
    );
    let publish = Broker::start(
        settings.amqp_url.clone(),
        format!("{tag}-publish"),
        Some(topology.clone()),
        close_connections.clone(),
    );
    let consume = Broker::start(
        settings.amqp_url.clone(),
        format!("{tag}-consume"),
        None,
        close_connections.clone(),
    );
    for broker in [&publish, &consume] {
        if broker.wait_connected(STARTUP_WAIT).await.is_none() {
            close_connections.cancel();
            bail!(
                "RabbitMQ unreachable at start-up ({}); is it running at AMQP_URL?",
                broker.name()
            );
        }
    }
    let publisher = Arc::new(Publisher::new(publish.clone()));

    let mut work = Vec::new();
    if role.runs_worker() {
        let workers = settings.workers();
        let ctx = WorkerContext {
            pool: pool.clone(),
            keyring: keyring.clone(),
            events: publisher.clone(),
            topology: topology.clone(),
            keygen_permits: Arc::new(Semaphore::new(workers)),
            shutdown: stop_work.clone(),
        };
        work.push(tokio::spawn(worker::run(consume.clone(), ctx, workers)));
        tracing::info!(workers, queue = %topology.jobs_queue(), "worker consuming");
        work.push(tokio::spawn(prune_idempotency_keys(
            pool.clone(),
            settings.idempotency_ttl_hours,
            stop_work.clone(),
        )));
    }

    let mut http = None;
    let mut http_addr = None;
    if role.runs_ingress() {
        let instance = uuid::Uuid::new_v4().simple().to_string();
        let waiters = Waiters::default();
        work.push(tokio::spawn(events::listen(
            consume.clone(),
            topology.clone(),
            instance.clone(),
            waiters.clone(),
            stop_work.clone(),
        )));
        let submitter = JobSubmitter::new(publisher.clone(), topology.clone(), instance, waiters);
        let state = AppState {
            pool: pool.clone(),
            submitter,
            name_policy: settings.name_policy,
            create_wait: settings.create_wait(),
            brokers: Arc::new(vec![publish.clone(), consume.clone()]),
        };
        let listener = match listener {
            Some(l) => l,
            None => TcpListener::bind(settings.listen)
                .await
                .with_context(|| format!("binding {}", settings.listen))?,
        };
        http_addr = Some(listener.local_addr()?);
        let app = router(state);
        let stop_http = stop.clone();
        http = Some(tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop_http.cancelled().await })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "HTTP server failed");
            }
        }));
        tracing::info!(addr = ?http_addr, "ingress listening");
    }

    let done = tokio::spawn({
        let stop = stop.clone();
        async move {
            stop.cancelled().await;
            if let Some(http) = http {
                let _ = http.await;
            }
            stop_work.cancel();
            for task in work {
                let _ = task.await;
            }
            close_connections.cancel();
            // Let the supervisors close their connections cleanly.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    Ok(Running {
        http_addr,
        stop,
        done,
    })
}

/// Deletes Idempotency-Key records past their retention, hourly.
async fn prune_idempotency_keys(pool: Pool, ttl_hours: u32, stop: CancellationToken) {
    loop {
        if let Ok(client) = pool.get().await {
            match db::jobs::prune_idempotency_keys(&**client, ttl_hours).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(pruned = n, "expired Idempotency-Key records removed"),
                Err(e) => tracing::warn!(error = %e, "pruning Idempotency-Key records failed"),
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
        }
    }
}

/// How long start-up waits for a dependency, so `docker compose up` does not race.
const STARTUP_WAIT: Duration = Duration::from_secs(30);

/// Retries a dependency for up to 30 s at start-up.
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
