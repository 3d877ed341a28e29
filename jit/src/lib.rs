//! `jit`: vmrun's Cranelift tier, the implementation of `vm::tier::Compiler`.
//!
//! # What it compiles from, and why
//!
//! Each function is compiled from its **wasm operators**, read again from the module's binary with
//! wasmparser (`translate/`), not from the interpreter's bytecode. The bytecode's frames are untyped
//! 8-byte slots, shaped for a dispatch loop (operands fused, values copied into branch targets' slots);
//! compiled from it, every slot would be a memory location or a variable of one width, and Cranelift would
//! have to rediscover types and SSA form. From the operators, as wasmtime's translator does, every value
//! is a typed SSA value and every local a Cranelift `Variable`, so the register allocator sees the real
//! data flow. The cost is a second reader of the binary; validation stays the loader's job (the module was
//! validated before anything is compiled), so the translator trusts types and indices.
//!
//! # Pieces
//!
//! - `lib.rs` (here): [`CraneliftCompiler`], the one `JITModule` behind a mutex (code memory lives as long
//!   as the compiler, which the runtime holds), the ISA flags, and per-signature code cached by signature:
//!   the *array entry* Rust calls compiled code through and the *interpreter stub* compiled code calls a
//!   non-compiled function through (`trampolines.rs`).
//! - `translate/`: one function's operators → Cranelift IR (control stack, value stack, locals,
//!   memory accesses with explicit bounds checks, calls through the instance's entry table, traps as
//!   status returns).
//! - `abi.rs`: the calling convention both share (signatures, value types, slot loads and stores).
//! - `osr.rs` (with `translate/osr.rs`): on-stack-replacement variants, entered from a looping
//!   interpreted frame at a loop header.
//!
//! The conventions (status returns, the entry table, the `VmCtx` fields) are `vm/src/tier.rs`'s.

mod abi;

mod osr;
mod trampolines;
mod translate;

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use cranelift_codegen::ir::UserFuncName;
use cranelift_codegen::settings::{self, Configurable};
use cranelift_codegen::{Context, ir};
use cranelift_frontend::FunctionBuilderContext;
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::Module;
use vm::tier::{CodePtr, CompiledFunc, Compiler, FuncInput, Libcalls, OsrEntry, Unsupported};
use vm::types::RtValType;

/// Bugs planted for the negative controls of the tests (`VMRUN_JIT_DEBUG`), read once per compiler:
/// a test that runs both tiers must fail with each of them.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct InjectedBugs {
    /// `i32-add-is-sub`: `i32.add` compiles to a subtraction.
    pub i32_add_is_sub: bool,
    /// `no-bounds-check`: memory accesses skip the bounds check (an out-of-bounds access then faults).
    pub no_bounds_check: bool,
    /// `no-stack-check`: prologues skip the stack-limit check (deep recursion reaches the guard page).
    pub no_stack_check: bool,
    /// `osr-wrong-local`: an on-stack-replacement entry loads local 0 plus one.
    pub osr_wrong_local: bool,
}

impl InjectedBugs {
    fn from_env() -> InjectedBugs {
        let v = std::env::var("VMRUN_JIT_DEBUG").unwrap_or_default();
        let has = |name: &str| v.split(',').any(|s| s.trim() == name);
        InjectedBugs {
            i32_add_is_sub: has("i32-add-is-sub"),
            no_bounds_check: has("no-bounds-check"),
            no_stack_check: has("no-stack-check"),
            osr_wrong_local: has("osr-wrong-local"),
        }
    }
}

/// A signature as the cache key of trampolines: parameter and result types.
type SigKey = (Vec<RtValType>, Vec<RtValType>);

/// The Cranelift tier. One per runtime; compiles under its mutex (the module and its code memory).
pub struct CraneliftCompiler {
    inner: Mutex<Inner>,
    libcalls: Libcalls,
    bugs: InjectedBugs,
}

struct Inner {
    module: JITModule,
    ctx: Context,
    fctx: FunctionBuilderContext,
    array_entries: HashMap<SigKey, CodePtr>,
    stubs: HashMap<SigKey, CodePtr>,
    /// On-stack-replacement entries by signature (`osr.rs`).
    osr_entries: HashMap<SigKey, CodePtr>,
}

// SAFETY: `JITModule` holds raw pointers to the code memory it owns and is not `Send` for that reason
// alone; every use goes through the mutex, so one thread at a time touches it, and the code memory is
// never freed while the compiler lives.
unsafe impl Send for Inner {}

