//! The threads proposal's instructions: atomic loads, stores, read-modify-writes and compare-exchanges
//! inline, `memory.atomic.wait32/64` and `notify` as library calls, `atomic.fence`.
//!
//! **Semantics are the interpreter's** (`vm/src/memory_atomic.rs`): every access is sequentially
//! consistent (Cranelift's atomic instructions are: `lock`-prefixed or `xchg` on x86-64), on any memory,
//! shared or not. The checks come in the reference interpreter's order: the effective address (operand
//! plus offset, not wrapped) must be a multiple of the width (`unaligned atomic`), then inside the memory
//! (`out of bounds memory access`), against the length loaded at this access (a shared memory may have
//! been grown by another thread since the last one). Narrow accesses act on the low bytes of their
//! operands and zero-extend what they read, the expected value of a compare-exchange included.
//!
//! **Waits block in the VM** (`lib_wait`): the mutator goes native while it waits, as in the interpreter,
//! so a thread blocked in `wait` never holds up a collection.
//!
//! **`--race`** (any memory, as the interpreter's cold path does): an atomic that writes releases its
//! address before the operation, and after it the access is reported (an atomic read or write) together
//! with the acquire of one that reads; `notify` releases and a woken `wait` acquires inside the library
//! calls.

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{AtomicRmwOp, InstBuilder, MemFlagsData, Type, Value, types};
use vm::tier::{RaceHook, TrapCode, Unsupported};
use wasmparser::{MemArg, Operator};

use super::FuncTranslator;
use super::multimem::memarg_memory;

use types::{I8, I16, I32, I64};

/// What an atomic operator does.
#[derive(Clone, Copy)]
pub(super) enum Atomic {
    Load,
    Store,
    Rmw(AtomicRmwOp),
    Cmpxchg,
}

