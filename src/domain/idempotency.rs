//! Idempotency-Key semantics (IETF httpapi draft): the key, what makes two requests "the same",
//! and the decision a repeated key leads to. Pure: the create use case feeds it what Postgres
//! holds and acts on the answer.

use std::time::Duration;

use sha2::{Digest, Sha256};

use super::{CreateCsr, CreateJob, CustomCsr, ErrorCode, FieldError};

/// A job the broker confirmed long ago with no outcome yet is published again on a retry, as
/// a last resort (a duplicate is harmless: workers are idempotent on the CSR id).
pub const REPUBLISH_AFTER: Duration = Duration::from_secs(300);

const MAX_KEY_LEN: usize = 255;

/// An `Idempotency-Key` header value: 1–255 visible ASCII characters (spaces allowed inside).
/// The draft's quoted form (`"abc"`) and the bare form Stripe uses (`abc`) are the same key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let raw = raw.trim();
        let key = raw
            .strip_prefix('"')
            .and_then(|k| k.strip_suffix('"'))
            .unwrap_or(raw);
        let visible = key.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
        if key.is_empty() || key.len() > MAX_KEY_LEN || !visible {
            return Err(FieldError::new(
                ErrorCode::InvalidRequest,
                "",
                "Idempotency-Key must be 1-255 visible ASCII characters",
            ));
        }
        Ok(Self(key.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What makes two creates "the same request": the validated request, not its JSON spelling.
pub fn request_fingerprint(request: &CreateCsr) -> [u8; 32] {
    // Serialising plain strings, enums and vectors cannot fail.
    let canonical = serde_json::to_vec(request).expect("a CreateCsr always serialises");
    Sha256::digest(canonical).into()
}

/// The fingerprint of a batch submission: its validated items, in order.
pub fn request_fingerprint_of(requests: &[CreateCsr]) -> [u8; 32] {
    let canonical = serde_json::to_vec(requests).expect("a CreateCsr always serialises");
    Sha256::digest(canonical).into()
}

/// The earlier request that claimed a key, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyRecord {
    pub job: CreateJob,
    pub request_fingerprint: Vec<u8>,
    /// The broker confirmed the job.
    pub published: bool,
    /// Time since the key was claimed.
    pub age: Duration,
    /// The CSR it made was deleted since.
    pub csr_deleted: bool,
}

impl IdempotencyRecord {
    pub fn is_same_request(&self, fingerprint: &[u8]) -> bool {
        self.request_fingerprint == fingerprint
    }
}

/// A job's final state, when it has one.
// Made and moved once per request: boxing the large variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    Created(CustomCsr),
    Failed(String),
    Deleted,
}

/// What a create with an Idempotency-Key does next.
#[allow(clippy::large_enum_variant)] // as `Settled`
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyDecision {
    /// The key is new (this request claimed it): publish the job.
    Start,
    /// The earlier request finished: answer with its result; publish nothing.
    Replay(Settled),
    /// The earlier job is in the broker and recent: wait for it.
    ResumeWaiting,
    /// The earlier job may not be in the broker (its publish failed, or was never confirmed) or
    /// is long overdue: publish it again, under the same CSR id, and wait.
    Republish,
}

impl IdempotencyDecision {
    /// The decision for a key an earlier request already claimed with the same request.
    /// `settled` is the earlier job's final state, if it has one.
    pub fn for_earlier(record: &IdempotencyRecord, settled: Option<Settled>) -> Self {
        match settled {
            Some(done) => Self::Replay(done),
            None if !record.published || record.age > REPUBLISH_AFTER => Self::Republish,
            None => Self::ResumeWaiting,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{AccountId, NamePolicy, Owner, OwnerKind};

    fn request(cn: &str) -> CreateCsr {
        let body = serde_json::json!({
            "common_name": cn, "country": "US", "state": "California", "locality": "SF",
            "organization": "Acme", "sans": ["acme.io"], "key_type": "p256v1"
        });
        CreateCsr::parse(
            body.to_string().as_bytes(),
            OwnerKind::Account,
            NamePolicy::Permissive,
        )
        .unwrap()
    }

    fn record(published: bool, age_secs: u64) -> IdempotencyRecord {
        let owner = Owner::Account(AccountId::parse(&"a".repeat(32)).unwrap());
        let job = CreateJob::new(owner, request("acme.io"), "instance".into());
        IdempotencyRecord {
            request_fingerprint: request_fingerprint(&job.request).to_vec(),
            job,
            published,
            age: Duration::from_secs(age_secs),
            csr_deleted: false,
        }
    }

    #[test]
    fn keys_accept_both_forms_and_refuse_empty_long_or_invisible_ones() {
        assert_eq!(IdempotencyKey::parse("abc").unwrap().as_str(), "abc");
        assert_eq!(IdempotencyKey::parse("\"abc\"").unwrap().as_str(), "abc");
        assert_eq!(IdempotencyKey::parse("a b").unwrap().as_str(), "a b");
        assert!(IdempotencyKey::parse(&"k".repeat(255)).is_ok());
        for bad in ["", "\"\"", "   ", "tab\there", "é"] {
            let err = IdempotencyKey::parse(bad).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidRequest, "{bad:?}");
        }
        assert!(IdempotencyKey::parse(&"k".repeat(256)).is_err());
    }

    #[test]
    fn the_fingerprint_depends_on_the_request_not_on_its_spelling() {
        assert_eq!(
            request_fingerprint(&request("a.io")),
            request_fingerprint(&request("a.io"))
        );
        assert_ne!(
            request_fingerprint(&request("a.io")),
            request_fingerprint(&request("b.io"))
        );
        assert!(record(true, 0).is_same_request(&request_fingerprint(&request("acme.io"))));
        assert!(!record(true, 0).is_same_request(&request_fingerprint(&request("b.io"))));
    }

    #[test]
    fn a_finished_earlier_request_is_replayed() {
        for settled in [Settled::Failed("dead-lettered".into()), Settled::Deleted] {
            assert_eq!(
                IdempotencyDecision::for_earlier(&record(true, 0), Some(settled.clone())),
                IdempotencyDecision::Replay(settled)
            );
        }
    }

    #[test]
    fn a_recent_confirmed_job_is_waited_for() {
        assert_eq!(
            IdempotencyDecision::for_earlier(&record(true, 10), None),
            IdempotencyDecision::ResumeWaiting
        );
    }

    #[test]
    fn an_unconfirmed_or_overdue_job_is_published_again() {
        assert_eq!(
            IdempotencyDecision::for_earlier(&record(false, 0), None),
            IdempotencyDecision::Republish
        );
        let overdue = REPUBLISH_AFTER.as_secs() + 1;
        assert_eq!(
            IdempotencyDecision::for_earlier(&record(true, overdue), None),
            IdempotencyDecision::Republish
        );
    }
}
