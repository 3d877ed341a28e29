//! Plain loads and stores of any memory, with explicit bounds checks (`multimem.rs` says where each
//! memory is and checks the bounds) or, where the memory's guard region covers the access, the
//! hardware's (`vm/src/fault.rs`).
//!
//! The explicit check compares the operand itself (`addr > len - (offset + size)`), so the static offset
//! costs nothing: it goes into the access's displacement. A check another check already covers is left
//! out: the same operand value and memory, an end at most as far, made earlier in the current block or
//! in a block only it leads to (the continuation of a trap test or a call's status test). Memories never
//! shrink, so a passed check stays true after calls too (`c[i] += x` checks once).

use cranelift_codegen::ir::{Block, DataFlowGraph, InstBuilder, InstructionData, MemFlagsData, TrapCode, Value, types};
use vm::tier::{RaceHook, Unsupported};
use wasmparser::{MemArg, Operator};

use super::FuncTranslator;
use super::multimem::memarg_memory;

/// The bounds checks that dominate the current block: `(memory, i32 operand, end)` each, all made in
/// `block` or in the blocks that lead only to it.
#[derive(Default)]
pub(super) struct CheckedAccesses {
    block: Option<Block>,
    checks: Vec<(u32, Value, u64)>,
}

impl CheckedAccesses {
    /// Translation went on in `next`, which only `prev` leads to: what was checked in `prev` holds there.
    pub(super) fn continued(&mut self, prev: Option<Block>, next: Block) {
        if prev.is_some() && self.block == prev {
            self.block = Some(next);
        }
    }

    /// Whether `end` bytes from `addr` of memory `m` were checked on every path to `block`.
    fn covers(&mut self, dfg: &DataFlowGraph, block: Option<Block>, m: u32, addr: Value, end: u64) -> bool {
        if self.block != block {
            self.block = block;
            self.checks.clear();
        }
        self.checks.iter().any(|&(cm, ca, ce)| cm == m && ce >= end && same_value(dfg, ca, addr))
    }

    /// A check made in `block` (the current block after its trap test).
    fn record(&mut self, block: Option<Block>, m: u32, addr: Value, end: u64) {
        if self.block != block {
            self.block = block;
            self.checks.clear();
        }
        // A handful per block is all straight-line code reuses; keep the search short.
        if self.checks.len() == 16 {
            self.checks.remove(0);
        }
        self.checks.push((m, addr, end));
    }
}

/// Whether `a` and `b` are the same value: the same SSA value, or the results of one arithmetic
/// operation on the same operands (an address a function computes again for the store after its load,
/// `local.get`s of the same locals; Cranelift merges them later, too late for the check).
fn same_value(dfg: &DataFlowGraph, a: Value, b: Value) -> bool {
    same_value_within(dfg, a, b, 3)
}

/// [`same_value`], looking through at most `depth` levels of operations.
fn same_value_within(dfg: &DataFlowGraph, a: Value, b: Value, depth: u32) -> bool {
    if a == b {
        return true;
    }
    let (Some(ia), Some(ib)) = (dfg.value_def(a).inst(), dfg.value_def(b).inst()) else { return false };
    if depth == 0 {
        return false;
    }
    // Pure functions of their operands only (arithmetic, extensions, constants): the same operation on
    // the same operands gives the same result.
    let same = |x: Value, y: Value| same_value_within(dfg, x, y, depth - 1);
    match (dfg.insts[ia], dfg.insts[ib]) {
        (InstructionData::Binary { opcode: o1, args: a1 }, InstructionData::Binary { opcode: o2, args: a2 }) => {
            o1 == o2 && same(a1[0], a2[0]) && same(a1[1], a2[1])
        }
        (InstructionData::Unary { opcode: o1, arg: a1 }, InstructionData::Unary { opcode: o2, arg: a2 }) => {
            o1 == o2 && dfg.value_type(a) == dfg.value_type(b) && same(a1, a2)
        }
        (x @ InstructionData::UnaryImm { .. }, y @ InstructionData::UnaryImm { .. }) => {
            x == y && dfg.value_type(a) == dfg.value_type(b)
        }
        _ => false,
    }
}

impl FuncTranslator<'_, '_> {
    /// The native address of the operand `addr` and the displacement of `memarg.offset` from it, after
    /// checking that `size` bytes at `addr + memarg.offset` are inside the memory `memarg` names (traps
    /// otherwise); with the memory, the effective address (for the race hooks) and the flags the access
    /// must use. When the memory's guard covers the access (`vm/src/fault.rs`), the check is the
    /// hardware's: no instruction here, and flags that mark the access as a heap-trap site.
    fn checked_address(
        &mut self,
        addr: Value,
        memarg: &MemArg,
        size: u64,
        offset: u32,
    ) -> Result<(Value, i32, u32, Value, MemFlagsData), Unsupported> {
        let m = memarg_memory(memarg)?;
        let operand = self.b.ins().uextend(types::I64, addr);
        let end = memarg.offset + size;
        let planted_unchecked = self.bugs.no_bounds_check || (m != 0 && self.bugs.no_bounds_check_memory_n);
        let guarded = end <= self.input.memory_guard || (self.bugs.guard_any_offset && self.input.memory_guard > 0);
        let flags = if guarded && !planted_unchecked {
            MemFlagsData::new().with_trap_code(Some(TrapCode::HEAP_OUT_OF_BOUNDS))
        } else {
            if !self.checked.covers(&self.b.func.dfg, self.b.current_block(), m, addr, end) {
                self.bounds_check(m, operand, end, offset);
                self.checked.record(self.b.current_block(), m, addr, end);
            }
            MemFlagsData::new().with_notrap()
        };
        let native = self.native_address(m, operand);
        let (native, displacement) = match i32::try_from(memarg.offset) {
            Ok(d) => (native, d),
            Err(_) => (self.b.ins().iadd_imm_u(native, memarg.offset as i64), 0),
        };
        let at = self.effective_address(addr, memarg);
        Ok((native, displacement, m, at, flags))
    }

