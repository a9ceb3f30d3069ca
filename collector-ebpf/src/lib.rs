//! What the eBPF programs and the agent must agree on: map names, the
//! `#[repr(C)]` layout of every map value, the histogram bucket math and
//! the per-thread state machine.
//!
//! This crate is compiled twice: for the bpf target, as the library of the
//! programs in `main.rs`, and for the host, as a dependency of the agent
//! (`hyper-stats`), with the `user` feature adding `aya::Pod` impls so the
//! agent can read the maps. Whatever both sides compute lives here and only
//! here: the kernel records with [`bucket_index`], the agent decodes with
//! [`bucket_lower`] and [`bucket_upper`], and the transitions the programs
//! make on each scheduler or KVM event are plain functions on plain structs
//! ([`ThreadState::on_switch_out`] and friends), unit-tested on the host.
//!
//! # What is measured, per watched thread
//!
//! - run-queue latency: from the moment the thread is queued runnable (woken,
//!   or preempted while still runnable) until `sched_switch` puts it on a
//!   CPU. The programs take each wait from the kernel's own accounting (the
//!   task's `sched_info`, what `/proc/TID/schedstat` reports), not from
//!   their own clock: the wakeup tracepoint fires after the enqueue that
//!   starts the kernel's clock, so a wait timed from it comes out short by
//!   the wakeup path's length (0.2-2.4 us per wait under nested
//!   virtualization). See [`SchedInfo`];
//! - on-CPU time: from being switched in until being switched out, as the
//!   CPU time the kernel charged the thread for the slice (the difference
//!   of its `se.sum_exec_runtime`, schedstat field 1);
//! - voluntary and involuntary switches, counted as the kernel counts
//!   `nvcsw`/`nivcsw`;
//! - KVM exits: the time from `kvm_exit` to the next `kvm_entry` of the same
//!   thread, per exit reason.
#![no_std]
// The bpf target has no atomic read-modify-write types in `core` (no
// compare-and-swap), only the instructions: see [`atomic`].
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics))]
#![cfg_attr(target_arch = "bpf", allow(internal_features))]

/// The atomic adds and ors of [`LatencyHist::record`]: the bpf target's
/// `BPF_ATOMIC` instructions through the compiler's intrinsics, and the
/// same operations through `core`'s atomics on the host (tests).
mod atomic {
    #[cfg(target_arch = "bpf")]
    use core::intrinsics::{AtomicOrdering::Relaxed, atomic_or, atomic_xadd};

    /// `*dst += v`, atomically.
    ///
    /// # Safety
    /// `dst` is valid and aligned, and touched by others only atomically.
    #[inline(always)]
    pub(crate) unsafe fn add_u64(dst: *mut u64, v: u64) {
        #[cfg(target_arch = "bpf")]
        unsafe {
            atomic_xadd::<u64, u64, { Relaxed }>(dst, v)
        };
        #[cfg(not(target_arch = "bpf"))]
        unsafe { core::sync::atomic::AtomicU64::from_ptr(dst) }
            .fetch_add(v, core::sync::atomic::Ordering::Relaxed);
    }

    /// `*dst += v`, atomically.
    ///
    /// # Safety
    /// As for [`add_u64`].
    #[inline(always)]
    pub(crate) unsafe fn add_u32(dst: *mut u32, v: u32) {
        #[cfg(target_arch = "bpf")]
        unsafe {
            atomic_xadd::<u32, u32, { Relaxed }>(dst, v)
        };
        #[cfg(not(target_arch = "bpf"))]
        unsafe { core::sync::atomic::AtomicU32::from_ptr(dst) }
            .fetch_add(v, core::sync::atomic::Ordering::Relaxed);
    }

    /// `*dst |= v`, atomically.
    ///
    /// # Safety
    /// As for [`add_u64`].
    #[inline(always)]
    pub(crate) unsafe fn or_u64(dst: *mut u64, v: u64) {
        #[cfg(target_arch = "bpf")]
        unsafe {
            atomic_or::<u64, u64, { Relaxed }>(dst, v)
        };
        #[cfg(not(target_arch = "bpf"))]
        unsafe { core::sync::atomic::AtomicU64::from_ptr(dst) }
            .fetch_or(v, core::sync::atomic::Ordering::Relaxed);
    }
}

// ---------------------------------------------------------------- maps

/// `HashMap<u32, u32>`: watched thread id to its slot. Filled by the agent;
/// every other per-thread map is an array indexed by the slot, so the hot
/// path does one hash lookup per thread and array lookups after that.
pub const WATCHED: &str = "WATCHED";
/// `Array<ThreadState>` by slot: the kernel's timestamps, private to the
/// programs. The agent zeroes a slot before handing it to a new thread.
pub const THREAD_STATE: &str = "THREAD_STATE";
/// `Array<ThreadCounters>` by slot: switch and wakeup counts.
pub const THREAD_COUNTERS: &str = "THREAD_COUNTERS";
/// `Array<LatencyHist>` by slot: run-queue latency.
pub const RUNQ_HIST: &str = "RUNQ_HIST";
/// `Array<LatencyHist>` by slot: on-CPU time per switch-in.
pub const ONCPU_HIST: &str = "ONCPU_HIST";
/// `Array<KvmExits>` by slot: exit handling time per exit reason.
pub const KVM_EXITS: &str = "KVM_EXITS";
/// Per-CPU array of `u64` counters, indexed by [`Stat`]: what the programs
/// saw and what they had to drop. Per-CPU so the hot path never contends on
/// a cache line; the agent sums the CPUs.
pub const STATS: &str = "STATS";
/// The `.rodata` global holding [`KernelOffsets`], set at load time with
/// `EbpfLoader::override_global`.
pub const KERNEL_OFFSETS: &str = "KERNEL_OFFSETS";

