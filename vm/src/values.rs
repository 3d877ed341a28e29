//! Values as the host sees them.

pub use wasmparser::ValType;

/// A function handle: an index into the [`crate::Store`]'s function table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Func(pub(crate) u32);
/// A global handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Global(pub(crate) u32);
/// A table handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Table(pub(crate) u32);
/// A linear-memory handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Memory(pub(crate) u32);

/// A function signature.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FuncType {
    pub params: Vec<ValType>,
    pub results: Vec<ValType>,
}

/// A reference value as the host sees it. Classified from the raw slot value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ref {
    /// `ref.null` of any hierarchy.
    Null,
    /// A function reference.
    Func(Func),
    /// A host reference (`ref.extern N` in spec scripts, or a host value passed in).
    Host(u32),
    /// An unboxed `i31ref`.
    I31(i32),
    /// A GC struct; the address identifies the object (valid only until the next collection).
    Struct(u64),
    /// A GC array.
    Array(u64),
}

/// A WebAssembly value. Floats are carried as bits so NaN payloads survive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Val {
    I32(i32),
    I64(i64),
    F32(u32),
    F64(u64),
    Ref(Ref),
}
