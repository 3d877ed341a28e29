//! The compiled tier's library calls for any memory, data segments, the threads proposal's waits and
//! `--race` ([`crate::tier::MemLibcalls`]), and `return_call_indirect`'s callee lookup.
//!
//! Each one does what the interpreter's handler of the same instruction does, through the same functions
//! (`LinearMemory`'s bulk operations, `memory_atomic`, the race detector), so the two tiers cannot differ
//! in semantics or trap messages: compiled code inlines only plain and atomic accesses, whose checks it
//! repeats in the interpreter's order (alignment, then bounds).
//!
//! **Race reports from compiled code.** Every race hook gets its caller's frame pointer and wasm offset;
//! the access's site, its whole backtrace in the stack depot, is walked from there up the compiled frames
//! and on through the interpreter frames and compiled runs below them (`race_stack.rs`), and a race
//! found is reported in place with both backtraces from the depot. Execution then goes on, as after an
//! interpreter report.

use std::sync::Arc;

use super::jit::{wasm_frame, with_store};
use super::race_hooks::FoundRace;
use crate::memory::LinearMemory;
use crate::memory_atomic::{self, WaitResult};
use crate::race::RaceLocation;
use crate::state::{FuncKind, StoreState};
use crate::tier::{FuncEntry, MemLibcalls, RaceHook, VmCtx};
use crate::types::TypeKind;
use crate::{Trap, TrapKind, WasmFrame};

pub(super) fn mem_libcalls() -> MemLibcalls {
    MemLibcalls {
        grow: lib_grow as *const () as usize,
        fill: lib_fill as *const () as usize,
        copy: lib_copy as *const () as usize,
        init: lib_init as *const () as usize,
        data_drop: lib_data_drop as *const () as usize,
        wait: lib_wait as *const () as usize,
        notify: lib_notify as *const () as usize,
        race: lib_race as *const () as usize,
        race_object: lib_race_object as *const () as usize,
    }
}

/// The store memory behind memory `m` of instance `inst`.
fn memory(store: &StoreState, inst: u32, m: u32) -> Arc<LinearMemory> {
    store.memories[store.instances[inst as usize].memories[m as usize] as usize].clone()
}

fn oob<T>(r: Result<T, crate::memory::OutOfBounds>) -> Result<(), Trap> {
    r.map(|_| ()).map_err(|_| Trap::new(TrapKind::MemoryOutOfBounds))
}

extern "C" fn lib_grow(vmctx: *mut VmCtx, mem: u32, delta: u32) -> u32 {
    let mut old = u32::MAX;
    with_store(vmctx, |store, inst| {
        old = memory(store, inst, mem).grow(delta as u64).map_or(u32::MAX, |p| p as u32);
        Ok(())
    });
    old
}

extern "C" fn lib_fill(vmctx: *mut VmCtx, mem: u32, dst: u32, value: u32, len: u32) -> u32 {
    with_store(vmctx, |store, inst| oob(memory(store, inst, mem).fill(dst as u64, value as u8, len as u64)))
}

extern "C" fn lib_copy(vmctx: *mut VmCtx, dst_mem: u32, src_mem: u32, dst: u32, src: u32, len: u32) -> u32 {
    with_store(vmctx, |store, inst| {
        let (d, s) = (memory(store, inst, dst_mem), memory(store, inst, src_mem));
        oob(d.copy_from(dst as u64, &s, src as u64, len as u64))
    })
}

extern "C" fn lib_init(vmctx: *mut VmCtx, mem: u32, data: u32, dst: u32, src: u32, len: u32) -> u32 {
    with_store(vmctx, |store, inst| {
        let seg = store.instances[inst as usize].datas[data as usize].clone();
        oob(memory(store, inst, mem).init(dst as u64, &seg, src as u64, len as u64))
    })
}

extern "C" fn lib_data_drop(vmctx: *mut VmCtx, data: u32) -> u32 {
    with_store(vmctx, |store, inst| {
        store.instances[inst as usize].datas[data as usize] = Arc::from([]);
        Ok(())
    })
}

