//! The compiled tier's interface: what `vm` asks of a compiler, and the data compiled code reads.
//!
//! `vm` does not depend on Cranelift. It owns this interface and the `jit` crate implements it, as
//! wasmtime's runtime owns `VMContext` and its compiler fills it in. A [`Compiler`] sits in the
//! [`crate::Config`] (`Option<Arc<dyn Compiler>>`) with a [`JitMode`]; with no compiler or `Off`, nothing
//! here runs and the interpreter is the only tier.
//!
//! # What a compiled function is
//!
//! A compiled function is machine code for one defined function of a module, shared by every instance of
//! the module (in every store): everything instance-specific is reached through the [`VmCtx`] it gets as
//! an argument. Its calling convention (the compiler's choice of native convention, Cranelift's `tail`)
//! takes `(callee_ctx: i64, vmctx: *mut VmCtx, params...)` and returns `(status: i32, results...)`:
//!
//! - **`callee_ctx`** is the second word of the [`FuncEntry`] the caller called through: ignored by
//!   compiled functions; for a function that is not compiled, the entry's code is the signature's
//!   *interpreter stub* and `callee_ctx` is the store function index it passes to [`Libcalls::call`].
//! - **`status`** is 0 on return and 1 when a trap unwinds: the trap is recorded in the store (the
//!   mutator's pending trap) and every compiled frame it passes on the way out adds its wasm frame with
//!   [`Libcalls::unwind`] and returns 1 itself, down to the entry. No longjmp and no signal handler: the
//!   path is ordinary returns, so Rust frames in between (an interpreted callee, a host function) are
//!   never skipped and Memcheck sees only plain calls and returns.
//!
//! Rust enters compiled code through the signature's *array entry* (`extern "C" fn(code, vmctx, args:
//! *mut u64) -> u32`), which loads the parameters from 8-byte slots (the interpreter's value-stack
//! layout), calls `code` and stores the results back over the arguments.
//!
//! # The per-instance tables
//!
//! Calls go through tables so a function can change tier with one store and no caller is recompiled:
//!
//! - **[`VmCtx::entries`]**, one [`FuncEntry`] per function of the instance's index space (imports
//!   first), read by compiled code at each call: the compiled code, or the interpreter stub.
//! - **`Instance::tier_slots`** (in `state.rs`), one word per defined function, read by the
//!   interpreter at each call: 0 means *interpreted*, an odd value is a countdown to tier-up (`auto`), an
//!   even one points at the [`CompiledFunc`] to call. `--jit=off` leaves every slot 0, so the
//!   interpreter's call pays one load and a never-taken branch.
//!
//! # Invariants
//!
//! - Compiled code only runs on the mutator's native stack, with [`VmCtx::store`] set by the Rust side
//!   that entered it (`interp/jit.rs`) and [`VmCtx::stack_limit`] above the guard by the re-entry margin:
//!   every compiled prologue compares the stack pointer with it, so overflow is the `call stack exhausted`
//!   trap, never a fault.
//! - A function is compiled only when every construct in it is supported; otherwise the compiler returns
//!   [`Unsupported`] naming the construct and the function stays interpreted (never wrong). Functions that
//!   hold GC references are among those for now, so compiled frames never hold roots.
//! - Code memory is never freed while the runtime lives (the compiler owns it), so a slot or entry never
//!   dangles.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::module::ModuleData;
use crate::types::{RtValType, TypeKind, TypeRegistry};

/// Which tiers run code (`--jit`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum JitMode {
    /// The interpreter only.
    Off,
    /// Start interpreted; compile a function once it has been called `jit_threshold` times.
    #[default]
    Auto,
    /// Compile every function when its module loads.
    Eager,
}

/// Why a function stays interpreted: the construct the compiler does not handle yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unsupported {
    pub reason: String,
}

impl Unsupported {
    pub fn new(reason: impl Into<String>) -> Unsupported {
        Unsupported { reason: reason.into() }
    }
}

/// An address of machine code owned by the compiler (never freed while the runtime lives).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CodePtr(pub usize);

/// A compiled function: its code (the calling convention of the module comment) and the array entry for
/// its signature.
#[derive(Clone, Debug)]
pub struct CompiledFunc {
    pub code: CodePtr,
    pub array_entry: CodePtr,
    pub code_bytes: usize,
}

