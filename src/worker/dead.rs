//! The dead-letter queue: jobs that exhausted their delivery limit or could never succeed.
//! Each one becomes a recorded failure and a `Failed` completion, so the waiting client, and
//! any retry with the same Idempotency-Key, gets 1500 instead of waiting for ever. A job whose
//! row exists after all (its last attempt committed, then lost its ack) is a success.

use std::time::Duration;

use tracing::Instrument;

use super::WorkerContext;
use crate::db::{DbError, csrs, jobs};
use crate::domain::{Completion, JobOutcome};
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
    let span = tracing::info_span!("dead_letter", csr_id = %delivery.job.id);
    async move {
        let reason = delivery
            .dead_letter_reason
            .clone()
            .unwrap_or_else(|| crate::queue::dead_letter_reason(None));
        let settlement = match settle(&ctx, &delivery, &reason).await {
            Ok(JobOutcome::Failed { .. }) => {
                tracing::error!(%reason, "create failed for good");
                metrics::job("dead_lettered");
                Settlement::Ack
            }
            Ok(JobOutcome::Created) => Settlement::Ack,
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

async fn settle(
    ctx: &WorkerContext,
    delivery: &JobDelivery,
    reason: &str,
) -> Result<JobOutcome, SettleError> {
    let job = &delivery.job;
    // The connection goes back to the pool before the announcement, which may ride out a
    // broker outage.
    let outcome = {
        let client = ctx.pool.get().await.map_err(DbError::from)?;
        if csrs::exists(&**client, job.id).await? {
            JobOutcome::Created
        } else {
            jobs::record_failure(&**client, job.id, &job.owner, reason).await?;
            JobOutcome::Failed {
                reason: reason.to_owned(),
            }
        }
    };
    let completion = Completion {
        id: job.id,
        outcome: outcome.clone(),
    };
    ctx.completions.announce(&job.reply_to, &completion).await?;
    Ok(outcome)
}
