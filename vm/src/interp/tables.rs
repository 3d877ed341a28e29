//! Table instructions (`table.*`, `elem.drop`), the callee lookups of `call_indirect` and `call_ref`, and the
//! reference instructions of the reference-types proposal (`ref.func`, `ref.is_null`, `ref.as_non_null`).
//!
//! The handlers get the table they work on already resolved from the instance's index space (`cold.rs`
//! and the dispatch loop do that), so they see only [`TableEntity`]s and slots. Every index and range is
//! checked against the table's current length; a table holds raw reference values (0 is null). A shared
//! table's elements are behind a lock (`TableEntity::elems`), held for one instruction.

use std::sync::Arc;

use super::operands::{get, get_u32s, in_bounds, set};
use crate::TrapKind;
use crate::bytecode::Slot;
use crate::state::{FuncEntity, TableEntity};
use crate::types::TypeRegistry;
use crate::values::func_raw;

/// The store function `call_indirect` calls: element `index` of `table`, which must be set and of a subtype
/// of `type_id`.
#[inline(always)]
#[track_caller]
pub(super) fn indirect_callee(
    table: &TableEntity,
    registry: &TypeRegistry,
    funcs: &[FuncEntity],
    index: u32,
    type_id: u32,
) -> Result<u32, TrapKind> {
    let raw = *table.elems().get(index as usize).ok_or(TrapKind::UndefinedElement)?;
    if raw == 0 {
        return Err(TrapKind::UninitializedElement);
    }
    let f = gc::value::func_index(raw);
    if !registry.is_subtype(funcs[f as usize].ty, type_id) {
        return Err(TrapKind::IndirectCallTypeMismatch);
    }
    Ok(f)
}

/// The store function `call_ref` calls: the function reference in `func`, which must not be null.
#[inline(always)]
#[track_caller]
pub(super) fn ref_callee(frame: &[u64], func: Slot) -> Result<u32, TrapKind> {
    match get(frame, func) {
        0 => Err(TrapKind::NullFunctionReference),
        raw => Ok(gc::value::func_index(raw)),
    }
}

#[inline(always)]
#[track_caller]
pub(super) fn table_get(frame: &mut [u64], table: &TableEntity, dst: Slot, index: Slot) -> Result<(), TrapKind> {
    let v = *table.elems().get(get::<u32>(frame, index) as usize).ok_or(TrapKind::TableOutOfBounds)?;
    set(frame, dst, v);
    Ok(())
}

#[inline(always)]
#[track_caller]
pub(super) fn table_set(frame: &[u64], table: &mut TableEntity, index: Slot, value: Slot) -> Result<(), TrapKind> {
    let v: u64 = get(frame, value);
    let mut elems = table.elems_mut();
    let e = elems.get_mut(get::<u32>(frame, index) as usize).ok_or(TrapKind::TableOutOfBounds)?;
    *e = v;
    Ok(())
}

#[inline(always)]
#[track_caller]
pub(super) fn table_size(frame: &mut [u64], table: &TableEntity, dst: Slot) {
    set(frame, dst, table.elems().len() as u32);
}

/// `table.grow`: the initial value comes in `dst`, the old size (or -1) goes out there.
#[inline(always)]
#[track_caller]
pub(super) fn table_grow(frame: &mut [u64], table: &mut TableEntity, dst: Slot, delta: Slot) {
    let init: u64 = get(frame, dst);
    let delta = get::<u32>(frame, delta) as u64;
    let max = table.desc.max.unwrap_or(u32::MAX as u64).min(u32::MAX as u64);
    // One lock for the check and the growth: another thread's grow of a shared table comes before or after.
    let mut elems = table.elems_mut();
    let old = elems.len() as u64;
    if old + delta > max || elems.try_reserve(delta as usize).is_err() {
        set(frame, dst, -1i32);
    } else {
        elems.resize((old + delta) as usize, init);
        set(frame, dst, old as u32);
    }
}

