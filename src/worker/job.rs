//! Handling one job delivery.

use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use tracing::Instrument;

use super::WorkerContext;
use crate::crypto::{CsrError, KeygenError, SealedKey, build_csr, generate_key, seal};
use crate::db::{DbError, csrs};
use crate::domain::{Completion, CreateJob, CustomCsr, JobOutcome};
use crate::metrics;
use crate::queue::{JobDelivery, Settlement};
use crate::telemetry::{ErrorChain, spawn_blocking_in_current_span};

/// Transient database trouble is retried in place for this long before the job goes back
/// to the queue (where the delivery limit eventually dead-letters it).
const DB_RETRY_BUDGET: Duration = Duration::from_secs(60);

/// Why a job did not produce its row.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("key generation failed")]
    Keygen(#[from] KeygenError),
    #[error("the CSR could not be built")]
    Csr(#[from] CsrError),
    #[error("key generation panicked")]
    Panicked(#[source] tokio::task::JoinError),
    #[error("the database failed")]
    Db(#[from] DbError),
    #[error("the worker is stopping")]
    Stopping,
}

impl JobError {
    /// What the queue should do with the job: deliver it again when a later attempt may
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
    let job = &delivery.job;
    let span = tracing::info_span!("create_job", csr_id = %job.id, key_type = job.request.key_type.as_str());
    crate::telemetry::adopt_parent(&span, |name| {
        delivery
            .trace_context
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    });
    async move {
        let settlement = match process(&ctx, &delivery.job).await {
            Ok(replayed) => {
                metrics::job(if replayed { "replayed" } else { "created" });
                // Announce before acking: if the announcement fails the job is delivered again,
                // and that delivery (finding the row) announces again.
                let done = Completion {
                    id: delivery.job.id,
                    outcome: JobOutcome::Created,
                };
                match ctx.completions.announce(&delivery.job.reply_to, &done).await {
                    Ok(()) => Settlement::Ack,
                    Err(e) => {
                        tracing::warn!(error = %ErrorChain(&e), "completion not announced; the job goes back to the queue");
                        Settlement::Retry
                    }
                }
            }
            Err(e) => {
                let settlement = e.settlement();
                if settlement == Settlement::DeadLetter {
                    // The dead-letter consumer records the failure and tells the waiting client.
                    tracing::error!(error = %ErrorChain(&e), "job cannot succeed; dead-lettering it");
                    metrics::job("failed");
                } else {
                    tracing::warn!(error = %ErrorChain(&e), "job failed; returning it to the queue");
                    metrics::job("retried");
                }
                settlement
            }
        };
        if let Err(e) = delivery.settle(settlement).await {
            tracing::warn!(error = %ErrorChain(e.as_ref()), ?settlement, "could not settle the job; it will be delivered again");
        }
    }
    .instrument(span)
    .await
}

/// Makes the CSR unless it already exists. Returns whether it already existed.
async fn process(ctx: &WorkerContext, job: &CreateJob) -> Result<bool, JobError> {
    let exists = with_db_retry(ctx, || async {
        let client = ctx.pool.get().await?;
        csrs::exists(&**client, job.id).await
    })
    .await?;
    if exists {
        return Ok(true);
    }

    let started = Instant::now();
    let (csr_pem, sealed) = generate_and_seal(ctx, job).await?;
    metrics::keygen(
        job.request.key_type.as_str(),
        started.elapsed().as_secs_f64(),
    );

    let record = CustomCsr {
        id: job.id,
        owner: job.owner.clone(),
        request: job.request.clone(),
        csr_pem,
        created_at: job.created_at,
    };
    let inserted = with_db_retry(ctx, || async {
        let client = ctx.pool.get().await?;
        csrs::insert(&**client, &record, &sealed)
            .instrument(tracing::info_span!("db_insert_custom_csr"))
            .await
    })
    .await?;
    // Not inserted: a concurrent delivery of the same job won; its key is the only one kept.
    Ok(!inserted)
}

/// Key generation and signing on the blocking pool, at most `CSRD_WORKERS` at once.
async fn generate_and_seal(
    ctx: &WorkerContext,
    job: &CreateJob,
) -> Result<(String, SealedKey), JobError> {
    let _permit = ctx
        .keygen_permits
        .acquire()
        .await
        .map_err(|_| JobError::Stopping)?;
    let keyring = ctx.keyring.clone();
    let (id, owner, request) = (job.id, job.owner.clone(), job.request.clone());
    let work = tracing::info_span!("keygen_and_sign").in_scope(|| {
        spawn_blocking_in_current_span(move || {
            let key = generate_key(request.key_type)?;
            let pem = build_csr(&request, &key)?;
            Ok::<_, JobError>((pem, seal(&keyring, id, &owner, &key.pkcs8_der)))
        })
    });
    work.await.map_err(JobError::Panicked)?
}

/// Retries transient database errors with backoff, within `DB_RETRY_BUDGET` and until
/// shutdown; other errors return at once.
async fn with_db_retry<T, F, Fut>(ctx: &WorkerContext, op: F) -> Result<T, DbError>
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
