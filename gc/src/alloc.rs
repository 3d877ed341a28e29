//! The allocation paths behind [`crate::Heap::alloc_struct`] and [`crate::Heap::alloc_array`] (whose fast
//! paths are inline in `heap.rs`): zeroing and writing a new object, refilling a thread cache's span for a
//! size class, large objects, and the instrumented path taken when observers or stress mode are on. The
//! steps are numbered in the crate comment ("Allocating a small object").

use std::ptr::NonNull;
use std::sync::atomic::Ordering;

use crate::arena::PageAllocError;
use crate::cache::ThreadCache;
use crate::config::{AllocError, MAX_OBJECT_BYTES};
use crate::object::{HEADER_SIZE, ObjRef, header_word};
use crate::observer::ObjectInfo;
use crate::shared::{Shared, lock};
use crate::size_class::{PAGE_SIZE, SIZE_CLASSES, class_for_size};
use crate::span::{Owner, Span, SpanPtr};
use crate::types::AllocInfo;

/// Under Memcheck, the bytes left no-access after every object (it takes a larger slot). Memcheck names a
/// bad address by the nearest *live* block within 16 bytes before it looks at freed ones, so without this
/// gap a read of a swept object between two live neighbours would be described as "8 bytes before a block
/// … alloc'd" rather than "inside a block … free'd", and a read past an object's end could land in the next
/// object unseen.
const MEMCHECK_SLACK: usize = 32;

/// Zeroes the slot (if needed) and writes the header.
///
/// # Safety
/// `addr..addr + slot` is a slot just taken from a span for this allocation (not visible to anyone else).
#[inline(always)]
pub(crate) unsafe fn init_object(addr: usize, slot: usize, needzero: bool, type_id: u32, len: u32) -> ObjRef {
    let p = addr as *mut u64;
    // SAFETY: the slot is ours, 8-aligned, and `slot` bytes long (a multiple of 8, at least 8).
    unsafe {
        if needzero {
            if slot <= 128 {
                // Volatile so LLVM does not turn the loop into a `memset` call, which costs more than
                // the few stores a small object needs.
                for i in 1..slot / 8 {
                    p.add(i).write_volatile(0);
                }
            } else {
                std::ptr::write_bytes(p.add(1), 0, slot / 8 - 1);
            }
        }
        p.write(header_word(type_id, len));
        ObjRef::from_addr(addr)
    }
}

#[cold]
#[inline(never)]
fn bad_type(type_id: u32, kind: &str) -> ! {
    panic!("gc: type id {type_id} is not a registered {kind} type")
}

/// Object size of an array, rounded to 8, or `None` if it is absurd.
#[inline(always)]
pub(crate) fn array_bytes(elem_size: usize, len: u32) -> Option<usize> {
    let bytes = (HEADER_SIZE as u64 + len as u64 * elem_size as u64).next_multiple_of(8);
    if bytes > MAX_OBJECT_BYTES as u64 { None } else { Some(bytes as usize) }
}

