//! The shadow map: granule address → [`Granule`], sharded and paged so that the access path takes one
//! uncontended lock and a range (an object the sweep freed) is dropped without scanning the whole map.
//!
//! # Layout
//!
//! Memory is cut into pages of [`PAGE_GRANULES`] granules (512 bytes). A page is in exactly one of
//! [`SHARDS`] shards, chosen by its low page-number bits, so neighbouring pages (one thread's array, the
//! next thread's array) land in different shards. A shard is a mutex over a hash map page number → [`Page`];
//! a page holds only the granules that were touched (a 64-byte slot index into a dense vector), so a lone
//! 8-byte field in a page costs one granule, not 64.
//!
//! # Locking
//!
//! Every operation holds at most one shard lock at a time and calls nothing while holding it, so there is
//! no lock order and no deadlock. An access spanning two granules in two pages locks them one after the
//! other; that is enough because each granule's check-and-record is atomic on its own.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use crate::cell::Granule;
use crate::page_hash::PageHasher;

pub(crate) const GRANULE: u64 = 8;
pub(crate) const PAGE_GRANULES: usize = 64;
pub(crate) const PAGE_BYTES: u64 = GRANULE * PAGE_GRANULES as u64;
pub(crate) const SHARDS: usize = 128;
/// Above this many pages, a range is forgotten by scanning the shards rather than probing each page.
const SCAN_PAGES: u64 = 1 << 14;
const NO_SLOT: u8 = u8::MAX;

/// The touched granules of one page: `slot[i]` is granule `i`'s index in `granules` (or [`NO_SLOT`]),
/// `owner[j]` the granule number of `granules[j]` (so a removal can move the last entry into the hole).
struct Page {
    slot: [u8; PAGE_GRANULES],
    granules: Vec<Granule>,
    owner: Vec<u8>,
}

impl Page {
    fn new() -> Page {
        Page { slot: [NO_SLOT; PAGE_GRANULES], granules: Vec::new(), owner: Vec::new() }
    }

    fn get_or_insert(&mut self, index: usize) -> &mut Granule {
        if self.slot[index] == NO_SLOT {
            self.slot[index] = self.granules.len() as u8;
            self.granules.push(Granule::default());
            self.owner.push(index as u8);
        }
        &mut self.granules[self.slot[index] as usize]
    }

    fn remove(&mut self, index: usize) {
        let j = self.slot[index];
        if j == NO_SLOT {
            return;
        }
        self.granules.swap_remove(j as usize);
        self.owner.swap_remove(j as usize);
        if let Some(&moved) = self.owner.get(j as usize) {
            self.slot[moved as usize] = j;
        }
        self.slot[index] = NO_SLOT;
    }

    /// Forgets `mask`'s bytes of granule `index`; the granule goes when no cell is left.
    fn forget(&mut self, index: usize, mask: u8) {
        if mask == u8::MAX {
            return self.remove(index);
        }
        if self.slot[index] != NO_SLOT {
            let g = &mut self.granules[self.slot[index] as usize];
            g.forget(mask);
            if g.is_empty() {
                self.remove(index);
            }
        }
    }

    /// Heap bytes besides the map entry itself; vectors shrink when mostly empty, so this tracks use.
    fn heap_bytes(&self) -> usize {
        self.granules.capacity() * size_of::<Granule>() + self.owner.capacity()
    }

    fn shrink(&mut self) {
        if self.granules.len() * 4 < self.granules.capacity() {
            self.granules.shrink_to_fit();
            self.owner.shrink_to_fit();
        }
    }
}

#[derive(Default)]
struct Shard {
    pages: HashMap<u64, Page, PageHasher>,
    granules: usize,
}

impl Shard {
    /// Forgets the bytes of page `page_no` that lie in `[lo, hi)`.
    fn forget_in_page(&mut self, page_no: u64, lo: u64, hi: u64) {
        let Some(page) = self.pages.get_mut(&page_no) else { return };
        let page_start = page_no * PAGE_BYTES;
        let (lo, hi) = (lo.max(page_start), hi.min(page_start.saturating_add(PAGE_BYTES)));
        let before = page.granules.len();
        if lo == page_start && hi - lo == PAGE_BYTES {
            page.granules.clear();
        } else {
            let mut g = lo - lo % GRANULE;
            while g < hi {
                page.forget(((g - page_start) / GRANULE) as usize, byte_mask(g, lo, hi));
                let Some(next) = g.checked_add(GRANULE) else { break };
                g = next;
            }
        }
        self.granules -= before - page.granules.len();
        if page.granules.is_empty() {
            self.pages.remove(&page_no);
        } else {
            page.shrink();
        }
    }

    /// Gives back the table of a map that has mostly emptied (memory follows live memory both ways).
    fn shrink(&mut self) {
        if self.pages.len() * 4 < self.pages.capacity() && self.pages.capacity() > 16 {
            self.pages.shrink_to_fit();
        }
    }
}

/// Pads a shard to its own cache lines so that two threads hammering neighbouring shards do not share one.
#[repr(align(128))]
#[derive(Default)]
struct Padded(Mutex<Shard>);

pub(crate) struct ShadowMap {
    shards: Box<[Padded]>,
}

