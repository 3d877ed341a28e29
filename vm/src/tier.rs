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
//!   first), read by compiled code at each call: the compiled code, or the interpreter stub, and the
//!   function's type id (for `call_indirect`).
//! - **[`VmCtx::tables`]**, the address of each table's [`VmTable`] (its elements and length, owned by
//!   the table entity and rewritten by every change of the table): `call_indirect` reads the element
//!   and, for a function of the instance of exactly the expected type, calls its entry without asking
//!   the VM ([`Libcalls::resolve_indirect`] handles everything else).
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
//!   [`Unsupported`] naming the construct and the function stays interpreted (never wrong).
//! - Every reference a compiled frame holds across a call is in that call's [`StackMap`], and every call
//!   from compiled code into the VM records [`JitExit`] first (the exit trampoline, the stubs), so the
//!   collector can walk compiled frames (`interp/jit_gc.rs`).
//! - Code memory is never freed while the runtime lives (the compiler owns it), so a slot or entry never
//!   dangles.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};

pub use gc::inline_alloc;

use crate::module::ModuleData;
use crate::types::{FieldLayout, RtHeapType, RtValType, StorageKind, TypeKind, TypeRegistry};

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

/// A compiled function: its code (the calling convention of the module comment), the array entry for
/// its signature, and its stack maps.
#[derive(Clone, Debug)]
pub struct CompiledFunc {
    pub code: CodePtr,
    pub array_entry: CodePtr,
    pub code_bytes: usize,
    /// One per call site with references live across it, sorted by `ret_offset`.
    pub stack_maps: Box<[StackMap]>,
}

/// Where a compiled frame keeps its live references while one of its calls is in progress (Cranelift's
/// user stack map of that call): at the call's return address `code + ret_offset`, the frame's stack
/// pointer is `fp - span`, and each of `slots` is the byte offset from it of an 8-byte reference.
#[derive(Clone, Debug)]
pub struct StackMap {
    pub ret_offset: u32,
    pub span: u32,
    pub slots: Box<[u32]>,
}

impl CompiledFunc {
    /// The stack map of the call returning to `ret_offset`; `None` if nothing is live across it.
    pub fn stack_map_at(&self, ret_offset: u32) -> Option<&StackMap> {
        self.stack_maps.binary_search_by_key(&ret_offset, |m| m.ret_offset).ok().map(|i| &self.stack_maps[i])
    }
}

/// Where compiled code last left for the VM: the frame pointer of the compiled frame that made the call
/// and the call's return address. Written by compiled code itself on every exit (the exit trampoline and
/// the interpreter stubs, through [`VmCtx::jit_exit`]), so the collector can walk the compiled frames of a
/// thread that is in the VM from the innermost one out. Zero when no compiled frame is suspended.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JitExit {
    pub fp: usize,
    pub pc: usize,
}

impl JitExit {
    pub const FP: i32 = std::mem::offset_of!(JitExit, fp) as i32;
    pub const PC: i32 = std::mem::offset_of!(JitExit, pc) as i32;
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
    /// The wasm frames of a guarded memory's fault at instruction `pc` of the compiled frame whose frame
    /// pointer is `fp`: that frame (at the faulting access) and then [`Compiler::caller_frames`]'s.
    ///
    /// # Safety
    /// As for `caller_frames`; `pc` is inside the function of the frame at `fp`.
    unsafe fn fault_frames(&self, pc: usize, fp: usize) -> Vec<(u32, u32, u32)> {
        let _ = (pc, fp);
        Vec::new()
    }
    /// The wasm frame `(module index, function index, wasm offset of the call)` of the compiled call whose
    /// return address is `ra`, or `None` when `ra` is not in a compiled wasm function (the array entry
    /// Rust entered by returns into Rust). One step of [`Compiler::caller_frames`], for callers that walk
    /// the frame-pointer chain themselves and cache what each return address means (the race detector's
    /// stack depot, `interp/race_stack.rs`).
    fn frame_of_return(&self, ra: usize) -> Option<(u32, u32, u32)> {
        let _ = ra;
        None
    }
}

