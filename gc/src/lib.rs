//! `gc`: vmrun's garbage-collected heap: a size-classed, thread-cached allocator in the style of the Go
//! runtime's (`malloc.go`, `mheap.go`, `mcache.go`, `mcentral.go`), with a non-moving, stop-the-world
//! mark-sweep collector, and the stop-the-world hand-off between the mutator threads that share it
//! (`proc.go`'s `stopTheWorld`). It knows type ids and reference maps, nothing about Wasm. Every span, object
//! and stack event is reported through one observer interface ([`observer`]), which is how the Memcheck
//! annotations and the alloc/free tracer see the heap (and a race detector will: each event carries the
//! thread's race context).
//!
//! # Data structures
//!
//! - **Arena** (`arena.rs`): a 64 MiB anonymous `memmap2` mapping, 64 MiB-aligned, backed lazily by the
//!   kernel. Arenas are never unmapped while the heap lives; their free pages are returned to the OS with
//!   `madvise(MADV_DONTNEED)` instead. A process-wide chunk table maps every 64 MiB of address space to its
//!   arena, and each arena maps every page to its span, so address → span is four loads without a lock.
//! - **Page heap** (`arena::PageHeap`, one mutex): per-arena free and scavenged bitmaps of 8 KiB pages.
//!   Hands out runs of pages, first fit from the lowest address, and owns the registry of in-use spans.
//! - **Span** (`span.rs`): a run of pages holding the objects of one size class (or one large object),
//!   with out-of-line allocation and mark bitmaps. Free slots are found in the bitmap (Go's
//!   `allocBits`/`freeindex`/`allocCache`), never through links written into object memory, so a freed slot
//!   is not touched again until reused (Memcheck can make it inaccessible).
//! - **Size class** ([`size_class`]): 80 slot sizes from 8 bytes to 32 KiB; < 12.5 % waste per slot and
//!   ≤ 12.5 % per span tail, checked by tests.
//! - **Central list** (`Shared::central`, one mutex per class): spans with free slots that no thread holds.
//! - **Thread cache** ([`ThreadCache`]): per mutator thread, the current span of every class. Owned by one
//!   thread, so allocating from it takes no lock. It also carries the thread's observer context.
//! - **World** (`world.rs`): the registered mutators, each *running*, *parked* (stopped at a safepoint) or
//!   *native* (outside the heap), with a stop flag per mutator ([`MutatorLink`]); see "A collection".
//! - **Mark bits**: one bit per slot per span, set by the marker; after the sweep they become the alloc bits.
//!
//! # Objects and references
//!
//! An object is an 8-byte header (`type_id: u32`, then `len: u32`, the array length, 0 for structs)
//! followed by its payload ([`ObjRef`]). The VM registers a [`Layout`] per type id (struct: payload size and
//! the offsets of its reference fields; array: element size, whether elements are references), which makes
//! marking precise. A reference is a `u64` ([`value`]): null, an unboxed i31, a host or function reference
//! (tagged in the low bits), or an object's address (low 3 bits clear). Memory handed to the VM is always
//! zeroed with the header written.
//!
//! # Allocating a small object ([`Heap::alloc_struct`], [`Heap::alloc_array`])
//!
//! 1. If observers or stress mode are active (one relaxed load, one predictable branch), take the
//!    instrumented path instead: the same steps plus the stress countdown and the `object_alloc` event.
//! 2. Look up the type's packed allocation entry (two loads in a lock-free table) → size class.
//! 3. Fast path: in the cache's span for that class, `trailing_zeros` of the 64-bit `alloc_cache` gives the
//!    next free slot; advance `freeindex`, shift the cache, count it. Zero the slot if the span may hold stale
//!    bytes, write the header. No lock, no atomic read-modify-write. Compiled code does this step inline
//!    ([`inline_alloc`] gives it the offsets and the class table) and calls in only for the rest.
//! 4. Cache word empty → `refill`: look for the next free slot further in the span's bitmap.
//! 5. Span full → hand it back (it becomes `Full`), ask the pacer (if the caller may collect and the heap
//!    would pass its goal, return [`AllocError::CollectionNeeded`]), then pop a span with free slots from the
//!    class's central list (lock), or sweep one from the class's unswept list (`sweep.rs`), or else sweep
//!    unswept spans of any class until enough pages came back (reclaim) and carve a new span from the page
//!    heap (lock), mapping a new arena if needed. The heap limit is enforced here.
//!
//! **Large objects** (> 32 KiB) skip the cache: each gets a span of its own straight from the page heap.
//!
//! # A collection ([`Heap::stop_the_world`], [`Heap::collect`]; details in `world.rs`, `collect.rs`)
//!
//! Every thread that uses the heap registers a mutator ([`Heap::register_mutator`]) and polls its stop
//! flag at safepoints (one relaxed load). A mutator is *running* (it may allocate and touch objects),
//! *parked* (stopped at a safepoint in [`MutatorLink::park`], its roots published) or *native* (between
//! [`MutatorLink::enter_native`] and [`MutatorLink::leave_native`]: a host call or idle; it counts as stopped
//! at any time, its roots published).
//!
//! The mutator that got [`AllocError::CollectionNeeded`] first stops the world: under the world's mutex it
//! becomes the stopper, sets the stop flag of every other running mutator and waits until none is running;
//! it gets the [`StoppedWorld`] token (or, if another mutator was stopping the world already, it parks like
//! the others and retries its allocation afterwards). Nobody becomes running while a stop is in progress,
//! so the token proves that no other thread touches the heap. Then it calls `collect` with the token and
//! its own roots ([`RootSet`]), to which the collector adds every root set the others published:
//!
//! 1. Lock the collector state and the page heap; finish the last cycle's lazy sweep; `gc_begin`.
//! 2. Mark from the roots with an explicit, heap-allocated mark stack (graph depth never touches the native
//!    stack), following each object's reference map.
//! 3. With `verify`: re-walk the graph independently and check every reachable object is marked and sane.
//! 4. Sweep: report each allocated but unmarked object (`object_free`), turn mark bits into alloc bits,
//!    return empty spans to the page heap, rebuild the central lists. Spans held by thread caches are swept
//!    in place and stay with their cache. **Eagerly** (every span, now) when observers or Memcheck's
//!    quarantine are on or the heap is past 110 % of its next goal (a spike to give back); otherwise
//!    **lazily**: the other spans go to per-class unswept lists, swept by the threads that allocate
//!    (`sweep.rs`, Go's `mgcsweep.go`), outside the pause and in parallel.
//! 5. With `verify`: check no reachable object was freed (after a lazy sweep, again once the next cycle
//!    has finished it).
//! 6. Pace: next goal = max(`min_heap_bytes`, live × (1 + `gc_percent`/100)).
//! 7. Scavenge: release free pages (highest addresses first) until in-use plus free-but-resident memory is
//!    within 110 % of max(goal, in use).
//! 8. Update statistics, `gc_end`.
//!
//! Dropping the token releases the world: the stop flags are cleared and the parked mutators run again.
//!
//! # Invariants
//!
//! - A span is owned by exactly one of: one thread cache (`InCache`), a central list (`Central`), an unswept
//!   list (`Unswept`), nobody (`Full`; `Freed`, a tombstone whose pages went back); only its owner (or
//!   whoever popped it from its list) touches its allocation state, and only the collector (world stopped)
//!   sets mark bits. Only sweepers free spans, and never a cached one. No span is unswept when a mark
//!   starts.
//! - Collections and heap walks run only with the [`StoppedWorld`] token: every other registered mutator is
//!   parked or native, and a mutator becomes running only while no stop is in progress. A published root
//!   set stays valid and untouched by its owner until the world is released.
//! - A slot is allocated iff `index < freeindex` or its alloc bit is set; alloc bits change only in the sweep.
//! - Every allocated slot holds an initialised object: zeroed payload, header written before the VM sees it.
//! - Every reference field of a live object holds a valid encoding; object references point at headers of
//!   allocated objects (checked by `verify`).
//! - Lock order: collector state → page heap → central and unswept lists; a mutator never holds two of
//!   the last three at once. The world's mutex is taken with no heap lock held, and no heap lock is taken
//!   under it.
//!
//! # Why these choices
//!
//! - **Non-moving mark-sweep** keeps a reference's bits stable (they are the object's address), needs no
//!   second semispace (peak memory), collects cycles (wasmtime's DRC cannot), and lets Memcheck see each
//!   object as a malloc-like block.
//! - **Eager sweep when observed** makes every `object_free` happen inside the collection that found the
//!   object dead, in a deterministic order, which the tracer, the race detector and the Valgrind bridge
//!   want. **Lazy sweep otherwise**: a bitmap pass per span is cheap, but a pause that sweeps every span
//!   stops every thread for it; swept by the allocating threads, it runs in parallel, and an empty span is
//!   reused in place.
//! - **Bitmaps, not free lists**, because freed memory must stay untouched (and Memcheck-inaccessible).
//! - **Thread caches** make allocation lock-free for the common case and keep mutator threads apart.
//! - **Lazy zeroing**: fresh or scavenged pages are known zero and are not zeroed again.
//! - **Scavenging with `MADV_DONTNEED`** returns memory after a spike without unmapping, so no address →
//!   arena lookup can ever see a dangling arena.
//! - **A stop flag per mutator and a mutex for the rest**: the interpreter's safepoint poll is one relaxed
//!   load of a word only stops write; every state change (park, native, register, release) is rare next
//!   to allocation and goes through one mutex and two condition variables, where lost wake-ups cannot
//!   happen. Native threads count as stopped with their roots published, so a thread blocked in a host call
//!   never delays a collection (Go's `_Psyscall`).
//!
//! # Under Valgrind
//!
//! `memcheck.rs` is an observer attached by [`Heap::new`] when the process runs under Valgrind: arenas are
//! metapools, spans no-access superblocks, objects exact-size malloc-like blocks (announced before the slot
//! is written), swept objects freed blocks, released spans keep their superblocks until a span of another
//! shape overlaps them, and the heap's drop releases everything. The heap adds slack after each object and
//! quarantines swept slots for a cycle (`span.rs`). Span metadata and bitmaps live outside the arenas, so
//! the collector's own data never needs annotating. [`InjectedBug`] plants collector bugs for the negative
//! controls.

mod alloc;
mod arena;
mod cache;
mod collect;
mod config;
mod heap;
mod inject;
pub mod inline_alloc;
mod memcheck;
mod object;
pub mod observer;
mod os;
mod roots;
mod shared;
pub mod size_class;
mod span;
mod sweep;
mod types;
pub mod value;
mod world;

#[cfg(test)]
mod tests;

pub use arena::ARENA_SIZE;
pub use cache::ThreadCache;
pub use config::{AllocError, HeapConfig, MAX_OBJECT_BYTES, human_bytes};
pub use heap::{GcStats, Heap};
pub use inject::InjectedBug;
pub use object::{AtomicRmw, HEADER_SIZE, ObjRef};
pub use observer::{HeapObserver, ObserverCtx};
pub use os::{peak_resident_bytes, resident_bytes};
pub use roots::RootSet;
pub use size_class::PAGE_SIZE;
pub use types::{Layout, MAX_TYPE_ID};
pub use world::{MutatorLink, StoppedWorld};
