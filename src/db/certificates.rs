//! The `custom_certificates` table, always scoped to one owner.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use tokio_postgres::{GenericClient, Row, Transaction};

use super::DbError;
use crate::domain::{CertificateId, CsrId, CustomCertificate, Owner, OwnerKind};

const COLUMNS: &str = "id, owner_kind, owner_id, custom_csr_id, certificate, leaf_sha256, hosts, \
     issuer, signature, serial_number, bundle_method, cert_type, geo_label, policy, priority, \
     not_before, expires_on, uploaded_on, modified_on";

/// The owner condition for a query of CSRs by id (`$2` is [`owner_key`]). An expression, not
/// the columns: compared column by column, the planner may walk the tenant's whole range of
/// the owner index and filter the ids out of it (a stale estimate of a freshly filled table
/// makes it do so: 60 ms for each 256 ids of a tenant with 100,000 CSRs), where the primary key
/// finds each id at once.
const BY_OWNER_AFTER_ID: &str = "owner_kind || '/' || owner_id = $2";

fn owner_key(owner: &Owner) -> String {
    format!("{}/{}", owner.kind().as_str(), owner.id())
}

/// The CSRs of `owner` among `ids`: their PEM and SANs. Read without a lock, before the
/// chains are checked (a CSR never changes; one deleted meanwhile is found by [`store`]).
pub async fn csrs_of(
    client: &impl GenericClient,
    owner: &Owner,
    ids: &[uuid::Uuid],
) -> Result<HashMap<uuid::Uuid, (String, Vec<String>)>, DbError> {
    let rows = client
        .query(
            &format!(
                "SELECT id, csr_pem, sans FROM custom_csrs WHERE id = ANY($1) AND {BY_OWNER_AFTER_ID}"
            ),
            &[&ids, &owner_key(owner)],
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect())
}

/// How many certificates a tenant may keep, per CSR and in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CertificateCaps {
    pub per_csr: i64,
    pub tenant_bytes: i64,
}

/// Every stored certificate's id by (CSR, leaf digest), and whether the call stored it.
pub type StoredIds = HashMap<(uuid::Uuid, [u8; 32]), (uuid::Uuid, bool)>;

/// What [`store`] did.
#[derive(Debug)]
pub enum StoreOutcome {
    /// Every certificate's id by (CSR, leaf digest), and whether this call stored it (false:
    /// the same leaf was stored for the CSR before).
    Stored(StoredIds),
    /// These CSRs are not (or no longer) the owner's.
    CsrsGone(HashSet<uuid::Uuid>),
    /// The CSR would hold more certificates than the cap.
    OverPerCsr { csr: uuid::Uuid, limit: i64 },
    /// The tenant would store more bytes than the cap.
    OverBytes {
        stored: i64,
        adding: i64,
        limit: i64,
    },
}

