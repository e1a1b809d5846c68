//! Process-wide Prometheus metrics, served at `/metrics` on the admin listener.
//!
//! Recorded with the `metrics` facade and rendered by `metrics-exporter-prometheus`, so histograms
//! (request latency, key generation time, items per chunk) come with buckets. Every metric csrd
//! exports is named here, once, with its help text; the metrics table of docs/operations.md and the
//! Grafana dashboard (checked against a real scrape by `tests/api/metrics.rs`) follow it.
//!
//! Gauges that are cheaper to read than to maintain (the Postgres pool) are sampled just
//! before each scrape; the broker's queue depths are sampled every few seconds by
//! `amqp::depth`.

use std::sync::OnceLock;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Seconds: from 1 ms to a minute (creates wait up to 30 s, RSA keygen takes 50–500 ms).
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Seconds for one key: pooled P-256 keys take microseconds, fresh RSA-2048 up to a second.
const KEYGEN_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];
const CHUNK_ITEM_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full("csrd_http_request_duration_seconds".into()),
                LATENCY_BUCKETS,
            )
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full("csrd_keygen_duration_seconds".into()),
                    KEYGEN_BUCKETS,
                )
            })
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full("csrd_chunk_items".into()),
                    CHUNK_ITEM_BUCKETS,
                )
            })
            .expect("bucket lists are non-empty")
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (a test process): csrd's handle then
        // renders nothing, which is still a valid exposition.
        let _ = metrics::set_global_recorder(recorder);
        describe_all();
        gauge!("csrd_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
        // Counters a dashboard plots exist from the start, at zero, not from their first event.
        for limit in ["rate", "in_flight", "queue_wait", "auth_failures"] {
            counter!("csrd_rate_limited_total", "limit" => limit).absolute(0);
        }
        for outcome in [
            "created",
            "replayed",
            "failed",
            "retried",
            "rejected",
            "dead_lettered",
        ] {
            counter!("csrd_jobs_total", "outcome" => outcome).absolute(0);
        }
        counter!("csrd_chunks_published_total").absolute(0);
        counter!("csrd_chunks_consumed_total").absolute(0);
        counter!("csrd_audit_events_dropped_total").absolute(0);
        counter!("csrd_trace_exports_failed_total").absolute(0);
        counter!("csrd_certificate_check_microseconds_total").absolute(0);
        gauge!("csrd_http_requests_in_flight").set(0.0);
        handle
    })
}

/// Installs the recorder (idempotent). Call before recording anything.
pub fn init() {
    handle();
}

