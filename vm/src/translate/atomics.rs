//! Translation of the threads proposal's instructions: atomic loads, stores, read-modify-writes and
//! compare-exchanges, `memory.atomic.wait`/`notify` and `atomic.fence`.
//!
//! They are rare in hot code and need their operands together, so each becomes one generic instruction
//! over consecutive slots (`args`: the address, then the operands; see `bytecode.rs`), executed on the
//! interpreter's cold path (`interp/atomics.rs`). The i32 and i64 forms of an operation differ only in
//! how their result is typed, and slots hold i32s zero-extended, so both become the same instruction with
//! the access width.

use wasmparser::{MemArg, MemArgTarget, Operator};

use super::Translator;
use crate::bytecode::{Instr, RmwOp, Slot};

/// The shape of one atomic operator.
enum Atomic {
    Load(u8),
    Store(u8),
    Rmw(RmwOp, u8),
    Cmpxchg(u8),
    Wait(u8),
    Notify,
}

/// The atomic operator `op` as a shape and its memory argument, or `None` if `op` is not one.
fn classify(op: &Operator<'_>) -> Option<(Atomic, MemArg)> {
    use Atomic::*;
    use Operator as O;
    use RmwOp::*;
    macro_rules! table {
        ($($op:ident => $shape:expr,)*) => {
            match op {
                $(O::$op { memarg } => Some(($shape, *memarg)),)*
                _ => None,
            }
        };
    }
    table! {
        MemoryAtomicNotify => Notify,
        MemoryAtomicWait32 => Wait(4),
        MemoryAtomicWait64 => Wait(8),
        I32AtomicLoad => Load(4), I64AtomicLoad => Load(8),
        I32AtomicLoad8U => Load(1), I32AtomicLoad16U => Load(2),
        I64AtomicLoad8U => Load(1), I64AtomicLoad16U => Load(2), I64AtomicLoad32U => Load(4),
        I32AtomicStore => Store(4), I64AtomicStore => Store(8),
        I32AtomicStore8 => Store(1), I32AtomicStore16 => Store(2),
        I64AtomicStore8 => Store(1), I64AtomicStore16 => Store(2), I64AtomicStore32 => Store(4),
        I32AtomicRmwAdd => Rmw(Add, 4), I64AtomicRmwAdd => Rmw(Add, 8),
        I32AtomicRmw8AddU => Rmw(Add, 1), I32AtomicRmw16AddU => Rmw(Add, 2),
        I64AtomicRmw8AddU => Rmw(Add, 1), I64AtomicRmw16AddU => Rmw(Add, 2), I64AtomicRmw32AddU => Rmw(Add, 4),
        I32AtomicRmwSub => Rmw(Sub, 4), I64AtomicRmwSub => Rmw(Sub, 8),
        I32AtomicRmw8SubU => Rmw(Sub, 1), I32AtomicRmw16SubU => Rmw(Sub, 2),
        I64AtomicRmw8SubU => Rmw(Sub, 1), I64AtomicRmw16SubU => Rmw(Sub, 2), I64AtomicRmw32SubU => Rmw(Sub, 4),
        I32AtomicRmwAnd => Rmw(And, 4), I64AtomicRmwAnd => Rmw(And, 8),
        I32AtomicRmw8AndU => Rmw(And, 1), I32AtomicRmw16AndU => Rmw(And, 2),
        I64AtomicRmw8AndU => Rmw(And, 1), I64AtomicRmw16AndU => Rmw(And, 2), I64AtomicRmw32AndU => Rmw(And, 4),
        I32AtomicRmwOr => Rmw(Or, 4), I64AtomicRmwOr => Rmw(Or, 8),
        I32AtomicRmw8OrU => Rmw(Or, 1), I32AtomicRmw16OrU => Rmw(Or, 2),
        I64AtomicRmw8OrU => Rmw(Or, 1), I64AtomicRmw16OrU => Rmw(Or, 2), I64AtomicRmw32OrU => Rmw(Or, 4),
        I32AtomicRmwXor => Rmw(Xor, 4), I64AtomicRmwXor => Rmw(Xor, 8),
        I32AtomicRmw8XorU => Rmw(Xor, 1), I32AtomicRmw16XorU => Rmw(Xor, 2),
        I64AtomicRmw8XorU => Rmw(Xor, 1), I64AtomicRmw16XorU => Rmw(Xor, 2), I64AtomicRmw32XorU => Rmw(Xor, 4),
        I32AtomicRmwXchg => Rmw(Xchg, 4), I64AtomicRmwXchg => Rmw(Xchg, 8),
        I32AtomicRmw8XchgU => Rmw(Xchg, 1), I32AtomicRmw16XchgU => Rmw(Xchg, 2),
        I64AtomicRmw8XchgU => Rmw(Xchg, 1), I64AtomicRmw16XchgU => Rmw(Xchg, 2), I64AtomicRmw32XchgU => Rmw(Xchg, 4),
        I32AtomicRmwCmpxchg => Cmpxchg(4), I64AtomicRmwCmpxchg => Cmpxchg(8),
        I32AtomicRmw8CmpxchgU => Cmpxchg(1), I32AtomicRmw16CmpxchgU => Cmpxchg(2),
        I64AtomicRmw8CmpxchgU => Cmpxchg(1), I64AtomicRmw16CmpxchgU => Cmpxchg(2), I64AtomicRmw32CmpxchgU => Cmpxchg(4),
    }
}

impl Translator<'_> {
    /// Translate `op` if it is a threads-proposal instruction; false if it is not one.
    pub(super) fn atomic(&mut self, op: &Operator<'_>) -> bool {
        if let Operator::AtomicFence { .. } = op {
            self.emit(Instr::AtomicFence);
            return true;
        }
        let Some((shape, memarg)) = classify(op) else { return false };
        let MemArgTarget::Memory(mem) = memarg.target else { unreachable!("array memargs are not enabled") };
        let (mem, offset) = (mem as u16, memarg.offset as u32);
        match shape {
            Atomic::Load(width) => {
                self.atomic_operands(1, true, |dst, args| Instr::AtomicLoad { mem, width, dst, args, offset })
            }
            Atomic::Store(width) => {
                self.atomic_operands(2, false, |_, args| Instr::AtomicStore { mem, width, args, offset })
            }
            Atomic::Rmw(op, width) => {
                self.atomic_operands(2, true, |dst, args| Instr::AtomicRmw { op, mem, width, dst, args, offset })
            }
            Atomic::Cmpxchg(width) => {
                self.atomic_operands(3, true, |dst, args| Instr::AtomicCmpxchg { mem, width, dst, args, offset })
            }
            Atomic::Notify => self.atomic_operands(2, true, |dst, args| Instr::AtomicNotify { mem, dst, args, offset }),
            Atomic::Wait(width) => {
                let args = self.materialize_top(3);
                self.stack.truncate(self.stack.len() - 3);
                // The thread blocks with its mutator native, so a collection may scan this frame here.
                self.record_stack_map(self.stack.len());
                let dst = self.push_temp(false);
                self.emit(Instr::AtomicWait { mem, width, dst, args, offset });
            }
        }
        true
    }

    /// Put the top `n` operands in consecutive slots and emit `make(dst, args)`, pushing an i32/i64
    /// result (in the first operand's slot) if `result`.
    fn atomic_operands(&mut self, n: usize, result: bool, make: impl FnOnce(Slot, Slot) -> Instr) {
        let args = self.materialize_top(n);
        self.stack.truncate(self.stack.len() - n);
        if result {
            let dst = self.push_temp(false);
            self.emit(make(dst, args));
        } else {
            self.emit(make(0, args));
        }
    }
}
