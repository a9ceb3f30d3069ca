//! `kvm:kvm_entry`: a vCPU thread enters its guest, ending the exit that
//! `kvm_exit` started.

use aya_ebpf::{EbpfContext as _, macros::tracepoint, programs::TracePointContext};

use super::thread::kvm_entry as handle;

#[tracepoint(category = "kvm", name = "kvm_entry")]
pub fn kvm_entry(ctx: TracePointContext) -> u32 {
    handle(ctx.pid());
    0
}
