//! Translation of one validated function body into [`crate::bytecode`].
//!
//! The translator walks the wasm operators once, feeding each to wasmparser's `FuncValidator` first
//! (so it only ever sees valid code, and so it can ask the validator for the type of any operand)
//! and then emitting bytecode. All static work happens here: branch targets, slot assignment,
//! reference maps, field offsets.
//!
//! # The virtual operand stack
//!
//! Operand-stack position `p` owns the frame slot `num_locals + p`. An entry on the translator's
//! virtual stack is either a *temp* (its value is in its own slot), a deferred `local.get` (the
//! value is still in the local's slot), or a deferred constant. Deferring lets `i32.add (local.get
//! 0) (i32.const 1)` read the local and the immediate directly. A deferred entry is *materialized*
//! (copied into its own slot) when that is needed for correctness:
//! - before a `local.set`/`local.tee` of a local that is still deferred on the stack;
//! - at every block, loop and if entry (so both arms of a merge agree on where values live);
//! - when values must be contiguous (call arguments, block results, bulk operands).
//!
//! # Reference maps
//!
//! Each entry remembers whether it holds a reference (asked of the validator, which knows every
//! operand's type). At each GC point the translator records the frame slots holding references:
//! every reference-typed local plus every reference-typed temp live across the point. See
//! [`StackMap`].

mod atomics;
mod exceptions;
mod shared_gc;

use crate::bytecode::*;
use crate::types::{RtHeapType, RtValType, TypeKind, TypeRegistry, canonical_heap_type};
use wasmparser::{BlockType, FuncValidator, FunctionBody, MemArg, MemArgTarget, Operator, ValType, ValidatorResources};

/// Module-level facts the translator needs.
pub struct ModuleEnv<'a> {
    pub registry: &'a TypeRegistry,
    pub types: &'a wasmparser::types::Types,
    /// Module type index → canonical id.
    pub type_ids: &'a [u32],
    /// Function index → canonical type id.
    pub func_types: &'a [u32],
    pub num_imported_funcs: u32,
    /// The tag index space.
    pub tags: &'a [crate::module::TagDesc],
    /// By memory index: whether plain loads and stores get the race detector's hooks (`--race` and a
    /// shared memory), translated as `RaceLoad`/`RaceStore`.
    pub race_memories: &'a [bool],
    /// By global index: declared `shared`, so read and written through the runtime-wide cell
    /// (`GlobalGetShared`/`GlobalSetShared`, `shared_gc.rs`).
    pub shared_globals: &'a [bool],
    /// By global index: `--race` and a mutable shared global, whose accesses get `RaceGlobal` hooks.
    pub race_globals: &'a [bool],
    /// `--race`: fields and elements of shared GC objects get the race detector's hooks (`shared_gc.rs`).
    pub race: bool,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Operand {
    Temp,
    Local(u16),
    Const(u64),
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    op: Operand,
    is_ref: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CtrlKind {
    Func,
    Block,
    Loop,
    If,
    Else,
    /// `try_table`: its catch clauses become handlers at its `end`.
    TryTable,
    /// The body of a legacy `try`.
    Try,
    /// A `catch`/`catch_all` arm of a legacy `try`: the caught exception sits in the slot at the block's
    /// height (a hidden stack entry under the payload), where `rethrow` finds it.
    LegacyCatch,
}

struct Ctrl {
    kind: CtrlKind,
    /// Stack height below the block's parameters.
    height: usize,
    param_refs: Vec<bool>,
    result_refs: Vec<bool>,
    /// For loops: the pc of the loop head.
    loop_pc: usize,
    /// Forward branches to patch to the end.
    fixups: Vec<usize>,
    /// For `if`: the conditional branch to patch to the `else` arm (or the end).
    else_fixup: Option<usize>,
    /// Whether the code at the block's entry was reachable (false: the whole block is dead).
    live: bool,
    /// Handler-table entries landing at this block's end (catch clauses naming its label).
    handler_fixups: Vec<usize>,
    /// `try_table` and `try`: the first instruction of the protected body.
    try_start: usize,
    /// `try_table`: its catch clauses.
    catches: Vec<wasmparser::Catch>,
    /// Legacy `try`: the end of the protected body, once the first `catch` or `catch_all` has been seen.
    body_end: Option<usize>,
}

impl Ctrl {
    fn label_refs(&self) -> &[bool] {
        if self.kind == CtrlKind::Loop { &self.param_refs } else { &self.result_refs }
    }
}

/// A validation error or an implementation limit, with the byte offset it concerns.
#[derive(Debug)]
pub struct CompileError {
    pub message: String,
    pub offset: u64,
}

impl From<wasmparser::BinaryReaderError> for CompileError {
    fn from(e: wasmparser::BinaryReaderError) -> Self {
        CompileError { message: e.message().to_string(), offset: e.offset() }
    }
}

pub type Result<T> = std::result::Result<T, CompileError>;

pub struct Translator<'a> {
    env: &'a ModuleEnv<'a>,
    code: Vec<Instr>,
    offsets: Vec<u32>,
    fields: Vec<FieldAccess>,
    arrays: Vec<ArrayAccess>,
    casts: Vec<CastTarget>,
    handlers: Vec<Handler>,
    stack_maps: Vec<StackMap>,
    loop_headers: Vec<LoopHeader>,
    stack: Vec<Entry>,
    ctrls: Vec<Ctrl>,
    local_refs: Vec<bool>,
    num_params: u16,
    num_locals: u16,
    /// Slot of operand-stack position 0: after the locals and the constant slots.
    temp_base: u16,
    /// Constants living in slots (value → slot), see `CompiledFunc::consts`.
    const_slots: std::collections::HashMap<u64, Slot>,
    consts: Vec<u64>,
    max_height: usize,
    /// Index of the last instruction if its `dst` is the slot of the top stack entry and no label
    /// was placed since: `local.set` may then retarget it, and `br_if` may fuse a comparison.
    fusable: Option<usize>,
    reachable: bool,
    offset: u32,
}

fn limit_error(what: &str, offset: u64) -> CompileError {
    CompileError { message: format!("implementation limit: {what}"), offset }
}

impl<'a> Translator<'a> {
    /// Validate and translate one function body.
    pub fn translate(
        env: &'a ModuleEnv<'a>,
        func_index: u32,
        mut validator: FuncValidator<ValidatorResources>,
        body: &FunctionBody<'_>,
    ) -> Result<(CompiledFunc, wasmparser::FuncValidatorAllocations)> {
        let func_ty = env.func_types[func_index as usize];
        let (params, results) = match &env.registry.get(func_ty).kind {
            TypeKind::Func { params, results } => (params.clone(), results.clone()),
            _ => unreachable!("function with a non-function type"),
        };
        let mut local_refs: Vec<bool> = params.iter().map(|t| is_ref_rt(*t)).collect();
        let mut locals_reader = body.get_locals_reader()?;
        for _ in 0..locals_reader.get_count() {
            let offset = locals_reader.original_position();
            let (count, ty) = locals_reader.read()?;
            validator.define_locals(offset, count, ty)?;
            if local_refs.len() + count as usize > u16::MAX as usize / 2 {
                return Err(limit_error("too many locals", offset));
            }
            local_refs.extend(std::iter::repeat_n(matches!(ty, ValType::Ref(_)), count as usize));
        }
        let num_locals = local_refs.len() as u16;
        let consts = constant_operands(body)?;
        let const_slots = consts.iter().enumerate().map(|(i, &v)| (v, num_locals + i as u16)).collect();
        let mut t = Translator {
            env,
            code: Vec::new(),
            offsets: Vec::new(),
            fields: Vec::new(),
            arrays: Vec::new(),
            casts: Vec::new(),
            handlers: Vec::new(),
            stack_maps: Vec::new(),
            loop_headers: Vec::new(),
            stack: Vec::new(),
            ctrls: Vec::new(),
            local_refs,
            num_params: params.len() as u16,
            num_locals,
            temp_base: num_locals + consts.len() as u16,
            const_slots,
            consts,
            max_height: results.len(),
            fusable: None,
            reachable: true,
            offset: 0,
        };
        t.ctrls.push(Ctrl {
            kind: CtrlKind::Func,
            height: 0,
            param_refs: Vec::new(),
            result_refs: results.iter().map(|t| is_ref_rt(*t)).collect(),
            loop_pc: 0,
            fixups: Vec::new(),
            else_fixup: None,
            live: true,
            handler_fixups: Vec::new(),
            try_start: 0,
            catches: Vec::new(),
            body_end: None,
        });
        let mut reader = body.get_operators_reader()?;
        while !reader.eof() {
            let (op, offset) = reader.read_with_offset()?;
            validator.op(offset, &op)?;
            t.offset = offset as u32;
            t.op(&op, &validator)?;
            if t.temp_base as usize + t.max_height >= u16::MAX as usize {
                return Err(limit_error("function frame too large", offset));
            }
        }
        reader.finish()?;
        thread_returns(&mut t.code);
        // The interpreter polls for a stop at function entry (pc 0, frame set up, locals zeroed): the live
        // references there are the reference parameters, which every map lists, so a map already at pc 0
        // (a call or an allocation there) serves; otherwise add one.
        if t.stack_maps.first().is_none_or(|m| m.pc != 0) {
            let ref_slots: Vec<Slot> = (0..t.num_locals).filter(|&l| t.local_refs[l as usize]).collect();
            t.stack_maps.insert(0, StackMap { pc: 0, ref_slots: ref_slots.into() });
        }
        let compiled = CompiledFunc {
            code: t.code.into(),
            fields: t.fields.into(),
            arrays: t.arrays.into(),
            casts: t.casts.into(),
            num_params: t.num_params,
            num_locals: t.num_locals,
            consts: t.consts.into(),
            frame_size: t.temp_base as u32 + t.max_height as u32 + 1,
            num_results: results.len() as u16,
            stack_maps: t.stack_maps.into(),
            wasm_offsets: t.offsets.into(),
            handlers: t.handlers.into(),
            loop_headers: t.loop_headers.into(),
        };
        Ok((compiled, validator.into_allocations()))
    }

