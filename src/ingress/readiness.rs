//! Whether this ingress can serve: Postgres answers and takes writes (not a standby, not
//! read-only, as after a failover to a server that is not promoted yet), and every broker
//! connection is open.

use std::sync::Arc;
use std::time::Duration;

use crate::db::{DbError, Pool};
use crate::queue::Connectivity;

use super::ServiceError;

const READY_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
enum NotReady {
    #[error("postgres did not answer within {0:?}")]
    PostgresTimeout(Duration),
    #[error("postgres is read-only (a standby, or default_transaction_read_only)")]
    PostgresReadOnly,
    #[error("{0} is reconnecting")]
    Broker(String),
}

#[derive(Clone)]
pub struct Readiness {
    pool: Pool,
    brokers: Vec<Arc<dyn Connectivity>>,
}

impl Readiness {
    pub fn new(pool: Pool, brokers: Vec<Arc<dyn Connectivity>>) -> Self {
        Self { pool, brokers }
    }

    pub async fn check(&self) -> Result<(), ServiceError> {
        let db = async {
            let client = self.pool.get().await.map_err(DbError::from)?;
            let row = client
                .query_one(
                    "SELECT current_setting('transaction_read_only') = 'on'",
                    &[],
                )
                .await
                .map_err(DbError::from)?;
            Ok::<bool, DbError>(row.get(0))
        };
        // Whatever the database says, not answering means not ready.
        match tokio::time::timeout(READY_TIMEOUT, db).await {
            Ok(Ok(false)) => {}
            Ok(Ok(true)) => {
                return Err(ServiceError::Unavailable(Box::new(
                    NotReady::PostgresReadOnly,
                )));
            }
            Ok(Err(e)) => return Err(ServiceError::Unavailable(Box::new(e))),
            Err(_) => {
                return Err(ServiceError::Unavailable(Box::new(
                    NotReady::PostgresTimeout(READY_TIMEOUT),
                )));
            }
        }
        if let Some(b) = self.brokers.iter().find(|b| !b.is_connected()) {
            return Err(ServiceError::Unavailable(Box::new(NotReady::Broker(
                b.name().to_owned(),
            ))));
        }
        Ok(())
    }
}
