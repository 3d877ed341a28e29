//! The collector: one stop-the-world mark-sweep cycle, and the `verify` debug checks.
//!
//! Steps (numbered as in the crate comment):
//! 1. `gc_begin`; lock the collector state and the page heap (no span can be created or freed meanwhile).
//! 2. Mark: every object root goes through [`Marker::mark`] (set its mark bit, push it on the mark stack);
//!    then the stack is drained, each popped object's reference fields (from its type's [`Layout`]) are
//!    marked in turn. The stack is a heap-allocated `Vec`, so depth of the object graph costs memory, never
//!    native stack: a 10-million-node list needs a stack of one entry at a time. The marker remembers the
//!    span of the last object it marked (objects allocated together are reached together), so most marks
//!    skip the chunk and page tables. (A FIFO prefetch queue between pop and scan was tried, December
//!    2026: it broke the depth-first order that follows allocation order, and marking binary-trees got
//!    about 1.5x slower.)
//! 3. Verify (debug): an independent traversal checks that everything reachable is marked and well formed.
//! 4. Sweep: report each allocated-but-unmarked slot (`object_free`), make the mark bits the alloc bits,
//!    return empty spans to the page heap (`span_free`), rebuild the central lists. Every span when the
//!    frees are observed or after a spike; otherwise only cached and large spans, the rest being left to
//!    the allocating threads (`sweep.rs`), and what they have not swept by the next cycle is swept at its
//!    start, before marking.
//! 5. Verify (debug): nothing reachable was freed.
//! 6. Pace: next goal = max(floor, live × (1 + gc_percent/100)).
//! 7. Scavenge: give free pages back to the OS beyond the retained budget.
//! 8. Statistics and `gc_end`.

use std::collections::HashSet;
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::arena::{ChunkTable, PageHeap, span_of};
use crate::inject::InjectedBug;
use crate::object::{HEADER_SIZE, read_header};
use crate::observer::{GcBeginInfo, GcEndInfo, HeapObserver, ObjectInfo, ObserverCtx, Observers};
use crate::os;
use crate::roots::RootSet;
use crate::shared::{Shared, lock};
use crate::size_class::{NUM_CLASSES, PAGE_SIZE};
use crate::span::{Owner, Span, SpanPtr};
use crate::sweep::finish_sweep;
use crate::types::{Layout, TypeInfo, TypeTable};
use crate::value::is_object;

/// Mark stacks beyond this many entries are shrunk after a cycle (so a one-off deep/wide graph does not pin
/// memory).
const MARK_STACK_KEEP: usize = 1 << 16;

/// Reads the reference-sized word at `addr + offset`.
///
/// # Safety
/// `addr` is an allocated object and `offset + 8` lies within it.
#[inline(always)]
unsafe fn read_field(addr: usize, offset: usize) -> u64 {
    // SAFETY: guaranteed by the caller; reference fields are 8-aligned.
    unsafe { ((addr + offset) as *const u64).read() }
}

struct Marker<'a> {
    stack: Vec<usize>,
    chunks: &'static ChunkTable,
    types: &'a TypeTable,
    live_objects: usize,
    live_bytes: usize,
    /// Planted bugs (`InjectedBug`); all false in real runs.
    bugs: MarkerBugs,
    /// The span of the last object marked (objects allocated together are marked together): its base,
    /// its length in bytes (0: none yet) and the span. Saves the chunk and page table walk.
    last_span: (usize, usize, Option<NonNull<Span>>),
}

#[derive(Default)]
struct MarkerBugs {
    /// `SkipMark` not yet done: the next object reached through a field is skipped.
    skip_armed: bool,
    /// The object skipped this cycle (0: none): it stays unmarked however often it is reached.
    skipped: usize,
    /// `ReadPastEnd`: read the word after every scanned object.
    read_past_end: bool,
}

impl MarkerBugs {
    fn any(&self) -> bool {
        self.skip_armed || self.skipped != 0 || self.read_past_end
    }
}

