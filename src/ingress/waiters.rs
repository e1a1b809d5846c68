//! Requests waiting for their completion event, by CSR id.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use crate::amqp::{Completion, Outcome};
use crate::domain::CsrId;

#[derive(Clone, Default)]
pub struct Waiters(Arc<Mutex<HashMap<CsrId, oneshot::Sender<Outcome>>>>);

/// One registered wait. Dropping it (request finished or cancelled) unregisters it.
pub struct Waiter {
    id: CsrId,
    rx: Option<oneshot::Receiver<Outcome>>,
    waiters: Waiters,
}

impl Waiters {
    pub fn register(&self, id: CsrId) -> Waiter {
        let (tx, rx) = oneshot::channel();
        self.lock().insert(id, tx);
        Waiter {
            id,
            rx: Some(rx),
            waiters: self.clone(),
        }
    }

    /// Wakes the request waiting for this id, if this instance holds one.
    pub fn complete(&self, completion: Completion) -> bool {
        let tx = self.lock().remove(&completion.id);
        tx.is_some_and(|tx| tx.send(completion.outcome).is_ok())
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<CsrId, oneshot::Sender<Outcome>>> {
        // A panic while holding this lock cannot leave the map inconsistent (single
        // insert/remove calls), so a poisoned lock is still safe to use.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Waiter {
    /// The event, or `None` once the wait ends without one (the sender was dropped) or
    /// `budget` elapses. After `None` from a closed channel, later calls return at once.
    pub async fn next(&mut self, budget: std::time::Duration) -> Option<Outcome> {
        let Some(rx) = self.rx.as_mut() else {
            tokio::time::sleep(budget).await;
            return None;
        };
        match tokio::time::timeout(budget, rx).await {
            Ok(Ok(outcome)) => {
                self.rx = None;
                Some(outcome)
            }
            Ok(Err(_closed)) => {
                self.rx = None;
                None
            }
            Err(_elapsed) => None,
        }
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        self.waiters.lock().remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn completion_wakes_the_registered_waiter_and_drop_unregisters() {
        let waiters = Waiters::default();
        let id = CsrId::new();
        let mut w = waiters.register(id);
        assert!(waiters.complete(Completion {
            id,
            outcome: Outcome::Created
        }));
        assert_eq!(w.next(Duration::from_secs(1)).await, Some(Outcome::Created));
        let w2 = waiters.register(CsrId::new());
        assert_eq!(waiters.len(), 1);
        drop(w2);
        drop(w);
        assert!(waiters.is_empty());
    }

    #[tokio::test]
    async fn unknown_ids_are_ignored() {
        let waiters = Waiters::default();
        assert!(!waiters.complete(Completion {
            id: CsrId::new(),
            outcome: Outcome::Created
        }));
    }
}