/// The compiler the runtime calls. Implemented by the `jit` crate.
pub trait Compiler: Send + Sync {
    /// Compile defined function `input.func_index` of a module.
    fn compile(&self, input: &FuncInput<'_>) -> Result<CompiledFunc, Unsupported>;
    /// The interpreter stub for a signature: a function of the compiled convention that calls
    /// [`Libcalls::call`] with its `callee_ctx`.
    fn interpreter_stub(&self, params: &[RtValType], results: &[RtValType]) -> Result<CodePtr, Unsupported>;
    /// The wasm frames of the compiled code whose frame pointer is `fp` and of its compiled callers, as
    /// `(module index, function index, wasm offset of the call)`, innermost first, from the caller of the
    /// frame at `fp` outwards, up to the first frame that is not a compiled function (the array entry
    /// Rust entered by). For reports made without unwinding (`--race`).
    ///
    /// # Safety
    /// `fp` must be the frame pointer of a live compiled frame on the calling thread's stack.
    unsafe fn caller_frames(&self, fp: usize) -> Vec<(u32, u32, u32)> {
        let _ = fp;
        Vec::new()
    }
}

/// What the compiler reads about one function and its module.
pub struct FuncInput<'a> {
    pub(crate) module: &'a ModuleData,
    pub(crate) registry: &'a TypeRegistry,
    /// Index in the function index space (imports first).
    pub func_index: u32,
    /// `--race` ([`crate::Config::race`]): compiled code calls the race hooks ([`MemLibcalls::race`]).
    pub race: bool,
}

impl<'a> FuncInput<'a> {
    /// The module's binary; offsets of operators are offsets into it.
    pub fn wasm(&self) -> &'a [u8] {
        &self.module.source.wasm
    }

    /// The function's body (locals and code) within [`FuncInput::wasm`].
    pub fn body(&self) -> Range<usize> {
        let defined = (self.func_index - self.module.num_imported_funcs) as usize;
        self.module.body_ranges[defined].clone()
    }

    pub fn num_imported_funcs(&self) -> u32 {
        self.module.num_imported_funcs
    }

    /// Parameter and result types of function `func` (index space).
    pub fn func_signature(&self, func: u32) -> (&'a [RtValType], &'a [RtValType]) {
        self.signature_of(self.module.func_types[func as usize]).expect("functions have function types")
    }

    /// Parameter and result types of the module's type `type_index`, if it is a function type.
    pub fn type_signature(&self, type_index: u32) -> Option<(&'a [RtValType], &'a [RtValType])> {
        self.signature_of(*self.module.type_ids.get(type_index as usize)?)
    }

    /// Canonical id of the module's type `type_index` (what `call_indirect` checks against).
    pub fn canonical_type(&self, type_index: u32) -> u32 {
        self.module.type_ids[type_index as usize]
    }

    fn signature_of(&self, id: u32) -> Option<(&'a [RtValType], &'a [RtValType])> {
        match &self.registry.get(id).kind {
            TypeKind::Func { params, results } => Some((params, results)),
            _ => None,
        }
    }

    /// Type and mutability of global `g` (index space).
    pub fn global(&self, g: u32) -> (RtValType, bool) {
        let mut imported = self.module.imports.iter().filter_map(|i| match &i.desc {
            crate::module::ImportDesc::Global(d) => Some(d),
            _ => None,
        });
        let n = imported.clone().count() as u32;
        let d =
            if g < n { imported.nth(g as usize).expect("counted") } else { &self.module.globals[(g - n) as usize].0 };
        (d.ty, d.mutable)
    }

    /// The module's index in its runtime (what race sites and compiled-frame backtraces name).
    pub fn module_index(&self) -> u32 {
        self.module.index
    }

    /// Whether memory `m` (index space) is shared: another thread may grow it or access it concurrently.
    pub fn memory_shared(&self, m: u32) -> bool {
        let imported = self.module.imports.iter().filter_map(|i| match &i.desc {
            crate::module::ImportDesc::Memory(m) => Some(m.shared),
            _ => None,
        });
        imported.chain(self.module.memories.iter().map(|m| m.shared)).nth(m as usize).unwrap_or(false)
    }

    /// Whether plain loads and stores of memory `m` call the race hooks: `--race` and a shared memory, as
    /// the interpreter's translator chooses `RaceLoad`/`RaceStore`.
    pub fn race_hooked(&self, m: u32) -> bool {
        self.race && self.memory_shared(m)
    }

    /// Memories in the module (imported and defined) and whether memory 0 is shared.
    pub fn memories(&self) -> (usize, bool) {
        let mut shared0 = None;
        let mut n = 0;
        for i in &self.module.imports {
            if let crate::module::ImportDesc::Memory(m) = &i.desc {
                shared0.get_or_insert(m.shared);
                n += 1;
            }
        }
        for m in &self.module.memories {
            shared0.get_or_insert(m.shared);
            n += 1;
        }
        (n, shared0.unwrap_or(false))
    }
}

