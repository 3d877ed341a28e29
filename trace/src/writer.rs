//! The write side: [`Tracer`], a [`gc::HeapObserver`] that turns heap events into batches.
//!
//! **Slots.** One `Slot` per heap thread id (lazily allocated chunks of 256, so ids up to
//! [`MAX_THREADS`]). A slot holds the thread's open batch ([`BatchEncoder`], a 64 KiB `Vec` from the system
//! allocator), its current allocation site (written by the VM, read by `object_alloc`) and a state byte:
//!
//! - `IDLE`: nobody is in the slot.
//! - `WRITING`: the owning thread is encoding one event. Seeing this on entry means the tracer was re-entered
//!   from inside itself on the same heap thread (or two OS threads share an id): the event is dropped and
//!   counted, or, with [`TraceConfig::check_reentrancy`], the tracer panics.
//! - `HELD`: a generation switch or `finish` holds the slot to flush it. A writer on another OS thread waits
//!   (yields) until it is released; the thread doing the switch treats it as re-entry.
//! - `CLOSED`: the trace is finished; events are dropped.
//!
//! **Write path** (`Tracer::write`): one compare-and-swap `IDLE → WRITING` on a cache line only this thread
//! writes, read the clock, encode into the open batch (no allocation unless a new batch starts), store
//! `IDLE`. If the batch was full it is taken out first and, after the slot is released, pushed on the output
//! queue. Nothing inside the `WRITING` window calls into the heap, the VM, a lock or the sink, which is what
//! makes the tracer safe to call from inside allocation, sweep and stack growth.
//!
//! **Output** (`Output`): finished records go to a queue (a mutex held only for a `Vec::push`); whoever
//! pushes tries to take the sink lock and drains the queue into the `Write`. A thread that finds the sink
//! busy leaves its record for the current drainer (or the next push, or `finish`). Records therefore reach
//! the file in push order.
//!
//! **Generations** (`Tracer::advance_generation`): at a safe point chosen by the VM (world stopped, which
//! [`StoppedHeap`] carries the proof of): hold every slot, flush their batches, write `GenEnd`, bump the
//! generation, write `GenStart`, the string, type and site tables, and a snapshot batch (thread 0) with a
//! `*Exists` event for every live thread, stack, span and object ([`HeapWalk`]), then release the slots.

use std::cell::UnsafeCell;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, TryLockError};
use std::thread::{self, ThreadId};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gc::observer::{ArenaInfo, GcBeginInfo, GcEndInfo, HeapObserver, ObjectInfo, ObserverCtx, SpanInfo};

use crate::clock::Clock;
use crate::event::{BatchEncoder, GcEnd, Span, begin_record, end_record};
use crate::format::{HEADER_LEN, MAGIC, OBJ_SHIFT, RecordKind, VERSION, put_uvarint};

/// Heap thread ids at or above this are not traced (their events are counted as lost).
pub const MAX_THREADS: u32 = (CHUNK * CHUNKS) as u32;
const CHUNK: usize = 256;
const CHUNKS: usize = 64;

const IDLE: u8 = 0;
const WRITING: u8 = 1;
const HELD: u8 = 2;
const CLOSED: u8 = 3;

/// How the tracer behaves.
#[derive(Clone, Debug)]
pub struct TraceConfig {
    /// [`Tracer::maybe_advance_generation`] starts a new generation after this much time...
    pub generation_period: Duration,
    /// ... or after this many bytes of records in the current generation.
    pub generation_bytes: u64,
    /// The address ids are relative to. `None`: the first arena (or span) the heap reports.
    pub heap_base: Option<u64>,
    /// Panic when the tracer is re-entered on one heap thread instead of dropping the event (Go's
    /// `debugTraceReentrancy`). On by default in debug builds.
    pub check_reentrancy: bool,
    /// A clock to read instead of the monotonic clock (ns since the trace started), for deterministic tests;
    /// it also stands in for the wall clock in `GenStart`.
    pub manual_clock: Option<Arc<AtomicU64>>,
}

impl Default for TraceConfig {
    fn default() -> Self {
        TraceConfig {
            generation_period: Duration::from_secs(1),
            generation_bytes: 16 << 20,
            heap_base: None,
            check_reentrancy: cfg!(debug_assertions),
            manual_clock: None,
        }
    }
}

/// An allocation site, as [`Tracer::define_site`] records it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SiteDesc<'a> {
    /// The function's name (from the name section), e.g. `$make_tree`.
    pub function: &'a str,
    /// Byte offset of the allocating instruction in the module's code section.
    pub wasm_offset: u64,
    /// `(file, line, col)` where the DWARF line table knows the instruction.
    pub location: Option<(&'a str, u32, u32)>,
}

/// What a snapshot walks: the spans and objects of a heap that does not change meanwhile. For the real
/// heap that is [`StoppedHeap`] (the world is stopped); tests walk models.
pub trait HeapWalk {
    fn for_each_span(&self, f: &mut dyn FnMut(&SpanInfo));
    /// Every allocated object (live, or dead and not yet swept).
    fn for_each_object(&self, f: &mut dyn FnMut(&ObjectInfo));
}