    // ---------------------------------------------------------------- emission helpers

    fn pc(&self) -> usize {
        self.code.len()
    }

    fn emit(&mut self, i: Instr) -> usize {
        self.code.push(i);
        self.offsets.push(self.offset);
        self.fusable = None;
        self.code.len() - 1
    }

    /// Emit an instruction whose `dst` is the slot of the (new) top entry.
    fn emit_result(&mut self, i: Instr) {
        let at = self.emit(i);
        self.fusable = Some(at);
    }

    fn slot(&self, pos: usize) -> Slot {
        (self.temp_base as usize + pos) as Slot
    }

    fn push(&mut self, op: Operand, is_ref: bool) {
        self.stack.push(Entry { op, is_ref });
        self.max_height = self.max_height.max(self.stack.len());
    }

    /// Push a temp and return its slot.
    fn push_temp(&mut self, is_ref: bool) -> Slot {
        self.push(Operand::Temp, is_ref);
        self.slot(self.stack.len() - 1)
    }

    /// The slot the next pushed value will occupy.
    fn next_slot(&self) -> Slot {
        self.slot(self.stack.len())
    }

    fn pop(&mut self) -> Entry {
        self.stack.pop().expect("validated code never underflows")
    }

    /// Pop an operand and return a slot holding its value (materializing constants).
    fn pop_slot(&mut self) -> Slot {
        let pos = self.stack.len() - 1;
        let e = self.pop();
        match e.op {
            Operand::Temp => self.slot(pos),
            Operand::Local(l) => l,
            Operand::Const(v) => match self.const_slots.get(&v) {
                Some(&slot) => slot,
                None => {
                    let dst = self.slot(pos);
                    self.emit_const(dst, v);
                    dst
                }
            },
        }
    }

    fn emit_const(&mut self, dst: Slot, v: u64) {
        if v <= u32::MAX as u64 {
            self.emit(Instr::Const32 { dst, value: v as u32 });
        } else {
            self.emit(Instr::Const64 { dst, value: v });
        }
    }

    /// Make the entry at `pos` a temp (copy its value into its own slot).
    fn materialize(&mut self, pos: usize) {
        let dst = self.slot(pos);
        match self.stack[pos].op {
            Operand::Temp => {}
            Operand::Local(l) => {
                self.emit(Instr::Copy { dst, src: l });
            }
            Operand::Const(v) => self.emit_const(dst, v),
        }
        self.stack[pos].op = Operand::Temp;
    }

    fn materialize_all(&mut self) {
        for pos in 0..self.stack.len() {
            self.materialize(pos);
        }
    }

    /// Materialize the top `n` entries so they sit in consecutive slots; returns the first slot.
    fn materialize_top(&mut self, n: usize) -> Slot {
        let len = self.stack.len();
        for pos in len - n..len {
            self.materialize(pos);
        }
        self.slot(len - n)
    }

    fn materialize_local(&mut self, local: u16) {
        for pos in 0..self.stack.len() {
            if self.stack[pos].op == Operand::Local(local) {
                self.materialize(pos);
            }
        }
    }

    /// Record the reference slots live at the instruction about to be emitted: every
    /// reference-typed local and every reference-typed temp among the bottom `live` entries.
    fn record_stack_map(&mut self, live: usize) {
        let ref_slots = self.live_ref_slots(live);
        self.stack_maps.push(StackMap { pc: self.pc() as u32, ref_slots: ref_slots.into() });
    }

    /// Every reference-typed local and every reference-typed temp among the bottom `live` entries.
    fn live_ref_slots(&self, live: usize) -> Vec<Slot> {
        let mut ref_slots: Vec<Slot> = (0..self.num_locals).filter(|&l| self.local_refs[l as usize]).collect();
        for pos in 0..live {
            let e = self.stack[pos];
            if e.is_ref && e.op == Operand::Temp {
                ref_slots.push(self.slot(pos));
            }
        }
        ref_slots
    }

    /// Record the map of the backward branch about to be emitted to loop `ctrls[idx]`: the interpreter polls
    /// for a stop there. Live are the references below the loop's height and the loop parameters the branch
    /// has just put in the label's slots (the entries above the height are dead once the branch is taken).
    fn record_back_edge_map(&mut self, idx: usize) {
        let height = self.ctrls[idx].height;
        let mut ref_slots = self.live_ref_slots(height);
        let params = self.ctrls[idx].label_refs();
        ref_slots.extend(params.iter().enumerate().filter(|&(_, &is_ref)| is_ref).map(|(i, _)| self.slot(height + i)));
        self.stack_maps.push(StackMap { pc: self.pc() as u32, ref_slots: ref_slots.into() });
    }

    /// Whether the `depth`-th operand from the top (after the current operator) is a reference.
    fn result_is_ref(v: &FuncValidator<ValidatorResources>, depth: usize) -> bool {
        matches!(v.get_operand_type(depth), Some(Some(ValType::Ref(_))))
    }

    // ---------------------------------------------------------------- branches

    fn patch(&mut self, at: usize, target: usize) {
        let off = target as i32 - at as i32;
        match &mut self.code[at] {
            Instr::Br { offset }
            | Instr::BrIfEqz { offset, .. }
            | Instr::BrIfNez { offset, .. }
            | Instr::BrI32LtSImm { offset, .. }
            | Instr::BrI32GeSImm { offset, .. }
            | Instr::BrI32EqImm { offset, .. }
            | Instr::BrI32NeImm { offset, .. }
            | Instr::BrOnNull { offset, .. }
            | Instr::BrOnNonNull { offset, .. }
            | Instr::BrOnCast { offset, .. }
            | Instr::BrI32Eq { offset, .. }
            | Instr::BrI32Ne { offset, .. }
            | Instr::BrI32LtS { offset, .. }
            | Instr::BrI32LtU { offset, .. }
            | Instr::BrI32GtS { offset, .. }
            | Instr::BrI32GtU { offset, .. }
            | Instr::BrI32LeS { offset, .. }
            | Instr::BrI32LeU { offset, .. }
            | Instr::BrI32GeS { offset, .. }
            | Instr::BrI32GeU { offset, .. } => *offset = off,
            other => unreachable!("patching a non-branch {other:?}"),
        }
    }

    /// Emit `branch` (with a placeholder offset) to the label `depth` levels up.
    fn emit_branch_to(&mut self, depth: u32, branch: Instr) {
        let idx = self.ctrls.len() - 1 - depth as usize;
        if self.ctrls[idx].kind == CtrlKind::Loop {
            self.record_back_edge_map(idx);
        }
        let at = self.emit(branch);
        if self.ctrls[idx].kind == CtrlKind::Loop {
            let target = self.ctrls[idx].loop_pc;
            self.patch(at, target);
        } else {
            self.ctrls[idx].fixups.push(at);
        }
    }

    /// Whether a branch to label `depth` carrying the top `n` values needs copies.
    fn branch_needs_copies(&self, depth: u32, skip_top: usize) -> bool {
        let idx = self.ctrls.len() - 1 - depth as usize;
        let n = self.ctrls[idx].label_refs().len();
        let h = self.ctrls[idx].height;
        let top = self.stack.len() - skip_top;
        if n == 0 {
            return false;
        }
        if top - n != h {
            return true;
        }
        self.stack[top - n..top].iter().any(|e| e.op != Operand::Temp)
    }

