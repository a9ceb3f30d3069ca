//! Shared mappings of the per-slot array maps the agent reads every
//! second, so a slot's values are read (and the histograms drained) in
//! place instead of copied through the bpf syscall.
//!
//! The arrays are created with `BPF_F_MMAPABLE` (see
//! [`hyper_stats_ebpf::MMAPABLE`]); the kernel lays their values out one
//! after another, each rounded up to 8 bytes, from the start of the
//! mapping, which is the first value's page. The programs write those
//! values while the agent reads them, so every access here is atomic: the
//! agent sees each word either before or after an update, never torn, and
//! its swaps of a histogram's words to zero lose none of the programs'
//! atomic adds (see `maps.rs`).
//!
//! This is the one module with `unsafe` for the mappings: `mmap`/`munmap`
//! and the views of mapped words as atomics.

use std::io;
use std::os::fd::AsFd as _;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64};

use aya::maps::MapData;

/// A shared, writable mapping of the first values of an array map, grown
/// on demand: the kernel maps every page of a mapping at once, so mapping
/// only the slots handed out keeps the spare ones out of the agent's RSS.
pub(crate) struct MappedArray {
    /// Start of the mapping.
    ptr: NonNull<u8>,
    /// Length of the mapping in bytes.
    len: usize,
    /// Bytes from one value to the next: the value size rounded up to 8.
    stride: usize,
    /// Values mapped.
    entries: u32,
    /// Values in the map.
    max_entries: u32,
}

// Safety: the mapping is shared memory only accessed through atomics; it is
// valid until `munmap` in `drop`, whichever thread owns the value.
unsafe impl Send for MappedArray {}
unsafe impl Sync for MappedArray {}

impl MappedArray {
    /// Maps the first `entries` values (at most all) of the array `map`,
    /// whose values are `value_size` bytes.
    pub(crate) fn new(map: &MapData, value_size: usize, entries: u32) -> io::Result<Self> {
        let max_entries = map.info().map_err(io::Error::other)?.max_entries();
        let stride = value_size.next_multiple_of(8);
        let entries = entries.clamp(1, max_entries);
        let (ptr, len) = map_values(map, stride, entries)?;
        Ok(Self {
            ptr,
            len,
            stride,
            entries,
            max_entries,
        })
    }

    /// Values in the map.
    pub(crate) fn max_entries(&self) -> u32 {
        self.max_entries
    }

    /// Grows the mapping of `map` (the one it was made from) to hold value
    /// `slot`, by whole steps of `step` values; the old mapping is
    /// unmapped.
    pub(crate) fn cover(&mut self, map: &MapData, slot: u32, step: u32) -> io::Result<()> {
        if slot < self.entries {
            return Ok(());
        }
        let entries = (slot + 1).next_multiple_of(step).min(self.max_entries);
        let (ptr, len) = map_values(map, self.stride, entries)?;
        // Safety: the old mapping, unmapped once; no view of it outlives
        // this `&mut self`.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
        (self.ptr, self.len, self.entries) = (ptr, len, entries);
        Ok(())
    }

    /// The address of byte `offset` of value `slot`, checked to hold
    /// `bytes` bytes inside the value and the mapping, aligned to `align`.
    fn at(&self, slot: u32, offset: usize, bytes: usize, align: usize) -> *const u8 {
        assert!(slot < self.entries, "slot {slot} beyond {}", self.entries);
        assert!(offset + bytes <= self.stride && offset.is_multiple_of(align));
        let start = slot as usize * self.stride + offset;
        assert!(start + bytes <= self.len);
        // Safety: in bounds of the mapping, checked above.
        unsafe { self.ptr.as_ptr().add(start) }
    }

    /// The `u64` at byte `offset` of value `slot`.
    pub(crate) fn u64(&self, slot: u32, offset: usize) -> u64 {
        let p = self.at(slot, offset, 8, 8).cast::<AtomicU64>();
        // Safety: aligned (the mapping is page-aligned, the stride and the
        // offset multiples of 8), in bounds, and valid while `self` lives.
        unsafe { &*p }.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Asks the CPU to fetch the cache line holding byte `offset` of value
    /// `slot` for writing, without waiting for it: reading a thousand
    /// threads' lines one miss after another costs their latency in a row,
    /// while lines fetched ahead arrive together.
    pub(crate) fn prefetch(&self, slot: u32, offset: usize) {
        let p = self.at(slot, offset, 1, 1);
        // Safety: SSE is part of x86_64; a prefetch never faults.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_ET0 }>(p.cast())
        };
        #[cfg(not(target_arch = "x86_64"))]
        let _ = p;
    }

    /// The `n` `u64`s from byte `offset` of value `slot`, as atomics.
    pub(crate) fn u64s(&self, slot: u32, offset: usize, n: usize) -> &[AtomicU64] {
        let p = self.at(slot, offset, 8 * n, 8).cast::<AtomicU64>();
        // Safety: as in `u64`; `AtomicU64` has the layout of `u64`.
        unsafe { std::slice::from_raw_parts(p, n) }
    }

    /// The `n` `u32`s from byte `offset` of value `slot`, as atomics.
    pub(crate) fn u32s(&self, slot: u32, offset: usize, n: usize) -> &[AtomicU32] {
        let p = self.at(slot, offset, 4 * n, 4).cast::<AtomicU32>();
        // Safety: as in `u64`; `AtomicU32` has the layout of `u32`.
        unsafe { std::slice::from_raw_parts(p, n) }
    }
}

/// Maps the first `entries` values of `map`, `stride` bytes apart.
fn map_values(map: &MapData, stride: usize, entries: u32) -> io::Result<(NonNull<u8>, usize)> {
    // The kernel rounds the length up to whole pages, as it does the
    // array's memory.
    let len = stride * entries as usize;
    let fd = map.fd().as_fd();
    // Safety: a fresh shared mapping of the map's memory; the kernel checks
    // the length against the map and fails otherwise.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    let ptr = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("null mapping"))?;
    Ok((ptr, len))
}

impl Drop for MappedArray {
    fn drop(&mut self) {
        // Safety: the mapping made in `new`, unmapped once.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}
