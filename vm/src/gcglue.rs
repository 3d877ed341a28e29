//! Glue between the VM and the `gc` crate's heap: object layouts and field access by storage kind.
//! (Allocation with collection is the interpreter's and `instantiate.rs`'s; roots are `safepoint.rs`'s.)
//!
//! This is the only module of `vm` that turns a slot value into a heap object (`ObjRef`). It relies
//! on one invariant, established by validation and the translator: a slot typed as a reference to a
//! struct or array holds either null or the address of a live object of (a subtype of) that type,
//! because only the allocator produces such values and the collector keeps every object reachable
//! from a stack map, a global, a table or a segment alive.

use crate::types::{RtHeapType, StorageKind, TypeInfo, TypeKind, TypeRegistry};
use crate::values::is_object;

/// The heap layout of a canonical type (structs, arrays and exception objects; functions have none).
pub(crate) fn layout_of(info: &TypeInfo) -> Option<gc::Layout> {
    match &info.kind {
        TypeKind::Struct { fields } => Some(gc::Layout::Struct {
            size: info.struct_size,
            ref_offsets: fields.iter().filter(|f| f.kind == StorageKind::Ref).map(|f| f.offset).collect(),
        }),
        TypeKind::Exn { fields, .. } => Some(gc::Layout::Struct {
            size: info.struct_size,
            ref_offsets: if exn_payload_untraced() {
                Box::new([])
            } else {
                fields.iter().filter(|f| f.kind == StorageKind::Ref).map(|f| f.offset).collect()
            },
        }),
        TypeKind::Array { elem, .. } => {
            Some(gc::Layout::Array { elem_size: elem.size(), elem_is_ref: *elem == StorageKind::Ref })
        }
        TypeKind::Func { .. } => None,
    }
}

/// `VMRUN_VM_DEBUG=exn-untraced-payload`: the planted bug `tests/gc.rs` shows the tests catch: exception
/// objects get a reference map without their reference payload, so a payload only an in-flight or kept
/// exception holds is swept. Read once per tag layout, at module load.
fn exn_payload_untraced() -> bool {
    std::env::var_os("VMRUN_VM_DEBUG").is_some_and(|v| v == "exn-untraced-payload")
}

/// The object behind a non-null reference slot value.
#[inline]
pub(crate) fn obj(raw: u64) -> gc::ObjRef {
    debug_assert!(is_object(raw), "{raw:#x} is not an object reference");
    // SAFETY: `raw` comes from a struct- or array-typed reference slot and is not null (callers
    // check); by the module invariant it is the address of a live object header.
    unsafe { gc::ObjRef::from_raw(raw) }
}

/// The canonical type id in the header of the object at `raw`.
pub(crate) fn object_type(raw: u64) -> u32 {
    obj(raw).type_id()
}

/// Read a field or element at byte `offset`, extended to a slot value.
#[inline]
pub(crate) fn read(o: gc::ObjRef, offset: usize, kind: StorageKind) -> u64 {
    match kind {
        StorageKind::I8S => o.load_u8(offset) as i8 as i32 as u32 as u64,
        StorageKind::I8U => o.load_u8(offset) as u64,
        StorageKind::I16S => o.load_u16(offset) as i16 as i32 as u32 as u64,
        StorageKind::I16U => o.load_u16(offset) as u64,
        StorageKind::B32 => o.load_u32(offset) as u64,
        StorageKind::B64 | StorageKind::Ref => o.load_u64(offset),
    }
}

/// Write a slot value into a field or element at byte `offset`, truncated to its storage.
#[inline]
pub(crate) fn write(o: gc::ObjRef, offset: usize, kind: StorageKind, v: u64) {
    match kind {
        StorageKind::I8S | StorageKind::I8U => o.store_u8(offset, v as u8),
        StorageKind::I16S | StorageKind::I16U => o.store_u16(offset, v as u16),
        StorageKind::B32 => o.store_u32(offset, v as u32),
        StorageKind::B64 | StorageKind::Ref => o.store_u64(offset, v),
    }
}

/// Byte offset of array element `index`.
#[inline]
pub(crate) fn elem_offset(index: u32, kind: StorageKind) -> usize {
    gc::HEADER_SIZE + index as usize * kind.size() as usize
}

/// Read `n` little-endian elements of `kind` from `bytes` (for `array.new_data`/`init_data`).
pub(crate) fn elem_from_bytes(bytes: &[u8], kind: StorageKind) -> u64 {
    let mut buf = [0u8; 8];
    buf[..bytes.len()].copy_from_slice(bytes);
    let v = u64::from_le_bytes(buf);
    match kind {
        StorageKind::I8S | StorageKind::I8U => v & 0xFF,
        StorageKind::I16S | StorageKind::I16U => v & 0xFFFF,
        StorageKind::B32 => v & 0xFFFF_FFFF,
        StorageKind::B64 | StorageKind::Ref => v,
    }
}

/// Does the reference `raw` match cast target (`nullable`, `heap`)? Inlined, so a cast in the dispatch loop
/// costs no call.
#[inline(always)]
pub(crate) fn ref_matches(
    store_types: &TypeRegistry,
    funcs_ty: impl Fn(u32) -> u32,
    obj_ty: impl Fn(u64) -> u32,
    raw: u64,
    nullable: bool,
    heap: RtHeapType,
) -> bool {
    if raw == 0 {
        return nullable;
    }
    use RtHeapType as H;
    // Casts never cross hierarchies (validation), so the top types match every non-null value:
    // an `externref` may hold an internalized i31 or object, an `anyref` an externalized host value.
    // An `exnref` holds only exception objects.
    if matches!(heap, H::Any | H::Extern | H::Exn) {
        return true;
    }
    if gc::value::is_i31(raw) {
        return matches!(heap, H::Eq | H::I31);
    }
    if gc::value::is_host(raw) {
        return false;
    }
    if gc::value::is_func(raw) {
        return match heap {
            H::Func => true,
            H::Concrete(t) => store_types.is_subtype(funcs_ty(gc::value::func_index(raw)), t),
            _ => false,
        };
    }
    // An object: its header names its canonical type.
    let t = obj_ty(raw);
    match heap {
        H::Eq => true,
        H::Struct => matches!(store_types.get(t).kind, TypeKind::Struct { .. }),
        H::Array => matches!(store_types.get(t).kind, TypeKind::Array { .. }),
        H::Concrete(c) => store_types.is_subtype(t, c),
        _ => false,
    }
}
