//! `sched_wakeup_new` (BTF tracepoint): a new task becomes runnable for the first time.

use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};
use hyper_stats_ebpf::Stat;

use super::maps::count;
use super::task::{self, Task};
use super::thread::wakeup;

/// `TP_PROTO(struct task_struct *p)`.
#[btf_tracepoint(function = "sched_wakeup_new")]
pub fn sched_wakeup_new(ctx: BtfTracePointContext) -> i32 {
    count(Stat::WakeupEvents);
    let task: Task = ctx.arg(0);
    match task::tid(task) {
        Ok(tid) => wakeup(tid, task),
        Err(_) => count(Stat::ReadErrors),
    }
    0
}
