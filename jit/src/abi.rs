//! The calling convention of compiled code (`vm/src/tier.rs` describes it): signatures, value types,
//! and how values sit in the interpreter's 8-byte slots.

use cranelift_codegen::ir::{self, AbiParam, InstBuilder, MemFlagsData, Signature, Type, types};
use cranelift_codegen::isa::CallConv;
use cranelift_frontend::FunctionBuilder;
use vm::tier::Unsupported;
use vm::types::RtValType;

/// What generated code depends on about the host: its C calling convention and pointer width.
#[derive(Clone, Copy)]
pub struct Target {
    pub call_conv: CallConv,
    pub frontend: cranelift_codegen::isa::TargetFrontendConfig,
}

/// Cranelift's type for a wasm value type, if compiled code handles it. A reference is its 64-bit
/// encoding (`gc::value`); the translator declares every reference value as needing a stack map.
pub fn clif_type(t: RtValType) -> Result<Type, Unsupported> {
    Ok(match t {
        RtValType::I32 => types::I32,
        RtValType::I64 | RtValType::Ref { .. } => types::I64,
        RtValType::F32 => types::F32,
        RtValType::F64 => types::F64,
        RtValType::V128 => return Err(Unsupported::new("v128 values")),
    })
}

/// Whether values of `t` are references (may hold a heap object the collector must see).
pub fn is_ref(t: RtValType) -> bool {
    matches!(t, RtValType::Ref { .. })
}

/// The exit trampoline's signature (platform C convention): `(target, vmctx, a0, a1, a2, a3) -> i64`.
/// Every library call goes through it with its arguments widened to 64 bits (unused ones zero); see
/// `trampolines::exit_trampoline`.
pub const EXIT_ARGS: usize = 4;
/// The wide exit trampoline's argument count after `vmctx`, for the few library calls with more.
pub const EXIT_ARGS_WIDE: usize = 7;

/// The exit trampoline's signature with `args` arguments after `vmctx`.
pub fn exit_signature(call_conv: CallConv, args: usize) -> Signature {
    native_signature(call_conv, &vec![types::I64; 2 + args], &[types::I64])
}

/// The poll trampoline's signature: `(vmctx)`, clobbering no register (`trampolines::poll_trampoline`).
pub fn poll_signature() -> Signature {
    let mut sig = Signature::new(CallConv::PreserveAll);
    sig.params.push(AbiParam::new(types::I64));
    sig
}

/// The compiled convention: `(callee_ctx, vmctx, params...) -> (status, results...)`, Cranelift's
/// `tail` convention (so `return_call` is a real tail call).
pub fn wasm_signature(params: &[RtValType], results: &[RtValType]) -> Result<Signature, Unsupported> {
    let mut sig = Signature::new(CallConv::Tail);
    sig.params.push(AbiParam::new(types::I64));
    sig.params.push(AbiParam::new(types::I64));
    for &p in params {
        sig.params.push(AbiParam::new(clif_type(p)?));
    }
    sig.returns.push(AbiParam::new(types::I32));
    for &r in results {
        sig.returns.push(AbiParam::new(clif_type(r)?));
    }
    Ok(sig)
}

/// A signature of the platform's C convention (library calls, the array entry).
pub fn native_signature(call_conv: CallConv, params: &[Type], results: &[Type]) -> Signature {
    let mut sig = Signature::new(call_conv);
    sig.params.extend(params.iter().map(|&t| AbiParam::new(t)));
    sig.returns.extend(results.iter().map(|&t| AbiParam::new(t)));
    sig
}

/// Flags of an access the VM guarantees is in bounds (vmctx fields, slots, stack slots).
pub fn trusted() -> MemFlagsData {
    MemFlagsData::trusted()
}

/// Flags of a trusted load of a word that never changes while compiled code of the instance runs (vmctx
/// fields, the global address table, immutable globals): Cranelift may share it and hoist it out of
/// loops (`can_move`: the address is valid on every path, so moving it above a branch cannot fault).
pub fn fixed() -> MemFlagsData {
    trusted().with_readonly().with_can_move()
}

/// Load a value of type `ty` from the 8-byte slot at `base + 8 * index`.
pub fn load_slot(b: &mut FunctionBuilder, ty: Type, base: ir::Value, index: usize) -> ir::Value {
    b.ins().load(ty, trusted(), base, (index * 8) as i32)
}

/// Store `v` into the 8-byte slot at `base + 8 * index` as the interpreter keeps it: 32-bit values
/// zero-extended (`interp/operands.rs`).
pub fn store_slot(b: &mut FunctionBuilder, v: ir::Value, base: ir::Value, index: usize) {
    let ty = b.func.dfg.value_type(v);
    let wide = match ty {
        types::I32 => b.ins().uextend(types::I64, v),
        types::F32 => {
            let bits = b.ins().bitcast(types::I32, MemFlagsData::new(), v);
            b.ins().uextend(types::I64, bits)
        }
        _ => v,
    };
    b.ins().store(trusted(), wide, base, (index * 8) as i32);
}

/// A zero of type `ty` (results returned alongside a trap status).
pub fn zero(b: &mut FunctionBuilder, ty: Type) -> ir::Value {
    match ty {
        types::F32 => b.ins().f32const(0.0),
        types::F64 => b.ins().f64const(0.0),
        _ => b.ins().iconst(ty, 0),
    }
}

/// Call the library function at `address` (the platform's C convention `call_conv`) with `args`.
pub fn call_libcall(
    b: &mut FunctionBuilder,
    call_conv: CallConv,
    address: usize,
    params: &[Type],
    results: &[Type],
    args: &[ir::Value],
) -> Vec<ir::Value> {
    let sig = b.import_signature(native_signature(call_conv, params, results));
    let callee = b.ins().iconst(types::I64, address as i64);
    let call = b.ins().call_indirect(sig, callee, args);
    b.inst_results(call).to_vec()
}
