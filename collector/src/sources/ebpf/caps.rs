//! Which of the capabilities the probes need the agent has.
//!
//! The agent need not run as root: the packaged systemd unit runs it as
//! its own user with `CAP_BPF`, `CAP_PERFMON` and `CAP_DAC_READ_SEARCH`
//! as ambient capabilities. Before loading anything the loader asks this
//! module which of them are missing from the effective set (read from
//! `/proc/self/status`), so that an agent without them says which one,
//! instead of the kernel's bare `EPERM` from `bpf(2)` or
//! `perf_event_open(2)`. `CAP_SYS_ADMIN` stands in for `CAP_BPF` and
//! `CAP_PERFMON`, as it does in the kernel (`bpf_capable()`,
//! `perfmon_capable()`).

use std::fs;

/// `CAP_SYS_ADMIN` (linux/capability.h).
const CAP_SYS_ADMIN: u32 = 21;
/// `CAP_PERFMON` (Linux 5.8).
const CAP_PERFMON: u32 = 38;
/// `CAP_BPF` (Linux 5.8).
const CAP_BPF: u32 = 39;

/// The effective capability set of this process, as a bit mask; empty
/// if `/proc/self/status` cannot be read (then every check says what is
/// needed rather than guess).
pub(crate) fn effective() -> u64 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| parse_cap_eff(&status))
        .unwrap_or(0)
}

/// The `CapEff:` mask of a `/proc/PID/status` text.
fn parse_cap_eff(status: &str) -> Option<u64> {
    let hex = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// Whether capability `cap` is in the mask `set`.
fn has(set: u64, cap: u32) -> bool {
    set & (1 << cap) != 0
}

/// The capabilities loading and attaching the programs needs that `set`
/// lacks, by name: `CAP_BPF` (maps, programs, links) and `CAP_PERFMON`
/// (tracing programs that read kernel memory, tracepoint attachment),
/// either given by `CAP_SYS_ADMIN` too.
pub(crate) fn missing_for_probes(set: u64) -> Vec<&'static str> {
    let admin = has(set, CAP_SYS_ADMIN);
    let mut missing = Vec::new();
    if !admin && !has(set, CAP_BPF) {
        missing.push("CAP_BPF");
    }
    if !admin && !has(set, CAP_PERFMON) {
        missing.push("CAP_PERFMON");
    }
    missing
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_eff_is_read_from_status() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000000c000000004\n";
        let set = parse_cap_eff(status).unwrap();
        assert!(has(set, CAP_BPF) && has(set, CAP_PERFMON));
        assert!(has(set, 2), "CAP_DAC_READ_SEARCH");
        assert!(!has(set, CAP_SYS_ADMIN));
        assert_eq!(parse_cap_eff("Name:\tx\n"), None);
    }

    #[test]
    fn missing_names_each_capability_and_sys_admin_covers_both() {
        assert_eq!(missing_for_probes(0), ["CAP_BPF", "CAP_PERFMON"]);
        assert_eq!(missing_for_probes(1 << CAP_BPF), ["CAP_PERFMON"]);
        assert_eq!(missing_for_probes(1 << CAP_PERFMON), ["CAP_BPF"]);
        assert!(missing_for_probes((1 << CAP_BPF) | (1 << CAP_PERFMON)).is_empty());
        assert!(missing_for_probes(1 << CAP_SYS_ADMIN).is_empty());
    }
}