    /// Emit copies of the label's values (the top `n` entries below `skip_top`) into the label's
    /// slots, without changing the virtual stack.
    fn emit_branch_copies(&mut self, depth: u32, skip_top: usize) {
        let idx = self.ctrls.len() - 1 - depth as usize;
        let n = self.ctrls[idx].label_refs().len();
        let h = self.ctrls[idx].height;
        let top = self.stack.len() - skip_top;
        for i in 0..n {
            let pos = top - n + i;
            let dst = self.slot(h + i);
            match self.stack[pos].op {
                Operand::Temp => {
                    let src = self.slot(pos);
                    if src != dst {
                        self.emit(Instr::Copy { dst, src });
                    }
                }
                Operand::Local(l) => {
                    self.emit(Instr::Copy { dst, src: l });
                }
                Operand::Const(v) => self.emit_const(dst, v),
            }
        }
    }

    /// Unconditional branch to label `depth` (stack unchanged; the caller marks unreachable).
    fn br(&mut self, depth: u32) {
        self.emit_branch_copies(depth, 0);
        self.emit_branch_to(depth, Instr::Br { offset: 0 });
    }

    /// Conditional branch: `when_true` is a branch instruction testing the condition (its own
    /// operands already popped). If the label needs copies, the copies go behind an inverted test.
    fn br_cond(&mut self, depth: u32, when_true: Instr, when_false: Instr, skip_top: usize) {
        if self.branch_needs_copies(depth, skip_top) {
            let skip = self.emit(when_false);
            self.emit_branch_copies(depth, skip_top);
            self.emit_branch_to(depth, Instr::Br { offset: 0 });
            let here = self.pc();
            self.patch(skip, here);
        } else {
            self.emit_branch_to(depth, when_true);
        }
    }

    /// Pop an i32 condition and return (branch-if-true, branch-if-false) instructions testing it,
    /// fusing a just-emitted comparison when possible.
    fn pop_condition(&mut self) -> (Instr, Instr) {
        let top = self.stack.len() - 1;
        let cond_slot = self.slot(top);
        if let (Some(at), Operand::Temp) = (self.fusable, self.stack[top].op) {
            let fused = match self.code[at] {
                Instr::I32Eqz { dst, src } if dst == cond_slot => {
                    Some((Instr::BrIfEqz { cond: src, offset: 0 }, Instr::BrIfNez { cond: src, offset: 0 }))
                }
                Instr::I32LtSImm { dst, a, imm } if dst == cond_slot => {
                    Some((Instr::BrI32LtSImm { a, imm, offset: 0 }, Instr::BrI32GeSImm { a, imm, offset: 0 }))
                }
                Instr::I32GeSImm { dst, a, imm } if dst == cond_slot => {
                    Some((Instr::BrI32GeSImm { a, imm, offset: 0 }, Instr::BrI32LtSImm { a, imm, offset: 0 }))
                }
                Instr::I32EqImm { dst, a, imm } if dst == cond_slot => {
                    Some((Instr::BrI32EqImm { a, imm, offset: 0 }, Instr::BrI32NeImm { a, imm, offset: 0 }))
                }
                Instr::I32NeImm { dst, a, imm } if dst == cond_slot => {
                    Some((Instr::BrI32NeImm { a, imm, offset: 0 }, Instr::BrI32EqImm { a, imm, offset: 0 }))
                }
                Instr::I32Eq { dst, a, b } if dst == cond_slot => {
                    Some((Instr::BrI32Eq { a, b, offset: 0 }, Instr::BrI32Ne { a, b, offset: 0 }))
                }
                Instr::I32Ne { dst, a, b } if dst == cond_slot => {
                    Some((Instr::BrI32Ne { a, b, offset: 0 }, Instr::BrI32Eq { a, b, offset: 0 }))
                }
                Instr::I32LtS { dst, a, b } if dst == cond_slot => {
                    Some((Instr::BrI32LtS { a, b, offset: 0 }, Instr::BrI32GeS { a, b, offset: 0 }))
                }
                Instr::I32LtU { dst, a, b } if dst == cond_slot => {
                    Some((Instr::BrI32LtU { a, b, offset: 0 }, Instr::BrI32GeU { a, b, offset: 0 }))
                }
                Instr::I32GtS { dst, a, b } if dst == cond_slot => {
                    Some((Instr::BrI32GtS { a, b, offset: 0 }, Instr::BrI32LeS { a, b, offset: 0 }))
                }
                Instr::I32GtU { dst, a, b } if dst == cond_slot => {
                    Some((Instr::BrI32GtU { a, b, offset: 0 }, Instr::BrI32LeU { a, b, offset: 0 }))
                }
                Instr::I32LeS { dst, a, b } if dst == cond_slot => {
                    Some((Instr::BrI32LeS { a, b, offset: 0 }, Instr::BrI32GtS { a, b, offset: 0 }))
                }
                Instr::I32LeU { dst, a, b } if dst == cond_slot => {
                    Some((Instr::BrI32LeU { a, b, offset: 0 }, Instr::BrI32GtU { a, b, offset: 0 }))
                }
                Instr::I32GeS { dst, a, b } if dst == cond_slot => {
                    Some((Instr::BrI32GeS { a, b, offset: 0 }, Instr::BrI32LtS { a, b, offset: 0 }))
                }
                Instr::I32GeU { dst, a, b } if dst == cond_slot => {
                    Some((Instr::BrI32GeU { a, b, offset: 0 }, Instr::BrI32LtU { a, b, offset: 0 }))
                }
                _ => None,
            };
            if let Some(pair) = fused {
                // The comparison's operands are untouched (it wrote only the condition slot), so
                // the fused branch reads them instead.
                self.code.pop();
                self.offsets.pop();
                self.fusable = None;
                self.pop();
                return pair;
            }
        }
        let cond = self.pop_slot();
        (Instr::BrIfNez { cond, offset: 0 }, Instr::BrIfEqz { cond, offset: 0 })
    }

    // ---------------------------------------------------------------- blocks

    fn block_type(&self, bt: BlockType) -> (Vec<bool>, Vec<bool>) {
        match bt {
            BlockType::Empty => (vec![], vec![]),
            BlockType::Type(t) => (vec![], vec![matches!(t, ValType::Ref(_))]),
            BlockType::FuncType(idx) => {
                let id = self.env.type_ids[idx as usize];
                match &self.env.registry.get(id).kind {
                    TypeKind::Func { params, results } => (
                        params.iter().map(|t| is_ref_rt(*t)).collect(),
                        results.iter().map(|t| is_ref_rt(*t)).collect(),
                    ),
                    _ => unreachable!("block type is a function type"),
                }
            }
        }
    }

    fn push_ctrl(&mut self, kind: CtrlKind, bt: BlockType) {
        let (param_refs, result_refs) = self.block_type(bt);
        let live = self.reachable;
        let height = if live { self.stack.len() - param_refs.len() } else { self.stack.len() };
        self.ctrls.push(Ctrl {
            kind,
            height,
            param_refs,
            result_refs,
            loop_pc: self.pc(),
            fixups: Vec::new(),
            else_fixup: None,
            live,
            handler_fixups: Vec::new(),
            try_start: self.pc(),
            catches: Vec::new(),
            body_end: None,
        });
        self.fusable = None;
    }

    fn reset_stack_to(&mut self, height: usize, refs: &[bool]) {
        self.stack.truncate(height);
        for &r in refs {
            self.push(Operand::Temp, r);
        }
    }

    fn end(&mut self) {
        if self.ctrls.last().is_some_and(|c| c.live) {
            self.end_exception_block();
        }
        let ctrl = self.ctrls.pop().expect("validated nesting");
        if !ctrl.live {
            return; // a block opened in dead code: still dead after it
        }
        let n = ctrl.result_refs.len();
        if ctrl.kind == CtrlKind::Func {
            if self.reachable && ctrl.fixups.is_empty() && ctrl.handler_fixups.is_empty() {
                self.emit_return(n);
                return;
            }
            if self.reachable {
                self.materialize_top(n);
            }
            let here = self.pc();
            for at in &ctrl.fixups {
                self.patch(*at, here);
            }
            for &h in &ctrl.handler_fixups {
                self.set_handler_target(h, here);
            }
            if self.reachable || !ctrl.fixups.is_empty() || !ctrl.handler_fixups.is_empty() {
                self.reset_stack_to(0, &ctrl.result_refs);
                self.emit_return(n);
            }
            return;
        }
        if self.reachable {
            self.materialize_top(n);
        }
        let here = self.pc();
        for at in &ctrl.fixups {
            self.patch(*at, here);
        }
        for &h in &ctrl.handler_fixups {
            self.set_handler_target(h, here);
        }
        let mut reachable = self.reachable || !ctrl.fixups.is_empty() || !ctrl.handler_fixups.is_empty();
        if let Some(at) = ctrl.else_fixup {
            // `if` without `else`: the false path falls through to the end.
            self.patch(at, here);
            reachable = true;
        }
        self.reset_stack_to(ctrl.height, &ctrl.result_refs);
        self.reachable = reachable;
        self.fusable = None;
    }

