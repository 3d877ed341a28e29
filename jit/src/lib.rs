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
//!   memory accesses with explicit bounds checks or, natively, guard regions, calls through the
//!   instance's entry table, traps as status returns).
//! - `abi.rs`: the calling convention both share (signatures, value types, slot loads and stores).
//! - A map from code address to each compiled function's wasm offsets (Cranelift's source locations), so
//!   a race hook or a guarded memory's fault can report a backtrace by walking frame pointers through
//!   compiled frames without unwinding them ([`Compiler::caller_frames`], [`Compiler::fault_frames`]).
//!   Every function's heap-trap sites go to `vm`'s fault registry (`vm/src/fault.rs`).
//! - `osr.rs` (with `translate/osr.rs`): on-stack-replacement variants, entered from a looping
//!   interpreted frame at a loop header.
//!
//! The conventions (status returns, the entry table, the `VmCtx` fields) are `vm/src/tier.rs`'s.

mod abi;

mod osr;
mod trampolines;
mod translate;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, PoisonError, RwLock};

use cranelift_codegen::ir::UserFuncName;
use cranelift_codegen::settings::{self, Configurable};
use cranelift_codegen::{Context, ir};
use cranelift_frontend::FunctionBuilderContext;
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::Module;
use vm::tier::{CodePtr, CompiledFunc, Compiler, FuncInput, Libcalls, OsrEntry, StackMap, Unsupported};
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
    /// `no-call-result-maps`: references returned by calls are not declared for stack maps, so a
    /// collection during a later call frees what only such a value holds.
    pub no_call_result_maps: bool,
    /// `no-bounds-check-memory-n`: accesses to memories other than 0 skip the bounds check.
    pub no_bounds_check_memory_n: bool,
    /// `rmw-not-atomic`: atomic read-modify-writes compile to a load, the operation and a store.
    pub rmw_not_atomic: bool,
    /// `race-skip-store-hook`: with `--race`, plain stores do not call the race hook.
    pub race_skip_store_hook: bool,
    /// `race-skip-object-hook`: with `--race`, plain accesses to fields and elements of shared objects, and
    /// to shared globals, do not call the race hook.
    pub race_skip_object_hook: bool,
    /// `memory-n-is-memory-0`: every memory's accesses go to memory 0 (its base, its length).
    pub memory_n_is_memory_0: bool,
    /// `no-atomic-alignment-check`: atomic accesses skip the alignment check.
    pub no_atomic_alignment_check: bool,
    /// `osr-wrong-local`: an on-stack-replacement entry loads local 0 plus one.
    pub osr_wrong_local: bool,
    /// `stale-memory-length`: memory 0's length is not reloaded after calls, so a `memory.grow` behind a
    /// call is not seen by the caller's bounds checks.
    pub stale_memory_length: bool,
    /// `delegate-skips-a-level`: a legacy `delegate` also skips the handlers of the block its label
    /// names (the exception goes one handler further out than it should).
    pub delegate_skips_a_level: bool,
    /// `no-caught-exn-maps`: a caught exception is not declared for stack maps, so a collection during a
    /// call in the catch arm frees it before `rethrow` (or a `catch_ref` label) uses it.
    pub no_caught_exn_maps: bool,
    /// `guard-any-offset`: accesses of guarded memories make no bounds check whatever their static offset,
    /// so one whose offset passes the guard region reaches past the memory's mapping.
    pub guard_any_offset: bool,
    /// `indirect-no-signature-check`: the inline `call_indirect` lookup calls a function of the instance
    /// without comparing its type with the expected one.
    pub indirect_no_signature_check: bool,
    /// `alloc-no-zero`: inline allocation does not zero a reused slot (stale bytes show in new objects).
    pub alloc_no_zero: bool,
    /// `alloc-no-header`: inline allocation does not write the object header.
    pub alloc_no_header: bool,
}

impl InjectedBugs {
    fn from_env() -> InjectedBugs {
        InjectedBugs::parse(&std::env::var("VMRUN_JIT_DEBUG").unwrap_or_default())
    }

