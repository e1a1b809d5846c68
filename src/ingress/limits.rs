//! Per-tenant limits and fair share at the ingress.
//!
//! - **Rate**: a token bucket per account or zone. Every request costs 1; a batch costs its
//!   item count. A bucket may go into debt (a batch larger than the burst is still accepted
//!   when the bucket is positive), and the tenant then waits until it is paid back: 429 with
//!   `Retry-After`.
//! - **In flight**: single creates a tenant has open at this ingress, at most
//!   `max_in_flight`; more is 429.
//! - **Fair share of the queue**: a tenant's single creates may hold at most `queue_budget`
//!   cost units in the broker and the workers at once (a P-256 key costs 1, an RSA-2048 key
//!   16, its share of CPU). The rest wait here, in the tenant's own FIFO, for the tenant's
//!   earlier creates to finish. So the shared queue never holds more than one budget per
//!   tenant ahead of anyone: another tenant's create waits behind at most that, not behind the
//!   whole flood. A create still waiting when the create wait runs out was never queued, and
//!   is answered 429 (safe to retry).
//!
//! Why here rather than in the worker: the shared jobs queue is FIFO (quorum queues have no
//! priorities), so fairness has to be decided before a job enters it, and the ingress is where
//! the answer to the client is held anyway. The limits are per ingress process; N ingress
//! replicas allow N budgets.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::domain::{KeyType, Owner};

#[derive(Debug, Clone)]
pub struct TenantLimits {
    /// Requests per second per tenant (0: unlimited).
    pub rate_per_sec: f64,
    /// Requests a tenant may send at once after a quiet spell.
    pub burst: f64,
    /// Single creates per tenant open at once (0: unlimited).
    pub max_in_flight: usize,
    /// Cost units of a tenant's single creates in the queue and the workers at once.
    pub queue_budget: u32,
}

impl Default for TenantLimits {
    fn default() -> Self {
        Self {
            rate_per_sec: 0.0,
            burst: 0.0,
            max_in_flight: 0,
            queue_budget: u32::MAX,
        }
    }
}

/// What a create costs against the queue budget: its share of keygen CPU.
pub fn create_cost(key_type: KeyType) -> u32 {
    match key_type {
        KeyType::Rsa2048 => 16,
        _ => 1,
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
}

impl Refused {
    /// Which limit, for the metric.
    pub fn limit(&self) -> &'static str {
        match self {
            Refused::Rate { .. } => "rate",
            Refused::InFlight => "in_flight",
            Refused::QueueWait => "queue_wait",
        }
    }

    pub fn retry_after_secs(&self) -> u64 {
        match self {
            Refused::Rate { retry_after } => retry_after.as_secs_f64().ceil().max(1.0) as u64,
            Refused::InFlight | Refused::QueueWait => 1,
        }
    }
}

/// Token buckets by key, allowed into debt. Full buckets are forgotten when the map grows.
pub struct Buckets {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

const BUCKETS_KEPT: usize = 10_000;

impl Buckets {
    pub fn new(rate_per_sec: f64, burst: f64) -> Self {
        Self {
            rate: rate_per_sec,
            burst: burst.max(1.0),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn unlimited(&self) -> bool {
        self.rate <= 0.0
    }

    /// Takes `cost` from `key`'s bucket if it holds at least one token (it may then go into
    /// debt); else says how long until it does.
    pub fn take(&self, key: &str, cost: f64) -> Result<(), Duration> {
        if self.unlimited() {
            return Ok(());
        }
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= BUCKETS_KEPT && !buckets.contains_key(key) {
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, (tokens, at)| {
                *tokens + rate * now.duration_since(*at).as_secs_f64() < burst
            });
        }
        let (tokens, at) = buckets.entry(key.to_owned()).or_insert((self.burst, now));
        *tokens = (*tokens + self.rate * now.duration_since(*at).as_secs_f64()).min(self.burst);
        *at = now;
        if *tokens < 1.0 {
            return Err(Duration::from_secs_f64((1.0 - *tokens) / self.rate));
        }
        *tokens -= cost;
        Ok(())
    }

    /// Whether `key`'s bucket holds less than one token now (without taking anything).
    pub fn exhausted(&self, key: &str) -> Option<Duration> {
        if self.unlimited() {
            return None;
        }
        let buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let (tokens, at) = buckets.get(key)?;
        let now_tokens = tokens + self.rate * at.elapsed().as_secs_f64();
        (now_tokens < 1.0).then(|| Duration::from_secs_f64((1.0 - now_tokens) / self.rate))
    }
}

#[derive(Default)]
struct Tenant {
    in_flight: usize,
    queued_cost: u32,
    waiting: VecDeque<(u32, oneshot::Sender<()>)>,
}

/// The per-tenant limits of one ingress process.
#[derive(Clone)]
pub struct Limits {
    settings: TenantLimits,
    rates: Arc<Buckets>,
    tenants: Arc<Mutex<HashMap<String, Tenant>>>,
}

impl Limits {
    pub fn new(settings: TenantLimits) -> Self {
        Self {
            rates: Arc::new(Buckets::new(settings.rate_per_sec, settings.burst)),
            settings,
            tenants: Default::default(),
        }
    }

