//! Whisper files written directly, without carbon-cache: for a Graphite
//! holding thousands of synthetic series in seconds (the dashboard's
//! benchmark). One archive per file; only the points given are written
//! and the rest of the file is left a hole, as carbon's sparse create
//! does, so a file costs the disk only what it holds.
//!
//! The format (big-endian): a 16-byte header (aggregation method, maximum
//! retention, xFilesFactor, archive count), 12 bytes per archive (offset,
//! seconds per point, points), then 12-byte points (u32 timestamp, f64
//! value). A slot whose timestamp does not match the one whisper expects
//! reads as no value, so the holes (zeros) read as gaps.

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

/// Bytes of the file header and of one archive's header.
const HEADER_BYTES: u64 = 16;
const ARCHIVE_HEADER_BYTES: u64 = 12;
/// Bytes of one point.
const POINT_BYTES: u64 = 12;

/// Whisper's aggregation methods, by their number in the header.
#[derive(Clone, Copy)]
pub enum Aggregation {
    Average = 1,
    Sum = 2,
    Max = 4,
}

/// Writes `path` (and its directories): one archive of `slots` points of
/// `step` seconds, holding `values[i]` at `start + i * step` (aligned to
/// `step`). `values` must fit in the archive.
pub fn write(
    path: &Path,
    aggregation: Aggregation,
    step: u32,
    slots: u32,
    start: u32,
    values: &[f64],
) -> std::io::Result<()> {
    assert!(values.len() <= slots as usize, "more values than slots");
    assert_eq!(start % step, 0, "start must be aligned to the step");
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let data_offset = HEADER_BYTES + ARCHIVE_HEADER_BYTES;
    let mut head = Vec::with_capacity(data_offset as usize);
    head.extend_from_slice(&(aggregation as u32).to_be_bytes());
    head.extend_from_slice(&(step * slots).to_be_bytes());
    head.extend_from_slice(&0.5f32.to_be_bytes());
    head.extend_from_slice(&1u32.to_be_bytes());
    head.extend_from_slice(&(data_offset as u32).to_be_bytes());
    head.extend_from_slice(&step.to_be_bytes());
    head.extend_from_slice(&slots.to_be_bytes());
    let mut f = std::fs::File::create(path)?;
    f.set_len(data_offset + u64::from(slots) * POINT_BYTES)?;
    f.write_all(&head)?;
    // Slot 0 holds `start`: whisper takes the first slot's timestamp as
    // the archive's base, so the points go from there in order.
    let mut data = Vec::with_capacity(values.len() * POINT_BYTES as usize);
    for (i, v) in values.iter().enumerate() {
        data.extend_from_slice(&(start + i as u32 * step).to_be_bytes());
        data.extend_from_slice(&v.to_be_bytes());
    }
    f.seek(SeekFrom::Start(data_offset))?;
    f.write_all(&data)
}