/// Registers compiled code at `start..start + len` whose instructions at offsets `heap_trap_sites`
/// access a guarded memory without a bounds check (see [`FuncInput::memory_guard`]).
pub fn register_guarded_code(start: usize, len: usize, heap_trap_sites: Vec<u32>) {
    crate::fault::register_code(start, len, heap_trap_sites);
}

/// Forgets code registered with [`register_guarded_code`], before its memory is freed.
pub fn unregister_guarded_code(start: usize) {
    crate::fault::unregister_code(start);
}

/// What the compiler reads about one function and its module.
pub struct FuncInput<'a> {
    pub(crate) module: &'a ModuleData,
    pub(crate) registry: &'a TypeRegistry,
    /// Index in the function index space (imports first).
    pub func_index: u32,
    /// `--race` ([`crate::Config::race`]): compiled code calls the race hooks ([`MemLibcalls::race`]).
    pub race: bool,
    /// Bytes of no-access guard every memory of the runtime has past 4 GiB (0: none, e.g. under
    /// Valgrind). An access whose static offset plus size fits needs no explicit bounds check: a wrong
    /// index faults, and `vm/src/fault.rs` turns the fault of a [`register_guarded_code`] site into the
    /// trap.
    pub memory_guard: u64,
    /// Whether compiled code may take small objects from the thread cache inline (`gc::inline_alloc`, through
    /// [`VmCtx::alloc_spans`] and [`VmCtx::alloc_hooks`]) instead of calling [`Libcalls::struct_new`] and
    /// [`Libcalls::array_new`]: false when the heap's allocations are observed (Memcheck annotations under
    /// Valgrind, `--trace`, `--race`, `--gc-stress`), whose events only the library path sends.
    pub inline_alloc: bool,
}

