//! The interpreter's side of the compiled tier (`vm/src/tier.rs` is the interface): entering compiled
//! code from Rust, the library calls compiled code makes back into the VM, the per-instance tables, and
//! tier-up.
//!
//! **Entering** ([`call_compiled`]): the arguments are already in value-stack slots (the interpreter's
//! calling convention); the signature's array entry reads them, calls the code and writes the results
//! over them, so to the interpreter a compiled callee looks like a host call that writes its results at
//! the frame base. `exec.sp` moves above those slots first, so a nested invocation (compiled code calling
//! an interpreted function through [`lib_call`]) starts above them, and `exec.top` keeps the interpreted
//! caller's position, so a collection during the call scans that caller by its call-site stack map.
//!
//! **Library calls** are `extern "C"`; each catches panics (a panic must not unwind through compiled
//! frames) and turns a trap into the store's pending trap plus status 1, which compiled frames pass down
//! to [`call_compiled`], each adding its wasm frame (`lib_unwind`). A caught panic is resumed there, on
//! the Rust side of the entry.
//!
//! **Tier-up** (`auto`): an instance's `tier_slots` start at an odd countdown; the dispatch loop
//! decrements it at each call and leaves with `Exit::TierUp` when it runs out; [`tier_up`] compiles the
//! function (once per module: the code is cached in `ModuleData::compiled`) and stores its address in the
//! slot and in the instance's entry table.

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::Ordering;

use crate::module::ModuleData;
use crate::runtime::Runtime;
use crate::state::{FuncKind, InstanceTier, StoreState};
use crate::tier::{CompiledFunc, FuncEntry, JitMode, Libcalls, TrapCode, VmCtx, VmMemory};
use crate::types::TypeKind;
use crate::{Trap, TrapKind, WasmFrame};

/// What compiled code calls, for the compiler to link against.
pub(crate) fn libcalls() -> Libcalls {
    Libcalls {
        call: lib_call as *const () as usize,
        resolve_indirect: super::jit_memory::lib_resolve_indirect as *const () as usize,
        trap: lib_trap as *const () as usize,
        unwind: lib_unwind as *const () as usize,
        safepoint: lib_safepoint as *const () as usize,
        mem: super::jit_memory::mem_libcalls(),
        struct_new: super::jit_gc::lib_struct_new as *const () as usize,
        array_new: super::jit_gc::lib_array_new as *const () as usize,
        array_op: super::jit_gc::lib_array_op as *const () as usize,
        ref_test: super::jit_gc::lib_ref_test as *const () as usize,
        table_op: super::jit_tables::lib_table_op as *const () as usize,
        throw: super::jit_gc::lib_throw as *const () as usize,
        throw_ref: super::jit_gc::lib_throw_ref as *const () as usize,
        exn_catch: super::jit_gc::lib_exn_catch as *const () as usize,
    }
}

/// The initial tier slot of a defined function: a countdown in `auto`, 0 (interpreted, not counted)
/// otherwise; compiled code's slots are set when the instance is created.
pub(crate) fn initial_slot(mode: JitMode, threshold: u32) -> u64 {
    match mode {
        JitMode::Auto => ((threshold.max(1) as u64) << 1) | 1,
        JitMode::Off | JitMode::Eager => 0,
    }
}

/// Bit 1 of an even tier slot: on-stack replacement was declined for one of the function's loops, so
/// back-edges of its interpreted activations no longer ask for it (`tier.rs`).
pub(super) const OSR_DECLINED: u64 = 2;

/// The compiled function a non-zero, even tier slot points at.
pub(crate) fn slot_code(slot: u64) -> &'static CompiledFunc {
    // SAFETY: even non-zero slots, with `OSR_DECLINED` masked off (a `CompiledFunc` is 8-aligned, so its
    // address has the bit clear), are only written by `set_compiled` with the address of a
    // `CompiledFunc` inside a module's `compiled` cells; the module lives behind an `Arc` as long as the
    // runtime (`Runtime::modules`), which outlives every store and so every instance that reads the slot.
    unsafe { &*((slot & !OSR_DECLINED) as usize as *const CompiledFunc) }
}

