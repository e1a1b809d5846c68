//! The create use case on its own, against the in-memory queue and a real Postgres: each
//! Idempotency-Key branch, seen from what it publishes and what it answers. No worker runs
//! unless a test hands it a job (`work_one`), so the queue shows exactly what was published.

use std::sync::Arc;
use std::time::Duration;

use csrd::audit::Auditor;
use csrd::crypto::Keyring;
use csrd::db::{Pool, build_pool, jobs};
use csrd::domain::{
    AccountId, CreateChunk, CreateCsr, CreateJob, CreateOutcome, CsrId, IdempotencyKey, JobOutcome,
    ListQuery, NamePolicy, Owner, OwnerKind,
};
use csrd::ingress::{Catalog, CreateError, CreatePipeline};
use csrd::queue::memory::{MemoryLimits, MemoryQueue};
use csrd::queue::{JobConsumer, JobQueue, PublishError, Waiters};
use csrd::worker::{KeyPoolSizes, KeySource, WorkerContext};
use csrd_test_support::*;
use serde_json::json;
use tokio_util::sync::CancellationToken;

struct Harness {
    service: CreatePipeline,
    waiters: Waiters,
    queue: MemoryQueue,
    jobs: Box<dyn JobConsumer>,
    pool: Pool,
    keyring: Arc<Keyring>,
    // Last: the database goes after everything that uses it.
    _iso: Isolation,
}

async fn harness(max_length: usize) -> Harness {
    let mut iso = Isolation::new().await;
    iso.uses_broker = false;
    csrd::startup::migrate(&iso.settings().db).await.unwrap();
    let pool = build_pool(&iso.database_url, 4, "csrd-tests").unwrap();
    let waiters = Waiters::default();
    let queue = MemoryQueue::new(
        MemoryLimits {
            max_length,
            delivery_limit: 5,
        },
        waiters.clone(),
    );
    // A short wait budget: with no worker running, a create ends pending.
    let service = CreatePipeline::new(
        pool.clone(),
        Arc::new(queue.clone()),
        waiters.clone(),
        "tests".into(),
        Duration::from_millis(200),
    );
    Harness {
        service,
        waiters,
        jobs: queue.jobs(),
        queue,
        pool,
        keyring: Arc::new(Keyring::parse(&iso.keks).unwrap()),
        _iso: iso,
    }
}

impl Harness {
    /// The read use cases over the same database (their audit events go to its audit log).
    fn catalog(&self) -> Catalog {
        let (audit, _writer) =
            Auditor::start(Arc::new(self.pool.clone()), CancellationToken::new());
        Catalog::new(self.pool.clone(), audit)
    }

    async fn create(&self, cn: &str, key: Option<&str>) -> Result<CreateOutcome, CreateError> {
        let body = with(p256_body(), "common_name", json!(cn));
        let request = CreateCsr::parse(
            body.to_string().as_bytes(),
            OwnerKind::Account,
            NamePolicy::Permissive,
        )
        .unwrap();
        let key = key.map(|k| IdempotencyKey::parse(k).unwrap());
        self.service
            .create(owner(), request, key.as_ref(), None)
            .await
    }

    /// Hands the next queued job to the real worker code.
    async fn work_one(&mut self) {
        let delivery = self.jobs.next().await.expect("a queued job");
        let ctx = WorkerContext {
            pool: self.pool.clone(),
            keyring: self.keyring.clone(),
            completions: Arc::new(self.queue.clone()),
            keygen_slots: csrd::fairshare::FairGate::new(1),
            policies: csrd::fairshare::Policies::new(Default::default()),
            bulk_kick: csrd::fairshare::Kick::default(),
            keys: KeySource::new(KeyPoolSizes::default()),
            shutdown: CancellationToken::new(),
        };
        csrd::worker::job::handle(ctx, delivery).await;
    }

    async fn sql(&self, statement: &str) {
        let client = self.pool.get().await.unwrap();
        client.batch_execute(statement).await.unwrap();
    }
}

fn request(cn: &str) -> CreateCsr {
    let body = with(p256_body(), "common_name", json!(cn));
    CreateCsr::parse(
        body.to_string().as_bytes(),
        OwnerKind::Account,
        NamePolicy::Permissive,
    )
    .unwrap()
}

fn owner() -> Owner {
    Owner::Account(AccountId::parse(ACCOUNT_A).unwrap())
}

