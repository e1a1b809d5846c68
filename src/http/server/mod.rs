//! The public HTTP/1.1 server: an accept loop with a connection cap, per-connection timeouts
//! and a request deadline, around the router. (`axum::serve` has none of these: a silent or
//! slow client there holds its connection, and a descriptor, for ever.)
//!
//! | limit | what happens |
//! |---|---|
//! | `max_connections` | at the cap the oldest connection without a request in progress is closed to make room; if every one is serving a request, the newcomer gets 503 |
//! | `idle_timeout` | a connection with no request in progress and no bytes of the next one is closed |
//! | `header_timeout` | a request head that started arriving but is not complete gets 408 |
//! | `body_timeout` | a request body not fully received gets 408 (`extract`) |
//! | `request_timeout` | a request not answered gets 503 (tower's `TimeoutLayer`, its error mapped to the envelope) |
//! | `write_timeout` | a connection whose response could not be written at all for this long (the client stopped reading) is closed, and the response dropped |
//! | `max_head_bytes`, `max_headers` | hyper's 431/414/400, rewritten into the failure envelope |

mod canned;
mod conn;
mod io;
mod table;
mod watchdog;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::response::IntoResponse;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use conn::{BodyDeadline, PeerAddr};
use table::{Admission, ConnectionTable};

use crate::http::ApiError;
use crate::log_throttle::LogThrottle;

/// Descriptors kept back from the connection cap for Postgres, RabbitMQ, the admin listener
/// and files.
const RESERVED_DESCRIPTORS: u64 = 256;

#[derive(Debug, Clone)]
pub struct HttpLimits {
    pub max_connections: usize,
    pub idle_timeout: Duration,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub request_timeout: Duration,
    pub write_timeout: Duration,
    pub max_head_bytes: usize,
    pub max_headers: usize,
}

impl From<&crate::settings::HttpSettings> for HttpLimits {
    fn from(s: &crate::settings::HttpSettings) -> Self {
        Self {
            max_connections: s.http_max_connections.max(1),
            idle_timeout: Duration::from_millis(s.http_idle_timeout_ms.max(1)),
            header_timeout: Duration::from_millis(s.http_header_timeout_ms.max(1)),
            body_timeout: Duration::from_millis(s.http_body_timeout_ms.max(1)),
            request_timeout: Duration::from_millis(s.http_request_timeout_ms.max(1)),
            write_timeout: Duration::from_millis(s.http_write_timeout_ms.max(1)),
            max_head_bytes: s.http_max_head_bytes,
            max_headers: s.http_max_headers.max(1),
        }
    }
}

impl HttpLimits {
    /// The cap actually applied: the configured one, lowered to fit the descriptor limit.
    pub fn effective_cap(&self, descriptor_limit: u64) -> usize {
        let fits = descriptor_limit
            .saturating_sub(RESERVED_DESCRIPTORS)
            .max(16);
        self.max_connections.min(fits as usize)
    }
}

/// Serves `router` on `listener` until `stop`; then stops accepting, lets each connection's
/// request in progress finish, and returns once every connection is closed.
pub fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    stop: CancellationToken,
) -> JoinHandle<()> {
    let descriptors = raise_descriptor_limit();
    let table = Arc::new(ConnectionTable::new(limits.effective_cap(descriptors)));
    tracing::info!(
        max_connections = table.cap(),
        descriptor_limit = descriptors,
        "connection limits"
    );
    let router = within_deadline(router, limits.request_timeout);
    let limits = Arc::new(limits);
    tokio::spawn(async move {
        let connections = TaskTracker::new();
        loop {
            let accepted = tokio::select! {
                _ = stop.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    accept_failed(&e).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let state = match table.admit() {
                Admission::Admitted(state) => state,
                Admission::Full => {
                    crate::metrics::connection_refused();
                    io::answer_and_close(&stream, &canned::response(&ApiError::Overloaded));
                    continue;
                }
            };
            let (table, router, limits, stop) =
                (table.clone(), router.clone(), limits.clone(), stop.clone());
            connections.spawn(async move {
                let id = state.id;
                conn::run(stream, peer, state, router, limits, stop).await;
                table.release(id);
            });
        }
        connections.close();
        connections.wait().await;
    })
}

/// `router` with the request deadline: a request not answered within `deadline` gets 503.
fn within_deadline(router: Router, deadline: Duration) -> Router {
    router.layer(
        tower::ServiceBuilder::new()
            .layer(HandleErrorLayer::new(|_: tower::BoxError| async {
                // The only error the layers below produce is the deadline's.
                ApiError::DeadlineExceeded.into_response()
            }))
            .timeout(deadline),
    )
}

/// Out of descriptors (or another transient accept error): say so once a second, and give
/// closing connections a moment instead of spinning.
async fn accept_failed(e: &std::io::Error) {
    static ACCEPT: LogThrottle = LogThrottle::new();
    if let Some(left_out) = ACCEPT.allow() {
        tracing::warn!(error = %e, left_out, "accept failed");
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
}

/// Raises the soft limit on open descriptors to the hard limit, and returns the limit in force.
pub fn raise_descriptor_limit() -> u64 {
    rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_descriptors_for_everything_else() {
        let limits = HttpLimits {
            max_connections: 10_000,
            idle_timeout: Duration::from_secs(1),
            header_timeout: Duration::from_secs(1),
            body_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(1),
            write_timeout: Duration::from_secs(1),
            max_head_bytes: 32 * 1024,
            max_headers: 100,
        };
        assert_eq!(limits.effective_cap(20_000), 10_000);
        assert_eq!(limits.effective_cap(1024), 768);
    }
}