impl<'a> FuncInput<'a> {
    /// The input of function `func_index` (index space) of `module`, for runtime `rt`.
    pub(crate) fn new(rt: &'a crate::Runtime, module: &'a ModuleData, func_index: u32) -> FuncInput<'a> {
        let guard = crate::memory::guard_bytes(rt.config.memory_reservation_bytes);
        let memory_guard = if rt.config.jit.explicit_bounds_checks { 0 } else { guard };
        let inline_alloc = !rt.heap.allocation_observed();
        FuncInput { module, registry: &rt.types, func_index, race: rt.race.is_some(), memory_guard, inline_alloc }
    }

    /// The module's binary; offsets of operators are offsets into it.
    pub fn wasm(&self) -> &'a [u8] {
        &self.module.source.wasm
    }

    /// The function's body (locals and code) within [`FuncInput::wasm`].
    pub fn body(&self) -> Range<usize> {
        let defined = (self.func_index - self.module.num_imported_funcs) as usize;
        self.module.body_ranges[defined].clone()
    }

    /// Payload types of the module's tag `tag` (index space) and where each sits in an exception object.
    pub fn tag_payload(&self, tag: u32) -> (&'a [RtValType], &'a [FieldLayout]) {
        let desc = &self.module.tags[tag as usize];
        let params = self.signature_of(desc.ty).map_or(&[][..], |(p, _)| p);
        (params, &desc.payload)
    }

    /// The function's name from the name section, if it has one.
    pub fn func_name(&self) -> Option<&'a str> {
        self.module.source.func_name(self.func_index)
    }

    pub fn num_imported_funcs(&self) -> u32 {
        self.module.num_imported_funcs
    }

    pub fn num_defined_funcs(&self) -> u32 {
        self.module.code.len() as u32
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

    /// A value type of the function's body (module-relative type indices) with canonical ids.
    pub fn val_type(&self, t: wasmparser::ValType) -> RtValType {
        match t {
            wasmparser::ValType::I32 => RtValType::I32,
            wasmparser::ValType::I64 => RtValType::I64,
            wasmparser::ValType::F32 => RtValType::F32,
            wasmparser::ValType::F64 => RtValType::F64,
            wasmparser::ValType::V128 => RtValType::V128,
            wasmparser::ValType::Ref(r) => {
                RtValType::Ref { nullable: r.is_nullable(), heap: self.heap_type(r.heap_type()) }
            }
        }
    }

    /// A heap type of the function's body with canonical ids.
    pub fn heap_type(&self, h: wasmparser::HeapType) -> RtHeapType {
        match h {
            wasmparser::HeapType::Concrete(i) | wasmparser::HeapType::Exact(i) => match i.as_module_index() {
                Some(i) => RtHeapType::Concrete(self.canonical_type(i)),
                // Bodies read from the binary only hold module indices.
                None => RtHeapType::Any,
            },
            abstract_type => crate::types::canonical_heap_type_abstract(abstract_type).unwrap_or(RtHeapType::Any),
        }
    }

    /// Whether the module's type `type_index` is `shared` (its objects may be reached by other threads).
    pub fn is_shared_type(&self, type_index: u32) -> bool {
        self.registry.get(self.canonical_type(type_index)).shared
    }

    /// Field layouts of the module's struct type `type_index`.
    pub fn struct_fields(&self, type_index: u32) -> &'a [FieldLayout] {
        match &self.registry.get(self.canonical_type(type_index)).kind {
            TypeKind::Struct { fields } => fields,
            _ => &[],
        }
    }

    /// Bytes the fields of the module's struct type `type_index` take after the object header.
    pub fn struct_payload_size(&self, type_index: u32) -> u32 {
        self.registry.get(self.canonical_type(type_index)).struct_size
    }

    /// Element storage of the module's array type `type_index`, and whether elements are floats.
    pub fn array_elem(&self, type_index: u32) -> (StorageKind, bool) {
        match &self.registry.get(self.canonical_type(type_index)).kind {
            TypeKind::Array { elem, float, .. } => (*elem, *float),
            _ => (StorageKind::B64, false),
        }
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

    /// Whether global `g` (index space) is declared `shared`: its address is a cell every thread's instance
    /// shares.
    pub fn global_shared(&self, g: u32) -> bool {
        let imported = self.module.imports.iter().filter_map(|i| match &i.desc {
            crate::module::ImportDesc::Global(d) => Some(d.shared),
            _ => None,
        });
        imported.chain(self.module.globals.iter().map(|g| g.0.shared)).nth(g as usize).unwrap_or(false)
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

/// One entry of [`VmCtx::entries`]: 32 bytes, so an index scales by a shift.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FuncEntry {
    pub code: usize,
    /// Passed as the callee's first argument (see the module comment).
    pub ctx: usize,
    /// The function's canonical type id: what an inline `call_indirect` compares with the expected type.
    pub ty: u64,
    pub unused: u64,
}

impl FuncEntry {
    pub const SIZE: i64 = std::mem::size_of::<FuncEntry>() as i64;
    pub const CODE: i32 = std::mem::offset_of!(FuncEntry, code) as i32;
    pub const CTX: i32 = std::mem::offset_of!(FuncEntry, ctx) as i32;
    pub const TYPE: i32 = std::mem::offset_of!(FuncEntry, ty) as i32;

    pub fn new(code: usize, ctx: usize, ty: u32) -> FuncEntry {
        FuncEntry { code, ctx, ty: ty as u64, unused: 0 }
    }
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
    /// Store index of the instance's first defined function (the others follow consecutively).
    pub defined_base: u32,
    /// A zero length for instances without a memory.
    pub zero: usize,
    /// Address of the running mutator's [`JitExit`] record (set with `store` on every entry).
    pub jit_exit: usize,
    /// Address of the instance's function index space as store function indices (`u32`s), for
    /// `ref.func`.
    pub funcs: usize,
    /// Address of the [`VmMemory`] array: one per memory of the instance's index space (memory 0
    /// included, the same as `mem0_base`/`mem0_len`, which stay for the common case's shorter path).
    pub memories: usize,
    /// Address of an array with the address of each table's [`VmTable`] (index space): `call_indirect`
    /// reads the element there and calls a function of this instance without leaving compiled code.
    pub tables: usize,
    /// The function reference (`gc::value::from_func`) of the instance's first defined function: a
    /// table element `raw` names defined function `(raw - defined_func_ref) / 8` of this instance when
    /// that is below the number of defined functions (a null element or another instance's function
    /// wraps around to a large number, so one unsigned comparison covers both).
    pub defined_func_ref: u64,
    /// Address of the running mutator's thread-cache span array (`gc::ThreadCache::spans_address`), set
    /// with `store` on every entry: inline allocation takes slots from it (`gc::inline_alloc`).
    pub alloc_spans: usize,
    /// Address of the heap's "allocations are observed" byte (`gc::Heap::hooks_address`): inline
    /// allocation takes the library call when it is set (an observer attached after the code was made).
    pub alloc_hooks: usize,
}

/// A table as compiled code reads it ([`VmCtx::tables`]): its elements (raw references, 0 for null) and
/// how many there are. One per table entity (`state::TableEntity`, boxed: its address is fixed), shared
/// by every instance that imports the table, and rewritten by every change of the table's element vector
/// (`ElemsMut`'s drop: `table.set`/`grow`/`fill`/`copy`/`init`, element segments, the host), so compiled
/// code reloads both words after each call and never sees a stale one. A `shared` table (other threads
/// change it under its lock) keeps `len` 0: compiled code always takes the library call for it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct VmTable {
    pub base: usize,
    pub len: usize,
}

