//! Inline allocation of small structs and arrays: the heap's fast path (`gc::inline_alloc`, whose module
//! comment numbers the steps) emitted in compiled code, with the library call (`struct_new`, `array_new`)
//! as the slow path.
//!
//! ```text
//!   hooks byte set? ──yes──────────────────────────────┐
//!   span = spans[class]; c = span.alloc_cache           │
//!   c == 0? ──yes──────────────────────────────────────┤ (cold) library call: refill, collect,
//!   index = freeindex + ctz(c); advance freeindex,      │  instrumented path; may collect, so every
//!   alloc_cache, alloc_count                            │  reference live across it is in its stack map
//!   addr = base + index * slot                          │
//!   needzero? zero words 1.. of the slot                │
//!   store the header word                               │
//!   └──────────────── done(obj) ◄───────────────────────┘
//! ```
//!
//! The fast path calls nothing, so it is not a safepoint and needs no stack map; the object it returns is
//! declared a reference like the library call's. It is emitted only when [`vm::tier::FuncInput::inline_alloc`]
//! says no observer wants to see each allocation (decided when the function is compiled: Memcheck under
//! Valgrind, `--trace`, `--race` and `--gc-stress` all turn it off), and the hooks byte is still tested
//! at run time, in case an observer is attached to the heap after the code was made.
//!
//! Planted bugs (`VMRUN_JIT_DEBUG`, for the tests' negative controls): `alloc-no-zero` skips the zeroing,
//! `alloc-no-header` the header store.

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{BlockArg, InstBuilder, InstructionData, Opcode, Value, ValueDef, types};
use vm::tier::{VmCtx, inline_alloc as ia};

use super::FuncTranslator;
use crate::abi::{fixed, trusted};

/// The slot an allocation needs.
#[derive(Clone, Copy)]
pub(super) enum Slot {
    /// Known when compiling (structs, arrays of constant length): size class, slot bytes and header word.
    Fixed { class: usize, slot: usize, header: u64 },
    /// An array of a length only known at run time.
    Array { type_id: u32, elem_size: u32, len: Value },
}

/// Zero stores of a fixed slot up to this size are unrolled; larger slots are zeroed by a loop.
const UNROLL_ZEROING: usize = 128;

impl FuncTranslator<'_, '_> {
    /// The slot of a struct of module type `type_index`, if it can be allocated inline.
    pub(super) fn struct_slot(&self, type_index: u32) -> Option<Slot> {
        let type_id = self.input.canonical_type(type_index);
        let (class, slot) = ia::struct_class(self.input.struct_payload_size(type_index))?;
        Some(Slot::Fixed { class, slot, header: ia::header_word(type_id, 0) })
    }

    /// The slot of an array of module type `type_index` with `len` elements, if it can be allocated
    /// inline (a constant length is resolved now).
    pub(super) fn array_slot(&self, type_index: u32, len: Value) -> Option<Slot> {
        let type_id = self.input.canonical_type(type_index);
        let elem_size = self.input.array_elem(type_index).0.size();
        match self.const_u32(len) {
            Some(n) => {
                let (class, slot) = ia::array_class(elem_size, n)?;
                Some(Slot::Fixed { class, slot, header: ia::header_word(type_id, n) })
            }
            None => Some(Slot::Array { type_id, elem_size, len }),
        }
    }

    /// The value of `v` if it is an `i32` constant.
    fn const_u32(&self, v: Value) -> Option<u32> {
        let dfg = &self.b.func.dfg;
        let ValueDef::Result(inst, _) = dfg.value_def(v) else { return None };
        match dfg.insts[inst] {
            InstructionData::UnaryImm { opcode: Opcode::Iconst, imm } => Some(imm.bits() as u32),
            _ => None,
        }
    }

