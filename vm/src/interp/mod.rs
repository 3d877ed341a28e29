//! The interpreter: executes [`crate::bytecode`].
//!
//! # Model
//!
//! One value stack of 8-byte slots per mutator ([`ExecState::stack`]) holds every wasm frame; a frame is a
//! window `stack[fp..fp + frame_size]`. Calls never recurse on the host stack: a call pushes a [`Frame`]
//! (the caller's instance, function, pc and fp) on [`ExecState::frames`] and switches the dispatch loop to
//! the callee, so unbounded guest recursion ends in a clean `call stack exhausted` trap when either the
//! frame count or the value stack runs out.
//!
//! The dispatch loop ([`dispatch::execute`]) runs while control stays in one instance. It keeps the
//! instance's memory 0 as a local byte slice (a view of the mapping, re-derived by `memory.grow`) so a
//! load or store is one bounds check away from the bytes. Anything that needs the whole store (host
//! calls, switching to another instance, collections, parking at a safepoint) leaves the loop with an
//! [`Exit`] that [`run`] handles before re-entering.
//!
//! # Files
//!
//! Like wasmi's executor, the instruction set is split by family, with one dispatch loop:
//!
//! - `mod.rs` (here): entering wasm ([`invoke`]), the driver loop over [`Exit`]s ([`run`]), backtraces.
//! - `host.rs`: calls from wasm to host functions.
//! - `dispatch.rs`: the loop, one `match` with an arm per instruction. Control flow (branches, calls,
//!   returns, safepoint polls) is written there because it changes `pc`, `frame` and `code`; every other
//!   arm is one line calling its family's handler.
//! - `numeric.rs` (with `float.rs`), `memory.rs`, `tables.rs`, `gc_objects.rs`: the handlers, one per
//!   instruction, taking the frame and the instruction's operands (plus the entities they touch). Hot
//!   handlers are `#[inline(always)]` so the loop still compiles to one jump table; none of them looks at
//!   the instruction again.
//! - `atomics.rs`: the threads proposal's atomic instructions (cold) and `memory.atomic.wait`, which
//!   blocks outside the loop.
//! - `exceptions.rs`: `throw` (the exception is a heap object), `throw_ref`, and unwinding the frames to
//!   the handler ([`Exit::Throw`] goes to `rethrow` here, which calls it).
//! - `cold.rs`: the out-of-line path for instructions that are rare in hot code (memories other than 0,
//!   bulk memory, tables, references, GC objects): a second `match` behind one call, resolving the
//!   instance's index spaces before calling the same family files' handlers.
//! - `operands.rs`: how a slot holds each value type, shared by every family.
//! - `jit.rs`: entering compiled code, its library calls, tier-up; `osr.rs`: on-stack replacement of a
//!   looping interpreted frame by compiled code.
//!
//! Imports point one way: `mod.rs` → `dispatch.rs`, `host.rs`, `exceptions.rs`; `dispatch.rs` → `cold.rs` and
//! the family files; `cold.rs` → the family files; the family files → `operands.rs` (and `numeric.rs` → `float.rs`).
//! `jit.rs` and `osr.rs` call back into this file's driver (`invoke`; `backtrace`, `rethrow`), and `osr.rs`
//! into `jit.rs`.
//! Otherwise no file imports `mod.rs`.
//!
//! # GC safety
//!
//! A collection can start only at an allocation, inside a call or at a safepoint poll. At that moment every
//! frame's pc is saved: callers' in [`Frame::pc`] (the call instruction), the running function's in
//! [`ExecState::top`]. The translator's stack map for that pc names the slots holding references, which is
//! how the collector finds every root precisely (see `safepoint.rs`).
//!
//! [`ExecState::stack`]: crate::mutator::ExecState::stack
//! [`ExecState::frames`]: crate::mutator::ExecState::frames
//! [`ExecState::top`]: crate::mutator::ExecState::top

mod atomics;
mod cold;
mod dispatch;
mod exceptions;
mod float;
mod gc_objects;
mod host;
mod jit;
mod jit_gc;
mod jit_memory;
mod jit_tables;
mod memory;
mod numeric;
mod operands;
mod osr;
mod race_hooks;
mod race_stack;
mod shared_gc;
mod tables;

pub(crate) use jit_gc::visit_compiled_frames;

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::Ordering;

