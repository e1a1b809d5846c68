//! Token buckets by key, local to one process: failed authentications per credential and per
//! client address, refused-caller audit events per address.
//!
//! Hand-written rather than `governor`'s keyed limiter because the failed-authentication limit
//! has to *look* before it takes: a caller whose failures used up its bucket is refused before
//! its credential is looked up, while a caller that authenticates costs nothing. governor can
//! only check by consuming.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// Token buckets by key, local to this process (failed authentications per credential,
/// refused callers per address). Full buckets are forgotten when the map grows.
pub struct Buckets {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, tokio::time::Instant)>>,
}

const BUCKETS_KEPT: usize = 10_000;

impl Buckets {
    pub fn new(rate_per_sec: f64, burst: f64) -> Self {
        Self {
            rate: rate_per_sec,
            burst: burst.max(1.0),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn unlimited(&self) -> bool {
        self.rate <= 0.0
    }

    /// Takes `cost` from `key`'s bucket if it holds at least one token (it may then go into
    /// debt); else says how long until it does.
    pub fn take(&self, key: &str, cost: f64) -> Result<(), Duration> {
        if self.unlimited() {
            return Ok(());
        }
        let now = tokio::time::Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= BUCKETS_KEPT && !buckets.contains_key(key) {
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, (tokens, at)| {
                *tokens + rate * now.duration_since(*at).as_secs_f64() < burst
            });
        }
        let (tokens, at) = buckets.entry(key.to_owned()).or_insert((self.burst, now));
        *tokens = (*tokens + self.rate * now.duration_since(*at).as_secs_f64()).min(self.burst);
        *at = now;
        if *tokens < 1.0 {
            return Err(Duration::from_secs_f64((1.0 - *tokens) / self.rate));
        }
        *tokens -= cost;
        Ok(())
    }

    /// Whether `key`'s bucket holds less than one token now (without taking anything).
    pub fn exhausted(&self, key: &str) -> Option<Duration> {
        if self.unlimited() {
            return None;
        }
        let buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let (tokens, at) = buckets.get(key)?;
        let now_tokens = tokens + self.rate * at.elapsed().as_secs_f64();
        (now_tokens < 1.0).then(|| Duration::from_secs_f64((1.0 - now_tokens) / self.rate))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_refuses_once_empty_and_says_for_how_long() {
        // One token per 1,000 s: nothing refills while the test runs.
        let buckets = Buckets::new(0.001, 2.0);
        assert!(buckets.take("a", 1.0).is_ok());
        assert!(buckets.take("a", 1.0).is_ok());
        let wait = buckets.take("a", 1.0).unwrap_err();
        assert!(wait > Duration::from_secs(900) && wait <= Duration::from_secs(1000));
        assert!(buckets.exhausted("a").is_some());
        assert!(buckets.take("b", 1.0).is_ok(), "keys are independent");
    }

    #[tokio::test]
    async fn an_empty_bucket_refills_at_its_rate() {
        // A million tokens a second: a millisecond refills far more than one.
        let buckets = Buckets::new(1e6, 1.0);
        assert!(buckets.take("a", 1.0).is_ok());
        tokio::time::sleep(Duration::from_millis(2)).await;
        assert!(buckets.exhausted("a").is_none());
        assert!(buckets.take("a", 1.0).is_ok());
    }

    #[test]
    fn a_costly_take_goes_into_debt() {
        let buckets = Buckets::new(0.001, 5.0);
        assert!(buckets.take("a", 10.0).is_ok());
        let wait = buckets.exhausted("a").unwrap();
        // Six tokens short at one per 1,000 s.
        assert!(wait > Duration::from_secs(5_900));
    }

    #[test]
    fn looking_takes_nothing_and_zero_rate_is_unlimited() {
        let buckets = Buckets::new(1.0, 1.0);
        assert!(buckets.exhausted("a").is_none());
        assert!(buckets.exhausted("a").is_none());
        assert!(buckets.take("a", 1.0).is_ok());
        let unlimited = Buckets::new(0.0, 1.0);
        for _ in 0..100 {
            assert!(unlimited.take("a", 1.0).is_ok());
        }
        assert!(unlimited.exhausted("a").is_none());
    }

    #[test]
    fn full_buckets_are_forgotten_when_the_map_is_full() {
        let buckets = Buckets::new(1.0, 10.0);
        for i in 0..BUCKETS_KEPT {
            buckets.take(&i.to_string(), 0.0).unwrap();
        }
        buckets.take("one more", 1.0).unwrap();
        assert!(buckets.buckets.lock().unwrap().len() <= 2);
    }
}
