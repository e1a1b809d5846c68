//! Where a worker's private keys come from: a bounded pool of keys generated ahead of time,
//! or fresh generation when the pool is empty (or disabled).
//!
//! An RSA-2048 key takes tens of milliseconds to make; a worker that made some while idle
//! answers the next RSA create in the time it takes to sign and store. The trade-off: a pooled
//! key waits in this process's memory (zeroized on drop, never written to disk or sent in a
//! message) until a create takes it, so the pool is bounded and small by default; a key is
//! moved out of the pool when taken, so it is used exactly once.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::fairshare::FairGate;

use crate::crypto::{KeygenError, PrivateKey, generate_key};
use crate::domain::KeyType;

/// How long the refiller rests when the pools are full or every keygen slot is busy.
const REFILL_PAUSE: Duration = Duration::from_millis(20);
/// P-256 keys made per refill step (one RSA key per step): a step holds a keygen slot briefly.
const P256_REFILL_STEP: usize = 64;

struct Pool {
    capacity: usize,
    keys: Mutex<Vec<PrivateKey>>,
}

impl Pool {
    fn new(capacity: usize) -> Self {
        Self {
            capacity,
            keys: Mutex::new(Vec::with_capacity(capacity)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<PrivateKey>> {
        // Push and pop only: a poisoned lock still guards a consistent vector.
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn missing(&self) -> usize {
        self.capacity.saturating_sub(self.lock().len())
    }
}

/// The pool sizes, per key type; 0 disables that pool.
#[derive(Debug, Clone, Copy, Default)]
pub struct KeyPoolSizes {
    pub rsa2048: usize,
    pub p256: usize,
}

impl From<&crate::settings::WorkerSettings> for KeyPoolSizes {
    fn from(s: &crate::settings::WorkerSettings) -> Self {
        Self {
            rsa2048: s.key_pool_rsa2048,
            p256: s.key_pool_p256,
        }
    }
}

/// Keys for the jobs of one worker process.
pub struct KeySource {
    rsa2048: Pool,
    p256: Pool,
}

impl KeySource {
    pub fn new(sizes: KeyPoolSizes) -> Arc<Self> {
        Arc::new(Self {
            rsa2048: Pool::new(sizes.rsa2048),
            p256: Pool::new(sizes.p256),
        })
    }

    fn pool(&self, key_type: KeyType) -> &Pool {
        match key_type {
            KeyType::Rsa2048 => &self.rsa2048,
            KeyType::P256v1 => &self.p256,
        }
    }

    /// A key nobody else has or will have: taken out of the pool, or made now. Blocking.
    pub fn take(&self, key_type: KeyType) -> Result<PrivateKey, KeygenError> {
        let pooled = {
            let mut keys = self.pool(key_type).lock();
            let key = keys.pop();
            if key.is_some() {
                crate::metrics::key_pool_depth(key_type.as_str(), keys.len());
            }
            key
        };
        match pooled {
            Some(key) => {
                crate::metrics::key_pool_taken(key_type.as_str());
                Ok(key)
            }
            None => generate_key(key_type),
        }
    }

    /// Keys waiting in the pool.
    pub fn depth(&self, key_type: KeyType) -> usize {
        self.pool(key_type).lock().len()
    }

    /// Tops the pools up one step (one RSA key, or a few P-256 keys), RSA first. Blocking.
    /// Returns whether there was anything to do.
    fn refill_step(&self) -> bool {
        for key_type in [KeyType::Rsa2048, KeyType::P256v1] {
            let pool = self.pool(key_type);
            let wanted = match key_type {
                KeyType::Rsa2048 => pool.missing().min(1),
                KeyType::P256v1 => pool.missing().min(P256_REFILL_STEP),
            };
            if wanted == 0 {
                continue;
            }
            let made: Vec<PrivateKey> = (0..wanted)
                .filter_map(|_| generate_key(key_type).ok())
                .collect();
            let mut keys = pool.lock();
            for key in made {
                if keys.len() < pool.capacity {
                    keys.push(key);
                }
            }
            crate::metrics::key_pool_depth(key_type.as_str(), keys.len());
            return true;
        }
        false
    }

    /// Keeps the pools full until shutdown, at a lower priority than live jobs: a step runs
    /// only in a keygen slot nobody is waiting for (`try_acquire_idle` never jumps the queue of
    /// jobs waiting for a slot), one slot at a time.
    pub async fn refill(self: Arc<Self>, keygen_slots: FairGate, stop: CancellationToken) {
        if self.rsa2048.capacity == 0 && self.p256.capacity == 0 {
            return;
        }
        while !stop.is_cancelled() {
            let worked = match keygen_slots.try_acquire_idle(1) {
                Some(permit) => {
                    let this = self.clone();
                    tokio::task::spawn_blocking(move || {
                        let _permit = permit;
                        this.refill_step()
                    })
                    .await
                    .unwrap_or(false)
                }
                None => false,
            };
            if !worked {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(REFILL_PAUSE) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pooled_key_is_handed_out_once() {
        let keys = KeySource::new(KeyPoolSizes {
            rsa2048: 0,
            p256: 3,
        });
        while keys.refill_step() {}
        assert_eq!(keys.depth(KeyType::P256v1), 3);
        let taken: Vec<Vec<u8>> = (0..5)
            .map(|_| {
                keys.take(KeyType::P256v1)
                    .unwrap()
                    .pkcs8_der
                    .expose()
                    .to_vec()
            })
            .collect();
        assert_eq!(keys.depth(KeyType::P256v1), 0);
        let mut unique = taken.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), taken.len(), "a key was handed out twice");
    }

    #[test]
    fn size_zero_disables_the_pool() {
        let keys = KeySource::new(KeyPoolSizes::default());
        assert!(!keys.refill_step());
        assert_eq!(keys.depth(KeyType::Rsa2048), 0);
        assert!(keys.take(KeyType::P256v1).is_ok(), "generated on demand");
    }

    #[tokio::test]
    async fn the_refiller_fills_only_free_slots_and_stops() {
        let keys = KeySource::new(KeyPoolSizes {
            rsa2048: 1,
            p256: 2,
        });
        let slots = FairGate::new(1);
        let stop = CancellationToken::new();
        let held = slots
            .acquire(crate::fairshare::Ask {
                tenant: crate::domain::Owner::Account(
                    crate::domain::AccountId::parse(&"a".repeat(32)).unwrap(),
                ),
                lane: crate::fairshare::Lane::Interactive,
                size: 1,
                cost: 1.0,
                weight: 1.0,
            })
            .await;
        let refiller = tokio::spawn(keys.clone().refill(slots.clone(), stop.clone()));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(keys.depth(KeyType::P256v1), 0, "no free slot, no refill");
        drop(held);
        for _ in 0..200 {
            if keys.depth(KeyType::Rsa2048) == 1 && keys.depth(KeyType::P256v1) == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(keys.depth(KeyType::Rsa2048), 1);
        assert_eq!(keys.depth(KeyType::P256v1), 2);
        stop.cancel();
        refiller.await.unwrap();
    }
}