    /// The bugs named in a comma-separated list.
    fn parse(v: &str) -> InjectedBugs {
        let has = |name: &str| v.split(',').any(|s| s.trim() == name);
        InjectedBugs {
            i32_add_is_sub: has("i32-add-is-sub"),
            no_bounds_check: has("no-bounds-check"),
            no_stack_check: has("no-stack-check"),
            no_call_result_maps: has("no-call-result-maps"),
            no_bounds_check_memory_n: has("no-bounds-check-memory-n"),
            rmw_not_atomic: has("rmw-not-atomic"),
            race_skip_store_hook: has("race-skip-store-hook"),
            race_skip_object_hook: has("race-skip-object-hook"),
            memory_n_is_memory_0: has("memory-n-is-memory-0"),
            no_atomic_alignment_check: has("no-atomic-alignment-check"),
            osr_wrong_local: has("osr-wrong-local"),
            stale_memory_length: has("stale-memory-length"),
            guard_any_offset: has("guard-any-offset"),
            delegate_skips_a_level: has("delegate-skips-a-level"),
            no_caught_exn_maps: has("no-caught-exn-maps"),
            indirect_no_signature_check: has("indirect-no-signature-check"),
            alloc_no_zero: has("alloc-no-zero"),
            alloc_no_header: has("alloc-no-header"),
        }
    }
}

/// `VMRUN_JIT_DUMP=1`: every function compiled is printed to stderr, as optimized Cranelift IR and as
/// machine code (for reading what the tier makes of a hot loop).
fn dump_requested() -> bool {
    static DUMP: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *DUMP.get_or_init(|| std::env::var_os("VMRUN_JIT_DUMP").is_some_and(|v| v == "1"))
}

/// A signature as the cache key of trampolines: parameter and result types.
type SigKey = (Vec<RtValType>, Vec<RtValType>);

/// The Cranelift tier. One per runtime; compiles under its mutex (the module and its code memory).
pub struct CraneliftCompiler {
    inner: Mutex<Inner>,
    libcalls: Libcalls,
    bugs: InjectedBugs,
    /// `VMRUN_JIT_INTERPRET=prefix`: functions whose name starts with it stay interpreted, so tests can
    /// mix the tiers in one program deterministically.
    interpret_prefix: Option<String>,
    /// Each compiled function by code address, to walk compiled frames ([`Compiler::caller_frames`],
    /// [`Compiler::fault_frames`]).
    frames: RwLock<BTreeMap<usize, FrameInfo>>,
}

/// A compiled function as a frame walk sees it.
struct FrameInfo {
    len: usize,
    module: u32,
    func: u32,
    /// `(start, end, wasm offset)` of each code range, sorted (Cranelift's source locations).
    srclocs: Vec<(u32, u32, u32)>,
}

impl FrameInfo {
    /// The wasm offset of the operator whose code holds byte `at` (of the function).
    fn offset_at(&self, at: u32) -> u32 {
        let i = self.srclocs.partition_point(|&(_, end, _)| end <= at);
        self.srclocs.get(i).filter(|&&(start, _, _)| start <= at).map_or(0, |&(_, _, off)| off)
    }
}

struct Inner {
    /// Taken only by the compiler's drop, which frees its code memory.
    module: std::mem::ManuallyDrop<JITModule>,
    /// Every piece of code defined (address, bytes), for Valgrind when the memory is freed.
    code_ranges: Vec<(usize, usize)>,
    ctx: Context,
    fctx: FunctionBuilderContext,
    array_entries: HashMap<SigKey, CodePtr>,
    stubs: HashMap<SigKey, CodePtr>,
    /// The exit trampolines (four and seven arguments after `vmctx`), compiled with the first function.
    exit: Option<translate::Exits>,
    /// On-stack-replacement entries by signature (`osr.rs`).
    osr_entries: HashMap<SigKey, CodePtr>,
    /// Functions declared so far: the number that makes each declared name unique.
    declared: u64,
}

// SAFETY: `JITModule` holds raw pointers to the code memory it owns and is not `Send` for that reason
// alone; every use goes through the mutex, so one thread at a time touches it, and the code memory is
// never freed while the compiler lives.
unsafe impl Send for Inner {}

/// The compiler's code memory is freed with it. Valgrind is told first (`DISCARD_TRANSLATIONS` for every
/// function, trampoline and stub), so code later written at the same addresses is translated afresh
/// rather than run from a stale translation.
impl Drop for CraneliftCompiler {
    fn drop(&mut self) {
        let inner = self.inner.get_mut().unwrap_or_else(PoisonError::into_inner);
        // Valgrind also drops translations of memory that is unmapped, which is how cranelift-jit frees
        // today; the request keeps this right for a memory provider that reuses pages instead.
        for &(at, len) in &inner.code_ranges {
            vm::tier::unregister_guarded_code(at);
            valgrind_bridge::discard_translations(at as *const u8, len);
        }
        // SAFETY: the module is taken once, here, and `inner` is not used after. Compiled code runs only
        // in stores of a runtime whose configuration holds this compiler (an `Arc`), and every address the
        // runtime keeps (entry tables, the code map, modules' compiled functions) is owned by that runtime:
        // the last owner is gone, so nothing can call into or return to this memory any more.
        unsafe { std::mem::ManuallyDrop::take(&mut inner.module).free_memory() };
    }
}