    fn emit_return(&mut self, n: usize) {
        match n {
            0 => {
                self.emit(Instr::Return);
            }
            1 => {
                let src = self.pop_slot();
                self.emit(Instr::Return1 { src });
            }
            _ => {
                let src = self.materialize_top(n);
                self.stack.truncate(self.stack.len() - n);
                self.emit(Instr::ReturnN { src, len: n as u16 });
            }
        }
    }

    fn set_unreachable(&mut self) {
        self.reachable = false;
        // Entries above the innermost block's height are dead; keep them (validation allows
        // anything), they are never read.
    }

    // ---------------------------------------------------------------- operators

    fn binop(&mut self, make: fn(Slot, Slot, Slot) -> Instr, v: &FuncValidator<ValidatorResources>) {
        let b = self.pop_slot();
        let a = self.pop_slot();
        let dst = self.push_temp(Self::result_is_ref(v, 0));
        self.emit_result(make(dst, a, b));
    }

    fn binop_imm(
        &mut self,
        make: fn(Slot, Slot, Slot) -> Instr,
        make_imm: fn(Slot, Slot, i16) -> Instr,
        v: &FuncValidator<ValidatorResources>,
    ) {
        if let Some(Entry { op: Operand::Const(c), .. }) = self.stack.last().copied() {
            let c32 = c as u32 as i32;
            if let Ok(imm) = i16::try_from(c32) {
                self.pop();
                let a = self.pop_slot();
                let dst = self.push_temp(false);
                self.emit_result(make_imm(dst, a, imm));
                return;
            }
        }
        self.binop(make, v)
    }

    fn binop_imm64(
        &mut self,
        make: fn(Slot, Slot, Slot) -> Instr,
        make_imm: fn(Slot, Slot, i16) -> Instr,
        v: &FuncValidator<ValidatorResources>,
    ) {
        if let Some(Entry { op: Operand::Const(c), .. }) = self.stack.last().copied()
            && let Ok(imm) = i16::try_from(c as i64)
        {
            self.pop();
            let a = self.pop_slot();
            let dst = self.push_temp(false);
            self.emit_result(make_imm(dst, a, imm));
            return;
        }
        self.binop(make, v)
    }

    fn unop(&mut self, make: fn(Slot, Slot) -> Instr) {
        let src = self.pop_slot();
        let dst = self.push_temp(false);
        self.emit_result(make(dst, src));
    }

    fn load(&mut self, memarg: &MemArg, fast: fn(Slot, Slot, u32) -> Instr, kind: MemOp, is_ref: bool) {
        let addr = self.pop_slot();
        let dst = self.push_temp(is_ref);
        let offset = memarg.offset as u32;
        match memarg.target {
            MemArgTarget::Memory(mem) if self.race_hooked(mem) => {
                self.emit_result(Instr::RaceLoad { kind, mem: mem as u16, dst, addr, offset })
            }
            MemArgTarget::Memory(0) => self.emit_result(fast(dst, addr, offset)),
            MemArgTarget::Memory(mem) => self.emit_result(Instr::Load { kind, mem: mem as u16, dst, addr, offset }),
            MemArgTarget::Array(_) => unreachable!("array memargs are not enabled"),
        }
    }

    /// Whether plain accesses to memory `mem` are translated with race hooks (see `ModuleEnv`).
    fn race_hooked(&self, mem: u32) -> bool {
        self.env.race_memories.get(mem as usize).copied().unwrap_or(false)
    }

    fn store(&mut self, memarg: &MemArg, fast: fn(Slot, Slot, u32) -> Instr, kind: MemOp) {
        let value = self.pop_slot();
        let addr = self.pop_slot();
        let offset = memarg.offset as u32;
        match memarg.target {
            MemArgTarget::Memory(mem) if self.race_hooked(mem) => {
                self.emit(Instr::RaceStore { kind, mem: mem as u16, addr, value, offset });
            }
            MemArgTarget::Memory(0) => {
                self.emit(fast(addr, value, offset));
            }
            MemArgTarget::Memory(mem) => {
                self.emit(Instr::Store { kind, mem: mem as u16, addr, value, offset });
            }
            MemArgTarget::Array(_) => unreachable!("array memargs are not enabled"),
        }
    }

    fn func_arity(&self, type_id: u32) -> (usize, Vec<bool>) {
        match &self.env.registry.get(type_id).kind {
            TypeKind::Func { params, results } => (params.len(), results.iter().map(|t| is_ref_rt(*t)).collect()),
            _ => unreachable!("call of a non-function type"),
        }
    }

    /// Common part of all calls: `extra` operands (table index, function reference) sit above
    /// the `nparams` arguments. Returns (base slot, slots of the extra operands).
    fn call_operands(&mut self, nparams: usize, extra: usize) -> (Slot, Vec<Slot>) {
        let mut extras = Vec::new();
        for _ in 0..extra {
            extras.push(self.pop_slot());
        }
        let base = self.materialize_top(nparams);
        self.stack.truncate(self.stack.len() - nparams);
        (base, extras)
    }

    fn finish_call(&mut self, result_refs: &[bool]) {
        for &r in result_refs {
            self.push(Operand::Temp, r);
        }
    }

    fn heap_type(&self, ht: wasmparser::HeapType) -> RtHeapType {
        canonical_heap_type(self.env.types, ht, None, self.env.type_ids)
    }

    fn cast_index(&mut self, nullable: bool, ht: wasmparser::HeapType) -> u32 {
        let heap = self.heap_type(ht);
        self.casts.push(CastTarget { nullable, heap });
        (self.casts.len() - 1) as u32
    }

    fn struct_field(&mut self, type_index: u32, field: u32, signed: bool) -> u32 {
        let id = self.env.type_ids[type_index as usize];
        let f = match &self.env.registry.get(id).kind {
            TypeKind::Struct { fields } => fields[field as usize],
            _ => unreachable!("struct access on a non-struct type"),
        };
        let kind = match (f.kind, signed) {
            (StorageKind::I8U, true) => StorageKind::I8S,
            (StorageKind::I16U, true) => StorageKind::I16S,
            (k, _) => k,
        };
        self.fields.push(FieldAccess { offset: f.offset, kind });
        (self.fields.len() - 1) as u32
    }

    fn array_access(&mut self, type_index: u32, signed: bool) -> u32 {
        let id = self.env.type_ids[type_index as usize];
        let elem = match &self.env.registry.get(id).kind {
            TypeKind::Array { elem, .. } => *elem,
            _ => unreachable!("array access on a non-array type"),
        };
        let kind = match (elem, signed) {
            (StorageKind::I8U, true) => StorageKind::I8S,
            (StorageKind::I16U, true) => StorageKind::I16S,
            (k, _) => k,
        };
        self.arrays.push(ArrayAccess { kind });
        (self.arrays.len() - 1) as u32
    }

    /// An allocation: its operands (the top `n` entries, made contiguous) stay live across it.
    fn alloc_operands(&mut self, n: usize) -> Slot {
        let args = self.materialize_top(n);
        self.record_stack_map(self.stack.len());
        self.stack.truncate(self.stack.len() - n);
        args
    }

