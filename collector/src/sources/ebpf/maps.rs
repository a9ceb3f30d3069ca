//! The per-thread maps from the agent's side: handing out slots to watched
//! threads, and reading what the programs recorded as deltas per interval.
//!
//! # Slots
//!
//! `WATCHED` maps a thread id to a slot; every per-thread value lives at
//! that slot in an array map. [`ThreadMaps::set_watched`] hands out free
//! slots to new threads (zeroing the slot's values first, then inserting
//! the thread in `WATCHED`) and takes them back from threads no longer
//! asked for. Each slot's state names its thread, so an event still in
//! flight for the slot's previous thread is dropped, not misattributed.
//!
//! # Reset by delta
//!
//! The kernel's counts only grow; nothing here writes them back to zero,
//! which would race with the programs. [`ThreadMaps::read`] keeps the
//! previous read of each slot and returns the difference. Bucket counts are
//! `u32` and wrap, so the difference is a wrapping one: right as long as a
//! thread records fewer than 2^32 durations between two reads. The maximum
//! of an interval is exact when it is a new maximum for the thread, and
//! otherwise the upper bound of the highest bucket that grew (within
//! 0.78%).
//!
//! # Reading in place
//!
//! The counters and both histograms are read through read-only mappings
//! of their arrays ([`MappedArray`]), not copied through the bpf syscall:
//! a slot whose `switch_ins` (run queue) or switch-out count (on-CPU) did
//! not move is not looked at further, and of a histogram that did, only
//! the 64-bucket chunks whose count moved are compared with the last read.
//! Reading 1,024 busy threads so touches a few KiB each instead of 27 KiB.
//! The programs count a chunk after its bucket and `switch_ins` after the
//! histogram, and the agent reads in the opposite order, so what a read
//! misses of an event still being written it finds at the next read.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use std::mem::{offset_of, size_of};
use std::sync::atomic::Ordering::Relaxed;

use aya::maps::{Array, HashMap, IterableMap as _, Map, MapData, MapError};
use hyper_stats_ebpf::{
    CHUNK_BITS, CHUNK_BUCKETS, HIST_BUCKETS, HIST_CHUNKS, KvmExitKey, KvmExitStats, LatencyHist,
    ThreadCounters, ThreadState, bucket_mid, bucket_upper,
};

use super::mmap::MappedArray;

/// The per-thread maps, taken out of the loaded object.
pub struct ThreadMaps {
    /// See [`hyper_stats_ebpf::WATCHED`].
    pub(super) watched: HashMap<MapData, u32, u32>,
    /// See [`hyper_stats_ebpf::THREAD_STATE`].
    pub(super) state: Array<MapData, ThreadState>,
    /// See [`hyper_stats_ebpf::THREAD_COUNTERS`].
    pub(super) counters: Array<MapData, ThreadCounters>,
    /// See [`hyper_stats_ebpf::RUNQ_HIST`].
    pub(super) runq: Array<MapData, LatencyHist>,
    /// See [`hyper_stats_ebpf::ONCPU_HIST`].
    pub(super) oncpu: Array<MapData, LatencyHist>,
    /// See [`hyper_stats_ebpf::KVM_EXITS`].
    pub(super) kvm_exits: HashMap<MapData, KvmExitKey, KvmExitStats>,
    /// `counters`, `runq` and `oncpu` mapped into the agent, read every
    /// second in place.
    mapped: Mapped,
    /// The watched threads, with their slot and last read.
    pub(super) threads: BTreeMap<u32, Watched>,
    /// Slots not handed out, in the order they are handed out: a slot given
    /// back goes to the end, so it is reused last.
    pub(super) free: VecDeque<u32>,
}

/// The arrays read every second, mapped.
struct Mapped {
    counters: MappedArray,
    runq: MappedArray,
    oncpu: MappedArray,
}

