//! Coalescing concurrent single creates into chunks.
//!
//! Every create costs a message, a publisher confirm, a worker commit and a completion event;
//! a chunk pays those once for all its jobs. A request's job joins the next chunk: the chunk is
//! cut when it holds `max_items`, or `linger` after its first job arrived, or as soon as no
//! other chunk waits for its confirm (as Nagle's algorithm sends when nothing is unacknowledged).
//! At most `max_in_flight` chunks wait for their confirm at a time; while they do, new jobs pile
//! up and the next chunk takes them all (as a database's group commit does), so a lone request
//! waits for no one and a flood travels in large chunks. Lingering with the broker idle would
//! only delay: tokio's timer counts whole milliseconds, so a 1 ms linger cost a lone create
//! about 2 ms of its 5.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{Notify, Semaphore, mpsc, oneshot};
use tracing::Instrument;

use crate::domain::{CreateChunk, CreateJob};
use crate::queue::{JobQueue, PublishError};

#[derive(Debug, Clone, Copy)]
pub struct ChunkSettings {
    /// Jobs per chunk at most.
    pub max_items: usize,
    /// How long a chunk waits for more jobs after its first one.
    pub linger: Duration,
    /// Chunks published and not yet confirmed, at most.
    pub max_in_flight: usize,
}

impl From<&crate::settings::IngressSettings> for ChunkSettings {
    fn from(s: &crate::settings::IngressSettings) -> Self {
        Self {
            max_items: s.chunk_max_items.max(1),
            linger: Duration::from_micros(s.chunk_linger_us),
            ..Default::default()
        }
    }
}

impl Default for ChunkSettings {
    fn default() -> Self {
        Self {
            max_items: 256,
            linger: Duration::from_millis(1),
            max_in_flight: 8,
        }
    }
}

struct Submitted {
    job: CreateJob,
    /// The request's span: the chunk is published inside the first job's, so the trace runs
    /// from that request through the queue to the worker.
    span: tracing::Span,
    confirmed: oneshot::Sender<Result<(), PublishError>>,
}

/// A [`JobQueue`] that coalesces chunks of one job into larger chunks on `inner`. Larger
/// chunks (a batch's) go straight through.
pub struct Coalescer {
    inner: Arc<dyn JobQueue>,
    submit: mpsc::Sender<Submitted>,
    settings: ChunkSettings,
}

impl Coalescer {
    /// Spawns the task that cuts chunks; it ends when the coalescer is dropped.
    pub fn start(inner: Arc<dyn JobQueue>, settings: ChunkSettings) -> Self {
        let settings = ChunkSettings {
            max_items: settings.max_items.max(1),
            max_in_flight: settings.max_in_flight.max(1),
            ..settings
        };
        // Room for a few chunks' worth of waiting jobs; beyond that, requests wait to submit.
        let (submit, jobs) = mpsc::channel(settings.max_items * 4);
        tokio::spawn(cut_chunks(inner.clone(), jobs, settings));
        Self {
            inner,
            submit,
            settings,
        }
    }
}

#[async_trait]
impl JobQueue for Coalescer {
    async fn publish(&self, chunk: &CreateChunk) -> Result<(), PublishError> {
        let [job] = chunk.jobs.as_slice() else {
            return self.inner.publish(chunk).await;
        };
        if self.settings.max_items == 1 {
            return self.inner.publish(chunk).await;
        }
        let (confirmed, answer) = oneshot::channel();
        let submitted = Submitted {
            job: job.clone(),
            span: tracing::Span::current(),
            confirmed,
        };
        self.submit
            .send(submitted)
            .await
            .map_err(|_| PublishError::Unavailable)?;
        // The chunk task answers every job it took; a dropped sender means it stopped.
        answer.await.unwrap_or(Err(PublishError::Unavailable))
    }

    /// Batch chunks are whole already: straight through.
    async fn publish_bulk(&self, chunk: &CreateChunk) -> Result<(), PublishError> {
        self.inner.publish_bulk(chunk).await
    }

    async fn bulk_backlog(&self) -> Option<u32> {
        self.inner.bulk_backlog().await
    }
}

