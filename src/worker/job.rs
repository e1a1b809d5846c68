//! Handling one chunk delivery: find which jobs are done already (a redelivery), make the
//! missing keys and CSRs in parallel on the bounded blocking pool, write every row (and every
//! item that cannot be built, as a recorded failure) in one transaction, announce the results
//! to each waiting ingress instance, then ack.

use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use tracing::Instrument;

use super::WorkerContext;
use crate::crypto::{Keyring, SealedKey, build_csr, seal};
use crate::db::{DbError, batches, csrs, jobs};
use crate::domain::{
    Completion, CreateChunk, CreateCsr, CreateJob, CsrId, CustomCsr, JobOutcome, KeyType, Owner,
};
use crate::metrics;
use crate::queue::{JobDelivery, Settlement};
use crate::telemetry::{ErrorChain, spawn_blocking_in_current_span};

use super::keys::KeySource;

/// Transient database trouble is retried in place for this long before the chunk goes back
/// to the queue (where the delivery limit eventually dead-letters it).
const DB_RETRY_BUDGET: Duration = Duration::from_secs(60);

/// The work one blocking task takes on: one RSA-2048 key (~20–100 ms), or this many P-256
/// keys (~50 µs each), so a keygen slot is never held long and tasks stay cheap to spawn.
const GROUP_WEIGHT: usize = 64;