/// One entry of [`VmCtx::entries`].
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FuncEntry {
    pub code: usize,
    /// Passed as the callee's first argument (see the module comment).
    pub ctx: usize,
}

/// What compiled code reads at run time, one per instance (boxed: its address never changes). The
/// offsets below are what compiled code uses; the `jit` crate reads them from here, never hard-coded.
#[repr(C)]
pub struct VmCtx {
    /// The `StoreState` of the running store, set by the Rust side every time it enters compiled code.
    pub store: usize,
    /// Lowest stack pointer compiled code may run at (native stack base + re-entry margin).
    pub stack_limit: usize,
    /// First byte of memory 0 (never moves), or 0.
    pub mem0_base: usize,
    /// Address of memory 0's byte length (an `AtomicUsize` that only grows), or of [`VmCtx::zero`].
    pub mem0_len: usize,
    /// Address of an array with the address of each global's 8-byte value (index space).
    pub globals: usize,
    /// Address of the [`FuncEntry`] array (index space).
    pub entries: usize,
    /// Address of the mutator's stop flag (an `AtomicBool`), polled at loop headers.
    pub stop_flag: usize,
    /// The instance's index in its store.
    pub instance: u32,
    pub _pad: u32,
    /// A zero length for instances without a memory.
    pub zero: usize,
    /// Address of the [`VmMemory`] array: one per memory of the instance's index space (memory 0
    /// included, the same as `mem0_base`/`mem0_len`, which stay for the common case's shorter path).
    pub memories: usize,
}

/// One memory as compiled code reaches it ([`VmCtx::memories`]). Both words are fixed for the instance's
/// life: a memory is a reserved mapping whose base never moves (growth commits pages in place, by any
/// thread for a shared memory), and its length is an `AtomicUsize` that only grows, read at each access.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct VmMemory {
    pub base: usize,
    /// Address of the memory's byte length.
    pub len: usize,
}

impl VmMemory {
    pub const SIZE: i32 = std::mem::size_of::<VmMemory>() as i32;
    pub const BASE: i32 = std::mem::offset_of!(VmMemory, base) as i32;
    pub const LEN: i32 = std::mem::offset_of!(VmMemory, len) as i32;
}

macro_rules! offset {
    ($f:ident) => {
        std::mem::offset_of!(VmCtx, $f) as i32
    };
}

impl VmCtx {
    pub const STORE: i32 = offset!(store);
    pub const STACK_LIMIT: i32 = offset!(stack_limit);
    pub const MEM0_BASE: i32 = offset!(mem0_base);
    pub const MEM0_LEN: i32 = offset!(mem0_len);
    pub const GLOBALS: i32 = offset!(globals);
    pub const ENTRIES: i32 = offset!(entries);
    pub const STOP_FLAG: i32 = offset!(stop_flag);
    pub const MEMORIES: i32 = offset!(memories);
}

/// Addresses of the `extern "C"` functions compiled code calls (`interp/jit.rs` implements them). All
/// return 0 for "go on" and 1 for "a trap is pending: unwind".
#[derive(Clone, Copy, Debug)]
pub struct Libcalls {
    /// `fn(vmctx, store_func: u64, args: *mut u64, fp: u64) -> u32`: call any store function (results
    /// over args). `fp` is the calling stub's frame pointer: with `--race`, a host function called from
    /// compiled code sees the compiled frames above it (where `thread-spawn` created a thread).
    pub call: usize,
    /// `fn(vmctx, table: u32, type_id: u32, index: u32, args: *mut u64) -> u32`: `call_indirect`.
    pub call_indirect: usize,
    /// `fn(vmctx, table: u32, type_id: u32, index: u32, out: *mut FuncEntry) -> u32`: the entry to call
    /// for `return_call_indirect` (checked as `call_indirect` checks it), which compiled code then
    /// tail-calls with its own `vmctx`.
    pub resolve_indirect: usize,
    /// `fn(vmctx, trap_code: u32, func: u32, offset: u32) -> u32`: raise a trap ([`TrapCode`]).
    pub trap: usize,
    /// `fn(vmctx, func: u32, offset: u32) -> u32`: add a frame to the pending trap's backtrace.
    pub unwind: usize,
    /// `fn(vmctx) -> u32`: park at a safepoint (the stop flag was set).
    pub safepoint: usize,
    /// Any memory, segments, atomics' waits and the race hooks.
    pub mem: MemLibcalls,
}

