//! Confirmed publishing: every publish waits for the broker's ack; a nack or an unroutable
//! `mandatory` message is an error the caller must handle.

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Confirmation, Connection};
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("broker error: {0}")]
    Broker(#[from] lapin::Error),
    #[error("the broker refused the message (queue full or unavailable)")]
    Nacked,
    #[error("the message could not be routed to any queue")]
    Unroutable,
    #[error("message encoding failed: {0}")]
    Encode(#[from] serde_json::Error),
}

#[derive(Clone)]
pub struct Publisher {
    channel: Channel,
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

impl Publisher {
    pub async fn open(conn: &Connection) -> lapin::Result<Self> {
        let channel = conn.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Self { channel })
    }

    pub fn channel(&self) -> &Channel {
        &self.channel
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
        let confirm = self
            .channel
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
            .await?;
        match confirm {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(_)) => Err(PublishError::Unroutable),
            Confirmation::Nack(_) => Err(PublishError::Nacked),
            // Only on a channel without confirm mode, which `open` never makes.
            Confirmation::NotRequested => Err(PublishError::Nacked),
        }
    }
}
