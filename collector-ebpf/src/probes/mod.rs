//! The hooks, one per file, and what they share: the maps (`maps`), the
//! reads of kernel structs (`task`), and the per-thread handlers
//! (`thread`), which apply the library's pure state machine to map values.

mod kvm_entry;
mod kvm_exit;
mod kvm_test;
mod maps;
mod sched_switch;
mod sched_wakeup;
mod sched_wakeup_new;
mod task;
mod thread;
