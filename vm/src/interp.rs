//! The interpreter: executes [`crate::bytecode`].
//!
//! # Model
//!
//! One value stack of 8-byte slots per store ([`ExecState::stack`]) holds every wasm frame; a
//! frame is a window `stack[fp..fp + frame_size]`. Calls never recurse on the host stack: a call
//! pushes a [`Frame`] (the caller's instance, function, pc and fp) on [`ExecState::frames`] and
//! switches the dispatch loop to the callee, so unbounded guest recursion ends in a clean
//! `call stack exhausted` trap when either the frame count or the value stack runs out.
//!
//! The dispatch loop ([`execute`]) runs while control stays in one instance. It keeps the
//! instance's memory 0 in a local `Vec` (taken out of the store and put back on every exit) so a
//! load or store is one bounds check away from the bytes. Anything that needs the whole store
//! (host calls, switching to another instance) leaves the loop with an [`Exit`] that [`run`]
//! handles before re-entering.
//!
//! # GC safety
//!
//! A collection can start only at an allocation or inside a call. At that moment every frame's pc
//! is saved: callers' in [`Frame::pc`] (the call instruction), the running function's in
//! [`ExecState::top`]. The translator's stack map for that pc names the slots holding references,
//! which is how the collector finds every root precisely (see `roots`).

use crate::bytecode::{Instr, MemOp, StorageKind};
use crate::gcglue;
use crate::module::ModuleData;
use crate::mutator::{Frame, Position};
use crate::native_stack::REENTRY_MARGIN;
use crate::numeric as num;
use crate::safepoint;
use crate::state::{Caller, FuncKind, StoreState};
use crate::store::{host_value_fits, raw_to_val, val_to_raw};
use crate::types::{RtHeapType, TypeKind};
use crate::values::{func_raw, i31_get_s, i31_get_u, i31_raw};
use crate::{Ref, Trap, TrapKind, Val, WasmFrame};
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Why the dispatch loop stopped.
enum Exit {
    /// The entry function returned.
    Return,
    /// Control moved to another instance; `pos` is set up (frame pushed, locals zeroed).
    Switch,
    /// Call host function `func` with arguments at absolute slot `base`; `tail` for
    /// `return_call` (the current frame returns right after).
    Host {
        func: u32,
        base: usize,
        tail: bool,
    },
    /// An allocation needs a collection first; `pos` is at the allocating instruction, which runs
    /// again afterwards.
    Collect,
    /// The stop flag was set at a safepoint; `pos` is there (its stack map describes the frame), and
    /// execution resumes at `resume` after the mutator has parked.
    Safepoint {
        resume: usize,
    },
    /// A call needs `slots` committed value-stack slots; `pos` is at the call, which runs again once the
    /// stack has grown (or traps if it cannot).
    GrowStack {
        slots: usize,
    },
    Trap(TrapKind),
}

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

fn func_result_count(store: &StoreState, func: u32) -> usize {
    match &store.rt.types.get(store.funcs[func as usize].ty).kind {
        TypeKind::Func { results, .. } => results.len(),
        _ => 0,
    }
}

impl Caller<'_> {
    /// Call `func` from a host function (host → wasm nesting): the mutator runs again for the call, on the
    /// same native stack, and is native again when it returns.
    pub fn call(&mut self, func: crate::Func, args: &[Val]) -> Result<Vec<Val>, Trap> {
        self.state.mutator.link.leave_native();
        let result = crate::store::call_checked(self.state, func, args);
        safepoint::enter_native(self.state);
        result
    }
}

/// Call a host function whose arguments are at absolute slot `base`; results go to `base`.
fn call_host(store: &mut StoreState, func: u32, base: usize, caller: Option<u32>) -> Result<(), Trap> {
    let FuncKind::Host(f) = &store.funcs[func as usize].kind else { unreachable!("host function") };
    let f = f.clone();
    let (params, results) = match &store.rt.types.get(store.funcs[func as usize].ty).kind {
        TypeKind::Func { params, results } => (params.clone(), results.clone()),
        _ => unreachable!("functions have function types"),
    };
    // Object arguments become handles, rooted for the call (the host may allocate or call back into wasm)
    // and released when it returns.
    let StoreState { rt, mutator, .. } = &mut *store;
    let args: Vec<Val> = params
        .iter()
        .enumerate()
        .map(|(i, &t)| raw_to_val(&rt.types, &mut mutator.handles, mutator.exec.stack[base + i], t))
        .collect();
    let mut out: Vec<Val> = results.iter().map(|_| Val::I32(0)).collect();
    let saved_sp = store.mutator.exec.sp;
    store.mutator.exec.sp = base + params.len().max(results.len());
    // The mutator is native for the call: a collection on another thread need not wait for the host.
    safepoint::enter_native(store);
    let r = {
        let mut c = Caller { state: store, instance: caller };
        f(&mut c, &args, &mut out)
    };
    store.mutator.link.leave_native();
    store.mutator.exec.sp = saved_sp;
    let results: Result<Vec<u64>, Trap> = r.and_then(|()| {
        let fits = |(v, &t): (&Val, &crate::types::RtValType)| {
            let raw = val_to_raw(store, *v)?;
            if !host_value_fits(store, v, raw, t) {
                return Err(Trap::new(TrapKind::Host(format!("host function result {v:?} does not match type {t:?}"))));
            }
            Ok(raw)
        };
        out.iter().zip(results.iter()).map(fits).collect()
    });
    for a in &args {
        if let Val::Ref(Ref::Struct(h) | Ref::Array(h)) = a {
            store.mutator.handles.remove(*h);
        }
    }
    let results = results?;
    if !store.mutator.exec.stack.grow(base + results.len()) {
        return Err(Trap::new(TrapKind::CallStackExhausted));
    }
    store.mutator.exec.stack[base..base + results.len()].copy_from_slice(&results);
    Ok(())
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
                    if t.backtrace.is_empty() {
                        t.backtrace = backtrace(store, pos, depth0);
                    }
                    return Err(t);
                }
                if tail {
                    // The host results sit at the frame base: finish the `return_call`.
                    if store.mutator.exec.frames.len() == depth0 {
                        return Ok(());
                    }
                    let f = store.mutator.exec.frames.pop().expect("frame above depth0");
                    pos = Position { inst: f.inst, func: f.func, pc: f.pc as usize + 1, fp: f.fp as usize };
                } else {
                    pos.pc += 1;
                }
            }
            Exit::Collect => {
                store.mutator.exec.top = Some(pos);
                safepoint::collect(store);
                store.mutator.alloc.gc_retry = true;
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
        }
    }
}

/// The wasm backtrace, innermost first.
fn backtrace(store: &StoreState, top: Position, depth0: usize) -> Vec<WasmFrame> {
    let mut out = Vec::new();
    let mut push = |inst: u32, func: u32, pc: usize| {
        let m = &store.instances[inst as usize].module;
        let cf = &m.code[func as usize];
        let offset = cf.wasm_offsets.get(pc).copied().unwrap_or(0);
        let func_index = m.num_imported_funcs + func;
        out.push(WasmFrame {
            module: m.source.module_name().map(str::to_string),
            func_index,
            func_name: m.source.func_name(func_index).map(str::to_string),
            offset,
            source: m.source.location(offset as usize),
        });
    };
    push(top.inst, top.func, top.pc);
    for f in store.mutator.exec.frames[depth0..].iter().rev() {
        push(f.inst, f.func, f.pc as usize);
    }
    out
}

// ---- helpers used by the dispatch loop

#[inline(always)]
fn ea(base: u64, offset: u32) -> usize {
    ((base as u32) as u64 + offset as u64) as usize
}

#[inline(always)]
fn load<const N: usize>(mem: &[u8], at: usize) -> Option<[u8; N]> {
    mem.get(at..at + N)?.try_into().ok()
}

#[inline(always)]
fn store_bytes<const N: usize>(mem: &mut [u8], at: usize, bytes: [u8; N]) -> bool {
    match mem.get_mut(at..at + N) {
        Some(dst) => {
            dst.copy_from_slice(&bytes);
            true
        }
        None => false,
    }
}

/// Generic load used for memories other than 0.
fn load_kind(mem: &[u8], at: usize, kind: MemOp) -> Option<u64> {
    Some(match kind {
        MemOp::I32 | MemOp::F32 | MemOp::I64_32U | MemOp::Store32 => u32::from_le_bytes(load(mem, at)?) as u64,
        MemOp::I64 | MemOp::F64 => u64::from_le_bytes(load(mem, at)?),
        MemOp::I32_8S => i8::from_le_bytes(load(mem, at)?) as i32 as u32 as u64,
        MemOp::I32_8U | MemOp::I64_8U | MemOp::Store8 => u8::from_le_bytes(load(mem, at)?) as u64,
        MemOp::I32_16S => i16::from_le_bytes(load(mem, at)?) as i32 as u32 as u64,
        MemOp::I32_16U | MemOp::I64_16U | MemOp::Store16 => u16::from_le_bytes(load(mem, at)?) as u64,
        MemOp::I64_8S => i8::from_le_bytes(load(mem, at)?) as i64 as u64,
        MemOp::I64_16S => i16::from_le_bytes(load(mem, at)?) as i64 as u64,
        MemOp::I64_32S => i32::from_le_bytes(load(mem, at)?) as i64 as u64,
    })
}

