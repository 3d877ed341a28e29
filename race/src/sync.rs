//! Synchronization objects: one vector clock per address that a release has published to (an atomic, a
//! mutex word, a wait/notify address). Created by the first release, read by acquires, dropped when the
//! memory holding them is freed: that drop is what keeps the table bounded by live memory.
//!
//! # Layout and locking
//!
//! [`SHARDS`] shards, each a mutex over an ordered map address → clock; an address belongs to the shard of
//! its 4 KiB page. Ordered so that dropping a freed range is a range query, not a scan; sharded by page
//! so that the range query for a small object visits one shard. One lock is held at a time, never across
//! a call out, so there is no lock order to get wrong.
//!
//! A release joins the thread's clock into the object's (rather than replacing it, as a plain release
//! store would in C++): this can only add happens-before edges, so it can hide a race but never invent one.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use crate::clock::VectorClock;

const SHARDS: usize = 64;
const SYNC_PAGE: u64 = 4096;

#[repr(align(128))]
#[derive(Default)]
struct Padded(Mutex<BTreeMap<u64, VectorClock>>);

pub(crate) struct SyncTable {
    shards: Box<[Padded]>,
}

/// What `SyncTable::usage` counts.
pub(crate) struct SyncUsage {
    pub(crate) objects: usize,
    pub(crate) bytes: usize,
}

impl SyncTable {
    pub(crate) fn new() -> SyncTable {
        SyncTable { shards: (0..SHARDS).map(|_| Padded::default()).collect() }
    }

    fn shard_at(&self, index: usize) -> MutexGuard<'_, BTreeMap<u64, VectorClock>> {
        self.shards[index].0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn shard(&self, addr: u64) -> MutexGuard<'_, BTreeMap<u64, VectorClock>> {
        self.shard_at((addr / SYNC_PAGE) as usize % SHARDS)
    }

    /// `now` learns everything published at `addr` (nothing if no release has happened there).
    pub(crate) fn acquire(&self, addr: u64, now: &mut VectorClock) {
        if let Some(published) = self.shard(addr).get(&addr) {
            now.join(published);
        }
    }

    /// Publishes `now` at `addr`.
    pub(crate) fn release(&self, addr: u64, now: &VectorClock) {
        self.shard(addr).entry(addr).or_default().join(now);
    }

    /// Acquire then release under one lock, as an atomic read-modify-write does: after the acquire the
    /// thread's clock is at least the object's, so the release is a plain copy.
    pub(crate) fn acquire_release(&self, addr: u64, now: &mut VectorClock) {
        let mut shard = self.shard(addr);
        let published = shard.entry(addr).or_default();
        now.join(published);
        published.clone_from(now);
    }

    /// Drops every object whose address is in `[lo, lo + len)`. Visits one shard per 4 KiB page of the
    /// range, or each shard once when that is fewer.
    pub(crate) fn forget(&self, lo: u64, len: u64) {
        let hi = lo.saturating_add(len);
        if hi <= lo {
            return;
        }
        let pages = hi.div_ceil(SYNC_PAGE) - lo / SYNC_PAGE;
        if pages >= SHARDS as u64 {
            (0..SHARDS).for_each(|i| remove_range(&mut self.shard_at(i), lo, hi));
            return;
        }
        let mut page_start = lo - lo % SYNC_PAGE;
        while page_start < hi {
            let page_end = page_start.saturating_add(SYNC_PAGE);
            remove_range(&mut self.shard(page_start), lo.max(page_start), hi.min(page_end));
            page_start = page_end;
        }
    }

    pub(crate) fn usage(&self) -> SyncUsage {
        let mut usage = SyncUsage { objects: 0, bytes: 0 };
        for i in 0..SHARDS {
            let shard = self.shard_at(i);
            usage.objects += shard.len();
            // Key, clock header, clock components; B-tree node overhead is not counted.
            let entry = size_of::<(u64, VectorClock)>();
            usage.bytes += shard.values().map(|c| entry + c.heap_bytes()).sum::<usize>();
        }
        usage
    }
}

fn remove_range(map: &mut BTreeMap<u64, VectorClock>, lo: u64, hi: u64) {
    // Most freed objects hold no sync object: check before allocating the key list.
    if map.range(lo..hi).next().is_none() {
        return;
    }
    let keys: Vec<u64> = map.range(lo..hi).map(|(&k, _)| k).collect();
    for k in keys {
        map.remove(&k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clock_of(tid: u32, value: u64) -> VectorClock {
        let mut c = VectorClock::default();
        c.set(tid, value);
        c
    }

    #[test]
    fn release_then_acquire_transfers_the_clock() {
        let table = SyncTable::new();
        let mut reader = clock_of(2, 1);
        table.acquire(64, &mut reader);
        assert_eq!(reader.get(1), 0, "acquire of an unknown address learns nothing");
        assert_eq!(table.usage().objects, 0, "and creates nothing");
        table.release(64, &clock_of(1, 7));
        table.acquire(64, &mut reader);
        assert_eq!(reader.get(1), 7);
    }

    #[test]
    fn acquire_release_chains_through_an_rmw() {
        let table = SyncTable::new();
        let mut a = clock_of(1, 3);
        table.acquire_release(8, &mut a);
        let mut b = clock_of(2, 5);
        table.acquire_release(8, &mut b);
        assert_eq!(b.get(1), 3);
        let mut c = clock_of(3, 1);
        table.acquire(8, &mut c);
        assert_eq!((c.get(1), c.get(2)), (3, 5));
    }

    #[test]
    fn forget_drops_exactly_the_range() {
        let table = SyncTable::new();
        for addr in (0..100_000u64).step_by(1000) {
            table.release(addr, &clock_of(0, 1));
        }
        assert_eq!(table.usage().objects, 100);
        table.forget(1000, 2000); // 1000 and 2000; 3000 is outside
        assert_eq!(table.usage().objects, 98);
        table.forget(50_000, 1 << 40); // the many-page path
        assert_eq!(table.usage().objects, 48);
        table.forget(0, u64::MAX);
        assert_eq!(table.usage().objects, 0);
    }
}
