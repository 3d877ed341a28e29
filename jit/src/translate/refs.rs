//! Reference instructions: null, function references, `i31`, equality, the extern/any conversions, and
//! casts (`ref.test`, `ref.cast`, `br_on_cast`, `br_on_cast_fail`).
//!
//! References are their 64-bit encoding (`gc::value`: null is 0, an `i31` has its low bit set, a host
//! reference ends in `010`, a function reference in `100`, an object is its 8-aligned header address),
//! so null tests, `ref.eq`, `i31` and the conversions are a few instructions. A cast to a concrete type
//! first compares the object header's type id with the target (the exact type, the common case), and
//! asks the VM (`Libcalls::ref_test`: subtyping, function types, abstract targets) otherwise.

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{BlockArg, InstBuilder, MemFlagsData, Value, types};
use vm::tier::{TrapCode, Unsupported, VmCtx, encode_heap_type};
use vm::types::RtHeapType;
use wasmparser::{HeapType, Operator};

use super::FuncTranslator;
use crate::abi::fixed;

impl FuncTranslator<'_, '_> {
    /// Reference operators; false if `op` is not one.
    pub(super) fn reference_op(&mut self, op: &Operator<'_>, offset: u32) -> Result<bool, Unsupported> {
        use Operator as O;
        match *op {
            O::RefNull { .. } => {
                let v = self.b.ins().iconst(types::I64, 0);
                self.push(v);
            }
            O::RefIsNull => {
                let r = self.pop();
                let c = self.b.ins().icmp_imm_s(IntCC::Equal, r, 0);
                let v = self.b.ins().uextend(types::I32, c);
                self.push(v);
            }
            O::RefAsNonNull => {
                let r = *self.stack.last().expect("validated");
                let c = self.b.ins().icmp_imm_s(IntCC::Equal, r, 0);
                self.trap_if(c, TrapCode::NullReference, offset);
            }
            O::BrOnNull { relative_depth } => {
                let r = self.pop();
                let c = self.b.ins().icmp_imm_s(IntCC::Equal, r, 0);
                self.br_if(c, relative_depth);
                self.push(r);
            }
            O::BrOnNonNull { relative_depth } => {
                let r = *self.stack.last().expect("validated");
                let c = self.b.ins().icmp_imm_s(IntCC::NotEqual, r, 0);
                self.br_if(c, relative_depth);
                self.pop();
            }
            O::RefEq => {
                let b = self.pop();
                let a = self.pop();
                let c = self.b.ins().icmp(IntCC::Equal, a, b);
                let v = self.b.ins().uextend(types::I32, c);
                self.push(v);
            }
            O::RefFunc { function_index } => {
                let funcs = self.b.ins().load(types::I64, fixed(), self.vmctx, VmCtx::FUNCS);
                let store_index = self.b.ins().uload32(fixed(), funcs, (function_index * 4) as i32);
                let shifted = self.b.ins().ishl_imm_u(store_index, 3);
                let v = self.b.ins().bor_imm_u(shifted, 4);
                self.push(v);
            }
            // `ref.i31_shared`: the same unboxed representation.
            O::RefI31 | O::RefI31Shared => {
                let x = self.pop();
                let shifted = self.b.ins().ishl_imm_u(x, 1);
                let tagged = self.b.ins().bor_imm_u(shifted, 1);
                let v = self.b.ins().uextend(types::I64, tagged);
                self.push(v);
            }
            O::I31GetS | O::I31GetU => {
                let r = self.pop();
                let c = self.b.ins().icmp_imm_s(IntCC::Equal, r, 0);
                self.trap_if(c, TrapCode::NullI31Reference, offset);
                let low = self.b.ins().ireduce(types::I32, r);
                let v = if matches!(op, O::I31GetS) {
                    self.b.ins().sshr_imm_u(low, 1)
                } else {
                    self.b.ins().ushr_imm_u(low, 1)
                };
                self.push(v);
            }
            // Identities on the encoding (host values are tagged, objects and i31s keep theirs).
            O::AnyConvertExtern | O::ExternConvertAny => {}
            O::RefTestNonNull { hty } | O::RefTestNullable { hty } => {
                let r = self.pop();
                let m = self.cast_matches(r, matches!(op, O::RefTestNullable { .. }), hty);
                let v = self.b.ins().uextend(types::I32, m);
                self.push(v);
            }
            O::RefCastNonNull { hty } | O::RefCastNullable { hty } => {
                let r = *self.stack.last().expect("validated");
                let m = self.cast_matches(r, matches!(op, O::RefCastNullable { .. }), hty);
                let fail = self.b.ins().icmp_imm_s(IntCC::Equal, m, 0);
                self.trap_if(fail, TrapCode::CastFailure, offset);
            }
            O::BrOnCast { relative_depth, to_ref_type, .. } => {
                let r = *self.stack.last().expect("validated");
                let m = self.cast_matches(r, to_ref_type.is_nullable(), to_ref_type.heap_type());
                self.br_if(m, relative_depth);
            }
            O::BrOnCastFail { relative_depth, to_ref_type, .. } => {
                let r = *self.stack.last().expect("validated");
                let m = self.cast_matches(r, to_ref_type.is_nullable(), to_ref_type.heap_type());
                let fail = self.b.ins().icmp_imm_s(IntCC::Equal, m, 0);
                self.br_if(fail, relative_depth);
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Whether reference `r` matches the cast target (`nullable`, `hty`): an `i8`, 1 or 0.
    fn cast_matches(&mut self, r: Value, nullable: bool, hty: HeapType) -> Value {
        let heap = self.input.heap_type(hty);
        let done = self.b.create_block();
        let result = self.b.append_block_param(done, types::I8);
        let non_null = self.b.create_block();
        let is_null = self.b.ins().icmp_imm_s(IntCC::Equal, r, 0);
        let null_answer = self.b.ins().iconst(types::I8, nullable as i64);
        self.b.ins().brif(is_null, done, &[BlockArg::Value(null_answer)], non_null, &[]);
        self.b.switch_to_block(non_null);
        match heap {
            // Casts stay within a hierarchy (validation): a top type takes every non-null value.
            RtHeapType::Any | RtHeapType::Extern | RtHeapType::Exn => {
                let yes = self.b.ins().iconst(types::I8, 1);
                self.b.ins().jump(done, &[BlockArg::Value(yes)]);
            }
            RtHeapType::Concrete(id) => {
                // An object whose header names exactly the target type matches without asking the VM.
                let slow = self.b.create_block();
                let object = self.b.create_block();
                let tag = self.b.ins().band_imm_u(r, 7);
                let yes = self.b.ins().iconst(types::I8, 1);
                self.b.ins().brif(tag, slow, &[], object, &[]);
                self.b.switch_to_block(object);
                let header_type = self.b.ins().uload32(MemFlagsData::new().with_notrap(), r, 0);
                let exact = self.b.ins().icmp_imm_s(IntCC::Equal, header_type, id as i64);
                self.b.ins().brif(exact, done, &[BlockArg::Value(yes)], slow, &[]);
                self.b.switch_to_block(slow);
                let m = self.ref_test_call(r, heap);
                self.b.ins().jump(done, &[BlockArg::Value(m)]);
            }
            _ => {
                let m = self.ref_test_call(r, heap);
                self.b.ins().jump(done, &[BlockArg::Value(m)]);
            }
        }
        self.b.switch_to_block(done);
        result
    }

    /// The VM's answer for a non-null `r`: an `i8`.
    fn ref_test_call(&mut self, r: Value, heap: RtHeapType) -> Value {
        let code = self.b.ins().iconst(types::I64, encode_heap_type(heap) as i64);
        let non_nullable = self.b.ins().iconst(types::I32, 0);
        let m = self.call_vm(self.libcalls.ref_test, &[r, code, non_nullable], Some(types::I32)).expect("a result");
        self.b.ins().ireduce(types::I8, m)
    }
}
