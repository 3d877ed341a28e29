//! The heap's side of the compiled tier: the library calls compiled code makes to allocate and for the
//! GC instructions it does not do inline, and the walk of compiled frames for roots.
//!
//! # Roots in compiled frames
//!
//! Compiled code keeps references in registers and spill slots, not in the value stack. Cranelift spills
//! every reference live across a call to a stack slot and records a *stack map* for the call (the jit
//! crate declares every reference-typed value as needing one), so while a call is in progress the frame's
//! live references are exactly the slots of that call's map. Every call out of compiled code into the VM
//! goes through code that records the calling frame's frame pointer and the call's return address in the
//! mutator's [`JitExit`] (`ExecState::jit_exit`). From there [`visit_compiled_frames`] follows the
//! frame-pointer chain (Cranelift keeps frame pointers): at each frame, the return address names the
//! function ([`CodeMap`]) and the call site's map; the walk ends at the first return address that is not
//! in a compiled wasm function (the array entry Rust called in through). Each nested entry from the VM
//! into compiled code saves the outer exit in `ExecState::jit_segments` (`call_compiled`), so every run of
//! compiled frames on the thread's stack is walked, with the interpreter's frames scanned as before.
//!
//! # Allocation
//!
//! An allocation asks the heap with `may_collect`; when the heap wants a collection first, the library
//! call collects right there (the whole store is reachable through the `VmCtx`, and every compiled frame
//! below is described by the exit record) and allocates again without asking, as the interpreter's
//! driver does after `Exit::Collect`.

use super::exceptions;
use super::gc_objects::{self, AllocSite, Allocator, OpExit};
use super::jit::with_store;
use crate::state::{Instance, StoreState};
use crate::tier::{ArrayOp, CodeMap, JitExit, RaceHook, VmCtx, decode_heap_type, function_at};
use crate::types::{StorageKind, TypeRegistry};
use crate::{Trap, TrapKind, gcglue};

