//! `vmrun --race`: the VM's side of data-race detection. The detector (`vmrace`: vector clocks, FastTrack
//! epochs in ThreadSanitizer-style shadow cells) knows addresses, threads and edges; this file tells it
//! what the program does and turns what it finds into reports.
//!
//! # What the detector hears, and from where
//!
//! - **Threads**: every mutator has a race context ([`vmrace::ThreadCtx`], boxed so its address is stable;
//!   the heap carries that address as the thread cache's `race_ctx`, the way Go keeps a `racectx` per P).
//!   A thread spawned with `thread-spawn` gets its context from its parent's (`spawn`: an edge parent →
//!   child, `threads.rs`); any other store is a child of the runtime's root context. A store's drop is the
//!   thread's exit.
//! - **Plain accesses** to shared memories: the translator emits `RaceLoad`/`RaceStore` for them only when
//!   the runtime was made with [`crate::Config::race`], so without `--race` no access pays anything. The
//!   address the detector sees is the host address (the memory's base plus the offset), unique across
//!   memories and heap objects.
//! - **Atomics** are atomic accesses plus edges through their address: a load acquires, a store releases,
//!   a read-modify-write or compare-exchange does both. `memory.atomic.notify` releases the address before
//!   it wakes anyone, and a `wait` that was woken acquires it; a wait that timed out acquires nothing.
//! - **Heap objects** ([`RaceObserver`], a heap observer): an allocation resets the slot's shadow (a reused
//!   slot never races with its previous object), and every object the sweep frees, and every span it
//!   gives back, releases the shadow state and the synchronization objects in its range, on the collecting
//!   thread's own context. That is the seed's fix: without it the detector's state grows with everything
//!   ever allocated.
//!
//! - **Fields and elements of shared GC objects**: with `--race` the translator puts `RaceField`/`RaceElem`
//!   before each plain `struct.get/set`/`array.get/set` of a `shared` type, and `RaceRange` after each
//!   bulk operation on one (`array.fill`/`copy`/`init_data`/`init_elem`: a ranged read or write);
//!   struct and array atomics are atomic accesses plus edges through the field's address
//!   (`interp/shared_gc.rs`). Compiled code calls the same hooks ([`RaceRuntime::hook`]).
//! - **Shared globals** are locations too (their runtime-wide cell's address): a plain `global.get`/`set`
//!   of a mutable one is a read or write (`RaceGlobal`), `global.atomic.*` are atomic accesses and edges. The allocation site
//!   of every object of a shared type is kept here (`note_alloc`, dropped by the sweep's free) so that a
//!   report names the object's type, field and where it was allocated.
//!
//! # Reports
//!
//! A race is printed when it is found, Go-style: the access with its wasm backtrace, the earlier conflicting
//! access with its backtrace, and where each thread was created. The site the detector keeps per shadow
//! cell is the id of the access's whole backtrace in the stack depot (`stack_depot.rs`, walked by
//! `interp/race_stack.rs`), so both backtraces come from there; an object's allocation is one site
//! (module and offset). A race in a shared global names the global instead of
//! an address. The CLI ends with `Found N data race(s)` and exit code 66.

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use vmrace::{AccessKind, Detector, Site, ThreadCtx, ThreadId};

use crate::WasmFrame;
use crate::interp::FoundRace;
use crate::module::ModuleData;
use crate::stack_depot::StackDepot;
use crate::state::SharedTable;
use crate::types::{TypeKind, TypeRegistry};

/// The runtime's race detector and what the reports need.
pub(crate) struct RaceRuntime {
    pub detector: Detector,
    /// The parent of stores not made by `thread-spawn` (the first of them is the program's main thread).
    root: Mutex<ThreadCtx>,
    /// Where each thread was created (the spawning thread's backtrace); none for the root's children.
    created_at: Mutex<HashMap<ThreadId, Vec<WasmFrame>>>,
    /// Races reported so far.
    reported: AtomicUsize,
    /// Where each live object of a shared type was allocated (by address), for reports on its fields;
    /// sharded by address, entries removed when the sweep frees the object.
    alloc_sites: Box<[Mutex<HashMap<u64, Site>>]>,
    /// Every access's backtrace, interned: an access's `Site` is its id here (`stack_depot.rs`).
    pub depot: StackDepot,
    /// The detector's address of element 0 of each shared table (by the address of its elements' lock):
    /// tables get addresses of their own, since the vector of elements moves when a table grows.
    table_bases: Mutex<HashMap<usize, (Weak<SharedTable>, u64)>>,
}

