//! The queue in one process: the same contract as RabbitMQ's (a bounded jobs queue that
//! refuses publishes when full, redelivery on retry, dead-lettering after the delivery limit
//! or on rejection, completions that wake the waiting request) without a broker. For tests
//! and the in-process harness: nothing survives a restart, so it is never a production queue.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use tokio::sync::{Mutex, mpsc};

use super::{
    Acker, BoxError, CompletionSink, JobConsumer, JobDelivery, JobQueue, PublishError, Settlement,
    TraceContext, Waiters, dead_letter_reason,
};
use crate::domain::{Completion, CreateChunk};

#[derive(Debug, Clone, Copy)]
pub struct MemoryLimits {
    /// Ready jobs held before publishes are refused.
    pub max_length: usize,
    /// Deliveries of one job before it is dead-lettered.
    pub delivery_limit: u32,
}

struct Message {
    chunk: CreateChunk,
    trace_context: TraceContext,
    deliveries: u32,
    dead_letter_reason: Option<String>,
}

struct Lane {
    tx: mpsc::UnboundedSender<Message>,
    rx: Mutex<mpsc::UnboundedReceiver<Message>>,
    /// Messages in the lane, not yet delivered.
    ready: AtomicUsize,
}

impl Lane {
    fn new() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self {
            tx,
            rx: Mutex::new(rx),
            ready: AtomicUsize::new(0),
        }
    }

    fn push(&self, message: Message) {
        self.ready.fetch_add(1, Ordering::SeqCst);
        // The receiver lives as long as the lane, so sending cannot fail.
        let _ = self.tx.send(message);
    }
}

struct Inner {
    jobs: Lane,
    dead: Lane,
    /// Delivered and not yet settled.
    unsettled: AtomicUsize,
    limits: MemoryLimits,
    waiters: Waiters,
}

/// Jobs queue, dead-letter queue and completion channel in memory. Cheap to clone.
#[derive(Clone)]
pub struct MemoryQueue {
    inner: Arc<Inner>,
}

impl MemoryQueue {
    /// Completions wake requests registered with `waiters`.
    pub fn new(limits: MemoryLimits, waiters: Waiters) -> Self {
        Self {
            inner: Arc::new(Inner {
                jobs: Lane::new(),
                dead: Lane::new(),
                unsettled: AtomicUsize::new(0),
                limits,
                waiters,
            }),
        }
    }

    /// The jobs queue's consumer.
    pub fn jobs(&self) -> Box<dyn JobConsumer> {
        Box::new(MemoryConsumer {
            inner: self.inner.clone(),
            dead_letters: false,
            stopped: false,
        })
    }

    /// The dead-letter queue's consumer.
    pub fn dead_letters(&self) -> Box<dyn JobConsumer> {
        Box::new(MemoryConsumer {
            inner: self.inner.clone(),
            dead_letters: true,
            stopped: false,
        })
    }