impl Marker<'_> {
    /// Marks the object at `addr` and queues it for scanning if it was not marked yet.
    #[inline]
    fn mark(&mut self, addr: usize) {
        let (base, len, cached) = self.last_span;
        let span = match cached {
            Some(span) if addr.wrapping_sub(base) < len => span,
            _ => self.lookup_span(addr),
        };
        // SAFETY: spans in the span table are alive; the world is stopped, so the collector has exclusive
        // access to every span's state.
        let span = unsafe { span.as_ref() };
        let index = span.index_of(addr);
        // SAFETY: as above.
        let st = unsafe { span.state() };
        debug_assert!(span.slot_addr(index) == addr && st.is_allocated(index), "gc: {addr:#x} is not an object");
        let (w, bit) = (index / 64, 1u64 << (index % 64));
        if st.mark_bits[w] & bit != 0 {
            return;
        }
        st.mark_bits[w] |= bit;
        self.live_objects += 1;
        self.live_bytes += span.elem_size;
        self.stack.push(addr);
    }

    /// The span of `addr` through the chunk and page tables, remembered for the next mark.
    #[inline(never)]
    fn lookup_span(&mut self, addr: usize) -> NonNull<Span> {
        let Some(span) = self.chunks.span_of(addr) else {
            panic!("gc: reference {addr:#x} does not point into the heap (a VM root or field is corrupt)")
        };
        // SAFETY: spans in the span table are alive; their shape never changes.
        let s = unsafe { span.as_ref() };
        self.last_span = (s.base, s.npages * PAGE_SIZE, Some(span));
        span
    }

    /// Marks an object reached through a field of another one.
    #[inline(always)]
    fn mark_field(&mut self, addr: usize, bugs: bool) {
        if bugs && self.skip_for_bug(addr) {
            return;
        }
        self.mark(addr);
    }

    /// `SkipMark`: whether to leave `addr` unmarked.
    #[cold]
    fn skip_for_bug(&mut self, addr: usize) -> bool {
        if self.bugs.skipped == addr {
            return true;
        }
        if !self.bugs.skip_armed {
            return false;
        }
        let span = self.chunks.span_of(addr);
        // SAFETY: as in `mark`.
        let marked = span.is_some_and(|s| unsafe {
            let s = s.as_ref();
            s.state().is_marked(s.index_of(addr))
        });
        if marked {
            return false;
        }
        self.bugs.skip_armed = false;
        self.bugs.skipped = addr;
        true
    }

    /// `ReadPastEnd`: the off-by-one read of the word after an object (when it is still inside the span).
    #[cold]
    fn read_past_end(&self, addr: usize, bytes: usize) -> u64 {
        let Some(span) = self.chunks.span_of(addr) else { return 0 };
        // SAFETY: spans in the span table are alive.
        let s = unsafe { span.as_ref() };
        let end = addr + bytes;
        if end + 8 > s.base + s.npages * PAGE_SIZE {
            return 0;
        }
        // SAFETY: (deliberately wrong, for negative controls) `end` lies inside the span's mapped pages, so
        // the read cannot fault; it is outside the object, which is the bug Memcheck must report.
        unsafe { (end as *const u64).read_volatile() }
    }

    /// Scans queued objects until the stack is empty.
    fn drain(&mut self) {
        let types = self.types;
        let bugs = self.bugs.any();
        let mut past_end = 0u64;
        // Objects of one type tend to come in runs (lists, trees, arrays of structs): remember the last one.
        let mut last: Option<(u32, &TypeInfo)> = None;
        while let Some(addr) = self.stack.pop() {
            // SAFETY: only marked (hence allocated, initialised) objects are pushed.
            let (type_id, len) = unsafe { read_header(addr) };
            let info = match last {
                Some((id, info)) if id == type_id => info,
                _ => {
                    let Some(info) = types.info(type_id) else {
                        panic!("gc: object {addr:#x} has unregistered type id {type_id} (heap corruption or VM bug)")
                    };
                    last = Some((type_id, info));
                    info
                }
            };
            match &info.layout {
                Layout::Struct { ref_offsets, .. } => {
                    for &off in ref_offsets.iter() {
                        // SAFETY: registered reference offsets lie inside the struct (checked at registration).
                        let v = unsafe { read_field(addr, off as usize) };
                        if is_object(v) {
                            self.mark_field(v as usize, bugs);
                        }
                    }
                }
                Layout::Array { elem_is_ref: true, .. } => {
                    for i in 0..len as usize {
                        // SAFETY: elements 0..len of 8 bytes follow the header of an allocated array.
                        let v = unsafe { read_field(addr, HEADER_SIZE + i * 8) };
                        if is_object(v) {
                            self.mark_field(v as usize, bugs);
                        }
                    }
                }
                Layout::Array { elem_is_ref: false, .. } => {}
            }
            if bugs && self.bugs.read_past_end {
                past_end ^= self.read_past_end(addr, info.layout.object_bytes(len) as usize);
            }
        }
        std::hint::black_box(past_end);
    }
}