/// A watched thread.
pub(super) struct Watched {
    /// Its slot in the per-thread maps.
    slot: u32,
    /// What the last read returned, the base of the next delta.
    last: Snapshot,
}

/// What the last read of a slot saw: the base of the next delta. The
/// histograms are allocated when the thread first records one.
#[derive(Clone)]
struct Snapshot {
    counters: ThreadCounters,
    runq: Option<Box<HistBase>>,
    oncpu: Option<Box<HistBase>>,
    kvm: BTreeMap<u32, KvmExitStats>,
}

impl Snapshot {
    fn zero() -> Self {
        Self {
            counters: ThreadCounters::default(),
            runq: None,
            oncpu: None,
            kvm: BTreeMap::new(),
        }
    }
}

/// What [`ThreadMaps::set_watched`] changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WatchChange {
    /// Threads now watched that were not.
    pub added: Vec<u32>,
    /// Threads no longer watched.
    pub removed: Vec<u32>,
    /// Threads asked for but left out: every slot was taken.
    pub refused: Vec<u32>,
}

/// One interval of one watched thread.
#[derive(Debug, Clone, PartialEq)]
pub struct ThreadDelta {
    /// The thread id.
    pub tid: u32,
    /// Run-queue latency.
    pub runq: HistDelta,
    /// On-CPU time per slice.
    pub oncpu: HistDelta,
    /// Voluntary switches (the thread blocked).
    pub voluntary_switches: u64,
    /// Involuntary switches (preempted while runnable).
    pub(crate) involuntary_switches: u64,
    /// Wakeups.
    pub(crate) wakeups: u64,
    /// KVM exits by reason, only reasons seen in the interval.
    pub kvm_exits: Vec<KvmExitDelta>,
}

/// One interval of one histogram.
#[derive(Debug, Clone, PartialEq)]
pub struct HistDelta {
    /// Durations recorded.
    pub count: u64,
    /// Their exact sum.
    pub sum_ns: u64,
    /// The interval's longest: exact if it was a new maximum for the
    /// thread, else the upper bound of the highest bucket that grew.
    /// `None` if nothing was recorded.
    pub max_ns: Option<u64>,
    /// The buckets that grew, ascending: `(bucket index, count)` (see
    /// [`hyper_stats_ebpf::bucket_index`]).
    pub buckets: Vec<(u32, u32)>,
}

/// A histogram's words as one read sees them: the thread's slot in a
/// mapped array, or a plain value (tests). Chunks and buckets are loaded a
/// slice at a time: per-word calls cost more than the words on a host with
/// a thousand busy threads.
trait HistWords {
    /// `(count, sum_ns, max_ns)`.
    fn totals(&self) -> (u64, u64, u64);
    /// Every chunk's count, into `out`.
    fn load_chunks(&self, out: &mut [u32; HIST_CHUNKS]);
    /// The buckets of `chunk` into `out`; returns how many there are (the
    /// last chunk is short).
    fn load_chunk(&self, chunk: usize, out: &mut [u32; CHUNK_BUCKETS]) -> usize;
}

/// The buckets `chunk` covers.
fn chunk_range(chunk: usize) -> std::ops::Range<usize> {
    let first = chunk << CHUNK_BITS;
    first..(first + CHUNK_BUCKETS).min(HIST_BUCKETS)
}

/// A histogram read whole: the tests' way to drive [`HistDelta::advance`].
#[cfg(test)]
impl HistWords for LatencyHist {
    fn totals(&self) -> (u64, u64, u64) {
        (self.count, self.sum_ns, self.max_ns)
    }
    fn load_chunks(&self, out: &mut [u32; HIST_CHUNKS]) {
        *out = self.chunks;
    }
    fn load_chunk(&self, chunk: usize, out: &mut [u32; CHUNK_BUCKETS]) -> usize {
        let words = &self.buckets[chunk_range(chunk)];
        out[..words.len()].copy_from_slice(words);
        words.len()
    }
}

