//! Types shared by the eBPF programs and the agent. OWNER: ebpf helper.
#![no_std]
