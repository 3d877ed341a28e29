//! The bytecode: one definition that the translator writes and the interpreter (and later the JIT)
//! reads.
//!
//! # Design
//!
//! Register-based, like wasmi's and WAMR's fast interpreter, not a byte-stream stack machine. Every
//! function has a frame of 8-byte *slots*: first its parameters, then its declared locals, then one
//! slot per operand-stack position (the translator knows the maximum depth). An instruction names
//! the slots it reads and writes (`Slot` = index from the frame base), so `local.get`/`local.set` and
//! most constants disappear at translation time, and a wasm expression like `(i32.add (local.get 0)
//! (i32.const 1))` followed by `local.set 0` becomes one instruction.
//!
//! Why register-based: the dispatch count, not the work per instruction, dominates an interpreter on
//! integer code. `BENCHMARKS.md` records the measurement behind the choice.
//!
//! Control flow is resolved at translation: a branch carries a relative offset in instructions
//! (`target = pc + offset`), so there is no label search at run time. Values that a branch carries
//! are copied into the target's slots by explicit `Copy` instructions emitted before the branch.
//!
//! Calls are zero-copy: the arguments sit in consecutive slots of the caller's frame starting at
//! `base`, and that position becomes the callee's frame base; the callee leaves its results at its
//! own frame base, which is exactly where the caller expects them.
//!
//! Every slot's type is known at every instruction (the translator tracks it with wasmparser's
//! validator). For each instruction at which a collection can start (calls and allocations) the
//! translator records the set of slots holding references: see [`StackMap`].
//!
//! Exception handling adds two instructions (`Throw`, `ThrowRef`) and no markers: protected ranges are
//! a side table of pc ranges per function ([`Handler`]), read only when something throws.

pub use crate::types::StorageKind;

/// Index of a slot relative to the frame base.
pub type Slot = u16;

/// Relative branch offset in instructions: the target is `pc + offset`.
pub type BranchOffset = i32;