/// Stores `certs` of `owner` in the transaction `tx`, within `caps`: all of them or, with any
/// other outcome than `Stored` (the caller then rolls back), none. The CSRs are locked first
/// (in id order), so stores for one CSR take turns and its cap cannot be passed by two at once,
/// while stores for other CSRs go on beside them; the tenant's usage row is updated by the
/// insert's trigger and locked from then to the commit only. A certificate whose leaf is
/// stored for its CSR already keeps its id.
pub async fn store(
    tx: &Transaction<'_>,
    owner: &Owner,
    certs: &[CustomCertificate],
    caps: CertificateCaps,
) -> Result<StoreOutcome, DbError> {
    let csr_ids: Vec<uuid::Uuid> = {
        let mut ids: Vec<uuid::Uuid> = certs.iter().map(|c| c.custom_csr_id.0).collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    };
    let gone = lock_csrs(tx, owner, &csr_ids).await?;
    if !gone.is_empty() {
        return Ok(StoreOutcome::CsrsGone(gone));
    }
    let counts: HashMap<uuid::Uuid, i64> = tx
        .query(
            "SELECT custom_csr_id, count(*) FROM custom_certificates
             WHERE custom_csr_id = ANY($1) GROUP BY custom_csr_id",
            &[&csr_ids],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let digests: Vec<&[u8]> = certs.iter().map(|c| c.leaf_sha256.as_slice()).collect();
    let leaf_csrs: Vec<uuid::Uuid> = certs.iter().map(|c| c.custom_csr_id.0).collect();
    let mut ids = StoredIds::new();
    for r in tx
        .query(
            "SELECT c.custom_csr_id, c.leaf_sha256, c.id
             FROM custom_certificates c
             JOIN unnest($1::uuid[], $2::bytea[]) AS u(csr, digest)
               ON c.custom_csr_id = u.csr AND c.leaf_sha256 = u.digest",
            &[&leaf_csrs, &digests],
        )
        .await?
    {
        let digest: Vec<u8> = r.get(1);
        let digest: [u8; 32] = digest
            .try_into()
            .map_err(|_| DbError::Corrupt("leaf_sha256".into()))?;
        ids.insert((r.get(0), digest), (r.get(2), false));
    }
    // The new ones, once each (an upload may name the same certificate twice).
    let mut fresh: Vec<&CustomCertificate> = Vec::new();
    for c in certs {
        let key = (c.custom_csr_id.0, c.leaf_sha256);
        if let std::collections::hash_map::Entry::Vacant(e) = ids.entry(key) {
            e.insert((c.id.0, true));
            fresh.push(c);
        }
    }
    let mut per_csr = counts;
    for c in &fresh {
        let n = per_csr.entry(c.custom_csr_id.0).or_default();
        *n += 1;
        if *n > caps.per_csr {
            return Ok(StoreOutcome::OverPerCsr {
                csr: c.custom_csr_id.0,
                limit: caps.per_csr,
            });
        }
    }
    let adding: i64 = fresh.iter().map(|c| c.stored_bytes()).sum();
    if fresh.is_empty() {
        return Ok(StoreOutcome::Stored(ids));
    }
    // Checked before the insert too, so an upload over the cap writes nothing; the check
    // after it is the one that holds when two stores of the tenant race.
    let before = usage_bytes(tx, owner).await?;
    if before.saturating_add(adding) > caps.tenant_bytes {
        return Ok(StoreOutcome::OverBytes {
            stored: before,
            adding,
            limit: caps.tenant_bytes,
        });
    }
    insert_rows(tx, owner, &fresh).await?;
    let stored = usage_bytes(tx, owner).await?;
    if stored > caps.tenant_bytes {
        return Ok(StoreOutcome::OverBytes {
            stored: stored - adding,
            adding,
            limit: caps.tenant_bytes,
        });
    }
    Ok(StoreOutcome::Stored(ids))
}

/// The bytes `owner` stores in certificates, as this transaction sees them (its own inserts
/// counted by the trigger, which holds the usage row to the commit).
async fn usage_bytes(tx: &Transaction<'_>, owner: &Owner) -> Result<i64, DbError> {
    let row = tx
        .query_opt(
            "SELECT bytes FROM tenant_certificate_usage WHERE owner_kind = $1 AND owner_id = $2",
            &[&owner.kind().as_str(), &owner.id()],
        )
        .await?;
    Ok(row.map_or(0, |r| r.get(0)))
}

/// Locks `owner`'s CSRs among `ids` until the transaction ends (in id order, so two stores
/// cannot deadlock): against a delete, and against another store for the same CSR (its
/// per-CSR count must see this one's rows). Returns the ones that are not (or no longer)
/// `owner`'s.
async fn lock_csrs(
    tx: &Transaction<'_>,
    owner: &Owner,
    ids: &[uuid::Uuid],
) -> Result<HashSet<uuid::Uuid>, DbError> {
    let present: HashSet<uuid::Uuid> = tx
        .query(
            &format!(
                "SELECT id FROM custom_csrs WHERE id = ANY($1) AND {BY_OWNER_AFTER_ID}
                 ORDER BY id FOR NO KEY UPDATE"
            ),
            &[&ids, &owner_key(owner)],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    Ok(ids
        .iter()
        .filter(|c| !present.contains(*c))
        .copied()
        .collect())
}

/// Inserts `certs` of `owner` with one statement.
async fn insert_rows(
    client: &impl GenericClient,
    owner: &Owner,
    certs: &[&CustomCertificate],
) -> Result<(), DbError> {
    if certs.is_empty() {
        return Ok(());
    }
    let ids: Vec<uuid::Uuid> = certs.iter().map(|c| c.id.0).collect();
    let csr_ids: Vec<uuid::Uuid> = certs.iter().map(|c| c.custom_csr_id.0).collect();
    let text = |f: fn(&CustomCertificate) -> &str| certs.iter().map(|c| f(c)).collect::<Vec<_>>();
    let hosts: Vec<String> = certs
        .iter()
        .map(|c| serde_json::to_string(&c.hosts).unwrap_or_else(|_| "[]".to_owned()))
        .collect();
    let digests: Vec<&[u8]> = certs.iter().map(|c| c.leaf_sha256.as_slice()).collect();
    let not_before: Vec<DateTime<Utc>> = certs.iter().map(|c| c.not_before).collect();
    let expires_on: Vec<DateTime<Utc>> = certs.iter().map(|c| c.expires_on).collect();
    let uploaded_on: Vec<DateTime<Utc>> = certs.iter().map(|c| c.uploaded_on).collect();
    let geo: Vec<Option<&str>> = certs.iter().map(|c| c.geo_label.as_deref()).collect();
    let policy: Vec<Option<&str>> = certs.iter().map(|c| c.policy.as_deref()).collect();
    client
        .execute(
            "INSERT INTO custom_certificates (id, owner_kind, owner_id, custom_csr_id, certificate,
                 leaf_sha256, hosts, issuer, signature, serial_number, bundle_method, cert_type,
                 geo_label, policy, priority, not_before, expires_on, uploaded_on, modified_on)
             SELECT u.id, $1, $2, u.csr, u.pem, u.digest,
                    ARRAY(SELECT jsonb_array_elements_text(u.hosts::jsonb)), u.issuer, u.sig,
                    u.serial, u.bundle, u.ctype, u.geo, u.policy, 0, u.nb, u.na, u.up, u.up
             FROM unnest($3::uuid[], $4::uuid[], $5::text[], $6::bytea[], $7::text[],
                         $8::text[], $9::text[], $10::text[], $11::text[], $12::text[],
                         $13::text[], $14::text[], $15::timestamptz[], $16::timestamptz[],
                         $17::timestamptz[])
                  AS u(id, csr, pem, digest, hosts, issuer, sig, serial, bundle, ctype, geo,
                       policy, nb, na, up)",
            &[
                &owner.kind().as_str(),
                &owner.id(),
                &ids,
                &csr_ids,
                &text(|c| &c.certificate),
                &digests,
                &hosts,
                &text(|c| &c.issuer),
                &text(|c| &c.signature),
                &text(|c| &c.serial_number),
                &text(|c| &c.bundle_method),
                &text(|c| &c.cert_type),
                &geo,
                &policy,
                &not_before,
                &expires_on,
                &uploaded_on,
            ],
        )
        .await?;
    Ok(())
}

/// Rewrites the certificate stored as `previous` with `c` (which may carry a new id), within
/// `caps`, in the transaction `tx`. A unique violation (the new leaf is stored for the CSR as
/// another certificate) is returned as the error it is. A new leaf takes a new generation (a
/// key delivery agent installs it); an edit of other fields keeps it.
pub async fn update(
    tx: &Transaction<'_>,
    previous: CertificateId,
    c: &CustomCertificate,
    caps: CertificateCaps,
) -> Result<StoreOutcome, DbError> {
    let gone = lock_csrs(tx, &c.owner, &[c.custom_csr_id.0]).await?;
    if !gone.is_empty() {
        return Ok(StoreOutcome::CsrsGone(gone));
    }
    let row = tx
        .query_one(
            "SELECT (SELECT count(*) FROM custom_certificates
                     WHERE custom_csr_id = $2 AND id <> $1),
                    (SELECT csrd_certificate_bytes(certificate, hosts, policy)
                     FROM custom_certificates WHERE id = $1),
                    (SELECT custom_csr_id FROM custom_certificates WHERE id = $1)",
            &[&previous.0, &c.custom_csr_id.0],
        )
        .await?;
    let (others, old_bytes, old_csr): (i64, Option<i64>, Option<uuid::Uuid>) =
        (row.get(0), row.get(1), row.get(2));
    // Only a certificate moving to another CSR adds to that CSR's count: an edit in place
    // is never refused for a cap an operator lowered since.
    let moves = old_csr != Some(c.custom_csr_id.0);
    if moves && others + 1 > caps.per_csr {
        return Ok(StoreOutcome::OverPerCsr {
            csr: c.custom_csr_id.0,
            limit: caps.per_csr,
        });
    }
    let adding = c.stored_bytes() - old_bytes.unwrap_or(0);
    tx.execute(
        "UPDATE custom_certificates SET custom_csr_id = $2, certificate = $3, leaf_sha256 = $4,
             hosts = $5, issuer = $6, signature = $7, serial_number = $8, bundle_method = $9,
             geo_label = $10, policy = $11, not_before = $12, expires_on = $13,
             modified_on = $14, id = $15,
             generation = CASE WHEN leaf_sha256 = $4 THEN generation
                               ELSE nextval('custom_certificate_generation') END
         WHERE id = $1",
        &[
            &previous.0,
            &c.custom_csr_id.0,
            &c.certificate,
            &c.leaf_sha256.as_slice(),
            &c.hosts,
            &c.issuer,
            &c.signature,
            &c.serial_number,
            &c.bundle_method,
            &c.geo_label,
            &c.policy,
            &c.not_before,
            &c.expires_on,
            &c.modified_on,
            &c.id.0,
        ],
    )
    .await?;
    let stored = usage_bytes(tx, &c.owner).await?;
    if adding > 0 && stored > caps.tenant_bytes {
        return Ok(StoreOutcome::OverBytes {
            stored: stored - adding,
            adding,
            limit: caps.tenant_bytes,
        });
    }
    Ok(StoreOutcome::Stored(HashMap::new()))
}

