//! The event queue: a binary heap for events in arbitrary order, beside FIFO lanes for the events
//! that usually arrive in time order anyway (scheduled for now, or with one fixed delay such as a
//! per-try timeout). A lane costs a push and a pop at its ends instead of a heap's sift through
//! thousands of pending timers.
//!
//! Order is exactly (time, sequence number) whichever store an event sits in: every store is
//! sorted by that key, `pop_until` takes the smallest key of the heap's top and the lanes' fronts,
//! and an event goes into a lane only if it sorts after the lane's last event (else into the heap).
//! A lane hint therefore changes speed, never the order. The smallest key outside lane 0 is
//! kept, so an event for now (lane 0) pops without a scan when nothing else is due before it.
//! An event for now scheduled while nothing at all is due now (the hop of a request through a
//! mesh without latency) waits in a single slot instead: it is the smallest key pending until it
//! pops, since whatever is scheduled after it sorts after it.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};

use super::SimTime;

/// What the queue may know about an event: the lane for its kind, if events of that kind are
/// usually scheduled in time order. The queue checks the order itself; a wrong hint is only slow.
pub(crate) trait Laned {
    /// Number of hinted lanes ([`Laned::lane`] returns indices below it).
    const LANES: usize;
    /// The lane to try for this event.
    fn lane(&self) -> Option<usize>;
}

/// (time, sequence number) in one integer: time in the high half, so integer order is event order.
type Key = u128;

#[inline]
fn key(time: SimTime, seq: u64) -> Key {
    (u128::from(time) << 64) | u128::from(seq)
}

#[inline]
fn time_of(k: Key) -> SimTime {
    (k >> 64) as SimTime
}

/// No event: sorts after every real key (a sequence number never reaches `u64::MAX`).
const NONE: Key = Key::MAX;

struct Entry<E> {
    key: Key,
    event: E,
}

impl<E> PartialEq for Entry<E> {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}
impl<E> Eq for Entry<E> {}
impl<E> PartialOrd for Entry<E> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<E> Ord for Entry<E> {
    // Reversed so that BinaryHeap (a max-heap) pops the smallest key first.
    fn cmp(&self, other: &Self) -> Ordering {
        other.key.cmp(&self.key)
    }
}

/// Lanes: lane 0 for events scheduled for now, up to `MAX_LANES - 1` for [`Laned`] hints.
const MAX_LANES: usize = 16;

/// A priority queue of events with a virtual clock.
///
/// `pop` advances the clock to the event's time; scheduling in the past is clamped to `now`
/// so the clock never runs backwards.
pub(crate) struct EventQueue<E> {
    heap: BinaryHeap<Entry<E>>,
    /// FIFOs, each sorted by key. Lane 0 takes events scheduled for now (they sort after
    /// everything pending at now); lane `i + 1` the events hinted to lane `i` ([`Laned::lane`]).
    lanes: [VecDeque<Entry<E>>; MAX_LANES],
    /// Each lane's first key ([`NONE`] when empty), for the scan in `pop_until`.
    fronts: [Key; MAX_LANES],
    /// Each lane's last key (0 when empty): a new event may follow it only if its key is larger.
    backs: [Key; MAX_LANES],
    /// Bit `i` is set while lane `i` holds events, so a pop scans only those.
    busy: u32,
    /// The smallest key outside lane 0 (heap top and lanes 1.., [`NONE`] when empty) and where
    /// it is (`MAX_LANES` for the heap). An event for now sorts after everything pending at now,
    /// so while this is later than lane 0's front, lane 0 pops without a scan.
    rest_min: Key,
    rest_from: usize,
    /// An event for now scheduled while nothing else was due now: the next to pop.
    next: Option<E>,
    now: SimTime,
    seq: u64,
    popped: u64,
}

impl<E: Laned> Default for EventQueue<E> {
    fn default() -> Self {
        Self::new()
    }
}

impl<E: Laned> EventQueue<E> {
    /// An empty queue at time zero.
    pub(crate) fn new() -> Self {
        const { assert!(E::LANES < MAX_LANES, "too many lanes") };
        Self {
            heap: BinaryHeap::with_capacity(1024),
            lanes: std::array::from_fn(|_| VecDeque::new()),
            fronts: [NONE; MAX_LANES],
            backs: [0; MAX_LANES],
            busy: 0,
            rest_min: NONE,
            rest_from: MAX_LANES,
            next: None,
            now: 0,
            seq: 0,
            popped: 0,
        }
    }

    /// Current virtual time.
    #[inline]
    pub(crate) fn now(&self) -> SimTime {
        self.now
    }

