//! The ingress's audit writer: a bounded channel, one task appending what has accumulated.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{AuditEvent, AuditScope, AuditSink};
use crate::buckets::Buckets;
use crate::log_throttle::LogThrottle;

/// Events waiting to be written, at most; past this they are counted and dropped rather than
/// slowing requests down (a database outage must not take the API with it).
const QUEUE: usize = 50_000;
/// Events per statement, at most.
const BATCH: usize = 1_000;
/// Attempts per batch while the database is unavailable, a second apart.
const ATTEMPTS: u32 = 30;

/// Records events for the writer; cheap to clone.
#[derive(Clone)]
pub struct Auditor {
    tx: mpsc::Sender<AuditEvent>,
    /// Refused callers, per address: a flood of bad credentials must not flood the log.
    refusals: Arc<Buckets>,
}

/// Refused-caller events per address: 10 at once, then one a second.
const REFUSALS_PER_SEC: f64 = 1.0;
const REFUSALS_BURST: f64 = 10.0;

/// The writer task: it runs until `stop` and then writes what is still queued.
pub type AuditWriter = JoinHandle<()>;

impl Auditor {
    /// Starts the writer appending to `sink`.
    pub fn start(sink: Arc<dyn AuditSink>, stop: CancellationToken) -> (Self, AuditWriter) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let auditor = Self {
            tx,
            refusals: Arc::new(Buckets::new(REFUSALS_PER_SEC, REFUSALS_BURST)),
        };
        (auditor, tokio::spawn(write_events(sink, rx, stop)))
    }

    /// Records a refused caller (`auth.failure`, `access.denied`), at most as often as
    /// `REFUSALS_PER_SEC` per address; the count of those left out rides on the next one.
    pub fn record_refusal(&self, event: AuditEvent) {
        let scope = AuditScope::current().unwrap_or_default();
        let address = scope.remote_addr.clone().unwrap_or_default();
        if self.refusals.take(&address, 1.0).is_ok() {
            self.record(event);
        }
    }

    /// Records `event`, stamped with the current request's address, ids and actor.
    pub fn record(&self, event: AuditEvent) {
        let event = match AuditScope::current() {
            Some(scope) => scope.stamp(event),
            None => event,
        };
        static DROPPED: LogThrottle = LogThrottle::new();
        if self.tx.try_send(event).is_err() {
            crate::metrics::audit_dropped(1);
            if let Some(also) = DROPPED.allow() {
                tracing::warn!(
                    also,
                    "audit event dropped: the audit writer is behind or stopped"
                );
            }
        }
    }
}

async fn write_events(
    sink: Arc<dyn AuditSink>,
    mut rx: mpsc::Receiver<AuditEvent>,
    stop: CancellationToken,
) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        tokio::select! {
            received = rx.recv_many(&mut batch, BATCH) => {
                if received == 0 {
                    break;
                }
                write(&*sink, &mut batch).await;
            }
            () = stop.cancelled() => {
                rx.close();
                while rx.recv_many(&mut batch, BATCH).await > 0 {
                    write(&*sink, &mut batch).await;
                }
                break;
            }
        }
    }
}

/// Appends `batch` (retrying while the database is away) and empties it.
async fn write(sink: &dyn AuditSink, batch: &mut Vec<AuditEvent>) {
    for attempt in 1..=ATTEMPTS {
        match sink.append(batch).await {
            Ok(()) => break,
            Err(e) if attempt < ATTEMPTS && e.transient => {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => {
                tracing::error!(error = %e, events = batch.len(), "audit events could not be written");
                crate::metrics::audit_dropped(batch.len() as u64);
                break;
            }
        }
    }
    batch.clear();
}