/// Slot `slot` of a mapped [`LatencyHist`] array.
struct MappedHist<'a> {
    map: &'a MappedArray,
    slot: u32,
}

impl HistWords for MappedHist<'_> {
    fn totals(&self) -> (u64, u64, u64) {
        let word = |offset| self.map.u64(self.slot, offset);
        (
            word(offset_of!(LatencyHist, count)),
            word(offset_of!(LatencyHist, sum_ns)),
            word(offset_of!(LatencyHist, max_ns)),
        )
    }
    fn load_chunks(&self, out: &mut [u32; HIST_CHUNKS]) {
        let words = self
            .map
            .u32s(self.slot, offset_of!(LatencyHist, chunks), HIST_CHUNKS);
        for (o, w) in out.iter_mut().zip(words) {
            *o = w.load(Relaxed);
        }
    }
    fn load_chunk(&self, chunk: usize, out: &mut [u32; CHUNK_BUCKETS]) -> usize {
        let range = chunk_range(chunk);
        let offset = offset_of!(LatencyHist, buckets) + 4 * range.start;
        let words = self.map.u32s(self.slot, offset, range.len());
        for (o, w) in out.iter_mut().zip(words) {
            *o = w.load(Relaxed);
        }
        range.len()
    }
}

impl HistDelta {
    /// Nothing recorded.
    fn empty() -> Self {
        Self {
            count: 0,
            sum_ns: 0,
            max_ns: None,
            buckets: Vec::new(),
        }
    }

    /// What `now` recorded since `last`, which becomes `now` as far as it
    /// was read: the totals, then the chunks, and the buckets of only the
    /// chunks that moved.
    fn advance(last: &mut HistBase, now: &impl HistWords) -> Self {
        let (count, sum_ns, max_ns) = now.totals();
        let mut chunks = [0; HIST_CHUNKS];
        now.load_chunks(&mut chunks);
        let mut words = [0; CHUNK_BUCKETS];
        let mut buckets = Vec::new();
        for (chunk, &moved) in chunks.iter().enumerate() {
            if moved == last.chunks[chunk] {
                continue;
            }
            last.chunks[chunk] = moved;
            let len = now.load_chunk(chunk, &mut words);
            last.advance_chunk(chunk, &words[..len], &mut buckets);
        }
        let delta_count = count.wrapping_sub(last.count);
        let delta_max = if delta_count == 0 && buckets.is_empty() {
            None
        } else if max_ns > last.max_ns {
            Some(max_ns)
        } else {
            buckets
                .last()
                .map(|&(top, _)| bucket_upper(top as usize).min(max_ns))
        };
        let delta = Self {
            count: delta_count,
            sum_ns: sum_ns.wrapping_sub(last.sum_ns),
            max_ns: delta_max,
            buckets,
        };
        (last.count, last.sum_ns, last.max_ns) = (count, sum_ns, max_ns);
        delta
    }

    /// The difference between two reads of the same slot.
    #[cfg(test)]
    fn between(prev: &LatencyHist, now: &LatencyHist) -> Self {
        HistDelta::advance(&mut HistBase::of(prev), now)
    }

    /// The mean, exact.
    pub fn mean_ns(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum_ns as f64 / self.count as f64)
    }

    /// The `q` quantile (0.0 to 1.0), as the midpoint of the bucket it
    /// falls in: within 0.4% of a recorded value.
    pub fn quantile_ns(&self, q: f64) -> Option<u64> {
        let total: u64 = self.buckets.iter().map(|&(_, c)| u64::from(c)).sum();
        if total == 0 {
            return None;
        }
        // The rank of the wanted value, 1-based: ceil(q * total), at least 1.
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for &(index, c) in &self.buckets {
            seen += u64::from(c);
            if seen >= rank {
                return Some(bucket_mid(index as usize));
            }
        }
        None
    }

    /// The buckets that grew, as `(lower_ns, upper_ns, count)`.
    #[cfg(test)]
    pub(crate) fn nonzero(&self) -> impl Iterator<Item = (u64, u64, u32)> + '_ {
        self.buckets.iter().map(|&(i, c)| {
            let i = i as usize;
            (hyper_stats_ebpf::bucket_lower(i), bucket_upper(i), c)
        })
    }
}

