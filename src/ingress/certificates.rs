//! Custom certificates: upload one against its custom CSR (checked against the key csrd holds
//! for it), read, list, edit and delete them, always scoped to one owner. Changes are audited.

use chrono::{DateTime, Utc};
use tokio_postgres::error::SqlState;

use super::ServiceError;
use crate::audit::{Actor, AuditEvent, Auditor};
use crate::crypto::certificate::{ChainError, LeafFacts, inspect_chain, uncovered_names};
use crate::db::certificates::{self, Filter};
use crate::db::{DbError, Pool};
use crate::domain::certificate::SNI_CUSTOM;
use crate::domain::{
    CertificateId, CsrId, CustomCertificate, EditCertificate, ErrorCode, FieldError, Owner,
    UploadCertificate, ValidationErrors,
};

#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    #[error("invalid certificate upload")]
    Invalid(ValidationErrors),
    /// The `custom_csr_id` names no CSR of this owner (another tenant's reads the same).
    #[error("custom CSR not found")]
    CsrNotFound,
    #[error("custom certificate not found")]
    NotFound,
    #[error(transparent)]
    Service(#[from] ServiceError),
}

impl From<DbError> for CertificateError {
    fn from(e: DbError) -> Self {
        Self::Service(e.into())
    }
}

impl From<deadpool_postgres::PoolError> for CertificateError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        Self::Service(e.into())
    }
}

impl From<tokio_postgres::Error> for CertificateError {
    fn from(e: tokio_postgres::Error) -> Self {
        DbError::from(e).into()
    }
}

/// A stored certificate, and the CSR names it does not cover (reported, not refused: a CA
/// may issue for fewer names than were asked for, and the client decides).
pub struct Stored {
    pub certificate: CustomCertificate,
    pub uncovered: Vec<String>,
}

/// One page of certificates, and how many match in all.
pub struct CertificatePage {
    pub items: Vec<CustomCertificate>,
    pub total: u64,
}

#[derive(Clone)]
pub struct Certificates {
    pool: Pool,
    audit: Auditor,
}

impl Certificates {
    pub fn new(pool: Pool, audit: Auditor) -> Self {
        Self { pool, audit }
    }

