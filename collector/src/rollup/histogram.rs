//! The latency histogram every rollup uses: the kernel's own log-linear
//! buckets, kept sparse while a histogram fills and frozen into a few
//! bits per non-empty bucket once it is closed.
//!
//! # Buckets and error
//! The buckets are the eBPF programs' ([`hyper_stats_ebpf::bucket_index`]):
//! values below 256 ns have one bucket each, above that each power of two
//! is split into 64 linear sub-buckets, up to [`MAX_LATENCY_NS`] (2^32 ns,
//! 4.29 s). The eBPF source sends every bucket that grew as its midpoint
//! with a count, so recording here lands each count in the very bucket the
//! kernel counted it in: the rollup adds no error of its own. Every answer
//! (a percentile, the minimum, the maximum) is the midpoint of a bucket,
//! within half a bucket of every value in it: 1/128 (0.78%) of the value
//! (`ERROR_BOUND`, which the tests hold every answer to). Merging adds
//! counts, so merged seconds and windows keep the same bound. Values above
//! [`MAX_LATENCY_NS`] go to the last bucket and are reported as clamped
//! (`agent.rollup.clamped_values`); the kernel has already clamped (and
//! counted) what it measured.
//!
//! # What it owns
//! - [`LatencyHistogram`]: sorted `(bucket, count)` pairs of the non-empty
//!   buckets, for the second being recorded, merges and query answers.
//!   A second of 200 waits is about 200 pairs, where a dense array of the
//!   kernel's 1,728 buckets would take 14 KiB.
//! - [`Frozen`]: a closed histogram as a bit string (see [`Frozen`] for
//!   the format), 3 to 12 bits per non-empty bucket: the windows keep 105
//!   of them per series, and closed buckets never change.
//! - [`Merger`]: a dense scratch array that sums any number of either
//!   form and hands back a [`LatencyHistogram`]; windows and queries use
//!   it so merging many histograms costs one pass over each.

use hyper_stats_ebpf::{HIST_BUCKETS, MAX_TRACKABLE_NS, bucket_index, bucket_mid};
use hyper_stats_query::metric::{HEATMAP_BOUNDS_US, heatmap_bucket};

/// The largest latency with a bucket of its own: the kernel's, 2^32 - 1 ns
/// (4.29 s). A longer wait is recorded in the last bucket (and counted as
/// clamped); past it the distinction no longer changes what an operator
/// does, and the exact sum still has it.
pub(crate) const MAX_LATENCY_NS: u64 = MAX_TRACKABLE_NS;

/// The largest relative error of any answer against any value in its
/// bucket: half a bucket, and a bucket is at most 1/64 of its lower
/// bound wide (values below 128 ns are exact). The tests hold every
/// answer to it.
#[cfg(test)]
pub(crate) const ERROR_BOUND: f64 = 1.0 / 128.0;

/// Malloc's own cost per allocation, counted by the `heap_bytes` methods
/// so that they estimate resident memory, not only what was asked for:
/// glibc adds an 8-byte header and rounds chunks to 16 bytes.
pub(crate) const ALLOC_OVERHEAD_BYTES: usize = 16;

/// A latency histogram in nanoseconds: the counts of its non-empty
/// buckets, by ascending bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LatencyHistogram {
    /// `(bucket, count)`, sorted by bucket, no zero counts: sparse because
    /// a second of one vCPU touches a few hundred of the 1,728 buckets.
    /// Buckets are `u64` so that the source's `(value_ns, count)` pairs
    /// become a histogram in place (see [`LatencyHistogram::from_pairs`]).
    buckets: Vec<(u64, u64)>,
    /// The sum of the counts, kept so that `len` and quantiles need no
    /// pass over the buckets.
    count: u64,
}

impl LatencyHistogram {
    /// Records `count` values of `value_ns`. Returns whether the value was
    /// past [`MAX_LATENCY_NS`] and went to the last bucket.
    #[cfg(test)]
    pub(crate) fn record(&mut self, value_ns: u64, count: u64) -> bool {
        if count > 0 {
            self.add(bucket_index(value_ns) as u64, count);
        }
        value_ns > MAX_LATENCY_NS
    }