impl CraneliftCompiler {
    /// Records where compiled function `input.func_index` is, for the frame-pointer walks of race reports
    /// and memory faults.
    fn add_frame_info(&self, input: &FuncInput<'_>, code: CodePtr, len: usize, srclocs: Vec<(u32, u32, u32)>) {
        let info = FrameInfo { len, module: input.module_index(), func: input.func_index, srclocs };
        self.frames.write().unwrap_or_else(PoisonError::into_inner).insert(code.0, info);
    }

    /// The compiler, with the planted bugs `VMRUN_JIT_DEBUG` names (none normally).
    pub fn new() -> Result<CraneliftCompiler, String> {
        let mut c = CraneliftCompiler::new_clean()?;
        c.bugs = InjectedBugs::from_env();
        Ok(c)
    }

    /// A compiler with the planted bugs named in `bugs` (the `VMRUN_JIT_DEBUG` syntax), for in-process
    /// negative controls (the spec tests), whatever the environment says.
    pub fn with_planted_bugs(bugs: &str) -> Result<CraneliftCompiler, String> {
        let mut c = CraneliftCompiler::new_clean()?;
        c.bugs = InjectedBugs::parse(bugs);
        Ok(c)
    }

    fn new_clean() -> Result<CraneliftCompiler, String> {
        let mut flags = settings::builder();
        for (name, value) in [
            ("opt_level", "speed"),
            // Frames are walked by frame pointer (GC roots in compiled frames, next issue steps).
            ("preserve_frame_pointers", "true"),
            ("enable_multi_ret_implicit_sret", "true"),
            // The IR verifier costs compile time on every function; debug builds (and their tests) keep it.
            ("enable_verifier", if cfg!(debug_assertions) { "true" } else { "false" }),
        ] {
            flags.set(name, value).map_err(|e| format!("cranelift flag {name}: {e}"))?;
        }
        let isa_builder = cranelift_native::builder().map_err(|e| format!("cranelift: {e}"))?;
        let isa = isa_builder.finish(settings::Flags::new(flags)).map_err(|e| format!("cranelift: {e}"))?;
        let module = JITModule::new(JITBuilder::with_isa(isa, cranelift_module::default_libcall_names()));
        let ctx = module.make_context();
        Ok(CraneliftCompiler {
            inner: Mutex::new(Inner {
                module: std::mem::ManuallyDrop::new(module),
                code_ranges: Vec::new(),
                ctx,
                fctx: FunctionBuilderContext::new(),
                array_entries: HashMap::new(),
                stubs: HashMap::new(),
                exit: None,
                osr_entries: HashMap::new(),
                declared: 0,
            }),
            libcalls: vm::libcalls(),
            bugs: InjectedBugs::default(),
            interpret_prefix: std::env::var("VMRUN_JIT_INTERPRET").ok().filter(|p| !p.is_empty()),
            frames: RwLock::new(BTreeMap::new()),
        })
    }
}

impl Inner {
    fn target(&self) -> abi::Target {
        abi::Target { call_conv: self.module.isa().default_call_conv(), frontend: self.module.target_config() }
    }

