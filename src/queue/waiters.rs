//! Requests waiting for their job's completion, by CSR id. Several requests may wait for one
//! id (concurrent retries with one Idempotency-Key); an event wakes them all.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use crate::domain::{Completion, CsrId, JobOutcome};

type Senders = HashMap<CsrId, Vec<(u64, oneshot::Sender<JobOutcome>)>>;

#[derive(Clone, Default)]
pub struct Waiters {
    map: Arc<Mutex<Senders>>,
    next: Arc<AtomicU64>,
}

/// One registered wait. Dropping it (request finished or cancelled) unregisters it.
pub struct Waiter {
    id: CsrId,
    token: u64,
    rx: Option<oneshot::Receiver<JobOutcome>>,
    waiters: Waiters,
}

impl Waiters {
    pub fn register(&self, id: CsrId) -> Waiter {
        let (tx, rx) = oneshot::channel();
        let token = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().entry(id).or_default().push((token, tx));
        Waiter {
            id,
            token,
            rx: Some(rx),
            waiters: self.clone(),
        }
    }

    /// Wakes every request waiting for this id on this instance; returns how many.
    pub fn complete(&self, completion: Completion) -> usize {
        let senders = self.lock().remove(&completion.id).unwrap_or_default();
        senders
            .into_iter()
            .filter(|(_, tx)| !tx.is_closed())
            .map(|(_, tx)| tx.send(completion.outcome.clone()).is_ok())
            .filter(|sent| *sent)
            .count()
    }

    /// Requests currently waiting (ids with at least one waiter).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Senders> {
        // Each critical section is a single insert or removal, so a poisoned lock still
        // guards a consistent map.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Waiter {
    /// The event, or `None` once the wait ends without one (the sender was dropped) or
    /// `budget` elapses. After the channel has closed, later calls just sleep the budget.
    pub async fn next(&mut self, budget: std::time::Duration) -> Option<JobOutcome> {
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
        let mut map = self.waiters.lock();
        if let Some(list) = map.get_mut(&self.id) {
            list.retain(|(t, _)| *t != self.token);
            if list.is_empty() {
                map.remove(&self.id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn completion_wakes_every_waiter_for_the_id_and_drop_unregisters() {
        let waiters = Waiters::default();
        let id = CsrId::new();
        let mut a = waiters.register(id);
        let mut b = waiters.register(id);
        assert_eq!(
            waiters.complete(Completion {
                id,
                outcome: JobOutcome::Created { csr_pem: None }
            }),
            2
        );
        assert_eq!(
            a.next(Duration::from_secs(1)).await,
            Some(JobOutcome::Created { csr_pem: None })
        );
        assert_eq!(
            b.next(Duration::from_secs(1)).await,
            Some(JobOutcome::Created { csr_pem: None })
        );
        let c = waiters.register(CsrId::new());
        assert_eq!(waiters.len(), 1);
        drop(c);
        drop((a, b));
        assert!(waiters.is_empty());
    }

    #[tokio::test]
    async fn a_dropped_waiter_leaves_the_others_registered() {
        let waiters = Waiters::default();
        let id = CsrId::new();
        let a = waiters.register(id);
        let mut b = waiters.register(id);
        drop(a);
        assert_eq!(
            waiters.complete(Completion {
                id,
                outcome: JobOutcome::Created { csr_pem: None }
            }),
            1
        );
        assert_eq!(
            b.next(Duration::from_secs(1)).await,
            Some(JobOutcome::Created { csr_pem: None })
        );
    }

    #[tokio::test]
    async fn unknown_ids_are_ignored() {
        let waiters = Waiters::default();
        assert_eq!(
            waiters.complete(Completion {
                id: CsrId::new(),
                outcome: JobOutcome::Created { csr_pem: None }
            }),
            0
        );
    }
}