    /// A new object in `slot`: inline when the function may allocate inline, else (and when the fast path
    /// runs dry) through `slow`, the library call. The result is declared a reference.
    pub(super) fn allocate(&mut self, slot: Option<Slot>, slow: impl FnOnce(&mut Self) -> Value) -> Value {
        let Some(slot) = slot.filter(|_| self.input.inline_alloc) else { return slow(self) };
        let done = self.b.create_block();
        let obj = self.b.append_block_param(done, types::I64);
        let slow_block = self.b.create_block();
        self.b.set_cold_block(slow_block);

        // Step 1: observed allocations take the library call.
        let hooks_addr = self.b.ins().load(types::I64, fixed(), self.vmctx, VmCtx::ALLOC_HOOKS);
        let hooks = self.b.ins().load(types::I8, trusted(), hooks_addr, 0);
        let observed = self.b.ins().icmp_imm_u(IntCC::NotEqual, hooks, 0);
        let lookup = self.b.create_block();
        self.b.ins().brif(observed, slow_block, &[], lookup, &[]);
        self.b.switch_to_block(lookup);

        // Step 2: the cache's current span of the class.
        let spans = self.b.ins().load(types::I64, trusted(), self.vmctx, VmCtx::ALLOC_SPANS);
        let span = match slot {
            Slot::Fixed { class, .. } => self.b.ins().load(types::I64, trusted(), spans, (class * 8) as i32),
            Slot::Array { elem_size, len, .. } => self.array_span(spans, elem_size, len, slow_block),
        };

        // Steps 3 and 4: a free slot from the span's cached bitmap word.
        let cache = self.b.ins().load(types::I64, trusted(), span, ia::SPAN_ALLOC_CACHE);
        let empty = self.b.ins().icmp_imm_u(IntCC::Equal, cache, 0);
        let take = self.b.create_block();
        self.b.ins().brif(empty, slow_block, &[], take, &[]);
        self.b.switch_to_block(take);
        let addr = self.take_slot(span, cache, slot);

        // Steps 6 and 7: zero if the span may hold stale bytes, write the header.
        let zero = self.b.create_block();
        let header = self.b.create_block();
        let needzero = self.b.ins().uload8(types::I32, trusted(), span, ia::SPAN_NEEDZERO);
        self.b.ins().brif(needzero, zero, &[], header, &[]);
        self.b.switch_to_block(zero);
        if !self.bugs.alloc_no_zero {
            self.zero_slot(span, addr, slot);
        }
        self.b.ins().jump(header, &[]);
        self.b.switch_to_block(header);
        if !self.bugs.alloc_no_header {
            let word = match slot {
                Slot::Fixed { header, .. } => self.b.ins().iconst(types::I64, header as i64),
                Slot::Array { type_id, len, .. } => {
                    let len = self.b.ins().uextend(types::I64, len);
                    let high = self.b.ins().ishl_imm_u(len, 32);
                    self.b.ins().bor_imm_u(high, ia::header_word(type_id, 0) as i64)
                }
            };
            self.b.ins().store(super::gc::heap_flags(), word, addr, 0);
        }
        self.b.ins().jump(done, &[BlockArg::Value(addr)]);

        self.b.switch_to_block(slow_block);
        let slow_obj = slow(self);
        self.b.ins().jump(done, &[BlockArg::Value(slow_obj)]);
        self.b.switch_to_block(done);
        self.declare_ref(obj);
        obj
    }

    /// Step 2 for an array of run-time length: its size class from the heap's class table (arrays above
    /// the table's sizes take `slow`), then the cache's span of that class.
    fn array_span(&mut self, spans: Value, elem_size: u32, len: Value, slow: cranelift_codegen::ir::Block) -> Value {
        let len = self.b.ins().uextend(types::I64, len);
        let payload = self.b.ins().imul_imm_s(len, elem_size as i64);
        // Header plus payload, rounded up to 8: (8 + payload + 7) & !7.
        let padded = self.b.ins().iadd_imm_s(payload, 15);
        let bytes = self.b.ins().band_imm_u(padded, -8i64);
        let large = self.b.ins().icmp_imm_u(IntCC::UnsignedGreaterThan, bytes, ia::CLASS_TABLE_MAX_SIZE as i64);
        let small = self.b.create_block();
        self.b.ins().brif(large, slow, &[], small, &[]);
        self.b.switch_to_block(small);
        let table = self.b.ins().iconst(types::I64, ia::class_table_address() as i64);
        let index = self.b.ins().ushr_imm_u(bytes, 3);
        let entry = self.b.ins().iadd(table, index);
        // The table is a static that never changes.
        let class = self.b.ins().uload8(types::I64, fixed(), entry, 0);
        let offset = self.b.ins().ishl_imm_u(class, 3);
        let at = self.b.ins().iadd(spans, offset);
        self.b.ins().load(types::I64, trusted(), at, 0)
    }

