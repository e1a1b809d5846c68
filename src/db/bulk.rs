//! The `batch_chunks`, `bulk_shares` and `bulk_clock` tables: the bulk lane's backlog, stored
//! with its batches, and the fair-share bookkeeping that orders it across tenants.

use chrono::{DateTime, Utc};
use tokio_postgres::GenericClient;

use super::DbError;
use crate::domain::{BatchId, CreateCsr, Owner, OwnerKind};

/// Serialises dispatchers (in every process) on one database: one chunk is picked, published
/// and recorded at a time, so two never take the same chunk or the same turn.
pub const DISPATCH_LOCK: i64 = 0x6373_7264_6275_6c6b; // "csrdbulk"

/// A chunk to store with its batch.
pub struct NewChunk {
    pub seq: i32,
    pub first_index: i32,
    pub cost: i32,
    /// The items, a JSON array of validated create bodies.
    pub items: Vec<u8>,
}

/// Stores a batch's chunks, not yet dispatched.
pub async fn insert_chunks(
    client: &impl GenericClient,
    batch: BatchId,
    owner: &Owner,
    created_at: DateTime<Utc>,
    chunks: &[NewChunk],
) -> Result<(), DbError> {
    let seqs: Vec<i32> = chunks.iter().map(|c| c.seq).collect();
    let firsts: Vec<i32> = chunks.iter().map(|c| c.first_index).collect();
    let costs: Vec<i32> = chunks.iter().map(|c| c.cost).collect();
    let items: Vec<&[u8]> = chunks.iter().map(|c| c.items.as_slice()).collect();
    client
        .execute(
            "INSERT INTO batch_chunks (batch_id, seq, owner_kind, owner_id, batch_created_at,
                 first_index, cost, items)
             SELECT $1, s, $2, $3, $4, f, c, i
             FROM unnest($5::int4[], $6::int4[], $7::int4[], $8::bytea[]) AS u (s, f, c, i)",
            &[
                &batch.0,
                &owner.kind().as_str(),
                &owner.id(),
                &created_at,
                &seqs,
                &firsts,
                &costs,
                &items,
            ],
        )
        .await?;
    Ok(())
}

/// The chunk whose turn it is, with what publishing it needs.
#[derive(Debug)]
pub struct NextChunk {
    pub batch: BatchId,
    pub seq: i32,
    pub owner: Owner,
    pub first_index: u32,
    pub cost: f64,
    pub weight: f64,
    /// Its start tag (start-time fair queuing).
    pub start: f64,
    pub created_at: DateTime<Utc>,
    pub items: Vec<CreateCsr>,
    pub trace_context: Vec<(String, String)>,
}

/// The next chunk in fair-share order: every tenant with undispatched chunks offers its oldest
/// batch's next one, and the one with the smallest start tag (`max(the tenant's finish tag,
/// the clock)`) goes; ties go to the older batch. Call it holding [`DISPATCH_LOCK`].
pub async fn next_chunk(client: &impl GenericClient) -> Result<Option<NextChunk>, DbError> {
    let Some(row) = client
        .query_opt(
            "WITH heads AS (
                 SELECT DISTINCT ON (owner_kind, owner_id)
                        owner_kind, owner_id, batch_id, seq, cost, batch_created_at
                 FROM batch_chunks WHERE dispatched_at IS NULL
                 ORDER BY owner_kind, owner_id, batch_created_at, batch_id, seq
             ), pick AS (
                 SELECT h.*, greatest(coalesce(s.finish, k.now), k.now) AS start,
                        coalesce(l.weight, 1) AS weight
                 FROM heads h
                 CROSS JOIN bulk_clock k
                 LEFT JOIN bulk_shares s USING (owner_kind, owner_id)
                 LEFT JOIN tenant_limits l USING (owner_kind, owner_id)
                 ORDER BY start, h.batch_created_at, h.batch_id
                 LIMIT 1
             )
             SELECT p.owner_kind, p.owner_id, p.batch_id, p.seq, p.cost, p.start, p.weight,
                    c.first_index, c.items, b.created_at, b.trace_context
             FROM pick p
             JOIN batch_chunks c ON c.batch_id = p.batch_id AND c.seq = p.seq
             JOIN batches b ON b.id = p.batch_id",
            &[],
        )
        .await?
    else {
        return Ok(None);
    };
    let kind = OwnerKind::parse(row.get("owner_kind"))
        .ok_or_else(|| DbError::Corrupt("chunk owner".into()))?;
    let owner = Owner::parse(kind, row.get("owner_id"))
        .ok_or_else(|| DbError::Corrupt("chunk owner".into()))?;
    let items: Vec<u8> = row.get("items");
    let items = serde_json::from_slice(&items)
        .map_err(|e| DbError::Corrupt(format!("batch chunk items: {e}")))?;
    let trace_context = row
        .get::<_, Option<serde_json::Value>>("trace_context")
        .and_then(|v| serde_json::from_value::<std::collections::BTreeMap<String, String>>(v).ok())
        .map(|m| m.into_iter().collect())
        .unwrap_or_default();
    let first_index: i32 = row.get("first_index");
    Ok(Some(NextChunk {
        batch: BatchId(row.get("batch_id")),
        seq: row.get("seq"),
        owner,
        first_index: u32::try_from(first_index)
            .map_err(|_| DbError::Corrupt("chunk first_index".into()))?,
        cost: f64::from(row.get::<_, i32>("cost")),
        weight: row.get("weight"),
        start: row.get("start"),
        created_at: row.get("created_at"),
        items,
        trace_context,
    }))
}

/// Records `chunk` as dispatched and moves the fair-share tags: the tenant's finish tag to
/// `start + cost / weight`, the clock to `start`.
pub async fn mark_dispatched(
    client: &impl GenericClient,
    chunk: &NextChunk,
) -> Result<(), DbError> {
    let finish = chunk.start + chunk.cost / chunk.weight.max(crate::fairshare::MIN_WEIGHT);
    client
        .execute(
            "WITH chunk AS (
                 UPDATE batch_chunks SET dispatched_at = now() WHERE batch_id = $1 AND seq = $2
             ), share AS (
                 INSERT INTO bulk_shares (owner_kind, owner_id, finish) VALUES ($3, $4, $5)
                 ON CONFLICT (owner_kind, owner_id) DO UPDATE SET finish = excluded.finish
             )
             UPDATE bulk_clock SET now = $6",
            &[
                &chunk.batch.0,
                &chunk.seq,
                &chunk.owner.kind().as_str(),
                &chunk.owner.id(),
                &finish,
                &chunk.start,
            ],
        )
        .await?;
    Ok(())
}
