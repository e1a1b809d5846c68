//! The open connections, with a cap. At the cap a new connection takes the place of the oldest
//! one that has no request in progress (idle, or still sending its head): those cost the most
//! descriptors for the least work, and a flood of them must not lock out `/healthz` or a real
//! client. Only when every connection is serving a request is the newcomer refused (503).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::watchdog::ConnState;

pub struct ConnectionTable {
    open: Mutex<BTreeMap<u64, Arc<ConnState>>>,
    cap: usize,
    next_id: AtomicU64,
}

pub enum Admission {
    Admitted(Arc<ConnState>),
    /// Every slot is serving a request.
    Full,
}

impl ConnectionTable {
    pub fn new(cap: usize) -> Self {
        Self {
            open: Mutex::new(BTreeMap::new()),
            cap: cap.max(1),
            next_id: AtomicU64::new(0),
        }
    }

    pub fn cap(&self) -> usize {
        self.cap
    }

    pub fn admit(&self) -> Admission {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if open.len() >= self.cap {
            // Ids grow with time: the first idle one found is the oldest.
            let Some(victim) = open.values().find(|c| !c.is_busy()).map(|c| c.id) else {
                return Admission::Full;
            };
            if let Some(c) = open.remove(&victim) {
                c.evict.cancel();
                crate::metrics::connection_evicted();
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(ConnState::new(id));
        open.insert(id, state.clone());
        Admission::Admitted(state)
    }

    pub fn release(&self, id: u64) {
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_the_cap_the_oldest_idle_connection_makes_room() {
        let table = ConnectionTable::new(2);
        let Admission::Admitted(first) = table.admit() else {
            panic!()
        };
        let Admission::Admitted(second) = table.admit() else {
            panic!()
        };
        let Admission::Admitted(_third) = table.admit() else {
            panic!()
        };
        assert!(first.evict.is_cancelled());
        assert!(!second.evict.is_cancelled());
        assert_eq!(table.len(), 2);
    }
}