/// A [`gc::Heap`] with its world stopped: the heap's walks need the [`gc::StoppedWorld`] token, and a new
/// generation's snapshot is taken at such a safe point (e.g. right after a collection, before the token is
/// dropped).
pub struct StoppedHeap<'a> {
    pub heap: &'a gc::Heap,
    pub world: &'a gc::StoppedWorld<'a>,
}

impl HeapWalk for StoppedHeap<'_> {
    fn for_each_span(&self, f: &mut dyn FnMut(&SpanInfo)) {
        self.heap.for_each_span(self.world, f)
    }

    fn for_each_object(&self, f: &mut dyn FnMut(&ObjectInfo)) {
        self.heap.for_each_object(self.world, f)
    }
}

/// A heap with nothing in it: the snapshot of the first generation when the tracer is attached first.
pub struct EmptyHeap;

impl HeapWalk for EmptyHeap {
    fn for_each_span(&self, _f: &mut dyn FnMut(&SpanInfo)) {}
    fn for_each_object(&self, _f: &mut dyn FnMut(&ObjectInfo)) {}
}

/// Counters, from [`Tracer::stats`] and [`Tracer::finish`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceStats {
    /// Events encoded (snapshot events included).
    pub events: u64,
    /// Bytes handed to the sink (file header included).
    pub bytes: u64,
    pub batches: u64,
    pub generations: u64,
    /// Events dropped: re-entry without `check_reentrancy`, or a thread id ≥ [`MAX_THREADS`].
    pub lost: u64,
    /// The clock events are timed with: `tsc`, `monotonic` or `manual`.
    pub clock: &'static str,
}

// ---------------------------------------------------------------------------------------------------------

struct Slot {
    state: AtomicU8,
    /// Set once the thread's start was recorded and until its end: the snapshot lists these.
    alive: AtomicBool,
    /// The VM's current allocation site for this thread ([`Tracer::set_current_site`]).
    site: AtomicU32,
    buf: UnsafeCell<SlotBuf>,
}

#[derive(Default)]
struct SlotBuf {
    enc: Option<BatchEncoder>,
    started: bool,
    /// Time of the thread's last event: its clock never goes back, and sweep frees reuse it.
    last_ns: u64,
}

/// How an event is timed.
#[derive(Clone, Copy)]
enum Stamp {
    /// Read the clock.
    Now,
    /// Reuse the thread's last time. Frees come only from the sweep, between the collector's timed
    /// `gc_begin` and `gc_end` with the world stopped, so the time of the previous event (the `gc_begin` or
    /// the previous free) orders them correctly against every thread and saves a clock read per freed
    /// object, half of all events in a collected program.
    Sweep,
}

// SAFETY: `buf` is only accessed by whoever moved `state` away from `IDLE` with a successful compare-and-swap
// (`Tracer::enter`, `Tracer::hold_all`) until it stores `IDLE` back, so at most one thread touches it at a
// time; the Acquire CAS / Release store pair orders those accesses. All other fields are atomics.
unsafe impl Sync for Slot {}

impl Slot {
    fn new() -> Self {
        Slot {
            state: AtomicU8::new(IDLE),
            alive: AtomicBool::new(false),
            site: AtomicU32::new(0),
            buf: Default::default(),
        }
    }
}

struct SlotTable {
    chunks: [OnceLock<Box<[Slot]>>; CHUNKS],
}

impl SlotTable {
    #[inline]
    fn get(&self, thread: u32) -> Option<&Slot> {
        let i = thread as usize;
        let chunk = self.chunks.get(i / CHUNK)?.get_or_init(|| (0..CHUNK).map(|_| Slot::new()).collect());
        Some(&chunk[i % CHUNK])
    }

    /// Every slot allocated so far, with its thread id.
    fn existing(&self) -> impl Iterator<Item = (u32, &Slot)> {
        self.chunks
            .iter()
            .enumerate()
            .filter_map(|(c, chunk)| chunk.get().map(|s| (c, s)))
            .flat_map(|(c, slots)| slots.iter().enumerate().map(move |(i, s)| ((c * CHUNK + i) as u32, s)))
    }
}

/// Exclusive access to one slot's buffer; releases the slot when dropped (also on unwind).
struct SlotGuard<'a> {
    slot: &'a Slot,
    release_to: u8,
}

impl SlotGuard<'_> {
    fn buf(&mut self) -> &mut SlotBuf {
        // SAFETY: a `SlotGuard` exists only after a successful CAS out of `IDLE` (see `Tracer::enter` and
        // `Tracer::hold_all`), and `&mut self` keeps this reference unique for its lifetime.
        unsafe { &mut *self.slot.buf.get() }
    }
}

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        self.slot.state.store(self.release_to, Ordering::Release);
    }
}

struct SinkState {
    out: Box<dyn Write + Send>,
    error: Option<io::Error>,
}

