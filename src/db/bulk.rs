//! The `batch_chunks`, `bulk_shares` and `bulk_clock` tables: the bulk lane's backlog, stored
//! with its batches, and the fair-share bookkeeping that orders it across tenants.

use chrono::{DateTime, Utc};
use tokio_postgres::GenericClient;

use super::DbError;
use super::prepared::Prepared;
use crate::domain::{BatchId, CreateChunk, CreateCsr, Owner, OwnerKind};

/// Serialises dispatchers (in every process) on one database: one message is picked, published
/// and recorded at a time, so two never take the same chunk or the same turn.
pub const DISPATCH_LOCK: i64 = 0x6373_7264_6275_6c6b; // "csrdbulk"

/// A chunk to store with its batch.
pub struct NewChunk {
    pub seq: i32,
    pub first_index: i32,
    pub item_count: i32,
    pub cost: i32,
    /// The items, a JSON array of validated create bodies.
    pub items: Vec<u8>,
}

/// Stores a batch's chunks, not yet dispatched.
pub async fn insert_chunks(
    client: &impl Prepared,
    batch: BatchId,
    owner: &Owner,
    created_at: DateTime<Utc>,
    chunks: &[NewChunk],
) -> Result<(), DbError> {
    let seqs: Vec<i32> = chunks.iter().map(|c| c.seq).collect();
    let firsts: Vec<i32> = chunks.iter().map(|c| c.first_index).collect();
    let counts: Vec<i32> = chunks.iter().map(|c| c.item_count).collect();
    let costs: Vec<i32> = chunks.iter().map(|c| c.cost).collect();
    let items: Vec<&[u8]> = chunks.iter().map(|c| c.items.as_slice()).collect();
    client
        .client()
        .execute(
            &client.statement("INSERT INTO batch_chunks (batch_id, seq, owner_kind, owner_id, batch_created_at,
                 first_index, item_count, cost, items)
             SELECT $1, s, $2, $3, $4, f, n, c, i
             FROM unnest($5::int4[], $6::int4[], $7::int4[], $8::int4[], $9::bytea[])
                 AS u (s, f, n, c, i)").await?,
            &[
                &batch.0,
                &owner.kind().as_str(),
                &owner.id(),
                &created_at,
                &seqs,
                &firsts,
                &counts,
                &costs,
                &items,
            ],
        )
        .await?;
    Ok(())
}

/// One stored chunk going out.
#[derive(Debug)]
pub struct ChunkPart {
    pub batch: BatchId,
    pub seq: i32,
    pub first_index: u32,
    pub item_count: u32,
    pub created_at: DateTime<Utc>,
    /// The items, or why they cannot be read (such a chunk's items are recorded as failed).
    pub items: Result<Vec<CreateCsr>, String>,
    pub trace_context: Vec<(String, String)>,
}

/// What goes out next: one tenant's next chunks, as many as fit one message.
#[derive(Debug)]
pub struct NextDispatch {
    pub owner: Owner,
    pub weight: f64,
    /// The start tag (start-time fair queuing) of this message.
    pub start: f64,
    /// Cost units of every part together.
    pub cost: f64,
    pub parts: Vec<ChunkPart>,
}

