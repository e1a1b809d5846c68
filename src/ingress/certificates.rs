//! Custom certificates: upload one (or many) against their custom CSRs, checked against the
//! key csrd holds for each, read, list, edit and delete them, always scoped to one owner.
//! Changes are audited.
//!
//! Every upload goes the same way: the CSRs are read (no lock, no transaction: a CSR never
//! changes), the chains checked with no connection held ([`ChainChecker`]: cheap checks
//! first, signatures within a budget, all of it in fair CPU slots), and only then a short
//! transaction stores the rows within the tenant's caps. The routes use a quarter of the pool
//! at most, shared by tenants by fair share ([`DbShare`]), so no upload load can take the
//! connections creates need.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio_postgres::error::SqlState;

use super::chain_check::{Candidate, ChainChecker, CheckError, ParseMemory};
use super::db_share::{DbShare, ShareError};
use super::limits::BodyReservation;
use super::{Limits, Refused, ServiceError};
use crate::audit::{Actor, AuditEvent, Auditor};
use crate::crypto::chain::{ChainError, LeafFacts, uncovered_names};
use crate::db::DbError;
use crate::db::certificates::{self, CertificateCaps, Filter, StoreOutcome, StoredIds};
use crate::domain::certificate::SNI_CUSTOM;
use crate::domain::{
    CertificateId, CsrId, CustomCertificate, EditCertificate, ErrorCode, FieldError, Owner,
    UploadCertificate, ValidationErrors,
};
use crate::fairshare::{CpuSlots, Lane, Policies};

