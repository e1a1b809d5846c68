//! The part of the Postgres pool the certificate routes may hold at once (a quarter of it), so
//! that no upload or read load can take the connections creates, workers and the rate limiter
//! need; its places go to tenants by fair share (a [`FairGate`]), so one tenant's flood does not
//! make another wait behind it. A place not had within the pool's wait is 429 (the routes are
//! busy: retry), never a 5xx.

use std::time::Duration;

use crate::db::{DbError, Pool};
use crate::domain::Owner;
use crate::fairshare::{Ask, FairGate, Lane, Permit};

use super::Refused;

#[derive(Clone)]
pub struct DbShare {
    pool: Pool,
    places: FairGate,
    wait: Duration,
}

/// A connection held within a [`DbShare`]; its place is given back when it is dropped.
pub struct SharedConnection {
    connection: deadpool_postgres::Object,
    _place: Permit,
}

impl std::ops::Deref for SharedConnection {
    type Target = deadpool_postgres::ClientWrapper;
    fn deref(&self) -> &Self::Target {
        &self.connection
    }
}

impl std::ops::DerefMut for SharedConnection {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.connection
    }
}

impl SharedConnection {
    /// Gives the connection back, or closes it when it carried about `bytes` in one message
    /// (see [`crate::db::release_sized`]: its buffers would keep that size for ever).
    pub fn release_sized(self, bytes: usize) {
        crate::db::release_sized(self.connection, bytes);
    }
}

/// Why no connection was had.
#[derive(Debug, thiserror::Error)]
pub enum ShareError {
    #[error(transparent)]
    Busy(#[from] Refused),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl DbShare {
    /// At most `places` of `pool`'s connections at once (at least one).
    pub fn new(pool: Pool, places: usize) -> Self {
        let wait = pool.timeouts().wait.unwrap_or(Duration::from_secs(5));
        Self {
            pool,
            places: FairGate::new(u32::try_from(places.max(1)).unwrap_or(u32::MAX)),
            wait,
        }
    }

    /// A quarter of the pool (at least two connections).
    pub fn quarter(pool: Pool) -> Self {
        let size = pool.status().max_size;
        Self::new(pool, (size / 4).max(2))
    }

    /// A connection for `owner`, in its fair turn.
    pub async fn get(&self, owner: &Owner) -> Result<SharedConnection, ShareError> {
        let ask = Ask {
            tenant: owner.clone(),
            lane: Lane::Interactive,
            size: 1,
            cost: 1.0,
            weight: 1.0,
        };
        let place = tokio::time::timeout(self.wait, self.places.acquire(ask))
            .await
            .map_err(|_| Refused::Busy)?;
        let connection = self.pool.get().await.map_err(DbError::from)?;
        Ok(SharedConnection {
            connection,
            _place: place,
        })
    }
}
