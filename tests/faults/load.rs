//! The clients: each request has its own Idempotency-Key and a unique name, and is retried
//! with that key until it gets a definite answer, as a careful client would.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use csrd_test_support::ACCOUNT_A;

const CONCURRENCY: usize = 6;
/// Pacing between a client's requests, so the load spans the fault.
const PACE: Duration = Duration::from_millis(120);
/// A request still without a definite answer after this long counts as indeterminate.
const GIVE_UP: Duration = Duration::from_secs(150);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// 201: the CSR id.
    Created(String),
    /// 500/1500: the service says this create failed.
    Failed,
    /// Never a definite answer (only 503s, 202s or connection errors until GIVE_UP).
    Indeterminate,
}

#[derive(Debug, Default)]
pub struct History {
    /// Request name (unique, also the CSR's common name) → final outcome.
    pub outcomes: HashMap<String, Outcome>,
    /// Ids handed out in 201s and 202s, per request (a retry must never see another id).
    pub ids_seen: HashMap<String, Vec<String>>,
    /// Attempts in all, and how many answered what.
    pub attempts: usize,
    pub statuses: HashMap<u16, usize>,
}

/// `requests` creates from `CONCURRENCY` clients, request n going to `base_urls[n % len]`.
pub async fn run(base_urls: Vec<String>, token: String, requests: usize) -> History {
    let next = Arc::new(AtomicUsize::new(0));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(40))
        .build()
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENCY {
        let (next, http, base_urls, token) =
            (next.clone(), http.clone(), base_urls.clone(), token.clone());
        tasks.push(tokio::spawn(async move {
            let mut history = History::default();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= requests {
                    return history;
                }
                let base_url = &base_urls[n % base_urls.len()];
                one_request(&http, base_url, &token, n, &mut history).await;
                tokio::time::sleep(PACE).await;
            }
        }));
    }
    let mut all = History::default();
    for t in tasks {
        let h = t.await.unwrap();
        all.outcomes.extend(h.outcomes);
        all.ids_seen.extend(h.ids_seen);
        all.attempts += h.attempts;
        for (s, c) in h.statuses {
            *all.statuses.entry(s).or_default() += c;
        }
    }
    all
}

pub fn request_name(n: usize) -> String {
    format!("r{n}.faults.example.com")
}

async fn one_request(
    http: &reqwest::Client,
    base_url: &str,
    token: &str,
    n: usize,
    history: &mut History,
) {
    let name = request_name(n);
    let key_type = if n.is_multiple_of(4) {
        "rsa2048"
    } else {
        "p256v1"
    };
    let body = json!({
        "common_name": name, "country": "US", "state": "California", "locality": "San Francisco",
        "organization": "Fault Injection", "sans": [name], "key_type": key_type,
    });
    let key = format!("fault-{n}");
    let started = Instant::now();
    let mut backoff = Duration::from_millis(100);
    let outcome = loop {
        if started.elapsed() > GIVE_UP {
            break Outcome::Indeterminate;
        }
        history.attempts += 1;
        let sent = http
            .post(format!(
                "{base_url}/client/v4/accounts/{ACCOUNT_A}/custom_csrs"
            ))
            .bearer_auth(token)
            .header("Idempotency-Key", &key)
            .json(&body)
            .send()
            .await;
        match sent {
            Ok(resp) => {
                let status = resp.status().as_u16();
                *history.statuses.entry(status).or_default() += 1;
                let v: serde_json::Value = resp.json().await.unwrap_or_default();
                if let Some(id) = v["result"]["id"].as_str() {
                    history
                        .ids_seen
                        .entry(name.clone())
                        .or_default()
                        .push(id.to_owned());
                }
                match status {
                    201 => {
                        break Outcome::Created(
                            v["result"]["id"].as_str().unwrap_or_default().to_owned(),
                        );
                    }
                    500 => break Outcome::Failed,
                    // Pending, over the tenant's share, or unavailable: retry with the same key.
                    202 | 429 | 503 => {}
                    other => panic!("unexpected answer {other} for {name}: {v}"),
                }
            }
            Err(_) => *history.statuses.entry(0).or_default() += 1,
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    };
    history.outcomes.insert(name, outcome);
}
