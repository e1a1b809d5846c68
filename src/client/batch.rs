//! `csrd batch`: create a CSR for every line of an input file, resumably.
//!
//! Valid input lines are cut into groups, at most `--batch-size` items and `--max-batch-bytes`
//! of JSON each (far under the API's 32 MiB, so no valid input meets a 413), submitted to the
//! batch API (each group with an Idempotency-Key derived from its items, so a resubmission finds
//! the same batch), followed to the end and collected. Each finished group's output lines are
//! appended to a state file beside the output (`<output>.partial`, see [`super::state`]); a run
//! that was interrupted (Ctrl-C, kill, crash) and started again skips what that file holds and
//! resubmits the rest under the same keys, so nothing is created twice. The groups are cut from
//! the whole input, not from what is left, so a resubmitted group is the group that was
//! submitted. The output is written, in input order, once everything is settled.
//!
//! What the API answers a submission:
//! - 413 (a server with a lower limit): the group is halved and each half submitted; a lone
//!   item that is still too large fails alone.
//! - 400 with errors pointing at items (`/items/17/sans/0`): those lines fail with their errors
//!   and the rest is submitted again. The API may list only some of the bad items; each round
//!   drops at least one item, so the rounds end. A 400 pointing outside the submission, or at
//!   no item, fails the whole group with the API's errors: resubmitting it would get the same.
//! - 404: the API has no batches (Cloudflare's own): each line is created on its own,
//!   concurrently, with an Idempotency-Key derived from the line (see [`super::singles`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use hyper::body::Bytes;
use serde_json::{Value, json};

use super::http::{self, Call, CallFailed, limits};
use super::input::{self, Format};
use super::item::{Item, derive_key, errors_or};
use super::output::{self, partial_path};
use super::progress::Progress;
use super::record::Output;
use super::state::{self, PartialWriter};
use super::{Api, Budgets, follow, singles};

pub use super::output::Summary;

/// Bytes of JSON per submission by default: a quarter of the API's 32 MiB body limit, and still
/// 5,000 items of 1.6 KiB each.
pub const DEFAULT_GROUP_BYTES: usize = 8 * 1024 * 1024;

pub struct BatchPlan {
    pub api: Api,
    pub input: PathBuf,
    /// `None`: from the input's extension.
    pub format: Option<Format>,
    pub output: PathBuf,
    /// Items per submitted batch (at most 10,000).
    pub group_size: usize,
    /// Bytes of JSON per submitted batch (a lone larger item is still sent alone).
    pub group_bytes: usize,
    /// Batches (or, without the batch API, single creates) in flight at once.
    pub concurrency: usize,
    pub budgets: Budgets,
}

/// Why a group got no outputs.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    /// The endpoint has no batch API (404).
    #[error("the API has no batch endpoint")]
    NoBatchApi,
    #[error(transparent)]
    Failed(#[from] CallFailed),
}

pub async fn run(plan: BatchPlan) -> anyhow::Result<Summary> {
    let format = Format::of(&plan.input, plan.format)?;
    output::refuse_overwriting_input(&plan.input, &plan.output)?;
    let lines = input::read(&plan.input, format)?;
    let partial = partial_path(&plan.output);
    let done = state::load(&partial, &plan.input, &lines)?;
    let items: Vec<Item> = lines
        .iter()
        .filter_map(|l| {
            l.body.as_ref().ok().map(|body| Item {
                line: l.line,
                body: body.clone(),
            })
        })
        .collect();
    let valid = items.len();
    let already = items.iter().filter(|i| done.contains_key(&i.line)).count();
    if !done.is_empty() {
        eprintln!(
            "resuming: {already} of {valid} lines already settled ({})",
            partial.display()
        );
    }
    // A group the state file holds only some lines of (a crash while it was being recorded) is
    // submitted again whole: its key finds its batch.
    let groups: Vec<Vec<Item>> = cut_groups(items, plan.group_size, plan.group_bytes)
        .into_iter()
        .filter(|g| g.iter().any(|i| !done.contains_key(&i.line)))
        .collect();
    drop(done);
    let writer = Arc::new(PartialWriter::open(&partial, &lines)?);
    let progress = Arc::new(Progress::new("batch", valid as u64, already as u64));

    let leftover = run_batches(&plan, groups, &writer, &progress).await?;
    if !leftover.is_empty() {
        eprintln!("the API has no batch endpoint: creating each CSR on its own");
        singles::run(
            &plan.api,
            &plan.budgets,
            plan.concurrency,
            leftover,
            &writer,
            &progress,
        )
        .await?;
    }
    progress.finish();

    let mut settled = state::load(&partial, &plan.input, &lines)?;
    let summary = output::write(&plan.output, &lines, &mut settled)?;
    std::fs::remove_file(&partial).ok();
    Ok(summary)
}

