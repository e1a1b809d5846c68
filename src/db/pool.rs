//! The connection pool. Waits are bounded so that a database outage turns into a quick,
//! retryable error instead of a hung request.

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, RecyclingMethod, Runtime};

pub type Pool = deadpool_postgres::Pool;

/// A connection that carried a message this large is closed instead of going back to the
/// pool. tokio-postgres never shrinks a connection's read and write buffers: one 32 MiB batch
/// insert left a pooled connection holding 64 MiB for as long as it lived, and `csrd serve`,
/// whose ingress and workers share one pool, kept 800 MB after eight such submissions.
pub const LARGE_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// Gives `client` back to the pool, or closes it (freeing its buffers) when it carried
/// about `bytes` in one message and `bytes` is over [`LARGE_MESSAGE_BYTES`].
pub fn release_sized(client: deadpool_postgres::Object, bytes: usize) {
    if bytes > LARGE_MESSAGE_BYTES {
        drop(deadpool_postgres::Object::take(client));
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("invalid DATABASE_URL: {0}")]
    Config(String),
    #[error("database unavailable: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("database error: {}", describe(.0))]
    Query(#[from] tokio_postgres::Error),
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
}

/// tokio-postgres shows a server error only as "db error"; the code and message say more.
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}

impl DbError {
    /// True when a CSR row with the same id exists already (a plain insert met a redelivery's
    /// row).
    pub fn is_duplicate_csr(&self) -> bool {
        match self {
            DbError::Query(e) => e.as_db_error().is_some_and(|db| {
                *db.code() == tokio_postgres::error::SqlState::UNIQUE_VIOLATION
                    && db.constraint() == Some("custom_csrs_pkey")
            }),
            _ => false,
        }
    }

    /// True when retrying later may succeed (connection trouble rather than a bad query).
    pub fn is_transient(&self) -> bool {
        match self {
            DbError::Pool(_) => true,
            DbError::Query(e) => {
                e.is_closed()
                    || e.as_db_error().is_none_or(|db| {
                        let code = db.code().code();
                        // 08: connection exception; 57P01-57P03: the server is shutting down,
                        // crashed or starting; 53: out of resources; 40001/40P01: retryable
                        // conflicts; 55P03: a lock not had within lock_timeout.
                        code.starts_with("08")
                            || code.starts_with("57P0")
                            || code.starts_with("53")
                            || code == "40001"
                            || code == "40P01"
                            || code == "55P03"
                    })
            }
            _ => false,
        }
    }
}

pub fn build_pool(url: &str, max_size: usize, application_name: &str) -> Result<Pool, DbError> {
    let url = super::tls::parse(url)?;
    let tls = super::tls::connector(&url)?;
    let mut cfg = url.config;
    cfg.application_name(application_name);
    cfg.connect_timeout(Duration::from_secs(5));
    // A runaway statement must not hold a pooled connection for ever. No JIT: csrd's queries
    // are short, and a plan whose cost is overestimated (a table never analysed yet) would
    // spend a quarter of a second compiling it (measured on the bulk dispatcher's query).
    cfg.options("-c statement_timeout=15000 -c jit=off");
    let manager = Manager::from_config(
        cfg,
        tls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    deadpool_postgres::Pool::builder(manager)
        .max_size(max_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(5)))
        .create_timeout(Some(Duration::from_secs(5)))
        .recycle_timeout(Some(Duration::from_secs(5)))
        .build()
        .map_err(|e| DbError::Config(e.to_string()))
}
