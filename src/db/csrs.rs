//! The `custom_csrs` table.

use chrono::{DateTime, Utc};
use tokio_postgres::{GenericClient, Row};

use super::DbError;
use crate::crypto::SealedKey;
use crate::domain::{
    CreateCsr, CsrId, CustomCsr, Direction, DnsName, KeyType, ListQuery, Owner, OwnerKind,
    SortField, Subject,
};

const PUBLIC_COLUMNS: &str = "id, owner_kind, owner_id, key_type, common_name, country, state, locality, \
     organization, organizational_unit, sans, name, description, csr_pem, created_at";

/// Inserts the CSR and its sealed key. Idempotent on the id: returns false when a row with
/// this id already exists (a redelivered job), leaving that row untouched.
pub async fn insert(
    client: &impl GenericClient,
    csr: &CustomCsr,
    sealed: &SealedKey,
) -> Result<bool, DbError> {
    let r = &csr.request;
    let s = &r.subject;
    let sans: Vec<&str> = r.sans.iter().map(DnsName::as_str).collect();
    let n = client
        .execute(
            "INSERT INTO custom_csrs (id, owner_kind, owner_id, key_type, common_name, country, state,
                 locality, organization, organizational_unit, sans, name, description, csr_pem,
                 envelope_version, kek_id, wrapped_dek, dek_nonce, key_nonce, key_ciphertext, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)
             ON CONFLICT (id) DO NOTHING",
            &[
                &csr.id.0,
                &csr.owner.kind().as_str(),
                &csr.owner.id(),
                &r.key_type.as_str(),
                &s.common_name,
                &s.country,
                &s.state,
                &s.locality,
                &s.organization,
                &s.organizational_unit,
                &sans,
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
            ],
        )
        .await?;
    Ok(n == 1)
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
            "SELECT n FROM csr_counts WHERE owner_kind = $1 AND owner_id = $2",
            &[&kind, &id],
        )
        .await?
        .map_or(0, |r| r.get(0));
    let per_page = i64::try_from(q.per_page).unwrap_or(i64::MAX);
    let offset = q.offset();
    if offset >= total {
        tx.commit().await?;
        return Ok((Vec::new(), total));
    }
    let from_end = total - offset - per_page; // rows after this page; negative on a short last page
    let reverse = offset > from_end.max(0);
    let (direction, offset, limit) = if reverse {
        (
            q.direction.reversed(),
            from_end.max(0),
            per_page + from_end.min(0),
        )
    } else {
        (q.direction, offset, per_page)
    };
    let dir = match direction {
        Direction::Asc => "ASC",
        Direction::Desc => "DESC",
    };
    // Every order ends with id, so ties never reorder between pages. `account_tag` is the
    // same for every row of one tenant, which leaves id alone.
    let order = match q.order {
        SortField::CreatedAt => format!("created_at {dir}, id {dir}"),
        SortField::Name => format!("name {dir}, id {dir}"),
        SortField::AccountTag => format!("id {dir}"),
    };
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
    if reverse {
        csrs.reverse();
    }
    Ok((csrs, total))
}

/// Deletes the CSR and its sealed key (the wrapped data key goes with the row), and marks the
/// Idempotency-Key record that made it, so a replay learns the CSR is gone instead of waiting
/// for it (or publishing its job again). Returns whether `owner` had such a CSR.
pub async fn delete(
    client: &impl GenericClient,
    owner: &Owner,
    id: CsrId,
) -> Result<bool, DbError> {
    let row = client
        .query_one(
            "WITH gone AS (
                 DELETE FROM custom_csrs WHERE id = $1 AND owner_kind = $2 AND owner_id = $3
                 RETURNING id
             ), marked AS (
                 UPDATE idempotency_keys SET csr_deleted_at = now()
                 WHERE csr_id IN (SELECT id FROM gone)
             )
             SELECT count(*) FROM gone",
            &[&id.0, &owner.kind().as_str(), &owner.id()],
        )
        .await?;
    Ok(row.get::<_, i64>(0) == 1)
}
