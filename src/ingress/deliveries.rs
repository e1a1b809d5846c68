//! Key delivery: a tenant's key recipients (enroll, list, read, revoke) and the one way a
//! private key leaves csrd, a recipient's deliveries.
//!
//! A key is released only when all of these hold: the recipient is the tenant's and an
//! operator approved it (`csrd recipient approve`, never the API); the CSR was created with
//! `"key_delivery": "sealed"`; it has a current (latest, unexpired) certificate; and every
//! name that certificate covers is within the recipient's hosts. Each release is sealed as it
//! is answered (a fresh age file per key, nothing stored), and each is audited as
//! `key.released` in Postgres *before* the answer is sent: a key that cannot be audited is not
//! released. Refusals are audited as `key.release_denied`. Opening and sealing run in the
//! tenant's fair CPU turns, with no connection held.

use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use sha2::Digest as _;

use super::db_share::{DbShare, ShareError};
use super::{Refused, ServiceError};
use crate::audit::{Actor, AuditEvent, Auditor};
use crate::crypto::Keyring;
use crate::crypto::seal::seal_armored;
use crate::db::DbError;
use crate::db::recipients::{self, Deliverable, DeliveryFilter};
use crate::domain::recipient::AgeRecipient;
use crate::domain::{
    CertificateId, CsrId, KeyRecipient, NewRecipient, Owner, RecipientId, RecipientStatus,
};
use crate::fairshare::{CpuSlots, Lane};

