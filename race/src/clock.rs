//! Logical time: vector clocks (one per thread, sync object and exited thread) and epochs (one thread's
//! clock value, "c@t" in FastTrack), packed into a single `u64` so that a shadow cell stores it in one word.
//!
//! Every thread's own component starts at 1, so the packed word 0 never names a real access and can mean
//! "empty cell". A thread's component ticks only at releases (and at spawn, for the parent): accesses
//! between two releases share an epoch, which is what makes FastTrack's same-epoch fast path hit.

use crate::ThreadId;

/// Bits of a packed epoch that hold the thread id: threads with larger ids are not tracked (see
/// `ThreadCtx::tracked`), which loses races but never invents one.
pub(crate) const TID_BITS: u32 = 22;
/// Bits that hold the clock value: 2^42 releases by one thread (days at the detector's speed).
pub(crate) const CLOCK_BITS: u32 = 64 - TID_BITS;
/// The number of thread ids a shadow cell can name.
pub(crate) const TRACKED_THREADS: u32 = 1 << TID_BITS;
/// A clock saturates here instead of wrapping: a saturated clock can only make later accesses look
/// ordered (a missed race), whereas wrapping to a small value would report false ones.
pub(crate) const MAX_CLOCK: u64 = (1 << CLOCK_BITS) - 1;

/// One thread's clock value, packed as `tid << CLOCK_BITS | clock`. Zero means "no access".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Epoch(pub(crate) u64);

impl Epoch {
    pub(crate) const NONE: Epoch = Epoch(0);

    pub(crate) fn new(tid: ThreadId, clock: u64) -> Epoch {
        debug_assert!(tid < TRACKED_THREADS && clock <= MAX_CLOCK);
        Epoch((u64::from(tid) << CLOCK_BITS) | clock)
    }

    pub(crate) fn tid(self) -> ThreadId {
        (self.0 >> CLOCK_BITS) as ThreadId
    }

    pub(crate) fn clock(self) -> u64 {
        self.0 & MAX_CLOCK
    }
}

/// A vector clock: component `t` is the latest clock of thread `t` this holder has synchronized with.
/// Missing components are 0, so clocks grow only to the largest thread id they have heard of.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct VectorClock(Vec<u64>);

impl VectorClock {
    pub(crate) fn get(&self, tid: ThreadId) -> u64 {
        self.0.get(tid as usize).copied().unwrap_or(0)
    }

    pub(crate) fn set(&mut self, tid: ThreadId, clock: u64) {
        let i = tid as usize;
        if i >= self.0.len() {
            self.0.resize(i + 1, 0);
        }
        self.0[i] = clock;
    }

    /// Advances `tid`'s own component (after a release), saturating at [`MAX_CLOCK`].
    pub(crate) fn tick(&mut self, tid: ThreadId) {
        let next = (self.get(tid) + 1).min(MAX_CLOCK);
        self.set(tid, next);
    }

    /// Component-wise maximum: after `a.join(b)`, everything that happened before `b` happens before `a`.
    pub(crate) fn join(&mut self, other: &VectorClock) {
        if other.0.len() > self.0.len() {
            self.0.resize(other.0.len(), 0);
        }
        for (mine, theirs) in self.0.iter_mut().zip(&other.0) {
            *mine = (*mine).max(*theirs);
        }
    }

    /// FastTrack's O(1) test "epoch ≼ clock": the access at `epoch` happens before the holder's now.
    pub(crate) fn covers(&self, epoch: Epoch) -> bool {
        epoch.clock() <= self.get(epoch.tid())
    }

    /// Heap bytes held (for `Stats`).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.0.capacity() * size_of::<u64>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_packs_thread_and_clock() {
        let e = Epoch::new(TRACKED_THREADS - 1, MAX_CLOCK);
        assert_eq!((e.tid(), e.clock()), (TRACKED_THREADS - 1, MAX_CLOCK));
        let e = Epoch::new(3, 7);
        assert_eq!((e.tid(), e.clock()), (3, 7));
        assert_ne!(e, Epoch::NONE);
    }

    #[test]
    fn join_is_componentwise_max_and_grows() {
        let mut a = VectorClock::default();
        a.set(0, 5);
        let mut b = VectorClock::default();
        b.set(0, 2);
        b.set(3, 9);
        a.join(&b);
        assert_eq!((a.get(0), a.get(1), a.get(3), a.get(100)), (5, 0, 9, 0));
    }

    #[test]
    fn covers_compares_one_component() {
        let mut c = VectorClock::default();
        c.set(2, 4);
        assert!(c.covers(Epoch::new(2, 4)));
        assert!(!c.covers(Epoch::new(2, 5)));
        assert!(!c.covers(Epoch::new(1, 1)));
    }

    #[test]
    fn tick_saturates() {
        let mut c = VectorClock::default();
        c.set(1, MAX_CLOCK);
        c.tick(1);
        assert_eq!(c.get(1), MAX_CLOCK);
        c.tick(0);
        assert_eq!(c.get(0), 1);
    }
}
