//! The dead-letter queue: jobs that exhausted their delivery limit (or could not be decoded).
//! Each one becomes a recorded failure and a `Failed` completion event, so the waiting client,
//! and any retry with the same Idempotency-Key, gets 1500 instead of waiting for ever. A job
//! whose row exists after all (its last attempt committed, then lost its ack) is a success.

use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use lapin::types::AMQPValue;

use super::WorkerContext;
use super::job::announce;
use crate::amqp::{CreateJob, Outcome};
use crate::db::{csrs, jobs};
use crate::metrics;

pub async fn handle(ctx: WorkerContext, delivery: Delivery) {
    let Ok(job) = serde_json::from_slice::<CreateJob>(&delivery.data) else {
        tracing::error!("undecodable dead-lettered message dropped");
        let _ = delivery.ack(BasicAckOptions::default()).await;
        return;
    };
    let reason = death_reason(&delivery);
    let settled = async {
        let client = ctx.pool.get().await.map_err(|e| e.to_string())?;
        let outcome = if csrs::exists(&**client, job.id)
            .await
            .map_err(|e| e.to_string())?
        {
            Outcome::Created
        } else {
            jobs::record_failure(&**client, job.id, &job.owner, &reason)
                .await
                .map_err(|e| e.to_string())?;
            Outcome::Failed {
                reason: reason.clone(),
            }
        };
        announce(&ctx, &job, outcome.clone())
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(outcome)
    }
    .await;
    match settled {
        Ok(outcome) => {
            if let Outcome::Failed { .. } = outcome {
                tracing::error!(csr_id = %job.id, %reason, "create failed for good");
                metrics::job("dead_lettered");
            }
            let _ = delivery.ack(BasicAckOptions::default()).await;
        }
        Err(e) => {
            tracing::warn!(csr_id = %job.id, error = %e, "dead letter not settled; retrying later");
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            let _ = delivery
                .nack(BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                })
                .await;
        }
    }
}

/// A readable reason from the `x-death` header RabbitMQ adds when dead-lettering.
fn death_reason(delivery: &Delivery) -> String {
    let reason = delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("x-death").cloned())
        .and_then(|v| match v {
            AMQPValue::FieldArray(a) => a.as_slice().first().cloned(),
            _ => None,
        })
        .and_then(|first| match first {
            AMQPValue::FieldTable(t) => t.inner().get("reason").cloned(),
            _ => None,
        })
        .and_then(|r| match r {
            AMQPValue::LongString(s) => Some(s.to_string()),
            AMQPValue::ShortString(s) => Some(s.to_string()),
            _ => None,
        });
    match reason.as_deref() {
        Some("delivery_limit") => {
            "the job failed on every delivery (delivery limit reached)".into()
        }
        Some("rejected") => "the job was rejected as impossible to process".into(),
        Some(other) => format!("the job was dead-lettered ({other})"),
        None => "the job was dead-lettered".into(),
    }
}