    /// Define `ctx.func` as a new function and return its address, code size and stack maps, and with
    /// `srclocs` the source locations of its code (see [`FrameInfo`]). `name` (made unique with a
    /// number) is what `perf` shows for the code (cranelift-jit writes `/tmp/perf-PID.map` under `perf
    /// record`) and what `VMRUN_JIT_DUMP` prints above it.
    fn define(
        &mut self,
        name: &str,
        srclocs: Option<&mut Vec<(u32, u32, u32)>>,
    ) -> Result<(CodePtr, usize, Box<[StackMap]>), Unsupported> {
        let sig = self.ctx.func.signature.clone();
        let name = format!("{name}#{}", self.declared);
        self.declared += 1;
        let id = self
            .module
            .declare_function(&name, cranelift_module::Linkage::Local, &sig)
            .map_err(|e| Unsupported::new(format!("cranelift: {e}")))?;
        self.ctx.func.name = UserFuncName::user(0, id.as_u32());
        let dump = dump_requested();
        if dump {
            self.ctx.set_disasm(true);
            eprintln!("; {name}");
        }
        let r = self.module.define_function(id, &mut self.ctx);
        if dump && let Some(code) = self.ctx.compiled_code() {
            eprintln!("{}\n{}", self.ctx.func.display(), code.vcode.as_deref().unwrap_or(""));
        }
        let (size, maps) = match self.ctx.compiled_code() {
            Some(c) => (c.code_buffer().len(), stack_maps(c.buffer.user_stack_maps())),
            None => (0, Box::default()),
        };
        if let (Some(out), Some(code)) = (srclocs, self.ctx.compiled_code()) {
            let locs = code.buffer.get_srclocs_sorted().iter().filter(|l| !l.loc.is_default());
            out.extend(locs.map(|l| (l.start, l.end, l.loc.bits())));
        }
        let heap_traps: Vec<u32> = match self.ctx.compiled_code() {
            Some(c) => c
                .buffer
                .traps()
                .iter()
                .filter(|t| t.code == ir::TrapCode::HEAP_OUT_OF_BOUNDS)
                .map(|t| t.offset)
                .collect(),
            None => Vec::new(),
        };
        self.module.clear_context(&mut self.ctx);
        r.map_err(|e| Unsupported::new(format!("cranelift: {e:?}")))?;
        self.module.finalize_definitions().map_err(|e| Unsupported::new(format!("cranelift: {e}")))?;
        let code = self.module.get_finalized_function(id) as usize;
        self.code_ranges.push((code, size));
        // Accesses of guarded memories without an explicit check (`translate/multimem.rs`): a fault there
        // is the access's trap (`vm/src/fault.rs`).
        vm::tier::register_guarded_code(code, size, heap_traps);
        Ok((CodePtr(code), size, maps))
    }

    /// The trampolines through which compiled code calls the VM, made on first use.
    pub(crate) fn exit_trampolines(&mut self, libcalls: &Libcalls) -> Result<translate::Exits, Unsupported> {
        if let Some(c) = self.exit {
            return Ok(c);
        }
        let target = self.target();
        trampolines::exit_trampoline(&mut self.ctx.func, &mut self.fctx, &target, abi::EXIT_ARGS)?;
        let (narrow, _, _) = self.define("exit", None)?;
        trampolines::exit_trampoline(&mut self.ctx.func, &mut self.fctx, &target, abi::EXIT_ARGS_WIDE)?;
        let (wide, _, _) = self.define("exit_wide", None)?;
        trampolines::poll_trampoline(&mut self.ctx.func, &mut self.fctx, &target, libcalls.safepoint)?;
        let (poll, _, _) = self.define("poll", None)?;
        let exits = translate::Exits { narrow: narrow.0, wide: wide.0, poll: poll.0 };
        self.exit = Some(exits);
        Ok(exits)
    }

    fn array_entry(&mut self, params: &[RtValType], results: &[RtValType]) -> Result<CodePtr, Unsupported> {
        let key = (params.to_vec(), results.to_vec());
        if let Some(&c) = self.array_entries.get(&key) {
            return Ok(c);
        }
        let target = self.target();
        trampolines::array_entry(&mut self.ctx.func, &mut self.fctx, &target, params, results)?;
        let (code, _, _) = self.define("array_entry", None)?;
        self.array_entries.insert(key, code);
        Ok(code)
    }
}

impl Compiler for CraneliftCompiler {
    fn compile(&self, input: &FuncInput<'_>) -> Result<CompiledFunc, Unsupported> {
        if let Some(prefix) = &self.interpret_prefix
            && input.func_name().is_some_and(|n| n.starts_with(prefix.as_str()))
        {
            return Err(Unsupported::new("kept interpreted by VMRUN_JIT_INTERPRET"));
        }
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let (params, results) = input.func_signature(input.func_index);
        let array_entry = inner.array_entry(params, results)?;
        let exits = inner.exit_trampolines(&self.libcalls)?;
        let inner = &mut *inner;
        inner.ctx.func = ir::Function::new();
        let target = inner.target();
        let vm = translate::VmCalls { libcalls: &self.libcalls, exits };
        let translated = translate::translate(input, &mut inner.ctx.func, &mut inner.fctx, &vm, &target, self.bugs);
        if let Err(e) = translated {
            // The builder stopped half-way: start the next function from clean contexts.
            inner.ctx.clear();
            inner.fctx = FunctionBuilderContext::new();
            return Err(e);
        }
        let mut srclocs = Vec::new();
        let (code, code_bytes, stack_maps) = inner.define(&wasm_name(input), Some(&mut srclocs))?;
        self.add_frame_info(input, code, code_bytes, srclocs);
        Ok(CompiledFunc { code, array_entry, code_bytes, stack_maps })
    }