    /// Schedules `event` at absolute time `at` (clamped to now). Always inlined: most callers
    /// pass a known kind, so the lane choice folds away.
    #[inline(always)]
    pub(crate) fn schedule_at(&mut self, at: SimTime, event: E) {
        let time = at.max(self.now);
        self.seq += 1;
        let k = key(time, self.seq);
        // Everything pending at `now` was scheduled before, so an event for now sorts last.
        let lane = if time == self.now {
            if self.nothing_due_now() {
                self.next = Some(event);
                return;
            }
            0
        } else {
            let lane = match event.lane() {
                Some(i) if self.backs[i + 1] < k => i + 1,
                _ => MAX_LANES,
            };
            if k < self.rest_min {
                (self.rest_min, self.rest_from) = (k, lane);
            }
            if lane == MAX_LANES {
                self.heap.push(Entry { key: k, event });
                return;
            }
            lane
        };
        if self.busy & (1 << lane) == 0 {
            self.busy |= 1 << lane;
            self.fronts[lane] = k;
        }
        self.backs[lane] = k;
        self.lanes[lane].push_back(Entry { key: k, event });
    }

    /// Schedules `event` after `delay` from now.
    #[inline]
    pub(crate) fn schedule_in(&mut self, delay: SimTime, event: E) {
        self.schedule_at(self.now.saturating_add(delay), event);
    }

    /// Removes the next event if it is due at or before `limit`, advancing the clock to it.
    #[inline(always)]
    pub(crate) fn pop_until(&mut self, limit: SimTime) -> Option<E> {
        if self.next.is_some() && self.now <= limit {
            self.popped += 1;
            return self.next.take();
        }
        let from = if self.fronts[0] < self.rest_min {
            0
        } else {
            self.rest_from
        };
        let best = self.fronts[0].min(self.rest_min);
        if best == NONE || time_of(best) > limit {
            return None;
        }
        let e = if from < MAX_LANES {
            let lane = &mut self.lanes[from];
            let e = lane.pop_front()?;
            match lane.front() {
                Some(next) => self.fronts[from] = next.key,
                None => {
                    self.fronts[from] = NONE;
                    self.backs[from] = 0;
                    self.busy &= !(1 << from);
                }
            }
            e
        } else {
            self.heap.pop()?
        };
        if from != 0 {
            self.rescan_rest();
        }
        self.now = time_of(e.key);
        self.popped += 1;
        Some(e.event)
    }

    /// Finds the smallest key outside lane 0 again (after one of them was popped).
    #[inline]
    fn rescan_rest(&mut self) {
        let mut best = self.heap.peek().map_or(NONE, |e| e.key);
        let mut from = MAX_LANES;
        let mut busy = self.busy & !1;
        while busy != 0 {
            let i = busy.trailing_zeros() as usize;
            busy &= busy - 1;
            if self.fronts[i] < best {
                best = self.fronts[i];
                from = i;
            }
        }
        (self.rest_min, self.rest_from) = (best, from);
    }

    /// True when an event scheduled for now would be the next one popped: nothing else is due
    /// now. A caller about to schedule one as its last act may then handle it at once instead,
    /// telling [`EventQueue::count_handled`]; the order of events is the same.
    #[inline]
    pub(crate) fn nothing_due_now(&self) -> bool {
        self.next.is_none() && self.busy & 1 == 0 && time_of(self.rest_min) > self.now
    }

    /// Counts an event handled at once (see [`EventQueue::nothing_due_now`]) as processed.
    #[inline]
    pub(crate) fn count_handled(&mut self) {
        self.popped += 1;
    }

    /// Moves the clock forward to `t` without processing anything (used after `pop_until`
    /// drained every event up to `t`).
    pub(crate) fn advance_to(&mut self, t: SimTime) {
        self.now = self.now.max(t);
    }