use self::dispatch::{Exit, execute};
use self::host::call_host;
pub(crate) use self::jit::{
    compiled_code, initial_slot, libcalls, link_eager, memory_fault_trap, refresh_global_addresses,
};
pub(crate) use self::race_hooks::FoundRace;
use crate::mutator::{Frame, Position};
use crate::native_stack::REENTRY_MARGIN;
use crate::safepoint;
use crate::state::{FuncKind, StoreState};
use crate::types::TypeKind;
use crate::{Trap, TrapKind, WasmFrame, tier};

/// Call `func` (a store function index) with raw arguments; returns raw results. Runs on the mutator's
/// native stack: the outermost invocation switches to it, a nested one (host → wasm) is already there and
/// only checks that enough of it is left (`native_stack.rs`, the margin contract).
pub(crate) fn invoke(store: &mut StoreState, func: u32, args: &[u64]) -> Result<Vec<u64>, Trap> {
    let Some(stack) = store.mutator.native.take() else {
        if store.mutator.native_bounds.remaining() < REENTRY_MARGIN {
            return Err(Trap::new(TrapKind::CallStackExhausted));
        }
        return invoke_here(store, func, args);
    };
    let result = catch_unwind(AssertUnwindSafe(|| stack.run(|| invoke_here(store, func, args))));
    store.mutator.native = Some(stack);
    result.unwrap_or_else(|panic| resume_unwind(panic))
}

/// [`invoke`] on the current stack.
fn invoke_here(store: &mut StoreState, func: u32, args: &[u64]) -> Result<Vec<u64>, Trap> {
    let (inst, index) = match &store.funcs[func as usize].kind {
        FuncKind::Host(_) => {
            let base = store.mutator.exec.sp;
            let n = args.len().max(func_result_count(store, func));
            if !store.mutator.exec.stack.grow(base + n) {
                return Err(Trap::new(TrapKind::CallStackExhausted));
            }
            store.mutator.exec.stack[base..base + args.len()].copy_from_slice(args);
            call_host(store, func, base, None)?;
            let nres = func_result_count(store, func);
            return Ok(store.mutator.exec.stack[base..base + nres].to_vec());
        }
        FuncKind::Wasm { instance, index } => (*instance, *index),
    };
    if let Some(code) = compiled_for_entry(store, inst, index) {
        let base = store.mutator.exec.sp;
        let (np, nr) = (args.len(), func_result_count(store, func));
        if !store.mutator.exec.stack.grow(base + np.max(nr)) {
            return Err(Trap::new(TrapKind::CallStackExhausted));
        }
        store.mutator.exec.stack[base..base + np].copy_from_slice(args);
        jit::call_compiled(store, inst, code, base, np.max(nr))?;
        return Ok(store.mutator.exec.stack[base..base + nr].to_vec());
    }
    let module = store.instances[inst as usize].module.clone();
    let cf = &module.code[index as usize];
    let base = store.mutator.exec.sp;
    let depth0 = store.mutator.exec.frames.len();
    let saved_top = store.mutator.exec.top;
    if depth0 >= store.rt.config.max_call_depth || !store.mutator.exec.stack.grow(base + cf.frame_size as usize) {
        return Err(Trap::new(TrapKind::CallStackExhausted));
    }
    store.mutator.exec.stack[base..base + args.len()].copy_from_slice(args);
    cf.init_frame(&mut store.mutator.exec.stack[base..]);
    // A nested invocation (wasm → host → wasm): the suspended wasm caller becomes a frame, so
    // backtraces and the collector's root scan see it.
    if let Some(t) = saved_top {
        store.mutator.exec.frames.push(Frame { inst: t.inst, func: t.func, pc: t.pc as u32, fp: t.fp as u32 });
    }
    let depth0 = store.mutator.exec.frames.len();
    let pos = Position { inst, func: index, pc: 0, fp: base };
    let result = run(store, pos, depth0);
    let outer_depth = if saved_top.is_some() { depth0 - 1 } else { depth0 };
    store.mutator.exec.frames.truncate(outer_depth);
    store.mutator.exec.top = saved_top;
    store.mutator.exec.sp = base;
    result.map(|()| store.mutator.exec.stack[base..base + cf.num_results as usize].to_vec())
}

/// The compiled code to enter defined function `index` of `inst` with, counting the entry towards
/// tier-up as a call from the interpreter does.
fn compiled_for_entry(store: &mut StoreState, inst: u32, index: u32) -> Option<&'static tier::CompiledFunc> {
    let slot = &store.instances[inst as usize].tier_slots[index as usize];
    match slot.load(Ordering::Relaxed) {
        0 => None,
        1 => {
            jit::tier_up(store, inst, index);
            let v = store.instances[inst as usize].tier_slots[index as usize].load(Ordering::Relaxed);
            (v != 0).then(|| jit::slot_code(v))
        }
        v if v & 1 == 1 => {
            slot.store(v - 2, Ordering::Relaxed);
            None
        }
        v => Some(jit::slot_code(v)),
    }
}

