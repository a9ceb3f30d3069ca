//! Unix time: the one place the agent turns the wall clock into the
//! timestamps its datapoints carry; and the calling thread's CPU time, for
//! the agent's own cost series.
//!
//! A wall clock before 1970 (a host booted without RTC, before NTP) reads
//! as the epoch itself rather than failing: timestamps are labels, and the
//! agent must keep running through a stepped clock.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `t` as time since the unix epoch; zero for a time before it.
pub(crate) fn since_epoch(t: SystemTime) -> Duration {
    t.duration_since(UNIX_EPOCH).unwrap_or_default()
}

/// `t` in unix seconds with sub-second precision.
pub(crate) fn unix_secs(t: SystemTime) -> f64 {
    since_epoch(t).as_secs_f64()
}

/// Now in unix seconds with sub-second precision.
pub(crate) fn now_unix() -> f64 {
    unix_secs(SystemTime::now())
}

/// Now in whole unix seconds (Carbon's timestamps).
pub(crate) fn now_unix_whole() -> i64 {
    since_epoch(SystemTime::now()).as_secs() as i64
}

/// The CPU time the calling thread has used, user and system.
pub(crate) fn thread_cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_before_the_epoch_read_as_the_epoch() {
        assert_eq!(
            since_epoch(UNIX_EPOCH - Duration::from_secs(5)),
            Duration::ZERO
        );
        assert_eq!(unix_secs(UNIX_EPOCH + Duration::from_millis(1_500)), 1.5);
        let (a, b) = (now_unix(), now_unix_whole());
        assert!(a >= b as f64 && a < b as f64 + 2.0, "{a} {b}");
    }
}
