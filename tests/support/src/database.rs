//! Reading a test's database directly, to check what csrd stored.

use csrd::db::{Pool, build_pool};
use tokio_postgres::Client;
use tokio_postgres::types::FromSqlOwned;

/// The first column of every row `sql` returns.
pub async fn column<T: FromSqlOwned, C: FromIterator<T>>(client: &Client, sql: &str) -> C {
    client
        .query(sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// How many CSRs the pool's database holds.
pub async fn csr_rows(pool: &Pool) -> i64 {
    let client = pool.get().await.unwrap();
    client
        .query_one("SELECT count(*) FROM custom_csrs", &[])
        .await
        .unwrap()
        .get(0)
}

/// [`csr_rows`] of the database at `database_url`, on a connection of its own.
pub async fn csr_rows_at(database_url: &str) -> i64 {
    let pool = build_pool(database_url, 1, "csrd-tests").unwrap();
    csr_rows(&pool).await
}