    /// Loads and stores of any memory; false if `op` is not one. With `--race`, a shared memory's
    /// accesses call the race hook after they were made (a trap comes first and is no race).
    pub(super) fn memory_op(&mut self, op: &Operator<'_>, offset: u32) -> Result<bool, Unsupported> {
        use Operator as O;
        use types::{F32, F64, I32, I64};
        #[derive(Clone, Copy)]
        enum Ext {
            None,
            S8,
            U8,
            S16,
            U16,
            S32,
            U32,
        }
        let (memarg, load) = match op {
            O::I32Load { memarg } => (memarg, Some((I32, Ext::None, 4))),
            O::I64Load { memarg } => (memarg, Some((I64, Ext::None, 8))),
            O::F32Load { memarg } => (memarg, Some((F32, Ext::None, 4))),
            O::F64Load { memarg } => (memarg, Some((F64, Ext::None, 8))),
            O::I32Load8S { memarg } => (memarg, Some((I32, Ext::S8, 1))),
            O::I32Load8U { memarg } => (memarg, Some((I32, Ext::U8, 1))),
            O::I32Load16S { memarg } => (memarg, Some((I32, Ext::S16, 2))),
            O::I32Load16U { memarg } => (memarg, Some((I32, Ext::U16, 2))),
            O::I64Load8S { memarg } => (memarg, Some((I64, Ext::S8, 1))),
            O::I64Load8U { memarg } => (memarg, Some((I64, Ext::U8, 1))),
            O::I64Load16S { memarg } => (memarg, Some((I64, Ext::S16, 2))),
            O::I64Load16U { memarg } => (memarg, Some((I64, Ext::U16, 2))),
            O::I64Load32S { memarg } => (memarg, Some((I64, Ext::S32, 4))),
            O::I64Load32U { memarg } => (memarg, Some((I64, Ext::U32, 4))),
            O::I32Store { memarg }
            | O::I64Store { memarg }
            | O::F32Store { memarg }
            | O::F64Store { memarg }
            | O::I32Store8 { memarg }
            | O::I32Store16 { memarg }
            | O::I64Store8 { memarg }
            | O::I64Store16 { memarg }
            | O::I64Store32 { memarg } => (memarg, None),
            _ => return Ok(false),
        };
        if let Some((ty, ext, size)) = load {
            let addr = self.pop();
            let (p, d, m, at, heap) = self.checked_address(addr, memarg, size, offset)?;
            let ins = self.b.ins();
            let v = match ext {
                Ext::None => ins.load(ty, heap, p, d),
                Ext::S8 => ins.sload8(ty, heap, p, d),
                Ext::U8 => ins.uload8(ty, heap, p, d),
                Ext::S16 => ins.sload16(ty, heap, p, d),
                Ext::U16 => ins.uload16(ty, heap, p, d),
                Ext::S32 => ins.sload32(heap, p, d),
                Ext::U32 => ins.uload32(heap, p, d),
            };
            self.push(v);
            if self.input.race_hooked(m) {
                self.race_hook(m, at, size as u32, RaceHook::READ, offset);
            }
            return Ok(true);
        }
        let value = self.pop();
        let addr = self.pop();
        let size = match op {
            O::I32Store8 { .. } | O::I64Store8 { .. } => 1,
            O::I32Store16 { .. } | O::I64Store16 { .. } => 2,
            O::I64Store32 { .. } => 4,
            _ => self.b.func.dfg.value_type(value).bytes() as u64,
        };
        let (p, d, m, at, heap) = self.checked_address(addr, memarg, size, offset)?;
        let ins = self.b.ins();
        match size {
            1 if !matches!(op, O::I32Store { .. } | O::F32Store { .. }) => ins.istore8(heap, value, p, d),
            2 => ins.istore16(heap, value, p, d),
            4 if matches!(op, O::I64Store32 { .. }) => ins.istore32(heap, value, p, d),
            _ => ins.store(heap, value, p, d),
        };
        if self.input.race_hooked(m) && !self.bugs.race_skip_store_hook {
            self.race_hook(m, at, size as u32, RaceHook::WRITE, offset);
        }
        Ok(true)
    }
}
