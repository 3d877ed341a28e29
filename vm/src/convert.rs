//! Host values ↔ slot bits: the one place a [`Val`] from the embedder becomes a slot value (checked:
//! object handles against the store's table, function references against its functions, everything
//! against the expected type) and a slot value becomes a [`Val`] (objects rooted as handles).

use crate::handles::HandleTable;
use crate::state::StoreState;
use crate::types::{RtValType, TypeKind, TypeRegistry};
use crate::values::{ObjectKind, ref_from_raw, unboxed_ref_to_raw};
use crate::{Ref, Trap, TrapKind, Val};

/// Host value → slot bits; `Err` for an object handle that is not live in this store, or a function
/// reference that is not one of its functions.
pub(crate) fn val_to_raw(s: &StoreState, v: Val) -> Result<u64, Trap> {
    let bad = |r: Ref, what: &str| Trap::new(TrapKind::Host(format!("{r:?} is not a {what} of this store")));
    Ok(match v {
        Val::I32(x) => x as u32 as u64,
        Val::I64(x) => x as u64,
        Val::F32(x) => x as u64,
        Val::F64(x) => x,
        Val::Ref(r @ (Ref::Struct(h) | Ref::Array(h) | Ref::Exn(h))) => {
            s.mutator.handles.get(h).ok_or_else(|| bad(r, "live object handle"))?
        }
        Val::Ref(r @ Ref::Func(f)) if f.0 as usize >= s.funcs.len() => return Err(bad(r, "function")),
        Val::Ref(r) => unboxed_ref_to_raw(r).expect("not an object"),
    })
}

/// Slot bits → host value, given the static type; objects are rooted in `handles` and returned as handles.
pub(crate) fn raw_to_val(types: &TypeRegistry, handles: &mut HandleTable, raw: u64, t: RtValType) -> Val {
    match t {
        RtValType::I32 => Val::I32(raw as u32 as i32),
        RtValType::I64 => Val::I64(raw as i64),
        RtValType::F32 => Val::F32(raw as u32),
        RtValType::F64 | RtValType::V128 => Val::F64(raw),
        RtValType::Ref { .. } => Val::Ref(ref_from_raw(raw, |a| object_kind(types, a), handles)),
    }
}

fn object_kind(types: &TypeRegistry, raw: u64) -> ObjectKind {
    match types.get(crate::gcglue::object_type(raw)).kind {
        TypeKind::Array { .. } => ObjectKind::Array,
        TypeKind::Exn { .. } => ObjectKind::Exn,
        TypeKind::Struct { .. } | TypeKind::Func { .. } => ObjectKind::Struct,
    }
}

/// Whether the host value `raw` (already resolved) may be stored where type `t` is expected: the kind of
/// value, non-null for non-nullable references, and an object's or function's type (a handle of the wrong
/// type is an error like any other mismatch).
pub(crate) fn host_value_fits(s: &StoreState, v: &Val, raw: u64, t: RtValType) -> bool {
    match (v, t) {
        (Val::I32(_), RtValType::I32) | (Val::I64(_), RtValType::I64) => true,
        (Val::F32(_), RtValType::F32) | (Val::F64(_), RtValType::F64) => true,
        // Exceptions live in their own hierarchy: an object passes for an `exnref` iff it is an exception
        // (`ref_matches` trusts validation for that, and a host value was not validated).
        (Val::Ref(_), RtValType::Ref { heap, .. })
            if crate::values::is_object(raw)
                && matches!(object_kind(&s.rt.types, raw), ObjectKind::Exn)
                    != (heap.top(&s.rt.types) == crate::types::RtHeapType::Exn) =>
        {
            false
        }
        (Val::Ref(_), RtValType::Ref { nullable, heap }) => crate::gcglue::ref_matches(
            &s.rt.types,
            |f| s.funcs.get(f as usize).map_or(u32::MAX, |e| e.ty),
            crate::gcglue::object_type,
            raw,
            nullable,
            heap,
        ),
        _ => false,
    }
}
