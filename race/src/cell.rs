//! The shadow state of one 8-byte granule: [`CELLS`] cells, each one earlier access (who, when, which
//! bytes, read/write, plain/atomic, where), and the rule that checks a new access against them and decides
//! which cell it goes into. This file is single-threaded; `shadow.rs` owns the locking.
//!
//! # The update rule (one access `cur` to one granule)
//!
//! For each occupied cell `old`:
//! - **Race**: `old` is not ordered before `cur` (its epoch is not covered by the thread's clock) and they
//!   conflict (overlapping byte masks, at least one write, not both atomic). Different threads are implied:
//!   a thread's own earlier accesses are always covered. The cell is returned to the caller.
//! - **Already known** (FastTrack's same-epoch rule): `old` has `cur`'s epoch, covers its bytes, and is at
//!   least as strong (a write if `cur` writes, plain if `cur` is plain; see [`Cell::subsumes`]). Any later
//!   access that races with `cur` races with `old` too, so `cur` is not stored.
//! - **Superseded**: `old` is ordered before `cur`, and `cur` covers `old`'s bytes and is at least as
//!   strong. Any later access racing with `old` is not ordered after `cur` either (else it would be after
//!   `old`), so it races with `cur`: `old` can be dropped. This keeps one cell per thread for a thread
//!   re-accessing its own data, the common case.
//!
//! `cur` then goes into a superseded cell, else an empty one, else it evicts: a cell ordered before `cur`
//! if there is one (its races with later accesses are the least likely), else a cell picked by the caller's
//! rotating hint (TSan picks at random). Eviction is the one place information is lost: a later access
//! that would race only with the evicted access goes unreported. Nothing here ever reports a pair that the
//! clocks do not show unordered, so a report is never false.

use crate::clock::{Epoch, VectorClock};

/// Cells per granule: four, as in ThreadSanitizer. Four unordered accesses to one granule are remembered
/// exactly; a fifth evicts one.
pub(crate) const CELLS: usize = 4;

const WRITE: u8 = 1;
const ATOMIC: u8 = 2;
const SIZE_SHIFT: u32 = 2;

/// One access as stored: packed epoch, bytes touched in this granule, flags (write, atomic, and the whole
/// access's size − 1 in bits 2..5, so the reported previous access has its real start and size even when
/// it spanned two granules), and the VM's site.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Cell {
    pub(crate) epoch: Epoch,
    pub(crate) mask: u8,
    pub(crate) flags: u8,
    pub(crate) site: u64,
}

impl Cell {
    /// `size` is the whole access's size (1..=8), `mask` its bytes in this granule.
    pub(crate) fn new(epoch: Epoch, mask: u8, size: u8, write: bool, atomic: bool, site: u64) -> Cell {
        debug_assert!((1..=8).contains(&size) && mask != 0);
        let flags = (u8::from(write) * WRITE) | (u8::from(atomic) * ATOMIC) | ((size - 1) << SIZE_SHIFT);
        Cell { epoch, mask, flags, site }
    }

    pub(crate) fn is_write(&self) -> bool {
        self.flags & WRITE != 0
    }

    pub(crate) fn is_atomic(&self) -> bool {
        self.flags & ATOMIC != 0
    }

    pub(crate) fn size(&self) -> u8 {
        (self.flags >> SIZE_SHIFT) + 1
    }

    /// The first byte of the whole access, given this granule's base. An access that began in the previous
    /// granule has a mask starting at byte 0 with fewer bytes than its size; one that continues into the
    /// next granule ends at byte 7 and starts at its mask's first byte. The two cannot be confused: both
    /// would mean a full mask, i.e. an aligned 8-byte access that spans nothing.
    pub(crate) fn start(&self, granule: u64) -> u64 {
        let here = u64::from(self.mask.count_ones());
        if self.mask & 1 != 0 && here < u64::from(self.size()) {
            granule.wrapping_sub(u64::from(self.size()) - here)
        } else {
            granule + u64::from(self.mask.trailing_zeros())
        }
    }

    fn conflicts(&self, other: &Cell) -> bool {
        self.mask & other.mask != 0 && (self.is_write() || other.is_write()) && !(self.is_atomic() && other.is_atomic())
    }