/// Where shared tables' elements are for the detector: far above any host address (user space ends below
/// 2^48), each table `2^TABLE_SPAN_BITS` bytes, 8 bytes an element (a table has at most 2^32 elements).
const TABLE_SPACE: u64 = 1 << 62;
const TABLE_SPAN_BITS: u32 = 35;

/// Shards of [`RaceRuntime::alloc_sites`] (objects are 8-aligned; the shard is from the bits above).
const SITE_SHARDS: usize = 64;

impl RaceRuntime {
    pub fn new() -> RaceRuntime {
        let detector = Detector::new();
        let root = Mutex::new(detector.main_thread());
        RaceRuntime {
            detector,
            root,
            created_at: Mutex::new(HashMap::new()),
            reported: AtomicUsize::new(0),
            alloc_sites: (0..SITE_SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            depot: StackDepot::default(),
            table_bases: Mutex::new(HashMap::new()),
        }
    }

    fn sites_of(&self, addr: u64) -> &Mutex<HashMap<u64, Site>> {
        &self.alloc_sites[(addr >> 4) as usize % SITE_SHARDS]
    }

    /// The object of a shared type at `addr` was allocated by the instruction at `site`.
    pub fn note_alloc(&self, addr: u64, site: Site) {
        lock(self.sites_of(addr)).insert(addr, site);
    }

    /// The sweep freed the object at `addr`.
    fn forget_alloc(&self, addr: u64) {
        lock(self.sites_of(addr)).remove(&addr);
    }

    /// Objects whose allocation sites are kept (live objects of shared types), for `--race-stats`.
    pub fn alloc_sites_kept(&self) -> usize {
        self.alloc_sites.iter().map(|s| lock(s).len()).sum()
    }

    /// A context for a store that no thread spawned.
    pub fn new_thread(&self) -> Box<ThreadCtx> {
        Box::new(self.detector.spawn(&mut lock(&self.root)))
    }

    /// A context for a thread `parent` spawns at `backtrace`.
    pub fn spawn(&self, parent: &mut ThreadCtx, backtrace: Vec<WasmFrame>) -> Box<ThreadCtx> {
        let child = self.detector.spawn(parent);
        lock(&self.created_at).insert(child.id(), backtrace);
        Box::new(child)
    }

    /// The detector's address of element 0 of the shared table `elems` (given out on first use; a table
    /// freed and another made at its address gets a new one).
    pub fn table_base(&self, elems: &Arc<SharedTable>) -> u64 {
        let mut bases = lock(&self.table_bases);
        let key = Arc::as_ptr(elems) as usize;
        if let Some((table, base)) = bases.get(&key)
            && table.upgrade().is_some_and(|t| Arc::ptr_eq(&t, elems))
        {
            return *base;
        }
        bases.retain(|_, (table, _)| table.strong_count() > 0);
        let used: std::collections::HashSet<u64> = bases.values().map(|&(_, b)| b).collect();
        let base = (0u64..).map(|i| TABLE_SPACE + (i << TABLE_SPAN_BITS)).find(|b| !used.contains(b)).unwrap_or(0);
        bases.insert(key, (Arc::downgrade(elems), base));
        base
    }

    /// Races reported so far.
    pub fn races(&self) -> usize {
        self.reported.load(Ordering::Relaxed)
    }

    /// Prints the report of `race`, found at `backtrace` (innermost first), to stderr.
    pub fn report(&self, found: &FoundRace, modules: &[Arc<ModuleData>], types: &TypeRegistry) {
        let race = &found.race;
        self.reported.fetch_add(1, Ordering::Relaxed);
        let created_at = lock(&self.created_at);
        let mut out = String::from("==================\nWARNING: DATA RACE\n");
        let (cur, prev) = (&race.current, &race.previous);
        out += &format!("{} by thread {}:\n", describe_access(cur, &found.location, modules), cur.thread);
        out += &self.stack_lines(cur.site, modules);
        let previous = describe_access(prev, &found.location, modules);
        out += &format!("\nPrevious {}{} by thread {}:\n", previous[..1].to_lowercase(), &previous[1..], prev.thread);
        out += &self.stack_lines(prev.site, modules);
        if let RaceLocation::Object(obj) = &found.location {
            // The first byte both accesses touched (a ranged access may start elements before it).
            let at = cur.addr.max(prev.addr);
            out += &format!("\nLocation is {}, allocated at:\n", describe_location(obj, at, modules, types));
            match lock(self.sites_of(obj.addr)).get(&obj.addr) {
                Some(&site) => out += &format!("    0: {}\n", describe_site(site, modules)),
                None => out += "    0: (the host: a constant expression)\n",
            }
        }
        for thread in [cur.thread, prev.thread] {
            match created_at.get(&thread) {
                Some(frames) if !frames.is_empty() => {
                    out += &format!("\nThread {thread} created at:\n");
                    for (i, f) in frames.iter().enumerate() {
                        out += &format!("  {i:>3}: {}\n", f);
                    }
                }
                _ => out += &format!("\nThread {thread} is the program's main thread.\n"),
            }
        }
        out += "==================\n";
        let _ = std::io::stderr().lock().write_all(out.as_bytes());
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl RaceRuntime {
    /// The backtrace of an access whose site is the depot stack `site`, a line per frame, innermost first.
    fn stack_lines(&self, site: Site, modules: &[Arc<ModuleData>]) -> String {
        let Some(stack) = u32::try_from(site.0).ok().and_then(|id| self.depot.get(id)) else {
            return "    0: (unknown)\n".to_string();
        };
        let mut out = String::new();
        for (i, f) in stack.iter().enumerate() {
            let frame = match modules.iter().find(|m| m.index == f.module) {
                Some(m) => wasm_frame(m, f.func_index, f.offset).to_string(),
                None => format!("offset {:#x}", f.offset),
            };
            out += &format!("  {i:>3}: {frame}\n");
        }
        out
    }
}

/// The frame of function `func_index` (index space) of `m` at wasm `offset`, as backtraces print it.
fn wasm_frame(m: &ModuleData, func_index: u32, offset: u32) -> WasmFrame {
    m.wasm_frame(func_index, offset)
}

/// The site of an object's allocation: the module's index in the runtime and the wasm offset of the
/// instruction (accesses have depot stacks as their sites instead).
pub(crate) fn site(module: &ModuleData, offset: u32) -> Site {
    Site((module.index as u64) << 32 | offset as u64)
}

/// `Write at 0x10 (4 bytes)`: the address as an offset in a memory, a heap address, or the global.
fn describe_access(a: &vmrace::Access, location: &RaceLocation, modules: &[Arc<ModuleData>]) -> String {
    let what = match a.kind {
        AccessKind::Read => "Read",
        AccessKind::Write => "Write",
        AccessKind::AtomicRead => "Atomic read",
        AccessKind::AtomicWrite => "Atomic write",
    };
    match *location {
        RaceLocation::Memory { base } => format!("{what} at {:#x} ({} bytes)", a.addr.wrapping_sub(base), a.size),
        RaceLocation::Object(_) => format!("{what} at {:#x} ({} bytes)", a.addr, a.size),
        RaceLocation::Table { module, index, base } => {
            let element = a.addr.wrapping_sub(base) / 8;
            let name = modules.iter().find(|m| m.index == module).and_then(|m| m.source.names().table_name(index));
            match name {
                Some(name) => format!("{what} of element {element} of shared table ${name} ({index})"),
                None => format!("{what} of element {element} of shared table {index}"),
            }
        }
        RaceLocation::Global { module, index } => {
            let name = modules.iter().find(|m| m.index == module).and_then(|m| m.source.names().global_name(index));
            match name {
                Some(name) => format!("{what} of shared global ${name} ({index}) ({} bytes)", a.size),
                None => format!("{what} of shared global {index} ({} bytes)", a.size),
            }
        }
    }
}

/// Where a race is, for its report.
pub(crate) enum RaceLocation {
    /// In a linear memory whose bytes start at host address `base` (reports show offsets).
    Memory { base: u64 },
    /// A field or element of a heap object (reports name its type, field and allocation site).
    Object(RacyObject),
    /// A shared global: global `index` of the module whose runtime index is `module` (reports name it; its
    /// cell's host address means nothing to the program).
    Global { module: u32, index: u32 },
    /// Elements of a shared table: table `index` of the module whose runtime index is `module`, whose
    /// element 0 is at the detector's address `base` ([`RaceRuntime::table_base`]; reports name the
    /// element).
    Table { module: u32, index: u32, base: u64 },
}

impl RaceRuntime {
    /// What a race hook of [`crate::tier::RaceHook`] bits `what` does at host address `addr` for `ctx`'s
    /// thread, the same for both tiers: the edges first (release, or the acquire of an atomic that read,
    /// which the caller makes after the operation), then the access of `width` bytes (a read or write,
    /// atomic or not), if any; the race it forms.
    pub fn hook(&self, ctx: &mut ThreadCtx, addr: u64, width: u64, what: u32, site: Site) -> Option<vmrace::Race> {
        use crate::tier::RaceHook;
        match (what & RaceHook::ACQUIRE != 0, what & RaceHook::RELEASE != 0) {
            (true, true) => self.detector.acq_rel(ctx, addr),
            (true, false) => self.detector.acquire(ctx, addr),
            (false, true) => self.detector.release(ctx, addr),
            (false, false) => {}
        }
        let atomic = what & RaceHook::ATOMIC != 0;
        let kind = match (what & RaceHook::READ != 0, what & RaceHook::WRITE != 0, atomic) {
            (true, _, false) => AccessKind::Read,
            (true, _, true) => AccessKind::AtomicRead,
            (false, true, false) => AccessKind::Write,
            (false, true, true) => AccessKind::AtomicWrite,
            (false, false, _) => return None,
        };
        match width {
            0 => None,
            1..=8 => self.detector.access(ctx, addr, width as u8, kind, site),
            _ => self.detector.access_range(ctx, addr, width, kind, site),
        }
    }
}

/// `module!function at file:line:col` for a site, as backtraces print frames.
fn describe_site(site: Site, modules: &[Arc<ModuleData>]) -> String {
    let (index, offset) = ((site.0 >> 32) as usize, site.0 as u32);
    let Some(m) = modules.get(index) else { return format!("offset {offset:#x}") };
    // The function whose instructions came from `offset`.
    let func = m.code.iter().position(|c| c.wasm_offsets.contains(&offset));
    let func_index = func.map_or(u32::MAX, |f| m.num_imported_funcs + f as u32);
    wasm_frame(m, func_index, offset).to_string()
}

/// The heap's side: allocations reset shadow state, the sweep's frees release it (see the module comment).
pub(crate) struct RaceObserver {
    pub race: Arc<RaceRuntime>,
}

impl RaceObserver {
    /// The collecting (or allocating) thread's context, from the heap's per-thread slot.
    fn ctx(ctx: &gc::ObserverCtx) -> Option<&ThreadCtx> {
        if ctx.race_ctx == 0 {
            return None;
        }
        // SAFETY: a nonzero `race_ctx` is the address of a mutator's boxed `ThreadCtx`, set when the mutator
        // was made and cleared before the box is dropped (`Mutator::retire`). Heap events carry the context
        // of the thread that sends them (the sweep runs on the collecting thread), so this is that thread's
        // own context, used only for the duration of the call, while the thread is inside the heap and holds
        // no other reference to it.
        Some(unsafe { &*(ctx.race_ctx as *const ThreadCtx) })
    }
}

impl gc::HeapObserver for RaceObserver {
    fn object_alloc(&self, _ctx: &gc::ObserverCtx, obj: &gc::observer::ObjectInfo) {
        if planted_bug_skip_reset_on_alloc() {
            return;
        }
        self.race.detector.reset_range(obj.addr as u64, obj.size as u64);
    }

    fn object_free(&self, ctx: &gc::ObserverCtx, obj: &gc::observer::ObjectInfo) {
        if crate::race::planted_bug_skip_racefree() {
            return;
        }
        self.race.forget_alloc(obj.addr as u64);
        if let Some(collector) = Self::ctx(ctx) {
            self.race.detector.free_range(collector, obj.addr as u64, obj.size as u64);
        }
    }

    fn span_free(&self, ctx: &gc::ObserverCtx, span: &gc::observer::SpanInfo) {
        if crate::race::planted_bug_skip_racefree() {
            return;
        }
        if let Some(collector) = Self::ctx(ctx) {
            let bytes = (span.npages * gc::PAGE_SIZE) as u64;
            self.race.detector.free_range(collector, span.base as u64, bytes);
        }
    }
}

/// `VMRUN_RACE_DEBUG`: planted bugs for the negative controls of `tests/race.rs` (comma-separated).
/// `skip-racefree`: the sweep's frees do not reach the detector, so its state grows without bound.
/// `skip-reset-on-alloc`: an allocation keeps the shadow state of the slot's previous object. Either
/// alone still leaves a reused slot clean (the other clears it); both make a reused slot race with what
/// a dead object saw, a false report. The others are below.
fn planted_bug(name: &str) -> bool {
    static BUGS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    BUGS.get_or_init(|| {
        std::env::var("VMRUN_RACE_DEBUG").map(|v| v.split(',').map(str::to_string).collect()).unwrap_or_default()
    })
    .iter()
    .any(|b| b == name)
}

pub(crate) fn planted_bug_skip_racefree() -> bool {
    planted_bug("skip-racefree")
}

fn planted_bug_skip_reset_on_alloc() -> bool {
    planted_bug("skip-reset-on-alloc")
}

/// `skip-range-hook`: bulk operations on shared arrays are not checked (either tier).
pub(crate) fn planted_bug_skip_range_hook() -> bool {
    planted_bug("skip-range-hook")
}

/// `one-frame-depot`: the stack depot keeps only the innermost frame of each stack, so a report shows one
/// frame per access (as before the depot).
pub(crate) fn planted_bug_one_frame_depot() -> bool {
    planted_bug("one-frame-depot")
}

/// `skip-table-hook`: accesses to elements of shared tables are not checked (either tier).
pub(crate) fn planted_bug_skip_table_hook() -> bool {
    planted_bug("skip-table-hook")
}

/// `skip-global-hook`: plain and atomic accesses of shared globals are not checked (either tier; their
/// edges stay).
pub(crate) fn planted_bug_skip_global_hook() -> bool {
    planted_bug("skip-global-hook")
}

/// A racy access to a field or element of a heap object (the object is live while it is reported).
pub(crate) struct RacyObject {
    /// The object's address (its header).
    pub addr: u64,
    pub type_id: u32,
}

/// `field $x (1) of struct $s at 0x...` or `element 3 of array $a at 0x...`: what the address `at`
/// is in `obj`, named from the name sections of the modules that define its type.
fn describe_location(obj: &RacyObject, at: u64, modules: &[Arc<ModuleData>], types: &TypeRegistry) -> String {
    let offset = at.wrapping_sub(obj.addr) as u32;
    // The first module with a name for the type's index, or any that has the type.
    let mut named = None;
    for m in modules {
        if let Some(index) = m.type_ids.iter().position(|&id| id == obj.type_id) {
            let name = m.source.type_name(index as u32).map(|n| format!("${n}"));
            if named.is_none() || name.is_some() {
                named = Some((m, index as u32, name));
            }
            if named.as_ref().is_some_and(|n| n.2.is_some()) {
                break;
            }
        }
    }
    let type_name = named.as_ref().and_then(|n| n.2.clone());
    match &types.get(obj.type_id).kind {
        TypeKind::Struct { fields } => {
            let index = fields.iter().position(|f| offset >= f.offset && offset < f.offset + f.kind.size());
            let field = match (index, &named) {
                (Some(i), Some((m, t, _))) => match m.source.names().field_name(*t, i as u32) {
                    Some(name) => format!("field ${name} ({i})"),
                    None => format!("field {i}"),
                },
                (Some(i), None) => format!("field {i}"),
                (None, _) => format!("offset {offset}"),
            };
            let ty = type_name.unwrap_or_else(|| format!("type {}", obj.type_id));
            format!("{field} of shared struct {ty} at {:#x}", obj.addr)
        }
        TypeKind::Array { elem, .. } => {
            let index = (offset as usize).saturating_sub(gc::HEADER_SIZE) / elem.size() as usize;
            let ty = type_name.unwrap_or_else(|| format!("type {}", obj.type_id));
            format!("element {index} of shared array {ty} at {:#x}", obj.addr)
        }
        _ => format!("offset {offset} of the object at {:#x}", obj.addr),
    }
}
