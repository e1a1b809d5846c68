//! The seam between the create pipeline and its message broker.
//!
//! The ingress publishes jobs through a [`JobQueue`] and waits on [`Waiters`]; a worker takes
//! [`JobDelivery`]s from a [`JobConsumer`], settles each one, and reports through a
//! [`CompletionSink`], which wakes the waiting request. `amqp` implements these with RabbitMQ
//! (durable, the only production queue); [`memory`] implements them in one process, so the
//! HTTP layer and the create use case can be tested without a broker (as svix does). The
//! in-memory queue keeps nothing across a restart: it is not offered on the command line.

pub mod memory;
pub mod waiters;

use async_trait::async_trait;

use crate::domain::{Completion, CreateChunk};

pub use waiters::{Waiter, Waiters};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// W3C trace context (`traceparent`, `tracestate`) travelling with a message.
pub type TraceContext = Vec<(String, String)>;

/// Cloneable, because one chunk's publish answers every request coalesced into it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PublishError {
    #[error("the message broker is not connected")]
    Unavailable,
    #[error("the message broker did not confirm the message in time")]
    Timeout,
    #[error("the message broker failed")]
    Broker(#[source] std::sync::Arc<dyn std::error::Error + Send + Sync>),
    #[error("the message broker refused the message (queue full or unavailable)")]
    Nacked,
    #[error("the message could not be routed to any queue")]
    Unroutable,
    #[error("the message could not be encoded")]
    Encode(#[source] std::sync::Arc<serde_json::Error>),
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

    /// The queue certainly does not have the message (never sent, refused or returned), as
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

/// The ingress side: hands chunks of create jobs to the workers.
#[async_trait]
pub trait JobQueue: Send + Sync {
    /// Returns once the queue holds the chunk durably (RabbitMQ: the publisher confirm), or an
    /// error saying whether it might hold it anyway. Concurrent calls are confirmed
    /// independently (pipelined), not one round trip after another.
    async fn publish(&self, chunk: &CreateChunk) -> Result<(), PublishError>;

    /// Like `publish`, for a batch's chunk: to the bulk lane, which workers serve after the
    /// single creates (RabbitMQ: its own queue). A queue without lanes has one for both.
    async fn publish_bulk(&self, chunk: &CreateChunk) -> Result<(), PublishError> {
        self.publish(chunk).await
    }

    /// Chunks in the bulk lane that no worker has taken yet; `None` when that cannot be told
    /// now (the broker is unreachable). The bulk dispatcher keeps it short.
    async fn bulk_backlog(&self) -> Option<u32>;
}

/// The worker side: tells a waiting ingress instance that jobs are done.
#[async_trait]
pub trait CompletionSink: Send + Sync {
    /// `reply_to` is the jobs': the ingress instance holding their requests open. One event
    /// carries all of them.
    async fn announce(
        &self,
        reply_to: &str,
        completions: &[Completion],
    ) -> Result<(), PublishError>;
}

/// What a worker does with a delivery once it has handled it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    /// Done: remove it from the queue.
    Ack,
    /// Failed for now: deliver it again (the delivery limit eventually dead-letters it).
    Retry,
    /// Can never succeed: move it to the dead-letter queue.
    DeadLetter,
}

/// Settles one delivery with the queue that delivered it.
#[async_trait]
pub trait Acker: Send + Sync {
    async fn settle(self: Box<Self>, how: Settlement) -> Result<(), BoxError>;
}

/// One chunk handed to a worker.
pub struct JobDelivery {
    pub chunk: CreateChunk,
    pub trace_context: TraceContext,
    /// For deliveries from the dead-letter queue: why the job ended there.
    pub dead_letter_reason: Option<String>,
    /// The broker delivered this message before (to a worker that did not settle it): some of
    /// its jobs may have their rows already.
    pub redelivered: bool,
    acker: Box<dyn Acker>,
}

impl JobDelivery {
    pub fn new(
        chunk: CreateChunk,
        trace_context: TraceContext,
        dead_letter_reason: Option<String>,
        acker: Box<dyn Acker>,
    ) -> Self {
        Self {
            chunk,
            trace_context,
            dead_letter_reason,
            redelivered: false,
            acker,
        }
    }

    /// Marks a delivery the broker made before.
    pub fn redelivered(self, redelivered: bool) -> Self {
        Self {
            redelivered,
            ..self
        }
    }

    pub async fn settle(self, how: Settlement) -> Result<(), BoxError> {
        self.acker.settle(how).await
    }
}

/// A stream of deliveries from one queue (the jobs, or the dead letters).
#[async_trait]
pub trait JobConsumer: Send {
    /// The next delivery; `None` once the consumer has stopped for good.
    async fn next(&mut self) -> Option<JobDelivery>;
    /// Stops new deliveries. Deliveries already handed out can still be settled.
    async fn stop(&mut self);
    /// Releases the consumer's resources, once its deliveries are settled.
    async fn close(self: Box<Self>);
}

/// A broker connection the readiness check reports on.
pub trait Connectivity: Send + Sync {
    fn name(&self) -> &str;
    fn is_connected(&self) -> bool;
}

/// The readable reason recorded for a dead-lettered job, from the broker's own word for it.
pub fn dead_letter_reason(cause: Option<&str>) -> String {
    match cause {
        Some("delivery_limit") => {
            "the job failed on every delivery (delivery limit reached)".into()
        }
        Some("rejected") => "the job was rejected as impossible to process".into(),
        Some(other) => format!("the job was dead-lettered ({other})"),
        None => "the job was dead-lettered".into(),
    }
}
