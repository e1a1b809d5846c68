//! Confirmed publishing over a supervised connection: every publish waits for the broker's
//! ack (bounded by a timeout); a nack or an unroutable `mandatory` message is an error the
//! caller must handle. The confirm channel is re-opened after a reconnect.

use std::sync::Arc;
use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Confirmation};
use serde::Serialize;
use tokio::sync::Mutex;

use super::supervisor::Broker;

/// A broker that has not confirmed in this long is treated as unavailable; the caller
/// answers 503 (or retries) instead of hanging.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("RabbitMQ is not connected")]
    Unavailable,
    #[error("RabbitMQ did not confirm the message in time")]
    Timeout,
    #[error("broker error: {0}")]
    Broker(#[from] lapin::Error),
    #[error("the broker refused the message (queue full or unavailable)")]
    Nacked,
    #[error("the message could not be routed to any queue")]
    Unroutable,
    #[error("message encoding failed: {0}")]
    Encode(#[from] serde_json::Error),
}

impl PublishError {
    /// The connection (not the message) was the problem: publishing again on the next
    /// connection may succeed.
    pub fn is_connection_problem(&self) -> bool {
        matches!(
            self,
            PublishError::Unavailable | PublishError::Timeout | PublishError::Broker(_)
        )
    }

    /// The broker certainly does not have the message (never sent, refused or returned), as
    /// opposed to a publish whose confirm was lost, which may have arrived.
    pub fn certainly_not_delivered(&self) -> bool {
        matches!(
            self,
            PublishError::Unavailable
                | PublishError::Nacked
                | PublishError::Unroutable
                | PublishError::Encode(_)
        )
    }
}

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
    async fn channel(&self) -> Result<Channel, PublishError> {
        let link = self.broker.current().ok_or(PublishError::Unavailable)?;
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

    pub async fn publish_json<T: Serialize>(
        &self,
        route: Route<'_>,
        message_id: &str,
        body: &T,
        headers: &[(&str, String)],
    ) -> Result<(), PublishError> {
        let payload = serde_json::to_vec(body)?;
        let mut table = FieldTable::default();
        for (k, v) in headers {
            table.insert((*k).into(), AMQPValue::LongString(v.as_str().into()));
        }
        let props = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_message_id(message_id.into())
            .with_delivery_mode(if route.persistent { 2 } else { 1 })
            .with_headers(table);
        let channel = self.channel().await?;
        let publish = async {
            channel
                .basic_publish(
                    route.exchange.into(),
                    route.routing_key.into(),
                    BasicPublishOptions {
                        mandatory: route.mandatory,
                        ..Default::default()
                    },
                    &payload,
                    props,
                )
                .await?
                .await
        };
        let confirm = match tokio::time::timeout(CONFIRM_TIMEOUT, publish).await {
            Ok(Ok(confirm)) => confirm,
            Ok(Err(e)) => return Err(PublishError::Broker(e)),
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