impl CraneliftCompiler {
    pub fn new() -> Result<CraneliftCompiler, String> {
        let mut flags = settings::builder();
        for (name, value) in [
            ("opt_level", "speed"),
            // Frames are walked by frame pointer (GC roots in compiled frames, next issue steps).
            ("preserve_frame_pointers", "true"),
            ("enable_multi_ret_implicit_sret", "true"),
        ] {
            flags.set(name, value).map_err(|e| format!("cranelift flag {name}: {e}"))?;
        }
        let isa_builder = cranelift_native::builder().map_err(|e| format!("cranelift: {e}"))?;
        let isa = isa_builder.finish(settings::Flags::new(flags)).map_err(|e| format!("cranelift: {e}"))?;
        let module = JITModule::new(JITBuilder::with_isa(isa, cranelift_module::default_libcall_names()));
        let ctx = module.make_context();
        Ok(CraneliftCompiler {
            inner: Mutex::new(Inner {
                module,
                ctx,
                fctx: FunctionBuilderContext::new(),
                array_entries: HashMap::new(),
                stubs: HashMap::new(),
                osr_entries: HashMap::new(),
            }),
            libcalls: vm::libcalls(),
            bugs: InjectedBugs::from_env(),
        })
    }
}

impl Inner {
    fn target(&self) -> abi::Target {
        abi::Target { call_conv: self.module.isa().default_call_conv(), frontend: self.module.target_config() }
    }

    /// Define `ctx.func` as a new function and return its address and code size.
    fn define(&mut self) -> Result<(CodePtr, usize), Unsupported> {
        let sig = self.ctx.func.signature.clone();
        let id =
            self.module.declare_anonymous_function(&sig).map_err(|e| Unsupported::new(format!("cranelift: {e}")))?;
        self.ctx.func.name = UserFuncName::user(0, id.as_u32());
        let r = self.module.define_function(id, &mut self.ctx);
        let size = self.ctx.compiled_code().map_or(0, |c| c.code_buffer().len());
        self.module.clear_context(&mut self.ctx);
        r.map_err(|e| Unsupported::new(format!("cranelift: {e:?}")))?;
        self.module.finalize_definitions().map_err(|e| Unsupported::new(format!("cranelift: {e}")))?;
        Ok((CodePtr(self.module.get_finalized_function(id) as usize), size))
    }

    fn array_entry(&mut self, params: &[RtValType], results: &[RtValType]) -> Result<CodePtr, Unsupported> {
        let key = (params.to_vec(), results.to_vec());
        if let Some(&c) = self.array_entries.get(&key) {
            return Ok(c);
        }
        let target = self.target();
        trampolines::array_entry(&mut self.ctx.func, &mut self.fctx, &target, params, results)?;
        let (code, _) = self.define()?;
        self.array_entries.insert(key, code);
        Ok(code)
    }
}

impl Compiler for CraneliftCompiler {
    fn compile(&self, input: &FuncInput<'_>) -> Result<CompiledFunc, Unsupported> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let (params, results) = input.func_signature(input.func_index);
        let array_entry = inner.array_entry(params, results)?;
        let inner = &mut *inner;
        inner.ctx.func = ir::Function::new();
        let target = inner.target();
        let translated =
            translate::translate(input, &mut inner.ctx.func, &mut inner.fctx, &self.libcalls, &target, self.bugs);
        if let Err(e) = translated {
            // The builder stopped half-way: start the next function from clean contexts.
            inner.ctx.clear();
            inner.fctx = FunctionBuilderContext::new();
            return Err(e);
        }
        let (code, code_bytes) = inner.define()?;
        Ok(CompiledFunc { code, array_entry, code_bytes })
    }

    fn compile_osr(&self, input: &FuncInput<'_>, entry: OsrEntry) -> Result<CompiledFunc, Unsupported> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        osr::compile(&mut inner, input, entry, &self.libcalls, self.bugs)
    }

    fn interpreter_stub(&self, params: &[RtValType], results: &[RtValType]) -> Result<CodePtr, Unsupported> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (params.to_vec(), results.to_vec());
        if let Some(&c) = inner.stubs.get(&key) {
            return Ok(c);
        }
        let inner = &mut *inner;
        let target = inner.target();
        trampolines::interpreter_stub(&mut inner.ctx.func, &mut inner.fctx, &self.libcalls, &target, params, results)?;
        let (code, _) = inner.define()?;
        inner.stubs.insert(key, code);
        Ok(code)
    }
}