    /// The histogram of one interval's `(value_ns, count)` pairs, built in
    /// their own allocation (the record path takes it over from the
    /// sample instead of copying), and how many values were past
    /// [`MAX_LATENCY_NS`]. The eBPF source sends ascending buckets; any
    /// other order is sorted.
    pub(crate) fn from_pairs(mut pairs: Vec<(u64, u64)>) -> (LatencyHistogram, u64) {
        let (mut count, mut clamped) = (0u64, 0u64);
        let mut previous: Option<u64> = None;
        let mut ascending = true;
        pairs.retain_mut(|(value, c)| {
            if *c == 0 {
                return false;
            }
            if *value > MAX_LATENCY_NS {
                clamped = clamped.saturating_add(*c);
            }
            *value = bucket_index(*value) as u64;
            count = count.saturating_add(*c);
            ascending &= previous.is_none_or(|p| p < *value);
            previous = Some(*value);
            true
        });
        if !ascending {
            pairs.sort_unstable_by_key(|&(b, _)| b);
            pairs.dedup_by(|later, kept| {
                let same = later.0 == kept.0;
                if same {
                    kept.1 = kept.1.saturating_add(later.1);
                }
                same
            });
        }
        let h = LatencyHistogram {
            buckets: pairs,
            count,
        };
        (h, clamped)
    }

    /// Adds `other` (a second interval of the same second, which the eBPF
    /// source never sends, but a source may).
    pub(crate) fn absorb(&mut self, other: LatencyHistogram) {
        if self.buckets.is_empty() {
            *self = other;
            return;
        }
        for (b, c) in other.buckets {
            self.add(b, c);
        }
    }

    /// Adds `count` to `bucket`, keeping the order.
    fn add(&mut self, bucket: u64, count: u64) {
        self.count = self.count.saturating_add(count);
        match self.buckets.last_mut() {
            Some(last) if last.0 == bucket => last.1 = last.1.saturating_add(count),
            Some(last) if last.0 > bucket => {
                match self.buckets.binary_search_by_key(&bucket, |&(b, _)| b) {
                    Ok(i) => self.buckets[i].1 = self.buckets[i].1.saturating_add(count),
                    Err(i) => self.buckets.insert(i, (bucket, count)),
                }
            }
            _ => self.buckets.push((bucket, count)),
        }
    }

    /// How many values were recorded.
    pub(crate) fn len(&self) -> u64 {
        self.count
    }

    /// Whether nothing was recorded.
    pub(crate) fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The smallest value (its bucket's midpoint); 0 if empty.
    #[cfg(test)]
    pub(crate) fn min(&self) -> u64 {
        self.buckets
            .first()
            .map_or(0, |&(b, _)| bucket_mid(b as usize))
    }

    /// The largest value (its bucket's midpoint); 0 if empty.
    pub(crate) fn max(&self) -> u64 {
        self.buckets
            .last()
            .map_or(0, |&(b, _)| bucket_mid(b as usize))
    }

    /// The value at quantile `q` (0.0 to 1.0): the midpoint of the bucket
    /// holding the value of rank [`rank`] in ascending order; 0 if empty.
    pub(crate) fn value_at_quantile(&self, q: f64) -> u64 {
        let want = rank(q, self.count);
        let mut seen = 0u64;
        for &(b, c) in &self.buckets {
            seen = seen.saturating_add(c);
            if seen >= want {
                return bucket_mid(b as usize);
            }
        }
        0
    }

    /// What the per-second summaries need: the count, the values at
    /// quantiles `qs` (which must ascend) and the maximum, in one pass.
    pub(crate) fn summary<const N: usize>(&self, qs: [f64; N]) -> Summary<N> {
        let mut heatmap = [0; HEATMAP_BOUNDS_US.len()];
        for &(b, c) in &self.buckets {
            heatmap[heatmap_bucket(bucket_mid(b as usize))] += c;
        }
        Summary {
            count: self.count,
            quantiles: self.values_at_quantiles(qs),
            max: self.max(),
            heatmap,
        }
    }

    /// The values at quantiles `qs`, which must ascend, in one pass.
    pub(crate) fn values_at_quantiles<const N: usize>(&self, qs: [f64; N]) -> [u64; N] {
        let mut out = [0; N];
        let mut buckets = self.buckets.iter();
        let mut seen = 0u64;
        let mut current = 0;
        for (q, slot) in qs.into_iter().zip(&mut out) {
            let want = rank(q, self.count);
            while seen < want {
                let Some(&(b, c)) = buckets.next() else {
                    return out;
                };
                seen = seen.saturating_add(c);
                current = bucket_mid(b as usize);
            }
            *slot = current;
        }
        out
    }

    /// The closed, compact form of this histogram.
    #[cfg(test)]
    pub(crate) fn freeze(&self) -> Frozen {
        Frozen::encode(self.buckets.iter().copied(), &mut Vec::new())
    }

    /// Heap bytes held, allocator overhead included.
    pub(crate) fn heap_bytes(&self) -> usize {
        match self.buckets.capacity() {
            0 => 0,
            n => n * size_of::<(u64, u64)>() + ALLOC_OVERHEAD_BYTES,
        }
    }
}

/// A histogram's count, values at some quantiles, maximum (0 when empty)
/// and heatmap counts: what a second's summary datapoints are made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Summary<const N: usize> {
    /// Values recorded.
    pub(crate) count: u64,
    /// The value at each quantile asked, in ns.
    pub(crate) quantiles: [u64; N],
    /// The largest value, in ns.
    pub(crate) max: u64,
    /// Values per heatmap bucket ([`HEATMAP_BOUNDS_US`]), each bucket of
    /// the histogram counted at its midpoint: a value within 0.8% of a
    /// bound may land in the next bucket up or down.
    pub(crate) heatmap: [u64; HEATMAP_BOUNDS_US.len()],
}

