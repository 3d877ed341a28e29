//! Calls: direct (through the instance's entry table, so a callee's tier change is one store),
//! `call_indirect` and `return_call_indirect` on any table (the element read and checked inline when it
//! names a function of this instance of exactly the expected type, else a library call that checks it
//! and says which code to call; then a direct call through the entry: no argument buffer, and a real tail
//! call, so tail-recursive loops run in constant stack) and `call_ref` (the entry table when the reference names a
//! function of this instance, the VM otherwise).
//!
//! Every call is a safepoint: Cranelift spills the references live across it and records the call's stack
//! map. Reference results are declared as they come back.

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{Block, BlockArg, InstBuilder, SigRef, StackSlotData, StackSlotKind, Value, types};
use vm::tier::{FuncEntry, TrapCode, Unsupported, VmCtx, VmTable};
use vm::types::RtValType;

use super::FuncTranslator;
use crate::abi::{self, clif_type, fixed, load_slot, store_slot, trusted, wasm_signature};

impl FuncTranslator<'_, '_> {
    pub(super) fn call(&mut self, func: u32, offset: u32, tail: bool) -> Result<(), Unsupported> {
        let (params, results) = self.input.func_signature(func);
        let sig = self.b.import_signature(wasm_signature(params, results)?);
        let args = self.pop_n(params.len());
        let entry = self.b.ins().iconst(types::I64, func as i64 * FuncEntry::SIZE);
        let entry = self.b.ins().iadd(self.entries, entry);
        self.call_entry(sig, entry, args, results, offset, tail);
        Ok(())
    }

    /// Call through the [`vm::tier::FuncEntry`] at address `entry`.
    fn call_entry(
        &mut self,
        sig: SigRef,
        entry: Value,
        args: Vec<Value>,
        results: &[RtValType],
        offset: u32,
        tail: bool,
    ) {
        let code = self.b.ins().load(types::I64, trusted(), entry, FuncEntry::CODE);
        let ctx = self.b.ins().load(types::I64, trusted(), entry, FuncEntry::CTX);
        let mut call_args = vec![ctx, self.vmctx];
        call_args.extend(args);
        if tail {
            self.b.ins().return_call_indirect(sig, code, &call_args);
            self.reachable = false;
            return;
        }
        let call = self.b.ins().call_indirect(sig, code, &call_args);
        let rets = self.b.inst_results(call).to_vec();
        self.after_call();
        self.check_status(rets[0], offset);
        self.push_results(&rets[1..], results);
    }

    /// Push call results, declaring the references.
    fn push_results(&mut self, values: &[Value], types: &[RtValType]) {
        for (&v, &t) in values.iter().zip(types) {
            if abi::is_ref(t) && !self.bugs.no_call_result_maps {
                self.declare_ref(v);
            }
            self.push(v);
        }
    }

    /// A stack buffer of 8-byte slots for a call through the VM, holding `args`.
    pub(super) fn slot_buffer(&mut self, args: &[Value], results: usize) -> Value {
        let slots = args.len().max(results).max(1);
        let slot = StackSlotData::new(StackSlotKind::ExplicitSlot, (slots * 8) as u32, 3);
        let buffer = self.b.create_sized_stack_slot(slot);
        let buf = self.b.ins().stack_addr(types::I64, buffer, 0);
        for (i, &v) in args.iter().enumerate() {
            store_slot(&mut self.b, v, buf, i);
        }
        buf
    }

    /// The results a call through the VM left in `buf`.
    fn load_results(&mut self, buf: Value, results: &[RtValType]) -> Result<Vec<Value>, Unsupported> {
        let mut out = Vec::with_capacity(results.len());
        for (i, &t) in results.iter().enumerate() {
            out.push(load_slot(&mut self.b, clif_type(t)?, buf, i));
        }
        Ok(out)
    }