/// `memory.atomic.wait32/64`: the result (0, 1, 2), or -1 when a trap is pending. Blocks with the mutator
/// native, as the interpreter's `atomics::wait` does (compiled frames hold no GC roots).
extern "C" fn lib_wait(vmctx: *mut VmCtx, mem: u32, at: u64, width: u32, expected: u64, timeout: i64) -> i64 {
    let mut result = -1;
    with_store(vmctx, |store, inst| {
        let memory = memory(store, inst, mem);
        crate::safepoint::enter_blocking_call(store);
        let r = memory_atomic::wait(&memory, at, width as u64, expected, timeout);
        crate::safepoint::leave_blocking_call(store);
        let r = r.map_err(Trap::new)?;
        // `--race`: woken by a notify, this thread now sees what the notifier did before it.
        if r == WaitResult::Woken
            && let (Some(race), Some(ctx)) = (&store.rt.race, store.mutator.race.as_deref_mut())
        {
            race.detector.acquire(ctx, memory.base() as u64 + at);
        }
        result = r as i64;
        Ok(())
    });
    result
}

/// `memory.atomic.notify`: how many threads were woken, or -1 when a trap is pending.
extern "C" fn lib_notify(vmctx: *mut VmCtx, mem: u32, at: u64, count: u32) -> i64 {
    let mut result = -1;
    with_store(vmctx, |store, inst| {
        let memory = memory(store, inst, mem);
        // Whatever the notifier did before happens before what the woken threads do after.
        if let (Some(race), Some(ctx)) = (&store.rt.race, store.mutator.race.as_deref_mut()) {
            race.detector.release(ctx, memory.base() as u64 + at);
        }
        result = memory_atomic::notify(&memory, at, count).map_err(Trap::new)? as i64;
        Ok(())
    });
    result
}

/// A race hook of compiled code (see [`MemLibcalls::race`] and the module comment).
#[allow(clippy::too_many_arguments)] // The C-convention signature compiled code calls.
extern "C" fn lib_race(vmctx: *mut VmCtx, mem: u32, at: u64, width: u32, what: u32, func: u32, offset: u32, fp: u64) {
    with_store(vmctx, |store, inst| {
        race_hook(store, inst, mem, at, width, what, (func, offset), fp as usize);
        Ok(())
    });
}

#[allow(clippy::too_many_arguments)] // `lib_race`'s arguments.
fn race_hook(
    store: &mut StoreState,
    inst: u32,
    mem: u32,
    at: u64,
    width: u32,
    what: u32,
    (func, offset): (u32, u32),
    fp: usize,
) {
    let site = super::race_stack::compiled_site(store, inst, func, offset, fp);
    // Borrowed in place, never cloned: every thread runs this at every access, and a shared count
    // (an `Arc`'s) would bounce between their caches.
    let StoreState { rt, mutator, instances, memories, .. } = &mut *store;
    let (Some(race), Some(ctx)) = (rt.race.as_deref(), mutator.race.as_deref_mut()) else { return };
    let instance = &instances[inst as usize];
    let base = memories[instance.memories[mem as usize] as usize].base() as u64;
    if let Some(found) = race.hook(ctx, base + at, width.into(), what, site) {
        report_compiled(store, FoundRace { race: found, location: RaceLocation::Memory { base } });
    }
}