fn func_result_count(store: &StoreState, func: u32) -> usize {
    match &store.rt.types.get(store.funcs[func as usize].ty).kind {
        TypeKind::Func { results, .. } => results.len(),
        _ => 0,
    }
}

/// Drive execution from `pos` until the frame stack is back at `depth0`.
fn run(store: &mut StoreState, mut pos: Position, depth0: usize) -> Result<(), Trap> {
    loop {
        let exit = execute(store, &mut pos, depth0);
        match exit {
            Exit::Return => return Ok(()),
            Exit::Switch => {
                // A call into another instance enters its callee here: poll as at any function entry.
                if pos.pc == 0 && store.mutator.link.stop_flag().load(Ordering::Relaxed) {
                    store.mutator.exec.top = Some(pos);
                    safepoint::park(store);
                }
                if pos.pc == 0
                    && let Some(code) = compiled_for_entry(store, pos.inst, pos.func)
                {
                    // The callee's frame is set up at `pos.fp`: run it compiled and return from it.
                    let (np, nr) = {
                        let cf = &store.instances[pos.inst as usize].module.code[pos.func as usize];
                        (cf.num_params as usize, cf.num_results as usize)
                    };
                    // The caller (if any) is already a frame; nothing runs in this one meanwhile.
                    store.mutator.exec.top = None;
                    if let Err(mut t) = jit::call_compiled(store, pos.inst, code, pos.fp, np.max(nr)) {
                        if let Some(f) = store.mutator.exec.frames.get(depth0..).and_then(|f| f.last()).copied() {
                            let caller = Position { inst: f.inst, func: f.func, pc: f.pc as usize, fp: f.fp as usize };
                            store.mutator.exec.frames.pop();
                            if let Some(raw) = take_exception(store, &t) {
                                // Thrown by code the compiled callee called: the caller's handlers may take it.
                                pos = caller;
                                rethrow(store, &mut pos, depth0, raw, false, t.backtrace)?;
                                continue;
                            }
                            t.backtrace.extend(backtrace(store, caller, depth0));
                        }
                        return Err(t);
                    }
                    match return_to_caller(store, depth0) {
                        Some(p) => pos = p,
                        None => return Ok(()),
                    }
                }
            }
            Exit::Jit { func, base, tail } => {
                store.mutator.exec.top = Some(pos);
                let v = store.instances[pos.inst as usize].tier_slots[func as usize].load(Ordering::Relaxed);
                let code = jit::slot_code(v);
                let (np, nr) = {
                    let cf = &store.instances[pos.inst as usize].module.code[func as usize];
                    (cf.num_params as usize, cf.num_results as usize)
                };
                if let Err(mut t) = jit::call_compiled(store, pos.inst, code, base, np.max(nr)) {
                    if let Some(raw) = take_exception(store, &t) {
                        // Thrown by interpreted code the compiled code called (compiled frames only pass it
                        // on): throw it again here, where this invocation's handlers can take it.
                        rethrow(store, &mut pos, depth0, raw, tail, t.backtrace)?;
                        continue;
                    }
                    t.backtrace.extend(backtrace(store, pos, depth0));
                    return Err(t);
                }
                if tail {
                    match return_to_caller(store, depth0) {
                        Some(p) => pos = p,
                        None => return Ok(()),
                    }
                } else {
                    pos.pc += 1;
                }
            }
            Exit::TierUp { func } => jit::tier_up(store, pos.inst, func),
            Exit::Osr { header } => {
                if let osr::After::Return = osr::enter(store, &mut pos, depth0, header)? {
                    return Ok(());
                }
            }
            Exit::Safepoint { resume } => {
                store.mutator.exec.top = Some(pos);
                safepoint::park(store);
                pos.pc = resume;
            }
            Exit::Host { func, base, tail } => {
                store.mutator.exec.top = Some(pos);
                let result = if store.mutator.native_bounds.remaining() < REENTRY_MARGIN {
                    Err(Trap::new(TrapKind::CallStackExhausted))
                } else {
                    call_host(store, func, base, Some(pos.inst))
                };
                if let Err(mut t) = result {
                    if let Some(raw) = take_exception(store, &t) {
                        // An exception out of the host (thrown by wasm it called): throw it again here.
                        rethrow(store, &mut pos, depth0, raw, tail, t.backtrace)?;
                        continue;
                    }
                    if t.backtrace.is_empty() {
                        t.backtrace = backtrace(store, pos, depth0);
                    }
                    return Err(t);
                }
                if tail {
                    // The host results sit at the frame base: finish the `return_call`.
                    match return_to_caller(store, depth0) {
                        Some(p) => pos = p,
                        None => return Ok(()),
                    }
                } else {
                    pos.pc += 1;
                }
            }
            Exit::Collect => {
                store.mutator.exec.top = Some(pos);
                safepoint::collect(store);
                store.mutator.alloc.gc_retry = true;
            }
            Exit::Wait => {
                if let Err(mut t) = atomics::wait(store, pos) {
                    t.backtrace = backtrace(store, pos, depth0);
                    return Err(t);
                }
                pos.pc += 1;
            }
            Exit::GrowStack { slots } => {
                if !store.mutator.exec.stack.grow(slots) {
                    let bt = backtrace(store, pos, depth0);
                    return Err(Trap { kind: TrapKind::CallStackExhausted, backtrace: bt });
                }
            }
            Exit::Trap(kind) => {
                let bt = backtrace(store, pos, depth0);
                return Err(Trap { kind, backtrace: bt });
            }
            Exit::Throw(exn) => rethrow(store, &mut pos, depth0, exn, false, Vec::new())?,
            Exit::Race(found) => {
                if let Some(race) = &store.rt.race {
                    race.report(&found, &store.rt.modules(), &store.rt.types);
                }
                pos.pc += 1;
            }
        }
    }
}

