//! `Heap`: the public face of the allocator, its configuration, errors and statistics, and the allocation
//! paths (fast path inline, refill and large objects out of line). The collector is in `collect.rs`.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use crate::arena::{PageAllocError, PageHeap};
use crate::cache::ThreadCache;
use crate::inject::InjectedBug;
use crate::memcheck::MemcheckAnnotator;
use crate::object::ObjRef;
use crate::observer::{ArenaInfo, HeapObserver, ObjectInfo, SpanInfo};
use crate::size_class::{MAX_SMALL_SIZE, NUM_CLASSES, SIZE_CLASSES, class_for_size};
use crate::span::{Owner, Span, SpanPtr};
use crate::types::{AllocInfo, Layout, TypeTable};
use crate::{HEADER_SIZE, PAGE_SIZE, os};

/// Under Memcheck, the bytes left no-access after every object (it takes a larger slot). Memcheck names a
/// bad address by the nearest *live* block within 16 bytes before it looks at freed ones, so without this
/// gap a read of a swept object between two live neighbours would be described as "8 bytes before a block
/// … alloc'd" rather than "inside a block … free'd", and a read past an object's end could land in the next
/// object unseen.
const MEMCHECK_SLACK: usize = 32;

/// Objects larger than this are refused with `OutOfMemory` without asking the OS (1 TiB).
pub const MAX_OBJECT_BYTES: usize = 1 << 40;

/// Heap policy and debug switches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeapConfig {
    /// GOGC: the next collection is due when the heap reaches `live_after_last_gc × (1 + gc_percent/100)`.
    /// `None` turns pacing off (collections happen only when `max_heap_bytes` is reached or the VM calls
    /// `collect` on its own). Default `Some(100)`.
    pub gc_percent: Option<u32>,
    /// The pacing goal never drops below this, so a small live set does not collect constantly.
    /// Default 4 MiB.
    pub min_heap_bytes: usize,
    /// Hard limit on the bytes held by in-use spans. An allocation that would exceed it asks for a
    /// collection first and then fails with [`AllocError::OutOfMemory`]. Default `None`.
    pub max_heap_bytes: Option<usize>,
    /// Debug: ask for a collection every N allocations that may collect (1 = before every one of them).
    pub stress_every: Option<u64>,
    /// Debug: check the heap after marking and after sweeping (see `collect.rs`); panics on a violation.
    pub verify: bool,
    /// Describe the heap to Memcheck when the process runs under Valgrind (see `memcheck.rs`): checked once,
    /// in [`Heap::new`]; natively it costs nothing. Also turns on the sweep's quarantine. Default `true`.
    pub valgrind: bool,
    /// Test only: plant a collector bug (negative controls for the Memcheck suite; see [`InjectedBug`]).
    pub inject: Option<InjectedBug>,
}

impl Default for HeapConfig {
    fn default() -> Self {
        HeapConfig {
            gc_percent: Some(100),
            min_heap_bytes: 4 << 20,
            max_heap_bytes: None,
            stress_every: None,
            verify: false,
            valgrind: true,
            inject: None,
        }
    }
}

/// Why an allocation did not return an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AllocError {
    /// The pacer (or stress mode, or the heap limit) wants a collection first. Only returned when the caller
    /// passed `may_collect = true`: collect, then retry with `may_collect = false`.
    CollectionNeeded,
    /// The allocation cannot be satisfied even after a collection. `limit` is the configured maximum heap
    /// size, or, when the OS refused memory (or the object is absurdly large) and no limit is set, the heap
    /// size reached at that point.
    OutOfMemory { limit: usize },
}

impl fmt::Display for AllocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AllocError::CollectionNeeded => write!(f, "a garbage collection is needed before this allocation"),
            AllocError::OutOfMemory { limit } => write!(f, "out of memory: heap limit {} reached", human_bytes(*limit)),
        }
    }
}

impl std::error::Error for AllocError {}