impl VmTable {
    pub const BASE: i32 = std::mem::offset_of!(VmTable, base) as i32;
    pub const LEN: i32 = std::mem::offset_of!(VmTable, len) as i32;
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
    pub const JIT_EXIT: i32 = offset!(jit_exit);
    pub const FUNCS: i32 = offset!(funcs);
    pub const DEFINED_BASE: i32 = offset!(defined_base);
    pub const MEMORIES: i32 = offset!(memories);
    pub const TABLES: i32 = offset!(tables);
    pub const DEFINED_FUNC_REF: i32 = offset!(defined_func_ref);
    pub const ALLOC_SPANS: i32 = offset!(alloc_spans);
    pub const ALLOC_HOOKS: i32 = offset!(alloc_hooks);
}

/// Addresses of the `extern "C"` functions compiled code calls (`interp/jit.rs` implements them). All
/// return 0 for "go on" and 1 for "a trap is pending: unwind".
#[derive(Clone, Copy, Debug)]
pub struct Libcalls {
    /// `fn(vmctx, store_func: u64, args: *mut u64, fp: u64) -> u32`: call any store function (results
    /// over args). `fp` is the calling stub's frame pointer: with `--race`, a host function called from
    /// compiled code sees the compiled frames above it (where `thread-spawn` created a thread).
    pub call: usize,
    /// `fn(vmctx, table: u32, type_id: u32, index: u32, out: *mut FuncEntry) -> u32`: the entry to call
    /// for `call_indirect` and `return_call_indirect` (the element checked as the interpreter checks it),
    /// which compiled code then calls (or tail-calls) with its own `vmctx`. The slow path: compiled code
    /// resolves an element naming a function of its own instance of exactly the expected type itself
    /// ([`VmTable`]) and asks here for everything else (traps, subtypes, other instances, host functions,
    /// shared tables).
    pub resolve_indirect: usize,
    /// `fn(vmctx, trap_code: u32, func: u32, offset: u32) -> u32`: raise a trap ([`TrapCode`]).
    pub trap: usize,
    /// `fn(vmctx, func: u32, offset: u32) -> u32`: add a frame to the pending trap's backtrace.
    pub unwind: usize,
    /// `fn(vmctx) -> u32`: park at a safepoint (the stop flag was set).
    pub safepoint: usize,
    /// Any memory, segments, atomics' waits and the race hooks.
    pub mem: MemLibcalls,
    /// `fn(vmctx, type_id: u32, site: u64) -> u64`: a new struct of canonical type `type_id`, zeroed (every
    /// field's default); 0 when a trap is pending (out of memory). May collect. `site` is
    /// [`alloc_site`]'s (for the alloc/free tracer).
    pub struct_new: usize,
    /// `fn(vmctx, type_id: u32, len: u32, site: u64) -> u64`: a new zeroed array; 0 on a pending trap.
    pub array_new: usize,
    /// `fn(vmctx, op: u32, site: u64, args: *mut u64, fp: u64) -> u32`: an [`ArrayOp`] with its immediates
    /// and operands in `args` (see there); 0 done, 1 trap pending. `NewData`/`NewElem` may collect. With
    /// `--race`, the ranges a bulk operation on a shared array read and wrote are checked there (`fp`, the
    /// calling frame's frame pointer, for a report's backtrace).
    pub array_op: usize,
    /// `fn(vmctx, raw: u64, heap: u64, nullable: u32) -> u32`: 1 if reference `raw` matches the cast target
    /// (`heap` encoded by [`encode_heap_type`]).
    pub ref_test: usize,
    /// `fn(vmctx, op: u32, args: *mut u64) -> u32`: a [`TableOp`] with its immediates and operands in
    /// `args` (see there); 0 done, 1 trap pending.
    pub table_op: usize,
    /// `fn(vmctx, tag: u32, args: *mut u64, site: u64) -> u32`: `throw` of the instance's tag `tag` with the
    /// payload in `args`: allocates the exception and makes it the pending trap (an uncaught exception);
    /// always 1 (unwind to a handler or out).
    pub throw: usize,
    /// `fn(vmctx, exn: u64) -> u32`: `throw_ref`: `exn` becomes the pending exception (or the null
    /// exception trap); always 1.
    pub throw_ref: usize,
    /// `fn(vmctx, tag: u32) -> u64`: a `try_table` clause: if the pending trap is an exception of the
    /// instance's tag `tag` (any exception for `u32::MAX`), take it (nothing is pending any more) and return
    /// it; 0 otherwise (a trap, or another tag: unwinding goes on).
    pub exn_catch: usize,
}

