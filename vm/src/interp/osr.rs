//! On-stack replacement: an interpreted frame that loops for long continues in compiled code.
//!
//! Tier-up by calls alone never helps a function entered once (a program's `main`, mandelbrot's outer
//! loop): its calls are over before it gets hot. Back-edges therefore count too (`dispatch.rs`, the
//! `branch!` macro), and when the function's countdown runs out at a back-edge, or a back-edge of an
//! interpreted activation finds the function already compiled, the dispatch loop leaves with
//! `Exit::Osr` at the loop header. [`enter`] then:
//!
//! 1. tiers the function up if it is not compiled yet, so its later calls run compiled;
//! 2. gets the *OSR variant* for this loop (`Compiler::compile_osr`, cached in `ModuleData::osr` per
//!    function and header pc, shared by every instance): the function translated again with an entry that
//!    loads the wasm locals and the operand-stack values from the frame's slots and jumps to the loop
//!    header, the rest of the body compiled as usual;
//! 3. runs it through `call_compiled` with the frame base as its argument pointer. It returns the
//!    function's results at the frame base, which is exactly where the interpreter's `return` leaves them,
//!    so the frame then returns to its caller as if it had run to its end.
//!
//! **Why the state transfers as is.** The bytecode keeps wasm local `i` in slot `i`, and at a loop header
//! every operand-stack value sits in its own slot (the translator materializes the stack at each `loop`,
//! `LoopHeader` in `bytecode.rs`), each in the 8-byte form compiled code's slot loads read. Nothing else
//! lives in the frame: the constant slots are reloaded from the code.
//!
//! **Traps and exceptions.** The variant reports a trap with this function's name and the operator's
//! offset, as the compiled function would; the interpreted callers are appended here, so the backtrace is
//! the interpreter's. An exception thrown by a callee passes the variant (compiled code has no handlers)
//! and is thrown again at the caller's call, as `return_call` to compiled code does.
//!
//! **Declined.** A variant the compiler declines (a construct it lacks, or a header it cannot find) is
//! cached as `None`; the function's tier slot gets `OSR_DECLINED`, so its interpreted activations stop
//! leaving the loop at back-edges, and interpretation goes on at the header.

use std::sync::atomic::Ordering;

use super::jit::{self, OSR_DECLINED};
use super::{backtrace, rethrow, return_to_caller, take_exception};
use crate::mutator::Position;
use crate::state::StoreState;
use crate::tier::{CompiledFunc, OsrEntry};
use crate::{Trap, WasmFrame};

/// What the driver loop does after [`enter`].
pub(super) enum After {
    /// Go on interpreting at `pos` (the loop header if declined, else the caller after its call).
    Continue,
    /// The invocation's entry function returned.
    Return,
}

/// `Exit::Osr` at the back-edge `pos` to the loop header at pc `header`.
pub(super) fn enter(store: &mut StoreState, pos: &mut Position, depth0: usize, header: usize) -> Result<After, Trap> {
    let Some(code) = osr_code(store, pos.inst, pos.func, header) else {
        pos.pc = header;
        return Ok(After::Continue);
    };
    store.rt.jit_stats.osr_entries.fetch_add(1, Ordering::Relaxed);
    let frame_size = store.instances[pos.inst as usize].module.code[pos.func as usize].frame_size as usize;
    // The frame's state now lives in the compiled code: nothing of it is scanned or unwound meanwhile
    // (as for a compiled callee entered from `Exit::Switch`).
    store.mutator.exec.top = None;
    if let Err(t) = jit::call_compiled(store, pos.inst, &code, pos.fp, frame_size) {
        return unwind(store, pos, depth0, t);
    }
    match return_to_caller(store, depth0) {
        Some(p) => {
            *pos = p;
            Ok(After::Continue)
        }
        None => Ok(After::Return),
    }
}

/// A trap (or exception) out of the OSR code of the frame at `pos`: its own frame is in the backtrace
/// already (unless the prologue's stack check failed); add the interpreted callers, or throw the
/// exception again at the caller's call.
fn unwind(store: &mut StoreState, pos: &mut Position, depth0: usize, mut t: Trap) -> Result<After, Trap> {
    if t.backtrace.is_empty() {
        t.backtrace = backtrace(store, *pos, depth0);
        return Err(t);
    }
    let Some(f) = store.mutator.exec.frames.get(depth0..).and_then(|f| f.last()).copied() else {
        return Err(t);
    };
    store.mutator.exec.frames.pop();
    let caller = Position { inst: f.inst, func: f.func, pc: f.pc as usize, fp: f.fp as usize };
    if let Some(raw) = take_exception(store, &t) {
        *pos = caller;
        let inner: Vec<WasmFrame> = std::mem::take(&mut t.backtrace);
        rethrow(store, pos, depth0, raw, false, inner)?;
        return Ok(After::Continue);
    }
    t.backtrace.extend(backtrace(store, caller, depth0));
    Err(t)
}

/// The OSR variant of defined function `func` of instance `inst` for the loop whose header is at `pc`,
/// compiling the function and the variant if that was not tried yet; `None` when either is declined.
fn osr_code(store: &mut StoreState, inst: u32, func: u32, pc: usize) -> Option<CompiledFunc> {
    if store.instances[inst as usize].tier_slots[func as usize].load(Ordering::Relaxed) & 1 == 1 {
        jit::tier_up(store, inst, func);
    }
    let slot = &store.instances[inst as usize].tier_slots[func as usize];
    if slot.load(Ordering::Relaxed) == 0 {
        return None;
    }
    let module = store.instances[inst as usize].module.clone();
    let code = osr_variant(store, &module, func, pc as u32);
    if code.is_none() {
        let slot = &store.instances[inst as usize].tier_slots[func as usize];
        slot.fetch_or(OSR_DECLINED, Ordering::Relaxed);
    }
    code
}

/// The cached (or newly compiled) variant of defined function `func` of `module` for header `pc`.
fn osr_variant(store: &StoreState, module: &crate::module::ModuleData, func: u32, pc: u32) -> Option<CompiledFunc> {
    let rt = &store.rt;
    let compiler = rt.config.jit.compiler.as_ref()?;
    let mut cache = module.osr.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    cache
        .entry((func, pc))
        .or_insert_with(|| {
            let cf = &module.code[func as usize];
            let header = cf.loop_headers.binary_search_by_key(&pc, |h| h.pc).ok().map(|i| cf.loop_headers[i])?;
            let entry =
                OsrEntry { loop_offset: header.wasm_offset, stack_slot: cf.num_locals as u32 + cf.consts.len() as u32 };
            let func_index = module.num_imported_funcs + func;
            let input = crate::tier::FuncInput {
                module,
                registry: &rt.types,
                func_index,
                race: rt.race.is_some(),
                inline_alloc: !rt.heap.allocation_observed(),
            };
            let start = std::time::Instant::now();
            let r = compiler.compile_osr(&input, entry);
            let name = || {
                let f = module
                    .source
                    .func_name(func_index)
                    .map_or_else(|| format!("func[{func_index}]"), |n| format!("${n}"));
                format!("{f} (on-stack replacement at the loop at byte {})", header.wasm_offset)
            };
            rt.jit_stats.record_osr(&r, start.elapsed().as_nanos() as u64, name);
            // Its frames hold references too: the collector must find its stack maps.
            r.inspect(|code| rt.jit_code.register(code)).ok()
        })
        .clone()
}
