//! The eBPF probes. OWNER: ebpf helper.
