//! The `custom_csrs` table.

use chrono::{DateTime, Utc};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{GenericClient, Row};

use super::DbError;
use super::audit::{AuditColumns, AuditRow};
use super::prepared::Prepared;
use crate::crypto::SealedKey;
use crate::domain::{
    CreateCsr, CsrId, CustomCsr, Direction, DnsName, KeyDelivery, KeyType, ListQuery, Owner,
    OwnerKind, SortField, Subject,
};

const PUBLIC_COLUMNS: &str = "id, owner_kind, owner_id, key_type, common_name, country, state, locality, \
     organization, organizational_unit, sans, name, description, csr_pem, created_at, key_delivery";

/// The same columns of a table aliased `c`, for joins.
pub(super) const PUBLIC_COLUMNS_OF_C: &str = "c.id, c.owner_kind, c.owner_id, c.key_type, c.common_name, \
     c.country, c.state, c.locality, c.organization, c.organizational_unit, c.sans, c.name, \
     c.description, c.csr_pem, c.created_at, c.key_delivery";

pub(super) fn csr_from_row(row: &Row) -> Result<CustomCsr, DbError> {
    from_row(row)
}

/// Inserts the CSR and its sealed key. Idempotent on the id: returns false when a row with
/// this id already exists (a redelivered job), leaving that row untouched.
pub async fn insert(
    client: &impl GenericClient,
    csr: &CustomCsr,
    sealed: &SealedKey,
) -> Result<bool, DbError> {
    let values = RowValues::of(csr, sealed);
    let n = client
        .execute(
            "INSERT INTO custom_csrs (id, owner_kind, owner_id, key_type, common_name, country, state,
                 locality, organization, organizational_unit, sans, name, description, csr_pem,
                 envelope_version, kek_id, wrapped_dek, dek_nonce, key_nonce, key_ciphertext, created_at,
                 key_delivery)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22)
             ON CONFLICT (id) DO NOTHING",
            &values.params(),
        )
        .await?;
    Ok(n == 1)
}

/// What a chunk's insert does about a row whose id exists already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExistingRows {
    /// None is expected: a plain INSERT, which fails with [`DbError::is_duplicate_csr`] if one
    /// exists (the caller then tries again with `Skip`). Cheaper by about a sixth of the
    /// insert: `ON CONFLICT` makes each row a speculative insertion, confirmed by a WAL record
    /// of its own.
    Fail,
    /// Left untouched (`ON CONFLICT (id) DO NOTHING`): a redelivery, or a race with one.
    Skip,
}

/// Inserts a chunk's CSRs and sealed keys, and the audit events of those it inserts, with one
/// statement (a binary `COPY` for a chunk without events that expects no existing row, such as a
/// batch's): outside a transaction a single create's chunk is written and committed in one
/// round trip instead of four (begin, insert, audit, commit), and a CSR exists with its event
/// or not at all either way. An event is kept when its target is an inserted row's id. Returns
/// the ids this call inserted; with [`ExistingRows::Skip`] a row that already existed (a
/// redelivered chunk) is left untouched and not returned.
pub async fn insert_chunk(
    client: &impl Prepared,
    rows: &[(&CustomCsr, &SealedKey)],
    existing: ExistingRows,
    audit: &[AuditRow<'_>],
) -> Result<Vec<CsrId>, DbError> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    if existing == ExistingRows::Fail && audit.is_empty() {
        return copy_chunk(client, rows).await;
    }
    let mut c = ChunkColumns::with_capacity(rows.len());
    for (csr, sealed) in rows {
        c.push(csr, sealed);
    }
    let sql: &str = match (existing, audit.is_empty()) {
        (ExistingRows::Fail, true) => INSERT_CHUNK,
        (ExistingRows::Skip, true) => INSERT_CHUNK_SKIPPING_EXISTING,
        (ExistingRows::Fail, false) => &INSERT_CHUNK_AUDITED,
        (ExistingRows::Skip, false) => &INSERT_CHUNK_SKIPPING_EXISTING_AUDITED,
    };
    let events = AuditColumns::new(audit);
    let chunk_params: [&(dyn ToSql + Sync); 22] = [
        &c.id,
        &c.owner_kind,
        &c.owner_id,
        &c.key_type,
        &c.common_name,
        &c.country,
        &c.state,
        &c.locality,
        &c.organization,
        &c.organizational_unit,
        &c.sans,
        &c.name,
        &c.description,
        &c.csr_pem,
        &c.envelope_version,
        &c.kek_id,
        &c.wrapped_dek,
        &c.dek_nonce,
        &c.key_nonce,
        &c.ciphertext,
        &c.created_at,
        &c.key_delivery,
    ];
    let event_params = events.params();
    let params: Vec<&(dyn ToSql + Sync)> = if audit.is_empty() {
        chunk_params.to_vec()
    } else {
        chunk_params.iter().chain(&event_params).copied().collect()
    };
    let inserted = client
        .client()
        .query(&client.statement(sql).await?, &params)
        .await?;
    Ok(inserted.iter().map(|r| CsrId(r.get(0))).collect())
}

