//! Handling one chunk delivery: find which jobs are done already (a redelivery), make the
//! missing keys and CSRs in parallel on the bounded blocking pool, write every row (and every
//! item that cannot be built, as a recorded failure) in one transaction, announce the results
//! to each waiting ingress instance, then ack.

use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use tracing::Instrument;

use super::WorkerContext;
use crate::audit::AuditEvent;
use crate::crypto::{Keyring, SealedKey, build_csr, seal};
use crate::db::csrs::ExistingRows;
use crate::db::{DbError, batches, bulk, csrs, jobs};
use crate::domain::{
    Completion, CreateChunk, CreateCsr, CreateJob, CsrId, CustomCsr, JobOutcome, KeyType, Owner,
    cut_by_cost,
};
use crate::fairshare::{Ask, Lane};
use crate::metrics;
use crate::queue::{JobDelivery, Settlement};
use crate::telemetry::{ErrorChain, spawn_blocking_in_current_span};

use super::keys::KeySource;

/// Transient database trouble is retried in place for this long before the chunk goes back
/// to the queue (where the delivery limit eventually dead-letters it).
const DB_RETRY_BUDGET: Duration = Duration::from_secs(60);

/// Why a chunk did not produce its rows (failures of single items are not errors: they are
/// recorded, and their chunk-mates go on).
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("a key generation task was lost")]
    Panicked(#[source] tokio::task::JoinError),
    #[error("the database failed")]
    Db(#[from] DbError),
    #[error("the worker is stopping")]
    Stopping,
}

impl JobError {
    /// What the queue should do with the chunk: deliver it again when a later attempt may
    /// succeed, dead-letter it when none can.
    pub fn settlement(&self) -> Settlement {
        match self {
            JobError::Db(e) if e.is_transient() => Settlement::Retry,
            JobError::Stopping => Settlement::Retry,
            _ => Settlement::DeadLetter,
        }
    }
}

pub async fn handle(ctx: WorkerContext, delivery: JobDelivery) {
    let chunk = &delivery.chunk;
    let bulk = chunk.jobs.iter().any(|j| j.batch.is_some());
    if bulk {
        // A chunk left the bulk queue: the dispatcher may put the next one there, ready for
        // whichever worker frees a place first.
        ctx.bulk_kick.kick();
    }
    let span = tracing::info_span!(
        "create_chunk",
        chunk = %chunk.label(),
        items = chunk.jobs.len(),
        trace_id = tracing::field::Empty
    );
    crate::telemetry::adopt_parent(&span, |name| {
        delivery
            .trace_context
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    });
    async move {
        // Each tenant's part of the chunk is made, written and announced on its own: a light
        // tenant's create coalesced with a heavy tenant's flood is answered when its own keys
        // are made, not when the flood's turn comes. So is each RSA key.
        let parts = chunk_parts(&delivery.chunk);
        let may_exist = rows_may_exist(&delivery);
        let outcomes = futures_util::future::join_all(
            parts.iter().map(|part| settle_part(&ctx, part, may_exist)),
        )
        .await;
        // Any part that may succeed later sends the chunk back (the parts done are found
        // done); one that never can dead-letters it (the dead-letter consumer keeps what
        // exists).
        let settlement = if outcomes.contains(&Settlement::Retry) {
            Settlement::Retry
        } else if outcomes.contains(&Settlement::DeadLetter) {
            Settlement::DeadLetter
        } else {
            Settlement::Ack
        };
        if let Err(e) = delivery.settle(settlement).await {
            tracing::warn!(error = %ErrorChain(e.as_ref()), ?settlement, "could not settle the chunk; it will be delivered again");
        }
        if bulk {
            // The bulk queue has room for the next chunk.
            ctx.bulk_kick.kick();
        }
    }
    .instrument(span)
    .await
}

/// Whether some of the delivery's jobs may have their rows already, so they are looked up before
/// any key is made: a redelivery, or a batch's chunk (the dispatcher sends a chunk again when
/// it cannot tell whether the broker took it). A single create's first delivery is looked up
/// only in the rare race its insert settles anyway (a republished Idempotency-Key job: the row
/// that won is read back), which saves a query per chunk on the hot path.
fn rows_may_exist(delivery: &JobDelivery) -> bool {
    delivery.redelivered || delivery.chunk.jobs.iter().any(|j| j.batch.is_some())
}

/// Makes, writes and announces one tenant's part of a chunk; what the chunk's delivery should
/// become as far as this part is concerned.
async fn settle_part(ctx: &WorkerContext, part: &CreateChunk, may_exist: bool) -> Settlement {
    match process(ctx, part, may_exist).await {
        Ok(completions) => {
            metrics::chunk_handled(completions.len());
            // Announce before acking: if an announcement fails the chunk is delivered again,
            // and that delivery (finding the rows) announces again.
            let announcing = tracing::info_span!("announce", completions = completions.len());
            match super::announce(ctx, part, &completions)
                .instrument(announcing)
                .await
            {
                Ok(()) => Settlement::Ack,
                Err(e) => {
                    tracing::warn!(error = %ErrorChain(&e), "completions not announced; the chunk goes back to the queue");
                    Settlement::Retry
                }
            }
        }
        Err(e) => {
            let settlement = e.settlement();
            if settlement == Settlement::DeadLetter {
                // The dead-letter consumer records the failures and tells the waiting clients.
                tracing::error!(error = %ErrorChain(&e), "chunk cannot succeed; dead-lettering it");
                metrics::jobs("failed", part.jobs.len());
            } else {
                tracing::warn!(error = %ErrorChain(&e), "chunk failed; returning it to the queue");
                metrics::jobs("retried", part.jobs.len());
            }
            settlement
        }
    }
}

/// The chunk split into the parts made, written and announced on their own: one per tenant, in
/// order of first appearance, and every single create of a slow key (an RSA prime search)
/// alone, so it is answered when its own key is made. A part waits for its slowest key: eight
/// RSA creates answered together left a keygen slot idle while the last prime search ran, and
/// their clients sent nothing new meanwhile. Batch items stay in their tenant's part: nobody
/// waits on one, and a stored chunk is settled by the part that writes its items. A chunk of
/// one tenant's fast keys, the common case, stays whole.
fn chunk_parts(chunk: &CreateChunk) -> Vec<std::borrow::Cow<'_, CreateChunk>> {
    use std::borrow::Cow;
    let Some(first) = chunk.jobs.first() else {
        return Vec::new();
    };
    let alone = |job: &CreateJob| job.batch.is_none() && job.request.key_type.cost() >= GROUP_COST;
    if chunk
        .jobs
        .iter()
        .all(|j| j.owner == first.owner && !alone(j))
    {
        return vec![Cow::Borrowed(chunk)];
    }
    // `None`: a part that takes no other job.
    let mut parts: Vec<(Option<&Owner>, Vec<CreateJob>)> = Vec::new();
    for job in &chunk.jobs {
        if alone(job) {
            parts.push((None, vec![job.clone()]));
            continue;
        }
        match parts
            .iter_mut()
            .find(|(owner, _)| *owner == Some(&job.owner))
        {
            Some((_, jobs)) => jobs.push(job.clone()),
            None => parts.push((Some(&job.owner), vec![job.clone()])),
        }
    }
    parts
        .into_iter()
        .map(|(_, jobs)| Cow::Owned(CreateChunk::new(jobs)))
        .collect()
}

