//! Per-signature glue between Rust, compiled code and the interpreter.
//!
//! - The **array entry** (`extern "C" fn(code, vmctx, args: *mut u64) -> u32`): how Rust calls compiled
//!   code. Loads the parameters from the interpreter's slots, calls `code` in the compiled convention and
//!   stores the results over the arguments, returning the callee's status.
//! - The **interpreter stub** (compiled convention): what an entry-table slot holds for a function that
//!   is not compiled (or is a host function). Spills its parameters into a stack buffer of slots and calls
//!   the VM's `call` library function with its `callee_ctx`, the store function index.
//! - The **exit trampoline** (one, C convention): how compiled functions call the VM's library
//!   functions. It records its caller's frame pointer and the call's return address in the mutator's
//!   `JitExit` (`VmCtx::jit_exit`) before calling the target, so a collection inside the call can walk
//!   the compiled frames from there (`vm/src/interp/jit_gc.rs`). The stubs record the same themselves.
//! - The **poll trampoline** (Cranelift's `preserve_all` convention, `(vmctx)`): what a loop's safepoint
//!   poll calls when the stop flag is set. It records the exit as the exit trampoline does and calls the
//!   VM's safepoint function. Its convention clobbers no register, so the (cold) call in a hot loop does
//!   not make the register allocator keep the loop's values in callee-saved registers or spill them.

use cranelift_codegen::ir::{self, InstBuilder, StackSlotData, StackSlotKind, types};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use vm::tier::{JitExit, Libcalls, Unsupported, VmCtx};
use vm::types::RtValType;

use crate::abi::{self, Target, clif_type, load_slot, store_slot, wasm_signature};

/// Start `func` as a new function of signature `sig`: a builder positioned in its entry block, and the
/// entry block's parameters (the function's arguments).
pub(crate) fn begin<'b>(
    func: &'b mut ir::Function,
    fctx: &'b mut FunctionBuilderContext,
    sig: ir::Signature,
) -> (FunctionBuilder<'b>, Vec<ir::Value>) {
    *func = ir::Function::with_name_signature(ir::UserFuncName::default(), sig);
    let mut b = FunctionBuilder::new(func, fctx);
    let entry = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    let params = b.block_params(entry).to_vec();
    (b, params)
}

/// Seal and finish a function built with [`begin`].
pub(crate) fn finish(mut b: FunctionBuilder, target: &Target) {
    b.seal_all_blocks();
    b.finalize(target.frontend);
}

pub fn array_entry(
    func: &mut ir::Function,
    fctx: &mut FunctionBuilderContext,
    target: &Target,
    params: &[RtValType],
    results: &[RtValType],
) -> Result<(), Unsupported> {
    entry(func, fctx, target, params, results, false)
}

/// The entry of on-stack-replacement variants (`osr.rs`): the array entry's shape, except that the
/// variant gets the interpreter's slots as its callee context (it loads its locals and stack values from
/// them itself) and zeros for its declared parameters.
pub(crate) fn osr_entry(
    func: &mut ir::Function,
    fctx: &mut FunctionBuilderContext,
    target: &Target,
    params: &[RtValType],
    results: &[RtValType],
) -> Result<(), Unsupported> {
    entry(func, fctx, target, params, results, true)
}

/// `extern "C" fn(code, vmctx, slots) -> u32`: calls `code` in the compiled convention and stores its
/// results over the slots; the parameters come from the slots, or (`osr`) are zeros with the slots
/// passed as the callee context.
fn entry(
    func: &mut ir::Function,
    fctx: &mut FunctionBuilderContext,
    target: &Target,
    params: &[RtValType],
    results: &[RtValType],
    osr: bool,
) -> Result<(), Unsupported> {
    let callee_sig = wasm_signature(params, results)?;
    let param_types: Vec<_> = params.iter().map(|&t| clif_type(t)).collect::<Result<_, _>>()?;
    let sig = abi::native_signature(target.call_conv, &[types::I64; 3], &[types::I32]);
    let (mut b, params) = begin(func, fctx, sig);
    let [code, vmctx, slots] = params.try_into().expect("three parameters");
    let callee_ctx = if osr { slots } else { b.ins().iconst(types::I64, 0) };
    let mut call_args = vec![callee_ctx, vmctx];
    for (i, &t) in param_types.iter().enumerate() {
        let arg = if osr { abi::zero(&mut b, t) } else { load_slot(&mut b, t, slots, i) };
        call_args.push(arg);
    }
    let sig = b.import_signature(callee_sig);
    let call = b.ins().call_indirect(sig, code, &call_args);
    let rets = b.inst_results(call).to_vec();
    for (i, &v) in rets[1..].iter().enumerate() {
        store_slot(&mut b, v, slots, i);
    }
    b.ins().return_(&rets[..1]);
    finish(b, target);
    Ok(())
}