    /// `call_ref` / `return_call_ref` of type `type_index`. A reference to a function of this instance
    /// (defined functions have consecutive store indices from `VmCtx::defined_base`) is called through
    /// the entry table, so tail calls stay tail calls; any other function through the VM's `call`.
    pub(super) fn call_ref(&mut self, type_index: u32, offset: u32, tail: bool) -> Result<(), Unsupported> {
        let (params, results) =
            self.input.type_signature(type_index).ok_or_else(|| Unsupported::new("call_ref type"))?;
        let sig = self.b.import_signature(wasm_signature(params, results)?);
        let callee = self.pop();
        let args = self.pop_n(params.len());
        let is_null = self.b.ins().icmp_imm_s(IntCC::Equal, callee, 0);
        self.trap_if(is_null, TrapCode::NullFunctionReference, offset);
        let store_index = self.b.ins().ushr_imm_u(callee, 3);
        let base = self.b.ins().uload32(fixed(), self.vmctx, VmCtx::DEFINED_BASE);
        let defined = self.b.ins().isub(store_index, base);
        let here = self.b.ins().icmp_imm_s(IntCC::UnsignedLessThan, defined, self.input.num_defined_funcs() as i64);
        let (local, other) = (self.b.create_block(), self.b.create_block());
        self.b.ins().brif(here, local, &[], other, &[]);

        let mut join_types = vec![RtValType::I32];
        join_types.extend_from_slice(results);
        let join = self.block_with_params(&join_types)?;
        self.b.switch_to_block(local);
        let index = self.b.ins().iadd_imm_s(defined, self.input.num_imported_funcs() as i64);
        let entry = self.b.ins().imul_imm_s(index, FuncEntry::SIZE);
        let entry = self.b.ins().iadd(self.entries, entry);
        let code = self.b.ins().load(types::I64, trusted(), entry, FuncEntry::CODE);
        let ctx = self.b.ins().load(types::I64, trusted(), entry, FuncEntry::CTX);
        let mut call_args = vec![ctx, self.vmctx];
        call_args.extend(&args);
        if tail {
            self.b.ins().return_call_indirect(sig, code, &call_args);
        } else {
            let call = self.b.ins().call_indirect(sig, code, &call_args);
            let rets: Vec<BlockArg> = self.b.inst_results(call).iter().map(|&v| BlockArg::Value(v)).collect();
            self.after_call();
            self.b.ins().jump(join, &rets);
        }

        // Another instance's function (or a host function): the VM calls it. Not a tail call: a chain
        // of `return_call_ref`s across instances grows the native stack.
        self.b.switch_to_block(other);
        let buf = self.slot_buffer(&args, results.len());
        let status = self.call_vm(self.libcalls.call, &[store_index, buf], Some(types::I32)).expect("a status");
        let mut rets = vec![BlockArg::Value(status)];
        rets.extend(self.load_results(buf, results)?.into_iter().map(BlockArg::Value));
        self.b.ins().jump(join, &rets);

        self.b.switch_to_block(join);
        let rets = self.b.block_params(join).to_vec();
        self.check_status(rets[0], offset);
        if tail {
            self.return_values(&rets[1..]);
            self.reachable = false;
        } else {
            self.stack.extend_from_slice(&rets[1..]);
        }
        Ok(())
    }