/// The compiled code of defined function `index`, compiling it first if that was not tried yet.
pub(crate) fn compiled_code<'m>(rt: &Runtime, module: &'m ModuleData, index: u32) -> Option<&'m CompiledFunc> {
    let compiler = rt.config.jit.compiler.as_ref()?;
    // Only the thread whose compilation is kept registers the code, once.
    let mut fresh = false;
    module.compiled[index as usize]
        .get_or_init(|| {
            fresh = true;
            let func_index = module.num_imported_funcs + index;
            let input = crate::tier::FuncInput::new(rt, module, func_index);
            let start = std::time::Instant::now();
            let r = compiler.compile(&input);
            let name = || {
                let fi = module.num_imported_funcs + index;
                module.source.func_name(fi).map_or_else(|| format!("func[{fi}]"), |n| format!("${n}"))
            };
            rt.jit_stats.record(&r, start.elapsed().as_nanos() as u64, name);
            r.ok()
        })
        .as_ref()
        .inspect(|code| {
            if fresh {
                rt.jit_code.register(code);
            }
        })
}

/// The tier slot's value for a compiled function.
fn slot_of(code: &CompiledFunc) -> u64 {
    code as *const CompiledFunc as usize as u64
}

/// Compile defined function `index` of instance `inst` (its countdown ran out) and switch the instance's
/// tables to it; a function the compiler declines gets slot 0 and stays interpreted.
pub(super) fn tier_up(store: &mut StoreState, inst: u32, index: u32) {
    let module = store.instances[inst as usize].module.clone();
    let slot = match compiled_code(&store.rt, &module, index) {
        Some(code) => {
            ensure_tier(store, inst);
            let t = store.instances[inst as usize].tier.as_mut().expect("just built");
            t.entries[(module.num_imported_funcs + index) as usize].code = code.code.0;
            slot_of(code)
        }
        None => 0,
    };
    store.instances[inst as usize].tier_slots[index as usize].store(slot, Ordering::Relaxed);
}

/// Set up the instance's slots for eagerly compiled code (at instantiation, `eager`).
pub(crate) fn link_eager(store: &mut StoreState, inst: u32) {
    let module = store.instances[inst as usize].module.clone();
    for index in 0..module.code.len() as u32 {
        if let Some(code) = compiled_code(&store.rt, &module, index) {
            store.instances[inst as usize].tier_slots[index as usize].store(slot_of(code), Ordering::Relaxed);
        }
    }
}