/// The columns [`copy_chunk`] writes, in order, with their types.
const COPY_CHUNK: &str =
    "COPY custom_csrs (id, owner_kind, owner_id, key_type, common_name, country,
     state, locality, organization, organizational_unit, sans, name, description, csr_pem,
     envelope_version, kek_id, wrapped_dek, dek_nonce, key_nonce, key_ciphertext, created_at,
     key_delivery) FROM STDIN (FORMAT binary)";
const COPY_CHUNK_TYPES: [Type; 22] = [
    Type::UUID,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT_ARRAY,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::INT2,
    Type::TEXT,
    Type::BYTEA,
    Type::BYTEA,
    Type::BYTEA,
    Type::BYTEA,
    Type::TIMESTAMPTZ,
    Type::TEXT,
];

/// Inserts a chunk's rows with binary `COPY`, which fails as the plain insert does if one of
/// the ids exists. Postgres then stores the rows a page at a time (one WAL record per page of
/// tuples) and decodes no arrays: measured with 512-row chunks, about two thirds of the plain
/// insert's CPU in the Postgres backend. Every row is inserted, or the statement fails.
async fn copy_chunk(
    client: &impl Prepared,
    rows: &[(&CustomCsr, &SealedKey)],
) -> Result<Vec<CsrId>, DbError> {
    let statement = client.statement(COPY_CHUNK).await?;
    // Transactions and pooled connections share the connection's client: a COPY runs inside
    // whatever transaction the connection is in.
    let sink = client.client().client().copy_in(&statement).await?;
    let writer = BinaryCopyInWriter::new(sink, &COPY_CHUNK_TYPES);
    let mut writer = std::pin::pin!(writer);
    for (csr, sealed) in rows {
        writer
            .as_mut()
            .write(&RowValues::of(csr, sealed).params())
            .await?;
    }
    writer.finish().await?;
    Ok(rows.iter().map(|(csr, _)| csr.id).collect())
}

/// One row's values in the table's column order, as `insert` and `copy_chunk` bind them.
struct RowValues<'a> {
    csr: &'a CustomCsr,
    sealed: &'a SealedKey,
    owner_kind: &'static str,
    owner_id: &'a str,
    key_type: &'static str,
    sans: Vec<&'a str>,
    key_delivery: Option<&'static str>,
}

impl<'a> RowValues<'a> {
    fn of(csr: &'a CustomCsr, sealed: &'a SealedKey) -> Self {
        let r = &csr.request;
        Self {
            csr,
            sealed,
            owner_kind: csr.owner.kind().as_str(),
            owner_id: csr.owner.id(),
            key_type: r.key_type.as_str(),
            sans: r.sans.iter().map(DnsName::as_str).collect(),
            key_delivery: r.key_delivery.stored(),
        }
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 22] {
        let (csr, sealed) = (self.csr, self.sealed);
        let r = &csr.request;
        let s = &r.subject;
        [
            &csr.id.0,
            &self.owner_kind,
            &self.owner_id,
            &self.key_type,
            &s.common_name,
            &s.country,
            &s.state,
            &s.locality,
            &s.organization,
            &s.organizational_unit,
            &self.sans,
            &r.name,
            &r.description,
            &csr.csr_pem,
            &sealed.version,
            &sealed.kek_id,
            &sealed.wrapped_dek,
            &sealed.dek_nonce,
            &sealed.key_nonce,
            &sealed.ciphertext,
            &csr.created_at,
            &self.key_delivery,
        ]
    }
}

