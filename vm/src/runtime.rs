//! The runtime: what every mutator thread of a program shares.
//!
//! A [`Runtime`] (always behind an `Arc`, `Send + Sync`) owns the garbage-collected heap, the canonical
//! type registry with the validator that hash-conses types across modules, and every loaded module with its
//! translated code. Each thread that runs wasm has its own [`crate::Store`]: a mutator (value stack,
//! native stack, thread cache, allocation state, host roots) plus the entities its instances created. Two
//! stores of one runtime run at the same time on two threads and allocate on the one heap; a collection
//! started by either stops both at safepoints (`gc::World`, see `vm/src/safepoint.rs`).
//!
//! Locks: the validator mutex serializes module loading (and with it every type registration); the module
//! list is read-mostly (`RwLock`). Neither is taken while wasm runs: the interpreter holds an
//! `Arc<ModuleData>` per instance and reads types from the lock-free [`TypeRegistry`].

use std::sync::{Arc, Mutex, PoisonError, RwLock};

use crate::module::{self, ModuleData};
use crate::tier::{Compiler, JitMode, JitStats};
use crate::types::TypeRegistry;
use crate::{Error, FuncType, Source, ValType};

/// Runtime limits and GC policy.
#[derive(Clone, Debug)]
pub struct Config {
    /// Maximum number of nested wasm calls before `call stack exhausted`.
    pub max_call_depth: usize,
    /// Size of the value stack in 8-byte slots.
    pub value_stack_slots: usize,
    /// Size of each mutator's native stack in bytes (host calls and host → wasm nesting run on it).
    pub native_stack_bytes: usize,
    /// Address space reserved per linear memory (its declared maximum, capped at this; `memory.grow` past
    /// it fails). Default: 4 GiB natively, 256 MiB under Valgrind (`memory.rs` says why).
    pub memory_reservation_bytes: u64,
    /// Heap policy and debug modes.
    pub gc: gc::HeapConfig,
    /// The WebAssembly features modules may use: [`crate::module::features`] (everything vmrun runs), or
    /// fewer, e.g. for a proposal's spec tests written before later features made their modules valid.
    /// Function references are always added (`Runtime::new` says why).
    pub features: wasmparser::WasmFeatures,
    /// The compiled tier (`tier.rs`).
    pub jit: JitConfig,
    /// `--race`: detect data races between threads (`race.rs`). Accesses to shared memories are then
    /// translated with the detector's hooks, in both tiers (compiled code calls the same hooks through
    /// `tier::MemLibcalls::race`).
    pub race: bool,
}

/// The compiled tier's settings: which tiers run, when `auto` compiles, and the compiler (`None`: the
/// interpreter only, whatever the mode).
#[derive(Clone)]
pub struct JitConfig {
    pub mode: JitMode,
    /// Calls plus loop back-edges of a function before `auto` compiles it.
    pub threshold: u32,
    pub compiler: Option<Arc<dyn Compiler>>,
    /// Compiled code checks every memory access explicitly, also where a guarded memory's guard region
    /// would catch it (`fault.rs`): for tests of the explicit checks, and for hosts whose own `SIGSEGV`
    /// handling must not be chained. Under Valgrind no memory is guarded, so checks are explicit anyway.
    pub explicit_bounds_checks: bool,
}

impl Default for JitConfig {
    fn default() -> Self {
        JitConfig {
            mode: JitMode::Auto,
            threshold: DEFAULT_JIT_THRESHOLD,
            compiler: None,
            explicit_bounds_checks: false,
        }
    }
}

impl JitConfig {
    /// The mode in effect: `Off` without a compiler.
    pub fn effective_mode(&self) -> JitMode {
        if self.compiler.is_some() { self.mode } else { JitMode::Off }
    }
}

impl std::fmt::Debug for JitConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JitConfig")
            .field("mode", &self.mode)
            .field("threshold", &self.threshold)
            .field("compiler", &self.compiler.is_some())
            .finish()
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_call_depth: 50_000,
            value_stack_slots: 4 << 20,
            native_stack_bytes: crate::native_stack::DEFAULT_BYTES,
            memory_reservation_bytes: crate::memory::default_reserve_bytes(),
            gc: gc::HeapConfig::default(),
            features: module::features(),
            jit: JitConfig::default(),
            race: false,
        }
    }
}

/// Calls of a function before `auto` compiles it.
pub const DEFAULT_JIT_THRESHOLD: u32 = 1000;

/// A loaded module: an index into the runtime's module list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ModuleId(pub(crate) u32);

/// The shared part of a program: heap, types, modules. See the module comment.
pub struct Runtime {
    pub(crate) config: Config,
    pub(crate) heap: gc::Heap,
    pub(crate) types: TypeRegistry,
    validator: Mutex<wasmparser::Validator>,
    modules: RwLock<Vec<Arc<ModuleData>>>,
    /// The alloc/free trace in progress (`Store::trace_allocations` until `finish_trace`): stores made
    /// meanwhile (threads of the program) join it with their own per-thread buffer.
    pub(crate) active_trace: Mutex<Option<Arc<vmtrace::Tracer>>>,
    /// What the compiled tier did (`--jit-stats`).
    pub(crate) jit_stats: JitStats,
    /// Compiled functions by address, for walking compiled frames.
    pub(crate) jit_code: crate::tier::CodeMap,
    /// The race detector, with `Config::race`.
    pub(crate) race: Option<Arc<crate::race::RaceRuntime>>,
    /// Arguments of `vmrun`.`thread_spawn` on their way to their thread (by thread id): roots of every
    /// collection until the new thread has taken its argument into its own store (`threads.rs`).
    pub(crate) handoffs: Mutex<Vec<(u32, u64)>>,
}

