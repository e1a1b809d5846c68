//! Postgres adapter: the pool, migrations, and one repository module per table group.

pub mod audit;
pub mod batches;
pub mod bulk;
pub mod certificates;
pub mod credentials;
pub mod csrs;
pub mod jobs;
pub mod keks;
pub mod migrate;
pub mod pool;
pub mod prepared;
pub mod recipients;
pub mod rewrap;
pub mod tenant_limits;
pub mod tls;

pub use pool::{DbError, Pool, build_pool, release_sized};