/// A macro rather than a const so `concat!` can take it.
macro_rules! insert_chunk_rows {
    () => {
        "INSERT INTO custom_csrs (id, owner_kind, owner_id, key_type, common_name, country, state,
             locality, organization, organizational_unit, sans, name, description, csr_pem,
             envelope_version, kek_id, wrapped_dek, dek_nonce, key_nonce, key_ciphertext, created_at,
             key_delivery)
         SELECT u.id, u.owner_kind, u.owner_id, u.key_type, u.common_name, u.country, u.state,
             u.locality, u.organization, u.organizational_unit,
             string_to_array(u.sans, chr(31)), u.name, u.description, u.csr_pem,
             u.envelope_version, u.kek_id, u.wrapped_dek, u.dek_nonce, u.key_nonce,
             u.key_ciphertext, u.created_at, u.key_delivery
         FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
             $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[],
             $13::text[], $14::text[], $15::int2[], $16::text[], $17::bytea[], $18::bytea[],
             $19::bytea[], $20::bytea[], $21::timestamptz[], $22::text[])
             AS u(id, owner_kind, owner_id, key_type, common_name, country, state, locality,
                  organization, organizational_unit, sans, name, description, csr_pem,
                  envelope_version, kek_id, wrapped_dek, dek_nonce, key_nonce, key_ciphertext,
                  created_at, key_delivery)"
    };
}

/// The chunk insert. One array per column, unnested into rows: one prepared statement for any
/// chunk size. SANs travel joined by the ASCII unit separator (a text[][] must be rectangular);
/// validated DNS names are printable ASCII, so the separator never occurs in one.
const INSERT_CHUNK: &str = concat!(insert_chunk_rows!(), " RETURNING id");
const INSERT_CHUNK_SKIPPING_EXISTING: &str = concat!(
    insert_chunk_rows!(),
    " ON CONFLICT (id) DO NOTHING RETURNING id"
);
/// The chunk inserts with the inserted rows' audit events (bound from `$23`).
static INSERT_CHUNK_AUDITED: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| with_audit(""));
static INSERT_CHUNK_SKIPPING_EXISTING_AUDITED: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| with_audit(" ON CONFLICT (id) DO NOTHING"));

fn with_audit(on_conflict: &str) -> String {
    format!(
        "WITH inserted AS ({}{on_conflict} RETURNING id), audited AS ({}) SELECT id FROM inserted",
        insert_chunk_rows!(),
        super::audit::append_sql(23, "WHERE e.target IN (SELECT id::text FROM inserted)")
    )
}

const SAN_SEPARATOR: &str = "\u{1f}";

/// A chunk's rows, column by column.
#[derive(Default)]
struct ChunkColumns<'a> {
    id: Vec<uuid::Uuid>,
    owner_kind: Vec<&'a str>,
    owner_id: Vec<&'a str>,
    key_type: Vec<&'a str>,
    common_name: Vec<&'a str>,
    country: Vec<&'a str>,
    state: Vec<&'a str>,
    locality: Vec<&'a str>,
    organization: Vec<&'a str>,
    organizational_unit: Vec<Option<&'a str>>,
    sans: Vec<String>,
    name: Vec<Option<&'a str>>,
    description: Vec<Option<&'a str>>,
    csr_pem: Vec<&'a str>,
    envelope_version: Vec<i16>,
    kek_id: Vec<&'a str>,
    wrapped_dek: Vec<&'a [u8]>,
    dek_nonce: Vec<&'a [u8]>,
    key_nonce: Vec<&'a [u8]>,
    ciphertext: Vec<&'a [u8]>,
    created_at: Vec<DateTime<Utc>>,
    key_delivery: Vec<Option<&'static str>>,
}