/// What `ShadowMap::usage` counts.
pub(crate) struct ShadowUsage {
    pub(crate) granules: usize,
    pub(crate) bytes: usize,
}

impl ShadowMap {
    pub(crate) fn new() -> ShadowMap {
        ShadowMap { shards: (0..SHARDS).map(|_| Padded::default()).collect() }
    }

    fn shard(&self, page: u64) -> MutexGuard<'_, Shard> {
        // A panic while a shard was locked (a bug) must not turn every later access into one.
        self.shards[page as usize % SHARDS].0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `f` on the granule at `granule_addr` (a multiple of [`GRANULE`]), creating it if untouched.
    pub(crate) fn with_granule<R>(&self, granule_addr: u64, f: impl FnOnce(&mut Granule) -> R) -> R {
        let page = granule_addr / PAGE_BYTES;
        let index = ((granule_addr % PAGE_BYTES) / GRANULE) as usize;
        let mut shard = self.shard(page);
        let shard = &mut *shard;
        let page = shard.pages.entry(page).or_insert_with(Page::new);
        let before = page.granules.len();
        let result = f(page.get_or_insert(index));
        shard.granules += page.granules.len() - before;
        result
    }

    /// Forgets every byte in `[addr, addr + len)`: whole pages are dropped in one step, partial ones
    /// granule by granule (a granule only partly in the range loses the cells that touch the range).
    /// Cost: one hash probe per page of the range, or, for a range of more than [`SCAN_PAGES`] pages, one
    /// pass over every shard's pages instead (so even `len = u64::MAX` is cheap), plus one step per
    /// touched granule in the range.
    pub(crate) fn forget(&self, addr: u64, len: u64) {
        let end = addr.saturating_add(len);
        let first_page = addr / PAGE_BYTES;
        let last_page = end.div_ceil(PAGE_BYTES);
        if last_page - first_page > SCAN_PAGES {
            return self.forget_by_scan(addr, end);
        }
        for page_no in first_page..last_page {
            let mut shard = self.shard(page_no);
            shard.forget_in_page(page_no, addr, end);
            shard.shrink();
        }
    }

    fn forget_by_scan(&self, lo: u64, hi: u64) {
        for padded in self.shards.iter() {
            let mut shard = padded.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let in_range: Vec<u64> =
                shard.pages.keys().copied().filter(|&p| p >= lo / PAGE_BYTES && p * PAGE_BYTES < hi).collect();
            for page_no in in_range {
                shard.forget_in_page(page_no, lo, hi);
            }
            shard.shrink();
        }
    }

    pub(crate) fn usage(&self) -> ShadowUsage {
        let mut usage = ShadowUsage { granules: 0, bytes: 0 };
        for padded in self.shards.iter() {
            let shard = padded.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            usage.granules += shard.granules;
            // A hash map entry is its key and value plus one control byte.
            let entry = size_of::<(u64, Page)>() + 1;
            usage.bytes += shard.pages.capacity() * entry + shard.pages.values().map(Page::heap_bytes).sum::<usize>();
        }
        usage
    }
}

/// The bits of the granule at `granule` (8-aligned) whose bytes lie in `[lo, hi)`.
pub(crate) fn byte_mask(granule: u64, lo: u64, hi: u64) -> u8 {
    let first = lo.max(granule) - granule;
    let last = hi.min(granule.saturating_add(GRANULE)) - granule;
    if first >= last {
        return 0;
    }
    let ones = (1u16 << (last - first)) - 1;
    (ones << first) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(map: &ShadowMap, addr: u64) {
        map.with_granule(addr, |g| g.forget(0));
    }

    #[test]
    fn byte_masks() {
        assert_eq!(byte_mask(0, 0, 8), 0xFF);
        assert_eq!(byte_mask(0, 2, 6), 0x3C);
        assert_eq!(byte_mask(8, 6, 10), 0x03);
        assert_eq!(byte_mask(0, 6, 10), 0xC0);
        assert_eq!(byte_mask(0, 8, 16), 0);
    }

    #[test]
    fn granules_are_counted_and_forgotten_by_range() {
        let map = ShadowMap::new();
        for a in (0..4 * PAGE_BYTES).step_by(GRANULE as usize) {
            touch(&map, a);
        }
        assert_eq!(map.usage().granules, 4 * PAGE_GRANULES);
        map.forget(PAGE_BYTES, PAGE_BYTES * 2); // two whole pages
        assert_eq!(map.usage().granules, 2 * PAGE_GRANULES);
        map.forget(8, 16); // two granules of page 0
        assert_eq!(map.usage().granules, 2 * PAGE_GRANULES - 2);
        map.forget(0, u64::MAX);
        let usage = map.usage();
        assert_eq!(usage.granules, 0);
        assert!(usage.bytes < 64 * 1024, "empty shards keep only their tables: {}", usage.bytes);
    }

    #[test]
    fn removal_keeps_slot_index_consistent() {
        let map = ShadowMap::new();
        for a in [0, 8, 16, 24] {
            touch(&map, a);
        }
        map.forget(8, 8);
        // The granule moved into the hole must still be found, not re-created.
        for a in [0, 16, 24] {
            map.with_granule(a, |_| ());
        }
        assert_eq!(map.usage().granules, 3);
    }
}