    fn compile_osr(&self, input: &FuncInput<'_>, entry: OsrEntry) -> Result<CompiledFunc, Unsupported> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let mut srclocs = Vec::new();
        let compiled = osr::compile(&mut inner, input, entry, &self.libcalls, self.bugs, &mut srclocs)?;
        self.add_frame_info(input, compiled.code, compiled.code_bytes, srclocs);
        Ok(compiled)
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
        let (code, _, _) = inner.define("interpreter_stub", None)?;
        inner.stubs.insert(key, code);
        Ok(code)
    }

    unsafe fn fault_frames(&self, pc: usize, fp: usize) -> Vec<(u32, u32, u32)> {
        let frames = self.frames.read().unwrap_or_else(PoisonError::into_inner);
        let at = frames.range(..=pc).next_back().filter(|(start, info)| pc - **start < info.len);
        let Some((&start, info)) = at else { return Vec::new() };
        let mut out = vec![(info.module, info.func, info.offset_at((pc - start) as u32))];
        drop(frames);
        // SAFETY: the caller guarantees `fp` is the frame pointer of the live compiled frame holding `pc`.
        out.extend(unsafe { self.caller_frames(fp) });
        out
    }

    /// Walks the frame-pointer chain: every compiled frame starts with `push rbp; mov rbp, rsp`
    /// (`preserve_frame_pointers`), so `[fp]` is the caller's frame pointer and `[fp + 8]` the return
    /// address into the caller, whose operator is the one whose code holds the byte before it.
    unsafe fn caller_frames(&self, fp: usize) -> Vec<(u32, u32, u32)> {
        let frames = self.frames.read().unwrap_or_else(PoisonError::into_inner);
        let mut out = Vec::new();
        let mut fp = fp;
        while fp != 0 {
            // SAFETY: the caller guarantees `fp` is a live compiled frame's frame pointer, and each next one
            // is read only after the return address showed the caller is compiled code too (so it also
            // saved its frame pointer); the words are on this thread's stack, above the current frame.
            let (next, ra) = unsafe { (*(fp as *const usize), *((fp + 8) as *const usize)) };
            let Some(frame) = frame_at(&frames, ra) else { break };
            out.push(frame);
            if next <= fp {
                break;
            }
            fp = next;
        }
        out
    }

    fn frame_of_return(&self, ra: usize) -> Option<(u32, u32, u32)> {
        frame_at(&self.frames.read().unwrap_or_else(PoisonError::into_inner), ra)
    }
}

/// The wasm frame of the call whose return address is `ra`, if `ra` is in a compiled function of `frames`.
fn frame_at(frames: &BTreeMap<usize, FrameInfo>, ra: usize) -> Option<(u32, u32, u32)> {
    let (&start, info) = frames.range(..ra).next_back()?;
    (ra - start <= info.len).then(|| (info.module, info.func, info.offset_at((ra - 1 - start) as u32)))
}

/// A compiled function's name for profilers: the wasm function's, else its index.
pub(crate) fn wasm_name(input: &FuncInput<'_>) -> String {
    match input.func_name() {
        Some(n) => format!("wasm[{}]::{n}", input.module_index()),
        None => format!("wasm[{}]::func[{}]", input.module_index(), input.func_index),
    }
}

/// The VM's stack maps from Cranelift's: `(return-address offset, frame span, map)`, sorted by offset.
fn stack_maps(maps: &[(u32, u32, ir::UserStackMap)]) -> Box<[StackMap]> {
    let mut out: Vec<StackMap> = maps
        .iter()
        .map(|(ret_offset, span, map)| StackMap {
            ret_offset: *ret_offset,
            span: *span,
            slots: map
                .entries()
                .map(|(ty, offset)| {
                    debug_assert_eq!(ty, ir::types::I64, "references are 64-bit");
                    offset
                })
                .collect(),
        })
        .collect();
    out.sort_by_key(|m| m.ret_offset);
    out.into()
}
