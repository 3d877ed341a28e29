//! The one interface through which the heap reports what it does: the Valgrind annotations and the
//! alloc/free tracer are [`HeapObserver`]s, and a race detector will be one (each event carries its slot).
//!
//! **Events and their order.**
//! - `arena_map` when an arena is mapped from the OS, before any span in it is reported (by any thread:
//!   it is sent under the page-heap lock).
//! - `span_alloc` when a span is carved from the page heap, before any object in it is reported;
//!   `span_free` when its pages go back to the page heap (after the `object_free` of its last objects).
//! - `object_alloc` for every object, **before** the heap zeroes the slot and writes the header, so an
//!   observer that marks freed memory inaccessible (Memcheck's `MALLOCLIKE_BLOCK`) can make the slot
//!   addressable first. The event carries the type id and array length, so nobody needs to read the header.
//! - `object_free` only during the sweep of a collection, between `gc_begin` and `gc_end`, once for every
//!   allocated object the mark phase did not reach. The heap never touches the slot again until a later
//!   `object_alloc` hands it out.
//! - `stack_alloc` / `stack_free` when the VM reports a stack it created or dropped
//!   ([`crate::Heap::notify_stack_alloc`]).
//!
//! **Sizes** are slot sizes: the size-class size for small objects, the 8-byte-rounded object size for
//! large ones (see [`crate::size_class`]). The same object reports the same size at alloc and free, and
//! `GcEndInfo::live_bytes` is the sum of the sizes of the surviving objects, so for every collection
//! `Σ alloc sizes − Σ free sizes == live_bytes`.
//!
//! **Threads.** Every call gets an [`ObserverCtx`]: the heap's id for the calling thread (the
//! [`crate::ThreadCache`] it allocates through) and that cache's race context, an opaque word a race
//! detector keeps per thread ([`crate::ThreadCache::set_race_ctx`], like the Go runtime's per-P `racectx`).
//! The sweep runs on the collecting thread, so `object_free`, `span_free`, `gc_begin` and `gc_end` carry the
//! **collector's** context (thread id and race context), not the context of the thread that allocated the
//! object. Calls for one thread are sequential; calls for different threads may be concurrent, hence
//! `Send + Sync`. Observers must not call back into the heap (allocation locks may be held).
//!
//! **Cost.** With no observer attached (and no stress mode), the allocation fast path pays one load and one
//! predictable branch for all of this ([`crate::Heap::alloc_struct`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

/// Per-call context: who is calling.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ObserverCtx {
    /// The heap-assigned id of the mutator thread (one per [`crate::ThreadCache`], starting at 1).
    pub thread_id: u32,
    /// The race detector's context for that thread, as set with [`crate::ThreadCache::set_race_ctx`]; 0 = none.
    /// The heap never interprets it.
    pub race_ctx: usize,
}

impl ObserverCtx {
    /// The context of heap thread `thread_id` with no race context.
    pub fn new(thread_id: u32) -> ObserverCtx {
        ObserverCtx { thread_id, race_ctx: 0 }
    }
}

/// An arena: a large OS mapping the page heap carves spans from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArenaInfo {
    pub base: usize,
    pub size: usize,
}

/// A span: a run of pages serving one size class, or one large object (class 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpanInfo {
    /// Address of the first page.
    pub base: usize,
    /// Number of pages ([`crate::PAGE_SIZE`] bytes each).
    pub npages: usize,
    /// Size class; 0 for a large-object span.
    pub size_class: u8,
    /// Slot size in bytes (for a large span, the object's rounded size).
    pub elem_size: usize,
    /// Number of slots.
    pub nelems: usize,
}

/// An object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Address of the header (equal to the reference's raw value).
    pub addr: usize,
    /// Slot size in bytes.
    pub size: usize,
    /// Bytes the object itself occupies (header + payload, rounded up to 8; at most `size`), in every event
    /// and heap walk: Memcheck's block size, so slack at the end of a slot is no-access.
    pub bytes: usize,
    pub type_id: u32,
    /// Array length from the header (0 for structs).
    pub len: u32,
}

/// Sent when a collection starts (the world is stopped).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GcBeginInfo {
    /// 1 for the first collection.
    pub cycle: u64,
    /// Bytes in in-use spans when the collection started.
    pub heap_bytes: usize,
}

/// Sent when a collection ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GcEndInfo {
    pub cycle: u64,
    /// Slot bytes / objects that survived.
    pub live_bytes: usize,
    pub live_objects: usize,
    /// Slot bytes / objects freed by this sweep.
    pub freed_bytes: usize,
    pub freed_objects: usize,
    /// Bytes in in-use spans after the sweep.
    pub heap_bytes: usize,
    /// Heap size at which the pacer will ask for the next collection.
    pub next_gc_bytes: usize,
    pub pause: std::time::Duration,
}

/// A client of heap events. Every method has an empty default, so an observer implements only what it needs.
pub trait HeapObserver: Send + Sync {
    fn arena_map(&self, _ctx: &ObserverCtx, _arena: &ArenaInfo) {}
    fn span_alloc(&self, _ctx: &ObserverCtx, _span: &SpanInfo) {}
    fn span_free(&self, _ctx: &ObserverCtx, _span: &SpanInfo) {}
    fn object_alloc(&self, _ctx: &ObserverCtx, _obj: &ObjectInfo) {}
    fn object_free(&self, _ctx: &ObserverCtx, _obj: &ObjectInfo) {}
    fn gc_begin(&self, _ctx: &ObserverCtx, _info: &GcBeginInfo) {}
    fn gc_end(&self, _ctx: &ObserverCtx, _info: &GcEndInfo) {}
    fn stack_alloc(&self, _ctx: &ObserverCtx, _base: usize, _size: usize) {}
    fn stack_free(&self, _ctx: &ObserverCtx, _base: usize, _size: usize) {}
}

/// An observer list as the allocation paths hold it: a snapshot, cheap to clone.
pub(crate) type Observers = Arc<[Arc<dyn HeapObserver>]>;

/// The heap's observers, copy-on-write: adding one publishes a new list under a new generation number, and
/// each thread cache re-reads the list only when the generation it holds is stale.
pub(crate) struct ObserverList {
    list: RwLock<(Observers, u64)>,
    generation: AtomicU64,
}

impl ObserverList {
    pub fn new(initial: Observers) -> ObserverList {
        ObserverList { list: RwLock::new((initial, 0)), generation: AtomicU64::new(0) }
    }

    /// The current list and its generation.
    pub fn snapshot(&self) -> (Observers, u64) {
        let guard = self.list.read().unwrap_or_else(PoisonError::into_inner);
        (guard.0.clone(), guard.1)
    }

    /// The generation of the current list (one acquire load).
    #[inline]
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn add(&self, obs: Arc<dyn HeapObserver>) {
        let mut guard = self.list.write().unwrap_or_else(PoisonError::into_inner);
        let mut list: Vec<Arc<dyn HeapObserver>> = guard.0.iter().cloned().collect();
        list.push(obs);
        guard.0 = list.into();
        guard.1 += 1;
        self.generation.store(guard.1, Ordering::Release);
    }
}
