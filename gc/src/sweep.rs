//! Lazy sweeping (Go's `mgcsweep.go`): when nobody observes the heap's frees, a collection sweeps only
//! the spans thread caches hold and the large objects, and leaves every other span *unswept* in its size
//! class's unswept list. The threads that allocate sweep them, outside the pause and in parallel:
//!
//! - **A cache needs a span** (`Shared::refill` in `alloc.rs`): after the class's central list, it sweeps
//!   spans from the class's unswept list until one has a free slot, and takes that one (an empty span is
//!   reused in place, without going back to the page heap); full ones become `Full`.
//! - **The page heap is about to grow** (a new span or a large object): [`Shared::reclaim`] first sweeps
//!   unswept spans of any class until as many pages were given back (Go's `mheap.reclaim`), so garbage
//!   left unswept never makes the heap grow. Partly free spans go to their central lists. An empty span's
//!   pages go back to the page heap at once; the `Span` stays in the registry as a tombstone
//!   (`Owner::Freed`) that the next collection's sweep destroys.
//! - **The next collection** ([`finish_sweep`], before it marks) sweeps whatever is left, with the mark
//!   bits of the cycle that found those objects dead.
//!
//! Sweeping a span is the eager sweep's `collect::sweep_span` (turn mark bits into alloc bits, count the
//! dead): the span was popped from its unswept list under the list's lock, so the sweeping thread has it
//! to itself, and the mark bits it reads do not change until the next collection, which cannot start
//! while a mutator is inside an allocation (allocation is not a safepoint).
//!
//! **When the sweep stays eager.** Observers (the Memcheck annotations, the tracer, the race detector)
//! must see every `object_free` inside the collection that found it, in order, from the collecting thread;
//! Memcheck's quarantine and the planted collector bugs assume an eager sweep too. The collector decides
//! per cycle (`collect.rs`); an observer attached while spans are unswept misses their frees, which is why
//! observers are attached before mutators start.

use std::sync::atomic::Ordering;

use crate::arena::PageHeap;
use crate::collect::sweep_span;
use crate::observer::ObserverCtx;
use crate::shared::{Shared, lock};
use crate::size_class::NUM_CLASSES;
use crate::span::{Owner, SpanPtr};

impl Shared {
    /// A span of `class` with a free slot, swept by the calling thread from the class's unswept list
    /// (spans found full become `Full`); `None` once the list is empty. The caller takes the span.
    pub(crate) fn sweep_for_class(&self, class: usize, ctx: &ObserverCtx) -> Option<SpanPtr> {
        if self.unswept_count.load(Ordering::Relaxed) == 0 {
            return None;
        }
        loop {
            let span = self.pop_unswept(class)?;
            let (live, nelems) = self.sweep_unswept(span, ctx);
            if live < nelems {
                return Some(span);
            }
            // SAFETY: popped from the unswept list: this thread has the span to itself.
            unsafe { span.get().state() }.owner = Owner::Full;
        }
    }

    /// Before the page heap grows by `npages` pages: sweeps unswept spans of any class until spans of
    /// at least that many pages were given back, or none is left unswept.
    pub(crate) fn reclaim(&self, npages: usize, ctx: &ObserverCtx) {
        let mut freed = 0;
        for class in 1..NUM_CLASSES {
            while freed < npages {
                if self.unswept_count.load(Ordering::Relaxed) == 0 {
                    return;
                }
                let Some(span) = self.pop_unswept(class) else { break };
                let (live, nelems) = self.sweep_unswept(span, ctx);
                // SAFETY: popped from the unswept list: this thread has the span to itself until it hands
                // it over below.
                let s = unsafe { span.get() };
                // SAFETY: as above.
                let st = unsafe { s.state() };
                if live == 0 {
                    st.owner = Owner::Freed;
                    lock(&self.page_heap).release_span_pages(span);
                    freed += s.npages;
                } else if live < nelems {
                    st.owner = Owner::Central;
                    lock(&self.central[class]).push(span);
                } else {
                    st.owner = Owner::Full;
                }
            }
            if freed >= npages {
                return;
            }
        }
    }

    fn pop_unswept(&self, class: usize) -> Option<SpanPtr> {
        let span = lock(&self.unswept[class]).pop()?;
        self.unswept_count.fetch_sub(1, Ordering::Relaxed);
        Some(span)
    }

    /// Sweeps a span taken from an unswept list (no observers: lazy cycles have none). Returns its live
    /// slots and its slot count.
    fn sweep_unswept(&self, span: SpanPtr, ctx: &ObserverCtx) -> (u32, u32) {
        // SAFETY: the span was popped from an unswept list: it is alive (only sweeps free spans, and an
        // unswept span is freed only by whoever pops it) and this thread has it to itself.
        let s = unsafe { span.get() };
        let freed = sweep_span(self, s, &[], ctx);
        if freed > 0 {
            self.lazy_freed_objects.fetch_add(freed as u64, Ordering::Relaxed);
            self.lazy_freed_bytes.fetch_add((freed * s.elem_size) as u64, Ordering::Relaxed);
        }
        // SAFETY: as above.
        (unsafe { s.state() }.alloc_count, s.nelems)
    }
}

/// At the start of a collection (world stopped, collector and page-heap locks held): sweeps every span
/// the last cycle left unswept, with that cycle's mark bits, so that marking starts from clear bitmaps.
/// Empty spans give their pages back and become tombstones (the next sweep destroys them), partly free
/// ones join their central lists. Also [`crate::Heap::finish_sweep`].
pub(crate) fn finish_sweep(shared: &Shared, ph: &mut PageHeap, ctx: &ObserverCtx) {
    if shared.unswept_count.load(Ordering::Relaxed) == 0 {
        return;
    }
    for class in 1..NUM_CLASSES {
        let list = std::mem::take(&mut *lock(&shared.unswept[class]));
        for span in list {
            let (live, nelems) = shared.sweep_unswept(span, ctx);
            // SAFETY: taken from the unswept list with the world stopped: the collector has it to itself.
            let st = unsafe { span.get().state() };
            st.owner = if live == 0 {
                ph.release_span_pages(span);
                Owner::Freed
            } else if live < nelems {
                lock(&shared.central[class]).push(span);
                Owner::Central
            } else {
                Owner::Full
            };
        }
    }
    shared.unswept_count.store(0, Ordering::Relaxed);
}