/// Key recipients a tenant may have that are not revoked: far more TLS hosts than a tenant
/// runs, few enough that a token enrolling in a loop stops soon.
pub const MAX_RECIPIENTS: i64 = 1_000;

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The tenant has [`MAX_RECIPIENTS`] recipients not revoked.
    #[error("a tenant has at most {MAX_RECIPIENTS} key recipients that are not revoked")]
    TooManyRecipients,
    /// No such recipient of this owner (another tenant's reads the same).
    #[error("key recipient not found")]
    NotFound,
    /// The recipient may not receive: pending an operator's approval, or revoked.
    #[error("the key recipient is {}", .0.as_str())]
    NotActive(RecipientStatus),
    #[error(transparent)]
    Refused(#[from] Refused),
    #[error(transparent)]
    Service(#[from] ServiceError),
}

impl From<DbError> for DeliveryError {
    fn from(e: DbError) -> Self {
        Self::Service(e.into())
    }
}

impl From<ShareError> for DeliveryError {
    fn from(e: ShareError) -> Self {
        match e {
            ShareError::Busy(e) => Self::Refused(e),
            ShareError::Db(e) => e.into(),
        }
    }
}

/// One released key: the certificate it serves and the key sealed to the recipient.
#[derive(Debug)]
pub struct Delivery {
    pub custom_csr_id: CsrId,
    pub certificate_id: CertificateId,
    pub hosts: Vec<String>,
    pub expires_on: DateTime<Utc>,
    pub serial_number: String,
    /// SHA-256 of the leaf's SubjectPublicKeyInfo (the CSR's key), hex.
    pub spki_sha256: String,
    pub generation: i64,
    /// The stored chain, PEM, leaf first.
    pub certificate: String,
    /// An ASCII-armored age file, sealed to the recipient, holding the PKCS#8 PEM key.
    pub sealed_key: String,
}

/// One page of deliveries, and how many the recipient may receive in all.
pub struct DeliveryPage {
    pub items: Vec<Delivery>,
    pub total: u64,
}

/// Estimated CPU of one release (open the envelope, write the PEM, two X25519 scalar
/// multiplications, read the leaf's key), for the fair-share turns.
const RELEASE_MICROS: u64 = 150;

#[derive(Clone)]
pub struct Deliveries {
    db: DbShare,
    keyring: Arc<Keyring>,
    cpu: CpuSlots,
    audit: Auditor,
}

impl Deliveries {
    pub fn new(db: DbShare, keyring: Arc<Keyring>, cpu: CpuSlots, audit: Auditor) -> Self {
        Self {
            db,
            keyring,
            cpu,
            audit,
        }
    }

    pub async fn enroll(
        &self,
        owner: &Owner,
        new: NewRecipient,
    ) -> Result<KeyRecipient, DeliveryError> {
        let mut client = self.db.get(owner).await?;
        let tx = client.transaction().await.map_err(DbError::from)?;
        let recipient = recipients::insert(
            &tx,
            MAX_RECIPIENTS,
            owner,
            RecipientId::new(),
            &new,
            crate::domain::CreateJob::now(),
            Some(&requester_label()),
        )
        .await?
        .ok_or(DeliveryError::TooManyRecipients)?;
        tx.commit().await.map_err(DbError::from)?;
        self.audit.record(
            AuditEvent::new("key_recipient.enroll", "ok", Actor::Anonymous)
                .owner(owner)
                .target(recipient.id)
                .detail(serde_json::json!({
                    "name": recipient.name,
                    "fingerprint": recipient.fingerprint,
                    "hosts": recipient.hosts,
                })),
        );
        Ok(recipient)
    }

    pub async fn list(
        &self,
        owner: &Owner,
        page: u64,
        per_page: u64,
    ) -> Result<(Vec<KeyRecipient>, u64), DeliveryError> {
        let client = self.db.get(owner).await?;
        let (items, total) = recipients::list(&**client, owner, page, per_page).await?;
        Ok((items, total.max(0) as u64))
    }

    pub async fn get(&self, owner: &Owner, id: RecipientId) -> Result<KeyRecipient, DeliveryError> {
        let client = self.db.get(owner).await?;
        recipients::get(&**client, owner, id)
            .await?
            .ok_or(DeliveryError::NotFound)
    }

    /// Revokes the recipient at once: from now on it receives nothing.
    pub async fn revoke(
        &self,
        owner: &Owner,
        id: RecipientId,
    ) -> Result<KeyRecipient, DeliveryError> {
        let client = self.db.get(owner).await?;
        let recipient = recipients::revoke(&**client, Some(owner), id, &requester_label())
            .await?
            .ok_or(DeliveryError::NotFound)?;
        self.audit.record(
            AuditEvent::new("key_recipient.revoke", "ok", Actor::Anonymous)
                .owner(owner)
                .target(recipient.id)
                .detail(serde_json::json!({"fingerprint": recipient.fingerprint})),
        );
        Ok(recipient)
    }

    /// One page of the keys recipient `id` of `owner` may receive, each sealed to it now and
    /// audited before it is returned.
    pub async fn deliveries(
        &self,
        owner: &Owner,
        id: RecipientId,
        filter: &DeliveryFilter,
        page: u64,
        per_page: u64,
    ) -> Result<DeliveryPage, DeliveryError> {
        let (recipient, found, total) = {
            let client = self.db.get(owner).await?;
            let Some(recipient) = recipients::get(&**client, owner, id).await? else {
                self.denied(owner, id, None, "not_found");
                return Err(DeliveryError::NotFound);
            };
            if recipient.status != RecipientStatus::Active {
                let reason = match recipient.status {
                    RecipientStatus::Pending => "pending",
                    _ => "revoked",
                };
                self.denied(owner, id, Some(&recipient.fingerprint), reason);
                return Err(DeliveryError::NotActive(recipient.status));
            }
            let (found, total) =
                recipients::deliverable(&**client, owner, &recipient.hosts, filter, page, per_page)
                    .await?;
            (recipient, found, total)
        };
        let sealed_to = AgeRecipient::parse(&recipient.recipient)
            .ok_or_else(|| DbError::Corrupt("key_recipients.recipient".into()))?;
        let (items, refused) = self.seal_all(owner, &recipient, sealed_to, found).await?;
        for (csr, reason) in refused {
            self.denied(owner, id, Some(&recipient.fingerprint), reason);
            tracing::warn!(custom_csr_id = %csr, reason, "a key was not released");
        }
        if !self.audit_releases(owner, &recipient, &items).await? {
            // Revoked while the page was being sealed: nothing of it is sent.
            self.denied(owner, id, Some(&recipient.fingerprint), "revoked");
            return Err(DeliveryError::NotActive(RecipientStatus::Revoked));
        }
        crate::metrics::keys_released(items.len() as u64);
        Ok(DeliveryPage {
            items,
            total: total.max(0) as u64,
        })
    }

    /// Opens and seals every deliverable in the tenant's CPU turns, a slot's worth at a time.
    /// What is refused here (hosts the query let through that the recipient does not cover, a
    /// key that does not open) comes back with its reason, never its bytes.
    async fn seal_all(
        &self,
        owner: &Owner,
        recipient: &KeyRecipient,
        sealed_to: AgeRecipient,
        found: Vec<Deliverable>,
    ) -> Result<(Vec<Delivery>, Vec<(CsrId, &'static str)>), DeliveryError> {
        let per_task = (crate::fairshare::cpu::TURN.as_micros() as u64 / RELEASE_MICROS).max(1);
        let mut groups: Vec<Vec<Deliverable>> = Vec::new();
        for d in found {
            match groups.last_mut() {
                Some(g) if (g.len() as u64) < per_task => g.push(d),
                _ => groups.push(vec![d]),
            }
        }
        let tasks = groups.into_iter().map(|group| {
            let (keyring, to, owner2, r) = (
                self.keyring.clone(),
                sealed_to.clone(),
                owner.clone(),
                recipient.clone(),
            );
            let estimate = std::time::Duration::from_micros(group.len() as u64 * RELEASE_MICROS);
            self.cpu.run(owner, Lane::Interactive, estimate, move || {
                group
                    .into_iter()
                    .map(|d| release(&keyring, &owner2, &r, &to, d))
                    .collect::<Vec<_>>()
            })
        });
        let done = futures_util::future::try_join_all(tasks)
            .await
            .map_err(|e| ServiceError::Internal(Box::new(e)))?;
        let mut items = Vec::new();
        let mut refused = Vec::new();
        for outcome in done.into_iter().flat_map(|(group, _took)| group) {
            match outcome {
                Ok(item) => items.push(item),
                Err(e) => refused.push(e),
            }
        }
        Ok((items, refused))
    }

    /// Every release of the page as `key.released`, in one statement, before any is sent,
    /// while the recipient is still active (its row held against a revocation until they are
    /// written): false, and nothing written, when it was revoked meanwhile.
    async fn audit_releases(
        &self,
        owner: &Owner,
        recipient: &KeyRecipient,
        items: &[Delivery],
    ) -> Result<bool, DeliveryError> {
        let events: Vec<AuditEvent> = items
            .iter()
            .map(|d| {
                crate::audit::stamped(
                    AuditEvent::new("key.released", "ok", Actor::Anonymous)
                        .owner(owner)
                        .target(d.custom_csr_id)
                        .detail(serde_json::json!({
                            "recipient_id": recipient.id.to_string(),
                            "fingerprint": recipient.fingerprint,
                            "custom_csr_id": d.custom_csr_id.to_string(),
                            "certificate_id": d.certificate_id.to_string(),
                            "spki_sha256": d.spki_sha256,
                            "generation": d.generation,
                        })),
                )
            })
            .collect();
        let mut client = self.db.get(owner).await?;
        let tx = client.transaction().await.map_err(DbError::from)?;
        if !recipients::lock_active(&tx, recipient.id).await? {
            return Ok(false);
        }
        if !events.is_empty() {
            crate::audit::append(&*tx, &events).await?;
        }
        tx.commit().await.map_err(DbError::from)?;
        Ok(true)
    }

    fn denied(&self, owner: &Owner, id: RecipientId, fingerprint: Option<&str>, why: &'static str) {
        crate::metrics::key_release_denied(why);
        self.audit.record(
            AuditEvent::new("key.release_denied", "denied", Actor::Anonymous)
                .owner(owner)
                .target(id)
                .detail(serde_json::json!({
                    "recipient_id": id.to_string(),
                    "fingerprint": fingerprint,
                    "reason": why,
                })),
        );
    }
}

/// Who the current request's caller is, as `token:ID` or `user:EMAIL`, for the recipient's
/// record (the audit log has the rest).
fn requester_label() -> String {
    match crate::audit::current_requester() {
        Some(r) => format!("{}:{}", r.actor_kind, r.actor.as_deref().unwrap_or("-")),
        None => "anonymous".to_owned(),
    }
}

/// One key opened and sealed to `to`; the plaintext lives in zeroizing buffers only.
fn release(
    keyring: &Keyring,
    owner: &Owner,
    recipient: &KeyRecipient,
    to: &AgeRecipient,
    d: Deliverable,
) -> Result<Delivery, (CsrId, &'static str)> {
    if !recipient.covers_all(&d.hosts) || !recipient.covers_all(&d.sans) {
        return Err((d.csr_id, "hosts"));
    }
    let spki_sha256 = leaf_spki_sha256(&d.certificate).ok_or((d.csr_id, "certificate"))?;
    let der = crate::crypto::open(keyring, d.csr_id, owner, &d.sealed).map_err(|e| {
        tracing::error!(custom_csr_id = %d.csr_id, error = %e, "a stored key did not open");
        (d.csr_id, "seal")
    })?;
    let pem = crate::crypto::pkcs8_pem::pkcs8_pem(&der);
    let sealed_key = seal_armored(to, &pem).map_err(|_| (d.csr_id, "seal"))?;
    Ok(Delivery {
        custom_csr_id: d.csr_id,
        certificate_id: d.certificate_id,
        hosts: d.hosts,
        expires_on: d.expires_on,
        serial_number: d.serial_number,
        spki_sha256,
        generation: d.generation,
        certificate: d.certificate,
        sealed_key,
    })
}

/// SHA-256 of the chain's leaf's SubjectPublicKeyInfo, hex.
pub fn leaf_spki_sha256(chain_pem: &str) -> Option<String> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(chain_pem.as_bytes()).ok()?;
    let cert = pem.parse_x509().ok()?;
    Some(hex::encode(sha2::Sha256::digest(cert.public_key().raw)))
}

pub fn format_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}
