//! Per-tenant limits at the ingress. They stop abuse; they do not ration throughput: a lone tenant
//! at the defaults gets the whole machine, and tenants share it by scheduling
//! ([`crate::fairshare`]), not by caps (docs/operations.md, "Limits and abuse", says why each
//! default is what it is).
//!
//! - **Rate**: requests per second per tenant, shared by every ingress (see
//!   [`crate::fairshare::rate`]). A request costs 1; a batch costs one per MiB it carries.
//! - **In flight**: single creates a tenant has open at this ingress, at most
//!   `max_in_flight`; more is 429 at once.
//! - **Hourly quota** (only where an operator set one): items accepted per clock hour.
//! - **Large requests**: a tenant may have [`MAX_BATCHES_IN_FLIGHT`] batch submissions and
//!   `max_reads` batch results reads open on this ingress; more is 429 at once.
//!   Batch submissions and bulk certificate uploads also share one memory budget per process
//!   ([`MemoryBudget`]): each reserves what its body will cost as the body arrives, a tenant
//!   gets at most its share while others wait, and waits its turn for room.
//! - **The window**: single creates queued or being made, from this ingress, at most `window`
//!   cost units, handed out by fair share between tenants. While one tenant is active it gets
//!   the whole window; a tenant with nothing in it is let in at once, so a light tenant never
//!   waits behind a heavy one's backlog. A create that cannot get in before the create wait
//!   runs out was never queued: 429, safe to retry.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::memory_budget::{MemoryBudget, Reservation};
use crate::db::{Pool, tenant_limits};
use crate::domain::{KeyType, Owner};
use crate::fairshare::{Ask, FairGate, Lane, Permit, Policies, SharedRate};
use crate::telemetry::ErrorChain;

#[derive(Debug, Clone)]
pub struct TenantLimits {
    /// Single creates per tenant open at once on this ingress (0: unlimited).
    pub max_in_flight: usize,
    /// Batch results reads per tenant open at once on this ingress (0: unlimited).
    pub max_reads: usize,
    /// Cost units of single creates queued or being made from this ingress, at most.
    pub window: u32,
    /// What large bodies (batches, bulk uploads) may hold at once in this process.
    pub batch_memory_bytes: u64,
    /// What single requests' bodies being read may hold at once in this process.
    pub body_memory_bytes: u64,
}

impl From<&crate::settings::TenantSettings> for TenantLimits {
    fn from(s: &crate::settings::TenantSettings) -> Self {
        Self {
            max_in_flight: s.tenant_max_in_flight,
            max_reads: s.tenant_max_reads,
            window: s.ingress_window.max(1),
            batch_memory_bytes: s.batch_memory_mib.max(1) * 1024 * 1024,
            body_memory_bytes: s.body_memory_mib.max(1) * 1024 * 1024,
        }
    }
}

impl Default for TenantLimits {
    fn default() -> Self {
        Self {
            max_in_flight: 0,
            max_reads: 0,
            window: 4096,
            batch_memory_bytes: 256 * 1024 * 1024,
            body_memory_bytes: 64 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("tenant request rate exceeded")]
    Rate { retry_after: Duration },
    #[error("too many creates in flight for this tenant")]
    InFlight,
    #[error("the tenant's creates did not get a queue slot in time")]
    QueueWait,
    #[error("the tenant has {outstanding} items outstanding; at most {limit}")]
    Outstanding { outstanding: i64, limit: i64 },
    #[error("the tenant's hourly quota of {limit} items is used up")]
    HourlyQuota { limit: i64, retry_after: Duration },
    #[error("too many batch results reads in flight for this tenant")]
    ReadsInFlight,
    #[error("batch submissions are using this ingress's memory budget")]
    BatchMemory,
    #[error("the custom certificate routes are busy")]
    Busy,
    #[error("large answers are using this ingress's room for them")]
    LargeAnswers,
}

impl Refused {
    /// Which limit, for the metric.
    pub fn limit(&self) -> &'static str {
        match self {
            Refused::Rate { .. } => "rate",
            Refused::InFlight => "in_flight",
            Refused::QueueWait => "queue_wait",
            Refused::Outstanding { .. } => "outstanding",
            Refused::HourlyQuota { .. } => "hourly_quota",
            Refused::ReadsInFlight => "reads_in_flight",
            Refused::BatchMemory => "batch_memory",
            Refused::Busy => "busy",
            Refused::LargeAnswers => "large_answers",
        }
    }