/// The exception an `UncaughtException` trap carries out of a nested invocation (through a host function or
/// compiled code), taken back from its handle so it can be thrown again in this one; `None` for other traps.
fn take_exception(store: &mut StoreState, t: &Trap) -> Option<u64> {
    let TrapKind::UncaughtException { exn, .. } = t.kind else { return None };
    let raw = store.mutator.handles.get(exn)?;
    store.mutator.handles.remove(exn);
    Some(raw)
}

/// Unwind to the handler of `exn` thrown at `pos` (see `exceptions.rs`), or leave with the
/// `UncaughtException` trap: its backtrace is `inner` (the frames of a nested invocation it came out of) and
/// this invocation's frames from the throw outwards.
fn rethrow(
    store: &mut StoreState,
    pos: &mut Position,
    depth0: usize,
    exn: u64,
    skip_current: bool,
    mut inner: Vec<WasmFrame>,
) -> Result<(), Trap> {
    if exceptions::unwind(store, pos, depth0, exn, skip_current) {
        return Ok(());
    }
    inner.extend(backtrace(store, *pos, depth0));
    let tag = exceptions::exception_tag_name(&store.rt.types, exn);
    let exn = store.mutator.handles.insert(exn);
    Err(Trap { kind: TrapKind::UncaughtException { exn, tag }, backtrace: inner })
}

/// Return from the running function, whose results sit at its frame base: the caller's position after
/// its call, or `None` when the entry function returned.
fn return_to_caller(store: &mut StoreState, depth0: usize) -> Option<Position> {
    if store.mutator.exec.frames.len() == depth0 {
        return None;
    }
    let f = store.mutator.exec.frames.pop().expect("frame above depth0");
    Some(Position { inst: f.inst, func: f.func, pc: f.pc as usize + 1, fp: f.fp as usize })
}

/// The wasm backtrace of a store in a host call (its wasm frames, innermost first), e.g. where a thread
/// was spawned.
pub(crate) fn host_call_backtrace(store: &StoreState) -> Vec<WasmFrame> {
    if let Some(frames) = &store.mutator.jit_host_frames {
        return frames.clone();
    }
    store.mutator.exec.top.map_or_else(Vec::new, |top| backtrace(store, top, 0))
}

/// The wasm backtrace, innermost first.
fn backtrace(store: &StoreState, top: Position, depth0: usize) -> Vec<WasmFrame> {
    let mut out = Vec::new();
    let mut push = |inst: u32, func: u32, pc: usize| {
        let m = &store.instances[inst as usize].module;
        let offset = m.code[func as usize].wasm_offsets.get(pc).copied().unwrap_or(0);
        out.push(jit::wasm_frame(m, m.num_imported_funcs + func, offset));
    };
    push(top.inst, top.func, top.pc);
    for f in store.mutator.exec.frames[depth0..].iter().rev() {
        push(f.inst, f.func, f.pc as usize);
    }
    out
}