    /// Messages waiting in either queue or delivered and unsettled (tests check it is zero).
    pub fn outstanding(&self) -> usize {
        let i = &self.inner;
        i.jobs.ready.load(Ordering::SeqCst)
            + i.dead.ready.load(Ordering::SeqCst)
            + i.unsettled.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl JobQueue for MemoryQueue {
    async fn publish(&self, chunk: &CreateChunk) -> Result<(), PublishError> {
        let inner = &self.inner;
        if inner.jobs.ready.load(Ordering::SeqCst) >= inner.limits.max_length {
            return Err(PublishError::Nacked);
        }
        let trace_context = crate::telemetry::current_context_headers()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        inner.jobs.push(Message {
            chunk: chunk.clone(),
            trace_context,
            deliveries: 0,
            dead_letter_reason: None,
        });
        Ok(())
    }

    /// One lane for both here: the jobs not yet delivered.
    async fn bulk_backlog(&self) -> Option<u32> {
        u32::try_from(self.inner.jobs.ready.load(Ordering::SeqCst)).ok()
    }
}

#[async_trait]
impl CompletionSink for MemoryQueue {
    /// One process: whoever waits for the id is here, whatever `reply_to` says.
    async fn announce(
        &self,
        _reply_to: &str,
        completions: &[Completion],
    ) -> Result<(), PublishError> {
        for c in completions {
            self.inner.waiters.complete(c.clone());
        }
        Ok(())
    }
}

/// The in-memory queue has one lane for single creates and batch chunks alike: its bulk
/// consumer never delivers anything.
pub struct NoLane;

#[async_trait]
impl JobConsumer for NoLane {
    async fn next(&mut self) -> Option<JobDelivery> {
        std::future::pending().await
    }

    async fn stop(&mut self) {}

    async fn close(self: Box<Self>) {}
}

struct MemoryConsumer {
    inner: Arc<Inner>,
    dead_letters: bool,
    stopped: bool,
}

impl MemoryConsumer {
    fn lane(&self) -> &Lane {
        if self.dead_letters {
            &self.inner.dead
        } else {
            &self.inner.jobs
        }
    }
}

#[async_trait]
impl JobConsumer for MemoryConsumer {
    async fn next(&mut self) -> Option<JobDelivery> {
        if self.stopped {
            return None;
        }
        let mut message = self.lane().rx.lock().await.recv().await?;
        self.lane().ready.fetch_sub(1, Ordering::SeqCst);
        self.inner.unsettled.fetch_add(1, Ordering::SeqCst);
        message.deliveries += 1;
        let redelivered = message.deliveries > 1;
        Some(
            JobDelivery::new(
                message.chunk.clone(),
                message.trace_context.clone(),
                message.dead_letter_reason.clone(),
                Box::new(MemoryAcker {
                    inner: self.inner.clone(),
                    message,
                    dead_letter: self.dead_letters,
                }),
            )
            .redelivered(redelivered),
        )
    }

    async fn stop(&mut self) {
        self.stopped = true;
    }

    async fn close(self: Box<Self>) {}
}

struct MemoryAcker {
    inner: Arc<Inner>,
    message: Message,
    dead_letter: bool,
}

#[async_trait]
impl Acker for MemoryAcker {
    async fn settle(self: Box<Self>, how: Settlement) -> Result<(), BoxError> {
        let Self {
            inner,
            mut message,
            dead_letter,
        } = *self;
        let lane = if dead_letter {
            &inner.dead
        } else {
            &inner.jobs
        };
        match how {
            Settlement::Ack => {}
            // Dead letters are never dead-lettered again (RabbitMQ: no DLX on that queue).
            Settlement::Retry if dead_letter => lane.push(message),
            Settlement::DeadLetter if dead_letter => {}
            Settlement::Retry if message.deliveries < inner.limits.delivery_limit => {
                lane.push(message)
            }
            Settlement::Retry | Settlement::DeadLetter => {
                let cause = if how == Settlement::Retry {
                    "delivery_limit"
                } else {
                    "rejected"
                };
                message.dead_letter_reason = Some(dead_letter_reason(Some(cause)));
                message.deliveries = 0;
                inner.dead.push(message);
            }
        }
        inner.unsettled.fetch_sub(1, Ordering::SeqCst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{
        AccountId, CreateCsr, CreateJob, JobOutcome, NamePolicy, Owner, OwnerKind,
    };

    fn job() -> CreateChunk {
        CreateChunk::one(single())
    }

    fn single() -> CreateJob {
        let body = serde_json::json!({
            "common_name": "acme.io", "country": "US", "state": "CA", "locality": "SF",
            "organization": "Acme", "sans": ["acme.io"], "key_type": "p256v1"
        });
        let request = CreateCsr::parse(
            body.to_string().as_bytes(),
            OwnerKind::Account,
            NamePolicy::Permissive,
        )
        .unwrap();
        let owner = Owner::Account(AccountId::parse(&"a".repeat(32)).unwrap());
        CreateJob::new(owner, request, "me".into())
    }

    fn queue(max_length: usize, delivery_limit: u32) -> MemoryQueue {
        MemoryQueue::new(
            MemoryLimits {
                max_length,
                delivery_limit,
            },
            Waiters::default(),
        )
    }

    #[tokio::test]
    async fn a_full_queue_refuses_the_publish() {
        let q = queue(1, 5);
        q.publish(&job()).await.unwrap();
        assert!(matches!(q.publish(&job()).await, Err(PublishError::Nacked)));
        assert_eq!(q.outstanding(), 1);
    }

    #[tokio::test]
    async fn retries_redeliver_until_the_limit_then_dead_letter() {
        let q = queue(10, 2);
        let sent = job();
        q.publish(&sent).await.unwrap();
        let mut jobs = q.jobs();
        let first = jobs.next().await.unwrap();
        assert_eq!(first.chunk, sent);
        first.settle(Settlement::Retry).await.unwrap();
        let second = jobs.next().await.unwrap();
        second.settle(Settlement::Retry).await.unwrap();
        let dead = q.dead_letters().next().await.unwrap();
        assert_eq!(dead.chunk, sent);
        assert!(
            dead.dead_letter_reason
                .as_deref()
                .unwrap()
                .contains("delivery limit")
        );
        dead.settle(Settlement::Ack).await.unwrap();
        assert_eq!(q.outstanding(), 0);
    }

    #[tokio::test]
    async fn a_rejected_job_is_dead_lettered_at_once() {
        let q = queue(10, 5);
        q.publish(&job()).await.unwrap();
        q.jobs()
            .next()
            .await
            .unwrap()
            .settle(Settlement::DeadLetter)
            .await
            .unwrap();
        let dead = q.dead_letters().next().await.unwrap();
        assert!(dead.dead_letter_reason.unwrap().contains("rejected"));
    }

    #[tokio::test]
    async fn completions_wake_the_waiting_request() {
        let waiters = Waiters::default();
        let q = MemoryQueue::new(
            MemoryLimits {
                max_length: 1,
                delivery_limit: 1,
            },
            waiters.clone(),
        );
        let j = single();
        let mut waiter = waiters.register(j.id);
        q.announce(
            "anyone",
            &[Completion {
                id: j.id,
                outcome: JobOutcome::Created { csr_pem: None },
            }],
        )
        .await
        .unwrap();
        assert_eq!(
            waiter.next(std::time::Duration::from_secs(1)).await,
            Some(JobOutcome::Created { csr_pem: None })
        );
    }

    #[tokio::test]
    async fn a_stopped_consumer_yields_nothing_more() {
        let q = queue(10, 5);
        q.publish(&job()).await.unwrap();
        let mut jobs = q.jobs();
        jobs.stop().await;
        assert!(jobs.next().await.is_none());
    }
}
