//! Canonical runtime types.
//!
//! Every module of a [`crate::Store`] is validated by one shared `wasmparser::Validator`, which
//! hash-conses recursion groups across modules: two modules that define the same (iso-recursive)
//! type get the same `CoreTypeId`. Its index is our *canonical type id*: the id written in GC
//! object headers, compared by `call_indirect`, and registered with the heap.
//!
//! For each canonical id the [`TypeRegistry`] keeps what execution needs: the kind (func, struct,
//! array), the field layout, and the chain of supertypes ("display": ancestors from the root down to
//! the type itself), so a subtype test is one bounds check and one compare.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicPtr, Ordering};
use wasmparser::types::{CoreTypeId, TypeIdentifier, Types};
use wasmparser::{
    AbstractHeapType, CompositeInnerType, HeapType, PackedIndex, RefType, StorageType, SubType, UnpackedIndex, ValType,
};

/// A heap type with module-relative indices replaced by canonical ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RtHeapType {
    Any,
    Eq,
    I31,
    Struct,
    Array,
    None,
    Func,
    NoFunc,
    Extern,
    NoExtern,
    Exn,
    NoExn,
    Concrete(u32),
}

/// A value type with canonical ids (for import matching and host-visible signatures).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RtValType {
    I32,
    I64,
    F32,
    F64,
    V128,
    Ref { nullable: bool, heap: RtHeapType },
}

impl RtValType {
    /// The bytes a value of this type takes in memory (a reference's encoding is 8).
    pub fn byte_width(self) -> u64 {
        match self {
            RtValType::I32 | RtValType::F32 => 4,
            RtValType::V128 => 16,
            _ => 8,
        }
    }
}

/// What a canonical type is.
#[derive(Clone, Debug)]
pub enum TypeKind {
    Func {
        params: Box<[RtValType]>,
        results: Box<[RtValType]>,
    },
    Struct {
        fields: Box<[FieldLayout]>,
    },
    Array {
        elem: StorageKind,
        mutable: bool,
        /// `f32`/`f64` elements (see [`FieldLayout::float`]).
        float: bool,
    },
    /// The exception objects of one tag of one module (`exnref` values): not a wasm type, a heap layout
    /// registered per tag (see [`TypeRegistry::register_exn_type`]). `fields[0]` holds the identity of the
    /// store tag it was thrown with, the rest are the payload (the tag's parameters, in order).
    Exn {
        fields: Box<[FieldLayout]>,
        name: Box<str>,
    },
}

/// How a field or element is stored and how it is extended when read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StorageKind {
    I8S,
    I8U,
    I16S,
    I16U,
    /// 4 bytes (i32, f32).
    B32,
    /// 8 bytes (i64, f64).
    B64,
    /// 8-byte reference (traced by the collector).
    Ref,
}

impl StorageKind {
    pub fn size(self) -> u32 {
        match self {
            StorageKind::I8S | StorageKind::I8U => 1,
            StorageKind::I16S | StorageKind::I16U => 2,
            StorageKind::B32 => 4,
            StorageKind::B64 | StorageKind::Ref => 8,
        }
    }
}

/// A struct field's place in the object.
#[derive(Clone, Copy, Debug)]
pub struct FieldLayout {
    /// Byte offset from the object start (the 8-byte header comes first).
    pub offset: u32,
    pub kind: StorageKind,
    pub mutable: bool,
    /// An `f32`/`f64` field (the kind says only its size): compiled code loads it as a float.
    pub float: bool,
}

/// Everything known about one canonical type.
#[derive(Clone, Debug)]
pub struct TypeInfo {
    pub kind: TypeKind,
    /// Ancestors from the root supertype down to this type itself.
    pub display: Box<[u32]>,
    /// Payload size for structs (fields only, header excluded).
    pub struct_size: u32,
    /// Declared `shared` (shared-everything threads): its objects may be used by several threads at once,
    /// so `--race` instruments their fields and elements.
    pub shared: bool,
    /// A struct with a field, or an array with elements, of a function reference type. Function
    /// references are store function indices, so threads cannot pass them to each other
    /// (`threads.rs` refuses to spawn with a shared type that holds them).
    pub func_refs: bool,
}

