//! Consuming the jobs queue (or the dead-letter queue) across reconnects: a channel with a
//! bounded prefetch on every new connection, manual acks on the channel that delivered.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use lapin::Acker as LapinAcker;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
    BasicRejectOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Consumer};
use tokio_util::sync::CancellationToken;

use super::codec::{death_cause, decode_chunk, trace_context};
use super::supervisor::bounded;
use super::{Broker, Link};
use crate::queue::{Acker, BoxError, JobConsumer, JobDelivery, Settlement, dead_letter_reason};

/// Pause before consuming again after a channel failed, so a failing channel does not spin.
const RECONSUME_PAUSE: Duration = Duration::from_millis(200);

pub struct RabbitConsumer {
    broker: Arc<Broker>,
    queue: String,
    prefetch: u16,
    /// The dead-letter queue: deliveries carry why they were dead-lettered.
    dead_letters: bool,
    shutdown: CancellationToken,
    live: Option<Live>,
    stopped: bool,
}

struct Live {
    channel: Channel,
    consumer: Consumer,
    tag: String,
}

impl RabbitConsumer {
    pub fn jobs(
        broker: Arc<Broker>,
        queue: String,
        prefetch: u16,
        shutdown: CancellationToken,
    ) -> Self {
        Self::new(broker, queue, prefetch, false, shutdown)
    }

    pub fn dead_letters(
        broker: Arc<Broker>,
        queue: String,
        prefetch: u16,
        shutdown: CancellationToken,
    ) -> Self {
        Self::new(broker, queue, prefetch, true, shutdown)
    }

    fn new(
        broker: Arc<Broker>,
        queue: String,
        prefetch: u16,
        dead_letters: bool,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            broker,
            queue,
            prefetch,
            dead_letters,
            shutdown,
            live: None,
            stopped: false,
        }
    }

    async fn open(&self, link: &Link) -> lapin::Result<Live> {
        let channel = link.conn.create_channel().await?;
        channel
            .basic_qos(self.prefetch, BasicQosOptions::default())
            .await?;
        let tag = format!("csrd-{}", uuid::Uuid::new_v4().simple());
        let consumer = channel
            .basic_consume(
                self.queue.as_str().into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok(Live {
            channel,
            consumer,
            tag,
        })
    }

    async fn pause(&self) {
        tokio::select! {
            _ = self.shutdown.cancelled() => {}
            _ = tokio::time::sleep(RECONSUME_PAUSE) => {}
        }
    }

    /// Decodes a delivery. An undecodable job can never succeed: it is dead-lettered (from the
    /// dead-letter queue, dropped), and `None` tells the caller to take the next one.
    async fn decode(&self, delivery: Delivery) -> Option<JobDelivery> {
        let headers = delivery.properties.headers().as_ref();
        match decode_chunk(&delivery.data) {
            Ok(chunk) => {
                let reason = self
                    .dead_letters
                    .then(|| dead_letter_reason(death_cause(headers).as_deref()));
                Some(
                    JobDelivery::new(
                        chunk,
                        trace_context(headers),
                        reason,
                        Box::new(RabbitAcker(delivery.acker)),
                    )
                    .redelivered(delivery.redelivered),
                )
            }
            Err(e) if self.dead_letters => {
                tracing::error!(error = %e, "undecodable dead-lettered message dropped");
                let _ = delivery.ack(BasicAckOptions::default()).await;
                None
            }
            Err(e) => {
                tracing::error!(error = %e, "undecodable job; dead-lettering it");
                crate::metrics::job("rejected");
                let _ = delivery.reject(BasicRejectOptions { requeue: false }).await;
                None
            }
        }
    }
}

#[async_trait]
impl JobConsumer for RabbitConsumer {
    async fn next(&mut self) -> Option<JobDelivery> {
        loop {
            if self.stopped {
                return None;
            }
            let Some(live) = self.live.as_mut() else {
                let link = self.broker.next_link(None, &self.shutdown).await?;
                match self.open(&link).await {
                    Ok(live) => self.live = Some(live),
                    Err(e) => {
                        tracing::warn!(queue = %self.queue, error = %e, "cannot consume yet; retrying");
                        self.pause().await;
                    }
                }
                continue;
            };
            match live.consumer.next().await {
                Some(Ok(delivery)) => {
                    if let Some(job) = self.decode(delivery).await {
                        return Some(job);
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(queue = %self.queue, error = %e, "consumer interrupted; consuming again on the next connection");
                    self.live = None;
                    self.pause().await;
                }
                None => {
                    self.live = None;
                    self.pause().await;
                }
            }
        }
    }

    async fn stop(&mut self) {
        self.stopped = true;
        if let Some(live) = &self.live {
            let cancel = live
                .channel
                .basic_cancel(live.tag.as_str().into(), BasicCancelOptions::default());
            bounded("cancelling a consumer", cancel).await;
        }
    }

    /// Closes the channel once its jobs are settled; a job still unacked then returns to the
    /// queue for another worker.
    async fn close(self: Box<Self>) {
        if let Some(live) = self.live {
            bounded(
                "closing a channel",
                live.channel.close(200, "worker stopped".into()),
            )
            .await;
        }
    }
}

/// Settles on the channel that delivered, as RabbitMQ requires.
struct RabbitAcker(LapinAcker);

#[async_trait]
impl Acker for RabbitAcker {
    async fn settle(self: Box<Self>, how: Settlement) -> Result<(), BoxError> {
        let acker = self.0;
        // `false`: already settled, or its channel is gone (the broker then delivers it again).
        let _settled = match how {
            Settlement::Ack => acker.ack(BasicAckOptions::default()).await?,
            Settlement::Retry => {
                acker
                    .nack(BasicNackOptions {
                        requeue: true,
                        ..Default::default()
                    })
                    .await?
            }
            Settlement::DeadLetter => acker.reject(BasicRejectOptions { requeue: false }).await?,
        };
        Ok(())
    }
}