/// The certificate if `owner` owns it; `lock` holds it for an edit.
pub async fn get(
    client: &impl GenericClient,
    owner: &Owner,
    id: CertificateId,
    lock: bool,
) -> Result<Option<CustomCertificate>, DbError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM custom_certificates
         WHERE id = $1 AND owner_kind = $2 AND owner_id = $3{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    let row = client
        .query_opt(&sql, &[&id.0, &owner.kind().as_str(), &owner.id()])
        .await?;
    row.as_ref().map(from_row).transpose()
}

/// What a list may filter on.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// `active` or `expired` (other Cloudflare statuses never apply here: nothing matches).
    pub status: Option<String>,
    pub expires_before: Option<DateTime<Utc>>,
}

/// One page of `owner`'s certificates in upload order, and how many match in all.
pub async fn list(
    client: &impl GenericClient,
    owner: &Owner,
    filter: &Filter,
    page: u64,
    per_page: u64,
) -> Result<(Vec<CustomCertificate>, i64), DbError> {
    let status = filter.status.as_deref();
    let conditions = "owner_kind = $1 AND owner_id = $2
         AND ($3::text IS NULL
              OR ($3 = 'active' AND expires_on > now())
              OR ($3 = 'expired' AND expires_on <= now()))
         AND ($4::timestamptz IS NULL OR expires_on < $4)";
    let total: i64 = client
        .query_one(
            &format!("SELECT count(*) FROM custom_certificates WHERE {conditions}"),
            &[
                &owner.kind().as_str(),
                &owner.id(),
                &status,
                &filter.expires_before,
            ],
        )
        .await?
        .get(0);
    let offset = i64::try_from(page.saturating_sub(1).saturating_mul(per_page)).unwrap_or(i64::MAX);
    let limit = i64::try_from(per_page).unwrap_or(50);
    let rows = client
        .query(
            &format!(
                "SELECT {COLUMNS} FROM custom_certificates WHERE {conditions}
                 ORDER BY uploaded_on, id LIMIT $5 OFFSET $6"
            ),
            &[
                &owner.kind().as_str(),
                &owner.id(),
                &status,
                &filter.expires_before,
                &limit,
                &offset,
            ],
        )
        .await?;
    let items = rows.iter().map(from_row).collect::<Result<_, _>>()?;
    Ok((items, total))
}

