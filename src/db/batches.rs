//! The `batches` table.

use chrono::{DateTime, Utc};
use tokio_postgres::{GenericClient, Row};

use super::DbError;
use super::csrs::{PUBLIC_COLUMNS_OF_C, csr_from_row};
use super::prepared::Prepared;
use crate::domain::{Batch, BatchEntry, BatchId, CreateCsr, CsrId, ItemState, Owner, OwnerKind};

/// An earlier submission under the same Idempotency-Key.
#[derive(Debug, Clone)]
pub struct EarlierBatch {
    pub id: BatchId,
    pub request_hash: Vec<u8>,
}

/// A batch to store.
pub struct NewBatch<'a> {
    pub id: BatchId,
    pub owner: &'a Owner,
    pub created_at: DateTime<Utc>,
    pub requests: &'a [CreateCsr],
    /// The Idempotency-Key and the request's fingerprint.
    pub key: Option<(&'a str, &'a [u8])>,
    /// The submitting request's W3C trace context, for the chunks dispatched later.
    pub trace_context: &'a [(&'static str, String)],
    /// Cost units per chunk, at most.
    pub chunk_cost: u32,
}

/// What a tenant may have: `None` is unlimited.
#[derive(Debug, Clone, Copy, Default)]
pub struct Allowance {
    /// Items accepted and not yet settled, at most (this batch included).
    pub max_outstanding: Option<i64>,
    /// Items accepted in the current clock hour, at most.
    pub items_per_hour: Option<i64>,
}

#[derive(Debug)]
pub enum Stored {
    /// Stored with its chunks; the dispatchers take it from here.
    New,
    /// The tenant used the Idempotency-Key before: that batch, nothing stored.
    Earlier(EarlierBatch),
    /// Over the tenant's outstanding items: nothing stored.
    OverOutstanding { outstanding: i64, limit: i64 },
    /// Over the tenant's hourly quota: nothing stored.
    OverHourlyQuota { limit: i64 },
}

/// Stores a batch and its chunks in one transaction, unless the tenant used the key before or
/// the batch would take it over its allowance. A tenant's submissions take turns (an advisory
/// lock per tenant), so concurrent ones on several ingresses cannot both slip under a limit.
pub async fn insert(
    client: &mut deadpool_postgres::ClientWrapper,
    batch: &NewBatch<'_>,
    allowance: Allowance,
) -> Result<Stored, DbError> {
    let owner = batch.owner;
    let (kind, owner_id) = (owner.kind().as_str(), owner.id());
    let total =
        i32::try_from(batch.requests.len()).map_err(|_| DbError::Corrupt("batch size".into()))?;
    let tx = client.transaction().await?;
    // Waiting its turn longer than this is a 503 (retry), not a pooled connection held on.
    tx.batch_execute("SET LOCAL lock_timeout = '10s'").await?;
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('csrd.batches:' || $1 || ':' || $2, 0))",
        &[&kind, &owner_id],
    )
    .await?;
    if let Some((key, _)) = batch.key
        && let Some(earlier) = earlier(&*tx, owner, key).await?
    {
        return Ok(Stored::Earlier(earlier));
    }
    if let Some(limit) = allowance.max_outstanding {
        let outstanding: i64 = tx
            .query_one(
                "SELECT coalesce(sum(total - done - failed), 0)::int8 FROM batches
                 WHERE owner_kind = $1 AND owner_id = $2 AND finished_at IS NULL",
                &[&kind, &owner_id],
            )
            .await?
            .get(0);
        if outstanding + i64::from(total) > limit {
            return Ok(Stored::OverOutstanding { outstanding, limit });
        }
    }
    if let Some(limit) = allowance.items_per_hour
        && !super::tenant_limits::count_hourly_items(&*tx, owner, i64::from(total), limit).await?
    {
        return Ok(Stored::OverHourlyQuota { limit });
    }
    let (key, hash) = batch.key.unzip();
    let trace: serde_json::Map<String, serde_json::Value> = batch
        .trace_context
        .iter()
        .map(|(k, v)| ((*k).to_owned(), serde_json::Value::String(v.clone())))
        .collect();
    let trace = serde_json::Value::Object(trace);
    // `published_at`: handed to the dispatchers at once (releases before them published the
    // chunks themselves, and republish a batch whose column is NULL).
    tx.execute(
        "INSERT INTO batches (id, owner_kind, owner_id, total, created_at, idempotency_key,
             request_hash, trace_context, published_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $5)",
        &[
            &batch.id.0,
            &kind,
            &owner_id,
            &total,
            &batch.created_at,
            &key,
            &hash,
            &trace,
        ],
    )
    .await?;
    let chunks = crate::domain::cut_chunks(batch.requests, batch.chunk_cost)
        .into_iter()
        .enumerate()
        .map(|(seq, span)| {
            let items = serde_json::to_vec(&batch.requests[span.first..span.first + span.len])
                .map_err(|e| DbError::Corrupt(e.to_string()))?;
            let int = |n: usize| i32::try_from(n).map_err(|_| DbError::Corrupt("chunk".into()));
            Ok(super::bulk::NewChunk {
                seq: int(seq)?,
                first_index: int(span.first)?,
                item_count: int(span.len)?,
                cost: i32::try_from(span.cost).map_err(|_| DbError::Corrupt("chunk".into()))?,
                items,
            })
        })
        .collect::<Result<Vec<_>, DbError>>()?;
    super::bulk::insert_chunks(&tx, batch.id, owner, batch.created_at, &chunks).await?;
    tx.commit().await?;
    Ok(Stored::New)
}