/// `table.fill` with `i`, `val`, `n` in `args..args + 3`.
#[inline(always)]
#[track_caller]
pub(super) fn table_fill(frame: &[u64], table: &mut TableEntity, args: Slot) -> Result<(), TrapKind> {
    let (i, val, n) = (get::<u32>(frame, args) as u64, get::<u64>(frame, args + 1), get::<u32>(frame, args + 2) as u64);
    let mut elems = table.elems_mut();
    if !in_bounds(i, n, elems.len()) {
        return Err(TrapKind::TableOutOfBounds);
    }
    elems[i as usize..(i + n) as usize].fill(val);
    Ok(())
}

/// `table.copy` from store table `src` to store table `dst` (possibly the same), with `d`, `s`, `n` in
/// `args..args + 3`.
#[inline(always)]
#[track_caller]
pub(super) fn table_copy(
    frame: &[u64],
    tables: &mut [TableEntity],
    dst: usize,
    src: usize,
    args: Slot,
) -> Result<(), TrapKind> {
    let [d, s, n] = get_u32s(frame, args);
    if dst == src {
        let mut elems = tables[dst].elems_mut();
        if !in_bounds(d, n, elems.len()) || !in_bounds(s, n, elems.len()) {
            return Err(TrapKind::TableOutOfBounds);
        }
        elems.copy_within(s as usize..(s + n) as usize, d as usize);
    } else {
        // One lock at a time (two imports may name one shared table): the source's elements are copied
        // out first. Another thread may change either table in between, as it may between two
        // instructions; the bounds are checked against the lengths each lock sees.
        let from: Vec<u64> = {
            let elems = tables[src].elems();
            if !in_bounds(s, n, elems.len()) {
                return Err(TrapKind::TableOutOfBounds);
            }
            elems[s as usize..(s + n) as usize].to_vec()
        };
        let mut elems = tables[dst].elems_mut();
        if !in_bounds(d, n, elems.len()) {
            return Err(TrapKind::TableOutOfBounds);
        }
        elems[d as usize..(d + n) as usize].copy_from_slice(&from);
    }
    Ok(())
}

/// `table.init` from element segment `seg` with `d`, `s`, `n` in `args..args + 3`.
#[inline(always)]
#[track_caller]
pub(super) fn table_init(frame: &[u64], table: &mut TableEntity, seg: &[u64], args: Slot) -> Result<(), TrapKind> {
    let [d, s, n] = get_u32s(frame, args);
    let mut elems = table.elems_mut();
    if !in_bounds(s, n, seg.len()) || !in_bounds(d, n, elems.len()) {
        return Err(TrapKind::TableOutOfBounds);
    }
    elems[d as usize..(d + n) as usize].copy_from_slice(&seg[s as usize..(s + n) as usize]);
    Ok(())
}

/// `elem.drop`: the segment becomes empty.
#[inline(always)]
#[track_caller]
pub(super) fn elem_drop(elems: &mut [Arc<[u64]>], elem: u32) {
    elems[elem as usize] = Arc::from([]);
}

/// `ref.func`: `dst` = a reference to store function `func`.
#[inline(always)]
#[track_caller]
pub(super) fn ref_func(frame: &mut [u64], dst: Slot, func: u32) {
    set(frame, dst, func_raw(func));
}

#[inline(always)]
#[track_caller]
pub(super) fn ref_is_null(frame: &mut [u64], dst: Slot, src: Slot) {
    set(frame, dst, get::<u64>(frame, src) == 0);
}

#[inline(always)]
#[track_caller]
pub(super) fn ref_as_non_null(frame: &mut [u64], dst: Slot, src: Slot) -> Result<(), TrapKind> {
    let v: u64 = get(frame, src);
    if v == 0 {
        return Err(TrapKind::NullReference);
    }
    set(frame, dst, v);
    Ok(())
}
