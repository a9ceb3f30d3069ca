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
//! flight for the slot's previous thread is dropped, not misattributed; and
//! a slot given back is handed out again at the next call at the earliest.
//! The lowest free slot goes first, so the slots in use stay at the front
//! of the arrays, and the histograms are mapped only as far as the highest
//! slot handed out (in steps of [`MAP_STEP`]): the spare slots cost kernel
//! memory only, not the agent's RSS.
//!
//! # Counters by delta, histograms drained
//!
//! The kernel's counters only grow; [`ThreadMaps::read`] keeps the
//! previous read of each slot and returns the difference (wrapping).
//!
//! The histograms are drained instead ([`LatencyHist`] says how the
//! programs and the agent share them): the agent swaps to zero the
//! `touched` bits, the buckets of the lines they name and the sum, and
//! what it took is the interval. It keeps no copy of a histogram, only its
//! last maximum: the maximum of an interval is exact when it is a new
//! maximum for the thread, and otherwise the upper bound of the highest
//! bucket taken (within 0.78%).
//!
//! # Reading in place
//!
//! The counters and both histograms are accessed through shared mappings
//! of their arrays ([`MappedArray`]), not copied through the bpf syscall.
//! A slot whose `switch_ins` (run queue) or switch-out count (on-CPU) did
//! not move is not looked at further, and of a histogram that did, only
//! the cache lines its `touched` bits name: reading 1,024 busy threads so
//! touches a few cache lines each. The programs count a switch after the
//! histogram is written, and the agent reads in the opposite order, so
//! what a read misses of an event still being written it finds at the
//! next read.

use std::collections::{BTreeMap, BTreeSet};

use std::mem::{offset_of, size_of};
use std::sync::atomic::Ordering::{Acquire, Relaxed};
use std::sync::atomic::{AtomicU32, AtomicU64};

use aya::maps::{Array, HashMap, IterableMap as _, Map, MapData, MapError};
use hyper_stats_ebpf::{
    KVM_REASONS, KvmExitStats, KvmExits, LINE_BUCKETS, LatencyHist, TOUCHED_WORDS, ThreadCounters,
    ThreadState, bucket_mid, bucket_upper,
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
    pub(super) kvm_exits: Array<MapData, KvmExits>,
    /// `counters`, `runq`, `oncpu` and `kvm_exits` mapped into the agent,
    /// read every second in place.
    mapped: Mapped,
    /// The watched threads, with their slot and last read.
    pub(super) threads: BTreeMap<u32, Watched>,
    /// Slots not handed out; the lowest goes first.
    pub(super) free: BTreeSet<u32>,
}

/// The arrays read every second, mapped.
struct Mapped {
    counters: MappedArray,
    runq: MappedArray,
    oncpu: MappedArray,
    kvm_exits: MappedArray,
}

/// A watched thread.
pub(super) struct Watched {
    /// Its slot in the per-thread maps.
    slot: u32,
    /// What the last read returned, the base of the next delta.
    last: Snapshot,
}

/// What the last read of a slot saw: the base of the next delta of the
/// counters, and the histograms' maxima (their buckets are drained).
#[derive(Clone)]
struct Snapshot {
    counters: ThreadCounters,
    runq_max_ns: u64,
    oncpu_max_ns: u64,
    kvm: BTreeMap<u32, KvmExitStats>,
}

impl Snapshot {
    fn zero() -> Self {
        Self {
            counters: ThreadCounters::default(),
            runq_max_ns: 0,
            oncpu_max_ns: 0,
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

/// A histogram's words, shared with the programs: the thread's slot in a
/// mapped array, or a test's own.
trait HistWords {
    /// `sum_ns`.
    fn sum_ns(&self) -> &AtomicU64;
    /// `max_ns`.
    fn max_ns(&self) -> u64;
    /// `touched`.
    fn touched(&self) -> &[AtomicU64];
    /// The buckets of line `line`.
    fn line(&self, line: usize) -> &[AtomicU32];
}

/// The lines that the bits of `touched` word `w` name, ascending.
fn touched_lines(w: usize, mut bits: u64) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        let bit = (bits != 0).then(|| bits.trailing_zeros() as usize)?;
        bits &= bits - 1;
        Some(w * 64 + bit)
    })
}

