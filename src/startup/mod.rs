//! Wiring a process: the foundation every role needs (keyring, database), the RabbitMQ
//! connections, then each role's own parts (`worker`, `ingress`), and a staged shutdown.
//! [`start`] is the single entry point for `main` and the tests; [`start_in_memory`] wires the
//! same ingress and worker around the in-memory queue, for tests without a broker.

mod admin;
mod fairshare;
mod foundation;
mod ingress;
mod memory;
mod rabbit;
mod worker;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::amqp::Publisher;
use crate::settings::Settings;

pub use foundation::migrate;
pub use memory::{InMemory, start_in_memory};

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

    fn name(self) -> &'static str {
        match self {
            Role::Serve => "serve",
            Role::Ingress => "ingress",
            Role::Worker => "worker",
        }
    }
}

/// The three stages of shutdown, in order: stop accepting HTTP requests and let the open
/// ones finish (their completions and workers still run); stop consuming and let in-flight
/// jobs finish and settle; close the broker connections.
#[derive(Clone, Default)]
struct Stages {
    stop_http: CancellationToken,
    stop_work: CancellationToken,
    close_connections: CancellationToken,
}

/// A started csrd process.
pub struct Running {
    pub http_addr: Option<SocketAddr>,
    /// The admin listener (`/metrics`), in every role.
    pub admin_addr: Option<SocketAddr>,
    stop: CancellationToken,
    done: JoinHandle<()>,
}

/// The tasks of a started process, by shutdown stage.
#[derive(Default)]
struct Tasks {
    /// The HTTP server, and how long its open requests get to finish once shutdown starts.
    http: Option<(JoinHandle<()>, Duration)>,
    /// Tasks that stop with the HTTP server, before the workers (the bulk dispatcher: nothing
    /// is handed to the broker once the workers may have stopped taking it).
    feeding: Vec<JoinHandle<()>>,
    work: Vec<JoinHandle<()>>,
    /// Publishers whose channels close before their connections do.
    publishers: Vec<Arc<Publisher>>,
    connections: Vec<JoinHandle<()>>,
}

/// Beyond the longest a request waits (`CSRD_CREATE_WAIT_SECS`), how long shutdown waits for
/// HTTP connections to close. A client may hold an idle keep-alive connection open for ever;
/// past this, such connections are dropped instead of holding up the exit.
const HTTP_DRAIN_MARGIN: Duration = Duration::from_secs(5);

impl Running {
    /// Runs the staged shutdown once `stages.stop_http` is cancelled.
    fn new(
        http_addr: Option<SocketAddr>,
        admin_addr: Option<SocketAddr>,
        stages: Stages,
        tasks: Tasks,
    ) -> Self {
        let stop = stages.stop_http.clone();
        let done = tokio::spawn(async move {
            stages.stop_http.cancelled().await;
            if let Some((mut http, drain)) = tasks.http {
                if tokio::time::timeout(drain, &mut http).await.is_err() {
                    tracing::warn!(
                        ?drain,
                        "shutdown: HTTP connections still open; dropping them"
                    );
                    http.abort();
                }
                tracing::debug!("shutdown: open HTTP requests answered");
            }
            for task in tasks.feeding {
                let _ = task.await;
            }
            stages.stop_work.cancel();
            for task in tasks.work {
                let _ = task.await;
            }
            tracing::debug!("shutdown: in-flight work finished");
            for publisher in &tasks.publishers {
                publisher.close().await;
            }
            stages.close_connections.cancel();
            for supervisor in tasks.connections {
                let _ = supervisor.await;
            }
            tracing::debug!("shutdown: broker connections closed");
        });
        Self {
            http_addr,
            admin_addr,
            stop,
            done,
        }
    }

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

/// Binds `addr`; an error names the setting it came from.
async fn bind(addr: SocketAddr, setting: &str) -> anyhow::Result<TcpListener> {
    use anyhow::Context;
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr} ({setting})"))
}

/// Starts `role`: HTTP on `listener` (or `CSRD_LISTEN`) for the roles that serve it.
pub async fn start(
    role: Role,
    settings: &Settings,
    listener: Option<TcpListener>,
) -> anyhow::Result<Running> {
    // Ports first: a port another process holds is reported at once, before connecting to
    // Postgres and RabbitMQ and before migrating.
    let http_listener = match (role.runs_ingress(), listener) {
        (false, _) => None,
        (true, Some(l)) => Some(l),
        (true, None) => Some(bind(settings.http.listen, "CSRD_LISTEN").await?),
    };
    let admin_listener = bind(settings.http.admin_listen, "CSRD_ADMIN_LISTEN").await?;
    let foundation = foundation::Foundation::open(role, settings).await?;
    let stages = Stages::default();
    let (rabbit, supervisors) = rabbit::Rabbit::connect(role, settings, &stages).await?;
    let mut tasks = Tasks {
        connections: supervisors,
        publishers: vec![rabbit.publisher()],
        ..Tasks::default()
    };
    tasks.work.push(rabbit.sample_queue_depths(&stages));
    let (fair, fair_tasks) = fairshare::start(&foundation, settings, rabbit.job_queue(), &stages);
    tasks.work.push(fair_tasks.policies);
    tasks.feeding.push(fair_tasks.dispatcher);
    if role.runs_worker() {
        tasks.work.extend(worker::start(
            &foundation,
            settings,
            rabbit.worker_queue(settings, &stages),
            &fair,
            &stages,
        ));
    }
    let (admin_addr, admin) = admin::serve(
        admin_listener,
        foundation.pool.clone(),
        crate::http::server::HttpLimits::from(&settings.http),
        stages.stop_work.clone(),
    )?;
    tasks.work.push(admin);
    let mut http_addr = None;
    if let Some(listener) = http_listener {
        let (state, ingress_tasks) = rabbit.ingress_state(&foundation, settings, &fair, &stages);
        tasks.work.extend(ingress_tasks);
        let (addr, http) = ingress::serve(state, settings, listener, &stages)?;
        http_addr = Some(addr);
        tasks.http = Some((http, settings.ingress.create_wait() + HTTP_DRAIN_MARGIN));
    }
    announce(role, http_addr, admin_addr);
    Ok(Running::new(http_addr, Some(admin_addr), stages, tasks))
}

/// What a newcomer needs from the first screen of logs: where the API and the metrics are, and
/// the command that makes a first token (the development KEK's file is logged when it is read).
fn announce(role: Role, http_addr: Option<SocketAddr>, admin_addr: SocketAddr) {
    let metrics = format!("http://{admin_addr}/metrics");
    match http_addr {
        Some(addr) => tracing::info!(
            role = role.name(),
            api = %format!("http://{addr}/client/v4"),
            %metrics,
            first_token = "csrd token create --account <32 hex digits> --permission write",
            "csrd is ready"
        ),
        None => tracing::info!(role = role.name(), %metrics, "csrd is ready"),
    }
}
