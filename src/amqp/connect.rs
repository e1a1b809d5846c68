//! Opening connections with heartbeats, a connect timeout, and a name that shows up in the
//! management UI.
//!
//! `amqps://` URLs use rustls (ring) and verify the broker's certificate and host name against
//! Mozilla's roots, plus the CA certificates of the PEM file named by the `cacertfile` query
//! parameter (the name RabbitMQ's URI spec gives it): `amqps://host:5671/%2f?cacertfile=/ca.pem`.

use lapin::tcp::OwnedTLSConfig;
use lapin::uri::AMQPUri;
use lapin::{Connection, ConnectionProperties};

/// Heartbeats every 10 s detect a dead peer in well under a minute.
const HEARTBEAT_SECS: u16 = 10;
const CONNECT_TIMEOUT_MS: u64 = 5_000;

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("invalid AMQP_URL: {0}")]
    BadUrl(String),
    #[error("cannot read the AMQP CA certificate file {0}: {1}")]
    CaFile(String, std::io::Error),
    #[error("cannot connect to RabbitMQ")]
    Broker(#[from] lapin::Error),
}

/// Takes `cacertfile` out of the URL's query (lapin does not know it): the URL without it, and
/// the file's path.
fn split_ca_file(url: &str) -> (String, Option<String>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_owned(), None);
    };
    let mut ca_file = None;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| match pair.strip_prefix("cacertfile=") {
            Some(path) => {
                ca_file = Some(
                    form_urlencoded::parse(format!("p={path}").as_bytes())
                        .next()
                        .map_or_else(|| path.to_owned(), |(_, v)| v.into_owned()),
                );
                false
            }
            None => true,
        })
        .collect();
    let url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    (url, ca_file)
}

pub async fn connect(url: &str, name: &str) -> Result<Connection, ConnectError> {
    let (url, ca_file) = split_ca_file(url);
    let tls = match ca_file {
        Some(path) => OwnedTLSConfig {
            identity: None,
            cert_chain: Some(
                std::fs::read_to_string(&path).map_err(|e| ConnectError::CaFile(path, e))?,
            ),
        },
        None => OwnedTLSConfig::default(),
    };
    let mut uri: AMQPUri = url.parse().map_err(ConnectError::BadUrl)?;
    uri.query.heartbeat.get_or_insert(HEARTBEAT_SECS);
    uri.query
        .connection_timeout
        .get_or_insert(CONNECT_TIMEOUT_MS);
    let props = ConnectionProperties::default().with_connection_name(name.into());
    let runtime = lapin::runtime::default_runtime()?;
    Ok(Connection::connect_uri_with_config(uri, props, tls, runtime).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cacertfile_is_taken_out_of_the_query() {
        assert_eq!(
            split_ca_file("amqps://h:5671/%2f?heartbeat=5&cacertfile=%2Ftmp%2Fca.pem"),
            (
                "amqps://h:5671/%2f?heartbeat=5".into(),
                Some("/tmp/ca.pem".into())
            )
        );
        assert_eq!(
            split_ca_file("amqps://h/%2f?cacertfile=/ca.pem"),
            ("amqps://h/%2f".into(), Some("/ca.pem".into()))
        );
        assert_eq!(split_ca_file("amqp://h/%2f"), ("amqp://h/%2f".into(), None));
    }
}
