//! What can go wrong behind a use case that the client cannot fix. Use cases return their own
//! client-facing errors beside this one (a reused Idempotency-Key, bad credentials); the HTTP
//! adapter maps both to the Cloudflare envelope and logs the cause chain there, once.

use crate::db::DbError;
use crate::queue::BoxError;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// A dependency is down or overloaded: retrying later should help (503).
    #[error("a dependency is unavailable")]
    Unavailable(#[source] BoxError),
    /// A bug or inconsistent data (500).
    #[error("internal error")]
    Internal(#[source] BoxError),
}

impl From<DbError> for ServiceError {
    fn from(e: DbError) -> Self {
        if e.is_transient() {
            ServiceError::Unavailable(Box::new(e))
        } else {
            ServiceError::Internal(Box::new(e))
        }
    }
}

impl From<deadpool_postgres::PoolError> for ServiceError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        DbError::from(e).into()
    }
}
