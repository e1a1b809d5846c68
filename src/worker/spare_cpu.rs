//! How many of the machine's cores sat idle lately, from `/proc/stat`.
//!
//! The key pools refill with spare CPU only. A free keygen slot does not mean a free core: a
//! P-256 batch leaves slots free between chunks while its HTTP, Postgres and RabbitMQ work
//! keeps both cores busy, and an RSA refill step there took a core from it. A lone client
//! making RSA keys one at a time, though, leaves a core idle that the refill should use.

use std::time::{Duration, Instant};

/// Samples closer together than this say little (the kernel counts in 10 ms ticks).
const MIN_INTERVAL: Duration = Duration::from_millis(200);

/// The caller's own work ([`SpareCpu::ran`]) counts as spare when it ran on a core nobody
/// else wanted: its thread waited on the run queue for less than a core's share of its run
/// time ([`Step::spare`]). A refill step beside a lone RSA create has the idle core to itself
/// and counts as spare, so the refill goes on; one competing with busy threads waits its turn
/// on every core (with N busy threads on N cores, a third of its run time on two cores, a
/// ninth on eight) and counts as busy, so it stops. Counting every step as busy let the refill
/// run only every other interval beside a lone client (17.3 → 13.9 RSA-2048 creates/s at one
/// connection, 8e4e345); counting a step's wall time, or even its CPU time, as spare kept it
/// running on a saturated machine, where a thread still gets its fair share of the cores.
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

    /// The caller's own work ran `step` since it last asked.
    pub fn ran(&mut self, step: Step) {
        self.own += step.spare(cores());
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

/// What the calling thread did over some work: time on a core and time runnable but waiting
/// for one (`/proc/thread-self/schedstat`, nanoseconds).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Step {
    pub ran: Duration,
    pub waited: Duration,
}

impl Step {
    /// The calling thread's totals so far; `None` where the machine does not say.
    pub fn now() -> Option<Self> {
        schedstat(&std::fs::read_to_string("/proc/thread-self/schedstat").ok()?)
    }

    /// From `before` to `self`.
    pub fn since(self, before: Self) -> Self {
        Self {
            ran: self.ran.saturating_sub(before.ran),
            waited: self.waited.saturating_sub(before.waited),
        }
    }

    /// The run time that was spare on a machine of `cores`: all of it when the thread waited
    /// for a core less than half of what it would wait competing with a busy thread per core
    /// (1/cores of its run time), none otherwise.
    fn spare(self, cores: f64) -> Duration {
        if self.waited.as_secs_f64() * 2.0 * cores <= self.ran.as_secs_f64() {
            self.ran
        } else {
            Duration::ZERO
        }
    }
}

/// "run_ns wait_ns timeslices".
fn schedstat(text: &str) -> Option<Step> {
    let mut fields = text.split_whitespace().map(|f| f.parse::<u64>().ok());
    Some(Step {
        ran: Duration::from_nanos(fields.next()??),
        waited: Duration::from_nanos(fields.next()??),
    })
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
    fn a_step_is_spare_only_when_it_hardly_waited_for_a_core() {
        assert_eq!(
            schedstat("76804 97565 2\n"),
            Some(Step {
                ran: Duration::from_nanos(76804),
                waited: Duration::from_nanos(97565)
            })
        );
        assert_eq!(schedstat("12"), None);
        let ms = Duration::from_millis;
        let step = |ran, waited| Step {
            ran: ms(ran),
            waited: ms(waited),
        };
        // Beside a lone RSA create: the idle core, a few wake-ups of other threads.
        assert_eq!(step(60, 3).spare(2.0), ms(60));
        // Competing with two busy threads on two cores: a third of its time waiting.
        assert_eq!(step(60, 30).spare(2.0), Duration::ZERO);
        // Eight busy threads on eight cores leave it waiting a ninth of its run time.
        assert_eq!(step(80, 10).spare(8.0), Duration::ZERO);
        assert_eq!(step(80, 4).spare(8.0), ms(80));
        if let Some(before) = Step::now() {
            let spin = Instant::now();
            while spin.elapsed() < ms(20) {
                std::hint::black_box(spin.elapsed());
            }
            assert!(Step::now().unwrap().since(before).ran > Duration::ZERO);
        }
    }

    #[test]
    fn the_callers_own_work_counts_as_spare() {
        let mut cpu = SpareCpu::new();
        cpu.ran(Step {
            ran: Duration::from_secs(100),
            waited: Duration::ZERO,
        });
        std::thread::sleep(MIN_INTERVAL + Duration::from_millis(50));
        if std::path::Path::new("/proc/stat").exists() {
            // 100 s of its own in a quarter of a second: every core, and no more.
            assert_eq!(cpu.spare_cores(), Some(cores()));
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
