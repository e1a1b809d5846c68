//! Where a worker's private keys come from: a bounded pool of keys generated ahead of time,
//! or fresh generation when the pool is empty (or disabled).
//!
//! An RSA-2048 key takes tens of milliseconds to make; a worker that made some while idle
//! answers the next RSA create in the time it takes to sign and store. The trade-off: a pooled
//! key waits in this process's memory (zeroized on drop, never written to disk or sent in a
//! message) until a create takes it, so the pool is bounded and small by default; a key is
//! moved out of the pool when taken, so it is used exactly once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::spare_cpu::{SpareCpu, Step};
use crate::fairshare::FairGate;

use crate::crypto::{KeygenError, PrivateKey, generate_key};
use crate::domain::KeyType;

/// How long the refiller rests when the pools are full or every keygen slot is busy.
const REFILL_PAUSE: Duration = Duration::from_millis(20);
/// Beside live jobs, the refiller tops up the RSA pools only, and only on spare cores: under a
/// steady load (a batch, a stream of P-256 creates) a free keygen slot between two chunks is
/// not idleness. An RSA refill step there took a core from the load for up to half a second
/// (RSA-4096); a P-256 batch after an RSA burst ran beside 32 RSA-2048 refills. A lone client
/// making RSA keys one at a time leaves a core idle, and the refill uses it (its own steps
/// count as spare when they ran without waiting for a core, so a refill competing for the
/// cores stops: [`SpareCpu`]).
const REFILL_SPARE_CORES: f64 = 0.75;
/// With no live job taking a key for this long, the refiller tops up every pool. The EC pools
/// wait for it: their keys take microseconds to make inline, and refilling them beside a
/// stream of P-256 creates cost more than it saved (0.29 against 0.21 ms of csrd CPU per
/// create, `scripts/bench --only p256`).
const REFILL_QUIET: Duration = Duration::from_millis(250);
/// Keys made per refill step: a step holds a keygen slot for a few milliseconds (one RSA key
/// of any size, 64 P-256 keys or 16 P-384 keys), so a live create waits at most that long
/// for the slot (RSA-4096: a few hundred milliseconds, in one slot of several).
fn refill_step_keys(key_type: KeyType) -> usize {
    match key_type {
        KeyType::P256v1 => 64,
        KeyType::P384 => 16,
        KeyType::Rsa2048 | KeyType::Rsa3072 | KeyType::Rsa4096 => 1,
    }
}

/// Ties between pools equally full go to the first here: the default type, then by size.
const REFILL_ORDER: [KeyType; 5] = [
    KeyType::Rsa2048,
    KeyType::Rsa3072,
    KeyType::Rsa4096,
    KeyType::P384,
    KeyType::P256v1,
];

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

    /// The share of the pool that holds keys, 0 to 1 (1 for a disabled pool).
    fn filled(&self) -> f64 {
        if self.capacity == 0 {
            return 1.0;
        }
        self.lock().len() as f64 / self.capacity as f64
    }
}

/// The pool sizes, per key type; 0 disables that pool.
#[derive(Debug, Clone, Copy, Default)]
pub struct KeyPoolSizes {
    pub rsa2048: usize,
    pub p256: usize,
    pub rsa3072: usize,
    pub rsa4096: usize,
    pub p384: usize,
}

impl KeyPoolSizes {
    fn of(&self, key_type: KeyType) -> usize {
        match key_type {
            KeyType::Rsa2048 => self.rsa2048,
            KeyType::P256v1 => self.p256,
            KeyType::Rsa3072 => self.rsa3072,
            KeyType::Rsa4096 => self.rsa4096,
            KeyType::P384 => self.p384,
        }
    }
}

impl From<&crate::settings::WorkerSettings> for KeyPoolSizes {
    fn from(s: &crate::settings::WorkerSettings) -> Self {
        Self {
            rsa2048: s.key_pool_rsa2048,
            p256: s.key_pool_p256,
            rsa3072: s.key_pool_rsa3072,
            rsa4096: s.key_pool_rsa4096,
            p384: s.key_pool_p384,
        }
    }
}

/// Keys for the jobs of one worker process: a pool per key type, in `KeyType::ALL` order.
pub struct KeySource {
    pools: [Pool; KeyType::ALL.len()],
    /// When a live job last took a key, in milliseconds after `epoch`.
    last_take_ms: AtomicU64,
    epoch: Instant,
}

impl KeySource {
    pub fn new(sizes: KeyPoolSizes) -> Arc<Self> {
        Arc::new(Self {
            pools: KeyType::ALL.map(|k| Pool::new(sizes.of(k))),
            last_take_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        })
    }

    fn pool(&self, key_type: KeyType) -> &Pool {
        let at = KeyType::ALL
            .iter()
            .position(|k| *k == key_type)
            .unwrap_or_default();
        &self.pools[at]
    }