    /// `self` can stand for `other` in every future race check: it covers `other`'s bytes, writes if
    /// `other` writes (a write conflicts with more), and is plain if `other` is plain (a plain access
    /// conflicts with atomics too). The epoch condition is the caller's.
    fn subsumes(&self, other: &Cell) -> bool {
        self.mask & other.mask == other.mask
            && (self.is_write() || !other.is_write())
            && (!self.is_atomic() || other.is_atomic())
    }
}

/// The cells of one granule, as a struct of arrays so that the epoch scan touches one cache line and a
/// granule costs 72 bytes (a cell of four fields would pad to 24 bytes).
#[derive(Clone, Debug, Default)]
pub(crate) struct Granule {
    epochs: [u64; CELLS],
    sites: [u64; CELLS],
    masks: [u8; CELLS],
    flags: [u8; CELLS],
}

/// The cells that race with one access (at most one per cell).
#[derive(Default)]
pub(crate) struct Conflicts {
    cells: [Option<Cell>; CELLS],
}

impl Conflicts {
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Cell> {
        self.cells.iter().flatten()
    }
}

impl Granule {
    fn cell(&self, i: usize) -> Option<Cell> {
        let epoch = Epoch(self.epochs[i]);
        (epoch != Epoch::NONE).then(|| Cell { epoch, mask: self.masks[i], flags: self.flags[i], site: self.sites[i] })
    }

    fn put(&mut self, i: usize, cell: Option<Cell>) {
        let c = cell.unwrap_or(Cell { epoch: Epoch::NONE, mask: 0, flags: 0, site: 0 });
        (self.epochs[i], self.masks[i], self.flags[i], self.sites[i]) = (c.epoch.0, c.mask, c.flags, c.site);
    }

    /// Checks `cur` (made by the thread whose clock is `now`) against every cell, records it by the rule
    /// in the file comment, and returns the cells it races with. `evict_hint` picks the victim when no
    /// cell is free or ordered before `cur`.
    pub(crate) fn access(&mut self, cur: &Cell, now: &VectorClock, evict_hint: usize) -> Conflicts {
        let mut conflicts = Conflicts::default();
        let (mut known, mut superseded, mut empty, mut ordered) = (false, 0u8, None, None);
        for i in 0..CELLS {
            let Some(old) = self.cell(i) else {
                empty = empty.or(Some(i));
                continue;
            };
            if !now.covers(old.epoch) {
                if old.conflicts(cur) {
                    conflicts.cells[i] = Some(old);
                }
                continue;
            }
            ordered = ordered.or(Some(i));
            if old.epoch == cur.epoch && old.subsumes(cur) {
                known = true;
            } else if cur.subsumes(&old) {
                superseded |= 1 << i;
            }
        }
        if !known {
            self.store(cur, superseded, empty.or(ordered).unwrap_or(evict_hint % CELLS));
        }
        conflicts
    }

    /// Puts `cur` into the first superseded cell (clearing the others), else into `fallback`.
    fn store(&mut self, cur: &Cell, superseded: u8, fallback: usize) {
        if superseded == 0 {
            self.put(fallback, Some(*cur));
            return;
        }
        let first = superseded.trailing_zeros() as usize;
        for i in 0..CELLS {
            if superseded & (1 << i) != 0 {
                self.put(i, (i == first).then_some(*cur));
            }
        }
    }