    fn op(&mut self, op: &Operator<'_>, v: &FuncValidator<ValidatorResources>) -> Result<()> {
        use Operator as O;
        // Control structure is tracked even in dead code; everything else is skipped there.
        if !self.reachable {
            match op {
                O::Block { .. } | O::Loop { .. } | O::If { .. } | O::TryTable { .. } | O::Try { .. } => {
                    self.push_ctrl(CtrlKind::Block, BlockType::Empty);
                    return Ok(());
                }
                // A live `try` whose body ended unreachable: its catch arms are reachable.
                O::Catch { tag_index } => {
                    self.legacy_catch(Some(*tag_index));
                    return Ok(());
                }
                O::CatchAll => {
                    self.legacy_catch(None);
                    return Ok(());
                }
                O::Delegate { relative_depth } => {
                    self.delegate(*relative_depth);
                    return Ok(());
                }
                O::Else => {
                    let ctrl = self.ctrls.last_mut().expect("validated nesting");
                    if ctrl.live {
                        self.else_arm();
                    }
                    return Ok(());
                }
                O::End => {
                    self.end();
                    return Ok(());
                }
                _ => return Ok(()),
            }
        }
        if self.shared_gc(op, v) {
            return Ok(());
        }
        match *op {
            O::Nop => {}
            O::Unreachable => {
                self.emit(Instr::Unreachable);
                self.set_unreachable();
            }
            O::Block { blockty } => {
                self.materialize_all();
                self.push_ctrl(CtrlKind::Block, blockty);
            }
            O::Loop { blockty } => {
                self.materialize_all();
                self.push_ctrl(CtrlKind::Loop, blockty);
                let pc = self.pc() as u32;
                if self.loop_headers.last().is_none_or(|h| h.pc != pc) {
                    self.loop_headers.push(LoopHeader { pc, wasm_offset: self.offset });
                }
            }
            O::If { blockty } => {
                let (_, when_false) = self.pop_condition();
                self.materialize_all();
                let at = self.emit(when_false);
                self.push_ctrl(CtrlKind::If, blockty);
                self.ctrls.last_mut().expect("just pushed").else_fixup = Some(at);
            }
            O::Else => self.else_arm(),
            O::End => self.end(),
            O::TryTable { ref try_table } => self.try_table(try_table.ty, try_table.catches.clone()),
            O::Throw { tag_index } => self.throw(tag_index),
            O::ThrowRef => self.throw_ref(),
            O::Try { blockty } => self.legacy_try(blockty),
            O::Catch { tag_index } => self.legacy_catch(Some(tag_index)),
            O::CatchAll => self.legacy_catch(None),
            O::Delegate { relative_depth } => self.delegate(relative_depth),
            O::Rethrow { relative_depth } => self.rethrow(relative_depth),
            O::Br { relative_depth } => {
                self.br(relative_depth);
                self.set_unreachable();
            }
            O::BrIf { relative_depth } => {
                let (t, f) = self.pop_condition();
                self.br_cond(relative_depth, t, f, 0);
            }
            O::BrTable { ref targets } => {
                let index = self.pop_slot();
                let depths: Vec<u32> = targets
                    .targets()
                    .chain(std::iter::once(Ok(targets.default())))
                    .collect::<std::result::Result<_, wasmparser::BinaryReaderError>>()?;
                self.emit(Instr::BrTable { index, len: depths.len() as u32 - 1 });
                let mut trampolines = Vec::new();
                for &d in &depths {
                    if self.branch_needs_copies(d, 0) {
                        let at = self.emit(Instr::Br { offset: 0 });
                        trampolines.push((at, d));
                    } else {
                        self.emit_branch_to(d, Instr::Br { offset: 0 });
                    }
                }
                for (at, d) in trampolines {
                    let here = self.pc();
                    self.patch(at, here);
                    self.br(d);
                }
                self.set_unreachable();
            }
            O::Return => {
                let n = self.ctrls[0].result_refs.len();
                self.emit_return(n);
                self.set_unreachable();
            }
            O::Drop => {
                self.pop();
            }
            O::Select | O::TypedSelect { .. } => {
                let cond = self.pop_slot();
                let b = self.pop_slot();
                let a = self.pop_slot();
                let dst = self.push_temp(Self::result_is_ref(v, 0));
                self.emit_result(Instr::Select { dst, cond, a, b });
            }
            O::LocalGet { local_index } => {
                let is_ref = self.local_refs[local_index as usize];
                self.push(Operand::Local(local_index as u16), is_ref);
            }
            O::LocalSet { local_index } => self.local_set(local_index as u16, false),
            O::LocalTee { local_index } => self.local_set(local_index as u16, true),
            O::GlobalGet { global_index } => {
                let dst = self.push_temp(Self::result_is_ref(v, 0));
                self.emit_result(Instr::GlobalGet { dst, global: global_index });
            }
            O::GlobalSet { global_index } => {
                let src = self.pop_slot();
                self.emit(Instr::GlobalSet { global: global_index, src });
            }

            O::I32Const { value } => self.push(Operand::Const(value as u32 as u64), false),
            O::I64Const { value } => self.push(Operand::Const(value as u64), false),
            O::F32Const { value } => self.push(Operand::Const(value.bits() as u64), false),
            O::F64Const { value } => self.push(Operand::Const(value.bits()), false),
            O::RefNull { .. } => self.push(Operand::Const(0), true),

            // ---- calls
            O::Call { function_index } => {
                let ty = self.env.func_types[function_index as usize];
                let (np, results) = self.func_arity(ty);
                let (base, _) = self.call_operands(np, 0);
                self.record_stack_map(self.stack.len());
                if function_index >= self.env.num_imported_funcs {
                    let func = function_index - self.env.num_imported_funcs;
                    self.emit(Instr::CallLocal { func, base });
                } else {
                    self.emit(Instr::CallImport { func: function_index, base });
                }
                self.max_height = self.max_height.max(self.stack.len() + results.len());
                self.finish_call(&results);
            }
            O::ReturnCall { function_index } => {
                let ty = self.env.func_types[function_index as usize];
                let (np, _) = self.func_arity(ty);
                let (base, _) = self.call_operands(np, 0);
                self.record_stack_map(0);
                if function_index >= self.env.num_imported_funcs {
                    let func = function_index - self.env.num_imported_funcs;
                    self.emit(Instr::ReturnCallLocal { func, base });
                } else {
                    self.emit(Instr::ReturnCallImport { func: function_index, base });
                }
                self.set_unreachable();
            }
            O::CallIndirect { type_index, table_index } => {
                let type_id = self.env.type_ids[type_index as usize];
                let (np, results) = self.func_arity(type_id);
                let (base, extra) = self.call_operands(np, 1);
                self.record_stack_map(self.stack.len());
                self.emit(Instr::CallIndirect { table: table_index, type_id, index: extra[0], base });
                self.max_height = self.max_height.max(self.stack.len() + results.len());
                self.finish_call(&results);
            }
            O::ReturnCallIndirect { type_index, table_index } => {
                let type_id = self.env.type_ids[type_index as usize];
                let (np, _) = self.func_arity(type_id);
                let (base, extra) = self.call_operands(np, 1);
                self.record_stack_map(0);
                self.emit(Instr::ReturnCallIndirect { table: table_index, type_id, index: extra[0], base });
                self.set_unreachable();
            }
            O::CallRef { type_index } => {
                let type_id = self.env.type_ids[type_index as usize];
                let (np, results) = self.func_arity(type_id);
                let (base, extra) = self.call_operands(np, 1);
                self.record_stack_map(self.stack.len());
                self.emit(Instr::CallRef { func: extra[0], base });
                self.max_height = self.max_height.max(self.stack.len() + results.len());
                self.finish_call(&results);
            }
            O::ReturnCallRef { type_index } => {
                let type_id = self.env.type_ids[type_index as usize];
                let (np, _) = self.func_arity(type_id);
                let (base, extra) = self.call_operands(np, 1);
                self.record_stack_map(0);
                self.emit(Instr::ReturnCallRef { func: extra[0], base });
                self.set_unreachable();
            }

            // ---- references
            O::RefFunc { function_index } => {
                let dst = self.push_temp(true);
                self.emit_result(Instr::RefFunc { dst, func: function_index });
            }
            O::RefIsNull => {
                let src = self.pop_slot();
                let dst = self.push_temp(false);
                self.emit_result(Instr::RefIsNull { dst, src });
            }
            O::RefAsNonNull => {
                let src = self.pop_slot();
                let dst = self.push_temp(true);
                self.emit_result(Instr::RefAsNonNull { dst, src });
            }
            O::RefEq => self.binop(|dst, a, b| Instr::RefEq { dst, a, b }, v),
            O::BrOnNull { relative_depth } => {
                let src = self.materialize_top(1);
                // The label receives the values below the reference.
                self.stack.pop();
                self.br_cond(
                    relative_depth,
                    Instr::BrOnNull { src, offset: 0 },
                    Instr::BrOnNonNull { src, offset: 0 },
                    0,
                );
                self.push(Operand::Temp, true);
            }
            O::BrOnNonNull { relative_depth } => {
                let src = self.materialize_top(1);
                self.br_cond(
                    relative_depth,
                    Instr::BrOnNonNull { src, offset: 0 },
                    Instr::BrOnNull { src, offset: 0 },
                    0,
                );
                self.stack.pop();
            }
            O::BrOnCast { relative_depth, to_ref_type, .. } => {
                let target = self.cast_index(to_ref_type.is_nullable(), to_ref_type.heap_type());
                let src = self.materialize_top(1);
                self.br_cond(
                    relative_depth,
                    Instr::BrOnCast { src, target, on_fail: false, offset: 0 },
                    Instr::BrOnCast { src, target, on_fail: true, offset: 0 },
                    0,
                );
            }
            O::BrOnCastFail { relative_depth, to_ref_type, .. } => {
                let target = self.cast_index(to_ref_type.is_nullable(), to_ref_type.heap_type());
                let src = self.materialize_top(1);
                self.br_cond(
                    relative_depth,
                    Instr::BrOnCast { src, target, on_fail: true, offset: 0 },
                    Instr::BrOnCast { src, target, on_fail: false, offset: 0 },
                    0,
                );
            }
            O::RefTestNonNull { hty } | O::RefTestNullable { hty } => {
                let target = self.cast_index(matches!(op, O::RefTestNullable { .. }), hty);
                let src = self.pop_slot();
                let dst = self.push_temp(false);
                self.emit_result(Instr::RefTest { dst, src, target });
            }
            O::RefCastNonNull { hty } | O::RefCastNullable { hty } => {
                let target = self.cast_index(matches!(op, O::RefCastNullable { .. }), hty);
                let src = self.pop_slot();
                let dst = self.push_temp(true);
                self.emit_result(Instr::RefCast { dst, src, target });
            }
            O::AnyConvertExtern | O::ExternConvertAny => {
                let src = self.pop_slot();
                let dst = self.push_temp(true);
                self.emit_result(Instr::ConvertRef { dst, src });
            }
            O::RefI31 => {
                let src = self.pop_slot();
                let dst = self.push_temp(true);
                self.emit_result(Instr::RefI31 { dst, src });
            }
            O::I31GetS => self.unop(|dst, src| Instr::I31GetS { dst, src }),
            O::I31GetU => self.unop(|dst, src| Instr::I31GetU { dst, src }),

            // ---- GC objects
            O::StructNew { struct_type_index } => {
                let type_id = self.env.type_ids[struct_type_index as usize];
                let n = match &self.env.registry.get(type_id).kind {
                    TypeKind::Struct { fields } => fields.len(),
                    _ => unreachable!("struct.new of a non-struct"),
                };
                let args = if n == 0 {
                    self.record_stack_map(self.stack.len());
                    self.next_slot()
                } else {
                    self.alloc_operands(n)
                };
                let dst = self.push_temp(true);
                self.emit_result(Instr::StructNew { type_id, dst, args });
            }
            O::StructNewDefault { struct_type_index } => {
                let type_id = self.env.type_ids[struct_type_index as usize];
                self.record_stack_map(self.stack.len());
                let dst = self.push_temp(true);
                self.emit_result(Instr::StructNewDefault { type_id, dst });
            }
            O::StructGet { struct_type_index, field_index } | O::StructGetU { struct_type_index, field_index } => {
                let field = self.struct_field(struct_type_index, field_index, false);
                let obj = self.pop_slot();
                let dst = self.push_temp(Self::result_is_ref(v, 0));
                self.emit_result(Instr::StructGet { dst, obj, field });
            }
            O::StructGetS { struct_type_index, field_index } => {
                let field = self.struct_field(struct_type_index, field_index, true);
                let obj = self.pop_slot();
                let dst = self.push_temp(false);
                self.emit_result(Instr::StructGet { dst, obj, field });
            }
            O::StructSet { struct_type_index, field_index } => {
                let field = self.struct_field(struct_type_index, field_index, false);
                let value = self.pop_slot();
                let obj = self.pop_slot();
                self.emit(Instr::StructSet { obj, value, field });
            }
            O::ArrayNew { array_type_index } => {
                let type_id = self.env.type_ids[array_type_index as usize];
                let args = self.alloc_operands(2);
                let dst = self.push_temp(true);
                self.emit_result(Instr::ArrayNew { type_id, dst, args });
            }
            O::ArrayNewDefault { array_type_index } => {
                let type_id = self.env.type_ids[array_type_index as usize];
                let len = self.alloc_operands(1);
                let dst = self.push_temp(true);
                self.emit_result(Instr::ArrayNewDefault { type_id, dst, len });
            }
            O::ArrayNewFixed { array_type_index, array_size } => {
                let type_id = self.env.type_ids[array_type_index as usize];
                let args = if array_size == 0 {
                    self.record_stack_map(self.stack.len());
                    self.next_slot()
                } else {
                    self.alloc_operands(array_size as usize)
                };
                let dst = self.push_temp(true);
                self.emit_result(Instr::ArrayNewFixed { type_id, dst, args, len: array_size });
            }
            O::ArrayNewData { array_type_index, array_data_index } => {
                let type_id = self.env.type_ids[array_type_index as usize];
                let args = self.alloc_operands(2);
                let dst = self.push_temp(true);
                self.emit_result(Instr::ArrayNewData { type_id, data: array_data_index, dst, args });
            }
            O::ArrayNewElem { array_type_index, array_elem_index } => {
                let type_id = self.env.type_ids[array_type_index as usize];
                let args = self.alloc_operands(2);
                let dst = self.push_temp(true);
                self.emit_result(Instr::ArrayNewElem { type_id, elem: array_elem_index, dst, args });
            }
            O::ArrayGet { array_type_index } | O::ArrayGetU { array_type_index } => {
                let access = self.array_access(array_type_index, false);
                let args = self.materialize_top(2);
                self.stack.truncate(self.stack.len() - 2);
                let dst = self.push_temp(Self::result_is_ref(v, 0));
                self.emit_result(Instr::ArrayGet { dst, args, access });
            }
            O::ArrayGetS { array_type_index } => {
                let access = self.array_access(array_type_index, true);
                let args = self.materialize_top(2);
                self.stack.truncate(self.stack.len() - 2);
                let dst = self.push_temp(false);
                self.emit_result(Instr::ArrayGet { dst, args, access });
            }
            O::ArraySet { array_type_index } => {
                let access = self.array_access(array_type_index, false);
                let args = self.materialize_top(3);
                self.stack.truncate(self.stack.len() - 3);
                self.emit(Instr::ArraySet { args, access });
            }
            O::ArrayLen => {
                let src = self.pop_slot();
                let dst = self.push_temp(false);
                self.emit_result(Instr::ArrayLen { dst, src });
            }
            O::ArrayFill { array_type_index } => {
                let access = self.array_access(array_type_index, false);
                let args = self.materialize_top(4);
                self.stack.truncate(self.stack.len() - 4);
                self.emit(Instr::ArrayFill { args, access });
            }
            O::ArrayCopy { array_type_index_dst, array_type_index_src } => {
                let dst_access = self.array_access(array_type_index_dst, false);
                let src_access = self.array_access(array_type_index_src, false);
                let args = self.materialize_top(5);
                self.stack.truncate(self.stack.len() - 5);
                self.emit(Instr::ArrayCopy { args, dst_access, src_access });
            }
            O::ArrayInitData { array_type_index, array_data_index } => {
                let access = self.array_access(array_type_index, false);
                let args = self.materialize_top(4);
                self.stack.truncate(self.stack.len() - 4);
                self.emit(Instr::ArrayInitData { args, access, data: array_data_index });
            }
            O::ArrayInitElem { array_type_index, array_elem_index } => {
                let access = self.array_access(array_type_index, false);
                let args = self.materialize_top(4);
                self.stack.truncate(self.stack.len() - 4);
                self.emit(Instr::ArrayInitElem { args, access, elem: array_elem_index });
            }

            // ---- memory
            O::I32Load { ref memarg } => {
                self.load(memarg, |dst, addr, offset| Instr::I32Load { dst, addr, offset }, MemOp::I32, false)
            }
            O::I64Load { ref memarg } => {
                self.load(memarg, |dst, addr, offset| Instr::I64Load { dst, addr, offset }, MemOp::I64, false)
            }
            O::F32Load { ref memarg } => {
                self.load(memarg, |dst, addr, offset| Instr::F32Load { dst, addr, offset }, MemOp::F32, false)
            }
            O::F64Load { ref memarg } => {
                self.load(memarg, |dst, addr, offset| Instr::F64Load { dst, addr, offset }, MemOp::F64, false)
            }
            O::I32Load8S { ref memarg } => {
                self.load(memarg, |dst, addr, offset| Instr::I32Load8S { dst, addr, offset }, MemOp::I32_8S, false)
            }
            O::I32Load8U { ref memarg } => {
                self.load(memarg, |dst, addr, offset| Instr::I32Load8U { dst, addr, offset }, MemOp::I32_8U, false)
            }
            O::I32Load16S { ref memarg } => {
                self.load(memarg, |dst, addr, offset| Instr::I32Load16S { dst, addr, offset }, MemOp::I32_16S, false)
            }
            O::I32Load16U { ref memarg } => {
                self.load(memarg, |dst, addr, offset| Instr::I32Load16U { dst, addr, offset }, MemOp::I32_16U, false)
            }
            O::I64Load8S { ref memarg } => {
                self.load(memarg, |dst, addr, offset| Instr::I64Load8S { dst, addr, offset }, MemOp::I64_8S, false)
            }
            O::I64Load8U { ref memarg } => {
                self.load(memarg, |dst, addr, offset| Instr::I64Load8U { dst, addr, offset }, MemOp::I64_8U, false)
            }
            O::I64Load16S { ref memarg } => {
                self.load(memarg, |dst, addr, offset| Instr::I64Load16S { dst, addr, offset }, MemOp::I64_16S, false)
            }
            O::I64Load16U { ref memarg } => {
                self.load(memarg, |dst, addr, offset| Instr::I64Load16U { dst, addr, offset }, MemOp::I64_16U, false)
            }
            O::I64Load32S { ref memarg } => {
                self.load(memarg, |dst, addr, offset| Instr::I64Load32S { dst, addr, offset }, MemOp::I64_32S, false)
            }
            O::I64Load32U { ref memarg } => {
                self.load(memarg, |dst, addr, offset| Instr::I64Load32U { dst, addr, offset }, MemOp::I64_32U, false)
            }
            O::I32Store { ref memarg } => {
                self.store(memarg, |addr, value, offset| Instr::I32Store { addr, value, offset }, MemOp::Store32)
            }
            O::I64Store { ref memarg } => {
                self.store(memarg, |addr, value, offset| Instr::I64Store { addr, value, offset }, MemOp::I64)
            }
            O::F32Store { ref memarg } => {
                self.store(memarg, |addr, value, offset| Instr::F32Store { addr, value, offset }, MemOp::Store32)
            }
            O::F64Store { ref memarg } => {
                self.store(memarg, |addr, value, offset| Instr::F64Store { addr, value, offset }, MemOp::I64)
            }
            O::I32Store8 { ref memarg } => {
                self.store(memarg, |addr, value, offset| Instr::I32Store8 { addr, value, offset }, MemOp::Store8)
            }
            O::I32Store16 { ref memarg } => {
                self.store(memarg, |addr, value, offset| Instr::I32Store16 { addr, value, offset }, MemOp::Store16)
            }
            O::I64Store8 { ref memarg } => {
                self.store(memarg, |addr, value, offset| Instr::I64Store8 { addr, value, offset }, MemOp::Store8)
            }
            O::I64Store16 { ref memarg } => {
                self.store(memarg, |addr, value, offset| Instr::I64Store16 { addr, value, offset }, MemOp::Store16)
            }
            O::I64Store32 { ref memarg } => {
                self.store(memarg, |addr, value, offset| Instr::I64Store32 { addr, value, offset }, MemOp::Store32)
            }
            O::MemorySize { mem } => {
                let dst = self.push_temp(false);
                self.emit_result(Instr::MemorySize { mem, dst });
            }
            O::MemoryGrow { mem } => {
                let delta = self.pop_slot();
                let dst = self.push_temp(false);
                self.emit_result(Instr::MemoryGrow { mem, dst, delta });
            }
            O::MemoryFill { mem } => {
                let args = self.materialize_top(3);
                self.stack.truncate(self.stack.len() - 3);
                self.emit(Instr::MemoryFill { mem, args });
            }
            O::MemoryCopy { dst_mem, src_mem } => {
                let args = self.materialize_top(3);
                self.stack.truncate(self.stack.len() - 3);
                self.emit(Instr::MemoryCopy { dst_mem: dst_mem as u16, src_mem: src_mem as u16, args });
            }
            O::MemoryInit { data_index, mem } => {
                let args = self.materialize_top(3);
                self.stack.truncate(self.stack.len() - 3);
                self.emit(Instr::MemoryInit { mem: mem as u16, data: data_index, args });
            }
            O::DataDrop { data_index } => {
                self.emit(Instr::DataDrop { data: data_index });
            }

            // ---- tables
            O::TableGet { table } => {
                let index = self.pop_slot();
                let dst = self.push_temp(true);
                self.emit_result(Instr::TableGet { table, dst, index });
            }
            O::TableSet { table } => {
                let value = self.pop_slot();
                let index = self.pop_slot();
                self.emit(Instr::TableSet { table, index, value });
            }
            O::TableSize { table } => {
                let dst = self.push_temp(false);
                self.emit_result(Instr::TableSize { table, dst });
            }
            O::TableGrow { table } => {
                let delta = self.pop_slot();
                let init = self.materialize_top(1);
                self.pop();
                let dst = self.push_temp(false);
                debug_assert_eq!(dst, init);
                self.emit_result(Instr::TableGrow { table, dst, delta });
            }
            O::TableFill { table } => {
                let args = self.materialize_top(3);
                self.stack.truncate(self.stack.len() - 3);
                self.emit(Instr::TableFill { table, args });
            }
            O::TableCopy { dst_table, src_table } => {
                let args = self.materialize_top(3);
                self.stack.truncate(self.stack.len() - 3);
                self.emit(Instr::TableCopy { dst_table, src_table, args });
            }
            O::TableInit { elem_index, table } => {
                let args = self.materialize_top(3);
                self.stack.truncate(self.stack.len() - 3);
                self.emit(Instr::TableInit { table, elem: elem_index, args });
            }
            O::ElemDrop { elem_index } => {
                self.emit(Instr::ElemDrop { elem: elem_index });
            }

            // ---- numeric
            O::I32Add => self.binop_imm(
                |dst, a, b| Instr::I32Add { dst, a, b },
                |dst, a, imm| Instr::I32AddImm { dst, a, imm },
                v,
            ),
            O::I32Sub => self.binop_imm(
                |dst, a, b| Instr::I32Sub { dst, a, b },
                |dst, a, imm| Instr::I32SubImm { dst, a, imm },
                v,
            ),
            O::I32And => self.binop_imm(
                |dst, a, b| Instr::I32And { dst, a, b },
                |dst, a, imm| Instr::I32AndImm { dst, a, imm },
                v,
            ),
            O::I32Shl => self.binop_imm(
                |dst, a, b| Instr::I32Shl { dst, a, b },
                |dst, a, imm| Instr::I32ShlImm { dst, a, imm },
                v,
            ),
            O::I32ShrS => self.binop_imm(
                |dst, a, b| Instr::I32ShrS { dst, a, b },
                |dst, a, imm| Instr::I32ShrSImm { dst, a, imm },
                v,
            ),
            O::I32ShrU => self.binop_imm(
                |dst, a, b| Instr::I32ShrU { dst, a, b },
                |dst, a, imm| Instr::I32ShrUImm { dst, a, imm },
                v,
            ),
            O::I32Eq => {
                self.binop_imm(|dst, a, b| Instr::I32Eq { dst, a, b }, |dst, a, imm| Instr::I32EqImm { dst, a, imm }, v)
            }
            O::I32Ne => {
                self.binop_imm(|dst, a, b| Instr::I32Ne { dst, a, b }, |dst, a, imm| Instr::I32NeImm { dst, a, imm }, v)
            }
            O::I32LtS => self.binop_imm(
                |dst, a, b| Instr::I32LtS { dst, a, b },
                |dst, a, imm| Instr::I32LtSImm { dst, a, imm },
                v,
            ),
            O::I32LtU => self.binop_imm(
                |dst, a, b| Instr::I32LtU { dst, a, b },
                |dst, a, imm| Instr::I32LtUImm { dst, a, imm },
                v,
            ),
            O::I32GtS => self.binop_imm(
                |dst, a, b| Instr::I32GtS { dst, a, b },
                |dst, a, imm| Instr::I32GtSImm { dst, a, imm },
                v,
            ),
            O::I32GtU => self.binop_imm(
                |dst, a, b| Instr::I32GtU { dst, a, b },
                |dst, a, imm| Instr::I32GtUImm { dst, a, imm },
                v,
            ),
            O::I32LeS => self.binop_imm(
                |dst, a, b| Instr::I32LeS { dst, a, b },
                |dst, a, imm| Instr::I32LeSImm { dst, a, imm },
                v,
            ),
            O::I32GeS => self.binop_imm(
                |dst, a, b| Instr::I32GeS { dst, a, b },
                |dst, a, imm| Instr::I32GeSImm { dst, a, imm },
                v,
            ),
            O::I64Add => self.binop_imm64(
                |dst, a, b| Instr::I64Add { dst, a, b },
                |dst, a, imm| Instr::I64AddImm { dst, a, imm },
                v,
            ),
            O::I64Sub => self.binop_imm64(
                |dst, a, b| Instr::I64Sub { dst, a, b },
                |dst, a, imm| Instr::I64SubImm { dst, a, imm },
                v,
            ),
            _ => self.simple_numeric(op, v)?,
        }
        Ok(())
    }

