//! Calls: direct (through the instance's entry table, so a callee's tier change is one store),
//! `call_indirect` on any table (a library call that checks the table entry's type and calls it) and
//! `return_call_indirect` (a library call that checks the entry and says which code to call, then a real
//! tail call through it, so tail-recursive loops run in constant stack).

use cranelift_codegen::ir::{InstBuilder, StackSlotData, StackSlotKind, Type, types};
use vm::tier::Unsupported;

use super::FuncTranslator;
use crate::abi::{self, clif_type, load_slot, store_slot, trusted, wasm_signature};

impl FuncTranslator<'_, '_> {
    pub(super) fn call(&mut self, func: u32, offset: u32, tail: bool) -> Result<(), Unsupported> {
        let (params, results) = self.input.func_signature(func);
        let sig = wasm_signature(params, results)?;
        let args = self.pop_n(params.len());
        let sig = self.b.import_signature(sig);
        let entry = (func as i32) * 16;
        let code = self.b.ins().load(types::I64, trusted(), self.entries, entry);
        let ctx = self.b.ins().load(types::I64, trusted(), self.entries, entry + 8);
        let mut call_args = vec![ctx, self.vmctx];
        call_args.extend(args);
        if tail {
            self.b.ins().return_call_indirect(sig, code, &call_args);
            self.reachable = false;
            return Ok(());
        }
        let call = self.b.ins().call_indirect(sig, code, &call_args);
        let rets = self.b.inst_results(call).to_vec();
        self.check_status(rets[0], offset);
        self.stack.extend_from_slice(&rets[1..]);
        Ok(())
    }

    pub(super) fn call_indirect(&mut self, type_index: u32, table: u32, offset: u32) -> Result<(), Unsupported> {
        let (params, results) =
            self.input.type_signature(type_index).ok_or_else(|| Unsupported::new("call_indirect type"))?;
        let result_types: Vec<Type> = results.iter().map(|&t| clif_type(t)).collect::<Result<_, _>>()?;
        for &p in params {
            clif_type(p)?;
        }
        let index = self.pop();
        let args = self.pop_n(params.len());
        let slots = params.len().max(results.len()).max(1);
        let slot = StackSlotData::new(StackSlotKind::ExplicitSlot, (slots * 8) as u32, 3);
        let buffer = self.b.create_sized_stack_slot(slot);
        let buf = self.b.ins().stack_addr(types::I64, buffer, 0);
        for (i, &v) in args.iter().enumerate() {
            store_slot(&mut self.b, v, buf, i);
        }
        let t = self.b.ins().iconst(types::I32, table as i64);
        let ty = self.b.ins().iconst(types::I32, self.input.canonical_type(type_index) as i64);
        let sig = [types::I64, types::I32, types::I32, types::I32, types::I64];
        let call_args = [self.vmctx, t, ty, index, buf];
        let call_conv = self.target.call_conv;
        let status =
            abi::call_libcall(&mut self.b, call_conv, self.libcalls.call_indirect, &sig, &[types::I32], &call_args)[0];
        self.check_status(status, offset);
        for (i, &ty) in result_types.iter().enumerate() {
            let v = load_slot(&mut self.b, ty, buf, i);
            self.push(v);
        }
        Ok(())
    }

    pub(super) fn return_call_indirect(&mut self, type_index: u32, table: u32, offset: u32) -> Result<(), Unsupported> {
        let (params, results) =
            self.input.type_signature(type_index).ok_or_else(|| Unsupported::new("return_call_indirect type"))?;
        let sig = wasm_signature(params, results)?;
        let index = self.pop();
        let args = self.pop_n(params.len());
        let slot = StackSlotData::new(StackSlotKind::ExplicitSlot, 16, 3);
        let entry = self.b.create_sized_stack_slot(slot);
        let out = self.b.ins().stack_addr(types::I64, entry, 0);
        let t = self.b.ins().iconst(types::I32, table as i64);
        let ty = self.b.ins().iconst(types::I32, self.input.canonical_type(type_index) as i64);
        let libcall_sig = [types::I64, types::I32, types::I32, types::I32, types::I64];
        let call_args = [self.vmctx, t, ty, index, out];
        let call_conv = self.target.call_conv;
        let resolve = self.libcalls.resolve_indirect;
        let status = abi::call_libcall(&mut self.b, call_conv, resolve, &libcall_sig, &[types::I32], &call_args)[0];
        self.check_status(status, offset);
        let code = self.b.ins().load(types::I64, trusted(), out, 0);
        let ctx = self.b.ins().load(types::I64, trusted(), out, 8);
        let sig = self.b.import_signature(sig);
        let mut call_args = vec![ctx, self.vmctx];
        call_args.extend(args);
        self.b.ins().return_call_indirect(sig, code, &call_args);
        self.reachable = false;
        Ok(())
    }
}