    pub async fn upload(
        &self,
        owner: &Owner,
        upload: UploadCertificate,
    ) -> Result<Stored, CertificateError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let (facts, uncovered) =
            check_against_csr(&tx, owner, upload.custom_csr_id, &upload.certificate).await?;
        let now = stored_now();
        let certificate = new_certificate(owner, upload, facts, now);
        refuse_duplicate(certificates::insert(&*tx, &certificate).await)?;
        tx.commit().await?;
        self.audited("certificate.upload", &certificate);
        Ok(Stored {
            certificate,
            uncovered,
        })
    }

    /// Checks every certificate against its CSR's key, then stores them all with one
    /// statement in one transaction, or nothing: any refusal is reported at its
    /// `/items/N/…`. A certificate already stored for its CSR is answered with its id.
    pub async fn upload_many(
        &self,
        owner: &Owner,
        uploads: Vec<UploadCertificate>,
    ) -> Result<Vec<CertificateId>, CertificateError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let ids: Vec<uuid::Uuid> = uploads.iter().map(|u| u.custom_csr_id.0).collect();
        let csrs = certificates::csrs_for_upload(&*tx, owner, &ids).await?;
        let now = stored_now();
        let owner_for_checks = owner.clone();
        // Parsing ten thousand chains is CPU work: on the blocking pool, off the runtime.
        let checked =
            tokio::task::spawn_blocking(move || check_all(&owner_for_checks, uploads, &csrs, now))
                .await
                .map_err(|e| {
                    CertificateError::Service(super::ServiceError::Internal(Box::new(e)))
                })??;
        let stored = certificates::insert_many(&*tx, &checked).await?;
        tx.commit().await?;
        let ids = checked
            .iter()
            .map(|c| {
                stored
                    .get(&(c.custom_csr_id.0, c.serial_number.clone(), c.issuer.clone()))
                    .map_or(c.id, |id| CertificateId(*id))
            })
            .collect();
        self.audit.record(
            AuditEvent::new("certificate.upload_bulk", "ok", Actor::Anonymous)
                .owner(owner)
                .detail(serde_json::json!({ "items": checked.len() })),
        );
        Ok(ids)
    }

    pub async fn edit(
        &self,
        owner: &Owner,
        id: CertificateId,
        edit: EditCertificate,
    ) -> Result<Stored, CertificateError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let mut stored = certificates::get(&*tx, owner, id, true)
            .await?
            .ok_or(CertificateError::NotFound)?;
        let mut uncovered = Vec::new();
        if edit.rechecks() {
            let csr_id = edit.custom_csr_id.unwrap_or(stored.custom_csr_id);
            let pem = edit.certificate.as_deref().unwrap_or(&stored.certificate);
            let (facts, missing) = check_against_csr(&tx, owner, csr_id, pem).await?;
            uncovered = missing;
            stored.custom_csr_id = csr_id;
            stored.certificate = facts.chain_pem;
            stored.hosts = facts.hosts;
            stored.issuer = facts.issuer;
            stored.signature = facts.signature;
            stored.serial_number = facts.serial_number;
            stored.not_before = facts.not_before;
            stored.expires_on = facts.expires_on;
        }
        if let Some(bundle_method) = edit.bundle_method {
            stored.bundle_method = bundle_method;
        }
        if let Some(geo_label) = edit.geo_label {
            stored.geo_label = geo_label;
        }
        if let Some(policy) = edit.policy {
            stored.policy = policy;
        }
        stored.modified_on = stored_now();
        // Cloudflare: "PATCHing a configuration for sni_custom certificates will result in a
        // new resource id being returned, and the previous one being deleted."
        let previous = stored.id;
        if stored.cert_type == SNI_CUSTOM {
            stored.id = CertificateId::new();
        }
        refuse_duplicate(certificates::update(&*tx, previous, &stored).await)?;
        tx.commit().await?;
        self.audited("certificate.edit", &stored);
        Ok(Stored {
            certificate: stored,
            uncovered,
        })
    }

    pub async fn get(
        &self,
        owner: &Owner,
        id: CertificateId,
    ) -> Result<CustomCertificate, CertificateError> {
        let client = self.pool.get().await?;
        certificates::get(&**client, owner, id, false)
            .await?
            .ok_or(CertificateError::NotFound)
    }

    pub async fn list(
        &self,
        owner: &Owner,
        filter: &Filter,
        page: u64,
        per_page: u64,
    ) -> Result<CertificatePage, CertificateError> {
        let client = self.pool.get().await?;
        let (items, total) = certificates::list(&**client, owner, filter, page, per_page).await?;
        Ok(CertificatePage {
            items,
            total: u64::try_from(total).unwrap_or(0),
        })
    }

    pub async fn delete(&self, owner: &Owner, id: CertificateId) -> Result<(), CertificateError> {
        let client = self.pool.get().await?;
        if !certificates::delete(&**client, owner, id).await? {
            return Err(CertificateError::NotFound);
        }
        self.audit.record(
            AuditEvent::new("certificate.delete", "ok", Actor::Anonymous)
                .owner(owner)
                .target(id),
        );
        Ok(())
    }

    fn audited(&self, action: &'static str, c: &CustomCertificate) {
        self.audit.record(
            AuditEvent::new(action, "ok", Actor::Anonymous)
                .owner(&c.owner)
                .target(c.id)
                .detail(serde_json::json!({
                    "custom_csr_id": c.custom_csr_id.to_string(),
                    "serial_number": c.serial_number,
                    "expires_on": c.expires_on,
                })),
        );
    }
}

/// A leaf already stored for the CSR (the unique issuer + serial) is Cloudflare's 400/1220.
fn refuse_duplicate(written: Result<(), DbError>) -> Result<(), CertificateError> {
    match written {
        Err(DbError::Query(e)) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => Err(
            CertificateError::Invalid(ValidationErrors::single(FieldError::new(
                ErrorCode::AlreadySubmitted,
                "/certificate",
                "This certificate has already been submitted.",
            ))),
        ),
        other => Ok(other?),
    }
}

