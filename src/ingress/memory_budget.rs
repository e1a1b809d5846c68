//! The memory large request bodies (batches, bulk certificate uploads) may hold in one
//! process, shared by tenants.
//!
//! - **Reserved as bytes arrive.** A request reserves what its body will cost as the body is
//!   read, in steps of 64 KiB, never from its declared length alone: a client that declares
//!   32 MiB and sends a byte a second holds next to nothing.
//! - **A tenant gets at most its share while others wait.** While nobody waits, a lone tenant
//!   may use the whole budget. Once someone waits, a tenant holding more than its share
//!   (the budget over the tenants holding or waiting) gets no more until the others are
//!   served; waiters are served least-holding tenant first. If the budget is full and the
//!   waiter cannot be served, a *stalled* request (less than [`PROGRESS_BYTES`] in the last
//!   [`STALLED`]) of a tenant over its share that is still reading its body is stopped (429)
//!   to make room: a tenant that fills the budget and stalls, or trickles a byte at a time,
//!   cannot hold everyone else out until its bodies time out, and a body that is arriving at
//!   a usable rate is never stopped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::domain::Owner;

/// A body that received less than [`PROGRESS_BYTES`] in this long is stalled: it may be
/// stopped to make room (a body trickling a byte at a time is stalled too).
pub const STALLED: Duration = Duration::from_millis(500);
/// What a body must receive per [`STALLED`] to be arriving: 8 KiB per half second, 16 KiB/s,
/// far below any link a client uploads 32 MiB over.
pub const PROGRESS_BYTES: u64 = 8 * 1024;

/// How often a waiter looks again for a stalled request to stop (a request stalls without
/// telling anyone).
const LOOK_AGAIN: Duration = Duration::from_millis(250);

#[derive(Clone)]
pub struct MemoryBudget {
    state: Arc<Mutex<State>>,
    epoch: Instant,
}

struct State {
    capacity: u64,
    free: u64,
    /// Bytes each tenant holds.
    held: HashMap<Owner, u64>,
    /// Bytes each reservation holds, by id, as granted here: what goes back when it is
    /// dropped, even if a grant was sent that it never saw (it stopped waiting, or its future
    /// was dropped, between the grant and its next poll).
    holds: HashMap<u64, u64>,
    /// Reservations whose request is still reading its body (the ones that may be stopped).
    reading: HashMap<u64, Reading>,
    /// Asks waiting, in arrival order.
    waiting: Vec<Waiter>,
    /// The one request that may wait for more while it already holds what it needs beyond
    /// its body ([`Reservation::grow_holding`]).
    holder_waiting: Option<u64>,
    next_id: u64,
}

struct Reading {
    owner: Owner,
    bytes: u64,
    stop: CancellationToken,
    /// When bytes last arrived: milliseconds since the budget's epoch.
    progress: Arc<AtomicU64>,
}

struct Waiter {
    id: u64,
    owner: Owner,
    bytes: u64,
    granted: oneshot::Sender<()>,
}

/// Memory held for one request; given back when dropped.
pub struct Reservation {
    budget: MemoryBudget,
    id: u64,
    owner: Owner,
    bytes: u64,
    stop: CancellationToken,
    progress: Arc<AtomicU64>,
    /// The body's length when progress was last recorded.
    marked: u64,
}

/// Why a reservation could not grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoRoom {
    /// No room within the wait.
    Timeout,
    /// Stopped to make room for a tenant holding less.
    Stopped,
}

impl MemoryBudget {
    pub fn new(capacity_bytes: u64) -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                capacity: capacity_bytes.max(1),
                free: capacity_bytes.max(1),
                held: HashMap::new(),
                holds: HashMap::new(),
                reading: HashMap::new(),
                waiting: Vec::new(),
                holder_waiting: None,
                next_id: 0,
            })),
            epoch: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Every update leaves the state consistent: a poisoned lock still guards it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An empty reservation for one of `owner`'s requests, which starts reading its body.
    pub fn reserve(&self, owner: &Owner) -> Reservation {
        let mut state = self.lock();
        let id = state.next_id;
        state.next_id += 1;
        let stop = CancellationToken::new();
        let progress = Arc::new(AtomicU64::new(self.now_ms()));
        state.reading.insert(
            id,
            Reading {
                owner: owner.clone(),
                bytes: 0,
                stop: stop.clone(),
                progress: progress.clone(),
            },
        );
        Reservation {
            budget: self.clone(),
            id,
            owner: owner.clone(),
            bytes: 0,
            stop,
            progress,
            marked: 0,
        }
    }

    /// Bytes not held by anyone.
    pub fn free(&self) -> u64 {
        self.lock().free
    }
}