/// Slots (and so `max_entries` of every per-slot map) compiled into the
/// object. The agent always sets the real number at load time, sized from
/// the host (see the agent's `sources::ebpf::slots`); this is only what a
/// loader that does not would get. Each slot costs two [`LatencyHist`] of
/// 6.8 KiB of locked kernel memory.
pub const DEFAULT_MAX_WATCHED: u32 = 256;
/// Exit reasons per slot in [`KVM_EXITS`]: a guest's vCPU sees a dozen or
/// two (VMX: external interrupts, HLT, I/O, MSR access, EPT violations and
/// misconfigurations, the preemption timer, ...); an exit of a reason
/// beyond these is counted in [`Stat::KvmExitsFull`] and dropped.
pub const KVM_REASONS: usize = 32;
/// `map_flags` of the per-slot arrays the agent reads every second
/// ([`THREAD_COUNTERS`], [`RUNQ_HIST`], [`ONCPU_HIST`], [`KVM_EXITS`]):
/// `BPF_F_MMAPABLE`,
/// so the agent maps them into its memory and reads a slot's values in
/// place, instead of copying 6.8 KiB per histogram through the bpf syscall
/// (Linux 5.5 and later).
pub const MMAPABLE: u32 = 1 << 10;

/// The counters in [`STATS`], by index.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stat {
    /// `sched:sched_switch` events seen (all tasks, watched or not).
    SwitchEvents = 0,
    /// `sched_wakeup` and `sched_wakeup_new` events seen (all tasks).
    WakeupEvents = 1,
    /// `kvm_exit` events seen (all tasks).
    KvmExitEvents = 2,
    /// Kernel fields that could not be read (`bpf_probe_read_kernel`
    /// failed): the event, or the run-queue wait it ended, was dropped.
    ReadErrors = 3,
    /// A watched thread's slot had no entry in a per-slot map (the agent
    /// handed out a slot beyond `max_entries`): the event was dropped.
    SlotMissing = 4,
    /// A thread's [`KVM_EXITS`] table had no room for a new exit reason:
    /// the exit was dropped.
    KvmExitsFull = 5,
    /// Durations above [`MAX_TRACKABLE_NS`], counted in the last bucket.
    Clamped = 6,
    /// An event raced with the agent handing the thread's slot to another
    /// thread: the event was dropped.
    StaleSlot = 7,
}

impl Stat {
    /// Every counter, in index order.
    pub const ALL: [Stat; 8] = [
        Stat::SwitchEvents,
        Stat::WakeupEvents,
        Stat::KvmExitEvents,
        Stat::ReadErrors,
        Stat::SlotMissing,
        Stat::KvmExitsFull,
        Stat::Clamped,
        Stat::StaleSlot,
    ];

    /// The counter's index in [`STATS`].
    pub const fn index(self) -> u32 {
        self as u32
    }

    /// A stable name for the counter, used for the agent's own stats.
    pub const fn name(self) -> &'static str {
        match self {
            Stat::SwitchEvents => "switch_events",
            Stat::WakeupEvents => "wakeup_events",
            Stat::KvmExitEvents => "kvm_exit_events",
            Stat::ReadErrors => "read_errors",
            Stat::SlotMissing => "slot_missing",
            Stat::KvmExitsFull => "kvm_exits_full",
            Stat::Clamped => "clamped",
            Stat::StaleSlot => "stale_slot",
        }
    }
}

/// Number of entries in [`STATS`]: one per [`Stat`].
pub const STATS_LEN: u32 = Stat::ALL.len() as u32;

/// Program names in the object, one per hook (the function's name in
/// `main.rs`'s `probes` module).
pub mod program {
    /// `sched_switch`, a BTF tracepoint (`tp_btf`).
    pub const SCHED_SWITCH: &str = "sched_switch";
    /// `sched_wakeup`, a BTF tracepoint.
    pub const SCHED_WAKEUP: &str = "sched_wakeup";
    /// `sched_wakeup_new`, a BTF tracepoint.
    pub const SCHED_WAKEUP_NEW: &str = "sched_wakeup_new";
    /// `kvm:kvm_exit` tracepoint.
    pub const KVM_EXIT: &str = "kvm_exit";
    /// `kvm:kvm_entry` tracepoint.
    pub const KVM_ENTRY: &str = "kvm_entry";
    /// Raw tracepoint driving the `kvm_exit` handler with `args[0]` as the
    /// exit reason, for `BPF_PROG_TEST_RUN` only (never attached): the KVM
    /// tracepoints do not fire on hosts without hardware virtualization.
    pub const KVM_EXIT_TEST: &str = "kvm_exit_test";
    /// Raw tracepoint driving the `kvm_entry` handler, for
    /// `BPF_PROG_TEST_RUN` only.
    pub const KVM_ENTRY_TEST: &str = "kvm_entry_test";
}

// ---------------------------------------------------------------- offsets

/// Byte offsets of the kernel fields the programs read: struct members from
/// the kernel's BTF (`/sys/kernel/btf/vmlinux`), and the one classic
/// tracepoint field from tracefs' format file. They live in a `.rodata`
/// global, set at load time, so the programs carry no layout of their own.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelOffsets {
    /// `task_struct.pid` (`pid_t`): the thread id of a task the scheduler
    /// tracepoints hand over.
    pub task_pid: u32,
    /// `task_struct.sched_info.run_delay` (`u64`): the run-queue wait the
    /// kernel has summed for the task, `/proc/TID/schedstat` field 2.
    pub task_run_delay: u32,
    /// `task_struct.sched_info.last_queued` (`u64`): when the task's
    /// current run-queue wait started, in `rq->clock` time; 0 if none.
    pub task_last_queued: u32,
    /// `task_struct.se.cfs_rq` (pointer): the CFS run queue the task is on.
    pub task_cfs_rq: u32,
    /// `task_struct.se.sum_exec_runtime` (`u64`): the CPU time the kernel
    /// has charged the task, `/proc/TID/schedstat` field 1.
    pub task_sum_exec_runtime: u32,
    /// `cfs_rq.rq` (pointer): the CPU run queue that CFS queue belongs to.
    pub cfs_rq_rq: u32,
    /// `rq.clock` (`u64`): the clock the kernel times run-queue waits with.
    pub rq_clock: u32,
    /// `kvm_exit.exit_reason` (`unsigned int`), in the tracepoint's record.
    pub kvm_exit_reason: u32,
}

