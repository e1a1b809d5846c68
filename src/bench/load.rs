//! `csrd bench create`: a bounded load against a running csrd — single creates at a given
//! concurrency and key-type mix, or batches — reporting throughput, latency percentiles from an
//! HDR histogram, and answers by status.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use serde_json::{Value, json};

use crate::client::Api;
use crate::client::progress::Progress;
use crate::domain::KeyType;

pub struct LoadPlan {
    pub api: Api,
    /// Key types with weights; request `i` takes the type its position in the cycle gives.
    pub mix: Vec<(KeyType, u32)>,
    pub requests: usize,
    pub concurrency: usize,
    /// Submit batches of this many items instead of single creates.
    pub batch_size: Option<usize>,
    /// Also write the report as JSON here.
    pub json: Option<PathBuf>,
}

/// `p256v1`, or a weighted mix such as `p256v1=3,rsa2048=1`.
pub fn parse_mix(spec: &str) -> anyhow::Result<Vec<(KeyType, u32)>> {
    let mut mix = Vec::new();
    for part in spec.split(',') {
        let (name, weight) = part.split_once('=').unwrap_or((part, "1"));
        let key_type = KeyType::parse(name.trim()).with_context(|| {
            format!("unknown key type {name:?}: use rsa2048, p256v1, rsa3072, rsa4096 or p384")
        })?;
        let weight: u32 = weight
            .trim()
            .parse()
            .context("a weight is a whole number")?;
        if weight > 0 {
            mix.push((key_type, weight));
        }
    }
    if mix.is_empty() {
        bail!("the key-type mix is empty");
    }
    Ok(mix)
}

fn key_type_of(mix: &[(KeyType, u32)], i: usize) -> KeyType {
    let total: u32 = mix.iter().map(|(_, w)| w).sum();
    let mut slot = (i as u64 % u64::from(total)) as u32;
    for (key_type, weight) in mix {
        if slot < *weight {
            return *key_type;
        }
        slot -= weight;
    }
    mix[0].0
}

fn body(i: usize, key_type: KeyType) -> Value {
    let cn = format!("load{i}-{}.example.com", std::process::id());
    json!({
        "common_name": cn, "country": "US", "state": "California",
        "locality": "San Francisco", "organization": "csrd load test",
        "sans": [cn], "key_type": key_type.as_str(),
    })
}

/// What the load saw.
struct Tally {
    latency_us: Histogram<u64>,
    statuses: BTreeMap<u16, usize>,
    items_ok: usize,
}

impl Tally {
    fn new() -> Self {
        Self {
            // 1 µs to 10 min, 3 significant digits.
            latency_us: Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds"),
            statuses: BTreeMap::new(),
            items_ok: 0,
        }
    }

    fn merge(&mut self, other: Tally) {
        self.latency_us.add(&other.latency_us).ok();
        for (s, n) in other.statuses {
            *self.statuses.entry(s).or_default() += n;
        }
        self.items_ok += other.items_ok;
    }

    fn record(&mut self, latency: Duration, status: u16, ok_items: usize) {
        let us = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        self.latency_us.saturating_record(us);
        *self.statuses.entry(status).or_default() += 1;
        self.items_ok += ok_items;
    }
}

pub async fn run(plan: LoadPlan) -> anyhow::Result<()> {
    if plan.requests == 0 || plan.concurrency == 0 {
        bail!("--requests and --concurrency must be at least 1");
    }
    let units = match plan.batch_size {
        Some(size) => plan.requests.div_ceil(size.max(1)),
        None => plan.requests,
    };
    preflight(&plan.api).await?;
    let progress = Arc::new(Progress::new("load", plan.requests as u64, 0));
    let next = Arc::new(AtomicUsize::new(0));
    let plan = Arc::new(plan);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..plan.concurrency {
        let (plan, next, progress) = (plan.clone(), next.clone(), progress.clone());
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::new();
            loop {
                let unit = next.fetch_add(1, Ordering::Relaxed);
                if unit >= units {
                    return tally;
                }
                let done = match plan.batch_size {
                    None => single(&plan, unit, &mut tally).await,
                    Some(size) => batch(&plan, unit, size, &mut tally).await,
                };
                progress.advance(done as u64);
            }
        }));
    }
    let mut tally = Tally::new();
    for t in tasks {
        tally.merge(t.await.context("load task")?);
    }
    progress.finish();
    report(&plan, &tally, started.elapsed())?;
    if tally.items_ok == 0 {
        bail!("created nothing: every answer was a failure (see the answers column)");
    }
    Ok(())
}

/// Refuses to measure nothing: the API must answer, and take the token, before the load.
async fn preflight(api: &crate::client::Api) -> anyhow::Result<()> {
    let url = api.csrs_url("?per_page=5");
    eprintln!("csrd bench: loading {}", api.csrs_url(""));
    let resp = api
        .http()
        .get(&url)
        .bearer_auth(api.token())
        .send()
        .await
        .with_context(|| {
            format!("nothing answers at {url}: start csrd (csrd serve) or pass --base-url")
        })?;
    match resp.status().as_u16() {
        200 => Ok(()),
        401 | 403 => bail!(
            "{url} refused the token ({}): pass a write token for this account or zone",
            resp.status()
        ),
        _ => bail!(
            "{url} answered {}: is this a csrd (or Cloudflare API) base URL?",
            resp.status()
        ),
    }
}