    /// A key nobody else has or will have: taken out of the pool, or made now. Blocking.
    pub fn take(&self, key_type: KeyType) -> Result<PrivateKey, KeygenError> {
        self.last_take_ms
            .store(self.now_ms().max(1), Ordering::Relaxed);
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

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// True when no live job took a key in the last [`REFILL_QUIET`].
    fn quiet(&self) -> bool {
        let last = self.last_take_ms.load(Ordering::Relaxed);
        last == 0 || self.now_ms().saturating_sub(last) >= REFILL_QUIET.as_millis() as u64
    }

    /// Keys waiting in the pool.
    pub fn depth(&self, key_type: KeyType) -> usize {
        self.pool(key_type).lock().len()
    }

    /// Tops the pools up one step (one RSA key, or a few EC keys), the emptiest pool (by the
    /// share of its size) first; the RSA pools only when `rsa_only`. Blocking. Returns whether
    /// there was anything to do.
    ///
    /// Emptiest first, not slowest first: slowest first kept the default type's pool empty for
    /// as long as the RSA-4096 and RSA-3072 pools took to fill (about 14 s of a core here), so
    /// RSA-2048 creates soon after a start or a burst waited for keygen (`scripts/bench`, the
    /// warm-pool row: p50 106 ms).
    fn refill_step(&self, rsa_only: bool) -> bool {
        let emptiest = REFILL_ORDER
            .into_iter()
            .filter(|k| !rsa_only || k.rsa_bits().is_some())
            .map(|k| (k, self.pool(k)))
            .filter(|(_, pool)| pool.missing() > 0)
            .min_by(|(_, a), (_, b)| a.filled().total_cmp(&b.filled()));
        let Some((key_type, pool)) = emptiest else {
            return false;
        };
        let wanted = pool.missing().min(refill_step_keys(key_type));
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
        true
    }

    /// Keeps the pools full until shutdown, at a lower priority than live jobs: a step runs
    /// only on spare cores ([`REFILL_SPARE_CORES`], or no live job for [`REFILL_QUIET`]), in a
    /// keygen slot nobody is waiting for (`try_acquire_idle` never jumps the queue of jobs
    /// waiting for a slot), one slot at a time.
    pub async fn refill(self: Arc<Self>, keygen_slots: FairGate, stop: CancellationToken) {
        if self.pools.iter().all(|p| p.capacity == 0) {
            return;
        }
        let mut cpu = SpareCpu::new();
        while !stop.is_cancelled() {
            let quiet = self.quiet();
            let allowed = quiet
                || cpu
                    .spare_cores()
                    .is_some_and(|spare| spare >= REFILL_SPARE_CORES);
            let idle = if allowed {
                keygen_slots.try_acquire_idle(1)
            } else {
                None
            };
            let worked = match idle {
                Some(permit) => {
                    let this = self.clone();
                    let (worked, step) = tokio::task::spawn_blocking(move || {
                        let _permit = permit;
                        let before = Step::now();
                        let worked = this.refill_step(!quiet);
                        let step = before.zip(Step::now()).map(|(b, a)| a.since(b));
                        (worked, step)
                    })
                    .await
                    .unwrap_or((false, None));
                    cpu.ran(step.unwrap_or_default());
                    worked
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
            p256: 3,
            ..Default::default()
        });
        while keys.refill_step(false) {}
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
        assert!(!keys.refill_step(false));
        assert_eq!(keys.depth(KeyType::Rsa2048), 0);
        assert!(keys.take(KeyType::P256v1).is_ok(), "generated on demand");
    }

    #[tokio::test]
    async fn the_refiller_waits_after_a_live_take() {
        let keys = KeySource::new(KeyPoolSizes {
            p256: 2,
            ..Default::default()
        });
        let slots = FairGate::new(2);
        let stop = CancellationToken::new();
        keys.take(KeyType::P256v1).unwrap();
        let refiller = tokio::spawn(keys.clone().refill(slots.clone(), stop.clone()));
        // A job took a key just now: every slot is free, but the refiller leaves them alone until
        // the load pauses or the CPU is measured spare (no figure before its first interval).
        tokio::time::sleep(REFILL_QUIET / 3).await;
        assert_eq!(
            keys.depth(KeyType::P256v1),
            0,
            "refilled beside a live load"
        );
        for _ in 0..200 {
            if keys.depth(KeyType::P256v1) == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert_eq!(
            keys.depth(KeyType::P256v1),
            2,
            "refilled once the load paused"
        );
        stop.cancel();
        refiller.await.unwrap();
    }

    #[test]
    fn the_emptiest_pool_fills_first_and_the_default_type_wins_a_tie() {
        let keys = KeySource::new(KeyPoolSizes {
            rsa2048: 2,
            rsa3072: 1,
            ..Default::default()
        });
        assert!(keys.refill_step(true));
        assert_eq!(
            keys.depth(KeyType::Rsa2048),
            1,
            "both empty: the default type first"
        );
        assert!(keys.refill_step(true));
        assert_eq!(keys.depth(KeyType::Rsa3072), 1, "half full against empty");
        assert!(keys.refill_step(true));
        assert_eq!(keys.depth(KeyType::Rsa2048), 2);
        assert!(!keys.refill_step(false));
    }

    #[test]
    fn a_step_beside_live_jobs_tops_up_rsa_pools_only() {
        let keys = KeySource::new(KeyPoolSizes {
            rsa2048: 1,
            p256: 2,
            ..Default::default()
        });
        assert!(keys.refill_step(true));
        assert_eq!(keys.depth(KeyType::Rsa2048), 1);
        assert!(!keys.refill_step(true), "the P-256 pool waits for a pause");
        assert_eq!(keys.depth(KeyType::P256v1), 0);
        assert!(keys.refill_step(false));
        assert_eq!(keys.depth(KeyType::P256v1), 2);
    }

    #[tokio::test]
    async fn the_refiller_fills_only_free_slots_and_stops() {
        let keys = KeySource::new(KeyPoolSizes {
            rsa2048: 1,
            p256: 2,
            p384: 2,
            ..Default::default()
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
            if keys.depth(KeyType::Rsa2048) == 1
                && keys.depth(KeyType::P256v1) == 2
                && keys.depth(KeyType::P384) == 2
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(keys.depth(KeyType::Rsa2048), 1);
        assert_eq!(keys.depth(KeyType::P256v1), 2);
        assert_eq!(keys.depth(KeyType::P384), 2);
        assert_eq!(
            keys.depth(KeyType::Rsa4096),
            0,
            "a pool of size 0 stays empty"
        );
        stop.cancel();
        refiller.await.unwrap();
    }
}