impl KernelOffsets {
    /// The offsets of the 6.18 kernel this was written on; the agent always
    /// overrides them with what BTF and tracefs say.
    pub const DEFAULT: Self = Self {
        task_pid: 1264,
        task_run_delay: 1016,
        task_last_queued: 1048,
        task_cfs_rq: 296,
        task_sum_exec_runtime: 232,
        cfs_rq_rq: 312,
        rq_clock: 2776,
        kvm_exit_reason: 8,
    };
}

// ---------------------------------------------------------------- histogram

/// Each power-of-two range of values is split into `2^SUB_BUCKET_BITS`
/// linear sub-buckets: 64, so a bucket is at most 1/64 (1.56%) of its
/// lower bound wide, and its midpoint within 0.78% of any value in it:
/// inside the 1% the percentiles promise, at half the memory and half the
/// cache lines a busy thread touches per second of 128 sub-buckets.
pub const SUB_BUCKET_BITS: u32 = 6;
/// Sub-buckets per power of two.
pub const SUB_BUCKETS: u64 = 1 << SUB_BUCKET_BITS;
/// Durations are resolved up to `2^HIST_MAX_BITS` ns (4.29 s): longer
/// waits or slices are rare enough to share the last bucket (they still add
/// their exact value to `sum_ns` and `max_ns`), and each extra power of two
/// costs 256 bytes per histogram.
pub const HIST_MAX_BITS: u32 = 32;
/// The largest duration with a bucket of its own.
pub const MAX_TRACKABLE_NS: u64 = (1 << HIST_MAX_BITS) - 1;
/// Buckets per histogram: values below `2 * SUB_BUCKETS` have one bucket
/// each, then `SUB_BUCKETS` per power of two up to [`HIST_MAX_BITS`].
pub const HIST_BUCKETS: usize =
    ((HIST_MAX_BITS - SUB_BUCKET_BITS + 1) as u64 * SUB_BUCKETS) as usize;
/// Buckets per line, as a shift: 16 `u32` counts fill one 64-byte cache
/// line, the unit the agent reads (see [`LatencyHist::touched`]).
pub const LINE_BITS: u32 = 4;
/// Buckets per line.
pub const LINE_BUCKETS: usize = 1 << LINE_BITS;
/// Lines per histogram.
pub const HIST_LINES: usize = HIST_BUCKETS.div_ceil(LINE_BUCKETS);
/// `u64` words of [`LatencyHist::touched`]: one bit per line.
pub const TOUCHED_WORDS: usize = HIST_LINES.div_ceil(64);

/// The bucket of a duration in ns; durations above [`MAX_TRACKABLE_NS`] go
/// to the last bucket. Branch-light and loop-free for the verifier.
#[inline(always)]
pub const fn bucket_index(value: u64) -> usize {
    let v = if value > MAX_TRACKABLE_NS {
        MAX_TRACKABLE_NS
    } else {
        value
    };
    if v < SUB_BUCKETS {
        return v as usize;
    }
    // v >= 128, so the highest set bit is at 7 or above.
    let shift = 63 - v.leading_zeros() - SUB_BUCKET_BITS;
    (shift as u64 * SUB_BUCKETS + (v >> shift)) as usize
}

/// The smallest value that falls in bucket `index`.
pub const fn bucket_lower(index: usize) -> u64 {
    let index = index as u64;
    if index < 2 * SUB_BUCKETS {
        return index;
    }
    let shift = index / SUB_BUCKETS - 1;
    (index % SUB_BUCKETS + SUB_BUCKETS) << shift
}

/// The largest value that falls in bucket `index` (inclusive).
pub const fn bucket_upper(index: usize) -> u64 {
    bucket_lower(index + 1) - 1
}

/// The value a bucket stands for when decoding: its midpoint, off by at
/// most half a bucket (0.78%) from any value recorded in it.
pub const fn bucket_mid(index: usize) -> u64 {
    let lower = bucket_lower(index);
    lower + (bucket_upper(index) - lower) / 2
}

/// A log-linear histogram of durations in ns, one per watched thread and
/// measure, drained by the agent.
///
/// # Drained, not diffed
/// The programs add; the agent takes. Every second the agent swaps to zero
/// the `touched` words, then each bucket of the lines they name, then
/// `sum_ns` (atomic exchanges on its mapping of the array), and what it
/// took is the interval: it keeps no copy of the last read, and reads only
/// the cache lines that changed. The programs write in the opposite order
/// (`sum_ns`, the bucket, then its line's bit), all with atomic adds and
/// ors, so no update is lost or taken twice: an event the agent's swaps
/// race with is taken whole now or at the next read (its `sum_ns` may come
/// one read before its bucket, never after).
///
/// The layout keeps the header in the first cache line and starts the
/// buckets on the second: the value is a multiple of 64 bytes and the
/// kernel puts an mmapable array's first value on a page boundary, so every
/// line of [`LINE_BUCKETS`] buckets is one cache line.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatencyHist {
    /// The sum of the durations recorded since the agent last took it.
    pub sum_ns: u64,
    /// The longest since the slot was handed out, exact: only raised.
    pub max_ns: u64,
    /// Bit `l % 64` of word `l / 64` is set once a duration is counted in
    /// line `l` (buckets `l * LINE_BUCKETS..`), until the agent takes it.
    pub touched: [u64; TOUCHED_WORDS],
    /// Pads the header to one cache line.
    pub reserved: [u64; 6 - TOUCHED_WORDS],
    /// Counts per bucket since the agent last took them; see
    /// [`bucket_index`].
    pub buckets: [u32; HIST_BUCKETS],
}

