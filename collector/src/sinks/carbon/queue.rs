//! The sink's memory: points waiting for Carbon (the backlog), points
//! written but not yet known to be safe (in flight), and who waits to hear
//! that their points arrived (acks).
//!
//! # Why keep points after writing them
//! A successful `write` only means the kernel took the bytes. When Carbon
//! stops or its host vanishes, what it had not yet read (or, for a
//! carbon-cache, not yet written to whisper) is gone, and the agent learns
//! of it only when the connection breaks. So written points stay here, in
//! flight, for a replay window (30 s by default, longer than the
//! connection's `TCP_USER_TIMEOUT`); when the connection breaks they go
//! back to the front of the backlog and are written again after the
//! reconnect. Carbon stores one value per series and second, so a replayed
//! point just overwrites itself.
//!
//! # Acks
//! Whoever must know that Carbon has its points (the Graphios forwarder,
//! before it deletes a Nagios spool file) submits them with an ack. The ack
//! fires only after a confirmation: the sink half-closes the connection and
//! Carbon closes its side, which it does only after processing everything
//! received before. Points dropped or moved to the disk spool before that
//! fail their ack (the sender sees the channel closed).
//!
//! # Numbering
//! Every point gets a sequence number when queued; `backlog[i]` has
//! `front_seq + i`. In-flight points always end right before `front_seq`
//! (they are the backlog's front, taken in order), which is what lets a
//! broken connection put them back exactly where they were.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::encoder::CarbonPoint;

/// One write's worth of in-flight points, or of a spool segment.
#[derive(Debug)]
enum Sent {
    /// Points taken from the backlog; the first has sequence number `seq`.
    Points {
        at: Instant,
        seq: u64,
        points: Vec<CarbonPoint>,
    },
    /// A spool segment sent whole; deleted from disk once safe.
    Segment { at: Instant, id: u64 },
}

/// A promise to tell someone that points `start..end` reached Carbon.
#[derive(Debug)]
struct Ack {
    start: u64,
    end: u64,
    tx: oneshot::Sender<()>,
}

/// Backlog, in-flight window and acks.
#[derive(Debug, Default)]
pub(crate) struct Queue {
    /// Points waiting to be written, oldest first.
    backlog: VecDeque<CarbonPoint>,
    /// Sequence number of `backlog[0]`.
    front_seq: u64,
    /// Written, not yet safe, oldest first.
    inflight: VecDeque<Sent>,
    /// Points in `inflight` (segments not counted).
    inflight_points: usize,
    /// Pending acks, in sequence order.
    acks: VecDeque<Ack>,
}

impl Queue {
    /// An empty queue.
    pub(crate) fn new() -> Queue {
        Queue::default()
    }

    /// Points waiting to be written.
    pub(crate) fn backlog_len(&self) -> usize {
        self.backlog.len()
    }

    /// Points written but kept for replay.
    pub(crate) fn inflight_len(&self) -> usize {
        self.inflight_points
    }

    /// Whether anything (points or spool segments) is in flight.
    pub(crate) fn has_inflight(&self) -> bool {
        !self.inflight.is_empty()
    }

    /// Whether acks are waiting.
    #[cfg(test)]
    pub(crate) fn has_acks(&self) -> bool {
        !self.acks.is_empty()
    }

    /// Queues one point.
    pub(crate) fn push(&mut self, point: CarbonPoint) {
        self.backlog.push_back(point);
    }

    /// Queues points; `ack` fires once all of them are confirmed.
    pub(crate) fn push_all(&mut self, points: Vec<CarbonPoint>, ack: Option<oneshot::Sender<()>>) {
        let start = self.front_seq + self.backlog.len() as u64;
        self.backlog.extend(points);
        if let Some(tx) = ack {
            let end = self.front_seq + self.backlog.len() as u64;
            self.acks.push_back(Ack { start, end, tx });
        }
    }

    /// Takes up to `max` of the oldest waiting points to be written and
    /// records them as in flight from `at`.
    pub(crate) fn take_for_write(&mut self, max: usize, at: Instant) -> &[CarbonPoint] {
        let n = max.min(self.backlog.len());
        let seq = self.front_seq;
        let points: Vec<CarbonPoint> = self.backlog.drain(..n).collect();
        self.front_seq += n as u64;
        self.inflight_points += n;
        self.inflight.push_back(Sent::Points { at, seq, points });
        match self.inflight.back() {
            Some(Sent::Points { points, .. }) => points,
            _ => unreachable!("just pushed"),
        }
    }

