//! `kvm:kvm_exit`: a vCPU thread leaves its guest; the exit is timed until
//! the thread's next `kvm_entry`.

use aya_ebpf::{EbpfContext as _, macros::tracepoint, programs::TracePointContext};
use hyper_stats_ebpf::Stat;

use super::maps::{KERNEL_OFFSETS, count};
use super::thread::kvm_exit as handle;

#[tracepoint(category = "kvm", name = "kvm_exit")]
pub fn kvm_exit(ctx: TracePointContext) -> u32 {
    let offset = KERNEL_OFFSETS.load().kvm_exit_reason as usize;
    // Safety: the offset comes from this kernel's format file for this
    // tracepoint, and the helper checks the read.
    match unsafe { ctx.read_at::<u32>(offset) } {
        Ok(reason) => handle(ctx.pid(), reason),
        Err(_) => count(Stat::ReadErrors),
    }
    0
}