fn store_kind(mem: &mut [u8], at: usize, kind: MemOp, v: u64) -> bool {
    match kind.width() {
        1 => store_bytes(mem, at, [v as u8]),
        2 => store_bytes(mem, at, (v as u16).to_le_bytes()),
        4 => store_bytes(mem, at, (v as u32).to_le_bytes()),
        _ => store_bytes(mem, at, v.to_le_bytes()),
    }
}

/// Bounds check for bulk operations: `start + len <= size`.
#[inline]
fn in_bounds(start: u64, len: u64, size: usize) -> bool {
    start.checked_add(len).is_some_and(|end| end <= size as u64)
}

/// Does the reference `raw` match cast target (`nullable`, `heap`)?
pub(crate) fn ref_matches(
    store_types: &crate::types::TypeRegistry,
    funcs_ty: impl Fn(u32) -> u32,
    obj_ty: impl Fn(u64) -> u32,
    raw: u64,
    nullable: bool,
    heap: RtHeapType,
) -> bool {
    if raw == 0 {
        return nullable;
    }
    use RtHeapType as H;
    // Casts never cross hierarchies (validation), so the top types match every non-null value:
    // an `externref` may hold an internalized i31 or object, an `anyref` an externalized host value.
    if matches!(heap, H::Any | H::Extern) {
        return true;
    }
    if gc::value::is_i31(raw) {
        return matches!(heap, H::Eq | H::I31);
    }
    if gc::value::is_host(raw) {
        return false;
    }
    if gc::value::is_func(raw) {
        return match heap {
            H::Func => true,
            H::Concrete(t) => store_types.is_subtype(funcs_ty(gc::value::func_index(raw)), t),
            _ => false,
        };
    }
    // An object: its header names its canonical type.
    let t = obj_ty(raw);
    match heap {
        H::Eq => true,
        H::Struct => matches!(store_types.get(t).kind, TypeKind::Struct { .. }),
        H::Array => matches!(store_types.get(t).kind, TypeKind::Array { .. }),
        H::Concrete(c) => store_types.is_subtype(t, c),
        _ => false,
    }
}

/// The dispatch loop: runs while control stays in `pos.inst`.
fn execute(store: &mut StoreState, pos: &mut Position, depth0: usize) -> Exit {
    let inst_id = pos.inst;
    let module: Arc<ModuleData> = store.instances[inst_id as usize].module.clone();
    let mem0_index = store.instances[inst_id as usize].memories.first().copied();
    let mem0 = mem0_index.map(|m| store.memories[m as usize].clone());
    // SAFETY: the slice is the only view of memory 0 while the loop runs: host calls (WASI), which take
    // their own view, run after the loop has exited; `memory.grow` re-derives it (`MemoryGrow`). Memory 0
    // is this store's and not shared (a shared memory is accessed by the threads issue's atomic paths).
    let mut mem: &mut [u8] = match &mem0 {
        Some(m) => unsafe { m.as_mut_slice() },
        None => &mut [],
    };
    dispatch(store, &module, pos, depth0, &mut mem, mem0_index)
}

