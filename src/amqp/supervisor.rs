//! A supervised broker connection: connects with backoff, re-declares the topology on every
//! new connection, notices loss (events, heartbeat timeouts, a closed status) and reconnects,
//! until shutdown. Users take the current connection from it and wait for the next one after
//! a loss, so nothing in csrd ever needs a manual restart after a broker restart.
//!
//! Given the URLs of several cluster nodes, each attempt tries them in turn, starting after the
//! node last connected to (so a lost node is tried last) and, for the first connection, at a
//! place picked from the connection's name and the process id (so processes spread over the
//! nodes).

use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use futures_util::StreamExt;
use lapin::{Connection, Event};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::connect::ConnectError;
use super::{Topology, connect};
use crate::queue::Connectivity;
use crate::telemetry::ErrorChain;

const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
const STATUS_CHECK: Duration = Duration::from_millis(250);
/// How long a shutdown-time broker call (cancel, channel close, connection close) may take: a
/// broker that does not answer must not hold up the process's exit.
const SHUTDOWN_CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs a shutdown-time broker call, giving up on it after `SHUTDOWN_CALL_TIMEOUT`.
pub(super) async fn bounded<F: std::future::Future>(what: &str, call: F) {
    if tokio::time::timeout(SHUTDOWN_CALL_TIMEOUT, call)
        .await
        .is_err()
    {
        tracing::warn!(
            "RabbitMQ did not answer {what} within {SHUTDOWN_CALL_TIMEOUT:?}; going on without it"
        );
    }
}

/// One connection's lifetime: `generation` increases with every reconnect.
#[derive(Clone)]
pub struct Link {
    pub generation: u64,
    pub conn: Arc<Connection>,
}

pub struct Broker {
    name: String,
    link: watch::Receiver<Option<Link>>,
}

impl Broker {
    /// Starts supervising; the first connection attempt begins at once. The task ends, with
    /// the connection closed, once `shutdown` is cancelled: await it before exiting.
    pub fn start(
        urls: Vec<String>,
        name: String,
        topology: Option<Topology>,
        shutdown: CancellationToken,
    ) -> (Arc<Self>, JoinHandle<()>) {
        let (tx, rx) = watch::channel(None);
        let task = tokio::spawn(supervise(urls, name.clone(), topology, tx, shutdown));
        (Arc::new(Self { name, link: rx }), task)
    }

    /// The live connection, if there is one right now.
    pub fn current(&self) -> Option<Link> {
        self.link
            .borrow()
            .clone()
            .filter(|l| l.conn.status().connected())
    }

    /// Waits up to `max` for a live connection.
    pub async fn wait_connected(&self, max: Duration) -> Option<Link> {
        let mut rx = self.link.clone();
        let wait = rx.wait_for(|l| l.as_ref().is_some_and(|l| l.conn.status().connected()));
        match tokio::time::timeout(max, wait).await {
            Ok(Ok(link)) => link.clone(),
            _ => None,
        }
    }

    /// Waits for a live connection newer than `after` (None: any), or shutdown.
    pub async fn next_link(
        &self,
        after: Option<u64>,
        shutdown: &CancellationToken,
    ) -> Option<Link> {
        let mut rx = self.link.clone();
        let wait = rx.wait_for(|l| {
            l.as_ref().is_some_and(|l| {
                l.conn.status().connected() && after.is_none_or(|g| l.generation > g)
            })
        });
        tokio::select! {
            _ = shutdown.cancelled() => None,
            link = wait => link.ok().and_then(|l| l.clone()),
        }
    }
}

impl Connectivity for Broker {
    fn name(&self) -> &str {
        &self.name
    }

    fn is_connected(&self) -> bool {
        self.current().is_some()
    }
}

#[derive(Debug, thiserror::Error)]
enum OpenError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("declaring the topology failed")]
    Declare(#[source] lapin::Error),
}