/// All canonical types seen by a runtime, indexed by canonical id.
///
/// Shared by every mutator of a [`crate::Runtime`] and read on the interpreter's hot paths (casts,
/// `call_indirect`), so reads take no lock: the table is two-level (a fixed directory of chunks allocated on
/// first use), and an entry is written once and never changes. Writers (module loading) are serialized by
/// the runtime's validator lock, which every registration happens under.
pub struct TypeRegistry {
    /// The next id handed to an exception layout ([`TypeRegistry::register_exn_type`]); they count down
    /// from the top of the id space, wasmparser's canonical ids count up from 0.
    next_exn_id: std::sync::atomic::AtomicU32,
    /// Chunk pointers, null until the chunk's first type is registered. Allocated zeroed, so the pages of
    /// the directory that no type id reaches are never touched (a runtime's registry costs almost nothing).
    chunks: Box<[AtomicPtr<TypeChunk>]>,
}

/// `CHUNK_LEN` entries, each written at most once.
type TypeChunk = [OnceLock<TypeInfo>; CHUNK_LEN];

const CHUNK_BITS: u32 = 8;
const CHUNK_LEN: usize = 1 << CHUNK_BITS;

impl Default for TypeRegistry {
    fn default() -> Self {
        let n = (gc::MAX_TYPE_ID as usize) >> CHUNK_BITS;
        // SAFETY: an `AtomicPtr` has the representation of a raw pointer, and all-zero bytes are a null one.
        let chunks = unsafe { Box::<[AtomicPtr<TypeChunk>]>::new_zeroed_slice(n).assume_init() };
        TypeRegistry { next_exn_id: std::sync::atomic::AtomicU32::new(gc::MAX_TYPE_ID - 1), chunks }
    }
}

impl Drop for TypeRegistry {
    fn drop(&mut self) {
        for chunk in self.chunks.iter_mut() {
            let p = *chunk.get_mut();
            if !p.is_null() {
                // SAFETY: non-null entries come from `Box::into_raw` in `insert` and are freed only here.
                drop(unsafe { Box::from_raw(p) });
            }
        }
    }
}

impl TypeRegistry {
    fn entry(&self, id: u32) -> Option<&TypeInfo> {
        let chunk = self.chunks.get((id >> CHUNK_BITS) as usize)?.load(Ordering::Acquire);
        if chunk.is_null() {
            return None;
        }
        // SAFETY: a published chunk stays allocated until the registry drops, which `&self` outlives; its
        // entries are `OnceLock`s, safe to read while another thread sets a different one.
        let chunk = unsafe { &*chunk };
        chunk[id as usize & (CHUNK_LEN - 1)].get()
    }

    pub fn get(&self, id: u32) -> &TypeInfo {
        self.entry(id).expect("canonical type registered before use")
    }

    pub fn contains(&self, id: u32) -> bool {
        self.entry(id).is_some()
    }

    fn insert(&self, id: u32, info: TypeInfo) {
        let slot = &self.chunks[(id >> CHUNK_BITS) as usize];
        let mut chunk = slot.load(Ordering::Acquire);
        if chunk.is_null() {
            let fresh = Box::into_raw(Box::new(std::array::from_fn(|_| OnceLock::new())));
            // Writers are serialized by the validator lock, but a lost race must not leak or clobber.
            chunk = match slot.compare_exchange(std::ptr::null_mut(), fresh, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => fresh,
                Err(existing) => {
                    // SAFETY: `fresh` was never published.
                    drop(unsafe { Box::from_raw(fresh) });
                    existing
                }
            };
        }
        // SAFETY: as in `entry`.
        let chunk = unsafe { &*chunk };
        let _ = chunk[id as usize & (CHUNK_LEN - 1)].set(info);
    }

    /// Register the exception layout of a tag whose parameters are `params`: a fresh type id, named `name`
    /// (for the tracer and messages), whose objects hold the store tag's identity followed by the payload laid
    /// out like a struct's fields. `on_new` is told about it (to register its heap layout).
    pub fn register_exn_type(
        &self,
        params: &[RtValType],
        name: String,
        on_new: &mut impl FnMut(u32, &TypeInfo),
    ) -> u32 {
        let id = self.next_exn_id.fetch_sub(1, Ordering::Relaxed);
        let kinds = std::iter::once((StorageKind::B64, false)).chain(params.iter().map(|t| match t {
            RtValType::I32 => (StorageKind::B32, false),
            RtValType::F32 => (StorageKind::B32, true),
            RtValType::I64 | RtValType::V128 => (StorageKind::B64, false),
            RtValType::F64 => (StorageKind::B64, true),
            RtValType::Ref { .. } => (StorageKind::Ref, false),
        }));
        let (fields, struct_size) = lay_out_fields(kinds.map(|(k, float)| (k, false, float)));
        let info = TypeInfo {
            kind: TypeKind::Exn { fields, name: name.into() },
            display: vec![id].into(),
            struct_size,
            shared: false,
            func_refs: false,
        };
        on_new(id, &info);
        self.insert(id, info);
        id
    }