/// What became of one job that had no row yet.
enum Made {
    Built(Box<(CustomCsr, SealedKey)>),
    Failed(String),
}

/// Makes every CSR of the chunk that does not exist yet. Returns one completion per job, in
/// the chunk's order.
async fn process(
    ctx: &WorkerContext,
    chunk: &CreateChunk,
    may_exist: bool,
) -> Result<Vec<Completion>, JobError> {
    let existing: HashMap<CsrId, String> = if may_exist {
        let ids: Vec<CsrId> = chunk.jobs.iter().map(|j| j.id).collect();
        with_db_retry(ctx, || async {
            let client = ctx.pool.get().await?;
            csrs::pems(&*client, &ids).await
        })
        .await?
        .into_iter()
        .collect()
    } else {
        HashMap::new()
    };
    let todo: Vec<&CreateJob> = chunk
        .jobs
        .iter()
        .filter(|j| !existing.contains_key(&j.id))
        .collect();

    let made = generate_all(ctx, &todo).await?;
    let rows: Vec<(&CustomCsr, &SealedKey)> = made
        .iter()
        .filter_map(|m| match m {
            Made::Built(built) => Some((&built.0, &built.1)),
            Made::Failed(_) => None,
        })
        .collect();
    let failures: Vec<(CsrId, &Owner, &str)> = todo
        .iter()
        .zip(&made)
        .filter_map(|(job, m)| match m {
            Made::Failed(reason) => Some((job.id, &job.owner, reason.as_str())),
            Made::Built(..) => None,
        })
        .collect();

    // A plain insert first: the rows looked up above (or, on a first delivery, none) are the
    // only ones that can exist. A race with another delivery of the same jobs shows as a
    // duplicate id, and the chunk is written again keeping the rows that won.
    let inserted = match write_rows(ctx, chunk, &rows, &failures, ExistingRows::Fail).await {
        Err(e) if e.is_duplicate_csr() => {
            write_rows(ctx, chunk, &rows, &failures, ExistingRows::Skip).await?
        }
        written => written?,
    };

    // A row we built but did not insert: a concurrent delivery of the same job won, and its
    // key is the only one kept. Its CSR is read back, never ours announced.
    let lost: Vec<CsrId> = rows
        .iter()
        .map(|(csr, _)| csr.id)
        .filter(|id| !inserted.contains(id))
        .collect();
    drop(rows);
    let winners: HashMap<CsrId, String> = if lost.is_empty() {
        HashMap::new()
    } else {
        with_db_retry(ctx, || async {
            let client = ctx.pool.get().await?;
            csrs::pems(&*client, &lost).await
        })
        .await?
        .into_iter()
        .collect()
    };

    let mut made_by_id: HashMap<CsrId, Made> = todo
        .iter()
        .map(|j| j.id)
        .zip(made)
        .collect::<HashMap<_, _>>();
    let (mut created_n, mut replayed_n, mut failed_n) = (0, 0, 0);
    let completions = chunk
        .jobs
        .iter()
        .map(|job| {
            let outcome = if let Some(pem) = existing.get(&job.id) {
                replayed_n += 1;
                created(Some(pem.clone()))
            } else {
                match made_by_id.remove(&job.id) {
                    Some(Made::Built(built)) if inserted.contains(&job.id) => {
                        created_n += 1;
                        created(Some(built.0.csr_pem))
                    }
                    Some(Made::Built(..)) => {
                        replayed_n += 1;
                        created(winners.get(&job.id).cloned())
                    }
                    Some(Made::Failed(reason)) => {
                        tracing::error!(csr_id = %job.id, %reason, "create cannot succeed; recorded as failed");
                        failed_n += 1;
                        JobOutcome::Failed { reason }
                    }
                    // A job listed twice in one chunk: the first occurrence took the result.
                    None => created(None),
                }
            };
            Completion {
                id: job.id,
                outcome,
            }
        })
        .collect();
    metrics::jobs("created", created_n);
    metrics::jobs("replayed", replayed_n);
    metrics::jobs("failed", failed_n);
    Ok(completions)
}

