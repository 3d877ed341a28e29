//! GC proposal instructions: struct and array allocation and access, `i31`, `ref.eq`, casts
//! (`ref.test`, `ref.cast`, the test of `br_on_cast`), and the extern/any conversions.
//!
//! Objects are reached through `gcglue.rs` (the only place a slot value becomes a [`gc::ObjRef`]); field and
//! element accesses come with their offset and [`StorageKind`] already resolved by the translator (the
//! function's field and array-access tables, looked up by `cold.rs`). Allocation goes through an
//! [`Allocator`]: when the heap wants a collection first, the handler stops with [`OpExit::Collect`]
//! before writing anything, the dispatch loop leaves so the driver can collect with the whole store, and the
//! instruction runs again with `may_collect = false` (see `mutator::AllocState::gc_retry`).

use super::operands::{get, in_bounds, set};
use crate::TrapKind;
use crate::bytecode::{CastTarget, FieldAccess, Slot, StorageKind};
use crate::gcglue;
use crate::module::ModuleData;
use crate::mutator::AllocState;
use crate::state::FuncEntity;
use crate::types::{TypeKind, TypeRegistry};
use crate::values::{self, i31_raw};
pub(crate) use AllocSite::Pc;

/// Why an instruction of the cold path did not complete.
pub(super) enum OpExit {
    Trap(TrapKind),
    /// The heap asks for a collection before this allocation; the instruction runs again after it.
    Collect,
    /// The instruction threw this exception (`throw`, `throw_ref`; see `exceptions.rs`).
    Throw(u64),
    /// `--race`: the instruction completed and the detector found a race with it (`race_hooks.rs`).
    Race(Box<super::race_hooks::FoundRace>),
}

impl From<TrapKind> for OpExit {
    #[inline(always)]
    fn from(k: TrapKind) -> OpExit {
        OpExit::Trap(k)
    }
}

/// What an allocating instruction needs: the heap, this thread's cache, the allocation state, and where the
/// instruction is (for the alloc/free tracer's allocation sites).
pub(super) struct Allocator<'a> {
    pub heap: &'a gc::Heap,
    pub cache: &'a mut gc::ThreadCache,
    pub state: &'a mut AllocState,
    pub module: &'a ModuleData,
    pub func: u32,
    pub site: AllocSite,
    /// `--race`: the detector, which keeps the allocation sites of shared objects for its reports.
    pub race: Option<&'a crate::race::RaceRuntime>,
    pub registry: &'a TypeRegistry,
}

/// Where in its function an allocating instruction is.
#[derive(Clone, Copy)]
pub(crate) enum AllocSite {
    /// The interpreter's bytecode pc.
    Pc(usize),
    /// A wasm offset (compiled code).
    Offset(u32),
}

impl Allocator<'_> {
    #[inline(always)]
    fn new_object(
        &mut self,
        alloc: impl FnOnce(&gc::Heap, &mut gc::ThreadCache, bool) -> Result<gc::ObjRef, gc::AllocError>,
    ) -> Result<gc::ObjRef, OpExit> {
        if let Some(t) = self.state.tracing.as_mut() {
            match self.site {
                AllocSite::Pc(pc) => t.set_site(self.module, self.func, pc),
                AllocSite::Offset(offset) => t.set_site_at(self.module, self.func, offset),
            }
        }
        let may_collect = !std::mem::take(&mut self.state.gc_retry);
        match alloc(self.heap, self.cache, may_collect) {
            Ok(o) => {
                if let Some(race) = self.race
                    && self.registry.get(o.type_id()).shared
                {
                    let site = match self.site {
                        AllocSite::Pc(pc) => super::race_hooks::site_of(self.module, self.func, pc),
                        AllocSite::Offset(offset) => crate::race::site(self.module, offset),
                    };
                    race.note_alloc(o.raw(), site);
                }
                Ok(o)
            }
            Err(gc::AllocError::CollectionNeeded) => Err(OpExit::Collect),
            Err(gc::AllocError::OutOfMemory { limit }) => {
                Err(TrapKind::OutOfMemory { limit_bytes: limit as u64 }.into())
            }
        }
    }

    #[inline(always)]
    pub(super) fn new_struct(&mut self, type_id: u32) -> Result<gc::ObjRef, OpExit> {
        self.new_object(|heap, cache, may_collect| heap.alloc_struct(cache, type_id, may_collect))
    }

    #[inline(always)]
    pub(super) fn new_array(&mut self, type_id: u32, len: u32) -> Result<gc::ObjRef, OpExit> {
        self.new_object(|heap, cache, may_collect| heap.alloc_array(cache, type_id, len, may_collect))
    }
}