/// Deletes the certificate; false when `owner` has no such certificate.
pub async fn delete(
    client: &impl GenericClient,
    owner: &Owner,
    id: CertificateId,
) -> Result<bool, DbError> {
    let n = client
        .execute(
            "DELETE FROM custom_certificates WHERE id = $1 AND owner_kind = $2 AND owner_id = $3",
            &[&id.0, &owner.kind().as_str(), &owner.id()],
        )
        .await?;
    Ok(n == 1)
}

/// How many certificates (of every tenant) expire within 7 and within 30 days and have not
/// expired yet: one walk of the expiry index over the next 30 days.
pub async fn count_expiring(client: &impl GenericClient) -> Result<(i64, i64), DbError> {
    let row = client
        .query_one(
            "SELECT count(*) FILTER (WHERE expires_on < now() + interval '7 days'), count(*)
             FROM custom_certificates
             WHERE expires_on > now() AND expires_on < now() + interval '30 days'",
            &[],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
}

/// Certificates (of `owner`, or of everyone) not yet expired that expire before `before`,
/// soonest first, at most `limit`.
pub async fn expiring(
    client: &impl GenericClient,
    owner: Option<&Owner>,
    before: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<CustomCertificate>, DbError> {
    let kind = owner.map(|o| o.kind().as_str());
    let id = owner.map(|o| o.id());
    let rows = client
        .query(
            &format!(
                "SELECT {COLUMNS} FROM custom_certificates
                 WHERE expires_on > now() AND expires_on < $1
                   AND ($2::text IS NULL OR (owner_kind = $2 AND owner_id = $3))
                 ORDER BY expires_on, id LIMIT $4"
            ),
            &[&before, &kind, &id, &limit],
        )
        .await?;
    rows.iter().map(from_row).collect()
}

/// The stored chains of the CSRs `ids`, by CSR: `(certificate id, chain)` (for `keys verify`).
pub async fn chains_of(
    client: &impl GenericClient,
    ids: &[uuid::Uuid],
) -> Result<std::collections::HashMap<uuid::Uuid, Vec<(uuid::Uuid, String)>>, DbError> {
    let rows = client
        .query(
            "SELECT custom_csr_id, id, certificate FROM custom_certificates
             WHERE custom_csr_id = ANY($1)",
            &[&ids],
        )
        .await?;
    let mut by_csr: std::collections::HashMap<uuid::Uuid, Vec<(uuid::Uuid, String)>> =
        std::collections::HashMap::new();
    for r in rows {
        by_csr
            .entry(r.get(0))
            .or_default()
            .push((r.get(1), r.get(2)));
    }
    Ok(by_csr)
}

fn from_row(row: &Row) -> Result<CustomCertificate, DbError> {
    let corrupt = |what: &str| DbError::Corrupt(what.to_owned());
    let kind = OwnerKind::parse(row.get("owner_kind")).ok_or_else(|| corrupt("owner_kind"))?;
    let owner = Owner::parse(kind, row.get("owner_id")).ok_or_else(|| corrupt("owner_id"))?;
    Ok(CustomCertificate {
        id: CertificateId(row.get("id")),
        owner,
        custom_csr_id: CsrId(row.get("custom_csr_id")),
        certificate: row.get("certificate"),
        leaf_sha256: row
            .get::<_, Vec<u8>>("leaf_sha256")
            .try_into()
            .map_err(|_| corrupt("leaf_sha256"))?,
        hosts: row.get("hosts"),
        issuer: row.get("issuer"),
        signature: row.get("signature"),
        serial_number: row.get("serial_number"),
        bundle_method: row.get("bundle_method"),
        cert_type: row.get("cert_type"),
        geo_label: row.get("geo_label"),
        policy: row.get("policy"),
        priority: row.get("priority"),
        not_before: row.get("not_before"),
        expires_on: row.get("expires_on"),
        uploaded_on: row.get("uploaded_on"),
        modified_on: row.get("modified_on"),
    })
}
