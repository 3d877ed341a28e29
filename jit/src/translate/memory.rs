//! Linear memory 0: loads and stores with explicit bounds checks, `memory.size`/`grow` helpers and the
//! bulk operations (library calls).

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, Value, types};
use vm::tier::{TrapCode, Unsupported};
use wasmparser::{MemArg, Operator};

use super::FuncTranslator;
use crate::abi::trusted;

impl FuncTranslator<'_, '_> {
    /// `memory.fill` / `memory.copy` of memory 0: a library call on the three i32 operands.
    pub(super) fn bulk_memory(&mut self, mem: u32, libcall: usize, offset: u32) -> Result<(), Unsupported> {
        self.memory_zero(mem)?;
        let ops = self.pop_n(3);
        let oob = self.call_vm(libcall, &ops, Some(types::I32)).expect("a result");
        self.trap_if(oob, TrapCode::MemoryOutOfBounds, offset);
        Ok(())
    }

    pub(super) fn memory_zero(&self, mem: u32) -> Result<(), Unsupported> {
        if mem != 0 { Err(Unsupported::new("memories other than 0")) } else { Ok(()) }
    }

    pub(super) fn memory_len(&mut self) -> Value {
        self.b.ins().load(types::I64, trusted(), self.mem_len_addr, 0)
    }

    /// The native address of `addr + memarg.offset` after checking that `size` bytes there are inside
    /// memory 0; traps otherwise.
    pub(super) fn checked_address(
        &mut self,
        addr: Value,
        memarg: &MemArg,
        size: u64,
        offset: u32,
    ) -> Result<Value, Unsupported> {
        match memarg.target {
            wasmparser::MemArgTarget::Memory(m) => self.memory_zero(m)?,
            wasmparser::MemArgTarget::Array(_) => return Err(Unsupported::new("array memory access")),
        }
        let a = self.b.ins().uextend(types::I64, addr);
        let end_off = self.b.ins().iconst(types::I64, (memarg.offset + size) as i64);
        let end = self.b.ins().iadd(a, end_off);
        let len = self.memory_len();
        let oob = self.b.ins().icmp(IntCC::UnsignedGreaterThan, end, len);
        if !self.bugs.no_bounds_check {
            self.trap_if(oob, TrapCode::MemoryOutOfBounds, offset);
        }
        let base = self.b.ins().iadd(self.mem_base, a);
        Ok(if memarg.offset == 0 {
            base
        } else {
            let off = self.b.ins().iconst(types::I64, memarg.offset as i64);
            self.b.ins().iadd(base, off)
        })
    }

    /// Loads and stores of memory 0; false if `op` is not one.
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
        let heap = MemFlagsData::new().with_notrap();
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
            let p = self.checked_address(addr, memarg, size, offset)?;
            let ins = self.b.ins();
            let v = match ext {
                Ext::None => ins.load(ty, heap, p, 0),
                Ext::S8 => ins.sload8(ty, heap, p, 0),
                Ext::U8 => ins.uload8(ty, heap, p, 0),
                Ext::S16 => ins.sload16(ty, heap, p, 0),
                Ext::U16 => ins.uload16(ty, heap, p, 0),
                Ext::S32 => ins.sload32(heap, p, 0),
                Ext::U32 => ins.uload32(heap, p, 0),
            };
            self.push(v);
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
        let p = self.checked_address(addr, memarg, size, offset)?;
        let ins = self.b.ins();
        match size {
            1 if !matches!(op, O::I32Store { .. } | O::F32Store { .. }) => ins.istore8(heap, value, p, 0),
            2 => ins.istore16(heap, value, p, 0),
            4 if matches!(op, O::I64Store32 { .. }) => ins.istore32(heap, value, p, 0),
            _ => ins.store(heap, value, p, 0),
        };
        Ok(true)
    }
}
