//! Job bookkeeping: Idempotency-Key records and creates that failed for good.

use tokio_postgres::GenericClient;

use super::DbError;
use crate::amqp::CreateJob;
use crate::domain::{CsrId, Owner};

pub struct IdempotencyRecord {
    pub request_hash: Vec<u8>,
    pub job: CreateJob,
    /// Seconds since the record was made.
    pub age_secs: f64,
    /// Whether the broker confirmed the job.
    pub published: bool,
}

/// Claims `key` for `job`. Returns None when this call claimed it, or the existing record.
pub async fn claim_idempotency_key(
    client: &impl GenericClient,
    owner: &Owner,
    key: &str,
    request_hash: &[u8],
    job: &CreateJob,
) -> Result<Option<IdempotencyRecord>, DbError> {
    let job_json = serde_json::to_value(job).map_err(|e| DbError::Corrupt(e.to_string()))?;
    let inserted = client
        .execute(
            "INSERT INTO idempotency_keys (owner_kind, owner_id, key, request_hash, csr_id, job)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            &[
                &owner.kind().as_str(),
                &owner.id(),
                &key,
                &request_hash,
                &job.id.0,
                &job_json,
            ],
        )
        .await?;
    if inserted == 1 {
        return Ok(None);
    }
    let row = client
        .query_one(
            "SELECT request_hash, job, extract(epoch FROM now() - created_at)::float8, published_at IS NOT NULL
             FROM idempotency_keys WHERE owner_kind = $1 AND owner_id = $2 AND key = $3",
            &[&owner.kind().as_str(), &owner.id(), &key],
        )
        .await?;
    let job: serde_json::Value = row.get(1);
    Ok(Some(IdempotencyRecord {
        request_hash: row.get(0),
        job: serde_json::from_value(job)
            .map_err(|e| DbError::Corrupt(format!("idempotency job: {e}")))?,
        age_secs: row.get(2),
        published: row.get(3),
    }))
}

/// Records that the broker confirmed the job claimed under `key`.
pub async fn mark_published(
    client: &impl GenericClient,
    owner: &Owner,
    key: &str,
) -> Result<(), DbError> {
    client
        .execute(
            "UPDATE idempotency_keys SET published_at = now()
             WHERE owner_kind = $1 AND owner_id = $2 AND key = $3 AND published_at IS NULL",
            &[&owner.kind().as_str(), &owner.id(), &key],
        )
        .await?;
    Ok(())
}

/// Gives up a claim whose job never reached the broker (the client was told 503), so that a
/// retry starts afresh. Only this claim: a record for another CSR id is left alone.
pub async fn release_claim(
    client: &impl GenericClient,
    owner: &Owner,
    key: &str,
    id: CsrId,
) -> Result<(), DbError> {
    client
        .execute(
            "DELETE FROM idempotency_keys
             WHERE owner_kind = $1 AND owner_id = $2 AND key = $3 AND csr_id = $4 AND published_at IS NULL",
            &[&owner.kind().as_str(), &owner.id(), &key, &id.0],
        )
        .await?;
    Ok(())
}

/// Removes records older than `ttl_hours`; returns how many.
pub async fn prune_idempotency_keys(
    client: &impl GenericClient,
    ttl_hours: u32,
) -> Result<u64, DbError> {
    let hours = f64::from(ttl_hours);
    Ok(client
        .execute(
            "DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(hours => $1::float8::int)",
            &[&hours],
        )
        .await?)
}

pub async fn record_failure(
    client: &impl GenericClient,
    id: CsrId,
    owner: &Owner,
    reason: &str,
) -> Result<(), DbError> {
    client
        .execute(
            "INSERT INTO failed_jobs (id, owner_kind, owner_id, reason) VALUES ($1, $2, $3, $4)
             ON CONFLICT (id) DO NOTHING",
            &[&id.0, &owner.kind().as_str(), &owner.id(), &reason],
        )
        .await?;
    Ok(())
}

/// Why the create with this id failed, if it did.
pub async fn failure(
    client: &impl GenericClient,
    owner: &Owner,
    id: CsrId,
) -> Result<Option<String>, DbError> {
    let row = client
        .query_opt(
            "SELECT reason FROM failed_jobs WHERE id = $1 AND owner_kind = $2 AND owner_id = $3",
            &[&id.0, &owner.kind().as_str(), &owner.id()],
        )
        .await?;
    Ok(row.map(|r| r.get(0)))
}