#[allow(clippy::too_many_arguments)]
fn dispatch(
    store: &mut StoreState,
    module: &ModuleData,
    pos: &mut Position,
    depth0: usize,
    mem: &mut &mut [u8],
    mem0_index: Option<u32>,
) -> Exit {
    let inst_id = pos.inst;
    let max_depth = store.rt.config.max_call_depth;
    let StoreState { rt, mutator, instances, funcs, memories, tables, globals } = store;
    let (registry, heap) = (&rt.types, &rt.heap);
    let crate::mutator::Mutator { exec, cache, alloc, link, .. } = mutator;
    let stop: &AtomicBool = link.stop_flag();
    let stack_len = exec.stack.len();
    // Only `pc`, `code` and `frame` live in registers across instructions; the rest of the
    // position (function, frame pointer) stays in `pos` and is touched by calls and returns only.
    let mut code: &[Instr] = &module.code[pos.func as usize].code;
    let mut pc = pos.pc;
    let stack: &mut [u64] = &mut exec.stack;
    let frames = &mut exec.frames;
    let mut frame: &mut [u64] = &mut stack[pos.fp..];

    macro_rules! save {
        () => {{
            pos.pc = pc;
        }};
    }
    macro_rules! trap {
        ($k:expr) => {{
            save!();
            return Exit::Trap($k);
        }};
    }
    // A call needs `$need` stack slots: grow the committed stack outside the dispatch loop if needed.
    macro_rules! ensure_stack {
        ($need:expr) => {{
            let need: usize = $need;
            if need > stack_len {
                save!();
                return Exit::GrowStack { slots: need };
            }
        }};
    }
    macro_rules! s {
        ($slot:expr) => {
            frame[$slot as usize]
        };
    }
    macro_rules! i32_of {
        ($slot:expr) => {
            (frame[$slot as usize] as u32)
        };
    }
    macro_rules! f32_of {
        ($slot:expr) => {
            f32::from_bits(frame[$slot as usize] as u32)
        };
    }
    macro_rules! f64_of {
        ($slot:expr) => {
            f64::from_bits(frame[$slot as usize])
        };
    }
    macro_rules! set_i32 {
        ($slot:expr, $v:expr) => {
            frame[$slot as usize] = ($v) as u32 as u64
        };
    }
    macro_rules! set_f32 {
        ($slot:expr, $v:expr) => {
            frame[$slot as usize] = f32::to_bits($v) as u64
        };
    }
    macro_rules! set_f64 {
        ($slot:expr, $v:expr) => {
            frame[$slot as usize] = f64::to_bits($v)
        };
    }
    // A backward branch (a loop back-edge) is a safepoint: the translator recorded a stack map at it.
    macro_rules! branch {
        ($off:expr) => {{
            let off = $off as isize;
            if off <= 0 && stop.load(Ordering::Relaxed) {
                save!();
                return Exit::Safepoint { resume: (pc as isize + off) as usize };
            }
            pc = (pc as isize + off) as usize;
            continue;
        }};
    }
    // Function entry (pc 0, frame set up) is a safepoint too.
    macro_rules! enter {
        () => {{
            pc = 0;
            if stop.load(Ordering::Relaxed) {
                save!();
                return Exit::Safepoint { resume: 0 };
            }
            continue;
        }};
    }
    macro_rules! mem_load {
        ($dst:expr, $addr:expr, $off:expr, $n:literal, $conv:expr) => {{
            match load::<$n>(mem, ea(s!($addr), $off)) {
                Some(b) => s!($dst) = $conv(b),
                None => trap!(TrapKind::MemoryOutOfBounds),
            }
        }};
    }
    macro_rules! mem_store {
        ($addr:expr, $off:expr, $bytes:expr) => {{
            if !store_bytes(mem, ea(s!($addr), $off), $bytes) {
                trap!(TrapKind::MemoryOutOfBounds);
            }
        }};
    }
    // Enter a callee of this module at `base` (relative to the current frame).
    macro_rules! call_local {
        ($callee:expr, $base:expr) => {{
            let callee: u32 = $callee;
            let next = &module.code[callee as usize];
            let new_fp = pos.fp + $base as usize;
            if frames.len() >= max_depth {
                trap!(TrapKind::CallStackExhausted);
            }
            ensure_stack!(new_fp + next.frame_size as usize);
            frames.push(Frame { inst: inst_id, func: pos.func, pc: pc as u32, fp: pos.fp as u32 });
            pos.fp = new_fp;
            frame = &mut stack[new_fp..];
            next.init_frame(frame);
            code = &next.code;
            pos.func = callee;
            enter!();
        }};
    }
    // Replace the current frame by a callee of this module whose arguments are at `base`.
    macro_rules! tail_call_local {
        ($callee:expr, $base:expr) => {{
            let callee: u32 = $callee;
            let next = &module.code[callee as usize];
            let np = next.num_params as usize;
            let b = $base as usize;
            ensure_stack!(pos.fp + next.frame_size as usize);
            frame.copy_within(b..b + np, 0);
            next.init_frame(frame);
            code = &next.code;
            pos.func = callee;
            enter!();
        }};
    }
    // Call store function `f` with arguments at `base`: same module, other instance or host.
    macro_rules! call_store_func {
        ($f:expr, $base:expr, $tail:expr) => {{
            let f: u32 = $f;
            match &funcs[f as usize].kind {
                FuncKind::Wasm { instance, index } if *instance == inst_id => {
                    let index = *index;
                    if $tail { tail_call_local!(index, $base) } else { call_local!(index, $base) }
                }
                FuncKind::Wasm { instance, index } => {
                    let (instance, index) = (*instance, *index);
                    let next = &instances[instance as usize].module.code[index as usize];
                    let b = $base as usize;
                    let new_fp = if $tail { pos.fp } else { pos.fp + b };
                    if frames.len() >= max_depth {
                        trap!(TrapKind::CallStackExhausted);
                    }
                    ensure_stack!(new_fp + next.frame_size as usize);
                    if $tail {
                        let np = next.num_params as usize;
                        frame.copy_within(b..b + np, 0);
                    } else {
                        frames.push(Frame { inst: inst_id, func: pos.func, pc: pc as u32, fp: pos.fp as u32 });
                    }
                    next.init_frame(&mut stack[new_fp..]);
                    *pos = Position { inst: instance, func: index, pc: 0, fp: new_fp };
                    return Exit::Switch;
                }
                FuncKind::Host(_) => {
                    let b = $base as usize;
                    if $tail {
                        let np = match &registry.get(funcs[f as usize].ty).kind {
                            TypeKind::Func { params, .. } => params.len(),
                            _ => 0,
                        };
                        frame.copy_within(b..b + np, 0);
                        save!();
                        return Exit::Host { func: f, base: pos.fp, tail: true };
                    }
                    save!();
                    return Exit::Host { func: f, base: pos.fp + b, tail: false };
                }
            }
        }};
    }
    macro_rules! do_return {
        () => {{
            if frames.len() == depth0 {
                save!();
                return Exit::Return;
            }
            let f = frames.pop().expect("checked above");
            if f.inst != inst_id {
                *pos = Position { inst: f.inst, func: f.func, pc: f.pc as usize + 1, fp: f.fp as usize };
                return Exit::Switch;
            }
            pos.fp = f.fp as usize;
            pos.func = f.func;
            frame = &mut stack[pos.fp..];
            code = &module.code[pos.func as usize].code;
            pc = f.pc as usize + 1;
            continue;
        }};
    }
    macro_rules! table_of {
        ($t:expr) => {
            tables[instances[inst_id as usize].tables[$t as usize] as usize]
        };
    }
    loop {
        use Instr as I;
        match code[pc] {
            // ---------------- i32
            I::I32Add { dst, a, b } => set_i32!(dst, i32_of!(a).wrapping_add(i32_of!(b))),
            I::I32Sub { dst, a, b } => set_i32!(dst, i32_of!(a).wrapping_sub(i32_of!(b))),
            I::I32Mul { dst, a, b } => set_i32!(dst, i32_of!(a).wrapping_mul(i32_of!(b))),
            I::I32DivS { dst, a, b } => {
                let (x, y) = (i32_of!(a) as i32, i32_of!(b) as i32);
                if y == 0 {
                    trap!(TrapKind::IntegerDivideByZero);
                }
                if x == i32::MIN && y == -1 {
                    trap!(TrapKind::IntegerOverflow);
                }
                set_i32!(dst, x / y);
            }
            I::I32DivU { dst, a, b } => {
                let y = i32_of!(b);
                if y == 0 {
                    trap!(TrapKind::IntegerDivideByZero);
                }
                set_i32!(dst, i32_of!(a) / y);
            }
            I::I32RemS { dst, a, b } => {
                let (x, y) = (i32_of!(a) as i32, i32_of!(b) as i32);
                if y == 0 {
                    trap!(TrapKind::IntegerDivideByZero);
                }
                set_i32!(dst, x.wrapping_rem(y));
            }
            I::I32RemU { dst, a, b } => {
                let y = i32_of!(b);
                if y == 0 {
                    trap!(TrapKind::IntegerDivideByZero);
                }
                set_i32!(dst, i32_of!(a) % y);
            }
            I::I32And { dst, a, b } => set_i32!(dst, i32_of!(a) & i32_of!(b)),
            I::I32Or { dst, a, b } => set_i32!(dst, i32_of!(a) | i32_of!(b)),
            I::I32Xor { dst, a, b } => set_i32!(dst, i32_of!(a) ^ i32_of!(b)),
            I::I32Shl { dst, a, b } => set_i32!(dst, i32_of!(a).wrapping_shl(i32_of!(b))),
            I::I32ShrS { dst, a, b } => set_i32!(dst, (i32_of!(a) as i32).wrapping_shr(i32_of!(b))),
            I::I32ShrU { dst, a, b } => set_i32!(dst, i32_of!(a).wrapping_shr(i32_of!(b))),
            I::I32Rotl { dst, a, b } => set_i32!(dst, i32_of!(a).rotate_left(i32_of!(b) & 31)),
            I::I32Rotr { dst, a, b } => set_i32!(dst, i32_of!(a).rotate_right(i32_of!(b) & 31)),
            I::I32Eq { dst, a, b } => set_i32!(dst, (i32_of!(a) == i32_of!(b)) as u32),
            I::I32Ne { dst, a, b } => set_i32!(dst, (i32_of!(a) != i32_of!(b)) as u32),
            I::I32LtS { dst, a, b } => set_i32!(dst, ((i32_of!(a) as i32) < i32_of!(b) as i32) as u32),
            I::I32LtU { dst, a, b } => set_i32!(dst, (i32_of!(a) < i32_of!(b)) as u32),
            I::I32GtS { dst, a, b } => set_i32!(dst, ((i32_of!(a) as i32) > i32_of!(b) as i32) as u32),
            I::I32GtU { dst, a, b } => set_i32!(dst, (i32_of!(a) > i32_of!(b)) as u32),
            I::I32LeS { dst, a, b } => set_i32!(dst, ((i32_of!(a) as i32) <= i32_of!(b) as i32) as u32),
            I::I32LeU { dst, a, b } => set_i32!(dst, (i32_of!(a) <= i32_of!(b)) as u32),
            I::I32GeS { dst, a, b } => set_i32!(dst, ((i32_of!(a) as i32) >= i32_of!(b) as i32) as u32),
            I::I32GeU { dst, a, b } => set_i32!(dst, (i32_of!(a) >= i32_of!(b)) as u32),
            I::I32Eqz { dst, src } => set_i32!(dst, (i32_of!(src) == 0) as u32),
            I::I32Clz { dst, src } => set_i32!(dst, i32_of!(src).leading_zeros()),
            I::I32Ctz { dst, src } => set_i32!(dst, i32_of!(src).trailing_zeros()),
            I::I32Popcnt { dst, src } => set_i32!(dst, i32_of!(src).count_ones()),
            I::I32Extend8S { dst, src } => set_i32!(dst, i32_of!(src) as i8 as i32),
            I::I32Extend16S { dst, src } => set_i32!(dst, i32_of!(src) as i16 as i32),
            I::I32AddImm { dst, a, imm } => set_i32!(dst, i32_of!(a).wrapping_add(imm as i32 as u32)),
            I::I32SubImm { dst, a, imm } => set_i32!(dst, i32_of!(a).wrapping_sub(imm as i32 as u32)),
            I::I32AndImm { dst, a, imm } => set_i32!(dst, i32_of!(a) & imm as i32 as u32),
            I::I32ShlImm { dst, a, imm } => set_i32!(dst, i32_of!(a).wrapping_shl(imm as u32)),
            I::I32ShrSImm { dst, a, imm } => set_i32!(dst, (i32_of!(a) as i32).wrapping_shr(imm as u32)),
            I::I32ShrUImm { dst, a, imm } => set_i32!(dst, i32_of!(a).wrapping_shr(imm as u32)),
            I::I32EqImm { dst, a, imm } => set_i32!(dst, (i32_of!(a) as i32 == imm as i32) as u32),
            I::I32NeImm { dst, a, imm } => set_i32!(dst, (i32_of!(a) as i32 != imm as i32) as u32),
            I::I32LtSImm { dst, a, imm } => set_i32!(dst, ((i32_of!(a) as i32) < imm as i32) as u32),
            I::I32LtUImm { dst, a, imm } => set_i32!(dst, (i32_of!(a) < imm as i32 as u32) as u32),
            I::I32GtSImm { dst, a, imm } => set_i32!(dst, ((i32_of!(a) as i32) > imm as i32) as u32),
            I::I32GtUImm { dst, a, imm } => set_i32!(dst, (i32_of!(a) > imm as i32 as u32) as u32),
            I::I32LeSImm { dst, a, imm } => set_i32!(dst, ((i32_of!(a) as i32) <= imm as i32) as u32),
            I::I32GeSImm { dst, a, imm } => set_i32!(dst, ((i32_of!(a) as i32) >= imm as i32) as u32),

            // ---------------- i64
            I::I64Add { dst, a, b } => s!(dst) = s!(a).wrapping_add(s!(b)),
            I::I64Sub { dst, a, b } => s!(dst) = s!(a).wrapping_sub(s!(b)),
            I::I64Mul { dst, a, b } => s!(dst) = s!(a).wrapping_mul(s!(b)),
            I::I64AddImm { dst, a, imm } => s!(dst) = s!(a).wrapping_add(imm as i64 as u64),
            I::I64SubImm { dst, a, imm } => s!(dst) = s!(a).wrapping_sub(imm as i64 as u64),
            I::I64DivS { dst, a, b } => {
                let (x, y) = (s!(a) as i64, s!(b) as i64);
                if y == 0 {
                    trap!(TrapKind::IntegerDivideByZero);
                }
                if x == i64::MIN && y == -1 {
                    trap!(TrapKind::IntegerOverflow);
                }
                s!(dst) = (x / y) as u64;
            }
            I::I64DivU { dst, a, b } => {
                let y = s!(b);
                if y == 0 {
                    trap!(TrapKind::IntegerDivideByZero);
                }
                s!(dst) = s!(a) / y;
            }
            I::I64RemS { dst, a, b } => {
                let (x, y) = (s!(a) as i64, s!(b) as i64);
                if y == 0 {
                    trap!(TrapKind::IntegerDivideByZero);
                }
                s!(dst) = x.wrapping_rem(y) as u64;
            }
            I::I64RemU { dst, a, b } => {
                let y = s!(b);
                if y == 0 {
                    trap!(TrapKind::IntegerDivideByZero);
                }
                s!(dst) = s!(a) % y;
            }
            I::I64And { dst, a, b } => s!(dst) = s!(a) & s!(b),
            I::I64Or { dst, a, b } => s!(dst) = s!(a) | s!(b),
            I::I64Xor { dst, a, b } => s!(dst) = s!(a) ^ s!(b),
            I::I64Shl { dst, a, b } => s!(dst) = s!(a).wrapping_shl(s!(b) as u32),
            I::I64ShrS { dst, a, b } => s!(dst) = (s!(a) as i64).wrapping_shr(s!(b) as u32) as u64,
            I::I64ShrU { dst, a, b } => s!(dst) = s!(a).wrapping_shr(s!(b) as u32),
            I::I64Rotl { dst, a, b } => s!(dst) = s!(a).rotate_left((s!(b) & 63) as u32),
            I::I64Rotr { dst, a, b } => s!(dst) = s!(a).rotate_right((s!(b) & 63) as u32),
            I::I64Eq { dst, a, b } => set_i32!(dst, (s!(a) == s!(b)) as u32),
            I::I64Ne { dst, a, b } => set_i32!(dst, (s!(a) != s!(b)) as u32),
            I::I64LtS { dst, a, b } => set_i32!(dst, ((s!(a) as i64) < s!(b) as i64) as u32),
            I::I64LtU { dst, a, b } => set_i32!(dst, (s!(a) < s!(b)) as u32),
            I::I64GtS { dst, a, b } => set_i32!(dst, ((s!(a) as i64) > s!(b) as i64) as u32),
            I::I64GtU { dst, a, b } => set_i32!(dst, (s!(a) > s!(b)) as u32),
            I::I64LeS { dst, a, b } => set_i32!(dst, ((s!(a) as i64) <= s!(b) as i64) as u32),
            I::I64LeU { dst, a, b } => set_i32!(dst, (s!(a) <= s!(b)) as u32),
            I::I64GeS { dst, a, b } => set_i32!(dst, ((s!(a) as i64) >= s!(b) as i64) as u32),
            I::I64GeU { dst, a, b } => set_i32!(dst, (s!(a) >= s!(b)) as u32),
            I::I64Eqz { dst, src } => set_i32!(dst, (s!(src) == 0) as u32),
            I::I64Clz { dst, src } => s!(dst) = s!(src).leading_zeros() as u64,
            I::I64Ctz { dst, src } => s!(dst) = s!(src).trailing_zeros() as u64,
            I::I64Popcnt { dst, src } => s!(dst) = s!(src).count_ones() as u64,
            I::I64Extend8S { dst, src } => s!(dst) = s!(src) as i8 as i64 as u64,
            I::I64Extend16S { dst, src } => s!(dst) = s!(src) as i16 as i64 as u64,
            I::I64Extend32S { dst, src } => s!(dst) = s!(src) as i32 as i64 as u64,

            // ---------------- f32 / f64
            I::F32Add { dst, a, b } => set_f32!(dst, f32_of!(a) + f32_of!(b)),
            I::F32Sub { dst, a, b } => set_f32!(dst, f32_of!(a) - f32_of!(b)),
            I::F32Mul { dst, a, b } => set_f32!(dst, f32_of!(a) * f32_of!(b)),
            I::F32Div { dst, a, b } => set_f32!(dst, f32_of!(a) / f32_of!(b)),
            I::F32Min { dst, a, b } => set_f32!(dst, num::f32_min(f32_of!(a), f32_of!(b))),
            I::F32Max { dst, a, b } => set_f32!(dst, num::f32_max(f32_of!(a), f32_of!(b))),
            I::F32Copysign { dst, a, b } => {
                set_i32!(dst, (i32_of!(a) & 0x7FFF_FFFF) | (i32_of!(b) & 0x8000_0000))
            }
            I::F32Eq { dst, a, b } => set_i32!(dst, (f32_of!(a) == f32_of!(b)) as u32),
            I::F32Ne { dst, a, b } => set_i32!(dst, (f32_of!(a) != f32_of!(b)) as u32),
            I::F32Lt { dst, a, b } => set_i32!(dst, (f32_of!(a) < f32_of!(b)) as u32),
            I::F32Gt { dst, a, b } => set_i32!(dst, (f32_of!(a) > f32_of!(b)) as u32),
            I::F32Le { dst, a, b } => set_i32!(dst, (f32_of!(a) <= f32_of!(b)) as u32),
            I::F32Ge { dst, a, b } => set_i32!(dst, (f32_of!(a) >= f32_of!(b)) as u32),
            I::F32Abs { dst, src } => set_i32!(dst, i32_of!(src) & 0x7FFF_FFFF),
            I::F32Neg { dst, src } => set_i32!(dst, i32_of!(src) ^ 0x8000_0000),
            I::F32Ceil { dst, src } => set_f32!(dst, num::quiet_f32(f32_of!(src).ceil())),
            I::F32Floor { dst, src } => set_f32!(dst, num::quiet_f32(f32_of!(src).floor())),
            I::F32Trunc { dst, src } => set_f32!(dst, num::quiet_f32(f32_of!(src).trunc())),
            I::F32Nearest { dst, src } => set_f32!(dst, num::quiet_f32(num::f32_nearest(f32_of!(src)))),
            I::F32Sqrt { dst, src } => set_f32!(dst, f32_of!(src).sqrt()),
            I::F64Add { dst, a, b } => set_f64!(dst, f64_of!(a) + f64_of!(b)),
            I::F64Sub { dst, a, b } => set_f64!(dst, f64_of!(a) - f64_of!(b)),
            I::F64Mul { dst, a, b } => set_f64!(dst, f64_of!(a) * f64_of!(b)),
            I::F64Div { dst, a, b } => set_f64!(dst, f64_of!(a) / f64_of!(b)),
            I::F64Min { dst, a, b } => set_f64!(dst, num::f64_min(f64_of!(a), f64_of!(b))),
            I::F64Max { dst, a, b } => set_f64!(dst, num::f64_max(f64_of!(a), f64_of!(b))),
            I::F64Copysign { dst, a, b } => s!(dst) = (s!(a) & 0x7FFF_FFFF_FFFF_FFFF) | (s!(b) & 0x8000_0000_0000_0000),
            I::F64Eq { dst, a, b } => set_i32!(dst, (f64_of!(a) == f64_of!(b)) as u32),
            I::F64Ne { dst, a, b } => set_i32!(dst, (f64_of!(a) != f64_of!(b)) as u32),
            I::F64Lt { dst, a, b } => set_i32!(dst, (f64_of!(a) < f64_of!(b)) as u32),
            I::F64Gt { dst, a, b } => set_i32!(dst, (f64_of!(a) > f64_of!(b)) as u32),
            I::F64Le { dst, a, b } => set_i32!(dst, (f64_of!(a) <= f64_of!(b)) as u32),
            I::F64Ge { dst, a, b } => set_i32!(dst, (f64_of!(a) >= f64_of!(b)) as u32),
            I::F64Abs { dst, src } => s!(dst) = s!(src) & 0x7FFF_FFFF_FFFF_FFFF,
            I::F64Neg { dst, src } => s!(dst) = s!(src) ^ 0x8000_0000_0000_0000,
            I::F64Ceil { dst, src } => set_f64!(dst, num::quiet_f64(f64_of!(src).ceil())),
            I::F64Floor { dst, src } => set_f64!(dst, num::quiet_f64(f64_of!(src).floor())),
            I::F64Trunc { dst, src } => set_f64!(dst, num::quiet_f64(f64_of!(src).trunc())),
            I::F64Nearest { dst, src } => set_f64!(dst, num::quiet_f64(num::f64_nearest(f64_of!(src)))),
            I::F64Sqrt { dst, src } => set_f64!(dst, f64_of!(src).sqrt()),

            // ---------------- conversions
            I::I32WrapI64 { dst, src } => set_i32!(dst, s!(src) as u32),
            I::I64ExtendI32S { dst, src } => s!(dst) = i32_of!(src) as i32 as i64 as u64,
            I::I64ExtendI32U { dst, src } => s!(dst) = i32_of!(src) as u64,
            I::I32TruncF32S { dst, src } => match num::i32_trunc_s(num::f32_as_f64(f32_of!(src))) {
                Ok(v) => set_i32!(dst, v),
                Err(k) => trap!(k),
            },
            I::I32TruncF32U { dst, src } => match num::i32_trunc_u(num::f32_as_f64(f32_of!(src))) {
                Ok(v) => set_i32!(dst, v),
                Err(k) => trap!(k),
            },
            I::I32TruncF64S { dst, src } => match num::i32_trunc_s(f64_of!(src)) {
                Ok(v) => set_i32!(dst, v),
                Err(k) => trap!(k),
            },
            I::I32TruncF64U { dst, src } => match num::i32_trunc_u(f64_of!(src)) {
                Ok(v) => set_i32!(dst, v),
                Err(k) => trap!(k),
            },
            I::I64TruncF32S { dst, src } => match num::i64_trunc_s(num::f32_as_f64(f32_of!(src))) {
                Ok(v) => s!(dst) = v as u64,
                Err(k) => trap!(k),
            },
            I::I64TruncF32U { dst, src } => match num::i64_trunc_u(num::f32_as_f64(f32_of!(src))) {
                Ok(v) => s!(dst) = v,
                Err(k) => trap!(k),
            },
            I::I64TruncF64S { dst, src } => match num::i64_trunc_s(f64_of!(src)) {
                Ok(v) => s!(dst) = v as u64,
                Err(k) => trap!(k),
            },
            I::I64TruncF64U { dst, src } => match num::i64_trunc_u(f64_of!(src)) {
                Ok(v) => s!(dst) = v,
                Err(k) => trap!(k),
            },
            // `as` from float to int saturates and maps NaN to 0: exactly the wasm semantics.
            I::I32TruncSatF32S { dst, src } => set_i32!(dst, f32_of!(src) as i32),
            I::I32TruncSatF32U { dst, src } => set_i32!(dst, f32_of!(src) as u32),
            I::I32TruncSatF64S { dst, src } => set_i32!(dst, f64_of!(src) as i32),
            I::I32TruncSatF64U { dst, src } => set_i32!(dst, f64_of!(src) as u32),
            I::I64TruncSatF32S { dst, src } => s!(dst) = f32_of!(src) as i64 as u64,
            I::I64TruncSatF32U { dst, src } => s!(dst) = f32_of!(src) as u64,
            I::I64TruncSatF64S { dst, src } => s!(dst) = f64_of!(src) as i64 as u64,
            I::I64TruncSatF64U { dst, src } => s!(dst) = f64_of!(src) as u64,
            I::F32ConvertI32S { dst, src } => set_f32!(dst, i32_of!(src) as i32 as f32),
            I::F32ConvertI32U { dst, src } => set_f32!(dst, i32_of!(src) as f32),
            I::F32ConvertI64S { dst, src } => set_f32!(dst, s!(src) as i64 as f32),
            I::F32ConvertI64U { dst, src } => set_f32!(dst, num::f32_from_u64(s!(src))),
            I::F32DemoteF64 { dst, src } => set_f32!(dst, f64_of!(src) as f32),
            I::F64ConvertI32S { dst, src } => set_f64!(dst, i32_of!(src) as i32 as f64),
            I::F64ConvertI32U { dst, src } => set_f64!(dst, i32_of!(src) as f64),
            I::F64ConvertI64S { dst, src } => set_f64!(dst, s!(src) as i64 as f64),
            I::F64ConvertI64U { dst, src } => set_f64!(dst, num::f64_from_u64(s!(src))),
            I::F64PromoteF32 { dst, src } => set_f64!(dst, f32_of!(src) as f64),

            // ---------------- constants, moves
            I::Const32 { dst, value } => s!(dst) = value as u64,
            I::Const64 { dst, value } => s!(dst) = value,
            I::Copy { dst, src } => s!(dst) = s!(src),
            I::Select { dst, cond, a, b } => s!(dst) = if i32_of!(cond) != 0 { s!(a) } else { s!(b) },

            // ---------------- memory 0
            I::I32Load { dst, addr, offset } => mem_load!(dst, addr, offset, 4, |b| u32::from_le_bytes(b) as u64),
            I::I64Load { dst, addr, offset } => mem_load!(dst, addr, offset, 8, u64::from_le_bytes),
            I::F32Load { dst, addr, offset } => mem_load!(dst, addr, offset, 4, |b| u32::from_le_bytes(b) as u64),
            I::F64Load { dst, addr, offset } => mem_load!(dst, addr, offset, 8, u64::from_le_bytes),
            I::I32Load8S { dst, addr, offset } => {
                mem_load!(dst, addr, offset, 1, |b| i8::from_le_bytes(b) as i32 as u32 as u64)
            }
            I::I32Load8U { dst, addr, offset } => mem_load!(dst, addr, offset, 1, |b| u8::from_le_bytes(b) as u64),
            I::I32Load16S { dst, addr, offset } => {
                mem_load!(dst, addr, offset, 2, |b| i16::from_le_bytes(b) as i32 as u32 as u64)
            }
            I::I32Load16U { dst, addr, offset } => mem_load!(dst, addr, offset, 2, |b| u16::from_le_bytes(b) as u64),
            I::I64Load8S { dst, addr, offset } => {
                mem_load!(dst, addr, offset, 1, |b| i8::from_le_bytes(b) as i64 as u64)
            }
            I::I64Load8U { dst, addr, offset } => mem_load!(dst, addr, offset, 1, |b| u8::from_le_bytes(b) as u64),
            I::I64Load16S { dst, addr, offset } => {
                mem_load!(dst, addr, offset, 2, |b| i16::from_le_bytes(b) as i64 as u64)
            }
            I::I64Load16U { dst, addr, offset } => mem_load!(dst, addr, offset, 2, |b| u16::from_le_bytes(b) as u64),
            I::I64Load32S { dst, addr, offset } => {
                mem_load!(dst, addr, offset, 4, |b| i32::from_le_bytes(b) as i64 as u64)
            }
            I::I64Load32U { dst, addr, offset } => mem_load!(dst, addr, offset, 4, |b| u32::from_le_bytes(b) as u64),
            I::I32Store { addr, value, offset } => mem_store!(addr, offset, (s!(value) as u32).to_le_bytes()),
            I::I64Store { addr, value, offset } => mem_store!(addr, offset, s!(value).to_le_bytes()),
            I::F32Store { addr, value, offset } => mem_store!(addr, offset, (s!(value) as u32).to_le_bytes()),
            I::F64Store { addr, value, offset } => mem_store!(addr, offset, s!(value).to_le_bytes()),
            I::I32Store8 { addr, value, offset } => mem_store!(addr, offset, [s!(value) as u8]),
            I::I32Store16 { addr, value, offset } => mem_store!(addr, offset, (s!(value) as u16).to_le_bytes()),
            I::I64Store8 { addr, value, offset } => mem_store!(addr, offset, [s!(value) as u8]),
            I::I64Store16 { addr, value, offset } => mem_store!(addr, offset, (s!(value) as u16).to_le_bytes()),
            I::I64Store32 { addr, value, offset } => mem_store!(addr, offset, (s!(value) as u32).to_le_bytes()),

            // ---------------- globals
            I::GlobalGet { dst, global } => {
                s!(dst) = globals[instances[inst_id as usize].globals[global as usize] as usize].value
            }
            I::GlobalSet { global, src } => {
                globals[instances[inst_id as usize].globals[global as usize] as usize].value = s!(src)
            }

            // ---------------- references (hot part)
            I::BrOnNull { src, offset } => {
                if s!(src) == 0 {
                    branch!(offset);
                }
            }
            I::BrOnNonNull { src, offset } => {
                if s!(src) != 0 {
                    branch!(offset);
                }
            }
            I::BrOnCast { src, target, on_fail, offset } => {
                let t = module.code[pos.func as usize].casts[target as usize];
                let ok =
                    ref_matches(registry, |f| funcs[f as usize].ty, gcglue::object_type, s!(src), t.nullable, t.heap);
                if ok != on_fail {
                    branch!(offset);
                }
            }
            // ---------------- control
            I::Unreachable => trap!(TrapKind::Unreachable),
            I::Br { offset } => branch!(offset),
            I::BrIfEqz { cond, offset } => {
                if i32_of!(cond) == 0 {
                    branch!(offset);
                }
            }
            I::BrIfNez { cond, offset } => {
                if i32_of!(cond) != 0 {
                    branch!(offset);
                }
            }
            I::BrI32LtSImm { a, imm, offset } => {
                if (i32_of!(a) as i32) < imm as i32 {
                    branch!(offset);
                }
            }
            I::BrI32GeSImm { a, imm, offset } => {
                if (i32_of!(a) as i32) >= imm as i32 {
                    branch!(offset);
                }
            }
            I::BrI32EqImm { a, imm, offset } => {
                if i32_of!(a) as i32 == imm as i32 {
                    branch!(offset);
                }
            }
            I::BrI32NeImm { a, imm, offset } => {
                if i32_of!(a) as i32 != imm as i32 {
                    branch!(offset);
                }
            }
            I::BrI32Eq { a, b, offset } => {
                if i32_of!(a) == i32_of!(b) {
                    branch!(offset);
                }
            }
            I::BrI32Ne { a, b, offset } => {
                if i32_of!(a) != i32_of!(b) {
                    branch!(offset);
                }
            }
            I::BrI32LtS { a, b, offset } => {
                if (i32_of!(a) as i32) < i32_of!(b) as i32 {
                    branch!(offset);
                }
            }
            I::BrI32LtU { a, b, offset } => {
                if i32_of!(a) < i32_of!(b) {
                    branch!(offset);
                }
            }
            I::BrI32GtS { a, b, offset } => {
                if (i32_of!(a) as i32) > i32_of!(b) as i32 {
                    branch!(offset);
                }
            }
            I::BrI32GtU { a, b, offset } => {
                if i32_of!(a) > i32_of!(b) {
                    branch!(offset);
                }
            }
            I::BrI32LeS { a, b, offset } => {
                if (i32_of!(a) as i32) <= i32_of!(b) as i32 {
                    branch!(offset);
                }
            }
            I::BrI32LeU { a, b, offset } => {
                if i32_of!(a) <= i32_of!(b) {
                    branch!(offset);
                }
            }
            I::BrI32GeS { a, b, offset } => {
                if (i32_of!(a) as i32) >= i32_of!(b) as i32 {
                    branch!(offset);
                }
            }
            I::BrI32GeU { a, b, offset } => {
                if i32_of!(a) >= i32_of!(b) {
                    branch!(offset);
                }
            }
            I::BrTable { index, len } => {
                let i = i32_of!(index).min(len);
                pc += 1 + i as usize;
                continue;
            }
            I::Return => do_return!(),
            I::Return1 { src } => {
                s!(0) = s!(src);
                do_return!()
            }
            I::ReturnN { src, len } => {
                let src = src as usize;
                frame.copy_within(src..src + len as usize, 0);
                do_return!()
            }

            // ---------------- calls
            I::CallLocal { func: callee, base } => call_local!(callee, base),
            I::CallImport { func: f, base } => {
                let f = instances[inst_id as usize].funcs[f as usize];
                call_store_func!(f, base, false)
            }
            I::CallIndirect { table, type_id, index, base } => {
                let raw = match table_of!(table).elems.get(i32_of!(index) as usize) {
                    Some(&v) => v,
                    None => trap!(TrapKind::UndefinedElement),
                };
                if raw == 0 {
                    trap!(TrapKind::UninitializedElement);
                }
                let f = gc::value::func_index(raw);
                if !registry.is_subtype(funcs[f as usize].ty, type_id) {
                    trap!(TrapKind::IndirectCallTypeMismatch);
                }
                call_store_func!(f, base, false)
            }
            I::CallRef { func: fr, base } => {
                let raw = s!(fr);
                if raw == 0 {
                    trap!(TrapKind::NullFunctionReference);
                }
                call_store_func!(gc::value::func_index(raw), base, false)
            }
            I::ReturnCallLocal { func: callee, base } => tail_call_local!(callee, base),
            I::ReturnCallImport { func: f, base } => {
                let f = instances[inst_id as usize].funcs[f as usize];
                call_store_func!(f, base, true)
            }
            I::ReturnCallIndirect { table, type_id, index, base } => {
                let raw = match table_of!(table).elems.get(i32_of!(index) as usize) {
                    Some(&v) => v,
                    None => trap!(TrapKind::UndefinedElement),
                };
                if raw == 0 {
                    trap!(TrapKind::UninitializedElement);
                }
                let f = gc::value::func_index(raw);
                if !registry.is_subtype(funcs[f as usize].ty, type_id) {
                    trap!(TrapKind::IndirectCallTypeMismatch);
                }
                call_store_func!(f, base, true)
            }
            I::ReturnCallRef { func: fr, base } => {
                let raw = s!(fr);
                if raw == 0 {
                    trap!(TrapKind::NullFunctionReference);
                }
                call_store_func!(gc::value::func_index(raw), base, true)
            }

            // ---------------- everything else: memories other than 0, bulk memory, tables,
            // references, GC objects (kept out of the hot loop to keep its registers free)
            other => {
                let mut ctx = Cold {
                    module,
                    func: pos.func,
                    inst_id,
                    instances: &mut *instances,
                    funcs: &*funcs,
                    memories: &*memories,
                    tables: &mut *tables,
                    registry,
                    mem: &mut *mem,
                    mem0_index,
                    heap,
                    cache: &mut *cache,
                    alloc: &mut *alloc,
                    pc,
                };
                match cold_op(&mut ctx, other, frame) {
                    Ok(()) => {}
                    Err(ColdExit::Trap(k)) => trap!(k),
                    Err(ColdExit::Collect) => {
                        save!();
                        return Exit::Collect;
                    }
                }
            }
        }
        pc += 1;
    }
}