#[track_caller]
fn pending_id(outcome: &CreateOutcome) -> CsrId {
    match outcome {
        CreateOutcome::Pending(p) => p.id,
        other => panic!("expected pending, got {other:?}"),
    }
}

#[tokio::test]
async fn without_a_key_every_create_publishes_a_job_of_its_own() {
    let h = harness(10).await;
    let a = pending_id(&h.create("a.example.com", None).await.unwrap());
    let b = pending_id(&h.create("a.example.com", None).await.unwrap());
    assert_ne!(a, b);
    assert_eq!(h.queue.outstanding(), 2);
}

#[tokio::test]
async fn start_a_new_key_publishes_the_job_and_records_it_confirmed() {
    let h = harness(10).await;
    let outcome = h.create("a.example.com", Some("k1")).await.unwrap();
    pending_id(&outcome);
    assert_eq!(h.queue.outstanding(), 1);
    let client = h.pool.get().await.unwrap();
    let published: bool = client
        .query_one(
            "SELECT published_at IS NOT NULL FROM idempotency_keys WHERE key = 'k1'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(published);
}

#[tokio::test]
async fn resume_the_same_key_while_its_job_is_queued_waits_without_publishing_again() {
    let h = harness(10).await;
    let first = pending_id(&h.create("a.example.com", Some("k1")).await.unwrap());
    let again = pending_id(&h.create("a.example.com", Some("k1")).await.unwrap());
    assert_eq!(first, again, "the same CSR id");
    assert_eq!(h.queue.outstanding(), 1, "nothing published again");
}

#[tokio::test]
async fn republish_an_unconfirmed_or_overdue_job_goes_to_the_queue_again_under_its_id() {
    let h = harness(10).await;
    let first = pending_id(&h.create("a.example.com", Some("k1")).await.unwrap());

    // As if the first request died before the broker confirmed.
    h.sql("UPDATE idempotency_keys SET published_at = NULL")
        .await;
    let again = pending_id(&h.create("a.example.com", Some("k1")).await.unwrap());
    assert_eq!(again, first);
    assert_eq!(h.queue.outstanding(), 2);

    // Confirmed, but with no outcome for longer than the republish threshold.
    h.sql("UPDATE idempotency_keys SET created_at = now() - interval '10 minutes'")
        .await;
    let third = pending_id(&h.create("a.example.com", Some("k1")).await.unwrap());
    assert_eq!(third, first);
    assert_eq!(h.queue.outstanding(), 3);
}

#[tokio::test]
async fn replay_a_finished_job_answers_its_csr_without_publishing() {
    let mut h = harness(10).await;
    let id = pending_id(&h.create("a.example.com", Some("k1")).await.unwrap());
    h.work_one().await;
    match h.create("a.example.com", Some("k1")).await.unwrap() {
        CreateOutcome::Created { csr, replayed } => {
            assert_eq!(csr.id, id);
            assert!(replayed);
        }
        other => panic!("expected the CSR, got {other:?}"),
    }
    assert_eq!(h.queue.outstanding(), 0);
}

#[tokio::test]
async fn replay_a_job_that_failed_for_good_answers_its_failure() {
    let h = harness(10).await;
    let id = pending_id(&h.create("a.example.com", Some("k1")).await.unwrap());
    let client = h.pool.get().await.unwrap();
    jobs::record_failure(&**client, id, &owner(), "dead-lettered")
        .await
        .unwrap();
    let outcome = h.create("a.example.com", Some("k1")).await.unwrap();
    assert_eq!(
        outcome,
        CreateOutcome::Failed {
            id,
            reason: "dead-lettered".into()
        }
    );
    assert_eq!(h.queue.outstanding(), 1, "only the first publish");
}

#[tokio::test]
async fn replay_after_the_csr_was_deleted_answers_deleted_at_once_and_publishes_nothing() {
    let mut h = harness(10).await;
    let id = pending_id(&h.create("a.example.com", Some("k1")).await.unwrap());
    h.work_one().await;
    assert_eq!(
        h.catalog().delete(&owner(), id).await.unwrap(),
        csrd::db::csrs::Deletion::Deleted
    );
    // Overdue too: before the fix, this republished the job and made a new key.
    h.sql("UPDATE idempotency_keys SET created_at = now() - interval '10 minutes'")
        .await;
    let outcome = h.create("a.example.com", Some("k1")).await.unwrap();
    assert_eq!(outcome, CreateOutcome::Deleted { id });
    assert_eq!(h.queue.outstanding(), 0);
}

#[tokio::test]
async fn a_different_request_under_a_used_key_is_refused() {
    let h = harness(10).await;
    pending_id(&h.create("a.example.com", Some("k1")).await.unwrap());
    assert!(matches!(
        h.create("b.example.com", Some("k1")).await,
        Err(CreateError::IdempotencyKeyReused)
    ));
    assert_eq!(h.queue.outstanding(), 1);
}

#[tokio::test]
async fn a_job_the_queue_refused_gives_its_key_back() {
    let h = harness(0).await;
    assert!(matches!(
        h.create("a.example.com", Some("k1")).await,
        Err(CreateError::Publish(PublishError::Nacked))
    ));
    let client = h.pool.get().await.unwrap();
    let records: i64 = client
        .query_one("SELECT count(*) FROM idempotency_keys", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(records, 0, "a retry starts afresh");
}

#[tokio::test]
async fn a_chunk_of_several_tenants_is_written_at_once_and_an_item_that_cannot_be_built_fails_alone()
 {
    let mut h = harness(10).await;
    let other = Owner::Account(AccountId::parse(ACCOUNT_B).unwrap());
    let mut unbuildable = request("bad.example.com");
    // Passes no validation, but a job arrives from the queue as data: the CSR encoder refuses
    // a non-printable country, which fails this item only.
    unbuildable.subject.country = "\u{e9}\u{e9}".into();
    let jobs = vec![
        CreateJob::new(owner(), request("a1.example.com"), "tests".into()),
        CreateJob::new(other.clone(), request("b1.example.com"), "tests".into()),
        CreateJob::new(owner(), unbuildable, "tests".into()),
        CreateJob::new(owner(), request("a2.example.com"), "tests".into()),
    ];
    let mut waiting: Vec<_> = jobs.iter().map(|j| h.waiters.register(j.id)).collect();
    let chunk = CreateChunk::new(jobs.clone());
    h.queue.publish(&chunk).await.unwrap();
    h.work_one().await;
    assert_eq!(h.queue.outstanding(), 0, "the chunk was acked");

    let mut pems = Vec::new();
    for (i, w) in waiting.iter_mut().enumerate() {
        match w.next(Duration::from_secs(5)).await {
            Some(JobOutcome::Created { csr_pem: Some(pem) }) if i != 2 => pems.push(pem),
            Some(JobOutcome::Failed { reason }) if i == 2 => {
                assert!(reason.contains("CSR could not be built"), "{reason}")
            }
            other => panic!("item {i}: {other:?}"),
        }
    }
    let catalog = h.catalog();
    let a_page = catalog
        .list(&owner(), &ListQuery::defaults(OwnerKind::Account))
        .await
        .unwrap();
    assert_eq!(a_page.total, 2, "exact per-tenant count");
    let b_page = catalog
        .list(&other, &ListQuery::defaults(OwnerKind::Account))
        .await
        .unwrap();
    assert_eq!(b_page.total, 1);
    for (job, pem) in [&jobs[0], &jobs[1], &jobs[3]].into_iter().zip(&pems) {
        let stored = catalog.get(&job.owner, job.id).await.unwrap().unwrap();
        assert_eq!(&stored.csr_pem, pem, "the event carried the stored CSR");
    }
    let client = h.pool.get().await.unwrap();
    assert!(
        jobs::failure(&**client, &owner(), jobs[2].id)
            .await
            .unwrap()
            .is_some()
    );

    // Delivered again (an ack lost): no new key, the same CSRs announced.
    let mut again: Vec<_> = jobs.iter().map(|j| h.waiters.register(j.id)).collect();
    h.queue.publish(&chunk).await.unwrap();
    h.work_one().await;
    let a_page = catalog
        .list(&owner(), &ListQuery::defaults(OwnerKind::Account))
        .await
        .unwrap();
    assert_eq!(a_page.total, 2);
    for (w, pem) in again.iter_mut().take(2).zip(&pems) {
        assert_eq!(
            w.next(Duration::from_secs(5)).await,
            Some(JobOutcome::Created {
                csr_pem: Some(pem.clone())
            })
        );
    }
}
