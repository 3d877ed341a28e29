//! `vmrace`: the data-race detector behind `vmrun --race`. A happens-before detector in the style of
//! the Go race runtime (ThreadSanitizer v2's shadow cells) with FastTrack's epochs (Flanagan & Freund,
//! PLDI'09), and with Go's rule that memory freed by the garbage collector's sweep releases the
//! detector's state for it, so that a long-running program's race state is bounded by its live memory.
//! Pure std, no dependencies; the VM calls it, it calls nothing back.
//!
//! # Model
//!
//! Two accesses *race* when their byte ranges overlap, they come from different threads, at least one
//! writes, not both are atomic, and neither happens before the other. Happens-before is built only from
//! the edges the VM reports: program order within a thread, [`Detector::spawn`] (parent → child),
//! [`Detector::exit`]/[`Detector::join`] (child's end → joiner), and [`Detector::release`] →
//! [`Detector::acquire`] on the same sync address (an atomic store/load, a wait/notify hand-off, an
//! atomic read-modify-write with [`Detector::acq_rel`]). Atomic accesses themselves only mark the shadow
//! (so that a plain access racing with them is found); their ordering is the sync calls' job.
//!
//! # Data structures
//!
//! - **Thread context** ([`ThreadCtx`], one per thread, owned by it, never locked): the thread id and a
//!   vector clock (`clock.rs`); its own component is the thread's current *epoch*, which ticks at each
//!   release and spawn, so all accesses between two releases share one epoch.
//! - **Shadow map** (`shadow.rs`): for each touched 8-byte *granule*, four *cells*
//!   (`cell.rs`), each an earlier access packed as {thread, epoch} in one word, a byte mask (which of the
//!   8 bytes it touched: partial overlaps and unaligned accesses are exact), write/atomic flags with the
//!   access size, and the VM's site. 72 bytes per touched granule. Granules live in 512-byte pages
//!   (a slot index + a dense vector, so sparse pages stay small) in 128 mutex-protected shards.
//! - **Sync table** (`sync.rs`): a vector clock per address some thread released at, in 64 shards of
//!   ordered maps (so a freed range is a range query).
//! - **Thread table**: the next thread id, live threads, and each exited thread's final clock (for join).
//! - **Reported pairs**: the unordered site pairs already reported, so each race is reported once.
//!
//! # The access path (`Detector::access`, one granule; an unaligned access does this for both)
//!
//! 1. Build the cell for this access: `{tid, epoch, byte mask, flags, site}`.
//! 2. Lock the granule's shard, find or create the granule (one hash probe on the page number).
//! 3. For each occupied cell: if its epoch is not covered by the thread's clock (`epoch > clock[tid]`,
//!    FastTrack's O(1) test) and it conflicts (bytes overlap, a write, not both atomic), it is a race.
//!    Otherwise note whether it already covers this access in the same epoch (then nothing is stored:
//!    the same-epoch fast path, the common case of a thread re-touching its data) or is covered by it
//!    (then this access replaces it: one cell per thread for thread-local data).
//! 4. Store the access (replaced cell, else empty cell, else evict one, preferring an ordered one), unlock.
//! 5. Outside the lock, turn the first racing cell whose site pair is new into a [`Race`].
//!
//! Read-shared data (FastTrack's "read shared" state, a read vector clock) is represented by one cell per
//! concurrent reader: four unordered readers per granule are remembered exactly.
//!
//! # Guarantees: no false reports, some missed races
//!
//! A race is reported only when a stored cell's epoch is not covered by the current thread's clock, which
//! with vector clocks is exactly "not ordered by the edges given"; every way the detector loses precision
//! loses information (fewer stored accesses, more happens-before), never adds any, so it can only *miss*
//! races:
//! - **Eviction**: a fifth unordered access to a granule (five reader threads, say) evicts a cell; a later
//!   access racing only with the evicted one is missed (TSan has the same limit).
//! - **Subsumed accesses**: a stored access stands for a weaker one of the same thread (step 3). The race is
//!   still found, but against the stronger access's site, so a pair of sites can go unreported.
//! - **Partial resets**: a reset/free covering part of a granule drops each cell touching the range whole.
//! - **Release joins** instead of replacing the sync clock (more edges than C++'s release sequences).
//! - **Saturation and limits**: a clock saturates at 2^42 releases; threads with ids ≥ 2^22 are not tracked.
//! - **One report per access**: an access racing with two earlier ones returns one race; the other pair is
//!   reported when it happens again.
//!
//! # Memory bounds
//!
//! - Shadow: 72 bytes per touched granule plus its page entry; [`Detector::reset_range`] (allocation) and
//!   [`Detector::free_range`] (sweep) drop them, and emptied pages and maps give memory back.
//! - Sync objects: a clock (8 bytes per thread id seen) per released-to address, dropped by `free_range`.
//!   This is the seed's fix: without it, every atomic on every short-lived object leaks a clock.
//! - Threads: a clock per live thread; an exited thread's final clock is kept for joins (so bytes grow
//!   with threads², which bounds them by the thread count, not by time).
//! - Reported pairs: one entry per distinct racing site pair (bounded by the program's code).
//!
//! [`Detector::stats`] makes all but the last two observable.
//!
//! # Locking
//!
//! The access path takes one shard lock per granule (two for a granule-spanning access, one after the
//! other) and, only when it found a race, the reported-pairs lock after releasing the shard. Sync calls take
//! one sync shard lock; spawn/exit/join the thread-table lock. No code holds two locks at once, so there is
//! no lock order and no deadlock. Two threads touching the same granule serialize on its shard, which is
//! what makes the check-and-record of each access atomic.
//!
//! # Planted bugs (negative controls)
//!
//! `VMRACE_DEBUG` (read once by [`Detector::new`]) plants one bug so that tests can show they fail without
//! the behaviour they check: `ignore-acquire` (acquire and join learn nothing), `ignore-spawn` (a child does
//! not inherit its parent's clock), `keep-on-free` (reset and free drop nothing), `no-dedupe` (every
//! occurrence of a race is reported), `whole-granule` (an access marks its whole granule).

