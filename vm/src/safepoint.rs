//! Safepoints: where a mutator stops for a collection, and what the collector finds there.
//!
//! A collection is requested, never run behind other threads' backs. The mutator that wants one stops the
//! world (`gc::Heap::stop_the_world`): every other mutator of the runtime is then parked at a safepoint or
//! native (in a host call, or its store idle between calls), each with its root set published, and the
//! collector scans all of them with the requester's own. The protocol itself is the heap's
//! (`gc/src/world.rs`); this file is the VM's side of it.
//!
//! **Where a mutator stops.** The interpreter polls its stop flag (one relaxed load, one predictable
//! branch) at every function entry (pc 0 of the callee, frame set up) and every backward branch (a loop
//! back-edge), and leaves its dispatch loop with `Exit::Safepoint` when it is set; a loop without calls or
//! allocations stops within one iteration. Allocations that may collect and calls are GC points too. The
//! translator records a stack map at each of these pcs (`record_back_edge_map`, the entry map), so the
//! frames of a parked mutator are scanned as precisely as those of the collector itself.
//!
//! **Native.** While a mutator is in a host call or its store is idle, it counts as stopped and its whole
//! `StoreState` is its published root set: the host must not touch the heap or the roots meanwhile, which
//! is why every `Store` method that does runs inside [`Running`] and `Caller::call` leaves native before
//! re-entering wasm.
//!
//! **The root set of a store** ([`gc::RootSet`] for `StoreState`): the stack-map slots of every frame
//! (suspended callers at their call pc, the running function at `ExecState::top`), reference globals,
//! non-function tables, element segments, and the host roots (values of constant expressions being
//! evaluated, objects the embedding API has handed out).

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::mutator::{ExecState, Mutator};
use crate::state::{GlobalEntity, Instance, StoreState, TableEntity};
use crate::types::TypeRegistry;

/// The root set of a store, borrowed field by field so that the thread cache and the safepoint link stay
/// free for the collection itself.
struct StoreRoots<'a> {
    exec: &'a ExecState,
    instances: &'a [Instance],
    globals: &'a [GlobalEntity],
    tables: &'a [TableEntity],
    types: &'a TypeRegistry,
    host_roots: &'a [u64],
    handles: &'a crate::handles::HandleTable,
    jit_code: &'a crate::tier::CodeMap,
    /// The runtime's spawn arguments in flight (every store visits them; a root twice is still a root).
    handoffs: &'a std::sync::Mutex<Vec<(u32, u64)>>,
}

impl gc::RootSet for StoreRoots<'_> {
    fn visit_roots(&mut self, visit: &mut dyn FnMut(u64)) {
        let exec = self.exec;
        let instances = self.instances;
        let mut frame = |inst: u32, func: u32, pc: usize, fp: usize| {
            let cf = &instances[inst as usize].module.code[func as usize];
            match cf.stack_map_at(pc as u32) {
                Some(slots) => {
                    for &s in slots {
                        visit(exec.stack[fp + s as usize]);
                    }
                }
                None => debug_assert!(false, "no stack map at pc {pc} of function {func}: not a GC point"),
            }
        };
        for f in &exec.frames {
            frame(f.inst, f.func, f.pc as usize, f.fp as usize);
        }
        if let Some(top) = exec.top {
            frame(top.inst, top.func, top.pc, top.fp);
        }
        crate::interp::visit_compiled_frames(&exec.jit_exit, &exec.jit_segments, self.jit_code, visit);
        for g in self.globals {
            if matches!(g.desc.ty, crate::types::RtValType::Ref { .. }) {
                visit(g.load());
            }
        }
        for t in self.tables {
            if t.shared().is_some() && planted_bug_shared_table_unrooted() {
                continue;
            }
            // A shared table is in every store that holds it; marking twice is harmless.
            if t.desc.heap.top(self.types) != crate::types::RtHeapType::Func {
                for &v in t.elems().iter() {
                    visit(v);
                }
            }
        }
        for inst in instances {
            for seg in &inst.elems {
                for &v in seg.iter() {
                    visit(v);
                }
            }
        }
        for &v in self.host_roots {
            visit(v);
        }
        // Held only for pushes and removals, never across a wait for the world, so this cannot deadlock.
        if !planted_bug_spawn_arg_unrooted() {
            for &(_, v) in self.handoffs.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter() {
                visit(v);
            }
        }
        self.handles.visit(visit);
    }
}

/// `VMRUN_VM_DEBUG=spawn-arg-unrooted`: the planted bug of `tests/gc.rs`'s negative control: arguments of
/// `vmrun`.`thread_spawn` on their way to their thread are not roots, so a collection in between frees them.
fn planted_bug_spawn_arg_unrooted() -> bool {
    static BUG: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *BUG.get_or_init(|| std::env::var_os("VMRUN_VM_DEBUG").is_some_and(|v| v == "spawn-arg-unrooted"))
}

/// `VMRUN_VM_DEBUG=shared-table-unrooted`: the planted bug of `tests/shared_gc.rs`'s negative control:
/// shared tables are not roots, so what only a shared table holds is freed.
fn planted_bug_shared_table_unrooted() -> bool {
    static BUG: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *BUG.get_or_init(|| std::env::var_os("VMRUN_VM_DEBUG").is_some_and(|v| v == "shared-table-unrooted"))
}