macro_rules! define_instrs {
    (
        binary { $($bin:ident),* $(,)? }
        unary { $($un:ident),* $(,)? }
        load { $($ld:ident),* $(,)? }
        store { $($st:ident),* $(,)? }
        cmp_branch { $($cb:ident),* $(,)? }
    ) => {
        /// One bytecode instruction. See the module comment for the model.
        #[derive(Clone, Copy, Debug, PartialEq)]
        pub enum Instr {
            $(
                #[doc = concat!("`", stringify!($bin), "`: `dst = a op b`.")]
                $bin { dst: Slot, a: Slot, b: Slot },
            )*
            $(
                #[doc = concat!("`", stringify!($un), "`: `dst = op src`.")]
                $un { dst: Slot, src: Slot },
            )*
            $(
                #[doc = concat!("`", stringify!($ld), "` from memory 0: `dst = mem[addr + offset]`.")]
                $ld { dst: Slot, addr: Slot, offset: u32 },
            )*
            $(
                #[doc = concat!("`", stringify!($st), "` to memory 0: `mem[addr + offset] = value`.")]
                $st { addr: Slot, value: Slot, offset: u32 },
            )*
            $(
                #[doc = concat!("Branch by `offset` if the i32 comparison `", stringify!($cb), "` of `a`, `b` holds.")]
                $cb { a: Slot, b: Slot, offset: BranchOffset },
            )*

            // ---- constants and moves ----
            /// `dst = value` (zero-extended i32 or f32 bits).
            Const32 { dst: Slot, value: u32 },
            /// `dst = value` (64-bit constant, stored inline).
            Const64 { dst: Slot, value: u64 },
            /// `dst = src`.
            Copy { dst: Slot, src: Slot },
            /// `dst = cond != 0 ? a : b`, where `a`/`dst` share the slot `dst_a`.
            Select { dst: Slot, cond: Slot, a: Slot, b: Slot },

            // ---- immediates fused into common i32/i64 ops ----
            I32AddImm { dst: Slot, a: Slot, imm: i16 },
            I32SubImm { dst: Slot, a: Slot, imm: i16 },
            I32AndImm { dst: Slot, a: Slot, imm: i16 },
            I32ShlImm { dst: Slot, a: Slot, imm: i16 },
            I32ShrSImm { dst: Slot, a: Slot, imm: i16 },
            I32ShrUImm { dst: Slot, a: Slot, imm: i16 },
            I32EqImm { dst: Slot, a: Slot, imm: i16 },
            I32NeImm { dst: Slot, a: Slot, imm: i16 },
            I32LtSImm { dst: Slot, a: Slot, imm: i16 },
            I32LtUImm { dst: Slot, a: Slot, imm: i16 },
            I32GtSImm { dst: Slot, a: Slot, imm: i16 },
            I32GtUImm { dst: Slot, a: Slot, imm: i16 },
            I32LeSImm { dst: Slot, a: Slot, imm: i16 },
            I32GeSImm { dst: Slot, a: Slot, imm: i16 },
            I64AddImm { dst: Slot, a: Slot, imm: i16 },
            I64SubImm { dst: Slot, a: Slot, imm: i16 },

            // ---- control ----
            Unreachable,
            /// Unconditional branch.
            Br { offset: BranchOffset },
            /// Branch if the i32 in `cond` is zero.
            BrIfEqz { cond: Slot, offset: BranchOffset },
            /// Branch if the i32 in `cond` is non-zero.
            BrIfNez { cond: Slot, offset: BranchOffset },
            /// Branch if i32 `a` < `imm` (signed); the common loop-exit test.
            BrI32LtSImm { a: Slot, imm: i16, offset: BranchOffset },
            BrI32GeSImm { a: Slot, imm: i16, offset: BranchOffset },
            BrI32EqImm { a: Slot, imm: i16, offset: BranchOffset },
            BrI32NeImm { a: Slot, imm: i16, offset: BranchOffset },
            /// `br_table`: the next `len + 1` instructions are `Br` (or a branch trampoline's `Br`),
            /// one per label, the default last. Jumps to entry `min(index, len)`.
            BrTable { index: Slot, len: u32 },
            /// Return with no results.
            Return,
            /// Return one result found in `src`.
            Return1 { src: Slot },
            /// Return `len` results found in consecutive slots starting at `src`.
            ReturnN { src: Slot, len: u16 },

            // ---- calls ----
            /// Call a function defined in the same module (index into its defined functions).
            CallLocal { func: u32, base: Slot },
            /// Call through the instance's function index space (imports, other instances, host).
            CallImport { func: u32, base: Slot },
            /// `call_indirect`: element `index` of `table`, checked against canonical type `type_id`.
            CallIndirect { table: u32, type_id: u32, index: Slot, base: Slot },
            /// `call_ref`: the function reference in `func`.
            CallRef { func: Slot, base: Slot },
            ReturnCallLocal { func: u32, base: Slot },
            ReturnCallImport { func: u32, base: Slot },
            ReturnCallIndirect { table: u32, type_id: u32, index: Slot, base: Slot },
            ReturnCallRef { func: Slot, base: Slot },

            // ---- variables ----
            GlobalGet { dst: Slot, global: u32 },
            GlobalSet { global: u32, src: Slot },

            // ---- memory (any memory index) ----
            /// Generic load from memory `mem`; `kind` is a [`MemOp`].
            Load { kind: MemOp, mem: u16, dst: Slot, addr: Slot, offset: u32 },
            /// Generic store to memory `mem`.
            Store { kind: MemOp, mem: u16, addr: Slot, value: Slot, offset: u32 },
            /// `Load` with the race detector's hook (`--race`, a shared memory): chosen at translation, so
            /// without `--race` no access pays for it.
            RaceLoad { kind: MemOp, mem: u16, dst: Slot, addr: Slot, offset: u32 },
            /// `Store` with the race detector's hook.
            RaceStore { kind: MemOp, mem: u16, addr: Slot, value: Slot, offset: u32 },
            MemorySize { mem: u32, dst: Slot },
            MemoryGrow { mem: u32, dst: Slot, delta: Slot },
            /// `memory.fill mem` with operands `dst`, `val`, `len` in slots `args..args+3`.
            MemoryFill { mem: u32, args: Slot },
            /// `memory.copy` with operands in slots `args..args+3`.
            MemoryCopy { dst_mem: u16, src_mem: u16, args: Slot },
            /// `memory.init` with operands in slots `args..args+3`.
            MemoryInit { mem: u16, data: u32, args: Slot },
            DataDrop { data: u32 },

            // ---- atomics (threads proposal), any memory: `width` bytes, address in `args`, further
            // operands in `args + 1..`; results are zero-extended (the i32 and i64 forms share them) ----
            /// `*.atomic.load*`: `dst = mem[addr + offset]`.
            AtomicLoad { mem: u16, width: u8, dst: Slot, args: Slot, offset: u32 },
            /// `*.atomic.store*` of the value in `args + 1`.
            AtomicStore { mem: u16, width: u8, args: Slot, offset: u32 },
            /// `*.atomic.rmw*.<op>` with the operand in `args + 1`: `dst` = the old value.
            AtomicRmw { op: RmwOp, mem: u16, width: u8, dst: Slot, args: Slot, offset: u32 },
            /// `*.atomic.rmw*.cmpxchg*`: expected value in `args + 1`, replacement in `args + 2`.
            AtomicCmpxchg { mem: u16, width: u8, dst: Slot, args: Slot, offset: u32 },
            /// `memory.atomic.wait32/64`: expected value in `args + 1`, timeout (i64 ns) in `args + 2`.
            /// Blocks outside the dispatch loop, with the mutator native.
            AtomicWait { mem: u16, width: u8, dst: Slot, args: Slot, offset: u32 },
            /// `memory.atomic.notify`: count in `args + 1`.
            AtomicNotify { mem: u16, dst: Slot, args: Slot, offset: u32 },
            /// `atomic.fence`.
            AtomicFence,

            // ---- shared-everything threads: atomics on fields, elements and globals, shared globals, and
            // `--race` hooks for plain accesses to shared objects (`translate/shared_gc.rs`,
            // `interp/shared_gc.rs`); every one sequentially consistent ----
            /// `struct.atomic.*` on field access `field` (the function's field table): the struct in `args`,
            /// operands in `args + 1..`; `dst` gets the value read (the old value of a read-modify-write).
            StructAtomic { op: ObjAtomicOp, dst: Slot, args: Slot, field: u32 },
            /// `array.atomic.*` with array access `access`: the array in `args`, the index in `args + 1`,
            /// operands in `args + 2..`.
            ArrayAtomic { op: ObjAtomicOp, dst: Slot, args: Slot, access: u32 },
            /// `global.get` (or `global.atomic.get`) of a shared global: its runtime-wide cell.
            GlobalGetShared { dst: Slot, global: u32 },
            /// `global.set` (or `global.atomic.set`) of a shared global.
            GlobalSetShared { global: u32, src: Slot },
            /// `global.atomic.rmw.*` (operand in `args`) and `cmpxchg` (`args`, `args + 1`); `width` 4 or 8.
            GlobalAtomic { op: ObjAtomicOp, width: u8, dst: Slot, args: Slot, global: u32 },
            /// `--race`: the plain access the next instruction makes to field access `field` of the shared
            /// struct in `obj` (nothing if it is null: the access traps).
            RaceField { write: bool, obj: Slot, field: u32 },
            /// `--race`: the plain access the next instruction makes to an element of the shared array in
            /// `args`, index in `args + 1` (nothing if null or out of bounds).
            RaceElem { write: bool, args: Slot, access: u32 },
            /// `--race`, after a bulk operation on a shared array (`array.fill`/`copy`/`init_*`): it read or
            /// wrote the elements from the index in `args + 1` of the array in `args`, as many as `len` says.
            RaceRange { write: bool, args: Slot, len: Slot, access: u32 },
            /// `--race`: the [`crate::tier::RaceHook`] bits `what` on shared global `global` (a plain
            /// `global.get`/`set` after it, `global.atomic.get/set`'s release before and access after).
            RaceGlobal { what: u8, global: u32 },

            // ---- tables and references ----
            TableGet { table: u32, dst: Slot, index: Slot },
            TableSet { table: u32, index: Slot, value: Slot },
            TableSize { table: u32, dst: Slot },
            /// `table.grow`: `dst = grow(init in dst, delta)`.
            TableGrow { table: u32, dst: Slot, delta: Slot },
            /// `table.fill` with operands `i`, `val`, `n` in `args..args+3`.
            TableFill { table: u32, args: Slot },
            TableCopy { dst_table: u32, src_table: u32, args: Slot },
            TableInit { table: u32, elem: u32, args: Slot },
            ElemDrop { elem: u32 },
            /// `dst = funcref` of the instance's function `func`.
            RefFunc { dst: Slot, func: u32 },
            RefIsNull { dst: Slot, src: Slot },
            /// Trap with `null reference` if `src` is null, else `dst = src`.
            RefAsNonNull { dst: Slot, src: Slot },
            BrOnNull { src: Slot, offset: BranchOffset },
            BrOnNonNull { src: Slot, offset: BranchOffset },
            RefEq { dst: Slot, a: Slot, b: Slot },
            RefI31 { dst: Slot, src: Slot },
            I31GetS { dst: Slot, src: Slot },
            I31GetU { dst: Slot, src: Slot },
            /// `dst = (src matches cast target `target`)`; see [`CastTarget`].
            RefTest { dst: Slot, src: Slot, target: u32 },
            /// Trap with `cast failure` unless `src` matches, else `dst = src`.
            RefCast { dst: Slot, src: Slot, target: u32 },
            /// Branch if `src` matches (`br_on_cast`) or does not match (`br_on_cast_fail`,
            /// `on_fail = true`) the target.
            BrOnCast { src: Slot, target: u32, on_fail: bool, offset: BranchOffset },

            // ---- GC objects ----
            /// Allocate a struct of canonical type `type_id` with fields from `args..`.
            StructNew { type_id: u32, dst: Slot, args: Slot },
            StructNewDefault { type_id: u32, dst: Slot },
            /// Read a field: `field` indexes the function's field table (offset and storage kind).
            StructGet { dst: Slot, obj: Slot, field: u32 },
            StructSet { obj: Slot, value: Slot, field: u32 },
            /// `array.new $t` with `value`, `len` in `args`, `args+1`.
            ArrayNew { type_id: u32, dst: Slot, args: Slot },
            ArrayNewDefault { type_id: u32, dst: Slot, len: Slot },
            /// `array.new_fixed $t n` with the `len` values in `args..`.
            ArrayNewFixed { type_id: u32, dst: Slot, args: Slot, len: u32 },
            /// `array.new_data`/`array.new_elem` with `offset`, `len` in `args`, `args+1`.
            ArrayNewData { type_id: u32, data: u32, dst: Slot, args: Slot },
            ArrayNewElem { type_id: u32, elem: u32, dst: Slot, args: Slot },
            /// `array.get*`: `array_kind` indexes the function's array-access table.
            ArrayGet { dst: Slot, args: Slot, access: u32 },
            ArraySet { args: Slot, access: u32 },
            ArrayLen { dst: Slot, src: Slot },
            ArrayFill { args: Slot, access: u32 },
            ArrayCopy { args: Slot, dst_access: u32, src_access: u32 },
            ArrayInitData { args: Slot, access: u32, data: u32 },
            ArrayInitElem { args: Slot, access: u32, elem: u32 },
            /// `extern.convert_any` and `any.convert_extern` are identities on the representation.
            ConvertRef { dst: Slot, src: Slot },

            // ---- exceptions (see [`Handler`])
            /// `throw`: allocate an exception of the module's tag `tag` with the payload in `args..` and
            /// unwind to the handler that takes it.
            Throw { tag: u32, args: Slot },
            /// `throw_ref` and the legacy `rethrow`: unwind with the exception in `exn` (a trap if null).
            ThrowRef { exn: Slot },
        }
    };
}

