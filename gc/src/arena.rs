//! Arenas and the page heap: where spans get their pages, and how an address finds its span.
//!
//! **Arena.** An anonymous `memmap2` mapping of [`ARENA_SIZE`] bytes (64 MiB; larger multiples for a huge
//! object), aligned to `ARENA_SIZE` by over-mapping and using the aligned window. Mapping is lazy (the kernel
//! backs a page when it is first touched), so an arena costs address space, not memory, until used. Arenas
//! are never unmapped while the heap lives: their free pages are returned to the OS with
//! `madvise(MADV_DONTNEED)` instead ("scavenged"), which keeps every address→arena lookup valid without
//! synchronisation.
//!
//! **Address → span.** A process-wide [`ChunkTable`] maps every 64 MiB-aligned chunk of the 47-bit user
//! address space (2^21 chunks) to its [`ArenaMeta`]; it is itself a lazily-backed anonymous mapping
//! (16 MiB reserved, a page resident per 512 chunks in use). Each arena keeps one span pointer per page.
//! Both levels are atomics written under the page-heap lock, so the marker (and debug checks in `ObjRef`)
//! read them without a lock: address → chunk entry → arena → page's span, four loads.
//!
//! **Page heap.** Per arena, a free bitmap (1 = page free) and a scavenged bitmap (1 = page not resident /
//! known zero: fresh or `MADV_DONTNEED`-ed). A span of `n` pages is the first run of `n` free pages, lowest
//! arena first (first fit keeps the heap dense, which lets high addresses drain and be scavenged); a per-arena
//! hint skips the fully used prefix. A span whose pages were all scavenged needs no zeroing (the kernel hands
//! out zero pages); otherwise the allocator zeroes each object as it is handed out.
//!
//! **Registry.** Every in-use span is listed in `PageHeap::spans`, which the sweeper walks. Spans are owned
//! (as raw boxes) by the page heap: created in [`PageHeap::alloc_span`], destroyed in [`PageHeap::free_span`].

use std::ptr::NonNull;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

use memmap2::{MmapMut, MmapOptions, UncheckedAdvice};

use crate::observer::ArenaInfo;
use crate::size_class::PAGE_SIZE;
use crate::span::{Span, SpanPtr};

/// Bytes per arena (and the granularity of the chunk table).
pub const ARENA_SIZE: usize = 64 << 20;
const ARENA_SHIFT: u32 = ARENA_SIZE.trailing_zeros();
const PAGE_SHIFT: u32 = PAGE_SIZE.trailing_zeros();
/// Number of chunks in a 47-bit address space.
const NUM_CHUNKS: usize = 1 << (47 - ARENA_SHIFT);

/// The immutable (or atomically updated) part of an arena, reachable from the chunk table without a lock.
pub(crate) struct ArenaMeta {
    base: usize,
    /// Span of each page (null if the page is free).
    spans: Box<[AtomicPtr<Span>]>,
}

/// Process-wide map from 64 MiB chunk to arena, shared by all heaps (their arenas never overlap).
pub(crate) struct ChunkTable {
    /// Keeps the table mapped (for the rest of the process).
    _map: MmapMut,
    /// Address of the first entry (cached: `MmapMut`'s slice deref is slow in debug builds).
    entries: usize,
}

impl ChunkTable {
    fn get() -> Option<&'static ChunkTable> {
        static TABLE: OnceLock<Option<ChunkTable>> = OnceLock::new();
        TABLE
            .get_or_init(|| {
                let map = MmapOptions::new().len(NUM_CHUNKS * size_of::<AtomicUsize>()).no_reserve_swap().map_anon();
                map.ok().map(|map| ChunkTable { entries: map.as_ptr() as usize, _map: map })
            })
            .as_ref()
    }

    fn slot(&self, chunk: usize) -> Option<&AtomicUsize> {
        if chunk >= NUM_CHUNKS {
            return None;
        }
        // SAFETY: the mapping holds NUM_CHUNKS zero-initialised, 8-byte-aligned words (mmap is page aligned)
        // and lives for the rest of the process; AtomicUsize has the layout of usize, and every access to
        // the words goes through atomics.
        Some(unsafe { &*(self.entries as *const AtomicUsize).add(chunk) })
    }
}

/// The span containing `addr`, or `None` if `addr` is not inside an in-use span of any heap.
#[inline]
pub(crate) fn span_of(addr: usize) -> Option<NonNull<Span>> {
    ChunkTable::get()?.span_of(addr)
}

