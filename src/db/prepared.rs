//! Statements prepared once per pooled connection.
//!
//! tokio-postgres prepares a statement given as text on every call: a round trip to Postgres
//! and a parse, analysis and plan there each time. On the paths every CSR takes (a chunk's
//! insert, its audit events, its batch bookkeeping, batch results) that was a fifth of
//! Postgres's CPU. A pooled connection keeps its prepared statements (deadpool's statement
//! cache); a bare connection (the CLI's) prepares each time, as before.

use std::future::Future;

use tokio_postgres::{Error, GenericClient, Statement};

/// A connection or transaction that can run a cached statement.
pub trait Prepared: Sync {
    type Client: GenericClient + Sync;
    /// Where the statement runs.
    fn client(&self) -> &Self::Client;
    /// `sql`, prepared on this connection (once, where the connection has a cache).
    fn statement(&self, sql: &str) -> impl Future<Output = Result<Statement, Error>> + Send;
}

impl Prepared for deadpool_postgres::ClientWrapper {
    type Client = tokio_postgres::Client;
    fn client(&self) -> &Self::Client {
        self
    }
    fn statement(&self, sql: &str) -> impl Future<Output = Result<Statement, Error>> + Send {
        self.prepare_cached(sql)
    }
}

impl<'t> Prepared for deadpool_postgres::Transaction<'t> {
    type Client = tokio_postgres::Transaction<'t>;
    fn client(&self) -> &Self::Client {
        self
    }
    fn statement(&self, sql: &str) -> impl Future<Output = Result<Statement, Error>> + Send {
        self.prepare_cached(sql)
    }
}

impl Prepared for tokio_postgres::Client {
    type Client = Self;
    fn client(&self) -> &Self::Client {
        self
    }
    fn statement(&self, sql: &str) -> impl Future<Output = Result<Statement, Error>> + Send {
        self.prepare(sql)
    }
}

impl<'t> Prepared for tokio_postgres::Transaction<'t> {
    type Client = Self;
    fn client(&self) -> &Self::Client {
        self
    }
    fn statement(&self, sql: &str) -> impl Future<Output = Result<Statement, Error>> + Send {
        self.prepare(sql)
    }
}