/// The library calls of multi-memory, bulk memory on segments, the threads proposal and `--race`
/// (`interp/jit_memory.rs`). Those returning a status return 0 or 1 as [`Libcalls`] says.
#[derive(Clone, Copy, Debug)]
pub struct MemLibcalls {
    /// `fn(vmctx, mem: u32, delta: u32) -> u32`: `memory.grow` (old pages or -1).
    pub grow: usize,
    /// `fn(vmctx, mem: u32, dst: u32, value: u32, len: u32) -> u32`: `memory.fill` (status).
    pub fill: usize,
    /// `fn(vmctx, dst_mem: u32, src_mem: u32, dst: u32, src: u32, len: u32) -> u32`: `memory.copy`
    /// (status).
    pub copy: usize,
    /// `fn(vmctx, mem: u32, data: u32, dst: u32, src: u32, len: u32) -> u32`: `memory.init` (status).
    pub init: usize,
    /// `fn(vmctx, data: u32) -> u32`: `data.drop` (always 0).
    pub data_drop: usize,
    /// `fn(vmctx, mem: u32, at: u64, width: u32, expected: u64, timeout: i64) -> i64`:
    /// `memory.atomic.wait32/64` at effective address `at` (not checked yet): the result, or -1 when a
    /// trap is pending.
    pub wait: usize,
    /// `fn(vmctx, mem: u32, at: u64, count: u32) -> i64`: `memory.atomic.notify`: how many were woken,
    /// or -1 when a trap is pending.
    pub notify: usize,
    /// `fn(vmctx, mem: u32, at: u64, width: u32, what: u32, func: u32, offset: u32, fp: u64)`: a race
    /// hook. `what` is a set of [`RaceHook`] bits; `func` and `offset` say which instruction (the site)
    /// and `fp` is the calling compiled frame's frame pointer (a report's backtrace walks compiled frames from it). Returns nothing: a
    /// race is reported where it is found and execution goes on, as in the interpreter.
    pub race: usize,
}

/// The bits of [`MemLibcalls::race`]'s `what`.
pub struct RaceHook;

impl RaceHook {
    /// Acquire the address (an atomic that read, after the operation).
    pub const ACQUIRE: u32 = 1;
    /// Release the address (an atomic that writes, before the operation).
    pub const RELEASE: u32 = 2;
    /// Report a read of `width` bytes (after it was made).
    pub const READ: u32 = 4;
    /// Report a write.
    pub const WRITE: u32 = 8;
    /// The access reported is atomic.
    pub const ATOMIC: u32 = 16;
}

/// Traps compiled code raises itself (`Libcalls::trap`'s code argument).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrapCode {
    Unreachable = 0,
    IntegerDivideByZero = 1,
    IntegerOverflow = 2,
    InvalidConversionToInteger = 3,
    MemoryOutOfBounds = 4,
    CallStackExhausted = 5,
    UnalignedAtomic = 16,
}

impl TrapCode {
    pub(crate) fn from_u32(code: u32) -> crate::TrapKind {
        use crate::TrapKind as K;
        match code {
            0 => K::Unreachable,
            1 => K::IntegerDivideByZero,
            2 => K::IntegerOverflow,
            3 => K::InvalidConversionToInteger,
            4 => K::MemoryOutOfBounds,
            16 => K::UnalignedAtomic,
            _ => K::CallStackExhausted,
        }
    }
}

/// `--jit-stats`: what the tier did, summed over the runtime's life.
#[derive(Default, Debug)]
pub struct JitStats {
    pub compiled: AtomicU64,
    pub code_bytes: AtomicU64,
    pub compile_nanos: AtomicU64,
    pub osr_entries: AtomicU64,
    /// `(function, reason)` for each function the compiler declined, in order (first 1000 kept).
    pub(crate) unsupported: std::sync::Mutex<Vec<(String, String)>>,
    pub unsupported_count: AtomicU64,
}

impl JitStats {
    pub(crate) fn record(&self, r: &Result<CompiledFunc, Unsupported>, nanos: u64, name: impl FnOnce() -> String) {
        self.compile_nanos.fetch_add(nanos, Ordering::Relaxed);
        match r {
            Ok(c) => {
                self.compiled.fetch_add(1, Ordering::Relaxed);
                self.code_bytes.fetch_add(c.code_bytes as u64, Ordering::Relaxed);
            }
            Err(u) => {
                self.unsupported_count.fetch_add(1, Ordering::Relaxed);
                let mut list = self.unsupported.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if list.len() < 1000 {
                    list.push((name(), u.reason.clone()));
                }
            }
        }
    }

    /// The functions left interpreted, with the construct that kept each one there.
    pub fn unsupported(&self) -> Vec<(String, String)> {
        self.unsupported.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}
