//! `sched:sched_switch`: `prev` leaves the CPU and `next` takes it. Ends
//! `prev`'s on-CPU slice (and starts its run-queue wait if it is still
//! runnable) and ends `next`'s run-queue wait.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use hyper_stats_ebpf::Stat;

use super::maps::{TP_OFFSETS, count};
use super::thread::{now_ns, switch_in, switch_out};

#[tracepoint(category = "sched", name = "sched_switch")]
pub fn sched_switch(ctx: TracePointContext) -> u32 {
    count(Stat::SwitchEvents);
    if try_sched_switch(&ctx).is_err() {
        count(Stat::ReadErrors);
    }
    0
}

fn try_sched_switch(ctx: &TracePointContext) -> Result<(), i32> {
    let offsets = TP_OFFSETS.load();
    // Safety: the offsets come from this kernel's format file for this
    // tracepoint, and the helper checks the read.
    let (prev_pid, prev_state, next_pid) = unsafe {
        (
            ctx.read_at::<i32>(offsets.switch_prev_pid as usize)?,
            ctx.read_at::<i64>(offsets.switch_prev_state as usize)?,
            ctx.read_at::<i32>(offsets.switch_next_pid as usize)?,
        )
    };
    let now = now_ns();
    switch_out(prev_pid as u32, prev_state, now);
    switch_in(next_pid as u32, now);
    Ok(())
}
