//! `sched:sched_switch`: a task leaves the CPU and another one takes it.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use hyper_stats_ebpf::Stat;

use super::maps::count;

#[tracepoint(category = "sched", name = "sched_switch")]
pub fn sched_switch(ctx: TracePointContext) -> u32 {
    match try_sched_switch(&ctx) {
        Ok(()) => 0,
        Err(_) => 0,
    }
}

fn try_sched_switch(_ctx: &TracePointContext) -> Result<(), i64> {
    count(Stat::SwitchEvents);
    Ok(())
}