impl ChunkTable {
    /// The process-wide table, if it could be mapped (once mapped it lives until the process exits).
    pub fn global() -> Option<&'static ChunkTable> {
        Self::get()
    }

    /// See [`span_of`].
    #[inline]
    pub fn span_of(&self, addr: usize) -> Option<NonNull<Span>> {
        let arena = self.slot(addr >> ARENA_SHIFT)?.load(Ordering::Acquire) as *const ArenaMeta;
        if arena.is_null() {
            return None;
        }
        // SAFETY: a non-null chunk entry points at the `ArenaMeta` of a live arena: entries are cleared
        // before their arena is dropped (`PageHeap::drop`).
        let arena = unsafe { &*arena };
        let page = (addr - arena.base) >> PAGE_SHIFT;
        NonNull::new(arena.spans.get(page)?.load(Ordering::Acquire))
    }
}

/// Why the page heap could not provide pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PageAllocError {
    /// The configured maximum heap size would be exceeded.
    LimitReached,
    /// The OS refused to map more memory (or mapped it where the chunk table cannot describe it).
    MapFailed,
}

struct Arena {
    meta: Box<ArenaMeta>,
    /// Keeps the mapping alive; `meta.base` lies inside it.
    map: MmapMut,
    npages: usize,
    free: Vec<u64>,
    scavenged: Vec<u64>,
    free_pages: usize,
    /// Every page below this index is in use.
    first_free: usize,
}

/// Pages and spans. Always used under the heap's page-heap mutex.
pub(crate) struct PageHeap {
    arenas: Vec<Arena>,
    /// Every in-use span (owned: created by `Box::into_raw`).
    pub spans: Vec<SpanPtr>,
    pub pages_in_use: usize,
    pub peak_pages_in_use: usize,
    /// Free pages that may be resident (free and not scavenged).
    pub free_resident_pages: usize,
    pub mapped_bytes: usize,
    limit_pages: Option<usize>,
}

fn bit(words: &[u64], i: usize) -> bool {
    words[i / 64] >> (i % 64) & 1 != 0
}

fn set_bits(words: &mut [u64], start: usize, n: usize, value: bool) {
    for i in start..start + n {
        if value {
            words[i / 64] |= 1 << (i % 64);
        } else {
            words[i / 64] &= !(1 << (i % 64));
        }
    }
}

/// First index ≥ `from` that starts `n` consecutive set bits in `words` (bits past the end are clear).
fn find_run(words: &[u64], from: usize, n: usize) -> Option<usize> {
    let end = words.len() * 64;
    let (mut i, mut run_start, mut run_len) = (from, from, 0);
    while i < end {
        let (w, b) = (i / 64, i % 64);
        if b == 0 && words[w] == u64::MAX {
            if run_len == 0 {
                run_start = i;
            }
            run_len += 64;
            i += 64;
        } else {
            let rest = words[w] >> b;
            let ones = (rest.trailing_ones() as usize).min(64 - b);
            if ones == 0 {
                let zeros = (rest.trailing_zeros() as usize).min(64 - b);
                run_len = 0;
                i += zeros;
                continue;
            }
            if run_len == 0 {
                run_start = i;
            }
            run_len += ones;
            i += ones;
        }
        if run_len >= n {
            return Some(run_start);
        }
    }
    None
}

impl PageHeap {
    pub fn new(limit_bytes: Option<usize>) -> PageHeap {
        PageHeap {
            arenas: Vec::new(),
            spans: Vec::new(),
            pages_in_use: 0,
            peak_pages_in_use: 0,
            free_resident_pages: 0,
            mapped_bytes: 0,
            limit_pages: limit_bytes.map(|b| b / PAGE_SIZE),
        }
    }

