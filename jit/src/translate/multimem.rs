//! Any memory of the index space (multi-memory): where a memory's bytes and length are, the bounds check
//! every access makes, `memory.size`/`grow`, the bulk operations and data segments, and the race hook
//! calls of `--race`.
//!
//! **Where a memory is.** Memory 0's base and length address are loaded once in the entry block (the
//! common case); any other memory's come from the instance's [`VmMemory`] table (`VmCtx::memories`),
//! loaded read-only where used (both words are fixed for the instance's life, so Cranelift may share and
//! hoist them). The length of memory 0, when it is not shared, lives in a variable that is reloaded after
//! every call (only a call can grow it: `memory.grow` is a library call), so the bounds check of an
//! access in a loop without calls compares against a register. Any other memory's length is loaded at
//! every access, so a `memory.grow` by any path is seen by the next access. For a shared memory that
//! load is an atomic one (another thread may store it at any time); a stale length would only be
//! smaller, since lengths only grow and bases never move (reserved mappings).
//!
//! **Bulk operations** (`memory.fill`, `copy`, `init`, `data.drop`) and `memory.grow` are library calls
//! into the VM (`vm/src/interp/jit_memory.rs`), which runs the interpreter's own code for them.

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{InstBuilder, Value, types};
use vm::tier::{TrapCode, Unsupported, VmCtx, VmMemory};
use wasmparser::{MemArg, MemArgTarget, Operator};

use super::FuncTranslator;
use crate::abi::{fixed, trusted};

use types::{I32, I64};

/// The memory an access names (accesses to GC arrays are not memory accesses).
pub(super) fn memarg_memory(memarg: &MemArg) -> Result<u32, Unsupported> {
    match memarg.target {
        MemArgTarget::Memory(m) => Ok(m),
        MemArgTarget::Array(_) => Err(Unsupported::new("array memory access")),
    }
}

impl FuncTranslator<'_, '_> {
    /// Memory `m`'s base address and the address of its byte length.
    pub(super) fn memory_parts(&mut self, m: u32) -> (Value, Value) {
        if m == 0 || self.bugs.memory_n_is_memory_0 {
            return (self.mem_base, self.mem_len_addr);
        }
        let table = self.b.ins().load(I64, fixed(), self.vmctx, VmCtx::MEMORIES);
        let at = (m as i32) * VmMemory::SIZE;
        let base = self.b.ins().load(I64, fixed(), table, at + VmMemory::BASE);
        let len = self.b.ins().load(I64, fixed(), table, at + VmMemory::LEN);
        (base, len)
    }

    /// Memory `m`'s current byte length (see the module comment).
    pub(super) fn memory_len_of(&mut self, m: u32) -> Value {
        if let Some(var) = self.mem0_len
            && (m == 0 || self.bugs.memory_n_is_memory_0)
        {
            return self.b.use_var(var);
        }
        let (_, len_addr) = self.memory_parts(m);
        if self.input.memory_shared(m) {
            self.b.ins().atomic_load(I64, trusted(), len_addr)
        } else {
            self.b.ins().load(I64, trusted(), len_addr, 0)
        }
    }

    /// The effective address of an access: the i32 operand plus the static offset, without wrapping
    /// (both are below 2^32, so the i64 sum is exact).
    pub(super) fn effective_address(&mut self, addr: Value, memarg: &MemArg) -> Value {
        let a = self.b.ins().uextend(I64, addr);
        if memarg.offset == 0 { a } else { self.b.ins().iadd_imm_u(a, memarg.offset as i64) }
    }

    /// Trap unless `size` bytes at effective address `at` are inside memory `m`.
    pub(super) fn bounds_check(&mut self, m: u32, at: Value, size: u64, offset: u32) {
        if self.bugs.no_bounds_check || (m != 0 && self.bugs.no_bounds_check_memory_n) {
            return;
        }
        // `at + size > len`, as `at > len - size` signed: `at` (below 2^33) and `len` (below 2^48) fit
        // in an i64, `len - size` is negative when the memory is smaller than the access (so every `at`
        // is out), and it is loop-invariant when the length is (one subtraction hoisted, none per access).
        let len = self.memory_len_of(m);
        let last_start = self.b.ins().iadd_imm_s(len, -(size as i64));
        let oob = self.b.ins().icmp(IntCC::SignedGreaterThan, at, last_start);
        self.trap_if(oob, TrapCode::MemoryOutOfBounds, offset);
    }

    /// The native address of effective address `at` of memory `m` (after its bounds check).
    pub(super) fn native_address(&mut self, m: u32, at: Value) -> Value {
        let (base, _) = self.memory_parts(m);
        self.b.ins().iadd(base, at)
    }

    /// `--race`: call the race hook with the [`vm::tier::RaceHook`] bits `what` for `width` bytes at
    /// effective address `at` of memory `m`, made by the operator at `offset`.
    pub(super) fn race_hook(&mut self, m: u32, at: Value, width: u32, what: u32, offset: u32) {
        let consts = [m, width, what, self.input.func_index, offset];
        let [m, width, what, func, off] = consts.map(|c| self.b.ins().iconst(I32, c as i64));
        let fp = self.b.ins().get_frame_pointer(I64);
        self.call_vm(self.libcalls.mem.race, &[m, at, width, what, func, off, fp], None);
    }

    /// A library call taking `vmctx` and `args` (i32s) that returns a status: trap when it is non-zero.
    fn status_libcall(&mut self, libcall: usize, args: &[Value], offset: u32) {
        let status = self.call_vm(libcall, args, Some(I32)).expect("a status");
        self.check_status(status, offset);
    }

    /// `memory.size`, `memory.grow`, `memory.fill`, `memory.copy`, `memory.init` and `data.drop` on any
    /// memory; false if `op` is none of them.
    pub(super) fn multimem_op(&mut self, op: &Operator<'_>, offset: u32) -> Result<bool, Unsupported> {
        use Operator as O;
        let mem = self.libcalls.mem;
        let c = |t: &mut Self, v: u32| t.b.ins().iconst(I32, v as i64);
        match *op {
            O::MemorySize { mem: m } => {
                let len = self.memory_len_of(m);
                let pages = self.b.ins().ushr_imm_u(len, 16);
                let v = self.b.ins().ireduce(I32, pages);
                self.push(v);
            }
            O::MemoryGrow { mem: m } => {
                let delta = self.pop();
                let m = c(self, m);
                let r = self.call_vm(mem.grow, &[m, delta], Some(I32)).expect("a result");
                self.push(r);
            }
            O::MemoryFill { mem: m } => {
                let ops = self.pop_n(3);
                let m = c(self, m);
                self.status_libcall(mem.fill, &[m, ops[0], ops[1], ops[2]], offset);
            }
            O::MemoryCopy { dst_mem, src_mem } => {
                let ops = self.pop_n(3);
                let (d, s) = (c(self, dst_mem), c(self, src_mem));
                self.status_libcall(mem.copy, &[d, s, ops[0], ops[1], ops[2]], offset);
            }
            O::MemoryInit { data_index, mem: m } => {
                let ops = self.pop_n(3);
                let (m, d) = (c(self, m), c(self, data_index));
                self.status_libcall(mem.init, &[m, d, ops[0], ops[1], ops[2]], offset);
            }
            O::DataDrop { data_index } => {
                let d = c(self, data_index);
                self.status_libcall(mem.data_drop, &[d], offset);
            }
            _ => return Ok(false),
        }
        Ok(true)
    }
}
