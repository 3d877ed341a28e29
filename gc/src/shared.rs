//! `Shared`: the state of one heap that its thread caches, its allocation paths and its collector share
//! (Go's `mheap_` with its `mcentral`s), and the hand-over of spans between caches and the central lists.
//!
//! **What lives here.** The configuration and type table (read-only or lock-free), the page heap (one
//! mutex), the central lists (a mutex per size class: spans with free slots that no cache holds), the
//! collector's own state (one mutex, held for a whole cycle), the observer list, and the pacer's and the
//! statistics' atomic counters. [`crate::Heap`] and every [`crate::ThreadCache`] hold an `Arc` of it.
//!
//! **Span hand-over.** A cache takes a span from a central list or the page heap (`alloc.rs`) and gives it
//! back with [`Shared::release_cached_span`]: to its class's central list if it has free slots, else it
//! becomes `Full` until a sweep frees some. The allocation counters of a cached span are brought up to date
//! lazily ([`Shared::flush_counts`]): when it leaves its cache, when the sweep reaches it, and for
//! [`crate::Heap::stats_for`].
//!
//! **Lock order:** `gc` → `page_heap` → `central[_]`, `unswept[_]`. A mutator never holds two of these at
//! once (it pops a span from an unswept or central list, lets go, then hands the span over). Observers may be called with any of these held (`arena_map` under the page-heap
//! lock, the sweep's events under `gc` and `page_heap`), which is why they must not call back into the heap.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::arena::{PageAllocError, PageHeap};
use crate::config::{AllocError, HeapConfig};
use crate::memcheck::MemcheckAnnotator;
use crate::observer::{HeapObserver, ObserverList, Observers};
use crate::size_class::{NUM_CLASSES, PAGE_SIZE};
use crate::span::{Owner, Span, SpanPtr, SpanState};
use crate::types::TypeTable;

/// Locks `m`, ignoring poisoning (a panic in one mutator must not wedge the heap for the others).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the collector keeps between cycles (under `Shared::gc`, which a cycle holds throughout).
#[derive(Default)]
pub(crate) struct GcState {
    pub mark_stack: Vec<usize>,
    pub cycles: u64,
    pub total_pause: Duration,
    pub max_pause: Duration,
    pub bytes_freed: u64,
    pub objects_freed: u64,
    pub live_bytes: usize,
    pub live_objects: usize,
    /// Highest `VmRSS` sampled just before scavenging (see `collect.rs`).
    pub peak_resident_sampled: usize,
    /// `InjectedBug::SkipMark` has skipped its object (it plants one bug, once).
    pub skip_mark_done: bool,
    /// `InjectedBug::UseFreedSpan` has written to its span.
    pub freed_span_written: bool,
    /// With `verify`, after a lazy sweep: the objects the cycle found reachable, checked once the next
    /// collection has finished that sweep (none of them may have been freed by it).
    pub pending_verify: Option<Vec<(usize, (u32, u32))>>,
}

/// Everything the heap and its thread caches share; see the module comment.
pub(crate) struct Shared {
    pub config: HeapConfig,
    pub types: TypeTable,
    pub page_heap: Mutex<PageHeap>,
    /// Per size class: spans with free slots that no cache holds.
    pub central: Box<[Mutex<Vec<SpanPtr>>]>,
    /// Per size class: spans the last collection marked but left for the mutators to sweep (`sweep.rs`).
    pub unswept: Box<[Mutex<Vec<SpanPtr>>]>,
    /// Spans in all unswept lists (a hint that lets allocation skip the lists when they are empty).
    pub unswept_count: AtomicUsize,
    /// Objects and bytes freed by lazy sweeping since the last collection folded them into `GcState`.
    pub lazy_freed_objects: AtomicU64,
    pub lazy_freed_bytes: AtomicU64,
    pub gc: Mutex<GcState>,
    /// True when the instrumented allocation path must run (observers attached or stress mode).
    pub hooks: AtomicBool,
    /// Set when the process runs under Valgrind: the Memcheck annotations (also in the observer list), so
    /// the heap's drop can free every span and destroy the pools.
    pub memcheck: Option<Arc<MemcheckAnnotator>>,
    /// Swept slots wait one cycle before reuse (`span.rs`); on when `memcheck` is.
    pub quarantine: bool,
    pub observers: ObserverList,
    /// Slot bytes allocated or reserved by caches since the last sweep, plus the live bytes it left.
    pub heap_live: AtomicUsize,
    /// Pacing goal: a collection is requested when `heap_live` would exceed it.
    pub next_gc: AtomicUsize,
    pub bytes_allocated: AtomicU64,
    pub objects_allocated: AtomicU64,
    /// The next observer thread id a thread cache gets.
    pub next_thread_id: AtomicU32,
}