impl LatencyHist {
    /// An empty histogram.
    pub const ZERO: Self = Self {
        sum_ns: 0,
        max_ns: 0,
        touched: [0; TOUCHED_WORDS],
        reserved: [0; 6 - TOUCHED_WORDS],
        buckets: [0; HIST_BUCKETS],
    };

    /// Records one duration. Returns `true` if it was above
    /// [`MAX_TRACKABLE_NS`] and was counted in the last bucket.
    #[inline(always)]
    pub fn record(&mut self, ns: u64) -> bool {
        // Atomic: the agent swaps these to zero while programs add (see
        // the type's doc); `max_ns` only the programs write.
        // Safety (each call): a field of `self`, valid and aligned, which
        // the agent touches only atomically.
        unsafe { atomic::add_u64(&mut self.sum_ns, ns) };
        if ns > self.max_ns {
            self.max_ns = ns;
        }
        let index = bucket_index(ns);
        if let Some(bucket) = self.buckets.get_mut(index) {
            unsafe { atomic::add_u32(bucket, 1) };
        }
        let line = index >> LINE_BITS;
        if let Some(word) = self.touched.get_mut(line / 64) {
            unsafe { atomic::or_u64(word, 1 << (line % 64)) };
        }
        ns > MAX_TRACKABLE_NS
    }
}

// ---------------------------------------------------------------- per thread

/// Switch and wakeup counts of one watched thread. They only grow.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ThreadCounters {
    /// Switches out because the thread blocked (the kernel's `nvcsw`).
    pub voluntary: u64,
    /// Switches out while still runnable: preempted, or yielded (the
    /// kernel's `nivcsw`).
    pub involuntary: u64,
    /// Wakeups (`sched_wakeup` and `sched_wakeup_new`).
    pub wakeups: u64,
    /// KVM exits whose entry back into the guest was seen.
    pub kvm_exits: u64,
    /// Switches in. Counted after the run-queue histogram is written, so an
    /// unchanged count tells the agent the histogram is unchanged too and
    /// need not be read (like `voluntary + involuntary` for on-CPU time).
    pub switch_ins: u64,
}

/// What the programs remember about a watched thread between events.
/// A zero timestamp means "unknown": the first event after a slot is handed
/// out never yields a bogus duration.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ThreadState {
    /// The kernel's CPU-time total for the thread at its last switch-in,
    /// while it is on a CPU (see `on_cpu`).
    pub exec_runtime_ns: u64,
    /// When the thread last left the guest, until it enters it again.
    pub kvm_exit_since_ns: u64,
    /// The kernel's run-queue total for the thread as of its last switch-in,
    /// the wait that switch-in ended included (see [`SchedInfo`]).
    pub run_delay_ns: u64,
    /// The reason of the last KVM exit.
    pub kvm_exit_reason: u32,
    /// The thread the slot belongs to, set by the agent when it hands the
    /// slot out. An event that found the slot through a `WATCHED` entry
    /// removed meanwhile (the slot given to another thread) sees another
    /// tid here and is dropped.
    pub tid: u32,
    /// 1 once `run_delay_ns` holds a value: the first wakeup, switch-out or
    /// switch-in after the slot is handed out sets the base (a total of 0
    /// is a real value, so it cannot mark "unknown").
    pub run_delay_known: u32,
    /// 1 while the thread is on a CPU with `exec_runtime_ns` set, so its
    /// switch-out can record the slice.
    pub on_cpu: u32,
}

/// Whether a switch-out is involuntary, the way the kernel counts
/// `nivcsw`: the task was preempted, or left the CPU still in
/// `TASK_RUNNING` (yielded). `prev_state` is the raw task state the
/// `sched_switch` BTF tracepoint passes.
#[inline(always)]
pub const fn involuntary(preempt: bool, prev_state: u32) -> bool {
    preempt || prev_state == 0
}

/// The kernel's run-queue accounting of a task that `sched_switch` is about
/// to put on a CPU, read at the tracepoint.
///
/// The tracepoint fires just before the kernel's `sched_info_arrive()`,
/// which adds `rq.clock - last_queued` to `run_delay` (when a wait is in
/// progress). So the total as it will be once the task runs is known at the
/// tracepoint, and the wait this switch-in ends is that total less the one
/// at the thread's previous switch-in: exactly what `/proc/TID/schedstat`
/// adds for it, parts accounted on another CPU before a migration
/// included.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SchedInfo {
    /// `sched_info.run_delay`: the total before this switch-in.
    pub run_delay_ns: u64,
    /// `sched_info.last_queued`: the start of the wait in progress, or 0.
    pub last_queued_ns: u64,
    /// `rq.clock` of the CPU the task is switched in on, the value the
    /// kernel's accounting is about to use.
    pub rq_clock_ns: u64,
    /// `se.sum_exec_runtime`: the CPU time charged so far, the base of the
    /// slice this switch-in starts.
    pub sum_exec_runtime_ns: u64,
}

impl SchedInfo {
    /// `run_delay` as the kernel is about to leave it.
    #[inline(always)]
    pub const fn run_delay_after_arrival(&self) -> u64 {
        if self.last_queued_ns == 0 {
            return self.run_delay_ns;
        }
        self.run_delay_ns
            .wrapping_add(self.rq_clock_ns.saturating_sub(self.last_queued_ns))
    }
}

/// What a switch-out or switch-in did beyond updating the thread's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recorded {
    /// A duration was recorded.
    pub recorded: bool,
    /// It was above [`MAX_TRACKABLE_NS`].
    pub clamped: bool,
}

impl Recorded {
    const NONE: Self = Self {
        recorded: false,
        clamped: false,
    };
}