    /// Charges `cost` requests to `owner`'s rate.
    pub fn charge(&self, owner: &Owner, cost: usize) -> Result<(), Refused> {
        self.rates
            .take(&tenant_key(owner), cost as f64)
            .map_err(|retry_after| Refused::Rate { retry_after })
    }

    /// Admits one single create of `cost`: at once when the tenant's queue budget allows,
    /// else after the tenant's earlier creates finish, waiting at most `wait`. The ticket
    /// holds the slot until dropped (when the create has its answer).
    pub async fn admit_create(
        &self,
        owner: &Owner,
        cost: u32,
        wait: Duration,
    ) -> Result<Ticket, Refused> {
        let key = tenant_key(owner);
        let granted = {
            let mut tenants = self.lock();
            let tenant = tenants.entry(key.clone()).or_default();
            if self.settings.max_in_flight > 0 && tenant.in_flight >= self.settings.max_in_flight {
                return Err(Refused::InFlight);
            }
            tenant.in_flight += 1;
            if tenant.waiting.is_empty() && self.fits(tenant, cost) {
                tenant.queued_cost += cost;
                None
            } else {
                let (tx, rx) = oneshot::channel();
                tenant.waiting.push_back((cost, tx));
                Some(rx)
            }
        };
        let mut ticket = Ticket {
            limits: self.clone(),
            key,
            cost: 0,
        };
        match granted {
            None => ticket.cost = cost,
            Some(mut rx) => match tokio::time::timeout(wait, &mut rx).await {
                Ok(Ok(())) => ticket.cost = cost,
                Ok(Err(_)) => return Err(Refused::QueueWait),
                Err(_) => {
                    // A grant may have raced the timeout; grants are sent under the lock.
                    let granted_late = {
                        let _tenants = self.lock();
                        rx.try_recv().is_ok()
                    };
                    if !granted_late {
                        return Err(Refused::QueueWait);
                    }
                    ticket.cost = cost;
                }
            },
        }
        Ok(ticket)
    }

    fn fits(&self, tenant: &Tenant, cost: u32) -> bool {
        tenant.queued_cost == 0
            || tenant.queued_cost.saturating_add(cost) <= self.settings.queue_budget
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Tenant>> {
        self.tenants.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn release(&self, key: &str, cost: u32) {
        let mut tenants = self.lock();
        let Some(tenant) = tenants.get_mut(key) else {
            return;
        };
        tenant.in_flight -= 1;
        tenant.queued_cost -= cost;
        // Hand the freed budget to the tenant's next creates, in order.
        while let Some((next_cost, _)) = tenant.waiting.front() {
            if !self.fits(tenant, *next_cost) {
                break;
            }
            let (next_cost, tx) = tenant.waiting.pop_front().expect("front exists");
            if tx.send(()).is_ok() {
                tenant.queued_cost += next_cost;
            }
        }
        if tenant.in_flight == 0 && tenant.waiting.is_empty() {
            tenants.remove(key);
        }
    }
}

/// A create's place in its tenant's share; released on drop.
pub struct Ticket {
    limits: Limits,
    key: String,
    cost: u32,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.limits.release(&self.key, self.cost);
    }
}

fn tenant_key(owner: &Owner) -> String {
    format!("{}:{}", owner.kind().as_str(), owner.id())
}