#[derive(Default)]
struct SweepTotals {
    freed_objects: usize,
    freed_bytes: usize,
    /// Free slot bytes in spans held by thread caches (already counted as allocated by the pacer).
    cached_free_bytes: usize,
    /// `UseFreedSpan` did its write.
    wrote_freed_span: bool,
}

/// One cycle with the world stopped (the caller holds the `StoppedWorld`): `roots` are all of them, the
/// collecting mutator's and those the others published; `ctx` is the collecting thread's observer context.
pub(crate) fn collect(shared: &Shared, ctx: &ObserverCtx, roots: &mut dyn RootSet) {
    let start = Instant::now();
    let mut gc = lock(&shared.gc);
    let mut ph = lock(&shared.page_heap);
    // What the last cycle left to the mutators is swept now, with that cycle's marks.
    finish_sweep(shared, &mut ph, ctx);
    gc.objects_freed += shared.lazy_freed_objects.swap(0, Ordering::Relaxed);
    gc.bytes_freed += shared.lazy_freed_bytes.swap(0, Ordering::Relaxed);
    if let Some(reachable) = gc.pending_verify.take() {
        verify_after_sweep(&reachable);
    }
    gc.cycles += 1;
    let cycle = gc.cycles;
    let ctx = *ctx;
    let observers: Observers =
        if shared.hooks.load(Ordering::Relaxed) { shared.observers.snapshot().0 } else { Arc::new([]) };
    for o in observers.iter() {
        o.gc_begin(&ctx, &GcBeginInfo { cycle, heap_bytes: ph.pages_in_use * PAGE_SIZE });
    }

    // Mark.
    let verify = shared.config.verify;
    // The chunk table exists: it was mapped before the first arena (and without arenas nothing is marked).
    let Some(chunks) = ChunkTable::global() else { panic!("gc: the chunk table could not be mapped") };
    let mut marker = Marker {
        stack: std::mem::take(&mut gc.mark_stack),
        chunks,
        types: &shared.types,
        live_objects: 0,
        live_bytes: 0,
        last_span: (0, 0, None),
        bugs: MarkerBugs {
            skip_armed: shared.config.inject == Some(InjectedBug::SkipMark) && !gc.skip_mark_done,
            skipped: 0,
            read_past_end: shared.config.inject == Some(InjectedBug::ReadPastEnd),
        },
    };
    let mut root_objects = Vec::new();
    roots.visit_roots(&mut |raw| {
        if is_object(raw) {
            if verify {
                root_objects.push(raw);
            }
            marker.mark(raw as usize);
        }
    });
    marker.drain();
    if marker.bugs.skipped != 0 {
        gc.skip_mark_done = true;
    }
    let reachable = verify.then(|| verify_after_mark(&shared.types, &root_objects));

    // Sweep.
    let write_freed_span = shared.config.inject == Some(InjectedBug::UseFreedSpan) && !gc.freed_span_written;
    // The pacer's goal (step 6) and the memory the heap keeps (step 7) follow from what was marked.
    let live = marker.live_bytes;
    let goal = match shared.config.gc_percent {
        Some(p) => live.saturating_add(live.saturating_mul(p as usize) / 100).max(shared.config.min_heap_bytes),
        None => usize::MAX,
    };
    let retain_bytes = |in_use: usize| {
        let target = if goal == usize::MAX { in_use } else { goal.max(in_use) };
        target.saturating_add(target / 10)
    };
    // Lazy unless someone must see the frees now (`sweep.rs`), or the heap is larger than it will grow
    // to again (after a spike): then the garbage's pages go back to the OS in this cycle.
    let in_use = ph.pages_in_use * PAGE_SIZE;
    let lazy = !shared.hooks.load(Ordering::Relaxed)
        && !shared.quarantine
        && shared.config.inject.is_none()
        && in_use <= retain_bytes(goal);
    let totals = sweep(shared, &mut ph, &observers, &ctx, write_freed_span, lazy);
    gc.freed_span_written |= totals.wrote_freed_span;
    if let Some(reachable) = reachable {
        verify_after_sweep(&reachable);
        if lazy {
            gc.pending_verify = Some(reachable);
        }
    }

    // Pace.
    shared.next_gc.store(goal, Ordering::Relaxed);
    shared.heap_live.store(live + totals.cached_free_bytes, Ordering::Relaxed);

    // Scavenge: keep in-use + free-resident pages within 110% of what the heap will grow to before the
    // next collection; the rest goes back to the OS.
    let retain_pages = retain_bytes(ph.pages_in_use * PAGE_SIZE).div_ceil(PAGE_SIZE);
    if ph.pages_in_use + ph.free_resident_pages > retain_pages {
        // The kernel's VmHWM is not always raised before MADV_DONTNEED drops pages, so sample the
        // resident size while it is still at its peak.
        if let Some(rss) = os::resident_bytes() {
            gc.peak_resident_sampled = gc.peak_resident_sampled.max(rss);
        }
        ph.scavenge(retain_pages);
    }

    // Statistics.
    let mut stack = marker.stack;
    if stack.capacity() > MARK_STACK_KEEP {
        stack.shrink_to(MARK_STACK_KEEP);
    }
    gc.mark_stack = stack;
    let pause = start.elapsed();
    gc.total_pause += pause;
    gc.max_pause = gc.max_pause.max(pause);
    gc.bytes_freed += totals.freed_bytes as u64;
    gc.objects_freed += totals.freed_objects as u64;
    gc.live_bytes = live;
    gc.live_objects = marker.live_objects;
    let end = GcEndInfo {
        cycle,
        live_bytes: live,
        live_objects: marker.live_objects,
        freed_bytes: totals.freed_bytes,
        freed_objects: totals.freed_objects,
        heap_bytes: ph.pages_in_use * PAGE_SIZE,
        next_gc_bytes: goal,
        pause,
    };
    for o in observers.iter() {
        o.gc_end(&ctx, &end);
    }
}

