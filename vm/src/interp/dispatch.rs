//! The dispatch loop: one `match` over [`Instr`] that runs while control stays in one instance.
//!
//! Only `pc`, `instr` (the instruction at `pc`), `code` and `frame` live in registers across instructions;
//! the rest of the position (function, frame pointer) stays in [`Position`] and is touched by calls and
//! returns only. Each arm is one line that
//! calls its family's `#[inline(always)]` handler (`numeric.rs`, `memory.rs`, ...), so the compiled loop is
//! still one jump table with each handler's code at its target. Control flow is written here, in the local
//! macros, because it is what changes `pc`, `frame` and `code`: branches (a backward one polls the stop
//! flag), calls and returns (a function entry polls too), and every way out of the loop ([`Exit`]).
//! Instructions that are rare in hot code go to `cold.rs` in one out-of-line call, which keeps the loop's
//! registers free.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::cold::{Cold, cold_op};
use super::gc_objects::{self, OpExit};
use super::memory::MemView;
use super::operands::{get, set};
use super::race_hooks::RaceHooks;
use super::{memory, numeric, tables};
use crate::TrapKind;
use crate::bytecode::Instr;
use crate::memory::LinearMemory;
use crate::module::ModuleData;
use crate::mutator::{Frame, Position};
use crate::state::{FuncKind, StoreState};
use crate::types::TypeKind;

/// Why the dispatch loop stopped.
pub(super) enum Exit {
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
    /// `memory.atomic.wait` at `pos`: it blocks with the mutator native, outside the loop
    /// (`atomics::wait`), then execution resumes after it.
    Wait,
    /// A call needs `slots` committed value-stack slots; `pos` is at the call, which runs again once the
    /// stack has grown (or traps if it cannot).
    GrowStack {
        slots: usize,
    },
    /// Call compiled defined function `func` of this instance with its arguments at absolute slot `base`;
    /// `tail` as for `Host`. `pos` is at the call.
    Jit {
        func: u32,
        base: usize,
        tail: bool,
    },
    /// Defined function `func` has been called often enough (`auto`): compile it, then run the call at
    /// `pos` again.
    TierUp {
        func: u32,
    },
    /// A back-edge to the loop header at `header` found the running function hot (its countdown ran out)
    /// or already compiled: try on-stack replacement (`osr.rs`). `pos` is at the branch, which has been
    /// taken (the loop's values are in their slots); interpretation resumes at `header` if it is declined.
    Osr {
        header: usize,
    },
    Trap(TrapKind),
    /// The instruction at `pos` threw the exception `exn` (an object reference): unwind (`exceptions.rs`).
    Throw(u64),
    /// `--race`: the instruction at `pos` completed and raced with an earlier access; report it, then go
    /// on after the instruction.
    Race(Box<super::race_hooks::FoundRace>),
}

/// Run from `pos` while control stays in `pos.inst`.
pub(super) fn execute(store: &mut StoreState, pos: &mut Position, depth0: usize) -> Exit {
    let inst_id = pos.inst;
    let module: Arc<ModuleData> = store.instances[inst_id as usize].module.clone();
    let mem0_index = store.instances[inst_id as usize].memories.first().copied();
    // Held for the whole loop, so the view of it outlives no memory. `memory.grow` re-derives the view
    // (`MemoryGrow`), and so does a trap of a shared memory whose length another thread grew (`try_mem!`).
    let mem0 = mem0_index.map(|m| store.memories[m as usize].clone());
    let mut mem = mem0.as_deref().map_or(MemView::EMPTY, MemView::of);
    // Two copies of the loop: only `auto` counts back-edges, so `--jit=off` (and `eager`, whose
    // interpreted functions are those the compiler declined) runs the loop it ran before back-edges
    // counted. Measured on one copy with the count behind the tier slot's zero test: mandelbrot, sieve
    // and matmul 7-13 % slower with `--jit=off`.
    let config = &store.rt.config.jit;
    if config.mode == crate::tier::JitMode::Auto && config.compiler.is_some() {
        dispatch::<true>(store, &module, pos, depth0, &mut mem, mem0.as_deref(), mem0_index)
    } else {
        dispatch::<false>(store, &module, pos, depth0, &mut mem, mem0.as_deref(), mem0_index)
    }
}

