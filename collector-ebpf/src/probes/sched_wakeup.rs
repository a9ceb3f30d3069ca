//! `sched_wakeup` (BTF tracepoint): a sleeping task becomes runnable.

use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};
use hyper_stats_ebpf::Stat;

use super::maps::count;
use super::task::{self, Task};
use super::thread::wakeup;

/// `TP_PROTO(struct task_struct *p)`.
#[btf_tracepoint(function = "sched_wakeup")]
pub fn sched_wakeup(ctx: BtfTracePointContext) -> i32 {
    count(Stat::WakeupEvents);
    let task: Task = ctx.arg(0);
    match task::tid(task) {
        Ok(tid) => wakeup(tid, task),
        Err(_) => count(Stat::ReadErrors),
    }
    0
}
