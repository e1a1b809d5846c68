//! Without a batch API (Cloudflare's own answers 404): each line created on its own,
//! `8 × --concurrency` at a time, under an Idempotency-Key derived from the line, so a
//! repeated run finds the CSRs it made.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use hyper::body::Bytes;
use serde_json::{Value, json};

use super::http::{self, Call, CallFailed, limits};
use super::item::{Item, derive_key, errors_or};
use super::progress::Progress;
use super::record::Output;
use super::state::PartialWriter;
use super::{Api, Budgets};

pub async fn run(
    api: &Api,
    budgets: &Budgets,
    concurrency: usize,
    items: Vec<Item>,
    writer: &Arc<PartialWriter>,
    progress: &Arc<Progress>,
) -> anyhow::Result<()> {
    let semaphore = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1) * 8));
    let mut tasks = tokio::task::JoinSet::new();
    for item in items {
        let (api, budgets) = (api.clone(), *budgets);
        let (writer, progress) = (writer.clone(), progress.clone());
        let semaphore = semaphore.clone();
        tasks.spawn(async move {
            let _permit = semaphore.acquire_owned().await;
            let output = create_one(&api, &budgets, &item).await?;
            writer.append(&[Output::from_value(output)])?;
            progress.advance(1);
            anyhow::Ok(())
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.context("a create task panicked")??;
    }
    Ok(())
}

/// One create, repeated under its derived key while it is answered 202 (accepted, still being
/// made: asking again waits for the same CSR), for at most the stall budget.
async fn create_one(api: &Api, budgets: &Budgets, item: &Item) -> Result<Value, CallFailed> {
    let key = derive_key("line", api.owner_path(), std::slice::from_ref(item));
    let url = api.csrs_url("");
    let body = Bytes::from(item.body.clone());
    let started = Instant::now();
    loop {
        let answer = http::call(
            api,
            budgets,
            Call {
                what: "creating a CSR",
                method: reqwest::Method::POST,
                url: &url,
                idempotency_key: Some(&key),
                json_body: Some(body.clone()),
                limit: limits::CREATE,
            },
        )
        .await?;
        let line = item.line;
        match answer.status {
            200 | 201 => {
                let mut result = answer.json()["result"].take();
                let Value::Object(csr) = &mut result else {
                    return Err(CallFailed(format!(
                        "creating the CSR of line {line}: the API's answer ({}) holds no CSR",
                        answer.status
                    )));
                };
                csr.insert("line".into(), json!(line));
                return Ok(result);
            }
            202 if started.elapsed() >= budgets.stall => {
                return Err(CallFailed(format!(
                    "the CSR of line {line} was still being made after {} s (--stall-timeout): \
                     stopped; run the same command again to pick it up",
                    budgets.stall.as_secs()
                )));
            }
            202 => tokio::time::sleep(http::RETRY_FLOOR).await,
            status => {
                return Ok(json!({"line": line, "errors": errors_or(
                    &answer.json()["errors"],
                    &format!("the API answered {status}"),
                )}));
            }
        }
    }
}
