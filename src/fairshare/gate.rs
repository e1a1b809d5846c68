//! A capacity shared by tenants (a worker's keygen slots, an ingress's window of queued work),
//! handed out by start-time fair queuing over per-tenant lines.
//!
//! While nobody waits, every ask is granted at once: a lone tenant gets the whole capacity.
//! Once asks wait, each freed unit goes to the tenant whose next piece of work has the
//! smallest start tag (see [`super::clock`]), so backlogged tenants share by weight; within a
//! tenant, its interactive asks (single creates, a client holds the request open) go before
//! its bulk ones (batch items). A tenant that has been idle gets the next free unit.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use super::clock::VirtualClock;
use crate::domain::Owner;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// Single creates: a client holds the request open.
    Interactive,
    /// Batch items: the client polls.
    Bulk,
}

/// One tenant's ask.
#[derive(Debug, Clone)]
pub struct Ask {
    pub tenant: Owner,
    pub lane: Lane,
    /// Capacity taken while the permit is held.
    pub size: u32,
    /// What the tenant is charged, in cost units (corrected later with [`FairGate::correct`]).
    pub cost: f64,
    pub weight: f64,
}

struct Waiter {
    size: u32,
    cost: f64,
    tx: oneshot::Sender<Permit>,
}

/// A tenant's single creates go first, but never more than this many in a row while its
/// batch items wait: the tenant's own flood of single creates slows its batch, and cannot stop
/// it (a stopped batch would hold its chunks in the workers' bulk prefetch for ever).
const INTERACTIVE_STREAK: u32 = 4;

struct Line {
    weight: f64,
    interactive: VecDeque<Waiter>,
    bulk: VecDeque<Waiter>,
    /// Interactive grants since the last bulk one.
    streak: u32,
}

impl Line {
    fn new(weight: f64) -> Self {
        Self {
            weight,
            interactive: VecDeque::new(),
            bulk: VecDeque::new(),
            streak: 0,
        }
    }

    /// The lane the next grant comes from, waiters that gave up dropped on the way.
    fn next_lane(&mut self) -> Option<Lane> {
        for lane in [&mut self.interactive, &mut self.bulk] {
            while lane.front().is_some_and(|w| w.tx.is_closed()) {
                lane.pop_front();
            }
        }
        match (self.interactive.is_empty(), self.bulk.is_empty()) {
            (true, true) => None,
            (false, true) => Some(Lane::Interactive),
            (true, false) => Some(Lane::Bulk),
            (false, false) if self.streak < INTERACTIVE_STREAK => Some(Lane::Interactive),
            (false, false) => Some(Lane::Bulk),
        }
    }

    /// The next waiter still waiting.
    fn head(&mut self) -> Option<&Waiter> {
        match self.next_lane()? {
            Lane::Interactive => self.interactive.front(),
            Lane::Bulk => self.bulk.front(),
        }
    }

    fn pop(&mut self) -> Option<Waiter> {
        match self.next_lane()? {
            Lane::Interactive => {
                self.streak += 1;
                self.interactive.pop_front()
            }
            Lane::Bulk => {
                self.streak = 0;
                self.bulk.pop_front()
            }
        }
    }

    fn len(&self) -> usize {
        self.interactive.len() + self.bulk.len()
    }
}

struct State {
    /// Capacity not held (below zero while newcomers overdraw it).
    free: i64,
    /// An ask larger than the whole capacity takes all of it (it would never fit otherwise).
    capacity: u32,
    /// A tenant holding nothing is granted an ask costing at most this at once, even beyond
    /// the capacity (the ingress: a light tenant never waits behind a heavy one's backlog; the
    /// CPU slots: a few milliseconds of work never wait for another tenant's RSA key). The
    /// overdraft is at most one ask per tenant. `None`: never.
    newcomer_max_cost: Option<f64>,
    clock: VirtualClock<Owner>,
    /// Tenants with asks waiting (a line whose asks all gave up is removed by `dispatch`).
    lines: HashMap<Owner, Line>,
    held: HashMap<Owner, u32>,
}

impl State {
    fn holds_nothing(&self, tenant: &Owner) -> bool {
        !self.held.contains_key(tenant) && !self.lines.contains_key(tenant)
    }

