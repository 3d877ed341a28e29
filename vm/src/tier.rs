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
//!   interpreter at each call and each loop back-edge: 0 means *interpreted*, an odd value is a
//!   countdown to tier-up (`auto`; calls and back-edges both count), an even one points at the
//!   [`CompiledFunc`] to call, with bit 1 set once on-stack replacement was declined for one of the
//!   function's loops (so back-edges of its interpreted activations stop asking). `--jit=off` leaves every
//!   slot 0, so the interpreter's call or back-edge pays one load and a never-taken branch.
//!
//! # On-stack replacement
//!
//! A function entered once and looping for long (a program's `main`) never reaches a call countdown's
//! end; its back-edges do. When the countdown runs out at a back-edge, or a back-edge of an interpreted
//! activation finds the function already compiled, the interpreter asks for an OSR variant for that loop
//! ([`Compiler::compile_osr`], cached per module, function and loop) and runs it on the frame's slots: the
//! frame then returns with the variant's results (`interp/osr.rs`).
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
    /// Start interpreted; compile a function once its calls plus loop back-edges reach `jit_threshold`
    /// (a loop that gets hot in a running activation continues in compiled code: on-stack replacement).
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

/// Where an interpreted frame stands at a loop header, for an on-stack-replacement entry: wasm local
/// `i` is in slot `i` of the frame, operand-stack position `p` (values of enclosing blocks, then the
/// loop's parameters) in slot `stack_slot + p`, each as the interpreter keeps it (`interp/operands.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OsrEntry {
    /// Byte offset (in the module's binary) of the `loop` operator to enter at.
    pub loop_offset: u32,
    /// Slot of operand-stack position 0.
    pub stack_slot: u32,
}

/// The compiler the runtime calls. Implemented by the `jit` crate.
pub trait Compiler: Send + Sync {
    /// Compile defined function `input.func_index` of a module.
    fn compile(&self, input: &FuncInput<'_>) -> Result<CompiledFunc, Unsupported>;
    /// Compile an *on-stack-replacement variant* of the function: code of the compiled convention whose
    /// `callee_ctx` is the address of an interpreted frame's slots stopped at the header of the loop
    /// `entry` names; it loads the locals and operand-stack values from there, runs the function from that
    /// loop header on, and returns the function's results. Its `array_entry` passes the `args` pointer as
    /// `callee_ctx` (the parameters are not passed: they are locals in the slots) and writes the results
    /// over the slots, at the frame base where the interpreter's callers expect them.
    fn compile_osr(&self, input: &FuncInput<'_>, entry: OsrEntry) -> Result<CompiledFunc, Unsupported> {
        let _ = (input, entry);
        Err(Unsupported::new("on-stack replacement"))
    }
    /// The interpreter stub for a signature: a function of the compiled convention that calls
    /// [`Libcalls::call`] with its `callee_ctx`.
    fn interpreter_stub(&self, params: &[RtValType], results: &[RtValType]) -> Result<CodePtr, Unsupported>;
}

/// What the compiler reads about one function and its module.
pub struct FuncInput<'a> {
    pub(crate) module: &'a ModuleData,
    pub(crate) registry: &'a TypeRegistry,
    /// Index in the function index space (imports first).
    pub func_index: u32,
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
}

/// Addresses of the `extern "C"` functions compiled code calls (`interp/jit.rs` implements them). All
/// return 0 for "go on" and 1 for "a trap is pending: unwind".
#[derive(Clone, Copy, Debug)]
pub struct Libcalls {
    /// `fn(vmctx, store_func: u64, args: *mut u64) -> u32`: call any store function (results over args).
    pub call: usize,
    /// `fn(vmctx, table: u32, type_id: u32, index: u32, args: *mut u64) -> u32`: `call_indirect`.
    pub call_indirect: usize,
    /// `fn(vmctx, trap_code: u32, func: u32, offset: u32) -> u32`: raise a trap ([`TrapCode`]).
    pub trap: usize,
    /// `fn(vmctx, func: u32, offset: u32) -> u32`: add a frame to the pending trap's backtrace.
    pub unwind: usize,
    /// `fn(vmctx, delta: u32) -> u32`: `memory.grow` of memory 0 (old pages or -1).
    pub memory_grow: usize,
    /// `fn(vmctx) -> u32`: park at a safepoint (the stop flag was set).
    pub safepoint: usize,
    /// `fn(vmctx, dst: u32, value: u32, len: u32) -> u32`: `memory.fill` of memory 0; 1 when out of
    /// bounds (nothing written; the caller traps).
    pub memory_fill: usize,
    /// `fn(vmctx, dst: u32, src: u32, len: u32) -> u32`: `memory.copy` within memory 0; 1 when out of
    /// bounds.
    pub memory_copy: usize,
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

    /// An on-stack-replacement variant: its compile time and code count, but it is not a function of its
    /// own; a declined one is listed with the functions left interpreted (not counted among them: the
    /// function itself is compiled).
    pub(crate) fn record_osr(&self, r: &Result<CompiledFunc, Unsupported>, nanos: u64, name: impl FnOnce() -> String) {
        self.compile_nanos.fetch_add(nanos, Ordering::Relaxed);
        match r {
            Ok(c) => {
                self.code_bytes.fetch_add(c.code_bytes as u64, Ordering::Relaxed);
            }
            Err(u) => {
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