impl Shared {
    pub fn new(config: HeapConfig) -> Shared {
        let next_gc = match config.gc_percent {
            Some(_) => config.min_heap_bytes,
            None => usize::MAX,
        };
        let memcheck =
            if config.valgrind { MemcheckAnnotator::attach_if_running_on_valgrind().map(Arc::new) } else { None };
        let hooks = config.stress_every.is_some() || memcheck.is_some();
        let observers: Observers = match &memcheck {
            Some(m) => Arc::new([m.clone() as Arc<dyn HeapObserver>]),
            None => Arc::new([]),
        };
        Shared {
            types: TypeTable::new(),
            page_heap: Mutex::new(PageHeap::new(config.max_heap_bytes)),
            central: (0..NUM_CLASSES).map(|_| Mutex::new(Vec::new())).collect(),
            unswept: (0..NUM_CLASSES).map(|_| Mutex::new(Vec::new())).collect(),
            unswept_count: AtomicUsize::new(0),
            lazy_freed_objects: AtomicU64::new(0),
            lazy_freed_bytes: AtomicU64::new(0),
            gc: Mutex::new(GcState::default()),
            hooks: AtomicBool::new(hooks),
            quarantine: memcheck.is_some(),
            memcheck,
            observers: ObserverList::new(observers),
            heap_live: AtomicUsize::new(0),
            next_gc: AtomicUsize::new(next_gc),
            bytes_allocated: AtomicU64::new(0),
            objects_allocated: AtomicU64::new(0),
            next_thread_id: AtomicU32::new(1),
            config,
        }
    }

    pub fn oom(&self) -> AllocError {
        let limit = self.config.max_heap_bytes.unwrap_or_else(|| lock(&self.page_heap).pages_in_use * PAGE_SIZE);
        AllocError::OutOfMemory { limit }
    }

    pub fn page_error(&self, e: PageAllocError, may_collect: bool) -> AllocError {
        match e {
            _ if may_collect => AllocError::CollectionNeeded,
            PageAllocError::LimitReached => {
                AllocError::OutOfMemory { limit: self.config.max_heap_bytes.unwrap_or(usize::MAX) }
            }
            PageAllocError::MapFailed => self.oom(),
        }
    }

    /// Whether allocating `extra` more bytes would pass the pacer's goal.
    pub fn pacer_wants_gc(&self, extra: usize) -> bool {
        self.heap_live.load(Ordering::Relaxed).saturating_add(extra) > self.next_gc.load(Ordering::Relaxed)
    }

    /// Brings the allocation counters up to date with a span whose state the caller may touch.
    pub fn flush_counts(&self, span: &Span, st: &mut SpanState) {
        let delta = st.alloc_count - st.count_flushed;
        if delta != 0 {
            self.objects_allocated.fetch_add(delta as u64, Ordering::Relaxed);
            self.bytes_allocated.fetch_add(delta as u64 * span.elem_size as u64, Ordering::Relaxed);
            st.count_flushed = st.alloc_count;
        }
    }

    /// A cache lets go of a span: to the central list if it has free slots, else it becomes `Full`.
    pub fn release_cached_span(&self, span: SpanPtr) {
        // SAFETY: the calling cache owns the span (Owner::InCache) and is giving it up; it is alive because
        // only the sweeper frees spans and it never frees cached ones.
        let s = unsafe { span.get() };
        // SAFETY: as above: exclusive until it is pushed to the central list below.
        let st = unsafe { s.state() };
        self.flush_counts(s, st);
        let free = (s.nelems - st.alloc_count) as usize;
        let _ = self
            .heap_live
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| Some(v.saturating_sub(free * s.elem_size)));
        if free > 0 {
            st.owner = Owner::Central;
            lock(&self.central[s.class as usize]).push(span);
        } else {
            st.owner = Owner::Full;
        }
    }
}

impl Drop for Shared {
    /// Under Valgrind, tells Memcheck every object, span and pool is gone before the arenas are unmapped.
    fn drop(&mut self) {
        let Some(memcheck) = self.memcheck.take() else { return };
        let ph = self.page_heap.get_mut().unwrap_or_else(PoisonError::into_inner);
        let mut objects = Vec::new();
        for span in &ph.spans {
            // SAFETY: registered spans are alive until the page heap drops; nobody else holds the heap.
            let s = unsafe { span.get() };
            // SAFETY: as above.
            let st = unsafe { s.state() };
            objects.extend(
                (0..s.nelems as usize).filter(|&i| st.is_allocated(i) && !st.is_quarantined(i)).map(|i| s.slot_addr(i)),
            );
        }
        // SAFETY: as above.
        let mut spans = ph.spans.iter().map(|span| unsafe { span.get() }.info());
        memcheck.teardown(&mut objects.into_iter(), &mut spans);
    }
}