fn describe_all() {
    describe_counter!(
        "csrd_keys_released_total",
        "Private keys released, each sealed to an approved key recipient (every one audited as key.released)"
    );
    describe_counter!(
        "csrd_key_release_denied_total",
        "Key releases refused, by reason (pending, revoked, not_found, hosts, seal); each audited as key.release_denied"
    );
    describe_counter!(
        "csrd_certificate_check_microseconds_total",
        metrics::Unit::Microseconds,
        "Time spent checking uploaded certificate chains in CPU slots (parsing and signatures)"
    );
    describe_counter!(
        "csrd_http_responses_total",
        "HTTP responses, by route template and status"
    );
    describe_histogram!(
        "csrd_http_request_duration_seconds",
        metrics::Unit::Seconds,
        "HTTP request latency, by route template and status"
    );
    describe_gauge!(
        "csrd_http_requests_in_flight",
        "HTTP requests being served now"
    );
    describe_counter!(
        "csrd_http_connections_evicted_total",
        "Idle or slow connections closed to make room at the connection cap"
    );
    describe_counter!(
        "csrd_http_connections_write_stalled_total",
        "Connections closed because the client stopped reading its response"
    );
    describe_counter!(
        "csrd_http_connections_refused_total",
        "Connections answered 503 at the connection cap"
    );
    describe_counter!(
        "csrd_rate_limited_total",
        "Requests refused with 429, by the limit exceeded"
    );
    describe_counter!(
        "csrd_jobs_total",
        "Create jobs handled by workers, by outcome"
    );
    describe_counter!(
        "csrd_chunks_published_total",
        "Chunks of create jobs published"
    );
    describe_counter!(
        "csrd_chunks_consumed_total",
        "Chunks of create jobs handled by workers"
    );
    describe_histogram!("csrd_chunk_items", "Create jobs per published chunk");
    describe_histogram!(
        "csrd_keygen_duration_seconds",
        metrics::Unit::Seconds,
        "Time to make one key and sign its CSR (pooled keys: the signing), by key type"
    );
    describe_gauge!(
        "csrd_key_pool_depth",
        "Keys generated ahead of time, by key type"
    );
    describe_counter!(
        "csrd_key_pool_taken_total",
        "Keys taken from the pool, by key type"
    );
    describe_gauge!(
        "csrd_queue_messages",
        "Messages ready in a broker queue (sampled), by queue"
    );
    describe_gauge!(
        "csrd_queue_consumers",
        "Consumers of a broker queue (sampled), by queue"
    );
    describe_gauge!(
        "csrd_db_pool_connections",
        "Postgres connections in the pool, by state"
    );
    describe_gauge!(
        "csrd_db_pool_waiting",
        "Tasks waiting for a Postgres connection"
    );
    describe_gauge!("csrd_db_pool_max", "The Postgres pool's size limit");
    describe_gauge!("csrd_build_info", "Always 1; the version as a label");
    describe_gauge!(
        "csrd_certificates_expiring",
        "Custom certificates (of every tenant) not yet expired that expire within `days` (7 or 30)"
    );
    describe_gauge!(
        "csrd_kek_wraps",
        "Records each KEK has wrapped (AES-GCM random-nonce budget: 2^32; csrd warns at 2^30)"
    );
    describe_counter!(
        "csrd_trace_exports_failed_total",
        "Span exports to the OTLP collector that failed (their spans were dropped)"
    );
    describe_counter!(
        "csrd_audit_events_dropped_total",
        "Audit events dropped because they could not be written"
    );
}

/// The Prometheus text exposition of every metric, with the Postgres pool's state as it is
/// now (the admin listener passes its process's pool).
pub fn render(db_pool: Option<deadpool_postgres::Status>) -> String {
    if let Some(status) = db_pool {
        let idle = status.available as f64;
        gauge!("csrd_db_pool_connections", "state" => "idle").set(idle);
        gauge!("csrd_db_pool_connections", "state" => "busy").set(status.size as f64 - idle);
        gauge!("csrd_db_pool_waiting").set(status.waiting as f64);
        gauge!("csrd_db_pool_max").set(status.max_size as f64);
    }
    handle().render()
}

/// A request being served (the guard counts it until dropped).
pub fn request_started() -> InFlight {
    gauge!("csrd_http_requests_in_flight").increment(1.0);
    InFlight
}

pub struct InFlight;

impl Drop for InFlight {
    fn drop(&mut self) {
        gauge!("csrd_http_requests_in_flight").decrement(1.0);
    }
}

/// One answered request, by route template (never the raw path: ids would explode the label
/// set) and status.
pub fn http_response(route: &str, status: u16, seconds: f64) {
    let labels = [("route", route.to_owned()), ("status", status.to_string())];
    counter!("csrd_http_responses_total", &labels).increment(1);
    histogram!("csrd_http_request_duration_seconds", &labels).record(seconds);
}

/// Keys waiting in a worker's pool, by key type.
/// Certificates expiring within 7 and within 30 days, across tenants (no tenant labels).
pub fn certificates_expiring(within_7: i64, within_30: i64) {
    gauge!("csrd_certificates_expiring", "days" => "7").set(within_7 as f64);
    gauge!("csrd_certificates_expiring", "days" => "30").set(within_30 as f64);
}

pub fn key_pool_depth(key_type: &str, depth: usize) {
    gauge!("csrd_key_pool_depth", "key_type" => key_type.to_owned()).set(depth as f64);
}