/// The kind, wasm result type and access width in bytes of an atomic memory access; `None` for others.
fn classify(op: &Operator<'_>) -> Option<(Atomic, Type, u32, MemArg)> {
    use Atomic::{Cmpxchg, Load, Rmw, Store};
    use AtomicRmwOp::{Add, And, Or, Sub, Xchg, Xor};
    use Operator as O;
    let (kind, ty, width, memarg) = match *op {
        O::I32AtomicLoad { memarg } => (Load, I32, 4, memarg),
        O::I64AtomicLoad { memarg } => (Load, I64, 8, memarg),
        O::I32AtomicLoad8U { memarg } => (Load, I32, 1, memarg),
        O::I32AtomicLoad16U { memarg } => (Load, I32, 2, memarg),
        O::I64AtomicLoad8U { memarg } => (Load, I64, 1, memarg),
        O::I64AtomicLoad16U { memarg } => (Load, I64, 2, memarg),
        O::I64AtomicLoad32U { memarg } => (Load, I64, 4, memarg),
        O::I32AtomicStore { memarg } => (Store, I32, 4, memarg),
        O::I64AtomicStore { memarg } => (Store, I64, 8, memarg),
        O::I32AtomicStore8 { memarg } => (Store, I32, 1, memarg),
        O::I32AtomicStore16 { memarg } => (Store, I32, 2, memarg),
        O::I64AtomicStore8 { memarg } => (Store, I64, 1, memarg),
        O::I64AtomicStore16 { memarg } => (Store, I64, 2, memarg),
        O::I64AtomicStore32 { memarg } => (Store, I64, 4, memarg),
        O::I32AtomicRmwAdd { memarg } => (Rmw(Add), I32, 4, memarg),
        O::I64AtomicRmwAdd { memarg } => (Rmw(Add), I64, 8, memarg),
        O::I32AtomicRmw8AddU { memarg } => (Rmw(Add), I32, 1, memarg),
        O::I32AtomicRmw16AddU { memarg } => (Rmw(Add), I32, 2, memarg),
        O::I64AtomicRmw8AddU { memarg } => (Rmw(Add), I64, 1, memarg),
        O::I64AtomicRmw16AddU { memarg } => (Rmw(Add), I64, 2, memarg),
        O::I64AtomicRmw32AddU { memarg } => (Rmw(Add), I64, 4, memarg),
        O::I32AtomicRmwSub { memarg } => (Rmw(Sub), I32, 4, memarg),
        O::I64AtomicRmwSub { memarg } => (Rmw(Sub), I64, 8, memarg),
        O::I32AtomicRmw8SubU { memarg } => (Rmw(Sub), I32, 1, memarg),
        O::I32AtomicRmw16SubU { memarg } => (Rmw(Sub), I32, 2, memarg),
        O::I64AtomicRmw8SubU { memarg } => (Rmw(Sub), I64, 1, memarg),
        O::I64AtomicRmw16SubU { memarg } => (Rmw(Sub), I64, 2, memarg),
        O::I64AtomicRmw32SubU { memarg } => (Rmw(Sub), I64, 4, memarg),
        O::I32AtomicRmwAnd { memarg } => (Rmw(And), I32, 4, memarg),
        O::I64AtomicRmwAnd { memarg } => (Rmw(And), I64, 8, memarg),
        O::I32AtomicRmw8AndU { memarg } => (Rmw(And), I32, 1, memarg),
        O::I32AtomicRmw16AndU { memarg } => (Rmw(And), I32, 2, memarg),
        O::I64AtomicRmw8AndU { memarg } => (Rmw(And), I64, 1, memarg),
        O::I64AtomicRmw16AndU { memarg } => (Rmw(And), I64, 2, memarg),
        O::I64AtomicRmw32AndU { memarg } => (Rmw(And), I64, 4, memarg),
        O::I32AtomicRmwOr { memarg } => (Rmw(Or), I32, 4, memarg),
        O::I64AtomicRmwOr { memarg } => (Rmw(Or), I64, 8, memarg),
        O::I32AtomicRmw8OrU { memarg } => (Rmw(Or), I32, 1, memarg),
        O::I32AtomicRmw16OrU { memarg } => (Rmw(Or), I32, 2, memarg),
        O::I64AtomicRmw8OrU { memarg } => (Rmw(Or), I64, 1, memarg),
        O::I64AtomicRmw16OrU { memarg } => (Rmw(Or), I64, 2, memarg),
        O::I64AtomicRmw32OrU { memarg } => (Rmw(Or), I64, 4, memarg),
        O::I32AtomicRmwXor { memarg } => (Rmw(Xor), I32, 4, memarg),
        O::I64AtomicRmwXor { memarg } => (Rmw(Xor), I64, 8, memarg),
        O::I32AtomicRmw8XorU { memarg } => (Rmw(Xor), I32, 1, memarg),
        O::I32AtomicRmw16XorU { memarg } => (Rmw(Xor), I32, 2, memarg),
        O::I64AtomicRmw8XorU { memarg } => (Rmw(Xor), I64, 1, memarg),
        O::I64AtomicRmw16XorU { memarg } => (Rmw(Xor), I64, 2, memarg),
        O::I64AtomicRmw32XorU { memarg } => (Rmw(Xor), I64, 4, memarg),
        O::I32AtomicRmwXchg { memarg } => (Rmw(Xchg), I32, 4, memarg),
        O::I64AtomicRmwXchg { memarg } => (Rmw(Xchg), I64, 8, memarg),
        O::I32AtomicRmw8XchgU { memarg } => (Rmw(Xchg), I32, 1, memarg),
        O::I32AtomicRmw16XchgU { memarg } => (Rmw(Xchg), I32, 2, memarg),
        O::I64AtomicRmw8XchgU { memarg } => (Rmw(Xchg), I64, 1, memarg),
        O::I64AtomicRmw16XchgU { memarg } => (Rmw(Xchg), I64, 2, memarg),
        O::I64AtomicRmw32XchgU { memarg } => (Rmw(Xchg), I64, 4, memarg),
        O::I32AtomicRmwCmpxchg { memarg } => (Cmpxchg, I32, 4, memarg),
        O::I64AtomicRmwCmpxchg { memarg } => (Cmpxchg, I64, 8, memarg),
        O::I32AtomicRmw8CmpxchgU { memarg } => (Cmpxchg, I32, 1, memarg),
        O::I32AtomicRmw16CmpxchgU { memarg } => (Cmpxchg, I32, 2, memarg),
        O::I64AtomicRmw8CmpxchgU { memarg } => (Cmpxchg, I64, 1, memarg),
        O::I64AtomicRmw16CmpxchgU { memarg } => (Cmpxchg, I64, 2, memarg),
        O::I64AtomicRmw32CmpxchgU { memarg } => (Cmpxchg, I64, 4, memarg),
        _ => return None,
    };
    Some((kind, ty, width, memarg))
}

