//! Opening connections with heartbeats, a connect timeout, and a name that shows up in the
//! management UI.

use lapin::uri::AMQPUri;
use lapin::{Connection, ConnectionProperties};

/// Heartbeats every 10 s detect a dead peer in well under a minute.
const HEARTBEAT_SECS: u16 = 10;
const CONNECT_TIMEOUT_MS: u64 = 5_000;

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("invalid AMQP_URL: {0}")]
    BadUrl(String),
    #[error("cannot connect to RabbitMQ")]
    Broker(#[from] lapin::Error),
}

pub async fn connect(url: &str, name: &str) -> Result<Connection, ConnectError> {
    let mut uri: AMQPUri = url.parse().map_err(ConnectError::BadUrl)?;
    uri.query.heartbeat.get_or_insert(HEARTBEAT_SECS);
    uri.query
        .connection_timeout
        .get_or_insert(CONNECT_TIMEOUT_MS);
    let props = ConnectionProperties::default().with_connection_name(name.into());
    Ok(Connection::connect_uri(uri, props).await?)
}