    /// Step 4 and 5: take the lowest free slot of the non-empty cached word `cache` of `span`; its address.
    fn take_slot(&mut self, span: Value, cache: Value, slot: Slot) -> Value {
        let tz = self.b.ins().ctz(cache);
        let freeindex = self.b.ins().load(types::I32, trusted(), span, ia::SPAN_FREEINDEX);
        let tz32 = self.b.ins().ireduce(types::I32, tz);
        let index = self.b.ins().iadd(freeindex, tz32);
        let next = self.b.ins().iadd_imm_s(index, 1);
        self.b.ins().store(trusted(), next, span, ia::SPAN_FREEINDEX);
        // Two shifts: `tz` may be 63, and a shift by 64 would be one by 0.
        let shifted = self.b.ins().ushr(cache, tz);
        let rest = self.b.ins().ushr_imm_u(shifted, 1);
        self.b.ins().store(trusted(), rest, span, ia::SPAN_ALLOC_CACHE);
        let count = self.b.ins().load(types::I32, trusted(), span, ia::SPAN_ALLOC_COUNT);
        let count = self.b.ins().iadd_imm_s(count, 1);
        self.b.ins().store(trusted(), count, span, ia::SPAN_ALLOC_COUNT);
        let base = self.b.ins().load(types::I64, trusted(), span, ia::SPAN_BASE);
        let index = self.b.ins().uextend(types::I64, index);
        let offset = match slot {
            Slot::Fixed { slot, .. } => self.b.ins().imul_imm_s(index, slot as i64),
            Slot::Array { .. } => {
                let slot = self.b.ins().load(types::I64, trusted(), span, ia::SPAN_ELEM_SIZE);
                self.b.ins().imul(index, slot)
            }
        };
        self.b.ins().iadd(base, offset)
    }

    /// Step 6: zero the slot's words after the header.
    fn zero_slot(&mut self, span: Value, addr: Value, slot: Slot) {
        let flags = super::gc::heap_flags();
        let zero = self.b.ins().iconst(types::I64, 0);
        if let Slot::Fixed { slot, .. } = slot
            && slot <= UNROLL_ZEROING
        {
            for at in (8..slot).step_by(8) {
                self.b.ins().store(flags, zero, addr, at as i32);
            }
            return;
        }
        let bytes = match slot {
            Slot::Fixed { slot, .. } => self.b.ins().iconst(types::I64, slot as i64),
            Slot::Array { .. } => self.b.ins().load(types::I64, trusted(), span, ia::SPAN_ELEM_SIZE),
        };
        let end = self.b.ins().iadd(addr, bytes);
        let first = self.b.ins().iadd_imm_s(addr, 8);
        let header = self.b.create_block();
        let body = self.b.create_block();
        let exit = self.b.create_block();
        let p = self.b.append_block_param(header, types::I64);
        self.b.ins().jump(header, &[BlockArg::Value(first)]);
        self.b.switch_to_block(header);
        let more = self.b.ins().icmp(IntCC::UnsignedLessThan, p, end);
        self.b.ins().brif(more, body, &[], exit, &[]);
        self.b.switch_to_block(body);
        self.b.ins().store(flags, zero, p, 0);
        let next = self.b.ins().iadd_imm_s(p, 8);
        self.b.ins().jump(header, &[BlockArg::Value(next)]);
        self.b.switch_to_block(exit);
    }
}