/// Why a chunk did not produce its rows (failures of single items are not errors: they are
/// recorded, and their chunk-mates go on).
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("a key generation task was lost")]
    Panicked(#[source] tokio::task::JoinError),
    #[error("the database failed")]
    Db(#[from] DbError),
    #[error("the worker is stopping")]
    Stopping,
}

impl JobError {
    /// What the queue should do with the chunk: deliver it again when a later attempt may
    /// succeed, dead-letter it when none can.
    pub fn settlement(&self) -> Settlement {
        match self {
            JobError::Db(e) if e.is_transient() => Settlement::Retry,
            JobError::Stopping => Settlement::Retry,
            _ => Settlement::DeadLetter,
        }
    }
}

pub async fn handle(ctx: WorkerContext, delivery: JobDelivery) {
    let chunk = &delivery.chunk;
    let span = tracing::info_span!(
        "create_chunk",
        chunk = %chunk.label(),
        items = chunk.jobs.len(),
        trace_id = tracing::field::Empty
    );
    crate::telemetry::adopt_parent(&span, |name| {
        delivery
            .trace_context
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    });
    async move {
        let settlement = match process(&ctx, &delivery.chunk).await {
            Ok(completions) => {
                metrics::chunk_handled(completions.len());
                // Announce before acking: if an announcement fails the chunk is delivered
                // again, and that delivery (finding the rows) announces again.
                match super::announce(&ctx, &delivery.chunk, &completions).await {
                    Ok(()) => Settlement::Ack,
                    Err(e) => {
                        tracing::warn!(error = %ErrorChain(&e), "completions not announced; the chunk goes back to the queue");
                        Settlement::Retry
                    }
                }
            }
            Err(e) => {
                let settlement = e.settlement();
                if settlement == Settlement::DeadLetter {
                    // The dead-letter consumer records the failures and tells the waiting clients.
                    tracing::error!(error = %ErrorChain(&e), "chunk cannot succeed; dead-lettering it");
                    metrics::jobs("failed", delivery.chunk.jobs.len());
                } else {
                    tracing::warn!(error = %ErrorChain(&e), "chunk failed; returning it to the queue");
                    metrics::jobs("retried", delivery.chunk.jobs.len());
                }
                settlement
            }
        };
        if let Err(e) = delivery.settle(settlement).await {
            tracing::warn!(error = %ErrorChain(e.as_ref()), ?settlement, "could not settle the chunk; it will be delivered again");
        }
    }
    .instrument(span)
    .await
}

/// What became of one job that had no row yet.
enum Made {
    Built(Box<(CustomCsr, SealedKey)>),
    Failed(String),
}

/// Makes every CSR of the chunk that does not exist yet. Returns one completion per job, in
/// the chunk's order.
async fn process(ctx: &WorkerContext, chunk: &CreateChunk) -> Result<Vec<Completion>, JobError> {
    let ids: Vec<CsrId> = chunk.jobs.iter().map(|j| j.id).collect();
    let existing: HashMap<CsrId, String> = with_db_retry(ctx, || async {
        let client = ctx.pool.get().await?;
        csrs::pems(&**client, &ids).await
    })
    .await?
    .into_iter()
    .collect();
    let todo: Vec<&CreateJob> = chunk
        .jobs
        .iter()
        .filter(|j| !existing.contains_key(&j.id))
        .collect();

    let made = generate_all(ctx, &todo).await?;
    let rows: Vec<(&CustomCsr, &SealedKey)> = made
        .iter()
        .filter_map(|m| match m {
            Made::Built(built) => Some((&built.0, &built.1)),
            Made::Failed(_) => None,
        })
        .collect();
    let failures: Vec<(CsrId, &Owner, &str)> = todo
        .iter()
        .zip(&made)
        .filter_map(|(job, m)| match m {
            Made::Failed(reason) => Some((job.id, &job.owner, reason.as_str())),
            Made::Built(..) => None,
        })
        .collect();

    let inserted: HashSet<CsrId> = with_db_retry(ctx, || async {
        let mut client = ctx.pool.get().await?;
        let client: &mut tokio_postgres::Client = &mut client;
        let tx = client.transaction().await?;
        let inserted = csrs::insert_chunk(&tx, &rows)
            .instrument(tracing::info_span!("db_insert_chunk", rows = rows.len()))
            .await?;
        let failed = jobs::record_failures(&tx, &failures).await?;
        // Last, so the batch row is locked only for the commit.
        batches::record_progress(&tx, &super::batch_progress(chunk, &inserted, &failed)).await?;
        tx.commit().await?;
        Ok(inserted)
    })
    .await?
    .into_iter()
    .collect();

    // A row we built but did not insert: a concurrent delivery of the same job won, and its
    // key is the only one kept. Its CSR is read back, never ours announced.
    let lost: Vec<CsrId> = rows
        .iter()
        .map(|(csr, _)| csr.id)
        .filter(|id| !inserted.contains(id))
        .collect();
    drop(rows);
    let winners: HashMap<CsrId, String> = if lost.is_empty() {
        HashMap::new()
    } else {
        with_db_retry(ctx, || async {
            let client = ctx.pool.get().await?;
            csrs::pems(&**client, &lost).await
        })
        .await?
        .into_iter()
        .collect()
    };

    let mut made_by_id: HashMap<CsrId, Made> = todo
        .iter()
        .map(|j| j.id)
        .zip(made)
        .collect::<HashMap<_, _>>();
    let (mut created_n, mut replayed_n, mut failed_n) = (0, 0, 0);
    let completions = chunk
        .jobs
        .iter()
        .map(|job| {
            let outcome = if let Some(pem) = existing.get(&job.id) {
                replayed_n += 1;
                created(Some(pem.clone()))
            } else {
                match made_by_id.remove(&job.id) {
                    Some(Made::Built(built)) if inserted.contains(&job.id) => {
                        created_n += 1;
                        created(Some(built.0.csr_pem))
                    }
                    Some(Made::Built(..)) => {
                        replayed_n += 1;
                        created(winners.get(&job.id).cloned())
                    }
                    Some(Made::Failed(reason)) => {
                        tracing::error!(csr_id = %job.id, %reason, "create cannot succeed; recorded as failed");
                        failed_n += 1;
                        JobOutcome::Failed { reason }
                    }
                    // A job listed twice in one chunk: the first occurrence took the result.
                    None => created(None),
                }
            };
            Completion {
                id: job.id,
                outcome,
            }
        })
        .collect();
    metrics::jobs("created", created_n);
    metrics::jobs("replayed", replayed_n);
    metrics::jobs("failed", failed_n);
    Ok(completions)
}

fn created(csr_pem: Option<String>) -> JobOutcome {
    JobOutcome::Created { csr_pem }
}

/// Generates, signs and seals every job's key on the blocking pool, in groups of similar cost,
/// at most `CSRD_WORKERS` groups at once. The result is in `todo`'s order.
async fn generate_all(ctx: &WorkerContext, todo: &[&CreateJob]) -> Result<Vec<Made>, JobError> {
    let groups = group_by_cost(todo.iter().map(|j| j.request.key_type));
    let tasks = groups.into_iter().map(|group| {
        let items: Vec<(CsrId, Owner, CreateCsr, chrono::DateTime<chrono::Utc>)> = group
            .iter()
            .map(|&i| {
                let j = todo[i];
                (j.id, j.owner.clone(), j.request.clone(), j.created_at)
            })
            .collect();
        async move {
            let _slot = ctx.keygen_slots.acquire(ctx.priority).await;
            let keyring = ctx.keyring.clone();
            let keys = ctx.keys.clone();
            let made = tracing::info_span!("keygen_and_sign", keys = items.len())
                .in_scope(|| {
                    spawn_blocking_in_current_span(move || {
                        items
                            .into_iter()
                            .map(|(id, owner, request, created_at)| {
                                let started = Instant::now();
                                let key_type = request.key_type;
                                let made =
                                    make_one(&keyring, &keys, id, owner, request, created_at);
                                let secs = started.elapsed().as_secs_f64();
                                metrics::keygen(key_type.as_str(), secs);
                                made
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .await
                .map_err(JobError::Panicked)?;
            Ok::<_, JobError>(group.into_iter().zip(made).collect::<Vec<_>>())
        }
    });
    let mut slots: Vec<Option<Made>> = (0..todo.len()).map(|_| None).collect();
    for group in futures_util::future::try_join_all(tasks).await? {
        for (i, made) in group {
            slots[i] = Some(made);
        }
    }
    Ok(slots
        .into_iter()
        .map(|m| m.unwrap_or_else(|| Made::Failed("the key was not generated".into())))
        .collect())
}

/// Indexes of `key_types` cut into groups of at most [`GROUP_WEIGHT`] (one RSA key weighs as
/// much as a whole group).
fn group_by_cost(key_types: impl Iterator<Item = KeyType>) -> Vec<Vec<usize>> {
    let mut groups = Vec::new();
    let mut current = Vec::new();
    let mut weight = 0;
    for (i, key_type) in key_types.enumerate() {
        let w = match key_type {
            KeyType::Rsa2048 => GROUP_WEIGHT,
            KeyType::P256v1 => 1,
        };
        if weight + w > GROUP_WEIGHT && !current.is_empty() {
            groups.push(std::mem::take(&mut current));
            weight = 0;
        }
        current.push(i);
        weight += w;
    }
    if !current.is_empty() {
        groups.push(current);
    }
    groups
}

/// One key, its CSR and its sealed form. A failure (or a panic) fails this item only.
fn make_one(
    keyring: &Keyring,
    keys: &KeySource,
    id: CsrId,
    owner: Owner,
    request: CreateCsr,
    created_at: chrono::DateTime<chrono::Utc>,
) -> Made {
    let key_type = request.key_type;
    let built = std::panic::catch_unwind(AssertUnwindSafe(|| {
        let key = keys
            .take(key_type)
            .map_err(|e| format!("key generation failed: {}", ErrorChain(&e)))?;
        let pem = build_csr(&request, &key)
            .map_err(|e| format!("the CSR could not be built: {}", ErrorChain(&e)))?;
        Ok::<_, String>((pem, seal(keyring, id, &owner, &key.pkcs8_der)))
    }));
    match built {
        Ok(Ok((csr_pem, sealed))) => Made::Built(Box::new((
            CustomCsr {
                id,
                owner,
                request,
                csr_pem,
                created_at,
            },
            sealed,
        ))),
        Ok(Err(reason)) => Made::Failed(reason),
        Err(_) => Made::Failed("key generation panicked".into()),
    }
}

/// Retries transient database errors with backoff, within `DB_RETRY_BUDGET` and until
/// shutdown; other errors return at once.
pub(super) async fn with_db_retry<T, F, Fut>(ctx: &WorkerContext, op: F) -> Result<T, DbError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, DbError>>,
{
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(5))
        .with_total_delay(Some(DB_RETRY_BUDGET))
        .without_max_times();
    op.retry(backoff)
        .sleep(tokio::time::sleep)
        .when(|e: &DbError| e.is_transient() && !ctx.shutdown.is_cancelled())
        .notify(|e: &DbError, _| tracing::warn!(error = %ErrorChain(e), "database unavailable; retrying"))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rsa_keys_go_alone_and_p256_keys_in_groups() {
        use KeyType::*;
        let types = [P256v1, P256v1, Rsa2048, P256v1];
        assert_eq!(
            group_by_cost(types.into_iter()),
            vec![vec![0, 1], vec![2], vec![3]]
        );
        let many = std::iter::repeat_n(P256v1, GROUP_WEIGHT + 1);
        let groups = group_by_cost(many);
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].len(), GROUP_WEIGHT);
        assert!(group_by_cost(std::iter::empty()).is_empty());
    }
}
