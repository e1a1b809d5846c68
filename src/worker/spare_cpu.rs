//! How many of the machine's cores sat idle lately, from `/proc/stat`.
//!
//! The key pools refill with spare CPU only. A free keygen slot does not mean a free core: a
//! P-256 batch leaves slots free between chunks while its HTTP, Postgres and RabbitMQ work
//! keeps both cores busy, and an RSA refill step there took a core from it. A lone client
//! making RSA keys one at a time, though, leaves a core idle that the refill should use.

use std::time::{Duration, Instant};

/// Samples closer together than this say little (the kernel counts in 10 ms ticks).
const MIN_INTERVAL: Duration = Duration::from_millis(200);

/// The caller's own work ([`SpareCpu::ran`]) counts as spare, by the CPU time its thread got,
/// not by how long it took: a refill thread competing with two busy threads on two cores gets
/// two thirds of a core, under the refiller's threshold (0.75 of a core), and stops, while one
/// beside a lone RSA create gets its whole idle core and goes on. Counting its steps as busy
/// instead let it run only every other interval there (17.3 → 13.9 RSA-2048 creates/s at one
/// connection, 8e4e345); counting their wall time as spare kept it running on a saturated
/// machine, where a step takes long because it waits.
pub struct SpareCpu {
    last: Option<(Instant, Ticks)>,
    spare_cores: Option<f64>,
    /// CPU the caller's own work used since the last sample.
    own: Duration,
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
            own: Duration::ZERO,
        }
    }

    /// The caller's own work used `cpu` of a core since it last asked: spare for others.
    pub fn ran(&mut self, cpu: Duration) {
        self.own += cpu;
    }

    /// Idle cores over the last interval of at least [`MIN_INTERVAL`]; `None` where the
    /// machine does not say (no `/proc/stat`) or before a first interval has passed.
    pub fn spare_cores(&mut self) -> Option<f64> {
        let now = Instant::now();
        let due = self
            .last
            .is_none_or(|(at, _)| now.duration_since(at) >= MIN_INTERVAL);
        if due && let Some(ticks) = read() {
            if let Some((at, before)) = self.last {
                let own = std::mem::take(&mut self.own);
                let own_cores = own.as_secs_f64() / now.duration_since(at).as_secs_f64();
                self.spare_cores =
                    spare(before, ticks, cores()).map(|idle| (idle + own_cores).min(cores()));
            }
            self.last = Some((now, ticks));
        }
        self.spare_cores
    }
}

/// CPU time the calling thread has used (`/proc/thread-self/stat`, in 10 ms ticks); `None`
/// where the machine does not say.
pub fn thread_cpu() -> Option<Duration> {
    thread_ticks(&std::fs::read_to_string("/proc/thread-self/stat").ok()?)
        .map(|ticks| Duration::from_millis(ticks * 10))
}

/// utime + stime: fields 14 and 15, counted after the command name's closing parenthesis
/// (the name itself may hold spaces and parentheses).
fn thread_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
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
    fn a_threads_cpu_is_read_past_a_name_with_spaces_and_parentheses() {
        let stat = "4242 (tokio (blk) 1) R 1 2 3 4 5 6 7 8 9 10 37 5 0 0 20 0 1 0 100";
        assert_eq!(thread_ticks(stat), Some(42));
        assert_eq!(thread_ticks("4242 (x) R 1 2"), None);
        let before = thread_cpu();
        let spin = Instant::now();
        while spin.elapsed() < Duration::from_millis(60) {
            std::hint::black_box(spin.elapsed());
        }
        if let (Some(before), Some(after)) = (before, thread_cpu()) {
            assert!(after > before, "{before:?} → {after:?}");
        }
    }

    #[test]
    fn the_callers_own_work_counts_as_spare() {
        let mut cpu = SpareCpu::new();
        cpu.ran(Duration::from_secs(100));
        std::thread::sleep(MIN_INTERVAL + Duration::from_millis(50));
        if std::path::Path::new("/proc/stat").exists() {
            // 100 s of its own in a quarter of a second: every core, and no more.
            assert_eq!(cpu.spare_cores(), Some(cores()));
            cpu.ran(Duration::ZERO);
            std::thread::sleep(MIN_INTERVAL + Duration::from_millis(50));
            assert!(cpu.spare_cores().unwrap() <= cores() + 0.01, "taken once");
        }
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