impl State {
    fn held(&self, owner: &Owner) -> u64 {
        self.held.get(owner).copied().unwrap_or(0)
    }

    /// The budget over the tenants holding memory or waiting for it (and `also`).
    fn share(&self, also: Option<&Owner>) -> u64 {
        let mut tenants: std::collections::HashSet<&Owner> = self.held.keys().collect();
        tenants.extend(self.waiting.iter().map(|w| &w.owner));
        tenants.extend(also);
        self.capacity / tenants.len().max(1) as u64
    }

    fn take(&mut self, id: u64, owner: &Owner, bytes: u64) {
        self.free -= bytes;
        *self.held.entry(owner.clone()).or_default() += bytes;
        *self.holds.entry(id).or_default() += bytes;
        if let Some(r) = self.reading.get_mut(&id) {
            r.bytes += bytes;
        }
    }

    fn give_back(&mut self, id: u64, owner: &Owner, bytes: u64) {
        self.free += bytes;
        if let Some(held) = self.held.get_mut(owner) {
            *held = held.saturating_sub(bytes);
            if *held == 0 {
                self.held.remove(owner);
            }
        }
        self.reading.remove(&id);
    }

    /// Serves waiters, least-holding tenant first, while the first fits; when it does not,
    /// stops a stalled reading request of another tenant over its share (`now_ms`: the
    /// budget's clock).
    fn dispatch(&mut self, now_ms: u64) {
        loop {
            self.waiting.retain(|w| !w.granted.is_closed());
            // A request waiting while it holds memory goes first when it fits: it has its
            // body and is the one that may wait, and what it finishes with comes back.
            let holder = self.holder_waiting.and_then(|h| {
                self.waiting
                    .iter()
                    .position(|w| w.id == h && w.bytes <= self.free)
            });
            let Some(best) = holder.or_else(|| {
                (0..self.waiting.len()).min_by_key(|&i| (self.held(&self.waiting[i].owner), i))
            }) else {
                return;
            };
            let bytes = self.waiting[best].bytes;
            if bytes <= self.free {
                let w = self.waiting.remove(best);
                self.take(w.id, &w.owner, w.bytes);
                if w.granted.send(()).is_err() {
                    // It gave up between the check and the send.
                    self.free += w.bytes;
                    if let Some(held) = self.held.get_mut(&w.owner) {
                        *held = held.saturating_sub(w.bytes);
                    }
                    if let Some(holds) = self.holds.get_mut(&w.id) {
                        *holds = holds.saturating_sub(w.bytes);
                    }
                    if let Some(r) = self.reading.get_mut(&w.id) {
                        r.bytes = r.bytes.saturating_sub(w.bytes);
                    }
                }
                continue;
            }
            let share = self.share(None);
            let waiter = self.waiting[best].owner.clone();
            let stalled = |r: &Reading| {
                r.progress.load(Ordering::Relaxed) + STALLED.as_millis() as u64 <= now_ms
            };
            let victim = self
                .reading
                .values()
                .filter(|r| {
                    r.owner != waiter
                        && r.bytes > 0
                        && !r.stop.is_cancelled()
                        && stalled(r)
                        && self.held(&r.owner) > share
                })
                .max_by_key(|r| r.bytes);
            if let Some(victim) = victim {
                victim.stop.cancel();
            }
            return;
        }
    }
}