/// The 1-based rank of the value at quantile `q` among `total` sorted
/// values: `ceil(q * total)`, at least 1, as HDR histograms count. The
/// product is nudged down by a billionth so that `0.7 * 10`, which is
/// 7.000000000000001 in floating point, is rank 7 and not 8.
pub(crate) fn rank(q: f64, total: u64) -> u64 {
    ((q.clamp(0.0, 1.0) * total as f64 - 1e-9).ceil() as u64).clamp(1, total.max(1))
}

/// A closed histogram, frozen: its non-empty buckets as a bit string, in
/// ascending order, each as two Elias gamma codes: the gap (empty buckets
/// since the previous non-empty one, the first counting from bucket 0)
/// plus one, then the count. The gamma code of `x` is `x`'s bit length
/// minus one in zeros, then `x` in binary: 1 bit for 1, 3 bits for 2 and
/// 3, 5 for 4 to 7. Closed seconds are sparse runs of small gaps and
/// counts of 1, closed minutes dense runs of gap 0 and small counts, so
/// a bucket takes 3 to 12 bits: 40% less than byte-aligned varints on a
/// log-normal. The last byte is padded with zeros, which no code starts
/// with; an empty histogram takes no byte (and allocates nothing).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Frozen {
    /// The bit string; exactly as long as needed, since a frozen
    /// histogram never grows.
    bytes: Box<[u8]>,
}

/// The largest count a frozen bucket keeps: its gamma code stays within
/// the 56 bits the bit reader sees at once. 2^55 events is 400 days of a
/// million a second in one bucket.
const MAX_FROZEN_COUNT: u64 = 1 << 55;

impl Frozen {
    /// Encodes `(bucket, count)` pairs given in ascending bucket order with
    /// non-zero counts, using `scratch` for the bits so that the frozen
    /// form is allocated once, at its exact size.
    fn encode(buckets: impl Iterator<Item = (u64, u64)>, scratch: &mut Vec<u8>) -> Frozen {
        scratch.clear();
        let mut out = BitWriter {
            out: scratch,
            acc: 0,
            pending: 0,
        };
        let mut next = 0u64;
        for (b, count) in buckets {
            out.gamma(b - next + 1);
            out.gamma(count.clamp(1, MAX_FROZEN_COUNT));
            next = b + 1;
        }
        out.finish();
        Frozen {
            bytes: Box::from(&scratch[..]),
        }
    }

    /// The `(bucket, count)` pairs, ascending.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        let mut bits = BitReader::new(&self.bytes);
        let mut next = 0u64;
        std::iter::from_fn(move || {
            let (gap, count) = bits.pair()?;
            let bucket = next + gap - 1;
            next = bucket + 1;
            Some((bucket, count))
        })
    }

    /// Heap bytes held, allocator overhead included.
    pub(crate) fn heap_bytes(&self) -> usize {
        match self.bytes.len() {
            0 => 0,
            n => n + ALLOC_OVERHEAD_BYTES,
        }
    }
}

/// Writes bits most significant first.
struct BitWriter<'a> {
    /// Whole bytes written.
    out: &'a mut Vec<u8>,
    /// The bits not yet in `out`, in the low `pending` bits.
    acc: u64,
    /// How many: always below 32 between calls.
    pending: u32,
}