const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Runtime>();
};

/// Lock poisoning only records that another thread panicked while holding the lock; the data it guards
/// (the validator, a list of modules) is still consistent, so go on.
fn ignore_poison<G>(r: Result<G, PoisonError<G>>) -> G {
    r.unwrap_or_else(PoisonError::into_inner)
}

impl Runtime {
    pub fn new(config: Config) -> Arc<Runtime> {
        let heap = gc::Heap::new(config.gc.clone());
        // The type registry's ids are wasmparser's canonical type ids, which it makes only when function
        // references (or GC) are on; without them each module would get types of its own and no import of
        // a function could match. Function references add no instructions a smaller set's tests reject.
        let features = config.features | wasmparser::WasmFeatures::FUNCTION_REFERENCES;
        let validator = Mutex::new(wasmparser::Validator::new_with_features(features));
        let race = config.race.then(|| Arc::new(crate::race::RaceRuntime::new()));
        if let Some(race) = &race {
            heap.add_observer(Arc::new(crate::race::RaceObserver { race: race.clone() }));
        }
        Arc::new(Runtime {
            config,
            heap,
            types: TypeRegistry::default(),
            validator,
            modules: RwLock::new(Vec::new()),
            active_trace: Mutex::new(None),
            jit_stats: JitStats::default(),
            jit_code: Default::default(),
            handoffs: Mutex::new(Vec::new()),
            race,
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Heap statistics of every mutator (those of thread caches not yet flushed excepted).
    pub fn heap_stats(&self) -> gc::GcStats {
        self.heap.stats()
    }

    /// What the compiled tier did so far.
    pub fn jit_stats(&self) -> &JitStats {
        &self.jit_stats
    }

    /// Decode, validate and translate a module; its struct and array types are registered with the heap.
    pub fn load_module(&self, source: Source) -> Result<ModuleId, Error> {
        let mut data = self.load(source)?;
        if self.config.jit.effective_mode() == JitMode::Eager {
            self.compile_all(&data);
        }
        let mut modules = ignore_poison(self.modules.write());
        data.index = modules.len() as u32;
        modules.push(Arc::new(data));
        Ok(ModuleId(modules.len() as u32 - 1))
    }

    fn load(&self, source: Source) -> Result<ModuleData, Error> {
        let heap = &self.heap;
        let mut validator = ignore_poison(self.validator.lock());
        module::load(&mut validator, &self.types, source, self.race.is_some(), |id, info| {
            if let Some(layout) = crate::gcglue::layout_of(info) {
                heap.register_type(id, layout);
            }
        })
    }

    /// `--jit=eager`: compile every defined function of a module before it is shared.
    fn compile_all(&self, module: &ModuleData) {
        for index in 0..module.code.len() as u32 {
            crate::interp::compiled_code(self, module, index);
        }
    }

    /// Every module loaded so far.
    pub(crate) fn modules(&self) -> Vec<Arc<ModuleData>> {
        ignore_poison(self.modules.read()).clone()
    }

    pub(crate) fn module(&self, id: ModuleId) -> Arc<ModuleData> {
        ignore_poison(self.modules.read())[id.0 as usize].clone()
    }

    /// The canonical id of a function type made of abstract value types, found by validating a one-type
    /// module with the shared validator.
    pub(crate) fn intern_func_type(&self, ty: &FuncType) -> u32 {
        let mut bytes = b"\0asm\x01\0\0\0".to_vec();
        let mut body = vec![1u8, 0x60];
        for list in [&ty.params, &ty.results] {
            body.push(list.len() as u8);
            for t in list.iter() {
                encode_val_type(*t, &mut body);
            }
        }
        bytes.push(1);
        bytes.push(body.len() as u8);
        bytes.extend_from_slice(&body);
        let m =
            self.load(Source::from_binary("<host>", bytes)).expect("host function types use abstract value types only");
        m.type_ids[0]
    }
}

fn encode_val_type(t: ValType, out: &mut Vec<u8>) {
    use wasmparser::AbstractHeapType as A;
    match t {
        ValType::I32 => out.push(0x7F),
        ValType::I64 => out.push(0x7E),
        ValType::F32 => out.push(0x7D),
        ValType::F64 => out.push(0x7C),
        ValType::V128 => out.push(0x7B),
        ValType::Ref(r) => {
            let shared = matches!(r.heap_type(), wasmparser::HeapType::Abstract { shared: true, .. });
            let code = match r.heap_type() {
                wasmparser::HeapType::Abstract { ty, .. } => match ty {
                    A::Func => 0x70,
                    A::Extern => 0x6F,
                    A::Any => 0x6E,
                    A::Eq => 0x6D,
                    A::I31 => 0x6C,
                    A::Struct => 0x6B,
                    A::Array => 0x6A,
                    A::Exn => 0x69,
                    A::NoFunc => 0x73,
                    A::NoExtern => 0x72,
                    A::None => 0x71,
                    A::NoExn => 0x74,
                    A::Cont | A::NoCont => 0x71,
                },
                _ => 0x6E,
            };
            out.push(if r.is_nullable() { 0x63 } else { 0x64 });
            // Shared-everything threads: `(shared any)` is the abstract type after the 0x65 prefix.
            if shared {
                out.push(0x65);
            }
            out.push(code);
        }
    }
}
