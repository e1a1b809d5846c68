//! `csrd batch --certificates`: uploads the certificates a CA returned, each against the custom
//! CSR it was issued for, through the bulk route (`…/custom_certificates/bulk`), resumably.
//!
//! The input is JSONL of `{"custom_csr_id", "certificate", …}`, or a directory of PEM files
//! named by CSR id (`<custom_csr_id>.pem`, taken in name order). A group the API refuses is
//! all-or-nothing there: the refused items get their errors and the rest is sent again. A
//! group sent again after a lost answer finds its certificates stored and gets their ids.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use hyper::body::Bytes;
use serde_json::{Value, json};

use super::batch::{cut_groups, settle_refused, submission_body};
use super::http::{self, Call, CallFailed, limits};
use super::input::{self, Format, InputLine};
use super::item::Item;
use super::output::{self, Summary, partial_path};
use super::progress::Progress;
use super::record::Output;
use super::state::{self, PartialWriter};
use super::{Api, Budgets};
use crate::domain::key_material::{holds_private_key, json_holds_private_key};

pub struct CertificatePlan {
    pub api: Api,
    /// A JSONL file, or a directory of `<custom_csr_id>.pem` files.
    pub input: PathBuf,
    pub output: PathBuf,
    /// Certificates per request (at most 10,000).
    pub group_size: usize,
    pub group_bytes: usize,
    pub concurrency: usize,
    pub budgets: Budgets,
}

