//! `csrd batch`: create a CSR for every line of an input file, resumably.
//!
//! Valid input lines are cut into groups, submitted to the batch API (each group with an
//! Idempotency-Key derived from its items, so a resubmission finds the same batch), followed to
//! the end and collected. Each finished group's output lines are appended to a state file beside
//! the output (`<output>.partial`); a run that was interrupted (Ctrl-C, kill, crash) and started
//! again skips what that file holds and resubmits the rest under the same keys, so nothing is
//! created twice. The output is written, in input order, once everything is settled.
//!
//! Against an API without batches (Cloudflare's own: the route answers 404), each line is
//! created on its own, concurrently, with an Idempotency-Key derived from the line: as safe to
//! repeat, just slower.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::Api;
use super::input::{self, InputLine};
use super::progress::Progress;

pub struct BatchPlan {
    pub api: Api,
    pub input: PathBuf,
    pub output: PathBuf,
    /// Items per submitted batch (at most 10,000).
    pub group_size: usize,
    /// Batches (or, without the batch API, single creates) in flight at once.
    pub concurrency: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub created: usize,
    pub failed: usize,
}

/// Why a request was not answered in a way the run can use.
#[derive(Debug, thiserror::Error)]
enum CallError {
    /// The endpoint has no batch API (404).
    #[error("the API has no batch endpoint")]
    NoBatchApi,
    /// Nothing later can fix this (bad token, changed input).
    #[error("{0}")]
    Fatal(String),
}

/// The state file beside `output`.
pub fn partial_path(output: &Path) -> PathBuf {
    let mut name = output.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    output.with_file_name(name)
}

pub async fn run(plan: BatchPlan) -> anyhow::Result<Summary> {
    let lines = input::read(&plan.input)?;
    let partial = partial_path(&plan.output);
    let done = load_partial(&partial)?;
    let todo: Vec<(usize, Value)> = lines
        .iter()
        .filter(|l| !done.contains_key(&l.line))
        .filter_map(|l| l.body.as_ref().ok().map(|b| (l.line, b.clone())))
        .collect();
    let valid = lines.iter().filter(|l| l.body.is_ok()).count();
    if !done.is_empty() {
        eprintln!(
            "resuming: {} of {valid} lines already settled ({})",
            done.len(),
            partial.display()
        );
    }
    let writer = Arc::new(PartialWriter::open(&partial)?);
    let progress = Arc::new(Progress::new("batch", valid as u64, done.len() as u64));

    let groups: Vec<Vec<(usize, Value)>> = todo
        .chunks(
            plan.group_size
                .clamp(1, crate::domain::batch::MAX_BATCH_ITEMS),
        )
        .map(<[_]>::to_vec)
        .collect();
    let leftover = run_batches(&plan, groups, &writer, &progress).await?;
    if !leftover.is_empty() {
        eprintln!("the API has no batch endpoint: creating each CSR on its own");
        run_singles(&plan, leftover, &writer, &progress).await?;
    }
    progress.finish();

    let mut settled = load_partial(&partial)?;
    let summary = write_output(&plan.output, &lines, &mut settled)?;
    std::fs::remove_file(&partial).ok();
    Ok(summary)
}

/// Runs the groups through the batch API, `concurrency` at a time. Returns the lines left to
/// create one by one (all of them when the API has no batches).
async fn run_batches(
    plan: &BatchPlan,
    groups: Vec<Vec<(usize, Value)>>,
    writer: &Arc<PartialWriter>,
    progress: &Arc<Progress>,
) -> anyhow::Result<Vec<(usize, Value)>> {
    let semaphore = Arc::new(tokio::sync::Semaphore::new(plan.concurrency.max(1)));
    let no_batches = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    for group in groups {
        let (api, writer, progress) = (plan.api.clone(), writer.clone(), progress.clone());
        let (semaphore, no_batches) = (semaphore.clone(), no_batches.clone());
        tasks.spawn(async move {
            let _permit = semaphore.acquire_owned().await;
            if no_batches.load(std::sync::atomic::Ordering::SeqCst) {
                return Ok(group);
            }
            match run_group(&api, group.clone()).await {
                Ok(outputs) => {
                    writer.append(&outputs)?;
                    progress.advance(outputs.len() as u64);
                    Ok(Vec::new())
                }
                Err(CallError::NoBatchApi) => {
                    no_batches.store(true, std::sync::atomic::Ordering::SeqCst);
                    Ok(group)
                }
                Err(CallError::Fatal(e)) => bail!(e),
            }
        });
    }
    let mut leftover = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        leftover.extend(joined.context("a batch task panicked")??);
    }
    leftover.sort_by_key(|(line, _)| *line);
    Ok(leftover)
}