    pub fn retry_after_secs(&self) -> u64 {
        let secs = |d: &Duration| d.as_secs_f64().ceil().max(1.0) as u64;
        match self {
            Refused::Rate { retry_after } | Refused::HourlyQuota { retry_after, .. } => {
                secs(retry_after)
            }
            Refused::InFlight
            | Refused::QueueWait
            | Refused::ReadsInFlight
            | Refused::BatchMemory
            | Refused::Busy
            | Refused::LargeAnswers => 1,
            // Outstanding items settle at the machine's pace: a batch's worth takes seconds.
            Refused::Outstanding { .. } => 10,
        }
    }
}

/// The per-tenant limits of one ingress process. Cheap to clone.
#[derive(Clone)]
pub struct Limits {
    settings: TenantLimits,
    policies: Policies,
    rate: SharedRate,
    window: FairGate,
    in_flight: Arc<Mutex<HashMap<Owner, usize>>>,
    batches_in_flight: Arc<Mutex<HashMap<Owner, usize>>>,
    reads_in_flight: Arc<Mutex<HashMap<Owner, usize>>>,
    /// What the batch submissions and bulk uploads of this process may hold at once.
    batch_memory: MemoryBudget,
    /// What single requests' bodies (creates, uploads) being read may hold at once: a budget
    /// of their own, so large bodies being processed never keep a create from being read.
    small_bodies: MemoryBudget,
    /// Answers that may be megabytes (pages of certificates or CSRs) being sent at once.
    large_answers: FairGate,
    pool: Pool,
}

impl Limits {
    pub fn new(settings: TenantLimits, policies: Policies, pool: Pool) -> Self {
        Self {
            window: FairGate::with_newcomers_overdrawing(settings.window.max(1)),
            rate: SharedRate::new(pool.clone()),
            policies,
            in_flight: Arc::default(),
            batches_in_flight: Arc::default(),
            reads_in_flight: Arc::default(),
            batch_memory: MemoryBudget::new(settings.batch_memory_bytes),
            small_bodies: MemoryBudget::new(settings.body_memory_bytes),
            large_answers: FairGate::with_newcomers_overdrawing(LARGE_ANSWERS),
            settings,
            pool,
        }
    }

    pub fn policies(&self) -> &Policies {
        &self.policies
    }

    /// Charges a large body (a batch, a bulk upload) to `owner`'s request rate: one request per
    /// MiB, as sending its bytes as single requests would cost, less the one the gate charged.
    pub async fn charge_body(&self, owner: &Owner, body_bytes: usize) -> Result<(), Refused> {
        let extra = body_bytes.div_ceil(BYTES_PER_REQUEST).saturating_sub(1);
        if extra == 0 {
            return Ok(());
        }
        self.charge(owner, extra as f64).await
    }

    /// Charges `requests` to `owner`'s request rate.
    pub async fn charge(&self, owner: &Owner, requests: f64) -> Result<(), Refused> {
        let policy = self.policies.of(owner);
        self.rate
            .take(owner, requests, &policy)
            .await
            .map_err(|retry_after| Refused::Rate { retry_after })
    }

    /// Admits one single create: within the tenant's in-flight cap, into the window in its
    /// fair turn (waiting at most `wait` for that), and within its hourly quota. The ticket holds its
    /// place until dropped (when the create has its answer).
    pub async fn admit_create(
        &self,
        owner: &Owner,
        key_type: KeyType,
        wait: Duration,
    ) -> Result<Ticket, Refused> {
        let in_flight = self.enter(owner)?;
        let policy = self.policies.of(owner);
        let cost = key_type.cost();
        let ask = Ask {
            tenant: owner.clone(),
            lane: Lane::Interactive,
            // At most a quarter of the window each, so a key type that costs more than the
            // window can hold twice (RSA-4096) still has a few in flight for the workers to
            // make side by side; fair share still charges its whole cost.
            size: cost.min((self.settings.window / 4).max(1)),
            cost: f64::from(cost),
            weight: policy.weight,
        };
        let permit = tokio::time::timeout(wait, self.window.acquire(ask))
            .await
            .map_err(|_| Refused::QueueWait)?;
        // Counted once let in, so a create refused for its wait is not counted.
        // Boxed: a database query inline would make every open create's future larger.
        let counted = match policy.items_per_hour {
            Some(limit) => Box::pin(self.count_hourly(owner, limit)).await?,
            None => false,
        };
        Ok(Ticket {
            _permit: permit,
            _in_flight: in_flight,
            counted: counted.then(|| (self.pool.clone(), owner.clone())),
        })
    }