/// The one list of the simple operators (same names as `wasmparser::Operator`): the enum above,
/// the translator's operator mapping and `dst` retargeting all expand it, so adding an operator is
/// one edit here.
#[macro_export]
#[doc(hidden)]
macro_rules! with_simple_ops {
    ($m:ident) => {
        $m! {
        binary {
            I32Add, I32Sub, I32Mul, I32DivS, I32DivU, I32RemS, I32RemU, I32And, I32Or, I32Xor,
            I32Shl, I32ShrS, I32ShrU, I32Rotl, I32Rotr,
            I32Eq, I32Ne, I32LtS, I32LtU, I32GtS, I32GtU, I32LeS, I32LeU, I32GeS, I32GeU,
            I64Add, I64Sub, I64Mul, I64DivS, I64DivU, I64RemS, I64RemU, I64And, I64Or, I64Xor,
            I64Shl, I64ShrS, I64ShrU, I64Rotl, I64Rotr,
            I64Eq, I64Ne, I64LtS, I64LtU, I64GtS, I64GtU, I64LeS, I64LeU, I64GeS, I64GeU,
            F32Add, F32Sub, F32Mul, F32Div, F32Min, F32Max, F32Copysign,
            F32Eq, F32Ne, F32Lt, F32Gt, F32Le, F32Ge,
            F64Add, F64Sub, F64Mul, F64Div, F64Min, F64Max, F64Copysign,
            F64Eq, F64Ne, F64Lt, F64Gt, F64Le, F64Ge,
        }
        unary {
            I32Eqz, I32Clz, I32Ctz, I32Popcnt, I32Extend8S, I32Extend16S,
            I64Eqz, I64Clz, I64Ctz, I64Popcnt, I64Extend8S, I64Extend16S, I64Extend32S,
            F32Abs, F32Neg, F32Ceil, F32Floor, F32Trunc, F32Nearest, F32Sqrt,
            F64Abs, F64Neg, F64Ceil, F64Floor, F64Trunc, F64Nearest, F64Sqrt,
            I32WrapI64, I64ExtendI32S, I64ExtendI32U,
            I32TruncF32S, I32TruncF32U, I32TruncF64S, I32TruncF64U,
            I64TruncF32S, I64TruncF32U, I64TruncF64S, I64TruncF64U,
            I32TruncSatF32S, I32TruncSatF32U, I32TruncSatF64S, I32TruncSatF64U,
            I64TruncSatF32S, I64TruncSatF32U, I64TruncSatF64S, I64TruncSatF64U,
            F32ConvertI32S, F32ConvertI32U, F32ConvertI64S, F32ConvertI64U, F32DemoteF64,
            F64ConvertI32S, F64ConvertI32U, F64ConvertI64S, F64ConvertI64U, F64PromoteF32,
        }
        load {
            I32Load, I64Load, F32Load, F64Load,
            I32Load8S, I32Load8U, I32Load16S, I32Load16U,
            I64Load8S, I64Load8U, I64Load16S, I64Load16U, I64Load32S, I64Load32U,
        }
        store {
            I32Store, I64Store, F32Store, F64Store, I32Store8, I32Store16, I64Store8, I64Store16, I64Store32,
        }
        cmp_branch {
            BrI32Eq, BrI32Ne, BrI32LtS, BrI32LtU, BrI32GtS, BrI32GtU, BrI32LeS, BrI32LeU, BrI32GeS, BrI32GeU,
        }
            }
    };
}