/// Run allocating `op` with an allocator for `site` of the instance's module (and the registry and the
/// instance, for segments), collecting and retrying if the heap asks for a collection first; the new
/// object's reference.
fn allocate(
    store: &mut StoreState,
    inst: u32,
    site: u64,
    op: impl Fn(&mut Allocator<'_>, &TypeRegistry, &Instance) -> Result<gc::ObjRef, OpExit>,
) -> Result<u64, Trap> {
    loop {
        let StoreState { rt, mutator, instances, .. } = &mut *store;
        let instance = &instances[inst as usize];
        let mut a = Allocator {
            heap: &rt.heap,
            cache: &mut mutator.cache,
            state: &mut mutator.alloc,
            module: &instance.module,
            func: (site >> 32) as u32,
            site: AllocSite::Offset(site as u32),
            race: rt.race.as_deref(),
            registry: &rt.types,
        };
        match op(&mut a, &rt.types, instance) {
            Ok(o) => return Ok(o.raw()),
            Err(OpExit::Collect) => {
                crate::safepoint::collect(store);
                store.mutator.alloc.gc_retry = true;
            }
            Err(OpExit::Trap(k)) => return Err(Trap::new(k)),
            Err(_) => return Err(Trap::new(TrapKind::Host("unexpected exit of an allocation".into()))),
        }
    }
}

pub(super) extern "C" fn lib_struct_new(vmctx: *mut VmCtx, type_id: u32, site: u64) -> u64 {
    let mut raw = 0;
    with_store(vmctx, |store, inst| {
        raw = allocate(store, inst, site, |a, _, _| a.new_struct(type_id))?;
        Ok(())
    });
    raw
}

pub(super) extern "C" fn lib_array_new(vmctx: *mut VmCtx, type_id: u32, len: u32, site: u64) -> u64 {
    let mut raw = 0;
    with_store(vmctx, |store, inst| {
        raw = allocate(store, inst, site, |a, _, _| a.new_array(type_id, len))?;
        Ok(())
    });
    raw
}

/// Operands of an [`ArrayOp`] after its two immediates, as the interpreter's helpers read them from a
/// frame (slot 0 on; the result of a `new_*` goes to slot 6).
const RESULT_SLOT: usize = 6;

pub(super) extern "C" fn lib_array_op(vmctx: *mut VmCtx, op: u32, site: u64, args: *mut u64, fp: u64) -> u32 {
    with_store(vmctx, |store, inst| {
        // SAFETY: compiled code passes a buffer of 2 immediates and up to 5 operands (`ArrayOp`).
        let buf = unsafe { std::slice::from_raw_parts_mut(args, 7) };
        let (imm0, imm1) = (buf[0] as u32, buf[1] as u32);
        let mut frame = [0u64; 7];
        frame[..5].copy_from_slice(&buf[2..7]);
        let op = ArrayOp::from_u32(op).ok_or_else(|| Trap::new(TrapKind::Unreachable))?;
        let registry = &store.rt.types;
        let trap = |e: TrapKind| Trap::new(e);
        match op {
            ArrayOp::Fill => {
                gc_objects::array_fill(&frame, registry.array_elem(imm0), 0).map_err(trap)?;
            }
            ArrayOp::Copy => {
                let (dk, sk) = (registry.array_elem(imm0), registry.array_elem(imm1));
                gc_objects::array_copy(&frame, dk, sk, 0).map_err(trap)?;
            }
            ArrayOp::InitData => {
                let seg = &store.instances[inst as usize].datas[imm1 as usize];
                gc_objects::array_init_data(&frame, registry.array_elem(imm0), seg, 0).map_err(trap)?;
            }
            ArrayOp::InitElem => {
                let seg = &store.instances[inst as usize].elems[imm1 as usize];
                gc_objects::array_init_elem(&frame, registry.array_elem(imm0), seg, 0).map_err(trap)?;
            }
            ArrayOp::NewData | ArrayOp::NewElem => {
                buf[0] = allocate(store, inst, site, |a, types, instance| {
                    let mut f = frame;
                    let dst = RESULT_SLOT as u16;
                    if op == ArrayOp::NewData {
                        let seg = &instance.datas[imm1 as usize];
                        gc_objects::array_new_data(&mut f, a, types, imm0, seg, dst, 0)?;
                    } else {
                        gc_objects::array_new_elem(&mut f, a, imm0, &instance.elems[imm1 as usize], dst, 0)?;
                    }
                    Ok(gcglue::obj(f[RESULT_SLOT]))
                })?;
            }
        }
        if store.rt.race.is_some() {
            race_bulk(store, inst, op, (imm0, imm1), &frame, (site, fp as usize));
        }
        Ok(())
    })
}

/// `--race`: the ranges a bulk operation on shared arrays read and wrote (the interpreter's `RaceRange`s
/// after the same operation, in the same order), reported from compiled code at `site` (an
/// [`alloc_site`](crate::tier::alloc_site): defined function and offset) with the frame pointer `fp`.
fn race_bulk(
    store: &mut StoreState,
    inst: u32,
    op: ArrayOp,
    (imm0, imm1): (u32, u32),
    frame: &[u64],
    (site, fp): (u64, usize),
) {
    // (array operand, index operand, count operand, write, canonical type) of each range.
    let ranges: &[(usize, usize, usize, bool, u32)] = match op {
        ArrayOp::Fill => &[(0, 1, 3, true, imm0)],
        ArrayOp::Copy => &[(2, 3, 4, false, imm1), (0, 1, 4, true, imm0)],
        ArrayOp::InitData | ArrayOp::InitElem => &[(0, 1, 3, true, imm0)],
        ArrayOp::NewData | ArrayOp::NewElem => &[],
    };
    let module = &store.instances[inst as usize].module;
    let (func, offset) = (module.num_imported_funcs + (site >> 32) as u32, site as u32);
    for &(arr, index, count, write, ty) in ranges {
        let (raw, n) = (frame[arr], frame[count] as u32);
        if !store.rt.types.get(ty).shared || raw == 0 || n == 0 || crate::race::planted_bug_skip_range_hook() {
            continue;
        }
        let kind = store.rt.types.array_elem(ty);
        let site = super::race_stack::compiled_site(store, inst, func, offset, fp);
        let StoreState { rt, mutator, .. } = &mut *store;
        let (Some(race), Some(ctx)) = (rt.race.as_deref(), mutator.race.as_deref_mut()) else { return };
        let o = gcglue::obj(raw);
        let at = o.raw() + gcglue::elem_offset(frame[index] as u32, kind) as u64;
        let what = if write { RaceHook::WRITE } else { RaceHook::READ };
        let len = u64::from(n) * u64::from(kind.size());
        if let Some(found) = race.hook(ctx, at, len, what, site) {
            let found = super::race_hooks::FoundRace { race: found, location: super::race_hooks::object_location(o) };
            super::jit_memory::report_compiled(store, found);
        }
    }
}

pub(super) extern "C" fn lib_ref_test(vmctx: *mut VmCtx, raw: u64, heap: u64, nullable: u32) -> u32 {
    let mut matches = false;
    with_store(vmctx, |store, _| {
        let funcs = &store.funcs;
        matches = gcglue::ref_matches(
            &store.rt.types,
            |f| funcs[f as usize].ty,
            gcglue::object_type,
            raw,
            nullable != 0,
            decode_heap_type(heap),
        );
        Ok(())
    });
    matches as u32
}

/// Make `exn` the pending exception of the compiled frames unwinding, as an uncaught exception (rooted by
/// its handle) that a `try_table` of theirs or the interpreter may still catch.
fn pend_exception(store: &mut StoreState, exn: u64) -> Trap {
    let tag = exceptions::exception_tag_name(&store.rt.types, exn);
    let exn = store.mutator.handles.insert(exn);
    Trap { kind: TrapKind::UncaughtException { exn, tag }, backtrace: Vec::new() }
}

pub(super) extern "C" fn lib_throw(vmctx: *mut VmCtx, tag: u32, args: *mut u64, site: u64) -> u32 {
    with_store(vmctx, |store, inst| {
        let layout = &store.instances[inst as usize].module.tags[tag as usize].payload;
        // SAFETY: compiled code passes a buffer with the tag's payload, one slot per value.
        let payload = unsafe { std::slice::from_raw_parts(args, layout.len()) }.to_vec();
        // The payload's references are only in this buffer now: root them while the allocation may
        // collect (only the references: an integer may look like an object address).
        let refs: Vec<u64> =
            payload.iter().zip(layout.iter()).filter(|(_, f)| f.kind == StorageKind::Ref).map(|(&v, _)| v).collect();
        let roots = store.mutator.host_roots.len();
        store.mutator.host_roots.extend_from_slice(&refs);
        let exn = allocate(store, inst, site, |a, _, instance| {
            let store_tag = instance.tags[tag as usize];
            let raw = exceptions::throw_new(&payload, a, &instance.module.tags[tag as usize], store_tag, 0)?;
            Ok(gcglue::obj(raw))
        });
        store.mutator.host_roots.truncate(roots);
        Err(pend_exception(store, exn?))
    })
}

pub(super) extern "C" fn lib_throw_ref(vmctx: *mut VmCtx, exn: u64) -> u32 {
    with_store(vmctx, |store, _| {
        if exn == 0 {
            return Err(Trap::new(TrapKind::NullExceptionReference));
        }
        Err(pend_exception(store, exn))
    })
}

pub(super) extern "C" fn lib_exn_catch(vmctx: *mut VmCtx, tag: u32) -> u64 {
    let mut caught = 0;
    with_store(vmctx, |store, inst| {
        let Some(Trap { kind: TrapKind::UncaughtException { exn, .. }, .. }) = &store.mutator.jit_trap else {
            return Ok(());
        };
        let exn = *exn;
        let Some(raw) = store.mutator.handles.get(exn) else { return Ok(()) };
        if tag != u32::MAX && exceptions::exception_tag(raw) != store.instances[inst as usize].tags[tag as usize] {
            return Ok(());
        }
        store.mutator.handles.remove(exn);
        store.mutator.jit_trap = None;
        caught = raw;
        Ok(())
    });
    caught
}

/// Visit the references every suspended compiled frame of the thread holds (see the module comment).
pub(crate) fn visit_compiled_frames(exit: &JitExit, segments: &[JitExit], code: &CodeMap, visit: &mut dyn FnMut(u64)) {
    if exit.fp == 0 && segments.is_empty() {
        return;
    }
    let funcs = code.read();
    for e in segments.iter().chain(std::iter::once(exit)) {
        let (mut fp, mut pc) = (e.fp, e.pc);
        while fp != 0 {
            let Some(f) = function_at(&funcs, pc) else { break };
            if let Some(map) = f.stack_map_at((pc - f.code.0) as u32) {
                let sp = fp - map.span as usize;
                for &off in &map.slots {
                    // SAFETY: the thread is stopped (this is its root set) inside a call from this compiled
                    // frame, so the frame is live on its native stack; the map says an 8-byte reference was
                    // spilled at `sp + off` for the duration of the call.
                    visit(unsafe { ((sp + off as usize) as *const u64).read() });
                }
            }
            // SAFETY: compiled functions keep frame pointers: `[fp]` is the caller's frame pointer and
            // `[fp + 8]` the return address into the caller, both written by this frame's prologue.
            unsafe {
                pc = ((fp + 8) as *const usize).read();
                fp = (fp as *const usize).read();
            }
        }
    }
}
