//! Traps and wasm backtraces.

use std::fmt;

/// Why execution stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TrapKind {
    Unreachable,
    IntegerDivideByZero,
    IntegerOverflow,
    InvalidConversionToInteger,
    MemoryOutOfBounds,
    TableOutOfBounds,
    UndefinedElement,
    UninitializedElement,
    IndirectCallTypeMismatch,
    NullReference,
    NullFunctionReference,
    NullStructReference,
    NullArrayReference,
    NullI31Reference,
    CastFailure,
    /// `throw_ref` of a null `exnref`.
    NullExceptionReference,
    ArrayOutOfBounds,
    CallStackExhausted,
    /// An atomic access whose address is not a multiple of its width.
    UnalignedAtomic,
    /// `memory.atomic.wait` on a memory not declared `shared`.
    WaitOnUnsharedMemory,
    OutOfMemory {
        limit_bytes: u64,
    },
    /// `proc_exit` from WASI: not an error; the CLI exits with this code.
    Exit(i32),
    /// A host function failed.
    Host(String),
    /// An exception no handler took. `exn` is the exception, rooted as a handle until
    /// [`crate::Store::unroot`] (a host function that gets it from [`crate::Caller::call`] and returns it
    /// rethrows it into the calling wasm); `tag` names its tag (`tag $e`, or `tag 3` without a name).
    UncaughtException {
        exn: crate::ObjHandle,
        tag: String,
    },
}

impl fmt::Display for TrapKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrapKind::Unreachable => f.write_str("unreachable"),
            TrapKind::IntegerDivideByZero => f.write_str("integer divide by zero"),
            TrapKind::IntegerOverflow => f.write_str("integer overflow"),
            TrapKind::InvalidConversionToInteger => f.write_str("invalid conversion to integer"),
            TrapKind::MemoryOutOfBounds => f.write_str("out of bounds memory access"),
            TrapKind::TableOutOfBounds => f.write_str("out of bounds table access"),
            TrapKind::UndefinedElement => f.write_str("undefined element"),
            TrapKind::UninitializedElement => f.write_str("uninitialized element"),
            TrapKind::IndirectCallTypeMismatch => f.write_str("indirect call type mismatch"),
            TrapKind::NullReference => f.write_str("null reference"),
            TrapKind::NullFunctionReference => f.write_str("null function reference"),
            TrapKind::NullStructReference => f.write_str("null structure reference"),
            TrapKind::NullArrayReference => f.write_str("null array reference"),
            TrapKind::NullI31Reference => f.write_str("null i31 reference"),
            TrapKind::CastFailure => f.write_str("cast failure"),
            TrapKind::NullExceptionReference => f.write_str("null exception reference"),
            TrapKind::ArrayOutOfBounds => f.write_str("out of bounds array access"),
            TrapKind::CallStackExhausted => f.write_str("call stack exhausted"),
            TrapKind::UnalignedAtomic => f.write_str("unaligned atomic"),
            TrapKind::WaitOnUnsharedMemory => f.write_str("atomic wait on non-shared memory"),
            TrapKind::OutOfMemory { limit_bytes } => {
                write!(f, "out of memory: heap limit {} reached", human_bytes(*limit_bytes))
            }
            TrapKind::Exit(code) => write!(f, "exit with code {code}"),
            TrapKind::Host(msg) => f.write_str(msg),
            TrapKind::UncaughtException { tag, .. } => write!(f, "uncaught wasm exception: {tag}"),
        }
    }
}

fn human_bytes(n: u64) -> String {
    const MIB: u64 = 1 << 20;
    const KIB: u64 = 1 << 10;
    if n.is_multiple_of(1 << 30) && n > 0 {
        format!("{} GiB", n >> 30)
    } else if n.is_multiple_of(MIB) && n > 0 {
        format!("{} MiB", n / MIB)
    } else if n.is_multiple_of(KIB) && n > 0 {
        format!("{} KiB", n / KIB)
    } else {
        format!("{n} bytes")
    }
}

/// One frame of a wasm backtrace, innermost first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WasmFrame {
    /// Name of the module (from its name section or file name), if known.
    pub module: Option<String>,
    /// Function index in its module's function index space.
    pub func_index: u32,
    /// Function name from the name section, if any.
    pub func_name: Option<String>,
    /// Byte offset of the instruction in the module binary.
    pub offset: u32,
    /// `file:line:col` when the module came from text with a line table.
    pub source: Option<crate::SourceLoc>,
}

/// A trap with the wasm backtrace captured when it happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trap {
    pub kind: TrapKind,
    pub backtrace: Vec<WasmFrame>,
}

impl Trap {
    pub fn new(kind: TrapKind) -> Trap {
        Trap { kind, backtrace: Vec::new() }
    }
}

/// `module!function at file:line:col`, or with `<unknown> (func N)` and a byte offset where the name
/// section or the line table has nothing: how backtraces print a frame (the CLI, race reports).
impl fmt::Display for WasmFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(m) = &self.module {
            write!(f, "{m}!")?;
        }
        match &self.func_name {
            Some(name) => f.write_str(name)?,
            None => write!(f, "<unknown> (func {})", self.func_index)?,
        }
        match &self.source {
            Some(loc) => write!(f, " at {loc}"),
            None => write!(f, " at offset {:#x}", self.offset),
        }
    }
}

impl fmt::Display for Trap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.kind)
    }
}

impl std::error::Error for Trap {}