impl Shared {
    /// Slow path for a small object: the current span's cached word ran out.
    #[inline(never)]
    fn refill(&self, cache: &mut ThreadCache, class: usize, may_collect: bool) -> Result<(usize, bool), AllocError> {
        let current = cache.spans[class];
        if !cache.is_sentinel(current) {
            // SAFETY: the cache owns `current` (Owner::InCache).
            let s = unsafe { current.as_ref() };
            // SAFETY: as above.
            let st = unsafe { s.state() };
            if let Some(i) = st.next_free(s.nelems) {
                st.alloc_count += 1;
                return Ok((s.slot_addr(i as usize), st.needzero));
            }
            cache.spans[class] = cache.sentinel();
            self.release_cached_span(SpanPtr::from_non_null(current));
        }
        let sc = SIZE_CLASSES[class];
        if may_collect && self.pacer_wants_gc(sc.npages as usize * PAGE_SIZE) {
            return Err(AllocError::CollectionNeeded);
        }
        let popped = lock(&self.central[class]).pop();
        let span = match popped.or_else(|| self.sweep_for_class(class, &cache.ctx)) {
            Some(span) => span,
            None => {
                self.reclaim(sc.npages as usize, &cache.ctx);
                let q = self.quarantine;
                let made = self.carve_span(cache, sc.npages as usize, |base, nz| Span::new_small(base, class, nz, q));
                let span = made.map_err(|e| self.page_error(e, may_collect))?;
                self.report_new_span(cache, span);
                span
            }
        };
        // SAFETY: the span was just popped from the central list, swept from the unswept list or created:
        // nobody else holds it.
        let s = unsafe { span.get() };
        // SAFETY: as above.
        let st = unsafe { s.state() };
        st.owner = Owner::InCache;
        self.heap_live.fetch_add((s.nelems - st.alloc_count) as usize * s.elem_size, Ordering::Relaxed);
        cache.spans[class] = NonNull::from(s);
        let i = st.next_free(s.nelems).expect("gc: a span from the central list or page heap has a free slot");
        st.alloc_count += 1;
        Ok((s.slot_addr(i as usize), st.needzero))
    }

    /// A large object (> MAX_SMALL_SIZE) in a span of its own. Returns (address, needzero, slot size).
    #[inline(never)]
    fn alloc_large(
        &self,
        cache: &mut ThreadCache,
        size: usize,
        may_collect: bool,
    ) -> Result<(usize, bool, usize), AllocError> {
        if size > MAX_OBJECT_BYTES || self.config.max_heap_bytes.is_some_and(|max| size > max) {
            return Err(self.oom());
        }
        if may_collect && self.pacer_wants_gc(size) {
            return Err(AllocError::CollectionNeeded);
        }
        let npages = size.div_ceil(PAGE_SIZE);
        self.reclaim(npages, &cache.ctx);
        let q = self.quarantine;
        let made = self.carve_span(cache, npages, |base, nz| Span::new_large(base, npages, size, nz, q));
        let span = made.map_err(|e| self.page_error(e, may_collect))?;
        self.heap_live.fetch_add(size, Ordering::Relaxed);
        self.objects_allocated.fetch_add(1, Ordering::Relaxed);
        self.bytes_allocated.fetch_add(size as u64, Ordering::Relaxed);
        self.report_new_span(cache, span);
        // SAFETY: the span was just created for this object.
        let s = unsafe { span.get() };
        // SAFETY: as above; nobody else refers to it yet.
        let needzero = unsafe { s.state().needzero };
        Ok((s.base, needzero, size))
    }

    /// Carves a span of `npages` pages from the page heap with `make(base, needzero)`. An arena mapped for it
    /// is reported before the page-heap lock is released: another thread may carve the next span from that
    /// arena as soon as the lock is free, and must not report it before the arena.
    fn carve_span(
        &self,
        cache: &mut ThreadCache,
        npages: usize,
        make: impl FnOnce(usize, bool) -> Box<Span>,
    ) -> Result<SpanPtr, PageAllocError> {
        let mut new_arena = None;
        let mut page_heap = lock(&self.page_heap);
        let made = page_heap.alloc_span(npages, &mut new_arena, make);
        if let Some(arena) = new_arena
            && self.hooks.load(Ordering::Relaxed)
        {
            cache.refresh_observers();
            for o in cache.observers.iter() {
                o.arena_map(&cache.ctx, &arena);
            }
        }
        made
    }

    /// Reports a span this thread just carved (before any object in it).
    fn report_new_span(&self, cache: &mut ThreadCache, span: SpanPtr) {
        if !self.hooks.load(Ordering::Relaxed) {
            return;
        }
        cache.refresh_observers();
        // SAFETY: the span was just created and is alive.
        let info = unsafe { span.get() }.info();
        for o in cache.observers.iter() {
            o.span_alloc(&cache.ctx, &info);
        }
    }