impl Reservation {
    /// Grows the reservation to `total` bytes (at most the whole budget), waiting up to
    /// `wait` for room.
    pub async fn grow_to(&mut self, total: u64, wait: Duration) -> Result<(), NoRoom> {
        let rx = {
            let mut state = self.budget.lock();
            let total = total.min(state.capacity);
            if total <= self.bytes {
                return Ok(());
            }
            if self.stop.is_cancelled() {
                return Err(NoRoom::Stopped);
            }
            let delta = total - self.bytes;
            let within_share = state.held(&self.owner) + delta <= state.share(Some(&self.owner));
            if delta <= state.free && (state.waiting.is_empty() || within_share) {
                state.take(self.id, &self.owner, delta);
                self.bytes = total;
                return Ok(());
            }
            let (tx, rx) = oneshot::channel();
            state.waiting.push(Waiter {
                id: self.id,
                owner: self.owner.clone(),
                bytes: delta,
                granted: tx,
            });
            state.dispatch(self.budget.now_ms());
            (rx, delta)
        };
        let (mut rx, delta) = rx;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            tokio::select! {
                granted = &mut rx => {
                    return match granted {
                        Ok(()) => {
                            self.bytes += delta;
                            Ok(())
                        }
                        Err(_) => Err(NoRoom::Timeout),
                    };
                }
                () = self.stop.cancelled() => return Err(NoRoom::Stopped),
                () = tokio::time::sleep(LOOK_AGAIN) => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(NoRoom::Timeout);
                    }
                    // A request may have stalled since: look for one to stop.
                    self.budget.lock().dispatch(self.budget.now_ms());
                }
            }
        }
    }

    /// Grows the reservation to `total` bytes if there is room now, without waiting: for a
    /// request that already holds memory (waiting while holding it is how two requests would
    /// wait for each other).
    pub fn try_grow_to(&mut self, total: u64) -> Result<(), NoRoom> {
        let mut state = self.budget.lock();
        if total <= self.bytes {
            return Ok(());
        }
        if self.stop.is_cancelled() {
            return Err(NoRoom::Stopped);
        }
        let delta = total - self.bytes;
        let within_share = state.held(&self.owner) + delta <= state.share(Some(&self.owner));
        if total <= state.capacity
            && delta <= state.free
            && (state.waiting.is_empty() || within_share)
        {
            state.take(self.id, &self.owner, delta);
            self.bytes = total;
            Ok(())
        } else {
            Err(NoRoom::Timeout)
        }
    }

    /// Grows the reservation to `total` bytes for a request whose body is read and that
    /// needs more (what parsing it turned out to take). Room free now is taken at once.
    /// Otherwise one such request at a time may wait, up to `wait`, and only while no other
    /// request waits for memory; the others are refused at once. While it waits it is served
    /// first whenever it fits. Two requests that each hold what the other needs would otherwise either wait for
    /// each other or, refusing each other at once, both fail; this way the one that waits gets
    /// what the refused ones give back.
    pub async fn grow_holding(&mut self, total: u64, wait: Duration) -> Result<(), NoRoom> {
        match self.try_grow_to(total) {
            Err(NoRoom::Timeout) if total <= self.capacity() => {}
            other => return other,
        }
        {
            let mut state = self.budget.lock();
            // Another holder waiting, or any request waiting for room to read its body: this
            // one would wait on what they hold while they wait on it.
            if state.holder_waiting.is_some_and(|id| id != self.id) || !state.waiting.is_empty() {
                return Err(NoRoom::Timeout);
            }
            state.holder_waiting = Some(self.id);
        }
        let _turn = HolderTurn {
            budget: self.budget.clone(),
            id: self.id,
        };
        self.grow_to(total, wait).await
    }

    /// The body has `body_bytes` so far: it is arriving (not stalled) each time another
    /// [`PROGRESS_BYTES`] have come.
    pub fn progressed(&mut self, body_bytes: u64) {
        if body_bytes >= self.marked + PROGRESS_BYTES {
            self.marked = body_bytes;
            self.progress.store(self.budget.now_ms(), Ordering::Relaxed);
        }
    }

    /// The body is read: from now on this request is never stopped to make room.
    pub fn done_reading(&mut self) {
        self.budget.lock().reading.remove(&self.id);
    }

    /// Cancelled when this request is stopped to make room for another tenant.
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The whole budget's size.
    pub fn capacity(&self) -> u64 {
        self.budget.lock().capacity
    }
}

/// The turn to wait while holding memory, given up when the wait ends or is abandoned.
struct HolderTurn {
    budget: MemoryBudget,
    id: u64,
}

