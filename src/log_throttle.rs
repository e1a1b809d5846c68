//! At most one log line per second for a repeated event, carrying how many were left out.
//!
//! Under a flood (a full queue answering thousands of 503s a second, a broker outage) one line
//! per request buries everything else in the log and costs CPU when CPU is short; one line per
//! second with a count says the same.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

pub struct LogThrottle {
    /// The second (Unix time) of the last line written, plus one; 0 before the first.
    last: AtomicU64,
    suppressed: AtomicU64,
}

impl LogThrottle {
    pub const fn new() -> Self {
        Self {
            last: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(left out since the last line)` when a line may be written now, else `None` (and
    /// this event is counted).
    pub fn allow(&self) -> Option<u64> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.allow_at(now)
    }

    fn allow_at(&self, second: u64) -> Option<u64> {
        let stamp = second + 1;
        let last = self.last.load(Ordering::Relaxed);
        if last != stamp
            && self
                .last
                .compare_exchange(last, stamp, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::AcqRel));
        }
        self.suppressed.fetch_add(1, Ordering::AcqRel);
        None
    }
}

impl Default for LogThrottle {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_second_with_the_count_of_the_rest() {
        let t = LogThrottle::new();
        assert_eq!(t.allow_at(100), Some(0));
        for _ in 0..500 {
            assert_eq!(t.allow_at(100), None);
        }
        assert_eq!(t.allow_at(101), Some(500));
        assert_eq!(t.allow_at(101), None);
        assert_eq!(t.allow_at(105), Some(1));
    }
}
