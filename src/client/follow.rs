//! Following one accepted batch to its end: polling its status until it finishes, then reading
//! its results page by page. Every answer is checked against what was submitted; one that
//! cannot be read, or a batch that makes no progress for the stall budget, stops the run (the
//! batch is found again under its key when the same command is run again).

use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::http::{self, Answer, Call, CallFailed, limits};
use super::item::{Item, errors_or};
use super::record::Output;
use super::{Api, Budgets};

/// Results asked for per page. A result is at most ~95 KB (150 SANs of 253 characters, in
/// the list and again in the CSR's PEM), so a page stays under 10 MB, well inside
/// [`limits::RESULTS_PAGE`].
const PER_PAGE: usize = 100;
/// The pause between polls grows from the first to the last.
const FIRST_POLL: Duration = Duration::from_millis(100);
const LAST_POLL: Duration = Duration::from_secs(2);

#[derive(Deserialize)]
struct Envelope<T> {
    result: T,
}

/// A batch as the API describes it (fields the client does not use are ignored).
#[derive(Deserialize)]
struct BatchState {
    id: String,
    total: u64,
    done: u64,
    failed: u64,
    finished_at: Option<String>,
}

#[derive(Deserialize)]
struct ResultEntry {
    index: usize,
    #[serde(default)]
    id: Value,
    status: String,
    /// Passed on as the API wrote it (see `record`).
    #[serde(default)]
    result: Option<Box<RawValue>>,
    #[serde(default)]
    errors: Value,
}

/// `accepted` is the 202 answer to the submission of `items`. Returns one output per item.
pub async fn collect(
    api: &Api,
    budgets: &Budgets,
    accepted: &Answer,
    items: &[Item],
) -> Result<Vec<Output>, CallFailed> {
    let mut state = accepted
        .parse::<Envelope<BatchState>>("submitting a batch")?
        .result;
    // The id goes into URLs: only a real batch id may.
    let id = uuid::Uuid::parse_str(&state.id)
        .map_err(|_| {
            CallFailed(format!(
                "the API accepted a batch under the id {:?}, which is not a batch id",
                state.id
            ))
        })?
        .to_string();
    if state.total != items.len() as u64 {
        return Err(CallFailed(format!(
            "the API accepted batch {id} of {} items, but {} were submitted",
            state.total,
            items.len()
        )));
    }
    let url = api.csrs_url(&format!("/batches/{id}"));
    let mut settled = state.done + state.failed;
    let mut progressed = Instant::now();
    let mut pause = FIRST_POLL;
    while state.finished_at.is_none() {
        if progressed.elapsed() >= budgets.stall {
            return Err(CallFailed(format!(
                "batch {id} made no progress for {} s ({settled} of {} items settled; \
                 --stall-timeout): stopped; run the same command again to pick it up",
                budgets.stall.as_secs(),
                state.total
            )));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(LAST_POLL);
        let answer = get(api, budgets, "polling a batch", &url, limits::STATUS).await?;
        state = answer
            .parse::<Envelope<BatchState>>("polling a batch")?
            .result;
        if state.done + state.failed > settled {
            settled = state.done + state.failed;
            progressed = Instant::now();
        }
    }
    results(api, budgets, &id, &url, items).await
}

async fn results(
    api: &Api,
    budgets: &Budgets,
    id: &str,
    url: &str,
    items: &[Item],
) -> Result<Vec<Output>, CallFailed> {
    let mut outputs: Vec<Option<Output>> = vec![None; items.len()];
    let mut found = 0;
    for page in 1..=items.len().div_ceil(PER_PAGE) {
        let answer = get(
            api,
            budgets,
            "reading a batch's results",
            &format!("{url}/results?per_page={PER_PAGE}&page={page}"),
            limits::RESULTS_PAGE,
        )
        .await?;
        let entries = answer
            .parse::<Envelope<Vec<ResultEntry>>>("reading a batch's results")?
            .result;
        if entries.is_empty() {
            break;
        }
        for entry in entries {
            let Some(slot) = outputs.get_mut(entry.index) else {
                return Err(CallFailed(format!(
                    "batch {id}: the API gave a result for item {}, of {} submitted",
                    entry.index,
                    items.len()
                )));
            };
            if slot.is_none() {
                *slot = Some(output(id, entry, items)?);
                found += 1;
            }
        }
    }
    if found < items.len() {
        return Err(CallFailed(format!(
            "batch {id} finished, but the API gave results for {found} of its {} items",
            items.len()
        )));
    }
    Ok(outputs.into_iter().flatten().collect())
}

fn output(batch: &str, entry: ResultEntry, items: &[Item]) -> Result<Output, CallFailed> {
    let line = items[entry.index].line;
    Ok(match entry.status.as_str() {
        "created" => entry
            .result
            .as_deref()
            .and_then(|csr| Output::created(line, csr))
            .ok_or_else(|| {
                CallFailed(format!(
                    "batch {batch}: item {} is created but its result is not a CSR",
                    entry.index
                ))
            })?,
        "deleted" => Output::from_value(
            json!({"line": line, "id": entry.id, "errors": [{"code": 1419, "message": "created, then deleted"}]}),
        ),
        status => Output::from_value(json!({"line": line, "id": entry.id, "errors": errors_or(
            &entry.errors,
            &format!("the item ended {status:?} without errors"),
        )})),
    })
}

async fn get(
    api: &Api,
    budgets: &Budgets,
    what: &str,
    url: &str,
    limit: usize,
) -> Result<Answer, CallFailed> {
    let answer = http::call(
        api,
        budgets,
        Call {
            what,
            method: reqwest::Method::GET,
            url,
            idempotency_key: None,
            json_body: None,
            limit,
        },
    )
    .await?;
    if answer.status != 200 {
        return Err(CallFailed(format!(
            "{what}: the API answered {}: {}",
            answer.status,
            answer.errors()
        )));
    }
    Ok(answer)
}