/// After an out-of-bounds access to memory 0: a fresh view if the memory is shared and another thread
/// has grown it since the view was taken (the access then runs again), else `None` (the trap stands).
#[cold]
#[inline(never)]
fn refreshed_shared_view(mem0: Option<&LinearMemory>, view: MemView) -> Option<MemView> {
    let m = mem0.filter(|m| m.is_shared())?;
    (m.len() > view.len()).then(|| MemView::of(m))
}

fn dispatch<const COUNT_BACK_EDGES: bool>(
    store: &mut StoreState,
    module: &ModuleData,
    pos: &mut Position,
    depth0: usize,
    mem: &mut MemView,
    mem0: Option<&LinearMemory>,
    mem0_index: Option<u32>,
) -> Exit {
    let inst_id = pos.inst;
    let max_depth = store.rt.config.max_call_depth;
    let StoreState { rt, mutator, instances, funcs, memories, tables, globals, .. } = store;
    let (registry, heap) = (&rt.types, &rt.heap);
    let crate::mutator::Mutator { exec, cache, alloc, link, race: race_ctx, race_stacks, .. } = mutator;
    let compiler = rt.config.jit.compiler.as_deref();
    let race_rt = rt.race.as_deref();
    let stop: &AtomicBool = link.stop_flag();
    let stack_len = exec.stack.len();
    let mut code: &[Instr] = &module.code[pos.func as usize].code;
    let mut pc = pos.pc;
    let stack: &mut [u64] = &mut exec.stack;
    let frames = &mut exec.frames;
    let mut frame: &mut [u64] = &mut stack[pos.fp..];

    // `instr` is `code[pc]`. It is fetched at the end of an iteration (every `continue` fetches before it
    // goes back), so the `match` is the loop's header and an instruction costs one bounds check and one
    // jump back. Fetched at the top, the compiler moved the check into a block of its own, a second taken
    // jump per instruction (fib 35 was about 5 % slower).
    let mut instr: &Instr = &code[pc];
    macro_rules! fetch_and_continue {
        () => {{
            instr = &code[pc];
            continue;
        }};
    }
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
    // A handler's result: its value, or the trap it reports.
    macro_rules! try_op {
        ($r:expr) => {
            match $r {
                Ok(v) => v,
                Err(k) => trap!(k),
            }
        };
    }
    // A memory-0 access's result: a stale view of a shared memory is refreshed and the access retried.
    macro_rules! try_mem {
        ($r:expr) => {
            match $r {
                Ok(v) => v,
                Err(k) => {
                    if let Some(fresh) = refreshed_shared_view(mem0, *mem) {
                        *mem = fresh;
                        fetch_and_continue!();
                    }
                    trap!(k)
                }
            }
        };
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
    // A backward branch (a loop back-edge) is a safepoint: the translator recorded a stack map at it. In
    // `auto` it also counts towards the running function's tier-up (`tier.rs`; an even slot without the
    // declined bit means compiled code exists for a function this activation still interprets).
    macro_rules! branch {
        ($off:expr) => {{
            let off = $off as isize;
            if off <= 0 {
                let header = (pc as isize + off) as usize;
                if stop.load(Ordering::Relaxed) {
                    save!();
                    return Exit::Safepoint { resume: header };
                }
                if COUNT_BACK_EDGES {
                    let tier_slot = &instances[inst_id as usize].tier_slots[pos.func as usize];
                    let slot = tier_slot.load(Ordering::Relaxed);
                    if slot & 1 == 1 && slot != 1 {
                        tier_slot.store(slot - 2, Ordering::Relaxed);
                    } else if slot != 0 && slot & 2 == 0 {
                        save!();
                        return Exit::Osr { header };
                    }
                }
            }
            pc = (pc as isize + off) as usize;
            fetch_and_continue!();
        }};
    }
    macro_rules! br_if {
        ($cond:expr, $off:expr) => {{
            if $cond {
                branch!($off);
            }
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
            fetch_and_continue!();
        }};
    }
    // The callee's tier slot (`tier.rs`): 0 (always, with `--jit=off`) interprets it; otherwise count
    // the call towards tier-up or call the compiled code. `$jit` leaves the loop for the compiled call.
    macro_rules! check_tier {
        ($callee:expr, $jit:expr) => {{
            let callee: u32 = $callee;
            // Read through the instance at the call rather than held in a register across the loop:
            // one more live value in the loop cost 5-10 % on call-free loops (mandelbrot, matmul).
            let tier_slots: &[AtomicU64] = &instances[inst_id as usize].tier_slots;
            let slot = tier_slots[callee as usize].load(Ordering::Relaxed);
            if slot != 0 {
                if slot & 1 == 0 {
                    $jit;
                } else if slot == 1 {
                    save!();
                    return Exit::TierUp { func: callee };
                } else {
                    tier_slots[callee as usize].store(slot - 2, Ordering::Relaxed);
                }
            }
        }};
    }
    // Enter a callee of this module at `base` (relative to the current frame).
    macro_rules! call_local {
        ($callee:expr, $base:expr) => {{
            let callee: u32 = $callee;
            check_tier!(callee, {
                save!();
                return Exit::Jit { func: callee, base: pos.fp + $base as usize, tail: false };
            });
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
            check_tier!(callee, {
                frame.copy_within(b..b + np, 0);
                save!();
                return Exit::Jit { func: callee, base: pos.fp, tail: true };
            });
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
            fetch_and_continue!();
        }};
    }
    macro_rules! table_of {
        ($t:expr) => {
            tables[instances[inst_id as usize].tables[$t as usize] as usize]
        };
    }
    macro_rules! global_of {
        ($g:expr) => {
            globals[instances[inst_id as usize].globals[$g as usize] as usize].value
        };
    }
    loop {
        use Instr as I;
        match *instr {
            // ---------------- i32 (`numeric.rs`, as are i64, f32/f64 and the conversions)
            I::I32Add { dst, a, b } => numeric::i32_add(frame, dst, a, b),
            I::I32Sub { dst, a, b } => numeric::i32_sub(frame, dst, a, b),
            I::I32Mul { dst, a, b } => numeric::i32_mul(frame, dst, a, b),
            I::I32DivS { dst, a, b } => try_op!(numeric::i32_div_s(frame, dst, a, b)),
            I::I32DivU { dst, a, b } => try_op!(numeric::i32_div_u(frame, dst, a, b)),
            I::I32RemS { dst, a, b } => try_op!(numeric::i32_rem_s(frame, dst, a, b)),
            I::I32RemU { dst, a, b } => try_op!(numeric::i32_rem_u(frame, dst, a, b)),
            I::I32And { dst, a, b } => numeric::i32_and(frame, dst, a, b),
            I::I32Or { dst, a, b } => numeric::i32_or(frame, dst, a, b),
            I::I32Xor { dst, a, b } => numeric::i32_xor(frame, dst, a, b),
            I::I32Shl { dst, a, b } => numeric::i32_shl(frame, dst, a, b),
            I::I32ShrS { dst, a, b } => numeric::i32_shr_s(frame, dst, a, b),
            I::I32ShrU { dst, a, b } => numeric::i32_shr_u(frame, dst, a, b),
            I::I32Rotl { dst, a, b } => numeric::i32_rotl(frame, dst, a, b),
            I::I32Rotr { dst, a, b } => numeric::i32_rotr(frame, dst, a, b),
            I::I32Eq { dst, a, b } => numeric::i32_eq(frame, dst, a, b),
            I::I32Ne { dst, a, b } => numeric::i32_ne(frame, dst, a, b),
            I::I32LtS { dst, a, b } => numeric::i32_lt_s(frame, dst, a, b),
            I::I32LtU { dst, a, b } => numeric::i32_lt_u(frame, dst, a, b),
            I::I32GtS { dst, a, b } => numeric::i32_gt_s(frame, dst, a, b),
            I::I32GtU { dst, a, b } => numeric::i32_gt_u(frame, dst, a, b),
            I::I32LeS { dst, a, b } => numeric::i32_le_s(frame, dst, a, b),
            I::I32LeU { dst, a, b } => numeric::i32_le_u(frame, dst, a, b),
            I::I32GeS { dst, a, b } => numeric::i32_ge_s(frame, dst, a, b),
            I::I32GeU { dst, a, b } => numeric::i32_ge_u(frame, dst, a, b),
            I::I32Eqz { dst, src } => numeric::i32_eqz(frame, dst, src),
            I::I32Clz { dst, src } => numeric::i32_clz(frame, dst, src),
            I::I32Ctz { dst, src } => numeric::i32_ctz(frame, dst, src),
            I::I32Popcnt { dst, src } => numeric::i32_popcnt(frame, dst, src),
            I::I32Extend8S { dst, src } => numeric::i32_extend8_s(frame, dst, src),
            I::I32Extend16S { dst, src } => numeric::i32_extend16_s(frame, dst, src),
            I::I32AddImm { dst, a, imm } => numeric::i32_add_imm(frame, dst, a, imm),
            I::I32SubImm { dst, a, imm } => numeric::i32_sub_imm(frame, dst, a, imm),
            I::I32AndImm { dst, a, imm } => numeric::i32_and_imm(frame, dst, a, imm),
            I::I32ShlImm { dst, a, imm } => numeric::i32_shl_imm(frame, dst, a, imm),
            I::I32ShrSImm { dst, a, imm } => numeric::i32_shr_s_imm(frame, dst, a, imm),
            I::I32ShrUImm { dst, a, imm } => numeric::i32_shr_u_imm(frame, dst, a, imm),
            I::I32EqImm { dst, a, imm } => numeric::i32_eq_imm(frame, dst, a, imm),
            I::I32NeImm { dst, a, imm } => numeric::i32_ne_imm(frame, dst, a, imm),
            I::I32LtSImm { dst, a, imm } => numeric::i32_lt_s_imm(frame, dst, a, imm),
            I::I32LtUImm { dst, a, imm } => numeric::i32_lt_u_imm(frame, dst, a, imm),
            I::I32GtSImm { dst, a, imm } => numeric::i32_gt_s_imm(frame, dst, a, imm),
            I::I32GtUImm { dst, a, imm } => numeric::i32_gt_u_imm(frame, dst, a, imm),
            I::I32LeSImm { dst, a, imm } => numeric::i32_le_s_imm(frame, dst, a, imm),
            I::I32GeSImm { dst, a, imm } => numeric::i32_ge_s_imm(frame, dst, a, imm),

            // ---------------- i64
            I::I64Add { dst, a, b } => numeric::i64_add(frame, dst, a, b),
            I::I64Sub { dst, a, b } => numeric::i64_sub(frame, dst, a, b),
            I::I64Mul { dst, a, b } => numeric::i64_mul(frame, dst, a, b),
            I::I64AddImm { dst, a, imm } => numeric::i64_add_imm(frame, dst, a, imm),
            I::I64SubImm { dst, a, imm } => numeric::i64_sub_imm(frame, dst, a, imm),
            I::I64DivS { dst, a, b } => try_op!(numeric::i64_div_s(frame, dst, a, b)),
            I::I64DivU { dst, a, b } => try_op!(numeric::i64_div_u(frame, dst, a, b)),
            I::I64RemS { dst, a, b } => try_op!(numeric::i64_rem_s(frame, dst, a, b)),
            I::I64RemU { dst, a, b } => try_op!(numeric::i64_rem_u(frame, dst, a, b)),
            I::I64And { dst, a, b } => numeric::i64_and(frame, dst, a, b),
            I::I64Or { dst, a, b } => numeric::i64_or(frame, dst, a, b),
            I::I64Xor { dst, a, b } => numeric::i64_xor(frame, dst, a, b),
            I::I64Shl { dst, a, b } => numeric::i64_shl(frame, dst, a, b),
            I::I64ShrS { dst, a, b } => numeric::i64_shr_s(frame, dst, a, b),
            I::I64ShrU { dst, a, b } => numeric::i64_shr_u(frame, dst, a, b),
            I::I64Rotl { dst, a, b } => numeric::i64_rotl(frame, dst, a, b),
            I::I64Rotr { dst, a, b } => numeric::i64_rotr(frame, dst, a, b),
            I::I64Eq { dst, a, b } => numeric::i64_eq(frame, dst, a, b),
            I::I64Ne { dst, a, b } => numeric::i64_ne(frame, dst, a, b),
            I::I64LtS { dst, a, b } => numeric::i64_lt_s(frame, dst, a, b),
            I::I64LtU { dst, a, b } => numeric::i64_lt_u(frame, dst, a, b),
            I::I64GtS { dst, a, b } => numeric::i64_gt_s(frame, dst, a, b),
            I::I64GtU { dst, a, b } => numeric::i64_gt_u(frame, dst, a, b),
            I::I64LeS { dst, a, b } => numeric::i64_le_s(frame, dst, a, b),
            I::I64LeU { dst, a, b } => numeric::i64_le_u(frame, dst, a, b),
            I::I64GeS { dst, a, b } => numeric::i64_ge_s(frame, dst, a, b),
            I::I64GeU { dst, a, b } => numeric::i64_ge_u(frame, dst, a, b),
            I::I64Eqz { dst, src } => numeric::i64_eqz(frame, dst, src),
            I::I64Clz { dst, src } => numeric::i64_clz(frame, dst, src),
            I::I64Ctz { dst, src } => numeric::i64_ctz(frame, dst, src),
            I::I64Popcnt { dst, src } => numeric::i64_popcnt(frame, dst, src),
            I::I64Extend8S { dst, src } => numeric::i64_extend8_s(frame, dst, src),
            I::I64Extend16S { dst, src } => numeric::i64_extend16_s(frame, dst, src),
            I::I64Extend32S { dst, src } => numeric::i64_extend32_s(frame, dst, src),

            // ---------------- f32 / f64
            I::F32Add { dst, a, b } => numeric::f32_add(frame, dst, a, b),
            I::F32Sub { dst, a, b } => numeric::f32_sub(frame, dst, a, b),
            I::F32Mul { dst, a, b } => numeric::f32_mul(frame, dst, a, b),
            I::F32Div { dst, a, b } => numeric::f32_div(frame, dst, a, b),
            I::F32Min { dst, a, b } => numeric::f32_min(frame, dst, a, b),
            I::F32Max { dst, a, b } => numeric::f32_max(frame, dst, a, b),
            I::F32Copysign { dst, a, b } => numeric::f32_copysign(frame, dst, a, b),
            I::F32Eq { dst, a, b } => numeric::f32_eq(frame, dst, a, b),
            I::F32Ne { dst, a, b } => numeric::f32_ne(frame, dst, a, b),
            I::F32Lt { dst, a, b } => numeric::f32_lt(frame, dst, a, b),
            I::F32Gt { dst, a, b } => numeric::f32_gt(frame, dst, a, b),
            I::F32Le { dst, a, b } => numeric::f32_le(frame, dst, a, b),
            I::F32Ge { dst, a, b } => numeric::f32_ge(frame, dst, a, b),
            I::F32Abs { dst, src } => numeric::f32_abs(frame, dst, src),
            I::F32Neg { dst, src } => numeric::f32_neg(frame, dst, src),
            I::F32Ceil { dst, src } => numeric::f32_ceil(frame, dst, src),
            I::F32Floor { dst, src } => numeric::f32_floor(frame, dst, src),
            I::F32Trunc { dst, src } => numeric::f32_trunc(frame, dst, src),
            I::F32Nearest { dst, src } => numeric::f32_nearest(frame, dst, src),
            I::F32Sqrt { dst, src } => numeric::f32_sqrt(frame, dst, src),
            I::F64Add { dst, a, b } => numeric::f64_add(frame, dst, a, b),
            I::F64Sub { dst, a, b } => numeric::f64_sub(frame, dst, a, b),
            I::F64Mul { dst, a, b } => numeric::f64_mul(frame, dst, a, b),
            I::F64Div { dst, a, b } => numeric::f64_div(frame, dst, a, b),
            I::F64Min { dst, a, b } => numeric::f64_min(frame, dst, a, b),
            I::F64Max { dst, a, b } => numeric::f64_max(frame, dst, a, b),
            I::F64Copysign { dst, a, b } => numeric::f64_copysign(frame, dst, a, b),
            I::F64Eq { dst, a, b } => numeric::f64_eq(frame, dst, a, b),
            I::F64Ne { dst, a, b } => numeric::f64_ne(frame, dst, a, b),
            I::F64Lt { dst, a, b } => numeric::f64_lt(frame, dst, a, b),
            I::F64Gt { dst, a, b } => numeric::f64_gt(frame, dst, a, b),
            I::F64Le { dst, a, b } => numeric::f64_le(frame, dst, a, b),
            I::F64Ge { dst, a, b } => numeric::f64_ge(frame, dst, a, b),
            I::F64Abs { dst, src } => numeric::f64_abs(frame, dst, src),
            I::F64Neg { dst, src } => numeric::f64_neg(frame, dst, src),
            I::F64Ceil { dst, src } => numeric::f64_ceil(frame, dst, src),
            I::F64Floor { dst, src } => numeric::f64_floor(frame, dst, src),
            I::F64Trunc { dst, src } => numeric::f64_trunc(frame, dst, src),
            I::F64Nearest { dst, src } => numeric::f64_nearest(frame, dst, src),
            I::F64Sqrt { dst, src } => numeric::f64_sqrt(frame, dst, src),

            // ---------------- conversions
            I::I32WrapI64 { dst, src } => numeric::i32_wrap_i64(frame, dst, src),
            I::I64ExtendI32S { dst, src } => numeric::i64_extend_i32_s(frame, dst, src),
            I::I64ExtendI32U { dst, src } => numeric::i64_extend_i32_u(frame, dst, src),
            I::I32TruncF32S { dst, src } => try_op!(numeric::i32_trunc_f32_s(frame, dst, src)),
            I::I32TruncF32U { dst, src } => try_op!(numeric::i32_trunc_f32_u(frame, dst, src)),
            I::I32TruncF64S { dst, src } => try_op!(numeric::i32_trunc_f64_s(frame, dst, src)),
            I::I32TruncF64U { dst, src } => try_op!(numeric::i32_trunc_f64_u(frame, dst, src)),
            I::I64TruncF32S { dst, src } => try_op!(numeric::i64_trunc_f32_s(frame, dst, src)),
            I::I64TruncF32U { dst, src } => try_op!(numeric::i64_trunc_f32_u(frame, dst, src)),
            I::I64TruncF64S { dst, src } => try_op!(numeric::i64_trunc_f64_s(frame, dst, src)),
            I::I64TruncF64U { dst, src } => try_op!(numeric::i64_trunc_f64_u(frame, dst, src)),
            I::I32TruncSatF32S { dst, src } => numeric::i32_trunc_sat_f32_s(frame, dst, src),
            I::I32TruncSatF32U { dst, src } => numeric::i32_trunc_sat_f32_u(frame, dst, src),
            I::I32TruncSatF64S { dst, src } => numeric::i32_trunc_sat_f64_s(frame, dst, src),
            I::I32TruncSatF64U { dst, src } => numeric::i32_trunc_sat_f64_u(frame, dst, src),
            I::I64TruncSatF32S { dst, src } => numeric::i64_trunc_sat_f32_s(frame, dst, src),
            I::I64TruncSatF32U { dst, src } => numeric::i64_trunc_sat_f32_u(frame, dst, src),
            I::I64TruncSatF64S { dst, src } => numeric::i64_trunc_sat_f64_s(frame, dst, src),
            I::I64TruncSatF64U { dst, src } => numeric::i64_trunc_sat_f64_u(frame, dst, src),
            I::F32ConvertI32S { dst, src } => numeric::f32_convert_i32_s(frame, dst, src),
            I::F32ConvertI32U { dst, src } => numeric::f32_convert_i32_u(frame, dst, src),
            I::F32ConvertI64S { dst, src } => numeric::f32_convert_i64_s(frame, dst, src),
            I::F32ConvertI64U { dst, src } => numeric::f32_convert_i64_u(frame, dst, src),
            I::F32DemoteF64 { dst, src } => numeric::f32_demote_f64(frame, dst, src),
            I::F64ConvertI32S { dst, src } => numeric::f64_convert_i32_s(frame, dst, src),
            I::F64ConvertI32U { dst, src } => numeric::f64_convert_i32_u(frame, dst, src),
            I::F64ConvertI64S { dst, src } => numeric::f64_convert_i64_s(frame, dst, src),
            I::F64ConvertI64U { dst, src } => numeric::f64_convert_i64_u(frame, dst, src),
            I::F64PromoteF32 { dst, src } => numeric::f64_promote_f32(frame, dst, src),

            // ---------------- constants, moves
            I::Const32 { dst, value } => set(frame, dst, value),
            I::Const64 { dst, value } => set(frame, dst, value),
            I::Copy { dst, src } => set(frame, dst, get::<u64>(frame, src)),
            I::Select { dst, cond, a, b } => {
                set(frame, dst, if get(frame, cond) { get::<u64>(frame, a) } else { get::<u64>(frame, b) })
            }

            // ---------------- memory 0 (`memory.rs`)
            I::I32Load { dst, addr, offset } => try_mem!(memory::i32_load(frame, *mem, dst, addr, offset)),
            I::I64Load { dst, addr, offset } => try_mem!(memory::i64_load(frame, *mem, dst, addr, offset)),
            I::F32Load { dst, addr, offset } => try_mem!(memory::f32_load(frame, *mem, dst, addr, offset)),
            I::F64Load { dst, addr, offset } => try_mem!(memory::f64_load(frame, *mem, dst, addr, offset)),
            I::I32Load8S { dst, addr, offset } => try_mem!(memory::i32_load8_s(frame, *mem, dst, addr, offset)),
            I::I32Load8U { dst, addr, offset } => try_mem!(memory::i32_load8_u(frame, *mem, dst, addr, offset)),
            I::I32Load16S { dst, addr, offset } => try_mem!(memory::i32_load16_s(frame, *mem, dst, addr, offset)),
            I::I32Load16U { dst, addr, offset } => try_mem!(memory::i32_load16_u(frame, *mem, dst, addr, offset)),
            I::I64Load8S { dst, addr, offset } => try_mem!(memory::i64_load8_s(frame, *mem, dst, addr, offset)),
            I::I64Load8U { dst, addr, offset } => try_mem!(memory::i64_load8_u(frame, *mem, dst, addr, offset)),
            I::I64Load16S { dst, addr, offset } => try_mem!(memory::i64_load16_s(frame, *mem, dst, addr, offset)),
            I::I64Load16U { dst, addr, offset } => try_mem!(memory::i64_load16_u(frame, *mem, dst, addr, offset)),
            I::I64Load32S { dst, addr, offset } => try_mem!(memory::i64_load32_s(frame, *mem, dst, addr, offset)),
            I::I64Load32U { dst, addr, offset } => try_mem!(memory::i64_load32_u(frame, *mem, dst, addr, offset)),
            I::I32Store { addr, value, offset } => try_mem!(memory::i32_store(frame, *mem, addr, value, offset)),
            I::I64Store { addr, value, offset } => try_mem!(memory::i64_store(frame, *mem, addr, value, offset)),
            I::F32Store { addr, value, offset } => try_mem!(memory::f32_store(frame, *mem, addr, value, offset)),
            I::F64Store { addr, value, offset } => try_mem!(memory::f64_store(frame, *mem, addr, value, offset)),
            I::I32Store8 { addr, value, offset } => try_mem!(memory::i32_store8(frame, *mem, addr, value, offset)),
            I::I32Store16 { addr, value, offset } => try_mem!(memory::i32_store16(frame, *mem, addr, value, offset)),
            I::I64Store8 { addr, value, offset } => try_mem!(memory::i64_store8(frame, *mem, addr, value, offset)),
            I::I64Store16 { addr, value, offset } => try_mem!(memory::i64_store16(frame, *mem, addr, value, offset)),
            I::I64Store32 { addr, value, offset } => try_mem!(memory::i64_store32(frame, *mem, addr, value, offset)),

            // ---------------- globals
            I::GlobalGet { dst, global } => set(frame, dst, global_of!(global)),
            I::GlobalSet { global, src } => global_of!(global) = get(frame, src),

            // ---------------- branches on references
            I::BrOnNull { src, offset } => br_if!(get::<u64>(frame, src) == 0, offset),
            I::BrOnNonNull { src, offset } => br_if!(get::<u64>(frame, src) != 0, offset),
            I::BrOnCast { src, target, on_fail, offset } => {
                let target = module.code[pos.func as usize].casts[target as usize];
                br_if!(gc_objects::cast_matches(frame, registry, funcs, target, src) != on_fail, offset)
            }

            // ---------------- control
            I::Unreachable => trap!(TrapKind::Unreachable),
            I::AtomicWait { .. } => {
                save!();
                return Exit::Wait;
            }
            I::Br { offset } => branch!(offset),
            I::BrIfEqz { cond, offset } => br_if!(!get::<bool>(frame, cond), offset),
            I::BrIfNez { cond, offset } => br_if!(get::<bool>(frame, cond), offset),
            I::BrI32LtSImm { a, imm, offset } => br_if!(get::<i32>(frame, a) < imm as i32, offset),
            I::BrI32GeSImm { a, imm, offset } => br_if!(get::<i32>(frame, a) >= imm as i32, offset),
            I::BrI32EqImm { a, imm, offset } => br_if!(get::<i32>(frame, a) == imm as i32, offset),
            I::BrI32NeImm { a, imm, offset } => br_if!(get::<i32>(frame, a) != imm as i32, offset),
            I::BrI32Eq { a, b, offset } => br_if!(get::<u32>(frame, a) == get::<u32>(frame, b), offset),
            I::BrI32Ne { a, b, offset } => br_if!(get::<u32>(frame, a) != get::<u32>(frame, b), offset),
            I::BrI32LtS { a, b, offset } => br_if!(get::<i32>(frame, a) < get::<i32>(frame, b), offset),
            I::BrI32LtU { a, b, offset } => br_if!(get::<u32>(frame, a) < get::<u32>(frame, b), offset),
            I::BrI32GtS { a, b, offset } => br_if!(get::<i32>(frame, a) > get::<i32>(frame, b), offset),
            I::BrI32GtU { a, b, offset } => br_if!(get::<u32>(frame, a) > get::<u32>(frame, b), offset),
            I::BrI32LeS { a, b, offset } => br_if!(get::<i32>(frame, a) <= get::<i32>(frame, b), offset),
            I::BrI32LeU { a, b, offset } => br_if!(get::<u32>(frame, a) <= get::<u32>(frame, b), offset),
            I::BrI32GeS { a, b, offset } => br_if!(get::<i32>(frame, a) >= get::<i32>(frame, b), offset),
            I::BrI32GeU { a, b, offset } => br_if!(get::<u32>(frame, a) >= get::<u32>(frame, b), offset),
            I::BrTable { index, len } => {
                let i = get::<u32>(frame, index).min(len);
                pc += 1 + i as usize;
                fetch_and_continue!();
            }
            I::Return => do_return!(),
            I::Return1 { src } => {
                frame[0] = frame[src as usize];
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
                call_store_func!(instances[inst_id as usize].funcs[f as usize], base, false)
            }
            I::CallIndirect { table, type_id, index, base } => {
                let index = get(frame, index);
                let f = try_op!(tables::indirect_callee(&table_of!(table), registry, funcs, index, type_id));
                call_store_func!(f, base, false)
            }
            I::CallRef { func: fr, base } => call_store_func!(try_op!(tables::ref_callee(frame, fr)), base, false),
            I::ReturnCallLocal { func: callee, base } => tail_call_local!(callee, base),
            I::ReturnCallImport { func: f, base } => {
                call_store_func!(instances[inst_id as usize].funcs[f as usize], base, true)
            }
            I::ReturnCallIndirect { table, type_id, index, base } => {
                let index = get(frame, index);
                let f = try_op!(tables::indirect_callee(&table_of!(table), registry, funcs, index, type_id));
                call_store_func!(f, base, true)
            }
            I::ReturnCallRef { func: fr, base } => call_store_func!(try_op!(tables::ref_callee(frame, fr)), base, true),

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
                    globals: &mut globals[..],
                    registry,
                    mem: &mut *mem,
                    mem0_index,
                    heap,
                    cache: &mut *cache,
                    alloc: &mut *alloc,
                    pc,
                    race: match (race_rt, race_ctx.as_deref_mut()) {
                        (Some(rt), Some(ctx)) => Some(RaceHooks {
                            rt,
                            ctx,
                            frames: &frames[..],
                            depth0,
                            segs: &exec.race_segs,
                            stacks: &mut *race_stacks,
                            compiler,
                        }),
                        _ => None,
                    },
                };
                match cold_op(&mut ctx, other, frame) {
                    Ok(()) => {}
                    Err(OpExit::Trap(k)) => trap!(k),
                    Err(OpExit::Collect) => {
                        save!();
                        return Exit::Collect;
                    }
                    Err(OpExit::Throw(exn)) => {
                        save!();
                        return Exit::Throw(exn);
                    }
                    Err(OpExit::Race(found)) => {
                        save!();
                        return Exit::Race(found);
                    }
                }
            }
        }
        pc += 1;
        instr = &code[pc];
    }
}
