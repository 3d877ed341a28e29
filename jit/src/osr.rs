//! On-stack replacement, the compiler's side (`vm/src/interp/osr.rs` is the interpreter's, `tier.rs`'s
//! `Compiler::compile_osr` the contract).
//!
//! An OSR variant is the function translated again (`translate/osr.rs`) with the signature of the
//! function itself, so the rest of the body compiles exactly as in the normal code; only its entry
//! differs: `callee_ctx` carries the address of the interpreted frame's slots, the parameters are ignored
//! (they are locals, read from the slots like the others). The *OSR entry* here is the matching array
//! entry, `extern "C" fn(code, vmctx, slots) -> u32`: it calls `code` with `callee_ctx = slots` and zeros
//! for the parameters, and stores the results over the slots, at the frame base, where the interpreter's
//! callers read a returning frame's results (built by `trampolines::osr_entry`, with the array entry's
//! code). One per signature, cached like the array entries.

use cranelift_codegen::ir;
use cranelift_frontend::FunctionBuilderContext;
use vm::tier::{CodePtr, CompiledFunc, FuncInput, Libcalls, OsrEntry, Unsupported};
use vm::types::RtValType;

use crate::{InjectedBugs, Inner};

/// Compile the OSR variant of `input`'s function for the loop `entry` names.
pub(crate) fn compile(
    inner: &mut Inner,
    input: &FuncInput<'_>,
    entry: OsrEntry,
    libcalls: &Libcalls,
    bugs: InjectedBugs,
    srclocs: &mut Vec<(u32, u32, u32)>,
) -> Result<CompiledFunc, Unsupported> {
    let (params, results) = input.func_signature(input.func_index);
    let array_entry = osr_entry(inner, params, results)?;
    let exits = inner.exit_trampolines(libcalls)?;
    inner.ctx.func = ir::Function::new();
    let target = inner.target();
    let vm = crate::translate::VmCalls { libcalls, exits };
    let translated =
        crate::translate::osr::translate_osr(input, &mut inner.ctx.func, &mut inner.fctx, &vm, &target, bugs, entry);
    if let Err(e) = translated {
        // The builder stopped half-way: start the next function from clean contexts.
        inner.ctx.clear();
        inner.fctx = FunctionBuilderContext::new();
        return Err(e);
    }
    let (code, code_bytes, stack_maps) = inner.define(&format!("{}@osr", crate::wasm_name(input)), Some(srclocs))?;
    Ok(CompiledFunc { code, array_entry, code_bytes, stack_maps })
}

/// The OSR entry for a signature (cached).
fn osr_entry(inner: &mut Inner, params: &[RtValType], results: &[RtValType]) -> Result<CodePtr, Unsupported> {
    let key = (params.to_vec(), results.to_vec());
    if let Some(&c) = inner.osr_entries.get(&key) {
        return Ok(c);
    }
    let target = inner.target();
    crate::trampolines::osr_entry(&mut inner.ctx.func, &mut inner.fctx, &target, params, results)?;
    let (code, _, _) = inner.define("osr_entry", None)?;
    inner.osr_entries.insert(key, code);
    Ok(code)
}