/// The table instructions compiled code leaves to the VM ([`Libcalls::table_op`]). `args[0]` is the
/// table (instance index), `args[1]` a second immediate, the operands follow from `args[2]` in the
/// instruction's order; a result goes to `args[0]`.
/// - `Get`: index → element. `Set`: index, value. `Size`: → size. `Grow`: initial value, delta → old size
///   or -1. `Fill`: index, value, count.
/// - `Copy`: `args[1]` the source table; destination, source, count. `Init`: `args[1]` the element
///   segment; destination, source, count. `ElemDrop`: `args[1]` the segment (`args[0]` unused).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableOp {
    Get = 0,
    Set = 1,
    Size = 2,
    Grow = 3,
    Fill = 4,
    Copy = 5,
    Init = 6,
    ElemDrop = 7,
}

impl TableOp {
    pub(crate) fn from_u32(op: u32) -> Option<TableOp> {
        use TableOp as T;
        [T::Get, T::Set, T::Size, T::Grow, T::Fill, T::Copy, T::Init, T::ElemDrop].get(op as usize).copied()
    }
}

/// The site word of an allocation for [`Libcalls::struct_new`] and friends: defined function index and
/// wasm offset, so the tracer names the same site as for the interpreter.
pub fn alloc_site(defined_func: u32, offset: u32) -> u64 {
    (defined_func as u64) << 32 | offset as u64
}

/// The array instructions compiled code leaves to the VM ([`Libcalls::array_op`]). `args[0]` and
/// `args[1]` are immediates, the operands follow from `args[2]` in the instruction's order:
/// - `NewData`/`NewElem`: canonical type id, segment index; offset, length. The new array goes to `args[0]`.
/// - `Fill`: type id, unused; array, offset, value, count.
/// - `Copy`: destination type id, source type id; destination array, offset, source array, offset, count.
/// - `InitData`/`InitElem`: type id, segment index; array, offset, segment offset, count.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArrayOp {
    NewData = 0,
    NewElem = 1,
    Fill = 2,
    Copy = 3,
    InitData = 4,
    InitElem = 5,
}

impl ArrayOp {
    pub(crate) fn from_u32(op: u32) -> Option<ArrayOp> {
        use ArrayOp as A;
        [A::NewData, A::NewElem, A::Fill, A::Copy, A::InitData, A::InitElem].get(op as usize).copied()
    }
}