    /// Takes `npages` pages, mapping a new arena if needed (reported through `new_arena`). Returns the base
    /// address and whether the pages may hold stale data (need zeroing).
    fn alloc_pages(
        &mut self,
        npages: usize,
        new_arena: &mut Option<ArenaInfo>,
    ) -> Result<(usize, bool), PageAllocError> {
        if let Some(limit) = self.limit_pages
            && self.pages_in_use + npages > limit
        {
            return Err(PageAllocError::LimitReached);
        }
        let found = self.arenas.iter().enumerate().find_map(|(ai, a)| {
            if a.free_pages < npages {
                return None;
            }
            find_run(&a.free, a.first_free, npages).map(|p| (ai, p))
        });
        let (ai, page) = match found {
            Some(f) => f,
            None => {
                let info = self.map_arena(npages)?;
                *new_arena = Some(info);
                (self.arenas.len() - 1, 0)
            }
        };
        let arena = &mut self.arenas[ai];
        let mut dirty = 0;
        for p in page..page + npages {
            if !bit(&arena.scavenged, p) {
                dirty += 1;
            }
        }
        set_bits(&mut arena.free, page, npages, false);
        set_bits(&mut arena.scavenged, page, npages, false);
        arena.free_pages -= npages;
        if page == arena.first_free {
            arena.first_free = page + npages;
        }
        self.free_resident_pages -= dirty;
        self.pages_in_use += npages;
        self.peak_pages_in_use = self.peak_pages_in_use.max(self.pages_in_use);
        Ok((arena.meta.base + page * PAGE_SIZE, dirty != 0))
    }

    fn map_arena(&mut self, min_pages: usize) -> Result<ArenaInfo, PageAllocError> {
        let size = (min_pages * PAGE_SIZE).next_multiple_of(ARENA_SIZE);
        let table = ChunkTable::get().ok_or(PageAllocError::MapFailed)?;
        // Over-map by one arena so an ARENA_SIZE-aligned window of `size` bytes fits inside.
        let map = MmapOptions::new()
            .len(size + ARENA_SIZE)
            .no_reserve_swap()
            .map_anon()
            .map_err(|_| PageAllocError::MapFailed)?;
        let base = (map.as_ptr() as usize).next_multiple_of(ARENA_SIZE);
        let first_chunk = base >> ARENA_SHIFT;
        let nchunks = size >> ARENA_SHIFT;
        if first_chunk + nchunks > NUM_CHUNKS {
            return Err(PageAllocError::MapFailed);
        }
        let npages = size / PAGE_SIZE;
        let meta =
            Box::new(ArenaMeta { base, spans: (0..npages).map(|_| AtomicPtr::new(std::ptr::null_mut())).collect() });
        for chunk in first_chunk..first_chunk + nchunks {
            let slot = table.slot(chunk).ok_or(PageAllocError::MapFailed)?;
            slot.store(&*meta as *const ArenaMeta as usize, Ordering::Release);
        }
        let words = npages.div_ceil(64);
        let mut free = vec![0u64; words];
        set_bits(&mut free, 0, npages, true);
        self.arenas.push(Arena { meta, map, npages, scavenged: free.clone(), free, free_pages: npages, first_free: 0 });
        self.mapped_bytes += size;
        Ok(ArenaInfo { base, size })
    }