// ---------------- references, i31, casts

/// Does the value in `src` match `target`? (`ref.test`, `ref.cast`, `br_on_cast`.)
#[inline(always)]
#[track_caller]
pub(super) fn cast_matches(
    frame: &[u64],
    registry: &TypeRegistry,
    funcs: &[FuncEntity],
    target: CastTarget,
    src: Slot,
) -> bool {
    let raw = get(frame, src);
    gcglue::ref_matches(registry, |f| funcs[f as usize].ty, gcglue::object_type, raw, target.nullable, target.heap)
}

#[inline(always)]
#[track_caller]
pub(super) fn ref_test(
    frame: &mut [u64],
    registry: &TypeRegistry,
    funcs: &[FuncEntity],
    target: CastTarget,
    dst: Slot,
    src: Slot,
) {
    let ok = cast_matches(frame, registry, funcs, target, src);
    set(frame, dst, ok);
}

#[inline(always)]
#[track_caller]
pub(super) fn ref_cast(
    frame: &mut [u64],
    registry: &TypeRegistry,
    funcs: &[FuncEntity],
    target: CastTarget,
    dst: Slot,
    src: Slot,
) -> Result<(), TrapKind> {
    if !cast_matches(frame, registry, funcs, target, src) {
        return Err(TrapKind::CastFailure);
    }
    set(frame, dst, get::<u64>(frame, src));
    Ok(())
}

#[inline(always)]
#[track_caller]
pub(super) fn ref_eq(frame: &mut [u64], dst: Slot, a: Slot, b: Slot) {
    set(frame, dst, get::<u64>(frame, a) == get::<u64>(frame, b));
}

/// `extern.convert_any` and `any.convert_extern`: identities on the representation.
#[inline(always)]
#[track_caller]
pub(super) fn convert_ref(frame: &mut [u64], dst: Slot, src: Slot) {
    set(frame, dst, get::<u64>(frame, src));
}

#[inline(always)]
#[track_caller]
pub(super) fn ref_i31(frame: &mut [u64], dst: Slot, src: Slot) {
    set(frame, dst, i31_raw(get(frame, src)));
}

#[inline(always)]
#[track_caller]
pub(super) fn i31_get_s(frame: &mut [u64], dst: Slot, src: Slot) -> Result<(), TrapKind> {
    let v: u64 = get(frame, src);
    if v == 0 {
        return Err(TrapKind::NullI31Reference);
    }
    set(frame, dst, values::i31_get_s(v));
    Ok(())
}

#[inline(always)]
#[track_caller]
pub(super) fn i31_get_u(frame: &mut [u64], dst: Slot, src: Slot) -> Result<(), TrapKind> {
    let v: u64 = get(frame, src);
    if v == 0 {
        return Err(TrapKind::NullI31Reference);
    }
    set(frame, dst, values::i31_get_u(v));
    Ok(())
}

// ---------------- structs

/// `struct.new` with the field values in `args..`.
#[inline(always)]
#[track_caller]
pub(super) fn struct_new(
    frame: &mut [u64],
    alloc: &mut Allocator<'_>,
    registry: &TypeRegistry,
    type_id: u32,
    dst: Slot,
    args: Slot,
) -> Result<(), OpExit> {
    let o = alloc.new_struct(type_id)?;
    if let TypeKind::Struct { fields } = &registry.get(type_id).kind {
        for (i, f) in fields.iter().enumerate() {
            gcglue::write(o, f.offset as usize, f.kind, frame[args as usize + i]);
        }
    }
    set(frame, dst, o.raw());
    Ok(())
}

