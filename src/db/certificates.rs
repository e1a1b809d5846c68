//! The `custom_certificates` table, always scoped to one owner.

use chrono::{DateTime, Utc};
use tokio_postgres::{GenericClient, Row};

use super::DbError;
use crate::domain::{CertificateId, CsrId, CustomCertificate, Owner, OwnerKind};

const COLUMNS: &str = "id, owner_kind, owner_id, custom_csr_id, certificate, hosts, issuer, signature, \
     serial_number, bundle_method, cert_type, geo_label, policy, priority, not_before, expires_on, \
     uploaded_on, modified_on";

/// The CSR a certificate is checked against: its PEM and SANs, if `owner` owns it. Locked
/// (`FOR KEY SHARE`) until the transaction ends, so the CSR cannot be deleted meanwhile.
pub async fn csr_for_upload(
    client: &impl GenericClient,
    owner: &Owner,
    id: CsrId,
) -> Result<Option<(String, Vec<String>)>, DbError> {
    let row = client
        .query_opt(
            "SELECT csr_pem, sans FROM custom_csrs
             WHERE id = $1 AND owner_kind = $2 AND owner_id = $3 FOR KEY SHARE",
            &[&id.0, &owner.kind().as_str(), &owner.id()],
        )
        .await?;
    Ok(row.map(|r| (r.get(0), r.get(1))))
}

/// The CSRs of `owner` among `ids`, with their PEM and SANs, locked as [`csr_for_upload`]
/// locks one.
pub async fn csrs_for_upload(
    client: &impl GenericClient,
    owner: &Owner,
    ids: &[uuid::Uuid],
) -> Result<std::collections::HashMap<uuid::Uuid, (String, Vec<String>)>, DbError> {
    let rows = client
        .query(
            "SELECT id, csr_pem, sans FROM custom_csrs
             WHERE id = ANY($1) AND owner_kind = $2 AND owner_id = $3 FOR KEY SHARE",
            &[&ids, &owner.kind().as_str(), &owner.id()],
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect())
}

/// Stores many certificates with one statement. A certificate already stored (the same
/// leaf — issuer and serial — for the same CSR: a bulk upload sent again after a lost answer)
/// is kept as it is; the ids of both kinds come back, keyed by CSR, serial and issuer (this
/// batch's leaves only).
pub async fn insert_many(
    client: &impl GenericClient,
    certs: &[CustomCertificate],
) -> Result<std::collections::HashMap<(uuid::Uuid, String, String), uuid::Uuid>, DbError> {
    let Some(first) = certs.first() else {
        return Ok(Default::default());
    };
    let col = |f: &dyn Fn(&CustomCertificate) -> String| certs.iter().map(f).collect::<Vec<_>>();
    let ids: Vec<uuid::Uuid> = certs.iter().map(|c| c.id.0).collect();
    let csr_ids: Vec<uuid::Uuid> = certs.iter().map(|c| c.custom_csr_id.0).collect();
    let hosts: Vec<String> = certs
        .iter()
        .map(|c| serde_json::to_string(&c.hosts).unwrap_or_else(|_| "[]".to_owned()))
        .collect();
    let not_before: Vec<DateTime<Utc>> = certs.iter().map(|c| c.not_before).collect();
    let expires_on: Vec<DateTime<Utc>> = certs.iter().map(|c| c.expires_on).collect();
    let geo: Vec<Option<String>> = certs.iter().map(|c| c.geo_label.clone()).collect();
    let policy: Vec<Option<String>> = certs.iter().map(|c| c.policy.clone()).collect();
    client
        .execute(
            "INSERT INTO custom_certificates (id, owner_kind, owner_id, custom_csr_id, certificate,
                 hosts, issuer, signature, serial_number, bundle_method, cert_type, geo_label,
                 policy, priority, not_before, expires_on, uploaded_on, modified_on)
             SELECT u.id, $1, $2, u.csr, u.pem,
                    ARRAY(SELECT jsonb_array_elements_text(u.hosts::jsonb)), u.issuer, u.sig,
                    u.serial, u.bundle, u.ctype, u.geo, u.policy, 0, u.nb, u.na, $3, $3
             FROM unnest($4::uuid[], $5::uuid[], $6::text[], $7::text[], $8::text[], $9::text[],
                         $10::text[], $11::text[], $12::text[], $13::text[], $14::text[],
                         $15::timestamptz[], $16::timestamptz[])
                  AS u(id, csr, pem, hosts, issuer, sig, serial, bundle, ctype, geo, policy, nb, na)
             ON CONFLICT (custom_csr_id, serial_number, issuer) DO NOTHING",
            &[
                &first.owner.kind().as_str(),
                &first.owner.id(),
                &first.uploaded_on,
                &ids,
                &csr_ids,
                &col(&|c| c.certificate.clone()),
                &hosts,
                &col(&|c| c.issuer.clone()),
                &col(&|c| c.signature.clone()),
                &col(&|c| c.serial_number.clone()),
                &col(&|c| c.bundle_method.clone()),
                &col(&|c| c.cert_type.clone()),
                &geo,
                &policy,
                &not_before,
                &expires_on,
            ],
        )
        .await?;
    let serials = col(&|c| c.serial_number.clone());
    let issuers = col(&|c| c.issuer.clone());
    let rows = client
        .query(
            "SELECT c.custom_csr_id, c.serial_number, c.issuer, c.id
             FROM custom_certificates c
             JOIN unnest($1::uuid[], $2::text[], $3::text[]) AS u(csr, serial, issuer)
               ON c.custom_csr_id = u.csr AND c.serial_number = u.serial AND c.issuer = u.issuer",
            &[&csr_ids, &serials, &issuers],
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| ((r.get(0), r.get(1), r.get(2)), r.get(3)))
        .collect())
}

pub async fn insert(client: &impl GenericClient, c: &CustomCertificate) -> Result<(), DbError> {
    client
        .execute(
            &format!(
                "INSERT INTO custom_certificates ({COLUMNS})
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)"
            ),
            &[
                &c.id.0,
                &c.owner.kind().as_str(),
                &c.owner.id(),
                &c.custom_csr_id.0,
                &c.certificate,
                &c.hosts,
                &c.issuer,
                &c.signature,
                &c.serial_number,
                &c.bundle_method,
                &c.cert_type,
                &c.geo_label,
                &c.policy,
                &c.priority,
                &c.not_before,
                &c.expires_on,
                &c.uploaded_on,
                &c.modified_on,
            ],
        )
        .await?;
    Ok(())
}

/// Writes every field an edit may change.
/// Rewrites the certificate stored as `previous` with `c`, which may carry a new id.
pub async fn update(
    client: &impl GenericClient,
    previous: CertificateId,
    c: &CustomCertificate,
) -> Result<(), DbError> {
    client
        .execute(
            "UPDATE custom_certificates SET custom_csr_id = $2, certificate = $3, hosts = $4,
                 issuer = $5, signature = $6, serial_number = $7, bundle_method = $8,
                 geo_label = $9, policy = $10, not_before = $11, expires_on = $12,
                 modified_on = $13, id = $14
             WHERE id = $1",
            &[
                &previous.0,
                &c.custom_csr_id.0,
                &c.certificate,
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
    Ok(())
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