    /// The element storage of array type `id` (validation guarantees it is one).
    pub fn array_elem(&self, id: u32) -> StorageKind {
        match self.get(id).kind {
            TypeKind::Array { elem, .. } => elem,
            _ => unreachable!("array instruction on a non-array type"),
        }
    }

    /// `a <: b` for canonical ids.
    pub fn is_subtype(&self, a: u32, b: u32) -> bool {
        if a == b {
            return true;
        }
        let da = &self.get(a).display;
        let db = &self.get(b).display;
        db.len() <= da.len() && da[db.len() - 1] == b
    }

    /// Register every type of a just-validated module; returns module type index → canonical id.
    /// Newly seen ids get their layout; `on_new` is told about each (to register heap layouts).
    pub fn register_module(&self, types: &Types, mut on_new: impl FnMut(u32, &TypeInfo)) -> Vec<u32> {
        let types_ref = types.as_ref();
        let count = types_ref.core_type_count_in_module();
        let mut ids = Vec::with_capacity(count as usize);
        for i in 0..count {
            let id = types_ref.core_type_at_in_module(i);
            ids.push(id);
        }
        // Register in id order so supertypes (always defined earlier or in the same group) exist.
        let mut pending: Vec<CoreTypeId> = ids.clone();
        pending.sort_by_key(|id| id.index());
        pending.dedup();
        for id in pending {
            self.ensure(types, id, &mut on_new);
        }
        ids.iter().map(|id| id.index() as u32).collect()
    }

    fn ensure(&self, types: &Types, id: CoreTypeId, on_new: &mut impl FnMut(u32, &TypeInfo)) {
        let idx = id.index();
        if self.contains(idx as u32) {
            return;
        }
        let types_ref = types.as_ref();
        let display: Box<[u32]> = match types_ref.supertype_of(id) {
            Some(sup) => {
                self.ensure(types, sup, on_new);
                let mut d = self.get(sup.index() as u32).display.to_vec();
                d.push(idx as u32);
                d.into()
            }
            None => vec![idx as u32].into(),
        };
        let sub: &SubType = &types[id];
        let canon = |vt: ValType| canonical_val_type(types, vt, Some(id));
        let func_refs = match &sub.composite_type.inner {
            CompositeInnerType::Struct(s) => s.fields.iter().any(|f| is_func_ref(types, f.element_type, id)),
            CompositeInnerType::Array(a) => is_func_ref(types, a.0.element_type, id),
            _ => false,
        };
        let (kind, struct_size) = match &sub.composite_type.inner {
            CompositeInnerType::Func(f) => (
                TypeKind::Func {
                    params: f.params().iter().map(|&t| canon(t)).collect(),
                    results: f.results().iter().map(|&t| canon(t)).collect(),
                },
                0,
            ),
            CompositeInnerType::Struct(s) => {
                let (fields, size) = lay_out_fields(
                    s.fields.iter().map(|f| (storage_kind(f.element_type, false), f.mutable, is_float(f.element_type))),
                );
                (TypeKind::Struct { fields }, size)
            }
            CompositeInnerType::Array(a) => {
                let (elem, float) = (storage_kind(a.0.element_type, false), is_float(a.0.element_type));
                (TypeKind::Array { elem, mutable: a.0.mutable, float }, 0)
            }
            CompositeInnerType::Cont(_) => (TypeKind::Struct { fields: Box::new([]) }, 0),
        };
        let info = TypeInfo { kind, display, struct_size, shared: sub.composite_type.shared, func_refs };
        on_new(idx as u32, &info);
        self.insert(idx as u32, info);
    }
}