impl BitWriter<'_> {
    /// Writes the low `bits` bits of `v` (at most 32).
    #[inline]
    fn put(&mut self, v: u64, bits: u32) {
        debug_assert!(bits <= 32 && v >> bits == 0);
        self.acc = self.acc << bits | v;
        self.pending += bits;
        if self.pending >= 32 {
            self.pending -= 32;
            let word = (self.acc >> self.pending) as u32;
            self.out.extend_from_slice(&word.to_be_bytes());
            self.acc &= (1 << self.pending) - 1;
        }
    }

    /// Writes the Elias gamma code of `x` (1 to 2^55): `x` in twice its
    /// bit length minus one bits, which puts the zeros in front.
    #[inline]
    fn gamma(&mut self, x: u64) {
        let len = u64::BITS - x.leading_zeros();
        let bits = 2 * len - 1;
        if bits <= 32 {
            return self.put(x, bits);
        }
        // Counts of 65,536 and more, a 32-bit piece at a time.
        let mut left = bits;
        while left > 0 {
            let piece = left.min(32);
            left -= piece;
            // The zeros in front are shifted in from past bit 63.
            let high = x.checked_shr(left).unwrap_or(0);
            self.put(high & ((1 << piece) - 1), piece);
        }
    }

    /// Writes what is pending, the last byte padded with zeros.
    fn finish(mut self) {
        let bytes = self.pending.div_ceil(8);
        let word = (self.acc << (32 - self.pending)) as u32;
        self.out
            .extend_from_slice(&word.to_be_bytes()[..bytes as usize]);
        self.pending = 0;
    }
}

/// Reads what a [`BitWriter`] wrote, through a 64-bit buffer refilled
/// eight bytes at a time.
struct BitReader<'a> {
    /// The bit string.
    bytes: &'a [u8],
    /// The next byte to load into `buf`.
    next: usize,
    /// The next `avail` bits of the string, most significant first (the
    /// bits after them are the string's too, or zeros).
    buf: u64,
    /// How many bits of `buf` are loaded: at most 63.
    avail: u32,
}

impl<'a> BitReader<'a> {
    fn new(bytes: &'a [u8]) -> BitReader<'a> {
        BitReader {
            bytes,
            next: 0,
            buf: 0,
            avail: 0,
        }
    }

    /// Loads whole bytes until at least 57 bits are loaded or the string
    /// ends.
    #[inline]
    fn refill(&mut self) {
        if let Some(eight) = self.bytes.get(self.next..self.next + 8) {
            // The bits past the whole bytes taken are loaded again, at the
            // same place, by the next refill.
            let word = u64::from_be_bytes(eight.try_into().expect("8 bytes"));
            self.buf |= word >> self.avail;
            let take = (63 - self.avail) / 8;
            self.next += take as usize;
            self.avail += take * 8;
        } else {
            while self.avail <= 55 && self.next < self.bytes.len() {
                self.buf |= u64::from(self.bytes[self.next]) << (56 - self.avail);
                self.next += 1;
                self.avail += 8;
            }
        }
    }

    /// Takes `bits` (1 to 63, at most `avail`) bits.
    #[inline]
    fn take(&mut self, bits: u32) -> u64 {
        let v = self.buf >> (u64::BITS - bits);
        self.buf <<= bits;
        self.avail -= bits;
        v
    }

    /// The next `(gap + 1, count)`, or `None` at the end: what is left is
    /// the last byte's padding (zeros), or nothing.
    #[inline]
    fn pair(&mut self) -> Option<(u64, u64)> {
        self.refill();
        if self.buf == 0 {
            // No code has more than 55 leading zeros, and at least 57 bits
            // are loaded unless the string ended.
            return None;
        }
        let first = 2 * self.buf.leading_zeros() + 1;
        if first > self.avail {
            return None;
        }
        let gap = self.take(first);
        let mut second = 2 * self.buf.leading_zeros() + 1;
        if second > self.avail {
            self.refill();
            second = 2 * self.buf.leading_zeros() + 1;
        }
        if second <= self.avail {
            return Some((gap, self.take(second)));
        }
        // A count of 2^28 or more: the zeros, then the value.
        let zeros = self.buf.leading_zeros();
        if zeros > 55 || zeros > self.avail {
            return None;
        }
        self.take(zeros);
        self.refill();
        let len = zeros + 1;
        (len <= self.avail).then(|| (gap, self.take(len)))
    }
}

/// Sums histograms in a dense array of every bucket, so that merging `n`
/// histograms is one pass over each plus one over the buckets touched.
#[derive(Debug)]
pub(crate) struct Merger {
    /// Count per bucket; all zero between uses, so one merger serves any
    /// number of merges.
    counts: Box<[u64]>,
    /// The lowest and highest bucket touched since the last `finish`: the
    /// only part of `counts` to read back and clear.
    touched: Option<(usize, usize)>,
    /// Where histograms are encoded before they are frozen at their exact
    /// size; kept for its capacity.
    bits: Vec<u8>,
}

impl Default for Merger {
    fn default() -> Self {
        Merger {
            counts: vec![0; HIST_BUCKETS].into_boxed_slice(),
            touched: None,
            bits: Vec::new(),
        }
    }
}

impl Merger {
    /// Adds one `(bucket, count)`.
    #[inline]
    fn add_bucket(&mut self, bucket: u64, count: u64) {
        let b = bucket as usize;
        self.counts[b] = self.counts[b].saturating_add(count);
        self.touched = Some(
            self.touched
                .map_or((b, b), |(lo, hi)| (lo.min(b), hi.max(b))),
        );
    }