/// `struct.new_default`: the heap hands out zeroed objects, which is every field's default.
#[inline(always)]
#[track_caller]
pub(super) fn struct_new_default(
    frame: &mut [u64],
    alloc: &mut Allocator<'_>,
    type_id: u32,
    dst: Slot,
) -> Result<(), OpExit> {
    let o = alloc.new_struct(type_id)?;
    set(frame, dst, o.raw());
    Ok(())
}

/// The struct in `slot`, or the null trap.
#[inline(always)]
#[track_caller]
fn struct_ref(frame: &[u64], slot: Slot) -> Result<gc::ObjRef, TrapKind> {
    match get(frame, slot) {
        0 => Err(TrapKind::NullStructReference),
        raw => Ok(gcglue::obj(raw)),
    }
}

#[inline(always)]
#[track_caller]
pub(super) fn struct_get(frame: &mut [u64], field: FieldAccess, dst: Slot, obj: Slot) -> Result<(), TrapKind> {
    let o = struct_ref(frame, obj)?;
    set(frame, dst, gcglue::read(o, field.offset as usize, field.kind));
    Ok(())
}

#[inline(always)]
#[track_caller]
pub(super) fn struct_set(frame: &[u64], field: FieldAccess, obj: Slot, value: Slot) -> Result<(), TrapKind> {
    let o = struct_ref(frame, obj)?;
    gcglue::write(o, field.offset as usize, field.kind, get(frame, value));
    Ok(())
}

// ---------------- arrays

/// The array in `slot`, or the null trap.
#[inline(always)]
#[track_caller]
fn array_ref(frame: &[u64], slot: Slot) -> Result<gc::ObjRef, TrapKind> {
    match get(frame, slot) {
        0 => Err(TrapKind::NullArrayReference),
        raw => Ok(gcglue::obj(raw)),
    }
}

/// `array.new` with `value`, `len` in `args`, `args + 1`.
#[inline(always)]
#[track_caller]
pub(super) fn array_new(
    frame: &mut [u64],
    alloc: &mut Allocator<'_>,
    registry: &TypeRegistry,
    type_id: u32,
    dst: Slot,
    args: Slot,
) -> Result<(), OpExit> {
    let (value, len): (u64, u32) = (get(frame, args), get(frame, args + 1));
    let kind = registry.array_elem(type_id);
    let o = alloc.new_array(type_id, len)?;
    if value != 0 {
        for i in 0..len {
            gcglue::write(o, gcglue::elem_offset(i, kind), kind, value);
        }
    }
    set(frame, dst, o.raw());
    Ok(())
}

#[inline(always)]
#[track_caller]
pub(super) fn array_new_default(
    frame: &mut [u64],
    alloc: &mut Allocator<'_>,
    type_id: u32,
    dst: Slot,
    len: Slot,
) -> Result<(), OpExit> {
    let len: u32 = get(frame, len);
    let o = alloc.new_array(type_id, len)?;
    set(frame, dst, o.raw());
    Ok(())
}

/// `array.new_fixed` with the `len` values in `args..`.
#[inline(always)]
#[track_caller]
pub(super) fn array_new_fixed(
    frame: &mut [u64],
    alloc: &mut Allocator<'_>,
    registry: &TypeRegistry,
    type_id: u32,
    dst: Slot,
    args: Slot,
    len: u32,
) -> Result<(), OpExit> {
    let kind = registry.array_elem(type_id);
    let o = alloc.new_array(type_id, len)?;
    for i in 0..len {
        gcglue::write(o, gcglue::elem_offset(i, kind), kind, frame[args as usize + i as usize]);
    }
    set(frame, dst, o.raw());
    Ok(())
}