/// Finished records on their way to the sink.
struct Output {
    queue: Mutex<Vec<Vec<u8>>>,
    sink: Mutex<SinkState>,
    bytes: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Output {
    fn push(&self, rec: Vec<u8>) {
        self.enqueue(rec);
        self.drain(false);
    }

    /// Queues without writing: for callers holding slots, since a sink may itself emit heap events.
    fn enqueue(&self, rec: Vec<u8>) {
        self.bytes.fetch_add(rec.len() as u64, Ordering::Relaxed);
        lock(&self.queue).push(rec);
    }

    /// Writes queued records. Without `block`, gives up if another thread is writing (it will pick the
    /// records up, or the next push or `finish` will).
    fn drain(&self, block: bool) {
        let mut sink = if block {
            lock(&self.sink)
        } else {
            match self.sink.try_lock() {
                Ok(g) => g,
                Err(TryLockError::Poisoned(p)) => p.into_inner(),
                Err(TryLockError::WouldBlock) => return,
            }
        };
        loop {
            let records = std::mem::take(&mut *lock(&self.queue));
            if records.is_empty() {
                break;
            }
            if sink.error.is_none() {
                for rec in &records {
                    if let Err(e) = sink.out.write_all(rec) {
                        sink.error = Some(e);
                        break;
                    }
                }
            }
        }
        if block
            && sink.error.is_none()
            && let Err(e) = sink.out.flush()
        {
            sink.error = Some(e);
        }
    }
}

/// The tables every generation repeats.
#[derive(Default)]
struct Meta {
    strings: Vec<String>,
    string_ids: HashMap<String, u32>,
    /// type id → (name string, size hint)
    types: BTreeMap<u32, (u32, u64)>,
    /// site id → (function string, wasm offset, file string, line, col)
    sites: BTreeMap<u32, (u32, u64, u32, u32, u32)>,
}

impl Meta {
    /// The id of `s` (0 for the empty string), and whether it is new.
    fn intern(&mut self, s: &str) -> (u32, bool) {
        if s.is_empty() {
            return (0, false);
        }
        if let Some(&id) = self.string_ids.get(s) {
            return (id, false);
        }
        self.strings.push(s.to_owned());
        let id = self.strings.len() as u32;
        self.string_ids.insert(s.to_owned(), id);
        (id, true)
    }

    fn strings_record(&self, ids: impl Iterator<Item = u32>) -> Vec<u8> {
        let mut out = Vec::new();
        let start = begin_record(&mut out, RecordKind::Strings);
        for id in ids {
            let s = &self.strings[id as usize - 1];
            put_uvarint(&mut out, u64::from(id));
            put_uvarint(&mut out, s.len() as u64);
            out.extend_from_slice(s.as_bytes());
        }
        end_record(&mut out, start);
        out
    }

    fn types_record<'a>(&self, types: impl Iterator<Item = (&'a u32, &'a (u32, u64))>) -> Vec<u8> {
        let mut out = Vec::new();
        let start = begin_record(&mut out, RecordKind::Types);
        for (&id, &(name, size)) in types {
            for v in [u64::from(id), u64::from(name), size] {
                put_uvarint(&mut out, v);
            }
        }
        end_record(&mut out, start);
        out
    }

    #[allow(clippy::type_complexity)]
    fn sites_record<'a>(&self, sites: impl Iterator<Item = (&'a u32, &'a (u32, u64, u32, u32, u32))>) -> Vec<u8> {
        let mut out = Vec::new();
        let start = begin_record(&mut out, RecordKind::Sites);
        for (&id, &(func, offset, file, line, col)) in sites {
            for v in [u64::from(id), u64::from(func), offset, u64::from(file), u64::from(line), u64::from(col)] {
                put_uvarint(&mut out, v);
            }
        }
        end_record(&mut out, start);
        out
    }
}

/// The alloc/free tracer. Attach it to the heap with `heap.add_observer(tracer.clone())`.
pub struct Tracer {
    config: TraceConfig,
    clock: Clock,
    heap_base: AtomicU64,
    gen_: AtomicU64,
    gen_start_ns: AtomicU64,
    /// Batches and events flushed in the current generation (for its `GenEnd`).
    gen_batches: AtomicU64,
    gen_events: AtomicU64,
    gen_bytes_at_start: AtomicU64,
    slots: SlotTable,
    out: Output,
    /// Tables and generation switches; never taken on the event path.
    meta: Mutex<Meta>,
    /// Live stacks (base → size), for snapshots. Stack events are rare (thread start, growth), and this lock is
    /// never held while calling out, so it cannot deadlock with the heap.
    stacks: Mutex<BTreeMap<u64, u64>>,
    /// The OS thread inside `advance_generation` or `finish`, if any.
    advancer: Mutex<Option<ThreadId>>,
    finished: AtomicBool,
    events: AtomicU64,
    batches: AtomicU64,
    lost: AtomicU64,
}