    /// Records a spool segment as written at `at`.
    pub(crate) fn segment_written(&mut self, id: u64, at: Instant) {
        self.inflight.push_back(Sent::Segment { at, id });
    }

    /// After a broken connection: puts in-flight points back at the front
    /// of the backlog, in their order; returns how many. In-flight spool
    /// segments are simply forgotten (they are still on disk and the spool
    /// rewinds).
    pub(crate) fn requeue_inflight(&mut self) -> usize {
        let mut requeued = 0;
        while let Some(sent) = self.inflight.pop_back() {
            if let Sent::Points { seq, points, .. } = sent {
                requeued += points.len();
                for p in points.into_iter().rev() {
                    self.backlog.push_front(p);
                }
                self.front_seq = seq;
            }
        }
        self.inflight_points = 0;
        requeued
    }

    /// Forgets in-flight entries written before `now - window` (they had
    /// every chance to fail); returns spool segments now safe to delete.
    /// Entries holding points of a pending ack stay until it is confirmed.
    pub(crate) fn age(&mut self, now: Instant, window: Duration) -> Vec<u64> {
        let first_ack = self.acks.front().map(|a| a.start);
        let mut done = Vec::new();
        while let Some(front) = self.inflight.front() {
            let (at, blocks) = match front {
                Sent::Points { at, seq, points } => (
                    *at,
                    first_ack.is_some_and(|a| a < seq + points.len() as u64),
                ),
                Sent::Segment { at, .. } => (*at, false),
            };
            if blocks || now.saturating_duration_since(at) < window {
                break;
            }
            self.pop_inflight(&mut done);
        }
        done
    }

    /// Forgets all in-flight points without replay, to make room (the
    /// backlog is about to lose points anyway, and these were written).
    /// Acks on them fail. Returns spool segments to delete.
    pub(crate) fn release_inflight(&mut self) -> Vec<u64> {
        let mut done = Vec::new();
        while !self.inflight.is_empty() {
            self.pop_inflight(&mut done);
        }
        let front = self.front_seq;
        self.fail_acks_before(front);
        done
    }

    /// Carbon confirmed everything written so far: forgets all in-flight
    /// entries, fires the acks whose points were all written, and returns
    /// spool segments to delete.
    pub(crate) fn confirm_all(&mut self) -> Vec<u64> {
        let mut done = Vec::new();
        while !self.inflight.is_empty() {
            self.pop_inflight(&mut done);
        }
        while let Some(ack) = self.acks.front() {
            if ack.end > self.front_seq {
                break;
            }
            let ack = self.acks.pop_front().expect("front exists");
            let _ = ack.tx.send(());
        }
        done
    }

    /// Whether an ack's points are all written, so a confirmation would
    /// fire it.
    pub(crate) fn wants_confirm(&self) -> bool {
        self.acks.front().is_some_and(|a| a.end <= self.front_seq)
    }

    /// Removes up to `n` of the oldest waiting points (to drop or to spool
    /// them), releasing in-flight points first so numbering stays
    /// contiguous. Acks on them fail.
    pub(crate) fn take_oldest(&mut self, n: usize) -> (Vec<CarbonPoint>, Vec<u64>) {
        let done = self.release_inflight();
        let n = n.min(self.backlog.len());
        let taken: Vec<CarbonPoint> = self.backlog.drain(..n).collect();
        self.front_seq += n as u64;
        let front = self.front_seq;
        self.fail_acks_before(front);
        (taken, done)
    }

    fn pop_inflight(&mut self, done: &mut Vec<u64>) {
        match self.inflight.pop_front() {
            Some(Sent::Points { points, .. }) => self.inflight_points -= points.len(),
            Some(Sent::Segment { id, .. }) => done.push(id),
            None => {}
        }
    }

