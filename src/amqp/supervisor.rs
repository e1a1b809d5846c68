//! A supervised broker connection: connects with backoff, re-declares the topology on every
//! new connection, notices loss (events, heartbeat timeouts, a closed status) and reconnects,
//! until shutdown. Users take the current connection from it and wait for the next one after
//! a loss, so nothing in csrd ever needs a manual restart after a broker restart.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::{Connection, Event};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{Topology, connect};

const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
const STATUS_CHECK: Duration = Duration::from_millis(250);

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
    /// Starts supervising; the first connection attempt begins at once.
    pub fn start(
        url: String,
        name: String,
        topology: Option<Topology>,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        let (tx, rx) = watch::channel(None);
        tokio::spawn(supervise(url, name.clone(), topology, tx, shutdown));
        Arc::new(Self { name, link: rx })
    }

    /// The live connection, if there is one right now.
    pub fn current(&self) -> Option<Link> {
        self.link
            .borrow()
            .clone()
            .filter(|l| l.conn.status().connected())
    }

    pub fn is_connected(&self) -> bool {
        self.current().is_some()
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

    pub fn name(&self) -> &str {
        &self.name
    }
}

async fn supervise(
    url: String,
    name: String,
    topology: Option<Topology>,
    tx: watch::Sender<Option<Link>>,
    shutdown: CancellationToken,
) {
    let mut generation = 0u64;
    let mut backoff = BACKOFF_START;
    let mut failures = 0u32;
    while !shutdown.is_cancelled() {
        let attempt = async {
            let conn = connect(&url, &name).await.map_err(|e| e.to_string())?;
            if let Some(t) = &topology {
                let ch = conn.create_channel().await.map_err(|e| e.to_string())?;
                t.declare(&ch)
                    .await
                    .map_err(|e| format!("declaring the topology: {e}"))?;
                let _ = ch.close(200, "declared".into()).await;
            }
            Ok::<_, String>(conn)
        };
        let conn = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = attempt => r,
        };
        match conn {
            Ok(conn) => {
                generation += 1;
                if failures > 0 || generation > 1 {
                    tracing::info!(connection = %name, generation, "RabbitMQ connection (re)established");
                }
                failures = 0;
                backoff = BACKOFF_START;
                let conn = Arc::new(conn);
                let _ = tx.send(Some(Link {
                    generation,
                    conn: conn.clone(),
                }));
                wait_for_loss(&conn, &shutdown).await;
                let _ = tx.send(None);
                if shutdown.is_cancelled() {
                    let _ = conn.close(200, "shutdown".into()).await;
                    break;
                }
                tracing::warn!(connection = %name, "RabbitMQ connection lost; reconnecting");
            }
            Err(e) => {
                failures += 1;
                if failures == 1 || failures.is_multiple_of(20) {
                    tracing::warn!(connection = %name, error = %e, attempts = failures, "RabbitMQ unreachable; retrying");
                }
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
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
