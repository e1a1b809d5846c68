//! The per-tenant request rate, one for all ingress processes.
//!
//! Each tenant has one token bucket, in Postgres (`rate_buckets`). An ingress does not ask
//! Postgres per request: it leases a slice of the bucket (a tenth of a second's worth at the
//! tenant's rate) and spends it locally, leasing the next slice in the background when half is
//! gone. So a tenant spreading its requests over several ingresses draws from one bucket, and
//! Postgres sees a few leases per second per busy tenant and ingress. What a replica holds
//! unspent is lost when it goes idle: at most a tenth of a second's worth each.
//!
//! When Postgres does not answer a lease within [`LEASE_TIMEOUT`] (down, or slow), the ingress
//! falls back to a bucket of its own at the tenant's full rate: the limit then holds per
//! ingress instead of across them (N replicas allow N times the rate) until Postgres answers
//! again. Requests are never refused because Postgres is slow.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::TenantPolicy;
use crate::db::{DbError, Pool, tenant_limits};
use crate::domain::Owner;
use crate::telemetry::ErrorChain;

/// How long a request waits for a lease before its ingress uses its own bucket instead.
pub const LEASE_TIMEOUT: Duration = Duration::from_millis(250);
/// After a failed lease, how long an ingress counts on its own before asking Postgres again.
const FALLBACK_FOR: Duration = Duration::from_secs(1);
/// A lease is this much of a second's worth of the tenant's rate.
const LEASE_SECONDS: f64 = 0.1;
/// Tenants remembered by one ingress before idle ones are forgotten.
const REMEMBERED: usize = 10_000;

#[derive(Default)]
struct Local {
    /// Leased and not spent yet.
    tokens: f64,
    /// The (rate, burst) the tokens were leased under: a changed policy (an operator's
    /// override) drops them, so it applies at once.
    leased_under: Option<(f64, f64)>,
    /// A lease is on its way in the background; `prefetched` wakes those waiting for it.
    prefetching: bool,
    prefetched: Arc<tokio::sync::Notify>,
    /// The shared bucket was found empty: no lease before then.
    empty_until: Option<Instant>,
    /// Postgres did not lease: this ingress counts on its own bucket, and asks Postgres again
    /// in the background from `probe_after` on.
    fallback: bool,
    probe_after: Option<Instant>,
    /// This ingress's own bucket: (tokens, when). It holds at most one lease's worth, so a
    /// brownout hands no tenant a burst on every ingress.
    own_bucket: Option<(f64, Instant)>,
    used_at: Option<Instant>,
}

/// One tenant's state on this ingress.
#[derive(Default)]
struct Slot {
    /// The tenant's tokens. A plain lock, held for bookkeeping only and never across an
    /// await: every request of a busy tenant passes through it.
    local: Mutex<Local>,
    /// One lease made while requests wait, at a time: the tenant's other requests wait for
    /// it rather than each asking Postgres.
    leasing: tokio::sync::Mutex<()>,
}

impl Slot {
    fn lock(&self) -> std::sync::MutexGuard<'_, Local> {
        // Plain bookkeeping under the lock: a poisoned one still holds consistent numbers.
        self.local.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What the tokens at hand say about a request.
enum Attempt {
    Done(Result<(), Duration>),
    /// Nothing at hand: a lease must come first.
    NeedLease,
}

/// Cheap to clone.
#[derive(Clone)]
pub struct SharedRate {
    pool: Pool,
    tenants: Arc<Mutex<HashMap<Owner, Arc<Slot>>>>,
}

fn lease_size(policy: &TenantPolicy) -> f64 {
    (policy.rate * LEASE_SECONDS).clamp(1.0, (policy.burst / 2.0).max(1.0))
}

impl SharedRate {
    pub fn new(pool: Pool) -> Self {
        Self {
            pool,
            tenants: Arc::default(),
        }
    }

    fn slot(&self, owner: &Owner) -> Arc<Slot> {
        let mut tenants = self.tenants.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = tenants.get(owner) {
            return slot.clone();
        }
        if tenants.len() >= REMEMBERED {
            let now = Instant::now();
            tenants.retain(|_, slot| {
                slot.local.try_lock().map_or(true, |l| {
                    l.used_at
                        .is_some_and(|at| now.duration_since(at) < Duration::from_secs(60))
                })
            });
        }
        tenants.entry(owner.clone()).or_default().clone()
    }