    /// Drops every cell that touches a byte in `mask` (used by reset/free of a range that covers only part
    /// of this granule). Whole cells go, not just the bits, so that a kept cell still describes its access
    /// exactly; the cost is a possible missed race on the bytes outside the range.
    pub(crate) fn forget(&mut self, mask: u8) {
        for i in 0..CELLS {
            if self.masks[i] & mask != 0 {
                self.put(i, None);
            }
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.epochs.iter().all(|&e| e == 0)
    }

    #[cfg(test)]
    pub(crate) fn occupied(&self) -> usize {
        self.epochs.iter().filter(|&&e| e != 0).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clock(parts: &[(u32, u64)]) -> VectorClock {
        let mut c = VectorClock::default();
        for &(t, v) in parts {
            c.set(t, v);
        }
        c
    }

    fn write(tid: u32, clock: u64, mask: u8) -> Cell {
        Cell::new(Epoch::new(tid, clock), mask, mask.count_ones() as u8, true, false, u64::from(tid))
    }

    fn read(tid: u32, clock: u64, mask: u8) -> Cell {
        Cell::new(Epoch::new(tid, clock), mask, mask.count_ones() as u8, false, false, u64::from(tid))
    }

    #[test]
    fn start_recovers_spanning_accesses() {
        // 4 bytes at granule+6: 2 bytes here (mask 0xC0), 2 in the next granule (mask 0x03).
        let here = Cell::new(Epoch::new(0, 1), 0xC0, 4, true, false, 0);
        let next = Cell::new(Epoch::new(0, 1), 0x03, 4, true, false, 0);
        assert_eq!(here.start(64), 70);
        assert_eq!(next.start(72), 70);
        let aligned = Cell::new(Epoch::new(0, 1), 0xFF, 8, false, false, 0);
        assert_eq!(aligned.start(64), 64);
        let inner = Cell::new(Epoch::new(0, 1), 0x0C, 2, false, false, 0);
        assert_eq!((inner.start(64), inner.size()), (66, 2));
    }

    #[test]
    fn unordered_conflict_is_returned_and_ordered_is_not() {
        let mut g = Granule::default();
        assert_eq!(g.access(&write(1, 1, 0xFF), &clock(&[(1, 1)]), 0).iter().count(), 0);
        let racy = g.access(&read(2, 1, 0x01), &clock(&[(2, 1)]), 0);
        assert_eq!(racy.iter().map(|c| c.epoch.tid()).collect::<Vec<_>>(), vec![1]);
        let ordered = g.access(&read(3, 1, 0x01), &clock(&[(1, 1), (3, 1)]), 0);
        assert_eq!(ordered.iter().count(), 0);
    }

    #[test]
    fn same_epoch_repeat_is_not_stored_twice() {
        let mut g = Granule::default();
        let now = clock(&[(1, 5)]);
        g.access(&write(1, 5, 0xFF), &now, 0);
        g.access(&read(1, 5, 0x0F), &now, 0);
        g.access(&write(1, 5, 0x01), &now, 0);
        assert_eq!(g.occupied(), 1);
    }

    #[test]
    fn later_covering_access_supersedes_its_own_thread() {
        let mut g = Granule::default();
        g.access(&read(1, 1, 0x01), &clock(&[(1, 1)]), 0);
        g.access(&read(1, 2, 0x02), &clock(&[(1, 2)]), 0);
        assert_eq!(g.occupied(), 2);
        g.access(&write(1, 3, 0xFF), &clock(&[(1, 3)]), 0);
        assert_eq!(g.occupied(), 1, "one write covering both reads replaces them");
    }

    #[test]
    fn atomic_does_not_supersede_plain() {
        let mut g = Granule::default();
        g.access(&write(1, 1, 0xFF), &clock(&[(1, 1)]), 0);
        let atomic = Cell::new(Epoch::new(1, 2), 0xFF, 8, true, true, 9);
        g.access(&atomic, &clock(&[(1, 2)]), 0);
        assert_eq!(g.occupied(), 2, "the plain write must stay: it races with other threads' atomics");
    }

    #[test]
    fn full_granule_evicts_and_keeps_reporting_the_rest() {
        let mut g = Granule::default();
        for t in 1..=4 {
            g.access(&read(t, 1, 0xFF), &clock(&[(t, 1)]), 0);
        }
        assert_eq!(g.occupied(), 4);
        g.access(&read(5, 1, 0xFF), &clock(&[(5, 1)]), 0);
        assert_eq!(g.occupied(), 4);
        let racy = g.access(&write(6, 1, 0xFF), &clock(&[(6, 1)]), 0);
        assert_eq!(racy.iter().count(), 4, "four readers left, one evicted: a missed race, not a false one");
    }

    #[test]
    fn forget_drops_touching_cells_only() {
        let mut g = Granule::default();
        g.access(&write(1, 1, 0x0F), &clock(&[(1, 1)]), 0);
        g.access(&write(2, 1, 0xF0), &clock(&[(2, 1)]), 0);
        g.forget(0x01);
        assert_eq!(g.occupied(), 1);
        g.forget(0x80);
        assert!(g.is_empty());
    }
}