/// One create; returns the items it settled.
async fn single(plan: &LoadPlan, i: usize, tally: &mut Tally) -> usize {
    let key_type = key_type_of(&plan.mix, i);
    let started = Instant::now();
    let sent = plan
        .api
        .http()
        .post(plan.api.csrs_url(""))
        .bearer_auth(plan.api.token())
        .json(&body(i, key_type))
        .send()
        .await;
    let status = match sent {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let _ = resp.bytes().await;
            status
        }
        Err(_) => 0,
    };
    tally.record(started.elapsed(), status, usize::from(status == 201));
    1
}

/// One batch, from submission to its last result; returns the items it settled.
async fn batch(plan: &LoadPlan, unit: usize, size: usize, tally: &mut Tally) -> usize {
    let first = unit * size;
    let last = (first + size).min(plan.requests);
    let items: Vec<Value> = (first..last)
        .map(|i| body(i, key_type_of(&plan.mix, i)))
        .collect();
    let started = Instant::now();
    let http = plan.api.http();
    let submitted = http
        .post(plan.api.csrs_url("/batches"))
        .bearer_auth(plan.api.token())
        .json(&json!({ "items": items }))
        .send()
        .await;
    let (status, id) = match submitted {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let v: Value = resp.json().await.unwrap_or_default();
            (status, v["result"]["id"].as_str().map(str::to_owned))
        }
        Err(_) => (0, None),
    };
    let Some(id) = id.filter(|_| status == 202) else {
        tally.record(started.elapsed(), status, 0);
        return last - first;
    };
    let url = plan.api.csrs_url(&format!("/batches/{id}"));
    let mut pause = Duration::from_millis(20);
    let done = loop {
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(500));
        let Ok(resp) = http.get(&url).bearer_auth(plan.api.token()).send().await else {
            continue;
        };
        let v: Value = resp.json().await.unwrap_or_default();
        if v["result"]["finished_at"].is_string() {
            break v["result"]["done"].as_u64().unwrap_or(0) as usize;
        }
    };
    tally.record(started.elapsed(), status, done);
    last - first
}

fn report(plan: &LoadPlan, tally: &Tally, elapsed: Duration) -> anyhow::Result<()> {
    let ms = |q: f64| tally.latency_us.value_at_quantile(q) as f64 / 1000.0;
    let mix: Vec<String> = plan
        .mix
        .iter()
        .map(|(k, w)| format!("{}={w}", k.as_str()))
        .collect();
    let mode = match plan.batch_size {
        Some(n) => format!("batches of {n}"),
        None => "single creates".into(),
    };
    let throughput = tally.items_ok as f64 / elapsed.as_secs_f64();
    let statuses: Vec<String> = tally
        .statuses
        .iter()
        .map(|(s, n)| format!("{s}×{n}"))
        .collect();
    println!(
        "| mode | key types | requests | concurrency | created | created/s | p50 ms | p90 ms | p99 ms | max ms | answers |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {mode} | {} | {} | {} | {} | {throughput:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {} |",
        mix.join(","),
        plan.requests,
        plan.concurrency,
        tally.items_ok,
        ms(0.5),
        ms(0.9),
        ms(0.99),
        tally.latency_us.max() as f64 / 1000.0,
        statuses.join(" "),
    );
    if let Some(path) = &plan.json {
        let report = json!({
            "mode": mode, "key_types": mix, "requests": plan.requests,
            "concurrency": plan.concurrency, "created": tally.items_ok,
            "elapsed_s": elapsed.as_secs_f64(), "created_per_s": throughput,
            "latency_ms": {"p50": ms(0.5), "p90": ms(0.9), "p99": ms(0.99),
                           "max": tally.latency_us.max() as f64 / 1000.0},
            "answers": tally.statuses.iter().map(|(s, n)| (s.to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
        });
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mix_cycles_by_weight() {
        let mix = parse_mix("p256v1=3,rsa2048=1").unwrap();
        let types: Vec<KeyType> = (0..8).map(|i| key_type_of(&mix, i)).collect();
        assert_eq!(types.iter().filter(|k| **k == KeyType::Rsa2048).count(), 2);
        assert_eq!(parse_mix("p256v1").unwrap(), vec![(KeyType::P256v1, 1)]);
        assert!(parse_mix("dsa").is_err());
        assert!(parse_mix("p256v1=0").is_err());
    }

    #[test]
    fn the_histogram_reports_quantiles() {
        let mut t = Tally::new();
        for ms in 1..=100 {
            t.record(Duration::from_millis(ms), 201, 1);
        }
        let p50 = t.latency_us.value_at_quantile(0.5);
        assert!((49_000..=51_000).contains(&p50), "{p50}");
        assert_eq!(t.items_ok, 100);
        assert_eq!(t.statuses[&201], 100);
    }
}