/// The Cranelift type of a `width`-byte access.
pub(super) fn access_type(width: u32) -> Type {
    match width {
        1 => I8,
        2 => I16,
        4 => I32,
        _ => I64,
    }
}

/// `old op v` for the planted non-atomic read-modify-write.
pub(super) fn rmw_value(t: &mut FuncTranslator<'_, '_>, op: AtomicRmwOp, old: Value, v: Value) -> Value {
    let ins = t.b.ins();
    match op {
        AtomicRmwOp::Add => ins.iadd(old, v),
        AtomicRmwOp::Sub => ins.isub(old, v),
        AtomicRmwOp::And => ins.band(old, v),
        AtomicRmwOp::Or => ins.bor(old, v),
        AtomicRmwOp::Xor => ins.bxor(old, v),
        _ => v,
    }
}

impl FuncTranslator<'_, '_> {
    /// The atomic instructions; false if `op` is not one.
    pub(super) fn atomic_op(&mut self, op: &Operator<'_>, offset: u32) -> Result<bool, Unsupported> {
        match *op {
            Operator::AtomicFence { .. } => {
                self.b.ins().fence();
                return Ok(true);
            }
            Operator::MemoryAtomicWait32 { memarg } => self.wait(&memarg, 4, offset)?,
            Operator::MemoryAtomicWait64 { memarg } => self.wait(&memarg, 8, offset)?,
            Operator::MemoryAtomicNotify { memarg } => self.notify(&memarg, offset)?,
            _ => {
                let Some((kind, ty, width, memarg)) = classify(op) else { return Ok(false) };
                self.atomic_access(kind, ty, width, &memarg, offset)?;
            }
        }
        Ok(true)
    }

    /// The address of an atomic access after its checks (alignment, then bounds), with the memory and the
    /// effective address.
    fn atomic_address(
        &mut self,
        addr: Value,
        memarg: &MemArg,
        width: u32,
        offset: u32,
    ) -> Result<(Value, u32, Value), Unsupported> {
        let m = memarg_memory(memarg)?;
        let at = self.effective_address(addr, memarg);
        if width > 1 && !self.bugs.no_atomic_alignment_check {
            let low = self.b.ins().band_imm_u(at, (width - 1) as i64);
            let unaligned = self.b.ins().icmp_imm_u(IntCC::NotEqual, low, 0);
            self.trap_if(unaligned, TrapCode::UnalignedAtomic, offset);
        }
        self.bounds_check(m, at, width as u64, offset);
        Ok((self.native_address(m, at), m, at))
    }