async fn cut_chunks(
    queue: Arc<dyn JobQueue>,
    mut jobs: mpsc::Receiver<Submitted>,
    settings: ChunkSettings,
) {
    let in_flight = Arc::new(Semaphore::new(settings.max_in_flight));
    // Told each time a chunk's confirm arrives, so a lingering chunk can see the broker idle.
    let confirmed = Arc::new(Notify::new());
    // Chunks published and not yet confirmed, besides the one being cut (which holds a slot).
    let others_in_flight =
        |in_flight: &Semaphore| settings.max_in_flight - in_flight.available_permits() - 1;
    while let Some(first) = jobs.recv().await {
        // Waiting for a free slot is what lets the next chunk grow under load.
        let Ok(slot) = in_flight.clone().acquire_owned().await else {
            break;
        };
        let mut taken = vec![first];
        let deadline = tokio::time::Instant::now() + settings.linger;
        while taken.len() < settings.max_items {
            match jobs.try_recv() {
                Ok(next) => {
                    taken.push(next);
                    continue;
                }
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) => {}
            }
            if others_in_flight(&in_flight) == 0 {
                break;
            }
            tokio::select! {
                next = jobs.recv() => match next {
                    Some(next) => taken.push(next),
                    None => break,
                },
                () = tokio::time::sleep_until(deadline) => break,
                // A confirm arrived: look again whether anything is still in flight.
                () = confirmed.notified() => {}
            }
        }
        let queue = queue.clone();
        let confirmed = confirmed.clone();
        tokio::spawn(async move {
            let span = taken[0].span.clone();
            let (jobs, answers): (Vec<_>, Vec<_>) =
                taken.into_iter().map(|s| (s.job, s.confirmed)).unzip();
            let chunk = CreateChunk::new(jobs);
            crate::metrics::chunk_published(chunk.jobs.len());
            // Its own span, in the first job's trace: how long the broker took to confirm.
            let publishing =
                tracing::info_span!(parent: &span, "publish_chunk", jobs = chunk.jobs.len());
            let published = queue.publish(&chunk).instrument(publishing).await;
            drop(slot);
            confirmed.notify_one();
            for answer in answers {
                // A request that gave up waiting is gone; its job is queued all the same.
                let _ = answer.send(published.clone());
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{AccountId, CreateCsr, NamePolicy, Owner, OwnerKind};
    use crate::queue::Waiters;
    use crate::queue::memory::{MemoryLimits, MemoryQueue};

    fn job() -> CreateJob {
        let body = br#"{"common_name":"a.io","country":"US","state":"CA","locality":"SF",
            "organization":"A","sans":["a.io"],"key_type":"p256v1"}"#;
        let request = CreateCsr::parse(body, OwnerKind::Account, NamePolicy::Permissive).unwrap();
        let owner = Owner::Account(AccountId::parse(&"a".repeat(32)).unwrap());
        CreateJob::new(owner, request, "me".into())
    }

    fn memory(max_length: usize) -> MemoryQueue {
        MemoryQueue::new(
            MemoryLimits {
                max_length,
                delivery_limit: 5,
            },
            Waiters::default(),
        )
    }

    #[tokio::test]
    async fn concurrent_single_jobs_travel_in_one_chunk() {
        let queue = memory(100);
        let coalescer = Arc::new(Coalescer::start(
            Arc::new(queue.clone()),
            ChunkSettings {
                max_items: 50,
                linger: Duration::from_millis(200),
                max_in_flight: 1,
            },
        ));
        let sent: Vec<CreateJob> = (0..10).map(|_| job()).collect();
        let publishes = sent.iter().map(|j| {
            let c = coalescer.clone();
            let chunk = CreateChunk::one(j.clone());
            async move { c.publish(&chunk).await }
        });
        for r in futures_util::future::join_all(publishes).await {
            r.unwrap();
        }
        let mut consumer = queue.jobs();
        let mut seen = Vec::new();
        while seen.len() < sent.len() {
            let d = consumer.next().await.unwrap();
            seen.extend(d.chunk.jobs.iter().map(|j| j.id));
            d.settle(crate::queue::Settlement::Ack).await.unwrap();
        }
        assert_eq!(queue.outstanding(), 0);
        let mut expected: Vec<_> = sent.iter().map(|j| j.id).collect();
        expected.sort_by_key(|id| id.0);
        seen.sort_by_key(|id| id.0);
        assert_eq!(seen, expected);
    }

    #[tokio::test]
    async fn chunks_are_cut_at_max_items() {
        let queue = memory(100);
        let coalescer = Arc::new(Coalescer::start(
            Arc::new(queue.clone()),
            ChunkSettings {
                max_items: 3,
                linger: Duration::from_millis(100),
                max_in_flight: 4,
            },
        ));
        let publishes = (0..7).map(|_| {
            let c = coalescer.clone();
            async move { c.publish(&CreateChunk::one(job())).await }
        });
        futures_util::future::join_all(publishes).await;
        let mut consumer = queue.jobs();
        let mut sizes = Vec::new();
        while sizes.iter().sum::<usize>() < 7 {
            let d = consumer.next().await.unwrap();
            sizes.push(d.chunk.jobs.len());
            d.settle(crate::queue::Settlement::Ack).await.unwrap();
        }
        assert!(sizes.iter().all(|n| *n <= 3), "{sizes:?}");
    }

    /// Records each chunk's size; a publish waits for a permit of `gate`, so the test decides
    /// when a chunk's confirm arrives.
    struct Gated {
        sizes: std::sync::Mutex<Vec<usize>>,
        gate: Semaphore,
    }

    #[async_trait]
    impl JobQueue for Gated {
        async fn publish(&self, chunk: &CreateChunk) -> Result<(), PublishError> {
            self.sizes.lock().unwrap().push(chunk.jobs.len());
            self.gate.acquire().await.unwrap().forget();
            Ok(())
        }

        async fn bulk_backlog(&self) -> Option<u32> {
            None
        }
    }

    fn gated(permits: usize) -> Arc<Gated> {
        Arc::new(Gated {
            sizes: Default::default(),
            gate: Semaphore::new(permits),
        })
    }

    fn lingering() -> ChunkSettings {
        ChunkSettings {
            max_items: 50,
            linger: Duration::from_secs(3600),
            max_in_flight: 8,
        }
    }

    /// With nothing else in flight there is nothing to wait for: the job goes at once, not
    /// after the (here hour-long) linger.
    #[tokio::test]
    async fn a_lone_job_does_not_linger() {
        let queue = gated(1);
        let coalescer = Coalescer::start(queue.clone(), lingering());
        let published = tokio::time::timeout(
            Duration::from_secs(60),
            coalescer.publish(&CreateChunk::one(job())),
        )
        .await;
        assert!(matches!(published, Ok(Ok(()))), "{published:?}");
        assert_eq!(*queue.sizes.lock().unwrap(), vec![1]);
    }

    /// While a chunk waits for its confirm, the jobs that arrive meanwhile wait together, and
    /// go as one chunk when that confirm arrives (before the linger ends).
    #[tokio::test]
    async fn jobs_arriving_while_a_chunk_is_in_flight_go_together_at_its_confirm() {
        let queue = gated(0);
        let coalescer = Arc::new(Coalescer::start(queue.clone(), lingering()));
        let publish = |c: &Arc<Coalescer>| {
            let c = c.clone();
            tokio::spawn(async move { c.publish(&CreateChunk::one(job())).await })
        };
        let first = publish(&coalescer);
        while queue.sizes.lock().unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
        let rest: Vec<_> = (0..5).map(|_| publish(&coalescer)).collect();
        // Let all five reach the chunk being cut; none may be published yet.
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert_eq!(*queue.sizes.lock().unwrap(), vec![1]);
        queue.gate.add_permits(2);
        first.await.unwrap().unwrap();
        for r in rest {
            tokio::time::timeout(Duration::from_secs(60), r)
                .await
                .expect("published at the first chunk's confirm, not after the linger")
                .unwrap()
                .unwrap();
        }
        assert_eq!(*queue.sizes.lock().unwrap(), vec![1, 5]);
    }

    #[tokio::test]
    async fn a_refused_chunk_refuses_every_job_in_it() {
        let queue = memory(0);
        let coalescer = Coalescer::start(Arc::new(queue), ChunkSettings::default());
        let r = coalescer.publish(&CreateChunk::one(job())).await;
        assert!(matches!(r, Err(PublishError::Nacked)));
    }
}