/// The last read of one histogram: the base of the next delta. Bucket
/// counts are kept per chunk, allocated when the chunk first moves (a
/// thread's durations fill a handful of the 52 chunks), so the base costs
/// a few KiB per thread instead of 13, and a moved chunk is compared with
/// its base as one dense block.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HistBase {
    count: u64,
    sum_ns: u64,
    max_ns: u64,
    chunks: [u32; HIST_CHUNKS],
    /// Each chunk's bucket counts, once the chunk has moved.
    buckets: [Option<Box<[u32; CHUNK_BUCKETS]>>; HIST_CHUNKS],
}

impl Default for HistBase {
    fn default() -> Self {
        Self {
            count: 0,
            sum_ns: 0,
            max_ns: 0,
            chunks: [0; HIST_CHUNKS],
            buckets: [const { None }; HIST_CHUNKS],
        }
    }
}

impl HistBase {
    /// The base of a histogram read whole (tests).
    #[cfg(test)]
    fn of(h: &LatencyHist) -> Self {
        let mut base = Self {
            count: h.count,
            sum_ns: h.sum_ns,
            max_ns: h.max_ns,
            chunks: h.chunks,
            ..Self::default()
        };
        for (chunk, slot) in base.buckets.iter_mut().enumerate() {
            let words = &h.buckets[chunk_range(chunk)];
            if words.iter().any(|&c| c != 0) {
                let mut block = Box::new([0; CHUNK_BUCKETS]);
                block[..words.len()].copy_from_slice(words);
                *slot = Some(block);
            }
        }
        base
    }

    /// Takes in the buckets of `chunk` as `words` now holds them, pushing
    /// what grew onto `grown` (ascending).
    fn advance_chunk(&mut self, chunk: usize, words: &[u32], grown: &mut Vec<(u32, u32)>) {
        let first = chunk << CHUNK_BITS;
        let base = self.buckets[chunk].get_or_insert_with(|| Box::new([0; CHUNK_BUCKETS]));
        for (offset, (b, &value)) in base.iter_mut().zip(words).enumerate() {
            let grew = value.wrapping_sub(*b);
            if grew != 0 {
                grown.push(((first + offset) as u32, grew));
                *b = value;
            }
        }
    }
}

/// One interval of one thread's exits for one reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvmExitDelta {
    /// The exit reason as `kvm:kvm_exit` reports it.
    pub reason: u32,
    /// Exits in the interval.
    pub count: u64,
    /// Their total time from exit to entry.
    pub sum_ns: u64,
    /// The thread's longest exit for this reason since it was watched.
    pub max_ns_ever: u64,
}

impl ThreadMaps {
    /// Wraps the maps and maps the arrays read every second; the capacity
    /// is the `max_entries` of the slot arrays.
    pub(super) fn new(
        watched: HashMap<MapData, u32, u32>,
        state: Array<MapData, ThreadState>,
        counters: Array<MapData, ThreadCounters>,
        runq: Array<MapData, LatencyHist>,
        oncpu: Array<MapData, LatencyHist>,
        kvm_exits: HashMap<MapData, KvmExitKey, KvmExitStats>,
    ) -> std::io::Result<Self> {
        let mapped = Mapped {
            counters: MappedArray::new(counters.map(), size_of::<ThreadCounters>())?,
            runq: MappedArray::new(runq.map(), size_of::<LatencyHist>())?,
            oncpu: MappedArray::new(oncpu.map(), size_of::<LatencyHist>())?,
        };
        let capacity = state
            .len()
            .min(mapped.counters.entries())
            .min(mapped.runq.entries())
            .min(mapped.oncpu.entries());
        Ok(Self {
            watched,
            state,
            counters,
            runq,
            oncpu,
            kvm_exits,
            mapped,
            threads: BTreeMap::new(),
            free: (0..capacity).collect(),
        })
    }