impl<'a> ChunkColumns<'a> {
    fn with_capacity(n: usize) -> Self {
        let mut c = Self::default();
        c.id.reserve(n);
        c
    }

    fn push(&mut self, csr: &'a CustomCsr, sealed: &'a SealedKey) {
        let r = &csr.request;
        let s = &r.subject;
        self.id.push(csr.id.0);
        self.owner_kind.push(csr.owner.kind().as_str());
        self.owner_id.push(csr.owner.id());
        self.key_type.push(r.key_type.as_str());
        self.common_name.push(&s.common_name);
        self.country.push(&s.country);
        self.state.push(&s.state);
        self.locality.push(&s.locality);
        self.organization.push(&s.organization);
        self.organizational_unit
            .push(s.organizational_unit.as_deref());
        let sans: Vec<&str> = r.sans.iter().map(DnsName::as_str).collect();
        self.sans.push(sans.join(SAN_SEPARATOR));
        self.name.push(r.name.as_deref());
        self.description.push(r.description.as_deref());
        self.csr_pem.push(&csr.csr_pem);
        self.envelope_version.push(sealed.version);
        self.kek_id.push(&sealed.kek_id);
        self.wrapped_dek.push(&sealed.wrapped_dek);
        self.dek_nonce.push(&sealed.dek_nonce);
        self.key_nonce.push(&sealed.key_nonce);
        self.ciphertext.push(&sealed.ciphertext);
        self.created_at.push(csr.created_at);
        self.key_delivery.push(r.key_delivery.stored());
    }
}

/// The stored CSR PEM of each of `ids` that exists.
pub async fn pems(client: &impl Prepared, ids: &[CsrId]) -> Result<Vec<(CsrId, String)>, DbError> {
    let ids: Vec<uuid::Uuid> = ids.iter().map(|i| i.0).collect();
    let rows = client
        .client()
        .query(
            &client
                .statement("SELECT id, csr_pem FROM custom_csrs WHERE id = ANY($1)")
                .await?,
            &[&ids],
        )
        .await?;
    Ok(rows.iter().map(|r| (CsrId(r.get(0)), r.get(1))).collect())
}

pub async fn exists(client: &impl GenericClient, id: CsrId) -> Result<bool, DbError> {
    let row = client
        .query_opt("SELECT 1 FROM custom_csrs WHERE id = $1", &[&id.0])
        .await?;
    Ok(row.is_some())
}

/// The CSR with this id if `owner` owns it. Another tenant's id reads as absent.
pub async fn get(
    client: &impl GenericClient,
    owner: &Owner,
    id: CsrId,
) -> Result<Option<CustomCsr>, DbError> {
    let sql = format!(
        "SELECT {PUBLIC_COLUMNS} FROM custom_csrs WHERE id = $1 AND owner_kind = $2 AND owner_id = $3"
    );
    let row = client
        .query_opt(&sql, &[&id.0, &owner.kind().as_str(), &owner.id()])
        .await?;
    row.as_ref().map(from_row).transpose()
}

/// The sealed private key of a CSR `owner` owns.
pub async fn get_sealed_key(
    client: &impl GenericClient,
    owner: &Owner,
    id: CsrId,
) -> Result<Option<SealedKey>, DbError> {
    let row = client
        .query_opt(
            "SELECT envelope_version, kek_id, wrapped_dek, dek_nonce, key_nonce, key_ciphertext
             FROM custom_csrs WHERE id = $1 AND owner_kind = $2 AND owner_id = $3",
            &[&id.0, &owner.kind().as_str(), &owner.id()],
        )
        .await?;
    Ok(row.map(|r| SealedKey {
        version: r.get(0),
        kek_id: r.get(1),
        wrapped_dek: r.get(2),
        dek_nonce: r.get(3),
        key_nonce: r.get(4),
        ciphertext: r.get(5),
    }))
}

fn corrupt(what: &str) -> DbError {
    DbError::Corrupt(what.to_owned())
}

