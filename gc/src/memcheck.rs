//! The heap as Memcheck sees it: a [`HeapObserver`] that turns heap events into Valgrind client requests.
//!
//! Memcheck knows `malloc`; it does not know our arenas, spans and slots. Without help it sees one big
//! anonymous mapping that is always addressable and defined, so a read of a swept object, of a slot never
//! handed out, or past an object's end goes unreported. This observer describes the heap with Memcheck's
//! memory-pool model (`shared/notes/valgrind.md` §3), in the spirit of the Go runtime's 2025 instrumentation
//! but without its blind spots (Go never makes spans no-access, marks every object defined and has no
//! quarantine, and asks users to turn the collector and leak checking off):
//!
//! | heap event | requests |
//! |---|---|
//! | arena mapped | `CREATE_MEMPOOL(arena, metapool + auto-free)`, then the whole arena no-access |
//! | span carved | `MEMPOOL_ALLOC(arena, span)` (a superblock), then the span no-access |
//! | object allocated | `MALLOCLIKE_BLOCK(obj, exact object bytes, undefined)`, before the heap writes it |
//! | object found dead by the sweep | `FREELIKE_BLOCK(obj)`: no-access, and later reads say "free'd" |
//! | span returned to the page heap | kept as a superblock until a span of another shape overlaps it (below) |
//! | heap dropped | `MEMPOOL_FREE` of every span, `DESTROY_MEMPOOL` of every arena |
//!
//! The block is the object's exact size (header + payload), not its slot, so the slack at the end of a
//! slot is no-access too. Objects are registered undefined and the heap then zeroes them (it always zeroes
//! under Valgrind), so Memcheck's idea of "defined" matches what was really written.
//!
//! **Why span release is lazy.** With auto-free, every `MEMPOOL_FREE` makes Memcheck walk *every* live
//! malloc-like block in the process (quadratic in practice: freeing 6,400 spans with 400 k live blocks took
//! 11 s in the notes' experiment; freeing each span as it was released tripled the Memcheck time of
//! binary-trees). A span the sweep empties has no registered blocks left, and its pages are usually carved
//! again into a span of the same shape soon after. So a released span keeps its superblock: a new span with
//! exactly the same base and size takes it back with no pool request at all, and only the released
//! superblocks a new span of another shape overlaps are freed from the pool, just before it is carved. The
//! heap's drop frees the rest. While released, a span's memory is no-access (its objects were freed one by
//! one), so a write to a released span is still reported.
//!
//! **Stacks** are not here: the VM registers the stacks it allocates itself (`vm/src/stack.rs`), since it
//! knows where their live top is.
//!
//! All requests are made under one mutex; under Valgrind threads are serialised anyway, and natively this
//! observer is never attached ([`MemcheckAnnotator::attach_if_running_on_valgrind`]).

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use valgrind_bridge as vg;

use crate::observer::{ArenaInfo, HeapObserver, ObjectInfo, ObserverCtx, SpanInfo};
use crate::size_class::PAGE_SIZE;

#[derive(Default)]
struct PoolState {
    /// Arena base → size in bytes. The base is the pool's anchor.
    arenas: BTreeMap<usize, usize>,
    /// Spans returned to the page heap whose superblocks are still allocated in their pool: base → bytes.
    released: BTreeMap<usize, usize>,
}

impl PoolState {
    /// The anchor (arena base) of the pool that `addr` lies in.
    fn pool_of(&self, addr: usize) -> *const u8 {
        let found = self.arenas.range(..=addr).next_back().filter(|&(&base, &size)| addr < base + size);
        // The heap reports an arena before any span in it; a miss is a heap bug, and Memcheck will say so
        // ("Illegal memory pool address") rather than us aborting the program.
        std::ptr::without_provenance(found.map_or(0, |(&base, _)| base))
    }

    /// Frees every released superblock from its pool.
    fn release_all(&mut self) {
        for (base, _) in std::mem::take(&mut self.released) {
            vg::mempool_free(self.pool_of(base), std::ptr::without_provenance(base));
        }
    }

