//! `sched_switch` (BTF tracepoint): `prev`, the current task, leaves the
//! CPU and `next` takes it. Ends `prev`'s on-CPU slice and counts its
//! switch; ends `next`'s run-queue wait and starts its slice, all as the
//! kernel accounts them.

use aya_ebpf::{EbpfContext as _, macros::btf_tracepoint, programs::BtfTracePointContext};
use hyper_stats_ebpf::{Stat, involuntary};

use super::maps::count;
use super::task::{self, Task};
use super::thread::{switch_in, switch_out};

/// `TP_PROTO(bool preempt, struct task_struct *prev, struct task_struct
/// *next, unsigned int prev_state)`.
#[btf_tracepoint(function = "sched_switch")]
pub fn sched_switch(ctx: BtfTracePointContext) -> i32 {
    count(Stat::SwitchEvents);
    let preempt: u64 = ctx.arg(0);
    let prev: Task = ctx.arg(1);
    let next: Task = ctx.arg(2);
    let prev_state: u64 = ctx.arg(3);
    // The tracepoint runs in `prev`'s context, so its tid is the current
    // thread's: no read needed.
    switch_out(
        ctx.pid(),
        prev,
        involuntary(preempt as u8 != 0, prev_state as u32),
    );
    match task::tid(next) {
        Ok(tid) => switch_in(tid, next),
        Err(_) => count(Stat::ReadErrors),
    }
    0
}