/// The next message in fair-share order. Every tenant with undispatched chunks offers its
/// oldest batch's next one; the tenant with the fewest chunks already with the workers goes
/// first (so a tenant whose chunks progress slowly cannot fill the workers' bulk prefetch),
/// then the one with the smallest start tag (`max(the tenant's finish tag, the clock)`), then
/// the older batch. Its following chunks ride along while the message stays within
/// `max_cost`, so a tenant's small batches travel together. Call it holding
/// [`DISPATCH_LOCK`].
pub async fn next_dispatch(
    client: &impl Prepared,
    max_cost: u32,
) -> Result<Option<NextDispatch>, DbError> {
    // The tenants are found by skipping through the index (a recursive query), never by
    // reading every waiting chunk.
    let Some(pick) = client
        .client()
        .query_opt(
            &client
                .statement(
                    "WITH RECURSIVE tenants (owner_kind, owner_id) AS (
                 (SELECT owner_kind, owner_id FROM batch_chunks WHERE dispatched_at IS NULL
                  ORDER BY owner_kind, owner_id LIMIT 1)
                 UNION ALL
                 SELECT n.owner_kind, n.owner_id FROM tenants t CROSS JOIN LATERAL (
                     SELECT owner_kind, owner_id FROM batch_chunks
                     WHERE dispatched_at IS NULL
                       AND (owner_kind, owner_id) > (t.owner_kind, t.owner_id)
                     ORDER BY owner_kind, owner_id LIMIT 1) n
             ), heads AS (
                 SELECT h.* FROM tenants t CROSS JOIN LATERAL (
                     SELECT owner_kind, owner_id, batch_id, batch_created_at FROM batch_chunks c
                     WHERE c.dispatched_at IS NULL
                       AND c.owner_kind = t.owner_kind AND c.owner_id = t.owner_id
                     ORDER BY batch_created_at, batch_id, seq LIMIT 1) h
             )
             SELECT h.owner_kind, h.owner_id,
                    greatest(coalesce(s.finish, k.now), k.now) AS start,
                    coalesce(l.weight, 1) AS weight,
                    (SELECT count(*) FROM batch_chunks f
                     WHERE f.owner_kind = h.owner_kind AND f.owner_id = h.owner_id
                       AND f.dispatched_at IS NOT NULL AND f.settled_at IS NULL) AS in_flight
             FROM heads h
             CROSS JOIN bulk_clock k
             LEFT JOIN bulk_shares s USING (owner_kind, owner_id)
             LEFT JOIN tenant_limits l USING (owner_kind, owner_id)
             ORDER BY in_flight, start, h.batch_created_at, h.batch_id
             LIMIT 1",
                )
                .await?,
            &[],
        )
        .await?
    else {
        return Ok(None);
    };
    let kind: &str = pick.get("owner_kind");
    let owner_id: &str = pick.get("owner_id");
    let owner = OwnerKind::parse(kind)
        .and_then(|k| Owner::parse(k, owner_id))
        .ok_or_else(|| DbError::Corrupt("chunk owner".into()))?;
    // The tenant's next chunks within one message's cost (the first always).
    let rows = client
        .client()
        .query(
            &client
                .statement(
                    "SELECT c.batch_id, c.seq, c.first_index, c.item_count, c.cost, c.items,
                    b.created_at, b.trace_context
             FROM (SELECT batch_id, seq,
                          sum(cost) OVER (ORDER BY batch_created_at, batch_id, seq) AS running,
                          row_number() OVER (ORDER BY batch_created_at, batch_id, seq) AS n
                   FROM (SELECT batch_id, seq, cost, batch_created_at FROM batch_chunks
                         WHERE dispatched_at IS NULL AND owner_kind = $1 AND owner_id = $2
                         ORDER BY batch_created_at, batch_id, seq LIMIT 512) next
                  ) w
             JOIN batch_chunks c USING (batch_id, seq)
             JOIN batches b ON b.id = c.batch_id
             WHERE w.n = 1 OR w.running <= $3
             ORDER BY w.n",
                )
                .await?,
            &[&kind, &owner_id, &i64::from(max_cost)],
        )
        .await?;
    let mut cost = 0.0;
    let mut parts = Vec::with_capacity(rows.len());
    for row in &rows {
        cost += f64::from(row.get::<_, i32>("cost"));
        let count = |column: &str| {
            u32::try_from(row.get::<_, i32>(column))
                .map_err(|_| DbError::Corrupt(format!("chunk {column}")))
        };
        let items: Vec<u8> = row.get("items");
        parts.push(ChunkPart {
            batch: BatchId(row.get("batch_id")),
            seq: row.get("seq"),
            first_index: count("first_index")?,
            item_count: count("item_count")?,
            created_at: row.get("created_at"),
            items: serde_json::from_slice(&items).map_err(|e| format!("unreadable items: {e}")),
            trace_context: row
                .get::<_, Option<serde_json::Value>>("trace_context")
                .and_then(|v| {
                    serde_json::from_value::<std::collections::BTreeMap<String, String>>(v).ok()
                })
                .map(|m| m.into_iter().collect())
                .unwrap_or_default(),
        });
    }
    Ok(Some(NextDispatch {
        owner,
        weight: pick.get("weight"),
        start: pick.get("start"),
        cost,
        parts,
    }))
}

/// Records `next` as dispatched and moves the fair-share tags: the tenant's finish tag to
/// `finish`, the clock to `next.start`. A part whose items could not be read is settled at
/// once (its items were recorded as failed).
pub async fn mark_dispatched(
    client: &impl Prepared,
    next: &NextDispatch,
    finish: f64,
) -> Result<(), DbError> {
    let batches: Vec<uuid::Uuid> = next.parts.iter().map(|p| p.batch.0).collect();
    let seqs: Vec<i32> = next.parts.iter().map(|p| p.seq).collect();
    let unreadable: Vec<bool> = next.parts.iter().map(|p| p.items.is_err()).collect();
    client
        .client()
        .execute(
            &client
                .statement(
                    "WITH chunk AS (
                 UPDATE batch_chunks c SET dispatched_at = now(),
                     settled_at = CASE WHEN u.unreadable THEN now() END
                 FROM unnest($1::uuid[], $2::int4[], $3::bool[]) AS u (b, s, unreadable)
                 WHERE c.batch_id = u.b AND c.seq = u.s
             ), share AS (
                 INSERT INTO bulk_shares (owner_kind, owner_id, finish) VALUES ($4, $5, $6)
                 ON CONFLICT (owner_kind, owner_id) DO UPDATE SET finish = excluded.finish
             )
             UPDATE bulk_clock SET now = $7",
                )
                .await?,
            &[
                &batches,
                &seqs,
                &unreadable,
                &next.owner.kind().as_str(),
                &next.owner.id(),
                &finish,
                &next.start,
            ],
        )
        .await?;
    Ok(())
}

/// Records the stored chunks `chunk` carried as settled (their items made or failed), in the
/// transaction that settled them: a chunk is known by its first item.
pub async fn settle_chunks(client: &impl Prepared, chunk: &CreateChunk) -> Result<(), DbError> {
    let (batches, indexes): (Vec<uuid::Uuid>, Vec<i32>) = chunk
        .jobs
        .iter()
        .filter_map(|j| j.batch)
        .filter_map(|b| Some((b.batch_id, i32::try_from(b.index).ok()?)))
        .unzip();
    if batches.is_empty() {
        return Ok(());
    }
    client
        .client()
        .execute(
            &client
                .statement(
                    "UPDATE batch_chunks c SET settled_at = now()
             FROM unnest($1::uuid[], $2::int4[]) AS m (b, i)
             WHERE c.batch_id = m.b AND c.first_index = m.i AND c.settled_at IS NULL",
                )
                .await?,
            &[&batches, &indexes],
        )
        .await?;
    Ok(())
}

/// Adopts batches an earlier release stored whole (see the V10 migration), submitted before
/// `older_than_secs` ago; how many.
pub async fn adopt_legacy_batches(
    client: &impl GenericClient,
    older_than_secs: f64,
) -> Result<i64, DbError> {
    Ok(client
        .query_one(
            "SELECT csrd_adopt_legacy_batches(make_interval(secs => $1))",
            &[&older_than_secs],
        )
        .await?
        .get(0))
}
