//! Keygen slots (`CSRD_WORKERS` of them) handed out by priority: interactive creates (a client
//! is waiting on the request) before batch items, and the key pool's refill only when nobody
//! waits. A batch therefore never holds the CPU away from a single create for longer than
//! the key generation already running (one RSA key, or one group of P-256 keys, per slot).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// Single creates: a client holds the request open.
    Interactive,
    /// Batch items.
    Bulk,
}

#[derive(Default)]
struct State {
    free: usize,
    interactive: VecDeque<oneshot::Sender<Slot>>,
    bulk: VecDeque<oneshot::Sender<Slot>>,
}

/// The slots of one worker process. Cheap to clone.
#[derive(Clone)]
pub struct KeygenSlots {
    state: Arc<Mutex<State>>,
}

/// One slot, given back when dropped.
pub struct Slot {
    slots: Option<KeygenSlots>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(slots) = self.slots.take() {
            slots.give_back();
        }
    }
}

impl KeygenSlots {
    pub fn new(n: usize) -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                free: n.max(1),
                ..Default::default()
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn slot(&self) -> Slot {
        Slot {
            slots: Some(self.clone()),
        }
    }

    /// Waits for a slot; interactive waiters are served before bulk ones.
    pub async fn acquire(&self, priority: Priority) -> Slot {
        loop {
            if let Ok(slot) = self.request(priority).await {
                return slot;
            }
            // Our request was dropped unanswered (cannot happen while we wait): ask again.
        }
    }

    async fn request(&self, priority: Priority) -> Result<Slot, oneshot::error::RecvError> {
        let rx = {
            let mut state = self.lock();
            let ahead = match priority {
                Priority::Interactive => !state.interactive.is_empty(),
                Priority::Bulk => !state.interactive.is_empty() || !state.bulk.is_empty(),
            };
            if state.free > 0 && !ahead {
                state.free -= 1;
                return Ok(self.slot());
            }
            let (tx, rx) = oneshot::channel();
            match priority {
                Priority::Interactive => state.interactive.push_back(tx),
                Priority::Bulk => state.bulk.push_back(tx),
            }
            rx
        };
        rx.await
    }

    /// A slot if one is free and nobody is waiting (the key pool's refill: lowest priority).
    pub fn try_acquire(&self) -> Option<Slot> {
        let mut state = self.lock();
        if state.free > 0 && state.interactive.is_empty() && state.bulk.is_empty() {
            state.free -= 1;
            Some(self.slot())
        } else {
            None
        }
    }

    fn give_back(&self) {
        let mut state = self.lock();
        loop {
            let next = match state.interactive.pop_front() {
                Some(tx) => tx,
                None => match state.bulk.pop_front() {
                    Some(tx) => tx,
                    None => {
                        state.free += 1;
                        return;
                    }
                },
            };
            match next.send(self.slot()) {
                Ok(()) => return,
                // The waiter is gone: `send` hands the slot back, and dropping it would
                // re-enter this lock, so it is forgotten and the loop tries the next waiter.
                Err(mut slot) => {
                    slot.slots = None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn interactive_waiters_go_before_bulk_ones() {
        let slots = KeygenSlots::new(1);
        let held = slots.acquire(Priority::Bulk).await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let spawn = |p: Priority, name: &'static str| {
            let (slots, order) = (slots.clone(), order.clone());
            tokio::spawn(async move {
                let _slot = slots.acquire(p).await;
                order.lock().unwrap().push(name);
                tokio::time::sleep(Duration::from_millis(10)).await;
            })
        };
        let bulk = spawn(Priority::Bulk, "bulk");
        tokio::time::sleep(Duration::from_millis(20)).await;
        let interactive = spawn(Priority::Interactive, "interactive");
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            slots.try_acquire().is_none(),
            "the refill waits behind both"
        );
        drop(held);
        bulk.await.unwrap();
        interactive.await.unwrap();
        assert_eq!(*order.lock().unwrap(), ["interactive", "bulk"]);
        assert!(slots.try_acquire().is_some());
    }

    #[tokio::test]
    async fn a_slot_whose_waiter_left_goes_to_the_next() {
        let slots = KeygenSlots::new(1);
        let held = slots.acquire(Priority::Interactive).await;
        let gone = {
            let slots = slots.clone();
            tokio::spawn(async move { slots.acquire(Priority::Interactive).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        gone.abort();
        let _ = gone.await;
        let next = {
            let slots = slots.clone();
            tokio::spawn(async move { drop(slots.acquire(Priority::Bulk).await) })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(held);
        tokio::time::timeout(Duration::from_secs(5), next)
            .await
            .expect("the bulk waiter got the slot")
            .unwrap();
        assert!(slots.try_acquire().is_some(), "and gave it back");
    }
}