impl ThreadState {
    /// `sched_wakeup`/`sched_wakeup_new` for this thread: counted only; the
    /// wait it starts is timed by the kernel (see [`SchedInfo`]).
    #[inline(always)]
    pub fn on_wakeup(counters: &mut ThreadCounters) {
        counters.wakeups = counters.wakeups.wrapping_add(1);
    }

    /// `sched_switch` with this thread as `prev`: records the slice from
    /// the kernel's CPU-time total `sum_exec_runtime_ns` (none if it could
    /// not be read), and counts the switch by kind (see [`involuntary`]).
    /// The scheduler has charged `prev` its slice before the tracepoint
    /// fires, so the total is final.
    #[inline(always)]
    pub fn on_switch_out(
        &mut self,
        counters: &mut ThreadCounters,
        oncpu: &mut LatencyHist,
        sum_exec_runtime_ns: Option<u64>,
        involuntary: bool,
    ) -> Recorded {
        let mut done = Recorded::NONE;
        if let (1, Some(total)) = (self.on_cpu, sum_exec_runtime_ns) {
            done.recorded = true;
            done.clamped = oncpu.record(total.wrapping_sub(self.exec_runtime_ns));
        }
        self.on_cpu = 0;
        if involuntary {
            counters.involuntary = counters.involuntary.wrapping_add(1);
        } else {
            counters.voluntary = counters.voluntary.wrapping_add(1);
        }
        done
    }

    /// `sched_switch` with this thread as `next`: records the run-queue
    /// wait this switch-in ends and sets the base of the slice it starts,
    /// from the kernel's accounting `sched` (none if it could not be read:
    /// the wait and the slice are dropped, and the next switch-in only sets
    /// the base again).
    #[inline(always)]
    pub fn on_switch_in(
        &mut self,
        counters: &mut ThreadCounters,
        runq: &mut LatencyHist,
        sched: Option<SchedInfo>,
    ) -> Recorded {
        let mut done = Recorded::NONE;
        match sched {
            Some(sched) => {
                let total = sched.run_delay_after_arrival();
                if self.run_delay_known != 0 {
                    done.recorded = true;
                    done.clamped = runq.record(total.wrapping_sub(self.run_delay_ns));
                }
                self.run_delay_ns = total;
                self.run_delay_known = 1;
                self.exec_runtime_ns = sched.sum_exec_runtime_ns;
                self.on_cpu = 1;
            }
            None => {
                self.run_delay_known = 0;
                self.on_cpu = 0;
            }
        }
        counters.switch_ins = counters.switch_ins.wrapping_add(1);
        done
    }

    /// Whether the run-queue base is unknown, so the thread's next wakeup
    /// or switch-out should read it (see [`Self::on_run_delay_base`]).
    #[inline(always)]
    pub const fn needs_run_delay(&self) -> bool {
        self.run_delay_known == 0
    }

    /// The thread's run-queue total `run_delay_ns`, read at its wakeup or
    /// switch-out while [`Self::needs_run_delay`]: until its next switch-in
    /// the total grows by exactly the wait that switch-in ends, so it is
    /// the base that lets the first wait after watching starts count.
    #[inline(always)]
    pub fn on_run_delay_base(&mut self, run_delay_ns: u64) {
        if self.run_delay_known == 0 {
            self.run_delay_ns = run_delay_ns;
            self.run_delay_known = 1;
        }
    }

    /// `kvm_exit` on this thread: the guest left with `reason`.
    #[inline(always)]
    pub fn on_kvm_exit(&mut self, now_ns: u64, reason: u32) {
        self.kvm_exit_since_ns = now_ns;
        self.kvm_exit_reason = reason;
    }

    /// `kvm_entry` on this thread: records the exit it ends in `exits`,
    /// if its start was seen, then counts it in `counters` (so an
    /// unchanged count tells the agent the table is unchanged too).
    /// Returns `false` if the exit was dropped: its reason found no room.
    #[inline(always)]
    pub fn on_kvm_entry(
        &mut self,
        counters: &mut ThreadCounters,
        exits: &mut KvmExits,
        now_ns: u64,
    ) -> bool {
        if self.kvm_exit_since_ns == 0 {
            return true;
        }
        let ns = now_ns.saturating_sub(self.kvm_exit_since_ns);
        self.kvm_exit_since_ns = 0;
        if !exits.record(self.kvm_exit_reason, ns) {
            return false;
        }
        counters.kvm_exits = counters.kvm_exits.wrapping_add(1);
        true
    }
}

/// Value of [`KVM_EXITS`]: one thread's exits by reason, in the order the
/// reasons were first seen. Only the thread's own `kvm_entry` writes it;
/// its counts only grow, and the agent diffs two reads.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvmExits {
    /// The reasons in use, as the `kvm_exit` tracepoint gives them (VMX
    /// basic exit reason plus flags, or the SVM exit code): the first
    /// `len`.
    pub reasons: [u32; KVM_REASONS],
    /// Reasons in use; raised after the new reason's entry is written.
    pub len: u32,
    /// Keeps `stats` 8-byte aligned.
    pub reserved: u32,
    /// The exits of `reasons[i]`.
    pub stats: [KvmExitStats; KVM_REASONS],
}

impl KvmExits {
    /// No exits.
    pub const ZERO: Self = Self {
        reasons: [0; KVM_REASONS],
        len: 0,
        reserved: 0,
        stats: [KvmExitStats::ZERO; KVM_REASONS],
    };

