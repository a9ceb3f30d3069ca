//! hyper-stats: per-VM statistics for libvirt/QEMU compute nodes.
//!
//! The agent is a pipeline: sources (`sources::libvirt`, `sources::ebpf`)
//! turn what libvirt and the kernel know into [`sample::Datapoint`]s, and
//! sinks (`sinks::json`, later Carbon and the query socket) consume that one
//! stream. `main.rs` only parses the command line and wires the parts.

pub(crate) mod backoff;
pub mod cli;
pub(crate) mod clock;
pub mod config;
pub mod dashboard;
pub mod domains;
pub(crate) mod episode;
pub mod graphios;
pub mod harness;
pub mod pipeline;
pub mod rollup;
pub mod sample;
pub mod self_stats;
pub mod selftest;
pub mod sinks;
pub mod sources;
pub mod top;
pub(crate) mod trusted_dir;