#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    #[error("invalid certificate upload")]
    Invalid(ValidationErrors),
    /// The `custom_csr_id` names no CSR of this owner (another tenant's reads the same).
    #[error("custom CSR not found")]
    CsrNotFound,
    #[error("custom certificate not found")]
    NotFound,
    /// Other edits of the same certificate won every attempt (409: send it again).
    #[error("the custom certificate was edited concurrently")]
    EditConflict,
    #[error(transparent)]
    Refused(#[from] Refused),
    #[error(transparent)]
    Service(#[from] ServiceError),
}

impl From<DbError> for CertificateError {
    fn from(e: DbError) -> Self {
        Self::Service(e.into())
    }
}

impl From<tokio_postgres::Error> for CertificateError {
    fn from(e: tokio_postgres::Error) -> Self {
        DbError::from(e).into()
    }
}

impl From<ShareError> for CertificateError {
    fn from(e: ShareError) -> Self {
        match e {
            ShareError::Busy(e) => Self::Refused(e),
            ShareError::Db(e) => e.into(),
        }
    }
}

impl From<ValidationErrors> for CertificateError {
    fn from(e: ValidationErrors) -> Self {
        Self::Invalid(e)
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

/// CSRs read from Postgres at once for a bulk upload: 256 of the largest (150 SANs of 253
/// characters, ~60 KB of PEM) is 15 MB, read and reduced to their keys before the next part.
const CSRS_PER_READ: usize = 256;

/// Times an edit is checked again when the certificate changed under it meanwhile.
const EDIT_ATTEMPTS: usize = 3;

/// Where a refusal points: the body itself (a single upload or edit) or one bulk item.
#[derive(Clone, Copy)]
enum At {
    Body,
    Item(usize),
}

impl At {
    fn pointer(self, field: &str) -> String {
        match self {
            At::Body => field.to_owned(),
            At::Item(i) => format!("/items/{i}{field}"),
        }
    }
}

#[derive(Clone)]
pub struct Certificates {
    db: DbShare,
    cpu: CpuSlots,
    checker: ChainChecker,
    policies: Policies,
    limits: Limits,
    audit: Auditor,
    /// Edits of one certificate take turns (edits of others never wait for them).
    edit_turns: super::turns::Turns<CertificateId>,
}

impl Certificates {
    pub fn new(
        db: DbShare,
        cpu: CpuSlots,
        policies: Policies,
        limits: Limits,
        audit: Auditor,
    ) -> Self {
        Self {
            db,
            checker: ChainChecker::new(cpu.clone()),
            cpu,
            policies,
            limits,
            audit,
            edit_turns: super::turns::Turns::default(),
        }
    }

    pub async fn upload(
        &self,
        owner: &Owner,
        upload: UploadCertificate,
    ) -> Result<Stored, CertificateError> {
        let (facts, uncovered) = self
            .check_one(owner, upload.custom_csr_id, upload.certificate.clone())
            .await?;
        let certificate = new_certificate(owner, upload, facts, stored_now());
        let ids = self
            .store(owner, std::slice::from_ref(&certificate), |_| At::Body)
            .await?;
        if ids
            .get(&(certificate.custom_csr_id.0, certificate.leaf_sha256))
            .is_some_and(|(_, new)| !new)
        {
            return Err(already_submitted());
        }
        self.audited("certificate.upload", &certificate);
        Ok(Stored {
            certificate,
            uncovered,
        })
    }

    /// A bulk upload's `body`: read item by item in the tenant's CPU turns, every certificate
    /// checked against its CSR's key, then all of them stored in one short transaction, or
    /// nothing: any refusal is reported at its `/items/N/…`. A certificate already stored for
    /// its CSR is answered with its id. The body is charged to the request rate at one request
    /// per MiB (the gate charged the first). The CSRs' ids come back beside the certificates'.
    pub async fn upload_many(
        &self,
        owner: &Owner,
        body: impl AsRef<[u8]> + Send + 'static,
        memory: &mut BodyReservation,
    ) -> Result<Vec<(CertificateId, CsrId)>, CertificateError> {
        let body_len = body.as_ref().len();
        self.limits.charge_body(owner, body_len).await?;
        let uploads = self
            .cpu
            .run_in_turns(owner, Lane::Bulk, move |turns| {
                crate::domain::certificate::parse_bulk(body.as_ref(), || turns.checkpoint())
            })
            .await
            .map_err(|e| ServiceError::Internal(Box::new(e)))??;
        let mut csr_ids: Vec<uuid::Uuid> = uploads.iter().map(|u| u.custom_csr_id.0).collect();
        csr_ids.sort_unstable();
        csr_ids.dedup();
        let keys = self.csr_keys(owner, &csr_ids).await?;
        let mut errors = Vec::new();
        let mut candidates = Vec::with_capacity(uploads.len());
        let mut rest = Vec::with_capacity(uploads.len());
        for (i, mut upload) in uploads.into_iter().enumerate() {
            match keys.get(&upload.custom_csr_id.0) {
                Some(key) => candidates.push(Candidate {
                    certificate: std::mem::take(&mut upload.certificate),
                    csr_spki: key.clone(),
                }),
                None => errors.push(FieldError::new(
                    ErrorCode::CustomCsrNotFound,
                    At::Item(i).pointer("/custom_csr_id"),
                    "The custom CSR was not found.",
                )),
            }
            rest.push(upload);
        }
        if !errors.is_empty() {
            return Err(ValidationErrors(errors).capped().into());
        }
        let memory = ParseMemory {
            reservation: memory,
            covered: 2 * body_len,
        };
        let facts = self
            .checker
            .check(owner, Lane::Bulk, candidates, Utc::now(), Some(memory))
            .await
            .map_err(|e| refused_chains(e, At::Item))?;
        let now = stored_now();
        let rows: Vec<CustomCertificate> = rest
            .into_iter()
            .zip(facts)
            .map(|(upload, facts)| new_certificate(owner, upload, facts, now))
            .collect();
        let stored = self.store(owner, &rows, At::Item).await?;
        let ids = rows
            .iter()
            .map(|c| {
                let id = stored
                    .get(&(c.custom_csr_id.0, c.leaf_sha256))
                    .map_or(c.id, |(id, _)| CertificateId(*id));
                (id, c.custom_csr_id)
            })
            .collect();
        self.audit.record(
            AuditEvent::new("certificate.upload_bulk", "ok", Actor::Anonymous)
                .owner(owner)
                .detail(serde_json::json!({
                    "items": rows.len(),
                    "stored": stored.values().filter(|(_, new)| *new).count(),
                })),
        );
        Ok(ids)
    }

    pub async fn edit(
        &self,
        owner: &Owner,
        id: CertificateId,
        edit: EditCertificate,
    ) -> Result<Stored, CertificateError> {
        // Edits of one certificate take turns in this process (only another process's can
        // still change it between the check and the store).
        let _turn = self.edit_turns.take(id).await;
        for _ in 0..EDIT_ATTEMPTS {
            let current = self.get(owner, id).await?;
            // What the chain is checked as: the edit's certificate and CSR, or the stored ones.
            let checked_against = (
                edit.custom_csr_id.unwrap_or(current.custom_csr_id),
                edit.certificate
                    .clone()
                    .unwrap_or_else(|| current.certificate.clone()),
            );
            let checked = if edit.rechecks() {
                Some(
                    self.check_one(owner, checked_against.0, checked_against.1.clone())
                        .await?,
                )
            } else {
                None
            };
            let mut client = self.db.get(owner).await?;
            let tx = client.transaction().await?;
            let mut stored = certificates::get(&*tx, owner, id, true)
                .await?
                .ok_or(CertificateError::NotFound)?;
            let now_against = (
                edit.custom_csr_id.unwrap_or(stored.custom_csr_id),
                edit.certificate
                    .clone()
                    .unwrap_or_else(|| stored.certificate.clone()),
            );
            if checked.is_some() && now_against != checked_against {
                // Edited meanwhile: the check was of a pair that no longer applies.
                continue;
            }
            let mut uncovered = Vec::new();
            if let Some((facts, missing)) = checked {
                uncovered = missing;
                stored.custom_csr_id = checked_against.0;
                apply_facts(&mut stored, facts);
            }
            if let Some(bundle_method) = &edit.bundle_method {
                stored.bundle_method = bundle_method.clone();
            }
            if let Some(geo_label) = &edit.geo_label {
                stored.geo_label = geo_label.clone();
            }
            if let Some(policy) = &edit.policy {
                stored.policy = policy.clone();
            }
            stored.modified_on = stored_now();
            // Cloudflare: "PATCHing a configuration for sni_custom certificates will result in
            // a new resource id being returned, and the previous one being deleted."
            let previous = stored.id;
            if stored.cert_type == SNI_CUSTOM {
                stored.id = CertificateId::new();
            }
            let outcome = refuse_duplicate(
                certificates::update(&tx, previous, &stored, self.caps(owner)).await,
            )?;
            refuse_outcome(outcome, std::slice::from_ref(&stored), |_| At::Body)?;
            tx.commit().await?;
            self.audited("certificate.edit", &stored);
            return Ok(Stored {
                certificate: stored,
                uncovered,
            });
        }
        Err(CertificateError::EditConflict)
    }

    pub async fn get(
        &self,
        owner: &Owner,
        id: CertificateId,
    ) -> Result<CustomCertificate, CertificateError> {
        let client = self.db.get(owner).await?;
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
        let client = self.db.get(owner).await?;
        let (items, total) = certificates::list(&**client, owner, filter, page, per_page).await?;
        Ok(CertificatePage {
            items,
            total: u64::try_from(total).unwrap_or(0),
        })
    }

    pub async fn delete(&self, owner: &Owner, id: CertificateId) -> Result<(), CertificateError> {
        let client = self.db.get(owner).await?;
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

    /// Checks one chain against the CSR `csr_id`: its facts, and the CSR names it leaves
    /// uncovered.
    async fn check_one(
        &self,
        owner: &Owner,
        csr_id: CsrId,
        certificate: String,
    ) -> Result<(LeafFacts, Vec<String>), CertificateError> {
        let (csr_pem, sans) = {
            let client = self.db.get(owner).await?;
            certificates::csrs_of(&**client, owner, &[csr_id.0])
                .await?
                .remove(&csr_id.0)
                .ok_or(CertificateError::CsrNotFound)?
        };
        let keys = self
            .checker
            .csr_keys(owner, Lane::Interactive, vec![(csr_id.0, csr_pem)])
            .await
            .map_err(|e| refused_chains(e, |_| At::Body))?;
        let csr_spki = keys
            .get(&csr_id.0)
            .cloned()
            .unwrap_or_else(|| Arc::new(Vec::new()));
        let candidate = Candidate {
            certificate,
            csr_spki,
        };
        let facts = self
            .checker
            // One chain of a body of at most 1 MiB: its parsed form is bounded as it is.
            .check(owner, Lane::Interactive, vec![candidate], Utc::now(), None)
            .await
            .map_err(|e| refused_chains(e, |_| At::Body))?
            .pop()
            .ok_or_else(|| ServiceError::Internal("a checked chain went missing".into()))?;
        let uncovered = uncovered_names(&sans, &facts.hosts);
        Ok((facts, uncovered))
    }

    /// The keys of `owner`'s CSRs among `ids`, read a part at a time (a part's PEMs are
    /// dropped once their keys are out).
    async fn csr_keys(
        &self,
        owner: &Owner,
        ids: &[uuid::Uuid],
    ) -> Result<HashMap<uuid::Uuid, Arc<Vec<u8>>>, CertificateError> {
        let mut keys = HashMap::with_capacity(ids.len());
        for part in ids.chunks(CSRS_PER_READ) {
            let pems: Vec<(uuid::Uuid, String)> = {
                let client = self.db.get(owner).await?;
                certificates::csrs_of(&**client, owner, part)
                    .await?
                    .into_iter()
                    .map(|(id, (pem, _))| (id, pem))
                    .collect()
            };
            let part_keys = self
                .checker
                .csr_keys(owner, Lane::Bulk, pems)
                .await
                .map_err(|e| refused_chains(e, At::Item))?;
            keys.extend(part_keys);
        }
        Ok(keys)
    }

    /// Stores `rows` in one short transaction within `owner`'s caps: each row's id by (CSR,
    /// leaf digest) and whether it is new. `at` says where a refused row points.
    async fn store(
        &self,
        owner: &Owner,
        rows: &[CustomCertificate],
        at: impl Fn(usize) -> At,
    ) -> Result<StoredIds, CertificateError> {
        let mut client = self.db.get(owner).await?;
        let tx = client.transaction().await?;
        let outcome = certificates::store(&tx, owner, rows, self.caps(owner)).await?;
        let ids = refuse_outcome(outcome, rows, at)?;
        tx.commit().await?;
        // The rows went in one statement: a connection that carried a large one is closed.
        client.release_sized(rows.iter().map(|r| r.certificate.len()).sum());
        Ok(ids)
    }

    fn caps(&self, owner: &Owner) -> CertificateCaps {
        let policy = self.policies.of(owner);
        CertificateCaps {
            per_csr: policy.certificates_per_csr,
            tenant_bytes: policy.certificate_bytes,
        }
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

/// The ids of a store, or why nothing was stored, pointed at the rows concerned.
fn refuse_outcome(
    outcome: StoreOutcome,
    rows: &[CustomCertificate],
    at: impl Fn(usize) -> At,
) -> Result<StoredIds, CertificateError> {
    let rows_of = |csr: &dyn Fn(uuid::Uuid) -> bool| -> Vec<usize> {
        rows.iter()
            .enumerate()
            .filter(|(_, r)| csr(r.custom_csr_id.0))
            .map(|(i, _)| i)
            .collect()
    };
    match outcome {
        StoreOutcome::Stored(ids) => Ok(ids),
        StoreOutcome::CsrsGone(gone) => {
            if rows.len() == 1 && matches!(at(0), At::Body) {
                return Err(CertificateError::CsrNotFound);
            }
            let errors = rows_of(&|c| gone.contains(&c))
                .into_iter()
                .map(|i| {
                    FieldError::new(
                        ErrorCode::CustomCsrNotFound,
                        at(i).pointer("/custom_csr_id"),
                        "The custom CSR was not found.",
                    )
                })
                .collect();
            Err(ValidationErrors(errors).capped().into())
        }
        StoreOutcome::OverPerCsr { csr, limit } => {
            let errors = rows_of(&|c| c == csr)
                .into_iter()
                .map(|i| {
                    FieldError::new(
                        ErrorCode::CertificateQuota,
                        at(i).pointer("/custom_csr_id"),
                        format!(
                            "the custom CSR would hold more than {limit} certificates; delete ones it no longer needs (an operator can raise the cap with csrd tenant limits set --certificates-per-csr)"
                        ),
                    )
                })
                .collect();
            Err(ValidationErrors(errors).capped().into())
        }
        StoreOutcome::OverBytes {
            stored,
            adding,
            limit,
        } => Err(ValidationErrors::single(FieldError::new(
            ErrorCode::CertificateQuota,
            "",
            format!(
                "the tenant stores {stored} bytes of certificates; these {adding} more would pass its cap of {limit} (an operator can raise it with csrd tenant limits set --certificate-bytes)"
            ),
        ))
        .into()),
    }
}

/// A chain check's refusal as the client sees it.
fn refused_chains(e: CheckError, at: impl Fn(usize) -> At) -> CertificateError {
    match e {
        CheckError::Items(items) => {
            let errors = items
                .into_iter()
                .map(|(i, e)| {
                    let mut error = chain_error(&e);
                    error.pointer = at(i).pointer(&error.pointer);
                    error
                })
                .collect();
            ValidationErrors(errors).capped().into()
        }
        e @ CheckError::OverBudget { .. } => {
            let pointer = match at(0) {
                At::Body => "/certificate",
                At::Item(_) => "/items",
            };
            ValidationErrors::single(FieldError::new(
                ErrorCode::VerificationBudget,
                pointer,
                format!(
                    "{e}: send fewer chains per request, or chains that share their CA certificates"
                ),
            ))
            .into()
        }
        CheckError::Refused(e) => e.into(),
        e @ CheckError::TooLarge { .. } => ValidationErrors::single(FieldError::new(
            ErrorCode::InvalidRequest,
            match at(0) {
                At::Body => "/certificate",
                At::Item(_) => "/items",
            },
            e.to_string(),
        ))
        .into(),
        CheckError::Panicked(e) => ServiceError::Internal(Box::new(e)).into(),
    }
}

fn already_submitted() -> CertificateError {
    CertificateError::Invalid(ValidationErrors::single(FieldError::new(
        ErrorCode::AlreadySubmitted,
        "/certificate",
        "This certificate has already been submitted.",
    )))
}

/// A leaf stored for the CSR already (the unique CSR + leaf digest) is Cloudflare's 400/1220.
fn refuse_duplicate(
    written: Result<StoreOutcome, DbError>,
) -> Result<StoreOutcome, CertificateError> {
    match written {
        Err(DbError::Query(e)) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
            Err(already_submitted())
        }
        other => Ok(other?),
    }
}

fn apply_facts(c: &mut CustomCertificate, facts: LeafFacts) {
    c.certificate = facts.chain_pem;
    c.leaf_sha256 = facts.leaf_sha256;
    c.hosts = facts.hosts;
    c.issuer = facts.issuer;
    c.signature = facts.signature;
    c.serial_number = facts.serial_number;
    c.not_before = facts.not_before;
    c.expires_on = facts.expires_on;
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
        leaf_sha256: facts.leaf_sha256,
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

/// Now, to the microsecond Postgres keeps: an upload's answer equals what a later read shows.
fn stored_now() -> DateTime<Utc> {
    use chrono::SubsecRound as _;
    Utc::now().trunc_subsecs(6)
}

/// The code and message for a refused chain, at `/certificate`. Nothing of the input is
/// echoed: it may hold a key.
pub fn chain_error(e: &ChainError) -> FieldError {
    let code = match e {
        ChainError::Empty => ErrorCode::CertificateEmpty,
        ChainError::Unparsable => ErrorCode::CertificateUnparsable,
        ChainError::PrivateKey => ErrorCode::KeyMaterialRefused,
        ChainError::TooLong => ErrorCode::ChainTooLong,
        ChainError::OutOfOrder(_) | ChainError::BadSignature(_) | ChainError::Unverifiable(..) => {
            ErrorCode::ChainOutOfOrder
        }
        ChainError::SelfSigned => ErrorCode::SelfSignedLeaf,
        ChainError::Expired(_) => ErrorCode::CertificateExpired,
        ChainError::NotYetValid(_) => ErrorCode::CertificateNotYetValid,
        ChainError::KeyMismatch => ErrorCode::CertificateKeyMismatch,
        ChainError::BadField(_) => ErrorCode::CertificateUnparsable,
    };
    FieldError::new(code, "/certificate", e.to_string())
}
