//! hyper-stats' eBPF programs: scheduler tracepoints on watched threads.
//!
//! For the bpf target this is the object the agent embeds (built by
//! `collector/build.rs` through aya-build; `cargo xtask build-ebpf`). Each
//! hook lives in its own file under `probes/`; the types and map names they
//! share with the agent live in the library (`lib.rs`).
//!
//! For the host this builds a stub binary, so that `cargo build --workspace`
//! works without the bpf toolchain.
#![cfg_attr(target_arch = "bpf", no_std, no_main)]

#[cfg(target_arch = "bpf")]
mod probes;

/// The verifier cannot prove any panic unreachable at run time, and the
/// programs are written so none is reachable; this only satisfies `no_std`.
#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// The kernel only lets GPL-compatible programs call `bpf_probe_read_kernel`,
/// which every read of a kernel struct and tracepoint field goes through.
#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!(
        "hyper-stats-ebpf holds eBPF programs for the bpf target; \
         the agent embeds them. Build them with: cargo xtask build-ebpf"
    );
}
