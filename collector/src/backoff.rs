//! Capped exponential backoff: the one retry schedule of every connection
//! the agent keeps open (libvirt, Carbon).
//!
//! Each failed attempt doubles the next delay up to a cap; a success
//! resets it. A jitter fraction spreads the delays of many agents retrying
//! against one shared server (Carbon); a per-host daemon reached over a
//! local socket (libvirtd) has one client per host and retries without it.

use std::time::{Duration, SystemTime};

/// A retry schedule; see the module doc.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    /// The delay the next failure waits, before jitter.
    next: Duration,
    /// Where [`Backoff::reset`] goes back to.
    initial: Duration,
    /// The cap.
    max: Duration,
    /// Each delay is scaled by a factor within `1 ± jitter`.
    jitter: f64,
}

impl Backoff {
    /// Starts at `initial`, doubles up to `max`, each delay scaled by up to
    /// `±jitter` (a fraction, e.g. 0.2).
    pub(crate) fn new(initial: Duration, max: Duration, jitter: f64) -> Backoff {
        Backoff {
            next: initial,
            initial,
            max,
            jitter,
        }
    }

    /// The delay before the next attempt; each call doubles the following
    /// one up to the cap.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        if self.jitter == 0.0 {
            return base;
        }
        // Jitter from the clock's nanoseconds: enough to spread a fleet.
        let nanos = crate::clock::since_epoch(SystemTime::now()).subsec_nanos();
        let unit = f64::from(nanos % 1000) / 1000.0; // in [0, 1)
        base.mul_f64(1.0 - self.jitter + 2.0 * self.jitter * unit)
    }

    /// Back to the initial delay (after a successful attempt).
    pub(crate) fn reset(&mut self) {
        self.next = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_with_jitter_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(10), 0.2);
        let bases = [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0];
        for base in bases {
            let d = b.next_delay().as_secs_f64();
            assert!(
                d >= base * 0.8 - 1e-9 && d <= base * 1.2 + 1e-9,
                "{d} not within 20% of {base}"
            );
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(600));
    }

    #[test]
    fn without_jitter_the_schedule_is_exact() {
        let mut b = Backoff::new(Duration::from_millis(40), Duration::from_millis(200), 0.0);
        let got: Vec<u128> = (0..6).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(got, [40, 80, 160, 200, 200, 200]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(40));
    }
}