    fn take(
        &mut self,
        gate: &FairGate,
        tenant: &Owner,
        size: u32,
        cost: f64,
        weight: f64,
    ) -> Permit {
        self.free -= i64::from(size);
        *self.held.entry(tenant.clone()).or_default() += size;
        self.clock.serve(tenant, cost, weight);
        Permit {
            gate: Some(gate.clone()),
            tenant: Some(tenant.clone()),
            size,
        }
    }

    fn give_back(&mut self, tenant: Option<&Owner>, size: u32) {
        self.free += i64::from(size);
        if let Some(tenant) = tenant
            && let Some(held) = self.held.get_mut(tenant)
        {
            *held = held.saturating_sub(size);
            if *held == 0 {
                self.held.remove(tenant);
            }
        }
    }

    /// A tenant that just gave back all it held (and was not granted the freed capacity by
    /// start tag), with an ask at the head of its line that a newcomer would be granted, is a
    /// newcomer again: that ask is granted now by overdraft, as it would have been had it
    /// arrived now (a client with two requests open alternates between them: its second would
    /// otherwise wait behind other tenants' dear work). The freed capacity itself is never
    /// taken this way, so the tenants waiting for it keep their order.
    fn regrant_newcomer(&mut self, gate: &FairGate, tenant: &Owner) {
        let Some(max_cost) = self.newcomer_max_cost else {
            return;
        };
        if self.held.contains_key(tenant) {
            return;
        }
        let Some(line) = self.lines.get_mut(tenant) else {
            return;
        };
        if line.head().is_none_or(|w| w.cost > max_cost) {
            return;
        }
        let weight = line.weight;
        let waiter = line.pop().expect("the head exists");
        if line.len() == 0 {
            self.lines.remove(tenant);
        }
        let permit = self.take(gate, tenant, waiter.size, waiter.cost, weight);
        if let Err(mut permit) = waiter.tx.send(permit) {
            // It gave up meanwhile: defuse the permit (its drop would re-enter this lock).
            permit.gate = None;
            self.give_back(Some(tenant), waiter.size);
        }
    }

    /// Grants waiting asks in start-tag order while the next one fits.
    fn dispatch(&mut self, gate: &FairGate) {
        loop {
            let mut best: Option<(f64, Owner)> = None;
            let mut emptied = Vec::new();
            for (tenant, line) in self.lines.iter_mut() {
                if line.head().is_none() {
                    emptied.push(tenant.clone());
                    continue;
                }
                let start = self.clock.start_tag(tenant);
                if best.as_ref().is_none_or(|(s, _)| start < *s) {
                    best = Some((start, tenant.clone()));
                }
            }
            for tenant in emptied {
                self.lines.remove(&tenant);
            }
            let Some((_, tenant)) = best else { return };
            let line = self.lines.get_mut(&tenant).expect("picked from the lines");
            let size = line.head().map_or(0, |w| w.size);
            if i64::from(size) > self.free {
                return;
            }
            let weight = line.weight;
            let waiter = line.pop().expect("the head exists");
            if line.len() == 0 {
                self.lines.remove(&tenant);
            }
            let permit = self.take(gate, &tenant, waiter.size, waiter.cost, weight);
            if let Err(mut permit) = waiter.tx.send(permit) {
                // It gave up between the check and the send. Dropping the permit would
                // re-enter this lock: defuse it and give its capacity back here.
                permit.gate = None;
                self.give_back(Some(&tenant), waiter.size);
            }
        }
    }
}

/// Cheap to clone; clones share the capacity.
#[derive(Clone)]
pub struct FairGate {
    state: Arc<Mutex<State>>,
}

/// Capacity held; given back when dropped.
pub struct Permit {
    gate: Option<FairGate>,
    tenant: Option<Owner>,
    size: u32,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(gate) = self.gate.take() {
            let mut state = gate.lock();
            state.give_back(self.tenant.as_ref(), self.size);
            // The freed capacity goes by start tag first; a newcomer again only overdraws.
            state.dispatch(&gate);
            if let Some(tenant) = &self.tenant {
                state.regrant_newcomer(&gate, tenant);
            }
        }
    }
}

impl FairGate {
    pub fn new(capacity: u32) -> Self {
        Self::build(capacity, None)
    }