/// Build the instance's [`VmCtx`] and entry table if it has none yet.
fn ensure_tier(store: &mut StoreState, inst: u32) {
    if store.instances[inst as usize].tier.is_some() {
        return;
    }
    let Some(compiler) = store.rt.config.jit.compiler.clone() else { return };
    let module = store.instances[inst as usize].module.clone();
    let mut entries = Vec::with_capacity(module.func_types.len());
    for (i, &sf) in store.instances[inst as usize].funcs.iter().enumerate() {
        let compiled = match &store.funcs[sf as usize].kind {
            FuncKind::Wasm { instance, index } if *instance == inst => {
                module.compiled[*index as usize].get().and_then(|c| c.as_ref())
            }
            _ => None,
        };
        let ty = module.func_types[i];
        let entry = match compiled {
            Some(c) => FuncEntry::new(c.code.0, 0, ty),
            None => {
                let (params, results) = match &store.rt.types.get(module.func_types[i]).kind {
                    TypeKind::Func { params, results } => (params, results),
                    _ => unreachable!("functions have function types"),
                };
                // A signature the compiler cannot pass is one no compiled caller uses.
                let code = compiler.interpreter_stub(params, results).map_or(0, |c| c.0);
                FuncEntry::new(code, sf as usize, ty)
            }
        };
        entries.push(entry);
    }
    let entries = entries.into_boxed_slice();
    let mut vmctx = Box::new(VmCtx {
        store: 0,
        stack_limit: store.mutator.native_bounds.low() + crate::native_stack::REENTRY_MARGIN,
        mem0_base: 0,
        mem0_len: 0,
        globals: 0,
        entries: entries.as_ptr() as usize,
        stop_flag: store.mutator.link.stop_flag() as *const _ as usize,
        instance: inst,
        defined_base: store.instances[inst as usize]
            .funcs
            .get(module.num_imported_funcs as usize)
            .copied()
            .unwrap_or(0),
        zero: 0,
        jit_exit: 0,
        funcs: store.instances[inst as usize].funcs.as_ptr() as usize,
        memories: 0,
        tables: 0,
        defined_func_ref: 0,
        alloc_spans: 0,
        alloc_hooks: store.rt.heap.hooks_address(),
    });
    vmctx.defined_func_ref = gc::value::from_func(vmctx.defined_base);
    vmctx.mem0_len = &vmctx.zero as *const usize as usize;
    if let Some(&m) = store.instances[inst as usize].memories.first() {
        let mem = &store.memories[m as usize];
        vmctx.mem0_base = mem.base() as usize;
        vmctx.mem0_len = mem.len_address();
    }
    let memories: Box<[VmMemory]> = store.instances[inst as usize]
        .memories
        .iter()
        .map(|&m| {
            let mem = &store.memories[m as usize];
            VmMemory { base: mem.base() as usize, len: mem.len_address() }
        })
        .collect();
    vmctx.memories = memories.as_ptr() as usize;
    let tables: Box<[usize]> =
        store.instances[inst as usize].tables.iter().map(|&t| store.tables[t as usize].view_address()).collect();
    vmctx.tables = tables.as_ptr() as usize;
    let mut t = InstanceTier { vmctx, entries, global_ptrs: Box::new([]), memories, tables };
    t.global_ptrs = global_addresses(store, inst);
    t.vmctx.globals = t.global_ptrs.as_ptr() as usize;
    store.instances[inst as usize].tier = Some(Box::new(t));
}

fn global_addresses(store: &mut StoreState, inst: u32) -> Box<[usize]> {
    let ids = store.instances[inst as usize].globals.clone();
    ids.iter().map(|&g| store.globals[g as usize].value_ptr() as usize).collect()
}

/// After `store.globals` reallocated: every compiled instance's global addresses again.
pub(crate) fn refresh_global_addresses(store: &mut StoreState) {
    for inst in 0..store.instances.len() as u32 {
        if store.instances[inst as usize].tier.is_some() {
            let addrs = global_addresses(store, inst);
            let t = store.instances[inst as usize].tier.as_mut().expect("checked");
            t.global_ptrs = addrs;
            t.vmctx.globals = t.global_ptrs.as_ptr() as usize;
        }
    }
}

