//! Confirmed publishing over a supervised connection: every publish waits for the broker's
//! ack (bounded by a timeout); a nack or an unroutable `mandatory` message is an error the
//! caller must handle. The confirm channel is re-opened after a reconnect.

use std::sync::Arc;
use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Confirmation};
use tokio::sync::Mutex;

use super::supervisor::Broker;
use crate::queue::PublishError;

/// A broker that has not confirmed in this long is treated as unavailable; the caller
/// answers 503 (or retries) instead of hanging.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(3);

/// Where a message goes and how.
pub struct Route<'a> {
    pub exchange: &'a str,
    pub routing_key: &'a str,
    /// Return it to us (an error) when no queue is bound for it.
    pub mandatory: bool,
    /// Survive a broker restart (delivery mode 2).
    pub persistent: bool,
}

pub struct Publisher {
    broker: Arc<Broker>,
    channel: Mutex<Option<(u64, Channel)>>,
}

impl Publisher {
    pub fn new(broker: Arc<Broker>) -> Self {
        Self {
            broker,
            channel: Mutex::new(None),
        }
    }

    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    /// The confirm-mode channel of the current connection, opened on first use.
    async fn channel(&self) -> Result<Channel, ChannelError> {
        let link = self.broker.current().ok_or(ChannelError::NotConnected)?;
        let mut slot = self.channel.lock().await;
        if let Some((generation, ch)) = slot.as_ref()
            && *generation == link.generation
            && ch.status().connected()
        {
            return Ok(ch.clone());
        }
        let ch = link.conn.create_channel().await?;
        ch.confirm_select(ConfirmSelectOptions::default()).await?;
        *slot = Some((link.generation, ch.clone()));
        Ok(ch)
    }

    /// Closes the confirm channel, before its connection closes. (A channel merely dropped is
    /// closed by lapin in the background, which races a connection close and turns it into
    /// a connection error.)
    pub async fn close(&self) {
        if let Some((_, channel)) = self.channel.lock().await.take()
            && channel.status().connected()
        {
            super::supervisor::bounded(
                "closing the publishing channel",
                channel.close(200, "shutdown".into()),
            )
            .await;
        }
    }

    /// Publishes a JSON `payload` and waits for the broker's confirm.
    pub async fn publish(
        &self,
        route: Route<'_>,
        message_id: &str,
        payload: &[u8],
        headers: FieldTable,
    ) -> Result<(), PublishError> {
        let props = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_message_id(message_id.into())
            .with_delivery_mode(if route.persistent { 2 } else { 1 })
            .with_headers(headers);
        let channel = self.channel().await.map_err(broker_error)?;
        let publish = async {
            channel
                .basic_publish(
                    route.exchange.into(),
                    route.routing_key.into(),
                    BasicPublishOptions {
                        mandatory: route.mandatory,
                        ..Default::default()
                    },
                    payload,
                    props,
                )
                .await?
                .await
        };
        let confirm = match tokio::time::timeout(CONFIRM_TIMEOUT, publish).await {
            Ok(Ok(confirm)) => confirm,
            Ok(Err(e)) => return Err(broker_error(e)),
            Err(_) => return Err(PublishError::Timeout),
        };
        match confirm {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(_)) => Err(PublishError::Unroutable),
            Confirmation::Nack(_) => Err(PublishError::Nacked),
            // Only on a channel without confirm mode, which `channel()` never makes.
            Confirmation::NotRequested => Err(PublishError::Nacked),
        }
    }
}

/// Why no confirm channel could be had.
#[derive(Debug, thiserror::Error)]
enum ChannelError {
    #[error("not connected")]
    NotConnected,
    #[error(transparent)]
    Broker(#[from] lapin::Error),
}

fn broker_error(e: impl Into<ChannelError>) -> PublishError {
    match e.into() {
        ChannelError::NotConnected => PublishError::Unavailable,
        ChannelError::Broker(e) => PublishError::Broker(Arc::new(e)),
    }
}