/// Whether a field or element of the type `within` holds function references.
fn is_func_ref(types: &Types, st: StorageType, within: CoreTypeId) -> bool {
    let StorageType::Val(ValType::Ref(r)) = st else { return false };
    let id = match r.heap_type() {
        HeapType::Abstract { ty, .. } => return matches!(ty, AbstractHeapType::Func | AbstractHeapType::NoFunc),
        HeapType::Concrete(idx) | HeapType::Exact(idx) => match idx {
            UnpackedIndex::Id(id) => Some(id),
            UnpackedIndex::Module(i) => Some(types.as_ref().core_type_at_in_module(i)),
            UnpackedIndex::RecGroup(i) => {
                types.as_ref().rec_group_elements(types.as_ref().rec_group_id_of(within)).nth(i as usize)
            }
        },
    };
    id.is_some_and(|id| matches!(types[id].composite_type.inner, CompositeInnerType::Func(_)))
}

/// Fields in declaration order after the object header, each at its natural alignment; returns them and the
/// payload size (header excluded, rounded up to 8).
fn lay_out_fields(fields: impl Iterator<Item = (StorageKind, bool, bool)>) -> (Box<[FieldLayout]>, u32) {
    let mut offset = gc::HEADER_SIZE as u32;
    let mut out = Vec::new();
    for (kind, mutable, float) in fields {
        let size = kind.size();
        offset = offset.next_multiple_of(size);
        out.push(FieldLayout { offset, kind, mutable, float });
        offset += size;
    }
    (out.into(), offset.next_multiple_of(8) - gc::HEADER_SIZE as u32)
}

/// Whether a field or element holds an `f32` or `f64`.
fn is_float(st: StorageType) -> bool {
    matches!(st, StorageType::Val(ValType::F32 | ValType::F64))
}

/// Storage kind of a field; `signed` picks the extension for packed reads.
pub fn storage_kind(st: StorageType, signed: bool) -> StorageKind {
    match st {
        StorageType::I8 => {
            if signed {
                StorageKind::I8S
            } else {
                StorageKind::I8U
            }
        }
        StorageType::I16 => {
            if signed {
                StorageKind::I16S
            } else {
                StorageKind::I16U
            }
        }
        StorageType::Val(ValType::I32 | ValType::F32) => StorageKind::B32,
        StorageType::Val(ValType::I64 | ValType::F64) => StorageKind::B64,
        StorageType::Val(ValType::V128) => StorageKind::B64,
        StorageType::Val(ValType::Ref(_)) => StorageKind::Ref,
    }
}

/// Canonicalize a value type. `within` is the type whose definition contains it (for rec-group
/// relative indices); module-relative indices need `module_ids`.
pub fn canonical_val_type(types: &Types, vt: ValType, within: Option<CoreTypeId>) -> RtValType {
    match vt {
        ValType::I32 => RtValType::I32,
        ValType::I64 => RtValType::I64,
        ValType::F32 => RtValType::F32,
        ValType::F64 => RtValType::F64,
        ValType::V128 => RtValType::V128,
        ValType::Ref(r) => {
            RtValType::Ref { nullable: r.is_nullable(), heap: canonical_heap_type(types, r.heap_type(), within, &[]) }
        }
    }
}

/// An abstract heap type as the runtime's (`None` for a concrete one).
pub fn canonical_heap_type_abstract(ht: HeapType) -> Option<RtHeapType> {
    match ht {
        HeapType::Abstract { .. } => Some(canonical_heap_type_of_abstract(ht)),
        _ => None,
    }
}

/// Canonicalize a heap type. Module-relative indices are looked up in `module_ids`.
pub fn canonical_heap_type(types: &Types, ht: HeapType, within: Option<CoreTypeId>, module_ids: &[u32]) -> RtHeapType {
    match ht {
        HeapType::Abstract { .. } => canonical_heap_type_of_abstract(ht),
        HeapType::Concrete(idx) | HeapType::Exact(idx) => {
            RtHeapType::Concrete(canonical_index(types, idx, within, module_ids))
        }
    }
}

