//! `Heap`: the public face of the heap. It owns the shared state (`shared.rs`) and the world of mutators
//! (`world.rs`), and offers allocation (fast paths inline here, the rest in `alloc.rs`), stopping the world,
//! collection (`collect.rs`), heap walks, observers and statistics.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::alloc::{array_bytes, init_object};
use crate::cache::ThreadCache;
use crate::config::{AllocError, HeapConfig};
use crate::inject::InjectedBug;
use crate::object::{ObjRef, read_header};
use crate::observer::{ArenaInfo, HeapObserver, ObjectInfo, SpanInfo};
use crate::os;
use crate::roots::RootSet;
use crate::shared::{GcState, Shared, lock};
use crate::size_class::{MAX_SMALL_SIZE, PAGE_SIZE, SIZE_CLASSES, class_for_size};
use crate::span::Owner;
use crate::types::Layout;
use crate::world::{MutatorLink, StoppedWorld, World};

/// Collector statistics. Byte counts are slot bytes (what the heap consumes); see [`crate::size_class`].
/// Allocation counts are exact after a collection; between collections, allocations from spans still held
/// by thread caches are counted when the cache moves to another span (or is dropped).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcStats {
    pub collections: u64,
    pub total_pause: Duration,
    pub max_pause: Duration,
    pub bytes_allocated: u64,
    pub objects_allocated: u64,
    pub bytes_freed: u64,
    pub objects_freed: u64,
    /// Bytes in in-use spans now / at most.
    pub heap_bytes: usize,
    pub peak_heap_bytes: usize,
    /// Address space mapped for arenas.
    pub mapped_bytes: usize,
    pub live_bytes_after_last_gc: usize,
    pub live_objects_after_last_gc: usize,
    /// Heap size (in allocated slot bytes) at which the pacer asks for the next collection.
    pub next_gc_bytes: usize,
    /// The process's resident memory now (`VmRSS`) and at its peak (`VmHWM`, or the highest `VmRSS` the
    /// collector sampled before returning pages to the OS, which the kernel's high-water mark can miss), if
    /// /proc is readable.
    pub resident_bytes: Option<usize>,
    pub peak_resident_bytes: Option<usize>,
}

/// The garbage-collected heap. `Send + Sync`: share it between mutator threads (e.g. in an `Arc`), each
/// allocating through its own [`ThreadCache`] and taking part in collections through its own
/// [`MutatorLink`].
pub struct Heap {
    shared: Arc<Shared>,
    world: Arc<World>,
}

const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Heap>();
};

impl Heap {
    pub fn new(config: HeapConfig) -> Heap {
        Heap { shared: Arc::new(Shared::new(config)), world: Arc::new(World::new()) }
    }

    pub fn config(&self) -> &HeapConfig {
        &self.shared.config
    }

    /// Registers the layout of `type_id` (any time, from any thread). Registering the same layout twice is
    /// a no-op. Panics on an id ≥ [`crate::MAX_TYPE_ID`], a conflicting re-registration or a malformed
    /// layout (VM bugs).
    pub fn register_type(&self, type_id: u32, layout: Layout) {
        self.shared.types.register(type_id, layout);
    }

    /// A cache for one mutator thread, with a fresh thread id for observers.
    pub fn new_thread_cache(&self) -> ThreadCache {
        let id = self.shared.next_thread_id.fetch_add(1, Ordering::Relaxed);
        ThreadCache::new(self.shared.clone(), id)
    }

    /// Registers a mutator thread with the heap's world (`world.rs`). It starts running: it may use the
    /// heap at once, and collections wait for it to park or go native. If a stop is in progress, waits for
    /// it to end first, so call this from the new thread itself (or from a thread that is native), never
    /// from a running mutator or while holding a [`StoppedWorld`]. Dropping the link deregisters it.
    pub fn register_mutator(&self) -> MutatorLink {
        self.world.register()
    }