impl std::fmt::Debug for Tracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracer").field("config", &self.config).field("stats", &self.stats()).finish_non_exhaustive()
    }
}

impl Tracer {
    /// A tracer writing to `out`. Writes the file header and opens generation 1 with an empty snapshot, so
    /// attach it before the heap allocates (or call [`Tracer::advance_generation`] right after attaching).
    pub fn new(out: Box<dyn Write + Send>, config: TraceConfig) -> Arc<Tracer> {
        let tracer = Tracer {
            // Page-aligned, so span ids are exact.
            heap_base: AtomicU64::new(config.heap_base.map_or(0, |b| b & !(gc::PAGE_SIZE as u64 - 1))),
            clock: Clock::new(config.manual_clock.clone()),
            config,
            gen_: AtomicU64::new(0),
            gen_start_ns: AtomicU64::new(0),
            gen_batches: AtomicU64::new(0),
            gen_events: AtomicU64::new(0),
            gen_bytes_at_start: AtomicU64::new(0),
            slots: SlotTable { chunks: std::array::from_fn(|_| OnceLock::new()) },
            out: Output {
                queue: Mutex::new(Vec::new()),
                sink: Mutex::new(SinkState { out, error: None }),
                bytes: AtomicU64::new(0),
            },
            meta: Mutex::new(Meta::default()),
            stacks: Mutex::new(BTreeMap::new()),
            advancer: Mutex::new(None),
            finished: AtomicBool::new(false),
            events: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            lost: AtomicU64::new(0),
        };
        let mut header = Vec::with_capacity(HEADER_LEN);
        header.extend_from_slice(&MAGIC);
        header.extend_from_slice(&VERSION.to_le_bytes());
        header.extend_from_slice(&0u16.to_le_bytes());
        tracer.out.push(header);
        tracer.switch_generation(&EmptyHeap, false);
        Arc::new(tracer)
    }

    /// A tracer writing to a new file at `path` (buffered).
    pub fn create(path: impl AsRef<Path>, config: TraceConfig) -> io::Result<Arc<Tracer>> {
        let file = File::create(path)?;
        Ok(Tracer::new(Box::new(BufWriter::with_capacity(1 << 20, file)), config))
    }

    /// Nanoseconds since the trace started.
    #[inline]
    fn now(&self) -> u64 {
        self.clock.now()
    }