    /// Adds a frozen histogram.
    pub(crate) fn add_frozen(&mut self, h: &Frozen) {
        let (mut lo, mut hi) = (usize::MAX, 0);
        for (b, c) in h.iter() {
            let b = b as usize;
            self.counts[b] = self.counts[b].saturating_add(c);
            lo = lo.min(b);
            hi = b;
        }
        if lo <= hi {
            self.touched = Some(
                self.touched
                    .map_or((lo, hi), |(l, h)| (l.min(lo), h.max(hi))),
            );
        }
    }

    /// Adds a histogram.
    pub(crate) fn add(&mut self, h: &LatencyHistogram) {
        for &(b, c) in &h.buckets {
            self.add_bucket(b, c);
        }
    }

    /// The sum of everything added since the last `finish`; the merger is
    /// empty again afterwards.
    pub(crate) fn finish(&mut self) -> LatencyHistogram {
        let mut out = LatencyHistogram::default();
        if let Some((lo, hi)) = self.touched.take() {
            let slice = &mut self.counts[lo..=hi];
            // Sized once: an answer is often kept (a query's).
            out.buckets
                .reserve_exact(slice.iter().filter(|c| **c != 0).count());
            out.buckets.extend(non_empty(slice, lo));
            out.count = out
                .buckets
                .iter()
                .fold(0u64, |sum, &(_, c)| sum.saturating_add(c));
            slice.fill(0);
        }
        out
    }

    /// The [`Summary`] of everything added since the last `finish`, read
    /// straight from the counts (a domain's second is summarized, never
    /// kept); the merger is empty again afterwards.
    pub(crate) fn finish_summary<const N: usize>(&mut self, qs: [f64; N]) -> Summary<N> {
        let mut out = Summary {
            count: 0,
            quantiles: [0; N],
            max: 0,
            heatmap: [0; HEATMAP_BOUNDS_US.len()],
        };
        let Some((lo, hi)) = self.touched.take() else {
            return out;
        };
        let slice = &mut self.counts[lo..=hi];
        out.count = slice.iter().fold(0u64, |sum, &c| sum.saturating_add(c));
        let ranks = qs.map(|q| rank(q, out.count));
        let (mut seen, mut next, mut top) = (0u64, 0, lo as u64);
        for (b, c) in non_empty(slice, lo) {
            seen = seen.saturating_add(c);
            let mid = bucket_mid(b as usize);
            while next < N && seen >= ranks[next] {
                out.quantiles[next] = mid;
                next += 1;
            }
            out.heatmap[heatmap_bucket(mid)] += c;
            top = b;
        }
        out.max = bucket_mid(top as usize);
        slice.fill(0);
        out
    }

    /// [`Merger::finish`], frozen.
    pub(crate) fn finish_frozen(&mut self) -> Frozen {
        let Some((lo, hi)) = self.touched.take() else {
            return Frozen::default();
        };
        let slice = &mut self.counts[lo..=hi];
        let frozen = Frozen::encode(non_empty(slice, lo), &mut self.bits);
        slice.fill(0);
        frozen
    }

