//! The connection watchdog: what the reads, the writes, the service and the watchdog of one
//! connection share, and the watchdog's verdict. Hand-written because hyper has no idle timeout
//! for HTTP/1, and its `header_read_timeout` starts when it begins waiting for a head (so it
//! would cut keep-alive connections at the header timeout) and closes without an answer;
//! here an idle connection is closed quietly after `idle_timeout`, and a head that started
//! arriving and did not finish within `header_timeout` gets 408 in the envelope.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::HttpLimits;

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

    pub fn request_started(self: &Arc<Self>) -> RequestGuard {
        self.busy.fetch_add(1, Ordering::AcqRel);
        self.head_since.store(0, Ordering::Relaxed);
        RequestGuard(self.clone())
    }

    /// What the watchdog should do now.
    pub fn verdict(&self, limits: &HttpLimits) -> Verdict {
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
pub struct RequestGuard(Arc<ConnState>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.idle_since.store(self.0.now(), Ordering::Relaxed);
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Wait(Instant),
    CloseIdle,
    /// The client has not read any of the response for the write timeout: dropping the
    /// connection frees the response and its buffers.
    WriteStalled,
    HeadTooSlow,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(idle_ms: u64, header_ms: u64, write_ms: u64) -> HttpLimits {
        HttpLimits {
            max_connections: 10,
            idle_timeout: Duration::from_millis(idle_ms),
            header_timeout: Duration::from_millis(header_ms),
            body_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_millis(write_ms),
            max_head_bytes: 32 * 1024,
            max_headers: 100,
        }
    }

    fn pause() {
        std::thread::sleep(Duration::from_millis(20));
    }

    #[tokio::test]
    async fn a_quiet_connection_is_closed_once_idle_for_the_idle_timeout() {
        let state = ConnState::new(1);
        assert!(matches!(
            state.verdict(&limits(60_000, 60_000, 60_000)),
            Verdict::Wait(_)
        ));
        pause();
        assert_eq!(
            state.verdict(&limits(1, 60_000, 60_000)),
            Verdict::CloseIdle
        );
    }

    #[tokio::test]
    async fn a_head_that_started_arriving_has_the_header_timeout() {
        let state = ConnState::new(1);
        state.bytes_arrived();
        pause();
        // Idle for long, but a head is on its way: the header timeout decides.
        assert!(matches!(
            state.verdict(&limits(1, 60_000, 60_000)),
            Verdict::Wait(_)
        ));
        assert_eq!(
            state.verdict(&limits(60_000, 1, 60_000)),
            Verdict::HeadTooSlow
        );
    }

    #[tokio::test]
    async fn a_request_in_progress_is_left_to_its_own_deadlines() {
        let state = Arc::new(ConnState::new(1));
        let guard = state.request_started();
        assert!(state.is_busy());
        pause();
        assert!(matches!(
            state.verdict(&limits(1, 1, 60_000)),
            Verdict::Wait(_)
        ));
        drop(guard);
        assert!(!state.is_busy());
        // Idle again from the end of the request, not from the accept.
        assert!(matches!(
            state.verdict(&limits(10_000, 60_000, 60_000)),
            Verdict::Wait(_)
        ));
    }

    #[tokio::test]
    async fn a_client_that_stops_reading_is_dropped_after_the_write_timeout() {
        let state = Arc::new(ConnState::new(1));
        let _guard = state.request_started();
        state.write_blocked();
        pause();
        assert_eq!(
            state.verdict(&limits(60_000, 60_000, 1)),
            Verdict::WriteStalled
        );
        state.write_progressed();
        assert!(matches!(
            state.verdict(&limits(60_000, 60_000, 1)),
            Verdict::Wait(_)
        ));
    }
}
