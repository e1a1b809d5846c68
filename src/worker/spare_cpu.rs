//! How many of the machine's cores sat idle lately, from `/proc/stat`.
//!
//! The key pools refill with spare CPU only. A free keygen slot does not mean a free core: a
//! P-256 batch leaves slots free between chunks while its HTTP, Postgres and RabbitMQ work
//! keeps both cores busy, and an RSA refill step there took a core from it. A lone client
//! making RSA keys one at a time, though, leaves a core idle that the refill should use.

use std::time::{Duration, Instant};

/// Samples closer together than this say little (the kernel counts in 10 ms ticks).
const MIN_INTERVAL: Duration = Duration::from_millis(200);

/// The caller's own work counts as busy like any other: counting it as spare (it would yield)
/// kept a refill running on a saturated machine, since whatever it took from the load showed
/// up as its own.
pub struct SpareCpu {
    last: Option<(Instant, Ticks)>,
    spare_cores: Option<f64>,
}

#[derive(Clone, Copy)]
struct Ticks {
    idle: u64,
    total: u64,
}

impl SpareCpu {
    pub fn new() -> Self {
        Self {
            last: read().map(|t| (Instant::now(), t)),
            spare_cores: None,
        }
    }

    /// Idle cores over the last interval of at least [`MIN_INTERVAL`]; `None` where the
    /// machine does not say (no `/proc/stat`) or before a first interval has passed.
    pub fn spare_cores(&mut self) -> Option<f64> {
        let now = Instant::now();
        let due = self
            .last
            .is_none_or(|(at, _)| now.duration_since(at) >= MIN_INTERVAL);
        if due && let Some(ticks) = read() {
            if let Some((_, before)) = self.last {
                self.spare_cores = spare(before, ticks, cores());
            }
            self.last = Some((now, ticks));
        }
        self.spare_cores
    }
}

fn cores() -> f64 {
    std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64)
}

fn spare(before: Ticks, after: Ticks, cores: f64) -> Option<f64> {
    let total = after.total.checked_sub(before.total)?;
    let idle = after.idle.checked_sub(before.idle)?;
    (total > 0).then(|| cores * idle as f64 / total as f64)
}

fn read() -> Option<Ticks> {
    parse(&std::fs::read_to_string("/proc/stat").ok()?)
}

/// The aggregate `cpu` line: user nice system idle iowait irq softirq steal.
fn parse(stat: &str) -> Option<Ticks> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    if fields.len() < 5 {
        return None;
    }
    Some(Ticks {
        idle: fields[3] + fields[4],
        total: fields.iter().sum(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_ticks_become_idle_cores() {
        let before = parse("cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3 4 5\n").unwrap();
        let after = parse("cpu  250 0 100 850 50 0 0 0 0 0\n").unwrap();
        // 250 ticks passed on 2 cores, 50 of them idle: a fifth of the machine, 0.4 cores.
        assert_eq!(spare(before, after, 2.0), Some(0.4));
        assert_eq!(spare(after, before, 2.0), None, "counters never go back");
        assert!(parse("intr 1 2 3").is_none());
    }

    #[test]
    fn this_machine_reports_a_figure_after_an_interval() {
        let mut cpu = SpareCpu::new();
        std::thread::sleep(MIN_INTERVAL + Duration::from_millis(50));
        if std::path::Path::new("/proc/stat").exists() {
            let spare = cpu.spare_cores().expect("a figure");
            assert!((0.0..=cores() + 0.01).contains(&spare), "{spare}");
        }
    }
}