async fn earlier(
    client: &impl GenericClient,
    owner: &Owner,
    key: &str,
) -> Result<Option<EarlierBatch>, DbError> {
    let row = client
        .query_opt(
            "SELECT id, request_hash FROM batches
             WHERE owner_kind = $1 AND owner_id = $2 AND idempotency_key = $3",
            &[&owner.kind().as_str(), &owner.id(), &key],
        )
        .await?;
    Ok(row.map(|row| EarlierBatch {
        id: BatchId(row.get(0)),
        request_hash: row.get::<_, Option<Vec<u8>>>(1).unwrap_or_default(),
    }))
}

/// Adds settled items to their batches' counts (`(batch, created, failed)`), finishing a batch
/// whose items are all settled (its stored chunks are then of no more use: deleted). Called in
/// the transaction that settled them.
pub async fn record_progress(
    client: &impl Prepared,
    progress: &[(BatchId, i32, i32)],
) -> Result<(), DbError> {
    for (id, created, failed) in progress {
        client
        .client()
        .execute(
            &client.statement("WITH progress AS (
                     UPDATE batches SET done = done + $2, failed = failed + $3,
                         finished_at = CASE WHEN done + $2 + failed + $3 >= total THEN now() END
                     WHERE id = $1
                     RETURNING finished_at
                 )
                 DELETE FROM batch_chunks
                 WHERE batch_id = $1 AND EXISTS (SELECT 1 FROM progress WHERE finished_at IS NOT NULL)").await?,
                &[&id.0, created, failed],
            )
            .await?;
    }
    Ok(())
}

const BATCH_COLUMNS: &str =
    "id, owner_kind, owner_id, total, done, failed, created_at, finished_at";

fn batch_from_row(row: &Row) -> Result<Batch, DbError> {
    let kind = OwnerKind::parse(row.get("owner_kind"))
        .ok_or_else(|| DbError::Corrupt("batch owner_kind".into()))?;
    let owner = Owner::parse(kind, row.get("owner_id"))
        .ok_or_else(|| DbError::Corrupt("batch owner_id".into()))?;
    Ok(Batch {
        id: BatchId(row.get("id")),
        owner,
        total: i64::from(row.get::<_, i32>("total")),
        done: i64::from(row.get::<_, i32>("done")),
        failed: i64::from(row.get::<_, i32>("failed")),
        created_at: row.get::<_, DateTime<Utc>>("created_at"),
        finished_at: row.get("finished_at"),
    })
}