/// The byte offset of bucket line `line` in a [`LatencyHist`].
fn line_offset(line: usize) -> usize {
    offset_of!(LatencyHist, buckets) + 4 * LINE_BUCKETS * line
}

/// Slot `slot` of a mapped [`LatencyHist`] array.
struct MappedHist<'a> {
    map: &'a MappedArray,
    slot: u32,
}

impl MappedHist<'_> {
    /// Prefetches the header: the `touched` words and the sum.
    fn prefetch_header(&self) {
        self.map.prefetch(self.slot, 0);
    }

    /// Prefetches the bucket lines `touched` names as it reads now.
    fn prefetch_touched(&self) {
        for (w, word) in self.touched().iter().enumerate() {
            for line in touched_lines(w, word.load(Relaxed)) {
                self.map.prefetch(self.slot, line_offset(line));
            }
        }
    }
}

impl HistWords for MappedHist<'_> {
    fn sum_ns(&self) -> &AtomicU64 {
        &self.map.u64s(self.slot, offset_of!(LatencyHist, sum_ns), 1)[0]
    }
    fn max_ns(&self) -> u64 {
        self.map.u64s(self.slot, offset_of!(LatencyHist, max_ns), 1)[0].load(Relaxed)
    }
    fn touched(&self) -> &[AtomicU64] {
        self.map
            .u64s(self.slot, offset_of!(LatencyHist, touched), TOUCHED_WORDS)
    }
    fn line(&self, line: usize) -> &[AtomicU32] {
        self.map.u32s(self.slot, line_offset(line), LINE_BUCKETS)
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

    /// Takes what `now` recorded since it was last taken: the `touched`
    /// bits, the buckets of the lines they name, then the sum (the reverse
    /// of the order the programs write in). `last_max_ns` is the thread's
    /// maximum as of the last interval that took buckets.
    fn take(last_max_ns: &mut u64, now: &impl HistWords) -> Self {
        // Sized once: a busy thread's second has a bucket or two per line.
        let lines: u32 = now
            .touched()
            .iter()
            .map(|w| w.load(Relaxed).count_ones())
            .sum();
        let mut buckets = Vec::with_capacity(2 * lines as usize);
        for (w, word) in now.touched().iter().enumerate() {
            if word.load(Relaxed) == 0 {
                continue;
            }
            for line in touched_lines(w, word.swap(0, Acquire)) {
                for (offset, bucket) in now.line(line).iter().enumerate() {
                    if bucket.load(Relaxed) != 0 {
                        let index = (line * LINE_BUCKETS + offset) as u32;
                        buckets.push((index, bucket.swap(0, Acquire)));
                    }
                }
            }
        }
        let sum = now.sum_ns();
        let sum_ns = match sum.load(Relaxed) {
            0 => 0,
            _ => sum.swap(0, Acquire),
        };
        let Some(&(top, _)) = buckets.last() else {
            return Self {
                sum_ns,
                ..Self::empty()
            };
        };
        // Read after the buckets, so a new maximum whose bucket was taken
        // is seen; one whose bucket was not is the next interval's.
        let max_ns = now.max_ns();
        let delta_max = if max_ns > *last_max_ns {
            max_ns
        } else {
            bucket_upper(top as usize).min(max_ns)
        };
        *last_max_ns = max_ns;
        Self {
            count: buckets.iter().map(|&(_, c)| u64::from(c)).sum(),
            sum_ns,
            max_ns: Some(delta_max),
            buckets,
        }
    }

    /// The mean, exact.
    pub fn mean_ns(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum_ns as f64 / self.count as f64)
    }

    /// The `q` quantile (0.0 to 1.0), as the midpoint of the bucket it
    /// falls in: within 0.8% of a recorded value.
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
        kvm_exits: Array<MapData, KvmExits>,
    ) -> std::io::Result<Self> {
        let mapped = Mapped {
            counters: MappedArray::new(counters.map(), size_of::<ThreadCounters>(), u32::MAX)?,
            runq: MappedArray::new(runq.map(), size_of::<LatencyHist>(), MAP_STEP)?,
            oncpu: MappedArray::new(oncpu.map(), size_of::<LatencyHist>(), MAP_STEP)?,
            kvm_exits: MappedArray::new(kvm_exits.map(), size_of::<KvmExits>(), MAP_STEP)?,
        };
        let capacity = state
            .len()
            .min(mapped.counters.max_entries())
            .min(mapped.runq.max_entries())
            .min(mapped.oncpu.max_entries())
            .min(mapped.kvm_exits.max_entries());
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
        let mut released = Vec::new();
        let result = self.rewatch(tids, &mut released);
        // Free only now: an event in flight for a thread just removed finds
        // its slot unchanged.
        self.free.extend(released);
        result
    }

    /// [`Self::set_watched`], leaving the slots it takes back in `released`.
    fn rewatch(&mut self, tids: &[u32], released: &mut Vec<u32>) -> Result<WatchChange, MapError> {
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
                released.push(w.slot);
            }
            change.removed.push(tid);
        }

        for tid in wanted {
            if self.threads.contains_key(&tid) {
                continue;
            }
            let Some(slot) = self.free.pop_first() else {
                change.refused.push(tid);
                continue;
            };
            if let Err(err) = self.claim(tid, slot) {
                self.free.insert(slot);
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

    /// Maps `slot`'s histograms, zeroes its values, then points `tid` at it.
    fn claim(&mut self, tid: u32, slot: u32) -> Result<(), MapError> {
        let cover = |mapped: &mut MappedArray, map: &MapData| {
            mapped
                .cover(map, slot, MAP_STEP)
                .map_err(|io_error| aya::sys::SyscallError {
                    call: "mmap",
                    io_error,
                })
        };
        cover(&mut self.mapped.runq, self.runq.map())?;
        cover(&mut self.mapped.oncpu, self.oncpu.map())?;
        cover(&mut self.mapped.kvm_exits, self.kvm_exits.map())?;
        let state = ThreadState {
            tid,
            ..ThreadState::default()
        };
        self.state.set(slot, state, 0)?;
        self.counters.set(slot, ThreadCounters::default(), 0)?;
        self.runq.set(slot, LatencyHist::ZERO, 0)?;
        self.oncpu.set(slot, LatencyHist::ZERO, 0)?;
        self.kvm_exits.set(slot, KvmExits::ZERO, 0)?;
        self.watched.insert(tid, slot, 0)
    }

    /// Reads every watched thread and returns what changed since the last
    /// read (or since it was watched).
    pub fn read(&mut self) -> Result<Vec<ThreadDelta>, MapError> {
        let mapped = &self.mapped;
        let hists = |slot| [&mapped.runq, &mapped.oncpu].map(|map| MappedHist { map, slot });
        // The slots in reading order: the read looks ahead, fetching the
        // counters and histogram headers of the thread `2 * AHEAD` on, and
        // the touched lines of the one `AHEAD` on, whose header came in
        // meanwhile.
        let slots: Vec<u32> = self.threads.values().map(|w| w.slot).collect();
        let mut deltas = Vec::with_capacity(self.threads.len());
        for (i, (&tid, watched)) in self.threads.iter_mut().enumerate() {
            if let Some(&ahead) = slots.get(i + 2 * AHEAD) {
                mapped.counters.prefetch(ahead, 0);
                hists(ahead).iter().for_each(MappedHist::prefetch_header);
            }
            if let Some(&ahead) = slots.get(i + AHEAD) {
                hists(ahead).iter().for_each(MappedHist::prefetch_touched);
            }
            let slot = watched.slot;
            let last = &mut watched.last;
            let [runq, oncpu] = hists(slot);
            // The counters grow after the histograms are written (see
            // `ThreadCounters::switch_ins`): a histogram whose counter did
            // not move is not read, which is most of them on a dense host.
            let counters = read_counters(&mapped.counters, slot);
            let runq = match counters.switch_ins != last.counters.switch_ins {
                true => HistDelta::take(&mut last.runq_max_ns, &runq),
                false => HistDelta::empty(),
            };
            let oncpu = match switches_out(&counters) != switches_out(&last.counters) {
                true => HistDelta::take(&mut last.oncpu_max_ns, &oncpu),
                false => HistDelta::empty(),
            };
            // Like the histograms: the table is read when its count moved.
            let kvm = (counters.kvm_exits != last.counters.kvm_exits)
                .then(|| read_kvm_exits(&mapped.kvm_exits, slot));
            deltas.push(ThreadDelta {
                tid,
                runq,
                oncpu,
                ..delta(
                    tid,
                    &last.counters,
                    &last.kvm,
                    &counters,
                    kvm.as_ref().unwrap_or(&last.kvm),
                )
            });
            last.counters = counters;
            if let Some(kvm) = kvm {
                last.kvm = kvm;
            }
        }
        Ok(deltas)
    }
}

/// Slots by which the histograms' mappings grow: 256 slots of two
/// histograms are 6.5 MiB.
const MAP_STEP: u32 = 256;

/// How many threads ahead [`ThreadMaps::read`] fetches the touched lines
/// (and twice as far, the headers): far enough for a miss to arrive (a few
/// hundred ns) while the threads in between are read.
const AHEAD: usize = 8;

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

/// Slot `slot` of the mapped KVM exit tables, by reason.
fn read_kvm_exits(map: &MappedArray, slot: u32) -> BTreeMap<u32, KvmExitStats> {
    let len = map.u32s(slot, offset_of!(KvmExits, len), 1)[0].load(Relaxed) as usize;
    let len = len.min(KVM_REASONS);
    let reasons = map.u32s(slot, offset_of!(KvmExits, reasons), len);
    let stats = map.u64s(slot, offset_of!(KvmExits, stats), 3 * len);
    reasons
        .iter()
        .zip(stats.chunks_exact(3))
        .map(|(reason, words)| {
            let stats = KvmExitStats {
                count: words[0].load(Relaxed),
                sum_ns: words[1].load(Relaxed),
                max_ns: words[2].load(Relaxed),
            };
            (reason.load(Relaxed), stats)
        })
        .collect()
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

    /// A histogram the test records into as the programs do and drains as
    /// the agent does, through the same atomic words.
    struct SharedHist(std::cell::UnsafeCell<LatencyHist>);

    impl SharedHist {
        fn new(values: &[u64]) -> Box<Self> {
            let h = Box::new(Self(std::cell::UnsafeCell::new(LatencyHist::ZERO)));
            for &v in values {
                h.record(v);
            }
            h
        }

        /// What the programs do: `LatencyHist::record`.
        fn record(&self, v: u64) {
            // Safety: single-threaded; no reference into the value lives.
            unsafe { &mut *self.0.get() }.record(v);
        }

        /// A copy of the words as they are now.
        fn now(&self) -> LatencyHist {
            // Safety: as in `record`.
            unsafe { *self.0.get() }
        }

        fn take(&self, last_max_ns: &mut u64) -> HistDelta {
            HistDelta::take(last_max_ns, self)
        }
    }

    impl HistWords for SharedHist {
        fn sum_ns(&self) -> &AtomicU64 {
            // Safety (each): a field of the value, aligned, accessed by
            // the test only through these atomics while a take runs.
            unsafe { AtomicU64::from_ptr(&raw mut (*self.0.get()).sum_ns) }
        }
        fn max_ns(&self) -> u64 {
            unsafe { AtomicU64::from_ptr(&raw mut (*self.0.get()).max_ns) }.load(Relaxed)
        }
        fn touched(&self) -> &[AtomicU64] {
            let words = unsafe { &raw mut (*self.0.get()).touched };
            unsafe { std::slice::from_raw_parts(words.cast::<AtomicU64>(), TOUCHED_WORDS) }
        }
        fn line(&self, line: usize) -> &[AtomicU32] {
            let buckets = unsafe { &raw mut (*self.0.get()).buckets }.cast::<u32>();
            let first = unsafe { buckets.add(line * LINE_BUCKETS) };
            unsafe { std::slice::from_raw_parts(first.cast::<AtomicU32>(), LINE_BUCKETS) }
        }
    }

    #[test]
    fn a_take_is_what_was_recorded_since_the_last() {
        let h = SharedHist::new(&[1_000, 5_000_000]);
        let mut max = 0;
        let first = h.take(&mut max);
        assert_eq!((first.count, first.sum_ns), (2, 5_001_000));
        for v in [2_000, 3_000, 4_000] {
            h.record(v);
        }
        let d = h.take(&mut max);
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
    fn a_take_leaves_the_histogram_empty() {
        let h = SharedHist::new(&[3, 1_000, 70_000, 1 << 40]);
        let d = h.take(&mut 0);
        assert_eq!(d.count, 4);
        let left = h.now();
        assert_eq!((left.sum_ns, left.touched), (0, [0; TOUCHED_WORDS]));
        assert!(left.buckets.iter().all(|&c| c == 0));
        assert_eq!(left.max_ns, 1 << 40, "the maximum is the thread's");
    }

    #[test]
    fn a_new_maximum_is_exact_and_an_empty_interval_has_none() {
        let h = SharedHist::new(&[1_000]);
        let mut max = 0;
        h.take(&mut max);
        h.record(123_456_789);
        assert_eq!(h.take(&mut max).max_ns, Some(123_456_789));
        let none = h.take(&mut max);
        assert_eq!(
            (none.count, none.max_ns, none.quantile_ns(0.99)),
            (0, None, None)
        );
    }

    #[test]
    fn an_event_half_recorded_is_taken_whole_by_the_next_read() {
        let h = SharedHist::new(&[]);
        let mut max = 0;
        // The programs added the sum and the bucket, not yet the line's
        // bit: this read takes the sum only...
        let v = 7_000_000;
        // Safety: single-threaded, no other reference lives.
        let words = unsafe { &mut *h.0.get() };
        words.sum_ns += v;
        words.max_ns = v;
        words.buckets[hyper_stats_ebpf::bucket_index(v)] += 1;
        let d = h.take(&mut max);
        assert_eq!((d.count, d.sum_ns, d.max_ns), (0, v, None));
        // ...and the next, after the bit, takes the bucket, its maximum
        // still exact.
        let line = hyper_stats_ebpf::bucket_index(v) / LINE_BUCKETS;
        let words = unsafe { &mut *h.0.get() };
        words.touched[line / 64] |= 1 << (line % 64);
        let d = h.take(&mut max);
        assert_eq!((d.count, d.sum_ns, d.max_ns), (1, 0, Some(v)));
    }

    #[test]
    fn quantiles_walk_the_buckets() {
        let values: Vec<u64> = (1..=1000).map(|i| i * 1_000).collect();
        let d = SharedHist::new(&values).take(&mut 0);
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
    fn takes_racing_the_programs_lose_and_double_nothing() {
        // One thread records as the programs would, another takes every
        // few microseconds: every recorded duration is taken exactly once.
        let h: &'static SharedHist = Box::leak(SharedHist::new(&[]));
        struct Shared(&'static SharedHist);
        // Safety: the words both threads touch are accessed atomically
        // (record's adds and ors, take's swaps), but for `max_ns`, which
        // the programs write plainly too.
        unsafe impl Sync for Shared {}
        unsafe impl Send for Shared {}
        let shared = Shared(h);
        let values: Vec<u64> = (0..200_000u64).map(|i| (i * 7_919) % 5_000_000).collect();
        let want_sum: u64 = values.iter().sum();
        let want_count = values.len() as u64;
        let done = std::sync::atomic::AtomicBool::new(false);
        let (mut count, mut sum) = (0, 0);
        std::thread::scope(|scope| {
            let shared = &shared;
            let done = &done;
            scope.spawn(move || {
                let h = shared.0;
                for &v in &values {
                    // What the programs do: `record` through the value's
                    // pointer, its adds and ors atomic.
                    // Safety: the taker touches only the words `record`
                    // writes atomically (and reads `max_ns` atomically).
                    unsafe { (*h.0.get()).record(v) };
                }
                done.store(true, std::sync::atomic::Ordering::Release);
            });
            loop {
                let finished = done.load(Acquire);
                let d = shared.0.take(&mut 0);
                count += d.count;
                sum += d.sum_ns;
                if finished {
                    break;
                }
            }
        });
        assert_eq!((count, sum), (want_count, want_sum));
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
