//! Spans: runs of pages that hold the objects of one size class (or one large object), with their
//! allocation and mark bitmaps.
//!
//! **Finding a free slot** (Go's `allocBits` + `freeindex` + `allocCache`). `alloc_bits` has one bit per slot,
//! set for slots that were live after the last sweep; the bits never change between sweeps. `freeindex`
//! moves monotonically through the span: every slot below it is allocated (it was either live at the sweep
//! or has been handed out since), so a slot is allocated iff `index < freeindex || alloc_bits[index]`.
//! `alloc_cache` holds the *inverted* alloc bits of the current 64-slot word shifted so that bit 0 is slot
//! `freeindex`: the fast path takes `trailing_zeros` of it, advances both, and never touches the bitmap; when
//! the cache runs dry, [`SpanState::next_free`] reloads it from the next word with a free slot. Bits past
//! `nelems` are kept set ("allocated"), so the scan needs no end check. No free list is written into
//! object memory, so freed slots can stay untouched (and inaccessible to Memcheck) until reused.
//!
//! **Marking** sets bits in `mark_bits`. **Sweeping** (see `collect.rs`) reports every slot that is allocated
//! but unmarked, then makes the mark bits the new alloc bits, clears the mark bits and rewinds `freeindex`.
//!
//! **Quarantine** (heaps annotated for Memcheck only): a slot the sweep frees is kept out of circulation
//! until the *next* sweep, so a stale reference read in between hits memory Memcheck knows was freed
//! instead of a new object that happens to reuse the slot. The sweep sets its bit in `quarantine` and keeps
//! it set in the alloc bits (so the allocator skips it); the next sweep clears both without reporting the
//! slot again. A quarantined slot holds no object: heap walks and the verifier skip it.
//!
//! **Ownership** ([`Owner`]) says who may allocate from the span: exactly one thread cache (`InCache`), or
//! nobody because it sits in its class's central list (`Central`), is full (`Full`), waits in its class's
//! unswept list (`Unswept`) or has been given back (`Freed`). Mutable state is in an `UnsafeCell`; it is
//! touched only by the owning cache's thread, by whoever holds (or popped the span from) the central or
//! unswept list's lock, or by the collector while the world is stopped.

use std::cell::UnsafeCell;
use std::ptr::NonNull;

use crate::observer::SpanInfo;
use crate::size_class::SIZE_CLASSES;

/// Who may allocate from a span.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Owner {
    /// Held by one thread cache: only that thread allocates from it.
    InCache,
    /// In its class's central list (has free slots).
    Central,
    /// Full (or a large-object span): only the registry refers to it until a sweep frees slots.
    Full,
    /// Marked by the last collection but not swept yet: in its class's unswept list (`sweep.rs`), where
    /// an allocating thread that needs a span of its class, or the next collection, sweeps it.
    Unswept,
    /// Swept empty by a mutator, its pages given back to the page heap: a tombstone the registry still
    /// lists (nothing else refers to it), destroyed by the next collection's sweep.
    Freed,
}

pub(crate) struct SpanState {
    pub freeindex: u32,
    /// Inverted alloc bits of slots `freeindex ..` up to the end of their 64-slot word.
    pub alloc_cache: u64,
    /// Allocated slots (live at the last sweep + handed out since).
    pub alloc_count: u32,
    /// `alloc_count` when the allocation counters were last brought up to date (see `Shared::flush_counts`).
    pub count_flushed: u32,
    /// Whether a slot handed out from this span may hold stale bytes (and must be zeroed).
    pub needzero: bool,
    pub owner: Owner,
    pub alloc_bits: Box<[u64]>,
    pub mark_bits: Box<[u64]>,
    /// Slots freed by the last sweep and held back from reuse; empty when the heap does not quarantine.
    pub quarantine: Box<[u64]>,
}

pub(crate) struct Span {
    /// Address of the first page (and of slot 0).
    pub base: usize,
    pub npages: usize,
    /// Size class; 0 for a large-object span.
    pub class: u8,
    /// Slot size (for a large span, the object size rounded to 8).
    pub elem_size: usize,
    pub nelems: u32,
    div_magic: u32,
    state: UnsafeCell<SpanState>,
}

/// Offset of a span's mutable state, for generated allocation code (`inline_alloc.rs`).
pub(crate) const STATE_OFFSET: usize = std::mem::offset_of!(Span, state);

/// Bits past `nelems` in the last bitmap word (kept set in `alloc_bits`).
fn padding(nelems: u32) -> (usize, u64) {
    let last = (nelems as usize - 1) / 64;
    let used = nelems as usize - last * 64;
    (last, if used == 64 { 0 } else { !0u64 << used })
}