fn from_row(row: &Row) -> Result<CustomCsr, DbError> {
    let kind = OwnerKind::parse(row.get("owner_kind")).ok_or_else(|| corrupt("owner_kind"))?;
    let owner = Owner::parse(kind, row.get("owner_id")).ok_or_else(|| corrupt("owner_id"))?;
    let key_type = KeyType::parse(row.get("key_type")).ok_or_else(|| corrupt("key_type"))?;
    let key_delivery =
        KeyDelivery::from_stored(row.get("key_delivery")).ok_or_else(|| corrupt("key_delivery"))?;
    let sans: Vec<String> = row.get("sans");
    let created_at: DateTime<Utc> = row.get("created_at");
    Ok(CustomCsr {
        id: CsrId(row.get("id")),
        owner,
        request: CreateCsr {
            subject: Subject {
                country: row.get("country"),
                state: row.get("state"),
                locality: row.get("locality"),
                organization: row.get("organization"),
                organizational_unit: row.get("organizational_unit"),
                common_name: row.get("common_name"),
            },
            sans: sans.into_iter().map(DnsName::from_stored).collect(),
            key_type,
            name: row.get("name"),
            description: row.get("description"),
            key_delivery,
        },
        csr_pem: row.get("csr_pem"),
        created_at,
    })
}

/// One page of `owner`'s CSRs and the tenant's total count, from one snapshot.
///
/// Page numbers mean OFFSET, and an OFFSET walks the index up to the page. Pages in the back
/// half are read in reverse order from the end instead, so no page walks more than half of
/// the tenant's index entries.
pub async fn list(
    client: &mut tokio_postgres::Client,
    owner: &Owner,
    q: &ListQuery,
) -> Result<(Vec<CustomCsr>, i64), DbError> {
    let kind = owner.kind().as_str();
    let id = owner.id();
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let total: i64 = tx
        .query_opt(
            "SELECT sum(n)::bigint FROM csr_counts WHERE owner_kind = $1 AND owner_id = $2",
            &[&kind, &id],
        )
        .await?
        .and_then(|r| r.get::<_, Option<i64>>(0))
        .unwrap_or(0);
    let per_page = i64::try_from(q.per_page).unwrap_or(i64::MAX);
    let Some(walk) = PageWalk::of(total, q.offset(), per_page, q.direction) else {
        tx.commit().await?;
        return Ok((Vec::new(), total));
    };
    let (offset, limit) = (walk.offset, walk.limit);
    let order = order_by(q.order, walk.direction);
    // The inner query walks only the tenant's index (no heap access) to find the page's ids;
    // the outer one fetches those few rows.
    let sql = format!(
        "SELECT {PUBLIC_COLUMNS} FROM custom_csrs WHERE id IN (
             SELECT id FROM custom_csrs WHERE owner_kind = $1 AND owner_id = $2
             ORDER BY {order} OFFSET $3 LIMIT $4)
         ORDER BY {order}"
    );
    let rows = tx.query(&sql, &[&kind, &id, &offset, &limit]).await?;
    tx.commit().await?;
    let mut csrs: Vec<CustomCsr> = rows.iter().map(from_row).collect::<Result<_, _>>()?;
    if walk.reversed {
        csrs.reverse();
    }
    Ok((csrs, total))
}

/// How a page is read from the tenant's index: a page in the second half of the list is read
/// from the other end (the reverse order, and an offset counted from the end), so a deep
/// page costs what a shallow one does, then turned back.
#[derive(Debug, PartialEq, Eq)]
struct PageWalk {
    direction: Direction,
    offset: i64,
    limit: i64,
    reversed: bool,
}

impl PageWalk {
    /// `None` when the page starts past the end.
    fn of(total: i64, offset: i64, per_page: i64, direction: Direction) -> Option<Self> {
        if offset >= total {
            return None;
        }
        // Rows after this page; negative on a short last page.
        let from_end = total - offset - per_page;
        let reversed = offset > from_end.max(0);
        Some(if reversed {
            Self {
                direction: direction.reversed(),
                offset: from_end.max(0),
                limit: per_page + from_end.min(0),
                reversed,
            }
        } else {
            Self {
                direction,
                offset,
                limit: per_page,
                reversed,
            }
        })
    }
}