    /// Remembers the heap base the first time an address is seen (arenas are `ARENA_SIZE`-aligned).
    fn note_heap_address(&self, addr: usize) {
        if self.heap_base.load(Ordering::Relaxed) == 0 {
            let base = (addr & !(gc::ARENA_SIZE - 1)) as u64;
            let _ = self.heap_base.compare_exchange(0, base, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    // -----------------------------------------------------------------------------------------------------
    // The event path.

    /// Takes `slot` for writing: the fast path is one successful compare-and-swap.
    #[inline]
    fn enter<'a>(&self, slot: &'a Slot, thread: u32) -> Option<SlotGuard<'a>> {
        match slot.state.compare_exchange(IDLE, WRITING, Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => Some(SlotGuard { slot, release_to: IDLE }),
            Err(state) => self.enter_slow(slot, thread, state),
        }
    }

    #[cold]
    fn enter_slow<'a>(&self, slot: &'a Slot, thread: u32, mut state: u8) -> Option<SlotGuard<'a>> {
        loop {
            match state {
                IDLE => {}
                WRITING => return self.reentered(thread),
                HELD => {
                    if *lock(&self.advancer) == Some(thread::current().id()) {
                        return self.reentered(thread);
                    }
                    thread::yield_now();
                }
                _ => return None, // CLOSED: the trace is finished.
            }
            match slot.state.compare_exchange(IDLE, WRITING, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => return Some(SlotGuard { slot, release_to: IDLE }),
                Err(s) => state = s,
            }
        }
    }

    #[cold]
    fn reentered<'a>(&self, thread: u32) -> Option<SlotGuard<'a>> {
        if self.config.check_reentrancy {
            panic!(
                "vmtrace: the tracer was re-entered on heap thread {thread} (an event was emitted from inside \
                 the tracer, or two OS threads share one heap thread id)"
            );
        }
        self.lost.fetch_add(1, Ordering::Relaxed);
        None
    }

    /// Encodes one event for `thread`: the whole fast path.
    #[inline]
    fn write(&self, thread: u32, encode: impl FnOnce(&mut BatchEncoder, u64)) {
        let Some(slot) = self.slots.get(thread) else {
            self.lost.fetch_add(1, Ordering::Relaxed);
            return;
        };
        self.write_slot(slot, thread, Stamp::Now, encode);
    }

    #[inline]
    fn write_slot(&self, slot: &Slot, thread: u32, stamp: Stamp, encode: impl FnOnce(&mut BatchEncoder, u64)) {
        let Some(mut guard) = self.enter(slot, thread) else { return };
        let buf = guard.buf();
        let now = match stamp {
            Stamp::Now => self.now().max(buf.last_ns),
            Stamp::Sweep => buf.last_ns,
        };
        buf.last_ns = now;
        let full = if buf.enc.as_ref().is_some_and(|e| !e.has_room()) { buf.enc.take() } else { None };
        let start = !buf.started;
        buf.started = true;
        let enc = buf.enc.get_or_insert_with(|| self.new_batch(thread, now));
        if start {
            slot.alive.store(true, Ordering::Relaxed);
            enc.push(now, &crate::event::EventKind::ThreadStart);
        }
        encode(enc, now);
        drop(guard);
        if let Some(full) = full {
            self.push_batch(full);
        }
    }

    fn new_batch(&self, thread: u32, now: u64) -> BatchEncoder {
        BatchEncoder::new(
            self.gen_.load(Ordering::Relaxed),
            thread,
            now,
            self.heap_base.load(Ordering::Relaxed),
            gc::PAGE_SIZE as u64,
        )
    }

    fn push_batch(&self, enc: BatchEncoder) {
        if self.queue_batch(enc) {
            self.out.drain(false);
        }
    }

    /// Queues a finished batch without writing it; whether there was one.
    fn queue_batch(&self, enc: BatchEncoder) -> bool {
        let events = enc.events();
        if events == 0 {
            return false;
        }
        self.events.fetch_add(events, Ordering::Relaxed);
        self.gen_events.fetch_add(events, Ordering::Relaxed);
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.gen_batches.fetch_add(1, Ordering::Relaxed);
        self.out.enqueue(enc.finish());
        true
    }

    // -----------------------------------------------------------------------------------------------------
    // The VM's API.

    /// Sets the allocation site the next `object_alloc` events of heap thread `thread` carry (0: unknown).
    /// The VM writes it before allocating; it is a relaxed store into the thread's slot.
    #[inline]
    pub fn set_current_site(&self, thread: u32, site: u32) {
        if let Some(slot) = self.slots.get(thread) {
            slot.site.store(site, Ordering::Relaxed);
        }
    }

    /// Records that heap thread `thread` started (otherwise its first event does).
    pub fn thread_start(&self, thread: u32) {
        self.write(thread, |_, _| {});
    }

    /// Records that heap thread `thread` ended and flushes its batch.
    pub fn thread_end(&self, thread: u32) {
        let Some(slot) = self.slots.get(thread) else { return };
        let Some(mut guard) = self.enter(slot, thread) else { return };
        let buf = guard.buf();
        if !buf.started {
            return;
        }
        let now = self.now().max(buf.last_ns);
        buf.last_ns = now;
        let mut full = None;
        let mut enc = match buf.enc.take() {
            Some(enc) if enc.has_room() => enc,
            other => {
                full = other;
                self.new_batch(thread, now)
            }
        };
        enc.push(now, &crate::event::EventKind::ThreadEnd);
        buf.started = false;
        slot.alive.store(false, Ordering::Relaxed);
        drop(guard);
        if let Some(full) = full {
            self.push_batch(full);
        }
        self.push_batch(enc);
    }

    /// Names a type id (from the module's name section) and gives its size hint. Written into the current
    /// generation at once and repeated in every later one.
    pub fn define_type(&self, type_id: u32, name: &str, size_hint: u64) {
        let mut meta = lock(&self.meta);
        let (name_id, new) = meta.intern(name);
        if new {
            self.out.push(meta.strings_record(std::iter::once(name_id)));
        }
        meta.types.insert(type_id, (name_id, size_hint));
        self.out.push(meta.types_record(std::iter::once((&type_id, &(name_id, size_hint)))));
    }

    /// Describes an allocation site id (what [`Tracer::set_current_site`] passes).
    pub fn define_site(&self, site: u32, desc: &SiteDesc<'_>) {
        let mut meta = lock(&self.meta);
        let mut new_strings = Vec::new();
        let (func, new) = meta.intern(desc.function);
        if new {
            new_strings.push(func);
        }
        let (file, line, col) = match desc.location {
            Some((file, line, col)) => {
                let (file, new) = meta.intern(file);
                if new {
                    new_strings.push(file);
                }
                (file, line, col)
            }
            None => (0, 0, 0),
        };
        if !new_strings.is_empty() {
            self.out.push(meta.strings_record(new_strings.into_iter()));
        }
        let row = (func, desc.wasm_offset, file, line, col);
        meta.sites.insert(site, row);
        self.out.push(meta.sites_record(std::iter::once((&site, &row))));
    }

    /// Starts a new generation if the current one is older than [`TraceConfig::generation_period`] or larger
    /// than [`TraceConfig::generation_bytes`]. Call it at safe points (the world stopped, e.g. right after a
    /// collection: see [`StoppedHeap`]); returns whether it advanced.
    pub fn maybe_advance_generation(&self, walk: &dyn HeapWalk) -> bool {
        let age = self.now().saturating_sub(self.gen_start_ns.load(Ordering::Relaxed));
        let bytes = self.out.bytes.load(Ordering::Relaxed) - self.gen_bytes_at_start.load(Ordering::Relaxed);
        if age >= self.config.generation_period.as_nanos() as u64 || bytes >= self.config.generation_bytes {
            self.advance_generation(walk);
            true
        } else {
            false
        }
    }

    /// Ends the current generation and starts the next one with a snapshot of `walk`, which must not change
    /// meanwhile (for the real heap: [`StoppedHeap`]).
    pub fn advance_generation(&self, walk: &dyn HeapWalk) {
        self.switch_generation(walk, true);
    }

    /// Flushes everything and closes the trace; later events are dropped. Returns the first write error.
    pub fn finish(&self) -> io::Result<TraceStats> {
        let meta = lock(&self.meta);
        if !self.finished.swap(true, Ordering::AcqRel) {
            *lock(&self.advancer) = Some(thread::current().id());
            let mut held = self.hold_all(CLOSED);
            self.flush_held(&mut held);
            self.push_gen_end();
            drop(held);
            *lock(&self.advancer) = None;
        }
        drop(meta);
        self.out.drain(true);
        let mut sink = lock(&self.out.sink);
        match sink.error.take() {
            Some(e) => Err(e),
            None => Ok(self.stats()),
        }
    }

    pub fn stats(&self) -> TraceStats {
        TraceStats {
            events: self.events.load(Ordering::Relaxed),
            bytes: self.out.bytes.load(Ordering::Relaxed),
            batches: self.batches.load(Ordering::Relaxed),
            generations: self.gen_.load(Ordering::Relaxed),
            lost: self.lost.load(Ordering::Relaxed),
            clock: self.clock.name(),
        }
    }

    // -----------------------------------------------------------------------------------------------------
    // Generations.

    /// Holds every existing slot (waiting for in-flight writers); the guards release to `release_to`.
    fn hold_all(&self, release_to: u8) -> Vec<SlotGuard<'_>> {
        let mut held = Vec::new();
        for (_, slot) in self.slots.existing() {
            loop {
                match slot.state.compare_exchange(IDLE, HELD, Ordering::Acquire, Ordering::Relaxed) {
                    Ok(_) => {
                        held.push(SlotGuard { slot, release_to });
                        break;
                    }
                    Err(CLOSED) => break,
                    Err(_) => thread::yield_now(),
                }
            }
        }
        held
    }

    fn flush_held(&self, held: &mut [SlotGuard<'_>]) {
        for guard in held {
            if let Some(enc) = guard.buf().enc.take() {
                self.queue_batch(enc);
            }
        }
    }

    fn push_gen_end(&self) {
        let mut rec = Vec::new();
        let start = begin_record(&mut rec, RecordKind::GenEnd);
        put_uvarint(&mut rec, self.gen_.load(Ordering::Relaxed));
        put_uvarint(&mut rec, self.gen_batches.load(Ordering::Relaxed));
        put_uvarint(&mut rec, self.gen_events.load(Ordering::Relaxed));
        end_record(&mut rec, start);
        self.out.enqueue(rec);
    }

    fn switch_generation(&self, walk: &dyn HeapWalk, end_current: bool) {
        let meta = lock(&self.meta);
        if self.finished.load(Ordering::Acquire) {
            return;
        }
        *lock(&self.advancer) = Some(thread::current().id());
        let mut held = self.hold_all(IDLE);
        if end_current {
            self.flush_held(&mut held);
            self.push_gen_end();
        }
        // Open the next generation. Nobody reads the clock while every slot is held.
        self.clock.recalibrate();
        let gen_ = self.gen_.fetch_add(1, Ordering::Relaxed) + 1;
        self.gen_batches.store(0, Ordering::Relaxed);
        self.gen_events.store(0, Ordering::Relaxed);
        self.gen_bytes_at_start.store(self.out.bytes.load(Ordering::Relaxed), Ordering::Relaxed);
        let now = self.now();
        self.gen_start_ns.store(now, Ordering::Relaxed);
        let wall = match self.config.manual_clock {
            // Deterministic traces for tests: the manual clock stands in for the wall clock too.
            Some(_) => now,
            None => SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64),
        };
        let mut first_span = None;
        walk.for_each_span(&mut |s| {
            first_span.get_or_insert(s.base);
        });
        if let Some(base) = first_span {
            self.note_heap_address(base);
        }
        let heap_base = self.heap_base.load(Ordering::Relaxed);
        let mut rec = Vec::new();
        let start = begin_record(&mut rec, RecordKind::GenStart);
        for v in [gen_, now, wall, heap_base, gc::PAGE_SIZE as u64, u64::from(OBJ_SHIFT)] {
            put_uvarint(&mut rec, v);
        }
        end_record(&mut rec, start);
        self.out.enqueue(rec);
        // The tables, whole.
        if !meta.strings.is_empty() {
            self.out.enqueue(meta.strings_record(1..=meta.strings.len() as u32));
        }
        if !meta.types.is_empty() {
            self.out.enqueue(meta.types_record(meta.types.iter()));
        }
        if !meta.sites.is_empty() {
            self.out.enqueue(meta.sites_record(meta.sites.iter()));
        }
        // The snapshot.
        let mut snap = Snapshot { tracer: self, enc: self.new_batch(0, now), now };
        for (thread, slot) in self.slots.existing() {
            if slot.alive.load(Ordering::Relaxed) {
                snap.put(|e, t| e.push(t, &crate::event::EventKind::ThreadExists { thread }));
            }
        }
        let stacks = lock(&self.stacks).clone();
        for (base, size) in stacks {
            snap.put(|e, t| e.stack_exists(t, base, size));
        }
        walk.for_each_span(&mut |s| snap.put(|e, t| e.span_exists(t, &span_of(s))));
        walk.for_each_object(&mut |o| snap.put(|e, t| e.obj_exists(t, o.addr as u64, o.size as u64, o.type_id)));
        self.queue_batch(snap.enc);
        drop(held);
        *lock(&self.advancer) = None;
        drop(meta);
        self.out.drain(true);
    }
}

