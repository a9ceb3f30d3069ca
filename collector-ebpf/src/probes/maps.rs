//! The maps and the `.rodata` offsets, defined once; their names are the
//! consts in the library, and each static here is named after its const.

use aya_ebpf::{
    Global,
    macros::map,
    maps::{Array, HashMap, PerCpuArray},
};
use hyper_stats_ebpf::{
    DEFAULT_MAX_WATCHED, KernelOffsets, KvmExits, LatencyHist, MMAPABLE, STATS_LEN, Stat,
    ThreadCounters, ThreadState,
};

/// See [`hyper_stats_ebpf::WATCHED`].
#[map]
pub(crate) static WATCHED: HashMap<u32, u32> = HashMap::with_max_entries(DEFAULT_MAX_WATCHED, 0);

/// See [`hyper_stats_ebpf::THREAD_STATE`].
#[map]
pub(crate) static THREAD_STATE: Array<ThreadState> =
    Array::with_max_entries(DEFAULT_MAX_WATCHED, 0);

/// See [`hyper_stats_ebpf::THREAD_COUNTERS`].
#[map]
pub(crate) static THREAD_COUNTERS: Array<ThreadCounters> =
    Array::with_max_entries(DEFAULT_MAX_WATCHED, MMAPABLE);

/// See [`hyper_stats_ebpf::RUNQ_HIST`].
#[map]
pub(crate) static RUNQ_HIST: Array<LatencyHist> =
    Array::with_max_entries(DEFAULT_MAX_WATCHED, MMAPABLE);

/// See [`hyper_stats_ebpf::ONCPU_HIST`].
#[map]
pub(crate) static ONCPU_HIST: Array<LatencyHist> =
    Array::with_max_entries(DEFAULT_MAX_WATCHED, MMAPABLE);

/// See [`hyper_stats_ebpf::KVM_EXITS`].
#[map]
pub(crate) static KVM_EXITS: Array<KvmExits> =
    Array::with_max_entries(DEFAULT_MAX_WATCHED, MMAPABLE);

/// See [`hyper_stats_ebpf::STATS`].
#[map]
pub(crate) static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(STATS_LEN, 0);

/// See [`hyper_stats_ebpf::KERNEL_OFFSETS`].
#[unsafe(no_mangle)]
pub(crate) static KERNEL_OFFSETS: Global<KernelOffsets> = Global::new(KernelOffsets::DEFAULT);

/// Adds one to a counter in [`STATS`] on this CPU.
#[inline(always)]
pub(crate) fn count(stat: Stat) {
    if let Some(counter) = STATS.get_ptr_mut(stat.index()) {
        // Safety: the pointer is this CPU's slot of an array element, valid
        // for the program's run; programs do not migrate CPUs mid-run.
        unsafe { *counter += 1 };
    }
}

/// The slot of `tid` if it is watched.
#[inline(always)]
pub(crate) fn watched_slot(tid: u32) -> Option<u32> {
    // Safety: the value is copied out at once, before any other map call.
    unsafe { WATCHED.get(tid) }.copied()
}