/// Connects and, for the publishing connection, declares the topology.
async fn open(url: &str, name: &str, topology: Option<&Topology>) -> Result<Connection, OpenError> {
    let conn = connect(url, name).await?;
    if let Some(t) = topology {
        let ch = conn.create_channel().await.map_err(OpenError::Declare)?;
        t.declare(&ch).await.map_err(OpenError::Declare)?;
        let _ = ch.close(200, "declared".into()).await;
    }
    Ok(conn)
}

/// Tries every URL once, starting at `*next`; on success `*next` points past the one that
/// answered.
async fn open_any(
    urls: &[String],
    next: &std::sync::Mutex<usize>,
    name: &str,
    topology: Option<&Topology>,
) -> Result<Connection, OpenError> {
    let start = *next.lock().unwrap_or_else(|p| p.into_inner());
    let mut last = None;
    for i in 0..urls.len() {
        let at = (start + i) % urls.len();
        match open(&urls[at], name, topology).await {
            Ok(conn) => {
                *next.lock().unwrap_or_else(|p| p.into_inner()) = (at + 1) % urls.len();
                if urls.len() > 1 {
                    tracing::info!(connection = %name, node = at + 1, of = urls.len(), "connected to RabbitMQ node");
                }
                return Ok(conn);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.expect("at least one URL"))
}

/// Where a connection named `name` starts trying: spread by name and process, so that the
/// processes of a deployment do not all crowd onto the first node.
fn first_node(name: &str, nodes: usize) -> usize {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    let seed = std::process::id() as u64;
    let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one((name, seed));
    (hash % nodes.max(1) as u64) as usize
}

async fn supervise(
    urls: Vec<String>,
    name: String,
    topology: Option<Topology>,
    tx: watch::Sender<Option<Link>>,
    shutdown: CancellationToken,
) {
    let mut generation = 0u64;
    let next = std::sync::Mutex::new(first_node(&name, urls.len()));
    loop {
        let mut failures = 0u32;
        let backoff = ExponentialBuilder::default()
            .with_min_delay(BACKOFF_START)
            .with_max_delay(BACKOFF_MAX)
            .without_max_times();
        let connecting = (|| open_any(&urls, &next, &name, topology.as_ref()))
            .retry(backoff)
            .sleep(tokio::time::sleep)
            .notify(|e: &OpenError, _| {
                failures += 1;
                if failures == 1 || failures.is_multiple_of(20) {
                    tracing::warn!(connection = %name, error = %ErrorChain(e), attempts = failures, "RabbitMQ unreachable; retrying");
                }
            });
        let conn = tokio::select! {
            _ = shutdown.cancelled() => return,
            conn = connecting => conn,
        };
        // Retrying without a limit only ends with a connection.
        let Ok(conn) = conn else { continue };
        generation += 1;
        if failures > 0 || generation > 1 {
            tracing::info!(connection = %name, generation, "RabbitMQ connection (re)established");
        }
        let conn = Arc::new(conn);
        let _ = tx.send(Some(Link {
            generation,
            conn: conn.clone(),
        }));
        wait_for_loss(&conn, &shutdown).await;
        let _ = tx.send(None);
        if shutdown.is_cancelled() {
            bounded("closing the connection", conn.close(200, "shutdown".into())).await;
            return;
        }
        tracing::warn!(connection = %name, "RabbitMQ connection lost; reconnecting");
    }
}

/// Returns when the connection is gone (or shutdown is requested).
async fn wait_for_loss(conn: &Connection, shutdown: &CancellationToken) {
    let mut events = conn.events_listener();
    let mut tick = tokio::time::interval(STATUS_CHECK);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            event = events.next() => match event {
                Some(Event::Error(e)) => {
                    tracing::warn!(error = %e, "RabbitMQ connection error");
                    return;
                }
                Some(Event::ConnectionBlocked(reason)) => tracing::warn!(%reason, "RabbitMQ blocked this connection"),
                Some(_) => {}
                None => return,
            },
            _ = tick.tick() => {
                if !conn.status().connected() {
                    return;
                }
            }
        }
    }
}