    /// `h`, frozen (the merger's counts are not touched).
    pub(crate) fn freeze(&mut self, h: &LatencyHistogram) -> Frozen {
        if h.buckets.is_empty() {
            return Frozen::default();
        }
        Frozen::encode(h.buckets.iter().copied(), &mut self.bits)
    }
}

/// Buckets a [`non_empty`] scan tests at once: a cache line of counts.
const SCAN_CHUNK: usize = 8;

/// The `(bucket, count)` pairs of the non-zero `counts`, which start at
/// bucket `first`, ascending. A merger's touched range spans the whole
/// spread of its values (a thousand buckets for a log-normal) however few
/// are non-empty (a quiet second has a dozen), so whole chunks of zeros
/// are skipped with one test each.
fn non_empty(counts: &[u64], first: usize) -> impl Iterator<Item = (u64, u64)> + '_ {
    counts
        .chunks(SCAN_CHUNK)
        .enumerate()
        .filter(|(_, chunk)| chunk.iter().fold(0, |any, &c| any | c) != 0)
        .flat_map(move |(k, chunk)| {
            let base = first + k * SCAN_CHUNK;
            chunk
                .iter()
                .enumerate()
                .filter(|(_, c)| **c != 0)
                .map(move |(i, &c)| ((base + i) as u64, c))
        })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use hyper_stats_ebpf::{bucket_lower, bucket_upper};

    /// `values` the way the eBPF source delivers them: counted per kernel
    /// bucket, each bucket that grew sent as its midpoint with its count,
    /// in ascending order.
    pub(crate) fn as_ebpf(values: &[u64]) -> Vec<(u64, u64)> {
        let mut counts = std::collections::BTreeMap::new();
        for &v in values {
            *counts.entry(bucket_index(v)).or_insert(0u64) += 1;
        }
        counts
            .into_iter()
            .map(|(b, c)| (bucket_mid(b), c))
            .collect()
    }

    /// A small deterministic generator (SplitMix64), so that the tests
    /// need no crate and fail the same way every run.
    pub(crate) struct Rng(pub(crate) u64);

