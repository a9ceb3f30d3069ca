//! The per-thread handlers every hook calls: find the thread's slot, get
//! its map values, apply the library's state machine, count what had to be
//! dropped. The hooks only read their tracepoint's fields.

use aya_ebpf::helpers::bpf_ktime_get_ns;
use hyper_stats_ebpf::{Stat, ThreadCounters, ThreadState};

use super::maps::{
    KVM_EXITS, ONCPU_HIST, RUNQ_HIST, THREAD_COUNTERS, THREAD_STATE, count, watched_slot,
};
use super::task::{self, Task};

/// Monotonic time in ns, the clock of every timestamp in the maps.
#[inline(always)]
fn now_ns() -> u64 {
    // Safety: the helper has no preconditions.
    unsafe { bpf_ktime_get_ns() }
}

/// The state and counters of `tid`'s slot, unless the slot was meanwhile
/// handed to another thread.
#[inline(always)]
fn slot_values(
    tid: u32,
    slot: u32,
) -> Option<(&'static mut ThreadState, &'static mut ThreadCounters)> {
    let state = THREAD_STATE.get_ptr_mut(slot);
    let counters = THREAD_COUNTERS.get_ptr_mut(slot);
    let (Some(state), Some(counters)) = (state, counters) else {
        count(Stat::SlotMissing);
        return None;
    };
    // Safety: array values live as long as the map; a slot's values are
    // only written by the events of its one thread (checked just below).
    let (state, counters) = unsafe { (&mut *state, &mut *counters) };
    if state.tid != tid {
        count(Stat::StaleSlot);
        return None;
    }
    Some((state, counters))
}

/// The value of a kernel read, counting a failed one in `ReadErrors`.
#[inline(always)]
fn counted<T>(read: Result<T, i32>) -> Option<T> {
    if read.is_err() {
        count(Stat::ReadErrors);
    }
    read.ok()
}

/// Reads `task`'s run-queue total as the base of its first wait, while the
/// slot has none: once per slot, at its first wakeup or switch-out.
#[inline(always)]
fn read_run_delay_base(state: &mut ThreadState, task: Task) {
    if state.needs_run_delay()
        && let Some(total) = counted(task::run_delay(task))
    {
        state.on_run_delay_base(total);
    }
}

/// `tid`, whose task is `task`, became runnable.
#[inline(always)]
pub(crate) fn wakeup(tid: u32, task: Task) {
    let Some(slot) = watched_slot(tid) else {
        return;
    };
    if let Some((state, counters)) = slot_values(tid, slot) {
        read_run_delay_base(state, task);
        ThreadState::on_wakeup(counters);
    }
}

/// `tid`, whose task is `task`, left its CPU, involuntarily or not.
#[inline(always)]
pub(crate) fn switch_out(tid: u32, task: Task, involuntary: bool) {
    let Some(slot) = watched_slot(tid) else {
        return;
    };
    let Some((state, counters)) = slot_values(tid, slot) else {
        return;
    };
    let Some(oncpu) = ONCPU_HIST.get_ptr_mut(slot) else {
        count(Stat::SlotMissing);
        return;
    };
    // Safety: as in `slot_values`.
    let oncpu = unsafe { &mut *oncpu };
    read_run_delay_base(state, task);
    let exec = counted(task::sum_exec_runtime(task));
    if state
        .on_switch_out(counters, oncpu, exec, involuntary)
        .clamped
    {
        count(Stat::Clamped);
    }
}

/// `tid`, whose task is `task`, got a CPU. Its accounting is read only
/// here, for watched threads: the reads cost more than the lookup.
#[inline(always)]
pub(crate) fn switch_in(tid: u32, task: Task) {
    let Some(slot) = watched_slot(tid) else {
        return;
    };
    let Some((state, counters)) = slot_values(tid, slot) else {
        return;
    };
    let Some(runq) = RUNQ_HIST.get_ptr_mut(slot) else {
        count(Stat::SlotMissing);
        return;
    };
    // Safety: as in `slot_values`.
    let runq = unsafe { &mut *runq };
    let sched = counted(task::sched_info(task));
    if state.on_switch_in(counters, runq, sched).clamped {
        count(Stat::Clamped);
    }
}

/// The current thread `tid` left its guest with `reason`.
#[inline(always)]
pub(crate) fn kvm_exit(tid: u32, reason: u32) {
    count(Stat::KvmExitEvents);
    let Some(slot) = watched_slot(tid) else {
        return;
    };
    if let Some((state, _)) = slot_values(tid, slot) {
        state.on_kvm_exit(now_ns(), reason);
    }
}

/// The current thread `tid` enters its guest again.
#[inline(always)]
pub(crate) fn kvm_entry(tid: u32) {
    let Some(slot) = watched_slot(tid) else {
        return;
    };
    let Some((state, counters)) = slot_values(tid, slot) else {
        return;
    };
    let Some(exits) = KVM_EXITS.get_ptr_mut(slot) else {
        count(Stat::SlotMissing);
        return;
    };
    // Safety: as in `slot_values`.
    let exits = unsafe { &mut *exits };
    if !state.on_kvm_entry(counters, exits, now_ns()) {
        count(Stat::KvmExitsFull);
    }
}