    /// The kernel memory of these maps (see [`super::memlock`]).
    pub(crate) fn kernel_bytes(&self) -> u64 {
        [
            self.watched.map(),
            self.state.map(),
            self.counters.map(),
            self.runq.map(),
            self.oncpu.map(),
            self.kvm_exits.map(),
        ]
        .into_iter()
        .map(super::memlock)
        .sum()
    }

    /// How many threads can be watched at once.
    pub fn capacity(&self) -> usize {
        self.threads.len() + self.free.len()
    }

    /// The watched thread ids, as the agent keeps them.
    pub fn watched(&self) -> impl Iterator<Item = u32> + '_ {
        self.threads.keys().copied()
    }

    /// The kernel's ids of `WATCHED` and `THREAD_STATE` (what `bpftool map
    /// show` lists), so the kernel's side of the watch set can be read from
    /// outside the agent with [`KernelWatch::read`].
    pub fn map_ids(&self) -> Result<MapIds, MapError> {
        Ok(MapIds {
            watched: self.watched.map().info()?.id(),
            state: self.state.map().info()?.id(),
        })
    }

    /// Watches exactly `tids` (as far as slots go): stops watching threads
    /// not in the list, then starts watching the new ones.
    pub fn set_watched(&mut self, tids: &[u32]) -> Result<WatchChange, MapError> {
        let wanted: BTreeSet<u32> = tids.iter().copied().collect();
        let mut change = WatchChange::default();

        let gone: Vec<u32> = self
            .threads
            .keys()
            .filter(|tid| !wanted.contains(tid))
            .copied()
            .collect();
        for tid in gone {
            // Out of WATCHED first: the programs stop writing the slot.
            match self.watched.remove(&tid) {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(err) => return Err(err),
            }
            if let Some(w) = self.threads.remove(&tid) {
                self.free.push_back(w.slot);
            }
            change.removed.push(tid);
        }

        for tid in wanted {
            if self.threads.contains_key(&tid) {
                continue;
            }
            let Some(slot) = self.free.pop_front() else {
                change.refused.push(tid);
                continue;
            };
            if let Err(err) = self.claim(tid, slot) {
                self.free.push_front(slot);
                return Err(err);
            }
            self.threads.insert(
                tid,
                Watched {
                    slot,
                    last: Snapshot::zero(),
                },
            );
            change.added.push(tid);
        }
        Ok(change)
    }

    /// Zeroes `slot`'s values, then points `tid` at it.
    fn claim(&mut self, tid: u32, slot: u32) -> Result<(), MapError> {
        let state = ThreadState {
            tid,
            ..ThreadState::default()
        };
        self.state.set(slot, state, 0)?;
        self.counters.set(slot, ThreadCounters::default(), 0)?;
        self.runq.set(slot, LatencyHist::ZERO, 0)?;
        self.oncpu.set(slot, LatencyHist::ZERO, 0)?;
        let stale: Vec<KvmExitKey> = self
            .kvm_exits
            .keys()
            .filter_map(Result::ok)
            .filter(|key| key.slot == slot)
            .collect();
        for key in stale {
            match self.kvm_exits.remove(&key) {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(err) => return Err(err),
            }
        }
        self.watched.insert(tid, slot, 0)
    }

    /// Reads every watched thread and returns what changed since the last
    /// read (or since it was watched).
    pub fn read(&mut self) -> Result<Vec<ThreadDelta>, MapError> {
        let mut kvm_by_slot: BTreeMap<u32, BTreeMap<u32, KvmExitStats>> = BTreeMap::new();
        for entry in self.kvm_exits.iter() {
            let (key, stats) = entry?;
            kvm_by_slot
                .entry(key.slot)
                .or_default()
                .insert(key.reason, stats);
        }

        let mapped = &self.mapped;
        let mut deltas = Vec::with_capacity(self.threads.len());
        for (&tid, watched) in &mut self.threads {
            let slot = watched.slot;
            let last = &mut watched.last;
            // The counters grow after the histograms are written (see
            // `ThreadCounters::switch_ins`): a histogram whose counter did
            // not move is not read, which is most of them on a dense host.
            let counters = read_counters(&mapped.counters, slot);
            let runq = match counters.switch_ins != last.counters.switch_ins {
                true => advance(
                    &mut last.runq,
                    &MappedHist {
                        map: &mapped.runq,
                        slot,
                    },
                ),
                false => HistDelta::empty(),
            };
            let oncpu = match switches_out(&counters) != switches_out(&last.counters) {
                true => advance(
                    &mut last.oncpu,
                    &MappedHist {
                        map: &mapped.oncpu,
                        slot,
                    },
                ),
                false => HistDelta::empty(),
            };
            let kvm = kvm_by_slot.remove(&slot).unwrap_or_default();
            deltas.push(ThreadDelta {
                tid,
                runq,
                oncpu,
                ..delta(tid, &last.counters, &last.kvm, &counters, &kvm)
            });
            (last.counters, last.kvm) = (counters, kvm);
        }
        Ok(deltas)
    }
}