/// Submits one group (again, under the same key, after an interruption), waits for its batch
/// and returns one output object per line. Lines the API rejects are answered with their
/// errors and the rest resubmitted.
async fn run_group(api: &Api, mut lines: Vec<(usize, Value)>) -> Result<Vec<Value>, CallError> {
    let mut outputs = Vec::new();
    while !lines.is_empty() {
        let key = derive_key("batch", api.owner_path(), &lines);
        let body = json!({ "items": lines.iter().map(|(_, b)| b).collect::<Vec<_>>() });
        let (status, answer) = call(
            api,
            reqwest::Method::POST,
            &api.csrs_url("/batches"),
            Some(&key),
            Some(&body),
        )
        .await?;
        match status {
            202 => {
                let id = answer["result"]["id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                outputs.extend(collect(api, &id, &lines).await?);
                return Ok(outputs);
            }
            404 => return Err(CallError::NoBatchApi),
            400 => {
                let rejected = rejected_items(&answer);
                if rejected.is_empty() {
                    // Not about one item: every line gets the errors.
                    let errors = answer["errors"].clone();
                    outputs.extend(
                        lines
                            .iter()
                            .map(|(line, _)| json!({"line": line, "errors": errors})),
                    );
                    return Ok(outputs);
                }
                let mut kept = Vec::new();
                for (i, (line, body)) in lines.into_iter().enumerate() {
                    match rejected.get(&i) {
                        Some(errors) => outputs.push(json!({"line": line, "errors": errors})),
                        None => kept.push((line, body)),
                    }
                }
                lines = kept;
            }
            422 => {
                return Err(CallError::Fatal(
                    "the API refused an Idempotency-Key derived from this input (changed since the \
                     interrupted run?): delete the .partial file to start afresh"
                        .into(),
                ));
            }
            other => return Err(fatal(other, &answer)),
        }
    }
    Ok(outputs)
}

/// Errors of a 400 by item index, from their `/items/<k>/…` pointers (pointers re-based to
/// the item).
fn rejected_items(answer: &Value) -> BTreeMap<usize, Vec<Value>> {
    let mut by_item: BTreeMap<usize, Vec<Value>> = BTreeMap::new();
    for e in answer["errors"].as_array().into_iter().flatten() {
        let Some(pointer) = e["source"]["pointer"].as_str() else {
            continue;
        };
        let Some(rest) = pointer.strip_prefix("/items/") else {
            continue;
        };
        let (index, within) = rest.split_once('/').map_or((rest, ""), |(i, w)| (i, w));
        let Ok(index) = index.parse::<usize>() else {
            continue;
        };
        let mut e = e.clone();
        e["source"]["pointer"] = json!(if within.is_empty() {
            String::new()
        } else {
            format!("/{within}")
        });
        by_item.entry(index).or_default().push(e);
    }
    by_item
}

/// Waits for the batch to finish and reads its results.
async fn collect(api: &Api, id: &str, lines: &[(usize, Value)]) -> Result<Vec<Value>, CallError> {
    let url = api.csrs_url(&format!("/batches/{id}"));
    let mut pause = Duration::from_millis(100);
    loop {
        let (status, answer) = call(api, reqwest::Method::GET, &url, None, None).await?;
        if status != 200 {
            return Err(fatal(status, &answer));
        }
        if answer["result"]["finished_at"].is_string() {
            break;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(1));
    }
    let mut outputs = Vec::with_capacity(lines.len());
    let mut page = 1;
    loop {
        let (status, answer) = call(
            api,
            reqwest::Method::GET,
            &format!("{url}/results?per_page=1000&page={page}"),
            None,
            None,
        )
        .await?;
        if status != 200 {
            return Err(fatal(status, &answer));
        }
        let entries = answer["result"].as_array().cloned().unwrap_or_default();
        if entries.is_empty() {
            break;
        }
        for entry in entries {
            let index = entry["index"].as_u64().unwrap_or(u64::MAX) as usize;
            let Some((line, _)) = lines.get(index) else {
                continue;
            };
            outputs.push(match entry["status"].as_str() {
                Some("created") => with_line(entry["result"].clone(), *line),
                Some("deleted") => json!({"line": line, "id": entry["id"], "errors": [{"code": 1419, "message": "created, then deleted"}]}),
                _ => json!({"line": line, "id": entry["id"], "errors": entry["errors"]}),
            });
        }
        page += 1;
    }
    Ok(outputs)
}

/// Creates each line on its own, `concurrency` at a time.
async fn run_singles(
    plan: &BatchPlan,
    lines: Vec<(usize, Value)>,
    writer: &Arc<PartialWriter>,
    progress: &Arc<Progress>,
) -> anyhow::Result<()> {
    let semaphore = Arc::new(tokio::sync::Semaphore::new(plan.concurrency.max(1) * 8));
    let mut tasks = tokio::task::JoinSet::new();
    for (line, body) in lines {
        let (api, writer, progress, semaphore) = (
            plan.api.clone(),
            writer.clone(),
            progress.clone(),
            semaphore.clone(),
        );
        tasks.spawn(async move {
            let _permit = semaphore.acquire_owned().await;
            let output = create_one(&api, line, &body)
                .await
                .map_err(|e| anyhow::anyhow!(e.to_string()))?;
            writer.append(std::slice::from_ref(&output))?;
            progress.advance(1);
            anyhow::Ok(())
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.context("a create task panicked")??;
    }
    Ok(())
}

/// One create, repeated (under its derived key) until it has its final answer.
async fn create_one(api: &Api, line: usize, body: &Value) -> Result<Value, CallError> {
    let key = derive_key("line", api.owner_path(), &[(line, body.clone())]);
    let url = api.csrs_url("");
    loop {
        let (status, answer) =
            call(api, reqwest::Method::POST, &url, Some(&key), Some(body)).await?;
        match status {
            200 | 201 => return Ok(with_line(answer["result"].clone(), line)),
            // Accepted, still being made: asking again with the key waits for the same CSR.
            202 => tokio::time::sleep(Duration::from_secs(1)).await,
            401 | 403 => return Err(fatal(status, &answer)),
            _ => return Ok(json!({"line": line, "errors": answer["errors"]})),
        }
    }
}

/// One request, retried with backoff while the answer says "later" (connection failures,
/// 429, 5xx other than 500). Returns the status and the JSON body.
async fn call(
    api: &Api,
    method: reqwest::Method,
    url: &str,
    key: Option<&str>,
    body: Option<&Value>,
) -> Result<(u16, Value), CallError> {
    let mut pause = Duration::from_millis(200);
    loop {
        let mut req = api
            .http()
            .request(method.clone(), url)
            .bearer_auth(api.token());
        if let Some(key) = key {
            req = req.header("idempotency-key", key);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let retry_after = match req.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let retry_after = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .map(Duration::from_secs);
                let text = resp.bytes().await.unwrap_or_default();
                let answer: Value = serde_json::from_slice(&text).unwrap_or(Value::Null);
                if status == 401 || status == 403 {
                    return Err(fatal(status, &answer));
                }
                if !(status == 429 || (500..600).contains(&status) && status != 500) {
                    return Ok((status, answer));
                }
                retry_after
            }
            Err(e) => {
                tracing::debug!(error = %e, "request failed; retrying");
                None
            }
        };
        tokio::time::sleep(retry_after.unwrap_or(pause)).await;
        pause = (pause * 2).min(Duration::from_secs(10));
    }
}

fn fatal(status: u16, answer: &Value) -> CallError {
    let errors = answer["errors"].to_string();
    CallError::Fatal(format!("the API answered {status}: {errors}"))
}

fn with_line(mut result: Value, line: usize) -> Value {
    if let Value::Object(map) = &mut result {
        map.insert("line".into(), json!(line));
    }
    result
}

/// An Idempotency-Key that only this owner and these lines (numbers and bodies) give.
fn derive_key(kind: &str, owner_path: &str, lines: &[(usize, Value)]) -> String {
    let mut h = Sha256::new();
    h.update(kind.as_bytes());
    h.update([0]);
    h.update(owner_path.as_bytes());
    for (line, body) in lines {
        h.update(line.to_le_bytes());
        h.update(body.to_string().as_bytes());
        h.update([0]);
    }
    format!("csrd-{kind}-{}", hex::encode(&h.finalize()[..20]))
}

/// Appends settled output lines to the state file, whole lines at a time.
struct PartialWriter(Mutex<std::fs::File>);

impl PartialWriter {
    fn open(path: &Path) -> anyhow::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        Ok(Self(Mutex::new(file)))
    }

    fn append(&self, outputs: &[Value]) -> anyhow::Result<()> {
        let mut text = String::new();
        for o in outputs {
            text.push_str(&o.to_string());
            text.push('\n');
        }
        let mut file = self.0.lock().unwrap_or_else(|p| p.into_inner());
        file.write_all(text.as_bytes())?;
        file.flush()?;
        Ok(())
    }
}

/// What an earlier run settled, by line. A line cut short by a crash is ignored.
fn load_partial(path: &Path) -> anyhow::Result<HashMap<usize, Value>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| Some((v["line"].as_u64()? as usize, v)))
        .collect())
}