/// Sweeps every span (step 4): all of them now, or with `lazy` only those thread caches hold and large
/// ones, the others going to their class's unswept list (`sweep.rs`). Destroys tombstones.
fn sweep(
    shared: &Shared,
    ph: &mut PageHeap,
    observers: &Observers,
    ctx: &ObserverCtx,
    write_freed_span: bool,
    lazy: bool,
) -> SweepTotals {
    let mut totals = SweepTotals::default();
    let mut central: Vec<Vec<SpanPtr>> = vec![Vec::new(); NUM_CLASSES];
    let mut unswept: Vec<Vec<SpanPtr>> = vec![Vec::new(); NUM_CLASSES];
    let mut unswept_count = 0;
    let spans = std::mem::take(&mut ph.spans);
    let mut kept = Vec::with_capacity(spans.len());
    for span in spans {
        // SAFETY: registered spans are alive; the world is stopped and the page heap is locked, so the
        // collector has exclusive access to every span's state.
        let s: &Span = unsafe { span.get() };
        // SAFETY: as above.
        let st = unsafe { s.state() };
        if st.owner == Owner::Freed {
            // SAFETY: a tombstone: its pages went back when a mutator swept it empty, and only the
            // registry (which drops it here) still refers to it.
            unsafe { span.destroy() };
            continue;
        }
        if lazy && st.owner != Owner::InCache && s.class != 0 {
            st.owner = Owner::Unswept;
            unswept[s.class as usize].push(span);
            unswept_count += 1;
            kept.push(span);
            continue;
        }
        let freed = sweep_span(shared, s, observers, ctx);
        totals.freed_objects += freed;
        totals.freed_bytes += freed * s.elem_size;
        let live = st.alloc_count as usize;
        let nelems = s.nelems as usize;
        match st.owner {
            Owner::InCache => {
                totals.cached_free_bytes += (nelems - live) * s.elem_size;
                kept.push(span);
            }
            _ if live == 0 => {
                let info = s.info();
                for o in observers.iter() {
                    o.span_free(ctx, &info);
                }
                ph.free_span(span);
                if write_freed_span && !totals.wrote_freed_span {
                    totals.wrote_freed_span = true;
                    // SAFETY: (deliberately wrong, for negative controls) the pages are still mapped, and a
                    // freed span's pages are zeroed before reuse, so the write cannot fault or corrupt an
                    // object; using memory after giving it back is the bug Memcheck must report.
                    unsafe { (info.base as *mut u64).write_volatile(0xdead_beef) };
                }
            }
            _ if live < nelems => {
                st.owner = Owner::Central;
                central[s.class as usize].push(span);
                kept.push(span);
            }
            _ => {
                st.owner = Owner::Full;
                kept.push(span);
            }
        }
    }
    ph.spans = kept;
    for (class, list) in central.into_iter().enumerate().skip(1) {
        *lock(&shared.central[class]) = list;
    }
    for (class, list) in unswept.into_iter().enumerate().skip(1) {
        *lock(&shared.unswept[class]) = list;
    }
    shared.unswept_count.store(unswept_count, Ordering::Relaxed);
    totals
}

