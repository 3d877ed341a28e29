//! `ThreadCache`: one per mutator thread, holding the span each size class currently allocates from.
//!
//! The fast path ([`ThreadCache::take_fast`]) touches only the cache and its span: no lock, no atomic
//! read-modify-write. An empty class points at the cache's own sentinel span (no free slots), so the fast
//! path needs no null check: a dry span and "no span yet" take the same branch into `Shared::refill`
//! (`alloc.rs`).
//!
//! The cache also carries the thread's observer context (thread id, race context) and its copy of the
//! observer list, so the instrumented path reads neither from shared state.
//!
//! A cache keeps its spans across collections: the sweeper rewinds them in place (their `Owner` is
//! `InCache`, so it does not hand them to anybody else). Dropping a cache gives its spans back to the central
//! lists, so a thread that exits leaves no span stranded; it takes the collector's lock to do so, so it may
//! happen at any time, also while another thread collects.

use std::ptr::NonNull;
use std::sync::Arc;

use crate::observer::{ObserverCtx, Observers};
use crate::shared::{Shared, lock};
use crate::size_class::NUM_CLASSES;
use crate::span::{Span, SpanPtr};

/// Per-thread allocation state. Create one per mutator thread with [`crate::Heap::new_thread_cache`].
pub struct ThreadCache {
    pub(crate) shared: Arc<Shared>,
    pub(crate) ctx: ObserverCtx,
    /// Current span per size class (index 0 unused); `sentinel` when the class has none.
    pub(crate) spans: [NonNull<Span>; NUM_CLASSES],
    sentinel: NonNull<Span>,
    /// Allocations (with `may_collect`) since the last stress-mode collection request.
    pub(crate) stress_count: u64,
    /// Observers as of `observer_gen` (refreshed on the instrumented path when the heap's list changes).
    pub(crate) observers: Observers,
    pub(crate) observer_gen: u64,
}

// SAFETY: the cache owns its spans' allocation state exclusively (ownership protocol in span.rs); moving the
// cache to another thread moves that ownership with it. It is not `Sync`: it must not be shared.
unsafe impl Send for ThreadCache {}

impl ThreadCache {
    pub(crate) fn new(shared: Arc<Shared>, thread_id: u32) -> ThreadCache {
        // The sentinel is an 8-byte-class span with no free slot; it is never registered or swept.
        let sentinel = Span::new_large(0, 0, 0, false, false);
        let sentinel = NonNull::from(Box::leak(sentinel));
        let (observers, observer_gen) = shared.observers.snapshot();
        ThreadCache {
            shared,
            ctx: ObserverCtx::new(thread_id),
            spans: [sentinel; NUM_CLASSES],
            sentinel,
            stress_count: 0,
            observers,
            observer_gen,
        }
    }

    /// The id the heap gave this thread (reported to observers).
    pub fn thread_id(&self) -> u32 {
        self.ctx.thread_id
    }

    /// Sets the race detector's context for this thread (0 = none): an opaque word reported in
    /// [`ObserverCtx::race_ctx`] with every event made through this cache, including the sweep's when this
    /// thread collects.
    pub fn set_race_ctx(&mut self, race_ctx: usize) {
        self.ctx.race_ctx = race_ctx;
    }

    pub fn race_ctx(&self) -> usize {
        self.ctx.race_ctx
    }

    /// Re-reads the heap's observer list if observers were added since this cache took its copy.
    #[inline]
    pub(crate) fn refresh_observers(&mut self) {
        if self.shared.observers.generation() != self.observer_gen {
            (self.observers, self.observer_gen) = self.shared.observers.snapshot();
        }
    }

    /// The address of this cache's current-span array (one pointer per size class, class 0 unused), for
    /// allocation fast paths in generated code ([`crate::inline_alloc`]). Valid while the cache lives and
    /// is not moved; only the cache's own thread may use it, and only while it is running (not parked).
    pub fn spans_address(&mut self) -> usize {
        self.spans.as_mut_ptr() as usize
    }

    pub(crate) fn is_sentinel(&self, span: NonNull<Span>) -> bool {
        span == self.sentinel
    }

    pub(crate) fn sentinel(&self) -> NonNull<Span> {
        self.sentinel
    }

    /// Takes a free slot of `class` from the current span without any lock. Returns the slot address and
    /// whether it must be zeroed, or `None` when the cached word of the span's bitmap is used up.
    #[inline(always)]
    pub(crate) fn take_fast(&mut self, class: usize) -> Option<(usize, bool)> {
        // SAFETY: `spans[class]` is the sentinel or a span owned by this cache (Owner::InCache), so this
        // thread has exclusive access to its state; both stay alive while the cache holds them.
        let span = unsafe { self.spans[class].as_ref() };
        // SAFETY: as above.
        let st = unsafe { span.state() };
        let cache = st.alloc_cache;
        if cache == 0 {
            return None;
        }
        let tz = cache.trailing_zeros();
        let index = st.freeindex + tz;
        st.freeindex = index + 1;
        st.alloc_cache = (cache >> tz) >> 1;
        st.alloc_count += 1;
        Some((span.slot_addr(index as usize), st.needzero))
    }
}

impl Drop for ThreadCache {
    fn drop(&mut self) {
        // The collector state lock: no sweep or heap walk is looking at these spans meanwhile.
        let _collector = lock(&self.shared.gc);
        for class in 1..NUM_CLASSES {
            let span = self.spans[class];
            if span != self.sentinel {
                self.shared.release_cached_span(SpanPtr::from_non_null(span));
            }
        }
        // SAFETY: the sentinel was leaked in `new` and only this cache refers to it.
        unsafe { SpanPtr::from_non_null(self.sentinel).destroy() };
    }
}