pub fn interpreter_stub(
    func: &mut ir::Function,
    fctx: &mut FunctionBuilderContext,
    libcalls: &Libcalls,
    target: &Target,
    params: &[RtValType],
    results: &[RtValType],
) -> Result<(), Unsupported> {
    let result_types: Vec<_> = results.iter().map(|&t| clif_type(t)).collect::<Result<_, _>>()?;
    let slots = params.len().max(results.len()).max(1);
    let (mut b, values) = begin(func, fctx, wasm_signature(params, results)?);
    let buffer = b.create_sized_stack_slot(StackSlotData::new(StackSlotKind::ExplicitSlot, (slots * 8) as u32, 3));
    let (ctx, vmctx) = (values[0], values[1]);
    let args = b.ins().stack_addr(types::I64, buffer, 0);
    for (i, &v) in values[2..].iter().enumerate() {
        store_slot(&mut b, v, args, i);
    }
    record_exit(&mut b, vmctx);
    // The stub's frame pointer lets a host function see its compiled callers (`Libcalls::call`).
    let fp = b.ins().get_frame_pointer(types::I64);
    let i64s = [types::I64; 4];
    let status =
        abi::call_libcall(&mut b, target.call_conv, libcalls.call, &i64s, &[types::I32], &[vmctx, ctx, args, fp])[0];
    let mut rets = vec![status];
    for (i, &t) in result_types.iter().enumerate() {
        rets.push(load_slot(&mut b, t, args, i));
    }
    // On a trap the loaded results are whatever the buffer held; the caller ignores them.
    b.ins().return_(&rets);
    finish(b, target);
    Ok(())
}

/// Record the calling compiled frame (this function's caller) in the mutator's exit record: its frame
/// pointer (the one this frame saved) and the return address into it.
fn record_exit(b: &mut FunctionBuilder, vmctx: ir::Value) {
    let fp = b.ins().get_frame_pointer(types::I64);
    let caller_fp = b.ins().load(types::I64, abi::trusted(), fp, 0);
    let ra = b.ins().get_return_address(types::I64);
    let cell = b.ins().load(types::I64, abi::trusted(), vmctx, VmCtx::JIT_EXIT);
    b.ins().store(abi::trusted(), caller_fp, cell, JitExit::FP);
    b.ins().store(abi::trusted(), ra, cell, JitExit::PC);
}

/// The poll trampoline (see the module comment): `(vmctx)` in the `preserve_all` convention, which
/// records the exit and calls `safepoint(vmctx)`.
pub fn poll_trampoline(
    func: &mut ir::Function,
    fctx: &mut FunctionBuilderContext,
    target: &Target,
    safepoint: usize,
) -> Result<(), Unsupported> {
    let (mut b, params) = begin(func, fctx, abi::poll_signature());
    let vmctx = params[0];
    record_exit(&mut b, vmctx);
    let sig = b.import_signature(abi::native_signature(target.call_conv, &[types::I64], &[types::I64]));
    let callee = b.ins().iconst(types::I64, safepoint as i64);
    b.ins().call_indirect(sig, callee, &[vmctx]);
    b.ins().return_(&[]);
    finish(b, target);
    Ok(())
}

/// The exit trampoline (see the module comment): `(target, vmctx, a0..a3) -> i64` calls
/// `target(vmctx, a0..a3)` after recording the exit. Library functions take at most four arguments after
/// `vmctx`, all integers, so one signature serves them all (extra arguments are ignored by the C
/// convention).
pub fn exit_trampoline(
    func: &mut ir::Function,
    fctx: &mut FunctionBuilderContext,
    target: &Target,
    args: usize,
) -> Result<(), Unsupported> {
    let (mut b, params) = begin(func, fctx, abi::exit_signature(target.call_conv, args));
    let (callee, vmctx) = (params[0], params[1]);
    record_exit(&mut b, vmctx);
    let sig = b.import_signature(abi::native_signature(target.call_conv, &vec![types::I64; 1 + args], &[types::I64]));
    let call = b.ins().call_indirect(sig, callee, &params[1..]);
    let r = b.inst_results(call)[0];
    b.ins().return_(&[r]);
    finish(b, target);
    Ok(())
}