    /// Stops the world from the running mutator `me`, which wants to collect: sets every other running
    /// mutator's stop flag and waits until each one is parked or native. With no other running mutator this
    /// is an uncontended lock and unlock.
    ///
    /// Returns `None` if another thread was already stopping the world: then `me` has been parked, with
    /// `my_roots` published for that collector to scan, until that collection finished; the caller retries
    /// its allocation (which may no longer need a collection). Panics if `me` is not running or is not of
    /// this heap.
    pub fn stop_the_world<'h>(&'h self, me: &'h MutatorLink, my_roots: &mut dyn RootSet) -> Option<StoppedWorld<'h>> {
        self.world.stop(me, my_roots)
    }

    /// Allocates a struct of `type_id` (registered as [`Layout::Struct`]): zeroed, header written.
    ///
    /// With `may_collect`, returns `Err(CollectionNeeded)` when a collection is due: the VM stops the world
    /// ([`Heap::stop_the_world`]), collects and retries with `may_collect = false`, which grows the heap or
    /// returns `OutOfMemory`. `cache` must come from this heap. Panics if the type is not a registered struct.
    #[inline]
    pub fn alloc_struct(&self, cache: &mut ThreadCache, type_id: u32, may_collect: bool) -> Result<ObjRef, AllocError> {
        let shared = &*self.shared;
        debug_assert!(Arc::ptr_eq(&cache.shared, &self.shared), "gc: ThreadCache used with another heap");
        if shared.hooks.load(Ordering::Relaxed) {
            return shared.alloc_instrumented(cache, type_id, None, may_collect);
        }
        let info = shared.struct_info(type_id);
        let class = info.class();
        if class != 0
            && let Some((addr, needzero)) = cache.take_fast(class)
        {
            // SAFETY: the slot was just taken for this object; `info.size()` is its class's slot size.
            return Ok(unsafe { init_object(addr, info.size(), needzero, type_id, 0) });
        }
        shared.alloc_slow(cache, type_id, 0, info.size(), class, may_collect)
    }

    /// Allocates an array of `len` elements of `type_id` (registered as [`Layout::Array`]): zeroed, header
    /// written. Same protocol as [`Heap::alloc_struct`]; a size beyond [`crate::MAX_OBJECT_BYTES`] (or the
    /// heap limit) is `OutOfMemory`.
    #[inline]
    pub fn alloc_array(
        &self,
        cache: &mut ThreadCache,
        type_id: u32,
        len: u32,
        may_collect: bool,
    ) -> Result<ObjRef, AllocError> {
        let shared = &*self.shared;
        debug_assert!(Arc::ptr_eq(&cache.shared, &self.shared), "gc: ThreadCache used with another heap");
        if shared.hooks.load(Ordering::Relaxed) {
            return shared.alloc_instrumented(cache, type_id, Some(len), may_collect);
        }
        let info = shared.array_info(type_id);
        let Some(size) = array_bytes(info.size(), len) else { return Err(shared.oom()) };
        if size <= MAX_SMALL_SIZE {
            let class = class_for_size(size);
            if let Some((addr, needzero)) = cache.take_fast(class) {
                // SAFETY: the slot was just taken for this object.
                return Ok(unsafe { init_object(addr, SIZE_CLASSES[class].size as usize, needzero, type_id, len) });
            }
            return shared.alloc_slow(cache, type_id, len, size, class, may_collect);
        }
        shared.alloc_slow(cache, type_id, len, size, 0, may_collect)
    }

    /// Runs a full collection in the stopped `world`. It marks from `roots` (the stopping mutator's own) and
    /// from every root set the other mutators published (parked or native), then sweeps. `cache` is the
    /// collecting thread's cache: its observer context (thread id, race context) goes with every event of
    /// the cycle, the sweep's frees included.
    pub fn collect(&self, world: &StoppedWorld<'_>, cache: &mut ThreadCache, roots: &mut dyn RootSet) {
        self.check_world(world);
        debug_assert!(Arc::ptr_eq(&cache.shared, &self.shared), "gc: ThreadCache used with another heap");
        let mut all = world.roots(roots);
        if self.shared.config.inject == Some(InjectedBug::SkipStoppedRoots) {
            all.forget_published();
        }
        crate::collect::collect(&self.shared, &cache.ctx, &mut all);
    }

