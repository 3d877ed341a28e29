//! Shared-everything threads in the interpreter: atomics on fields and elements of GC objects
//! (`struct.atomic.*`, `array.atomic.*`), shared globals (`global.get`/`set` and `global.atomic.*` through
//! the runtime-wide cell), and the `--race` hooks of plain accesses to shared objects (`RaceField`,
//! `RaceElem`, `RaceRange` after bulk operations, `RaceGlobal` on shared globals; emitted by
//! `translate/shared_gc.rs` only under `--race`).
//!
//! Every atomic is sequentially consistent (`gc::ObjRef::atomic_*` on the object's bytes, or the
//! global's `AtomicU64`). Under `--race` an atomic is also a synchronization edge through the address of
//! its bytes, recorded as the memory atomics' are (`cold.rs`): a release before the operation makes its
//! value visible, an acquire after it has read, then the access itself as an atomic access, so a plain
//! access racing with it is still reported.

use std::sync::atomic::Ordering;

use vmrace::{AccessKind, Site};

use super::gc_objects::OpExit;
use super::operands::{get, set};
use super::race_hooks::RaceHooks;
use crate::TrapKind;
use crate::bytecode::{FieldAccess, ObjAtomicOp, RmwOp, Slot, StorageKind};
use crate::gcglue;
use crate::state::GlobalEntity;
use crate::tier::RaceHook;

/// The value of a field or element of `kind` as `raw` bytes hold it, extended to a slot value.
fn extend(kind: StorageKind, raw: u64) -> u64 {
    match kind {
        StorageKind::I8S => raw as u8 as i8 as i32 as u32 as u64,
        StorageKind::I16S => raw as u16 as i16 as i32 as u32 as u64,
        _ => raw,
    }
}

/// `old op v` for a read-modify-write.
fn apply(op: RmwOp, old: u64, v: u64) -> u64 {
    match op {
        RmwOp::Add => old.wrapping_add(v),
        RmwOp::Sub => old.wrapping_sub(v),
        RmwOp::And => old & v,
        RmwOp::Or => old | v,
        RmwOp::Xor => old ^ v,
        RmwOp::Xchg => v,
    }
}

fn gc_rmw(op: RmwOp) -> gc::AtomicRmw {
    match op {
        RmwOp::Add => gc::AtomicRmw::Add,
        RmwOp::Sub => gc::AtomicRmw::Sub,
        RmwOp::And => gc::AtomicRmw::And,
        RmwOp::Or => gc::AtomicRmw::Or,
        RmwOp::Xor => gc::AtomicRmw::Xor,
        RmwOp::Xchg => gc::AtomicRmw::Xchg,
    }
}

/// Runs atomic `op` on the `kind` field or element at `offset` of `o`, operands in `operands..`; writes
/// the value read to `dst` (not for `Set`). Under `--race` records the edges and the atomic access.
#[allow(clippy::too_many_arguments)]
fn atomic_at(
    frame: &mut [u64],
    o: gc::ObjRef,
    offset: usize,
    kind: StorageKind,
    op: ObjAtomicOp,
    dst: Slot,
    operands: Slot,
    race: Option<&mut RaceHooks<'_>>,
    site: Site,
) -> Result<(), OpExit> {
    let width = kind.size() as usize;
    let at = o.raw() + offset as u64;
    let (acquire, release) = match op {
        ObjAtomicOp::Get => (true, false),
        ObjAtomicOp::Set => (false, true),
        ObjAtomicOp::Rmw(_) | ObjAtomicOp::Cmpxchg => (true, true),
    };
    let mut race = race;
    if release && let Some(r) = race.as_deref_mut() {
        r.sync_at(at, false, true);
    }
    let read = match op {
        ObjAtomicOp::Get => Some(o.atomic_load(offset, width)),
        ObjAtomicOp::Set => {
            o.atomic_store(offset, width, get(frame, operands));
            None
        }
        ObjAtomicOp::Rmw(rmw) => Some(o.atomic_rmw(offset, width, gc_rmw(rmw), get(frame, operands))),
        ObjAtomicOp::Cmpxchg => Some(o.atomic_cmpxchg(offset, width, get(frame, operands), get(frame, operands + 1))),
    };
    if let Some(v) = read {
        set(frame, dst, extend(kind, v));
    }
    if let Some(r) = race {
        r.sync_at(at, acquire, false);
        let access = if op == ObjAtomicOp::Get { AccessKind::AtomicRead } else { AccessKind::AtomicWrite };
        r.object_access(o, offset, width as u64, access, site)?;
    }
    Ok(())
}

/// `struct.atomic.*`: the struct in `args`, operands from `args + 1`.
pub(super) fn struct_atomic(
    frame: &mut [u64],
    field: FieldAccess,
    op: ObjAtomicOp,
    dst: Slot,
    args: Slot,
    race: Option<&mut RaceHooks<'_>>,
    site: Site,
) -> Result<(), OpExit> {
    let o = match get::<u64>(frame, args) {
        0 => return Err(TrapKind::NullStructReference.into()),
        raw => gcglue::obj(raw),
    };
    atomic_at(frame, o, field.offset as usize, field.kind, op, dst, args + 1, race, site)
}

/// The array in `args` and the byte offset of the element whose index is in `args + 1`, checked.
fn element(frame: &[u64], kind: StorageKind, args: Slot) -> Result<(gc::ObjRef, usize), TrapKind> {
    let o = match get::<u64>(frame, args) {
        0 => return Err(TrapKind::NullArrayReference),
        raw => gcglue::obj(raw),
    };
    let idx: u32 = get(frame, args + 1);
    if idx >= o.array_len() {
        return Err(TrapKind::ArrayOutOfBounds);
    }
    Ok((o, gcglue::elem_offset(idx, kind)))
}