/// The ORDER BY of a list. Every order ends with id, so ties never reorder between pages.
/// `account_tag` is the same for every row of one tenant, which leaves the creation order
/// (the tenant's (owner, created_at, id) index, so no index is kept for it alone).
fn order_by(field: SortField, direction: Direction) -> String {
    let dir = match direction {
        Direction::Asc => "ASC",
        Direction::Desc => "DESC",
    };
    match field {
        SortField::CreatedAt | SortField::AccountTag => format!("created_at {dir}, id {dir}"),
        SortField::Name => format!("name {dir}, id {dir}"),
    }
}

/// What a delete did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deletion {
    Deleted,
    /// `owner` has no such CSR.
    NotFound,
    /// A custom certificate uses the CSR's key (Cloudflare's 409/1420): nothing was deleted.
    InUse,
}

/// Deletes the CSR and its sealed key (the wrapped data key goes with the row), and marks the
/// Idempotency-Key record that made it, so a replay learns the CSR is gone instead of waiting
/// for it (or publishing its job again). A CSR whose key a custom certificate uses stays: the
/// check answers, and the foreign key stops an upload that commits between the check and the
/// delete.
pub async fn delete(
    client: &impl GenericClient,
    owner: &Owner,
    id: CsrId,
) -> Result<Deletion, DbError> {
    let row = client
        .query_one(
            "WITH target AS (
                 SELECT id FROM custom_csrs WHERE id = $1 AND owner_kind = $2 AND owner_id = $3
             ), used AS (
                 SELECT 1 FROM custom_certificates WHERE custom_csr_id = $1 LIMIT 1
             ), gone AS (
                 DELETE FROM custom_csrs WHERE id IN (SELECT id FROM target)
                     AND NOT EXISTS (SELECT 1 FROM used)
                 RETURNING id
             ), marked AS (
                 UPDATE idempotency_keys SET csr_deleted_at = now()
                 WHERE csr_id IN (SELECT id FROM gone)
             )
             SELECT (SELECT count(*) FROM target), (SELECT count(*) FROM gone)",
            &[&id.0, &owner.kind().as_str(), &owner.id()],
        )
        .await;
    let row = match row {
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::FOREIGN_KEY_VIOLATION) => {
            return Ok(Deletion::InUse);
        }
        other => other?,
    };
    Ok(match (row.get::<_, i64>(0), row.get::<_, i64>(1)) {
        (0, _) => Deletion::NotFound,
        (_, 1) => Deletion::Deleted,
        _ => Deletion::InUse,
    })
}

/// A stored CSR with its sealed key, for `csrd keys verify`.
pub struct StoredKey {
    pub id: CsrId,
    pub owner: Owner,
    pub key_type: KeyType,
    pub csr_pem: String,
    pub sealed: SealedKey,
    pub created_at: DateTime<Utc>,
}

pub(super) const STORED_KEY_COLUMNS: &str = "id, owner_kind, owner_id, key_type, csr_pem, envelope_version, \
     kek_id, wrapped_dek, dek_nonce, key_nonce, key_ciphertext, created_at";

/// Where a walk over stored keys is: the last key's creation time and id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyCursor {
    pub created_at: DateTime<Utc>,
    pub id: CsrId,
}

impl StoredKey {
    /// Where a walk continues after this key.
    pub fn cursor(&self) -> KeyCursor {
        KeyCursor {
            created_at: self.created_at,
            id: self.id,
        }
    }
}