    /// Records one exit of `reason` that took `ns`; `false` if the reason
    /// is new and the table is full.
    #[inline(always)]
    pub fn record(&mut self, reason: u32, ns: u64) -> bool {
        let len = self.len as usize;
        for i in 0..KVM_REASONS {
            if i >= len {
                break;
            }
            if self.reasons.get(i) == Some(&reason) {
                if let Some(stats) = self.stats.get_mut(i) {
                    stats.record(ns);
                }
                return true;
            }
        }
        let (Some(slot), Some(stats)) = (self.reasons.get_mut(len), self.stats.get_mut(len)) else {
            return false;
        };
        *slot = reason;
        *stats = KvmExitStats::first(ns);
        self.len = len as u32 + 1;
        true
    }

    /// The reasons in use with their stats.
    pub fn iter(&self) -> impl Iterator<Item = (u32, KvmExitStats)> + '_ {
        let len = (self.len as usize).min(KVM_REASONS);
        self.reasons[..len].iter().copied().zip(self.stats)
    }
}

/// Exits of one thread for one reason (in [`KvmExits`]). Only grows.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KvmExitStats {
    /// Exits.
    pub count: u64,
    /// Total time from exit to the next entry.
    pub sum_ns: u64,
    /// The longest.
    pub max_ns: u64,
}

impl KvmExitStats {
    /// No exits.
    pub const ZERO: Self = Self {
        count: 0,
        sum_ns: 0,
        max_ns: 0,
    };

    /// The stats of a first exit.
    #[inline(always)]
    pub const fn first(ns: u64) -> Self {
        Self {
            count: 1,
            sum_ns: ns,
            max_ns: ns,
        }
    }

    /// Adds one exit.
    #[inline(always)]
    pub fn record(&mut self, ns: u64) {
        self.count = self.count.wrapping_add(1);
        self.sum_ns = self.sum_ns.wrapping_add(ns);
        if ns > self.max_ns {
            self.max_ns = ns;
        }
    }
}

#[cfg(feature = "user")]
mod pod {
    // Safety: every type is `#[repr(C)]`, made only of integers, with no
    // implicit padding (the size asserts below check the sums).
    unsafe impl aya::Pod for super::KernelOffsets {}
    unsafe impl aya::Pod for super::LatencyHist {}
    unsafe impl aya::Pod for super::ThreadCounters {}
    unsafe impl aya::Pod for super::ThreadState {}
    unsafe impl aya::Pod for super::KvmExits {}
    unsafe impl aya::Pod for super::KvmExitStats {}
}