/// Writes a chunk's rows, its audit events, its failures and its batch's progress in one
/// transaction; the ids it inserted.
async fn write_rows(
    ctx: &WorkerContext,
    chunk: &CreateChunk,
    rows: &[(&CustomCsr, &SealedKey)],
    failures: &[(CsrId, &Owner, &str)],
    existing: ExistingRows,
) -> Result<HashSet<CsrId>, DbError> {
    // The rows' CSRs repeat their SANs: about twice the requests' size goes in one message.
    let insert_bytes: usize = rows
        .iter()
        .map(|(csr, _)| 2 * csr.request.approx_bytes())
        .sum();
    // The `csr.create` event of every single create whose row is inserted goes in with it: a
    // CSR exists with its event or not at all, and a redelivery (inserting nothing) writes none
    // again.
    let events: Vec<AuditEvent> = chunk.jobs.iter().filter_map(AuditEvent::created).collect();
    let events: Vec<_> = events.iter().map(crate::audit::row).collect();
    // Single creates that all made their keys have nothing else to settle: their one statement
    // commits on its own (one round trip, not four).
    let alone = failures.is_empty() && chunk.jobs.iter().all(|j| j.batch.is_none());
    let inserted = with_db_retry(ctx, || async {
        let mut pooled = ctx.pool.get().await?;
        if alone {
            let inserted = insert_chunk(&*pooled, rows, existing, &events).await?;
            crate::db::release_sized(pooled, insert_bytes);
            return Ok(inserted);
        }
        let tx = pooled.transaction().await?;
        let inserted = insert_chunk(&tx, rows, existing, &events).await?;
        let failed = jobs::record_failures(&tx, failures).await?;
        bulk::settle_chunks(&tx, chunk).await?;
        // Last, so the batch row is locked only for the commit.
        batches::record_progress(&tx, &super::batch_progress(chunk, &inserted, &failed)).await?;
        tx.commit().await?;
        crate::db::release_sized(pooled, insert_bytes);
        Ok(inserted)
    })
    .await?;
    Ok(inserted.into_iter().collect())
}

