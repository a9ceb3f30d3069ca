//! The libvirt source.

pub mod conn;
pub mod ffi;
pub mod groups;
pub mod params;