/// What the cold instructions need besides the frame.
struct Cold<'a, 'b> {
    module: &'a ModuleData,
    func: u32,
    inst_id: u32,
    instances: &'a mut Vec<crate::state::Instance>,
    funcs: &'a Vec<crate::state::FuncEntity>,
    memories: &'a [std::sync::Arc<crate::memory::LinearMemory>],
    tables: &'a mut Vec<crate::state::TableEntity>,
    registry: &'a crate::types::TypeRegistry,
    mem: &'a mut &'b mut [u8],
    mem0_index: Option<u32>,
    heap: &'a gc::Heap,
    cache: &'a mut gc::ThreadCache,
    alloc: &'a mut crate::mutator::AllocState,
    /// Where the instruction is (for allocation sites).
    pc: usize,
}

/// Why a cold instruction did not complete.
enum ColdExit {
    Trap(TrapKind),
    /// The heap asks for a collection before this allocation.
    Collect,
}

fn array_elem(registry: &crate::types::TypeRegistry, type_id: u32) -> StorageKind {
    match registry.get(type_id).kind {
        TypeKind::Array { elem, .. } => elem,
        _ => unreachable!("array instruction on a non-array type"),
    }
}

/// Execute an instruction that is not on the hot path.
#[inline(never)]
fn cold_op(ctx: &mut Cold<'_, '_>, instr: Instr, frame: &mut [u64]) -> Result<(), ColdExit> {
    let Cold {
        module,
        func,
        inst_id,
        instances,
        funcs,
        memories,
        tables,
        registry,
        mem,
        mem0_index,
        heap,
        cache,
        alloc,
        pc,
    } = ctx;
    let (module, func, inst_id, mem0_index) = (*module, *func, *inst_id, *mem0_index);
    macro_rules! s {
        ($slot:expr) => {
            frame[$slot as usize]
        };
    }
    macro_rules! i32_of {
        ($slot:expr) => {
            (frame[$slot as usize] as u32)
        };
    }
    macro_rules! set_i32 {
        ($slot:expr, $v:expr) => {
            frame[$slot as usize] = ($v) as u32 as u64
        };
    }
    macro_rules! trap {
        ($k:expr) => {{
            return Err(ColdExit::Trap($k));
        }};
    }
    // Allocate with `$alloc(may_collect)`; when the heap wants a collection first, leave the
    // dispatch loop (the collection needs the whole store) and re-execute this instruction after.
    macro_rules! alloc {
        ($alloc:expr) => {{
            if let Some(t) = alloc.tracing.as_mut() {
                t.set_site(module, func, *pc);
            }
            let may_collect = !std::mem::take(&mut alloc.gc_retry);
            match $alloc(may_collect) {
                Ok(o) => o,
                Err(gc::AllocError::CollectionNeeded) => return Err(ColdExit::Collect),
                Err(gc::AllocError::OutOfMemory { limit }) => {
                    trap!(TrapKind::OutOfMemory { limit_bytes: limit as u64 })
                }
            }
        }};
    }
    macro_rules! array_ref {
        ($raw:expr) => {{
            let raw = $raw;
            if raw == 0 {
                trap!(TrapKind::NullArrayReference);
            }
            gcglue::obj(raw)
        }};
    }
    macro_rules! table_of {
        ($t:expr) => {
            tables[instances[inst_id as usize].tables[$t as usize] as usize]
        };
    }
    macro_rules! mem_of {
        ($m:expr, $body:expr) => {{
            let sm = instances[inst_id as usize].memories[$m as usize];
            // SAFETY: memory 0 is reached through the loop's view; another memory gets a view of its own
            // for this one instruction (see `execute`).
            if Some(sm) == mem0_index {
                $body(&mut **mem)
            } else {
                $body(unsafe { memories[sm as usize].as_mut_slice() })
            }
        }};
    }
    use Instr as I;
    match instr {
        // ---------------- any memory
        I::Load { kind, mem: m, dst, addr, offset } => {
            let at = ea(s!(addr), offset);
            match mem_of!(m, |d: &mut [u8]| load_kind(d, at, kind)) {
                Some(v) => s!(dst) = v,
                None => trap!(TrapKind::MemoryOutOfBounds),
            }
        }
        I::Store { kind, mem: m, addr, value, offset } => {
            let at = ea(s!(addr), offset);
            let v = s!(value);
            if !mem_of!(m, |d: &mut [u8]| store_kind(d, at, kind, v)) {
                trap!(TrapKind::MemoryOutOfBounds);
            }
        }
        I::MemorySize { mem: m, dst } => {
            let pages = memories[instances[inst_id as usize].memories[m as usize] as usize].pages();
            set_i32!(dst, pages as u32);
        }
        I::MemoryGrow { mem: m, dst, delta } => {
            let delta = i32_of!(delta);
            let sm = instances[inst_id as usize].memories[m as usize];
            let r = memories[sm as usize].grow(delta as u64).map_or(-1, |old| old as i32);
            if Some(sm) == mem0_index {
                let m0 = &memories[sm as usize];
                // SAFETY: the base never moves; the loop's view of memory 0 just gets the new length. The
                // memory outlives the view: `execute` holds an `Arc` of it for the whole loop.
                **mem = unsafe { std::slice::from_raw_parts_mut(m0.base(), m0.len()) };
            }
            set_i32!(dst, r);
        }
        // Bulk operations go through the memories' own accessors (memory 0 too: the loop's view is not
        // used meanwhile), which check bounds once and copy between memories without a buffer.
        I::MemoryFill { mem: m, args } => {
            let (d, val, n) = (i32_of!(args) as u64, s!(args + 1) as u8, i32_of!(args + 2) as u64);
            let dst = &memories[instances[inst_id as usize].memories[m as usize] as usize];
            if dst.fill(d, val, n).is_err() {
                trap!(TrapKind::MemoryOutOfBounds);
            }
        }
        I::MemoryCopy { dst_mem, src_mem, args } => {
            let (d, sidx, n) = (i32_of!(args) as u64, i32_of!(args + 1) as u64, i32_of!(args + 2) as u64);
            let dst = &memories[instances[inst_id as usize].memories[dst_mem as usize] as usize];
            let src = &memories[instances[inst_id as usize].memories[src_mem as usize] as usize];
            if dst.copy_from(d, src, sidx, n).is_err() {
                trap!(TrapKind::MemoryOutOfBounds);
            }
        }
        I::MemoryInit { mem: m, data, args } => {
            let (d, sidx, n) = (i32_of!(args) as u64, i32_of!(args + 1) as u64, i32_of!(args + 2) as u64);
            let seg = &instances[inst_id as usize].datas[data as usize];
            let dst = &memories[instances[inst_id as usize].memories[m as usize] as usize];
            if dst.init(d, seg, sidx, n).is_err() {
                trap!(TrapKind::MemoryOutOfBounds);
            }
        }
        I::DataDrop { data } => instances[inst_id as usize].datas[data as usize] = Arc::from([]),

        // ---------------- tables and references
        I::TableGet { table, dst, index } => match table_of!(table).elems.get(i32_of!(index) as usize) {
            Some(&v) => s!(dst) = v,
            None => trap!(TrapKind::TableOutOfBounds),
        },
        I::TableSet { table, index, value } => {
            let v = s!(value);
            match table_of!(table).elems.get_mut(i32_of!(index) as usize) {
                Some(e) => *e = v,
                None => trap!(TrapKind::TableOutOfBounds),
            }
        }
        I::TableSize { table, dst } => set_i32!(dst, table_of!(table).elems.len() as u32),
        I::TableGrow { table, dst, delta } => {
            let init = s!(dst);
            let delta = i32_of!(delta) as u64;
            let t = &mut table_of!(table);
            let old = t.elems.len() as u64;
            let max = t.desc.max.unwrap_or(u32::MAX as u64).min(u32::MAX as u64);
            if old + delta > max || t.elems.try_reserve(delta as usize).is_err() {
                set_i32!(dst, -1i32);
            } else {
                t.elems.resize((old + delta) as usize, init);
                set_i32!(dst, old as u32);
            }
        }
        I::TableFill { table, args } => {
            let (i, val, n) = (i32_of!(args) as u64, s!(args + 1), i32_of!(args + 2) as u64);
            let t = &mut table_of!(table);
            if !in_bounds(i, n, t.elems.len()) {
                trap!(TrapKind::TableOutOfBounds);
            }
            t.elems[i as usize..(i + n) as usize].fill(val);
        }
        I::TableCopy { dst_table, src_table, args } => {
            let (d, sidx, n) = (i32_of!(args) as u64, i32_of!(args + 1) as u64, i32_of!(args + 2) as u64);
            let dt = instances[inst_id as usize].tables[dst_table as usize] as usize;
            let st = instances[inst_id as usize].tables[src_table as usize] as usize;
            if !in_bounds(d, n, tables[dt].elems.len()) || !in_bounds(sidx, n, tables[st].elems.len()) {
                trap!(TrapKind::TableOutOfBounds);
            }
            if dt == st {
                tables[dt].elems.copy_within(sidx as usize..(sidx + n) as usize, d as usize);
            } else {
                let src: Vec<u64> = tables[st].elems[sidx as usize..(sidx + n) as usize].to_vec();
                tables[dt].elems[d as usize..(d + n) as usize].copy_from_slice(&src);
            }
        }
        I::TableInit { table, elem, args } => {
            let (d, sidx, n) = (i32_of!(args) as u64, i32_of!(args + 1) as u64, i32_of!(args + 2) as u64);
            let seg = instances[inst_id as usize].elems[elem as usize].clone();
            let t = &mut table_of!(table);
            if !in_bounds(sidx, n, seg.len()) || !in_bounds(d, n, t.elems.len()) {
                trap!(TrapKind::TableOutOfBounds);
            }
            t.elems[d as usize..(d + n) as usize].copy_from_slice(&seg[sidx as usize..(sidx + n) as usize]);
        }
        I::ElemDrop { elem } => instances[inst_id as usize].elems[elem as usize] = Arc::from([]),
        I::RefFunc { dst, func: f } => s!(dst) = func_raw(instances[inst_id as usize].funcs[f as usize]),
        I::RefIsNull { dst, src } => set_i32!(dst, (s!(src) == 0) as u32),
        I::RefAsNonNull { dst, src } => {
            if s!(src) == 0 {
                trap!(TrapKind::NullReference);
            }
            s!(dst) = s!(src);
        }
        I::RefEq { dst, a, b } => set_i32!(dst, (s!(a) == s!(b)) as u32),
        I::RefI31 { dst, src } => s!(dst) = i31_raw(i32_of!(src) as i32),
        I::I31GetS { dst, src } => {
            let v = s!(src);
            if v == 0 {
                trap!(TrapKind::NullI31Reference);
            }
            set_i32!(dst, i31_get_s(v));
        }
        I::I31GetU { dst, src } => {
            let v = s!(src);
            if v == 0 {
                trap!(TrapKind::NullI31Reference);
            }
            set_i32!(dst, i31_get_u(v));
        }
        I::ConvertRef { dst, src } => s!(dst) = s!(src),
        I::RefTest { dst, src, target } => {
            let t = module.code[func as usize].casts[target as usize];
            let ok = ref_matches(registry, |f| funcs[f as usize].ty, gcglue::object_type, s!(src), t.nullable, t.heap);
            set_i32!(dst, ok as u32);
        }
        I::RefCast { dst, src, target } => {
            let t = module.code[func as usize].casts[target as usize];
            let v = s!(src);
            if !ref_matches(registry, |f| funcs[f as usize].ty, gcglue::object_type, v, t.nullable, t.heap) {
                trap!(TrapKind::CastFailure);
            }
            s!(dst) = v;
        }

        // ---------------- GC objects
        I::StructNew { type_id, dst, args } => {
            let o = alloc!(|mc| heap.alloc_struct(cache, type_id, mc));
            if let TypeKind::Struct { fields } = &registry.get(type_id).kind {
                for (i, f) in fields.iter().enumerate() {
                    gcglue::write(o, f.offset as usize, f.kind, s!(args as usize + i));
                }
            }
            s!(dst) = o.raw();
        }
        I::StructNewDefault { type_id, dst } => {
            let o = alloc!(|mc| heap.alloc_struct(cache, type_id, mc));
            s!(dst) = o.raw();
        }
        I::StructGet { dst, obj, field } => {
            let raw = s!(obj);
            if raw == 0 {
                trap!(TrapKind::NullStructReference);
            }
            let fa = module.code[func as usize].fields[field as usize];
            s!(dst) = gcglue::read(gcglue::obj(raw), fa.offset as usize, fa.kind);
        }
        I::StructSet { obj, value, field } => {
            let raw = s!(obj);
            if raw == 0 {
                trap!(TrapKind::NullStructReference);
            }
            let fa = module.code[func as usize].fields[field as usize];
            gcglue::write(gcglue::obj(raw), fa.offset as usize, fa.kind, s!(value));
        }
        I::ArrayNew { type_id, dst, args } => {
            let (value, len) = (s!(args), i32_of!(args + 1));
            let kind = array_elem(registry, type_id);
            let o = alloc!(|mc| heap.alloc_array(cache, type_id, len, mc));
            if value != 0 {
                for i in 0..len {
                    gcglue::write(o, gcglue::elem_offset(i, kind), kind, value);
                }
            }
            s!(dst) = o.raw();
        }
        I::ArrayNewDefault { type_id, dst, len } => {
            let len = i32_of!(len);
            let o = alloc!(|mc| heap.alloc_array(cache, type_id, len, mc));
            s!(dst) = o.raw();
        }
        I::ArrayNewFixed { type_id, dst, args, len } => {
            let kind = array_elem(registry, type_id);
            let o = alloc!(|mc| heap.alloc_array(cache, type_id, len, mc));
            for i in 0..len {
                gcglue::write(o, gcglue::elem_offset(i, kind), kind, s!(args as usize + i as usize));
            }
            s!(dst) = o.raw();
        }
        I::ArrayNewData { type_id, data, dst, args } => {
            let (offset, len) = (i32_of!(args) as u64, i32_of!(args + 1));
            let kind = array_elem(registry, type_id);
            let size = kind.size() as u64;
            let seg = instances[inst_id as usize].datas[data as usize].clone();
            if !in_bounds(offset, len as u64 * size, seg.len()) {
                trap!(TrapKind::MemoryOutOfBounds);
            }
            let o = alloc!(|mc| heap.alloc_array(cache, type_id, len, mc));
            for i in 0..len {
                let at = (offset + i as u64 * size) as usize;
                let v = gcglue::elem_from_bytes(&seg[at..at + size as usize], kind);
                gcglue::write(o, gcglue::elem_offset(i, kind), kind, v);
            }
            s!(dst) = o.raw();
        }
        I::ArrayNewElem { type_id, elem, dst, args } => {
            let (offset, len) = (i32_of!(args) as u64, i32_of!(args + 1));
            let seg = instances[inst_id as usize].elems[elem as usize].clone();
            if !in_bounds(offset, len as u64, seg.len()) {
                trap!(TrapKind::TableOutOfBounds);
            }
            let o = alloc!(|mc| heap.alloc_array(cache, type_id, len, mc));
            for i in 0..len {
                let v = seg[offset as usize + i as usize];
                gcglue::write(o, gcglue::elem_offset(i, StorageKind::Ref), StorageKind::Ref, v);
            }
            s!(dst) = o.raw();
        }
        I::ArrayGet { dst, args, access } => {
            let o = array_ref!(s!(args));
            let idx = i32_of!(args + 1);
            if idx >= o.array_len() {
                trap!(TrapKind::ArrayOutOfBounds);
            }
            let kind = module.code[func as usize].arrays[access as usize].kind;
            s!(dst) = gcglue::read(o, gcglue::elem_offset(idx, kind), kind);
        }
        I::ArraySet { args, access } => {
            let o = array_ref!(s!(args));
            let idx = i32_of!(args + 1);
            if idx >= o.array_len() {
                trap!(TrapKind::ArrayOutOfBounds);
            }
            let kind = module.code[func as usize].arrays[access as usize].kind;
            gcglue::write(o, gcglue::elem_offset(idx, kind), kind, s!(args + 2));
        }
        I::ArrayLen { dst, src } => {
            let o = array_ref!(s!(src));
            set_i32!(dst, o.array_len());
        }
        I::ArrayFill { args, access } => {
            let o = array_ref!(s!(args));
            let (off, value, n) = (i32_of!(args + 1) as u64, s!(args + 2), i32_of!(args + 3) as u64);
            if !in_bounds(off, n, o.array_len() as usize) {
                trap!(TrapKind::ArrayOutOfBounds);
            }
            let kind = module.code[func as usize].arrays[access as usize].kind;
            for i in off..off + n {
                gcglue::write(o, gcglue::elem_offset(i as u32, kind), kind, value);
            }
        }
        I::ArrayCopy { args, dst_access, src_access } => {
            let d = array_ref!(s!(args));
            let doff = i32_of!(args + 1) as u64;
            let src = array_ref!(s!(args + 2));
            let (soff, n) = (i32_of!(args + 3) as u64, i32_of!(args + 4) as u64);
            if !in_bounds(doff, n, d.array_len() as usize) || !in_bounds(soff, n, src.array_len() as usize) {
                trap!(TrapKind::ArrayOutOfBounds);
            }
            let dk = module.code[func as usize].arrays[dst_access as usize].kind;
            let sk = module.code[func as usize].arrays[src_access as usize].kind;
            // memmove semantics: copy backwards when the ranges overlap with dst after src.
            let backwards = d.raw() == src.raw() && doff > soff;
            for k in 0..n {
                let i = if backwards { n - 1 - k } else { k };
                let v = gcglue::read(src, gcglue::elem_offset((soff + i) as u32, sk), sk);
                gcglue::write(d, gcglue::elem_offset((doff + i) as u32, dk), dk, v);
            }
        }
        I::ArrayInitData { args, access, data } => {
            let o = array_ref!(s!(args));
            let (d, sidx, n) = (i32_of!(args + 1) as u64, i32_of!(args + 2) as u64, i32_of!(args + 3) as u64);
            let kind = module.code[func as usize].arrays[access as usize].kind;
            let size = kind.size() as u64;
            if !in_bounds(d, n, o.array_len() as usize) {
                trap!(TrapKind::ArrayOutOfBounds);
            }
            let seg = instances[inst_id as usize].datas[data as usize].clone();
            if !in_bounds(sidx, n * size, seg.len()) {
                trap!(TrapKind::MemoryOutOfBounds);
            }
            for i in 0..n {
                let at = (sidx + i * size) as usize;
                let v = gcglue::elem_from_bytes(&seg[at..at + size as usize], kind);
                gcglue::write(o, gcglue::elem_offset((d + i) as u32, kind), kind, v);
            }
        }
        I::ArrayInitElem { args, access, elem } => {
            let o = array_ref!(s!(args));
            let (d, sidx, n) = (i32_of!(args + 1) as u64, i32_of!(args + 2) as u64, i32_of!(args + 3) as u64);
            let kind = module.code[func as usize].arrays[access as usize].kind;
            if !in_bounds(d, n, o.array_len() as usize) {
                trap!(TrapKind::ArrayOutOfBounds);
            }
            let seg = instances[inst_id as usize].elems[elem as usize].clone();
            if !in_bounds(sidx, n, seg.len()) {
                trap!(TrapKind::TableOutOfBounds);
            }
            for i in 0..n {
                gcglue::write(o, gcglue::elem_offset((d + i) as u32, kind), kind, seg[(sidx + i) as usize]);
            }
        }
        other => unreachable!("hot instruction {other:?} reached the cold path"),
    }
    Ok(())
}