    /// A gate where a tenant holding nothing is granted at once, beyond the capacity if need
    /// be.
    pub fn with_newcomers_overdrawing(capacity: u32) -> Self {
        Self::build(capacity, Some(f64::INFINITY))
    }

    /// A gate where a tenant holding nothing is granted an ask of at most `max_cost` at once,
    /// beyond the capacity if need be; dearer asks, and a tenant's further ones, wait their
    /// turn.
    pub fn with_cheap_newcomers_overdrawing(capacity: u32, max_cost: f64) -> Self {
        Self::build(capacity, Some(max_cost))
    }

    fn build(capacity: u32, newcomer_max_cost: Option<f64>) -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                free: i64::from(capacity.max(1)),
                capacity: capacity.max(1),
                newcomer_max_cost,
                clock: VirtualClock::default(),
                lines: HashMap::new(),
                held: HashMap::new(),
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Every update leaves the state consistent: a poisoned lock still guards it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for the capacity `ask` needs; cancel-safe (a dropped waiter is skipped).
    pub async fn acquire(&self, mut ask: Ask) -> Permit {
        loop {
            let rx = {
                let mut state = self.lock();
                ask.size = ask.size.min(state.capacity);
                let at_once = (state.lines.is_empty() && i64::from(ask.size) <= state.free)
                    || (state.newcomer_max_cost.is_some_and(|max| ask.cost <= max)
                        && state.holds_nothing(&ask.tenant));
                if at_once {
                    return state.take(self, &ask.tenant, ask.size, ask.cost, ask.weight);
                }
                let (tx, rx) = oneshot::channel();
                let waiter = Waiter {
                    size: ask.size,
                    cost: ask.cost,
                    tx,
                };
                let line = state
                    .lines
                    .entry(ask.tenant.clone())
                    .or_insert_with(|| Line::new(ask.weight));
                line.weight = ask.weight;
                match ask.lane {
                    Lane::Interactive => line.interactive.push_back(waiter),
                    Lane::Bulk => line.bulk.push_back(waiter),
                }
                state.dispatch(self);
                rx
            };
            if let Ok(permit) = rx.await {
                return permit;
            }
            // Dropped unanswered: cannot happen while we wait, but asking again is safe.
        }
    }

    /// Capacity nobody is waiting for, charged to no tenant (the key pool's refill: lowest
    /// priority, never ahead of a waiting ask).
    pub fn try_acquire_idle(&self, size: u32) -> Option<Permit> {
        let mut state = self.lock();
        if !state.lines.is_empty() || i64::from(size) > state.free {
            return None;
        }
        state.free -= i64::from(size);
        Some(Permit {
            gate: Some(self.clone()),
            tenant: None,
            size,
        })
    }

    /// Corrects what `tenant` was charged for a piece of work once its real cost is known.
    pub fn correct(&self, tenant: &Owner, delta: f64, weight: f64) {
        self.lock().clock.correct(tenant, delta, weight);
    }

