//! The event queue: a binary heap for events in arbitrary order, beside FIFO lanes for the events
//! that usually arrive in time order anyway (scheduled for now, or with one fixed delay such as a
//! per-try timeout). A lane costs a push and a pop at its ends instead of a heap's sift through
//! thousands of pending timers.
//!
//! Order is exactly (time, sequence number) whichever store an event sits in: every store is
//! sorted by that key, `pop_until` takes the smallest key of the heap's top and the lanes' fronts,
//! and an event goes into a lane only if it sorts after the lane's last event (else into the heap).
//! A lane hint therefore changes speed, never the order.

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

/// A FIFO of events sorted by key, with its ends' keys cached for the pop scan.
struct Lane<E> {
    entries: VecDeque<Entry<E>>,
    front: Key,
    back: Key,
}

impl<E> Lane<E> {
    fn new() -> Self {
        Self {
            entries: VecDeque::new(),
            front: NONE,
            back: 0,
        }
    }

    #[inline]
    fn push(&mut self, e: Entry<E>) {
        if self.entries.is_empty() {
            self.front = e.key;
        }
        self.back = e.key;
        self.entries.push_back(e);
    }

    #[inline]
    fn pop(&mut self) -> Option<Entry<E>> {
        let e = self.entries.pop_front()?;
        match self.entries.front() {
            Some(next) => self.front = next.key,
            None => (self.front, self.back) = (NONE, 0),
        }
        Some(e)
    }
}

/// A priority queue of events with a virtual clock.
///
/// `pop` advances the clock to the event's time; scheduling in the past is clamped to `now`
/// so the clock never runs backwards.
pub(crate) struct EventQueue<E> {
    heap: BinaryHeap<Entry<E>>,
    /// Lane 0 takes events scheduled for now (they sort after everything pending at now); the
    /// others are [`Laned::lane`] + 1.
    lanes: Vec<Lane<E>>,
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
        Self {
            heap: BinaryHeap::with_capacity(1024),
            lanes: (0..=E::LANES).map(|_| Lane::new()).collect(),
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

    /// Schedules `event` at absolute time `at` (clamped to now).
    #[inline]
    pub(crate) fn schedule_at(&mut self, at: SimTime, event: E) {
        let time = at.max(self.now);
        self.seq += 1;
        let e = Entry {
            key: key(time, self.seq),
            event,
        };
        // Everything pending at `now` was scheduled before, so an event for now sorts last.
        let lane = if time == self.now {
            0
        } else {
            match e.event.lane() {
                Some(i) if self.lanes[i + 1].back < e.key => i + 1,
                _ => {
                    self.heap.push(e);
                    return;
                }
            }
        };
        self.lanes[lane].push(e);
    }

    /// Schedules `event` after `delay` from now.
    #[inline]
    pub(crate) fn schedule_in(&mut self, delay: SimTime, event: E) {
        self.schedule_at(self.now.saturating_add(delay), event);
    }

    /// Removes the next event if it is due at or before `limit`, advancing the clock to it.
    #[inline]
    pub(crate) fn pop_until(&mut self, limit: SimTime) -> Option<E> {
        let mut best = self.heap.peek().map_or(NONE, |e| e.key);
        let mut from = None;
        for (i, lane) in self.lanes.iter().enumerate() {
            if lane.front < best {
                best = lane.front;
                from = Some(i);
            }
        }
        if best == NONE || time_of(best) > limit {
            return None;
        }
        let e = match from {
            Some(i) => self.lanes[i].pop(),
            None => self.heap.pop(),
        }?;
        self.now = time_of(e.key);
        self.popped += 1;
        Some(e.event)
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