/// `64 MiB`, `1.5 GiB`, `12345 bytes`.
pub fn human_bytes(n: usize) -> String {
    const UNITS: [(usize, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    for (unit, name) in UNITS {
        if n >= unit {
            return if n.is_multiple_of(unit) {
                format!("{} {name}", n / unit)
            } else {
                format!("{:.1} {name}", n as f64 / unit as f64)
            };
        }
    }
    format!("{n} bytes")
}

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

/// The VM's roots: it calls `visit(raw)` for every reference-typed slot (value stacks, locals, globals,
/// tables, host handles). Non-object values (null, i31, host, func) are ignored by the heap.
pub trait RootSet {
    fn visit_roots(&mut self, visit: &mut dyn FnMut(u64));
}

impl RootSet for Vec<u64> {
    fn visit_roots(&mut self, visit: &mut dyn FnMut(u64)) {
        self.iter().for_each(|&r| visit(r));
    }
}

impl RootSet for &[u64] {
    fn visit_roots(&mut self, visit: &mut dyn FnMut(u64)) {
        self.iter().for_each(|&r| visit(r));
    }
}

pub(crate) type Observers = Arc<[Arc<dyn HeapObserver>]>;

/// Counters the collector keeps between cycles (under `Shared::gc`).
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
}

/// Everything the heap and its thread caches share.
pub(crate) struct Shared {
    pub config: HeapConfig,
    pub types: TypeTable,
    /// Lock order: `gc` → `page_heap` → `central[_]`. Mutators never hold `central` and `page_heap` together.
    pub page_heap: Mutex<PageHeap>,
    /// Per size class: spans with free slots that no cache holds.
    pub central: Box<[Mutex<Vec<SpanPtr>>]>,
    pub gc: Mutex<GcState>,
    /// True when the instrumented allocation path must run (observers attached or stress mode).
    pub hooks: AtomicBool,
    /// Set when the process runs under Valgrind: the Memcheck annotations (also in the observer list), so
    /// the heap's drop can free every span and destroy the pools.
    pub memcheck: Option<Arc<MemcheckAnnotator>>,
    /// Swept slots wait one cycle before reuse (`span.rs`); on when `memcheck` is.
    pub quarantine: bool,
    observers: RwLock<(Observers, u64)>,
    observer_gen: AtomicU64,
    /// Slot bytes allocated or reserved by caches since the last sweep, plus the live bytes it left.
    pub heap_live: AtomicUsize,
    /// Pacing goal: a collection is requested when `heap_live` would exceed it.
    pub next_gc: AtomicUsize,
    pub bytes_allocated: AtomicU64,
    pub objects_allocated: AtomicU64,
    next_thread_id: AtomicU32,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Zeroes the slot (if needed) and writes the header.
///
/// # Safety
/// `addr..addr + slot` is a slot just taken from a span for this allocation (not visible to anyone else).
#[inline(always)]
unsafe fn init_object(addr: usize, slot: usize, needzero: bool, type_id: u32, len: u32) -> ObjRef {
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
        p.write((type_id as u64 | (len as u64) << 32).to_le());
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
fn array_bytes(elem_size: usize, len: u32) -> Option<usize> {
    let bytes = (HEADER_SIZE as u64 + len as u64 * elem_size as u64).next_multiple_of(8);
    if bytes > MAX_OBJECT_BYTES as u64 { None } else { Some(bytes as usize) }
}

impl Shared {
    pub fn observers_snapshot(&self) -> (Observers, u64) {
        let guard = self.observers.read().unwrap_or_else(PoisonError::into_inner);
        (guard.0.clone(), guard.1)
    }

    /// Refreshes the cache's copy of the observer list if observers were added since it was taken.
    #[inline]
    fn refresh_observers(&self, cache: &mut ThreadCache) {
        if self.observer_gen.load(Ordering::Acquire) != cache.observer_gen {
            (cache.observers, cache.observer_gen) = self.observers_snapshot();
        }
    }

    fn oom(&self) -> AllocError {
        let limit = self.config.max_heap_bytes.unwrap_or_else(|| lock(&self.page_heap).pages_in_use * PAGE_SIZE);
        AllocError::OutOfMemory { limit }
    }

    fn page_error(&self, e: PageAllocError, may_collect: bool) -> AllocError {
        match e {
            _ if may_collect => AllocError::CollectionNeeded,
            PageAllocError::LimitReached => {
                AllocError::OutOfMemory { limit: self.config.max_heap_bytes.unwrap_or(usize::MAX) }
            }
            PageAllocError::MapFailed => self.oom(),
        }
    }

    fn pacer_wants_gc(&self, extra: usize) -> bool {
        self.heap_live.load(Ordering::Relaxed).saturating_add(extra) > self.next_gc.load(Ordering::Relaxed)
    }

    /// Brings the allocation counters up to date with a span this thread owns.
    pub fn flush_counts(&self, span: &Span, st: &mut crate::span::SpanState) {
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
        let span = match popped {
            Some(span) => span,
            None => {
                let mut new_arena = None;
                let q = self.quarantine;
                let made = lock(&self.page_heap)
                    .alloc_span(sc.npages as usize, &mut new_arena, |base, nz| Span::new_small(base, class, nz, q));
                let span = made.map_err(|e| self.page_error(e, may_collect))?;
                self.report_new_span(cache, new_arena, span);
                span
            }
        };
        // SAFETY: the span was just popped from the central list or created: nobody else holds it.
        let s = unsafe { span.get() };
        // SAFETY: as above.
        let st = unsafe { s.state() };
        st.owner = Owner::InCache;
        self.heap_live.fetch_add((s.nelems - st.alloc_count) as usize * s.elem_size, Ordering::Relaxed);
        cache.spans[class] = std::ptr::NonNull::from(s);
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
        let mut new_arena = None;
        let q = self.quarantine;
        let made = lock(&self.page_heap)
            .alloc_span(npages, &mut new_arena, |base, nz| Span::new_large(base, npages, size, nz, q));
        let span = made.map_err(|e| self.page_error(e, may_collect))?;
        self.heap_live.fetch_add(size, Ordering::Relaxed);
        self.objects_allocated.fetch_add(1, Ordering::Relaxed);
        self.bytes_allocated.fetch_add(size as u64, Ordering::Relaxed);
        self.report_new_span(cache, new_arena, span);
        // SAFETY: the span was just created for this object.
        let s = unsafe { span.get() };
        // SAFETY: as above; nobody else refers to it yet.
        let needzero = unsafe { s.state().needzero };
        Ok((s.base, needzero, size))
    }

    fn report_new_span(&self, cache: &mut ThreadCache, new_arena: Option<ArenaInfo>, span: SpanPtr) {
        if !self.hooks.load(Ordering::Relaxed) {
            return;
        }
        self.refresh_observers(cache);
        // SAFETY: the span was just created and is alive.
        let info = unsafe { span.get() }.info();
        for o in cache.observers.iter() {
            if let Some(arena) = &new_arena {
                o.arena_map(&cache.ctx, arena);
            }
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
    fn alloc_slow(
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
    fn alloc_instrumented(
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
        self.refresh_observers(cache);
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
    fn struct_info(&self, type_id: u32) -> AllocInfo {
        match self.types.alloc_info(type_id) {
            Some(info) if info.is_struct() => info,
            _ => bad_type(type_id, "struct"),
        }
    }

    #[inline(always)]
    fn array_info(&self, type_id: u32) -> AllocInfo {
        match self.types.alloc_info(type_id) {
            Some(info) if info.is_array() => info,
            _ => bad_type(type_id, "array"),
        }
    }
}

/// The garbage-collected heap. `Send + Sync`: share it between mutator threads (e.g. in an `Arc`), each
/// allocating through its own [`ThreadCache`].
pub struct Heap {
    pub(crate) shared: Arc<Shared>,
}

const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Heap>();
};

impl Heap {
    pub fn new(config: HeapConfig) -> Heap {
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
        Heap {
            shared: Arc::new(Shared {
                types: TypeTable::new(),
                page_heap: Mutex::new(PageHeap::new(config.max_heap_bytes)),
                central: (0..NUM_CLASSES).map(|_| Mutex::new(Vec::new())).collect(),
                gc: Mutex::new(GcState::default()),
                hooks: AtomicBool::new(hooks),
                quarantine: memcheck.is_some(),
                memcheck,
                observers: RwLock::new((observers, 0)),
                observer_gen: AtomicU64::new(0),
                heap_live: AtomicUsize::new(0),
                next_gc: AtomicUsize::new(next_gc),
                bytes_allocated: AtomicU64::new(0),
                objects_allocated: AtomicU64::new(0),
                next_thread_id: AtomicU32::new(1),
                config,
            }),
        }
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

    /// Allocates a struct of `type_id` (registered as [`Layout::Struct`]): zeroed, header written.
    ///
    /// With `may_collect`, returns `Err(CollectionNeeded)` when a collection is due: the VM collects (with
    /// its mutators stopped) and retries with `may_collect = false`, which grows the heap or returns
    /// `OutOfMemory`. `cache` must come from this heap. Panics if the type is not a registered struct.
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
    /// written. Same protocol as [`Heap::alloc_struct`]; a size beyond [`MAX_OBJECT_BYTES`] (or the heap
    /// limit) is `OutOfMemory`.
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

    /// Runs a full stop-the-world collection with the VM's roots.
    ///
    /// **Contract:** no other thread uses this heap (allocates, drops a cache, touches objects) until
    /// `collect` returns: the VM stops its mutators at safepoints first. `cache` is the collecting thread's
    /// cache (its id goes to observers).
    pub fn collect(&self, cache: &mut ThreadCache, roots: &mut dyn RootSet) {
        debug_assert!(Arc::ptr_eq(&cache.shared, &self.shared), "gc: ThreadCache used with another heap");
        crate::collect::collect(&self.shared, cache, roots);
    }

    /// Attaches an observer. Attach observers before mutators start: a thread already inside an allocation
    /// may miss the first events.
    pub fn add_observer(&self, obs: Arc<dyn HeapObserver>) {
        let shared = &*self.shared;
        let mut guard = shared.observers.write().unwrap_or_else(PoisonError::into_inner);
        let mut list: Vec<Arc<dyn HeapObserver>> = guard.0.iter().cloned().collect();
        list.push(obs);
        guard.0 = list.into();
        guard.1 += 1;
        shared.observer_gen.store(guard.1, Ordering::Release);
        shared.hooks.store(true, Ordering::Release);
    }

    /// The VM created a stack (`base`, `size` bytes) for the thread owning `cache`.
    pub fn notify_stack_alloc(&self, cache: &mut ThreadCache, base: usize, size: usize) {
        if self.shared.hooks.load(Ordering::Relaxed) {
            self.shared.refresh_observers(cache);
            for o in cache.observers.iter() {
                o.stack_alloc(&cache.ctx, base, size);
            }
        }
    }

    /// The VM dropped a stack it reported with [`Heap::notify_stack_alloc`].
    pub fn notify_stack_free(&self, cache: &mut ThreadCache, base: usize, size: usize) {
        if self.shared.hooks.load(Ordering::Relaxed) {
            self.shared.refresh_observers(cache);
            for o in cache.observers.iter() {
                o.stack_free(&cache.ctx, base, size);
            }
        }
    }

    /// Statistics, with the allocations `cache` made since its spans were last counted included (the
    /// counters are brought up to date lazily: when a span leaves a cache and at each collection).
    pub fn stats_for(&self, cache: &mut ThreadCache) -> GcStats {
        for &span in cache.spans.iter() {
            if !cache.is_sentinel(span) {
                // SAFETY: the cache owns its current spans (Owner::InCache), and `&mut` on the cache means
                // no allocation on it is in progress.
                let s = unsafe { span.as_ref() };
                // SAFETY: as above.
                self.shared.flush_counts(s, unsafe { s.state() });
            }
        }
        self.stats()
    }

    /// Statistics as of the last time every span was counted; see [`Heap::stats_for`].
    pub fn stats(&self) -> GcStats {
        let shared = &*self.shared;
        let gc = lock(&shared.gc);
        let ph = lock(&shared.page_heap);
        GcStats {
            collections: gc.cycles,
            total_pause: gc.total_pause,
            max_pause: gc.max_pause,
            bytes_allocated: shared.bytes_allocated.load(Ordering::Relaxed),
            objects_allocated: shared.objects_allocated.load(Ordering::Relaxed),
            bytes_freed: gc.bytes_freed,
            objects_freed: gc.objects_freed,
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

    /// Calls `f` for every arena mapped so far (for observers attached after the heap was in use).
    pub fn for_each_arena(&self, f: &mut dyn FnMut(&ArenaInfo)) {
        lock(&self.shared.page_heap).arenas().for_each(|a| f(&a));
    }

    /// Calls `f` for every in-use span (for heap snapshots). Same contract as [`Heap::collect`]: the
    /// mutators are stopped.
    pub fn for_each_span(&self, f: &mut dyn FnMut(&SpanInfo)) {
        let ph = lock(&self.shared.page_heap);
        for span in &ph.spans {
            // SAFETY: registered spans are alive while the page-heap lock is held.
            f(&unsafe { span.get() }.info());
        }
    }

    /// Calls `f` for every allocated object (live, or dead but not yet swept: with an eager sweep that is
    /// only what was allocated since the last collection). Same contract as [`Heap::collect`].
    pub fn for_each_object(&self, f: &mut dyn FnMut(&ObjectInfo)) {
        let ph = lock(&self.shared.page_heap);
        for span in &ph.spans {
            // SAFETY: registered spans are alive while the page-heap lock is held.
            let s = unsafe { span.get() };
            // SAFETY: the mutators are stopped (contract), so nobody else touches the state.
            let st = unsafe { s.state() };
            for index in 0..s.nelems as usize {
                if st.is_allocated(index) && !st.is_quarantined(index) {
                    let addr = s.slot_addr(index);
                    // SAFETY: an allocated slot holds an initialised object; its header is readable.
                    let header = u64::from_le(unsafe { (addr as *const u64).read() });
                    let (type_id, len) = (header as u32, (header >> 32) as u32);
                    let bytes = self.shared.types.object_bytes(type_id, len);
                    f(&ObjectInfo { addr, size: s.elem_size, bytes, type_id, len });
                }
            }
        }
    }

    /// The slot size of a live object.
    pub fn object_size(&self, obj: ObjRef) -> usize {
        obj.slot_size()
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

impl fmt::Debug for Heap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Heap").field("config", &self.shared.config).finish_non_exhaustive()
    }
}