with_simple_ops!(define_instrs);

/// Access kinds for the generic [`Instr::Load`]/[`Instr::Store`] (memories other than 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemOp {
    I32,
    I64,
    F32,
    F64,
    I32_8S,
    I32_8U,
    I32_16S,
    I32_16U,
    I64_8S,
    I64_8U,
    I64_16S,
    I64_16U,
    I64_32S,
    I64_32U,
    Store8,
    Store16,
    Store32,
}

impl MemOp {
    /// Access width in bytes.
    pub fn width(self) -> u32 {
        match self {
            MemOp::I32_8S | MemOp::I32_8U | MemOp::I64_8S | MemOp::I64_8U | MemOp::Store8 => 1,
            MemOp::I32_16S | MemOp::I32_16U | MemOp::I64_16S | MemOp::I64_16U | MemOp::Store16 => 2,
            MemOp::I32 | MemOp::F32 | MemOp::I64_32S | MemOp::I64_32U | MemOp::Store32 => 4,
            MemOp::I64 | MemOp::F64 => 8,
        }
    }
}

/// The operation of [`Instr::AtomicRmw`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RmwOp {
    Add,
    Sub,
    And,
    Or,
    Xor,
    Xchg,
}

/// The operation of [`Instr::StructAtomic`], [`Instr::ArrayAtomic`] and [`Instr::GlobalAtomic`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjAtomicOp {
    Get,
    Set,
    Rmw(RmwOp),
    Cmpxchg,
}