/// Writes one output line per input line, in input order (through a temporary file, so the
/// output is never half-written).
fn write_output(
    output: &Path,
    lines: &[InputLine],
    settled: &mut HashMap<usize, Value>,
) -> anyhow::Result<Summary> {
    let mut summary = Summary {
        created: 0,
        failed: 0,
    };
    let mut text = String::new();
    for l in lines {
        let out = match &l.body {
            Err(reason) => {
                json!({"line": l.line, "errors": [{"code": 1400, "message": format!("line {}: {reason}", l.line)}]})
            }
            Ok(_) => settled.remove(&l.line).unwrap_or_else(
                || json!({"line": l.line, "errors": [{"code": 1500, "message": "no result"}]}),
            ),
        };
        if out.get("errors").is_some() {
            summary.failed += 1;
        } else {
            summary.created += 1;
        }
        text.push_str(&out.to_string());
        text.push('\n');
    }
    let tmp = output.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, output).with_context(|| format!("writing {}", output.display()))?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_depend_on_owner_lines_and_bodies_only() {
        let a = vec![(1, json!({"x": 1})), (2, json!({"x": 2}))];
        let k = derive_key("batch", "accounts/a", &a);
        assert_eq!(k, derive_key("batch", "accounts/a", &a.clone()));
        assert_ne!(k, derive_key("batch", "accounts/b", &a));
        assert_ne!(k, derive_key("batch", "accounts/a", &a[..1]));
        assert!(k.len() < 64 && k.is_ascii());
    }

    #[test]
    fn item_errors_are_grouped_by_index_with_pointers_rebased() {
        let answer = json!({"errors": [
            {"code": 1412, "message": "m", "source": {"pointer": "/items/3/sans/0"}},
            {"code": 1405, "message": "m", "source": {"pointer": "/items/3/country"}},
            {"code": 1400, "message": "m", "source": {"pointer": "/items/10"}},
            {"code": 1400, "message": "m"}
        ]});
        let r = rejected_items(&answer);
        assert_eq!(r.len(), 2);
        assert_eq!(r[&3][0]["source"]["pointer"], "/sans/0");
        assert_eq!(r[&10][0]["source"]["pointer"], "");
    }

    #[test]
    fn the_state_file_sits_beside_the_output() {
        assert_eq!(
            partial_path(Path::new("/tmp/out.jsonl")),
            Path::new("/tmp/out.jsonl.partial")
        );
    }
}
