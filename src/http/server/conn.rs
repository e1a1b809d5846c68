//! One connection: hyper's HTTP/1.1 state machine, plus a watchdog that closes it when it sits
//! idle too long or sends a request head too slowly, and the bookkeeping the connection table
//! needs to pick a connection to evict.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::response::IntoResponse;
use hyper::body::Incoming;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::io::{Io, answer_and_close};
use super::{HttpLimits, canned};
use crate::http::ApiError;

/// When the body of the current request must have arrived; `extract` enforces it.
#[derive(Debug, Clone, Copy)]
pub struct BodyDeadline(pub Instant);

/// The peer's address, for limits keyed by client.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// What the reads, the service and the watchdog of one connection share. Times are
/// milliseconds since `epoch` plus one, so that 0 means "not set".
pub struct ConnState {
    pub id: u64,
    epoch: Instant,
    /// Requests handed to the router and not yet answered.
    busy: AtomicU32,
    /// Since when no request has been in progress (accept, or the last response).
    idle_since: AtomicU64,
    /// Since when bytes of the next request head have been arriving (0: none yet).
    head_since: AtomicU64,
    /// Since when a write has been waiting for the client to read (0: not waiting).
    write_blocked_since: AtomicU64,
    /// Cancelled when the table evicts this connection to make room.
    pub evict: CancellationToken,
}