/// A key taken from the pool instead of generated on the spot.
pub fn key_pool_taken(key_type: &str) {
    counter!("csrd_key_pool_taken_total", "key_type" => key_type.to_owned()).increment(1);
}

/// A connection closed to make room for a new one (connection cap reached).
pub fn connection_evicted() {
    counter!("csrd_http_connections_evicted_total").increment(1);
}

/// A connection closed because its client stopped reading its response (write timeout).
pub fn connection_write_stalled() {
    counter!("csrd_http_connections_write_stalled_total").increment(1);
}

/// A connection refused with 503: every slot was serving a request.
pub fn connection_refused() {
    counter!("csrd_http_connections_refused_total").increment(1);
}

/// A request refused with 429, by what was exceeded (`rate`, `in_flight`, `auth_failures`).
pub fn rate_limited(limit: &str) {
    counter!("csrd_rate_limited_total", "limit" => limit.to_owned()).increment(1);
}

/// Audit events that could not be written (writer behind, database away too long).
pub fn audit_dropped(n: u64) {
    counter!("csrd_audit_events_dropped_total").increment(n);
}

/// A span export to the trace collector failed (collector unreachable or refusing).
pub fn trace_export_failed() {
    counter!("csrd_trace_exports_failed_total").increment(1);
}

/// Records a KEK has wrapped, ever (its nonce budget's use: the limit is 2^32).
pub fn kek_wraps(kek_id: &str, wraps: i64) {
    gauge!("csrd_kek_wraps", "kek_id" => kek_id.to_owned()).set(wraps as f64);
}

/// A finished job, by outcome (`created`, `replayed`, `failed`, `retried`, `rejected`,
/// `dead_lettered`).
pub fn job(outcome: &str) {
    jobs(outcome, 1);
}

/// `n` jobs with one outcome: one update per chunk, not one per job.
pub fn jobs(outcome: &str, n: usize) {
    if n > 0 {
        counter!("csrd_jobs_total", "outcome" => outcome.to_owned()).increment(n as u64);
    }
}

/// A chunk handed to the jobs queue by the ingress, and how many jobs it carried.
pub fn chunk_published(items: usize) {
    counter!("csrd_chunks_published_total").increment(1);
    histogram!("csrd_chunk_items").record(items as f64);
}

/// A chunk a worker finished.
pub fn chunk_handled(_items: usize) {
    counter!("csrd_chunks_consumed_total").increment(1);
}

/// Time to make one key and sign its CSR.
/// Keys released, sealed to an approved recipient.
pub fn keys_released(n: u64) {
    counter!("csrd_keys_released_total").increment(n);
}

/// A release refused, by why (`pending`, `revoked`, `not_found`, `hosts`, `seal`).
pub fn key_release_denied(reason: &'static str) {
    counter!("csrd_key_release_denied_total", "reason" => reason).increment(1);
}

/// Time one certificate-check task held a CPU slot.
pub fn certificate_check_seconds(seconds: f64) {
    counter!("csrd_certificate_check_microseconds_total").increment((seconds * 1e6) as u64);
}

pub fn keygen(key_type: &str, seconds: f64) {
    histogram!("csrd_keygen_duration_seconds", "key_type" => key_type.to_owned()).record(seconds);
}

/// A broker queue's depth and consumers, as last sampled.
pub fn queue_depth(queue: &str, messages: u32, consumers: u32) {
    gauge!("csrd_queue_messages", "queue" => queue.to_owned()).set(f64::from(messages));
    gauge!("csrd_queue_consumers", "queue" => queue.to_owned()).set(f64::from(consumers));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histograms_as_prometheus_text() {
        init();
        job("created");
        job("created");
        http_response("/x", 201, 0.003);
        let text = render(None);
        assert!(text.contains("# TYPE csrd_jobs_total counter"), "{text}");
        assert!(
            text.contains("csrd_jobs_total{outcome=\"created\"} 2"),
            "{text}"
        );
        assert!(
            text.contains(
                "csrd_http_request_duration_seconds_bucket{route=\"/x\",status=\"201\",le=\"0.005\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("csrd_build_info{version="), "{text}");
    }
}