impl Span {
    /// A fresh span of size class `class` (1..NUM_CLASSES) at `base`; every slot free.
    pub fn new_small(base: usize, class: usize, needzero: bool, quarantine: bool) -> Box<Span> {
        let sc = SIZE_CLASSES[class];
        Self::new(
            base,
            sc.npages as usize,
            class as u8,
            sc.size as usize,
            sc.nelems,
            sc.div_magic,
            needzero,
            quarantine,
        )
    }

    /// A span holding one object of `size` bytes; the slot is already marked allocated.
    pub fn new_large(base: usize, npages: usize, size: usize, needzero: bool, quarantine: bool) -> Box<Span> {
        let span = Self::new(base, npages, 0, size, 1, 0, needzero, quarantine);
        // SAFETY: the span was just created; nobody else can see it.
        let st = unsafe { span.state() };
        st.freeindex = 1;
        st.alloc_cache = 0;
        st.alloc_count = 1;
        st.count_flushed = 1;
        st.owner = Owner::Full;
        span
    }

    #[allow(clippy::too_many_arguments)] // private: the two public constructors fill in the shape
    fn new(
        base: usize,
        npages: usize,
        class: u8,
        elem_size: usize,
        nelems: u32,
        div_magic: u32,
        needzero: bool,
        quarantine: bool,
    ) -> Box<Span> {
        let words = (nelems as usize).div_ceil(64);
        let mut alloc_bits = vec![0u64; words].into_boxed_slice();
        let (last, pad) = padding(nelems);
        alloc_bits[last] |= pad;
        let alloc_cache = !alloc_bits[0];
        Box::new(Span {
            base,
            npages,
            class,
            elem_size,
            nelems,
            div_magic,
            state: UnsafeCell::new(SpanState {
                freeindex: 0,
                alloc_cache,
                alloc_count: 0,
                count_flushed: 0,
                needzero,
                owner: Owner::Central,
                alloc_bits,
                mark_bits: vec![0u64; words].into_boxed_slice(),
                quarantine: vec![0u64; if quarantine { words } else { 0 }].into_boxed_slice(),
            }),
        })
    }

    /// The mutable state.
    ///
    /// # Safety
    /// The caller must have exclusive access by the ownership protocol (module comment): it is the owning
    /// cache's thread, holds the central lock the span is listed under, holds the page-heap lock for a span
    /// no cache or central list holds, or is the collector with the world stopped. No other reference to the
    /// state may be live.
    #[allow(clippy::mut_from_ref)]
    #[inline(always)]
    pub unsafe fn state(&self) -> &mut SpanState {
        // SAFETY: exclusivity is the caller's obligation (see above).
        unsafe { &mut *self.state.get() }
    }

    /// Index of the slot starting at `addr` (which must lie in this span).
    #[inline(always)]
    pub fn index_of(&self, addr: usize) -> usize {
        if self.class == 0 { 0 } else { (((addr - self.base) as u64 * self.div_magic as u64) >> 32) as usize }
    }

    #[inline(always)]
    pub fn slot_addr(&self, index: usize) -> usize {
        self.base + index * self.elem_size
    }

    pub fn info(&self) -> SpanInfo {
        SpanInfo {
            base: self.base,
            npages: self.npages,
            size_class: self.class,
            elem_size: self.elem_size,
            nelems: self.nelems as usize,
        }
    }
}

impl SpanState {
    /// The next free slot at or after `freeindex`, reloading `alloc_cache`; `None` if the span is full.
    pub fn next_free(&mut self, nelems: u32) -> Option<u32> {
        let mut i = self.freeindex;
        while i < nelems {
            let (w, b) = ((i / 64) as usize, i % 64);
            let free = !self.alloc_bits[w] >> b;
            if free != 0 {
                let tz = free.trailing_zeros();
                let index = i + tz;
                debug_assert!(index < nelems);
                self.freeindex = index + 1;
                self.alloc_cache = (free >> tz) >> 1;
                return Some(index);
            }
            i = (w as u32 + 1) * 64;
        }
        self.freeindex = nelems;
        self.alloc_cache = 0;
        None
    }

    /// Whether slot `index` is allocated.
    pub fn is_allocated(&self, index: usize) -> bool {
        index < self.freeindex as usize || self.alloc_bits[index / 64] >> (index % 64) & 1 != 0
    }

    /// Whether slot `index` was freed by the last sweep and is held back from reuse (see the module comment).
    pub fn is_quarantined(&self, index: usize) -> bool {
        self.quarantine.get(index / 64).is_some_and(|w| w >> (index % 64) & 1 != 0)
    }