/// The batch if `owner` owns it; another tenant's reads as absent.
pub async fn get(
    client: &impl GenericClient,
    owner: &Owner,
    id: BatchId,
) -> Result<Option<Batch>, DbError> {
    let sql = format!(
        "SELECT {BATCH_COLUMNS} FROM batches WHERE id = $1 AND owner_kind = $2 AND owner_id = $3"
    );
    let row = client
        .query_opt(&sql, &[&id.0, &owner.kind().as_str(), &owner.id()])
        .await?;
    row.as_ref().map(batch_from_row).transpose()
}

/// One page of the tenant's batches, newest first, and how many there are.
pub async fn list(
    client: &impl GenericClient,
    owner: &Owner,
    offset: i64,
    limit: i64,
) -> Result<(Vec<Batch>, i64), DbError> {
    let kind = owner.kind().as_str();
    let total: i64 = client
        .query_one(
            "SELECT count(*) FROM batches WHERE owner_kind = $1 AND owner_id = $2",
            &[&kind, &owner.id()],
        )
        .await?
        .get(0);
    let sql = format!(
        "SELECT {BATCH_COLUMNS} FROM batches WHERE owner_kind = $1 AND owner_id = $2
         ORDER BY created_at DESC, id DESC OFFSET $3 LIMIT $4"
    );
    let rows = client
        .query(&sql, &[&kind, &owner.id(), &offset, &limit])
        .await?;
    let batches = rows.iter().map(batch_from_row).collect::<Result<_, _>>()?;
    Ok((batches, total))
}

/// Entries `offset..offset+limit` of a batch, in item order. A missing row means deleted once
/// the batch is finished, not made yet before.
pub async fn results(
    client: &impl Prepared,
    batch: &Batch,
    offset: i64,
    limit: i64,
) -> Result<Vec<BatchEntry>, DbError> {
    let first = offset.clamp(0, batch.total);
    let last = offset.saturating_add(limit).clamp(first, batch.total);
    let indexes: Vec<u32> = (first..last)
        .filter_map(|i| u32::try_from(i).ok())
        .collect();
    let ids: Vec<uuid::Uuid> = indexes
        .iter()
        .map(|i| CsrId::for_batch_item(batch.id.0, *i).0)
        .collect();
    // A batch with no failed item (as read when the request began) skips the failures'
    // index: one probe less per item, most batches' case.
    let (failure, failures_join) = if batch.failed > 0 {
        ("f.reason", "LEFT JOIN failed_jobs f ON f.id = o.id")
    } else {
        ("NULL::text", "")
    };
    let sql = format!(
        "SELECT o.id AS item_csr_id, {failure} AS failure, c.id IS NOT NULL AS created,
                {PUBLIC_COLUMNS_OF_C}
         FROM unnest($1::uuid[]) WITH ORDINALITY AS o(id, n)
         LEFT JOIN custom_csrs c ON c.id = o.id
         {failures_join}
         ORDER BY o.n"
    );
    let rows = client
        .client()
        .query(&client.statement(&sql).await?, &[&ids])
        .await?;
    let finished = batch.finished_at.is_some();
    rows.iter()
        .zip(indexes)
        .map(|(row, index)| {
            let state = if row.get::<_, bool>("created") {
                ItemState::Created(Box::new(csr_from_row(row)?))
            } else if let Some(reason) = row.get::<_, Option<String>>("failure") {
                ItemState::Failed(reason)
            } else if finished {
                ItemState::Deleted
            } else {
                ItemState::Pending
            };
            Ok(BatchEntry {
                index,
                csr_id: CsrId(row.get("item_csr_id")),
                state,
            })
        })
        .collect()
}