    /// Takes `cost` requests from `owner`'s rate, or says how long until it has them.
    pub async fn take(
        &self,
        owner: &Owner,
        cost: f64,
        policy: &TenantPolicy,
    ) -> Result<(), Duration> {
        if policy.rate <= 0.0 {
            return Ok(());
        }
        let slot = self.slot(owner);
        // The common case: tokens at hand, one plain lock, no await.
        if let Attempt::Done(result) = self.try_take(&slot, owner, cost, policy) {
            return result;
        }
        let _leasing = slot.leasing.lock().await;
        // A lease that arrived while this request waited may cover it.
        if let Attempt::Done(result) = self.try_take(&slot, owner, cost, policy) {
            return result;
        }
        // The next slice is on its way in the background: wait for it rather than lease
        // beside it (two leases racing for the last tokens would refuse a request the tenant
        // can afford). Registered under the lock, so its arrival cannot be missed.
        let prefetch = {
            let local = slot.lock();
            local
                .prefetching
                .then(|| local.prefetched.clone().notified_owned())
        };
        if let Some(arrived) = prefetch {
            let _ = tokio::time::timeout(LEASE_TIMEOUT, arrived).await;
            if let Attempt::Done(result) = self.try_take(&slot, owner, cost, policy) {
                return result;
            }
        }
        let want = {
            let local = slot.lock();
            lease_size(policy) + cost - local.tokens
        };
        let leased =
            // Boxed: a lease is a few times a second per tenant, and inline its database query
            // would make every request's future (10,000 may be open) kilobytes larger.
            tokio::time::timeout(LEASE_TIMEOUT, Box::pin(lease(&self.pool, owner, want, policy)))
                .await;
        let now = Instant::now();
        let mut local = slot.lock();
        match leased {
            Ok(Ok((granted, remaining))) => {
                local.tokens += granted;
                if local.tokens >= cost {
                    local.tokens -= cost;
                    return Ok(());
                }
                // Empty: the next token arrives in the shared bucket after this long.
                let wait = wait_for((cost - local.tokens - remaining).max(0.0), policy.rate);
                local.empty_until = Some(now + wait);
                Err(wait)
            }
            Ok(Err(e)) => {
                fall_back(&mut local, now, &ErrorChain(&e).to_string());
                take_own(&mut local, cost, policy, now)
            }
            Err(_) => {
                fall_back(&mut local, now, "no lease within 250 ms");
                take_own(&mut local, cost, policy, now)
            }
        }
    }

    /// Takes `cost` from what this ingress holds for the tenant, if that settles it.
    fn try_take(
        &self,
        slot: &Arc<Slot>,
        owner: &Owner,
        cost: f64,
        policy: &TenantPolicy,
    ) -> Attempt {
        let mut local = slot.lock();
        let now = Instant::now();
        local.used_at = Some(now);
        if local.leased_under != Some((policy.rate, policy.burst)) {
            let (prefetching, prefetched) = (local.prefetching, local.prefetched.clone());
            *local = Local {
                leased_under: Some((policy.rate, policy.burst)),
                used_at: Some(now),
                prefetching,
                prefetched,
                ..Local::default()
            };
        }
        if local.tokens >= cost {
            local.tokens -= cost;
            if local.tokens < lease_size(policy) / 2.0 {
                self.lease_in_background(&mut local, slot, owner, policy);
            }
            return Attempt::Done(Ok(()));
        }
        if local.fallback {
            if local.probe_after.is_none_or(|at| at <= now) {
                self.lease_in_background(&mut local, slot, owner, policy);
            }
            return Attempt::Done(take_own(&mut local, cost, policy, now));
        }
        if let Some(until) = local.empty_until.filter(|until| *until > now) {
            return Attempt::Done(Err(until - now));
        }
        Attempt::NeedLease
    }

    /// Leases the next slice in the background (once half of the last one is spent, or to see
    /// whether Postgres answers again); the tenant's requests go on meanwhile.
    fn lease_in_background(
        &self,
        local: &mut Local,
        slot: &Arc<Slot>,
        owner: &Owner,
        policy: &TenantPolicy,
    ) {
        if local.prefetching {
            return;
        }
        local.prefetching = true;
        let size = lease_size(policy);
        let (pool, slot, owner, policy) = (self.pool.clone(), slot.clone(), owner.clone(), *policy);
        tokio::spawn(async move {
            let leased =
                tokio::time::timeout(LEASE_TIMEOUT, lease(&pool, &owner, size, &policy)).await;
            let mut local = slot.lock();
            local.prefetching = false;
            match leased {
                Ok(Ok((granted, _))) => {
                    local.tokens += granted;
                    local.fallback = false;
                }
                _ if local.fallback => {
                    local.probe_after = Some(Instant::now() + FALLBACK_FOR);
                }
                _ => {}
            }
            local.prefetched.notify_waiters();
        });
    }
}

async fn lease(
    pool: &Pool,
    owner: &Owner,
    want: f64,
    policy: &TenantPolicy,
) -> Result<(f64, f64), DbError> {
    let client = pool.get().await?;
    tenant_limits::lease_tokens(&**client, owner, want, policy.rate, policy.burst).await
}

fn fall_back(local: &mut Local, now: Instant, why: &str) {
    warn_fallback(why);
    local.fallback = true;
    local.probe_after = Some(now + FALLBACK_FOR);
}

/// This ingress's own bucket, at the tenant's full rate (Postgres is not answering).
fn take_own(
    local: &mut Local,
    cost: f64,
    policy: &TenantPolicy,
    now: Instant,
) -> Result<(), Duration> {
    let capacity = lease_size(policy).max(cost);
    let (tokens, at) = local.own_bucket.get_or_insert((capacity, now));
    *tokens = (*tokens + policy.rate * now.duration_since(*at).as_secs_f64()).min(capacity);
    *at = now;
    if *tokens < cost {
        return Err(wait_for(cost - *tokens, policy.rate));
    }
    *tokens -= cost;
    Ok(())
}

/// How long `tokens` take to come at `rate` per second (at least a millisecond, at most an
/// hour: an operator's tiny rate must not overflow a duration).
fn wait_for(tokens: f64, rate: f64) -> Duration {
    Duration::try_from_secs_f64((tokens / rate).clamp(0.001, 3600.0))
        .unwrap_or(Duration::from_secs(3600))
}

fn warn_fallback(why: &str) {
    static FALLBACK: crate::log_throttle::LogThrottle = crate::log_throttle::LogThrottle::new();
    if let Some(left_out) = FALLBACK.allow() {
        tracing::warn!(
            reason = why,
            left_out,
            "rate limit: Postgres did not lease tokens; this ingress limits the tenant on its own until it does"
        );
    }
}