/// Cuts the items, in order, into groups of at most `max_items` items and `max_bytes` of
/// submission body; an item larger than `max_bytes` alone is a group of its own.
pub fn cut_groups(items: Vec<Item>, max_items: usize, max_bytes: usize) -> Vec<Vec<Item>> {
    let max_items = max_items.clamp(1, crate::domain::batch::MAX_BATCH_ITEMS);
    let mut groups = Vec::new();
    let mut group: Vec<Item> = Vec::new();
    let mut bytes = ENVELOPE_BYTES;
    for item in items {
        // One more item costs its body and a comma.
        let grown = bytes + item.body.len() + usize::from(!group.is_empty());
        if !group.is_empty() && (group.len() >= max_items || grown > max_bytes) {
            groups.push(std::mem::take(&mut group));
            bytes = ENVELOPE_BYTES;
        }
        bytes += item.body.len() + usize::from(!group.is_empty());
        group.push(item);
    }
    if !group.is_empty() {
        groups.push(group);
    }
    groups
}

const ENVELOPE_BYTES: usize = r#"{"items":[]}"#.len();

/// `{"items":[…]}` of the items' own bytes.
pub fn submission_body(items: &[Item]) -> String {
    let mut body = String::with_capacity(
        ENVELOPE_BYTES + items.iter().map(|i| i.body.len() + 1).sum::<usize>(),
    );
    body.push_str(r#"{"items":["#);
    for (n, item) in items.iter().enumerate() {
        if n > 0 {
            body.push(',');
        }
        body.push_str(&item.body);
    }
    body.push_str("]}");
    body
}

/// Runs the groups through the batch API, `concurrency` at a time. Returns the lines left to
/// create one by one (all of them when the API has no batches). The first group that fails
/// stops the run; what is settled stays in the state file.
async fn run_batches(
    plan: &BatchPlan,
    groups: Vec<Vec<Item>>,
    writer: &Arc<PartialWriter>,
    progress: &Arc<Progress>,
) -> anyhow::Result<Vec<Item>> {
    let semaphore = Arc::new(tokio::sync::Semaphore::new(plan.concurrency.max(1)));
    let no_batches = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    for group in groups {
        let (api, budgets) = (plan.api.clone(), plan.budgets);
        let (writer, progress) = (writer.clone(), progress.clone());
        let (semaphore, no_batches) = (semaphore.clone(), no_batches.clone());
        tasks.spawn(async move {
            let _permit = semaphore.acquire_owned().await;
            if no_batches.load(std::sync::atomic::Ordering::SeqCst) {
                return Ok(group);
            }
            match run_group(&api, &budgets, group.clone()).await {
                Ok(outputs) => {
                    writer.append(&outputs)?;
                    progress.advance(outputs.len() as u64);
                    Ok(Vec::new())
                }
                Err(GroupError::NoBatchApi) => {
                    no_batches.store(true, std::sync::atomic::Ordering::SeqCst);
                    Ok(group)
                }
                Err(GroupError::Failed(e)) => Err(anyhow::Error::new(e)),
            }
        });
    }
    let mut leftover = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        leftover.extend(joined.context("a batch task panicked")??);
    }
    leftover.sort_by_key(|item| item.line);
    Ok(leftover)
}