    /// Admits one large submission (a batch, a bulk certificate upload) before its body is
    /// read: a tenant may have [`MAX_BATCHES_IN_FLIGHT`] on this ingress at once (each holds
    /// its body and, while it is stored, a database connection). Its memory is reserved from
    /// the process's budget as its body arrives ([`BatchAdmission::reserve_for_body`]),
    /// waiting up to `wait` each time for room.
    pub fn admit_batch(&self, owner: &Owner, wait: Duration) -> Result<BatchAdmission, Refused> {
        let open = enter(&self.batches_in_flight, owner, MAX_BATCHES_IN_FLIGHT)?;
        Ok(BatchAdmission {
            _open: open,
            body: BodyReservation {
                memory: self.batch_memory.reserve(owner),
                per_body_byte: BATCH_MEMORY_PER_BODY_BYTE,
                step: LARGE_BODY_STEP,
                wait,
            },
        })
    }

    /// A place among the process's large answers in flight (pages of certificates or CSRs, up
    /// to a few MB each), held until the answer is sent: [`LARGE_ANSWERS`] at once, in fair
    /// turns, and a tenant holding none is let in at once, so clients that ask for pages and
    /// never read them hold at most that many pages' memory, and another tenant's read is not
    /// kept waiting behind them. 429 when no place comes within the wait.
    pub async fn admit_large_answer(&self, owner: &Owner) -> Result<Permit, Refused> {
        let ask = Ask {
            tenant: owner.clone(),
            lane: Lane::Interactive,
            size: 1,
            cost: 1.0,
            weight: self.policies.of(owner).weight,
        };
        tokio::time::timeout(BODY_MEMORY_WAIT, self.large_answers.acquire(ask))
            .await
            .map_err(|_| Refused::LargeAnswers)
    }

    /// The memory a single request's body (at most 1 MiB: a create, a certificate upload)
    /// holds while it is read, from the process's budget for such bodies (`CSRD_BODY_MEMORY_MIB`,
    /// 64 MiB: four thousand bodies of the usual size at a time, or 64 of the largest; by the
    /// same rules as large bodies), waiting up to 30 s for room: ten thousand connections
    /// sending bodies slowly hold what they sent, at most that budget.
    pub fn body_reservation(&self, owner: &Owner) -> BodyReservation {
        BodyReservation {
            memory: self.small_bodies.reserve(owner),
            per_body_byte: 1,
            step: SMALL_BODY_STEP,
            wait: BODY_MEMORY_WAIT,
        }
    }

    /// Admits one read of a batch's results (the one read whose page can be tens of MB): a
    /// tenant may have `max_reads` (8 by default) on this ingress at once. A read holds at most one part of its page in memory (see
    /// `http::batches`), but a client that opens hundreds at once should not hold hundreds.
    pub fn admit_read(&self, owner: &Owner) -> Result<ReadSlot, Refused> {
        enter(&self.reads_in_flight, owner, self.settings.max_reads)
            .map(ReadSlot)
            .map_err(|_| Refused::ReadsInFlight)
    }

    fn enter(&self, owner: &Owner) -> Result<InFlight, Refused> {
        enter(&self.in_flight, owner, self.settings.max_in_flight)
    }