mod cell;
mod clock;
mod page_hash;
mod shadow;
mod sync;

use std::collections::{HashMap, HashSet};
use std::marker::PhantomData;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use cell::Cell;
use clock::{Epoch, TRACKED_THREADS, VectorClock};
use shadow::{GRANULE, ShadowMap, byte_mask};
use sync::SyncTable;

/// A guest thread's id: dense, in spawn order; the main thread is 0.
pub type ThreadId = u32;

/// Where an access happened, in the VM's terms (e.g. function and bytecode offset); opaque here, used
/// only to name the two ends of a race and to report each pair of sites once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Site(pub u64);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessKind {
    Read,
    Write,
    AtomicRead,
    AtomicWrite,
}

impl AccessKind {
    pub fn is_write(self) -> bool {
        matches!(self, AccessKind::Write | AccessKind::AtomicWrite)
    }

    pub fn is_atomic(self) -> bool {
        matches!(self, AccessKind::AtomicRead | AccessKind::AtomicWrite)
    }

    fn from_flags(write: bool, atomic: bool) -> AccessKind {
        match (write, atomic) {
            (false, false) => AccessKind::Read,
            (true, false) => AccessKind::Write,
            (false, true) => AccessKind::AtomicRead,
            (true, true) => AccessKind::AtomicWrite,
        }
    }
}

/// One memory access, as reported in a [`Race`].
#[derive(Clone, Debug)]
pub struct Access {
    pub thread: ThreadId,
    pub kind: AccessKind,
    pub addr: u64,
    pub size: u8,
    pub site: Site,
}

/// Two conflicting accesses that no happens-before edge orders: `previous` was recorded first.
#[derive(Clone, Debug)]
pub struct Race {
    pub current: Access,
    pub previous: Access,
}

/// The detector's state, for `--race-stats` and for tests that memory stays bounded.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    /// Threads created (the main thread included) and not yet exited.
    pub threads: usize,
    /// Addresses holding a released clock.
    pub live_sync_objects: usize,
    /// Granules with at least one recorded access.
    pub shadow_granules: usize,
    /// Heap bytes of the shadow map (granules, page indexes, hash tables).
    pub shadow_bytes: usize,
    /// Heap bytes of the sync objects (keys and clocks; ordered-map nodes not counted).
    pub sync_bytes: usize,
    /// Races reported (after de-duplication).
    pub races: usize,
}

/// One thread's race context: its id and vector clock. Owned by its thread (`Send`, not `Sync`), passed
/// to every detector call the thread makes, and given back with [`Detector::exit`].
pub struct ThreadCtx {
    id: ThreadId,
    clock: VectorClock,
    /// Rotates the cell a full granule evicts (TSan uses a random one; this is cheaper and as good).
    evict_hint: usize,
    _not_sync: PhantomData<std::cell::Cell<()>>,
}

impl ThreadCtx {
    fn new(id: ThreadId, inherited: VectorClock) -> ThreadCtx {
        let mut ctx = ThreadCtx { id, clock: inherited, evict_hint: 0, _not_sync: PhantomData };
        if ctx.tracked() {
            ctx.clock.set(id, 1);
        }
        ctx
    }

    pub fn id(&self) -> ThreadId {
        self.id
    }

    /// Shadow cells have room for 2^22 thread ids; threads past that are not checked (see the crate docs).
    fn tracked(&self) -> bool {
        self.id < TRACKED_THREADS
    }