    fn atomic_access(
        &mut self,
        kind: Atomic,
        ty: Type,
        width: u32,
        memarg: &MemArg,
        offset: u32,
    ) -> Result<(), Unsupported> {
        let operands = match kind {
            Atomic::Load => 0,
            Atomic::Store | Atomic::Rmw(_) => 1,
            Atomic::Cmpxchg => 2,
        };
        let ops = self.pop_n(operands);
        let addr = self.pop();
        let (p, m, at) = self.atomic_address(addr, memarg, width, offset)?;
        let race = self.input.race;
        let writes = !matches!(kind, Atomic::Load);
        if race && writes {
            self.race_hook(m, at, width, RaceHook::RELEASE, offset);
        }
        let aty = access_type(width);
        let narrow = |t: &mut Self, v: Value| if aty == ty { v } else { t.b.ins().ireduce(aty, v) };
        let flags = MemFlagsData::trusted();
        let read = match kind {
            Atomic::Load => Some(self.b.ins().atomic_load(aty, flags, p)),
            Atomic::Store => {
                let v = narrow(self, ops[0]);
                self.b.ins().atomic_store(flags, v, p);
                None
            }
            Atomic::Rmw(op) if self.bugs.rmw_not_atomic => {
                // The planted bug: a load, the operation and a store, which another thread can interleave.
                let v = narrow(self, ops[0]);
                let old = self.b.ins().load(aty, flags, p, 0);
                let new = rmw_value(self, op, old, v);
                self.b.ins().store(flags, new, p, 0);
                Some(old)
            }
            Atomic::Rmw(op) => {
                let v = narrow(self, ops[0]);
                Some(self.b.ins().atomic_rmw(aty, flags, op, p, v))
            }
            Atomic::Cmpxchg => {
                let (e, r) = (narrow(self, ops[0]), narrow(self, ops[1]));
                Some(self.b.ins().atomic_cas(flags, p, e, r))
            }
        };
        if let Some(old) = read {
            let v = if aty == ty { old } else { self.b.ins().uextend(ty, old) };
            self.push(v);
        }
        if race {
            let what = match kind {
                Atomic::Load => RaceHook::ACQUIRE | RaceHook::READ,
                Atomic::Store => RaceHook::WRITE,
                Atomic::Rmw(_) | Atomic::Cmpxchg => RaceHook::ACQUIRE | RaceHook::WRITE,
            };
            self.race_hook(m, at, width, what | RaceHook::ATOMIC, offset);
        }
        Ok(())
    }

    /// `memory.atomic.wait32/64`: `[addr, expected, timeout] -> result`, a library call that checks the
    /// address as the interpreter does (it traps on an unshared memory first).
    fn wait(&mut self, memarg: &MemArg, width: u32, offset: u32) -> Result<(), Unsupported> {
        let m = memarg_memory(memarg)?;
        let timeout = self.pop();
        let expected = self.pop();
        let addr = self.pop();
        let at = self.effective_address(addr, memarg);
        let expected = if width == 4 { self.b.ins().uextend(I64, expected) } else { expected };
        let (mi, wi) = (self.b.ins().iconst(I32, m as i64), self.b.ins().iconst(I32, width as i64));
        let r = self.call_vm(self.libcalls.mem.wait, &[mi, at, wi, expected, timeout], Some(I64)).expect("a result");
        self.push_checked_result(r, offset);
        Ok(())
    }

    /// `memory.atomic.notify`: `[addr, count] -> woken`.
    fn notify(&mut self, memarg: &MemArg, offset: u32) -> Result<(), Unsupported> {
        let m = memarg_memory(memarg)?;
        let count = self.pop();
        let addr = self.pop();
        let at = self.effective_address(addr, memarg);
        let mi = self.b.ins().iconst(I32, m as i64);
        let r = self.call_vm(self.libcalls.mem.notify, &[mi, at, count], Some(I64)).expect("a result");
        self.push_checked_result(r, offset);
        Ok(())
    }

    /// After a library call returning a non-negative i32 result or -1 for a pending trap.
    fn push_checked_result(&mut self, r: Value, offset: u32) {
        let trapped = self.b.ins().icmp_imm_s(IntCC::SignedLessThan, r, 0);
        self.check_status(trapped, offset);
        let v = self.b.ins().ireduce(I32, r);
        self.push(v);
    }
}