/// `array.new_data` from data segment `seg` with `offset`, `len` in `args`, `args + 1`.
#[inline(always)]
#[track_caller]
pub(super) fn array_new_data(
    frame: &mut [u64],
    alloc: &mut Allocator<'_>,
    registry: &TypeRegistry,
    type_id: u32,
    seg: &[u8],
    dst: Slot,
    args: Slot,
) -> Result<(), OpExit> {
    let (offset, len) = (get::<u32>(frame, args) as u64, get::<u32>(frame, args + 1));
    let kind = registry.array_elem(type_id);
    let size = kind.size() as u64;
    if !in_bounds(offset, len as u64 * size, seg.len()) {
        return Err(TrapKind::MemoryOutOfBounds.into());
    }
    let o = alloc.new_array(type_id, len)?;
    for i in 0..len {
        let at = (offset + i as u64 * size) as usize;
        let v = gcglue::elem_from_bytes(&seg[at..at + size as usize], kind);
        gcglue::write(o, gcglue::elem_offset(i, kind), kind, v);
    }
    set(frame, dst, o.raw());
    Ok(())
}

/// `array.new_elem` from element segment `seg` with `offset`, `len` in `args`, `args + 1`.
#[inline(always)]
#[track_caller]
pub(super) fn array_new_elem(
    frame: &mut [u64],
    alloc: &mut Allocator<'_>,
    type_id: u32,
    seg: &[u64],
    dst: Slot,
    args: Slot,
) -> Result<(), OpExit> {
    let (offset, len) = (get::<u32>(frame, args) as u64, get::<u32>(frame, args + 1));
    if !in_bounds(offset, len as u64, seg.len()) {
        return Err(TrapKind::TableOutOfBounds.into());
    }
    let o = alloc.new_array(type_id, len)?;
    for i in 0..len {
        let v = seg[offset as usize + i as usize];
        gcglue::write(o, gcglue::elem_offset(i, StorageKind::Ref), StorageKind::Ref, v);
    }
    set(frame, dst, o.raw());
    Ok(())
}

/// `array.get*` with the array and index in `args`, `args + 1`; `kind` says how the element is extended.
#[inline(always)]
#[track_caller]
pub(super) fn array_get(frame: &mut [u64], kind: StorageKind, dst: Slot, args: Slot) -> Result<(), TrapKind> {
    let o = array_ref(frame, args)?;
    let idx: u32 = get(frame, args + 1);
    if idx >= o.array_len() {
        return Err(TrapKind::ArrayOutOfBounds);
    }
    set(frame, dst, gcglue::read(o, gcglue::elem_offset(idx, kind), kind));
    Ok(())
}

/// `array.set` with the array, index and value in `args..args + 3`.
#[inline(always)]
#[track_caller]
pub(super) fn array_set(frame: &[u64], kind: StorageKind, args: Slot) -> Result<(), TrapKind> {
    let o = array_ref(frame, args)?;
    let idx: u32 = get(frame, args + 1);
    if idx >= o.array_len() {
        return Err(TrapKind::ArrayOutOfBounds);
    }
    gcglue::write(o, gcglue::elem_offset(idx, kind), kind, get(frame, args + 2));
    Ok(())
}

#[inline(always)]
#[track_caller]
pub(super) fn array_len(frame: &mut [u64], dst: Slot, src: Slot) -> Result<(), TrapKind> {
    let o = array_ref(frame, src)?;
    set(frame, dst, o.array_len());
    Ok(())
}

/// `array.fill` with the array, offset, value and count in `args..args + 4`.
#[inline(always)]
#[track_caller]
pub(super) fn array_fill(frame: &[u64], kind: StorageKind, args: Slot) -> Result<(), TrapKind> {
    let o = array_ref(frame, args)?;
    let (off, value, n) =
        (get::<u32>(frame, args + 1) as u64, get(frame, args + 2), get::<u32>(frame, args + 3) as u64);
    if !in_bounds(off, n, o.array_len() as usize) {
        return Err(TrapKind::ArrayOutOfBounds);
    }
    // One store per element, each a single aligned store for references (never torn for another thread).
    o.fill(gcglue::elem_offset(off as u32, kind), kind.size() as usize, n as usize, value);
    Ok(())
}

