//! The maps, defined once; their names are the consts in the library.

use aya_ebpf::{macros::map, maps::PerCpuArray};
use hyper_stats_ebpf::{STATS_LEN, Stat};

/// See [`hyper_stats_ebpf::STATS`].
#[map]
pub(crate) static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(STATS_LEN, 0);

/// Adds one to a counter in [`STATS`] on this CPU.
#[inline(always)]
pub(crate) fn count(stat: Stat) {
    if let Some(counter) = STATS.get_ptr_mut(stat.index()) {
        // Safety: the pointer is this CPU's slot of an array element, valid
        // for the program's run; programs do not migrate CPUs mid-run.
        unsafe { *counter += 1 };
    }
}
