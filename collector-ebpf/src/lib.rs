//! What the eBPF programs and the agent must agree on: map names and the
//! `#[repr(C)]` layout of every map value.
//!
//! This crate is compiled twice: for the bpf target, as the library of the
//! programs in `main.rs`, and for the host, as a dependency of the agent
//! (`hyper-stats`), with the `user` feature adding `aya::Pod` impls so the
//! agent can read the maps. Anything that both sides compute (the layout,
//! the indexes into the stats array) lives here and only here.
#![no_std]

/// Per-CPU array of `u64` counters, indexed by [`Stat`]: what the programs
/// saw and what they had to drop. Per-CPU so the hot path never contends on
/// a cache line; the agent sums the CPUs.
pub const STATS: &str = "STATS";

/// The counters in [`STATS`], by index.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stat {
    /// `sched:sched_switch` events seen (all tasks, watched or not).
    SwitchEvents = 0,
}

impl Stat {
    /// Every counter, in index order.
    pub const ALL: [Stat; 1] = [Stat::SwitchEvents];

    /// The counter's index in [`STATS`].
    pub const fn index(self) -> u32 {
        self as u32
    }

    /// A stable dotted name for the counter, used for the agent's own stats.
    pub const fn name(self) -> &'static str {
        match self {
            Stat::SwitchEvents => "switch_events",
        }
    }
}

/// Number of entries in [`STATS`]: one per [`Stat`].
pub const STATS_LEN: u32 = Stat::ALL.len() as u32;

/// Program names in the object, one per hook (the name of the function in
/// `main.rs`'s `probes` module).
pub mod program {
    /// `sched:sched_switch` tracepoint.
    pub const SCHED_SWITCH: &str = "sched_switch";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_indexes_are_dense_and_names_unique() {
        for (i, stat) in Stat::ALL.iter().enumerate() {
            assert_eq!(stat.index() as usize, i);
            for other in &Stat::ALL[..i] {
                assert_ne!(stat.name(), other.name());
            }
        }
    }
}