async fn insert_chunk(
    client: &impl crate::db::prepared::Prepared,
    rows: &[(&CustomCsr, &SealedKey)],
    existing: ExistingRows,
    events: &[crate::db::audit::AuditRow<'_>],
) -> Result<Vec<CsrId>, DbError> {
    csrs::insert_chunk(client, rows, existing, events)
        .instrument(tracing::info_span!("db_insert_chunk", rows = rows.len()))
        .await
}

fn created(csr_pem: Option<String>) -> JobOutcome {
    JobOutcome::Created { csr_pem }
}

/// Generates, signs and seals every job's key on the blocking pool, in groups, each in a
/// keygen slot granted by the fair scheduler to the group's tenant and charged with the time
/// it took. The result is in `todo`'s order.
async fn generate_all(ctx: &WorkerContext, todo: &[&CreateJob]) -> Result<Vec<Made>, JobError> {
    let tasks = fair_groups(todo).into_iter().map(|group| {
        let first = todo[group[0]];
        let ask = Ask {
            tenant: first.owner.clone(),
            lane: if first.batch.is_some() {
                Lane::Bulk
            } else {
                Lane::Interactive
            },
            size: 1,
            cost: group
                .iter()
                .map(|&i| f64::from(todo[i].request.key_type.cost()))
                .sum(),
            weight: ctx.policies.weight(&first.owner),
        };
        let items: Vec<(CsrId, Owner, CreateCsr, chrono::DateTime<chrono::Utc>)> = group
            .iter()
            .map(|&i| {
                let j = todo[i];
                (j.id, j.owner.clone(), j.request.clone(), j.created_at)
            })
            .collect();
        async move {
            let (tenant, estimate, weight) = (ask.tenant.clone(), ask.cost, ask.weight);
            let _slot = ctx.keygen_slots.acquire(ask).await;
            let keyring = ctx.keyring.clone();
            let keys = ctx.keys.clone();
            let started = Instant::now();
            let made = tracing::info_span!("keygen_and_sign", keys = items.len())
                .in_scope(|| {
                    spawn_blocking_in_current_span(move || {
                        items
                            .into_iter()
                            .map(|(id, owner, request, created_at)| {
                                let started = Instant::now();
                                let key_type = request.key_type;
                                let made =
                                    make_one(&keyring, &keys, id, owner, request, created_at);
                                let secs = started.elapsed().as_secs_f64();
                                metrics::keygen(key_type.as_str(), secs);
                                made
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .await
                .map_err(JobError::Panicked)?;
            // Fair share is of the CPU: the tenant pays what its keys really took (an RSA
            // prime search varies tenfold; a pooled key costs only its signature).
            let actual = crate::fairshare::units(started.elapsed());
            ctx.keygen_slots.correct(&tenant, actual - estimate, weight);
            Ok::<_, JobError>(group.into_iter().zip(made).collect::<Vec<_>>())
        }
    });
    let mut slots: Vec<Option<Made>> = (0..todo.len()).map(|_| None).collect();
    for group in futures_util::future::try_join_all(tasks).await? {
        for (i, made) in group {
            slots[i] = Some(made);
        }
    }
    Ok(slots
        .into_iter()
        .map(|m| m.unwrap_or_else(|| Made::Failed("the key was not generated".into())))
        .collect())
}

/// Cost units of one blocking task at most, so a slot is never held long: 64 P-256 keys
/// (about 5 ms), or one RSA key (tens of milliseconds) alone.
const GROUP_COST: u32 = 64;

/// Indexes of `jobs` cut into groups for one blocking task each: one tenant and one lane per
/// group (its slot is granted to, and charged to, that tenant), and one key type, cut by
/// cost with the batches' rule ([`cut_by_cost`]).
fn fair_groups(jobs: &[&CreateJob]) -> Vec<Vec<usize>> {
    // Parts in the order their first job arrived, so keys are asked for in arrival order.
    let mut parts: Vec<(KeyType, Vec<usize>)> = Vec::new();
    let mut part_of: HashMap<(&Owner, bool, KeyType), usize> = HashMap::new();
    for (i, job) in jobs.iter().enumerate() {
        let key = (&job.owner, job.batch.is_some(), job.request.key_type);
        let part = *part_of.entry(key).or_insert_with(|| {
            parts.push((job.request.key_type, Vec::new()));
            parts.len() - 1
        });
        parts[part].1.push(i);
    }
    parts
        .into_iter()
        .flat_map(|(key_type, part)| {
            let spans = cut_by_cost(part.iter().map(|_| key_type.cost()), GROUP_COST);
            spans
                .into_iter()
                .map(|span| part[span.first..span.first + span.len].to_vec())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// One key, its CSR and its sealed form. A failure (or a panic) fails this item only.
fn make_one(
    keyring: &Keyring,
    keys: &KeySource,
    id: CsrId,
    owner: Owner,
    request: CreateCsr,
    created_at: chrono::DateTime<chrono::Utc>,
) -> Made {
    let key_type = request.key_type;
    let built = std::panic::catch_unwind(AssertUnwindSafe(|| {
        let key = keys
            .take(key_type)
            .map_err(|e| format!("key generation failed: {}", ErrorChain(&e)))?;
        let pem = build_csr(&request, &key)
            .map_err(|e| format!("the CSR could not be built: {}", ErrorChain(&e)))?;
        Ok::<_, String>((pem, seal(keyring, id, &owner, &key.pkcs8_der)))
    }));
    match built {
        Ok(Ok((csr_pem, sealed))) => Made::Built(Box::new((
            CustomCsr {
                id,
                owner,
                request,
                csr_pem,
                created_at,
            },
            sealed,
        ))),
        Ok(Err(reason)) => Made::Failed(reason),
        Err(_) => Made::Failed("key generation panicked".into()),
    }
}

/// Retries transient database errors with backoff, within `DB_RETRY_BUDGET` and until
/// shutdown; other errors return at once.
pub(super) async fn with_db_retry<T, F, Fut>(ctx: &WorkerContext, op: F) -> Result<T, DbError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, DbError>>,
{
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(5))
        .with_total_delay(Some(DB_RETRY_BUDGET))
        .without_max_times();
    op.retry(backoff)
        .sleep(tokio::time::sleep)
        .when(|e: &DbError| e.is_transient() && !ctx.shutdown.is_cancelled())
        .notify(|e: &DbError, _| tracing::warn!(error = %ErrorChain(e), "database unavailable; retrying"))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(owner: char, key_type: &str, batch: bool) -> CreateJob {
        use crate::domain::{AccountId, NamePolicy, OwnerKind};
        let body = format!(
            r#"{{"common_name":"a.io","country":"US","state":"CA","locality":"SF",
            "organization":"A","sans":["a.io"],"key_type":"{key_type}"}}"#
        );
        let request =
            CreateCsr::parse(body.as_bytes(), OwnerKind::Account, NamePolicy::Permissive).unwrap();
        let owner = Owner::Account(AccountId::parse(&owner.to_string().repeat(32)).unwrap());
        let mut job = CreateJob::new(owner, request, String::new());
        if batch {
            job.batch = Some(crate::domain::BatchSlot {
                batch_id: uuid::Uuid::nil(),
                index: 0,
            });
        }
        job
    }

    fn part_ids(chunk: &CreateChunk) -> Vec<Vec<CsrId>> {
        chunk_parts(chunk)
            .iter()
            .map(|p| p.jobs.iter().map(|j| j.id).collect())
            .collect()
    }

    #[test]
    fn a_chunk_of_several_tenants_is_handled_tenant_by_tenant() {
        let jobs = vec![
            job('a', "p256v1", false),
            job('b', "p256v1", false),
            job('a', "p384", false),
        ];
        let mixed = CreateChunk::new(jobs.clone());
        assert_eq!(
            part_ids(&mixed),
            [vec![jobs[0].id, jobs[2].id], vec![jobs[1].id]]
        );
        let single = CreateChunk::new(vec![job('a', "p256v1", false), job('a', "p384", false)]);
        assert!(matches!(
            chunk_parts(&single)[..],
            [std::borrow::Cow::Borrowed(_)]
        ));
    }

    #[test]
    fn each_single_rsa_create_is_a_part_of_its_own() {
        let jobs = vec![
            job('a', "rsa3072", false),
            job('a', "p256v1", false),
            job('a', "rsa2048", false),
            job('a', "rsa2048", true),
            job('a', "p256v1", false),
        ];
        let chunk = CreateChunk::new(jobs.clone());
        assert_eq!(
            part_ids(&chunk),
            [
                vec![jobs[0].id],
                vec![jobs[1].id, jobs[3].id, jobs[4].id],
                vec![jobs[2].id]
            ]
        );
    }

    #[test]
    fn groups_hold_one_tenant_and_lane_rsa_keys_alone() {
        let jobs = [
            job('a', "p256v1", false),
            job('b', "p256v1", false),
            job('a', "rsa2048", false),
            job('a', "p256v1", false),
            job('a', "p256v1", true),
        ];
        let refs: Vec<&CreateJob> = jobs.iter().collect();
        // In the order each group's first job arrived.
        let groups = fair_groups(&refs);
        assert_eq!(groups, vec![vec![0, 3], vec![1], vec![2], vec![4]]);

        let many: Vec<CreateJob> = (0..GROUP_COST as usize + 1)
            .map(|_| job('a', "p256v1", false))
            .collect();
        let refs: Vec<&CreateJob> = many.iter().collect();
        let mut sizes: Vec<usize> = fair_groups(&refs).iter().map(Vec::len).collect();
        sizes.sort();
        assert_eq!(sizes, [1, GROUP_COST as usize]);
        assert!(fair_groups(&[]).is_empty());
    }
}
