//! The `batches` table.

use chrono::{DateTime, Utc};
use tokio_postgres::{GenericClient, Row};

use super::DbError;
use super::csrs::{PUBLIC_COLUMNS_OF_C, csr_from_row};
use crate::domain::{Batch, BatchEntry, BatchId, CreateCsr, CsrId, ItemState, Owner, OwnerKind};

/// An earlier submission under the same Idempotency-Key.
#[derive(Debug, Clone)]
pub struct EarlierBatch {
    pub id: BatchId,
    pub request_hash: Vec<u8>,
    pub published: bool,
}

/// Stores a batch with its validated items, in one statement. With an Idempotency-Key the
/// tenant already used, nothing is stored and the earlier batch is returned.
pub async fn insert(
    client: &impl GenericClient,
    id: BatchId,
    owner: &Owner,
    created_at: DateTime<Utc>,
    requests: &[CreateCsr],
    key: Option<(&str, &[u8])>,
) -> Result<Option<EarlierBatch>, DbError> {
    let total = i32::try_from(requests.len()).map_err(|_| DbError::Corrupt("batch size".into()))?;
    let items = serde_json::to_vec(requests).map_err(|e| DbError::Corrupt(e.to_string()))?;
    let (key, hash) = key.unzip();
    let inserted = client
        .execute(
            "INSERT INTO batches (id, owner_kind, owner_id, total, items, created_at,
                 idempotency_key, request_hash)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (owner_kind, owner_id, idempotency_key) WHERE idempotency_key IS NOT NULL
             DO NOTHING",
            &[
                &id.0,
                &owner.kind().as_str(),
                &owner.id(),
                &total,
                &items,
                &created_at,
                &key,
                &hash,
            ],
        )
        .await?;
    if inserted == 1 {
        return Ok(None);
    }
    let row = client
        .query_one(
            "SELECT id, request_hash, published_at IS NOT NULL FROM batches
             WHERE owner_kind = $1 AND owner_id = $2 AND idempotency_key = $3",
            &[&owner.kind().as_str(), &owner.id(), &key],
        )
        .await?;
    Ok(Some(EarlierBatch {
        id: BatchId(row.get(0)),
        request_hash: row.get::<_, Option<Vec<u8>>>(1).unwrap_or_default(),
        published: row.get(2),
    }))
}

/// A stored batch's owner, items' created_at and items, to publish them again.
pub async fn items(
    client: &impl GenericClient,
    id: BatchId,
) -> Result<Option<(Owner, DateTime<Utc>, Vec<CreateCsr>)>, DbError> {
    let Some(row) = client
        .query_opt(
            "SELECT owner_kind, owner_id, created_at, items FROM batches WHERE id = $1",
            &[&id.0],
        )
        .await?
    else {
        return Ok(None);
    };
    let kind =
        OwnerKind::parse(row.get(0)).ok_or_else(|| DbError::Corrupt("batch owner".into()))?;
    let owner =
        Owner::parse(kind, row.get(1)).ok_or_else(|| DbError::Corrupt("batch owner".into()))?;
    let items: Vec<u8> = row.get(3);
    let requests = serde_json::from_slice(&items)
        .map_err(|e| DbError::Corrupt(format!("batch items: {e}")))?;
    Ok(Some((owner, row.get(2), requests)))
}

/// Records that the broker confirmed every chunk of the batch.
pub async fn mark_published(client: &impl GenericClient, id: BatchId) -> Result<(), DbError> {
    client
        .execute(
            "UPDATE batches SET published_at = now() WHERE id = $1 AND published_at IS NULL",
            &[&id.0],
        )
        .await?;
    Ok(())
}

/// Batches whose chunks were not all confirmed, submitted before `older_than_secs` ago.
pub async fn unpublished(
    client: &impl GenericClient,
    older_than_secs: f64,
) -> Result<Vec<BatchId>, DbError> {
    let rows = client
        .query(
            "SELECT id FROM batches WHERE published_at IS NULL
             AND created_at < now() - make_interval(secs => $1) ORDER BY created_at LIMIT 100",
            &[&older_than_secs],
        )
        .await?;
    Ok(rows.iter().map(|r| BatchId(r.get(0))).collect())
}

/// Adds settled items to their batches' counts (`(batch, created, failed)`), finishing a batch
/// whose items are all settled. Called in the transaction that settled them.
pub async fn record_progress(
    client: &impl GenericClient,
    progress: &[(BatchId, i32, i32)],
) -> Result<(), DbError> {
    for (id, created, failed) in progress {
        client
            .execute(
                "UPDATE batches SET done = done + $2, failed = failed + $3,
                     finished_at = CASE WHEN done + $2 + failed + $3 >= total THEN now() END
                 WHERE id = $1",
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
    client: &impl GenericClient,
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
    let sql = format!(
        "SELECT o.id AS item_csr_id, f.reason AS failure, c.id IS NOT NULL AS created,
                {PUBLIC_COLUMNS_OF_C}
         FROM unnest($1::uuid[]) WITH ORDINALITY AS o(id, n)
         LEFT JOIN custom_csrs c ON c.id = o.id
         LEFT JOIN failed_jobs f ON f.id = o.id
         ORDER BY o.n"
    );
    let rows = client.query(&sql, &[&ids]).await?;
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