/// What a struct field access reads or writes: byte offset in the object and storage kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FieldAccess {
    pub offset: u32,
    pub kind: StorageKind,
}

/// An array access: element storage and the array's canonical type (for `array.new_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArrayAccess {
    pub kind: StorageKind,
}

/// The target of `ref.test`/`ref.cast`/`br_on_cast`, in a function's cast table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CastTarget {
    pub nullable: bool,
    pub heap: crate::types::RtHeapType,
}

/// Slots that hold references at one GC point (a call, an allocation, a loop back-edge, function entry).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StackMap {
    /// The instruction index of the GC point.
    pub pc: u32,
    /// Frame slots holding references live across it, ascending.
    pub ref_slots: Box<[Slot]>,
}

/// One entry of a function's handler table: what happens to an exception thrown (or passing through a call)
/// at an instruction in `start..end`.
///
/// A `try_table` gives one entry per catch clause, in clause order; a legacy `try` one per `catch`/
/// `catch_all` and a `delegate` one. Entries are ordered innermost first (an entry is added when its block's
/// protected range ends, and an inner range ends before the one around it), so the first entry that covers
/// the pc and accepts the exception is the one the spec picks; [`CompiledFunc::find_handler`] does the walk.
/// The table is plain data indexed by bytecode pc, for the interpreter and for a compiled tier alike (which
/// maps its call sites back to bytecode pcs, as it does for stack maps).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Handler {
    /// First instruction covered.
    pub start: u32,
    /// One past the last instruction covered.
    pub end: u32,
    /// Nesting depth (index in the translator's control stack) of the block the entry belongs to, for
    /// `delegate`.
    pub depth: u16,
    pub action: HandlerAction,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandlerAction {
    /// Take exceptions of the module's tag `tag` (`None`: every exception): the payload goes to the slots
    /// from `payload` on (tag clauses only), the exception itself to `exn` if set (`catch_ref`,
    /// `catch_all_ref`, and legacy catches, whose `rethrow` reads it there), then execution goes on at `target`.
    /// These are the slots of the target label: the landing is a branch to it.
    Catch { tag: Option<u32>, payload: Slot, exn: Option<Slot>, target: u32 },
    /// A legacy `delegate`: only entries of blocks at depth `to_depth` or less may take the exception (depth 0,
    /// the function body: none, it goes to the caller).
    Delegate { to_depth: u16 },
}

