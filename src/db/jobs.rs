//! Job bookkeeping: Idempotency-Key records and creates that failed for good. The job is kept
//! as JSON (public request data only, never key material) so a retry can republish it under
//! the same CSR id, also after a restart.

use std::time::Duration;

use tokio_postgres::GenericClient;

use super::DbError;
use super::prepared::Prepared;
use crate::domain::{CreateJob, CsrId, IdempotencyKey, IdempotencyRecord, Owner};

/// Claims `key` for `job`. Returns None when this call claimed it, or the earlier record.
pub async fn claim_idempotency_key(
    client: &impl GenericClient,
    key: &IdempotencyKey,
    request_fingerprint: &[u8],
    job: &CreateJob,
) -> Result<Option<IdempotencyRecord>, DbError> {
    let owner = &job.owner;
    let job_json = serde_json::to_value(job).map_err(|e| DbError::Corrupt(e.to_string()))?;
    let inserted = client
        .execute(
            "INSERT INTO idempotency_keys (owner_kind, owner_id, key, request_hash, csr_id, job)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            &[
                &owner.kind().as_str(),
                &owner.id(),
                &key.as_str(),
                &request_fingerprint,
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
            "SELECT request_hash, job, extract(epoch FROM now() - created_at)::float8,
                    published_at IS NOT NULL, csr_deleted_at IS NOT NULL
             FROM idempotency_keys WHERE owner_kind = $1 AND owner_id = $2 AND key = $3",
            &[&owner.kind().as_str(), &owner.id(), &key.as_str()],
        )
        .await?;
    let job: serde_json::Value = row.get(1);
    let age: f64 = row.get(2);
    Ok(Some(IdempotencyRecord {
        request_fingerprint: row.get(0),
        job: serde_json::from_value(job)
            .map_err(|e| DbError::Corrupt(format!("idempotency job: {e}")))?,
        age: Duration::try_from_secs_f64(age).unwrap_or_default(),
        published: row.get(3),
        csr_deleted: row.get(4),
    }))
}

/// Records that the broker confirmed the job claimed under `key`.
pub async fn mark_published(
    client: &impl GenericClient,
    owner: &Owner,
    key: &IdempotencyKey,
) -> Result<(), DbError> {
    client
        .execute(
            "UPDATE idempotency_keys SET published_at = now()
             WHERE owner_kind = $1 AND owner_id = $2 AND key = $3 AND published_at IS NULL",
            &[&owner.kind().as_str(), &owner.id(), &key.as_str()],
        )
        .await?;
    Ok(())
}

/// Gives up a claim whose job never reached the broker (the client was told 503), so that a
/// retry starts afresh. Only this claim: a record for another CSR id is left alone.
pub async fn release_claim(
    client: &impl GenericClient,
    owner: &Owner,
    key: &IdempotencyKey,
    id: CsrId,
) -> Result<(), DbError> {
    client
        .execute(
            "DELETE FROM idempotency_keys
             WHERE owner_kind = $1 AND owner_id = $2 AND key = $3 AND csr_id = $4 AND published_at IS NULL",
            &[&owner.kind().as_str(), &owner.id(), &key.as_str(), &id.0],
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

/// Records failures for many creates with one statement (`(id, owner, reason)`). Returns the
/// ids recorded by this call (not those recorded before).
pub async fn record_failures(
    client: &impl Prepared,
    failures: &[(CsrId, &Owner, &str)],
) -> Result<Vec<CsrId>, DbError> {
    if failures.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<uuid::Uuid> = failures.iter().map(|f| f.0.0).collect();
    let kinds: Vec<&str> = failures.iter().map(|f| f.1.kind().as_str()).collect();
    let owners: Vec<&str> = failures.iter().map(|f| f.1.id()).collect();
    let reasons: Vec<&str> = failures.iter().map(|f| f.2).collect();
    let rows = client
        .client()
        .query(
            &client
                .statement(
                    "INSERT INTO failed_jobs (id, owner_kind, owner_id, reason)
             SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[])
             ON CONFLICT (id) DO NOTHING RETURNING id",
                )
                .await?,
            &[&ids, &kinds, &owners, &reasons],
        )
        .await?;
    Ok(rows.iter().map(|r| CsrId(r.get(0))).collect())
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