    /// `call_indirect` / `return_call_indirect` of type `type_index` through table `table`. Inline, the
    /// common case: the element (read through the table's `VmTable`, in bounds) names a function of this
    /// instance whose type is exactly the expected one; its entry-table slot is called (so the callee's
    /// tier-up is seen at once). Anything else, traps included, goes to the library call, which checks the
    /// element as the interpreter does (null, bounds, signature with subtyping) and writes the entry to
    /// call (an interpreter stub for another instance's or a host function). Either way one call in the
    /// compiled convention follows (a real tail call for `return_call_indirect`).
    pub(super) fn call_indirect(
        &mut self,
        type_index: u32,
        table: u32,
        offset: u32,
        tail: bool,
    ) -> Result<(), Unsupported> {
        let (params, results) =
            self.input.type_signature(type_index).ok_or_else(|| Unsupported::new("call_indirect type"))?;
        let sig = wasm_signature(params, results)?;
        let index = self.pop();
        let args = self.pop_n(params.len());
        let expected = self.input.canonical_type(type_index);
        let call = self.b.create_block();
        let entry = self.b.append_block_param(call, types::I64);
        let slow = self.cold_block();
        self.inline_indirect_entry(table, index, expected, call, slow);

        self.b.switch_to_block(slow);
        let slot = StackSlotData::new(StackSlotKind::ExplicitSlot, FuncEntry::SIZE as u32, 3);
        let out_slot = self.b.create_sized_stack_slot(slot);
        let out = self.b.ins().stack_addr(types::I64, out_slot, 0);
        let t = self.b.ins().iconst(types::I32, table as i64);
        let ty = self.b.ins().iconst(types::I32, expected as i64);
        let status = self.call_vm(self.libcalls.resolve_indirect, &[t, ty, index, out], Some(types::I32));
        self.check_status(status.expect("a status"), offset);
        self.b.ins().jump(call, &[BlockArg::Value(out)]);

        self.b.switch_to_block(call);
        let sig = self.b.import_signature(sig);
        self.call_entry(sig, entry, args, results, offset, tail);
        Ok(())
    }

    /// The inline lookup of `call_indirect`: jumps to `found` with the address of the callee's
    /// `FuncEntry`, or to `slow`. Three tests, each failing to `slow`: the index is below the table's
    /// length; the element minus this instance's first function reference is below 8 times the number
    /// of defined functions (a null element, another instance's function and a host function all wrap
    /// around above it); the entry's canonical type is `expected`.
    fn inline_indirect_entry(&mut self, table: u32, index: Value, expected: u32, found: Block, slow: Block) {
        let tables = self.b.ins().load(types::I64, fixed(), self.vmctx, VmCtx::TABLES);
        let view = self.b.ins().load(types::I64, fixed(), tables, (table * 8) as i32);
        // The view changes when the table grows (any call may do it): plain loads, redone after calls.
        let base = self.b.ins().load(types::I64, trusted(), view, VmTable::BASE);
        let len = self.b.ins().load(types::I64, trusted(), view, VmTable::LEN);
        let index = self.b.ins().uextend(types::I64, index);
        let in_bounds = self.b.ins().icmp(IntCC::UnsignedLessThan, index, len);
        let read = self.b.create_block();
        self.b.ins().brif(in_bounds, read, &[], slow, &[]);

        self.b.switch_to_block(read);
        let element = self.b.ins().ishl_imm_u(index, 3);
        let element = self.b.ins().iadd(base, element);
        let raw = self.b.ins().load(types::I64, trusted(), element, 0);
        let first = self.b.ins().load(types::I64, fixed(), self.vmctx, VmCtx::DEFINED_FUNC_REF);
        // `8 * defined`: function references step by 8 (`gc::value::from_func`).
        let scaled = self.b.ins().isub(raw, first);
        let defined_refs = self.input.num_defined_funcs() as i64 * 8;
        let here = self.b.ins().icmp_imm_s(IntCC::UnsignedLessThan, scaled, defined_refs);
        let typed = self.b.create_block();
        self.b.ins().brif(here, typed, &[], slow, &[]);

        self.b.switch_to_block(typed);
        let imported = self.input.num_imported_funcs() as i64;
        let entry = self.b.ins().imul_imm_s(scaled, FuncEntry::SIZE / 8);
        let entry = self.b.ins().iadd(self.entries, entry);
        let entry = self.b.ins().iadd_imm_s(entry, imported * FuncEntry::SIZE);
        if self.bugs.indirect_no_signature_check {
            self.b.ins().jump(found, &[BlockArg::Value(entry)]);
            return;
        }
        // Entries never change type (tier-up rewrites the code only), but a plain load: cheap and safe.
        let ty = self.b.ins().load(types::I32, trusted(), entry, FuncEntry::TYPE);
        let matches = self.b.ins().icmp_imm_s(IntCC::Equal, ty, expected as i64);
        self.b.ins().brif(matches, found, &[BlockArg::Value(entry)], slow, &[]);
    }
}