/// The snapshot batch being written (thread 0), flushed whenever it fills.
struct Snapshot<'a> {
    tracer: &'a Tracer,
    enc: BatchEncoder,
    now: u64,
}

impl Snapshot<'_> {
    fn put(&mut self, f: impl FnOnce(&mut BatchEncoder, u64)) {
        if !self.enc.has_room() {
            let full = std::mem::replace(&mut self.enc, self.tracer.new_batch(0, self.now));
            self.tracer.queue_batch(full);
        }
        f(&mut self.enc, self.now);
    }
}

fn span_of(s: &SpanInfo) -> Span {
    Span { base: s.base as u64, npages: s.npages as u64, class: s.size_class, elem_size: s.elem_size as u64 }
}

impl HeapObserver for Tracer {
    fn arena_map(&self, _ctx: &ObserverCtx, arena: &ArenaInfo) {
        self.note_heap_address(arena.base);
    }

    fn span_alloc(&self, ctx: &ObserverCtx, span: &SpanInfo) {
        self.note_heap_address(span.base);
        self.write(ctx.thread_id, |e, t| e.span_alloc(t, &span_of(span)));
    }

    fn span_free(&self, ctx: &ObserverCtx, span: &SpanInfo) {
        self.write(ctx.thread_id, |e, t| e.span_free(t, span.base as u64));
    }