    fn else_arm(&mut self) {
        let idx = self.ctrls.len() - 1;
        if self.reachable {
            let n = self.ctrls[idx].result_refs.len();
            self.materialize_top(n);
            let at = self.emit(Instr::Br { offset: 0 });
            self.ctrls[idx].fixups.push(at);
        }
        let here = self.pc();
        if let Some(at) = self.ctrls[idx].else_fixup.take() {
            self.patch(at, here);
        }
        let ctrl = &mut self.ctrls[idx];
        ctrl.kind = CtrlKind::Else;
        let height = ctrl.height;
        let params = ctrl.param_refs.clone();
        self.reset_stack_to(height, &params);
        self.reachable = true;
        self.fusable = None;
    }

    fn local_set(&mut self, local: u16, tee: bool) {
        let top = self.stack.len() - 1;
        let top_slot = self.slot(top);
        // Retarget the instruction that produced the value, if nothing else still needs the
        // local's old value.
        if let (Some(at), Operand::Temp) = (self.fusable, self.stack[top].op) {
            let others = self.stack[..top].iter().any(|e| e.op == Operand::Local(local));
            if !others
                && let Some(dst) = dst_mut(&mut self.code[at])
                && *dst == top_slot
            {
                *dst = local;
                self.fusable = None;
                let e = self.pop();
                if tee {
                    self.push(Operand::Local(local), e.is_ref);
                }
                return;
            }
        }
        self.materialize_local(local);
        let e = self.pop();
        match e.op {
            Operand::Temp => {
                self.emit(Instr::Copy { dst: local, src: top_slot });
            }
            Operand::Local(l) => {
                if l != local {
                    self.emit(Instr::Copy { dst: local, src: l });
                }
            }
            Operand::Const(c) => self.emit_const(local, c),
        }
        if tee {
            self.push(Operand::Local(local), e.is_ref);
        }
    }