/// Bytes of a heap object's header (type id, then array length); fields and elements follow.
pub const OBJECT_HEADER: usize = gc::HEADER_SIZE;

const ABSTRACT_HEAP: u64 = 1 << 32;

/// A cast target's heap type as one word for [`Libcalls::ref_test`]: a canonical type id, or an abstract
/// heap type above `u32::MAX`.
pub fn encode_heap_type(h: RtHeapType) -> u64 {
    use RtHeapType as H;
    let abstract_code = match h {
        H::Concrete(id) => return id as u64,
        H::Any => 0,
        H::Eq => 1,
        H::I31 => 2,
        H::Struct => 3,
        H::Array => 4,
        H::None => 5,
        H::Func => 6,
        H::NoFunc => 7,
        H::Extern => 8,
        H::NoExtern => 9,
        H::Exn => 10,
        H::NoExn => 11,
    };
    ABSTRACT_HEAP | abstract_code
}

pub(crate) fn decode_heap_type(code: u64) -> RtHeapType {
    use RtHeapType as H;
    if code < ABSTRACT_HEAP {
        return H::Concrete(code as u32);
    }
    const ABSTRACT: [RtHeapType; 12] = [
        H::Any,
        H::Eq,
        H::I31,
        H::Struct,
        H::Array,
        H::None,
        H::Func,
        H::NoFunc,
        H::Extern,
        H::NoExtern,
        H::Exn,
        H::NoExn,
    ];
    ABSTRACT.get((code - ABSTRACT_HEAP) as usize).copied().unwrap_or(H::None)
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
    /// `fn(vmctx, obj: u64, addr: u64, width: u32, what: u32, func: u32, offset: u32, fp: u64)`: the race
    /// hook of a field or element of a shared GC object (`obj`, the address of its header; `addr` the
    /// field's host address) or, with `obj` 0, of a shared global's cell at `addr` (or, with
    /// [`RaceHook::GLOBAL`], of the instance's global whose index is `addr`). Otherwise as `race`.
    pub race_object: usize,
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
    /// [`MemLibcalls::race_object`]: `addr` is the index of a global of the instance (shared), whose cell
    /// is the location.
    pub const GLOBAL: u32 = 32;
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
    NullReference = 6,
    NullFunctionReference = 7,
    NullStructReference = 8,
    NullArrayReference = 9,
    NullI31Reference = 10,
    CastFailure = 11,
    ArrayOutOfBounds = 12,
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
            6 => K::NullReference,
            7 => K::NullFunctionReference,
            8 => K::NullStructReference,
            9 => K::NullArrayReference,
            10 => K::NullI31Reference,
            11 => K::CastFailure,
            12 => K::ArrayOutOfBounds,
            16 => K::UnalignedAtomic,
            _ => K::CallStackExhausted,
        }
    }
}

/// The compiled functions of a runtime by code address (functions and on-stack-replacement variants):
/// how the collector finds the stack maps of the compiled frames it walks. Entries are added as code is
/// compiled and never removed (code memory lives as long as the runtime).
#[derive(Default)]
pub(crate) struct CodeMap {
    funcs: std::sync::RwLock<CodeByAddress>,
}

pub(crate) type CodeByAddress = std::collections::BTreeMap<usize, CompiledFunc>;

impl CodeMap {
    pub(crate) fn register(&self, f: &CompiledFunc) {
        self.funcs.write().unwrap_or_else(std::sync::PoisonError::into_inner).insert(f.code.0, f.clone());
    }

    /// A snapshot view for one walk.
    pub(crate) fn read(&self) -> std::sync::RwLockReadGuard<'_, CodeByAddress> {
        self.funcs.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The compiled function whose code contains `pc`, in a [`CodeMap::read`] view.
pub(crate) fn function_at(funcs: &CodeByAddress, pc: usize) -> Option<&CompiledFunc> {
    let (&start, f) = funcs.range(..=pc).next_back()?;
    (pc < start + f.code_bytes).then_some(f)
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