/// A loop header, where the interpreter may hand a running frame to compiled code (on-stack
/// replacement, `interp/osr.rs`). At `pc` every operand-stack value is in its own slot (the translator
/// materializes the stack at each `loop`): position `p` in slot `num_locals + consts.len() + p`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoopHeader {
    /// The first instruction of the loop body, the target of its back-edges.
    pub pc: u32,
    /// Byte offset of the `loop` operator (the outermost one when loops nest with nothing between their
    /// headers: they share `pc`).
    pub wasm_offset: u32,
}

/// A translated function.
#[derive(Debug)]
pub struct CompiledFunc {
    /// The instructions.
    pub code: Box<[Instr]>,
    /// Struct field accesses referenced by `StructGet`/`StructSet`.
    pub fields: Box<[FieldAccess]>,
    /// Array accesses referenced by `Array*`.
    pub arrays: Box<[ArrayAccess]>,
    /// Cast targets referenced by `RefTest`/`RefCast`/`BrOnCast`.
    pub casts: Box<[CastTarget]>,
    /// Number of parameter slots.
    pub num_params: u16,
    /// Number of parameter + local slots (locals beyond the parameters start zeroed).
    pub num_locals: u16,
    /// Constants the function reads as operands, placed in the slots right after the locals at
    /// every entry, so a loop does not re-materialize them on each iteration.
    pub consts: Box<[u64]>,
    /// Total frame size in slots (locals + maximum operand depth + call scratch).
    pub frame_size: u32,
    /// Number of results.
    pub num_results: u16,
    /// Stack maps, sorted by `pc`.
    pub stack_maps: Box<[StackMap]>,
    /// For each instruction, the byte offset of the wasm operator it came from (for backtraces).
    pub wasm_offsets: Box<[u32]>,
    /// Exception handlers, innermost first (see [`Handler`]); empty for most functions.
    pub handlers: Box<[Handler]>,
    /// The reachable loop headers, sorted by `pc` (one per `pc`).
    pub loop_headers: Box<[LoopHeader]>,
}