    /// Counts one item against an operator's hourly quota: whether it was counted. Postgres
    /// holds the count (every ingress adds to it); when it does not answer within
    /// [`QUOTA_TIMEOUT`], the item is let through uncounted.
    async fn count_hourly(&self, owner: &Owner, limit: i64) -> Result<bool, Refused> {
        let counted = async {
            let client = self.pool.get().await?;
            tenant_limits::count_hourly_items(&**client, owner, 1, limit).await
        };
        match tokio::time::timeout(QUOTA_TIMEOUT, counted).await {
            Ok(Ok(true)) => Ok(true),
            Ok(Ok(false)) => Err(Refused::HourlyQuota {
                limit,
                retry_after: until_next_hour(),
            }),
            Ok(Err(e)) => {
                warn_uncounted(&ErrorChain(&e).to_string());
                Ok(false)
            }
            Err(_) => {
                warn_uncounted("no answer within 250 ms");
                Ok(false)
            }
        }
    }
}

/// Bytes of body one request-rate unit pays for: a batch costs what sending its bytes as
/// single creates' bodies would (one per MiB, the single-request cap), never its item count.
const BYTES_PER_REQUEST: usize = 1024 * 1024;

/// Batch submissions one tenant may have open at once on one ingress (`csrd batch` sends 4).
pub const MAX_BATCHES_IN_FLIGHT: usize = 8;

/// What a submission holds per byte of its body, measured on the largest bodies (850 items of
/// 150 SANs of 253 characters, 32 MiB): the body, the validated requests (about as large) and
/// the chunks as stored (as large again).
pub const BATCH_MEMORY_PER_BODY_BYTE: usize = 3;

/// Large answers (pages of certificates or CSRs) being sent at once per process: at the
/// largest pages (50 chains of 64 KiB, 3.2 MB) that is 100 MB. An answer a client reads holds
/// its place for the milliseconds it takes to send, so a lone tenant's load of more
/// connections than this waits that long at most.
pub const LARGE_ANSWERS: u32 = 32;

/// How long a single request's body waits for room in the memory budget (as long as its body
/// may take to arrive).
const BODY_MEMORY_WAIT: Duration = Duration::from_secs(30);

/// A large body's reservation grows 64 KiB of body at a time; a single request's, 16 KiB.
const LARGE_BODY_STEP: usize = 64 * 1024;
const SMALL_BODY_STEP: usize = 16 * 1024;

/// What `body_bytes` (rounded up to the next `step`) reserve at `per_body_byte`.
fn reservation_for(body_bytes: usize, per_body_byte: usize, step: usize) -> u64 {
    let steps = body_bytes.div_ceil(step).max(1);
    (steps * step * per_body_byte) as u64
}

/// How long a create waits for Postgres to count it against an hourly quota.
const QUOTA_TIMEOUT: Duration = Duration::from_millis(250);

fn warn_uncounted(why: &str) {
    static UNCOUNTED: crate::log_throttle::LogThrottle = crate::log_throttle::LogThrottle::new();
    if let Some(left_out) = UNCOUNTED.allow() {
        tracing::warn!(
            reason = why,
            left_out,
            "hourly quota not checked; letting the create through"
        );
    }
}

fn enter(
    counts: &Arc<Mutex<HashMap<Owner, usize>>>,
    owner: &Owner,
    max: usize,
) -> Result<InFlight, Refused> {
    let mut in_flight = counts.lock().unwrap_or_else(|p| p.into_inner());
    let n = in_flight.entry(owner.clone()).or_default();
    if max > 0 && *n >= max {
        return Err(Refused::InFlight);
    }
    *n += 1;
    Ok(InFlight {
        counts: counts.clone(),
        owner: owner.clone(),
    })
}

/// How long until the clock hour ends (hourly quotas count per clock hour).
pub fn until_next_hour() -> Duration {
    let now = chrono::Utc::now().timestamp();
    Duration::from_secs(u64::try_from(3600 - now.rem_euclid(3600)).unwrap_or(3600))
}

/// A large submission's place among its tenant's and its body's reservation of the memory
/// budget; both are given back when it is dropped.
pub struct BatchAdmission {
    _open: InFlight,
    pub body: BodyReservation,
}

/// What a request body holds of the memory budget as it is read; given back when dropped.
pub struct BodyReservation {
    memory: Reservation,
    /// What one byte of body costs (three for a batch: the body, the items, what is stored).
    per_body_byte: usize,
    /// Bytes of body one growth of the reservation covers.
    step: usize,
    wait: Duration,
}

