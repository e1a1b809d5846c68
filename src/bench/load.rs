//! `csrd bench create`: a bounded load against a running csrd, reporting latency percentiles.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;

use crate::domain::KeyType;

pub struct LoadPlan {
    pub base_url: String,
    pub token: String,
    /// `accounts/<id>` or `zones/<id>`.
    pub owner_path: String,
    pub key_type: KeyType,
    pub requests: usize,
    pub concurrency: usize,
}

struct Sample {
    latency: Duration,
    status: u16,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub async fn run(plan: LoadPlan) -> anyhow::Result<()> {
    if plan.requests == 0 || plan.concurrency == 0 {
        bail!("--requests and --concurrency must be at least 1");
    }
    let url = format!(
        "{}/client/v4/{}/custom_csrs",
        plan.base_url.trim_end_matches('/'),
        plan.owner_path
    );
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .context("building the HTTP client")?;
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..plan.concurrency {
        let (http, url, token, next) =
            (http.clone(), url.clone(), plan.token.clone(), next.clone());
        let (requests, key_type) = (plan.requests, plan.key_type);
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= requests {
                    break;
                }
                let body = json!({
                    "common_name": format!("load{i}.example.com"), "country": "US", "state": "California",
                    "locality": "San Francisco", "organization": "csrd load test",
                    "sans": [format!("load{i}.example.com"), format!("www.load{i}.example.com")],
                    "key_type": key_type.as_str(),
                });
                let t = Instant::now();
                let status = match http.post(&url).bearer_auth(&token).json(&body).send().await {
                    Ok(resp) => {
                        let status = resp.status().as_u16();
                        let _ = resp.bytes().await;
                        status
                    }
                    Err(_) => 0,
                };
                samples.push(Sample { latency: t.elapsed(), status });
            }
            samples
        }));
    }
    let mut samples = Vec::with_capacity(plan.requests);
    for t in tasks {
        samples.extend(t.await.context("load task")?);
    }
    let elapsed = started.elapsed();
    let mut ok: Vec<Duration> = samples
        .iter()
        .filter(|s| s.status == 201)
        .map(|s| s.latency)
        .collect();
    ok.sort();
    let mut statuses = std::collections::BTreeMap::new();
    for s in &samples {
        *statuses.entry(s.status).or_insert(0usize) += 1;
    }
    println!(
        "| key type | requests | concurrency | 201s | other statuses | throughput/s | p50 ms | p90 ms | p99 ms | max ms |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let others: Vec<String> = statuses
        .iter()
        .filter(|(s, _)| **s != 201)
        .map(|(s, n)| format!("{s}×{n}"))
        .collect();
    println!(
        "| {} | {} | {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
        plan.key_type.as_str(),
        plan.requests,
        plan.concurrency,
        ok.len(),
        if others.is_empty() {
            "-".into()
        } else {
            others.join(" ")
        },
        ok.len() as f64 / elapsed.as_secs_f64(),
        ms(percentile(&ok, 50.0)),
        ms(percentile(&ok, 90.0)),
        ms(percentile(&ok, 99.0)),
        ms(ok.last().copied().unwrap_or_default()),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&v, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&v, 100.0), Duration::from_millis(100));
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
    }
}