/// Frees the unmarked objects of one span and resets its bitmaps. Returns the number of objects freed.
/// The caller has the span to itself (the collector, or a mutator that popped it from an unswept list).
pub(crate) fn sweep_span(shared: &Shared, s: &Span, observers: &[Arc<dyn HeapObserver>], ctx: &ObserverCtx) -> usize {
    // SAFETY: the caller has the span to itself (see above).
    let st = unsafe { s.state() };
    shared.flush_counts(s, st);
    let mut freed = 0;
    let quarantine = !st.quarantine.is_empty();
    for w in 0..st.mark_bits.len() {
        // Slots quarantined by the last sweep hold no object: they are released now, silently.
        let held = if quarantine { st.quarantine[w] } else { 0 };
        let dead = st.allocated_word(w, s.nelems) & !st.mark_bits[w] & !held;
        if quarantine {
            // The newly dead stay allocated (so nobody reuses them) until the next sweep.
            st.quarantine[w] = dead;
            st.mark_bits[w] |= dead;
        }
        if dead == 0 {
            continue;
        }
        freed += dead.count_ones() as usize;
        let mut bits = dead;
        while bits != 0 && !observers.is_empty() {
            let addr = s.slot_addr(w * 64 + bits.trailing_zeros() as usize);
            bits &= bits - 1;
            // SAFETY: the slot is allocated (its header was written); the observers learn of its death
            // only after this read.
            let (type_id, len) = unsafe { read_header(addr) };
            let bytes = shared.types.object_bytes(type_id, len);
            let info = ObjectInfo { addr, size: s.elem_size, bytes, type_id, len };
            for o in observers.iter() {
                o.object_free(ctx, &info);
            }
        }
    }
    st.reset_after_sweep(s.nelems);
    if freed > 0 {
        st.needzero = true;
    }
    freed
}

