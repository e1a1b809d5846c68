//! Process-wide Prometheus metrics, rendered in the text exposition format at `/metrics`.
//!
//! A handful of counters and sums is all csrd needs, so they live in one small map rather
//! than behind a metrics framework.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Mutex, OnceLock};

struct Family {
    help: &'static str,
    kind: &'static str,
    samples: BTreeMap<String, f64>,
}

fn registry() -> &'static Mutex<BTreeMap<&'static str, Family>> {
    static REGISTRY: OnceLock<Mutex<BTreeMap<&'static str, Family>>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

fn add(
    name: &'static str,
    help: &'static str,
    kind: &'static str,
    labels: &[(&str, &str)],
    value: f64,
) {
    let labels = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect::<Vec<_>>()
        .join(",");
    let mut reg = registry().lock().unwrap_or_else(|p| p.into_inner());
    let family = reg.entry(name).or_insert_with(|| Family {
        help,
        kind,
        samples: BTreeMap::new(),
    });
    *family.samples.entry(labels).or_default() += value;
}

fn set(name: &'static str, help: &'static str, labels: &[(&str, &str)], value: f64) {
    let labels = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{v}\""))
        .collect::<Vec<_>>()
        .join(",");
    let mut reg = registry().lock().unwrap_or_else(|p| p.into_inner());
    let family = reg.entry(name).or_insert_with(|| Family {
        help,
        kind: "gauge",
        samples: BTreeMap::new(),
    });
    family.samples.insert(labels, value);
}

/// Keys waiting in a worker's pool, by key type.
pub fn key_pool_depth(key_type: &str, depth: usize) {
    set(
        "csrd_key_pool_depth",
        "Pre-generated keys waiting in this process's pool",
        &[("key_type", key_type)],
        depth as f64,
    );
}

/// A create served from the key pool.
pub fn key_pool_taken(key_type: &str) {
    add(
        "csrd_key_pool_taken_total",
        "Keys taken from the pre-generated pool",
        "counter",
        &[("key_type", key_type)],
        1.0,
    );
}

/// An HTTP response, by route template and status.
pub fn http_response(route: &str, status: u16) {
    add(
        "csrd_http_responses_total",
        "HTTP responses by route and status",
        "counter",
        &[("route", route), ("status", &status.to_string())],
        1.0,
    );
}

/// A connection closed to make room for a new one (connection cap reached).
pub fn connection_evicted() {
    add(
        "csrd_http_connections_evicted_total",
        "Idle or slow connections closed to make room at the connection cap",
        "counter",
        &[],
        1.0,
    );
}

/// A connection refused with 503: every slot was serving a request.
pub fn connection_refused() {
    add(
        "csrd_http_connections_refused_total",
        "Connections answered 503 at the connection cap",
        "counter",
        &[],
        1.0,
    );
}

/// A request refused with 429, by what was exceeded (`rate`, `in_flight`, `auth_failures`).
pub fn rate_limited(limit: &str) {
    add(
        "csrd_rate_limited_total",
        "Requests refused with 429, by the limit exceeded",
        "counter",
        &[("limit", limit)],
        1.0,
    );
}

/// Audit events that could not be written (writer behind, database away too long).
pub fn audit_dropped(n: u64) {
    add(
        "csrd_audit_events_dropped_total",
        "Audit events dropped because they could not be written",
        "counter",
        &[],
        n as f64,
    );
}

/// Records a KEK has wrapped, ever (its nonce budget's use: the limit is 2^32).
pub fn kek_wraps(kek_id: &str, wraps: i64) {
    set(
        "csrd_kek_wraps",
        "Records each KEK has wrapped (AES-GCM random-nonce budget: 2^32; csrd warns at 2^30)",
        &[("kek_id", kek_id)],
        wraps as f64,
    );
}

/// A finished job, by outcome (`created`, `replayed`, `failed`, `retried`, `rejected`).
pub fn job(outcome: &str) {
    jobs(outcome, 1);
}

/// `n` jobs with one outcome: one registry update per chunk, not one per job.
pub fn jobs(outcome: &str, n: usize) {
    if n > 0 {
        add(
            "csrd_jobs_total",
            "Create jobs handled by workers, by outcome",
            "counter",
            &[("outcome", outcome)],
            n as f64,
        );
    }
}

/// A chunk handed to the jobs queue by the ingress, and how many jobs it carried.
pub fn chunk_published(items: usize) {
    add(
        "csrd_chunks_published_total",
        "Chunks of create jobs published",
        "counter",
        &[],
        1.0,
    );
    add(
        "csrd_chunk_items_published_total",
        "Create jobs published inside chunks",
        "counter",
        &[],
        items as f64,
    );
}

/// A chunk a worker finished, and how many jobs it carried.
pub fn chunk_handled(items: usize) {
    add(
        "csrd_chunks_handled_total",
        "Chunks of create jobs handled by workers",
        "counter",
        &[],
        1.0,
    );
    add(
        "csrd_chunk_items_handled_total",
        "Create jobs handled inside chunks",
        "counter",
        &[],
        items as f64,
    );
}

/// Time spent generating a key and signing its CSR.
pub fn keygen(key_type: &str, seconds: f64) {
    keygens(key_type, 1, seconds);
}

/// `n` key generations taking `seconds` in all (one group of a chunk).
pub fn keygens(key_type: &str, n: usize, seconds: f64) {
    add(
        "csrd_keygen_seconds_sum",
        "Key generation and CSR signing time",
        "counter",
        &[("key_type", key_type)],
        seconds,
    );
    add(
        "csrd_keygen_seconds_count",
        "Key generations",
        "counter",
        &[("key_type", key_type)],
        n as f64,
    );
}

pub fn render() -> String {
    let reg = registry().lock().unwrap_or_else(|p| p.into_inner());
    let mut out = String::new();
    for (name, family) in reg.iter() {
        let _ = writeln!(out, "# HELP {name} {}", family.help);
        let _ = writeln!(out, "# TYPE {name} {}", family.kind);
        for (labels, value) in &family.samples {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        job("created");
        job("created");
        let text = render();
        assert!(text.contains("# TYPE csrd_jobs_total counter"));
        assert!(
            text.contains("csrd_jobs_total{outcome=\"created\"} 2"),
            "{text}"
        );
    }
}
