//! Drivers for the KVM handlers under `BPF_PROG_TEST_RUN`, never attached.
//!
//! The KVM tracepoints do not fire on hosts whose guests run without
//! hardware virtualization, and the kernel cannot test-run tracepoint
//! programs; it can test-run raw tracepoints. These two run the very
//! handlers the `kvm_exit`/`kvm_entry` hooks call, on the calling thread,
//! with the exit reason in `args[0]`.

use aya_ebpf::{EbpfContext as _, macros::raw_tracepoint, programs::RawTracePointContext};

use super::thread::{kvm_entry, kvm_exit};

#[raw_tracepoint(tracepoint = "kvm_exit")]
pub fn kvm_exit_test(ctx: RawTracePointContext) -> i32 {
    let reason: u64 = ctx.arg(0);
    kvm_exit(ctx.pid(), reason as u32);
    0
}

#[raw_tracepoint(tracepoint = "kvm_entry")]
pub fn kvm_entry_test(ctx: RawTracePointContext) -> i32 {
    kvm_entry(ctx.pid());
    0
}