    /// Frees the released superblocks that overlap `[base, base + len)` from their pools.
    fn release_overlapping(&mut self, base: usize, len: usize) {
        // Released spans do not overlap each other, so those overlapping the range are the run of entries
        // starting at the last one at or below `base`.
        let first = self.released.range(..=base).next_back().map_or(base, |(&b, _)| b);
        let hits: Vec<usize> =
            self.released.range(first..base + len).filter(|&(&b, &l)| b + l > base).map(|(&b, _)| b).collect();
        for b in hits {
            self.released.remove(&b);
            vg::mempool_free(self.pool_of(b), std::ptr::without_provenance(b));
        }
    }
}

/// The Memcheck annotations of one heap.
pub(crate) struct MemcheckAnnotator {
    state: Mutex<PoolState>,
}

impl MemcheckAnnotator {
    /// An annotator if the process runs under Valgrind (and the bridge is compiled in), else `None`.
    pub fn attach_if_running_on_valgrind() -> Option<MemcheckAnnotator> {
        (vg::running_on_valgrind() > 0).then(|| MemcheckAnnotator { state: Mutex::new(PoolState::default()) })
    }

    fn state(&self) -> MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The heap is going away: free every object still allocated, every span still in use and every
    /// queued one, then destroy the pools, so `--leak-check=full` finds nothing of ours. Objects are freed
    /// one by one first because auto-free would make each span's `MEMPOOL_FREE` walk all of them.
    pub fn teardown(&self, objects: &mut dyn Iterator<Item = usize>, spans: &mut dyn Iterator<Item = SpanInfo>) {
        for addr in objects {
            vg::freelike_block(std::ptr::without_provenance(addr), 0);
        }
        let mut st = self.state();
        st.release_all();
        for span in spans.filter(|s| s.npages * PAGE_SIZE <= u32::MAX as usize) {
            vg::mempool_free(st.pool_of(span.base), std::ptr::without_provenance(span.base));
        }
        for &base in st.arenas.keys() {
            vg::destroy_mempool(std::ptr::without_provenance(base));
        }
        st.arenas.clear();
    }
}

impl HeapObserver for MemcheckAnnotator {
    fn arena_map(&self, _ctx: &ObserverCtx, arena: &ArenaInfo) {
        let base: *const u8 = std::ptr::without_provenance(arena.base);
        vg::create_mempool(base, 0, false, vg::MempoolFlags::METAPOOL_AUTO_FREE);
        vg::make_mem_noaccess(base, arena.size);
        self.state().arenas.insert(arena.base, arena.size);
    }

    fn span_alloc(&self, _ctx: &ObserverCtx, span: &SpanInfo) {
        let len = span.npages * PAGE_SIZE;
        let base: *const u8 = std::ptr::without_provenance(span.base);
        let mut st = self.state();
        if st.released.get(&span.base) == Some(&len) {
            // The same superblock again: it is still allocated in the pool and its memory is no-access.
            st.released.remove(&span.base);
            vg::make_mem_noaccess(base, len);
            return;
        }
        st.release_overlapping(span.base, len);
        // Memcheck keeps chunk sizes in 32 bits; a larger span (a single object of 4 GiB or more) stays
        // unannotated rather than being recorded with a truncated size.
        if len <= u32::MAX as usize {
            vg::mempool_alloc(st.pool_of(span.base), base, len);
            vg::make_mem_noaccess(base, len);
        }
    }

    fn span_free(&self, _ctx: &ObserverCtx, span: &SpanInfo) {
        let len = span.npages * PAGE_SIZE;
        if len > u32::MAX as usize {
            return;
        }
        self.state().released.insert(span.base, len);
    }

    fn object_alloc(&self, _ctx: &ObserverCtx, obj: &ObjectInfo) {
        vg::malloclike_block(std::ptr::without_provenance(obj.addr), obj.bytes, 0, false);
    }

    fn object_free(&self, _ctx: &ObserverCtx, obj: &ObjectInfo) {
        vg::freelike_block(std::ptr::without_provenance(obj.addr), 0);
    }
}