impl ConnState {
    pub fn new(id: u64) -> Self {
        Self {
            id,
            epoch: Instant::now(),
            busy: AtomicU32::new(0),
            idle_since: AtomicU64::new(1),
            head_since: AtomicU64::new(0),
            write_blocked_since: AtomicU64::new(0),
            evict: CancellationToken::new(),
        }
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    fn at(&self, stamp: u64) -> Instant {
        self.epoch + Duration::from_millis(stamp - 1)
    }

    pub fn bytes_arrived(&self) {
        if !self.is_busy() {
            let _ = self.head_since.compare_exchange(
                0,
                self.now(),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    /// A write found the socket's send buffer full (the client is not reading).
    pub fn write_blocked(&self) {
        let _ = self.write_blocked_since.compare_exchange(
            0,
            self.now(),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// A write went through.
    pub fn write_progressed(&self) {
        self.write_blocked_since.store(0, Ordering::Relaxed);
    }

    pub fn is_busy(&self) -> bool {
        self.busy.load(Ordering::Acquire) > 0
    }

    fn request_started(self: &Arc<Self>) -> RequestGuard {
        self.busy.fetch_add(1, Ordering::AcqRel);
        self.head_since.store(0, Ordering::Relaxed);
        RequestGuard(self.clone())
    }

    /// What the watchdog should do now.
    fn verdict(&self, limits: &HttpLimits) -> Verdict {
        let now = Instant::now();
        let stalled = self.write_blocked_since.load(Ordering::Relaxed);
        if stalled != 0 {
            let deadline = self.at(stalled) + limits.write_timeout;
            if now >= deadline {
                return Verdict::WriteStalled;
            }
            return Verdict::Wait(deadline);
        }
        if self.is_busy() {
            // The request's own deadlines apply; look again later.
            return Verdict::Wait(now + limits.header_timeout);
        }
        match self.head_since.load(Ordering::Relaxed) {
            0 => {
                let deadline =
                    self.at(self.idle_since.load(Ordering::Relaxed)) + limits.idle_timeout;
                if now >= deadline {
                    Verdict::CloseIdle
                } else {
                    // A head may start arriving meanwhile, and nothing wakes the watchdog for
                    // that: look again within one header timeout.
                    Verdict::Wait(deadline.min(now + limits.header_timeout))
                }
            }
            head => {
                let deadline = self.at(head) + limits.header_timeout;
                if now >= deadline {
                    Verdict::HeadTooSlow
                } else {
                    Verdict::Wait(deadline)
                }
            }
        }
    }
}

/// Marks the end of a request, however it ends (answered, or dropped with the connection).
struct RequestGuard(Arc<ConnState>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.idle_since.store(self.0.now(), Ordering::Relaxed);
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

enum Verdict {
    Wait(Instant),
    CloseIdle,
    /// The client has not read any of the response for the write timeout: dropping the
    /// connection frees the response and its buffers.
    WriteStalled,
    HeadTooSlow,
}

/// Serves one connection until the client closes it, it times out, it is evicted, or the
/// server stops (then the request in progress, if any, is finished first).
pub async fn run(
    stream: TcpStream,
    peer: SocketAddr,
    state: Arc<ConnState>,
    router: Router,
    limits: Arc<HttpLimits>,
    stop: CancellationToken,
) {
    let stream = Arc::new(stream);
    let service = {
        let state = state.clone();
        let limits = limits.clone();
        hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let guard = state.request_started();
            let router = router.clone();
            let limits = limits.clone();
            async move {
                let response = answer(router, request, peer, &limits).await;
                drop(guard);
                Ok::<_, Infallible>(response)
            }
        })
    };
    // hyper's own limits sit above ours (`head_within_limits`), as a backstop: its refusals
    // come without a body, and `Io` has to rewrite them.
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .max_buf_size((2 * limits.max_head_bytes).max(16 * 1024))
        .max_headers(limits.max_headers + 16)
        .header_read_timeout(None);
    let conn = builder.serve_connection(
        hyper_util::rt::TokioIo::new(Io::new(stream.clone(), state.clone())),
        service,
    );
    let mut conn = std::pin::pin!(conn);
    let watchdog = tokio::time::sleep(limits.idle_timeout.min(limits.header_timeout));
    let mut watchdog = std::pin::pin!(watchdog);
    let mut stopping = false;
    loop {
        tokio::select! {
            _ = conn.as_mut() => {
                linger(&stream).await;
                return;
            }
            _ = state.evict.cancelled() => return,
            _ = stop.cancelled(), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = watchdog.as_mut() => match state.verdict(&limits) {
                Verdict::Wait(until) => watchdog.as_mut().reset(until),
                Verdict::CloseIdle => return,
                Verdict::WriteStalled => {
                    crate::metrics::connection_write_stalled();
                    return;
                }
                Verdict::HeadTooSlow => break,
            },
        }
    }
    // hyper is no longer polled: this second handle answers the slow head.
    answer_and_close(&stream, &canned::head_timeout());
    linger(&stream).await;
}

/// Reads and drops what the client is still sending before closing: closing a socket with
/// unread bytes makes the kernel send a reset, which can destroy the response just written
/// (a refused head or body arrives while the client is still sending). Bounded in bytes and
/// time; a client that already closed costs one read.
async fn linger(stream: &TcpStream) {
    const LINGER_BYTES: usize = 4 * 1024 * 1024;
    const LINGER_TIME: Duration = Duration::from_secs(2);
    let drain = async {
        let mut scratch = vec![0u8; 16 * 1024];
        let mut drained = 0;
        while drained < LINGER_BYTES {
            if stream.readable().await.is_err() {
                return;
            }
            match stream.try_read(&mut scratch) {
                Ok(0) => return,
                Ok(n) => drained += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(_) => return,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER_TIME, drain).await;
}

/// The router's answer, within the request deadline.
async fn answer(
    router: Router,
    mut request: hyper::Request<Incoming>,
    peer: SocketAddr,
    limits: &HttpLimits,
) -> axum::response::Response {
    if let Err(refused) = head_within_limits(&request, limits) {
        // What else this client sends on the connection is not worth reading.
        let mut response = refused.into_response();
        response.headers_mut().insert(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
        return response;
    }
    let extensions = request.extensions_mut();
    extensions.insert(BodyDeadline(Instant::now() + limits.body_timeout));
    extensions.insert(PeerAddr(peer));
    let routed = router.oneshot(request.map(Body::new));
    match tokio::time::timeout(limits.request_timeout, routed).await {
        Ok(Ok(response)) => response,
        Ok(Err(never)) => match never {},
        Err(_) => ApiError::DeadlineExceeded.into_response(),
    }
}

/// The request line and headers against the configured limits: 414 for a long URI, 431 for
/// too many or too large headers, in the failure envelope.
fn head_within_limits(
    request: &hyper::Request<Incoming>,
    limits: &HttpLimits,
) -> Result<(), ApiError> {
    let uri = request.uri().to_string().len();
    if uri > MAX_URI_BYTES.min(limits.max_head_bytes) {
        return Err(ApiError::UriTooLong);
    }
    let headers = request.headers();
    let header_bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if headers.len() > limits.max_headers || uri + header_bytes > limits.max_head_bytes {
        return Err(ApiError::HeadersTooLarge);
    }
    framing_is_unambiguous(request)
}

/// RFC 9112: an HTTP/1.1 request carries exactly one Host (section 3.2: 400 otherwise), and
/// the only transfer coding here is a single `chunked` (section 6.1: 501 for a coding the
/// server does not understand; `chunked` twice is malformed). hyper decodes the chunks of
/// `gzip, chunked` and would hand the handler compressed bytes as if they were the body.
fn framing_is_unambiguous(request: &hyper::Request<Incoming>) -> Result<(), ApiError> {
    use axum::http::{Version, header};
    let headers = request.headers();
    if request.version() == Version::HTTP_11 && headers.get_all(header::HOST).iter().count() != 1 {
        return Err(ApiError::MalformedHead(
            "an HTTP/1.1 request must carry exactly one Host header",
        ));
    }
    let mut chunked = 0;
    for value in headers.get_all(header::TRANSFER_ENCODING) {
        let Ok(value) = value.to_str() else {
            return Err(ApiError::UnsupportedTransferCoding);
        };
        for coding in value.split(',').map(str::trim).filter(|c| !c.is_empty()) {
            if !coding.eq_ignore_ascii_case("chunked") {
                return Err(ApiError::UnsupportedTransferCoding);
            }
            chunked += 1;
        }
    }
    if chunked > 1 {
        return Err(ApiError::MalformedHead(
            "Transfer-Encoding must name chunked once",
        ));
    }
    Ok(())
}

/// Longest request URI accepted (Cloudflare's edge refuses URLs over 16 KB as well).
const MAX_URI_BYTES: usize = 16 * 1024;