// The kernel and the agent must agree on these sizes; a change here means
// both sides are rebuilt together (they are: the agent embeds the object).
const _: () = assert!(core::mem::size_of::<KernelOffsets>() == 32);
const _: () = assert!(core::mem::size_of::<LatencyHist>() == 64 + 4 * HIST_BUCKETS);
// A multiple of 64: the array's element size, so a slot's histogram starts
// at `slot * size_of` in the agent's mapping, on a cache line.
const _: () = assert!(core::mem::size_of::<LatencyHist>().is_multiple_of(64));
const _: () = assert!(core::mem::offset_of!(LatencyHist, buckets) == 64);
const _: () = assert!(core::mem::size_of::<ThreadCounters>() == 40);
const _: () = assert!(core::mem::size_of::<ThreadState>() == 40);
const _: () = assert!(core::mem::size_of::<KvmExits>() == 8 + 28 * KVM_REASONS);
const _: () = assert!(core::mem::size_of::<KvmExitStats>() == 24);

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use super::*;

    #[test]
    fn stat_indexes_are_dense_and_names_unique() {
        for (i, stat) in Stat::ALL.iter().enumerate() {
            assert_eq!(stat.index() as usize, i);
            for other in &Stat::ALL[..i] {
                assert_ne!(stat.name(), other.name());
            }
        }
    }

    #[test]
    fn bucket_count_matches_the_largest_index() {
        assert_eq!(HIST_BUCKETS, 1728);
        assert_eq!(bucket_index(MAX_TRACKABLE_NS), HIST_BUCKETS - 1);
        assert_eq!(bucket_index(u64::MAX), HIST_BUCKETS - 1);
        assert_eq!(bucket_upper(HIST_BUCKETS - 1), MAX_TRACKABLE_NS);
    }

    impl LatencyHist {
        /// Durations recorded: what the agent's drain counts.
        fn count(&self) -> u64 {
            self.buckets.iter().map(|&c| u64::from(c)).sum()
        }
    }

    #[test]
    fn touched_bits_name_exactly_the_lines_with_counts() {
        let mut h = LatencyHist::ZERO;
        for v in [0, 15, 16, 5_000, 5_001, 1 << 40] {
            h.record(v);
        }
        assert_eq!((HIST_LINES, TOUCHED_WORDS), (108, 2));
        for line in 0..HIST_LINES {
            let counts = &h.buckets[line * LINE_BUCKETS..(line + 1) * LINE_BUCKETS];
            let touched = h.touched[line / 64] & (1 << (line % 64)) != 0;
            assert_eq!(touched, counts.iter().any(|&c| c != 0), "line {line}");
        }
        let bits: u32 = h.touched.iter().map(|w| w.count_ones()).sum();
        assert_eq!(bits, 4, "lines 0 and 1, 5,000 ns's, the clamped value's");
        assert_ne!(
            h.touched[TOUCHED_WORDS - 1] & (1 << ((HIST_LINES - 1) % 64)),
            0
        );
    }

    #[test]
    fn small_values_have_exact_buckets() {
        for v in 0..2 * SUB_BUCKETS {
            let i = bucket_index(v);
            assert_eq!(i as u64, v);
            assert_eq!((bucket_lower(i), bucket_upper(i)), (v, v));
        }
    }

    #[test]
    fn buckets_tile_the_range_without_gaps() {
        for i in 0..HIST_BUCKETS - 1 {
            assert_eq!(bucket_upper(i) + 1, bucket_lower(i + 1), "bucket {i}");
        }
    }

    #[test]
    fn every_value_lands_in_the_bucket_that_contains_it() {
        // Both ends of every bucket, and a spread of values in between.
        let mut values: Vec<u64> = (0..HIST_BUCKETS)
            .flat_map(|i| [bucket_lower(i), bucket_upper(i), bucket_mid(i)])
            .collect();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            values.push(x >> (x % 40 + 24));
        }
        for v in values.into_iter().filter(|&v| v <= MAX_TRACKABLE_NS) {
            let i = bucket_index(v);
            assert!(
                bucket_lower(i) <= v && v <= bucket_upper(i),
                "{v} in bucket {i}"
            );
        }
    }

    #[test]
    fn relative_error_is_below_one_percent() {
        for i in 0..HIST_BUCKETS {
            let (lo, hi, mid) = (bucket_lower(i), bucket_upper(i), bucket_mid(i));
            let width = hi - lo + 1;
            // Buckets of one value are exact; wider ones are 1/64 of
            // their lower bound at most.
            assert!(
                width == 1 || width as f64 / lo as f64 <= 1.0 / 64.0,
                "bucket {i}"
            );
            for v in [lo, hi] {
                let err = (mid as f64 - v as f64).abs() / v.max(1) as f64;
                assert!(err < 0.01, "bucket {i}: mid {mid} for {v} is off by {err}");
            }
        }
    }

    #[test]
    fn known_bucket_boundaries() {
        let cases = [
            (0, 0),
            (63, 63),
            (64, 64),
            (127, 127),
            (128, 128),
            (129, 128),
            (130, 129),
            (1_000, 317),
            (1_000_000, 954),
        ];
        for (value, index) in cases {
            assert_eq!(bucket_index(value), index, "value {value}");
        }
    }

    #[test]
    fn hist_records_count_sum_max_and_clamps() {
        let mut h = LatencyHist::ZERO;
        assert!(!h.record(1_000));
        assert!(!h.record(3));
        assert!(h.record(MAX_TRACKABLE_NS + 10));
        assert_eq!(h.count(), 3);
        assert_eq!(h.sum_ns, 1_003 + MAX_TRACKABLE_NS + 10);
        assert_eq!(h.max_ns, MAX_TRACKABLE_NS + 10);
        assert_eq!(h.buckets[3], 1);
        assert_eq!(h.buckets[bucket_index(1_000)], 1);
        assert_eq!(h.buckets[HIST_BUCKETS - 1], 1);
        assert_eq!(h.buckets.iter().map(|&c| u64::from(c)).sum::<u64>(), 3);
    }

    #[test]
    fn involuntary_follows_preempt_and_the_running_state() {
        assert!(involuntary(true, 0x1)); // preempted while going to sleep
        assert!(involuntary(false, 0)); // yielded in TASK_RUNNING
        assert!(!involuntary(false, 0x1)); // TASK_INTERRUPTIBLE
        assert!(!involuntary(false, 0x2)); // TASK_UNINTERRUPTIBLE
        assert!(!involuntary(false, 0x402)); // TASK_IDLE
    }

    /// The kernel's accounting of a task at a switch-in: run-queue total,
    /// wait start, rq clock, CPU-time total.
    fn sched(run_delay: u64, last_queued: u64, clock: u64, exec: u64) -> Option<SchedInfo> {
        Some(SchedInfo {
            run_delay_ns: run_delay,
            last_queued_ns: last_queued,
            rq_clock_ns: clock,
            sum_exec_runtime_ns: exec,
        })
    }

    #[test]
    fn the_total_after_arrival_adds_the_wait_in_progress() {
        let total = |s: Option<SchedInfo>| s.unwrap().run_delay_after_arrival();
        assert_eq!(total(sched(100, 0, 5_000, 0)), 100);
        assert_eq!(total(sched(100, 4_000, 5_000, 0)), 1_100);
        // A clock read behind the enqueue stamp adds nothing.
        assert_eq!(total(sched(100, 6_000, 5_000, 0)), 100);
    }

    /// A thread that runs, is preempted, waits, runs, blocks, is woken,
    /// waits (migrating once, so part of the wait is accounted before the
    /// switch-in) and runs: two waits and two slices, exactly the kernel's,
    /// one switch of each kind.
    #[test]
    fn scheduler_events_make_waits_slices_and_switch_counts() {
        let mut s = ThreadState::default();
        let mut c = ThreadCounters::default();
        let (mut runq, mut oncpu) = (LatencyHist::ZERO, LatencyHist::ZERO);

        // Watching starts with the thread being switched in: the bases.
        assert!(
            !s.on_switch_in(&mut c, &mut runq, sched(7_000, 0, 90_000, 50_000))
                .recorded
        );
        assert!(
            s.on_switch_out(&mut c, &mut oncpu, Some(53_000), true)
                .recorded
        ); // ran 3000
        // Queued at rq clock 93_000, on a CPU at 93_500: waited 500.
        assert!(
            s.on_switch_in(&mut c, &mut runq, sched(7_000, 93_000, 93_500, 53_000))
                .recorded
        );
        assert!(
            s.on_switch_out(&mut c, &mut oncpu, Some(54_000), false)
                .recorded
        ); // ran 1000
        ThreadState::on_wakeup(&mut c);
        // Woken, waited 300 on one CPU (accounted at the migration), then
        // 200 on another.
        assert!(
            s.on_switch_in(&mut c, &mut runq, sched(7_800, 97_000, 97_200, 54_000))
                .recorded
        );

        assert_eq!((runq.count(), runq.sum_ns, runq.max_ns), (2, 1_000, 500));
        assert_eq!(
            (oncpu.count(), oncpu.sum_ns, oncpu.max_ns),
            (2, 4_000, 3_000)
        );
        assert_eq!((c.voluntary, c.involuntary, c.wakeups), (1, 1, 1));
        assert_eq!(c.switch_ins, 3);
        assert_eq!(
            (s.run_delay_ns, s.exec_runtime_ns, s.on_cpu),
            (8_000, 54_000, 1)
        );
    }

    /// Watching starts mid-flight: no duration without its start.
    #[test]
    fn first_events_of_a_new_slot_record_nothing() {
        let mut s = ThreadState::default();
        let mut c = ThreadCounters::default();
        let (mut runq, mut oncpu) = (LatencyHist::ZERO, LatencyHist::ZERO);

        // No base read before the first switch-in: it is only a base.
        assert!(
            !s.on_switch_out(&mut c, &mut oncpu, Some(100), false)
                .recorded
        );
        assert!(
            !s.on_switch_in(&mut c, &mut runq, sched(0, 0, 1, 100))
                .recorded
        );
        assert_eq!((runq.count(), oncpu.count()), (0, 0));
        assert_eq!(c.voluntary, 1);
        let mut exits = KvmExits::ZERO;
        assert!(s.on_kvm_entry(&mut c, &mut exits, 300));
        assert_eq!((exits.len, c.kvm_exits), (0, 0));
        // A total of zero is a base like any other: a thread that never
        // waited records its waits of zero.
        assert!(!s.needs_run_delay());
        assert!(
            s.on_switch_out(&mut c, &mut oncpu, Some(400), true)
                .recorded
        );
        assert!(
            s.on_switch_in(&mut c, &mut runq, sched(0, 0, 600, 400))
                .recorded
        );
        assert_eq!((runq.count(), runq.sum_ns, runq.buckets[0]), (1, 0, 1));
        assert_eq!((oncpu.count(), oncpu.sum_ns), (1, 300));
    }

    /// A switch whose accounting could not be read records nothing, and
    /// neither does the next one: it only sets the base again.
    #[test]
    fn an_unreadable_switch_drops_its_wait_or_slice_and_the_next() {
        let mut s = ThreadState::default();
        let mut c = ThreadCounters::default();
        let (mut runq, mut oncpu) = (LatencyHist::ZERO, LatencyHist::ZERO);
        s.on_switch_in(&mut c, &mut runq, sched(1_000, 0, 0, 10));
        assert!(!s.on_switch_out(&mut c, &mut oncpu, None, true).recorded);
        assert!(!s.on_switch_in(&mut c, &mut runq, None).recorded);
        assert!(s.needs_run_delay());
        assert!(!s.on_switch_out(&mut c, &mut oncpu, Some(70), true).recorded);
        assert!(
            !s.on_switch_in(&mut c, &mut runq, sched(3_000, 0, 0, 70))
                .recorded
        );
        assert!(s.on_switch_out(&mut c, &mut oncpu, Some(90), true).recorded);
        assert!(
            s.on_switch_in(&mut c, &mut runq, sched(3_050, 0, 0, 90))
                .recorded
        );
        assert_eq!((runq.count(), runq.sum_ns), (1, 50));
        assert_eq!((oncpu.count(), oncpu.sum_ns), (1, 20));
        assert_eq!(c.involuntary, 3);
    }

    /// Watched while blocked (or running): the base read at its wakeup
    /// (or switch-out) lets the very next wait count, 200 here with 50 of
    /// it accounted before a migration; later bases are ignored.
    #[test]
    fn a_base_read_before_the_switch_in_counts_the_first_wait() {
        let mut s = ThreadState::default();
        let mut c = ThreadCounters::default();
        let mut runq = LatencyHist::ZERO;
        assert!(s.needs_run_delay());
        ThreadState::on_wakeup(&mut c);
        s.on_run_delay_base(4_000);
        assert!(!s.needs_run_delay());
        s.on_run_delay_base(1);
        let wait = s.on_switch_in(&mut c, &mut runq, sched(4_050, 9_000, 9_150, 500));
        assert!(wait.recorded);
        assert_eq!((runq.count(), runq.sum_ns), (1, 200));
    }

    #[test]
    fn a_full_kvm_table_drops_new_reasons_only() {
        let mut s = ThreadState::default();
        let mut c = ThreadCounters::default();
        let mut exits = KvmExits::ZERO;
        for reason in 0..KVM_REASONS as u32 {
            assert!(exits.record(reason, 10));
        }
        s.on_kvm_exit(1_000, 99);
        assert!(!s.on_kvm_entry(&mut c, &mut exits, 1_500), "no room");
        assert_eq!(c.kvm_exits, 0, "a dropped exit is not counted");
        assert!(exits.record(0, 5), "a known reason still counts");
        assert_eq!(
            exits.iter().next(),
            Some((
                0,
                KvmExitStats {
                    count: 2,
                    sum_ns: 15,
                    max_ns: 10
                }
            ))
        );
    }

    #[test]
    fn kvm_exit_then_entry_times_the_exit_by_reason() {
        let mut s = ThreadState::default();
        let mut c = ThreadCounters::default();
        let mut exits = KvmExits::ZERO;
        s.on_kvm_exit(1_000, 30);
        assert!(s.on_kvm_entry(&mut c, &mut exits, 1_700));
        // An entry without an exit (the first after watching) is ignored.
        assert!(s.on_kvm_entry(&mut c, &mut exits, 2_000));
        s.on_kvm_exit(3_000, 12);
        assert!(s.on_kvm_entry(&mut c, &mut exits, 3_050));
        s.on_kvm_exit(4_000, 30);
        assert!(s.on_kvm_entry(&mut c, &mut exits, 4_100));
        assert_eq!(c.kvm_exits, 3);
        let by_reason: Vec<(u32, u64, u64)> = exits
            .iter()
            .map(|(r, st)| (r, st.count, st.sum_ns))
            .collect();
        assert_eq!(by_reason, [(30, 2, 800), (12, 1, 50)]);

        let mut stats = KvmExitStats::first(700);
        stats.record(50);
        stats.record(900);
        assert_eq!(
            stats,
            KvmExitStats {
                count: 3,
                sum_ns: 1_650,
                max_ns: 900
            }
        );
    }
}