    /// Sweeps every span the last collection left to the mutators (`sweep.rs`), in the stopped `world`:
    /// afterwards the statistics count every object that collection found dead, and its empty spans are
    /// back in the page heap. Collections do this themselves before they mark; call it for exact counts
    /// (Go's `runtime.GC` likewise finishes the sweep before it returns).
    pub fn finish_sweep(&self, world: &StoppedWorld<'_>, cache: &ThreadCache) {
        self.check_world(world);
        let mut gc = lock(&self.shared.gc);
        let mut ph = lock(&self.shared.page_heap);
        crate::sweep::finish_sweep(&self.shared, &mut ph, &cache.ctx);
        gc.objects_freed += self.shared.lazy_freed_objects.swap(0, Ordering::Relaxed);
        gc.bytes_freed += self.shared.lazy_freed_bytes.swap(0, Ordering::Relaxed);
    }

    /// Whether every allocation must take the instrumented path (observers attached, e.g. the Memcheck
    /// annotations, the tracer or the race detector, or stress mode on). Once true, stays true. Code
    /// generators decide with it whether to inline the allocation fast path at all ([`crate::inline_alloc`]).
    pub fn allocation_observed(&self) -> bool {
        self.shared.hooks.load(Ordering::Acquire)
    }

    /// The address of the byte behind [`Heap::allocation_observed`] (non-zero: observed), which inline
    /// allocation fast paths test at run time in case an observer is attached after they were generated.
    /// Valid while the heap lives.
    pub fn hooks_address(&self) -> usize {
        self.shared.hooks.as_ptr() as usize
    }

    /// Attaches an observer. Attach observers before mutators start: a thread already inside an allocation
    /// may miss the first events.
    pub fn add_observer(&self, obs: Arc<dyn HeapObserver>) {
        self.shared.observers.add(obs);
        self.shared.hooks.store(true, Ordering::Release);
    }

    /// The VM created a stack (`base`, `size` bytes) for the thread owning `cache`.
    pub fn notify_stack_alloc(&self, cache: &mut ThreadCache, base: usize, size: usize) {
        if self.shared.hooks.load(Ordering::Relaxed) {
            cache.refresh_observers();
            for o in cache.observers.iter() {
                o.stack_alloc(&cache.ctx, base, size);
            }
        }
    }

    /// The VM dropped a stack it reported with [`Heap::notify_stack_alloc`].
    pub fn notify_stack_free(&self, cache: &mut ThreadCache, base: usize, size: usize) {
        if self.shared.hooks.load(Ordering::Relaxed) {
            cache.refresh_observers();
            for o in cache.observers.iter() {
                o.stack_free(&cache.ctx, base, size);
            }
        }
    }

    /// Statistics, with the allocations `cache` made since its spans were last counted included (the
    /// counters are brought up to date lazily: when a span leaves a cache and at each collection).
    pub fn stats_for(&self, cache: &mut ThreadCache) -> GcStats {
        let gc = lock(&self.shared.gc);
        for &span in cache.spans.iter() {
            if !cache.is_sentinel(span) {
                // SAFETY: the cache owns its current spans (Owner::InCache), `&mut` on the cache means no
                // allocation on it is in progress, and the collector lock keeps the sweep away.
                let s = unsafe { span.as_ref() };
                // SAFETY: as above.
                self.shared.flush_counts(s, unsafe { s.state() });
            }
        }
        self.stats_locked(&gc)
    }

    /// Statistics as of the last time every span was counted; see [`Heap::stats_for`].
    pub fn stats(&self) -> GcStats {
        self.stats_locked(&lock(&self.shared.gc))
    }

