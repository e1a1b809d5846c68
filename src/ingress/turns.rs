//! Turns taken per key: callers that name the same key run one at a time, callers with other
//! keys never wait for them. Entries exist only while someone holds or waits for their key,
//! so the map is as large as the requests in flight.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

pub struct Turns<K> {
    held: Arc<Mutex<HashMap<K, Arc<tokio::sync::Mutex<()>>>>>,
}

impl<K> Clone for Turns<K> {
    fn clone(&self) -> Self {
        Self {
            held: self.held.clone(),
        }
    }
}

impl<K: Eq + Hash + Clone> Default for Turns<K> {
    fn default() -> Self {
        Self {
            held: Arc::new(Mutex::new(HashMap::new())),
        }
    }
}

/// `key`'s turn, given up when dropped.
pub struct Turn<K: Eq + Hash + Clone> {
    turns: Turns<K>,
    key: K,
    lock: Arc<tokio::sync::Mutex<()>>,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl<K: Eq + Hash + Clone> Turns<K> {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<K, Arc<tokio::sync::Mutex<()>>>> {
        // Every update leaves the map consistent: a poisoned lock still guards it.
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for `key`'s turn (behind those who asked for the same key first).
    pub async fn take(&self, key: K) -> Turn<K> {
        let lock = self.map().entry(key.clone()).or_default().clone();
        let mut turn = Turn {
            turns: self.clone(),
            key,
            lock: lock.clone(),
            guard: None,
        };
        // Dropped while waiting (the request went away), `turn` still removes its entry.
        turn.guard = Some(lock.lock_owned().await);
        turn
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map().len()
    }
}

impl<K: Eq + Hash + Clone> Drop for Turn<K> {
    fn drop(&mut self) {
        self.guard.take();
        let mut map = self.turns.map();
        // The map's own reference and this one: nobody else holds or waits for the key.
        if Arc::strong_count(&self.lock) == 2 {
            map.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn one_key_takes_turns_and_other_keys_never_wait() {
        let turns: Turns<u32> = Turns::default();
        let first = turns.take(1).await;
        // Key 2 is free although key 1 is held.
        tokio::time::timeout(Duration::from_millis(100), turns.take(2))
            .await
            .expect("another key does not wait");
        let waiting = {
            let turns = turns.clone();
            tokio::spawn(async move { turns.take(1).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "the same key waits its turn");
        drop(first);
        let second = tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .unwrap()
            .unwrap();
        drop(second);
        assert_eq!(turns.len(), 0, "no entry outlives its turns");
    }

    #[tokio::test]
    async fn a_waiter_that_gives_up_leaves_nothing_behind() {
        let turns: Turns<u32> = Turns::default();
        let held = turns.take(7).await;
        assert!(
            tokio::time::timeout(Duration::from_millis(20), turns.take(7))
                .await
                .is_err()
        );
        drop(held);
        assert_eq!(turns.len(), 0);
    }
}
