//! The ingress role's use cases, behind the HTTP adapter: authenticate a caller, create a CSR
//! (the pipeline through the queue), list, get and delete stored CSRs, and say whether the
//! process is ready. HTTP handlers (and the batch API) call these; they reach Postgres and the
//! queue only through here.

// Request paths: a panic here would be a 500 (caught) or a dropped task; errors are
// answered in the Cloudflare envelope instead. Tests may unwrap.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod access;
pub mod authenticate;
pub mod batch;
pub mod catalog;
pub mod certificates;
pub mod chain_check;
pub mod coalesce;
pub mod create;
pub mod db_share;
pub mod deliveries;
pub mod error;
pub mod limits;
pub mod memory_budget;
pub mod pipeline;
pub mod readiness;
pub mod turns;

pub use access::{Access, AccessError, AccessRequest, CredentialsProblem};
pub use authenticate::{AuthError, Authenticator};
pub use batch::{BatchError, BatchService, ResultPage};
pub use catalog::{Catalog, Page};
pub use certificates::{CertificateError, Certificates};
pub use coalesce::{ChunkSettings, Coalescer};
pub use create::{CreateError, CreateService};
pub use deliveries::{Deliveries, DeliveryError};
pub use error::ServiceError;
pub use limits::{Limits, ReadSlot, Refused, TenantLimits};
pub use pipeline::CreatePipeline;
pub use readiness::Readiness;
