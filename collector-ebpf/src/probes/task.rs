//! Reads of the kernel's scheduler structs, at the offsets the agent took
//! from the kernel's BTF and wrote into [`KERNEL_OFFSETS`].
//!
//! Every read goes through `bpf_probe_read_kernel`, so a wrong offset reads
//! wrong bytes (the agent checks the offsets against BTF, sizes included)
//! but never faults; a failed read is an `Err` the caller counts.

use aya_ebpf::helpers::bpf_probe_read_kernel;
use hyper_stats_ebpf::SchedInfo;

use super::maps::KERNEL_OFFSETS;

/// A `struct task_struct *` as a BTF tracepoint passes it.
pub(crate) type Task = *const u8;

/// Reads the `T` at `offset` bytes into the kernel object at `base`.
#[inline(always)]
fn read<T>(base: *const u8, offset: u32) -> Result<T, i32> {
    // Safety: the helper checks the read and fails instead of faulting.
    unsafe { bpf_probe_read_kernel(base.wrapping_add(offset as usize).cast::<T>()) }
}

/// `task->pid`: the thread id.
#[inline(always)]
pub(crate) fn tid(task: Task) -> Result<u32, i32> {
    read::<i32>(task, KERNEL_OFFSETS.load().task_pid).map(|pid| pid as u32)
}

/// `task->sched_info.run_delay`: the run-queue wait the kernel has summed.
#[inline(always)]
pub(crate) fn run_delay(task: Task) -> Result<u64, i32> {
    read(task, KERNEL_OFFSETS.load().task_run_delay)
}

/// `task->se.sum_exec_runtime`: the CPU time the kernel has charged it.
#[inline(always)]
pub(crate) fn sum_exec_runtime(task: Task) -> Result<u64, i32> {
    read(task, KERNEL_OFFSETS.load().task_sum_exec_runtime)
}

/// The accounting of `task`, about to be switched in on this CPU: its
/// `sched_info`, the clock of the run queue it was picked from
/// (`task->se.cfs_rq->rq->clock`; the task is on this CPU's queue) and its
/// CPU-time total.
#[inline(always)]
pub(crate) fn sched_info(task: Task) -> Result<SchedInfo, i32> {
    let offsets = KERNEL_OFFSETS.load();
    let cfs_rq: *const u8 = read(task, offsets.task_cfs_rq)?;
    let rq: *const u8 = read(cfs_rq, offsets.cfs_rq_rq)?;
    Ok(SchedInfo {
        run_delay_ns: read(task, offsets.task_run_delay)?,
        last_queued_ns: read(task, offsets.task_last_queued)?,
        rq_clock_ns: read(rq, offsets.rq_clock)?,
        sum_exec_runtime_ns: read(task, offsets.task_sum_exec_runtime)?,
    })
}