    #[inline]
    fn object_alloc(&self, ctx: &ObserverCtx, obj: &ObjectInfo) {
        let Some(slot) = self.slots.get(ctx.thread_id) else {
            self.lost.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let site = slot.site.load(Ordering::Relaxed);
        self.write_slot(slot, ctx.thread_id, Stamp::Now, |e, t| {
            e.obj_alloc(t, obj.addr as u64, obj.size as u64, obj.type_id, site)
        });
    }

    #[inline]
    fn object_free(&self, ctx: &ObserverCtx, obj: &ObjectInfo) {
        let Some(slot) = self.slots.get(ctx.thread_id) else {
            self.lost.fetch_add(1, Ordering::Relaxed);
            return;
        };
        self.write_slot(slot, ctx.thread_id, Stamp::Sweep, |e, t| e.obj_free(t, obj.addr as u64));
    }

    fn gc_begin(&self, ctx: &ObserverCtx, info: &GcBeginInfo) {
        self.write(ctx.thread_id, |e, t| e.gc_begin(t, info.cycle, info.heap_bytes as u64));
    }

    fn gc_end(&self, ctx: &ObserverCtx, info: &GcEndInfo) {
        let end = GcEnd {
            cycle: info.cycle,
            live_bytes: info.live_bytes as u64,
            live_objects: info.live_objects as u64,
            freed_bytes: info.freed_bytes as u64,
            freed_objects: info.freed_objects as u64,
            heap_bytes: info.heap_bytes as u64,
            next_gc_bytes: info.next_gc_bytes as u64,
            pause_ns: info.pause.as_nanos() as u64,
        };
        self.write(ctx.thread_id, |e, t| e.gc_end(t, &end));
    }

    fn stack_alloc(&self, ctx: &ObserverCtx, base: usize, size: usize) {
        lock(&self.stacks).insert(base as u64, size as u64);
        self.write(ctx.thread_id, |e, t| e.stack_alloc(t, base as u64, size as u64));
    }

    fn stack_free(&self, ctx: &ObserverCtx, base: usize, _size: usize) {
        lock(&self.stacks).remove(&(base as u64));
        self.write(ctx.thread_id, |e, t| e.stack_free(t, base as u64));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventKind;
    use crate::reader::Trace;

    #[derive(Clone, Default)]
    struct Mem(Arc<Mutex<Vec<u8>>>);

    impl Write for Mem {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            lock(&self.0).extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn obj(addr: usize) -> ObjectInfo {
        ObjectInfo { addr, size: 16, bytes: 0, type_id: 1, len: 0 }
    }

    fn ctx(thread_id: u32) -> ObserverCtx {
        ObserverCtx::new(thread_id)
    }

    #[test]
    #[should_panic(expected = "re-entered on heap thread 3")]
    fn reentry_panics_in_checking_mode() {
        let t = Tracer::new(Box::new(io::sink()), TraceConfig { check_reentrancy: true, ..TraceConfig::default() });
        // An event emitted while the same thread's event is being encoded.
        t.write(3, |_, _| t.object_alloc(&ctx(3), &obj(0x1000)));
    }

    #[test]
    fn reentry_is_dropped_and_counted_otherwise() {
        let mem = Mem::default();
        let t = Tracer::new(Box::new(mem.clone()), TraceConfig { check_reentrancy: false, ..TraceConfig::default() });
        t.write(3, |e, now| {
            t.object_alloc(&ctx(3), &obj(0x1000));
            e.obj_alloc(now, 0x2000, 16, 1, 0);
        });
        // Another thread is unaffected.
        t.object_alloc(&ctx(4), &obj(0x3000));
        let stats = t.finish().unwrap();
        assert_eq!(stats.lost, 1);
        let trace = Trace::parse(lock(&mem.0).clone()).unwrap();
        let allocs: Vec<u64> = trace.generations[0]
            .events()
            .filter_map(|e| match e.kind {
                EventKind::ObjAlloc { addr, .. } => Some(addr),
                _ => None,
            })
            .collect();
        assert_eq!(allocs, [0x2000, 0x3000]);
    }

    /// A sink that emits heap events while it writes: the tracer is re-entered from its own output path.
    struct Echo {
        mem: Mem,
        tracer: Arc<OnceLock<std::sync::Weak<Tracer>>>,
        next: usize,
    }

    impl Write for Echo {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if let Some(t) = self.tracer.get().and_then(std::sync::Weak::upgrade) {
                self.next += 64;
                t.object_alloc(&ctx(1), &obj(0x10_0000 + self.next));
            }
            self.mem.write(buf)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn events_emitted_from_inside_the_sink_are_kept() {
        let mem = Mem::default();
        let cell = Arc::new(OnceLock::new());
        let sink = Echo { mem: mem.clone(), tracer: cell.clone(), next: 0 };
        let t = Tracer::new(Box::new(sink), TraceConfig { check_reentrancy: true, ..TraceConfig::default() });
        cell.set(Arc::downgrade(&t)).unwrap();
        // Enough events on thread 1 to fill batches, so flushes happen while the sink writes.
        for i in 0..100_000usize {
            t.object_alloc(&ctx(1), &obj(0x1000_0000 + i * 16));
        }
        t.define_type(1, "$t", 16);
        t.advance_generation(&EmptyHeap);
        let stats = t.finish().unwrap();
        assert_eq!(stats.lost, 0);
        let trace = Trace::parse(lock(&mem.0).clone()).unwrap();
        assert!(trace.error.is_none(), "{:?}", trace.error);
        assert_eq!(trace.events(), stats.events);
        assert!(stats.events > 100_000, "the sink's own events are in the trace too");
    }

    #[test]
    fn events_after_finish_and_huge_thread_ids_are_not_written() {
        let mem = Mem::default();
        let t = Tracer::new(Box::new(mem.clone()), TraceConfig::default());
        t.object_alloc(&ctx(MAX_THREADS), &obj(0x1000));
        t.object_alloc(&ctx(2), &obj(0x1000));
        let stats = t.finish().unwrap();
        assert_eq!(stats.lost, 1);
        let len = lock(&mem.0).len();
        t.object_alloc(&ctx(2), &obj(0x2000));
        t.object_alloc(&ctx(5), &obj(0x2000));
        t.advance_generation(&EmptyHeap);
        assert_eq!(t.finish().unwrap().events, stats.events);
        assert_eq!(lock(&mem.0).len(), len);
        let trace = Trace::parse(lock(&mem.0).clone()).unwrap();
        assert!(trace.error.is_none());
        assert_eq!(trace.events(), 2); // thread 2's start and allocation
    }

    #[test]
    fn generations_advance_by_size_and_by_time() {
        let clock = Arc::new(AtomicU64::new(0));
        let config = TraceConfig {
            generation_bytes: 4096,
            generation_period: Duration::from_millis(10),
            manual_clock: Some(clock.clone()),
            ..TraceConfig::default()
        };
        let t = Tracer::new(Box::new(io::sink()), config);
        assert!(!t.maybe_advance_generation(&EmptyHeap));
        clock.store(10_000_000, Ordering::Relaxed);
        assert!(t.maybe_advance_generation(&EmptyHeap));
        assert!(!t.maybe_advance_generation(&EmptyHeap));
        // Fill a few batches (bytes count when batches are flushed).
        for i in 0..60_000usize {
            t.object_alloc(&ctx(1), &obj(0x1000 + i * 8 * 97));
        }
        assert!(t.maybe_advance_generation(&EmptyHeap));
        assert_eq!(t.finish().unwrap().generations, 3);
    }
}
