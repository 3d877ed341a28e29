//! `vm`: vmrun's loader, bytecode translator, interpreter, runtime and host functions.
//!
//! The embedding model follows wasmtime's, with one difference: the heap is shared. A [`Runtime`] (behind
//! an `Arc`, `Send + Sync`) owns the GC heap, the canonical types and every loaded module; each thread runs
//! wasm through its own [`Store`], a mutator (stacks, thread cache, roots) plus the entities its instances
//! created, whose handles ([`Func`], [`InstanceId`], ...) are plain indices into it. A [`Source`] is loaded
//! bytes (from `.wat` text or `.wasm`), [`Store::load_module`] decodes, validates and translates it,
//! [`Store::instantiate`] links it against a [`Linker`], and [`Store::call`] runs an export. ARCHITECTURE.md
//! maps the files.

pub mod bytecode;
mod convert;
mod fault;
mod gcglue;
mod handles;
mod instantiate;
mod interp;
mod linker;
pub mod loader;
mod memory;
mod memory_atomic;
mod module;
mod mutator;
mod native_stack;
mod race;
mod runtime;
mod safepoint;
mod stack;
mod stack_depot;
mod state;
mod store;
pub mod threads;
pub mod tier;
mod tracing;
mod translate;
mod trap;
pub mod types;
mod values;
pub mod wasi;

pub use linker::Linker;
pub use loader::{Source, SourceLoc};
pub use runtime::{Config, DEFAULT_JIT_THRESHOLD, JitConfig, ModuleId, Runtime};
pub use state::{Caller, HostFn};
pub use store::Store;
pub use trap::{Trap, TrapKind, WasmFrame};
pub use values::{Extern, Func, FuncType, Global, InstanceId, Memory, ObjHandle, Ref, Table, Tag, Val, ValType};
/// Addresses of the VM functions compiled code calls (for the compiler: `tier.rs`).
pub fn libcalls() -> tier::Libcalls {
    interp::libcalls()
}
/// The race detector's types in this API (`Store::race_stats`).
pub use vmrace;
/// The decoder/validator whose types appear in this API (global, table and memory types).
pub use wasmparser;

/// Errors before a program runs (load, validation, link) or a trap during instantiation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Text syntax error or binary decode error. The message already names `file:line:col`
    /// (text) or `file: offset 0x..` (binary).
    #[error("{0}")]
    Load(String),
    /// Validation error, with the source location as for `Load`.
    #[error("{0}")]
    Invalid(String),
    /// Link error: an unknown import ("unknown import: `env`.`f` ...") or an incompatible import type.
    #[error("{0}")]
    Link(String),
    /// The start function (or an active segment) trapped during instantiation.
    #[error("{0}")]
    Trap(Trap),
}
#[cfg(test)]
mod tests;