pub async fn run(plan: CertificatePlan) -> anyhow::Result<Summary> {
    let mut lines = if plan.input.is_dir() {
        read_directory(&plan.input)?
    } else {
        output::refuse_overwriting_input(&plan.input, &plan.output)?;
        input::read(&plan.input, Format::Jsonl)?
    };
    // A line holding a key (in any format recognised: see crypto::key_material) is refused
    // here, before anything travels.
    for line in &mut lines {
        if line.body.as_ref().is_ok_and(|b| line_holds_key(b)) {
            line.body = Err(
                "holds private key material; not sent (csrd never accepts key material)".into(),
            );
        }
    }
    let partial = partial_path(&plan.output);
    let done = state::load(&partial, &plan.input, &lines)?;
    let items: Vec<Item> = lines
        .iter()
        .filter(|l| !done.contains_key(&l.line))
        .filter_map(|l| {
            l.body.as_ref().ok().map(|body| Item {
                line: l.line,
                body: body.clone(),
            })
        })
        .collect();
    let valid = lines.iter().filter(|l| l.body.is_ok()).count();
    if !done.is_empty() {
        eprintln!(
            "resuming: {} of {valid} certificates already settled ({})",
            done.len(),
            partial.display()
        );
    }
    let already = done.len() as u64;
    drop(done);
    let groups = cut_groups(items, plan.group_size.clamp(1, 10_000), plan.group_bytes);
    let writer = Arc::new(PartialWriter::open(&partial, &lines)?);
    let progress = Arc::new(Progress::new("certificates", valid as u64, already));
    let semaphore = Arc::new(tokio::sync::Semaphore::new(plan.concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for group in groups {
        let (api, budgets) = (plan.api.clone(), plan.budgets);
        let (writer, progress, semaphore) = (writer.clone(), progress.clone(), semaphore.clone());
        tasks.spawn(async move {
            let _permit = semaphore.acquire_owned().await;
            let outputs = upload_group(&api, &budgets, group).await?;
            writer.append(&outputs)?;
            progress.advance(outputs.len() as u64);
            anyhow::Ok(())
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.context("an upload task panicked")??;
    }
    progress.finish();
    let mut settled = state::load(&partial, &plan.input, &lines)?;
    let summary = output::write(&plan.output, &lines, &mut settled)?;
    std::fs::remove_file(&partial).ok();
    Ok(summary)
}

/// Whether a JSONL line holds key material: any string in it once its JSON escapes are undone
/// (a key's base64 lines are joined by `\n` escapes there), or a JWK; a line that is not JSON
/// is looked at as text.
fn line_holds_key(line: &str) -> bool {
    match serde_json::from_str::<Value>(line) {
        Ok(v) => json_holds_private_key(&v),
        Err(_) => holds_private_key(line.as_bytes()),
    }
}

/// One input line per `<custom_csr_id>.pem` file, in name order; other files are skipped. A
/// file that cannot be a chain (larger than a certificate field may be, not text) or that
/// holds key material fails as its line, unsent; the others go on.
fn read_directory(dir: &Path) -> anyhow::Result<Vec<InputLine>> {
    use sha2::{Digest, Sha256};
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "pem"))
        .collect();
    names.sort();
    let mut lines = Vec::with_capacity(names.len());
    for (i, path) in names.iter().enumerate() {
        let id = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        let (digest, body) = match read_chain_file(path) {
            Ok(pem) => {
                let body = json!({"custom_csr_id": id, "certificate": pem}).to_string();
                (Sha256::digest(body.as_bytes()).into(), Ok(body))
            }
            Err(why) => (
                Sha256::digest(format!("{}\n{why}", path.display()).as_bytes()).into(),
                Err(format!("{}: {why}", path.display())),
            ),
        };
        lines.push(InputLine {
            line: i + 1,
            digest,
            body,
        });
    }
    Ok(lines)
}

/// A certificate file's text, or why it is not sent. Never read whole when it is larger than a
/// chain may be.
fn read_chain_file(path: &Path) -> Result<String, String> {
    use std::io::Read as _;
    let limit = crate::domain::certificate::MAX_CERTIFICATE_BYTES;
    let file = std::fs::File::open(path).map_err(|e| format!("cannot be read: {e}"))?;
    let mut bytes = Vec::new();
    file.take(limit as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot be read: {e}"))?;
    // Never sent: a key file named like a certificate stays on this machine.
    if holds_private_key(&bytes) {
        return Err(
            "holds private key material; not sent (csrd never accepts key material)".into(),
        );
    }
    if bytes.len() > limit {
        return Err(format!(
            "is larger than a certificate chain may be ({limit} bytes); not sent"
        ));
    }
    String::from_utf8(bytes).map_err(|_| "is not a PEM text file; not sent".to_owned())
}

/// Uploads one group; returns one output object per line: `{line, id, custom_csr_id}` or
/// `{line, errors}`.
async fn upload_group(
    api: &Api,
    budgets: &Budgets,
    group: Vec<Item>,
) -> Result<Vec<Output>, CallFailed> {
    let url = api.certificates_url("/bulk");
    let mut outputs = Vec::new();
    let mut pending = vec![group];
    while let Some(mut items) = pending.pop() {
        if items.is_empty() {
            continue;
        }
        let answer = http::call(
            api,
            budgets,
            Call {
                what: "uploading certificates",
                method: reqwest::Method::POST,
                url: &url,
                idempotency_key: None,
                json_body: Some(Bytes::from(submission_body(&items))),
                limit: limits::SUBMISSION,
            },
        )
        .await?;
        match answer.status {
            200 => {
                let body = answer.json();
                let stored = body["result"].as_array().cloned().unwrap_or_default();
                if stored.len() != items.len() {
                    return Err(CallFailed(format!(
                        "uploading certificates: {} sent, {} answered",
                        items.len(),
                        stored.len()
                    )));
                }
                for (item, r) in items.iter().zip(stored) {
                    outputs.push(Output::from_value(
                        json!({"line": item.line, "id": r["id"], "custom_csr_id": r["custom_csr_id"]}),
                    ));
                }
            }
            413 if items.len() > 1 => {
                let second = items.split_off(items.len() / 2);
                pending.push(second);
                pending.push(items);
            }
            // One item alone is too large: it fails as its line, and the run goes on (sent
            // again, it would stop every run here for ever).
            413 => outputs.extend(items.iter().map(|item| {
                Output::from_value(json!({"line": item.line, "errors": [{"code": 1400, "message": "too large for the bulk route: not stored"}]}))
            })),
            400 => settle_refused(&answer.json(), items, &mut outputs, &mut pending),
            status => {
                return Err(CallFailed(format!(
                    "uploading certificates: the API answered {status}: {}",
                    answer.errors()
                )));
            }
        }
    }
    Ok(outputs)
}
