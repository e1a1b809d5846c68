//! Progress on stderr: an indicatif bar (rate, ETA) on a terminal, plain periodic lines
//! otherwise (CI logs, pipes), so the output stays readable either way.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

const PLAIN_EVERY: Duration = Duration::from_secs(2);

pub struct Progress {
    what: &'static str,
    total: u64,
    bar: Option<ProgressBar>,
    plain: Mutex<(Instant, u64)>,
    started: Instant,
}

impl Progress {
    pub fn new(what: &'static str, total: u64, already: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg} [{elapsed_precise}] {wide_bar} {pos}/{len} {per_sec} ETA {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.set_message(what);
            bar.set_position(already);
            bar
        });
        Self {
            what,
            total,
            bar,
            plain: Mutex::new((Instant::now(), already)),
            started: Instant::now(),
        }
    }

    /// `n` more items finished.
    pub fn advance(&self, n: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(n);
            return;
        }
        let mut plain = self.plain.lock().unwrap_or_else(|p| p.into_inner());
        plain.1 += n;
        if plain.0.elapsed() >= PLAIN_EVERY || plain.1 >= self.total {
            plain.0 = Instant::now();
            let secs = self.started.elapsed().as_secs_f64().max(0.001);
            eprintln!(
                "{}: {}/{} ({:.0}/s, {:.1} s)",
                self.what,
                plain.1,
                self.total,
                plain.1 as f64 / secs,
                secs
            );
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }
}