    pub fn is_marked(&self, index: usize) -> bool {
        self.mark_bits[index / 64] >> (index % 64) & 1 != 0
    }

    /// Allocated slots of bitmap word `w` as a mask (padding bits excluded).
    pub fn allocated_word(&self, w: usize, nelems: u32) -> u64 {
        let below_free = {
            let start = w as u64 * 64;
            let fi = self.freeindex as u64;
            if fi <= start {
                0
            } else if fi >= start + 64 {
                !0
            } else {
                (1u64 << (fi - start)) - 1
            }
        };
        let (last, pad) = padding(nelems);
        let valid = if w == last { !pad } else { !0 };
        (self.alloc_bits[w] | below_free) & valid
    }

    /// After marking: the marked slots become the allocated ones, mark bits are cleared and allocation
    /// restarts at slot 0. Returns the number of live slots.
    pub fn reset_after_sweep(&mut self, nelems: u32) -> u32 {
        std::mem::swap(&mut self.alloc_bits, &mut self.mark_bits);
        self.mark_bits.fill(0);
        let live: u32 = self.alloc_bits.iter().map(|w| w.count_ones()).sum();
        let (last, pad) = padding(nelems);
        self.alloc_bits[last] |= pad;
        self.freeindex = 0;
        self.alloc_cache = !self.alloc_bits[0];
        self.alloc_count = live;
        self.count_flushed = live;
        live
    }
}

/// A span pointer that may cross threads. The pointee's mutable state is guarded by the ownership protocol
/// in the module comment, not by the type system.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SpanPtr(NonNull<Span>);

// SAFETY: a `Span`'s immutable fields are plain data and its mutable state is only touched under the
// ownership protocol (one owner at a time, handed over under locks or with the world stopped).
unsafe impl Send for SpanPtr {}
// SAFETY: as above; shared access through `&SpanPtr` only reads the pointer.
unsafe impl Sync for SpanPtr {}

impl SpanPtr {
    pub fn new(span: Box<Span>) -> SpanPtr {
        SpanPtr(NonNull::from(Box::leak(span)))
    }

    pub fn from_non_null(p: NonNull<Span>) -> SpanPtr {
        SpanPtr(p)
    }

    pub fn as_ptr(self) -> *mut Span {
        self.0.as_ptr()
    }

    /// # Safety
    /// The span must not have been destroyed (it is in the page heap's registry, or is a cache's sentinel).
    #[inline(always)]
    pub unsafe fn get<'a>(self) -> &'a Span {
        // SAFETY: the caller guarantees the span is alive; spans are never moved.
        unsafe { self.0.as_ref() }
    }

    /// Frees the span's memory.
    ///
    /// # Safety
    /// The span was created by [`SpanPtr::new`], is destroyed once, and no reference to it remains.
    pub unsafe fn destroy(self) {
        // SAFETY: guaranteed by the caller.
        drop(unsafe { Box::from_raw(self.0.as_ptr()) });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitmap_allocation_walks_every_slot_once() {
        // Class 1 (8-byte slots): 1024 slots, a multiple of 64; class 3 (24 bytes): 341 slots, padded.
        for class in [1usize, 3, 40] {
            let span = Span::new_small(0x10000, class, false, false);
            // SAFETY: test-local span.
            let st = unsafe { span.state() };
            let mut seen = Vec::new();
            while let Some(i) = st.next_free(span.nelems) {
                seen.push(i);
                // Drain the cache like the fast path does.
                while st.alloc_cache != 0 {
                    let tz = st.alloc_cache.trailing_zeros();
                    seen.push(st.freeindex + tz);
                    st.freeindex += tz + 1;
                    st.alloc_cache = (st.alloc_cache >> tz) >> 1;
                }
            }
            assert_eq!(seen, (0..span.nelems).collect::<Vec<_>>(), "class {class}");
            // Mark every third slot, sweep: exactly those stay allocated and the rest come back.
            for i in (0..span.nelems as usize).step_by(3) {
                st.mark_bits[i / 64] |= 1 << (i % 64);
            }
            let live = st.reset_after_sweep(span.nelems);
            assert_eq!(live as usize, (span.nelems as usize).div_ceil(3));
            let mut again = Vec::new();
            while let Some(i) = st.next_free(span.nelems) {
                again.push(i);
            }
            assert!(again.iter().all(|i| i % 3 != 0));
            assert_eq!(again.len() + live as usize, span.nelems as usize);
        }
    }
}