    fn simple_numeric(&mut self, op: &Operator<'_>, v: &FuncValidator<ValidatorResources>) -> Result<()> {
        use Operator as O;
        // Binary and unary operators map one to one onto instructions of the same name.
        macro_rules! simple {
            (
                binary { $($bin:ident),* $(,)? }
                unary { $($un:ident),* $(,)? }
                load { $($ld:ident),* $(,)? }
                store { $($st:ident),* $(,)? }
                cmp_branch { $($cb:ident),* $(,)? }
            ) => {
                match op {
                    $(O::$bin => {
                        self.binop(|dst, a, b| Instr::$bin { dst, a, b }, v);
                        return Ok(());
                    })*
                    $(O::$un => {
                        self.unop(|dst, src| Instr::$un { dst, src });
                        return Ok(());
                    })*
                    _ => {}
                }
            };
        }
        crate::with_simple_ops!(simple);
        match op {
            // Reinterpretations are no-ops on 8-byte slots holding raw bits.
            O::I32ReinterpretF32 | O::F32ReinterpretI32 | O::I64ReinterpretF64 | O::F64ReinterpretI64 => {
                let e = self.pop();
                self.push(e.op, false);
                Ok(())
            }
            _ if self.atomic(op) => Ok(()),
            _ => Err(CompileError { message: format!("unsupported operator {op:?}"), offset: self.offset as u64 }),
        }
    }
}