impl BodyReservation {
    /// Bytes arrived: `body_bytes` read so far. Reserves what they will cost, 64 KiB at a
    /// time, waiting for room in the tenant's turn.
    pub async fn reserve_for_body(&mut self, body_bytes: usize) -> Result<(), Refused> {
        self.memory.progressed(body_bytes as u64);
        self.memory
            .grow_to(
                reservation_for(body_bytes, self.per_body_byte, self.step),
                self.wait,
            )
            .await
            .map_err(|_| Refused::BatchMemory)
    }

    /// Reserves `extra` bytes beyond what is held (what parsing the body turned out to take
    /// beyond what its bytes were charged for): at once if there is room, else waiting only
    /// if no other request holding memory waits ([`Reservation::grow_holding`]).
    /// `Err(true)`: more than the whole budget (it can never fit); `Err(false)`: no room.
    pub async fn reserve_more(&mut self, extra: usize) -> Result<(), bool> {
        let total = self.memory.bytes().saturating_add(extra as u64);
        if total > self.memory.capacity() {
            return Err(true);
        }
        self.memory
            .grow_holding(total, self.wait)
            .await
            .map_err(|_| false)
    }

    /// The whole budget's size.
    pub fn capacity(&self) -> u64 {
        self.memory.capacity()
    }

    /// The whole body is read (and its memory reserved): the request is no longer stopped to
    /// make room for another tenant.
    pub fn body_read(&mut self) {
        self.memory.done_reading();
    }

    /// Cancelled when the request is stopped while its body stalls, to make room for a tenant
    /// holding less of the budget.
    pub fn stop_token(&self) -> tokio_util::sync::CancellationToken {
        self.memory.stop_token()
    }
}

/// A batch results read's place among its tenant's; given back when dropped (a streamed
/// page holds it until its last byte is sent).
pub struct ReadSlot(#[allow(dead_code, reason = "held for its Drop")] InFlight);

/// One open create of a tenant at this ingress.
struct InFlight {
    counts: Arc<Mutex<HashMap<Owner, usize>>>,
    owner: Owner,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = counts.get_mut(&self.owner) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.owner);
            }
        }
    }
}

/// A create's place in the window and in its tenant's in-flight count; released on drop.
pub struct Ticket {
    _permit: Permit,
    _in_flight: InFlight,
    /// Counted against an hourly quota.
    counted: Option<(Pool, Owner)>,
}