/// Up to `limit` stored keys after `after`: one tenant's in creation order (its
/// (owner, created_at, id) index), everyone's in id order (the primary key).
pub async fn stored_keys_after(
    client: &impl GenericClient,
    owner: Option<&Owner>,
    after: Option<KeyCursor>,
    limit: i64,
) -> Result<Vec<StoredKey>, DbError> {
    let rows = match owner {
        Some(o) => {
            let (created_at, id) = match after {
                Some(c) => (Some(c.created_at), c.id.0),
                None => (None, uuid::Uuid::nil()),
            };
            client
                .query(
                    &format!(
                        "SELECT {STORED_KEY_COLUMNS} FROM custom_csrs
                         WHERE owner_kind = $1 AND owner_id = $2
                           AND ($3::timestamptz IS NULL OR (created_at, id) > ($3, $4))
                         ORDER BY created_at, id LIMIT $5"
                    ),
                    &[&o.kind().as_str(), &o.id(), &created_at, &id, &limit],
                )
                .await?
        }
        None => {
            let after = after.map_or(uuid::Uuid::nil(), |c| c.id.0);
            client
                .query(
                    &format!(
                        "SELECT {STORED_KEY_COLUMNS} FROM custom_csrs
                         WHERE id > $1 ORDER BY id LIMIT $2"
                    ),
                    &[&after, &limit],
                )
                .await?
        }
    };
    rows.iter().map(stored_key).collect()
}

/// `n` stored keys picked at random (of `owner`, or of everyone).
pub async fn stored_keys_sample(
    client: &impl GenericClient,
    owner: Option<&Owner>,
    n: i64,
) -> Result<Vec<StoredKey>, DbError> {
    let (kind, id) = match owner {
        Some(o) => (Some(o.kind().as_str()), Some(o.id())),
        None => (None, None),
    };
    let rows = client
        .query(
            &format!(
                "SELECT {STORED_KEY_COLUMNS} FROM custom_csrs
                 WHERE ($1::text IS NULL OR (owner_kind = $1 AND owner_id = $2))
                 ORDER BY random() LIMIT $3"
            ),
            &[&kind, &id, &n],
        )
        .await?;
    rows.iter().map(stored_key).collect()
}

pub(super) fn stored_key(row: &Row) -> Result<StoredKey, DbError> {
    let kind = OwnerKind::parse(row.get("owner_kind")).ok_or_else(|| corrupt("owner_kind"))?;
    Ok(StoredKey {
        id: CsrId(row.get("id")),
        owner: Owner::parse(kind, row.get("owner_id")).ok_or_else(|| corrupt("owner_id"))?,
        key_type: KeyType::parse(row.get("key_type")).ok_or_else(|| corrupt("key_type"))?,
        csr_pem: row.get("csr_pem"),
        sealed: SealedKey {
            version: row.get("envelope_version"),
            kek_id: row.get("kek_id"),
            wrapped_dek: row.get("wrapped_dek"),
            dek_nonce: row.get("dek_nonce"),
            key_nonce: row.get("key_nonce"),
            ciphertext: row.get("key_ciphertext"),
        },
        created_at: row.get("created_at"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_in_the_first_half_is_read_forwards() {
        let walk = PageWalk::of(100, 20, 10, Direction::Asc).unwrap();
        assert_eq!(
            walk,
            PageWalk {
                direction: Direction::Asc,
                offset: 20,
                limit: 10,
                reversed: false
            }
        );
    }

    #[test]
    fn a_page_in_the_second_half_is_read_from_the_other_end() {
        // Rows 80..90 of 100 ascending are rows 10..20 descending.
        let walk = PageWalk::of(100, 80, 10, Direction::Asc).unwrap();
        assert_eq!(
            walk,
            PageWalk {
                direction: Direction::Desc,
                offset: 10,
                limit: 10,
                reversed: true
            }
        );
        // A short last page: rows 95..100 are the first 5 from the end.
        let last = PageWalk::of(100, 95, 10, Direction::Desc).unwrap();
        assert_eq!(
            (last.direction, last.offset, last.limit),
            (Direction::Asc, 0, 5)
        );
    }

    #[test]
    fn a_page_past_the_end_reads_nothing() {
        assert_eq!(PageWalk::of(100, 100, 10, Direction::Asc), None);
        assert_eq!(PageWalk::of(0, 0, 10, Direction::Asc), None);
    }

    #[test]
    fn every_order_ends_with_the_id() {
        assert_eq!(
            order_by(SortField::Name, Direction::Desc),
            "name DESC, id DESC"
        );
        assert_eq!(
            order_by(SortField::AccountTag, Direction::Asc),
            "created_at ASC, id ASC"
        );
    }
}
