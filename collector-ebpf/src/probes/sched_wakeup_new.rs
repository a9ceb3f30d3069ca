//! `sched:sched_wakeup_new`: a new task becomes runnable for the first time.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use hyper_stats_ebpf::Stat;

use super::maps::{TP_OFFSETS, count};
use super::thread::wakeup;

#[tracepoint(category = "sched", name = "sched_wakeup_new")]
pub fn sched_wakeup_new(ctx: TracePointContext) -> u32 {
    count(Stat::WakeupEvents);
    let offset = TP_OFFSETS.load().wakeup_new_pid as usize;
    // Safety: the offset comes from this kernel's format file for this
    // tracepoint, and the helper checks the read.
    match unsafe { ctx.read_at::<i32>(offset) } {
        Ok(pid) => wakeup(pid as u32),
        Err(_) => count(Stat::ReadErrors),
    }
    0
}