/// `array.atomic.*`: the array in `args`, the index in `args + 1`, operands from `args + 2`.
pub(super) fn array_atomic(
    frame: &mut [u64],
    kind: StorageKind,
    op: ObjAtomicOp,
    dst: Slot,
    args: Slot,
    race: Option<&mut RaceHooks<'_>>,
    site: Site,
) -> Result<(), OpExit> {
    let (o, offset) = element(frame, kind, args)?;
    atomic_at(frame, o, offset, kind, op, dst, args + 2, race, site)
}

/// `global.get` of a shared global.
pub(super) fn global_get_shared(frame: &mut [u64], g: &GlobalEntity, dst: Slot) {
    set(frame, dst, g.load());
}

/// `global.set` of a shared global.
pub(super) fn global_set_shared(frame: &[u64], g: &mut GlobalEntity, src: Slot) {
    g.store(get(frame, src));
}

/// `global.atomic.rmw.*` and `cmpxchg` on a `width`-byte global (an i32 global keeps its upper bits
/// zero), operands in `args..`; the old value goes to `dst`. Under `--race` a shared global's is an
/// atomic write with a release before and an acquire after; `id` names the global in a report (module
/// index, global index).
pub(super) fn global_atomic(
    frame: &mut [u64],
    g: &mut GlobalEntity,
    op: ObjAtomicOp,
    (width, dst, args): (u8, Slot, Slot),
    race: Option<&mut RaceHooks<'_>>,
    id: (u32, u32),
    site: Site,
) -> Result<(), OpExit> {
    let mask = if width == 4 { u32::MAX as u64 } else { u64::MAX };
    let (a, b): (u64, u64) = (get(frame, args), get(frame, args + 1));
    let next = |old: u64| -> u64 {
        match op {
            ObjAtomicOp::Rmw(rmw) => apply(rmw, old, a) & mask,
            ObjAtomicOp::Cmpxchg if old & mask == a & mask => b & mask,
            _ => old,
        }
    };
    match &g.shared {
        Some(cell) => {
            // The address of the cell is the global's identity for the race detector's edges.
            let at = std::sync::Arc::as_ptr(cell) as u64;
            let mut race = race;
            if let Some(r) = race.as_deref_mut() {
                r.sync_at(at, false, true);
            }
            let old = match cell.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |old| Some(next(old))) {
                Ok(v) | Err(v) => v,
            };
            set(frame, dst, old);
            if let Some(r) = race {
                let what = RaceHook::ACQUIRE | RaceHook::WRITE | RaceHook::ATOMIC;
                r.global_hook((at, width.into()), what, id, site)?;
            }
        }
        None => {
            let old = g.value;
            g.value = next(old);
            set(frame, dst, old);
        }
    }
    Ok(())
}

/// `--race`: the [`RaceHook`] bits `what` on the shared global `g` (`RaceGlobal`); `id` names it.
pub(super) fn race_global(
    g: &GlobalEntity,
    what: u8,
    race: Option<&mut RaceHooks<'_>>,
    id: (u32, u32),
    site: Site,
) -> Result<(), OpExit> {
    let (Some(r), Some(cell)) = (race, &g.shared) else { return Ok(()) };
    let at = std::sync::Arc::as_ptr(cell) as u64;
    r.global_hook((at, g.desc.ty.byte_width()), what.into(), id, site)
}

/// `--race`: the elements a bulk operation on the shared array in `args` read or wrote (`RaceRange`): from
/// the index in `args + 1`, as many as `len` holds. The operation succeeded, so the range is in bounds.
pub(super) fn race_range(
    frame: &[u64],
    kind: StorageKind,
    write: bool,
    (args, len): (Slot, Slot),
    race: Option<&mut RaceHooks<'_>>,
    site: Site,
) -> Result<(), OpExit> {
    let (Some(r), raw, n) = (race, get::<u64>(frame, args), get::<u32>(frame, len)) else { return Ok(()) };
    if raw == 0 || n == 0 || crate::race::planted_bug_skip_range_hook() {
        return Ok(());
    }
    let offset = gcglue::elem_offset(get(frame, args + 1), kind);
    let access = if write { AccessKind::Write } else { AccessKind::Read };
    r.object_access(gcglue::obj(raw), offset, u64::from(n) * u64::from(kind.size()), access, site)
}

/// `--race`: the plain access the next instruction makes to field `field` of the struct in `obj`.
pub(super) fn race_field(
    frame: &[u64],
    field: FieldAccess,
    write: bool,
    obj: Slot,
    race: Option<&mut RaceHooks<'_>>,
    site: Site,
) -> Result<(), OpExit> {
    let (Some(r), raw) = (race, get::<u64>(frame, obj)) else { return Ok(()) };
    if raw == 0 {
        return Ok(()); // the access traps
    }
    let kind = if write { AccessKind::Write } else { AccessKind::Read };
    r.object_access(gcglue::obj(raw), field.offset as usize, field.kind.size().into(), kind, site)
}

/// `--race`: the plain access the next instruction makes to an element of the array in `args`.
pub(super) fn race_elem(
    frame: &[u64],
    kind: StorageKind,
    write: bool,
    args: Slot,
    race: Option<&mut RaceHooks<'_>>,
    site: Site,
) -> Result<(), OpExit> {
    let Some(r) = race else { return Ok(()) };
    let Ok((o, offset)) = element(frame, kind, args) else { return Ok(()) }; // the access traps
    let access = if write { AccessKind::Write } else { AccessKind::Read };
    r.object_access(o, offset, kind.size().into(), access, site)
}
