//! A process's CPU slots: one [`FairGate`] of `CSRD_WORKERS` slots that every piece of CPU
//! work a tenant can cause runs in — a worker's keys, and an ingress's chain checks and large
//! body parsing — so tenants share the cores by weight and each is charged the time its work
//! took. Work runs on the blocking pool, never on the async threads.
//!
//! A slot is held briefly: short work asks for one and gives it back ([`CpuSlots::run`]);
//! long sequential work (parsing a 32 MiB body) gives its slot back at a checkpoint every
//! [`TURN`] and asks again ([`CpuSlots::run_in_turns`]), so another tenant's work waits at
//! most a turn behind it.

use std::time::{Duration, Instant};

use super::{Ask, FairGate, Lane, Permit, Policies, units};
use crate::domain::Owner;
use crate::telemetry::spawn_blocking_in_current_span;

/// How long one turn holds a slot before a checkpoint gives it back.
pub const TURN: Duration = Duration::from_millis(4);

/// Cost units of an ask that a tenant holding no slot is granted at once, beyond the cores if
/// need be: a few P-256 or P-384 keys (about 2 ms of work at most; well under a [`TURN`], so
/// work cut into turns still waits for a slot at each one). Without it, a tenant's single
/// create waited up to an RSA-4096 key's time (0.6 s) whenever another tenant's RSA keys held
/// every slot. The overdraft is one such ask per tenant at a time.
pub const CHEAP_OVERDRAFT: f64 = 8.0;

#[derive(Clone)]
pub struct CpuSlots {
    gate: FairGate,
    policies: Policies,
}

impl CpuSlots {
    pub fn new(slots: usize, policies: Policies) -> Self {
        Self {
            gate: FairGate::with_cheap_newcomers_overdrawing(
                u32::try_from(slots).unwrap_or(u32::MAX),
                CHEAP_OVERDRAFT,
            ),
            policies,
        }
    }

    /// The gate itself (the worker asks it for keygen slots directly).
    pub fn gate(&self) -> &FairGate {
        &self.gate
    }

    fn ask(&self, tenant: &Owner, lane: Lane, estimate: Duration) -> Ask {
        Ask {
            tenant: tenant.clone(),
            lane,
            size: 1,
            cost: units(estimate),
            weight: self.policies.weight(tenant),
        }
    }

    /// Runs `work` in one of `tenant`'s fair turns, charged what it took (`estimate` up front).
    pub async fn run<T: Send + 'static>(
        &self,
        tenant: &Owner,
        lane: Lane,
        estimate: Duration,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<(T, Duration), tokio::task::JoinError> {
        let ask = self.ask(tenant, lane, estimate);
        let (weight, charged) = (ask.weight, ask.cost);
        let _slot = self.gate.acquire(ask).await;
        let started = Instant::now();
        let done = spawn_blocking_in_current_span(work).await;
        let took = started.elapsed();
        self.gate.correct(tenant, units(took) - charged, weight);
        done.map(|t| (t, took))
    }

    /// Runs long sequential `work`, which calls [`Turns::checkpoint`] often (between items):
    /// past a [`TURN`] the slot is given back and asked for again.
    pub async fn run_in_turns<T: Send + 'static>(
        &self,
        tenant: &Owner,
        lane: Lane,
        work: impl FnOnce(&mut Turns) -> T + Send + 'static,
    ) -> Result<T, tokio::task::JoinError> {
        let ask = self.ask(tenant, lane, TURN);
        let permit = self.gate.acquire(ask.clone()).await;
        let mut turns = Turns {
            gate: self.gate.clone(),
            ask,
            permit: Some(permit),
            since: Instant::now(),
            runtime: tokio::runtime::Handle::current(),
        };
        spawn_blocking_in_current_span(move || {
            let done = work(&mut turns);
            turns.settle();
            done
        })
        .await
    }
}

/// A blocking task's hold on a CPU slot, taken in turns.
pub struct Turns {
    gate: FairGate,
    ask: Ask,
    permit: Option<Permit>,
    since: Instant,
    runtime: tokio::runtime::Handle,
}

impl Turns {
    /// Gives the slot back and waits for the tenant's next turn, once this one is over.
    pub fn checkpoint(&mut self) {
        if self.since.elapsed() < TURN {
            return;
        }
        self.settle();
        let next = self.gate.acquire(self.ask.clone());
        // On the blocking pool: waiting here holds no async thread.
        self.permit = Some(self.runtime.block_on(next));
        self.since = Instant::now();
    }

    /// Charges the turn so far what it took, and gives its slot back.
    fn settle(&mut self) {
        if self.permit.take().is_some() {
            let took = units(self.since.elapsed());
            self.gate
                .correct(&self.ask.tenant, took - self.ask.cost, self.ask.weight);
        }
    }
}