impl Ticket {
    /// Takes back the hourly count of a create that queued nothing after all (a replay of an
    /// earlier create under its Idempotency-Key, or a create refused by the broker).
    pub async fn uncount(&mut self) {
        let Some((pool, owner)) = self.counted.take() else {
            return;
        };
        let uncounted = async {
            let client = pool.get().await?;
            tenant_limits::uncount_hourly_items(&**client, &owner, 1).await
        };
        if let Ok(Err(e)) = tokio::time::timeout(QUOTA_TIMEOUT, uncounted).await {
            warn_uncounted(&ErrorChain(&e).to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::OwnerKind;
    use crate::fairshare::Defaults;

    fn owner(c: char) -> Owner {
        Owner::parse(OwnerKind::Account, &c.to_string().repeat(32)).unwrap()
    }

    /// Limits over a pool that is never connected: none of the paths tested here (in-flight
    /// caps, read slots, the batch budget, the window without a quota) reach Postgres.
    fn limits(settings: TenantLimits) -> Limits {
        let pool = crate::db::build_pool("postgres://nobody@127.0.0.1:1/none", 1, "test").unwrap();
        Limits::new(settings, Policies::new(Defaults::default()), pool)
    }

    #[test]
    fn a_body_reserves_what_it_costs_a_step_at_a_time() {
        let large = |bytes| reservation_for(bytes, 3, LARGE_BODY_STEP);
        assert_eq!(large(0), 3 << 16);
        assert_eq!(large(1), 3 << 16);
        assert_eq!(large((1 << 16) + 1), 6 << 16);
        assert_eq!(large(32 * 1024 * 1024), 96 << 20);
        assert_eq!(reservation_for(300, 1, SMALL_BODY_STEP), 16 << 10);
    }

    #[test]
    fn refusals_name_their_limit_and_a_retry_of_at_least_a_second() {
        let rate = Refused::Rate {
            retry_after: Duration::from_millis(10),
        };
        assert_eq!((rate.limit(), rate.retry_after_secs()), ("rate", 1));
        let quota = Refused::HourlyQuota {
            limit: 5,
            retry_after: Duration::from_millis(2_500),
        };
        assert_eq!(quota.retry_after_secs(), 3);
        let outstanding = Refused::Outstanding {
            outstanding: 10,
            limit: 5,
        };
        assert_eq!(outstanding.retry_after_secs(), 10);
        assert!(until_next_hour() <= Duration::from_secs(3600));
    }

    #[tokio::test]
    async fn reads_are_capped_per_tenant_and_given_back_when_dropped() {
        let limits = limits(TenantLimits {
            max_reads: 2,
            ..TenantLimits::default()
        });
        let (a, b) = (owner('a'), owner('b'));
        let first = limits.admit_read(&a).unwrap();
        let _second = limits.admit_read(&a).unwrap();
        assert_eq!(limits.admit_read(&a).err(), Some(Refused::ReadsInFlight));
        assert!(limits.admit_read(&b).is_ok(), "another tenant has its own");
        drop(first);
        assert!(limits.admit_read(&a).is_ok());
    }

    #[tokio::test]
    async fn creates_in_flight_are_capped_per_tenant() {
        let limits = limits(TenantLimits {
            max_in_flight: 1,
            ..TenantLimits::default()
        });
        let wait = Duration::from_secs(1);
        let ticket = limits
            .admit_create(&owner('a'), KeyType::P256v1, wait)
            .await
            .unwrap();
        let refused = limits
            .admit_create(&owner('a'), KeyType::P256v1, wait)
            .await;
        assert_eq!(refused.err(), Some(Refused::InFlight));
        drop(ticket);
        assert!(
            limits
                .admit_create(&owner('a'), KeyType::P256v1, wait)
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn a_create_that_finds_no_room_in_the_window_is_refused_after_its_wait() {
        // A window of one P-256 create: a second create of the same tenant waits, then 429.
        let limits = limits(TenantLimits {
            window: KeyType::P256v1.cost(),
            ..TenantLimits::default()
        });
        let wait = Duration::from_millis(50);
        let _held = limits
            .admit_create(&owner('a'), KeyType::P256v1, wait)
            .await
            .unwrap();
        let refused = limits
            .admit_create(&owner('a'), KeyType::P256v1, wait)
            .await;
        assert_eq!(refused.err(), Some(Refused::QueueWait));
    }

    #[tokio::test]
    async fn a_key_type_dearer_than_half_the_window_still_has_four_in_flight() {
        // RSA-4096 costs more than half the default window: whole, one would fill it and the
        // workers would make a lone tenant's keys one at a time.
        let limits = limits(TenantLimits::default());
        assert!(KeyType::Rsa4096.cost() > TenantLimits::default().window / 2);
        let wait = Duration::from_millis(50);
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(
                limits
                    .admit_create(&owner('a'), KeyType::Rsa4096, wait)
                    .await
                    .unwrap(),
            );
        }
        let refused = limits
            .admit_create(&owner('a'), KeyType::Rsa4096, wait)
            .await;
        assert_eq!(refused.err(), Some(Refused::QueueWait));
    }

    #[tokio::test]
    async fn batch_submissions_are_capped_per_tenant() {
        let limits = limits(TenantLimits::default());
        let wait = Duration::from_millis(50);
        let mut open = Vec::new();
        for _ in 0..MAX_BATCHES_IN_FLIGHT {
            open.push(limits.admit_batch(&owner('a'), wait).unwrap());
        }
        assert!(matches!(
            limits.admit_batch(&owner('a'), wait),
            Err(Refused::InFlight)
        ));
        // The memory budget is the process's: more than it holds waits, then 429.
        let mut big = limits.admit_batch(&owner('b'), wait).unwrap();
        big.body.reserve_for_body(80 * 1024 * 1024).await.unwrap();
        let mut more = limits.admit_batch(&owner('b'), wait).unwrap();
        assert_eq!(
            more.body.reserve_for_body(8 * 1024 * 1024).await,
            Err(Refused::BatchMemory)
        );
    }
}