/// Submits one group (again, under the same key, after an interruption), waits for its batch
/// and returns one output object per line.
async fn run_group(
    api: &Api,
    budgets: &Budgets,
    group: Vec<Item>,
) -> Result<Vec<Output>, GroupError> {
    let url = api.csrs_url("/batches");
    let mut outputs = Vec::new();
    // Submissions still to make, the next one last.
    let mut pending = vec![group];
    while let Some(mut items) = pending.pop() {
        if items.is_empty() {
            continue;
        }
        let key = derive_key("batch", api.owner_path(), &items);
        let answer = http::call(
            api,
            budgets,
            Call {
                what: "submitting a batch",
                method: reqwest::Method::POST,
                url: &url,
                idempotency_key: Some(&key),
                json_body: Some(Bytes::from(submission_body(&items))),
                limit: limits::SUBMISSION,
            },
        )
        .await?;
        match answer.status {
            202 => outputs.extend(follow::collect(api, budgets, &answer, &items).await?),
            // Only before anything of the group was made: after, creating the rest one by one
            // would make some twice.
            404 if outputs.is_empty() => return Err(GroupError::NoBatchApi),
            413 if items.len() > 1 => {
                let second = items.split_off(items.len() / 2);
                pending.push(second);
                pending.push(items);
            }
            413 => outputs.push(Output::from_value(
                json!({"line": items[0].line, "errors": errors_or(
                    &answer.json()["errors"],
                    "the API refused this line as too large (413)",
                )}),
            )),
            400 => settle_refused(&answer.json(), items, &mut outputs, &mut pending),
            422 => {
                return Err(CallFailed(
                    "the API refused an Idempotency-Key derived from this input (changed since the \
                     interrupted run?): delete the .partial file to start afresh"
                        .into(),
                )
                .into());
            }
            other => {
                return Err(CallFailed(format!(
                    "submitting a batch: the API answered {other}: {}",
                    answer.errors()
                ))
                .into());
            }
        }
    }
    Ok(outputs)
}

/// A 400 for a group: the items it names fail with their errors, and the rest go back to
/// `pending` to be submitted again; a 400 that names no item (or one outside the group)
/// fails the whole group with the API's errors.
pub(super) fn settle_refused(
    answer: &Value,
    items: Vec<Item>,
    outputs: &mut Vec<Output>,
    pending: &mut Vec<Vec<Item>>,
) {
    match rejected_items(answer, items.len()) {
        Ok(rejected) => {
            let mut kept = Vec::new();
            for (index, item) in items.into_iter().enumerate() {
                match rejected.get(&index) {
                    Some(errors) => outputs.push(Output::from_value(
                        json!({"line": item.line, "errors": errors}),
                    )),
                    None => kept.push(item),
                }
            }
            pending.push(kept);
        }
        Err(why) => {
            let errors = errors_or(&answer["errors"], &why);
            outputs.extend(
                items
                    .iter()
                    .map(|item| Output::from_value(json!({"line": item.line, "errors": errors}))),
            );
        }
    }
}

/// Errors of a 400 by item index, from their `/items/<k>/…` pointers (pointers re-based to
/// the item). Errors pointing elsewhere (a summary of errors left out, `""`) are not about one
/// item. `Err` when no error names an item of the `submitted`, or one names an item past them.
pub(super) fn rejected_items(
    answer: &Value,
    submitted: usize,
) -> Result<BTreeMap<usize, Vec<Value>>, String> {
    let mut by_item: BTreeMap<usize, Vec<Value>> = BTreeMap::new();
    for e in answer["errors"].as_array().into_iter().flatten() {
        let Some(pointer) = e["source"]["pointer"].as_str() else {
            continue;
        };
        let Some(rest) = pointer.strip_prefix("/items/") else {
            continue;
        };
        let (index, within) = rest.split_once('/').unwrap_or((rest, ""));
        let Ok(index) = index.parse::<usize>() else {
            continue;
        };
        if index >= submitted {
            return Err(format!(
                "the API answered 400 pointing at {pointer}, outside the {submitted} items \
                 submitted: the group failed as a whole"
            ));
        }
        let mut e = e.clone();
        e["source"]["pointer"] = json!(if within.is_empty() {
            String::new()
        } else {
            format!("/{within}")
        });
        by_item.entry(index).or_default().push(e);
    }
    if by_item.is_empty() {
        return Err(
            "the API answered 400 without naming an item: the group failed as a whole".into(),
        );
    }
    Ok(by_item)
}