    /// Slot for an object of `size` bytes in `class` (0 = large) when the fast path could not serve it.
    /// Returns (address, needzero, slot size).
    fn reserve_slow(
        &self,
        cache: &mut ThreadCache,
        class: usize,
        size: usize,
        may_collect: bool,
    ) -> Result<(usize, bool, usize), AllocError> {
        if class == 0 {
            self.alloc_large(cache, size, may_collect)
        } else {
            let (addr, nz) = self.refill(cache, class, may_collect)?;
            Ok((addr, nz, SIZE_CLASSES[class].size as usize))
        }
    }

    #[inline(never)]
    pub fn alloc_slow(
        &self,
        cache: &mut ThreadCache,
        type_id: u32,
        len: u32,
        size: usize,
        class: usize,
        may_collect: bool,
    ) -> Result<ObjRef, AllocError> {
        let (addr, needzero, slot) = self.reserve_slow(cache, class, size, may_collect)?;
        // SAFETY: the slot was just reserved for this object.
        Ok(unsafe { init_object(addr, slot, needzero, type_id, len) })
    }

    /// The allocation path when observers are attached or stress mode is on: the same steps as the fast
    /// path, plus the stress countdown and the `object_alloc` event (sent before the slot is written).
    #[inline(never)]
    pub fn alloc_instrumented(
        &self,
        cache: &mut ThreadCache,
        type_id: u32,
        array_len: Option<u32>,
        may_collect: bool,
    ) -> Result<ObjRef, AllocError> {
        // Stress mode counts the allocations that may collect (retries after a collection do not count).
        if let Some(every) = self.config.stress_every
            && may_collect
        {
            cache.stress_count += 1;
            if cache.stress_count >= every {
                cache.stress_count = 0;
                return Err(AllocError::CollectionNeeded);
            }
        }
        // The object's own bytes (header + payload).
        let (bytes, len) = match array_len {
            None => {
                self.struct_info(type_id);
                (self.types.object_bytes(type_id, 0), 0)
            }
            Some(len) => {
                let info = self.array_info(type_id);
                (array_bytes(info.size(), len).ok_or_else(|| self.oom())?, len)
            }
        };
        // Under Memcheck every object gets at least MEMCHECK_SLACK no-access bytes after it (see the constant).
        let need = if self.memcheck.is_some() { bytes + MEMCHECK_SLACK } else { bytes };
        let class = class_for_size(need);
        let size = if class == 0 { need } else { SIZE_CLASSES[class].size as usize };
        // (Class 0 is never served by `take_fast`: its cache entry is always the sentinel.)
        let (addr, needzero, slot) = match cache.take_fast(class) {
            Some((addr, nz)) => (addr, nz, SIZE_CLASSES[class].size as usize),
            None => self.reserve_slow(cache, class, size, may_collect)?,
        };
        cache.refresh_observers();
        let info = ObjectInfo { addr, size: slot, bytes, type_id, len };
        for o in cache.observers.iter() {
            o.object_alloc(&cache.ctx, &info);
        }
        // Only the object's bytes are written: under Memcheck the rest of the slot is no-access, and it
        // always zeroes, because the block was registered as undefined.
        let needzero = needzero || self.memcheck.is_some();
        // SAFETY: the slot was just reserved for this object; `bytes <= slot`.
        Ok(unsafe { init_object(addr, bytes, needzero, type_id, len) })
    }

    #[inline(always)]
    pub fn struct_info(&self, type_id: u32) -> AllocInfo {
        match self.types.alloc_info(type_id) {
            Some(info) if info.is_struct() => info,
            _ => bad_type(type_id, "struct"),
        }
    }

    #[inline(always)]
    pub fn array_info(&self, type_id: u32) -> AllocInfo {
        match self.types.alloc_info(type_id) {
            Some(info) if info.is_array() => info,
            _ => bad_type(type_id, "array"),
        }
    }
}