impl CompiledFunc {
    /// Prepare a new frame whose parameters are already in place: zero the locals, load the
    /// constants.
    #[inline(always)]
    pub fn init_frame(&self, frame: &mut [u64]) {
        let (np, nl) = (self.num_params as usize, self.num_locals as usize);
        if np < nl {
            frame[np..nl].fill(0);
        }
        if !self.consts.is_empty() {
            frame[nl..nl + self.consts.len()].copy_from_slice(&self.consts);
        }
    }

    /// The handler that takes an exception thrown at (or passing the call at) `pc`, if any: the first entry
    /// covering `pc` whose clause accepts the exception (`accepts(t)`: is it of the module's tag `t`), skipping
    /// those a `delegate` on the way excludes.
    pub fn find_handler(&self, pc: u32, accepts: impl Fn(u32) -> bool) -> Option<&Handler> {
        let mut max_depth = u16::MAX;
        for h in self.handlers.iter() {
            if pc < h.start || pc >= h.end || h.depth > max_depth {
                continue;
            }
            match h.action {
                HandlerAction::Delegate { to_depth } => max_depth = to_depth,
                HandlerAction::Catch { tag, .. } => {
                    if tag.is_none_or(&accepts) {
                        return Some(h);
                    }
                }
            }
        }
        None
    }

    /// The reference slots at GC point `pc`.
    pub fn stack_map_at(&self, pc: u32) -> Option<&[Slot]> {
        self.stack_maps.binary_search_by_key(&pc, |m| m.pc).ok().map(|i| &*self.stack_maps[i].ref_slots)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instructions_stay_small() {
        // The interpreter's cache footprint depends on this; a growth past 16 bytes is a design
        // change, not an accident.
        assert!(std::mem::size_of::<Instr>() <= 16, "Instr is {} bytes", std::mem::size_of::<Instr>());
    }
}