/// Step 3: walks the graph again from the roots, independently of the mark bits, and checks every
/// reachable reference: it points into the heap, at the start of an allocated slot, the object is marked,
/// its type id is registered, its size fits its slot, and its reference fields hold valid encodings.
/// Returns the reachable objects with their headers.
fn verify_after_mark(types: &TypeTable, roots: &[u64]) -> Vec<(usize, (u32, u32))> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    // (reference, referring object or 0 for a root, field offset)
    let mut stack: Vec<(u64, usize, usize)> = roots.iter().map(|&r| (r, 0, 0)).collect();
    while let Some((raw, parent, offset)) = stack.pop() {
        let addr = raw as usize;
        let what = || {
            if parent == 0 {
                format!("root {addr:#x}")
            } else {
                format!("reference {addr:#x} at offset {offset} of object {parent:#x}")
            }
        };
        let Some(span) = span_of(addr) else { panic!("gc verify: {} does not point into the heap", what()) };
        // SAFETY: spans in the span table are alive; the world is stopped.
        let s = unsafe { span.as_ref() };
        let index = s.index_of(addr);
        assert!(s.slot_addr(index) == addr, "gc verify: {} points inside slot {index}, not at a header", what());
        // SAFETY: as above; the collector has exclusive access.
        let st = unsafe { s.state() };
        assert!(st.is_allocated(index), "gc verify: {} points at a free slot", what());
        assert!(!st.is_quarantined(index), "gc verify: {} points at an object freed by the last sweep", what());
        assert!(st.is_marked(index), "gc verify: {} is reachable but was not marked", what());
        if !seen.insert(addr) {
            continue;
        }
        // SAFETY: the slot is allocated.
        let (type_id, len) = unsafe { read_header(addr) };
        let Some(info) = types.info(type_id) else {
            panic!("gc verify: {} has unregistered type id {type_id}", what())
        };
        let (size, refs): (usize, Vec<usize>) = match &info.layout {
            Layout::Struct { size, ref_offsets } => {
                assert!(len == 0, "gc verify: struct {} has length {len} in its header", what());
                (HEADER_SIZE + *size as usize, ref_offsets.iter().map(|&o| o as usize).collect())
            }
            Layout::Array { elem_size, elem_is_ref } => {
                let refs = if *elem_is_ref { (0..len as usize).map(|i| HEADER_SIZE + 8 * i).collect() } else { vec![] };
                (HEADER_SIZE + len as usize * *elem_size as usize, refs)
            }
        };
        assert!(
            size <= s.elem_size,
            "gc verify: {} of type {type_id} ({size} bytes) overflows its {}-byte slot",
            what(),
            s.elem_size
        );
        for off in refs {
            // SAFETY: `off + 8 <= size <= slot size`, inside the allocated object.
            let v = unsafe { read_field(addr, off) };
            assert!(
                v & 0b111 != 0b110,
                "gc verify: field at offset {off} of {:#x} holds invalid reference bits {v:#x}",
                addr
            );
            if is_object(v) {
                stack.push((v, addr, off));
            }
        }
        out.push((addr, (type_id, len)));
    }
    out
}

/// Step 5: every object reachable before the sweep is still allocated, with its header intact.
fn verify_after_sweep(reachable: &[(usize, (u32, u32))]) {
    for &(addr, header) in reachable {
        let Some(span) = span_of(addr) else {
            panic!("gc verify: reachable object {addr:#x} lost its span in the sweep")
        };
        // SAFETY: spans in the span table are alive; the world is stopped.
        let s = unsafe { span.as_ref() };
        // SAFETY: as above.
        let st = unsafe { s.state() };
        let index = s.index_of(addr);
        assert!(
            st.is_allocated(index) && !st.is_quarantined(index),
            "gc verify: reachable object {addr:#x} was freed by the sweep"
        );
        // SAFETY: the slot is still allocated (just checked).
        let now = unsafe { read_header(addr) };
        assert!(now == header, "gc verify: header of reachable object {addr:#x} changed during the sweep");
    }
}
