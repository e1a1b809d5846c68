//! The `key_recipients` table, and the query that finds what a recipient may receive.

use chrono::{DateTime, Utc};
use tokio_postgres::{GenericClient, Row};

use super::DbError;
use crate::crypto::SealedKey;
use crate::domain::{
    CertificateId, CsrId, KeyRecipient, KeyType, NewRecipient, Owner, OwnerKind, RecipientId,
    RecipientStatus,
};

const COLUMNS: &str =
    "id, owner_kind, owner_id, name, recipient, fingerprint, hosts, status, created_at";

fn from_row(row: &Row) -> Result<KeyRecipient, DbError> {
    let corrupt = |what: &str| DbError::Corrupt(format!("key_recipients.{what}"));
    let kind = OwnerKind::parse(row.get("owner_kind")).ok_or_else(|| corrupt("owner_kind"))?;
    Ok(KeyRecipient {
        id: RecipientId(row.get("id")),
        owner: Owner::parse(kind, row.get("owner_id")).ok_or_else(|| corrupt("owner_id"))?,
        name: row.get("name"),
        recipient: row.get("recipient"),
        fingerprint: row.get("fingerprint"),
        hosts: row.get("hosts"),
        status: RecipientStatus::parse(row.get("status")).ok_or_else(|| corrupt("status"))?,
        created_at: row.get("created_at"),
    })
}

/// Enrolls `new` for `owner` in `tx`, pending an operator's approval; `None` when the tenant
/// has `cap` recipients not revoked already (enrollments of one tenant take turns to count).
/// The caller commits.
pub async fn insert(
    tx: &tokio_postgres::Transaction<'_>,
    cap: i64,
    owner: &Owner,
    id: RecipientId,
    new: &NewRecipient,
    created_at: DateTime<Utc>,
    enrolled_by: Option<&str>,
) -> Result<Option<KeyRecipient>, DbError> {
    let (kind, owner_id) = (owner.kind().as_str(), owner.id());
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('key_recipients/' || $1 || '/' || $2))",
        &[&kind, &owner_id],
    )
    .await?;
    let held: i64 = tx
        .query_one(
            "SELECT count(*) FROM key_recipients
             WHERE owner_kind = $1 AND owner_id = $2 AND status <> 'revoked'",
            &[&kind, &owner_id],
        )
        .await?
        .get(0);
    if held >= cap {
        return Ok(None);
    }
    let row = tx
        .query_one(
            &format!(
                "INSERT INTO key_recipients (id, owner_kind, owner_id, name, recipient,
                     fingerprint, hosts, created_at, enrolled_by)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING {COLUMNS}"
            ),
            &[
                &id.0,
                &owner.kind().as_str(),
                &owner.id(),
                &new.name,
                &new.recipient.as_str(),
                &new.recipient.fingerprint(),
                &new.hosts,
                &created_at,
                &enrolled_by,
            ],
        )
        .await?;
    Ok(Some(from_row(&row)?))
}

/// Whether recipient `id` is active now, its row held against a revocation until the
/// transaction `tx` ends (a release is audited and sent only while it is).
pub async fn lock_active(
    tx: &tokio_postgres::Transaction<'_>,
    id: RecipientId,
) -> Result<bool, DbError> {
    Ok(tx
        .query_opt(
            "SELECT status FROM key_recipients WHERE id = $1 FOR SHARE",
            &[&id.0],
        )
        .await?
        .is_some_and(|r| r.get::<_, String>(0) == "active"))
}