/// The constants worth a slot: every constant operand except those that will become an immediate
/// (an i32 or i64 constant directly consumed by an operation with an immediate form). At most 64,
/// first come first served.
fn constant_operands(body: &FunctionBody<'_>) -> Result<Vec<u64>> {
    use Operator as O;
    let mut out: Vec<u64> = Vec::new();
    let mut reader = body.get_operators_reader()?;
    let mut pending: Option<(u64, Option<i64>, bool)> = None; // (bits, as i16-able int, is i64)
    while !reader.eof() {
        let op = reader.read()?;
        if let Some((bits, small, is_i64)) = pending.take() {
            let imm_consumer = small.is_some()
                && if is_i64 {
                    matches!(op, O::I64Add | O::I64Sub)
                } else {
                    matches!(
                        op,
                        O::I32Add
                            | O::I32Sub
                            | O::I32And
                            | O::I32Shl
                            | O::I32ShrS
                            | O::I32ShrU
                            | O::I32Eq
                            | O::I32Ne
                            | O::I32LtS
                            | O::I32LtU
                            | O::I32GtS
                            | O::I32GtU
                            | O::I32LeS
                            | O::I32GeS
                    )
                };
            if !imm_consumer && !out.contains(&bits) && out.len() < 64 {
                out.push(bits);
            }
        }
        pending = match op {
            O::I32Const { value } => Some((value as u32 as u64, i16::try_from(value).ok().map(i64::from), false)),
            O::I64Const { value } => Some((value as u64, i16::try_from(value).ok().map(i64::from), true)),
            O::F32Const { value } => Some((value.bits() as u64, None, false)),
            O::F64Const { value } => Some((value.bits(), None, false)),
            _ => None,
        };
    }
    Ok(out)
}

/// Peephole pass over finished code (no instruction moves, so offsets and stack maps stay valid):
/// - an unconditional `Br` to a return becomes that return (structured code ends every `if` arm
///   with a branch to the function's single return);
/// - `Copy { dst: x, src: y }` followed by `Return1 { src: x }` becomes `Return1 { src: y }` (the
///   following `Return1` stays, now only reachable by branches that target it directly).
fn thread_returns(code: &mut [Instr]) {
    for pc in 0..code.len() {
        if let Instr::Br { offset } = code[pc] {
            let target = (pc as i64 + offset as i64) as usize;
            if let Some(r @ (Instr::Return | Instr::Return1 { .. } | Instr::ReturnN { .. })) = code.get(target) {
                code[pc] = *r;
            }
        }
    }
    for pc in 0..code.len().saturating_sub(1) {
        if let (Instr::Copy { dst, src }, Instr::Return1 { src: ret }) = (code[pc], code[pc + 1])
            && ret == dst
        {
            code[pc] = Instr::Return1 { src };
        }
    }
}

/// The `dst` slot of an instruction that writes exactly one slot and reads its operands before
/// writing (so retargeting `dst` is safe).
fn dst_mut(i: &mut Instr) -> Option<&mut Slot> {
    use Instr::*;
    macro_rules! simple {
        (
            binary { $($bin:ident),* $(,)? }
            unary { $($un:ident),* $(,)? }
            load { $($ld:ident),* $(,)? }
            store { $($st:ident),* $(,)? }
            cmp_branch { $($cb:ident),* $(,)? }
        ) => {
            match i {
                $($bin { dst, .. } => Some(dst),)*
                $($un { dst, .. } => Some(dst),)*
                $($ld { dst, .. } => Some(dst),)*
                Const32 { dst, .. }
                | Const64 { dst, .. }
                | GlobalGet { dst, .. }
                | I32AddImm { dst, .. }
                | I32SubImm { dst, .. }
                | I32AndImm { dst, .. }
                | I32ShlImm { dst, .. }
                | I32ShrSImm { dst, .. }
                | I32ShrUImm { dst, .. }
                | I32EqImm { dst, .. }
                | I32NeImm { dst, .. }
                | I32LtSImm { dst, .. }
                | I32LtUImm { dst, .. }
                | I32GtSImm { dst, .. }
                | I32GtUImm { dst, .. }
                | I32LeSImm { dst, .. }
                | I32GeSImm { dst, .. }
                | I64AddImm { dst, .. }
                | I64SubImm { dst, .. }
                | Select { dst, .. }
                | StructGet { dst, .. }
                | RefIsNull { dst, .. }
                | RefEq { dst, .. }
                | I31GetS { dst, .. }
                | I31GetU { dst, .. }
                | RefTest { dst, .. }
                | ArrayLen { dst, .. } => Some(dst),
                _ => None,
            }
        };
    }
    crate::with_simple_ops!(simple)
}

fn is_ref_rt(t: RtValType) -> bool {
    matches!(t, RtValType::Ref { .. })
}