    /// Fails (drops) every ack that covers a point numbered below `seq`.
    fn fail_acks_before(&mut self, seq: u64) {
        while self.acks.front().is_some_and(|a| a.start < seq) {
            self.acks.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pts(range: std::ops::Range<i64>) -> Vec<CarbonPoint> {
        super::super::encoder::test_points("a.b", range, 1.0)
    }

    fn ts_of(q: &Queue) -> Vec<i64> {
        q.backlog.iter().map(|p| p.ts).collect()
    }

    #[test]
    fn broken_connection_puts_inflight_back_in_order() {
        let mut q = Queue::new();
        let t0 = Instant::now();
        q.push_all(pts(0..10), None);
        assert_eq!(q.take_for_write(4, t0).len(), 4);
        assert_eq!(q.take_for_write(3, t0).len(), 3);
        q.push_all(pts(10..12), None);
        assert_eq!((q.backlog_len(), q.inflight_len()), (5, 7));
        assert_eq!(q.requeue_inflight(), 7);
        assert_eq!(ts_of(&q), (0..12).collect::<Vec<_>>());
        assert_eq!(q.front_seq, 0);
        assert_eq!(q.inflight_len(), 0);
    }

    #[test]
    fn inflight_ages_out_after_the_window_and_returns_segments() {
        let mut q = Queue::new();
        let t0 = Instant::now();
        let w = Duration::from_secs(30);
        q.segment_written(7, t0);
        q.push_all(pts(0..5), None);
        q.take_for_write(5, t0 + Duration::from_secs(10));
        assert!(q.age(t0 + Duration::from_secs(29), w).is_empty());
        assert_eq!(q.age(t0 + Duration::from_secs(30), w), vec![7]);
        assert_eq!(q.inflight_len(), 5);
        assert!(q.age(t0 + Duration::from_secs(40), w).is_empty());
        assert_eq!(q.inflight_len(), 0);
        assert_eq!(q.requeue_inflight(), 0);
    }

    #[test]
    fn acks_fire_on_confirmation_only_when_all_points_were_written() {
        let mut q = Queue::new();
        let t0 = Instant::now();
        let (tx1, mut rx1) = oneshot::channel();
        let (tx2, mut rx2) = oneshot::channel();
        q.push_all(pts(0..3), Some(tx1));
        q.push_all(pts(3..6), Some(tx2));
        assert!(!q.wants_confirm());
        q.take_for_write(4, t0);
        assert!(q.wants_confirm());
        // Aging never forgets points an ack waits for.
        assert!(
            q.age(t0 + Duration::from_secs(3600), Duration::from_secs(1))
                .is_empty()
        );
        assert_eq!(q.inflight_len(), 4);
        q.confirm_all();
        assert_eq!(rx1.try_recv(), Ok(()));
        assert!(rx2.try_recv().is_err(), "ack 2 fired with points unwritten");
        q.take_for_write(10, t0);
        q.confirm_all();
        assert_eq!(rx2.try_recv(), Ok(()));
        assert!(!q.has_acks());
    }

    #[test]
    fn requeued_points_keep_their_acks() {
        let mut q = Queue::new();
        let t0 = Instant::now();
        let (tx, mut rx) = oneshot::channel();
        q.push_all(pts(0..3), Some(tx));
        q.take_for_write(3, t0);
        q.requeue_inflight();
        assert!(!q.wants_confirm());
        q.take_for_write(3, t0);
        q.confirm_all();
        assert_eq!(rx.try_recv(), Ok(()));
    }

    #[test]
    fn taking_the_oldest_fails_their_acks_and_releases_inflight() {
        let mut q = Queue::new();
        let t0 = Instant::now();
        let (tx1, mut rx1) = oneshot::channel();
        let (tx2, mut rx2) = oneshot::channel();
        q.push_all(pts(0..2), None);
        q.take_for_write(1, t0);
        q.segment_written(3, t0);
        q.push_all(pts(2..5), Some(tx1));
        q.push_all(pts(5..8), Some(tx2));
        let (taken, segments) = q.take_oldest(3);
        assert_eq!(
            taken.iter().map(|p| p.ts).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        assert_eq!(segments, vec![3]);
        assert_eq!(q.inflight_len(), 0);
        assert!(matches!(
            rx1.try_recv(),
            Err(oneshot::error::TryRecvError::Closed)
        ));
        assert!(matches!(
            rx2.try_recv(),
            Err(oneshot::error::TryRecvError::Empty)
        ));
        assert_eq!(ts_of(&q), vec![4, 5, 6, 7]);
        // Numbering stays contiguous: writing and confirming the rest
        // fires the surviving ack.
        q.take_for_write(10, t0);
        q.confirm_all();
        assert_eq!(rx2.try_recv(), Ok(()));
    }
}