    fn stats_locked(&self, gc: &GcState) -> GcStats {
        let shared = &*self.shared;
        let ph = lock(&shared.page_heap);
        GcStats {
            collections: gc.cycles,
            total_pause: gc.total_pause,
            max_pause: gc.max_pause,
            bytes_allocated: shared.bytes_allocated.load(Ordering::Relaxed),
            objects_allocated: shared.objects_allocated.load(Ordering::Relaxed),
            bytes_freed: gc.bytes_freed + shared.lazy_freed_bytes.load(Ordering::Relaxed),
            objects_freed: gc.objects_freed + shared.lazy_freed_objects.load(Ordering::Relaxed),
            heap_bytes: ph.pages_in_use * PAGE_SIZE,
            peak_heap_bytes: ph.peak_pages_in_use * PAGE_SIZE,
            mapped_bytes: ph.mapped_bytes,
            live_bytes_after_last_gc: gc.live_bytes,
            live_objects_after_last_gc: gc.live_objects,
            next_gc_bytes: shared.next_gc.load(Ordering::Relaxed),
            resident_bytes: os::resident_bytes(),
            peak_resident_bytes: os::peak_resident_bytes().map(|hwm| hwm.max(gc.peak_resident_sampled)),
        }
    }

    fn check_world(&self, world: &StoppedWorld<'_>) {
        assert!(world.stops(&self.world), "gc: a StoppedWorld of another heap");
    }

    /// Calls `f` for every arena mapped so far (for observers attached after the heap was in use).
    pub fn for_each_arena(&self, world: &StoppedWorld<'_>, f: &mut dyn FnMut(&ArenaInfo)) {
        self.check_world(world);
        lock(&self.shared.page_heap).arenas().for_each(|a| f(&a));
    }

    /// Calls `f` for every in-use span (for heap snapshots), in the stopped `world`.
    pub fn for_each_span(&self, world: &StoppedWorld<'_>, f: &mut dyn FnMut(&SpanInfo)) {
        self.check_world(world);
        let _collector = lock(&self.shared.gc);
        let ph = lock(&self.shared.page_heap);
        for span in &ph.spans {
            // SAFETY: registered spans are alive while the page-heap lock is held.
            let s = unsafe { span.get() };
            // SAFETY: the world is stopped and the collector lock is held: nobody else touches the state.
            if unsafe { s.state() }.owner != Owner::Freed {
                f(&s.info());
            }
        }
    }

    /// Calls `f` for every allocated object (live, or dead but not yet swept: what was allocated since the
    /// last collection, and with a lazy sweep what it found dead in spans nobody has swept yet), in the
    /// stopped `world`.
    pub fn for_each_object(&self, world: &StoppedWorld<'_>, f: &mut dyn FnMut(&ObjectInfo)) {
        self.check_world(world);
        let _collector = lock(&self.shared.gc);
        let ph = lock(&self.shared.page_heap);
        for span in &ph.spans {
            // SAFETY: registered spans are alive while the page-heap lock is held.
            let s = unsafe { span.get() };
            // SAFETY: the world is stopped (no mutator allocates from a span it caches) and the collector
            // lock keeps cache drops and sweeps away, so nobody else touches the state.
            let st = unsafe { s.state() };
            if st.owner == Owner::Freed {
                continue;
            }
            for index in 0..s.nelems as usize {
                if st.is_allocated(index) && !st.is_quarantined(index) {
                    let addr = s.slot_addr(index);
                    // SAFETY: an allocated slot holds an initialised object; its header is readable.
                    let (type_id, len) = unsafe { read_header(addr) };
                    let bytes = self.shared.types.object_bytes(type_id, len);
                    f(&ObjectInfo { addr, size: s.elem_size, bytes, type_id, len });
                }
            }
        }
    }
}

impl fmt::Debug for Heap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Heap").field("config", &self.shared.config).finish_non_exhaustive()
    }
}
