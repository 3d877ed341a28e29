//! Plain loads and stores of any memory, with explicit bounds checks (`multimem.rs` says where each
//! memory is and checks the bounds) or, where the memory's guard region covers the access, the
//! hardware's (`vm/src/fault.rs`).

use cranelift_codegen::ir::{InstBuilder, MemFlagsData, TrapCode, Value, types};
use vm::tier::{RaceHook, Unsupported};
use wasmparser::{MemArg, Operator};

use super::FuncTranslator;
use super::multimem::memarg_memory;

impl FuncTranslator<'_, '_> {
    /// The native address of `addr + memarg.offset` after checking that `size` bytes there are inside
    /// the memory `memarg` names (traps otherwise), with the memory, the effective address and the flags
    /// the access must use. When the memory's guard covers the access (`vm/src/fault.rs`), the check is
    /// the hardware's: no instruction here, and flags that mark the access as a heap-trap site.
    fn checked_address(
        &mut self,
        addr: Value,
        memarg: &MemArg,
        size: u64,
        offset: u32,
    ) -> Result<(Value, u32, Value, MemFlagsData), Unsupported> {
        let m = memarg_memory(memarg)?;
        let at = self.effective_address(addr, memarg);
        let planted_unchecked = self.bugs.no_bounds_check || (m != 0 && self.bugs.no_bounds_check_memory_n);
        let guarded = memarg.offset.saturating_add(size) <= self.input.memory_guard
            || (self.bugs.guard_any_offset && self.input.memory_guard > 0);
        let flags = if guarded && !planted_unchecked {
            MemFlagsData::new().with_trap_code(Some(TrapCode::HEAP_OUT_OF_BOUNDS))
        } else {
            self.bounds_check(m, at, size, offset);
            MemFlagsData::new().with_notrap()
        };
        Ok((self.native_address(m, at), m, at, flags))
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
            let (p, m, at, heap) = self.checked_address(addr, memarg, size, offset)?;
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
        let (p, m, at, heap) = self.checked_address(addr, memarg, size, offset)?;
        let ins = self.b.ins();
        match size {
            1 if !matches!(op, O::I32Store { .. } | O::F32Store { .. }) => ins.istore8(heap, value, p, 0),
            2 => ins.istore16(heap, value, p, 0),
            4 if matches!(op, O::I64Store32 { .. }) => ins.istore32(heap, value, p, 0),
            _ => ins.store(heap, value, p, 0),
        };
        if self.input.race_hooked(m) && !self.bugs.race_skip_store_hook {
            self.race_hook(m, at, size as u32, RaceHook::WRITE, offset);
        }
        Ok(true)
    }
}
