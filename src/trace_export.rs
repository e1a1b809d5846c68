//! The OTLP span exporter, quiet about an unreachable collector.
//!
//! Left alone, the SDK's batch processor logs an ERROR for every failed export: every 5 s,
//! for ever, when no collector is running (a compose stack without Jaeger, a laptop). That is
//! noise in the log, not an error in csrd: traces are optional. This wrapper says it once, as
//! a WARN when exports start failing and an INFO when they succeed again, and counts each
//! failed export in `csrd_trace_exports_failed_total`. The spans of a failed export are
//! dropped either way; the SDK is told the export succeeded so it does not log again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};

#[derive(Debug)]
pub struct QuietExporter<E> {
    inner: E,
    failing: AtomicBool,
}

impl<E> QuietExporter<E> {
    pub fn new(inner: E) -> Self {
        Self {
            inner,
            failing: AtomicBool::new(false),
        }
    }

    /// Records one export's outcome: logs only when the collector's reachability changes.
    fn observe(&self, outcome: &OTelSdkResult, spans: usize) {
        match outcome {
            Ok(()) => {
                if self.failing.swap(false, Ordering::AcqRel) {
                    tracing::info!("trace collector reachable again: exporting spans");
                }
            }
            Err(e) => {
                crate::metrics::trace_export_failed();
                if !self.failing.swap(true, Ordering::AcqRel) {
                    tracing::warn!(
                        error = %e,
                        dropped_spans = spans,
                        "trace collector unreachable: spans are dropped until it is back \
                         (said once; csrd_trace_exports_failed_total counts the failures)"
                    );
                }
            }
        }
    }
}

impl<E: SpanExporter> SpanExporter for QuietExporter<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len();
        let outcome = self.inner.export(batch).await;
        self.observe(&outcome, spans);
        Ok(())
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_sdk::error::OTelSdkError;

    #[test]
    fn only_a_change_of_reachability_flips_the_state() {
        let quiet = QuietExporter::new(());
        let down = Err(OTelSdkError::InternalFailure("connection refused".into()));
        quiet.observe(&down, 3);
        assert!(quiet.failing.load(Ordering::Acquire));
        quiet.observe(&down, 3);
        assert!(quiet.failing.load(Ordering::Acquire));
        quiet.observe(&Ok(()), 3);
        assert!(!quiet.failing.load(Ordering::Acquire));
    }
}