    /// Every mapped arena.
    pub fn arenas(&self) -> impl Iterator<Item = ArenaInfo> + '_ {
        self.arenas.iter().map(|a| ArenaInfo { base: a.meta.base, size: a.npages * PAGE_SIZE })
    }

    /// Creates a span of `npages` pages with `make(base, needzero)`, records it for every page and in the
    /// registry.
    pub fn alloc_span(
        &mut self,
        npages: usize,
        new_arena: &mut Option<ArenaInfo>,
        make: impl FnOnce(usize, bool) -> Box<Span>,
    ) -> Result<SpanPtr, PageAllocError> {
        let (base, needzero) = self.alloc_pages(npages, new_arena)?;
        let span = SpanPtr::new(make(base, needzero));
        self.set_span_pages(base, npages, span.as_ptr());
        self.spans.push(span);
        Ok(span)
    }

    fn set_span_pages(&self, base: usize, npages: usize, span: *mut Span) {
        let arena = self.arena_of(base);
        let first = (base - arena.meta.base) / PAGE_SIZE;
        for entry in &arena.meta.spans[first..first + npages] {
            entry.store(span, Ordering::Release);
        }
    }

    fn arena_index(&self, addr: usize) -> usize {
        self.arenas
            .iter()
            .position(|a| addr >= a.meta.base && addr < a.meta.base + a.npages * PAGE_SIZE)
            .expect("gc: page address outside every arena")
    }

    fn arena_of(&self, addr: usize) -> &Arena {
        &self.arenas[self.arena_index(addr)]
    }

    /// Returns a span's pages to the free bitmaps and destroys the span. The caller has removed it from
    /// `spans` and from every central list and cache.
    pub fn free_span(&mut self, span: SpanPtr) {
        self.release_span_pages(span);
        // SAFETY: created by `Box::into_raw` in `alloc_span`; no reference to it remains.
        unsafe { span.destroy() };
    }

    /// Gives a span's pages back (they may be carved again at once) but keeps the `Span` itself, which
    /// the registry still lists: the caller makes it a tombstone (`Owner::Freed`) that the next sweep
    /// destroys. For mutators sweeping lazily, which cannot take the span out of the registry cheaply.
    pub fn release_span_pages(&mut self, span: SpanPtr) {
        // SAFETY: the span is in use; the caller owns it and nothing else allocates from it.
        let s = unsafe { span.get() };
        let (base, npages) = (s.base, s.npages);
        self.set_span_pages(base, npages, std::ptr::null_mut());
        let ai = self.arena_index(base);
        let arena = &mut self.arenas[ai];
        let first = (base - arena.meta.base) / PAGE_SIZE;
        set_bits(&mut arena.free, first, npages, true);
        arena.free_pages += npages;
        arena.first_free = arena.first_free.min(first);
        self.pages_in_use -= npages;
        self.free_resident_pages += npages;
    }

    /// Returns free resident pages to the OS (`MADV_DONTNEED`), highest addresses first, until at most
    /// `retain_pages` pages are in use or free-but-resident. Returns the number of pages released.
    pub fn scavenge(&mut self, retain_pages: usize) -> usize {
        let mut released = 0;
        for arena in self.arenas.iter_mut().rev() {
            let mut page = arena.npages;
            while page > 0 && self.pages_in_use + self.free_resident_pages > retain_pages {
                // Find the highest candidate page below `page`, then extend the run downwards.
                page -= 1;
                let w = page / 64;
                let candidates = arena.free[w] & !arena.scavenged[w];
                if candidates == 0 {
                    page = w * 64;
                    continue;
                }
                if !bit(&arena.free, page) || bit(&arena.scavenged, page) {
                    continue;
                }
                let over = self.pages_in_use + self.free_resident_pages - retain_pages;
                let end = page + 1;
                let mut start = page;
                while start > 0
                    && end - start < over
                    && bit(&arena.free, start - 1)
                    && !bit(&arena.scavenged, start - 1)
                {
                    start -= 1;
                }
                let offset = arena.meta.base - arena.map.as_ptr() as usize + start * PAGE_SIZE;
                // SAFETY: the range covers only free pages of this arena: no object, span or reference lives
                // there, so discarding their contents (they read back as zero) is unobservable.
                let ok = unsafe {
                    arena.map.unchecked_advise_range(UncheckedAdvice::DontNeed, offset, (end - start) * PAGE_SIZE)
                };
                if ok.is_ok() {
                    set_bits(&mut arena.scavenged, start, end - start, true);
                    self.free_resident_pages -= end - start;
                    released += end - start;
                }
                page = start;
            }
        }
        released
    }
}

impl Drop for PageHeap {
    fn drop(&mut self) {
        for span in self.spans.drain(..) {
            // SAFETY: the heap is being dropped (no caches or references remain); each span is destroyed once.
            unsafe { span.destroy() };
        }
        if let Some(table) = ChunkTable::get() {
            for arena in &self.arenas {
                let first = arena.meta.base >> ARENA_SHIFT;
                for chunk in first..first + arena.npages * PAGE_SIZE / ARENA_SIZE {
                    if let Some(slot) = table.slot(chunk) {
                        slot.store(0, Ordering::Release);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_run_cases() {
        let mut w = vec![0u64; 4];
        assert_eq!(find_run(&w, 0, 1), None);
        set_bits(&mut w, 3, 2, true);
        assert_eq!(find_run(&w, 0, 1), Some(3));
        assert_eq!(find_run(&w, 0, 2), Some(3));
        assert_eq!(find_run(&w, 0, 3), None);
        set_bits(&mut w, 60, 140, true);
        assert_eq!(find_run(&w, 0, 3), Some(60));
        assert_eq!(find_run(&w, 0, 140), Some(60));
        assert_eq!(find_run(&w, 0, 141), None);
        assert_eq!(find_run(&w, 61, 100), Some(61));
        assert_eq!(find_run(&w, 5, 1), Some(60));
        assert_eq!(ARENA_SIZE / PAGE_SIZE, 8192);
    }
}
