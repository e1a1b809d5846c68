//! A batch in flight when a worker is SIGKILLed: its chunks go back to the queue and are made
//! by the other worker (and the replacement), each item exactly once, the batch's counts exact.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{Value, json};

use csrd_test_support::{ACCOUNT_A, broker, database, poll_until};

use super::cluster::{Cluster, Fault};

/// Items per batch; every eighth is RSA-2048, so chunks take a while to make.
fn items() -> usize {
    std::env::var("CSRD_FAULT_BATCH_ITEMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1500)
}

pub async fn worker_killed_during_a_batch() {
    let mut cluster = Cluster::start().await;
    let n = items();
    let body: Vec<Value> = (0..n)
        .map(|i| {
            let name = format!("b{i}.faults.example.com");
            json!({"common_name": name, "country": "US", "state": "California",
                   "locality": "San Francisco", "organization": "Fault Injection",
                   "sans": [name], "key_type": if i % 8 == 0 { "rsa2048" } else { "p256v1" }})
        })
        .collect();
    let http = reqwest::Client::new();
    let batches = format!(
        "{}/client/v4/accounts/{ACCOUNT_A}/custom_csrs/batches",
        cluster.base_urls()[0]
    );
    let submitted: Value = http
        .post(&batches)
        .bearer_auth(&cluster.token)
        .header("Idempotency-Key", "fault-batch")
        .json(&json!({ "items": body }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = submitted["result"]["id"]
        .as_str()
        .expect("a batch id")
        .to_owned();
    let batch_url = format!("{batches}/{id}");
    let token = cluster.token.clone();
    let progress = || async {
        let v: Value = http
            .get(&batch_url)
            .bearer_auth(&token)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        Some(v["result"].clone())
    };

    // Kill a worker once the batch is under way, with chunks certainly in flight.
    poll_until(Duration::from_secs(60), || async {
        let b = progress().await?;
        (b["done"].as_i64()? > 0).then_some(())
    })
    .await
    .expect("the batch to start");
    cluster.inject(Fault::KillWorker).await;

    let finished = poll_until(Duration::from_secs(300), || async {
        let b = progress().await?;
        b["finished_at"].is_string().then_some(b)
    })
    .await
    .expect("the batch to finish after the kill");
    println!("batch after a worker SIGKILL: {finished}");
    assert_eq!(finished["status"], "done", "{finished}");
    assert_eq!(
        finished["done"].as_i64(),
        Some(n as i64),
        "exact count, none twice"
    );
    assert_eq!(finished["failed"].as_i64(), Some(0));

    let pool = csrd::db::build_pool(&cluster.iso.database_url, 1, "csrd-faults").unwrap();
    let client = pool.get().await.unwrap();
    let names: Vec<String> = database::column(&client, "SELECT common_name FROM custom_csrs").await;
    let unique: HashSet<&String> = names.iter().collect();
    assert_eq!(
        names.len(),
        n,
        "one row per item: lost or duplicated otherwise"
    );
    assert_eq!(unique.len(), n, "no item made twice");
    let ids: HashSet<uuid::Uuid> = database::column(&client, "SELECT id FROM custom_csrs").await;
    let batch_id = uuid::Uuid::parse_str(&id).unwrap();
    let items: HashSet<uuid::Uuid> = (0..n as u32)
        .map(|i| csrd::domain::CsrId::for_batch_item(batch_id, i).0)
        .collect();
    let unexplained = ids.difference(&items).count();
    assert_eq!(unexplained, 0, "every row is an item of the batch");

    let topology = cluster.iso.topology();
    let drained = poll_until(Duration::from_secs(20), || async {
        let (jobs, dead) = broker::queued(&topology).await;
        (jobs + dead == 0).then_some(())
    })
    .await;
    assert!(drained.is_some(), "queues drained");
    cluster.stop().await;
}
