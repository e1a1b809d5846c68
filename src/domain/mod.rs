//! The domain: validated request types, owners, key types, the SAN rules, the create
//! pipeline's jobs and outcomes, and the Idempotency-Key decision.
//!
//! Nothing here knows about HTTP, AMQP or Postgres. Wire data becomes these types once, at
//! the HTTP edge ("parse, don't validate"); everything behind the edge takes them as given.

// Request paths: a panic here would be a 500 (caught) or a dropped task; errors are
// answered in the Cloudflare envelope instead. Tests may unwrap.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod batch;
pub mod certificate;
pub mod country;
pub mod error_code;
pub mod idempotency;
pub mod ids;
pub mod item_stream;
pub mod job;
pub mod key_delivery;
pub mod key_material;
pub mod key_type;
pub mod list;
pub mod name_policy;
pub mod outcome;
pub mod recipient;
pub mod record;
pub mod request;
pub mod san;
pub mod strict_json;
pub mod validation;

pub use batch::{
    Batch, BatchEntry, BatchId, BatchStatus, ChunkSpan, ItemState, cut_by_cost, cut_chunks,
};
pub use certificate::{CertificateId, CustomCertificate, EditCertificate, UploadCertificate};
pub use error_code::ErrorCode;
pub use idempotency::{IdempotencyDecision, IdempotencyKey, IdempotencyRecord, Settled};
pub use ids::{AccountId, CsrId, Owner, OwnerKind, ZoneId};
pub use job::{BatchSlot, Completion, CreateChunk, CreateJob, JobOutcome, Requester};
pub use key_delivery::KeyDelivery;
pub use key_type::KeyType;
pub use list::{Direction, ListQuery, SortField};
pub use name_policy::NamePolicy;
pub use outcome::{CreateOutcome, PendingCreate};
pub use recipient::{KeyRecipient, NewRecipient, RecipientId, RecipientStatus};
pub use record::CustomCsr;
pub use request::{CreateCsr, Subject};
pub use san::DnsName;
pub use validation::{FieldError, ValidationErrors};