/// The kernel ids of the maps that make up the watch set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapIds {
    /// `WATCHED`: thread id to slot.
    pub watched: u32,
    /// `THREAD_STATE`: per slot, the thread it was handed to.
    pub(crate) state: u32,
}

/// The watch set as the kernel holds it, read through map ids: what the
/// programs act on, whatever the agent believes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelWatch {
    /// Every `WATCHED` entry: thread id to slot.
    pub slots: BTreeMap<u32, u32>,
    /// For each of those slots, the thread id its `THREAD_STATE` names.
    pub(crate) slot_owner: BTreeMap<u32, u32>,
    /// `max_entries` of `THREAD_STATE`: how many slots exist.
    pub capacity: u32,
}

impl KernelWatch {
    /// Opens the maps by id (as `bpftool map dump id N` does; needs root)
    /// and reads them.
    pub fn read(ids: MapIds) -> Result<Self, MapError> {
        let watched: HashMap<MapData, u32, u32> =
            HashMap::try_from(Map::HashMap(MapData::from_id(ids.watched)?))?;
        let state: Array<MapData, ThreadState> =
            Array::try_from(Map::Array(MapData::from_id(ids.state)?))?;
        let slots = watched.iter().collect::<Result<BTreeMap<u32, u32>, _>>()?;
        let slot_owner = slots
            .values()
            .map(|&slot| Ok((slot, state.get(&slot, 0)?.tid)))
            .collect::<Result<BTreeMap<u32, u32>, MapError>>()?;
        Ok(Self {
            slots,
            slot_owner,
            capacity: state.len(),
        })
    }

    /// What is wrong with this watch set, if anything: two threads on one
    /// slot, a slot beyond the arrays, a slot whose state names another
    /// thread.
    pub fn inconsistencies(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut by_slot: BTreeMap<u32, u32> = BTreeMap::new();
        for (&tid, &slot) in &self.slots {
            if let Some(other) = by_slot.insert(slot, tid) {
                problems.push(format!("slot {slot} is held by threads {other} and {tid}"));
            }
            if slot >= self.capacity {
                problems.push(format!(
                    "thread {tid} has slot {slot}, beyond the {} slots",
                    self.capacity
                ));
            }
            match self.slot_owner.get(&slot) {
                Some(&owner) if owner == tid => {}
                owner => problems.push(format!(
                    "slot {slot} of thread {tid} names thread {owner:?} in THREAD_STATE"
                )),
            }
        }
        problems
    }
}