/// `owner`'s recipient `id`, if it has one.
pub async fn get(
    client: &impl GenericClient,
    owner: &Owner,
    id: RecipientId,
) -> Result<Option<KeyRecipient>, DbError> {
    client
        .query_opt(
            &format!(
                "SELECT {COLUMNS} FROM key_recipients
                 WHERE id = $1 AND owner_kind = $2 AND owner_id = $3"
            ),
            &[&id.0, &owner.kind().as_str(), &owner.id()],
        )
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

/// One page of `owner`'s recipients in enrollment order, and how many it has.
pub async fn list(
    client: &impl GenericClient,
    owner: &Owner,
    page: u64,
    per_page: u64,
) -> Result<(Vec<KeyRecipient>, i64), DbError> {
    let (kind, id) = (owner.kind().as_str(), owner.id());
    let total: i64 = client
        .query_one(
            "SELECT count(*) FROM key_recipients WHERE owner_kind = $1 AND owner_id = $2",
            &[&kind, &id],
        )
        .await?
        .get(0);
    let (limit, offset) = limit_offset(page, per_page);
    let rows = client
        .query(
            &format!(
                "SELECT {COLUMNS} FROM key_recipients WHERE owner_kind = $1 AND owner_id = $2
                 ORDER BY created_at, id LIMIT $3 OFFSET $4"
            ),
            &[&kind, &id, &limit, &offset],
        )
        .await?;
    Ok((rows.iter().map(from_row).collect::<Result<_, _>>()?, total))
}

fn limit_offset(page: u64, per_page: u64) -> (i64, i64) {
    let offset = i64::try_from(page.saturating_sub(1).saturating_mul(per_page)).unwrap_or(i64::MAX);
    (i64::try_from(per_page).unwrap_or(100), offset)
}

/// Revokes recipient `id` (of `owner`, or of anyone when `owner` is `None`: an operator) at
/// once, by `by`. Returns it as it now is; `None` when there is no such recipient. Revoking a
/// revoked recipient changes nothing.
pub async fn revoke(
    client: &impl GenericClient,
    owner: Option<&Owner>,
    id: RecipientId,
    by: &str,
) -> Result<Option<KeyRecipient>, DbError> {
    let kind = owner.map(|o| o.kind().as_str());
    let owner_id = owner.map(Owner::id);
    let updated = client
        .query_opt(
            &format!(
                "UPDATE key_recipients SET status = 'revoked', revoked_at = now(), revoked_by = $4
                 WHERE id = $1 AND status <> 'revoked'
                   AND ($2::text IS NULL OR (owner_kind = $2 AND owner_id = $3))
                 RETURNING {COLUMNS}"
            ),
            &[&id.0, &kind, &owner_id, &by],
        )
        .await?;
    if let Some(row) = updated {
        return Ok(Some(from_row(&row)?));
    }
    client
        .query_opt(
            &format!(
                "SELECT {COLUMNS} FROM key_recipients
                 WHERE id = $1 AND ($2::text IS NULL OR (owner_kind = $2 AND owner_id = $3))"
            ),
            &[&id.0, &kind, &owner_id],
        )
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

/// What [`approve`] did.
#[derive(Debug)]
pub enum Approval {
    Approved(KeyRecipient),
    NotFound,
    /// The fingerprint given is not the recipient's: nothing changed.
    FingerprintMismatch(KeyRecipient),
    /// Only a pending recipient can be approved (a revoked one stays revoked).
    NotPending(KeyRecipient),
}

/// An operator approves pending recipient `id`, if `fingerprint` is its fingerprint.
pub async fn approve(
    client: &impl GenericClient,
    id: RecipientId,
    fingerprint: &str,
    by: &str,
) -> Result<Approval, DbError> {
    let updated = client
        .query_opt(
            &format!(
                "UPDATE key_recipients SET status = 'active', approved_at = now(), approved_by = $3
                 WHERE id = $1 AND status = 'pending' AND fingerprint = $2
                 RETURNING {COLUMNS}"
            ),
            &[&id.0, &fingerprint, &by],
        )
        .await?;
    if let Some(row) = updated {
        return Ok(Approval::Approved(from_row(&row)?));
    }
    let Some(row) = client
        .query_opt(
            &format!("SELECT {COLUMNS} FROM key_recipients WHERE id = $1"),
            &[&id.0],
        )
        .await?
    else {
        return Ok(Approval::NotFound);
    };
    let recipient = from_row(&row)?;
    Ok(if recipient.status != RecipientStatus::Pending {
        Approval::NotPending(recipient)
    } else {
        Approval::FingerprintMismatch(recipient)
    })
}

/// Every recipient, or `owner`'s, in enrollment order (operators: `csrd recipient list`), at
/// most `limit`.
pub async fn list_all(
    client: &impl GenericClient,
    owner: Option<&Owner>,
    limit: i64,
) -> Result<Vec<KeyRecipient>, DbError> {
    let kind = owner.map(|o| o.kind().as_str());
    let owner_id = owner.map(Owner::id);
    let rows = client
        .query(
            &format!(
                "SELECT {COLUMNS} FROM key_recipients
                 WHERE $1::text IS NULL OR (owner_kind = $1 AND owner_id = $2)
                 ORDER BY created_at, id LIMIT $3"
            ),
            &[&kind, &owner_id, &limit],
        )
        .await?;
    rows.iter().map(from_row).collect()
}

/// One key a recipient may receive: a CSR created deliverable, its current certificate (the
/// highest generation, unexpired), and the sealed key. Nothing here is plaintext.
#[derive(Debug)]
pub struct Deliverable {
    pub csr_id: CsrId,
    pub key_type: KeyType,
    pub sealed: SealedKey,
    pub certificate_id: CertificateId,
    pub certificate: String,
    pub hosts: Vec<String>,
    /// The CSR's own names.
    pub sans: Vec<String>,
    pub serial_number: String,
    pub expires_on: DateTime<Utc>,
    pub generation: i64,
}

/// The deliverable CSRs of `owner` whose names are all covered by `hosts` (a recipient's):
/// every host of the current certificate, **and** every SAN of the CSR itself (a certificate
/// from a CA the tenant made up may name anything; the key is the CSR's, and works with any
/// certificate for the CSR's names, so those must be the recipient's too). A name is covered
/// by an exact host, or by a `*.base` host when it is one label more than `base` and not
/// itself a wildcard, as `domain::san::covers` decides (the caller checks again, row by row).
/// In CSR id order.
const DELIVERABLE: &str = "
    FROM custom_csrs c
    CROSS JOIN LATERAL (
        SELECT k.id, k.certificate, k.hosts, k.serial_number, k.expires_on, k.generation
        FROM custom_certificates k
        WHERE k.custom_csr_id = c.id
        ORDER BY k.generation DESC LIMIT 1
    ) k
    WHERE c.owner_kind = $1 AND c.owner_id = $2 AND c.key_delivery = 'sealed'
      AND k.expires_on > now()
      AND cardinality(k.hosts) > 0
      AND NOT EXISTS (
          SELECT 1 FROM (SELECT unnest(k.hosts) UNION ALL SELECT lower(unnest(c.sans))) AS h(name)
          WHERE NOT (h.name = ANY($3::text[])
                     OR (h.name NOT LIKE '*.%' AND position('.' IN h.name) > 1
                         AND substr(h.name, position('.' IN h.name) + 1) = ANY($4::text[]))))
      AND ($5::uuid IS NULL OR c.id = $5)
      AND ($6::text IS NULL OR $6 = ANY(k.hosts)
           OR ($6 NOT LIKE '*.%' AND position('.' IN $6) > 1
               AND '*.' || substr($6, position('.' IN $6) + 1) = ANY(k.hosts)))";

/// Which of a recipient's deliveries a request asks for: all, one CSR's, or those whose
/// certificate covers one host (an agent asks for its targets only).
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    pub custom_csr_id: Option<CsrId>,
    pub host: Option<String>,
}

/// The exact names and the wildcard bases of a recipient's hosts, as [`DELIVERABLE`] takes
/// them.
fn host_sets(hosts: &[String]) -> (Vec<String>, Vec<String>) {
    let exact: Vec<String> = hosts.iter().map(|h| h.to_ascii_lowercase()).collect();
    let bases = exact
        .iter()
        .filter_map(|h| h.strip_prefix("*.").map(str::to_owned))
        .collect();
    (exact, bases)
}

/// One page of what `owner`'s recipient with `hosts` may receive, and how many in all.
pub async fn deliverable(
    client: &impl GenericClient,
    owner: &Owner,
    hosts: &[String],
    filter: &DeliveryFilter,
    page: u64,
    per_page: u64,
) -> Result<(Vec<Deliverable>, i64), DbError> {
    let (kind, id) = (owner.kind().as_str(), owner.id());
    let (exact, bases) = host_sets(hosts);
    let csr = filter.custom_csr_id.map(|c| c.0);
    let host = filter.host.as_deref();
    let (limit, offset) = limit_offset(page, per_page);
    // One pass over what the recipient may receive: the page's ids and the count of all of
    // them, then only the page's rows read whole (a count and an OFFSET query each walked
    // the tenant's deliverable CSRs: two passes a page).
    let rows = client
        .query(
            &format!(
                "WITH page AS (
                     SELECT c.id AS csr_id, k.id AS certificate_id, count(*) OVER () AS total
                     {DELIVERABLE}
                     ORDER BY c.id LIMIT $7 OFFSET $8)
                 SELECT page.total, c.id AS csr_id, c.key_type, c.sans, c.envelope_version, c.kek_id,
                        c.wrapped_dek, c.dek_nonce, c.key_nonce, c.key_ciphertext,
                        k.id AS certificate_id, k.certificate, k.hosts, k.serial_number,
                        k.expires_on, k.generation
                 FROM page
                 JOIN custom_csrs c ON c.id = page.csr_id
                 JOIN custom_certificates k ON k.id = page.certificate_id
                 ORDER BY c.id"
            ),
            &[&kind, &id, &exact, &bases, &csr, &host, &limit, &offset],
        )
        .await?;
    let total: i64 = match rows.first() {
        Some(r) => r.get("total"),
        // A page past the end holds no count: asked for on its own.
        None => client
            .query_one(
                &format!("SELECT count(*) {DELIVERABLE}"),
                &[&kind, &id, &exact, &bases, &csr, &host],
            )
            .await?
            .get(0),
    };
    let items = rows
        .iter()
        .map(|r| {
            Ok(Deliverable {
                csr_id: CsrId(r.get("csr_id")),
                key_type: KeyType::parse(r.get("key_type"))
                    .ok_or_else(|| DbError::Corrupt("custom_csrs.key_type".into()))?,
                sealed: SealedKey {
                    version: r.get("envelope_version"),
                    kek_id: r.get("kek_id"),
                    wrapped_dek: r.get("wrapped_dek"),
                    dek_nonce: r.get("dek_nonce"),
                    key_nonce: r.get("key_nonce"),
                    ciphertext: r.get("key_ciphertext"),
                },
                certificate_id: CertificateId(r.get("certificate_id")),
                certificate: r.get("certificate"),
                hosts: r.get("hosts"),
                sans: r.get("sans"),
                serial_number: r.get("serial_number"),
                expires_on: r.get("expires_on"),
                generation: r.get("generation"),
            })
        })
        .collect::<Result<_, DbError>>()?;
    Ok((items, total))
}