/// Run compiled `code` of instance `inst` with its arguments in value-stack slots `base..`; the results
/// replace them. `slots` is how many slots the call may write (max of parameters and results).
pub(super) fn call_compiled(
    store: &mut StoreState,
    inst: u32,
    code: &CompiledFunc,
    base: usize,
    slots: usize,
) -> Result<(), Trap> {
    ensure_tier(store, inst);
    if !store.mutator.exec.stack.grow(base + slots) {
        return Err(Trap::new(TrapKind::CallStackExhausted));
    }
    let saved_sp = store.mutator.exec.sp;
    store.mutator.exec.sp = store.mutator.exec.sp.max(base + slots);
    let args = store.mutator.exec.stack[base..].as_mut_ptr();
    let state: *mut StoreState = store;
    let vmctx: *mut VmCtx = &mut *store.instances[inst as usize].tier.as_mut().expect("built above").vmctx;
    // The compiled frames of an outer entry, if any, are suspended under this one: keep their exit for
    // the collector's walk; the new run of compiled frames records its own exits from scratch.
    let outer_exit = std::mem::take(&mut store.mutator.exec.jit_exit);
    if outer_exit.fp != 0 {
        store.mutator.exec.jit_segments.push(outer_exit);
    }
    // `--race`: the run's place among the interpreted frames, for the detector's stack walks.
    let race = store.rt.race.is_some();
    if race {
        let exec = &mut store.mutator.exec;
        exec.race_segs.push(crate::mutator::RaceSeg { frames_len: exec.frames.len(), top: exec.top, out_fp: 0 });
    }
    let exit_cell = &mut store.mutator.exec.jit_exit as *mut crate::tier::JitExit as usize;
    let alloc_spans = store.mutator.cache.spans_address();
    // SAFETY: `vmctx` is boxed in the instance (stable address) and lives while the store does.
    unsafe {
        (*vmctx).store = state as usize;
        (*vmctx).jit_exit = exit_cell;
        (*vmctx).alloc_spans = alloc_spans;
    }
    // SAFETY: `array_entry` is the compiler's entry for this function's signature (`tier.rs`: `extern
    // "C" fn(code, vmctx, args) -> u32`); `args` points at `slots` committed value-stack slots, which
    // nothing else uses until the call returns (`exec.sp` is above them). The store is reached again only
    // through `vmctx.store`, derived from `store` just above, and `store` is not used until the call
    // returns. We run on the native stack (every caller is inside `invoke`). A guarded memory's fault in
    // the compiled frames returns here as status 1 with the trap pending (`fault.rs`).
    let status = unsafe { crate::fault::call_entry(code.array_entry.0, code.code.0, vmctx, args) };
    store.mutator.exec.sp = saved_sp;
    if race {
        store.mutator.exec.race_segs.pop();
    }
    if outer_exit.fp != 0 {
        store.mutator.exec.jit_segments.pop();
    }
    store.mutator.exec.jit_exit = outer_exit;
    if status == 0 {
        return Ok(());
    }
    if let Some(panic) = store.mutator.jit_panic.take() {
        resume_unwind(panic);
    }
    Err(store.mutator.jit_trap.take().unwrap_or_else(|| Trap::new(TrapKind::Host("compiled code failed".into()))))
}

/// The wasm frame of function `func_index` (index space) of `module` at byte `offset`.
pub(super) fn wasm_frame(module: &ModuleData, func_index: u32, offset: u32) -> WasmFrame {
    module.wasm_frame(func_index, offset)
}

/// Run a library call's body with the store; a trap becomes the pending trap and status 1, a panic is
/// kept for `call_compiled` to resume.
pub(super) fn with_store(vmctx: *mut VmCtx, f: impl FnOnce(&mut StoreState, u32) -> Result<(), Trap>) -> u32 {
    // SAFETY: compiled code passes the `VmCtx` it was entered with, whose `store` field `call_compiled`
    // set from the `&mut StoreState` it holds unused for the duration of the call.
    let (store, inst) = unsafe { (&mut *((*vmctx).store as *mut StoreState), (*vmctx).instance) };
    match catch_unwind(AssertUnwindSafe(|| f(store, inst))) {
        Ok(Ok(())) => 0,
        Ok(Err(trap)) => {
            store.mutator.jit_trap = Some(trap);
            1
        }
        Err(panic) => {
            store.mutator.jit_panic = Some(panic);
            1
        }
    }
}

fn param_result_counts(store: &StoreState, func: u32) -> (usize, usize) {
    match &store.rt.types.get(store.funcs[func as usize].ty).kind {
        TypeKind::Func { params, results } => (params.len(), results.len()),
        _ => unreachable!("functions have function types"),
    }
}

/// Call store function `func` from compiled code of instance `inst` with the arguments at `args`,
/// writing its results there.
fn call_store_func(store: &mut StoreState, inst: u32, func: u32, args: *mut u64, fp: usize) -> Result<(), Trap> {
    // `--race`: what runs in the callee walks this run's compiled frames from `fp`.
    let seg = store.mutator.exec.race_segs.last_mut().map(|seg| std::mem::replace(&mut seg.out_fp, fp));
    let result = call_store_func_here(store, inst, func, args, fp);
    if let (Some(out_fp), Some(seg)) = (seg, store.mutator.exec.race_segs.last_mut()) {
        seg.out_fp = out_fp;
    }
    result
}

