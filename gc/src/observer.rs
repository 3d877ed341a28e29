//! The one interface through which the heap reports what it does: Valgrind annotations, the alloc/free
//! tracer and race hooks are all [`HeapObserver`]s.
//!
//! **Events and their order.**
//! - `arena_map` when an arena is mapped from the OS (before any span in it is reported).
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
//! **Threads.** Every call gets an [`ObserverCtx`] naming the heap's id for the calling thread (the
//! [`crate::ThreadCache`] it allocates through). Sweep events carry the collecting thread's context.
//! Calls for one thread are sequential; calls for different threads may be concurrent, hence `Send + Sync`.
//! Observers must not call back into the heap (allocation locks may be held).
//!
//! **Cost.** With no observer attached (and no stress mode), the allocation fast path pays one load and one
//! predictable branch for all of this ([`crate::Heap::alloc_struct`]).

/// Per-call context: who is calling.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ObserverCtx {
    /// The heap-assigned id of the mutator thread (one per [`crate::ThreadCache`], starting at 1).
    pub thread_id: u32,
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
    /// Bytes the object itself occupies (header + payload, rounded up to 8; at most `size`). Only
    /// `object_alloc` fills it in (Memcheck's block size, so slack at the end of a slot is no-access); the
    /// sweep and heap walks, which do not look up layouts, report 0.
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