/// The row a checked upload becomes.
fn new_certificate(
    owner: &Owner,
    upload: UploadCertificate,
    facts: LeafFacts,
    now: DateTime<Utc>,
) -> CustomCertificate {
    CustomCertificate {
        id: CertificateId::new(),
        owner: owner.clone(),
        custom_csr_id: upload.custom_csr_id,
        certificate: facts.chain_pem,
        hosts: facts.hosts,
        issuer: facts.issuer,
        signature: facts.signature,
        serial_number: facts.serial_number,
        bundle_method: upload.bundle_method,
        cert_type: upload.cert_type,
        geo_label: upload.geo_label,
        policy: upload.policy,
        priority: 0,
        not_before: facts.not_before,
        expires_on: facts.expires_on,
        uploaded_on: now,
        modified_on: now,
    }
}

/// Every upload checked against its CSR, or every refusal with its item's pointer.
fn check_all(
    owner: &Owner,
    uploads: Vec<UploadCertificate>,
    csrs: &std::collections::HashMap<uuid::Uuid, (String, Vec<String>)>,
    now: DateTime<Utc>,
) -> Result<Vec<CustomCertificate>, CertificateError> {
    let mut checked = Vec::with_capacity(uploads.len());
    let mut errors = Vec::new();
    for (i, upload) in uploads.into_iter().enumerate() {
        let Some((csr_pem, _)) = csrs.get(&upload.custom_csr_id.0) else {
            errors.push(FieldError::new(
                ErrorCode::CustomCsrNotFound,
                format!("/items/{i}/custom_csr_id"),
                "The custom CSR was not found.",
            ));
            continue;
        };
        match inspect_chain(&upload.certificate, csr_pem, now) {
            Ok(facts) => checked.push(new_certificate(owner, upload, facts, now)),
            Err(e) => {
                let mut error = chain_error(&e);
                error.pointer = format!("/items/{i}{}", error.pointer);
                errors.push(error);
            }
        }
    }
    if errors.is_empty() {
        Ok(checked)
    } else {
        Err(CertificateError::Invalid(ValidationErrors(errors).capped()))
    }
}

/// Now, to the microsecond Postgres keeps: an upload's answer equals what a later read shows.
fn stored_now() -> DateTime<Utc> {
    use chrono::SubsecRound as _;
    Utc::now().trunc_subsecs(6)
}

/// Reads the CSR (locked against a delete until the transaction ends) and checks the chain
/// against its key.
async fn check_against_csr(
    tx: &tokio_postgres::Transaction<'_>,
    owner: &Owner,
    csr_id: CsrId,
    pem: &str,
) -> Result<(LeafFacts, Vec<String>), CertificateError> {
    let (csr_pem, sans) = certificates::csr_for_upload(tx, owner, csr_id)
        .await?
        .ok_or(CertificateError::CsrNotFound)?;
    let facts = inspect_chain(pem, &csr_pem, Utc::now())
        .map_err(|e| CertificateError::Invalid(ValidationErrors::single(chain_error(&e))))?;
    let uncovered = uncovered_names(&sans, &facts.hosts);
    Ok((facts, uncovered))
}

/// The code and message for a refused chain, at `/certificate`. Nothing of the input is
/// echoed: it may hold a key.
pub fn chain_error(e: &ChainError) -> FieldError {
    let code = match e {
        ChainError::Empty => ErrorCode::CertificateEmpty,
        ChainError::Unparsable => ErrorCode::CertificateUnparsable,
        ChainError::PrivateKey => ErrorCode::KeyMaterialRefused,
        ChainError::TooLong => ErrorCode::ChainTooLong,
        ChainError::OutOfOrder(_) | ChainError::BadSignature(_) => ErrorCode::ChainOutOfOrder,
        ChainError::SelfSigned => ErrorCode::SelfSignedLeaf,
        ChainError::Expired(_) => ErrorCode::CertificateExpired,
        ChainError::NotYetValid(_) => ErrorCode::CertificateNotYetValid,
        ChainError::KeyMismatch => ErrorCode::CertificateKeyMismatch,
        ChainError::BadField(_) => ErrorCode::CertificateUnparsable,
    };
    FieldError::new(code, "/certificate", e.to_string())
}
