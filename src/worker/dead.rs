//! The dead-letter queue: chunks that exhausted their delivery limit or could never succeed.
//! Each job of the chunk becomes a recorded failure and a `Failed` completion, so the waiting
//! client, and any retry with the same Idempotency-Key, gets 1500 instead of waiting for ever.
//! A job whose row exists after all (its last attempt committed, then lost its ack) is a
//! success.

use std::collections::HashMap;
use std::time::Duration;

use tracing::Instrument;

use super::WorkerContext;
use crate::db::{DbError, batches, bulk, csrs, jobs};
use crate::domain::{Completion, CsrId, JobOutcome, Owner};
use crate::metrics;
use crate::queue::{JobDelivery, PublishError, Settlement};
use crate::telemetry::ErrorChain;

/// A dead letter that could not be settled is delivered again after this pause.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
enum SettleError {
    #[error("recording the failure failed")]
    Db(#[from] DbError),
    #[error("announcing the failure failed")]
    Announce(#[from] PublishError),
}

pub async fn handle(ctx: WorkerContext, delivery: JobDelivery) {
    let span = tracing::info_span!("dead_letter", chunk = %delivery.chunk.label(), items = delivery.chunk.jobs.len());
    async move {
        let reason = delivery
            .dead_letter_reason
            .clone()
            .unwrap_or_else(|| crate::queue::dead_letter_reason(None));
        let settlement = match settle(&ctx, &delivery, &reason).await {
            Ok(failed) => {
                if failed > 0 {
                    tracing::error!(%reason, failed, "creates failed for good");
                }
                metrics::jobs("dead_lettered", failed);
                Settlement::Ack
            }
            Err(e) => {
                tracing::warn!(error = %ErrorChain(&e), "dead letter not settled; retrying later");
                tokio::time::sleep(RETRY_PAUSE).await;
                Settlement::Retry
            }
        };
        if let Err(e) = delivery.settle(settlement).await {
            tracing::warn!(error = %ErrorChain(e.as_ref()), "could not settle the dead letter; it will be delivered again");
        }
    }
    .instrument(span)
    .await
}

/// Records a failure for every job of the chunk without a row, announces every job's final
/// state, and returns how many failed.
async fn settle(
    ctx: &WorkerContext,
    delivery: &JobDelivery,
    reason: &str,
) -> Result<usize, SettleError> {
    let chunk = &delivery.chunk;
    let ids: Vec<CsrId> = chunk.jobs.iter().map(|j| j.id).collect();
    // The connection goes back to the pool before the announcement, which may ride out a
    // broker outage.
    let existing: HashMap<CsrId, String> = {
        let mut client = ctx.pool.get().await.map_err(DbError::from)?;
        let client: &mut tokio_postgres::Client = &mut client;
        let tx = client.transaction().await.map_err(DbError::from)?;
        let existing: HashMap<CsrId, String> = csrs::pems(&tx, &ids).await?.into_iter().collect();
        let failures: Vec<(CsrId, &Owner, &str)> = chunk
            .jobs
            .iter()
            .filter(|j| !existing.contains_key(&j.id))
            .map(|j| (j.id, &j.owner, reason))
            .collect();
        let failed = jobs::record_failures(&tx, &failures).await?;
        bulk::settle_chunks(&tx, chunk).await?;
        batches::record_progress(&tx, &super::batch_progress(chunk, &[], &failed)).await?;
        tx.commit().await.map_err(DbError::from)?;
        existing
    };
    let completions: Vec<Completion> = chunk
        .jobs
        .iter()
        .map(|j| Completion {
            id: j.id,
            outcome: match existing.get(&j.id) {
                Some(pem) => JobOutcome::Created {
                    csr_pem: Some(pem.clone()),
                },
                None => JobOutcome::Failed {
                    reason: reason.to_owned(),
                },
            },
        })
        .collect();
    super::announce(ctx, chunk, &completions).await?;
    Ok(chunk.jobs.len() - existing.len())
}
