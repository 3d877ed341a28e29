//! Values as the host sees them.

pub use crate::handles::ObjHandle;
pub use wasmparser::ValType;

/// An instance: an index into the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct InstanceId(pub(crate) u32);

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
/// An exception tag handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Tag(pub(crate) u32);

/// An exported or importable entity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Extern {
    Func(Func),
    Global(Global),
    Table(Table),
    Memory(Memory),
    Tag(Tag),
}

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
    /// A GC struct, through a handle the store checks before use (`vm/src/handles.rs`).
    Struct(ObjHandle),
    /// A GC array, through a handle.
    Array(ObjHandle),
    /// An exception (`exnref`), through a handle.
    Exn(ObjHandle),
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
// A reference in a slot is a self-describing u64 defined by the heap (`gc::value`): 0 is null,
// low bit 1 an unboxed i31, low bits `010` a host reference, `100` a function reference (here: a
// store function index), `000` the address of a GC object. `extern.convert_any` and
// `any.convert_extern` are therefore identities, and the collector traces exactly the objects.

pub(crate) use gc::value::{from_func as func_raw, from_i31 as i31_raw, i31_get_s, i31_get_u, is_object};

/// The slot bits of a reference that is not a heap object; `None` for structs and arrays, whose handles
/// only their store can resolve (`store::val_to_raw`).
pub(crate) fn unboxed_ref_to_raw(r: Ref) -> Option<u64> {
    Some(match r {
        Ref::Null => gc::value::NULL,
        Ref::Func(f) => func_raw(f.0),
        Ref::Host(n) => gc::value::from_host(n as u64),
        Ref::I31(v) => i31_raw(v),
        Ref::Struct(_) | Ref::Array(_) | Ref::Exn(_) => return None,
    })
}

/// What kind of heap object a reference points to.
pub(crate) enum ObjectKind {
    Struct,
    Array,
    Exn,
}

/// A raw reference as the host sees it; objects become handles in `table`.
pub(crate) fn ref_from_raw(
    raw: u64,
    kind: impl FnOnce(u64) -> ObjectKind,
    table: &mut crate::handles::HandleTable,
) -> Ref {
    use gc::value as v;
    if v::is_null(raw) {
        Ref::Null
    } else if v::is_i31(raw) {
        Ref::I31(i31_get_s(raw))
    } else if v::is_host(raw) {
        Ref::Host(v::host_index(raw) as u32)
    } else if v::is_func(raw) {
        Ref::Func(Func(v::func_index(raw)))
    } else {
        match kind(raw) {
            ObjectKind::Struct => Ref::Struct(table.insert(raw)),
            ObjectKind::Array => Ref::Array(table.insert(raw)),
            ObjectKind::Exn => Ref::Exn(table.insert(raw)),
        }
    }
}
