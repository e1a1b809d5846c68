//! One connection: hyper's HTTP/1.1 connection, driven beside its watchdog
//! ([`super::watchdog`]), with the request head checked against csrd's limits before the
//! router sees it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
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
use super::watchdog::{ConnState, Verdict};
use super::{HttpLimits, canned};
use crate::http::ApiError;

/// When the body of the current request must have arrived; `extract` enforces it.
#[derive(Debug, Clone, Copy)]
pub struct BodyDeadline(pub Instant);

/// The peer's address, for limits keyed by client.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

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
    // half_close: hyper does not read ahead while a request is in progress (it would do so
    // only to notice a client that hung up). That read-ahead grew a second 8 KiB read buffer
    // for every open request: 376 MB of a 10,000-open-creates heap profile. A client that
    // hangs up is still noticed when its answer is written, and an accepted create goes on
    // either way.
    builder
        .half_close(true)
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
    answer_and_close(&stream, &canned::response(&ApiError::HeadTimeout));
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

/// The router's answer (the request deadline is a layer on the router: `super::serve`).
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
    match router.oneshot(request.map(Body::new)).await {
        Ok(response) => response,
        Err(never) => match never {},
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
    if let Some(host) = headers.get(header::HOST)
        && !is_host_value(host.as_bytes())
    {
        return Err(ApiError::MalformedHead(
            "the Host header must be one host, optionally with a port",
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

/// RFC 9112 section 3.2: `Host = uri-host [ ":" port ]` (empty where the target has no
/// authority). A list (`a, b`), user information or spaces make it ambiguous which host was
/// meant: 400.
fn is_host_value(value: &[u8]) -> bool {
    if value.is_empty() {
        return true;
    }
    if value
        .iter()
        .any(|b| matches!(b, b',' | b'@' | b'/' | b'?' | b'#') || b.is_ascii_whitespace())
    {
        return false;
    }
    let Ok(value) = std::str::from_utf8(value) else {
        return false;
    };
    // The port, when there is one, is digits (the http crate takes `a:port` as a host).
    let port = match value.rsplit_once(':') {
        Some((host, _)) if !host.ends_with(']') && host.contains(':') => None,
        Some((_, port)) => Some(port),
        None => None,
    };
    port.is_none_or(|p| p.bytes().all(|b| b.is_ascii_digit()))
        && value.parse::<axum::http::uri::Authority>().is_ok()
}

/// Longest request URI accepted (Cloudflare's edge refuses URLs over 16 KB as well).
const MAX_URI_BYTES: usize = 16 * 1024;