/// The race hook of a field or element of a shared object, or of a shared global (see
/// [`MemLibcalls::race_object`](crate::tier::MemLibcalls::race_object)).
#[allow(clippy::too_many_arguments)] // The C-convention signature compiled code calls.
extern "C" fn lib_race_object(
    vmctx: *mut VmCtx,
    obj: u64,
    addr: u64,
    width: u32,
    what: u32,
    func: u32,
    offset: u32,
    fp: u64,
) {
    with_store(vmctx, |store, inst| {
        let site = super::race_stack::compiled_site(store, inst, func, offset, fp as usize);
        let StoreState { rt, mutator, instances, globals, .. } = &mut *store;
        let (Some(race), Some(ctx)) = (rt.race.as_deref(), mutator.race.as_deref_mut()) else { return Ok(()) };
        let instance = &instances[inst as usize];
        let (at, width, location) = if what & RaceHook::GLOBAL != 0 {
            let g = &globals[instance.globals[addr as usize] as usize];
            let Some(cell) = &g.shared else { return Ok(()) };
            let id = RaceLocation::Global { module: instance.module.index, index: addr as u32 };
            (Arc::as_ptr(cell) as u64, g.desc.ty.byte_width(), id)
        } else if obj == 0 {
            // A shared global's edges only (`global.atomic.rmw.*`'s access comes with `GLOBAL`).
            (addr, u64::from(width), RaceLocation::Memory { base: 0 })
        } else {
            (addr, u64::from(width), super::race_hooks::object_location(crate::gcglue::obj(obj)))
        };
        let mut what = what & !RaceHook::GLOBAL;
        if matches!(location, RaceLocation::Global { .. }) && crate::race::planted_bug_skip_global_hook() {
            what &= !(RaceHook::READ | RaceHook::WRITE);
        }
        if let Some(found) = race.hook(ctx, at, width, what, site) {
            report_compiled(store, FoundRace { race: found, location });
        }
        Ok(())
    });
}

/// Reports `found`, made by compiled code (its backtraces are in the stack depot).
pub(super) fn report_compiled(store: &StoreState, found: FoundRace) {
    let race = store.rt.race.as_deref().expect("reported with --race");
    race.report(&found, &store.rt.modules(), &store.rt.types);
}

/// The wasm frames of the compiled callers of the frame whose frame pointer is `fp`, innermost first.
pub(super) fn compiled_frames(store: &StoreState, fp: usize) -> Vec<WasmFrame> {
    let Some(compiler) = store.rt.config.jit.compiler.as_ref() else { return Vec::new() };
    let modules = store.rt.modules();
    // SAFETY: `fp` is the frame pointer compiled code (or its interpreter stub) read of its own frame just
    // before calling into the VM, on this thread's stack, and that frame is live until the call returns.
    let frames = unsafe { compiler.caller_frames(fp) };
    let module = |m: u32| modules.iter().find(|md| md.index == m);
    frames.into_iter().filter_map(|(m, f, off)| module(m).map(|md| wasm_frame(md, f, off))).collect()
}

/// `return_call_indirect`'s callee: writes the [`FuncEntry`] compiled code tail-calls with its own
/// `vmctx` (the instance's entry when the callee is this instance's function, else the signature's
/// interpreter stub with the store function), after `call_indirect`'s checks.
pub(super) extern "C" fn lib_resolve_indirect(
    vmctx: *mut VmCtx,
    table: u32,
    type_id: u32,
    index: u32,
    out: *mut FuncEntry,
) -> u32 {
    with_store(vmctx, |store, inst| {
        let t = store.instances[inst as usize].tables[table as usize];
        let f =
            super::tables::indirect_callee(&store.tables[t as usize], &store.rt.types, &store.funcs, index, type_id)
                .map_err(Trap::new)?;
        let entry = match store.funcs[f as usize].kind {
            FuncKind::Wasm { instance, index } if instance == inst => {
                let module = &store.instances[inst as usize].module;
                let tier = store.instances[inst as usize].tier.as_ref().expect("compiled code runs with its tables");
                tier.entries[(module.num_imported_funcs + index) as usize]
            }
            _ => {
                let TypeKind::Func { params, results } = &store.rt.types.get(store.funcs[f as usize].ty).kind else {
                    unreachable!("functions have function types")
                };
                let compiler = store.rt.config.jit.compiler.as_ref().expect("compiled code has a compiler");
                let stub = compiler
                    .interpreter_stub(params, results)
                    .map_err(|u| Trap::new(TrapKind::Host(format!("no interpreter stub: {}", u.reason))))?;
                FuncEntry::new(stub.0, f as usize, store.funcs[f as usize].ty)
            }
        };
        // SAFETY: compiled code passes an 8-aligned stack slot of `FuncEntry::SIZE` bytes.
        unsafe { out.write(entry) };
        Ok(())
    })
}