    fn epoch(&self) -> Epoch {
        Epoch::new(self.id, self.clock.get(self.id))
    }

    /// Starts a new epoch: what the thread does from now on is not covered by what it just published.
    fn tick(&mut self) {
        if self.tracked() {
            self.clock.tick(self.id);
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PlantedBug {
    None,
    IgnoreAcquire,
    IgnoreSpawn,
    KeepOnFree,
    NoDedupe,
    WholeGranule,
}

impl PlantedBug {
    fn from_env() -> PlantedBug {
        match std::env::var("VMRACE_DEBUG").as_deref() {
            Ok("ignore-acquire") => PlantedBug::IgnoreAcquire,
            Ok("ignore-spawn") => PlantedBug::IgnoreSpawn,
            Ok("keep-on-free") => PlantedBug::KeepOnFree,
            Ok("no-dedupe") => PlantedBug::NoDedupe,
            Ok("whole-granule") => PlantedBug::WholeGranule,
            _ => PlantedBug::None,
        }
    }
}

struct Threads {
    next: ThreadId,
    live: usize,
    finished: HashMap<ThreadId, VectorClock>,
}

/// The detector, shared by all threads (`Send + Sync`).
pub struct Detector {
    shadow: ShadowMap,
    sync: SyncTable,
    threads: Mutex<Threads>,
    reported: Mutex<HashSet<(u64, u64)>>,
    races: AtomicUsize,
    bug: PlantedBug,
}

impl Default for Detector {
    fn default() -> Detector {
        Detector::new()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic elsewhere while holding the lock must not turn every later call into a panic.
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Detector {
    pub fn new() -> Detector {
        Detector {
            shadow: ShadowMap::new(),
            sync: SyncTable::new(),
            threads: Mutex::new(Threads { next: 1, live: 0, finished: HashMap::new() }),
            reported: Mutex::new(HashSet::new()),
            races: AtomicUsize::new(0),
            bug: PlantedBug::from_env(),
        }
    }

    /// The main thread's context (thread 0). Call once.
    pub fn main_thread(&self) -> ThreadCtx {
        lock(&self.threads).live += 1;
        ThreadCtx::new(0, VectorClock::default())
    }

    /// A new thread: everything `parent` did so far happens before everything the child does.
    pub fn spawn(&self, parent: &mut ThreadCtx) -> ThreadCtx {
        let id = {
            let mut threads = lock(&self.threads);
            threads.live += 1;
            let id = threads.next;
            threads.next = threads.next.saturating_add(1);
            id
        };
        let inherited = if self.bug == PlantedBug::IgnoreSpawn { VectorClock::default() } else { parent.clock.clone() };
        parent.tick();
        ThreadCtx::new(id, inherited)
    }

    /// The thread ended; its final clock is kept so that [`Detector::join`] can order its work.
    pub fn exit(&self, ctx: ThreadCtx) {
        let mut threads = lock(&self.threads);
        threads.live = threads.live.saturating_sub(1);
        threads.finished.insert(ctx.id, ctx.clock);
    }

    /// Everything the exited thread `child` did happens before what `ctx` does next (nothing if `child`
    /// has not exited or is unknown).
    pub fn join(&self, ctx: &mut ThreadCtx, child: ThreadId) {
        if self.bug == PlantedBug::IgnoreAcquire {
            return;
        }
        if let Some(final_clock) = lock(&self.threads).finished.get(&child) {
            ctx.clock.join(final_clock);
        }
    }

    /// A memory access of `size` bytes (1..=8; `addr` need not be aligned, so an access may span two
    /// 8-byte granules) by `ctx`'s thread. Returns the race it forms with an earlier conflicting access
    /// that does not happen-before it: two accesses conflict when their byte ranges overlap, they come
    /// from different threads, at least one writes, and not both are atomic. Adjacent bytes never
    /// conflict. Each race is reported once per unordered pair of sites (later occurrences return None).
    /// A `size` of 0 is no access; a larger one is handled as [`Detector::access_range`].
    pub fn access(&self, ctx: &mut ThreadCtx, addr: u64, size: u8, kind: AccessKind, site: Site) -> Option<Race> {
        if size > GRANULE as u8 {
            return self.access_range(ctx, addr, u64::from(size), kind, site);
        }
        if !ctx.tracked() {
            return None;
        }
        let current = Access { thread: ctx.id, kind, addr, size, site };
        let end = addr.saturating_add(u64::from(size));
        let mut granule = addr - addr % GRANULE;
        let mut race = None;
        while granule < end {
            let mask = if self.bug == PlantedBug::WholeGranule { u8::MAX } else { byte_mask(granule, addr, end) };
            let cell = Cell::new(ctx.epoch(), mask, size, kind.is_write(), kind.is_atomic(), site.0);
            ctx.evict_hint = ctx.evict_hint.wrapping_add(1);
            let conflicts = self.shadow.with_granule(granule, |g| g.access(&cell, &ctx.clock, ctx.evict_hint));
            if race.is_none() {
                race = conflicts.iter().find_map(|prev| self.new_race(&current, granule, prev));
            }
            let Some(next) = granule.checked_add(GRANULE) else { break };
            granule = next;
        }
        race
    }

    /// An access of any length (`memory.fill`, `memory.copy`, a bulk array operation), checked granule by
    /// granule. Returns the first new race; its `current` is the part of the range in that granule.
    pub fn access_range(&self, ctx: &mut ThreadCtx, addr: u64, len: u64, kind: AccessKind, site: Site) -> Option<Race> {
        let end = addr.saturating_add(len);
        let mut race = None;
        let mut lo = addr;
        while lo < end {
            let hi = (lo - lo % GRANULE).saturating_add(GRANULE).min(end);
            let found = self.access(ctx, lo, (hi - lo) as u8, kind, site);
            race = race.or(found);
            lo = hi;
        }
        race
    }

    /// The race between `current` and the stored `previous` cell, unless its site pair was reported.
    fn new_race(&self, current: &Access, granule: u64, previous: &Cell) -> Option<Race> {
        let previous = Access {
            thread: previous.epoch.tid(),
            kind: AccessKind::from_flags(previous.is_write(), previous.is_atomic()),
            addr: previous.start(granule),
            size: previous.size(),
            site: Site(previous.site),
        };
        let (a, b) = (current.site.0, previous.site.0);
        let first_time = lock(&self.reported).insert((a.min(b), a.max(b)));
        if !first_time && self.bug != PlantedBug::NoDedupe {
            return None;
        }
        self.races.fetch_add(1, Ordering::Relaxed);
        Some(Race { current: current.clone(), previous })
    }

    /// `ctx` learns everything released at `sync`.
    pub fn acquire(&self, ctx: &mut ThreadCtx, sync: u64) {
        if self.bug != PlantedBug::IgnoreAcquire {
            self.sync.acquire(sync, &mut ctx.clock);
        }
    }

    /// Publishes everything `ctx` did so far at `sync`.
    pub fn release(&self, ctx: &mut ThreadCtx, sync: u64) {
        self.sync.release(sync, &ctx.clock);
        ctx.tick();
    }

    /// Acquire and release in one step (an atomic read-modify-write, a seq-cst operation).
    pub fn acq_rel(&self, ctx: &mut ThreadCtx, sync: u64) {
        if self.bug == PlantedBug::IgnoreAcquire {
            self.sync.release(sync, &ctx.clock);
        } else {
            self.sync.acquire_release(sync, &mut ctx.clock);
        }
        ctx.tick();
    }

    /// Memory handed out fresh (a GC object allocated): forget every shadow cell in the range, so a
    /// reused slot never reports a race with the previous object's accesses.
    pub fn reset_range(&self, addr: u64, len: u64) {
        if self.bug != PlantedBug::KeepOnFree {
            self.shadow.forget(addr, len);
        }
    }

    /// Memory freed (by the GC sweep, on the collecting thread, whose context is passed): drop the
    /// shadow cells and every sync object whose address lies in the range, so the detector's state stays
    /// bounded by live memory (Go's racefree from the sweep). The free itself is not checked for races:
    /// the sweep frees only unreachable objects, which no thread can still be accessing. The collector's
    /// context is taken, as Go's sweep passes its P's, so that the hook has the seed's shape.
    pub fn free_range(&self, _collector: &ThreadCtx, addr: u64, len: u64) {
        if self.bug != PlantedBug::KeepOnFree {
            self.shadow.forget(addr, len);
            self.sync.forget(addr, len);
        }
    }

    pub fn stats(&self) -> Stats {
        let shadow = self.shadow.usage();
        let sync = self.sync.usage();
        Stats {
            threads: lock(&self.threads).live,
            live_sync_objects: sync.objects,
            shadow_granules: shadow.granules,
            shadow_bytes: shadow.bytes,
            sync_bytes: sync.bytes,
            races: self.races.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}
    fn assert_send<T: Send>() {}

    #[test]
    fn detector_is_shared_and_contexts_move_between_threads() {
        assert_send_sync::<Detector>();
        assert_send::<ThreadCtx>();
    }

    #[test]
    fn kinds_round_trip_through_cell_flags() {
        for kind in [AccessKind::Read, AccessKind::Write, AccessKind::AtomicRead, AccessKind::AtomicWrite] {
            assert_eq!(AccessKind::from_flags(kind.is_write(), kind.is_atomic()), kind);
        }
    }
}
