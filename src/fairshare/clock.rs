//! Start-time fair queuing's virtual clock (Goyal, Vin and Cheng, 1996): every piece of work a
//! tenant asks for is stamped with a start tag, `max(the tenant's last finish tag, the clock)`,
//! and served in start-tag order; serving it moves the clock to its start tag and the tenant's
//! finish tag to `start + cost / weight`. So backlogged tenants are served in proportion to
//! their weights, whatever their costs, and a tenant that was idle starts at the clock: its
//! idleness earns it no credit, and its past use costs it nothing once the others caught up.
//!
//! Pure bookkeeping (no time, no I/O): the gate and the bulk dispatcher's SQL apply the same
//! rule.

use std::collections::HashMap;
use std::hash::Hash;

/// A weight below this counts as this (a zero weight would divide by zero).
pub const MIN_WEIGHT: f64 = 0.001;

/// Tenants whose finish tag the clock has passed are forgotten once there are this many:
/// forgetting them changes nothing (they would start at the clock anyway).
const REMEMBERED: usize = 1024;

#[derive(Debug)]
pub struct VirtualClock<K> {
    now: f64,
    finish: HashMap<K, f64>,
}

impl<K> Default for VirtualClock<K> {
    fn default() -> Self {
        Self {
            now: 0.0,
            finish: HashMap::new(),
        }
    }
}

impl<K: Hash + Eq + Clone> VirtualClock<K> {
    /// The start tag `tenant`'s next piece of work would get.
    pub fn start_tag(&self, tenant: &K) -> f64 {
        self.finish
            .get(tenant)
            .copied()
            .unwrap_or(self.now)
            .max(self.now)
    }

    /// Serves one piece of `tenant`'s work of `cost` at `weight`; returns its start tag.
    pub fn serve(&mut self, tenant: &K, cost: f64, weight: f64) -> f64 {
        let start = self.start_tag(tenant);
        self.now = start;
        self.finish.insert(
            tenant.clone(),
            start + cost.max(0.0) / weight.max(MIN_WEIGHT),
        );
        if self.finish.len() > REMEMBERED {
            let now = self.now;
            self.finish.retain(|_, f| *f > now);
        }
        start
    }

    /// Corrects a served piece's cost once it is known (`actual - estimated`, in cost units):
    /// work that took longer than estimated delays the tenant's next turn, and shorter work
    /// brings it forward, but never before the clock.
    pub fn correct(&mut self, tenant: &K, delta: f64, weight: f64) {
        if let Some(f) = self.finish.get_mut(tenant) {
            *f = (*f + delta / weight.max(MIN_WEIGHT)).max(self.now);
        }
    }

    pub fn now(&self) -> f64 {
        self.now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Serves `rounds` pieces, always the smallest start tag among the backlogged tenants.
    fn share(tenants: &[(&'static str, f64, f64)], rounds: usize) -> HashMap<&'static str, f64> {
        let mut clock = VirtualClock::default();
        let mut served: HashMap<&'static str, f64> = HashMap::new();
        for _ in 0..rounds {
            let (name, cost, weight) = tenants
                .iter()
                .copied()
                .min_by(|a, b| clock.start_tag(&a.0).total_cmp(&clock.start_tag(&b.0)))
                .unwrap();
            clock.serve(&name, cost, weight);
            *served.entry(name).or_default() += cost;
        }
        served
    }

    #[test]
    fn backlogged_tenants_share_by_weight_whatever_their_costs() {
        let served = share(&[("a", 256.0, 1.0), ("b", 1.0, 1.0)], 10_000);
        let (a, b) = (served["a"], served["b"]);
        assert!((a / b - 1.0).abs() < 0.1, "equal weights: {a} vs {b}");

        let served = share(&[("a", 4.0, 3.0), ("b", 4.0, 1.0)], 4_000);
        let (a, b) = (served["a"], served["b"]);
        assert!((a / b - 3.0).abs() < 0.1, "weights 3:1: {a} vs {b}");
    }

    #[test]
    fn a_tenant_back_from_idle_starts_at_the_clock() {
        let mut clock = VirtualClock::default();
        for _ in 0..100 {
            clock.serve(&"a", 10.0, 1.0);
        }
        // b never ran: it goes next, and gets no credit for the time it was away.
        assert!(clock.start_tag(&"b") < clock.start_tag(&"a"));
        assert_eq!(clock.start_tag(&"b"), clock.now());
    }

    #[test]
    fn a_correction_moves_the_next_turn_but_never_before_the_clock() {
        let mut clock = VirtualClock::default();
        clock.serve(&"a", 10.0, 1.0);
        clock.correct(&"a", 30.0, 1.0);
        assert_eq!(clock.start_tag(&"a"), 40.0);
        clock.correct(&"a", -1000.0, 1.0);
        assert_eq!(clock.start_tag(&"a"), clock.now());
    }
}