impl Drop for HolderTurn {
    fn drop(&mut self) {
        let mut state = self.budget.lock();
        if state.holder_waiting == Some(self.id) {
            state.holder_waiting = None;
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut state = self.budget.lock();
        // A grant may have been sent that this reservation never saw (it stopped waiting):
        // what the state says it holds is what goes back.
        let held = state.holds.remove(&self.id).unwrap_or(0).max(self.bytes);
        state.waiting.retain(|w| w.id != self.id);
        state.give_back(self.id, &self.owner, held);
        state.dispatch(self.budget.now_ms());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::OwnerKind;

    fn owner(c: char) -> Owner {
        Owner::parse(OwnerKind::Account, &c.to_string().repeat(32)).unwrap()
    }

    const WAIT: Duration = Duration::from_millis(200);

    #[tokio::test]
    async fn a_lone_tenant_may_use_the_whole_budget_and_gives_it_back() {
        let budget = MemoryBudget::new(100);
        let mut a = budget.reserve(&owner('a'));
        let mut b = budget.reserve(&owner('a'));
        a.grow_to(60, WAIT).await.unwrap();
        b.grow_to(40, WAIT).await.unwrap();
        assert_eq!(budget.free(), 0);
        drop(a);
        assert_eq!(budget.free(), 60);
        drop(b);
        assert_eq!(budget.free(), 100);
    }

    #[tokio::test]
    async fn a_stalled_request_over_its_share_is_stopped_when_another_waits_and_an_arriving_one_is_not()
     {
        let budget = MemoryBudget::new(100);
        let mut stalled = budget.reserve(&owner('a'));
        stalled.grow_to(35, WAIT).await.unwrap();
        // Larger, and over its share too, but its bytes keep arriving.
        let mut arriving = budget.reserve(&owner('c'));
        arriving.grow_to(60, WAIT).await.unwrap();
        let keep_arriving = {
            let progress = arriving.progress.clone();
            let epoch = budget.epoch;
            tokio::spawn(async move {
                loop {
                    progress.store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
        };
        let stop = stalled.stop_token();
        let mut b = budget.reserve(&owner('b'));
        let waiting =
            tokio::spawn(async move { b.grow_to(30, Duration::from_secs(5)).await.map(|()| b) });
        tokio::time::timeout(Duration::from_secs(2), stop.cancelled())
            .await
            .expect("a, over its share of 33 and stalled, was asked to stop");
        assert!(
            !arriving.stop_token().is_cancelled(),
            "c's body is arriving"
        );
        assert_eq!(stalled.grow_to(36, WAIT).await, Err(NoRoom::Stopped));
        drop(stalled);
        let b = waiting.await.unwrap().expect("b got its room");
        assert_eq!(b.bytes(), 30);
        keep_arriving.abort();
    }

    #[test]
    fn growing_without_waiting_takes_room_or_nothing_and_never_queues() {
        let budget = MemoryBudget::new(100);
        let mut a = budget.reserve(&owner('a'));
        let mut b = budget.reserve(&owner('b'));
        assert_eq!(a.try_grow_to(40), Ok(()));
        assert_eq!(b.try_grow_to(40), Ok(()));
        // Each wants more than is left: neither gets it, neither waits, nothing is queued
        // (two holders waiting for each other's room was a deadlock).
        assert_eq!(a.try_grow_to(70), Err(NoRoom::Timeout));
        assert_eq!(b.try_grow_to(70), Err(NoRoom::Timeout));
        assert!(budget.lock().waiting.is_empty());
        assert_eq!(budget.free(), 20);
        drop(b);
        assert_eq!(a.try_grow_to(70), Ok(()));
        assert_eq!(
            a.try_grow_to(101),
            Err(NoRoom::Timeout),
            "more than the budget"
        );
    }

    #[tokio::test]
    async fn of_two_holders_that_each_need_the_others_room_one_waits_and_gets_it() {
        let budget = MemoryBudget::new(100);
        let mut a = budget.reserve(&owner('a'));
        let mut b = budget.reserve(&owner('b'));
        a.grow_to(40, WAIT).await.unwrap();
        b.grow_to(40, WAIT).await.unwrap();
        a.done_reading();
        b.done_reading();
        let waiting =
            tokio::spawn(
                async move { a.grow_holding(70, Duration::from_secs(5)).await.map(|()| a) },
            );
        while budget.lock().holder_waiting.is_none() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // a waits; b, holding what a needs, is refused at once instead of waiting too (or
        // both being refused, as when neither could wait).
        assert_eq!(b.grow_holding(70, WAIT).await, Err(NoRoom::Timeout));
        drop(b);
        let a = waiting.await.unwrap().expect("a got b's room");
        assert_eq!(a.bytes(), 70);
        assert_eq!(budget.lock().holder_waiting, None, "the turn is given back");
        // More than the whole budget never waits.
        let mut c = budget.reserve(&owner('c'));
        assert_eq!(c.grow_holding(101, WAIT).await, Err(NoRoom::Timeout));
        assert_eq!(budget.lock().holder_waiting, None);
    }

    #[test]
    fn a_grant_the_reservation_never_saw_still_goes_back() {
        let budget = MemoryBudget::new(100);
        let mut b = budget.reserve(&owner('b'));
        b.done_reading();
        // Granted while b waits; b's future is dropped before it sees the grant.
        let (granted, _never_read) = oneshot::channel();
        {
            let mut state = budget.lock();
            state.waiting.push(Waiter {
                id: b.id,
                owner: b.owner.clone(),
                bytes: 40,
                granted,
            });
            state.dispatch(0);
        }
        assert_eq!(budget.free(), 60);
        drop(b);
        assert_eq!(budget.free(), 100, "the unseen grant came back");
        assert!(
            budget.lock().held.is_empty(),
            "and b's tenant holds nothing"
        );
    }

    #[tokio::test]
    async fn a_holder_does_not_wait_while_a_body_waits_for_room() {
        let budget = MemoryBudget::new(100);
        let mut a = budget.reserve(&owner('a'));
        a.grow_to(60, WAIT).await.unwrap();
        a.done_reading();
        let mut b = budget.reserve(&owner('b'));
        b.grow_to(30, WAIT).await.unwrap();
        let reading =
            tokio::spawn(async move { b.grow_to(50, Duration::from_secs(5)).await.map(|()| b) });
        while budget.lock().waiting.is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // a waiting for b's room while b waits for a's would hold both for the whole wait (an
        // hour here): a is refused at once, while b still waits.
        assert_eq!(
            a.grow_holding(80, Duration::from_secs(3600)).await,
            Err(NoRoom::Timeout)
        );
        assert!(!reading.is_finished());
        drop(a);
        assert_eq!(reading.await.unwrap().unwrap().bytes(), 50);
    }

    #[tokio::test]
    async fn a_body_trickling_a_byte_at_a_time_is_stalled() {
        let budget = MemoryBudget::new(100);
        let mut trickle = budget.reserve(&owner('a'));
        trickle.grow_to(80, WAIT).await.unwrap();
        let stop = trickle.stop_token();
        let trickling = tokio::spawn(async move {
            for n in 1..=40u64 {
                trickle.progressed(n);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            drop(trickle);
        });
        let mut b = budget.reserve(&owner('b'));
        let waiting =
            tokio::spawn(async move { b.grow_to(40, Duration::from_secs(5)).await.map(|()| b) });
        tokio::time::timeout(Duration::from_secs(3), stop.cancelled())
            .await
            .expect("a byte every 100 ms is not a body arriving");
        // Its request sees the stop and ends, giving its room back.
        trickling.abort();
        assert_eq!(waiting.await.unwrap().unwrap().bytes(), 40);
    }

    #[tokio::test]
    async fn a_request_done_reading_is_never_stopped_and_waiters_time_out() {
        let budget = MemoryBudget::new(100);
        let mut done = budget.reserve(&owner('a'));
        done.grow_to(100, WAIT).await.unwrap();
        done.done_reading();
        let mut b = budget.reserve(&owner('b'));
        assert_eq!(b.grow_to(10, WAIT).await, Err(NoRoom::Timeout));
        assert!(!done.stop_token().is_cancelled());
        drop(b);
        drop(done);
        assert_eq!(budget.free(), 100);
    }

    #[tokio::test]
    async fn while_others_wait_a_tenant_gets_no_more_than_its_share() {
        let budget = MemoryBudget::new(100);
        let mut a = budget.reserve(&owner('a'));
        a.grow_to(40, WAIT).await.unwrap();
        a.done_reading();
        let mut c = budget.reserve(&owner('c'));
        c.grow_to(55, WAIT).await.unwrap();
        c.done_reading();
        // b waits for 20 (5 are free); a, at 40 of a share of 33, may not take those 5.
        let mut b = budget.reserve(&owner('b'));
        let waiting =
            tokio::spawn(async move { b.grow_to(20, Duration::from_secs(5)).await.map(|()| b) });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut a2 = budget.reserve(&owner('a'));
        assert_eq!(
            a2.grow_to(5, Duration::from_millis(50)).await,
            Err(NoRoom::Timeout)
        );
        drop(c);
        assert_eq!(waiting.await.unwrap().unwrap().bytes(), 20);
    }
}
