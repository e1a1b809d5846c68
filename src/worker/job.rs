//! Handling one job delivery.

use std::time::{Duration, Instant};

use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions, BasicRejectOptions};
use tracing::Instrument;

use super::WorkerContext;
use crate::amqp::publish::Route;
use crate::amqp::{Completion, CreateJob, Outcome, PublishError};
use crate::crypto::{build_csr, generate_key, seal};
use crate::db::{DbError, csrs};
use crate::domain::CustomCsr;
use crate::metrics;

/// Transient database trouble is retried in place for this long before the job goes back
/// to the queue (where the delivery limit eventually dead-letters it).
const DB_RETRY_BUDGET: Duration = Duration::from_secs(60);
/// How long a finished job waits for the broker to take its completion event.
const ANNOUNCE_RETRY_BUDGET: Duration = Duration::from_secs(30);

enum JobError {
    /// Cannot succeed on any retry: dead-letter it and tell the client.
    Permanent(String),
    /// May succeed later: return it to the queue.
    Transient(String),
}

pub async fn handle(ctx: WorkerContext, delivery: Delivery) {
    let job: CreateJob = match serde_json::from_slice(&delivery.data) {
        Ok(job) => job,
        Err(e) => {
            tracing::error!(error = %e, "undecodable job; dead-lettering it");
            metrics::job("rejected");
            let _ = delivery.reject(BasicRejectOptions { requeue: false }).await;
            return;
        }
    };
    let span = tracing::info_span!("create_job", csr_id = %job.id, key_type = job.request.key_type.as_str());
    crate::telemetry::adopt_parent(&span, |name| header(&delivery, name));
    async move {
        match process(&ctx, &job).await {
            Ok(replayed) => {
                metrics::job(if replayed { "replayed" } else { "created" });
                // Announce before acking: if the announcement fails the job is redelivered,
                // and the redelivery (finding the row) announces again.
                if let Err(e) = announce(&ctx, &job, Outcome::Created).await {
                    tracing::warn!(error = %e, "completion event not published; requeueing the job");
                    let _ = delivery.nack(BasicNackOptions { requeue: true, ..Default::default() }).await;
                    return;
                }
                if let Err(e) = delivery.ack(BasicAckOptions::default()).await {
                    tracing::warn!(error = %e, "could not ack the job; it will be redelivered and replayed");
                }
            }
            Err(JobError::Permanent(reason)) => {
                // The dead-letter consumer records the failure and tells the waiting client.
                tracing::error!(%reason, "job cannot succeed; dead-lettering it");
                metrics::job("failed");
                let _ = delivery.reject(BasicRejectOptions { requeue: false }).await;
            }
            Err(JobError::Transient(reason)) => {
                tracing::warn!(%reason, "job failed; returning it to the queue");
                metrics::job("retried");
                let _ = delivery.nack(BasicNackOptions { requeue: true, ..Default::default() }).await;
            }
        }
    }
    .instrument(span)
    .await
}

/// A string header of a delivery (trace context travels in `traceparent`).
fn header(delivery: &Delivery, name: &str) -> Option<String> {
    match delivery.properties.headers().as_ref()?.inner().get(name)? {
        lapin::types::AMQPValue::LongString(s) => Some(s.to_string()),
        lapin::types::AMQPValue::ShortString(s) => Some(s.to_string()),
        _ => None,
    }
}

/// Makes the CSR unless it already exists. Returns whether it already existed.
async fn process(ctx: &WorkerContext, job: &CreateJob) -> Result<bool, JobError> {
    if with_db_retry(ctx, || async {
        let client = ctx.pool.get().await?;
        csrs::exists(&**client, job.id).await
    })
    .await?
    {
        return Ok(true);
    }

    let permit = ctx
        .keygen_permits
        .acquire()
        .await
        .map_err(|_| JobError::Transient("worker is stopping".into()))?;
    let keyring = ctx.keyring.clone();
    let (id, owner, request) = (job.id, job.owner.clone(), job.request.clone());
    let span = tracing::Span::current();
    let started = Instant::now();
    let made = tokio::task::spawn_blocking(move || {
        let keygen = tracing::info_span!(parent: &span, "keygen_and_sign");
        keygen.in_scope(|| {
            let key = generate_key(request.key_type).map_err(|e| e.to_string())?;
            let pem = build_csr(&request, &key).map_err(|e| e.to_string())?;
            let sealed = seal(&keyring, id, &owner, &key.pkcs8_der);
            Ok::<_, String>((pem, sealed))
        })
    })
    .await;
    drop(permit);
    let (csr_pem, sealed) = match made {
        Ok(Ok(made)) => made,
        Ok(Err(reason)) => return Err(JobError::Permanent(reason)),
        Err(join) => {
            return Err(JobError::Permanent(format!(
                "key generation panicked: {join}"
            )));
        }
    };
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

async fn with_db_retry<T, F, Fut>(ctx: &WorkerContext, mut op: F) -> Result<T, JobError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, DbError>>,
{
    let started = Instant::now();
    let mut backoff = Duration::from_millis(100);
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e)
                if e.is_transient()
                    && started.elapsed() < DB_RETRY_BUDGET
                    && !ctx.shutdown.is_cancelled() =>
            {
                tracing::warn!(error = %e, "database unavailable; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            Err(e) if e.is_transient() => return Err(JobError::Transient(e.to_string())),
            Err(e) => return Err(JobError::Permanent(e.to_string())),
        }
    }
}

/// Publishes the completion event, riding out a short broker outage (the row is committed;
/// only the wake-up is missing), so a reconnect does not cost the job a delivery attempt.
pub(super) async fn announce(
    ctx: &WorkerContext,
    job: &CreateJob,
    outcome: Outcome,
) -> Result<(), PublishError> {
    let exchange = ctx.topology.events_exchange();
    let completion = Completion {
        id: job.id,
        outcome,
    };
    let started = Instant::now();
    loop {
        let sent = ctx
            .events
            .publish_json(
                Route {
                    exchange: &exchange,
                    routing_key: &job.reply_to,
                    // The waiting ingress may be gone; its client then reads Postgres instead.
                    mandatory: false,
                    persistent: false,
                },
                &job.id.to_string(),
                &completion,
                &crate::telemetry::current_context_headers(),
            )
            .await;
        match sent {
            Err(e)
                if e.is_connection_problem()
                    && started.elapsed() < ANNOUNCE_RETRY_BUDGET
                    && !ctx.shutdown.is_cancelled() =>
            {
                ctx.events
                    .broker()
                    .wait_connected(Duration::from_secs(2))
                    .await;
            }
            other => return other,
        }
    }
}