/// Lines named twice in `items` (never, for groups cut from one input).
#[cfg(test)]
fn repeated_lines(items: &[Item]) -> usize {
    let mut seen = std::collections::HashSet::new();
    items.iter().filter(|i| !seen.insert(i.line)).count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    fn item(line: usize, body: &str) -> Item {
        Item {
            line,
            body: body.to_owned(),
        }
    }

    #[test]
    fn keys_depend_on_owner_lines_and_bodies_only() {
        let a = vec![item(1, r#"{"x":1}"#), item(2, r#"{"x":2}"#)];
        let k = derive_key("batch", "accounts/a", &a);
        assert_eq!(k, derive_key("batch", "accounts/a", &a.clone()));
        assert_ne!(k, derive_key("batch", "accounts/b", &a));
        assert_ne!(k, derive_key("batch", "accounts/a", &a[..1]));
        assert!(k.len() < 64 && k.is_ascii());
    }

    #[test]
    fn keys_match_those_of_earlier_versions() {
        // Earlier versions hashed serde_json's compact form of the parsed line: a run of a
        // finished input with this version finds the same batches.
        let body = json!({"common_name": "a.io", "sans": ["a.io"]});
        let k = derive_key("batch", "accounts/a", &[item(7, &body.to_string())]);
        let mut h = Sha256::new();
        h.update(b"batch\0accounts/a");
        h.update(7usize.to_le_bytes());
        h.update(body.to_string().as_bytes());
        h.update([0]);
        assert_eq!(
            k,
            format!("csrd-batch-{}", hex::encode(&h.finalize()[..20]))
        );
    }

    #[test]
    fn groups_are_cut_by_items_and_by_bytes() {
        let items: Vec<Item> = (1..=10).map(|n| item(n, &"x".repeat(100))).collect();
        let by_items = cut_groups(items.clone(), 4, usize::MAX);
        assert_eq!(by_items.iter().map(Vec::len).collect::<Vec<_>>(), [4, 4, 2]);
        // 3 items: 12 + 3 * 100 + 2 commas = 314 bytes.
        let by_bytes = cut_groups(items.clone(), 100, 314);
        assert_eq!(
            by_bytes.iter().map(Vec::len).collect::<Vec<_>>(),
            [3, 3, 3, 1]
        );
        for group in &by_bytes {
            assert!(submission_body(group).len() <= 314);
        }
        let alone = cut_groups(items, 100, 50);
        assert_eq!(alone.len(), 10, "an item over the limit goes alone");
        let flat: Vec<Item> = alone.into_iter().flatten().collect();
        assert_eq!(repeated_lines(&flat), 0);
        assert_eq!(flat.first().map(|i| i.line), Some(1));
    }

    #[test]
    fn the_submission_body_is_the_items_json() {
        let body = submission_body(&[item(1, r#"{"a":1}"#), item(2, r#"{"b":[2]}"#)]);
        let parsed: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(parsed, json!({"items": [{"a": 1}, {"b": [2]}]}));
    }

    #[test]
    fn item_errors_are_grouped_by_index_with_pointers_rebased() {
        let answer = json!({"errors": [
            {"code": 1412, "message": "m", "source": {"pointer": "/items/3/sans/0"}},
            {"code": 1405, "message": "m", "source": {"pointer": "/items/3/country"}},
            {"code": 1400, "message": "m", "source": {"pointer": "/items/10"}},
            {"code": 1400, "message": "m"},
            {"code": 1400, "message": "and 250 more errors", "source": {"pointer": ""}}
        ]});
        let r = rejected_items(&answer, 11).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[&3][0]["source"]["pointer"], "/sans/0");
        assert_eq!(r[&10][0]["source"]["pointer"], "");
    }

    #[test]
    fn a_400_outside_the_submission_or_about_no_item_fails_the_group() {
        let outside = json!({"errors": [
            {"code": 1412, "message": "m", "source": {"pointer": "/items/9999/sans/0"}}
        ]});
        assert!(
            rejected_items(&outside, 10)
                .unwrap_err()
                .contains("/items/9999")
        );
        let none = json!({"errors": [{"code": 1400, "message": "m", "source": {"pointer": ""}}]});
        assert!(rejected_items(&none, 10).is_err());
        assert!(rejected_items(&json!("garbage"), 10).is_err());
    }
}