/// `array.copy` with the destination array and offset, source array and offset, and count in
/// `args..args + 5`; `dk`/`sk` are the element kinds of the two array types.
#[inline(always)]
#[track_caller]
pub(super) fn array_copy(frame: &[u64], dk: StorageKind, sk: StorageKind, args: Slot) -> Result<(), TrapKind> {
    let d = array_ref(frame, args)?;
    let doff = get::<u32>(frame, args + 1) as u64;
    let src = array_ref(frame, args + 2)?;
    let (soff, n) = (get::<u32>(frame, args + 3) as u64, get::<u32>(frame, args + 4) as u64);
    if !in_bounds(doff, n, d.array_len() as usize) || !in_bounds(soff, n, src.array_len() as usize) {
        return Err(TrapKind::ArrayOutOfBounds);
    }
    // Same storage on both sides (always, for validated code): numbers are bytes, copied as one memmove;
    // references are copied one 8-byte load and store at a time, so another thread reading a shared array
    // meanwhile never sees a torn reference (which a byte-wise memmove could give it).
    if dk == sk {
        let (dst_at, src_at) = (gcglue::elem_offset(doff as u32, dk), gcglue::elem_offset(soff as u32, sk));
        if dk != StorageKind::Ref {
            d.copy_from(dst_at, src, src_at, n as usize * dk.size() as usize);
        } else {
            d.copy_words_from(dst_at, src, src_at, n as usize);
        }
        return Ok(());
    }
    // memmove semantics: copy backwards when the ranges overlap with dst after src.
    let backwards = d.raw() == src.raw() && doff > soff;
    for k in 0..n {
        let i = if backwards { n - 1 - k } else { k };
        let v = gcglue::read(src, gcglue::elem_offset((soff + i) as u32, sk), sk);
        gcglue::write(d, gcglue::elem_offset((doff + i) as u32, dk), dk, v);
    }
    Ok(())
}

/// `array.init_data` from data segment `seg` with the array, offset, segment offset and count in
/// `args..args + 4`.
#[inline(always)]
#[track_caller]
pub(super) fn array_init_data(frame: &[u64], kind: StorageKind, seg: &[u8], args: Slot) -> Result<(), TrapKind> {
    let o = array_ref(frame, args)?;
    let (d, sidx, n) =
        (get::<u32>(frame, args + 1) as u64, get::<u32>(frame, args + 2) as u64, get::<u32>(frame, args + 3) as u64);
    let size = kind.size() as u64;
    if !in_bounds(d, n, o.array_len() as usize) {
        return Err(TrapKind::ArrayOutOfBounds);
    }
    if !in_bounds(sidx, n * size, seg.len()) {
        return Err(TrapKind::MemoryOutOfBounds);
    }
    for i in 0..n {
        let at = (sidx + i * size) as usize;
        let v = gcglue::elem_from_bytes(&seg[at..at + size as usize], kind);
        gcglue::write(o, gcglue::elem_offset((d + i) as u32, kind), kind, v);
    }
    Ok(())
}

/// `array.init_elem` from element segment `seg` with the array, offset, segment offset and count in
/// `args..args + 4`.
#[inline(always)]
#[track_caller]
pub(super) fn array_init_elem(frame: &[u64], kind: StorageKind, seg: &[u64], args: Slot) -> Result<(), TrapKind> {
    let o = array_ref(frame, args)?;
    let (d, sidx, n) =
        (get::<u32>(frame, args + 1) as u64, get::<u32>(frame, args + 2) as u64, get::<u32>(frame, args + 3) as u64);
    if !in_bounds(d, n, o.array_len() as usize) {
        return Err(TrapKind::ArrayOutOfBounds);
    }
    if !in_bounds(sidx, n, seg.len()) {
        return Err(TrapKind::TableOutOfBounds);
    }
    for i in 0..n {
        gcglue::write(o, gcglue::elem_offset((d + i) as u32, kind), kind, seg[(sidx + i) as usize]);
    }
    Ok(())
}
