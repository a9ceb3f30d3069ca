//! The `[ebpf]` config section, and how many threads the probes can watch.
//!
//! The kernel maps are sized once, when the probes load: every per-thread
//! map has one slot per watchable thread, and a slot costs about 27 KiB of
//! locked kernel memory (two histograms). By default the agent counts the
//! vCPU threads the host has at that moment (every thread named like
//! QEMU's `CPU <n>/KVM`) and leaves room for as many guests again to
//! start ([`auto_slots`]); `max_watched` fixes the number instead. A host
//! that outgrows its slots is never watched silently short: the threads
//! left out are logged as an error and counted in
//! `agent.ebpf.unwatched_threads` until the agent is restarted with more.

use anyhow::{Result, bail};
use serde::Deserialize;

/// The fewest slots the agent loads with: a host with no guest yet still
/// gets room for 64 guests of 4 vCPUs (7 MiB of kernel memory).
pub(crate) const MIN_SLOTS: u32 = 256;

/// The most slots accepted, 65,536: about 2 GiB of locked kernel memory, 16
/// times the largest hosts our users run (4,096 vCPU threads); a larger
/// value is a typo.
pub(crate) const MAX_SLOTS: u32 = 65_536;

/// Slots are handed out in multiples of this, so a restart with a few more
/// guests usually gets the same size.
pub(crate) const SLOT_GRANULE: u32 = 256;

/// The `[ebpf]` section.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct EbpfConfig {
    /// Slots in the kernel maps (threads watched at once); `None` sizes
    /// them from the host at load time with [`auto_slots`].
    pub(crate) max_watched: Option<u32>,
}

impl EbpfConfig {
    /// Checks the section's ranges.
    pub(crate) fn validate(&self) -> Result<()> {
        if let Some(n) = self.max_watched
            && !(1..=MAX_SLOTS).contains(&n)
        {
            bail!(
                "ebpf.max_watched = {n} is out of range: it must be 1 to {MAX_SLOTS}\n\
                 leave it out to size the maps from the host's vCPU threads"
            );
        }
        Ok(())
    }

    /// The slots to load the probes with, given the vCPU threads the host
    /// has now.
    pub(crate) fn slots(&self, vcpu_threads: usize) -> u32 {
        self.max_watched.unwrap_or_else(|| auto_slots(vcpu_threads))
    }
}

/// Slots for a host with `vcpu_threads` vCPU threads now: those, plus half
/// as many again (at least [`MIN_SLOTS`]) for guests that start later,
/// rounded up to [`SLOT_GRANULE`], at most [`MAX_SLOTS`].
pub(crate) fn auto_slots(vcpu_threads: usize) -> u32 {
    let now = u32::try_from(vcpu_threads).unwrap_or(MAX_SLOTS);
    let room = (now / 2).max(MIN_SLOTS);
    now.saturating_add(room)
        .next_multiple_of(SLOT_GRANULE)
        .min(MAX_SLOTS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_slots_leave_room_for_growth() {
        for (threads, slots) in [
            (0, 256),
            (12, 512),
            (300, 768),
            (1_024, 1_536),
            (4_096, 6_144),
            (100_000, MAX_SLOTS),
        ] {
            assert_eq!(auto_slots(threads), slots, "{threads} threads");
            assert!(auto_slots(threads) as usize > threads.min(MAX_SLOTS as usize / 2));
        }
    }

    #[test]
    fn a_fixed_number_wins_and_is_checked() {
        let fixed = EbpfConfig {
            max_watched: Some(4_000),
        };
        assert_eq!(fixed.slots(10), 4_000);
        assert_eq!(EbpfConfig::default().slots(10), 512);
        for bad in [0, MAX_SLOTS + 1] {
            let err = EbpfConfig {
                max_watched: Some(bad),
            }
            .validate()
            .unwrap_err()
            .to_string();
            assert!(err.starts_with(&format!("ebpf.max_watched = {bad} is out of range")));
        }
    }
}
