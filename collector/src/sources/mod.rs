//! Where datapoints come from: libvirt's bulk stats and the eBPF probes.

pub mod ebpf;
pub mod libvirt;