    /// Asks waiting now (some may have given up and not been noticed yet).
    pub fn waiting(&self) -> usize {
        self.lock().lines.values().map(Line::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::AccountId;
    use std::time::Duration;

    fn tenant(c: char) -> Owner {
        Owner::Account(AccountId::parse(&c.to_string().repeat(32)).unwrap())
    }

    fn ask(t: char, lane: Lane, cost: f64) -> Ask {
        Ask {
            tenant: tenant(t),
            lane,
            size: 1,
            cost,
            weight: 1.0,
        }
    }

    /// Spawns `n` asks of `t` that each record their grant in `order` and hold it briefly.
    fn spawn_asks(
        gate: &FairGate,
        order: &Arc<Mutex<Vec<char>>>,
        t: char,
        lane: Lane,
        cost: f64,
        n: usize,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        (0..n)
            .map(|_| {
                let (gate, order) = (gate.clone(), order.clone());
                tokio::spawn(async move {
                    let _permit = gate.acquire(ask(t, lane, cost)).await;
                    order.lock().unwrap().push(t);
                    tokio::time::sleep(Duration::from_millis(2)).await;
                })
            })
            .collect()
    }

    #[tokio::test]
    async fn a_lone_tenant_gets_every_unit_at_once() {
        let gate = FairGate::new(3);
        let held: Vec<Permit> = futures_util::future::join_all(
            (0..3).map(|_| gate.acquire(ask('a', Lane::Bulk, 64.0))),
        )
        .await;
        assert_eq!(held.len(), 3);
        assert!(gate.try_acquire_idle(1).is_none(), "all three are held");
        drop(held);
        assert!(gate.try_acquire_idle(3).is_some());
    }

    #[tokio::test]
    async fn backlogged_tenants_alternate_and_a_newcomer_goes_next() {
        let gate = FairGate::new(1);
        let order = Arc::new(Mutex::new(Vec::new()));
        let held = gate.acquire(ask('a', Lane::Bulk, 1.0)).await;
        let mut tasks = spawn_asks(&gate, &order, 'a', Lane::Bulk, 1.0, 20);
        tokio::time::sleep(Duration::from_millis(20)).await;
        tasks.extend(spawn_asks(&gate, &order, 'b', Lane::Bulk, 1.0, 5));
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(held);
        for t in tasks {
            t.await.unwrap();
        }
        let order = order.lock().unwrap().clone();
        let first_b = order.iter().position(|t| *t == 'b').unwrap();
        assert!(first_b <= 1, "b waited behind a's backlog: {order:?}");
        let last_b = order.iter().rposition(|t| *t == 'b').unwrap();
        assert!(
            last_b < 12,
            "b's five were not interleaved with a's: {order:?}"
        );
    }

    #[tokio::test]
    async fn within_a_tenant_single_creates_go_before_batch_items() {
        let gate = FairGate::new(1);
        let order = Arc::new(Mutex::new(Vec::new()));
        let held = gate.acquire(ask('a', Lane::Bulk, 1.0)).await;
        let mut tasks = spawn_asks(&gate, &order, 'a', Lane::Bulk, 1.0, 3);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let (gate2, order2) = (gate.clone(), order.clone());
        tasks.push(tokio::spawn(async move {
            let _p = gate2.acquire(ask('a', Lane::Interactive, 1.0)).await;
            order2.lock().unwrap().push('i');
        }));
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(held);
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(order.lock().unwrap()[0], 'i');
    }

    #[tokio::test]
    async fn a_tenants_own_single_creates_slow_its_batch_but_never_stop_it() {
        let gate = FairGate::new(1);
        let order = Arc::new(Mutex::new(Vec::new()));
        let held = gate.acquire(ask('a', Lane::Bulk, 1.0)).await;
        let mut tasks = spawn_asks(&gate, &order, 'b', Lane::Bulk, 1.0, 3);
        tokio::time::sleep(Duration::from_millis(20)).await;
        for _ in 0..20 {
            let (gate, order) = (gate.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let _p = gate.acquire(ask('b', Lane::Interactive, 1.0)).await;
                order.lock().unwrap().push('i');
            }));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(held);
        for t in tasks {
            t.await.unwrap();
        }
        let order = order.lock().unwrap().clone();
        let first_batch_item = order.iter().position(|t| *t == 'b').unwrap();
        assert_eq!(
            first_batch_item, INTERACTIVE_STREAK as usize,
            "singles first, but not all of them: {order:?}"
        );
    }

    #[tokio::test]
    async fn weights_split_the_capacity() {
        let gate = FairGate::new(1);
        let order = Arc::new(Mutex::new(Vec::new()));
        let held = gate.acquire(ask('a', Lane::Bulk, 1.0)).await;
        let mut tasks = Vec::new();
        for (t, weight) in [('a', 3.0), ('b', 1.0)] {
            for _ in 0..40 {
                let (gate, order) = (gate.clone(), order.clone());
                tasks.push(tokio::spawn(async move {
                    let mut a = ask(t, Lane::Bulk, 1.0);
                    a.weight = weight;
                    let _p = gate.acquire(a).await;
                    order.lock().unwrap().push(t);
                }));
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(held);
        for t in tasks {
            t.await.unwrap();
        }
        let order = order.lock().unwrap().clone();
        let first_40 = &order[..40];
        let a = first_40.iter().filter(|t| **t == 'a').count();
        assert!(
            (27..=33).contains(&a),
            "3:1 expected, got {a} of 40: {order:?}"
        );
    }

    #[tokio::test]
    async fn a_newcomer_overdraws_a_full_window_and_the_refill_waits() {
        let gate = FairGate::with_newcomers_overdrawing(2);
        let _a = gate
            .acquire(Ask {
                size: 2,
                ..ask('a', Lane::Interactive, 2.0)
            })
            .await;
        let waiting_a = {
            let gate = gate.clone();
            tokio::spawn(async move { gate.acquire(ask('a', Lane::Interactive, 1.0)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(
            gate.waiting(),
            1,
            "a's second ask waits: the window is full"
        );
        let b = tokio::time::timeout(
            Duration::from_secs(1),
            gate.acquire(ask('b', Lane::Interactive, 1.0)),
        )
        .await
        .expect("b holds nothing: granted at once");
        assert!(gate.try_acquire_idle(1).is_none());
        drop(b);
        drop(_a);
        waiting_a.await.unwrap();
    }

    /// The CPU slots: while another tenant's dear work holds every slot, a tenant holding
    /// nothing gets one cheap ask at once; its dear asks wait, and so does its second cheap
    /// one until the first is given back (then it is a newcomer again).
    #[tokio::test]
    async fn only_a_cheap_ask_of_a_tenant_holding_nothing_overdraws() {
        let gate = FairGate::with_cheap_newcomers_overdrawing(1, 8.0);
        let rsa = gate.acquire(ask('a', Lane::Bulk, 2560.0)).await;
        let dear = {
            let gate = gate.clone();
            tokio::spawn(async move { gate.acquire(ask('b', Lane::Interactive, 256.0)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(gate.waiting(), 1, "b's dear ask waits for the slot");
        dear.abort();
        let _ = dear.await;
        let cheap = tokio::time::timeout(
            Duration::from_secs(5),
            gate.acquire(ask('c', Lane::Interactive, 1.0)),
        )
        .await
        .expect("c holds nothing and asks little: granted at once");
        let second = {
            let gate = gate.clone();
            tokio::spawn(async move { gate.acquire(ask('c', Lane::Interactive, 1.0)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !second.is_finished(),
            "c holds a slot now: its next ask waits"
        );
        drop(cheap);
        tokio::time::timeout(Duration::from_secs(5), second)
            .await
            .expect("c's second ask is granted when its first is given back")
            .unwrap();
        drop(rsa);
    }

    /// A tenant that gives back its last slot while it waits with a cheap ask is regranted by
    /// overdraft only: the freed slot still goes to the tenant waiting for it.
    #[tokio::test]
    async fn a_regranted_newcomer_does_not_take_the_freed_slot() {
        let gate = FairGate::with_cheap_newcomers_overdrawing(1, 8.0);
        let first = gate.acquire(ask('c', Lane::Interactive, 1.0)).await;
        let spawn = |t: char, cost: f64| {
            let gate = gate.clone();
            tokio::spawn(async move { gate.acquire(ask(t, Lane::Interactive, cost)).await })
        };
        let dear = spawn('d', 256.0);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let second = spawn('c', 1.0);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(
            gate.waiting(),
            2,
            "d waits for the slot, c for its second ask"
        );
        drop(first);
        let d = tokio::time::timeout(Duration::from_secs(5), dear)
            .await
            .expect("the freed slot goes to d, who waited for it")
            .unwrap();
        let c = tokio::time::timeout(Duration::from_secs(5), second)
            .await
            .expect("c holds nothing again: its cheap ask is granted by overdraft")
            .unwrap();
        drop((c, d));
    }

    #[tokio::test]
    async fn a_waiter_that_gave_up_is_skipped() {
        let gate = FairGate::new(1);
        let held = gate.acquire(ask('a', Lane::Interactive, 1.0)).await;
        let gone = {
            let gate = gate.clone();
            tokio::spawn(async move { gate.acquire(ask('b', Lane::Interactive, 1.0)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        gone.abort();
        let _ = gone.await;
        let next = {
            let gate = gate.clone();
            tokio::spawn(async move { drop(gate.acquire(ask('c', Lane::Bulk, 1.0)).await) })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(held);
        tokio::time::timeout(Duration::from_secs(5), next)
            .await
            .expect("c got the unit")
            .unwrap();
        assert!(gate.try_acquire_idle(1).is_some(), "and gave it back");
        assert_eq!(gate.waiting(), 0);
    }
}
