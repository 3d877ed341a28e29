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

// ---- the slot representation of references
//
// A reference is a u64 in a slot: 0 is null; low bit 1 is an unboxed i31 (`v << 1 | 1`); low bits
// `010` a host reference (`n << 3 | 2`); low bits `100` a function reference (store function index
// `<< 3 | 4`); low bits `000` (non-zero) the address of a GC object header. Every value is
// self-describing, so the collector traces exactly the values with low bits `000`, and
// `extern.convert_any`/`any.convert_extern` are identities.

pub(crate) const TAG_I31: u64 = 1;
pub(crate) const TAG_HOST: u64 = 0b010;
pub(crate) const TAG_FUNC: u64 = 0b100;

#[inline]
pub(crate) fn i31_raw(v: i32) -> u64 {
    (((v as u32) & 0x7FFF_FFFF) as u64) << 1 | TAG_I31
}

#[inline]
pub(crate) fn i31_get_s(raw: u64) -> i32 {
    ((raw as u32) as i32) >> 1
}

#[inline]
pub(crate) fn i31_get_u(raw: u64) -> u32 {
    (raw as u32) >> 1
}

#[inline]
pub(crate) fn func_raw(store_index: u32) -> u64 {
    (store_index as u64) << 3 | TAG_FUNC
}

#[inline]
pub(crate) fn is_object(raw: u64) -> bool {
    raw != 0 && raw & 7 == 0
}

pub(crate) fn ref_to_raw(r: Ref) -> u64 {
    match r {
        Ref::Null => 0,
        Ref::Func(f) => func_raw(f.0),
        Ref::Host(n) => (n as u64) << 3 | TAG_HOST,
        Ref::I31(v) => i31_raw(v),
        Ref::Struct(a) | Ref::Array(a) => a,
    }
}

/// Classify a raw reference; objects are reported as structs until the caller refines them.
pub(crate) fn ref_from_raw(raw: u64) -> Ref {
    if raw == 0 {
        Ref::Null
    } else if raw & 1 == TAG_I31 {
        Ref::I31(i31_get_s(raw))
    } else if raw & 7 == TAG_HOST {
        Ref::Host((raw >> 3) as u32)
    } else if raw & 7 == TAG_FUNC {
        Ref::Func(Func((raw >> 3) as u32))
    } else {
        Ref::Struct(raw)
    }
}