fn canonical_heap_type_of_abstract(ht: HeapType) -> RtHeapType {
    match ht {
        HeapType::Abstract { ty, .. } => match ty {
            AbstractHeapType::Any => RtHeapType::Any,
            AbstractHeapType::Eq => RtHeapType::Eq,
            AbstractHeapType::I31 => RtHeapType::I31,
            AbstractHeapType::Struct => RtHeapType::Struct,
            AbstractHeapType::Array => RtHeapType::Array,
            AbstractHeapType::None => RtHeapType::None,
            AbstractHeapType::Func => RtHeapType::Func,
            AbstractHeapType::NoFunc => RtHeapType::NoFunc,
            AbstractHeapType::Extern => RtHeapType::Extern,
            AbstractHeapType::NoExtern => RtHeapType::NoExtern,
            AbstractHeapType::Exn => RtHeapType::Exn,
            AbstractHeapType::NoExn => RtHeapType::NoExn,
            AbstractHeapType::Cont | AbstractHeapType::NoCont => RtHeapType::None,
        },
        HeapType::Concrete(_) | HeapType::Exact(_) => unreachable!("called for abstract heap types"),
    }
}

fn canonical_index(types: &Types, idx: UnpackedIndex, within: Option<CoreTypeId>, module_ids: &[u32]) -> u32 {
    match idx {
        UnpackedIndex::Module(i) => match module_ids.get(i as usize) {
            Some(&id) => id,
            None => types.as_ref().core_type_at_in_module(i).index() as u32,
        },
        UnpackedIndex::Id(id) => id.index() as u32,
        UnpackedIndex::RecGroup(i) => {
            let within = within.expect("rec-group index outside a type definition");
            let group = types.as_ref().rec_group_id_of(within);
            let id = types.as_ref().rec_group_elements(group).nth(i as usize).expect("rec-group index in range");
            id.index() as u32
        }
    }
}

/// Canonicalize a packed index appearing in a type definition.
pub fn canonical_packed(types: &Types, idx: PackedIndex, within: CoreTypeId) -> u32 {
    canonical_index(types, idx.unpack(), Some(within), &[])
}

/// Canonicalize a module-level reference type.
pub fn canonical_ref_type(types: &Types, r: RefType, module_ids: &[u32]) -> (bool, RtHeapType) {
    (r.is_nullable(), canonical_heap_type(types, r.heap_type(), None, module_ids))
}

impl RtHeapType {
    /// The top of this type's hierarchy: any, func, extern or exn.
    pub fn top(self, reg: &TypeRegistry) -> RtHeapType {
        match self {
            RtHeapType::Any
            | RtHeapType::Eq
            | RtHeapType::I31
            | RtHeapType::Struct
            | RtHeapType::Array
            | RtHeapType::None => RtHeapType::Any,
            RtHeapType::Func | RtHeapType::NoFunc => RtHeapType::Func,
            RtHeapType::Extern | RtHeapType::NoExtern => RtHeapType::Extern,
            RtHeapType::Exn | RtHeapType::NoExn => RtHeapType::Exn,
            RtHeapType::Concrete(id) => match reg.get(id).kind {
                TypeKind::Func { .. } => RtHeapType::Func,
                _ => RtHeapType::Any,
            },
        }
    }
}

/// `a <: b` for heap types.
pub fn heap_subtype(reg: &TypeRegistry, a: RtHeapType, b: RtHeapType) -> bool {
    use RtHeapType::*;
    if a == b {
        return true;
    }
    match (a, b) {
        (None, x) => matches!(x.top(reg), Any) && !matches!(x, Func | NoFunc | Extern | NoExtern),
        (NoFunc, x) => x.top(reg) == Func,
        (NoExtern, x) => x.top(reg) == Extern,
        (NoExn, x) => x.top(reg) == Exn,
        (Eq | I31 | Struct | Array, Any) => true,
        (I31 | Struct | Array, Eq) => true,
        (Concrete(id), Any) | (Concrete(id), Eq) => !matches!(reg.get(id).kind, TypeKind::Func { .. }),
        (Concrete(id), Struct) => matches!(reg.get(id).kind, TypeKind::Struct { .. }),
        (Concrete(id), Array) => matches!(reg.get(id).kind, TypeKind::Array { .. }),
        (Concrete(id), Func) => matches!(reg.get(id).kind, TypeKind::Func { .. }),
        (Concrete(x), Concrete(y)) => reg.is_subtype(x, y),
        _ => false,
    }
}

/// `a <: b` for value types.
pub fn val_subtype(reg: &TypeRegistry, a: RtValType, b: RtValType) -> bool {
    match (a, b) {
        (RtValType::Ref { nullable: na, heap: ha }, RtValType::Ref { nullable: nb, heap: hb }) => {
            (!na || nb) && heap_subtype(reg, ha, hb)
        }
        _ => a == b,
    }
}
