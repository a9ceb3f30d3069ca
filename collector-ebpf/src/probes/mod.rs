//! The hooks, one per file, and the maps they share.

mod maps;
mod sched_switch;