    impl Rng {
        pub(crate) fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        /// Uniform in [0, 1).
        pub(crate) fn unit(&mut self) -> f64 {
            (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
        }

        /// Standard normal (Box-Muller).
        pub(crate) fn normal(&mut self) -> f64 {
            let (u, v) = (1.0 - self.unit(), self.unit());
            (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
        }

        /// Log-normal with median `median_ns` and log-space spread `sigma`,
        /// kept within the tracked range.
        pub(crate) fn log_normal(&mut self, median_ns: f64, sigma: f64) -> u64 {
            ((median_ns.ln() + sigma * self.normal()).exp() as u64).min(MAX_LATENCY_NS)
        }
    }

    /// A latency shape for the error tests: its name and a draw from it.
    pub(crate) type Shape = (&'static str, fn(&mut Rng) -> u64);

    /// Latency shapes for the error tests.
    pub(crate) const SHAPES: [Shape; 5] = [
        // Uniform over 1 µs to 100 ms.
        ("uniform", |r| 1_000 + (r.unit() * 1e8) as u64),
        // Run-queue waits: median 20 µs, most within 2 µs to 200 µs.
        ("log-normal", |r| r.log_normal(20_000.0, 1.0)),
        // Short waits and a slow mode two orders of magnitude away.
        ("bimodal", |r| match r.unit() < 0.9 {
            true => r.log_normal(5_000.0, 0.5),
            false => r.log_normal(2_000_000.0, 0.3),
        }),
        // Log-uniform from 1 ns to 4 s: every octave the buckets have.
        ("ns-to-seconds", |r| {
            (2f64.powf(r.unit() * 31.9) as u64).min(MAX_LATENCY_NS)
        }),
        // Small values, exact buckets and the first log-linear ones.
        ("sub-microsecond", |r| (r.unit() * 1_000.0) as u64),
    ];

    /// The quantiles every error test checks; 1.0 is the maximum.
    pub(crate) const QUANTILES: [f64; 5] = [0.5, 0.9, 0.99, 0.999, 1.0];

    /// The exact value at quantile `q` of ascending `sorted`, by the same
    /// rank the histogram uses.
    pub(crate) fn exact_quantile(sorted: &[u64], q: f64) -> u64 {
        sorted[rank(q, sorted.len() as u64) as usize - 1]
    }

    /// The relative error of `got` against the exact `want`.
    pub(crate) fn relative_error(got: u64, want: u64) -> f64 {
        match want {
            0 => got as f64,
            _ => (got as f64 - want as f64).abs() / want as f64,
        }
    }

    /// Every shape, recorded as the eBPF source sends it: each quantile,
    /// the minimum and the maximum are within [`ERROR_BOUND`] of the exact
    /// value. Prints the worst error seen.
    #[test]
    fn quantiles_are_within_the_bound_of_exact_values() {
        let mut rng = Rng(7);
        let mut worst: f64 = 0.0;
        for (shape, draw) in SHAPES {
            for n in [1usize, 10, 1_000, 100_000] {
                let mut values: Vec<u64> = (0..n).map(|_| draw(&mut rng)).collect();
                let mut h = LatencyHistogram::default();
                for (v, c) in as_ebpf(&values) {
                    assert!(!h.record(v, c));
                }
                values.sort_unstable();
                assert_eq!(h.len(), n as u64);
                let mut check = |what: String, got: u64, want: u64| {
                    let err = relative_error(got, want);
                    assert!(err <= ERROR_BOUND, "{shape} n={n} {what}: {got} for {want}");
                    worst = worst.max(err);
                };
                for q in QUANTILES {
                    check(
                        format!("q{q}"),
                        h.value_at_quantile(q),
                        exact_quantile(&values, q),
                    );
                }
                let one_pass = h.values_at_quantiles(QUANTILES);
                let each = QUANTILES.map(|q| h.value_at_quantile(q));
                assert_eq!(one_pass, each, "{shape} n={n}");
                let mut m = Merger::default();
                m.add(&h);
                assert_eq!(m.finish_summary(QUANTILES), h.summary(QUANTILES));
                check("max".into(), h.max(), values[n - 1]);
                check("min".into(), h.min(), values[0]);
                // Frozen and merged back, nothing changes.
                let mut m = Merger::default();
                m.add_frozen(&h.freeze());
                assert_eq!(m.finish(), h);
            }
        }
        eprintln!(
            "worst relative error {:.4}% (bound {:.4}%)",
            worst * 100.0,
            ERROR_BOUND * 100.0
        );
    }

    #[test]
    fn error_bound_and_clamping() {
        let mut h = LatencyHistogram::default();
        assert!(!h.record(123_456, 10));
        let p50 = h.value_at_quantile(0.5) as f64;
        assert!((p50 - 123_456.0).abs() / 123_456.0 <= ERROR_BOUND, "{p50}");
        assert!(h.record(MAX_LATENCY_NS * 3, 1));
        assert!(!h.record(MAX_LATENCY_NS, 1));
        assert!(!h.record(0, 1), "0 ns has a bucket of its own");
        assert_eq!(h.len(), 13);
        assert_eq!(h.max(), bucket_mid(HIST_BUCKETS - 1));
        assert_eq!(h.min(), 0);
        assert!(h.max() <= MAX_LATENCY_NS);
    }

    #[test]
    fn midpoints_rebucket_exactly() {
        for b in 0..HIST_BUCKETS {
            assert_eq!(bucket_index(bucket_mid(b)), b, "bucket {b}");
        }
    }

    #[test]
    fn the_bound_holds_for_every_bucket() {
        for b in 0..HIST_BUCKETS {
            let mid = bucket_mid(b) as f64;
            for v in [bucket_lower(b), bucket_upper(b)] {
                let v = v as f64;
                let err = if v == 0.0 { 0.0 } else { (mid - v).abs() / v };
                assert!(err <= ERROR_BOUND, "bucket {b}: {mid} for {v}: {err}");
            }
        }
    }

    #[test]
    fn records_out_of_order_and_merges() {
        let mut a = LatencyHistogram::default();
        for v in [5_000, 100, 5_000, 3, 1_000_000, 100] {
            a.record(v, 2);
        }
        assert_eq!(a.len(), 12);
        let buckets: Vec<u64> = a.buckets.iter().map(|&(b, _)| b).collect();
        assert!(buckets.is_sorted() && buckets.len() == 4, "{buckets:?}");
        let mut b = LatencyHistogram::default();
        b.record(100, 1);
        b.record(7, 1);
        b.record(u64::MAX, 1);
        let mut m = LatencyHistogram::default();
        for v in [5_000, 100, 5_000, 3, 1_000_000, 100] {
            m.record(v, 2);
        }
        for v in [100, 7, u64::MAX] {
            m.record(v, 1);
        }
        assert_eq!(m.len(), 15);
        assert_eq!(m.buckets.len(), 6);
        // The merger sums both forms.
        let mut merger = Merger::default();
        merger.add(&a);
        merger.add_frozen(&b.freeze());
        assert_eq!(merger.finish(), m);
        assert_eq!(merger.finish(), LatencyHistogram::default(), "emptied");
        merger.add_frozen(&a.freeze());
        merger.add(&b);
        assert_eq!(merger.finish_frozen(), m.freeze());
    }

    /// The chunked scan finds every non-zero count, at any offset and
    /// around chunk edges, as a plain filter does.
    #[test]
    fn non_empty_scan_matches_a_filter() {
        let mut rng = Rng(13);
        for len in [0usize, 1, 7, 8, 9, 63, 64, 65, 1_000] {
            for density in [0u64, 1, 5, 50] {
                let counts: Vec<u64> = (0..len)
                    .map(|_| match rng.next_u64() % 100 < density {
                        true => rng.next_u64() % 9 + 1,
                        false => 0,
                    })
                    .collect();
                let want: Vec<(u64, u64)> = counts
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| **c != 0)
                    .map(|(b, &c)| (b as u64 + 17, c))
                    .collect();
                let got: Vec<(u64, u64)> = non_empty(&counts, 17).collect();
                assert_eq!(got, want, "len {len} density {density}");
            }
        }
    }

    #[test]
    fn pairs_become_a_histogram_in_place() {
        let pairs = vec![(5_000, 2), (100, 1), (0, 0), (5_001, 1), (u64::MAX, 3)];
        let (h, clamped) = LatencyHistogram::from_pairs(pairs);
        assert_eq!(clamped, 3);
        assert_eq!(h.len(), 7);
        let want = [
            (100, 1),
            (bucket_index(5_000) as u64, 3),
            (HIST_BUCKETS as u64 - 1, 3),
        ];
        assert_eq!(h.buckets, want);
        let mut more = h.clone();
        more.absorb(LatencyHistogram::from_pairs(vec![(100, 4), (7, 1)]).0);
        assert_eq!(more.len(), 12);
        assert_eq!(more.buckets[..2], [(7, 1), (100, 5)]);
    }

    #[test]
    fn frozen_round_trips_gaps_and_counts() {
        let mut h = LatencyHistogram::default();
        // Adjacent buckets, gaps of every size class, big counts, both ends.
        for (b, c) in [
            (0usize, 1u64),
            (1, 32),
            (2, 33),
            (5, 1),
            (9, 4_000_000_000),
            (200, 7),
            (1_500, 1),
            (HIST_BUCKETS - 1, MAX_FROZEN_COUNT),
        ] {
            h.record(bucket_mid(b), c);
        }
        let f = h.freeze();
        let back: Vec<(u64, u64)> = f.iter().collect();
        assert_eq!(back, h.buckets);
        // Bucket 0 with count 1 is `1 1`, bucket 1 with 32 is `1` and
        // `00000 100000`, then bucket 2 starts with `1`; empty is free.
        assert_eq!(f.bytes[0], 0b1110_0000);
        assert_eq!(f.bytes[1], 0b1000_0010);
        assert_eq!(LatencyHistogram::default().freeze().bytes.len(), 0);
        assert_eq!(LatencyHistogram::default().freeze().heap_bytes(), 0);
    }

    /// Random bucket sets and counts, small and huge, survive freezing:
    /// every refill boundary of the bit reader is crossed somewhere.
    #[test]
    fn frozen_round_trips_random_histograms() {
        let mut rng = Rng(5);
        for _ in 0..2_000 {
            let mut h = LatencyHistogram::default();
            let n = (rng.next_u64() % 300) as usize;
            for _ in 0..n {
                let bucket = (rng.next_u64() % HIST_BUCKETS as u64) as usize;
                let count = match rng.next_u64() % 20 {
                    0 => rng.next_u64() % MAX_FROZEN_COUNT + 1,
                    1 => rng.next_u64() % (1 << 30) + 1,
                    _ => rng.next_u64() % 40 + 1,
                };
                h.record(bucket_mid(bucket), count);
            }
            // Counts past the frozen limit are clamped to it.
            let want: Vec<(u64, u64)> = h
                .buckets
                .iter()
                .map(|&(b, c)| (b, c.min(MAX_FROZEN_COUNT)))
                .collect();
            let back: Vec<(u64, u64)> = h.freeze().iter().collect();
            assert_eq!(back, want);
        }
    }

    #[test]
    fn quantile_ranks_count_like_hdr() {
        assert_eq!(rank(0.7, 10), 7);
        assert_eq!(rank(0.5, 2), 1);
        assert_eq!(rank(0.0, 5), 1);
        assert_eq!(rank(1.0, 5), 5);
        assert_eq!(rank(0.99, 100), 99);
        assert_eq!(rank(0.999, 1_000), 999);
        assert_eq!(rank(0.5, 0), 1);
        let mut h = LatencyHistogram::default();
        assert_eq!(h.value_at_quantile(0.5), 0);
        h.record(10, 1);
        h.record(20, 1);
        assert_eq!(h.value_at_quantile(0.5), 10);
        assert_eq!(h.value_at_quantile(0.51), 20);
    }
}