/// Split `$state` into its root set and the rest of its mutator.
macro_rules! split_roots {
    ($state:expr, $mutator:ident, $rt:ident, $roots:ident) => {
        let StoreState { rt: $rt, mutator: $mutator, instances, globals, tables, .. } = $state;
        let $roots = StoreRoots {
            exec: &$mutator.exec,
            instances,
            globals,
            tables,
            types: &$rt.types,
            host_roots: &$mutator.host_roots,
            handles: &$mutator.handles,
            jit_code: &$rt.jit_code,
            handoffs: &$rt.handoffs,
        };
    };
}

/// A native mutator publishes its whole state.
impl gc::RootSet for StoreState {
    fn visit_roots(&mut self, visit: &mut dyn FnMut(u64)) {
        split_roots!(self, mutator, rt, roots);
        let mut roots = roots;
        roots.visit_roots(visit);
    }
}

/// Stop at a safepoint (the stop flag was seen set): park until the collector releases the world.
/// `ExecState::top` must name the running function at a pc with a stack map.
pub(crate) fn park(state: &mut StoreState) {
    split_roots!(state, mutator, rt, roots);
    let mut roots = roots;
    mutator.link.park(&mut roots);
}

/// Run a collection: stop the world (or, if another mutator is already collecting, park until it is done:
/// then the allocation that asked is retried), collect with every mutator's roots, release.
pub(crate) fn collect(state: &mut StoreState) {
    let StoreState { rt, mutator, instances, globals, tables, .. } = state;
    let Mutator { exec, cache, alloc, host_roots, handles, link, .. } = mutator;
    let handoffs = &rt.handoffs;
    let mut roots = StoreRoots {
        exec,
        instances,
        globals,
        tables,
        types: &rt.types,
        host_roots,
        handles,
        jit_code: &rt.jit_code,
        handoffs,
    };
    let Some(world) = rt.heap.stop_the_world(link, &mut roots) else { return };
    rt.heap.collect(&world, cache, &mut roots);
    // The world is stopped, so the tracer may snapshot the heap for a new generation.
    if let Some(t) = &alloc.tracing {
        t.tracer.maybe_advance_generation(&vmtrace::StoppedHeap { heap: &rt.heap, world: &world });
    }
}

/// Close the mutator's alloc/free trace, if one is open, with the world stopped for its exit snapshot.
pub(crate) fn finish_trace(state: &mut StoreState) -> Option<std::io::Result<vmtrace::TraceStats>> {
    let tracing = state.mutator.alloc.tracing.take()?;
    if !tracing.is_owner() {
        // A thread that joined another store's trace: its end, not the trace's.
        tracing.leave();
        return None;
    }
    *state.rt.active_trace.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    loop {
        split_roots!(state, mutator, rt, roots);
        let mut roots = roots;
        // `None`: another thread was collecting and this one parked meanwhile; ask again.
        if let Some(world) = rt.heap.stop_the_world(&mutator.link, &mut roots) {
            return Some(tracing.finish(&vmtrace::StoppedHeap { heap: &rt.heap, world: &world }));
        }
    }
}

/// Brackets a store method that touches the heap or the roots: the mutator runs (waiting for a collection
/// in progress to finish) for the lifetime of the guard and is native again, its roots published, after.
pub(crate) struct Running<'a> {
    state: &'a mut StoreState,
}

impl<'a> Running<'a> {
    pub fn new(state: &'a mut StoreState) -> Running<'a> {
        state.mutator.link.leave_native();
        Running { state }
    }
}

impl std::ops::Deref for Running<'_> {
    type Target = StoreState;
    fn deref(&self) -> &StoreState {
        self.state
    }
}

impl std::ops::DerefMut for Running<'_> {
    fn deref_mut(&mut self) -> &mut StoreState {
        self.state
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        enter_native(self.state);
    }
}

/// Mutators of the process blocked in a call out of wasm right now: a host function or `memory.atomic.wait`.
/// The end of a program asks it: such a thread may not finish by itself, so the exit need not wait for it
/// (`WasiThreads::wait_for_threads`). A host function calling back into wasm stays counted (a heuristic:
/// at worst the exit does not wait for that thread).
static IN_BLOCKING_CALLS: AtomicUsize = AtomicUsize::new(0);

/// How many mutators are in a call out of wasm (a snapshot).
pub fn mutators_in_blocking_calls() -> usize {
    IN_BLOCKING_CALLS.load(Ordering::SeqCst)
}

/// Before a call out of wasm that may block (a host function, `memory.atomic.wait`): the mutator is native
/// for the call, so a collection on another thread need not wait for it.
pub(crate) fn enter_blocking_call(state: &mut StoreState) {
    enter_native(state);
    IN_BLOCKING_CALLS.fetch_add(1, Ordering::SeqCst);
}

/// After [`enter_blocking_call`]'s call: running again (after any collection in progress).
pub(crate) fn leave_blocking_call(state: &mut StoreState) {
    IN_BLOCKING_CALLS.fetch_sub(1, Ordering::SeqCst);
    state.mutator.link.leave_native();
}

/// The mutator leaves the heap with its whole store as its published root set (idle, or in a host call).
pub(crate) fn enter_native(state: &mut StoreState) {
    let roots: *mut StoreState = state;
    // SAFETY: `roots` points at the store's state, which does not move (it is boxed, or borrowed by the
    // host call in progress); its owner uses it again only after `leave_native` (every method that touches
    // the heap or the roots runs inside `Running`, a host call leaves native before it returns or re-enters
    // wasm, and the store's drop leaves native first). The collector's visit does not read the link.
    unsafe { state.mutator.link.enter_native(roots as *mut dyn gc::RootSet) };
}