    /// Number of events processed so far.
    pub(crate) fn events_processed(&self) -> u64 {
        self.popped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A test event: its name, and the lane it asks for.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    struct T(u32, Option<usize>);

    impl Laned for T {
        const LANES: usize = 2;
        fn lane(&self) -> Option<usize> {
            self.1
        }
    }

    fn drain(q: &mut EventQueue<T>, limit: SimTime) -> Vec<u32> {
        std::iter::from_fn(|| q.pop_until(limit).map(|t| t.0)).collect()
    }

    #[test]
    fn events_at_the_same_time_pop_in_insertion_order() {
        let mut q = EventQueue::new();
        q.schedule_at(10, T(2, None));
        q.schedule_at(5, T(1, Some(0)));
        q.schedule_at(10, T(3, Some(1)));
        assert_eq!(drain(&mut q, u64::MAX), vec![1, 2, 3]);
        assert_eq!(q.now(), 10);
    }

    #[test]
    fn an_event_for_now_waits_behind_those_already_due_now() {
        let mut q = EventQueue::new();
        q.schedule_at(5, T(1, None));
        q.schedule_at(5, T(2, None));
        q.schedule_at(7, T(4, None));
        assert_eq!(q.pop_until(u64::MAX), Some(T(1, None)));
        // Scheduled at now = 5: after event 2 (due at 5, scheduled earlier), before event 4.
        q.schedule_in(0, T(3, Some(1)));
        assert_eq!(drain(&mut q, u64::MAX), vec![2, 3, 4]);
    }

    #[test]
    fn a_lane_hint_out_of_time_order_goes_to_the_heap() {
        let mut q = EventQueue::new();
        q.schedule_at(20, T(3, Some(0)));
        q.schedule_at(10, T(1, Some(0))); // earlier than the lane's last: must not follow it
        q.schedule_at(15, T(2, Some(1)));
        assert_eq!(drain(&mut q, 12), vec![1]);
        assert_eq!(drain(&mut q, u64::MAX), vec![2, 3]);
    }

    #[test]
    fn nothing_is_due_now_only_once_every_event_at_now_has_popped() {
        let mut q = EventQueue::new();
        q.schedule_at(5, T(1, None));
        q.schedule_at(5, T(2, Some(0)));
        q.schedule_at(9, T(3, None));
        assert_eq!(q.pop_until(u64::MAX), Some(T(1, None)));
        assert!(!q.nothing_due_now(), "event 2 is due at 5 in a lane");
        assert_eq!(q.pop_until(u64::MAX), Some(T(2, Some(0))));
        assert!(q.nothing_due_now(), "only event 3, at 9, is left");
        q.schedule_in(0, T(4, None));
        assert!(!q.nothing_due_now(), "event 4 was scheduled for now");
        assert_eq!(drain(&mut q, 5), vec![4]);
        q.schedule_at(5, T(5, None));
        q.schedule_at(5, T(6, None));
        assert_eq!(q.pop_until(u64::MAX), Some(T(5, None)));
        assert!(!q.nothing_due_now(), "event 6 is due now");
        q.count_handled();
        assert_eq!(
            q.events_processed(),
            5,
            "four pops and one event handled at once"
        );
    }

    #[test]
    fn an_event_for_now_while_nothing_is_due_pops_before_everything_scheduled_after_it() {
        let mut q = EventQueue::new();
        q.schedule_at(5, T(1, None));
        q.schedule_at(9, T(5, Some(0)));
        assert_eq!(q.pop_until(u64::MAX), Some(T(1, None)));
        // Nothing else is due at 5: event 2 waits in the slot for the next event.
        q.schedule_in(0, T(2, None));
        assert!(!q.nothing_due_now(), "event 2 is due now");
        q.schedule_in(0, T(3, Some(1)));
        q.schedule_at(3, T(4, None)); // in the past: clamped to now, after 2 and 3
        assert_eq!(
            q.pop_until(4),
            None,
            "nothing is due by 4, the clock is at 5"
        );
        assert_eq!(drain(&mut q, u64::MAX), vec![2, 3, 4, 5]);
        assert_eq!(q.events_processed(), 5);
    }

    /// Any mix of hints, delays and interleaved pops yields the (time, insertion) order that
    /// sorting every event would give.
    #[test]
    fn any_hints_pop_in_time_then_insertion_order() {
        let mut rng = crate::engine::Stream::new(3, "queue-test");
        let mut q = EventQueue::new();
        let mut pending: Vec<(SimTime, u32)> = Vec::new();
        let mut got = Vec::new();
        let mut want = Vec::new();
        for n in 0..6_000u32 {
            let delay = match rng.below(4) {
                0 => 0,
                1 => 100,
                2 => u64::from(rng.below(50)),
                _ => u64::from(rng.below(1000)),
            };
            let hint = [None, Some(0), Some(1)][rng.below(3) as usize];
            let at = q.now() + delay;
            q.schedule_at(at, T(n, hint));
            pending.push((at, n));
            if rng.below(2) == 0 {
                let t = q.pop_until(u64::MAX).expect("an event is pending");
                got.push(t.0);
                // The reference: the smallest (time, insertion number) still pending.
                let i = (0..pending.len()).min_by_key(|&i| pending[i]).unwrap();
                want.push(pending.swap_remove(i).1);
            }
        }
        assert_eq!(got, want);
    }
}