fn call_store_func_here(store: &mut StoreState, inst: u32, func: u32, args: *mut u64, fp: usize) -> Result<(), Trap> {
    let (np, nr) = param_result_counts(store, func);
    // SAFETY: the caller (a stub or compiled code) passes a buffer of max(params, results) slots.
    let params = unsafe { std::slice::from_raw_parts(args, np) }.to_vec();
    let results = if let FuncKind::Host(_) = store.funcs[func as usize].kind {
        // A host function sees the calling instance (its memory, for WASI), as from the interpreter.
        if store.mutator.native_bounds.remaining() < crate::native_stack::REENTRY_MARGIN {
            return Err(Trap::new(TrapKind::CallStackExhausted));
        }
        let base = store.mutator.exec.sp;
        if !store.mutator.exec.stack.grow(base + np.max(nr)) {
            return Err(Trap::new(TrapKind::CallStackExhausted));
        }
        store.mutator.exec.stack[base..base + np].copy_from_slice(&params);
        let saved = store.mutator.jit_host_frames.take();
        if fp != 0 && store.rt.race.is_some() {
            let frames = super::jit_memory::compiled_frames(store, fp);
            store.mutator.jit_host_frames = Some(frames);
        }
        let r = super::call_host(store, func, base, Some(inst));
        store.mutator.jit_host_frames = saved;
        r?;
        store.mutator.exec.stack[base..base + nr].to_vec()
    } else {
        super::invoke(store, func, &params)?
    };
    debug_assert_eq!(results.len(), nr);
    // SAFETY: as above.
    unsafe { std::ptr::copy_nonoverlapping(results.as_ptr(), args, nr) };
    Ok(())
}

extern "C" fn lib_call(vmctx: *mut VmCtx, func: u64, args: *mut u64, fp: u64) -> u32 {
    with_store(vmctx, |store, inst| call_store_func(store, inst, func as u32, args, fp as usize))
}

/// `func` is `u32::MAX` for a trap that names no frame of its own (the prologue's stack check: the
/// caller's frame, added as it unwinds, is where the interpreter reports exhaustion too).
extern "C" fn lib_trap(vmctx: *mut VmCtx, code: u32, func: u32, offset: u32) -> u32 {
    with_store(vmctx, |store, inst| {
        let mut backtrace = Vec::new();
        if func != u32::MAX {
            backtrace.push(wasm_frame(&store.instances[inst as usize].module, func, offset));
        }
        Err(Trap { kind: TrapCode::from_u32(code), backtrace })
    })
}

/// The trap of an access of compiled code that faulted on a guarded memory at instruction `pc` of the
/// compiled frame whose frame pointer is `fp` (`fault.rs`), with the backtrace lib_trap and lib_unwind
/// would have built, made pending for the entry of `vmctx`. Status 1.
pub(crate) fn memory_fault_trap(vmctx: *mut VmCtx, fp: usize, pc: usize) -> u32 {
    with_store(vmctx, |store, _| {
        let compiler = store.rt.config.jit.compiler.as_ref().expect("compiled code has a compiler");
        let modules = store.rt.modules();
        // SAFETY: `fault.rs` passes the faulting compiled frame's frame pointer and instruction, on this
        // thread's stack below the entry, and the frames are intact until it resumes the entry.
        let mut frames = unsafe { compiler.fault_frames(pc, fp) };
        if crate::fault::planted_short_backtrace() {
            frames.truncate(1);
        }
        let module = |m: u32| modules.iter().find(|md| md.index == m);
        let backtrace =
            frames.into_iter().filter_map(|(m, f, off)| module(m).map(|md| wasm_frame(md, f, off))).collect();
        Err(Trap { kind: TrapKind::MemoryOutOfBounds, backtrace })
    })
}

extern "C" fn lib_unwind(vmctx: *mut VmCtx, func: u32, offset: u32) -> u32 {
    with_store(vmctx, |store, inst| {
        let frame = wasm_frame(&store.instances[inst as usize].module, func, offset);
        let mut trap = store.mutator.jit_trap.take().unwrap_or_else(|| Trap::new(TrapKind::Unreachable));
        trap.backtrace.push(frame);
        Err(trap)
    })
}

extern "C" fn lib_safepoint(vmctx: *mut VmCtx) -> u32 {
    with_store(vmctx, |store, _| {
        crate::safepoint::park(store);
        Ok(())
    })
}