/// Switches out: every on-CPU slice recorded is one.
fn switches_out(c: &ThreadCounters) -> u64 {
    c.voluntary.wrapping_add(c.involuntary)
}

/// Slot `slot` of the mapped counters.
fn read_counters(map: &MappedArray, slot: u32) -> ThreadCounters {
    let word = |offset| map.u64(slot, offset);
    ThreadCounters {
        voluntary: word(offset_of!(ThreadCounters, voluntary)),
        involuntary: word(offset_of!(ThreadCounters, involuntary)),
        wakeups: word(offset_of!(ThreadCounters, wakeups)),
        kvm_exits: word(offset_of!(ThreadCounters, kvm_exits)),
        switch_ins: word(offset_of!(ThreadCounters, switch_ins)),
    }
}

/// [`HistDelta::advance`] from `last`, allocated at the thread's first
/// recorded duration.
fn advance(last: &mut Option<Box<HistBase>>, now: &impl HistWords) -> HistDelta {
    let last = last.get_or_insert_default();
    HistDelta::advance(last, now)
}

/// The difference between two reads of one thread's counters and KVM
/// exits (its histograms empty: they are read on their own).
fn delta(
    tid: u32,
    p: &ThreadCounters,
    prev_kvm: &BTreeMap<u32, KvmExitStats>,
    n: &ThreadCounters,
    kvm: &BTreeMap<u32, KvmExitStats>,
) -> ThreadDelta {
    let kvm_exits = kvm
        .iter()
        .filter_map(|(&reason, stats)| {
            let before = prev_kvm.get(&reason).copied().unwrap_or_default();
            let count = stats.count.wrapping_sub(before.count);
            (count > 0).then(|| KvmExitDelta {
                reason,
                count,
                sum_ns: stats.sum_ns.wrapping_sub(before.sum_ns),
                max_ns_ever: stats.max_ns,
            })
        })
        .collect();
    ThreadDelta {
        tid,
        runq: HistDelta::empty(),
        oncpu: HistDelta::empty(),
        voluntary_switches: n.voluntary.wrapping_sub(p.voluntary),
        involuntary_switches: n.involuntary.wrapping_sub(p.involuntary),
        wakeups: n.wakeups.wrapping_sub(p.wakeups),
        kvm_exits,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(values: &[u64]) -> Box<LatencyHist> {
        let mut h = Box::new(LatencyHist::ZERO);
        for &v in values {
            h.record(v);
        }
        h
    }

    #[test]
    fn delta_of_two_reads_is_what_was_recorded_between_them() {
        let before = hist(&[1_000, 5_000_000]);
        let mut after = before.clone();
        for v in [2_000, 3_000, 4_000] {
            after.record(v);
        }
        let d = HistDelta::between(&before, &after);
        assert_eq!((d.count, d.sum_ns), (3, 9_000));
        // Not a new maximum: the top bucket's upper bound, 4000 +- 0.78%.
        let max = d.max_ns.unwrap();
        assert!((4_000..=4_031).contains(&max), "{max}");
        assert_eq!(
            d.quantile_ns(0.5).map(|v| v.abs_diff(3_000) <= 12),
            Some(true)
        );
        assert_eq!(d.nonzero().count(), 3);
        assert_eq!(d.mean_ns(), Some(3_000.0));
    }

    #[test]
    fn a_new_maximum_is_exact_and_an_empty_interval_has_none() {
        let before = hist(&[1_000]);
        let mut after = before.clone();
        after.record(123_456_789);
        assert_eq!(
            HistDelta::between(&before, &after).max_ns,
            Some(123_456_789)
        );
        let none = HistDelta::between(&after, &after);
        assert_eq!(
            (none.count, none.max_ns, none.quantile_ns(0.99)),
            (0, None, None)
        );
    }

    #[test]
    fn bucket_deltas_survive_a_wrap() {
        let mut before = Box::new(LatencyHist::ZERO);
        before.buckets[10] = u32::MAX - 1;
        before.chunks[0] = u32::MAX - 1;
        before.count = 10;
        let mut after = before.clone();
        after.buckets[10] = 3; // wrapped after 5 more
        after.chunks[0] = 3;
        after.count = 15;
        let d = HistDelta::between(&before, &after);
        assert_eq!((d.buckets.clone(), d.count), (vec![(10, 5)], 5));
    }

    #[test]
    fn only_chunks_that_moved_are_read_and_the_base_follows() {
        let mut last = HistBase::default();
        let mut now = LatencyHist::ZERO;
        now.record(1_000);
        now.record(1_000);
        let d = HistDelta::advance(&mut last, &*Box::new(now));
        assert_eq!((d.count, d.sum_ns, d.buckets.len()), (2, 2_000, 1));
        assert_eq!(last, HistBase::of(&now), "the base is what was read");
        // A bucket written without its chunk's count (an event still being
        // recorded) is left for the read that sees the chunk move.
        let mut partial = now;
        partial.buckets[hyper_stats_ebpf::bucket_index(7_000_000)] += 1;
        let d = HistDelta::advance(&mut last, &partial);
        assert!(d.buckets.is_empty());
        partial.chunks[hyper_stats_ebpf::bucket_index(7_000_000) >> CHUNK_BITS] += 1;
        partial.count += 1;
        partial.sum_ns += 7_000_000;
        partial.max_ns = 7_000_000;
        let d = HistDelta::advance(&mut last, &partial);
        assert_eq!(
            (d.count, d.sum_ns, d.max_ns),
            (1, 7_000_000, Some(7_000_000))
        );
        assert_eq!(d.buckets.len(), 1);
    }

    #[test]
    fn quantiles_walk_the_buckets() {
        let values: Vec<u64> = (1..=1000).map(|i| i * 1_000).collect();
        let d = HistDelta::between(&LatencyHist::ZERO, &hist(&values));
        for (q, want) in [
            (0.0, 1_000),
            (0.5, 500_000),
            (0.99, 990_000),
            (1.0, 1_000_000),
        ] {
            let got = d.quantile_ns(q).unwrap();
            let err = got.abs_diff(want) as f64 / want as f64;
            assert!(err < 0.01, "q{q}: {got} vs {want}");
        }
    }

    #[test]
    fn thread_delta_diffs_counters_and_kvm_reasons() {
        let mut prev = Snapshot::zero();
        prev.counters = ThreadCounters {
            voluntary: 10,
            involuntary: 5,
            wakeups: 10,
            kvm_exits: 2,
            switch_ins: 15,
        };
        prev.kvm.insert(30, KvmExitStats::first(100));
        prev.kvm.insert(12, KvmExitStats::first(7));
        let mut now = prev.clone();
        now.counters.voluntary = 13;
        now.counters.involuntary = 9;
        now.counters.wakeups = 12;
        now.kvm.get_mut(&30).unwrap().record(300);
        now.kvm.insert(48, KvmExitStats::first(50));
        let d = delta(7, &prev.counters, &prev.kvm, &now.counters, &now.kvm);
        assert_eq!(
            (
                d.tid,
                d.voluntary_switches,
                d.involuntary_switches,
                d.wakeups
            ),
            (7, 3, 4, 2)
        );
        assert_eq!(
            d.kvm_exits,
            vec![
                KvmExitDelta {
                    reason: 30,
                    count: 1,
                    sum_ns: 300,
                    max_ns_ever: 300
                },
                KvmExitDelta {
                    reason: 48,
                    count: 1,
                    sum_ns: 50,
                    max_ns_ever: 50
                },
            ]
        );
    }
}
