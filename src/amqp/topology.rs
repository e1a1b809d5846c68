//! Exchange and queue names under `CSRD_AMQP_PREFIX`, declared idempotently at start.
//!
//! - `{p}.jobs` (direct) → `{p}.jobs.create`: durable quorum queue with an explicit delivery
//!   limit (3.10 has no default), bounded length with `reject-publish` (overload becomes a
//!   publisher nack, i.e. a 503, never unbounded memory), and at-least-once dead-lettering.
//! - `{p}.jobs` → `{p}.jobs.bulk` (routing key `bulk`): batch chunks, with the same arguments.
//!   Workers consume both queues and give single creates their keygen slots first.
//! - `{p}.jobs.dead` (fanout) → `{p}.jobs.dead`: where jobs that keep failing end up.
//! - `{p}.events` (direct): completion events, routed by ingress instance id to each
//!   instance's own auto-deleting queue `{p}.events.{instance}`.

use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, ExchangeKind};

pub const CREATE_ROUTING_KEY: &str = "create";
/// Batch chunks: their own queue, consumed beside the interactive one.
pub const BULK_ROUTING_KEY: &str = "bulk";

#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    /// Deliveries before a job is dead-lettered.
    pub delivery_limit: i64,
    /// Ready jobs the queue holds before publishers are refused.
    pub max_length: i64,
}

impl From<&crate::settings::BrokerSettings> for QueueLimits {
    fn from(s: &crate::settings::BrokerSettings) -> Self {
        Self {
            delivery_limit: s.delivery_limit,
            max_length: s.queue_max_length,
        }
    }
}

impl Default for QueueLimits {
    fn default() -> Self {
        Self {
            delivery_limit: 5,
            max_length: 200_000,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Topology {
    prefix: String,
    limits: QueueLimits,
}

fn durable_exchange() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    }
}

impl Topology {
    pub fn new(prefix: &str, limits: QueueLimits) -> Self {
        Self {
            prefix: prefix.to_owned(),
            limits,
        }
    }

    pub fn jobs_exchange(&self) -> String {
        format!("{}.jobs", self.prefix)
    }

    pub fn jobs_queue(&self) -> String {
        format!("{}.jobs.create", self.prefix)
    }

    /// Batch chunks, apart from single creates so that a batch is never ahead of one.
    pub fn bulk_queue(&self) -> String {
        format!("{}.jobs.bulk", self.prefix)
    }

    pub fn dead_letter_exchange(&self) -> String {
        format!("{}.jobs.dead", self.prefix)
    }

    pub fn dead_letter_queue(&self) -> String {
        format!("{}.jobs.dead", self.prefix)
    }

    pub fn events_exchange(&self) -> String {
        format!("{}.events", self.prefix)
    }

    pub fn instance_queue(&self, instance: &str) -> String {
        format!("{}.events.{instance}", self.prefix)
    }

    /// Declares everything shared by ingress and workers. Safe to call from every process.
    pub async fn declare(&self, ch: &Channel) -> lapin::Result<()> {
        ch.exchange_declare(
            self.dead_letter_exchange().as_str().into(),
            ExchangeKind::Fanout,
            durable_exchange(),
            FieldTable::default(),
        )
        .await?;
        ch.queue_declare(
            self.dead_letter_queue().as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            quorum_args(&[]),
        )
        .await?;
        ch.queue_bind(
            self.dead_letter_queue().as_str().into(),
            self.dead_letter_exchange().as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;

        ch.exchange_declare(
            self.jobs_exchange().as_str().into(),
            ExchangeKind::Direct,
            durable_exchange(),
            FieldTable::default(),
        )
        .await?;
        let dlx = self.dead_letter_exchange();
        for (queue, routing_key) in [
            (self.jobs_queue(), CREATE_ROUTING_KEY),
            (self.bulk_queue(), BULK_ROUTING_KEY),
        ] {
            ch.queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                quorum_args(&[
                    (
                        "x-delivery-limit",
                        AMQPValue::LongLongInt(self.limits.delivery_limit),
                    ),
                    (
                        "x-max-length",
                        AMQPValue::LongLongInt(self.limits.max_length),
                    ),
                    ("x-overflow", AMQPValue::LongString("reject-publish".into())),
                    (
                        "x-dead-letter-exchange",
                        AMQPValue::LongString(dlx.as_str().into()),
                    ),
                    (
                        "x-dead-letter-strategy",
                        AMQPValue::LongString("at-least-once".into()),
                    ),
                ]),
            )
            .await?;
            ch.queue_bind(
                queue.as_str().into(),
                self.jobs_exchange().as_str().into(),
                routing_key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        }

        ch.exchange_declare(
            self.events_exchange().as_str().into(),
            ExchangeKind::Direct,
            durable_exchange(),
            FieldTable::default(),
        )
        .await
    }

    /// The calling ingress instance's event queue. Auto-deleted when its consumer goes, and
    /// expiring an idle minute after that in any case, so a vanished ingress leaves nothing.
    /// (Not `exclusive`: operators and the fault-injection suite may rebind it.)
    pub async fn declare_instance_queue(
        &self,
        ch: &Channel,
        instance: &str,
    ) -> lapin::Result<String> {
        let name = self.instance_queue(instance);
        let mut args = FieldTable::default();
        args.insert("x-expires".into(), AMQPValue::LongLongInt(60_000));
        ch.queue_declare(
            name.as_str().into(),
            QueueDeclareOptions {
                auto_delete: true,
                ..Default::default()
            },
            args,
        )
        .await?;
        ch.queue_bind(
            name.as_str().into(),
            self.events_exchange().as_str().into(),
            instance.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
        Ok(name)
    }

    /// Removes every queue and exchange of this prefix (tests and decommissioning).
    pub async fn delete_all(&self, ch: &Channel) -> lapin::Result<()> {
        for q in [
            self.jobs_queue(),
            self.bulk_queue(),
            self.dead_letter_queue(),
        ] {
            ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                .await?;
        }
        for x in [
            self.jobs_exchange(),
            self.dead_letter_exchange(),
            self.events_exchange(),
        ] {
            ch.exchange_delete(x.as_str().into(), ExchangeDeleteOptions::default())
                .await?;
        }
        Ok(())
    }
}

fn quorum_args(extra: &[(&str, AMQPValue)]) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    for (k, v) in extra {
        args.insert((*k).into(), v.clone());
    }
    args
}
